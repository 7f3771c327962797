"""Multiscale Vision Transformers: MViT (v1) and MViTv2, images and clips.

Fan et al. 2021, "Multiscale Vision Transformers" (arXiv:2104.11227); Li et
al. 2022, "MViTv2: Improved Multiscale Vision Transformers for
Classification and Detection" (arXiv:2112.01526).

    images [B, H, W, 3]  or  clips [B, T, H, W, 3]
      -> overlapping patch embedding: conv 7x7 stride 4 (images),
         3x7x7 stride 2x4x4 (clips)              grid G_0 = H/4 x W/4 (x T/2)
      -> [class token] [+ v1's separable absolute position embedding]
      -> stage 1 .. 4: multiscale blocks; the first block of stage i > 1
         pools the queries with stride 2 per spatial axis (G_i = G_{i-1}/2)
         and, in v2, widens the channels (C_i = 2 C_{i-1})
      -> LayerNorm, average of the patch tokens (or the class token)
      -> head

One implementation for both inputs: everything that depends on the input's
layout runs over its grid axes, 2 for images (h, w) and 3 for clips
(t, h, w); nothing else tells them apart.

A multiscale block (v2, paper Fig. 2):

    x_n = LN(x)
    q, k, v = split(Linear(x_n))                           per head
    q, k, v = LN(depthwise conv pool(q | k | v))            pooling attention
    a = softmax(q k^T / sqrt(d) + R(q))  v  [+ q]           rel. position,
                                                            residual pooling
    x = maxpool(x or Linear(x_n)) + Linear(a)               shortcut
    x = (x or Linear(LN(x))) + MLP(LN(x))

The query pooling stride is the stage's (2 per spatial axis in its first
block, else 1); the key / value stride is adaptive: `kv_stride` in stage 1,
divided by each stage's query stride after. R adds, per grid axis a, the
query's product with a table row chosen by the (rescaled) offset between
the query's and the key's positions on that axis (decomposed relative
position embedding, paper Sec. 3.1). Channels grow in the attention of a
stage's first block (`expand_attn`, MViTv2) or in the MLP of a stage's last
block (MViTv1 and timm's MViTv2-L); the shortcut then passes through a
Linear of the normalised input.

Variants (`from_variant`): 'T', 'S', 'B', 'L' are timm's mvitv2_tiny /
small / base / large for images; with `num_frames` the clip variants are
'S' (torchvision's mvit_v2_s), 'B' (its sizes) and 'v1-B' (torchvision's
mvit_v1_b): a class token read by the head, key / value stride 8 in stage
1, residual pooling that leaves the class token out.

Parameter layout (paths of `params`):

    patch_embed/{kernel,bias}, cls_token [1, 1, C_0] (class-token models)
    pos_embed_{spatial,temporal,class} (posemb='learn', MViTv1)
    stage_{i}/block_{j}/norm1, norm2, mlp/{fc1,fc2}
    stage_{i}/block_{j}/shortcut_proj_{attn,mlp}     (widening blocks)
    stage_{i}/block_{j}/attn/qkv, proj,
        pool_{q,k,v}/kernel [k.., 1, head_dim], norm_{q,k,v},
        rel_pos_{t,h,w} [2 n - 1, head_dim]                (rel_pos=True)
    final_norm, head

`scan`: within a stage every block after the first is alike (the first
pools and widens; in MViTv1, expand_attn=False, the last widens too), so
with scan=True those run as one `nn.scan` module per stage,
`stage_{i}/blocks_from_1` (leaves with a leading axis of the run's
length), the others unrolled (`scan_runs`); `stack_params` converts the
unrolled layout to it, `common.unstack_blocks` back. `remat`
rematerialises each block.
"""

import functools
import string
from typing import (Any, List, Mapping, NamedTuple, Optional, Sequence, Tuple,
                    Union)

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import common

