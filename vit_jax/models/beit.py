"""BEiT and BEiT v2: ViTs with a relative position bias in every block.

Bao et al. 2021, "BEiT: BERT Pre-Training of Image Transformers"
(arXiv:2106.08254); Peng et al. 2022, "BEiT v2: Masked Image Modeling with
Vector-Quantized Visual Tokenizers" (arXiv:2208.06366). Both fine-tune the
same network; v2 differs in pre-training only (and in its LayerScale
initialisation), so one model serves both.

    images [B, H, W, C]
      -> patch embedding                         [B, h * w, D]
      -> class token (+ position embedding)      [B, 1 + N, D]
      -> `depth` pre-norm blocks:
           x + g1 * Attn(LN(x)) + relative position bias
           x + g2 * MLP(LN(x))                    [B, 1 + N, D]
      -> gap: average of the patch tokens, LN     [B, D]
         cls: LN, class token
      -> head                                     [B, num_classes]

The relative position bias (BEiT paper, Sec. 2.6, after Swin) is a learned
table per block: one row per 2-D offset between two patches,
(2h - 1)(2w - 1) of them, plus three rows for the class token (class to
patch, patch to class, class to class); the table has one column per
head. Its size follows the patch grid, so the parameters fix the
resolution; `vit_jax.weights.beit.resize` resamples the tables to
another one as timm does. Sizes (`variant`) are ViT's table
(`vit.VARIANTS`): BEiT's released models are B/16 and L/16.

Parameter layout (paths of `params`):

    patch_embed/{kernel,bias}, cls_token [1, 1, D], pos_embed [1, 1+N, D]
    encoder/block_{i}/{norm1,attn,norm2,mlp}
    encoder/block_{i}/attn/{query,value}/{kernel,bias}, .../key/kernel
    encoder/block_{i}/relative_position_bias_table [(2h-1)(2w-1)+3, heads]
    encoder/block_{i}/gamma_{attn,mlp} [D]           LayerScale
    encoder_norm | fc_norm, head/{kernel,bias}

(`encoder/blocks/...` with a leading depth axis when scan=True;
pos_embed only with posemb='learn', the tables only with
rel_pos_bias=True, the gammas only with layer_scale_init > 0.)
"""

import math
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common
from vit_jax.models import swin
from vit_jax.models import vit

POOL_TYPES = ('gap', 'cls')
POSEMB_TYPES = ('none', 'learn')
# The class token's rows after the patch offsets, in this order (the
# reference code's, so its tables load unchanged).
CLASS_ROWS = ('class_to_patch', 'patch_to_class', 'class_to_class')

_TRUNC_NORMAL = nn.initializers.truncated_normal(stddev=0.02)

Pair = Tuple[int, int]


def table_rows(grid: Pair) -> int:
  """Rows of a block's bias table for a patch grid (h, w)."""
  return (2 * grid[0] - 1) * (2 * grid[1] - 1) + len(CLASS_ROWS)


def grid_of_table(rows: int) -> int:
  """The square grid side of a table of `rows` rows (the inverse of
  `table_rows`); an error when no square grid has that many."""
  side = (int(round(math.sqrt(rows - len(CLASS_ROWS)))) + 1) // 2
  if table_rows((side, side)) != rows:
    raise ValueError(f'A BEiT relative position bias table of {rows} rows '
                     f'fits no square patch grid: it has (2s - 1)**2 + 3 '
                     f'rows for a grid of side s (a non-square grid\'s '
                     f'table: give the image size).')
  return side


def relative_position_index(grid: Pair) -> np.ndarray:
  """Table row of every (query, key) pair of the class token and the
  patches, [1 + N, 1 + N]: patch pairs by their offset (Swin's index),
  then the class token's three rows."""
  patches = grid[0] * grid[1]
  offsets = (2 * grid[0] - 1) * (2 * grid[1] - 1)
  index = np.zeros((patches + 1, patches + 1), np.int32)
  index[1:, 1:] = swin.relative_position_index(grid)
  index[0, 1:] = offsets + CLASS_ROWS.index('class_to_patch')
  index[1:, 0] = offsets + CLASS_ROWS.index('patch_to_class')
  index[0, 0] = offsets + CLASS_ROWS.index('class_to_class')
  return index


