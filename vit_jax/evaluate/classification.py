"""Top-1 / top-5 accuracy and loss over a whole split, exactly once.

The split is read by `vit_jax.data.eval_iterator`, which pads the last
batch and marks real examples with `mask`; padded rows count for nothing,
so no example is dropped or counted twice whatever the batch size. Each
batch is sharded over the mesh; sums stay on the devices until the end.

Videos (a data config with `num_frames`) are tested by views: each eval
row is one view (a temporal clip x a spatial crop, `data_config.eval_clips`
x `eval_crops`) of the video its 'video' index names. A video's class
scores are its views' softmax probabilities averaged, as TimeSformer (1
clip x 3 crops) and MViTv2 (5 clips x 1 crop) report Kinetics; accuracy
and top-5 count videos. `val/loss` stays the mean training loss per view,
and `val/view_accuracy` is the top-1 of single views.
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


class VideoScores:
  """Softmax scores summed per video over its views (host side).

  Rows arrive replicated from the device (every process sees every row of
  the global batch), with the video's global index, so every process holds
  every video's sum and computes the same metrics.
  """

  def __init__(self):
    self._sums = {}  # video index -> summed probabilities [K]
    self._views = {}  # video index -> views seen
    self._labels = {}  # video index -> class id

  def add(self, probs: np.ndarray, label_ids: np.ndarray,
          videos: np.ndarray, mask: np.ndarray) -> None:
    for row in np.flatnonzero(mask > 0):
      video = int(videos[row])
      label = int(label_ids[row])
      if self._labels.setdefault(video, label) != label:
        raise ValueError(f'Views of video {video} have different labels '
                         f'({self._labels[video]} and {label}).')
      self._sums[video] = self._sums.get(video, 0.0) + probs[row]
      self._views[video] = self._views.get(video, 0) + 1

  def metrics(self) -> Dict[str, float]:
    """Top-1 / top-5 of the videos' averaged scores, and their count."""
    if not self._sums:
      return {'accuracy': 0.0, 'top5': 0.0, 'count': 0.0}
    videos = sorted(self._sums)
    views = {self._views[v] for v in videos}
    if len(views) != 1:
      raise ValueError(f'Videos were scored over different numbers of '
                       f'views {sorted(views)}; every video needs all its '
                       f'views.')
    scores = np.stack([self._sums[v] for v in videos])  # [V, K]
    labels = np.array([self._labels[v] for v in videos])
    top1 = scores.argmax(-1) == labels
    k = min(5, scores.shape[-1])
    topk = np.argsort(-scores, axis=-1, kind='stable')[:, :k]
    top5 = (topk == labels[:, None]).any(-1)
    return {'accuracy': float(top1.mean()), 'top5': float(top5.mean()),
            'count': float(len(videos))}


class ClassificationEvaluator:
  """`run(variables, step=None) -> {'val/accuracy', 'val/top5', 'val/loss',
  'val/count'}`; `prefix` names the metric group ('val' by default).

  predict_fn(variables, images) -> logits and example_loss(logits, labels) ->
  [B] come from `vit_jax.build.eval_functions`; `val/loss` is the mean of
  the latter, the loss the run trains (softmax or sigmoid cross-entropy).
  For videos (`data_config.num_frames` set) accuracy, top-5 and count are
  of videos, their views' scores averaged, and 'val/view_accuracy' is
  added (see the module docstring).
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
    self._video = data_config.get('num_frames') is not None

    def eval_step(variables, batch):
      logits = predict_fn(variables, batch['image'])
      sums = batch_sums(logits, batch['labels'], batch['mask'], example_loss)
      if self._video:  # the rows, for averaging each video's views
        sums['rows'] = (jax.nn.softmax(logits.astype(jnp.float32)),
                        jnp.argmax(batch['labels'], axis=-1), batch['video'],
                        batch['mask'])
      return sums

    self._eval_step = jax.jit(eval_step,
                              out_shardings=sharding.replicated(mesh))

  def metric_names(self) -> Tuple[str, ...]:
    """The names `run` returns (how a resumed run finds its rows)."""
    names = ('accuracy', 'top5', 'loss', 'count')
    if self._video:
      names += ('view_accuracy',)
    return tuple(f'{self._prefix}/{name}' for name in names)

  def run(self, variables, step: Optional[int] = None) -> Dict[str, float]:
    del step
    totals = None
    videos = VideoScores()
    batches = self._iterator_fn(
        self._data_config, self._split, self._batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count())
    for local_batch in batches:
      batch = sharding.global_batch(local_batch, self._mesh)
      sums = self._eval_step(variables, batch)
      if self._video:
        videos.add(*(np.asarray(x) for x in sums.pop('rows')))
      totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
      raise ValueError(f'Split {self._split!r} of {self._data_config.name!r} '
                       f'is empty.')
    totals = jax.tree.map(lambda x: float(np.asarray(x)), totals)
    count = max(totals['count'], 1.0)
    results = {'accuracy': totals['correct'] / count,
               'top5': totals['correct_top5'] / count,
               'loss': totals['loss'] / count,
               'count': totals['count']}
    if self._video:
      results['view_accuracy'] = results['accuracy']
      results.update(videos.metrics())
    return {f'{self._prefix}/{name}': value
            for name, value in results.items()}