# Image variants: timm's MultiScaleVitCfg rows (stage widths and heads
# double from the first stage's).
VARIANTS = {
    'T': dict(embed_dim=96, num_heads=1, depths=(1, 2, 5, 2)),
    'S': dict(embed_dim=96, num_heads=1, depths=(1, 2, 11, 2)),
    'B': dict(embed_dim=96, num_heads=1, depths=(2, 3, 16, 3)),
    'L': dict(embed_dim=144, num_heads=2, depths=(2, 6, 36, 4),
              expand_attn=False),
}
# What a clip model changes (torchvision's video MViTs, after the
# SlowFast / PyTorchVideo Kinetics configurations).
VIDEO_DEFAULTS = dict(class_token=True, pool_type='cls', kv_stride=8,
                      residual_pooling_cls=False)
# Clip variants: MViTv2-S (torchvision's mvit_v2_s) and -B (SlowFast's
# MViTv2-B 32x3 sizes) as the image rows; MViTv1-B.
VIDEO_VARIANTS = {
    'S': VARIANTS['S'], 'B': VARIANTS['B'],
    # MViTv1-B 16x4: absolute (separable) position embeddings, no residual
    # pooling, queries pooled only where they are strided, channels grow in
    # the MLP.
    'v1-B': dict(embed_dim=96, num_heads=1, depths=(1, 2, 11, 2),
                 expand_attn=False, rel_pos=False, residual_pooling=False,
                 posemb='learn', pool_q_every_block=False),
}
POOL_TYPES = ('avg', 'cls')
POSEMBS = ('none', 'learn')

# Linear layers of both references: truncated normal(0.02), zero biases.
_DENSE_INIT = nn.initializers.truncated_normal(stddev=0.02)

Grid = Tuple[int, ...]


# ----------------------------------------------------------------------------
# Geometry (numpy, from shapes alone).


