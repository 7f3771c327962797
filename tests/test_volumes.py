"""3-D volume data (vit_jax/data/volumes.py, synthetic_volumes.py): the
ops against MONAI (tests/golden/volumes_monai.npz, written by
tests/support/make_golden_volumes.py) and hand-computed values, crops and
their sampling, resume, dataset.json folders of tiny NIfTI files, and the
errors naming the bad file."""

import gzip
import json
import os

import nibabel
import numpy as np
import pytest

from vit_jax import data
from vit_jax.data import synthetic_volumes
from vit_jax.data import volume_ops
from vit_jax.data import volumes

GOLDEN = os.path.join(os.path.dirname(__file__), 'golden',
                      'volumes_monai.npz')
SYNTHETIC_TRAIN = ('scale_intensity(-100, 400, 0.0, 1.0, clip=True)|'
                   'rand_crop_pos_neg(24, pos=1, neg=1, samples=2)|'
                   'rand_flip(0, 0.1)|rand_flip(1, 0.1)|rand_flip(2, 0.1)|'
                   'rand_rot90(0.1, 3)|rand_shift_intensity(0.1, 0.5)')
SYNTHETIC = {'name': 'synthetic_volumes', 'pp_train': SYNTHETIC_TRAIN,
             'pp_eval': 'scale_intensity(-100, 400, 0.0, 1.0, clip=True)'}


def _volume(image, label=None, affine=None, path='vol'):
  image = np.asarray(image, np.float32)
  if image.ndim == 3:
    image = image[..., None]
  label = (np.zeros(image.shape[:3], np.int32) if label is None
           else np.asarray(label, np.int32))
  return {'image': image, 'label_map': label,
          'affine': np.eye(4) if affine is None else np.asarray(affine, float),
          'name': path, 'path': path, 'label_path': path + '_label'}


def _one(op, volume, rng=None):
  (out,) = op.apply(volume, rng)
  return out


# --- deterministic ops ------------------------------------------------------


@pytest.fixture(scope='module')
def golden():
  with np.load(GOLDEN) as loaded:
    return dict(loaded)


def test_btcv_head_matches_monai(golden):
  volume = _volume(golden['in/image'], golden['in/label'],
                   golden['in/affine'])
  steps = [('orient', volume_ops.orientation('RAS')),
           ('spacing', volume_ops.spacing(1.5, 1.5, 2.0)),
           ('scaled', volume_ops.scale_intensity(-175, 250, 0.0, 1.0,
                                              clip=True)),
           ('fg', volume_ops.crop_foreground())]
  for name, op in steps:
    volume = _one(op, volume)
    np.testing.assert_allclose(volume['image'], golden[f'{name}/image'],
                               atol=1e-5, err_msg=name)
    if f'{name}/label' in golden:
      np.testing.assert_array_equal(volume['label_map'],
                                    golden[f'{name}/label'], err_msg=name)
    if f'{name}/affine' in golden:
      np.testing.assert_allclose(volume['affine'], golden[f'{name}/affine'],
                                 atol=1e-9, err_msg=name)


def test_spacing_of_an_oblique_affine_matches_monai(golden):
  volume = _volume(golden['in/image'], golden['in/label'],
                   golden['oblique/in_affine'])
  out = _one(volume_ops.spacing(1.5, 1.5, 2.0), volume)
  np.testing.assert_allclose(out['image'], golden['oblique/image'],
                             atol=1e-5)
  np.testing.assert_array_equal(out['label_map'], golden['oblique/label'])
  np.testing.assert_allclose(out['affine'], golden['oblique/affine'],
                             atol=1e-9)


def test_nearest_rounds_ties_to_even_as_monai(golden):
  out = _one(volume_ops.spacing(0.5, 1.0, 0.4),
             _volume(golden['ties/label'], golden['ties/label']))
  np.testing.assert_array_equal(out['label_map'], golden['ties/out'])
  np.testing.assert_array_equal(out['label_map'][:5, 0, 0], [0, 0, 1, 2, 2])


