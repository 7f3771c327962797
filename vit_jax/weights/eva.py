"""EVA-02's (and EVA-01's) weights in timm's layout (`timm.models.eva.Eva`).

timm keeps the query / key / value projections fused (`attn.qkv` with
separate query and value biases; Tiny, Small, EVA-01) or apart
(`attn.q_proj`, ...; Base, Large, the CLIP towers): both are read, the
separate ones written (timm's qkv_fused=False, which every EVA loads)."""

from typing import Any, Dict, Mapping, Tuple

from vit_jax.models import eva
from vit_jax.weights import core
from vit_jax.weights.core import (CONV, HEADS_BIAS, HEADS_IN, HEADS_OUT, QKV,
                                  Architecture, dense, entry, norm)

NAME = 'eva'

_BLOCK = 'blocks.{0}.'
_OURS = 'encoder/block_{0}/'

TIMM = [
    entry('cls_token', 'cls_token'),
    entry('pos_embed', 'pos_embed'),
    *dense('patch_embed.proj', 'patch_embed', CONV),
    *[e for n in ('norm1', 'norm2') for e in norm(_BLOCK + n, _OURS + n)],
    # Separate projections, no key bias: what export writes.
    *dense(_BLOCK + 'attn.q_proj', _OURS + 'attn/query', HEADS_IN,
           HEADS_BIAS),
    entry(_BLOCK + 'attn.k_proj.weight', _OURS + 'attn/key/kernel', HEADS_IN),
    *dense(_BLOCK + 'attn.v_proj', _OURS + 'attn/value', HEADS_IN,
           HEADS_BIAS),
    # The fused layout, read only (timm keeps a zero `k_bias` buffer, not
    # saved).
    entry(_BLOCK + 'attn.qkv.weight', _OURS + 'attn/{part}/kernel', HEADS_IN,
          parts=QKV, read_only=True),
    entry(_BLOCK + 'attn.q_bias', _OURS + 'attn/query/bias', HEADS_BIAS,
          read_only=True),
    entry(_BLOCK + 'attn.v_bias', _OURS + 'attn/value/bias', HEADS_BIAS,
          read_only=True),
    *norm(_BLOCK + 'attn.norm', _OURS + 'attn/norm'),
    *dense(_BLOCK + 'attn.proj', _OURS + 'attn/out', HEADS_OUT),
    entry(_BLOCK + 'gamma_1', _OURS + 'gamma_attn'),
    entry(_BLOCK + 'gamma_2', _OURS + 'gamma_mlp'),
    *[e for fc in ('fc1', 'fc1_g', 'fc1_x', 'fc2')
      for e in dense(f'{_BLOCK}mlp.{fc}', f'{_OURS}mlp/{fc}')],
    *norm(_BLOCK + 'mlp.norm', _OURS + 'mlp/norm'),
    *norm('norm', 'encoder_norm'),
    *norm('fc_norm', 'fc_norm'),
    *dense('head', 'head'),
]


# ----------------------------------------------------------------------------
# timm's entry points, facts of timm 1.0 (`timm.models.eva`): every one
# has a class token, an absolute position embedding and LayerNorm eps 1e-6;
# EVA-02's have the rotary embedding on a 16x16 reference grid.

_B_L = dict(mlp_norm=True)  # the unpacked SwiGLU with its norm
_CLIP = dict(mlp_norm=True, attn_norm=True, pool_type='cls', fc_norm=False)
_EVA01 = dict(activation='gelu', rope=False)


def _row(variant: str, size: int, **options) -> Architecture:
  return Architecture('eva', dict(variant=variant, **options), size)


TIMM_ARCHITECTURES = {
    'eva02_tiny_patch14_224': _row('Ti/14', 224),
    'eva02_tiny_patch14_336': _row('Ti/14', 336),
    'eva02_small_patch14_224': _row('S/14', 224),
    'eva02_small_patch14_336': _row('S/14', 336),
    'eva02_base_patch14_224': _row('B/14', 224, **_B_L),
    'eva02_base_patch14_448': _row('B/14', 448, **_B_L),
    'eva02_large_patch14_224': _row('L/14', 224, **_B_L),
    'eva02_large_patch14_448': _row('L/14', 448, **_B_L),
    'eva02_base_patch16_clip_224': _row('B/16', 224, **_CLIP),
    'eva02_large_patch14_clip_224': _row('L/14', 224, **_CLIP),
    'eva02_large_patch14_clip_336': _row('L/14', 336, **_CLIP),
    'eva_giant_patch14_224': _row('g/14', 224, **_EVA01),
    'eva_giant_patch14_336': _row('g/14', 336, **_EVA01),
    'eva_giant_patch14_560': _row('g/14', 560, **_EVA01),
    'eva_giant_patch14_clip_224': _row('g/14', 224, **_EVA01,
                                       pool_type='cls', fc_norm=False),
}

