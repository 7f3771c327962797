"""Datasets by name: the embedded digits, any prepared TFDS dataset, or a
class-per-folder image directory; one process's share of a split. Dense
(segmentation) datasets beside them: a folder of images and annotation
PNGs, the built-in digit mosaics, and TFDS datasets with masks; see
"Segmentation datasets" below.

A `Source` hands the pipeline *records* -- serialized TFDS examples, or
(path, label) pairs for an image folder -- that are cheap to skip, and a
`parse` that turns a record into {'image': uint8 [H, W, C], 'label': int64}.
Skipping happens on records, before any decoding or augmentation; see
`pipeline.py`.

Runs never download: a TFDS dataset that is not prepared in the data
directory raises `DatasetNotPreparedError` with the command that prepares it.

Corrupt files in an image folder. A file that cannot be decoded is found
where it is read, lazily: the pipeline's iterators catch TensorFlow's
decoding error and raise `CorruptImageError` naming the file and the split
(`Source.check` re-reads the failing batch's files one by one to find it).
With `data_config.skip_corrupt`, the files of a share are instead checked
before the pipeline is built, and those that fail are left out of the index
(`Source.skipped`), so the order, positions and batches remain functions of
the seed and the step, as without skipping, and a resumed run sees the same
batches. The check is `image_file_looks_intact`: a format signature at the
start and an end-of-image marker near the end (PNG's IEND chunk, JPEG's EOI),
two small reads per file rather than a decode -- a decoding pass over a
million-file folder at every start would take far longer than the run's
first steps. It finds empty, foreign and truncated files (the usual damage:
interrupted copies and downloads); a file damaged in its middle passes it
and still raises `CorruptImageError` when read. Results are remembered per
path for the life of the process, so repeated eval passes check once.
"""

import concurrent.futures
import dataclasses
import difflib
import logging
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from vit_jax.data import DenseLabelError
from vit_jax.data import IGNORE_INDEX
from vit_jax.data import digits
from vit_jax.data import mosaics
from vit_jax.data import video
from vit_jax.data import volumes
from vit_jax.data.tensorflow_cpu import tf

IMAGE_FOLDER = 'image_folder'
# The features the pipeline reads; others (boxes, masks, ...) are not parsed.
FEATURES = ('image', 'label')