def test_spacing_by_hand():
  # A ramp along x with 1 mm voxels: 2 mm keeps voxels 0, 2, 4 (the extent
  # between the first and last centres, 4 mm, is kept); 0.5 mm interpolates.
  ramp = np.arange(5, dtype=np.float32).reshape(5, 1, 1)
  label = (np.arange(5) % 2).reshape(5, 1, 1)
  affine = np.diag([1.0, 1.0, 1.0, 1.0])
  affine[:3, 3] = [7.0, 0.0, 0.0]
  coarse = _one(volume_ops.spacing(2.0, 1.0, 1.0),
                _volume(ramp, label, affine))
  np.testing.assert_allclose(coarse['image'][:, 0, 0, 0], [0, 2, 4])
  np.testing.assert_array_equal(coarse['label_map'][:, 0, 0], [0, 0, 0])
  np.testing.assert_allclose(coarse['affine'][0], [2.0, 0, 0, 7.0])
  fine = _one(volume_ops.spacing(0.5, 1.0, 1.0), _volume(ramp, label, affine))
  np.testing.assert_allclose(fine['image'][:, 0, 0, 0],
                             np.arange(9) / 2, atol=1e-6)
  # Nearest neighbour: 0.5 mm -> voxel 0.5 * i, ties at .5 aside.
  assert fine['label_map'][2, 0, 0] == 1 and fine['label_map'][4, 0, 0] == 0


def test_nearest_of_a_sheared_grid():
  # Not axis-aligned: output voxel (i, j, k) reads input (j, i, k + 0.5),
  # rounded half to even and clamped.
  label = np.arange(4 * 4 * 3).reshape(4, 4, 3)
  to_input = np.eye(4)[[1, 0, 2, 3]]
  to_input[2, 3] = 0.5
  out = volume_ops._nearest(label, to_input, (4, 4, 3))
  k = np.clip(np.rint(np.arange(3) + 0.5), 0, 2).astype(int)  # 0, 2, 2
  np.testing.assert_array_equal(out, label.transpose(1, 0, 2)[:, :, k])


def test_orientation_by_hand():
  # Voxel axis 0 runs towards -x (L): RAS reverses it, and the new voxel 0
  # is the old last one, at x = -3.
  ramp = np.arange(4, dtype=np.float32).reshape(4, 1, 1)
  out = _one(volume_ops.orientation('RAS'),
             _volume(ramp, ramp.astype(int), np.diag([-1.0, 1.0, 1.0, 1.0])))
  np.testing.assert_array_equal(out['image'][:, 0, 0, 0], [3, 2, 1, 0])
  np.testing.assert_array_equal(out['label_map'][:, 0, 0], [3, 2, 1, 0])
  np.testing.assert_allclose(out['affine'][0], [1.0, 0, 0, -3.0])


def test_scale_intensity_is_the_formula():
  values = np.linspace(-300, 400, 24, dtype=np.float32).reshape(2, 3, 4)
  for clip in (False, True):
    out = _one(volume_ops.scale_intensity(-175, 250, -1.0, 2.0, clip=clip),
               _volume(values))['image'][..., 0]
    expected = (values - -175) / (250 - -175) * 3.0 - 1.0
    if clip:
      expected = np.clip(expected, -1.0, 2.0)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6)
  assert out.min() == -1.0 and out.max() == 2.0


def test_pad_and_center_crop_place_the_volume_as_monai():
  ids = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
  padded = _one(volume_ops.spatial_pad(8), _volume(ids + 1))
  assert padded['image'].shape == (8, 8, 8, 1)
  # (8 - 5) // 2 = 1 before on axis 0, 1 on axis 1, 0 on axis 2.
  np.testing.assert_array_equal(padded['image'][1:6, 1:7, 0:7, 0], ids + 1)
  assert padded['image'].sum() == (ids + 1).sum()
  cropped = _one(volume_ops.center_crop(3), _volume(ids))
  # shape // 2 - 3 // 2 = (1, 2, 2).
  np.testing.assert_array_equal(cropped['image'][..., 0], ids[1:4, 2:5, 2:5])


# --- random ops -------------------------------------------------------------


def _id_volume(shape=(20, 18, 16)):
  """Image = voxel id, so a crop tells where it came from."""
  ids = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
  label = np.zeros(shape, np.int32)
  label[1:4, 2:6, 12:15] = 2  # foreground near a corner: centres move
  return _volume(ids + 1, label)


def test_crops_lie_inside_and_are_what_they_say():
  volume = _id_volume()
  spatial = volume['image'].shape[:3]
  rng = np.random.default_rng(0)
  for op in (volume_ops.rand_crop_pos_neg((8, 6, 10), pos=1, neg=1, samples=3),
             volume_ops.rand_crop((8, 6, 10), samples=3)):
    for _ in range(40):
      crops = op.apply(volume, rng)
      assert len(crops) == 3
      for crop in crops:
        assert crop['image'].shape == (8, 6, 10, 1)
        start = np.unravel_index(int(crop['image'][0, 0, 0, 0]) - 1, spatial)
        assert all(0 <= b <= n - s for b, n, s in
                   zip(start, spatial, (8, 6, 10)))
        box = tuple(slice(b, b + s) for b, s in zip(start, (8, 6, 10)))
        np.testing.assert_array_equal(crop['image'], volume['image'][box])
        np.testing.assert_array_equal(crop['label_map'],
                                      volume['label_map'][box])


