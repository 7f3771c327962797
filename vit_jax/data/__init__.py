"""The input pipeline: datasets by name, preprocessing specs, and the train
and eval iterators the train loop consumes.

    info = data.dataset_info(config.data)
    for batch in data.train_iterator(config.data, 1024, seed=0,
                                     start_step=step):
      ...  # batch['image'] float32 [B, H, W, C], batch['labels'] [B, K]
    for batch in data.eval_iterator(config.data, 'test', 1024):
      ...  # plus batch['mask'] float32 [B]: 0 on padding rows
    counts = data.label_counts(config.data, 'train')  # int64 [num_classes]
    for example in data.eval_examples(config.data, 'validation'):
      ...  # segmentation: one image, its label map at original resolution

Segmentation ('task' 'segmentation' in `dataset_info`): the datasets
'segmentation_folder', 'digit_mosaics' and the TFDS datasets of
`sources.DENSE_TFDS` ('oxford_iiit_pet', 'cityscapes') give batches
{'image': float32 [B, H, W, C], 'label_map': int32 [B, H, W]} with values in
[0, num_classes) or IGNORE_INDEX (255); eval batches add 'mask', and their
padding rows have label maps of 255. `eval_examples` yields one example at
a time with its label map at the dataset's original resolution, for
evaluators that resize their logits to it. A label map whose size differs
from its image's, or with a value outside [0, num_classes) that is not 255
after preprocessing, raises `DenseLabelError` naming the file. mixup and
CutMix are for image-level labels and are refused for dense tasks.

Volumes ('task' 'volume_segmentation'): 'nifti_folder' and
'synthetic_volumes' are `volumes.py`'s NumPy pipeline (no tf.data): batches
{'image': float32 [B, D, H, W, C], 'label_map': int32 [B, D, H, W]} of
random crops, values in [0, num_classes) (no ignore index); `eval_examples`
yields whole volumes after pp_eval, label map on the image's grid.

Video ('task' 'video_classification'): 'moving_digits' (built in),
'video_folder', 'video_tfrecord' and TFDS video datasets ('ucf101') are
`video.py`'s NumPy pipeline, chosen by the name or by `num_frames` set:
train batches {'image': float32 [B, T, H, W, C], 'labels': [B, K]}; eval
batches one row per view of a video (eval_clips x eval_crops views) with
'mask', 'video' (int32, the video's index in the split) and 'view' (int32)
added. A video that does not decode raises `CorruptVideoError`, one shorter
than num_frames x frame_stride `ShortVideoError` (a CorruptVideoError),
both naming the file.

Both iterators are `pipeline.BatchIterator`s: an image file of an image
folder that cannot be decoded raises `sources.CorruptImageError` (a
ValueError) naming the file and the split, and `iterator.skipped_files` lists
the corrupt files that `skip_corrupt` left out of this process's share.

TensorFlow runs the pipeline on the CPU. It is imported only when one of
these functions is called (never by importing this package), and hidden from
GPUs (see `tensorflow_cpu.py`), so models, optimizers and steps run without
it (docs/DESIGN.md).

`data_config` fields, with `default_config()`'s values:
  name: 'digits' (embedded, prepared offline on first use), 'image_folder',
      or any TFDS dataset name, prepared in `data_dir`; for segmentation
      'segmentation_folder', 'digit_mosaics' (built in), 'oxford_iiit_pet'
      or 'cityscapes' (TFDS, prepared); for volumes 'nifti_folder' or
      'synthetic_volumes' (built in); for video 'moving_digits' (built
      in), 'video_folder', 'video_tfrecord' or a TFDS video dataset.
  data_dir: TFDS data directory; None = TFDS's default (TFDS_DATA_DIR or
      ~/tensorflow_datasets).
  folder: root of an image folder, FOLDER/SPLIT/CLASS/*.png|jpg (name
      'image_folder'), or of a segmentation folder, FOLDER/images/SPLIT/
      *.jpg|png with FOLDER/annotations/SPLIT/*.png paired by file stem
      (name 'segmentation_folder', as ADEChallengeData2016: splits
      'training', 'validation'), or of an MSD / BTCV dataset.json (name
      'nifti_folder'), or of videos, FOLDER/SPLIT/CLASS/VIDEO (a file or a
      frame folder; name 'video_folder'), or of SPLIT-*.tfrecord* shards
      of DMVR SequenceExamples (name 'video_tfrecord').
  num_classes: classes of the label maps, required for
      'segmentation_folder' (a folder cannot tell) and 'video_tfrecord';
      elsewhere None, or the dataset's own count (None).
  class_names: names of those classes, replacing the dataset's (None).
  train_split, eval_split: TFDS split strings; slices such as 'train[:90%]'
      and sums such as 'train+test' are allowed ('train', 'test').
  pp_train, pp_eval: preprocessing specs, see `preprocess.py`
      ('value_range(-1, 1)|onehot(10)').
  shuffle_buffer: examples in the shuffle buffer when the train split is
      streamed from disk (50_000).
  prefetch: batches prepared ahead of the consumer (2).
  mixup_alpha: mixup's Beta(alpha, alpha); 0 turns mixup off (0.0).
  cutmix_alpha: CutMix's Beta(alpha, alpha); 0 turns it off (0.0). With
      both alphas > 0 each batch gets one of the two, with probability 1/2.
  cache: hold the process's train share in memory -- decoded examples when
      their shape is fixed, serialized records otherwise -- for exact
      per-epoch permutations and instant resume; for small datasets such as
      digits (False).
  skip_corrupt: for 'image_folder' only: check each image file of a share
      (signature and end marker, two small reads, no decoding; see
      `sources.py`) before the pipeline is built, and leave out those that
      fail, with a warning naming how many and the first few; iterators list
      them in `skipped_files`. Done up front, not by dropping failures in
      tf.data, so batches stay functions of (seed, process, step) and
      resumes stay exact. False: a file that does not decode stops the run
      with `CorruptImageError` naming it (False).
  num_frames: frames per clip; None = not video (None).
  frame_stride: frames between a clip's frames (1).
  eval_clips: temporal clips per test video, uniformly spaced (1).
  eval_crops: spatial crops per test clip: 1 (the centre) or 3 (start,
      centre, end of the longer side; pp_eval's view_crop) (1).
"""

