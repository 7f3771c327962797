"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel
and mean accuracy (as mmseg computes them), per-volume Dice (as MONAI's
DiceMetric), and sliding-window inference over volumes (as MONAI's
sliding_window_inference). The building blocks of the segmentation
evaluators.

Counts are exact: a batch's matrix is int32 (at most 2^31 pixels a batch),
and the sum over a split is int64 on the host, never a float.
"""

import functools
import itertools
from typing import (Any, Callable, Dict, Iterable, Iterator, List, Optional,
                    Sequence, Tuple)

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import losses
from vit_jax.models import segformer


def batch_confusion(truth: jax.Array, pred: jax.Array, num_classes: int,
                    ignore_index: Optional[int] = 255) -> jax.Array:
  """int32 [K, K] counts (row: truth, column: prediction) of one batch,
  jittable. Pixels labelled ignore_index count nowhere; so, since jit cannot
  raise, do other truth labels outside [0, K) (check them on the host with
  losses.check_labels, as ConfusionMatrix.update does)."""
  truth = truth.reshape(-1).astype(jnp.int32)
  pred = pred.reshape(-1).astype(jnp.int32)
  valid = (truth >= 0) & (truth < num_classes)
  valid &= (pred >= 0) & (pred < num_classes)
  if ignore_index is not None:
    valid &= truth != ignore_index
  index = jnp.where(valid, truth * num_classes + pred, num_classes ** 2)
  # One bin past the matrix takes every dropped pixel.
  counts = jnp.bincount(index, length=num_classes ** 2 + 1)
  return counts[:-1].reshape(num_classes, num_classes).astype(jnp.int32)


class ConfusionMatrix:
  """Accumulates int64 [K, K] counts over batches (host side)."""

  def __init__(self, num_classes: int, ignore_index: Optional[int] = 255):
    if num_classes < 1:
      raise ValueError(f'num_classes must be at least 1, got {num_classes}')
    self.num_classes = num_classes
    self.ignore_index = ignore_index
    self.matrix = np.zeros((num_classes, num_classes), np.int64)

  def update(self, truth, pred) -> None:
    """Adds a batch of label maps (any equal shapes); raises ValueError on
    a truth label outside the classes that is not the ignore index."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    if truth.shape != pred.shape:
      raise ValueError(f'truth {truth.shape} and prediction {pred.shape}'
                       ' must have the same shape')
    losses.check_labels(truth, self.num_classes, self.ignore_index)
    losses.check_labels(pred, self.num_classes, None)
    keep = truth != self.ignore_index if self.ignore_index is not None else (
        np.ones(truth.shape, bool))
    index = truth[keep].astype(np.int64) * self.num_classes + pred[keep]
    self.matrix += np.bincount(
        index, minlength=self.num_classes ** 2).reshape(self.matrix.shape)

  def add(self, counts) -> None:
    """Adds a batch's counts from batch_confusion (summed as int64)."""
    counts = np.asarray(counts)
    if counts.shape != self.matrix.shape:
      raise ValueError(f'counts {counts.shape} must be {self.matrix.shape}')
    self.matrix += counts.astype(np.int64)


def _ratio(numerator, denominator):
  """numerator / denominator, NaN where the denominator is 0."""
  with np.errstate(divide='ignore', invalid='ignore'):
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1),
                    np.nan)


def _nanmean(values) -> float:
  """Mean of the non-NaN values; NaN when there are none."""
  values = np.asarray(values, np.float64)
  present = ~np.isnan(values)
  return float(values[present].mean()) if present.any() else float('nan')


def segmentation_metrics(matrix) -> Dict[str, object]:
  """mIoU and friends from a [K, K] confusion matrix (row: truth).

  As mmseg: IoU_c = TP / (TP + FP + FN) and acc_c = TP / (TP + FN) are NaN
  for a class absent from both truth and prediction (resp. from truth),
  and the means skip NaN. pixel_accuracy is NaN when nothing was counted.
  """
  matrix = np.asarray(matrix, np.int64)
  tp = np.diag(matrix)
  truth = matrix.sum(1)
  pred = matrix.sum(0)
  iou = _ratio(tp, truth + pred - tp)
  accuracy = _ratio(tp, truth)
  return {
      'mIoU': _nanmean(iou),
      'per_class_iou': iou,
      'pixel_accuracy': float(_ratio(tp.sum(), matrix.sum())),
      'mean_accuracy': _nanmean(accuracy),
      'per_class_accuracy': accuracy,
  }


