"""Evaluation: representations, few-shot evaluator, reconstruction plots,
evaluators in training, the standalone `python -m vit_jax.evaluate`, and
MAE pre-train -> few-shot -> fine-tune on digits."""

import os
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from vit_jax import build, checkpoint, evaluate, models, sharding, train
from vit_jax import config as config_lib
from vit_jax.evaluate import fewshot, fewshot_evaluator, reconstruction
from vit_jax.evaluate import representations
from vit_jax.evaluate.__main__ import evaluate_workdir
from vit_jax.workdir import read_config as load_workdir_config
from vit_jax.models import mae
from vit_jax.models import representation

from tiny import ROOT, tiny_config, tiny_mae_config

VIT = dict(patch_size=2, width=32, depth=2, mlp_dim=64, num_heads=2,
           num_classes=10)
MAE = dict(patch_size=2, width=32, depth=2, mlp_dim=64, num_heads=2,
           decoder_width=16, decoder_depth=1, decoder_num_heads=2,
           num_channels=1)
DIGITS_FEWSHOT = {'digits': {'name': 'digits', 'pp': 'value_range(-1, 1)'}}


def _images(batch=6, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed), (batch, 8, 8, 1))


def _init(model, images, seed=0):
  key = jax.random.PRNGKey(seed)
  return model.init({'params': key, 'mask': key}, images)['params']


# ------------------------------------------------------- representations --


@pytest.mark.parametrize('pool_type', ['cls', 'gap', 'map'])
def test_pre_logits_is_the_classifiers_representation(pool_type):
  model = models.get_model('vit', pool_type=pool_type, **VIT)
  images = _images()
  params = _init(model, images)
  _, aux = model.apply({'params': params}, images, train=False)
  got = representation.representation_fn(model)({'params': params}, images)
  np.testing.assert_array_equal(got, aux['pre_logits'])
  assert got.shape == (6, 32)


