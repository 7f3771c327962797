"""XCiT: Cross-Covariance Image Transformers.

El-Nouby et al. 2021, "XCiT: Cross-Covariance Image Transformers"
(arXiv:2106.09681).

    images [B, H, W, C]
      -> convolutional patch embedding: log2(p) 3x3 stride-2 convolutions
         with BatchNorm, GELU between them                [B, H/p, W/p, D]
      -> + Fourier-feature position encoding              [B, N, D]
      -> `depth` XCiT layers, each three residual branches
         with LayerScale:
           x + g1 * XCA(LN(x))     cross-covariance attention
           x + g3 * LPI(LN(x))     local patch interaction
           x + g2 * MLP(LN(x))                             [B, N, D]
      -> class token prepended, 2 class-attention layers  [B, 1 + N, D]
      -> LayerNorm, class token                           [B, D]
      -> head                                             [B, num_classes]

Variants are named SIZE+DEPTH/PATCH after the paper's models (Sec. 4.1):
"S24/16" is XCiT-S24 with 16x16 patches. Patch sizes are 8 and 16, the two the
convolutional patch embedding is defined for (paper Sec. 3.3), and 2 and 4
(one and two stride-2 layers, by the same rule) for small images. Each size
carries its LayerScale initialisation (1 for 12-layer models, 1e-5 for
24-layer ones) and whether the class-attention layers normalise all tokens
(every size but N12), as the released models (the authors' code and timm's
`xcit_*`).

Parameter layout (paths of `params`; the BatchNorm running averages live
at the same paths in `batch_stats`, as 'mean' and 'var'):

    patch_embed/conv_{i}/kernel, patch_embed/bn_{i}/{scale,bias}
    pos_embed/{kernel [2 * 32, D], bias}      Fourier features -> D
    block_{i}/norm_attn, block_{i}/attn/{query,key,value,out}
    block_{i}/attn/temperature [heads]
    block_{i}/norm_lpi, block_{i}/lpi/{conv1,bn,conv2}  (depthwise 3x3)
    block_{i}/norm_mlp, block_{i}/mlp/{fc1,fc2}
    block_{i}/gamma_{attn,lpi,mlp} [D]        LayerScale
    cls_token [1, 1, D]
    class_block_{j}/{norm1,attn,gamma1,norm2,mlp,gamma2}
    norm/{scale,bias}, head/{kernel,bias}

(`blocks/...` with a leading depth axis when scan=True.) No parameter
depends on the resolution: any image size divisible by the patch size
works.
"""

import math
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common

# Named sizes (the paper's models, Sec. 4.1, as released): width D, depth,
# heads, LayerScale initialisation (eta), and whether the class-attention
# layers normalise every token (False only for N12, as released).
VARIANTS = {
    'N12': dict(width=128, depth=12, num_heads=4, layer_scale_init=1.0,
                tokens_norm=False),
    'T12': dict(width=192, depth=12, num_heads=4, layer_scale_init=1.0,
                tokens_norm=True),
    'S12': dict(width=384, depth=12, num_heads=8, layer_scale_init=1.0,
                tokens_norm=True),
    'T24': dict(width=192, depth=24, num_heads=4, layer_scale_init=1e-5,
                tokens_norm=True),
    'S24': dict(width=384, depth=24, num_heads=8, layer_scale_init=1e-5,
                tokens_norm=True),
    'M24': dict(width=512, depth=24, num_heads=8, layer_scale_init=1e-5,
                tokens_norm=True),
    'L24': dict(width=768, depth=24, num_heads=16, layer_scale_init=1e-5,
                tokens_norm=True),
}

# Patch sizes of the convolutional patch embedding: log2(p) stride-2 layers
# (the paper's 8 and 16; 2 and 4 for small images such as digits).
PATCH_SIZES = (2, 4, 8, 16)

# Fourier position features (paper Sec. 3.3; the authors' code): 32
# channels per axis, the transformer's temperature (Vaswani et al. 2017,
# Sec. 3.5).
FOURIER_HIDDEN = 32
FOURIER_TEMPERATURE = 10_000.0