def volume_dice(matrix, include_background: bool = False) -> np.ndarray:
  """One volume's Dice per class from its confusion matrix: 2 TP / (|truth|
  + |prediction|), NaN for a class absent from the truth (MONAI's
  DiceMetric, ignore_empty=True). Without the background (class 0) by
  default, as DiceMetric(include_background=False)."""
  matrix = np.asarray(matrix, np.int64)
  dice = _ratio(2 * np.diag(matrix), matrix.sum(1) + matrix.sum(0))
  dice = np.where(matrix.sum(1) > 0, dice, np.nan)
  return dice if include_background else dice[1:]


def mean_dice(per_volume) -> Dict[str, object]:
  """Dice over volumes from volume_dice rows [N, C].

  mean_dice is DiceMetric(reduction='mean'): per volume, the mean over its
  classes present in the truth (0 if none), then the mean over the volumes
  that had any. per_class_dice is reduction='mean_batch': per class, the
  mean over the volumes where it is present (NaN if none).
  """
  per_volume = np.asarray(per_volume, np.float64)
  if per_volume.ndim != 2:
    raise ValueError(f'per_volume must be [volumes, classes], got'
                     f' {per_volume.shape}')
  present = ~np.isnan(per_volume)
  filled = np.where(present, per_volume, 0.0)
  counted = present.sum(1)
  by_volume = filled.sum(1) / np.maximum(counted, 1)
  volumes = counted > 0
  mean = by_volume[volumes].mean() if volumes.any() else 0.0
  per_class = np.where(present.any(0),
                       filled.sum(0) / np.maximum(present.sum(0), 1), np.nan)
  return {'mean_dice': float(mean), 'per_class_dice': per_class}


# --- sliding-window inference -------------------------------------------------

BLEND_MODES = ('gaussian', 'constant')


def importance_map(window: Sequence[int], mode: str = 'gaussian',
                   sigma_scale: float = 0.125) -> np.ndarray:
  """A window's blending weights, as MONAI's compute_importance_map: 1
  everywhere ('constant'), or a separable Gaussian centred on the window
  with sigma = sigma_scale * size per axis, peak 1, floored at its minimum
  or 1e-3, whichever is larger (so no voxel gets weight 0)."""
  if mode not in BLEND_MODES:
    raise ValueError(f'mode {mode!r} is not one of {BLEND_MODES}')
  weights = np.ones((), np.float32)
  for size in window:
    if mode == 'constant':
      axis = np.ones(size, np.float32)
    else:
      offset = np.arange(size, dtype=np.float32) - (size - 1) / 2
      sigma = np.float32(size * sigma_scale)
      axis = np.exp(offset ** 2 / (-2 * sigma ** 2)).astype(np.float32)
    weights = weights[..., None] * axis
  return np.maximum(weights, max(float(weights.min()), 1e-3))


