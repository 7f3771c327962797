"""A run's failure, recorded by its launcher when the trainer could not.

The trainer writes `DIR/error` itself for errors it catches. A run that
dies before it has a workdir (a config the trainer refuses, a bad device
count), or is killed (the OOM killer, SIGKILL) leaves none, and would
look preempted. So when a run exits with a status other than 0 (done)
and 3 (preempted: saved on SIGTERM) and its workdir has no `error` newer
than the attempt's start, the launcher writes one: the exit status and
the tail of the run's log.

    python -m vit_jax.launch.failure WORKDIR STATUS LOG START_TIME

is the same for batch scripts (the SLURM back end).
"""

import sys
import time
from typing import Optional

from vit_jax import paths
from vit_jax import workdir as workdir_lib

EXIT_PREEMPTED = 3  # train.EXIT_PREEMPTED (not imported: no JAX here)
TAIL_LINES = 20


def _tail(log_path: Optional[str]) -> str:
  if not log_path:
    return ''
  try:
    with open(log_path, errors='replace') as f:
      lines = f.read().splitlines()
  except OSError:
    return ''
  # Not the launcher's or the scheduler's own lines.
  lines = [line for line in lines if line.strip() and not line.startswith(
      ('=== ', 'srun: ', 'slurmstepd: '))]
  return '\n'.join(lines[-TAIL_LINES:])


def record(workdir: str, status: int, log_path: Optional[str],
           since: float) -> bool:
  """Writes DIR/error for a failed attempt unless the trainer did; True
  if written."""
  if status in (0, EXIT_PREEMPTED):
    return False
  path = paths.join(workdir, workdir_lib.ERROR)
  written = paths.mtime(path)
  if written is not None and written >= since - 1:
    return False  # the trainer's own traceback
  cause = (f'killed by signal {-status}' if status < 0 else
           f'killed by signal {status - 128}' if status > 128 else
           f'exit status {status}')
  tail = _tail(log_path)
  # The log's last line (usually the exception) ends the file: `status`
  # shows the last line.
  text = (f'The run failed ({cause}); the trainer wrote no error. Written '
          f'by the launcher at {time.strftime("%Y-%m-%d %H:%M:%S")}. The '
          f'end of its log {log_path}:\n{tail or "(empty)"}\n')
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
