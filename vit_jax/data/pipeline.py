"""tf.data pipelines behind `vit_jax.data`: the infinite, resumable train
stream and the exactly-once eval pass.

The train stream of a process is a sequence of example *positions*
t = 0, 1, 2, ...; position t is example t % n of epoch t // n, where n is the
size of the process's share of the split. Batch s holds positions
[s * b, (s + 1) * b) for the local batch size b. Everything random is a
stateless function of (seed, process index) and a position, an epoch or a
step:

  * order: with the share in memory (`cache=True`, and image folders) each
    epoch is an exact permutation drawn from (seed, process, epoch);
    otherwise TFRecord shards are visited in an order drawn from the same
    seed and examples pass a shuffle buffer seeded with it;
  * augmentation: each example's 'rng' seed is (seed, process, epoch,
    position in the epoch), see `preprocess.example_seed`;
  * mixup / CutMix: one ratio (and box) per batch from (seed, process,
    step).

So resuming at step s starts at epoch e, position p = divmod(s * b, n):
earlier epochs are never built, and the p skipped positions of epoch e are
dropped before their records are parsed, decoded or augmented (an index in
memory, or a serialized record read from disk when streaming).

Both iterators are `BatchIterator`s: an image file of an image folder that
fails to decode raises `sources.CorruptImageError` naming the file and the
split, and `skipped_files` lists the files `skip_corrupt` left out.

Segmentation (a `sources.DenseDataset`). Examples carry 'label_map' (uint8
[H, W, 1] into preprocessing) and 'name' through the same machinery, so
resumes are as exact; mixup and CutMix are refused (they blend image-level
labels). `_dense_finalizer` casts the label map to int32 [H, W] and flags
an example whose label map has a value outside [0, num_classes) that is not
IGNORE_INDEX, after preprocessing (e.g. reduce_labels); `BatchIterator`
raises `DenseLabelError` naming that example's file from the flag, and
drops the flag and 'name' from the batches it yields. A label map whose
size differs from its image's fails in the source's parse, and the
iterator names the file as for a corrupt image (`Source.check`).
"""

import functools
import math
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from vit_jax.data import DenseLabelError
from vit_jax.data import IGNORE_INDEX
from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.data.tensorflow_cpu import tf

Batch = Dict[str, np.ndarray]

# Tags folded into the seed so order, augmentation and mixup draw apart.
_ORDER, _AUGMENT, _MIXUP = 0, 1, 2
# A dense example's flag: 1 where its label map has a value that is neither
# a class nor IGNORE_INDEX (0 on eval padding rows).
_LABEL_ERROR = 'label_error'
_NAME = 'name'


