"""Swin Transformer V2.

Liu et al. 2022, "Swin Transformer V2: Scaling Up Capacity and Resolution"
(arXiv:2111.09883). The network of `vit_jax.models.swin` (patch partition,
four stages of shifted-window blocks, patch merging between them, final
norm and average pooling; the windows, shifts, masks and clamping are
Swin's own code, imported) with the paper's three changes (Sec. 3):

- res-post-norm (Sec. 3.2, Fig. 1): each block is x + LN(attention(x)),
  then x + LN(MLP(x)): the norm moves from the branch's input to its
  output. Patch merging likewise reduces 4C -> 2C, then normalises (the
  reference code's order).
- scaled cosine attention (Sec. 3.2, Eq. 2): the logits are
  cos(q, k) / tau + B, with a learned 1 / tau per head (`logit_scale`, as
  its log, clamped at log(100)) instead of q.k / sqrt(d).
- log-spaced continuous position bias (Sec. 3.3, Eqs. 3-4): the bias B of
  every (dy, dx) offset is 16 * sigmoid(G(dy', dx')), G a two-layer MLP
  (`cpb_mlp`: 2 -> 512, ReLU, -> heads) of the log-spaced offset,
  t' = sign(t) * log2(1 + 8 |t| / (M - 1)) / log2(8), so that a window of
  another size (fine-tuning at a higher resolution) reuses the same MLP.
  `pretrained_window_sizes` gives, per stage, the window M the MLP was
  trained with (0: the stage's own window), as when timm's
  swinv2_base_window12to16_192to256 fine-tunes window 12 to 16.

Variants are Swin's ("T/4" ... "L/4"); `window_size` 7 (224 px) as in timm's
constructor, 8 for the paper's 256 px models, e.g.

    SwinV2.from_variant('T/4', window_size=8)  # swinv2_tiny_window8_256

Parameter layout (paths of `params`): Swin's, except each block's

    stage_{i}/block_{j}/attn/{query,key,value,out}  (key without a bias)
    stage_{i}/block_{j}/attn/logit_scale            [heads]
    stage_{i}/block_{j}/attn/cpb_mlp/fc1/{kernel,bias}, fc2/kernel

in place of its relative position bias table; `patch_merging/norm` is 2C
wide. No parameter depends on the resolution.
"""

import math
from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common
from vit_jax.models import swin

Pair = Tuple[int, int]

# The continuous position bias MLP's hidden width (the paper's Sec. 3.3,
# "a 2-layer MLP with a ReLU activation in between"; 512 in the reference
# code and timm).
CPB_HIDDEN = 512
# The bias is 16 * sigmoid(MLP output), bounded to [0, 16] (the reference
# code and timm; the paper's Eq. 3 leaves the MLP's output as it is).
CPB_BIAS_RANGE = 16.0
# 1 / tau is clamped at 100 (tau >= 0.01, paper Sec. 3.2); the parameter
# is its log, initialised at log(10).
MAX_LOGIT_SCALE = math.log(100.0)
LOGIT_SCALE_INIT = math.log(10.0)
# Offsets t / (M - 1) in [-1, 1] are stretched to [-8, 8] before the log.
_LOG_SPACING = 8.0

# Linear layers of the reference code: truncated normal(0.02), zero biases.
_DENSE_INIT = nn.initializers.truncated_normal(stddev=0.02)


def log_spaced_coords(window: Pair, pretrained_window: Pair) -> np.ndarray:
  """The MLP's inputs: every (dy, dx) of a window, log-spaced, [2Mh-1,
  2Mw-1, 2] (float32, the table `swin.relative_position_index` indexes).

  Paper Eq. 4. Offsets are normalised by the pretrained window's M - 1
  where one is given (a side of 0: the window's own), so that a larger
  window extrapolates past +-1 rather than stretching the trained range;
  max(M - 1, 1) as timm does, since a window side of 1 has offset 0 only.
  """
  axes = []
  for side, pretrained in zip(window, pretrained_window):
    reference = pretrained if pretrained > 0 else side
    offsets = np.arange(-(side - 1), side, dtype=np.float32)
    axes.append(offsets / np.float32(max(reference - 1, 1))
                * np.float32(_LOG_SPACING))
  coords = np.stack(np.meshgrid(*axes, indexing='ij'), axis=-1)
  return (np.sign(coords) * np.log2(np.abs(coords) + np.float32(1.0))
          / np.float32(np.log2(_LOG_SPACING))).astype(np.float32)


