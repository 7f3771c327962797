"""A recipe on a small local stand-in: the recipe's own preprocessing,
optimizer, schedule shape, loss, mixup and evaluators, with only sizes and
places changed, so that every file in `configs/` can run end to end in
seconds (tests/test_recipes.py).

What changes (and nothing else: `unexpected_changes` checks it against
`CHANGED_KEYS`):
- data: a recipe on a dataset that cannot be read here (ImageNet, CIFAR,
  ...) reads an image folder of generated JPEGs instead
  (`make_image_folder`: CLASSES classes, JPEGs of a few sizes), its
  preprocessing specs scaled from 224 px to 32 px (sizes rounded to
  multiples of 8) and its one-hot to CLASSES classes; the embedded digits
  stay digits. A segmentation recipe (ADE20K, Cityscapes) reads a
  segmentation folder of generated JPEGs and label maps instead
  (`make_segmentation_folder`, its splits named as ADE20K's), its sizes
  divided by DENSE_SHRINK (a 512 crop becomes 32) and its classes CLASSES;
  the built-in mosaics stay. A volume recipe (BTCV) reads a NIfTI folder
  of the built-in synthetic volumes (`make_nifti_folder`), its crops and
  model 32^3; the built-in synthetic volumes stay. A video recipe
  (Kinetics) reads a video folder of generated MPEG-4 files instead
  (`make_video_folder`), clips of VIDEO_FRAMES frames VIDEO_STRIDE apart,
  its specs' sizes scaled as an image recipe's; the built-in moving digits
  stay. The shuffle buffer shrinks.
- model: the family's tiny size (TINY) instead of the variant (over the
  variant, for the families of KEEP_VARIANT), CLASSES classes; every
  other model field (pooling, position embedding, dropout, dtype, mask
  ratio, ...) is the recipe's.
- steps: STEPS steps of BATCH_SIZE; warmup 1 step, a cooldown (when the
  recipe has one) over the rest, an rsqrt timescale of 1; evaluations and a
  checkpoint at the last step, a log line at every step.
"""

import json
import os
import re

import numpy as np
from PIL import Image

import tiny

STEPS = 3
BATCH_SIZE = 16
CLASSES = 4
TRAIN_PER_CLASS = 26  # the recipes' 25-shot evaluations need 25
VAL_PER_CLASS = 5
RESOLUTION = 32  # what 224 px becomes

# The recipes whose data can be read on any machine, offline.
LOCAL_DATASETS = ('digits', 'digit_mosaics', 'synthetic_volumes',
                  'moving_digits')
# Volumes (a NIfTI folder) a stand-in folder of synthetic volumes replaces,
# cropped to UNETR's smallest size (two 16^3 patches a side).
VOLUME_DATASETS = ('nifti_folder',)
VOLUME_CROP = 32
# Datasets of label maps a stand-in segmentation folder replaces.
DENSE_DATASETS = ('segmentation_folder', 'cityscapes')
DENSE_SHRINK = 16  # a 512 px crop -> 32 px
# Video datasets a stand-in video folder replaces, and its clips.
VIDEO_DATASETS = ('video_folder', 'video_tfrecord', 'ucf101')
VIDEO_FRAMES = 4
VIDEO_STRIDE = 2
VIDEO_LENGTH = 12  # frames per generated video, >= 4 x 2
VIDEO_PER_CLASS = {'train': 6, 'val': 2}

