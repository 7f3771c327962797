"""Figures a paper can use (vit_jax/scaling/plots.py): readable tick
labels, titles from readable metric names, the y range set by the data
(never by a band), the paper style (one column, a PDF with its fonts
embedded), and markers sized by their run's parameter count."""

import json
import os

from matplotlib.backends import backend_agg
import numpy as np
import pytest

from test_scaling import _cli
from test_scaling_uncertainty import _lines
from test_scaling_uncertainty import _sweep
from vit_jax import scaling
from vit_jax.scaling import fits
from vit_jax.scaling import plots


def test_plain_tick_labels():
  assert [plots.plain_number(v) for v in (0.6, 0.05, 0.3, 300, 1.0)] == [
      '0.6', '0.05', '0.3', '300', '1']
  assert plots.plain_number(1e12) == '10$^{12}$'
  assert plots.plain_number(3e9) == '3\u00d710$^{9}$'
  assert plots.plain_number(0.0) == ''


def _tick_texts(figure, axis):
  backend_agg.FigureCanvasAgg(figure).draw()  # tick labels are made lazily
  ax = figure.axes[0]
  getter = ax.get_yticklabels if axis == 'y' else ax.get_xticklabels
  low, high = ax.get_ylim() if axis == 'y' else ax.get_xlim()
  return [t.get_text() for minor in (True, False) for t in getter(minor=minor)
          if t.get_text() and low <= t.get_position()[axis == 'y'] <= high]


def test_labels_ticks_and_range_come_from_the_data(tmp_path):
  table = scaling.load_runs(os.path.join(_sweep(tmp_path), '*'))
  fronts = scaling.frontier(table, 'compute/flops', 'val/accuracy')
  # A band far below the data (as a wild bootstrap gives) must not set
  # the range.
  law = fronts['vit'].fit
  boot = fits.bootstrap(fronts['vit'].frontier['x'],
                        fronts['vit'].frontier['y'], law.form, n=20,
                        fitted=law)
  boot.band = lambda x: (np.full(np.shape(x), 2e-5),
                         np.full(np.shape(x), 0.9))
  figure, rows = plots.draw(
      {'val/accuracy': fronts}, 'compute/flops',
      bootstraps={('val/accuracy', 'vit'): boot},
      metric_labels={'val/accuracy': 'digits top-1'})
  ax = figure.axes[0]
  assert ax.get_title() == 'digits top-1'
  assert ax.get_ylabel() == 'error (1 - digits top-1)'
  # The points and the law over them; not the band, nor the
  # extrapolation (which may fall far below the data).
  data = rows[rows['series'].isin(['run', 'frontier', 'fit'])]['y']
  low, high = ax.get_ylim()
  assert data.min() / 1.5 < low < data.min() and 2e-5 < low
  assert data.max() < high < data.max() * 1.5
  y_labels = _tick_texts(figure, 'y')
  assert y_labels, "no y tick label in the range"
  # Plain numbers (0.2, 0.5, ...), never '6x10^-1' style mantissas.
  assert all('10$^' not in text and '\\times' not in text
             for text in y_labels), y_labels
  assert all(float(text) > 0 for text in y_labels)


def test_cli_paper_style_and_metric_labels(tmp_path):
  sweep = _sweep(tmp_path)
  out = tmp_path / 'paper'
  result = _cli(f'--workdirs={sweep}/*', '--metric=val/accuracy',
                f'--out={out}', '--bootstrap=0', '--also_x=', '--style=paper',
                '--metric_label=val/accuracy=digits top-1')
  assert result.returncode == 0, result.stderr
  pdf = (out / 'error_vs_compute.pdf').read_bytes()
  assert pdf.startswith(b'%PDF') and b'/FontFile2' in pdf  # TrueType, in
  svg = (out / 'error_vs_compute.svg').read_text()
  assert 'digits top-1' in svg  # text kept as text in the SVG
  assert 'width="234' in svg  # 3.25 in = 234 pt: one column
  with open(out / 'fits.json') as f:
    assert json.load(f)['fits']
  result = _cli(f'--workdirs={sweep}/*', '--metric=val/accuracy',
                f'--out={tmp_path / "bad"}', '--metric_label=val/loss=x')
  assert result.returncode == 2
  assert "--metric_label='val/loss=x': give METRIC=NAME" in result.stderr
  assert not (tmp_path / 'bad').exists()


def _marker_sizes_by_run(ax, fronts):
  """{run: {markersize}} of the sized markers drawn (frontier points and
  those off it), each point matched to its run by its coordinates."""
  sizes = {}
  for line in ax.get_lines():
    kind, _, family = line.get_label().partition(':')
    if kind not in ('_frontier_marker', '_off_frontier'):
      continue
    points = fronts[family].points
    for x, y in zip(line.get_xdata(), line.get_ydata()):
      (run,) = points[(points['x'] == x) & (points['y'] == y)]['run']
      sizes.setdefault(run, set()).add(line.get_markersize())
  return sizes


@pytest.mark.parametrize('style', plots.STYLES)
def test_markers_grow_with_the_model(tmp_path, style):
  table = scaling.load_runs(os.path.join(_sweep(tmp_path), '*'))
  params = table.groupby('run')['params'].first()
  # Two families, one scale: vit and mixer each have a 1e5 run.
  assert params.value_counts()[1e5] == 2 and params.nunique() == 8
  fronts = scaling.frontier(table, 'compute/flops', 'val/accuracy')
  figure, rows = plots.draw({'val/accuracy': fronts}, 'compute/flops',
                            style=style)
  ax = figure.axes[0]
  sizes = _marker_sizes_by_run(ax, fronts)
  assert set(sizes) == set(params.index)  # every run's points are sized
  assert all(len(s) == 1 for s in sizes.values()), sizes  # one size a run
  size = {run: s.pop() for run, s in sizes.items()}
  by_params = sorted(params.index, key=lambda run: params[run])
  for small, large in zip(by_params, by_params[1:]):
    if params[small] < params[large]:
      assert size[small] < size[large], (small, large, size)
    else:
      assert size[small] == pytest.approx(size[large])
  smallest, largest = size[by_params[0]], size[by_params[-1]]
  low, high = plots.MARKER_AREAS[style]
  assert (smallest ** 2, largest ** 2) == pytest.approx((low, high))
  # Every frontier point has its sized marker on top of the joined line.
  for family, front in fronts.items():
    marked = {(x, y) for line in _lines(ax, 'frontier_marker')[family]
              for x, y in zip(line.get_xdata(), line.get_ydata())}
    assert marked == set(zip(front.frontier['x'], front.frontier['y']))
  # The CSV says the same: params and marker area (pt^2) per point.
  marked_rows = rows[rows['series'].isin(['run', 'frontier'])]
  areas = marked_rows.groupby('run')['marker_area'].agg(['min', 'max'])
  assert (areas['min'] == areas['max']).all()
  np.testing.assert_allclose(
      [areas.loc[run, 'min'] for run in by_params],
      [size[run] ** 2 for run in by_params])
  # A size legend, its markers as drawn.
  legend = (figure.legends[0] if style == 'paper' else ax.get_legend())
  entries = {text.get_text(): handle for text, handle in zip(
      legend.get_texts(), legend.legend_handles)}
  assert {'30K params', '2M params'} <= set(entries), list(entries)
  assert entries['30K params'].get_markersize() == pytest.approx(smallest)
  assert entries['2M params'].get_markersize() == pytest.approx(largest)
