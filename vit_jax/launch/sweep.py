"""Sweep definitions: a recipe and a list of runs, each a dict of overrides.

A sweep file is plain Python beside the recipes (`configs/sweeps/NAME.py`)
with a `get_sweep(arg=None)` that returns a dict:

    from vit_jax.launch import sweep

    def get_sweep(arg=None):
      return {
          'config': 'configs/digits.py',          # the recipe, FILE[:ARG]
          'runs': sweep.product(                  # a list of override dicts
              sweep.grid({'model.pool_type': ['cls', 'gap']}),
              sweep.grid({'lr': [1e-3, 3e-3]})),
          'fixed': {'total_steps': 320},          # every run; not in names
          'metric': 'val/accuracy',               # the status headline
          'resources': lambda run: {...},         # optional, see below
      }

Run lists: `grid`, `zipped`, `product`, `branches` (cooldowns), `random`
(random search: `random(16, 0, {'lr': log_uniform(1e-4, 1e-2), 'wd':
choice([0, 1e-4])})`, with `uniform`, `log_uniform`, `int_uniform`,
`choice`) and `seeds(runs, n)` (each run with seed 0 .. n - 1).

Overrides are dotted config keys. Every run is resolved and validated
before anything is launched: a key the recipe does not have, a value of
the wrong type, two runs with one name, a config `vit_jax.config`
refuses, an `image_folder` run without `data.folder`, or a `metric` the
run does not log (`logged_metrics`) is an error naming the run. A sweep
file that does not run (a SyntaxError, an exception) is an error naming
its file and line. Each run becomes the command line

    python -m vit_jax.main --config=RECIPE --workdir=SWEEP_DIR/NAME \
        --config.KEY=VALUE ...

and the parsing of that command line is checked to give exactly the
validated config, so what runs is what was checked.

Per-run resources: `'resources'` is a function of a run's overrides
(the fixed ones included) returning the scheduler resources that run
needs, keys as the back ends' flags without their prefix
(`RESOURCE_KEYS`: `partition`, `time`, `nodes`, `gpus_per_node`,
`cpus_per_task`, `mem` for SLURM, `tpu_names` for TPU VMs); they
override the command line's for that run. A scaling ladder gives its
large models more GPUs and time:

    'resources': lambda run: {'gpus_per_node': 8, 'time': '24:00:00'}
                 if run['model.variant'] in ('L/16', 'H/14') else {},

The SLURM back end submits the runs of equal resources as one array
each; the TPU VM back end starts a run only on the VMs it names. The
local back end runs every run on its slots (a note says so). A
resource key outside `RESOURCE_KEYS`, or a function that raises, is an
error naming the run.

Names: `key=value` pairs joined by ',', in the order of the run's dict,
keys shortened to their last component where that is unambiguous within
the sweep, values with '/' and spaces replaced ('model.variant': 'S/16'
-> `variant=S-16`). A run without overrides is named `default`.
"""

import dataclasses
import difflib
import importlib.util
import itertools
import math
import os
import random as random_lib
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence

from absl import flags
from ml_collections import config_dict

from vit_jax import config as config_lib
from vit_jax import paths

SWEEP_KEYS = ('config', 'runs', 'fixed', 'metric', 'resources')
# The per-run resources a sweep may give (each back end uses its own).
RESOURCE_KEYS = ('partition', 'time', 'nodes', 'gpus_per_node',
                 'cpus_per_task', 'mem', 'tpu_names')
DEFAULT_METRIC = 'val/accuracy'


# ----------------------------------------------------------------------------
# Building run lists.


def grid(values: Optional[Mapping[str, Sequence[Any]]] = None,
         **kwargs: Sequence[Any]) -> List[Dict[str, Any]]:
  """Every combination of the given value lists, the last key fastest.

  grid({'lr': [1, 2], 'wd': [0, 1]}) ->
  [{'lr': 1, 'wd': 0}, {'lr': 1, 'wd': 1}, {'lr': 2, 'wd': 0}, ...]
  """
  values = {**(values or {}), **kwargs}
  for key, options in values.items():
    _check_list(key, options)
  keys = list(values)
  return [dict(zip(keys, combo))
          for combo in itertools.product(*(values[k] for k in keys))]


