"""TimeSformer: a ViT on the frames of a clip.

Bertasius, Wang and Torresani 2021, "Is Space-Time Attention All You Need
for Video Understanding?" (TimeSformer), with the conventions of
transformers' TimesformerForVideoClassification, which the golden tests
compare against number for number.

    clips [B, T, H, W, C]
      -> patch embedding of every frame              [B, T, h, w, D]
      -> + position embedding (per frame)            [B, T, N, D]
      -> + time embedding (per frame; not 'space_only')
      -> class token first                           [B, 1 + T*N, D]
      -> `depth` blocks (attention_type below)
      -> LayerNorm, class token -> head              [B, num_classes]

Attention (Sec. 3, Fig. 1-2 of the paper):
  'divided_space_time'  each block attends over time first (each patch
      position with itself in the other frames: temporal_norm,
      temporal_attn, then the temporal projection temporal_dense on the
      residual branch), then over space (each frame's patches, with a copy
      of the class token per frame; the class token's residual is the mean
      of its T copies' outputs), then the MLP.
  'joint_space_time'    one attention over all 1 + T*N tokens.
  'space_only'          every frame is an image for a ViT, with its own
      class token (tokens [B, T + T*N, D]: the T class tokens first); the
      frames' final class tokens are averaged (the original code's
      mean over frames; transformers returns per-frame logits, whose mean
      this is).

Tokens are laid out frame-major (all of frame 0's patches, then frame 1's);
transformers keeps patch-major order, which no output here depends on.
Parameter names follow vit.ViT's where the parts are the ViT's (patch_embed,
cls_token, pos_embed, encoder/block_i/norm1, attn, norm2, mlp,
encoder_norm, head), so an ImageNet ViT's params are a TimeSformer's
(`vit_params_as_timesformer`, the paper's initialisation, Sec. 4).
"""

from typing import Any, Mapping, Optional, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common
from vit_jax.models import vit

ATTENTION_TYPES = ('divided_space_time', 'space_only', 'joint_space_time')


