"""Classification losses, per example: the training objective and the
evaluators' `val/loss` use the same functions (`config.loss`); and the
dense losses of segmentation (integer label maps, an ignore index)."""

from typing import Callable, Dict

import jax
import jax.numpy as jnp
import numpy as np
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


# Dense (per-pixel / per-voxel) losses. Their labels are integer class maps,
# not one-hot: a 512^2 ADE20K mask one-hot would be 150x larger than it.


def check_labels(labels, num_classes: int, ignore_index: int = 255) -> None:
  """Raises ValueError if a label is outside [0, num_classes) and not
  ignore_index. Host-side (NumPy): run it where the masks are read, since
  the jitted losses below cannot raise on values."""
  labels = np.asarray(labels)
  bad = (labels < 0) | (labels >= num_classes)
  if ignore_index is not None:
    bad &= labels != ignore_index
  if bad.any():
    values = np.unique(labels[bad])
    shown = ', '.join(str(v) for v in values[:10])
    more = f' (and {values.size - 10} more)' if values.size > 10 else ''
    raise ValueError(
        f'labels {shown}{more} are outside the classes [0, {num_classes})'
        f' and are not the ignore index {ignore_index}')


def _label_log_probs(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """log p(label) per pixel; labels must already be in [0, K)."""
  if logits.shape[:-1] != labels.shape:
    raise ValueError(f'logits {logits.shape} must be labels {labels.shape}'
                     ' plus a class axis')
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  return jnp.take_along_axis(
      log_probs, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def pixel_softmax_xent(logits: jax.Array, labels: jax.Array,
                       ignore_index: int = 255) -> jax.Array:
  """Mean softmax cross-entropy over the pixels whose label is not
  ignore_index: logits [B, ..., K], labels int [B, ...]; 0 when every pixel
  is ignored (so an all-ignored crop gives no gradient rather than NaN).

  As torch's CrossEntropyLoss(ignore_index=...) with reduction='mean'.
  Under jit a label outside [0, K) cannot raise: it is clamped to a class
  by the gather, silently. Validate masks on the host with check_labels.
  """
  valid = labels != ignore_index
  log_p = _label_log_probs(logits, jnp.where(valid, labels, 0))
  count = jnp.sum(valid)
  return -jnp.sum(jnp.where(valid, log_p, 0.0)) / jnp.maximum(count, 1)


def dice_ce_loss(logits: jax.Array, labels: jax.Array,
                 smooth: float = 1e-5, lambda_dice: float = 1.0,
                 lambda_ce: float = 1.0) -> jax.Array:
  """Soft Dice + cross-entropy for volumes: logits [B, D, H, W, K] (any
  number of spatial axes), labels int [B, D, H, W] in [0, K).

  MONAI 1.6.1's DiceCELoss(to_onehot_y=True, softmax=True) with its
  defaults: the Dice term is per volume and per class, background
  included, 1 - (2 sum(p t) + smooth) / (sum(p) + sum(t) + smooth), averaged
  over volumes and classes; the cross-entropy is the mean over all voxels.
  No ignore index (MONAI's default): validate labels with check_labels.
  """
  num_classes = logits.shape[-1]
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
  probs = jnp.exp(log_p)
  onehot = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  spatial = tuple(range(1, logits.ndim - 1))
  overlap = jnp.sum(probs * onehot, axis=spatial)
  total = jnp.sum(probs, axis=spatial) + jnp.sum(onehot, axis=spatial)
  dice = jnp.mean(1.0 - (2.0 * overlap + smooth) / (total + smooth))
  ce = -jnp.mean(_label_log_probs(logits, labels))
  return lambda_dice * dice + lambda_ce * ce


def dense_loss(name: str) -> Callable[[jax.Array, jax.Array], jax.Array]:
  """The objective 'segmentation''s loss `config.loss` as (logits [B, ..., K]
  at the label maps' resolution, labels int [B, ...]) -> scalar:
  'softmax_xent' per pixel with ignore index 255 (`pixel_softmax_xent`),
  'dice_ce' (`dice_ce_loss`, volumes; no ignore index)."""
  if name == 'softmax_xent':
    return pixel_softmax_xent
  if name == 'dice_ce':
    return dice_ce_loss
  raise ValueError(f'Unknown segmentation loss {name!r}; valid choices: '
                   f"['softmax_xent', 'dice_ce'].")
