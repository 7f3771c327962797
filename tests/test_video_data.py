"""Video data (vit_jax/data/video.py, video_ops.py, moving_digits.py):
moving_digits' direction property, sampling and view geometry on hand-made
clips, augmentation shared by a clip's frames, mixup / CutMix of clips,
determinism and exact resume, process shares, the sources (a video folder
of tiny PyAV files and PIL frame folders, DMVR TFRecords, a tiny TFDS
video dataset built here), and every error naming the bad input."""

import io
import os

import av
import numpy as np
from PIL import Image
import pytest

from vit_jax import data
from vit_jax.data import moving_digits
from vit_jax.data import video
from vit_jax.data import video_ops

DIGITS = {
    'name': 'moving_digits', 'num_frames': 8, 'prefetch': 0,
    'pp_train': 'random_crop((16, 24))|value_range(-1, 1)|onehot(20)',
    'pp_eval': 'view_crop(16)|value_range(-1, 1)|onehot(20)',
}


def _config(**overrides):
  return data.resolve_config({**DIGITS, **overrides})


def _apply(spec, clip, seed=None, view=0):
  rng = None if seed is None else np.random.default_rng(seed)
  return video_ops.apply(video_ops.parse(spec), clip, rng, view)


# --- moving_digits ----------------------------------------------------------


def test_moving_digits_moves_with_wrap_around_and_hides_direction():
  arrays = moving_digits.split_arrays('train')
  videos, labels = arrays['video'], arrays['label']
  velocity, start = arrays['velocity'], arrays['start']
  assert videos.shape == (4000, 16, 16, 32, 1)
  # Every frame is the first one rolled by velocity x t (wrap-around).
  for i in range(0, 4000, 97):
    for t in (1, 7, 15):
      np.testing.assert_array_equal(
          videos[i, t], np.roll(videos[i, 0], velocity[i] * t, axis=1))
  rightward = labels % 2 == 1
  np.testing.assert_array_equal(rightward, velocity > 0)
  assert rightward.sum() == 2000
  assert moving_digits.CLASS_NAMES[labels[0]].split('_')[1] == (
      'right' if velocity[0] > 0 else 'left')
  # A video played backwards is a video of the other direction, started
  # where this one ends: the set of frames carries no direction.
  i = int(np.flatnonzero(~rightward)[0])
  backwards = videos[i, ::-1]
  end = (start[i] + velocity[i] * 15) % 32
  for t in range(16):
    np.testing.assert_array_equal(
        backwards[t],
        np.roll(videos[i, 0], (end - start[i]) - velocity[i] * t, axis=1))
  # The digit's column in any single frame: the same distribution for both
  # directions (counts per column within sampling noise, every column hit).
  for t in (0, 8, 15):
    column = (start + velocity * t) % 32
    left = np.bincount(column[~rightward], minlength=32)
    right = np.bincount(column[rightward], minlength=32)
    assert left.min() > 30 and right.min() > 30
    expected = (left + right) / 2
    chi2 = np.sum((left - expected)**2 / expected * 2)
    assert chi2 < 70  # chi-square, 31 dof: p ~ 1e-4 at 70
  # No digit image is in both splits: the test split's sprites are test rows.
  test = moving_digits.split_arrays('test')
  assert test['video'].shape[0] == 500
  train_sprites = {np.roll(v[0], -s, axis=1).tobytes()
                   for v, s in zip(videos, start)}
  test_sprites = {np.roll(v[0], -s, axis=1).tobytes()
                  for v, s in zip(test['video'], test['start'])}
  assert not train_sprites & test_sprites


def test_dataset_info_and_label_counts():
  info = data.dataset_info(_config(eval_clips=2, eval_crops=3))
  assert info == {
      'task': 'video_classification', 'num_classes': 20,
      'class_names': list(moving_digits.CLASS_NAMES),
      'image_shape': (8, 16, 16, 1), 'train_image_shape': (8, 16, 24, 1),
      'num_examples': {'train': 4000, 'test': 500}, 'eval_views': (2, 3)}
  assert info['class_names'][7] == '3_right'
  counts = data.label_counts(_config(), 'test[:100]')
  np.testing.assert_array_equal(counts, np.bincount(
      moving_digits.split_arrays('test')['label'][:100], minlength=20))