class Block(nn.Module):
  """One TimeSformer block on tokens [B, P + T*N, D] (P: one class token,
  or T of them with 'space_only'); a (tokens, drop-path rate) carry, as
  vit.EncoderBlock, so it runs unrolled or under `nn.scan`.

  Drop path drops what the reference drops: the temporal branch per
  (clip, patch position), the spatial branch per (clip, frame), the MLP
  per clip.
  """
  mlp_dim: int
  num_heads: int
  num_frames: int
  attention_type: str = 'divided_space_time'
  dropout: float = 0.0
  attention_dropout: float = 0.0
  deterministic: bool = True
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  def _norm(self, name: str) -> nn.Module:
    return nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)

  def _attend(self, tokens: jax.Array, name: str, rate) -> jax.Array:
    """attention(tokens) with its output dropout and drop path."""
    attended = common.Attention(
        self.num_heads, dropout=self.attention_dropout, dtype=self.dtype,
        implementation=self.attention_impl, name=name)(
            tokens, tokens, self.deterministic)
    attended = nn.Dropout(self.dropout)(attended, self.deterministic)
    return common.drop_path(attended, rate, self.deterministic, self)

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:
    batch, _, width = tokens.shape
    frames = self.num_frames
    if self.attention_type == 'joint_space_time':
      tokens = tokens + self._attend(self._norm('norm1')(tokens), 'attn',
                                     drop_path_rate)
    elif self.attention_type == 'space_only':
      prefix = frames
      cls_tokens = tokens[:, :prefix].reshape(batch * frames, 1, width)
      patches = tokens[:, prefix:].reshape(batch * frames, -1, width)
      frame_tokens = jnp.concatenate([cls_tokens, patches], axis=1)
      frame_tokens = frame_tokens + self._attend(
          self._norm('norm1')(frame_tokens), 'attn', drop_path_rate)
      tokens = jnp.concatenate(
          [frame_tokens[:, 0].reshape(batch, frames, width),
           frame_tokens[:, 1:].reshape(batch, -1, width)], axis=1)
    else:
      tokens = self._divided(tokens, drop_path_rate)
    normed = self._norm('norm2')(tokens)
    transformed = common.Mlp(self.mlp_dim, dropout=self.dropout,
                             dtype=self.dtype, name='mlp')(
                                 normed, self.deterministic)
    tokens = tokens + common.drop_path(transformed, drop_path_rate,
                                       self.deterministic, self)
    return tokens, None  # [B, P + T*N, D]

  def _divided(self, tokens: jax.Array, rate) -> jax.Array:
    """Temporal then spatial attention (Fig. 1, "Divided Space-Time")."""
    batch, _, width = tokens.shape
    frames = self.num_frames
    cls_token = tokens[:, :1]  # [B, 1, D]
    patches = tokens[:, 1:].reshape(batch, frames, -1, width)  # [B, T, N, D]
    positions = patches.shape[2]

    # Time: each patch position's T tokens, the class token left out.
    in_time = patches.transpose(0, 2, 1, 3).reshape(batch * positions,
                                                    frames, width)
    temporal = self._attend(self._norm('temporal_norm')(in_time),
                            'temporal_attn', rate)  # [B*N, T, D]
    temporal = temporal.reshape(batch, positions, frames,
                                width).transpose(0, 2, 1, 3)
    # The projection follows the drop path, as in the reference, so a
    # dropped branch still adds the projection's bias.
    patches = patches + nn.Dense(
        width, dtype=self.dtype, kernel_init=nn.initializers.zeros,
        name='temporal_dense')(temporal)  # [B, T, N, D]

    # Space: each frame's patches with a copy of the class token.
    copies = jnp.broadcast_to(cls_token[:, None], (batch, frames, 1, width))
    in_space = jnp.concatenate([copies, patches], axis=2).reshape(
        batch * frames, 1 + positions, width)
    spatial = self._attend(self._norm('norm1')(in_space), 'attn', rate)
    spatial = spatial.reshape(batch, frames, 1 + positions, width)
    cls_token = cls_token + spatial[:, :, :1].mean(axis=1)  # [B, 1, D]
    patches = patches + spatial[:, :, 1:]
    return jnp.concatenate(
        [cls_token, patches.reshape(batch, frames * positions, width)],
        axis=1)


