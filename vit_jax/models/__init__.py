"""Model families and `get_model`, the one way the rest of the code builds
a model (see docs/DESIGN.md):

    model = get_model('vit', variant='B/16', num_classes=1000, pool_type='map')
    logits, aux = model.apply({'params': params}, images, train=False)
    model = get_model(**kwargs_from_config(config.model))  # from a config

What weight import (`vit_jax.weights`) needs to know of a family is here
too: `checkpoint_image_size` (the resolution params were trained at) and
`convert_params` (another family's params, e.g. an MAE's encoder for a ViT).

Importing this package never imports TensorFlow.
"""

from typing import Any, Callable, Dict, Mapping, Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from vit_jax.models import beit
from vit_jax.models import convmixer
from vit_jax.models import eva
from vit_jax.models import mae
from vit_jax.models import mixer
from vit_jax.models import mvit
from vit_jax.models import segformer
from vit_jax.models import swin
from vit_jax.models import swinv2
from vit_jax.models import timesformer
from vit_jax.models import unetr
from vit_jax.models import vit
from vit_jax.models import xcit

# The families, in the order listings show them: an explicit tuple (no
# registry filled by imports). A family's module holds NAME, MODEL (the
# class get_model builds), ZOO (the zoo listing's variants) and
# checkpoint_image_size; adding a family is its model file, an entry here,
# its weight tables (vit_jax/weights/) and its analytic counts (counts.py).
FAMILIES = (vit, mixer, swin, swinv2, xcit, convmixer, mae, beit, eva,
            unetr, segformer, timesformer, mvit)

_BY_NAME = {family.NAME: family for family in FAMILIES}
MODELS: Dict[str, Any] = {name: family.MODEL
                          for name, family in _BY_NAME.items()}


def get_model(name: str, variant: Optional[str] = None, **kwargs) -> nn.Module:
  """Builds model family `name`, sized by `variant` ("B/16") or by kwargs.

  With a variant, kwargs override the variant's table entries; without
  one, kwargs must give the size in full (width, depth, ... patch_size),
  which is how custom scaling ladders and tiny CPU models are built.
  """
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; valid models: {list(MODELS)}')
  model_cls = MODELS[name]
  if variant is not None:
    return model_cls.from_variant(variant, **kwargs)
  return model_cls(**kwargs)


def kwargs_from_config(model_config: Mapping[str, Any],
                       compute_dtype: bool = True) -> Dict[str, Any]:
  """`get_model`'s keyword arguments from a config's model block
  ({'name': 'vit', 'variant': 'B/16', ...}: a ConfigDict or a plain dict,
  e.g. a workdir's config.json): `get_model(**kwargs)` builds the model.

  'name' is kept; 'variant' is dropped when None (the sizes are then given
  in full). Lists become tuples: a config read back from JSON holds
  tuples (Swin's depths, ...) as lists, and a module's fields must be
  hashable. The dtype name ('bfloat16') becomes a numpy dtype.

  compute_dtype=False leaves the dtype out: parameters are float32 and
  shaped alike whatever the compute dtype, so code that imports or exports
  weights builds the model without it.
  """
  kwargs = dict(model_config.to_dict() if hasattr(model_config, 'to_dict')
                else model_config)
  if kwargs.get('variant') is None:
    kwargs.pop('variant', None)
  if not compute_dtype:
    kwargs.pop('dtype', None)
  elif kwargs.get('dtype') is not None:
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  return {key: tuple(value) if isinstance(value, list) else value
          for key, value in kwargs.items()}


# (source family, target family) -> function of the source params giving
# params of the target family (head and resolution left to the caller).
_CONVERSIONS: Dict[Tuple[str, str], Callable[[Mapping[str, Any]], Any]] = {
    ('mae', 'vit'): mae.encoder_params,  # pool_type='cls', posemb='sincos2d'
    # A class-token ViT's params, temporal parts added (the paper's init).
    ('vit', 'timesformer'): timesformer.vit_params_as_timesformer,
}


def checkpoint_image_size(name: str, model: nn.Module,
                          flat_params: Mapping[str, Any]) -> Tuple[int, int]:
  """The resolution params of family `name` were trained at, where their
  shapes tell it (a learned position embedding, Mixer's token-mixing MLP,
  Swin's clamped window), else the family's default.

  Args:
    name: model family, a key of MODELS.
    model: the model (of that family) the params are for.
    flat_params: '/'-joined parameter paths (unscanned blocks) to arrays.

  Returns:
    (height, width) in pixels.
  """
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; valid models: {list(MODELS)}')
  return _BY_NAME[name].checkpoint_image_size(model, flat_params)


def convert_params(source_name: str, target_name: str,
                   params: Mapping[str, Any]) -> Any:
  """Params of a `source_name` model, as params of a `target_name` one.

  The same family: unchanged, but for a space-only TimeSformer's params
  (no temporal parts: a ViT's, frame by frame), which start a TimeSformer
  as a ViT's do. An MAE to a ViT: the MAE's encoder
  (`mae.encoder_params`, for `get_model('vit', pool_type='cls',
  posemb='sincos2d')`). Other pairs raise. Sizes are not checked here.

  Args:
    source_name: model family the params were trained as.
    target_name: model family they are wanted for.
    params: the source parameter tree.

  Returns:
    The target parameter tree (without a head where the source had none).
  """
  if source_name == target_name == 'timesformer' and (
      'time_embed' not in params):
    return timesformer.vit_params_as_timesformer(params)
  if source_name == target_name:
    return params
  convert = _CONVERSIONS.get((source_name, target_name))
  if convert is None:
    raise ValueError(
        f'Cannot convert {source_name!r} params to {target_name!r} params; '
        f'supported: the same family, or '
        f'{[f"{s} -> {t}" for s, t in _CONVERSIONS]}.')
  return convert(params)


def _same(params):
  return params


def classifier_view(name: str, model: nn.Module):
  """(a model with the classifier contract, params -> its params).

  Evaluators read representations through `logits, aux = apply(...)`; an
  MAE is read through its encoder as a ViT (`mae.encoder_as_vit`), every
  classifier family as itself.
  """
  if name not in MODELS:
    raise ValueError(f'Unknown model {name!r}; valid models: {list(MODELS)}')
  if name == 'mae':
    return mae.encoder_as_vit(model), mae.encoder_params
  return model, _same
