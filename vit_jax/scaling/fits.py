"""Scaling-law fits: one-variable laws, Chinchilla's two-variable law.

One-variable forms (x: compute, parameters or images seen; y: an error or
a loss, positive):

    power         y = a x^-b
    power_offset  y = c + a x^-b
    saturating    y = a (x + d)^-b + c    (Zhai et al. 2022, "Scaling Vision
                                          Transformers": error vs compute)
    m4            (y - l_inf) / (l_0 - y)^alpha = beta x^c
                                          (Alabdulmohsin et al. 2022, M4)

`fit` fits a form by least squares on log y (every point counts by its
relative error, so small errors weigh as much as large ones). `power` is
linear in log space and solved exactly; the others by
scipy.optimize.least_squares with an analytic Jacobian from a grid of
starts, the best kept. Inside, x and y are divided by their geometric means
so that every parameter is of order one whatever the units (FLOPs are
1e15 and more); `params` are in the caller's units. Constraints: a > 0,
0 <= b <= 10, c >= 0, 0 <= d <= 1e4 x the largest x (b is free for
`power`); a law ending on b's bounds or d's upper one is flagged
(`Fit.at_bound`).

`m4` is the estimator M4 of Alabdulmohsin, Neyshabur and Zhai 2022
("Revisiting Neural Scaling Laws in Language and Vision"): y is given
implicitly, between l_inf (the limit with infinite data) and l_0 (the
error of a random guess; y_max caps it, e.g. 1 for error rates), with
0 <= l_inf < min y, l_0 > max y, alpha >= 0, -10 <= c <= 0. As in the
paper it is fitted by least squares on log(y - l_inf) - alpha log(l_0 - y)
- log beta - c log x, from the paper's start (l_inf just below the
smallest y, l_0 just above the largest, the rest by linear least
squares), here jointly by scipy.optimize.least_squares rather than the
authors' alternating steps. The fit is local on purpose (see `_m4_start`).
`predict` solves the implicit equation, monotone in y, by a safeguarded
Newton iteration; alpha = 0 is the explicit y = l_inf + beta x^c.
`Fit.residual` is still the RMS error in log y of the prediction.

`fit_chinchilla` fits L(N, D) = E + A / N^alpha + B / D^beta as Hoffmann et
al. 2022 (approach 3) and Besiroglu et al. 2024 do: with a = log A,
b = log B, e = log E, the prediction is log L = logsumexp(a - alpha log N,
b - beta log D, e), and the Huber loss (delta 1e-3) of its difference from
log L is minimised by L-BFGS from a grid of starts.

`bootstrap` resamples points for percentile intervals of the parameters
(and of predictions, `Bootstrap.band`), or says why there are none
(`Bootstrap.degenerate`: e.g. every resample is the data itself); a law on
fewer points than its parameters + 2 is `underdetermined`;
`validate_extrapolation` fits below a threshold and scores the prediction
above it.

Every function raises ValueError for input it cannot fit: too few points
for the form (saying how many it needs), non-positive or non-finite
values (log axes need positive values). A fit whose optimiser stopped
without converging is returned with `converged` False and the reason in
`message`.
"""

import dataclasses
import functools
import itertools
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import optimize
from scipy import special
import threadpoolctl

FORMS = ('power', 'power_offset', 'saturating', 'm4')
# Parameters of each form, in order.
FORM_PARAMS = {
    'power': ('a', 'b'),
    'power_offset': ('a', 'b', 'c'),
    'saturating': ('a', 'b', 'c', 'd'),
    'm4': ('beta', 'c', 'alpha', 'l_inf', 'l_0'),
}
# Fewest points (with distinct x) that determine each form.
MIN_POINTS = {'power': 2, 'power_offset': 3, 'saturating': 4, 'm4': 5}
FORMULAS = {
    'power': 'y = a x^-b',
    'power_offset': 'y = c + a x^-b',
    'saturating': 'y = a (x + d)^-b + c',
    'm4': '(y - l_inf) / (l_0 - y)^alpha = beta x^c',
    'chinchilla': 'L = E + A / N^alpha + B / D^beta',
}
# The next simpler form, for callers that fall back when a form cannot be
# fitted (`fit_with_fallback`).
SIMPLER = {'saturating': 'power_offset', 'power_offset': 'power'}

_MAX_B = 10.0  # exponents beyond this are not a scaling law
_MAX_D = 1e4  # d at most this many times the largest (normalised) x
# M4: l_inf at most min y - margin, l_0 at least max y + margin (and at most
# y_max + margin), the margin this fraction of max y (the paper's 1e-3 for
# error rates).
_M4_MARGIN = 1e-3


@functools.lru_cache(maxsize=None)
def _threadpools() -> threadpoolctl.ThreadpoolController:
  return threadpoolctl.ThreadpoolController()


def _one_blas_thread(function):
  """Runs `function` with BLAS on one thread. The optimisers' problems
  are tiny (a few parameters), and OpenBLAS's threads only add wake-ups:
  on a busy machine (a test suite on 2 cores) they made L-BFGS 20 times
  slower."""

  @functools.wraps(function)
  def wrapped(*args, **kwargs):
    with _threadpools().limit(limits=1, user_api='blas'):
      return function(*args, **kwargs)

  return wrapped


