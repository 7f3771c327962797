"""Preprocessing ops chosen by a string spec, in the style of big_vision.

A spec is a chain of ops joined by '|', applied left to right to one example:

    'decode|inception_crop(224)|flip_lr|value_range(-1, 1)|onehot(1000)'

Each op is NAME or NAME(ARGS); ARGS are Python literals, positional and
keyword, read with `ast.literal_eval` (never `eval`). An example is a dict of
tensors: 'image' [H, W, C] (uint8 as TFDS decodes it, or the encoded bytes)
and 'label' [] int64 on the way in; 'image' float32 and 'labels'
[num_classes] float32 after a typical spec.

Random ops (inception_crop, flip_lr, randaug, random_erase,
random_resize, random_crop, photometric_distortion) use
TensorFlow's stateless random ops seeded by the example's 'rng' entry, a [2]
int64 seed that the pipeline derives from (seed, process, epoch, position
in the epoch); see `example_seed`. Each random op folds its position in the spec into that
seed, so the augmentation of an example is a pure function of where it sits
in the data stream: reproducible, and resumable from any step.

The resizing and crop ops take `timm=True` for timm's evaluation transform
pixel for pixel (PIL's resampling, torchvision's sizes and centre), e.g.
timm's 'center' crop at crop_pct 0.875:

    "decode|resize_small(256, 'bicubic', timm=True)|"
    'central_crop(224, timm=True)|value_range(0, 1)|normalize(MEAN, STD)'

(`vit_jax.predict.pretrained_spec` writes them for each crop mode).

Semantic segmentation examples also carry 'label_map' (uint8 [H, W, 1],
255 ignored). The geometric ops (GEOMETRIC_OPS) move it with the image:
the same window and flip, resizing by nearest neighbour only; the resizes
take label_map=False to leave it at its original resolution (evaluation).
Photometric ops leave it alone. mmsegmentation's training pipeline
(random_resize, random_crop with cat_max_ratio, photometric_distortion,
pad) and label conventions (reduce_labels, map_labels) are ops too, e.g.
SegFormer's ADE20K training and test specs:

    'reduce_labels|random_resize((2048, 512), (0.5, 2.0))|'
    'random_crop(512, 0.75)|flip_lr|photometric_distortion|'
    'normalize(MEAN, STD)|pad(512)'
    'reduce_labels|rescale((2048, 512), label_map=False)|normalize(MEAN, STD)'

Without a 'label_map' every op computes exactly what it did before.
"""

import ast
import inspect
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from vit_jax.data import randaugment
from vit_jax.data.tensorflow_cpu import tf

Example = Dict[str, Any]  # str -> tf.Tensor
Size = Union[int, Sequence[int]]
# An op maps (example, seed) to a new example; `seed` is a [2] int64 tensor
# for random ops and None for the others.
Op = Callable[[Example, Any], Example]

RNG_KEY = 'rng'


def fold_in(seed, *values) -> tf.Tensor:
  """A [2] int64 stateless seed derived from `seed` and integer `values`.

  `seed` is a Python int or a [2] seed tensor.
  """
  seed = tf.convert_to_tensor(seed, tf.int64)
  if seed.shape.rank == 0:
    seed = tf.stack([seed, tf.constant(0, tf.int64)])
  for value in values:
    seed = tf.random.experimental.stateless_fold_in(
        seed, tf.cast(value, tf.int64))
  return seed


def example_seed(seed, process_index, epoch, position) -> tf.Tensor:
  """The augmentation seed of the example at `position` of `epoch`."""
  return fold_in(seed, process_index, epoch, position)


# ----------------------------------------------------------------------------
# Helpers.


def _size_pair(size: Size, op_name: str) -> Tuple[int, int]:
  if isinstance(size, int) and size > 0:
    return size, size
  if (isinstance(size, (tuple, list)) and len(size) == 2 and
      all(isinstance(side, int) and side > 0 for side in size)):
    return int(size[0]), int(size[1])
  raise ValueError(f'{op_name}: size must be a positive int or (height, '
                   f'width), got {size!r}.')