from typing import Any, Dict, Iterator, List, Mapping, Optional

import ml_collections
import numpy as np

Batch = Dict[str, np.ndarray]

# The label-map value that no loss or metric counts (ADE20K's "other" after
# reduce_labels, Cityscapes' void classes, crop padding).
IGNORE_INDEX = 255


class CorruptVideoError(ValueError):
  """A video (file, frame folder or record) that does not decode.

  Attributes:
    path: the file, frame folder or FILE:OFFSET of the record.
  """

  def __init__(self, message: str, path: str):
    super().__init__(message)
    self.path = path


class ShortVideoError(CorruptVideoError):
  """A video with fewer frames than a clip needs (num_frames x
  frame_stride); the message names the file and both counts."""


class DenseLabelError(ValueError):
  """A label map that does not fit its image or its classes.

  Attributes:
    path: the file (or record id) of the example.
  """

  def __init__(self, message: str, path: str):
    super().__init__(message)
    self.path = path


def default_config() -> ml_collections.ConfigDict:
  """The data_config fields and their defaults (digits, 8x8 grey images)."""
  return ml_collections.ConfigDict({
      'name': 'digits',
      'data_dir': None,
      'folder': None,
      'train_split': 'train',
      'eval_split': 'test',
      'pp_train': 'value_range(-1, 1)|onehot(10)',
      'pp_eval': 'value_range(-1, 1)|onehot(10)',
      'shuffle_buffer': 50_000,
      'prefetch': 2,
      'mixup_alpha': 0.0,
      'cutmix_alpha': 0.0,
      'cache': False,
      'skip_corrupt': False,
      'num_classes': None,
      'class_names': None,
      'num_frames': None,
      'frame_stride': 1,
      'eval_clips': 1,
      'eval_crops': 1,
  })