def zipped(values: Optional[Mapping[str, Sequence[Any]]] = None,
           **kwargs: Sequence[Any]) -> List[Dict[str, Any]]:
  """Value lists taken together, element by element (equal lengths).

  zipped({'model.variant': ['Ti/16', 'S/16'], 'lr': [1e-3, 5e-4]}) ->
  [{'model.variant': 'Ti/16', 'lr': 1e-3}, {'model.variant': 'S/16', ...}]
  """
  values = {**(values or {}), **kwargs}
  for key, options in values.items():
    _check_list(key, options)
  lengths = {key: len(options) for key, options in values.items()}
  if len(set(lengths.values())) > 1:
    raise ValueError(f'zipped() needs lists of one length, got {lengths}.')
  keys = list(values)
  return [dict(zip(keys, combo)) for combo in zip(*(values[k] for k in keys))]


def product(*run_lists: Sequence[Mapping[str, Any]]) -> List[Dict[str, Any]]:
  """Every combination of runs from the lists, merged (later lists vary
  fastest). A key set by two lists is an error."""
  runs = []
  for parts in itertools.product(*run_lists):
    merged: Dict[str, Any] = {}
    for part in parts:
      shared = sorted(set(merged) & set(part))
      if shared:
        raise ValueError(f'product(): keys {shared} are set by two of the '
                         f'lists; each key belongs in one.')
      merged.update(part)
    runs.append(merged)
  return runs


@dataclasses.dataclass(frozen=True)
class Distribution:
  """A value distribution for `random`: 'uniform', 'log_uniform' (floats
  in [low, high]), 'int_uniform' (integers in [low, high]) or 'choice'
  (one of `options`, equally likely)."""
  kind: str
  low: Any = None
  high: Any = None
  options: tuple = ()

  def sample(self, rng: random_lib.Random, key: str) -> Any:
    if self.kind == 'choice':
      return self.options[rng.randrange(len(self.options))]
    if self.kind == 'int_uniform':
      return rng.randint(self.low, self.high)
    if self.kind == 'log_uniform':
      value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
    else:
      value = rng.uniform(self.low, self.high)
    # 4 significant digits: readable run names, and a value the run's
    # name and command line give back exactly.
    value = float(f'{value:.4g}')
    return min(max(value, self.low), self.high)


def _check_range(kind: str, low: Any, high: Any, positive: bool) -> None:
  numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                and math.isfinite(v) for v in (low, high))
  if not numbers or not low < high or (positive and low <= 0):
    need = '0 < low < high' if positive else 'low < high'
    raise ValueError(f'{kind}(low, high) needs finite numbers with {need}, '
                     f'got {low!r}, {high!r}.')


def uniform(low: float, high: float) -> Distribution:
  """Floats uniform in [low, high] (`random`)."""
  _check_range('uniform', low, high, positive=False)
  return Distribution('uniform', float(low), float(high))


def log_uniform(low: float, high: float) -> Distribution:
  """Floats whose logarithm is uniform in [log low, log high] (learning
  rates, weight decays; `random`)."""
  _check_range('log_uniform', low, high, positive=True)
  return Distribution('log_uniform', float(low), float(high))


def int_uniform(low: int, high: int) -> Distribution:
  """Integers uniform in [low, high], both included (`random`)."""
  if not all(isinstance(v, int) and not isinstance(v, bool)
             for v in (low, high)) or low > high:
    raise ValueError(f'int_uniform(low, high) needs integers with low <= '
                     f'high, got {low!r}, {high!r}.')
  return Distribution('int_uniform', low, high)


def choice(options: Sequence[Any]) -> Distribution:
  """One of `options`, equally likely (`random`)."""
  _check_list('choice', options)
  if not options:
    raise ValueError('choice() needs at least one option.')
  return Distribution('choice', options=tuple(options))


