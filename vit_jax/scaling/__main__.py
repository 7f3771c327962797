"""`python -m vit_jax.scaling`: scaling laws of a sweep's runs.

    python -m vit_jax.scaling --workdirs='SWEEP_DIR/*' \
        --metric=fewshot/digits/10shot[,val/loss] --x=compute/flops \
        --out=DIR [--form=auto|saturating|power_offset|power|m4]
        [--bootstrap=200] [--holdout_fraction=0.2 | --holdout_threshold=X]
        [--label=NAME ...] [--group_by=KEY[,KEY]] [--seed_keys=seed]
        [--metric_label=METRIC=NAME ...] [--style=screen|paper]
        [--noreport]

Reads every workdir the patterns match (`--workdirs` is repeatable and
never split on commas: run names contain them; `--label` names each
pattern's runs), groups the runs (by model family; by sweep and family
when several sweeps are given; `--group_by` for any column or
hyperparameter), averages runs that differ only in a seed key per step,
takes each group's frontier of each metric (as an error: 1 - accuracy)
against x, fits a law
on it and prints it with bootstrap confidence intervals (or why there are
none: e.g. 4 points for a 4-parameter law, where every resample is the
data itself) and an extrapolation check (fitted on the frontier below a
threshold, scored on the points above); a law on fewer points than its
parameters + 2 is flagged underdetermined. Writes to DIR:
error_vs_<x>.{png,svg,csv} (a panel per metric), the same against
parameters and images seen (--also_x), fits.json (every law, its
intervals or why there are none, frontier and check) and report.html
(unless --noreport). In the figures a marker's area grows with its run's
parameter count (linear in log10 params, from the smallest model to the
largest; a legend gives sizes, e.g. '30K params', '2M params').

report.html is one page a browser opens offline (no script, nothing
fetched): every figure written (its PNG embedded, links to its SVG, PDF
and CSV beside the page), the laws (per x, metric and group: form,
parameters with their intervals or why there are none, underdetermined
or not, the extrapolation check) and a row per run (name, group, size,
state, its hyperparameters, the last value of each metric, a link to its
TensorBoard folder, tb/; a gs:// one printed). Every text is escaped.

--form=auto (the default) fits Zhai et al.'s saturating law
a (x + d)^-b + c and falls back to c + a x^-b, then a x^-b, for a family
whose frontier has too few points for it (4, 3, 2) or where it does not
converge or ends degenerate; each fallback is printed. A named form is
fitted as named.

Exit status: 0 done (warnings on stderr: points skipped because a value
is not positive on a log axis, families too small to fit); 2 bad input,
one line on stderr and nothing written: a pattern that matches no
workdir, a metric no run has (the available ones are listed), too few
points for the form in every family (how many it needs), no positive
point to plot.
"""

import json
import math
import os
import sys
from typing import Any, Dict, List, Optional

from absl import app
from absl import flags
import numpy as np

from vit_jax import layout
from vit_jax import paths
from vit_jax.scaling import compute_optimal
from vit_jax.scaling import fits as fits_lib
from vit_jax.scaling import frontiers as frontier_lib
from vit_jax.scaling import plots
from vit_jax.scaling import report as report_lib
from vit_jax.scaling import runs as runs_lib


_WORKDIRS = flags.DEFINE_multi_string(
    'workdirs', None, 'Glob pattern of workdirs (local or gs://), e.g. '
    "'SWEEP_DIR/*'; repeat the flag for several (not split on commas).")
_LABEL = flags.DEFINE_multi_string(
    'label', None, 'A label per --workdirs pattern, in order (the `sweep` '
    'column and group name; default: the directory holding the workdirs).')
_GROUP_BY = flags.DEFINE_list(
    'group_by', None, 'Columns whose values make a group, each with its own '
    'frontier and law: family, sweep, variant or a hyperparameter key '
    "(e.g. model.pool_type). Default: family, or sweep,family when "
    'several sweeps are given.')
_SEED_KEYS = flags.DEFINE_list(
    'seed_keys', list(frontier_lib.SEED_KEYS), 'Hyperparameter keys that '
    'only reseed a run: runs alike but for them are averaged per step '
    '(mean, std, count) before the frontier is taken.')
