"""RandAugment (Cubuk et al. 2020, "RandAugment: Practical automated data
augmentation with a reduced search space"), as the ViT / AugReg recipes use
it: `randaug(2, 15)` in a preprocessing spec, before value_range.

Each of `num_layers` layers picks one of OP_NAMES uniformly and applies it,
with probability `prob`, at strength `magnitude` (0..30; the paper's scale
has 10 as its "maximum", AugReg uses 10, 15 and 20). Magnitude m maps to
op arguments as in the TF EfficientNet / AutoAugment code the ViT recipes
used (facts of that recipe, not its code):

  rotate          +-30 * m/10 degrees
  shear_x / _y    +-0.3 * m/10 (affine shear factor)
  translate_x/_y  +-(100/224) * m/10 of the image side (100 px at 224 px)
  cutout          a square of side 2 * (40/224) * m/10 of the image side
  posterize       keep int(4 * m/10) bits (at least 0, at most 8)
  solarize        invert pixels >= int(256 * m/10)
  solarize_add    add int(110 * m/10) to pixels < 128
  color, contrast, brightness, sharpness: blend factor 1.8 * m/10 + 0.1
  auto_contrast, equalize, invert: no argument
The signs are random; geometric ops and cutout fill with grey (128).
Translation and cutout are fractions of the image side here so they scale
with the image (the reference's pixel constants were for 224 px).

Images are uint8 [H, W, C], C = 1 or 3 (on grey images 'color' changes
nothing). Randomness is TF's stateless ops on the example's seed, so the
augmentation is reproducible and resumable like every random op here.
"""

import math
from typing import Callable, List, Tuple

from vit_jax.data.tensorflow_cpu import tf

FILL = 128
OP_NAMES = ('auto_contrast', 'equalize', 'invert', 'rotate', 'posterize',
            'solarize', 'solarize_add', 'color', 'contrast', 'brightness',
            'sharpness', 'shear_x', 'shear_y', 'translate_x', 'translate_y',
            'cutout')
MAX_MAGNITUDE = 30


# ----------------------------------------------------------------------------
# Ops on uint8 images [H, W, C]; each a plain function of explicit arguments.


def _to_uint8(image: tf.Tensor) -> tf.Tensor:
  """float -> uint8, clipped to [0, 255] and truncated (as PIL's blend)."""
  return tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)


def _grey(image: tf.Tensor) -> tf.Tensor:
  """Luma [H, W, 1] float32, ITU-R 601-2 weights, rounded to integers."""
  image = tf.cast(image, tf.float32)
  if image.shape[-1] == 1:
    return image
  weights = tf.constant([0.299, 0.587, 0.114], tf.float32)
  return tf.round(tf.reduce_sum(image * weights, axis=-1, keepdims=True))


def blend(degenerate: tf.Tensor, image: tf.Tensor, factor) -> tf.Tensor:
  """degenerate + factor * (image - degenerate): factor 1 is the image,
  0 the degenerate one, > 1 extrapolates; uint8 out."""
  degenerate = tf.cast(degenerate, tf.float32)
  image = tf.cast(image, tf.float32)
  return _to_uint8(degenerate + factor * (image - degenerate))


def invert(image):
  return 255 - image