def test_crop_start_moves_centres_inside():
  assert volume_ops.crop_start((0, 5, 19), (4, 5, 6), (20, 20, 20)) == [0, 3, 14]
  assert volume_ops.crop_start((10, 2, 3), (5, 5, 5), (20, 20, 20)) == [8, 0, 1]


def test_positive_sampling_rate():
  volume = _id_volume()
  label = volume['label_map']
  rng = np.random.default_rng(1)
  centres = volume_ops.pos_neg_centres(volume, 2000, 0.5, 0.0, rng)
  positive = np.mean([label[c] > 0 for c in centres])
  assert 0.45 < positive < 0.55
  always = volume_ops.pos_neg_centres(volume, 200, 1.0, 0.0, rng)
  assert all(label[c] > 0 for c in always)
  # Background centres need an image above the threshold.
  never = volume_ops.pos_neg_centres(volume, 200, 0.0, 100.0, rng)
  assert all(label[c] == 0 and volume['image'][c][0] > 100 for c in never)
  # No foreground at all: every centre is background.
  empty = _volume(volume['image'])
  assert len(volume_ops.pos_neg_centres(empty, 5, 1.0, 0.0, rng)) == 5


def test_flip_and_rot90_move_image_and_label_together():
  rng = np.random.default_rng(2)
  label = rng.integers(0, 5, (6, 6, 4))
  volume = _volume(label.astype(np.float32), label)
  for axis in range(3):
    out = _one(volume_ops.rand_flip(axis, 1.0), volume, rng)
    np.testing.assert_array_equal(out['label_map'], np.flip(label, axis))
    np.testing.assert_array_equal(out['image'][..., 0], out['label_map'])
  seen = set()
  for _ in range(30):
    out = _one(volume_ops.rand_rot90(1.0, 3), volume, rng)
    k = next(k for k in (1, 2, 3)
             if np.array_equal(out['label_map'], np.rot90(label, k, (0, 1))))
    seen.add(k)
    np.testing.assert_array_equal(out['image'][..., 0], out['label_map'])
  assert seen == {1, 2, 3}
  assert _one(volume_ops.rand_flip(0, 0.0), volume, rng) is volume


def test_shift_intensity_shifts_the_whole_image():
  volume = _volume(np.zeros((3, 3, 3)))
  rng = np.random.default_rng(3)
  shifts = [np.unique(_one(volume_ops.rand_shift_intensity(0.1, 1.0), volume,
                           rng)['image']) for _ in range(50)]
  assert all(s.size == 1 and -0.1 <= s[0] <= 0.1 for s in shifts)
  assert len({float(s[0]) for s in shifts}) == 50


# --- train stream -----------------------------------------------------------


def _batches(config, start_step, count, seed=0, process_index=0,
             process_count=1, batch_size=4):
  iterator = data.train_iterator(config, batch_size, seed=seed,
                                 start_step=start_step,
                                 process_index=process_index,
                                 process_count=process_count)
  batches = [next(iterator) for _ in range(count)]
  iterator.close()
  return batches


def _same(first, second):
  return all(np.array_equal(first[k], second[k]) for k in first)


def test_train_batches_resume_exactly_and_are_deterministic():
  config = dict(SYNTHETIC, train_split='train[:5]')
  # 2 volumes per batch from a share of 5: epochs end mid-batch.
  run = _batches(config, 0, 6)
  assert run[0]['image'].shape == (4, 24, 24, 24, 1)
  assert run[0]['label_map'].shape == (4, 24, 24, 24)
  assert run[0]['image'].dtype == np.float32
  assert run[0]['label_map'].dtype == np.int32
  resumed = _batches(config, 3, 3)
  assert all(_same(a, b) for a, b in zip(run[3:], resumed))
  # Prefetching in a thread or not, the same batches.
  unthreaded = _batches(dict(config, prefetch=0), 3, 3)
  assert all(_same(a, b) for a, b in zip(run[3:], unthreaded))
  assert _same(run[0], _batches(config, 0, 1)[0])
  assert not _same(run[0], _batches(config, 0, 1, seed=1)[0])
  assert not _same(run[0], run[1])
  # Two processes: different volumes, each its own stream.
  first = _batches(config, 0, 1, process_index=0, process_count=2,
                   batch_size=4)[0]
  second = _batches(config, 0, 1, process_index=1, process_count=2,
                    batch_size=4)[0]
  assert first['image'].shape[0] == 2 and not _same(first, second)