def random(n: int, seed: int,
           space: Mapping[str, Any]) -> List[Dict[str, Any]]:
  """`n` runs drawn from `space`, {key: Distribution or a fixed value}:
  random search (Bergstra and Bengio 2012). The same (n, seed, space)
  gives the same runs, so a sweep file stays a record of what ran; a
  larger n with the same seed keeps the first runs. Floats are rounded to
  4 significant digits (run names stay readable); a draw equal to an
  earlier one is drawn again (a run name is unique).

  random(8, 0, {'lr': sweep.log_uniform(1e-4, 1e-2),
                'wd': sweep.choice([0.0, 1e-4, 1e-3])})
  """
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    raise ValueError(f'random() needs n >= 1 runs, got {n!r}.')
  if not isinstance(space, Mapping) or not space:
    raise ValueError(f'random() needs a non-empty dict of key -> '
                     f'distribution, got {space!r}.')
  rng = random_lib.Random(seed)
  runs, seen = [], set()
  for _ in range(n):
    for _ in range(1000):
      run = {key: (value.sample(rng, key)
                   if isinstance(value, Distribution) else value)
             for key, value in space.items()}
      marker = repr(sorted(run.items()))
      if marker not in seen:
        break
    else:
      raise ValueError(f'random(): the space {space!r} has fewer than {n} '
                       f'distinct runs.')
    seen.add(marker)
    runs.append(run)
  return runs


def seeds(runs: Sequence[Mapping[str, Any]], n: int, key: str = 'seed',
          start: int = 0) -> List[Dict[str, Any]]:
  """Each run `n` times, with `key` = start .. start + n - 1 (its seed
  last, so a run's seeds sit together). The scaling analysis averages
  runs alike but for their seed (`--seed_keys`)."""
  if not isinstance(n, int) or isinstance(n, bool) or n < 1:
    raise ValueError(f'seeds() needs n >= 1, got {n!r}.')
  taken = [run for run in runs if key in run]
  if taken:
    raise ValueError(f'seeds(): run {dict(taken[0])!r} already sets '
                     f'{key!r}.')
  return [{**run, key: start + i} for run in runs for i in range(n)]


class Trunk(dict):
  """The overrides of the run a branch starts from (`branches`); the
  loader turns it into that run's workdir."""

  def __repr__(self):
    return f'sweep.Trunk({dict(self)!r})'


def branches(trunk: Mapping[str, Any], steps: Sequence[int],
             cooldown_fraction: float, shape: str = 'linear'
             ) -> List[Dict[str, Any]]:
  """Cooldown branches of the run `trunk` (its overrides, also a run of
  the sweep) at each of `steps` (vit_jax/branch.py).

  The branch at S cools down over L steps, L the `cooldown_fraction` of
  its own length: total_steps = round(S / (1 - f)), L = total_steps - S,
  with `shape` 'linear' or '1-sqrt'. The trunk needs a schedule whose
  value does not depend on its length ('constant' or 'rsqrt') and no
  cooldown before max(steps); the loader adds the steps to its
  `checkpoint.keep_steps`. A branch is named `<trunk name>,branch=S+L`
  and is launched once the trunk's checkpoint at S exists.
  """
  if not 0 < cooldown_fraction < 1:
    raise ValueError(f'cooldown_fraction must be in (0, 1), got '
                     f'{cooldown_fraction!r}.')
  _check_list('steps', steps)
  runs = []
  for step in steps:
    if not isinstance(step, int) or step < 1:
      raise ValueError(f'branch steps must be positive integers, got '
                       f'{step!r}.')
    total = int(round(step / (1.0 - cooldown_fraction)))
    runs.append({**trunk, 'branch.trunk': Trunk(trunk), 'branch.step': step,
                 'total_steps': total,
                 'schedule.cooldown_steps': total - step,
                 'schedule.cooldown_shape': shape})
  return runs


def _check_list(key: str, options: Any) -> None:
  if isinstance(options, (str, bytes)) or not isinstance(
      options, (list, tuple, range)):
    raise ValueError(f'The values of {key!r} must be a list, got '
                     f'{options!r}.')


# ----------------------------------------------------------------------------
# Names.


def _format_value(value: Any) -> str:
  if isinstance(value, float):
    text = repr(value)
  elif isinstance(value, (list, tuple)):
    text = 'x'.join(_format_value(v) for v in value)
  else:
    text = str(value)
  text = re.sub(r'[/\s]+', '-', text)
  return re.sub(r'[^A-Za-z0-9._=+-]', '', text) or 'none'


def _short_keys(keys: Iterable[str]) -> Dict[str, str]:
  """Each dotted key's shortest unambiguous suffix among `keys`."""
  keys = sorted(set(keys))
  short = {}
  for key in keys:
    parts = key.split('.')
    for length in range(1, len(parts) + 1):
      candidate = '.'.join(parts[-length:])
      if not any(other != key and (other == candidate or
                                   other.endswith('.' + candidate))
                 for other in keys):
        short[key] = candidate
        break
    else:
      short[key] = key
  return short