@dataclasses.dataclass
class Fit:
  """A fitted one-variable law.

  Attributes:
    form: 'power', 'power_offset', 'saturating' or 'm4'.
    params: {'a', 'b'[, 'c'[, 'd']]} in the units of the data; for 'm4',
      {'beta', 'c', 'alpha', 'l_inf', 'l_0'} (FORMULAS['m4'], c <= 0).
    residual: root mean square of log(predicted) - log(y) over the points.
    converged: whether the optimiser reported convergence (always True for
      'power', solved exactly).
    message: how the fit ended (the optimiser's reason, parameters that
      ended on a bound).
    n_points: how many points were fitted.
    x_range: (smallest, largest) x fitted.
    at_bound: parameters that ended on a bound that makes the law
      degenerate (b = 0: flat; b or d at their upper bounds; for 'm4', c
      = 0 or c at -10), also named in `message`. c = 0 and d = 0 are not
      degenerate: the law is then the simpler form (nor, for 'm4', alpha
      = 0: the law is then y = l_inf + beta x^c).
  """
  form: str
  params: Dict[str, float]
  residual: float
  converged: bool
  message: str
  n_points: int
  x_range: Tuple[float, float]
  at_bound: Tuple[str, ...] = ()

  def predict(self, x) -> np.ndarray:
    return predict(self.form, self.params, x)

  def formula(self, x_name: str = 'x', y_name: str = 'y') -> str:
    """The law with its numbers: 'y = 0.05 + 3.2e+04 * (x + 1e+12)^-0.31'."""
    p = self.params
    if self.form == 'm4':
      return (f'({y_name} - {p["l_inf"]:.4g}) / ({p["l_0"]:.4g} - {y_name})'
              f'^{p["alpha"]:.4g} = {p["beta"]:.4g} * {x_name}^{p["c"]:.4g}')
    power = f'^{-p["b"]:.4g}'
    term = f'{p["a"]:.4g} * {x_name}{power}'
    # A shift below a millionth of the smallest x fitted changes nothing
    # there; it is left out (params keep it).
    if self.form == 'saturating' and not p['d'] < 1e-6 * self.x_range[0]:
      term = f'{p["a"]:.4g} * ({x_name} + {p["d"]:.4g}){power}'
    if self.form in ('power_offset', 'saturating'):
      term = f'{p["c"]:.4g} + {term}'
    return f'{y_name} = {term}'


def predict(form: str, params: Dict[str, float], x) -> np.ndarray:
  """The law `form` with `params` at x (a scalar or an array)."""
  x = np.asarray(x, dtype=np.float64)
  _check_form(form)
  if form == 'm4':
    return _m4_predict(params, x)
  shift = params.get('d', 0.0) if form == 'saturating' else 0.0
  offset = params.get('c', 0.0) if form != 'power' else 0.0
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    return offset + np.exp(
        np.log(params['a']) - params['b'] * np.log(x + shift))


def _check_form(form: str) -> None:
  if form not in FORMS:
    raise ValueError(f'Unknown form {form!r}; forms: {", ".join(FORMS)}.')