def test_intermediate_layers_are_captured_and_pooled():
  model = models.get_model('vit', **VIT)
  images = _images()
  params = _init(model, images)
  _, aux = model.apply({'params': params}, images, train=False)
  # The final LayerNorm's output is aux['encoded']: the capture of a module
  # path and an aux key must agree, both averaged over the tokens.
  by_module = representation.representation_fn(model, 'encoder_norm')
  np.testing.assert_allclose(by_module({'params': params}, images),
                             aux['encoded'].mean(axis=1), rtol=1e-6)
  # The last block's output is what the final LayerNorm normalises.
  block = representation.representation_fn(model, 'encoder/block_1')
  _, state = model.apply({'params': params}, images, train=False,
                         capture_intermediates=True,
                         mutable=['intermediates'])
  block_out, _ = state['intermediates']['encoder']['block_1']['__call__'][0]
  np.testing.assert_allclose(block({'params': params}, images),
                             block_out.mean(axis=1),
                             rtol=1e-6)
  normed = (block_out - block_out.mean(-1, keepdims=True)) / np.sqrt(
      block_out.var(-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(normed, aux['encoded'], atol=1e-4)  # LN init


def test_swin_stage_outputs_are_representations():
  model = models.get_model('swin', patch_size=2, width=16, depths=(2, 2),
                           num_heads=(2, 4), window_size=2, num_classes=10)
  images = _images()
  params = _init(model, images)
  _, aux = model.apply({'params': params}, images, train=False)
  stage = representation.representation_fn(model, 'stage_0')
  np.testing.assert_allclose(stage({'params': params}, images),
                             aux['stage_features'][0].mean(axis=(1, 2)),
                             rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match=r"aux\['stage_features'\] of Swin "
                     r'is a (list|tuple), not an array'):
    representation.representation_fn(model, 'stage_features')(
        {'params': params}, images)


def test_unknown_layer_names_the_valid_ones():
  model = models.get_model('vit', **VIT)
  images = _images()
  params = _init(model, images)
  with pytest.raises(ValueError, match=r"'encoder/block_9'.*valid: \["
                     r"'encoded', 'pre_logits'.*'encoder/block_1'"):
    representation.representation_fn(model, 'encoder/block_9')(
        {'params': params}, images)


def test_mae_representation_is_its_unmasked_encoder():
  """'pre_logits' of an MAE: the class token of its encoder on all patches
  (mask_ratio 0), computed by the MAE module itself."""
  model = models.get_model('mae', mask_ratio=0.0, **MAE)
  images = _images()
  params = _init(model, images)
  latent, mask, _ = model.apply({'params': params}, images,
                                method=model.encode)
  assert float(mask.sum()) == 0
  encoder, select_params = models.classifier_view('mae', model)
  cls = representation.representation_fn(encoder, 'pre_logits',
                                          select_params)
  np.testing.assert_allclose(cls({'params': params}, images), latent[:, 0],
                             atol=1e-5)
  tokens = representation.representation_fn(encoder, 'encoder_norm',
                                             select_params)
  np.testing.assert_allclose(tokens({'params': params}, images),
                             latent.mean(axis=1),
                             atol=1e-5)  # token order does not matter


def test_representations_skip_padding_and_match_on_eight_devices():
  model = models.get_model('vit', **VIT)
  images = np.asarray(_images(40))
  params = _init(model, images)
  expected = representation.representation_fn(model)({'params': params},
                                                      images)
  labels = np.arange(40) % 10
  batches = []
  for start in range(0, 40, 16):  # 16 + 16 + 8 real rows, padded to 16
    rows = slice(start, start + 16)
    count = len(labels[rows])
    batch = {'image': np.zeros((16, 8, 8, 1), np.float32),
             'labels': np.zeros((16, 10), np.float32),
             'mask': np.zeros((16,), np.float32)}
    batch['image'][:count] = images[rows]
    batch['labels'][np.arange(count), labels[rows]] = 1
    batch['mask'][:count] = 1
    batches.append(batch)
  mesh = sharding.make_mesh(-1, 1)
  assert mesh.size == 8
  features, ids = representations.compute_representations(
      representations.make_encoder(representation.representation_fn(model),
                                   mesh), {'params': params}, batches, mesh)
  assert features.shape == (40, 32)
  np.testing.assert_array_equal(ids, labels)
  np.testing.assert_allclose(features, expected, atol=1e-5)


def test_build_does_not_import_the_evaluators():
  """build hands evaluators their functions; the evaluators import build,
  never the other way round (docs/DESIGN.md's import order)."""
  code = ('import sys, vit_jax.build; '
          'found = sorted(m for m in sys.modules '
          'if m.startswith("vit_jax.evaluate")); '
          'assert not found, found; '
          'assert "vit_jax.models.representation" in sys.modules')
  subprocess.run([sys.executable, '-c', code], cwd=ROOT, check=True,
                 timeout=900)


# -------------------------------------------------------- few-shot runs --


def _synthetic_iterator(features_by_split):
  """An eval_iterator over fixed [n, 8, 8, 1] images and labels."""
  def iterator_fn(data_config, split, batch_size, process_index=0,
                  process_count=1):
    del data_config, process_index, process_count
    images, labels = features_by_split[split]
    for start in range(0, len(labels), batch_size):
      count = len(labels[start:start + batch_size])
      batch = {'image': np.zeros((batch_size, 8, 8, 1), np.float32),
               'labels': np.zeros((batch_size, 10), np.float32),
               'mask': np.zeros((batch_size,), np.float32)}
      batch['image'][:count] = images[start:start + count]
      batch['labels'][np.arange(count), labels[start:start + count]] = 1
      batch['mask'][:count] = 1
      yield batch
  return iterator_fn


def test_fewshot_evaluator_equals_the_protocol_on_the_models_features():
  model = models.get_model('vit', **VIT)
  rng = np.random.default_rng(0)
  splits = {'train': (rng.normal(size=(120, 8, 8, 1)).astype(np.float32),
                      np.arange(120) % 10),
            'test': (rng.normal(size=(50, 8, 8, 1)).astype(np.float32),
                     rng.integers(0, 10, 50))}
  params = _init(model, splits['test'][0][:1])
  evaluator = fewshot_evaluator.FewShotEvaluator(
      representation.representation_fn(model), {'toy': {'name': 'unused', 'pp': 'x'},
              'toy2': {'name': 'unused', 'pp': 'x', 'test_split': 'train'}},
      sharding.make_mesh(-1, 1), shots=(1, 5), seeds=(0, 3), l2_reg=0.5,
      l2_reg_candidates=(0.1, 10.0), batch_size=32,
      iterator_fn=_synthetic_iterator(splits), num_classes_fn=lambda c: 10)
  metrics = evaluator.run({'params': params}, step=7)
  assert sorted(metrics) == sorted(
      f'fewshot/{d}/{k}shot{s}' for d in ('toy', 'toy2') for k in (1, 5)
      for s in ('', '_std'))
  features_fn = representation.representation_fn(model)
  x_train = np.asarray(features_fn({'params': params}, splits['train'][0]))
  x_test = np.asarray(features_fn({'params': params}, splits['test'][0]))
  one = fewshot.fewshot_metrics('toy', x_train, splits['train'][1], x_test,
                                splits['test'][1], 10, l2_reg=0.5, shots=[1],
                                seeds=[0, 3])
  five = fewshot.fewshot_metrics('toy', x_train, splits['train'][1], x_test,
                                 splits['test'][1], 10,
                                 l2_reg_candidates=(0.1, 10.0), shots=[5],
                                 seeds=[0, 3])
  for name, value in {**one, **five}.items():
    assert metrics[name] == pytest.approx(value, abs=1e-9), name
  assert metrics['fewshot/toy2/5shot'] != metrics['fewshot/toy/5shot']

  raw_evaluator = fewshot_evaluator.FewShotEvaluator(
      representation.representation_fn(model), {'toy': {'name': 'unused', 'pp': 'x'}},
      sharding.make_mesh(-1, 1), shots=(5,), seeds=(0, 3), l2_reg=0.5,
      protocol='raw', batch_size=32, iterator_fn=_synthetic_iterator(splits),
      num_classes_fn=lambda c: 10)
  raw_metrics = raw_evaluator.run({'params': params})
  raw = fewshot.fewshot_metrics('toy', x_train, splits['train'][1], x_test,
                                splits['test'][1], 10, l2_reg=0.5, shots=[5],
                                seeds=[0, 3], protocol='raw')
  standardized = fewshot.fewshot_metrics(
      'toy', x_train, splits['train'][1], x_test, splits['test'][1], 10,
      l2_reg=0.5, shots=[5], seeds=[0, 3])
  assert raw_metrics == pytest.approx(raw, abs=1e-9)
  assert raw != standardized  # the protocol reached the solve


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(datasets={}), 'at least one dataset'),
    (dict(l2_reg=None), 'Set l2_reg'),
    (dict(l2_reg=None, l2_reg_candidates=(1.0,)), 'include 1'),
    (dict(datasets={'a': {'name': 'digits', 'pp': 'x', 'split': 'test'}}),
     r"unknown fields \['split'\]; valid fields: \['data_dir'"),
    (dict(datasets={'a': {'name': 'digits'}}), "needs 'pp'"),
    (dict(datasets={'a/b': {'name': 'digits', 'pp': 'x'}}), 'without "/"'),
    (dict(shots=(0, 5)), 'positive integers'),
    (dict(protocol='whitened'),
     r"protocol 'whitened'; valid choices: \['standardized', 'raw'\]"),
])
def test_fewshot_evaluator_bad_settings_are_named(kwargs, pattern):
  settings = dict(datasets=DIGITS_FEWSHOT, l2_reg=1.0)
  settings.update(kwargs)
  datasets = settings.pop('datasets')
  with pytest.raises(ValueError, match=pattern):
    fewshot_evaluator.FewShotEvaluator(
        representation.representation_fn(models.get_model('vit', **VIT)),
        datasets, sharding.make_mesh(-1, 1),
        num_classes_fn=lambda c: 10, iterator_fn=lambda *a, **k: iter(()),
        **settings)


