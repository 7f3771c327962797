"""Video classification data ('video_classification'): a NumPy pipeline.

As `volumes.py`, no tf.data: a batch is a pure function of (seed, process,
step) -- NumPy generators seeded from those numbers and the row -- so
`start_step=n` is exact and costs nothing, and videos are decoded by a
thread pool (PyAV and PIL release the GIL while decoding) whose timing
cannot change a batch, since each row is computed from its own generator
and put in its own slot.

Datasets (`data_config.name`; every one needs `data_config.num_frames`):
  'moving_digits': built in, see `moving_digits.py` (splits 'train' 4,000
      and 'test' 500 videos; 20 classes digit x direction; 1 channel).
  'video_folder': `data_config.folder`/SPLIT/CLASS/VIDEO, VIDEO a video
      file (.mp4, .avi, .webm, .mkv, .mov; decoded with PyAV) or a folder of
      frame images (.jpg, .jpeg, .png, in name order; PIL), as Kinetics and
      UCF-101 are laid out after download and frame extraction. Classes
      are the sorted class folder names over all splits.
  'video_tfrecord': `data_config.folder` holds TFRecord shards named
      SPLIT-*.tfrecord* (or SPLIT.tfrecord*) of tf.train.SequenceExample in
      DMVR's layout, as scenic's and big_vision's video readers: context
      'clip/label/index' (int64), feature list 'image/encoded' (one JPEG or
      PNG per frame). Needs data_config.num_classes. Records are indexed
      once (the TFRecord framing: length u64, crc u32, data, crc u32) for
      random access; the checksums are not verified.
  any other name: a prepared TFDS dataset with a 'video' feature (a
      sequence of encoded frames) and a 'label' ClassLabel, e.g. 'ucf101'
      (prepared once with `tfds build ucf101`); its shards are indexed the
      same way, TFDS's split slices included.
Frames are RGB (C = 3) except moving_digits' (C = 1). Split strings take
TFDS-style slices and sums ('train[:90%]', 'train+test').

Sampling (num_frames T, frame_stride s): a clip is T frames s apart, so a
video needs at least T * s frames (fewer raise `ShortVideoError` naming the
file, its frame count and the frames needed). Training takes one clip per
video from a uniform start in [0, N - T * s]; testing takes `eval_clips`
clips with starts uniformly spaced over that range (the first at 0 and the
last at N - T * s; one clip: the centre, floor((N - T * s) / 2)), each with
`eval_crops` spatial crops (`video_ops.view_crop`): V = clips x crops views,
view k * crops + j being clip k's crop j.

Batches. Train: {'image': float32 [B, T, H, W, C], 'labels': float32
[B, K]}; each process takes a contiguous share of a seeded permutation of
the split (the same for all processes), and visits it in a new order each
epoch. mixup / CutMix (data_config.mixup_alpha / cutmix_alpha) mix row i
with row i - 1 (a roll by one, as the image pipeline) with one lambda per
row, and for CutMix one box per row, the same on every frame; with both
alphas each row takes one of the two with probability 1/2. Eval: each row
is one view: {'image', 'labels', 'mask' float32 (0 on padding rows),
'video' int32 (the video's index in the split), 'view' int32 (0 .. V - 1;
-1 and video -1 on padding rows)}; a process's share is a contiguous run of
whole videos, so all views of a video are in one process.
"""

import collections
from concurrent import futures
import functools
import glob
import io
import math
import os
import struct
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np

from vit_jax.data import CorruptVideoError
from vit_jax.data import ShortVideoError
from vit_jax.data import moving_digits
from vit_jax.data import stepped
from vit_jax.data import video_ops
from vit_jax.data import volumes

VIDEO_FOLDER = 'video_folder'
VIDEO_TFRECORD = 'video_tfrecord'
BUILT_IN = (moving_digits.NAME, VIDEO_FOLDER, VIDEO_TFRECORD)
TASK = 'video_classification'
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.webm', '.mkv', '.mov')
FRAME_EXTENSIONS = ('.jpg', '.jpeg', '.png')
WORKERS = min(8, os.cpu_count() or 1)

