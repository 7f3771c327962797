"""SegFormer: a hierarchical Mix Transformer encoder and an all-MLP decoder
for semantic segmentation.

Xie et al. 2021, "SegFormer: Simple and Efficient Design for Semantic
Segmentation with Transformers" (arXiv:2105.15203). Conventions (names,
orders, norms' epsilon) follow transformers' SegformerForSemanticSegmentation,
whose checkpoints `vit_jax.weights.segformer` reads and writes.

    images [B, H, W, 3]
      -> stage i (4 of them, Sec. 3.1):
           overlapping patch embedding: conv k x k, stride s, padding k // 2
             (7 / 4 for stage 0, 3 / 2 after), LN        [B, h_i, w_i, C_i]
           `depth_i` blocks:
             x + Attn(LN(x), keys and values from SR(LN(x)))
             x + Mix-FFN(LN(x))
           LN                                              [B, h_i, w_i, C_i]
      -> decoder (Sec. 3.2): each stage's map linearly to D channels,
         bilinearly up to stage 0's grid (H/4, W/4), concatenated (last stage
         first), 1x1 conv without bias, BatchNorm, ReLU   [B, H/4, W/4, D]
      -> head: 1x1 conv                         [B, H/4, W/4, num_classes]

Efficient self-attention (Sec. 3.1): the keys and values come from the
block's input reduced by a convolution of kernel = stride = R (the stage's
spatial-reduction ratio) and a LayerNorm, so attention costs N^2 / R^2.
Mix-FFN: fc1, a 3x3 depthwise convolution, GELU, fc2; the convolution's
zero padding leaks position, so there is no position encoding and any
resolution works. `upsample_logits` brings the logits to the image size as
the paper's loss and metrics take them.

Parameter layout (paths of `params`):

    stage_{i}/patch_embed/{kernel,bias}, stage_{i}/patch_norm
    stage_{i}/block_{j}/{norm1,attn,sr,sr_norm,norm2}    (sr: ratio > 1)
    stage_{i}/block_{j}/attn/{query,key,value,out}/{kernel,bias}
    stage_{i}/block_{j}/mlp/{fc1,dwconv,fc2}/{kernel,bias}
    stage_{i}/norm
    decoder/proj_{i}/{kernel,bias}, decoder/fuse/kernel, decoder/fuse_norm
    head/{kernel,bias}                                   1x1 convolution
    (batch_stats: decoder/fuse_norm/{mean,var})
"""

from typing import Any, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common
from vit_jax.models import swin

Pair = Tuple[int, int]

_FOUR = (1, 2, 5, 8)  # heads of every released size (Table 6)
_SR = (8, 4, 2, 1)
_NARROW = (32, 64, 160, 256)
_WIDE = (64, 128, 320, 512)
# The paper's Table 6 (MiT-B0 .. B5) with the decoder widths of Sec. 4.1.
VARIANTS = {
    'B0': dict(widths=_NARROW, depths=(2, 2, 2, 2), decoder_width=256),
    'B1': dict(widths=_WIDE, depths=(2, 2, 2, 2), decoder_width=256),
    'B2': dict(widths=_WIDE, depths=(3, 4, 6, 3), decoder_width=768),
    'B3': dict(widths=_WIDE, depths=(3, 4, 18, 3), decoder_width=768),
    'B4': dict(widths=_WIDE, depths=(3, 8, 27, 3), decoder_width=768),
    'B5': dict(widths=_WIDE, depths=(3, 6, 40, 3), decoder_width=768),
}

# (kernel, stride) of the overlapping patch embeddings: stage 0's, then
# every later stage's. Padding is kernel // 2.
FIRST_PATCH = (7, 4)
LATER_PATCH = (3, 2)


def patch_geometry(stage: int) -> Tuple[int, int, int]:
  """(kernel, stride, padding) of stage `stage`'s patch embedding."""
  kernel, stride = FIRST_PATCH if stage == 0 else LATER_PATCH
  return kernel, stride, kernel // 2


def conv_output(side: int, kernel: int, stride: int, padding: int) -> int:
  return (side + 2 * padding - kernel) // stride + 1


