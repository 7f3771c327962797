"""Scaling plots: error against x on log-log axes, one panel per metric.

Each panel shows, per family (one colour each): every evaluation of every
run (a faint line through a run's evaluations), the family's frontier
(large filled markers joined by a dotted line) and the points off it
(hollow markers: a run worse than one with less x stays visible, and what
the frontier left out is plain), with circles for finished runs, squares
for unfinished ones and crosses for failed ones; the law fitted to the
frontier (solid over the fitted x range), its extrapolation beyond the
largest fitted x (dashed, up to `extrapolate` times it) and the bootstrap
confidence band of the law, when the bootstrap gives one
(`fits.Bootstrap.degenerate`: no band then). A law fitted on fewer points
than its parameters + 2 (`fits.underdetermined`) is drawn thin, labelled
'underdetermined', and not extrapolated. Figures are drawn without pyplot
(no global matplotlib state is touched; PNG through Agg) and written as PNG
and SVG, with a CSV of exactly what is drawn, through `vit_jax.paths` (the
output directory may be gs://).

Each point's marker is sized by its run's parameter count (`MarkerSizes`):
its area grows linearly with log10(params), from the figure's smallest
model to its largest (12 to 120 pt^2 on screen, 5 to 42 pt^2 in the paper
style), so a point's model reads from the figure; a small size legend
('30K params', '100K params', ...) gives the scale. A run without a known
parameter count (no summary.json) gets the middle size.

CSV columns: panel (the metric), family, series ('run', 'frontier', 'fit',
'extrapolation'), run, step, state, x, y, y_low, y_high (the band, on fit
and extrapolation rows when a bootstrap gave one), on_frontier (on run
rows), underdetermined (on fit and extrapolation rows), params and
marker_area (the run's parameter count and its marker's area in pt^2, on
run and frontier rows).
"""

import dataclasses
import io
import logging
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import matplotlib
from matplotlib import colors as colors_lib
from matplotlib import figure as figure_lib
from matplotlib import lines
from matplotlib import ticker
import numpy as np
import pandas as pd

from vit_jax import paths
from vit_jax.scaling import fits as fits_lib
from vit_jax.scaling import frontiers as frontier_lib
from vit_jax.scaling import runs as runs_lib

CSV_COLUMNS = ('panel', 'family', 'series', 'run', 'step', 'state', 'x', 'y',
               'y_low', 'y_high', 'on_frontier', 'underdetermined', 'params',
               'marker_area')
_STATE_MARKERS = {'unfinished': 's', 'failed': 'x'}  # others: 'o'
# Embedding fonts in a PDF runs fontTools' subsetter, which logs every
# table it touches at INFO (absl shows INFO): keep it to warnings.
logging.getLogger('fontTools').setLevel(logging.WARNING)
_CURVE_POINTS = 200


def family_colors(families: Sequence[str]) -> Dict[str, str]:
  """A fixed colour per family (sorted), the same in every figure."""
  cycle = matplotlib.colormaps['tab10'].colors
  return {family: colors_lib.to_hex(cycle[i % len(cycle)])
          for i, family in enumerate(sorted(set(families)))}


