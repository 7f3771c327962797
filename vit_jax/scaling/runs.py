"""Workdirs as one table of evaluation points: `load_runs`.

Each workdir is read through `vit_jax.paths` (local or gs://): its
`config.json` (family, variant, total_steps, batch_size, and `branch`:
`trunk` (the trunk's workdir) and `step` for a cooldown branch),
`summary.json` (`vit_jax.compute`'s facts: params, params_body,
flops_per_step, ..., and where the run stopped; absent in old runs),
`metrics.jsonl` (rows merged by step) and the `done` / `error` markers.
A row of the table is an evaluation point: a step at which a metric
outside `train/` and `compute/` was logged (val/*, fewshot/*, ...).

Each row also says where the run came from and how it was set: `sweep`
(the label given for its pattern, else the name of the directory holding
the workdir, its full path where two such names clash) and one column per
hyperparameter, named by its dotted config key (`lr`, `seed`,
`model.pool_type`; `config`, the recipe, where runs set their own): the
keys the sweeps' sweep.json files override, or,
for workdirs outside a sweep, the config keys whose values differ between
the runs loaded. `hparam_columns(table)` lists them; so `load_runs` is a
per-run hyperparameter table too.

Cumulative quantities at an evaluation step (FLOPs, images seen, device
seconds) are the logged `compute/*` value at that step (or summary.json's
at the step the run stopped); else linear interpolation in step between
the logged values (with 0 at step 0); else, past the last logged value,
the per-step rate from summary.json / config.json (flops_per_step,
batch_size) times the step; else the last logged interval's slope
continued. Without any: NaN. A logged value of 0 past step 0 counts as
unknown (the trainer logs compute/flops 0 when XLA gave no FLOP count).
For a cooldown branch they include the trunk's share (its step count, and
so compute/flops, continue from the branch point).
"""

import fnmatch
import json
import math
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from vit_jax import layout
from vit_jax import paths

STATES = ('done', 'failed', 'unfinished')
# The table's columns before the metrics, in order.
META_COLUMNS = ('run', 'workdir', 'sweep', 'family', 'variant', 'params',
                'params_body', 'state', 'is_branch', 'branch_from',
                'branch_step', 'total_steps', 'step', 'images_seen',
                'compute', 'device_seconds')
# The x axes a scaling law can be fitted against: name -> column.
X_COLUMNS = {
    'compute/flops': 'compute',
    'compute/images_seen': 'images_seen',
    'params': 'params',
    'compute/device_seconds': 'device_seconds',
}
X_LABELS = {
    'compute': 'training compute (FLOPs)',
    'images_seen': 'images seen',
    'params': 'parameters',
    'params_body': 'parameters (without embedding and head)',
    'device_seconds': 'device seconds',
}

_MAGIC = re.compile(r'[*?[]')
_FEWSHOT = re.compile(r'^fewshot/[^/]+/\d+shot$')
_URI_ROOT = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]*://[^/]*)/*(.*)$')


# ----------------------------------------------------------------------------
# Metric names.


# Segmentation's overlap scores, higher is better: PREFIX/miou, per class
# PREFIX/iou/<c>, and volumes' PREFIX/dice, PREFIX/dice/<c>.
_OVERLAP = re.compile(r'(^|/)(miou|iou/\d+|dice|dice/\d+)$')


def is_accuracy(name: str) -> bool:
  """Whether a metric is an accuracy or overlap score (its error is
  1 - value): names with 'accuracy' or 'top5', fewshot/<dataset>/<k>shot,
  and segmentation's mIoU / IoU / Dice; never a `_std`."""
  if name.endswith('_std'):
    return False
  return ('accuracy' in name or 'top5' in name or
          bool(_FEWSHOT.match(name)) or bool(_OVERLAP.search(name)))


def to_error(name: str, values):
  """Error from a metric's values: 1 - value for accuracies (`is_accuracy`),
  the value itself for losses and errors."""
  values = np.asarray(values, dtype=np.float64)
  return 1.0 - values if is_accuracy(name) else values


def error_label(name: str) -> str:
  return f'error (1 - {name})' if is_accuracy(name) else name


