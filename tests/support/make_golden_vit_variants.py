"""Writes the golden files of timm's ViT variants under tests/golden/:
DINOv2 (with and without registers, and the giant's SwiGLU MLP), a CLIP
image tower, DeiT III, and registers with average pooling.

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden_vit_variants.py [--out DIR]

Each case is timm's VisionTransformer with the constructor arguments its
entry points use (vit_*_patch14_dinov2, vit_*_patch14_reg4_dinov2,
vit_*_clip_quickgelu_224, deit3_*, vit_giant_patch14_dinov2's MLP), at a
tiny size, with random weights
(LayerScale and register tokens included). Saved per case,
`vit_<case>_timm.npz`: timm's state dict ('timm/...'), the NHWC images,
logits and pre-logits ('out/...'); for the DINOv2 cases also the same
weights at another resolution, the position embedding resampled as timm
resamples a checkpoint it loads at another size (bicubic, antialiased:
timm's resample_abs_pos_embed defaults), and the logits there
('out/pos_embed_<side>', 'out/images_<side>', 'out/logits_<side>'). For
tests/test_vit_variants.py. torchvision is not required (golden_torch.py,
which the generators share).
"""

import functools

import torch

import golden_torch

with golden_torch.without_torchvision():
  from timm.layers import resample_abs_pos_embed
  from timm.layers import SwiGLUPacked
  from timm.models.vision_transformer import VisionTransformer

IMAGE_SIZE = 32
BATCH = 3
_TINY = dict(img_size=IMAGE_SIZE, patch_size=8, embed_dim=32, depth=2,
             num_heads=4, mlp_ratio=2.0, num_classes=10)

# case -> (timm constructor arguments, another resolution to resample to
# or None). tests/support/golden_cases.py has the same models as
# get_model kwargs.
CASES = {
    'vit_dinov2': (dict(_TINY, init_values=1e-5), 48),
    'vit_dinov2_reg4': (dict(_TINY, init_values=1e-5, reg_tokens=4,
                             no_embed_class=True), 24),
    'vit_clip_quickgelu': (dict(
        _TINY, pre_norm=True, act_layer='quick_gelu',
        norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-5)), None),
    'vit_deit3': (dict(_TINY, init_values=1e-6, no_embed_class=True), None),
    'vit_reg_gap': (dict(_TINY, reg_tokens=2, class_token=False,
                         global_pool='avg', fc_norm=False), None),
    # vit_giant_patch14_dinov2's MLP: SwiGLU, 2 x 64 hidden units.
    'vit_dinov2_swiglu': (dict(_TINY, init_values=1e-5, mlp_ratio=4.0,
                               mlp_layer=SwiGLUPacked,
                               act_layer=torch.nn.SiLU), None),
}


def _resampled(kwargs, model, side):
  """The model's weights at `side` px, as timm loads them there."""
  grid = side // kwargs['patch_size']
  old_grid = IMAGE_SIZE // kwargs['patch_size']
  other = VisionTransformer(**{**kwargs, 'img_size': side}).eval()
  state_dict = model.state_dict()
  state_dict['pos_embed'] = resample_abs_pos_embed(
      state_dict['pos_embed'], new_size=(grid, grid),
      old_size=(old_grid, old_grid),
      num_prefix_tokens=0 if model.no_embed_class else model.num_prefix_tokens)
  other.load_state_dict(state_dict)
  return other, state_dict['pos_embed']


def write(out_dir):
  images = golden_torch.random_images(BATCH, IMAGE_SIZE, IMAGE_SIZE, seed=5)
  for seed, (name, (kwargs, other_side)) in enumerate(CASES.items(),
                                                      start=20):
    model = VisionTransformer(**kwargs).eval()
    golden_torch.randomize(model, seed)
    outputs = golden_torch.classifier_outputs(model, images)
    if other_side:
      other, pos_embed = _resampled(kwargs, model, other_side)
      other_images = golden_torch.random_images(BATCH, other_side,
                                                other_side, seed=6)
      with torch.no_grad():
        outputs[f'images_{other_side}'] = golden_torch.nhwc(other_images)
        outputs[f'logits_{other_side}'] = other(other_images).numpy()
      outputs[f'pos_embed_{other_side}'] = pos_embed.numpy()
    state_dict = golden_torch.to_numpy(model.state_dict())
    golden_torch.save(out_dir, f'{name}_timm.npz', timm=state_dict,
                      out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
