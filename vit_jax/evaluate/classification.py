"""Top-1 / top-5 accuracy and loss over a whole split, exactly once.

The split is read by `vit_jax.data.eval_iterator`, which pads the last
batch and marks real examples with `mask`; padded rows count for nothing,
so no example is dropped or counted twice whatever the batch size. Each
batch is sharded over the mesh; sums stay on the devices until the end.
"""

from typing import Any, Callable, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import losses
from vit_jax import sharding


def batch_sums(logits: jax.Array, labels: jax.Array, mask: jax.Array,
               example_loss: Callable[..., jax.Array] = losses.softmax_xent
               ) -> Dict[str, jax.Array]:
  """Masked sums over one batch: correct top-1 / top-5, loss, count.

  logits [B, K], labels one-hot (or multi-hot) [B, K], mask [B];
  example_loss(logits, labels) -> [B] (the run's training loss).
  """
  loss = example_loss(logits, labels)  # [B]
  label_ids = jnp.argmax(labels, axis=-1)  # [B]
  top1 = jnp.argmax(logits, axis=-1) == label_ids
  k = min(5, logits.shape[-1])
  _, topk_ids = jax.lax.top_k(logits, k)  # [B, k]
  top5 = (topk_ids == label_ids[:, None]).any(axis=-1)
  return {'correct': (top1 * mask).sum(), 'correct_top5': (top5 * mask).sum(),
          'loss': (loss * mask).sum(), 'count': mask.sum()}


class ClassificationEvaluator:
  """`run(variables, step=None) -> {'val/accuracy', 'val/top5', 'val/loss',
  'val/count'}`; `prefix` names the metric group ('val' by default).

  predict_fn(variables, images) -> logits and example_loss(logits, labels) ->
  [B] come from `vit_jax.build.eval_functions`; `val/loss` is the mean of
  the latter, the loss the run trains (softmax or sigmoid cross-entropy).
  """

  def __init__(self, predict_fn: Callable, example_loss: Callable,
               data_config, split: str, batch_size: int,
               mesh, prefix: str = 'val',
               iterator_fn: Callable[..., Any] = None):
    if iterator_fn is None:
      from vit_jax import data  # pylint: disable=g-import-not-at-top
      iterator_fn = data.eval_iterator
    self._iterator_fn = iterator_fn
    self._data_config = data_config
    self._split = split
    self._batch_size = batch_size
    self._mesh = mesh
    self._prefix = prefix

    def eval_step(variables, batch):
      logits = predict_fn(variables, batch['image'])
      return batch_sums(logits, batch['labels'], batch['mask'], example_loss)

    self._eval_step = jax.jit(eval_step,
                              out_shardings=sharding.replicated(mesh))

  def metric_names(self) -> Tuple[str, ...]:
    """The names `run` returns (how a resumed run finds its rows)."""
    return tuple(f'{self._prefix}/{name}'
                 for name in ('accuracy', 'top5', 'loss', 'count'))

  def run(self, variables, step: Optional[int] = None) -> Dict[str, float]:
    del step
    totals = None
    batches = self._iterator_fn(
        self._data_config, self._split, self._batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count())
    for local_batch in batches:
      batch = sharding.global_batch(local_batch, self._mesh)
      sums = self._eval_step(variables, batch)
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
      raise ValueError(f'Split {self._split!r} of {self._data_config.name!r} '
                       f'is empty.')
    totals = jax.tree.map(lambda x: float(np.asarray(x)), totals)
    count = max(totals['count'], 1.0)
    return {f'{self._prefix}/accuracy': totals['correct'] / count,
            f'{self._prefix}/top5': totals['correct_top5'] / count,
            f'{self._prefix}/loss': totals['loss'] / count,
            f'{self._prefix}/count': totals['count']}
