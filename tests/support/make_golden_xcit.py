"""Writes tests/golden/xcit_timm.npz from timm's Xcit (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/make_golden_xcit.py

A small XCiT with random weights is built (images 24x32 px, patch 8: a
3-layer convolutional patch embedding and a 3x4 grid of patches, width 24,
4 heads, MLP width 48, 2 XCiT layers, 2 class-attention layers, LayerScale
1, 10 classes). Every BatchNorm gets random running averages too, so that
eval mode depends on them. Saved, for tests/test_xcit.py:

    timm/<name>               timm's state dict
    out/images                the NHWC input images
    out/logits, out/pre_logits  eval mode, tokens_norm=True
    out/logits_cls_norm_only  eval mode, the same weights, tokens_norm=False
    out/train_logits          train mode (batch statistics), drop path 0
    out/train_stats/<name>    every BatchNorm's running_mean / running_var
                              after that one train-mode forward

torchvision is not needed: make_golden.py's placeholder stands in for it,
installed here even where a torchvision is present (a wheel that does not
match torch fails on import).
"""

import copy
import importlib.util
import os

import numpy as np

_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *args: (
    None if name == 'torchvision' else _find_spec(name, *args))
import make_golden  # noqa: E402  installs the torchvision placeholder.
importlib.util.find_spec = _find_spec
from make_golden import _randomize, _save, _to_numpy  # noqa: E402,I100

import timm  # noqa: E402,I100
import torch  # noqa: E402
from timm.models.xcit import Xcit  # noqa: E402

# Not square, so that rows and columns cannot be swapped unnoticed.
IMAGE_HEIGHT, IMAGE_WIDTH = 24, 32
BATCH = 3

# timm constructor arguments; tests/test_xcit.py builds the same model as
# get_model('xcit', patch_size=8, width=24, depth=2, num_heads=4,
#           mlp_ratio=2.0, layer_scale_init=1.0, tokens_norm=True,
#           num_classes=10).
XCIT_KWARGS = dict(img_size=(IMAGE_HEIGHT, IMAGE_WIDTH), patch_size=8,
                   embed_dim=24, depth=2, num_heads=4, mlp_ratio=2.0,
                   cls_attn_layers=2, eta=1.0, tokens_norm=True,
                   num_classes=10, drop_path_rate=0.0)


def _randomize_batch_norms(model, seed):
  """Scales near 1 and random running averages for every BatchNorm."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, torch.nn.BatchNorm2d):
        shape = module.running_mean.shape
        module.weight.copy_(1.0 + 0.2 * torch.randn(shape,
                                                    generator=generator))
        module.running_mean.copy_(0.3 * torch.randn(shape,
                                                    generator=generator))
        module.running_var.copy_(0.5 + torch.rand(shape, generator=generator))
    for name, param in model.named_parameters():
      if name.endswith('attn.temperature'):  # positive, as trained ones are
        param.copy_(1.0 + torch.rand(param.shape, generator=generator))


def main():
  os.makedirs(make_golden.GOLDEN_DIR, exist_ok=True)
  images = torch.randn(BATCH, 3, IMAGE_HEIGHT, IMAGE_WIDTH,
                       generator=torch.Generator().manual_seed(4))
  model = Xcit(**XCIT_KWARGS).eval()
  _randomize(model, seed=11)
  _randomize_batch_norms(model, seed=12)
  state_dict = _to_numpy(model.state_dict())

  with torch.no_grad():
    features = model.forward_features(images)
    pre_logits = model.forward_head(features, pre_logits=True)
    logits = model.forward_head(features)
    np.testing.assert_allclose(logits.numpy(), model(images).numpy(),
                               atol=1e-6)
    cls_norm_only = Xcit(**{**XCIT_KWARGS, 'tokens_norm': False}).eval()
    cls_norm_only.load_state_dict(model.state_dict())
    logits_cls_norm_only = cls_norm_only(images)
    trained = copy.deepcopy(model).train()
    train_logits = trained(images)
  train_stats = {
      name: value.numpy() for name, value in trained.state_dict().items()
      if name.endswith(('running_mean', 'running_var'))}
  print('BatchNorms:', len(train_stats) // 2, '| largest change of a running '
        'average:', max(np.abs(value - state_dict[name]).max()
                        for name, value in train_stats.items()))
  outputs = {
      'images': images.permute(0, 2, 3, 1).numpy(),  # NHWC
      'logits': logits.numpy(),
      'pre_logits': pre_logits.numpy(),
      'logits_cls_norm_only': logits_cls_norm_only.numpy(),
      'train_logits': train_logits.numpy(),
  }
  outputs.update({f'train_stats/{name}': value
                  for name, value in train_stats.items()})
  _save('xcit_timm.npz', {f'timm/{k}': v for k, v in state_dict.items()}
        | {f'out/{k}': v for k, v in outputs.items()})
  print('timm', timm.__version__, 'torch', torch.__version__)


if __name__ == '__main__':
  main()
