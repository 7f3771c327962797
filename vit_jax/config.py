"""The top-level training config: its schema, defaults and validation.

A recipe (`configs/FILE.py`) sets what it needs; `resolve(config)` checks
every key at every level against the schema below and fills in the
defaults, so the resolved config -- written to the workdir as
`config.json` -- states the whole run. Unknown keys raise an error naming
the key, its closest valid spelling and the valid keys; nothing is silently
ignored.

Sections and who owns their fields (defaults live in one place each):
  top level   `top_level_defaults()` here (`lr`: `vit_jax.optim.DEFAULT_LR`)
  data        `vit_jax.data.default_config()`
  model       `name` + `variant` + the family's constructor fields
              (`vit_jax.models.MODELS[name]`)
  optimizer   `name` + `vit_jax.optim.OPTIMIZER_OPTIONS[name]`
  schedule    `vit_jax.optim.SCHEDULE_DEFAULTS`
  checkpoint, mesh, init_from, branch, wandb   SECTION_DEFAULTS here
  evals       free names, each entry checked by `vit_jax.evaluate`
              (`EVAL_FIELDS[kind]`)

Those owners import JAX and every model family; this module imports them
only in the functions that resolve or fill a config, so the modules that
merely read workdirs or parse a sweep's command lines load no JAX here.
It imports no TensorFlow.
"""

