"""A run's workdir: its identity, its lock, its record and its outcome.

    DIR/config.json       the resolved config: the run's identity
    DIR/config_history/   earlier config.json versions (allowed changes)
    DIR/lock              held by the running trainer: {"host", "pid", ...}
    DIR/metrics.jsonl     one row per logging event (`metric_writer`)
    DIR/done              written when the run reached total_steps
    DIR/error             the traceback of the last failure (removed when a
                          rerun starts)

A rerun of a workdir is the same run continued: `check_config` refuses a
config that differs from the workdir's except in keys the user allows
(e.g. `total_steps` to extend a run), and in RUN_INVARIANT_KEYS, which
change where or how fast the run goes, not what it computes.
`truncate_metrics` drops rows past the step a resumed run restarts from,
so each (step, metric) appears once.

Everything here is done by the main process only (process 0).
"""

import json
import os
import socket
import threading
import time
import traceback
from typing import Any, Dict, List, Optional, Sequence

from vit_jax import config as config_lib

CONFIG = 'config.json'
HISTORY = 'config_history'
LOCK = 'lock'
DONE = 'done'
ERROR = 'error'
METRICS = 'metrics.jsonl'

# Keys that may differ between runs of one workdir without a flag: the data
# location on this machine, the input pipeline's read-ahead, how often the
# console and metrics are written, and whether saves are asynchronous.
RUN_INVARIANT_KEYS = ('data.data_dir', 'data.prefetch', 'log_every_steps',
                      'checkpoint.async_save')

# A lock whose holder cannot be checked (another host) is stale when its
# heartbeat is older than this.
LOCK_STALE_SECONDS = 300.0
LOCK_HEARTBEAT_SECONDS = 30.0


class WorkdirLockedError(RuntimeError):
  """Another live trainer holds the workdir."""


class ConfigMismatchError(ValueError):
  """A rerun's config differs from the workdir's."""


def _read_json(path: str) -> Optional[Dict[str, Any]]:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    return None


