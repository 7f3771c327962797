"""Command line entry point.

    python -m vit_jax.main --config=configs/FILE.py[:ARG] --workdir=DIR \
        [--config.KEY=VALUE ...] [--allow_config_change=KEY,...]

Rerunning the command resumes the run in DIR. DIR's config.json is the
run's identity: a rerun with a different config is refused, naming the
differing keys, unless --allow_config_change lists them (e.g. total_steps
to extend a run). Exit status: 0 finished, 1 failed (DIR/error holds the
traceback), 2 bad command line, 3 stopped on SIGTERM after saving
(`train.EXIT_PREEMPTED`: rerun to resume; what schedulers' requeue and
restart-on-failure wrappers should act on). Multi-host flags: `vit_jax.cli`.
"""

import sys

from absl import app
from absl import flags
from absl import logging

from vit_jax import cli
from vit_jax import config as config_lib
from vit_jax import train
from vit_jax import workdir as workdir_lib

_ALLOW_CHANGES = flags.DEFINE_list(
    'allow_config_change', [], 'Config keys (dotted; a section name covers '
    'its keys) that may differ from the workdir\'s config.json, e.g. '
    'total_steps,schedule.cooldown_steps to extend a run.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_logging()
  try:
    config = config_lib.resolve(cli.CONFIG.value)
  except ValueError as error:  # a recipe's key or value: one line
    print(f'vit_jax.main: bad config: {error}', file=sys.stderr)
    sys.exit(cli.EXIT_USAGE)
  cli.initialize_distributed()
  try:
    train.train_and_evaluate(config, cli.WORKDIR.value, _ALLOW_CHANGES.value)
  except (workdir_lib.ConfigMismatchError,
          workdir_lib.WorkdirLockedError) as error:
    print(f'vit_jax.main: {error}', file=sys.stderr)
    sys.exit(1)
  except train.Preempted as stopped:
    logging.warning('%s', stopped)
    print(stopped, file=sys.stderr)
    sys.exit(train.EXIT_PREEMPTED)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)
