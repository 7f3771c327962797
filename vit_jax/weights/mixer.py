"""MLP-Mixer's weights in timm's and Google's `.npz` layouts."""

from vit_jax.weights.core import CONV, dense, entry, norm

NAME = 'mixer'

_MLPS = (('mlp_tokens', 'token_mixing'), ('mlp_channels', 'channel_mixing'))

TIMM = [
    *dense('stem.proj', 'stem', CONV),
    *[e for n in ('norm1', 'norm2')
      for e in norm(f'blocks.{{0}}.{n}', f'block_{{0}}/{n}')],
    *[e for theirs, ours in _MLPS for fc in ('fc1', 'fc2')
      for e in dense(f'blocks.{{0}}.{theirs}.{fc}', f'block_{{0}}/{ours}/{fc}')],
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
