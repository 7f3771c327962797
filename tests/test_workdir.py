"""Workdir safety: reruns of a workdir lose nothing and mix nothing.

Each test reproduces a defect a rerun used to hit (a corrupt newest
checkpoint, a failed asynchronous save, two trainers, a changed config,
stray files, ...), and the config schema's errors.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import ml_collections
import numpy as np
import pytest

from vit_jax import build, checkpoint, config as config_lib, losses, train
from vit_jax import layout
from vit_jax import workdir as workdir_lib
from vit_jax.evaluate import classification
from vit_jax.launch import status as status_lib

from tiny import ROOT, tiny_config


def _params(workdir, step=None):
  return checkpoint.restore_params(os.path.join(workdir, 'checkpoints'), step)


def _garble(step_dir):
  for root, _, files in os.walk(os.path.join(step_dir, 'state')):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')


def test_corrupt_newest_checkpoint_is_moved_aside_and_the_run_finishes(
    tmp_path, data_dir):
  config = tiny_config(data_dir, eval_every_steps=None)
  straight = str(tmp_path / 'straight')
  train.train_and_evaluate(config, straight)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  _garble(os.path.join(workdir, 'checkpoints', '10'))
  os.remove(os.path.join(workdir, 'done'))
  # Falls back to step 5, trains 6..10 and saves step 10 again (this used
  # to die with orbax's StepAlreadyExistsError on every rerun).
  train.train_and_evaluate(config, workdir)
  names = sorted(os.listdir(os.path.join(workdir, 'checkpoints')))
  assert [n for n in names if n.isdigit()] == ['10', '5']
  assert any(n.startswith('10.corrupt-') for n in names), names
  for got, expected in zip(jax.tree.leaves(_params(workdir, 10)),
                           jax.tree.leaves(_params(straight, 10))):
    np.testing.assert_array_equal(got, expected)


def test_failed_async_save_stops_the_run_at_once(tmp_path, data_dir,
                                                 monkeypatch):
  config = tiny_config(data_dir, total_steps=20, eval_every_steps=None,
                       log_every_steps=1)
  workdir = str(tmp_path / 'run')
  save = checkpoint.TrainCheckpointer.save

  def failing_save(self, step, state, data_state):
    if step == 10:  # fails in orbax's background thread, as a full disk does
      data_state = {**data_state, 'unwritable': {1, 2}}
    return save(self, step, state, data_state)

  monkeypatch.setattr(checkpoint.TrainCheckpointer, 'save', failing_save)
  with pytest.raises(TypeError, match='not JSON serializable'):
    train.train_and_evaluate(config, workdir)
  logged = max(r['step'] for r in train.read_metrics(workdir))
  assert logged < 15, f'the failure surfaced only at step {logged}'
  assert checkpoint.TrainCheckpointer(
      os.path.join(workdir, 'checkpoints'), read_only=True).all_steps() == [5]
  assert all(np.isfinite(leaf).all()
             for leaf in jax.tree.leaves(_params(workdir, 5)))
  assert os.path.exists(os.path.join(workdir, 'error'))
  assert not os.path.exists(os.path.join(workdir, 'lock'))


def test_a_live_lock_refuses_a_second_trainer_and_a_dead_one_is_taken(
    tmp_path, data_dir):
  config = tiny_config(data_dir, total_steps=2, eval_every_steps=None,
                       **{'checkpoint.every_steps': 2})
  workdir = str(tmp_path / 'run')
  os.makedirs(workdir)
  holder = subprocess.Popen([sys.executable, '-c',
                             'import time; time.sleep(120)'])
  try:
    with open(os.path.join(workdir, 'lock'), 'w') as f:
      json.dump({'host': socket.gethostname(), 'pid': holder.pid,
                 'started': 'earlier'}, f)
    with pytest.raises(workdir_lib.WorkdirLockedError,
                       match=rf"host '{socket.gethostname()}', pid "
                             rf'{holder.pid}'):
      train.train_and_evaluate(config, workdir)
    assert sorted(os.listdir(workdir)) == ['lock']  # nothing written
  finally:
    holder.kill()
    holder.wait()
  # The holder is dead now: its lock is stale and taken over.
  train.train_and_evaluate(config, workdir)
  assert os.path.exists(os.path.join(workdir, 'done'))
  assert not os.path.exists(os.path.join(workdir, 'lock'))


def test_lock_of_another_host_is_stale_only_without_heartbeat(tmp_path):
  path = tmp_path / 'lock'
  path.write_text(json.dumps({'host': 'elsewhere', 'pid': 1}))
  with pytest.raises(workdir_lib.WorkdirLockedError, match="'elsewhere'"):
    workdir_lib.Lock(str(tmp_path)).acquire()
  old = time.time() - workdir_lib.LOCK_STALE_SECONDS - 10
  os.utime(path, (old, old))
  warnings = []
  with workdir_lib.Lock(str(tmp_path), warn=warnings.append):
    assert json.loads(path.read_text())['pid'] == os.getpid()
  assert 'stale lock' in warnings[0] and not path.exists()


def test_a_changed_config_is_refused_unless_allowed(tmp_path, data_dir):
  config = tiny_config(data_dir, eval_every_steps=None)
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, 'config.json')) as f:
    written = f.read()
  changed = tiny_config(data_dir, eval_every_steps=None, lr=0.1, seed=3,
                        total_steps=15)
  with pytest.raises(workdir_lib.ConfigMismatchError) as error:
    train.train_and_evaluate(changed, workdir)
  for line in ('lr: 0.003 (workdir) -> 0.1', 'seed: 0 (workdir) -> 3',
               'total_steps: 10 (workdir) -> 15',
               '--allow_config_change=lr,seed,total_steps'):
    assert line in str(error.value)
  with open(os.path.join(workdir, 'config.json')) as f:
    assert f.read() == written  # untouched by the refused rerun
  # Extending the run: allowed, resumed, the old config kept in history.
  longer = tiny_config(data_dir, eval_every_steps=None, total_steps=15,
                       **{'schedule.warmup_steps': 2})
  train.train_and_evaluate(longer, workdir, allow_changes=['total_steps'])
  assert workdir_lib.read_config(workdir).total_steps == 15
  (history,) = os.listdir(os.path.join(workdir, 'config_history'))
  with open(os.path.join(workdir, 'config_history', history)) as f:
    assert f.read() == written
  assert max(r['step'] for r in train.read_metrics(workdir)) == 15
  # Where the data lives on this machine is not part of the identity.
  again = tiny_config(str(tmp_path / 'elsewhere'), eval_every_steps=None,
                      total_steps=15)
  assert workdir_lib.check_config(workdir, config_lib.resolve(again)) == {
      'data.data_dir': (data_dir, str(tmp_path / 'elsewhere'))}


def test_nothing_is_created_before_the_run_is_known_to_start(tmp_path,
                                                             data_dir):
  workdir = tmp_path / 'run'
  missing = tmp_path / 'no_such_run'
  config = tiny_config(data_dir, **{'init_from.path': str(missing)})
  with pytest.raises(FileNotFoundError, match="init_from kind 'own' needs"):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists() and not missing.exists()
  # An evaluator that cannot work is refused before step 1.
  config = tiny_config(data_dir, evals=ml_collections.ConfigDict({
      'fewshot': {'kind': 'fewshot', 'l2_reg': 1.0, 'shots': (500,),
                  'datasets': {'digits': {'name': 'digits',
                                          'pp': 'value_range(-1, 1)'}}}}))
  with pytest.raises(ValueError, match='digits'):
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()
  # Evaluating a mistyped workdir creates nothing.
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.evaluate', f'--workdir={workdir}'],
      cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 1
  assert 'config.json does not exist' in result.stderr
  assert not workdir.exists()


def test_sigterm_during_evaluation_cuts_it_short(tmp_path, data_dir,
                                                 monkeypatch):
  config = tiny_config(data_dir, total_steps=100, eval_every_steps=6,
                       **{'checkpoint.every_steps': 100})
  workdir = str(tmp_path / 'run')

  def slow_evaluation(self, params, step=None):
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(60)
    return {}

  monkeypatch.setattr(classification.ClassificationEvaluator, 'run',
                      slow_evaluation)
  start = time.monotonic()
  with pytest.raises(train.Preempted, match='step 6'):
    train.train_and_evaluate(config, workdir)
  assert time.monotonic() - start < 50
  assert [s for s in os.listdir(os.path.join(workdir, 'checkpoints'))
          if s.isdigit()] == ['6']
  assert not os.path.exists(os.path.join(workdir, 'error'))


# ------------------------------------------------------------------ config --


@pytest.mark.parametrize('key, value, pattern', [
    ('totl_steps', 3, r"Unknown config key 'totl_steps'. Did you mean "
     r"'total_steps'\?"),
    ('checkpoint.every_step', 3, r"Unknown config key checkpoint.'every_step'"
     r". Did you mean 'every_steps'\?"),
    ('model.widht', 3, r"model.'widht'. Did you mean 'width'\?"),
    ('optimizer.beta1', 0.9, r"optimizer.'beta1'"),
    ('schedule.decay', 'step', r"schedule.decay 'step'; valid choices"),
    ('data.pp', 'x', r"Unknown data_config fields \['pp'\]"),
    ('loss', 'hinge', r"Unknown loss 'hinge'; valid choices"),
])
def test_unknown_keys_are_refused_at_every_level(key, value, pattern,
                                                 data_dir):
  config = tiny_config(data_dir).to_dict()
  *parents, leaf = key.split('.')
  section = config
  for parent in parents:
    section = section[parent]
  section[leaf] = value
  with pytest.raises(ValueError, match=pattern):
    config_lib.resolve(config)


def test_resolve_fills_every_default_once(data_dir):
  config = tiny_config(data_dir).to_dict()
  del config['checkpoint']
  assert 'grad_accum_steps' not in config
  resolved = config_lib.resolve(config)
  assert resolved.grad_accum_steps == 1
  assert resolved.checkpoint.to_dict() == config_lib.SECTION_DEFAULTS[
      'checkpoint']
  assert resolved.optimizer.eps == 1e-8  # adamw's own default
  assert config_lib.resolve(resolved).to_dict() == resolved.to_dict()


def test_command_line_errors_are_one_line(tmp_path):
  for flag, expected in (('--config.modle.width=3', "Did you mean 'model'?"),
                         ('--config.lr=abc', 'could not convert')):
    result = subprocess.run(
        [sys.executable, '-m', 'vit_jax.main', '--config=configs/digits.py',
         f'--workdir={tmp_path / "w"}', flag],
        cwd=ROOT, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], result.stderr
    assert not (tmp_path / 'w').exists()


def test_num_classes_must_match_the_dataset(data_dir):
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  config = config_lib.resolve(tiny_config(data_dir,
                                          **{'model.num_classes': 7}))
  with pytest.raises(ValueError, match=r'model.num_classes=7 does not match '
                     r"the 10 classes of dataset 'digits'"):
    build.build_run(config, data)


def test_val_loss_is_the_training_loss():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(6, 5)).astype(np.float32)
  labels = np.eye(5, dtype=np.float32)[rng.integers(0, 5, 6)]
  mask = np.array([1, 1, 1, 1, 0, 0], np.float32)
  sums = classification.batch_sums(logits, labels, mask,
                                   losses.sigmoid_xent)
  probs = 1 / (1 + np.exp(-logits.astype(np.float64)))
  expected = -(labels * np.log(probs) + (1 - labels) * np.log(1 - probs))
  assert float(sums['loss']) == pytest.approx(
      expected.sum(-1)[:4].sum(), rel=1e-5)
  softmax = classification.batch_sums(logits, labels, mask)
  assert float(softmax['loss']) != pytest.approx(float(sums['loss']))


def test_sigmoid_recipes_evaluate_their_own_loss(data_dir):
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  config = config_lib.resolve(tiny_config(data_dir, loss='sigmoid_xent'))
  fns = build.eval_functions(build.build_run(config, data))
  assert fns.example_loss is losses.sigmoid_xent


def test_metrics_rows_past_the_resumed_step_are_dropped(tmp_path):
  rows = [{'step': s, 'train/loss': 1.0} for s in (5, 10, 11, 12)]
  text = ''.join(json.dumps(r) + '\n' for r in rows) + '{"step": 13, "tr'
  (tmp_path / 'metrics.jsonl').write_text(text)
  assert workdir_lib.truncate_metrics(str(tmp_path), 10) == 3
  assert [r['step'] for r in train.read_metrics(str(tmp_path))] == [5, 10]


def test_one_reader_of_metrics_rows_garbled_and_torn_lines(tmp_path):
  """layout.parse_metrics, which the trainer, `status` and the scaling
  analysis all read metrics.jsonl through: rows need a JSON object with an
  integer step; other lines are garbled, except an unterminated last one
  (torn by a crash mid-write)."""
  text = ('{"step": 1, "a": 0.5}\n'
          '\n'
          'not json\n'
          '{"a": 1}\n'
          '[1, 2]\n'
          '{"step": "x"}\n'
          '{"step": "7", "b": 2}\n'
          '{"step": 9, "a"')
  parsed = layout.parse_metrics(text)
  assert parsed.rows == [(1, {'step': 1, 'a': 0.5}), (7, {'step': 7, 'b': 2})]
  assert parsed.garbled == [3, 4, 5, 6] and parsed.torn == 8
  # A last line that parses is a row, torn or not; damage before it is not.
  parsed = layout.parse_metrics('{"step": 2}\n{"step": 3}')
  assert [n for n, _ in parsed.rows] == [1, 2] and not parsed.garbled
  assert layout.read_metrics(str(tmp_path / 'absent')) == ([], [], None)
  (tmp_path / 'metrics.jsonl').write_text(text)
  assert status_lib.last_metrics(str(tmp_path), 'a') == (7, 0.5)
  with pytest.raises(ValueError, match='line 3 is not a metrics row'):
    train.read_metrics(str(tmp_path))
  assert workdir_lib.truncate_metrics(str(tmp_path), 5) == 6  # blank: no row
  assert train.read_metrics(str(tmp_path)) == [{'step': 1, 'a': 0.5}]


# ------------------------------------------------------ light workdir readers --

# What a module that only reads workdirs must not load: JAX, Flax, orbax,
# TensorFlow or a model family (the launcher's `status`, `cancel` and
# `resume` run on login nodes and in watch loops).
HEAVY_MODULES = ('jax', 'flax', 'orbax', 'tensorflow', 'vit_jax.models')

# Runs argv[1] in this fresh interpreter (a program's SystemExit included),
# then prints, last, the heavy modules it loaded as a JSON list.
_PROBE = """
import json, sys
heavy = json.loads(sys.argv[2])
try:
  exec(sys.argv[1])
