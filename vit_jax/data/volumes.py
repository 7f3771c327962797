"""3-D volumes for the 'volume_segmentation' task: a NumPy pipeline.

Volumes are few and large (BTCV: 24 train and 6 validation CT scans), so
there is no tf.data here: each process loads its share of a split one volume
at a time, applies the deterministic head of the preprocessing spec once and
keeps the result in memory, and draws random crops from it per batch. Batch
`step` is a pure function of (seed, process index, step) -- NumPy generators
seeded from those numbers -- so `start_step=n` is exact and costs nothing.

Datasets (`data_config.name`):
  'nifti_folder': `data_config.folder` holds an MSD / BTCV style
      dataset.json (or one dataset*.json): {"training": [{"image": "./imagesTr/a.nii.gz", "label":
      "./labelsTr/a.nii.gz"}, ...], "validation": [...], "labels": {"0":
      "background", "1": ...}}. Split names are its lists' names; slices
      and sums as TFDS writes them select parts ('training[:80%]',
      'training[-6:]', 'training+validation'), for MSD, whose 'test' list
      has no labels. num_classes comes from "labels" (keys "0" .. "K-1"),
      else from data_config.num_classes; when both are given they must
      agree. Files are read with nibabel, affine included.
  'synthetic_volumes': built in, see `synthetic_volumes.py` (splits
      'train', 24 volumes, and 'test', 6; 4 classes).

Layout. A volume is image float32 [D, H, W, C] and label_map int32
[D, H, W], channels last as UNETR takes them; D, H, W are the NIfTI file's
voxel axes i, j, k in that order (MONAI's order too), i.e. after
`orientation('RAS')` D runs towards the Right, H towards Anterior, W towards
Superior. A 3-D NIfTI image gets C = 1; a 4-D one (MSD's modalities) keeps
its fourth axis as C.

Preprocessing specs use preprocess.py's syntax with the volume ops of
`volume_ops.py` (MONAI's transforms). Everything before a spec's first
random op is done once per volume; from there on, per batch and per crop.
UNETR's BTCV recipe (the paper and MONAI's tutorial) reads:

    "orientation('RAS')|spacing(1.5, 1.5, 2.0)|"
    "scale_intensity(-175, 250, 0.0, 1.0, clip=True)|crop_foreground()|"
    "rand_crop_pos_neg(96, pos=1, neg=1, samples=4)|rand_flip(0, 0.1)|"
    "rand_flip(1, 0.1)|rand_flip(2, 0.1)|rand_rot90(0.1, 3)|"
    "rand_shift_intensity(0.1, 0.5)"

A train batch is {'image': float32 [B, D, H, W, C], 'label_map': int32
[B, D, H, W]}, B counting crops: a crop op's `samples` crops come from one
volume, so the local batch must be a multiple of them. Volumes are visited
in a fresh permutation of the process's share each epoch.

Evaluation sees whole volumes: `eval_examples` yields one at a time after
pp_eval (deterministic ops only), its label map on the same voxel grid as
the image (resampled with it by nearest neighbour, as MONAI's BTCV
validation does), for the sliding-window evaluator.

Bad data raises `DenseLabelError` naming the file: a missing or unreadable
NIfTI file, image and label shapes that differ, a label value outside
[0, num_classes), a volume smaller than its crop.
"""

import functools
import itertools
import json
import math
import os
import re
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np

from vit_jax.data import DenseLabelError
from vit_jax.data import stepped
from vit_jax.data import synthetic_volumes
from vit_jax.data import volume_ops

NIFTI_FOLDER = 'nifti_folder'
DATASETS = (NIFTI_FOLDER, synthetic_volumes.NAME)
TASK = 'volume_segmentation'

Batch = Dict[str, np.ndarray]
Volume = volume_ops.Volume


def handles(data_config) -> bool:
  """Whether `data_config.name` is a volume dataset (this module's)."""
  return data_config.get('name') in DATASETS


# ----------------------------------------------------------------------------
# Sources: a split is a list of records, each loading one raw volume.


class Record(NamedTuple):
  name: str
  load: Callable[[], Volume]
  image_path: Optional[str] = None  # a file's, for its header