# --- ops --------------------------------------------------------------------


def test_augmentation_is_the_same_on_every_frame():
  rng = np.random.default_rng(0)
  base = rng.uniform(0, 200, (1, 20, 30, 3))
  frames = base + np.arange(6)[:, None, None, None] * 7.0  # frame t: +7t
  spec = ('value_range(0, 255, 0, 255)|random_resized_crop(12, (0.2, 0.6))|'
          'flip_lr')
  crops = set()
  for seed in range(6):
    out = _apply(spec, {'image': frames}, seed)['image']
    assert out.shape == (6, 12, 12, 3)
    # One box and one flip for the clip: frames still differ by 7t only.
    np.testing.assert_allclose(out - out[:1],
                               np.broadcast_to(
                                   np.arange(6)[:, None, None, None] * 7.0,
                                   out.shape), atol=1e-3)
    crops.add(out[0].round(2).tobytes())
  assert len(crops) == 6
  box = video_ops.resized_crop_box(20, 30, (0.2, 0.6), (0.75, 4 / 3),
                                   np.random.default_rng(1))
  assert 0.2 * 600 * 0.8 <= box[2] * box[3] <= 0.6 * 600 * 1.2
  # random_crop: one window; flip: frame values mirror together.
  grid = np.broadcast_to(np.arange(30)[None, None, :, None] +
                         50 * np.arange(4)[:, None, None, None],
                         (4, 20, 30, 1)).astype(np.uint8)
  out = _apply('random_crop(10)|flip_lr', {'image': grid}, 3)['image']
  assert np.all(out - out[:1] == (50 * np.arange(4))[:, None, None, None])
  assert len(np.unique(np.diff(out[0, 0, :, 0].astype(int)))) == 1


def test_clip_randaug_is_one_policy_for_every_frame():
  """randaug(n, m, prob) on a clip: the image RandAugment of each frame
  with one seed per clip, so equal frames stay equal."""
  from vit_jax.data import randaugment  # pylint: disable=g-import-not-at-top
  frame = np.random.default_rng(0).integers(0, 256, (16, 20, 3), np.uint8)
  clip = np.stack([frame] * 4)
  outs = set()
  for seed in range(6):
    out = _apply('randaug(2, 15, 1.0)', {'image': clip}, seed)['image']
    assert out.dtype == np.uint8 and out.shape == clip.shape
    assert all(np.array_equal(out[0], f) for f in out[1:])
    clip_seed = np.random.default_rng(seed).integers(0, 2**62, size=2,
                                                     dtype=np.int64)
    np.testing.assert_array_equal(
        out[0], randaugment.randaugment(randaugment.tf.constant(frame),
                                        clip_seed, 2, 15, 1.0).numpy())
    outs.add(out[0].tobytes())
  assert len(outs) >= 4 and frame.tobytes() not in outs
  # prob 0: no op applied.
  np.testing.assert_array_equal(
      _apply('randaug(4, 7, 0.0)', {'image': clip}, 0)['image'], clip)


def test_clip_random_erase_is_one_box_through_time():
  clip = np.zeros((5, 20, 30, 3), np.float32)
  erased = 0
  for seed in range(10):
    out = _apply('random_erase(1.0)', {'image': clip}, seed)['image']
    mask = out != 0
    assert all(np.array_equal(mask[0], m) for m in mask[1:])
    area = mask[0, ..., 0].mean()
    assert 0.02 * 0.9 <= area <= 1 / 3 * 1.1, area
    rows, cols = np.nonzero(mask[0, ..., 0])
    assert mask[0, rows.min():rows.max() + 1,
                cols.min():cols.max() + 1].all()  # a rectangle
    assert not np.array_equal(out[0][mask[0]], out[1][mask[1]])
    erased += 1
  assert erased == 10
  assert not _apply('random_erase(0.0)', {'image': clip}, 0)['image'].any()
  with pytest.raises(ValueError, match='needs float clips'):
    _apply('random_erase', {'image': clip.astype(np.uint8)}, 0)
  with pytest.raises(ValueError, match='uint8 clips'):
    _apply('randaug', {'image': clip}, 0)
  with pytest.raises(ValueError, match=r'magnitude must lie in \[0, 30\]'):
    video_ops.parse('randaug(2, 40)')
  with pytest.raises(ValueError, match=r'prob must lie in \[0, 1\]'):
    video_ops.parse('random_erase(1.5)')