Range = Tuple[str, int, int]  # (split name, start, stop) of examples


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is not prepared in the data directory."""


class CorruptImageError(ValueError):
  """An image file of an image folder cannot be decoded.

  Attributes:
    path: the file.
    split: the split being read.
  """

  def __init__(self, message: str, path: str, split: str):
    super().__init__(message)
    self.path = path
    self.split = split


@dataclasses.dataclass
class Source:
  """One process's share of a split of a dataset.

  Attributes:
    num_examples: examples in this process's share.
    max_num_examples: the largest share of any process (eval padding).
    table: the share in memory, a dict of equally long tensors (random
      access), or None when records are streamed from TFRecord files.
    file_instructions: (filename, skip, take) of the TFRecord shards, in
      order; used when `table` is None.
    parse: record (a `table` row, or a serialized example) -> example.
    skipped: paths of corrupt image files left out of the share
      (`skip_corrupt`), in index order.
    check: record -> None if `parse` succeeds on it eagerly, else
      (path, TensorFlow's message) for a file that does not decode, or a
      `DenseLabelError` for a bad label map; None where records have no
      file of their own and nothing to check (TFDS classification).
  """
  num_examples: int
  max_num_examples: int
  table: Optional[Dict[str, tf.Tensor]]
  file_instructions: List[Tuple[str, int, int]]
  parse: Callable[[Any], Dict[str, tf.Tensor]]
  skipped: Tuple[str, ...] = ()
  check: Optional[Callable[[Any], Optional[Tuple[str, str]]]] = None

  def records(self, order_seed: Optional[tf.Tensor] = None,
              cycle_length: int = 16) -> tf.data.Dataset:
    """The share's records; shard order shuffled if `order_seed` is given."""
    if self.table is not None:
      return tf.data.Dataset.from_tensor_slices(self.table)
    filenames, skips, takes = zip(*self.file_instructions)
    num_shards = len(filenames)
    shards = (tf.constant(filenames, tf.string), tf.constant(skips, tf.int64),
              tf.constant(takes, tf.int64))
    if order_seed is not None and num_shards > 1:
      order = tf.argsort(tf.random.stateless_uniform([num_shards], order_seed))
      shards = tuple(tf.gather(column, order) for column in shards)
    return tf.data.Dataset.from_tensor_slices(shards).interleave(
        lambda filename, skip, take: tf.data.TFRecordDataset(
            filename).skip(skip).take(take),
        cycle_length=min(cycle_length, num_shards), block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


# ----------------------------------------------------------------------------
# Builders.


def get_builder(data_config) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder named by `data_config.name`.

  'digits' is prepared in the data directory on first use; 'image_folder'
  reads `data_config.folder`; any other name must already be prepared.
  """
  name, data_dir = data_config.name, data_config.data_dir
  if task(name) == 'segmentation':
    return dense_dataset(data_config)
  if name == digits.NAME:
    return digits.prepared_builder(data_dir)
  if name == IMAGE_FOLDER:
    folder = data_config.folder
    if not folder or not os.path.isdir(os.path.expanduser(folder)):
      raise ValueError(
          f"Dataset 'image_folder' needs data_config.folder, a directory "
          f'holding SPLIT/CLASS/IMAGE files; got {folder!r}, which is not a '
          f'directory.')
    return tfds.folder_dataset.ImageFolder(folder)
  return _prepared_tfds_builder(name, data_dir)


def _prepared_tfds_builder(name: str, data_dir: Optional[str],
                           manual_note: str = '') -> tfds.core.DatasetBuilder:
  default_dir = digits.default_data_dir()
  shown_dir = data_dir or f'{default_dir} (the TFDS default)'
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.registered.DatasetNotFoundError:
    raise unknown_dataset(name, 'data_config.name: ') from None
  if not builder.is_prepared():
    raise DatasetNotPreparedError(
        f'Dataset {name!r} is not prepared in data_dir {shown_dir} (looked '
        f'for {builder.data_dir}), and vit_jax does not download during a '
        f'run. Prepare it once on a machine with network access:\n'
        f'  tfds build {name} --data_dir={data_dir or default_dir}\n'
        f'(or tfds.builder({name!r}, data_dir=...).download_and_prepare()),'
        f' then copy that directory here or point data_config.data_dir at '
        f'it. Datasets that need a manual download (e.g. imagenet2012) also '
        f'need --manual_dir.{manual_note}')
  return builder


def unknown_dataset(name: str, where: str = '') -> ValueError:
  """The one-line error for a name that is neither built in nor a TFDS
  dataset, with the closest known name (TFDS's own error lists its whole
  catalogue)."""
  base = name.split(':')[0].split('/')[0]
  known = [*BUILT_IN, *tfds.list_builders(with_community_datasets=False)]
  close = difflib.get_close_matches(base, known, n=1)
  hint = f'; did you mean {close[0]!r}?' if close else ''
  built_in = ', '.join(repr(known_name) for known_name in BUILT_IN)
  return ValueError(f'{where}unknown dataset {name!r}{hint} (the built-in '
                    f'{built_in} or a TFDS dataset name)')


def describe(builder: tfds.core.DatasetBuilder) -> str:
  """The dataset's name for messages (an image folder's with its root)."""
  if isinstance(builder, DenseDataset):
    return builder.description
  if isinstance(builder, tfds.folder_dataset.ImageFolder):
    return f'{IMAGE_FOLDER!r} at {builder.data_dir}'
  return repr(builder.name)


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
  """The number of classes; fewer than 2 raise (nothing to classify)."""
  if isinstance(builder, DenseDataset):
    return builder.num_classes
  label = builder.info.features['label']
  count = label.num_classes or 0
  if count < 2:
    names = f' {label.names}' if count else ''
    raise ValueError(
        f'Dataset {describe(builder)} has {count} class'
        f'{"" if count == 1 else "es"}{names}; classification needs >= 2 '
        f'classes (an image folder needs two or more CLASS directories '
        f'under its SPLIT directories).')
  return count


def num_examples(builder: tfds.core.DatasetBuilder, split: str) -> int:
  return sum(stop - start for _, start, stop in _split_ranges(builder, split))


# ----------------------------------------------------------------------------
# Splits and per-process shares.


def _split_ranges(builder: tfds.core.DatasetBuilder, split: str) -> List[Range]:
  """A TFDS split string ('train[:90%]+test') as absolute example ranges."""
  split_infos = (builder.splits if isinstance(builder, DenseDataset) else
                 builder.info.splits)
  try:
    instructions = tfds.core.ReadInstruction.from_spec(split).to_absolute(
        split_infos)
  except (ValueError, AssertionError, TypeError) as e:
    raise ValueError(f'Bad split {split!r} for dataset {builder.name!r}: {e} '
                     f'Valid splits: {sorted(split_infos)}.') from None
  ranges = []
  for instruction in instructions:
    size = split_infos[instruction.splitname].num_examples
    start = 0 if instruction.from_ is None else instruction.from_
    stop = size if instruction.to is None else instruction.to
    ranges.append((instruction.splitname, start, stop))
  return ranges


def share_bounds(total: int, process_index: int,
                 process_count: int) -> Tuple[int, int]:
  """[begin, end) of a process's contiguous share of `total` examples.

  As `tfds.even_splits`: shares differ by at most one example, the first
  `total % process_count` processes taking one more.
  """
  base, extra = divmod(total, process_count)
  begin = process_index * base + min(process_index, extra)
  return begin, begin + base + (process_index < extra)


def _slice_ranges(ranges: List[Range], begin: int, end: int) -> List[Range]:
  """The part [begin, end) of the concatenation of `ranges`."""
  sliced, offset = [], 0
  for name, start, stop in ranges:
    lo = max(begin - offset, 0) + start
    hi = min(end - offset, stop - start) + start
    if hi > lo:
      sliced.append((name, lo, hi))
    offset += stop - start
  return sliced


def _select_features(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  return {key: example[key] for key in FEATURES}


def get_source(builder: tfds.core.DatasetBuilder, split: str,
               process_index: int, process_count: int,
               in_memory: bool, skip_corrupt: bool = False) -> Source:
  """This process's share of `split`; in memory (random access) if asked.

  Image folders are always indexed in memory (paths and labels); their image
  files are read per example. With `skip_corrupt`, the share's files that
  fail `image_file_looks_intact` are left out (logged, and listed in
  `Source.skipped`); shares are cut before, so each process checks only its
  own files and `max_num_examples` stays that of the full split.
  """
  ranges = _split_ranges(builder, split)
  total = sum(stop - start for _, start, stop in ranges)
  begin, end = share_bounds(total, process_index, process_count)
  share = _slice_ranges(ranges, begin, end)
  max_share = -(-total // process_count)
  if isinstance(builder, DenseDataset):
    source = builder.make_source(share, end - begin, max_share)
    if in_memory and source.table is None:
      source = _load_into_memory(source)
    return source
  features = builder.info.features

  if isinstance(builder, tfds.folder_dataset.ImageFolder):
    paths, labels = _image_folder_index(builder, share)
    skipped = ()
    if skip_corrupt:
      paths, labels, skipped = _drop_corrupt(paths, labels)
      if skipped:
        shown = ', '.join(skipped[:_SHOWN_PATHS])
        more = (f' and {len(skipped) - _SHOWN_PATHS} more'
                if len(skipped) > _SHOWN_PATHS else '')
        logger.warning(
            'skip_corrupt: left out %d corrupt image file(s) of the %d in '
            'process %d\'s share of split %r of %s: %s%s.', len(skipped),
            end - begin, process_index, split, describe(builder), shown, more)
    image_feature = features['image']

    def parse_file(row):
      return {'image': image_feature.decode_example(tf.io.read_file(
          row['path'])), 'label': row['label']}

    def check_file(row):
      try:
        parse_file(row)
      except tf.errors.OpError as e:
        return row['path'].numpy().decode('utf-8'), _tf_message(e)
      return None
    table = {'path': tf.constant(paths, tf.string),
             'label': tf.constant(labels, tf.int64)}
    return Source(len(paths), max_share, table, [], parse_file,
                  skipped=skipped, check=check_file)

  if builder.info.file_format != tfds.core.FileFormat.TFRECORD:
    raise ValueError(
        f'Dataset {builder.name!r} is stored as {builder.info.file_format}; '
        f'this pipeline reads TFRecord datasets. Prepare it with '
        f'--file_format=tfrecord.')
  file_instructions = _file_instructions(builder, share)
  # Only the features the pipeline uses are parsed and decoded.
  used_features = tfds.decode.PartialDecoding(
      {key: True for key in FEATURES}).extract_features(features)

  def parse_record(serialized):
    return _select_features(used_features.deserialize_example(serialized))
  source = Source(end - begin, max_share, None, file_instructions,
                  parse_record)
  if in_memory:
    source = _load_into_memory(source)
  return source


def _file_instructions(builder: tfds.core.DatasetBuilder, share: List[Range]
                       ) -> List[Tuple[str, int, int]]:
  """(filename, skip, take) of the TFRecord shards holding `share`."""
  return [(instruction.filename, instruction.skip, instruction.take)
          for name, start, stop in share
          for instruction in builder.info.splits[
              f'{name}[{start}:{stop}]'].file_instructions]


def _image_folder_index(builder, share: List[Range]
                       ) -> Tuple[List[str], List[int]]:
  """(paths, labels) of an image folder's examples in `share`."""
  # ImageFolder lists every split's files, in a fixed order, when built;
  # reading that list saves opening every image to learn its path.
  examples_by_split = builder._split_examples  # pylint: disable=protected-access
  label_feature = builder.info.features['label']
  paths, labels = [], []
  for name, start, stop in share:
    for example in examples_by_split[name][start:stop]:
      paths.append(example.image_path)
      labels.append(label_feature.str2int(example.label))
  return paths, labels


# ----------------------------------------------------------------------------
# Corrupt image files.

logger = logging.getLogger(__name__)
_SHOWN_PATHS = 5  # Paths named in the skip_corrupt warning.
_TAIL_BYTES = 1024  # Where the end-of-image marker is looked for.
_CHECK_THREADS = 32  # Files checked at once (I/O-bound: network file systems).
_intact_by_path: Dict[str, bool] = {}  # Checked files, for the process.


def image_file_looks_intact(path: str) -> bool:
  """A cheap, deterministic check of an image file, without decoding.

  True for a PNG (signature, IEND chunk in its last 1 KiB), a JPEG (SOI
  marker, EOI marker in its last 1 KiB), or a GIF, BMP or WebP file (their
  signatures) -- the formats TensorFlow's `decode_image` reads. False for
  empty, unreadable, foreign or truncated files. Reads the first 16 and the
  last 1,024 bytes.
  """
  try:
    opener = tf.io.gfile.GFile if '://' in path else open
    with opener(path, 'rb') as f:
      head = f.read(16)
      size = f.seek(0, os.SEEK_END) if opener is open else f.size()
      f.seek(max(size - _TAIL_BYTES, 0))
      tail = f.read(_TAIL_BYTES)
  except (OSError, tf.errors.OpError):
    return False
  if head.startswith(b'\x89PNG\r\n\x1a\n'):
    return b'IEND' in tail
  if head.startswith(b'\xff\xd8\xff'):
    return b'\xff\xd9' in tail
  return head.startswith((b'GIF87a', b'GIF89a', b'BM')) or (
      head[:4] == b'RIFF' and head[8:12] == b'WEBP')


def _intact(paths: Sequence[str]) -> List[bool]:
  """`image_file_looks_intact` of each path, checked once per process."""
  unchecked = [path for path in dict.fromkeys(paths)
               if path not in _intact_by_path]
  if unchecked:
    with concurrent.futures.ThreadPoolExecutor(_CHECK_THREADS) as pool:
      _intact_by_path.update(
          zip(unchecked, pool.map(image_file_looks_intact, unchecked)))
  return [_intact_by_path[path] for path in paths]


def _drop_corrupt(paths: List[str], labels: List[int]
                 ) -> Tuple[List[str], List[int], Tuple[str, ...]]:
  """(kept paths, their labels, corrupt paths), each in index order."""
  intact = _intact(paths)
  kept = [i for i, ok in enumerate(intact) if ok]
  return ([paths[i] for i in kept], [labels[i] for i in kept],
          tuple(path for path, ok in zip(paths, intact) if not ok))


# ----------------------------------------------------------------------------
# Label counts.


def label_counts(builder: tfds.core.DatasetBuilder, split: str,
                 skip_corrupt: bool = False) -> np.ndarray:
  """int64 [num_classes] examples per class in the whole of `split`.

  No image is decoded: an image folder's labels come from its index (with
  `skip_corrupt`, less the files that fail the check, as the pipeline
  serves them); a TFDS dataset's records are read and only their 'label'
  feature is parsed.
  """
  if isinstance(builder, DenseDataset):
    raise ValueError(
        f'label_counts counts image-level labels; {describe(builder)} is a '
        f'segmentation dataset (its labels are label maps).')
  classes = num_classes(builder)
  ranges = _split_ranges(builder, split)
  if isinstance(builder, tfds.folder_dataset.ImageFolder):
    paths, labels = _image_folder_index(builder, ranges)
    if skip_corrupt:
      _, labels, _ = _drop_corrupt(paths, labels)
    return np.bincount(np.asarray(labels, np.int64),
                       minlength=classes).astype(np.int64)
  source = get_source(builder, split, 0, 1, in_memory=False)
  label_only = tfds.decode.PartialDecoding({'label': True}).extract_features(
      builder.info.features)
  labels = source.records().map(
      lambda record: label_only.deserialize_example(record)['label'],
      num_parallel_calls=tf.data.AUTOTUNE).batch(65_536)
  counts = np.zeros([classes], np.int64)
  for batch in labels.as_numpy_iterator():
    counts += np.bincount(batch, minlength=classes)[:classes].astype(
        np.int64)
  return counts


def _load_into_memory(source: Source) -> Source:
  """Reads the share once: decoded examples if their shapes are fixed (the
  digits), the serialized records otherwise."""
  records = source.records()
  parsed_spec = records.map(source.parse).element_spec
  if all(spec.shape.is_fully_defined() for spec in parsed_spec.values()):
    examples = records.map(source.parse, num_parallel_calls=tf.data.AUTOTUNE)
    table = next(iter(examples.batch(max(source.num_examples, 1))))
    return dataclasses.replace(source, table=table, parse=lambda row: row)
  serialized = next(iter(records.batch(max(source.num_examples, 1))))
  return dataclasses.replace(source, table={'record': serialized},
                             parse=lambda row: source.parse(row['record']))


# ----------------------------------------------------------------------------
# Segmentation datasets.
#
# A dense dataset is a `DenseDataset`: its splits' sizes, its classes, and
# `make_source`, which builds a `Source` whose `parse` gives
# {'image': uint8 [H, W, C], 'label_map': uint8 [H, W, 1] (class values, 255
# ignore), 'name': tf.string}. The label map's H, W are checked against the
# image's in `parse` (an InvalidArgumentError in tf.data); the Source's
# `check` finds the failing example eagerly and returns a `DenseLabelError`
# naming its file, which `pipeline.BatchIterator` raises.

SEGMENTATION_FOLDER = 'segmentation_folder'
# The names that are not TFDS datasets, and those of them read from
# data_config.folder.
BUILT_IN = (digits.NAME, IMAGE_FOLDER, SEGMENTATION_FOLDER, mosaics.NAME,
            *volumes.DATASETS, *video.BUILT_IN)
FOLDER_DATASETS = (IMAGE_FOLDER, SEGMENTATION_FOLDER, volumes.NIFTI_FOLDER)
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
ANNOTATION_EXTENSION = '.png'
# PIL modes of a label map: 8-bit values, or 8-bit palette indices (Pascal
# VOC). TensorFlow's decode_png expands a palette to its colours (RGB, or
# their luminance with channels=1), never the indices, so annotation files
# are read with PIL.
LABEL_MAP_MODES = ('L', 'P')


@dataclasses.dataclass(frozen=True)
class DenseTfds:
  """A TFDS dataset with masks: which features hold what, and the classes.

  Attributes:
    tfds_name: the TFDS builder (and config) read.
    image_feature, mask_feature, name_feature: feature names of the image,
      the mask ([H, W, 1]) and a per-record id (the example's 'name').
    class_names: the classes, in class-value order.
    mapping: {stored mask value: class}; any other value becomes 255
      (ignored).
    manual_note: appended to the not-prepared error.
  """
  tfds_name: str
  image_feature: str
  mask_feature: str
  name_feature: str
  class_names: Tuple[str, ...]
  mapping: Dict[int, int]
  manual_note: str = ''

  @property
  def num_classes(self) -> int:
    return len(self.class_names)

  def lookup(self) -> np.ndarray:
    """uint8 [256]: stored mask value -> class value (255 where unmapped)."""
    table = np.full([256], IGNORE_INDEX, np.uint8)
    for value, label in self.mapping.items():
      table[value] = label
    return table


# Cityscapes' label ids of its 19 evaluated classes, in train-id order
# (cityscapesScripts' labels.py: the labels whose trainId is not 255).
CITYSCAPES_EVAL_IDS = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26,
                       27, 28, 31, 32, 33)
