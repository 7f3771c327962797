"""ConvMixer's weights in timm's layout: nested nn.Sequentials,
stem.{0: conv, 2: BatchNorm}; blocks.i.{0.fn.{0: depthwise conv, 2:
BatchNorm}, 1: pointwise conv, 3: BatchNorm} (1, 2 inside: the activations,
without weights). BatchNorm running averages are the 'batch_stats'
collection."""

from vit_jax.weights.core import CONV, batch_norm, dense

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
