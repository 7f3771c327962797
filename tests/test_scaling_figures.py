"""Figures a paper can use (vit_jax/scaling/plots.py): readable tick
labels, titles from readable metric names, the y range set by the data
(never by a band), and the paper style (one column, a PDF with its fonts
embedded)."""

import json
import os

from matplotlib.backends import backend_agg
import numpy as np
import pytest

from test_scaling import _cli
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