Batch = Dict[str, np.ndarray]

# Last words of the seeds of rows, mixing and the share permutation, apart
# from each other and from the epoch permutations' (stepped.py: a last word
# 0). numpy's SeedSequence pads with zeros, so the tags are never 0.
_ROW, _MIX, _SHARE = 1, 2, 3


def handles(data_config) -> bool:
  """Whether `data_config` asks for video data: a video dataset's name, or
  num_frames set."""
  return (data_config.get('name') in BUILT_IN or
          data_config.get('num_frames') is not None)


# ----------------------------------------------------------------------------
# Decoding.


def _decode_image(data, path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes)
                    else data) as image:
      return np.asarray(image.convert('RGB'))
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptVideoError(
        f'{path}: a frame cannot be decoded ({type(e).__name__}: {e}).',
        path) from e


def _stack_frames(frames: Sequence[np.ndarray], path: str) -> np.ndarray:
  sizes = sorted({f.shape for f in frames})
  if len(sizes) > 1:
    raise CorruptVideoError(f'{path}: frames of different sizes {sizes}.',
                            path)
  return np.stack(frames)


class Frames:
  """A video's frames, each converted to uint8 RGB [H, W, C] only when a
  slice asks for it: a clip of 8 frames of a 300-frame video converts 8
  (colour conversion of decoded video frames, or the decoding of a frame
  folder's or a record's images). len() is the frame count; indexing with
  a slice gives uint8 [n, H, W, C]."""

  def __init__(self, items: Sequence[Any], convert: Callable[[Any],
                                                            np.ndarray],
               path: str):
    if not items:
      raise CorruptVideoError(f'{path}: no frame could be decoded.', path)
    self._items, self._convert, self.path = list(items), convert, path

  def __len__(self) -> int:
    return len(self._items)

  def __getitem__(self, index: slice) -> np.ndarray:
    return _stack_frames([self._convert(item) for item in
                          self._items[index]], self.path)


def _rgb(frame) -> np.ndarray:
  return frame.to_ndarray(format='rgb24')


def _decode_file(path: str) -> Frames:
  import av  # pylint: disable=g-import-not-at-top
  try:
    with av.open(path) as container:
      if not container.streams.video:
        raise CorruptVideoError(f'{path}: the file has no video stream.',
                                path)
      # Decoded frames keep their own buffers after the file is closed.
      frames = list(container.decode(container.streams.video[0]))
  except CorruptVideoError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    # FFmpeg's errors (av.error.*), OSError, and decoders' ValueErrors.
    raise CorruptVideoError(
        f'{path}: cannot be decoded as a video ({type(e).__name__}: {e}).',
        path) from e
  return Frames(frames, _rgb, path)


def _images(encoded: Sequence[Any], path: str) -> Frames:
  """Frames of encoded images (bytes) or image files (paths)."""
  return Frames(encoded, lambda item: _decode_image(
      item, item if isinstance(item, str) else path), path)


def frame_files(folder: str) -> List[str]:
  """A frame folder's images in name order."""
  return [os.path.join(folder, name) for name in sorted(os.listdir(folder))
          if os.path.splitext(name)[1].lower() in FRAME_EXTENSIONS]


def load_video(path: str) -> Frames:
  """The frames of a video file or a frame folder, converted on demand
  (`Frames`); CorruptVideoError naming `path` if it does not exist, does not
  decode, or has no frame."""
  if os.path.isdir(path):
    files = frame_files(path)
    if not files:
      raise CorruptVideoError(
          f'{path}: a frame folder without any {"/".join(FRAME_EXTENSIONS)} '
          f'image.', path)
    return _images(files, path)
  if not os.path.isfile(path):
    raise CorruptVideoError(f'{path}: no such video file or frame folder.',
                            path)
  return _decode_file(path)