_BRANCH_KEYS = ('branch.trunk', 'branch.step', 'total_steps',
                'schedule.cooldown_steps', 'schedule.cooldown_shape')


def _is_branch(run: Mapping[str, Any]) -> bool:
  return isinstance(run.get('branch.trunk'), Trunk)


def _name_items(run: Mapping[str, Any]) -> Dict[str, Any]:
  """The overrides a run's name is made of (a branch: its trunk's)."""
  if _is_branch(run):
    return dict(run['branch.trunk'])
  return dict(run)


def run_names(runs: Sequence[Mapping[str, Any]]) -> List[str]:
  """Each run's name (see the module doc); a run's own recipe ('config'
  key) is named by its ARG, or its file's name without '.py'."""
  short = _short_keys(k for run in runs for k in _name_items(run))
  short['config'] = 'recipe'
  names = []
  for run in runs:
    parts = []
    for key, value in _name_items(run).items():
      if key == 'config':
        path, arg = split_spec(value)
        value = arg if arg is not None else os.path.splitext(
            os.path.basename(path))[0]
      parts.append(f'{short[key]}={_format_value(value)}')
    name = ','.join(parts) or 'default'
    if _is_branch(run):
      step, total = run['branch.step'], run['total_steps']
      name += f',branch={step}+{total - step}'
    names.append(name)
  return names


# ----------------------------------------------------------------------------
# Loading and validation.


@dataclasses.dataclass
class Run:
  """One run of a sweep: its name, overrides and command line."""
  index: int
  name: str
  overrides: Dict[str, Any]
  workdir: str
  args: List[str]  # after `python`: ['-m', 'vit_jax.main', ...]
  total_steps: int
  # A branch: {'run': trunk name, 'workdir': its workdir, 'step': S}; the
  # launchers start it once that checkpoint exists.
  after: Optional[Dict[str, Any]] = None
  # The sweep's `resources` for this run (RESOURCE_KEYS), {} if none.
  resources: Dict[str, Any] = dataclasses.field(default_factory=dict)

  def to_json(self) -> Dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class Sweep:
  """A loaded sweep: its source, its recipe and its runs."""
  file: str
  arg: Optional[str]
  source: str
  config: str
  fixed: Dict[str, Any]
  metric: str
  runs: List[Run]

  @property
  def spec(self) -> str:
    return f'{self.file}:{self.arg}' if self.arg is not None else self.file


def split_spec(spec: str):
  """'FILE[:ARG]' -> (FILE, ARG or None)."""
  path, sep, arg = spec.partition(':')
  return path, (arg if sep else None)


def _where_raised(path: str, error: BaseException) -> str:
  """'FILE, line N' of the innermost frame of `error` in the sweep file
  (its traceback), else 'FILE'."""
  line = None
  frame = error.__traceback__
  target = os.path.abspath(path)
  while frame is not None:
    if os.path.abspath(frame.tb_frame.f_code.co_filename) == target:
      line = frame.tb_lineno
    frame = frame.tb_next
  return f'{path}, line {line}' if line is not None else path


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else ''


def _run_sweep_file(path: str, call):
  """`call()`, which runs the sweep file's code; any error but a
  ValueError (the sweep helpers' own, already clear) becomes one naming
  the file and line."""
  try:
    return call()
  except SyntaxError as error:
    detail = f': {error.text.strip()!r}' if error.text else ''
    raise ValueError(f'{error.filename or path}, line {error.lineno}: '
                     f'SyntaxError: {error.msg}{detail}') from None
  except ValueError:
    raise
  except Exception as error:  # pylint: disable=broad-except
    raise ValueError(f'{_where_raised(path, error)}: '
                     f'{type(error).__name__}: {_first_line(error)}'
                     ) from None


def _load_module(path: str):
  if not os.path.isfile(path):
    raise FileNotFoundError(f'Sweep file {path!r} does not exist.')
  name = 'vit_jax_sweep_' + re.sub(r'\W', '_', os.path.abspath(path))
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  _run_sweep_file(path, lambda: spec.loader.exec_module(module))
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'Sweep file {path!r} has no get_sweep(arg=None).')
  return module


# What every training run logs (vit_jax/train.py).
TRAIN_METRICS = ('train/loss', 'train/grad_norm', 'train/update_norm',
                 'train/lr', 'train/img_per_sec', 'compute/flops',
                 'compute/images_seen', 'compute/device_seconds',
                 'compute/mfu')
