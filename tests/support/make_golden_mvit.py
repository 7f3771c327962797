"""Writes tests/golden/mvit_timm.npz (timm's MultiScaleVit, images) and
tests/golden/mvit_torchvision.npz (torchvision's video MViT, clips).

Run by hand, in an environment with torch, timm and torchvision (not
needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 torchvision==0.28.0
    python tests/support/make_golden_mvit.py [--out DIR]

Small models with random weights (relative position tables, pooling
kernels and their norms included), each case under its own prefix
('<case>/timm/...' or '<case>/torchvision/...' for the state dict,
'<case>/out/...' for images or clips (channels-last), logits and
pre-logits):

    timm 'v2':   MViTv2 as mvitv2_tiny at width 8, depths (1, 2, 1, 1),
                 32 px: stage grids 8, 4, 2, 1; key / value strides 4, 2, 1, 1
    timm 'v2l':  channels grown in the MLP (as mvitv2_large) with a class
                 token read by the head, depths (1, 2, 2), 64 px
    torchvision 'v2s':  as mvit_v2_s (class token, residual pooling without
                 it, relative t / h / w tables), 4 frames of 32 px,
                 depths (1, 2, 1)
    torchvision 'v1b':  as mvit_v1_b (separable absolute position
                 embedding, no residual pooling, channels grown in the MLP), as 'v2s'

tests/test_mvit.py builds the same models with `get_model('mvit', ...)`
(their kwargs are in that file).
"""

import numpy as np
import torch

import golden_torch

BATCH = 2


def fan_in(name, shape):  # pylint: disable=unused-argument
  """Every dimension but the first (3-D convolutions included); None for
  vectors."""
  if len(shape) < 2:
    return None
  return max(int(np.prod(shape[1:])), 1)


def timm_case(cfg_kwargs, image_size, global_pool, seed):
  from timm.models.mvitv2 import MultiScaleVit, MultiScaleVitCfg  # pylint: disable=g-import-not-at-top
  model = MultiScaleVit(MultiScaleVitCfg(**cfg_kwargs), img_size=image_size,
                        num_classes=10, global_pool=global_pool).eval()
  golden_torch.randomize(model, seed=seed, fan_in=fan_in)
  images = golden_torch.random_images(BATCH, image_size, image_size,
                                      seed=seed + 1)
  outputs = golden_torch.classifier_outputs(model, images)
  return golden_torch.to_numpy(model.state_dict()), outputs


def torchvision_case(blocks, v2, frames, size, seed):
  from torchvision.models.video import mvit  # pylint: disable=g-import-not-at-top
  setting = [mvit.MSBlockConfig(*block) for block in blocks]
  model = mvit.MViT(
      spatial_size=(size, size), temporal_size=frames, block_setting=setting,
      residual_pool=v2, residual_with_cls_embed=False, rel_pos_embed=v2,
      proj_after_attn=v2, num_classes=10).eval()
  golden_torch.randomize(model, seed=seed, fan_in=fan_in)
  clips = torch.randn(BATCH, 3, frames, size, size,
                      generator=torch.Generator().manual_seed(seed + 1))
  with torch.no_grad():
    x = model.conv_proj(clips).flatten(2).transpose(1, 2)
    x = model.pos_encoding(x)
    thw = (model.pos_encoding.temporal_size,) + model.pos_encoding.spatial_size
    for block in model.blocks:
      x, thw = block(x, thw)
    pre_logits = model.norm(x)[:, 0]
    logits = model.head(pre_logits)
    np.testing.assert_allclose(logits.numpy(), model(clips).numpy(),
                               atol=1e-6)
  outputs = {'clips': clips.permute(0, 2, 3, 4, 1).numpy(),
             'logits': logits.numpy(), 'pre_logits': pre_logits.numpy()}
  return golden_torch.to_numpy(model.state_dict()), outputs


K3 = [3, 3, 3]
# MSBlockConfig rows: heads, input and output channels, kernel_q, kernel_kv,
# stride_q, stride_kv (torchvision's per-block form of depths (1, 2, 1),
# width 8, 1 head doubling per stage, key / value stride 4 adaptive).
V2S_BLOCKS = [
    (1, 8, 8, K3, K3, [1, 1, 1], [1, 4, 4]),
    (2, 8, 16, K3, K3, [1, 2, 2], [1, 2, 2]),
    (2, 16, 16, K3, K3, [1, 1, 1], [1, 2, 2]),
    (4, 16, 32, K3, K3, [1, 2, 2], [1, 1, 1]),
]
V1B_BLOCKS = [
    (1, 8, 16, [], K3, [], [1, 4, 4]),
    (2, 16, 16, K3, K3, [1, 2, 2], [1, 2, 2]),
    (2, 16, 32, [], K3, [], [1, 2, 2]),
    (4, 32, 32, K3, K3, [1, 2, 2], [1, 1, 1]),
]


def write(out_dir):
  groups = {}
  with golden_torch.without_torchvision():
    for case, (cfg, size, pool, seed) in {
        'v2': (dict(depths=(1, 2, 1, 1), embed_dim=8, num_heads=1), 32,
               None, 20),
        'v2l': (dict(depths=(1, 2, 2), embed_dim=8, num_heads=1,
                     expand_attn=False, use_cls_token=True), 64, 'token',
                30),
    }.items():
      state_dict, outputs = timm_case(cfg, size, pool, seed)
      groups[f'{case}/timm'], groups[f'{case}/out'] = state_dict, outputs
  golden_torch.save(out_dir, 'mvit_timm.npz', **groups)


def write_torchvision(out_dir):
  groups = {}
  for case, (blocks, v2, seed) in {'v2s': (V2S_BLOCKS, True, 40),
                                   'v1b': (V1B_BLOCKS, False, 50)}.items():
    state_dict, outputs = torchvision_case(blocks, v2, 4, 32, seed)
    groups[f'{case}/torchvision'], groups[f'{case}/out'] = (state_dict,
                                                            outputs)
  golden_torch.save(out_dir, 'mvit_torchvision.npz', **groups)


def write_both(out_dir):
  # torchvision first: timm's generator hides torchvision from then on.
  write_torchvision(out_dir)
  write(out_dir)


if __name__ == '__main__':
  golden_torch.main(write_both, __doc__)
