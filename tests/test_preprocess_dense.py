"""Joint image + label-map preprocessing (semantic segmentation): geometric
ops keep the two aligned and the label ids unblended, mmseg's sizes and
label conventions, and examples without a label map as before."""

import numpy as np
import pytest

from vit_jax.data import preprocess
from vit_jax.data.tensorflow_cpu import tf

HEIGHT, WIDTH = 12, 16
# A coordinate step of 15 grey levels keeps 16 coordinates within uint8;
# bilinear rounding to whole levels then costs 1/30 of a pixel at most.
STEP = 15


def coordinates():
  """An image whose channels 0 and 1 are STEP * (row, column), and a label
  map of the id 16 * row + column: each pixel says where it came from."""
  rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
  image = np.stack([rows * STEP, cols * STEP, np.zeros_like(rows)], -1)
  return image.astype(np.uint8), (rows * 16 + cols)[..., None].astype(np.uint8)


def run(spec, image, label_map=None, index=0, seed=0):
  example = {'image': tf.constant(image)}
  if label_map is not None:
    example['label_map'] = tf.constant(label_map)
  if any(name in preprocess.RANDOM_OPS
         for name, _, _ in preprocess.parse_spec(spec)):
    example['rng'] = preprocess.example_seed(seed, 0, 0, index)
  return {key: value.numpy()
          for key, value in preprocess.build(spec)(example).items()}


_ALIGNED_SPECS = [
    'resize((9, 13))', 'resize((25, 19))', 'resize_small(9)',
    'resize_keep_ratio((30, 30))', "resize((20, 24), timm=True)",
    'central_crop((7, 5))', 'central_crop(14, timm=True)',
    'inception_crop((7, 9), 20)|flip_lr', 'flip_lr',
    'random_resize((24, 12), (0.5, 2.0))|random_crop(9)|flip_lr',
    'rescale((20, 10))|random_crop((5, 7))|flip_lr|pad(9)',
    'random_crop((8, 20))|resize((10, 10))|flip_lr',
]


