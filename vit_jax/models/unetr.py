"""UNETR: a ViT encoder on 3-D patches, decoded U-Net style.

Hatamizadeh et al. 2022, "UNETR: Transformers for 3D Medical Image
Segmentation" (arXiv:2103.10504), as MONAI builds it
(`monai.networks.nets.UNETR`, 1.6.1), whose checkpoints
`vit_jax.weights.from_monai` reads:

    volumes [B, D, H, W, C]                       (channels last)
      -> patch embedding: conv p^3, stride p      [B, d, h, w, E]
      -> + learned position embedding, no class token
                                                  [B, N, E]
      -> `depth` pre-norm blocks (Sec. 3.1), qkv without bias
           skips z_a, z_b, z_c: the outputs of blocks `skip_blocks`
           (0-based 3, 6, 9: MONAI's hidden_states_out[3], [6], [9];
           the paper's z3, z6, z9 count from 0 too)
      -> final LayerNorm: z12                     [B, N, E]
    decoder (Sec. 3.2), F = feature_size, every conv without bias:
      encoder1: residual block on the volume     [B, D, H, W, F]
      encoder2: z_a -> up -> 2 x (up, res)       [B, D/2, ..., 2F]
      encoder3: z_b -> up -> (up, res)           [B, D/4, ..., 4F]
      encoder4: z_c -> up                        [B, D/8, ..., 8F]
      decoder5: up(z12) ++ encoder4 -> res        [B, D/8, ..., 8F]
      decoder4: up ++ encoder3 -> res             [B, D/4, ..., 4F]
      decoder3: up ++ encoder2 -> res             [B, D/2, ..., 2F]
      decoder2: up ++ encoder1 -> res             [B, D, H, W, F]
      head: conv 1^3 with bias                    [B, D, H, W, classes]

"up" is a transposed convolution, kernel 2 and stride 2 (PyTorch's
ConvTranspose3d with no padding; `BlockUpsample`); "res" a residual
block: conv 3^3, InstanceNorm, LeakyReLU(0.01), conv 3^3, InstanceNorm,
plus the input (through a conv 1^3 and InstanceNorm where the channels
change), LeakyReLU. InstanceNorm has no affine parameters (MONAI's
default 'instance'). The decoder's four 2x upsamplings bring the patch
grid (p = 16) back to the volume: the patch size must be 16 for the
shapes to meet.

Sizes (`variant`) are ViT's table (`vit.VARIANTS`): the paper's model is
B/16. The volume is fixed by `image_size` (the position embedding is
learned on its grid), as MONAI's `img_size`.

Parameter layout (paths of `params`):

    patch_embed/{kernel [p, p, p, C, E], bias}, pos_embedding [1, N, E]
    encoder/block_{i}/{norm1, attn/{query,key,value,out}, norm2,
                       mlp/{fc1,fc2}, cross_attn_norm}
    encoder_norm
    encoder1/{conv1,conv2,conv3}/kernel
    encoder{2,3}/up/kernel, encoder{2,3}/{up_j, res_j/{conv1,conv2}}/kernel
    encoder4/up/kernel
    decoder{5..2}/up/kernel, decoder{5..2}/res/{conv1,conv2,conv3}/kernel
    head/{kernel [1, 1, 1, F, classes], bias}

`cross_attn_norm` is MONAI's `norm_cross_attn`: a LayerNorm its blocks
create and never apply without cross-attention. It is held (and never
applied) here too, so MONAI's checkpoints load and export unchanged and
the count is MONAI's (92,802,478 at the paper's size).
"""

from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import common
from vit_jax.models import vit

Triple = Tuple[int, int, int]

# The paper's decoder: four 2x upsamplings from the patch grid.
UPSAMPLINGS = 4
PATCH_SIZE = 2 ** UPSAMPLINGS
# (name, 0-based index of skip_blocks feeding it, stages after the first
# upsampling, width in feature_size units), MONAI's encoder2..4.
SKIP_ENCODERS = (('encoder2', 0, 2, 2), ('encoder3', 1, 1, 4),
                 ('encoder4', 2, 0, 8))
