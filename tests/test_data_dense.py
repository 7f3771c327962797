"""Tests of the 2-D segmentation data: the segmentation folder, the digit
mosaics, TFDS datasets with masks (small stand-ins prepared here with the
real datasets' names and feature layout), and dense batches through the
train and eval pipelines. No network is used."""

import os

import numpy as np
from PIL import Image
import pytest

from vit_jax import data

SPEC = 'value_range(0, 1)'


def stream(config, batch_size, start_step=0, count=3, **kwargs):
  iterator = data.train_iterator(config, batch_size, seed=3,
                                 start_step=start_step, process_index=0,
                                 process_count=1, **kwargs)
  return [next(iterator) for _ in range(count)]




# ----------------------------------------------------------------------------
# A segmentation folder (ADEChallengeData2016 layout).


def write_folder(root, sizes=None, label_values=(0, 1, 2), extra=None):
  """images/{training,validation}/*.jpg|png + annotations/.../*.png.

  Returns {stem: (image uint8 [H, W, 3], label uint8 [H, W])}; image i of
  a split is (5 + i % 2) x 6, its label map cycles `label_values`.
  """
  rng = np.random.default_rng(0)
  written = {}
  for split, count in (('training', 6), ('validation', 3)):
    for i in range(count):
      stem = f'{split[:3]}_{i:03d}'
      height, width = (sizes or {}).get(stem, (5 + i % 2, 6))
      image = rng.integers(0, 256, (height, width, 3), np.uint8)
      label = np.resize(np.asarray(label_values, np.uint8),
                        height * width).reshape(height, width)
      label = np.roll(label, i)
      for kind, array, ext in (('images', image, '.png' if i % 2 else '.jpg'),
                               ('annotations', label, '.png')):
        directory = os.path.join(root, kind, split)
        os.makedirs(directory, exist_ok=True)
        Image.fromarray(array).save(os.path.join(directory, stem + ext),
                                    quality=100)
      written[stem] = (image, label)
  return written


def folder_config(root, **overrides):
  config = dict(name='segmentation_folder', folder=str(root), num_classes=3,
                train_split='training', eval_split='validation',
                pp_train=SPEC, pp_eval=SPEC)
  config.update(overrides)
  return config


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('ade')
  return root, write_folder(str(root))


@pytest.fixture(scope='module')
def fixed_folder(tmp_path_factory):
  """Every image 6x6, so batches can be formed without a crop op."""
  root = tmp_path_factory.mktemp('ade_fixed')
  sizes = {f'{s}_{i:03d}': (6, 6) for s in ('tra', 'val') for i in range(6)}
  return root, write_folder(str(root), sizes)


def test_folder_pairs_files_by_stem_at_original_resolution(folder):
  root, written = folder
  examples = list(data.eval_examples(folder_config(root), 'validation', 0, 1))
  assert [os.path.basename(e['name']) for e in examples] == [
      'val_000.png', 'val_001.png', 'val_002.png']
  for example in examples:
    image, label = written[os.path.basename(example['name'])[:-4]]
    assert example['label_map'].dtype == np.int32
    np.testing.assert_array_equal(example['label_map'], label)
    assert example['image'].dtype == np.float32
    assert example['image'].shape == image.shape
  # PNG images are lossless: image 1 comes back exactly, scaled to [0, 1].
  np.testing.assert_allclose(examples[1]['image'],
                             written['val_001'][0] / 255.0, atol=1e-6)


@pytest.fixture
def static_op(monkeypatch):
  """An op 'static(H, W)' declaring image and label map H x W, as a crop
  of helper ops to come would (decoded files have no static size)."""
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top

  def static(height, width):
    def apply(example, seed):
      del seed
      return {**example,
              'image': tf.ensure_shape(example['image'],
                                       [height, width, None]),
              'label_map': tf.ensure_shape(example['label_map'],
                                           [height, width, 1])}
    return apply
  monkeypatch.setitem(preprocess.OPS, 'static', static)