def read_video(path: str) -> np.ndarray:
  """All frames of a video file or a frame folder: uint8 [N, H, W, 3].

  Raises:
    CorruptVideoError: naming `path`, if it does not exist, does not decode,
      or has no frame.
  """
  return load_video(path)[:]


# TFRecord framing: uint64 length, uint32 masked crc of the length, the
# record, uint32 masked crc of the record.
_HEADER = 12


@functools.lru_cache(maxsize=None)
def record_offsets(path: str) -> Tuple[Tuple[int, int], ...]:
  """(offset of the data, length) of every record of a TFRecord file, read
  from the length fields only (nothing decompressed: plain files only)."""
  offsets = []
  with open(path, 'rb') as f:
    size = os.fstat(f.fileno()).st_size
    position = 0
    while position < size:
      f.seek(position)
      header = f.read(_HEADER)
      if len(header) < _HEADER:
        raise CorruptVideoError(f'{path}: truncated TFRecord header at byte '
                                f'{position}.', path)
      (length,) = struct.unpack('<Q', header[:8])
      if position + _HEADER + length + 4 > size:
        raise CorruptVideoError(
            f'{path}: a record of {length} bytes at byte {position} runs '
            f'past the end of the file ({size} bytes); a truncated or '
            f'compressed TFRecord file.', path)
      offsets.append((position + _HEADER, length))
      position += _HEADER + length + 4
  return tuple(offsets)


def read_record(path: str, offset: int, length: int) -> bytes:
  with open(path, 'rb') as f:
    f.seek(offset)
    return f.read(length)


def _parse(proto_name: str, data: bytes, name: str):
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top
  proto = getattr(tf.train, proto_name)()
  try:
    proto.ParseFromString(data)
  except Exception as e:  # pylint: disable=broad-except
    raise CorruptVideoError(f'{name}: not a tf.train.{proto_name} ({e}).',
                            name) from e
  return proto


# ----------------------------------------------------------------------------
# Sources: a split is a list of records, each loading one video.


class Record(NamedTuple):
  name: str  # the file, or FILE:INDEX for a record, for errors
  # uint8 [N, H, W, C], or Frames (converted when sliced)
  load: Callable[[], Any]
  label: Callable[[], int]


class Dataset(NamedTuple):
  records: Callable[[str], List[Record]]  # split string -> records
  num_classes: int
  class_names: Optional[List[str]]
  channels: int
  description: str
  frame_size: Optional[Tuple[int, int]] = None  # (H, W) when fixed


class _Lists(NamedTuple):  # what volumes.split_records reads
  splits: Dict[str, List[Record]]
  unlabelled: Tuple[str, ...] = ()


def _constant(value):
  return lambda: value


def _digit_video(split: str, index: int) -> np.ndarray:
  return moving_digits.split_arrays(split)['video'][index]


def _digit_label(split: str, index: int) -> int:
  return int(moving_digits.split_arrays(split)['label'][index])


def _moving_digits(config) -> Dataset:
  found = _Lists({
      split: [Record(f'{moving_digits.NAME}/{split}_{i:04d}',
                     functools.partial(_digit_video, split, i),
                     functools.partial(_digit_label, split, i))
              for i in range(size)]
      for split, size in moving_digits.SIZES.items()})
  return Dataset(lambda split: volumes.split_records(found, split, 'video'),
                 _num_classes(config, moving_digits.NUM_CLASSES,
                              repr(moving_digits.NAME)),
                 list(config.get('class_names') or
                      moving_digits.CLASS_NAMES), 1,
                 repr(moving_digits.NAME), moving_digits.VIDEO_SHAPE[1:3])


def _folder(config, layout: str) -> str:
  folder = config.get('folder')
  if not folder or not os.path.isdir(os.path.expanduser(folder)):
    raise ValueError(f'Dataset {config.name!r} needs data_config.folder, a '
                     f'directory holding {layout}; got {folder!r}, which is '
                     f'not a directory.')
  return os.path.expanduser(folder)


