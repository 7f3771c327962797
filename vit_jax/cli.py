"""What `python -m vit_jax.main` and `python -m vit_jax.evaluate` share:
the --config and --workdir flags (--workdir local or gs://, checked by
`vit_jax.paths.check_supported` while the flags are parsed), multi-host
start-up, and command-line errors as one line.

Multi-host: every process runs the same command. The processes find each
other through `jax.distributed.initialize`, from flags
(--coordinator_address, --num_processes, --process_id), from the
environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID),
or automatically on TPU pods and SLURM jobs with more than one task.
"""

import os
import sys
from typing import List

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from vit_jax import paths

# Exit status of a command line that cannot be parsed.
EXIT_USAGE = 2

CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training recipe: configs/FILE.py[:ARG].',
    lock_config=True)
WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: config, metrics, checkpoints, plots; '
    'local or gs://BUCKET/DIR.')


def _check_workdir(value) -> bool:
  """A scheme no backend handles (s3://, a typo gs:/b) is a bad command
  line, refused before anything is created (`paths.check_supported`)."""
  if value is not None:
    try:
      paths.check_supported(value)
    except ValueError as error:
      raise flags.ValidationError(str(error)) from None
  return True


flags.register_validator('workdir', _check_workdir)
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for multi-host.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes, for multi-host.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process\'s index, for multi-host.')
_CPU_COLLECTIVES = flags.DEFINE_string(
    'cpu_collectives', 'gloo', 'CPU collectives across processes (gloo or '
    'mpi); used when running multi-process on CPUs.')


def parse_flags(argv: List[str]) -> List[str]:
  """absl's parsing, with any error (a flag, a --config.KEY override, the
  config file) as one line on stderr and exit status EXIT_USAGE."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as error:
    message = str(error)
  except KeyError as error:  # config_flags: an override of an unknown key
    message = (f'unknown config key {error.args[0]}'.replace('\n', '; ')
               if error.args else str(error))
  except (AttributeError, TypeError, ValueError) as error:
    message = f'{type(error).__name__}: {error}'.replace('\n', '; ')
  print(f'{os.path.basename(argv[0])}: bad command line: {message} '
        f'(--helpfull lists the flags)', file=sys.stderr)
  sys.exit(EXIT_USAGE)


def quiet_logging() -> None:
  """WARNING unless --verbosity was given: orbax and TF are chatty at INFO."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def _from_env(name: str, cast=str):
  value = os.environ.get(name)
  return cast(value) if value not in (None, '') else None


def initialize_distributed() -> None:
  """Calls jax.distributed.initialize when this is a multi-process run."""
  coordinator = _COORDINATOR.value or _from_env('JAX_COORDINATOR_ADDRESS')
  num_processes = _NUM_PROCESSES.value or _from_env('JAX_NUM_PROCESSES', int)
  process_id = _PROCESS_ID.value
  if process_id is None:
    process_id = _from_env('JAX_PROCESS_ID', int)
  if coordinator or num_processes:
    missing = [name for name, value in (
        ('coordinator_address', coordinator),
        ('num_processes', num_processes), ('process_id', process_id))
               if value is None]
    if missing:
      raise ValueError(f'Multi-host run needs all of coordinator_address, '
                       f'num_processes and process_id; missing: {missing}')
    # Only the CPU client uses this; harmless on accelerators.
    jax.config.update('jax_cpu_collectives_implementation',
                      _CPU_COLLECTIVES.value)
    jax.distributed.initialize(coordinator_address=coordinator,
                               num_processes=num_processes,
                               process_id=process_id)
  elif _auto_detectable_cluster():
    jax.distributed.initialize()  # JAX reads the TPU / SLURM environment.
  logging.info('Process %d of %d; %d local of %d devices.',
               jax.process_index(), jax.process_count(),
               jax.local_device_count(), jax.device_count())


def _auto_detectable_cluster() -> bool:
  slurm_tasks = _from_env('SLURM_NTASKS', int) or 1
  tpu_hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return slurm_tasks > 1 or ',' in tpu_hosts
