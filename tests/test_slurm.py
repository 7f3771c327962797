"""The SLURM back end on a real one-node cluster (the `slurm_cluster`
fixture: slurm-wlm 22.05 and munge, tests/support/slurm_cluster.py)."""

import json
import os
import re
import sys
import time
import subprocess

import jax
import numpy as np

from vit_jax import checkpoint
from vit_jax.launch import record as record_lib
from vit_jax.launch import status as status_lib
from vit_jax.launch import sweep as sweep_lib

from test_launch import ROOT, tiny_fixed, write_sweep


def _launch(cluster, *args, env=None, check=0):
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.launch', *args], cwd=ROOT,
      env=cluster.full_env(**(env or {})), capture_output=True, text=True,
      timeout=1800)
  if check is not None:
    assert result.returncode == check, result.stdout + result.stderr
  return result


def _statuses(cluster, sweep_dir):
  result = _launch(cluster, 'status', f'--sweep_dir={sweep_dir}',
                   '--format=json')
  return {row['name']: row for row in map(json.loads,
                                          result.stdout.splitlines())}


def _wait_settled(cluster, sweep_dir, timeout=1800):
  """Until no run is pending or running; the final statuses."""
  deadline = time.time() + timeout
  while True:
    got = _statuses(cluster, sweep_dir)
    if all(s['state'] not in ('pending', 'running') for s in got.values()):
      return got
    assert time.time() < deadline, (got, cluster.log_tails())
    time.sleep(1)


def _logs(sweep_dir):
  logs = sweep_dir / 'logs'
  return '\n'.join(p.read_text() for p in sorted(logs.glob('slurm-*.log')))


def test_slurm_sweep_runs_fails_and_resumes_only_the_failed_run(
    slurm_cluster, tmp_path, data_dir):
  """3 runs in one job array; the third fails in the trainer (its batch of
  36 does not split over 8 devices): `status` says 2 done, 1 failed with
  its error line; `resume` on a 4-device machine reruns only it. A
  cooldown branch of the first, in an array of its own, waits for it
  (`--dependency=afterany`) and starts from its checkpoint. The third
  run's own resources (a longer time limit) put it in an array of its
  own, which SLURM holds with that limit."""
  runs = sweep_lib.zipped(lr=[1e-3, 2e-3, 3e-3], batch_size=[32, 32, 36])
  runs += sweep_lib.branches(runs[0], [2], cooldown_fraction=0.5)
  fixed = tiny_fixed(data_dir, **{'schedule.decay': 'constant'})
  del fixed['batch_size']
  sweep_file = write_sweep(
      tmp_path / 'three.py', runs, fixed,
      resources="lambda run: {'time': '12'} if run['batch_size'] == 36 "
      "else {}")
  sweep_dir = tmp_path / 'sweep'
  # The shipped --slurm_setup example activates the venv VIT_JAX_VENV names.
  result = _launch(slurm_cluster, f'--sweep={sweep_file}',
                   f'--sweep_dir={sweep_dir}', '--backend=slurm',
                   '--slurm_throttle=2', '--slurm_time=10',
                   '--slurm_setup=launch/slurm_setup.sh',
                   env={'VIT_JAX_VENV': sys.prefix})
  assert result.stdout.count('Submitted array job') == 3, result.stdout
  record = record_lib.read(str(sweep_dir))
  trunks, longer, branches = record['submissions'][0]['jobs']
  runs_names = sweep_lib.run_names(runs)
  assert (trunks['tasks'], longer['tasks'], longer['resources']) == (
      {'0': runs_names[0], '1': runs_names[1]}, {'2': runs_names[2]},
      {'time': '12'})
  limits = {}
  for job in (trunks, longer):  # asked while SLURM still knows the jobs
    shown = slurm_cluster.run('scontrol', 'show', 'job', job['job_id']).stdout
    limits[job['job_id']] = set(re.findall(r'TimeLimit=(\S+)', shown))
  assert limits == {trunks['job_id']: {'00:10:00'},
                    longer['job_id']: {'00:12:00'}}, limits
  with open(branches['script']) as f:
    assert f'#SBATCH --dependency=afterany:{trunks["job_id"]}_0\n' in f.read()
  # The jobs run a snapshot of the checkout's tracked files, not ROOT.
  with open(trunks['script']) as f:
    (cd_line,) = [line for line in f if line.startswith('cd ')]
  code = cd_line.split()[1]
  assert code.startswith(str(sweep_dir / 'logs' / 'code-')), cd_line
  tracked = subprocess.run(['git', '-C', ROOT, 'ls-files'], check=True,
                           capture_output=True, text=True).stdout.split()
  for name in ('vit_jax/main.py', 'configs/digits.py'):
    assert name in tracked
    with open(os.path.join(ROOT, name)) as a, open(
        os.path.join(code, name)) as b:
      assert a.read() == b.read(), name
  assert sorted(os.path.relpath(os.path.join(d, f), code)
                for d, _, files in os.walk(code) for f in files
                if '__pycache__' not in d) == sorted(
                    n for n in tracked if os.path.isfile(
                        os.path.join(ROOT, n)))
  got = _wait_settled(slurm_cluster, sweep_dir)
  names = list(got)
  assert names[3] == 'lr=0.001,batch_size=32,branch=2+2'
  assert [got[n]['state'] for n in names] == [
      'done', 'done', 'failed', 'done'], (got, _logs(sweep_dir))
  assert 'divisible' in got[names[2]]['error'], got[names[2]]
  assert all(got[n]['step'] == 4 for n in (names[:2] + names[3:]))
  assert 'Branching from step 2 of' in (
      sweep_dir / 'logs' / f'{names[3]}.log').read_text()
  for name in names:
    log = (sweep_dir / 'logs' / f'{name}.log').read_text()
    assert f'=== setup: {sys.prefix}/bin/python3, host ' in log, log
  table = _launch(slurm_cluster, 'status', f'--sweep_dir={sweep_dir}').stdout
  assert table.splitlines()[-1] == '3 done, 1 failed'
  # Each run's latest log, by name.
  assert 'lr=0.002' in (sweep_dir / 'logs' /
                        'lr=0.002,batch_size=32.log').read_text()

  four_devices = {'XLA_FLAGS': os.environ['XLA_FLAGS'].replace(
      'device_count=8', 'device_count=4')}
  _launch(slurm_cluster, 'resume', f'--sweep_dir={sweep_dir}',
          env=four_devices)
  # Queued or running in SLURM: a second resume submits nothing.
  again = _launch(slurm_cluster, 'resume', f'--sweep_dir={sweep_dir}')
  assert 'Nothing to launch' in again.stdout, again.stdout
  record = record_lib.read(str(sweep_dir))
  assert [s['runs'] for s in record['submissions']] == [names, [names[2]]]
  got = _wait_settled(slurm_cluster, sweep_dir)
  assert all(s['state'] == 'done' and s['step'] == 4 for s in got.values()), (
      got, _logs(sweep_dir))
  table = _launch(slurm_cluster, 'status', f'--sweep_dir={sweep_dir}').stdout
  assert table.splitlines()[-1] == '4 done'


