"""XCiT's weights in timm's layout (and the authors': 'pos_embeder.', fused
class-attention qkv, read too). BatchNorm running averages are the
'batch_stats' collection."""

from typing import Tuple

from vit_jax.models import xcit
from vit_jax.weights import core
from vit_jax.weights.core import (CONV, HEADS_BIAS, HEADS_IN, QKV,
                                  Architecture, Transform, attention,
                                  batch_norm, dense, entry, norm)

NAME = 'xcit'

# The Fourier features' 1x1 convolution [D, 64, 1, 1] <-> Dense [64, D].
FOURIER_PROJECTION = Transform(
    'fourier_projection', lambda w, heads: w[:, :, 0, 0].T,
    lambda kernel: kernel.T[:, :, None, None])
# The attention temperature [heads, 1, 1] <-> [heads].
TEMPERATURE = Transform('temperature', lambda t, heads: t.reshape(-1),
                        lambda t: t.reshape(-1, 1, 1))

# timm's norm1 / norm3 / norm2 and gamma1 / gamma3 / gamma2 belong to the
# attention / LPI / MLP branches.
_BRANCHES = (('1', 'attn'), ('3', 'lpi'), ('2', 'mlp'))
_CLASS_BLOCK = 'cls_attn_blocks.{0}.'

TIMM = [
    entry('cls_token', 'cls_token'),
    # Convolution + BatchNorm pairs at every other index of timm's
    # Sequential (the GELUs between them hold nothing).
    *[e for layer in range(len(xcit.PATCH_SIZES)) for e in (
        entry(f'patch_embed.proj.{2 * layer}.0.weight',
              f'patch_embed/conv_{layer}/kernel', CONV),
        *batch_norm(f'patch_embed.proj.{2 * layer}.1',
                    f'patch_embed/bn_{layer}'))],
    *dense(('pos_embed.token_projection', 'pos_embeder.token_projection'),
           'pos_embed', FOURIER_PROJECTION),
    *[e for theirs, ours in _BRANCHES for e in (
        *norm(f'blocks.{{0}}.norm{theirs}', f'block_{{0}}/norm_{ours}'),
        entry(f'blocks.{{0}}.gamma{theirs}', f'block_{{0}}/gamma_{ours}'))],
    entry('blocks.{0}.attn.temperature', 'block_{0}/attn/temperature',
          TEMPERATURE),
    *attention('block_{0}/attn', 'blocks.{0}.attn.qkv',
               'blocks.{0}.attn.proj'),
    *[e for conv in ('conv1', 'conv2')  # depthwise [D, 1, 3, 3]
      for e in dense(f'blocks.{{0}}.local_mp.{conv}', f'block_{{0}}/lpi/{conv}',
                     CONV)],
    *batch_norm('blocks.{0}.local_mp.bn', 'block_{0}/lpi/bn'),
    *[e for fc in ('fc1', 'fc2')
      for e in dense(f'blocks.{{0}}.mlp.{fc}', f'block_{{0}}/mlp/{fc}')],
    # Class-attention layers: timm's separate q, k, v (written), the
    # authors' fused qkv (read).
    *[e for n in ('1', '2') for e in (
        *norm(f'{_CLASS_BLOCK}norm{n}', f'class_block_{{0}}/norm{n}'),
        entry(f'{_CLASS_BLOCK}gamma{n}', f'class_block_{{0}}/gamma{n}'))],
    *attention('class_block_{0}/attn',
               {part: f'{_CLASS_BLOCK}attn.{part[0]}' for part in QKV},
               _CLASS_BLOCK + 'attn.proj'),
    *dense(_CLASS_BLOCK + 'attn.qkv', 'class_block_{0}/attn/{part}',
           HEADS_IN, HEADS_BIAS, parts=QKV, read_only=True),
    *[e for fc in ('fc1', 'fc2')
      for e in dense(f'{_CLASS_BLOCK}mlp.{fc}', f'class_block_{{0}}/mlp/{fc}')],
    *norm('norm', 'norm'),
    *dense('head', 'head'),
]


# timm's XCiT sizes -> this package's variants.
_SIZES = {'nano_12': 'N12', 'tiny_12': 'T12', 'small_12': 'S12',
          'tiny_24': 'T24', 'small_24': 'S24', 'medium_24': 'M24',
          'large_24': 'L24'}

# Tags: timm's on the Hub (timm 1.0.31, the default first); at 384 px only
# the distilled weights.
TIMM_ARCHITECTURES = {
    f'xcit_{size}_p{patch}_{res}': Architecture(
        'xcit', dict(variant=f'{_SIZES[size]}/{patch}'), res,
        tags=('fb_in1k', 'fb_dist_in1k') if res == 224 else ('fb_dist_in1k',))
    for size in _SIZES for patch in (16, 8) for res in (224, 384)}


TIMM_ARGS = core.TimmArgs(
    size_fields=('patch_size', 'width', 'depth', 'num_heads',
                 'layer_scale_init', 'tokens_norm'),
    renamed={'embed_dim': 'width', 'depth': 'depth', 'num_heads': 'num_heads',
             'patch_size': 'patch_size', 'mlp_ratio': 'mlp_ratio',
             'eta': 'layer_scale_init', 'tokens_norm': 'tokens_norm',
             'cls_attn_layers': 'class_attention_depth'},
    fixed={'global_pool': ('token',), 'qkv_bias': (True,),
           'use_pos_embed': (True,)})


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  """Any XCiT of timm's layout: the named entry point of its size, or
  xcit_tiny_12_p16_224 with model_args saying the sizes."""
  if model.layer_norm_eps != 1e-6:
    return core.no_timm_model('timm\'s XCiT has LayerNorm eps 1e-6')
  size = {variant: name for name, variant in _SIZES.items()}.get(
      core.variant_of(model, xcit.VARIANTS))
  return core.TimmModel(
      f'xcit_{size}_p{model.patch_size}_224'
      if size and model.patch_size in (8, 16) else 'xcit_tiny_12_p16_224',
      dict(img_size=core.side(image_size), patch_size=model.patch_size,
           embed_dim=model.width, depth=model.depth,
           num_heads=model.num_heads, mlp_ratio=model.mlp_ratio,
           cls_attn_layers=model.class_attention_depth,
           eta=model.layer_scale_init, tokens_norm=model.tokens_norm),
      num_features=model.width, global_pool='token')
