"""Video classification end to end: the offline demo reaches the figures
README.md states, an interrupted video run resumes bit for bit, predict
classifies video files and frame folders as the evaluator does, and a
video too short for its clips stops the run with one line naming it.

- configs/moving_digits.py (digit x direction of motion, 20 classes):
  TimeSformer and MViT against the single-frame ViT baseline, and the
  frame-shuffled control (each trained clip model on test clips whose
  frames are permuted), which falls to the single-frame level: the
  direction is in the frames' order only.
"""

import os
import subprocess
import sys

import av
import jax
import numpy as np
from PIL import Image
import pytest

import stand_in
import tiny
from vit_jax import checkpoint
from vit_jax import predict
from vit_jax import train
from vit_jax.data import moving_digits
from vit_jax.evaluate.__main__ import evaluate_workdir
from vit_jax.workdir import read_config as load_workdir_config

# The figures README.md states for the demo (measured 2026-12-07); the
# bars leave room for other package versions.
CLIP_BAR = 0.85  # TimeSformer and MViT
FRAME_CEILING = 0.5  # a single frame cannot know the direction
SHUFFLED_CEILING = 0.56  # the digit alone: 1/2 (plus the test set's noise)


def _last(rows, name):
  return [row[name] for row in rows if name in row][-1]


def _run_demo(arg, workdir):
  """`python -m vit_jax.main --config=configs/moving_digits.py:ARG` as
  README.md runs it: one CPU device, XLA's default optimisation."""
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.main',
       f'--config=configs/moving_digits.py:{arg}', f'--workdir={workdir}'],
      cwd=tiny.ROOT, env=dict(os.environ, XLA_FLAGS=''), capture_output=True,
      text=True, timeout=3600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  rows = train.read_metrics(workdir)
  assert _last(rows, 'val/count') == moving_digits.SIZES['test']
  return rows


def _shuffled_accuracy(workdir):
  """The frame-shuffled control: the trained model as it is, each test
  clip's frames in a random order of its own (`shuffle_frames` in
  pp_eval)."""
  config = load_workdir_config(workdir)
  config.data.pp_eval = 'shuffle_frames|' + config.data.pp_eval
  (_, metrics), = evaluate_workdir(config, workdir, 'latest', ['val']).items()
  return metrics['val/accuracy']


def test_moving_digits_single_frame_baseline(tmp_path):
  """The single-frame ViT (TimeSformer's network on one frame, its steps)
  learns the digit, not the direction: at most 1/2."""
  rows = _run_demo('frame', str(tmp_path / 'frame'))
  accuracy = _last(rows, 'val/accuracy')
  assert 0.4 <= accuracy <= FRAME_CEILING, accuracy
  assert _last(rows, 'val/top5') > 0.95  # the digit is known
  assert _last(rows, 'fewshot/moving_digits/10shot') <= FRAME_CEILING + 0.02


@pytest.mark.parametrize('arg', ['mvit', 'timesformer'])
def test_moving_digits_clip_models_read_the_direction(arg, tmp_path):
  """TimeSformer and MViT read the direction from the frames' order: far
  above the single-frame baseline's ceiling of 1/2; with each test clip's
  frames shuffled they fall back to the digit alone. Their clips'
  representations carry the direction too (few-shot on the 20 classes)."""
  workdir = str(tmp_path / arg)
  rows = _run_demo(arg, workdir)
  accuracy = _last(rows, 'val/accuracy')
  assert accuracy >= CLIP_BAR > FRAME_CEILING, accuracy
  assert _last(rows, 'fewshot/moving_digits/10shot') >= 0.8
  shuffled = _shuffled_accuracy(workdir)
  assert shuffled <= SHUFFLED_CEILING < accuracy, (shuffled, accuracy)


# A tiny TimeSformer on the moving digits, for the resume and predict
# tests: random crops, mixup and CutMix, dropout and stochastic depth on,
# so a resumed stream must redraw all of them.
TINY_RUN = {
    'total_steps': 6, 'batch_size': 8, 'checkpoint.every_steps': 3,
    'log_every_steps': 1, 'schedule.warmup_steps': 1,
    'eval_every_steps': 6, 'eval_batch_size': 40,
    'model.width': 16, 'model.depth': 2, 'model.num_heads': 2,
    'model.mlp_dim': 32, 'model.patch_size': 8,
    'model.stochastic_depth': 0.1, 'model.dropout': 0.1,
    'data.num_frames': 4, 'model.num_frames': 4, 'data.frame_stride': 2,
    'data.mixup_alpha': 0.8, 'data.cutmix_alpha': 1.0,
    'data.pp_train': 'random_crop((12, 28))|resize((16, 32))|'
                     'value_range(-1, 1)|onehot(20)',
}


def _variables(workdir, step):
  return checkpoint.restore_variables(os.path.join(workdir, 'checkpoints'),
                                      step)


def _tiny_config():
  config = tiny.load_config('moving_digits', 'timesformer')
  tiny.override(config, TINY_RUN)
  return config


