"""The segmentation evaluators (vit_jax/evaluate/segmentation_evaluator.py):
mmseg's slide windows, logits resized to the original size, mIoU / Dice
against hand-computed values on a fake data source, exactly once, and the
result PNGs."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image
import pytest

from vit_jax import evaluate
from vit_jax import sharding
from vit_jax.evaluate import segmentation as seg
from vit_jax.evaluate import segmentation_evaluator as seg_eval
from vit_jax.models import segformer

NUM_CLASSES = 3
DATA_CONFIG = ml_collections.ConfigDict({'name': 'fake'})
VARIABLES = {'params': {'scale': jnp.ones(())}}


class FakeData:
  """The contract's data functions over a list of examples."""

  def __init__(self, examples, task='segmentation', num_classes=NUM_CLASSES,
               train_image_shape=(4, 4, 1), share_sizes=None):
    self.examples = examples
    self.info = {'task': task, 'num_classes': num_classes,
                 'ignore_index': 255 if task == 'segmentation' else None,
                 'class_names': None, 'train_image_shape': train_image_shape}
    self.share_sizes = share_sizes

  def dataset_info(self, data_config):
    del data_config
    return dict(self.info)

  def eval_share_sizes(self, data_config, split, process_count):
    del data_config, split
    if self.share_sizes is not None:
      return self.share_sizes
    return [len(self.examples[p::process_count]) for p in range(process_count)]

  def eval_examples(self, data_config, split, process_index=None,
                    process_count=None):
    del data_config, split
    yield from self.examples[(process_index or 0)::(process_count or 1)]


def _pointwise_segment(variables, images):
  """Logits -(x - k)^2 * scale of channel 0: the class nearest the pixel's
  value wins, and every window sees the same logits at a pixel."""
  classes = jnp.arange(NUM_CLASSES, dtype=jnp.float32)
  return -(images[..., :1] - classes) ** 2 * variables['params']['scale']


def _offset_segment(variables, images):
  """Logit 0 is the column's offset inside the window, logit 1 the row's."""
  del variables
  rows, cols = images.shape[1:3]
  col = jnp.broadcast_to(jnp.arange(cols, dtype=jnp.float32)[None, :],
                         (rows, cols))
  row = jnp.broadcast_to(jnp.arange(rows, dtype=jnp.float32)[:, None],
                         (rows, cols))
  maps = jnp.stack([col, row], -1)
  return jnp.broadcast_to(maps, images.shape[:1] + maps.shape)


def _mesh(devices=1):
  return sharding.make_mesh(devices=jax.devices()[:devices])


def _example(pred, truth, name='x'):
  """An image whose pointwise prediction is `pred`, labelled `truth`."""
  pred = np.asarray(pred, np.float32)
  return {'image': pred[..., None], 'label_map': np.asarray(truth, np.int32),
          'name': name}


# ------------------------------------------------------------ windows --


def test_slide_windows_are_mmsegs():
  # ADE20K's 512 x 683 with crop 512, stride 341: h_grids 1, w_grids 2,
  # the second window moved back to end at 683.
  assert seg.slide_windows((512, 683), (512, 512), (341, 341)) == [
      (0, 0, 512, 512), (0, 171, 512, 683)]
  # Cityscapes 1024 x 2048, crop 1024, stride 768: 3 windows.
  assert seg.slide_windows((1024, 2048), (1024, 1024), (768, 768)) == [
      (0, 0, 1024, 1024), (0, 768, 1024, 1792), (0, 1024, 1024, 2048)]
  # Smaller than the crop: one window, the whole image.
  assert seg.slide_windows((300, 200), (512, 512), (341, 341)) == [
      (0, 0, 300, 200)]
  # Exactly the crop: one window; rows outer, columns inner.
  assert seg.slide_windows((4, 4), (4, 4), (3, 3)) == [(0, 0, 4, 4)]
  assert seg.slide_windows((7, 7), (4, 4), (3, 3)) == [
      (0, 0, 4, 4), (0, 3, 4, 7), (3, 0, 7, 4), (3, 3, 7, 7)]
  with pytest.raises(ValueError, match='stride'):
    seg.slide_windows((7, 7), (4, 4), (0, 3))