def _cast_like(image: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  """Casts resampled pixels back to `dtype`, rounding and clipping integers."""
  if dtype.is_integer:
    image = tf.clip_by_value(tf.round(image), dtype.min, dtype.max)
  return tf.cast(image, dtype)


def _resize(image: tf.Tensor, size: Tuple[int, int], method: str) -> tf.Tensor:
  resized = tf.image.resize(image, size, method=method)
  return _cast_like(resized, image.dtype)


def _with(example: Example, **updates) -> Example:
  return {**example, **updates}


# ----------------------------------------------------------------------------
# Label maps (semantic segmentation). A geometric op that finds LABEL_KEY in
# the example moves it with the image: the same window, the same flip, and
# resizing by nearest neighbour only, so no label id is ever blended into
# another. Examples without it take exactly the code paths they always did.

LABEL_KEY = 'label_map'
# The label that losses and metrics skip, as mmsegmentation's default; what
# padding writes into label maps.
IGNORE_INDEX = 255


def _resized_labels(example: Example, size) -> Example:
  """The example's label map, if any, resized to `size` by nearest neighbour
  (TF's half-pixel centres: output pixel o reads input floor((o + 0.5) *
  in / out), the input pixel nearest to where bilinear resizing centres it;
  mmcv's cv2 'nearest' reads floor(o * in / out), up to one input pixel
  towards the top left). An update for `_with`, empty without one."""
  if LABEL_KEY not in example:
    return {}
  return {LABEL_KEY: tf.image.resize(example[LABEL_KEY], size,
                                     method='nearest')}


def _label_map(example: Example, op_name: str) -> tf.Tensor:
  """The uint8 [H, W, 1] label map an op that reads label ids needs."""
  if LABEL_KEY not in example:
    raise ValueError(f'{op_name} reads label ids, but the example has no '
                     f'{LABEL_KEY!r}; it has {sorted(example)}.')
  label_map = example[LABEL_KEY]
  if label_map.dtype != tf.uint8:
    raise ValueError(f'{op_name}: {LABEL_KEY!r} must be uint8 (ids 0..255, '
                     f'{IGNORE_INDEX} ignored), got {label_map.dtype.name}.')
  return label_map


def _check_label_id(op_name: str, name: str, value) -> None:
  if not (isinstance(value, int) and not isinstance(value, bool) and
          0 <= value <= 255):
    raise ValueError(f'{op_name}: {name} must be a label id, an int in '
                     f'0..255, got {value!r}.')


# ----------------------------------------------------------------------------
# timm's evaluation transform, exactly (the ops' `timm=True`): torchvision's
# sizes and centre crop on PIL images, resampled as PIL (Pillow 13)
# resamples 8-bit images. The facts come from Pillow's Resample.c and
# torchvision's transforms; checked by tests/test_preprocess_timm.py.

# tf.image.resize's methods (timm=False).
TF_METHODS = ('bilinear', 'bicubic', 'nearest', 'area', 'lanczos3',
              'lanczos5', 'mitchellcubic', 'gaussian')
# PIL's convolution filters by timm's names, with their support in input
# pixels; shrinking stretches the support by the scale factor, which is
# what antialiases them. (PIL's 'nearest' is another code path, not
# modelled.)
PIL_SUPPORT = {'bilinear': 1.0, 'bicubic': 2.0, 'box': 0.5, 'hamming': 1.0,
               'lanczos': 3.0}
PIL_METHODS = tuple(PIL_SUPPORT)
# PIL's fixed point for 8-bit images: 32 bits less 8 for the pixel and 2
# of headroom for the overshoot of negative lobes.
_PIL_PRECISION_BITS = 22


def _check_method(op_name: str, method: str, timm: bool) -> None:
  valid = PIL_METHODS if timm else TF_METHODS
  if method not in valid:
    with_timm = ' with timm=True' if timm else ''
    raise ValueError(f'{op_name}: unknown method {method!r}{with_timm}; '
                     f'valid choices: {list(valid)}.')


def _pil_filter(method: str, x: tf.Tensor) -> tf.Tensor:
  """PIL's kernel of `method` at float64 offsets `x`, in PIL's order of
  operations (its coefficients are rounded to integers later, so the last
  bit can matter)."""
  zero = tf.zeros_like(x)
  a = tf.abs(x)
  if method == 'box':
    return tf.where((x > -0.5) & (x <= 0.5), tf.ones_like(x), zero)
  if method == 'bilinear':
    return tf.where(a < 1, 1 - a, zero)
  if method == 'bicubic':
    c = -0.5  # Keys' cubic convolution with a = -0.5
    inner = ((c + 2) * a - (c + 3)) * a * a + 1
    outer = (((a - 5) * a + 8) * a - 4) * c
    return tf.where(a < 1, inner, tf.where(a < 2, outer, zero))

  def sinc(t):
    t_pi = t * math.pi
    return tf.where(tf.equal(t, 0), tf.ones_like(t), tf.sin(t_pi) / t_pi)
  if method == 'hamming':
    # PIL writes the window's constants as C floats, 0.54f and 0.46f:
    # these are their exact values.
    window = 0.5400000214576721 + 0.46000000834465027 * tf.cos(a * math.pi)
    return tf.where(a >= 1, zero, sinc(a) * window)
  return tf.where((x >= -3) & (x < 3), sinc(x) * sinc(x / 3), zero)


def _pil_taps(in_size: tf.Tensor, out_size: tf.Tensor,
              method: str) -> Tuple[tf.Tensor, tf.Tensor]:
  """For one axis resized from `in_size` to `out_size` pixels: the input
  pixel each tap of each output pixel reads and its weight, PIL's 22-bit
  fixed-point integer (both [taps, out]; int32 indices, weights as whole
  float64 numbers).

  Output pixel o is centred at (o + 0.5) * scale in input coordinates; its
  window spans the filter's support (stretched by the scale when
  shrinking), cut to the image; the weights are normalised to sum 1 (the
  sum taken tap by tap, as PIL adds them) and rounded half away from zero
  to integers at 2^22.
  """
  scale = tf.cast(in_size, tf.float64) / tf.cast(out_size, tf.float64)
  filter_scale = tf.maximum(scale, 1.0)
  support = PIL_SUPPORT[method] * filter_scale
  num_taps = tf.cast(tf.math.ceil(support), tf.int32) * 2 + 1
  center = (tf.cast(tf.range(out_size), tf.float64) + 0.5) * scale
  # PIL's (int) casts truncate toward zero, as tf.cast does.
  first = tf.maximum(tf.cast(center - support + 0.5, tf.int32), 0)
  end = tf.minimum(tf.cast(center + support + 0.5, tf.int32), in_size)
  index = tf.range(num_taps)[:, None] + first[None, :]
  offset = (tf.cast(index, tf.float64) - center[None, :] + 0.5) * (
      1.0 / filter_scale)
  weight = tf.where(index < end[None, :], _pil_filter(method, offset),
                    tf.zeros_like(offset))
  total = tf.foldl(lambda acc, tap: acc + tap, weight,
                   initializer=tf.zeros_like(center))
  weight = tf.where(tf.equal(total, 0)[None, :], weight,
                    weight / total[None, :])
  fixed = weight * float(1 << _PIL_PRECISION_BITS)
  # Rounded half away from zero, as PIL's (int) casts of x -/+ 0.5 do;
  # whole numbers held in float64, which represents PIL's int32 sums
  # exactly (integers below 2^53).
  fixed = tf.where(weight < 0, tf.math.ceil(fixed - 0.5),
                   tf.math.floor(fixed + 0.5))
  return tf.minimum(index, in_size - 1), fixed


def _pil_pass(pixels: tf.Tensor, out_size: tf.Tensor,
              method: str) -> tf.Tensor:
  """One of PIL's two passes: the rows of `pixels` (float64 [H, W, C]
  holding whole numbers 0..255) resampled to `out_size` rows, rounded and
  clipped to 0..255 as PIL stores its 8-bit intermediate. PIL sums in
  int32, whose headroom never wraps; float64 holds those integer sums
  exactly (below 2^53) and, unlike TensorFlow's integer kernels, logs no
  oneDNN fallback notice on CPUs without AVX-512."""
  index, weight = _pil_taps(tf.shape(pixels)[0], out_size, method)

  def add_tap(total, tap):
    tap_index, tap_weight = tap
    return total + tf.gather(pixels, tap_index) * tap_weight[:, None, None]
  # The initial half unit makes the floor below round half up, as PIL's.
  initial = tf.fill(tf.concat([[out_size], tf.shape(pixels)[1:]], 0),
                    tf.constant(1 << (_PIL_PRECISION_BITS - 1), tf.float64))
  total = tf.foldl(add_tap, (index, weight), initializer=initial)
  # PIL's arithmetic shift: a floor division by 2^22 (exact in float64).
  return tf.clip_by_value(
      tf.math.floor(total / float(1 << _PIL_PRECISION_BITS)), 0, 255)


def _pil_resize(image: tf.Tensor, size, method: str) -> tf.Tensor:
  """PIL's Image.resize of a uint8 [H, W, C] image to size = (height,
  width) (ints or int32 tensors) with filter `method`."""
  if image.dtype != tf.uint8:
    raise ValueError(f'timm=True resizes as PIL resizes 8-bit images, so it '
                     f'needs uint8 images (before value_range / normalize), '
                     f'got {image.dtype.name}.')
  height, width = (tf.cast(side, tf.int32) for side in size)
  in_height, in_width = tf.shape(image)[0], tf.shape(image)[1]
  # Pillow 13 resamples rows first when the image loses more than twice as
  # many rows as columns (earlier Pillow: always columns first). The order
  # matters where the first pass clips overshoot to 0..255. Found by
  # comparing with Pillow 13.0.0 (bit-exact on ~5000 size pairs, ties
  # 2 * (W - w) == H - h included; its source does not say).
  rows_first = (height < in_height) & (
      2 * (in_width - width) < in_height - height)

  def transpose(x):
    return tf.transpose(x, [1, 0, 2])

  def resample_rows(x, rows):  # an axis that keeps its size is left alone
    return tf.cond(tf.equal(tf.shape(x)[0], rows), lambda: x,
                   lambda: _pil_pass(x, rows, method))
  # Each pass resamples rows: the image is transposed to bring the axis of
  # each pass first (one traced pass each, whichever the order).
  pixels = tf.cast(image, tf.float64)
  pixels = tf.cond(rows_first, lambda: pixels, lambda: transpose(pixels))
  pixels = resample_rows(pixels, tf.where(rows_first, height, width))
  pixels = resample_rows(transpose(pixels),
                         tf.where(rows_first, width, height))
  resized = tf.cond(rows_first, lambda: transpose(pixels), lambda: pixels)
  resized = tf.cast(resized, tf.uint8)
  resized.set_shape([None, None, image.shape[-1]])
  return resized


def _round_half_even(x: tf.Tensor) -> tf.Tensor:
  """Python's round() (half to even), which torchvision and timm use."""
  return tf.cast(tf.round(x), tf.int32)  # tf.round rounds half to even


# ----------------------------------------------------------------------------
# The ops. Each factory takes the spec's arguments and returns an Op.


def decode(channels: Optional[int] = None) -> Op:
  """Decodes encoded image bytes (PNG/JPEG/...); decoded images pass through.

  TFDS decodes images itself, so in this package's pipelines the op only
  matters for `channels`: 1 or 3 converts grey <-> RGB.
  """
  if channels not in (None, 1, 3):
    raise ValueError(f'decode: channels must be None, 1 or 3, got '
                     f'{channels!r}.')

  def apply(example, seed):
    del seed
    image = example['image']
    if image.dtype == tf.string:
      image = tf.io.decode_image(image, channels=channels or 0,
                                 expand_animations=False)
    elif channels == 3 and image.shape[-1] == 1:
      image = tf.image.grayscale_to_rgb(image)
    elif channels == 1 and image.shape[-1] == 3:
      image = _cast_like(tf.image.rgb_to_grayscale(
          tf.cast(image, tf.float32)), image.dtype)
    return _with(example, image=image)
  return apply


def resize(size: Size, method: str = 'bilinear', timm: bool = False,
           label_map: bool = True) -> Op:
  """Resizes to `size` (int or (height, width)), ignoring the aspect ratio.

  `method`: one of TF_METHODS (tf.image.resize, not antialiased). With
  timm=True (uint8 images): resampled exactly as PIL resizes 8-bit images,
  which is what timm's evaluation transform does ('squash' crop mode);
  `method` one of PIL_METHODS, antialiased when shrinking (`_pil_resize`).
  A 'label_map' is resized with it by nearest neighbour; label_map=False
  leaves it at its resolution (evaluation at the original resolution).
  """
  size = _size_pair(size, 'resize')
  _check_method('resize', method, timm)

  def apply(example, seed):
    del seed
    image = example['image']
    labels = _resized_labels(example, size) if label_map else {}
    if timm:
      return _with(example, image=_pil_resize(image, size, method), **labels)
    return _with(example, image=_resize(image, size, method), **labels)
  return apply


def resize_small(size: int, method: str = 'bilinear',
                 timm: bool = False, label_map: bool = True) -> Op:
  """Resizes so that the shorter side is `size`, keeping the aspect ratio.

  The longer side is rounded to the nearest pixel; with timm=True it is
  truncated, as torchvision's Resize(int) does (500x375 to 248: 330, not
  331), and the image is resampled as PIL does (see `resize`): timm's
  'center' crop mode for square inputs. `label_map` as in `resize`.
  """
  _size_pair(size, 'resize_small')
  _check_method('resize_small', method, timm)

  def apply(example, seed):
    del seed
    image = example['image']
    height = tf.cast(tf.shape(image)[0], tf.float64)
    width = tf.cast(tf.shape(image)[1], tf.float64)
    if timm:
      short = tf.minimum(height, width)
      long_side = tf.cast(tf.floor(size * tf.maximum(height, width) / short),
                          tf.int32)
      new_size = tf.where(width <= height, tf.stack([long_side, size]),
                          tf.stack([size, long_side]))
      labels = _resized_labels(example, new_size) if label_map else {}
      return _with(example, image=_pil_resize(image, tf.unstack(new_size),
                                              method), **labels)
    scale = size / tf.minimum(height, width)
    new_size = tf.cast(tf.round(tf.stack([height, width]) * scale), tf.int32)
    resized = tf.image.resize(image, new_size, method=method)
    labels = _resized_labels(example, new_size) if label_map else {}
    return _with(example, image=_cast_like(resized, image.dtype), **labels)
  return apply


def resize_keep_ratio(size: Size, method: str = 'bilinear',
                      longest: float = 0.0, timm: bool = False,
                      label_map: bool = True) -> Op:
  """Resizes both sides by one factor, as timm's ResizeKeepRatio: with
  the ratios r = image side / `size` side (int or (height, width)), the
  image is divided by max(r) * longest + min(r) * (1 - longest) and the
  sides rounded half to even. longest=0 covers `size` (one side matches,
  the other is longer: timm's 'center' crop mode for non-square inputs);
  longest=1 fits inside it (one side matches, the other is shorter:
  timm's 'border' mode, then a padding central_crop). timm=True resamples
  as PIL does (see `resize`). `label_map` as in `resize`.
  """
  target = _size_pair(size, 'resize_keep_ratio')
  _check_method('resize_keep_ratio', method, timm)
  if not 0 <= longest <= 1:
    raise ValueError(f'resize_keep_ratio: longest must lie in [0, 1], got '
                     f'{longest!r}.')

  def apply(example, seed):
    del seed
    image = example['image']
    sides = tf.cast(tf.shape(image)[:2], tf.float64)
    ratios = sides / tf.constant(target, tf.float64)
    ratio = (tf.reduce_max(ratios) * longest +
             tf.reduce_min(ratios) * (1.0 - longest))
    new_size = _round_half_even(sides / ratio)
    labels = _resized_labels(example, new_size) if label_map else {}
    if timm:
      return _with(example, image=_pil_resize(image, tf.unstack(new_size),
                                              method), **labels)
    return _with(example, image=_resize(image, new_size, method), **labels)
  return apply


def central_crop(size: Size, timm: bool = False,
                 fill: Union[float, Sequence[float]] = 0) -> Op:
  """Crops the central `size` (int or (height, width)) window.

  The window starts at (H - height) // 2; with timm=True at round((H -
  height) / 2), half to even, as torchvision's CenterCrop (one pixel
  further when H - height is 3 mod 4), and an image smaller than `size`
  is first padded to it (the smaller half of the padding before) with
  `fill` (one value or one per channel, in the image's value scale), as
  timm's CenterCropOrPad (whose fill is round(255 * mean)). A 'label_map'
  is cut to the same window (padded with IGNORE_INDEX).
  """
  crop_height, crop_width = _size_pair(size, 'central_crop')
  if not timm and fill != 0:
    raise ValueError(f'central_crop: fill={fill!r} needs timm=True (only '
                     f'that mode pads).')

  def apply(example, seed):
    del seed
    image = example['image']
    label_map = example.get(LABEL_KEY)
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    if timm:
      fills = len(fill) if isinstance(fill, (list, tuple)) else 1
      if fills not in (1, image.shape[-1]):
        raise ValueError(f'central_crop: fill has {fills} values but the '
                         f'image {image.shape[-1]} channels.')
      pad_height = tf.maximum(crop_height - height, 0)
      pad_width = tf.maximum(crop_width - width, 0)
      paddings = [[pad_height // 2, pad_height - pad_height // 2],
                  [pad_width // 2, pad_width - pad_width // 2], [0, 0]]
      inside = tf.pad(tf.ones_like(image[..., :1], tf.bool), paddings)
      filled = tf.broadcast_to(tf.cast(fill, image.dtype),
                               tf.shape(image)[-1:])
      image = tf.where(inside, tf.pad(image, paddings), filled)
      if label_map is not None:
        label_map = tf.pad(label_map, paddings, constant_values=IGNORE_INDEX)
      height, width = tf.shape(image)[0], tf.shape(image)[1]
      top = _round_half_even(tf.cast(height - crop_height, tf.float64) / 2)
      left = _round_half_even(tf.cast(width - crop_width, tf.float64) / 2)
    else:
      top = (height - crop_height) // 2
      left = (width - crop_width) // 2
    def crop(pixels):
      return tf.image.crop_to_bounding_box(pixels, top, left, crop_height,
                                           crop_width)
    labels = {} if label_map is None else {LABEL_KEY: crop(label_map)}
    return _with(example, image=crop(image), **labels)
  return apply


def inception_crop(size: Size, area_min: float = 5, area_max: float = 100,
                   method: str = 'bilinear') -> Op:
  """Random-resized crop: "Going deeper with convolutions" (Szegedy et al.
  2015, Sec. 6).

  A window covering `area_min`..`area_max` percent of the image with aspect
  ratio in [3/4, 4/3] is cut out and resized to `size`. The paper samples
  8%..100%; the ViT recipes (Dosovitskiy et al. 2020; Steiner et al. 2021,
  "How to train your ViT?") use 5%, the default here. A 'label_map' is
  cut to the same window and resized by nearest neighbour.
  """
  size = _size_pair(size, 'inception_crop')
  if not 0 < area_min <= area_max <= 100:
    raise ValueError(f'inception_crop: need 0 < area_min <= area_max <= 100 '
                     f'(percent), got {area_min}, {area_max}.')

  def apply(example, seed):
    image = example['image']
    whole_image = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])  # [1, 1, 4]
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=whole_image, seed=seed,
        min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
        area_range=(area_min / 100, area_max / 100),
        use_image_if_no_bounding_boxes=True)
    crop = tf.slice(image, begin, crop_size)
    # A sampled size leaves every dimension unknown to the graph; the
    # channel count is the input's (ops after this one, randaug among them,
    # need it static).
    crop.set_shape([None, None, image.shape[-1]])
    labels = {}
    if LABEL_KEY in example:
      # begin is [top, left, 0] and crop_size [height, width, -1]: the
      # same window, all of the label map's channels.
      labels = _resized_labels(
          {LABEL_KEY: tf.slice(example[LABEL_KEY], begin, crop_size)}, size)
    return _with(example, image=_resize(crop, size, method), **labels)
  return apply


def flip_lr() -> Op:
  """Mirrors the image (and a 'label_map') left-right with probability
  1/2."""
  def apply(example, seed):
    # TF draws the decision for a [H, W, C] tensor from the seed alone (one
    # uniform of shape []), so the same seed flips both or neither.
    flipped = {key: tf.image.stateless_random_flip_left_right(example[key],
                                                              seed)
               for key in ('image', LABEL_KEY) if key in example}
    return _with(example, **flipped)
  return apply


def randaug(num_layers: int = 2, magnitude: float = 10,
            prob: float = 0.5) -> Op:
  """RandAugment on uint8 images (see `randaugment.py`): `num_layers` ops
  drawn from 16, each applied with probability `prob` at `magnitude`.
  AugReg's settings: randaug(2, 10), (2, 15), (2, 20)."""
  randaugment.check_settings(num_layers, magnitude, prob)

  def apply(example, seed):
    if LABEL_KEY in example:
      raise ValueError(
          f'randaug: its geometric ops (rotate, shear, translate) would move '
          f'the image without its {LABEL_KEY!r}; for segmentation use '
          f'photometric_distortion and the label-aware geometric ops '
          f'({", ".join(sorted(GEOMETRIC_OPS))}).')
    return _with(example, image=randaugment.randaugment(
        example['image'], seed, num_layers, magnitude, prob))
  return apply


def check_random_erase(prob: float, area_min: float, area_max: float,
                       aspect_min: float) -> None:
  """random_erase's argument checks (images here, clips in video_ops)."""
  if not 0 <= prob <= 1:
    raise ValueError(f'random_erase: prob must lie in [0, 1], got {prob!r}.')
  if not 0 < area_min <= area_max <= 1:
    raise ValueError(f'random_erase: need 0 < area_min <= area_max <= 1, '
                     f'got {area_min!r}, {area_max!r}.')
  if not 0 < aspect_min <= 1:
    raise ValueError(f'random_erase: aspect_min must lie in (0, 1], got '
                     f'{aspect_min!r}.')


def random_erase(prob: float = 0.25, area_min: float = 0.02,
                 area_max: float = 1 / 3, aspect_min: float = 0.3) -> Op:
  """Random erasing (Zhong et al. 2020, "Random Erasing Data Augmentation",
  Alg. 1), as DeiT / Swin use it on normalised images: with probability
  `prob` a rectangle of area_min..area_max of the image, aspect ratio
  log-uniform in [aspect_min, 1 / aspect_min], at a uniform position, is
  filled with N(0, 1) noise per pixel and channel. Put it after
  value_range / normalize. A rectangle larger than the image is clipped to
  it (the paper redraws instead).
  """
  check_random_erase(prob, area_min, area_max, aspect_min)

  def apply(example, seed):
    image = example['image']
    if not image.dtype.is_floating:
      raise ValueError(f'random_erase fills with N(0, 1) noise, so it needs '
                       f'float images (after value_range or normalize), got '
                       f'{image.dtype.name}.')
    shape = tf.shape(image)
    size = tf.cast(shape[:2], tf.float32)
    draws = tf.random.stateless_uniform([5], fold_in(seed, 0))
    area = (area_min + (area_max - area_min) * draws[0]) * size[0] * size[1]
    log_aspect = tf.math.log(aspect_min) * (1 - 2 * draws[1])
    aspect = tf.exp(log_aspect)
    height = tf.minimum(tf.round(tf.sqrt(area * aspect)), size[0])
    width = tf.minimum(tf.round(tf.sqrt(area / aspect)), size[1])
    top = tf.floor(draws[2] * (size[0] - height + 1))
    left = tf.floor(draws[3] * (size[1] - width + 1))
    rows = tf.range(size[0])[:, None, None]
    cols = tf.range(size[1])[None, :, None]
    inside = ((rows >= top) & (rows < top + height) & (cols >= left) &
              (cols < left + width) & (draws[4] < prob))
    noise = tf.random.stateless_normal(shape, fold_in(seed, 1),
                                       dtype=image.dtype)
    return _with(example, image=tf.where(inside, noise, image))
  return apply


def value_range(lo: float, hi: float, in_min: float = 0,
                in_max: float = 255) -> Op:
  """Maps pixel values [in_min, in_max] linearly onto [lo, hi], float32.

  Written as lo * (1 - t) + hi * t so both ends map exactly.
  """
  if in_max <= in_min:
    raise ValueError(f'value_range: need in_min < in_max, got {in_min}, '
                     f'{in_max}.')

  def apply(example, seed):
    del seed
    t = (tf.cast(example['image'], tf.float32) - in_min) / (in_max - in_min)
    return _with(example, image=lo * (1.0 - t) + hi * t)
  return apply


def normalize(mean: Union[float, Sequence[float]],
              std: Union[float, Sequence[float]]) -> Op:
  """(image - mean) / std per channel, float32, in the current value scale."""
  def apply(example, seed):
    del seed
    image = tf.cast(example['image'], tf.float32)
    mean_ = tf.constant(mean, tf.float32)
    std_ = tf.constant(std, tf.float32)
    return _with(example, image=(image - mean_) / std_)
  return apply


def onehot(num_classes: int, on: float = 1.0, off: float = 0.0,
           key: str = 'label', key_result: str = 'labels') -> Op:
  """One-hot float32 `key_result` [num_classes] from the integer `key`.

  The integer `key` is dropped (copy it first to keep it). Label smoothing
  can be had here with on/off values or, more usually, in the loss.
  """
  if not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f'onehot: num_classes must be a positive int, got '
                     f'{num_classes!r}.')

  def apply(example, seed):
    del seed
    example = dict(example)
    label = example.pop(key) if key != key_result else example[key]
    example[key_result] = tf.one_hot(label, num_classes, on_value=on,
                                     off_value=off, dtype=tf.float32)
    return example
  return apply