def test_folder_info_splits_and_slices(fixed_folder, folder, static_op):
  del static_op
  root, _ = fixed_folder
  info = data.dataset_info(folder_config(
      root, eval_split='validation[:50%]', pp_train='static(6, 6)|' + SPEC,
      class_names=['a', 'b', 'c']))
  assert info == {
      'task': 'segmentation', 'num_classes': 3, 'ignore_index': 255,
      'class_names': ['a', 'b', 'c'], 'image_shape': (None, None, 3),
      'train_image_shape': (6, 6, 3),
      'num_examples': {'train': 6, 'test': 2}}
  root, _ = folder
  assert data.eval_share_sizes(folder_config(root), 'training[1:]', 2) == [
      3, 2]
  names = [e['name'] for e in data.eval_examples(
      folder_config(root), 'training[:50%]', 0, 1)]
  assert [os.path.basename(n) for n in names] == [
      'tra_000.png', 'tra_001.png', 'tra_002.png']


def test_folder_train_image_shape_must_be_static(folder):
  root, _ = folder
  with pytest.raises(ValueError, match='fixed-size crop'):
    data.dataset_info(folder_config(root))


def test_folder_needs_num_classes_and_paired_files(tmp_path):
  write_folder(str(tmp_path))
  with pytest.raises(ValueError, match='needs data_config.num_classes'):
    data.dataset_info(folder_config(tmp_path, num_classes=None))
  missing = tmp_path / 'annotations' / 'training' / 'tra_002.png'
  os.remove(missing)
  with pytest.raises(data.DenseLabelError,
                     match='tra_002.jpg has no annotation') as e:
    data.eval_share_sizes(folder_config(tmp_path), 'training', 1)
  assert e.value.path.endswith(os.path.join('images', 'training',
                                            'tra_002.jpg'))
  os.remove(tmp_path / 'images' / 'training' / 'tra_002.jpg')
  Image.fromarray(np.zeros([2, 2], np.uint8)).save(
      tmp_path / 'annotations' / 'training' / 'orphan.png')
  with pytest.raises(data.DenseLabelError, match='orphan.png has no image'):
    data.eval_share_sizes(folder_config(tmp_path), 'training', 1)


def test_palette_annotation_gives_indices(tmp_path):
  write_folder(str(tmp_path))
  path = tmp_path / 'annotations' / 'validation' / 'val_000.png'
  indices = np.array([[0, 1, 2, 255, 1, 0]] * 5, np.uint8)
  palette = Image.fromarray(indices, mode='P')
  # Colours whose luminance is not the index: decode_png would differ.
  palette.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [224, 224, 192] * 253)
  palette.save(path)
  example = next(data.eval_examples(folder_config(tmp_path), 'validation',
                                    0, 1))
  np.testing.assert_array_equal(example['label_map'], indices)


def test_bad_label_maps_name_the_file(tmp_path):
  write_folder(str(tmp_path), sizes={'tra_003': (6, 6)})
  bad_size = tmp_path / 'annotations' / 'training' / 'tra_003.png'
  Image.fromarray(np.zeros([6, 5], np.uint8)).save(bad_size)
  config = folder_config(tmp_path)
  with pytest.raises(data.DenseLabelError, match='is 6x5 but its image') as e:
    list(data.eval_examples(config, 'training', 0, 1))
  assert e.value.path == str(bad_size)
  Image.fromarray(np.zeros([6, 6, 3], np.uint8)).save(bad_size)
  with pytest.raises(data.DenseLabelError, match="mode 'RGB'") as e:
    list(data.eval_examples(config, 'training', 0, 1))
  assert e.value.path == str(bad_size)
  # A value outside [0, 3) that is not 255, in the train stream.
  Image.fromarray(np.full([6, 6], 7, np.uint8)).save(bad_size)
  sizes = {f'tra_{i:03d}': (6, 6) for i in range(6)}
  fixed = tmp_path / 'fixed'
  write_folder(str(fixed), sizes)
  os.replace(bad_size, fixed / 'annotations' / 'training' / 'tra_003.png')
  with pytest.raises(data.DenseLabelError,
                     match=r'tra_003.png .*has values \[7\]') as e:
    stream(folder_config(fixed), 6, count=1)
  assert e.value.path.endswith('tra_003.png')


# ----------------------------------------------------------------------------
# Train stream and eval pass.