def _unit(vectors: jax.Array) -> jax.Array:
  """Unit vectors along the last axis (a zero vector stays zero, as
  torch's F.normalize with its eps 1e-12)."""
  norms = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
  return vectors / jnp.maximum(norms, 1e-12)


class PositionBiasMlp(nn.Module):
  """G of paper Eq. 3: log-spaced offsets [..., 2] -> a bias per head
  (before the sigmoid), [..., heads]; float32."""
  num_heads: int

  @nn.compact
  def __call__(self, coords: jax.Array) -> jax.Array:
    hidden = nn.relu(nn.Dense(CPB_HIDDEN, kernel_init=_DENSE_INIT,
                              name='fc1')(coords))
    return nn.Dense(self.num_heads, use_bias=False, kernel_init=_DENSE_INIT,
                    name='fc2')(hidden)


class WindowCosineAttention(nn.Module):
  """Scaled cosine attention within windows, with the continuous bias.

  Projections as `common.Attention` ([D, heads, head_dim] kernels), but
  the key has no bias (the reference code adds a zero one). The product
  runs through `jax.nn.dot_product_attention` with its scale 1, the
  per-head 1 / tau folded into the unit queries; with attention dropout in
  training, explicitly.
  """
  num_heads: int
  window: Pair
  pretrained_window: Pair = (0, 0)
  dropout: float = 0.0
  dtype: Any = jnp.float32
  implementation: Optional[str] = None

  @nn.compact
  def __call__(self, windows: jax.Array, mask: Optional[jax.Array],
               deterministic: bool) -> jax.Array:
    width = windows.shape[-1]  # windows: [B*nW, N, C]
    head_dim = width // self.num_heads
    project = lambda name, bias: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), use_bias=bias, dtype=self.dtype,
        kernel_init=_DENSE_INIT, name=name)
    query = _unit(project('query', True)(windows))  # [B*nW, N, H, hd]
    key = _unit(project('key', False)(windows))
    value = project('value', True)(windows)
    logit_scale = self.param(
        'logit_scale', nn.initializers.constant(LOGIT_SCALE_INIT),
        (self.num_heads,), jnp.float32)
    scale = jnp.exp(jnp.minimum(logit_scale, MAX_LOGIT_SCALE))  # [H]
    query = query * scale[:, None].astype(self.dtype)

    # The bias of each table row (offset), then of each (query, key) pair;
    # computed once per block, in float32.
    coords = log_spaced_coords(self.window, self.pretrained_window)
    table = PositionBiasMlp(self.num_heads, name='cpb_mlp')(
        jnp.asarray(coords)).reshape(-1, self.num_heads)
    area = self.window[0] * self.window[1]
    index = swin.relative_position_index(self.window).reshape(-1)
    bias = table[index].reshape(area, area, self.num_heads)
    bias = CPB_BIAS_RANGE * jax.nn.sigmoid(bias.transpose(2, 0, 1))[None]
    if mask is not None:  # [B*nW, N, N] of the shifted windows
      bias = bias + mask[:, None]
    bias = bias.astype(self.dtype)  # [1 or B*nW, H, N, N]

    if self.dropout > 0.0 and not deterministic:
      logits = jnp.einsum('bqhd,bkhd->bhqk', query, key) + bias
      probs = jax.nn.softmax(logits.astype(jnp.float32)).astype(self.dtype)
      probs = nn.Dropout(self.dropout)(probs, deterministic)
      attended = jnp.einsum('bhqk,bkhd->bqhd', probs, value)
    else:
      attended = jax.nn.dot_product_attention(
          query, key, value, bias=bias, scale=1.0,
          implementation=self.implementation or common.attention_backend(
              query.dtype, head_dim))  # [B*nW, N, H, hd]
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype,
                           kernel_init=_DENSE_INIT,
                           name='out')(attended)  # [B*nW, N, C]


