"""Storage faults: a full disk, unreachable storage, failed atomic writes,
a garbled metrics.jsonl.

How a full disk is made. `test_disk_full_run_records_its_outcome` trains
on a real 160 KiB tmpfs, mounted in a user and mount namespace
(`unshare -rm`, no root needed where unprivileged user namespaces are
allowed; the test skips where they are not): the kernel then fails
orbax's and our own writes with ENOSPC exactly as a full disk does, for
every file at once, which neither a per-file size limit (RLIMIT_FSIZE:
EFBIG for large files only, small ones still fit) nor a Python-level
patch (blind to tensorstore's C++ writes) reproduces. The unit tests
below it use RLIMIT_FSIZE (a real EFBIG from the kernel, set for this
process only while a write runs) for the temporary-file clean-up, and an
injected ENOSPC for the reserve's fallback, which a size limit cannot
reach.
"""

import errno
import os
import resource
import shutil
import socket
import subprocess
import sys

import pytest

from vit_jax import layout
from vit_jax import paths
from vit_jax import workdir as workdir_lib

from tiny import ROOT

TIMEOUT = 3600
_TINY = ('--config.model.patch_size=4', '--config.model.width=32',
         '--config.model.depth=2', '--config.model.mlp_dim=64',
         '--config.model.num_heads=2', '--config.batch_size=32',
         '--config.total_steps=10', '--config.schedule.warmup_steps=2',
         '--config.checkpoint.every_steps=5', '--config.log_every_steps=5',
         '--config.evals.fewshot.shots=(1,)',
         '--config.evals.fewshot.seeds=(0,)')


def _leftovers(directory):
  return [os.path.join(d, name) for d, _, names in os.walk(directory)
          for name in names if '.tmp-' in name]


# ----------------------------------------------------------------------------
# Atomic writes clean up.


class _FileSizeLimit:
  """RLIMIT_FSIZE's soft limit for this process, while the block runs:
  a write past `limit` bytes fails with EFBIG (Python ignores SIGXFSZ)."""

  def __init__(self, limit):
    self.limit = limit

  def __enter__(self):
    self.saved = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (self.limit, self.saved[1]))

  def __exit__(self, *exc):
    resource.setrlimit(resource.RLIMIT_FSIZE, self.saved)


def test_write_atomic_over_a_directory_leaves_nothing(tmp_path):
  target = tmp_path / 'out'
  target.mkdir()
  with pytest.raises(OSError):
    paths.write_atomic(str(target), b'x' * 100_000)
  assert sorted(os.listdir(tmp_path)) == ['out']
  assert not os.listdir(target)


@pytest.mark.parametrize('write', ['write_atomic', 'replace', 'create'])
def test_failed_write_of_a_full_file_leaves_nothing(tmp_path, write):
  path = str(tmp_path / 'config.json')
  version = None
  if write == 'replace':
    paths.write_atomic(path, b'old')
    version = paths.read_versioned(path)[1]
  with _FileSizeLimit(4096):
    with pytest.raises(OSError) as raised:
      if write == 'write_atomic':
        paths.write_atomic(path, b'x' * 100_000)
      else:
        paths.write_if_version(path, b'x' * 100_000, version)
  assert raised.value.errno == errno.EFBIG
  assert _leftovers(tmp_path) == []
  if write == 'replace':
    assert paths.read_bytes(path) == b'old'
  else:
    assert not os.path.exists(path)


def test_outcome_goes_into_the_reserve_on_a_full_disk(tmp_path,
                                                      monkeypatch):
  workdir = str(tmp_path)
  workdir_lib.mark_started(workdir)
  reserve = os.path.join(workdir, layout.RESERVE)
  assert os.path.getsize(reserve) == workdir_lib.RESERVE_BYTES

  def full(path, data):
    raise OSError(errno.ENOSPC, 'No space left on device', path)

  monkeypatch.setattr(paths, 'write_atomic', full)
  cause = OSError(errno.ENOSPC, 'No space left on device',
                  os.path.join(workdir, 'checkpoints', '5', 'x'))
  try:
    try:
      raise cause
    except OSError as error:
      raise RuntimeError('a save failed ' + 'x' * 40_000) from error
  except RuntimeError as error:
    workdir_lib.mark_failed(workdir, error)
  text = open(os.path.join(workdir, 'error')).read()
  assert text.startswith(f'disk full at {cause.filename}\n')
  assert len(text.encode()) <= workdir_lib.RESERVE_BYTES
  assert sorted(os.listdir(workdir)) == ['error']  # reserve used, no tmp


def test_done_removes_the_reserve(tmp_path):
  workdir_lib.mark_started(str(tmp_path))
  workdir_lib.mark_done(str(tmp_path), 10)
  assert sorted(os.listdir(tmp_path)) == ['done']


