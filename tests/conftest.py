"""Test set-up: the helper modules importable, 8 virtual CPU devices, and
fast XLA compiles.

The helpers the tests share (tiny.py, golden_cases.py, stand_in.py,
gcs_emulator.py, slurm_cluster.py) and the hand-run golden-file generators
live in tests/support/, apart from the test files. `tests/` is no package:
pytest puts it on sys.path and a test imports a helper as a top-level
module (`import tiny`, `from tiny import tiny_config`), so tests/support is
put on sys.path here too, before any test module is imported. Config files
that tests write for a subprocess add the same folder themselves.

The device count is added unless XLA_FLAGS already sets it (`.ci/run`
does). Tests compile many small programs and run each a few times, so the
CPU backend's LLVM optimisation is turned off: it halves the suite's time
and changes no result beyond float rounding. Subprocesses inherit both.

The same programs are compiled again and again (every restart of a
trainer in the fault tests, every test that builds the same tiny model),
so the session shares one persistent XLA compilation cache, in a fresh
folder that the first process (pytest-xdist's controller) makes, the
workers and their subprocesses inherit, and the controller removes at
exit. A cached executable is the one the compiler would have produced,
so no result changes (the bit-exact resume tests hold either way).
JAX_COMPILATION_CACHE_DIR set beforehand is used as it is.

The slowest tests (SLOW below) are started first and pytest-xdist's work
stealing spreads the rest, so that no long test starts last on one worker
while the other idles.
"""

import atexit
import os
import shutil
import sys
import tempfile

SUPPORT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'support')
if SUPPORT not in sys.path:
  sys.path.insert(0, SUPPORT)

_FLAGS = {
    'xla_force_host_platform_device_count': '8',
    'xla_backend_optimization_level': '0',
}

_xla_flags = os.environ.get('XLA_FLAGS', '')
for _name, _value in _FLAGS.items():
  if _name not in _xla_flags:
    _xla_flags += f' --{_name}={_value}'
os.environ['XLA_FLAGS'] = _xla_flags.strip()
os.environ.setdefault('JAX_PLATFORMS', 'cpu')

if 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
  _cache = tempfile.mkdtemp(prefix='vit_jax_tests_xla_cache-')
  atexit.register(shutil.rmtree, _cache, ignore_errors=True)
  os.environ['JAX_COMPILATION_CACHE_DIR'] = _cache
  # Every program, however quick to compile or small.
  os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  os.environ['JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES'] = '-1'


import pytest  # noqa: E402  (after the XLA flags, before any jax import)


@pytest.fixture(scope='session')
def data_dir(tmp_path_factory):
  """A TFDS data_dir; digits is prepared into it on first use."""
  return str(tmp_path_factory.mktemp('tfds'))


@pytest.fixture
def slurm_cluster(slurm_cluster_session):
  """The session's SLURM cluster; after each test every job still there is
  cancelled, so that one test's leftover (a failure midway, a requeued task)
  cannot hold the node from the next."""
  yield slurm_cluster_session
  slurm_cluster_session.cancel_all()


@pytest.fixture(scope='session')
def slurm_cluster_session():
  """A running one-node SLURM cluster (tests/support/slurm_cluster.py),
  shared by the session (one per pytest-xdist worker). Client commands reach
  it with `cluster.env` added to the environment, or through `cluster.run`
  and `cluster.sbatch`.

  Without the SLURM and munge binaries, or when the daemons do not come up,
  its tests skip; under CI (the CI environment variable set) they fail
  instead, since `.ci/run` installs slurm-wlm and munge.
  """
  import slurm_cluster as slurm  # pylint: disable=import-outside-toplevel

  def unavailable(reason):
    if os.environ.get('CI'):
      pytest.fail('CI is set, and .ci/run should have installed slurm-wlm '
                  f'and munge, but {reason}', pytrace=False)
    pytest.skip(reason)

  missing = slurm.missing_binaries()
  if missing:
    unavailable(f'SLURM is not installed ({", ".join(missing)} missing; '
                f'{slurm.INSTALL_HINT})')
  if os.geteuid() != 0:
    unavailable('the SLURM test cluster runs its daemons as root')
  cluster = slurm.SlurmCluster()
  try:
    cluster.start()
  except slurm.SlurmStartError as e:
    unavailable(f'the SLURM test cluster did not come up: {e}')
  try:
    yield cluster
  finally:
    cluster.stop()


@pytest.fixture(scope='session')
def gcs(tmp_path_factory):
  """A local GCS emulator with a bucket (`gcs_emulator.GcsEmulator`).

  While it runs, this process's environment points gcsfs and tensorstore
  at it (`GcsEmulator.env`; subprocesses inherit it): gs://BUCKET/... paths
  then live in the emulator. Stopped, and the environment restored, at the
  end of the session.
  """
  import fsspec  # pylint: disable=g-import-not-at-top
  import gcs_emulator  # pylint: disable=g-import-not-at-top
  emulator = gcs_emulator.GcsEmulator(tmp_path_factory.mktemp('gcs'))
  try:
    emulator.start()
  except RuntimeError as error:
    pytest.fail(str(error), pytrace=False)
  saved = {name: os.environ.get(name) for name in emulator.env}
  os.environ.update(emulator.env)
  gs_options = fsspec.config.conf.setdefault('gs', {})
  gs_options['token'] = 'anon'  # as FSSPEC_GS_TOKEN does in subprocesses
  try:
    yield emulator
  finally:
    gs_options.pop('token', None)
    for name, value in saved.items():
      if value is None:
        os.environ.pop(name, None)
      else:
        os.environ[name] = value
    emulator.stop()


# Started first (see the module docstring): the demos and the longest
# fault and scheduler tests, about slowest first (CI, 2026-12-07).
SLOW = (
    'tests/test_segmentation_demo.py::test_unetr_volumes_demo',
    'tests/test_video_demo.py::test_moving_digits_clip_models',
    'tests/test_segmentation_demo.py::test_segformer_mosaics_demo',
    'tests/test_faults.py::test_kill_9_at_every_phase',
    'tests/test_slurm.py',
    'tests/test_video_demo.py::test_moving_digits_single_frame',
    'tests/test_segmentation_demo.py',
    'tests/test_launch.py::test_local_sweep_failure_and_resume',
    'tests/test_scaling_study.py',
    'tests/test_evaluate.py::test_mae_pretrain_fewshot',
    'tests/test_mvit.py::test_scan_runs_the_same_function',
    'tests/test_recipes.py',
)


def pytest_collection_modifyitems(items):
  def rank(item):
    for i, prefix in enumerate(SLOW):
      if item.nodeid.startswith(prefix):
        return i
    return len(SLOW)
  items.sort(key=rank)  # stable: the rest keep their order