def keep(*keys: str) -> Op:
  """Keeps only `keys` of the example."""
  def apply(example, seed):
    del seed
    missing = [k for k in keys if k not in example]
    if missing:
      raise ValueError(f'keep: keys {missing} are not in the example; it has '
                       f'{sorted(example)}.')
    return {k: example[k] for k in keys}
  return apply


def copy(source: str, target: str) -> Op:
  """Copies `source` to `target` (e.g. copy('label', 'label_id'))."""
  def apply(example, seed):
    del seed
    return _with(example, **{target: example[source]})
  return apply


# ----------------------------------------------------------------------------
# Semantic segmentation: mmsegmentation's training pipeline (RandomResize,
# RandomCrop with cat_max_ratio, RandomFlip, PhotoMetricDistortion, Pad) and
# its label-id conventions, on {'image': uint8 [H, W, C], 'label_map': uint8
# [H, W, 1]} examples (see the module docstring for SegFormer's specs).


def _scale_edges(scale: Size, op_name: str) -> Tuple[int, int]:
  """(longest, shortest) of mmcv's keep-ratio `scale`, whose orientation
  does not matter ((2048, 512) is mmcv's (width, height))."""
  try:
    first, second = _size_pair(scale, op_name)
  except ValueError:
    raise ValueError(f'{op_name}: scale must be a positive int or a pair of '
                     f'them (the longest and shortest side allowed, in any '
                     f'order), got {scale!r}.') from None
  return max(first, second), min(first, second)


