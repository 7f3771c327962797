"""The launcher under faults and bad input (issue 25): two launchers on one
sweep, a workdir lock's refusal, runs killed by a signal, several attempts
in one log, a sweep file that does not run, a metric no run logs, an image
folder run without a folder, and a dry run on unreachable storage."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from vit_jax import workdir as workdir_lib
from vit_jax.launch import failure
from vit_jax.launch import status as status_lib
from vit_jax.launch import sweep as sweep_lib

from test_launch import launch, statuses, tiny_fixed, write_sweep
from tiny import ROOT

TIMEOUT = 1800  # generous: the CI machine may be loaded


def _start(sweep_file, sweep_dir, *more):
  return subprocess.Popen(
      [sys.executable, '-m', 'vit_jax.launch', f'--sweep={sweep_file}',
       f'--sweep_dir={sweep_dir}', *more], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True)


def _one_line(stderr):
  lines = stderr.strip().splitlines()
  assert len(lines) == 1, stderr
  return lines[0]


# ----------------------------------------------------------------------------
# Two launchers on one sweep directory.


def test_two_launchers_started_together_one_is_refused(tmp_path, data_dir):
  """Of two launchers started together on one sweep directory, one runs
  the sweep; the other is refused (one line, exit 2) and launches
  nothing: one attempt in the run's log, `done`, no `error`."""
  sweep_file = write_sweep(tmp_path / 'one.py', [{'lr': 1e-3}], tiny_fixed(
      data_dir, total_steps=40, log_every_steps=10, eval_every_steps=40,
      **{'checkpoint.every_steps': 40}))
  sweep_dir = tmp_path / 'sweep'
  first, second = _start(sweep_file, sweep_dir), _start(sweep_file,
                                                        sweep_dir)
  results = [p.communicate(timeout=TIMEOUT) + (p.returncode,)
             for p in (first, second)]
  codes = sorted(code for _, _, code in results)
  assert codes == [0, 2], results
  _, refusal, _ = next(r for r in results if r[2] == 2)
  line = _one_line(refusal)
  assert 'in use by another launcher' in line, line
  assert f'pid {first.pid}' in line or f'pid {second.pid}' in line, line
  workdir = sweep_dir / 'lr=0.001'
  assert (workdir / 'done').exists()
  assert not (workdir / 'error').exists(), (workdir / 'error').read_text()
  log = (sweep_dir / 'logs' / 'lr=0.001.log').read_text()
  assert log.count('\n=== ') == 1, log  # one attempt, not two interleaved
  record = json.loads((sweep_dir / 'sweep.json').read_text())
  assert len(record['submissions']) == 1
  assert not (sweep_dir / 'launcher.lock').exists()  # released at the end
  assert statuses(sweep_dir)['lr=0.001']['state'] == 'done'
  # The launcher's metric pre-check (`sweep.logged_metrics`, JAX-free)
  # knows what a run logs: every name this run wrote is in it, and every
  # evaluation name in it was written.
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  expected = set(sweep_lib.logged_metrics(workdir_lib.read_config(
      str(workdir))))
  written = {key for row in train.read_metrics(str(workdir))
             for key in row if key != 'step'}
  assert written <= expected, written - expected
  evaluations = {name for name in expected
                 if not name.startswith(('train/', 'compute/'))}
  assert evaluations and evaluations <= written, evaluations - written


