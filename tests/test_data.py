"""Tests of the input pipeline (vit_jax.data) on the embedded digits dataset
and on a tiny image folder the tests write. No network is used."""

import dataclasses
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from vit_jax import data

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_TRAIN, NUM_TEST = 1437, 360
AUGMENTING_SPEC = 'inception_crop(6)|flip_lr|value_range(-1, 1)|onehot(10)'


@pytest.fixture(scope='session')
def tf():
  from vit_jax.data.tensorflow_cpu import tf as tensorflow  # pylint: disable=g-import-not-at-top
  return tensorflow


@pytest.fixture(scope='session')
def digits_dir(tmp_path_factory):
  """A data_dir with digits prepared once for the whole session."""
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  data_dir = str(tmp_path_factory.mktemp('tfds'))
  digits.prepared_builder(data_dir)
  return data_dir


def digits_config(data_dir, **overrides):
  config = data.default_config()
  config.data_dir = data_dir
  config.update(overrides)
  return config


def image_keys(images):
  """A hashable id per image: digits has no two identical images."""
  return [image.tobytes() for image in np.asarray(images)]


def take(iterator, count):
  return [next(iterator) for _ in range(count)]


def assert_batches_equal(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for batch_a, batch_b in zip(batches_a, batches_b):
    assert sorted(batch_a) == sorted(batch_b)
    for key in batch_a:
      np.testing.assert_array_equal(batch_a[key], batch_b[key])


def split_images(data_dir, split):
  """The split's images through the default spec, straight from TFDS."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  examples = tfds.as_numpy(
      digits.Digits(data_dir=data_dir).as_dataset(split=split, batch_size=-1))
  images = examples['image'].astype(np.float32)
  return -1.0 * (1.0 - images / 255.0) + 1.0 * (images / 255.0), examples


# ----------------------------------------------------------------------------
# Package boundaries and config.


def test_importing_the_package_does_not_import_tensorflow():
  code = ('import sys, vit_jax.data; '
          "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO_ROOT)


def test_unknown_config_field_is_named():
  config = data.default_config()
  config.shufle_buffer = 10
  with pytest.raises(ValueError, match=r"shufle_buffer.*valid fields.*"
                     r"shuffle_buffer"):
    data.resolve_config(config)


# ----------------------------------------------------------------------------
# The digits dataset.


def test_digits_prepares_offline_with_fixed_splits(digits_dir, tmp_path):
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  _, train = split_images(digits_dir, 'train')
  _, test = split_images(digits_dir, 'test')
  assert len(train['id']) == NUM_TRAIN and len(test['id']) == NUM_TEST
  all_ids = np.concatenate([train['id'], test['id']])
  np.testing.assert_array_equal(np.sort(all_ids), np.arange(1797))
  np.testing.assert_array_equal(np.sort(test['id']),
                                digits.split_rows()['test'])
  for split in (train, test):
    assert split['image'].shape[1:] == (8, 8, 1)
    assert split['image'].dtype == np.uint8
    assert set(np.unique(split['label'])) == set(range(10))
  # The documented class balance of the test split.
  test_counts = np.bincount(test['label'], minlength=10)
  assert test_counts.min() >= 27 and test_counts.max() <= 46
  # Pixel values: sklearn's 0..16 scaled to 0..255.
  from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top
  sklearn_images = sklearn_datasets.load_digits().images
  row = int(train['id'][0])
  np.testing.assert_array_equal(
      train['image'][0, ..., 0], np.round(sklearn_images[row] * 255 / 16))
  assert train['image'].max() == 255 and train['image'].min() == 0
  # A second prepare elsewhere gives the same splits.
  digits.prepared_builder(str(tmp_path))
  _, test_again = split_images(str(tmp_path), 'test')
  np.testing.assert_array_equal(np.sort(test_again['id']),
                                np.sort(test['id']))


def test_digits_prepares_without_download_messages_or_tf_log_lines(tmp_path):
  """Preparing digits in a fresh data_dir prints nothing: no TFDS download
  messages or progress bars, no TensorFlow C++ INFO / WARNING lines (among
  them oneDNN's notice, on CPUs where oneDNN is on)."""
  code = ('import sys\n'
          'from vit_jax.data import digits\n'
          'builder = digits.prepared_builder(sys.argv[1])\n'
          'assert len(list(builder.as_dataset(split="test"))) == 360\n')
  env = {name: value for name, value in os.environ.items()
         if name != 'TF_CPP_MIN_LOG_LEVEL'}  # vit_jax's default, not the user's
  result = subprocess.run(
      [sys.executable, '-c', code, str(tmp_path / 'tfds')], cwd=REPO_ROOT,
      env=env, capture_output=True, text=True, timeout=1800, check=False)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output
  for noise in ('Downloading and preparing', 'downloaded and prepared',
                'Generating splits', 'oneDNN', 'cpu_feature_guard',
                'has no dataset_info', 'absl::InitializeLog'):
    assert noise not in output, output
  # TensorFlow's C++ log lines start with their level and a date: I0000 ...
  tf_log_lines = [line for line in output.splitlines()
                  if len(line) > 5 and line[0] in 'IW' and line[1:5].isdigit()]
  assert not tf_log_lines, output
  assert (tmp_path / 'tfds' / 'digits' / '1.0.0').is_dir()

def test_dataset_info_for_digits(digits_dir):
  info = data.dataset_info(digits_config(digits_dir))
  assert info == {'task': 'classification', 'num_classes': 10,
                  'image_shape': (8, 8, 1),
                  'num_examples': {'train': NUM_TRAIN, 'test': NUM_TEST}}
  info = data.dataset_info(digits_config(
      digits_dir, train_split='train[:90%]', eval_split='train[90%:]+test',
      pp_eval='resize(16)|value_range(0, 1)|onehot(10)'))
  assert info['image_shape'] == (16, 16, 1)
  assert info['num_examples']['train'] + info['num_examples']['test'] == 1797


# ----------------------------------------------------------------------------
# Preprocessing ops.


def preprocess_one(tf, spec, image, label=3, rng=None):
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  example = {'image': tf.constant(image), 'label': tf.constant(label, tf.int64)}
  if rng is not None:
    example['rng'] = rng
  result = preprocess.build(spec)(example)
  return {key: value.numpy() for key, value in result.items()}


def ramp_image(height=6, width=8, channels=3):
  return np.arange(height * width * channels, dtype=np.uint8).reshape(
      height, width, channels)


def test_resize_and_resize_small_shapes(tf):
  image = ramp_image(6, 8)
  assert preprocess_one(tf, 'resize(4)', image)['image'].shape == (4, 4, 3)
  resized = preprocess_one(tf, 'resize((3, 5))', image)['image']
  assert resized.shape == (3, 5, 3) and resized.dtype == np.uint8
  resized = preprocess_one(tf, 'resize_small(3)', image)['image']
  assert resized.shape == (3, 4, 3)


def test_central_crop_takes_the_middle(tf):
  image = ramp_image(6, 8)
  cropped = preprocess_one(tf, 'central_crop(4)', image)['image']
  np.testing.assert_array_equal(cropped, image[1:5, 2:6])
  cropped = preprocess_one(tf, 'central_crop((2, 8))', image)['image']
  np.testing.assert_array_equal(cropped, image[2:4])


def test_flip_lr_is_the_numpy_flip_or_nothing(tf):
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  image = ramp_image()
  outcomes = set()
  for index in range(16):
    flipped = preprocess_one(tf, 'flip_lr', image,
                             rng=preprocess.example_seed(0, 0, 0, index))
    if np.array_equal(flipped['image'], np.fliplr(image)):
      outcomes.add('flipped')
    else:
      np.testing.assert_array_equal(flipped['image'], image)
      outcomes.add('kept')
  assert outcomes == {'flipped', 'kept'}


def test_value_range_maps_the_ends_exactly(tf):
  image = np.array([0, 255, 51], np.uint8).reshape(1, 3, 1)
  for lo, hi in ((-1, 1), (0, 1), (0.1, 0.9), (-0.3, 2.7)):
    values = preprocess_one(tf, f'value_range({lo}, {hi})', image)['image']
    assert values.dtype == np.float32
    assert values[0, 0, 0] == np.float32(lo)
    assert values[0, 1, 0] == np.float32(hi)
  values = preprocess_one(tf, 'value_range(-1, 1)', image)['image']
  np.testing.assert_allclose(values[0, 2, 0], -0.6, rtol=1e-6)
  normalized = preprocess_one(tf, 'normalize(51, 2)', image)['image']
  np.testing.assert_allclose(normalized.ravel(), [-25.5, 102, 0])


def test_onehot_keep_and_copy(tf):
  result = preprocess_one(tf, 'onehot(5)', ramp_image(), label=2)
  np.testing.assert_array_equal(result['labels'], [0, 0, 1, 0, 0])
  assert 'label' not in result
  result = preprocess_one(
      tf, "copy('label', 'label_id')|onehot(4, on=0.9, off=0.1)|"
      "keep('labels', 'label_id')", ramp_image(), label=1)
  assert sorted(result) == ['label_id', 'labels'] and result['label_id'] == 1
  np.testing.assert_allclose(result['labels'], [0.1, 0.9, 0.1, 0.1])


def test_decode_reads_encoded_images(tf):
  image = ramp_image()
  png = tf.io.encode_png(tf.constant(image)).numpy()
  np.testing.assert_array_equal(preprocess_one(tf, 'decode', png)['image'],
                                image)
  grey = preprocess_one(tf, 'decode(1)', png)['image']
  assert grey.shape == (6, 8, 1)


def test_inception_crop_is_deterministic_per_seed_and_index(tf):
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  image = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
  spec = 'inception_crop(16)'

  def crop(index):
    return preprocess_one(tf, spec, image,
                          rng=preprocess.example_seed(7, 0, 0, index))['image']
  first = crop(0)
  assert first.shape == (16, 16, 3) and first.dtype == np.uint8
  np.testing.assert_array_equal(first, crop(0))
  assert not np.array_equal(first, crop(1))


def test_random_op_without_rng_is_an_error(tf):
  with pytest.raises(ValueError, match="'flip_lr'.*random"):
    preprocess_one(tf, 'flip_lr', ramp_image())


def test_unknown_op_names_it_and_lists_the_valid_ones():
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=r"'rotate'.*valid ops.*inception_crop"):
    preprocess.parse_spec('decode|rotate(3)|onehot(10)')


@pytest.mark.parametrize('spec, message', [
    ('resize(', 'Cannot parse'),
    ('resize(size)', 'literals'),
    ('resize(__import__("os"))', 'literals'),
    ('resize(4, colour=2)', 'Bad arguments'),
    ('decode||onehot(10)', 'Empty op'),
    ('onehot(10)|', 'Empty op'),
    ('a.b(1)', 'NAME or NAME'),
    (42, 'must be a string'),
])
def test_spec_parsing_errors(spec, message):
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=message):
    preprocess.parse_spec(spec)