def _video_folder(config) -> Dataset:
  root = _folder(config, 'SPLIT/CLASS/VIDEO (a video file or a folder of '
                 'frame images)')
  split_dirs = sorted(d for d in os.listdir(root)
                      if os.path.isdir(os.path.join(root, d)))
  classes = sorted({c for d in split_dirs
                    for c in os.listdir(os.path.join(root, d))
                    if os.path.isdir(os.path.join(root, d, c))})
  lists = {}
  for split in split_dirs:
    lists[split] = []
    for label, name in enumerate(classes):
      directory = os.path.join(root, split, name)
      if not os.path.isdir(directory):
        continue
      for entry in sorted(os.listdir(directory)):
        path = os.path.join(directory, entry)
        if (os.path.isdir(path) or
            os.path.splitext(entry)[1].lower() in VIDEO_EXTENSIONS):
          lists[split].append(Record(path,
                                     functools.partial(load_video, path),
                                     _constant(label)))
  found = _Lists(lists)
  return Dataset(lambda split: volumes.split_records(found, split, 'video'),
                 _num_classes(config, len(classes), root),
                 list(config.get('class_names') or classes), 3,
                 f'{VIDEO_FOLDER!r} at {root}')


def _num_classes(config, found: int, where: str) -> int:
  given = config.get('num_classes')
  if given is not None and given != found:
    raise ValueError(f'data_config.num_classes={given} disagrees with the '
                     f'{found} classes of {where}.')
  return found


def _sequence_record(path: str, offset: int, length: int):
  name = f'{path}:{offset - _HEADER}'
  return name, _parse('SequenceExample', read_record(path, offset, length),
                      name)


def _tfrecord_video(path, offset, length) -> Frames:
  name, example = _sequence_record(path, offset, length)
  frames = example.feature_lists.feature_list['image/encoded'].feature
  return _images([f.bytes_list.value[0] for f in frames], name)


def _tfrecord_label(path, offset, length) -> int:
  name, example = _sequence_record(path, offset, length)
  values = example.context.feature['clip/label/index'].int64_list.value
  if len(values) != 1:
    raise CorruptVideoError(f"{name}: context 'clip/label/index' holds "
                            f'{len(values)} values, not one label.', name)
  return int(values[0])


def _indexed(path: str, load, label) -> List[Record]:
  return [Record(f'{path}:{offset - _HEADER}',
                 functools.partial(load, path, offset, length),
                 functools.partial(label, path, offset, length))
          for offset, length in record_offsets(path)]


def _video_tfrecord(config) -> Dataset:
  root = _folder(config, 'SPLIT-*.tfrecord* shards of SequenceExamples')
  if config.get('num_classes') is None:
    raise ValueError(f"Dataset {VIDEO_TFRECORD!r} needs data_config."
                     f'num_classes (the records hold label indices only).')
  shards = collections.defaultdict(list)
  for path in sorted(glob.glob(os.path.join(root, '*.tfrecord*'))):
    base = os.path.basename(path)
    shards[base.split('.tfrecord')[0].split('-')[0]].append(path)
  cache = {}

  def records(split):
    for part in str(split).split('+'):
      name = part.strip().split('[')[0]
      if name in shards and name not in cache:
        cache[name] = [r for path in shards[name] for r in _indexed(
            path, _tfrecord_video, _tfrecord_label)]
    return volumes.split_records(
        _Lists({name: cache.get(name, []) for name in shards}), split,
        'video')
  return Dataset(records, config.num_classes,
                 list(config.get('class_names') or []) or None, 3,
                 f'{VIDEO_TFRECORD!r} at {root}')


def _tfds_video(path, offset, length) -> Frames:
  name = f'{path}:{offset - _HEADER}'
  example = _parse('Example', read_record(path, offset, length), name)
  return _images(list(example.features.feature['video'].bytes_list.value),
                 name)


def _tfds_label(path, offset, length) -> int:
  name = f'{path}:{offset - _HEADER}'
  example = _parse('Example', read_record(path, offset, length), name)
  return int(example.features.feature['label'].int64_list.value[0])


