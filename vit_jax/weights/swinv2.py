"""Swin V2's weights in timm's layout (as Swin's: stage i > 0 starts with
`layers.i.downsample`; timm's Hub checkpoints are in it, the reference
code's own files, which merge at the end of a stage, are not read)."""

from typing import Any, Dict, Mapping, Tuple

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights.core import (CONV, HEADS_BIAS, HEADS_IN, HEADS_OUT,
                                  LINEAR, QKV, Architecture, buffer, dense,
                                  entry, norm)

NAME = 'swinv2'


def _stage_heads(model, index):
  """Heads differ per stage: the entry's first index is the stage."""
  if index[0] >= len(model.num_heads):
    raise ValueError(
        f'A SwinV2 attention weight of stage {index[0]} matches no stage of '
        f'the model (num_heads {tuple(model.num_heads)}).')
  return model.num_heads[index[0]]


# timm's logit_scale is [heads, 1, 1] (it broadcasts over the logits);
# ours is [heads].
PER_HEAD = core.Transform('per_head', lambda x, heads: x.reshape(-1),
                          lambda x: x.reshape(-1, 1, 1))

_BLOCK = 'layers.{0}.blocks.{1}.'
_OURS = 'stage_{0}/block_{1}/'
_ATTN, _OURS_ATTN = _BLOCK + 'attn.', _OURS + 'attn/'

TIMM = [
    *dense('patch_embed.proj', 'patch_embed', CONV),
    *norm('patch_embed.norm', 'embed_norm'),
    *norm('layers.{0}.downsample.norm', 'stage_{0}/patch_merging/norm'),
    entry('layers.{0}.downsample.reduction.weight',
          'stage_{0}/patch_merging/reduction/kernel', LINEAR),
    *[e for n in ('norm1', 'norm2') for e in norm(_BLOCK + n, _OURS + n)],
    # One fused qkv weight without a bias; the query's and value's biases
    # apart (the key's is a zero buffer).
    entry(_ATTN + 'qkv.weight', _OURS_ATTN + '{part}/kernel', HEADS_IN,
          parts=QKV, heads=_stage_heads),
    entry(_ATTN + 'q_bias', _OURS_ATTN + 'query/bias', HEADS_BIAS,
          heads=_stage_heads),
    entry(_ATTN + 'v_bias', _OURS_ATTN + 'value/bias', HEADS_BIAS,
          heads=_stage_heads),
    *dense(_ATTN + 'proj', _OURS_ATTN + 'out', HEADS_OUT, heads=_stage_heads),
    entry(_ATTN + 'logit_scale', _OURS_ATTN + 'logit_scale', PER_HEAD),
    *dense(_ATTN + 'cpb_mlp.0', _OURS_ATTN + 'cpb_mlp/fc1'),
    entry(_ATTN + 'cpb_mlp.2.weight', _OURS_ATTN + 'cpb_mlp/fc2/kernel',
          LINEAR),
    *[e for fc in ('fc1', 'fc2')
      for e in dense(_BLOCK + 'mlp.' + fc, _OURS + 'mlp/' + fc)],
    # Buffers, not parameters (older timm and the reference code save
    # them): recomputed from shapes by `vit_jax.models.swinv2`.
    buffer(_ATTN + 'k_bias'),
    buffer(_ATTN + 'relative_coords_table'),
    buffer(_ATTN + 'relative_position_index'),
    buffer(_BLOCK + 'attn_mask'),
    *norm('norm', 'final_norm'),
    *dense(('head.fc', 'head'), 'head'),
]


# timm's Swin V2 entry points: name -> (size, window, the windows the
# position-bias MLP was trained with (None: the model's own), resolution).
# The "12to16" and "12to24" models are fine-tuned from window 12 at 192 px,
# whose last stage (6 a side) had window 6.
_FINE_TUNED = (12, 12, 12, 6)
_NAMED = {
    'swinv2_tiny_window8_256': ('T', 8, None, 256),
    'swinv2_tiny_window16_256': ('T', 16, None, 256),
    'swinv2_small_window8_256': ('S', 8, None, 256),
    'swinv2_small_window16_256': ('S', 16, None, 256),
    'swinv2_base_window8_256': ('B', 8, None, 256),
    'swinv2_base_window16_256': ('B', 16, None, 256),
    'swinv2_base_window12_192': ('B', 12, None, 192),
    'swinv2_base_window12to16_192to256': ('B', 16, _FINE_TUNED, 256),
    'swinv2_base_window12to24_192to384': ('B', 24, _FINE_TUNED, 384),
    'swinv2_large_window12_192': ('L', 12, None, 192),
    'swinv2_large_window12to16_192to256': ('L', 16, _FINE_TUNED, 256),
    'swinv2_large_window12to24_192to384': ('L', 24, _FINE_TUNED, 384),
}

