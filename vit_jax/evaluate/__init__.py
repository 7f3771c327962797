"""Evaluators run during training and on finished or running workdirs.

Every evaluator has `run(variables, step) -> {metric name: value}`. The
training loop runs each one every `every_steps` steps and at the last step;
`python -m vit_jax.evaluate` runs them on a workdir's checkpoints.

They come from the config:
  config.eval_every_steps  the classifier on config.data.eval_split, as
                           'val/accuracy', 'val/top5', 'val/loss'
                           (supervised runs; None turns it off);
  config.evals.NAME        one evaluator per entry, its `kind` one of
                           EVAL_KINDS, its other fields those of
                           EVAL_FIELDS[kind] (every_steps None: at the end
                           of training only).

For example, few-shot evaluation on digits every 320 steps:

    config.evals.fewshot = dict(
        kind='fewshot', every_steps=320, representation='pre_logits',
        datasets={'digits': dict(name='digits', pp='value_range(-1, 1)')},
        shots=(1, 5, 10, 25), seeds=(0, 1, 2), l2_reg=16.0)
"""

from typing import Any, List, NamedTuple, Optional

import ml_collections

from vit_jax import layout
from vit_jax import paths
from vit_jax.models import common

# Each kind's fields and defaults; None for 'split' / 'batch_size' means the
# run's config.data.eval_split / eval_batch_size (else batch_size).
EVAL_FIELDS = {
    'classification': {
        'every_steps': None, 'split': None, 'batch_size': None,
        'prefix': None,  # None: the entry's name
    },
    'fewshot': {
        'every_steps': None, 'datasets': None, 'representation': 'pre_logits',
        'shots': (1, 5, 10, 25), 'seeds': (0, 1, 2), 'l2_reg': None,
        'l2_reg_candidates': None, 'holdout_fraction': 0.2,
        'protocol': 'standardized',  # or 'raw', see evaluate/fewshot.py
        'batch_size': None, 'prefix': 'fewshot',
    },
    'reconstruction': {
        'every_steps': None, 'split': None, 'batch_size': None,
        'num_images': 8, 'value_range': (-1.0, 1.0), 'prefix': 'val',
    },
    # See evaluate/segmentation_evaluator.py.
    'segmentation': {
        'every_steps': None, 'split': None, 'batch_size': None,
        'mode': 'whole',  # or 'slide' (mmseg's test modes)
        'crop_size': None, 'stride': None,  # 'slide': None is the train
        # crop and 2/3 of it
        'num_images': 4, 'prefix': 'val',
    },
    'volume_segmentation': {
        'every_steps': None, 'split': None,
        'roi_size': None,  # None: the train crop
        'sw_batch_size': 4, 'overlap': 0.5,
        'blend': 'gaussian',  # or 'constant' (MONAI's)
        'num_images': 2, 'prefix': 'val',
    },
}
EVAL_KINDS = tuple(EVAL_FIELDS)


class Scheduled(NamedTuple):
  name: str
  every_steps: Optional[int]  # None: only at the last step
  evaluator: Any  # has run(variables, step) -> dict


def resolve_entry(name: str, entry) -> dict:
  """One `config.evals` entry over its kind's defaults; bad kinds and
  unknown fields raise, naming the valid ones."""
  entry = dict(entry.to_dict() if hasattr(entry, 'to_dict') else entry)
  kind = entry.pop('kind', None)
  common.check_choice(f'evals.{name}.kind', kind, EVAL_KINDS)
  unknown = sorted(set(entry) - set(EVAL_FIELDS[kind]))
  if unknown:
    raise ValueError(f'evals.{name} (kind {kind!r}): unknown fields '
                     f'{unknown}; valid fields: {sorted(EVAL_FIELDS[kind])}.')
  return {'kind': kind, **EVAL_FIELDS[kind], **entry}