def test_slide_averages_windows_by_their_count():
  # 4 x 7, crop 4, stride 3: windows at columns 0..3 and 3..6; column 3 is
  # covered twice (offsets 3 and 0: 1.5), 4..6 by the second (1..3).
  calls = []

  def predict(windows):
    calls.append(windows.shape)
    return np.asarray(_offset_segment(None, jnp.asarray(windows)))

  images = [('a', np.zeros((4, 7, 1))), ('b', np.zeros((2, 3, 1)))]
  out = dict(seg.slide_inference(predict, images, (4, 4), (3, 3), rows=2))
  np.testing.assert_array_equal(out['a'][0, :, 0],
                                [0, 1, 2, 1.5, 1, 2, 3])
  np.testing.assert_array_equal(out['a'][:, 0, 1], [0, 1, 2, 3])
  # 'b' is smaller than the crop: padded, its logits cropped back.
  assert out['b'].shape == (2, 3, 2)
  np.testing.assert_array_equal(out['b'][..., 0], [[0, 1, 2]] * 2)
  # 3 windows in chunks of exactly 2 (one compile): 2 calls.
  assert calls == [(2, 4, 4, 1)] * 2


def test_slide_equals_whole_for_a_pointwise_model():
  rng = np.random.default_rng(0)
  images = [(i, rng.uniform(0, 2, (h, w, 1)).astype(np.float32))
            for i, (h, w) in enumerate([(5, 9), (6, 6), (3, 4)])]
  predict = lambda x: np.asarray(_pointwise_segment(VARIABLES, x))
  whole = dict(seg.whole_inference(predict, images, rows=2))
  slide = dict(seg.slide_inference(predict, images, (4, 4), (3, 2), rows=3))
  for key, _ in images:
    np.testing.assert_allclose(slide[key], whole[key], rtol=1e-6)


def test_resize_logits_is_torch_bilinear():
  # Upsampling [0, 1] to 4: align_corners=False gives 0, .25, .75, 1.
  two = np.array([[0.0, 1.0]], np.float32)[..., None]
  np.testing.assert_allclose(seg.resize_logits(two, (1, 4))[0, :, 0],
                             [0, 0.25, 0.75, 1])
  logits = np.random.default_rng(1).normal(size=(7, 9, 3)).astype(np.float32)
  for size in [(13, 20), (4, 5), (7, 17)]:
    np.testing.assert_allclose(
        seg.resize_logits(logits, size),
        np.asarray(segformer.resize_bilinear(jnp.asarray(logits)[None],
                                             size))[0], atol=1e-5)


# ------------------------------------------------------------ 2-D metrics --

# Two 2 x 3 maps. Truth / prediction per pixel (255: ignored).
TRUTH_A = [[0, 0, 1], [1, 2, 255]]
PRED_A = [[0, 1, 1], [1, 1, 0]]
TRUTH_B = [[2, 2, 2], [0, 0, 1]]
PRED_B = [[2, 2, 0], [0, 0, 1]]
# Confusion (row truth): 0: [3, 1, 0]; 1: [0, 3, 0]; 2: [1, 1, 2].
# IoU: 0: 3 / (4 + 4 - 3) = .6; 1: 3 / (3 + 5 - 3) = .6; 2: 2 / (4 + 2 - 2)
# = .5. Pixel accuracy 8 / 11; mean accuracy (3/4 + 1 + 2/4) / 3.
EXPECTED = {'miou': (0.6 + 0.6 + 0.5) / 3, 'pixel_accuracy': 8 / 11,
            'mean_accuracy': (0.75 + 1 + 0.5) / 3,
            'iou/0': 0.6, 'iou/1': 0.6, 'iou/2': 0.5}


def _expected_loss(examples):
  total, count = 0.0, 0
  for example in examples:
    logits = np.asarray(_pointwise_segment(VARIABLES, example['image']),
                        np.float64)
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    for index in np.ndindex(example['label_map'].shape):
      label = example['label_map'][index]
      if label != 255:
        total -= log_probs[index][label]
        count += 1
  return total / count