# Linear layers of the reference code: truncated normal(0.02), zero biases.
_DENSE_INIT = nn.initializers.truncated_normal(stddev=0.02)
# Its convolutions keep PyTorch's default: uniform, variance 1 / (3 fan_in).
_CONV_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def parse_variant(variant: str) -> Tuple[Mapping[str, Any], int]:
  """Decodes "S24/16" into (the size row of VARIANTS, patch size 16)."""
  size, sep, patch = variant.partition('/')
  if not sep or not patch.isdigit():
    raise ValueError(
        f'XCiT variant {variant!r} must look like SIZE/PATCH, e.g. "S24/16"; '
        f'valid sizes: {list(VARIANTS)}, valid patch sizes: '
        f'{list(PATCH_SIZES)}')
  if size not in VARIANTS:
    raise ValueError(
        f'Unknown XCiT size {size!r} in variant {variant!r}; valid sizes: '
        f'{list(VARIANTS)}')
  if int(patch) not in PATCH_SIZES:
    raise ValueError(
        f'Unsupported XCiT patch size {int(patch)} in variant {variant!r}; '
        f'valid patch sizes: {list(PATCH_SIZES)}')
  return VARIANTS[size], int(patch)


def fourier_position_features(height: int, width: int,
                              hidden: int = FOURIER_HIDDEN,
                              temperature: float = FOURIER_TEMPERATURE
                              ) -> np.ndarray:
  """Fixed Fourier features of a grid of patches, [height * width, 2 * hidden].

  Each axis' position, 1..n scaled to (0, 2 pi], is divided by
  temperature ** (2 floor(i / 2) / hidden) for channel i < hidden; even
  channels take the sine, odd ones the cosine. The row (y) features come
  first, then the column (x) ones; patches are row-major. The model projects
  them to its width with a learned linear layer (paper Sec. 3.3; the
  authors' `PositionalEncodingFourier`, including its eps of 1e-6).
  """
  eps = 1e-6
  channel = np.arange(hidden, dtype=np.float64)
  frequencies = temperature ** (2 * (channel // 2) / hidden)  # [hidden]

  def axis_features(size):
    positions = np.arange(1, size + 1, dtype=np.float64)
    positions = positions / (size + eps) * 2 * np.pi
    angles = positions[:, None] / frequencies  # [size, hidden]
    return np.where(channel % 2 == 0, np.sin(angles), np.cos(angles))

  rows = axis_features(height)  # [H, hidden]
  cols = axis_features(width)  # [W, hidden]
  grid = np.concatenate([
      np.broadcast_to(rows[:, None], (height, width, hidden)),
      np.broadcast_to(cols[None, :], (height, width, hidden))], axis=-1)
  return grid.reshape(height * width, 2 * hidden).astype(np.float32)


def _l2_normalize(values: jax.Array, axis: int) -> jax.Array:
  """values / max(||values||, 1e-12) along `axis` (torch's F.normalize)."""
  squared = jnp.sum(jnp.square(values), axis=axis, keepdims=True)
  return values * jax.lax.rsqrt(jnp.maximum(squared, 1e-24))


# ----------------------------------------------------------------------------
# Layers.


class ConvPatchEmbed(nn.Module):
  """Patch encoding by a small convolutional network (paper Sec. 3.3):
  log2(p) 3x3 convolutions of stride 2 (padding 1, no bias), each followed
  by BatchNorm, with GELU between them. Widths double up to D: D/8, D/4,
  D/2, D for p = 16; D/4, D/2, D for p = 8.
  """
  patch_size: int
  width: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, images: jax.Array, train: bool) -> jax.Array:
    _, height, width, _ = images.shape  # [B, H, W, C]
    if height % self.patch_size or width % self.patch_size:
      raise ValueError(
          f'XCiT: image size {height}x{width} is not divisible by the patch '
          f'size {self.patch_size}.')
    num_layers = int(math.log2(self.patch_size))
    features = images.astype(self.dtype)
    for layer in range(num_layers):
      if layer:
        features = nn.gelu(features, approximate=False)
      channels = self.width // 2 ** (num_layers - 1 - layer)
      features = nn.Conv(channels, (3, 3), strides=(2, 2),
                         padding=((1, 1), (1, 1)), use_bias=False,
                         dtype=self.dtype, kernel_init=_CONV_INIT,
                         name=f'conv_{layer}')(features)
      features = common.BatchNorm(dtype=self.dtype, name=f'bn_{layer}')(
          features, train)
    return features  # [B, H/p, W/p, D]


class XCA(nn.Module):
  """Cross-covariance attention, XCA (paper Sec. 3.2).

  Attention runs over the feature dimension instead of the tokens: per head,
  queries and keys are L2-normalised along the tokens, their
  [head_dim, head_dim] cross-covariance, scaled by a learned temperature
  per head, goes through a softmax over keys' features, and mixes the
  value features of each token. Cost is linear in the number of tokens.
  Projections are laid out like `common.Attention`'s: query / key / value
  kernels [D, heads, head_dim], output kernel [heads, head_dim, D].
  """
  num_heads: int
  dropout: float = 0.0  # on the attention weights.
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool) -> jax.Array:
    width = tokens.shape[-1]  # [B, N, D]
    head_dim = width // self.num_heads
    project = lambda name: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), dtype=self.dtype,
        kernel_init=_DENSE_INIT, name=name)
    query = project('query')(tokens)  # [B, N, H, hd]
    key = project('key')(tokens)
    value = project('value')(tokens)
    # l2-normalisation along the tokens and temperature (paper Sec. 3.2).
    query = _l2_normalize(query.astype(jnp.float32), axis=1)
    key = _l2_normalize(key.astype(jnp.float32), axis=1)
    temperature = self.param('temperature', nn.initializers.ones,
                             (self.num_heads,), jnp.float32)
    logits = jnp.einsum('bnhi,bnhj->bhij', query, key)  # [B, H, hd, hd]
    logits = logits * temperature[:, None, None]
    weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    weights = nn.Dropout(self.dropout)(weights, deterministic)
    attended = jnp.einsum('bhij,bnhj->bnhi', weights, value)  # [B, N, H, hd]
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype,
                           kernel_init=_DENSE_INIT,
                           name='out')(attended)  # [B, N, D]


