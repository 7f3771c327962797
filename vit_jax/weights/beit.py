"""BEiT's weights in timm's layout (`timm.models.beit.Beit`: BEiT and BEiT
v2 alike), and the resampling of its relative position bias tables to
another resolution."""

from typing import Any, Dict, Mapping, Tuple

import numpy as np

from vit_jax.models import beit
from vit_jax.models import vit
from vit_jax.weights import core
from vit_jax.weights.core import (CONV, HEADS_BIAS, HEADS_IN, HEADS_OUT,
                                  Architecture, buffer, dense, entry, norm)

NAME = 'beit'

_BLOCK = 'blocks.{0}.'
_OURS = 'encoder/block_{0}/'

TIMM = [
    entry('cls_token', 'cls_token'),
    entry('pos_embed', 'pos_embed'),
    *dense('patch_embed.proj', 'patch_embed', CONV),
    *[e for n in ('norm1', 'norm2') for e in norm(_BLOCK + n, _OURS + n)],
    # One fused qkv kernel without bias; the query and value biases apart,
    # the key has none (timm keeps a zero `k_bias` buffer, not saved).
    entry(_BLOCK + 'attn.qkv.weight', _OURS + 'attn/{part}/kernel', HEADS_IN,
          parts=('query', 'key', 'value')),
    entry(_BLOCK + 'attn.q_bias', _OURS + 'attn/query/bias', HEADS_BIAS),
    entry(_BLOCK + 'attn.v_bias', _OURS + 'attn/value/bias', HEADS_BIAS),
    *dense(_BLOCK + 'attn.proj', _OURS + 'attn/out', HEADS_OUT),
    entry(_BLOCK + 'attn.relative_position_bias_table',
          _OURS + 'relative_position_bias_table'),
    # Recomputed from the grid by `models.beit.relative_position_index`
    # (older releases save it).
    buffer(_BLOCK + 'attn.relative_position_index'),
    entry(_BLOCK + 'gamma_1', _OURS + 'gamma_attn'),
    entry(_BLOCK + 'gamma_2', _OURS + 'gamma_mlp'),
    *[e for fc in ('fc1', 'fc2')
      for e in dense(f'{_BLOCK}mlp.{fc}', f'{_OURS}mlp/{fc}')],
    *norm('norm', 'encoder_norm'),
    *norm('fc_norm', 'fc_norm'),
    *dense('head', 'head'),
]


# ----------------------------------------------------------------------------
# timm's entry points: (name, variant, resolution, LayerScale init), facts
# of timm 1.0 (`timm.models.beit`); every one averages the patch tokens
# into fc_norm and has no absolute position embedding.

_NAMED = (
    ('beit_base_patch16_224', 'B/16', 224, 0.1),
    ('beit_base_patch16_384', 'B/16', 384, 0.1),
    ('beit_large_patch16_224', 'L/16', 224, 1e-5),
    ('beit_large_patch16_384', 'L/16', 384, 1e-5),
    ('beit_large_patch16_512', 'L/16', 512, 1e-5),
    ('beitv2_base_patch16_224', 'B/16', 224, 1e-5),
    ('beitv2_large_patch16_224', 'L/16', 224, 1e-5),
)

TIMM_ARCHITECTURES = {
    name: Architecture('beit', dict(variant=variant, layer_scale_init=scale),
                       resolution)
    for name, variant, resolution, scale in _NAMED}

# timm's pretrained tags on the Hub (timm 1.0.31's default_cfgs, the
# default first).
_FT_1K = ('in22k_ft_in22k_in1k',)
_V2 = ('in1k_ft_in22k_in1k', 'in1k_ft_in1k', 'in1k_ft_in22k')
TIMM_ARCHITECTURES = core.tagged(TIMM_ARCHITECTURES, {
    'beit_base_patch16_224': (*_FT_1K, 'in22k_ft_in22k'),
    'beit_base_patch16_384': _FT_1K,
    'beit_large_patch16_224': (*_FT_1K, 'in22k_ft_in22k'),
    'beit_large_patch16_384': _FT_1K,
    'beit_large_patch16_512': _FT_1K,
    'beitv2_base_patch16_224': _V2,
    'beitv2_large_patch16_224': _V2,
})

def _adjust(kwargs: Dict[str, Any], architecture: Mapping[str, Any],
            model_args: Mapping[str, Any]) -> None:
  core.class_token_vit_args(kwargs, architecture, model_args, 'BEiT')


