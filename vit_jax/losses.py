"""Classification losses, per example: the training objective and the
evaluators' `val/loss` use the same functions (`config.loss`)."""

from typing import Callable, Dict

import jax
import jax.numpy as jnp
import optax


def softmax_xent(logits: jax.Array, labels: jax.Array,
                 label_smoothing: float = 0.0) -> jax.Array:
  """Softmax cross-entropy per example [B] against one-hot labels [B, K].

  Multi-hot labels are normalised to sum to one.
  """
  num_classes = labels.shape[-1]
  labels = labels / jnp.maximum(labels.sum(-1, keepdims=True), 1e-9)
  if label_smoothing:
    labels = labels * (1 - label_smoothing) + label_smoothing / num_classes
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.sum(labels * log_probs, axis=-1)


def sigmoid_xent(logits: jax.Array, labels: jax.Array,
                 label_smoothing: float = 0.0) -> jax.Array:
  """Per-class sigmoid cross-entropy summed over classes, per example [B].

  The loss of the Scaling ViT / big_vision ImageNet-21k recipes, where
  labels can be multi-hot.
  """
  if label_smoothing:
    labels = labels * (1 - label_smoothing) + label_smoothing / 2
  per_class = optax.sigmoid_binary_cross_entropy(
      logits.astype(jnp.float32), labels)
  return jnp.sum(per_class, axis=-1)


LOSSES: Dict[str, Callable[..., jax.Array]] = {
    'softmax_xent': softmax_xent,
    'sigmoid_xent': sigmoid_xent,
}
