"""Datasets by name: the embedded digits, any prepared TFDS dataset, or a
class-per-folder image directory; one process's share of a split.

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
import tensorflow_datasets as tfds

from vit_jax.data import digits
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
      (path, TensorFlow's message); None where records have no file of
      their own (TFDS datasets).
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
        f'need --manual_dir.')
  return builder


def unknown_dataset(name: str, where: str = '') -> ValueError:
  """The one-line error for a name that is neither built in nor a TFDS
  dataset, with the closest known name (TFDS's own error lists its whole
  catalogue)."""
  base = name.split(':')[0].split('/')[0]
  known = [digits.NAME, IMAGE_FOLDER,
           *tfds.list_builders(with_community_datasets=False)]
  close = difflib.get_close_matches(base, known, n=1)
  hint = f'; did you mean {close[0]!r}?' if close else ''
  return ValueError(f'{where}unknown dataset {name!r}{hint} (the built-in '
                    f'{digits.NAME!r}, {IMAGE_FOLDER!r} or a TFDS dataset '
                    f'name)')


def describe(builder: tfds.core.DatasetBuilder) -> str:
  """The dataset's name for messages (an image folder's with its root)."""
  if isinstance(builder, tfds.folder_dataset.ImageFolder):
    return f'{IMAGE_FOLDER!r} at {builder.data_dir}'
  return repr(builder.name)


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
  """The number of classes; fewer than 2 raise (nothing to classify)."""
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
  split_infos = builder.info.splits
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
        # Without TensorFlow's "{{function_node ...}}" and "[Op:...]" tags.
        message = re.sub(r'\{\{.*?\}\}|\[Op:\w+\]', '', e.message).strip()
        return row['path'].numpy().decode('utf-8'), message
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
  file_instructions = []
  for name, start, stop in share:
    for instruction in builder.info.splits[f'{name}[{start}:{stop}]'
                                           ].file_instructions:
      file_instructions.append((instruction.filename, instruction.skip,
                                instruction.take))
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
