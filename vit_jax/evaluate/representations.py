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

  Videos tested by several views (batches with a 'video' index per row,
  `data.eval_iterator` of a video dataset) give one row per video: the
  mean of its views' features, in the order the videos first appear.
  """
  num_processes = jax.process_count()
  # Per process, its real rows in its reading order.
  columns = None
  for local_batch in batches:
    batch = sharding.global_batch(local_batch, mesh)
    outputs = encode(variables, batch)  # features, ids, mask[, video]
    if columns is None:
      columns = [[[] for _ in range(num_processes)] for _ in outputs]
    # The global batch is the processes' parts in process order.
    parts = [np.split(np.asarray(x), num_processes) for x in outputs]
    for process in range(num_processes):
      keep = parts[2][process] > 0
      for column, part in zip(columns, parts):
        column[process].append(part[process][keep])
  if columns is None:
    raise ValueError('No batches: the split is empty.')
  features, label_ids, _, *videos = (
      np.concatenate([np.concatenate(rows) for rows in column])
      for column in columns)
  label_ids = label_ids.astype(np.int64)
  if videos:
    return _video_means(features, label_ids, videos[0])
  return features, label_ids


def _video_means(features: np.ndarray, label_ids: np.ndarray,
                 videos: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """Each video's views' mean feature and its class, in first-seen order."""
  order, first, inverse = np.unique(videos, return_index=True,
                                    return_inverse=True)
  del order
  sums = np.zeros((len(first), features.shape[-1]), np.float64)
  np.add.at(sums, inverse, features)
  counts = np.bincount(inverse, minlength=len(first))[:, None]
  means = (sums / counts).astype(features.dtype)
  by_appearance = np.argsort(first, kind='stable')
  return means[by_appearance], label_ids[first][by_appearance]


def make_encoder(features_fn: representation.FeaturesFn, mesh) -> Callable:
  """jit of (variables, batch) -> (features, class ids, mask), replicated
  out."""
  def run(variables, batch):
    outputs = (features_fn(variables, batch['image']),
               jnp.argmax(batch['labels'], axis=-1), batch['mask'])
    if 'video' in batch:  # views of videos: averaged per video on the host
      outputs += (batch['video'],)
    return outputs
  return jax.jit(run, out_shardings=sharding.replicated(mesh))
