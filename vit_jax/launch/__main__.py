"""`python -m vit_jax.launch`: launch, watch, resume and cancel sweeps.

    python -m vit_jax.launch --sweep=FILE[:ARG] --sweep_dir=DIR \
        --backend=local|slurm|tpu_vm [back-end flags] [--dry_run]
    python -m vit_jax.launch status --sweep_dir=DIR [--format=table|json]
    python -m vit_jax.launch resume --sweep_dir=DIR [back-end flags]
        [--dry_run]
    python -m vit_jax.launch cancel --sweep_dir=DIR

Launching validates every run first and writes nothing on an error;
`--dry_run` prints what would run or be submitted and writes nothing (on
gs:// it reads nothing either: every run is listed, the sweep's state
unread). `launch` and `resume` hold SWEEP_DIR/launcher.lock while they
run (`lock.py`): a second launcher on the same sweep is refused in one
line, exit 2. Launching into a sweep directory that already holds the
same sweep continues it like `resume`; a different sweep there is
refused. `resume` relaunches the runs that are not done and not
running (failed, preempted, never started), with the back end and
settings of `DIR/sweep.json`, each overridable by its flag. Exit status:
0 (the runs finished, or were submitted), 1 a run failed (local, TPU VM)
or an error (storage out of reach: one line), 2 a bad command line or
sweep, or a sweep another launcher holds, 3 stopped by SIGINT / SIGTERM.
"""

import json
import os
import sys
from typing import Any, Dict, List

from absl import app
from absl import flags

from vit_jax import layout
from vit_jax import paths
from vit_jax.launch import local
from vit_jax.launch import lock as lock_lib
from vit_jax.launch import record as record_lib
from vit_jax.launch import slurm
from vit_jax.launch import status as status_lib
from vit_jax.launch import sweep as sweep_lib
from vit_jax.launch import tpu_vm

BACKENDS = {'local': local.LocalBackend, 'slurm': slurm.SlurmBackend,
            'tpu_vm': tpu_vm.TpuVmBackend}
COMMANDS = ('launch', 'status', 'resume', 'cancel')

_SWEEP = flags.DEFINE_string('sweep', None, 'The sweep: FILE[:ARG], a '
                             'Python file with get_sweep(arg=None).')
_SWEEP_DIR = flags.DEFINE_string(
    'sweep_dir', None, 'The sweep\'s directory: sweep.json and one workdir '
    'per run (local or gs://).')
_BACKEND = flags.DEFINE_enum('backend', 'local', list(BACKENDS),
                             'Where the runs go.')
_DRY_RUN = flags.DEFINE_bool(
    'dry_run', False, 'Print what would run or be submitted; change '
    'nothing.')
_LOG_DIR = flags.DEFINE_string(
    'logs', None, 'Where run logs go (a local or shared path); default '
    'SWEEP_DIR/logs, required when SWEEP_DIR is on cloud storage.')
_CODE_DIR = flags.DEFINE_string(
    'code_dir', None, 'The checkout the runs use (recipes are relative to '
    'it); default: the one holding this vit_jax package.')
_FORMAT = flags.DEFINE_enum('format', 'table', ['table', 'json'],
                            'status: a table or JSON lines.')


def _usage(message: str) -> None:
  print(f'vit_jax.launch: {message}', file=sys.stderr)
  sys.exit(layout.EXIT_USAGE)


def _default_code_dir() -> str:
  package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return os.path.dirname(package)


def _log_dir(sweep_dir: str) -> str:
  if _LOG_DIR.value:
    return _LOG_DIR.value
  if not paths.is_local(sweep_dir):
    _usage(f'--sweep_dir={sweep_dir} is on cloud storage: give --logs, '
           f'a local or shared folder for the run logs.')
  return os.path.join(sweep_dir, 'logs')


def _sweep_dir() -> str:
  if not _SWEEP_DIR.value:
    _usage('--sweep_dir is required.')
  try:
    paths.check_supported(_SWEEP_DIR.value)
  except ValueError as error:
    _usage(f'--sweep_dir: {error}')
  return paths.absolute(_SWEEP_DIR.value)


def _settings(backend_cls, stored: Dict[str, Any] = None) -> Dict[str, Any]:
  """The back end's settings: stored ones, overridden by given flags."""
  fresh = backend_cls.settings_from_flags()
  if stored is None:
    return fresh
  settings = dict(stored)
  for key, value in fresh.items():
    if key in flags.FLAGS and flags.FLAGS[key].present:
      settings[key] = value
  return settings