def test_epochs_visit_every_volume_once():
  config = dict(SYNTHETIC, train_split='train[:3]',
                pp_train='rand_crop(8)')
  iterator = volumes.TrainBatches(data.resolve_config(config), 1, 0, 0,
                                  0, 1)
  seen = [iterator._order(epoch) for epoch in range(3)]
  assert all(sorted(order) == [0, 1, 2] for order in seen)
  assert len({tuple(order) for order in seen}) > 1


def test_train_batch_must_hold_whole_volumes_of_crops():
  with pytest.raises(ValueError, match='multiple of the 2 crops'):
    _batches(SYNTHETIC, 0, 1, batch_size=3)
  with pytest.raises(ValueError, match='fixed-size crop'):
    _batches(dict(SYNTHETIC, pp_train='scale_intensity(0, 1)'), 0, 1)


# --- synthetic dataset ------------------------------------------------------


def test_synthetic_volumes_are_deterministic_and_consistent():
  image, label, affine = synthetic_volumes.volume('train', 3)
  again = synthetic_volumes.volume('train', 3)
  np.testing.assert_array_equal(image, again[0])
  np.testing.assert_array_equal(label, again[1])
  other = synthetic_volumes.volume('test', 3)[1]
  assert other.shape != label.shape or not np.array_equal(other, label)
  np.testing.assert_array_equal(affine, np.eye(4))
  low, high = synthetic_volumes.SIDE_RANGE
  assert all(low <= side <= high for side in label.shape)
  assert image.shape == label.shape + (1,)
  assert set(np.unique(label)) <= set(range(synthetic_volumes.NUM_CLASSES))
  noise = image[..., 0] - np.asarray(synthetic_volumes.CLASS_MEANS)[label]
  assert abs(noise.std() - synthetic_volumes.NOISE_STD) < 2.0
  assert abs(noise.mean()) < 2.0
  for cls in range(synthetic_volumes.NUM_CLASSES):
    assert (label == cls).any()


def test_synthetic_dataset_info_and_eval():
  info = data.dataset_info(SYNTHETIC)
  assert info == {
      'task': 'volume_segmentation', 'num_classes': 2,
      'class_names': ['background', 'object'],
      'ignore_index': None, 'image_shape': (None, None, None, 1),
      'train_image_shape': (24, 24, 24, 1),
      'num_examples': {'train': 24, 'test': 6}}
  assert data.eval_share_sizes(SYNTHETIC, 'test', 4) == [2, 2, 1, 1]
  examples = list(data.eval_examples(SYNTHETIC, 'test', 1, 4))
  assert [e['name'] for e in examples] == ['test_002', 'test_003']
  image, label, _ = synthetic_volumes.volume('test', 2)
  np.testing.assert_allclose(examples[0]['image'],
                             np.clip((image + 100) / 500, 0, 1), atol=1e-6)
  np.testing.assert_array_equal(examples[0]['label_map'], label)
  with pytest.raises(ValueError, match='eval_examples'):
    next(data.eval_iterator(SYNTHETIC, 'test', 4, 0, 1))
  with pytest.raises(ValueError, match='disagrees'):
    data.num_classes(dict(SYNTHETIC, num_classes=3))


