"""Layers shared by the model families: patch embedding, attention, MLP,
stochastic depth, position embeddings, attention pooling, variant parsing.

Parameter names are chosen to say what a tensor is (`query/kernel`,
`fc1/kernel`); `vit_jax.weights` maps other layouts (timm, the `.npz`
files of Google's original ViT code) onto them.
"""

from typing import Any, Callable, Mapping, Optional, Sequence, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = Any
Initializer = Callable[..., jax.Array]

# Initialisers of the original ViT code (Dosovitskiy et al. 2020, App. B.1):
# Xavier-uniform kernels, tiny-normal MLP biases.
DENSE_KERNEL_INIT = nn.initializers.xavier_uniform()
MLP_BIAS_INIT = nn.initializers.normal(stddev=1e-6)


def parse_variant(variant: str, table: Mapping[str, Mapping[str, Any]],
                  family: str) -> Tuple[Mapping[str, Any], int]:
  """Decodes "B/16" into (the size row of `table`, patch size 16)."""
  size, sep, patch = variant.partition('/')
  if not sep or not patch.isdigit():
    raise ValueError(
        f'{family} variant {variant!r} must look like SIZE/PATCH, e.g. '
        f'"B/16"; valid sizes: {sorted(table)}')
  if size not in table:
    raise ValueError(
        f'Unknown {family} size {size!r} in variant {variant!r}; valid sizes: '
        f'{list(table)}')
  return table[size], int(patch)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
  if value not in choices:
    raise ValueError(f'Unknown {name} {value!r}; valid choices: {list(choices)}')


def stochastic_depth_rates(rate: float, depth: int) -> np.ndarray:
  """Per-block drop-path rates growing linearly from 0 to `rate`.

  The linear rule of Huang et al. 2016 ("Deep Networks with Stochastic
  Depth", Sec. 3), as used by DeiT and Swin.
  """
  if depth <= 1:
    return np.full((depth,), rate, np.float32)
  return np.linspace(0.0, rate, depth, dtype=np.float32)


def drop_path(inputs: jax.Array, rate, deterministic: bool,
              rng_module: nn.Module) -> jax.Array:
  """Zeroes whole samples of a residual branch with probability `rate`.

  `rate` may be a traced scalar (per-layer rates under `nn.scan`).
  Kept samples are scaled by 1 / (1 - rate) so the expectation is unchanged.
  """
  if deterministic:
    return inputs
  if isinstance(rate, (int, float)) and rate == 0.0:
    return inputs
  keep_prob = 1.0 - jnp.asarray(rate, jnp.float32)
  rng = rng_module.make_rng('dropout')
  mask_shape = (inputs.shape[0],) + (1,) * (inputs.ndim - 1)
  keep = jax.random.bernoulli(rng, keep_prob, mask_shape)
  scale = jnp.where(keep_prob > 0, 1.0 / jnp.maximum(keep_prob, 1e-12), 0.0)
  return inputs * (keep * scale).astype(inputs.dtype)


def posemb_sincos_2d(height: int, width: int, dim: int,
                     temperature: float = 10_000.0,
                     num_prefix_tokens: int = 0) -> np.ndarray:
  """Fixed 2-D sine-cosine position embedding, [prefix + height * width, dim].

  A quarter of the channels each for sin(y), cos(y), sin(x), cos(x) with
  geometric frequencies (Chen et al. 2021, MoCo v3, Sec. 4; used in
  "Better plain ViT baselines" and MAE). The order of the four quarters
  follows the MAE reference (x: the column index first, then y). Prefix
  tokens (a class token) get zero rows, as in MAE.
  """
  if dim % 4:
    raise ValueError(f'Sin-cos position embedding needs a width divisible by '
                     f'4, got {dim}.')
  quarter = dim // 4
  omega = 1.0 / temperature ** (np.arange(quarter, dtype=np.float64) / quarter)
  ys, xs = np.meshgrid(np.arange(height, dtype=np.float64),
                       np.arange(width, dtype=np.float64), indexing='ij')
  ys = ys.reshape(-1)[:, None] * omega[None]  # [H*W, D/4]
  xs = xs.reshape(-1)[:, None] * omega[None]
  table = np.concatenate([np.sin(xs), np.cos(xs), np.sin(ys), np.cos(ys)],
                         axis=1)  # [H*W, D]
  prefix = np.zeros((num_prefix_tokens, dim))
  return np.concatenate([prefix, table]).astype(np.float32)


