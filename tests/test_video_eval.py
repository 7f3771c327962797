"""Multi-view video evaluation: each video's views' softmax scores are
averaged before top-1 / top-5 (TimeSformer's 1 x 3, MViTv2's 5 x 1 views),
and few-shot representations are averaged over views.

The batches here are made by hand in the layout `data.eval_iterator` gives
for videos (a row per view, with 'video' and 'view' indices), so the
expected metrics are computed independently in NumPy."""

import jax.numpy as jnp
import numpy as np
import pytest

from vit_jax import sharding
from vit_jax.evaluate import classification
from vit_jax.evaluate import representations

NUM_CLASSES = 6
VIEWS = 3


def _identity_loss(logits, labels):
  del labels
  return jnp.zeros(logits.shape[:1])


def _video_batches(logits_per_row, labels, videos, batch_size):
  """Eval batches of views: the 'image' carries the row's logits in its
  first pixel, so the fake model below returns them."""
  batches = []
  for start in range(0, len(labels), batch_size):
    rows = slice(start, start + batch_size)
    count = len(labels[rows])
    batch = {'image': np.zeros((batch_size, 2, 1, 1, NUM_CLASSES),
                               np.float32),
             'labels': np.zeros((batch_size, NUM_CLASSES), np.float32),
             'mask': np.zeros((batch_size,), np.float32),
             'video': np.zeros((batch_size,), np.int32),
             'view': np.zeros((batch_size,), np.int32)}
    batch['image'][:count, 0, 0, 0] = logits_per_row[rows]
    batch['labels'][np.arange(count), labels[rows]] = 1
    batch['mask'][:count] = 1
    batch['video'][:count] = videos[rows]
    batch['view'][:count] = np.arange(start, start + count) % VIEWS
    batches.append(batch)
  return batches


def _softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def test_video_accuracy_averages_each_videos_views():
  rng = np.random.RandomState(0)
  num_videos = 7
  videos = np.repeat(np.arange(num_videos) + 100, VIEWS)  # global indices
  video_labels = rng.randint(0, NUM_CLASSES, num_videos)
  labels = np.repeat(video_labels, VIEWS)
  logits = rng.normal(size=(len(labels), NUM_CLASSES)).astype(np.float32) * 3
  # Video 0's views disagree: one confident wrong view, two mildly right
  # ones. Averaged softmax scores call it right (0.397 vs 0.386); averaged
  # logits would call it wrong (8/3 vs 4/3): the test tells them apart.
  logits[0:3] = 0
  logits[0, (video_labels[0] + 1) % NUM_CLASSES] = 8.0
  logits[1, video_labels[0]] = 2.0
  logits[2, video_labels[0]] = 2.0
  batches = _video_batches(logits, labels, videos, batch_size=8)

  mesh = sharding.make_mesh(-1, 1)
  evaluator = classification.ClassificationEvaluator(
      lambda variables, images: images[:, 0, 0, 0], _identity_loss,
      {'name': 'fake', 'num_frames': 2}, 'test', 8, mesh,
      iterator_fn=lambda *args, **kwargs: iter(batches))
  results = evaluator.run(None)

  probs = _softmax(logits.astype(np.float64))
  scores = probs.reshape(num_videos, VIEWS, NUM_CLASSES).mean(1)
  top1 = scores.argmax(-1) == video_labels
  top5 = (np.argsort(-scores, -1)[:, :5] == video_labels[:, None]).any(-1)
  assert results['val/count'] == num_videos
  np.testing.assert_allclose(results['val/accuracy'], top1.mean())
  np.testing.assert_allclose(results['val/top5'], top5.mean())
  view_top1 = logits.argmax(-1) == labels
  np.testing.assert_allclose(results['val/view_accuracy'], view_top1.mean())
  assert top1[0]
  assert logits[0:3].mean(0).argmax() != video_labels[0]
  assert tuple(results) == evaluator.metric_names()


def test_video_evaluator_refuses_videos_with_missing_views():
  videos = np.array([0, 0, 0, 1, 1], np.int32)  # video 1 lacks a view
  labels = np.array([1, 1, 1, 2, 2])
  logits = np.zeros((5, NUM_CLASSES), np.float32)
  batches = _video_batches(logits, labels, videos, batch_size=8)
  mesh = sharding.make_mesh(-1, 1)
  evaluator = classification.ClassificationEvaluator(
      lambda variables, images: images[:, 0, 0, 0], _identity_loss,
      {'name': 'fake', 'num_frames': 2}, 'test', 8, mesh,
      iterator_fn=lambda *args, **kwargs: iter(batches))
  with pytest.raises(ValueError, match=r'different numbers of views \[2, 3\]'):
    evaluator.run(None)


def test_video_scores_refuse_views_with_different_labels():
  scores = classification.VideoScores()
  with pytest.raises(ValueError, match='Views of video 4 have different'):
    scores.add(np.ones((2, 3)) / 3, np.array([0, 1]), np.array([4, 4]),
               np.ones(2))


def test_fewshot_representations_average_each_videos_views():
  """One row per video, the mean of its views' features, in the order the
  videos come; padding rows ignored."""
  rng = np.random.RandomState(1)
  num_videos, dim = 5, 4
  videos = np.repeat(np.array([30, 10, 40, 20, 0]), VIEWS)
  video_labels = np.array([1, 2, 3, 4, 5])
  labels = np.repeat(video_labels, VIEWS)
  features = rng.normal(size=(len(labels), NUM_CLASSES)).astype(np.float32)
  batches = _video_batches(features, labels, videos, batch_size=8)
  mesh = sharding.make_mesh(-1, 1)
  encode = representations.make_encoder(
      lambda variables, images: images[:, 0, 0, 0, :dim], mesh)
  got, ids = representations.compute_representations(encode, None, batches,
                                                      mesh)
  expected = features[:, :dim].reshape(num_videos, VIEWS, dim).mean(1)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  np.testing.assert_array_equal(ids, video_labels)
