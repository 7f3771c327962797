"""A run's workdir: its identity, its lock, its record and its outcome.

The files (their names: `vit_jax.layout`):

    DIR/config.json       the resolved config: the run's identity
    DIR/config_history/   earlier config.json versions (allowed changes)
    DIR/lock              held by the running trainer: {"host", "pid", ...}
    DIR/metrics.jsonl     one row per logging event (`metric_writer`)
    DIR/done              written when the run reached total_steps
    DIR/error             the traceback of the last failure (removed when a
                          rerun starts); on a full disk led by a line
                          'disk full at PATH'
    DIR/.outcome-reserve  16 KiB held while a run goes (local workdirs), so
                          `done` / `error` can be written on a full disk
                          (`error` takes its blocks); gone when it stops

A rerun of a workdir is the same run continued: `check_config` refuses a
config that differs from the workdir's except in keys the user allows
(e.g. `total_steps` to extend a run), and in RUN_INVARIANT_KEYS, which
change where or how fast the run goes, not what it computes.
`truncate_metrics` drops rows past the step a resumed run restarts from,
so each (step, metric) appears once.

Everything here is done by the main process only (process 0). DIR may be
local or `gs://bucket/dir`: every read and write goes through
`vit_jax.paths`. The lock and the markers need no config schema (the
sweep launcher's `status` reads them): `vit_jax.config`, the schema, is
imported only by the functions that resolve a config.
"""

import errno
import json
import os
import re
import socket
import threading
import time
import traceback
from typing import Any, Dict, Optional, Sequence

from vit_jax import layout
from vit_jax import paths

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


# What a WorkdirLockedError says (the launcher recognises the refusal by it).
IN_USE = 'is in use by another trainer'


class ConfigMismatchError(ValueError):
  """A rerun's config differs from the workdir's."""


# ----------------------------------------------------------------------------
# Config identity.


