"""Scaling laws (vit_jax.scaling): the fits on synthetic and published
data, their robustness, workdirs as a table, plots and the command line.

No training: the workdirs are written here by hand, as vit_jax.main
writes them (config.json, metrics.jsonl, summary.json, done / error).
"""

import json
import math
import os
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pytest

from vit_jax import paths
from vit_jax import scaling
from vit_jax.scaling import fits
from vit_jax.scaling import frontiers

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHINCHILLA_CSV = os.path.join(ROOT, 'tests', 'data',
                              'chinchilla_svg_extracted.csv')

TRUE = {
    'power': {'a': 3e3, 'b': 0.3},
    'power_offset': {'a': 2e4, 'b': 0.35, 'c': 0.05},
    'saturating': {'a': 1e5, 'b': 0.4, 'c': 0.03, 'd': 1e14},
}


def _noisy(form, x, noise=0.01, seed=0):
  rng = np.random.default_rng(seed)
  return fits.predict(form, TRUE[form], x) * np.exp(
      rng.normal(0, noise, np.shape(x)))


# ----------------------------------------------------------------------------
# Fits.


@pytest.mark.parametrize('form', sorted(TRUE))  # m4: test_scaling_m4.py
def test_fit_recovers_known_parameters(form):
  x = np.logspace(12, 20, 30)
  law = scaling.fit(x, _noisy(form, x), form)
  assert law.form == form and law.converged, law.message
  assert set(law.params) == set(TRUE[form])
  assert law.residual < 0.015  # the 1% noise
  assert law.params['b'] == pytest.approx(TRUE[form]['b'], rel=0.05)
  for name in ('c', 'd'):
    if name in TRUE[form]:
      assert law.params[name] == pytest.approx(TRUE[form][name], rel=0.15)
  # The law itself, whatever the trade-off between a and b.
  np.testing.assert_allclose(law.predict(x), fits.predict(form, TRUE[form], x),
                             rtol=0.02)


def test_fit_without_noise_is_exact_and_named():
  x = np.logspace(12, 20, 12)
  law = scaling.fit(x, fits.predict('saturating', TRUE['saturating'], x),
                    'saturating')
  for name, value in TRUE['saturating'].items():
    assert law.params[name] == pytest.approx(value, rel=1e-4), name
  assert law.residual < 1e-8
  assert law.formula('C', 'error').startswith('error = 0.03 + ')


@pytest.mark.parametrize('form,needed', sorted(fits.MIN_POINTS.items()))
def test_too_few_points_says_how_many_are_needed(form, needed):
  x = np.logspace(10, 12, needed - 1)
  with pytest.raises(ValueError, match=f'{form} form needs at least {needed} '
                     f'points; got {needed - 1}'):
    scaling.fit(x, 1 / x, form)
  # Enough points, but at too few distinct x.
  x = np.repeat(np.logspace(10, 12, needed - 1), 2)
  with pytest.raises(ValueError, match=f'at least {needed} points with '
                     f'distinct x'):
    scaling.fit(x, 1 / x, form)


def test_non_positive_or_missing_values_are_refused():
  x = np.array([1.0, 2.0, 0.0, 4.0, -1.0])
  with pytest.raises(ValueError, match=r'2 of 5 x values are not positive; '
                     r'log axes need positive values'):
    scaling.fit(x, np.ones(5), 'power')
  with pytest.raises(ValueError, match='1 of 3 y values are not positive'):
    scaling.fit([1, 2, 3], [0.5, 0.0, 0.2], 'power')
  with pytest.raises(ValueError, match='not finite'):
    scaling.fit([1, 2, 3], [0.5, np.nan, 0.2], 'power')
  with pytest.raises(ValueError, match="Unknown form 'cubic'"):
    scaling.fit([1, 2, 3], [3, 2, 1], 'cubic')


