"""Writes tests/golden/xcit_timm.npz from timm's Xcit (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden_xcit.py [--out DIR]

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

torchvision is not needed (see golden_torch.py, which the generators
share).
"""

import torch

import golden_torch

with golden_torch.without_torchvision():
  from timm.models.xcit import Xcit

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


def write(out_dir):
  images = golden_torch.random_images(BATCH, IMAGE_HEIGHT, IMAGE_WIDTH, seed=4)
  model = Xcit(**XCIT_KWARGS).eval()
  golden_torch.randomize(model, seed=11)
  _randomize_batch_norms(model, seed=12)
  outputs = golden_torch.classifier_outputs(model, images)
  cls_norm_only = Xcit(**{**XCIT_KWARGS, 'tokens_norm': False}).eval()
  cls_norm_only.load_state_dict(model.state_dict())
  with torch.no_grad():
    outputs['logits_cls_norm_only'] = cls_norm_only(images).numpy()
  outputs.update(golden_torch.train_mode_outputs(model, images))
  # The model as built: its train-mode forward ran on a copy.
  golden_torch.save(out_dir, 'xcit_timm.npz',
                    timm=golden_torch.to_numpy(model.state_dict()), out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
