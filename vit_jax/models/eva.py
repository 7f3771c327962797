"""EVA-02 (and EVA-01): ViTs with a rotary position embedding and SwiGLU.

Fang et al. 2023, "EVA-02: A Visual Representation for Neon Genesis"
(arXiv:2303.11331); Fang et al. 2022, "EVA: Exploring the Limits of Masked
Visual Representation Learning at Scale" (arXiv:2211.07636, EVA-01: a plain
GELU ViT, `activation='gelu', rope=False`).

    images [B, H, W, C]
      -> patch embedding                         [B, h * w, D]
      -> class token (+ position embedding)      [B, 1 + N, D]
      -> `depth` pre-norm blocks:
           x + g1 * Out(subLN(Attn(rope(q), rope(k), v)))   of LN(x)
           x + g2 * MLP(LN(x))                    [B, 1 + N, D]
      -> gap: average of the patch tokens, LN     [B, D]
         cls: LN, class token
      -> head                                     [B, num_classes]

The rotary position embedding (Su et al. 2021, "RoFormer", Sec. 3.4; 2-D
as in EVA-02, Sec. 2.1) turns each (even, odd) pair of a head's query and
key channels by an angle: the first half of the pairs by the patch's row
coordinate, the second half by its column, each times a frequency
1 / T**(i / (hd / 4)), i = 0 .. hd/4 - 1, T = 10000. The class token is
not turned. The coordinates are the patch indices scaled to a reference
grid: row r of an h-row grid is at r * ref_h / h (EVA-02's 16x16, its
224 px pre-training), so a model fine-tuned at 448 px sees the same angle
range as at 224 px, and another image size changes only the spacing.
Nothing of it is learned.

The MLP is SwiGLU (Shazeer 2020): SiLU(x W_g) * (x W_x), then the output
layer; `mlp_dim` is the gated width. Tiny and Small keep W_g and W_x in one
kernel (`mlp/fc1`, gate first: `common.Mlp` with 'swiglu'); Base and Large
(`mlp_norm=True`) have them apart (`mlp/fc1_g`, `mlp/fc1_x`) with a
LayerNorm of the gated units before the output layer (normformer's "scale"
norm; timm's scale_mlp), as timm lays them out. The CLIP towers add a
LayerNorm of the heads' outputs before the attention's output projection
(`attn_norm`; timm's scale_attn_inner). The key has no bias.

Parameter layout (paths of `params`):

    patch_embed/{kernel,bias}, cls_token [1, 1, D], pos_embed [1, 1+N, D]
    encoder/block_{i}/{norm1,attn,norm2,mlp}
    encoder/block_{i}/attn/{query,value}/{kernel,bias}, .../key/kernel
    encoder/block_{i}/attn/norm                      attn_norm=True
    encoder/block_{i}/mlp/fc1, fc2                   packed SwiGLU, or GELU
    encoder/block_{i}/mlp/{fc1_g,fc1_x,norm,fc2}     mlp_norm=True
    encoder/block_{i}/gamma_{attn,mlp} [D]           LayerScale
    encoder_norm | fc_norm, head/{kernel,bias}
"""

import math
from typing import Any, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import beit
from vit_jax.models import common
from vit_jax.models import vit

POOL_TYPES = beit.POOL_TYPES
POSEMB_TYPES = beit.POSEMB_TYPES
ACTIVATIONS = ('swiglu', 'gelu')
# EVA-02's sizes: ViT's, with a SwiGLU width of 2/3 of the usual 4 D
# (timm's mlp_ratio 4 * 2 / 3, int(D * ratio)); EVA-01's giant as ViT-g.
VARIANTS = {
    **{size: dict(vit.VARIANTS[size],
                  mlp_dim=int(vit.VARIANTS[size]['width'] * (4 * 2 / 3)))
       for size in ('Ti', 'S', 'B', 'L')},
    'g': dict(vit.VARIANTS['g']),
}
# EVA-02's reference grid: 224 px pre-training at patch 14.
REF_GRID = (16, 16)
ROPE_TEMPERATURE = 10000.0

Pair = Tuple[int, int]


def rope_tables(grid: Pair, head_dim: int, ref_grid: Optional[Pair] = None
                ) -> Tuple[np.ndarray, np.ndarray]:
  """(sin, cos) of the rotation angles of the patches of `grid` (h, w),
  row-major, each [h * w, head_dim]: both entries of a pair of channels
  share an angle; the first half of the pairs follow the row coordinate,
  the second half the column. Computed in float32 as timm does."""
  if head_dim % 4:
    raise ValueError(f'A 2-D rotary position embedding turns channel pairs '
                     f'by rows and by columns: it needs a head width '
                     f'divisible by 4, got {head_dim}.')
  bands = head_dim // 4
  exponents = np.arange(bands).astype(np.float32) / np.float32(bands)
  frequencies = np.float32(1.0) / (
      np.float32(ROPE_TEMPERATURE) ** exponents)  # [hd/4]
  axes = []
  for axis, side in enumerate(grid):
    coords = np.arange(side).astype(np.float32)
    if ref_grid is not None:
      coords = coords / np.float32(side) * np.float32(ref_grid[axis])
    axes.append(coords)
  rows, cols = np.meshgrid(*axes, indexing='ij')  # [h, w] each
  angles = np.stack([rows, cols], axis=-1)[..., None] * frequencies
  angles = angles.reshape(grid[0] * grid[1], 2 * bands)
  angles = np.repeat(angles, 2, axis=-1)  # [N, hd]: pairs share an angle
  return np.sin(angles), np.cos(angles)