def test_spec_parsing_reads_literals():
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  assert preprocess.parse_spec(
      "decode|inception_crop(224, area_min=8)|value_range(-1, 1)|"
      "resize((3, 4))|keep('image')") == [
          ('decode', (), {}), ('inception_crop', (224,), {'area_min': 8}),
          ('value_range', (-1, 1), {}), ('resize', ((3, 4),), {}),
          ('keep', ('image',), {})]


# ----------------------------------------------------------------------------
# The train iterator.


@pytest.mark.parametrize('cache', [True, False])
def test_train_iterator_is_deterministic_and_resumes_exactly(digits_dir,
                                                             cache):
  config = digits_config(digits_dir, cache=cache, pp_train=AUGMENTING_SPEC,
                         shuffle_buffer=500)
  # 7 batches of 320: batch 4 holds positions 1,280..1,599 and so crosses
  # the epoch boundary (1,437 examples); resuming there starts mid-epoch.
  batches = take(data.train_iterator(config, 320, seed=3, process_index=0,
                                     process_count=1), 7)
  assert batches[0]['image'].shape == (320, 6, 6, 1)
  assert batches[0]['image'].dtype == np.float32
  assert batches[0]['labels'].shape == (320, 10)
  again = take(data.train_iterator(config, 320, seed=3, process_index=0,
                                   process_count=1), 7)
  assert_batches_equal(batches, again)
  resumed = take(data.train_iterator(config, 320, seed=3, start_step=4,
                                     process_index=0, process_count=1), 3)
  assert_batches_equal(batches[4:], resumed)
  other_seed = next(data.train_iterator(config, 320, seed=4, process_index=0,
                                        process_count=1))
  assert not np.array_equal(other_seed['image'], batches[0]['image'])


