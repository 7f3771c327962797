"""Evaluate a workdir's checkpoints, or a pretrained checkpoint few-shot.

    python -m vit_jax.evaluate --workdir=DIR [--config=configs/FILE.py[:ARG]]
        [--step=latest|all|N] [--evals=NAME,...] [--config.KEY=VALUE ...]
    python -m vit_jax.evaluate --pretrained=NAME_OR_DIR
        --config=configs/fewshot_eval.py[:DATASET,...] --output_dir=DIR
        [--config.KEY=VALUE ...]

--workdir runs the config's evaluators (`vit_jax.evaluate`: 'val' for the
classifier when config.eval_every_steps is set, and every entry of
config.evals) on the checkpoint(s) and appends their metrics, at the
checkpoint's step, to DIR/metrics.jsonl and DIR/tb, as the training run
does; reconstruction grids go to DIR/plots. Without --config the workdir's
config.json is used. A workdir still being trained is only read: the
checkpoints are opened read-only and only finished ones are listed; nothing
is created in a directory that is not a workdir. DIR may be local or gs://
(`vit_jax.paths`). Multi-host: as vit_jax.main.

--pretrained evaluates `vit_jax.pretrained.load(NAME_OR_DIR)` (a Hub name
or a local directory in timm's Hub layout) few-shot, without training: the
same few-shot evaluator as a workdir's `kind='fewshot'` entry, built by
`evaluate.build_evaluators` from a few-shot evaluation config
(configs/fewshot_eval.py: datasets, shots, seeds, l2 strength,
representation; each dataset preprocessed as the checkpoint is evaluated
unless the config sets `pp`). Its metrics, `<prefix>/<dataset>/<k>shot`
and `..._std` at step 0, are appended to DIR/metrics.jsonl (and DIR/tb);
the table of means and standard deviations over seeds is printed and
written to DIR/fewshot.txt.

Exit status: 0 done; 1 an error (one line naming it); 2 a bad command line.
"""

import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence

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
from vit_jax import sharding
from vit_jax import workdir as workdir_lib
from vit_jax.models import representation as representation_lib

_STEP = flags.DEFINE_string(
    'step', 'latest', "Checkpoint to evaluate: 'latest', 'all' or a step.")
_EVALS = flags.DEFINE_list(
    'evals', None, "Evaluators to run, by name ('val' or config.evals keys); "
    'all by default.')
_PRETRAINED = flags.DEFINE_string(
    'pretrained', None, 'Pretrained weights by Hub name or local directory '
    '(vit_jax.pretrained.load), evaluated few-shot without training; '
    'instead of --workdir, with --config=configs/fewshot_eval.py and '
    '--output_dir.')
_OUTPUT_DIR = flags.DEFINE_string(
    'output_dir', None, f'Where --pretrained writes {layout.METRICS}, tb/ and '
    f'the table (fewshot.txt); local or gs://.')
# An unsupported scheme is a bad command line, as for --workdir.
flags.register_validator('output_dir', cli._check_workdir)  # pylint: disable=protected-access

# What --pretrained writes beside metrics.jsonl, and the step of its rows
# (a pretrained checkpoint has no training step).
TABLE = 'fewshot.txt'
PRETRAINED_STEP = 0
# The few-shot evaluation config's own keys; the others are the fields of a
# `kind='fewshot'` entry (`evaluate.EVAL_FIELDS`), less its schedule.
_DATASET_KEYS = ('datasets', 'catalog', 'pp', 'data_dir')


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


# ----------------------------------------------------------------------------
# --pretrained: few-shot evaluation of a checkpoint by name.


def _setting_keys() -> List[str]:
  return [*_DATASET_KEYS, *(key for key in evaluate.EVAL_FIELDS['fewshot']
                            if key not in ('every_steps', 'datasets'))]


def _dataset_keys(datasets) -> List[str]:
  """'cifar100,pets' (or a sequence of names) -> ['cifar100', 'pets']."""
  names = (datasets.split(',') if isinstance(datasets, str)
           else list(datasets or ()))
  keys = []
  for name in (str(name).strip() for name in names):
    if name and name not in keys:
      keys.append(name)
  return keys


