"""The preprocessing ops' timm=True against timm's evaluation transform.

tests/golden/preprocess_timm.npz holds timm's output (torchvision on PIL
images; tests/support/make_golden_preprocess.py) for photo-like images,
noise and checkerboards, shrunk and enlarged, per interpolation, crop_pct
and crop mode; `predict.pretrained_crop_spec` (what `predict --pretrained`
runs) must give the same pixels.
"""

import json
import os

import numpy as np
import pytest

from vit_jax import predict

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden',
                      'preprocess_timm.npz')
# The goal: at most one step of 8 bits in [0, 1] (ToTensor's scale), per
# pixel; the ops are meant to be exact, and nearly every pixel is.
TOLERANCE = 1 / 255


def _golden():
  with np.load(GOLDEN) as data:
    images = {key.split('/', 1)[1]: data[key] for key in data.files
              if key.startswith('image/')}
    settings = json.loads(str(data['cases']))
    outputs = data['outputs']
  cases, start = [], 0
  for name, size, interpolation, crop_pct, crop_mode, mean in settings:
    length = size[0] * size[1] * images[name].shape[-1]
    expected = outputs[start:start + length].reshape(
        size[0], size[1], images[name].shape[-1])
    start += length
    cases.append(dict(image=images[name], expected=expected, name=name,
                      size=tuple(size), interpolation=interpolation,
                      crop_pct=crop_pct, crop_mode=crop_mode, mean=mean))
  assert start == outputs.size
  return cases


CASES = _golden()


@pytest.fixture(scope='module')
def tf():
  from vit_jax.data.tensorflow_cpu import tf as tensorflow  # pylint: disable=g-import-not-at-top
  return tensorflow


def _run(tf, spec, image):
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  result = preprocess.build(spec)({'image': tf.constant(image)})
  return result['image'].numpy()


def _ours(tf, case, timm=True):
  spec = predict.pretrained_crop_spec(case['size'], case['crop_pct'],
                                      case['interpolation'],
                                      case['crop_mode'], case['mean'])
  if not timm:  # the spec predict wrote before ('center' and 'squash')
    spec = spec.replace(', timm=True', '')
  return _run(tf, spec + '|value_range(0, 1)', case['image'])


def _differences(tf, cases, timm=True):
  """Per case: max |ours - timm| in [0, 1] units and the fraction of
  values that differ."""
  result = []
  for case in cases:
    ours = _ours(tf, case, timm)
    theirs = case['expected'].astype(np.float32) / 255
    assert ours.shape == theirs.shape, case['name']
    difference = np.abs(ours - theirs)
    result.append((float(difference.max()),
                   float(np.mean(difference > 1e-6))))
  return result


@pytest.mark.parametrize('crop_mode', ['center', 'squash', 'border'])
def test_matches_timm_eval_transform(tf, crop_mode):
  cases = [case for case in CASES if case['crop_mode'] == crop_mode]
  assert len(cases) >= 80
  kinds = {case['name'].split('_')[0] for case in cases}
  assert kinds == {'photo', 'noise', 'checker1', 'checker3', 'grey'}
  differences = _differences(tf, cases)
  for case, (largest, fraction) in zip(cases, differences):
    label = (case['name'], case['size'], case['interpolation'],
             case['crop_pct'])
    assert largest <= TOLERANCE + 1e-6, label
    assert fraction <= 0.01, label


def test_same_pixels_inside_tf_data_with_unknown_shapes(tf):
  # The ops' real use: a tf.data map, the image's size unknown when traced.
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  cases = [
      next(case for case in CASES if case['name'] == name and
           case['crop_mode'] == crop_mode)
      for name, crop_mode in (('photo_150x113', 'center'),
                              ('noise_23x29', 'squash'),
                              ('grey_61x47', 'border'))]
  for case in cases:
    spec = predict.pretrained_crop_spec(case['size'], case['crop_pct'],
                                        case['interpolation'],
                                        case['crop_mode'], case['mean'])
    channels = case['image'].shape[-1]
    dataset = tf.data.Dataset.from_generator(
        lambda image=case['image']: iter([{'image': image}]),
        output_signature={'image': tf.TensorSpec([None, None, channels],
                                                 tf.uint8)})
    ours = next(iter(dataset.map(preprocess.build(spec))))['image'].numpy()
    np.testing.assert_array_equal(ours, case['expected'])


def test_jpeg_files_decode_to_pils_pixels(tf):
  del tf
  with np.load(GOLDEN) as data:
    encoded, pil = data['jpeg/bytes'].tobytes(), data['jpeg/pil']
  ours = predict.spec_preprocess('', 3, decode_like_pil=True)(encoded)
  np.testing.assert_array_equal(ours, pil)
  # TensorFlow's default (fast) IDCT is what --pretrained used before.
  fast = predict.spec_preprocess('', 3)(encoded)
  assert np.abs(fast - pil).max() >= 2


def test_the_old_ops_fail_the_same_comparison(tf):
  # Without timm=True (tf.image.resize, no antialiasing, the long side
  # rounded, the centre floored) the golden cases are far off: the test
  # above can fail.
  cases = [case for case in CASES
           if case['interpolation'] in ('bicubic', 'bilinear') and
           case['crop_mode'] != 'border' and case['size'] == (24, 24)]
  largest = max(largest for largest, _ in _differences(tf, cases[::6],
                                                           timm=False))
  assert largest > 0.25


