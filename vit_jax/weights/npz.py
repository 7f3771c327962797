"""Google's original ViT / Mixer `.npz` (and big_vision's): import
(`load_npz`) and export (`to_npz`) through the families' NPZ tables."""

import io
from typing import Any, Dict, Mapping, Optional

import numpy as np

from vit_jax import paths
from vit_jax.models import common
from vit_jax.weights import core
from vit_jax.weights import families

TABLES = families.tables('NPZ')


def load_npz(path, name: str = 'vit',
             image_size: Optional[core.ImageSize] = None,
             **model_kwargs) -> Dict[str, Any]:
  """Reads a `.npz` checkpoint of Google's original ViT / Mixer code.

  The file maps '/'-joined Flax parameter paths ('Transformer/encoderblock_0/
  MultiHeadDotProductAttention_1/query/kernel', 'MixerBlock_0/token_mixing/
  Dense_0/kernel', ...) to arrays; big_vision's layout (scanned
  'Transformer/encoderblock', 'MAPHead_0', top-level 'pos_embedding') is read
  too. Other arguments and the returned variables as for `from_timm`.
  """
  model = families.build(name, model_kwargs)
  # The same Flax layouts: a name without an entry is the same in both.
  renamed = core.to_ours(read(path), TABLES.get(name, ()), model,
                         'npz checkpoint', keep_unmatched=True)
  flat = core.flatten(common.unstack_blocks(core.unflatten(renamed)))
  return core.fit_to_model(flat, name, model, image_size,
                           f'npz checkpoint {path}')


def to_npz(flat: Mapping[str, np.ndarray],
           family: str) -> Dict[str, np.ndarray]:
  """Flat variables (unstacked blocks) -> Google's names, arrays as they
  are (contiguous)."""
  return core.to_theirs(flat, TABLES[family], f'the {family} npz layout',
                        keep_unmatched=True)


def read(path) -> Dict[str, np.ndarray]:
  """The arrays of an .npz file, local or on gs:// (`vit_jax.paths`)."""
  if isinstance(path, str) and not paths.is_local(path):
    path = io.BytesIO(paths.read_bytes(path))
  with np.load(path, allow_pickle=False) as archive:
    return {key: archive[key] for key in archive.files}
