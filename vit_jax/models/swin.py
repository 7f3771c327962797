"""Swin Transformer.

Liu et al. 2021, "Swin Transformer: Hierarchical Vision Transformer using
Shifted Windows" (arXiv:2103.14030).

    images [B, H, W, 3]
      -> 4x4 patch partition + linear embedding + LayerNorm  [B, H/4, W/4, C]
      -> stage 1: Swin blocks                                [B, H/4, W/4, C]
      -> stage 2: patch merging + Swin blocks                [B, H/8, W/8, 2C]
      -> stage 3: patch merging + Swin blocks                [B, H/16, W/16, 4C]
      -> stage 4: patch merging + Swin blocks                [B, H/32, W/32, 8C]
      -> LayerNorm, global average pooling                   [B, 8C]
      -> head                                                [B, num_classes]

Within a stage, blocks alternate regular windows (W-MSA, even blocks) and
windows shifted by half a window (SW-MSA, odd blocks), paper Sec. 3.2.

Variants are named "SIZE/PATCH" like ViT and Mixer ("T/4", "B/4"); the window
size M is the `window_size` option: 7 for 224 px (the default) and 12 for
384 px, as in the paper's models (Sec. 3.3, 4.1), e.g.

    Swin.from_variant('B/4', window_size=12)  # Swin-B at 384 px

Each stage's feature map must be tiled exactly by its windows; a window
larger than a stage's feature map is clamped to it, without a shift.

Parameter layout (paths of `params`):

    patch_embed/{kernel,bias}, embed_norm/{scale,bias}
    stage_{i}/patch_merging/{norm,reduction}        (stages i >= 1)
    stage_{i}/block_{j}/{norm1,attn,norm2,mlp}
    stage_{i}/block_{j}/relative_position_bias_table  [(2Mh-1)*(2Mw-1), heads]
    final_norm/{scale,bias}, head/{kernel,bias}

The relative position index and the shifted-window masks are constants
computed with numpy from shapes alone; they are not parameters.
"""