def test_train_batches_and_exact_resume(fixed_folder):
  root, written = fixed_folder
  config = folder_config(root)
  batches = stream(config, 4, count=4)
  assert {k: (v.shape, v.dtype) for k, v in batches[0].items()} == {
      'image': ((4, 6, 6, 3), np.float32),
      'label_map': ((4, 6, 6), np.int32)}
  # An epoch (6 examples) holds every label map once, whatever the order.
  epoch = np.concatenate([b['label_map'] for b in batches])[:6]
  expected = sorted(label.tobytes() for name, (_, label) in written.items()
                    if name.startswith('tra'))
  assert sorted(m.astype(np.uint8).tobytes() for m in epoch) == expected
  np.testing.assert_equal(stream(config, 4, start_step=2, count=2),
                          batches[2:])
  # A spec that keeps only image and label map still has its files named.
  kept = folder_config(root, pp_train=SPEC + "|keep('image', 'label_map')")
  np.testing.assert_equal(stream(kept, 4, count=1), batches[:1])


def test_dense_specs_and_mixup_are_checked(fixed_folder):
  root, _ = fixed_folder
  with pytest.raises(ValueError, match='mixup and CutMix blend image-level'):
    stream(folder_config(root, mixup_alpha=0.2), 2, count=1)
  with pytest.raises(ValueError, match='makes one-hot labels'):
    stream(folder_config(root, pp_train=SPEC + '|onehot(3)'), 2, count=1)


def test_eval_pass_exactly_once_with_ignored_padding(fixed_folder,
                                                    static_op):
  del static_op
  root, _ = fixed_folder
  config = folder_config(root, pp_eval='static(6, 6)|' + SPEC)
  # 6 examples over 2 processes of 4 rows: shares of 3, one padded batch.
  reference = list(data.eval_examples(config, 'training', 0, 1))
  real = []
  for process in (0, 1):
    batches = list(data.eval_iterator(config, 'training', 8, process, 2))
    assert len(batches) == 1
    batch = batches[0]
    assert sorted(batch) == ['image', 'label_map', 'mask']
    np.testing.assert_array_equal(batch['mask'], [1, 1, 1, 0])
    assert (batch['label_map'][3] == 255).all()
    real += [batch['label_map'][i] for i in range(3)]
  for example, label_map in zip(reference, real):
    np.testing.assert_array_equal(example['label_map'], label_map)


def test_eval_iterator_needs_one_size(folder):
  root, _ = folder
  with pytest.raises(ValueError, match='data.eval_examples'):
    next(data.eval_iterator(folder_config(root), 'validation', 2, 0, 1))


def test_eval_examples_map_values_not_geometry(fixed_folder, monkeypatch):
  """pp_eval's label-value ops reach the original-resolution label map;
  its resizing does not."""
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top

  def shift_down():  # As ADE20K's reduce_labels: 0 -> 255, k -> k - 1.
    def apply(example, seed):
      del seed
      label = tf.cast(example['label_map'], tf.int32) - 1
      label = tf.where(label < 0, 255, label)
      return {**example, 'label_map': tf.cast(label, tf.uint8)}
    return apply

  def half_size():  # Nearest-neighbour downsampling of both.
    def apply(example, seed):
      del seed
      return {**example, 'image': example['image'][::2, ::2],
              'label_map': example['label_map'][::2, ::2]}
    return apply
  monkeypatch.setitem(preprocess.OPS, 'shift_down', shift_down)
  monkeypatch.setitem(preprocess.OPS, 'half_size', half_size)
  root, written = fixed_folder
  config = folder_config(root, pp_eval='half_size|shift_down|' + SPEC,
                         num_classes=2)
  examples = list(data.eval_examples(config, 'validation', 0, 1))
  assert len(examples) == 3
  for example in examples:
    _, label = written[os.path.basename(example['name'])[:-4]]
    assert example['image'].shape == (3, 3, 3)
    expected = np.where(label == 0, 255, label.astype(np.int32) - 1)
    np.testing.assert_array_equal(example['label_map'], expected)


# ----------------------------------------------------------------------------
# The digit mosaics.