def _fit_size(image: tf.Tensor, long_edge, short_edge) -> tf.Tensor:
  """mmcv's rescale_size: the factor that brings the long side to at most
  `long_edge` and the short side to at most `short_edge`, each side scaled
  and rounded as int(side * factor + 0.5), in float64 as Python computes
  it. At least one pixel (mmcv would fail on a zero side)."""
  sides = tf.cast(tf.shape(image)[:2], tf.float64)
  factor = tf.minimum(long_edge / tf.reduce_max(sides),
                      short_edge / tf.reduce_min(sides))
  return tf.maximum(tf.cast(tf.floor(sides * factor + 0.5), tf.int32), 1)


def rescale(scale: Size = (2048, 512), method: str = 'bilinear',
            label_map: bool = True) -> Op:
  """Resizes keeping the aspect ratio as large as fits in `scale`: the long
  side at most max(scale), the short side at most min(scale) (mmseg's
  Resize(scale, keep_ratio=True); its ADE20K test pipeline is
  rescale((2048, 512), label_map=False), the label map staying at the
  original resolution for the metric). `method` one of TF_METHODS; a
  'label_map' goes by nearest neighbour unless label_map=False.
  """
  long_edge, short_edge = _scale_edges(scale, 'rescale')
  _check_method('rescale', method, False)

  def apply(example, seed):
    del seed
    image = example['image']
    new_size = _fit_size(image, float(long_edge), float(short_edge))
    labels = _resized_labels(example, new_size) if label_map else {}
    return _with(example, image=_resize(image, new_size, method), **labels)
  return apply