except SystemExit:
  pass
print(json.dumps(sorted(name for name in sys.modules if any(
    name == h or name.startswith(h + '.') for h in heavy))))
"""


def _heavy_modules_loaded(code):
  """(the heavy modules `code` loaded in a fresh interpreter, its output
  before that list)."""
  result = subprocess.run(
      [sys.executable, '-c', _PROBE, code, json.dumps(HEAVY_MODULES)],
      cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  *output, loaded = result.stdout.splitlines()
  return json.loads(loaded), '\n'.join(output)


def _launcher(*args):
  """`python -m vit_jax.launch ARGS` as code for `_PROBE`."""
  return (f'import runpy, sys; sys.argv = ["vit_jax.launch", *{list(args)!r}]'
          f'; runpy.run_module("vit_jax.launch", run_name="__main__", '
          f'alter_sys=True)')


def test_the_probe_sees_a_heavy_import():
  loaded, _ = _heavy_modules_loaded('import vit_jax.config as c; '
                                    'c.model_fields("vit")')
  assert 'jax' in loaded and 'vit_jax.models' in loaded


@pytest.mark.parametrize('module', ['vit_jax.layout', 'vit_jax.workdir',
                                    'vit_jax.config', 'vit_jax.launch.status',
                                    'vit_jax.launch.__main__',
                                    'vit_jax.scaling.runs'])
def test_workdir_readers_import_no_jax_or_tensorflow(module):
  assert _heavy_modules_loaded(f'import {module}') == ([], '')


def test_launcher_status_cancel_and_resume_scan_load_no_jax(tmp_path,
                                                            data_dir):
  """The launcher's commands on a sweep directory (one run done, one never
  started) do their work without JAX; launching validates with it."""
  from vit_jax.launch import record as record_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.launch import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  sweep_file = tmp_path / 'sweep_def.py'
  sweep_file.write_text(
      'from vit_jax.launch import sweep\n'
      'def get_sweep(arg=None):\n'
      '  return {"config": "configs/digits.py",\n'
      '          "runs": sweep.grid({"lr": [0.001, 0.003]}),\n'
      f'          "fixed": {{"data.data_dir": {data_dir!r}, '
      '"total_steps": 4, "schedule.warmup_steps": 2}}\n')
  sweep_dir = str(tmp_path / 'sweep')
  record = record_lib.new(sweep_lib.load(str(sweep_file), sweep_dir, ROOT),
                          ROOT, 'local', {'parallel': 1, 'gpus_per_run': None,
                                          'python': sys.executable})
  record_lib.write(sweep_dir, record)
  done = tmp_path / 'sweep' / 'lr=0.001'
  done.mkdir()
  (done / 'config.json').write_text('{}')
  (done / 'metrics.jsonl').write_text('{"step": 4, "val/accuracy": 0.25}\n')
  (done / 'done').write_text('{"step": 4}')

  loaded, table = _heavy_modules_loaded(
      _launcher('status', f'--sweep_dir={sweep_dir}'))
  assert loaded == []
  assert table.splitlines()[1].split()[:4] == ['lr=0.001', 'done', '4/4',
                                               '0.2500']
  assert table.splitlines()[-1] == '1 pending, 1 done'
  loaded, _ = _heavy_modules_loaded(
      _launcher('cancel', f'--sweep_dir={sweep_dir}'))
  assert loaded == []
  loaded, plan = _heavy_modules_loaded(
      _launcher('resume', f'--sweep_dir={sweep_dir}', '--dry_run'))
  assert loaded == []
  assert 'Not relaunched: 1 runs (lr=0.001: done)' in plan
  assert '--workdir=' + os.path.join(sweep_dir, 'lr=0.003') in plan