class BeitBlock(nn.Module):
  """Pre-norm block with LayerScale and a relative position bias.

  x + drop_path(g1 * Attn(LN(x))), then x + drop_path(g2 * MLP(LN(x))); the
  attention logits get the block's own bias table, gathered by
  `relative_position_index` (none when `grid` is None). Takes and returns
  a (tokens, drop-path rate) carry like `vit.EncoderBlock`, so it runs
  unrolled or under `nn.scan`.
  """
  mlp_dim: int
  num_heads: int
  grid: Optional[Pair]  # the patch grid of the bias table; None: no bias
  layer_scale_init: float = 0.1
  qkv_bias: bool = True
  dropout: float = 0.0
  attention_dropout: float = 0.0
  deterministic: bool = True
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  attention_impl: Optional[str] = None

  def _residual(self, tokens, branch, gamma_name, drop_path_rate):
    if self.layer_scale_init:
      # LayerScale (Touvron et al. 2021, "Going deeper with Image
      # Transformers", Sec. 2): a learned per-channel branch scale.
      gamma = self.param(gamma_name,
                         nn.initializers.constant(self.layer_scale_init),
                         (tokens.shape[-1],), jnp.float32)
      branch = branch * gamma.astype(branch.dtype)
    return tokens + common.drop_path(branch, drop_path_rate,
                                     self.deterministic, self)

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:  # [B, N, D]
    bias = None
    if self.grid is not None:
      table = self.param('relative_position_bias_table', nn.initializers.zeros,
                         (table_rows(self.grid), self.num_heads), jnp.float32)
      index = relative_position_index(self.grid)
      bias = table[index.reshape(-1)].reshape(*index.shape, self.num_heads)
      bias = bias.transpose(2, 0, 1)[None].astype(self.dtype)  # [1, H, N, N]
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm1')(tokens)
    attended = common.Attention(
        self.num_heads, dropout=self.attention_dropout, dtype=self.dtype,
        implementation=self.attention_impl,
        qkv_bias=(self.qkv_bias, False, self.qkv_bias), name='attn')(
            normed, normed, self.deterministic, bias=bias)
    attended = nn.Dropout(self.dropout)(attended, self.deterministic)
    tokens = self._residual(tokens, attended, 'gamma_attn', drop_path_rate)
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm2')(tokens)
    transformed = common.Mlp(self.mlp_dim, dropout=self.dropout,
                             dtype=self.dtype, name='mlp')(
                                 normed, self.deterministic)
    tokens = self._residual(tokens, transformed, 'gamma_mlp', drop_path_rate)
    return tokens, None  # [B, N, D]


class Encoder(nn.Module):
  """`depth` BEiT blocks (or another family's `block_cls` of the same
  carry, EVA's), unrolled (`block_i`) or scanned (`blocks`), as
  `vit.Encoder` stacks its blocks."""
  depth: int
  block_kwargs: Mapping[str, Any]
  stochastic_depth: float = 0.0
  scan: bool = False
  remat: bool = False
  block_cls: Any = BeitBlock

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool) -> jax.Array:
    return common.run_blocks(
        self.block_cls, dict(self.block_kwargs, deterministic=deterministic),
        tokens, self.depth, self.stochastic_depth, self.scan, self.remat)


class Beit(nn.Module):
  """BEiT classifier; the call contract of `ViT`.

  Attributes:
    patch_size, width, depth, mlp_dim, num_heads: the size (ViT's
      `vit.VARIANTS`; `Beit.from_variant('B/16')`).
    num_classes: head outputs; 0 or None for no head.
    pool_type: 'gap' (the average of the patch tokens, the class token
      left out; BEiT's fine-tuned models) or 'cls' (the class token).
      The class token is there either way.
    fc_norm: normalise after pooling (`fc_norm`) instead of every token
      before it (`encoder_norm`); BEiT pairs it with 'gap' (timm's
      use_fc_norm), either works with either pooling.
    posemb: 'none' (the relative bias alone, as the released models) or
      'learn' (an absolute position embedding as well, class token row
      included).
    rel_pos_bias: a relative position bias table in every block.
    layer_scale_init: initial LayerScale; 0 for no LayerScale (0.1 for
      BEiT-B, 1e-5 for BEiT-L and BEiT v2, as released).
    qkv_bias: biases on the query and value projections (never the key:
      BEiT's layout).
    dropout, attention_dropout, stochastic_depth, head_bias_init,
    layer_norm_eps, dtype, scan, remat, attention_impl: as for `ViT`.
  """
  patch_size: int
  width: int
  depth: int
  mlp_dim: int
  num_heads: int
  num_classes: Optional[int] = 1000
  pool_type: str = 'gap'
  fc_norm: bool = True
  posemb: str = 'none'
  rel_pos_bias: bool = True
  layer_scale_init: float = 0.1
  qkv_bias: bool = True
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
  def from_variant(cls, variant: str, **kwargs) -> 'Beit':
    """Beit.from_variant('B/16', num_classes=10, pool_type='cls')."""
    size, patch_size = common.parse_variant(variant, vit.VARIANTS, 'BEiT')
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  def __post_init__(self):
    super().__post_init__()
    common.check_choice('pool_type', self.pool_type, POOL_TYPES)
    common.check_choice('posemb', self.posemb, POSEMB_TYPES)
    common.check_choice('attention_impl', self.attention_impl,
                        common.ATTENTION_IMPLS)
    if self.layer_scale_init < 0:
      raise ValueError(f'layer_scale_init must be >= 0 (0: no LayerScale), '
                       f'got {self.layer_scale_init}.')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits' and 'encoded'."""
    deterministic = not train
    tokens, grid = embed(self, images, deterministic)
    block_kwargs = dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads,
        grid=grid if self.rel_pos_bias else None,
        layer_scale_init=self.layer_scale_init, qkv_bias=self.qkv_bias,
        dropout=self.dropout, attention_dropout=self.attention_dropout,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
        attention_impl=self.attention_impl)
    tokens = Encoder(self.depth, block_kwargs, self.stochastic_depth,
                     self.scan, self.remat, name='encoder')(
                         tokens, deterministic)  # [B, 1+N, D]
    return classify(self, tokens)