# Family -> the tiny size that replaces the variant (every size field).
TINY = {
    'vit': dict(width=16, depth=1, mlp_dim=32, num_heads=2),
    'mae': dict(width=16, depth=1, mlp_dim=32, num_heads=2, decoder_width=8,
                decoder_depth=1, decoder_num_heads=1),
    'mixer': dict(width=16, depth=1, tokens_mlp_dim=8, channels_mlp_dim=32),
    'swin': dict(width=8, depths=(1, 1), num_heads=(1, 2), window_size=2),
    'xcit': dict(width=16, depth=1, num_heads=2, class_attention_depth=1),
    'convmixer': dict(width=16, depth=1, kernel_size=3),
    'segformer': dict(widths=(8, 8, 8, 8), depths=(1, 1, 1, 1),
                      num_heads=(1, 1, 1, 1), decoder_width=8),
    'unetr': dict(width=16, depth=4, num_heads=1, mlp_dim=16, feature_size=2,
                  skip_blocks=(0, 1, 2)),
    # ViT's tiny size, so that the stand-in ViT's weights initialise it.
    'timesformer': dict(width=16, depth=1, mlp_dim=32, num_heads=2),
    'mvit': dict(embed_dim=8, depths=(1, 1), num_heads=(1, 1)),
}
# Families whose variant names more than sizes (MViT's clip variants: the
# class token, pooling, position embeddings): the stand-in keeps the
# variant and overrides its sizes.
KEEP_VARIANT = ('mvit',)
# Family -> patch size at RESOLUTION (a recipe that sets its own patch size,
# as the digits recipes do, keeps it).
PATCH = {'vit': 8, 'mae': 8, 'mixer': 8, 'swin': 4, 'xcit': 8,
         'convmixer': 4, 'timesformer': 8}

# Dotted config keys the stand-in may change ('*' ends a prefix).
CHANGED_KEYS = (
    'total_steps', 'batch_size', 'eval_batch_size', 'log_every_steps',
    'eval_every_steps',
    'data.name', 'data.data_dir', 'data.folder', 'data.train_split',
    'data.eval_split', 'data.pp_train', 'data.pp_eval',
    'data.shuffle_buffer', 'data.num_classes',
    'model.variant', 'model.num_classes', 'model.patch_size',
    *(f'model.{key}' for size in TINY.values() for key in size),
    'schedule.warmup_steps', 'schedule.cooldown_steps', 'schedule.timescale',
    'checkpoint.every_steps', 'checkpoint.keep_every', 'checkpoint.keep_steps',
    'init_from.path',
    'evals.*.every_steps', 'evals.*.batch_size', 'evals.*.datasets.*',
    'evals.*.crop_size', 'evals.*.stride', 'evals.*.roi_size',
    'model.image_size', 'model.num_frames', 'data.num_frames',
    'data.frame_stride',
)
_DENSE_SIZED_OPS = ('random_resize', 'random_crop', 'pad', 'rescale')

_SIZED_OPS = ('inception_crop', 'resize_small', 'resize', 'central_crop')
# The clip ops whose leading argument(s) are sizes in pixels.
_VIDEO_SIZED_OPS = ('random_resize_small', 'resize_small', 'resize',
                    'random_crop', 'center_crop', 'view_crop',
                    'random_resized_crop')


def scaled(size: int) -> int:
  """224 px -> RESOLUTION, rounded to a multiple of 8 (at least 8)."""
  return max(8, int(round(size * RESOLUTION / 224 / 8)) * 8)


def shrink_spec(spec: str, classes: int = CLASSES) -> str:
  """A preprocessing spec with its image sizes scaled and its one-hot
  over `classes`; every op, its order and its other arguments kept."""
  sized = '|'.join(_SIZED_OPS)
  spec = re.sub(rf'\b({sized})\((\d+)',
                lambda m: f'{m.group(1)}({scaled(int(m.group(2)))}', spec)
  return re.sub(r'\bonehot\((\d+)', f'onehot({classes}', spec)


def shrink_video_spec(spec: str, classes: int = CLASSES) -> str:
  """A clip spec with its pixel sizes scaled as `scaled` does (both of
  random_resize_small's) and its one-hot over `classes`."""
  ops = '|'.join(_VIDEO_SIZED_OPS)
  spec = re.sub(
      rf'\b({ops})\((\d+)(, (\d+))?',
      lambda m: f'{m.group(1)}({scaled(int(m.group(2)))}' + (
          f', {scaled(int(m.group(4)))}' if m.group(4) and
          m.group(1) == 'random_resize_small' else (m.group(3) or '')),
      spec)
  return re.sub(r'\bonehot\((\d+)', f'onehot({classes}', spec)


