"""Writes tests/golden/eva_timm.npz and eva_cls_timm.npz from timm's Eva
(PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden_eva.py [--out DIR]

Two small EVA-02s with random weights (every parameter, the norms inside
the MLP and attention included), both with the rotary position embedding
on a reference grid other than their patch grid:

  eva_timm.npz: as the fine-tuned classifiers (EVA-02 B / L): patch tokens
    averaged into fc_norm, separate q / k / v projections, the unpacked
    SwiGLU with its norm (scale_mlp); 16x16 images, patch 4 (a 4x4 grid,
    rotary coordinates scaled to a 3x3 reference). Also the same weights
    loaded by timm into the model built for 20x24 images (its checkpoint
    filter resamples the position embedding to 5x6, antialiased bicubic;
    the rotary grid follows, still scaled to 3x3): 'out/resized_images',
    'out/resized_logits'.
  eva_cls_timm.npz: as the MIM / CLIP towers: class-token pooling after the
    final norm, the fused qkv, the packed SwiGLU (Tiny, Small), the norm
    inside the attention (scale_attn_inner), LayerScale, on 16x24 images
    (a 4x6 grid scaled to a 4x4 reference).

Saved for each: timm's state dict ('timm/...'), the NHWC images, logits
and pre-logits ('out/...'), and each block's output on the patch grid
from timm's `forward_intermediates` (NHWC, 'out/layer/i', through the final
norm 'out/layer_norm/i'; the class token 'out/prefix/i'), for
tests/test_eva.py.
"""

import torch

import golden_torch

with golden_torch.without_torchvision():
  from timm.models.eva import Eva, checkpoint_filter_fn

BATCH = 3

# timm constructor arguments; tests/test_eva.py builds the same models as
# get_model('eva', patch_size=4, width=32, depth=2, mlp_dim=64,
# num_heads=4, num_classes=10, ...) with the options of each case.
_SIZE = dict(patch_size=4, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
             num_classes=10, swiglu_mlp=True, use_rot_pos_emb=True)
EVA_KWARGS = dict(_SIZE, img_size=16, global_pool='avg', qkv_fused=False,
                  scale_mlp=True, ref_feat_shape=(3, 3))
CLS_KWARGS = dict(_SIZE, img_size=(16, 24), global_pool='token',
                  qkv_fused=True, scale_attn_inner=True, init_values=0.1,
                  ref_feat_shape=(4, 4))
RESIZED = (20, 24)


def _build(kwargs, seed):
  model = Eva(**kwargs).eval()
  golden_torch.randomize(model, seed=seed)
  return model


def _with_layers(model, images, outputs):
  """`outputs` with timm's per-block outputs, plain and normed."""
  with torch.no_grad():
    for group, norm in (('layer', False), ('layer_norm', True)):
      maps = model.forward_intermediates(
          images, norm=norm, return_prefix_tokens=True,
          intermediates_only=True)
      for index, (grid, prefix) in enumerate(maps):
        outputs[f'{group}/{index}'] = golden_torch.nhwc(grid)
        if not norm:
          outputs[f'prefix/{index}'] = prefix.numpy()
  return outputs


def write(out_dir):
  model = _build(EVA_KWARGS, seed=30)
  images = golden_torch.random_images(BATCH, 16, 16, seed=31)
  outputs = _with_layers(model, images,
                         golden_torch.classifier_outputs(model, images))
  state_dict = model.state_dict()

  # The same weights at another resolution, as timm loads a checkpoint
  # into a model built for it.
  resized = Eva(**dict(EVA_KWARGS, img_size=RESIZED)).eval()
  resized.load_state_dict(checkpoint_filter_fn(state_dict, resized))
  resized_images = golden_torch.random_images(BATCH, *RESIZED, seed=32)
  resized_outputs = golden_torch.classifier_outputs(resized, resized_images)
  outputs['resized_images'] = resized_outputs['images']
  outputs['resized_logits'] = resized_outputs['logits']
  print('rope:', tuple(model.rope.pos_embed.shape), '->',
        tuple(resized.rope.pos_embed.shape))
  golden_torch.save(out_dir, 'eva_timm.npz',
                    timm=golden_torch.to_numpy(state_dict), out=outputs)

  model = _build(CLS_KWARGS, seed=33)
  images = golden_torch.random_images(BATCH, 16, 24, seed=34)
  outputs = _with_layers(model, images,
                         golden_torch.classifier_outputs(model, images))
  golden_torch.save(out_dir, 'eva_cls_timm.npz',
                    timm=golden_torch.to_numpy(model.state_dict()),
                    out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