def _evaluator(examples, **kwargs):
  settings = dict(batch_size=1, mode='whole')
  settings.update(kwargs)
  mesh = _mesh(settings.pop('devices', 1))
  data = settings.pop('data', None) or FakeData(examples)
  return seg_eval.SegmentationEvaluator(
      _pointwise_segment, DATA_CONFIG, 'validation', mesh=mesh,
      data_module=data, **settings)


@pytest.mark.parametrize('settings', [
    dict(batch_size=1), dict(batch_size=2), dict(batch_size=3, devices=8),
    dict(mode='slide', crop_size=2, stride=1, batch_size=4)])
def test_metrics_are_the_hand_computed_ones(settings):
  examples = [_example(PRED_A, TRUTH_A, 'a'), _example(PRED_B, TRUTH_B, 'b')]
  evaluator = _evaluator(examples, **settings)
  results = evaluator.run(VARIABLES)
  assert tuple(results) == evaluator.metric_names()
  for name, value in EXPECTED.items():
    assert results[f'val/{name}'] == pytest.approx(value), name
  assert results['val/loss'] == pytest.approx(_expected_loss(examples),
                                              rel=1e-5)


def test_every_example_counts_once_whatever_the_batch():
  # 5 examples, 2 rows a call: 3 calls, the last with a dummy row.
  examples = [_example(PRED_A, TRUTH_A)] * 4 + [_example(PRED_B, TRUTH_B)]
  evaluator = _evaluator(examples, batch_size=2)
  part = evaluator.share(VARIABLES, 0, 1)
  assert evaluator._runner.calls == 3
  assert part['examples'] == 5
  single = _evaluator(examples, batch_size=1).share(VARIABLES, 0, 1)
  np.testing.assert_array_equal(part['matrix'], single['matrix'])
  # Truth A has 5 counted pixels, B 6.
  assert part['matrix'].sum() == 4 * 5 + 6


def test_process_shares_add_up_to_the_split_once():
  examples = [_example(PRED_A, TRUTH_A, str(i)) if i % 2 else
              _example(PRED_B, TRUTH_B, str(i)) for i in range(5)]
  evaluator = _evaluator(examples, batch_size=2)
  whole = evaluator.share(VARIABLES, 0, 1)
  parts = [evaluator.share(VARIABLES, p, 2) for p in range(2)]
  assert [p['examples'] for p in parts] == [3, 2]
  np.testing.assert_array_equal(parts[0]['matrix'] + parts[1]['matrix'],
                                whole['matrix'])
  assert parts[0]['loss'] + parts[1]['loss'] == pytest.approx(whole['loss'])


def test_a_share_that_disagrees_with_eval_share_sizes_fails():
  data = FakeData([_example(PRED_A, TRUTH_A)] * 3, share_sizes=[4])
  with pytest.raises(ValueError, match='3 examples; eval_share_sizes says 4'):
    _evaluator(None, data=data).run(VARIABLES)


def test_logits_are_resized_to_the_original_label_size():
  # The image after pp_eval is 2 x 2 (classes 0 | 1 by column), the label
  # map 2 x 4: bilinear logits at columns 0-3 mix columns 0 / 1 with
  # weights 1 / 0, .75 / .25, .25 / .75, 0 / 1: predictions 0, 0, 1, 1.
  example = _example([[0, 1], [0, 1]], [[0, 0, 1, 1], [0, 0, 2, 1]])
  results = _evaluator([example]).run(VARIABLES)
  # Truth 2 at one pixel, predicted 1: IoU 0 = 1, 1 = 3 / 4, 2 = 0.
  assert results['val/iou/0'] == 1.0
  assert results['val/iou/1'] == 0.75
  assert results['val/iou/2'] == 0.0
  assert results['val/pixel_accuracy'] == 7 / 8


def test_whole_mode_warns_once_that_new_sizes_compile(caplog):
  examples = [_example(PRED_A, TRUTH_A), _example([[0, 1]], [[0, 1]]),
              _example([[2]], [[2]])]
  with caplog.at_level('WARNING'):
    results = _evaluator(examples, batch_size=2).run(VARIABLES)
  assert [r.getMessage().split(':')[0] for r in caplog.records] == [
      'Segmentation evaluation']
  assert 'new compile' in caplog.records[0].getMessage()
  # A: 3 of its 5 pixels right; then 2 and 1 more, all right.
  assert results['val/pixel_accuracy'] == pytest.approx(6 / 8)


