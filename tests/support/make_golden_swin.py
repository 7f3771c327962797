"""Writes tests/golden/swin_timm.npz from timm's SwinTransformer (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden_swin.py [--out DIR]

A small Swin with random weights (relative position bias tables included)
is built whose geometry exercises every path of the model:

    image 32 px, patch 2, window 4, four stages:
      stage 0: 16x16 map, 4 windows a side, shifted blocks with a mask
      stage 1:  8x8 map, 2 windows a side, shifted blocks with a mask
      stage 2:  4x4 map, window == map: one window, no shift
      stage 3:  2x2 map, window clamped 4 -> 2, no shift

Saved: timm's state dict ('timm/...'), the NHWC images, logits, pre-logits
(final norm + average pool) and each stage's output ('out/stage_{i}', NHWC),
for tests/test_swin.py. torchvision is not required (see golden_torch.py,
which the generators share).
"""

import golden_torch

with golden_torch.without_torchvision():
  from timm.models.swin_transformer import SwinTransformer

IMAGE_SIZE = 32
BATCH = 3

# timm constructor arguments; tests/test_swin.py builds the same model as
# get_model('swin', patch_size=2, width=8, depths=(2, 2, 2, 1),
#           num_heads=(2, 2, 4, 8), window_size=4, num_classes=10).
SWIN_KWARGS = dict(img_size=IMAGE_SIZE, patch_size=2, embed_dim=8,
                   depths=(2, 2, 2, 1), num_heads=(2, 2, 4, 8), window_size=4,
                   mlp_ratio=4.0, num_classes=10)


def write(out_dir):
  images = golden_torch.random_images(BATCH, IMAGE_SIZE, IMAGE_SIZE, seed=3)
  model = SwinTransformer(**SWIN_KWARGS).eval()
  golden_torch.randomize(model, seed=10)
  outputs = golden_torch.stage_outputs(model, images)
  state_dict = golden_torch.to_numpy(model.state_dict())
  golden_torch.save(out_dir, 'swin_timm.npz', timm=state_dict, out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
