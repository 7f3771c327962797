"""A run's failure, recorded by its launcher when the trainer could not.

The trainer writes `DIR/error` itself for errors it catches. A run that
dies before it has a workdir (a config the trainer refuses, a bad device
count), or is killed (the OOM killer, SIGKILL) leaves none, and would
look preempted. So when a run exits with a status other than 0 (done)
and 3 (preempted: saved on SIGTERM) and its workdir has no `error` newer
than the attempt's start, the launcher writes one: the exit status and
the tail of the run's log: of its latest attempt only (a log holds every
attempt, each after a header line: `=== TIME HOST slot NAME ===` from the
local and TPU VM back ends, `=== TIME TASK run NAME on HOST, attempt N`
from SLURM's batch script).

Not a failure of the run: a trainer refused because another live trainer
holds the workdir's lock (its last line says the workdir "is in use by
another trainer", or a live process on this host holds the lock now). The
workdir is that other trainer's: nothing is written into it.

`status` shows a killed run's cause ("killed by signal 9 (SIGKILL)", from
the first line), any other error's last line (`summary`).

    python -m vit_jax.launch.failure WORKDIR STATUS LOG START_TIME

is the same for batch scripts (the SLURM back end).
"""

import re
import signal
import socket
import sys
import time
from typing import List, Optional

from vit_jax import layout
from vit_jax import paths
from vit_jax import workdir as workdir_lib

TAIL_LINES = 20


# A line that starts an attempt in a run's log (see the module docstring);
# SLURM's other '=== ' lines (exited, requeued, cancelled) end one.
_ATTEMPT_HEADER = re.compile(r'^=== .*( ===|, attempt \d+)$')
# The first line `record` writes, with the cause.
_CAUSE = re.compile(r'^The run failed\W+(killed by signal (\d+))')


def latest_attempt(text: str) -> List[str]:
  """The lines of a log's latest attempt (all, if it has no header)."""
  lines = text.splitlines()
  starts = [i for i, line in enumerate(lines)
            if _ATTEMPT_HEADER.match(line.strip())]
  return lines[starts[-1] + 1:] if starts else lines


def _attempt_lines(log_path: Optional[str]) -> List[str]:
  if not log_path:
    return []
  try:
    with open(log_path, errors='replace') as f:
      lines = latest_attempt(f.read())
  except OSError:
    return []
  # Not the launcher's or the scheduler's own lines.
  return [line for line in lines if line.strip() and not line.startswith(
      ('=== ', 'srun: ', 'slurmstepd: '))]


def cause(status: int) -> str:
  """'killed by signal 9 (SIGKILL)', 'exit status 1', ..."""
  number = (-status if status < 0 else status - 128 if status > 128
            else None)
  if number is None:
    return f'exit status {status}'
  try:
    name = f' ({signal.Signals(number).name})'
  except ValueError:
    name = ''
  return f'killed by signal {number}{name}'


def summary(error_text: str) -> Optional[str]:
  """The line `status` shows for an `error`: a killed run's cause, else
  the last line (the exception)."""
  lines = [line.strip() for line in error_text.splitlines() if line.strip()]
  if not lines:
    return None
  killed = _CAUSE.match(lines[0])
  if killed:
    return cause(-int(killed.group(2)))
  return lines[-1]


def _refused_by_lock(workdir: str, lines: List[str]) -> bool:
  """Whether the attempt was refused by the workdir's lock: another
  trainer's workdir, not this run's failure."""
  if lines and workdir_lib.IN_USE in lines[-1]:
    return True
  holder = workdir_lib.lock_holder(workdir)  # ours is dead: another's
  return bool(holder) and holder.get('host') == socket.gethostname()


def record(workdir: str, status: int, log_path: Optional[str],
           since: float) -> bool:
  """Writes DIR/error for a failed attempt unless the trainer did; True
  if written."""
  if status in (0, layout.EXIT_PREEMPTED):
    return False
  path = paths.join(workdir, layout.ERROR)
  written = paths.mtime(path)
  if written is not None and written >= since - 1:
    return False  # the trainer's own traceback
  lines = _attempt_lines(log_path)
  if _refused_by_lock(workdir, lines):
    return False
  tail = '\n'.join(lines[-TAIL_LINES:])
  # The log's last line (usually the exception) ends the file: `status`
  # shows the last line, or the cause of a killed run (`summary`).
  text = (f'The run failed ({cause(status)}); the trainer wrote no error. '
          f'Written by the launcher at {time.strftime("%Y-%m-%d %H:%M:%S")}. '
          f'The end of its latest attempt\'s log {log_path}:\n'
          f'{tail or "(empty)"}\n')
  paths.makedirs(workdir)
  paths.write_atomic(path, text)
  return True


def main(argv) -> None:
  if len(argv) != 5:
    sys.exit('usage: python -m vit_jax.launch.failure WORKDIR STATUS LOG '
             'START_TIME')
  record(argv[1], int(argv[2]), argv[3], float(argv[4]))


if __name__ == '__main__':
  main(sys.argv)