# (name, width in feature_size units), from the deepest up.
DECODERS = (('decoder5', 8), ('decoder4', 4), ('decoder3', 2),
            ('decoder2', 1))

LEAKY_SLOPE = 0.01  # MONAI's default LeakyReLU ('leakyrelu')
INSTANCE_NORM_EPS = 1e-5  # torch.nn.InstanceNorm3d's

_TRUNC_NORMAL = nn.initializers.truncated_normal(stddev=0.02)
# PyTorch's default convolution initialisation (uniform, variance
# 1 / (3 fan_in)), which MONAI's models start from.
_CONV_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def parse_variant(variant: str) -> Mapping[str, Any]:
  """Decodes "B/16" into ViT's widths and depth and the patch size."""
  size, patch = common.parse_variant(variant, vit.VARIANTS, 'UNETR')
  return {**size, 'patch_size': patch}


def instance_norm(features: jax.Array) -> jax.Array:
  """Each channel of each volume to zero mean, unit variance over the
  voxels (biased variance, as torch's InstanceNorm3d); no affine
  parameters. Statistics in float32."""
  values = features.astype(jnp.float32)  # [B, D, H, W, C]
  mean = values.mean(axis=(1, 2, 3), keepdims=True)
  variance = jnp.square(values - mean).mean(axis=(1, 2, 3), keepdims=True)
  normed = (values - mean) * jax.lax.rsqrt(variance + INSTANCE_NORM_EPS)
  return normed.astype(features.dtype)


def leaky_relu(features: jax.Array) -> jax.Array:
  return jax.nn.leaky_relu(features, LEAKY_SLOPE)


def conv3d(features: int, kernel: int, dtype, name: str) -> nn.Conv:
  """A bias-free 'same' convolution (MONAI's padding (k - 1) / 2)."""
  return nn.Conv(features, (kernel,) * 3, padding=(kernel - 1) // 2,
                 use_bias=False, dtype=dtype, kernel_init=_CONV_INIT,
                 name=name)


class BlockUpsample(nn.Module):
  """PyTorch's ConvTranspose3d(kernel 2, stride 2, padding 0, no bias):
  each voxel becomes a 2x2x2 block [B, d, h, w, C] -> [B, 2d, 2h, 2w, F],
  block offset (a, b, c) being x @ kernel[a, b, c].T. The blocks do not
  overlap, so this is one matrix product and a reshape, which is what it
  runs as: XLA's CPU transposed convolution (a convolution of the input
  dilated with zeros) was about 10x slower for the same map.

  The parameter is nn.ConvTranspose's with `transpose_kernel=True` and
  'VALID' padding, which computes the same map: 'kernel' [2, 2, 2, out,
  in], torch's [in, out, 2, 2, 2] with the channel axes after the spatial
  ones, reversed (weights/unetr.py), same initialiser, same initial values.
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:  # [B, d, h, w, C]
    kernel = self.param('kernel', _CONV_INIT,
                        (2, 2, 2, self.features, inputs.shape[-1]))
    inputs, kernel = nn.dtypes.promote_dtype(inputs, kernel,
                                             dtype=self.dtype)
    batch, depth, height, width = inputs.shape[:4]
    blocks = jnp.einsum('bdhwi,xyzoi->bdxhywzo', inputs, kernel)
    return blocks.reshape(batch, 2 * depth, 2 * height, 2 * width,
                          self.features)


def transposed_conv(features: int, dtype, name: str) -> BlockUpsample:
  return BlockUpsample(features, dtype, name=name)


class ResBlock(nn.Module):
  """MONAI's UnetResBlock (kernel 3, stride 1, InstanceNorm, LeakyReLU):
  act(norm(conv2(act(norm(conv1(x))))) + shortcut(x)), the shortcut a
  conv 1^3 and norm where the channels change, else x."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array) -> jax.Array:  # [B, D, H, W, C]
    out = conv3d(self.features, 3, self.dtype, 'conv1')(inputs)
    out = leaky_relu(instance_norm(out))
    out = instance_norm(conv3d(self.features, 3, self.dtype, 'conv2')(out))
    shortcut = inputs
    if inputs.shape[-1] != self.features:
      shortcut = instance_norm(
          conv3d(self.features, 1, self.dtype, 'conv3')(inputs))
    return leaky_relu(out + shortcut)  # [B, D, H, W, F]


