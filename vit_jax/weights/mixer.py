"""MLP-Mixer's weights in timm's and Google's `.npz` layouts."""

from typing import Any, Dict, Mapping, Tuple

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights.core import CONV, Architecture, dense, entry, norm

NAME = 'mixer'

_MLPS = (('mlp_tokens', 'token_mixing'), ('mlp_channels', 'channel_mixing'))

TIMM = [
    *dense('stem.proj', 'stem', CONV),
    *[e for n in ('norm1', 'norm2')
      for e in norm(f'blocks.{{0}}.{n}', f'block_{{0}}/{n}')],
    *[e for theirs, ours in _MLPS for fc in ('fc1', 'fc2')
      for e in dense(f'blocks.{{0}}.{theirs}.{fc}',
                     f'block_{{0}}/{ours}/{fc}')],
    *norm('norm', 'pre_head_norm'),
    *dense('head', 'head'),
]

# Google's `.npz`: module prefixes renamed, names without an entry ('stem/',
# 'head/') the same in both.
NPZ = [
    entry('MixerBlock_{0}/LayerNorm_0/', 'block_{0}/norm1/'),
    entry(('MixerBlock_{0}/LayerNorm_1/', 'MixerBlock_{0}/LayerNorm_2/'),
          'block_{0}/norm2/'),
    *[entry(f'MixerBlock_{{0}}/{ours}/Dense_{n}/',
            f'block_{{0}}/{ours}/fc{n + 1}/')
      for _, ours in _MLPS for n in range(2)],
    entry('pre_head_layer_norm/', 'pre_head_norm/'),
]


# timm's Mixer entry points fix their sizes (they cannot be overridden
# through model_args): the paper's S, B and L with patches of 32 or 16.
_SIZES = ('s', 'b', 'l')
_PATCHES = (32, 16)

TIMM_ARCHITECTURES = {
    f'mixer_{size}{patch}_224': Architecture(
        'mixer', dict(variant=f'{size.upper()}/{patch}'), 224)
    for size in _SIZES for patch in _PATCHES}

# timm's pretrained tags on the Hub (timm 1.0.31, the default first; the
# other sizes are untrained entry points).
TIMM_ARCHITECTURES = core.tagged(TIMM_ARCHITECTURES, {
    'mixer_b16_224': ('goog_in21k_ft_in1k', 'goog_in21k', 'miil_in21k',
                      'miil_in21k_ft_in1k'),
    'mixer_l16_224': ('goog_in21k_ft_in1k', 'goog_in21k'),
})



def _adjust(kwargs: Dict[str, Any], architecture: Mapping[str, Any],
            model_args: Mapping[str, Any]) -> None:
  """timm's mlp_ratio: one for both MLPs, or (tokens, channels), of the
  new width."""
  width = architecture['width']
  ratios = model_args.get('mlp_ratio', (kwargs['tokens_mlp_dim'] / width,
                                        kwargs['channels_mlp_dim'] / width))
  if not isinstance(ratios, (list, tuple)):
    ratios = (ratios, ratios)
  kwargs['tokens_mlp_dim'] = int(ratios[0] * kwargs['width'])
  kwargs['channels_mlp_dim'] = int(ratios[1] * kwargs['width'])


TIMM_ARGS = core.TimmArgs(
    size_fields=('patch_size', 'width', 'depth', 'tokens_mlp_dim',
                 'channels_mlp_dim'),
    renamed={'embed_dim': 'width', 'num_blocks': 'depth',
             'patch_size': 'patch_size'},
    fixed={'global_pool': ('avg',), 'stem_norm': (False,)},
    special=('mlp_ratio',),
    adjust=_adjust)


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  variant = core.variant_of(model, models.mixer.VARIANTS)
  ratios = (core.ratio(model.tokens_mlp_dim, model.width),
            core.ratio(model.channels_mlp_dim, model.width))
  if (variant is None or variant.lower() not in _SIZES
      or model.patch_size not in _PATCHES or None in ratios
      or model.layer_norm_eps != 1e-6):
    return core.no_timm_model(
        'timm\'s Mixer entry points fix width and depth to the paper\'s S, '
        'B and L with patches of 16 or 32')
  return core.TimmModel(
      f'mixer_{variant.lower()}{model.patch_size}_224',
      dict(img_size=image_size[0], mlp_ratio=list(ratios)),
      num_features=model.width, fixed_input_size=True)