def _curve_rows(panel, family, fitted: fits_lib.Fit,
                band: Optional[fits_lib.Bootstrap], extrapolate: float
                ) -> List[Dict]:
  low, high = fitted.x_range
  thin = fits_lib.underdetermined(fitted)
  rows = []
  for series, start, stop in (('fit', low, high),
                              ('extrapolation', high, high * extrapolate)):
    if stop <= start or (thin and series == 'extrapolation'):
      continue
    x = np.geomspace(start, stop, _CURVE_POINTS // 2)
    y = fitted.predict(x)
    y_low, y_high = (band.band(x) if band is not None
                     else (np.full(x.shape, np.nan),) * 2)
    rows += [{'panel': panel, 'family': family, 'series': series, 'x': xi,
              'y': yi, 'y_low': lo, 'y_high': hi, 'underdetermined': thin}
             for xi, yi, lo, hi in zip(x, y, y_low, y_high)]
  return rows


def plot_rows(panels: Mapping[str, Mapping[str, frontier_lib.Frontier]],
              bootstraps: Optional[Mapping] = None,
              extrapolate: float = 10.0) -> pd.DataFrame:
  """What a figure draws, as the CSV's rows.

  Args:
    panels: {metric: {family: Frontier}}.
    bootstraps: {(metric, family): fits.Bootstrap} for the bands.
    extrapolate: the dashed part runs to this many times the largest
      fitted x (not for an underdetermined law).
  """
  bootstraps = bootstraps or {}
  rows = []
  for panel, families in panels.items():
    for family, front in families.items():
      on = set(zip(front.frontier['workdir'], front.frontier['step']))
      for kind, frame in (('run', front.points), ('frontier', front.frontier)):
        for record in frame.sort_values(['workdir', 'step']).itertuples():
          row = {'panel': panel, 'family': family, 'series': kind,
                 'run': record.run, 'step': record.step,
                 'state': record.state, 'x': record.x, 'y': record.y,
                 'params': getattr(record, 'params', np.nan)}
          if kind == 'run':
            row['on_frontier'] = (record.workdir, record.step) in on
          rows.append(row)
      if front.fit is not None:
        rows += _curve_rows(panel, family, front.fit,
                            bootstraps.get((panel, family)), extrapolate)
  return pd.DataFrame(rows, columns=list(CSV_COLUMNS))


STYLES = ('screen', 'paper')
# The PNGs' resolution per style (dots per inch).
DPI = {'screen': 120, 'paper': 300}
# Paper: one column of a two-column paper (3.25 in), serif text at the
# size of a caption, TrueType fonts embedded in the PDF (Type 42).
_PAPER_WIDTH = 3.25


def plain_number(value: float) -> str:
  """A tick label as a reader writes it: 0.6, 0.05, 300, 1e+06 (never
  6x10^-1)."""
  if value <= 0 or not np.isfinite(value):
    return ''
  if 1e-3 <= value < 1e5:
    return f'{value:.3g}'
  exponent = int(np.floor(np.log10(value) + 1e-9))
  mantissa = value / 10 ** exponent
  head = '' if abs(mantissa - 1) < 1e-6 else f'{mantissa:.2g}\u00d7'
  return f'{head}10$^{{{exponent}}}$'


def params_text(value: float) -> str:
  """A parameter count as a reader writes it: 850, 30K, 2.5M, 1.2B."""
  if not np.isfinite(value) or value <= 0:
    return '?'
  for unit, scale in (('T', 1e12), ('B', 1e9), ('M', 1e6), ('K', 1e3),
                      ('', 1.0)):
    if value >= scale * 0.9995 or not unit:
      text = f'{value / scale:.3g}'
      if 'e' not in text:
        return text + unit
  return f'{value:.3g}'


# Marker areas (pt^2) of a figure's smallest and largest model, per style.
MARKER_AREAS = {'screen': (12.0, 120.0), 'paper': (5.0, 42.0)}


@dataclasses.dataclass(frozen=True)
class MarkerSizes:
  """Marker areas by parameter count: linear in log10(params) from
  `area_low` at `low` params to `area_high` at `high` (the figure's
  smallest and largest model); the middle area for an unknown count, and
  for every run when all have one size (low == high) or none is known
  (low, high NaN)."""
  low: float
  high: float
  area_low: float
  area_high: float

  @property
  def middle(self) -> float:
    return (self.area_low + self.area_high) / 2

  def area(self, params) -> np.ndarray:
    """The marker area (pt^2) of each parameter count."""
    params = np.asarray(params, dtype=np.float64)
    out = np.full(params.shape, self.middle)
    if not (np.isfinite(self.low) and self.high > self.low):
      return out
    known = np.isfinite(params) & (params > 0)
    share = np.clip((np.log10(params[known]) - math.log10(self.low)) /
                    (math.log10(self.high) - math.log10(self.low)), 0, 1)
    out[known] = self.area_low + share * (self.area_high - self.area_low)
    return out

  def markersize(self, params: float) -> float:
    """A Line2D markersize (the marker's width in pt) for a count."""
    return float(np.sqrt(self.area(params)))

  def legend_values(self, most: int = 3) -> List[float]:
    """Parameter counts for the size legend: the smallest and largest
    model and up to `most` - 2 round counts (1 and 3 x 10^k) between
    them, evenly spread in log, far enough from both ends to look
    different; [] when none is known."""
    if not np.isfinite(self.low):
      return []
    if self.high <= self.low * 1.01:
      return [self.low]
    round_counts = [m * 10.0 ** e for e in range(
        int(math.floor(math.log10(self.low))),
        int(math.ceil(math.log10(self.high))) + 1) for m in (1, 3)]
    inner = [v for v in round_counts
             if self.low * 1.8 < v < self.high / 1.8]
    picked = []
    for target in np.geomspace(self.low, self.high, most)[1:-1]:
      if inner:
        nearest = min(inner, key=lambda v: abs(math.log(v / target)))
        inner.remove(nearest)
        picked.append(nearest)
    return [self.low, *sorted(picked), self.high]


def marker_sizes(params, style: str = 'screen') -> MarkerSizes:
  """The `MarkerSizes` of a figure whose runs have these parameter counts
  (NaN for unknown ones)."""
  params = np.asarray(params, dtype=np.float64)
  params = params[np.isfinite(params) & (params > 0)]
  area_low, area_high = MARKER_AREAS[style]
  if params.size == 0:
    return MarkerSizes(math.nan, math.nan, area_low, area_high)
  return MarkerSizes(float(params.min()), float(params.max()), area_low,
                     area_high)


def _label_log_axis(axis, low: float, high: float) -> None:
  """Readable labels on a log axis: every decade; within a short range
  (under 2 decades) also 2x and 5x, all as plain numbers."""
  axis.set_major_locator(ticker.LogLocator(base=10))
  axis.set_major_formatter(ticker.FuncFormatter(
      lambda v, _: plain_number(v)))
  short = high / max(low, 1e-300) < 100
  axis.set_minor_locator(ticker.LogLocator(base=10, subs=(2, 3, 4, 5, 6, 7,
                                                          8, 9)))

  def minor(value, _):
    if not short:
      return ''
    lead = value / 10 ** np.floor(np.log10(value) + 1e-9)
    return plain_number(value) if round(lead) in (2, 5) else ''

  axis.set_minor_formatter(ticker.FuncFormatter(minor))


def _data_limits(values: np.ndarray) -> Tuple[float, float]:
  """Log-axis limits around the positive values, 8% of their log range
  (at least a factor 1.15) beyond each end."""
  values = values[np.isfinite(values) & (values > 0)]
  low, high = float(values.min()), float(values.max())
  pad = max(1.15, (high / low) ** 0.08)
  return low / pad, high * pad


def _draw_panel(ax, rows: pd.DataFrame, colors: Dict[str, str], x_label: str,
                metric: str, extrapolate: float,
                metric_label: Optional[str] = None,
                legend: bool = True,
                sizes: Optional[MarkerSizes] = None) -> List:
  # Artists are labelled '_<series>:<family>' (a leading '_' keeps them out
  # of the legend, which is built from handles below) for tests and
  # notebooks to find them.
  sizes = sizes or marker_sizes(rows['params'])
  for family, group in rows.groupby('family', sort=True):
    color = colors[family]
    runs = group[group['series'] == 'run']
    for (run, state), run_rows in runs.groupby(['run', 'state'], sort=True):
      run_rows = run_rows.sort_values('step')
      ax.plot(run_rows['x'], run_rows['y'], '-', color=color, alpha=0.35,
              linewidth=0.8)
      off = run_rows[~run_rows['on_frontier'].eq(True)]
      if not off.empty:
        ax.plot(off['x'], off['y'], linestyle='none', color=color,
                marker=_STATE_MARKERS.get(state, 'o'),
                markersize=sizes.markersize(off['params'].iloc[0]),
                markerfacecolor='none', markeredgecolor=color,
                markeredgewidth=0.8, alpha=0.8, label=f'_off_frontier:{family}')
    front = group[group['series'] == 'frontier'].sort_values('x')
    # The frontier joined, its points marked at the smallest size (each
    # covered by its sized marker below) ...
    ax.plot(front['x'], front['y'], ':', color=color, linewidth=1.0,
            marker='o', markersize=math.sqrt(sizes.area_low),
            markerfacecolor=color, markeredgewidth=0, zorder=3,
            label=f'_frontier:{family}')
    # ... and each run's frontier points sized by its parameter count.
    for _, run_front in front.groupby('run', sort=True):
      ax.plot(run_front['x'], run_front['y'], linestyle='none', marker='o',
              markersize=sizes.markersize(run_front['params'].iloc[0]),
              color=color, markerfacecolor=color, markeredgecolor='black',
              markeredgewidth=0.7, zorder=3.5,
              label=f'_frontier_marker:{family}')
    for series, style in (('fit', '-'), ('extrapolation', '--')):
      curve = group[group['series'] == series].sort_values('x')
      if curve.empty:
        continue
      thin = bool(curve['underdetermined'].eq(True).any())
      ax.plot(curve['x'], curve['y'], style, color=color,
              linewidth=0.8 if thin else 1.8, zorder=4,
              label=f'_{"underdetermined" if thin else series}:{family}')
      if curve['y_low'].notna().any():
        ax.fill_between(curve['x'], curve['y_low'], curve['y_high'],
                        color=color, alpha=0.15, linewidth=0,
                        label=f'_band:{family}')
  ax.set_xscale('log')
  ax.set_yscale('log')
  ax.set_xlabel(x_label)
  name = metric_label or metric
  ax.set_ylabel(f'error (1 - {name})' if runs_lib.is_accuracy(metric)
                else name)
  ax.set_title(name)
  # The data and the laws over them set the y range, never a band or an
  # extrapolation: one reaching far below the data would squash it.
  drawn = rows[rows['series'].isin(['run', 'frontier', 'fit'])]
  y_low, y_high = _data_limits(drawn['y'].to_numpy(dtype=np.float64))
  x_low, x_high = _data_limits(rows['x'].to_numpy(dtype=np.float64))
  ax.set_ylim(y_low, y_high)
  ax.set_xlim(x_low, x_high)
  _label_log_axis(ax.yaxis, y_low, y_high)
  _label_log_axis(ax.xaxis, x_low, x_high)
  ax.grid(True, which='major', alpha=0.3)
  ax.grid(True, which='minor', alpha=0.1)
  handles = [lines.Line2D([], [], color=colors[f], marker='o',
                          linestyle='-', label=f)
             for f in sorted(rows['family'].unique())]
  handles.append(lines.Line2D(
      [], [], color='gray', marker='o', markeredgecolor='black',
      linestyle=':', label='frontier (filled, joined)'))
  runs = rows[rows['series'] == 'run']
  if (~runs['on_frontier'].eq(True)).any():
    handles.append(lines.Line2D([], [], color='gray', marker='o',
                                markerfacecolor='none', linestyle='none',
                                label='off the frontier (hollow)'))
  curves = rows[rows['series'].isin(['fit', 'extrapolation'])]
  thin = curves['underdetermined'].eq(True)
  if (~thin).any():
    handles.append(lines.Line2D([], [], color='gray', linestyle='-',
                                linewidth=1.8, label='fit'))
  if (curves[~thin]['series'] == 'extrapolation').any():
    handles.append(lines.Line2D([], [], color='gray', linestyle='--',
                                label=f'extrapolation (to {extrapolate:g}x)'))
  if thin.any():
    handles.append(lines.Line2D(
        [], [], color='gray', linestyle='-', linewidth=0.8,
        label='underdetermined (< params + 2 points)'))
  states = set(runs['state'].dropna())
  if 'unfinished' in states:
    handles.append(lines.Line2D([], [], color='gray', marker='s',
                                linestyle='none', label='unfinished run'))
  if 'failed' in states:
    handles.append(lines.Line2D([], [], color='gray', marker='x',
                                linestyle='none', label='failed run'))
  for value in sizes.legend_values():
    handles.append(lines.Line2D(
        [], [], linestyle='none', marker='o', color='gray',
        markerfacecolor='lightgray', markeredgecolor='black',
        markeredgewidth=0.7, markersize=sizes.markersize(value),
        label=f'{params_text(value)} params'))
  if legend:
    ax.legend(handles=handles, fontsize='small', loc='best')
  return handles


def _write_figure(figure, stem: str, style: str = 'screen') -> List[str]:
  written = []
  extensions = ('png', 'svg') if style == 'screen' else ('pdf', 'svg', 'png')
  for extension in extensions:
    buffer = io.BytesIO()
    with matplotlib.rc_context(_rc(style)):
      figure.savefig(buffer, format=extension, dpi=DPI[style])
    path = f'{stem}.{extension}'
    paths.write_atomic(path, buffer.getvalue())
    written.append(path)
  return written


def _rc(style: str) -> Dict:
  if style not in STYLES:
    raise ValueError(f'Unknown style {style!r}; valid styles: '
                     f'{", ".join(STYLES)}.')
  if style == 'screen':
    return {}
  return {'pdf.fonttype': 42, 'ps.fonttype': 42, 'svg.fonttype': 'none',
          'font.family': 'serif', 'font.size': 7, 'axes.titlesize': 7,
          'axes.labelsize': 7, 'xtick.labelsize': 6, 'ytick.labelsize': 6,
          'legend.fontsize': 5.5, 'lines.markersize': 3,
          'axes.linewidth': 0.6}


def draw(panels: Mapping[str, Mapping[str, frontier_lib.Frontier]],
         x: str, bootstraps: Optional[Mapping] = None,
         extrapolate: float = 10.0,
         colors: Optional[Dict[str, str]] = None,
         metric_labels: Optional[Mapping[str, str]] = None,
         style: str = 'screen'
         ) -> Tuple[figure_lib.Figure, pd.DataFrame]:
  """One figure (a panel per metric) and the rows it draws (`plot_rows`).

  Args: as `plot`'s.

  Returns:
    (figure, rows): a matplotlib Figure (no pyplot) and what it draws.

  Raises:
    ValueError: nothing to draw (no panel has a point).
  """
  column = runs_lib.x_column(x)
  rows = plot_rows(panels, bootstraps, extrapolate)
  if rows.empty:
    raise ValueError(f'Nothing to plot against {x}: no point has both values '
                     f'positive.')
  _rc(style)  # an unknown style is refused before anything is drawn
  marked = rows['series'].isin(['run', 'frontier'])
  # One scale for all panels: a model's markers are alike in each.
  sizes = marker_sizes(rows.loc[marked, 'params'], style)
  rows['marker_area'] = np.where(
      marked, sizes.area(rows['params'].to_numpy(dtype=np.float64)), np.nan)
  colors = colors or family_colors(rows['family'].unique())
  metrics = [m for m in panels if (rows['panel'] == m).any()]
  columns = min(3, len(metrics))
  count = -(-len(metrics) // columns)
  # A bare Figure (no pyplot): no global backend or figure state, so
  # importing or calling this in a notebook changes nothing there. PNG is
  # rendered by Agg.
  metric_labels = metric_labels or {}
  with matplotlib.rc_context(_rc(style)):
    if style == 'paper':  # one column wide, the panels stacked
      columns, count = 1, len(metrics)
      size = (_PAPER_WIDTH, 2.6 * count)
    else:
      size = (5.2 * columns, 4.2 * count)
    paper = style == 'paper'
    # Paper: one legend for all panels, below them, never over the data.
    figure = figure_lib.Figure(figsize=size,
                               layout='constrained' if paper else None)
    axes = figure.subplots(count, columns, squeeze=False)
    legend = {}
    for ax, metric in zip(axes.flat, metrics):
      for handle in _draw_panel(
          ax, rows[rows['panel'] == metric], colors,
          runs_lib.X_LABELS.get(column, column), metric, extrapolate,
          metric_labels.get(metric), legend=not paper, sizes=sizes):
        legend.setdefault(handle.get_label(), handle)
    for ax in list(axes.flat)[len(metrics):]:
      ax.set_visible(False)
    if paper:
      figure.legend(handles=list(legend.values()), loc='outside lower center',
                    ncol=2, frameon=False)
    else:
      figure.tight_layout()
  return figure, rows


def plot(panels: Mapping[str, Mapping[str, frontier_lib.Frontier]],
         x: str, out_dir: str, name: Optional[str] = None,
         bootstraps: Optional[Mapping] = None, extrapolate: float = 10.0,
         colors: Optional[Dict[str, str]] = None,
         metric_labels: Optional[Mapping[str, str]] = None,
         style: str = 'screen') -> List[str]:
  """Writes one figure (a panel per metric, `draw`) as PNG, SVG and CSV
  (style 'paper': also PDF with its fonts embedded, one column wide).

  Args:
    panels: {metric: {family: Frontier}} (`frontiers.frontier`).
    x: the x axis ('compute/flops', 'params', ... or a column).
    out_dir: the output directory (local or gs://; created if local).
    name: the files' name without extension (default error_vs_<column>).
    bootstraps: {(metric, family): fits.Bootstrap}, for the bands.
    extrapolate: the dashed part runs to this many times the largest
      fitted x.
    colors: {family: colour} (default `family_colors` of the families).
    metric_labels: {metric: readable name} for titles and axis labels.
    style: 'screen' or 'paper' (STYLES).

  Returns:
    The paths written.

  Raises:
    ValueError: nothing to draw (no panel has a point).
  """
  figure, rows = draw(panels, x, bootstraps, extrapolate, colors,
                      metric_labels, style)
  stem = paths.join(out_dir, name or f'error_vs_{runs_lib.x_column(x)}')
  paths.makedirs(out_dir)
  written = _write_figure(figure, stem, style)
  paths.write_atomic(f'{stem}.csv', rows.to_csv(index=False))
  return written + [f'{stem}.csv']


def isoflop_plot(result, out_dir: str, name: str = 'isoflop',
                 loss_label: str = 'loss', style: str = 'screen',
                 approach1=None) -> List[str]:
  """Chinchilla's approach 2 (`compute_optimal.isoflop`) as PNG, SVG (and
  PDF for style 'paper') and CSV: left, each budget's points and parabola
  against parameters, its minimum starred; right, N_opt against compute
  with the fitted power law (and approach 1's, `approach1`, if given).

  Returns:
    The paths written.
  """
  rows = []
  with matplotlib.rc_context(_rc(style)):
    wide = style != 'paper'
    figure = figure_lib.Figure(figsize=(10.4, 4.2) if wide else
                               (_PAPER_WIDTH, 5.0))
    left, right = figure.subplots(1, 2) if wide else figure.subplots(2, 1)
    cmap = matplotlib.colormaps['viridis']
    budgets = [p.budget for p in result.profiles]
    for i, profile in enumerate(result.profiles):
      color = cmap(i / max(1, len(budgets) - 1))
      label = f'C = {plain_number(profile.budget)}'
      left.plot(profile.n, profile.loss, 'o', color=color, markersize=3,
                label=f'_points:{label}')
      rows += [{'series': 'point', 'budget': profile.budget, 'n': n,
                'loss': loss} for n, loss in zip(profile.n, profile.loss)]
      if profile.coefficients is not None and profile.n.size:
        grid = np.geomspace(profile.n.min(), profile.n.max(), 50)
        left.plot(grid, profile.curve(grid), '-', color=color,
                  linewidth=1.0, label=label)
      if np.isfinite(profile.n_opt):
        left.plot([profile.n_opt], [profile.loss_opt], '*', color=color,
                  markeredgecolor='black', markersize=9,
                  label=f'_optimum:{label}')
        rows.append({'series': 'optimum', 'budget': profile.budget,
                     'n': profile.n_opt, 'loss': profile.loss_opt})
    left.set_xscale('log')
    left.set_xlabel('parameters N')
    left.set_ylabel(loss_label)
    left.set_title('isoFLOP profiles (Chinchilla approach 2)')
    left.legend(fontsize='x-small', loc='best')
    c = np.geomspace(result.compute.min() / 2, result.compute.max() * 2, 50)
    right.plot(result.compute, result.n_opt, '*', color='black',
               markersize=8, label='_optima')
    right.plot(c, result.n_opt_at(c), '-', color='tab:blue',
               label=f'approach 2: N_opt ~ C^{result.a:.3f}')
    if approach1 is not None:
      right.plot(approach1.compute, approach1.n_opt, '.', color='tab:orange',
                 markersize=3, label='_envelope')
      right.plot(c, approach1.n_opt_at(c), '--', color='tab:orange',
                 label=f'approach 1: N_opt ~ C^{approach1.a:.3f}')
    right.set_xscale('log')
    right.set_yscale('log')
    right.set_xlabel('training compute C')
    right.set_ylabel('compute-optimal parameters N_opt')
    right.legend(fontsize='small', loc='best')
    for ax in (left, right):
      ax.grid(True, which='major', alpha=0.3)
    figure.tight_layout()
  stem = paths.join(out_dir, name)
  paths.makedirs(out_dir)
  written = _write_figure(figure, stem, style)
  paths.write_atomic(f'{stem}.csv', pd.DataFrame(
      rows, columns=['series', 'budget', 'n', 'loss']).to_csv(index=False))
  return written + [f'{stem}.csv']