def test_mosaics_labels_are_their_digits_strokes():
  from vit_jax.data import digits, mosaics  # pylint: disable=g-import-not-at-top
  images, labels = digits._load_images_and_labels()  # pylint: disable=protected-access
  for split in ('train', 'test'):
    rows = digits.split_rows()[split]
    known = {images[r, :, :, 0].tobytes(): set() for r in rows}
    for r in rows:
      known[images[r, :, :, 0].tobytes()].add(int(labels[r]))
    arrays = mosaics.split_arrays(split)
    placed = 0
    for i in range(40):
      canvas = arrays['image'][i, :, :, 0]
      label_map = arrays['label_map'][i, :, :, 0]
      for top in (0, 20):
        for left in (0, 20):
          cell = canvas[top:top + 20, left:left + 20]
          cell_labels = label_map[top:top + 20, left:left + 20]
          if not cell.any():
            assert not cell_labels.any()
            continue
          # Some placement of some digit of this split (8x8, each pixel
          # 2x2) explains the cell's pixels and its labels.
          found = False
          for dy in range(5):
            for dx in range(5):
              patch = cell[dy:dy + 16, dx:dx + 16]
              small = patch[::2, ::2]
              if (cell.sum(dtype=int) != patch.sum(dtype=int) or
                  not np.array_equal(np.kron(small, np.ones((2, 2))),
                                     patch)):
                continue
              for digit in known.get(small.tobytes(), ()):
                expected = np.zeros_like(cell_labels)
                expected[dy:dy + 16, dx:dx + 16] = np.where(
                    patch >= 128, digit + 1, 0)
                found |= np.array_equal(expected, cell_labels)
          assert found, (split, i, top, left)
          placed += 1
    assert placed >= 80
  counts = np.bincount(mosaics.split_arrays('test')['label_map'].ravel(),
                       minlength=11)
  assert counts.sum() == 1000 * 40 * 40 and counts.min() > 0


def test_mosaics_are_deterministic_and_have_the_stated_baseline():
  from vit_jax.data import mosaics  # pylint: disable=g-import-not-at-top
  first = mosaics.split_arrays('test')
  mosaics.split_arrays.cache_clear()
  again = mosaics.split_arrays('test')
  assert first is not again
  for key in first:
    np.testing.assert_array_equal(first[key], again[key])
  accuracy, miou = mosaics.background_baseline('test')
  assert (accuracy, miou) == (0.876525, 0.876525 / 11)  # The docstring's.
  assert np.bincount(again['digit_count']).tolist() == [0, 175, 364, 335,
                                                        126]


def test_mosaics_pipeline_shares_and_resume():
  config = dict(name='digit_mosaics', pp_train=SPEC, pp_eval=SPEC)
  info = data.dataset_info(config)
  assert info['class_names'] == ['background'] + [str(d) for d in range(10)]
  assert info['train_image_shape'] == (40, 40, 1)
  assert info['num_examples'] == {'train': 4000, 'test': 1000}
  batches = stream(config, 8, count=3)
  np.testing.assert_equal(stream(config, 8, start_step=2, count=1),
                          batches[2:])
  from vit_jax.data import mosaics  # pylint: disable=g-import-not-at-top
  # Shares over any process count are the same examples.
  whole = list(data.eval_examples(config, 'test[:5]', 0, 1))
  halves = [e for p in (0, 1)
            for e in data.eval_examples(config, 'test[:5]', p, 2)]
  assert [e['name'] for e in whole] == [e['name'] for e in halves] == [
      f'digit_mosaics-test-{i:05d}' for i in range(5)]
  labels = mosaics.split_arrays('test')['label_map'][:5, :, :, 0]
  for example, label in zip(halves, labels):
    np.testing.assert_array_equal(example['label_map'], label)


# ----------------------------------------------------------------------------
# TFDS datasets with masks, through stand-ins prepared under their names.