_CLASSIFICATION_METRICS = ('accuracy', 'top5', 'loss', 'count')


def logged_metrics(config) -> List[str]:
  """The metric names a run of this resolved config writes to
  metrics.jsonl: the training loop's, the 'val' classifier's
  (`eval_every_steps`, supervised runs) and each `evals` entry's (named as
  `vit_jax.evaluate`'s evaluators name them)."""
  names = list(TRAIN_METRICS)
  supervised = config.get('objective', 'supervised') == 'supervised'
  if supervised and config.get('eval_every_steps') is not None:
    names += [f'val/{name}' for name in _CLASSIFICATION_METRICS]
  for entry_name, entry in (config.get('evals') or {}).items():
    kind, prefix = entry['kind'], entry.get('prefix')
    if kind == 'classification':
      names += [f'{prefix or entry_name}/{name}'
                for name in _CLASSIFICATION_METRICS]
    elif kind == 'fewshot':
      for dataset in (entry.get('datasets') or {}).keys():
        for k in entry.get('shots') or ():
          names += [f'{prefix}/{dataset}/{k}shot',
                    f'{prefix}/{dataset}/{k}shot_std']
    elif kind == 'reconstruction':
      names.append(f'{prefix}/loss')
    elif kind in ('segmentation', 'volume_segmentation'):
      names += _segmentation_metrics(kind, prefix or 'val',
                                     config.model.get('num_classes') or 0)
  return sorted(set(names))


def _segmentation_metrics(kind: str, prefix: str, num_classes: int
                          ) -> List[str]:
  """The names `vit_jax.evaluate`'s segmentation evaluators write: mIoU,
  accuracies, loss and each class's IoU; for volumes the mean foreground
  Dice and each foreground class's."""
  if kind == 'segmentation':
    return ([f'{prefix}/{name}' for name in
             ('miou', 'pixel_accuracy', 'mean_accuracy', 'loss')] +
            [f'{prefix}/iou/{c}' for c in range(num_classes)])
  return [f'{prefix}/dice'] + [f'{prefix}/dice/{c}'
                               for c in range(1, num_classes)]


def _check_metric(metric: Any, config, where: str) -> None:
  """The sweep's metric is one this run logs (else `status` shows none)."""
  logged = logged_metrics(config)
  if metric in logged:
    return
  close = difflib.get_close_matches(str(metric), logged, n=1)
  hint = f' Did you mean {close[0]!r}?' if close else ''
  raise ValueError(f'{where}: metric {metric!r} is not logged by this run '
                   f'(`status` would show none).{hint} It logs: {logged}')


def _check_data(config, where: str) -> None:
  """What the data config needs before the trainer reads any data."""
  data = config.data
  if data.name == 'image_folder' and not data.get('folder'):
    raise ValueError(
        f"{where}: data.name is 'image_folder' but data.folder is not set "
        f'(the run would fail at start); set data.folder to the folder '
        f'holding SPLIT/CLASS/*.jpg|png.')


def _override_flags(overrides: Mapping[str, Any]) -> List[str]:
  return [f'--config.{key}={_flag_value(value)}'
          for key, value in overrides.items()]


def _flag_value(value: Any) -> str:
  if isinstance(value, float):
    return repr(value)
  return str(value)


def _set(config, key: str, value: Any, where: str) -> None:
  """config[key] = value for a dotted key of the config (the recipe's
  and the schema's, `config.add_defaults`), type-checked."""
  target = config
  *parents, leaf = key.split('.')
  for depth, part in enumerate(parents + [leaf]):
    if not isinstance(target, config_dict.ConfigDict) or part not in target:
      prefix = '.'.join((parents + [leaf])[:depth])
      valid = (list(target.keys())
               if isinstance(target, config_dict.ConfigDict) else [])
      error = config_lib.unknown_key_error(f'{prefix}.' if prefix else '',
                                           part, valid)
      raise ValueError(f'{where}: override {key!r}: {error}')
    if part != leaf:
      target = target[part]
  try:
    with target.unlocked():
      target[leaf] = value
  except (TypeError, ValueError) as error:
    raise ValueError(f'{where}: override {key}={value!r} has the wrong type '
                     f'for the recipe\'s value {target[leaf]!r} '
                     f'({error}).') from None