CITYSCAPES_CLASSES = (
    'road', 'sidewalk', 'building', 'wall', 'fence', 'pole', 'traffic light',
    'traffic sign', 'vegetation', 'terrain', 'sky', 'person', 'rider', 'car',
    'truck', 'bus', 'train', 'motorcycle', 'bicycle')

DENSE_TFDS = {
    # The Oxford-IIIT Pet trimaps store 1 pet, 2 background, 3 border (the
    # dataset's "not classified" rim); minus one, as the usual TF tutorial
    # does: three classes, the border one of them.
    'oxford_iiit_pet': DenseTfds(
        'oxford_iiit_pet', 'image', 'segmentation_mask', 'file_name',
        ('pet', 'background', 'border'), {1: 0, 2: 1, 3: 2}),
    # The fine annotations' label ids (gtFine_labelIds) to the 19 train ids
    # of the benchmark; every other id (void, and the classes not
    # evaluated) is ignored.
    'cityscapes': DenseTfds(
        'cityscapes/semantic_segmentation', 'image_left',
        'segmentation_label', 'image_id', CITYSCAPES_CLASSES,
        {label_id: train_id
         for train_id, label_id in enumerate(CITYSCAPES_EVAL_IDS)},
        manual_note=(
            '\nCityscapes needs a manual download (registration at '
            'https://www.cityscapes-dataset.com): put '
            'leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip in '
            'the --manual_dir of `tfds build cityscapes/'
            'semantic_segmentation`.')),
}


