"""Classify image files with a trained run or with pretrained weights.

    python -m vit_jax.predict --workdir=DIR IMAGE_OR_FOLDER... [--top_k=5]
        [--csv=PATH] [--attention_plot] [--checkpoint_step=N]
    python -m vit_jax.predict --pretrained=NAME IMAGE_OR_FOLDER... [...]

--workdir: the run's model (its config.json, or --config as in
`vit_jax.evaluate`), the variables of its latest (or --checkpoint_step)
checkpoint, its own evaluation preprocessing (config.data.pp_eval, applied
with `vit_jax.data.preprocess` to the decoded file) and its dataset's class
names (TFDS's label names; an image folder's class folders; '0'..'9' for
digits). --pretrained: `vit_jax.pretrained.load(NAME)`'s model, its
preprocessing exactly as timm's evaluation transform (`pretrained_spec`:
resize to image_size / crop_pct, crop, mean / std normalisation, pixel for
pixel) and its label names; ImageNet-1k's
classes (a 1000-class head without names, or names that are WordNet ids
as timm's checkpoints have) are shown by their readable names
(`vit_jax.data.labels`).

Each IMAGE is printed with its top-k classes and probabilities (sigmoid
for runs trained with 'sigmoid_xent', softmax otherwise). A FOLDER is
batch mode: its images (recursively, in sorted order) go to a CSV (--csv,
default predictions.csv): path, then the name and probability of each of
the top k. --attention_plot (ViT only) writes the images with their
attention rollout and each block's class-token attention
(`vit_jax.attention_maps`) to WORKDIR/plots/attention_<step>.png, or
--plot_dir/attention_<NAME>.png for --pretrained.

A --workdir whose run segments (config.objective 'segmentation') writes
masks instead, into --output_dir: per image FILE, FILE_mask.png (the class
index of each pixel as 8-bit grey, at the file's own size) and
FILE_overlay.png (the classes' colours over the image); an image found in
a folder keeps its path below that folder. The masks are computed as the
run's first `kind='segmentation'` evaluator computes them (its mode,
crop_size, stride; 'whole' without one): `segment_files`. Volumes (UNETR
runs) are not supported yet.

A --workdir whose run classifies clips (config.data.num_frames set) takes
video files (VIDEO_EXTENSIONS) and frame folders instead of images, each
scored by its test views' averaged probabilities (`predict_videos`).

Exit status: 0 done; 1 an error (a missing path, a file that is not an
image or does not decode, an unusable run: one line naming it); 2 a bad
command line.
"""

import csv
import io
import math
import os
import re
import sys
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import attention_maps
from vit_jax import build
from vit_jax import checkpoint
from vit_jax import config as config_lib
from vit_jax import layout
from vit_jax import paths
from vit_jax import workdir as workdir_lib
from vit_jax.data import labels
from vit_jax.evaluate import reconstruction
from vit_jax.evaluate import segmentation
from vit_jax.models import vit

# What TensorFlow's decode_image reads.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.gif', '.bmp')
CROP_MODES = ('center', 'squash', 'border')  # timm's evaluation crop modes
# The video files predict looks for in folders (what PyAV commonly reads).
VIDEO_EXTENSIONS = ('.mp4', '.avi', '.webm', '.mkv', '.mov')
DEFAULT_CSV = 'predictions.csv'


class Predictor(NamedTuple):
  """A classifier ready for files.

  model, variables: `logits, aux = model.apply(variables, images)`.
  preprocess: encoded file bytes -> float32 [H, W, C], the model's input.
  class_names: one per output.
  multilabel: sigmoid probabilities (else softmax).
  family: the model family ('vit', ...).
  description: what was loaded, for messages.
  plot_name: the suffix of the attention plot's file name.
  plots_dir: where plots go by default (None: must be given).
  video: a video classifier: `preprocess` takes a video's path (a file or
    a frame folder) and gives its test views, float32 [V, T, H, W, C],
    whose probabilities are averaged.
  """
  model: Any
  variables: Any
  preprocess: Callable[[bytes], np.ndarray]
  class_names: List[str]
  multilabel: bool
  family: str
  description: str
  plot_name: str
  plots_dir: Optional[str]
  video: bool = False


class Segmenter(NamedTuple):
  """A 2-D segmentation model ready for files.

  segment: (variables, images [B, H, W, C]) -> logits [B, H, W, K] at the
    images' size (jittable).
  decode: encoded file bytes -> uint8 [h, w, C] (the file's own pixels).
  preprocess: that decoded image -> float32 [H, W, C], the model's input.
  num_classes: K.
  mode, crop_size, stride: as the run's 'segmentation' evaluator.
  description: what was loaded, for messages.
  """
  segment: Callable
  variables: Any
  decode: Callable[[bytes], np.ndarray]
  preprocess: Callable[[np.ndarray], np.ndarray]
  num_classes: int
  mode: str
  crop_size: Optional[Tuple[int, int]]
  stride: Optional[Tuple[int, int]]
  description: str


# ----------------------------------------------------------------------------
# Inputs.