def check_points(x, y, needed: int, what: str,
                 x_name: str = 'x', y_name: str = 'y'
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """x and y as float64 arrays, or ValueError: different lengths,
  non-finite or non-positive values, fewer than `needed` points or
  distinct x values (`what` names the form in the message)."""
  x = np.asarray(x, dtype=np.float64).ravel()
  y = np.asarray(y, dtype=np.float64).ravel()
  if x.shape != y.shape:
    raise ValueError(f'{x_name} and {y_name} have different lengths '
                     f'({x.size} and {y.size}).')
  for name, values in ((x_name, x), (y_name, y)):
    bad = int(np.sum(~np.isfinite(values)))
    if bad:
      raise ValueError(f'{bad} of {values.size} {name} values are not finite '
                       f'(NaN or inf).')
    bad = int(np.sum(values <= 0))
    if bad:
      raise ValueError(f'{bad} of {values.size} {name} values are not '
                       f'positive; log axes need positive values.')
  if x.size < needed:
    raise ValueError(f'{what} needs at least {needed} points; got {x.size}.')
  distinct = np.unique(x).size
  if distinct < needed:
    raise ValueError(f'{what} needs at least {needed} points with distinct '
                     f'{x_name}; got {distinct} distinct of {x.size}.')
  return x, y


# ----------------------------------------------------------------------------
# One-variable laws.


def _model(form: str, theta: np.ndarray, xs: np.ndarray
           ) -> Tuple[np.ndarray, np.ndarray]:
  """log of the normalised prediction and its Jacobian in theta.

  theta: (log a, b, c, d) in normalised units, the tail absent for the
  simpler forms.
  """
  log_a, b = theta[0], theta[1]
  c = theta[2] if form != 'power' else 0.0
  d = theta[3] if form == 'saturating' else 0.0
  shifted = xs + d
  log_shifted = np.log(shifted)
  term = np.exp(log_a - b * log_shifted)
  value = c + term
  jac = np.empty((xs.size, theta.size))
  jac[:, 0] = term / value
  jac[:, 1] = -log_shifted * term / value
  if form != 'power':
    jac[:, 2] = 1.0 / value
  if form == 'saturating':
    jac[:, 3] = -b * term / shifted / value
  return np.log(value), jac


def _starts(form: str, xs: np.ndarray, ys: np.ndarray) -> List[np.ndarray]:
  """Initial normalised parameters: a grid over b, c and d, with log a
  through the data's mean for each."""
  exponents = (0.1, 0.4, 1.0)
  offsets = (0.0, 0.5, 0.9) if form != 'power' else (0.0,)
  shifts = (0.0, 1.0) if form == 'saturating' else (0.0,)
  starts = []
  floor = float(ys.min())
  for b, fraction, d in itertools.product(exponents, offsets, shifts):
    c = fraction * floor
    log_a = float(np.mean(np.log(ys - c) + b * np.log(xs + d)))
    theta = [log_a, b]
    if form != 'power':
      theta.append(c)
    if form == 'saturating':
      theta.append(d)
    starts.append(np.array(theta))
  return starts


def _normalise(form: str, params: Dict[str, float], x_scale: float,
               y_scale: float) -> np.ndarray:
  """Caller-unit parameters to theta (the inverse of `_denormalise`)."""
  b = float(params['b'])
  theta = [math.log(params['a'] / y_scale) - b * math.log(x_scale), b]
  if form != 'power':
    theta.append(float(params.get('c', 0.0)) / y_scale)
  if form == 'saturating':
    theta.append(float(params.get('d', 0.0)) / x_scale)
  return np.array(theta)


def _denormalise(form: str, theta: np.ndarray, x_scale: float,
                 y_scale: float) -> Dict[str, float]:
  log_a, b = float(theta[0]), float(theta[1])
  with np.errstate(over='ignore'):  # a law with b on its bound: a = inf
    a = float(np.exp(log_a + b * math.log(x_scale) + math.log(y_scale)))
  params = {'a': a, 'b': b}
  if form != 'power':
    params['c'] = float(theta[2]) * y_scale
  if form == 'saturating':
    params['d'] = float(theta[3]) * x_scale
  return params


# ----------------------------------------------------------------------------
# M4 (Alabdulmohsin et al. 2022): (y - l_inf) / (l_0 - y)^alpha = beta x^c.


def _m4_solve(log_f: np.ndarray, alpha: float, l_inf: float,
              l_0: float) -> np.ndarray:
  """The y in (l_inf, l_0) with (y - l_inf) / (l_0 - y)^alpha = f, for
  each log f (alpha > 0).

  With b = l_0 - l_inf and y = l_inf + b sigmoid(t), the equation is
  phi(t) = t + (alpha - 1) softplus(t) = log f - (1 - alpha) log b; phi
  increases (phi' = sigmoid(-t) + alpha sigmoid(t) >= min(1, alpha)), so
  a safeguarded Newton iteration on t, inside a bracket from these bounds
  on phi, finds the root.
  """
  span = l_0 - l_inf
  k = log_f - (1.0 - alpha) * math.log(span)
  delta = abs(alpha - 1.0) * math.log(2.0) + 1.0
  low = np.minimum(k - delta, (k - delta) / alpha)
  high = np.maximum(k + delta, (k + delta) / alpha)
  t = np.clip(k, low, high)
  for _ in range(200):
    sig = special.expit(t)
    value = t + (alpha - 1.0) * np.logaddexp(0.0, t) - k
    low = np.where(value < 0, t, low)
    high = np.where(value > 0, t, high)
    slope = 1.0 - sig + alpha * sig
    step = np.clip(t - value / slope, low, high)
    # A Newton step that leaves the bracket (or stalls on its end) bisects.
    outside = (step <= low) | (step >= high)
    step = np.where(outside, 0.5 * (low + high), step)
    done = np.abs(step - t) <= 1e-14 * (1.0 + np.abs(t))
    t = step
    if np.all(done | (value == 0)):
      break
  # y from whichever end is nearer, without cancellation.
  return np.where(t <= 0, l_inf + span * special.expit(t),
                  l_0 - span * special.expit(-t))


def _m4_predict(params: Dict[str, float], x: np.ndarray) -> np.ndarray:
  """y at x for the law FORMULAS['m4'] (explicit when alpha = 0)."""
  beta, c, alpha = params['beta'], params['c'], params['alpha']
  l_inf, l_0 = params['l_inf'], params['l_0']
  with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
    log_f = math.log(beta) + c * np.log(x)
    if alpha <= 0:
      return l_inf + np.exp(log_f)
    shape = np.shape(log_f)
    return _m4_solve(np.ravel(log_f), alpha, l_inf, l_0).reshape(shape)


def _m4_bounds(ys: np.ndarray, y_max: Optional[float]
               ) -> Tuple[List[float], List[float]]:
  """Bounds on theta = (log beta, c, alpha, l_inf, l_0), normalised: l_inf
  in [0, min y - margin], l_0 in [max y + margin, y_max + margin]."""
  margin = _M4_MARGIN * float(ys.max())
  inf_high = float(ys.min()) - margin
  if inf_high <= 0.5 * float(ys.min()):  # a range of 1000 and more
    inf_high = 0.5 * float(ys.min())
  zero_low = float(ys.max()) + margin
  zero_high = np.inf if y_max is None else max(y_max + margin,
                                              zero_low * (1 + 1e-9))
  return ([-np.inf, -_MAX_B, 0.0, 0.0, zero_low],
          [np.inf, 0.0, np.inf, inf_high, zero_high])


def _m4_residuals(theta: np.ndarray, log_xs: np.ndarray, ys: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray]:
  """log g(y) - log f(x) of the paper and its Jacobian in theta."""
  log_beta, c, alpha, l_inf, l_0 = theta
  excess, room = ys - l_inf, l_0 - ys
  log_room = np.log(room)
  value = np.log(excess) - alpha * log_room - log_beta - c * log_xs
  jac = np.empty((ys.size, 5))
  jac[:, 0] = -1.0
  jac[:, 1] = -log_xs
  jac[:, 2] = -log_room
  jac[:, 3] = -1.0 / excess
  jac[:, 4] = -alpha / room
  return value, jac


def _m4_linear(log_xs: np.ndarray, ys: np.ndarray, l_inf: float,
               l_0: float) -> Tuple[np.ndarray, float]:
  """(log beta, c, alpha) by bounded linear least squares for given l_inf
  and l_0 (the paper's inner step), as a start, and its cost."""
  design = np.stack([np.ones_like(ys), log_xs, np.log(l_0 - ys)], axis=1)
  result = optimize.lsq_linear(design, np.log(ys - l_inf),
                               bounds=([-np.inf, -_MAX_B, 0.0],
                                       [np.inf, 0.0, np.inf]))
  return (np.array([*result.x, l_inf, l_0]), float(result.cost))


def _m4_start(log_xs: np.ndarray, ys: np.ndarray, lower: List[float],
              upper: List[float]) -> np.ndarray:
  """The paper's start: l_inf just below the smallest y, l_0 just above the
  largest (the authors start it at 1 for error rates: the same median
  below), (log beta, c, alpha) solved for by linear least squares.

  The fit from here is local on purpose. The objective has several minima
  and the global one often puts l_inf at 0 (a power law with a slight
  bend), which extrapolates worse: on the 72 vision curves of the paper's
  benchmark (tests/data/benchmark_vision.csv) the median held-out RMSE of
  log y is 0.033 from this start and 0.040 from the best of a 4 x 4 grid
  of (l_inf, l_0). The authors' alternating steps converge slowly, l_inf
  still near the smallest y for long, which extrapolates better when
  stopped early (tests/support/m4_alternating.py re-implements them:
  0.0326 at their stopping rule, 0.023 after 300 rounds).
  """
  return _m4_linear(log_xs, ys, upper[3], lower[4])[0]


def _m4_normalise(params: Dict[str, float], x_scale: float,
                  y_scale: float) -> np.ndarray:
  """Caller-unit M4 parameters to theta (inverse of `_m4_denormalise`)."""
  c, alpha = float(params['c']), float(params['alpha'])
  return np.array([
      math.log(params['beta']) - (1 - alpha) * math.log(y_scale) +
      c * math.log(x_scale), c, alpha, params['l_inf'] / y_scale,
      params['l_0'] / y_scale])


def _m4_denormalise(theta: np.ndarray, x_scale: float,
                    y_scale: float) -> Dict[str, float]:
  log_beta, c, alpha, l_inf, l_0 = (float(v) for v in theta)
  log_beta += (1 - alpha) * math.log(y_scale) - c * math.log(x_scale)
  with np.errstate(over='ignore'):
    beta = float(np.exp(log_beta))
  return {'beta': beta, 'c': c, 'alpha': alpha, 'l_inf': l_inf * y_scale,
          'l_0': l_0 * y_scale}


def _fit_m4(x: np.ndarray, y: np.ndarray, init: Optional[Dict[str, float]],
            max_iterations: Optional[int], y_max: Optional[float]) -> Fit:
  """`fit` for 'm4' (module docstring): least squares on log g - log f."""
  x_range = (float(x.min()), float(x.max()))
  if y_max is not None and not y_max >= y.max():
    raise ValueError(f'y_max {y_max:.4g} is below the largest y '
                     f'({y.max():.4g}).')
  x_scale = float(np.exp(np.mean(np.log(x))))
  y_scale = float(np.exp(np.mean(np.log(y))))
  log_xs, ys = np.log(x / x_scale), y / y_scale
  lower, upper = _m4_bounds(
      ys, None if y_max is None else y_max / y_scale)

  def residuals(theta):
    return _m4_residuals(theta, log_xs, ys)[0]

  def jacobian(theta):
    return _m4_residuals(theta, log_xs, ys)[1]

  if init is not None:
    starts = [_m4_normalise(init, x_scale, y_scale)]
  else:
    starts = [_m4_start(log_xs, ys, lower, upper)]
  inside = []
  for theta0 in starts:
    # Strictly inside the bounds (log(y - l_inf) is not finite on them).
    theta0 = np.clip(theta0, lower, upper)
    theta0[3] = min(theta0[3], upper[3] - 1e-9 * ys.min())
    inside.append(theta0)
  result = _best_least_squares(residuals, jacobian, inside, lower, upper,
                               max_iterations)
  if result is None:
    nan_params = {name: math.nan for name in FORM_PARAMS['m4']}
    return Fit('m4', nan_params, math.nan, False,
               'no start gave a finite fit', x.size, x_range)
  converged = bool(result.status > 0)
  params = _m4_denormalise(result.x, x_scale, y_scale)
  with np.errstate(all='ignore'):
    residual = float(np.sqrt(np.mean(
        (np.log(_m4_predict(params, x)) - np.log(y)) ** 2)))
  reason = result.message.rstrip('.')
  notes = [reason if converged else f'did not converge: {reason}']
  at_bound = []
  if params['c'] >= -1e-9:
    at_bound.append('c')
    notes.append('c = 0: the data do not decrease')
  if params['c'] <= -_MAX_B * (1 - 1e-6):
    at_bound.append('c')
    notes.append(f'c at its bound -{_MAX_B:g}: not a power law (a plateau '
                 f'or a step?)')
  return Fit('m4', params, residual, converged, '; '.join(notes), x.size,
             x_range, tuple(at_bound))


@_one_blas_thread
def _best_least_squares(residuals, jacobian, starts, lower, upper,
                        max_iterations):
  """scipy's bounded least squares from each start; the best result
  (converged ones first, then by cost), or None when no start gave a
  finite one."""
  best = None  # ((not converged, cost), result)
  for theta0 in starts:
    try:
      with np.errstate(all='ignore'):
        result = optimize.least_squares(
            residuals, theta0, jac=jacobian, bounds=(lower, upper),
            method='trf', x_scale='jac', ftol=1e-10, xtol=1e-10, gtol=1e-10,
            max_nfev=max_iterations)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError):
      continue  # a start where the model is not finite
    if not np.all(np.isfinite(result.x)) or not np.isfinite(result.cost):
      continue
    key = (result.status <= 0, float(result.cost))
    if best is None or key < best[0]:
      best = (key, result)
  return None if best is None else best[1]