def test_absent_classes_are_nan_and_skipped():
  example = _example([[0, 0], [1, 1]], [[0, 0], [1, 1]])
  results = _evaluator([example]).run(VARIABLES)
  assert np.isnan(results['val/iou/2'])
  assert results['val/miou'] == 1.0


def test_bad_labels_name_the_example():
  example = _example([[0, 0]], [[0, 7]], name='bad.png')
  with pytest.raises(ValueError, match='bad.png'):
    _evaluator([example]).run(VARIABLES)


# ------------------------------------------------------------ PNGs --


def test_result_png_rows_are_image_truth_prediction(tmp_path):
  examples = [_example(PRED_A, TRUTH_A), _example(PRED_B, TRUTH_B)]
  evaluator = _evaluator(examples, plots_dir=str(tmp_path), num_images=1)
  evaluator.run(VARIABLES, step=7)
  pixels = np.asarray(Image.open(tmp_path / 'segmentation_val_7.png'))
  # One row of three 2 x 3 panels, enlarged 32x to 64 x 96, 2-px padding.
  assert pixels.shape == (2 + 64 + 2, 2 + 3 * 96 + 2 * 2 + 2, 3)
  colours = seg.palette(NUM_CLASSES)
  image = seg.display_image(np.asarray(PRED_A, np.float32)[..., None])
  truth_panel = pixels[2:66, 2 + 96 + 2:2 + 2 * 96 + 2]
  pred_panel = pixels[2:66, 2 + 2 * 98:2 + 2 * 98 + 96]
  # Truth (0, 0) is class 0 over image pixel 0; (1, 2) is ignored: black.
  np.testing.assert_array_equal(
      truth_panel[0, 0], np.round(0.5 * image[0, 0] + 0.5 * colours[0]))
  np.testing.assert_array_equal(truth_panel[-1, -1], [0, 0, 0])
  np.testing.assert_array_equal(
      pred_panel[0, 40], np.round(0.5 * image[0, 1] + 0.5 * colours[1]))
  # Nothing but one PNG per step.
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'segmentation_val_7.png']


def test_palette_is_fixed_and_never_black():
  colours = seg.palette(300)
  np.testing.assert_array_equal(colours[:4], [[128, 0, 0], [0, 128, 0],
                                              [128, 128, 0], [0, 0, 128]])
  assert (colours.sum(1) > 0).all()
  assert len({tuple(c) for c in colours}) == 300


# ------------------------------------------------------------ volumes --


def _volume_segment(variables, volumes):
  return _pointwise_segment(variables, volumes)


def _volume(pred, truth):
  return {'image': np.asarray(pred, np.float32)[..., None],
          'label_map': np.asarray(truth, np.int32), 'name': 'v'}


def _volume_evaluator(examples, **kwargs):
  data = FakeData(examples, task='volume_segmentation',
                  train_image_shape=(2, 4, 4, 1))
  return seg_eval.VolumeSegmentationEvaluator(
      _volume_segment, DATA_CONFIG, 'validation', _mesh(), data_module=data,
      **kwargs)


def test_volume_dice_perfect_and_partial():
  truth = np.zeros((4, 4, 4), np.int32)
  truth[:2, :2, :2] = 1  # 8 voxels
  truth[3, 3, 3] = 2
  pred = truth.copy()
  pred[:2, :2, :2] = 0
  pred[:2, :2, 1:3] = 1  # 8 voxels, 4 of them on the truth's
  no_two = np.where(truth == 2, 0, truth)
  examples = [_volume(truth, truth), _volume(pred, truth),
              _volume(no_two, no_two)]
  evaluator = _volume_evaluator(examples, sw_batch_size=3, overlap=0.5)
  results = evaluator.run(VARIABLES)
  assert tuple(results) == evaluator.metric_names() == (
      'val/dice', 'val/dice/1', 'val/dice/2')
  # Class 1: 1, 2 * 4 / 16, 1; class 2: 1, 1 (absent from the third).
  assert results['val/dice/1'] == pytest.approx((1 + 0.5 + 1) / 3)
  assert results['val/dice/2'] == 1.0
  assert results['val/dice'] == pytest.approx(((2.5 / 3) + 1) / 2)