def _statuses(record) -> List[status_lib.RunStatus]:
  submissions = record_lib.latest_submissions(record)
  scheduler = {}  # each run asked of the back end it was last submitted to
  for name, backend_cls in BACKENDS.items():
    mine = {run: submission for run, submission in submissions.items()
            if submission.get('backend', record['backend']) == name}
    if mine:
      scheduler.update(backend_cls.scheduler_states(record, mine))
  return [status_lib.run_status(
      run, record['metric'], scheduler=scheduler.get(run['name']),
      submitted=submissions.get(run['name'], {}).get('time'))
          for run in record['runs']]


def _warn(message: str) -> None:
  print(f'vit_jax.launch: {message}', file=sys.stderr)


def _sweep_lock(sweep_dir: str) -> lock_lib.SweepLock:
  """The sweep's launcher lock, taken; a live holder: one line, exit 2."""
  lock = lock_lib.SweepLock(sweep_dir, warn=_warn)
  try:
    lock.acquire()
  except lock_lib.SweepLockedError as error:
    _usage(str(error))
  return lock


def _reads_storage() -> bool:
  """Whether the sweep's state may be read: not in a dry run on cloud
  storage (a dry run needs no network)."""
  return not (_DRY_RUN.value and not paths.is_local(_SWEEP_DIR.value))


def _launch_runs(record, sweep_dir: str, backend_cls, settings) -> int:
  """Launches the runs that are neither done, running nor queued."""
  if not _reads_storage():
    print(f'# dry run: the state of {sweep_dir} is not read (a dry run '
          f'touches no cloud storage): every run is listed, also those '
          f'done or running.')
    statuses = {}
  else:
    statuses = {s.name: s for s in _statuses(record)} if (
        paths.exists(record_lib.path(sweep_dir))) else {}

  def busy(name):
    status = statuses.get(name)
    return status is not None and (
        status.state in ('done', 'running') or
        status.scheduler in ('PENDING', 'RUNNING'))

  runs = [run for run in record['runs'] if not busy(run['name'])]
  skipped = {name: (s.state if s.state != 'pending' else 'queued')
             for name, s in statuses.items() if busy(name)}
  if skipped:
    print(f'Not relaunched: {len(skipped)} runs '
          f'({", ".join(f"{n}: {s}" for n, s in skipped.items())}).')
  if not runs:
    print('Nothing to launch: every run is done, running or queued.')
    return 0
  log_dir = _log_dir(sweep_dir)
  backend = backend_cls(settings)
  if _DRY_RUN.value:
    print(backend.describe(record, runs, log_dir))
    return 0
  record['backend'], record['settings'] = backend_cls.name, settings
  try:
    submission = backend.submit(record, runs, log_dir)
  except (OSError, RuntimeError) as error:
    print(f'vit_jax.launch: {error}', file=sys.stderr)
    return layout.EXIT_FAILED
  record_lib.add_submission(sweep_dir, record, {
      'backend': backend_cls.name, 'settings': settings,
      'runs': [run['name'] for run in runs], **submission})
  results = backend.wait(record, runs, log_dir)
  if results is None:  # a scheduler took the runs
    print(f'Submitted {len(runs)} runs; watch them with: python -m '
          f'vit_jax.launch status --sweep_dir={sweep_dir}')
    return 0
  failed = [name for name, code in results.items()
            if code not in (0, layout.EXIT_PREEMPTED)]
  stopped = len(results) < len(runs) or any(
      code == layout.EXIT_PREEMPTED for code in results.values())
  print(status_lib.table(_statuses(record), record['metric']))
  if failed:
    return layout.EXIT_FAILED
  return layout.EXIT_PREEMPTED if stopped else 0


def _check(backend_cls, settings, sweep_dir: str, runs) -> None:
  """The back end's settings, and with each run's resources in them:
  exit 2 naming the run and the value where one is refused."""
  try:
    backend_cls.check(settings, sweep_dir)
  except ValueError as error:
    _usage(str(error))
  for run in runs:
    if run.get('resources'):
      try:
        backend_cls.check_resources(settings, run['resources'])
      except ValueError as error:
        _usage(f'run {run["name"]}\'s resources {run["resources"]}: '
               f'{error}')