def test_slurm_requeued_run_resumes_bit_identically(slurm_cluster, tmp_path,
                                                    data_dir):
  fixed = tiny_fixed(data_dir, total_steps=40, eval_every_steps=40,
                     **{'checkpoint.every_steps': 10})
  sweep_file = write_sweep(tmp_path / 'one.py', [{'lr': 1e-3}], fixed)
  sweep_dir = tmp_path / 'sweep'
  _launch(slurm_cluster, f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
          '--backend=slurm')
  record = record_lib.read(str(sweep_dir))
  task = f'{record["submissions"][0]["jobs"][0]["job_id"]}_0'
  run = record['runs'][0]

  # The uninterrupted run, meanwhile, in a workdir of its own.
  reference = tmp_path / 'reference'
  args = [a if not a.startswith('--workdir=') else f'--workdir={reference}'
          for a in run['args']]
  uninterrupted = subprocess.Popen([sys.executable, *args], cwd=ROOT,
                                   stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)

  deadline = time.time() + 600
  while (status_lib.last_metrics(run['workdir'], 'train/loss')[0] or 0) < 12:
    assert time.time() < deadline, (_logs(sweep_dir),
                                    slurm_cluster.log_tails())
    time.sleep(0.5)
  slurm_cluster.run('scontrol', 'requeue', task)
  got = _wait_settled(slurm_cluster, sweep_dir)
  assert got[run['name']]['state'] == 'done', (got, _logs(sweep_dir))
  output, _ = uninterrupted.communicate(timeout=1800)
  assert uninterrupted.returncode == 0, output

  logs = _logs(sweep_dir)
  assert 'attempt 2' in logs and 'Resuming from step' in logs, logs
  resumed = checkpoint.restore_params(os.path.join(run['workdir'],
                                                   'checkpoints'), 40)
  expected = checkpoint.restore_params(str(reference / 'checkpoints'), 40)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(expected),
                  strict=True):
    np.testing.assert_array_equal(a, b)