def dense_tfds_entry(name: str) -> Optional[DenseTfds]:
  """The DENSE_TFDS entry of a data_config.name (its key or TFDS name)."""
  for key, entry in DENSE_TFDS.items():
    if name in (key, entry.tfds_name):
      return entry
  return None


def task(name: str) -> str:
  """'segmentation' for the 2-D dense datasets, else 'classification'."""
  if name in (SEGMENTATION_FOLDER, mosaics.NAME) or dense_tfds_entry(name):
    return 'segmentation'
  return 'classification'


class _SplitSize:
  """What `tfds.core.ReadInstruction` reads of a split: its size."""

  def __init__(self, num_examples: int):
    self.num_examples = num_examples
    self.shard_lengths = [num_examples]


@dataclasses.dataclass(frozen=True)
class DenseDataset:
  """A segmentation dataset (what `get_builder` returns for one).

  Attributes:
    name: data_config.name.
    description: the dataset for messages.
    num_classes: classes of the label maps (background included where the
      dataset has one); values outside [0, num_classes) other than 255 are
      errors.
    class_names: their names, or None.
    splits: split name -> object with `num_examples` (TFDS SplitInfo).
    make_source: (absolute ranges of a share, share size, largest share) ->
      `Source`.
  """
  name: str
  description: str
  num_classes: int
  class_names: Optional[Tuple[str, ...]]
  splits: Dict[str, Any]
  make_source: Callable[[List[Range], int, int], Source]


