"""A sweep's state, read from its runs' workdirs (no database).

    done       the workdir's `done` marker
    running    a live trainer holds the workdir's `lock`, or the scheduler
               says the run is running
    failed     the workdir's `error` (its last line is shown; for a run
               the launcher recorded as killed, "killed by signal N")
    preempted  started (config.json written) and stopped without either:
               SIGTERM, a time limit, a killed host; resumable
    pending    queued in the scheduler, or never started

The scheduler's word (SLURM's queue, a live local launcher's list) is a
cross-check: a failed or preempted run the scheduler has queued again is
`pending`; an `error` written after the run's latest submission is final
for that submission.
"""

import dataclasses
import json
import math
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from vit_jax import layout
from vit_jax import paths
from vit_jax import workdir as workdir_lib
from vit_jax.launch import failure

STATES = ('pending', 'running', 'done', 'failed', 'preempted')


@dataclasses.dataclass
class RunStatus:
  name: str
  state: str
  step: Optional[int]
  total_steps: int
  metric: Optional[float]
  wall_seconds: Optional[float]
  error: Optional[str]  # DIR/error's last line, or a kill's cause
  scheduler: Optional[str] = None  # the scheduler's own state, if any


def _read(path: str) -> Optional[str]:
  try:
    return paths.read_text(path)
  except FileNotFoundError:
    return None


def last_metrics(workdir: str, metric: str):
  """(last logged step, latest value of `metric`) from metrics.jsonl."""
  step = value = None
  for _, row in layout.read_metrics(str(workdir)).rows:
    step = row['step'] if step is None else max(step, row['step'])
    if metric in row:
      value = row[metric]
  return step, value


def run_status(run: Mapping[str, Any], metric: str,
               scheduler: Optional[str] = None,
               submitted: Optional[float] = None) -> RunStatus:
  """One run's state. `scheduler`: 'PENDING' / 'RUNNING' or None (not in
  the scheduler); `submitted`: when the run was last submitted."""
  workdir = run['workdir']

  def file(name):
    return paths.join(workdir, name)

  done = _read(file(layout.DONE))
  error_text = _read(file(layout.ERROR))
  started = paths.mtime(file(layout.CONFIG))
  step, value = last_metrics(workdir, metric)
  error_line = failure.summary(error_text) if error_text else None
  error_time = paths.mtime(file(layout.ERROR)) if error_text else None

  if done is not None:
    state = 'done'
    try:
      step = json.loads(done).get('step', step)
    except ValueError:
      pass
  elif workdir_lib.lock_holder(workdir) is not None:
    state = 'running'
  elif error_text is not None and (
      submitted is None or error_time is None or error_time >= submitted):
    state = 'failed'
  elif scheduler in ('PENDING', 'RUNNING'):
    state = scheduler.lower()
  elif error_text is not None:
    state = 'failed'
  elif started is not None:
    state = 'preempted'
  else:
    state = 'pending'

  wall = None
  if started is not None:
    ends = [t for t in (paths.mtime(file(layout.DONE)), error_time,
                        paths.mtime(file(layout.METRICS))) if t]
    end = time.time() if state == 'running' else max(ends, default=started)
    wall = max(0.0, end - started)
  return RunStatus(name=run['name'], state=state, step=step,
                   total_steps=int(run['total_steps']), metric=value,
                   wall_seconds=wall,
                   error=error_line if state == 'failed' else None,
                   scheduler=scheduler)


def _format_duration(seconds: Optional[float]) -> str:
  if seconds is None:
    return '-'
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}'


def _format_metric(value: Any) -> str:
  if value is None:
    return '-'
  if isinstance(value, float) and math.isfinite(value):
    return f'{value:.4f}'
  return str(value)


def table(statuses: Sequence[RunStatus], metric: str,
          error_width: int = 60) -> str:
  """The status table, one line per run, then counts per state."""
  header = ['run', 'state', 'step', metric, 'wall', 'error']
  rows: List[List[str]] = []
  for status in statuses:
    step = '-' if status.step is None else str(status.step)
    error = status.error or ''
    if len(error) > error_width:
      error = error[:error_width - 3] + '...'
    rows.append([status.name, status.state,
                 f'{step}/{status.total_steps}',
                 _format_metric(status.metric),
                 _format_duration(status.wall_seconds), error])
  widths = [max(len(row[i]) for row in [header] + rows)
            for i in range(len(header))]
  lines = ['  '.join(cell.ljust(width) for cell, width in
                     zip(row, widths)).rstrip() for row in [header] + rows]
  counts: Dict[str, int] = {}
  for status in statuses:
    counts[status.state] = counts.get(status.state, 0) + 1
  lines.append(', '.join(f'{counts[s]} {s}' for s in STATES if s in counts))
  return '\n'.join(lines)