def rotate_pairs(x: jax.Array, sin: jax.Array, cos: jax.Array) -> jax.Array:
  """x [..., N, H, hd] with each channel pair (a, b) turned to
  (a cos - b sin, b cos + a sin) by its angle ([N, hd] tables)."""
  pairs = x.reshape(*x.shape[:-1], -1, 2)
  turned = jnp.stack([-pairs[..., 1], pairs[..., 0]], axis=-1).reshape(
      x.shape)
  sin, cos = sin[:, None].astype(x.dtype), cos[:, None].astype(x.dtype)
  return x * cos + turned * sin


class SwiGLU(nn.Module):
  """The unpacked SwiGLU MLP: SiLU(fc1_g(x)) * fc1_x(x), a LayerNorm of
  the gated units (`norm`), fc2."""
  hidden_dim: int
  dropout: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
    dense = lambda width, name: nn.Dense(  # noqa: E731
        width, dtype=self.dtype, kernel_init=common.DENSE_KERNEL_INIT,
        bias_init=common.MLP_BIAS_INIT, name=name)
    hidden = (nn.silu(dense(self.hidden_dim, 'fc1_g')(inputs))
              * dense(self.hidden_dim, 'fc1_x')(inputs))
    hidden = nn.Dropout(self.dropout)(hidden, deterministic)
    hidden = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm')(hidden)
    outputs = dense(inputs.shape[-1], 'fc2')(hidden)
    return nn.Dropout(self.dropout)(outputs, deterministic)


class EvaBlock(beit.BeitBlock):
  """Pre-norm block: BEiT's (LayerScale, no key bias, a (tokens, rate)
  carry) with the rotary embedding of the patch `grid` (None: none) in
  place of the bias table, and EVA's MLP and attention norm."""
  ref_grid: Optional[Pair] = REF_GRID
  activation: str = 'swiglu'
  mlp_norm: bool = False
  attn_norm: bool = False

  @nn.compact
  def __call__(self, tokens: jax.Array, drop_path_rate) -> Any:  # [B, N, D]
    rotate = None
    if self.grid is not None:
      head_dim = tokens.shape[-1] // self.num_heads
      sin, cos = rope_tables(self.grid, head_dim, self.ref_grid)

      def rotate(x):  # the class token first, not turned
        return jnp.concatenate(
            [x[:, :1], rotate_pairs(x[:, 1:], sin, cos)], axis=1)
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm1')(tokens)
    attended = common.Attention(
        self.num_heads, dropout=self.attention_dropout, dtype=self.dtype,
        implementation=self.attention_impl,
        qkv_bias=(self.qkv_bias, False, self.qkv_bias),
        inner_norm_eps=self.layer_norm_eps if self.attn_norm else None,
        name='attn')(normed, normed, self.deterministic, rotate=rotate)
    attended = nn.Dropout(self.dropout)(attended, self.deterministic)
    tokens = self._residual(tokens, attended, 'gamma_attn', drop_path_rate)
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm2')(tokens)
    if self.mlp_norm:
      mlp = SwiGLU(self.mlp_dim, self.dropout, self.layer_norm_eps,
                   self.dtype, name='mlp')
    else:  # packed: one fc1 of gate and value, split by the activation
      gated = self.activation == 'swiglu'
      mlp = common.Mlp(self.mlp_dim * (2 if gated else 1),
                       dropout=self.dropout, dtype=self.dtype,
                       activation=self.activation, name='mlp')
    transformed = mlp(normed, self.deterministic)
    tokens = self._residual(tokens, transformed, 'gamma_mlp', drop_path_rate)
    return tokens, None  # [B, N, D]


