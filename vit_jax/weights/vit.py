"""ViT's weights in timm's, Hugging Face transformers' and Google's `.npz`
layouts: one two-way table per layout (`vit_jax.weights.core`)."""

from typing import Any, Dict, Mapping, Optional, Tuple

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights.core import (CONV, HEADS_BIAS, HEADS_IN, HEADS_OUT, QKV,
                                  Architecture, attention, dense, entry, norm)

NAME = 'vit'

_NORMS = ('norm1', 'norm2')
_FCS = ('fc1', 'fc2')

TIMM = [
    entry('cls_token', 'cls_token'),
    entry('reg_token', 'reg_token'),
    entry('pos_embed', 'pos_embed'),
    *dense('patch_embed.proj', 'patch_embed', CONV),
    *norm('norm_pre', 'norm_pre'),
    *[e for n in _NORMS
      for e in norm(f'blocks.{{0}}.{n}', f'encoder/block_{{0}}/{n}')],
    *attention('encoder/block_{0}/attn', 'blocks.{0}.attn.qkv',
               'blocks.{0}.attn.proj'),
    *[e for fc in _FCS
      for e in dense(f'blocks.{{0}}.mlp.{fc}',
                     f'encoder/block_{{0}}/mlp/{fc}')],
    # LayerScale (DeiT-3, DINOv2).
    *[entry(f'blocks.{{0}}.{ls}.gamma', f'encoder/block_{{0}}/{ls}/scale')
      for ls in ('ls1', 'ls2')],
    *norm('norm', 'encoder_norm'),
    *norm('fc_norm', 'fc_norm'),
    # MAP head: timm's AttentionPoolLatent (query alone, key and value fused).
    entry('attn_pool.latent', 'map_head/probe'),
    *dense('attn_pool.q', 'map_head/attn/query', HEADS_IN, HEADS_BIAS),
    *dense('attn_pool.kv', 'map_head/attn/{part}', HEADS_IN, HEADS_BIAS,
           parts=('key', 'value')),
    *dense('attn_pool.proj', 'map_head/attn/out', HEADS_OUT),
    *norm('attn_pool.norm', 'map_head/norm'),
    *[e for fc in _FCS
      for e in dense(f'attn_pool.mlp.{fc}', f'map_head/mlp/{fc}')],
    *dense('head', 'head'),
]


# ----------------------------------------------------------------------------
# Hugging Face transformers.
#
# Two generations of names, both read: the checkpoints on the Hub (and
# transformers 4.x) say 'encoder.layer.N.attention.attention.query',
# 'attention.output.dense', 'intermediate.dense', 'output.dense';
# transformers 5.x's modules say 'layers.N.attention.q_proj', 'o_proj',
# 'mlp.fc1', 'mlp.fc2' (and write the older names back when saving). ViTModel
# has no 'vit.' prefix, ViTForImageClassification and ViTMAE* have one.
# Export writes the Hub's names of ViTForImageClassification (the first
# spelling of each entry).

# (older name, transformers 5.x name) of a block's linear layers.
_HF_LINEARS = {
    'query': ('attention.attention.query', 'attention.q_proj'),
    'key': ('attention.attention.key', 'attention.k_proj'),
    'value': ('attention.attention.value', 'attention.v_proj'),
    'out': ('attention.output.dense', 'attention.o_proj'),
    'fc1': ('intermediate.dense', 'mlp.fc1'),
    'fc2': ('output.dense', 'mlp.fc2'),
}


def hf_encoder_names(name: str):
  """A name of transformers' ViT encoder, with and without 'vit.'."""
  return ('vit.' + name, name)


def hf_blocks(blocks, ours: str, **options):
  """The transformer blocks at each prefix of `blocks` (templates with the
  block index {0}, the first the one written) at `ours` (a template with
  {0})."""
  def names(key):
    return tuple(block + linear for linear in _HF_LINEARS[key]
                 for block in blocks)
  return [
      *norm(tuple(b + 'layernorm_before' for b in blocks), ours + 'norm1'),
      *norm(tuple(b + 'layernorm_after' for b in blocks), ours + 'norm2'),
      *attention(ours + 'attn', {part: names(part) for part in QKV},
                 names('out'), **options),
      *dense(names('fc1'), ours + 'mlp/fc1'),
      *dense(names('fc2'), ours + 'mlp/fc2'),
  ]


