"""report.html (vit_jax/scaling/report.py): what `python -m vit_jax.scaling
--out=DIR` writes beside its figures, read as HTML and rendered in a real
headless Chromium.

The browser tests need a Chromium binary (Debian: `apt-get install
chromium`); without one they skip, or fail where CI is set, since
`.ci/run` installs it. No training: the workdirs are written by hand
(test_scaling.write_workdir).
"""

import base64
import html
import html.parser
import json
import os
import re
import shutil
import subprocess
import urllib.parse
import uuid

from matplotlib import colors as colors_lib
from matplotlib import image as image_lib
import numpy as np
import pytest

from test_scaling import _cli
from test_scaling import write_workdir
from test_scaling_uncertainty import _sweep
from vit_jax import paths
from vit_jax.scaling import plots

CHROMIUM_NAMES = ('chromium', 'chromium-browser', 'google-chrome',
                  'google-chrome-stable')
# A run whose name needs escaping, with no evaluation yet.
ODD_RUN = 'odd <b>run & "quotes"'
WINDOW = (1200, 3000)


def _chromium():
  """The Chromium binary; skips without one, fails without one under CI."""
  for name in CHROMIUM_NAMES:
    found = shutil.which(name)
    if found:
      return found
  reason = (f'no Chromium binary on PATH (tried {", ".join(CHROMIUM_NAMES)};'
            f' Debian: apt-get install chromium)')
  if os.environ.get('CI'):
    pytest.fail(f'CI is set, and .ci/run should have installed chromium, '
                f'but {reason}', pytrace=False)
  pytest.skip(reason)


def _browse(chromium, profile, page, *args):
  """Chromium, headless, on a local page; its stdout."""
  command = [chromium, '--headless', '--no-sandbox', '--disable-gpu',
             '--disable-dev-shm-usage', '--hide-scrollbars', '--no-first-run',
             '--force-device-scale-factor=1', f'--user-data-dir={profile}',
             f'--window-size={WINDOW[0]},{WINDOW[1]}', *args,
             page.as_uri()]
  result = subprocess.run(command, capture_output=True, text=True,
                          timeout=1800)
  assert result.returncode == 0, (command, result.stderr[-3000:])
  return result.stdout


class _Page(html.parser.HTMLParser):
  """The tags a report has: images, links, scripts, tables' rows."""

  def __init__(self):
    super().__init__()
    self.images, self.links, self.tags = [], [], []
    self.rows = {}  # table class -> [[cell text]]
    self._table, self._row, self._cell = None, None, None

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    self.tags.append(tag)
    if tag in ('br', 'li') and self._cell is not None:
      self._cell.append(' ')  # a line break reads as a space
    if tag == 'img':
      self.images.append(attrs)
    elif tag == 'a':
      self.links.append(attrs.get('href'))
    elif tag == 'table':
      self._table = attrs.get('class') or ''
    elif tag == 'tr' and self._table is not None:
      self._row = []
    elif tag in ('td', 'th') and self._row is not None:
      self._cell = []

  def handle_endtag(self, tag):
    if tag in ('td', 'th') and self._cell is not None:
      self._row.append(' '.join(''.join(self._cell).split()))
      self._cell = None
    elif tag == 'tr' and self._row is not None:
      self.rows.setdefault(self._table, []).append(self._row)
      self._row = None
    elif tag == 'table':
      self._table = None

  def handle_data(self, data):
    if self._cell is not None:
      self._cell.append(data)


def _study(root):
  """_sweep's runs, two of them with TensorBoard folders, and a run with a
  name to escape and no evaluation yet."""
  sweep = _sweep(root)
  boards = ['model.variant=0,model.name=vit',
            'model.variant=1,model.name=mixer']
  for run in boards:
    os.makedirs(os.path.join(sweep, run, 'tb'))
  write_workdir(sweep, ODD_RUN, params=5e5, total_steps=400, eval_every=40,
                stop=10, state='unfinished')
  return sweep, boards


