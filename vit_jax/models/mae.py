"""Masked Autoencoder (MAE) pre-training.

He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners". A ViT
encoder sees only a random 25% of the patches; a small transformer decoder
gets the encoded visible patches back in place among learned mask tokens and
predicts the pixels of the removed ones (Sec. 3):

    images [B, H, W, C]
      -> random masking (argsort of uniform noise)   keep L = N(1 - ratio)
      -> patch embedding of the visible patches      [B, L, D]
      -> + sin-cos position embedding, class token   [B, 1+L, D]
      -> ViT encoder blocks, LayerNorm               [B, 1+L, D]
      -> linear to the decoder width, mask tokens
         unshuffled into place, + sin-cos posemb     [B, 1+N, Dd]
      -> decoder blocks, LayerNorm, linear           [B, N, p*p*C]
      -> MSE on the removed patches only             scalar

The encoder's parameters (`patch_embed`, `cls_token`, `encoder`,
`encoder_norm`) are named exactly as those of
`ViT(pool_type='cls', posemb='sincos2d')`: `encoder_params` cuts them out
for fine-tuning or linear probing with `get_model('vit', ...)`.

Patches are flattened as (row in patch, column in patch, channel), row-major,
the order of the reference code, so predictions compare patch for patch.
"""

from typing import Any, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common
from vit_jax.models import vit

# The parameters of the encoder: what `vit.ViT(pool_type='cls',
# posemb='sincos2d', num_classes=0)` of the same size holds.
ENCODER_PARAM_NAMES = ('patch_embed', 'cls_token', 'encoder', 'encoder_norm')

# Masking noise when evaluating without a 'mask' rng or explicit noise: the
# same masks on every call, so reconstruction losses compare across steps.
EVAL_MASK_SEED = 0

# The reference initialises the patch projection like a linear layer on the
# flattened patch: Xavier-uniform over fan_in = p*p*C, fan_out = D.
PATCH_KERNEL_INIT = nn.initializers.variance_scaling(
    1.0, 'fan_avg', 'uniform', in_axis=(0, 1, 2), out_axis=-1)
# Class and mask tokens: normal(0.02) (the reference's timm-style init).
TOKEN_INIT = nn.initializers.normal(stddev=0.02)


