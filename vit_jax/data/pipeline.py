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
"""

import math
from typing import Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np

from vit_jax.data import preprocess
from vit_jax.data import sources
from vit_jax.data.tensorflow_cpu import tf

Batch = Dict[str, np.ndarray]

# Tags folded into the seed so order, augmentation and mixup draw apart.
_ORDER, _AUGMENT, _MIXUP = 0, 1, 2


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
               locate: Optional[Callable[[int], Optional[Tuple[str, str]]]]):
    """Wraps `batches`.

    Args:
      batches: the numpy batches.
      split: the split they come from, for messages.
      skip_corrupt: whether the files were checked (`skip_corrupt`).
      skipped_files: see the class docstring.
      locate: batch number -> (path, message) of the first file of that
        batch that does not decode, or None; None where records are not
        files.
    """
    self._batches = batches
    self._split = split
    self._skip_corrupt = skip_corrupt
    self._locate = locate
    self._num_yielded = 0
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
                       config.skip_corrupt, source.skipped, locate)


def _train_dataset_and_source(config, builder, global_batch_size: int,
                              seed: int, start_step: int, process_index: int,
                              process_count: int):
  """(the batched train stream from start_step, its `sources.Source`)."""
  batch_size = local_batch_size(global_batch_size, process_count)
  if start_step < 0:
    raise ValueError(f'start_step must be >= 0, got {start_step}.')
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
    return preprocess_fn(example)

  dataset = positions.map(load, num_parallel_calls=tf.data.AUTOTUNE)
  dataset = dataset.batch(batch_size, drop_remainder=True)
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
  finalize = _finalizer(sources.num_classes(builder), spec, 'pp_eval')

  def load(record):
    example = finalize(preprocess_fn(source.parse(record)))
    example['mask'] = tf.constant(1.0, tf.float32)
    return example
  examples = source.records().map(load, num_parallel_calls=tf.data.AUTOTUNE)
  return examples.with_options(_options()), source


def _padding_like(batch: Batch, num_rows: int) -> Batch:
  return {key: np.zeros((num_rows,) + value.shape[1:], value.dtype)
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
      locate)


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