def test_volume_dice_is_monais_mean_batch():
  # MONAI 1.6.1: DiceMetric(include_background=False,
  # reduction='mean_batch') over these one-hot volumes gives
  # [0.78506595, 0.79627347, 0.7887387] (class 3 is absent from the second
  # volume's truth: skipped there).
  rng = np.random.default_rng(5)
  examples = []
  for index in range(3):
    truth = rng.integers(0, 4, (6, 6, 6))
    pred = np.where(rng.random((6, 6, 6)) < 0.7, truth,
                    rng.integers(0, 4, (6, 6, 6)))
    if index == 1:
      truth[truth == 3] = 0
    examples.append(_volume(pred, truth))
  data = FakeData(examples, task='volume_segmentation', num_classes=4,
                  train_image_shape=(4, 4, 4, 1))

  def segment(variables, volumes):
    del variables
    return -(volumes[..., :1] - jnp.arange(4.0)) ** 2

  results = seg_eval.VolumeSegmentationEvaluator(
      segment, DATA_CONFIG, 'validation', _mesh(), data_module=data
  ).run(VARIABLES)
  monai = [0.78506595, 0.79627347, 0.7887387]
  for c, value in enumerate(monai, 1):
    assert results[f'val/dice/{c}'] == pytest.approx(value, abs=1e-6)
  assert results['val/dice'] == pytest.approx(np.mean(monai), abs=1e-6)


def test_volume_windows_blend_to_the_whole_prediction():
  rng = np.random.default_rng(2)
  truth = rng.integers(0, NUM_CLASSES, (5, 6, 3))
  for blend in ('gaussian', 'constant'):
    results = _volume_evaluator([_volume(truth, truth)], blend=blend,
                                roi_size=(2, 4, 4), sw_batch_size=2
                                ).run(VARIABLES)
    assert results['val/dice'] == 1.0


def test_volume_png_shows_middle_and_most_foreground_slices(tmp_path):
  truth = np.zeros((5, 4, 4), np.int32)
  truth[1] = 1
  evaluator = _volume_evaluator([_volume(truth, truth)],
                                plots_dir=str(tmp_path), num_images=1)
  evaluator.run(VARIABLES, step=3)
  pixels = np.asarray(Image.open(tmp_path / 'volume_segmentation_val_3.png'))
  # Two rows (slices 2 and 1) of three 4 x 4 panels enlarged to 96.
  assert pixels.shape == (2 + 2 * 98, 2 + 3 * 98, 3)


# ------------------------------------------------------------ settings --


def test_bad_settings_name_the_valid_choices():
  with pytest.raises(ValueError, match=r"\['whole', 'slide'\]"):
    _evaluator([], mode='tile')
  with pytest.raises(ValueError, match=r"\['gaussian', 'constant'\]"):
    _volume_evaluator([], blend='linear')
  with pytest.raises(ValueError, match="mode='slide'"):
    _evaluator([], crop_size=4)
  with pytest.raises(ValueError, match='crop_size must be'):
    _evaluator([], mode='slide', crop_size=(4, 0))
  with pytest.raises(ValueError, match='overlap'):
    _volume_evaluator([], overlap=1.0)
  with pytest.raises(ValueError, match="needs a 'segmentation' dataset"):
    _evaluator([], data=FakeData([], task='classification'))
  with pytest.raises(ValueError, match='unknown fields'):
    evaluate.resolve_entry('seg', {'kind': 'segmentation', 'crop': 4})
  assert evaluate.resolve_entry('seg', {'kind': 'volume_segmentation'}) == {
      'kind': 'volume_segmentation', **evaluate.EVAL_FIELDS[
          'volume_segmentation']}


def test_slide_defaults_to_the_train_crop():
  evaluator = _evaluator([], mode='slide', data=FakeData(
      [], train_image_shape=(512, 512, 3)))
  assert evaluator.crop_size == (512, 512) and evaluator.stride == (341, 341)