ROBUSTNESS_CASES = {
    'noisy': (np.logspace(10, 16, 12), lambda x, rng: (
        0.1 + 50 * x ** -0.2) * np.exp(rng.normal(0, 0.3, x.size))),
    'plateau': (np.logspace(10, 16, 10), lambda x, rng: 0.3 * np.exp(
        rng.normal(0, 1e-3, x.size))),
    'exactly_constant': (np.logspace(10, 16, 6), lambda x, rng: np.full(
        x.size, 0.25)),
    'few': (np.array([1e10, 1e12, 1e14, 1e16]), lambda x, rng: np.array(
        [0.9, 0.5, 0.3, 0.29])),
    'non_monotone': (np.logspace(10, 14, 6), lambda x, rng: np.array(
        [0.5, 0.3, 0.6, 0.2, 0.9, 0.1])),
    'increasing': (np.logspace(10, 14, 6), lambda x, rng: np.linspace(
        0.1, 0.9, 6)),
    'step': (np.logspace(10, 14, 8), lambda x, rng: np.where(
        x < 1e12, 0.8, 0.2)),
    'tiny_range': (np.linspace(1e15, 1.0001e15, 5), lambda x, rng: np.array(
        [0.3, 0.31, 0.29, 0.3, 0.305])),
}


@pytest.mark.parametrize('case', sorted(ROBUSTNESS_CASES))
def test_bad_data_never_crashes(case):
  x, make_y = ROBUSTNESS_CASES[case]
  y = make_y(x, np.random.default_rng(1))
  for form in fits.FORMS:
    if x.size < fits.MIN_POINTS[form]:
      with pytest.raises(ValueError, match=f'needs at least '
                         f'{fits.MIN_POINTS[form]} points'):
        scaling.fit(x, y, form)
      continue
    law = scaling.fit(x, y, form)
    assert isinstance(law.converged, bool) and law.message
    if law.converged:
      assert np.isfinite(law.residual)
      assert np.all(np.isfinite(law.predict(x)))
    else:
      assert 'converge' in law.message or 'finite' in law.message
  law, notes = scaling.fit_with_fallback(x, y)
  assert law.form in fits.FORMS and all('Fell back' in n for n in notes)
  boot = scaling.bootstrap(x, y, law.form, n=10, fitted=law)
  assert boot.n_requested == 10 and set(boot.intervals) == set(law.params)


def test_a_fit_that_did_not_converge_says_so():
  x = np.logspace(12, 20, 20)
  law = scaling.fit(x, _noisy('saturating', x), 'saturating',
                    max_iterations=2)
  assert not law.converged
  assert law.message.startswith('did not converge')
  # With fallback, the next form is tried and the reason kept.
  law, notes = scaling.fit_with_fallback(x, _noisy('saturating', x),
                                         max_iterations=2)
  assert law.form == 'power' and law.converged
  assert 'saturating did not converge' in notes[0]


def test_fallback_for_too_few_points():
  x = np.array([1e12, 1e14, 1e16])
  law, notes = scaling.fit_with_fallback(x, [0.5, 0.3, 0.25])
  assert law.form == 'power_offset'
  assert notes == ['The saturating form needs at least 4 points; got 3. '
                   'Fell back to power_offset.']
  with pytest.raises(ValueError, match='needs at least 4 points'):
    scaling.fit_with_fallback(x, [0.5, 0.3, 0.25], fallback=False)


def test_bootstrap_intervals():
  x = np.logspace(12, 20, 25)
  boot = scaling.bootstrap(x, _noisy('power_offset', x), 'power_offset',
                           n=60, seed=3)
  assert boot.n_ok >= 50
  for name in ('b', 'c'):
    low, high = boot.intervals[name]
    assert low <= boot.fit.params[name] <= high, (name, low, high)
    assert 0 < high - low < 0.1 * TRUE['power_offset'][name]
    # The truth, within the interval's width of it (one noise draw).
    width = high - low
    assert low - width <= TRUE['power_offset'][name] <= high + width
  low, high = boot.band(np.array([1e21, 1e22]))
  assert np.all(low < high)
  again = scaling.bootstrap(x, _noisy('power_offset', x), 'power_offset',
                            n=60, seed=3)
  assert again.intervals == boot.intervals  # seeded


