"""Evaluate a finished or running workdir's checkpoints.

    python -m vit_jax.evaluate --workdir=DIR [--config=configs/FILE.py[:ARG]]
        [--step=latest|all|N] [--evals=NAME,...] [--config.KEY=VALUE ...]

Runs the config's evaluators (`vit_jax.evaluate`: 'val' for the classifier
when config.eval_every_steps is set, and every entry of config.evals) on
the checkpoint(s) and appends their metrics, at the checkpoint's step, to
DIR/metrics.jsonl and DIR/tb, as the training run does; reconstruction
grids go to DIR/plots. Without --config the workdir's config.json is used.
A workdir still being trained is only read: the checkpoints are opened
read-only and only finished ones are listed; nothing is created in a
directory that is not a workdir. DIR may be local or gs://
(`vit_jax.paths`). Multi-host: as vit_jax.main.
"""

import sys
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections

from vit_jax import build
from vit_jax import checkpoint
from vit_jax import cli  # --config, --workdir, multi-host flags
from vit_jax import config as config_lib
from vit_jax import evaluate
from vit_jax import layout
from vit_jax import metric_writer
from vit_jax import paths
from vit_jax import workdir as workdir_lib

_STEP = flags.DEFINE_string(
    'step', 'latest', "Checkpoint to evaluate: 'latest', 'all' or a step.")
_EVALS = flags.DEFINE_list(
    'evals', None, "Evaluators to run, by name ('val' or config.evals keys); "
    'all by default.')


def _steps(available: List[int], step: str, directory: str) -> List[int]:
  newest = checkpoint.choose_step(available, None, directory)  # none: raises
  if step == 'latest':
    return [newest]
  if step == 'all':
    return available
  try:
    wanted = int(step)
  except ValueError:
    raise ValueError(f"--step must be 'latest', 'all' or an integer, got "
                     f'{step!r}.') from None
  return [checkpoint.choose_step(available, wanted, directory)]


def evaluate_workdir(config: ml_collections.ConfigDict, workdir: str,
                     step: str = 'latest',
                     names: Optional[Sequence[str]] = None
                     ) -> Dict[int, Dict[str, float]]:
  """Runs the evaluators on the chosen checkpoints; {step: metrics}."""
  from vit_jax import data  # pylint: disable=g-import-not-at-top  (TF inside)
  paths.check_supported(workdir)
  checkpoint_dir = layout.checkpoint_dir(workdir)
  if not paths.isdir(checkpoint_dir):
    raise FileNotFoundError(f'{workdir} is not a training workdir: it has no '
                            f'checkpoints/ directory.')
  config = config_lib.resolve(config)
  run = build.build_run(config, data)
  evaluators = evaluate.build_evaluators(config, build.eval_functions(run),
                                         run.mesh, workdir)
  if names:
    known = [scheduled.name for scheduled in evaluators]
    unknown = sorted(set(names) - set(known))
    if unknown:
      raise ValueError(f'Unknown evaluators {unknown}; this config has '
                       f'{known}.')
    evaluators = [s for s in evaluators if s.name in names]
  if not evaluators:
    raise ValueError('The config has no evaluators: set eval_every_steps or '
                     'config.evals.')
  checkpointer = checkpoint.TrainCheckpointer(checkpoint_dir, read_only=True)
  try:  # a bad --step is refused before anything is written
    steps = _steps(checkpointer.all_steps(), step, checkpointer.directory)
  except BaseException:
    checkpointer.close()
    raise
  writer = metric_writer.MetricWriter(workdir,
                                      enabled=jax.process_index() == 0)
  results = {}
  try:
    for ckpt_step in steps:
      state = checkpointer.restore(ckpt_step, run.abstract_state)
      results[ckpt_step] = {}
      for scheduled in evaluators:
        metrics = scheduled.evaluator.run(checkpoint.variables_of(state),
                                          ckpt_step)
        writer.write(ckpt_step, metrics)
        results[ckpt_step].update(metrics)
        if jax.process_index() == 0:
          print(f'step {ckpt_step}: {evaluate.summary(metrics)}', flush=True)
  finally:
    checkpointer.close()
    writer.close()
  return results


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f'unexpected arguments {argv[1:]}', 'vit_jax.evaluate')
  cli.quiet_logging()
  if not flags.FLAGS['verbosity'].present:  # orbax's notes on reading
    logging.set_verbosity(logging.ERROR)
  workdir = cli.WORKDIR.value
  cli.exit_if_unreachable(workdir, 'vit_jax.evaluate')
  cli.initialize_distributed()
  try:
    config = config_lib.resolve(cli.CONFIG.value or
                                workdir_lib.read_config(workdir))
    cli.check_inputs(config)
    evaluate_workdir(config, workdir, _STEP.value, _EVALS.value)
  except (FileNotFoundError, ValueError) as error:
    print(f'vit_jax.evaluate: {cli.one_line(error)}', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=cli.parse_flags)