def fit(x, y, form: str, init: Optional[Dict[str, float]] = None,
        max_iterations: Optional[int] = None,
        y_max: Optional[float] = None) -> Fit:
  """Fits `form` to points (x, y) by least squares on log y ('m4': on
  the log of its implicit law, module docstring).

  Args:
    x: positive abscissae (compute, parameters, images seen).
    y: positive values (an error or a loss).
    form: 'power', 'power_offset', 'saturating' or 'm4' (FORMS).
    init: parameters (in the data's units) to start from instead of the
      grid of starts ('m4': the paper's start), e.g. a previous fit (what
      `bootstrap` does).
    max_iterations: the optimiser's budget of function evaluations per
      start (default: scipy's); a fit that runs out of it is returned
      with converged False.
    y_max: the largest value y can take (1 for an error rate), or None:
      for 'm4', l_0 is at most y_max (plus the margin); the other forms
      ignore it.

  Returns:
    The best Fit over the starts (the best converged one if any did).

  Raises:
    ValueError: an unknown form, fewer points than MIN_POINTS[form] (with
      distinct x), non-finite or non-positive values, y_max below the
      largest y.
  """
  _check_form(form)
  x, y = check_points(x, y, MIN_POINTS[form], f'The {form} form')
  if form == 'm4':
    return _fit_m4(x, y, init, max_iterations, y_max)
  x_scale = float(np.exp(np.mean(np.log(x))))
  y_scale = float(np.exp(np.mean(np.log(y))))
  xs, ys = x / x_scale, y / y_scale
  log_ys = np.log(ys)
  x_range = (float(x.min()), float(x.max()))

  if form == 'power':  # linear in log space: exact
    slope, intercept = np.polyfit(np.log(xs), log_ys, 1)
    theta = np.array([intercept, -slope])
    log_pred, _ = _model(form, theta, xs)
    residual = float(np.sqrt(np.mean((log_pred - log_ys) ** 2)))
    return Fit(form, _denormalise(form, theta, x_scale, y_scale), residual,
               True, 'exact (linear least squares on log x, log y)', x.size,
               x_range)

  lower = [-np.inf, 0.0, 0.0, 0.0][:len(FORM_PARAMS[form])]
  upper = [np.inf, _MAX_B, np.inf, _MAX_D * float(xs.max())][
      :len(FORM_PARAMS[form])]

  def residuals(theta):
    return _model(form, theta, xs)[0] - log_ys

  def jacobian(theta):
    return _model(form, theta, xs)[1]

  if init is not None:
    starts = [np.clip(_normalise(form, init, x_scale, y_scale), lower,
                      upper)]
  else:
    starts = _starts(form, xs, ys)
  result = _best_least_squares(
      residuals, jacobian, [np.clip(t, lower, upper) for t in starts],
      lower, upper, max_iterations)
  if result is None:
    nan_params = {name: math.nan for name in FORM_PARAMS[form]}
    return Fit(form, nan_params, math.nan, False,
               'no start gave a finite fit', x.size, x_range)
  converged = bool(result.status > 0)
  theta = result.x
  residual = float(np.sqrt(np.mean(residuals(theta) ** 2)))
  reason = result.message.rstrip('.')
  notes = [reason if converged else f'did not converge: {reason}']
  at_bound = []
  if theta[1] <= 1e-9:
    at_bound.append('b')
    notes.append('b = 0: the data do not decrease')
  if theta[1] >= _MAX_B * (1 - 1e-6):
    at_bound.append('b')
    notes.append(f'b at its bound {_MAX_B:g}: not a power law (a plateau '
                 f'or a step?)')
  if form == 'saturating' and theta[3] >= upper[3] * (1 - 1e-6):
    at_bound.append('d')
    notes.append('d at its bound: the curve is flat over the data')
  return Fit(form, _denormalise(form, theta, x_scale, y_scale), residual,
             converged, '; '.join(notes), x.size, x_range, tuple(at_bound))


