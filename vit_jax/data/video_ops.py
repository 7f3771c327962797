"""Clip preprocessing ops for `video.py`, chosen by a spec string.

A spec has preprocess.py's syntax (ops joined by '|', Python literal
arguments, parsed by its `parse_spec`) and these ops, in NumPy:

  geometry: resize_small(size), resize(size), center_crop(size),
      view_crop(size) (the test views' spatial crop, see below);
  random: random_resized_crop(size, scale, ratio), random_crop(size),
      random_resize_small(min_size, max_size) (scale jitter), flip_lr,
      randaug(num_layers, magnitude, prob) (uint8 frames),
      random_erase(prob, area_min, area_max, aspect_min) (float frames);
  order: shuffle_frames (random per clip; in evaluation reproducibly,
      keyed by the clip's frames);
  values and labels: value_range(lo, hi), normalize(mean, std),
      onehot(num_classes).

A clip is a dict: 'image' [T, H, W, C] (uint8 as decoded, float32 after
value_range / normalize or a resize of float frames) and 'label' (int;
absent when predicting, where onehot leaves the clip alone). A random op
draws its parameters once per clip from the clip's NumPy Generator, so
every frame gets the same box, the same flip, the same scale: the motion
between frames is never an artefact of augmentation.

Test views: `eval_crops` = 3 takes three crops of the short side's size
along the longer side, at its start, centre and end (SlowFast's and
TimeSformer's 3-crop test); 1 takes the centre. pp_eval names the crop with
`view_crop(size)`, which reads the view's crop index; with eval_crops = 1 it
is `center_crop(size)`.

flip_lr mirrors the motion too: on 'moving_digits', whose labels are a
direction, it would swap 'left' and 'right', so `video.py` refuses it there.
"""

import functools
import math
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple
import zlib

import numpy as np

Clip = Dict[str, Any]
# (T, H, W, C), None where it varies between videos.
Shape = Tuple[Optional[int], Optional[int], Optional[int], Optional[int]]

# Per-channel constants in the 0..1 value scale (apply value_range(0, 1)
# first): torchvision's ImageNet statistics and the Kinetics ones of
# SlowFast / PyTorchVideo.
NORMALIZATIONS = {
    'imagenet': ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    'kinetics': ((0.45, 0.45, 0.45), (0.225, 0.225, 0.225)),
}


class ClipOp(NamedTuple):
  # apply(clip, rng (None for deterministic ops), view crop index) -> clip
  apply: Callable[[Clip, Optional[np.random.Generator], int], Clip]
  shape: Callable[[Shape], Shape]
  random: bool = False


def _with(clip: Clip, **updates) -> Clip:
  return {**clip, **updates}


def _size2(size, op_name: str) -> Tuple[int, int]:
  sizes = (size, size) if isinstance(size, int) else tuple(size)
  if len(sizes) != 2 or not all(isinstance(s, int) and s > 0 for s in sizes):
    raise ValueError(f'{op_name}: size must be a positive int or (height, '
                     f'width), got {size!r}.')
  return sizes


def _keep(shape: Shape) -> Shape:
  return shape


def _spatial(size: Tuple[int, int]) -> Callable[[Shape], Shape]:
  return lambda shape: (shape[0], size[0], size[1], shape[3])


def _resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
  """Bilinear resize of [T, H, W, C] frames with PIL (antialiased when
  shrinking, as torchvision's antialias=True); uint8 stays uint8."""
  from PIL import Image  # pylint: disable=g-import-not-at-top
  if frames.shape[1:3] == (height, width):
    return frames
  if frames.dtype == np.uint8 and frames.shape[-1] in (1, 3):
    mode = 'L' if frames.shape[-1] == 1 else 'RGB'
    out = [np.asarray(Image.fromarray(f[..., 0] if mode == 'L' else f, mode)
                      .resize((width, height), Image.BILINEAR))
           for f in frames]
    return np.stack(out).reshape(len(frames), height, width, -1)
  out = np.empty(frames.shape[:1] + (height, width, frames.shape[-1]),
                 np.float32)
  for t, frame in enumerate(frames):
    for c in range(frames.shape[-1]):
      out[t, ..., c] = np.asarray(Image.fromarray(
          frame[..., c].astype(np.float32), 'F').resize((width, height),
                                                        Image.BILINEAR))
  return out


