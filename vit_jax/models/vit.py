"""Vision Transformer.

Dosovitskiy et al. 2020, "An Image is Worth 16x16 Words" (ViT), with the
sizes and pooling of Zhai et al. 2021, "Scaling Vision Transformers".

    images [B, H, W, C]
      -> patch embedding                       [B, H/p * W/p, D]
      -> (+ class token, registers) + position embedding  [B, N, D]
      -> (pre-norm LayerNorm: CLIP)            [B, N, D]
      -> `depth` pre-norm encoder blocks        [B, N, D]
      -> pooling: cls | gap | map | none        [B, D]  (none: [B, N, D])
      -> (pre-logits layer) -> head             [B, num_classes]
"""

import functools
import math
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import common

# Named sizes: (width D, depth, MLP width, heads). Ti..H from the ViT and
# DeiT papers, g and G from Scaling ViT (Table 2).
VARIANTS = {
    'Ti': dict(width=192, depth=12, mlp_dim=768, num_heads=3),
    'S': dict(width=384, depth=12, mlp_dim=1536, num_heads=6),
    'M': dict(width=512, depth=12, mlp_dim=2048, num_heads=8),
    'B': dict(width=768, depth=12, mlp_dim=3072, num_heads=12),
    'L': dict(width=1024, depth=24, mlp_dim=4096, num_heads=16),
    'H': dict(width=1280, depth=32, mlp_dim=5120, num_heads=16),
    'g': dict(width=1408, depth=40, mlp_dim=6144, num_heads=16),
    'G': dict(width=1664, depth=48, mlp_dim=8192, num_heads=16),
}

POOL_TYPES = ('cls', 'gap', 'map', 'none')
POSEMB_TYPES = ('learn', 'sincos2d')
ACTIVATIONS = tuple(common.ACTIVATIONS)


class LayerScale(nn.Module):
  """A learned per-channel scale of a residual branch (Touvron et al. 2021,
  "Going deeper with Image Transformers" (CaiT), Sec. 2.1), started small
  so that deep stacks begin close to the identity."""
  init_value: float

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param('scale', nn.initializers.constant(self.init_value),
                       (x.shape[-1],), jnp.float32)
    return x * scale.astype(x.dtype)


class EncoderBlock(nn.Module):
  """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x));
  with `layer_scale_init` each branch is scaled by a `LayerScale`.

  `__call__` takes and returns a (tokens, drop-path rate) carry so the same
  block runs in a Python loop or under `nn.scan`.
  """
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  deterministic: bool = True
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None
  capture_attention: bool = False  # sow the attention probabilities
  layer_scale_init: Optional[float] = None
  activation: str = 'gelu'

  def _scaled(self, branch: jax.Array, name: str) -> jax.Array:
    if self.layer_scale_init is None:
      return branch
    return LayerScale(self.layer_scale_init, name=name)(branch)

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:  # [B, N, D]
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm1')(tokens)
    attended = common.Attention(
        self.num_heads, dropout=self.attention_dropout, dtype=self.dtype,
        implementation=self.attention_impl,
        capture_weights=self.capture_attention, name='attn')(
            normed, normed, self.deterministic)
    attended = nn.Dropout(self.dropout)(attended, self.deterministic)
    attended = self._scaled(attended, 'ls1')
    tokens = tokens + common.drop_path(attended, drop_path_rate,
                                       self.deterministic, self)
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm2')(tokens)
    transformed = common.Mlp(self.mlp_dim, dropout=self.dropout,
                             dtype=self.dtype, activation=self.activation,
                             name='mlp')(normed, self.deterministic)
    transformed = self._scaled(transformed, 'ls2')
    tokens = tokens + common.drop_path(transformed, drop_path_rate,
                                       self.deterministic, self)
    return tokens, None  # [B, N, D]