def fit_with_fallback(x, y, form: str = 'saturating', fallback: bool = True,
                      **kwargs) -> Tuple[Fit, List[str]]:
  """`fit`, trying the next simpler form (SIMPLER) when `form` has too few
  points, does not converge or ends degenerate (`Fit.at_bound`), if
  `fallback`. Returns the fit and notes saying why each form was passed
  over.

  Raises:
    ValueError: the last form tried cannot be fitted (too few points for
      it, non-positive values).
  """
  notes = []
  while True:
    simpler = SIMPLER.get(form) if fallback else None
    try:
      result = fit(x, y, form, **kwargs)
    except ValueError as error:
      if simpler is None or 'needs at least' not in str(error):
        raise
      notes.append(f'{error} Fell back to {simpler}.')
      form = simpler
      continue
    if (result.converged and not result.at_bound) or simpler is None:
      return result, notes
    why = ('did not converge' if not result.converged else
           'is degenerate')
    notes.append(f'{form} {why} ({result.message}). Fell back to '
                 f'{simpler}.')
    form = simpler


# ----------------------------------------------------------------------------
# Uncertainty and validation.


# Fewest different sets of points among a bootstrap's fitted resamples for
# a percentile interval, and at least the law's parameters + 3: with
# fewer, its ends are one or a few laws fitted to (nearly) the data itself,
# not a spread (`Bootstrap.degenerate`). With parameters + 1 points (an
# `underdetermined` law) only parameters + 2 sets fit: the data and each
# leave-one-out, interpolated exactly.
MIN_DISTINCT_RESAMPLES = 5