def random_resize(scale: Size = (2048, 512),
                  ratio_range: Sequence[float] = (0.5, 2.0),
                  method: str = 'bilinear') -> Op:
  """mmseg's RandomResize(scale, ratio_range, keep_ratio=True): a ratio r
  uniform in `ratio_range`, the target (int(scale[0] * r), int(scale[1] *
  r)), then `rescale` to it (image by `method`, 'label_map' by nearest
  neighbour). Sizes are mmcv's to the pixel; the resampling is
  tf.image.resize, not cv2's (both not antialiased).
  """
  long_edge, short_edge = _scale_edges(scale, 'random_resize')
  _check_method('random_resize', method, False)
  if not (isinstance(ratio_range, (tuple, list)) and len(ratio_range) == 2 and
          all(isinstance(r, (int, float)) for r in ratio_range) and
          0 < ratio_range[0] <= ratio_range[1]):
    raise ValueError(f'random_resize: ratio_range must be (low, high) with '
                     f'0 < low <= high, got {ratio_range!r}.')
  low, high = (float(r) for r in ratio_range)

  def apply(example, seed):
    image = example['image']
    ratio = tf.random.stateless_uniform([], seed, dtype=tf.float64) * (
        high - low) + low
    # mmcv truncates the target scale to whole pixels before fitting.
    new_size = _fit_size(image, tf.floor(long_edge * ratio),
                         tf.floor(short_edge * ratio))
    return _with(example, image=_resize(image, new_size, method),
                 **_resized_labels(example, new_size))
  return apply