TIMM_ARCHITECTURES = {
    name: Architecture(
        NAME, dict(variant=f'{size}/4', window_size=window,
                   **({} if pretrained is None else
                      dict(pretrained_window_sizes=pretrained))),
        resolution)
    for name, (size, window, pretrained, resolution) in _NAMED.items()}

# timm's pretrained tags on the Hub (timm 1.0.31's default_cfgs: one each).
_IN1K, _IN22K, _FT = ('ms_in1k',), ('ms_in22k',), ('ms_in22k_ft_in1k',)
TIMM_ARCHITECTURES = core.tagged(TIMM_ARCHITECTURES, {
    'swinv2_tiny_window8_256': _IN1K,
    'swinv2_tiny_window16_256': _IN1K,
    'swinv2_small_window8_256': _IN1K,
    'swinv2_small_window16_256': _IN1K,
    'swinv2_base_window8_256': _IN1K,
    'swinv2_base_window16_256': _IN1K,
    'swinv2_base_window12_192': _IN22K,
    'swinv2_large_window12_192': _IN22K,
    'swinv2_base_window12to16_192to256': _FT,
    'swinv2_base_window12to24_192to384': _FT,
    'swinv2_large_window12to16_192to256': _FT,
    'swinv2_large_window12to24_192to384': _FT,
})


def _ints(value) -> Tuple[int, ...]:
  """Every int of timm's window spec (an int, (h, w), or one per stage)."""
  if isinstance(value, (list, tuple)):
    return tuple(side for item in value for side in _ints(item))
  return (value,)


def _adjust(kwargs: Dict[str, Any], architecture: Mapping[str, Any],
            model_args: Mapping[str, Any]) -> None:
  """timm's window_size as one side (it may be a pair or one per stage);
  its default pretrained_window_sizes (all 0) as None."""
  del architecture
  if 'window_size' in model_args:
    sides = set(_ints(model_args['window_size']))
    if len(sides) != 1:
      raise ValueError(
          f'timm model_args window_size={model_args["window_size"]!r}: '
          f'SwinV2 here has one square window for every stage.')
    kwargs['window_size'] = sides.pop()
  sizes = kwargs.get('pretrained_window_sizes')
  if sizes is not None:
    # timm reads the first len(depths) of them.
    sizes = sizes[:len(kwargs['depths'])]
    kwargs['pretrained_window_sizes'] = sizes if any(sizes) else None


TIMM_ARGS = core.TimmArgs(
    size_fields=('patch_size', 'width', 'depths', 'num_heads'),
    renamed={'embed_dim': 'width', 'depths': 'depths',
             'num_heads': 'num_heads', 'patch_size': 'patch_size',
             'window_size': 'window_size', 'mlp_ratio': 'mlp_ratio',
             'pretrained_window_sizes': 'pretrained_window_sizes'},
    fixed={'global_pool': ('avg',), 'qkv_bias': (True,),
           'always_partition': (False,), 'act_layer': ('gelu',)},
    adjust=_adjust)


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  """Any Swin V2 of timm's layout: the named entry point of its size,
  window and pretrained windows, or swinv2_tiny_window8_256 with
  model_args saying the sizes."""
  if model.layer_norm_eps != 1e-5:
    return core.no_timm_model('timm\'s SwinV2 has LayerNorm eps 1e-5')
  pretrained = (tuple(model.pretrained_window_sizes)
                if model.pretrained_window_sizes else None)
  key = (core.variant_of(model, models.swin.VARIANTS), model.window_size,
         pretrained, image_size[0])
  name = next((name for name, (size, window, trained, resolution)
               in _NAMED.items()
               if (size, window, trained, resolution) == key), None)
  stages = len(model.depths)
  return core.TimmModel(
      name if model.patch_size == 4 and name else 'swinv2_tiny_window8_256',
      dict(img_size=core.side(image_size), patch_size=model.patch_size,
           embed_dim=model.width, depths=list(model.depths),
           num_heads=list(model.num_heads), window_size=model.window_size,
           mlp_ratio=model.mlp_ratio,
           pretrained_window_sizes=list(pretrained or (0,) * stages)),
      num_features=model.width * 2 ** (stages - 1),
      fixed_input_size=True)