class Dataset(NamedTuple):
  splits: Dict[str, List[Record]]  # the full labelled lists, by name
  num_classes: int
  class_names: Optional[List[str]]
  channels: Callable[[], int]  # read lazily (a NIfTI header)
  unlabelled: Tuple[str, ...] = ()  # lists without labels (MSD's 'test')


def _unreadable(path: str, error: Exception) -> DenseLabelError:
  return volume_ops.bad_file(
      path, f'cannot read it as NIfTI: {type(error).__name__}: {error}')


def _open_nifti(path: str):
  """The nibabel image of `path` (its header read, not its data)."""
  import nibabel  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise volume_ops.bad_file(path, 'no such NIfTI file.')
  try:
    return nibabel.load(path)
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(path, e) from e


def _load_nifti(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """(data as stored, affine) of a NIfTI file; DenseLabelError if it is
  missing or unreadable."""
  image = _open_nifti(path)
  try:
    return np.asanyarray(image.dataobj), np.asarray(image.affine, np.float64)
  except Exception as e:  # pylint: disable=broad-except
    # nibabel, gzip and zlib each raise their own kind for damaged data.
    raise _unreadable(path, e) from e


def _nifti_volume(name: str, image_path: str, label_path: str) -> Volume:
  data, affine = _load_nifti(image_path)
  label, _ = _load_nifti(label_path)
  if data.ndim == 3:
    data = data[..., None]
  if data.ndim != 4:
    raise volume_ops.bad_file(
        image_path,
        f'image has shape {data.shape}; expected [X, Y, Z] or [X, Y, Z, C].')
  if label.ndim == 4 and label.shape[-1] == 1:
    label = label[..., 0]
  if label.shape != data.shape[:3]:
    raise volume_ops.bad_file(
        label_path, f'label shape {label.shape} differs from the spatial '
        f'shape {data.shape[:3]} of its image {image_path}.')
  if (np.issubdtype(label.dtype, np.floating) and
      not np.array_equal(label, np.round(label))):
    raise volume_ops.bad_file(
        label_path, 'label values must be whole numbers (class indices).')
  return {'image': data.astype(np.float32), 'label_map': label.astype(np.int32),
          'affine': affine, 'name': name, 'path': image_path,
          'label_path': label_path}


def _entry_name(path: str) -> str:
  base = os.path.basename(path)
  for suffix in ('.nii.gz', '.nii'):
    if base.endswith(suffix):
      return base[:-len(suffix)]
  return base


def _description_file(folder: str) -> str:
  """The folder's dataset.json, else its one dataset*.json (MONAI's BTCV
  tutorial names it dataset_0.json)."""
  if os.path.isfile(os.path.join(folder, 'dataset.json')):
    return os.path.join(folder, 'dataset.json')
  candidates = sorted(name for name in os.listdir(folder)
                      if name.startswith('dataset') and name.endswith('.json'))
  if len(candidates) != 1:
    raise ValueError(
        f'{folder}: data_config.folder needs a dataset.json (MSD / BTCV '
        f'layout), or exactly one dataset*.json; found '
        f'{candidates or "none"}.')
  return os.path.join(folder, candidates[0])


def _nifti_dataset(config) -> Dataset:
  folder = config.get('folder')
  if not folder or not os.path.isdir(os.path.expanduser(folder)):
    raise ValueError(f"Dataset {NIFTI_FOLDER!r} needs data_config.folder, a "
                     f'directory with a dataset.json (MSD / BTCV layout); got'
                     f' {folder!r}, which is not a directory.')
  folder = os.path.expanduser(folder)
  json_path = _description_file(folder)
  try:
    with open(json_path) as f:
      description = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{json_path}: not valid JSON ({e}).') from None
  if not isinstance(description, dict):
    raise ValueError(f'{json_path}: expected a JSON object of split lists.')

  def resolve(relative):
    return os.path.normpath(os.path.join(folder, relative))

  splits, unlabelled = {}, []
  for split, entries in description.items():
    if not isinstance(entries, list):
      continue
    # MSD's test lists hold bare image paths: nothing to train or score on.
    if not all(isinstance(entry, dict) and 'image' in entry and
               'label' in entry for entry in entries):
      unlabelled.append(split)
      continue
    splits[split] = []
    for entry in entries:
      image_path, label_path = resolve(entry['image']), resolve(entry['label'])
      name = _entry_name(image_path)
      splits[split].append(Record(
          name, functools.partial(_nifti_volume, name, image_path,
                                  label_path), image_path))
  labels = description.get('labels')
  num_classes, class_names = config.get('num_classes'), config.get(
      'class_names')
  if labels is not None:
    keys = sorted(labels, key=lambda k: int(k) if str(k).isdigit() else -1)
    if keys != [str(i) for i in range(len(labels))]:
      raise ValueError(f'{json_path}: "labels" keys must be "0" .. '
                       f'"{len(labels) - 1}", got {sorted(labels)}.')
    if num_classes is not None and num_classes != len(labels):
      raise ValueError(
          f'data_config.num_classes={num_classes} disagrees with the '
          f'{len(labels)} classes of "labels" in {json_path}.')
    num_classes = len(labels)
    class_names = class_names or [str(labels[k]) for k in keys]
  elif num_classes is None:
    raise ValueError(f'{json_path} has no "labels": set data_config.'
                     f'num_classes (background included).')

  def channels():
    first = next((records[0] for records in splits.values() if records),
                 None)
    if first is None:
      raise ValueError(f'{json_path}: no labelled volume in any list.')
    shape = _open_nifti(first.image_path).shape  # the header only
    return shape[3] if len(shape) == 4 else 1

  return Dataset(splits, num_classes, class_names, channels,
                 tuple(unlabelled))


def _synthetic_dataset(config) -> Dataset:
  num_classes = config.get('num_classes')
  if num_classes is not None and num_classes != synthetic_volumes.NUM_CLASSES:
    raise ValueError(
        f'data_config.num_classes={num_classes} disagrees with '
        f"{synthetic_volumes.NAME!r}'s {synthetic_volumes.NUM_CLASSES} "
        f'classes (background included).')

  def load(split, index):
    image, label, affine = synthetic_volumes.volume(split, index)
    name = f'{split}_{index:03d}'
    return {'image': image, 'label_map': label, 'affine': affine,
            'name': name, 'path': f'{synthetic_volumes.NAME}/{name}',
            'label_path': f'{synthetic_volumes.NAME}/{name}'}

  splits = {split: [Record(f'{split}_{i:03d}',
                           functools.partial(load, split, i))
                    for i in range(count)]
            for split, count in synthetic_volumes.SPLITS.items()}
  return Dataset(splits, synthetic_volumes.NUM_CLASSES,
                 list(config.get('class_names') or
                      synthetic_volumes.CLASS_NAMES), lambda: 1)


def dataset(config) -> Dataset:
  """The dataset `config.name` names (a volume dataset)."""
  if config.get('name') == NIFTI_FOLDER:
    found = _nifti_dataset(config)
  elif config.get('name') == synthetic_volumes.NAME:
    found = _synthetic_dataset(config)
  else:
    raise ValueError(f'{config.get("name")!r} is not a volume dataset; '
                     f'volume datasets: {list(DATASETS)}.')
  if found.num_classes < 2:
    raise ValueError(f'A segmentation dataset needs at least 2 classes '
                     f'(background included), got {found.num_classes}.')
  if (found.class_names is not None and
      len(found.class_names) != found.num_classes):
    raise ValueError(f'data_config.class_names has {len(found.class_names)}'
                     f' names for {found.num_classes} classes.')
  return found


_SLICE = re.compile(r'^(?P<name>[^\[\]]+)(\[(?P<start>[^:\]]*):'
                    r'(?P<stop>[^:\]]*)\])?$')


def _boundary(text: str, size: int, split: str) -> Optional[int]:
  text = text.strip()
  if not text:
    return None
  match = re.fullmatch(r'(-?\d+)(%?)', text)
  if not match:
    raise ValueError(f'Split {split!r}: slice bounds are integers or '
                     f'percentages, got {text!r}.')
  value = int(match.group(1))
  return int(round(value * size / 100)) if match.group(2) else value


def split_records(found: Dataset, split: str,
                  what: str = 'volume') -> List[Record]:
  """The records `split` names: a split name, a slice of one
  ('training[:80%]', 'training[-6:]', as TFDS), or a sum of such ('+');
  `what` names a record in errors (video.py's lists are videos)."""
  records = []
  for part in str(split).split('+'):
    match = _SLICE.match(part.strip())
    if match and match.group('name') in found.unlabelled:
      raise ValueError(f'Split {match.group("name")!r} of the dataset has no'
                       f' labels (an MSD test list); take the evaluation '
                       f"split from a labelled one, e.g. 'training[80%:]' "
                       f"with train_split 'training[:80%]'.")
    if not match or match.group('name') not in found.splits:
      raise ValueError(f'Unknown split {part.strip()!r} in {split!r}; the '
                       f'dataset has {sorted(found.splits)} (slices such as '
                       f"'NAME[:80%]' and sums 'A+B' are allowed).")
    full = found.splits[match.group('name')]
    if match.group(2):
      full = full[_boundary(match.group('start'), len(full), split):
                  _boundary(match.group('stop'), len(full), split)]
    records.extend(full)
  if not records:
    raise ValueError(f'Split {split!r} holds no {what}.')
  return records


def share_bounds(count: int, process_index: int,
                 process_count: int) -> Tuple[int, int]:
  """[start, stop) of process `process_index`'s contiguous share, as the
  other datasets' (`sources.share_bounds`, TFDS's even_splits: the first
  `count % process_count` processes take one more)."""
  base, extra = divmod(count, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


# ----------------------------------------------------------------------------
# Preparing volumes and the entry points.


def _check_labels(volume: Volume, num_classes: int) -> None:
  label = volume['label_map']
  bad = label[(label < 0) | (label >= num_classes)]
  if bad.size:
    raise volume_ops.bad_file(
        volume['label_path'], f'label value {int(bad.flat[0])} is outside '
        f'[0, num_classes={num_classes}) (after preprocessing).')


def prepare(record: Record, ops: Sequence[volume_ops.VolumeOp],
            num_classes: int) -> Volume:
  """A record's volume after the deterministic ops `ops`, labels checked."""
  (volume,) = volume_ops.apply(ops, [record.load()], None)
  _check_labels(volume, num_classes)
  return volume


def _stack(volumes: Sequence[Volume]) -> Batch:
  return {'image': np.stack([v['image'] for v in volumes]).astype(np.float32),
          'label_map': np.stack([v['label_map']
                                 for v in volumes]).astype(np.int32)}


def train_shape(spec: volume_ops.Spec, text: str) -> Tuple[int, int, int]:
  """The crops' static [D, H, W] after pp_train `spec` (`text`)."""
  shape = spec.shape()
  if None in shape:
    raise ValueError(f'pp_train {text!r} gives volumes of varying shape '
                     f'{shape}; end it with a fixed-size crop, e.g. '
                     f'rand_crop_pos_neg(96, samples=4).')
  return shape


class TrainBatches(stepped.StepBatches):
  """The infinite train stream of one process; `batch(step)` is pure.

  With `data_config.prefetch` > 0 one background thread prepares that
  many batches ahead (NumPy releases the GIL in the heavy parts); since
  each batch is a function of its step, the order cannot change. `close()`
  stops the thread.
  """

  def __init__(self, config, global_batch_size: int, seed: int,
               start_step: int, process_index: int, process_count: int):
    super().__init__(start_step, config.get('prefetch'), 'volume-batches')
    found = dataset(config)
    self._spec = volume_ops.parse(config.pp_train)
    train_shape(self._spec, config.pp_train)
    local = stepped.local_batch(global_batch_size, process_count)
    crops = self._spec.crops_per_volume
    if local % crops:
      raise ValueError(f'The local batch of {local} crops is not a multiple '
                       f'of the {crops} crops pp_train takes from each '
                       f'volume.')
    self._volumes_per_batch = local // crops
    records = split_records(found, config.train_split)
    start, stop = share_bounds(len(records), process_index, process_count)
    if start == stop:
      raise ValueError(f'Split {config.train_split!r} has {len(records)} '
                       f'volumes, fewer than the {process_count} processes.')
    self._records = records[start:stop]
    self._num_classes = found.num_classes
    self._seed, self._process = seed, process_index
    self._cache: Dict[int, Volume] = {}

  def volume(self, index: int) -> Volume:
    """Volume `index` of the share after pp_train's head (cached)."""
    if index not in self._cache:
      self._cache[index] = prepare(self._records[index], self._spec.head,
                                   self._num_classes)
    return self._cache[index]

  def batch(self, step: int) -> Batch:
    """Batch `step` (0 = the first): a function of (seed, process, step)."""
    rng = np.random.default_rng(stepped.seed_words(self._seed, self._process,
                                                   step, 1))
    crops = []
    for slot in range(self._volumes_per_batch):
      index = self._share_index(step, slot, self._volumes_per_batch)
      crops.extend(volume_ops.apply(self._spec.tail, [self.volume(index)], rng))
    return _stack(crops)


def _eval_spec(config) -> volume_ops.Spec:
  return volume_ops.parse(config.pp_eval, random_allowed=False)


def eval_share_sizes(config, split: str, process_count: int) -> List[int]:
  """Volumes of `split` per process."""
  count = len(split_records(dataset(config), split))
  return [stop - start for start, stop in
          (share_bounds(count, i, process_count)
           for i in range(process_count))]


def eval_examples(config, split: str, process_index: int,
                  process_count: int) -> Iterator[Dict[str, Any]]:
  """This process's volumes of `split` after pp_eval, one at a time:
  {'image': float32 [D, H, W, C], 'label_map': int32 [D, H, W] (same
  grid), 'name': str}."""
  found = dataset(config)
  spec = _eval_spec(config)
  records = split_records(found, split)
  start, stop = share_bounds(len(records), process_index, process_count)
  for record in records[start:stop]:
    volume = prepare(record, spec.head, found.num_classes)
    yield {'image': volume['image'], 'label_map': volume['label_map'],
           'name': volume['name']}


def eval_batches(config, split: str, global_batch_size: int,
                 process_index: int, process_count: int) -> Iterator[Batch]:
  """This process's share of `split` as padded batches of fixed-size
  volumes; only when pp_eval gives one shape (e.g. ends with center_crop).
  'mask' is 1 for volumes and 0 for padding (zeros, label 0)."""
  spec = _eval_spec(config)
  shape = spec.shape()
  if None in shape:
    raise ValueError(
        f'pp_eval {config.pp_eval!r} gives volumes of varying shape {shape};'
        f' evaluate whole volumes with data.eval_examples and the '
        f'sliding-window evaluator, or end pp_eval with center_crop(SIZE).')
  local = stepped.local_batch(global_batch_size, process_count)
  num_batches = math.ceil(max(eval_share_sizes(config, split, process_count))
                          / local)
  examples = eval_examples(config, split, process_index, process_count)
  for _ in range(num_batches):
    volumes = list(itertools.islice(examples, local))
    mask = np.zeros([local], np.float32)
    mask[:len(volumes)] = 1
    if not volumes:
      channels = dataset(config).channels()
      volumes = [{'image': np.zeros(shape + (channels,), np.float32),
                  'label_map': np.zeros(shape, np.int32)}]
    padding = {'image': np.zeros_like(volumes[0]['image']),
               'label_map': np.zeros_like(volumes[0]['label_map'])}
    batch = _stack(volumes + [padding] * (local - len(volumes)))
    batch['mask'] = mask
    yield batch


def label_counts(config, split: str) -> np.ndarray:
  """Voxels per class in the whole of `split`, as stored (before any
  preprocessing): int64 [num_classes]."""
  found = dataset(config)
  counts = np.zeros([found.num_classes], np.int64)
  for record in split_records(found, split):
    volume = record.load()
    _check_labels(volume, found.num_classes)
    counts += np.bincount(volume['label_map'].ravel(),
                          minlength=found.num_classes)
  return counts


def dataset_info(config) -> Dict[str, Any]:
  """`data.dataset_info` for a volume dataset (reads at most one NIfTI
  header, for the channel count)."""
  found = dataset(config)
  shape = train_shape(volume_ops.parse(config.pp_train), config.pp_train)
  channels = found.channels()
  return {
      'task': TASK,
      'num_classes': found.num_classes,
      'class_names': found.class_names,
      'ignore_index': None,
      'image_shape': _eval_spec(config).shape() + (channels,),
      'train_image_shape': shape + (channels,),
      'num_examples': {
          'train': len(split_records(found, config.train_split)),
          'test': len(split_records(found, config.eval_split)),
      },
  }