# timm's pretrained tags on the Hub (timm 1.0.31's default_cfgs with a
# 'timm/' repository, the default first).
TIMM_ARCHITECTURES = core.tagged(TIMM_ARCHITECTURES, {
    'eva02_tiny_patch14_224': ('mim_in22k',),
    'eva02_tiny_patch14_336': ('mim_in22k_ft_in1k',),
    'eva02_small_patch14_224': ('mim_in22k',),
    'eva02_small_patch14_336': ('mim_in22k_ft_in1k',),
    'eva02_base_patch14_224': ('mim_in22k',),
    'eva02_base_patch14_448': ('mim_in22k_ft_in22k_in1k', 'mim_in22k_ft_in1k',
                               'mim_in22k_ft_in22k'),
    'eva02_large_patch14_224': ('mim_in22k', 'mim_m38m'),
    'eva02_large_patch14_448': (
        'mim_in22k_ft_in22k_in1k', 'mim_m38m_ft_in22k_in1k',
        'mim_in22k_ft_in1k', 'mim_m38m_ft_in1k', 'mim_in22k_ft_in22k',
        'mim_m38m_ft_in22k'),
    'eva02_base_patch16_clip_224': ('merged2b',),
    'eva02_large_patch14_clip_224': ('merged2b',),
    'eva02_large_patch14_clip_336': ('merged2b',),
    'eva_giant_patch14_224': ('clip_ft_in1k',),
    'eva_giant_patch14_336': ('clip_ft_in1k', 'm30m_ft_in22k_in1k'),
    'eva_giant_patch14_560': ('m30m_ft_in22k_in1k',),
    'eva_giant_patch14_clip_224': ('laion400m', 'merged2b'),
})

def _adjust(kwargs: Dict[str, Any], architecture: Mapping[str, Any],
            model_args: Mapping[str, Any]) -> None:
  """BEiT's model_args (`core.class_token_vit_args`), the MLP kind and the
  rotary embedding's reference grid (an int: a square one)."""
  core.class_token_vit_args(kwargs, architecture, model_args, 'EVA')
  if 'swiglu_mlp' in model_args:
    kwargs['activation'] = 'swiglu' if model_args['swiglu_mlp'] else 'gelu'
  if 'ref_feat_shape' in model_args:
    ref = model_args['ref_feat_shape']
    kwargs['rope_ref_grid'] = (None if ref is None else
                               (ref, ref) if isinstance(ref, int)
                               else tuple(ref))


TIMM_ARGS = core.TimmArgs(
    size_fields=('patch_size', 'width', 'depth', 'mlp_dim', 'num_heads'),
    renamed={'embed_dim': 'width', 'depth': 'depth', 'num_heads': 'num_heads',
             'patch_size': 'patch_size', 'qkv_bias': 'qkv_bias',
             'scale_mlp': 'mlp_norm', 'scale_attn_inner': 'attn_norm',
             'use_rot_pos_emb': 'rope'},
    # Layouts both read (qkv_fused), and what EVA-02 and EVA-01 never use:
    # registers, other rotary embeddings, post-norm blocks (EVA-02-E),
    # attention pooling.
    fixed={'qkv_fused': (True, False), 'class_token': (True,),
           'num_reg_tokens': (0,), 'no_embed_class': (False,),
           'qk_norm': (False,), 'num_kv_heads': (None,),
           'attn_type': ('eva',), 'swiglu_align_to': (0,),
           'rope_type': ('cat',), 'rope_grid_offset': (0, 0.0),
           'rope_grid_indexing': ('ij',), 'rope_temperature': (10000.0,),
           'rope_rotate_half': (False,), 'use_post_norm': (False,),
           'use_pre_transformer_norm': (False,),
           'use_post_transformer_norm': (None,),
           'attn_only_layer_scale': (False,),
           'attn_pool_num_heads': (None,), 'attn_pool_mlp_ratio': (None,)},
    # head_init_scale: initialisation only.
    special=('mlp_ratio', 'global_pool', 'use_fc_norm', 'use_abs_pos_emb',
             'init_values', 'swiglu_mlp', 'ref_feat_shape',
             'head_init_scale'),
    adjust=_adjust)

# The fields that fix an EVA's weights and function, compared to find the
# named architecture it is.
_STRUCTURE = ('patch_size', 'width', 'depth', 'mlp_dim', 'num_heads',
              'pool_type', 'fc_norm', 'posemb', 'rope', 'rope_ref_grid',
              'activation', 'mlp_norm', 'attn_norm', 'layer_scale_init',
              'qkv_bias', 'layer_norm_eps')


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  """Any EVA of timm's layout: the named entry point it is, if one is
  (eva02_base_patch14_224 otherwise), with model_args saying every size
  and option (timm's own defaults differ from its entry points')."""
  mlp_ratio = core.ratio(model.mlp_dim, model.width)
  if model.layer_norm_eps != 1e-6 or mlp_ratio is None:
    return core.no_timm_model('timm\'s EVA has LayerNorm eps 1e-6 and an '
                              'MLP of int(width * mlp_ratio)')
  name = next((name for name, row in TIMM_ARCHITECTURES.items()
               if row.image_size == image_size[0] == image_size[1]
               and all(getattr(eva_row, field) == getattr(model, field)
                       for eva_row in [eva.Eva.from_variant(
                           **row.model_kwargs)]
                       for field in _STRUCTURE)),
              'eva02_base_patch14_224')
  pool = core.CLASS_TOKEN_POOLING[model.pool_type]
  ref = model.rope_ref_grid
  return core.TimmModel(
      name,
      dict(img_size=core.side(image_size), patch_size=model.patch_size,
           embed_dim=model.width, depth=model.depth,
           num_heads=model.num_heads, mlp_ratio=mlp_ratio,
           qkv_bias=model.qkv_bias, qkv_fused=False,
           swiglu_mlp=model.activation == 'swiglu',
           scale_mlp=model.mlp_norm, scale_attn_inner=model.attn_norm,
           use_rot_pos_emb=model.rope,
           ref_feat_shape=None if ref is None else list(ref),
           global_pool=pool, use_fc_norm=model.fc_norm,
           use_abs_pos_emb=model.posemb == 'learn',
           init_values=model.layer_scale_init or None),
      num_features=model.width, global_pool=pool, fixed_input_size=True)