def _write_atomic(path: str, text: str) -> None:
  tmp = f'{path}.tmp-{os.getpid()}'
  with open(tmp, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


# ----------------------------------------------------------------------------
# Config identity.


def config_differences(old: Dict[str, Any], new: Dict[str, Any]
                       ) -> Dict[str, tuple]:
  """{dotted key: (old, new)} over both configs' leaves (JSON data)."""
  old_flat, new_flat = config_lib.flat_items(old), config_lib.flat_items(new)
  missing = object()
  return {key: (old_flat.get(key, '<absent>'), new_flat.get(key, '<absent>'))
          for key in sorted(set(old_flat) | set(new_flat))
          if old_flat.get(key, missing) != new_flat.get(key, missing)}


def _allowed(key: str, allowed: Sequence[str]) -> bool:
  return any(key == prefix or key.startswith(prefix + '.')
             for prefix in allowed)


def check_config(workdir: str, config, allow_changes: Sequence[str] = ()
                 ) -> Dict[str, tuple]:
  """Refuses `config` if it differs from the workdir's config.json.

  Both are compared resolved (every default filled in). Returns the
  allowed differences ({} for a new workdir or an identical config);
  raises ConfigMismatchError listing the others.
  """
  old = _read_json(os.path.join(workdir, CONFIG))
  if old is None:
    return {}
  try:
    old = config_lib.to_json_dict(config_lib.resolve(old))
  except ValueError as error:
    raise ConfigMismatchError(
        f'{os.path.join(workdir, CONFIG)} is not a valid config of this '
        f'version of vit_jax ({error}); use a new workdir.') from None
  new = config_lib.to_json_dict(config)
  differences = config_differences(old, new)
  refused = {key: values for key, values in differences.items()
             if not _allowed(key, (*RUN_INVARIANT_KEYS, *allow_changes))}
  if refused:
    lines = '\n'.join(f'  {key}: {old_value!r} (workdir) -> {new_value!r}'
                      for key, (old_value, new_value) in refused.items())
    raise ConfigMismatchError(
        f'The config differs from the run in {workdir} (its config.json is '
        f'the run\'s identity):\n{lines}\nUse a new workdir for a new run, '
        f'or allow the change to continue this one: '
        f'--allow_config_change={",".join(refused)}')
  return differences


def write_config(workdir: str, config) -> None:
  """Writes config.json, keeping the previous one in config_history/."""
  path = os.path.join(workdir, CONFIG)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  if os.path.exists(path):
    with open(path) as f:
      previous = f.read()
    if previous == text:
      return
    history = os.path.join(workdir, HISTORY)
    os.makedirs(history, exist_ok=True)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    _write_atomic(os.path.join(history, f'config.{stamp}.json'), previous)
  _write_atomic(path, text)


def read_config(workdir: str):
  """The resolved config of a workdir's run (for evaluation and analysis)."""
  path = os.path.join(workdir, CONFIG)
  data = _read_json(path)
  if data is None:
    raise FileNotFoundError(f'{path} does not exist: not a workdir written '
                            f'by vit_jax.main (or pass --config).')
  return config_lib.resolve(data)


# ----------------------------------------------------------------------------
# The lock.


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class Lock:
  """`DIR/lock`, held while a trainer runs in DIR (a context manager).

  Created with O_EXCL, so of two trainers starting together one wins. A
  lock left by a dead process is taken over with a warning: on this host
  when its pid is gone, from another host when its heartbeat (the file's
  modification time, refreshed every LOCK_HEARTBEAT_SECONDS by a
  background thread) is older than LOCK_STALE_SECONDS.
  """

  def __init__(self, workdir: str, warn=print):
    self.path = os.path.join(workdir, LOCK)
    self._warn = warn
    self._stop = threading.Event()
    self._thread = None
    self._held = False

  def _holder(self) -> Optional[Dict[str, Any]]:
    try:
      with open(self.path) as f:
        return json.load(f)
    except FileNotFoundError:
      return None
    except ValueError:  # being written, or garbled
      return {}

  def _stale(self, holder: Dict[str, Any]) -> bool:
    if not holder:
      age = time.time() - os.path.getmtime(self.path)
      return age > LOCK_STALE_SECONDS
    if holder.get('host') == socket.gethostname():
      return not _pid_alive(int(holder.get('pid', -1)))
    try:
      age = time.time() - os.path.getmtime(self.path)
    except FileNotFoundError:
      return True
    return age > LOCK_STALE_SECONDS

  def acquire(self) -> None:
    me = {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S')}
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._holder()
        if holder is None:
          continue  # released meanwhile
        if not self._stale(holder):
          raise WorkdirLockedError(
              f'{os.path.dirname(self.path)} is in use by another trainer: '
              f'host {holder.get("host")!r}, pid {holder.get("pid")} '
              f'(since {holder.get("started")}). Stop it first; a lock of a '
              f'dead process is taken over automatically (on another host '
              f'after {LOCK_STALE_SECONDS:.0f}s without heartbeat).')
        self._warn(f'Taking over the stale lock of host '
                   f'{holder.get("host")!r}, pid {holder.get("pid")} '
                   f'(the process is gone).')
        try:
          os.remove(self.path)
        except FileNotFoundError:
          pass
        continue
      with os.fdopen(fd, 'w') as f:
        json.dump(me, f)
      self._held = True
      self._thread = threading.Thread(target=self._heartbeat, daemon=True)
      self._thread.start()
      return
    raise WorkdirLockedError(f'Could not take {self.path}: another trainer '
                             f'keeps taking it.')

  def _heartbeat(self) -> None:
    while not self._stop.wait(LOCK_HEARTBEAT_SECONDS):
      try:
        os.utime(self.path)
      except OSError:
        pass

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._held:
      self._held = False
      try:
        os.remove(self.path)
      except FileNotFoundError:
        pass

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


# ----------------------------------------------------------------------------
# Metrics and outcome.


def truncate_metrics(workdir: str, last_step: int) -> int:
  """Drops metrics.jsonl rows with step > last_step; returns how many.

  A resumed run restarts after its checkpoint's step and logs the steps
  past it again; without this they would appear twice. The file is
  rewritten atomically. A torn last line (a crash mid-write) is dropped.
  """
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return 0
  kept: List[str] = []
  dropped = 0
  with open(path) as f:
    for line in f:
      try:
        row = json.loads(line)
      except ValueError:
        dropped += 1
        continue
      if row.get('step', 0) <= last_step:
        kept.append(json.dumps(row) + '\n')
      else:
        dropped += 1
  if dropped:
    _write_atomic(path, ''.join(kept))
  return dropped


def mark_started(workdir: str) -> None:
  for name in (DONE, ERROR):
    try:
      os.remove(os.path.join(workdir, name))
    except FileNotFoundError:
      pass


def mark_done(workdir: str, step: int) -> None:
  _write_atomic(os.path.join(workdir, DONE), json.dumps(
      {'step': step, 'time': time.strftime('%Y-%m-%d %H:%M:%S')}) + '\n')


def mark_failed(workdir: str, error: BaseException) -> None:
  text = ''.join(traceback.format_exception(type(error), error,
                                            error.__traceback__))
  _write_atomic(os.path.join(workdir, ERROR), text)