class SkipEncoder(nn.Module):
  """MONAI's UnetrPrUpBlock: tokens on the patch grid upsampled by
  `1 + stages` transposed convolutions, a residual block after each but
  the first."""
  features: int
  stages: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, grid: jax.Array) -> jax.Array:  # [B, d, h, w, E]
    out = transposed_conv(self.features, self.dtype, 'up')(grid)
    for index in range(self.stages):
      out = transposed_conv(self.features, self.dtype, f'up_{index}')(out)
      out = ResBlock(self.features, self.dtype, name=f'res_{index}')(out)
    return out  # [B, 2^(1+stages) d, ..., F]


class DecoderStage(nn.Module):
  """MONAI's UnetrUpBlock: upsample, concatenate the skip (after the
  upsampled channels, as torch.cat((out, skip), dim=1)), residual block."""
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, deep: jax.Array, skip: jax.Array) -> jax.Array:
    out = transposed_conv(self.features, self.dtype, 'up')(deep)
    out = jnp.concatenate([out, skip.astype(out.dtype)], axis=-1)
    return ResBlock(self.features, self.dtype, name='res')(out)


class UnusedNorm(nn.Module):
  """A LayerNorm's parameters that are never applied (MONAI's
  `norm_cross_attn`; see the module docstring)."""

  @nn.compact
  def __call__(self, width: int) -> None:
    self.param('scale', nn.initializers.ones, (width,))
    self.param('bias', nn.initializers.zeros, (width,))


class EncoderBlock(nn.Module):
  """MONAI's TransformerBlock: x + Attn(LN(x)), x + MLP(LN(x)), exact GELU;
  returns the (tokens, carry) pair `common.run_blocks` hands on."""
  mlp_dim: int
  num_heads: int
  layer_norm_eps: float
  qkv_bias: bool
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:  # [B, N, E]
    del drop_path_rate  # MONAI's UNETR has no stochastic depth
    UnusedNorm(name='cross_attn_norm')(tokens.shape[-1])
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm1')(tokens)
    tokens = tokens + common.Attention(
        self.num_heads, dtype=self.dtype, qkv_bias=(self.qkv_bias,) * 3,
        name='attn')(normed, normed, self.deterministic)
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm2')(tokens)
    tokens = tokens + common.Mlp(self.mlp_dim, dropout=self.dropout,
                                 dtype=self.dtype, name='mlp')(
                                     normed, self.deterministic)
    return tokens, None  # [B, N, E]


class Encoder(nn.Module):
  """The blocks `block_i`, unrolled (the skips tap blocks inside); returns
  (the outputs of `skip_blocks`, the last block's output)."""
  depth: int
  mlp_dim: int
  num_heads: int
  layer_norm_eps: float
  qkv_bias: bool
  skip_blocks: Tuple[int, ...]
  dropout: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool):  # [B, N, E]
    skips = []
    for index in range(self.depth):
      tokens, _ = EncoderBlock(
          self.mlp_dim, self.num_heads, self.layer_norm_eps, self.qkv_bias,
          dropout=self.dropout, deterministic=deterministic,
          dtype=self.dtype, name=f'block_{index}')(tokens, 0.0)
      if index in self.skip_blocks:
        skips.append(tokens)
    return skips, tokens  # [B, N, E] each


