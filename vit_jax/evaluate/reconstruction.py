"""MAE evaluation: reconstruction loss on a split, and a reconstruction grid.

`ReconstructionEvaluator.run(variables, step)` returns `<prefix>/loss`, the
masked-patch loss over the whole split (fixed masks: `mae.EVAL_MASK_SEED`,
so values compare across steps), and writes
`<workdir>/plots/reconstruction_<step>.png`: one column per image of the
split's first batch, rows original / masked / reconstruction /
reconstruction with the visible patches pasted back (He et al. 2021,
Fig. 2-4 show the last).

The PNG is written by `write_png` (zlib only: no imaging library needed on
accelerator hosts).
"""

import math
import struct
import zlib
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import paths
from vit_jax import sharding

ROWS = ('original', 'masked', 'reconstruction', 'pasted')


def _chunk(kind: bytes, payload: bytes) -> bytes:
  return (struct.pack('>I', len(payload)) + kind + payload +
          struct.pack('>I', zlib.crc32(kind + payload) & 0xFFFFFFFF))


def write_png(path: str, image: np.ndarray) -> None:
  """Writes uint8 [H, W] (grey), [H, W, 1] (grey) or [H, W, 3] (RGB)."""
  image = np.asarray(image)
  if image.dtype != np.uint8:
    raise ValueError(f'write_png takes uint8 pixels, got {image.dtype}.')
  if image.ndim == 3 and image.shape[-1] == 1:
    image = image[..., 0]
  if image.ndim == 2:
    color_type = 0  # greyscale
  elif image.ndim == 3 and image.shape[-1] == 3:
    color_type = 2  # truecolour
  else:
    raise ValueError(f'write_png takes [H, W], [H, W, 1] or [H, W, 3] '
                     f'pixels, got shape {image.shape}.')
  height, width = image.shape[:2]
  rows = image.reshape(height, -1)
  # Each scanline is prefixed with its filter type, 0 (none).
  raw = np.concatenate([np.zeros((height, 1), np.uint8), rows], axis=1)
  header = struct.pack('>IIBBBBB', width, height, 8, color_type, 0, 0, 0)
  paths.write_atomic(path, b''.join([  # never a half-written plot
      b'\x89PNG\r\n\x1a\n', _chunk(b'IHDR', header),
      _chunk(b'IDAT', zlib.compress(raw.tobytes(), 9)),
      _chunk(b'IEND', b'')]))


def image_grid(rows: Sequence[np.ndarray], value_range=(-1.0, 1.0),
               cell_size: int = 64, padding: int = 2) -> np.ndarray:
  """Rows of images [B, H, W, C] -> one uint8 grid [rows*H', B*W', C].

  Values in `value_range` map to 0..255 (clipped); each image is enlarged
  by nearest-neighbour to about `cell_size` pixels; `padding` white pixels
  between cells.
  """
  low, high = value_range
  first = np.asarray(rows[0])
  _, height, width, channels = first.shape
  scale = max(1, math.ceil(cell_size / max(height, width)))
  cell_h, cell_w = height * scale, width * scale
  grid = np.full((len(rows) * (cell_h + padding) + padding,
                  first.shape[0] * (cell_w + padding) + padding, channels),
                 255, np.uint8)
  for r, images in enumerate(rows):
    images = np.asarray(images, np.float32)
    if images.shape != first.shape:
      raise ValueError(f'Row {r} has shape {images.shape}, row 0 '
                       f'{first.shape}; all rows must match.')
    pixels = np.clip((images - low) / (high - low), 0.0, 1.0) * 255.0
    pixels = np.round(pixels).astype(np.uint8)
    pixels = pixels.repeat(scale, axis=1).repeat(scale, axis=2)
    top = padding + r * (cell_h + padding)
    for b, image in enumerate(pixels):
      left = padding + b * (cell_w + padding)
      grid[top:top + cell_h, left:left + cell_w] = image
  return grid