def test_disk_full_is_recognised_in_tensorstores_wording():
  error = ValueError(
      'RESOURCE_EXHAUSTED: Error writing local file "/w/checkpoints/5/a": '
      'Failed writing: "/w/checkpoints/5/a/d/12": Failed to write 1 bytes '
      "to file 11: No space left on device [os_error_code='28']")
  try:
    raise RuntimeError('wrapped') from error
  except RuntimeError as wrapped:
    assert workdir_lib.disk_full(wrapped) == '/w/checkpoints/5/a/d/12'
  assert workdir_lib.disk_full(ValueError('bad value')) is None
  # A write through a file object: ENOSPC without a file name.
  unnamed = OSError(28, 'No space left on device')
  assert workdir_lib.disk_full(unnamed, unknown='/w') == '/w'
  try:  # a named one further down the chain is preferred
    raise unnamed from OSError(28, 'No space left on device', '/w/a')
  except OSError as chained:
    assert workdir_lib.disk_full(chained, unknown='/w') == '/w/a'


def _unshare_works(tmp_path):
  if shutil.which('unshare') is None:
    return False
  probe = tmp_path / 'probe'
  probe.mkdir()
  result = subprocess.run(
      ['unshare', '-rm', 'sh', '-c',
       f'mount -t tmpfs -o size=64k tmpfs {probe}'],
      capture_output=True, timeout=TIMEOUT, check=False)
  return result.returncode == 0


def test_disk_full_run_records_its_outcome(tmp_path, data_dir):
  if not _unshare_works(tmp_path):
    pytest.skip('unshare -rm cannot mount a tmpfs here (no unprivileged '
                'user namespaces)')
  disk = tmp_path / 'disk'
  disk.mkdir()
  report = tmp_path / 'report'
  report.mkdir()
  workdir = disk / 'run'
  command = ' '.join([
      sys.executable, '-m', 'vit_jax.main', '--config=configs/digits.py',
      f'--workdir={workdir}', f'--config.data.data_dir={data_dir}',
      *[f"'{flag}'" for flag in _TINY]])
  # Everything is inspected inside the namespace: the tmpfs goes with it.
  script = f"""
mount -t tmpfs -o size=160k tmpfs {disk} || exit 99
{command} > {report}/stdout 2> {report}/stderr
echo $? > {report}/status
cd {workdir} && find . > {report}/files
cp {workdir}/error {report}/error 2>/dev/null
exit 0
"""
  # digits is prepared in data_dir first (outside the small disk).
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  digits.prepared_builder(data_dir)
  result = subprocess.run(['unshare', '-rm', 'sh', '-c', script], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
  assert result.returncode == 0, result.stderr
  stderr = (report / 'stderr').read_text()
  files = (report / 'files').read_text().split()
  assert int((report / 'status').read_text()) == 1, stderr[-3000:]
  lines = stderr.strip().splitlines()
  last = lines[-1]
  assert 'disk full at ' + str(workdir) in last, last
  # Not buried: before it only the run's own progress and evaluation
  # lines (orbax's save threads' tracebacks of the failed writes are in
  # DIR/error, not on the console).
  assert all(line.startswith('step ') for line in lines[:-1]), stderr[-3000:]
  # The outcome is recorded (status reads it as failed, not preempted),
  # with the cause first; nothing temporary is left.
  assert './error' in files and './done' not in files, files
  assert (report / 'error').read_text().startswith(
      f'disk full at {workdir}'), (report / 'error').read_text()[:300]
  assert not [f for f in files if '.tmp-' in f.rsplit('/', 1)[-1] and
              'orbax-checkpoint-tmp' not in f], files
  assert f'./{layout.RESERVE}' not in files


# ----------------------------------------------------------------------------
# Unreachable storage.


def _closed_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]  # closed when this returns: refused


@pytest.mark.parametrize('endpoint, cause', [
    ('refused', 'connection refused by 127.0.0.1:'),
    ('no_dns', "cannot resolve host 'storage.invalid'"),
])
def test_unreachable_storage_is_one_line_and_creates_nothing(
    tmp_path, endpoint, cause):
  url = (f'http://127.0.0.1:{_closed_port()}' if endpoint == 'refused'
         else 'http://storage.invalid:4443')
  home = tmp_path / 'home'
  home.mkdir()
  env = dict(os.environ, STORAGE_EMULATOR_HOST=url, HOME=str(home),
             PYTHONPATH=ROOT)
  for key in ('http_proxy', 'https_proxy', 'all_proxy'):  # probed directly
    env.pop(key, None)
    env.pop(key.upper(), None)
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.main',
       f'--config={ROOT}/configs/digits.py', '--workdir=gs://my-bucket/run'],
      cwd=tmp_path, env=env, capture_output=True, text=True,
      timeout=TIMEOUT, check=False)
  lines = [line for line in result.stderr.splitlines() if line.strip()]
  assert result.returncode == 1, result.stderr[-3000:]
  assert len(lines) == 1, result.stderr[-3000:]
  assert "bucket 'my-bucket'" in lines[0] and url in lines[0], lines[0]
  assert cause in lines[0], lines[0]
  # Nothing in the working directory (HOME only gets TensorFlow's and
  # Keras's import-time caches).
  assert sorted(os.listdir(tmp_path)) == ['home']


