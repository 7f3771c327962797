"""report.html: a scaling analysis as one page a browser opens offline.

`write(out_dir, summary, written, table)` writes OUT_DIR/report.html
(through `vit_jax.paths`, so OUT_DIR may be gs://) with:

- the figures written (error_vs_*, isoflop), each embedded as its PNG
  (a base64 data: URI: the page needs no other file and no network), with
  relative links to its SVG / PDF / CSV beside the page;
- the laws: per x axis, metric and group, the form and formula, each
  parameter with its bootstrap interval (or why there is none), whether
  the law is underdetermined, and the extrapolation check;
- the runs: a row per run with its name, sweep, group, size, state, its
  hyperparameters (the sweep's overrides: `runs.hparam_columns`), the
  last logged value of each metric analysed (and its step) and a link to
  its TensorBoard directory (file:// for a local workdir; a gs:// path is
  printed as text);
- compute-optimal sizes (--compute_optimal) and the points skipped.

`summary` is fits.json's record (JSON-safe: NaN as None). Every text is
escaped (`html.escape`); the page has no script and loads nothing.
"""

import base64
import html
import os
import pathlib
import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
import urllib.parse

import pandas as pd

from vit_jax import layout
from vit_jax import paths
from vit_jax.scaling import frontiers as frontier_lib
from vit_jax.scaling import plots
from vit_jax.scaling import runs as runs_lib

NAME = 'report.html'

_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Helvetica, Arial,
       sans-serif; margin: 1.5em; color: #222; background: #fff; }
