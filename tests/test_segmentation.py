"""Segmentation losses (vit_jax/losses.py) and metrics
(vit_jax/evaluate/segmentation.py): hand-computed small cases, and MONAI /
torch numbers from tests/golden/segmentation_monai.npz
(tests/support/make_golden_segmentation.py)."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import losses
from vit_jax.evaluate import segmentation

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden',
                      'segmentation_monai.npz')


@pytest.fixture(scope='module')
def golden():
  with np.load(GOLDEN) as data:
    return dict(data)


# --- losses -----------------------------------------------------------------


def test_pixel_xent_matches_torch_with_ignore(golden):
  loss = jax.jit(losses.pixel_softmax_xent)(golden['xent/logits'],
                                            golden['xent/labels'])
  np.testing.assert_allclose(loss, golden['xent/loss'], rtol=1e-6, atol=1e-6)


def test_pixel_xent_by_hand():
  # Pixel 0: uniform over 2 classes -> log 2; pixel 1 ignored; pixel 2:
  # logits (0, log 3), label 1 -> -log(3/4).
  logits = jnp.array([[[0.0, 0.0], [5.0, -5.0], [0.0, np.log(3.0)]]])
  labels = jnp.array([[0, 255, 1]])
  expected = (np.log(2.0) - np.log(0.75)) / 2
  np.testing.assert_allclose(losses.pixel_softmax_xent(logits, labels),
                             expected, rtol=1e-6)


def test_pixel_xent_all_ignored_is_zero_with_zero_gradient():
  logits = jnp.ones((1, 2, 2, 3))
  labels = jnp.full((1, 2, 2), 255)
  loss, grad = jax.value_and_grad(losses.pixel_softmax_xent)(logits, labels)
  assert float(loss) == 0.0
  assert not np.any(np.asarray(grad))


def test_pixel_xent_shape_mismatch():
  with pytest.raises(ValueError, match=r'plus a class axis'):
    losses.pixel_softmax_xent(jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 4, 5),
                                                                  jnp.int32))


def test_check_labels_names_bad_values():
  losses.check_labels(np.array([[0, 2, 255]]), 3)
  with pytest.raises(ValueError, match=r'labels -1, 3 .*\[0, 3\).*255'):
    losses.check_labels(np.array([[0, 3, 255, -1, 3]]), 3)
  with pytest.raises(ValueError, match=r'labels 255 '):
    losses.check_labels(np.array([255]), 3, ignore_index=None)


def test_dice_ce_matches_monai(golden):
  loss = jax.jit(losses.dice_ce_loss)(golden['dicece/logits'],
                                      golden['dicece/labels'])
  np.testing.assert_allclose(loss, golden['dicece/loss'], rtol=1e-6,
                             atol=1e-6)


def test_dice_ce_by_hand():
  # Confident and right: CE ~ 0; Dice per class 1 - (2n + s) / (2n + s) = 0
  # for present classes and 1 - s / s = 0 for absent ones.
  labels = jnp.array([[[[0, 1], [1, 1]]]])
  logits = 50.0 * jax.nn.one_hot(labels, 3)
  np.testing.assert_allclose(losses.dice_ce_loss(logits, labels), 0.0,
                             atol=1e-6)
  # Uniform over 2 classes, one voxel of class 0: CE log 2; Dice class 0:
  # 1 - (1 + s) / (1.5 + s); class 1: 1 - s / (0.5 + s).
  s = 1e-5
  expected = np.log(2.0) + (1 - (1 + s) / (1.5 + s) + 1 - s / (0.5 + s)) / 2
  np.testing.assert_allclose(
      losses.dice_ce_loss(jnp.zeros((1, 1, 1, 1, 2)),
                          jnp.zeros((1, 1, 1, 1), jnp.int32)),
      expected, rtol=1e-6)


# --- confusion matrix and mIoU ------------------------------------------------

# 4 classes; class 3 is absent from truth and prediction; 255 ignored.
TRUTH = np.array([[0, 0, 1, 1], [2, 2, 255, 255]])
PRED = np.array([[0, 1, 1, 1], [2, 0, 3, 0]])


def test_confusion_matrix_by_hand():
  matrix = segmentation.ConfusionMatrix(4)
  matrix.update(TRUTH, PRED)
  expected = np.zeros((4, 4), np.int64)
  for t, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0)]:
    expected[t, p] += 1
  np.testing.assert_array_equal(matrix.matrix, expected)
  assert matrix.matrix.dtype == np.int64
  # The jitted per-batch counts agree, summed over two batches.
  counts = jax.jit(segmentation.batch_confusion, static_argnums=2)(
      TRUTH, PRED, 4)
  assert counts.dtype == jnp.int32
  device = segmentation.ConfusionMatrix(4)
  device.add(counts)
  device.add(counts)
  np.testing.assert_array_equal(device.matrix, 2 * expected)


def test_metrics_by_hand_with_absent_class():
  matrix = segmentation.ConfusionMatrix(4)
  matrix.update(TRUTH, PRED)
  metrics = segmentation.segmentation_metrics(matrix.matrix)
  # IoU: class 0: 1 / (2 + 2 - 1); class 1: 2 / (2 + 3 - 2); class 2:
  # 1 / (2 + 1 - 1); class 3 absent from both: NaN, left out of the mean.
  iou = [1 / 3, 2 / 3, 1 / 2]
  np.testing.assert_allclose(metrics['per_class_iou'][:3], iou)
  assert np.isnan(metrics['per_class_iou'][3])
  np.testing.assert_allclose(metrics['mIoU'], np.mean(iou))
  np.testing.assert_allclose(metrics['pixel_accuracy'], 4 / 6)
  np.testing.assert_allclose(metrics['mean_accuracy'], (1 / 2 + 1 + 1 / 2) / 3)


def test_predicted_only_class_counts_in_miou():
  # Class 2 never in the truth but predicted: IoU 0, in the mean (mmseg).
  metrics = segmentation.segmentation_metrics(
      np.array([[3, 0, 1], [0, 2, 0], [0, 0, 0]]))
  np.testing.assert_allclose(metrics['per_class_iou'], [3 / 4, 1, 0])
  np.testing.assert_allclose(metrics['mIoU'], (3 / 4 + 1) / 3)
  np.testing.assert_allclose(metrics['mean_accuracy'], (3 / 4 + 1) / 2)


def test_all_ignored_batch_counts_nothing():
  matrix = segmentation.ConfusionMatrix(3)
  matrix.update(np.full((2, 3), 255), np.zeros((2, 3), np.int32))
  assert matrix.matrix.sum() == 0
  assert not np.asarray(segmentation.batch_confusion(
      jnp.full((2, 3), 255), jnp.zeros((2, 3), jnp.int32), 3)).any()
  metrics = segmentation.segmentation_metrics(matrix.matrix)
  assert np.isnan(metrics['mIoU']) and np.isnan(metrics['pixel_accuracy'])


def test_ignore_index_wins_inside_the_classes():
  # 300 classes: label 255 is ignored anyway, 256 is a class.
  counts = segmentation.batch_confusion(
      jnp.array([255, 256]), jnp.array([255, 256]), 300)
  assert int(counts.sum()) == 1 and int(counts[256, 256]) == 1


def test_update_rejects_bad_input():
  matrix = segmentation.ConfusionMatrix(3)
  with pytest.raises(ValueError, match=r'labels 7 .*\[0, 3\)'):
    matrix.update(np.array([0, 7]), np.array([0, 1]))
  with pytest.raises(ValueError, match=r'same shape'):
    matrix.update(np.zeros((2, 2), int), np.zeros((2, 3), int))
  with pytest.raises(ValueError, match=r'counts \(2, 2\) must be \(3, 3\)'):
    matrix.add(np.zeros((2, 2), np.int32))
  with pytest.raises(ValueError, match=r'num_classes must be at least 1'):
    segmentation.ConfusionMatrix(0)


# --- Dice -------------------------------------------------------------------


def _per_volume_dice(truth, pred, classes):
  rows = []
  for t, p in zip(truth, pred):
    matrix = segmentation.ConfusionMatrix(classes, ignore_index=None)
    matrix.update(t, p)
    rows.append(segmentation.volume_dice(matrix.matrix))
  return np.stack(rows)


def test_dice_matches_monai(golden):
  per_volume = _per_volume_dice(golden['dice/truth'], golden['dice/pred'], 4)
  np.testing.assert_allclose(per_volume, golden['dice/per_volume'],
                             rtol=1e-6)  # NaNs compare equal
  result = segmentation.mean_dice(per_volume)
  np.testing.assert_allclose(result['mean_dice'], golden['dice/mean'][0],
                             rtol=1e-6)
  np.testing.assert_allclose(result['per_class_dice'],
                             golden['dice/mean_batch'], rtol=1e-6)


def test_dice_by_hand():
  # Class 1: truth 2 voxels, prediction 1 of them plus 1 more -> 2/4;
  # class 2: absent from truth, predicted -> NaN (MONAI's ignore_empty).
  matrix = segmentation.ConfusionMatrix(3)
  matrix.update(np.array([0, 1, 1, 0]), np.array([1, 1, 2, 0]))
  np.testing.assert_allclose(segmentation.volume_dice(matrix.matrix),
                             [0.5, np.nan])
  np.testing.assert_allclose(
      segmentation.volume_dice(matrix.matrix, include_background=True),
      [2 / 3, 0.5, np.nan])
  result = segmentation.mean_dice([[0.5, np.nan], [np.nan, np.nan]])
  assert result['mean_dice'] == 0.5  # the empty volume is left out
  np.testing.assert_allclose(result['per_class_dice'], [0.5, np.nan])
  assert segmentation.mean_dice([[np.nan, np.nan]])['mean_dice'] == 0.0
  with pytest.raises(ValueError, match=r'\[volumes, classes\]'):
    segmentation.mean_dice([0.5, 0.2])


# --- sliding window -----------------------------------------------------------


def _window_predictor(mix, ramp):
  """make_golden_segmentation.window_predictor, channels last."""
  def predict(windows):
    out = windows @ mix
    for axis in range(3):
      size = windows.shape[1 + axis]
      position = np.arange(size, dtype=np.float32).reshape(
          [size if a == axis else 1 for a in range(3)] + [1])
      out = out + ramp[axis] * position
    return out
  return predict


@pytest.mark.parametrize('mode,overlap,corners', [('gaussian', 0.5, 6),
                                                  ('constant', 0.25, 4)])
def test_sliding_window_matches_monai(golden, mode, overlap, corners):
  # 11 x 13 x 6 in 8^3 windows: 2 x 3 corners at overlap 0.5, 2 x 2 at
  # 0.25 (the last moved back to the edge), and the last axis padded 1
  # before, 1 after.
  calls = []
  predict = _window_predictor(golden['window/mix'], golden['window/ramp'])
  def counting(windows):
    calls.append(windows.shape[0])
    return predict(windows)
  out = segmentation.sliding_window(counting, golden['window/volume'],
                                    (8, 8, 8), overlap=overlap, mode=mode)
  assert out.shape == golden[f'window/{mode}'].shape
  np.testing.assert_allclose(out, golden[f'window/{mode}'], rtol=1e-5,
                             atol=1e-5)
  assert sum(calls) == 2 * corners and max(calls) == 4


def test_importance_map_matches_monai(golden):
  np.testing.assert_allclose(
      segmentation.importance_map((4, 6, 5), 'gaussian', 0.125),
      golden['window/map'], rtol=1e-6)
  np.testing.assert_array_equal(
      segmentation.importance_map((2, 3), 'constant'), np.ones((2, 3)))


def test_window_starts():
  assert segmentation._window_starts(13, 8, 0.5) == [0, 4, 5]
  assert segmentation._window_starts(8, 8, 0.5) == [0]
  assert segmentation._window_starts(20, 8, 0.25) == [0, 6, 12]


def test_sliding_window_rejects_bad_input():
  volume = np.zeros((1, 4, 4, 4, 1), np.float32)
  identity = lambda windows: windows
  with pytest.raises(ValueError, match=r'window \(2, 2\) needs 2 spatial'):
    segmentation.sliding_window(identity, volume, (2, 2))
  with pytest.raises(ValueError, match=r'overlap must be in \[0, 1\)'):
    segmentation.sliding_window(identity, volume, (2, 2, 2), overlap=1.0)
  with pytest.raises(ValueError, match=r"mode 'linear' is not one of"):
    segmentation.sliding_window(identity, volume, (2, 2, 2), mode='linear')
  with pytest.raises(ValueError, match=r'must keep the window'):
    segmentation.sliding_window(lambda w: w[:, :1], volume, (2, 2, 2))