def _evaluator_to_check(counts, **settings):
  """A FewShotEvaluator over 4-class datasets whose train split has `counts`
  examples per class ({dataset name: counts}); it must not read images."""
  requests = []

  def label_counts_fn(data_config, split):
    requests.append((data_config['name'], split))
    return np.array(counts[data_config['name']])

  def iterator_fn(*args, **kwargs):
    raise AssertionError('check() must not read images.')

  settings = {'l2_reg': 1.0, **settings}
  evaluator = fewshot_evaluator.FewShotEvaluator(
      representation.representation_fn(models.get_model('vit', **VIT)),
      {'first': {'name': 'a', 'pp': 'x', 'train_split': 'train[:40]'},
       'second': {'name': 'b', 'pp': 'x'}},
      sharding.make_mesh(-1, 1), num_classes_fn=lambda c: 4,
      iterator_fn=iterator_fn, label_counts_fn=label_counts_fn, **settings)
  return evaluator, requests


@pytest.mark.parametrize('settings', [
    dict(shots=(1, 5, 10, 25)),
    dict(shots=(2, 25), l2_reg=None, l2_reg_candidates=(0.1, 10.0)),
])
def test_fewshot_check_passes_with_enough_examples_of_every_class(settings):
  evaluator, requests = _evaluator_to_check(
      {'a': [25, 30, 25, 100], 'b': [25, 25, 25, 25]}, **settings)
  evaluator.check()
  assert requests == [('a', 'train[:40]'), ('b', 'train')]