def posterize(image, bits):
  """Keeps the top `bits` bits of each value."""
  shift = tf.cast(8 - tf.clip_by_value(bits, 0, 8), tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def solarize(image, threshold):
  """Inverts the values >= threshold."""
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def solarize_add(image, addition, threshold=128):
  """Adds `addition` (clipped) to the values < threshold."""
  added = _to_uint8(tf.cast(image, tf.float32) + tf.cast(addition,
                                                         tf.float32))
  return tf.where(tf.cast(image, tf.int32) < threshold, added, image)


def auto_contrast(image):
  """Stretches each channel's [min, max] to [0, 255]."""
  def channel(values):  # [H, W]
    low = tf.cast(tf.reduce_min(values), tf.float32)
    high = tf.cast(tf.reduce_max(values), tf.float32)
    scale = 255.0 / tf.maximum(high - low, 1.0)
    stretched = _to_uint8(tf.cast(values, tf.float32) * scale - low * scale)
    return tf.where(high > low, stretched, values)
  return tf.stack([channel(image[..., c]) for c in range(image.shape[-1])],
                  axis=-1)


def equalize(image):
  """Histogram equalisation per channel, with PIL's lookup table: step =
  (pixels - count of the last non-empty bin) // 255, lut[i] = (step // 2 +
  pixels below i) // step; unchanged when step is 0."""
  def channel(values):  # [H, W]
    values = tf.cast(values, tf.int32)
    histogram = tf.math.bincount(tf.reshape(values, [-1]), minlength=256,
                                 maxlength=256)
    nonzero = tf.boolean_mask(histogram, histogram > 0)
    step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255
    below = tf.concat([[0], tf.cumsum(histogram)[:-1]], axis=0)  # [256]
    lut = (tf.maximum(step, 1) // 2 + below) // tf.maximum(step, 1)
    equalized = tf.gather(tf.clip_by_value(lut, 0, 255), values)
    return tf.cast(tf.where(step > 0, equalized, values), tf.uint8)
  return tf.stack([channel(image[..., c]) for c in range(image.shape[-1])],
                  axis=-1)


def color(image, factor):
  """Saturation: blend with the grey version."""
  return blend(tf.broadcast_to(_grey(image), tf.shape(image)), image, factor)


def contrast(image, factor):
  """Blend with the image's mean grey level (rounded)."""
  mean = tf.round(tf.reduce_mean(_grey(image)))
  return blend(tf.fill(tf.shape(image), mean), image, factor)


def brightness(image, factor):
  """Blend with black."""
  return blend(tf.zeros_like(image), image, factor)


def sharpness(image, factor):
  """Blend with a smoothed image: kernel [[1,1,1],[1,5,1],[1,1,1]] / 13 on
  the interior, border pixels kept."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  channels = image.shape[-1]
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, channels, 1])
  smooth = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel,
                                  strides=[1, 1, 1, 1], padding='VALID')[0]
  smooth = tf.round(smooth)
  interior = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]]) > 0
  degenerate = tf.where(interior,
                        tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]),
                        tf.cast(image, tf.float32))
  return blend(degenerate, image, factor)


def affine(image, transform):
  """Output pixel (x, y) takes input pixel (a0 x + a1 y + a2,
  b0 x + b1 y + b2) (nearest), grey outside. transform: 6 floats."""
  transform = tf.concat([tf.cast(transform, tf.float32),
                         tf.zeros([2], tf.float32)], axis=0)[None]  # [1, 8]
  output = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=transform,
      output_shape=tf.shape(image)[:2], fill_value=float(FILL),
      interpolation='NEAREST', fill_mode='CONSTANT')
  return output[0]


def rotate(image, degrees):
  """Rotation by `degrees` about the image centre."""
  height = tf.cast(tf.shape(image)[0], tf.float32)
  width = tf.cast(tf.shape(image)[1], tf.float32)
  cx, cy = (width - 1) / 2, (height - 1) / 2
  angle = tf.cast(degrees, tf.float32) * math.pi / 180
  cos, sin = tf.cos(angle), tf.sin(angle)
  return affine(image, tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                                 sin, cos, cy - sin * cx - cos * cy]))


def shear_x(image, level):
  return affine(image, tf.stack([1.0, level, 0.0, 0.0, 1.0, 0.0]))


def shear_y(image, level):
  return affine(image, tf.stack([1.0, 0.0, 0.0, level, 1.0, 0.0]))


def translate_x(image, pixels):
  return affine(image, tf.stack([1.0, 0.0, pixels, 0.0, 1.0, 0.0]))


def translate_y(image, pixels):
  return affine(image, tf.stack([1.0, 0.0, 0.0, 0.0, 1.0, pixels]))


def cutout(image, center_y, center_x, half_size):
  """Grey square of side 2 * half_size centred at (center_y, center_x),
  clipped to the image."""
  shape = tf.shape(image)
  rows = tf.range(shape[0])[:, None, None]
  cols = tf.range(shape[1])[None, :, None]
  inside = ((rows >= center_y - half_size) & (rows < center_y + half_size) &
            (cols >= center_x - half_size) & (cols < center_x + half_size))
  return tf.where(inside, tf.constant(FILL, image.dtype), image)


# ----------------------------------------------------------------------------
# The policy.


def _branches(image, magnitude: float, seed) -> List[Callable[[], tf.Tensor]]:
  """One zero-argument function per OP_NAMES entry, arguments drawn."""
  level = magnitude / 10.0
  sign = tf.where(tf.random.stateless_uniform([], fold(seed, 0)) < 0.5,
                  -1.0, 1.0)
  side = tf.cast(tf.shape(image)[:2], tf.float32)  # [H, W]
  center = tf.random.stateless_uniform(
      [2], fold(seed, 1), maxval=1.0) * side
  center = tf.cast(center, tf.int32)
  half = tf.cast(tf.round(40 / 224 * level * tf.reduce_min(side)), tf.int32)
  factor = 1.8 * level + 0.1
  return [
      lambda: auto_contrast(image),
      lambda: equalize(image),
      lambda: invert(image),
      lambda: rotate(image, sign * 30.0 * level),
      lambda: posterize(image, int(4 * level)),
      lambda: solarize(image, int(256 * level)),
      lambda: solarize_add(image, int(110 * level)),
      lambda: color(image, factor),
      lambda: contrast(image, factor),
      lambda: brightness(image, factor),
      lambda: sharpness(image, factor),
      lambda: shear_x(image, sign * 0.3 * level),
      lambda: shear_y(image, sign * 0.3 * level),
      lambda: translate_x(image, sign * 100 / 224 * level * side[1]),
      lambda: translate_y(image, sign * 100 / 224 * level * side[0]),
      lambda: cutout(image, center[0], center[1], half),
  ]


def fold(seed, value: int) -> tf.Tensor:
  """A [2] int64 seed derived from `seed` and `value`."""
  seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
  return tf.cast(tf.random.experimental.stateless_fold_in(seed, value),
                 tf.int64)


def check_settings(num_layers: int, magnitude: float, prob: float
                   ) -> Tuple[int, float, float]:
  if not isinstance(num_layers, int) or num_layers < 0:
    raise ValueError(f'randaug: num_layers must be an integer >= 0, got '
                     f'{num_layers!r}.')
  if not 0 <= magnitude <= MAX_MAGNITUDE:
    raise ValueError(f'randaug: magnitude must lie in [0, {MAX_MAGNITUDE}] '
                     f'(10 is the paper\'s maximum; AugReg uses 10-20), got '
                     f'{magnitude!r}.')
  if not 0 <= prob <= 1:
    raise ValueError(f'randaug: prob must lie in [0, 1], got {prob!r}.')
  return num_layers, float(magnitude), float(prob)


def randaugment(image: tf.Tensor, seed, num_layers: int = 2,
                magnitude: float = 10, prob: float = 0.5) -> tf.Tensor:
  """RandAugment of one uint8 image [H, W, C] with a [2] int64 seed."""
  num_layers, magnitude, prob = check_settings(num_layers, magnitude, prob)
  if image.dtype != tf.uint8:
    raise ValueError(f'randaug works on uint8 images (put it before '
                     f'value_range), got {image.dtype.name}.')
  if image.shape.rank != 3 or image.shape[-1] not in (1, 3):
    raise ValueError(f'randaug needs [H, W, 1 or 3] images, got shape '
                     f'{image.shape}.')
  for layer in range(num_layers):
    layer_seed = fold(seed, layer)
    choice = tf.random.stateless_uniform(
        [], fold(layer_seed, 0), minval=0, maxval=len(OP_NAMES),
        dtype=tf.int32)
    apply = tf.random.stateless_uniform([], fold(layer_seed, 1)) < prob
    augmented = tf.switch_case(
        choice, _branches(image, magnitude, fold(layer_seed, 2)))
    image = tf.ensure_shape(tf.where(apply, augmented, image), image.shape)
  return image
