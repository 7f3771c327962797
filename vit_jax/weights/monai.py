"""MONAI state dicts (UNETR): import (`from_monai`) and export
(`to_monai`) through the families' MONAI tables."""

from typing import Any, Dict, Mapping

import numpy as np

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights import families

# Family -> table: 'unetr' for monai.networks.nets.UNETR.
TABLES = families.tables('MONAI')

MONAI_IMPORTABLE = tuple(TABLES)


def from_monai(state_dict: Mapping[str, Any], name: str,
               **model_kwargs) -> Dict[str, Any]:
  """Converts a MONAI state dict to this package's variables.

  Args:
    state_dict: MONAI's parameter names to numpy arrays (a torch state
      dict's tensors as `.numpy()`, or a safetensors file read with
      `safetensors.numpy.load_file`).
    name: one of MONAI_IMPORTABLE: 'unetr' (monai.networks.nets.UNETR).
    **model_kwargs: as for `get_model(name, ...)`, MONAI's constructor
      arguments in this package's names: img_size -> image_size,
      in_channels, out_channels -> num_classes, feature_size, hidden_size
      -> width, mlp_dim, num_heads, qkv_bias (or variant='B/16' for
      MONAI's defaults 768 / 3072 / 12). Every size is checked in MONAI's
      names; a different out_channels gets a new zero head, as the
      classifiers' importers do.

  Returns:
    variables for `get_model(name, **model_kwargs)`: {'params': ...}.
  """
  if name not in TABLES:
    raise ValueError(f'Cannot import MONAI checkpoints for model {name!r}; '
                     f'valid models: {list(MONAI_IMPORTABLE)}')
  model = models.get_model(name, **model_kwargs)
  return core.import_variables(state_dict, TABLES[name], name, model, None,
                               'MONAI state dict')


def to_monai(flat: Mapping[str, np.ndarray],
             family: str) -> Dict[str, np.ndarray]:
  """Flat variables (unstacked blocks) -> MONAI's names, for
  `model.load_state_dict` after `torch.from_numpy`."""
  if family not in TABLES:
    raise ValueError(f'Cannot export {family!r} to MONAI; valid models: '
                     f'{list(MONAI_IMPORTABLE)}')
  return core.to_theirs(flat, TABLES[family], 'MONAI\'s UNETR')