_METRIC = flags.DEFINE_multi_string(
    'metric', None, 'Metric(s) to fit, e.g. fewshot/digits/10shot or '
    'val/loss; repeatable or comma-separated. Accuracies become errors '
    '(1 - value).')
_X = flags.DEFINE_enum('x', 'compute/flops', list(runs_lib.X_COLUMNS),
                       'The x axis of the laws.')
_FORM = flags.DEFINE_enum(
    'form', frontier_lib.AUTO, [frontier_lib.AUTO, *fits_lib.FORMS],
    "The law: 'auto' is saturating with fallback to power_offset, then "
    'power (see --helpfull / the module docstring).')
_BOOTSTRAP = flags.DEFINE_integer(
    'bootstrap', 200, 'Bootstrap resamples for confidence intervals (0: '
    'none).')
_CONFIDENCE = flags.DEFINE_float('confidence', 0.95,
                                 'Confidence level of the intervals.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the bootstrap.')
_HOLDOUT_FRACTION = flags.DEFINE_float(
    'holdout_fraction', 0.2, 'Extrapolation check: hold out this fraction '
    'of each frontier (its largest x, at least one point); 0: no check.')
_HOLDOUT_THRESHOLD = flags.DEFINE_float(
    'holdout_threshold', None, 'Extrapolation check: fit below this x, '
    'score at and above it (instead of --holdout_fraction).')
_EXTRAPOLATE = flags.DEFINE_float(
    'extrapolate', 10.0, 'Plots extend each law (dashed) to this many times '
    'the largest x fitted.')
_COMPUTE_OPTIMAL = flags.DEFINE_bool(
    'compute_optimal', False, "Chinchilla's approaches 1 (loss envelope) "
    'and 2 (isoFLOP parabolas) on the first metric: N_opt(C) and D_opt(C) '
    'power laws printed, isoflop.{png,svg,csv} written.')
_ISOFLOP_BUDGETS = flags.DEFINE_list(
    'isoflop_budgets', None, '--compute_optimal: the isoFLOP budgets in '
    'FLOPs (default: 8 log-spaced over the runs\' compute).')
_ALSO_X = flags.DEFINE_list(
    'also_x', ['params', 'compute/images_seen'], 'Further x axes to plot '
    '(their laws fitted, without bootstrap); skipped with a warning when '
    'the workdirs lack them.')
_OUT = flags.DEFINE_string('out', None, 'Output directory (local or gs://).')
_METRIC_LABEL = flags.DEFINE_multi_string(
    'metric_label', None, "A readable name for a metric's titles and axis "
    "labels, METRIC=NAME, e.g. 'fewshot/digits/10shot=10-shot digits "
    "accuracy' (repeatable).")
_STYLE = flags.DEFINE_enum(
    'style', 'screen', list(plots.STYLES), "Figures: 'screen' (PNG, SVG) or "
    "'paper' (one column wide, serif, also a PDF with its fonts embedded).")
_REPORT = flags.DEFINE_bool(
    'report', True, 'Also write DIR/report.html: the figures, laws and runs '
    'on one page a browser opens offline (--noreport: not).')

# Letters for x in printed formulas.
_SYMBOLS = {'compute': 'C', 'params': 'N', 'params_body': 'N',
            'images_seen': 'D', 'device_seconds': 'T'}


class UsageError(ValueError):
  """Bad input: exit status 2."""


def _warn(message: str) -> None:
  print(f'vit_jax.scaling: warning: {message}', file=sys.stderr, flush=True)