def _tfds(config) -> Dataset:
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  builder = sources.get_builder(config)
  features = builder.info.features
  if 'video' not in features or 'label' not in features:
    raise ValueError(
        f'data_config.num_frames is set, but dataset {config.name!r} has no '
        f"'video' and 'label' features (it has {sorted(features)}); video "
        f'datasets: {list(BUILT_IN)} or a TFDS video dataset such as '
        f"'ucf101'. Image datasets take num_frames=None.")
  if builder.info.file_format.value != 'tfrecord':
    raise ValueError(f'{config.name!r} is stored as '
                     f'{builder.info.file_format.value}; video.py indexes '
                     f'TFRecord shards (prepare with the default format).')

  def records(split):
    try:
      instructions = builder.info.splits[split].file_instructions
    except (KeyError, ValueError) as e:
      raise ValueError(f'Unknown split {split!r} of {config.name!r}: {e}; '
                       f'splits: {sorted(builder.info.splits)}.') from None
    found = []
    for instruction in instructions:
      indexed = _indexed(os.fspath(instruction.filename), _tfds_video,
                         _tfds_label)
      stop = (None if instruction.take is None or instruction.take < 0
              else instruction.skip + instruction.take)
      found.extend(indexed[instruction.skip:stop])
    return found
  label = features['label']
  size = tuple(features['video'].shape[1:3])
  return Dataset(records, _num_classes(config, label.num_classes,
                                       repr(config.name)),
                 list(config.get('class_names') or label.names), 3,
                 repr(config.name), None if None in size else size)


def dataset(config) -> Dataset:
  """The video dataset `config.name` names."""
  if config.get('num_frames') is None:
    raise ValueError(f'Dataset {config.name!r} is a video dataset: set '
                     f'data_config.num_frames (frames per clip).')
  name = config.name
  if name == moving_digits.NAME:
    found = _moving_digits(config)
  elif name == VIDEO_FOLDER:
    found = _video_folder(config)
  elif name == VIDEO_TFRECORD:
    found = _video_tfrecord(config)
  else:
    found = _tfds(config)
  if found.num_classes < 2:
    raise ValueError(f'{found.description} has {found.num_classes} classes;'
                     f' classification needs at least 2.')
  if (found.class_names is not None and
      len(found.class_names) != found.num_classes):
    raise ValueError(f'data_config.class_names has {len(found.class_names)}'
                     f' names for {found.num_classes} classes.')
  return found


# ----------------------------------------------------------------------------
# Sampling.


def frames_needed(config) -> int:
  return config.num_frames * config.frame_stride


def _check_length(frames, path: str, config) -> int:
  needed = frames_needed(config)
  if len(frames) < needed:
    raise ShortVideoError(
        f'{path}: {len(frames)} frames, fewer than the {needed} a clip needs'
        f' (num_frames={config.num_frames} x frame_stride='
        f'{config.frame_stride}).', path)
  return len(frames) - needed  # the last start