def test_a_launcher_is_refused_while_another_holds_a_gs_sweep(tmp_path,
                                                              gcs):
  """The sweep lock on gs:// (the GCS emulator): held by a live process,
  a launcher (and `resume`) is refused in one line and writes nothing;
  released, the lock can be taken again."""
  from vit_jax.launch import lock as lock_lib  # pylint: disable=g-import-not-at-top
  sweep_dir = f'gs://{gcs.bucket}/locked-sweep'
  held = lock_lib.SweepLock(sweep_dir)
  held.acquire()
  try:
    with pytest.raises(lock_lib.SweepLockedError,
                       match='in use by another launcher'):
      lock_lib.SweepLock(sweep_dir).acquire()
    sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}],
                             {'total_steps': 100})
    result = launch(f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
                    f'--logs={tmp_path / "logs"}', timeout=TIMEOUT)
    assert result.returncode == 2, result.stdout + result.stderr
    line = _one_line(result.stderr)
    assert 'in use by another launcher' in line and str(os.getpid()) in line
    assert not (tmp_path / 'logs').exists()
    from vit_jax import paths  # pylint: disable=g-import-not-at-top
    assert paths.listdir(sweep_dir) == ['launcher.lock']
  finally:
    held.release()
  again = lock_lib.SweepLock(sweep_dir)
  again.acquire()
  again.release()


def test_resume_is_refused_while_another_launcher_holds_the_sweep(
    tmp_path, data_dir):
  """`resume` of a sweep whose launcher lock a live process holds: one
  line, exit 2, nothing launched; once released, `resume --dry_run`
  lists the run."""
  from vit_jax.launch import lock as lock_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.launch import record as record_lib  # pylint: disable=g-import-not-at-top
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}],
                           tiny_fixed(data_dir))
  sweep_dir = str(tmp_path / 'sweep')
  record_lib.write(sweep_dir, record_lib.new(
      sweep_lib.load(sweep_file, sweep_dir, ROOT), ROOT, 'local',
      {'parallel': 1, 'gpus_per_run': None, 'python': sys.executable}))
  held = lock_lib.SweepLock(sweep_dir)
  held.acquire()
  try:
    result = launch('resume', f'--sweep_dir={sweep_dir}', timeout=TIMEOUT)
    assert result.returncode == 2, result.stdout + result.stderr
    assert 'in use by another launcher' in _one_line(result.stderr)
    assert sorted(os.listdir(sweep_dir)) == ['launcher.lock', 'sweep.json']
  finally:
    held.release()
  result = launch('resume', f'--sweep_dir={sweep_dir}', '--dry_run',
                  timeout=TIMEOUT, check=0)
  assert '--workdir=' in result.stdout
  assert sorted(os.listdir(sweep_dir)) == ['sweep.json']


def test_a_dead_launchers_lock_is_taken_over(tmp_path):
  from vit_jax.launch import lock as lock_lib  # pylint: disable=g-import-not-at-top
  sweep_dir = tmp_path / 'sweep'
  sweep_dir.mkdir()
  (sweep_dir / 'launcher.lock').write_text(json.dumps(
      {'host': socket.gethostname(), 'pid': 2 ** 22 + 1,
       'started': '2026-01-01 00:00:00'}))
  warnings = []
  lock = lock_lib.SweepLock(str(sweep_dir), warn=warnings.append)
  lock.acquire()
  try:
    assert json.loads((sweep_dir / 'launcher.lock').read_text())[
        'pid'] == os.getpid()
    assert warnings and 'stale' in warnings[0]
  finally:
    lock.release()
  assert not (sweep_dir / 'launcher.lock').exists()


