"""Writes tests/golden/swin_timm.npz from timm's SwinTransformer (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/make_golden_swin.py

A small Swin with random weights (relative position bias tables included)
is built whose geometry exercises every path of the model:

    image 32 px, patch 2, window 4, four stages:
      stage 0: 16x16 map, 4 windows a side, shifted blocks with a mask
      stage 1:  8x8 map, 2 windows a side, shifted blocks with a mask
      stage 2:  4x4 map, window == map: one window, no shift
      stage 3:  2x2 map, window clamped 4 -> 2, no shift

Saved: timm's state dict ('timm/...'), the NHWC images, logits, pre-logits
(final norm + average pool) and each stage's output ('out/stage_{i}', NHWC),
for tests/test_swin.py. torchvision is not required (see make_golden.py, whose
helpers this script reuses).
"""

import os

import numpy as np

import make_golden  # installs the torchvision placeholder before timm.
from make_golden import _randomize, _save, _to_numpy  # noqa: I100

import timm  # noqa: E402,I100
import torch  # noqa: E402
from timm.models.swin_transformer import SwinTransformer  # noqa: E402

IMAGE_SIZE = 32
BATCH = 3

# timm constructor arguments; tests/test_swin.py builds the same model as
# get_model('swin', patch_size=2, width=8, depths=(2, 2, 2, 1),
#           num_heads=(2, 2, 4, 8), window_size=4, num_classes=10).
SWIN_KWARGS = dict(img_size=IMAGE_SIZE, patch_size=2, embed_dim=8,
                   depths=(2, 2, 2, 1), num_heads=(2, 2, 4, 8), window_size=4,
                   mlp_ratio=4.0, num_classes=10)


def main():
  os.makedirs(make_golden.GOLDEN_DIR, exist_ok=True)
  images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE,
                       generator=torch.Generator().manual_seed(3))
  model = SwinTransformer(**SWIN_KWARGS).eval()
  _randomize(model, seed=10)
  geometry = [(tuple(block.window_size), tuple(block.shift_size))
              for stage in model.layers for block in stage.blocks]
  print('window, shift per block:', geometry)
  with torch.no_grad():
    features, stage_maps = model.forward_intermediates(images)
    pre_logits = model.forward_head(features, pre_logits=True)
    logits = model.forward_head(features)
    np.testing.assert_allclose(logits.numpy(), model(images).numpy(),
                               atol=1e-6)
  outputs = {
      'images': images.permute(0, 2, 3, 1).numpy(),  # NHWC
      'logits': logits.numpy(),
      'pre_logits': pre_logits.numpy(),
  }
  for index, stage_map in enumerate(stage_maps):  # NCHW -> NHWC
    outputs[f'stage_{index}'] = stage_map.permute(0, 2, 3, 1).numpy()
  state_dict = _to_numpy(model.state_dict())
  _save('swin_timm.npz', {f'timm/{k}': v for k, v in state_dict.items()}
        | {f'out/{k}': v for k, v in outputs.items()})
  print('timm', timm.__version__, 'torch', torch.__version__)


if __name__ == '__main__':
  main()