def test_report_holds_figures_laws_and_runs(tmp_path):
  sweep, boards = _study(tmp_path)
  out = tmp_path / 'out'
  result = _cli(f'--workdirs={sweep}/*', '--metric=val/accuracy,val/loss',
                f'--out={out}', '--bootstrap=20', '--also_x=params')
  assert result.returncode == 0, result.stderr
  assert str(out / 'report.html') in result.stdout  # in 'Wrote ...'
  text = (out / 'report.html').read_text()
  page = _Page()
  page.feed(text)
  # Offline: no script, no stylesheet or font to fetch, nothing remote.
  assert 'script' not in page.tags and 'link' not in page.tags
  assert not re.search(r'(src|href)="(https?:)?//', text)
  assert '@import' not in text and 'url(' not in text
  # Every figure written is in the page, as its own PNG bytes.
  pngs = sorted(p.name for p in out.glob('*.png'))
  assert pngs == ['error_vs_compute.png', 'error_vs_params.png']
  embedded = {}
  for image in page.images:
    head, _, data = image['src'].partition(',')
    assert head == 'data:image/png;base64', head
    embedded[image['alt']] = base64.b64decode(data)
  assert embedded == {p[:-4]: (out / p).read_bytes() for p in pngs}
  # The other links are the files beside the page, or TensorBoard folders.
  files = [h for h in page.links if not h.startswith('file://')]
  for href in files:
    assert (out / urllib.parse.unquote(href)).is_file(), href
  assert {'error_vs_compute.svg', 'error_vs_params.csv', 'fits.json'} <= set(
      files)
  boards_linked = sorted(urllib.parse.unquote(h[len('file://'):])
                         for h in page.links if h.startswith('file://'))
  assert boards_linked == sorted(os.path.join(sweep, run, 'tb')
                                 for run in boards)

  # The laws: a row per (x, metric, group), as in fits.json.
  with open(out / 'fits.json') as f:
    record = json.load(f)
  fits = page.rows['fits']
  header, laws = fits[0], [row for row in fits if row != fits[0]]
  assert header == ['metric', 'group', 'law', 'parameters', 'underdetermined',
                    'extrapolation check', 'frontier points']
  assert len(laws) == len(record['fits']) == 8  # 2 x, 2 metrics, 2 groups
  by_key = {}
  for row in laws:
    by_key.setdefault((row[0], row[1]), []).append(row)
  vit, _ = by_key[('val/accuracy', 'vit')]  # against compute, then params
  mixer, _ = by_key[('val/accuracy', 'mixer')]
  assert vit[2].startswith('saturating error = ')
  assert '95% intervals from 20 resamples' in vit[3]
  assert re.search(r'b = [\d.e+-]+ \[[\d.e+-]+, [\d.e+-]+\]', vit[3]), vit[3]
  assert vit[4] == 'no' and vit[5].startswith('fitted on ')
  assert 'no 95% interval from 20 resamples' in mixer[3]
  assert 'every resample that fits is the data itself' in mixer[3]
  assert mixer[4].startswith('yes: 4 points for 4 parameters')
  assert mixer[5].startswith('skipped: ')
  _, vit_params = by_key[('val/accuracy', 'vit')]
  assert 'fitted without a bootstrap' in vit_params[3]

  # The runs: one row each, with group, settings, final metrics, board.
  runs = page.rows['runs']
  header, rows = runs[0], {row[0]: row for row in runs[1:]}
  assert header == ['run', 'group', 'variant', 'params', 'state', 'steps',
                    'hyperparameters', 'val/accuracy', 'val/loss',
                    'TensorBoard']
  assert len(rows) == len(os.listdir(sweep)) == 10
  big = rows['model.variant=3,model.name=vit']
  assert big[1:6] == ['vit', 'Ti/16', '1M', 'done', '400 / 400']
  assert 'model.name=vit' in big[6] and 'total_steps=400' in big[6]
  final = next(f for f in record['runs']
               if f['run'] == 'model.variant=3,model.name=vit')
  assert final['last_step'] == 400
  metrics = [json.loads(line) for line in open(
      os.path.join(sweep, 'model.variant=3,model.name=vit', 'metrics.jsonl'))]
  last = [m['val/accuracy'] for m in metrics if 'val/accuracy' in m][-1]
  assert big[7] == f'{last:.4g} step 400'
  assert big[9] == 'no tb/ yet'
  assert rows['model.variant=0,model.name=vit'][9] == 'tb/'
  odd = rows[ODD_RUN]  # its text, escaped in the HTML, reads back whole
  assert odd[4] == 'unfinished' and odd[7] == odd[8] == 'none'
  assert html.escape(ODD_RUN) in text and ODD_RUN not in text
  assert '<b>' not in text


def test_report_on_gcs(gcs, tmp_path):
  root = f'gs://{gcs.bucket}/report-{uuid.uuid4().hex[:8]}'
  for i, n in enumerate((1e5, 3e5, 1e6)):
    write_workdir(f'{root}/sweep', f'run{i}', params=n, total_steps=200,
                  eval_every=20)
  out = f'{root}/plots'
  result = _cli(f'--workdirs={root}/sweep/*', '--metric=val/accuracy',
                f'--out={out}', '--bootstrap=0', '--also_x=', '--form=power')
  assert result.returncode == 0, result.stderr
  text = paths.read_text(f'{out}/report.html')
  page = _Page()
  page.feed(text)
  (image,) = page.images
  assert base64.b64decode(image['src'].split(',', 1)[1]) == paths.read_bytes(
      f'{out}/error_vs_compute.png')
  # A gs:// workdir's TensorBoard folder is printed, not linked.
  assert not any(h.startswith('file:') for h in page.links)
  boards = [row[-1] for row in page.rows['runs'][1:]]
  assert boards == [f'{root}/sweep/run{i}/tb' for i in range(3)]
  assert 'no interval: --bootstrap=0' in text


