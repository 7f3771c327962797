"""Honest uncertainty in vit_jax.scaling: no zero-width bootstrap interval
(printed or drawn) where the resamples are the data itself, laws on too
few points drawn as underdetermined, points off the frontier kept on the
plots.

No training: workdirs are written by hand (test_scaling.write_workdir).
"""

import json
import math
import os
import re

from matplotlib import colors as colors_lib
import numpy as np
import pandas as pd
import pytest

from vit_jax import scaling
from vit_jax.scaling import fits
from vit_jax.scaling import plots

from test_scaling import _cli, _error, _noisy, write_workdir

# The reason of a bootstrap on as many points as the law has parameters.
DATA_ITSELF = 'every resample that fits is the data itself'


def _curve(x, noise=0.02, seed=0):
  rng = np.random.default_rng(seed)
  return (0.02 + 3e4 * np.asarray(x) ** -0.5) * np.exp(
      rng.normal(0, noise, np.shape(x)))


@pytest.mark.parametrize('form', ['saturating', 'power_offset', 'power'])
def test_a_bootstrap_on_as_many_points_as_parameters_is_refused(form):
  n_params = len(fits.FORM_PARAMS[form])
  x = np.logspace(9, 12, n_params)
  y = _curve(x)
  law = scaling.fit(x, y, form)
  boot = scaling.bootstrap(x, y, form, n=100, fitted=law)
  # Resamples did fit (the old code made an interval of them) ...
  assert boot.n_ok >= 2 and boot.n_distinct == 1
  # ... but every one is the data: no interval.
  assert boot.degenerate == (
      f'too few distinct points: {n_params} points for a {n_params}-'
      f'parameter law; {DATA_ITSELF}')
  for low, high in boot.intervals.values():
    assert math.isnan(low) and math.isnan(high)
  low, high = boot.band(np.logspace(9, 13, 7))
  assert np.isnan(low).all() and np.isnan(high).all()


def test_a_bootstrap_with_too_few_different_resamples_is_refused():
  # 3 points for 2 parameters: only 4 different sets of points can be
  # fitted (the data and each pair), too few for an interval.
  x = np.logspace(9, 12, 3)
  boot = scaling.bootstrap(x, _curve(x), 'power', n=100)
  assert boot.n_ok > 50 and boot.n_distinct == 4
  assert boot.degenerate.startswith(
      'too few distinct points: 3 points for a 2-parameter law; the ')
  assert 'only 4 different sets of points' in boot.degenerate
  assert math.isnan(boot.intervals['b'][0])


def test_a_bootstrap_whose_laws_all_agree_is_refused():
  # Exactly a power law: every resample gives the same law, an interval
  # of zero width.
  x = np.logspace(9, 12, 12)
  boot = scaling.bootstrap(x, 3e4 * x ** -0.5, 'power', n=40)
  assert boot.n_distinct > 30
  assert boot.degenerate == ('every resample that fits gives the same law '
                             '(zero-width intervals)')
  assert all(math.isnan(low) for low, _ in boot.intervals.values())


@pytest.mark.parametrize('form, count', [('power_offset', 25),
                                         ('saturating', 8)])
def test_enough_points_still_give_proper_intervals(form, count):
  x = np.logspace(9, 15, count)
  y = _noisy(form, x * 1e3, noise=0.02)
  law = scaling.fit(x, y, form)
  boot = scaling.bootstrap(x, y, form, n=100, fitted=law)
  assert boot.degenerate is None
  assert boot.n_distinct >= fits.MIN_DISTINCT_RESAMPLES
  for name in ('b', 'c'):
    low, high = boot.intervals[name]
    assert low < high, (name, low, high)
  low, high = boot.band(np.array([1e15, 1e16]))
  assert np.all(low < high)


