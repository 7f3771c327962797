"""torchvision state dicts (its video MViTs): import (`from_torchvision`)
and export (`to_torchvision`) through the families' TORCHVISION tables.

A family whose torchvision names do not follow its own nesting (MViT's one
flat list of blocks, here stages of blocks) renames them with its table
module's `torchvision_names(state_dict, model)` before the table applies,
and back with `from_torchvision_names` on export."""

from typing import Any, Dict, Mapping, Optional

import numpy as np

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights import families

# Family -> table.
TABLES = families.tables('TORCHVISION')

TORCHVISION_IMPORTABLE = tuple(TABLES)


def _check(name: str) -> None:
  if name not in TABLES:
    raise ValueError(f'Cannot import torchvision checkpoints for model '
                     f'{name!r}; valid models: {list(TORCHVISION_IMPORTABLE)}')


def from_torchvision(state_dict: Mapping[str, Any], name: str,
                     image_size: Optional[core.ImageSize] = None,
                     **model_kwargs) -> Dict[str, Any]:
  """Converts a torchvision state dict to this package's variables.

  Args:
    state_dict: torchvision parameter names to numpy arrays (e.g.
      `{k: v.numpy() for k, v in model.state_dict().items()}`).
    name: one of TORCHVISION_IMPORTABLE: 'mvit' (torchvision's MViT:
      mvit_v2_s is variant='S', mvit_v1_b variant='v1-B', both with
      num_frames=16 at 224 px).
    image_size: the spatial resolution the params are fitted to (default:
      the checkpoint's own).
    **model_kwargs: as for `get_model(name, ...)`, e.g. variant='S',
      num_frames=16, num_classes=400 (another num_classes replaces the
      head with a zero-initialised one).

  Returns:
    variables for `get_model(name, **model_kwargs)`: {'params': ...}.

  Raises:
    ValueError: an unknown family; entries without a counterpart or whose
      shape is not the model's, named in torchvision's names.
  """
  _check(name)
  model = models.get_model(name, **model_kwargs)
  rename = getattr(families.module(name), 'torchvision_names', None)
  if rename is not None:
    state_dict = rename(state_dict, model)
  return core.import_variables(state_dict, TABLES[name], name, model,
                               image_size, 'torchvision state dict')


def to_torchvision(flat: Mapping[str, np.ndarray], family: str,
                   model=None) -> Dict[str, np.ndarray]:
  """Flat variables (unstacked blocks) -> torchvision's names; `model`
  (of `family`) for the families that rename (MViT: its depths)."""
  _check(family)
  converted = core.to_theirs(flat, TABLES[family],
                             f'torchvision\'s layout of {family!r}')
  rename = getattr(families.module(family), 'from_torchvision_names', None)
  return converted if rename is None else rename(converted, model)