def stage_grids(image_size: Pair, stages: int) -> Tuple[Pair, ...]:
  """Each stage's map (h_i, w_i) for images of `image_size`."""
  grids, grid = [], tuple(image_size)
  for stage in range(stages):
    kernel, stride, padding = patch_geometry(stage)
    grid = tuple(conv_output(side, kernel, stride, padding) for side in grid)
    grids.append(grid)
  return tuple(grids)


# ----------------------------------------------------------------------------
# Bilinear resizing as torch's interpolate(mode='bilinear',
# align_corners=False) does it.


def _linear_taps(in_size: int, out_size: int
                 ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(low index, high index, weight of the high one) per output position:
  half-pixel centres, source = (out + 0.5) * in / out - 0.5, clamped at 0
  below, the high neighbour clamped to the last row."""
  scale = in_size / out_size
  source = np.maximum((np.arange(out_size) + 0.5) * scale - 0.5, 0.0)
  low = np.minimum(np.floor(source).astype(np.int32), in_size - 1)
  high = np.minimum(low + 1, in_size - 1)
  return low, high, (source - low).astype(np.float32)


def resize_bilinear(maps: jax.Array, size: Pair) -> jax.Array:
  """[B, h, w, C] -> [B, H, W, C], torch's bilinear interpolation with
  align_corners=False (no antialiasing): gathers and a weighted sum per
  axis, no matrix product."""
  for axis, out_size in ((1, size[0]), (2, size[1])):
    in_size = maps.shape[axis]
    if in_size == out_size:
      continue
    low, high, weight = _linear_taps(in_size, out_size)
    shape = [1] * maps.ndim
    shape[axis] = out_size
    weight = jnp.asarray(weight.reshape(shape), maps.dtype)
    maps = (jnp.take(maps, low, axis=axis) * (1 - weight)
            + jnp.take(maps, high, axis=axis) * weight)
  return maps


def upsample_logits(logits: jax.Array, image_size: Pair) -> jax.Array:
  """Logits at 1/4 resolution [B, h, w, K] -> at the images' [B, H, W, K],
  bilinearly (align_corners=False), as the paper's loss and evaluation and
  transformers' loss take them."""
  return resize_bilinear(logits, tuple(image_size))


# ----------------------------------------------------------------------------
# The encoder.


def _conv(features, kernel, stride=1, padding=0, bias=True,
          dtype=jnp.float32, name=None):
  return nn.Conv(features, (kernel, kernel), (stride, stride),
                 padding=[(padding, padding)] * 2, use_bias=bias, dtype=dtype,
                 name=name)


class MixFFN(nn.Module):
  """fc1, 3x3 depthwise convolution, GELU, fc2 (Sec. 3.1, Eq. 3)."""
  hidden_dim: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, maps: jax.Array, deterministic: bool) -> jax.Array:
    width = maps.shape[-1]  # [B, h, w, C]
    hidden = nn.Dense(self.hidden_dim, dtype=self.dtype, name='fc1')(maps)
    hidden = common.DepthwiseConv((3, 3), (1, 1), ((1, 1), (1, 1)),
                                  use_bias=True, dtype=self.dtype,
                                  name='dwconv')(hidden)
    hidden = common.ACTIVATIONS['gelu'](hidden)
    hidden = nn.Dropout(self.dropout)(hidden, deterministic)
    outputs = nn.Dense(width, dtype=self.dtype, name='fc2')(hidden)
    return nn.Dropout(self.dropout)(outputs, deterministic)  # [B, h, w, C]


class MixBlock(nn.Module):
  """Pre-norm block: efficient self-attention, then Mix-FFN; on maps."""
  num_heads: int
  sr_ratio: int
  mlp_dim: int
  drop_path_rate: float = 0.0
  dropout: float = 0.0
  attention_dropout: float = 0.0
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  @nn.compact
  def __call__(self, maps: jax.Array, deterministic: bool) -> jax.Array:
    batch, height, width, channels = maps.shape
    norm = lambda name: nn.LayerNorm(  # noqa: E731
        self.layer_norm_eps, dtype=self.dtype, name=name)
    normed = norm('norm1')(maps)
    reduced = normed
    if self.sr_ratio > 1:
      reduced = _conv(channels, self.sr_ratio, self.sr_ratio,
                      dtype=self.dtype, name='sr')(normed)  # [B, h/R, w/R, C]
      reduced = norm('sr_norm')(reduced)
    queries = normed.reshape(batch, height * width, channels)
    keys_values = reduced.reshape(batch, -1, channels)
    attended = common.Attention(
        self.num_heads, dropout=self.attention_dropout, dtype=self.dtype,
        implementation=self.attention_impl, name='attn')(
            queries, keys_values, deterministic)  # [B, h*w, C]
    attended = nn.Dropout(self.dropout)(attended, deterministic)
    maps = maps + common.drop_path(
        attended.reshape(maps.shape), self.drop_path_rate, deterministic,
        self)
    transformed = MixFFN(self.mlp_dim, self.dropout, self.dtype,
                         name='mlp')(norm('norm2')(maps), deterministic)
    return maps + common.drop_path(transformed, self.drop_path_rate,
                                   deterministic, self)  # [B, h, w, C]