def config_differences(old: Dict[str, Any], new: Dict[str, Any]
                       ) -> Dict[str, tuple]:
  """{dotted key: (old, new)} over both configs' leaves (JSON data)."""
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
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
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  old = layout.read_config(workdir)
  if old is None:
    return {}
  try:
    old = config_lib.to_json_dict(config_lib.resolve(old))
  except ValueError as error:
    raise ConfigMismatchError(
        f'{layout.config_path(workdir)} is not a valid config of this '
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
  path = layout.config_path(workdir)
  text = config.to_json_best_effort(indent=2, sort_keys=True)
  try:
    previous = paths.read_text(path)
  except FileNotFoundError:
    previous = None
  if previous is not None:
    if previous == text:
      return
    history = paths.join(workdir, layout.HISTORY)
    paths.makedirs(history)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    paths.write_atomic(paths.join(history, f'config.{stamp}.json'), previous)
  paths.write_atomic(path, text)


def read_config(workdir: str):
  """The resolved config of a workdir's run (for evaluation and analysis)."""
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  data = layout.read_config(workdir)
  if data is None:
    raise FileNotFoundError(f'{layout.config_path(workdir)} does not exist: '
                            f'not a workdir written by vit_jax.main (or '
                            f'pass --config).')
  return config_lib.resolve(data)


# ----------------------------------------------------------------------------
# The lock.


def pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


class Lock:
  """`DIR/lock`, held while a trainer runs in DIR (a context manager).

  Created only if absent, so of two trainers starting together one wins:
  locally with O_EXCL; on gs:// by an upload conditioned on the object not
  existing (`ifGenerationMatch=0`), which GCS applies atomically. A lock
  left by a dead process is taken over with a warning: on this host when
  its pid is gone, from another host when its heartbeat (the lock's
  modification time, refreshed every LOCK_HEARTBEAT_SECONDS by a
  background thread rewriting it) is older than LOCK_STALE_SECONDS.

  Taking over, the heartbeat and the release are compare-and-swaps on the
  version that was read (`vit_jax.paths.write_if_version`,
  `remove_if_version`). On gs:// these are conditioned on the object's
  generation, so when two trainers take over one stale lock at once only
  one succeeds (the other is refused as by a live lock), and a holder never
  overwrites or deletes a lock that someone else has taken since. A
  holder whose heartbeat finds its lock taken warns (once); it does not
  stop. Staleness compares the object's last upload time (GCS's clock)
  with this host's clock, so clocks must agree to well within
  LOCK_STALE_SECONDS. Locally the compare and the swap are two steps (a
  check, then os.replace / os.remove): a race between two trainers taking
  over the same stale lock within that instant is possible there, as
  before.
  """

  def __init__(self, workdir: str, warn=print):
    self.path = paths.join(workdir, layout.LOCK)
    self._warn = warn
    self._stop = threading.Event()
    self._thread = None
    self._version: Optional[str] = None  # of our lock, while held
    self._text = ''

  @staticmethod
  def _parse(data: bytes) -> Dict[str, Any]:
    try:
      holder = json.loads(data)
    except ValueError:  # being written, or garbled
      return {}
    return holder if isinstance(holder, dict) else {}

  def _stale(self, holder: Dict[str, Any]) -> bool:
    if holder and holder.get('host') == socket.gethostname():
      return not pid_alive(int(holder.get('pid', -1)))
    modified = paths.mtime(self.path)
    if modified is None:
      return True
    return time.time() - modified > LOCK_STALE_SECONDS

  def acquire(self) -> None:
    me = {'host': socket.gethostname(), 'pid': os.getpid(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S')}
    self._text = json.dumps(me)
    for _ in range(3):
      version = paths.write_if_version(self.path, self._text, None)
      if version is None:
        data, current = paths.read_versioned(self.path)
        if data is None:
          continue  # released meanwhile
        holder = self._parse(data)
        if not self._stale(holder):
          raise WorkdirLockedError(
              f'{paths.parent(self.path)} {IN_USE}: '
              f'host {holder.get("host")!r}, pid {holder.get("pid")} '
              f'(since {holder.get("started")}). Stop it first; a lock of a '
              f'dead process is taken over automatically (on another host '
              f'after {LOCK_STALE_SECONDS:.0f}s without heartbeat).')
        self._warn(f'Taking over the stale lock of host '
                   f'{holder.get("host")!r}, pid {holder.get("pid")} '
                   f'(the process is gone).')
        version = paths.write_if_version(self.path, self._text, current)
        if version is None:
          continue  # another trainer changed it meanwhile: look again
      self._version = version
      self._stop.clear()
      self._thread = threading.Thread(target=self._heartbeat, daemon=True)
      self._thread.start()
      return
    raise WorkdirLockedError(f'Could not take {self.path}: another trainer '
                             f'keeps taking it.')

  def _heartbeat(self) -> None:
    while not self._stop.wait(LOCK_HEARTBEAT_SECONDS):
      try:
        version = paths.write_if_version(self.path, self._text, self._version)
      except Exception:  # pylint: disable=broad-except
        continue  # a transient storage error: the next beat tries again
      if version is None:
        self._warn(f'{self.path} was taken over by another trainer while '
                   f'this one ran (no heartbeat for '
                   f'{LOCK_STALE_SECONDS:.0f}s?); two trainers may now '
                   f'write {paths.parent(self.path)}.')
        self._version = None
        return
      self._version = version

  def release(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
      self._thread = None
    if self._version is not None:
      version, self._version = self._version, None
      paths.remove_if_version(self.path, version)

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()


def lock_holder(workdir: str) -> Optional[Dict[str, Any]]:
  """The live trainer holding `workdir` ({"host", "pid", "started"}), or
  None: no lock, or a stale one (the rules of `Lock`)."""
  lock = Lock(workdir)
  data, _ = paths.read_versioned(lock.path)
  if data is None:
    return None
  # pylint: disable=protected-access
  holder = Lock._parse(data)
  return None if lock._stale(holder) else holder


# ----------------------------------------------------------------------------
# Metrics and outcome.


def truncate_metrics(workdir: str, last_step: int) -> int:
  """Drops metrics.jsonl rows with step > last_step; returns how many.

  A resumed run restarts after its checkpoint's step and logs the steps
  past it again; without this they would appear twice. The file is
  rewritten atomically (on gs://, on condition that nobody appended
  meanwhile, else again). A torn last line (a crash mid-write) is dropped.
  """
  path = paths.join(workdir, layout.METRICS)
  dropped = 0

  def drop_rows(content: Optional[bytes]) -> Optional[bytes]:
    nonlocal dropped
    dropped = 0
    if content is None:
      return None
    text = content.decode('utf-8')
    rows = layout.parse_metrics(text).rows
    kept = [json.dumps(row) + '\n' for _, row in rows
            if row['step'] <= last_step]
    dropped = sum(1 for line in text.splitlines() if line.strip()) - len(kept)
    return ''.join(kept).encode('utf-8') if dropped else None

  paths.update(path, drop_rows)
  return dropped


def mark_started(workdir: str) -> None:
  """Removes an earlier outcome and reserves room for this run's (local
  workdirs: `layout.RESERVE`, so `done` / `error` can be written on a
  full disk)."""
  for name in (layout.DONE, layout.ERROR):
    paths.remove(paths.join(workdir, name))
  if paths.is_local(workdir):
    try:
      paths.write_atomic(paths.join(workdir, layout.RESERVE),
                         b'\0' * RESERVE_BYTES)
    except OSError:  # already full: the outcome may still fit; no reserve
      pass


def release_reserve(workdir: str) -> None:
  """Removes the outcome's reservation (a run that stops without one)."""
  if paths.is_local(workdir):
    paths.remove(paths.join(workdir, layout.RESERVE))


def mark_done(workdir: str, step: int, **details: Any) -> None:
  """Writes `done`: JSON step, time, and `details` (e.g. the trainer's
  evaluations_lost: {evaluator: steps} that could not be redone)."""
  _write_outcome(workdir, layout.DONE, json.dumps(
      {'step': step, 'time': time.strftime('%Y-%m-%d %H:%M:%S'),
       **details}) + '\n')


def mark_failed(workdir: str, error: BaseException) -> None:
  """Writes `error`: the traceback, led by a one-line cause for a full
  disk. Never raises: the run's own error is what the caller reports."""
  text = ''.join(traceback.format_exception(type(error), error,
                                            error.__traceback__))
  full = disk_full(error, unknown=workdir)
  if full is not None:
    text = f'disk full at {full}\n\n{text}'
  try:
    _write_outcome(workdir, layout.ERROR, text)
  except Exception:  # pylint: disable=broad-except
    pass


# Bytes kept for `done` / `error` while a run goes (`mark_started`).
RESERVE_BYTES = 16384
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DISK_FULL_TEXT = re.compile(
    r'No space left on device|Disk quota exceeded|File too large')
# tensorstore's wording (orbax's array writes): 'Failed writing: "PATH"'.
_FAILED_FILE = re.compile(r'Failed writing: "([^"]+)"')
_QUOTED_PATH = re.compile(r"""["']((?:gs://|/)[^"']+)["']""")
_PATH_IN_TEXT = re.compile(r"""(?:gs://|/)[^\s'",:;\]\)]+""")


def _write_outcome(workdir: str, name: str, text: str) -> None:
  """Writes `done` / `error` and gives the reserve back; on a full disk
  the text goes into the reserve's blocks (cut to their size), which is
  then renamed: no new block is needed."""
  path = paths.join(workdir, name)
  if not paths.is_local(workdir):
    paths.write_atomic(path, text)
    return
  reserve = paths.join(workdir, layout.RESERVE)
  try:
    paths.write_atomic(path, text)
  except OSError as error:
    if error.errno not in _DISK_FULL_ERRNOS or not paths.exists(reserve):
      raise
    data = text.encode('utf-8')
    if len(data) > RESERVE_BYTES:  # the head (the cause) and the tail
      marker = b'\n[...]\n'
      half = (RESERVE_BYTES - len(marker)) // 2
      data = data[:half] + marker + data[-half:]
    paths.write_reserved(path, reserve, data)
    return
  paths.remove(reserve)


def mentions_disk_full(text: str) -> bool:
  """Whether an error's text is a full disk's (OS or tensorstore wording)."""
  return bool(_DISK_FULL_TEXT.search(text))


def disk_full(error: BaseException, unknown: str = '?') -> Optional[str]:
  """Where the disk was full, if `error` (or an error it was raised from
  or during) is a full disk / quota / file-size limit: the file's path
  when known, else `unknown` (a write through a file object, e.g. orbax's
  metadata, raises ENOSPC without one: callers pass the workdir); None
  for any other error."""
  seen = set()
  pending = [error]
  full = False  # a full disk seen, its path not yet
  while pending:
    current = pending.pop()
    if current is None or id(current) in seen:
      continue
    seen.add(id(current))
    if isinstance(current, OSError) and current.errno in _DISK_FULL_ERRNOS:
      if current.filename:
        return str(current.filename)
      full = True
    else:
      text = str(current)
      if _DISK_FULL_TEXT.search(text):
        found = (_FAILED_FILE.findall(text) or _QUOTED_PATH.findall(text) or
                 _PATH_IN_TEXT.findall(text))
        if found:
          return found[0]
        full = True
    pending += [current.__cause__, current.__context__,
                *getattr(current, 'exceptions', ())]
  return unknown if full else None