def test_underdetermined_means_fewer_points_than_parameters_plus_2():
  for count, expected in ((4, True), (5, True), (6, False)):
    x = np.logspace(9, 12, count)
    assert scaling.underdetermined(
        scaling.fit(x, _curve(x), 'saturating')) is expected, count
  x = np.logspace(9, 12, 4)
  assert not scaling.underdetermined(scaling.fit(x, _curve(x), 'power'))


def _sweep(root):
  """vit: 4 sizes x 10 evaluations, and a fifth, largest size worse than
  all of them (off every frontier); mixer: 4 sizes x 1 evaluation, a
  frontier of exactly 4 points."""
  sweep = os.path.join(str(root), 'sweep')
  for i, n in enumerate((3e4, 1e5, 3e5, 1e6)):
    write_workdir(sweep, f'model.variant={i},model.name=vit', params=n,
                  total_steps=400, eval_every=40)
  write_workdir(sweep, 'model.variant=bad,model.name=vit', params=2e6,
                total_steps=400, eval_every=40, metrics=lambda n, images: {
                    'val/accuracy': 1 - 1.5 * _error(1e5, images)})
  for i, n in enumerate((5e4, 1e5, 2e5, 8e5)):
    write_workdir(sweep, f'model.variant={i},model.name=mixer',
                  family='mixer', params=n, total_steps=50, eval_every=50)
  return sweep


def _lines(ax, kind):
  """{family: [Line2D]} of the lines `plots` labelled '_kind:family'."""
  found = {}
  for line in ax.get_lines():
    label = line.get_label()
    if label.startswith(f'_{kind}:'):
      found.setdefault(label.split(':', 1)[1], []).append(line)
  return found


def _legend(ax):
  return [text.get_text() for text in ax.get_legend().get_texts()]


def test_plot_keeps_the_points_off_the_frontier(tmp_path):
  table = scaling.load_runs(os.path.join(_sweep(tmp_path), '*'))
  fronts = scaling.frontier(table, 'params', 'val/accuracy')
  vit = fronts['vit']
  bad = vit.points[vit.points['run'] == 'model.variant=bad,model.name=vit']
  assert len(bad) == 10 and not (
      vit.frontier['run'] == 'model.variant=bad,model.name=vit').any()
  figure, rows = plots.draw({'val/accuracy': fronts}, 'params')
  ax = figure.axes[0]
  # The frontier: filled markers, joined, exactly the frontier's points.
  (front,) = _lines(ax, 'frontier')['vit']
  assert front.get_linestyle() != 'None' and front.get_marker() == 'o'
  assert colors_lib.to_hex(front.get_markerfacecolor()) == (
      colors_lib.to_hex(front.get_color()))
  np.testing.assert_allclose(front.get_xdata(), vit.frontier['x'])
  np.testing.assert_allclose(front.get_ydata(), vit.frontier['y'])
  # Every point off it is drawn, hollow, and none of the frontier's.
  off = _lines(ax, 'off_frontier')['vit']
  drawn = {(float(x), float(y)) for line in off
           for x, y in zip(line.get_xdata(), line.get_ydata())}
  expected = set(zip(vit.points['x'], vit.points['y'])) - set(
      zip(vit.frontier['x'], vit.frontier['y']))
  assert drawn == expected
  assert set(zip(bad['x'], bad['y'])) <= drawn
  assert all(line.get_markerfacecolor() == 'none'
             and line.get_linestyle() == 'None' for line in off)
  assert 'off the frontier (hollow)' in _legend(ax)
  assert 'frontier (filled, joined)' in _legend(ax)
  # The CSV says which run points are on the frontier.
  runs = rows[(rows['family'] == 'vit') & (rows['series'] == 'run')]
  assert int(runs['on_frontier'].sum()) == len(vit.frontier)