def test_extrapolation_is_good_for_the_right_form_only():
  x = np.logspace(12, 20, 30)
  y = _noisy('saturating', x, noise=0.005)
  right = scaling.validate_extrapolation(x, y, 'saturating', 1e18)
  assert (right.n_fit, right.n_holdout) == (22, 8)
  assert right.log_rmse < 0.03
  wrong = scaling.validate_extrapolation(x, y, 'power', 1e18)
  assert wrong.log_rmse > 5 * right.log_rmse
  with pytest.raises(ValueError, match='No point at or above the threshold'):
    scaling.validate_extrapolation(x, y, 'power', 1e21)
  with pytest.raises(ValueError, match=r'needs at least 4 points .* below the '
                     r'threshold 5e\+12; there are 3 \(3 distinct\)'):
    scaling.validate_extrapolation(x, y, 'saturating', 5e12)


def test_fit_chinchilla_recovers_synthetic_parameters():
  true = {'A': 400.0, 'B': 1800.0, 'E': 1.7, 'alpha': 0.34, 'beta': 0.28}
  n, d = (v.ravel() for v in np.meshgrid(np.logspace(7, 10, 8),
                                         np.logspace(9, 12, 8)))
  loss = (true['E'] + true['A'] / n ** true['alpha'] +
          true['B'] / d ** true['beta'])
  loss *= np.exp(np.random.default_rng(0).normal(0, 0.002, n.size))
  law = scaling.fit_chinchilla(n, d, loss)
  assert law.form == 'chinchilla' and law.converged, law.message
  assert law.params['alpha'] == pytest.approx(true['alpha'], abs=0.02)
  assert law.params['beta'] == pytest.approx(true['beta'], abs=0.02)
  assert law.params['E'] == pytest.approx(true['E'], rel=0.03)
  assert law.residual < 0.005
  np.testing.assert_allclose(law.predict(n, d), loss, rtol=0.01)
  n_opt, d_opt = law.optimal_allocation(1e21)
  assert 6 * n_opt * d_opt == pytest.approx(1e21, rel=1e-9)
  with pytest.raises(ValueError, match='needs at least 5 points; got 4'):
    scaling.fit_chinchilla(n[:4], d[:4], loss[:4])


def test_fit_chinchilla_refits_the_published_data():
  """Besiroglu et al. 2024's protocol on Epoch AI's extraction of Hoffmann
  et al.'s Figure 4 (tests/data/README.md): their alpha 0.3478, beta
  0.3659, E 1.817."""
  data = pd.read_csv(CHINCHILLA_CSV)
  assert len(data) == 245
  data = data.sort_values('loss').iloc[:-5]  # the 5 highest losses out
  n = data['Model Size'].to_numpy()
  d = data['Training FLOP'].to_numpy() / (6 * n)
  law = scaling.fit_chinchilla(n, d, data['loss'].to_numpy(), delta=1e-3)
  assert law.params['alpha'] == pytest.approx(0.3478, abs=0.03)
  assert law.params['beta'] == pytest.approx(0.3659, abs=0.04)
  assert law.params['E'] == pytest.approx(1.817, abs=0.05)
  assert law.params['A'] == pytest.approx(482.0, rel=0.3)
  assert law.params['B'] == pytest.approx(2085.4, rel=0.3)


# ----------------------------------------------------------------------------
# Errors, frontiers.


def test_accuracies_become_errors():
  for name in ('val/accuracy', 'val/top5', 'fewshot/digits/10shot',
               'fewshot/imagenet/25shot', 'test/accuracy', 'val/miou',
               'val/iou/3', 'val/dice', 'val/dice/2', 'val/pixel_accuracy'):
    assert scaling.is_accuracy(name), name
    assert scaling.to_error(name, [0.75]) == pytest.approx([0.25])
  for name in ('val/loss', 'fewshot/digits/10shot_std', 'val/accuracy_std',
               'reconstruction/loss', 'val/miou_std', 'val/dice_loss',
               'train/dice_ce'):
    assert not scaling.is_accuracy(name), name
    assert scaling.to_error(name, [0.75]) == pytest.approx([0.75])
  assert scaling.error_label('val/accuracy') == 'error (1 - val/accuracy)'