def test_a_run_whose_workdir_another_trainer_holds_gets_no_error(
    tmp_path, data_dir):
  """A trainer started by hand holds a run's workdir; the launcher's
  trainer for that run is refused by the workdir lock. That refusal is
  not the run's failure: no `error` goes into the other trainer's
  workdir, and the run shows as running."""
  sweep_file = write_sweep(tmp_path / 'one.py', [{'lr': 1e-3}], tiny_fixed(
      data_dir, total_steps=100000, log_every_steps=10,
      eval_every_steps=100000, **{'checkpoint.every_steps': 100000}))
  sweep_dir = tmp_path / 'sweep'
  run = sweep_lib.load(sweep_file, str(sweep_dir), ROOT).runs[0]
  workdir = sweep_dir / run.name
  trainer = subprocess.Popen([sys.executable, *run.args], cwd=ROOT,
                             stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
  try:
    deadline = time.time() + TIMEOUT
    while workdir_lib.lock_holder(str(workdir)) is None:
      assert time.time() < deadline and trainer.poll() is None
      time.sleep(0.2)
    result = launch(f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
                    timeout=TIMEOUT)
    log = (sweep_dir / 'logs' / f'{run.name}.log').read_text()
    assert 'in use by another trainer' in log, result.stdout + log
    assert result.returncode == 1, result.stdout + result.stderr
    assert not (workdir / 'error').exists(), (workdir / 'error').read_text()
    assert statuses(sweep_dir)[run.name]['state'] == 'running'
  finally:
    trainer.send_signal(signal.SIGTERM)
    trainer.wait(timeout=TIMEOUT)
  assert not (workdir / 'error').exists()


def _attempt_log(path, *lines):
  path.write_text(
      '\n=== 2026-01-01 00:00:00 host slot slot 0 ===\n'
      'OLD ATTEMPT step 5\nOLD ATTEMPT ValueError: earlier\n'
      '\n=== 2026-01-01 01:00:00 host slot slot 0 ===\n' +
      ''.join(line + '\n' for line in lines))
  return str(path)


def test_a_workdir_lock_refusal_is_not_recorded_as_a_failure(tmp_path):
  """The trainer refused by the workdir lock (another trainer runs there)
  did not fail the run: no `error` goes into a workdir the launcher does
  not own."""
  workdir = tmp_path / 'r'
  workdir.mkdir()
  refused = ('vit_jax.main: /x/r is in use by another trainer: host '
             "'h', pid 7 (since 2026-01-01 00:00:00). Stop it first; ...")
  log = _attempt_log(tmp_path / 'r.log', refused)
  assert not failure.record(str(workdir), 1, log, time.time())
  assert not (workdir / 'error').exists()
  # A live trainer on this host holds the workdir: not this attempt's.
  (workdir / 'lock').write_text(json.dumps(
      {'host': socket.gethostname(), 'pid': os.getpid()}))
  log = _attempt_log(tmp_path / 'r2.log', 'Traceback', 'Killed')
  assert not failure.record(str(workdir), -9, log, time.time())
  assert not (workdir / 'error').exists()
  (workdir / 'lock').unlink()
  assert failure.record(str(workdir), -9, log, time.time())


# ----------------------------------------------------------------------------
# The launcher's `error`: the latest attempt, and the cause.


@pytest.mark.parametrize('header', [
    '=== 2026-01-01 01:00:00 host slot slot 0 CUDA_VISIBLE_DEVICES=0,1 ===',
    '=== 2026-01-01 01:00:00 17_3 run lr=0.001 on node1, attempt 2'])
def test_the_error_excerpt_comes_from_the_latest_attempt(tmp_path, header):
  log = tmp_path / 'r.log'
  log.write_text(
      '=== 2026-01-01 00:00:00 17_3 run lr=0.001 on node1, attempt 1\n'
      'OLD ATTEMPT step 10\n'
      '=== 2026-01-01 00:30:00 17_3 run lr=0.001 exited with status 3\n'
      '=== requeueing 17_3\n'
      f'{header}\nstep 20\nRuntimeError: new\n'
      '=== 2026-01-01 01:10:00 17_3 run lr=0.001 exited with status 1\n')
  workdir = tmp_path / 'r'
  assert failure.record(str(workdir), 1, str(log), time.time())
  text = (workdir / 'error').read_text()
  assert 'OLD ATTEMPT' not in text, text
  assert 'step 20' in text
  assert text.splitlines()[-1] == 'RuntimeError: new'


def test_status_shows_killed_by_signal_for_a_killed_run(tmp_path):
  """The error column of a run the launcher recorded as killed says so,
  not the log's last progress line (also for the older wording)."""
  log = tmp_path / 'r.log'
  log.write_text('=== 2026-01-01 00:00:00 host slot slot 0 ===\n'
                 'step 30/100  loss 1.23  900 img/s\n')
  run = {'name': 'r', 'workdir': str(tmp_path / 'r'), 'total_steps': 100}
  for code in (-9, 137):
    if (tmp_path / 'r' / 'error').exists():
      (tmp_path / 'r' / 'error').unlink()
    assert failure.record(run['workdir'], code, str(log), time.time())
    got = status_lib.run_status(run, 'val/accuracy')
    assert got.state == 'failed'
    assert got.error.startswith('killed by signal 9'), got.error
  (tmp_path / 'r' / 'error').write_text(
      'The run failed (killed by signal 9); the trainer wrote no error. '
      'Written by the launcher at 2026-01-01. The end of its log x:\n'
      'step 30/100  loss 1.23\n')
  got = status_lib.run_status(run, 'val/accuracy')
  assert got.error.startswith('killed by signal 9'), got.error


def test_a_trainer_killed_by_signal_9_shows_so_in_status(tmp_path,
                                                         data_dir):
  """kill -9 of a local run's trainer: the launcher records it, and the
  status table's error column reads 'killed by signal 9'."""
  sweep_file = write_sweep(tmp_path / 'one.py', [{'lr': 1e-3}], tiny_fixed(
      data_dir, total_steps=100000, log_every_steps=10,
      eval_every_steps=100000, **{'checkpoint.every_steps': 100000}))
  sweep_dir = tmp_path / 'sweep'
  launcher = _start(sweep_file, sweep_dir)
  workdir = sweep_dir / 'lr=0.001'
  deadline = time.time() + TIMEOUT
  while not status_lib.last_metrics(str(workdir), 'train/loss')[1]:
    assert time.time() < deadline and launcher.poll() is None
    time.sleep(0.2)
  holder = workdir_lib.lock_holder(str(workdir))
  os.kill(int(holder['pid']), signal.SIGKILL)
  output, errors = launcher.communicate(timeout=TIMEOUT)
  assert launcher.returncode == 1, output + errors
  table = launch('status', f'--sweep_dir={sweep_dir}', check=0,
                 timeout=TIMEOUT).stdout
  row = table.splitlines()[1]
  assert row.split()[:2] == ['lr=0.001', 'failed'], table
  assert 'killed by signal 9' in row, table


# ----------------------------------------------------------------------------
# Checked before launching: one line, exit 2, nothing written.


def _refused(tmp_path, sweep_file, *more):
  sweep_dir = tmp_path / 'sweep'
  result = launch(f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
                  *more, timeout=TIMEOUT)
  assert result.returncode == 2, result.stdout + result.stderr
  line = _one_line(result.stderr)
  assert line.startswith('vit_jax.launch: bad sweep: '), line
  assert not sweep_dir.exists()
  return line


@pytest.mark.parametrize('body, line_number, error, detail', [
    ("def get_sweep(arg=None):\n  return {'config': "
     "'configs/digits.py', 'runs': [{}]\n", 2, 'SyntaxError', ''),
    ("def get_sweep(arg=None):\n  x = 1\n"
     "  return {'config': CONFIG, 'runs': [{}]}\n", 3, 'NameError',
     "'CONFIG'"),
], ids=['syntax_error', 'raises'])
def test_a_broken_sweep_file_is_one_line_naming_its_line(
    tmp_path, body, line_number, error, detail):
  sweep_file = tmp_path / 'broken.py'
  sweep_file.write_text(body)
  line = _refused(tmp_path, sweep_file)
  assert f'{sweep_file}, line {line_number}' in line and error in line, line
  assert detail in line


def test_a_metric_no_run_logs_is_refused(tmp_path, data_dir):
  sweep_file = write_sweep(tmp_path / 'typo.py', [{'lr': 1e-3}],
                           tiny_fixed(data_dir), metric='val/acuracy')
  line = _refused(tmp_path, sweep_file)
  assert "metric 'val/acuracy'" in line, line
  assert "Did you mean 'val/accuracy'?" in line, line


@pytest.mark.parametrize('metric, ok', [
    ('val/accuracy', True), ('train/loss', True), ('compute/flops', True),
    ('fewshot/digits/5shot', True), ('fewshot/digits/5shot_std', True),
    ('fewshot/digits/10shot', False),  # tiny_fixed: shots (1, 5)
    ('fewshot/digit/5shot', False), ('val/acc', False)])
def test_metrics_are_those_the_runs_log(tmp_path, data_dir, metric, ok):
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}],
                           tiny_fixed(data_dir), metric=metric)
  if ok:
    sweep_lib.load(sweep_file, str(tmp_path / 'sd'), ROOT)
  else:
    with pytest.raises(ValueError, match='is not logged by'):
      sweep_lib.load(sweep_file, str(tmp_path / 'sd'), ROOT)