def _folder_images(folder: str) -> List[str]:
  """IMAGE_EXTENSIONS files under `folder`, sorted, hidden ones left out."""
  found = []
  for name in paths.listdir(folder):
    path = paths.join(folder, name)
    if name.startswith('.'):
      continue
    if paths.isdir(path):
      found.extend(_folder_images(path))
    elif name.lower().endswith(IMAGE_EXTENSIONS):
      found.append(path)
  return found


def list_images(inputs: Sequence[str]) -> Tuple[List[str], bool]:
  """(image paths, whether any input was a folder).

  Folders are searched recursively for IMAGE_EXTENSIONS files (sorted);
  files are taken as given. Raises FileNotFoundError naming every missing
  input, ValueError naming folders without images and files that are not
  intact images (`sources.image_file_looks_intact`: signature and end
  marker).
  """
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top  (TF)
  if not inputs:
    raise ValueError('No images given: name image files or folders.')
  missing = [path for path in inputs if not paths.exists(path)]
  if missing:
    raise FileNotFoundError(f'No such file or folder: {", ".join(missing)}')
  images, empty, folder_given = [], [], False
  for path in inputs:
    if paths.isdir(path):
      folder_given = True
      found = _folder_images(path)
      if not found:
        empty.append(path)
      images.extend(found)
    else:
      images.append(path)
  if empty:
    raise ValueError(f'No image files ({", ".join(IMAGE_EXTENSIONS)}) in '
                     f'folder {", ".join(empty)}.')
  broken = [path for path in images
            if not sources.image_file_looks_intact(path)]
  if broken:
    shown = ', '.join(broken[:10])
    more = f' and {len(broken) - 10} more' if len(broken) > 10 else ''
    raise ValueError(f'Not a readable image file (PNG, JPEG, GIF or BMP, '
                     f'complete): {shown}{more}.')
  return images, folder_given


def _is_frame_folder(folder: str) -> bool:
  """A folder of frame images (and nothing else that is a video)."""
  names = [n for n in paths.listdir(folder) if not n.startswith('.')]
  return bool(names) and all(
      n.lower().endswith(IMAGE_EXTENSIONS) and
      not paths.isdir(paths.join(folder, n)) for n in names)


def _folder_videos(folder: str) -> List[str]:
  """Video files and frame folders under `folder`, sorted."""
  found = []
  for name in sorted(paths.listdir(folder)):
    path = paths.join(folder, name)
    if name.startswith('.'):
      continue
    if paths.isdir(path):
      found.extend([path] if _is_frame_folder(path) else
                   _folder_videos(path))
    elif name.lower().endswith(VIDEO_EXTENSIONS):
      found.append(path)
  return found


def list_videos(inputs: Sequence[str]) -> Tuple[List[str], bool]:
  """(video paths, whether any input was a folder of videos).

  A file is a video as given; a folder holding only frame images is one
  video; any other folder is searched recursively for video files
  (VIDEO_EXTENSIONS) and frame folders, sorted. Raises FileNotFoundError
  naming every missing input, ValueError naming folders without videos.
  """
  if not inputs:
    raise ValueError('No videos given: name video files, frame folders or '
                     'folders of them.')
  missing = [path for path in inputs if not paths.exists(path)]
  if missing:
    raise FileNotFoundError(f'No such file or folder: {", ".join(missing)}')
  videos, empty, batch_mode = [], [], False
  for path in inputs:
    if not paths.isdir(path) or _is_frame_folder(path):
      videos.append(path)
      continue
    batch_mode = True
    found = _folder_videos(path)
    if not found:
      empty.append(path)
    videos.extend(found)
  if empty:
    raise ValueError(f'No video files ({", ".join(VIDEO_EXTENSIONS)}) or '
                     f'frame folders in folder {", ".join(empty)}.')
  return videos, batch_mode


def is_video_run(config) -> bool:
  """A run trained on clips (its data config sets num_frames)."""
  return config.data.get('num_frames') is not None


# ----------------------------------------------------------------------------
# Preprocessing.


def spec_preprocess(spec: str, channels: int,
                    decode_like_pil: bool = False) -> Callable[[bytes], Any]:
  """File bytes -> float32 [H, W, C]: decoded with `channels` channels,
  then the preprocessing spec (`vit_jax.data.preprocess`; a dummy label 0
  feeds ops such as onehot).

  decode_like_pil: JPEGs decoded with the accurate integer IDCT, as PIL
  (libjpeg's default) decodes them, for timm's pixels; TensorFlow's default
  (the fast IDCT, as TFDS decodes training data) differs by up to ~12 / 255.
  """
  decode, preprocess_decoded = _decoder(channels, decode_like_pil), (
      decoded_preprocess(spec))
  return lambda encoded: preprocess_decoded(decode(encoded))


def _decoder(channels: int, decode_like_pil: bool = False
             ) -> Callable[[bytes], Any]:
  """File bytes -> the decoded image, a uint8 tensor [H, W, channels]."""
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top

  def decode(encoded: bytes):
    if decode_like_pil and bool(tf.io.is_jpeg(encoded)):
      return tf.io.decode_jpeg(encoded, channels=channels,
                               dct_method='INTEGER_ACCURATE')
    return tf.io.decode_image(encoded, channels=channels,
                              expand_animations=False)
  return decode