def test_pareto_mask_is_the_lower_envelope():
  x = [1, 2, 2, 3, 4, 5, 5]
  y = [0.9, 0.8, 0.7, 0.75, 0.5, 0.5, 0.4]
  assert scaling.pareto_mask(x, y).tolist() == [
      True, False, True, False, True, False, True]


# ----------------------------------------------------------------------------
# Workdirs.


def _error(n, images):
  """A Chinchilla-like error of n parameters after `images` images."""
  return 0.02 + 0.25 * (n / 1e5) ** -0.3 + 0.5 * (images / 1e3) ** -0.4


def write_workdir(root, name, family='vit', variant='Ti/16', params=1e5,
                  batch=64, total_steps=200, eval_every=50, train_every=20,
                  stop=None, state='done', summary=True, branch=None,
                  metrics=None):
  """A workdir as vit_jax.main leaves it; returns its path.

  stop: the last step logged (default total_steps); metrics: a function
  (params, images) -> {name: value} of the evaluation metrics.
  """
  workdir = paths.join(str(root), name)
  paths.makedirs(workdir)
  config = {'model': {'name': family, 'variant': variant},
            'total_steps': total_steps, 'batch_size': batch, 'seed': 0,
            'branch': branch or {'trunk': None, 'step': None}}
  paths.write_atomic(paths.join(workdir, 'config.json'), json.dumps(config))
  flops_per_step = 6.0 * params * batch
  if summary:
    paths.write_atomic(paths.join(workdir, 'summary.json'), json.dumps({
        'params': int(params), 'params_body': int(params * 0.8),
        'flops_per_image': 2.0 * params, 'flops_per_step': flops_per_step,
        'batch_size': batch, 'devices': 1, 'device_kind': 'cpu',
        'peak_flops_per_device': None,
        'flop_convention': 'a multiply-add is 2 FLOPs'}))
  metrics = metrics or (lambda n, images: {
      'val/accuracy': 1 - _error(n, images),
      'val/loss': 2 * _error(n, images),
      'fewshot/digits/10shot': 1 - 1.2 * _error(n, images),
      'fewshot/digits/10shot_std': 0.01})
  lines = []
  stop = total_steps if stop is None else stop
  for step in range(0, stop + 1):
    if step % train_every == 0 and step:
      lines.append({'step': step, 'train/loss': 1.0 / step,
                    'compute/flops': flops_per_step * step,
                    'compute/images_seen': float(batch * step),
                    'compute/device_seconds': 0.01 * step})
    if step % eval_every == 0 and step:
      lines.append({'step': step, **metrics(params, batch * step)})
  paths.write_atomic(paths.join(workdir, 'metrics.jsonl'),
                     ''.join(json.dumps(line) + '\n' for line in lines))
  if state == 'done':
    paths.write_atomic(paths.join(workdir, 'done'),
                       json.dumps({'step': total_steps}))
  elif state == 'failed':
    paths.write_atomic(paths.join(workdir, 'error'), 'Traceback ...\n')
  return workdir


def write_sweep(root):
  """Two families over sizes and lengths: 7 runs, enough for saturating
  laws on each frontier."""
  sweep = os.path.join(str(root), 'sweep')
  for i, n in enumerate((3e4, 1e5, 3e5, 1e6)):
    write_workdir(sweep, f'model.variant={i},model.name=vit', params=n,
                  total_steps=400, eval_every=40)
  for i, n in enumerate((5e4, 2e5, 8e5)):
    write_workdir(sweep, f'model.variant={i},model.name=mixer',
                  family='mixer', params=n, total_steps=400, eval_every=40)
  os.makedirs(os.path.join(sweep, 'logs'))  # a sweep directory's extras
  with open(os.path.join(sweep, 'sweep.json'), 'w') as f:
    f.write('{}')
  return sweep