def dense_dataset(data_config) -> DenseDataset:
  """The DenseDataset named by `data_config.name`."""
  name = data_config.name
  if name == SEGMENTATION_FOLDER:
    return _checked_classes(_segmentation_folder(data_config), data_config)
  if name == mosaics.NAME:
    return _checked_classes(_mosaics(), data_config)
  return _checked_classes(_dense_tfds(data_config, dense_tfds_entry(name)),
                          data_config)


def _checked_classes(dataset: DenseDataset, data_config) -> DenseDataset:
  """`dataset` with data_config.class_names, after checking data_config's
  num_classes and class_names against it."""
  given = data_config.num_classes
  if given is not None and given != dataset.num_classes:
    raise ValueError(
        f'data_config.num_classes={given} does not match '
        f'{dataset.description}, which has {dataset.num_classes} classes '
        f'{list(dataset.class_names or ())}; leave it None.')
  names = data_config.class_names
  if names is None:
    return dataset
  names = tuple(str(n) for n in names)
  if len(names) != dataset.num_classes:
    raise ValueError(
        f'data_config.class_names has {len(names)} names but '
        f'{dataset.description} has {dataset.num_classes} classes.')
  return dataclasses.replace(dataset, class_names=names)


def _paired(image: tf.Tensor, label_map: tf.Tensor, name: tf.Tensor
           ) -> Dict[str, tf.Tensor]:
  """The parsed example, with its label map's H, W asserted equal to the
  image's (the Source's `check` names the file when this fails)."""
  same = tf.debugging.assert_equal(
      tf.shape(label_map)[:2], tf.shape(image)[:2],
      message='label map and image sizes differ')
  with tf.control_dependencies([same]):
    return {'image': tf.identity(image), 'label_map': tf.identity(label_map),
            'name': name}