def test_slurm_time_limit_saves_and_requeues(slurm_cluster, tmp_path,
                                            data_dir):
  """--slurm_time=5 (minutes) with the early signal 240 s before: the run
  saves, its task requeues itself, and the next attempt resumes. Then
  `cancel`: the run saves and stops, preempted, not requeued. (The signal
  comes 60-90 s into an attempt; the 4 minutes to the limit leave a
  loaded machine time to finish compiling the step and save. With 1
  minute, once in CI, the limit killed an attempt that was still
  saving.)"""
  fixed = tiny_fixed(data_dir, total_steps=100000, log_every_steps=10,
                     eval_every_steps=100000,
                     **{'checkpoint.every_steps': 100000})
  sweep_file = write_sweep(tmp_path / 'long.py', [{'lr': 1e-3}], fixed)
  sweep_dir = tmp_path / 'sweep'
  _launch(slurm_cluster, f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
          '--backend=slurm', '--slurm_time=5', '--slurm_signal_seconds=240')
  # The signal comes 60-90 s into an attempt (slurmctld looks every
  # ~30 s); attempt 2 is cancelled as soon as it has resumed, well before.
  deadline = time.time() + 900
  while 'Resuming from step' not in _logs(sweep_dir):
    assert time.time() < deadline, (_logs(sweep_dir),
                                    slurm_cluster.log_tails())
    time.sleep(1)
  result = _launch(slurm_cluster, 'cancel', f'--sweep_dir={sweep_dir}')
  assert 'Sent SIGTERM to 1 running runs' in result.stdout
  got = _wait_settled(slurm_cluster, sweep_dir)['lr=0.001']
  logs = _logs(sweep_dir)
  assert got['state'] == 'preempted', (got, logs)
  attempts = re.split(r'attempt \d+\n', logs)[1:]
  assert 'exited with status 3' in attempts[0], attempts[0]
  assert '=== requeueing' in attempts[0], attempts[0]
  assert 'Resuming from step' in attempts[1], attempts[1]
  assert 'exited with status 3' in attempts[1], attempts[1]
  # Under load attempt 2's early signal can come before the cancel does;
  # then attempt 3 sees the cancel's mark and does not start.
  for later in attempts[2:]:
    assert 'cancelled (launch cancel), not started' in later, later
    assert 'Resuming from step' not in later, later
  assert logs.count('Resuming from step') == 1, logs
  assert 'DUE TO TIME LIMIT' not in logs
  # Saved on the signal: the checkpoint is at the last step reached.
  workdir = os.path.join(str(sweep_dir), 'lr=0.001')
  steps = checkpoint.TrainCheckpointer(os.path.join(workdir, 'checkpoints')
                                       ).all_steps()
  assert steps and got['step'] <= steps[-1] < 100000


_SAVING_TRAINER = '''
import signal, sys, time
def stop(*_):
  print('saving', flush=True)
  time.sleep(2)
  sys.exit(3)
signal.signal(signal.SIGTERM, stop)
print('training', flush=True)
while True:
  time.sleep(0.1)
'''


def _stand_in_array(cluster, tmp_path, name):
  """Submits the back end's batch script for one run whose command is a
  stand-in trainer (saves on SIGTERM, exits 3); (task, log path)."""
  from vit_jax.launch import slurm as slurm_lib  # pylint: disable=g-import-not-at-top
  log_dir = tmp_path / 'logs'
  log_dir.mkdir(exist_ok=True)
  run = {'index': 0, 'name': name, 'workdir': str(tmp_path / name),
         'args': ['-c', _SAVING_TRAINER]}
  settings = {'python': sys.executable, 'nodes': 1, 'signal_seconds': 60}
  script = slurm_lib.batch_script({'code_dir': ROOT, 'sweep_file': 'x.py'},
                                  [run], settings, str(log_dir), 0, [0], name)
  job = cluster.sbatch(script)
  return job, f'{job}_0', log_dir / f'slurm-{job}_0.log'


def _wait_for(path, text, timeout=1800):
  deadline = time.time() + timeout
  while not (path.exists() and text in path.read_text()):
    assert time.time() < deadline, path.read_text() if path.exists() else ''
    time.sleep(0.2)


def test_slurm_cancel_wins_over_the_early_signal(slurm_cluster, tmp_path):
  """The time-limit signal (USR1) and then a cancel (TERM) in one attempt:
  the run saves once and is not requeued. A task requeued before its
  array's cancel mark was written does not start again."""
  job, task, log = _stand_in_array(slurm_cluster, tmp_path, 'race')
  _wait_for(log, 'training')
  slurm_cluster.run('scancel', '--batch', '--signal=USR1', task)
  _wait_for(log, 'saving')
  slurm_cluster.run('scancel', '--batch', '--signal=TERM', task)
  states = slurm_cluster.wait_ended(job)
  text = log.read_text()
  assert 'exited with status 3' in text and '=== requeueing' not in text, text
  assert slurm_cluster.show_job(task)['Restarts'] == '0', states

  # Without the TERM the same signal requeues the task; a cancel mark
  # written meanwhile (as `launch cancel` does first) stops attempt 2.
  job, task, log = _stand_in_array(slurm_cluster, tmp_path, 'marked')
  _wait_for(log, 'training')
  slurm_cluster.run('scancel', '--batch', '--signal=USR1', task)
  _wait_for(log, '=== requeueing')
  (tmp_path / 'logs' / f'cancelled-{job}').write_text('now\n')
  _wait_for(log, 'not started')
  slurm_cluster.wait_ended(job)
  text = log.read_text()
  assert text.count('training') == 1 and 'attempt 2' in text, text