def short_side_size(height: int, width: int, size: int) -> Tuple[int, int]:
  """(H, W) with the shorter side `size` and the aspect ratio kept
  (the longer side rounded down, as torchvision's Resize(int))."""
  if height <= width:
    return size, max(size, int(size * width / height))
  return max(size, int(size * height / width)), size


def resize_small(size: int) -> ClipOp:
  """Resizes every frame so its shorter side is `size`, aspect kept."""
  if not isinstance(size, int) or size < 1:
    raise ValueError(f'resize_small: size must be a positive int, got '
                     f'{size!r}.')

  def apply(clip, rng, view):
    del rng, view
    frames = clip['image']
    return _with(clip, image=_resize_frames(
        frames, *short_side_size(frames.shape[1], frames.shape[2], size)))

  def shape(spatial):
    if None in spatial[1:3]:
      return (spatial[0], None, None, spatial[3])
    return (spatial[0],) + short_side_size(spatial[1], spatial[2],
                                           size) + (spatial[3],)

  return ClipOp(apply, shape)


def random_resize_small(min_size: int, max_size: int) -> ClipOp:
  """Scale jitter: the shorter side resized to a size drawn uniformly
  from [min_size, max_size] (integers, both included) once per clip, as
  SlowFast's and TimeSformer's training does before its random crop
  (TRAIN_JITTER_SCALES [256, 320])."""
  if not (isinstance(min_size, int) and isinstance(max_size, int) and
          0 < min_size <= max_size):
    raise ValueError(f'random_resize_small: sizes must be ints with 0 < '
                     f'min_size <= max_size, got {min_size!r}, '
                     f'{max_size!r}.')

  def apply(clip, rng, view):
    del view
    frames = clip['image']
    size = int(rng.integers(min_size, max_size + 1))
    return _with(clip, image=_resize_frames(
        frames, *short_side_size(frames.shape[1], frames.shape[2], size)))

  def shape(spatial):
    return (spatial[0], None, None, spatial[3])

  return ClipOp(apply, shape, random=True)


def resize(size) -> ClipOp:
  """Resizes every frame to `size` (an int: square)."""
  size = _size2(size, 'resize')

  def apply(clip, rng, view):
    del rng, view
    return _with(clip, image=_resize_frames(clip['image'], *size))

  return ClipOp(apply, _spatial(size))


def _crop(clip: Clip, top: int, left: int, size: Tuple[int, int],
          op_name: str) -> Clip:
  frames = clip['image']
  if frames.shape[1] < size[0] or frames.shape[2] < size[1]:
    raise ValueError(
        f"{op_name}: the frames of {clip.get('path', 'a clip')} are "
        f'{frames.shape[1]}x{frames.shape[2]} at this point, smaller than '
        f'the crop {size[0]}x{size[1]}; resize first (resize_small).')
  return _with(clip, image=frames[:, top:top + size[0],
                                  left:left + size[1]])


def center_crop(size) -> ClipOp:
  """The central `size` box of every frame (top = (H - h) // 2)."""
  size = _size2(size, 'center_crop')

  def apply(clip, rng, view):
    del rng, view
    height, width = clip['image'].shape[1:3]
    return _crop(clip, (height - size[0]) // 2, (width - size[1]) // 2, size,
                 'center_crop')

  return ClipOp(apply, _spatial(size))


