"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel
and mean accuracy (as mmseg computes them), and per-volume Dice (as MONAI's
DiceMetric). The building blocks of the segmentation evaluators.

Counts are exact: a batch's matrix is int32 (at most 2^31 pixels a batch),
and the sum over a split is int64 on the host, never a float.
"""

from typing import Dict, Optional

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