TIMM_ARGS = core.TimmArgs(
    size_fields=('patch_size', 'width', 'depth', 'mlp_dim', 'num_heads'),
    renamed={'embed_dim': 'width', 'depth': 'depth', 'num_heads': 'num_heads',
             'patch_size': 'patch_size', 'qkv_bias': 'qkv_bias',
             'use_rel_pos_bias': 'rel_pos_bias'},
    # A table shared by all blocks (BEiT's pre-training checkpoints) and
    # the MLP variants (EVA's) are not built here.
    fixed={'use_shared_rel_pos_bias': (False,), 'swiglu_mlp': (False,),
           'scale_mlp': (False,)},
    # head_init_scale: initialisation only.
    special=('mlp_ratio', 'global_pool', 'use_fc_norm', 'use_abs_pos_emb',
             'init_values', 'head_init_scale'),
    adjust=_adjust)


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  """Any BEiT of timm's layout: the named entry point of its size and
  resolution (beit_base_patch16_224 otherwise), with model_args saying
  the sizes and options."""
  mlp_ratio = core.ratio(model.mlp_dim, model.width)
  if model.layer_norm_eps != 1e-6 or mlp_ratio is None:
    return core.no_timm_model('timm\'s BEiT has LayerNorm eps 1e-6 and an '
                              'MLP of int(width * mlp_ratio)')
  variant = core.variant_of(model, vit.VARIANTS)
  name = next((name for name, architecture in TIMM_ARCHITECTURES.items()
               if architecture.model_kwargs['variant'] ==
               f'{variant}/{model.patch_size}'
               and architecture.image_size == image_size[0] == image_size[1]
               ), 'beit_base_patch16_224')
  pool = core.CLASS_TOKEN_POOLING[model.pool_type]
  return core.TimmModel(
      name,
      dict(img_size=core.side(image_size), patch_size=model.patch_size,
           embed_dim=model.width, depth=model.depth,
           num_heads=model.num_heads, mlp_ratio=mlp_ratio,
           qkv_bias=model.qkv_bias, global_pool=pool,
           use_fc_norm=model.fc_norm,
           use_abs_pos_emb=model.posemb == 'learn',
           use_rel_pos_bias=model.rel_pos_bias,
           init_values=model.layer_scale_init or None),
      num_features=model.width, global_pool=pool, fixed_input_size=True)


# ----------------------------------------------------------------------------
# The bias tables at another resolution.


def _source_offsets(source: int, target: int) -> np.ndarray:
  """Where the `source` offsets of one axis (-(source // 2) .. source // 2)
  are placed on the `target` axis: spaced by a growing geometric
  progression, 1, q, q**2, ... out from 0, with q chosen (by bisection, in
  [1.01, 1.5]) so that the outermost lands near target // 2. The rule of
  BEiT's fine-tuning code (unilm's run_class_finetuning.py), which timm
  keeps: near offsets keep their values, far ones are stretched."""
  half = source // 2
  low, high = 1.01, 1.5
  while high - low > 1e-6:
    ratio = (low + high) / 2.0
    if (1.0 - ratio ** half) / (1.0 - ratio) > target // 2:
      high = ratio
    else:
      low = ratio
  # `ratio` is the last midpoint tried, as in the reference code.
  distances = np.cumsum([0.0] + [ratio ** (i + 1) for i in range(half - 1)]
                        ) + 1.0
  return np.concatenate([-distances[::-1], [0.0], distances])


def resample_table(table: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
  """A square grid's bias table [(2s-1)**2 + 3, heads] for a patch grid
  `grid` (h, w): the offsets' rows resampled, per head, by linear
  interpolation (held at the edges) from `_source_offsets` to the integer
  offsets of each axis; the class token's rows kept. timm's
  `resize_rel_pos_bias_table` (without scipy) does the same."""
  side = beit.grid_of_table(table.shape[0])
  if (side, side) == tuple(grid):
    return table
  extra = len(beit.CLASS_ROWS)
  old_span = 2 * side - 1
  offsets, class_rows = table[:-extra], table[-extra:]
  heads = table.shape[1]
  planes = offsets.reshape(old_span, old_span, heads).astype(np.float64)
  for axis, new_side in enumerate(grid):
    new_span = 2 * new_side - 1
    source = _source_offsets(old_span, new_span)
    target = np.arange(new_span, dtype=np.float64) - new_span // 2
    planes = np.apply_along_axis(
        lambda line, s=source, t=target: np.interp(t, s, line), axis, planes)
  resampled = planes.reshape(-1, heads).astype(table.dtype)
  return np.concatenate([resampled, class_rows])


def resizable(path: str, shape: Tuple[int, ...],
              expected: Tuple[int, ...]) -> bool:
  """Whether `resize` adapts a checkpoint's `shape` at `path` to the
  model's `expected` one: a bias table of another resolution, same heads."""
  return (path.endswith('relative_position_bias_table') and len(shape) == 2
          and len(expected) == 2 and shape[1] == expected[1])


def resize(loaded: Dict[str, np.ndarray], model,
           image_size: Tuple[int, int]) -> Dict[str, np.ndarray]:
  """`loaded` (flat, unstacked blocks) with every bias table resampled to
  the model's patch grid at `image_size` (`core.fit_to_model` calls it
  before checking the shapes)."""
  grid = (image_size[0] // model.patch_size,
          image_size[1] // model.patch_size)
  rows = beit.table_rows(grid)
  return {path: (resample_table(value, grid)
                 if path.endswith('relative_position_bias_table')
                 and np.shape(value)[0] != rows and np.ndim(value) == 2
                 else value)
          for path, value in loaded.items()}