def test_train_epoch_is_a_permutation_and_epochs_differ(digits_dir):
  config = digits_config(digits_dir, cache=True)
  # 1,437 = 3 * 479: three batches are exactly one epoch.
  batches = take(data.train_iterator(config, 479, seed=0, process_index=0,
                                     process_count=1), 6)
  epoch_0 = [key for b in batches[:3] for key in image_keys(b['image'])]
  epoch_1 = [key for b in batches[3:] for key in image_keys(b['image'])]
  train_images, _ = split_images(digits_dir, 'train')
  assert sorted(epoch_0) == sorted(image_keys(train_images))
  assert sorted(epoch_1) == sorted(epoch_0)
  assert epoch_0 != epoch_1  # Reshuffled with (seed, epoch).


def test_streamed_shards_resume_exactly_and_cover_each_epoch(digits_dir,
                                                             monkeypatch):
  """Streaming from disk with several shards: a per-epoch shard order,
  interleaving and a shuffle buffer, and still exact resume."""
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  get_source = sources.get_source

  def get_source_in_five_shards(*args, **kwargs):
    source = get_source(*args, **kwargs)
    (filename, skip, count), = source.file_instructions
    bounds = np.linspace(skip, skip + count, 6).astype(int)
    shards = [(filename, int(begin), int(end - begin))
              for begin, end in zip(bounds[:-1], bounds[1:])]
    return dataclasses.replace(source, file_instructions=shards)
  monkeypatch.setattr(sources, 'get_source', get_source_in_five_shards)

  config = digits_config(digits_dir, cache=False, shuffle_buffer=50,
                         pp_train=AUGMENTING_SPEC)
  batches = take(data.train_iterator(config, 320, seed=5, process_index=0,
                                     process_count=1), 7)
  resumed = take(data.train_iterator(config, 320, seed=5, start_step=5,
                                     process_index=0, process_count=1), 2)
  assert_batches_equal(batches[5:], resumed)

  config = digits_config(digits_dir, cache=False, shuffle_buffer=50)
  batches = take(data.train_iterator(config, 479, seed=5, process_index=0,
                                     process_count=1), 6)
  epoch_0 = [key for b in batches[:3] for key in image_keys(b['image'])]
  epoch_1 = [key for b in batches[3:] for key in image_keys(b['image'])]
  train_images, _ = split_images(digits_dir, 'train')
  assert sorted(epoch_0) == sorted(epoch_1) == sorted(image_keys(train_images))
  assert epoch_0 != epoch_1