# The embedding and the classifier BEiT shares with EVA (`models.eva`):
# functions of the calling module, inside its compact `__call__`, reading
# its fields (patch_size, width, posemb, dropout, dtype; fc_norm,
# pool_type, layer_norm_eps, num_classes, head_bias_init).


def embed(model: nn.Module, images: jax.Array, deterministic: bool
          ) -> Tuple[jax.Array, Pair]:
  """Patches, the class token first, plus the position embedding with
  posemb='learn' (its class row included): ([B, 1+N, D], the patch
  grid)."""
  patches = common.PatchEmbed(model.patch_size, model.width,
                              dtype=model.dtype, name='patch_embed')(
                                  images)  # [B, h, w, D]
  batch, grid_h, grid_w, _ = patches.shape
  tokens = patches.reshape(batch, grid_h * grid_w, model.width)
  cls_token = model.param('cls_token', _TRUNC_NORMAL, (1, 1, model.width),
                          jnp.float32)
  cls_token = jnp.broadcast_to(cls_token.astype(tokens.dtype),
                               (batch, 1, model.width))
  tokens = jnp.concatenate([cls_token, tokens], axis=1)  # [B, 1+N, D]
  if model.posemb == 'learn':
    pos_embed = model.param('pos_embed', _TRUNC_NORMAL,
                            (1,) + tokens.shape[1:], jnp.float32)
    tokens = tokens + pos_embed.astype(tokens.dtype)
  return nn.Dropout(model.dropout)(tokens, deterministic), (grid_h, grid_w)


def classify(model: nn.Module, tokens: jax.Array):
  """(logits, aux) of the encoded tokens [B, 1+N, D]: encoder_norm, or
  fc_norm after pooling (the patch tokens' average or the class token),
  then the head."""
  norm = lambda name: nn.LayerNorm(  # noqa: E731
      model.layer_norm_eps, dtype=model.dtype, name=name)
  if not model.fc_norm:
    tokens = norm('encoder_norm')(tokens)
  aux = {'encoded': tokens}
  if model.pool_type == 'gap':
    representation = tokens[:, 1:].mean(axis=1)  # [B, D]
  else:
    representation = tokens[:, 0]  # [B, D]
  if model.fc_norm:
    representation = norm('fc_norm')(representation)
  representation = representation.astype(jnp.float32)
  aux['pre_logits'] = representation
  logits = common.classifier_head(representation, model.num_classes,
                                  model.head_bias_init)  # [B, num_classes]
  return logits, aux


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: Beit, flat_params: Mapping[str, Any]
                          ) -> Pair:
  """The resolution BEiT params were trained at: the square patch grid of
  the position embedding (class row apart) or of the first block's bias
  table, times the patch size; 224 a side when they have neither.

  Args:
    model: the BEiT the params are for (its patch size).
    flat_params: '/'-joined paths (unscanned blocks) to arrays.

  Returns:
    (height, width).
  """
  table = flat_params.get('encoder/block_0/relative_position_bias_table')
  if 'pos_embed' in flat_params:
    side = int(round(math.sqrt(flat_params['pos_embed'].shape[1] - 1)))
  elif table is not None:
    side = grid_of_table(table.shape[0])
  else:
    return (224, 224)
  return (side * model.patch_size, side * model.patch_size)


# What `vit_jax.models` lists of the family (its FAMILIES tuple): the name
# `get_model` takes, the module class, and the zoo listing's rows.
NAME = 'beit'
MODEL = Beit
# The variants the zoo listing (`python -m vit_jax.models`) shows: the
# released sizes.
ZOO = ('B/16', 'L/16')
# What `models.features` extracts: each block's tokens (class token first),
# on the patch grid, through encoder_norm with norm=True (none with fc_norm,
# as timm's BEiT).
FEATURES = dict(layers='encoder/block_{}', grid='patch_embed',
                norm='encoder_norm')
