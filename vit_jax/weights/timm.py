"""timm state dicts: import (`from_timm`) and export (`to_timm`) through
the families' TIMM tables."""

from typing import Any, Dict, Mapping, Optional

import numpy as np

from vit_jax import paths
from vit_jax.weights import core
from vit_jax.weights import families
from vit_jax.weights import npz

TABLES = families.tables('TIMM')


def from_timm(state_dict: Mapping[str, Any], name: str,
              image_size: Optional[core.ImageSize] = None,
              posemb_interpolation: str = 'bilinear',
              **model_kwargs) -> Dict[str, Any]:
  """Converts a timm state dict (names -> arrays) to this package's variables.

  Args:
    state_dict: timm parameter names to numpy arrays (e.g. read with
      `safetensors.numpy.load_file`) or anything `np.asarray` takes.
    name: model family, one of IMPORTABLE ('vit', 'mixer', 'swin'; for Swin
      timm's layout, where stage i > 0 starts with `layers.i.downsample`).
    image_size: resolution the params are for; the position embedding is
      resampled to it. Default: the checkpoint's own (Swin: the resolution
      its window size is for, `Swin.default_image_size`).
    posemb_interpolation: how a learned position embedding is resampled,
      one of core.POSEMB_INTERPOLATIONS: 'bilinear', or 'bicubic' (timm's
      own choice when it loads a checkpoint at another size, e.g.
      DINOv2's 518 px weights at 224 px).
    **model_kwargs: as for `get_model(name, ...)`, e.g. variant='B/16',
      pool_type='map', num_classes=10 (a different num_classes replaces the
      head with a zero-initialised one).

  Raises:
    ValueError: an entry whose shape is not the model's, named in timm's
      names with both shapes (before anything is split into heads), or
      entries without a counterpart. `num_heads` is checked where the
      weights fix it (Swin's relative position bias tables, one column per
      head; XCiT's per-head temperature); timm's fused qkv, its separate
      q / k / v and the MAP head's q / kv are [heads * head_dim, width]
      whatever the split, so there a wrong num_heads of the same width
      cannot be seen: it loads and gives wrong outputs. Give the
      architecture's num_heads (`vit_jax.pretrained.load` reads it from
      the checkpoint's config).

  Returns:
    variables for `get_model(name, **model_kwargs)`: {'params': ...}, plus
    'batch_stats' (timm's BatchNorm running averages) for the families
    with BatchNorm; scanned layout if the kwargs ask for scan=True.
  """
  model = families.build(name, model_kwargs)
  return core.import_variables(state_dict, TABLES[name], name, model,
                               image_size, 'timm state dict',
                               posemb_interpolation=posemb_interpolation)


def to_timm(flat: Mapping[str, np.ndarray],
            family: str) -> Dict[str, np.ndarray]:
  """Flat variables (unstacked blocks) -> timm's state dict."""
  return core.to_theirs(flat, TABLES[family], f'timm\'s {family} layout')


def read(path: str) -> Dict[str, np.ndarray]:
  """A timm state dict from a .safetensors or .npz file, local or gs://."""
  if path.endswith('.safetensors'):
    from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
    return (safetensors_numpy.load_file(path) if paths.is_local(path)
            else safetensors_numpy.load(paths.read_bytes(path)))
  return npz.read(path)