@pytest.mark.parametrize('spec', _ALIGNED_SPECS)
def test_geometric_ops_keep_image_and_label_map_aligned(spec):
  """Where bilinear resampling centres an output pixel (the coordinate the
  image reports), the label map holds the id of the nearest input pixel:
  within half a pixel (plus rounding), in both axes, for every seed. A
  flip, window or size the two did not share is off by a pixel or more."""
  image, label_map = coordinates()
  for index in range(6):
    out = run(spec, image, label_map, index)
    labels = out['label_map'][..., 0].astype(int)
    assert out['label_map'].dtype == np.uint8
    assert labels.shape == out['image'].shape[:2], spec
    real = labels != preprocess.IGNORE_INDEX  # padding is ignored
    assert real.any()
    for axis, label_coordinate in enumerate((labels // 16, labels % 16)):
      image_coordinate = out['image'][..., axis].astype(float) / STEP
      error = np.abs(label_coordinate - image_coordinate)[real]
      assert error.max() <= 0.5 + 0.5 / STEP + 1e-9, (spec, index, axis)


def test_padding_is_ignored_in_the_label_map_and_fill_in_the_image():
  image, label_map = coordinates()
  out = run('central_crop(14, timm=True, fill=7)', image, label_map)
  # 12 rows padded to 14, one row each side; columns cropped 16 -> 14.
  np.testing.assert_array_equal(out['label_map'][[0, -1]], 255)
  np.testing.assert_array_equal(out['image'][[0, -1]], 7)
  np.testing.assert_array_equal(out['label_map'][1:-1], label_map[:, 1:15])
  out = run('pad((14, 17), value=3)', image, label_map)
  np.testing.assert_array_equal(out['label_map'][:12, :16], label_map)
  np.testing.assert_array_equal(out['image'][:12, :16], image)
  for region in (np.s_[12:], np.s_[:, 16:]):
    np.testing.assert_array_equal(out['label_map'][region], 255)
    np.testing.assert_array_equal(out['image'][region], 3)
  normalized = run('normalize(127.5, 127.5)|pad((13, 16))', image, label_map)
  assert normalized['image'].dtype == np.float32
  np.testing.assert_array_equal(normalized['image'][12:], 0.0)
  np.testing.assert_array_equal(normalized['label_map'][12:], 255)


@pytest.mark.parametrize('spec', [
    'resize((7, 11))', 'resize((31, 29))', 'resize_small(5)',
    'inception_crop(9)', 'random_resize((40, 20), (0.5, 2.0))',
    "resize(9, 'bicubic', timm=True)", "rescale((9, 9), 'lanczos3')"])
def test_label_maps_are_resized_by_nearest_neighbour_only(spec):
  rng = np.random.RandomState(0)
  label_map = rng.choice([3, 9, 200], (HEIGHT, WIDTH, 1)).astype(np.uint8)
  image = rng.randint(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
  for index in range(3):
    labels = run(spec, image, label_map, index)['label_map']
    assert set(np.unique(labels)) == {3, 9, 200}, (spec, index)


@pytest.mark.parametrize('spec', [
    'resize((9, 13))', 'resize_small(9)', 'resize_keep_ratio(9)',
    "resize_keep_ratio(9, 'bicubic', 1.0, timm=True)", 'central_crop(7)',
    'central_crop(14, timm=True)', 'inception_crop(8)', 'flip_lr',
    "resize_small(9, 'bilinear', timm=True)"])
def test_an_image_moves_as_it_does_without_a_label_map(spec):
  """The classification path is untouched: the same pixels for every seed
  whether or not a label map travels along (the existing ops' own tests
  pin those pixels)."""
  image, label_map = coordinates()
  image = np.random.RandomState(1).randint(0, 256, image.shape).astype(
      np.uint8)
  for index in range(4):
    alone = run(spec, image, index=index)
    together = run(spec, image, label_map, index)
    assert sorted(together) == ['image', 'label_map']
    np.testing.assert_array_equal(alone['image'], together['image'])


def test_flip_decisions_are_tfs_own():
  image, label_map = coordinates()
  flipped = []
  for index in range(8):
    seed = preprocess.fold_in(preprocess.example_seed(0, 0, 0, index), 0)
    reference = tf.image.stateless_random_flip_left_right(image, seed).numpy()
    out = run('flip_lr', image, label_map, index)
    np.testing.assert_array_equal(out['image'], reference)
    flipped.append(np.array_equal(out['label_map'], label_map[:, ::-1]))
    if not flipped[-1]:
      np.testing.assert_array_equal(out['label_map'], label_map)
  assert 0 < sum(flipped) < 8


@pytest.mark.parametrize('op', ['resize(8', 'resize_small(8',
                                'resize_keep_ratio(8', 'rescale((20, 8)'])
def test_label_map_false_resizes_the_image_only(op):
  image, label_map = coordinates()
  out = run(f'{op}, label_map=False)', image, label_map)
  assert out['image'].shape[:2] != (HEIGHT, WIDTH)
  np.testing.assert_array_equal(out['label_map'], label_map)


def test_mmseg_test_resize_fits_the_scale():
  image, label_map = coordinates()  # 12 x 16: the short side limits
  out = run('rescale((2048, 24))', image, label_map)
  assert out['image'].shape == (24, 32, 3)
  assert out['label_map'].shape == (24, 32, 1)
  out = run('rescale((18, 20))', image.transpose(1, 0, 2))  # the long one
  assert out['image'].shape == (20, 15, 3)


@pytest.mark.parametrize('height, width, scale, ratio, want', [
    # target (1024, 256): the short side limits, 21.33 * 16 = 341.3.
    (12, 16, (2048, 512), 0.5, (256, 341)),
    (16, 12, (2048, 512), 0.5, (341, 256)),  # orientation-free
    # mmcv truncates the target to (1433, 358) first: 477 (478 from 358.4).
    (12, 16, (2048, 512), 0.7, (358, 477)),
    (5, 10, (5, 4), 1.0, (3, 5)),  # 2.5 rounds up, int(x + 0.5)
    (30, 7, (20, 10), 1.3, (26, 6)),  # target (26, 13): the long side
    (9, 9, (40, 10), 1.75, (17, 17)),  # 17.5 truncated to 17
])
def test_random_resize_sizes_are_mmcvs(height, width, scale, ratio, want):
  image = np.zeros((height, width, 3), np.uint8)
  label_map = np.zeros((height, width, 1), np.uint8)
  out = run(f'random_resize({scale}, ({ratio}, {ratio}))', image, label_map)
  assert out['image'].shape == want + (3,)
  assert out['label_map'].shape == want + (1,)


def test_random_resize_draws_a_ratio_per_example():
  image, label_map = coordinates()
  heights = {run('random_resize((32, 24), (0.5, 2.0))', image, label_map,
                 index)['image'].shape[0] for index in range(12)}
  # 12 x 16 into (32, 24) * r: the short side limits, the height is about
  # 24 * r, r in 0.5..2.
  assert len(heights) >= 6 and min(heights) >= 12 and max(heights) <= 48


def test_random_ops_are_deterministic_per_seed_and_vary_across_seeds():
  image, label_map = coordinates()
  spec = ('random_resize((24, 12), (0.5, 2.0))|random_crop(9, 0.75)|'
          'flip_lr|photometric_distortion|pad(9)')
  first = run(spec, image, label_map, index=3)
  again = run(spec, image, label_map, index=3)
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  others = [run(spec, image, label_map, index)['label_map'].tobytes()
            for index in range(4, 8)]
  assert len(set(others + [first['label_map'].tobytes()])) == 5
  other_seed = run(spec, image, label_map, index=3, seed=1)
  assert not np.array_equal(other_seed['label_map'], first['label_map'])


def test_random_crop_is_the_window_or_the_whole_side():
  image, label_map = coordinates()
  windows = set()
  for index in range(10):
    out = run('random_crop((5, 30))', image, label_map, index)
    assert out['image'].shape == (5, 16, 3)  # 30 > 16: the whole width
    top = out['label_map'][0, 0, 0] // 16
    np.testing.assert_array_equal(out['label_map'], label_map[top:top + 5])
    np.testing.assert_array_equal(out['image'], image[top:top + 5])
    windows.add(int(top))
  assert len(windows) >= 4 and windows <= set(range(8))  # 0..12 - 5


def _crop_share(label_map, ignore_index=255):
  """mmseg's test of a crop: (number of classes, largest class's share)."""
  ids, counts = np.unique(label_map, return_counts=True)
  counts = counts[ids != ignore_index]
  return len(counts), counts.max() / max(counts.sum(), 1)


def test_cat_max_ratio_retries_crops_one_class_dominates():
  """A mask of class 1 with a 7 x 7 block of class 2 in a corner: 18 of
  the 81 8 x 8 windows hold 17..47 pixels of it and pass cat_max_ratio
  0.75, so with 10 tries 92% of the crops pass (1 - (63/81)^10), without
  22%."""
  label_map = np.ones((16, 16, 1), np.uint8)
  label_map[:7, :7] = 2
  image = np.zeros((16, 16, 3), np.uint8)

  def balanced(spec):
    passed = 0
    for index in range(40):
      crop = run(spec, image, label_map, index)['label_map']
      classes, share = _crop_share(crop)
      passed += classes > 1 and share < 0.75
    return passed
  assert balanced('random_crop(8)') <= 16
  assert balanced('random_crop(8, cat_max_ratio=0.75)') >= 32


def test_cat_max_ratio_does_not_count_the_ignore_index():
  """Class 1 beside a block of 255: never two classes, so every try fails
  and the eleventh window is taken unchecked, the one a mask without any
  second class gets. Counting 255 as a class (ignore_index=0) accepts
  earlier windows."""
  image = np.random.RandomState(0).randint(0, 256, (16, 16, 3)).astype(
      np.uint8)
  uniform = np.ones((16, 16, 1), np.uint8)
  ignored = uniform.copy()
  ignored[:6, :6] = 255
  differs = 0
  for index in range(8):
    def crop(label_map, ignore_index=255):
      spec = f'random_crop(8, 0.75, ignore_index={ignore_index})'
      return run(spec, image, label_map, index)['image']
    np.testing.assert_array_equal(crop(ignored), crop(uniform))
    differs += not np.array_equal(crop(ignored, 0), crop(uniform))
  assert differs >= 3


def test_pad_gives_a_static_shape_and_refuses_larger_images():
  build = preprocess.build('pad((10, 12))')

  @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                tf.TensorSpec([None, None, 1], tf.uint8)])
  def padded(image, label_map):
    return build({'image': image, 'label_map': label_map})
  shapes = padded.get_concrete_function().structured_outputs
  assert shapes['image'].shape == (10, 12, 3)
  assert shapes['label_map'].shape == (10, 12, 1)
  image, label_map = coordinates()
  with pytest.raises(tf.errors.InvalidArgumentError, match='pad: the image'):
    padded(image, label_map)
  with pytest.raises(ValueError, match=r'pad: the image .*\(12, 16\).*crop'):
    run('pad(10)', image, label_map)


def test_reduce_labels_and_map_labels():
  ids = np.array([0, 1, 2, 7, 26, 33, 150, 254, 255], np.uint8)
  label_map = ids.reshape(1, -1, 1)
  image = np.zeros((1, ids.size, 3), np.uint8)

  def mapped(spec):
    return run(spec, image, label_map)['label_map'].ravel().tolist()
  assert mapped('reduce_labels') == [255, 0, 1, 6, 25, 32, 149, 253, 255]
  assert mapped('map_labels({1: 0, 2: 1, 255: 9})') == [
      255, 0, 1, 255, 255, 255, 255, 255, 9]
  assert mapped('map_labels([5, 6])') == [5, 6] + [255] * 7
  # A whole uint8 id range stays uint8: 255 - 1 never wraps to 254.
  out = run('reduce_labels', image, label_map)['label_map']
  assert out.dtype == np.uint8


def test_photometric_distortion_touches_the_image_only():
  rng = np.random.RandomState(0)
  image = rng.randint(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
  image[0] = 255  # brightness must clip, never wrap around
  image[1] = 0
  _, label_map = coordinates()
  changed = 0
  for index in range(12):
    out = run('photometric_distortion', image, label_map, index)
    assert out['image'].dtype == np.uint8
    np.testing.assert_array_equal(out['label_map'], label_map)
    changed += not np.array_equal(out['image'], image)
  assert changed >= 6  # all four steps skipped: 1 in 16


def test_photometric_steps_are_mmsegs():
  rng = np.random.RandomState(0)
  image = rng.randint(0, 256, (HEIGHT, WIDTH, 3)).astype(np.uint8)
  image[0] = 250
  steps = {'brightness': 0, 'saturation': 0, 'hue': 0}
  for index in range(8):
    # Brightness alone: one offset for every pixel, clipped, not wrapped.
    out = run('photometric_distortion(32, (1, 1), (1, 1), 0)', image,
              index=index)['image'].astype(int)
    offset = np.unique((out - image)[(out > 0) & (out < 255)])
    assert offset.size == 1 and abs(offset[0]) <= 32
    assert np.all(np.abs(out - image) <= 32)
    steps['brightness'] += offset[0] != 0
    # Saturation 0: grey at the HSV value, the largest channel.
    out = run('photometric_distortion(0, (1, 1), (0, 0), 0)', image,
              index=index)['image']
    if not np.array_equal(out, image):
      np.testing.assert_array_equal(out, np.broadcast_to(
          image.max(-1, keepdims=True), image.shape))
      steps['saturation'] += 1
    # Hue alone keeps each pixel's largest and smallest channel.
    out = run('photometric_distortion(0, (1, 1), (1, 1), 90)', image,
              index=index)['image'].astype(int)
    np.testing.assert_allclose(out.max(-1), image.max(-1), atol=1)
    np.testing.assert_allclose(out.min(-1), image.min(-1), atol=1)
    steps['hue'] += not np.array_equal(out, image)
    # Contrast: mmseg multiplies (no mean), truncating: 0 stays 0.
    out = run('photometric_distortion(0, (0.5, 0.5), (1, 1), 0)', image,
              index=index)['image'].astype(int)
    assert np.array_equal(out, image) or np.array_equal(out, image // 2)
  assert all(0 < count < 8 for count in steps.values()), steps


def test_photometric_distortion_on_grey_images_and_refusals():
  grey = np.arange(64, dtype=np.uint8).reshape(8, 8, 1)
  out = run('photometric_distortion', grey, index=1)['image']
  assert out.shape == (8, 8, 1) and out.dtype == np.uint8
  with pytest.raises(ValueError, match='photometric_distortion.*uint8.*'
                     'float32'):
    run('value_range(0, 1)|photometric_distortion', grey)


@pytest.mark.parametrize('spec, pattern', [
    ('random_resize(ratio_range=(2, 1))',
     r'random_resize: ratio_range .*0 < low <= high, got \(2, 1\)'),
    ('random_resize((0, 5))', r'random_resize: scale must be .*got \(0, 5\)'),
    ('rescale(1.5)', r'rescale: scale must be .*got 1.5'),
    ('random_crop((8, 0))', r'random_crop: size must be .*got \(8, 0\)'),
    ("random_resize(method='cubic')",
     r"random_resize: unknown method 'cubic'.*'bilinear'"),
    ("rescale(method='cubic')", r"rescale: unknown method 'cubic'.*'area'"),
    ('random_crop(8, cat_max_ratio=1.5)',
     r'random_crop: cat_max_ratio must lie in \(0, 1\].*1.5'),
    ('random_crop(8, ignore_index=300)',
     r'random_crop: ignore_index must be .*0..255, got 300'),
    ('pad(8, label_value=-1)', r'pad: label_value .*0..255, got -1'),
    ("pad(8, value='black')", r"pad: value must be a number, got 'black'"),
    ("map_labels('ade')",
     r"map_labels: table must be a non-empty dict .*list .*got 'ade'"),
    ('map_labels({1: 256})', r'map_labels: every new id .*got 256'),
    ('map_labels({})', r'map_labels: table must be .*got \{\}'),
    ('photometric_distortion(hue_delta=200)',
     r'photometric_distortion: hue_delta .*0..90.*got 200'),
    ('photometric_distortion(contrast_range=(2, 1))',
     r'photometric_distortion: contrast_range .*got \(2, 1\)'),
])
def test_bad_arguments_name_the_op_the_value_and_the_choices(spec, pattern):
  with pytest.raises(ValueError, match=pattern):
    preprocess.build(spec)


@pytest.mark.parametrize('spec, with_labels, pattern', [
    ('reduce_labels', False, "reduce_labels reads label ids, but the "
     "example has no 'label_map'; it has \\['image'\\]"),
    ('random_crop(4, 0.5)', False, 'random_crop with cat_max_ratio < 1 '
     "reads label ids, but the example has no 'label_map'"),
    ('randaug(2, 10)', True, "randaug: its geometric ops .*'label_map'.*"
     'photometric_distortion'),
    ('pad(20, value=300)', False, 'pad: value 300 is not a uint8 pixel'),
])
def test_ops_that_cannot_apply_say_why(spec, with_labels, pattern):
  image, label_map = coordinates()
  with pytest.raises(ValueError, match=pattern):
    run(spec, image, label_map if with_labels else None)


def test_an_mmseg_training_spec_in_tf_data_with_unknown_shapes():
  """What a dense pipeline runs: shapes unknown to the graph until the
  final pad, which makes them static; the same seeds give the same batch."""
  rng = np.random.RandomState(0)
  pairs = [(rng.randint(0, 256, (h, w, 3)).astype(np.uint8),
            rng.randint(0, 4, (h, w, 1)).astype(np.uint8))
           for h, w in ((12, 16), (20, 9))]
  spec = ('random_resize((32, 16), (0.5, 2.0))|random_crop(16, 0.75)|'
          'flip_lr|photometric_distortion|reduce_labels|'
          'normalize((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))|'
          'pad(16)')
  build = preprocess.build(spec)
  dataset = tf.data.Dataset.from_generator(
      lambda: iter(pairs), output_signature=(
          tf.TensorSpec([None, None, 3], tf.uint8),
          tf.TensorSpec([None, None, 1], tf.uint8))).enumerate().map(
              lambda index, pair: build({
                  'image': pair[0], 'label_map': pair[1],
                  'rng': preprocess.example_seed(0, 0, 0, index)}))
  assert dataset.element_spec['image'].shape == (16, 16, 3)
  assert dataset.element_spec['label_map'].shape == (16, 16, 1)
  first, again = (list(dataset.as_numpy_iterator()) for _ in range(2))
  for one, other in zip(first, again):
    np.testing.assert_array_equal(one['image'], other['image'])
    np.testing.assert_array_equal(one['label_map'], other['label_map'])
    assert set(np.unique(one['label_map'])) <= {0, 1, 2, 255}


def test_every_new_op_keeps_a_static_channel_count():
  for spec in ['rescale(8)', 'random_resize(8)', 'random_crop(4)',
               'photometric_distortion', 'random_crop(4, 0.5)']:
    build = preprocess.build(spec)

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8),
                                  tf.TensorSpec([None, None, 1], tf.uint8)])
    def traced(image, label_map, build=build):
      return build({'image': image, 'label_map': label_map,
                    'rng': tf.constant([1, 2], tf.int64)})
    outputs = traced.get_concrete_function().structured_outputs
    assert outputs['image'].shape[-1] == 3, spec
    assert outputs['label_map'].shape[-1] == 1, spec
