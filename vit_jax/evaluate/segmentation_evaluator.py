"""Segmentation evaluators: mIoU over 2-D images (mmseg's protocol) and
Dice over 3-D volumes (MONAI's), plus result PNGs.

`SegmentationEvaluator.run(variables, step)` returns, over a whole split
exactly once:
  <prefix>/miou, <prefix>/pixel_accuracy, <prefix>/mean_accuracy,
  <prefix>/loss (per-pixel softmax cross-entropy, ignore index left out),
  <prefix>/iou/<c> for every class c (NaN: absent from truth and
  prediction, skipped by the means, as mmseg).
`VolumeSegmentationEvaluator.run(variables, step)` returns
  <prefix>/dice (the mean over foreground classes of the per-class means,
  as UNETR's BTCV table), <prefix>/dice/<c> for c in 1..K-1 (each the mean
  over the volumes whose truth has c; NaN if none).

Both read one example at a time (`data.eval_examples`: the image after
pp_eval, the label map at the dataset's original resolution) and take
`segment(variables, images) -> logits at the images' own size` (the run's
`EvalFunctions.segment`), which they jit themselves over the mesh. 2-D
logits are brought to the label map's original size before the argmax
(bilinear, as mmseg); the metrics are computed on the host in exact int64
counts.

Every process evaluates its own share (`data.eval_share_sizes`); each
jitted call takes the same number of rows from every process (dummy rows
fill the gaps and their results are dropped), and while any process still
has work the others join its calls with dummy rows, so every process
makes the same calls. The counts are summed across processes at the end.
"""

import re
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import jax
import numpy as np

from vit_jax import losses
from vit_jax import paths
from vit_jax import sharding
from vit_jax.evaluate import reconstruction
from vit_jax.evaluate import segmentation as seg
from vit_jax.models import common

MODES = seg.MODES
BLEND_MODES = seg.BLEND_MODES
SIGMA_SCALE = 0.125  # MONAI's sliding_window_inference default
DISPLAY_SIZE = 96  # small panels are enlarged to at least this many pixels


def _data(data_module):
  if data_module is None:
    from vit_jax import data as data_module  # pylint: disable=g-import-not-at-top
  return data_module


class _Lockstep:
  """`segment` jitted over the mesh, called with this process's rows.

  rows: wanted rows per call over all processes, rounded up to a multiple
  of the mesh's batch devices; `local_rows` of them come from each
  process. With several processes, every call is preceded by an exchange
  of (has work, shape), so that a process without work joins the others'
  calls with dummy rows (`drain`) and shapes that differ across processes
  fail with a clear error instead of a hang.
  """

  def __init__(self, segment: Callable, mesh, rows: int):
    if rows < 1:
      raise ValueError(f'The batch size must be >= 1, got {rows}.')
    devices = mesh.size
    self.rows = -(-rows // devices) * devices
    self.local_rows = self.rows // jax.process_count()
    self._mesh = mesh
    self._shapes = set()
    self._jit = jax.jit(segment,
                        out_shardings=sharding.batch_sharding(mesh))
    self.calls = 0  # jitted calls made, dummy ones included

  def _peers(self, shape: Optional[tuple]) -> Optional[tuple]:
    """The shape some process has work for (None: none has); raises if
    the processes with work disagree."""
    if jax.process_count() == 1:
      return shape
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    row = np.zeros(8, np.int64)
    if shape is not None:
      row[0], row[1] = 1, len(shape)
      row[2:2 + len(shape)] = shape
    rows = np.asarray(multihost_utils.process_allgather(row))
    active = {tuple(r[2:2 + r[1]]) for r in rows if r[0]}
    if len(active) > 1:
      raise ValueError(f'Processes evaluate inputs of different shapes '
                       f'{sorted(active)} in one call: in \'whole\' mode all '
                       f'images after pp_eval must have one size (end '
                       f'pp_eval with a fixed resize) or use mode=\'slide\'.')
    return active.pop() if active else None

  def _call(self, variables, inputs: np.ndarray) -> np.ndarray:
    self.calls += 1
    batch = sharding.global_batch({'x': inputs}, self._mesh)['x']
    out = self._jit(variables, batch)
    if jax.process_count() == 1:
      return np.asarray(out)
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    return np.asarray(multihost_utils.global_array_to_host_local_array(
        out, self._mesh, sharding.batch_sharding(self._mesh).spec))

  def bind(self, variables) -> Callable[[np.ndarray], np.ndarray]:
    """rows [n <= local_rows, ...] -> their outputs [n, ...]."""
    def predict(inputs):
      inputs = np.asarray(inputs, np.float32)
      count = inputs.shape[0]
      if inputs.shape[1:] not in self._shapes:
        if len(self._shapes) == 1:
          logging.warning(
              'Segmentation evaluation: inputs of a new shape %s after %s: '
              'each new shape is a new compile (end pp_eval with a fixed '
              'size, or use mode=\'slide\').', inputs.shape[1:],
              next(iter(self._shapes)))
        self._shapes.add(inputs.shape[1:])
      self._peers(inputs.shape[1:])
      if count < self.local_rows:
        inputs = np.concatenate([inputs, np.zeros(
            (self.local_rows - count,) + inputs.shape[1:], np.float32)])
      return self._call(variables, inputs)[:count]
    return predict

  def drain(self, variables) -> None:
    """Joins other processes' remaining calls with dummy rows."""
    while True:
      shape = self._peers(None)
      if shape is None:
        return
      self._call(variables, np.zeros((self.local_rows,) + shape, np.float32))


def _sum_over_processes(values: np.ndarray) -> np.ndarray:
  if jax.process_count() == 1:
    return values
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(values)).sum(0)


