"""The families whose weights are converted, each with its tables: an
explicit tuple, not a registry filled by imports. A family's module names
the family (`NAME`) and holds a table per layout it has (`TIMM`, `HF`,
`NPZ`, `MONAI`, `TORCHVISION`); with a TIMM table, also the timm architectures read by name
(`TIMM_ARCHITECTURES`, `vit_jax.pretrained.SUPPORTED`), how timm's
`model_args` become its get_model kwargs (`TIMM_ARGS`, a `core.TimmArgs`)
and `timm_model`, what export's timm config.json says. Adding a family
is one model file, one table module listed here, and its counts."""

from typing import Any, Mapping

from vit_jax import models
from vit_jax.weights import beit
from vit_jax.weights import convmixer
from vit_jax.weights import eva
from vit_jax.weights import mae
from vit_jax.weights import mixer
from vit_jax.weights import mvit
from vit_jax.weights import segformer
from vit_jax.weights import swin
from vit_jax.weights import swinv2
from vit_jax.weights import timesformer
from vit_jax.weights import unetr
from vit_jax.weights import vit
from vit_jax.weights import xcit

FAMILIES = (vit, mixer, swin, swinv2, xcit, convmixer, mae, beit, eva,
            unetr, segformer, timesformer, mvit)


def module(name: str):
  """The table module of family `name`."""
  (found,) = [family for family in FAMILIES if family.NAME == name]
  return found


def tables(layout: str):
  """Family name -> its table of `layout` ('TIMM', 'HF', 'NPZ',
  'MONAI'), for the families that have one, in FAMILIES' order."""
  return {family.NAME: getattr(family, layout) for family in FAMILIES
          if hasattr(family, layout)}


# Families whose checkpoints can be imported (from timm, and their .npz or
# own runs).
IMPORTABLE = tuple(tables('TIMM'))


def build(name: str, model_kwargs: Mapping[str, Any]):
  """The model to import into; an error naming IMPORTABLE for another
  family."""
  if name not in IMPORTABLE:
    raise ValueError(f'Cannot import checkpoints for model {name!r}; '
                     f'valid models: {list(IMPORTABLE)}')
  return models.get_model(name, **model_kwargs)
