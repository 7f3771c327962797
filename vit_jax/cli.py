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
import re
import sys
from typing import List, Optional

from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections.config_flags import config_flags

from vit_jax import config as config_lib
from vit_jax import layout
from vit_jax import paths

# The argv being parsed (`parse_flags`): the config flag finds its
# --config.KEY overrides there, not in sys.argv.
_ARGV: List[str] = []


class _RecipeFlag(config_flags._ConfigFlag):  # pylint: disable=protected-access
  """ml_collections' config-file flag, reading overrides from the argv
  `parse_flags` was given."""

  def _GetArgv(self):
    return list(_ARGV) or super()._GetArgv()


def _define_config_flag():
  parser = config_lib.RecipeParser('config')
  flag = _RecipeFlag(parser=parser, serializer=flags.ArgumentSerializer(),
                     name='config', default=None,
                     help_string='Training recipe: configs/FILE.py[:ARG]; '
                     '--config.KEY=VALUE sets any key of the config schema '
                     '(vit_jax/config.py).')
  return flags.DEFINE_flag(flag)


CONFIG = _define_config_flag()
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


def _bad_override(argv: List[str]) -> Optional[str]:
  """The first --config.KEY whose KEY is not in the config the recipe
  and the schema give: one line with the closest key, or None."""
  config = _PARSER().config
  if not isinstance(config, ml_collections.ConfigDict):
    return None
  for arg in argv:
    match = config_lib.OVERRIDE.match(arg) or re.match(
        r'^--?config\.([A-Za-z0-9_.]+)$', arg)
    if not match:
      continue
    target, done = config, []
    for part in match.group(1).split('.'):
      if not isinstance(target, ml_collections.ConfigDict):
        return (f'--config.{match.group(1)}: '
                f'{".".join(done)} is not a section (it holds '
                f'{target!r}).')
      if part not in target:
        where = '.'.join(done) + '.' if done else ''
        error = config_lib.unknown_key_error(where, part, target.keys())
        return f'--config.{match.group(1)}: {error}'
      done.append(part)
      target = target[part]
  return None


def _PARSER() -> config_lib.RecipeParser:  # pylint: disable=invalid-name
  return flags.FLAGS['config'].parser


def one_line(error: BaseException) -> str:
  """An error's message on one line (`'; '` for line breaks, KeyError's
  quotes dropped)."""
  if isinstance(error, KeyError) and len(error.args) == 1:
    text = str(error.args[0])
  else:
    text = str(error)
  return '; '.join(line.strip() for line in text.splitlines() if line.strip())


def _program_name(argv0: Optional[str]) -> str:
  """'vit_jax.main' for `python -m vit_jax.main` (argv[0] is then the
  file's path), else argv[0]'s basename."""
  name = os.path.basename(argv0 or sys.argv[0] or 'vit_jax')
  if name in ('main.py', '__main__.py', 'predict.py'):
    spec = getattr(sys.modules.get('__main__'), '__spec__', None)
    if spec is not None and spec.name.startswith('vit_jax'):
      return spec.name.removesuffix('.__main__')
  return name


def usage_error(message: str, program: Optional[str] = None) -> None:
  """One line on stderr, exit status `layout.EXIT_USAGE`."""
  program = _program_name(program)
  print(f'{program}: bad command line: {message} (--helpfull lists the '
        f'flags)', file=sys.stderr)
  sys.exit(layout.EXIT_USAGE)


def exit_if_unreachable(workdir: str, program: str) -> None:
  """For a gs:// workdir whose storage cannot be reached: one line
  naming the bucket, the endpoint and the cause, exit status 1, before
  anything is created (`paths.check_reachable`)."""
  try:
    paths.check_reachable(workdir)
  except paths.StorageUnreachableError as error:
    print(f'{program}: {error}', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)


