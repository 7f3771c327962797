"""Swin's weights in timm's layout (stage i > 0 starts with
`layers.i.downsample`, our stage_i/patch_merging)."""

from typing import Any, Dict, Mapping, Tuple

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights.core import (CONV, LINEAR, Architecture, attention,
                                  buffer, dense, entry, norm)

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


# timm's Swin entry points: window 7 at 224 px, 12 at 384 px.
_NAMED = (('tiny', 7, 224), ('small', 7, 224), ('base', 7, 224),
          ('base', 12, 384), ('large', 7, 224), ('large', 12, 384))

TIMM_ARCHITECTURES = {
    f'swin_{size}_patch4_window{window}_{res}': Architecture(
        'swin', dict(variant=f'{size[0].upper()}/4', window_size=window), res)
    for size, window, res in _NAMED}

# timm's pretrained tags on the Hub (timm 1.0.31, the default first).
_IN22K = ('ms_in22k_ft_in1k', 'ms_in22k')
TIMM_ARCHITECTURES = core.tagged(TIMM_ARCHITECTURES, {
    'swin_tiny_patch4_window7_224': ('ms_in1k', *_IN22K),
    **{f'swin_{size}_patch4_window{window}_{res}': (
        _IN22K[0], 'ms_in1k', _IN22K[1]) for size, window, res in (
            ('small', 7, 224), ('base', 7, 224), ('base', 12, 384))},
    **{f'swin_large_patch4_window{window}_{res}': _IN22K
       for window, res in ((7, 224), (12, 384))},
})



def _adjust(kwargs: Dict[str, Any], architecture: Mapping[str, Any],
            model_args: Mapping[str, Any]) -> None:
  """timm's window_size as a pair: one side here."""
  del architecture
  if isinstance(kwargs.get('window_size'), tuple):
    window = set(kwargs['window_size'])
    if len(window) != 1:
      raise ValueError(f'timm model_args window_size='
                       f'{model_args["window_size"]!r}: Swin here has square '
                       f'windows only.')
    kwargs['window_size'] = window.pop()


TIMM_ARGS = core.TimmArgs(
    size_fields=('patch_size', 'width', 'depths', 'num_heads'),
    renamed={'embed_dim': 'width', 'depths': 'depths',
             'num_heads': 'num_heads', 'patch_size': 'patch_size',
             'window_size': 'window_size', 'mlp_ratio': 'mlp_ratio'},
    fixed={'global_pool': ('avg',), 'qkv_bias': (True,), 'head_dim': (None,),
           'always_partition': (False,)},
    adjust=_adjust)


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  """Any Swin of timm's layout: the named entry point of its size, or
  swin_tiny_patch4_window7_224 with model_args saying the sizes."""
  if model.layer_norm_eps != 1e-5:
    return core.no_timm_model('timm\'s Swin has LayerNorm eps 1e-5')
  key = (core.variant_of(model, models.swin.VARIANTS), model.window_size,
         image_size[0])
  name = next((name for name, architecture in TIMM_ARCHITECTURES.items()
               if (architecture.model_kwargs['variant'][0],
                   architecture.model_kwargs['window_size'],
                   architecture.image_size) == key), None)
  return core.TimmModel(
      name if model.patch_size == 4 and name else
      'swin_tiny_patch4_window7_224',
      dict(img_size=core.side(image_size), patch_size=model.patch_size,
           embed_dim=model.width, depths=list(model.depths),
           num_heads=list(model.num_heads), window_size=model.window_size,
           mlp_ratio=model.mlp_ratio),
      num_features=model.width * 2 ** (len(model.depths) - 1),
      fixed_input_size=True)