class SwinV2Block(swin.SwinBlock):
  """Swin V2 block: x + LN((S)W-MSA(x)), then x + LN(MLP(x)) (res-post-
  norm, paper Fig. 1); `swin.SwinBlock`'s fields and carry, and the window
  the position-bias MLP was trained with."""
  pretrained_window: Pair = (0, 0)

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:
    batch, height, width, _ = tokens.shape  # [B, H, W, C]
    shifted = any(self.shift)
    moved = (jnp.roll(tokens, (-self.shift[0], -self.shift[1]), axis=(1, 2))
             if shifted else tokens)
    windows = swin.window_partition(moved, self.window)  # [B*nW, N, C]
    mask = None
    if shifted:
      mask = swin.shifted_window_mask((height, width), self.window,
                                      self.shift)  # [nW, N, N]
      # Windows are batch-major: row b * nW + w takes mask w.
      mask = jnp.tile(jnp.asarray(mask), (batch, 1, 1))
    attended = WindowCosineAttention(
        self.num_heads, self.window, self.pretrained_window,
        dropout=self.attention_dropout, dtype=self.dtype,
        implementation=self.attention_impl, name='attn')(
            windows, mask, self.deterministic)
    attended = swin.window_merge(attended, self.window, (height, width))
    if shifted:
      attended = jnp.roll(attended, self.shift, axis=(1, 2))
    attended = nn.Dropout(self.dropout)(attended, self.deterministic)
    # The post-norms start at zero, so every block starts as the identity
    # (the reference code's _init_respostnorm).
    post_norm = lambda name: nn.LayerNorm(  # noqa: E731
        self.layer_norm_eps, dtype=self.dtype,
        scale_init=nn.initializers.zeros, name=name)
    tokens = tokens + common.drop_path(post_norm('norm1')(attended),
                                       drop_path_rate, self.deterministic,
                                       self)
    transformed = common.Mlp(
        self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
        kernel_init=_DENSE_INIT, bias_init=nn.initializers.zeros,
        name='mlp')(tokens, self.deterministic)
    tokens = tokens + common.drop_path(post_norm('norm2')(transformed),
                                       drop_path_rate, self.deterministic,
                                       self)
    return tokens, None  # [B, H, W, C]


class SwinV2Stage(swin.SwinStage):
  """`swin.SwinStage` with V2 blocks and merging."""
  pretrained_window: Pair = (0, 0)

  block_class = SwinV2Block
  merge_norm_last = True

  def _block_options(self) -> Mapping[str, Any]:
    return {'pretrained_window': self.pretrained_window}


class SwinV2(swin.Swin):
  """Swin Transformer V2 classifier: `swin.Swin`'s fields, call contract
  and aux ('pre_logits', 'stage_features'), and

  Attributes:
    pretrained_window_sizes: per stage, the window side the position-bias
      MLP was trained with (0: the stage's own window, after clamping);
      None: all 0. timm's *_window12to16_192to256 models: (12, 12, 12, 6).
  """
  pretrained_window_sizes: Optional[Sequence[int]] = None

  stage_class = SwinV2Stage

  def __post_init__(self):
    super().__post_init__()
    sizes = self.pretrained_window_sizes
    if sizes is not None and (len(sizes) != len(self.depths)
                              or any(size < 0 for size in sizes)):
      raise ValueError(
          f'SwinV2 pretrained_window_sizes={tuple(sizes)} needs one window '
          f'side >= 0 per stage (0: the stage\'s own window); depths '
          f'{tuple(self.depths)} has {len(self.depths)} stages.')

  def _stage_options(self, stage: int) -> Mapping[str, Any]:
    side = (self.pretrained_window_sizes or (0,) * len(self.depths))[stage]
    return {'pretrained_window': (side, side)}


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: SwinV2, flat_params: Mapping[str, Any]
                          ) -> Pair:
  """`Swin.default_image_size`: no Swin V2 parameter depends on the
  resolution (the position bias is an MLP of the offsets), so a checkpoint
  cannot say it. timm's models are not all at that size (window 16 at 256
  px, 12 at 192 px): `vit_jax.pretrained` reads theirs from the
  checkpoint's config, and `weights.from_timm` takes `image_size`."""
  del flat_params
  side = model.default_image_size
  return (side, side)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'swinv2'
MODEL = SwinV2
# The variants the zoo listing (`python -m vit_jax.models`) shows: window 7,
# for 224 px, as Swin's rows (the paper's 256 px models take
# window_size=8 or 16).
ZOO = ('T/4', 'S/4', 'B/4', 'L/4')
# What `models.features` extracts: Swin's stages (the same module names);
# the final norm fits the last stage only.
FEATURES = dict(layers='stage_{}', norm='final_norm', norm_last_only=True)