@pytest.mark.parametrize('counts, settings, pattern', [
    ({'a': [25, 3, 25, 7], 'b': [25] * 4}, dict(shots=(1, 5, 10, 25)),
     r"dataset 'first' \('a', split 'train\[:40\]'\): 25-shot evaluation "
     r'needs 25 examples of every class, but 2 of 4 classes have fewer '
     r'\(class 1: 3, class 3: 7\); the largest k every class can supply is '
     r'3'),
    ({'a': [25] * 4, 'b': [0, 30, 1, 30]}, dict(shots=(1, 5)),
     r"dataset 'second' \('b', split 'train'\): 5-shot .* 2 of 4 classes "
     r'have fewer \(class 0: 0, class 2: 1\); no k works until every class '
     r'has an example'),
    ({'a': [4, 5, 5, 5], 'b': [5] * 4},
     dict(shots=(2, 5), l2_reg=None, l2_reg_candidates=(0.1, 10.0)),
     r"'first' .* \(class 0: 4\); the largest k every class can supply is "
     r'4'),
    ({'a': [25, 30, 25], 'b': [25] * 4}, dict(shots=(5,)),
     r"label counts of split 'train\[:40\]' have shape \(3,\), but 'a' has "
     r'4 classes'),
])
def test_fewshot_check_names_classes_short_of_examples(counts, settings,
                                                       pattern):
  evaluator, _ = _evaluator_to_check(counts, **settings)
  with pytest.raises(ValueError, match=pattern):
    evaluator.check()


def test_fewshot_check_lists_the_first_short_classes():
  evaluator = fewshot_evaluator.FewShotEvaluator(
      representation.representation_fn(models.get_model('vit', **VIT)),
      {'d': {'name': 'a', 'pp': 'x'}},
      sharding.make_mesh(-1, 1), l2_reg=1.0, shots=(10,),
      num_classes_fn=lambda c: 12, iterator_fn=lambda *a, **k: iter(()),
      label_counts_fn=lambda config, split: np.arange(12))
  with pytest.raises(ValueError, match=r'10 of 12 classes have fewer \(class '
                     r'0: 0, class 1: 1, class 2: 2, class 3: 3, class 4: 4, '
                     r'and 5 more\); no k works'):
    evaluator.check()


@pytest.mark.parametrize('evals, pattern', [
    ({'x': {'kind': 'linear'}},
     r"evals.x.kind 'linear'.*'classification', 'fewshot', 'reconstruction'"),
    ({'x': {'kind': 'fewshot', 'every': 5}},
     r"unknown fields \['every'\]; valid fields: .*'every_steps'"),
    ({'x': {'kind': 'fewshot', 'l2_reg': 1.0}}, 'needs datasets'),
    ({'x': {'kind': 'fewshot', 'l2_reg': 1.0, 'datasets': DIGITS_FEWSHOT,
            'protocol': 'none'}},
     r"protocol 'none'; valid choices: \['standardized', 'raw'\]"),
    ({'x': {'kind': 'reconstruction'}}, "needs an MAE run.*'supervised'"),
    ({'val': {'kind': 'classification'}}, "clashes with the classifier"),
])
def test_bad_evals_config_is_named(evals, pattern, data_dir):
  config = tiny_config(data_dir, evals=ml_collections.ConfigDict(evals))
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match=pattern):
    resolved = config_lib.resolve(config)  # fields and kinds
    run = build.build_run(resolved, data)
    evaluate.build_evaluators(resolved, build.eval_functions(run), run.mesh,
                              None)