def _check_positive(name: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ValueError(f'UNETR {name} must be a positive integer, got '
                     f'{value!r}.')


class UNETR(nn.Module):
  """UNETR for volumetric segmentation.

  Attributes:
    image_size: the volume (D, H, W) in voxels (an int: a cube); each side
      divisible by patch_size.
    in_channels: the volume's channels (modalities).
    num_classes: output channels (classes, background included).
    feature_size: F, the decoder's width at full resolution (2F, 4F, 8F
      deeper).
    width, depth, num_heads, mlp_dim: the ViT encoder (E, blocks, heads,
      MLP hidden units).
    patch_size: side p of the cubic patches; 16, the decoder's four 2x
      upsamplings.
    skip_blocks: the 0-based blocks whose outputs feed encoder2..4
      (MONAI: 3, 6, 9); increasing, before the last block.
    layer_norm_eps: the encoder's LayerNorms' epsilon (torch's 1e-5).
    qkv_bias: whether the query, key and value projections have biases
      (MONAI's default: none).
    dropout: dropout rate of the MLPs (MONAI's dropout_rate, 0).
    head_bias_init: constant initial bias of the output convolution, whose
      kernel starts at zero as the classifier families' heads.
    dtype: compute dtype; parameters stay float32.

  `__call__(volumes, train)` returns (logits [B, D, H, W, num_classes],
  aux): aux['pre_logits'] is the mean of the final (normed) encoder
  tokens [B, E] (float32: the representation few-shot evaluation reads),
  aux['encoded'] those tokens [B, N, E].
  """
  image_size: Any = (96, 96, 96)
  in_channels: int = 1
  num_classes: int = 14
  feature_size: int = 16
  width: int = 768
  depth: int = 12
  num_heads: int = 12
  mlp_dim: int = 3072
  patch_size: int = PATCH_SIZE
  skip_blocks: Tuple[int, ...] = (3, 6, 9)
  layer_norm_eps: float = 1e-5
  qkv_bias: bool = False
  dropout: float = 0.0
  head_bias_init: float = 0.0
  dtype: Any = jnp.float32

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'UNETR':
    """UNETR.from_variant('B/16', image_size=(96, 96, 96), num_classes=14)."""
    return cls(**{**parse_variant(variant), **kwargs})

  def __post_init__(self):
    super().__post_init__()
    for name in ('in_channels', 'num_classes', 'feature_size', 'width',
                 'depth', 'num_heads', 'mlp_dim', 'patch_size'):
      _check_positive(name, getattr(self, name))
    if self.patch_size != PATCH_SIZE:
      raise ValueError(
          f'UNETR patch_size must be {PATCH_SIZE} (its decoder upsamples '
          f'the patch grid {UPSAMPLINGS} times by 2), got '
          f'{self.patch_size!r}.')
    volume = self.volume
    if any(side % self.patch_size for side in volume):
      raise ValueError(
          f'UNETR image_size {volume} is not divisible by the patch size '
          f'{self.patch_size} on every side.')
    skips = tuple(self.skip_blocks)
    if (len(skips) != len(SKIP_ENCODERS) or list(skips) != sorted(set(skips))
        or skips[0] < 0 or skips[-1] >= self.depth - 1):
      raise ValueError(
          f'UNETR skip_blocks {skips!r} must be {len(SKIP_ENCODERS)} '
          f'increasing block indices in 0 .. {self.depth - 2} (the last '
          f'block, {self.depth - 1}, feeds decoder5 through the final norm).')

  @property
  def volume(self) -> Triple:
    """image_size as (D, H, W)."""
    size = self.image_size
    if isinstance(size, int) and not isinstance(size, bool):
      return (size, size, size)
    size = tuple(size)
    if len(size) != 3 or not all(
        isinstance(side, int) and not isinstance(side, bool) and side > 0
        for side in size):
      raise ValueError(f'UNETR image_size must be a side or (D, H, W) of '
                       f'positive integers, got {self.image_size!r}.')
    return size

  @property
  def grid(self) -> Triple:
    """The patch grid (d, h, w)."""
    return tuple(side // self.patch_size for side in self.volume)

  @property
  def num_channels(self) -> int:
    """The input channels, under the name weight import reads a family's
    fixed channels by (`weights.core`)."""
    return self.in_channels

  def _check_input(self, volumes: jax.Array) -> None:
    expected = (*self.volume, self.in_channels)
    if volumes.ndim != 5 or tuple(volumes.shape[1:]) != expected:
      raise ValueError(
          f'UNETR takes volumes [B, D, H, W, C] of shape [B, '
          f'{", ".join(map(str, expected))}] (its image_size and '
          f'in_channels), got {list(volumes.shape)}.')

  @nn.compact
  def __call__(self, volumes: jax.Array, train: bool = False):
    """Returns (logits [B, D, H, W, num_classes], aux)."""
    self._check_input(volumes)
    volumes = volumes.astype(self.dtype)
    patches = nn.Conv(self.width, (self.patch_size,) * 3,
                      strides=(self.patch_size,) * 3, padding='VALID',
                      dtype=self.dtype, kernel_init=_CONV_INIT,
                      name='patch_embed')(volumes)  # [B, d, h, w, E]
    batch = patches.shape[0]
    tokens = patches.reshape(batch, -1, self.width)  # [B, N, E], d-major
    posemb = self.param('pos_embedding', _TRUNC_NORMAL,
                        (1, tokens.shape[1], self.width))
    tokens = tokens + posemb.astype(tokens.dtype)

    skips, tokens = Encoder(
        self.depth, self.mlp_dim, self.num_heads, self.layer_norm_eps,
        self.qkv_bias, tuple(self.skip_blocks), dropout=self.dropout,
        dtype=self.dtype, name='encoder')(tokens, not train)
    encoded = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                           name='encoder_norm')(tokens)  # [B, N, E]

    def on_grid(block_tokens):  # [B, N, E] -> [B, d, h, w, E]
      return block_tokens.reshape(batch, *self.grid, self.width)

    features = self.feature_size
    encoded_skips = [ResBlock(features, self.dtype, name='encoder1')(volumes)]
    for name, skip, stages, scale in SKIP_ENCODERS:
      encoded_skips.append(SkipEncoder(scale * features, stages, self.dtype,
                                       name=name)(on_grid(skips[skip])))
    out = on_grid(encoded)
    for (name, scale), skip in zip(DECODERS, reversed(encoded_skips)):
      out = DecoderStage(scale * features, self.dtype, name=name)(out, skip)
    logits = nn.Conv(self.num_classes, (1, 1, 1), dtype=self.dtype,
                     kernel_init=nn.initializers.zeros,
                     bias_init=nn.initializers.constant(self.head_bias_init),
                     name='head')(out)  # [B, D, H, W, num_classes]
    aux = {'encoded': encoded,
           'pre_logits': encoded.astype(jnp.float32).mean(axis=1)}
    return logits, aux


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: UNETR, flat_params: Mapping[str, Any]
                          ) -> Triple:
  """The model's own volume (D, H, W): UNETR's parameters are built for
  one (its position embedding), as MONAI's."""
  del flat_params
  return model.volume


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'unetr'
MODEL = UNETR
# The paper's model (BTCV: 96^3 crops, one channel, 14 classes, F = 16).
ZOO = ('B/16',)
# What `models.features` extracts: each encoder block's tokens on the 3-D
# patch grid [B, d, h, w, E] (no prefix tokens), through encoder_norm with
# norm=True.
FEATURES = dict(layers='encoder/block_{}', grid='patch_embed',
                norm='encoder_norm')