def view_offsets(length: int, crop: int, crops: int) -> list:
  """Start offsets of `crops` crops of `crop` along a side of `length`:
  1 -> the centre; 3 -> start, centre, end (SlowFast's uniform crop)."""
  if crops == 1:
    return [(length - crop) // 2]
  return [0, (length - crop) // 2, length - crop]


def view_crop(size) -> ClipOp:
  """The test view's spatial crop: view 0, 1, 2 of 3 crops lie at the start,
  centre and end of the longer side (centred on the other); with one crop
  per clip (view 0 of 1) it is the centre crop. The crop count is set by
  `video.py` from data_config.eval_crops."""
  size = _size2(size, 'view_crop')

  def apply(clip, rng, view):
    del rng
    height, width = clip['image'].shape[1:3]
    crops = clip.get('crops', 1)
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    if crops > 1:
      if width >= height:
        left = view_offsets(width, size[1], crops)[view]
      else:
        top = view_offsets(height, size[0], crops)[view]
    return _crop(clip, top, left, size, 'view_crop')

  return ClipOp(apply, _spatial(size))


def random_crop(size) -> ClipOp:
  """One uniformly placed `size` box for all frames of the clip."""
  size = _size2(size, 'random_crop')

  def apply(clip, rng, view):
    del view
    height, width = clip['image'].shape[1:3]
    top = int(rng.integers(max(height - size[0], 0) + 1))
    left = int(rng.integers(max(width - size[1], 0) + 1))
    return _crop(clip, top, left, size, 'random_crop')

  return ClipOp(apply, _spatial(size), random=True)


def resized_crop_box(height: int, width: int, scale: Sequence[float],
                     ratio: Sequence[float],
                     rng: np.random.Generator) -> Tuple[int, int, int, int]:
  """(top, left, h, w) of RandomResizedCrop's box (Szegedy et al.'s
  Inception crop, as torchvision draws it): up to 10 tries of an area
  fraction uniform in `scale` and a log-uniform aspect ratio in `ratio`,
  else the centred box of the whole frame with the ratio clamped."""
  area = height * width
  log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
  for _ in range(10):
    target = area * rng.uniform(scale[0], scale[1])
    aspect = math.exp(rng.uniform(*log_ratio))
    w = int(round(math.sqrt(target * aspect)))
    h = int(round(math.sqrt(target / aspect)))
    if 0 < w <= width and 0 < h <= height:
      return (int(rng.integers(height - h + 1)),
              int(rng.integers(width - w + 1)), h, w)
  aspect = width / height
  if aspect < min(ratio):
    w, h = width, int(round(width / min(ratio)))
  elif aspect > max(ratio):
    h, w = height, int(round(height * max(ratio)))
  else:
    h, w = height, width
  return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(size, scale: Sequence[float] = (0.08, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> ClipOp:
  """One random box per clip (area fraction in `scale`, aspect in `ratio`),
  resized to `size` on every frame."""
  size = _size2(size, 'random_resized_crop')
  if not (len(scale) == 2 and 0 < scale[0] <= scale[1] <= 1):
    raise ValueError(f'random_resized_crop: scale must be (lo, hi) with 0 < '
                     f'lo <= hi <= 1, got {scale!r}.')
  if not (len(ratio) == 2 and 0 < ratio[0] <= ratio[1]):
    raise ValueError(f'random_resized_crop: ratio must be (lo, hi) with 0 < '
                     f'lo <= hi, got {ratio!r}.')

  def apply(clip, rng, view):
    del view
    frames = clip['image']
    top, left, h, w = resized_crop_box(frames.shape[1], frames.shape[2],
                                       scale, ratio, rng)
    return _with(clip, image=_resize_frames(
        frames[:, top:top + h, left:left + w], *size))

  return ClipOp(apply, _spatial(size), random=True)


def flip_lr() -> ClipOp:
  """Mirrors all frames of the clip left-right with probability 1/2."""

  def apply(clip, rng, view):
    del view
    if rng.random() < 0.5:
      return _with(clip, image=clip['image'][:, :, ::-1])
    return clip

  return ClipOp(apply, _keep, random=True)


def shuffle_frames(seed: int = 0) -> ClipOp:
  """A permutation of the clip's frames: the frame-shuffled control, which
  keeps every frame and loses their order. In training each clip draws its
  own from the clip's generator; in evaluation (no generator) each clip
  draws its own too, from `seed` and a CRC-32 of its frames, so pp_eval
  may hold it and a view is the same on every pass. (One permutation for
  every clip would not be a control: it reorders all clips alike, which a
  model may read as a consistent false motion, e.g. all reversed.)"""

  def apply(clip, rng, view):
    del view
    frames = clip['image']
    count = len(frames)
    if rng is None:
      digest = zlib.crc32(np.ascontiguousarray(frames).tobytes())
      rng = np.random.default_rng([int(seed) % 2**64, count, digest])
    return _with(clip, image=frames[rng.permutation(count)])

  return ClipOp(apply, _keep)


@functools.lru_cache(maxsize=None)
def _frames_randaugment(num_layers: int, magnitude: float, prob: float,
                        channels: int):
  """A tf.function: randaugment.py's RandAugment of every frame of a uint8
  [T, H, W, C] clip with one [2] seed, so each frame gets the same ops,
  signs and cutout box. Built once per setting (TensorFlow imported here:
  clips are NumPy until an op needs it)."""
  from vit_jax.data import randaugment  # pylint: disable=g-import-not-at-top
  tf = randaugment.tf

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, channels], tf.uint8),
      tf.TensorSpec([2], tf.int64)])
  def run(frames, seed):
    return tf.map_fn(
        lambda frame: randaugment.randaugment(frame, seed, num_layers,
                                              magnitude, prob), frames)
  return run


