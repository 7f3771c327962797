"""`SWEEP_DIR/launcher.lock`: one launcher at a time on a sweep directory.

`launch` and `resume` (not `--dry_run`, `status` or `cancel`) hold it
from before they read the sweep's state until they exit, so two launchers
started together on one sweep never both launch its runs: the second is
refused in one line (exit 2) and writes nothing. It is the workdir lock
(`vit_jax.workdir.Lock`) on another file, so its rules are the same: JSON
host, pid, start; created only if absent (O_EXCL locally, an upload with
`ifGenerationMatch=0` on gs://); a heartbeat refreshes it; a lock of a
dead process on this host, or without heartbeat for
`workdir.LOCK_STALE_SECONDS` from another host, is taken over with a
warning (a launcher killed with SIGKILL leaves it behind).
"""

from typing import Any, Dict, Optional

from vit_jax import paths
from vit_jax import workdir as workdir_lib

FILE = 'launcher.lock'


class SweepLockedError(RuntimeError):
  """Another live launcher holds the sweep directory."""


class SweepLock(workdir_lib.Lock):
  """The sweep directory's launcher lock (a context manager)."""

  def __init__(self, sweep_dir: str, warn=print):
    super().__init__(sweep_dir, warn)
    self.sweep_dir = sweep_dir
    self.path = paths.join(sweep_dir, FILE)

  def holder(self) -> Optional[Dict[str, Any]]:
    """The live launcher holding the sweep, or None (no lock, or stale)."""
    data, _ = paths.read_versioned(self.path)
    if data is None:
      return None
    holder = self._parse(data)
    return None if self._stale(holder) else holder

  def acquire(self) -> None:
    paths.makedirs(self.sweep_dir)
    try:
      super().acquire()
    except workdir_lib.WorkdirLockedError:
      holder = self.holder() or {}
      raise SweepLockedError(
          f'{self.sweep_dir} is in use by another launcher: host '
          f'{holder.get("host")!r}, pid {holder.get("pid")} (since '
          f'{holder.get("started")}); it launches this sweep\'s runs. Wait '
          f'for it, or stop it (`cancel`) before `resume`; the lock '
          f'({self.path}) of a dead launcher is taken over '
          f'automatically.') from None