def test_video_run_resumes_bit_for_bit(tmp_path, monkeypatch):
  """Killed after step 5 of 6, resumed from step 3: the clips' offsets,
  crops and mixing are redrawn exactly; the multi-view evaluation of the
  finished run is the uninterrupted run's."""
  config = _tiny_config()
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(config, straight)
  interrupted = str(tmp_path / 'interrupted')
  tiny.train_killed_at(config, interrupted, 5, monkeypatch)
  assert os.listdir(os.path.join(interrupted, 'checkpoints')) == ['3']
  train.train_and_evaluate(config, interrupted)
  for got, want in zip(jax.tree.leaves(_variables(interrupted, 6)),
                       jax.tree.leaves(_variables(straight, 6)),
                       strict=True):
    np.testing.assert_array_equal(got, want)
  rows = {path: train.read_metrics(path) for path in (straight, interrupted)}
  losses = [[row['train/loss'] for row in r if 'train/loss' in row]
            for r in rows.values()]
  assert len(losses[0]) == 6 and losses[0] == losses[1]
  final = [[row for row in r if 'val/accuracy' in row][-1]
           for r in rows.values()]
  assert final[0] == final[1]
  assert final[0]['val/count'] == moving_digits.SIZES['test']


def _write_mp4(path, frames):
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=10)
    stream.width, stream.height = frames.shape[2], frames.shape[1]
    stream.pix_fmt = 'yuv420p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, 'rgb24')))
    container.mux(stream.encode())


def test_predict_on_frame_folders_and_video_files(tmp_path):
  """A frame folder of a test video gets the probabilities the model gives
  its eval views; an MPEG-4 of the same frames (lossy) is classified too;
  a folder of both is batch mode."""
  config = _tiny_config()
  tiny.override(config, {'data.eval_clips': 2})
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)

  videos = tmp_path / 'videos'
  test = moving_digits.split_arrays('test')
  clip, label = test['video'][7], int(test['label'][7])
  folder = videos / 'frames'
  folder.mkdir(parents=True)
  for t, frame in enumerate(clip):
    Image.fromarray(frame[..., 0]).save(folder / f'{t:02d}.png')
  _write_mp4(str(videos / 'clip.mp4'), np.repeat(clip, 3, axis=-1))

  predictor = predict.from_workdir(workdir)
  assert predictor.video and predictor.class_names[label] == (
      moving_digits.CLASS_NAMES[label])
  (from_folder,) = predict.predict_videos(predictor, [str(folder)], top_k=3)
  # The reference: the model on the two views the evaluator makes of it.
  from vit_jax.data import video  # pylint: disable=g-import-not-at-top
  views = video.eval_views(clip, config.data)
  assert views.shape == (2, 4, 16, 32, 1)
  logits, _ = predictor.model.apply(predictor.variables, views, train=False)
  expected = np.asarray(jax.nn.softmax(logits)).mean(0)
  top = np.argsort(-expected, kind='stable')[:3]
  assert from_folder.class_ids == [int(i) for i in top]
  np.testing.assert_allclose([p for _, p in from_folder.top],
                             expected[top], rtol=1e-5)

  listed, batch_mode = predict.list_videos([str(videos)])
  assert listed == [str(videos / 'clip.mp4'), str(folder)] and batch_mode
  out = predict.run(predictor, [str(videos)], top_k=2,
                    csv_path=str(tmp_path / 'p.csv'))
  assert [p.path for p in out['predictions']] == listed
  with open(tmp_path / 'p.csv') as f:
    assert len(f.read().strip().splitlines()) == 3  # header + 2 videos


def test_a_short_video_stops_the_run_with_one_line_naming_it(tmp_path):
  """`python -m vit_jax.main` on a video folder holding a video shorter
  than num_frames x frame_stride: exit 1, the last line names the file,
  its frame count and the frames needed."""
  folder = stand_in.make_video_folder(str(tmp_path / 'videos'))
  short = os.path.join(folder, 'train', 'class_2', 'short.mp4')
  _write_mp4(short, np.zeros((5, 40, 48, 3), np.uint8))
  workdir = str(tmp_path / 'run')
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.main',
       '--config=configs/moving_digits.py:timesformer',
       f'--workdir={workdir}', '--config.data.name=video_folder',
       f'--config.data.folder={folder}', '--config.data.eval_split=val',
       '--config.data.pp_train=resize((16, 32))|value_range(-1, 1)|'
       'onehot(4)',
       '--config.data.pp_eval=resize((16, 32))|value_range(-1, 1)|'
       'onehot(4)',
       '--config.model.num_classes=4', '--config.model.depth=1',
       '--config.total_steps=40', '--config.batch_size=8',
       '--config.schedule.warmup_steps=1'],
      cwd=tiny.ROOT, capture_output=True, text=True, timeout=1800,
      check=False, env=dict(os.environ, XLA_FLAGS=''))
  assert result.returncode == 1, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('vit_jax.main: ') and short in last, last
  assert '5 frames' in last and '8' in last, last
