"""Datasets by name: the embedded digits, any prepared TFDS dataset, or a
class-per-folder image directory; one process's share of a split.

A `Source` hands the pipeline *records* -- serialized TFDS examples, or
(path, label) pairs for an image folder -- that are cheap to skip, and a
`parse` that turns a record into {'image': uint8 [H, W, C], 'label': int64}.
Skipping happens on records, before any decoding or augmentation; see
`pipeline.py`.

Runs never download: a TFDS dataset that is not prepared in the data
directory raises `DatasetNotPreparedError` with the command that prepares it.
"""

import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow_datasets as tfds

from vit_jax.data import digits
from vit_jax.data.tensorflow_cpu import tf

IMAGE_FOLDER = 'image_folder'
# The features the pipeline reads; others (boxes, masks, ...) are not parsed.
FEATURES = ('image', 'label')

Range = Tuple[str, int, int]  # (split name, start, stop) of examples


class DatasetNotPreparedError(FileNotFoundError):
  """A TFDS dataset is not prepared in the data directory."""


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
  """
  num_examples: int
  max_num_examples: int
  table: Optional[Dict[str, tf.Tensor]]
  file_instructions: List[Tuple[str, int, int]]
  parse: Callable[[Any], Dict[str, tf.Tensor]]

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
  except tfds.core.registered.DatasetNotFoundError as e:
    raise ValueError(
        f'Unknown dataset {name!r} (data_dir {shown_dir}): neither '
        f"'{digits.NAME}', '{IMAGE_FOLDER}' nor a TFDS dataset name. "
        f'TFDS says: {e}') from None
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


def num_classes(builder: tfds.core.DatasetBuilder) -> int:
  return builder.info.features['label'].num_classes


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
               in_memory: bool) -> Source:
  """This process's share of `split`; in memory (random access) if asked.

  Image folders are always indexed in memory (paths and labels); their image
  files are read per example.
  """
  ranges = _split_ranges(builder, split)
  total = sum(stop - start for _, start, stop in ranges)
  begin, end = share_bounds(total, process_index, process_count)
  share = _slice_ranges(ranges, begin, end)
  max_share = -(-total // process_count)
  features = builder.info.features

  if isinstance(builder, tfds.folder_dataset.ImageFolder):
    paths, labels = _image_folder_index(builder, share)
    image_feature = features['image']

    def parse_file(row):
      return {'image': image_feature.decode_example(tf.io.read_file(
          row['path'])), 'label': row['label']}
    table = {'path': tf.constant(paths, tf.string),
             'label': tf.constant(labels, tf.int64)}
    return Source(end - begin, max_share, table, [], parse_file)

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