def parse_flags(argv: List[str]) -> List[str]:
  """absl's parsing, with any error (a flag, a --config.KEY override, the
  config file) as one line on stderr and exit status `layout.EXIT_USAGE`. A
  repeated --config.KEY: the last one wins."""
  argv = config_lib.last_override_wins(list(argv))
  _ARGV[:] = argv
  message = None
  try:
    remaining = flags.FLAGS(argv)
  except flags.Error as error:
    message = _bad_override(argv) or one_line(error)
  except (AttributeError, KeyError, TypeError, ValueError) as error:
    message = _bad_override(argv) or (
        f'{type(error).__name__}: {one_line(error)}')
  finally:
    _ARGV[:] = []
  if message is not None:
    usage_error(message, os.path.basename(argv[0]))
  config = CONFIG.value
  if isinstance(config, config_flags._ErrorConfig):  # pylint: disable=protected-access
    usage_error(f'cannot load --config: '
                f'{one_line(config._error)}',  # pylint: disable=protected-access
                os.path.basename(argv[0]))
  if isinstance(config, ml_collections.ConfigDict):
    config_lib.strip_defaults(config, *_PARSER().added,
                              keep=flags.FLAGS['config'].override_values)
  return remaining


def check_inputs(config) -> None:
  """Raises ValueError, one line, for what a resolved config names that
  is not there: a model variant or arguments the family does not take; a
  local `init_from.path`; an image folder that is not a
  directory; a dataset name (config.data.name, few-shot datasets) that is
  neither built in nor a TFDS dataset (with the closest name); an objective
  or model.num_classes the dataset's labels do not fit
  (`build.check_dataset`). Before anything is built or written."""
  from vit_jax import build  # pylint: disable=g-import-not-at-top
  try:  # the model's arguments (a variant name, a family's fields)
    build.build_model(config.model)
  except TypeError as error:
    raise ValueError(f'model: {one_line(error)}') from None
  source = (config.get('init_from') or {}).get('path')
  if (isinstance(source, str) and source and paths.is_local(source) and
      not os.path.exists(os.path.expanduser(source))):
    raise ValueError(f'init_from.path {source!r} does not exist.')
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top
  default_dir = config.data.get('data_dir')
  datasets = [('data', config.data, default_dir)]
  for entry_name, entry in (config.get('evals') or {}).items():
    for key, dataset in (entry.get('datasets') or {}).items():
      datasets.append((f'evals.{entry_name}.datasets.{key}', dataset,
                       dataset.get('data_dir') or default_dir))
  for where, dataset, data_dir in datasets:
    name = dataset.get('name')
    if name in sources.FOLDER_DATASETS:
      folder = dataset.get('folder')
      if not folder or not os.path.isdir(os.path.expanduser(str(folder))):
        layout_ = {sources.IMAGE_FOLDER: 'SPLIT/CLASS/IMAGE files',
                   sources.SEGMENTATION_FOLDER:
                       'images/SPLIT and annotations/SPLIT'}.get(
                           name, 'a dataset.json and its NIfTI files')
        raise ValueError(f'{where}.folder: dataset {name!r} needs a '
                         f'directory of {layout_}; got {folder!r}, which is '
                         f'not a directory')
    elif isinstance(name, str) and name not in sources.BUILT_IN:
      _check_tfds_dataset(f'{where}.name', name, data_dir, sources)
  # The objective and the classes against the dataset (its labels' kind
  # and count), as build_run checks them, but before the workdir exists.
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  build.check_dataset(config, data.dataset_info(config.data))


def _check_tfds_dataset(where: str, name: str, data_dir, sources) -> None:
  """A TFDS name: known (else the closest name) and prepared in data_dir."""
  tfds = sources.tfds
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)  # TFDS's notes on unprepared data
  try:
    prepared = tfds.builder(name, data_dir=data_dir).is_prepared()
  except tfds.core.registered.DatasetNotFoundError:
    raise sources.unknown_dataset(name, f'{where}: ') from None
  except Exception:  # pylint: disable=broad-except
    return  # a failure the data pipeline reports in full
  finally:
    logging.set_verbosity(verbosity)
  if not prepared:
    target = data_dir or sources.digits.default_data_dir()
    raise ValueError(f'{where}: dataset {name!r} is not prepared in '
                     f'data_dir {target}, and vit_jax does not download '
                     f'during a run; prepare it once where there is '
                     f'network access: tfds build {name} '
                     f'--data_dir={target}')


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