def fewshot_settings(config: Mapping[str, Any]) -> Dict[str, Any]:
  """A few-shot evaluation config (configs/fewshot_eval.py, overrides
  applied) checked: {'datasets': {key: catalog entry}, 'pp', 'data_dir',
  and the `kind='fewshot'` entry's fields it sets}. Unknown keys (a
  training recipe's), dataset names not in its catalog and an empty
  selection raise ValueError naming them and the valid choices."""
  config = dict(config.to_dict() if hasattr(config, 'to_dict') else config)
  valid = _setting_keys()
  unknown = sorted(set(config) - set(valid))
  if unknown:
    raise ValueError(
        f'--pretrained takes a few-shot evaluation config such as '
        f'configs/fewshot_eval.py; this config has keys that are not its '
        f'settings: {unknown} (valid: {sorted(valid)}; a training recipe '
        f'goes with --workdir).')
  catalog = config.get('catalog') or {}
  keys = _dataset_keys(config.get('datasets'))
  if not keys:
    raise ValueError(f'config.datasets names no dataset; choose from the '
                     f'catalog: {sorted(catalog)} (comma-separated).')
  missing = [key for key in keys if key not in catalog]
  if missing:
    raise ValueError(f'config.datasets names {missing}, which config.catalog '
                     f'does not hold; valid: {sorted(catalog)}.')
  settings = {key: value for key, value in config.items()
              if key not in ('datasets', 'catalog')}
  settings['datasets'] = {key: dict(catalog[key]) for key in keys}
  return settings


def checkpoint_pp(loaded) -> str:
  """The preprocessing spec of a `pretrained.load` result as it is
  evaluated (`predict.pretrained_spec`: its image size, crop_pct,
  interpolation, mean / std), after a conversion to the channels its
  weights take (a grey dataset into an RGB model, or the reverse)."""
  from vit_jax import predict  # pylint: disable=g-import-not-at-top
  spec, channels = predict.loaded_spec(loaded)
  return f'decode({channels})|{spec}'


def format_table(metrics: Mapping[str, float], prefix: str,
                 datasets: Sequence[str], shots: Sequence[int]) -> str:
  """Rows of datasets, columns of k: 'mean +- std' over the seeds."""
  header = ['dataset', *(f'{k}-shot' for k in shots)]
  rows = [header]
  for key in datasets:
    rows.append([key, *(
        f'{metrics[f"{prefix}/{key}/{k}shot"]:.4f} +- '
        f'{metrics[f"{prefix}/{key}/{k}shot_std"]:.4f}' for k in shots)])
  widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
  return '\n'.join('  '.join(cell.ljust(width) for cell, width in
                             zip(row, widths)).rstrip() for row in rows)


def _describe(name: str, settings: Mapping[str, Any], entry) -> List[str]:
  """The table's heading: what was evaluated, and how."""
  strength = f'l2_reg {entry["l2_reg"]:g}'
  if entry['l2_reg_candidates']:
    strength = (f'l2_reg chosen from {list(entry["l2_reg_candidates"])} on '
                f'held-out shots ({strength} at k = 1)')
  lines = [f'Few-shot accuracy of {name}: representation '
           f'{entry["representation"]!r}, {entry["protocol"]} protocol, '
           f'{strength}, mean +- std over seeds {list(entry["seeds"])}.']
  for key, dataset in settings['datasets'].items():
    lines.append(f'{key}: {dataset["name"]} {dataset["train_split"]!r} -> '
                 f'{dataset["test_split"]!r}, pp {dataset["pp"]!r}')
  return lines


