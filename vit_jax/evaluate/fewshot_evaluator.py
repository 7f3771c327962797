"""Few-shot linear evaluation of a model, over several datasets.

    evaluator = FewShotEvaluator(features_fn, datasets, mesh,
                                 shots=(1, 5, 10, 25), seeds=(0, 1, 2),
                                 l2_reg=16.0)
    metrics = evaluator.run(variables)  # {'fewshot/<dataset>/<k>shot': ...}

Per evaluation, each dataset's train and test representations are computed
once (sharded over the mesh, `representations.py`) and every (k, seed)
reuses them; each (k, seed) costs one eigendecomposition, shared by all
candidate strengths (`fewshot.py`). The solve runs on the host in float64;
every process computes it on the same, replicated features.

The strength: `l2_reg` alone fixes it; with `l2_reg_candidates` it is
chosen per (k, seed) on held-out k-shot examples for k >= 2, and `l2_reg`
is used for k = 1, where nothing can be held out. With the default
`protocol='standardized'` (big_vision's) each k-shot sample's features are
standardised before the solve, so the strength does not depend on the
scale of the representation; with 'raw' they are used as the model gives
them and the strength is in units of squared features (see `fewshot.py`).

Each dataset's whole train split is encoded, then sampled: for large
datasets name a slice (e.g. 'train[:10%]') holding at least max(shots)
examples of every class. `check()` verifies this from the label counts
alone, without decoding an image, before training starts.
"""

import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

from absl import logging
import jax
import numpy as np

from vit_jax.evaluate import fewshot
from vit_jax.evaluate import representations

# The fields of one dataset entry, with their defaults.
DATASET_FIELDS = {
    'name': None,           # TFDS name, 'digits' or 'image_folder'
    'train_split': 'train',
    'test_split': 'test',
    'pp': None,             # preprocessing spec, without onehot (added)
    'data_dir': None,       # None: the evaluator's data_dir
    'folder': None,         # for 'image_folder'
    # Videos: clips of num_frames frames, frame_stride apart; a video's
    # representation is the mean over its eval_clips x eval_crops views.
    'num_frames': None,
    'frame_stride': None,
    'eval_clips': None,
    'eval_crops': None,
}
_VIDEO_FIELDS = ('num_frames', 'frame_stride', 'eval_clips', 'eval_crops')


def dataset_entry(key: str, entry: Mapping[str, Any],
                  data_dir: Optional[str]) -> Dict[str, Any]:
  """One dataset's settings over DATASET_FIELDS; unknown or missing raise."""
  entry = dict(entry)
  unknown = sorted(set(entry) - set(DATASET_FIELDS))
  if unknown:
    raise ValueError(f'Few-shot dataset {key!r}: unknown fields {unknown}; '
                     f'valid fields: {sorted(DATASET_FIELDS)}.')
  resolved = {**DATASET_FIELDS, **entry}
  for field in ('name', 'pp'):
    if not resolved[field]:
      raise ValueError(f'Few-shot dataset {key!r} needs {field!r} (e.g. '
                       f"name='digits', pp='value_range(-1, 1)').")
  if resolved['data_dir'] is None:
    resolved['data_dir'] = data_dir
  return resolved