def local_batch_size(global_batch_size: int, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(
        f'The global batch size {global_batch_size} must be a positive '
        f'multiple of the number of processes {process_count}.')
  return global_batch_size // process_count


class BatchIterator:
  """An iterator of numpy batches that names the image file it fails on.

  Attributes:
    skipped_files: paths of the corrupt image files `skip_corrupt` left out
      of this process's share of the split (empty without it, and for TFDS
      datasets). `len(skipped_files)` is the count.
  """

  def __init__(self, batches: Iterator[Batch], split: str, skip_corrupt: bool,
               skipped_files: Sequence[str],
               locate: Optional[Callable[[int], Optional[Tuple[str, str]]]],
               num_classes: Optional[int] = None, keep_name: bool = False):
    """Wraps `batches`.

    Args:
      batches: the numpy batches.
      split: the split they come from, for messages.
      skip_corrupt: whether the files were checked (`skip_corrupt`).
      skipped_files: see the class docstring.
      locate: batch number -> (path, message) of the first file of that
        batch that does not decode, or a DenseLabelError for its first bad
        label map, or None; None where records cannot be checked.
      num_classes: for dense batches: their flagged label maps raise
        DenseLabelError (values outside [0, num_classes), not 255).
      keep_name: keep dense batches' 'name' (else dropped).
    """
    self._batches = batches
    self._split = split
    self._skip_corrupt = skip_corrupt
    self._locate = locate
    self._num_yielded = 0
    self._num_classes = num_classes
    self._keep_name = keep_name
    self.skipped_files = list(skipped_files)

  def __iter__(self) -> 'BatchIterator':
    return self

  def __next__(self) -> Batch:
    try:
      batch = next(self._batches)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError,
            tf.errors.DataLossError):
      found = self._locate(self._num_yielded) if self._locate else None
      if found is None:
        raise
      if isinstance(found, DenseLabelError):
        raise found from None
      path, message = found
      if self._skip_corrupt:
        hint = ('It passed the skip_corrupt header check, so it is damaged '
                'inside: delete or replace it.')
      else:
        hint = ('Delete or replace it, or set data_config.skip_corrupt=True '
                'to leave out files that fail a header check.')
      raise sources.CorruptImageError(
          f'Cannot decode image file {path} of split {self._split!r} '
          f'({message}). {hint}', path, self._split) from None
    self._num_yielded += 1
    if self._num_classes is not None:
      batch = self._checked_dense(batch)
    return batch

  def _checked_dense(self, batch: Batch) -> Batch:
    batch = dict(batch)
    flags = batch.pop(_LABEL_ERROR)
    names = batch[_NAME] if self._keep_name else batch.pop(_NAME)
    for row in np.flatnonzero(flags):
      name = names[row]
      name = name.decode('utf-8') if isinstance(name, bytes) else str(name)
      label_map = batch['label_map'][row]
      bad = (label_map >= self._num_classes) & (label_map != IGNORE_INDEX)
      bad |= label_map < 0
      values = np.unique(label_map[bad])
      raise DenseLabelError(
          f'The label map of {name} (split {self._split!r}) has values '
          f'{values[:8].tolist()} after preprocessing, outside [0, '
          f'{self._num_classes}) and not the ignore index {IGNORE_INDEX}. '
          f'Set data_config.num_classes to the dataset\'s classes, or map '
          f'its labels in the preprocessing (e.g. reduce_labels for '
          f'ADE20K\'s 0 = other).', name)
    return batch


def _options() -> tf.data.Options:
  options = tf.data.Options()
  options.deterministic = True
  return options


def _finalizer(num_classes: int, spec: str, spec_field: str):
  """Checks the preprocessed example and casts the image to float32."""
  def finalize(example):
    if 'image' not in example or 'labels' not in example:
      raise ValueError(
          f"data_config.{spec_field} = {spec!r} must leave 'image' and "
          f"'labels' in the example (end with onehot({num_classes})); it "
          f'leaves {sorted(example)}.')
    labels_width = example['labels'].shape[-1]
    if labels_width != num_classes:
      raise ValueError(
          f'data_config.{spec_field} = {spec!r} makes labels of width '
          f'{labels_width}, but the dataset has {num_classes} classes.')
    return {**example, 'image': tf.cast(example['image'], tf.float32),
            'labels': tf.cast(example['labels'], tf.float32)}
  return finalize


def _dense_finalizer(num_classes: int, spec: str, spec_field: str,
                     same_size: bool = True):
  """(preprocessed example, its 'name' from before preprocessing) -> the
  example checked, with the image as float32, the label map as int32
  [H, W], its label values flagged, and 'name' (whatever the spec kept)."""
  if any(name == 'onehot' for name, _, _ in preprocess.parse_spec(spec)):
    raise ValueError(
        f'data_config.{spec_field} = {spec!r} makes one-hot labels; a '
        f"segmentation spec leaves 'image' and 'label_map' (drop onehot).")

  def finalize(example, name):
    if 'image' not in example or 'label_map' not in example:
      raise ValueError(
          f"data_config.{spec_field} = {spec!r} must leave 'image' and "
          f"'label_map' in the example; it leaves {sorted(example)}.")
    label_map = example['label_map']
    if label_map.shape.rank == 3 and label_map.shape[-1] == 1:
      label_map = label_map[:, :, 0]
    if label_map.shape.rank != 2:
      raise ValueError(
          f'data_config.{spec_field} = {spec!r} leaves a label map of shape '
          f'{label_map.shape}; it must be [H, W, 1] or [H, W].')
    image_size = example['image'].shape[:2]
    if same_size and not image_size.is_compatible_with(label_map.shape):
      raise ValueError(
          f'data_config.{spec_field} = {spec!r} makes images of size '
          f'{image_size} but label maps of {label_map.shape}: use ops that '
          f'move the label map with the image.')
    label_map = tf.cast(label_map, tf.int32)
    return {**example, 'image': tf.cast(example['image'], tf.float32),
            'label_map': label_map, _NAME: name,
            _LABEL_ERROR: _label_error(label_map, num_classes)}
  return finalize