# ---------------------------------------------------- reconstruction PNG --


@pytest.mark.parametrize('shape', [(5, 7), (5, 7, 1), (4, 6, 3)])
def test_png_round_trips_through_a_decoder(shape, tmp_path):
  from vit_jax.data.tensorflow_cpu import tf  # an independent PNG decoder
  pixels = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
  path = str(tmp_path / 'image.png')
  reconstruction.write_png(path, pixels)
  decoded = tf.io.decode_png(tf.io.read_file(path)).numpy()
  np.testing.assert_array_equal(decoded.reshape(pixels.shape), pixels)
  with pytest.raises(ValueError, match='uint8'):
    reconstruction.write_png(path, pixels.astype(np.float32))


def test_image_grid_places_scaled_cells():
  rows = [np.full((3, 2, 2, 1), -1.0), np.full((3, 2, 2, 1), 1.0)]
  grid = reconstruction.image_grid(rows, cell_size=4, padding=1)
  # 2 rows of 4-px cells (2x2 images x2), 1-px white padding.
  assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 1)
  assert (grid[1:5, 1:5] == 0).all() and (grid[6:10, 1:5] == 255).all()
  assert (grid[0] == 255).all() and (grid[5] == 255).all()


# ---------------------------------------- in training, and standalone --


def test_fewshot_during_training_and_standalone(tmp_path, data_dir):
  evals = ml_collections.ConfigDict({'fewshot': {
      'kind': 'fewshot', 'every_steps': 5, 'datasets': DIGITS_FEWSHOT,
      'shots': (1, 5), 'seeds': (0, 1), 'l2_reg': 1.0,
      'l2_reg_candidates': (0.1, 1.0, 10.0)}})
  config = tiny_config(data_dir, evals=evals, total_steps=10)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  rows = train.read_metrics(workdir)
  fewshot_rows = [r for r in rows if 'fewshot/digits/5shot' in r]
  assert [r['step'] for r in fewshot_rows] == [5, 10]
  for row in fewshot_rows:
    for k in (1, 5):
      assert 0.1 < row[f'fewshot/digits/{k}shot'] <= 1.0
      assert row[f'fewshot/digits/{k}shot_std'] >= 0.0

  # Standalone, on the finished workdir's config.json: the same numbers.
  # A save in progress (orbax's temporary directory) is neither listed nor
  # touched, as when the run is still training.
  in_progress = os.path.join(workdir, 'checkpoints',
                             '15.orbax-checkpoint-tmp-1700000000')
  os.makedirs(in_progress)
  again = evaluate_workdir(load_workdir_config(workdir), workdir, 'all',
                           ['fewshot'])
  assert sorted(again) == [5, 10]
  assert os.path.isdir(in_progress)
  # What a writer does on start (orbax may clean up in the background).
  checkpoint.TrainCheckpointer(os.path.join(workdir, 'checkpoints')).close()
  deadline = time.monotonic() + 30
  while os.path.exists(in_progress) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not os.path.exists(in_progress)
  for row in fewshot_rows:
    for name, value in again[row['step']].items():
      assert value == pytest.approx(row[name], abs=1e-6), name
  appended = train.read_metrics(workdir)[len(rows):]
  assert [r['step'] for r in appended] == [5, 10]
  assert 'val/accuracy' not in appended[0]  # only the named evaluator

  with pytest.raises(ValueError, match=r"Unknown evaluators \['linear'\]; "
                     r"this config has \['val', 'fewshot'\]"):
    evaluate_workdir(config, workdir, 'latest', ['linear'])
  with pytest.raises(ValueError, match=r'No checkpoint at step 7 .*\[5, 10\]'):
    evaluate_workdir(config, workdir, '7')


