"""RandAugment ops against PIL (an independent implementation) and exact
geometric references; the policy's determinism and errors."""

import numpy as np
from PIL import Image, ImageEnhance, ImageOps
import pytest

from vit_jax.data import preprocess
from vit_jax.data import randaugment as ra
from vit_jax.data.tensorflow_cpu import tf


@pytest.fixture(scope='module')
def rgb():
  """A smooth image with texture and a limited range (so auto_contrast and
  equalize have work to do)."""
  rng = np.random.default_rng(0)
  y, x = np.mgrid[0:24, 0:20]
  base = np.stack([x * 5 + 30, y * 4 + 40, (x + y) * 3 + 20], axis=-1)
  return np.clip(base + rng.integers(-20, 20, base.shape), 0,
                 255).astype(np.uint8)


def _pil(image):
  return Image.fromarray(image)


def _tf(fn, image, *args):
  return fn(tf.constant(image), *args).numpy()


@pytest.mark.parametrize('name, ours, reference, tolerance', [
    ('invert', lambda im: ra.invert(im), ImageOps.invert, 0),
    ('posterize', lambda im: ra.posterize(im, 3),
     lambda im: ImageOps.posterize(im, 3), 0),
    ('solarize', lambda im: ra.solarize(im, 100),
     lambda im: ImageOps.solarize(im, 100), 0),
    ('auto_contrast', ra.auto_contrast, ImageOps.autocontrast, 1),
    ('equalize', ra.equalize, ImageOps.equalize, 0),
    ('color', lambda im: ra.color(im, 1.9),
     lambda im: ImageEnhance.Color(im).enhance(1.9), 2),
    ('contrast', lambda im: ra.contrast(im, 0.4),
     lambda im: ImageEnhance.Contrast(im).enhance(0.4), 2),
    ('brightness', lambda im: ra.brightness(im, 1.3),
     lambda im: ImageEnhance.Brightness(im).enhance(1.3), 1),
    ('sharpness', lambda im: ra.sharpness(im, 2.5),
     lambda im: ImageEnhance.Sharpness(im).enhance(2.5), 3),
])
def test_photometric_ops_match_pil(name, ours, reference, tolerance, rgb):
  got = ours(tf.constant(rgb)).numpy().astype(int)
  expected = np.asarray(reference(_pil(rgb))).astype(int)
  assert got.shape == expected.shape
  difference = np.abs(got - expected)
  assert difference.max() <= tolerance, (name, difference.max())
  if name not in ('invert', 'solarize', 'posterize'):
    assert (difference == 0).mean() > 0.9, name  # mostly exact
  assert not np.array_equal(got, rgb), name  # the op did something


def test_grey_images_work(rgb):
  grey = rgb[..., :1]
  np.testing.assert_array_equal(_tf(ra.color, grey, 1.9), grey)
  expected = np.asarray(ImageOps.equalize(_pil(grey[..., 0])))
  np.testing.assert_array_equal(_tf(ra.equalize, grey)[..., 0], expected)


def test_solarize_add_and_cutout(rgb):
  got = _tf(ra.solarize_add, rgb, 50)
  expected = np.where(rgb < 128, np.minimum(rgb.astype(int) + 50, 255), rgb)
  np.testing.assert_array_equal(got, expected)
  got = _tf(ra.cutout, rgb, 5, 18, 3)  # rows 2..7, cols 15..19 (clipped)
  expected = rgb.copy()
  expected[2:8, 15:20] = 128
  np.testing.assert_array_equal(got, expected)