import dataclasses
import difflib
import json
import re
from typing import (Any, Dict, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

from absl import flags as absl_flags
import ml_collections
from ml_collections import config_dict
from ml_collections.config_flags import config_flags

OBJECTIVES = ('supervised', 'mae', 'segmentation')
LOSSES = ('softmax_xent', 'sigmoid_xent', 'dice_ce')
# The losses each objective trains with (an MAE's is its own): classifiers
# take one-hot labels; segmentation takes integer label maps, softmax_xent
# per pixel (ignore index 255) or Dice + cross-entropy (volumes).
OBJECTIVE_LOSSES = {'supervised': ('softmax_xent', 'sigmoid_xent'),
                    'segmentation': ('softmax_xent', 'dice_ce'),
                    'mae': LOSSES}
DTYPES = ('float32', 'bfloat16', 'float16')
# Weights & Biases' modes (config.wandb.mode; vit_jax/metric_writer.py).
WANDB_MODES = ('offline', 'online')


class _Required:
  def __repr__(self):
    return '<required>'


REQUIRED = _Required()


def top_level_defaults() -> Dict[str, Any]:
  """The top-level keys, in order, with their defaults."""
  from vit_jax import optim  # pylint: disable=g-import-not-at-top
  return {
      'seed': 0,
      'total_steps': REQUIRED,
      'batch_size': REQUIRED,
      'eval_batch_size': None,       # None: batch_size
      'objective': 'supervised',     # OBJECTIVES
      'loss': 'softmax_xent',        # OBJECTIVE_LOSSES[objective]
      'label_smoothing': 0.0,
      'grad_accum_steps': 1,
      'lr': optim.DEFAULT_LR,
      'wd': 0.0,
      'wd_mults': None,              # None: optim.DEFAULT_WD_MULTS
      'lr_mults': None,              # None: every parameter at 1
      'grad_clip_norm': None,        # None or 0: no clipping
      'log_every_steps': 50,
      'eval_every_steps': None,      # None: no 'val' classifier evaluation
      'peak_flops_per_device': None,  # None: vit_jax.compute.PEAK_FLOPS
  }


SECTION_DEFAULTS: Dict[str, Dict[str, Any]] = {
    'checkpoint': {'every_steps': 1000, 'keep_last': 3, 'keep_every': None,
                   'keep_steps': (), 'async_save': True},
    'mesh': {'data': -1, 'fsdp': 1},
    'init_from': {'kind': 'own', 'path': None},
    # A cooldown branch: start from the checkpoint of run `trunk` (a
    # workdir) at `step` (vit_jax/branch.py, `restore`).
    'branch': {'trunk': None, 'step': None},
    # Weights & Biases (vit_jax/metric_writer.py, WandbWriter): off unless
    # `project` is set; mode 'offline' (files in DIR/wandb, `wandb sync`
    # later) or 'online'; `name` None: the workdir's name.
    'wandb': {'project': None, 'entity': None, 'mode': 'offline',
              'group': None, 'name': None, 'tags': ()},
}

SECTIONS = ('data', 'model', 'optimizer', 'schedule', 'evals',
            *SECTION_DEFAULTS)


def unknown_key_error(where: str, key: str, valid: Iterable[str]
                      ) -> ValueError:
  """'Unknown key ... did you mean ...; valid keys: ...' as a ValueError."""
  valid = sorted(valid)
  close = difflib.get_close_matches(key, valid, n=1)
  hint = f' Did you mean {close[0]!r}?' if close else ''
  return ValueError(f'Unknown config key {where}{key!r}.{hint} Valid keys'
                    f'{" of " + where.rstrip(".") if where else ""}: {valid}')


def _as_dict(section: Any, where: str) -> Dict[str, Any]:
  if section is None:
    return {}
  if isinstance(section, ml_collections.ConfigDict):
    return section.to_dict()
  if isinstance(section, Mapping):
    return dict(section)
  raise ValueError(f'config.{where} must be a ConfigDict or a dict, got '
                   f'{section!r}.')


def _fill(given: Mapping[str, Any], defaults: Mapping[str, Any],
          where: str) -> Dict[str, Any]:
  """`defaults` overridden by `given`; unknown keys and missing required
  ones raise."""
  for key in given:
    if key not in defaults:
      raise unknown_key_error(where, key, defaults)
  filled = {**defaults, **given}
  missing = sorted(k for k, v in filled.items() if v is REQUIRED)
  if missing:
    raise ValueError(f'config{"." + where.rstrip(".") if where else ""} '
                     f'misses required keys {missing}.')
  return filled


def model_fields(name: str) -> Dict[str, Any]:
  """The keys `config.model` may hold for family `name`, with defaults."""
  from vit_jax import models  # pylint: disable=g-import-not-at-top
  if name not in models.MODELS:
    raise ValueError(f'Unknown model.name {name!r}; valid choices: '
                     f'{list(models.MODELS)}')
  fields = {'name': name, 'variant': None}
  for field in dataclasses.fields(models.MODELS[name]):
    if field.name in ('parent', 'name'):
      continue
    default = field.default
    if default is dataclasses.MISSING:
      default = REQUIRED if field.default_factory is dataclasses.MISSING else (
          field.default_factory())
    fields[field.name] = default
  return fields


def section_defaults(section: str, given: Mapping[str, Any]
                     ) -> Optional[Dict[str, Any]]:
  """The keys config.SECTION may hold, at their defaults, for a section
  holding `given` (the model's fields are its family's, the optimizer's
  its name's): the one map of sections to their owners' schemas, read by
  `resolve` and `add_defaults`. None where `given` names no valid family
  or optimizer (`resolve` then says which), and for 'evals', whose
  entries each have their kind's schema (`vit_jax.evaluate`)."""
  # pylint: disable=g-import-not-at-top
  from vit_jax import data as data_lib
  from vit_jax import models
  from vit_jax import optim
  # pylint: enable=g-import-not-at-top
  if section == 'data':
    return data_lib.default_config().to_dict()
  if section == 'model':
    name = given.get('name')
    return model_fields(name) if name in models.MODELS else None
  if section == 'optimizer':
    name = given.get('name') or 'adamw'
    options = optim.OPTIMIZER_OPTIONS.get(name)
    return None if options is None else {'name': name, **options}
  if section == 'schedule':
    return dict(optim.SCHEDULE_DEFAULTS)
  if section in SECTION_DEFAULTS:
    return dict(SECTION_DEFAULTS[section])
  return None


def _resolve_model(given: Dict[str, Any]) -> Dict[str, Any]:
  from vit_jax.models import common  # pylint: disable=g-import-not-at-top
  name = given.get('name')
  fields = model_fields(name)
  for key in given:
    if key not in fields:
      raise unknown_key_error('model.', key, fields)
  # Sizes may come from the variant table; only name the given keys.
  resolved = dict(given)
  if resolved.get('dtype') is not None:
    common.check_choice('model.dtype', resolved['dtype'], DTYPES)
  return resolved


def resolve(config: Any) -> ml_collections.ConfigDict:
  """The full config: every key checked, every default filled in.

  Accepts a ConfigDict or a plain dict (e.g. a workdir's config.json).
  Returns a new, unlocked ConfigDict.
  """
  # pylint: disable=g-import-not-at-top
  from vit_jax import data as data_lib
  from vit_jax import evaluate
  from vit_jax import models
  from vit_jax import optim
  from vit_jax import weights
  from vit_jax.models import common
  # pylint: enable=g-import-not-at-top
  given = _as_dict(config, '')
  sections = {name: _as_dict(given.pop(name, None), name)
              for name in SECTIONS}
  top = _fill(given, top_level_defaults(), '')
  common.check_choice('objective', top['objective'], OBJECTIVES)
  common.check_choice('loss', top['loss'], LOSSES)
  _check_loss(top)
  for key in ('total_steps', 'batch_size'):
    if not isinstance(top[key], int) or top[key] < 1:
      raise ValueError(f'config.{key} must be a positive integer, got '
                       f'{top[key]!r}.')

  resolved = dict(top)
  resolved['data'] = data_lib.resolve_config(sections['data']).to_dict()
  if not sections['model']:
    raise ValueError(f'config.model must name the model family: '
                     f'model.name, one of {list(models.MODELS)}.')
  resolved['model'] = _resolve_model(sections['model'])

  optimizer = sections['optimizer'] or {'name': 'adamw'}
  common.check_choice('optimizer.name', optimizer.get('name', 'adamw'),
                      optim.OPTIMIZERS)
  sections['optimizer'] = optimizer

  def fill(section: str) -> None:
    resolved[section] = _fill(
        sections[section], section_defaults(section, sections[section]),
        f'{section}.')

  fill('optimizer')
  fill('schedule')
  common.check_choice('schedule.decay', resolved['schedule']['decay'],
                optim.DECAYS)
  # Warmup + cooldown within total_steps, the values' types: the schedule
  # is built (not run) here, so a run is refused before anything starts.
  optim.make_schedule(ml_collections.ConfigDict(
      {'lr': top['lr'], 'schedule': resolved['schedule']}),
                      top['total_steps'])
  for section in SECTION_DEFAULTS:
    fill(section)
  common.check_choice('init_from.kind', resolved['init_from']['kind'],
                      weights.INIT_KINDS)
  common.check_choice('wandb.mode', resolved['wandb']['mode'], WANDB_MODES)
  common.check_choice('schedule.cooldown_shape',
                      resolved['schedule']['cooldown_shape'],
                      optim.COOLDOWN_SHAPES)
  keep_steps = resolved['checkpoint']['keep_steps'] or ()
  if (not isinstance(keep_steps, (list, tuple)) or
      not all(isinstance(s, int) and s > 0 for s in keep_steps)):
    raise ValueError(f'config.checkpoint.keep_steps must be a tuple of '
                     f'positive steps, got {keep_steps!r}.')
  resolved['checkpoint']['keep_steps'] = tuple(sorted(set(keep_steps)))
  _check_branch(resolved)

  evals = {}
  for entry_name, entry in sections['evals'].items():
    evals[entry_name] = evaluate.resolve_entry(entry_name, entry)
  resolved['evals'] = evals
  return ml_collections.ConfigDict(resolved)


def _check_loss(top: Dict[str, Any]) -> None:
  """The loss against the objective (and label smoothing, which the dense
  losses do not have)."""
  objective, loss = top['objective'], top['loss']
  valid = OBJECTIVE_LOSSES[objective]
  if loss not in valid:
    raise ValueError(f'config.loss={loss!r} does not train objective '
                     f'{objective!r}; valid choices: {list(valid)}.')
  if objective == 'segmentation' and top['label_smoothing']:
    raise ValueError(f"config.label_smoothing={top['label_smoothing']!r}: "
                     f'the segmentation losses have no label smoothing; '
                     f'set it to 0.')


def _check_branch(resolved: Dict[str, Any]) -> None:
  """A branch's own settings: a step inside the run, before its cooldown,
  and a decay that does not depend on the run's length."""
  from vit_jax import optim  # pylint: disable=g-import-not-at-top
  branch = resolved['branch']
  trunk, step = branch['trunk'], branch['step']
  if trunk is None and step is None:
    return
  if not trunk or not isinstance(trunk, str):
    raise ValueError(f'config.branch.trunk must name the trunk run\'s '
                     f'workdir when branch.step is set, got {trunk!r}.')
  if not isinstance(step, int) or step < 1:
    raise ValueError(f'config.branch.step must be a positive step of the '
                     f'trunk run, got {step!r}.')
  schedule = resolved['schedule']
  if schedule['decay'] not in optim.LENGTH_FREE_DECAYS:
    raise ValueError(
        f'config.branch needs a schedule whose value does not depend on '
        f'total_steps: schedule.decay {schedule["decay"]!r} does; valid '
        f'choices: {list(optim.LENGTH_FREE_DECAYS)}.')
  cooldown_start = resolved['total_steps'] - schedule['cooldown_steps']
  if step > cooldown_start:
    raise ValueError(
        f'config.branch.step ({step}) is past the start of this run\'s '
        f'cooldown (total_steps {resolved["total_steps"]} - '
        f'cooldown_steps {schedule["cooldown_steps"]} = {cooldown_start}).')
  if resolved['init_from']['path']:
    raise ValueError('config.branch and config.init_from.path are both '
                     'set; a branch starts from its trunk\'s checkpoint.')


def add_defaults(config: ml_collections.ConfigDict
                 ) -> Tuple[List[str], List[str]]:
  """Adds to a recipe's config every key of the schema it leaves out, at
  its default, so a command line can override any key (`vit_jax.cli`).

  `config` must be unlocked. A default of None (and a None the recipe
  set) becomes a placeholder that takes any literal. Sections and
  entries are filled by their own schema: `model` by its family,
  `optimizer` by its name, each `evals` entry by its kind and each of a
  few-shot entry's datasets by `DATASET_FIELDS`. Returns (the dotted keys
  added, the sections added), for `strip_defaults`.
  """
  # pylint: disable=g-import-not-at-top
  from vit_jax import evaluate
  from vit_jax.evaluate import fewshot_evaluator
  # pylint: enable=g-import-not-at-top
  added, sections_added = [], []

  def fill(target, defaults: Mapping[str, Any], prefix: str) -> None:
    for key, default in defaults.items():
      if key in target:
        if target[key] is None and target.get_type(key) is type(None):
          target[key] = config_dict.placeholder(object)
        continue
      if default is REQUIRED or default is None:
        target[key] = config_dict.placeholder(object)
      elif isinstance(default, list):
        target[key] = tuple(default)
      else:
        target[key] = default
      added.append(prefix + key)

  def section(target, key: str, prefix: str):
    if key not in target or target[key] is None:
      target[key] = ml_collections.ConfigDict()
      sections_added.append(prefix + key)
    value = target[key]
    return value if isinstance(value, ml_collections.ConfigDict) else None

  fill(config, top_level_defaults(), '')
  for name in SECTIONS:
    if name == 'evals':  # last, entry by entry (below)
      continue
    target = section(config, name, '')
    defaults = None if target is None else section_defaults(name, target)
    if defaults is not None:
      fill(target, defaults, f'{name}.')
  evals = section(config, 'evals', '')
  for entry_name in list(evals or ()):
    entry = evals[entry_name]
    if (not isinstance(entry, ml_collections.ConfigDict) or
        entry.get('kind') not in evaluate.EVAL_FIELDS):
      continue
    where = f'evals.{entry_name}.'
    fill(entry, evaluate.EVAL_FIELDS[entry.kind], where)
    datasets = entry.get('datasets')
    if isinstance(datasets, ml_collections.ConfigDict):
      for key in datasets:
        if isinstance(datasets[key], ml_collections.ConfigDict):
          fill(datasets[key], fewshot_evaluator.DATASET_FIELDS,
               f'{where}datasets.{key}.')
  return added, sections_added


def strip_defaults(config: ml_collections.ConfigDict, added: Sequence[str],
                   sections_added: Sequence[str], keep: Iterable[str]
                   ) -> None:
  """Undoes `add_defaults` for the keys not in `keep` (those the command
  line set), so the config is the recipe's plus the overrides: a default
  that does not apply (another model family named on the command line)
  never reaches `resolve`."""
  keep = set(keep)

  def kept(path: str) -> bool:
    return any(k == path or k.startswith(path + '.') or
               path.startswith(k + '.') for k in keep)

  def holder(path: str):
    *parents, leaf = path.split('.')
    target = config
    for part in parents:
      if not isinstance(target, ml_collections.ConfigDict) or (
          part not in target):
        return None, leaf
      target = target[part]
    if not isinstance(target, ml_collections.ConfigDict) or leaf not in target:
      return None, leaf
    return target, leaf

  with config.unlocked():
    for path in [*added, *sorted(sections_added, key=len, reverse=True)]:
      if kept(path):
        continue
      target, leaf = holder(path)
      if target is None:
        continue
      if path in sections_added and len(target[leaf]):
        continue
      del target[leaf]


class RecipeParser(config_flags.ConfigFileFlagParser):
  """ml_collections' recipe-file parser that then adds every key of the
  schema the recipe leaves out, at its default (`add_defaults`), so that
  `--config.KEY=VALUE` reaches any key of the schema; `strip_defaults`
  with `.added` removes those no override set."""

  def __init__(self, name: str = 'config'):
    super().__init__(name=name, lock_config=True)
    self.config = None
    self.added: Tuple[List[str], List[str]] = ([], [])

  def parse(self, path):
    config = super().parse(path)
    if isinstance(config, ml_collections.ConfigDict):
      with config.unlocked():
        self.added = add_defaults(config)
    self.config = config
    return config


# A `--config.KEY=VALUE` override on a command line.
OVERRIDE = re.compile(r'^--?config\.([A-Za-z0-9_.]+)=')


def last_override_wins(argv: List[str]) -> List[str]:
  """Drops all but the last `--config.KEY=VALUE` of each KEY: a repeated
  override replaces the earlier one (absl would join a tuple field's
  repeats into one tuple)."""
  last = {}
  for i, arg in enumerate(argv):
    if arg == '--':
      break
    match = OVERRIDE.match(arg)
    if match:
      last[match.group(1)] = i
  return [arg for i, arg in enumerate(argv)
          if not (OVERRIDE.match(arg) and
                  last.get(OVERRIDE.match(arg).group(1)) != i)]


def parse_command_line(config_spec: str, override_flags: Sequence[str]
                       ) -> ml_collections.ConfigDict:
  """The config `python -m vit_jax.main --config=SPEC OVERRIDES...` builds
  (the recipe, then the overrides: any key of the schema, the last of a
  repeated one winning), unresolved; without defining flags globally (the
  launcher checks its runs' command lines with it). Raises absl's and
  ml_collections' errors for a bad override."""
  argv = last_override_wins(['vit_jax.main', f'--config={config_spec}',
                             *override_flags])
  values = absl_flags.FlagValues()
  parser = RecipeParser('config')
  flag = config_flags._ConfigFlag(  # pylint: disable=protected-access
      flag_values=values, sys_argv=argv, parser=parser,
      serializer=absl_flags.ArgumentSerializer(), name='config',
      default=None, help_string='recipe')
  absl_flags.DEFINE_flag(flag, flag_values=values)
  values(argv)
  config = values.config
  if isinstance(config, ml_collections.ConfigDict):
    strip_defaults(config, *parser.added, keep=flag.override_values)
  return config


def to_json_dict(config: Any) -> Dict[str, Any]:
  """The config as plain JSON data (tuples as lists), for comparing and
  writing."""
  if isinstance(config, ml_collections.ConfigDict):
    text = config.to_json_best_effort(sort_keys=True)
  else:
    text = json.dumps(config, sort_keys=True, default=str)
  return json.loads(text)


def flat_items(tree: Mapping[str, Any], prefix: str = '') -> Dict[str, Any]:
  """{'a.b': value} for every leaf of nested dicts (dicts inside `evals`
  included)."""
  flat = {}
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, Mapping) and value:
      flat.update(flat_items(value, path + '.'))
    else:
      flat[path] = value
  return flat