class FewShotEvaluator:
  """`run(variables, step=None) -> {'<prefix>/<dataset>/<k>shot': mean,
  ..._std}`.

  Args:
    features_fn: (variables, images) -> features [B, D], jittable: the
      representation to evaluate (`vit_jax.build.eval_functions(run)
      .representation(layer)`; any family, an MAE through its encoder;
      `layer` 'pre_logits', a block or stage such as 'block_8',
      'block_-1_norm' or 'stage_2', an aux key or a module path: see
      `vit_jax.models.representation`).
    datasets: {metric name: {name, train_split, test_split, pp, data_dir,
      folder}}, see DATASET_FIELDS. `pp` must give the model's input size;
      the one-hot labels are added here.
    mesh: the device mesh the representations are computed on.
    shots, seeds: k values and sampling seeds; metrics are mean and
      standard deviation over seeds.
    l2_reg, l2_reg_candidates, holdout_fraction: the ridge strength, see
      the module docstring.
    protocol: how features enter the solve, one of `fewshot.PROTOCOLS`:
      'standardized' (big_vision's, the default) or 'raw'.
    batch_size: global batch size of the representation pass.
    data_dir: default TFDS data directory of the datasets.
    prefix: metric group.
    iterator_fn, num_classes_fn, label_counts_fn: `data.eval_iterator` /
      `data.num_classes` / `data.label_counts` by default (tests pass their
      own); `label_counts_fn(data_config, split)` gives the int examples per
      class, [num_classes], and is only used by `check()`.
  """

  def __init__(self, features_fn: Callable,
               datasets: Mapping[str, Mapping[str, Any]], mesh, *,
               shots: Sequence[int] = fewshot.DEFAULT_SHOTS,
               seeds: Sequence[int] = fewshot.DEFAULT_SEEDS,
               l2_reg: Optional[float] = None,
               l2_reg_candidates: Optional[Sequence[float]] = None,
               holdout_fraction: float = 0.2,
               protocol: str = fewshot.DEFAULT_PROTOCOL,
               batch_size: int = 256, data_dir: Optional[str] = None,
               prefix: str = 'fewshot',
               iterator_fn: Callable[..., Any] = None,
               num_classes_fn: Callable[[Any], int] = None,
               label_counts_fn: Callable[[Any, str], np.ndarray] = None):
    if not datasets:
      raise ValueError('FewShotEvaluator needs at least one dataset.')
    self._datasets = {fewshot._check_dataset(key): dataset_entry(  # pylint: disable=protected-access
        key, entry, data_dir) for key, entry in datasets.items()}
    self._shots = [int(k) for k in shots]
    self._seeds = [int(seed) for seed in seeds]
    if not self._shots or min(self._shots) < 1:
      raise ValueError(f'shots must be positive integers, got {shots!r}.')
    if not self._seeds:
      raise ValueError('seeds must name at least one seed, got [].')
    if l2_reg is None and not l2_reg_candidates:
      raise ValueError('Set l2_reg (a fixed strength) or l2_reg_candidates '
                       '(chosen on held-out examples); neither is set.')
    if l2_reg is None and min(self._shots) < 2:
      raise ValueError(f'shots {list(shots)} include 1, where no strength '
                       f'can be chosen on held-out examples: set l2_reg for '
                       f'it too.')
    self._l2_reg = l2_reg
    self._l2_reg_candidates = (list(l2_reg_candidates)
                               if l2_reg_candidates else None)
    self._holdout_fraction = holdout_fraction
    self._protocol = fewshot._check_protocol(protocol)  # pylint: disable=protected-access
    self._batch_size = batch_size
    self._mesh = mesh
    self._prefix = prefix
    if iterator_fn is None or num_classes_fn is None:
      from vit_jax import data  # pylint: disable=g-import-not-at-top
      iterator_fn = iterator_fn or data.eval_iterator
      num_classes_fn = num_classes_fn or data.num_classes
    self._iterator_fn = iterator_fn
    self._num_classes_fn = num_classes_fn
    self._label_counts_fn = label_counts_fn
    self._encoder = representations.make_encoder(features_fn, mesh)

  def _source_config(self, entry) -> Dict[str, Any]:
    config = {'name': entry['name'], 'data_dir': entry['data_dir'],
              'folder': entry['folder']}
    config.update({field: entry[field] for field in _VIDEO_FIELDS
                   if entry.get(field) is not None})
    return config

  def _data_config(self, entry) -> Dict[str, Any]:
    config = self._source_config(entry)
    num_classes = self._num_classes_fn(config)
    pp = entry['pp']
    if 'onehot(' not in pp:
      pp = f'{pp}|onehot({num_classes})'
    return {**config, 'pp_eval': pp}, num_classes

  def _encode(self, variables, data_config, split):
    batches = self._iterator_fn(data_config, split, self._batch_size,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    return representations.compute_representations(
        self._encoder, variables, batches, self._mesh)

  def check(self) -> None:
    """Raises ValueError unless every train split can give max(shots)-shot.

    Runs before training starts, from label counts only (no image is
    decoded). Every class of a dataset's train split needs max(shots)
    examples: `fewshot.sample_k_shot` draws exactly k per class, and a class
    short of examples stops the evaluation. Strength selection with
    `l2_reg_candidates` needs nothing more from the split: `select_l2_reg`
    holds examples out of the k-shot sample itself, at least one per class
    while keeping one, which k >= 2 allows (the constructor already requires
    `l2_reg` for k = 1).

    Raises:
      ValueError: naming the dataset, its split, the classes short of
        examples (the first few) with their counts, and the largest k that
        every class can supply.
    """
    label_counts_fn = self._label_counts_fn
    if label_counts_fn is None:
      from vit_jax import data  # pylint: disable=g-import-not-at-top
      label_counts_fn = data.label_counts
    needed = max(self._shots)
    for key, entry in self._datasets.items():
      config = self._source_config(entry)
      split = entry['train_split']
      counts = np.asarray(label_counts_fn(config, split))
      num_classes = self._num_classes_fn(config)
      if counts.shape != (num_classes,):
        raise ValueError(f'Few-shot dataset {key!r}: label counts of split '
                         f'{split!r} have shape {counts.shape}, but '
                         f'{entry["name"]!r} has {num_classes} classes.')
      short = np.flatnonzero(counts < needed)
      if not short.size:
        continue
      shown = ', '.join(f'class {c}: {counts[c]}' for c in short[:5])
      more = f', and {short.size - 5} more' if short.size > 5 else ''
      largest = int(counts.min())
      if largest >= 1:
        advice = (f'the largest k every class can supply is {largest}; '
                  f'lower shots {self._shots} to it or use a larger split')
      else:
        advice = ('no k works until every class has an example; use a '
                  'larger split')
      raise ValueError(
          f'Few-shot dataset {key!r} ({entry["name"]!r}, split {split!r}): '
          f'{needed}-shot evaluation needs {needed} examples of every class, '
          f'but {short.size} of {num_classes} classes have fewer ({shown}'
          f'{more}); {advice}.')

  def metric_names(self) -> Tuple[str, ...]:
    """The names `run` returns (how a resumed run finds its rows)."""
    return tuple(f'{self._prefix}/{key}/{k}shot{suffix}'
                 for key in self._datasets for k in self._shots
                 for suffix in ('', '_std'))

  def run(self, variables, step: Optional[int] = None) -> Dict[str, float]:
    del step
    metrics = {}
    for key, entry in self._datasets.items():
      start = time.monotonic()
      data_config, num_classes = self._data_config(entry)
      x_train, y_train = self._encode(variables, data_config,
                                      entry['train_split'])
      x_test, y_test = self._encode(variables, data_config, entry['test_split'])
      encoded = time.monotonic()
      for k in self._shots:
        select = self._l2_reg_candidates is not None and k >= 2
        results = fewshot.fewshot_metrics(
            key, x_train, y_train, x_test, y_test, num_classes,
            l2_reg=None if select else self._l2_reg,
            l2_reg_candidates=self._l2_reg_candidates if select else None,
            shots=[k], seeds=self._seeds,
            holdout_fraction=self._holdout_fraction, protocol=self._protocol)
        metrics.update({f'{self._prefix}/{name.split("/", 1)[1]}': value
                        for name, value in results.items()})
      logging.info('Few-shot %s: representations of %d + %d examples in '
                   '%.1fs, solves in %.1fs.', key, len(y_train), len(y_test),
                   encoded - start, time.monotonic() - encoded)
    return metrics

