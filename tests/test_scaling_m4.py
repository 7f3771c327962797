"""The M4 scaling-law estimator (vit_jax.scaling.fits, form 'm4') of
Alabdulmohsin, Neyshabur and Zhai 2022: recovery of known laws, the
implicit prediction, bad input, and the paper's extrapolation benchmark on
its 72 published vision learning curves.
"""

import os

import numpy as np
import pandas as pd
import pytest

from vit_jax import scaling
from vit_jax.scaling import fits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARK_CSV = os.path.join(ROOT, 'tests', 'data', 'benchmark_vision.csv')

LAWS = {
    'typical': {'beta': 3e3, 'c': -0.45, 'alpha': 0.6, 'l_inf': 0.1,
                'l_0': 0.95},
    'steep': {'beta': 1e5, 'c': -0.8, 'alpha': 1.2, 'l_inf': 0.02,
              'l_0': 1.0},
    'loss_above_one': {'beta': 50.0, 'c': -0.3, 'alpha': 0.2, 'l_inf': 0.5,
                       'l_0': 3.0},
}


def _implicit_sides(params, x, y):
  """Both sides of (y - l_inf) / (l_0 - y)^alpha = beta x^c."""
  left = (y - params['l_inf']) / (params['l_0'] - y) ** params['alpha']
  return left, params['beta'] * x ** params['c']


# ----------------------------------------------------------------------------
# Fits and predictions.


@pytest.mark.parametrize('name', sorted(LAWS))
def test_m4_recovers_a_known_law(name):
  true = LAWS[name]
  x = np.logspace(6, 10, 40)
  law = scaling.fit(x, fits.predict('m4', true, x), 'm4')
  assert law.form == 'm4' and law.converged, law.message
  assert set(law.params) == set(fits.FORM_PARAMS['m4'])
  for key, value in true.items():
    assert law.params[key] == pytest.approx(value, rel=1e-6), key
  assert law.residual < 1e-9 and not law.at_bound


def test_m4_recovers_a_noisy_law_and_its_curve():
  true = LAWS['typical']
  x = np.logspace(6, 10, 60)
  rng = np.random.default_rng(0)
  y = fits.predict('m4', true, x) * np.exp(rng.normal(0, 0.003, x.size))
  law = scaling.fit(x, y, 'm4', y_max=1.0)
  assert law.converged, law.message
  assert law.residual < 0.005  # the 0.3% noise
  assert law.params['c'] == pytest.approx(true['c'], abs=0.05)
  assert law.params['l_inf'] == pytest.approx(true['l_inf'], abs=0.02)
  np.testing.assert_allclose(law.predict(x), fits.predict('m4', true, x),
                             rtol=0.01)


def test_m4_params_are_in_the_callers_units():
  true = LAWS['typical']
  x = np.logspace(6, 10, 30)
  y = fits.predict('m4', true, x)
  # x in thousands: beta x^c = (beta 1000^c) (x / 1000)^c.
  law = scaling.fit(x / 1000, y, 'm4')
  assert law.params['beta'] == pytest.approx(true['beta'] * 1000 ** true['c'],
                                             rel=1e-6)
  # y in percent: beta scales by 100^(1 - alpha), the levels by 100.
  law = scaling.fit(x, 100 * y, 'm4')
  assert law.params['beta'] == pytest.approx(
      true['beta'] * 100 ** (1 - true['alpha']), rel=1e-6)
  assert law.params['l_inf'] == pytest.approx(100 * true['l_inf'], rel=1e-6)
  assert law.params['l_0'] == pytest.approx(100 * true['l_0'], rel=1e-6)


@pytest.mark.parametrize('name', sorted(LAWS))
def test_m4_predict_solves_the_implicit_equation(name):
  params = LAWS[name]
  # Far beyond the data both ways: y close to l_0, then close to l_inf.
  x = np.logspace(-2, 16, 200)
  y = fits.predict('m4', params, x)
  assert y.shape == x.shape and np.all(np.isfinite(y))
  assert np.all((params['l_inf'] < y) & (y < params['l_0']))
  assert np.all(np.diff(y) < 0)  # c < 0: y decreases with x
  # Where y is not within 1e-6 of a bound (there, rounding y to doubles
  # alone moves the left side by more than 1e-9).
  span = params['l_0'] - params['l_inf']
  inside = np.minimum(y - params['l_inf'], params['l_0'] - y) > 1e-6 * span
  assert inside.sum() > 100
  left, right = _implicit_sides(params, x[inside], y[inside])
  np.testing.assert_allclose(left, right, rtol=1e-9)
  # Scalars and any shape.
  assert np.shape(fits.predict('m4', params, 1e8)) == ()
  grid = fits.predict('m4', params, x.reshape(20, 10))
  np.testing.assert_array_equal(grid.ravel(), y)