class TimeSformer(nn.Module):
  """TimeSformer video classifier on clips [B, num_frames, H, W, C].

  Attributes:
    patch_size, width, depth, mlp_dim, num_heads: the size (vit.VARIANTS,
      `TimeSformer.from_variant('B/16')`).
    num_frames: T, the frames of a clip (the time embedding's rows).
    image_size: the frames' side (or (height, width)); the position
      embedding is learned on its patch grid. Clips of another size or
      frame count are refused: import resamples the embeddings instead
      (`vit_jax.weights`).
    attention_type: one of ATTENTION_TYPES (see the module docstring).
    num_classes: head outputs; 0 or None for no head.
    dropout, attention_dropout, stochastic_depth, head_bias_init,
    layer_norm_eps, dtype, scan, remat, attention_impl: as vit.ViT's.
    transformers' layer_norm_eps is 1e-6, the default here.
  """
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_frames: int = 8
  image_size: Union[int, Tuple[int, int]] = 224
  attention_type: str = 'divided_space_time'
  num_classes: Optional[int] = 400
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False
  attention_impl: Optional[str] = None

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'TimeSformer':
    """TimeSformer.from_variant('B/16', num_frames=8, num_classes=400)."""
    size, patch_size = common.parse_variant(variant, vit.VARIANTS,
                                            'TimeSformer')
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  def __post_init__(self):
    super().__post_init__()
    common.check_choice('attention_type', self.attention_type,
                        ATTENTION_TYPES)
    common.check_choice('attention_impl', self.attention_impl,
                        common.ATTENTION_IMPLS)
    if not isinstance(self.num_frames, int) or self.num_frames < 1:
      raise ValueError(f'TimeSformer num_frames must be an integer >= 1, '
                       f'got {self.num_frames!r}.')
    size = self.image_size
    if not (isinstance(size, int) or (
        isinstance(size, (tuple, list)) and len(size) == 2
        and all(isinstance(side, int) for side in size))):
      raise ValueError(f'TimeSformer image_size must be a side or (height, '
                       f'width) of the frames, got {size!r}.')
    height, width = self.frame_size
    if height % self.patch_size or width % self.patch_size:
      raise ValueError(f'TimeSformer image_size {self.image_size!r} is not '
                       f'divisible by the patch size {self.patch_size}.')

  @property
  def frame_size(self) -> Tuple[int, int]:
    """image_size as (height, width)."""
    if isinstance(self.image_size, int):
      return (self.image_size, self.image_size)
    height, width = self.image_size
    return (int(height), int(width))

  @property
  def grid(self) -> Tuple[int, int]:
    """The patch grid (h, w) of a frame."""
    return tuple(side // self.patch_size for side in self.frame_size)

  @property
  def num_prefix_tokens(self) -> int:
    """Class tokens before the patches: one, or one per frame with
    'space_only'."""
    return self.num_frames if self.attention_type == 'space_only' else 1

  def _check_input(self, clips: jax.Array) -> None:
    height, width = self.frame_size
    if (clips.ndim != 5 or clips.shape[1] != self.num_frames
        or tuple(clips.shape[2:4]) != (height, width)):
      raise ValueError(
          f'TimeSformer takes clips [B, T, H, W, C] of shape [B, '
          f'{self.num_frames}, {height}, {width}, C] (its num_frames and '
          f'image_size; frames divisible by the patch size '
          f'{self.patch_size}), got {list(clips.shape)}.')

  @nn.compact
  def __call__(self, clips: jax.Array, train: bool = False):
    """Returns (logits [B, num_classes], aux); aux holds 'pre_logits'
    (the class token after the final norm, averaged over frames with
    'space_only') and 'encoded' (every token after the final norm)."""
    self._check_input(clips)
    deterministic = not train
    batch, frames = clips.shape[:2]
    patches = common.PatchEmbed(self.patch_size, self.width,
                                dtype=self.dtype, name='patch_embed')(
                                    clips)  # [B, T, h, w, D]
    patches = patches.reshape(batch, frames, -1, self.width)  # [B, T, N, D]
    positions = patches.shape[2]

    cls_token = self.param('cls_token', nn.initializers.zeros,
                           (1, 1, self.width), jnp.float32)
    pos_embed = self.param('pos_embed', nn.initializers.normal(0.02),
                           (1, 1 + positions, self.width), jnp.float32)
    pos_embed = pos_embed.astype(patches.dtype)
    # The class token takes the position table's first row; the embedded
    # tokens' dropout, then the time embedding and its own dropout.
    cls_token = cls_token.astype(patches.dtype) + pos_embed[:, :1]
    prefix = self.num_prefix_tokens
    cls_token = nn.Dropout(self.dropout)(
        jnp.broadcast_to(cls_token, (batch, prefix, self.width)),
        deterministic)  # [B, P, D]
    patches = nn.Dropout(self.dropout)(patches + pos_embed[:, None, 1:],
                                       deterministic)
    if self.attention_type != 'space_only':
      time_embed = self.param('time_embed', nn.initializers.zeros,
                              (1, self.num_frames, self.width), jnp.float32)
      patches = patches + time_embed[:, :, None].astype(patches.dtype)
      patches = nn.Dropout(self.dropout)(patches, deterministic)
    tokens = jnp.concatenate(
        [cls_token, patches.reshape(batch, frames * positions, self.width)],
        axis=1)  # [B, P + T*N, D]

    block_kwargs = dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads,
        num_frames=self.num_frames, attention_type=self.attention_type,
        dropout=self.dropout, attention_dropout=self.attention_dropout,
        deterministic=deterministic, layer_norm_eps=self.layer_norm_eps,
        dtype=self.dtype, attention_impl=self.attention_impl)
    tokens = Encoder(block_kwargs, self.depth, self.stochastic_depth,
                     self.scan, self.remat, name='encoder')(tokens)
    tokens = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='encoder_norm')(tokens)
    prefix = tokens[:, :self.num_prefix_tokens]  # [B, P, D]
    representation = prefix.astype(jnp.float32).mean(axis=1)  # [B, D]
    aux = {'encoded': tokens, 'pre_logits': representation}
    logits = common.classifier_head(representation, self.num_classes,
                                    self.head_bias_init)  # [B, num_classes]
    return logits, aux