def _label_error(label_map: tf.Tensor, num_classes: int) -> tf.Tensor:
  bad = (((label_map < 0) | (label_map >= num_classes)) &
         (label_map != IGNORE_INDEX))
  return tf.cast(tf.reduce_any(bad), tf.int32)


def mixup(batch: Dict[str, tf.Tensor], seed: tf.Tensor,
          alpha: float) -> Dict[str, tf.Tensor]:
  """mixup (Zhang et al. 2017, "mixup: Beyond Empirical Risk Minimization").

  Each example is mixed with its neighbour in the batch (a roll by one) with
  one ratio lambda ~ Beta(alpha, alpha) for the batch, images and labels
  alike, so each label row stays a distribution (weights lambda, 1 - lambda).
  """
  gammas = tf.random.stateless_gamma([2], seed, alpha=alpha)
  # Beta(a, a) = G1 / (G1 + G2) with G ~ Gamma(a); both may underflow to 0
  # for tiny alpha, then the batch is its rolled self (ratio 0).
  ratio = tf.math.divide_no_nan(gammas[0], gammas[0] + gammas[1])
  mixed = dict(batch)
  for key in ('image', 'labels'):
    values = batch[key]
    mixed[key] = ratio * values + (1.0 - ratio) * tf.roll(values, 1, axis=0)
  return mixed


def cutmix(batch: Dict[str, tf.Tensor], seed: tf.Tensor,
           alpha: float) -> Dict[str, tf.Tensor]:
  """CutMix (Yun et al. 2019, "CutMix: Regularization Strategy to Train
  Strong Classifiers with Localizable Features", Sec. 3.1).

  One box per batch: lambda ~ Beta(alpha, alpha), a box of sides
  H sqrt(1 - lambda) x W sqrt(1 - lambda) at a uniform centre, clipped to
  the image, is pasted from each example's neighbour (a roll by one); the
  labels are weighted by the areas actually kept and pasted.
  """
  gamma_seed, centre_seed = (preprocess.fold_in(seed, 0),
                             preprocess.fold_in(seed, 1))
  gammas = tf.random.stateless_gamma([2], gamma_seed, alpha=alpha)
  ratio = tf.math.divide_no_nan(gammas[0], gammas[0] + gammas[1])
  images = batch['image']  # [B, H, W, C]
  height, width = tf.shape(images)[1], tf.shape(images)[2]
  size = tf.cast(tf.stack([height, width]), tf.float32)
  centre = tf.random.stateless_uniform([2], centre_seed) * size
  half = size * tf.sqrt(1.0 - ratio) / 2
  low = tf.cast(tf.round(tf.clip_by_value(centre - half, 0.0, size)),
                tf.int32)
  high = tf.cast(tf.round(tf.clip_by_value(centre + half, 0.0, size)),
                 tf.int32)
  rows = tf.range(height)[:, None]
  cols = tf.range(width)[None, :]
  inside = ((rows >= low[0]) & (rows < high[0]) & (cols >= low[1]) &
            (cols < high[1]))  # [H, W]
  pasted = tf.reduce_mean(tf.cast(inside, tf.float32))
  mixed = dict(batch)
  mixed['image'] = tf.where(inside[None, :, :, None],
                            tf.roll(images, 1, axis=0), images)
  mixed['labels'] = ((1.0 - pasted) * batch['labels'] +
                     pasted * tf.roll(batch['labels'], 1, axis=0))
  return mixed


