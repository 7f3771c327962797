"""What a run leaves on disk, and what its programs exit with: names only.

The one owner of the workdir's file and folder names, of the exit
statuses every entry point shares, and of the reading of a run's
`config.json`. It imports nothing of vit_jax but `paths`, and neither
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
    DIR/tb/               TensorBoard events
    DIR/plots/            evaluators' PNGs
    DIR/done, DIR/error   the outcome
    DIR/.outcome-reserve  room for the outcome on a full disk
"""

from typing import Any, Dict, Optional

from vit_jax import paths

CONFIG = 'config.json'
HISTORY = 'config_history'
LOCK = 'lock'
METRICS = 'metrics.jsonl'
SUMMARY = 'summary.json'
CHECKPOINTS = 'checkpoints'
TENSORBOARD = 'tb'
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
