"""The dense-prediction tasks end to end: the offline demos reach the
figures README.md states, and an interrupted run resumes bit for bit.

- configs/segformer_mosaics.py (SegFormer on the digit mosaics, about two
  minutes on 2 CPU cores): mIoU against predicting background everywhere,
  and the encoder's few-shot accuracy on the digits;
- a segmentation run killed mid-way resumes to the uninterrupted run's
  parameters and BatchNorm statistics, with augmentation, dropout and
  stochastic depth on;
- a label map that does not fit its image stops the run with one line
  naming the file.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

import stand_in
import tiny
from vit_jax import checkpoint
from vit_jax import train
from vit_jax.data import mosaics
from vit_jax.data import synthetic_volumes
from vit_jax.evaluate import segmentation
from vit_jax.evaluate.__main__ import evaluate_workdir
from vit_jax.workdir import read_config as load_workdir_config

# The figures README.md states for the demo (measured 2026-12-07:
# mIoU 0.604, pixel accuracy 0.939, 10-shot 0.891); the bars leave room for
# other package versions.
MOSAICS_MIOU_BAR = 0.55
MOSAICS_FEWSHOT_BAR = 0.85


# configs/unetr_volumes.py's figures (measured 2026-12-07, see README.md).
VOLUMES_DICE_BAR = 0.85


def _last(rows, name):
  return [row[name] for row in rows if name in row][-1]


def _run_demo(recipe, workdir, *overrides):
  """`python -m vit_jax.main --config=configs/RECIPE.py` as README.md
  runs it: one CPU device, XLA's default optimisation (the tests' 8
  virtual devices and unoptimised compiles would triple its time)."""
  env = dict(os.environ, XLA_FLAGS='')
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.main', f'--config=configs/{recipe}.py',
       f'--workdir={workdir}', *overrides], cwd=tiny.ROOT, env=env,
      capture_output=True, text=True, timeout=3600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  return train.read_metrics(workdir)


def test_segformer_mosaics_demo_beats_the_trivial_predictor(tmp_path,
                                                            data_dir):
  workdir = str(tmp_path / 'demo')
  rows = _run_demo('segformer_mosaics', workdir,
                   f'--config.data.data_dir={data_dir}')
  config = tiny.load_config('segformer_mosaics', 'S')
  miou = _last(rows, 'val/miou')
  # The background-only baseline, from the test split's label maps.
  labels = mosaics.split_arrays('test')['label_map'][..., 0]
  confusion = segmentation.batch_confusion(np.zeros_like(labels), labels,
                                           mosaics.NUM_CLASSES)
  baseline = segmentation.segmentation_metrics(np.asarray(confusion))
  assert baseline['mIoU'] == pytest.approx(0.0797, abs=1e-4)
  assert miou >= MOSAICS_MIOU_BAR > 5 * baseline['mIoU'], miou
  assert _last(rows, 'val/pixel_accuracy') > baseline['pixel_accuracy']
  assert _last(rows, 'fewshot/digits/10shot') >= MOSAICS_FEWSHOT_BAR
  # Every test mosaic counted once: the per-class IoUs are those of the
  # whole split (the digit classes all present).
  assert all(_last(rows, f'val/iou/{c}') > 0.2 for c in range(11))
  with open(os.path.join(workdir, 'summary.json')) as f:
    summary = json.load(f)
  assert summary['family'] == 'segformer' and summary['flops_per_image'] > 0
  assert os.listdir(os.path.join(workdir, 'plots'))
  # `vit_jax.evaluate` on the finished workdir, here on 8 devices without
  # XLA's optimisations: the same numbers up to a pixel's argmax flipped
  # by float rounding.
  again = evaluate_workdir(load_workdir_config(workdir), workdir, 'latest',
                           ['val'])
  (step, metrics), = again.items()
  assert step == config.total_steps
  assert metrics['val/miou'] == pytest.approx(miou, abs=1e-3)


def test_unetr_volumes_demo_beats_thresholding_single_voxels(tmp_path):
  workdir = str(tmp_path / 'volumes')
  rows = _run_demo('unetr_volumes', workdir)
  dice = _last(rows, 'val/dice')
  # Baselines on the same test volumes: background everywhere scores 0;
  # the nearest class mean of each voxel on its own (no neighbourhood):
  voxel = []
  means = np.asarray(synthetic_volumes.CLASS_MEANS)
  for index in range(synthetic_volumes.SPLITS['test']):
    image, label, _ = synthetic_volumes.volume('test', index)
    nearest = np.abs(image[..., 0, None] - means).argmin(-1)
    overlap = np.sum((nearest == 1) & (label == 1))
    voxel.append(2 * overlap / (np.sum(nearest == 1) + np.sum(label == 1)))
  assert np.mean(voxel) == pytest.approx(0.518, abs=1e-3)
  assert dice >= VOLUMES_DICE_BAR > np.mean(voxel) + 0.3, dice
  assert any(name.startswith('volume_segmentation_val_')
             for name in os.listdir(os.path.join(workdir, 'plots')))


def _variables(workdir, step):
  return checkpoint.restore_variables(os.path.join(workdir, 'checkpoints'),
                                      step)


def test_segmentation_run_resumes_bit_for_bit(tmp_path, data_dir,
                                              monkeypatch):
  config = tiny.load_config('segformer_mosaics', 'XS')
  tiny.override(config, {
      'data.data_dir': data_dir, 'total_steps': 8, 'batch_size': 8,
      'checkpoint.every_steps': 4, 'log_every_steps': 1,
      'schedule.warmup_steps': 2, 'model.stochastic_depth': 0.1,
      'evals': {},
      # The joint random ops, so the resumed stream must redraw them.
      'data.pp_train': 'random_resize((40, 40), (0.5, 2.0))|'
                       'random_crop(32, 0.75)|flip_lr|photometric_distortion|'
                       'value_range(-1, 1)|pad(32, value=-1)'})
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(config, straight)

  interrupted = str(tmp_path / 'interrupted')
  tiny.train_killed_at(config, interrupted, 6, monkeypatch)
  assert os.listdir(os.path.join(interrupted, 'checkpoints')) == ['4']
  train.train_and_evaluate(config, interrupted)  # resumes from step 4
  resumed, expected = _variables(interrupted, 8), _variables(straight, 8)
  assert sorted(resumed) == ['batch_stats', 'params']
  for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(expected),
                       strict=True):
    np.testing.assert_array_equal(got, want)
  losses = [row['train/loss'] for row in train.read_metrics(interrupted)
            if 'train/loss' in row]
  assert len(losses) == 8 and losses == [
      row['train/loss'] for row in train.read_metrics(straight)
      if 'train/loss' in row]


def test_a_bad_label_map_stops_the_run_with_one_line_naming_it(tmp_path,
                                                               data_dir):
  """`python -m vit_jax.main` on a segmentation folder whose annotation
  has another size than its image: exit 1, the last line of stderr names
  the file, the traceback is in DIR/error."""
  folder = stand_in.make_segmentation_folder(str(tmp_path / 'folder'))
  bad = os.path.join(folder, 'annotations', 'training', '3.png')
  Image.fromarray(np.zeros((7, 9), np.uint8)).save(bad)
  workdir = str(tmp_path / 'run')
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.main',
       '--config=configs/segformer_mosaics.py:XS', f'--workdir={workdir}',
       '--config.data.name=segmentation_folder',
       f'--config.data.folder={folder}', '--config.data.num_classes=11',
       '--config.data.train_split=training',
       '--config.data.eval_split=validation',
       '--config.data.pp_train=random_crop(32)|value_range(-1, 1)|pad(32)',
       '--config.data.cache=False', f'--config.data.data_dir={data_dir}',
       '--config.total_steps=4', '--config.batch_size=8',
       '--config.schedule.warmup_steps=1'],
      cwd=tiny.ROOT, capture_output=True, text=True, timeout=1800,
      check=False)
  assert result.returncode == 1, result.stderr[-2000:]
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith('vit_jax.main: ') and bad in last, last
  assert 'is 7x9 but its image' in last, last
  with open(os.path.join(workdir, 'error')) as f:
    assert 'DenseLabelError' in f.read()


def test_volume_segmentation_run_resumes_bit_for_bit(tmp_path, monkeypatch):
  """UNETR on the synthetic volumes, killed after step 3 of 4 and resumed
  from step 2: the crops (positions, flips) are redrawn exactly."""
  config = tiny.load_config('unetr_volumes')
  tiny.override(config, {
      'total_steps': 4, 'batch_size': 8, 'checkpoint.every_steps': 2,
      'log_every_steps': 1, 'schedule.warmup_steps': 1, 'evals': {},
      'model.width': 16, 'model.num_heads': 1, 'model.mlp_dim': 16,
      'model.feature_size': 2,
      'data.pp_train': config.data.pp_train.replace('samples=4',
                                                    'samples=1')})
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(config, straight)
  interrupted = str(tmp_path / 'interrupted')
  tiny.train_killed_at(config, interrupted, 3, monkeypatch)
  assert os.listdir(os.path.join(interrupted, 'checkpoints')) == ['2']
  train.train_and_evaluate(config, interrupted)
  for got, want in zip(jax.tree.leaves(_variables(interrupted, 4)),
                       jax.tree.leaves(_variables(straight, 4)), strict=True):
    np.testing.assert_array_equal(got, want)