# ----------------------------------------------------------------------------
# Patches, masking and the loss: plain functions, usable outside the module.


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/p * W/p, p*p*C], each patch flattened (p, p, C)."""
  batch, height, width, channels = images.shape
  p = patch_size
  if height % p or width % p:
    raise ValueError(f'Image size {height}x{width} is not divisible by the '
                     f'patch size {p}.')
  grid_h, grid_w = height // p, width // p
  patches = images.reshape(batch, grid_h, p, grid_w, p, channels)
  patches = patches.transpose(0, 1, 3, 2, 4, 5)  # [B, h, w, p, p, C]
  return patches.reshape(batch, grid_h * grid_w, p * p * channels)


def unpatchify(patches: jax.Array, patch_size: int,
               grid_shape: Optional[Tuple[int, int]] = None) -> jax.Array:
  """Inverse of `patchify`: [B, N, p*p*C] -> [B, h*p, w*p, C].

  `grid_shape` is (h, w) in patches; None for a square grid.
  """
  batch, num_patches, patch_dim = patches.shape
  p = patch_size
  if patch_dim % (p * p):
    raise ValueError(f'Patch vectors of length {patch_dim} do not hold '
                     f'{p}x{p} patches of whole channels.')
  channels = patch_dim // (p * p)
  if grid_shape is None:
    side = int(round(np.sqrt(num_patches)))
    if side * side != num_patches:
      raise ValueError(f'{num_patches} patches are not a square grid; pass '
                       f'grid_shape=(rows, columns).')
    grid_shape = (side, side)
  grid_h, grid_w = grid_shape
  if grid_h * grid_w != num_patches:
    raise ValueError(f'grid_shape {tuple(grid_shape)} does not hold '
                     f'{num_patches} patches.')
  images = patches.reshape(batch, grid_h, grid_w, p, p, channels)
  images = images.transpose(0, 1, 3, 2, 4, 5)  # [B, h, p, w, p, C]
  return images.reshape(batch, grid_h * p, grid_w * p, channels)


def num_visible(num_patches: int, mask_ratio: float) -> int:
  """Patches the encoder sees: int(N * (1 - mask_ratio)), as the reference."""
  return int(num_patches * (1 - mask_ratio))


def random_masking(noise: jax.Array, len_keep: int
                   ) -> Tuple[jax.Array, jax.Array, jax.Array]:
  """Per-sample random masking by sorting noise.

  MAE Sec. 3, "Simple implementation": shuffle the patches randomly (here:
  argsort of the noise), keep the first `len_keep`, and undo the shuffle
  for the decoder with the inverse permutation. The `len_keep` patches with
  the smallest noise are kept.

  Args:
    noise: [B, N] any real numbers; uniform noise gives uniform masks.
    len_keep: patches to keep per sample.

  Returns:
    ids_keep [B, L]: indices of the kept patches, in noise order;
    ids_restore [B, N]: the inverse permutation of the noise order (position
      of each patch in the shuffled sequence);
    mask [B, N] float32: 0 for kept patches, 1 for removed ones.
  """
  ids_shuffle = jnp.argsort(noise, axis=1)  # [B, N], smallest noise first
  ids_restore = jnp.argsort(ids_shuffle, axis=1)  # [B, N]
  ids_keep = ids_shuffle[:, :len_keep]  # [B, L]
  mask = (ids_restore >= len_keep).astype(jnp.float32)  # [B, N]
  return ids_keep, ids_restore, mask


def sincos_posemb(grid_shape: Tuple[int, int], width: int) -> np.ndarray:
  """[1 + h*w, width]: a zero row for the class token, then the 2-D sin-cos
  table of `common.posemb_sincos_2d` (MAE App. A.1: sine-cosine position
  embeddings on both encoder and decoder inputs)."""
  return common.posemb_sincos_2d(grid_shape[0], grid_shape[1], width,
                                 num_prefix_tokens=1)


def reconstruction_loss(pred: jax.Array, target_patches: jax.Array,
                        mask: jax.Array, norm_pix_loss: bool) -> jax.Array:
  """Mean squared error over the removed patches only (MAE Sec. 3,
  "Reconstruction target": as in BERT, no loss on visible patches).

  With `norm_pix_loss` each target patch is normalised by its own mean and
  standard deviation (Sec. 3, "Reconstruction target"), with the reference's
  1e-6 on the variance and its unbiased (N - 1) variance estimate.

  Args:
    pred, target_patches: [B, N, p*p*C].
    mask: [B, N], 1 for removed patches.

  Returns:
    a float32 scalar; 0 when no patch is removed.
  """
  pred = pred.astype(jnp.float32)
  target = target_patches.astype(jnp.float32)
  if norm_pix_loss:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + 1e-6)
  per_patch = jnp.mean((pred - target) ** 2, axis=-1)  # [B, N]
  return jnp.sum(per_patch * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def reconstruction_images(images: jax.Array, pred: jax.Array,
                          mask: jax.Array, patch_size: int,
                          norm_pix_loss: bool = False,
                          fill_value: float = 0.0) -> Dict[str, np.ndarray]:
  """Images for reconstruction plots, all [B, H, W, C] numpy arrays.

  Args:
    images: [B, H, W, C] the model's input.
    pred, mask: `aux['pred']` [B, N, p*p*C] and `aux['mask']` [B, N].
    patch_size: the model's.
    norm_pix_loss: whether `pred` is in per-patch normalised units; if so it
      is mapped back with each true patch's mean and standard deviation
      (for display only: this uses the removed patches' statistics).
    fill_value: value of the removed patches in the 'masked' image.

  Returns:
    'masked': the input with removed patches set to `fill_value`;
    'reconstruction': the prediction for every patch;
    'pasted': the prediction on removed patches, the input on visible ones.
  """
  images = jnp.asarray(images, jnp.float32)
  grid_shape = (images.shape[1] // patch_size, images.shape[2] // patch_size)
  target = patchify(images, patch_size)  # [B, N, p*p*C]
  pred = jnp.asarray(pred, jnp.float32)
  if norm_pix_loss:
    mean = target.mean(axis=-1, keepdims=True)
    var = target.var(axis=-1, keepdims=True, ddof=1)
    pred = pred * jnp.sqrt(var + 1e-6) + mean
  removed = jnp.asarray(mask, jnp.float32)[..., None]  # [B, N, 1]
  masked = target * (1 - removed) + fill_value * removed
  pasted = target * (1 - removed) + pred * removed
  to_image = lambda patches: np.asarray(  # noqa: E731
      unpatchify(patches, patch_size, grid_shape))
  return {'masked': to_image(masked), 'reconstruction': to_image(pred),
          'pasted': to_image(pasted)}


def encoder_params(mae_params: Mapping[str, Any]) -> Dict[str, Any]:
  """The ViT-loadable part of MAE params.

  The result is the full parameter tree of `get_model('vit', variant,
  pool_type='cls', posemb='sincos2d', num_classes=0)` for the MAE's
  encoder size (same scan layout; `encoder_as_vit` builds that ViT); add a
  head for fine-tuning.
  """
  missing = [name for name in ENCODER_PARAM_NAMES if name not in mae_params]
  if missing:
    raise ValueError(f'Not MAE params: missing {missing} (have '
                     f'{sorted(mae_params)}).')
  return {name: mae_params[name] for name in ENCODER_PARAM_NAMES}


def encoder_as_vit(model: 'MAE', **kwargs) -> vit.ViT:
  """The `vit.ViT` that `encoder_params` load into, e.g. for fine-tuning:
  `encoder_as_vit(model, num_classes=1000)`. By default num_classes=0: the
  class-token representation, as the MAE encoder computes it."""
  settings = dict(
      patch_size=model.patch_size, width=model.width, depth=model.depth,
      mlp_dim=model.mlp_dim, num_heads=model.num_heads, num_classes=0,
      pool_type='cls', posemb='sincos2d', layer_norm_eps=model.layer_norm_eps,
      dtype=model.dtype, scan=model.scan, remat=model.remat,
      attention_impl=model.attention_impl)
  return vit.ViT(**{**settings, **kwargs})


# ----------------------------------------------------------------------------
# The model.


class MAE(nn.Module):
  """Masked autoencoder: ViT encoder on visible patches, light decoder.

  `loss, aux = model.apply({'params': p}, images, train=True,
  rngs={'mask': key})`; aux holds 'pred' [B, N, p*p*C] (float32), 'mask'
  [B, N] (1 = removed) and 'ids_restore' [B, N]. Pass `noise` [B, N] to fix
  the masking (the patches with the smallest noise are kept). Without a
  'mask' rng or noise, evaluation (train=False) masks with the fixed seed
  EVAL_MASK_SEED; training raises an error.

  Attributes:
    patch_size, width, depth, mlp_dim, num_heads: the encoder, a ViT size
      (see `MAE.from_variant` and `vit.VARIANTS`).
    decoder_width, decoder_depth, decoder_num_heads: the decoder; the paper's
      default is 512 wide, 8 blocks (Table 1a-b; 16 heads as in the
      reference code). decoder_mlp_dim: None for 4 * decoder_width.
    mask_ratio: fraction of patches removed, in [0, 1); 0.75 (Sec. 4.1,
      Fig. 5).
    norm_pix_loss: per-patch normalised pixel targets (Sec. 3,
      "Reconstruction target"; Table 1d).
    num_channels: image channels (the size of the pixel predictions).
    dropout, attention_dropout, stochastic_depth: encoder regularisation,
      off as in MAE pre-training.
    layer_norm_eps: all LayerNorms (1e-6 as in the reference).
    dtype: compute dtype; parameters and the loss stay float32.
    scan / remat / attention_impl: as for `vit.ViT`, for encoder and decoder.
  """
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  decoder_width: int = 512
  decoder_depth: int = 8
  decoder_num_heads: int = 16
  decoder_mlp_dim: Optional[int] = None
  mask_ratio: float = 0.75
  norm_pix_loss: bool = False
  num_channels: int = 3
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False
  attention_impl: Optional[str] = None

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'MAE':
    """MAE.from_variant('B/16', norm_pix_loss=True): a ViT-B/16 encoder."""
    size, patch_size = common.parse_variant(variant, vit.VARIANTS, 'MAE')
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  def __post_init__(self):
    super().__post_init__()
    if not 0.0 <= self.mask_ratio < 1.0:
      raise ValueError(f'mask_ratio {self.mask_ratio!r} is outside [0, 1).')
    common.check_choice('attention_impl', self.attention_impl,
                        common.ATTENTION_IMPLS)

  def setup(self):
    self.patch_embed = common.PatchEmbed(
        self.patch_size, self.width, dtype=self.dtype,
        kernel_init=PATCH_KERNEL_INIT)
    self.cls_token = self.param('cls_token', TOKEN_INIT, (1, 1, self.width),
                                jnp.float32)
    self.encoder = vit.Encoder(
        depth=self.depth, mlp_dim=self.mlp_dim, num_heads=self.num_heads,
        dropout=self.dropout, attention_dropout=self.attention_dropout,
        stochastic_depth=self.stochastic_depth,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype, scan=self.scan,
        remat=self.remat, attention_impl=self.attention_impl)
    self.encoder_norm = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype)
    self.embed_dropout = nn.Dropout(self.dropout)

    self.decoder_embed = nn.Dense(
        self.decoder_width, dtype=self.dtype,
        kernel_init=common.DENSE_KERNEL_INIT)
    self.mask_token = self.param('mask_token', TOKEN_INIT,
                                 (1, 1, self.decoder_width), jnp.float32)
    self.decoder = vit.Encoder(
        depth=self.decoder_depth,
        mlp_dim=self.decoder_mlp_dim or 4 * self.decoder_width,
        num_heads=self.decoder_num_heads, layer_norm_eps=self.layer_norm_eps,
        dtype=self.dtype, scan=self.scan, remat=self.remat,
        attention_impl=self.attention_impl)
    self.decoder_norm = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype)
    self.decoder_pred = nn.Dense(
        self.patch_size ** 2 * self.num_channels, dtype=self.dtype,
        kernel_init=common.DENSE_KERNEL_INIT)

  def _grid_shape(self, images: jax.Array) -> Tuple[int, int]:
    _, height, width, channels = images.shape
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(f'Image size {height}x{width} is not divisible by the '
                       f'patch size {p}.')
    if channels != self.num_channels:
      raise ValueError(f'Images have {channels} channels, the model '
                       f'num_channels={self.num_channels}.')
    return height // p, width // p

  def _masking_noise(self, batch: int, num_patches: int,
                     noise: Optional[jax.Array], train: bool) -> jax.Array:
    if noise is not None:
      if noise.shape != (batch, num_patches):
        raise ValueError(f'noise has shape {noise.shape}; expected '
                         f'(batch, patches) = {(batch, num_patches)}.')
      return noise
    if self.has_rng('mask'):
      key = self.make_rng('mask')
    elif not train or self.is_initializing():
      key = jax.random.PRNGKey(EVAL_MASK_SEED)
    else:
      raise ValueError("MAE training needs random masks: pass rngs={'mask': "
                       "key} (or noise=[batch, patches]) to apply.")
    return jax.random.uniform(key, (batch, num_patches))

  def encode(self, images: jax.Array, noise: Optional[jax.Array] = None,
             train: bool = False) -> Tuple[jax.Array, jax.Array, jax.Array]:
    """Encodes the visible patches of `images` [B, H, W, C].

    Only the kept patches are embedded and transformed (MAE Sec. 3,
    "MAE encoder"): compute scales with 1 - mask_ratio.

    Returns:
      latent [B, 1+L, D] (class token first, then the visible patches in
      noise order), mask [B, N] (1 = removed), ids_restore [B, N].
    """
    grid_shape = self._grid_shape(images)
    batch, num_patches = images.shape[0], grid_shape[0] * grid_shape[1]
    len_keep = num_visible(num_patches, self.mask_ratio)
    if len_keep < 1:
      raise ValueError(f'mask_ratio {self.mask_ratio} leaves no visible patch '
                       f'of {num_patches}.')
    noise = self._masking_noise(batch, num_patches, noise, train)
    ids_keep, ids_restore, mask = random_masking(noise, len_keep)

    # Embed the kept patches only: laid side by side as a [p, L*p] strip,
    # the strided convolution of PatchEmbed sees each of them once.
    p = self.patch_size
    pixels = patchify(images, p)  # [B, N, p*p*C]
    visible = jnp.take_along_axis(pixels, ids_keep[..., None], axis=1)
    strip = visible.reshape(batch, len_keep, p, p, self.num_channels)
    strip = strip.transpose(0, 2, 1, 3, 4).reshape(
        batch, p, len_keep * p, self.num_channels)  # [B, p, L*p, C]
    tokens = self.patch_embed(strip).reshape(
        batch, len_keep, self.width)  # [B, L, D]
    posemb = jnp.asarray(sincos_posemb(grid_shape, self.width)[1:])
    tokens = tokens + posemb[ids_keep].astype(tokens.dtype)  # [B, L, D]

    # The class token (MAE App. A.1, kept for ViT's class-token pooling);
    # its position embedding is the zero row.
    cls_token = jnp.broadcast_to(self.cls_token.astype(tokens.dtype),
                                 (batch, 1, self.width))
    tokens = jnp.concatenate([cls_token, tokens], axis=1)  # [B, 1+L, D]
    tokens = self.embed_dropout(tokens, not train)
    tokens = self.encoder(tokens, not train)
    return self.encoder_norm(tokens), mask, ids_restore  # [B, 1+L, D]

  def decode(self, latent: jax.Array, ids_restore: jax.Array,
             grid_shape: Tuple[int, int], train: bool = False) -> jax.Array:
    """Predicts every patch's pixels from the encoded visible patches.

    MAE Sec. 3, "MAE decoder": the visible tokens, projected to the decoder
    width, and one shared learned mask token per removed patch, put back in
    image order, plus position embeddings; a linear layer maps each output
    token to its patch's pixels.

    Args:
      latent: [B, 1+L, D] from `encode`.
      ids_restore: [B, N] from `encode`.
      grid_shape: (h, w) patches of the image.

    Returns:
      pred [B, N, p*p*C] in the compute dtype.
    """
    batch, num_patches = ids_restore.shape
    tokens = self.decoder_embed(latent)  # [B, 1+L, Dd]
    cls_token, visible = tokens[:, :1], tokens[:, 1:]
    mask_tokens = jnp.broadcast_to(
        self.mask_token.astype(tokens.dtype),
        (batch, num_patches - visible.shape[1], self.decoder_width))
    shuffled = jnp.concatenate([visible, mask_tokens], axis=1)  # [B, N, Dd]
    # Back to image order: the inverse permutation of the masking's shuffle.
    patch_tokens = jnp.take_along_axis(shuffled, ids_restore[..., None],
                                       axis=1)  # [B, N, Dd]
    tokens = jnp.concatenate([cls_token, patch_tokens], axis=1)
    posemb = jnp.asarray(sincos_posemb(grid_shape, self.decoder_width))
    tokens = tokens + posemb[None].astype(tokens.dtype)  # [B, 1+N, Dd]
    tokens = self.decoder(tokens, not train)
    tokens = self.decoder_norm(tokens)
    return self.decoder_pred(tokens)[:, 1:]  # [B, N, p*p*C]

  def __call__(self, images: jax.Array, train: bool = False,
               noise: Optional[jax.Array] = None):
    """Returns (loss, aux): the masked-patch MSE and pred / mask."""
    grid_shape = self._grid_shape(images)
    latent, mask, ids_restore = self.encode(images, noise, train)
    pred = self.decode(latent, ids_restore, grid_shape, train)
    pred = pred.astype(jnp.float32)
    target = patchify(images, self.patch_size)  # [B, N, p*p*C]
    loss = reconstruction_loss(pred, target, mask, self.norm_pix_loss)
    return loss, {'pred': pred, 'mask': mask, 'ids_restore': ids_restore}


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'mae'
MODEL = MAE
# The variants the zoo listing (`python -m vit_jax.models`) shows: MAE
# pre-training (encoder on 25% of patches + the paper's 512-wide, 8-block
# decoder); without a 'mask' rng, apply masks with a fixed seed.
ZOO = ('B/16', 'L/16', 'H/14')
# The resolution of an MAE's learned parameters: they hold none (sincos
# position embedding), so ViT's rule falls back to its default.
checkpoint_image_size = vit.checkpoint_image_size