def underdetermined(law: Fit) -> bool:
  """Whether `law` was fitted on fewer points than its parameters + 2: it
  (nearly) interpolates them, so its residual says nothing of how well
  the form fits, and its extrapolation is a guess (plots draw it thin and
  do not extend it)."""
  return law.n_points < len(law.params) + 2


@dataclasses.dataclass
class Bootstrap:
  """Percentile intervals of a fit's parameters over resampled points.

  Attributes:
    fit: the fit to all points.
    intervals: {parameter: (low, high)} at `confidence`; (NaN, NaN) when
      `degenerate`.
    samples: the parameters of each successful resample, one row each, in
      FORM_PARAMS[form] order.
    n_requested: resamples drawn.
    n_ok: resamples that gave a converged fit with finite parameters (the
      others had too few distinct points, did not converge, or gave an
      infinite a).
    confidence: e.g. 0.95.
    n_distinct: how many different sets of points the successful
      resamples have (duplicates aside).
    degenerate: why there is no interval, or None: fewer than two
      resamples fitted, every one that did is the data itself (as many
      points as parameters), fewer different sets of points fitted than
      MIN_DISTINCT_RESAMPLES and the parameters + 3, or every resample
      gave the same law. The
      intervals are then NaN and `band` too: a zero-width interval would
      claim a certainty the data cannot give.
  """
  fit: Fit
  intervals: Dict[str, Tuple[float, float]]
  samples: np.ndarray
  n_requested: int
  n_ok: int
  confidence: float
  n_distinct: int = 0
  degenerate: Optional[str] = None

  @property
  def form(self) -> str:
    return self.fit.form

  def band(self, x) -> Tuple[np.ndarray, np.ndarray]:
    """Percentile band (low, high) of the resampled laws' predictions;
    NaN where there is no interval (`degenerate`)."""
    x = np.asarray(x, dtype=np.float64)
    if self.n_ok < 2 or self.degenerate:
      nan = np.full(x.shape, np.nan)
      return nan, nan
    names = FORM_PARAMS[self.form]
    curves = np.stack([predict(self.form, dict(zip(names, row)), x)
                       for row in self.samples])
    tail = 50 * (1 - self.confidence)
    with np.errstate(invalid='ignore'):
      return (np.nanpercentile(curves, tail, axis=0),
              np.nanpercentile(curves, 100 - tail, axis=0))


@_one_blas_thread
def bootstrap(x, y, form: str, n: int = 200, seed: int = 0,
              confidence: float = 0.95,
              fitted: Optional[Fit] = None) -> Bootstrap:
  """Percentile confidence intervals of `form`'s parameters, from `n` fits
  to points resampled with replacement (each started from the fit to all
  points, `fitted` if given). Where the resamples cannot give an interval
  (e.g. 4 points for a 4-parameter law: every resample that fits is the
  data itself, and the "interval" has zero width) there is none: the
  intervals are NaN and `Bootstrap.degenerate` says why.

  Raises:
    ValueError: as `fit`.
  """
  x, y = check_points(x, y, MIN_POINTS.get(form, 0), f'The {form} form')
  full = fitted if fitted is not None else fit(x, y, form)
  names = FORM_PARAMS[form]
  # Each distinct (x, y) point's number: a resample's set of points.
  _, point_ids = np.unique(np.stack([x, y], axis=1), axis=0,
                           return_inverse=True)
  point_ids = np.asarray(point_ids).ravel()
  everything = frozenset(point_ids.tolist())
  rng = np.random.default_rng(seed)
  rows, point_sets = [], []
  for _ in range(n):
    index = rng.integers(0, x.size, x.size)
    if np.unique(x[index]).size < MIN_POINTS[form]:
      continue
    try:
      sample = fit(x[index], y[index], form, init=full.params)
    except ValueError:
      continue
    row = [sample.params[name] for name in names]
    if sample.converged and all(math.isfinite(v) for v in row):
      rows.append(row)
      point_sets.append(frozenset(point_ids[index].tolist()))
  samples = np.array(rows, dtype=np.float64).reshape(-1, len(names))
  tail = 50 * (1 - confidence)
  intervals = {}
  for i, name in enumerate(names):
    if len(rows) >= 2:
      low, high = np.percentile(samples[:, i], [tail, 100 - tail])
      intervals[name] = (float(low), float(high))
    else:
      intervals[name] = (math.nan, math.nan)
  n_distinct = len(set(point_sets))
  reason = _degenerate(len(everything), len(names), n, point_sets,
                       everything, intervals)
  if reason is not None:
    intervals = {name: (math.nan, math.nan) for name in names}
  return Bootstrap(full, intervals, samples, n, len(rows), confidence,
                   n_distinct, reason)


