"""Swin's weights in timm's layout (stage i > 0 starts with
`layers.i.downsample`, our stage_i/patch_merging)."""

from vit_jax.weights.core import (CONV, LINEAR, attention, buffer, dense,
                                  entry, norm)

NAME = 'swin'


def _stage_heads(model, index):
  """Swin's heads differ per stage: the entry's first index is the stage."""
  stage = index[0]
  if stage >= len(model.num_heads):
    raise ValueError(
        f'A Swin attention weight of stage {stage} matches no stage of the '
        f'model (num_heads {tuple(model.num_heads)}).')
  return model.num_heads[stage]


_BLOCK = 'layers.{0}.blocks.{1}.'
_OURS = 'stage_{0}/block_{1}/'

TIMM = [
    *dense('patch_embed.proj', 'patch_embed', CONV),
    *norm('patch_embed.norm', 'embed_norm'),
    *norm('layers.{0}.downsample.norm', 'stage_{0}/patch_merging/norm'),
    entry('layers.{0}.downsample.reduction.weight',
          'stage_{0}/patch_merging/reduction/kernel', LINEAR),
    *[e for n in ('norm1', 'norm2') for e in norm(_BLOCK + n, _OURS + n)],
    entry(_BLOCK + 'attn.relative_position_bias_table',
          _OURS + 'relative_position_bias_table'),
    *attention(_OURS + 'attn', _BLOCK + 'attn.qkv', _BLOCK + 'attn.proj',
               heads=_stage_heads),
    *[e for fc in ('fc1', 'fc2')
      for e in dense(_BLOCK + 'mlp.' + fc, _OURS + 'mlp/' + fc)],
    # Buffers, not parameters (older timm and the reference code save them):
    # recomputed from shapes by `vit_jax.models.swin`.
    buffer(_BLOCK + 'attn.relative_position_index'),
    buffer(_BLOCK + 'attn_mask'),
    *norm('norm', 'final_norm'),
    *dense(('head.fc', 'head'), 'head'),
]
