"""Command line entry point.

    python -m vit_jax.main --config=configs/FILE.py[:ARG] --workdir=DIR \
        [--config.KEY=VALUE ...]

Multi-host: every process runs the same command. The processes find each
other through `jax.distributed.initialize`, from flags
(--coordinator_address, --num_processes, --process_id), from the
environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID),
or automatically on TPU pods and SLURM jobs with more than one task.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from vit_jax import train

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Training recipe: configs/FILE.py[:ARG].',
    lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Run directory: config, metrics, checkpoints, plots.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'host:port of process 0, for multi-host.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Number of processes, for multi-host.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process\'s index, for multi-host.')
_CPU_COLLECTIVES = flags.DEFINE_string(
    'cpu_collectives', 'gloo', 'CPU collectives across processes (gloo or '
    'mpi); used when running multi-process on CPUs.')


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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not flags.FLAGS['verbosity'].present:  # orbax and TF are chatty at INFO
    logging.set_verbosity(logging.WARNING)
  initialize_distributed()
  train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