def test_eval_iterator_pads_fixed_size_volumes():
  config = dict(SYNTHETIC, pp_eval='center_crop(16)')
  batches = list(data.eval_iterator(config, 'test[:3]', 2, 0, 1))
  assert len(batches) == 2
  np.testing.assert_array_equal(batches[1]['mask'], [1, 0])
  assert batches[1]['image'].shape == (2, 16, 16, 16, 1)
  assert not batches[1]['image'][1].any()
  image, label, _ = synthetic_volumes.volume('test', 2)
  start = [n // 2 - 8 for n in label.shape]
  box = tuple(slice(b, b + 16) for b in start)
  np.testing.assert_array_equal(batches[1]['label_map'][0], label[box])
  np.testing.assert_array_equal(batches[1]['image'][0], image[box])
  # A process without a share still yields its padded batches.
  empty = list(data.eval_iterator(config, 'test[:1]', 2, 1, 2))
  assert len(empty) == 1 and empty[0]['mask'].tolist() == [0]


def test_label_counts_count_voxels():
  counts = data.label_counts(SYNTHETIC, 'test[:2]')
  labels = [synthetic_volumes.volume('test', i)[1] for i in range(2)]
  expected = sum(np.bincount(l.ravel(), minlength=2) for l in labels)
  np.testing.assert_array_equal(counts, expected)


# --- specs ------------------------------------------------------------------


def test_spec_errors():
  with pytest.raises(ValueError, match="valid ops: .*'rand_crop_pos_neg'"):
    volume_ops.parse('crop_foregrond()')
  with pytest.raises(ValueError, match='deterministic ops only'):
    data.dataset_info(dict(SYNTHETIC, pp_eval='rand_crop(8)'))
  with pytest.raises(ValueError, match='equal sides'):
    volume_ops.parse('rand_crop((8, 8, 4))|rand_rot90(0.5, 3, (0, 2))').shape()
  with pytest.raises(ValueError, match='pos and neg'):
    volume_ops.parse('rand_crop_pos_neg(8, pos=0, neg=0)')
  with pytest.raises(ValueError, match='axis must be 0, 1 or 2'):
    volume_ops.parse('rand_flip(3)')
  spec = volume_ops.parse('orientation()|spacing(2.0)|rand_crop_pos_neg('
                       '(8, 6, 6), samples=3)|rand_rot90(0.5, 1, (1, 2))|'
                       'rand_crop(4, samples=2)')
  assert len(spec.head) == 2 and spec.crops_per_volume == 6
  assert spec.shape() == (4, 4, 4)


# --- NIfTI folders ----------------------------------------------------------


def _write(path, array, affine=None):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  nibabel.save(nibabel.Nifti1Image(array, np.eye(4) if affine is None
                                   else affine), path)


def _folder(root, shapes=((10, 9, 8),) * 4, labels=True):
  """A BTCV-style folder: volume i has image value 10 * i + 1 inside, and
  label i % 3 + 1 in one corner block."""
  entries = []
  for i, shape in enumerate(shapes):
    image = np.full(shape, 10.0 * i + 1, np.float32)
    label = np.zeros(shape, np.uint8)
    label[:3, :3, :3] = i % 3 + 1
    _write(os.path.join(root, 'imagesTr', f'img{i}.nii.gz'), image)
    _write(os.path.join(root, 'labelsTr', f'img{i}.nii.gz'), label)
    entries.append({'image': f'./imagesTr/img{i}.nii.gz',
                    'label': f'./labelsTr/img{i}.nii.gz'})
  description = {'training': entries[:-1], 'validation': entries[-1:],
                 'test': ['./imagesTs/x.nii.gz']}
  if labels:
    description['labels'] = {'0': 'background', '1': 'spleen', '2': 'liver',
                             '3': 'kidney'}
  with open(os.path.join(root, 'dataset.json'), 'w') as f:
    json.dump(description, f)
  return {'name': 'nifti_folder', 'folder': str(root),
          'train_split': 'training', 'eval_split': 'validation',
          'pp_train': 'rand_crop_pos_neg(4, samples=2)', 'pp_eval': ''}


def test_dataset_json_pairs_images_and_labels(tmp_path):
  config = _folder(tmp_path)
  info = data.dataset_info(config)
  assert info['num_classes'] == 4
  assert info['class_names'] == ['background', 'spleen', 'liver', 'kidney']
  assert info['num_examples'] == {'train': 3, 'test': 1}
  assert info['train_image_shape'] == (4, 4, 4, 1)
  found = volumes.dataset(data.resolve_config(config))
  for split, indices in (('training', [0, 1, 2]), ('validation', [3]),
                         ('training[:2]', [0, 1]), ('training[-1:]', [2]),
                         ('training[34%:]', [1, 2]),
                         ('training[2:]+validation', [2, 3])):
    records = volumes.split_records(found, split)
    assert [r.name for r in records] == [f'img{i}' for i in indices], split
    for record, i in zip(records, indices):
      volume = record.load()
      assert volume['image'].shape == (10, 9, 8, 1)
      assert volume['image'].max() == 10 * i + 1
      assert volume['label_map'].max() == i % 3 + 1
  with pytest.raises(ValueError, match="'training', 'validation'"):
    volumes.split_records(found, 'train')
  with pytest.raises(ValueError, match='no labels'):
    volumes.split_records(found, 'test')
  examples = list(data.eval_examples(config, 'training', 0, 1))
  assert [e['name'] for e in examples] == ['img0', 'img1', 'img2']
  batch = _batches(config, 0, 1, batch_size=2)[0]
  assert batch['image'].shape == (2, 4, 4, 4, 1)


def test_the_description_may_be_the_one_dataset_json(tmp_path):
  config = _folder(tmp_path)
  os.rename(tmp_path / 'dataset.json', tmp_path / 'dataset_0.json')
  assert data.num_classes(config) == 4  # MONAI's BTCV tutorial's name
  with open(tmp_path / 'dataset_1.json', 'w') as f:
    f.write('{}')
  with pytest.raises(ValueError, match=r"exactly one dataset\*.json; found "
                     r"\['dataset_0.json', 'dataset_1.json'\]"):
    data.num_classes(config)


def test_num_classes_from_the_config_when_labels_are_absent(tmp_path):
  config = _folder(tmp_path, labels=False)
  with pytest.raises(ValueError, match='set data_config.num_classes'):
    data.num_classes(config)
  assert data.num_classes(dict(config, num_classes=5)) == 5
  labelled = _folder(tmp_path / 'b')
  with pytest.raises(ValueError, match='disagrees with the 4 classes'):
    data.num_classes(dict(labelled, num_classes=3))


def test_multichannel_images_keep_their_channels(tmp_path):
  config = _folder(tmp_path)
  image = np.random.default_rng(0).normal(size=(10, 9, 8, 2))
  _write(os.path.join(tmp_path, 'imagesTr', 'img0.nii.gz'),
         image.astype(np.float32))
  assert data.dataset_info(config)['train_image_shape'] == (4, 4, 4, 2)
  (first,) = list(data.eval_examples(config, 'training[:1]', 0, 1))
  np.testing.assert_allclose(first['image'], image, rtol=1e-6)


def _expect_error(config, path, match, split='training'):
  with pytest.raises(data.DenseLabelError, match=match) as caught:
    list(data.eval_examples(config, split, 0, 1))
  assert caught.value.path == str(path)
  assert str(path) in str(caught.value)


def test_bad_files_name_the_file(tmp_path):
  config = _folder(tmp_path)
  label_path = tmp_path / 'labelsTr' / 'img1.nii.gz'
  _write(str(label_path), np.zeros((10, 9, 7), np.uint8))
  _expect_error(config, label_path, r'label shape \(10, 9, 7\) differs')
  bad = np.zeros((10, 9, 8), np.uint8)
  bad[5, 5, 5] = 4
  _write(str(label_path), bad)
  _expect_error(config, label_path, r'label value 4 is outside \[0, '
                r'num_classes=4\)')
  _write(str(label_path), bad.astype(np.float32) / 3)
  _expect_error(config, label_path, 'whole numbers')
  _write(str(label_path), np.zeros((10, 9, 8), np.uint8))
  image_path = tmp_path / 'imagesTr' / 'img2.nii.gz'
  with open(image_path, 'rb') as f:
    raw = gzip.decompress(f.read())
  with gzip.open(image_path, 'wb') as f:
    f.write(raw[:400])  # header, then the data cut short
  _expect_error(config, image_path, 'cannot read it as NIfTI')
  with open(image_path, 'wb') as f:
    f.write(b'not a nifti file')
  _expect_error(config, image_path, 'cannot read it as NIfTI')
  os.remove(image_path)
  _expect_error(config, image_path, 'no such NIfTI file')


def test_a_volume_smaller_than_the_crop_names_its_file(tmp_path):
  config = _folder(tmp_path, shapes=((10, 9, 8), (10, 3, 8), (10, 9, 8),
                                     (10, 9, 8)))
  config = dict(config, pp_train='rand_crop_pos_neg(4, samples=2)',
                train_split='training[1:2]')
  with pytest.raises(data.DenseLabelError,
                     match=r'shape \(10, 3, 8\).*smaller than the crop') as e:
    _batches(config, 0, 1, batch_size=2)
  assert e.value.path == str(tmp_path / 'imagesTr' / 'img1.nii.gz')
  padded = dict(config, pp_train='spatial_pad(4)|rand_crop_pos_neg(4, '
                'samples=2)')
  assert _batches(padded, 0, 1, batch_size=2)[0]['image'].shape[1:4] == (
      4, 4, 4)