def _recipe(path: str, recipe: str, code_dir: str):
  """(the recipe's spec with its path in `code_dir`, its config)."""
  if not isinstance(recipe, str):
    raise ValueError(f'{path}: a recipe must be \'FILE[:ARG]\', got '
                     f'{recipe!r}.')
  recipe_path, recipe_arg = split_spec(recipe)
  recipe_file = os.path.join(code_dir, recipe_path)
  if not os.path.isfile(recipe_file):
    raise FileNotFoundError(f'{path}: recipe {recipe_path!r} not found in '
                            f'{code_dir}.')
  local_spec = (f'{recipe_file}:{recipe_arg}' if recipe_arg is not None
                else recipe_file)
  return local_spec, config_lib.parse_command_line(local_spec, [])


def _resolve_branches(path: str, run_dicts: List[Mapping[str, Any]],
                      names: List[str], sweep_dir: str):
  """Branch runs point at their trunk's workdir; trunks keep the
  branch steps' checkpoints. (new run dicts, each run's `after`)."""
  run_dicts = [dict(run) for run in run_dicts]
  after: List[Optional[Dict[str, Any]]] = [None] * len(run_dicts)
  keep: Dict[int, set] = {}
  for i, run in enumerate(run_dicts):
    if not _is_branch(run):
      continue
    trunk = dict(run['branch.trunk'])
    matches = [j for j, other in enumerate(run_dicts)
               if not _is_branch(other) and dict(other) == trunk]
    if not matches:
      raise ValueError(f'{path}: run {i} ({names[i]}) branches from a run '
                       f'that is not in the sweep: {trunk}; add the trunk '
                       f'to the runs.')
    j = matches[0]
    workdir = paths.join(sweep_dir, names[j])
    run['branch.trunk'] = workdir
    after[i] = {'run': names[j], 'workdir': workdir,
                'step': run['branch.step']}
    keep.setdefault(j, set()).add(run['branch.step'])
  for j, steps in keep.items():
    existing = tuple(run_dicts[j].get('checkpoint.keep_steps', ()))
    run_dicts[j]['checkpoint.keep_steps'] = tuple(
        sorted(set(existing) | steps))
  return run_dicts, after


def _resources(path: str, where: str, resources_of,
               overrides: Mapping[str, Any]) -> Dict[str, Any]:
  """The sweep's `resources` function on one run's overrides, checked."""
  if resources_of is None:
    return {}
  got = _run_sweep_file(path, lambda: resources_of(dict(overrides)))
  if got is None:
    return {}
  if not isinstance(got, Mapping):
    raise ValueError(f'{where}: resources must be a dict of '
                     f'{list(RESOURCE_KEYS)}, got {got!r}.')
  for key, value in got.items():
    if key not in RESOURCE_KEYS:
      raise ValueError(f'{where}: unknown resource {key!r}; valid: '
                       f'{list(RESOURCE_KEYS)}.')
    if key == 'tpu_names' and (isinstance(value, str) or not all(
        isinstance(v, str) for v in value)):
      raise ValueError(f'{where}: resources tpu_names must be a list of TPU '
                       f'VM names, got {value!r}.')
  return {key: (list(value) if key == 'tpu_names' else value)
          for key, value in got.items() if value is not None}