def _pooled(grid: Grid, kernel: Sequence[int], stride: Sequence[int]) -> Grid:
  """A convolution / max-pool with padding kernel // 2: output sizes."""
  return tuple((n + 2 * (k // 2) - k) // s + 1
               for n, k, s in zip(grid, kernel, stride))


class BlockSpec(NamedTuple):
  """What one block is, from the model's sizes and its input grid."""
  dim_in: int
  dim_out: int
  heads: int
  grid: Grid  # the input grid
  stride_q: Grid
  stride_kv: Grid
  pool_q: bool  # whether the queries are pooled (and normed)
  expand_attn: bool  # widening in the attention (else in the MLP)
  rel_pos_sizes: Tuple[int, ...]  # table rows per grid axis; () if none

  @property
  def att_dim(self) -> int:
    return self.dim_out if self.expand_attn else self.dim_in

  @property
  def q_grid(self) -> Grid:
    return _pooled(self.grid, self._kernel, self.stride_q)

  @property
  def kv_grid(self) -> Grid:
    return _pooled(self.grid, self._kernel, self.stride_kv)

  @property
  def _kernel(self) -> Grid:
    return (3,) * len(self.grid)


class BlockOptions(NamedTuple):
  """What every block of a model shares (the model's options)."""
  has_cls: bool
  mlp_ratio: float
  residual_pooling: bool
  residual_pooling_cls: bool
  layer_norm_eps: float
  dropout: float
  dtype: Any


def relative_index(q_size: int, k_size: int) -> np.ndarray:
  """[q_size, k_size] rows of a table for the offsets between a query's
  and a key's position on one axis, the coarser of the two rescaled to the
  finer one's spacing (paper Sec. 3.1, as both references index it)."""
  q_ratio = max(k_size / q_size, 1.0)
  k_ratio = max(q_size / k_size, 1.0)
  distance = (np.arange(q_size)[:, None] * q_ratio
              - np.arange(k_size)[None, :] * k_ratio
              + (k_size - 1) * k_ratio)
  return distance.astype(np.int64)  # truncation, as torch's .long()


# ----------------------------------------------------------------------------
# Layers.


def _fold_grid(x: jax.Array, grid: Grid, has_cls: bool):
  """[B, heads, N, d] -> ([B * heads, *grid, d], class rows or None)."""
  batch, heads, _, dim = x.shape
  cls = x[:, :, :1] if has_cls else None
  patches = x[:, :, 1:] if has_cls else x
  return patches.reshape(batch * heads, *grid, dim), cls


def _unfold_grid(x: jax.Array, heads: int, cls) -> jax.Array:
  """Inverse of `_fold_grid` on a pooled grid."""
  dim = x.shape[-1]
  x = x.reshape(-1, heads, int(np.prod(x.shape[1:-1])), dim)
  return x if cls is None else jnp.concatenate([cls, x], axis=2)


class MultiScaleAttention(nn.Module):
  """Pooling attention with decomposed relative positions (see the module
  docstring). Takes [B, N, C_in] (a class token first, if any) on `grid`;
  returns [B, N', att_dim] on the query grid."""
  spec: BlockSpec
  options: BlockOptions
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    spec, options = self.spec, self.options
    dtype, has_cls = options.dtype, options.has_cls
    batch, tokens, _ = x.shape
    heads, dim = spec.heads, spec.att_dim
    head_dim = dim // heads
    qkv = nn.Dense(3 * dim, dtype=dtype, kernel_init=_DENSE_INIT,
                   name='qkv')(x)
    qkv = qkv.reshape(batch, tokens, 3, heads, head_dim)
    q, k, v = (qkv[:, :, i].transpose(0, 2, 1, 3) for i in range(3))

    ndim = len(spec.grid)
    kernel = (3,) * ndim

    def pool(name, t, stride):
      folded, cls = _fold_grid(t, spec.grid, has_cls)
      pooled = common.DepthwiseConv(
          kernel, stride, [(k // 2, k // 2) for k in kernel], dtype=dtype,
          name=f'pool_{name}')(folded)
      t = _unfold_grid(pooled, heads, cls)
      return nn.LayerNorm(options.layer_norm_eps, dtype=dtype,
                          name=f'norm_{name}')(t)

    if spec.pool_q:
      q = pool('q', q, spec.stride_q)
    k = pool('k', k, spec.stride_kv)
    v = pool('v', v, spec.stride_kv)
    q_grid = spec.q_grid if spec.pool_q else spec.grid
    kv_grid = spec.kv_grid

    logits = jnp.einsum('bhqd,bhkd->bhqk', q * head_dim ** -0.5, k)
    if spec.rel_pos_sizes:
      logits = logits + self._relative_positions(q, q_grid, kv_grid)
    probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    out = jnp.einsum('bhqk,bhkd->bhqd', probs.astype(dtype), v)
    if options.residual_pooling:
      if has_cls and not options.residual_pooling_cls:
        out = out + q.at[:, :, 0].set(0)
      else:
        out = out + q
    out = out.transpose(0, 2, 1, 3).reshape(batch, -1, dim)
    out = nn.Dense(dim, dtype=dtype, kernel_init=_DENSE_INIT,
                   name='proj')(out)
    return nn.Dropout(options.dropout)(out, self.deterministic)

  def _relative_positions(self, q, q_grid: Grid, kv_grid: Grid):
    """The decomposed relative position term, [B, heads, Nq, Nk] (zero on
    the class token's row and column)."""
    spec = self.spec
    ndim = len(q_grid)
    head_dim = q.shape[-1]
    batch, heads = q.shape[:2]
    has_cls = self.options.has_cls
    patches = q[:, :, 1:] if has_cls else q
    patches = patches.reshape(batch, heads, *q_grid, head_dim)
    names = _axis_names(ndim)
    letters = string.ascii_lowercase[8:8 + ndim]  # i, j, (k): query axes
    total = 0.0
    for axis, (rows, q_size, k_size) in enumerate(
        zip(spec.rel_pos_sizes, q_grid, kv_grid)):
      table = self.param(f'rel_pos_{names[axis]}', _DENSE_INIT,
                         (rows, head_dim), jnp.float32)
      index = relative_index(q_size, k_size)
      if index.max() >= rows:
        raise ValueError(
            f'MViT: relative offsets on axis {names[axis]} reach '
            f'{index.max()} but the table has {rows} rows (query size '
            f'{q_size}, key size {k_size}); use a grid the strides divide.')
      gathered = table.astype(q.dtype)[index]  # [q_a, k_a, d]
      term = jnp.einsum(
          f'bh{letters}d,{letters[axis]}zd->bh{letters}z', patches, gathered)
      shape = [batch, heads, *q_grid] + [1] * ndim
      shape[2 + ndim + axis] = k_size
      total = total + term.reshape(shape)
    total = jnp.broadcast_to(total, (batch, heads, *q_grid, *kv_grid))
    total = total.reshape(batch, heads, int(np.prod(q_grid)),
                          int(np.prod(kv_grid)))
    if has_cls:
      total = jnp.pad(total, ((0, 0), (0, 0), (1, 0), (1, 0)))
    return total


def _axis_names(ndim: int) -> str:
  return 'thw'[3 - ndim:]


def _max_pool_tokens(x: jax.Array, grid: Grid, stride: Grid,
                     has_cls: bool) -> jax.Array:
  """The shortcut's pooling: max over a (stride + 1) window per strided
  axis, padded by its half (-inf), the class token passed through."""
  if all(s == 1 for s in stride):
    return x
  cls = x[:, :1] if has_cls else None
  patches = x[:, 1:] if has_cls else x
  batch, _, channels = patches.shape
  window = tuple(s + 1 if s > 1 else s for s in stride)
  pooled = nn.max_pool(patches.reshape(batch, *grid, channels), window,
                       strides=stride,
                       padding=[(w // 2, w // 2) for w in window])
  pooled = pooled.reshape(batch, -1, channels)
  return pooled if cls is None else jnp.concatenate([cls, pooled], axis=1)


class MultiScaleBlock(nn.Module):
  """One multiscale block (module docstring); (tokens, rate) -> (tokens,
  None) like the other families' blocks."""
  spec: BlockSpec
  options: BlockOptions
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, drop_path_rate) -> Any:
    spec, options = self.spec, self.options
    norm = functools.partial(nn.LayerNorm, options.layer_norm_eps,
                             dtype=options.dtype)
    dense = functools.partial(nn.Dense, dtype=options.dtype,
                              kernel_init=_DENSE_INIT)
    widens = spec.dim_in != spec.dim_out
    normed = norm(name='norm1')(x)
    shortcut = x
    if widens and spec.expand_attn:
      shortcut = dense(spec.dim_out, name='shortcut_proj_attn')(normed)
    shortcut = _max_pool_tokens(shortcut, spec.grid, spec.stride_q,
                                options.has_cls)
    attended = MultiScaleAttention(spec, options, self.deterministic,
                                   name='attn')(normed)
    x = shortcut + common.drop_path(attended, drop_path_rate,
                                    self.deterministic, self)
    normed = norm(name='norm2')(x)
    shortcut = x
    if widens and not spec.expand_attn:
      shortcut = dense(spec.dim_out, name='shortcut_proj_mlp')(normed)
    transformed = common.Mlp(
        int(spec.att_dim * options.mlp_ratio), out_dim=spec.dim_out,
        dropout=options.dropout, dtype=options.dtype,
        kernel_init=_DENSE_INIT,
        bias_init=nn.initializers.zeros, name='mlp')(normed,
                                                      self.deterministic)
    x = shortcut + common.drop_path(transformed, drop_path_rate,
                                    self.deterministic, self)
    return x, None


class MViTStage(nn.Module):
  """A stage's blocks: `block_{j}` unrolled, or with `scan_run` (start,
  stop) blocks start .. stop - 1 (alike) as one scanned module
  `blocks_from_{start}`. Returns (its patch map [B, *grid, C], all its
  tokens): the map first, the stage output `models.features` reads."""
  specs: Tuple[BlockSpec, ...]
  drop_path_rates: Tuple[float, ...]
  options: BlockOptions
  remat: bool = False
  scan_run: Optional[Tuple[int, int]] = None

  @nn.compact
  def __call__(self, tokens: jax.Array, deterministic: bool):
    # The drop-path rate (argument 2, counting `self`) stays a Python float.
    block_cls = (nn.remat(MultiScaleBlock, static_argnums=(2,))
                 if self.remat else MultiScaleBlock)
    start, stop = self.scan_run or (len(self.specs), len(self.specs))
    if any(spec != self.specs[start] for spec in self.specs[start:stop]):
      raise ValueError(f'MViT: blocks {start}..{stop - 1} of a stage differ '
                       f'and cannot be scanned.')
    for index, (spec, rate) in enumerate(zip(self.specs,
                                             self.drop_path_rates)):
      if start < index < stop:
        continue  # in the scanned run
      if index == start and stop > start:
        scanned_cls = (nn.remat(MultiScaleBlock, prevent_cse=False)
                       if self.remat else MultiScaleBlock)
        scanned_cls = nn.scan(
            scanned_cls, variable_axes={'params': 0},
            split_rngs={'params': True, 'dropout': True}, in_axes=0,
            length=stop - start)
        tokens, _ = scanned_cls(spec, self.options, deterministic,
                                name=f'blocks_from_{start}')(
                                    tokens, jnp.asarray(
                                        self.drop_path_rates[start:stop]))
        continue
      tokens, _ = block_cls(spec, self.options, deterministic,
                            name=f'block_{index}')(tokens, rate)
    patches = tokens[:, 1:] if self.options.has_cls else tokens
    grid = self.specs[-1].q_grid
    return patches.reshape(tokens.shape[0], *grid, -1), tokens


# ----------------------------------------------------------------------------
# The model.


class MViT(nn.Module):
  """MViT / MViTv2 classifier of images or clips; the call contract of
  `ViT`.

  Attributes:
    embed_dim: width of stage 1; stage i has embed_dim * 2**(i - 1).
    depths: blocks per stage.
    num_heads: heads of stage 1, doubling per stage; or one per stage.
    num_frames: None for images [B, H, W, C]; T for clips [B, T, H, W, C].
    image_size: None, or the (H, W) (or side) inputs must have; checked.
    mlp_ratio: MLP hidden width over its input width.
    expand_attn: True: a stage's first block widens the channels in its
      attention (MViTv2); False: its last block widens them in the MLP
      (MViTv1, timm's MViTv2-L).
    class_token: a learned class token before the patch tokens.
    pool_type: 'avg' (the patch tokens' mean after the final norm) or
      'cls' (the class token's output).
    posemb: 'none', or 'learn': MViTv1's absolute embedding, the sum of a
      spatial table [h*w, C], a temporal one [t, C] (clips) and the class
      token's row.
    rel_pos: MViTv2's decomposed relative position embeddings.
    residual_pooling: add the pooled queries to the attention output.
    residual_pooling_cls: ... to the class token's row too (timm), or not
      (torchvision).
    pool_q_every_block: pool (and norm) the queries in every block with a
      stride-1 kernel 3 where not strided (MViTv2), or only where strided
      (MViTv1).
    stage_stride: spatial query stride of each stage's first block after
      the first stage.
    kv_stride: spatial key / value stride of stage 1, divided by each
      stage's query stride after (at least 1): 4 for images, 8 for clips.
    patch_kernel, patch_stride, patch_padding: the patch embedding's
      convolution, one value per grid axis ((t,) h, w); None: (7, 7),
      (4, 4), (3, 3) for images, (3, 7, 7), (2, 4, 4), (1, 3, 3) for clips
      (timm's and torchvision's).
    num_classes: head outputs; 0 or None: logits are the representation.
    dropout: before the head; attention_dropout: after the attention's and
      the MLP's output projections (torchvision's `attention_dropout`).
    stochastic_depth: drop-path rate of the last block, growing linearly
      from 0 over all blocks.
    head_bias_init, layer_norm_eps (1e-6 in both references), dtype, remat.
    scan: each stage's alike blocks as one scanned module (module
      docstring).

  `__call__` returns (logits, aux): aux['pre_logits'] is the pooled
  representation [B, C] (float32), aux['encoded'] the final normed tokens
  [B, (1 +) N, C] and aux['stage_features'] each stage's output grid
  [B, (T_i,) H_i, W_i, C_i] (class token left out; the last one before the
  final norm).
  """
  embed_dim: int
  depths: Sequence[int]
  num_heads: Union[int, Sequence[int]]
  num_frames: Optional[int] = None
  image_size: Optional[Union[int, Sequence[int]]] = None
  mlp_ratio: float = 4.0
  expand_attn: bool = True
  class_token: bool = False
  pool_type: str = 'avg'
  posemb: str = 'none'
  rel_pos: bool = True
  residual_pooling: bool = True
  residual_pooling_cls: bool = True
  pool_q_every_block: bool = True
  stage_stride: int = 2
  kv_stride: int = 4
  patch_kernel: Optional[Sequence[int]] = None
  patch_stride: Optional[Sequence[int]] = None
  patch_padding: Optional[Sequence[int]] = None
  num_classes: Optional[int] = 1000
  dropout: float = 0.0
  attention_dropout: float = 0.0
  stochastic_depth: float = 0.0
  head_bias_init: float = 0.0
  layer_norm_eps: float = 1e-6
  dtype: Any = jnp.float32
  scan: bool = False
  remat: bool = False

  @classmethod
  def from_variant(cls, variant: str, **kwargs) -> 'MViT':
    """MViT.from_variant('T'); MViT.from_variant('S', num_frames=16)."""
    video = kwargs.get('num_frames') is not None
    table = VIDEO_VARIANTS if video else VARIANTS
    if variant not in table:
      kind = 'clips (num_frames set)' if video else 'images (num_frames=None)'
      raise ValueError(f'Unknown MViT variant {variant!r} for {kind}; valid '
                       f'variants: {list(table)}')
    defaults = dict(VIDEO_DEFAULTS) if video else {}
    return cls(**{**defaults, **table[variant], **kwargs})

  def __post_init__(self):
    super().__post_init__()
    common.check_choice('MViT pool_type', self.pool_type, POOL_TYPES)
    common.check_choice('MViT posemb', self.posemb, POSEMBS)
    if self.pool_type == 'cls' and not self.class_token:
      raise ValueError('MViT pool_type=\'cls\' needs class_token=True.')
    if not isinstance(self.num_heads, int) and len(self.num_heads) != len(
        self.depths):
      raise ValueError(
          f'MViT needs one head count per stage or one for the first: '
          f'depths {tuple(self.depths)}, num_heads {tuple(self.num_heads)}.')
    for name in ('patch_kernel', 'patch_stride', 'patch_padding'):
      value = getattr(self, name)
      if value is not None and len(value) != self.grid_ndim:
        raise ValueError(
            f'MViT {name}={tuple(value)} needs {self.grid_ndim} values '
            f'(one per grid axis: {", ".join(_axis_names(self.grid_ndim))}).')
    for stage in range(len(self.depths)):
      width = self.embed_dim * 2 ** stage
      heads = self.stage_heads(stage)
      if width % heads:
        raise ValueError(f'MViT stage {stage} width {width} is not '
                         f'divisible by its {heads} heads.')
    if self.num_frames is not None and self.num_frames < 1:
      raise ValueError(f'MViT num_frames must be positive or None, got '
                       f'{self.num_frames}.')

  def scan_runs(self) -> List[Optional[Tuple[int, int]]]:
    """Per stage, the (start, stop) blocks that `scan` runs as one scanned
    module, or None: the blocks after the first (which pools and may
    widen), but before MViTv1's widening last block (expand_attn=False,
    every stage but the last)."""
    runs = []
    for stage, depth in enumerate(self.depths):
      last = stage == len(self.depths) - 1
      stop = depth if self.expand_attn or last else depth - 1
      runs.append((1, stop) if self.scan and stop > 1 else None)
    return runs

  def stack_params(self, params: Mapping[str, Any]) -> dict:
    """Unrolled parameters (`block_{j}` in every stage) -> this model's
    scanned layout (`scan_runs`); `common.unstack_blocks` inverts it."""
    params = dict(params)
    for stage, run in enumerate(self.scan_runs()):
      if run is not None and f'stage_{stage}' in params:
        params[f'stage_{stage}'] = common.stack_block_run(
            params[f'stage_{stage}'], *run)
    return params

  @property
  def grid_ndim(self) -> int:
    return 2 if self.num_frames is None else 3

  def stage_heads(self, stage: int) -> int:
    if isinstance(self.num_heads, int):
      return self.num_heads * 2 ** stage
    return self.num_heads[stage]

  def patch_embedding(self) -> Tuple[Grid, Grid, Grid]:
    """(kernel, stride, padding) of the patch embedding, per grid axis."""
    video = self.num_frames is not None
    defaults = (((3, 7, 7), (2, 4, 4), (1, 3, 3)) if video else
                ((7, 7), (4, 4), (3, 3)))
    given = (self.patch_kernel, self.patch_stride, self.patch_padding)
    return tuple(tuple(default if value is None else value)
                 for value, default in zip(given, defaults))

  @property
  def patch_size(self) -> int:
    """The patch embedding's spatial stride (what a pixel size is
    divided by)."""
    return self.patch_embedding()[1][-1]

  def input_grid(self, size: Sequence[int]) -> Grid:
    """The patch grid of an input of `size` ((T,) H, W); errors for sizes
    the patch embedding's strides do not divide."""
    kernel, strides, padding = self.patch_embedding()
    if any(n % s for n, s in zip(size, strides)):
      names = ('frames', 'height', 'width')[3 - len(size):]
      raise ValueError(
          f'MViT: input size {"x".join(map(str, size))} ({", ".join(names)}) '
          f'is not divisible by the patch embedding strides '
          f'{"x".join(map(str, strides))}.')
    return tuple((n + 2 * p - k) // s + 1
                 for n, k, s, p in zip(size, kernel, strides, padding))

  def block_specs(self, grid: Grid) -> List[List[BlockSpec]]:
    """Every block's BlockSpec, per stage, from the patch grid."""
    ndim = len(grid)
    spatial = slice(ndim - 2, ndim)
    kv = (1,) * (ndim - 2) + (self.kv_stride,) * 2
    stages = []
    dim = self.embed_dim
    for stage, depth in enumerate(self.depths):
      last = stage == len(self.depths) - 1
      heads = self.stage_heads(stage)
      stage_width = self.embed_dim * 2 ** stage
      q_first = ((1,) * (ndim - 2) + (self.stage_stride,) * 2 if stage > 0
                 else (1,) * ndim)
      kv = tuple(max(k // q, 1) for k, q in zip(kv, q_first))
      if self.expand_attn:
        out_dims = [stage_width] * depth
      else:
        next_width = stage_width * (1 if last else 2)
        out_dims = [stage_width] * (depth - 1) + [next_width]
      specs = []
      for index in range(depth):
        stride_q = q_first if index == 0 else (1,) * ndim
        rows = ()
        if self.rel_pos:
          size = max(grid[spatial])
          rows = tuple(
              2 * grid[0] - 1 if axis < ndim - 2 else
              2 * max(size // stride_q[axis], size // kv[axis]) - 1
              for axis in range(ndim))
        spec = BlockSpec(
            dim_in=dim, dim_out=out_dims[index], heads=heads, grid=grid,
            stride_q=stride_q, stride_kv=kv,
            pool_q=self.pool_q_every_block or any(s > 1 for s in stride_q),
            expand_attn=self.expand_attn, rel_pos_sizes=rows)
        specs.append(spec)
        dim = spec.dim_out
        grid = spec.q_grid
      stages.append(specs)
    return stages

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False):
    """Returns (logits, aux); aux holds 'pre_logits', 'encoded' and
    'stage_features'."""
    deterministic = not train
    ndim = self.grid_ndim
    if inputs.ndim != ndim + 2:
      wanted = ('images [B, H, W, C] (num_frames=None)' if ndim == 2 else
                f'clips [B, T, H, W, C] (num_frames={self.num_frames})')
      raise ValueError(f'MViT takes {wanted}; got an input of shape '
                       f'{tuple(inputs.shape)}.')
    if ndim == 3 and inputs.shape[1] != self.num_frames:
      raise ValueError(f'MViT was built for num_frames={self.num_frames}; '
                       f'got clips of {inputs.shape[1]} frames (shape '
                       f'{tuple(inputs.shape)}).')
    if self.image_size is not None:
      wanted = tuple(self.image_size) if not isinstance(
          self.image_size, int) else (self.image_size,) * 2
      if tuple(inputs.shape[-3:-1]) != wanted:
        raise ValueError(
            f'MViT was built for image_size={wanted}; got inputs of shape '
            f'{tuple(inputs.shape)}.')
    grid = self.input_grid(inputs.shape[1:-1])
    kernel, strides, padding = self.patch_embedding()
    tokens = nn.Conv(self.embed_dim, kernel, strides=strides,
                     padding=[(p, p) for p in padding],
                     dtype=self.dtype, name='patch_embed')(
                         inputs.astype(self.dtype))  # [B, *grid, C]
    batch = tokens.shape[0]
    tokens = tokens.reshape(batch, -1, self.embed_dim)
    if self.class_token:
      cls = self.param('cls_token', _DENSE_INIT, (1, 1, self.embed_dim),
                       jnp.float32)
      cls = jnp.broadcast_to(cls.astype(self.dtype),
                             (batch, 1, self.embed_dim))
      tokens = jnp.concatenate([cls, tokens], axis=1)
    if self.posemb == 'learn':
      tokens = tokens + self._absolute_posemb(grid).astype(self.dtype)

    stage_specs = self.block_specs(grid)
    rates = common.stochastic_depth_rates(self.stochastic_depth,
                                          sum(self.depths))
    options = BlockOptions(
        self.class_token, self.mlp_ratio, self.residual_pooling,
        self.residual_pooling_cls, self.layer_norm_eps,
        self.attention_dropout, self.dtype)
    stage_features = []
    start = 0
    runs = self.scan_runs()
    for stage, specs in enumerate(stage_specs):
      stage_map, tokens = MViTStage(
          tuple(specs), tuple(float(r) for r in
                              rates[start:start + len(specs)]),
          options, remat=self.remat, scan_run=runs[stage],
          name=f'stage_{stage}')(tokens, deterministic)
      start += len(specs)
      stage_features.append(stage_map)

    tokens = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='final_norm')(tokens)
    if self.pool_type == 'cls':
      representation = tokens[:, 0]
    else:
      start = 1 if self.class_token else 0
      representation = tokens[:, start:].mean(axis=1)
    representation = representation.astype(jnp.float32)
    aux = {'pre_logits': representation, 'encoded': tokens,
           'stage_features': stage_features}
    representation = nn.Dropout(self.dropout)(representation, deterministic)
    logits = common.classifier_head(representation, self.num_classes,
                                    self.head_bias_init)
    return logits, aux

  def _absolute_posemb(self, grid: Grid) -> jax.Array:
    """MViTv1's separable embedding, [1, (1 +) N, C]."""
    width = self.embed_dim
    spatial = self.param('pos_embed_spatial', _DENSE_INIT,
                         (grid[-2] * grid[-1], width), jnp.float32)
    posemb = spatial[None]  # [1, h*w, C]
    if len(grid) == 3:
      temporal = self.param('pos_embed_temporal', _DENSE_INIT,
                            (grid[0], width), jnp.float32)
      posemb = temporal[:, None] + posemb  # [t, h*w, C]
    posemb = posemb.reshape(1, -1, width)
    if self.class_token:
      cls = self.param('pos_embed_class', _DENSE_INIT, (width,),
                       jnp.float32)
      posemb = jnp.concatenate([cls[None, None], posemb], axis=1)
    return posemb


# ----------------------------------------------------------------------------
# Pretrained checkpoints.


def checkpoint_image_size(model: MViT, flat_params: Mapping[str, Any]
                          ) -> Tuple[int, int]:
  """The resolution the params are for, where their shapes tell it:
  MViTv1's spatial position table (h*w rows, a square grid), or the first
  block's relative position table (2 n - 1 rows for an n-side patch grid:
  its queries are not strided); else 224."""
  spatial = flat_params.get('pos_embed_spatial')
  table = flat_params.get('stage_0/block_0/attn/rel_pos_h')
  if spatial is not None:
    side = int(round(np.sqrt(spatial.shape[0])))
  elif table is not None:
    side = (table.shape[0] + 1) // 2
  else:
    return (224, 224)
  return (side * model.patch_size,) * 2


NAME = 'mvit'
MODEL = MViT
# The zoo listing's rows: the image variants (its counts are per image at
# one resolution; a clip model's come from `counts` with its num_frames).
ZOO = ('T', 'S', 'B', 'L')
# What `models.features` extracts: each stage's patch map (the class token
# left out); the final norm fits the last stage only.
FEATURES = dict(layers='stage_{}', norm='final_norm', norm_last_only=True)