def mix(batch: Dict[str, tf.Tensor], seed: tf.Tensor, mixup_alpha: float,
        cutmix_alpha: float) -> Dict[str, tf.Tensor]:
  """mixup, CutMix, or (both alphas > 0) one of the two per batch with
  probability 1/2 each, as in the DeiT / Swin recipes."""
  if not cutmix_alpha:
    return mixup(batch, seed, mixup_alpha)
  if not mixup_alpha:
    return cutmix(batch, seed, cutmix_alpha)
  use_cutmix = tf.random.stateless_uniform(
      [], preprocess.fold_in(seed, 2)) < 0.5
  return tf.cond(use_cutmix, lambda: cutmix(batch, seed, cutmix_alpha),
                 lambda: mixup(batch, seed, mixup_alpha))


def _train_positions(source: sources.Source, seed: int, process_index: int,
                     start_epoch: int, shuffle_buffer: int):
  """The stream from `start_epoch` on: dicts of epoch, position and record."""
  num_examples = source.num_examples
  order_seed = preprocess.fold_in(seed, process_index, _ORDER)

  if source.table is not None:
    def epoch_in_memory(epoch):
      epoch_seed = preprocess.fold_in(order_seed, epoch)
      permutation = tf.argsort(
          tf.random.stateless_uniform([num_examples], epoch_seed))
      return tf.data.Dataset.from_tensor_slices({
          'epoch': tf.fill([num_examples], epoch),
          'position': tf.range(num_examples, dtype=tf.int64),
          'index': tf.cast(permutation, tf.int64),
      })
    return tf.data.Dataset.counter(start_epoch).flat_map(epoch_in_memory)

  def epoch_streamed(epoch):
    epoch_seed = preprocess.fold_in(order_seed, epoch)
    records = source.records(order_seed=epoch_seed).shuffle(
        min(shuffle_buffer, num_examples), seed=epoch_seed[0])
    return records.enumerate().map(lambda position, record: {
        'epoch': epoch, 'position': position, 'record': record})
  return tf.data.Dataset.counter(start_epoch).flat_map(epoch_streamed)


def _record(source: sources.Source, item):
  """The record at a stream item: a table row, or the streamed record."""
  if source.table is not None:
    return {key: tf.gather(column, item['index'])
            for key, column in source.table.items()}
  return item['record']


def train_dataset(config, builder, global_batch_size: int, seed: int,
                  start_step: int, process_index: int,
                  process_count: int) -> tf.data.Dataset:
  """The batched, preprocessed train stream of one process from start_step."""
  return _train_dataset_and_source(config, builder, global_batch_size, seed,
                                   start_step, process_index,
                                   process_count)[0]


def train_batches(config, builder, global_batch_size: int, seed: int,
                  start_step: int, process_index: int,
                  process_count: int) -> BatchIterator:
  """`train_dataset` as a `BatchIterator` of numpy batches."""
  dataset, source = _train_dataset_and_source(
      config, builder, global_batch_size, seed, start_step, process_index,
      process_count)
  batch_size = local_batch_size(global_batch_size, process_count)

  def locate(num_yielded):
    # Errors surface in order (deterministic tf.data): the failing batch is
    # the next one, and its positions are known from the step.
    if source.check is None:
      return None
    epoch, position = divmod((start_step + num_yielded) * batch_size,
                             source.num_examples)
    items = _train_positions(source, seed, process_index, epoch,
                             config.shuffle_buffer)
    for item in items.skip(position).take(batch_size):
      found = source.check(_record(source, item))
      if found is not None:
        return found
    return None
  return BatchIterator(dataset.as_numpy_iterator(), config.train_split,
                       config.skip_corrupt, source.skipped, locate,
                       num_classes=_dense_classes(builder))


def _dense_classes(builder) -> Optional[int]:
  """A dense dataset's number of classes; None for classification."""
  if isinstance(builder, sources.DenseDataset):
    return builder.num_classes
  return None