def randaug(num_layers: int = 2, magnitude: float = 10,
            prob: float = 0.5) -> ClipOp:
  """RandAugment on uint8 clips, before value_range: randaugment.py's 16
  ops and magnitudes, `num_layers` of them each applied with probability
  `prob`, drawn once per clip and applied alike to every frame (as
  SlowFast applies one policy to a clip's frames), so augmentation never
  fakes motion. MViTv2's Kinetics recipe: randaug(4, 7)."""
  from vit_jax.data import randaugment  # pylint: disable=g-import-not-at-top
  num_layers, magnitude, prob = randaugment.check_settings(
      num_layers, magnitude, prob)

  def apply(clip, rng, view):
    del view
    frames = clip['image']
    if frames.dtype != np.uint8:
      raise ValueError(f'randaug works on uint8 clips (put it before '
                       f'value_range), got {frames.dtype}.')
    if frames.ndim != 4 or frames.shape[-1] not in (1, 3):
      raise ValueError(f'randaug needs [T, H, W, 1 or 3] clips, got shape '
                       f'{frames.shape}.')
    run = _frames_randaugment(num_layers, magnitude, prob, frames.shape[-1])
    seed = rng.integers(0, 2**62, size=2, dtype=np.int64)
    return _with(clip, image=run(frames, seed).numpy())

  return ClipOp(apply, _keep, random=True)


def random_erase(prob: float = 0.25, area_min: float = 0.02,
                 area_max: float = 1 / 3, aspect_min: float = 0.3) -> ClipOp:
  """Random erasing of clips (preprocess.py's `random_erase`, same
  arguments and checks) after value_range / normalize: with probability
  `prob` one rectangle per clip, the same on every frame (a box through
  time, as SlowFast's Kinetics recipes erase), filled with N(0, 1) noise
  per pixel, channel and frame."""
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  preprocess.check_random_erase(prob, area_min, area_max, aspect_min)

  def apply(clip, rng, view):
    del view
    frames = clip['image']
    if not np.issubdtype(frames.dtype, np.floating):
      raise ValueError(f'random_erase fills with N(0, 1) noise, so it needs '
                       f'float clips (after value_range or normalize), got '
                       f'{frames.dtype}.')
    height, width = frames.shape[1:3]
    draws = rng.random(5)
    area = (area_min + (area_max - area_min) * draws[0]) * height * width
    aspect = math.exp(math.log(aspect_min) * (1 - 2 * draws[1]))
    h = int(min(round(math.sqrt(area * aspect)), height))
    w = int(min(round(math.sqrt(area / aspect)), width))
    if draws[4] >= prob or h == 0 or w == 0:
      return clip
    top = int(draws[2] * (height - h + 1))
    left = int(draws[3] * (width - w + 1))
    frames = frames.copy()
    box = frames[:, top:top + h, left:left + w]
    frames[:, top:top + h, left:left + w] = rng.standard_normal(
        box.shape).astype(frames.dtype)
    return _with(clip, image=frames)

  return ClipOp(apply, _keep, random=True)


def value_range(lo: float, hi: float, in_min: float = 0,
                in_max: float = 255) -> ClipOp:
  """Maps values [in_min, in_max] linearly onto [lo, hi], float32 (written
  as lo * (1 - t) + hi * t, as preprocess.py's, so both ends are exact)."""
  if in_max <= in_min:
    raise ValueError(f'value_range: need in_min < in_max, got {in_min}, '
                     f'{in_max}.')

  def apply(clip, rng, view):
    del rng, view
    t = (clip['image'].astype(np.float32) - in_min) / (in_max - in_min)
    return _with(clip, image=(lo * (1.0 - t) + hi * t).astype(np.float32))

  return ClipOp(apply, _keep)