def resolve_config(data_config: Mapping[str, Any]) -> ml_collections.ConfigDict:
  """`data_config` over the defaults; unknown fields and bad values raise."""
  defaults = default_config()
  given = dict(data_config.items())
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    raise ValueError(f'Unknown data_config fields {unknown}; valid fields: '
                     f'{sorted(defaults)}.')
  resolved = ml_collections.ConfigDict(
      {**defaults.to_dict(), **given})
  if not isinstance(resolved.name, str) or not resolved.name:
    raise ValueError(f'data_config.name must be a dataset name, got '
                     f'{resolved.name!r}.')
  for field in ('mixup_alpha', 'cutmix_alpha'):
    if resolved[field] < 0:
      raise ValueError(f'data_config.{field} must be >= 0 (0 = off), got '
                       f'{resolved[field]}.')
  if resolved.shuffle_buffer < 1:
    raise ValueError(f'data_config.shuffle_buffer must be >= 1, got '
                     f'{resolved.shuffle_buffer}.')
  if not isinstance(resolved.skip_corrupt, bool):
    raise ValueError(f'data_config.skip_corrupt must be True or False, got '
                     f'{resolved.skip_corrupt!r}.')
  if resolved.skip_corrupt and resolved.name != 'image_folder':
    raise ValueError(
        f"data_config.skip_corrupt=True applies to name='image_folder' "
        f'only (TFDS datasets hold records, not image files), got name '
        f'{resolved.name!r}.')
  if resolved.num_classes is not None and (
      not isinstance(resolved.num_classes, int) or resolved.num_classes < 2):
    raise ValueError(f'data_config.num_classes must be an int >= 2 or None, '
                     f'got {resolved.num_classes!r}.')
  if resolved.class_names is not None and (
      isinstance(resolved.class_names, str) or
      not all(isinstance(n, str) for n in resolved.class_names)):
    raise ValueError(f'data_config.class_names must be a list of str or '
                     f'None, got {resolved.class_names!r}.')
  if resolved.prefetch < 0:
    raise ValueError(f'data_config.prefetch must be >= 0, got '
                     f'{resolved.prefetch}.')
  _check_video_fields(resolved)
  return resolved


def _positive_int(value) -> bool:
  return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check_video_fields(resolved) -> None:
  if resolved.num_frames is not None and not _positive_int(
      resolved.num_frames):
    raise ValueError(f'data_config.num_frames must be an int >= 1 (frames '
                     f'per clip) or None (not video), got '
                     f'{resolved.num_frames!r}.')
  for field in ('frame_stride', 'eval_clips'):
    if not _positive_int(resolved[field]):
      raise ValueError(f'data_config.{field} must be an int >= 1, got '
                       f'{resolved[field]!r}.')
  if resolved.eval_crops not in (1, 3) or isinstance(resolved.eval_crops,
                                                     bool):
    raise ValueError(f'data_config.eval_crops must be 1 (the centre) or 3 '
                     f'(start, centre, end of the longer side), got '
                     f'{resolved.eval_crops!r}.')
  if resolved.num_frames is None and (
      resolved.frame_stride, resolved.eval_clips, resolved.eval_crops) != (
          1, 1, 1):
    raise ValueError(
        f'data_config.frame_stride, eval_clips and eval_crops are for video '
        f'(num_frames set); got {resolved.frame_stride}, '
        f'{resolved.eval_clips}, {resolved.eval_crops} with num_frames=None.')


def _processes(process_index: Optional[int],
               process_count: Optional[int]) -> tuple:
  import jax  # pylint: disable=g-import-not-at-top
  if process_index is None:
    process_index = jax.process_index()
  if process_count is None:
    process_count = jax.process_count()
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} is not in [0, '
                     f'process_count={process_count}).')
  return process_index, process_count


def _task(config) -> str:
  """The task of the dataset `config.name` names: 'classification' or
  'segmentation' (2-D label maps)."""
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  return sources.task(config.name)


def _volumes(config):
  """The module of 3-D volume datasets (volumes.py, a NumPy pipeline) when
  `config.name` is one of them, else None."""
  from vit_jax.data import volumes  # pylint: disable=g-import-not-at-top
  return volumes if volumes.handles(config) else None