def make_video_folder(root: str) -> str:
  """root/{train,val}/class_<i>/<n>.mp4: CLASSES classes of MPEG-4
  videos (VIDEO_LENGTH frames of 40x48, PyAV's encoder), each class its
  own colour and a stripe pattern drifting at its own speed. Returns
  root."""
  import av  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:40, 0:48]
  for split, count in VIDEO_PER_CLASS.items():
    for label in range(CLASSES):
      directory = os.path.join(root, split, f'class_{label}')
      os.makedirs(directory, exist_ok=True)
      for index in range(count):
        colour = np.array([60 * label + 40, 200 - 40 * label, 120])
        frames = []
        for t in range(VIDEO_LENGTH):
          stripes = ((x + y + (label + 1) * t) // 4) % 2
          image = (colour * (0.5 + 0.5 * stripes[..., None])
                   + rng.normal(0, 8, (40, 48, 3)))
          frames.append(np.clip(image, 0, 255).astype(np.uint8))
        with av.open(os.path.join(directory, f'{index}.mp4'), 'w') as out:
          stream = out.add_stream('mpeg4', rate=10)
          stream.width, stream.height, stream.pix_fmt = 48, 40, 'yuv420p'
          for frame in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame,
                                                             'rgb24')))
          out.mux(stream.encode())
  return root