class LocalPatchInteraction(nn.Module):
  """Local patch interaction, LPI (paper Sec. 3.3): depthwise 3x3 conv,
  GELU, BatchNorm, depthwise 3x3 conv, over the tokens as their
  [H/p, W/p] grid. XCA mixes no information between tokens beyond its
  global statistics; this gives each patch its neighbours'.
  """
  grid: Tuple[int, int]
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, train: bool) -> jax.Array:
    batch, _, width = tokens.shape  # [B, N, D]
    features = tokens.reshape(batch, *self.grid, width)  # [B, h, w, D]
    depthwise = lambda name: common.DepthwiseConv(  # noqa: E731
        (3, 3), (1, 1), ((1, 1), (1, 1)), use_bias=True, dtype=self.dtype,
        kernel_init=_CONV_INIT, name=name)
    features = depthwise('conv1')(features)
    features = nn.gelu(features, approximate=False)
    features = common.BatchNorm(dtype=self.dtype, name='bn')(features, train)
    features = depthwise('conv2')(features)
    return features.reshape(batch, -1, width)  # [B, N, D]


def _layer_scale(module: nn.Module, name: str, width: int,
                 init: float) -> jax.Array:
  """A learned per-channel scale of a residual branch, initialised to
  `init` (LayerScale, Touvron et al. 2021, "Going deeper with Image
  Transformers", Sec. 2)."""
  return module.param(name, nn.initializers.constant(init), (width,),
                      jnp.float32)


class XCABlock(nn.Module):
  """One XCiT layer (paper Sec. 3.3): XCA, LPI and MLP branches,
  each pre-normalised and scaled by LayerScale. The branch order is the
  paper's and the released models' (attention, LPI, MLP).

  Takes and returns a (tokens, drop-path rate) carry like the other
  families' blocks, for `common.run_blocks`; XCiT drops every block's
  branches at one rate, `drop_path_rate` (the authors' code and timm:
  "constant across all layers"), so the carried rate is not used.
  """
  num_heads: int
  mlp_dim: int
  grid: Tuple[int, int]
  layer_scale_init: float = 1.0
  drop_path_rate: float = 0.0
  dropout: float = 0.0
  attention_dropout: float = 0.0
  train: bool = False
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, unused_rate) -> Any:  # [B, N, D]
    del unused_rate
    deterministic = not self.train
    width = tokens.shape[-1]
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        self.layer_norm_eps, dtype=self.dtype, name=name)

    def residual(tokens, branch, gamma_name):
      gamma = _layer_scale(self, gamma_name, width, self.layer_scale_init)
      return tokens + common.drop_path(branch * gamma.astype(branch.dtype),
                                       self.drop_path_rate, deterministic,
                                       self)

    attended = XCA(self.num_heads, dropout=self.attention_dropout,
                   dtype=self.dtype, name='attn')(
                       norm('norm_attn')(tokens), deterministic)
    attended = nn.Dropout(self.dropout)(attended, deterministic)
    tokens = residual(tokens, attended, 'gamma_attn')
    local = LocalPatchInteraction(self.grid, dtype=self.dtype, name='lpi')(
        norm('norm_lpi')(tokens), self.train)
    tokens = residual(tokens, local, 'gamma_lpi')
    transformed = common.Mlp(
        self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
        kernel_init=_DENSE_INIT, bias_init=nn.initializers.zeros,
        name='mlp')(norm('norm_mlp')(tokens), deterministic)
    tokens = residual(tokens, transformed, 'gamma_mlp')
    return tokens, None  # [B, N, D]