def eval_starts(num_frames: int, config) -> List[int]:
  """The first frames of the eval_clips test clips of a video of
  `num_frames` frames: uniformly spaced from 0 to the last start (one
  clip: the centre)."""
  last = num_frames - frames_needed(config)
  clips = config.eval_clips
  if clips == 1:
    return [last // 2]
  return [k * last // (clips - 1) for k in range(clips)]


def _clip(frames, start: int, config) -> np.ndarray:
  return frames[start:start + frames_needed(config):config.frame_stride]


def num_views(config) -> int:
  return config.eval_clips * config.eval_crops


def _finish(clip: video_ops.Clip, spec: video_ops.Spec,
            with_labels: bool = True) -> Dict[str, np.ndarray]:
  if with_labels and 'labels' not in clip:
    raise ValueError(f'The spec {spec.text!r} gives no labels; end it with '
                     f'onehot(NUM_CLASSES).')
  out = {'image': np.asarray(clip['image'], np.float32)}
  if with_labels:
    out['labels'] = clip['labels']
  return out


def _views(frames, label: Optional[int], path: str, config,
           spec: video_ops.Spec) -> List[Dict[str, np.ndarray]]:
  """The test views of one decoded video after `spec`, in view order."""
  _check_length(frames, path, config)
  views = []
  for start in eval_starts(len(frames), config):
    clip = _clip(frames, start, config)
    for crop in range(config.eval_crops):
      example = {'image': clip, 'crops': config.eval_crops, 'path': path}
      if label is not None:
        example['label'] = label
      views.append(_finish(video_ops.apply(spec, example, None, crop), spec,
                           label is not None))
  return views


def _eval_spec(config) -> video_ops.Spec:
  spec = video_ops.parse(config.pp_eval)
  if config.eval_crops > 1 and 'view_crop' not in spec.names:
    raise ValueError(
        f'data_config.eval_crops={config.eval_crops} needs a view_crop(SIZE)'
        f' in pp_eval to take the crops, e.g. '
        f"'resize_small(224)|view_crop(224)|...'; got {config.pp_eval!r}.")
  random = [n for n, op in zip(spec.names, spec.ops) if op.random]
  if random:
    raise ValueError(f'pp_eval {config.pp_eval!r} has the random ops '
                     f'{random}; evaluation takes deterministic ops only '
                     f'(view_crop or center_crop instead of random crops).')
  return spec


def eval_views(frames, data_config, path: Optional[str] = None
               ) -> np.ndarray:
  """The test views of one decoded video (uint8 [N, H, W, C], e.g. from
  `read_video`, or `load_video`'s Frames) after pp_eval: float32
  [V, T, H, W, C], V = eval_clips x eval_crops in view order (clip-major).
  For predict; labels are skipped. `path` names the video in errors (a
  Frames knows its own)."""
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  config = data.resolve_config(data_config)
  if config.num_frames is None:
    raise ValueError('eval_views needs data_config.num_frames.')
  if path is None:
    path = frames.path if isinstance(frames, Frames) else '<frames>'
  if not isinstance(frames, Frames):
    frames = np.asarray(frames)
  views = _views(frames, None, path, config,
                 _eval_spec(config))
  return np.stack([v['image'] for v in views])


# ----------------------------------------------------------------------------
# Batches.


def _static_shape(spec: video_ops.Spec, config, found: Dataset, field: str
                  ) -> Tuple[int, int, int, int]:
  height, width = found.frame_size or (None, None)
  shape = spec.shape((config.num_frames, height, width, found.channels))
  if None in shape:
    raise ValueError(f'{field} {spec.text!r} gives clips of varying size '
                     f'{shape}; end its geometry with a fixed-size crop, e.g.'
                     f' center_crop(224) (pp_train: random_resized_crop('
                     f'224)).')
  return shape


def _train_spec(config) -> video_ops.Spec:
  spec = video_ops.parse(config.pp_train)
  if config.name == moving_digits.NAME and 'flip_lr' in spec.names:
    raise ValueError(
        f"pp_train {config.pp_train!r} has flip_lr, which mirrors the motion"
        f" and so swaps 'left' and 'right' in {moving_digits.NAME!r}'s "
        f'labels; leave it out.')
  return spec


def mix(batch: Batch, rng: np.random.Generator, mixup_alpha: float,
        cutmix_alpha: float) -> Batch:
  """mixup / CutMix of whole clips: row i with row i - 1, one lambda ~
  Beta(alpha, alpha) per row; CutMix pastes one box of sides H sqrt(1 -
  lambda) x W sqrt(1 - lambda) at a uniform centre (clipped to the frame)
  on every frame of the row, labels weighted by the area pasted."""
  images, labels = batch['image'], batch['labels']
  rows, height, width = images.shape[0], images.shape[2], images.shape[3]
  use_cutmix = np.full([rows], cutmix_alpha > 0)
  if mixup_alpha > 0 and cutmix_alpha > 0:
    use_cutmix = rng.random(rows) < 0.5
  rolled_images = np.roll(images, 1, axis=0)
  rolled_labels = np.roll(labels, 1, axis=0)
  mixed_images, mixed_labels = images.copy(), labels.copy()
  for row in range(rows):
    alpha = cutmix_alpha if use_cutmix[row] else mixup_alpha
    ratio = rng.beta(alpha, alpha)
    if use_cutmix[row]:
      centre = rng.random(2) * (height, width)
      half = np.array([height, width]) * math.sqrt(1.0 - ratio) / 2
      top, left = np.round(np.clip(centre - half, 0, [height, width])
                           ).astype(int)
      bottom, right = np.round(np.clip(centre + half, 0, [height, width])
                               ).astype(int)
      mixed_images[row, :, top:bottom, left:right] = rolled_images[
          row, :, top:bottom, left:right]
      ratio = 1.0 - (bottom - top) * (right - left) / (height * width)
    else:
      mixed_images[row] = (ratio * images[row] +
                           (1.0 - ratio) * rolled_images[row])
    mixed_labels[row] = ratio * labels[row] + (1.0 - ratio) * rolled_labels[
        row]
  return {'image': mixed_images.astype(np.float32),
          'labels': mixed_labels.astype(np.float32)}


class TrainBatches(stepped.StepBatches):
  """The infinite train stream of one process; `batch(step)` is pure.

  Rows are decoded by a thread pool; with data_config.prefetch > 0 one more
  thread prepares that many batches ahead. `close()` stops both.
  """

  def __init__(self, config, global_batch_size: int, seed: int,
               start_step: int, process_index: int, process_count: int):
    super().__init__(start_step, config.get('prefetch'), 'video-batches')
    found = dataset(config)
    self._config = config
    self._spec = _train_spec(config)
    self._shape = _static_shape(self._spec, config, found, 'pp_train')
    self._local = stepped.local_batch(global_batch_size, process_count)
    records = found.records(config.train_split)
    order = np.random.default_rng(stepped.seed_words(seed, 0, 0, 0, _SHARE)
                                  ).permutation(len(records))
    start, stop = volumes.share_bounds(len(records), process_index,
                                       process_count)
    if start == stop:
      raise ValueError(f'Split {config.train_split!r} has {len(records)} '
                       f'videos, fewer than the {process_count} processes.')
    self._records = [records[i] for i in order[start:stop]]
    self._seed, self._process = seed, process_index
    self._num_classes = found.num_classes
    self._rows = futures.ThreadPoolExecutor(WORKERS,
                                            thread_name_prefix='video-rows')

  def close(self) -> None:
    """Stops the threads (batches they had started are dropped)."""
    super().close()
    self._rows.shutdown(wait=True, cancel_futures=True)

  def _row(self, step: int, slot: int, index: int) -> Dict[str, np.ndarray]:
    record = self._records[index]
    rng = np.random.default_rng(stepped.seed_words(
        self._seed, self._process, step, slot, _ROW))
    frames = record.load()
    last = _check_length(frames, record.name, self._config)
    clip = {'image': _clip(frames, int(rng.integers(last + 1)),
                           self._config),
            'label': record.label(), 'path': record.name}
    out = _finish(video_ops.apply(self._spec, clip, rng), self._spec)
    if out['image'].shape != self._shape:
      raise ValueError(f'{record.name}: pp_train gave a clip of shape '
                       f"{out['image'].shape}, not {self._shape}.")
    if out['labels'].shape != (self._num_classes,):
      raise ValueError(f"pp_train gives labels of {out['labels'].shape[0]} "
                       f'classes; the dataset has {self._num_classes}.')
    return out

  def batch(self, step: int) -> Batch:
    """Batch `step` (0 = the first): a function of (seed, process, step)."""
    indices = [self._share_index(step, slot, self._local)
               for slot in range(self._local)]
    rows = list(self._rows.map(self._row, [step] * self._local,
                               range(self._local), indices))
    batch = {key: np.stack([row[key] for row in rows])
             for key in ('image', 'labels')}
    config = self._config
    if config.mixup_alpha > 0 or config.cutmix_alpha > 0:
      batch = mix(batch, np.random.default_rng(
          stepped.seed_words(self._seed, self._process, step, _MIX)),
                  config.mixup_alpha, config.cutmix_alpha)
    return batch


def eval_share_sizes(config, split: str, process_count: int) -> List[int]:
  """Videos of `split` per process."""
  count = len(dataset(config).records(split))
  return [stop - start for start, stop in
          (volumes.share_bounds(count, i, process_count)
           for i in range(process_count))]


def eval_batches(config, split: str, global_batch_size: int,
                 process_index: int, process_count: int) -> Iterator[Batch]:
  """This process's share of `split`, one row per view, padded to full
  batches; every process yields the same number of batches."""
  found = dataset(config)
  spec = _eval_spec(config)
  shape = _static_shape(spec, config, found, 'pp_eval')
  local = stepped.local_batch(global_batch_size, process_count)
  records = found.records(split)
  start, stop = volumes.share_bounds(len(records), process_index,
                                     process_count)
  views = num_views(config)
  largest = max(eval_share_sizes(config, split, process_count))
  num_batches = math.ceil(largest * views / local)

  def video_views(index):
    record = records[index]
    return index, _views(record.load(), record.label(), record.name, config,
                         spec)

  def rows():
    with futures.ThreadPoolExecutor(WORKERS,
                                    thread_name_prefix='video-eval') as pool:
      pending = collections.deque()
      next_index = start
      while pending or next_index < stop:
        while next_index < stop and len(pending) < 2 * WORKERS:
          pending.append(pool.submit(video_views, next_index))
          next_index += 1
        index, found_views = pending.popleft().result()
        for view, row in enumerate(found_views):
          yield index, view, row

  stream = rows()
  empty = {'image': np.zeros(shape, np.float32),
           'labels': np.zeros([found.num_classes], np.float32)}
  for _ in range(num_batches):
    batch_rows, video, view = [], [], []
    for index, view_index, row in stream:
      batch_rows.append(row)
      video.append(index)
      view.append(view_index)
      if len(batch_rows) == local:
        break
    real = len(batch_rows)
    for row in batch_rows:
      if row['labels'].shape != empty['labels'].shape:
        raise ValueError(f"pp_eval gives labels of {row['labels'].shape[0]}"
                         f' classes; the dataset has {found.num_classes}.')
    batch_rows += [empty] * (local - real)
    batch = {key: np.stack([row[key] for row in batch_rows])
             for key in ('image', 'labels')}
    batch['mask'] = (np.arange(local) < real).astype(np.float32)
    batch['video'] = np.array(video + [-1] * (local - real), np.int32)
    batch['view'] = np.array(view + [-1] * (local - real), np.int32)
    yield batch


def label_counts(config, split: str) -> np.ndarray:
  """Videos per class in the whole of `split`: int64 [num_classes]."""
  found = dataset(config)
  labels = [record.label() for record in found.records(split)]
  bad = [l for l in labels if not 0 <= l < found.num_classes]
  if bad:
    raise ValueError(f'Label {bad[0]} of {found.description} is outside '
                     f'[0, num_classes={found.num_classes}).')
  return np.bincount(np.asarray(labels, np.int64),
                     minlength=found.num_classes).astype(np.int64)


def dataset_info(config) -> Dict[str, Any]:
  """`data.dataset_info` for a video dataset (indexes TFRecord shards,
  decodes no video)."""
  found = dataset(config)
  _eval_spec(config)
  return {
      'task': TASK,
      'num_classes': found.num_classes,
      'class_names': found.class_names,
      'image_shape': _static_shape(_eval_spec(config), config,
                                   found, 'pp_eval'),
      'train_image_shape': _static_shape(_train_spec(config), config,
                                         found, 'pp_train'),
      'num_examples': {
          'train': len(found.records(config.train_split)),
          'test': len(found.records(config.eval_split)),
      },
      'eval_views': (config.eval_clips, config.eval_crops),
  }