def _json_safe(value: Any) -> Any:
  """NaN / inf as None, numpy scalars as Python numbers, recursively."""
  if isinstance(value, dict):
    return {str(k): _json_safe(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(v) for v in value]
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    value = float(value)
    return value if math.isfinite(value) else None
  if isinstance(value, np.bool_):
    return bool(value)
  return value


def _threshold(x: np.ndarray) -> Optional[float]:
  """The extrapolation check's threshold for one frontier, or None."""
  if _HOLDOUT_THRESHOLD.value is not None:
    return _HOLDOUT_THRESHOLD.value
  fraction = _HOLDOUT_FRACTION.value
  if fraction <= 0 or x.size == 0:
    return None
  ordered = np.sort(x)
  held = max(1, int(round(fraction * x.size)))
  return float(ordered[max(0, x.size - held)])


def _analyse(table, metric: str, x: str, form: str, with_errors: bool
             ) -> Dict[str, Any]:
  """Frontiers, fits, bootstraps and extrapolation checks of one metric
  against x; raises UsageError when nothing can be fitted."""
  usable, skipped = frontier_lib.points(table, x, metric, _GROUP_BY.value,
                                       _SEED_KEYS.value)
  skipped_line = frontier_lib.describe_skipped(skipped, x, metric)
  if usable.empty:
    raise UsageError(f'No point of {metric} against {x} can go on log axes. '
                     f'{skipped_line}')
  fronts = frontier_lib.frontier(table, x, metric, form, _GROUP_BY.value,
                                 _SEED_KEYS.value)
  fitted = {f: front for f, front in fronts.items() if front.fit is not None}
  if not fitted:
    reasons = '; '.join(f'{family}: {" ".join(front.notes)}'
                        for family, front in fronts.items())
    raise UsageError(f'Too few points to fit {metric} against {x} in any '
                     f'family ({reasons}).')
  result = {'metric': metric, 'x': x, 'frontiers': fronts,
            'skipped': skipped, 'skipped_line': skipped_line,
            'bootstraps': {}, 'checks': {}}
  if not with_errors:
    return result
  for family, front in fitted.items():
    fx = front.frontier['x'].to_numpy()
    fy = front.frontier['y'].to_numpy()
    if _BOOTSTRAP.value > 0:
      result['bootstraps'][(metric, family)] = fits_lib.bootstrap(
          fx, fy, front.fit.form, n=_BOOTSTRAP.value, seed=_SEED.value,
          confidence=_CONFIDENCE.value, fitted=front.fit)
    threshold = _threshold(fx)
    if threshold is None:
      continue
    try:
      result['checks'][family] = fits_lib.validate_extrapolation(
          fx, fy, front.fit.form, threshold)
    except ValueError as error:
      if flags.FLAGS['holdout_threshold'].present:
        raise UsageError(f'Extrapolation check of {metric} ({family}): '
                         f'{error}') from None
      result['checks'][family] = f'skipped: {error}'
  return result


def _interval_text(boot: fits_lib.Bootstrap) -> str:
  """The intervals, or why there are none (never a zero-width one)."""
  counts = f'from {boot.n_requested} resamples ({boot.n_ok} fitted)'
  if boot.degenerate:
    return f'no {boot.confidence:.0%} CI {counts}: {boot.degenerate}'
  parts = []
  for name, (low, high) in boot.intervals.items():
    # Digits enough for the ends to differ: an interval that reads as
    # zero-width is never printed.
    for digits in (4, 6, 8):
      low_text, high_text = f'{low:.{digits}g}', f'{high:.{digits}g}'
      if low_text != high_text:
        parts.append(f'{name} [{low_text}, {high_text}]')
        break
    else:  # e.g. c = 0, on its bound, in every resample
      parts.append(f'{name} = {low_text} in every resample')
  return f'{boot.confidence:.0%} CI {counts}: ' + ', '.join(parts)


def _underdetermined_text(law: fits_lib.Fit) -> str:
  return (f'underdetermined: {law.n_points} points for {len(law.params)} '
          f'parameters (fewer than parameters + 2); plotted thin, not '
          f'extrapolated')


def _compute_optimal(table, metric: str) -> List[Any]:
  """Approaches 1 and 2 on every usable evaluation of `metric` (as an
  error) with known parameters and compute; UsageError when neither can
  be fitted, a warning when approach 2 cannot."""
  usable, _ = frontier_lib.points(table, 'compute/flops', metric,
                                  seed_keys=())
  rows = table.loc[table[metric].notna()].set_index(['workdir', 'step'])
  params = rows['params'].reindex(
      list(zip(usable['workdir'], usable['step']))).to_numpy()
  known = np.isfinite(params) & (params > 0)
  if known.sum() < 2:
    raise UsageError(f'--compute_optimal needs parameter counts '
                     f'(summary.json) and compute for {metric}; '
                     f'{int(known.sum())} point(s) have both.')
  n, c = params[known], usable['x'].to_numpy()[known]
  loss = usable['y'].to_numpy()[known]
  try:
    results = [compute_optimal.envelope(n, c, loss)]
  except ValueError as error:
    raise UsageError(f'--compute_optimal: {error}') from None
  try:
    budgets = ([float(b) for b in _ISOFLOP_BUDGETS.value]
               if _ISOFLOP_BUDGETS.value else None)
    results.append(compute_optimal.isoflop(n, c, loss, budgets))
  except ValueError as error:
    _warn(f'--compute_optimal: no isoFLOP fit: {error}')
  return results


def _report(result: Dict[str, Any]) -> List[Dict[str, Any]]:
  """Prints one metric's laws; returns their fits.json records."""
  metric, x = result['metric'], result['x']
  column = runs_lib.x_column(x)
  symbol = _SYMBOLS.get(column, 'x')
  value = ('error = 1 - value' if runs_lib.is_accuracy(metric)
           else 'value as logged')
  print(f'{metric} ({value}) vs {x}:')
  records = []
  for family, front in result['frontiers'].items():
    record = {
        'metric': metric, 'x': x, 'family': family,
        'error': '1 - value' if runs_lib.is_accuracy(metric) else 'value',
        'n_points': len(front.points),
        'n_runs': int(front.points['workdir'].nunique()),
        'frontier': front.frontier[['run', 'workdir', 'step', 'x', 'y']
                                  ].to_dict('records'),
        'notes': front.notes,
    }
    records.append(record)
    if front.fit is None:
      print(f'  {family}: no law ({" ".join(front.notes)})')
      continue
    law = front.fit
    record.update(form=law.form, formula=law.formula(symbol, 'error'),
                  params=law.params, residual=law.residual,
                  converged=law.converged, message=law.message,
                  underdetermined=fits_lib.underdetermined(law))
    status = ('converged' if law.converged else
              f'NOT CONVERGED ({law.message})')
    print(f'  {family}: {law.form}: {law.formula(symbol, "error")}')
    print(f'      frontier of {len(front.frontier)} points from '
          f'{front.frontier["workdir"].nunique()} runs (of '
          f'{record["n_runs"]} runs, {record["n_points"]} points); '
          f'log-RMSE {law.residual:.4g}; {status}')
    if fits_lib.underdetermined(law):
      print(f'      {_underdetermined_text(law)}')
    boot = result['bootstraps'].get((metric, family))
    if boot is not None:
      print(f'      {_interval_text(boot)}')
      record['bootstrap'] = {'n': boot.n_requested, 'n_fitted': boot.n_ok,
                             'n_distinct': boot.n_distinct,
                             'confidence': boot.confidence,
                             'intervals': boot.intervals,
                             'degenerate': boot.degenerate}
    check = result['checks'].get(family)
    if isinstance(check, fits_lib.Extrapolation):
      print(f'      extrapolation: fitted on {check.n_fit} points with '
            f'{symbol} < {check.threshold:.4g}, log-RMSE {check.log_rmse:.4g} '
            f'(max {check.max_log_error:.4g}) on {check.n_holdout} held-out '
            f'points')
      record['extrapolation'] = {
          'threshold': check.threshold, 'n_fit': check.n_fit,
          'n_holdout': check.n_holdout, 'log_rmse': check.log_rmse,
          'max_log_error': check.max_log_error,
          'params': check.fit.params}
    elif check is not None:
      print(f'      extrapolation check {check}')
      record['extrapolation'] = {'skipped': check}
    for note in front.notes:
      print(f'      note: {note}')
  return records


def _metrics() -> List[str]:
  names = [name.strip() for value in _METRIC.value or []
           for name in value.split(',') if name.strip()]
  return list(dict.fromkeys(names))


def _check_out(out: str) -> None:
  """--out must be a directory, or a path where one can be made."""
  paths.check_supported(out)
  if paths.exists(out) and not paths.isdir(out):
    raise UsageError(f'--out {out!r} is an existing file; name a directory '
                     f'for the plots and fits.json.')
  if paths.is_local(out):
    ancestor = os.path.abspath(out)
    while not os.path.exists(ancestor):
      ancestor = os.path.dirname(ancestor)
    if not os.path.isdir(ancestor):
      raise UsageError(f'--out {out!r}: {ancestor!r} is a file, not a '
                       f'directory.')
    if not os.access(ancestor, os.W_OK | os.X_OK):
      raise UsageError(f'--out {out!r}: {ancestor!r} is not writable.')


def run() -> None:
  """The command, from the flags; raises UsageError / ValueError on bad
  input before writing anything."""
  if not _WORKDIRS.value:
    raise UsageError('--workdirs is required (a glob pattern of workdirs).')
  metrics = _metrics()
  if not metrics:
    raise UsageError('--metric is required, e.g. --metric=val/loss.')
  if not _OUT.value:
    raise UsageError('--out is required (a directory for plots and '
                     'fits.json).')
  _check_out(_OUT.value)
  labels = {}
  for item in _METRIC_LABEL.value or []:
    metric, sep, name = item.partition('=')
    if not sep or metric not in metrics or not name.strip():
      raise UsageError(f'--metric_label={item!r}: give METRIC=NAME for a '
                       f'metric of --metric ({", ".join(metrics)}).')
    labels[metric] = name.strip()
  table = runs_lib.load_runs(_WORKDIRS.value, _LABEL.value)
  infos = table.attrs['runs']
  for info in infos:
    garbled = info.get('garbled_lines')
    if garbled:
      shown = ', '.join(str(n) for n in garbled[:5])
      more = f' and {len(garbled) - 5} more' if len(garbled) > 5 else ''
      _warn(f'{paths.join(info["workdir"], layout.METRICS)}: skipped '
            f'{len(garbled)} line(s) that are not JSON rows with a step '
            f'(line {shown}{more})')
  states = {s: sum(info['state'] == s for info in infos)
            for s in runs_lib.STATES}
  branches = sum(info['is_branch'] for info in infos)
  counts = [f'{n} {state}' for state, n in states.items() if n]
  if branches:
    counts.append(f'{branches} cooldown branches')
  print(f'{len(infos)} runs ({", ".join(counts)}), {len(table)} evaluation '
        f'points.')
  group_by = _GROUP_BY.value or frontier_lib.default_group_by(table)
  hparams = runs_lib.hparam_columns(table)
  seeds = [key for key in _SEED_KEYS.value if key in hparams]
  print(f'Groups by {", ".join(group_by)}; hyperparameters: '
        f'{", ".join(hparams) or "none"}' +
        (f'; seeds averaged over {", ".join(seeds)}.' if seeds else '.'))
  empty = [info['run'] for info in infos if not info['eval_points']]
  if empty:
    _warn(f'no evaluation logged yet in {len(empty)} run(s): '
          f'{", ".join(empty)}')

  x = _X.value
  results = [_analyse(table, metric, x, _FORM.value, True)
             for metric in metrics]
  extra = []
  for other in _ALSO_X.value:
    try:
      if runs_lib.x_column(other) == runs_lib.x_column(x):
        continue
    except ValueError as error:
      raise UsageError(f'--also_x: {error}') from None
    try:
      extra.append((other, [_analyse(table, metric, other, _FORM.value, False)
                            for metric in metrics]))
    except ValueError as error:
      _warn(f'no plot against {other}: {error}')

  optimal = _compute_optimal(table, metrics[0]) if (
      _COMPUTE_OPTIMAL.value) else None

  # Everything is known to work: report and write.
  for result in results + [r for _, other in extra for r in other]:
    if result['skipped_line']:
      _warn(result['skipped_line'])
    for family, front in result['frontiers'].items():
      if front.fit is None:
        _warn(f'{result["metric"]} vs {result["x"]}: no law for {family}: '
              f'{" ".join(front.notes)}')
  records = []
  for result in results:
    records += _report(result)
  out = _OUT.value
  groups = sorted({group for result in results + [
      r for _, other in extra for r in other]
                   for group in result['frontiers']})
  colors = plots.family_colors(groups)
  bootstraps = {}
  for result in results:
    bootstraps.update(result['bootstraps'])
  written = plots.plot({r['metric']: r['frontiers'] for r in results}, x, out,
                       bootstraps=bootstraps,
                       extrapolate=_EXTRAPOLATE.value, colors=colors,
                       metric_labels=labels, style=_STYLE.value)
  for other, other_results in extra:
    written += plots.plot({r['metric']: r['frontiers'] for r in other_results},
                          other, out, extrapolate=_EXTRAPOLATE.value,
                          colors=colors, metric_labels=labels,
                          style=_STYLE.value)
    for result in other_results:
      for family, front in result['frontiers'].items():
        record = {'metric': result['metric'], 'x': other, 'family': family,
                  'n_points': len(front.points), 'notes': front.notes,
                  'frontier': front.frontier[
                      ['run', 'workdir', 'step', 'x', 'y']].to_dict('records')}
        if front.fit is not None:
          record.update(form=front.fit.form, params=front.fit.params,
                        formula=front.fit.formula(
                            _SYMBOLS.get(runs_lib.x_column(other), 'x'),
                            'error'),
                        residual=front.fit.residual,
                        converged=front.fit.converged,
                        message=front.fit.message,
                        underdetermined=fits_lib.underdetermined(
                            front.fit))
        records.append(record)
  summary = {
      'workdirs': list(_WORKDIRS.value), 'metrics': metrics, 'x': x,
      'labels': list(_LABEL.value or []), 'group_by': list(group_by),
      'seed_keys': seeds, 'hparams': hparams,
      'form': _FORM.value, 'bootstrap': _BOOTSTRAP.value,
      'confidence': _CONFIDENCE.value, 'runs': infos, 'fits': records,
      'skipped': [{'metric': r['metric'], 'x': r['x'], **row}
                  for r in results
                  for row in r['skipped'].to_dict('records')],
  }
  if optimal is not None:
    summary['compute_optimal'] = {}
    print(f'Compute-optimal sizes ({metrics[0]}, D = C / 6N):')
    for result in optimal:
      print(f'  {result.describe()}')
      summary['compute_optimal'][result.approach] = {
          'a': result.a, 'n_coef': result.n_coef, 'b': result.b,
          'd_coef': result.d_coef, 'compute': result.compute.tolist(),
          'n_opt': result.n_opt.tolist()}
    isoflop = [r for r in optimal if r.approach == 'isoflop']
    if isoflop:
      written += plots.isoflop_plot(
          isoflop[0], out, loss_label=runs_lib.error_label(metrics[0]),
          style=_STYLE.value,
          approach1=next(r for r in optimal if r.approach == 'envelope'))
  summary['style'] = _STYLE.value
  fits_path = paths.join(out, 'fits.json')
  paths.write_atomic(fits_path, json.dumps(_json_safe(summary), indent=2,
                                           sort_keys=True))
  written.append(fits_path)
  if _REPORT.value:
    written.append(report_lib.write(out, _json_safe(summary), written, table))
  print(f'Wrote {", ".join(written)}')


def main(argv):
  if len(argv) > 1:
    print(f'vit_jax.scaling: unexpected arguments {argv[1:]}',
          file=sys.stderr)
    sys.exit(layout.EXIT_USAGE)
  try:
    run()
  except ValueError as error:
    print(f'vit_jax.scaling: {_one_line(error)}', file=sys.stderr)
    sys.exit(layout.EXIT_USAGE)
  except OSError as error:  # the output could not be written
    print(f'vit_jax.scaling: cannot write {_OUT.value}: {_one_line(error)}',
          file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)


def _one_line(error: BaseException) -> str:
  return '; '.join(line.strip() for line in str(error).splitlines()
                   if line.strip())


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    print(f'vit_jax.scaling: bad command line: {_one_line(error)} '
          f'(--helpfull lists the flags)', file=sys.stderr)
    sys.exit(layout.EXIT_USAGE)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse)
