"""ConvMixer.

Trockman and Kolter 2022, "Patches Are All You Need?" (arXiv:2201.09792).

    images [B, H, W, C]
      -> patch embedding (paper Sec. 2, Eq. 1):
           BN(act(conv p x p, stride p))                  [B, h, w, D]
      -> `depth` ConvMixer layers (Eq. 2-3):
           x + BN(act(depthwise conv k x k, 'same'))      [B, h, w, D]
           BN(act(pointwise conv 1 x 1))                  [B, h, w, D]
      -> global average pooling                           [B, D]
      -> head                                             [B, num_classes]

Every convolution is followed by the activation and then BatchNorm ("post-
activation BatchNorm", Sec. 2); only the spatial (depthwise) mixing has a
residual connection. The map keeps the patch grid h x w = H/p x W/p
throughout: no downsampling, no position embedding, so any image size
divisible by p works.

Variants are named "WIDTH/DEPTH" like the paper's ConvMixer-h/d; each
carries the kernel and patch size of the paper's ImageNet-1k models (Sec. 3;
the three whose weights the authors released, timm's `convmixer_*`), which
`kernel_size=` and `patch_size=` override:

    ConvMixer.from_variant('1536/20')                 # k 9, p 7
    ConvMixer.from_variant('1536/20', kernel_size=3)  # a kernel-size ablation

Parameter layout (paths of `params`; the BatchNorm running averages live
at the same paths in `batch_stats`, as 'mean' and 'var'):

    patch_embed/{kernel,bias}, embed_norm/{scale,bias}
    block_{i}/depthwise/{kernel [k, k, 1, D], bias}, block_{i}/norm1
    block_{i}/pointwise/{kernel [1, 1, D, D], bias}, block_{i}/norm2
    head/{kernel,bias}

(`blocks/...` with a leading depth axis when scan=True.)
"""

from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import common

# The paper's ImageNet-1k models (Sec. 3): width h, depth d, kernel k, patch p.
# ConvMixer-768/32 was trained with ReLU (the authors' README and timm's
# `convmixer_768_32`), the others with GELU.
VARIANTS = {
    '1536/20': dict(width=1536, depth=20, kernel_size=9, patch_size=7),
    '768/32': dict(width=768, depth=32, kernel_size=7, patch_size=7,
                   activation='relu'),
    '1024/20': dict(width=1024, depth=20, kernel_size=9, patch_size=14),
}

# 'gelu' is the exact (erf) GELU, as torch.nn.GELU.
ACTIVATIONS = {
    'gelu': lambda x: nn.gelu(x, approximate=False),
    'relu': nn.relu,
}

# PyTorch's default convolution initialisation, which the paper's models
# were trained from: uniform with variance 1 / (3 fan_in).
_CONV_INIT = nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def parse_variant(variant: str) -> Mapping[str, Any]:
  """Decodes "1536/20" into its row of VARIANTS."""
  width, sep, depth = variant.partition('/')
  if not (sep and width.isdigit() and depth.isdigit()):
    raise ValueError(
        f'ConvMixer variant {variant!r} must look like WIDTH/DEPTH, e.g. '
        f'"1536/20"; valid variants: {list(VARIANTS)}')
  if variant not in VARIANTS:
    raise ValueError(
        f'Unknown ConvMixer variant {variant!r}; valid variants: '
        f'{list(VARIANTS)} (other sizes: pass width, depth, kernel_size and '
        f'patch_size without a variant)')
  return VARIANTS[variant]


class ConvMixerBlock(nn.Module):
  """One ConvMixer layer (paper Eq. 2-3), as a (map, drop-path rate) carry.

  Spatial mixing, x + BN(act(DepthwiseConv(x))), then channel mixing,
  BN(act(PointwiseConv(x))). With `with_drop_path`, stochastic depth drops
  the residual branch (the paper uses none); without, no 'dropout' rng is
  needed, also under scan (where the rate is traced).
  """
  kernel_size: int
  activation: str = 'gelu'
  train: bool = False
  with_drop_path: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, features: jax.Array, drop_path_rate) -> Any:
    channels = features.shape[-1]  # [B, h, w, D]
    act = ACTIVATIONS[self.activation]
    mixed = nn.Conv(channels, (self.kernel_size, self.kernel_size),
                    padding='SAME', feature_group_count=channels,
                    dtype=self.dtype, kernel_init=_CONV_INIT,
                    name='depthwise')(features)
    mixed = common.BatchNorm(dtype=self.dtype, name='norm1')(
        act(mixed), self.train)
    if self.with_drop_path:
      mixed = common.drop_path(mixed, drop_path_rate, not self.train, self)
    features = features + mixed
    mixed = nn.Conv(channels, (1, 1), dtype=self.dtype,
                    kernel_init=_CONV_INIT, name='pointwise')(features)
    features = common.BatchNorm(dtype=self.dtype, name='norm2')(
        act(mixed), self.train)
    return features, None  # [B, h, w, D]


