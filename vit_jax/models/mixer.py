"""MLP-Mixer.

Tolstikhin et al. 2021, "MLP-Mixer: An all-MLP Architecture for Vision".

    images [B, H, W, C]
      -> per-patch linear embedding (stem)       [B, S, C_hidden]
      -> `depth` Mixer layers:
           token mixing   (MLP over S, per channel)   [B, S, C_hidden]
           channel mixing (MLP over C, per token)     [B, S, C_hidden]
      -> LayerNorm, global average pooling        [B, C_hidden]
      -> head                                     [B, num_classes]
"""

import math
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import common

# Named sizes (Mixer paper, Table 1): hidden width C, depth, token-mixing
# MLP width D_S, channel-mixing MLP width D_C.
VARIANTS = {
    'S': dict(width=512, depth=8, tokens_mlp_dim=256, channels_mlp_dim=2048),
    'B': dict(width=768, depth=12, tokens_mlp_dim=384, channels_mlp_dim=3072),
    'L': dict(width=1024, depth=24, tokens_mlp_dim=512,
              channels_mlp_dim=4096),
    'H': dict(width=1280, depth=32, tokens_mlp_dim=640,
              channels_mlp_dim=5120),
}

# The original Mixer code uses Flax's default Dense initialisation.
_mlp = lambda *args, **kwargs: common.Mlp(  # noqa: E731
    *args, kernel_init=nn.initializers.lecun_normal(),
    bias_init=nn.initializers.zeros, **kwargs)


class MixerBlock(nn.Module):
  """One Mixer layer (paper Eq. 1), as a (tokens, drop-path rate) carry."""
  tokens_mlp_dim: int
  channels_mlp_dim: int
  dropout: float = 0.0
  deterministic: bool = True
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:  # [B, S, C]
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm1')(tokens)
    mixed = _mlp(self.tokens_mlp_dim, dropout=self.dropout, dtype=self.dtype,
                 name='token_mixing')(
                     normed.swapaxes(1, 2), self.deterministic)  # [B, C, S]
    tokens = tokens + common.drop_path(mixed.swapaxes(1, 2), drop_path_rate,
                                       self.deterministic, self)
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm2')(tokens)
    mixed = _mlp(self.channels_mlp_dim, dropout=self.dropout, dtype=self.dtype,
                 name='channel_mixing')(normed, self.deterministic)
    tokens = tokens + common.drop_path(mixed, drop_path_rate,
                                       self.deterministic, self)
    return tokens, None  # [B, S, C]


class Mixer(nn.Module):
  """MLP-Mixer classifier; same call contract as `ViT`.

  Attributes follow `ViT` where they apply: num_classes (0/None: no head),
  dropout, stochastic_depth, head_bias_init, dtype, scan, remat.
  """
  patch_size: int
  width: int
  depth: int
  tokens_mlp_dim: int
  channels_mlp_dim: int
  num_classes: Optional[int] = 1000
  dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'Mixer':
    """Mixer.from_variant('B/16', num_classes=10)."""
    size, patch_size = common.parse_variant(variant, VARIANTS, 'Mixer')
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits' and 'encoded'."""
    deterministic = not train
    patches = common.PatchEmbed(self.patch_size, self.width, dtype=self.dtype,
                                name='stem')(images)  # [B, h, w, C]
    batch, grid_h, grid_w, _ = patches.shape
    tokens = patches.reshape(batch, grid_h * grid_w, self.width)  # [B, S, C]
    block_kwargs = dict(
        tokens_mlp_dim=self.tokens_mlp_dim,
        channels_mlp_dim=self.channels_mlp_dim, dropout=self.dropout,
        deterministic=deterministic, layer_norm_eps=self.layer_norm_eps,
        dtype=self.dtype)
    tokens = common.run_blocks(MixerBlock, block_kwargs, tokens,
                               self.depth, self.stochastic_depth, self.scan,
                               self.remat)
    tokens = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='pre_head_norm')(tokens)
    representation = tokens.mean(axis=1).astype(jnp.float32)  # [B, C]
    aux = {'encoded': tokens, 'pre_logits': representation}
    logits = common.classifier_head(representation, self.num_classes,
                                    self.head_bias_init)  # [B, num_classes]
    return logits, aux


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: Mixer, flat_params: Mapping[str, Any]
                          ) -> Tuple[int, int]:
  """The resolution Mixer params were trained at: the token-mixing MLP's
  input is the (square) number of patches.

  Args:
    model: the Mixer the params are for (its patch size).
    flat_params: '/'-joined paths (unscanned blocks) to arrays.

  Returns:
    (height, width); 224 a side when the params have no token-mixing MLP.
  """
  kernel = flat_params.get('block_0/token_mixing/fc1/kernel')
  if kernel is None:
    return (224, 224)
  side = int(round(math.sqrt(kernel.shape[0]))) * model.patch_size
  return (side, side)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'mixer'
MODEL = Mixer
# The variants the zoo listing (`python -m vit_jax.models`) shows.
ZOO = ('S/32', 'S/16', 'B/32', 'B/16', 'L/32', 'L/16', 'H/14')
# What `models.features` extracts: each block's tokens, on the stem's grid.
FEATURES = dict(layers='block_{}', grid='stem', norm='pre_head_norm')