def decoded_preprocess(spec: str) -> Callable[[Any], np.ndarray]:
  """A decoded uint8 image [H, W, C] -> float32 after the preprocessing
  spec (a dummy label 0 feeds ops such as onehot)."""
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top
  preprocess_fn = preprocess.build(spec)

  def apply(image):
    example = preprocess_fn({'image': tf.convert_to_tensor(image, tf.uint8),
                             'label': tf.constant(0, tf.int64)})
    return np.asarray(example['image'], np.float32)
  return apply


def pretrained_crop_spec(image_size, crop_pct: float, interpolation: str,
                         crop_mode: str = 'center',
                         mean: Sequence[float] = (0.0,)) -> str:
  """The resize and crop of timm's evaluation transform, exactly (the ops'
  timm=True: PIL's resampling, torchvision's sizes and centre): with S =
  floor(size / crop_pct) per side, 'center' resizes the shorter side to S
  (keeping the aspect ratio; a non-square size: the side needing the larger
  factor) and crops the centre; 'squash' resizes to S ignoring the aspect
  ratio, then crops; 'border' fits the image inside S, then crops, padding
  with round(255 * mean) where the image is smaller."""
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  if interpolation not in preprocess.PIL_METHODS:
    raise ValueError(f'Unknown interpolation {interpolation!r}; valid '
                     f'choices: {list(preprocess.PIL_METHODS)}')
  if crop_mode not in CROP_MODES:
    raise ValueError(f'Unknown crop_mode {crop_mode!r}; valid choices: '
                     f'{list(CROP_MODES)}')
  if not 0 < crop_pct <= 1:
    raise ValueError(f'crop_pct must lie in (0, 1], got {crop_pct!r}.')
  if isinstance(image_size, int):
    height = width = image_size
  else:
    height, width = (int(side) for side in image_size)
  scaled = (int(math.floor(height / crop_pct)),
            int(math.floor(width / crop_pct)))
  crop = f'central_crop(({height}, {width}), timm=True)'
  if crop_mode == 'squash':
    resize = f'resize({scaled}, {interpolation!r}, timm=True)'
  elif crop_mode == 'border':
    resize = (f'resize_keep_ratio({scaled}, {interpolation!r}, longest=1.0, '
              f'timm=True)')
    fill = [round(255 * float(m)) for m in np.ravel(mean)]
    crop = f'central_crop(({height}, {width}), timm=True, fill={fill})'
  elif height == width:
    resize = f'resize_small({scaled[0]}, {interpolation!r}, timm=True)'
  else:
    resize = f'resize_keep_ratio({scaled}, {interpolation!r}, timm=True)'
  return f'{resize}|{crop}'


def pretrained_spec(image_size, crop_pct: float, interpolation: str,
                    mean: Sequence[float], std: Sequence[float],
                    crop_mode: str = 'center') -> str:
  """The preprocessing spec of pretrained weights, as timm evaluates them:
  `pretrained_crop_spec`, then pixels scaled to [0, 1] and normalised with
  mean / std."""
  crop = pretrained_crop_spec(image_size, crop_pct, interpolation, crop_mode,
                              mean)
  mean = [float(m) for m in np.ravel(mean)]
  std = [float(s) for s in np.ravel(std)]
  return f'{crop}|value_range(0, 1)|normalize({mean}, {std})'


def _decode_error(path: str, error: Exception) -> ValueError:
  message = re.sub(r'\{\{.*?\}\}|\[Op:\w+\]', '',
                   getattr(error, 'message', str(error))).strip()
  return ValueError(f'Cannot decode image file {path}: {message}')


# ----------------------------------------------------------------------------
# Loading a model.


def from_workdir(workdir: str, config=None,
                 step: Optional[int] = None):
  """The classifier (a Predictor) of a training workdir at `step` (latest:
  None), or its Segmenter for a segmentation run; its config.json unless
  `config` is given."""
  paths.check_supported(workdir)
  checkpoint_dir = layout.checkpoint_dir(workdir)
  if not paths.isdir(checkpoint_dir):
    raise FileNotFoundError(f'{workdir} is not a training workdir: it has no '
                            f'checkpoints/ directory.')
  config = config_lib.resolve(config if config is not None
                              else workdir_lib.read_config(workdir))
  model = build.build_model(config.model)
  if config.objective == 'segmentation':
    return _segmenter(workdir, config, model, checkpoint_dir, step)
  num_classes = getattr(model, 'num_classes', None)
  if config.objective != 'supervised' or not num_classes:
    raise ValueError(
        f'{workdir} is a {config.objective!r} run of a {config.model.name!r} '
        f'model with {num_classes or "no"} class outputs; predict needs a '
        f'supervised classifier (objective "supervised", num_classes > 0).')
  step = checkpoint.choose_step(checkpoint.finished_steps(checkpoint_dir),
                                step, checkpoint_dir)
  variables = checkpoint.restore_variables(checkpoint_dir, step, quiet=True)
  if is_video_run(config):
    return _video_predictor(workdir, config, model, variables, step)
  try:
    names, channels = labels.dataset_labels(config.data)
  except (ValueError, FileNotFoundError, KeyError) as error:
    message = str(error).strip().splitlines()[0] if str(error) else ''
    print(f'vit_jax.predict: warning: no class names for dataset '
          f'{config.data.name!r} ({message}); showing class indices and '
          f'decoding images as RGB.', file=sys.stderr)
    names, channels = [str(i) for i in range(num_classes)], 3
  if len(names) != num_classes:
    raise ValueError(f'Dataset {config.data.name!r} has {len(names)} class '
                     f'names but the model {num_classes} outputs.')
  return Predictor(
      model=model, variables=variables,
      preprocess=spec_preprocess(config.data.pp_eval, channels),
      class_names=names, multilabel=config.loss == 'sigmoid_xent',
      family=config.model.name,
      description=f'{workdir} at step {step}', plot_name=str(step),
      plots_dir=paths.join(workdir, layout.PLOTS))