class PatchEmbed(nn.Module):
  """Non-overlapping patches, linearly projected: a strided convolution."""
  patch_size: int
  width: int
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = nn.initializers.lecun_normal()
  use_bias: bool = True

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:  # [B, H, W, C]
    # Leading axes beyond the batch (a clip's frames: [B, T, H, W, C]) are
    # kept: every frame is embedded alike.
    *leading, height, width, channels = images.shape
    images = images.reshape(-1, height, width, channels)
    p = self.patch_size
    if height % p or width % p:
      raise ValueError(
          f'Image size {height}x{width} is not divisible by the patch size '
          f'{p}.')
    if self.has_variable('params', 'kernel'):
      expected = self.get_variable('params', 'kernel').shape[2]
      if expected != channels:
        raise ValueError(
            f'Images have {channels} channels but the patch-embedding kernel '
            f'{self.get_variable("params", "kernel").shape} expects '
            f'{expected}.')
    kernel = self.param('kernel', self.kernel_init,
                        (p, p, channels, self.width), jnp.float32)
    tokens = jax.lax.conv_general_dilated(
        images.astype(self.dtype), kernel.astype(self.dtype),
        window_strides=(p, p), padding='VALID',
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
    tokens = tokens.reshape(*leading, *tokens.shape[1:])
    if not self.use_bias:
      return tokens  # [B, H/p, W/p, D]
    bias = self.param('bias', nn.initializers.zeros, (self.width,),
                      jnp.float32)
    return tokens + bias.astype(self.dtype)  # [B, H/p, W/p, D]


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x): the sigmoid approximation of GELU (Hendrycks and
  Gimpel 2016, Sec. 2) that OpenAI's CLIP image towers were trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


def swiglu(x: jax.Array) -> jax.Array:
  """SiLU(a) * b of the two halves [a, b] of the hidden units (Shazeer
  2020, "GLU Variants Improve Transformer"): the MLP's second layer then
  takes half its first layer's width (DINOv2's giant, timm's
  SwiGLUPacked)."""
  gate, value = jnp.split(x, 2, axis=-1)
  return nn.silu(gate) * value


# The MLP's activation by name. 'gelu' is the exact (erf) GELU, as in the
# reference PyTorch implementations.
ACTIVATIONS = {
    'gelu': lambda x: nn.gelu(x, approximate=False),
    'quick_gelu': quick_gelu,
    'swiglu': swiglu,
}


class Mlp(nn.Module):
  """Two dense layers with an activation (`ACTIVATIONS`) in between (the
  transformer MLP block)."""
  hidden_dim: int
  out_dim: Optional[int] = None
  dropout: float = 0.0
  dtype: Dtype = jnp.float32
  kernel_init: Initializer = DENSE_KERNEL_INIT
  bias_init: Initializer = MLP_BIAS_INIT
  activation: str = 'gelu'

  @nn.compact
  def __call__(self, inputs: jax.Array, deterministic: bool) -> jax.Array:
    out_dim = self.out_dim or inputs.shape[-1]
    hidden = nn.Dense(self.hidden_dim, dtype=self.dtype,
                      kernel_init=self.kernel_init, bias_init=self.bias_init,
                      name='fc1')(inputs)
    hidden = ACTIVATIONS[self.activation](hidden)
    hidden = nn.Dropout(self.dropout)(hidden, deterministic)
    outputs = nn.Dense(out_dim, dtype=self.dtype,
                       kernel_init=self.kernel_init, bias_init=self.bias_init,
                       name='fc2')(hidden)
    return nn.Dropout(self.dropout)(outputs, deterministic)