def _degenerate(n_points: int, n_params: int, n_requested: int,
                point_sets: List[frozenset], everything: frozenset,
                intervals: Dict[str, Tuple[float, float]]
                ) -> Optional[str]:
  """Why a bootstrap gives no interval (`Bootstrap.degenerate`), or None."""
  n_ok = len(point_sets)
  too_few = (f'too few distinct points: {n_points} points for a '
             f'{n_params}-parameter law; ')
  if n_points >= n_params + 2:
    too_few = ''
  if n_ok < 2:
    return (f'{too_few}{n_ok} of {n_requested} resamples could be fitted; '
            f'an interval needs at least 2')
  if all(points == everything for points in point_sets):
    if n_points <= n_params:
      return f'{too_few}every resample that fits is the data itself'
    return (f'{too_few}every resample that fits has all {n_points} points '
            f'of the data')
  n_distinct = len(set(point_sets))
  needed = max(MIN_DISTINCT_RESAMPLES, n_params + 3)
  if n_distinct < needed:
    return (f'{too_few}the {n_ok} resamples that fit have only '
            f'{n_distinct} different sets of points; an interval needs at '
            f'least {needed}')
  if all(high - low <= 1e-6 * max(abs(low), abs(high))
         for low, high in intervals.values()):
    return 'every resample that fits gives the same law (zero-width intervals)'
  return None


@dataclasses.dataclass
class Extrapolation:
  """How well a law fitted below `threshold` predicts the points above.

  Attributes:
    form: the form fitted.
    threshold: points with x < threshold were fitted, the others held out.
    n_fit, n_holdout: how many points on each side.
    log_rmse: root mean square of log(predicted) - log(y) on the held-out
      points.
    max_log_error: the largest |log(predicted) - log(y)| there.
    fit: the fit to the points below the threshold.
  """
  form: str
  threshold: float
  n_fit: int
  n_holdout: int
  log_rmse: float
  max_log_error: float
  fit: Fit


@_one_blas_thread
def validate_extrapolation(x, y, form: str, threshold: float,
                           **kwargs) -> Extrapolation:
  """Fits `form` to the points with x < threshold and scores its
  predictions at the points with x >= threshold.

  Raises:
    ValueError: too few points below the threshold for the form, none at
      or above it, or input `fit` refuses.
  """
  _check_form(form)
  x, y = check_points(x, y, 1, 'Extrapolation validation')
  below = x < threshold
  n_fit, n_holdout = int(below.sum()), int((~below).sum())
  if n_holdout == 0:
    raise ValueError(f'No point at or above the threshold {threshold:.4g} '
                     f'(the largest x is {x.max():.4g}): nothing to validate '
                     f'the extrapolation on.')
  needed = MIN_POINTS[form]
  if n_fit < needed or np.unique(x[below]).size < needed:
    raise ValueError(
        f'The {form} form needs at least {needed} points (with distinct x) '
        f'below the threshold {threshold:.4g}; there are {n_fit} '
        f'({np.unique(x[below]).size} distinct).')
  fitted = fit(x[below], y[below], form, **kwargs)
  with np.errstate(all='ignore'):
    errors = np.log(fitted.predict(x[~below])) - np.log(y[~below])
  return Extrapolation(form, float(threshold), n_fit, n_holdout,
                       float(np.sqrt(np.mean(errors ** 2))),
                       float(np.max(np.abs(errors))), fitted)


# ----------------------------------------------------------------------------
# Chinchilla: L(N, D) = E + A / N^alpha + B / D^beta.