class MixStage(nn.Module):
  """Overlapping patch embedding, the stage's blocks, its LayerNorm.
  `block_kwargs`: `MixBlock`'s fields but the MLP width and drop-path rate
  (its layer_norm_eps and dtype serve the stage's norms too)."""
  stage: int
  width: int
  depth: int
  mlp_ratio: float
  drop_path_rates: Tuple[float, ...]
  block_kwargs: Mapping[str, Any]

  @nn.compact
  def __call__(self, maps: jax.Array, deterministic: bool) -> jax.Array:
    kernel, stride, padding = patch_geometry(self.stage)
    eps, dtype = self.block_kwargs['layer_norm_eps'], self.block_kwargs[
        'dtype']
    maps = _conv(self.width, kernel, stride, padding, dtype=dtype,
                 name='patch_embed')(maps)  # [B, h_i, w_i, C_i]
    maps = nn.LayerNorm(eps, dtype=dtype, name='patch_norm')(maps)
    for index in range(self.depth):
      maps = MixBlock(mlp_dim=int(self.width * self.mlp_ratio),
                      drop_path_rate=self.drop_path_rates[index],
                      **self.block_kwargs,
                      name=f'block_{index}')(maps, deterministic)
    return nn.LayerNorm(eps, dtype=dtype, name='norm')(
        maps)  # [B, h_i, w_i, C_i]


# ----------------------------------------------------------------------------
# The decoder and the model.


class AllMlpDecoder(nn.Module):
  """Sec. 3.2: per-stage linear layers to `width`, upsampled to the first
  stage's grid, concatenated (last stage first, as transformers' fused
  kernel expects its inputs), fused by a 1x1 convolution without bias,
  BatchNorm (PyTorch's conventions) and ReLU."""
  width: int
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, stage_maps: Sequence[jax.Array], train: bool
               ) -> jax.Array:
    grid = stage_maps[0].shape[1:3]  # (H/4, W/4)
    projected = [
        resize_bilinear(nn.Dense(self.width, dtype=self.dtype,
                                 name=f'proj_{index}')(maps), grid)
        for index, maps in enumerate(stage_maps)]  # each [B, H/4, W/4, D]
    fused = _conv(self.width, 1, bias=False, dtype=self.dtype, name='fuse')(
        jnp.concatenate(projected[::-1], axis=-1))
    fused = common.BatchNorm(dtype=self.dtype, name='fuse_norm')(fused, train)
    fused = nn.relu(fused)
    return nn.Dropout(self.dropout)(fused, not train)  # [B, H/4, W/4, D]


