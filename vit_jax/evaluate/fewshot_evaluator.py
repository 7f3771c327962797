"""Few-shot linear evaluation of a model, over several datasets.

    evaluator = FewShotEvaluator(features_fn, datasets, mesh, shots=(1, 5, 10, 25),
                                 seeds=(0, 1, 2), l2_reg=1.0)
    metrics = evaluator.run(params)  # {'fewshot/<dataset>/<k>shot': ...}

Per evaluation, each dataset's train and test representations are computed
once (sharded over the mesh, `representations.py`) and every (k, seed)
reuses them; each (k, seed) costs one eigendecomposition, shared by all
candidate strengths (`fewshot.py`). The solve runs on the host in float64;
every process computes it on the same, replicated features.

The strength: `l2_reg` alone fixes it; with `l2_reg_candidates` it is
chosen per (k, seed) on held-out k-shot examples for k >= 2, and `l2_reg`
is used for k = 1, where nothing can be held out. Features are used as
the model gives them, so the strength is in units of squared features.

Each dataset's whole train split is encoded, then sampled: for large
datasets name a slice (e.g. 'train[:10%]') holding at least max(shots)
examples of every class.
"""

import time
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from absl import logging
import jax

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
}


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
  """`run(params, step=None) -> {'<prefix>/<dataset>/<k>shot': mean, ..._std}`.

  Args:
    features_fn: (params, images) -> features [B, D], jittable: the
      representation to evaluate (`vit_jax.build.eval_functions(run)
      .representation(layer)`; any family, an MAE through its encoder).
    datasets: {metric name: {name, train_split, test_split, pp, data_dir,
      folder}}, see DATASET_FIELDS. `pp` must give the model's input size;
      the one-hot labels are added here.
    mesh: the device mesh the representations are computed on.
    shots, seeds: k values and sampling seeds; metrics are mean and
      standard deviation over seeds.
    l2_reg, l2_reg_candidates, holdout_fraction: the ridge strength, see
      the module docstring.
    batch_size: global batch size of the representation pass.
    data_dir: default TFDS data directory of the datasets.
    prefix: metric group.
    iterator_fn, num_classes_fn: `data.eval_iterator` / `data.num_classes`
      by default (tests pass their own).
  """

  def __init__(self, features_fn: Callable,
               datasets: Mapping[str, Mapping[str, Any]], mesh, *,
               shots: Sequence[int] = fewshot.DEFAULT_SHOTS,
               seeds: Sequence[int] = fewshot.DEFAULT_SEEDS,
               l2_reg: Optional[float] = None,
               l2_reg_candidates: Optional[Sequence[float]] = None,
               holdout_fraction: float = 0.2, batch_size: int = 256,
               data_dir: Optional[str] = None, prefix: str = 'fewshot',
               iterator_fn: Callable[..., Any] = None,
               num_classes_fn: Callable[[Any], int] = None):
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
    self._batch_size = batch_size
    self._mesh = mesh
    self._prefix = prefix
    if iterator_fn is None or num_classes_fn is None:
      from vit_jax import data  # pylint: disable=g-import-not-at-top
      iterator_fn = iterator_fn or data.eval_iterator
      num_classes_fn = num_classes_fn or data.num_classes
    self._iterator_fn = iterator_fn
    self._num_classes_fn = num_classes_fn
    self._encoder = representations.make_encoder(features_fn, mesh)

  def _data_config(self, entry) -> Dict[str, Any]:
    config = {'name': entry['name'], 'data_dir': entry['data_dir'],
              'folder': entry['folder']}
    num_classes = self._num_classes_fn(config)
    pp = entry['pp']
    if 'onehot(' not in pp:
      pp = f'{pp}|onehot({num_classes})'
    return {**config, 'pp_eval': pp}, num_classes

  def _encode(self, params, data_config, split):
    batches = self._iterator_fn(data_config, split, self._batch_size,
                                process_index=jax.process_index(),
                                process_count=jax.process_count())
    return representations.compute_representations(
        self._encoder, params, batches, self._mesh)

  def run(self, params, step: Optional[int] = None) -> Dict[str, float]:
    del step
    metrics = {}
    for key, entry in self._datasets.items():
      start = time.monotonic()
      data_config, num_classes = self._data_config(entry)
      x_train, y_train = self._encode(params, data_config,
                                      entry['train_split'])
      x_test, y_test = self._encode(params, data_config, entry['test_split'])
      encoded = time.monotonic()
      for k in self._shots:
        select = self._l2_reg_candidates is not None and k >= 2
        results = fewshot.fewshot_metrics(
            key, x_train, y_train, x_test, y_test, num_classes,
            l2_reg=None if select else self._l2_reg,
            l2_reg_candidates=self._l2_reg_candidates if select else None,
            shots=[k], seeds=self._seeds,
            holdout_fraction=self._holdout_fraction)
        metrics.update({f'{self._prefix}/{name.split("/", 1)[1]}': value
                        for name, value in results.items()})
      logging.info('Few-shot %s: representations of %d + %d examples in '
                   '%.1fs, solves in %.1fs.', key, len(y_train), len(y_test),
                   encoded - start, time.monotonic() - encoded)
    return metrics