def test_an_underdetermined_law_is_thin_and_not_extrapolated(tmp_path):
  table = scaling.load_runs(os.path.join(_sweep(tmp_path), '*'))
  fronts = scaling.frontier(table, 'compute/flops', 'val/accuracy')
  mixer, vit = fronts['mixer'], fronts['vit']
  assert mixer.fit.form == 'saturating' and mixer.fit.n_points == 4
  assert scaling.underdetermined(mixer.fit)
  assert not scaling.underdetermined(vit.fit)
  boots = {('val/accuracy', family): scaling.bootstrap(
      front.frontier['x'], front.frontier['y'], front.fit.form, n=40,
      fitted=front.fit) for family, front in fronts.items()}
  assert boots[('val/accuracy', 'mixer')].degenerate
  assert boots[('val/accuracy', 'vit')].degenerate is None
  figure, rows = plots.draw({'val/accuracy': fronts}, 'compute/flops',
                            bootstraps=boots)
  series = rows.groupby(['family', 'series']).size().to_dict()
  assert ('mixer', 'extrapolation') not in series
  assert series[('vit', 'extrapolation')] > 0
  mixer_fit = rows[(rows['family'] == 'mixer') & (rows['series'] == 'fit')]
  assert mixer_fit['underdetermined'].all()
  assert mixer_fit['y_low'].isna().all()  # no band: no interval
  vit_fit = rows[(rows['family'] == 'vit') & (rows['series'] == 'fit')]
  assert not vit_fit['underdetermined'].any()
  assert (vit_fit['y_low'] < vit_fit['y_high']).all()
  ax = figure.axes[0]
  (thin,) = _lines(ax, 'underdetermined')['mixer']
  (thick,) = _lines(ax, 'fit')['vit']
  assert thin.get_linewidth() < thick.get_linewidth()
  assert 'mixer' not in _lines(ax, 'fit')
  assert 'mixer' not in _lines(ax, 'extrapolation')
  bands = {c.get_label() for c in ax.collections}
  assert bands == {'_band:vit'}  # none for the degenerate bootstrap
  assert any('underdetermined' in text for text in _legend(ax))


def test_cli_says_why_there_is_no_interval(tmp_path):
  out = tmp_path / 'out'
  result = _cli(f'--workdirs={_sweep(tmp_path)}/*', '--metric=val/accuracy',
                '--x=compute/flops', f'--out={out}', '--bootstrap=40',
                '--also_x=params')
  assert result.returncode == 0, result.stderr
  text = result.stdout
  mixer = text[text.index('  mixer: '):text.index('  vit: ')]
  vit = text[text.index('  vit: '):]
  assert ('no 95% CI from 40 resamples' in mixer and
          f'too few distinct points: 4 points for a 4-parameter law; '
          f'{DATA_ITSELF}' in mixer), text
  assert 'underdetermined: 4 points for 4 parameters' in mixer
  # No interval whose ends print alike, anywhere.
  for low, high in re.findall(r'\[([^,\]]+), ([^\]]+)\]', text):
    assert low != high, text
  assert '95% CI from 40 resamples (40 fitted): a [' in vit, text
  assert 'underdetermined' not in vit
  with open(out / 'fits.json') as f:
    laws = {(r['x'], r['family']): r for r in json.load(f)['fits']}
  boot = laws[('compute/flops', 'mixer')]['bootstrap']
  assert boot['degenerate'].endswith(DATA_ITSELF)
  assert all(v == [None, None] for v in boot['intervals'].values())
  assert laws[('compute/flops', 'mixer')]['underdetermined'] is True
  assert laws[('compute/flops', 'vit')]['underdetermined'] is False
  assert laws[('compute/flops', 'vit')]['bootstrap']['degenerate'] is None
  # Against params each vit run is one x: 4 frontier points, thin.
  assert laws[('params', 'vit')]['underdetermined'] is True
  drawn = pd.read_csv(out / 'error_vs_params.csv')
  assert not (drawn['series'] == 'extrapolation').any()
  bad = drawn[drawn['run'] == 'model.variant=bad,model.name=vit']
  assert len(bad[bad['series'] == 'run']) == 10
  assert not bad['on_frontier'].any()