class ConvMixer(nn.Module):
  """ConvMixer classifier; same call contract as `ViT`.

  Attributes:
    width: hidden dimension h (the patch embedding's channels).
    depth: number of ConvMixer layers d.
    kernel_size: side k of the depthwise convolutions.
    patch_size: side p of the patches (the stem's kernel and stride).
    num_classes: head outputs; 0 or None for no head (logits are then the
      pooled representation).
    activation: 'gelu' (exact, as torch.nn.GELU; the paper's default) or
      'relu'.
    stochastic_depth: drop-path rate of the last block's residual branch,
      growing linearly from 0 (0 in the paper).
    head_bias_init: constant initial head bias; the head kernel is
      zero-initialised as in ViT.
    dtype: compute dtype (e.g. bfloat16); parameters and BatchNorm
      statistics stay float32.
    scan / remat: scan over blocks / rematerialise blocks.

  `__call__(images, train)` returns (logits, aux): aux['pre_logits'] is the
  globally average-pooled map [B, D] (float32), aux['encoded'] the last
  block's output [B, h, w, D]. BatchNorm normalises with the batch's
  statistics when train=True and updates the running averages when the
  'batch_stats' collection is mutable:

      logits, aux = model.apply(variables, images, train=False)
      (logits, aux), updates = model.apply(
          variables, images, train=True, mutable=['batch_stats'])
  """
  width: int
  depth: int
  kernel_size: int
  patch_size: int
  num_classes: Optional[int] = 1000
  activation: str = 'gelu'
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'ConvMixer':
    """ConvMixer.from_variant('1536/20', num_classes=10, kernel_size=7)."""
    return cls(**{**parse_variant(variant), **kwargs})

  def __post_init__(self):
    super().__post_init__()
    common.check_choice('ConvMixer activation', self.activation,
                        list(ACTIVATIONS))
    for name in ('width', 'depth', 'kernel_size', 'patch_size'):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'ConvMixer {name} must be a positive integer, got '
                         f'{value!r}.')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits' and 'encoded'."""
    act = ACTIVATIONS[self.activation]
    features = common.PatchEmbed(
        self.patch_size, self.width, dtype=self.dtype, kernel_init=_CONV_INIT,
        name='patch_embed')(images)  # [B, h, w, D]
    features = common.BatchNorm(dtype=self.dtype, name='embed_norm')(
        act(features), train)
    block_kwargs = dict(kernel_size=self.kernel_size,
                        activation=self.activation, train=train,
                        with_drop_path=self.stochastic_depth > 0,
                        dtype=self.dtype)
    features = common.run_blocks(ConvMixerBlock, block_kwargs, features,
                                 self.depth, self.stochastic_depth,
                                 self.scan, self.remat)  # [B, h, w, D]
    representation = features.astype(jnp.float32).mean(axis=(1, 2))  # [B, D]
    aux = {'encoded': features, 'pre_logits': representation}
    logits = common.classifier_head(representation, self.num_classes,
                                    self.head_bias_init)  # [B, num_classes]
    return logits, aux


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: ConvMixer, flat_params: Mapping[str, Any]
                          ) -> Tuple[int, int]:
  """224 a side: no ConvMixer parameter depends on the resolution (the
  paper's models are trained at 224 px, Sec. 3)."""
  del model, flat_params
  return (224, 224)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'convmixer'
MODEL = ConvMixer
# The variants the zoo listing (`python -m vit_jax.models`) shows, WIDTH/DEPTH
# with the paper's kernel and patch sizes.
ZOO = ('1536/20', '768/32', '1024/20')
# What `models.features` extracts: each block's map; there is no final norm.
FEATURES = dict(layers='block_{}')
