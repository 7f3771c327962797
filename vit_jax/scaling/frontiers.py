"""Compute-optimal frontiers of a `load_runs` table, and fits on them.

The frontier of a family is the lower envelope of the error over x taken
over every evaluation point of every run of that family (intermediate
steps, cooldown branches, unfinished and failed runs included): a point
is on it when its error is lower than that of every point with less x.
A scaling law fitted to it is the best error reachable at each x.
"""

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from vit_jax.scaling import fits
from vit_jax.scaling import runs as runs_lib

AUTO = 'auto'  # saturating, falling back to simpler forms


def pareto_mask(x, y) -> np.ndarray:
  """Which points have y lower than every point with smaller x."""
  x = np.asarray(x, dtype=np.float64)
  y = np.asarray(y, dtype=np.float64)
  order = np.lexsort((y, x))  # by x, ties by y
  mask = np.zeros(x.size, dtype=bool)
  best = np.inf
  for i in order:
    if y[i] < best:
      mask[i] = True
      best = y[i]
  return mask


def points(table: pd.DataFrame, x: str, metric: str
           ) -> Tuple[pd.DataFrame, pd.DataFrame]:
  """The points of `metric` (as an error: `runs.to_error`) against x.

  Returns:
    (usable, skipped). usable: family, run, workdir, state, is_branch,
    step, x, y (the error), for rows where the metric was logged and both
    values are positive. skipped: run, workdir, step, reason for rows where
    the metric was logged but x is unknown (NaN, e.g. params without
    summary.json) or either value is not positive (log axes need positive
    values).

  Raises:
    ValueError: no run logged `metric` (naming the metrics there are), or
      an unknown x axis.
  """
  column = runs_lib.x_column(x)
  available = runs_lib.metric_columns(table)
  if metric not in available or table[metric].isna().all():
    listed = [name for name in available if table[name].notna().any()]
    raise ValueError(
        f'No run has the metric {metric!r}; metrics available: '
        f'{", ".join(listed) if listed else "none (no evaluation logged)"}.')
  rows = table[table[metric].notna()]
  frame = pd.DataFrame({
      'family': rows['family'], 'run': rows['run'],
      'workdir': rows['workdir'], 'state': rows['state'],
      'is_branch': rows['is_branch'], 'step': rows['step'],
      'x': rows[column].astype('float64'),
      'y': runs_lib.to_error(metric, rows[metric]),
  })
  unknown = frame['x'].isna() | frame['y'].isna()
  non_positive = ~unknown & ((frame['x'] <= 0) | (frame['y'] <= 0))
  skipped = frame.loc[unknown | non_positive,
                      ['run', 'workdir', 'step']].copy()
  skipped['reason'] = np.where(unknown[unknown | non_positive],
                               f'{x} unknown', 'not positive')
  usable = frame[~unknown & ~non_positive].reset_index(drop=True)
  return usable, skipped.reset_index(drop=True)


def describe_skipped(skipped: pd.DataFrame, x: str, metric: str) -> str:
  """One line naming the runs whose points were left out, or ''."""
  if skipped.empty:
    return ''
  value = ('error (1 - value)' if runs_lib.is_accuracy(metric) else 'value')
  why = {
      'not positive': f'the {value} or {x} is not positive (log axes need '
                      f'positive values)',
      f'{x} unknown': f'{x} is unknown (not recorded in the workdir)',
  }
  parts = []
  for reason, group in skipped.groupby('reason', sort=True):
    counts = group.groupby('run', sort=True).size()
    listed = ', '.join(f'{run} ({count})' for run, count in counts.items())
    parts.append(f'{len(group)} point(s) where {why.get(reason, reason)}, '
                 f'from runs: {listed}')
  return f'{metric} vs {x}: skipped ' + '; '.join(parts) + '.'


@dataclasses.dataclass
class Frontier:
  """One family's frontier of `metric` (as an error) against `x`.

  Attributes:
    family: the model family.
    x: the x axis (a name of runs.X_COLUMNS or a column).
    metric: the metric; y is its error (`runs.to_error`).
    points: every usable point of the family (`points`'s columns).
    frontier: the points on the lower envelope, ordered by x.
    fit: the law fitted to the frontier, or None (see notes).
    notes: why a form was passed over, or why nothing was fitted.
  """
  family: str
  x: str
  metric: str
  points: pd.DataFrame
  frontier: pd.DataFrame
  fit: Optional[fits.Fit]
  notes: List[str]


def frontier(table: pd.DataFrame, x: str, y: str,
             form: Optional[str] = AUTO, **fit_kwargs
             ) -> Dict[str, Frontier]:
  """Each family's compute-optimal frontier of metric `y` against `x`, and
  a law fitted on it.

  Args:
    table: `load_runs`'s table.
    x: 'compute/flops', 'compute/images_seen', 'params',
      'compute/device_seconds' (or their columns).
    y: a metric; accuracies become errors (`runs.to_error`).
    form: a form of fits.FORMS (strict: a family with too few frontier
      points gets no fit, and the reason in notes), AUTO (saturating,
      falling back to power_offset, then power: `fits.fit_with_fallback`),
      or None (no fit).
    **fit_kwargs: passed to `fits.fit`.

  Returns:
    {family: Frontier}, families sorted.

  Raises:
    ValueError: as `points`.
  """
  usable, _ = points(table, x, y)
  result = {}
  for family, group in usable.groupby('family', sort=True):
    group = group.reset_index(drop=True)
    on = group[pareto_mask(group['x'], group['y'])].sort_values('x')
    on = on.reset_index(drop=True)
    fitted, notes = None, []
    if form is not None:
      try:
        if form == AUTO:
          fitted, notes = fits.fit_with_fallback(
              on['x'], on['y'], 'saturating', **fit_kwargs)
        else:
          fitted = fits.fit(on['x'], on['y'], form, **fit_kwargs)
      except ValueError as error:
        notes.append(f'no fit: {error}')
    result[family] = Frontier(str(family), x, y, group, on, fitted, notes)
  return result