def test_scale_jitter_draws_one_short_side_per_clip():
  """random_resize_small(8, 12): the short side uniform over 8..12, the
  same on every frame, the aspect ratio kept."""
  frames = np.random.default_rng(0).uniform(0, 255, (3, 20, 40, 1))
  sizes = set()
  for seed in range(40):
    out = _apply('random_resize_small(8, 12)', {'image': frames},
                 seed)['image']
    assert out.shape[0] == 3 and out.shape[2] == 2 * out.shape[1]
    sizes.add(out.shape[1])
  assert sizes == {8, 9, 10, 11, 12}
  assert video_ops.parse('random_resize_small(8, 12)|random_crop(8)').shape(
      (3, 20, 40, 1)) == (3, 8, 8, 1)
  with pytest.raises(ValueError, match='min_size <= max_size'):
    video_ops.random_resize_small(12, 8)


def test_shuffle_frames_keeps_the_set_of_frames():
  clip = moving_digits.split_arrays('test')['video'][3]
  shuffled = _apply('shuffle_frames', {'image': clip}, 5)['image']
  assert not np.array_equal(shuffled, clip)
  assert sorted(f.tobytes() for f in shuffled) == sorted(
      f.tobytes() for f in clip)
  assert not np.array_equal(
      shuffled, _apply('shuffle_frames', {'image': clip}, 6)['image'])
  # In evaluation: reproducible (allowed in pp_eval), and each clip its
  # own permutation, not one shared by all clips.
  fixed = _apply('shuffle_frames', {'image': clip})['image']
  np.testing.assert_array_equal(
      fixed, _apply('shuffle_frames', {'image': clip})['image'])

  def order(original, shuffled):
    return [int(np.flatnonzero([np.array_equal(f, g) for g in original])[0])
            for f in shuffled]

  assert sorted(order(clip, fixed)) == list(range(16))
  assert order(clip, fixed) != list(range(16))
  other = moving_digits.split_arrays('test')['video'][4]
  assert order(other, _apply('shuffle_frames', {'image': other})['image']) \
      != order(clip, fixed)
  assert not np.array_equal(
      fixed, _apply('shuffle_frames(seed=1)', {'image': clip})['image'])
  views = video.eval_views(clip, _config(
      num_frames=16, pp_eval='shuffle_frames|view_crop(16)'))
  np.testing.assert_array_equal(views[0], fixed[:, :, 8:24])


def test_resize_value_ops_and_onehot():
  frames = np.full((2, 10, 20, 3), 51, np.uint8)
  out = _apply("resize_small(5)|value_range(0, 1)|normalize('kinetics')|"
               'onehot(4)', {'image': frames, 'label': 2})
  assert out['image'].shape == (2, 5, 10, 3)
  np.testing.assert_allclose(out['image'], (0.2 - 0.45) / 0.225, atol=1e-5)
  np.testing.assert_array_equal(out['labels'], [0, 0, 1, 0])
  assert video_ops.short_side_size(30, 20, 10) == (15, 10)


def test_views_geometry_on_a_hand_made_clip():
  # Frame t, pixel (y, x): value x + 40 * (t % 5); channel 1 holds t.
  n, height, width = 20, 20, 40
  frames = np.zeros((n, height, width, 2), np.uint8)
  frames[..., 0] = np.arange(width)[None, None, :]
  frames[..., 1] = np.arange(n)[:, None, None]
  config = _config(num_frames=4, frame_stride=2, eval_clips=3,
                   eval_crops=3, pp_eval='resize_small(20)|view_crop(20)')
  views = video.eval_views(frames, config)
  assert views.shape == (9, 4, 20, 20, 2) and views.dtype == np.float32
  # Clips start at 0, 6, 12 (the last start is 20 - 4 * 2 = 12).
  assert video.eval_starts(20, config) == [0, 6, 12]
  for k, first in enumerate((0, 6, 12)):
    for j, left in enumerate((0, 10, 20)):
      view = views[k * 3 + j]
      np.testing.assert_array_equal(view[:, 0, 0, 1],
                                    first + 2 * np.arange(4))
      np.testing.assert_array_equal(view[0, 0, :, 0], left + np.arange(20))
  # One clip: the centre start; one crop: the centre; a tall frame's three
  # crops run down its rows.
  one = video.eval_views(frames, _config(num_frames=4, frame_stride=2,
                                         pp_eval='view_crop(20)'))
  assert one.shape == (1, 4, 20, 20, 2)
  assert one[0, 0, 0, 0, 1] == 6 and one[0, 0, 0, 0, 0] == 10
  tall = np.transpose(frames, (0, 2, 1, 3))
  views = video.eval_views(tall, _config(num_frames=4, eval_crops=3,
                                         pp_eval='view_crop(20)'))
  assert [int(v[0, 0, 0, 0]) for v in views] == [0, 10, 20]


