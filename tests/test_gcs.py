"""Workdirs on Google Cloud Storage, against a local GCS emulator (the `gcs`
fixture, tests/support/gcs_emulator.py): `vit_jax.paths` locally and on
gs://, the lock's create-only and compare-and-swap writes, a corrupt
checkpoint moved aside, and a run trained, resumed and evaluated in
gs://BUCKET/run by the command-line tools; unsupported schemes refused at
start-up."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import checkpoint, compute, paths, train, weights
from vit_jax import workdir as workdir_lib

from tiny import ROOT


@pytest.fixture(params=['local', 'gs'])
def root(request, tmp_path):
  """A fresh directory: local, or a new prefix in the emulator's bucket."""
  if request.param == 'local':
    return str(tmp_path / 'root')
  emulator = request.getfixturevalue('gcs')
  return f'gs://{emulator.bucket}/unit-{uuid.uuid4().hex[:8]}'


def test_paths_read_write_list_and_rename(root):
  paths.makedirs(root)
  config = paths.join(root, 'config.json')
  assert paths.read_json(config) is None and not paths.exists(config)
  paths.write_atomic(config, json.dumps({'a': 1}))
  assert paths.read_json(config) == {'a': 1}
  assert abs(paths.mtime(config) - time.time()) < 60
  assert paths.mtime(paths.join(root, 'absent')) is None

  metrics = paths.join(root, 'metrics.jsonl')
  paths.append(metrics, '{"step": 1}\n')
  paths.append(metrics, b'{"step": 2}\n')
  appender = paths.Appender(metrics, flush_seconds=3600)
  appender.write('{"step": 3}\n')
  appender.flush()
  paths.append(metrics, '{"step": 4}\n')  # another writer, meanwhile
  appender.write('{"step": 5}\n')
  appender.close()
  assert [json.loads(line)['step'] for line in
          paths.read_text(metrics).splitlines()] == [1, 2, 3, 4, 5]
  paths.update(metrics, lambda old: old.replace(b'{"step": 4}\n', b''))
  assert paths.read_text(metrics).count('step') == 4

  paths.makedirs(paths.join(root, 'checkpoints', '5', 'state'))
  paths.write_atomic(paths.join(root, 'checkpoints', '5', 'state', 'a'), 'x')
  paths.write_atomic(paths.join(root, 'checkpoints', '5', 'b'), b'y')
  assert paths.isdir(paths.join(root, 'checkpoints', '5'))
  paths.rename(paths.join(root, 'checkpoints', '5'),
               paths.join(root, 'checkpoints', '5.corrupt-1'))
  assert paths.listdir(paths.join(root, 'checkpoints')) == ['5.corrupt-1']
  assert paths.read_text(
      paths.join(root, 'checkpoints', '5.corrupt-1', 'state', 'a')) == 'x'
  assert paths.listdir(root) == ['checkpoints', 'config.json',
                                 'metrics.jsonl']
  assert paths.listdir(paths.join(root, 'absent')) == []
  assert paths.remove(config) and not paths.remove(config)


def test_paths_compare_and_swap(root):
  paths.makedirs(root)
  lock = paths.join(root, 'lock')
  first = paths.write_if_version(lock, 'a', None)
  assert first is not None
  assert paths.write_if_version(lock, 'b', None) is None  # exists
  assert paths.read_versioned(lock) == (b'a', first)
  second = paths.write_if_version(lock, 'c', first)
  assert second not in (None, first)
  assert paths.write_if_version(lock, 'd', first) is None  # stale version
  assert not paths.remove_if_version(lock, first)
  assert paths.read_versioned(lock) == (b'c', second)
  assert paths.remove_if_version(lock, second)
  assert paths.read_versioned(lock) == (None, None)


def test_create_only_writes_are_exclusive_on_gcs(gcs):
  """Eight threads create one object at once: exactly one succeeds."""
  lock = f'gs://{gcs.bucket}/race-{uuid.uuid4().hex[:8]}/lock'
  barrier = threading.Barrier(8)
  results = []

  def create(index):
    barrier.wait()
    results.append(paths.write_if_version(lock, f'{index}', None))

  threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  winners = [version for version in results if version is not None]
  assert len(results) == 8 and len(winners) == 1
  assert paths.read_versioned(lock)[1] == winners[0]