class ClassAttentionBlock(nn.Module):
  """Class attention (paper Sec. 3.3, after CaiT, Touvron et al. 2021,
  "Going deeper with Image Transformers", Sec. 3): only the class
  token queries; keys and values are all tokens. The class token then
  goes through the MLP; both branches carry LayerScale.

  The patch tokens follow the authors' code, so that released weights
  give the same outputs: the attention branch adds LN(x) to them, and
  the MLP's residual sum adds them to themselves (which the following
  LayerNorms all but undo). `tokens_norm` normalises every token before
  the MLP instead of the class token only (the released models: all but
  N12).
  """
  num_heads: int
  mlp_dim: int
  layer_scale_init: float = 1.0
  tokens_norm: bool = True
  dropout: float = 0.0
  attention_dropout: float = 0.0
  train: bool = False
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:  # [B, 1 + N, D]
    deterministic = not self.train
    width = tokens.shape[-1]
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        self.layer_norm_eps, dtype=self.dtype, name=name)
    normed = norm('norm1')(tokens)
    attended = common.Attention(
        self.num_heads, dropout=self.attention_dropout, dtype=self.dtype,
        name='attn')(normed[:, :1], normed, deterministic)  # [B, 1, D]
    attended = nn.Dropout(self.dropout)(attended, deterministic)
    update = jnp.concatenate([attended, normed[:, 1:]], axis=1)
    gamma1 = _layer_scale(self, 'gamma1', width, self.layer_scale_init)
    tokens = tokens + update * gamma1.astype(update.dtype)

    if self.tokens_norm:
      tokens = norm('norm2')(tokens)
    else:
      tokens = jnp.concatenate([norm('norm2')(tokens[:, :1]), tokens[:, 1:]],
                               axis=1)
    cls_update = common.Mlp(
        self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
        kernel_init=_DENSE_INIT, bias_init=nn.initializers.zeros,
        name='mlp')(tokens[:, :1], deterministic)  # [B, 1, D]
    gamma2 = _layer_scale(self, 'gamma2', width, self.layer_scale_init)
    cls_update = cls_update * gamma2.astype(cls_update.dtype)
    return tokens + jnp.concatenate([cls_update, tokens[:, 1:]], axis=1)