# The encoder of ViT and ViTMAE alike (the position embedding differs).
HF_ENCODER = [
    entry(hf_encoder_names('embeddings.cls_token'), 'cls_token'),
    *dense(hf_encoder_names('embeddings.patch_embeddings.projection'),
           'patch_embed', CONV),
    *hf_blocks([prefix + layers + '.{0}.' for prefix in ('vit.', '')
                for layers in ('encoder.layer', 'layers')],
               'encoder/block_{0}/'),
    *norm(hf_encoder_names('layernorm'), 'encoder_norm'),
]

HF = [
    *HF_ENCODER,
    entry(hf_encoder_names('embeddings.position_embeddings'), 'pos_embed'),
    # ViTModel's pooler: the tanh pre-logits layer of the original ViT;
    # ViTForImageClassification, which export writes, has none.
    *dense(hf_encoder_names('pooler.dense'), 'pre_logits', read_only=True),
    *dense('classifier', 'head'),
]


# ----------------------------------------------------------------------------
# Google's `.npz` (google-research/vision_transformer, and big_vision's
# names): the same Flax arrays, so module prefixes renamed and nothing
# transformed; names without an entry ('head/kernel', 'pre_logits/...',
# 'fc_norm/...') are the same in both.


def _prefixed(prefix: str, names):
  return tuple(prefix + name for name in names)


def _npz_block(theirs: str, ours: str, **options):
  """A block's modules: the original release's names first, then
  big_vision's."""
  return [entry(_prefixed(theirs, names), ours + mine, **options)
          for names, mine in (
              (('LayerNorm_0/',), 'norm1/'),
              (('MultiHeadDotProductAttention_1/',
                'MultiHeadDotProductAttention_0/'), 'attn/'),
              (('LayerNorm_2/', 'LayerNorm_1/'), 'norm2/'),
              (('MlpBlock_3/Dense_0/', 'MlpBlock_0/Dense_0/'), 'mlp/fc1/'),
              (('MlpBlock_3/Dense_1/', 'MlpBlock_0/Dense_1/'), 'mlp/fc2/'))]


NPZ = [
    entry('embedding/', 'patch_embed/'),
    entry('cls', 'cls_token'),
    entry(('Transformer/posembed_input/pos_embedding', 'pos_embedding'),
          'pos_embed'),
    entry('Transformer/encoder_norm/', 'encoder_norm/'),
    *_npz_block('Transformer/encoderblock_{0}/', 'encoder/block_{0}/'),
    # big_vision's scanned blocks, unstacked after renaming.
    *_npz_block('Transformer/encoderblock/', 'encoder/blocks/',
                read_only=True),
    # big_vision's MAP head.
    entry('MAPHead_0/probe', 'map_head/probe'),
    entry(_prefixed('MAPHead_0/', ('MultiHeadDotProductAttention_0/',
                                   'MultiHeadDotProductAttention_1/')),
          'map_head/attn/'),
    entry('MAPHead_0/LayerNorm_0/', 'map_head/norm/'),
    *[entry(_prefixed('MAPHead_0/', (f'MlpBlock_0/Dense_{n}/',
                                     f'MlpBlock_3/Dense_{n}/')),
            f'map_head/mlp/fc{n + 1}/') for n in range(2)],
]


# ----------------------------------------------------------------------------
# timm's ViT entry points: read by name (`vit_jax.pretrained.SUPPORTED`),
# and named in the config.json export writes.


def _vit(variant: str, image_size: int, pool_type: str = 'cls',
         **options) -> Architecture:
  return Architecture('vit', dict(variant=variant, pool_type=pool_type,
                                  **options), image_size)


_SIZES = {'tiny': 'Ti', 'small': 'S', 'medium': 'M', 'base': 'B',
          'large': 'L', 'huge': 'H', 'giant': 'g', 'gigantic': 'G'}
# (size, patch, resolution) of the plain ViTs that export names (facts of
# timm 1.0); reading takes giant and gigantic too.
_WRITTEN = (
    ('tiny', 16, 224), ('tiny', 16, 384), ('small', 32, 224),
    ('small', 32, 384), ('small', 16, 224), ('small', 16, 384),
    ('small', 8, 224), ('base', 32, 224), ('base', 32, 384),
    ('base', 16, 224), ('base', 16, 384), ('base', 8, 224),
    ('large', 32, 224), ('large', 32, 384), ('large', 16, 224),
    ('large', 16, 384), ('large', 14, 224), ('huge', 14, 224))