class Encoder(nn.Module):
  """A stack of encoder blocks: unrolled (`block_i`) or scanned (`blocks`).

  With `scan=True` the parameters of all blocks are stacked on a leading
  depth axis under `blocks`; `common.stack_blocks` / `common.unstack_blocks`
  convert between the two layouts. `remat=True` recomputes each block's
  activations in the backward pass instead of storing them.
  """
  depth: int
  mlp_dim: int
  num_heads: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False
  attention_impl: Optional[str] = None
  capture_attention: Tuple[int, ...] = ()
  layer_scale_init: Optional[float] = None
  activation: str = 'gelu'

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool) -> jax.Array:
    block_kwargs = dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads, dropout=self.dropout,
        attention_dropout=self.attention_dropout, deterministic=deterministic,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
        attention_impl=self.attention_impl,
        layer_scale_init=self.layer_scale_init, activation=self.activation)
    overrides = {index: {'capture_attention': True}
                 for index in self.capture_attention}
    return common.run_blocks(EncoderBlock, block_kwargs, tokens,
                             self.depth, self.stochastic_depth, self.scan,
                             self.remat, overrides)


class ViT(nn.Module):
  """Vision Transformer classifier (or feature extractor).

  Attributes:
    patch_size, width, depth, mlp_dim, num_heads: the size (see VARIANTS and
      `ViT.from_variant`).
    num_classes: head outputs; 0 or None for no head (logits are then the
      representation itself).
    pool_type: 'cls' (class token), 'gap' (global average pooling), 'map'
      (multi-head attention pooling, Scaling ViT Sec. 3.2) or 'none'
      (return all tokens; a head is applied per token).
    posemb: 'learn' (learned, normal(0.02) init) or 'sincos2d' (fixed).
    fc_norm: with 'gap', normalise after pooling instead of before (as MAE
      fine-tuning and BEiT do); the norm is then named `fc_norm`.
    num_registers: learned register tokens after the class token (Darcet et
      al. 2023, "Vision Transformers Need Registers"; DINOv2 with
      registers), `reg_token` [1, R, D]; no pooling reads them ('gap'
      averages the patch tokens only).
    posemb_prefix: the learned position embedding has rows for the class
      token and registers (added after they are prepended: the original
      ViT, DINOv2); False: rows for the patches only, added before (DeiT-3,
      DINOv2 with registers; timm's no_embed_class=True).
    pre_norm: a LayerNorm (`norm_pre`) on the embedded tokens before the
      blocks, as CLIP's image towers have; the patch embedding then has no
      bias, as in CLIP.
    layer_scale_init: None, or the initial value of a learned per-channel
      scale on each residual branch (`LayerScale`, `ls1` / `ls2`; CaiT,
      DeiT-3 1e-6, DINOv2 1e-5).
    activation: the MLPs' activation, one of ACTIVATIONS: 'gelu' (exact),
      'quick_gelu' (x * sigmoid(1.702 x), OpenAI's CLIP) or 'swiglu'
      (SiLU of the first half of the `mlp_dim` hidden units times the
      second half, which the MLP's output layer takes: DINOv2's giant).
    representation_size: width of the tanh pre-logits layer of the original
      ViT (ViT paper, Sec. 3.1 and App. B); None for none.
    head_bias_init: constant initial head bias (e.g. -10 for sigmoid
      losses, Scaling ViT). The head kernel is zero-initialised (ViT paper,
      Sec. 3.1).
    dtype: compute dtype (e.g. bfloat16); parameters stay float32.
    scan / remat: scan over blocks / rematerialise blocks, for deep models.
    attention_impl: None (cuDNN flash attention on GPU in half precision,
      XLA otherwise; `common.attention_backend`), 'xla' or 'cudnn'.
    capture_attention: indices of blocks whose attention probabilities are
      sown as 'intermediates' (encoder/block_i/attn/attention, [B, heads,
      N, N]) when that collection is mutable; those blocks then compute
      them explicitly instead of the fused path. Unrolled blocks only.
      See `vit_jax.attention_maps`.
  """
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_classes: Optional[int] = 1000
  pool_type: str = 'cls'
  posemb: str = 'learn'
  fc_norm: bool = False
  representation_size: Optional[int] = None
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False
  attention_impl: Optional[str] = None
  capture_attention: Tuple[int, ...] = ()
  num_registers: int = 0
  posemb_prefix: bool = True
  pre_norm: bool = False
  layer_scale_init: Optional[float] = None
  activation: str = 'gelu'

  @property
  def num_prefix_tokens(self) -> int:
    """The class token (with pool_type 'cls') and the registers, before
    the patch tokens."""
    return int(self.pool_type == 'cls') + self.num_registers

  @property
  def posemb_prefix_tokens(self) -> int:
    """The learned position embedding's rows before the patches'."""
    return self.num_prefix_tokens if self.posemb_prefix else 0

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'ViT':
    """ViT.from_variant('B/16', num_classes=10, pool_type='gap')."""
    size, patch_size = common.parse_variant(variant, VARIANTS, 'ViT')
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  def __post_init__(self):
    super().__post_init__()
    common.check_choice('pool_type', self.pool_type, POOL_TYPES)
    common.check_choice('posemb', self.posemb, POSEMB_TYPES)
    common.check_choice('attention_impl', self.attention_impl,
                        common.ATTENTION_IMPLS)
    common.check_choice('activation', self.activation, ACTIVATIONS)
    if self.activation == 'swiglu' and (self.mlp_dim % 2
                                        or self.pool_type == 'map'):
      raise ValueError(f'activation=\'swiglu\' halves the blocks\' MLP '
                       f'hidden units: it needs an even mlp_dim and a pool '
                       f'type other than \'map\' (whose MLP is not gated), '
                       f'got mlp_dim={self.mlp_dim}, '
                       f'pool_type={self.pool_type!r}.')
    if not isinstance(self.num_registers, int) or self.num_registers < 0:
      raise ValueError(f'num_registers must be an integer >= 0, got '
                       f'{self.num_registers!r}.')
    if self.fc_norm and self.pool_type != 'gap':
      raise ValueError(f'fc_norm=True applies to pool_type="gap" only, got '
                       f'pool_type={self.pool_type!r}.')
    bad = [index for index in self.capture_attention
           if not isinstance(index, int) or not 0 <= index < self.depth]
    if bad:
      raise ValueError(f'capture_attention names blocks {bad}; valid blocks: '
                       f'0..{self.depth - 1}.')
    if self.capture_attention and self.scan:
      raise ValueError(f'capture_attention={tuple(self.capture_attention)} '
                       f'needs unrolled blocks: build the model with '
                       f'scan=False (common.unstack_blocks converts the '
                       f'params).')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits' and 'encoded'."""
    deterministic = not train
    patches = common.PatchEmbed(self.patch_size, self.width, dtype=self.dtype,
                                use_bias=not self.pre_norm,
                                name='patch_embed')(images)  # [B, h, w, D]
    batch, grid_h, grid_w, _ = patches.shape
    tokens = patches.reshape(batch, grid_h * grid_w, self.width)  # [B, N, D]

    prefix = []  # [class token] + registers, each [B, n, D]
    if self.pool_type == 'cls':
      cls_token = self.param('cls_token', nn.initializers.zeros,
                             (1, 1, self.width), jnp.float32)
      prefix.append(cls_token)
    if self.num_registers:
      prefix.append(self.param('reg_token', nn.initializers.normal(1e-6),
                               (1, self.num_registers, self.width),
                               jnp.float32))
    prefix = [jnp.broadcast_to(token.astype(tokens.dtype),
                               (batch,) + token.shape[1:])
              for token in prefix]

    # With posemb_prefix the prefix tokens get position rows of their own
    # (prepended first); else only the patches do (added first).
    if prefix and self.posemb_prefix:
      tokens = jnp.concatenate(prefix + [tokens], axis=1)  # [B, P+N, D]
    if self.posemb == 'learn':
      pos_embed = self.param('pos_embed', nn.initializers.normal(0.02),
                             (1,) + tokens.shape[1:], jnp.float32)
    else:
      pos_embed = jnp.asarray(common.posemb_sincos_2d(
          grid_h, grid_w, self.width,
          num_prefix_tokens=self.posemb_prefix_tokens))[None]
    tokens = tokens + pos_embed.astype(tokens.dtype)
    if prefix and not self.posemb_prefix:
      tokens = jnp.concatenate(prefix + [tokens], axis=1)  # [B, P+N, D]
    tokens = nn.Dropout(self.dropout)(tokens, deterministic)
    norm = functools.partial(nn.LayerNorm, self.layer_norm_eps,
                             dtype=self.dtype)
    if self.pre_norm:
      tokens = norm(name='norm_pre')(tokens)

    tokens = Encoder(
        depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
        dropout=self.dropout, attention_dropout=self.attention_dropout,
        stochastic_depth=self.stochastic_depth,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype, scan=self.scan,
        remat=self.remat, attention_impl=self.attention_impl,
        capture_attention=tuple(self.capture_attention),
        layer_scale_init=self.layer_scale_init, activation=self.activation,
        name='encoder')(tokens, deterministic)  # [B, N, D]

    if not self.fc_norm:
      tokens = norm(name='encoder_norm')(tokens)
    aux = {'encoded': tokens}

    if self.pool_type == 'cls':
      representation = tokens[:, 0]  # [B, D]
    elif self.pool_type == 'gap':
      # The patch tokens' mean (registers, if any, left out).
      representation = tokens[:, self.num_prefix_tokens:].mean(axis=1)
      if self.fc_norm:
        representation = norm(name='fc_norm')(representation)
    elif self.pool_type == 'map':
      representation = common.MAPHead(
          self.num_heads, self.mlp_dim, dtype=self.dtype,
          layer_norm_eps=self.layer_norm_eps, activation=self.activation,
          name='map_head')(tokens)
    else:  # 'none'
      representation = tokens  # [B, N, D]

    if self.representation_size:
      representation = nn.tanh(nn.Dense(self.representation_size,
                                        dtype=self.dtype,
                                        name='pre_logits')(representation))
    representation = representation.astype(jnp.float32)
    aux['pre_logits'] = representation
    logits = common.classifier_head(representation, self.num_classes,
                                    self.head_bias_init)  # [B, num_classes]
    return logits, aux


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: ViT, flat_params: Mapping[str, Any]
                          ) -> Tuple[int, int]:
  """The resolution ViT params were trained at, from the learned position
  embedding's square grid of patches (class-token row apart).

  Args:
    model: the ViT the params are for (its patch size; with posemb_prefix
      the class token's and registers' rows are not patches').
    flat_params: '/'-joined paths (unscanned blocks) to arrays.

  Returns:
    (height, width); 224 a side without a learned position embedding
    (posemb='sincos2d' fits every resolution).
  """
  if 'pos_embed' not in flat_params:
    return (224, 224)
  num_positions = flat_params['pos_embed'].shape[1]
  if model.posemb_prefix:
    num_positions -= 1 if 'cls_token' in flat_params else 0
    if 'reg_token' in flat_params:
      num_positions -= flat_params['reg_token'].shape[1]
  side = int(round(math.sqrt(num_positions))) * model.patch_size
  return (side, side)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'vit'
MODEL = ViT
# The variants the zoo listing (`python -m vit_jax.models`) shows.
ZOO = ('Ti/16', 'S/32', 'S/16', 'M/16', 'B/32', 'B/16', 'B/8', 'L/32', 'L/16',
       'L/14', 'H/14', 'g/14', 'G/14')
# What `models.features` extracts: each encoder block's tokens (class token
# first), on the patch grid, through encoder_norm with norm=True.
FEATURES = dict(layers='encoder/block_{}', grid='patch_embed',
                norm='encoder_norm')
