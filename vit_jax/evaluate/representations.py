"""Frozen representations of a split, for linear and few-shot evaluation.

    encode = make_encoder(representation_fn(model, 'pre_logits'), mesh)
    features, label_ids = compute_representations(
        encode, variables, batches, mesh)   # numpy [n, D], [n]

`representation_fn` (which layer: 'pre_logits', 'block_8', 'stage_2_norm',
...; how it is pooled; an MAE through its encoder) is
`vit_jax.models.representation`'s; `vit_jax.build` hands it to evaluators
as `eval_functions(run).representation(layer)`.
"""

from typing import Any, Callable, Iterable, Mapping, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import sharding
from vit_jax.models import representation


def compute_representations(
    encode: Callable, variables, batches: Iterable[Mapping[str, Any]],
    mesh) -> Tuple[np.ndarray, np.ndarray]:
  """Features and class ids of every real example of `batches`, in order.

  `batches` are this process's parts of padded global batches with 'image',
  'labels' (one-hot) and 'mask' (`data.eval_iterator`: process i reads the
  i-th contiguous share of the split). Each batch is sharded over `mesh`;
  the features come back replicated, so every process returns all of them,
  in the split's own order whatever the number of processes (few-shot
  samples, drawn by position, then do not depend on it): float32 [n, D]
  and int64 [n].
  `encode` is `make_encoder(features_fn, mesh)`, built once and reused.
  """
  num_processes = jax.process_count()
  # Per process, its real rows in its reading order.
  features = [[] for _ in range(num_processes)]
  label_ids = [[] for _ in range(num_processes)]
  for local_batch in batches:
    batch = sharding.global_batch(local_batch, mesh)
    batch_features, batch_ids, mask = encode(variables, batch)
    # The global batch is the processes' parts in process order.
    parts = zip(*(np.split(np.asarray(x), num_processes)
                  for x in (batch_features, batch_ids, mask)))
    for process, (part_features, part_ids, part_mask) in enumerate(parts):
      keep = part_mask > 0
      features[process].append(part_features[keep])
      label_ids[process].append(part_ids[keep])
  if not features[0]:
    raise ValueError('No batches: the split is empty.')
  return (np.concatenate([np.concatenate(f) for f in features]),
          np.concatenate([np.concatenate(i) for i in label_ids]
                         ).astype(np.int64))


def make_encoder(features_fn: representation.FeaturesFn, mesh) -> Callable:
  """jit of (variables, batch) -> (features, class ids, mask), replicated
  out."""
  def run(variables, batch):
    return (features_fn(variables, batch['image']),
            jnp.argmax(batch['labels'], axis=-1), batch['mask'])
  return jax.jit(run, out_shardings=sharding.replicated(mesh))