def test_mixup_and_cutmix_mix_whole_clips():
  rng = np.random.default_rng(0)
  images = rng.normal(size=(4, 3, 8, 10, 1)).astype(np.float32)
  labels = np.eye(4, dtype=np.float32)
  batch = {'image': images, 'labels': labels}
  mixed = video.mix(batch, np.random.default_rng(1), 0.4, 0.0)
  for row in range(4):
    ratio = mixed['labels'][row, row]
    assert mixed['labels'][row, (row - 1) % 4] == pytest.approx(1 - ratio,
                                                              abs=1e-6)
    np.testing.assert_allclose(
        mixed['image'][row],
        ratio * images[row] + (1 - ratio) * images[(row - 1) % 4], atol=1e-6)
  ratios = [mixed['labels'][r, r] for r in range(4)]
  assert len(set(np.round(ratios, 6))) == 4  # one lambda per pair
  cut = video.mix(batch, np.random.default_rng(2), 0.0, 1.0)
  for row in range(4):
    pasted = cut['image'][row] != images[row]  # [T, H, W, C]
    assert np.array_equal(pasted, np.broadcast_to(pasted[:1], pasted.shape))
    np.testing.assert_array_equal(
        cut['image'][row][pasted], images[(row - 1) % 4][pasted])
    assert cut['labels'][row, (row - 1) % 4] == pytest.approx(
        pasted[0].mean(), abs=1e-5)
  # Through the iterator: rows stay distributions.
  config = _config(mixup_alpha=0.5, cutmix_alpha=1.0)
  got = next(data.train_iterator(config, 8, seed=0, process_index=0,
                                 process_count=1))
  np.testing.assert_allclose(got['labels'].sum(-1), 1.0, atol=1e-6)
  assert (got['labels'] > 0).sum() > 8


# --- batches ----------------------------------------------------------------


def test_train_batches_are_deterministic_and_resume_exactly():
  config = _config(pp_train='random_resized_crop(12)|shuffle_frames|'
                   'value_range(-1, 1)|onehot(20)', mixup_alpha=0.3)

  def batches(start, count, prefetch=0):
    it = data.train_iterator({**config, 'prefetch': prefetch}, 6, seed=3,
                             start_step=start, process_index=1,
                             process_count=2)
    out = [next(it) for _ in range(count)]
    it.close()
    return out

  full = batches(0, 5)
  assert full[0]['image'].shape == (3, 8, 12, 12, 1)
  for got, want in zip(batches(3, 2, prefetch=2), full[3:]):
    for key in want:
      np.testing.assert_array_equal(got[key], want[key])
  assert not np.array_equal(full[0]['image'], full[1]['image'])
  other = next(data.train_iterator(config, 6, seed=4, process_index=1,
                                   process_count=2))
  assert not np.array_equal(other['image'], full[0]['image'])
  # The two processes' shares are disjoint and cover the split.
  shares = [video.TrainBatches(config, 6, 3, 0, p, 2)._records
            for p in range(2)]
  names = [r.name for share in shares for r in share]
  assert len(names) == len(set(names)) == 4000


