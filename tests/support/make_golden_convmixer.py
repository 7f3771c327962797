"""Writes tests/golden/convmixer_timm.npz from timm's ConvMixer (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden_convmixer.py [--out DIR]

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

torchvision is not required (see golden_torch.py, which the generators
share).
"""

import torch

import golden_torch

with golden_torch.without_torchvision():
  from timm.models.convmixer import ConvMixer

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


def write(out_dir):
  images = golden_torch.random_images(BATCH, IMAGE_SIZE, IMAGE_SIZE, seed=5)
  model = ConvMixer(**CONVMIXER_KWARGS).eval()
  golden_torch.randomize(model, seed=20)
  _randomize_batch_norms(model, seed=21)
  with torch.no_grad():
    features = model.forward_features(images)
  outputs = golden_torch.classifier_outputs(model, images, features)
  outputs['encoded'] = golden_torch.nhwc(features)
  outputs.update(golden_torch.train_mode_outputs(model, images))
  # The model as built: its train-mode forward ran on a copy.
  golden_torch.save(out_dir, 'convmixer_timm.npz',
                    timm=golden_torch.to_numpy(model.state_dict()), out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