def launch() -> int:
  if not _SWEEP.value:
    _usage('--sweep=FILE[:ARG] is required to launch (or give a command: '
           f'{", ".join(COMMANDS[1:])}).')
  sweep_dir = _sweep_dir()
  code_dir = os.path.abspath(_CODE_DIR.value or _default_code_dir())
  backend_cls = BACKENDS[_BACKEND.value]
  try:
    sweep = sweep_lib.load(_SWEEP.value, sweep_dir, code_dir)
  except (ValueError, FileNotFoundError) as error:
    _usage(f'bad sweep: {error}')
  settings = _settings(backend_cls)
  _check(backend_cls, settings, sweep_dir,
         [run.to_json() for run in sweep.runs])
  record = record_lib.new(sweep, code_dir, backend_cls.name, settings)
  if _DRY_RUN.value:
    return _continue(record, sweep_dir, backend_cls, settings)
  _log_dir(sweep_dir)  # a missing --logs is refused before the lock
  lock = _sweep_lock(sweep_dir)
  try:  # the sweep's state is read under the lock
    return _continue(record, sweep_dir, backend_cls, settings)
  finally:
    lock.release()


def _continue(record, sweep_dir: str, backend_cls, settings) -> int:
  """Launches `record`'s runs, continuing the sweep already in sweep_dir
  if it is the same one."""
  existing = (record_lib.read_if_exists(sweep_dir) if _reads_storage()
              else None)
  if existing is not None:
    differences = record_lib.same_runs(existing, record)
    if differences:
      _usage(f'{sweep_dir} holds another sweep (its sweep.json):\n' +
             '\n'.join(differences) + '\nUse a new --sweep_dir, or '
             '`resume` to continue the existing one.')
    existing.update({k: record[k] for k in ('backend', 'settings')})
    # The definition's resources now (e.g. more time for a relaunch).
    resources = {run['name']: run.get('resources') or {}
                 for run in record['runs']}
    for run in existing['runs']:
      run['resources'] = resources[run['name']]
    record = existing
  return _launch_runs(record, sweep_dir, backend_cls, settings)


def resume() -> int:
  sweep_dir = _sweep_dir()
  record_lib.read(sweep_dir)  # a sweep directory, before its lock
  if _DRY_RUN.value:
    return _resume(sweep_dir)
  lock = _sweep_lock(sweep_dir)
  try:
    return _resume(sweep_dir)
  finally:
    lock.release()


def _resume(sweep_dir: str) -> int:
  record = record_lib.read(sweep_dir)
  backend_cls = BACKENDS[record['backend']]
  if flags.FLAGS['backend'].present and _BACKEND.value != record['backend']:
    backend_cls = BACKENDS[_BACKEND.value]
    settings = _settings(backend_cls)
  else:
    settings = _settings(backend_cls, record['settings'])
  _check(backend_cls, settings, sweep_dir, record['runs'])
  return _launch_runs(record, sweep_dir, backend_cls, settings)


def status() -> int:
  record = record_lib.read(_sweep_dir())
  statuses = _statuses(record)
  if _FORMAT.value == 'json':
    for run_status in statuses:
      print(json.dumps(run_status.__dict__))
  else:
    print(status_lib.table(statuses, record['metric']))
  return 0


def cancel() -> int:
  record = record_lib.read(_sweep_dir())
  submissions = record_lib.latest_submissions(record)
  for name, backend_cls in BACKENDS.items():
    mine = {run: submission for run, submission in submissions.items()
            if submission.get('backend', record['backend']) == name}
    if mine or name == record['backend']:
      backend_cls.cancel(record, mine)
  return 0


def main(argv):
  sys.stdout.reconfigure(line_buffering=True)  # progress lines, even to files
  if len(argv) > 2:
    _usage(f'unexpected arguments {argv[2:]}; commands: {list(COMMANDS)}.')
  command = argv[1] if len(argv) == 2 else 'launch'
  if command not in COMMANDS:
    _usage(f'unknown command {command!r}; valid commands: {list(COMMANDS)}.')
  try:
    sys.exit({'launch': launch, 'status': status, 'resume': resume,
              'cancel': cancel}[command]())
  except FileNotFoundError as error:
    print(f'vit_jax.launch: {error}', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)
  except OSError as error:  # storage out of reach, a full disk: one line
    where = f' ({_SWEEP_DIR.value})' if _SWEEP_DIR.value else ''
    text = ' '.join(str(error).split()) or type(error).__name__
    print(f'vit_jax.launch: {type(error).__name__}{where}: {text}',
          file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)


def _parse(argv):
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    _usage(f'bad command line: {error} (--helpfull lists the flags)')


if __name__ == '__main__':
  app.run(main, flags_parser=_parse)