def test_train_processes_read_disjoint_shares(digits_dir):
  config = digits_config(digits_dir, cache=True)
  seen = []
  for process_index in range(2):
    # Shares of 719 and 718 examples; 3 local batches of 200 stay in epoch 0.
    batches = take(data.train_iterator(config, 400, seed=0,
                                       process_index=process_index,
                                       process_count=2), 3)
    assert batches[0]['image'].shape[0] == 200
    seen.append({key for b in batches for key in image_keys(b['image'])})
    assert len(seen[-1]) == 600
  assert not seen[0] & seen[1]


def test_global_batch_must_divide_over_processes(digits_dir):
  with pytest.raises(ValueError, match=r'batch size 10 .* processes 4'):
    data.train_iterator(digits_config(digits_dir), 10, seed=0,
                        process_index=0, process_count=4)


def test_labels_width_must_match_the_dataset(digits_dir):
  config = digits_config(digits_dir, pp_train='value_range(-1, 1)|onehot(5)')
  with pytest.raises(ValueError, match=r'width 5.*10 classes'):
    data.train_iterator(config, 8, seed=0, process_index=0, process_count=1)


def test_mixup_mixes_images_and_labels_with_weights_summing_to_one(
    digits_dir):
  plain_config = digits_config(digits_dir, cache=True)
  mixed_config = digits_config(digits_dir, cache=True, mixup_alpha=0.4)
  plain = take(data.train_iterator(plain_config, 64, seed=1, process_index=0,
                                   process_count=1), 3)
  mixed = take(data.train_iterator(mixed_config, 64, seed=1, process_index=0,
                                   process_count=1), 3)
  resumed = next(data.train_iterator(mixed_config, 64, seed=1, start_step=2,
                                     process_index=0, process_count=1))
  assert_batches_equal(mixed[2:], [resumed])
  ratios = []
  for plain_batch, mixed_batch in zip(plain, mixed):
    labels, partner = plain_batch['labels'], np.roll(plain_batch['labels'], 1,
                                                     axis=0)
    np.testing.assert_allclose(mixed_batch['labels'].sum(axis=1), 1.0,
                               rtol=1e-6)
    assert ((mixed_batch['labels'] > 0).sum(axis=1) <= 2).all()
    # The batch's ratio from its labels; images mixed with the same one.
    difference = (labels - partner).ravel()
    ratio = (np.dot((mixed_batch['labels'] - partner).ravel(), difference) /
             np.dot(difference, difference))
    ratios.append(ratio)
    assert 0.0 <= ratio <= 1.0
    np.testing.assert_allclose(
        mixed_batch['labels'], ratio * labels + (1 - ratio) * partner,
        atol=1e-5)
    images = plain_batch['image']
    np.testing.assert_allclose(
        mixed_batch['image'],
        ratio * images + (1 - ratio) * np.roll(images, 1, axis=0), atol=1e-4)
  assert len(set(np.round(ratios, 6))) == 3  # One ratio per step.
  assert any(0.01 < r < 0.99 for r in ratios)


# ----------------------------------------------------------------------------
# The eval iterator.


def test_eval_iterator_sees_every_example_exactly_once(digits_dir):
  config = digits_config(digits_dir)
  batches = list(data.eval_iterator(config, 'test', 64, process_index=0,
                                    process_count=1))
  assert len(batches) == 6  # ceil(360 / 64)
  for batch in batches:
    assert batch['image'].shape == (64, 8, 8, 1)
    assert batch['labels'].shape == (64, 10) and batch['mask'].shape == (64,)
    assert batch['mask'].dtype == np.float32
  masks = np.concatenate([b['mask'] for b in batches])
  assert masks.sum() == NUM_TEST and (masks[NUM_TEST:] == 0).all()
  assert (batches[-1]['image'][masks[-64:] == 0] == 0).all()
  real = [key for b in batches
          for key in image_keys(b['image'][b['mask'] == 1])]
  test_images, _ = split_images(digits_dir, 'test')
  assert sorted(real) == sorted(image_keys(test_images))