def load(spec: str, sweep_dir: str, code_dir: str) -> Sweep:
  """Loads, expands and validates `FILE[:ARG]`; nothing is written.

  `code_dir`: where the commands run (the recipe path is relative to it).
  """
  # Validation builds each run's model and optimizer, so JAX is imported
  # here, not with the module: `status`, `resume` and `cancel`, which read
  # sweep.json, do without it.
  # pylint: disable=g-import-not-at-top
  from vit_jax import build
  from vit_jax import optim
  # pylint: enable=g-import-not-at-top
  path, arg = split_spec(spec)
  with open(path) as f:
    source = f.read()
  module = _load_module(path)
  definition = _run_sweep_file(
      path, lambda: module.get_sweep(arg) if arg is not None
      else module.get_sweep())
  if not isinstance(definition, Mapping):
    raise ValueError(f'{path}: get_sweep() must return a dict with keys '
                     f'{list(SWEEP_KEYS)}, got {type(definition).__name__}.')
  for key in definition:
    if key not in SWEEP_KEYS:
      raise config_lib.unknown_key_error('sweep ', key, SWEEP_KEYS)
  if 'config' not in definition or 'runs' not in definition:
    raise ValueError(f'{path}: get_sweep() must give \'config\' (the recipe, '
                     f'FILE[:ARG]) and \'runs\' (a list of override dicts).')
  recipe = definition['config']
  resources_of = definition.get('resources')
  if resources_of is not None and not callable(resources_of):
    raise ValueError(f'{path}: \'resources\' must be a function of a run\'s '
                     f'overrides returning a dict of {list(RESOURCE_KEYS)}, '
                     f'got {resources_of!r}.')
  fixed = dict(definition.get('fixed') or {})
  metric = definition.get('metric') or DEFAULT_METRIC
  run_dicts = list(definition['runs'])
  if not run_dicts:
    raise ValueError(f'{path}: the sweep has no runs.')
  for i, run in enumerate(run_dicts):
    if not isinstance(run, Mapping):
      raise ValueError(f'{path}: run {i} must be a dict of overrides, got '
                       f'{run!r}.')
    # A branch sets its own length and cooldown over the fixed ones.
    shared = sorted(set(run) & set(fixed) -
                    (set(_BRANCH_KEYS) if _is_branch(run) else set()))
    if shared:
      raise ValueError(f'{path}: run {i} overrides {shared}, which '
                       f'\'fixed\' sets for every run.')
  names = run_names(run_dicts)
  seen: Dict[str, int] = {}
  for i, name in enumerate(names):
    if name in seen:
      raise ValueError(
          f'{path}: runs {seen[name]} and {i} have the same name {name!r} '
          f'({run_dicts[seen[name]]} and {run_dicts[i]}); every run needs '
          f'its own overrides.')
    seen[name] = i

  run_dicts, after = _resolve_branches(path, run_dicts, names, sweep_dir)
  bases = {}
  runs = []
  for i, (name, overrides) in enumerate(zip(names, run_dicts)):
    where = f'{path}: run {i} ({name})'
    overrides = dict(overrides)
    run_recipe = overrides.pop('config', recipe)
    if run_recipe not in bases:
      bases[run_recipe] = _recipe(path, run_recipe, code_dir)
    local_spec, base = bases[run_recipe]
    everything = {**fixed, **overrides}
    # As `vit_jax.main` builds it: the recipe with every key of the schema
    # it leaves out added at its default, the overrides, then the added
    # keys no override set taken out again.
    expected = config_dict.ConfigDict(base.to_dict())
    added = config_lib.add_defaults(expected)
    for key, value in everything.items():
      _set(expected, key, value, where)
    config_lib.strip_defaults(expected, *added, keep=everything)
    try:
      resolved = config_lib.resolve(expected)
      # What can be checked without devices or data: the model's
      # arguments, the optimizer and its schedule.
      build.build_model(resolved.model)
      optim.make_optimizer(resolved, resolved.total_steps)
    except (TypeError, ValueError) as error:
      raise ValueError(f'{where}: {error}') from None
    _check_data(resolved, where)
    _check_metric(metric, resolved, where)
    override_flags = _override_flags(everything)
    try:
      parsed = config_lib.parse_command_line(local_spec, override_flags)
    except (flags.Error, KeyError, TypeError, ValueError) as error:
      raise ValueError(f'{where}: its command line does not parse: '
                       f'{error}') from None
    if config_lib.to_json_dict(parsed) != config_lib.to_json_dict(expected):
      differences = {k: v for k, v in config_lib.flat_items(
          config_lib.to_json_dict(parsed)).items()
                     if config_lib.flat_items(config_lib.to_json_dict(
                         expected)).get(k) != v}
      raise ValueError(f'{where}: an override does not survive the command '
                       f'line (parsed as {differences}); use a value of the '
                       f'recipe\'s type.')
    workdir = paths.join(sweep_dir, name)
    args = ['-m', 'vit_jax.main', f'--config={run_recipe}',
            f'--workdir={workdir}', *override_flags]
    if run_recipe != recipe:
      overrides = {'config': run_recipe, **overrides}
    runs.append(Run(index=i, name=name, overrides=overrides,
                    workdir=workdir, args=args,
                    total_steps=int(resolved.total_steps), after=after[i],
                    resources=_resources(path, where, resources_of,
                                         everything)))
  return Sweep(file=path, arg=arg, source=source, config=recipe, fixed=fixed,
               metric=metric, runs=runs)