def test_lock_on_gcs(gcs, monkeypatch):
  workdir = f'gs://{gcs.bucket}/lock-{uuid.uuid4().hex[:8]}'
  path = paths.join(workdir, 'lock')
  paths.write_atomic(path, json.dumps({'host': 'elsewhere', 'pid': 1}))
  with pytest.raises(workdir_lib.WorkdirLockedError, match="'elsewhere'"):
    workdir_lib.Lock(workdir).acquire()
  # Without heartbeat for LOCK_STALE_SECONDS: taken over.
  monkeypatch.setattr(workdir_lib, 'LOCK_STALE_SECONDS', 0.5)
  time.sleep(1.5)  # GCS's modification times are whole seconds here
  warnings = []
  lock = workdir_lib.Lock(workdir, warn=warnings.append)
  with lock:
    assert json.loads(paths.read_text(path))['pid'] == os.getpid()
    # A second trainer of this host is refused while this one lives.
    with pytest.raises(workdir_lib.WorkdirLockedError, match='in use'):
      workdir_lib.Lock(workdir).acquire()
  assert 'stale lock' in warnings[0] and not paths.exists(path)

  # The heartbeat notices a takeover and never overwrites or deletes the
  # new holder's lock.
  monkeypatch.setattr(workdir_lib, 'LOCK_HEARTBEAT_SECONDS', 0.1)
  warnings.clear()
  with workdir_lib.Lock(workdir, warn=warnings.append):
    time.sleep(0.5)  # a few beats: still ours
    assert not warnings
    paths.write_atomic(path, json.dumps({'host': 'other', 'pid': 2}))
    deadline = time.time() + 10
    while not warnings and time.time() < deadline:
      time.sleep(0.1)
  assert 'taken over' in warnings[0]
  assert json.loads(paths.read_text(path))['host'] == 'other'


def _garble(directory):
  for name in paths.listdir(directory):
    path = paths.join(directory, name)
    if paths.isdir(path):
      _garble(path)
    else:
      paths.write_atomic(path, b'garbage')


def test_corrupt_checkpoint_is_moved_aside_on_gcs(gcs):
  directory = f'gs://{gcs.bucket}/ckpt-{uuid.uuid4().hex[:8]}/checkpoints'
  state = {'params': {'w': jnp.arange(4.0)}, 'step': jnp.int32(0)}
  abstract = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  saver = checkpoint.TrainCheckpointer(directory, async_save=False)
  for step in (1, 2):
    saver.save(step, jax.tree.map(lambda x, s=step: x + s, state),
               {'step': step})
  saver.close()
  _garble(paths.join(directory, '2', 'state'))
  restorer = checkpoint.TrainCheckpointer(directory, async_save=False)
  step, restored, data_state = restorer.restore_latest(abstract)
  restorer.close()
  assert step == 1 and data_state == {'step': 1}
  np.testing.assert_array_equal(restored['params']['w'], np.arange(4.0) + 1)
  names = paths.listdir(directory)
  assert '1' in names and '2' not in names
  assert any(name.startswith('2.corrupt-') for name in names), names


# ----------------------------------------------------------------------------
# The command-line tools on a gs:// workdir.

_TINY_RECIPE = """
import sys
sys.path.insert(0, {tests!r})
from tiny import tiny_config

def get_config():
  return tiny_config({data_dir!r})
"""


