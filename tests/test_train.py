"""The training system: workdir, exact resume, preemption, NaN, sharding."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vit_jax import build, checkpoint, compute, layout, optim, sharding, train
from vit_jax import config as config_lib
from vit_jax.evaluate import fewshot_evaluator
from vit_jax.models import representation

from tiny import load_config as _load_config, tiny_config
from tiny import multihost_reference_params
from tiny import train_killed_at

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _params(workdir, step=None):
  return checkpoint.restore_params(os.path.join(workdir, 'checkpoints'), step)


def _assert_trees_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


def test_run_writes_the_workdir(tmp_path, data_dir):
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(tiny_config(data_dir), workdir)
  rows = train.read_metrics(workdir)
  train_rows = [r for r in rows if 'train/loss' in r]
  assert [r['step'] for r in train_rows] == [5, 10]
  for row in train_rows:
    for name in ('train/loss', 'train/lr', 'train/grad_norm',
                 'train/img_per_sec', 'compute/flops', 'compute/images_seen'):
      assert np.isfinite(row[name]), name
    assert row['compute/images_seen'] == row['step'] * 32
  assert 0 < train_rows[0]['compute/flops'] < train_rows[1]['compute/flops']
  assert train_rows[1]['compute/flops'] == 2 * train_rows[0]['compute/flops']
  assert 0 < train_rows[0]['compute/device_seconds'] < train_rows[1][
      'compute/device_seconds']
  assert all('compute/mfu' not in r for r in rows)  # CPU: no known peak
  summary = compute.read_summary(workdir)
  assert summary['flops_per_step'] * 10 == summary['flops'] == (
      train_rows[1]['compute/flops'])
  assert summary['device_seconds'] == train_rows[1]['compute/device_seconds']
  assert (summary['step'], summary['images_seen'], summary['devices']) == (
      10, 320, jax.device_count())
  # A training step costs about 3 forward passes (forward, backward) of
  # the batch: 2.7 in XLA's count of this model.
  assert 2 * 32 * summary['flops_per_image'] < summary['flops_per_step'] < (
      4 * 32 * summary['flops_per_image'])
  # Patch embedding (4x4x1 -> 32), position embeddings (4 + 1 tokens),
  # class token and head (32 -> 10) are not body.
  assert summary['params'] - summary['params_body'] == (
      (16 * 32 + 32) + 5 * 32 + 32 + (32 * 10 + 10))
  assert summary['flop_convention'] == 'a multiply-add is 2 FLOPs'
  val = [r for r in rows if 'val/accuracy' in r]
  assert [r['step'] for r in val] == [10]
  assert val[0]['val/count'] == 360  # the whole test split, once
  with open(os.path.join(workdir, 'config.json')) as f:
    assert json.load(f)['total_steps'] == 10
  assert os.listdir(os.path.join(workdir, 'tb'))
  assert sorted(os.listdir(os.path.join(workdir, 'checkpoints'))) == ['10', '5']


def test_resume_is_exact(tmp_path, data_dir, monkeypatch, capfd):
  config = tiny_config(data_dir, total_steps=20, eval_every_steps=None,
                       log_every_steps=1, **{
                           'checkpoint.every_steps': 10, 'model.dropout': 0.1})
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(config, straight)

  interrupted = str(tmp_path / 'interrupted')
  train_killed_at(config, interrupted, 13, monkeypatch)
  assert sorted(os.listdir(os.path.join(interrupted, 'checkpoints'))) == [
      '10']
  assert not os.path.exists(os.path.join(interrupted, 'lock'))
  with open(os.path.join(interrupted, 'error')) as f:
    assert 'Killed' in f.read()
  capfd.readouterr()
  train.train_and_evaluate(config, interrupted)  # resumes from step 10
  assert 'Resuming from step 10 of 20' in capfd.readouterr().err
  # Rows of steps 11 and 12, logged before the crash, appear once.
  steps = [r['step'] for r in train.read_metrics(interrupted)
           if 'train/loss' in r]
  assert steps == list(range(1, 21))
  assert os.path.exists(os.path.join(interrupted, 'done'))
  assert not os.path.exists(os.path.join(interrupted, 'error'))
  _assert_trees_equal(_params(interrupted, 20), _params(straight, 20))


def test_nan_stops_with_the_step_and_keeps_the_last_good_checkpoint(
    tmp_path, data_dir):
  config = tiny_config(data_dir, total_steps=40, lr=1e4, grad_clip_norm=None,
                       optimizer=ml_collections.ConfigDict({'name': 'sgd',
                                                            'momentum': 0.9}),
                       **{'checkpoint.every_steps': 1,
                          'checkpoint.async_save': False})
  workdir = str(tmp_path / 'nan')
  with pytest.raises(FloatingPointError, match=r'at step (\d+)') as error:
    train.train_and_evaluate(config, workdir)
  bad_step = int(error.value.args[0].split('at step ')[1].split(';')[0])
  saved = sorted(int(s) for s in os.listdir(
      os.path.join(workdir, 'checkpoints')))
  assert saved and max(saved) < bad_step
  for leaf in jax.tree.leaves(_params(workdir)):
    assert np.isfinite(leaf).all()


def test_corrupt_latest_checkpoint_is_skipped(tmp_path):
  state = {'params': {'w': jnp.arange(6.0).reshape(2, 3)},
           'step': jnp.zeros((), jnp.int32)}
  directory = str(tmp_path / 'checkpoints')
  checkpointer = checkpoint.TrainCheckpointer(directory, async_save=False)
  checkpointer.save(1, state, {'step': 1})
  checkpointer.save(2, jax.tree.map(lambda x: x + 1, state), {'step': 2})
  checkpointer.close()
  for root, _, files in os.walk(os.path.join(directory, '2', 'state')):
    for name in files:  # garble every file of the newest checkpoint
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                     sharding=sharding.replicated(
                                         sharding.make_mesh(-1, 1))), state)
  checkpointer = checkpoint.TrainCheckpointer(directory, async_save=False)
  step, restored, data_state = checkpointer.restore_latest(abstract)
  assert step == 1 and data_state == {'step': 1}
  # The unreadable step is moved aside, not deleted, and can be saved again.
  assert checkpointer.moved_aside == [2]
  names = sorted(os.listdir(directory))
  assert names[0] == '1' and names[1].startswith('2.corrupt-'), names
  assert checkpointer.all_steps() == [1]
  checkpointer.save(2, state, {'step': 2})
  assert checkpointer.all_steps() == [1, 2]
  import shutil  # pylint: disable=g-import-not-at-top
  shutil.rmtree(os.path.join(directory, '2'))
  checkpointer.close()
  checkpointer = checkpoint.TrainCheckpointer(directory, async_save=False)
  np.testing.assert_array_equal(restored['params']['w'],
                                np.arange(6.0).reshape(2, 3))
  # Nothing readable at all: an error, never a silent fresh start.
  for root, _, files in os.walk(os.path.join(directory, '1', 'state')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  with pytest.raises(ValueError, match='No checkpoint .* could be restored'):
    checkpointer.restore_latest(abstract)
  assert '1' in os.listdir(directory)  # nothing readable: nothing moved
  checkpointer.close()


def _step_setup(accum=1):
  config = ml_collections.ConfigDict({
      'lr': 1e-3, 'wd': 1e-4, 'grad_clip_norm': 1.0,
      'optimizer': {'name': 'adamw'},
      'schedule': {'warmup_steps': 2, 'decay': 'cosine'}})
  model = build.build_model(ml_collections.ConfigDict(dict(
      name='vit', patch_size=4, width=32, depth=1, mlp_dim=64, num_heads=2,
      num_classes=10, pool_type='map')))
  tx, schedule = optim.make_optimizer(config, 10)
  init_fn = build.make_init_fn(model, tx, (8, 8, 1))
  step_fn = train.make_train_step(
      train.make_loss_fn(model, ml_collections.ConfigDict()), tx, schedule,
      accum)
  rng = np.random.default_rng(0)
  batches = [{'image': rng.normal(size=(16, 8, 8, 1)).astype(np.float32),
              'labels': np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]}
             for _ in range(5)]  # 5 steps: issue #4's bar
  return init_fn, step_fn, batches


def _run_steps(init_fn, step_fn, batches, mesh):
  shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  shardings = sharding.param_shardings(shapes, mesh)
  state = jax.jit(init_fn, out_shardings=shardings)(jax.random.PRNGKey(0))
  step = jax.jit(step_fn, in_shardings=(shardings, sharding.batch_sharding(
      mesh), sharding.replicated(mesh)), out_shardings=(
          shardings, sharding.replicated(mesh)), donate_argnums=(0,))
  losses = []
  for batch in batches:
    state, metrics = step(state, sharding.global_batch(batch, mesh),
                          jax.random.PRNGKey(1))
    losses.append(float(metrics['train/loss']))
  return losses, jax.device_get(state['params'])


def test_eight_devices_match_one_for_every_mesh_shape():
  init_fn, step_fn, batches = _step_setup()
  one = sharding.make_mesh(1, 1, devices=jax.devices()[:1])
  losses, params = _run_steps(init_fn, step_fn, batches, one)
  # (2, 4) is tests/test_batch_norm.py's.
  for data, fsdp in [(8, 1), (4, 2), (1, 8)]:
    mesh_losses, mesh_params = _run_steps(init_fn, step_fn, batches,
                                          sharding.make_mesh(data, fsdp))
    np.testing.assert_allclose(mesh_losses, losses, atol=1e-5)
    for got, expected in zip(jax.tree.leaves(mesh_params),
                             jax.tree.leaves(params)):
      np.testing.assert_allclose(got, expected, atol=1e-5)


def test_gradient_accumulation_matches_the_full_batch():
  init_fn, full_step, batches = _step_setup(accum=1)
  _, accum_step, _ = _step_setup(accum=4)
  mesh = sharding.make_mesh(-1, 1)
  full_losses, full_params = _run_steps(init_fn, full_step, batches[:2], mesh)
  accum_losses, accum_params = _run_steps(init_fn, accum_step, batches[:2],
                                          mesh)
  np.testing.assert_allclose(accum_losses, full_losses, rtol=1e-5)
  for got, expected in zip(jax.tree.leaves(accum_params),
                           jax.tree.leaves(full_params)):
    np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize('overrides,pattern', [
    (dict(batch_size=30), r'Global batch size 30 is not divisible by the 8 '
     r'devices'),
    (dict(grad_accum_steps=3), r'grad_accum_steps=3 must split the batch'),
    (dict(eval_batch_size=50), r'eval_batch_size 50 is not divisible by the '
     r'8 devices; use a multiple of 8'),
    (dict(objective='contrastive'),
     r"Unknown objective 'contrastive'; valid choices: \['supervised', "
     r"'mae', 'segmentation'\]"),
])
def test_bad_config_is_a_clear_error(overrides, pattern, data_dir):
  with pytest.raises(ValueError, match=pattern):
    build.validate(config_lib.resolve(tiny_config(data_dir, **overrides)), 8)


# tests/support/tiny.py's model and a small few-shot evaluation, as flags.
_TINY_FLAGS = ('--config.model.patch_size=4', '--config.model.width=32',
               '--config.model.depth=2', '--config.model.mlp_dim=64',
               '--config.model.num_heads=2', '--config.batch_size=32',
               '--config.evals.fewshot.shots=(1,)',
               '--config.evals.fewshot.seeds=(0,)')


def _main(workdir, *flags, env=None, **popen):
  command = [sys.executable, '-m', 'vit_jax.main',
             '--config=configs/digits.py', f'--workdir={workdir}', *flags]
  return subprocess.Popen(command, cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **popen)


def test_unknown_config_key_is_named(tmp_path):
  process = _main(str(tmp_path), '--config.modle.width=3')
  output, _ = process.communicate(timeout=1800)
  assert process.returncode != 0
  assert 'modle' in output


def test_sigterm_saves_and_exits_with_the_preempted_status(tmp_path,
                                                         data_dir):
  workdir = str(tmp_path / 'preempted')
  process = _main(workdir, f'--config.data.data_dir={data_dir}',
                  '--config.total_steps=100000', '--config.log_every_steps=5',
                  '--config.checkpoint.every_steps=100000', *_TINY_FLAGS)
  metrics = os.path.join(workdir, 'metrics.jsonl')
  deadline = time.time() + 180
  while not (os.path.exists(metrics) and os.path.getsize(metrics)):
    assert process.poll() is None, process.communicate()[0]
    assert time.time() < deadline, 'no metrics in time'
    time.sleep(0.5)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=1800)
  assert process.returncode == layout.EXIT_PREEMPTED == 3, output
  assert not os.path.exists(os.path.join(workdir, 'done'))
  assert not os.path.exists(os.path.join(workdir, 'lock'))
  saved = [int(s) for s in os.listdir(os.path.join(workdir, 'checkpoints'))]
  last_logged = train.read_metrics(workdir)[-1]['step']
  assert saved == [last_logged] and last_logged >= 5


def test_sigterm_during_start_up_stops_cleanly(tmp_path, data_dir):
  """SIGTERM while the run starts (its lock taken, nothing trained yet):
  exit status 3, no error recorded, the lock released; a rerun finishes."""
  workdir = str(tmp_path / 'early')
  flags = [f'--config.data.data_dir={data_dir}', '--config.total_steps=4',
           '--config.schedule.warmup_steps=2', '--config.log_every_steps=2',
           *_TINY_FLAGS]
  process = _main(workdir, *flags)
  deadline = time.time() + 180
  while not os.path.exists(os.path.join(workdir, 'lock')):
    assert process.poll() is None, process.communicate()[0]
    assert time.time() < deadline, 'no lock in time'
    time.sleep(0.05)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=1800)
  assert process.returncode == layout.EXIT_PREEMPTED, output
  for name in ('error', 'done', 'lock'):
    assert not os.path.exists(os.path.join(workdir, name)), name
  process = _main(workdir, *flags)
  output, _ = process.communicate(timeout=1800)
  assert process.returncode == 0, output
  assert os.path.exists(os.path.join(workdir, 'done'))


def _free_port():
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    return sock.getsockname()[1]


def test_two_processes_match_one(tmp_path, data_dir):
  """2 local processes x 4 CPU devices, CPU collectives, vs one process."""
  config = tiny_config(data_dir, total_steps=3, eval_every_steps=None,
                       **{'checkpoint.every_steps': 3})
  workdir = str(tmp_path / 'multihost')
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS='--xla_force_host_platform_device_count=4',
             JAX_PLATFORMS='cpu')
  flags = [f'--config.data.data_dir={data_dir}', '--config.total_steps=3',
           '--config.eval_every_steps=3', '--config.checkpoint.every_steps=3',
           '--config.model.patch_size=4', '--config.model.width=32',
           '--config.model.depth=2', '--config.model.mlp_dim=64',
           '--config.model.num_heads=2', '--config.model.dropout=0.0',
           '--config.model.stochastic_depth=0.0', '--config.batch_size=32',
           '--config.schedule.warmup_steps=2',
           f'--coordinator_address=localhost:{port}', '--num_processes=2']
  processes = [_main(workdir, *flags, f'--process_id={i}', env=env)
               for i in range(2)]
  outputs = [p.communicate(timeout=1800)[0] for p in processes]
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output

  # The same global batches in one process: process 0's rows, then 1's.
  model = build.build_model(config.model)
  expected = multihost_reference_params(config, processes=2)
  multihost = _params(workdir, 3)
  for got, want in zip(jax.tree.leaves(multihost), jax.tree.leaves(expected),
                       strict=True):
    np.testing.assert_allclose(got, want, atol=1e-5)

  # The evaluators ran across both processes at the last step: the few-shot
  # numbers equal a one-process evaluation of the same params.
  final = {}
  for row in train.read_metrics(workdir):
    if row['step'] == 3:
      final.update(row)
  assert 0 < final['val/accuracy'] <= 1
  fewshot_config = _load_config('digits').evals.fewshot.to_dict()
  fewshot_config['datasets']['digits']['data_dir'] = data_dir
  one_process = fewshot_evaluator.FewShotEvaluator(
      representation.representation_fn(model), fewshot_config['datasets'],
      sharding.make_mesh(-1, 1),
      shots=fewshot_config['shots'], seeds=fewshot_config['seeds'],
      l2_reg=fewshot_config['l2_reg'],
      l2_reg_candidates=fewshot_config['l2_reg_candidates']).run(
          {'params': multihost})
  assert sorted(one_process) == sorted(k for k in final if 'fewshot/' in k)
  for name, value in one_process.items():  # a flipped borderline example
    assert final[name] == pytest.approx(value, abs=1 / 360), name


RECIPES = ['digits', 'vit_i1k', 'vit_i21k', 'scaling_vit', 'mixer_i1k',
           'swin_i1k', 'mae_i1k', 'mae_digits', 'convmixer_i1k', 'xcit_i1k',
           'finetune']

TINY_MODELS = {
    'vit': dict(variant=None, patch_size=4, width=32, depth=2, mlp_dim=64,
                num_heads=2, representation_size=None),
    'mixer': dict(variant=None, patch_size=4, width=32, depth=2,
                  tokens_mlp_dim=16, channels_mlp_dim=64),
    'swin': dict(variant=None, patch_size=2, width=16, depths=(2, 2),
                 num_heads=(2, 4), window_size=2),
    'convmixer': dict(variant=None, patch_size=4, width=16, depth=2,
                      kernel_size=3),
    'xcit': dict(variant=None, patch_size=4, width=16, depth=1, num_heads=2,
                 class_attention_depth=1),
    'mae': dict(variant=None, patch_size=4, width=32, depth=2, mlp_dim=64,
                num_heads=2, decoder_width=16, decoder_depth=1,
                decoder_num_heads=2, num_channels=1),
}


@pytest.mark.parametrize('recipe', RECIPES)
def test_every_recipe_runs_two_steps(recipe, tmp_path, data_dir):
  config = _load_config(recipe)
  tiny = tiny_config(data_dir)
  config.data = tiny.data
  config.data.mixup_alpha = 0.0 if recipe == 'digits' else 0.2
  model_config = config.model.to_dict()
  for key, value in TINY_MODELS[config.model.name].items():
    model_config[key] = value
  model_config.update(num_classes=10) if config.model.name != 'mae' else None
  model_config['dtype'] = 'float32'
  config.model = ml_collections.ConfigDict(model_config)
  config.batch_size = 16
  config.total_steps = 2
  config.schedule.warmup_steps = 1
  config.schedule.cooldown_steps = 0
  config.eval_every_steps = 2 if recipe == 'digits' else None
  # Few-shot datasets other than digits are not prepared here.
  config.evals = ml_collections.ConfigDict()
  config.checkpoint.every_steps = 2
  if recipe == 'finetune':
    source = str(tmp_path / 'source')
    train.train_and_evaluate(tiny_config(data_dir, total_steps=2), source)
    config.init_from.kind = 'own'
    config.init_from.path = source
  metrics = train.train_and_evaluate(config, str(tmp_path / recipe))
  assert np.isfinite(metrics['train/loss'])


def test_checkpoints_keep_the_last_n_and_every_kth(tmp_path):
  state = {'w': jnp.zeros((2,))}
  directory = str(tmp_path / 'checkpoints')
  checkpointer = checkpoint.TrainCheckpointer(directory, keep_last=2,
                                              keep_every=4, async_save=True)
  for step in range(1, 10):
    checkpointer.save(step, state, {'step': step})
  checkpointer.close()
  assert checkpointer.all_steps() == [4, 8, 9]


def test_finished_steps_and_the_step_chosen(tmp_path):
  """Steps by their directories, without orbax, ordered as numbers; an
  unfinished save and a moved-aside checkpoint are no steps."""
  directory = str(tmp_path / 'checkpoints')
  checkpointer = checkpoint.TrainCheckpointer(directory, async_save=False)
  for step in (3, 10):
    checkpointer.save(step, {'w': jnp.zeros((2,))}, {'step': step})
  checkpointer.close()
  os.makedirs(os.path.join(directory, '12.orbax-checkpoint-tmp-1'))
  os.makedirs(os.path.join(directory, '7.corrupt-20260101-000000'))
  steps = checkpoint.finished_steps(directory)
  assert steps == checkpointer.all_steps() == [3, 10]
  assert checkpoint.choose_step(steps, None, directory) == 10
  assert checkpoint.choose_step(steps, 3, directory) == 3
  with pytest.raises(ValueError, match=re.escape(
      f'No checkpoint at step 7 in {directory}; steps there: [3, 10]')):
    checkpoint.choose_step(steps, 7, directory)
  with pytest.raises(FileNotFoundError, match='No finished checkpoint in'):
    checkpoint.choose_step([], None, directory)


@pytest.mark.parametrize('env,expected', [
    ({}, False), ({'SLURM_NTASKS': '1'}, False), ({'SLURM_NTASKS': '4'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'host-0,host-1'}, True),
    ({'TPU_WORKER_HOSTNAMES': 'host-0'}, False)])
def test_cluster_auto_detection(env, expected, monkeypatch):
  from vit_jax import cli  # pylint: disable=g-import-not-at-top
  for name in ('SLURM_NTASKS', 'TPU_WORKER_HOSTNAMES'):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert cli._auto_detectable_cluster() == expected


def test_cooldown_branch_matches_a_run_from_scratch(tmp_path, data_dir):
  """A trunk without cooldown (constant lr after warmup, dropout on) keeps
  step 6; a branch from it with a 1-sqrt cooldown of 4 steps ends
  bit-identical to a 10-step run from scratch with that schedule. Bad
  branches are refused before anything is written."""
  common = {'model.dropout': 0.1, 'schedule.decay': 'constant',
            'eval_every_steps': None, 'checkpoint.every_steps': 100,
            'schedule.cooldown_shape': '1-sqrt'}
  trunk = str(tmp_path / 'trunk')
  train.train_and_evaluate(tiny_config(
      data_dir, total_steps=12, **common,
      **{'checkpoint.keep_last': 1, 'checkpoint.keep_steps': (6,)}), trunk)
  assert sorted(os.listdir(os.path.join(trunk, 'checkpoints'))) == ['12', '6']
  cooled = {'total_steps': 10, 'schedule.cooldown_steps': 4, **common}
  scratch = str(tmp_path / 'scratch')
  train.train_and_evaluate(tiny_config(data_dir, **cooled), scratch)
  branch = str(tmp_path / 'branch')
  train.train_and_evaluate(tiny_config(
      data_dir, **cooled, **{'branch.trunk': trunk, 'branch.step': 6}),
                           branch)
  _assert_trees_equal(_params(branch, 10), _params(scratch, 10))
  rows = train.read_metrics(branch)
  assert [r['step'] for r in rows if 'train/loss' in r] == [10]
  # Its compute counts the trunk's first 6 steps too.
  summary = compute.read_summary(branch)
  assert summary['flops_per_step'] == pytest.approx(
      compute.read_summary(trunk)['flops_per_step'], rel=1e-3)
  assert rows[-1]['compute/flops'] == summary['flops'] == (
      summary['flops_per_step'] * 10)

  for overrides, message in [
      ({'lr': 1e-2}, "differ in lr"),
      ({'branch.step': 5}, 'did not keep it'),
      ({'branch.step': 14, 'total_steps': 20}, "the trunk's cooldown"),
      ({'schedule.decay': 'cosine'}, "does not depend on total_steps"),
      ({'branch.step': 8}, 'past the start of this run'),
      ({'branch.trunk': str(tmp_path / 'nowhere')}, 'has no config.json')]:
    config = tiny_config(data_dir, **{**cooled, 'branch.trunk': trunk,
                                      'branch.step': 6, **overrides})
    bad = str(tmp_path / 'bad')
    with pytest.raises(ValueError, match=message):
      train.train_and_evaluate(config, bad)
    assert not os.path.exists(bad)