def test_geometric_ops_are_exact_affine_maps(rgb):
  fill = np.full_like(rgb, 128)
  shifted = fill.copy()
  shifted[:, :-3] = rgb[:, 3:]  # output x takes input x + 3
  np.testing.assert_array_equal(_tf(ra.translate_x, rgb, 3.0), shifted)
  shifted = fill.copy()
  shifted[2:] = rgb[:-2]
  np.testing.assert_array_equal(_tf(ra.translate_y, rgb, -2.0), shifted)
  square = rgb[:19, :19]
  np.testing.assert_array_equal(_tf(ra.rotate, square, 90.0),
                                np.rot90(square, k=1))
  np.testing.assert_array_equal(_tf(ra.rotate, square, 0.0), square)
  # Shear: output (x, y) takes input (round(x + 0.25 y), y).
  got = _tf(ra.shear_x, rgb, 0.25)
  expected = fill.copy()
  for y in range(rgb.shape[0]):
    for x in range(rgb.shape[1]):
      source = int(np.floor(x + 0.25 * y + 0.5))
      if source < rgb.shape[1]:
        expected[y, x] = rgb[y, source]
  assert (got != expected).any(axis=-1).mean() < 0.02  # rounding ties


def test_policy_is_deterministic_in_the_seed_and_varied(rgb):
  image = tf.constant(rgb)
  outputs = [ra.randaugment(image, tf.constant([seed, 7], tf.int64), 2, 15)
             .numpy() for seed in range(40)]
  again = ra.randaugment(image, tf.constant([3, 7], tf.int64), 2, 15).numpy()
  np.testing.assert_array_equal(again, outputs[3])
  distinct = {output.tobytes() for output in outputs}
  assert len(distinct) > 15  # 16 ops x 2 layers, each kept w.p. 0.5
  assert any(np.array_equal(output, rgb) for output in outputs)  # skipped
  np.testing.assert_array_equal(  # magnitude 0 changes only some ops
      ra.randaugment(image, tf.constant([1, 1], tf.int64), 0, 15).numpy(),
      rgb)


def test_randaug_in_a_spec(rgb):
  build = preprocess.build('randaug(2, 15)|value_range(-1, 1)')
  example = {'image': tf.constant(rgb), 'label': tf.constant(1, tf.int64),
             'rng': tf.constant([5, 6], tf.int64)}
  first = build(example)['image'].numpy()
  np.testing.assert_array_equal(build(example)['image'].numpy(), first)
  assert first.dtype == np.float32 and first.shape == rgb.shape


@pytest.mark.parametrize('spec, pattern', [
    ('randaug(2, 40)', r'magnitude must lie in \[0, 30\].*got 40'),
    ('randaug(-1)', 'num_layers must be an integer >= 0, got -1'),
    ('randaug(2, 10, 1.5)', r'prob must lie in \[0, 1\], got 1.5'),
])
def test_bad_settings_are_named(spec, pattern):
  with pytest.raises(ValueError, match=pattern):
    preprocess.build(spec)


def test_float_images_are_refused(rgb):
  with pytest.raises(ValueError, match='uint8 images .*before value_range'):
    ra.randaugment(tf.constant(rgb, tf.float32),
                   tf.constant([0, 0], tf.int64))


def test_training_stream_with_randaug_resumes_exactly(data_dir):
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  config = {'name': 'digits', 'data_dir': data_dir, 'cache': True,
            'pp_train': 'randaug(2, 10)|value_range(-1, 1)|onehot(10)'}
  stream = data.train_iterator(config, 16, seed=3)
  batches = [next(stream) for _ in range(3)]
  resumed = next(data.train_iterator(config, 16, seed=3, start_step=2))
  np.testing.assert_array_equal(resumed['image'], batches[2]['image'])
  plain = next(data.train_iterator(
      {**config, 'pp_train': 'value_range(-1, 1)|onehot(10)'}, 16, seed=3))
  np.testing.assert_array_equal(plain['labels'], batches[0]['labels'])
  changed = (plain['image'] != batches[0]['image']).any(axis=(1, 2, 3))
  assert 4 <= changed.sum() < 16  # some examples augmented, some not


