"""Compute-optimal frontiers of a `load_runs` table, and fits on them.

The frontier of a family is the lower envelope of the error over x taken
over every evaluation point of every run of that family (intermediate
steps, cooldown branches, unfinished and failed runs included): a point
is on it when its error is lower than that of every point with less x.
A scaling law fitted to it is the best error reachable at each x.

Groups: by default each model family is one group (`family` in the
output holds the group's label). `group_by` names table columns instead,
e.g. ('family', 'model.pool_type') or ('sweep',): each distinct
combination is a group, labelled by its values ('vit pool_type=map';
the family and sweep values bare). More than one sweep loaded and no
`group_by`: groups are (sweep, family), so two sweeps given together
never merge unasked.

Seeds: runs that differ only in a seed key (`seed_keys`, default
('seed',), any hyperparameter column) are one configuration; at each step
their points are averaged (x and y; `y_std`, `n_seeds`, `seeds` kept)
before the frontier is taken, so the frontier is not the best of N seeds.
"""


import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from vit_jax.scaling import fits
from vit_jax.scaling import runs as runs_lib

AUTO = 'auto'  # saturating, falling back to simpler forms
SEED_KEYS = ('seed',)


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


def default_group_by(table: pd.DataFrame) -> Tuple[str, ...]:
  """('family',), or ('sweep', 'family') when the table holds several
  sweeps (module docstring)."""
  if 'sweep' in table.columns and table['sweep'].nunique() > 1:
    return ('sweep', 'family')
  return ('family',)


def _labels(table: pd.DataFrame, group_by: Sequence[str]) -> pd.Series:
  """Each row's group label: bare family / sweep / variant values,
  'key=value' for hyperparameters (the key's last part)."""
  valid = [c for c in table.columns
           if c in ('family', 'sweep', 'variant', 'state', 'is_branch') or
           c in runs_lib.hparam_columns(table)]
  unknown = [key for key in group_by if key not in valid]
  if unknown or not group_by:
    raise ValueError(f'Cannot group by {list(group_by)}: '
                     f'{unknown or "nothing given"}; valid keys: '
                     f'{", ".join(valid)}.')

  def part(key, value):
    if key in ('family', 'sweep', 'variant'):
      return str(value)
    return f'{key.rsplit(".", 1)[-1]}={value}'

  return pd.Series([' '.join(part(k, v) for k, v in zip(group_by, values))
                    for values in zip(*(table[k] for k in group_by))],
                   index=table.index, dtype=object)


def group_labels(table: pd.DataFrame,
                 group_by: Optional[Sequence[str]] = None) -> pd.Series:
  """Each row's group label, as the frontiers name their groups (module
  docstring; default `default_group_by`). `table` is a `load_runs` table,
  or any frame with its family / sweep / variant / hyperparameter columns
  (and `attrs['hparams']`), e.g. one row per run.

  Raises:
    ValueError: a key that is not a column (naming the valid ones).
  """
  group_by = tuple(group_by) if group_by else default_group_by(table)
  return _labels(table, group_by)


def _average_seeds(frame: pd.DataFrame, config_keys: List[str],
                   seed_keys: List[str]) -> pd.DataFrame:
  """Points of runs alike but for their seeds averaged per step."""
  key = ['family', *config_keys, 'is_branch', 'branch_step']
  runs = frame.drop_duplicates('workdir')
  ids = runs[key].astype(str).agg('\x1f'.join, axis=1)
  frame = frame.assign(_config=frame['workdir'].map(
      dict(zip(runs['workdir'], ids))))
  out = []
  for _, group in frame.groupby('_config', sort=True):
    members = group.drop_duplicates('workdir').sort_values('workdir')
    seeds = [', '.join(f'{k.rsplit(".", 1)[-1]}={v}' for k, v in
                       zip(seed_keys, values))
             for values in zip(*(members[k] for k in seed_keys))]
    named = [f'{k.rsplit(".", 1)[-1]}={members[k].iloc[0]}'
             for k in config_keys]
    label = ','.join(named) if named else str(members['run'].iloc[0])
    if len(members) > 1:
      label = f'{label} (mean of {len(members)} seeds)'
    states = set(members['state'])
    state = ('failed' if 'failed' in states else
             'unfinished' if 'unfinished' in states else 'done')
    for step, at in group.groupby('step', sort=True):
      out.append({
          'family': at['family'].iloc[0], 'model': at['model'].iloc[0],
          'run': label, 'workdir': members['workdir'].iloc[0],
          'state': state, 'is_branch': bool(at['is_branch'].iloc[0]),
          'step': int(step), 'x': float(at['x'].mean()),
          'y': float(at['y'].mean()),
          'y_std': float(at['y'].std(ddof=1)) if len(at) > 1 else np.nan,
          'n_seeds': int(len(at)), 'seeds': '; '.join(seeds),
          'params': float(at['params'].mean())})
  return pd.DataFrame(out, columns=POINT_COLUMNS)


