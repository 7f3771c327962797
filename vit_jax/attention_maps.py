"""Attention maps of a ViT: per-block attention probabilities, attention
rollout, and a plot of both over the images.

    maps = attention_maps(model, variables, images)      # {block: [B, H, N, N]}
    rollout = attention_rollout(maps)                    # [B, h, w]
    per_block = class_token_maps(maps)                   # {block: [B, h, w]}
    plot_attention(path, images, rollout, per_block)     # PNG

The probabilities come from the model itself: `ViT(capture_attention=...)`
makes the chosen blocks compute softmax(Q K^T / sqrt(d)) explicitly and sow
it into the 'intermediates' collection (`models.common.Attention`); every
other block, and every block of an apply that does not ask for
'intermediates', keeps the fused `jax.nn.dot_product_attention` path.

Attention rollout is Abnar and Zuidema 2020, "Quantifying Attention Flow in
Transformers", Sec. 3: each block's attention (heads fused) plus the
identity for the residual connection, rows renormalised, multiplied through
the blocks from the first to the last. The map of an image is the class
token's row over the patch tokens; a model without a class token ('gap' or
'map' pooling) has the mean over the patch tokens' rows instead, each
weighing equally as in average pooling (for 'map' an approximation: its
probe's own attention is not included). Register tokens (DINOv2 with
registers, Darcet et al. 2023) take part in the rollout but have no place
on the map: it shows the class token's attention to the patches, as that
paper's figures do.

Importing this module does not import TensorFlow; the plot imports
matplotlib (Agg, no global state) when it is drawn.
"""

import io
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import paths
from vit_jax.models import common
from vit_jax.models import vit

HEAD_FUSIONS = ('mean', 'max', 'min')
Maps = Mapping[int, Any]  # block -> [B, heads, N, N]


def _check_blocks(blocks: Optional[Sequence[int]], depth: int
                  ) -> Tuple[int, ...]:
  if blocks is None:
    return tuple(range(depth))
  blocks = tuple(blocks)
  bad = [b for b in blocks
         if isinstance(b, bool) or not isinstance(b, (int, np.integer))
         or not 0 <= b < depth]
  if bad or not blocks:
    raise ValueError(f'blocks {list(blocks)} must name blocks of the model; '
                     f'valid blocks: 0..{depth - 1}.')
  return tuple(sorted({int(b) for b in blocks}))


def capturing_model(model: vit.ViT, variables: Mapping[str, Any],
                    blocks: Optional[Sequence[int]] = None
                    ) -> Tuple[vit.ViT, Dict[str, Any], Tuple[int, ...]]:
  """(the model sowing the attention of `blocks`, its variables, blocks).

  A scanned model (scan=True) is rebuilt unrolled, its params converted
  with `common.unstack_blocks` (and without remat, for inference).
  `blocks` None: all of them.
  """
  if not isinstance(model, vit.ViT):
    raise ValueError(
        f'Attention maps need a ViT (models.vit.ViT; an MAE through '
        f'models.classifier_view), got {type(model).__name__}.')
  blocks = _check_blocks(blocks, model.depth)
  variables = dict(variables)
  if model.scan:
    variables['params'] = common.unstack_blocks(variables['params'])
  return (model.clone(scan=False, remat=False, capture_attention=blocks),
          variables, blocks)


def attention_maps_fn(model: vit.ViT, blocks: Sequence[int]):
  """(variables, images) -> (logits, {block: float32 [B, heads, N, N]}),
  jittable; `model` from `capturing_model`."""
  def apply(variables, images):
    (logits, _), state = model.apply(variables, images, train=False,
                                     mutable=['intermediates'])
    encoder = state['intermediates']['encoder']
    maps = {block: encoder[f'block_{block}']['attn']['attention'][0]
            for block in blocks}
    return logits, maps
  return apply