class BatchNorm(nn.Module):
  """Batch normalisation over every axis but the last (Ioffe and Szegedy
  2015), with PyTorch's conventions so timm weights and statistics carry
  over: `momentum` weighs the new batch (running = (1 - m) running + m
  batch), the running variance is updated with the unbiased batch variance
  and normalisation uses the biased one.

  Parameters 'scale', 'bias'; running averages 'mean', 'var' in the
  'batch_stats' collection, which the train state carries
  (`vit_jax.train`). With train=True the batch's statistics normalise and,
  when 'batch_stats' is mutable, update the running averages; under `jit`
  with a sharded batch they are statistics over the global batch (all
  devices, all processes). With train=False the running averages are used.
  """
  momentum: float = 0.1
  epsilon: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
    features = inputs.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (features,), jnp.float32)
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros,
                                 (features,), jnp.float32)
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,),
                                jnp.float32)
    if train:
      axes = tuple(range(inputs.ndim - 1))
      values = inputs.astype(jnp.float32)
      mean = values.mean(axes)
      var = jnp.square(values - mean).mean(axes)
      if self.is_mutable_collection('batch_stats') and (
          not self.is_initializing()):
        count = int(np.prod([inputs.shape[a] for a in axes]))
        unbiased = var * (count / max(count - 1, 1))
        running_mean.value = ((1 - self.momentum) * running_mean.value
                              + self.momentum * mean)
        running_var.value = ((1 - self.momentum) * running_var.value
                             + self.momentum * unbiased)
    else:
      mean, var = running_mean.value, running_var.value
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    shift = bias - mean * multiplier
    return (inputs * multiplier.astype(self.dtype)
            + shift.astype(self.dtype)).astype(self.dtype)


# `attention_impl` values: None (choose, see `attention_backend`) or forced.
ATTENTION_IMPLS = (None, 'xla', 'cudnn')