class Eva(nn.Module):
  """EVA-02 / EVA-01 classifier; the call contract of `ViT`.

  Attributes:
    patch_size, width, depth, mlp_dim, num_heads: the size (`VARIANTS`;
      `Eva.from_variant('B/14')`). mlp_dim: the MLP's hidden (gated)
      width.
    num_classes: head outputs; 0 or None for no head (the MIM-pretrained
      models).
    pool_type: 'gap' (the average of the patch tokens, the class token
      left out: the classifiers) or 'cls' (the class token: the CLIP
      towers, EVA's MIM targets).
    fc_norm: normalise after pooling (`fc_norm`) instead of every token
      before it (`encoder_norm`); timm pairs it with 'gap'.
    posemb: 'learn' (an absolute position embedding, class token row
      included, as every EVA) or 'none'.
    rope: a rotary position embedding in every block's attention.
    rope_ref_grid: the grid the rotary coordinates are scaled to (see the
      module docstring); None: the patch indices as they are.
    activation: 'swiglu' (EVA-02) or 'gelu' (EVA-01).
    mlp_norm: SwiGLU with separate gate and value layers and a LayerNorm
      before the output layer (EVA-02 B and L; timm's scale_mlp).
    attn_norm: a LayerNorm of the heads' outputs before the attention's
      output projection (the EVA-02 CLIP towers; timm's scale_attn_inner).
    layer_scale_init: initial LayerScale; 0 for none (every EVA release).
    qkv_bias: biases on the query and value projections (never the key).
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
  posemb: str = 'learn'
  rope: bool = True
  rope_ref_grid: Optional[Pair] = REF_GRID
  activation: str = 'swiglu'
  mlp_norm: bool = False
  attn_norm: bool = False
  layer_scale_init: float = 0.0
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
  def from_variant(cls, variant: str, **kwargs) -> 'Eva':
    """Eva.from_variant('B/14', mlp_norm=True, num_classes=10)."""
    size, patch_size = common.parse_variant(variant, VARIANTS, 'EVA')
    return cls(**{'patch_size': patch_size, **size, **kwargs})

  def __post_init__(self):
    super().__post_init__()
    common.check_choice('pool_type', self.pool_type, POOL_TYPES)
    common.check_choice('posemb', self.posemb, POSEMB_TYPES)
    common.check_choice('activation', self.activation, ACTIVATIONS)
    common.check_choice('attention_impl', self.attention_impl,
                        common.ATTENTION_IMPLS)
    if self.mlp_norm and self.activation != 'swiglu':
      raise ValueError(f'mlp_norm=True is the unpacked SwiGLU MLP\'s norm: '
                       f'it needs activation=\'swiglu\', got '
                       f'{self.activation!r}.')
    if self.layer_scale_init < 0:
      raise ValueError(f'layer_scale_init must be >= 0 (0: no LayerScale), '
                       f'got {self.layer_scale_init}.')
    if self.rope_ref_grid is not None and (
        len(self.rope_ref_grid) != 2 or min(self.rope_ref_grid) <= 0):
      raise ValueError(f'rope_ref_grid must be (rows, columns) > 0 or None, '
                       f'got {self.rope_ref_grid!r}.')
    if self.rope and (self.width // self.num_heads) % 4:
      raise ValueError(f'rope=True needs a head width (width / num_heads = '
                       f'{self.width} / {self.num_heads}) divisible by 4.')

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits' and 'encoded'."""
    deterministic = not train
    tokens, grid = beit.embed(self, images, deterministic)
    ref_grid = (tuple(self.rope_ref_grid) if self.rope_ref_grid is not None
                else None)
    block_kwargs = dict(
        mlp_dim=self.mlp_dim, num_heads=self.num_heads,
        grid=grid if self.rope else None, ref_grid=ref_grid,
        activation=self.activation, mlp_norm=self.mlp_norm,
        attn_norm=self.attn_norm, layer_scale_init=self.layer_scale_init,
        qkv_bias=self.qkv_bias, dropout=self.dropout,
        attention_dropout=self.attention_dropout,
        layer_norm_eps=self.layer_norm_eps, dtype=self.dtype,
        attention_impl=self.attention_impl)
    tokens = beit.Encoder(self.depth, block_kwargs, self.stochastic_depth,
                          self.scan, self.remat, block_cls=EvaBlock,
                          name='encoder')(tokens, deterministic)
    return beit.classify(self, tokens)  # tokens [B, 1+N, D]


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: Eva, flat_params: Mapping[str, Any]
                          ) -> Pair:
  """The resolution EVA params were trained at: the square patch grid of
  the position embedding (class row apart) times the patch size; 224 a
  side without one (the rotary embedding has no parameters).

  Args:
    model: the EVA the params are for (its patch size).
    flat_params: '/'-joined paths (unscanned blocks) to arrays.

  Returns:
    (height, width).
  """
  if 'pos_embed' not in flat_params:
    return (224, 224)
  side = int(round(math.sqrt(flat_params['pos_embed'].shape[1] - 1)))
  return (side * model.patch_size, side * model.patch_size)


# What `vit_jax.models` lists of the family (its FAMILIES tuple).
NAME = 'eva'
MODEL = Eva
# The variants the zoo listing shows: EVA-02's sizes.
ZOO = ('Ti/14', 'S/14', 'B/14', 'L/14')
# What `models.features` extracts: each block's tokens (class token first),
# on the patch grid, through encoder_norm with norm=True (none with
# fc_norm, as timm's Eva).
FEATURES = beit.FEATURES