def test_load_runs_rows_states_and_compute(tmp_path):
  sweep = tmp_path / 'sweep'
  write_workdir(sweep, 'done_run', params=1e5)
  write_workdir(sweep, 'failed_run', params=3e5, stop=100, state='failed')
  write_workdir(sweep, 'unfinished_run', params=1e6, stop=150,
                state='unfinished')
  # An old run without summary.json, evaluated between two train logs.
  write_workdir(sweep, 'old_run', params=2e5, summary=False, eval_every=30,
                total_steps=90)
  write_workdir(sweep, 'cooldown', params=1e5, branch={
      'trunk': str(sweep / 'done_run'), 'step': 100})
  write_workdir(sweep, 'no_eval_yet', stop=10, state='unfinished')
  with open(sweep / 'old_run' / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 90, "val/loss": "nan"}\n{"step": 95, "val/lo')  # torn
  (sweep / 'logs').mkdir()

  table = scaling.load_runs(str(sweep / '*'))
  assert list(table.columns[:16]) == [
      'run', 'workdir', 'sweep', 'family', 'variant', 'params', 'params_body',
      'state', 'is_branch', 'branch_from', 'branch_step', 'total_steps',
      'step', 'images_seen', 'compute', 'device_seconds']
  assert set(table['sweep']) == {'sweep'}
  assert {'val/accuracy', 'val/loss', 'fewshot/digits/10shot',
          'train/loss'} <= set(table.columns)
  assert not any(c.startswith('compute/') for c in table.columns)
  per_run = table.groupby('run')['step'].apply(list).to_dict()
  assert per_run == {'done_run': [50, 100, 150, 200],
                     'cooldown': [50, 100, 150, 200],
                     'failed_run': [50, 100], 'unfinished_run': [50, 100, 150],
                     'old_run': [30, 60, 90]}
  states = table.groupby('run')['state'].first().to_dict()
  assert states == {'done_run': 'done', 'cooldown': 'done',
                    'failed_run': 'failed', 'unfinished_run': 'unfinished',
                    'old_run': 'done'}
  runs = {info['run']: info for info in table.attrs['runs']}
  assert runs['no_eval_yet']['eval_points'] == 0
  assert runs['no_eval_yet']['state'] == 'unfinished'

  done = table[table['run'] == 'done_run'].set_index('step')
  assert done.loc[100, 'compute'] == pytest.approx(6 * 1e5 * 64 * 100)
  assert done.loc[100, 'images_seen'] == 6400
  assert done.loc[100, 'device_seconds'] == pytest.approx(1.0)
  assert done.loc[100, 'params'] == 1e5 and done.loc[100, 'family'] == 'vit'
  assert done.loc[100, 'val/accuracy'] == pytest.approx(
      1 - _error(1e5, 6400))
  assert done.loc[100, 'train/loss'] == pytest.approx(0.01)  # same step
  assert not done['is_branch'].any()

  old = table[table['run'] == 'old_run'].set_index('step')
  assert np.isnan(old.loc[30, 'params'])  # no summary.json
  # Step 30 between the train logs at 20 and 40: interpolated.
  assert old.loc[30, 'compute'] == pytest.approx(6 * 2e5 * 64 * 30)
  assert old.loc[30, 'images_seen'] == pytest.approx(64 * 30)
  assert np.isnan(old.loc[90, 'val/loss'])  # logged as "nan"
  # Step 90 after the last train log (80): the last interval's slope.
  assert old.loc[90, 'compute'] == pytest.approx(6 * 2e5 * 64 * 90)

  branch = table[table['run'] == 'cooldown'].iloc[0]
  assert branch['is_branch'] and branch['branch_step'] == 100
  assert branch['branch_from'] == str(sweep / 'done_run')
  assert table['total_steps'].dtype == 'Int64'


def test_load_runs_as_the_trainer_writes_them(tmp_path):
  """A custom-size model without a FLOP count (compute/flops logged as 0,
  flops_per_step null), and summary.json's values where the run stopped."""
  workdir = tmp_path / 'sweep' / 'run'
  workdir.mkdir(parents=True)
  (workdir / 'config.json').write_text(json.dumps({
      'model': {'name': 'mixer', 'width': 64, 'depth': 4},
      'total_steps': 50, 'batch_size': 16,
      'branch': {'trunk': None, 'step': None}}))
  (workdir / 'summary.json').write_text(json.dumps({
      'params': 12345, 'params_body': 10000, 'flops_per_image': None,
      'flops_per_step': None, 'batch_size': 16, 'devices': 1,
      'device_kind': 'cpu', 'peak_flops_per_device': None,
      'family': 'mixer', 'variant': None,
      'flop_convention': 'a multiply-add is 2 FLOPs',
      'step': 50, 'images_seen': 800, 'flops': 0.0, 'device_seconds': 2.5}))
  lines = [{'step': step, 'train/loss': 1.0, 'compute/flops': 0.0,
            'compute/images_seen': 16.0 * step,
            'compute/device_seconds': 0.04 * step} for step in (20, 40)]
  lines += [{'step': 25, 'val/accuracy': 0.5},
            {'step': 50, 'val/accuracy': 0.6, 'val/loss': 'inf'}]
  (workdir / 'metrics.jsonl').write_text(
      ''.join(json.dumps(line) + '\n' for line in lines))
  (workdir / 'done').write_text('{"step": 50}')
  table = scaling.load_runs(str(tmp_path / 'sweep' / '*')).set_index('step')
  assert table['variant'].tolist() == ['width=64,depth=4'] * 2
  assert table['family'].tolist() == ['mixer'] * 2
  assert table['compute'].isna().all()  # no FLOP count: unknown, not 0
  assert table.loc[25, 'images_seen'] == 400
  assert table.loc[25, 'device_seconds'] == pytest.approx(1.0)
  assert table.loc[50, 'device_seconds'] == 2.5  # summary.json's
  assert table.loc[50, 'val/loss'] == np.inf
  assert table.loc[50, 'params'] == 12345
  usable, skipped = scaling.points(table.reset_index(), 'compute/flops',
                                   'val/accuracy')
  assert usable.empty and skipped['reason'].tolist() == [
      'compute/flops unknown'] * 2


def test_load_runs_refuses_a_pattern_without_workdirs(tmp_path):
  write_workdir(tmp_path, 'run_a')
  (tmp_path / 'not_a_run').mkdir()
  with pytest.raises(ValueError, match="No workdir matches '.*/nothing_\\*'"):
    scaling.load_runs([str(tmp_path / 'run_*'),
                       str(tmp_path / 'nothing_*')])
  with pytest.raises(ValueError, match='matches 1 path.* none is a workdir'):
    scaling.load_runs(str(tmp_path / 'not_*'))
  # Several patterns, overlapping: each workdir once.
  table = scaling.load_runs([str(tmp_path / 'run_*'), str(tmp_path / '*')])
  assert table['run'].unique().tolist() == ['run_a']


def test_load_runs_on_gcs(gcs, tmp_path):
  root = f'gs://{gcs.bucket}/scaling-{uuid.uuid4().hex[:8]}'
  write_workdir(root, 'small', params=1e5, stop=100, state='unfinished')
  write_workdir(root, 'large', params=1e6)
  write_workdir(tmp_path, 'local', params=3e5)
  table = scaling.load_runs([f'{root}/*', str(tmp_path / 'loc*')])
  states = table.groupby('run')['state'].first().to_dict()
  assert states == {'small': 'unfinished', 'large': 'done', 'local': 'done'}
  assert table[table['run'] == 'large']['workdir'].iloc[0] == f'{root}/large'
  with pytest.raises(ValueError, match='No workdir matches'):
    scaling.load_runs(f'{root}/nothing*')


def test_frontier_per_family_and_plot(tmp_path):
  table = scaling.load_runs(os.path.join(write_sweep(tmp_path), '*'))
  fronts = scaling.frontier(table, 'compute/flops', 'val/accuracy')
  assert sorted(fronts) == ['mixer', 'vit']
  vit = fronts['vit']
  assert len(vit.points) == 40  # 4 runs x 10 evaluations
  errors = vit.frontier['y'].to_numpy()
  assert np.all(np.diff(vit.frontier['x']) > 0) and np.all(np.diff(errors) < 0)
  # The envelope: no point has less compute and a lower error.
  for _, row in vit.frontier.iterrows():
    better = vit.points[(vit.points['x'] < row['x']) &
                        (vit.points['y'] <= row['y'])]
    assert better.empty
  assert vit.fit is not None and vit.fit.converged
  assert vit.fit.residual < 0.05
  with pytest.raises(ValueError, match=r"No run has the metric 'val/top1'; "
                     r'metrics available: .*val/accuracy'):
    scaling.frontier(table, 'compute/flops', 'val/top1')

  boot = scaling.bootstrap(vit.frontier['x'], vit.frontier['y'],
                           vit.fit.form, n=10, fitted=vit.fit)
  written = scaling.plot({'val/accuracy': fronts}, 'compute/flops',
                         str(tmp_path / 'out'),
                         bootstraps={('val/accuracy', 'vit'): boot})
  assert [os.path.basename(p) for p in written] == [
      'error_vs_compute.png', 'error_vs_compute.svg', 'error_vs_compute.csv']
  drawn = pd.read_csv(tmp_path / 'out' / 'error_vs_compute.csv')
  counts = drawn.groupby(['family', 'series']).size().to_dict()
  assert counts[('vit', 'run')] == 40
  assert counts[('vit', 'frontier')] == len(vit.frontier)
  curve = drawn[(drawn['family'] == 'vit') &
                (drawn['series'] == 'extrapolation')]
  assert curve['x'].max() == pytest.approx(10 * vit.frontier['x'].max())
  assert (curve['y_low'] <= curve['y_high']).all()
  with open(tmp_path / 'out' / 'error_vs_compute.png', 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'


def test_points_name_the_skipped_runs(tmp_path):
  write_workdir(tmp_path, 'perfect', metrics=lambda n, images: {
      'val/accuracy': 1.0})
  write_workdir(tmp_path, 'fine', params=3e5)
  write_workdir(tmp_path, 'old', summary=False)
  table = scaling.load_runs(str(tmp_path / '*'))
  usable, skipped = scaling.points(table, 'params', 'val/accuracy')
  assert set(usable['run']) == {'fine'}
  line = frontiers.describe_skipped(skipped, 'params', 'val/accuracy')
  assert 'from runs: perfect (4)' in line
  assert 'log axes need positive values' in line
  assert 'params is unknown' in line and 'from runs: old (4)' in line


# ----------------------------------------------------------------------------
# The command line.


def _cli(*args):
  return subprocess.run([sys.executable, '-m', 'vit_jax.scaling', *args],
                        cwd=ROOT, capture_output=True, text=True, timeout=1800)


def test_cli_end_to_end(tmp_path):
  sweep = write_sweep(tmp_path)
  write_workdir(sweep, 'model.variant=9,model.name=vit', params=3e6,
                total_steps=400, eval_every=40, stop=120, state='failed')
  out = tmp_path / 'out'
  result = _cli(f'--workdirs={sweep}/*', '--metric=val/accuracy,val/loss',
                '--metric=fewshot/digits/10shot', '--x=compute/flops',
                f'--out={out}', '--bootstrap=20')
  assert result.returncode == 0, result.stderr
  assert '8 runs (7 done, 1 failed), 73 evaluation points' in result.stdout
  for metric in ('val/accuracy', 'val/loss', 'fewshot/digits/10shot'):
    assert f'{metric} (' in result.stdout
  assert 'vit: saturating: error = ' in result.stdout
  assert '95% CI from 20 resamples' in result.stdout
  assert 'extrapolation: fitted on' in result.stdout
  for stem in ('error_vs_compute', 'error_vs_params',
               'error_vs_images_seen'):
    for extension in ('png', 'svg', 'csv'):
      assert (out / f'{stem}.{extension}').stat().st_size > 0
  with open(out / 'fits.json') as f:
    record = json.load(f)
  laws = [r for r in record['fits'] if r['x'] == 'compute/flops']
  assert {(r['metric'], r['family']) for r in laws} == {
      (m, f) for m in ('val/accuracy', 'val/loss', 'fewshot/digits/10shot')
      for f in ('vit', 'mixer')}
  vit = next(r for r in laws
             if (r['metric'], r['family']) == ('val/accuracy', 'vit'))
  assert vit['form'] == 'saturating' and vit['converged']
  assert set(vit['bootstrap']['intervals']) == {'a', 'b', 'c', 'd'}
  assert vit['extrapolation']['n_holdout'] >= 1
  assert math.isfinite(vit['extrapolation']['log_rmse'])
  assert {r['x'] for r in record['fits']} == {
      'compute/flops', 'params', 'compute/images_seen'}
  drawn = pd.read_csv(out / 'error_vs_compute.csv')
  assert set(drawn['panel']) == {'val/accuracy', 'val/loss',
                                 'fewshot/digits/10shot'}
  assert 'failed' in set(drawn['state'].dropna())


def test_cli_warns_about_points_it_cannot_plot(tmp_path):
  sweep = write_sweep(tmp_path)
  write_workdir(sweep, 'perfect', params=1e6, metrics=lambda n, images: {
      'val/accuracy': 1.0})
  result = _cli(f'--workdirs={sweep}/*', '--metric=val/accuracy',
                f'--out={tmp_path / "out"}', '--bootstrap=0',
                '--also_x=', '--form=power')
  assert result.returncode == 0, result.stderr
  assert 'warning: val/accuracy vs compute/flops: skipped 4 point(s)' in (
      result.stderr)
  assert 'from runs: perfect (4)' in result.stderr
  assert 'vit: power: error = ' in result.stdout


@pytest.mark.parametrize('case', ['unknown_metric', 'no_workdir',
                                  'too_few_points', 'too_few_for_the_form'])
def test_cli_bad_input_exits_2(tmp_path, case):
  sweep = tmp_path / 'sweep'
  if case in ('too_few_points', 'too_few_for_the_form'):
    # One evaluation per run: the vit frontier has 1 or 3 points.
    count = 1 if case == 'too_few_points' else 3
    for i, n in enumerate((1e5, 3e5, 1e6)[:count]):
      write_workdir(sweep, f'run{i}', params=n, total_steps=50, eval_every=50)
  else:
    write_workdir(sweep, 'run0')
  args = {
      'unknown_metric': ['--metric=val/top1'],
      'no_workdir': ['--metric=val/accuracy',
                     f'--workdirs={tmp_path}/elsewhere/*'],
      'too_few_points': ['--metric=val/accuracy'],
      'too_few_for_the_form': ['--metric=val/accuracy', '--form=saturating'],
  }[case]
  out = tmp_path / 'out'
  if case != 'no_workdir':
    args.append(f'--workdirs={sweep}/*')
  result = _cli(*args, f'--out={out}')
  assert result.returncode == 2, (result.stdout, result.stderr)
  expected = {
      'unknown_metric': "No run has the metric 'val/top1'; metrics available:"
                        ' fewshot/digits/10shot, fewshot/digits/10shot_std, '
                        'val/accuracy, val/loss',
      'no_workdir': f"No workdir matches '{tmp_path}/elsewhere/*'",
      'too_few_points': 'The power form needs at least 2 points; got 1',
      'too_few_for_the_form': 'The saturating form needs at least 4 points; '
                              'got 3',
  }[case]
  assert expected in result.stderr
  assert not out.exists()  # nothing written
