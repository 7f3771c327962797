"""The digits scaling study, shrunk (configs/sweeps/digits_scaling.py:small:
two ViT sizes, two cooldown branches each) end to end: the local launcher
runs trunks and branches, `python -m vit_jax.scaling` fits and plots."""

import json
import math
import os
import subprocess
import sys

from vit_jax.launch import record as record_lib

from test_launch import ROOT, statuses


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
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.launch', f'--sweep={sweep_file}',
       f'--sweep_dir={sweep_dir}', '--parallel=2'], cwd=ROOT,
      capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout + result.stderr
  got = statuses(sweep_dir)
  assert sorted(got) == [
      'recipe=vit-s', 'recipe=vit-s,branch=40+13', 'recipe=vit-s,branch=80+27',
      'recipe=vit-xxs', 'recipe=vit-xxs,branch=40+13',
      'recipe=vit-xxs,branch=80+27']
  assert all(s['state'] == 'done' for s in got.values()), got
  # A branch starts only once its trunk's checkpoint exists, and from it.
  log = (sweep_dir / 'logs' / 'recipe=vit-s,branch=80+27.log').read_text()
  assert 'Branching from step 80 of' in log, log
  record = record_lib.read(str(sweep_dir))
  assert [run['after'] and run['after']['step'] for run in record['runs']
          ] == [None, 40, 80, None, 40, 80]

  out = tmp_path / 'plots'
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.scaling',
       f'--workdirs={sweep_dir}/*', '--metric=val/accuracy',
       '--x=compute/flops', f'--out={out}', '--bootstrap=20'],
      cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stdout + result.stderr
  assert '6 runs (6 done, 4 cooldown branches)' in result.stdout, result.stdout
  for stem in ('error_vs_compute', 'error_vs_params', 'error_vs_images_seen'):
    for extension in ('png', 'svg', 'csv'):
      assert (out / f'{stem}.{extension}').stat().st_size > 0
  with open(out / 'fits.json') as f:
    fits = json.load(f)['fits']
  law = next(r for r in fits if r['x'] == 'compute/flops')
  assert law['family'] == 'vit' and law['converged'], law
  assert math.isfinite(law['params']['b']) and law['params']['b'] > 0, law