def _video_predictor(workdir: str, config, model, variables,
                     step: int) -> Predictor:
  """A video run's classifier: each video's test views as the run's
  evaluation samples them (`data.video.eval_views`)."""
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  from vit_jax.data import video  # pylint: disable=g-import-not-at-top
  info = data.dataset_info(config.data)
  names = info.get('class_names')
  if names is None:
    names = [str(i) for i in range(model.num_classes)]
  if len(names) != model.num_classes:
    raise ValueError(f'Dataset {config.data.name!r} has {len(names)} class '
                     f'names but the model {model.num_classes} outputs.')
  grey = info['image_shape'][-1] == 1

  def views(path):
    frames = video.load_video(path)
    if grey:  # decoded as RGB; the run's frames are grey (moving_digits)
      frames = grey_frames(frames[:])
    return video.eval_views(frames, config.data, path=path)

  return Predictor(
      model=model, variables=variables, preprocess=views,
      class_names=list(names), multilabel=config.loss == 'sigmoid_xent',
      family=config.model.name, description=f'{workdir} at step {step}',
      plot_name=str(step), plots_dir=paths.join(workdir, layout.PLOTS),
      video=True)


def grey_frames(frames: np.ndarray) -> np.ndarray:
  """uint8 RGB frames [..., 3] -> grey [..., 1], ITU-R 601 luma (PIL's
  'L' weights, which sum to 1: grey frames saved as RGB come back
  exactly)."""
  luma = frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                              np.float32)
  return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def _segmenter(workdir: str, config, model, checkpoint_dir: str,
               step: Optional[int]) -> Segmenter:
  """A segmentation run's model for files, with the settings of its first
  'segmentation' evaluator (by name)."""
  if config.model.name == 'unetr':
    raise ValueError(f'{workdir} is a volume segmentation run (UNETR); '
                     f'predict does not segment volume files yet.')
  num_classes = int(getattr(model, 'num_classes', 0) or 0)
  if not 1 <= num_classes <= 256:
    raise ValueError(f'{workdir}: predict writes masks as 8-bit PNGs, which '
                     f'hold 1..256 classes; the model has {num_classes}.')
  evals = config.get('evals') or {}
  entries = [evals[name] for name in sorted(evals)
             if evals[name].get('kind') == 'segmentation']
  entry = entries[0] if entries else {}
  mode = entry.get('mode') or 'whole'
  crop = stride = None
  if mode == 'slide':
    crop = entry.get('crop_size')
    if crop is None:
      from vit_jax import data  # pylint: disable=g-import-not-at-top
      crop = data.dataset_info(config.data)['train_image_shape'][:2]
    crop = segmentation.pair('crop_size', crop)
    stride = segmentation.pair('stride', entry.get('stride') or
                               segmentation.default_stride(crop))
  step = checkpoint.choose_step(checkpoint.finished_steps(checkpoint_dir),
                                step, checkpoint_dir)
  variables = checkpoint.restore_variables(checkpoint_dir, step, quiet=True)
  return segmenter_of(config.model.name, model, variables,
                      config.data.pp_eval, num_classes, mode, crop, stride,
                      f'{workdir} at step {step}')