# The probe: after the page has loaded, the title says how many images
# decoded and where they are; a broken control image shows the count can
# miss one.
_PROBE = """<img id="probe-control" alt="control"
 src="data:image/png;base64,AAAA"><script>
window.addEventListener('load', () => {
  const images = Array.from(document.images).filter(
      i => i.id !== 'probe-control');
  const loaded = images.filter(i => i.complete && i.naturalWidth > 0).map(
      i => { const r = i.getBoundingClientRect();
             return [i.alt, r.left, r.top, r.right, r.bottom]; });
  const control = document.getElementById('probe-control');
  document.title = JSON.stringify({images: images.length, loaded: loaded,
                                   control: control.naturalWidth});
});
</script></body>"""


def _pixels_near(image, color, tolerance=6 / 255):
  """A mask of the pixels within `tolerance` of an RGB colour."""
  rgb = np.asarray(colors_lib.to_rgb(color))
  return np.all(np.abs(image[..., :3] - rgb) <= tolerance, axis=-1)


def test_report_renders_in_a_headless_browser(tmp_path):
  chromium = _chromium()
  sweep, _ = _study(tmp_path)
  out = tmp_path / 'out'
  result = _cli(f'--workdirs={sweep}/*', '--metric=val/accuracy,val/loss',
                f'--out={out}', '--bootstrap=0', '--also_x=params')
  assert result.returncode == 0, result.stderr
  report = out / 'report.html'
  text = report.read_text()
  profile = tmp_path / 'profile'

  # The DOM, scripts run: every figure decoded, and where it is laid out.
  probe = out / 'probe.html'
  probe.write_text(text.replace('</body>', _PROBE))
  dom = _browse(chromium, profile, probe, '--dump-dom',
                '--virtual-time-budget=10000')
  title = re.search(r'<title>(.*?)</title>', dom, re.S)
  assert title, dom[:2000]
  state = json.loads(html.unescape(title.group(1)))
  assert state['control'] == 0  # the broken one counts as not loaded
  assert state['images'] == 2, state
  exact = {alt: box for alt, *box in state['loaded']}
  boxes = {alt: [int(np.floor(left)), int(np.floor(top)),
                 int(np.ceil(right)), int(np.ceil(bottom))]
           for alt, (left, top, right, bottom) in exact.items()}
  assert set(boxes) == {'error_vs_compute', 'error_vs_params'}, state
  for left, top, right, bottom in boxes.values():
    assert 0 <= left < right <= WINDOW[0] and 0 <= top < bottom <= WINDOW[1]
    assert right - left > 300 and bottom - top > 200

  # The page as drawn, and with each figure replaced by a blank box of
  # its size (the layout unchanged).
  shot, bare = tmp_path / 'report.png', tmp_path / 'bare.png'
  _browse(chromium, profile, report, f'--screenshot={shot}')
  blank = out / 'blank.html'

  def blank_box(match):  # a box exactly as large as the image it replaces
    left, top, right, bottom = exact[match.group(1)]
    return (f'<span style="display:inline-block;box-sizing:border-box;'
            f'width:{right - left}px;height:{bottom - top}px"></span>')

  blank.write_text(re.sub(r'<img [^>]*alt="([^"]*)"[^>]*>', blank_box, text))
  assert blank.read_text().count('<span style="display:inline-block') == 2
  _browse(chromium, profile, blank, f'--screenshot={bare}')
  image, bare_image = image_lib.imread(shot), image_lib.imread(bare)
  assert image.shape[:2] == bare_image.shape[:2] == (WINDOW[1], WINDOW[0])
  inside = np.zeros(image.shape[:2], dtype=bool)
  for left, top, right, bottom in boxes.values():
    inside[top:bottom, left:right] = True

  def ink(pixels):  # the share of pixels that are not white
    return float(np.mean(np.any(pixels[..., :3] < 0.9, axis=-1)))

  assert ink(image[~inside]) > 0.005  # text and tables: not a blank page
  assert ink(image[inside]) > 0.03  # figures drawn in their boxes ...
  assert ink(bare_image[inside]) < 0.001  # ... and only the figures there
  # Elsewhere the page is the same with or without them.
  assert np.abs(image[~inside] - bare_image[~inside]).max() < 0.05
  # Each group's colour is drawn inside each figure's box, and nowhere
  # else on the page (nor anywhere without the figures).
  for family, color in plots.family_colors(['mixer', 'vit']).items():
    near = _pixels_near(image, color)
    for name, (left, top, right, bottom) in boxes.items():
      count = int(near[top:bottom, left:right].sum())
      assert count > 50, (family, color, name, count)
    assert not near[~inside].any(), (family, color)
    assert not _pixels_near(bare_image, color).any(), (family, color)