# mmseg's RandomCrop retries a crop that one class dominates this often.
CROP_ATTEMPTS = 10


def random_crop(size: Size, cat_max_ratio: float = 1.0,
                ignore_index: int = IGNORE_INDEX) -> Op:
  """mmseg's RandomCrop: a `size` (int or (height, width)) window at a
  uniform position, cut from image and 'label_map' alike; a side shorter
  than the window is kept whole (pad afterwards). With cat_max_ratio < 1
  a window is accepted only if it holds more than one class and no class
  covers cat_max_ratio or more of its pixels (`ignore_index` not counted);
  up to CROP_ATTEMPTS windows are tried, then one more is taken unchecked.
  """
  crop_height, crop_width = _size_pair(size, 'random_crop')
  if not (isinstance(cat_max_ratio, (int, float)) and
          0 < cat_max_ratio <= 1):
    raise ValueError(f'random_crop: cat_max_ratio must lie in (0, 1] (1 '
                     f'never retries), got {cat_max_ratio!r}.')
  _check_label_id('random_crop', 'ignore_index', ignore_index)

  def apply(example, seed):
    image = example['image']
    shape = tf.shape(image)
    height = tf.minimum(crop_height, shape[0])
    width = tf.minimum(crop_width, shape[1])

    def window(attempt):
      attempt_seed = fold_in(seed, attempt)
      top = tf.random.stateless_uniform(
          [], fold_in(attempt_seed, 0), 0, shape[0] - height + 1, tf.int32)
      left = tf.random.stateless_uniform(
          [], fold_in(attempt_seed, 1), 0, shape[1] - width + 1, tf.int32)
      return [top, left, 0], [height, width, -1]

    attempt = tf.constant(0)
    if cat_max_ratio < 1:
      label_map = _label_map(example, 'random_crop with cat_max_ratio < 1')

      def balanced(attempt):
        crop = tf.slice(label_map, *window(attempt))
        counts = tf.math.bincount(tf.cast(tf.reshape(crop, [-1]), tf.int32),
                                  minlength=256, maxlength=256,
                                  dtype=tf.int64)
        counts = tf.tensor_scatter_nd_update(counts, [[ignore_index]], [0])
        classes = tf.math.count_nonzero(counts)
        share = (tf.cast(tf.reduce_max(counts), tf.float64) /
                 tf.cast(tf.reduce_sum(counts), tf.float64))
        return (classes > 1) & (share < cat_max_ratio)
      attempt = tf.while_loop(
          lambda attempt: (attempt < CROP_ATTEMPTS) & ~balanced(attempt),
          lambda attempt: [attempt + 1], [attempt])[0]
    begin, crop_size = window(attempt)
    cropped = {key: tf.slice(example[key], begin, crop_size)
               for key in ('image', LABEL_KEY) if key in example}
    static = [None if known is None else min(side, known)
              for side, known in zip((crop_height, crop_width),
                                     image.shape[:2])]
    for key, value in cropped.items():
      value.set_shape(static + [example[key].shape[-1]])
    return _with(example, **cropped)
  return apply