def test_without_val_evaluation_val_metrics_are_refused(tmp_path, data_dir):
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}], tiny_fixed(
      data_dir, eval_every_steps=None), metric='val/accuracy')
  with pytest.raises(ValueError, match="'val/accuracy' is not logged by"):
    sweep_lib.load(sweep_file, str(tmp_path / 'sd'), ROOT)


def test_an_image_folder_run_without_a_folder_is_refused(tmp_path, data_dir):
  sweep_file = write_sweep(tmp_path / 'folder.py', [{'lr': 1e-3}],
                           tiny_fixed(data_dir,
                                      **{'data.name': 'image_folder'}))
  line = _refused(tmp_path, sweep_file)
  assert 'image_folder' in line and 'data.folder' in line, line


def test_a_sweep_sets_any_key_of_the_schema_as_the_command_line_does(
    tmp_path, data_dir):
  """configs/digits.py has no data.folder; a sweep sets it (the
  image-folder route) as `vit_jax.main`'s command line can, its runs'
  command lines parse back to the same config, and a typo is refused."""
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  folder = tmp_path / 'images'
  folder.mkdir()
  fixed = tiny_fixed(data_dir, **{'data.name': 'image_folder',
                                  'data.folder': str(folder)})
  sweep_file = write_sweep(tmp_path / 'folder.py', [{'lr': 1e-3}], fixed)
  sweep = sweep_lib.load(sweep_file, str(tmp_path / 'sd'), ROOT)
  (run,) = sweep.runs
  assert f'--config.data.folder={folder}' in run.args
  recipe = os.path.join(ROOT, 'configs', 'digits.py')
  parsed = config_lib.parse_command_line(
      recipe, [arg for arg in run.args if arg.startswith('--config.')])
  assert parsed.data.folder == str(folder)
  assert 'skip_corrupt' not in parsed.data  # defaults no override set: out
  typo = write_sweep(tmp_path / 'typo.py', [{'lr': 1e-3}],
                     {**fixed, 'data.foldr': str(folder)})
  with pytest.raises(ValueError, match="Did you mean 'folder'"):
    sweep_lib.load(typo, str(tmp_path / 'sd2'), ROOT)


def test_a_dry_run_on_gs_touches_no_storage(tmp_path):
  """--dry_run with a gs:// sweep directory whose endpoint refuses
  connections: the commands are printed, nothing is read or written."""
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}],
                           {'total_steps': 100})
  env = dict(os.environ, STORAGE_EMULATOR_HOST='http://127.0.0.1:9')
  result = launch(f'--sweep={sweep_file}', '--sweep_dir=gs://bucket-x/sd',
                  f'--logs={tmp_path / "logs"}', '--dry_run', env=env,
                  timeout=TIMEOUT)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '--workdir=gs://bucket-x/sd/lr=0.001' in result.stdout
  assert 'not read' in result.stdout
  assert result.stderr.strip() == '', result.stderr
  assert sorted(os.listdir(tmp_path)) == ['s.py']