def test_shorter_side_truncates_the_longer_as_torchvision(tf):
  image = np.zeros((375, 500, 3), np.uint8)
  resized = _run(tf, "resize_small(248, 'bicubic', timm=True)", image)
  assert resized.shape == (248, 330, 3)  # 248 * 500 / 375 = 330.67
  resized = _run(tf, "resize_small(248, 'bicubic')", image)
  assert resized.shape == (248, 331, 3)  # the TensorFlow path rounds
  tall = _run(tf, "resize_small(248, 'bilinear', timm=True)",
              np.zeros((500, 375, 1), np.uint8))
  assert tall.shape == (330, 248, 1)


def test_centre_crop_offset_rounds_half_to_even(tf):
  ramp = np.arange(27, dtype=np.uint8).reshape(1, 27, 1) * np.ones(
      (24, 1, 1), np.uint8)
  # 27 - 24 = 3: torchvision starts at round(1.5) = 2, floor at 1.
  assert _run(tf, 'central_crop(24, timm=True)', ramp)[0, 0, 0] == 2
  assert _run(tf, 'central_crop(24)', ramp)[0, 0, 0] == 1
  # Smaller than the crop: padded, the smaller half first, with `fill`.
  small = np.full((20, 21, 3), 9, np.uint8)
  padded = _run(tf, 'central_crop(24, timm=True, fill=[1, 2, 3])', small)
  assert padded.shape == (24, 24, 3)
  assert padded[:2, 5].tolist() == [[1, 2, 3]] * 2  # 4 rows: 2 above
  assert padded[2, 0].tolist() == [1, 2, 3]  # 3 columns: 1 left, 2 right
  assert padded[2, 1].tolist() == padded[21, 21].tolist() == [9, 9, 9]
  assert padded[22, 2].tolist() == padded[2, 22].tolist() == [1, 2, 3]


def test_keep_ratio_rounds_half_to_even(tf):
  # 10x30 to fit inside (4, 4): factor 7.5, 10 / 7.5 = 1.33 -> 1, 4.
  fit = _run(tf, "resize_keep_ratio(4, 'bilinear', longest=1.0, timm=True)",
             np.zeros((10, 30, 3), np.uint8))
  assert fit.shape == (1, 4, 3)
  # ... and to cover it: factor 2.5, 30 / 2.5 = 12.
  cover = _run(tf, "resize_keep_ratio(4, 'bilinear', timm=True)",
               np.zeros((10, 30, 3), np.uint8))
  assert cover.shape == (4, 12, 3)
  # 7x5 to cover 2: factor min(3.5, 2.5), 7 / 2.5 = 2.8 -> 3.
  assert _run(tf, "resize_keep_ratio(2, 'box', timm=True)",
              np.zeros((7, 5, 1), np.uint8)).shape == (3, 2, 1)
  # Halves go to even, as Python's round: 5 / 2 = 2.5 -> 2, 7 / 2 = 3.5
  # -> 4 (to cover (2, 4): factor min(h / 2, 8 / 4) = 2).
  assert _run(tf, "resize_keep_ratio((2, 4), 'box', timm=True)",
              np.zeros((5, 8, 1), np.uint8)).shape == (2, 4, 1)
  assert _run(tf, "resize_keep_ratio((2, 4), 'box', timm=True)",
              np.zeros((7, 8, 1), np.uint8)).shape == (4, 4, 1)


def test_bad_interpolation_and_crop_mode_name_the_choices(tf):
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"interpolation 'cubic'.*'bicubic', "
                     r"'box', 'hamming', 'lanczos'"):
    predict.pretrained_crop_spec(24, 0.9, 'cubic')
  with pytest.raises(ValueError, match=r"crop_mode 'letterbox'.*"
                     r"\['center', 'squash', 'border'\]"):
    predict.pretrained_crop_spec(24, 0.9, 'bicubic', 'letterbox')
  with pytest.raises(ValueError, match=r"resize_small: unknown method "
                     r"'area' with timm=True; valid choices: \['bilinear', "
                     r"'bicubic', 'box', 'hamming', 'lanczos'\]"):
    preprocess.build("resize_small(8, 'area', timm=True)")
  with pytest.raises(ValueError, match=r"resize: unknown method 'cubic'; "
                     r"valid choices: \['bilinear', 'bicubic', 'nearest'"):
    preprocess.build("resize(8, 'cubic')")
  with pytest.raises(ValueError, match=r'needs uint8 images.*float32'):
    _run(tf, "resize(8, 'bicubic', timm=True)",
         np.zeros((10, 10, 3), np.float32))
  with pytest.raises(ValueError, match=r'fill=\[1, 2\] needs timm=True'):
    preprocess.build('central_crop(8, fill=[1, 2])')
  with pytest.raises(ValueError, match=r'fill has 2 values.*3 channels'):
    _run(tf, 'central_crop(8, timm=True, fill=[1, 2])',
         np.zeros((4, 4, 3), np.uint8))