class Encoder(nn.Module):
  """The blocks, unrolled (`block_i`) or scanned (`blocks`), as
  vit.Encoder's (`common.run_blocks`)."""
  block_kwargs: Mapping[str, Any]
  depth: int
  stochastic_depth: float = 0.0
  scan: bool = False
  remat: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:
    return common.run_blocks(Block, self.block_kwargs, tokens, self.depth,
                             self.stochastic_depth, self.scan, self.remat)


# ----------------------------------------------------------------------------
# An ImageNet ViT as a TimeSformer (the paper's initialisation, Sec. 4).


def vit_params_as_timesformer(vit_params: Mapping[str, Any]) -> dict:
  """A class-token ViT's params (vit.ViT, pool_type='cls', learned
  position embedding) as params of the TimeSformer of the same patch,
  width, depth and heads, with divided space-time attention.

  The ViT's parts keep their names and values: patch embedding, class
  token, position embedding, each block's spatial attention (attn), norms
  and MLP, the final norm and the head. The temporal parts start as
  TimeSformer's code starts them when it loads ImageNet weights
  (facebookresearch/TimeSformer, `load_pretrained`): each block's
  temporal attention and its norm are copies of the spatial ones, the time
  embedding is zero. The temporal projection starts at zero in every block
  (the original zero-initialises it in every block but the first): each
  temporal branch then adds nothing, and on a clip of identical frames the
  model is exactly the ViT on one of them.

  The time embedding comes out with one frame, [1, 1, D]: import resamples
  it to the model's frames (`vit_jax.weights.timesformer.resize`), zeros to
  zeros. A model without temporal attention drops the (identity) temporal
  branch there.
  """
  params = common.unstack_blocks(dict(vit_params))
  missing = [name for name in ('cls_token', 'pos_embed', 'patch_embed')
             if name not in params]
  if missing or 'reg_token' in params or 'map_head' in params:
    raise ValueError(
        f'A TimeSformer starts from a class-token ViT (pool_type=\'cls\', a '
        f'learned position embedding, no registers); these params lack '
        f'{missing} or have registers / a MAP head: {sorted(params)}.')
  width = np.shape(params['cls_token'])[-1]
  encoder = {}
  for name, block in params['encoder'].items():
    block = dict(block)
    block['temporal_norm'] = block['norm1']
    block['temporal_attn'] = block['attn']
    block['temporal_dense'] = {'kernel': np.zeros((width, width), np.float32),
                               'bias': np.zeros((width,), np.float32)}
    encoder[name] = block
  return {**params, 'encoder': encoder,
          'time_embed': np.zeros((1, 1, width), np.float32)}


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: TimeSformer, flat_params: Mapping[str, Any]
                          ) -> Tuple[int, int]:
  """The model's own frame size: TimeSformer's parameters are built for
  one (its position embedding), as transformers' config.image_size; a
  checkpoint's position embedding is resampled to it on import."""
  del flat_params
  return model.frame_size


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'timesformer'
MODEL = TimeSformer
# The paper's model is B/16 (8 x 224^2 clips; TimeSformer-HR and -L differ
# in frames and resolution, not in size).
ZOO = ('S/16', 'B/16', 'L/16')
# What `models.features` extracts: each block's tokens on the clip's patch
# grid [B, T, h, w, D] (the class tokens as prefix), through encoder_norm
# with norm=True.
FEATURES = dict(layers='encoder/block_{}', grid='patch_embed',
                norm='encoder_norm')