def _train_dataset_and_source(config, builder, global_batch_size: int,
                              seed: int, start_step: int, process_index: int,
                              process_count: int):
  """(the batched train stream from start_step, its `sources.Source`)."""
  batch_size = local_batch_size(global_batch_size, process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
  dense_classes = _dense_classes(builder)
  if dense_classes is not None and (config.mixup_alpha or config.cutmix_alpha):
    raise ValueError(
        f'mixup and CutMix blend image-level labels; dataset {config.name!r} '
        f'is a segmentation dataset (label maps): set data_config.'
        f'mixup_alpha and cutmix_alpha to 0 (got {config.mixup_alpha}, '
        f'{config.cutmix_alpha}).')
  source = sources.get_source(builder, config.train_split, process_index,
                              process_count, in_memory=config.cache,
                              skip_corrupt=config.skip_corrupt)
  num_examples = source.num_examples
  if num_examples == 0:
    raise ValueError(
        f'Process {process_index} of {process_count} has no examples of '
        f'split {config.train_split!r} of {config.name!r}.')
  start_epoch, start_position = divmod(start_step * batch_size, num_examples)
  positions = _train_positions(source, seed, process_index, start_epoch,
                               config.shuffle_buffer).skip(start_position)

  preprocess_fn = preprocess.build(config.pp_train)
  augment_seed = preprocess.fold_in(seed, _AUGMENT)

  def load(item):
    example = source.parse(_record(source, item))
    example[preprocess.RNG_KEY] = preprocess.example_seed(
        augment_seed, process_index, item['epoch'], item['position'])
    if dense_classes is not None:
      return dense_finalize(preprocess_fn(example), example[_NAME])
    return preprocess_fn(example)

  dense_finalize = (_dense_finalizer(dense_classes, config.pp_train,
                                     'pp_train')
                    if dense_classes is not None else None)
  dataset = positions.map(load, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=True)
  if dense_classes is None:
    dataset = dataset.map(_finalizer(sources.num_classes(builder),
                                     config.pp_train, 'pp_train'))
  if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
    mixup_seed = preprocess.fold_in(seed, process_index, _MIXUP)
    steps = tf.data.Dataset.counter(start_step)
    dataset = tf.data.Dataset.zip(steps, dataset).map(
        lambda step, batch: mix(batch, preprocess.fold_in(mixup_seed, step),
                                config.mixup_alpha, config.cutmix_alpha))
  return dataset.prefetch(config.prefetch).with_options(_options()), source


def eval_dataset(builder, split: str, spec: str, process_index: int,
                 process_count: int, skip_corrupt: bool = False):
  """(unbatched preprocessed examples with 'mask' 1, source) of one process."""
  source = sources.get_source(builder, split, process_index, process_count,
                              in_memory=False, skip_corrupt=skip_corrupt)
  preprocess_fn = preprocess.build(spec)
  dense_classes = _dense_classes(builder)
  if dense_classes is None:
    finalize = _finalizer(sources.num_classes(builder), spec, 'pp_eval')
  else:
    finalize = _dense_finalizer(dense_classes, spec, 'pp_eval')

  def load(record):
    parsed = source.parse(record)
    if dense_classes is None:
      example = finalize(preprocess_fn(parsed))
    else:
      example = finalize(preprocess_fn(parsed), parsed[_NAME])
    example['mask'] = tf.constant(1.0, tf.float32)
    return example
  examples = source.records().map(load, num_parallel_calls=tf.data.AUTOTUNE)
  return examples.with_options(_options()), source


def _padding_like(batch: Batch, num_rows: int) -> Batch:
  """Padding rows: zeros, and IGNORE_INDEX label maps (counted nowhere,
  whatever a metric does with 'mask')."""
  return {key: np.full((num_rows,) + value.shape[1:],
                       IGNORE_INDEX if key == 'label_map' else 0, value.dtype)
          for key, value in batch.items()}


def eval_batches(config, builder, split: str, global_batch_size: int,
                 process_index: int, process_count: int) -> BatchIterator:
  """Every example of this process's share once, in padded full batches.

  All processes yield the same number of batches (that of the largest
  share, counted before `skip_corrupt` leaves files out), as a global step
  across processes needs.
  """
  batch_size = local_batch_size(global_batch_size, process_count)
  examples, source = eval_dataset(builder, split, config.pp_eval,
                                  process_index, process_count,
                                  skip_corrupt=config.skip_corrupt)
  num_batches = math.ceil(source.max_num_examples / batch_size)
  spec = examples.element_spec
  if _dense_classes(builder) is not None and not (
      spec['image'].shape.is_fully_defined() and
      spec['label_map'].shape.is_fully_defined()):
    raise ValueError(
        f'eval_iterator batches segmentation examples of one size, but '
        f'data_config.pp_eval = {config.pp_eval!r} gives images of shape '
        f'{spec["image"].shape} and label maps of {spec["label_map"].shape} '
        f'({sources.describe(builder)}). Evaluate whole images of any size '
        f'one at a time with data.eval_examples (a segmentation evaluator, '
        f'e.g. sliding-window), or end pp_eval with a fixed-size resize or '
        f'crop of image and label map.')
  if all(s.shape.is_fully_defined() for s in spec.values()):
    template = {key: np.zeros((1,) + tuple(s.shape), s.dtype.as_numpy_dtype)
                for key, s in spec.items()}
  else:
    template = None  # Known from the first real batch.
  batches = examples.batch(batch_size).prefetch(config.prefetch)

  def locate(num_yielded):
    # Real batches come first, in record order: batch k holds the records
    # [k * batch_size, (k + 1) * batch_size) of the share.
    if source.check is None:
      return None
    records = source.records().skip(num_yielded * batch_size)
    for record in records.take(batch_size):
      found = source.check(record)
      if found is not None:
        return found
    return None
  return BatchIterator(
      _padded(batches, batch_size, num_batches, template, split,
              process_index), split, config.skip_corrupt, source.skipped,
      locate, num_classes=_dense_classes(builder))


def _padded(batches, batch_size: int, num_batches: int, template,
            split: str, process_index: int) -> Iterator[Batch]:
  num_yielded = 0
  for batch in batches.as_numpy_iterator():
    template = batch
    missing = batch_size - len(batch['mask'])
    if missing:
      padding = _padding_like(batch, missing)
      batch = {key: np.concatenate([value, padding[key]])
               for key, value in batch.items()}
    num_yielded += 1
    yield batch
  if num_yielded < num_batches and template is None:
    raise ValueError(
        f'Process {process_index} has no examples of split {split!r} and '
        f'pp_eval gives no fixed image shape to pad with; add a resize to '
        f'pp_eval.')
  for _ in range(num_batches - num_yielded):
    yield _padding_like(template, batch_size)


def image_shape(builder, split: str, spec: str):
  """The image shape after `spec`, from the pipeline's static shapes."""
  examples, _ = eval_dataset(builder, split, spec, 0, 1)
  return tuple(examples.element_spec['image'].shape.as_list())


def train_image_shape(config, builder) -> Tuple[int, ...]:
  """The static image shape after pp_train, from the train stream's shapes
  (no example is read); a side that varies raises ValueError."""
  dataset = train_dataset(config, builder, 1, 0, 0, 0, 1)
  shape = tuple(dataset.element_spec['image'].shape.as_list()[1:])
  if None in shape:
    raise ValueError(
        f'data_config.pp_train = {config.pp_train!r} gives images of shape '
        f'{shape} ({sources.describe(builder)}); dense training needs one '
        f'static size: end pp_train with a fixed-size crop (of image and '
        f'label map together, padded where an image is smaller).')
  return shape


@functools.lru_cache(maxsize=32)
def label_value_table(spec: str, image_shape: Tuple[int, int, int]
                      ) -> np.ndarray:
  """int32 [256]: what `spec` makes of each stored label value, pixel by
  pixel, with its geometry left out.

  Found by running `spec` on 256 constant label maps (with a zero image of
  `image_shape`): nearest-neighbour geometry keeps a constant map constant,
  padding adds only IGNORE_INDEX, so each output's non-ignored value is
  the mapped value (IGNORE_INDEX where there is none). A spec whose output
  of a constant map is not constant (a label op that looks at neighbours)
  raises ValueError.
  """
  preprocess_fn = preprocess.build(spec)
  height, width, channels = image_shape
  int_max = tf.int32.max

  def probe(value):
    label_map = preprocess_fn({
        'image': tf.zeros([height, width, channels], tf.uint8),
        'label_map': tf.fill([height, width, 1], tf.cast(value, tf.uint8)),
        _NAME: tf.constant('probe'),
    })['label_map']
    label_map = tf.cast(label_map, tf.int32)
    kept = label_map != IGNORE_INDEX
    return (tf.reduce_min(tf.where(kept, label_map, int_max)),
            tf.reduce_max(tf.where(kept, label_map, -int_max)),
            tf.reduce_any(kept))
  probes = tf.data.Dataset.range(256).map(
      probe, num_parallel_calls=tf.data.AUTOTUNE).batch(256)
  low, high, kept = (np.asarray(x) for x in next(iter(probes.with_options(
      _options()))))
  uneven = np.flatnonzero(kept & (low != high))
  if uneven.size:
    raise ValueError(
        f'pp_eval {spec!r} does not map label values pixel by pixel (a '
        f'constant label map of value {uneven[0]} comes out with values '
        f'{low[uneven[0]]}..{high[uneven[0]]}), so eval_examples cannot '
        f'apply its label mapping at the original resolution.')
  return np.where(kept, low, IGNORE_INDEX).astype(np.int32)


def eval_examples(config, builder, split: str, process_index: int,
                  process_count: int) -> Iterator[Batch]:
  """This process's share of a dense `split`, one example at a time: the
  image after pp_eval, the label map at its original resolution.

  The label map is kept from before pp_eval and given pp_eval's label-value
  mapping only (`label_value_table`, e.g. reduce_labels), not its
  resizing or cropping: metrics are computed at the dataset's resolution,
  and evaluators resize their logits to it (as mmseg does), which running
  pp_eval on the image alone would not allow for label-value ops.
  """
  num_classes = _dense_classes(builder)
  source = sources.get_source(builder, split, process_index, process_count,
                              in_memory=False)
  preprocess_fn = preprocess.build(config.pp_eval)
  finalize = _dense_finalizer(num_classes, config.pp_eval, 'pp_eval',
                              same_size=False)
  parsed = source.records().map(source.parse).with_options(_options())

  def locate(num_yielded):
    if source.check is None:
      return None
    for record in source.records().skip(num_yielded).take(1):
      return source.check(record)
    return None
  # The first example's size for the probes (its errors named as later
  # ones' are).
  first = next(BatchIterator(parsed.take(1).as_numpy_iterator(), split,
                             False, (), locate), None)
  if first is None:
    return iter(())
  table = tf.constant(label_value_table(config.pp_eval,
                                        tuple(first['image'].shape)))

  def load(example):
    original = tf.gather(table, tf.cast(example['label_map'][:, :, 0],
                                        tf.int32))
    image = finalize(preprocess_fn(example), example[_NAME])['image']
    return {'image': image, 'label_map': original, _NAME: example[_NAME],
            _LABEL_ERROR: _label_error(original, num_classes)}
  # Batches of one, so BatchIterator checks and names them as others.
  examples = parsed.map(load, num_parallel_calls=tf.data.AUTOTUNE).batch(1)
  batches = BatchIterator(
      examples.prefetch(config.prefetch).as_numpy_iterator(), split, False,
      (), locate, num_classes=num_classes, keep_name=True)
  return _single_examples(batches)


def _single_examples(batches: BatchIterator) -> Iterator[Batch]:
  for batch in batches:
    example = {key: value[0] for key, value in batch.items()}
    name = example[_NAME]
    example[_NAME] = name.decode('utf-8') if isinstance(name, bytes) else name
    yield example