def test_build_evaluators_needs_a_segment_function():
  config = ml_collections.ConfigDict({
      'objective': 'supervised', 'batch_size': 8, 'eval_every_steps': None,
      'data': {'eval_split': 'test', 'name': 'digits'},
      'evals': {'seg': {'kind': 'segmentation'}}})
  fns = types.SimpleNamespace(segment=None)
  with pytest.raises(ValueError, match="evals.seg: segmentation evaluation "
                     "needs a segmentation run"):
    evaluate.build_evaluators(config, fns, _mesh(), None)


def test_a_segformer_on_two_devices_scores_as_applied_directly():
  model = segformer.SegFormer(widths=(8, 16, 16, 24), depths=(1, 1, 1, 1),
                              num_heads=(1, 2, 2, 3), decoder_width=16,
                              num_classes=NUM_CLASSES)
  rng = np.random.default_rng(3)
  images = rng.normal(size=(3, 32, 32, 3)).astype(np.float32)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])

  def segment(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return segformer.upsample_logits(logits, images.shape[1:3])

  examples = []
  for image in images:
    truth = rng.integers(0, NUM_CLASSES, (40, 36))
    truth[0] = 255
    examples.append({'image': image, 'label_map': truth, 'name': 'x'})
  # The reference: each image alone through the model, logits to 40 x 36.
  matrix = seg.ConfusionMatrix(NUM_CLASSES)
  for example in examples:
    logits = jax.jit(segment)(variables, example['image'][None])
    pred = segformer.resize_bilinear(logits, (40, 36))[0].argmax(-1)
    matrix.update(example['label_map'], pred)
  expected = seg.segmentation_metrics(matrix.matrix)
  for settings in (dict(mode='whole'),
                   dict(mode='slide', crop_size=32, stride=16)):
    results = seg_eval.SegmentationEvaluator(
        segment, DATA_CONFIG, 'validation', 3, _mesh(2),
        data_module=FakeData(examples), **settings).run(variables)
    assert results['val/miou'] == pytest.approx(expected['mIoU'])
    assert results['val/pixel_accuracy'] == pytest.approx(
        expected['pixel_accuracy'])


def _fake_peer(monkeypatch, peer_shapes):
  """Two processes, the other one's (has work, shape) per exchange from
  `peer_shapes` (None: no work). Returns the shapes this one sent."""
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  sent = []

  def allgather(row):
    row = np.asarray(row)
    sent.append(tuple(row[2:2 + row[1]]) if row[0] else None)
    other = np.zeros(8, np.int64)
    shape = peer_shapes.pop(0)
    if shape is not None:
      other[0], other[1] = 1, len(shape)
      other[2:2 + len(shape)] = shape
    return np.stack([row, other])

  monkeypatch.setattr(jax, 'process_count', lambda: 2)
  monkeypatch.setattr(multihost_utils, 'process_allgather', allgather)
  monkeypatch.setattr(multihost_utils, 'global_array_to_host_local_array',
                      lambda out, mesh, spec: out)
  return sent


def test_a_process_out_of_work_joins_the_others_calls(monkeypatch):
  # Rows 2 over 2 processes: 1 each. This process has one image, the
  # other three: after its own call it joins two more with dummy rows.
  sent = _fake_peer(monkeypatch, [(2, 3, 1)] * 3 + [None])
  runner = seg_eval._Lockstep(_pointwise_segment, _mesh(), 2)  # pylint: disable=protected-access
  assert runner.local_rows == 1
  image = np.asarray(PRED_A, np.float32)[None, ..., None]
  np.testing.assert_array_equal(
      runner.bind(VARIABLES)(image).argmax(-1)[0], PRED_A)
  runner.drain(VARIABLES)
  assert runner.calls == 3
  assert sent == [(2, 3, 1), None, None, None]


def test_processes_with_different_shapes_fail_clearly(monkeypatch):
  _fake_peer(monkeypatch, [(3, 3, 1)])
  runner = seg_eval._Lockstep(_pointwise_segment, _mesh(), 2)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="use mode='slide'"):
    runner.bind(VARIABLES)(np.zeros((1, 2, 3, 1), np.float32))