def _size_mismatch(name: str, label_shape, image_shape,
                   other: str = '') -> Optional[DenseLabelError]:
  if tuple(label_shape[:2]) == tuple(image_shape[:2]):
    return None
  return DenseLabelError(
      f'The label map of {name} is {label_shape[0]}x{label_shape[1]} but its '
      f'image{other} is {image_shape[0]}x{image_shape[1]}; a label map must '
      f'have its image\'s height and width.', name)


# --- The built-in digit mosaics.


def _mosaics() -> DenseDataset:
  def make_source(share, num_examples, max_share):
    images, label_maps, names = [], [], []
    for split, start, stop in share:
      arrays = mosaics.split_arrays(split)
      images.append(arrays['image'][start:stop])
      label_maps.append(arrays['label_map'][start:stop])
      names += [mosaics.example_name(split, i) for i in range(start, stop)]
    empty = np.zeros((0,) + mosaics.IMAGE_SHAPE, np.uint8)
    table = {'image': tf.constant(np.concatenate(images or [empty])),
             'label_map': tf.constant(np.concatenate(label_maps or [empty])),
             'name': tf.constant(names, tf.string, shape=[len(names)])}
    return Source(num_examples, max_share, table, [], dict)
  return DenseDataset(
      mosaics.NAME, repr(mosaics.NAME), mosaics.NUM_CLASSES,
      mosaics.CLASS_NAMES,
      {split: _SplitSize(size) for split, size in mosaics.SIZES.items()},
      make_source)


