"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel
and mean accuracy (as mmseg computes them), per-volume Dice (as MONAI's
DiceMetric), and sliding-window inference over volumes (as MONAI's
sliding_window_inference). The building blocks of the segmentation
evaluators.

Counts are exact: a batch's matrix is int32 (at most 2^31 pixels a batch),
and the sum over a split is int64 on the host, never a float.
"""

import itertools
from typing import Callable, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import losses


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