def pad(size: Size, value: float = 0, label_value: int = IGNORE_INDEX) -> Op:
  """Pads image and 'label_map' at the bottom and right to `size` (int or
  (height, width)): the image with `value` (in its current scale: 0 after
  normalize is the mean colour, as mmseg pads after normalising), the
  label map with `label_value`. The result's shape is static; an image
  larger than `size` is an error (crop first).
  """
  pad_height, pad_width = _size_pair(size, 'pad')
  if not isinstance(value, (int, float)) or isinstance(value, bool):
    raise ValueError(f'pad: value must be a number, got {value!r}.')
  _check_label_id('pad', 'label_value', label_value)

  def apply(example, seed):
    del seed
    image = example['image']
    if image.dtype.is_integer and not (
        float(value).is_integer() and
        image.dtype.min <= value <= image.dtype.max):
      raise ValueError(f'pad: value {value!r} is not a {image.dtype.name} '
                       f'pixel; pad after value_range / normalize for '
                       f'other values.')
    too_large = f'pad: the image is larger than size {(pad_height, pad_width)}'
    if any(known is not None and known > side
           for known, side in zip(image.shape[:2], (pad_height, pad_width))):
      raise ValueError(f'{too_large}: {image.shape[:2]}; crop it first '
                       f'(random_crop, central_crop).')
    shape = tf.shape(image)
    with tf.control_dependencies([tf.debugging.assert_less_equal(
        shape[:2], [pad_height, pad_width], message=too_large)]):
      paddings = [[0, pad_height - shape[0]], [0, pad_width - shape[1]],
                  [0, 0]]
    padded = {'image': tf.pad(image, paddings,
                              constant_values=tf.cast(value, image.dtype))}
    if LABEL_KEY in example:
      label_map = example[LABEL_KEY]
      padded[LABEL_KEY] = tf.pad(label_map, paddings, constant_values=tf.cast(
          label_value, label_map.dtype))
    for key, padded_value in padded.items():
      padded_value.set_shape([pad_height, pad_width, example[key].shape[-1]])
    return _with(example, **padded)
  return apply


def photometric_distortion(brightness_delta: float = 32,
                           contrast_range: Sequence[float] = (0.5, 1.5),
                           saturation_range: Sequence[float] = (0.5, 1.5),
                           hue_delta: int = 18) -> Op:
  """mmseg's PhotoMetricDistortion on uint8 images; the label map is left
  alone. Each step with probability 1/2: brightness (add uniform
  +-brightness_delta), contrast (multiply by a factor in contrast_range;
  mmseg's contrast does not subtract the mean), saturation (multiply HSV's
  S by a factor in saturation_range), hue (shift by an integer in
  [-hue_delta, hue_delta) of cv2's 180-step hue circle, 2 degrees a step);
  the contrast step comes before or after the HSV steps with probability
  1/2. Brightness and contrast truncate to uint8 as mmcv does. The HSV
  steps work in tf.image's float HSV; cv2 (mmcv) quantises H to 180 and S
  to 256 levels and rounds back to uint8 after each of the two steps, so
  where those steps apply pixels differ from mmcv's (opencv 5.1, the same
  factor and shift, uniform random pixels) by 0.5 levels on average and 5
  at most. Grey images (1 channel) get brightness and contrast only.
  """
  ranges = {'contrast_range': contrast_range,
            'saturation_range': saturation_range}
  for name, value in ranges.items():
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and
            all(isinstance(v, (int, float)) for v in value) and
            0 <= value[0] <= value[1]):
      raise ValueError(f'photometric_distortion: {name} must be (low, high) '
                       f'with 0 <= low <= high, got {value!r}.')
  if not (isinstance(brightness_delta, (int, float)) and
          0 <= brightness_delta <= 255):
    raise ValueError(f'photometric_distortion: brightness_delta must lie in '
                     f'[0, 255], got {brightness_delta!r}.')
  if not (isinstance(hue_delta, int) and 0 <= hue_delta <= 90):
    raise ValueError(f'photometric_distortion: hue_delta must be an int in '
                     f'0..90 (cv2 hue steps of 2 degrees), got '
                     f'{hue_delta!r}.')

  def apply(example, seed):
    image = example['image']
    channels = image.shape[-1]
    if image.dtype != tf.uint8 or channels not in (1, 3):
      raise ValueError(f'photometric_distortion works on uint8 images of 1 '
                       f'or 3 channels (before value_range / normalize), got '
                       f'{image.dtype.name} with {channels} channels.')
    draws = tf.random.stateless_uniform([8], fold_in(seed, 0))
    # Five fair coins: brightness, contrast first, contrast, saturation, hue.
    coins = tf.unstack(draws[:5] < 0.5)
    apply_brightness, contrast_first, apply_contrast = coins[:3]
    apply_saturation, apply_hue = coins[3:]

    def between(draw, low, high):
      return low + (high - low) * draw

    def truncate(pixels):  # mmcv: clip to 0..255, astype(uint8)
      return tf.floor(tf.clip_by_value(pixels, 0.0, 255.0))

    def maybe(coin, step, pixels):  # a skipped step costs nothing
      return tf.cond(coin, lambda: step(pixels), lambda: pixels)

    def brightness(pixels):
      return truncate(pixels + between(draws[5], -brightness_delta,
                                       brightness_delta))

    def contrast(pixels):
      return truncate(pixels * between(draws[6], *contrast_range))

    def hsv_steps(pixels):
      hue, saturation, value = tf.unstack(
          tf.image.rgb_to_hsv(pixels / 255.0), axis=-1)
      factor = tf.where(apply_saturation,
                        between(draws[7], *saturation_range), 1.0)
      saturation = tf.clip_by_value(saturation * factor, 0.0, 1.0)
      # numpy's randint(-d, d), which mmseg draws, excludes d.
      shift = tf.random.stateless_uniform(
          [], fold_in(seed, 1), -hue_delta, max(hue_delta, 1), tf.int32)
      hue += tf.where(apply_hue, tf.cast(shift, tf.float32) / 180.0, 0.0)
      hue -= tf.floor(hue)  # back onto the circle [0, 1)
      rgb = tf.image.hsv_to_rgb(tf.stack([hue, saturation, value], -1))
      return tf.clip_by_value(tf.round(rgb * 255.0), 0.0, 255.0)

    pixels = maybe(apply_brightness, brightness, tf.cast(image, tf.float32))
    pixels = maybe(contrast_first & apply_contrast, contrast, pixels)
    if channels == 3:
      pixels = maybe(apply_saturation | apply_hue, hsv_steps, pixels)
    pixels = maybe(~contrast_first & apply_contrast, contrast, pixels)
    return _with(example, image=tf.cast(pixels, tf.uint8))
  return apply