def test_eval_shares_hold_every_video_once_with_all_its_views():
  config = _config(eval_clips=2, eval_crops=3)
  seen = {}
  for process in range(3):
    batches = list(data.eval_iterator({**config, 'eval_split': 'test'},
                                      'test[:10]', 36,
                                      process_index=process,
                                      process_count=3))
    assert len(batches) == 2  # 4 videos x 6 views in rows of 12, for all
    for batch in batches:
      real = batch['mask'] == 1
      assert np.all(batch['video'][~real] == -1)
      assert np.all(batch['image'][~real] == 0)
      for v, view in zip(batch['video'][real], batch['view'][real]):
        seen.setdefault(int(v), []).append((process, int(view)))
      np.testing.assert_array_equal(
          batch['labels'][real].argmax(-1),
          moving_digits.split_arrays('test')['label'][batch['video'][real]])
  assert sorted(seen) == list(range(10))
  for views in seen.values():
    assert sorted(v for _, v in views) == list(range(6))
    assert len({p for p, _ in views}) == 1
  assert data.eval_share_sizes(config, 'test[:10]', 3) == [4, 3, 3]


# --- sources ----------------------------------------------------------------


def _write_video(path, frames, codec='mpeg4'):
  with av.open(path, 'w') as container:
    stream = container.add_stream(codec, rate=10)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = 'yuv420p'
    for frame in frames:
      for packet in stream.encode(av.VideoFrame.from_ndarray(frame, 'rgb24')):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def _frames(n, seed, height=32, width=32):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 255, (1, height // 8, width // 8, 3), np.uint8)
  frames = np.repeat(np.repeat(base, 8, 1), 8, 2).repeat(n, 0)
  return np.clip(frames.astype(int) + 8 * np.arange(n)[:, None, None, None],
                 0, 255).astype(np.uint8)


def _frame_folder(path, frames):
  os.makedirs(path)
  for t, frame in enumerate(frames):
    Image.fromarray(frame).save(os.path.join(path, f'{t:03d}.png'))


@pytest.fixture(scope='module')
def video_folder(tmp_path_factory):
  root = tmp_path_factory.mktemp('videos')
  for split, count in (('train', 2), ('test', 1)):
    for c, name in enumerate(('archery', 'bowling')):
      os.makedirs(root / split / name)
      for i in range(count):
        _write_video(str(root / split / name / f'v{i}.mp4'),
                     _frames(10, 10 * c + i))
  _frame_folder(str(root / 'test' / 'bowling' / 'frames'), _frames(9, 7))
  return str(root)


def test_video_folder_files_and_frame_folders(video_folder):
  decoded = video.read_video(os.path.join(video_folder, 'train', 'bowling',
                                          'v0.mp4'))
  assert decoded.shape == (10, 32, 32, 3) and decoded.dtype == np.uint8
  assert np.abs(decoded.astype(int) - _frames(10, 10)).mean() < 12  # lossy
  folder = os.path.join(video_folder, 'test', 'bowling', 'frames')
  np.testing.assert_array_equal(video.read_video(folder), _frames(9, 7))
  config = {'name': 'video_folder', 'folder': video_folder, 'num_frames': 4,
            'frame_stride': 2, 'eval_crops': 3, 'prefetch': 0,
            'pp_train': 'resize_small(16)|random_crop(16)|flip_lr|'
                        'value_range(0, 1)|onehot(2)',
            'pp_eval': 'resize_small(16)|view_crop(16)|value_range(0, 1)|'
                       'onehot(2)'}
  info = data.dataset_info(config)
  assert info['class_names'] == ['archery', 'bowling']
  assert info['num_examples'] == {'train': 4, 'test': 3}
  assert info['image_shape'] == (4, 16, 16, 3)
  batch = next(data.train_iterator(config, 4, seed=0, process_index=0,
                                   process_count=1))
  assert batch['image'].shape == (4, 4, 16, 16, 3)
  assert sorted(batch['labels'].argmax(-1)) == [0, 0, 1, 1]
  (evals,) = data.eval_iterator(config, 'test', 12, process_index=0,
                                process_count=1)
  np.testing.assert_array_equal(evals['video'], [0] * 3 + [1] * 3 + [2] * 3
                                + [-1] * 3)
  # The frame folder (video 1: 'frames' sorts before 'v0.mp4'; 9 frames,
  # so the centre start is 0).
  np.testing.assert_allclose(
      evals['image'][4], video.eval_views(
          _frames(9, 7), config)[1], atol=1e-6)
  np.testing.assert_array_equal(data.label_counts(config, 'train'), [2, 2])


def test_short_and_corrupt_videos_name_the_file(video_folder, tmp_path):
  config = {'name': 'video_folder', 'folder': video_folder, 'num_frames': 5,
            'frame_stride': 2, 'prefetch': 0,
            'pp_eval': 'resize_small(16)|view_crop(16)|onehot(2)'}
  with pytest.raises(data.ShortVideoError) as caught:
    list(data.eval_iterator(config, 'test', 4, process_index=0,
                            process_count=1))
  assert isinstance(caught.value, data.CorruptVideoError)
  assert caught.value.path.endswith('frames')
  assert '9 frames, fewer than the 10' in str(caught.value)
  bad = tmp_path / 'train' / 'a'
  os.makedirs(bad)
  (bad / 'broken.mp4').write_bytes(b'not a video at all' * 50)
  _write_video(str(bad / 'good.mp4'), _frames(4, 0))
  os.makedirs(tmp_path / 'train' / 'b')
  with pytest.raises(data.CorruptVideoError) as caught:
    next(data.train_iterator({**config, 'folder': str(tmp_path),
                              'num_frames': 4, 'frame_stride': 1,
                              'pp_train': 'center_crop(16)|onehot(2)'},
                             2, seed=0, process_index=0, process_count=1))
  assert caught.value.path == str(bad / 'broken.mp4')
  assert 'broken.mp4' in str(caught.value)
  with pytest.raises(data.CorruptVideoError, match='no such'):
    video.read_video(str(tmp_path / 'missing.mp4'))
  # Frames are decoded when a clip takes them: a bad frame outside every
  # clip is never read, one inside names its file.
  frames = str(tmp_path / 'frames')
  _frame_folder(frames, _frames(6, 1))
  with open(os.path.join(frames, '005.png'), 'wb') as f:
    f.write(b'\x89PNG truncated')
  loaded = video.load_video(frames)
  assert len(loaded) == 6
  np.testing.assert_array_equal(loaded[1:5], _frames(6, 1)[1:5])
  assert video.eval_views(loaded, {**config, 'num_frames': 4,
                                  'frame_stride': 1}).shape == (
      1, 4, 16, 16, 3)
  with pytest.raises(data.CorruptVideoError) as caught:
    video.eval_views(loaded, {**config, 'num_frames': 4, 'frame_stride': 1,
                              'eval_clips': 2})
  assert caught.value.path.endswith('005.png')


def _png(frame):
  out = io.BytesIO()
  Image.fromarray(frame).save(out, 'PNG')
  return out.getvalue()


def test_dmvr_tfrecords(tmp_path):
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top
  clips = [(_frames(5 + i, i, 16, 24), i % 3) for i in range(5)]
  for shard, part in enumerate((clips[:3], clips[3:])):
    with tf.io.TFRecordWriter(
        str(tmp_path / f'train-{shard:05d}-of-00002.tfrecord')) as writer:
      for frames, label in part:
        example = tf.train.SequenceExample()
        example.context.feature['clip/label/index'].int64_list.value.append(
            label)
        frame_list = example.feature_lists.feature_list['image/encoded']
        for frame in frames:
          frame_list.feature.add().bytes_list.value.append(_png(frame))
        writer.write(example.SerializeToString())
  config = {'name': 'video_tfrecord', 'folder': str(tmp_path),
            'num_classes': 3, 'num_frames': 5, 'eval_split': 'train[1:]',
            'pp_train': 'random_crop(16)|onehot(3)',
            'pp_eval': 'center_crop(16)|onehot(3)', 'prefetch': 0}
  assert data.dataset_info(config)['num_examples'] == {'train': 5, 'test': 4}
  np.testing.assert_array_equal(data.label_counts(config, 'train'),
                                [2, 2, 1])
  (batch,) = data.eval_iterator(config, 'train[1:]', 4, process_index=0,
                                process_count=1)
  for row, (frames, label) in enumerate(clips[1:]):
    start = (len(frames) - 5) // 2
    np.testing.assert_array_equal(batch['image'][row],
                                  frames[start:start + 5, :, 4:20])
    assert batch['labels'][row].argmax() == label
  with pytest.raises(ValueError, match='end its geometry with a fixed-size'):
    data.dataset_info({**config, 'pp_train': 'value_range(0, 1)|onehot(3)'})
  truncated = tmp_path / 'train-00001-of-00002.tfrecord'
  truncated.write_bytes(truncated.read_bytes()[:-10])
  video.record_offsets.cache_clear()
  with pytest.raises(data.CorruptVideoError, match='past the end') as caught:
    data.dataset_info(config)
  assert caught.value.path == str(truncated)
  with pytest.raises(ValueError, match='needs data_config.num_classes'):
    data.dataset_info({**config, 'num_classes': None})


def test_tfds_video_dataset(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from etils import epath  # pylint: disable=g-import-not-at-top

  class VitJaxTestVideos(tfds.core.GeneratorBasedBuilder):
    """ucf101's feature layout in miniature."""
    VERSION = tfds.core.Version('1.0.0')

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
      return epath.Path(str(tmp_path / 'builder.py'))

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=(
          tfds.features.FeaturesDict({
              'video': tfds.features.Video(shape=(None, 8, 8, 3),
                                           encoding_format='png'),
              'label': tfds.features.ClassLabel(names=['a', 'b', 'c'])})))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {'train': self._generate_examples(4),
              'test': self._generate_examples(3)}

    def _generate_examples(self, count):
      for i in range(count):
        yield i, {'video': _frames(3 + i, i, 8, 8), 'label': i % 3}

  builder = VitJaxTestVideos(data_dir=str(tmp_path))
  tfds.disable_progress_bar()
  builder.download_and_prepare()
  config = {'name': builder.name, 'data_dir': str(tmp_path),
            'num_frames': 3, 'prefetch': 0, 'eval_split': 'test',
            'pp_train': 'onehot(3)', 'pp_eval': 'onehot(3)'}
  info = data.dataset_info(config)
  assert info['class_names'] == ['a', 'b', 'c']
  assert info['num_examples'] == {'train': 4, 'test': 3}
  (batch,) = data.eval_iterator(config, 'test', 4, process_index=0,
                                process_count=1)
  # TFDS orders records by key hash; match each row by its label.
  for row in range(3):
    i = int(batch['labels'][row].argmax())
    start = (3 + i - 3) // 2
    np.testing.assert_array_equal(batch['image'][row],
                                  _frames(3 + i, i, 8, 8)[start:start + 3])
  with pytest.raises(ValueError, match="no 'video' and 'label' features"):
    data.dataset_info({'name': 'digits', 'num_frames': 2})


# --- errors -----------------------------------------------------------------


@pytest.mark.parametrize('overrides, message', [
    ({'pp_train': 'random_crop(16)|blur|onehot(20)'},
     r"Unknown preprocessing op 'blur'.*valid ops: \['center_crop'"),
    ({'pp_train': 'flip_lr|random_crop(16)|onehot(20)'},
     "swaps 'left' and 'right'"),
    ({'eval_crops': 3, 'pp_eval': 'center_crop(16)|onehot(20)'},
     'eval_crops=3 needs a view_crop'),
    ({'pp_eval': 'random_crop(16)|onehot(20)'}, 'deterministic ops only'),
    ({'num_frames': None}, 'set data_config.num_frames'),
    ({'pp_train': 'random_crop(16)|onehot(10)'},
     'pp_train gives labels of 10 classes; the dataset has 20'),
    ({'eval_crops': 2}, r'eval_crops must be 1 \(the centre\) or 3'),
    ({'num_frames': 0}, 'num_frames must be an int >= 1'),
    ({'frame_stride': 1.5}, 'frame_stride must be an int >= 1'),
    ({'num_frames': 12, 'frame_stride': 2}, 'moving_digits/train_.*16 frames'
     r'.*24 a clip needs \(num_frames=12 x frame_stride=2\)'),
])
def test_bad_input_raises_one_clear_error(overrides, message):
  config = {**DIGITS, **overrides}
  with pytest.raises(ValueError, match=message):
    data.dataset_info(config)
    next(data.train_iterator(config, 2, seed=0, process_index=0,
                             process_count=1))


def test_image_configs_are_unchanged():
  config = data.resolve_config({})
  assert (config.num_frames, config.frame_stride, config.eval_clips,
          config.eval_crops) == (None, 1, 1, 1)
  assert not video.handles(config)
  with pytest.raises(ValueError, match='are for video'):
    data.resolve_config({'eval_clips': 5})