def test_m4_alpha_zero_is_the_explicit_law():
  params = {'beta': 10.0, 'c': -0.2, 'alpha': 0.0, 'l_inf': 0.3, 'l_0': 5.0}
  x = np.logspace(4, 12, 9)
  np.testing.assert_allclose(fits.predict('m4', params, x),
                             0.3 + 10.0 * x ** -0.2, rtol=1e-12)


def test_m4_formula_and_y_max():
  x = np.logspace(6, 10, 30)
  y = fits.predict('m4', LAWS['typical'], x)
  law = scaling.fit(x, y, 'm4', y_max=1.0)
  assert law.params['l_0'] <= 1.0 + 1e-3
  assert law.formula('C', 'error') == (
      '(error - 0.1) / (0.95 - error)^0.6 = 3000 * C^-0.45')
  assert 'm4' in fits.FORMS and fits.MIN_POINTS['m4'] == 5
  assert 'm4' in fits.FORMULAS


# ----------------------------------------------------------------------------
# Bad input.


def test_m4_bad_input_says_what_is_wrong():
  x = np.logspace(6, 10, 30)
  y = fits.predict('m4', LAWS['typical'], x)
  with pytest.raises(ValueError, match='The m4 form needs at least 5 points; '
                     'got 4'):
    scaling.fit(x[:4], y[:4], 'm4')
  with pytest.raises(ValueError, match='at least 5 points with distinct x'):
    scaling.fit(np.repeat(x[:4], 2), np.repeat(y[:4], 2), 'm4')
  with pytest.raises(ValueError, match='1 of 30 x values are not positive'):
    scaling.fit(np.where(x == x[3], 0.0, x), y, 'm4')
  with pytest.raises(ValueError, match='1 of 30 y values are not positive'):
    scaling.fit(x, np.where(x == x[3], -0.1, y), 'm4')
  with pytest.raises(ValueError, match='not finite'):
    scaling.fit(x, np.where(x == x[3], np.nan, y), 'm4')
  with pytest.raises(ValueError, match=r'y_max 0\.5 is below the largest y'):
    scaling.fit(x, y, 'm4', y_max=0.5)


@pytest.mark.parametrize('y', [
    np.full(8, 0.25),  # constant
    np.linspace(0.1, 0.9, 8),  # increasing
    np.array([0.5, 0.3, 0.6, 0.2, 0.9, 0.1, 0.4, 0.3]),  # noise
    np.where(np.arange(8) < 4, 0.8, 0.2),  # a step
])
def test_m4_bad_data_never_crashes(y):
  x = np.logspace(10, 14, 8)
  law = scaling.fit(x, y, 'm4')
  assert isinstance(law.converged, bool) and law.message
  if law.converged:
    assert np.isfinite(law.residual)
    assert np.all(np.isfinite(law.predict(x)))


# ----------------------------------------------------------------------------
# The paper's benchmark: extrapolation on 72 vision learning curves.


def _held_out_rmse(frame, form, **kwargs):
  """Per curve: fit on Training == 1, RMSE of log y on Training == 0."""
  scores = {}
  for key, curve in frame.groupby(['Task', 'Model'], sort=False):
    fitted = curve[curve['Training'] == 1]
    held_out = curve[curve['Training'] == 0]
    law = scaling.fit(fitted['Seen Examples'].to_numpy(float),
                      fitted['Loss'].to_numpy(), form, **kwargs)
    error = (np.log(law.predict(held_out['Seen Examples'].to_numpy(float))) -
             np.log(held_out['Loss'].to_numpy()))
    scores[key] = float(np.sqrt(np.mean(error ** 2)))
  return scores


def test_m4_extrapolates_the_published_vision_curves():
  frame = pd.read_csv(BENCHMARK_CSV)
  assert frame.groupby(['Task', 'Model']).ngroups == 72
  m4 = _held_out_rmse(frame, 'm4', y_max=1.0)
  saturating = _held_out_rmse(frame, 'saturating')
  assert len(m4) == len(saturating) == 72
  assert all(np.isfinite(list(m4.values())))
  m4_median = np.median(list(m4.values()))
  saturating_median = np.median(list(saturating.values()))
  # Measured: 0.0329 for m4 and 0.0366 for saturating. The authors'
  # alternating procedure, re-implemented from its description
  # (tests/support/m4_alternating.py, run by hand: 4 minutes), scores
  # 0.0326 on the same split (0.0337 without l_0 <= 1): the 0.030 quoted
  # for M4 is reached by neither; that procedure stopped after 300 or
  # 1,000 rounds scores 0.023 or 0.026 (see _m4_start).
  assert m4_median < 0.034
  assert saturating_median == pytest.approx(0.0366, abs=0.002)
  assert m4_median < saturating_median - 0.002
  # M4 extrapolates better on 46 of the 72 curves.
  wins = sum(m4[key] < saturating[key] for key in m4)
  assert wins >= 40