def shrink_dense_spec(spec: str) -> str:
  """A segmentation spec with the sizes of its sizing ops divided by
  DENSE_SHRINK; every op, its order and its other arguments kept."""
  def shrink_sizes(match):
    sizes = re.sub(r'\b(\d{3,})\b',
                   lambda m: str(max(8, int(m.group(1)) // DENSE_SHRINK)),
                   match.group(2), count=0)
    return f'{match.group(1)}({sizes}'
  # The leading size argument(s): up to the first ratio (a float) or
  # keyword.
  ops = '|'.join(_DENSE_SIZED_OPS)
  return re.sub(rf'\b({ops})\(((?:\(\d+, \d+\)|\d+))', shrink_sizes,
                spec)


def make_nifti_folder(root: str) -> str:
  """root/imagesTr, root/labelsTr and a dataset.json (MSD / BTCV layout):
  the first synthetic volumes (vit_jax/data/synthetic_volumes.py) as
  .nii.gz files of coarser voxels, 3 for 'training' and 1 for 'validation', labels
  0..NUM_CLASSES - 1 named. Returns root."""
  import nibabel  # pylint: disable=g-import-not-at-top
  from vit_jax.data import synthetic_volumes  # pylint: disable=g-import-not-at-top
  entries = []
  for index in range(4):
    image, label, _ = synthetic_volumes.volume('train', index)
    # Voxels of 2 x 2 x 3 mm, so BTCV's resampling to 1.5 x 1.5 x 2 mm
    # enlarges the volumes (40-56 voxels a side) past its 32^3 crops.
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    for kind, array in (('imagesTr', image[..., 0]),
                        ('labelsTr', label.astype(np.uint8))):
      os.makedirs(os.path.join(root, kind), exist_ok=True)
      nibabel.save(nibabel.Nifti1Image(array, affine),
                   os.path.join(root, kind, f'case{index}.nii.gz'))
    entries.append({'image': f'./imagesTr/case{index}.nii.gz',
                    'label': f'./labelsTr/case{index}.nii.gz'})
  with open(os.path.join(root, 'dataset.json'), 'w') as f:
    json.dump({'training': entries[:3], 'validation': entries[3:],
               'labels': dict(enumerate(synthetic_volumes.CLASS_NAMES))}, f)
  return root


def shrink_volume_spec(spec: str) -> str:
  """A volume spec with its crop sizes VOLUME_CROP."""
  return re.sub(r'\b(rand_crop_pos_neg|rand_crop|center_crop)\((\d+)',
                lambda m: f'{m.group(1)}({VOLUME_CROP}', spec)


def make_segmentation_folder(root: str) -> str:
  """root/images/{training,validation}/<n>.jpg and
  root/annotations/.../<n>.png (ADEChallengeData2016's layout): JPEGs of a
  few sizes and label maps of 0 (ADE20K's 'other', ignored after
  reduce_labels) and classes 1..CLASSES, each a colour. Returns root."""
  rng = np.random.default_rng(1)
  colours = rng.integers(0, 256, (CLASSES + 1, 3))
  for split, count in (('training', 12), ('validation', 3)):
    for kind in ('images', 'annotations'):
      os.makedirs(os.path.join(root, kind, split), exist_ok=True)
    for index in range(count):
      height, width = rng.integers(36, 49, size=2)
      label_map = np.zeros((height, width), np.uint8)
      for label in range(1, CLASSES + 1):  # a box of each class
        top, left = rng.integers(0, height - 8), rng.integers(0, width - 8)
        label_map[top:top + 12, left:left + 12] = label
      image = colours[label_map] + rng.normal(0, 12, (height, width, 3))
      Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
          os.path.join(root, 'images', split, f'{index}.jpg'), quality=90)
      Image.fromarray(label_map).save(
          os.path.join(root, 'annotations', split, f'{index}.png'))
  return root


def same_ops(spec_a: str, spec_b: str) -> bool:
  """Whether two specs apply the same ops in the same order."""
  def ops(spec):
    return [part.split('(')[0].strip() for part in spec.split('|')]
  return ops(spec_a) == ops(spec_b)


def make_image_folder(root: str) -> str:
  """root/{train,validation}/class_<i>/<n>.jpg: CLASSES classes of JPEGs
  (sizes 36..48 px, portrait and landscape, each class its own colour and
  stripe period so the classes are separable). Returns root."""
  rng = np.random.default_rng(0)
  for split, count in (('train', TRAIN_PER_CLASS),
                       ('validation', VAL_PER_CLASS)):
    for label in range(CLASSES):
      directory = os.path.join(root, split, f'class_{label}')
      os.makedirs(directory, exist_ok=True)
      for index in range(count):
        height, width = rng.integers(36, 49, size=2)
        y, x = np.mgrid[0:height, 0:width]
        stripes = ((x + y) // (label + 2)) % 2
        colour = np.array([60 * label + 40, 200 - 40 * label, 120])
        image = (colour * (0.5 + 0.5 * stripes[..., None])
                 + rng.normal(0, 12, (height, width, 3)))
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(
            os.path.join(directory, f'{index}.jpg'), quality=90)
  return root


def documented_args(name: str):
  """configs/NAME.py's ARGS: the variant arguments it documents."""
  module = tiny.load_module(name)
  return tuple(module.ARGS)


def stand_in(config, folder: str, data_dir: str,
             segmentation_folder: str = 'SEGMENTATION_FOLDER',
             nifti_folder: str = 'NIFTI_FOLDER',
             video_folder: str = 'VIDEO_FOLDER'):
  """`config` (a recipe's get_config result, changed in place and returned)
  on the stand-in described in the module docstring."""
  local = config.data.name in LOCAL_DATASETS
  config.total_steps = STEPS
  config.batch_size = BATCH_SIZE
  if config.get('eval_batch_size') is not None:
    config.eval_batch_size = BATCH_SIZE
  config.log_every_steps = 1
  if config.get('eval_every_steps') is not None:
    config.eval_every_steps = STEPS

  data = config.data
  if local:
    data.data_dir = data_dir
    classes = config.model.get('num_classes')
  elif data.name in VOLUME_DATASETS:
    from vit_jax.data import synthetic_volumes  # pylint: disable=g-import-not-at-top
    data.folder = nifti_folder
    data.train_split = 'training'
    data.eval_split = 'validation'
    data.pp_train = shrink_volume_spec(data.pp_train)
    data.pp_eval = shrink_volume_spec(data.pp_eval)
    classes = synthetic_volumes.NUM_CLASSES
    config.model.image_size = VOLUME_CROP
  elif data.name in VIDEO_DATASETS:
    data.name = 'video_folder'
    data.folder = video_folder
    data.train_split = 'train'
    data.eval_split = 'val'
    data.num_frames = config.model.num_frames = VIDEO_FRAMES
    data.frame_stride = VIDEO_STRIDE
    data.pp_train = shrink_video_spec(data.pp_train)
    data.pp_eval = shrink_video_spec(data.pp_eval)
    classes = CLASSES
    if config.model.get('image_size') is not None:
      config.model.image_size = RESOLUTION
  elif data.name in DENSE_DATASETS:
    data.name = 'segmentation_folder'
    data.folder = segmentation_folder
    data.train_split = 'training'
    data.eval_split = 'validation'
    # The folder's label maps hold 0..CLASSES: CLASSES classes once
    # reduce_labels makes 0 the ignored 'other' (ADE20K), else one more.
    classes = CLASSES + ('reduce_labels' not in data.pp_train)
    data.num_classes = classes
    data.pp_train = shrink_dense_spec(data.pp_train)
    data.pp_eval = shrink_dense_spec(data.pp_eval)
  else:
    data.name = 'image_folder'
    data.folder = folder
    data.train_split = 'train'
    data.eval_split = 'validation'
    data.pp_train = shrink_spec(data.pp_train)
    data.pp_eval = shrink_spec(data.pp_eval)
    classes = CLASSES
  if data.get('shuffle_buffer', 0) > 64:
    data.shuffle_buffer = 64

  model = config.model
  family = model.name
  if model.get('variant') is not None and family not in KEEP_VARIANT:
    model.variant = None
  if model.get('patch_size') is None and family in PATCH:
    model.patch_size = PATCH[family]
  model.update(TINY[family])
  if 'num_classes' in model or family != 'mae':
    model.num_classes = classes

  schedule = config.schedule
  if schedule.get('warmup_steps'):
    schedule.warmup_steps = 1
  if schedule.get('cooldown_steps'):
    schedule.cooldown_steps = STEPS - schedule.get('warmup_steps', 0)
  if schedule.get('timescale') is not None:
    schedule.timescale = 1

  checkpoint = config.checkpoint
  checkpoint.every_steps = STEPS
  if checkpoint.get('keep_every') is not None:
    checkpoint.keep_every = None
  if checkpoint.get('keep_steps'):
    checkpoint.keep_steps = ()

  for entry in (config.get('evals') or {}).values():
    entry.every_steps = STEPS
    if entry.get('batch_size') is not None:
      entry.batch_size = BATCH_SIZE
    for key in ('crop_size', 'stride'):
      if entry.get(key) is not None and not local:
        entry[key] = max(1, entry[key] // DENSE_SHRINK)
    if entry.get('roi_size') is not None and not local:
      entry.roi_size = VOLUME_CROP
    for key, dataset in list((entry.get('datasets') or {}).items()):
      if dataset['name'] in LOCAL_DATASETS:
        entry.datasets[key] = {**dataset.to_dict(), 'data_dir': data_dir} if (
            hasattr(dataset, 'to_dict')) else {**dataset, 'data_dir': data_dir}
        continue
      dataset = dict(dataset.to_dict() if hasattr(dataset, 'to_dict')
                     else dataset)
      dataset.update(name='image_folder', folder=folder,
                     train_split='train', test_split='validation',
                     pp=shrink_spec(dataset['pp']))
      entry.datasets[key] = dataset
  return config


def _flat(config) -> dict:
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.flat_items(json.loads(config.to_json_best_effort()))


def _allowed(key: str) -> bool:
  for pattern in CHANGED_KEYS:
    regex = re.escape(pattern).replace(r'\*', '[^.]+')
    if re.fullmatch(regex + r'(\..+)?' if pattern.endswith('*') else regex,
                    key):
      return True
  return False


def unexpected_changes(before, after) -> list:
  """Dotted keys that differ between two configs and are not in
  CHANGED_KEYS."""
  flat_before, flat_after = _flat(before), _flat(after)
  return sorted(key for key in set(flat_before) | set(flat_after)
                if flat_before.get(key, '<absent>') !=
                flat_after.get(key, '<absent>') and not _allowed(key))