def _video(config):
  """The module of video datasets (video.py, a NumPy pipeline) when
  `config` asks for video (a video dataset, or num_frames set), else None."""
  from vit_jax.data import video  # pylint: disable=g-import-not-at-top
  return video if video.handles(config) else None


def dataset_info(data_config) -> Dict[str, Any]:
  """What a model and a schedule need to know about the dataset.

  Returns:
    dict(task='classification' | 'segmentation', num_classes=int,
    image_shape=(H, W, C) of images after pp_eval (None for a side that
    varies), num_examples={'train': examples in train_split, 'test':
    examples in eval_split}), over all processes, counting files
    `skip_corrupt` may leave out (no file is read). For 'segmentation' also
    ignore_index (IGNORE_INDEX), class_names (list of str, or None) and
    train_image_shape ((H, W, C) after pp_train, static). For video
    ('video_classification'): class_names, image_shape and
    train_image_shape (T, H, W, C) (static), num_examples in videos, and
    eval_views (eval_clips, eval_crops); see `video.dataset_info`.

  Raises:
    ValueError: for a dataset with fewer than 2 classes, or a segmentation
      pp_train whose output size is not static.
  """
  from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = resolve_config(data_config)
  volumes = _volumes(config)
  if volumes:
    return volumes.dataset_info(config)
  video = _video(config)
  if video:
    return video.dataset_info(config)
  task = _task(config)
  builder = sources.get_builder(config)
  info = {
      'task': task,
      'num_classes': sources.num_classes(builder),
      'image_shape': pipeline.image_shape(builder, config.eval_split,
                                          config.pp_eval),
      'num_examples': {
          'train': sources.num_examples(builder, config.train_split),
          'test': sources.num_examples(builder, config.eval_split),
      },
  }
  if task == 'segmentation':
    names = builder.class_names
    info.update(ignore_index=IGNORE_INDEX,
                class_names=list(names) if names is not None else None,
                train_image_shape=pipeline.train_image_shape(config, builder))
  return info


def num_classes(data_config) -> int:
  """The dataset's number of classes, without running any preprocessing
  (for callers that build their own pp spec, e.g. few-shot evaluation);
  fewer than 2 raise ValueError."""
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = resolve_config(data_config)
  volumes = _volumes(config)
  if volumes:
    return volumes.dataset(config).num_classes
  video = _video(config)
  if video:
    return video.dataset(config).num_classes
  return sources.num_classes(sources.get_builder(config))


def label_counts(data_config, split: str) -> np.ndarray:
  """Examples per class in the whole of `split` (all processes' shares).

  No image is decoded: an image folder's labels come from its file index
  (with `skip_corrupt`, less the files it leaves out, which are checked);
  a TFDS dataset's records are read and only their 'label' parsed.

  Args:
    data_config: the data config (`default_config()`'s fields).
    split: a TFDS split string, e.g. 'train' or 'train[:90%]'.

  Returns:
    int64 [num_classes]: entry c counts the examples of class c.
  """
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = resolve_config(data_config)
  volumes = _volumes(config)
  if volumes:
    return volumes.label_counts(config, split)  # voxels per class
  video = _video(config)
  if video:
    return video.label_counts(config, split)  # videos per class
  builder = sources.get_builder(config)
  return sources.label_counts(builder, split, config.skip_corrupt)


def train_iterator(data_config, global_batch_size: int, seed: int,
                   start_step: int = 0, process_index: Optional[int] = None,
                   process_count: Optional[int] = None) -> Iterator[Batch]:
  """Infinite iterator of this process's train batches, from `start_step`.

  Each process reads its own contiguous share of `train_split` and yields
  {'image': float32 [B, H, W, C], 'labels': float32 [B, num_classes]}
  ('label_map' int32 [B, H, W] instead of 'labels' for segmentation) with
  B = global_batch_size / process_count. Order, augmentation and mixup are
  functions of (seed, process, step): `start_step=n` yields exactly the
  batches an uninterrupted iterator yields from its n-th on, without
  preprocessing the skipped ones (see `pipeline.py`).

  process_index, process_count: default to jax.process_index() / count().
  """
  from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = resolve_config(data_config)
  process_index, process_count = _processes(process_index, process_count)
  volumes = _volumes(config)
  if volumes:
    return volumes.TrainBatches(config, global_batch_size, seed, start_step,
                                process_index, process_count)
  video = _video(config)
  if video:
    return video.TrainBatches(config, global_batch_size, seed, start_step,
                              process_index, process_count)
  pipeline.local_batch_size(global_batch_size, process_count)  # Checks early.
  builder = sources.get_builder(config)
  return pipeline.train_batches(config, builder, global_batch_size, seed,
                                start_step, process_index, process_count)


