"""Model families and `get_model`, the one way the rest of the code builds
a model (see docs/DESIGN.md):

    model = get_model('vit', variant='B/16', num_classes=1000, pool_type='map')
    logits, aux = model.apply({'params': params}, images, train=False)

Importing this package never imports TensorFlow.
"""

from typing import Optional

import flax.linen as nn

from vit_jax.models.mae import MAE
from vit_jax.models.mixer import Mixer
from vit_jax.models.swin import Swin
from vit_jax.models.vit import ViT

MODELS = {
    'vit': ViT,
    'mixer': Mixer,
    'mae': MAE,
    'swin': Swin,
}


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
