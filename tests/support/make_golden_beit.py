"""Writes tests/golden/beit_timm.npz and beit_cls_timm.npz from timm's Beit
(PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden_beit.py [--out DIR]

Two small BEiTs with random weights (every parameter, the relative position
bias tables, query / value biases and LayerScale gammas included):

  beit_timm.npz: as the released BEiT / BEiT v2 models: patch tokens
    averaged into fc_norm, a bias table per block, LayerScale, no absolute
    position embedding; 32x32 images, patch 8 (a 4x4 grid). Also the same
    weights loaded by timm into the model built for 48x40 images (its
    checkpoint filter resamples every table from the 4x4 grid to 6x5):
    'out/resized_images', 'out/resized_logits' and the first block's
    resampled table, 'out/resized_table_0'.
  beit_cls_timm.npz: class-token pooling after the final norm, an absolute
    position embedding besides the tables, no query / value biases, on
    24x32 images (a 3x4 grid).

Saved for each: timm's state dict ('timm/...'), the NHWC images, logits
and pre-logits ('out/...'), for tests/test_beit.py.
"""

import torch

import golden_torch

with golden_torch.without_torchvision():
  from timm.models.beit import Beit, checkpoint_filter_fn

BATCH = 3

# timm constructor arguments; tests/test_beit.py builds the same models as
# get_model('beit', patch_size=8, width=32, depth=2, mlp_dim=64,
# num_heads=4, num_classes=10, ...) with the options of each case.
_SIZE = dict(patch_size=8, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0,
             num_classes=10)
BEIT_KWARGS = dict(_SIZE, img_size=32, global_pool='avg', init_values=0.1,
                   use_abs_pos_emb=False, use_rel_pos_bias=True)
CLS_KWARGS = dict(_SIZE, img_size=(24, 32), global_pool='token',
                  init_values=1e-5, use_abs_pos_emb=True,
                  use_rel_pos_bias=True, qkv_bias=False)
RESIZED = (48, 40)


def _build(kwargs, seed):
  model = Beit(**kwargs).eval()
  golden_torch.randomize(model, seed=seed)
  return model


def write(out_dir):
  model = _build(BEIT_KWARGS, seed=20)
  images = golden_torch.random_images(BATCH, 32, 32, seed=21)
  outputs = golden_torch.classifier_outputs(model, images)
  state_dict = model.state_dict()

  # The same weights at another resolution, as timm loads a checkpoint
  # into a model built for it.
  resized = Beit(**dict(BEIT_KWARGS, img_size=RESIZED)).eval()
  resized.load_state_dict(checkpoint_filter_fn(state_dict, resized))
  resized_images = golden_torch.random_images(BATCH, *RESIZED, seed=22)
  resized_outputs = golden_torch.classifier_outputs(resized, resized_images)
  outputs['resized_images'] = resized_outputs['images']
  outputs['resized_logits'] = resized_outputs['logits']
  outputs['resized_table_0'] = (
      resized.blocks[0].attn.relative_position_bias_table.detach().numpy())
  print('tables:', tuple(model.blocks[0].attn.relative_position_bias_table
                         .shape), '->', outputs['resized_table_0'].shape)
  golden_torch.save(out_dir, 'beit_timm.npz',
                    timm=golden_torch.to_numpy(state_dict), out=outputs)

  model = _build(CLS_KWARGS, seed=23)
  images = golden_torch.random_images(BATCH, 24, 32, seed=24)
  outputs = golden_torch.classifier_outputs(model, images)
  golden_torch.save(out_dir, 'beit_cls_timm.npz',
                    timm=golden_torch.to_numpy(model.state_dict()),
                    out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
