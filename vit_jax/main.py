"""Command line entry point.

    python -m vit_jax.main --config=configs/FILE.py[:ARG] --workdir=DIR \
        [--config.KEY=VALUE ...] [--allow_config_change=KEY,...]

Rerunning the command resumes the run in DIR. DIR's config.json is the
run's identity: a rerun with a different config is refused, naming the
differing keys, unless --allow_config_change lists them (e.g. total_steps
to extend a run). --config.KEY=VALUE sets any key of the config schema
(vit_jax/config.py), also one the recipe leaves at its default; the last
of a repeated one wins. Exit status: 0 finished, 1 failed (DIR/error
holds the traceback; one line on stderr for a full disk, 'disk full at
PATH', and for a gs:// workdir whose storage cannot be reached, naming
the bucket, the endpoint and the cause, with nothing created), 2 bad
command line or config (one line, nothing written), 3 stopped on SIGTERM
after saving
(`layout.EXIT_PREEMPTED`: rerun to resume; what schedulers' requeue and
restart-on-failure wrappers should act on). Multi-host flags: `vit_jax.cli`.
"""

import logging as std_logging
import sys
import warnings

from absl import app
from absl import flags
from absl import logging

from vit_jax import cli
from vit_jax import config as config_lib
from vit_jax import layout
from vit_jax import paths
from vit_jax import train
from vit_jax import workdir as workdir_lib

_ALLOW_CHANGES = flags.DEFINE_list(
    'allow_config_change', [], 'Config keys (dotted; a section name covers '
    'its keys) that may differ from the workdir\'s config.json, e.g. '
    'total_steps,schedule.cooldown_steps to extend a run.')


class _QuietDiskFullRecords(std_logging.Filter):
  """Drops the log records of a full disk that orbax's save threads write
  (each failed write with a long traceback: about 350 lines for a small
  model), and asyncio's "Task exception was never retrieved" for the same
  writes (under load the garbage collector finds some), burying the one
  line this program ends with, which names the full path (DIR/error holds
  the traceback). Other records pass."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if not (record.name == 'asyncio' or
            '/orbax/' in record.pathname.replace('\\', '/')):
      return True
    error = record.exc_info[1] if record.exc_info else None
    return not (workdir_lib.mentions_disk_full(record.getMessage()) or
                (error is not None and
                 workdir_lib.disk_full(error) is not None))


def _names_a_data_file(error: BaseException) -> bool:
  """Whether `error` is the input pipeline's about one file of the data
  (its ValueErrors carry the file as `.path`; this module does not import
  the pipeline, which loads TensorFlow)."""
  return isinstance(error, ValueError) and isinstance(
      getattr(error, 'path', None), str)


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f'unexpected arguments {argv[1:]}')
  cli.quiet_logging()
  for logger in ('absl', 'asyncio'):  # orbax logs through absl's logger
    std_logging.getLogger(logger).addFilter(_QuietDiskFullRecords())
  try:
    config = config_lib.resolve(cli.CONFIG.value)
    cli.check_inputs(config)
  except ValueError as error:  # a recipe's key or value: one line
    print(f'vit_jax.main: bad config: {cli.one_line(error)}', file=sys.stderr)
    sys.exit(layout.EXIT_USAGE)
  workdir = cli.WORKDIR.value
  cli.exit_if_unreachable(workdir, 'vit_jax.main')
  cli.initialize_distributed()
  try:
    train.train_and_evaluate(config, workdir, _ALLOW_CHANGES.value)
  except (workdir_lib.ConfigMismatchError,
          workdir_lib.WorkdirLockedError) as error:
    print(f'vit_jax.main: {error}', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)
  except train.Preempted as stopped:
    workdir_lib.release_reserve(workdir)
    logging.warning('%s', stopped)
    print(stopped, file=sys.stderr)
    sys.exit(layout.EXIT_PREEMPTED)
  except KeyboardInterrupt:
    workdir_lib.release_reserve(workdir)
    raise
  except Exception as error:  # pylint: disable=broad-except
    full = workdir_lib.disk_full(error, unknown=workdir)
    if full is None and _names_a_data_file(error):
      # A file of the dataset that cannot be read or is inconsistent (the
      # input pipeline's CorruptImageError, DenseLabelError): one line
      # naming it; the traceback is in DIR/error.
      print(f'vit_jax.main: {cli.one_line(error)} (the run stopped; its '
            f'last good checkpoint is kept)', file=sys.stderr)
      sys.exit(layout.EXIT_FAILED)
    if full is None:
      raise  # a traceback (also in DIR/error)
    # orbax's failed writes are asyncio tasks whose errors (logged when
    # they are collected at exit) and never-awaited coroutines (warned
    # about at exit) would follow this line: the cause is in DIR/error.
    std_logging.getLogger('asyncio').setLevel(std_logging.CRITICAL)
    warnings.filterwarnings('ignore', message='coroutine .* was never '
                            'awaited', category=RuntimeWarning)
    print(f'vit_jax.main: disk full at {full} (the run stopped; its last '
          f'good checkpoint is kept; details in '
          f'{paths.join(workdir, layout.ERROR)})', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=cli.parse_flags)