def segmenter_of(model_name: str, model, variables, pp_eval: str,
                 num_classes: int, mode: str = 'whole', crop_size=None,
                 stride=None, description: str = 'a model') -> Segmenter:
  """A Segmenter of a model whose logits the run's evaluators take
  (`build.dense_logits`: SegFormer's 1/4 grid upsampled)."""

  from vit_jax import export  # pylint: disable=g-import-not-at-top

  def segment(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return build.dense_logits(model_name, logits, images.shape[1:-1]).astype(
        jnp.float32)
  # Files decode to the channels the model takes (a grey model's: grey).
  channels = export.input_channels(variables)
  return Segmenter(
      segment=segment, variables=variables, decode=_decoder(channels),
      preprocess=decoded_preprocess(pp_eval), num_classes=num_classes,
      mode=mode, crop_size=crop_size, stride=stride, description=description)


def _plot_name(name: str) -> str:
  """A local directory's own name, or the Hub name with '/' as '_'."""
  if os.path.isdir(name):
    name = os.path.basename(os.path.normpath(name))
  return re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_') or 'pretrained'


def loaded_spec(loaded) -> Tuple[str, int]:
  """How a `pretrained.load` result is evaluated: the spec of its own
  preprocessing (`pretrained_spec`) and the image channels its weights take,
  which files decode to whatever they hold (a digits model exported in
  timm's layout reads grey images)."""
  from vit_jax import export  # pylint: disable=g-import-not-at-top
  pre = loaded.preprocessing
  spec = pretrained_spec(loaded.image_size, pre.crop_pct, pre.interpolation,
                         pre.mean, pre.std, pre.crop_mode)
  return spec, export.input_channels(loaded.variables)


def from_pretrained(name: str) -> Predictor:
  """The classifier `vit_jax.pretrained.load(name)` gives."""
  try:
    from vit_jax import pretrained  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise ValueError(f'--pretrained needs vit_jax.pretrained, which does not '
                     f'import here: {error}') from None
  loaded = pretrained.load(name)
  num_classes = int(loaded.num_classes or 0)
  if not num_classes:
    raise ValueError(f'Pretrained {name!r} has no classifier head (it is a '
                     f'feature extractor); predict needs class outputs.')
  if loaded.label_names:
    names = labels.readable_imagenet_names(
        [str(i) if label is None else str(label)
         for i, label in enumerate(loaded.label_names)])
  elif num_classes == 1000:
    names = labels.imagenet_class_names()
  else:
    names = [str(i) for i in range(num_classes)]
  if len(names) != num_classes:
    raise ValueError(f'Pretrained {name!r} has {len(names)} label names for '
                     f'{num_classes} outputs.')
  spec, channels = loaded_spec(loaded)
  return Predictor(
      model=loaded.model, variables=loaded.variables,
      preprocess=spec_preprocess(spec, channels, decode_like_pil=True),
      class_names=names,
      multilabel=False, family=loaded.family, description=name,
      plot_name=_plot_name(name),
      plots_dir=None)


# ----------------------------------------------------------------------------
# Predicting.


class Prediction(NamedTuple):
  """One image's top-k classes."""
  path: str
  top: List[tuple]  # [(class name, probability)], best first
  class_ids: List[int]


def _load_images(predictor: Predictor, image_paths: Sequence[str],
                 first: Optional[tuple] = None) -> np.ndarray:
  """The preprocessed images, float32 [n, H, W, C]; each must have the
  shape of `first` ((path, shape) of the first image), when given."""
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top
  images = []
  for path in image_paths:
    try:
      image = predictor.preprocess(paths.read_bytes(path))
    except tf.errors.OpError as error:
      raise _decode_error(path, error) from None
    first = first or (path, image.shape)
    if image.shape != first[1]:
      raise ValueError(
          f'Image {path} is {list(image.shape)} after preprocessing, '
          f'{first[0]} {list(first[1])}: the preprocessing must give every '
          f'image one shape (end it with a resize or crop).')
    images.append(image)
  return np.stack(images)


def _probabilities_fn(predictor: Predictor):
  model, multilabel = predictor.model, predictor.multilabel

  def probabilities(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    logits = logits.astype(jnp.float32)
    return jax.nn.sigmoid(logits) if multilabel else jax.nn.softmax(logits)
  return jax.jit(probabilities)


def predict(predictor: Predictor, image_paths: Sequence[str], top_k: int = 5,
            batch_size: int = 64, keep_images: int = 0
            ) -> Tuple[List['Prediction'], np.ndarray]:
  """Top-k predictions of each image, in order.

  Returns:
    ([Prediction], the first `keep_images` preprocessed images, float32
    [n, H, W, C]).
  """
  num_classes = len(predictor.class_names)
  if not 1 <= top_k <= num_classes:
    raise ValueError(f'top_k={top_k} must lie in 1..{num_classes} (the '
                     f'model\'s classes).')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  batch_size = min(batch_size, len(image_paths))
  probabilities = _probabilities_fn(predictor)
  variables = jax.device_put(predictor.variables)
  results, kept, first = [], [], None
  for start in range(0, len(image_paths), batch_size):
    batch_paths = list(image_paths[start:start + batch_size])
    images = _load_images(predictor, batch_paths, first)
    if start == 0:
      first = (batch_paths[0], images.shape[1:])
      _check_fits(predictor, variables, images[:1], batch_paths[0])
    if len(kept) < keep_images:
      kept.extend(images[:keep_images - len(kept)])
    padded = np.zeros((batch_size,) + images.shape[1:], np.float32)
    padded[:len(images)] = images
    probs = np.asarray(probabilities(variables, padded))[:len(images)]
    order = np.argsort(-probs, axis=-1, kind='stable')[:, :top_k]
    for path, row, ids in zip(batch_paths, probs, order):
      results.append(Prediction(
          path, [(predictor.class_names[i], float(row[i])) for i in ids],
          [int(i) for i in ids]))
  kept = np.stack(kept) if kept else np.zeros((0,), np.float32)
  return results, kept


def predict_videos(predictor: Predictor, video_paths: Sequence[str],
                   top_k: int = 5, batch_size: int = 64
                   ) -> List['Prediction']:
  """Top-k predictions of each video: its views' probabilities averaged
  (as the run's evaluation scores videos), in order."""
  num_classes = len(predictor.class_names)
  if not 1 <= top_k <= num_classes:
    raise ValueError(f'top_k={top_k} must lie in 1..{num_classes} (the '
                     f'model\'s classes).')
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  probabilities = _probabilities_fn(predictor)
  variables = jax.device_put(predictor.variables)
  results = []
  for index, path in enumerate(video_paths):
    views = predictor.preprocess(path)  # [V, T, H, W, C]
    if index == 0:
      _check_fits(predictor, variables, views[:1], path)
    size = min(batch_size, len(views))  # one jitted shape for every video
    probs = []
    for start in range(0, len(views), size):
      chunk = views[start:start + size]
      padded = np.zeros((size,) + views.shape[1:], np.float32)
      padded[:len(chunk)] = chunk
      probs.append(np.asarray(probabilities(variables, padded))[:len(chunk)])
    mean = np.concatenate(probs).mean(axis=0)
    ids = np.argsort(-mean, kind='stable')[:top_k]
    results.append(Prediction(
        path, [(predictor.class_names[i], float(mean[i])) for i in ids],
        [int(i) for i in ids]))
  return results


def mask_paths(image_paths: Sequence[str], inputs: Sequence[str],
               output_dir: str) -> List[Tuple[str, str]]:
  """(mask, overlay) PNG paths of each image: its stem with _mask.png /
  _overlay.png in output_dir, below the folder it was found in mirrored
  there. Raises ValueError naming two images that would share a mask."""
  folders = [os.path.normpath(path) for path in inputs if paths.isdir(path)]
  outputs, seen = [], {}
  for path in image_paths:
    normal = os.path.normpath(path)
    inside = [folder for folder in folders
              if normal.startswith(folder.rstrip(os.sep) + os.sep)]
    relative = (os.path.relpath(normal, max(inside, key=len)) if inside
                else os.path.basename(normal))
    stem = os.path.splitext(relative)[0]
    if stem in seen:
      raise ValueError(f'Images {seen[stem]} and {path} would both write '
                       f'{stem}_mask.png in {output_dir}; rename one or give '
                       f'them separately.')
    seen[stem] = path
    outputs.append((paths.join(output_dir, f'{stem}_mask.png'),
                    paths.join(output_dir, f'{stem}_overlay.png')))
  return outputs


def segment_files(segmenter: Segmenter, image_paths: Sequence[str],
                  outputs: Sequence[Tuple[str, str]], batch_size: int = 8
                  ) -> List[np.ndarray]:
  """Writes each image's mask and overlay PNG (`outputs`: (mask path,
  overlay path) per image; folders made) and returns the masks, int32
  [h, w] at each file's size. Images go through the model one at a time
  ('whole': a new size, a new compile), in 'slide' mode `batch_size`
  windows at a time."""
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top
  if batch_size < 1:
    raise ValueError(f'batch_size must be >= 1, got {batch_size}.')
  segment = jax.jit(segmenter.segment)
  variables = jax.device_put(segmenter.variables)
  masks = []
  for path, (mask_path, overlay_path) in zip(image_paths, outputs):
    try:
      decoded = np.asarray(segmenter.decode(paths.read_bytes(path)))
      image = segmenter.preprocess(decoded)
    except tf.errors.OpError as error:
      raise _decode_error(path, error) from None
    mask = segmentation.segmentation_masks(
        lambda x: segment(variables, x), [image], [decoded.shape[:2]],
        segmenter.mode, segmenter.crop_size, segmenter.stride,
        rows=batch_size if segmenter.mode == 'slide' else 1)[0]
    write_mask(mask_path, overlay_path, decoded, mask, segmenter.num_classes)
    masks.append(mask)
  return masks


def write_mask(mask_path: str, overlay_path: str, image: np.ndarray,
               mask: np.ndarray, num_classes: int) -> None:
  """The class indices as an 8-bit grey PNG, and their palette colours
  (`segmentation.palette`) blended over the image (uint8 [h, w, C])."""
  if not 1 <= num_classes <= 256:
    raise ValueError(f'8-bit mask PNGs hold 1..256 classes, not '
                     f'{num_classes}.')
  for path in (mask_path, overlay_path):
    folder = os.path.dirname(path)
    if folder:
      paths.makedirs(folder)
  reconstruction.write_png(mask_path, np.asarray(mask).astype(np.uint8))
  image = np.asarray(image, np.uint8)
  shown = image[..., :3] if image.shape[-1] >= 3 else np.repeat(
      image[..., :1], 3, axis=-1)
  reconstruction.write_png(overlay_path,
                           segmentation.overlay(shown, mask, num_classes))


def run_segmentation(segmenter: Segmenter, inputs: Sequence[str],
                     output_dir: Optional[str], batch_size: int = 8,
                     out=None, listed: Optional[Tuple[List[str], bool]] = None
                     ) -> Dict[str, Any]:
  """The command line's work for a segmentation run: masks and overlays
  of every image into output_dir. Returns {'masks', 'outputs'}."""
  out = out or sys.stdout
  if not output_dir:
    raise ValueError(f'{segmenter.description} is a segmentation run: give '
                     f'--output_dir for its mask PNGs.')
  image_paths, _ = listed or list_images(inputs)
  outputs = mask_paths(image_paths, inputs, output_dir)
  masks = segment_files(segmenter, image_paths, outputs, batch_size)
  print(f'{len(masks)} mask(s) and overlay(s) of {segmenter.description} '
        f'written to {output_dir}', file=out)
  return {'masks': masks, 'outputs': outputs}


def _check_fits(predictor: Predictor, variables, images, path: str) -> None:
  """A clear error where the preprocessed images do not fit the model."""
  try:
    jax.eval_shape(lambda v, x: predictor.model.apply(v, x, train=False),
                   variables, jnp.asarray(images))
  except Exception as error:  # pylint: disable=broad-except
    first_line = str(error).strip().splitlines()[0] if str(error) else (
        type(error).__name__)
    raise ValueError(
        f'Image {path} is {list(images.shape[1:])} after preprocessing, '
        f'which the model ({predictor.description}) does not take: '
        f'{first_line}') from None


def csv_text(predictions: Sequence[Prediction], top_k: int) -> str:
  """path, top1, top1_prob, ..., top{k}, top{k}_prob; a row per image."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator='\n')
  header = ['path']
  for rank in range(1, top_k + 1):
    header += [f'top{rank}', f'top{rank}_prob']
  writer.writerow(header)
  for prediction in predictions:
    row = [prediction.path]
    for name, probability in prediction.top:
      row += [name, f'{probability:.6f}']
    writer.writerow(row)
  return buffer.getvalue()


def format_prediction(prediction: Prediction) -> str:
  width = max(len(name) for name, _ in prediction.top)
  lines = [prediction.path]
  for rank, (name, probability) in enumerate(prediction.top, 1):
    lines.append(f'  {rank}. {name:<{width}}  {probability:.4f}')
  return '\n'.join(lines)


def plot_attention(predictor: Predictor, predictions: Sequence[Prediction],
                   images: np.ndarray, path: str) -> str:
  """Attention rollout and per-block class-token maps of `images` (the
  first predictions' images) to the PNG `path`; returns `path`."""
  maps = attention_maps.attention_maps(predictor.model, predictor.variables,
                                       images)
  model = predictor.model
  class_token, grid = attention_maps.token_layout(model, images.shape[1:])
  rollout = attention_maps.attention_rollout(maps, class_token=class_token,
                                             grid_shape=grid)
  per_block = attention_maps.class_token_maps(maps, class_token=class_token,
                                              grid_shape=grid)
  titles = [f'{os.path.basename(p.path)}: {p.top[0][0]} '
            f'{p.top[0][1]:.2f}' for p in predictions[:len(images)]]
  attention_maps.plot_attention(path, images, rollout, per_block, titles)
  return path


def check_attention_plot(predictor: Predictor) -> None:
  if not isinstance(predictor.model, vit.ViT):
    raise ValueError(f'--attention_plot needs a ViT; {predictor.description} '
                     f'is a {predictor.family!r} model '
                     f'({type(predictor.model).__name__}).')


def run(predictor: Predictor, inputs: Sequence[str], top_k: int = 5,
        csv_path: Optional[str] = None, attention_plot: bool = False,
        plot_dir: Optional[str] = None, plot_images: int = 8,
        batch_size: int = 64, out=None,
        listed: Optional[Tuple[List[str], bool]] = None) -> Dict[str, Any]:
  """The command line's work: predictions printed (single files) or
  written to CSV (folders, or `csv_path`), and the attention plot.

  Returns {'predictions', 'csv' (path or None), 'plot' (path or None)}.
  `out`: where the console lines go (sys.stdout). `listed`:
  `list_images(inputs)`, where the caller has it already.
  """
  out = out or sys.stdout
  if attention_plot:
    check_attention_plot(predictor)
    plot_dir = plot_dir or predictor.plots_dir
    if not plot_dir:
      raise ValueError('--attention_plot with --pretrained needs --plot_dir '
                       '(there is no workdir to put the plot in).')
    if plot_images < 1:
      raise ValueError(f'plot_images must be >= 1, got {plot_images}.')
  if predictor.video:
    if attention_plot:
      raise ValueError('--attention_plot takes images; '
                       f'{predictor.description} classifies videos.')
    image_paths, batch_mode = listed or list_videos(inputs)
    predictions = predict_videos(predictor, image_paths, top_k, batch_size)
  else:
    image_paths, batch_mode = listed or list_images(inputs)
    predictions, images = predict(predictor, image_paths, top_k,
                                  batch_size, keep_images=plot_images
                                  if attention_plot else 0)
  if batch_mode and csv_path is None:
    csv_path = DEFAULT_CSV
  if csv_path is not None:
    paths.write_atomic(csv_path, csv_text(predictions, top_k))
  if batch_mode:
    print(f'{len(predictions)} {"videos" if predictor.video else "images"}, '
          f'top-{top_k} predictions of '
          f'{predictor.description} written to {csv_path}', file=out)
  else:
    for prediction in predictions:
      print(format_prediction(prediction), file=out)
    if csv_path is not None:
      print(f'Predictions written to {csv_path}', file=out)
  plot_path = None
  if attention_plot:
    plot_path = plot_attention(
        predictor, predictions, images,
        paths.join(plot_dir, f'attention_{predictor.plot_name}.png'))
    print(f'Attention maps of {len(images)} image(s) written to {plot_path}',
          file=out)
  return {'predictions': predictions, 'csv': csv_path, 'plot': plot_path}


# ----------------------------------------------------------------------------
# The command line. Flags are defined only when this module runs as the
# program, so importing it (tests, other tools) defines none.


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  from vit_jax import cli  # pylint: disable=g-import-not-at-top
  return dict(
      workdir=cli.WORKDIR, config=cli.CONFIG,
      pretrained=flags.DEFINE_string(
          'pretrained', None, 'Pretrained weights by name '
          '(vit_jax.pretrained.load); instead of --workdir.'),
      top_k=flags.DEFINE_integer('top_k', 5, 'Classes shown per image.'),
      csv=flags.DEFINE_string(
          'csv', None, f'CSV of the predictions; with a folder argument '
          f'{DEFAULT_CSV} by default.'),
      attention_plot=flags.DEFINE_bool(
          'attention_plot', False, 'Plot attention rollout and per-block '
          'maps (ViT) of the first --plot_images images.'),
      plot_dir=flags.DEFINE_string(
          'plot_dir', None, 'Where the attention plot goes (default '
          'WORKDIR/plots; needed with --pretrained).'),
      plot_images=flags.DEFINE_integer(
          'plot_images', 8, 'Images in the attention plot.'),
      checkpoint_step=flags.DEFINE_integer(
          'checkpoint_step', None, 'Checkpoint of --workdir (latest by '
          'default).'),
      batch_size=flags.DEFINE_integer(
          'batch_size', 64, 'Images per forward pass (segmentation '
          '\'slide\': windows).'),
      output_dir=flags.DEFINE_string(
          'output_dir', None, 'Where the mask and overlay PNGs of a '
          'segmentation run go (needed for one; nothing else uses it).'))


def _video_workdir(values) -> bool:
  """Whether --workdir (or --config) is a video run, from its config."""
  if not values['workdir']:
    return False
  try:
    config = config_lib.resolve(
        values['config'] if values['config'] is not None
        else workdir_lib.read_config(values['workdir']))
  except (FileNotFoundError, ValueError):
    return False  # from_workdir says what is wrong
  return is_video_run(config)


def main(argv, flag_values) -> None:
  from vit_jax import cli  # pylint: disable=g-import-not-at-top
  cli.quiet_logging()
  values = {name: holder.value for name, holder in flag_values.items()}
  usage_errors = []
  if bool(values['workdir']) == bool(values['pretrained']):
    usage_errors.append('give exactly one of --workdir and --pretrained')
  if values['pretrained'] and (values['config'] is not None or
                               values['checkpoint_step'] is not None):
    usage_errors.append('--config and --checkpoint_step go with --workdir')
  if (values['pretrained'] and values['attention_plot']
      and not values['plot_dir']):
    usage_errors.append('--attention_plot with --pretrained needs --plot_dir')
  if len(argv) < 2:
    usage_errors.append('name at least one IMAGE_OR_FOLDER')
  if usage_errors:
    print(f'vit_jax.predict: bad command line: {"; ".join(usage_errors)} '
          f'(usage: python -m vit_jax.predict --workdir=DIR | '
          f'--pretrained=NAME IMAGE_OR_FOLDER... [--top_k=5] [--csv=PATH] '
          f'[--attention_plot] [--output_dir=DIR (segmentation runs)])',
          file=sys.stderr)
    sys.exit(layout.EXIT_USAGE)
  try:
    # Bad paths fail before any loading.
    listed = (list_videos(argv[1:]) if _video_workdir(values)
              else list_images(argv[1:]))
    if values['workdir']:
      predictor = from_workdir(values['workdir'], values['config'],
                               values['checkpoint_step'])
    else:
      predictor = from_pretrained(values['pretrained'])
    if isinstance(predictor, Segmenter):
      if values['attention_plot'] or values['csv']:
        raise ValueError('--attention_plot and --csv go with classifiers; '
                         f'{predictor.description} is a segmentation run '
                         '(its masks go to --output_dir).')
      run_segmentation(predictor, argv[1:], values['output_dir'],
                       batch_size=values['batch_size'], listed=listed)
      return
    if values['output_dir']:
      raise ValueError('--output_dir goes with segmentation runs; '
                       f'{predictor.description} is a classifier (use --csv).')
    run(predictor, argv[1:], top_k=values['top_k'], csv_path=values['csv'],
        attention_plot=values['attention_plot'],
        plot_dir=values['plot_dir'], plot_images=values['plot_images'],
        batch_size=values['batch_size'], listed=listed)
  except (FileNotFoundError, ValueError) as error:
    print(f'vit_jax.predict: {cli.one_line(error)}', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)
  except OSError as error:  # e.g. --csv not writable, a full disk
    print(f'vit_jax.predict: {cli.one_line(error)}', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  from vit_jax import cli as _cli  # pylint: disable=g-import-not-at-top
  _FLAG_VALUES = _define_flags()
  app.run(lambda argv: main(argv, _FLAG_VALUES),
          flags_parser=_cli.parse_flags)
