"""Chinchilla's approaches 1 and 2 (vit_jax/scaling/compute_optimal.py):
the published exponents from the paper's own points, exact recovery on a
known L(N, D), errors, the isoFLOP figure and the command line."""

import json
import os

import numpy as np
import pandas as pd
import pytest

from test_scaling import _cli
from test_scaling import write_workdir
from vit_jax.scaling import compute_optimal
from vit_jax.scaling import plots

DATA = os.path.join(os.path.dirname(__file__), 'data',
                    'chinchilla_svg_extracted.csv')
# Hoffmann et al. 2022, Sec. 3.2: the nine isoFLOP budgets of Figure 3.
BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)


def _published():
  data = pd.read_csv(DATA)
  return (data['Model Size'].to_numpy(), data['Training FLOP'].to_numpy(),
          data['loss'].to_numpy())


def test_the_papers_exponents_from_its_own_points():
  """Table 2 of the paper: a = 0.50 (approach 1), 0.49 (approach 2, 80%
  interval 0.462 .. 0.534); b = 1 - a."""
  n, c, loss = _published()
  second = compute_optimal.isoflop(n, c, loss, BUDGETS)
  assert [p.budget for p in second.profiles] == list(BUDGETS)
  assert all(p.note == '' for p in second.profiles)
  assert second.a == pytest.approx(0.500, abs=0.005)
  assert second.a + second.b == pytest.approx(1.0, abs=1e-9)
  assert 0.462 <= second.a <= 0.534
  # N_opt at 1e21 FLOPs: the paper's Figure 3 reads about 3e9.
  assert 2e9 < second.n_opt_at(1e21) < 4e9
  first = compute_optimal.envelope(n, c, loss)
  assert first.a == pytest.approx(0.507, abs=0.005)
  assert abs(first.a - 0.50) < 0.02


def _known_law(n, d, alpha=0.34, beta=0.28):
  return 1.7 + 400.0 / n ** alpha + 410.0 / d ** beta


def test_exact_recovery_on_a_known_law():
  """L = E + A / N^alpha + B / D^beta: N_opt ~ C^(beta / (alpha + beta))."""
  alpha, beta = 0.34, 0.28
  expected = beta / (alpha + beta)
  n_grid = np.geomspace(1e7, 1e11, 161)
  budgets = np.geomspace(1e19, 1e22, 7)
  n = np.concatenate([n_grid] * budgets.size)
  c = np.repeat(budgets, n_grid.size)
  loss = _known_law(n, c / (6 * n), alpha, beta)
  second = compute_optimal.isoflop(n, c, loss, budgets, width=0.01)
  assert second.a == pytest.approx(expected, abs=0.01)
  # Approach 1 on training curves: each size seen at many compute values.
  n = np.repeat(np.geomspace(1e7, 1e11, 60), 60)
  c = np.tile(np.geomspace(1e18, 1e23, 60), 60)
  first = compute_optimal.envelope(n, c, _known_law(n, c / (6 * n)))
  assert first.a == pytest.approx(expected, abs=0.03)


def test_bad_input_is_refused_with_the_reason():
  n, c, loss = _published()
  with pytest.raises(ValueError, match='a parabola needs 3'):
    compute_optimal.isoflop(n[:4], c[:4], loss[:4], BUDGETS[:2])
  with pytest.raises(ValueError, match='not finite and positive'):
    compute_optimal.envelope(np.r_[n[:3], 0.0], c[:4], loss[:4])
  with pytest.raises(ValueError, match='one length each'):
    compute_optimal.envelope(n[:3], c[:4], loss[:4])
  # A profile whose minimum lies beyond the sizes tried gives no optimum.
  sizes = np.geomspace(1e7, 1e8, 9)  # all far below the optimum
  budgets = (1e21, 3e21)
  nn = np.concatenate([sizes] * 2)
  cc = np.repeat(budgets, sizes.size)
  with pytest.raises(ValueError, match='lies outside the sizes tried'):
    compute_optimal.isoflop(nn, cc, _known_law(nn, cc / (6 * nn)), budgets,
                            width=0.01)


def test_isoflop_figure(tmp_path):
  n, c, loss = _published()
  result = compute_optimal.isoflop(n, c, loss, BUDGETS)
  written = plots.isoflop_plot(result, str(tmp_path), approach1=(
      compute_optimal.envelope(n, c, loss)))
  assert sorted(os.path.basename(p) for p in written) == [
      'isoflop.csv', 'isoflop.png', 'isoflop.svg']
  drawn = pd.read_csv(tmp_path / 'isoflop.csv')
  optima = drawn[drawn['series'] == 'optimum']
  np.testing.assert_allclose(optima['n'], result.n_opt)
  assert (drawn['series'] == 'point').sum() == sum(
      p.n.size for p in result.profiles)


def test_cli_compute_optimal(tmp_path):
  """A small ladder whose loss follows a known L(N, D): the command line
  prints both approaches and writes the isoFLOP figure."""
  root = tmp_path / 'ladder'
  for i, size in enumerate(np.geomspace(3e4, 3e6, 7)):
    write_workdir(root, f'size={i}', params=size, total_steps=2000,
                  eval_every=50, batch=64,
                  metrics=lambda n, images: {
                      'val/loss': 1.7 + 1e3 / n ** 0.34 + 1e2 / images ** 0.28})
  out = tmp_path / 'out'
  result = _cli(f'--workdirs={root}/*', '--metric=val/loss', f'--out={out}',
                '--bootstrap=0', '--also_x=', '--compute_optimal',
                '--isoflop_budgets=1e10,3e10,1e11')
  assert result.returncode == 0, result.stderr
  assert 'approach 1 (loss envelope): N_opt = ' in result.stdout
  assert 'approach 2 (isoFLOP parabolas): N_opt = ' in result.stdout
  with open(out / 'fits.json') as f:
    found = json.load(f)['compute_optimal']
  assert set(found) == {'envelope', 'isoflop'}
  assert 0.2 < found['isoflop']['a'] < 0.8
  assert (out / 'isoflop.png').exists()