# --- TFDS datasets with masks.


def _dense_tfds(data_config, entry: DenseTfds) -> DenseDataset:
  builder = _prepared_tfds_builder(entry.tfds_name, data_config.data_dir,
                                   entry.manual_note)
  # The features as prepared (the files' own description), not as the
  # builder's code declares them: the same for a real preparation, and
  # they let tests prepare small stand-ins with the same layout.
  builder = tfds.builder_from_directory(builder.data_dir)
  features = builder.info.features
  wanted = (entry.image_feature, entry.mask_feature, entry.name_feature)
  missing = [key for key in wanted if key not in features]
  if missing:
    raise ValueError(
        f'Dataset {entry.tfds_name!r} prepared in {builder.data_dir} lacks '
        f'the features {missing} (it has {sorted(features)}).')
  used = tfds.decode.PartialDecoding(
      {key: True for key in wanted}).extract_features(features)
  lookup = entry.lookup()

  def parse_raw(serialized):
    example = used.deserialize_example(serialized)
    label_map = tf.gather(tf.constant(lookup),
                          tf.cast(example[entry.mask_feature], tf.int32))
    return (example[entry.image_feature], label_map,
            example[entry.name_feature])

  def parse(serialized):
    return _paired(*parse_raw(serialized))

  def check(serialized):
    image, label_map, name = parse_raw(serialized)
    return _size_mismatch(name.numpy().decode('utf-8'), label_map.shape,
                          image.shape)

  def make_source(share, num_examples, max_share):
    return Source(num_examples, max_share, None,
                  _file_instructions(builder, share), parse, check=check)
  return DenseDataset(entry.tfds_name, repr(entry.tfds_name),
                      entry.num_classes, entry.class_names,
                      dict(builder.info.splits), make_source)


# --- A folder of images and annotation PNGs (ADEChallengeData2016).


def read_label_map(path: str) -> Tuple[np.ndarray, str]:
  """(uint8 [H, W, 1] label map, '') of an annotation PNG, or (an empty
  map, the problem) when it is not an 8-bit single-channel (mode 'L') or
  palette (mode 'P', the indices) image, or does not decode."""
  try:
    with Image.open(path) as image:
      if image.mode not in LABEL_MAP_MODES:
        return (np.zeros([0, 0, 1], np.uint8),
                f'is a mode {image.mode!r} image; a label map must be 8-bit '
                f'grey (mode L) or palette (mode P) PNG of class values')
      return np.asarray(image, np.uint8)[:, :, None], ''
  except (OSError, ValueError) as e:
    return np.zeros([0, 0, 1], np.uint8), f'cannot be decoded ({e})'


def _files_by_stem(directory: str, extensions: Sequence[str]
                  ) -> Dict[str, str]:
  """{stem: path} of the files of `directory` with one of `extensions`."""
  by_stem = {}
  for entry in sorted(os.listdir(directory)):
    stem, extension = os.path.splitext(entry)
    if extension.lower() not in extensions:
      continue
    path = os.path.join(directory, entry)
    if stem in by_stem:
      raise DenseLabelError(
          f'Two files of {directory} have the stem {stem!r}: '
          f'{by_stem[stem]} and {path}; images and annotations are paired '
          f'by stem, so each stem must be unique.', path)
    by_stem[stem] = path
  return by_stem


