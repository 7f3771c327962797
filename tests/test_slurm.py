"""The SLURM back end on a real one-node cluster (the `slurm_cluster`
fixture: slurm-wlm 22.05 and munge, tests/slurm_cluster.py)."""

import json
import os
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
      timeout=600)
  if check is not None:
    assert result.returncode == check, result.stdout + result.stderr
  return result


def _statuses(cluster, sweep_dir):
  result = _launch(cluster, 'status', f'--sweep_dir={sweep_dir}',
                   '--format=json')
  return {row['name']: row for row in map(json.loads,
                                          result.stdout.splitlines())}


def _wait_settled(cluster, sweep_dir, timeout=600):
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
  its error line; `resume` on a 4-device machine reruns only it."""
  runs = sweep_lib.zipped(lr=[1e-3, 2e-3, 3e-3], batch_size=[32, 32, 36])
  fixed = tiny_fixed(data_dir)
  del fixed['batch_size']
  sweep_file = write_sweep(tmp_path / 'three.py', runs, fixed)
  sweep_dir = tmp_path / 'sweep'
  result = _launch(slurm_cluster, f'--sweep={sweep_file}',
                   f'--sweep_dir={sweep_dir}', '--backend=slurm',
                   '--slurm_throttle=2', '--slurm_time=10')
  assert 'Submitted array job' in result.stdout
  got = _wait_settled(slurm_cluster, sweep_dir)
  names = list(got)
  assert [got[n]['state'] for n in names] == ['done', 'done', 'failed'], (
      got, _logs(sweep_dir))
  assert 'divisible' in got[names[2]]['error'], got[names[2]]
  assert all(got[n]['step'] == 4 for n in names[:2])
  table = _launch(slurm_cluster, 'status', f'--sweep_dir={sweep_dir}').stdout
  assert table.splitlines()[-1] == '2 done, 1 failed'
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
  assert table.splitlines()[-1] == '3 done'


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
  output, _ = uninterrupted.communicate(timeout=600)
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
  """--slurm_time=2 (minutes) with the early signal 60 s before: the run
  saves, its task requeues itself, and the next attempt resumes. Then
  `cancel`: the run saves and stops, preempted, not requeued."""
  fixed = tiny_fixed(data_dir, total_steps=100000, log_every_steps=10,
                     eval_every_steps=100000,
                     **{'checkpoint.every_steps': 100000})
  sweep_file = write_sweep(tmp_path / 'long.py', [{'lr': 1e-3}], fixed)
  sweep_dir = tmp_path / 'sweep'
  _launch(slurm_cluster, f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
          '--backend=slurm', '--slurm_time=2', '--slurm_signal_seconds=60')
  # The signal comes 60-90 s into an attempt (slurmctld looks every
  # ~30 s); attempt 2 is cancelled as soon as it has resumed, well before.
  deadline = time.time() + 400
  while 'Resuming from step' not in _logs(sweep_dir):
    assert time.time() < deadline, (_logs(sweep_dir),
                                    slurm_cluster.log_tails())
    time.sleep(1)
  result = _launch(slurm_cluster, 'cancel', f'--sweep_dir={sweep_dir}')
  assert 'Sent SIGTERM to 1 running runs' in result.stdout
  got = _wait_settled(slurm_cluster, sweep_dir)['lr=0.001']
  logs = _logs(sweep_dir)
  assert got['state'] == 'preempted', (got, logs)
  assert logs.count('=== requeued') == 1 and 'attempt 3' not in logs, logs
  first_attempt, second_attempt = logs.split('attempt 2')
  assert 'exited with status 3' in first_attempt, first_attempt
  assert 'exited with status 3' in second_attempt, second_attempt
  assert 'DUE TO TIME LIMIT' not in logs
  # Saved on the signal: the checkpoint is at the last step reached.
  workdir = os.path.join(str(sweep_dir), 'lr=0.001')
  steps = checkpoint.TrainCheckpointer(os.path.join(workdir, 'checkpoints')
                                       ).all_steps()
  assert steps and got['step'] <= steps[-1] < 100000