def build_evaluators(config: ml_collections.ConfigDict, fns, mesh,
                     workdir: Optional[str]) -> List[Scheduled]:
  """The evaluators a resolved config asks for (see the module docstring).

  `fns` are the run's `vit_jax.build.EvalFunctions`. Settings that can be
  checked without running the model are checked here, before training.
  """
  from vit_jax.evaluate import classification  # pylint: disable=g-import-not-at-top
  from vit_jax.evaluate import fewshot_evaluator  # pylint: disable=g-import-not-at-top
  from vit_jax.evaluate import reconstruction  # pylint: disable=g-import-not-at-top
  from vit_jax.evaluate import segmentation_evaluator  # pylint: disable=g-import-not-at-top

  eval_batch_size = config.get('eval_batch_size') or config.batch_size
  eval_split = config.data.eval_split
  supervised = config.get('objective', 'supervised') == 'supervised'
  scheduled = []
  if supervised and config.get('eval_every_steps') is not None:
    scheduled.append(Scheduled('val', config.eval_every_steps,
                               classification.ClassificationEvaluator(
                                   fns.predict, fns.example_loss,
                                   config.data, eval_split,
                                   eval_batch_size, mesh)))
  evals = config.get('evals') or {}
  if scheduled and 'val' in evals:
    raise ValueError("evals.val clashes with the classifier evaluator 'val' "
                     '(config.eval_every_steps); rename the entry.')
  for name in sorted(evals):
    entry = resolve_entry(name, evals[name])
    kind = entry['kind']
    batch_size = entry.get('batch_size') or eval_batch_size
    plots_dir = paths.join(workdir, layout.PLOTS) if workdir else None
    if kind == 'classification':
      if not supervised:
        raise ValueError(f'evals.{name}: classification needs a supervised '
                         f'run; objective is {config.objective!r}.')
      evaluator = classification.ClassificationEvaluator(
          fns.predict, fns.example_loss, config.data,
          entry['split'] or eval_split, batch_size, mesh,
          prefix=entry['prefix'] or name)
    elif kind == 'fewshot':
      if not entry['datasets']:
        raise ValueError(f'evals.{name}: few-shot evaluation needs datasets, '
                         f'e.g. {{"digits": {{"name": "digits", "pp": '
                         f'"value_range(-1, 1)"}}}}.')
      evaluator = fewshot_evaluator.FewShotEvaluator(
          fns.representation(entry['representation']), entry['datasets'],
          mesh, shots=entry['shots'],
          seeds=entry['seeds'], l2_reg=entry['l2_reg'],
          l2_reg_candidates=entry['l2_reg_candidates'],
          holdout_fraction=entry['holdout_fraction'],
          protocol=entry['protocol'], batch_size=batch_size,
          data_dir=config.data.get('data_dir'), prefix=entry['prefix'])
    elif kind in ('segmentation', 'volume_segmentation'):
      segment = getattr(fns, 'segment', None)
      if segment is None:
        raise ValueError(f'evals.{name}: {kind} evaluation needs a '
                         f"segmentation run (objective 'segmentation'); "
                         f'objective is {config.objective!r}.')
      if kind == 'segmentation':
        evaluator = segmentation_evaluator.SegmentationEvaluator(
            segment, config.data, entry['split'] or eval_split, batch_size,
            mesh, mode=entry['mode'], crop_size=entry['crop_size'],
            stride=entry['stride'], plots_dir=plots_dir,
            num_images=entry['num_images'], prefix=entry['prefix'])
      else:
        evaluator = segmentation_evaluator.VolumeSegmentationEvaluator(
            segment, config.data, entry['split'] or eval_split, mesh,
            roi_size=entry['roi_size'], sw_batch_size=entry['sw_batch_size'],
            overlap=entry['overlap'], blend=entry['blend'],
            plots_dir=plots_dir, num_images=entry['num_images'],
            prefix=entry['prefix'])
    else:  # 'reconstruction'
      if fns.reconstruction is None:
        raise ValueError(f'evals.{name}: reconstruction evaluation needs an '
                         f'MAE run (objective \'mae\'); objective is '
                         f'{config.objective!r}.')
      evaluator = reconstruction.ReconstructionEvaluator(
          fns.reconstruction, fns.reconstruction_images, config.data, entry['split'] or eval_split, batch_size, mesh,
          plots_dir=plots_dir,
          num_images=entry['num_images'], value_range=entry['value_range'],
          prefix=entry['prefix'])
    scheduled.append(Scheduled(name, entry['every_steps'], evaluator))
  return scheduled


def summary(results) -> str:
  """'name value, ...' of the means (no _std, no counts), for progress lines."""
  return ', '.join(f'{name} {value:.4g}' for name, value in results.items()
                   if not name.endswith(('_std', '/count')))
