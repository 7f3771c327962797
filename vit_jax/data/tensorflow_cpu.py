"""TensorFlow for the input pipeline, hidden from accelerators.

The input pipeline is the only user of TensorFlow in vit_jax (DESIGN.md:
models, optimizers and steps never import it). TensorFlow must not claim GPU
memory that JAX needs, so every data module imports it from here, which hides
all GPUs from TensorFlow before any op runs.
"""

import logging

import tensorflow as tf

try:
  tf.config.set_visible_devices([], 'GPU')
except RuntimeError:
  # TensorFlow was initialised before this module: visible devices can no
  # longer change. Say so, since TensorFlow may then hold GPU memory.
  logging.warning('TensorFlow was initialised before vit_jax.data could hide '
                  'the GPUs from it; it may hold GPU memory that JAX needs.')

__all__ = ['tf']


class _DropTfdsDtypeNotice(logging.Filter):
  """TFDS 4.9 warns on every partial decode that `FeatureConnector.dtype` is
  deprecated, from inside TFDS itself: noise that tells a user nothing."""

  def filter(self, record: logging.LogRecord) -> bool:
    return 'FeatureConnector.dtype' not in record.getMessage()


logging.getLogger('absl').addFilter(_DropTfdsDtypeNotice())