def prepare_stand_in(data_dir, dataset, config_name, version, features,
                     splits):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  class StandIn(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    name = dataset
    VERSION = tfds.core.Version(version)
    BUILDER_CONFIGS = ([tfds.core.BuilderConfig(name=config_name)]
                       if config_name else [])

    def _info(self):
      return tfds.core.DatasetInfo(
          builder=self, features=tfds.features.FeaturesDict(features))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(examples)
              for split, examples in splits.items()}

    def _generate_examples(self, examples):
      for i, example in enumerate(examples):
        yield i, example
  StandIn(data_dir=data_dir, config=config_name).download_and_prepare(
      download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def test_cityscapes_label_ids_become_train_ids(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  table = sources.DENSE_TFDS['cityscapes'].lookup()
  ids = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31,
         32, 33]
  assert [table[i] for i in ids] == list(range(19))
  assert all(table[i] == 255 for i in range(256) if i not in ids)
  config = dict(name='cityscapes', data_dir=str(tmp_path), pp_train=SPEC,
                pp_eval=SPEC, train_split='validation',
                eval_split='validation')
  with pytest.raises(sources.DatasetNotPreparedError,
                     match='leftImg8bit_trainvaltest.zip'):
    data.dataset_info(config)
  label = np.arange(24, dtype=np.uint8).reshape(4, 6, 1) + 4  # ids 4..27
  image = np.full([4, 6, 3], 9, np.uint8)
  prepare_stand_in(
      str(tmp_path), 'cityscapes', 'semantic_segmentation', '1.0.0',
      {'image_id': tfds.features.Text(),
       'image_left': tfds.features.Image(shape=(4, 6, 3)),
       'segmentation_label': tfds.features.Image(shape=(4, 6, 1))},
      {'validation': [{'image_id': 'aachen_0', 'image_left': image,
                       'segmentation_label': label}]})
  info = data.dataset_info(config)
  assert info['num_classes'] == 19 and info['class_names'][0] == 'road'
  (example,) = data.eval_examples(config, 'validation', 0, 1)
  assert example['name'] == 'aachen_0'
  np.testing.assert_array_equal(example['label_map'],
                                table[label[:, :, 0]].astype(np.int32))
  assert example['label_map'][0, 3] == 0  # id 7, road.
  with pytest.raises(ValueError, match='does not match'):
    data.dataset_info({**config, 'num_classes': 20})


def test_oxford_pet_trimaps_and_streamed_resume(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)

  def example(i, height=4, mask_height=4):
    return {'file_name': f'pet_{i}.jpg',
            'image': rng.integers(0, 256, (height, 5, 3), np.uint8),
            'segmentation_mask': rng.integers(
                1, 4, (mask_height, 5, 1), np.uint8)}
  train = [example(i) for i in range(6)]
  prepare_stand_in(
      str(tmp_path), 'oxford_iiit_pet', None, '4.0.0',
      {'file_name': tfds.features.Text(),
       'image': tfds.features.Image(encoding_format='png'),
       'segmentation_mask': tfds.features.Image(shape=(None, None, 1))},
      {'train': train, 'test': [example(9, height=4, mask_height=3)]})
  config = dict(name='oxford_iiit_pet', data_dir=str(tmp_path),
                pp_train=SPEC, pp_eval=SPEC, eval_split='train',
                shuffle_buffer=4)
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  builder = sources.get_builder(data.resolve_config(config))
  assert builder.class_names == ('pet', 'background', 'border')
  # Its images vary in size: training needs a crop to one size.
  with pytest.raises(ValueError, match='fixed-size crop'):
    data.dataset_info(config)
  examples = list(data.eval_examples(config, 'train', 0, 1))
  # In TFDS's record order (shuffled when prepared), each once.
  assert sorted(e['name'] for e in examples) == [
      f'pet_{i}.jpg' for i in range(6)]
  for got in examples:  # 1, 2, 3 -> 0, 1, 2.
    stored = train[int(got['name'][4])]
    np.testing.assert_array_equal(
        got['label_map'], stored['segmentation_mask'][:, :, 0] - 1)
  batches = stream(config, 4, count=3)
  assert batches[0]['label_map'].shape == (4, 4, 5)
  np.testing.assert_equal(stream(config, 4, start_step=2, count=1),
                          batches[2:])
  with pytest.raises(data.DenseLabelError, match='pet_9.jpg is 3x5') as e:
    list(data.eval_examples(config, 'test', 0, 1))
  assert e.value.path == 'pet_9.jpg'


def test_classification_info_only_gains_its_task(tmp_path):
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  digits.prepared_builder(str(tmp_path))
  info = data.dataset_info(dict(data_dir=str(tmp_path)))
  assert info == {'task': 'classification', 'num_classes': 10,
                  'image_shape': (8, 8, 1),
                  'num_examples': {'train': 1437, 'test': 360}}
  with pytest.raises(ValueError, match='for segmentation datasets'):
    data.eval_examples(dict(data_dir=str(tmp_path)), 'test', 0, 1)