def attention_backend(dtype: Dtype, head_dim: int) -> str:
  """'cudnn' where cuDNN's fused flash attention applies, else 'xla'.

  `jax.nn.dot_product_attention(implementation=None)` always takes the XLA
  path, so the choice is made here: on GPUs, for half-precision inputs and
  head widths cuDNN supports (multiples of 8 up to 128).
  """
  on_gpu = jax.default_backend() == 'gpu'
  half = jnp.dtype(dtype) in (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
  if on_gpu and half and head_dim % 8 == 0 and head_dim <= 128:
    return 'cudnn'
  return 'xla'


# `DepthwiseConv.impl` values: None (choose, see `depthwise_backend`) or
# forced.
DEPTHWISE_IMPLS = (None, 'conv', 'shifts')
# The most kernel taps for which shifted multiply-adds beat XLA's grouped
# convolution on CPUs (their backward pass grows with the taps).
MAX_SHIFT_TAPS = 27


def depthwise_backend(kernel_size: Sequence[int]) -> str:
  """'shifts' on CPUs for kernels of at most MAX_SHIFT_TAPS taps, else
  'conv'.

  XLA's CPU convolution with one group per channel (and its gradients) is
  far slower than the same sum written as shifted multiply-adds for small
  kernels: benchmarks/depthwise_conv.py (benchmarks/README.md: 3x3x3
  forward + backward 89 against 1.7 ms, 3x3 53 against 13 ms; at 9x9 the
  backward pass was not reliably faster). Accelerators run the grouped
  convolution natively.
  """
  if (jax.default_backend() == 'cpu'
      and int(np.prod(kernel_size)) <= MAX_SHIFT_TAPS):
    return 'shifts'
  return 'conv'


class DepthwiseConv(nn.Module):
  """A depthwise convolution over the axes between batch and channels
  ([B, *spatial, C] -> [B, *spatial', C]), zero padding `padding` per
  axis. Its parameters are `nn.Conv`'s with feature_group_count=C (kernel
  [*kernel_size, 1, C] then bias [C], same names, same initialisers), so
  either implementation reads the same checkpoints."""
  kernel_size: Sequence[int]
  strides: Sequence[int]
  padding: Sequence[Tuple[int, int]]
  use_bias: bool = False
  dtype: Dtype = jnp.float32
  kernel_init: Callable[..., jax.Array] = nn.initializers.lecun_normal()
  impl: Optional[str] = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    kernel_size = tuple(self.kernel_size)
    kernel = self.param('kernel', self.kernel_init,
                        kernel_size + (1, channels), jnp.float32)
    bias = (self.param('bias', nn.initializers.zeros, (channels,),
                       jnp.float32) if self.use_bias else None)
    kernel = kernel.astype(self.dtype)
    x = x.astype(self.dtype)
    impl = self.impl or depthwise_backend(kernel_size)
    check_choice('DepthwiseConv impl', impl, DEPTHWISE_IMPLS[1:])
    if impl == 'conv':
      spatial = 'DHW'[3 - len(kernel_size):]
      numbers = (f'N{spatial}C', f'{spatial}IO', f'N{spatial}C')
      out = jax.lax.conv_general_dilated(
          x, kernel, tuple(self.strides), tuple(map(tuple, self.padding)),
          dimension_numbers=numbers, feature_group_count=channels)
    else:
      padded = jnp.pad(x, ((0, 0), *map(tuple, self.padding), (0, 0)))
      out_sizes = [(size - k) // s + 1 for size, k, s in
                   zip(padded.shape[1:-1], kernel_size, self.strides)]
      out = None
      for offset in np.ndindex(*kernel_size):
        index = tuple(slice(o, o + (n - 1) * s + 1, s) for o, n, s in
                      zip(offset, out_sizes, self.strides))
        term = padded[(slice(None), *index)] * kernel[offset + (0,)]
        out = term if out is None else out + term
    if bias is not None:
      out = out + bias.astype(self.dtype)
    return out


class Attention(nn.Module):
  """Multi-head dot-product attention (Vaswani et al. 2017).

  Projections keep heads as a separate axis: query/key/value kernels are
  [D, heads, head_dim], the output kernel [heads, head_dim, D]. The product
  itself goes through `jax.nn.dot_product_attention`: `implementation=None`
  picks cuDNN flash attention where it applies (see `attention_backend`),
  XLA otherwise; 'xla' or 'cudnn' force one.

  With `capture_weights` set and the 'intermediates' collection mutable,
  the probabilities are computed explicitly (einsum and softmax) and sown
  as 'intermediates' / 'attention', float32 [B, heads, Nq, Nk], before any
  dropout (`vit_jax.attention_maps`); otherwise the fused path runs as it
  would without the flag.
  """
  num_heads: int
  dropout: float = 0.0  # attention-probability dropout; needs the XLA path.
  dtype: Dtype = jnp.float32
  implementation: Optional[str] = None
  capture_weights: bool = False
  # Whether the query, key and value projections have biases (BEiT's have
  # none on the key: a bias there adds the same logit to every key).
  qkv_bias: Tuple[bool, bool, bool] = (True, True, True)
  # A LayerNorm (`norm`, this epsilon) of the heads' concatenated outputs
  # before the output projection (EVA-02 CLIP's sub-LN); None: none.
  inner_norm_eps: Optional[float] = None

  @nn.compact
  def __call__(self, queries: jax.Array, keys_values: jax.Array,
               deterministic: bool = True,
               bias: Optional[jax.Array] = None,
               rotate: Optional[Callable[[jax.Array], jax.Array]] = None
               ) -> jax.Array:
    """`rotate` maps the projected queries and keys [B, N, H, hd] before
    their product (rotary position embedding, `vit_jax.models.eva`)."""
    width = queries.shape[-1]
    if width % self.num_heads:
      raise ValueError(f'Width {width} is not divisible by the number of '
                       f'heads {self.num_heads}.')
    head_dim = width // self.num_heads
    query_bias, key_bias, value_bias = self.qkv_bias
    project = lambda name, bias: nn.DenseGeneral(  # noqa: E731
        (self.num_heads, head_dim), dtype=self.dtype, use_bias=bias,
        kernel_init=DENSE_KERNEL_INIT, name=name)
    query = project('query', query_bias)(queries)  # [B, Nq, H, hd]
    key = project('key', key_bias)(keys_values)  # [B, Nk, H, hd]
    value = project('value', value_bias)(keys_values)  # [B, Nk, H, hd]
    if rotate is not None:
      query, key = rotate(query), rotate(key)
    capture = (self.capture_weights
               and self.is_mutable_collection('intermediates'))
    if capture or (self.dropout > 0.0 and not deterministic):
      logits = jnp.einsum('bqhd,bkhd->bhqk', query, key) / np.sqrt(head_dim)
      if bias is not None:
        logits = logits + bias
      probs = jax.nn.softmax(logits.astype(jnp.float32))  # [B, H, Nq, Nk]
      if capture:
        self.sow('intermediates', 'attention', probs)
      probs = probs.astype(self.dtype)
      probs = nn.Dropout(self.dropout)(probs, deterministic)
      attended = jnp.einsum('bhqk,bkhd->bqhd', probs, value)
    else:
      implementation = self.implementation or attention_backend(
          query.dtype, head_dim)
      attended = jax.nn.dot_product_attention(
          query, key, value, bias=bias.astype(query.dtype) if bias is not None
          else None, implementation=implementation)  # [B, Nq, H, hd]
    if self.inner_norm_eps is not None:
      shape = attended.shape
      attended = nn.LayerNorm(self.inner_norm_eps, dtype=self.dtype,
                              name='norm')(
                                  attended.reshape(*shape[:-2], width))
      attended = attended.reshape(shape)
    return nn.DenseGeneral(width, axis=(-2, -1), dtype=self.dtype,
                           kernel_init=DENSE_KERNEL_INIT,
                           name='out')(attended)  # [B, Nq, D]


def classifier_head(representation: jax.Array, num_classes: Optional[int],
                    head_bias_init: float):
  """The linear head (named 'head'); call inside a compact method.

  Zero-initialised kernel (ViT paper, Sec. 3.1) and a constant bias (e.g.
  -10 for sigmoid losses, Scaling ViT). With no classes the representation
  is returned as it is.
  """
  if not num_classes:
    return representation
  return nn.Dense(num_classes, kernel_init=nn.initializers.zeros,
                  bias_init=nn.initializers.constant(head_bias_init),
                  name='head')(representation)  # [..., num_classes]


class MAPHead(nn.Module):
  """Multi-head attention pooling with a learned probe.

  Zhai et al. 2021, "Scaling Vision Transformers", Sec. 3.2 (after Lee et
  al. 2019, "Set Transformer"): a learned query attends over all tokens,
  followed by a residual MLP block.
  """
  num_heads: int
  mlp_dim: int
  dtype: Dtype = jnp.float32
  layer_norm_eps: float = 1e-6
  activation: str = 'gelu'

  @nn.compact
  def __call__(self, tokens: jax.Array) -> jax.Array:  # [B, N, D]
    batch, _, width = tokens.shape
    probe = self.param('probe', nn.initializers.xavier_uniform(),
                       (1, 1, width), jnp.float32)
    probe = jnp.broadcast_to(probe.astype(self.dtype), (batch, 1, width))
    pooled = Attention(self.num_heads, dtype=self.dtype, name='attn')(
        probe, tokens)  # [B, 1, D]
    normed = nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype,
                          name='norm')(pooled)
    pooled = pooled + Mlp(self.mlp_dim, dtype=self.dtype,
                          activation=self.activation, name='mlp')(
                              normed, deterministic=True)
    return pooled[:, 0]  # [B, D]