def normalize(mean, std=None) -> ClipOp:
  """(image - mean) / std per channel, float32. `mean` may name a
  constant pair of NORMALIZATIONS ('imagenet', 'kinetics'; 0..1 scale)."""
  if isinstance(mean, str):
    if mean not in NORMALIZATIONS or std is not None:
      raise ValueError(f'normalize: a named normalization takes no std and '
                       f'is one of {sorted(NORMALIZATIONS)}, got '
                       f'{mean!r}, std={std!r}.')
    mean, std = NORMALIZATIONS[mean]
  if std is None:
    raise ValueError('normalize: needs std (or a named constant, e.g. '
                     "normalize('kinetics')).")
  mean_ = np.asarray(mean, np.float32)
  std_ = np.asarray(std, np.float32)
  if np.any(std_ <= 0):
    raise ValueError(f'normalize: std must be > 0, got {std!r}.')

  def apply(clip, rng, view):
    del rng, view
    return _with(clip, image=((clip['image'].astype(np.float32) - mean_) /
                              std_).astype(np.float32))

  return ClipOp(apply, _keep)


def onehot(num_classes: int, on: float = 1.0, off: float = 0.0) -> ClipOp:
  """float32 'labels' [num_classes] from the int 'label' (dropped)."""
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'onehot: num_classes must be a positive int, got '
                     f'{num_classes!r}.')

  def apply(clip, rng, view):
    del rng, view
    if 'label' not in clip:
      return clip  # predicting: no label
    clip = dict(clip)
    label = clip.pop('label')
    if not 0 <= label < num_classes:
      raise ValueError(f"onehot({num_classes}): label {label} of "
                       f"{clip.get('path', 'a clip')} is outside [0, "
                       f'{num_classes}).')
    labels = np.full([num_classes], off, np.float32)
    labels[label] = on
    clip['labels'] = labels
    return clip

  return ClipOp(apply, _keep)


# The spec vocabulary: an explicit table, as preprocess.py's.
OPS: Dict[str, Callable[..., ClipOp]] = {
    'resize_small': resize_small,
    'random_resize_small': random_resize_small,
    'resize': resize,
    'center_crop': center_crop,
    'view_crop': view_crop,
    'random_crop': random_crop,
    'random_resized_crop': random_resized_crop,
    'flip_lr': flip_lr,
    'randaug': randaug,
    'random_erase': random_erase,
    'shuffle_frames': shuffle_frames,
    'value_range': value_range,
    'normalize': normalize,
    'onehot': onehot,
}


class Spec(NamedTuple):
  ops: Tuple[ClipOp, ...]
  names: Tuple[str, ...]
  text: str

  def shape(self, frames: Shape) -> Shape:
    """The static (T, H, W, C) after the spec (None: varies)."""
    for op in self.ops:
      frames = op.shape(frames)
    return frames

  @property
  def random(self) -> bool:
    return any(op.random for op in self.ops)


@functools.lru_cache(maxsize=64)
def parse(spec: str) -> Spec:
  """Parses a clip spec (preprocess.py's syntax, this module's OPS); an
  unknown op raises a ValueError listing the valid ones."""
  # preprocess.py's parser lives with its TensorFlow ops; imported to parse.
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  ops, names = [], []
  for name, args, kwargs in preprocess.parse_spec(spec, OPS):
    try:
      ops.append(OPS[name](*args, **kwargs))
    except TypeError as e:
      raise ValueError(f'Bad arguments for op {name} in spec {spec!r}: '
                       f'{e}.') from None
    names.append(name)
  return Spec(tuple(ops), tuple(names), spec)


def apply(spec: Spec, clip: Clip, rng: Optional[np.random.Generator],
          view: int = 0) -> Clip:
  """`clip` after the ops of `spec`; `rng` feeds the random ops (None is
  refused for a spec that has any), `view` is view_crop's crop index."""
  for name, op in zip(spec.names, spec.ops):
    if op.random and rng is None:
      raise ValueError(f'Op {name!r} of spec {spec.text!r} is random; '
                       f'evaluation specs take deterministic ops only (e.g. '
                       f'center_crop or view_crop instead of random_crop).')
    clip = op.apply(clip, rng, view)
  return clip
