"""ConvMixer's weights in timm's layout: nested nn.Sequentials,
stem.{0: conv, 2: BatchNorm}; blocks.i.{0.fn.{0: depthwise conv, 2:
BatchNorm}, 1: pointwise conv, 3: BatchNorm} (1, 2 inside: the activations,
without weights). BatchNorm running averages are the 'batch_stats'
collection."""

from typing import Tuple

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights.core import CONV, Architecture, batch_norm, dense

NAME = 'convmixer'

TIMM = [
    *dense('stem.0', 'patch_embed', CONV),
    *batch_norm('stem.2', 'embed_norm'),
    *dense('blocks.{0}.0.fn.0', 'block_{0}/depthwise', CONV),
    *batch_norm('blocks.{0}.0.fn.2', 'block_{0}/norm1'),
    *dense('blocks.{0}.1', 'block_{0}/pointwise', CONV),
    *batch_norm('blocks.{0}.3', 'block_{0}/norm2'),
    *dense('head', 'head'),
]


# timm's ConvMixer entry points fix the paper's sizes (they cannot be
# overridden through model_args); each is one of this package's variants,
# its activation included.
# Tags: timm's on the Hub (timm 1.0.31).
TIMM_ARCHITECTURES = {
    name: Architecture('convmixer', dict(variant=variant), 224,
                       tags=('in1k',))
    for name, variant in (('convmixer_1536_20', '1536/20'),
                          ('convmixer_768_32', '768/32'),
                          ('convmixer_1024_20_ks9_p14', '1024/20'))}


TIMM_ARGS = core.TimmArgs(
    size_fields=('width', 'depth', 'kernel_size', 'patch_size', 'activation'),
    renamed={'dim': 'width', 'depth': 'depth', 'kernel_size': 'kernel_size',
             'patch_size': 'patch_size', 'act_layer': 'activation'},
    fixed={'global_pool': ('avg',)})


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  del image_size  # fixed by the entry point
  variant = core.variant_of(model, {
      name: {'activation': 'gelu', **size}
      for name, size in models.convmixer.VARIANTS.items()})
  name = next((name for name, architecture in TIMM_ARCHITECTURES.items()
               if architecture.model_kwargs['variant'] == variant), None)
  if name is None:
    return core.no_timm_model(
        'timm\'s ConvMixer entry points fix the paper\'s sizes (1536/20, '
        '768/32 with ReLU, 1024/20)')
  return core.TimmModel(name, {}, num_features=model.width)