_WRITTEN_NAMES = frozenset(f'vit_{size}_patch{patch}_{resolution}'
                           for size, patch, resolution in _WRITTEN)

# timm's DINOv2 (Oquab et al. 2023), without and with 4 registers (Darcet
# et al. 2023): LayerScale from 1e-5; the register models' position
# embedding has no class-token or register rows (timm's no_embed_class).
# Their weights are for 518 px (37 x 37 patches of 14). The giant: width
# 1536, 24 heads, a SwiGLU MLP of 2 x 4096 hidden units (timm's
# SwiGLUPacked).
_DINOV2 = dict(layer_scale_init=1e-5)
_DINOV2_REG4 = dict(_DINOV2, num_registers=4, posemb_prefix=False)
_DINOV2_GIANT = dict(patch_size=14, width=1536, depth=40, mlp_dim=8192,
                     num_heads=24, activation='swiglu', pool_type='cls')
# CLIP and OpenCLIP image towers: a LayerNorm before the blocks (and a
# patch embedding without bias), LayerNorm eps 1e-5; the `_quickgelu_`
# entry points run OpenAI's quick GELU, the others the exact GELU (timm's
# `.openai` tags under the plain name run GELU too, as timm does).
_CLIP = dict(pre_norm=True, layer_norm_eps=1e-5)
_CLIP_QUICKGELU = dict(_CLIP, activation='quick_gelu')
# (size, patch, resolutions) of timm's CLIP and quick-GELU CLIP towers.
_CLIP_TOWERS = (('base', 32, (224, 256, 384, 448)), ('base', 16, (224, 384)),
                ('large', 14, (224, 336)), ('huge', 14, (224, 336, 378)),
                ('giant', 14, (224,)), ('gigantic', 14, (224, 378)))
_CLIP_QUICKGELU_TOWERS = (('base', 32, (224,)), ('base', 16, (224,)),
                          ('large', 14, (224, 336)), ('huge', 14, (224, 378)),
                          ('gigantic', 14, (224,)))
# DeiT III (Touvron et al. 2022): LayerScale from 1e-6, no position rows
# for the class token.
_DEIT3 = dict(layer_scale_init=1e-6, posemb_prefix=False)
_DEIT3_SIZES = (('small', 16, 224), ('small', 16, 384), ('medium', 16, 224),
                ('base', 16, 224), ('base', 16, 384), ('large', 16, 224),
                ('large', 16, 384), ('huge', 14, 224))

# timm's SigLIP So400m image tower (Alabdulmohsin et al. 2023, "Getting ViT
# in Shape"): a size of no named variant.
_SO400M = dict(width=1152, depth=27, mlp_dim=4304, num_heads=16)

TIMM_ARCHITECTURES = {
    # ViT (and AugReg's, Steiner et al. 2021): class token, learned
    # position embedding.
    **{f'vit_{size}_patch{patch}_{res}': _vit(f'{_SIZES[size]}/{patch}', res)
       for size, patch, res in (
           *_WRITTEN, ('giant', 14, 224), ('gigantic', 14, 224))},
    # DeiT (Touvron et al. 2021) without the distillation token: plain ViTs.
    **{f'deit_{size}_patch16_{res}': _vit(f'{_SIZES[size]}/16', res)
       for size, res in (('tiny', 224), ('small', 224), ('base', 224),
                         ('base', 384))},
    # Global average pooling of the normalised tokens, no class token.
    'vit_base_patch16_gap_224': _vit('B/16', 224, 'gap', num_heads=16,
                                     fc_norm=False),
    'vit_huge_patch14_gap_224': _vit('H/14', 224, 'gap', fc_norm=False),
    'vit_huge_patch16_gap_448': _vit('H/16', 448, 'gap', fc_norm=False),
    'vit_giant_patch16_gap_224': _vit('g/16', 224, 'gap', fc_norm=False),
    # SigLIP image towers (Zhai et al. 2023): MAP pooling, no class token.
    # (timm's SigLIP 2 towers use the tanh GELU, which ViT here does not.)
    **{f'vit_base_patch16_siglip_{res}': _vit('B/16', res, 'map')
       for res in (224, 256, 384, 512)},
    **{f'vit_large_patch16_siglip_{res}': _vit('L/16', res, 'map')
       for res in (256, 384)},
    **{f'vit_so400m_patch14_siglip_{res}': Architecture(
        'vit', dict(_SO400M, patch_size=14, pool_type='map'), res)
       for res in (224, 378)},
    **{f'vit_{size}_patch14_{kind}dinov2': _vit(f'{_SIZES[size]}/14', 518,
                                                **options)
       for size in ('small', 'base', 'large')
       for kind, options in (('', _DINOV2), ('reg4_', _DINOV2_REG4))},
    **{f'vit_giant_patch14_{kind}dinov2': Architecture(
        'vit', dict(_DINOV2_GIANT, **options), 518)
       for kind, options in (('', _DINOV2), ('reg4_', _DINOV2_REG4))},
    **{f'vit_{size}_patch{patch}_clip_{kind}{res}': _vit(
        f'{_SIZES[size]}/{patch}', res, **options)
       for kind, options, towers in (('', _CLIP, _CLIP_TOWERS),
                                     ('quickgelu_', _CLIP_QUICKGELU,
                                      _CLIP_QUICKGELU_TOWERS))
       for size, patch, resolutions in towers for res in resolutions},
    **{f'deit3_{size}_patch{patch}_{res}': _vit(f'{_SIZES[size]}/{patch}',
                                                res, **_DEIT3)
       for size, patch, res in _DEIT3_SIZES},
}