def _folder_index(root: str) -> Dict[str, List[Tuple[str, str]]]:
  """split -> [(image path, annotation path)], sorted by stem."""
  images_root = os.path.join(root, 'images')
  annotations_root = os.path.join(root, 'annotations')
  for directory in (images_root, annotations_root):
    if not os.path.isdir(directory):
      raise ValueError(
          f"Dataset {SEGMENTATION_FOLDER!r} needs data_config.folder to hold "
          f"images/SPLIT/*.jpg|png and annotations/SPLIT/*.png (as "
          f"ADEChallengeData2016); {directory} is not a directory.")
  index = {}
  for split in sorted(os.listdir(images_root)):
    image_dir = os.path.join(images_root, split)
    if not os.path.isdir(image_dir):
      continue
    annotation_dir = os.path.join(annotations_root, split)
    if not os.path.isdir(annotation_dir):
      raise ValueError(f'Split {split!r} of {root} has images but no '
                       f'annotation directory {annotation_dir}.')
    images = _files_by_stem(image_dir, IMAGE_EXTENSIONS)
    annotations = _files_by_stem(annotation_dir, (ANNOTATION_EXTENSION,))
    for stem in sorted(set(images) ^ set(annotations)):
      if stem in images:
        raise DenseLabelError(
            f'Image {images[stem]} has no annotation '
            f'{os.path.join(annotation_dir, stem + ANNOTATION_EXTENSION)} '
            f'(images and annotations are paired by file stem).',
            images[stem])
      raise DenseLabelError(
          f'Annotation {annotations[stem]} has no image {stem}.jpg|.png in '
          f'{image_dir} (images and annotations are paired by file stem).',
          annotations[stem])
    index[split] = [(images[stem], annotations[stem])
                    for stem in sorted(images)]
  if not index:
    raise ValueError(f'{images_root} has no SPLIT directories (e.g. '
                     f'images/training, images/validation).')
  return index


def _image_channels(path: str) -> int:
  """1 for a grey first image, else 3: every image is decoded so."""
  try:
    with Image.open(path) as image:
      return 1 if image.mode in ('L', 'I;16', '1') else 3
  except (OSError, ValueError):
    return 3  # Its decoding error comes, naming it, when it is read.


def _segmentation_folder(data_config) -> DenseDataset:
  folder = data_config.folder
  if not folder or not os.path.isdir(os.path.expanduser(folder)):
    raise ValueError(
        f"Dataset {SEGMENTATION_FOLDER!r} needs data_config.folder, a "
        f"directory holding images/SPLIT/*.jpg|png and "
        f"annotations/SPLIT/*.png; got {folder!r}, which is not a "
        f"directory.")
  root = os.path.abspath(os.path.expanduser(folder))
  if data_config.num_classes is None:
    raise ValueError(
        f"Dataset {SEGMENTATION_FOLDER!r} at {root} needs "
        f"data_config.num_classes (the label maps' classes, background "
        f"included where it is one; e.g. 150 for ADE20K after "
        f"reduce_labels): a folder cannot tell.")
  if data_config.num_classes < 2:
    raise ValueError(f'data_config.num_classes must be >= 2, got '
                     f'{data_config.num_classes}.')
  index = _folder_index(root)
  first = next((pairs[0][0] for pairs in index.values() if pairs), None)
  channels = _image_channels(first) if first else 3

  def decode_image(path):
    return tf.io.decode_image(tf.io.read_file(path), channels=channels,
                              expand_animations=False)

  def parse(row):
    label_map, problem = tf.numpy_function(
        lambda path: read_label_map(path.decode('utf-8')),
        [row['label_path']], [tf.uint8, tf.string], stateful=False)
    readable = tf.debugging.Assert(tf.equal(problem, ''), [problem])
    with tf.control_dependencies([readable]):
      label_map = tf.ensure_shape(label_map, [None, None, 1])
    return _paired(decode_image(row['image_path']), label_map,
                   row['label_path'])

  def check(row):
    image_path = row['image_path'].numpy().decode('utf-8')
    label_path = row['label_path'].numpy().decode('utf-8')
    try:
      image_shape = decode_image(image_path).shape
    except tf.errors.OpError as e:
      return image_path, _tf_message(e)
    label_map, problem = read_label_map(label_path)
    if problem:
      return DenseLabelError(f'Label map {label_path} {problem}.',
                             label_path)
    return _size_mismatch(label_path, label_map.shape, image_shape,
                          f' {image_path}')

  def make_source(share, num_examples, max_share):
    pairs = [pair for split, start, stop in share
             for pair in index[split][start:stop]]
    image_paths = [image for image, _ in pairs]
    label_paths = [label for _, label in pairs]
    table = {'image_path': tf.constant(image_paths, tf.string,
                                       shape=[len(pairs)]),
             'label_path': tf.constant(label_paths, tf.string,
                                       shape=[len(pairs)])}
    return Source(num_examples, max_share, table, [], parse, check=check)

  return DenseDataset(
      SEGMENTATION_FOLDER, f'{SEGMENTATION_FOLDER!r} at {root}',
      data_config.num_classes, None,
      {split: _SplitSize(len(pairs)) for split, pairs in index.items()},
      make_source)


def _tf_message(error: tf.errors.OpError) -> str:
  """TensorFlow's message without its "{{function_node ...}}" and
  "[Op:...]" tags."""
  return re.sub(r'\{\{.*?\}\}|\[Op:\w+\]', '', error.message).strip()