def reduce_labels() -> Op:
  """mmseg's reduce_zero_label (ADE20K, whose 0 is 'other'): 0 -> 255
  (ignored), k -> k - 1, 255 stays 255."""
  def apply(example, seed):
    del seed
    label_map = _label_map(example, 'reduce_labels')
    ignored = (label_map == 0) | (label_map == IGNORE_INDEX)
    return _with(example, **{LABEL_KEY: tf.where(
        ignored, tf.constant(IGNORE_INDEX, tf.uint8), label_map - 1)})
  return apply


def map_labels(table: Union[Dict[int, int], Sequence[int]]) -> Op:
  """Maps label ids through `table`: {id: new id}, or a list whose i-th
  entry is the new id of id i. Ids the table does not map become 255
  (ignored): e.g. Cityscapes' gtFine label ids to its 19 training ids,
  map_labels({7: 0, 8: 1, 11: 2, ...}) (the 'cityscapes' TFDS source maps
  them itself)."""
  if isinstance(table, (list, tuple)):
    table = dict(enumerate(table))
  if not isinstance(table, dict) or not table:
    raise ValueError(f'map_labels: table must be a non-empty dict {{id: new '
                     f'id}} or list of new ids, got {table!r}.')
  lookup = [IGNORE_INDEX] * 256
  for label_id, new_id in table.items():
    _check_label_id('map_labels', 'every id of the table', label_id)
    _check_label_id('map_labels', 'every new id of the table', new_id)
    lookup[label_id] = new_id

  def apply(example, seed):
    del seed
    label_map = _label_map(example, 'map_labels')
    return _with(example, **{LABEL_KEY: tf.gather(
        tf.constant(lookup, tf.uint8), tf.cast(label_map, tf.int32))})
  return apply


# The spec vocabulary: an explicit table, not a registry filled by imports.
OPS: Dict[str, Callable[..., Op]] = {
    'decode': decode,
    'resize': resize,
    'resize_small': resize_small,
    'resize_keep_ratio': resize_keep_ratio,
    'central_crop': central_crop,
    'inception_crop': inception_crop,
    'flip_lr': flip_lr,
    'randaug': randaug,
    'random_erase': random_erase,
    'value_range': value_range,
    'normalize': normalize,
    'onehot': onehot,
    'keep': keep,
    'copy': copy,
    'rescale': rescale,
    'random_resize': random_resize,
    'random_crop': random_crop,
    'pad': pad,
    'photometric_distortion': photometric_distortion,
    'reduce_labels': reduce_labels,
    'map_labels': map_labels,
}
RANDOM_OPS = frozenset({'inception_crop', 'flip_lr', 'randaug',
                        'random_erase', 'random_resize', 'random_crop',
                        'photometric_distortion'})
# The ops that move a 'label_map' with the image.
GEOMETRIC_OPS = frozenset({'resize', 'resize_small', 'resize_keep_ratio',
                           'central_crop', 'inception_crop', 'flip_lr',
                           'rescale', 'random_resize', 'random_crop', 'pad'})


# ----------------------------------------------------------------------------
# Spec parsing.


def parse_spec(spec: str, ops: Optional[Dict[str, Callable]] = None
               ) -> List[Tuple[str, tuple, dict]]:
  """Splits a spec into (op name, positional args, keyword args) triples,
  checked against `ops` (name -> op factory; default: this module's OPS;
  `volumes.py` passes its own)."""
  ops = OPS if ops is None else ops
  if not isinstance(spec, str):
    raise ValueError(f'A preprocessing spec must be a string, got {spec!r}.')
  if not spec.strip():
    return []
  parsed = []
  for op_text in spec.split('|'):
    op_text = op_text.strip()
    if not op_text:
      raise ValueError(f'Empty op in preprocessing spec {spec!r} (two '
                       f"'|' in a row, or one at an end).")
    try:
      node = ast.parse(op_text, mode='eval').body
    except SyntaxError as e:
      raise ValueError(f'Cannot parse op {op_text!r} of preprocessing spec '
                       f'{spec!r}: {e.msg}.') from None
    if isinstance(node, ast.Name):
      name, args, kwargs = node.id, (), {}
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
      name = node.func.id
      try:
        args = tuple(ast.literal_eval(arg) for arg in node.args)
        if any(keyword.arg is None for keyword in node.keywords):
          raise ValueError('** arguments are not allowed')
        kwargs = {keyword.arg: ast.literal_eval(keyword.value)
                  for keyword in node.keywords}
      except ValueError as e:
        raise ValueError(
            f'Op {op_text!r} of preprocessing spec {spec!r}: arguments must '
            f'be Python literals ({e}).') from None
    else:
      raise ValueError(f'Op {op_text!r} of preprocessing spec {spec!r} must '
                       f'look like NAME or NAME(ARGS).')
    if name not in ops:
      raise ValueError(f'Unknown preprocessing op {name!r} in spec {spec!r}; '
                       f'valid ops: {sorted(ops)}.')
    try:
      inspect.signature(ops[name]).bind(*args, **kwargs)
    except TypeError as e:
      raise ValueError(
          f'Bad arguments for op {op_text!r} in spec {spec!r}: {e}; the op '
          f'takes {name}{inspect.signature(ops[name])}.') from None
    parsed.append((name, args, kwargs))
  return parsed


def build(spec: str) -> Callable[[Example], Example]:
  """The function that applies `spec` to one example.

  Random ops need the example's 'rng' seed ([2] int64); it is removed from
  the result.
  """
  ops = [(name, OPS[name](*args, **kwargs))
         for name, args, kwargs in parse_spec(spec)]

  def preprocess(example: Example) -> Example:
    example = dict(example)
    rng = example.pop(RNG_KEY, None)
    for position, (name, op) in enumerate(ops):
      seed = None
      if name in RANDOM_OPS:
        if rng is None:
          raise ValueError(
              f'Op {name!r} of spec {spec!r} is random and needs the '
              f"example's {RNG_KEY!r} seed; evaluation specs should have no "
              f'random ops.')
        seed = fold_in(rng, position)
      example = op(example, seed)
    return example
  return preprocess