class SegFormer(nn.Module):
  """SegFormer for semantic segmentation.

  Attributes:
    widths, depths, num_heads, sr_ratios: per stage (`VARIANTS`:
      `SegFormer.from_variant('B0', num_classes=150)`); sr_ratios are the
      spatial-reduction ratios R_i of the keys and values.
    decoder_width: the decoder's channels D (256 for B0 / B1, 768 after).
    num_classes: the head's outputs (150 for ADE20K, 19 for Cityscapes); 0
      or None: no head, the logits are the decoder's fused features.
    mlp_ratio: Mix-FFN hidden width over block width (4).
    dropout: inside the Mix-FFN and after the attention output
      (transformers' hidden_dropout_prob).
    attention_dropout: on the attention probabilities.
    stochastic_depth: drop-path rate of the last block, growing linearly
      from 0 over all blocks of all stages (0.1 in the paper's training).
    decoder_dropout: before the head (0.1 in the paper's training,
      transformers' classifier_dropout_prob).
    layer_norm_eps: 1e-5, PyTorch's default, which transformers' every
      LayerNorm has (its config's layer_norm_eps is unused).
    dtype: compute dtype; parameters stay float32, logits are float32.
    attention_impl: as for `ViT`.

  `__call__(images, train)` returns (logits [B, ceil(H/4), ceil(W/4),
  num_classes] float32, aux): aux['pre_logits'] is the last stage's map
  averaged [B, C_last] (float32; what few-shot evaluation reads),
  aux['stage_features'] each stage's map [B, h_i, w_i, C_i] and
  aux['decoded'] the fused features [B, H/4, W/4, D]. `upsample_logits`
  brings the logits to the image size. Train-mode applies pass
  mutable=['batch_stats'] (the decoder's BatchNorm).
  """
  widths: Sequence[int]
  depths: Sequence[int]
  num_heads: Sequence[int] = _FOUR
  sr_ratios: Sequence[int] = _SR
  decoder_width: int = 256
  num_classes: Optional[int] = 150
  mlp_ratio: float = 4.0
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  decoder_dropout: float = 0.0
  head_bias_init: float = 0.0
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'SegFormer':
    """SegFormer.from_variant('B2', num_classes=19)."""
    if variant not in VARIANTS:
      raise ValueError(f'Unknown SegFormer variant {variant!r}; valid '
                       f'variants: {list(VARIANTS)}')
    return cls(**{**VARIANTS[variant], **kwargs})

  def __post_init__(self):
    super().__post_init__()
    per_stage = dict(widths=self.widths, depths=self.depths,
                     num_heads=self.num_heads, sr_ratios=self.sr_ratios)
    lengths = {name: len(value) for name, value in per_stage.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f'SegFormer needs one entry per stage in each of '
                       f'widths, depths, num_heads and sr_ratios; got '
                       f'{ {k: tuple(v) for k, v in per_stage.items()} }.')
    for stage, (width, heads, ratio) in enumerate(zip(
        self.widths, self.num_heads, self.sr_ratios)):
      if width % heads:
        raise ValueError(f'SegFormer stage {stage} width {width} is not '
                         f'divisible by its {heads} heads.')
      if ratio < 1:
        raise ValueError(f'SegFormer stage {stage} sr_ratio must be >= 1, '
                         f'got {ratio}.')
    common.check_choice('attention_impl', self.attention_impl,
                        common.ATTENTION_IMPLS)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); see the class docstring."""
    deterministic = not train
    rates = swin.stage_drop_path_rates(self.stochastic_depth, self.depths)
    maps = images
    stage_maps = []
    for stage, (width, depth, heads, ratio) in enumerate(zip(
        self.widths, self.depths, self.num_heads, self.sr_ratios)):
      block_kwargs = dict(
          num_heads=heads, sr_ratio=ratio, dropout=self.dropout,
          attention_dropout=self.attention_dropout,
          layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
          attention_impl=self.attention_impl)
      maps = MixStage(stage, width, depth, self.mlp_ratio, rates[stage],
                      block_kwargs, name=f'stage_{stage}')(
                          maps, deterministic)  # [B, h_i, w_i, C_i]
      stage_maps.append(maps)
    decoded = AllMlpDecoder(self.decoder_width, self.decoder_dropout,
                            self.dtype, name='decoder')(stage_maps, train)
    aux = {'pre_logits': maps.mean(axis=(1, 2)).astype(jnp.float32),
           'stage_features': stage_maps, 'decoded': decoded}
    if not self.num_classes:
      return decoded.astype(jnp.float32), aux
    logits = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype,
                     kernel_init=nn.initializers.zeros,
                     bias_init=nn.initializers.constant(self.head_bias_init),
                     name='head')(decoded)
    return logits.astype(jnp.float32), aux  # [B, H/4, W/4, num_classes]


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: SegFormer, flat_params: Mapping[str, Any]
                          ) -> Pair:
  """SegFormer's parameters fit every resolution (no position encoding):
  the paper's ADE20K crop, 512 a side."""
  del model, flat_params
  return (512, 512)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'segformer'
MODEL = SegFormer
ZOO = tuple(VARIANTS)
# What `models.features` extracts: each stage's map, after the stage's own
# LayerNorm (transformers' hidden_states); there is no final norm.
FEATURES = dict(layers='stage_{}')