def evaluate_pretrained(config: Mapping[str, Any], name: str,
                        output_dir: str) -> Dict[str, float]:
  """Few-shot evaluation of `pretrained.load(name)` as `config`
  (configs/fewshot_eval.py) sets it; appends the metrics at step
  PRETRAINED_STEP to output_dir/metrics.jsonl, writes the table to
  output_dir/TABLE and prints it. Returns the metrics."""
  from vit_jax import data  # pylint: disable=g-import-not-at-top  (TF inside)
  from vit_jax import pretrained  # pylint: disable=g-import-not-at-top
  settings = fewshot_settings(config)  # before anything is loaded
  paths.check_supported(output_dir)
  # Every dataset known and prepared before any weights are downloaded.
  for dataset in settings['datasets'].values():
    data.num_classes({
        'name': dataset['name'], 'folder': dataset.get('folder'),
        'data_dir': dataset.get('data_dir') or settings.get('data_dir')})
  loaded = pretrained.load(name)
  default_pp = settings.get('pp') or checkpoint_pp(loaded)
  for dataset in settings['datasets'].values():
    dataset['pp'] = dataset.get('pp') or default_pp
  entry = evaluate.resolve_entry('fewshot', {
      'kind': 'fewshot', **{key: value for key, value in settings.items()
                            if key in evaluate.EVAL_FIELDS['fewshot']}})
  batch_size = entry['batch_size']
  if not batch_size or batch_size % jax.device_count():
    raise ValueError(f'config.batch_size={batch_size} must be a multiple of '
                     f'the {jax.device_count()} devices.')
  # The evaluator of a workdir's `kind='fewshot'` entry, built the same way,
  # on the checkpoint's model.
  model = loaded.model
  fns = build.EvalFunctions(
      predict=None, example_loss=None,
      representation=lambda layer: representation_lib.representation_fn(
          model, layer),
      reconstruction=None, reconstruction_images=None)
  run_config = ml_collections.ConfigDict({
      'batch_size': batch_size, 'eval_every_steps': None,
      'data': {'eval_split': None, 'data_dir': settings.get('data_dir')},
      'evals': {'fewshot': entry}})
  mesh = sharding.make_mesh(-1, 1)
  (scheduled,) = evaluate.build_evaluators(run_config, fns, mesh, None)
  scheduled.evaluator.check()  # max(shots) examples of every class
  variables = jax.device_put(loaded.variables, sharding.replicated(mesh))
  metrics = scheduled.evaluator.run(variables, PRETRAINED_STEP)
  table = '\n'.join([*_describe(name, settings, entry), '',
                     format_table(metrics, entry['prefix'],
                                  list(settings['datasets']),
                                  entry['shots'])]) + '\n'
  if jax.process_index() == 0:
    writer = metric_writer.MetricWriter(output_dir)
    try:
      writer.write(PRETRAINED_STEP, metrics)
    finally:
      writer.close()
    paths.write_atomic(paths.join(output_dir, TABLE), table)
    print(table, end='', flush=True)
  return metrics


# ----------------------------------------------------------------------------
# The command line.


def usage_problems() -> List[str]:
  """What is wrong with the flags' combination (empty: nothing)."""
  workdir, pretrained = cli.WORKDIR.value, _PRETRAINED.value
  problems = []
  if bool(workdir) == bool(pretrained):
    problems.append('give exactly one of --workdir (a training run\'s '
                    'checkpoints) and --pretrained (a checkpoint by name, '
                    'few-shot)')
  if pretrained:
    if cli.CONFIG.value is None:
      problems.append('--pretrained needs --config=configs/fewshot_eval.py'
                      '[:DATASET,...]')
    if not _OUTPUT_DIR.value:
      problems.append('--pretrained needs --output_dir=DIR (where '
                      f'{layout.METRICS} and {TABLE} go)')
    given = [f'--{flag}' for flag in ('step', 'evals')
             if flags.FLAGS[flag].present]
    if given:
      problems.append(f'{" and ".join(given)} choose a workdir\'s '
                      f'checkpoints and evaluators; they do not go with '
                      f'--pretrained')
  elif workdir and _OUTPUT_DIR.value:
    problems.append('--output_dir goes with --pretrained; --workdir writes '
                    'into the workdir')
  return problems


def main(argv):
  if len(argv) > 1:
    cli.usage_error(f'unexpected arguments {argv[1:]}', 'vit_jax.evaluate')
  cli.quiet_logging()
  if not flags.FLAGS['verbosity'].present:  # orbax's notes on reading
    logging.set_verbosity(logging.ERROR)
  problems = usage_problems()
  if problems:
    cli.usage_error('; '.join(problems), 'vit_jax.evaluate')
  workdir = cli.WORKDIR.value or _OUTPUT_DIR.value
  cli.exit_if_unreachable(workdir, 'vit_jax.evaluate')
  cli.initialize_distributed()
  try:
    if _PRETRAINED.value:
      evaluate_pretrained(cli.CONFIG.value, _PRETRAINED.value,
                          _OUTPUT_DIR.value)
      return
    config = config_lib.resolve(cli.CONFIG.value or
                                workdir_lib.read_config(workdir))
    cli.check_inputs(config)
    evaluate_workdir(config, workdir, _STEP.value, _EVALS.value)
  except (FileNotFoundError, ValueError) as error:
    print(f'vit_jax.evaluate: {cli.one_line(error)}', file=sys.stderr)
    sys.exit(layout.EXIT_FAILED)


if __name__ == '__main__':
  app.run(main, flags_parser=cli.parse_flags)