def _enlarge(panel: np.ndarray) -> np.ndarray:
  scale = max(1, -(-DISPLAY_SIZE // max(panel.shape[:2])))
  return panel.repeat(scale, 0).repeat(scale, 1)


def _result_row(image: np.ndarray, truth: np.ndarray, pred: np.ndarray,
                num_classes: int) -> List[np.ndarray]:
  """image | truth | prediction, the maps over the image, at the label
  map's size."""
  shown = seg.display_image(seg.nearest_resize(image, truth.shape[:2]))
  return [_enlarge(panel) for panel in (
      shown, seg.overlay(shown, truth, num_classes),
      seg.overlay(shown, pred, num_classes))]


def _plot_path(plots_dir: str, kind: str, prefix: str, step: int) -> str:
  name = re.sub(r'[^A-Za-z0-9_.-]+', '_', prefix).strip('_') or 'val'
  return paths.join(plots_dir, f'{kind}_{name}_{step}.png')


class _Base:
  """What both evaluators share: the data, the shares, the PNG."""

  KIND = ''

  def __init__(self, data_config, split: str, plots_dir: Optional[str],
               num_images: int, prefix: str, data_module,
               process_index: Optional[int], process_count: Optional[int]):
    if num_images < 0:
      raise ValueError(f'num_images must be >= 0, got {num_images}.')
    self._data = _data(data_module)
    self._data_config = data_config
    self._split = split
    self._plots_dir = plots_dir
    self._num_images = num_images
    self._prefix = prefix
    self._process_index = (jax.process_index() if process_index is None
                           else process_index)
    self._process_count = process_count or jax.process_count()
    # The kind's name is the task it evaluates.
    self._info = self._data.dataset_info(data_config)
    found = self._info.get('task', 'classification')
    if found != self.KIND:
      raise ValueError(f'Evaluator kind {self.KIND!r} needs a {self.KIND!r} '
                       f'dataset; {data_config.name!r} is a {found!r} '
                       f'dataset.')
    self.num_classes = int(self._info['num_classes'])

  def _examples(self, process_index: int, process_count: int):
    """This share's examples, checked against eval_share_sizes (so the
    split is counted exactly once)."""
    expected = self._data.eval_share_sizes(
        self._data_config, self._split, process_count)[process_index]
    count = 0
    for example in self._data.eval_examples(
        self._data_config, self._split, process_index=process_index,
        process_count=process_count):
      count += 1
      yield example
    if count != expected:
      raise ValueError(f'Split {self._split!r} of {self._data_config.name!r}'
                       f' gave process {process_index} {count} examples; '
                       f'eval_share_sizes says {expected}.')

  def run(self, variables, step: Optional[int] = None) -> Dict[str, float]:
    part = self.share(variables, self._process_index, self._process_count,
                      self._num_images if self._process_index == 0 else 0)
    results = self._combine(part)
    self._write_plot(step, part['shown'])
    return results

  def _empty(self) -> ValueError:
    return ValueError(f'Split {self._split!r} of {self._data_config.name!r} '
                      f'is empty.')

  def _write_plot(self, step: Optional[int], rows) -> Optional[str]:
    if not (self._plots_dir and step is not None and rows
            and self._process_index == 0):
      return None
    paths.makedirs(self._plots_dir)
    path = _plot_path(self._plots_dir, self.KIND, self._prefix, step)
    reconstruction.write_png(path, seg.panel_rows(rows))
    return path


class SegmentationEvaluator(_Base):
  """mIoU and friends over a 2-D split (see the module docstring).

  Args:
    segment_fn: (variables, images [B, H, W, C]) -> logits [B, H, W, K].
    data_config, split: the examples (`data.eval_examples`).
    batch_size: images ('whole') or windows ('slide') per jitted call over
      all processes (rounded up to a multiple of the mesh's devices).
    mesh: device mesh.
    mode: 'whole' (each image at once; consecutive images of one size
      batched, a new size a new compile) or 'slide' (mmseg's windows of
      crop_size every stride, averaged; one compile).
    crop_size, stride: 'slide' windows, int or (H, W); None: the training
      crop (`dataset_info`'s train_image_shape) and 2/3 of the crop,
      rounded down (mmseg's ADE20K setting, 512 and 341).
    plots_dir: where `segmentation_<prefix>_<step>.png` goes; None: none.
    num_images: rows of the PNG (the first examples of process 0).
    prefix: metric group.
    data_module: provides dataset_info, eval_examples, eval_share_sizes
      (vit_jax.data by default).
  """

  KIND = 'segmentation'

  def __init__(self, segment_fn: Callable, data_config, split: str,
               batch_size: int, mesh, mode: str = 'whole',
               crop_size=None, stride=None, plots_dir: Optional[str] = None,
               num_images: int = 4, prefix: str = 'val', data_module=None,
               process_index: Optional[int] = None,
               process_count: Optional[int] = None):
    super().__init__(data_config, split, plots_dir, num_images, prefix,
                     data_module, process_index, process_count)
    common.check_choice('segmentation mode', mode, MODES)
    info = self._info
    self._ignore_index = info.get('ignore_index', 255)
    self._mode = mode
    if mode == 'slide':
      crop_size = crop_size or info['train_image_shape'][:2]
      self.crop_size = seg.pair('crop_size', crop_size)
      self.stride = seg.pair('stride', stride or seg.default_stride(
          self.crop_size))
    elif crop_size is not None or stride is not None:
      raise ValueError(f"crop_size and stride go with mode='slide'; mode is "
                       f'{mode!r}.')
    self._runner = _Lockstep(segment_fn, mesh, batch_size)

  def metric_names(self) -> Tuple[str, ...]:
    """The names `run` returns (how a resumed run finds its rows)."""
    return tuple(f'{self._prefix}/{name}' for name in (
        'miou', 'pixel_accuracy', 'mean_accuracy', 'loss')) + tuple(
            f'{self._prefix}/iou/{c}' for c in range(self.num_classes))

  def share(self, variables, process_index: int, process_count: int,
            keep_images: int = 0) -> Dict[str, Any]:
    """One process's part: {'matrix' int64 [K, K], 'loss' (sum),
    'pixels', 'examples', 'shown' (the first keep_images rows for the
    PNG)}; the same jitted calls on every process."""
    matrix = seg.ConfusionMatrix(self.num_classes, self._ignore_index)
    loss, pixels, examples, shown = 0.0, 0, 0, []
    labels = {}

    def images():
      for index, example in enumerate(self._examples(process_index,
                                                     process_count)):
        labels[index] = (np.asarray(example['label_map']),
                         example.get('name', str(index)),
                         example['image'] if index < keep_images else None)
        yield index, example['image']

    predict = self._runner.bind(variables)
    if self._mode == 'slide':
      results = seg.slide_inference(predict, images(), self.crop_size,
                                    self.stride, self._runner.local_rows)
    else:
      results = seg.whole_inference(predict, images(),
                                    self._runner.local_rows)
    for index, logits in results:
      truth, name, image = labels.pop(index)
      if truth.ndim != 2:
        raise ValueError(f'Example {name}: label_map must be [H, W], got '
                         f'{truth.shape}.')
      try:
        losses.check_labels(truth, self.num_classes, self._ignore_index)
      except ValueError as error:
        raise ValueError(f'Example {name}: {error}') from None
      pred, example_loss, example_pixels = seg.prediction_at(
          logits, truth, self._ignore_index)
      matrix.update(truth, pred)
      loss += example_loss
      pixels += example_pixels
      examples += 1
      if image is not None:
        shown.append(_result_row(image, truth, pred, self.num_classes))
    self._runner.drain(variables)
    return {'matrix': matrix.matrix, 'loss': loss, 'pixels': pixels,
            'examples': examples, 'shown': shown}

  def _combine(self, part) -> Dict[str, float]:
    """The metrics of every process's counts."""
    matrix = _sum_over_processes(part['matrix'])
    loss, pixels, examples = _sum_over_processes(
        np.array([part['loss'], part['pixels'], part['examples']],
                 np.float64))
    if not examples:
      raise self._empty()
    found = seg.segmentation_metrics(matrix)
    results = {f'{self._prefix}/miou': found['mIoU'],
               f'{self._prefix}/pixel_accuracy': found['pixel_accuracy'],
               f'{self._prefix}/mean_accuracy': found['mean_accuracy'],
               f'{self._prefix}/loss': (float(loss / pixels) if pixels
                                        else float('nan'))}
    for c, iou in enumerate(found['per_class_iou']):
      results[f'{self._prefix}/iou/{c}'] = float(iou)
    return results


class VolumeSegmentationEvaluator(_Base):
  """Dice over a 3-D split (see the module docstring), MONAI's
  sliding_window_inference on each whole volume.

  Args:
    segment_fn: (variables, windows [B, D, H, W, C]) -> logits
      [B, D, H, W, K].
    data_config, split: the volumes (`data.eval_examples`).
    mesh: device mesh.
    roi_size: the window (D, H, W); None: the training crop
      (`dataset_info`'s train_image_shape).
    sw_batch_size: windows per jitted call over all processes (rounded up
      to a multiple of the mesh's devices).
    overlap: of neighbouring windows, in [0, 1).
    blend: 'gaussian' (sigma 0.125 of the window) or 'constant'.
    plots_dir: where `volume_segmentation_<prefix>_<step>.png` goes.
    num_images: volumes in the PNG (two rows each: the middle slice of
      the first axis and the slice with the most foreground).
    prefix: metric group.
    data_module: as SegmentationEvaluator's.
  """

  KIND = 'volume_segmentation'

  def __init__(self, segment_fn: Callable, data_config, split: str, mesh,
               roi_size=None, sw_batch_size: int = 4, overlap: float = 0.5,
               blend: str = 'gaussian', plots_dir: Optional[str] = None,
               num_images: int = 2, prefix: str = 'val', data_module=None,
               process_index: Optional[int] = None,
               process_count: Optional[int] = None):
    super().__init__(data_config, split, plots_dir, num_images, prefix,
                     data_module, process_index, process_count)
    common.check_choice('volume_segmentation blend', blend, BLEND_MODES)
    if not 0 <= overlap < 1:
      raise ValueError(f'overlap must lie in [0, 1), got {overlap}.')
    info = self._info
    if self.num_classes < 2:
      raise ValueError(f'Dice needs a background and at least one class; '
                       f'{data_config.name!r} has {self.num_classes}.')
    roi_size = roi_size or info['train_image_shape'][:3]
    if isinstance(roi_size, int) and not isinstance(roi_size, bool):
      roi_size = (roi_size,) * 3  # a cube, as the models' image_size
    roi_size = tuple(roi_size)
    if len(roi_size) != 3 or any(int(r) != r or r < 1 for r in roi_size):
      raise ValueError(f'roi_size must be three positive ints (D, H, W), '
                       f'got {roi_size!r}.')
    self.roi_size = tuple(int(r) for r in roi_size)
    self._overlap = overlap
    self._blend = blend
    self._runner = _Lockstep(segment_fn, mesh, sw_batch_size)

  def metric_names(self) -> Tuple[str, ...]:
    """The names `run` returns (how a resumed run finds its rows)."""
    return (f'{self._prefix}/dice',) + tuple(
        f'{self._prefix}/dice/{c}' for c in range(1, self.num_classes))

  def share(self, variables, process_index: int, process_count: int,
            keep_images: int = 0) -> Dict[str, Any]:
    """One process's part: {'dice' float64 [volumes, K - 1] (volume_dice
    rows), 'shown'}."""
    predict = self._runner.bind(variables)
    rows, shown = [], []
    for index, example in enumerate(self._examples(process_index,
                                                   process_count)):
      volume = np.asarray(example['image'], np.float32)
      truth = np.asarray(example['label_map'])
      name = example.get('name', str(index))
      if volume.ndim != 4 or truth.shape != volume.shape[:3]:
        raise ValueError(f'Volume {name}: image {volume.shape} and label_map '
                         f'{truth.shape} must be [D, H, W, C] and [D, H, W].')
      logits = seg.sliding_window(
          predict, volume[None], self.roi_size, self._overlap, self._blend,
          SIGMA_SCALE, window_batch=self._runner.local_rows)[0]
      pred = logits.argmax(-1)
      matrix = seg.ConfusionMatrix(self.num_classes, None)
      try:
        matrix.update(truth, pred)
      except ValueError as error:
        raise ValueError(f'Volume {name}: {error}') from None
      rows.append(seg.volume_dice(matrix.matrix))
      if index < keep_images:
        foreground = (truth > 0).sum((1, 2))
        for depth in sorted({truth.shape[0] // 2, int(foreground.argmax())}):
          shown.append(_result_row(volume[depth], truth[depth], pred[depth],
                                   self.num_classes))
    self._runner.drain(variables)
    return {'dice': np.reshape(rows, (-1, self.num_classes - 1)),
            'shown': shown}

  def _combine(self, part) -> Dict[str, float]:
    """The metrics of every process's per-volume Dice rows."""
    per_volume = _gather_rows(part['dice'])
    if not len(per_volume):
      raise self._empty()
    per_class = seg.mean_dice(per_volume)['per_class_dice']
    present = per_class[~np.isnan(per_class)]
    results = {f'{self._prefix}/dice': (float(present.mean()) if present.size
                                        else float('nan'))}
    for c, dice in enumerate(per_class, 1):
      results[f'{self._prefix}/dice/{c}'] = float(dice)
    return results


def _gather_rows(rows: np.ndarray) -> np.ndarray:
  """Every process's rows [n_p, C] (n_p may differ), concatenated."""
  if jax.process_count() == 1:
    return rows
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  counts = np.asarray(multihost_utils.process_allgather(
      np.int64(len(rows))))
  padded = np.full((int(counts.max()), rows.shape[1]), np.nan)
  padded[:len(rows)] = rows
  gathered = np.asarray(multihost_utils.process_allgather(padded))
  return np.concatenate([g[:n] for g, n in zip(gathered, counts)])