def run_blocks(block_cls, block_kwargs: Mapping[str, Any], tokens: jax.Array,
               depth: int, stochastic_depth: float, scan: bool,
               remat: bool,
               block_overrides: Optional[Mapping[int, Mapping[str, Any]]]
               = None) -> jax.Array:
  """Applies `depth` blocks to `tokens`; call it inside a compact method,
  whose module becomes the blocks' parent.

  Each block maps (tokens, drop-path rate) -> (tokens, None). Unrolled blocks
  are named `block_{i}`; with `scan` one scanned module `blocks` holds every
  parameter with a leading depth axis (see `stack_blocks`). Drop-path rates
  grow linearly with depth either way. `block_overrides` {i: kwargs}
  changes block i's attributes (unrolled blocks only).
  """
  block_overrides = block_overrides or {}
  if scan and block_overrides:
    raise ValueError(f'Per-block settings {dict(block_overrides)} need '
                     f'unrolled blocks (scan=False).')
  rates = stochastic_depth_rates(stochastic_depth, depth)
  if remat:
    block_cls = nn.remat(block_cls, prevent_cse=not scan)
  if scan:
    scanned_cls = nn.scan(
        block_cls, variable_axes={'params': 0, 'batch_stats': 0},
        split_rngs={'params': True, 'dropout': True}, in_axes=0,
        length=depth)
    tokens, _ = scanned_cls(name='blocks', **block_kwargs)(
        tokens, jnp.asarray(rates))
    return tokens
  for index in range(depth):
    kwargs = {**block_kwargs, **block_overrides.get(index, {})}
    tokens, _ = block_cls(name=f'block_{index}', **kwargs)(
        tokens, float(rates[index]))
  return tokens