# Starts on a grid like Hoffmann et al. 2022's (and Besiroglu et al. 2024's
# replication): a and b (log A, log B) in 0..25, e (log E) in -1..1.5,
# alpha and beta in 0..2.
CHINCHILLA_GRID = {
    'a': (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    'b': (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    'e': (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
    'alpha': (0.0, 0.5, 1.0, 1.5, 2.0),
    'beta': (0.0, 0.5, 1.0, 1.5, 2.0),
}


@dataclasses.dataclass
class ChinchillaFit:
  """A fitted L(N, D) = E + A / N^alpha + B / D^beta.

  Attributes:
    form: 'chinchilla'.
    params: {'A', 'B', 'E', 'alpha', 'beta'}.
    residual: root mean square of log(predicted) - log(L) over the points.
    converged: whether L-BFGS converged from the best start.
    message: the optimiser's reason.
    n_points: how many points were fitted.
    objective: the Huber objective at the optimum (summed over points).
  """
  form: str
  params: Dict[str, float]
  residual: float
  converged: bool
  message: str
  n_points: int
  objective: float

  def predict(self, n, d) -> np.ndarray:
    """The loss of a model of n parameters trained on d tokens."""
    p = self.params
    n = np.asarray(n, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    return p['E'] + p['A'] / n ** p['alpha'] + p['B'] / d ** p['beta']

  def optimal_allocation(self, compute) -> Tuple[np.ndarray, np.ndarray]:
    """The (N, D) minimising the loss at compute C = 6 N D (FLOPs)."""
    p = self.params
    alpha, beta = p['alpha'], p['beta']
    g = (alpha * p['A'] / (beta * p['B'])) ** (1 / (alpha + beta))
    c = np.asarray(compute, dtype=np.float64) / 6
    return (g * c ** (beta / (alpha + beta)),
            c ** (alpha / (alpha + beta)) / g)


def _huber(r: np.ndarray, delta: float) -> Tuple[np.ndarray, np.ndarray]:
  """Huber loss of r and its derivative, elementwise."""
  small = np.abs(r) <= delta
  loss = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta))
  grad = np.where(small, r, delta * np.sign(r))
  return loss, grad


def _chinchilla_objective(theta: np.ndarray, log_n: np.ndarray,
                          log_d: np.ndarray, log_loss: np.ndarray,
                          delta: float) -> Tuple[float, np.ndarray]:
  a, b, e, alpha, beta = theta
  terms = np.stack([a - alpha * log_n, b - beta * log_d,
                    np.full_like(log_n, e)])
  lse = special.logsumexp(terms, axis=0)
  weights = np.exp(terms - lse)  # d lse / d term
  loss, dloss = _huber(lse - log_loss, delta)
  grad = np.array([
      np.sum(dloss * weights[0]),
      np.sum(dloss * weights[1]),
      np.sum(dloss * weights[2]),
      -np.sum(dloss * weights[0] * log_n),
      -np.sum(dloss * weights[1] * log_d),
  ])
  return float(np.sum(loss)), grad


def _chinchilla_grid_values(grid: np.ndarray, log_n, log_d, log_loss,
                            delta) -> np.ndarray:
  """The objective at each row of `grid` (a, b, e, alpha, beta), at once."""
  a, b, e, alpha, beta = (grid[:, i:i + 1] for i in range(5))
  lse = np.logaddexp(np.logaddexp(a - alpha * log_n, b - beta * log_d), e)
  return _huber(lse - log_loss, delta)[0].sum(axis=1)


@_one_blas_thread
def fit_chinchilla(n, d, loss, delta: float = 1e-3,
                   grid: Optional[Dict[str, Sequence[float]]] = None,
                   starts: Optional[int] = 32) -> ChinchillaFit:
  """Fits L(N, D) = E + A / N^alpha + B / D^beta (module docstring).

  Args:
    n: parameters of each model.
    d: training tokens (or images) of each point.
    loss: the loss at each point.
    delta: the Huber loss's threshold on log residuals.
    grid: values of a, b, e, alpha and beta whose product is the grid of
      starts (default CHINCHILLA_GRID: 5,400 starts).
    starts: L-BFGS runs from this many of the grid's best points (the
      objective is evaluated on the whole grid at once first); the best
      optimum is kept. Every grid point as a start, as in the papers,
      is `starts=None`.

  Raises:
    ValueError: fewer than 5 points, or non-positive or non-finite values.
  """
  n, d = check_points(n, d, 0, 'The chinchilla form', 'N', 'D')
  n, loss = check_points(n, loss, 0, 'The chinchilla form', 'N', 'loss')
  if n.size < 5:
    raise ValueError(f'The chinchilla form needs at least 5 points; got '
                     f'{n.size}.')
  log_n, log_d, log_loss = np.log(n), np.log(d), np.log(loss)
  grid = grid or CHINCHILLA_GRID
  points = np.array(list(itertools.product(
      *(grid[name] for name in ('a', 'b', 'e', 'alpha', 'beta')))),
                    dtype=np.float64)
  if starts is not None and starts < len(points):
    values = np.concatenate([
        _chinchilla_grid_values(chunk, log_n, log_d, log_loss, delta)
        for chunk in np.array_split(points, max(1, len(points) // 512))])
    points = points[np.argsort(values, kind='stable')[:starts]]
  best = None
  for theta0 in points:
    result = optimize.minimize(
        _chinchilla_objective, theta0, args=(log_n, log_d, log_loss, delta),
        jac=True, method='L-BFGS-B',
        options={'maxiter': 2000, 'ftol': 1e-15, 'gtol': 1e-10})
    if not np.isfinite(result.fun):
      continue
    if best is None or result.fun < best.fun:
      best = result
  a, b, e, alpha, beta = (float(v) for v in best.x)
  params = {'A': math.exp(a), 'B': math.exp(b), 'E': math.exp(e),
            'alpha': alpha, 'beta': beta}
  lse = special.logsumexp(
      [a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)], axis=0)
  residual = float(np.sqrt(np.mean((lse - log_loss) ** 2)))
  message = best.message if isinstance(best.message, str) else str(
      best.message)
  return ChinchillaFit('chinchilla', params, residual, bool(best.success),
                       message, n.size, float(best.fun))