# timm's pretrained tags on the Hub (timm 1.0.31's default_cfgs, the
# default first; 'timm/' repositories only: untrained entry points and
# I-JEPA's URL-only weights have none).
_AUGREG = ('augreg_in21k_ft_in1k',)
_SIGLIP = ('v2_webli', 'webli')
TIMM_ARCHITECTURES = core.tagged(TIMM_ARCHITECTURES, {
    'vit_tiny_patch16_224': (*_AUGREG, 'augreg_in21k'),
    'vit_tiny_patch16_384': _AUGREG,
    'vit_small_patch32_224': (*_AUGREG, 'augreg_in21k'),
    'vit_small_patch32_384': _AUGREG,
    'vit_small_patch16_224': (*_AUGREG, 'augreg_in1k', 'augreg_in21k',
                              'dino'),
    'vit_small_patch16_384': (*_AUGREG, 'augreg_in1k'),
    'vit_small_patch8_224': ('dino',),
    'vit_base_patch32_224': (*_AUGREG, 'augreg_in1k', 'orig_in21k',
                             'augreg_in21k', 'sam_in1k'),
    'vit_base_patch32_384': (*_AUGREG, 'augreg_in1k'),
    'vit_base_patch16_224': ('augreg2_in21k_ft_in1k', *_AUGREG,
                             'orig_in21k_ft_in1k', 'augreg_in1k',
                             'orig_in21k', 'augreg_in21k', 'sam_in1k',
                             'bamboo', 'dino', 'mae'),
    'vit_base_patch16_384': (*_AUGREG, 'orig_in21k_ft_in1k', 'augreg_in1k'),
    'vit_base_patch8_224': ('augreg2_in21k_ft_in1k', *_AUGREG,
                            'augreg_in21k', 'dino'),
    'vit_large_patch32_224': ('orig_in21k',),
    'vit_large_patch32_384': ('orig_in21k_ft_in1k',),
    'vit_large_patch16_224': (*_AUGREG, 'orig_in21k', 'augreg_in21k', 'mae'),
    'vit_large_patch16_384': _AUGREG,
    'vit_huge_patch14_224': ('orig_in21k', 'mae'),
    **{f'deit_{size}_patch16_{res}': ('fb_in1k',)
       for size, res in (('tiny', 224), ('small', 224), ('base', 224),
                         ('base', 384))},
    **{f'vit_base_patch16_siglip_{res}': _SIGLIP for res in (224, 384, 512)},
    'vit_base_patch16_siglip_256': (*_SIGLIP, 'webli_i18n'),
    'vit_large_patch16_siglip_256': _SIGLIP,
    'vit_large_patch16_siglip_384': _SIGLIP,
    'vit_so400m_patch14_siglip_224': _SIGLIP,
    'vit_so400m_patch14_siglip_378': (*_SIGLIP, 'webli_ft_in1k'),
})

