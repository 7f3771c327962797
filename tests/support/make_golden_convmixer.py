"""Writes tests/golden/convmixer_timm.npz from timm's ConvMixer (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/make_golden_convmixer.py

A small ConvMixer (width 16, depth 2, kernel 5, patch 4, 10 classes) at
32 px, with random weights and random BatchNorm running statistics, so that
eval mode exercises every BatchNorm's affine map. Saved, for
tests/test_convmixer.py:

    timm/<name>                    timm's state dict (buffers included)
    out/images                     NHWC inputs
    out/logits, out/pre_logits     eval mode (running statistics)
    out/encoded                    eval mode, the last block's output (NHWC)
    out/train_logits               train mode: batch statistics normalise
    out/train_stats/<buffer name>  train mode: every BatchNorm's
                                   running_mean / running_var after that one
                                   forward pass (momentum 0.1, unbiased
                                   variance)

torchvision is not required (see make_golden.py, whose helpers this script
reuses); its placeholder is installed even where a torchvision is, since a
torchvision built for another torch fails to import.
"""

import copy
import importlib.util
import os

import numpy as np

# make_golden installs its torchvision placeholder when it finds none.
_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, package=None: (
    None if name == 'torchvision' else _find_spec(name, package))
import make_golden  # noqa: E402,I100
importlib.util.find_spec = _find_spec
from make_golden import _randomize, _save, _to_numpy  # noqa: E402,I100

import timm  # noqa: E402,I100
import torch  # noqa: E402
from timm.models.convmixer import ConvMixer  # noqa: E402

IMAGE_SIZE = 32
BATCH = 4

# timm constructor arguments; tests/test_convmixer.py builds the same model
# as get_model('convmixer', width=16, depth=2, kernel_size=5, patch_size=4,
#              num_classes=10).
CONVMIXER_KWARGS = dict(dim=16, depth=2, kernel_size=5, patch_size=4,
                        num_classes=10)


def _randomize_batch_norms(model, seed):
  """Scales near 1, and running statistics unlike the defaults (0, 1)."""
  generator = torch.Generator().manual_seed(seed)
  noise = lambda shape: torch.randn(shape, generator=generator)  # noqa: E731
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        shape = module.weight.shape
        module.weight.copy_(1.0 + 0.2 * noise(shape))
        module.bias.copy_(0.2 * noise(shape))
        module.running_mean.copy_(0.3 * noise(shape))
        module.running_var.copy_(torch.exp(0.5 * noise(shape)))


def main():
  os.makedirs(make_golden.GOLDEN_DIR, exist_ok=True)
  images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE,
                       generator=torch.Generator().manual_seed(5))
  model = ConvMixer(**CONVMIXER_KWARGS).eval()
  _randomize(model, seed=20)
  _randomize_batch_norms(model, seed=21)
  state_dict = _to_numpy(model.state_dict())
  with torch.no_grad():
    features = model.forward_features(images)
    pre_logits = model.forward_head(features, pre_logits=True)
    logits = model.forward_head(features)
    np.testing.assert_allclose(logits.numpy(), model(images).numpy(),
                               atol=1e-6)
  outputs = {
      'images': images.permute(0, 2, 3, 1).numpy(),  # NHWC
      'logits': logits.numpy(),
      'pre_logits': pre_logits.numpy(),
      'encoded': features.permute(0, 2, 3, 1).numpy(),  # NHWC
  }

  trained = copy.deepcopy(model).train()
  with torch.no_grad():
    outputs['train_logits'] = trained(images).numpy()
  for name, buffer in trained.named_buffers():
    if name.endswith(('running_mean', 'running_var')):
      before = model.get_buffer(name)
      assert not torch.allclose(buffer, before), name  # it was updated
      outputs[f'train_stats/{name}'] = buffer.numpy()

  _save('convmixer_timm.npz',
        {f'timm/{k}': v for k, v in state_dict.items()}
        | {f'out/{k}': v for k, v in outputs.items()})
  print('timm', timm.__version__, 'torch', torch.__version__)


if __name__ == '__main__':
  main()