def test_check_reachable_leaves_a_proxied_endpoint_to_the_clients(
    monkeypatch):
  """Behind an HTTP proxy (clusters without direct egress) a direct TCP
  probe would refuse a reachable bucket: it is skipped; NO_PROXY hosts are
  probed."""
  url = f'http://127.0.0.1:{_closed_port()}'
  monkeypatch.setenv('STORAGE_EMULATOR_HOST', url)
  monkeypatch.setenv('http_proxy', 'http://proxy.invalid:3128')
  monkeypatch.delenv('no_proxy', raising=False)
  monkeypatch.delenv('NO_PROXY', raising=False)
  paths.check_reachable('gs://my-bucket/run', attempts=1)
  monkeypatch.setenv('no_proxy', '127.0.0.1')
  with pytest.raises(paths.StorageUnreachableError, match='refused'):
    paths.check_reachable('gs://my-bucket/run', attempts=1)


def test_check_reachable_passes_a_listening_endpoint(monkeypatch):
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen()
    monkeypatch.setenv('STORAGE_EMULATOR_HOST',
                       f'http://127.0.0.1:{server.getsockname()[1]}')
    paths.check_reachable('gs://bucket/run')
  paths.check_reachable('/local/path/never/checked')
  monkeypatch.setenv('STORAGE_EMULATOR_HOST', f'127.0.0.1:{_closed_port()}')
  with pytest.raises(paths.StorageUnreachableError, match='2 attempts'):
    paths.check_reachable('gs://bucket/run', attempts=2, backoff=0.01)


# ----------------------------------------------------------------------------
# A garbled metrics.jsonl.


def test_scaling_warns_about_a_garbled_line(tmp_path):
  from test_scaling import write_sweep  # pylint: disable=g-import-not-at-top
  sweep = write_sweep(tmp_path)
  run = os.path.join(sweep, 'model.variant=0,model.name=vit')
  metrics = os.path.join(run, 'metrics.jsonl')
  with open(metrics) as f:
    lines = f.read().splitlines(keepends=True)
  lines.insert(3, '{"step": 12, "val/acc\n')  # garbled, mid-file
  lines.append('{"step": 99')  # torn last line: skipped quietly
  with open(metrics, 'w') as f:
    f.write(''.join(lines))
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.scaling', f'--workdirs={sweep}/*',
       '--metric=val/accuracy', f'--out={tmp_path / "out"}',
       '--bootstrap=0', '--also_x='],
      cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  warnings = [line for line in result.stderr.splitlines()
              if 'metrics.jsonl' in line]
  assert len(warnings) == 1, result.stderr
  assert metrics in warnings[0] and '(line 4)' in warnings[0], warnings[0]
  assert 'skipped 1 line' in warnings[0]


# ----------------------------------------------------------------------------
# The outcome's reserve never outlives a run.


def test_reserve_is_gone_after_done_and_after_sigterm(tmp_path, data_dir):
  import signal  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  base = [sys.executable, '-m', 'vit_jax.main', '--config=configs/digits.py',
          f'--config.data.data_dir={data_dir}', *_TINY]
  finished = str(tmp_path / 'finished')
  result = subprocess.run([*base, f'--workdir={finished}'], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'done' in os.listdir(finished)
  assert layout.RESERVE not in os.listdir(finished)
  assert _leftovers(finished) == []

  stopped = str(tmp_path / 'stopped')
  process = subprocess.Popen(
      [*base, f'--workdir={stopped}', '--config.total_steps=100000',
       '--config.checkpoint.every_steps=100000'], cwd=ROOT,
      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = os.path.join(stopped, 'metrics.jsonl')
  while not (os.path.exists(metrics) and os.path.getsize(metrics)):
    assert process.poll() is None, process.communicate()[1][-3000:]
    time.sleep(0.5)
  assert layout.RESERVE in os.listdir(stopped)  # while it runs
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=TIMEOUT)
  assert process.returncode == 3, stderr[-3000:]
  names = os.listdir(stopped)
  assert 'done' not in names and 'error' not in names, names
  assert layout.RESERVE not in names
  assert _leftovers(stopped) == []