POINT_COLUMNS = ('family', 'model', 'run', 'workdir', 'state', 'is_branch',
                 'step', 'x', 'y', 'y_std', 'n_seeds', 'seeds', 'params')


def points(table: pd.DataFrame, x: str, metric: str,
           group_by: Optional[Sequence[str]] = None,
           seed_keys: Sequence[str] = SEED_KEYS
           ) -> Tuple[pd.DataFrame, pd.DataFrame]:
  """The points of `metric` (as an error: `runs.to_error`) against x.

  Args:
    table: `load_runs`'s table.
    x: the x axis (a name of runs.X_COLUMNS or a column).
    metric: the metric.
    group_by: columns whose values make a group (module docstring; default
      `default_group_by`).
    seed_keys: hyperparameter columns that only reseed a run; runs alike
      but for them are averaged (module docstring). Keys the table lacks
      are ignored.

  Returns:
    (usable, skipped). usable: POINT_COLUMNS: family (the group's label),
    model (the model family), run (a configuration's label when seeds were
    averaged), workdir (its first run's), state, is_branch, step, x, y
    (the error; the seeds' mean), y_std (NaN for one seed), n_seeds, seeds
    ('seed=0; seed=1'), params (the run's parameter count, NaN without
    summary.json; the figures size markers by it), for rows where the
    metric was logged and both values are positive. skipped: run,
    workdir, step, reason for rows where the metric was logged but x is
    unknown (NaN, e.g. params without summary.json) or either value is
    not positive (log axes need positive values).

  Raises:
    ValueError: no run logged `metric` (naming the metrics there are), an
      unknown x axis, or a group_by key that is not a column (naming the
      valid ones).
  """
  column = runs_lib.x_column(x)
  available = runs_lib.metric_columns(table)
  if metric not in available or table[metric].isna().all():
    listed = [name for name in available if table[name].notna().any()]
    raise ValueError(
        f'No run has the metric {metric!r}; metrics available: '
        f'{", ".join(listed) if listed else "none (no evaluation logged)"}.')
  group_by = tuple(group_by) if group_by else default_group_by(table)
  labels = _labels(table, group_by)
  rows = table[table[metric].notna()]
  hparams = runs_lib.hparam_columns(table)
  seeds = [k for k in seed_keys if k in hparams]
  frame = pd.DataFrame({
      'family': labels[rows.index], 'model': rows['family'],
      'run': rows['run'], 'workdir': rows['workdir'], 'state': rows['state'],
      'is_branch': rows['is_branch'], 'step': rows['step'],
      'x': rows[column].astype('float64'),
      'y': runs_lib.to_error(metric, rows[metric]),
      'branch_step': rows['branch_step'],
      'params': rows['params'].astype('float64'),
      **{k: rows[k] for k in hparams},
  })
  unknown = frame['x'].isna() | frame['y'].isna()
  non_positive = ~unknown & ((frame['x'] <= 0) | (frame['y'] <= 0))
  skipped = frame.loc[unknown | non_positive,
                      ['run', 'workdir', 'step']].copy()
  skipped['reason'] = np.where(unknown[unknown | non_positive],
                               f'{x} unknown', 'not positive')
  usable = frame[~unknown & ~non_positive]
  if seeds and not usable.empty:
    usable = _average_seeds(usable, [k for k in hparams if k not in seeds],
                            seeds)
  else:
    usable = usable.assign(y_std=np.nan, n_seeds=1, seeds='')[
        list(POINT_COLUMNS)]
  return usable.reset_index(drop=True), skipped.reset_index(drop=True)


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
  """One group's frontier of `metric` (as an error) against `x`.

  Attributes:
    family: the group's label (the model family unless grouped otherwise;
      module docstring).
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
             form: Optional[str] = AUTO,
             group_by: Optional[Sequence[str]] = None,
             seed_keys: Sequence[str] = SEED_KEYS, **fit_kwargs
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
    group_by, seed_keys: as `points`'s.
    **fit_kwargs: passed to `fits.fit`.

  Returns:
    {group label: Frontier}, sorted.

  Raises:
    ValueError: as `points`.
  """
  usable, _ = points(table, x, y, group_by, seed_keys)
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