def test_standalone_command_line_appends_to_metrics(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(data_dir, total_steps=5,
                                       eval_every_steps=None), workdir)
  before = train.read_metrics(workdir)
  command = [sys.executable, '-m', 'vit_jax.evaluate',
             f'--config={ROOT}/configs/digits.py', f'--workdir={workdir}',
             '--config.model.patch_size=4', '--config.model.width=32',
             '--config.model.depth=2', '--config.model.mlp_dim=64',
             '--config.model.num_heads=2', '--config.batch_size=32',
             f'--config.data.data_dir={data_dir}',
             '--config.evals.fewshot.shots=(2,)',
             '--config.evals.fewshot.seeds=(0,)']
  result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                          timeout=1800, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step 5: ' in result.stdout
  after = train.read_metrics(workdir)
  assert after[:len(before)] == before
  new = after[len(before):]
  assert [row['step'] for row in new] == [5, 5]  # 'val', then 'fewshot'
  assert new[0]['val/count'] == 360
  assert 0 < new[1]['fewshot/digits/2shot'] <= 1


# ------------------------------------------ MAE pre-train -> evaluate --


def test_mae_pretrain_fewshot_plots_then_finetune(tmp_path, data_dir):
  mae_dir = str(tmp_path / 'mae')
  config = tiny_mae_config(data_dir)
  config.evals.fewshot.update(every_steps=5, shots=(2,), seeds=(0,))
  config.evals.reconstruction.update(every_steps=5, num_images=4)
  train.train_and_evaluate(config, mae_dir)
  rows = train.read_metrics(mae_dir)
  assert [r['step'] for r in rows if 'fewshot/digits/2shot' in r] == [5, 10]
  losses = [r['val/loss'] for r in rows if 'val/loss' in r]
  assert len(losses) == 2 and all(np.isfinite(losses))
  assert sorted(os.listdir(os.path.join(mae_dir, 'plots'))) == [
      'reconstruction_10.png', 'reconstruction_5.png']
  from vit_jax.data.tensorflow_cpu import tf  # pylint: disable=g-import-not-at-top
  grid = tf.io.decode_png(tf.io.read_file(
      os.path.join(mae_dir, 'plots', 'reconstruction_10.png'))).numpy()
  # 4 rows (original / masked / reconstruction / pasted) x 4 images of
  # 8x8 pixels enlarged 8x, with 2-px padding.
  assert grid.shape == (4 * 66 + 2, 4 * 66 + 2, 1)

  # The evaluator's loss is the model's own loss over the whole test split
  # (360 = 11 x 32 + 8: the last batch is padded), with the evaluation masks
  # of each batch position: noise drawn from EVAL_MASK_SEED per batch.
  model = build.build_model(config.model)
  params = checkpoint.restore_params(os.path.join(mae_dir, 'checkpoints'))
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  noise = jax.random.uniform(jax.random.PRNGKey(mae.EVAL_MASK_SEED),
                             (32, 4))  # [batch, patches]
  total, count = 0.0, 0
  for batch in data.eval_iterator(config.data, 'test', 32):
    real = batch['mask'] > 0
    loss, _ = model.apply({'params': params}, batch['image'][real],
                          noise=noise[real])
    total, count = total + float(loss) * real.sum(), count + real.sum()
  assert count == 360
  assert losses[-1] == pytest.approx(total / count, rel=1e-5)

  # Fine-tune the encoder as a classifier through init_from; lr 0 keeps the
  # loaded weights, so the saved ones are exactly the MAE encoder's.
  finetune = tiny_config(data_dir, total_steps=2, lr=0.0, **{
      'model.posemb': 'sincos2d', 'checkpoint.every_steps': 2,
      'init_from': ml_collections.ConfigDict({'kind': 'own',
                                              'path': mae_dir})})
  finetune_dir = str(tmp_path / 'finetune')
  train.train_and_evaluate(finetune, finetune_dir)
  tuned = checkpoint.restore_params(os.path.join(finetune_dir,
                                                 'checkpoints'))
  encoder = mae.encoder_params(params)
  for name in encoder:
    for got, expected in zip(jax.tree.leaves(tuned[name]),
                             jax.tree.leaves(encoder[name]), strict=True):
      np.testing.assert_array_equal(got, expected)
  assert not np.any(tuned['head']['kernel'])  # a new, zero-initialised head
  # ... and with a learning rate, it learns digits.
  finetune.lr, finetune.total_steps = 3e-3, 60
  metrics = train.train_and_evaluate(finetune, str(tmp_path / 'tuned'))
  assert metrics['val/accuracy'] > 0.5
