"""The digits scaling study, shrunk (configs/sweeps/digits_scaling.py:small:
two ViT sizes, a cooldown branch of each) end to end: the local launcher
runs trunks and branches (and is killed on the way: `resume` finishes the
sweep), `python -m vit_jax.scaling` fits and plots."""

import json
import math
import os
import subprocess
import sys
import time

from vit_jax import workdir as workdir_lib
from vit_jax.launch import record as record_lib

from test_launch import ROOT, statuses, wait_for_training


def test_small_digits_study_sweep_fit_plot(tmp_path, data_dir):
  sweep_file = tmp_path / 'study.py'
  sweep_file.write_text(
      'import importlib.util\n'
      'spec = importlib.util.spec_from_file_location(\n'
      f'    "shipped", {os.path.join(ROOT, "configs/sweeps/digits_scaling.py")!r})\n'
      'shipped = importlib.util.module_from_spec(spec)\n'
      'spec.loader.exec_module(shipped)\n\n'
      'def get_sweep(arg=None):\n'
      '  sweep = shipped.get_sweep("small")\n'
      f'  sweep["fixed"]["data.data_dir"] = {data_dir!r}\n'
      '  return sweep\n')
  sweep_dir = tmp_path / 'study'
  # One CPU device per run (the suite's 8 virtual ones only slow start-up).
  env = dict(os.environ, XLA_FLAGS=os.environ['XLA_FLAGS'].replace(
      'device_count=8', 'device_count=1'))
  # The launcher killed (SIGKILL) while the second trunk trains: its runs
  # get SIGTERM (the parent-death signal), save and stop.
  launcher = subprocess.Popen(
      [sys.executable, '-m', 'vit_jax.launch', f'--sweep={sweep_file}',
       f'--sweep_dir={sweep_dir}', '--parallel=2'], cwd=ROOT, env=env,
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  killed = sweep_dir / 'recipe=vit-s'
  wait_for_training(killed, launcher)
  launcher.kill()
  launcher.wait()
  # Every trainer the launcher started saves and stops (the other trunk
  # may be in its final evaluation, cut short, then saved): `resume`
  # rightly leaves a run alone while its lock is held.
  deadline = time.time() + 1800
  while any(workdir_lib.lock_holder(str(workdir)) is not None
            for workdir in sweep_dir.iterdir() if workdir.is_dir()):
    assert time.time() < deadline
    time.sleep(0.2)
  got = statuses(sweep_dir)
  assert got['recipe=vit-s']['state'] == 'preempted', got
  done = {name: (sweep_dir / name / 'done').stat().st_mtime
          for name, s in got.items() if s['state'] == 'done'}
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.launch', 'resume',
       f'--sweep_dir={sweep_dir}'], cwd=ROOT, env=env, capture_output=True,
      text=True, timeout=1800)
  assert result.returncode == 0, result.stdout + result.stderr
  assert not any(f'started {name} ' in result.stdout for name in done)
  assert 'Resuming from step' in (
      sweep_dir / 'logs' / 'recipe=vit-s.log').read_text()
  got = statuses(sweep_dir)
  assert sorted(got) == [
      'recipe=vit-s', 'recipe=vit-s,branch=80+27', 'recipe=vit-xxs',
      'recipe=vit-xxs,branch=80+27']
  assert all(s['state'] == 'done' for s in got.values()), got
  # A branch starts only once its trunk's checkpoint exists, and from it.
  log = (sweep_dir / 'logs' / 'recipe=vit-s,branch=80+27.log').read_text()
  assert 'Branching from step 80 of' in log, log
  record = record_lib.read(str(sweep_dir))
  assert [run['after'] and run['after']['step'] for run in record['runs']
          ] == [None, 80, None, 80]

  out = tmp_path / 'plots'
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.scaling',
       f'--workdirs={sweep_dir}/*', '--metric=val/accuracy',
       '--x=compute/flops', f'--out={out}', '--bootstrap=20'],
      cwd=ROOT, capture_output=True, text=True, timeout=1800)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '4 runs (4 done, 2 cooldown branches)' in result.stdout, result.stdout
  for stem in ('error_vs_compute', 'error_vs_params', 'error_vs_images_seen'):
    for extension in ('png', 'svg', 'csv'):
      assert (out / f'{stem}.{extension}').stat().st_size > 0
  with open(out / 'fits.json') as f:
    fits = json.load(f)['fits']
  law = next(r for r in fits if r['x'] == 'compute/flops')
  assert law['family'] == 'vit' and law['converged'], law
  assert math.isfinite(law['params']['b']) and law['params']['b'] > 0, law
