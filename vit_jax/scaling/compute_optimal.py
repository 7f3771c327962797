"""Compute-optimal model sizes: Chinchilla's approaches 1 and 2.

Hoffmann et al. 2022 ("Training Compute-Optimal Large Language Models")
estimate how the compute-optimal parameter count N_opt and data D_opt grow
with compute C in three ways; approach 3 (the parametric L(N, D)) is
`fits.fit_chinchilla`. Here:

- approach 1, `envelope`: the lower envelope of the loss over compute
  taken over every evaluation of every run (a point is on it when its loss
  is lower than that of every point with less compute); each envelope
  point gives (C, N), and N_opt = k_N C^a, D_opt = k_D C^b are fitted by
  least squares in log-log space.
- approach 2, `isoflop`: points grouped by training compute into isoFLOP
  profiles (points within `width` decades of each budget); on each, a
  parabola of the loss in log N, whose vertex is N_opt at that budget (a
  profile with fewer than 3 model sizes, a parabola opening downwards or
  a vertex outside the sizes tried gives no optimum, and a note why);
  then the same power laws.

D is the training data in the caller's units: `d` if given, else
C / (6 N) (tokens or images for a dense transformer's 6 N FLOPs per
example; with C in FLOPs). Then b = 1 - a exactly.

On the Chinchilla paper's own points (Epoch AI's extraction of its
Figure 4, tests/data/chinchilla_svg_extracted.csv), approach 1 gives
a = 0.51 and approach 2 at the paper's nine budgets a = 0.500; the paper
reports a = 0.50 and 0.49 (tests/test_scaling_compute_optimal.py).
"""

import dataclasses
from typing import List, Optional, Sequence

import numpy as np

from vit_jax.scaling import fits as fits_lib
from vit_jax.scaling import frontiers as frontier_lib

APPROACHES = ('envelope', 'isoflop')


@dataclasses.dataclass
class IsoFlopProfile:
  """One budget's points and parabola (approach 2).

  Attributes:
    budget: the compute budget (the caller's units).
    n, loss: the profile's points.
    coefficients: (c2, c1, c0) of loss = c2 u^2 + c1 u + c0, u = ln N;
      None when fewer than 3 sizes.
    n_opt, loss_opt: the vertex, or NaN (see note).
    note: why there is no optimum, or ''.
  """
  budget: float
  n: np.ndarray
  loss: np.ndarray
  coefficients: Optional[np.ndarray]
  n_opt: float
  loss_opt: float
  note: str = ''

  def curve(self, n) -> np.ndarray:
    """The parabola's loss at parameter counts `n`."""
    if self.coefficients is None:
      return np.full(np.shape(n), np.nan)
    return np.polyval(self.coefficients, np.log(np.asarray(n, np.float64)))


@dataclasses.dataclass
class ComputeOptimal:
  """N_opt(C) = n_coef C^a and D_opt(C) = d_coef C^b from the optima.

  Attributes:
    approach: 'envelope' (Chinchilla's approach 1) or 'isoflop' (2).
    compute, n_opt, d_opt, loss: the optima the laws are fitted on.
    a, n_coef, b, d_coef: the power laws.
    profiles: approach 2's isoFLOP profiles (every budget, with or
      without an optimum); empty for approach 1.
  """
  approach: str
  compute: np.ndarray
  n_opt: np.ndarray
  d_opt: np.ndarray
  loss: np.ndarray
  a: float
  n_coef: float
  b: float
  d_coef: float
  profiles: List[IsoFlopProfile] = dataclasses.field(default_factory=list)

  def n_opt_at(self, compute) -> np.ndarray:
    return self.n_coef * np.asarray(compute, np.float64) ** self.a

  def d_opt_at(self, compute) -> np.ndarray:
    return self.d_coef * np.asarray(compute, np.float64) ** self.b

  def describe(self) -> str:
    name = {'envelope': 'approach 1 (loss envelope)',
            'isoflop': 'approach 2 (isoFLOP parabolas)'}[self.approach]
    return (f'{name}: N_opt = {self.n_coef:.4g} C^{self.a:.4g}, D_opt = '
            f'{self.d_coef:.4g} C^{self.b:.4g} (from {self.compute.size} '
            f'optima)')


def _inputs(n, c, loss, d):
  n, c, loss = (np.asarray(v, np.float64).ravel() for v in (n, c, loss))
  d = None if d is None else np.asarray(d, np.float64).ravel()
  sizes = [v.size for v in (n, c, loss, d) if v is not None]
  if len(set(sizes)) > 1:
    raise ValueError(f'n, c, loss (and d) need one length each, got '
                     f'{", ".join(map(str, sizes))}.')
  d = c / (6.0 * n) if d is None else d
  bad = ~(np.isfinite(n) & np.isfinite(c) & np.isfinite(loss) &
          np.isfinite(d) & (n > 0) & (c > 0) & (loss > 0) & (d > 0))
  if bad.any():
    raise ValueError(f'{int(bad.sum())} point(s) are not finite and '
                     f'positive (parameters, compute, loss and data must '
                     f'be, for log axes), e.g. index {int(np.argmax(bad))}.')
  return n, c, loss, d


