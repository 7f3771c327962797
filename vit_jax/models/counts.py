"""Parameters and forward FLOPs of every family, counted from sizes alone.

    param_count(model, image_size)    the 'params' collection's size
    forward_flops(model, image_size)  one image's inference forward pass
                                      (a video model's: one clip of its
                                      num_frames frames of image_size)
    model_tally(model, image_size)    both, as a Tally

Each family's count walks its layers in the order of the model's
`__call__`, so a row of the zoo listing (`python -m vit_jax.models`)
takes microseconds, where lowering a model for XLA's cost analysis takes
seconds.

FLOPs follow the convention of `vit_jax.compute`: a multiply-add is 2
FLOPs. Counted exactly: every dense layer, the attention products (q.k and
probs.v; XCiT's [hd, hd] cross-covariance and its product with the
values) and every convolution, where only the kernel taps that fall inside
the input count, as XLA counts them (taps on zero padding multiply
nothing; papers usually count them, which adds 0.1-0.3% to XCiT's totals
at 224 px and 0.6-1.9% to ConvMixer's). Left out: elementwise work (bias
and residual adds, norms, softmax, GELU, LayerScale, position
embeddings), gathers, sorts and the MAE loss, as in the papers' counts.
XLA's cost analysis counts those too, so its total is higher: at the
zoo's 224 px sizes by 0.6-13%, most for narrow models (XCiT-N12/16,
width 128: 13%; ViT-B/16: 1.6%): the exact GELU alone is ~66 FLOPs an
element to XLA (its erf becomes a polynomial), about 16 / width of the
MLP's products. tests/test_counts.py checks the products exactly against
the traced program, and the total against XLA's.

BatchNorm's running averages ('batch_stats') are not parameters.
"""

import math
from typing import Callable, Dict, Tuple, Type, Union

import flax.linen as nn

from vit_jax.models import beit
from vit_jax.models import convmixer
from vit_jax.models import eva
from vit_jax.models import mae
from vit_jax.models import mixer
from vit_jax.models import mvit
from vit_jax.models import segformer
from vit_jax.models import swin
from vit_jax.models import swinv2
from vit_jax.models import timesformer
from vit_jax.models import unetr
from vit_jax.models import vit
from vit_jax.models import xcit

Pair = Tuple[int, int]


def _pair(image_size: Union[int, Pair]) -> Pair:
  if isinstance(image_size, int):
    return (image_size, image_size)
  height, width = image_size
  return (int(height), int(width))