def _block_index(name: str) -> Optional[int]:
  prefix = 'block_'
  if name.startswith(prefix) and name[len(prefix):].isdigit():
    return int(name[len(prefix):])
  return None


def _scanned_start(name: str) -> Optional[int]:
  """The first block index of a scanned run's key: `blocks` (all of a
  module's blocks, from 0) or `blocks_from_{s}` (a run from block s, the
  blocks before it unrolled: MViT's stages)."""
  if name == 'blocks':
    return 0
  prefix = 'blocks_from_'
  if name.startswith(prefix) and name[len(prefix):].isdigit():
    return int(name[len(prefix):])
  return None


def stack_blocks(params: Mapping[str, Any]) -> dict:
  """Converts unrolled `block_{i}` parameters to the scanned `blocks` layout.

  Works on any (nested) parameter dict: every dict holding `block_0` ..
  `block_{n-1}` gets them replaced by one `blocks` entry whose leaves carry
  a leading axis of size n. (MViT scans only part of each stage: its
  `stack_params` uses `stack_block_run`.)
  """
  if not isinstance(params, Mapping):
    return params
  indices = sorted(i for i in map(_block_index, params) if i is not None)
  converted = {name: stack_blocks(value) for name, value in params.items()
               if _block_index(name) is None}
  if indices:
    if indices != list(range(len(indices))):
      raise ValueError(f'Blocks are not numbered 0..{len(indices) - 1}: '
                       f'{indices}')
    converted['blocks'] = _stack(
        [stack_blocks(params[f'block_{i}']) for i in indices])
  return converted


def _stack(trees: Sequence[Any]) -> Any:
  """Alike parameter trees -> one tree, leaves stacked on a new axis 0."""
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def stack_block_run(params: Mapping[str, Any], start: int,
                    stop: int) -> dict:
  """One module's `block_{start}` .. `block_{stop - 1}` ->
  `blocks_from_{start}` (leaves with a leading axis of stop - start); its
  other entries as they are."""
  missing = [f'block_{i}' for i in range(start, stop)
             if f'block_{i}' not in params]
  if missing:
    raise ValueError(f'Cannot stack blocks {start}..{stop - 1}: '
                     f'{", ".join(missing)} not in {sorted(params)}.')
  converted = {name: value for name, value in params.items()
               if _block_index(name) not in range(start, stop)}
  converted[f'blocks_from_{start}'] = _stack(
      [params[f'block_{i}'] for i in range(start, stop)])
  return converted


def unstack_blocks(params: Mapping[str, Any]) -> dict:
  """Inverse of `stack_blocks` and `stack_block_run`: `blocks` ->
  `block_0` .., `blocks_from_{s}` -> `block_{s}` ..."""
  if not isinstance(params, Mapping):
    return params
  converted = {name: unstack_blocks(value) for name, value in params.items()
               if _scanned_start(name) is None}
  for name, value in params.items():
    start = _scanned_start(name)
    if start is None:
      continue
    depth = jax.tree.leaves(value)[0].shape[0]
    for index in range(depth):
      converted[f'block_{start + index}'] = unstack_blocks(
          jax.tree.map(lambda x, i=index: x[i], value))
  return converted