def test_eval_processes_partition_the_split(digits_dir):
  config = digits_config(digits_dir)
  keys, num_batches = [], []
  for process_index in range(2):
    # 7 examples over 2 processes: shares of 4 and 3, padded alike.
    batches = list(data.eval_iterator(config, 'test[:7]', 4,
                                      process_index=process_index,
                                      process_count=2))
    num_batches.append(len(batches))
    keys.append([key for b in batches
                 for key in image_keys(b['image'][b['mask'] == 1])])
  assert num_batches == [2, 2]
  assert [len(k) for k in keys] == [4, 3]
  assert not set(keys[0]) & set(keys[1])
  test_images, _ = split_images(digits_dir, 'test[:7]')
  assert sorted(keys[0] + keys[1]) == sorted(image_keys(test_images))
  full = []
  for process_index in range(2):
    for batch in data.eval_iterator(config, 'test', 64,
                                    process_index=process_index,
                                    process_count=2):
      full.extend(image_keys(batch['image'][batch['mask'] == 1]))
  assert len(full) == len(set(full)) == NUM_TEST


# ----------------------------------------------------------------------------
# Image folders and missing datasets.


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory, tf):
  """root/{train,test}/{cat,dog}/*.png with images of varied sizes."""
  root = tmp_path_factory.mktemp('folder')
  rng = np.random.RandomState(0)
  for split, count in (('train', 3), ('test', 2)):
    for label in ('cat', 'dog'):
      os.makedirs(root / split / label)
      for index in range(count):
        image = rng.randint(0, 256, (10 + index, 12, 3)).astype(np.uint8)
        png = tf.io.encode_png(tf.constant(image)).numpy()
        (root / split / label / f'{index}.png').write_bytes(png)
  return str(root)


def test_image_folder_dataset(image_folder):
  spec = 'resize(4)|value_range(0, 1)|onehot(2)'
  config = data.default_config()
  config.update(name='image_folder', folder=image_folder, pp_train=spec,
                pp_eval=spec, cache=True)
  assert data.dataset_info(config) == {
      'task': 'classification', 'num_classes': 2, 'image_shape': (4, 4, 3),
      'num_examples': {'train': 6, 'test': 4}}
  batches = list(data.eval_iterator(config, 'test', 3, process_index=0,
                                    process_count=1))
  assert len(batches) == 2
  masks = np.concatenate([b['mask'] for b in batches])
  labels = np.concatenate([b['labels'] for b in batches])[masks == 1]
  np.testing.assert_array_equal(labels.sum(axis=0), [2, 2])
  train = next(data.train_iterator(config, 4, seed=0, process_index=0,
                                   process_count=1))
  assert train['image'].shape == (4, 4, 4, 3)
  assert 0.0 <= train['image'].min() and train['image'].max() <= 1.0
  config.train_split = 'train[:50%]'
  assert data.dataset_info(config)['num_examples']['train'] == 3


def test_image_folder_without_folder_is_an_error(tmp_path):
  config = data.default_config()
  config.update(name='image_folder', folder=str(tmp_path / 'nowhere'))
  with pytest.raises(ValueError, match='nowhere'):
    data.dataset_info(config)


@pytest.fixture
def no_network(monkeypatch):
  def refuse(*args, **kwargs):
    raise AssertionError(f'network access attempted: {args}')
  monkeypatch.setattr(socket, 'create_connection', refuse)
  monkeypatch.setattr(socket.socket, 'connect', refuse)
  monkeypatch.setattr(socket, 'getaddrinfo', refuse)


def test_missing_dataset_says_how_to_prepare_it(tmp_path, no_network):
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  config = digits_config(str(tmp_path), name='imagenet2012')
  with pytest.raises(sources.DatasetNotPreparedError) as error:
    data.train_iterator(config, 8, seed=0, process_index=0, process_count=1)
  message = str(error.value)
  assert "'imagenet2012'" in message and str(tmp_path) in message
  assert f'tfds build imagenet2012 --data_dir={tmp_path}' in message


def test_unknown_dataset_name_is_an_error(tmp_path, no_network):
  config = digits_config(str(tmp_path), name='no_such_dataset_xyz')
  with pytest.raises(ValueError, match="'no_such_dataset_xyz'"):
    data.dataset_info(config)


def test_unknown_dataset_is_one_line_with_the_closest_name(tmp_path,
                                                           no_network):
  """For library callers too (the command line checks it earlier): not
  TFDS's error, which lists its whole catalogue."""
  config = digits_config(str(tmp_path), name='cifar1000')
  with pytest.raises(ValueError) as raised:
    data.dataset_info(config)
  message = str(raised.value)
  assert '\n' not in message and len(message) < 300, message
  assert "unknown dataset 'cifar1000'; did you mean 'cifar100'?" in message


