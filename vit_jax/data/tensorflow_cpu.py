"""TensorFlow for the input pipeline, hidden from accelerators, and quiet.

The input pipeline is the only user of TensorFlow in vit_jax (docs/DESIGN.md:
models, optimizers and steps never import it). TensorFlow must not claim GPU
memory that JAX needs, so every data module imports it from here, which hides
all GPUs from TensorFlow before any op runs.

Console noise: TensorFlow's C++ runtime prints INFO and WARNING lines on
import and while the pipeline runs (CPU-instruction notices, tf.data
buffer-size notes, and on CPUs where oneDNN is on by default the notice
"oneDNN custom operations are on ..."). None of them is actionable for a
vit_jax user, so TensorFlow is imported with `TF_CPP_MIN_LOG_LEVEL=2`
(errors only) unless the user has set that variable, e.g. to 0 to see
everything. TensorFlow fixes its log level when it loads, so the variable is
set only for the duration of the import and then removed again: it does not
reach jaxlib's XLA logging (which reads the same variable) nor subprocesses.

oneDNN is left as TensorFlow configures it: only its notice is hidden.
Setting `TF_ENABLE_ONEDNN_OPTS=0` would turn the oneDNN kernels off, which
changes preprocessing results by float rounding; that is the user's call.
"""

import logging
import os

# Environment TensorFlow reads when it loads, with vit_jax's defaults. A value
# the user has set is always kept.
TF_IMPORT_ENV_DEFAULTS = {'TF_CPP_MIN_LOG_LEVEL': '2'}


def _import_tensorflow():
  added = [name for name in TF_IMPORT_ENV_DEFAULTS if name not in os.environ]
  for name in added:
    os.environ[name] = TF_IMPORT_ENV_DEFAULTS[name]
  try:
    import tensorflow  # pylint: disable=g-import-not-at-top
  finally:
    for name in added:
      os.environ.pop(name, None)
  return tensorflow


tf = _import_tensorflow()

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