class ReconstructionEvaluator:
  """`run(variables, step) -> {'<prefix>/loss': ...}`, plus the PNG grid.

  Args:
    reconstruction_fn: (variables, images) -> (per-example masked-patch loss
      [B], predicted patches, mask) under the fixed evaluation masks;
      `vit_jax.build.eval_functions(run).reconstruction` for an MAE run.
    images_fn: (images, pred, mask, fill_value) -> {'masked',
      'reconstruction', 'pasted'} images for the grid
      (`eval_functions(run).reconstruction_images`).
    data_config, split: the images (`data.eval_iterator`).
    batch_size: global batch size.
    mesh: device mesh.
    plots_dir: where the grids go (created); None writes none.
    num_images: columns of the grid (the first images of the split).
    value_range: the range of pixel values after pp_eval, for display.
    prefix: metric group.
  """

  def __init__(self, reconstruction_fn: Callable, images_fn: Callable,
               data_config, split: str, batch_size: int, mesh,
               plots_dir: Optional[str], num_images: int = 8,
               value_range: Tuple[float, float] = (-1.0, 1.0),
               prefix: str = 'val',
               iterator_fn: Callable[..., Any] = None):
    if num_images < 1:
      raise ValueError(f'num_images must be >= 1, got {num_images}.')
    if iterator_fn is None:
      from vit_jax import data  # pylint: disable=g-import-not-at-top
      iterator_fn = data.eval_iterator
    self._images_fn = images_fn
    self._iterator_fn = iterator_fn
    self._data_config = data_config
    self._split = split
    self._batch_size = batch_size
    self._mesh = mesh
    self._plots_dir = plots_dir
    self._num_images = num_images
    self._value_range = tuple(value_range)
    self._prefix = prefix

    def eval_step(variables, batch):
      per_example, _, _ = reconstruction_fn(variables, batch['image'])  # [B]
      return {'loss': (per_example * batch['mask']).sum(),
              'count': batch['mask'].sum()}

    def predict(variables, batch):  # for the plot: one batch, gathered
      _, pred, mask = reconstruction_fn(variables, batch['image'])
      return pred, mask

    replicated = sharding.replicated(mesh)
    self._eval_step = jax.jit(eval_step, out_shardings=replicated)
    self._predict = jax.jit(predict, out_shardings=replicated)

  def metric_names(self) -> Tuple[str, ...]:
    """The names `run` returns (how a resumed run finds its rows)."""
    return (f'{self._prefix}/loss',)

  def run(self, variables, step: Optional[int] = None) -> Dict[str, float]:
    plot = bool(self._plots_dir) and step is not None
    totals = None
    batches = self._iterator_fn(self._data_config, self._split,
                                self._batch_size,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    for local_batch in batches:
      batch = sharding.global_batch(local_batch, self._mesh)
      if totals is None and plot:  # every process takes part; 0 draws
        pred, mask = self._predict(variables, batch)
        if jax.process_index() == 0:
          self._plot(step, local_batch['image'], np.asarray(pred),
                     np.asarray(mask), int(local_batch['mask'].sum()))
      sums = self._eval_step(variables, batch)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
      raise ValueError(f'Split {self._split!r} is empty.')
    count = max(float(np.asarray(totals['count'])), 1.0)
    return {f'{self._prefix}/loss': float(np.asarray(totals['loss'])) / count}

  def _plot(self, step: int, images, pred, mask, num_real: int) -> None:
    # Process 0's batch rows come first in the global batch.
    count = min(self._num_images, num_real)
    images = np.asarray(images[:count], np.float32)
    shown = self._images_fn(
        images, pred[:count], mask[:count],
        sum(self._value_range) / 2)  # removed patches: mid grey
    grid = image_grid([images, shown['masked'], shown['reconstruction'],
                       shown['pasted']], self._value_range)
    paths.makedirs(self._plots_dir)
    write_png(paths.join(self._plots_dir, f'reconstruction_{step}.png'),
              grid)