def eval_iterator(data_config, split: str, global_batch_size: int,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[Batch]:
  """One pass over `split` (this process's share), padded to full batches.

  Yields {'image': float32 [B, H, W, C], 'labels': float32 [B, K],
  'mask': float32 [B]} with B = global_batch_size / process_count; 'mask'
  is 1 for real examples and 0 for padding rows (zeros), so every example
  counts exactly once. Segmentation batches have 'label_map' int32
  [B, H, W] (255 on padding rows) instead of 'labels', and need a pp_eval
  that gives every image and label map one fixed size (else a ValueError
  points to `eval_examples`). All processes yield the same number of batches.
  Files `skip_corrupt` leaves out are not counted (see `skipped_files`).
  """
  from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = resolve_config(data_config)
  process_index, process_count = _processes(process_index, process_count)
  volumes = _volumes(config)
  if volumes:
    return volumes.eval_batches(config, split, global_batch_size,
                                process_index, process_count)
  video = _video(config)
  if video:
    return video.eval_batches(config, split, global_batch_size,
                              process_index, process_count)
  pipeline.local_batch_size(global_batch_size, process_count)
  builder = sources.get_builder(config)
  return pipeline.eval_batches(config, builder, split, global_batch_size,
                               process_index, process_count)


def eval_examples(data_config, split: str,
                  process_index: Optional[int] = None,
                  process_count: Optional[int] = None) -> Iterator[Batch]:
  """This process's share of `split`, one example at a time (segmentation).

  Yields {'image': float32 [H, W, C] after pp_eval, 'label_map': int32
  [h, w] at the dataset's original resolution, 'name': str (the annotation
  file, or the record id)}. The label map is the stored one with pp_eval's
  label-value mapping (e.g. reduce_labels) but none of its geometry, so
  metrics are computed where the dataset's annotations are (evaluators
  resize their logits to it, as mmseg does); see `pipeline.eval_examples`.
  Shares are those of `eval_iterator` (`eval_share_sizes`).
  """
  from vit_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = resolve_config(data_config)
  process_index, process_count = _processes(process_index, process_count)
  volumes = _volumes(config)
  if volumes:
    return volumes.eval_examples(config, split, process_index, process_count)
  if _video(config):
    raise ValueError('eval_examples is for segmentation datasets; video '
                     'datasets are evaluated with eval_iterator (one row '
                     'per view).')
  builder = sources.get_builder(config)
  _dense_only(config, builder, 'eval_examples')
  return pipeline.eval_examples(config, builder, split, process_index,
                                process_count)


def eval_share_sizes(data_config, split: str,
                     process_count: Optional[int] = None) -> List[int]:
  """Examples of `split` in each process's share, in process order (so
  every process can make the same number of jitted calls)."""
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = resolve_config(data_config)
  _, process_count = _processes(0, process_count)
  volumes = _volumes(config)
  if volumes:
    return volumes.eval_share_sizes(config, split, process_count)
  video = _video(config)
  if video:
    return video.eval_share_sizes(config, split, process_count)
  total = sources.num_examples(sources.get_builder(config), split)
  bounds = [sources.share_bounds(total, i, process_count)
            for i in range(process_count)]
  return [end - begin for begin, end in bounds]


def _dense_only(config, builder, what: str) -> None:
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  if _task(config) == 'classification':
    raise ValueError(f'{what} is for segmentation datasets; '
                     f'{sources.describe(builder)} is a classification '
                     f'dataset (use eval_iterator).')