def attention_maps(model: vit.ViT, variables: Mapping[str, Any],
                   images, blocks: Optional[Sequence[int]] = None
                   ) -> Dict[int, np.ndarray]:
  """The attention probabilities of a ViT's blocks on `images`.

  Args:
    model: a ViT (any pooling; scanned or not).
    variables: its variables ({'params': ...}).
    images: float32 [B, H, W, C], preprocessed as the model expects.
    blocks: block indices (0 is the first); None: every block.

  Returns:
    {block: float32 numpy [B, heads, N, N]}, N the tokens (the class token
    first where the model has one, then its registers, then the patches);
    rows (queries) sum to 1.
  """
  capturing, variables, blocks = capturing_model(model, variables, blocks)
  _, maps = jax.jit(attention_maps_fn(capturing, blocks))(
      variables, jnp.asarray(images, jnp.float32))
  return {block: np.asarray(value) for block, value in maps.items()}


def token_layout(model: vit.ViT, image_shape: Sequence[int]
                 ) -> Tuple[bool, Tuple[int, int]]:
  """(has a class token, (h, w) patch grid) of `model` on images of
  `image_shape` ([H, W, C] or [H, W]). Registers need no mention: given
  the grid, `attention_rollout` and `class_token_maps` take the tokens
  between the class token and the patches as registers."""
  height, width = image_shape[:2]
  return (model.pool_type == 'cls',
          (height // model.patch_size, width // model.patch_size))


def _layout(num_tokens: int, class_token: Optional[bool],
            grid_shape: Optional[Tuple[int, int]],
            num_registers: Optional[int]) -> Tuple[int, bool, Tuple[int, int]]:
  """(prefix tokens, whether the first is a class token, (h, w) grid) of N
  tokens laid out as the ViT lays them out: [class token] + registers +
  patches. What is not given is inferred: a square grid; no registers, or
  with the grid given, as many as it leaves; the class token from what
  fits. Several fits, or none, raise."""
  if num_registers is not None and (
      isinstance(num_registers, bool)
      or not isinstance(num_registers, (int, np.integer)) or num_registers < 0):
    raise ValueError(f'num_registers must be an integer >= 0 or None, got '
                     f'{num_registers!r}.')
  if grid_shape is not None:
    grid_shape = tuple(int(s) for s in grid_shape)
  class_tokens = [False, True] if class_token is None else [bool(class_token)]

  def grid_of(patches):
    if patches < 1:
      return None
    if grid_shape is not None:
      return grid_shape if grid_shape[0] * grid_shape[1] == patches else None
    side = int(round(np.sqrt(patches)))
    return (side, side) if side * side == patches else None

  def fits(registers_of):
    found = []
    for has_class in class_tokens:
      registers = registers_of(has_class)
      grid = grid_of(num_tokens - has_class - registers)
      if registers >= 0 and grid:
        found.append((has_class, registers, grid))
    return found

  if num_registers is not None:
    found = fits(lambda has_class: num_registers)
  else:
    found = fits(lambda has_class: 0)
    if not found and grid_shape is not None:
      found = fits(lambda has_class: (num_tokens - has_class
                                      - grid_shape[0] * grid_shape[1]))
  if len(found) != 1:
    given = (f'class token: {class_token}, registers: {num_registers}, grid: '
             f'{grid_shape} (None: inferred)')
    if found:
      options = ', '.join(f'class token {c} + {r} registers + grid {g}'
                          for c, r, g in found)
      raise ValueError(f'The layout of {num_tokens} tokens is ambiguous '
                       f'({given}): {options} all fit; pass class_token.')
    raise ValueError(
        f'Cannot tell the token layout of {num_tokens} tokens ({given}): no '
        f'class token, registers and patch grid add up to them (a square '
        f'grid unless grid_shape is given); pass class_token, num_registers '
        f'and grid_shape (token_layout gives a ViT\'s).')
  has_class, registers, grid = found[0]
  return int(has_class) + registers, has_class, grid


def _checked_maps(maps: Maps) -> Tuple[Tuple[int, ...], np.ndarray]:
  """(sorted blocks, float64 [L, B, heads, N, N])."""
  if not maps:
    raise ValueError('No attention maps given.')
  blocks = tuple(sorted(maps))
  stacked = [np.asarray(maps[b], np.float64) for b in blocks]
  shapes = {m.shape for m in stacked}
  first = stacked[0]
  if (len(shapes) != 1 or first.ndim != 4 or
      first.shape[-1] != first.shape[-2]):
    raise ValueError(f'Attention maps must all be [B, heads, N, N] of one '
                     f'shape; got {[m.shape for m in stacked]} for blocks '
                     f'{list(blocks)}.')
  return blocks, np.stack(stacked)


def _to_grid(rows: np.ndarray, prefix: int, class_token_row: bool,
             grid_shape: Tuple[int, int]) -> np.ndarray:
  """[B, N, N] -> [B, h, w]: the class token's row over the patches, or
  the mean over the patch tokens' rows (what average pooling weighs), at
  the patch positions; registers are in no map (they hold no place in the
  image), though attention flows through them in the rollout."""
  batch = rows.shape[0]
  if class_token_row:
    weights = rows[:, 0, prefix:]
  else:
    weights = rows[:, prefix:].mean(axis=1)[:, prefix:]
  return weights.reshape(batch, *grid_shape).astype(np.float32)


def attention_rollout(maps: Maps, discard_ratio: float = 0.0,
                      head_fusion: str = 'mean',
                      class_token: Optional[bool] = None,
                      grid_shape: Optional[Tuple[int, int]] = None,
                      num_registers: Optional[int] = None) -> np.ndarray:
  """Attention rollout (Abnar and Zuidema 2020, Sec. 3) over `maps`.

  For each block in increasing order: fuse the heads ('mean', 'max' or
  'min'), set the smallest `discard_ratio` of each example's entries to 0
  (a filter common in rollout code, sharpening the map; 0 keeps all), add
  the identity (the residual connection), divide each row by its
  sum; the rollout is the product, later blocks on the left.

  Args:
    maps: {block: [B, heads, N, N]} (`attention_maps`); the blocks present
      are rolled out in order (normally all of them).
    discard_ratio: fraction in [0, 1) of the smallest fused weights dropped.
    head_fusion: one of HEAD_FUSIONS.
    class_token: whether token 0 is a class token; None infers it from N
      (1 + registers + the grid: yes; registers + the grid: no).
    grid_shape: the (h, w) patch grid; None: square.
    num_registers: the register tokens after the class token (DINOv2 with
      registers has 4); None: what the grid leaves where it is given, else
      none.

  Returns:
    float32 [B, h, w]: the class token's rolled-out attention over the
    patches, or, without a class token, the mean over the patch tokens'
    rows; the registers' columns left out.
  """
  common.check_choice('head_fusion', head_fusion, HEAD_FUSIONS)
  if not 0.0 <= discard_ratio < 1.0:
    raise ValueError(f'discard_ratio must lie in [0, 1), got '
                     f'{discard_ratio!r}.')
  _, stacked = _checked_maps(maps)  # [L, B, heads, N, N]
  num_tokens = stacked.shape[-1]
  prefix, has_class, grid_shape = _layout(num_tokens, class_token,
                                          grid_shape, num_registers)
  fused = getattr(np, head_fusion)(stacked, axis=2)  # [L, B, N, N]
  identity = np.eye(num_tokens)
  rollout = np.broadcast_to(identity, fused.shape[1:]).copy()  # [B, N, N]
  for attention in fused:
    attention = attention.copy()
    drop = int(discard_ratio * num_tokens * num_tokens)
    if drop:
      flat = attention.reshape(attention.shape[0], -1)  # a view
      smallest = np.argsort(flat, axis=-1, kind='stable')[:, :drop]
      np.put_along_axis(flat, smallest, 0.0, axis=-1)
    attention = attention + identity
    attention = attention / attention.sum(axis=-1, keepdims=True)
    rollout = attention @ rollout
  return _to_grid(rollout, prefix, has_class, grid_shape)


def class_token_maps(maps: Maps, class_token: Optional[bool] = None,
                     grid_shape: Optional[Tuple[int, int]] = None,
                     num_registers: Optional[int] = None
                     ) -> Dict[int, np.ndarray]:
  """Each block's own attention (heads averaged) as a map: {block: float32
  [B, h, w]}, the class token's row over the patches, or the mean over the
  patch tokens' rows without a class token (arguments as
  `attention_rollout`)."""
  blocks, stacked = _checked_maps(maps)
  prefix, has_class, grid_shape = _layout(stacked.shape[-1], class_token,
                                          grid_shape, num_registers)
  return {block: _to_grid(stacked[i].mean(axis=1), prefix, has_class,
                          grid_shape)
          for i, block in enumerate(blocks)}


def _display(image: np.ndarray) -> np.ndarray:
  """A preprocessed image [H, W, C] scaled to [0, 1] (min to max over all
  channels, so colours keep their ratios); grey images as [H, W]."""
  image = np.asarray(image, np.float32)
  low, high = float(image.min()), float(image.max())
  image = (image - low) / max(high - low, 1e-12)
  return image[..., 0] if image.shape[-1] == 1 else image


def plot_attention(path: str, images, rollout: np.ndarray,
                   block_maps: Mapping[int, np.ndarray],
                   row_titles: Optional[Sequence[str]] = None,
                   alpha: float = 0.6) -> None:
  """Writes a PNG: a row per image, columns the image, its attention
  rollout and each block's map, overlaid on the image (each map scaled to
  its own range; 'inferno' colours).

  Args:
    path: the PNG to write (local or gs://; its directory is created).
    images: float [B, H, W, C], as the model saw them.
    rollout: [B, h, w] (`attention_rollout`).
    block_maps: {block: [B, h, w]} (`class_token_maps`).
    row_titles: one per image (e.g. the file and the top-1 class), or None.
    alpha: opacity of the maps.
  """
  from matplotlib import figure as figure_lib  # pylint: disable=g-import-not-at-top
  from matplotlib.backends import backend_agg  # pylint: disable=g-import-not-at-top
  images = np.asarray(images, np.float32)
  batch, height, width = images.shape[:3]
  rollout = np.asarray(rollout)
  counts = [len(rollout)] + [len(m) for m in block_maps.values()]
  if any(count != batch for count in counts):
    raise ValueError(f'{batch} images but maps of {counts} images (rollout, '
                     f'then blocks {sorted(block_maps)}).')
  if row_titles is not None and len(row_titles) != batch:
    raise ValueError(f'{len(row_titles)} row titles for {batch} images.')
  columns = [('image', None), ('rollout', rollout)] + [
      (f'block {block}', np.asarray(block_maps[block]))
      for block in sorted(block_maps)]
  cell = 1.8  # inches
  figure = figure_lib.Figure(figsize=(cell * len(columns),
                                      cell * batch + 0.4 * (row_titles
                                                            is not None)))
  backend_agg.FigureCanvasAgg(figure)
  axes = figure.subplots(batch, len(columns), squeeze=False)
  extent = (-0.5, width - 0.5, height - 0.5, -0.5)  # maps over the pixels
  for row in range(batch):
    shown = _display(images[row])
    for column, (title, values) in enumerate(columns):
      ax = axes[row, column]
      ax.imshow(shown, cmap='gray' if shown.ndim == 2 else None,
                vmin=0.0, vmax=1.0, extent=extent)
      if values is not None:
        ax.imshow(values[row], cmap='inferno', alpha=alpha, extent=extent,
                  interpolation='nearest')
      ax.set_xticks([])
      ax.set_yticks([])
      if row == 0:
        ax.set_title(title, fontsize=9)
    if row_titles is not None:
      axes[row, 0].set_ylabel(row_titles[row], fontsize=7)
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format='png', dpi=100)
  paths.makedirs(paths.parent(path))
  paths.write_atomic(path, buffer.getvalue())