def _power_laws(approach, compute, n_opt, d_opt, loss, profiles=()):
  if np.unique(compute).size < 2:
    raise ValueError(f'{approach}: {compute.size} optimum(s) at '
                     f'{np.unique(compute).size} distinct compute value(s); '
                     f'the power laws need at least 2.')
  law_n = fits_lib.fit(compute, n_opt, 'power')
  law_d = fits_lib.fit(compute, d_opt, 'power')
  # fits' power form is a x^-b: N_opt grows, so its exponent is -b.
  return ComputeOptimal(approach, compute, n_opt, d_opt, loss,
                        -law_n.params['b'], law_n.params['a'],
                        -law_d.params['b'], law_d.params['a'],
                        list(profiles))


def envelope(n, c, loss, d=None) -> ComputeOptimal:
  """Chinchilla's approach 1 (module docstring).

  Raises:
    ValueError: mismatched lengths, values that are not positive and
      finite, or an envelope of fewer than 2 compute values.
  """
  n, c, loss, d = _inputs(n, c, loss, d)
  on = np.flatnonzero(frontier_lib.pareto_mask(c, loss))
  on = on[np.argsort(c[on])]
  return _power_laws('envelope', c[on], n[on], d[on], loss[on])


def isoflop(n, c, loss, budgets: Optional[Sequence[float]] = None,
            width: float = 0.1, d=None) -> ComputeOptimal:
  """Chinchilla's approach 2 (module docstring).

  Args:
    n, c, loss: parameters, training compute and loss (or error) of each
      point (runs' final evaluations, or every evaluation).
    budgets: the isoFLOP budgets; default 8 log-spaced over the range of c.
    width: a point belongs to a budget when |log10 c - log10 budget| <=
      width.
    d: the training data of each point (default c / (6 n)).

  Raises:
    ValueError: as `envelope`, a width <= 0, or fewer than 2 budgets with
      an optimum (the notes of the others say why).
  """
  n, c, loss, d = _inputs(n, c, loss, d)
  if not width > 0:
    raise ValueError(f'isoflop: width must be > 0 decades, got {width!r}.')
  if budgets is None:
    budgets = np.geomspace(c.min(), c.max(), 8)
  profiles = []
  for budget in budgets:
    inside = np.abs(np.log10(c) - np.log10(budget)) <= width
    pn, pl = n[inside], loss[inside]
    nan = float('nan')
    if np.unique(pn).size < 3:
      profiles.append(IsoFlopProfile(
          float(budget), pn, pl, None, nan, nan,
          f'{np.unique(pn).size} model size(s) within {width:g} decades; '
          f'a parabola needs 3'))
      continue
    coefficients = np.polyfit(np.log(pn), pl, 2)
    c2, c1, _ = coefficients
    note = ''
    if c2 <= 0:
      note = 'the parabola opens downwards: no minimum'
    else:
      vertex = -c1 / (2 * c2)
      if not np.log(pn.min()) <= vertex <= np.log(pn.max()):
        note = (f'the minimum (N = {np.exp(vertex):.3g}) lies outside the '
                f'sizes tried ({pn.min():.3g} .. {pn.max():.3g})')
    if note:
      profiles.append(IsoFlopProfile(float(budget), pn, pl, coefficients,
                                     nan, nan, note))
      continue
    n_opt = float(np.exp(vertex))
    profiles.append(IsoFlopProfile(
        float(budget), pn, pl, coefficients, n_opt,
        float(np.polyval(coefficients, vertex))))
  good = [p for p in profiles if np.isfinite(p.n_opt)]
  if len(good) < 2:
    notes = '; '.join(f'{p.budget:.3g}: {p.note}' for p in profiles
                      if p.note)
    raise ValueError(f'isoflop: {len(good)} budget(s) gave an optimum; the '
                     f'power laws need 2 ({notes}).')
  compute = np.array([p.budget for p in good])
  n_opt = np.array([p.n_opt for p in good])
  # D at each optimum: at the budget's own compute, with the same relation
  # between c, n and d as the points (c / (6 n) unless d was given, then
  # the profile's d interpolated in log N).
  d_opt = []
  for p in good:
    inside = np.abs(np.log10(c) - np.log10(p.budget)) <= width
    order = np.argsort(n[inside])
    d_opt.append(float(np.exp(np.interp(
        np.log(p.n_opt), np.log(n[inside][order]),
        np.log(d[inside][order] * p.budget / c[inside][order])))))
  return _power_laws('isoflop', compute, n_opt, np.array(d_opt),
                     np.array([p.loss_opt for p in good]), profiles)