def is_eval_metric(name: str) -> bool:
  """A metric that makes an evaluation point: not train/*, not compute/*."""
  return not name.startswith(('train/', 'compute/'))


def x_column(x: str) -> str:
  """The table column of an x axis given by name ('compute/flops') or by
  column ('compute')."""
  if x in X_COLUMNS:
    return X_COLUMNS[x]
  if x in X_COLUMNS.values() or x == 'params_body':
    return x
  raise ValueError(f'Unknown x axis {x!r}; choose from '
                   f'{", ".join(X_COLUMNS)}.')


# ----------------------------------------------------------------------------
# Finding workdirs.


def _split_pattern(pattern: str) -> Tuple[str, List[str]]:
  """(root, components): the root is '' for a relative local pattern."""
  if not paths.is_local(pattern):
    match = _URI_ROOT.match(pattern)
    return match.group(1), [p for p in match.group(2).split('/') if p]
  parts = [p for p in pattern.split(os.sep) if p]
  return (os.sep if pattern.startswith(os.sep) else ''), parts


def glob(pattern: str) -> List[str]:
  """The paths matching a shell pattern, local or gs://, sorted.

  `*`, `?` and `[...]` match within one path component (no `**`); names
  starting with '.' match only a component that starts with '.'. Listing
  goes through `vit_jax.paths.listdir`, so gs:// patterns work as local
  ones.

  Raises:
    ValueError: a path of a scheme `vit_jax.paths` does not handle.
  """
  paths.check_supported(pattern)
  if paths.is_local(pattern):
    pattern = os.path.expanduser(pattern)
  root, parts = _split_pattern(pattern)

  def child(base, name):
    return paths.join(base, name) if base else name

  candidates = [root]
  for i, part in enumerate(parts):
    last = i == len(parts) - 1
    matched = []
    for base in candidates:
      if _MAGIC.search(part):
        for name in paths.listdir(base or os.curdir):
          if name.startswith('.') and not part.startswith('.'):
            continue
          if fnmatch.fnmatchcase(name, part):
            matched.append(child(base, name))
      else:
        path = child(base, part)
        if last or paths.isdir(path):
          matched.append(path)
    candidates = matched
  return sorted(c for c in candidates if c and paths.exists(c))