# The DINOv2, CLIP and DeiT III rows' tags (the same source). The
# `_quickgelu_` entry points have no repositories of their own: their tags'
# weights are the plain CLIP entry point's (HUB_ALIASES).
_DEIT3_TAGS = ('fb_in1k', 'fb_in22k_ft_in1k')
TIMM_ARCHITECTURES = core.tagged(TIMM_ARCHITECTURES, {
    'vit_small_patch14_dinov2': ('lvd142m',),
    'vit_small_patch14_reg4_dinov2': ('lvd142m',),
    'vit_base_patch14_dinov2': ('lvd142m',),
    'vit_base_patch14_reg4_dinov2': ('lvd142m',),
    'vit_large_patch14_dinov2': ('lvd142m',),
    'vit_large_patch14_reg4_dinov2': ('lvd142m',),
    'vit_giant_patch14_dinov2': ('lvd142m',),
    'vit_giant_patch14_reg4_dinov2': ('lvd142m',),
    'vit_base_patch32_clip_224': (
        'laion2b_ft_in12k_in1k', 'laion2b_ft_in1k', 'openai_ft_in1k',
        'laion2b', 'laion400m_e32', 'datacompxl', 'metaclip_2pt5b',
        'metaclip_400m', 'openai'),
    'vit_base_patch32_clip_256': ('datacompxl',),
    'vit_base_patch32_clip_384': (
        'laion2b_ft_in12k_in1k', 'openai_ft_in12k_in1k'),
    'vit_base_patch32_clip_448': ('laion2b_ft_in12k_in1k',),
    'vit_base_patch16_clip_224': (
        'laion2b_ft_in12k_in1k', 'openai_ft_in12k_in1k', 'laion2b_ft_in1k',
        'openai_ft_in1k', 'laion2b_ft_in12k', 'openai_ft_in12k', 'laion2b',
        'laion400m_e32', 'datacompxl', 'dfn2b', 'metaclip_2pt5b',
        'metaclip_400m', 'openai'),
    'vit_base_patch16_clip_384': (
        'laion2b_ft_in12k_in1k', 'openai_ft_in12k_in1k', 'laion2b_ft_in1k',
        'openai_ft_in1k'),
    'vit_large_patch14_clip_224': (
        'laion2b_ft_in12k_in1k', 'openai_ft_in12k_in1k', 'laion2b_ft_in1k',
        'openai_ft_in1k', 'laion2b_ft_in12k', 'openai_ft_in12k', 'laion2b',
        'laion400m_e32', 'datacompxl', 'dfn2b_s39b', 'dfn2b', 'metaclip_2pt5b',
        'metaclip_400m', 'openai', 'apple_mclip2_dfndr2b'),
    'vit_large_patch14_clip_336': (
        'laion2b_ft_in12k_in1k', 'openai_ft_in12k_in1k', 'laion2b_ft_in1k',
        'openai'),
    'vit_huge_patch14_clip_224': (
        'laion2b_ft_in12k_in1k', 'laion2b_ft_in1k', 'laion2b_ft_in12k',
        'laion2b', 'dfn5b', 'metaclip2_worldwide', 'metaclip_2pt5b',
        'metaclip_altogether'),
    'vit_huge_patch14_clip_336': ('laion2b_ft_in12k_in1k',),
    'vit_huge_patch14_clip_378': ('dfn5b', 'metaclip2_worldwide'),
    'vit_giant_patch14_clip_224': ('laion2b',),
    'vit_gigantic_patch14_clip_224': (
        'laion2b', 'metaclip2_worldwide', 'metaclip_2pt5b'),
    'vit_gigantic_patch14_clip_378': ('metaclip2_worldwide',),
    'vit_base_patch32_clip_quickgelu_224': (
        'laion400m_e32', 'metaclip_2pt5b', 'metaclip_400m', 'openai'),
    'vit_base_patch16_clip_quickgelu_224': (
        'metaclip_2pt5b', 'metaclip_400m', 'openai'),
    'vit_large_patch14_clip_quickgelu_224': (
        'dfn2b', 'metaclip_2pt5b', 'metaclip_400m', 'openai'),
    'vit_large_patch14_clip_quickgelu_336': ('openai',),
    'vit_huge_patch14_clip_quickgelu_224': (
        'dfn5b', 'metaclip2_worldwide', 'metaclip_2pt5b'),
    'vit_huge_patch14_clip_quickgelu_378': ('dfn5b',),
    'vit_gigantic_patch14_clip_quickgelu_224': ('metaclip_2pt5b',),
    'deit3_small_patch16_224': _DEIT3_TAGS,
    'deit3_small_patch16_384': _DEIT3_TAGS,
    'deit3_medium_patch16_224': _DEIT3_TAGS,
    'deit3_base_patch16_224': _DEIT3_TAGS,
    'deit3_base_patch16_384': _DEIT3_TAGS,
    'deit3_large_patch16_224': _DEIT3_TAGS,
    'deit3_large_patch16_384': _DEIT3_TAGS,
    'deit3_huge_patch14_224': _DEIT3_TAGS,
})