def test_cutmix_pastes_one_box_and_weights_labels_by_its_area(digits_dir):
  plain_config = digits_config(digits_dir, cache=True)
  mixed_config = digits_config(digits_dir, cache=True, cutmix_alpha=1.0)
  plain = take(data.train_iterator(plain_config, 32, seed=1, process_index=0,
                                   process_count=1), 4)
  mixed = take(data.train_iterator(mixed_config, 32, seed=1, process_index=0,
                                   process_count=1), 4)
  resumed = next(data.train_iterator(mixed_config, 32, seed=1, start_step=3,
                                     process_index=0, process_count=1))
  assert_batches_equal(mixed[3:], [resumed])
  areas = []
  for plain_batch, mixed_batch in zip(plain, mixed):
    images = plain_batch['image']
    partner = np.roll(images, 1, axis=0)
    labels = plain_batch['labels']
    partner_labels = np.roll(labels, 1, axis=0)
    # The pasted fraction, from the labels: a whole number of the 64 pixels.
    difference = (partner_labels - labels).ravel()
    area = (np.dot((mixed_batch['labels'] - labels).ravel(), difference) /
            np.dot(difference, difference))
    np.testing.assert_allclose(
        mixed_batch['labels'], (1 - area) * labels + area * partner_labels,
        atol=1e-6)
    assert abs(area * 64 - round(area * 64)) < 1e-4
    areas.append(area)
    # One rectangle, the same for the whole batch, comes from the
    # neighbour; the rest is the example. (Pixels equal in every image,
    # such as the digits' empty border, cannot show where the box is.)
    changed = (mixed_batch['image'] != images).any(axis=(0, 3))  # [H, W]
    box = np.zeros_like(changed)
    if changed.any():
      rows, cols = np.flatnonzero(changed.any(1)), np.flatnonzero(
          changed.any(0))
      box[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = True
    assert box.sum() <= round(area * 64)
    np.testing.assert_array_equal(mixed_batch['image'][:, box],
                                  partner[:, box])
    np.testing.assert_array_equal(mixed_batch['image'][:, ~box],
                                  images[:, ~box])
  assert any(0 < a < 1 for a in areas)


def test_mixup_and_cutmix_alternate_per_batch(digits_dir):
  config = digits_config(digits_dir, cache=True, mixup_alpha=0.5,
                         cutmix_alpha=1.0)
  plain = take(data.train_iterator(digits_config(digits_dir, cache=True), 32,
                                   seed=2, process_index=0,
                                   process_count=1), 12)
  mixed = take(data.train_iterator(config, 32, seed=2, process_index=0,
                                   process_count=1), 12)
  kinds = set()
  for plain_batch, mixed_batch in zip(plain, mixed):
    images, partner = plain_batch['image'], np.roll(plain_batch['image'], 1,
                                                    axis=0)
    exact = ((mixed_batch['image'] == images) |
             (mixed_batch['image'] == partner)).all()
    kinds.add('cutmix' if exact else 'mixup')
  assert kinds == {'cutmix', 'mixup'}
  with pytest.raises(ValueError, match=r'cutmix_alpha must be >= 0 .*-1'):
    data.train_iterator(digits_config(digits_dir, cutmix_alpha=-1), 32,
                        seed=0, process_index=0, process_count=1)


@pytest.mark.parametrize('recipe', ['vit_i1k', 'vit_i21k', 'scaling_vit',
                                    'mixer_i1k', 'swin_i1k', 'mae_i1k',
                                    'convmixer_i1k', 'xcit_i1k', 'finetune'])
def test_every_recipes_preprocessing_runs_on_an_encoded_image(recipe):
  from tiny import load_config  # pylint: disable=g-import-not-at-top
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top
  config = load_config(recipe)
  pixels = np.random.default_rng(0).integers(0, 256, (300, 260, 3),
                                             dtype=np.uint8)
  example = {'image': tf.io.encode_png(pixels), 'label': tf.constant(
      3, tf.int64), 'rng': tf.constant([1, 2], tf.int64)}
  shapes = []
  fewshot = config.get('evals', {}).get('fewshot', {})
  fewshot_specs = [f"{d['pp']}|onehot(10)"
                   for d in fewshot.get('datasets', {}).values()]
  for spec in [config.data.pp_train, config.data.pp_eval] + fewshot_specs:
    out = preprocess.build(spec)(dict(example))
    assert out['image'].dtype == tf.float32
    shapes.append(tuple(out['image'].shape))
    assert np.isfinite(out['image'].numpy()).all()
    assert out['labels'].numpy().argmax() == 3
  assert len(set(shapes)) == 1 and shapes[0][2] == 3  # one input size


# ----------------------------------------------------------------------------
# Corrupt image files, label counts, one-class datasets.


def write_image_folder(tf, root, counts, size=(10, 12)):
  """root/SPLIT/CLASS/{0,1,...}.png for counts {split: {class: count}}."""
  rng = np.random.RandomState(1)
  for split, per_class in counts.items():
    for label, count in per_class.items():
      os.makedirs(root / split / label)
      for index in range(count):
        image = rng.randint(0, 256, size + (3,)).astype(np.uint8)
        png = tf.io.encode_png(tf.constant(image)).numpy()
        (root / split / label / f'{index}.png').write_bytes(png)
  return str(root)


def folder_config(folder, **overrides):
  spec = 'resize(4)|value_range(0, 1)|onehot(2)'
  config = data.default_config()
  config.update(name='image_folder', folder=folder, pp_train=spec,
                pp_eval=spec)
  config.update(overrides)
  return config


@pytest.fixture
def corrupt_folder(tmp_path, tf):
  """8 train / 6 test images of 2 classes; one train image truncated, one
  test image garbage, both named .png. Returns (root, train_bad, test_bad)."""
  root = write_image_folder(tf, tmp_path, {'train': {'cat': 4, 'dog': 4},
                                           'test': {'cat': 3, 'dog': 3}})
  train_bad = os.path.join(root, 'train', 'dog', '2.png')
  with open(train_bad, 'rb') as f:
    png = f.read()
  with open(train_bad, 'wb') as f:
    f.write(png[:len(png) // 2])
  test_bad = os.path.join(root, 'test', 'cat', '1.png')
  with open(test_bad, 'wb') as f:
    f.write(b'not an image at all' * 20)
  return root, train_bad, test_bad


def test_header_check_tells_intact_from_damaged_files(tmp_path, tf):
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  image = np.random.RandomState(0).randint(0, 256, (64, 64, 3)).astype(
      np.uint8)
  files = {'png': tf.io.encode_png(image).numpy(),
           'jpg': tf.io.encode_jpeg(image).numpy()}
  files.update({
      'png_cut': files['png'][:-12], 'png_half': files['png'][:1000],
      'jpg_cut': files['jpg'][:-2], 'jpg_half': files['jpg'][:500],
      'empty': b'', 'text': b'hello' * 100})
  verdicts = {}
  for name, content in files.items():
    (tmp_path / name).write_bytes(content)
    verdicts[name] = sources.image_file_looks_intact(str(tmp_path / name))
  verdicts['missing'] = sources.image_file_looks_intact(
      str(tmp_path / 'missing'))
  assert verdicts == {'png': True, 'jpg': True, 'png_cut': False,
                      'png_half': False, 'jpg_cut': False, 'jpg_half': False,
                      'empty': False, 'text': False, 'missing': False}


def test_corrupt_image_is_named_by_default(corrupt_folder):
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  root, train_bad, test_bad = corrupt_folder
  config = folder_config(root)
  # 8 examples in batches of 2: the bad file's batch is found from the step,
  # also when resuming.
  for start_step in (0, 1):
    iterator = data.train_iterator(config, 2, seed=0, start_step=start_step,
                                   process_index=0, process_count=1)
    with pytest.raises(sources.CorruptImageError) as error:
      take(iterator, 8)
    assert isinstance(error.value, ValueError)
    assert error.value.path == train_bad and error.value.split == 'train'
    message = str(error.value)
    assert train_bad in message and "'train'" in message
    assert 'skip_corrupt' in message and 'function_node' not in message
  with pytest.raises(sources.CorruptImageError, match=r'(?s)' +
                     re_escape(test_bad) + ".*'test'"):
    list(data.eval_iterator(config, 'test', 2, process_index=0,
                            process_count=1))


def re_escape(text):
  import re  # pylint: disable=g-import-not-at-top
  return re.escape(text)


def test_skip_corrupt_leaves_out_counts_and_stays_deterministic(
    corrupt_folder, caplog):
  root, train_bad, test_bad = corrupt_folder
  config = folder_config(root, skip_corrupt=True)
  with caplog.at_level('WARNING'):
    iterator = data.train_iterator(config, 7, seed=0, process_index=0,
                                   process_count=1)
  assert iterator.skipped_files == [train_bad]
  assert any('1 corrupt image file' in record.getMessage() and
             train_bad in record.getMessage() for record in caplog.records)
  # 7 intact examples: one epoch per batch, each a permutation of them.
  batches = take(iterator, 3)
  assert batches[0]['image'].shape == (7, 4, 4, 3)
  for batch in batches:
    np.testing.assert_array_equal(batch['labels'].sum(axis=0), [4, 3])
  again = take(data.train_iterator(config, 7, seed=0, process_index=0,
                                   process_count=1), 3)
  assert_batches_equal(batches, again)
  resumed = take(data.train_iterator(config, 7, seed=0, start_step=1,
                                     process_index=0, process_count=1), 2)
  assert_batches_equal(batches[1:], resumed)

  # Eval: each intact example once, padded as without skipping.
  for process_count, num_batches in ((1, 3), (2, 2)):
    masks, labels, skipped = [], [], []
    for process_index in range(process_count):
      iterator = data.eval_iterator(config, 'test', 2 * process_count,
                                    process_index=process_index,
                                    process_count=process_count)
      batches = list(iterator)
      # ceil(6 / process_count / 2): the largest share before skipping.
      assert len(batches) == num_batches
      skipped += iterator.skipped_files
      masks.append(np.concatenate([b['mask'] for b in batches]))
      labels.append(np.concatenate([b['labels'] for b in batches]))
    assert skipped == [test_bad]
    masks, labels = np.concatenate(masks), np.concatenate(labels)
    assert masks.sum() == 5
    np.testing.assert_array_equal(labels[masks == 1].sum(axis=0), [2, 3])
  np.testing.assert_array_equal(data.label_counts(config, 'test'), [2, 3])


def test_file_damaged_inside_is_named_even_with_skip_corrupt(tmp_path, tf):
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  root = write_image_folder(tf, tmp_path, {'train': {'a': 2, 'b': 2}},
                            size=(32, 32))
  bad = os.path.join(root, 'train', 'b', '0.png')
  with open(bad, 'rb') as f:
    png = bytearray(f.read())
  png[100:200] = bytes(100)  # Inside the image data; the ends are intact.
  with open(bad, 'wb') as f:
    f.write(bytes(png))
  assert sources.image_file_looks_intact(bad)
  config = folder_config(root, skip_corrupt=True)
  iterator = data.train_iterator(config, 4, seed=0, process_index=0,
                                 process_count=1)
  assert iterator.skipped_files == []
  with pytest.raises(sources.CorruptImageError, match='damaged inside') as e:
    next(iterator)
  assert e.value.path == bad


def test_skip_corrupt_is_for_image_folders_only(digits_dir):
  with pytest.raises(ValueError, match=r"skip_corrupt.*image_folder.*"
                     r"'digits'"):
    data.resolve_config(digits_config(digits_dir, skip_corrupt=True))
  with pytest.raises(ValueError, match=r"skip_corrupt must be True or "
                     r"False, got 'yes'"):
    data.resolve_config({'name': 'image_folder', 'skip_corrupt': 'yes'})


@pytest.fixture
def no_image_reading(tf, monkeypatch):
  """Decoding an image, or reading an image file by TF, fails."""
  def refuse(*args, **kwargs):
    raise AssertionError('an image was read or decoded')
  for module, name in ((tf.image, 'decode_image'), (tf.io, 'decode_image'),
                       (tf.io, 'decode_png'), (tf.io, 'read_file')):
    monkeypatch.setattr(module, name, refuse)


def test_decoding_is_refused_under_no_image_reading(digits_dir,
                                                    no_image_reading):
  with pytest.raises(AssertionError, match='decoded'):
    data.dataset_info(digits_config(digits_dir))


def test_label_counts_of_digits_match_sklearn(digits_dir, no_image_reading):
  from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  targets = sklearn_datasets.load_digits().target
  config = digits_config(digits_dir)
  for split, rows in digits.split_rows().items():
    counts = data.label_counts(config, split)
    assert counts.dtype == np.int64 and counts.shape == (10,)
    np.testing.assert_array_equal(counts,
                                  np.bincount(targets[rows], minlength=10))
  both = data.label_counts(config, 'train+test')
  np.testing.assert_array_equal(both, np.bincount(targets, minlength=10))
  assert data.label_counts(config, 'test[:7]').sum() == 7


def test_label_counts_of_an_image_folder_read_no_image(tmp_path, tf,
                                                       request):
  root = write_image_folder(tf, tmp_path, {
      'train': {'ant': 1, 'bee': 3, 'cow': 2}, 'test': {'ant': 1, 'cow': 1}})
  config = folder_config(root)
  request.getfixturevalue('no_image_reading')  # After writing the images.
  counts = data.label_counts(config, 'train')
  assert counts.dtype == np.int64
  np.testing.assert_array_equal(counts, [1, 3, 2])
  # Classes are those of all splits: 'bee' has no test image.
  np.testing.assert_array_equal(data.label_counts(config, 'test'), [1, 0, 1])


def test_one_class_dataset_is_refused(tmp_path, tf):
  root = write_image_folder(tf, tmp_path, {'train': {'only': 2},
                                           'test': {'only': 1}})
  config = folder_config(root)
  for call in (data.dataset_info, data.num_classes,
               lambda c: data.label_counts(c, 'train')):
    with pytest.raises(ValueError, match=r"'image_folder' at .*" +
                       re_escape(root) + r".*1 class \['only'\].*>= 2"):
      call(config)