def _window_starts(size: int, window: int, overlap: float) -> List[int]:
  """MONAI's window starts along one axis: a stride of window * (1 -
  overlap) (at least 1; the window itself when it spans the axis), as many
  windows as reach the end, the last moved back to end at the edge."""
  stride = window if window == size else max(int(window * (1 - overlap)), 1)
  starts = []
  for index in range(-(-size // stride)):
    start = index * stride
    starts.append(min(start, size - window))
    if start + window >= size:
      break
  return starts


def sliding_window(predict_fn: Callable[[np.ndarray], np.ndarray],
                   volume, window: Sequence[int], overlap: float = 0.5,
                   mode: str = 'gaussian', sigma_scale: float = 0.125,
                   window_batch: int = 4) -> np.ndarray:
  """Whole-volume prediction from windows, as MONAI's
  sliding_window_inference (padding_mode='constant', cval=0).

  volume [B, *spatial, C] (channels last); predict_fn maps windows
  [n, *window, C] to [n, *window, K] (n <= window_batch; jit it outside).
  An axis shorter than its window is zero-padded, half before (rounded
  down) and half after, and cropped back afterwards. Overlapping
  predictions are averaged with importance_map(window, mode) weights.
  Returns float32 [B, *spatial, K].
  """
  volume = np.asarray(volume)
  window = tuple(int(w) for w in window)
  spatial = volume.shape[1:-1]
  if len(window) != len(spatial):
    raise ValueError(f'window {window} needs {len(window)} spatial axes,'
                     f' volume {volume.shape} has {len(spatial)}'
                     ' ([B, *spatial, C])')
  if not 0 <= overlap < 1:
    raise ValueError(f'overlap must be in [0, 1), got {overlap}')
  if window_batch < 1:
    raise ValueError(f'window_batch must be at least 1, got {window_batch}')
  weights = importance_map(window, mode, sigma_scale)[..., None]
  pad = [(max(w - s, 0) // 2, max(w - s, 0) - max(w - s, 0) // 2)
         for w, s in zip(window, spatial)]
  padded = np.pad(volume, [(0, 0)] + pad + [(0, 0)])
  size = padded.shape[1:-1]
  corners = list(itertools.product(*(
      _window_starts(s, w, overlap) for s, w in zip(size, window))))
  # Every (volume, corner) pair, in MONAI's order, window_batch at a time.
  jobs = [(b, c) for b in range(volume.shape[0]) for c in corners]
  total = weight_sum = None
  for first in range(0, len(jobs), window_batch):
    chunk = jobs[first:first + window_batch]
    boxes = [(b,) + tuple(slice(c, c + w) for c, w in zip(corner, window))
             for b, corner in chunk]
    predicted = np.asarray(predict_fn(np.stack([padded[box] for box in boxes])))
    if predicted.shape[1:-1] != window or predicted.shape[0] != len(chunk):
      raise ValueError(f'predict_fn returned {predicted.shape} for windows'
                       f' {(len(chunk),) + window + padded.shape[-1:]}:'
                       ' it must keep the window, [n, *window, K]')
    if total is None:
      total = np.zeros(padded.shape[:-1] + predicted.shape[-1:], np.float32)
      weight_sum = np.zeros(size + (1,), np.float32)
      for corner in corners:
        weight_sum[tuple(slice(c, c + w) for c, w in zip(corner, window))] += (
            weights)
    for box, prediction in zip(boxes, predicted):
      total[box] += prediction.astype(np.float32) * weights
  total /= weight_sum
  crop = tuple(slice(before, before + s) for (before, _), s in
               zip(pad, spatial))
  return total[(slice(None),) + crop]


# --- 2-D inference as mmseg's 'whole' and 'slide' test modes ------------------

MODES = ('whole', 'slide')

Pair = Sequence[int]


def _slide_starts(size: int, crop: int, stride: int) -> List[int]:
  """mmseg's slide_inference window starts along one axis: every `stride`,
  as many as needed to reach the end, the last moved back to end at the
  edge; an axis shorter than the crop gets one window at 0."""
  grids = max(size - crop + stride - 1, 0) // stride + 1
  return [max(min(index * stride + crop, size) - crop, 0)
          for index in range(grids)]


def slide_windows(size: Pair, crop: Pair, stride: Pair
                  ) -> List[Tuple[int, int, int, int]]:
  """The (top, left, bottom, right) boxes of mmseg's 'slide' mode over an
  image of `size` (H, W): rows outer, columns inner, each box crop-sized
  or, on an axis shorter than the crop, the whole axis."""
  for name, pair in (('crop_size', crop), ('stride', stride)):
    if len(pair) != 2 or min(pair) < 1:
      raise ValueError(f'{name} must be two positive ints (H, W), got '
                       f'{tuple(pair)}.')
  return [(top, left, min(top + crop[0], size[0]), min(left + crop[1],
                                                       size[1]))
          for top in _slide_starts(size[0], crop[0], stride[0])
          for left in _slide_starts(size[1], crop[1], stride[1])]


class _Pending:
  """One image whose window logits are still coming in."""

  def __init__(self, key, shape: Tuple[int, int], windows: int):
    self.key, self.shape, self.waiting = key, shape, windows
    self.total = self.count = None

  def add(self, box, logits: np.ndarray) -> None:
    top, left, bottom, right = box
    if self.total is None:
      self.total = np.zeros(self.shape + logits.shape[-1:], np.float32)
      self.count = np.zeros(self.shape + (1,), np.float32)
    self.total[top:bottom, left:right] += logits[:bottom - top,
                                                 :right - left]
    self.count[top:bottom, left:right] += 1
    self.waiting -= 1


def _chunks(tasks: Iterable, rows: int) -> Iterator[list]:
  """`tasks` in lists of exactly `rows` (the last padded with None)."""
  chunk = []
  for task in tasks:
    chunk.append(task)
    if len(chunk) == rows:
      yield chunk
      chunk = []
  if chunk:
    yield chunk + [None] * (rows - len(chunk))


def slide_inference(predict_fn: Callable[[np.ndarray], np.ndarray],
                    images: Iterable[Tuple[Any, np.ndarray]], crop: Pair,
                    stride: Pair, rows: int
                    ) -> Iterator[Tuple[Any, np.ndarray]]:
  """mmseg's 'slide' test mode over a stream of (key, image [H, W, C]):
  yields (key, logits float32 [H, W, K]) per image, in order, as soon as
  its windows are in.

  The windows of every image (`slide_windows`) go to predict_fn in chunks
  of exactly `rows` ([rows, *crop, C] -> [rows, *crop, K]; one shape, so
  one compile), across image boundaries; the last chunk is filled with
  zero windows, whose logits are dropped. A window cut short by an image
  smaller than the crop is zero-padded at the bottom and right (mmseg runs
  it at its own size instead) and its logits cropped back. Each pixel's
  logits are the sum over the windows covering it divided by their count.
  """
  crop = tuple(int(c) for c in crop)
  queue: List[_Pending] = []

  def tasks():
    for key, image in images:
      image = np.asarray(image, np.float32)
      boxes = slide_windows(image.shape[:2], crop, stride)
      pending = _Pending(key, tuple(image.shape[:2]), len(boxes))
      queue.append(pending)
      for box in boxes:
        top, left, bottom, right = box
        window = np.zeros(crop + image.shape[2:], np.float32)
        window[:bottom - top, :right - left] = image[top:bottom, left:right]
        yield pending, box, window

  for chunk in _chunks(tasks(), rows):
    blank = np.zeros_like(chunk[0][2])  # a chunk never starts with padding
    windows = np.stack([blank if t is None else t[2] for t in chunk])
    logits = np.asarray(predict_fn(windows))
    if logits.shape[:3] != windows.shape[:3]:
      raise ValueError(f'The segment function returned {logits.shape} for '
                       f'windows {windows.shape}; it must keep the window '
                       f'size, [n, H, W, K].')
    for task, window_logits in zip(chunk, logits):
      if task is not None:
        task[0].add(task[1], window_logits)
    while queue and queue[0].waiting == 0:
      done = queue.pop(0)
      yield done.key, done.total / done.count


def whole_inference(predict_fn: Callable[[np.ndarray], np.ndarray],
                    images: Iterable[Tuple[Any, np.ndarray]], rows: int
                    ) -> Iterator[Tuple[Any, np.ndarray]]:
  """mmseg's 'whole' test mode over a stream of (key, image [H, W, C]):
  consecutive images of one shape go to predict_fn together, `rows` at a
  time ([rows, H, W, C] -> [rows, H, W, K]; a chunk cut short by a change
  of shape or the end is filled with zero images whose logits are
  dropped), so a new shape means a new compile. Yields (key, logits
  float32 [H, W, K]) per image, in order."""
  group: List[Tuple[Any, np.ndarray]] = []

  def flush():
    batch = np.zeros((rows,) + group[0][1].shape, np.float32)
    for index, (_, image) in enumerate(group):
      batch[index] = image
    logits = np.asarray(predict_fn(batch))
    if logits.shape[:3] != batch.shape[:3]:
      raise ValueError(f'The segment function returned {logits.shape} for '
                       f'images {batch.shape}; it must give logits at the '
                       f'images\' own size, [n, H, W, K].')
    done = [(key, logits[index].astype(np.float32))
            for index, (key, _) in enumerate(group)]
    group.clear()
    return done

  for key, image in images:
    image = np.asarray(image, np.float32)
    if group and image.shape != group[0][1].shape:
      yield from flush()
    group.append((key, image))
    if len(group) == rows:
      yield from flush()
  if group:
    yield from flush()


@functools.partial(jax.jit, static_argnums=1)
def _resize(logits: jax.Array, size: Tuple[int, int]) -> jax.Array:
  return segformer.resize_bilinear(logits[None], size)[0]


def resize_logits(logits: np.ndarray, size: Pair) -> np.ndarray:
  """float32 [H, W, K] -> [h, w, K] bilinearly without antialiasing, as
  mmseg resizes seg_logit to the label map's original size (torch's
  F.interpolate, align_corners=False: `segformer.resize_bilinear`); one
  small compile per pair of sizes."""
  size = (int(size[0]), int(size[1]))
  logits = np.asarray(logits, np.float32)
  return logits if logits.shape[:2] == size else np.asarray(
      _resize(logits, size))


@functools.partial(jax.jit, static_argnums=2)
def _prediction_and_loss(logits: jax.Array, truth: jax.Array,
                         ignore_index: Optional[int]):
  resized = segformer.resize_bilinear(logits[None], truth.shape)[0]
  keep = (truth != ignore_index if ignore_index is not None
          else jnp.ones(truth.shape, bool))
  log_probs = jax.nn.log_softmax(resized)
  picked = jnp.take_along_axis(log_probs, jnp.where(keep, truth, 0)[..., None],
                               -1)[..., 0]
  return (resized.argmax(-1).astype(jnp.int32),
          -jnp.where(keep, picked, 0.0).sum(), keep.sum())


def prediction_at(logits: np.ndarray, truth: np.ndarray,
                  ignore_index: Optional[int] = 255
                  ) -> Tuple[np.ndarray, float, int]:
  """As mmseg scores an image: logits float32 [H, W, K] resized to the
  label map's size (`resize_logits`), then (argmax int32 [h, w], the sum
  of the per-pixel softmax cross-entropy against `truth` [h, w], the
  pixels counted), ignore_index pixels left out. One jitted call, compiled
  once per pair of sizes (on the accelerator: only the argmax returns)."""
  truth = np.asarray(truth, np.int32)
  pred, loss, pixels = _prediction_and_loss(
      np.asarray(logits, np.float32), truth, ignore_index)
  return np.asarray(pred), float(loss), int(pixels)


def pair(name: str, value) -> Tuple[int, int]:
  """An int or (H, W) setting as (H, W); raises naming `name` unless both
  are positive ints."""
  sides = (value, value) if np.isscalar(value) else tuple(value)
  if len(sides) != 2 or any(int(v) != v or v < 1 for v in sides):
    raise ValueError(f'{name} must be a positive int or a pair (H, W) of '
                     f'them, got {value!r}.')
  return int(sides[0]), int(sides[1])


def default_stride(crop: Pair) -> Tuple[int, int]:
  """2/3 of the crop, rounded down: mmseg's ADE20K setting (512 -> 341)."""
  return tuple(max(int(c) * 2 // 3, 1) for c in crop)


def segmentation_masks(segment: Callable[[np.ndarray], np.ndarray],
                       images: Sequence[np.ndarray],
                       sizes: Sequence[Tuple[int, int]], mode: str = 'whole',
                       crop_size=None, stride=None, rows: int = 1
                       ) -> List[np.ndarray]:
  """Class index maps int32 [h, w] of preprocessed images at their
  original `sizes`, as the evaluator computes them (mode, windows, bilinear
  logits to the original size, argmax). segment: [rows, H, W, C] ->
  [rows, H, W, K] (jitted by the caller)."""
  if mode not in MODES:
    raise ValueError(f'Unknown segmentation mode {mode!r}; valid choices: '
                     f'{list(MODES)}')
  stream = list(enumerate(images))
  if mode == 'slide':
    if crop_size is None:
      raise ValueError("mode='slide' needs crop_size.")
    crop = pair('crop_size', crop_size)
    stride = pair('stride', stride or default_stride(crop))
    results = slide_inference(segment, stream, crop, stride, rows)
  else:
    results = whole_inference(segment, stream, rows)
  return [resize_logits(logits, sizes[index]).argmax(-1).astype(np.int32)
          for index, logits in results]


# --- colours ------------------------------------------------------------------

IGNORE_COLOUR = (0, 0, 0)


def palette(num_classes: int) -> np.ndarray:
  """uint8 [num_classes, 3]: a fixed colour per class, PASCAL VOC's
  bit-interleaved colour map shifted by one so that no class is black
  (black marks ignored pixels)."""
  colours = np.zeros((num_classes, 3), np.uint8)
  for cls in range(num_classes):
    index, colour = cls + 1, [0, 0, 0]
    for bit in range(8):
      for channel in range(3):
        colour[channel] |= ((index >> channel) & 1) << (7 - bit)
      index >>= 3
    colours[cls] = colour
  return colours


def colourize(label_map: np.ndarray, num_classes: int) -> np.ndarray:
  """int [...] class indices -> uint8 [..., 3] palette colours; indices
  outside [0, num_classes) (the ignore index) are IGNORE_COLOUR."""
  label_map = np.asarray(label_map)
  valid = (label_map >= 0) & (label_map < num_classes)
  colours = palette(num_classes)[np.where(valid, label_map, 0)]
  colours[~valid] = IGNORE_COLOUR
  return colours


def display_image(image: np.ndarray) -> np.ndarray:
  """float [H, W, C] of any value range -> uint8 [H, W, 3], stretched to
  its own min..max (the first channel as grey unless it has 3)."""
  image = np.asarray(image, np.float32)
  if image.ndim == 2:
    image = image[..., None]
  image = image if image.shape[-1] == 3 else image[..., :1]
  low, high = float(image.min()), float(image.max())
  scaled = (image - low) / (high - low) if high > low else image * 0
  pixels = np.round(scaled * 255).astype(np.uint8)
  return np.broadcast_to(pixels, pixels.shape[:2] + (3,)).copy()


def overlay(image_uint8: np.ndarray, label_map: np.ndarray,
            num_classes: int, alpha: float = 0.5) -> np.ndarray:
  """uint8 [H, W, 3]: `label_map`'s colours blended over the image with
  weight `alpha`; ignored pixels black."""
  colours = colourize(label_map, num_classes).astype(np.float32)
  blended = (1 - alpha) * image_uint8.astype(np.float32) + alpha * colours
  blended = np.round(blended).astype(np.uint8)
  valid = (np.asarray(label_map) >= 0) & (np.asarray(label_map) < num_classes)
  blended[~valid] = IGNORE_COLOUR
  return blended


def nearest_resize(image: np.ndarray, size: Pair) -> np.ndarray:
  """[H, W, ...] -> [h, w, ...] by nearest neighbour (for display)."""
  rows = (np.arange(int(size[0])) * image.shape[0]) // int(size[0])
  cols = (np.arange(int(size[1])) * image.shape[1]) // int(size[1])
  return np.asarray(image)[rows][:, cols]


def panel_rows(rows: Sequence[Sequence[np.ndarray]], padding: int = 2
               ) -> np.ndarray:
  """uint8 [H, W, 3] from rows of uint8 [h, w, 3] panels laid left to
  right, rows top to bottom, `padding` white pixels between (rows may
  differ in size: each is as tall as its tallest panel)."""
  heights = [max(p.shape[0] for p in row) for row in rows]
  widths = [sum(p.shape[1] for p in row) + padding * (len(row) - 1)
            for row in rows]
  canvas = np.full((sum(heights) + padding * (len(rows) + 1),
                    max(widths) + 2 * padding, 3), 255, np.uint8)
  top = padding
  for row, height in zip(rows, heights):
    left = padding
    for panel in row:
      canvas[top:top + panel.shape[0], left:left + panel.shape[1]] = panel
      left += panel.shape[1] + padding
    top += height + padding
  return canvas