# Where an entry point's weights live on the Hub, when not under its own
# name: timm loads `X_quickgelu_R.TAG` from `timm/X_R.TAG` (whose
# config.json names X_R; the quick GELU is the entry point's).
HUB_ALIASES = {name: name.replace('_quickgelu', '')
               for name in TIMM_ARCHITECTURES if '_quickgelu_' in name}

# pool_type here <-> timm's global_pool, both ways.
_TIMM_POOLING = {'cls': 'token', 'gap': 'avg', 'map': 'map', 'none': ''}
_POOL_TYPES = {pool: pool_type for pool_type, pool in _TIMM_POOLING.items()}


# timm's act_layer -> activation here (None: timm's default, nn.GELU).
_ACTIVATIONS = {None: 'gelu', 'gelu': 'gelu', 'quick_gelu': 'quick_gelu'}


def _adjust(kwargs: Dict[str, Any], architecture: Mapping[str, Any],
            model_args: Mapping[str, Any]) -> None:
  """timm's mlp_ratio (of the new width), pooling, act_layer and
  no_embed_class."""
  ratio = model_args.get('mlp_ratio',
                         kwargs['mlp_dim'] / architecture['width'])
  kwargs['mlp_dim'] = int(kwargs['width'] * ratio)
  _pooling(kwargs, architecture, model_args)
  if 'act_layer' in model_args:
    kwargs['activation'] = _counterpart(model_args, 'act_layer',
                                        _ACTIVATIONS)
  if 'no_embed_class' in model_args:
    kwargs['posemb_prefix'] = not model_args['no_embed_class']


def _counterpart(model_args: Mapping[str, Any], key: str,
                 table: Mapping[Any, Any]) -> Any:
  """The ViT value here of timm's model_args[key], by `table`."""
  value = model_args[key]
  if value not in table:
    raise ValueError(f'timm model_args {key}={value!r} has no counterpart '
                     f'in ViT here; supported: {list(table)}.')
  return table[value]


def _pooling(kwargs: Dict[str, Any], architecture: Mapping[str, Any],
             model_args: Mapping[str, Any]) -> None:
  """timm's global_pool / class_token / fc_norm -> pool_type, fc_norm."""
  if 'global_pool' in model_args:
    kwargs['pool_type'] = _counterpart(model_args, 'global_pool',
                                       _POOL_TYPES)
  class_token = model_args.get('class_token',
                               architecture['pool_type'] == 'cls')
  if class_token != (kwargs['pool_type'] == 'cls'):
    raise ValueError(
        f'timm model_args class_token={class_token} with pool type '
        f'{kwargs["pool_type"]!r}: ViT here has a class token exactly when '
        f'it pools by it (global_pool=\'token\').')
  # timm's fc_norm=None: normalise after pooling when averaging.
  fc_norm = model_args.get('fc_norm', architecture.get('fc_norm'))
  if fc_norm is None:
    fc_norm = kwargs['pool_type'] == 'gap'
  if fc_norm or 'fc_norm' in architecture:
    kwargs['fc_norm'] = fc_norm


TIMM_ARGS = core.TimmArgs(
    size_fields=('patch_size', 'width', 'depth', 'mlp_dim', 'num_heads'),
    renamed={'embed_dim': 'width', 'depth': 'depth', 'num_heads': 'num_heads',
             'patch_size': 'patch_size', 'init_values': 'layer_scale_init',
             'reg_tokens': 'num_registers', 'pre_norm': 'pre_norm'},
    fixed={'qkv_bias': (True,), 'qk_norm': (False,), 'proj_bias': (True,),
           'final_norm': (True,), 'pos_embed': ('learn',)},
    special=('mlp_ratio', 'global_pool', 'class_token', 'fc_norm',
             'act_layer', 'no_embed_class'),
    adjust=_adjust)