from typing import (Any, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common

# Named sizes (paper Sec. 3.3): channel number C of the first stage, blocks
# per stage, attention heads per stage (head width 32 throughout).
VARIANTS = {
    'T': dict(width=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    'S': dict(width=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),
    'B': dict(width=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32)),
    'L': dict(width=192, depths=(2, 2, 18, 2), num_heads=(6, 12, 24, 48)),
}

# Added to the attention logits of token pairs that come from different
# regions of a cyclically shifted map (the reference code's value; finite, so
# no NaN can appear, and exp(-100) vanishes next to any unmasked logit).
MASK_VALUE = -100.0

# Linear layers of the reference code: truncated normal(0.02), zero biases.
_DENSE_INIT = nn.initializers.truncated_normal(stddev=0.02)

Pair = Tuple[int, int]


# ----------------------------------------------------------------------------
# Geometry: per-stage feature maps, windows and shifts (numpy, from shapes).


class StageGeometry(NamedTuple):
  feature_size: Pair  # (H_i, W_i) of the stage's blocks.
  window: Pair  # (Mh, Mw) after clamping to the feature map.
  shift: Pair  # cyclic shift of the odd (SW-MSA) blocks; (0, 0): none.


def stage_geometry(image_size: Pair, patch_size: int, num_stages: int,
                   window_size: int) -> List[StageGeometry]:
  """Feature map, window and shift of every stage; errors for bad sizes.

  The window is clamped, per axis, to a feature map no larger than it, and
  that axis is then not shifted: one window covers it all, as in the
  reference implementation (microsoft/Swin-Transformer) and timm, which clamp
  the same way. The shift is floor(M / 2) (paper Sec. 3.2, "Shifted window
  partitioning in successive blocks", Fig. 2).
  """
  height, width = image_size
  if height % patch_size or width % patch_size:
    raise ValueError(
        f'Swin: image size {height}x{width} is not divisible by the patch '
        f'size {patch_size}.')
  feature = (height // patch_size, width // patch_size)
  geometry = []
  for stage in range(num_stages):
    if stage > 0:
      if feature[0] % 2 or feature[1] % 2:
        raise ValueError(
            f'Swin: stage {stage} merges 2x2 patches of a {feature[0]}x'
            f'{feature[1]} feature map (image {height}x{width}, patch '
            f'{patch_size}), which is not even. Use an image size divisible '
            f'by patch_size * 2**(num_stages - 1) = '
            f'{patch_size * 2 ** (num_stages - 1)}.')
      feature = (feature[0] // 2, feature[1] // 2)
    window = tuple(min(window_size, side) for side in feature)
    shift = tuple(0 if side <= window_size else window_size // 2
                  for side in feature)
    for side, side_window in zip(feature, window):
      if side % side_window:
        raise ValueError(
            f'Swin: stage {stage} feature map {feature[0]}x{feature[1]} '
            f'(image {height}x{width}, patch {patch_size}) is not divisible '
            f'by the window size {window_size}. Use a window that divides '
            f'every stage, e.g. 7 at 224 px, 12 at 384 px.')
    geometry.append(StageGeometry(feature, window, shift))
  return geometry


def stage_drop_path_rates(rate: float, depths: Sequence[int]
                          ) -> List[Tuple[float, ...]]:
  """Each stage's drop-path rates: one linear rule over ALL blocks.

  From 0 at the first block of stage 1 to `rate` at the last block of the
  last stage (Huang et al. 2016, as Swin trains, paper Sec. 4.1).
  """
  rates = common.stochastic_depth_rates(rate, sum(depths))
  starts = np.cumsum([0, *depths])
  return [tuple(float(r) for r in rates[start:end])
          for start, end in zip(starts[:-1], starts[1:])]


def relative_position_index(window: Pair) -> np.ndarray:
  """Row of the bias table for every (query, key) pair of a window.

  Paper Sec. 3.2, "Relative position bias": the offset (dy, dx) between two
  tokens lies in [-Mh+1, Mh-1] x [-Mw+1, Mw-1]; it is stored row-major,
  index = (dy + Mh - 1) * (2Mw - 1) + (dx + Mw - 1), with dy = y_query -
  y_key (the layout of the reference code, so its tables load unchanged).
  """
  window_h, window_w = window
  ys, xs = np.meshgrid(np.arange(window_h), np.arange(window_w),
                       indexing='ij')
  ys, xs = ys.reshape(-1), xs.reshape(-1)  # [Mh*Mw], row-major tokens.
  dy = ys[:, None] - ys[None, :] + window_h - 1  # [N, N] in [0, 2Mh-2]
  dx = xs[:, None] - xs[None, :] + window_w - 1  # [N, N] in [0, 2Mw-2]
  return (dy * (2 * window_w - 1) + dx).astype(np.int32)  # [N, N]


def shifted_window_mask(feature_size: Pair, window: Pair,
                        shift: Pair) -> np.ndarray:
  """Additive attention mask of the shifted windows, [num_windows, N, N].

  Paper Sec. 3.2, "Efficient batch computation for shifted configuration"
  (Fig. 4): after the cyclic shift, a window at the border holds tokens from
  up to four sub-windows that were not adjacent in the image; along each
  axis the map splits into [0, S - M), [S - M, S - shift), [S - shift, S).
  Tokens from different regions get MASK_VALUE, the rest 0.
  """
  region_ids = []
  for side, side_window, side_shift in zip(feature_size, window, shift):
    ids = np.zeros(side, np.int32)
    if side_shift:
      ids[side - side_window:side - side_shift] = 1
      ids[side - side_shift:] = 2
    region_ids.append(ids)
  regions = region_ids[0][:, None] * 3 + region_ids[1][None, :]  # [H, W]
  windows = window_partition(regions[None, :, :, None], window)  # [nW, N, 1]
  windows = windows[..., 0]  # [nW, N]
  different = windows[:, :, None] != windows[:, None, :]  # [nW, N, N]
  return np.where(different, MASK_VALUE, 0.0).astype(np.float32)


def window_partition(feature_map, window: Pair):
  """[B, H, W, C] -> [B * num_windows, Mh * Mw, C], windows row-major."""
  batch, height, width, channels = feature_map.shape
  window_h, window_w = window
  windows = feature_map.reshape(batch, height // window_h, window_h,
                                width // window_w, window_w, channels)
  windows = windows.transpose(0, 1, 3, 2, 4, 5)  # [B, H/Mh, W/Mw, Mh, Mw, C]
  return windows.reshape(-1, window_h * window_w, channels)


def window_merge(windows: jax.Array, window: Pair,
                 feature_size: Pair) -> jax.Array:
  """Inverse of `window_partition`: [B * nW, Mh * Mw, C] -> [B, H, W, C]."""
  height, width = feature_size
  window_h, window_w = window
  channels = windows.shape[-1]
  feature_map = windows.reshape(-1, height // window_h, width // window_w,
                                window_h, window_w, channels)
  feature_map = feature_map.transpose(0, 1, 3, 2, 4, 5)
  return feature_map.reshape(-1, height, width, channels)


# ----------------------------------------------------------------------------
# Layers.


class SwinBlock(nn.Module):
  """Swin Transformer block (paper Sec. 3.1, Fig. 3b; Eq. 3).

  x + (S)W-MSA(LN(x)), then x + MLP(LN(x)). With a non-zero `shift` the
  normalised map is cyclically shifted by -shift (jnp.roll), attended in
  windows with the region mask, and shifted back. Takes and returns a
  (tokens, drop-path rate) carry like the ViT blocks.
  """
  num_heads: int
  window: Pair
  shift: Pair
  mlp_dim: int
  dropout: float = 0.0
  attention_dropout: float = 0.0
  deterministic: bool = True
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:
    batch, height, width, _ = tokens.shape  # [B, H, W, C]
    window_area = self.window[0] * self.window[1]
    shifted = any(self.shift)

    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm1')(tokens)
    if shifted:
      normed = jnp.roll(normed, (-self.shift[0], -self.shift[1]),
                        axis=(1, 2))
    windows = window_partition(normed, self.window)  # [B*nW, N, C]

    # Learned relative position bias B (paper Eq. 4): one table per block.
    table = self.param(
        'relative_position_bias_table', _DENSE_INIT,
        ((2 * self.window[0] - 1) * (2 * self.window[1] - 1), self.num_heads),
        jnp.float32)
    index = relative_position_index(self.window).reshape(-1)
    bias = table[index].reshape(window_area, window_area, self.num_heads)
    bias = bias.transpose(2, 0, 1)[None]  # [1, heads, N, N]
    if shifted:
      mask = shifted_window_mask((height, width), self.window, self.shift)
      bias = bias + jnp.asarray(mask)[:, None]  # [nW, heads, N, N]
      # Windows are batch-major in `windows`: row b * nW + w uses mask w.
      bias = jnp.tile(bias, (batch, 1, 1, 1))  # [B*nW, heads, N, N]
    attended = common.Attention(
        self.num_heads, dropout=self.attention_dropout, dtype=self.dtype,
        implementation=self.attention_impl, name='attn')(
            windows, windows, self.deterministic,
            bias=bias.astype(self.dtype))  # [B*nW, N, C]
    attended = window_merge(attended, self.window, (height, width))
    if shifted:
      attended = jnp.roll(attended, self.shift, axis=(1, 2))
    attended = nn.Dropout(self.dropout)(attended, self.deterministic)
    tokens = tokens + common.drop_path(attended, drop_path_rate,
                                       self.deterministic, self)

    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm2')(tokens)
    transformed = common.Mlp(
        self.mlp_dim, dropout=self.dropout, dtype=self.dtype,
        kernel_init=_DENSE_INIT, bias_init=nn.initializers.zeros,
        name='mlp')(normed, self.deterministic)
    tokens = tokens + common.drop_path(transformed, drop_path_rate,
                                       self.deterministic, self)
    return tokens, None  # [B, H, W, C]


class PatchMerging(nn.Module):
  """2x2 neighbouring patches concatenated, LayerNorm, linear 4C -> 2C.

  Paper Sec. 3.1, "Stage 2". The 4C features are ordered (row 0, col 0),
  (row 1, col 0), (row 0, col 1), (row 1, col 1) of each 2x2 group, the
  reference code's order, so its `reduction` weights load unchanged.
  """
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  # Swin V2 (`vit_jax.models.swinv2`) normalises the reduced 2C features
  # instead of the concatenated 4C ones (its reference code and timm).
  norm_last: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:  # [B, H, W, C]
    batch, height, width, channels = tokens.shape
    groups = tokens.reshape(batch, height // 2, 2, width // 2, 2, channels)
    # [B, H/2, W/2, col offset, row offset, C]
    groups = groups.transpose(0, 1, 3, 4, 2, 5)
    merged = groups.reshape(batch, height // 2, width // 2, 4 * channels)
    norm = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name='norm')
    if not self.norm_last:
      merged = norm(merged)
    reduced = nn.Dense(2 * channels, use_bias=False, dtype=self.dtype,
                       kernel_init=_DENSE_INIT,
                       name='reduction')(merged)  # [B, H/2, W/2, 2C]
    return norm(reduced) if self.norm_last else reduced


class SwinStage(nn.Module):
  """Optional patch merging, then `depth` blocks alternating W-MSA / SW-MSA.

  `drop_path_rates` holds this stage's slice of the linear rule over all
  blocks of the network.
  """
  depth: int
  num_heads: int
  geometry: StageGeometry
  mlp_ratio: float
  downsample: bool
  drop_path_rates: Tuple[float, ...]
  dropout: float = 0.0
  attention_dropout: float = 0.0
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  remat: bool = False
  attention_impl: Optional[str] = None

  # What a subclass changes (Swin V2, `vit_jax.models.swinv2`): the block
  # class and its further fields, and the merging's norm (class attributes,
  # not fields).
  block_class = SwinBlock
  merge_norm_last = False

  def _block_options(self) -> Mapping[str, Any]:
    return {}

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool) -> jax.Array:
    if self.downsample:
      tokens = PatchMerging(self.layer_norm_eps, self.dtype,
                            norm_last=self.merge_norm_last,
                            name='patch_merging')(tokens)
    channels = tokens.shape[-1]  # [B, H_i, W_i, C_i]
    # The drop-path rate (argument 2, counting `self`) stays a Python float.
    block_cls = (nn.remat(self.block_class, static_argnums=(2,))
                 if self.remat else self.block_class)
    for index in range(self.depth):
      shift = self.geometry.shift if index % 2 else (0, 0)
      tokens, _ = block_cls(
          num_heads=self.num_heads, window=self.geometry.window, shift=shift,
          mlp_dim=int(channels * self.mlp_ratio), dropout=self.dropout,
          attention_dropout=self.attention_dropout,
          deterministic=deterministic, layer_norm_eps=self.layer_norm_eps,
          dtype=self.dtype, attention_impl=self.attention_impl,
          **self._block_options(),
          name=f'block_{index}')(tokens, self.drop_path_rates[index])
    return tokens  # [B, H_i, W_i, C_i]


class Swin(nn.Module):
  """Swin Transformer classifier; same call contract as `ViT`.

  Attributes:
    patch_size: side of the patch partition (4 in the paper).
    width: channel number C of the first stage; stage i has C * 2**i.
    depths, num_heads: blocks and attention heads per stage.
    window_size: window side M (7 for 224 px, 12 for 384 px). Every stage's
      feature map must be divisible by it, or no larger than it (the window
      is then clamped to the feature map, without a shift).
    mlp_ratio: MLP hidden width over block width (4, paper Sec. 3.3).
    num_classes: head outputs; 0 or None for no head (logits are then the
      pooled representation).
    dropout: after the patch embedding, inside the MLP and after the
      attention output (the reference code's drop_rate).
    attention_dropout: on the attention probabilities.
    stochastic_depth: drop-path rate of the last block, growing linearly
      from 0 over all blocks of all stages (0.2 / 0.3 / 0.5 for T / S / B
      on ImageNet-1K, paper Sec. 4.1).
    head_bias_init: constant initial head bias; the head kernel is
      zero-initialised as in ViT.
    layer_norm_eps: 1e-5, PyTorch's default used by the reference code.
    dtype: compute dtype (e.g. bfloat16); parameters stay float32.
    remat: rematerialise each block's activations in the backward pass.
    attention_impl: passed to `jax.nn.dot_product_attention` (None, 'xla',
      'cudnn').

  `__call__` returns (logits, aux): aux['pre_logits'] is the representation
  after the final norm and global average pooling [B, 8C] (float32), and
  aux['stage_features'] the list of each stage's output [B, H_i, W_i, C_i]
  (compute dtype; the last one before the final norm).
  """
  patch_size: int
  width: int
  depths: Sequence[int]
  num_heads: Sequence[int]
  window_size: int = 7
  mlp_ratio: float = 4.0
  num_classes: Optional[int] = 1000
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  layer_norm_eps: float = 1e-5
  dtype: Any = jnp.float32
  remat: bool = False
  attention_impl: Optional[str] = None

  # What a subclass changes (Swin V2): the stage class and its further
  # fields per stage (a class attribute and a method, not fields).
  stage_class = SwinStage

  def _stage_options(self, stage: int) -> Mapping[str, Any]:
    del stage
    return {}

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'Swin':
    """Swin.from_variant('T/4'); Swin.from_variant('B/4', window_size=12)."""
    size, patch_size = common.parse_variant(variant, VARIANTS, 'Swin')
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  def __post_init__(self):
    super().__post_init__()
    if len(self.depths) != len(self.num_heads):
      raise ValueError(
          f'Swin needs one head count per stage: depths {tuple(self.depths)} '
          f'has {len(self.depths)} stages, num_heads '
          f'{tuple(self.num_heads)} has {len(self.num_heads)}.')
    for stage, heads in enumerate(self.num_heads):
      stage_width = self.width * 2 ** stage
      if stage_width % heads:
        raise ValueError(
            f'Swin stage {stage} width {stage_width} is not divisible by its '
            f'{heads} heads.')
    if self.window_size < 1:
      raise ValueError(f'Swin window_size must be positive, got '
                       f'{self.window_size}.')
    common.check_choice('attention_impl', self.attention_impl,
                        common.ATTENTION_IMPLS)

  @property
  def default_image_size(self) -> int:
    """The resolution the window was chosen for: the last stage is one
    window, patch * M * 2**(stages - 1) (224 for M = 7, 384 for M = 12)."""
    return self.patch_size * self.window_size * 2 ** (len(self.depths) - 1)

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits' and 'stage_features'."""
    deterministic = not train
    geometry = stage_geometry(images.shape[1:3], self.patch_size,
                              len(self.depths), self.window_size)
    tokens = common.PatchEmbed(self.patch_size, self.width, dtype=self.dtype,
                               name='patch_embed')(images)  # [B, H/p, W/p, C]
    tokens = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='embed_norm')(tokens)
    tokens = nn.Dropout(self.dropout)(tokens, deterministic)

    rates = stage_drop_path_rates(self.stochastic_depth, self.depths)
    stage_features = []
    for stage, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
      tokens = self.stage_class(
          depth=depth, num_heads=heads, geometry=geometry[stage],
          mlp_ratio=self.mlp_ratio, downsample=stage > 0,
          drop_path_rates=rates[stage],
          dropout=self.dropout, attention_dropout=self.attention_dropout,
          layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
          remat=self.remat, attention_impl=self.attention_impl,
          **self._stage_options(stage),
          name=f'stage_{stage}')(tokens, deterministic)  # [B, H_i, W_i, C_i]
      stage_features.append(tokens)

    tokens = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='final_norm')(tokens)
    representation = tokens.mean(axis=(1, 2)).astype(jnp.float32)  # [B, 8C]
    aux = {'pre_logits': representation, 'stage_features': stage_features}
    logits = common.classifier_head(representation, self.num_classes,
                                    self.head_bias_init)  # [B, num_classes]
    return logits, aux


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: Swin, flat_params: Mapping[str, Any]
                          ) -> Pair:
  """The resolution a Swin checkpoint's last stage is one window at.

  Swin's parameter shapes fit every resolution its windows tile, except
  where a window was clamped to a smaller feature map: the last stage's
  bias table, (2w - 1)**2 rows, tells its window w. That stage's map is w
  a side when w is below the model's window size, and the model's own
  resolution (`Swin.default_image_size`, 224 for M = 7) is taken otherwise.

  Args:
    model: the Swin the params are for.
    flat_params: '/'-joined paths to arrays.

  Returns:
    (height, width).
  """
  last_stage = len(model.depths) - 1
  table = flat_params.get(
      f'stage_{last_stage}/block_0/relative_position_bias_table')
  side = model.default_image_size
  if table is not None:
    table_window = (int(round(np.sqrt(table.shape[0]))) + 1) // 2
    side = min(side, model.patch_size * table_window * 2 ** last_stage)
  return (side, side)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'swin'
MODEL = Swin
# The variants the zoo listing (`python -m vit_jax.models`) shows: window 7,
# for 224 px (the 384 px models take window_size=12; the listing runs every
# row at one --resolution).
ZOO = ('T/4', 'S/4', 'B/4', 'L/4')
# What `models.features` extracts: each stage's map; the final norm fits
# the last stage only.
FEATURES = dict(layers='stage_{}', norm='final_norm', norm_last_only=True)
