"""Writes tests/golden/swinv2_timm.npz from timm's SwinTransformerV2 (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden_swinv2.py [--out DIR]

A small Swin V2 with random weights (logit scales, position-bias MLPs and
post-norms included) on non-square images, whose geometry exercises every
path of the model:

    image 32x64 px, patch 2, window 4, four stages:
      stage 0: 16x32 map, shifted blocks with a mask on both axes
      stage 1:  8x16 map, the same
      stage 2:  4x8 map, window 4x4: shifted along the width only
      stage 3:  2x4 map, window clamped to 2x4, no shift

One head's logit scale is set above log(100), so that its clamp matters.
The same weights are run again with pretrained_window_sizes (the windows
the position-bias MLP was trained with) given per stage.

Saved: timm's state dict ('timm/...'), the NHWC images, logits, pre-logits
(final norm + average pool), each stage's output ('out/stage_{i}', NHWC),
and the logits with the pretrained windows ('out/pretrained_windows_logits'),
for tests/test_swinv2.py. torchvision is not required (see golden_torch.py,
which the generators share).
"""

import torch

import golden_torch

with golden_torch.without_torchvision():
  from timm.models.swin_transformer_v2 import SwinTransformerV2

IMAGE_SIZE = (32, 64)
BATCH = 2

# timm constructor arguments; tests/test_swinv2.py builds the same model as
# get_model('swinv2', patch_size=2, width=8, depths=(2, 2, 2, 1),
#           num_heads=(2, 2, 4, 8), window_size=4, num_classes=10).
SWINV2_KWARGS = dict(img_size=IMAGE_SIZE, patch_size=2, embed_dim=8,
                     depths=(2, 2, 2, 1), num_heads=(2, 2, 4, 8),
                     window_size=4, mlp_ratio=4.0, num_classes=10)
PRETRAINED_WINDOW_SIZES = (6, 6, 3, 2)
# Above log(100) = 4.61: the clamp holds 1 / tau at 100.
CLAMPED_LOGIT_SCALE = ('layers.0.blocks.1.attn.logit_scale', 1, 5.5)


def write(out_dir):
  images = golden_torch.random_images(BATCH, *IMAGE_SIZE, seed=3)
  model = SwinTransformerV2(**SWINV2_KWARGS).eval()
  golden_torch.randomize(model, seed=11)
  name, head, value = CLAMPED_LOGIT_SCALE
  with torch.no_grad():
    model.get_parameter(name)[head] = value
  outputs = golden_torch.stage_outputs(model, images)
  state_dict = golden_torch.to_numpy(model.state_dict())

  pretrained = SwinTransformerV2(
      **SWINV2_KWARGS, pretrained_window_sizes=PRETRAINED_WINDOW_SIZES).eval()
  pretrained.load_state_dict(model.state_dict())
  with torch.no_grad():
    pretrained_logits = pretrained(images).numpy()
  change = abs(pretrained_logits - outputs['logits']).max()
  print(f'pretrained windows change the logits by up to {change:.4g}')
  outputs['pretrained_windows_logits'] = pretrained_logits
  golden_torch.save(out_dir, 'swinv2_timm.npz', timm=state_dict, out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