# The options beyond the plain ViT: our field -> (timm's model_args key,
# our value -> timm's), each written to model_args where it differs from
# the entry point's own (timm's VisionTransformer defaults for the plain
# ViT's).
_OPTION_ARGS = {
    'layer_scale_init': ('init_values', lambda value: value),
    'num_registers': ('reg_tokens', lambda value: value),
    'posemb_prefix': ('no_embed_class', lambda value: not value),
    'pre_norm': ('pre_norm', lambda value: value),
    'activation': ('act_layer', lambda value: value),
}
_PLAIN_OPTIONS = {field: models.vit.ViT.__dataclass_fields__[field].default
                  for field in _OPTION_ARGS}
# The entry point whose LayerNorm eps (which model_args cannot say) a ViT
# of no named architecture is built from: timm's ViTs and its CLIP towers.
_BASE_BY_EPS = {1e-6: 'vit_base_patch16_224', 1e-5: 'vit_base_patch16_clip_224'}
# The fields that fix a ViT's weights and function, compared to find the
# named architecture it is.
_STRUCTURE = ('patch_size', 'width', 'depth', 'mlp_dim', 'num_heads',
              'pool_type', 'posemb', 'fc_norm', 'representation_size',
              'layer_norm_eps', *_OPTION_ARGS)


def _named_architecture(model, image_size: Tuple[int, int]) -> Optional[str]:
  """The timm entry point (beyond the plain ViTs) that is `model` at
  `image_size`, if one is."""
  if image_size[0] != image_size[1]:
    return None
  for name, architecture in TIMM_ARCHITECTURES.items():
    options = architecture.model_kwargs
    if architecture.image_size != image_size[0] or not any(
        options.get(field, default) != default
        for field, default in _PLAIN_OPTIONS.items()):
      continue
    row = models.get_model('vit', **options)
    if all(getattr(row, field) == getattr(model, field)
           for field in _STRUCTURE):
      return name
  return None


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  """Any ViT of timm's layout: the named entry point of its size (plain,
  DINOv2, CLIP, DeiT-3), or vit_base_patch16_224 (vit_base_patch16_clip_224
  for LayerNorm eps 1e-5) with model_args saying the sizes and options."""
  mlp_ratio = core.ratio(model.mlp_dim, model.width)
  if model.layer_norm_eps not in _BASE_BY_EPS or mlp_ratio is None:
    return core.no_timm_model('timm\'s ViT has LayerNorm eps 1e-6 (its '
                              'CLIP towers 1e-5) and an MLP of int(width * '
                              'mlp_ratio)')
  named = _named_architecture(model, image_size)
  if model.activation == 'swiglu' and named is None:
    return core.no_timm_model('timm\'s ViT has the SwiGLU MLP only in its '
                              'DINOv2 giant entry points (mlp_layer, which '
                              'config.json cannot say)')
  plain = all(getattr(model, field) == default
              for field, default in _PLAIN_OPTIONS.items())
  size = {letter: name for name, letter in _SIZES.items()}.get(
      core.variant_of(model, models.vit.VARIANTS))
  name = f'vit_{size}_patch{model.patch_size}_{image_size[0]}'
  if plain and model.layer_norm_eps == 1e-6:
    name = name if name in _WRITTEN_NAMES else None
  else:
    name = named
  name = name or _BASE_BY_EPS[model.layer_norm_eps]
  pool = _TIMM_POOLING[model.pool_type]
  model_args = dict(
      img_size=core.side(image_size), patch_size=model.patch_size,
      embed_dim=model.width, depth=model.depth, num_heads=model.num_heads,
      mlp_ratio=mlp_ratio, class_token=model.pool_type == 'cls',
      global_pool=pool, fc_norm=model.fc_norm)
  own = {**_PLAIN_OPTIONS, **TIMM_ARCHITECTURES[name].model_kwargs} if (
      name in TIMM_ARCHITECTURES) else dict(_PLAIN_OPTIONS)
  for field, (key, to_timm) in _OPTION_ARGS.items():
    value = getattr(model, field)
    if value != own[field]:
      model_args[key] = to_timm(value)
  return core.TimmModel(name, model_args, num_features=model.width,
                        global_pool=pool, fixed_input_size=True)