def find_workdirs(patterns: Union[str, Sequence[str]]) -> List[str]:
  """The workdirs (directories with config.json or metrics.jsonl) the
  patterns match, each once, in order (local ones made absolute).

  Raises:
    ValueError: no pattern given, or a pattern matching no workdir (named).
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  if not patterns:
    raise ValueError('No workdir pattern given.')
  found, seen = [], set()
  for pattern in patterns:
    matched = glob(pattern)
    workdirs = [path for path in matched if _is_workdir(path)]
    if not workdirs:
      detail = (f': it matches {len(matched)} path(s) but none is a workdir '
                f'(a directory with {layout.CONFIG} or {layout.METRICS})'
                if matched else '')
      raise ValueError(f'No workdir matches {pattern!r}{detail}.')
    for workdir in workdirs:
      workdir = paths.absolute(workdir)
      if workdir not in seen:
        seen.add(workdir)
        found.append(workdir)
  return found


def _is_workdir(path: str) -> bool:
  names = set(paths.listdir(path))
  return layout.CONFIG in names or layout.METRICS in names


# ----------------------------------------------------------------------------
# Reading one workdir.


def _number(value: Any) -> Optional[float]:
  """A metric value as a float (JSON has no NaN: metric_writer writes
  'nan' / 'inf' as strings); None for anything not a number."""
  if isinstance(value, bool):
    return None
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, str) and value.strip().lower() in (
      'nan', 'inf', '-inf', '+inf', 'infinity', '-infinity'):
    return float(value)
  return None


def read_metrics(workdir: str, garbled: Optional[List[int]] = None
                 ) -> Dict[int, Dict[str, float]]:
  """metrics.jsonl merged by step: {step: {name: value}} (later lines win;
  non-numeric entries are skipped). A line that is not a JSON object with
  a step is skipped; its number (1-based) goes into `garbled`, unless it is
  the last line and unterminated (torn by a crash mid-write: skipped
  quietly)."""
  parsed = layout.read_metrics(workdir)
  if garbled is not None:
    garbled.extend(parsed.garbled)
  by_step: Dict[int, Dict[str, float]] = {}
  for _, row in parsed.rows:
    values = by_step.setdefault(row['step'], {})
    for name, value in row.items():
      number = _number(value)
      if name != 'step' and number is not None:
        values[name] = number
  return by_step


def _cumulative(steps: Sequence[int], logged: Dict[int, float],
                per_step: Optional[float]) -> np.ndarray:
  """A cumulative quantity at `steps` (module docstring)."""
  steps = np.asarray(steps, dtype=np.float64)
  known = sorted((s, v) for s, v in logged.items() if math.isfinite(v))
  if known and known[0][0] > 0:
    known.insert(0, (0, 0.0))
  out = np.full(steps.shape, np.nan)
  if known:
    at = np.array([s for s, _ in known], dtype=np.float64)
    values = np.array([v for _, v in known])
    inside = steps <= at[-1]
    out[inside] = np.interp(steps[inside], at, values)
  beyond = np.isnan(out)
  if per_step is not None and math.isfinite(per_step) and per_step > 0:
    out[beyond] = per_step * steps[beyond]
  elif known and len(known) >= 2:
    slope = (values[-1] - values[-2]) / (at[-1] - at[-2])
    out[beyond] = values[-1] + slope * (steps[beyond] - at[-1])
  return out


def _float(value: Any) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return math.nan


def _int_or_none(value: Any) -> Optional[int]:
  try:
    return int(value)
  except (TypeError, ValueError):
    return None


def _variant(model: Dict[str, Any], summary: Dict[str, Any]
             ) -> Optional[str]:
  """The size: model.variant ('B/16'), else width and depth of a custom
  ladder ('width=64,depth=4'), else None."""
  variant = model.get('variant') or summary.get('variant')
  if variant:
    return str(variant)
  shape = [f'{key}={model[key]}' for key in ('width', 'depth')
           if model.get(key) is not None]
  return ','.join(shape) or None


def read_run(workdir: str) -> Tuple[List[Dict[str, Any]], Dict[str, Any]]:
  """One workdir: (its evaluation rows, a summary of the run).

  The summary has run, workdir, family, variant, state, is_branch,
  branch_from, branch_step, total_steps, params, params_body, last_step
  and eval_points, also for a run with no evaluation point yet.
  """
  names = set(paths.listdir(workdir))

  def read_json(name):
    if name not in names:
      return None
    try:
      return paths.read_json(paths.join(workdir, name))
    except ValueError:  # a torn or foreign file
      return None

  config = read_json(layout.CONFIG) or {}
  summary = read_json(layout.SUMMARY) or {}
  if not isinstance(config, dict):
    config = {}
  if not isinstance(summary, dict):
    summary = {}
  model = config.get('model') if isinstance(config.get('model'), dict) else {}
  branch = config.get('branch')
  trunk = (branch.get('trunk') or branch.get('from')
           if isinstance(branch, dict) else None)
  is_branch = bool(trunk)
  if layout.DONE in names:
    state = 'done'
  elif layout.ERROR in names:
    state = 'failed'
  else:
    state = 'unfinished'
  batch_size = _float(summary.get('batch_size', config.get('batch_size')))
  info = {
      'run': os.path.basename(workdir.rstrip('/')),
      'workdir': workdir,
      'config': flatten_config(config),
      'family': str(model.get('name') or summary.get('family') or
                    'unknown'),
      'variant': _variant(model, summary),
      'params': _float(summary.get('params')),
      'params_body': _float(summary.get('params_body')),
      'state': state,
      'is_branch': is_branch,
      'branch_from': str(trunk) if is_branch else None,
      'branch_step': _int_or_none(branch.get('step')) if is_branch else None,
      'total_steps': _int_or_none(config.get('total_steps')),
  }
  garbled: List[int] = []
  by_step = read_metrics(workdir, garbled)
  info['garbled_lines'] = garbled
  eval_steps = sorted(step for step, values in by_step.items()
                      if any(is_eval_metric(name) for name in values))
  info['last_step'] = max(by_step) if by_step else None
  info['eval_points'] = len(eval_steps)

  final_step = _int_or_none(summary.get('step'))

  def logged(name, final_name):
    """{step: value} of a cumulative metric, with summary.json's value
    where the run stopped; a value <= 0 past step 0 is not a measurement
    (the trainer logs compute/flops 0 when XLA gave no FLOP count)."""
    values = {step: values[name] for step, values in by_step.items()
              if name in values}
    final = _float(summary.get(final_name))
    if final_step is not None and final_step not in values:
      values[final_step] = final
    return {step: value for step, value in values.items()
            if math.isfinite(value) and (value > 0 or step <= 0)}

  cumulative = {
      'images_seen': _cumulative(
          eval_steps, logged('compute/images_seen', 'images_seen'),
          batch_size),
      'compute': _cumulative(eval_steps, logged('compute/flops', 'flops'),
                             _float(summary.get('flops_per_step'))),
      'device_seconds': _cumulative(
          eval_steps, logged('compute/device_seconds', 'device_seconds'),
          None),
  }
  rows = []
  for i, step in enumerate(eval_steps):
    row = {name: info[name] for name in META_COLUMNS if name in info}
    row['step'] = step
    for name, values in cumulative.items():
      row[name] = float(values[i])
    row.update({name: value for name, value in by_step[step].items()
                if not name.startswith('compute/')})
    rows.append(row)
  return rows, info


def flatten_config(config: Any, prefix: str = '') -> Dict[str, Any]:
  """A config.json's nested dicts as {dotted key: value}; lists and
  other non-scalars as their JSON text (hashable, comparable)."""
  if not isinstance(config, dict):
    return {}
  flat = {}
  for key, value in config.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict):
      flat.update(flatten_config(value, f'{name}.'))
    elif value is None or isinstance(value, (bool, int, float, str)):
      flat[name] = value
    else:
      flat[name] = json.dumps(value, sort_keys=True)
  return flat


def _sweep_overrides(sweep_dir: str) -> Optional[Dict[str, Dict[str, Any]]]:
  """{run name: its overrides} from a sweep's sweep.json (the recipe as
  'config', a branch's trunk left out: the branch columns tell branches
  apart); None without a readable sweep.json."""
  if not paths.exists(paths.join(sweep_dir, 'sweep.json')):
    return None
  try:
    record = paths.read_json(paths.join(sweep_dir, 'sweep.json'))
  except ValueError:
    return None
  by_run = {}
  for run in record.get('runs', []) if isinstance(record, dict) else []:
    if isinstance(run, dict) and isinstance(run.get('overrides'), dict):
      by_run[str(run.get('name'))] = {
          key: value if isinstance(value, (bool, int, float, str)) or (
              value is None) else json.dumps(value, sort_keys=True)
          for key, value in run['overrides'].items()
          if not key.startswith('branch.')}
  return by_run


def _parent(workdir: str) -> str:
  return workdir.rstrip('/').rsplit('/', 1)[0] or '/'


def _labels_for(patterns: Sequence[str], labels) -> List[Optional[str]]:
  if labels is None:
    return [None] * len(patterns)
  labels = list(labels)
  if len(labels) != len(patterns):
    raise ValueError(f'Got {len(labels)} label(s) {labels} for '
                     f'{len(patterns)} workdir pattern(s) {list(patterns)}: '
                     f'give one label per pattern.')
  return labels


def hparam_columns(table: pd.DataFrame) -> List[str]:
  """The hyperparameter columns of a `load_runs` table (module
  docstring), in order."""
  return list(table.attrs.get('hparams', ()))


def load_runs(patterns: Union[str, Sequence[str]],
              labels: Optional[Sequence[str]] = None) -> pd.DataFrame:
  """The evaluation points of the workdirs matching glob `patterns`.

  Args:
    patterns: one or more glob patterns of workdirs, local or gs://
      (e.g. 'SWEEP_DIR/*'); matches that are not workdirs (a sweep's
      logs/, sweep.json) are left out.
    labels: one label per pattern, for the `sweep` column (default: the
      name of the directory holding each workdir).

  Returns:
    One row per evaluation point, columns META_COLUMNS, then one per
    hyperparameter (module docstring; `hparam_columns`), then one per
    metric (NaN where a metric was not logged at that step). `run` is the
    workdir's basename (`workdir` tells apart equal names in two sweeps);
    state is 'done', 'failed' or 'unfinished'; params / params_body are NaN
    without summary.json; compute, images_seen and device_seconds are
    cumulative at the step (module docstring). `df.attrs['runs']` lists
    every run found (read_run's summaries, with its `sweep` and
    hyperparameters), those without evaluation points too;
    `df.attrs['hparams']` the hyperparameter columns.

  Raises:
    ValueError: a pattern matching no workdir (named), or labels that are
      not one per pattern.
  """
  if isinstance(patterns, str):
    patterns = [patterns]
  pattern_labels = _labels_for(patterns, labels)
  found, seen = [], set()
  for pattern, label in zip(patterns, pattern_labels):
    for workdir in find_workdirs([pattern]):
      if workdir not in seen:
        seen.add(workdir)
        found.append((workdir, label))
  # The sweep column: a label, else the parent's name (its path on clash).
  parents = {_parent(w) for w, label in found if label is None}
  names = [os.path.basename(p) or p for p in parents]
  clash = {n for n in names if names.count(n) > 1}

  def sweep_name(workdir, label):
    if label is not None:
      return str(label)
    parent = _parent(workdir)
    name = os.path.basename(parent) or parent
    return parent if name in clash else name

  overrides = {parent: _sweep_overrides(parent)
               for parent in {_parent(w) for w, _ in found}}
  rows, runs, configs = [], [], []
  for workdir, label in found:
    run_rows, info = read_run(workdir)
    info['sweep'] = sweep_name(workdir, label)
    for row in run_rows:
      row['sweep'] = info['sweep']
    rows.append(run_rows)
    runs.append(info)
    configs.append(info.pop('config'))
  keys = set()
  for by_run in overrides.values():
    for run_overrides in (by_run or {}).values():
      keys.update(run_overrides)
  outside = [config for (workdir, _), config in zip(found, configs)
             if overrides[_parent(workdir)] is None]
  for key in sorted({k for config in outside for k in config}):
    if len({json.dumps(config.get(key)) for config in outside}) > 1:
      keys.add(key)
  hparams = sorted(keys, key=lambda k: (k.count('.'), k))
  taken = set(META_COLUMNS) | {name for run_rows in rows for row in run_rows
                               for name in row}
  columns = {key: key if key not in taken else f'config.{key}'
             for key in hparams}
  for (workdir, _), info, run_rows, config in zip(found, runs, rows,
                                                  configs):
    # A sweep's own value for the key where it set one (the recipe file
    # of 'config' is in no config.json), else the run's config.
    set_there = (overrides[_parent(workdir)] or {}).get(info['run'], {})
    values = {columns[key]: set_there.get(key, config.get(key))
              for key in hparams}
    info['hparams'] = values
    for row in run_rows:
      row.update(values)
  rows = [row for run_rows in rows for row in run_rows]
  metrics = sorted({name for row in rows for name in row} -
                   set(META_COLUMNS) - set(columns.values()),
                   key=lambda name: (not is_eval_metric(name), name))
  table = pd.DataFrame(rows, columns=list(META_COLUMNS) +
                       list(columns.values()) + metrics)
  for name in ('branch_step', 'total_steps'):
    table[name] = table[name].astype('Int64')
  table['step'] = table['step'].astype('int64')
  table['is_branch'] = table['is_branch'].astype(bool)
  for name in ('params', 'params_body', 'images_seen', 'compute',
               'device_seconds', *metrics):
    table[name] = table[name].astype('float64')
  table.attrs['runs'] = runs
  table.attrs['hparams'] = list(columns.values())
  return table


def metric_columns(table: pd.DataFrame) -> List[str]:
  """The metric columns of a `load_runs` table."""
  hparams = set(hparam_columns(table))
  return [name for name in table.columns
          if name not in META_COLUMNS and name not in hparams]


def iter_runs(table: pd.DataFrame) -> Iterable[Tuple[str, pd.DataFrame]]:
  """(workdir, its rows ordered by step) for each run in the table."""
  for workdir, rows in table.groupby('workdir', sort=False):
    yield workdir, rows.sort_values('step')