def _check_divisible(image_size: Pair, patch_size: int, family: str) -> Pair:
  height, width = image_size
  if height % patch_size or width % patch_size:
    raise ValueError(f'{family}: image size {height}x{width} is not '
                     f'divisible by the patch size {patch_size}.')
  return (height // patch_size, width // patch_size)


def valid_taps(size: int, kernel: int, stride: int = 1,
               padding: Pair = (0, 0)) -> int:
  """Kernel taps inside the input, summed over the outputs of one axis."""
  low, high = padding
  outputs = (size + low + high - kernel) // stride + 1
  return sum(max(0, min(kernel, low + size - o * stride)
                    - max(0, low - o * stride)) for o in range(outputs))


def same_padding(kernel: int) -> Pair:
  """'SAME' padding at stride 1, lax's rule: kernel - 1 in all, the odd
  one after."""
  return ((kernel - 1) // 2, kernel // 2)


class Tally:
  """Running totals of parameters and FLOPs; one method per kind of layer.

  `tokens` is how many vectors a layer is applied to (for one image).
  """

  def __init__(self):
    self.params = 0
    self.flops = 0

  def param(self, count: int) -> None:
    self.params += count

  def norm(self, width: int) -> None:
    """LayerNorm or BatchNorm: scale and bias (no FLOPs counted)."""
    self.params += 2 * width

  def dense(self, tokens: int, fan_in: int, fan_out: int,
            bias: bool = True) -> None:
    self.params += fan_in * fan_out + (fan_out if bias else 0)
    self.flops += 2 * tokens * fan_in * fan_out

  def conv(self, grid: Pair, kernel: int, in_channels: int,
           out_channels: int, stride: int = 1, padding: Pair = (0, 0),
           groups: int = 1, bias: bool = True) -> Pair:
    """A 2-D convolution (`padding`: one (low, high) pair for both axes);
    returns the output grid."""
    per_group = in_channels // groups
    self.params += (kernel * kernel * per_group * out_channels
                    + (out_channels if bias else 0))
    taps = [valid_taps(side, kernel, stride, padding) for side in grid]
    self.flops += 2 * taps[0] * taps[1] * per_group * out_channels
    return tuple((side + sum(padding) - kernel) // stride + 1
                 for side in grid)

  def mlp(self, tokens: int, width: int, hidden: int) -> None:
    self.dense(tokens, width, hidden)
    self.dense(tokens, hidden, width)

  def attention(self, queries: int, keys: int, width: int) -> None:
    """Multi-head attention (`common.Attention`): projections, q.k and
    probs.v (2 x queries x keys x width multiply-adds over all heads)."""
    self.dense(queries, width, width)  # query
    self.dense(keys, width, width)  # key
    self.dense(keys, width, width)  # value
    self.flops += 2 * 2 * queries * keys * width
    self.dense(queries, width, width)  # out

  def head(self, tokens: int, width: int, num_classes) -> None:
    if num_classes:
      self.dense(tokens, width, num_classes)


def _encoder_blocks(tally: Tally, tokens: int, width: int, depth: int,
                    mlp_dim: int, layer_scale: bool = False,
                    gated: bool = False) -> None:
  """`vit.Encoder`: pre-norm attention and MLP blocks (each branch with a
  LayerScale of `width` scales, if `layer_scale`; a gated MLP's output
  layer takes half its hidden units, if `gated`)."""
  for _ in range(depth):
    tally.norm(width)
    tally.attention(tokens, tokens, width)
    tally.norm(width)
    if gated:
      tally.dense(tokens, width, mlp_dim)
      tally.dense(tokens, mlp_dim // 2, width)
    else:
      tally.mlp(tokens, width, mlp_dim)
    if layer_scale:
      tally.param(2 * width)  # ls1, ls2


def _vit(model: vit.ViT, image_size: Pair, channels: int) -> Tally:
  tally = Tally()
  grid_h, grid_w = _check_divisible(image_size, model.patch_size, 'ViT')
  patches = grid_h * grid_w
  width = model.width
  tally.conv(image_size, model.patch_size, channels, width,
             stride=model.patch_size, bias=not model.pre_norm)
  tokens = patches + model.num_prefix_tokens
  tally.param(model.num_prefix_tokens * width)  # cls_token, reg_token
  if model.posemb == 'learn':
    tally.param((patches + model.posemb_prefix_tokens) * width)
  if model.pre_norm:
    tally.norm(width)  # norm_pre
  _encoder_blocks(tally, tokens, width, model.depth, model.mlp_dim,
                  model.layer_scale_init is not None,
                  model.activation == 'swiglu')
  tally.norm(width)  # encoder_norm, or fc_norm after pooling
  pooled = 1
  if model.pool_type == 'map':
    tally.param(width)  # probe
    tally.attention(1, tokens, width)
    tally.norm(width)
    tally.mlp(1, width, model.mlp_dim)
  elif model.pool_type == 'none':
    pooled = tokens
  if model.representation_size:
    tally.dense(pooled, width, model.representation_size)
    width = model.representation_size
  tally.head(pooled, width, model.num_classes)
  return tally


def _mixer(model: mixer.Mixer, image_size: Pair, channels: int) -> Tally:
  tally = Tally()
  grid_h, grid_w = _check_divisible(image_size, model.patch_size, 'Mixer')
  patches = grid_h * grid_w
  width = model.width
  tally.conv(image_size, model.patch_size, channels, width,
             stride=model.patch_size)
  for _ in range(model.depth):
    tally.norm(width)
    tally.mlp(width, patches, model.tokens_mlp_dim)  # per channel, over S
    tally.norm(width)
    tally.mlp(patches, width, model.channels_mlp_dim)
  tally.norm(width)
  tally.head(1, width, model.num_classes)
  return tally


def _swin(model: swin.Swin, image_size: Pair, channels: int) -> Tally:
  """Swin, and Swin V2 (a subclass): its merging norms the reduced 2C
  features, its key has no bias, and each block has a logit scale per head
  and a position-bias MLP (run once over the window's offsets) in place of
  the bias table."""
  v2 = isinstance(model, swinv2.SwinV2)
  tally = Tally()
  geometry = swin.stage_geometry(image_size, model.patch_size,
                                 len(model.depths), model.window_size)
  width = model.width
  tally.conv(image_size, model.patch_size, channels, width,
             stride=model.patch_size)
  tally.norm(width)  # embed_norm
  for stage, (depth, heads) in enumerate(zip(model.depths,
                                             model.num_heads)):
    feature, window, _ = geometry[stage]
    tokens = feature[0] * feature[1]
    if stage > 0:
      tally.norm(2 * width if v2 else 4 * width)
      tally.dense(tokens, 4 * width, 2 * width, bias=False)
      width *= 2
    window_area = window[0] * window[1]
    offsets = (2 * window[0] - 1) * (2 * window[1] - 1)
    for _ in range(depth):
      tally.norm(width)
      if v2:
        tally.param(heads)  # logit_scale
        tally.dense(offsets, 2, swinv2.CPB_HIDDEN)
        tally.dense(offsets, swinv2.CPB_HIDDEN, heads, bias=False)
        tally.param(2 * width)  # query and value biases; the key has none
      else:
        tally.param(offsets * heads)  # relative_position_bias_table
      # Attention within each window: keys are the window's tokens.
      tally.dense(tokens, width, 3 * width, bias=not v2)  # query, key, value
      tally.flops += 2 * 2 * tokens * window_area * width
      tally.dense(tokens, width, width)  # out
      tally.norm(width)
      tally.mlp(tokens, width, int(width * model.mlp_ratio))
  tally.norm(width)  # final_norm
  tally.head(1, width, model.num_classes)
  return tally


def _mae(model: mae.MAE, image_size: Pair, channels: int) -> Tally:
  del channels  # the model's own num_channels
  tally = Tally()
  grid_h, grid_w = _check_divisible(image_size, model.patch_size, 'MAE')
  patches = grid_h * grid_w
  kept = mae.num_visible(patches, model.mask_ratio)
  p, width = model.patch_size, model.width
  # The kept patches, side by side in a strip, through the patch embedding.
  tally.conv((p, kept * p), p, model.num_channels, width, stride=p)
  tally.param(width)  # cls_token
  _encoder_blocks(tally, kept + 1, width, model.depth, model.mlp_dim)
  tally.norm(width)  # encoder_norm
  decoder_width = model.decoder_width
  tally.dense(kept + 1, width, decoder_width)  # decoder_embed
  tally.param(decoder_width)  # mask_token
  _encoder_blocks(tally, patches + 1, decoder_width, model.decoder_depth,
                  model.decoder_mlp_dim or 4 * decoder_width)
  tally.norm(decoder_width)  # decoder_norm
  # decoder_pred runs on every token, the class token's output is dropped.
  tally.dense(patches + 1, decoder_width, p * p * model.num_channels)
  return tally


def _xcit(model: xcit.XCiT, image_size: Pair, channels: int) -> Tally:
  tally = Tally()
  grid_h, grid_w = _check_divisible(image_size, model.patch_size, 'XCiT')
  width = model.width
  num_layers = int(math.log2(model.patch_size))
  grid, in_channels = image_size, channels
  for layer in range(num_layers):  # ConvPatchEmbed
    out_channels = width // 2 ** (num_layers - 1 - layer)
    grid = tally.conv(grid, 3, in_channels, out_channels, stride=2,
                      padding=(1, 1), bias=False)
    tally.norm(out_channels)
    in_channels = out_channels
  patches = grid_h * grid_w
  tally.dense(patches, 2 * xcit.FOURIER_HIDDEN, width)  # pos_embed
  head_dim = width // model.num_heads
  mlp_dim = int(width * model.mlp_ratio)
  for _ in range(model.depth):
    tally.norm(width)
    tally.dense(patches, width, 3 * width)  # query, key, value
    tally.param(model.num_heads)  # temperature
    # Per head [hd, N] x [N, hd], then [hd, hd] x [hd, N]: linear in N.
    tally.flops += 2 * 2 * patches * width * head_dim
    tally.dense(patches, width, width)  # out
    tally.param(width)  # gamma_attn
    tally.norm(width)  # norm_lpi
    for _ in range(2):  # LPI: depthwise 3x3 conv1, conv2 (BN between)
      tally.conv((grid_h, grid_w), 3, width, width, padding=(1, 1),
                 groups=width)
    tally.norm(width)  # lpi/bn
    tally.param(width)  # gamma_lpi
    tally.norm(width)  # norm_mlp
    tally.mlp(patches, width, mlp_dim)
    tally.param(width)  # gamma_mlp
  tally.param(width)  # cls_token
  for _ in range(model.class_attention_depth):
    tally.norm(width)
    tally.attention(1, patches + 1, width)  # only the class token queries
    tally.param(width)  # gamma1
    tally.norm(width)
    tally.mlp(1, width, mlp_dim)  # the class token only
    tally.param(width)  # gamma2
  tally.norm(width)
  tally.head(1, width, model.num_classes)
  return tally


def _convmixer(model: convmixer.ConvMixer, image_size: Pair,
               channels: int) -> Tally:
  tally = Tally()
  grid = _check_divisible(image_size, model.patch_size, 'ConvMixer')
  width, kernel = model.width, model.kernel_size
  tally.conv(image_size, model.patch_size, channels, width,
             stride=model.patch_size)
  tally.norm(width)  # embed_norm
  for _ in range(model.depth):
    tally.conv(grid, kernel, width, width, padding=same_padding(kernel),
               groups=width)  # depthwise
    tally.norm(width)
    tally.conv(grid, 1, width, width)  # pointwise
    tally.norm(width)
  tally.head(1, width, model.num_classes)
  return tally


def _class_token_vit(model, image_size: Pair, channels: int, family: str,
                     block: Callable[[Tally, int, Pair], None]) -> Tally:
  """BEiT and EVA: a class token always, an optional learned position
  embedding, blocks without a key bias, LayerScale if asked; `block(tally,
  tokens, grid)` counts what a block has beyond its attention: its bias
  table or inner norms, its second norm and its MLP."""
  tally = Tally()
  grid = _check_divisible(image_size, model.patch_size, family)
  width = model.width
  tally.conv(image_size, model.patch_size, channels, width,
             stride=model.patch_size)
  tokens = grid[0] * grid[1] + 1  # the class token is always there
  tally.param(width)  # cls_token
  if model.posemb == 'learn':
    tally.param(tokens * width)
  for _ in range(model.depth):
    tally.norm(width)
    tally.attention(tokens, tokens, width)
    tally.params -= width  # no key bias
    if not model.qkv_bias:
      tally.params -= 2 * width  # nor query and value biases
    block(tally, tokens, grid)
    if model.layer_scale_init:
      tally.param(2 * width)  # gamma_attn, gamma_mlp
  tally.norm(width)  # encoder_norm, or fc_norm after pooling
  tally.head(1, width, model.num_classes)
  return tally


def _beit(model: beit.Beit, image_size: Pair, channels: int) -> Tally:
  def block(tally, tokens, grid):
    if model.rel_pos_bias:
      tally.param(beit.table_rows(grid) * model.num_heads)
    tally.norm(model.width)
    tally.mlp(tokens, model.width, model.mlp_dim)
  return _class_token_vit(model, image_size, channels, 'BEiT', block)


def _eva(model: eva.Eva, image_size: Pair, channels: int) -> Tally:
  width, hidden = model.width, model.mlp_dim

  def block(tally, tokens, grid):
    del grid  # the rotary embedding has no parameters
    if model.attn_norm:
      tally.norm(width)
    tally.norm(width)
    if model.activation == 'gelu':
      tally.mlp(tokens, width, hidden)
    else:  # gate and value (packed or apart), the gated units' norm, out
      tally.dense(tokens, width, 2 * hidden)
      if model.mlp_norm:
        tally.norm(hidden)
      tally.dense(tokens, hidden, width)
  return _class_token_vit(model, image_size, channels, 'EVA', block)


def _conv3d(tally: Tally, grid: Tuple[int, int, int], kernel: int,
            in_channels: int, out_channels: int, stride: int = 1,
            padding: Pair = (0, 0), bias: bool = False
            ) -> Tuple[int, int, int]:
  """A 3-D convolution, counted as `Tally.conv` counts a 2-D one; returns
  the output grid."""
  tally.params += (kernel ** 3 * in_channels * out_channels
                   + (out_channels if bias else 0))
  taps = math.prod(valid_taps(side, kernel, stride, padding)
                   for side in grid)
  tally.flops += 2 * taps * in_channels * out_channels
  return tuple((side + sum(padding) - kernel) // stride + 1
               for side in grid)


def _transposed_conv(tally: Tally, grid: Tuple[int, int, int],
                     in_channels: int, out_channels: int
                     ) -> Tuple[int, int, int]:
  """`unetr.BlockUpsample` (kernel 2, stride 2): each input voxel meets
  each of the 8 taps once (XLA runs it on the input dilated by 2, whose
  holes multiply nothing)."""
  tally.params += 8 * in_channels * out_channels
  tally.flops += 2 * 8 * math.prod(grid) * in_channels * out_channels
  return tuple(2 * side for side in grid)


def _res_block(tally: Tally, grid: Tuple[int, int, int], in_channels: int,
               out_channels: int) -> None:
  """`unetr.ResBlock`: two 3^3 convolutions, a 1^3 one where the channels
  change (InstanceNorm has no parameters)."""
  _conv3d(tally, grid, 3, in_channels, out_channels, padding=(1, 1))
  _conv3d(tally, grid, 3, out_channels, out_channels, padding=(1, 1))
  if in_channels != out_channels:
    _conv3d(tally, grid, 1, in_channels, out_channels)


def _unetr(model: unetr.UNETR, image_size: Pair, channels: int) -> Tally:
  """UNETR on its own volume and channels (`image_size` and `in_channels`
  are the model's fields: the arguments, 2-D, are not used)."""
  del image_size, channels
  tally = Tally()
  width, volume = model.width, model.volume
  grid = _conv3d(tally, volume, model.patch_size, model.in_channels, width,
                 stride=model.patch_size, bias=True)
  tokens = math.prod(grid)
  tally.param(tokens * width)  # pos_embedding
  for _ in range(model.depth):
    tally.norm(width)  # cross_attn_norm, never applied
    tally.norm(width)
    for _ in range(3):  # query, key, value
      tally.dense(tokens, width, width, bias=model.qkv_bias)
    tally.flops += 2 * 2 * tokens * tokens * width
    tally.dense(tokens, width, width)  # out
    tally.norm(width)
    tally.mlp(tokens, width, model.mlp_dim)
  tally.norm(width)  # encoder_norm
  features = model.feature_size
  _res_block(tally, volume, model.in_channels, features)  # encoder1
  for _, _, stages, scale in unetr.SKIP_ENCODERS:
    side = _transposed_conv(tally, grid, width, scale * features)
    for _ in range(stages):
      side = _transposed_conv(tally, side, scale * features,
                              scale * features)
      _res_block(tally, side, scale * features, scale * features)
  side, channels_in = grid, width
  for _, scale in unetr.DECODERS:
    side = _transposed_conv(tally, side, channels_in, scale * features)
    _res_block(tally, side, 2 * scale * features, scale * features)
    channels_in = scale * features
  _conv3d(tally, volume, 1, features, model.num_classes, bias=True)  # head
  return tally


def _segformer(model: segformer.SegFormer, image_size: Pair,
               channels: int) -> Tally:
  """The Mix Transformer's stages (keys and values from the reduced map:
  M = (h / R)(w / R) of them), then the decoder on stage 0's grid; the
  bilinear upsampling is elementwise work."""
  tally = Tally()
  grids = segformer.stage_grids(image_size, len(model.widths))
  in_channels = channels
  for stage, (width, depth, ratio) in enumerate(zip(
      model.widths, model.depths, model.sr_ratios)):
    kernel, stride, padding = segformer.patch_geometry(stage)
    grid = tally.conv(image_size if stage == 0 else grids[stage - 1], kernel,
                      in_channels, width, stride=stride,
                      padding=(padding, padding))
    tally.norm(width)  # patch_norm
    tokens = grid[0] * grid[1]
    hidden = int(width * model.mlp_ratio)
    for _ in range(depth):
      tally.norm(width)
      keys = tokens
      if ratio > 1:
        reduced = tally.conv(grid, ratio, width, width, stride=ratio)
        tally.norm(width)  # sr_norm
        keys = reduced[0] * reduced[1]
      tally.attention(tokens, keys, width)
      tally.norm(width)
      tally.dense(tokens, width, hidden)
      tally.conv(grid, 3, hidden, hidden, padding=(1, 1), groups=hidden)
      tally.dense(tokens, hidden, width)
    tally.norm(width)  # the stage's norm
    in_channels = width
  decoder = model.decoder_width
  for width, grid in zip(model.widths, grids):
    tally.dense(grid[0] * grid[1], width, decoder)
  tally.conv(grids[0], 1, decoder * len(model.widths), decoder, bias=False)
  tally.norm(decoder)  # BatchNorm's scale and bias
  if model.num_classes:
    tally.conv(grids[0], 1, decoder, model.num_classes)
  return tally


def _grouped_attention(tally: Tally, groups: int, length: int,
                       width: int) -> None:
  """Attention within `groups` independent sequences of `length` tokens
  (one set of weights): TimeSformer's over time or over a frame."""
  tally.attention(groups * length, groups * length, width)
  # The products are per group, not over all groups' tokens at once.
  tally.flops -= 2 * 2 * (groups * length) ** 2 * width
  tally.flops += groups * 2 * 2 * length * length * width


def _timesformer(model: timesformer.TimeSformer, image_size: Pair,
                 channels: int) -> Tally:
  """One clip of the model's num_frames frames at `image_size`."""
  tally = Tally()
  grid_h, grid_w = _check_divisible(image_size, model.patch_size,
                                    'TimeSformer')
  patches, frames, width = grid_h * grid_w, model.num_frames, model.width
  before = tally.flops
  tally.conv(image_size, model.patch_size, channels, width,
             stride=model.patch_size)
  tally.flops += (frames - 1) * (tally.flops - before)  # every frame
  tally.param(width + (1 + patches) * width)  # cls_token, pos_embed
  kind = model.attention_type
  if kind != 'space_only':
    tally.param(frames * width)  # time_embed
  tokens = (frames if kind == 'space_only' else 1) + frames * patches
  for _ in range(model.depth):
    if kind == 'divided_space_time':
      tally.norm(width)  # temporal_norm
      _grouped_attention(tally, patches, frames, width)
      tally.dense(frames * patches, width, width)  # temporal_dense
    tally.norm(width)  # norm1
    if kind == 'joint_space_time':
      tally.attention(tokens, tokens, width)
    else:  # each frame's patches and a class token
      _grouped_attention(tally, frames, 1 + patches, width)
    tally.norm(width)  # norm2
    tally.mlp(tokens, width, model.mlp_dim)
  tally.norm(width)  # encoder_norm
  tally.head(1, width, model.num_classes)
  return tally


def _mvit(model: mvit.MViT, image_size: Pair, channels: int) -> Tally:
  """MViT of images, or of clips of the model's num_frames at
  `image_size`: per block its pooling convolutions (depthwise, per head),
  the attention over the pooled keys, the relative position products
  (each query with its table rows, per grid axis) and the widening
  Linear."""
  tally = Tally()
  frames = () if model.num_frames is None else (model.num_frames,)
  size = (*frames, *image_size)
  grid = model.input_grid(size)
  kernel, strides, padding = model.patch_embedding()
  width = model.embed_dim
  taps = math.prod(valid_taps(n, k, s, (p, p))
                   for n, k, s, p in zip(size, kernel, strides, padding))
  tally.param(math.prod(kernel) * channels * width + width)
  tally.flops += 2 * taps * channels * width
  prefix = 1 if model.class_token else 0
  tally.param(prefix * width)  # cls_token
  if model.posemb == 'learn':
    tally.param((grid[-2] * grid[-1] + sum(grid[:-2]) + prefix) * width)
  for specs in model.block_specs(grid):
    for spec in specs:
      att, heads = spec.att_dim, spec.heads
      head_dim = att // heads
      tokens = math.prod(spec.grid) + prefix
      q_grid = spec.q_grid if spec.pool_q else spec.grid
      queries = math.prod(q_grid) + prefix
      keys = math.prod(spec.kv_grid) + prefix
      tally.norm(spec.dim_in)
      tally.dense(tokens, spec.dim_in, 3 * att)  # qkv
      pooled = [spec.stride_q] if spec.pool_q else []
      for stride in pooled + [spec.stride_kv] * 2:
        # A depthwise 3^n kernel over head_dim channels, shared by the
        # heads; padding 1.
        taps = math.prod(valid_taps(side, 3, step, (1, 1))
                         for side, step in zip(spec.grid, stride))
        tally.param(3 ** len(stride) * head_dim)
        tally.flops += 2 * taps * heads * head_dim
        tally.norm(head_dim)
      tally.flops += 2 * 2 * queries * keys * att
      for rows, key_side in zip(spec.rel_pos_sizes, spec.kv_grid):
        tally.param(rows * head_dim)
        tally.flops += 2 * (queries - prefix) * att * key_side
      tally.dense(queries, att, att)  # proj
      widens = spec.dim_in != spec.dim_out
      if widens and spec.expand_attn:
        tally.dense(tokens, spec.dim_in, spec.dim_out)  # shortcut_proj_attn
      tally.norm(att)
      if widens and not spec.expand_attn:
        tally.dense(queries, att, spec.dim_out)  # shortcut_proj_mlp
      hidden = int(att * model.mlp_ratio)
      tally.dense(queries, att, hidden)
      tally.dense(queries, hidden, spec.dim_out)
      width = spec.dim_out
  tally.norm(width)  # final_norm
  tally.head(1, width, model.num_classes)
  return tally


_FAMILIES: Dict[Type[nn.Module], Callable[..., Tally]] = {
    vit.ViT: _vit,
    mixer.Mixer: _mixer,
    swin.Swin: _swin,
    swinv2.SwinV2: _swin,
    mae.MAE: _mae,
    xcit.XCiT: _xcit,
    convmixer.ConvMixer: _convmixer,
    beit.Beit: _beit,
    eva.Eva: _eva,
    unetr.UNETR: _unetr,
    segformer.SegFormer: _segformer,
    timesformer.TimeSformer: _timesformer,
    mvit.MViT: _mvit,
}


def model_tally(model: nn.Module, image_size: Union[int, Pair] = 224,
                channels: int = 3) -> Tally:
  """Parameters and forward FLOPs of `model` on images of `image_size`
  (a side or (height, width)) with `channels` channels (an MAE uses its
  own `num_channels`)."""
  count = _FAMILIES.get(type(model))
  if count is None:
    raise ValueError(f'No analytic count for {type(model).__name__}; '
                     f'counted: {[cls.__name__ for cls in _FAMILIES]}')
  return count(model, _pair(image_size), channels)


def param_count(model: nn.Module, image_size: Union[int, Pair] = 224,
                channels: int = 3) -> int:
  """The model's parameters at this resolution (ViT's learned position
  embedding, Mixer's token MLP and Swin's clamped windows depend on it)."""
  return model_tally(model, image_size, channels).params


def forward_flops(model: nn.Module, image_size: Union[int, Pair] = 224,
                  channels: int = 3) -> int:
  """FLOPs of one image's inference forward pass (matrix products and
  convolutions, 2 per multiply-add; see the module docstring)."""
  return model_tally(model, image_size, channels).flops
