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
"""

import os
import sys

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