def test_random_erase_fills_one_rectangle_with_noise():
  build = preprocess.build('random_erase(1.0, 0.1, 0.2)')
  image = tf.fill([20, 30, 3], 5.0)
  areas = []
  for seed in range(20):
    out = build({'image': image, 'rng': tf.constant([seed, 0], tf.int64)})
    erased = (out['image'].numpy() != 5.0).any(axis=-1)  # [H, W]
    rows, cols = np.flatnonzero(erased.any(1)), np.flatnonzero(erased.any(0))
    assert erased[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1].all()
    assert erased.sum() == len(rows) * len(cols)  # one rectangle
    areas.append(erased.mean())
    noise = out['image'].numpy()[erased]
    assert abs(noise.mean()) < 0.5 and 0.5 < noise.std() < 1.5
  assert 0.07 < min(areas) and max(areas) < 0.27  # 10-20% up to rounding
  assert len(set(areas)) > 5
  never = preprocess.build('random_erase(0.0)')
  np.testing.assert_array_equal(
      never({'image': image, 'rng': tf.constant([1, 0], tf.int64)})['image'],
      image)
  with pytest.raises(ValueError, match='float images'):
    build({'image': tf.zeros([4, 4, 3], tf.uint8),
           'rng': tf.constant([1, 0], tf.int64)})
  with pytest.raises(ValueError, match=r'area_min <= area_max <= 1'):
    preprocess.build('random_erase(0.5, 0.5, 0.1)')


# The training specs of the ImageNet recipes, shrunk to 16 pixels: in a
# tf.data graph the images have unknown height and width (as TFDS's ImageNet
# and the image folders give them), so every op must keep the channel count
# static for the next (randaug needs it).
_TRAINING_SPECS = [
    'decode|inception_crop(16)|flip_lr|randaug(2, 15)|value_range(-1, 1)|'
    'onehot(10)',  # vit_i1k, mixer_i1k
    'decode|inception_crop(16)|flip_lr|randaug(2, 9)|value_range(-1, 1)|'
    'random_erase(0.25)|onehot(10)',  # swin_i1k, convmixer_i1k
    "decode|inception_crop(16, area_min=8, method='bicubic')|flip_lr|"
    'randaug(2, 9)|value_range(-1, 1)|random_erase(0.25)|'
    'onehot(10, 0.9, 0.01)',  # xcit_i1k
    'decode(channels=3)|inception_crop(8)|flip_lr|randaug(2, 15)|'
    'value_range(-1, 1)|onehot(10)',  # the reproduction on digits
]


@pytest.mark.parametrize('spec', _TRAINING_SPECS)
@pytest.mark.parametrize('channels', [1, 3])
def test_training_specs_keep_the_channel_count_in_tf_data(spec, channels,
                                                          rgb):
  image = rgb if channels == 3 else rgb[..., :1]
  # Height and width unknown to the graph, channels known: what a TFDS
  # image feature gives.
  images = tf.data.Dataset.from_generator(
      lambda: iter([image, image[:20, :17]]),
      output_signature=tf.TensorSpec([None, None, channels], tf.uint8))
  build = preprocess.build(spec)

  def apply(index, image):
    return build({'image': image, 'label': tf.constant(3, tf.int64),
                  'rng': tf.stack([index, tf.constant(7, tf.int64)])})
  examples = list(images.enumerate().map(apply).as_numpy_iterator())
  size = 8 if 'inception_crop(8)' in spec else 16
  want_channels = 3 if 'channels=3' in spec else channels
  for example in examples:
    assert example['image'].shape == (size, size, want_channels)
    assert np.isfinite(example['image']).all()
    assert example['labels'].argmax() == 3


def test_every_image_op_keeps_a_static_channel_count():
  """Each op that takes an image, traced on [None, None, 3]: the channel
  count survives, so any order in a spec is safe."""
  specs = ['inception_crop(8)', 'resize(8)', 'resize_small(8)',
           'central_crop(4)', 'flip_lr', 'randaug(2, 10)', 'decode',
           'decode(channels=1)', 'value_range(0, 1)|random_erase(1.0)',
           'value_range(0, 1)|normalize(0.5, 0.2)']
  for spec in specs:
    build = preprocess.build(spec)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def traced(image, build=build):
      return build({'image': image,
                    'rng': tf.constant([1, 2], tf.int64)})['image']
    shape = traced.get_concrete_function().output_shapes
    want = 1 if 'channels=1' in spec else 3
    assert shape[-1] == want, (spec, shape)