class XCiT(nn.Module):
  """XCiT classifier; same call contract as `ViT`.

  Attributes:
    patch_size: 8 or 16 (the convolutional patch embedding's stride; 2 or 4
      for small images).
    width, depth, num_heads: the size (see VARIANTS and
      `XCiT.from_variant`); width must divide by the heads and by the patch
      embedding's narrowest layer (width / 8 for p 16, width / 4 for p 8).
    mlp_ratio: MLP hidden width over the width (4).
    layer_scale_init: LayerScale's initial value, eta (1 for 12-layer
      models, 1e-5 for 24-layer ones).
    tokens_norm: class-attention layers normalise every token before their
      MLP (True), or the class token only.
    class_attention_depth: number of class-attention layers (2).
    num_classes: head outputs; 0 or None for no head (logits are then the
      representation itself).
    dropout: after the position encoding, on the attention outputs and
      inside the MLPs.
    attention_dropout: on the attention weights (XCA and class attention).
    stochastic_depth: drop-path rate of every XCiT layer's branches, the
      same for all layers (the authors' code); class-attention layers are
      not dropped.
    head_bias_init: constant initial head bias; the head kernel is
      zero-initialised as in ViT.
    layer_norm_eps: 1e-6, as the reference code.
    dtype: compute dtype (e.g. bfloat16); parameters, BatchNorm statistics,
      XCA's normalisation and softmax stay float32.
    scan / remat: scan over the XCiT layers / rematerialise them.

  `__call__(images, train)` returns (logits, aux): aux['pre_logits'] is the
  class token after the final norm [B, D] (float32), aux['encoded'] all
  normalised tokens [B, 1 + N, D], class token first. BatchNorm (patch
  embedding, LPI) normalises with the batch's statistics when train=True
  and updates the running averages when 'batch_stats' is mutable:

      logits, aux = model.apply(variables, images, train=False)
      (logits, aux), updates = model.apply(
          variables, images, train=True, mutable=['batch_stats'])
  """
  patch_size: int
  width: int
  depth: int
  num_heads: int
  mlp_ratio: float = 4.0
  layer_scale_init: float = 1.0
  tokens_norm: bool = True
  class_attention_depth: int = 2
  num_classes: Optional[int] = 1000
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'XCiT':
    """XCiT.from_variant('S24/16'); XCiT.from_variant('T12/8',
    num_classes=10)."""
    size, patch_size = parse_variant(variant)
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  def __post_init__(self):
    super().__post_init__()
    if self.patch_size not in PATCH_SIZES:
      raise ValueError(
          f'Unsupported XCiT patch_size {self.patch_size!r}; valid patch '
          f'sizes: {list(PATCH_SIZES)}')
    if self.width % self.num_heads:
      raise ValueError(f'XCiT width {self.width} is not divisible by the '
                       f'number of heads {self.num_heads}.')
    narrowest = 2 ** (int(math.log2(self.patch_size)) - 1)
    if self.width % narrowest:
      raise ValueError(
          f'XCiT width {self.width} is not divisible by {narrowest}: the '
          f'patch embedding for patch size {self.patch_size} starts at '
          f'width / {narrowest} channels.')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits' and 'encoded'."""
    deterministic = not train
    patches = ConvPatchEmbed(self.patch_size, self.width, dtype=self.dtype,
                             name='patch_embed')(images, train)
    batch, grid_h, grid_w, _ = patches.shape  # [B, h, w, D]
    tokens = patches.reshape(batch, grid_h * grid_w, self.width)  # [B, N, D]
    features = jnp.asarray(fourier_position_features(grid_h, grid_w))
    position = nn.Dense(self.width, dtype=self.dtype, kernel_init=_CONV_INIT,
                        name='pos_embed')(features)  # [N, D]
    tokens = tokens + position[None].astype(tokens.dtype)
    tokens = nn.Dropout(self.dropout)(tokens, deterministic)

    mlp_dim = int(self.width * self.mlp_ratio)
    block_kwargs = dict(
        num_heads=self.num_heads, mlp_dim=mlp_dim, grid=(grid_h, grid_w),
        layer_scale_init=self.layer_scale_init,
        drop_path_rate=self.stochastic_depth, dropout=self.dropout,
        attention_dropout=self.attention_dropout, train=train,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype)
    # Rates are the blocks' own (one for all); run_blocks' linear rule unused.
    tokens = common.run_blocks(XCABlock, block_kwargs, tokens, self.depth,
                               0.0, self.scan, self.remat)  # [B, N, D]

    cls_token = self.param('cls_token', _DENSE_INIT, (1, 1, self.width),
                           jnp.float32)
    cls_token = jnp.broadcast_to(cls_token.astype(tokens.dtype),
                                 (batch, 1, self.width))
    tokens = jnp.concatenate([cls_token, tokens], axis=1)  # [B, 1+N, D]
    for index in range(self.class_attention_depth):
      tokens = ClassAttentionBlock(
          num_heads=self.num_heads, mlp_dim=mlp_dim,
          layer_scale_init=self.layer_scale_init,
          tokens_norm=self.tokens_norm, dropout=self.dropout,
          attention_dropout=self.attention_dropout, train=train,
          layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
          name=f'class_block_{index}')(tokens)  # [B, 1+N, D]

    tokens = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm')(tokens)
    representation = tokens[:, 0].astype(jnp.float32)  # [B, D]
    aux = {'encoded': tokens, 'pre_logits': representation}
    logits = common.classifier_head(representation, self.num_classes,
                                    self.head_bias_init)  # [B, num_classes]
    return logits, aux


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: XCiT, flat_params: Mapping[str, Any]
                          ) -> Tuple[int, int]:
  """224 a side: no XCiT parameter depends on the resolution (Fourier
  position features fit every grid); the paper trains at 224 px."""
  del model, flat_params
  return (224, 224)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'xcit'
MODEL = XCiT
# The variants the zoo listing (`python -m vit_jax.models`) shows, SIZE+DEPTH/
# PATCH: the paper's models at patch 16 and two at 8.
ZOO = ('N12/16', 'T12/16', 'S12/16', 'T24/16', 'S24/16', 'M24/16', 'L24/16',
       'T12/8', 'S24/8')
# What `models.features` extracts: each XCiT layer's patch tokens (the
# class token joins after them), on the patch grid.
FEATURES = dict(layers='block_{}', grid='patch_embed', norm='norm')