h1 { font-size: 1.5em; margin: 0 0 .3em; }
h2 { font-size: 1.25em; margin: 1.4em 0 .4em; border-bottom: 1px solid #ccc; }
h3 { font-size: 1.05em; margin: 1em 0 .3em; }
dl.meta { display: grid; grid-template-columns: max-content auto;
          gap: .15em 1em; margin: 0; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
.figures { display: flex; flex-wrap: wrap; gap: 1.5em; }
figure { margin: 0; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .85em; max-width: 42em; }
table { border-collapse: collapse; font-size: .85em; margin: .3em 0 1em; }
th, td { border: 1px solid #ccc; padding: .25em .5em; text-align: left;
         vertical-align: top; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #555; font-size: .9em; }
.warn { color: #a33; }
code { font-size: .95em; }
"""


def _e(value: Any) -> str:
  """Text escaped for HTML (attributes too)."""
  return html.escape('' if value is None else str(value), quote=True)


def _g(value: Optional[float], digits: int = 4) -> str:
  if value is None:
    return 'n/a'
  try:
    return f'{float(value):.{digits}g}'
  except (TypeError, ValueError):
    return str(value)


def final_metrics(table: pd.DataFrame, metrics: Sequence[str]
                  ) -> Dict[str, Dict[str, Tuple[int, float]]]:
  """{workdir: {metric: (step, value)}}: each metric's last logged
  evaluation in each run (as logged: an accuracy, not its error)."""
  finals: Dict[str, Dict[str, Tuple[int, float]]] = {}
  for metric in metrics:
    if metric not in table.columns:
      continue
    rows = table[table[metric].notna()]
    if rows.empty:
      continue
    last = rows.loc[rows.groupby('workdir')['step'].idxmax()]
    for workdir, step, value in zip(last['workdir'], last['step'],
                                    last[metric]):
      finals.setdefault(workdir, {})[metric] = (int(step), float(value))
  return finals


def _png_size(data: bytes) -> Tuple[int, int]:
  """(width, height) of a PNG from its IHDR chunk."""
  if data[:8] != b'\x89PNG\r\n\x1a\n' or len(data) < 24:
    raise ValueError('not a PNG')
  return struct.unpack('>II', data[16:24])


def _figure_title(stem: str) -> str:
  if stem.startswith('error_vs_'):
    column = stem[len('error_vs_'):]
    return f'Error against {runs_lib.X_LABELS.get(column, column)}'
  if stem == 'isoflop':
    return 'isoFLOP profiles and compute-optimal sizes'
  return stem


_ERROR_CAPTION = (
    'Per group (one colour each): every evaluation of every run (faint '
    'lines), the frontier (filled markers, joined; the points off it '
    'hollow; squares: unfinished runs, crosses: failed ones), the law '
    'fitted to it (solid), its extrapolation (dashed) and bootstrap band. '
    "A marker's area grows with its run's parameter count (log scale, "
    'the legend gives sizes); a law drawn thin is underdetermined.')


def _figures_html(written: Sequence[str], style: str) -> str:
  """Each figure written: its PNG inline, links to its other files."""
  by_stem: Dict[str, List[str]] = {}
  for path in written:
    stem, extension = os.path.splitext(path)
    if extension in ('.png', '.svg', '.pdf', '.csv'):
      by_stem.setdefault(stem, []).append(path)
  parts = []
  dpi = plots.DPI.get(style, 120)
  # On screen a paper figure (one column, caption-sized text) is shown
  # larger than its print size, to be read.
  zoom = 1.6 if style == 'paper' else 1.0
  for stem, files in by_stem.items():
    png = [f for f in files if f.endswith('.png')]
    if not png:
      continue
    data = paths.read_bytes(png[0])
    width, height = _png_size(data)
    name = stem.replace('\\', '/').rsplit('/', 1)[-1]
    # CSS pixels are 1/96 in: the figure at its size in inches (zoomed).
    css_width = round(width * 96 / dpi * zoom)
    css_height = round(height * 96 / dpi * zoom)
    links = ', '.join(
        f'<a href="{_e(urllib.parse.quote(os.path.basename(f)))}">'
        f'{_e(os.path.splitext(f)[1][1:].upper())}</a>' for f in files)
    caption = _ERROR_CAPTION if name.startswith('error_vs_') else ''
    parts.append(
        # As wide as the image (and its border): the caption wraps there.
        f'<figure id="{_e(name)}" style="width: {css_width + 2}px">'
        f'<h3>{_e(_figure_title(name))}</h3>'
        f'<img src="data:image/png;base64,'
        f'{base64.b64encode(data).decode("ascii")}" alt="{_e(name)}" '
        f'width="{css_width}" height="{css_height}">'
        f'<figcaption><code>{_e(name)}</code> ({links}). '
        f'{_e(caption)}</figcaption></figure>')
  if not parts:
    return '<p class="note">No figure was written.</p>'
  return '<div class="figures">' + ''.join(parts) + '</div>'


def _interval(low: Optional[float], high: Optional[float]) -> str:
  """An interval whose ends read apart (never a zero-width one)."""
  if low is None or high is None:
    return ''
  for digits in (4, 6, 8):
    low_text, high_text = _g(low, digits), _g(high, digits)
    if low_text != high_text:
      return f' [{low_text}, {high_text}]'
  return f' (= {low_text} in every resample)'


def _parameters_cell(record: Mapping[str, Any], summary: Mapping[str, Any]
                     ) -> str:
  params = record.get('params') or {}
  boot = record.get('bootstrap')
  intervals = (boot or {}).get('intervals') or {}
  items = ''.join(
      f'<li><code>{_e(name)} = {_e(_g(value))}'
      f'{_e(_interval(*(intervals.get(name) or (None, None))))}</code></li>'
      for name, value in params.items())
  if boot is not None:
    counts = (f'from {boot.get("n")} resamples ({boot.get("n_fitted")} '
              f'fitted)')
    confidence = boot.get('confidence') or 0
    if boot.get('degenerate'):
      why = (f'no {confidence:.0%} interval {counts}: '
             f'{boot["degenerate"]}')
    else:
      why = f'{confidence:.0%} intervals {counts}'
  elif record.get('x') != summary.get('x'):
    why = ('no interval: the --also_x axes are fitted without a '
           'bootstrap')
  elif not summary.get('bootstrap'):
    why = 'no interval: --bootstrap=0'
  else:
    why = 'no interval'
  return f'<ul>{items}</ul><span class="note">{_e(why)}</span>'


def _extrapolation_cell(record: Mapping[str, Any],
                        summary: Mapping[str, Any]) -> str:
  check = record.get('extrapolation')
  if check is None:
    if record.get('x') != summary.get('x'):
      return '<span class="note">none (--also_x axis)</span>'
    return '<span class="note">none</span>'
  if 'skipped' in check:
    return f'<span class="note">{_e(check["skipped"])}</span>'
  return _e(f'fitted on {check.get("n_fit")} points below '
            f'{_g(check.get("threshold"))}; log-RMSE '
            f'{_g(check.get("log_rmse"))} (max '
            f'{_g(check.get("max_log_error"))}) on {check.get("n_holdout")} '
            f'held-out points')


def _fits_html(summary: Mapping[str, Any]) -> str:
  records = summary.get('fits') or []
  if not records:
    return '<p class="note">No law was fitted.</p>'
  axes = list(dict.fromkeys(r.get('x') for r in records))
  parts = []
  for x in axes:
    rows = []
    for record in (r for r in records if r.get('x') == x):
      law, underdetermined = '', ''
      frontier = record.get('frontier') or []
      if record.get('form'):
        status = ('' if record.get('converged') else
                  f'<br><span class="warn">not converged: '
                  f'{_e(record.get("message"))}</span>')
        law = (f'{_e(record["form"])}<br><code>'
               f'{_e(record.get("formula"))}</code>{status}')
        parameters = _parameters_cell(record, summary)
        if record.get('underdetermined'):
          underdetermined = (
              f'<span class="warn">yes</span>: {len(frontier)} points for '
              f'{len(record.get("params") or {})} parameters (fewer than '
              f'parameters + 2)')
        else:
          underdetermined = 'no'
        check = _extrapolation_cell(record, summary)
      else:
        law = '<span class="warn">no law</span>'
        parameters = check = underdetermined = ''
      notes = ''.join(f'<br><span class="note">{_e(n)}</span>'
                      for n in record.get('notes') or [])
      rows.append(
          f'<tr><td>{_e(record.get("metric"))}</td>'
          f'<td>{_e(record.get("family"))}</td><td>{law}{notes}</td>'
          f'<td>{parameters}</td><td>{underdetermined}</td><td>{check}</td>'
          f'<td class="num">{len(frontier)} of {record.get("n_points")}'
          f'</td></tr>')
    parts.append(
        f'<h3>Against {_e(x)}</h3><table class="fits"><thead><tr>'
        '<th>metric</th><th>group</th><th>law</th><th>parameters</th>'
        '<th>underdetermined</th><th>extrapolation check</th>'
        '<th>frontier points</th></tr></thead><tbody>' + ''.join(rows) +
        '</tbody></table>')
  return ''.join(parts)


def _group_of_runs(infos: Sequence[Mapping[str, Any]],
                   summary: Mapping[str, Any]) -> List[str]:
  """Each run's group label, as the frontiers name them."""
  hparams = list(summary.get('hparams') or [])
  frame = pd.DataFrame([{
      'family': info.get('family'), 'sweep': info.get('sweep'),
      'variant': info.get('variant'), 'state': info.get('state'),
      'is_branch': info.get('is_branch'),
      **{key: (info.get('hparams') or {}).get(key) for key in hparams}}
                        for info in infos])
  frame.attrs['hparams'] = hparams
  try:
    return frontier_lib.group_labels(frame, summary.get('group_by')).tolist()
  except (KeyError, ValueError):
    return [str(info.get('family')) for info in infos]


def _tensorboard_cell(workdir: str) -> str:
  board = paths.join(workdir, layout.TENSORBOARD)
  if not paths.is_local(board):
    return f'<code>{_e(board)}</code>'
  if not paths.isdir(board):
    return f'<span class="note">no {_e(layout.TENSORBOARD)}/ yet</span>'
  uri = pathlib.Path(os.path.abspath(board)).as_uri()
  return f'<a href="{_e(uri)}">{_e(layout.TENSORBOARD)}/</a>'


def _runs_html(summary: Mapping[str, Any],
               finals: Mapping[str, Mapping[str, Tuple[int, float]]]) -> str:
  infos = summary.get('runs') or []
  if not infos:
    return '<p class="note">No run.</p>'
  metrics = list(summary.get('metrics') or [])
  hparams = list(summary.get('hparams') or [])
  several_sweeps = len({info.get('sweep') for info in infos}) > 1
  groups = _group_of_runs(infos, summary)
  head = ['run'] + (['sweep'] if several_sweeps else []) + [
      'group', 'variant', 'params', 'state', 'steps', 'hyperparameters',
      *metrics, 'TensorBoard']
  rows = []
  for info, group in zip(infos, groups):
    state = _e(info.get('state'))
    if info.get('is_branch'):
      state += (f'<br><span class="note">branch of '
                f'{_e(os.path.basename(str(info.get("branch_from"))))} at '
                f'step {_e(info.get("branch_step"))}</span>')
    steps = f'{_e(info.get("last_step"))} / {_e(info.get("total_steps"))}'
    values = info.get('hparams') or {}
    settings = '<br>'.join(f'<code>{_e(key)}={_e(values.get(key))}</code>'
                           for key in hparams)
    cells = [f'<td>{_e(info.get("run"))}</td>']
    if several_sweeps:
      cells.append(f'<td>{_e(info.get("sweep"))}</td>')
    params = info.get('params')
    cells += [f'<td>{_e(group)}</td>', f'<td>{_e(info.get("variant"))}</td>',
              f'<td class="num">'
              f'{_e(plots.params_text(params) if params else "?")}</td>',
              f'<td>{state}</td>', f'<td class="num">{steps}</td>',
              f'<td>{settings}</td>']
    logged = finals.get(info.get('workdir'), {})
    for metric in metrics:
      if metric in logged:
        step, value = logged[metric]
        cells.append(f'<td class="num">{_e(_g(value))}<br>'
                     f'<span class="note">step {_e(step)}</span></td>')
      else:
        cells.append('<td class="note">none</td>')
    cells.append(f'<td>{_tensorboard_cell(str(info.get("workdir")))}</td>')
    rows.append(f'<tr title="{_e(info.get("workdir"))}">{"".join(cells)}'
                '</tr>')
  return ('<table class="runs"><thead><tr>' +
          ''.join(f'<th>{_e(name)}</th>' for name in head) +
          '</tr></thead><tbody>' + ''.join(rows) + '</tbody></table>')


def _compute_optimal_html(summary: Mapping[str, Any]) -> str:
  results = summary.get('compute_optimal')
  if not results:
    return ''
  names = {'envelope': 'approach 1 (loss envelope)',
           'isoflop': 'approach 2 (isoFLOP parabolas)'}
  rows = ''.join(
      f'<tr><td>{_e(names.get(approach, approach))}</td>'
      f'<td><code>N_opt = {_e(_g(r.get("n_coef")))} C^{_e(_g(r.get("a")))}'
      f'</code></td><td><code>D_opt = {_e(_g(r.get("d_coef")))} '
      f'C^{_e(_g(r.get("b")))}</code></td>'
      f'<td class="num">{len(r.get("compute") or [])}</td></tr>'
      for approach, r in results.items())
  return ('<h2>Compute-optimal sizes</h2><table><thead><tr><th>approach'
          '</th><th>parameters</th><th>data (D = C / 6N)</th><th>optima'
          '</th></tr></thead><tbody>' + rows + '</tbody></table>')


def _skipped_html(summary: Mapping[str, Any]) -> str:
  skipped = summary.get('skipped') or []
  if not skipped:
    return ''
  frame = pd.DataFrame(skipped)
  counts = frame.groupby(['metric', 'x', 'reason', 'run'], sort=True).size()
  rows = ''.join(f'<tr><td>{_e(metric)}</td><td>{_e(x)}</td>'
                 f'<td>{_e(reason)}</td><td>{_e(run)}</td>'
                 f'<td class="num">{count}</td></tr>'
                 for (metric, x, reason, run), count in counts.items())
  return ('<h2>Points skipped</h2><table><thead><tr><th>metric</th><th>x'
          '</th><th>why</th><th>run</th><th>points</th></tr></thead><tbody>'
          + rows + '</tbody></table>')


def render(summary: Mapping[str, Any], written: Sequence[str],
           finals: Mapping[str, Mapping[str, Tuple[int, float]]]) -> str:
  """The page's HTML (module docstring)."""
  infos = summary.get('runs') or []
  states = {}
  for info in infos:
    states[info.get('state')] = states.get(info.get('state'), 0) + 1
  meta = [
      ('workdirs', '<br>'.join(f'<code>{_e(w)}</code>'
                               for w in summary.get('workdirs') or [])),
      ('runs', _e(f'{len(infos)} (' + ', '.join(
          f'{n} {state}' for state, n in sorted(states.items(),
                                                key=lambda i: str(i[0])))
                  + ')')),
      ('metrics', _e(', '.join(summary.get('metrics') or []))),
      ('x', _e(summary.get('x'))),
      ('form', _e(summary.get('form'))),
      ('groups by', _e(', '.join(summary.get('group_by') or []))),
      ('seeds averaged over', _e(', '.join(summary.get('seed_keys') or [])
                                 or 'none')),
      ('bootstrap', _e(f'{summary.get("bootstrap")} resamples, '
                       f'{_g(summary.get("confidence"))} confidence')),
  ]
  files = ''.join(
      f'<li><a href="{_e(urllib.parse.quote(os.path.basename(p)))}">'
      f'{_e(os.path.basename(p))}</a></li>' for p in written)
  return (
      '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
      '<meta name="viewport" content="width=device-width, initial-scale=1">'
      f'<title>Scaling analysis: {_e(", ".join(summary.get("metrics") or []))}'
      f'</title><style>{_CSS}</style></head><body>'
      '<h1>Scaling analysis</h1><dl class="meta">' +
      ''.join(f'<dt>{name}</dt><dd>{value}</dd>' for name, value in meta) +
      '</dl><h2>Figures</h2>' +
      _figures_html(written, summary.get('style') or 'screen') +
      '<h2>Laws</h2>' + _fits_html(summary) +
      _compute_optimal_html(summary) +
      '<h2>Runs</h2>' + _runs_html(summary, finals) +
      _skipped_html(summary) +
      f'<h2>Files</h2><ul>{files}</ul></body></html>\n')


def write(out_dir: str, summary: Mapping[str, Any], written: Sequence[str],
          table: pd.DataFrame) -> str:
  """Writes OUT_DIR/report.html (module docstring); returns its path.

  Args:
    out_dir: the output directory (local or gs://), where `written` are.
    summary: fits.json's record (JSON-safe).
    written: the paths written there (figures, CSVs, fits.json).
    table: `load_runs`'s table, for each run's final metrics.
  """
  finals = final_metrics(table, summary.get('metrics') or [])
  path = paths.join(out_dir, NAME)
  paths.write_atomic(path, render(summary, written, finals))
  return path
