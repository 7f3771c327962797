"""What a run leaves on disk, and what its programs exit with.

The one owner of the workdir's file and folder names, of the exit
statuses every entry point shares, and of the reading of the two files
every tool reads: a run's `config.json` and its `metrics.jsonl`. It imports nothing of vit_jax but `paths`, and neither
JAX nor TensorFlow, so the modules that only look at workdirs (the lock
and markers in `workdir.py`, the sweep launcher's `status`, `cancel` and
`resume`, `vit_jax.scaling`) start in a fraction of a second. What each
file holds is in docs/DESIGN.md (Workdir) and beside its writer.

    DIR/config.json       the resolved config: the run's identity
    DIR/config_history/   earlier config.json versions (allowed changes)
    DIR/lock              held by the running trainer
    DIR/metrics.jsonl     one row per logging event
    DIR/summary.json      the run's compute facts (`vit_jax.compute`)
    DIR/checkpoints/      orbax's step directories
    DIR/tb/               TensorBoard events (scalars, hparams)
    DIR/wandb/, wandb_id  Weights & Biases' local files and run id
                          (only with config.wandb.project)
    DIR/plots/            evaluators' PNGs
    DIR/done, DIR/error   the outcome
    DIR/.outcome-reserve  room for the outcome on a full disk
"""

import json
from typing import Any, Dict, List, NamedTuple, Optional

from vit_jax import paths

CONFIG = 'config.json'
HISTORY = 'config_history'
LOCK = 'lock'
METRICS = 'metrics.jsonl'
SUMMARY = 'summary.json'
CHECKPOINTS = 'checkpoints'
TENSORBOARD = 'tb'
WANDB = 'wandb'
WANDB_ID = 'wandb_id'
PLOTS = 'plots'
DONE = 'done'
ERROR = 'error'
RESERVE = '.outcome-reserve'

# Exit statuses of every entry point (0: finished).
# An error: one line, or a traceback (the trainer's also in DIR/error).
EXIT_FAILED = 1
# A bad command line, config or input: one line, nothing written.
EXIT_USAGE = 2
# Stopped by SIGTERM after saving (preemption, a scheduler's time limit):
# not 0, so restart-on-failure wrappers and SLURM's requeue rerun it, and
# the rerun resumes. The sweep launcher exits with it when it and its runs
# were stopped (SIGINT / SIGTERM).
EXIT_PREEMPTED = 3


def config_path(workdir: str) -> str:
  return paths.join(workdir, CONFIG)


def checkpoint_dir(workdir: str) -> str:
  """The run's checkpoint directory (orbax's, one folder per step)."""
  return paths.join(workdir, CHECKPOINTS)


def read_config(workdir: str) -> Optional[Dict[str, Any]]:
  """The run's config.json as written (plain JSON data, not resolved
  against this version's schema: `vit_jax.workdir.read_config` does
  that), or None when the run has not written one."""
  return paths.read_json(config_path(workdir))


class MetricRows(NamedTuple):
  """metrics.jsonl parsed: `rows`, the (1-based line number, row) of each
  JSON object with an integer 'step' (as int), in file order; `garbled`,
  the numbers of the other non-blank lines, except an unterminated last
  line (`torn`: a crash mid-write, not damage; its number or None)."""
  rows: List[Any]
  garbled: List[int]
  torn: Optional[int]


def parse_metrics(text: str) -> MetricRows:
  """The one reader of metrics.jsonl's format (`metric_writer` writes one
  JSON object per line, each with its 'step'): every module that reads
  the file (the trainer's resume, its truncation, `status`, the scaling
  analysis) parses it here, so they agree on what a row is."""
  lines = text.splitlines()
  torn = len(lines) if lines and not text.endswith('\n') else None
  rows, garbled = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
      row['step'] = int(row['step'])
    except (ValueError, TypeError, KeyError, IndexError):
      if number != torn:
        garbled.append(number)
      continue
    rows.append((number, row))
  return MetricRows(rows, garbled, torn)


def read_metrics(workdir: str) -> MetricRows:
  """The run's metrics.jsonl parsed (`parse_metrics`); no rows when the
  run has not written it."""
  try:
    return parse_metrics(paths.read_text(paths.join(workdir, METRICS)))
  except FileNotFoundError:
    return MetricRows([], [], None)