def _run(cwd, module, *flags):
  """`python -m module flags` in `cwd` (not the repository: a stray local
  folder would show there), with vit_jax importable."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  return subprocess.run([sys.executable, '-m', module, *flags], cwd=cwd,
                        env=env, capture_output=True, text=True, timeout=1800)


def _download(directory, local):
  os.makedirs(local)
  for name in paths.listdir(directory):
    with open(os.path.join(local, name), 'wb') as f:
      f.write(paths.read_bytes(paths.join(directory, name)))


def test_train_resume_and_evaluate_a_gcs_workdir(gcs, data_dir, tmp_path):
  workdir = f'gs://{gcs.bucket}/run'
  recipe = tmp_path / 'tiny_recipe.py'  # tests/support/tiny.py's 10-step run
  recipe.write_text(_TINY_RECIPE.format(
      tests=os.path.join(ROOT, 'tests', 'support'), data_dir=data_dir))
  common = [f'--config={recipe}', f'--workdir={workdir}']
  first = _run(tmp_path, 'vit_jax.main', *common)
  assert first.returncode == 0, first.stderr
  assert paths.read_json(paths.join(workdir, 'done'))['step'] == 10
  second = _run(tmp_path, 'vit_jax.main', *common, '--config.total_steps=15',
                '--allow_config_change=total_steps')
  assert second.returncode == 0, second.stderr
  assert f'Resuming from step 10 of 15 in {workdir}' in second.stderr
  evaluated = _run(tmp_path, 'vit_jax.evaluate', f'--workdir={workdir}')
  assert evaluated.returncode == 0, evaluated.stderr
  assert 'step 15: val/accuracy' in evaluated.stdout

  names = paths.listdir(workdir)
  assert names == ['checkpoints', 'config.json', 'config_history', 'done',
                   'metrics.jsonl', 'summary.json', 'tb'], names
  summary = compute.read_summary(workdir)
  assert (summary['step'], summary['images_seen']) == (15, 15 * 32)
  assert workdir_lib.read_config(workdir).total_steps == 15
  (previous,) = paths.listdir(paths.join(workdir, 'config_history'))
  assert json.loads(paths.read_text(paths.join(
      workdir, 'config_history', previous)))['total_steps'] == 10
  assert paths.read_json(paths.join(workdir, 'done'))['step'] == 15
  assert checkpoint.TrainCheckpointer(
      paths.join(workdir, 'checkpoints'),
      read_only=True).all_steps() == [5, 10, 15]
  rows = train.read_metrics(workdir)
  assert [r['step'] for r in rows if 'train/loss' in r] == [5, 10, 15]
  # Training evaluated at 10 and 15, vit_jax.evaluate at 15 again.
  assert [r['step'] for r in rows if 'val/accuracy' in r] == [10, 15, 15]

  # TensorBoard reads the event files (one per writer) as uploaded.
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  tb = str(tmp_path / 'tb')
  _download(paths.join(workdir, 'tb'), tb)
  assert len(os.listdir(tb)) == 3
  events = event_accumulator.EventAccumulator(tb)
  events.Reload()
  assert [e.step for e in events.Scalars('train/loss')] == [5, 10, 15]
  assert [e.step for e in events.Scalars('val/accuracy')] == [10, 15, 15]

  # init_from 'own' reads the gs:// run (its config.json and checkpoint).
  model = workdir_lib.read_config(workdir).model.to_dict()
  name = model.pop('name')
  model.pop('dtype', None)
  if model.get('variant') is None:
    model.pop('variant', None)
  loaded = weights.load_init_params('own', workdir, name, image_size=8,
                                    **model)['params']
  saved = checkpoint.restore_params(paths.join(workdir, 'checkpoints'))
  for got, expected in zip(jax.tree.leaves(loaded), jax.tree.leaves(saved),
                           strict=True):
    np.testing.assert_array_equal(got, expected)

  # Nothing went to a local folder named after the URL.
  for folder in (str(tmp_path), ROOT):
    assert not any(n.startswith('gs:') for n in os.listdir(folder))


@pytest.mark.parametrize('module, workdir, scheme', [
    ('vit_jax.main', 's3://bucket/run', "'s3://'"),
    ('vit_jax.evaluate', 'gs:/bucket/run', "'gs'"),
])
def test_unsupported_workdirs_are_refused_at_start_up(tmp_path, module,
                                                      workdir, scheme):
  flags = [f'--workdir={workdir}']
  if module == 'vit_jax.main':
    flags.append(f'--config={os.path.join(ROOT, "configs", "digits.py")}')
  result = _run(tmp_path, module, *flags)
  assert result.returncode == 2, result.stderr
  (line,) = result.stderr.strip().splitlines()
  assert scheme in line and 'supported: local paths and gs://' in line, line
  assert os.listdir(tmp_path) == []


@pytest.mark.parametrize('path, message', [
    ('s3://bucket/run', r"Unsupported scheme 's3://' in 's3://bucket/run'; "
                        r'supported: local paths and gs://\.'),
    ('gcs://bucket/run', r"'gcs://'.*Google Cloud Storage is 'gs://'"),
    ('gs:bucket/run', r"missing \(scheme 'gs'\)"),
    ('gs://Bucket/run', r"'Bucket' is not a valid bucket name"),
    ('gs:///run', r"'' is not a valid bucket name"),
])
def test_check_supported_names_the_problem(path, message):
  with pytest.raises(ValueError, match=message):
    paths.check_supported(path)
  with pytest.raises(ValueError, match=message):
    paths.Path(path)


def test_local_paths_are_supported(tmp_path):
  for path in (str(tmp_path), 'relative/dir', 'a:b', './gs:bucket', 'C:/x'):
    paths.check_supported(path)
  assert paths.join('gs://b-1/run', 'tb', 'x') == 'gs://b-1/run/tb/x'
  assert paths.parent('gs://b-1/run/checkpoints/') == 'gs://b-1/run'
  assert paths.absolute('gs://b-1/run') == 'gs://b-1/run'
  assert paths.absolute('run') == os.path.abspath('run')


def test_no_helper_turns_a_mistyped_url_into_a_local_folder(tmp_path,
                                                            monkeypatch):
  monkeypatch.chdir(tmp_path)
  for write in (lambda: paths.makedirs('gs:/bucket/run'),
                lambda: paths.write_atomic('gs:/bucket/run/x', 'a'),
                lambda: paths.append('gs:bucket/x', 'a'),
                lambda: paths.Appender('s3://bucket/x')):
    with pytest.raises(ValueError, match='supported: local paths and gs://'):
      write()
  assert os.listdir(tmp_path) == []
