"""The export formats' names: rules from this package's flat variable paths
(`weights.flatten_variables` of unstacked blocks) to timm's and
transformers' state-dict names, and renames to Google's .npz paths. The
inverse of `vit_jax.weights`' import rules; every transform is a transpose,
reshape or concatenation, so the round trip is exact.
"""

import re
from typing import (Callable, Dict, List, Mapping, NamedTuple, Sequence,
                    Tuple, Union)

import numpy as np

from vit_jax import weights
from vit_jax.models import xcit


class _Rule(NamedTuple):
  pattern: str  # full match over our flat path
  template: str  # the target name, with the pattern's groups
  transform: Callable[[np.ndarray], np.ndarray]
  # Fused targets (timm's qkv): the values of the pattern's group `part`,
  # in the order they are concatenated on axis 0.
  parts: Tuple[str, ...] = ()


def _same(x):
  return x


def _linear(kernel):  # Dense [in, out] -> torch Linear [out, in]
  return kernel.T


def _conv(kernel):  # HWIO -> torch Conv2d [out, in, kh, kw]
  return kernel.transpose(3, 2, 0, 1)


def _heads_in(kernel):  # DenseGeneral [D, heads, hd] -> Linear [heads*hd, D]
  return kernel.reshape(kernel.shape[0], -1).T


def _heads_bias(bias):  # [heads, hd] -> [heads*hd]
  return bias.reshape(-1)


def _heads_out(kernel):  # [heads, hd, D] -> Linear [D, heads*hd]
  return kernel.reshape(-1, kernel.shape[-1]).T


QKV = ('query', 'key', 'value')


def _norm(ours: str, theirs: str) -> List[_Rule]:
  """A LayerNorm (or a BatchNorm's affine part): scale -> weight."""
  return [_Rule(ours + '/scale', theirs + '.weight', _same),
          _Rule(ours + '/bias', theirs + '.bias', _same)]


def _dense(ours: str, theirs: str, kernel_transform=_linear) -> List[_Rule]:
  return [_Rule(ours + '/kernel', theirs + '.weight', kernel_transform),
          _Rule(ours + '/bias', theirs + '.bias', _same)]


def _batch_norm(ours: str, theirs: str) -> List[_Rule]:
  """Affine parameters and running averages (`num_batches_tracked` is
  added beside every `running_mean`, see `convert`)."""
  stats = 'batch_stats' + weights.COLLECTION_SEPARATOR + ours
  return [*_norm(ours, theirs),
          _Rule(stats + '/mean', theirs + '.running_mean', _same),
          _Rule(stats + '/var', theirs + '.running_var', _same)]


def _attention(ours: str, qkv: Union[str, Mapping[str, str]],
               out: str) -> List[_Rule]:
  """`common.Attention` at `ours`: query / key / value fused into one
  Linear `qkv` (a name), or separate (a dict part -> name); `out`, the
  output projection."""
  if isinstance(qkv, str):
    inputs = [
        _Rule(ours + r'/(?P<part>query|key|value)/kernel', qkv + '.weight',
              _heads_in, QKV),
        _Rule(ours + r'/(?P<part>query|key|value)/bias', qkv + '.bias',
              _heads_bias, QKV)]
  else:
    inputs = [rule for part in QKV for rule in (
        _Rule(f'{ours}/{part}/kernel', qkv[part] + '.weight', _heads_in),
        _Rule(f'{ours}/{part}/bias', qkv[part] + '.bias', _heads_bias))]
  return [*inputs,
          _Rule(ours + '/out/kernel', out + '.weight', _heads_out),
          _Rule(ours + '/out/bias', out + '.bias', _same)]


_TIMM_VIT = [
    _Rule('cls_token', 'cls_token', _same),
    _Rule('pos_embed', 'pos_embed', _same),
    *_dense('patch_embed', 'patch_embed.proj', _conv),
    *_norm(r'encoder/block_(\d+)/(norm[12])', r'blocks.\1.\2'),
    *_attention(r'encoder/block_(\d+)/attn', r'blocks.\1.attn.qkv',
                r'blocks.\1.attn.proj'),
    *_dense(r'encoder/block_(\d+)/mlp/(fc[12])', r'blocks.\1.mlp.\2'),
    *_norm('encoder_norm', 'norm'),
    *_norm('fc_norm', 'fc_norm'),
    # MAP head: timm's AttentionPoolLatent (query alone, key and value fused).
    _Rule('map_head/probe', 'attn_pool.latent', _same),
    _Rule('map_head/attn/query/kernel', 'attn_pool.q.weight', _heads_in),
    _Rule('map_head/attn/query/bias', 'attn_pool.q.bias', _heads_bias),
    _Rule(r'map_head/attn/(?P<part>key|value)/kernel', 'attn_pool.kv.weight',
          _heads_in, ('key', 'value')),
    _Rule(r'map_head/attn/(?P<part>key|value)/bias', 'attn_pool.kv.bias',
          _heads_bias, ('key', 'value')),
    _Rule('map_head/attn/out/kernel', 'attn_pool.proj.weight', _heads_out),
    _Rule('map_head/attn/out/bias', 'attn_pool.proj.bias', _same),
    *_norm('map_head/norm', 'attn_pool.norm'),
    *_dense(r'map_head/mlp/(fc[12])', r'attn_pool.mlp.\1'),
    *_dense('head', 'head'),
]

_TIMM_MIXER = [
    *_dense('stem', 'stem.proj', _conv),
    *_norm(r'block_(\d+)/(norm[12])', r'blocks.\1.\2'),
    *_dense(r'block_(\d+)/token_mixing/(fc[12])', r'blocks.\1.mlp_tokens.\2'),
    *_dense(r'block_(\d+)/channel_mixing/(fc[12])',
            r'blocks.\1.mlp_channels.\2'),
    *_norm('pre_head_norm', 'norm'),
    *_dense('head', 'head'),
]

# timm's layout: stage i > 0 starts with `layers.i.downsample` (our
# stage_i/patch_merging); the relative position index and the attention
# masks are buffers timm recomputes (not in its state dict).
_SWIN_BLOCK = r'stage_(\d+)/block_(\d+)'
_TIMM_SWIN_BLOCK = r'layers.\1.blocks.\2'
_TIMM_SWIN = [
    *_dense('patch_embed', 'patch_embed.proj', _conv),
    *_norm('embed_norm', 'patch_embed.norm'),
    *_norm(r'stage_(\d+)/patch_merging/norm', r'layers.\1.downsample.norm'),
    _Rule(r'stage_(\d+)/patch_merging/reduction/kernel',
          r'layers.\1.downsample.reduction.weight', _linear),
    *_norm(_SWIN_BLOCK + r'/(norm[12])', _TIMM_SWIN_BLOCK + r'.\3'),
    _Rule(_SWIN_BLOCK + '/relative_position_bias_table',
          _TIMM_SWIN_BLOCK + '.attn.relative_position_bias_table', _same),
    *_attention(_SWIN_BLOCK + '/attn', _TIMM_SWIN_BLOCK + '.attn.qkv',
                _TIMM_SWIN_BLOCK + '.attn.proj'),
    *_dense(_SWIN_BLOCK + r'/mlp/(fc[12])', _TIMM_SWIN_BLOCK + r'.mlp.\3'),
    *_norm('final_norm', 'norm'),
    *_dense('head', 'head.fc'),
]

# timm's nested Sequentials: stem.{0: conv, 2: BatchNorm}; blocks.i.{0.fn.
# {0: depthwise conv, 2: BatchNorm}, 1: pointwise conv, 3: BatchNorm}.
_TIMM_CONVMIXER = [
    *_dense('patch_embed', 'stem.0', _conv),
    *_batch_norm('embed_norm', 'stem.2'),
    *_dense(r'block_(\d+)/depthwise', r'blocks.\1.0.fn.0', _conv),
    *_batch_norm(r'block_(\d+)/norm1', r'blocks.\1.0.fn.2'),
    *_dense(r'block_(\d+)/pointwise', r'blocks.\1.1', _conv),
    *_batch_norm(r'block_(\d+)/norm2', r'blocks.\1.3'),
    *_dense('head', 'head'),
]

# timm's Xcit: convolution + BatchNorm pairs at every other index of the
# patch embedding's Sequential; norm1 / norm3 / norm2 and gamma1 / gamma3 /
# gamma2 of the attention / LPI / MLP branches; class attention with
# separate q, k, v.
_TIMM_XCIT = [
    _Rule('cls_token', 'cls_token', _same),
    *[rule for layer in range(len(xcit.PATCH_SIZES)) for rule in (
        _Rule(f'patch_embed/conv_{layer}/kernel',
              f'patch_embed.proj.{2 * layer}.0.weight', _conv),
        *_batch_norm(f'patch_embed/bn_{layer}',
                     f'patch_embed.proj.{2 * layer}.1'))],
    # Dense [64, D] -> the Fourier features' 1x1 convolution [D, 64, 1, 1].
    _Rule('pos_embed/kernel', 'pos_embed.token_projection.weight',
          lambda kernel: kernel.T[:, :, None, None]),
    _Rule('pos_embed/bias', 'pos_embed.token_projection.bias', _same),
    *_norm(r'block_(\d+)/norm_attn', r'blocks.\1.norm1'),
    *_norm(r'block_(\d+)/norm_lpi', r'blocks.\1.norm3'),
    *_norm(r'block_(\d+)/norm_mlp', r'blocks.\1.norm2'),
    _Rule(r'block_(\d+)/gamma_attn', r'blocks.\1.gamma1', _same),
    _Rule(r'block_(\d+)/gamma_lpi', r'blocks.\1.gamma3', _same),
    _Rule(r'block_(\d+)/gamma_mlp', r'blocks.\1.gamma2', _same),
    _Rule(r'block_(\d+)/attn/temperature', r'blocks.\1.attn.temperature',
          lambda temperature: temperature.reshape(-1, 1, 1)),
    *_attention(r'block_(\d+)/attn', r'blocks.\1.attn.qkv',
                r'blocks.\1.attn.proj'),
    *_dense(r'block_(\d+)/lpi/(conv[12])', r'blocks.\1.local_mp.\2', _conv),
    *_batch_norm(r'block_(\d+)/lpi/bn', r'blocks.\1.local_mp.bn'),
    *_dense(r'block_(\d+)/mlp/(fc[12])', r'blocks.\1.mlp.\2'),
    *_norm(r'class_block_(\d+)/(norm[12])', r'cls_attn_blocks.\1.\2'),
    _Rule(r'class_block_(\d+)/(gamma[12])', r'cls_attn_blocks.\1.\2', _same),
    *_attention(r'class_block_(\d+)/attn',
                {part: rf'cls_attn_blocks.\1.attn.{part[0]}' for part in QKV},
                r'cls_attn_blocks.\1.attn.proj'),
    *_dense(r'class_block_(\d+)/mlp/(fc[12])', r'cls_attn_blocks.\1.mlp.\2'),
    *_norm('norm', 'norm'),
    *_dense('head', 'head'),
]

_HF_LAYER = r'vit.encoder.layer.\1'
HF_VIT_RULES = [
    _Rule('cls_token', 'vit.embeddings.cls_token', _same),
    _Rule('pos_embed', 'vit.embeddings.position_embeddings', _same),
    *_dense('patch_embed', 'vit.embeddings.patch_embeddings.projection',
            _conv),
    *_norm(r'encoder/block_(\d+)/norm1', _HF_LAYER + '.layernorm_before'),
    *_norm(r'encoder/block_(\d+)/norm2', _HF_LAYER + '.layernorm_after'),
    *_attention(r'encoder/block_(\d+)/attn',
                {part: _HF_LAYER + f'.attention.attention.{part}'
                 for part in QKV},
                _HF_LAYER + '.attention.output.dense'),
    *_dense(r'encoder/block_(\d+)/mlp/fc1', _HF_LAYER + '.intermediate.dense'),
    *_dense(r'encoder/block_(\d+)/mlp/fc2', _HF_LAYER + '.output.dense'),
    *_norm('encoder_norm', 'vit.layernorm'),
    *_dense('head', 'classifier'),
]

TIMM_RULES = {'vit': _TIMM_VIT, 'mixer': _TIMM_MIXER, 'swin': _TIMM_SWIN,
               'xcit': _TIMM_XCIT, 'convmixer': _TIMM_CONVMIXER}

# Google's .npz: ordered renames of path fragments (the inverse of
# `weights.load_npz`'s reading).
_NPZ_RENAMES = {
    'vit': [
        (r'^patch_embed/', 'embedding/'),
        (r'^cls_token$', 'cls'),
        (r'^pos_embed$', 'Transformer/posembed_input/pos_embedding'),
        (r'^encoder_norm/', 'Transformer/encoder_norm/'),
        (r'^encoder/block_(\d+)/', r'Transformer/encoderblock_\1/'),
        (r'^(Transformer/encoderblock_\d+)/norm1/', r'\1/LayerNorm_0/'),
        (r'^(Transformer/encoderblock_\d+)/attn/',
         r'\1/MultiHeadDotProductAttention_1/'),
        (r'^(Transformer/encoderblock_\d+)/norm2/', r'\1/LayerNorm_2/'),
        (r'^(Transformer/encoderblock_\d+)/mlp/fc([12])/',
         r'\1/MlpBlock_3/fc\2/'),
        # big_vision's MAP head.
        (r'^map_head/attn/', 'MAPHead_0/MultiHeadDotProductAttention_0/'),
        (r'^map_head/norm/', 'MAPHead_0/LayerNorm_0/'),
        (r'^map_head/mlp/', 'MAPHead_0/MlpBlock_0/'),
        (r'^map_head/probe$', 'MAPHead_0/probe'),
        (r'/MlpBlock_(\d)/fc1/', r'/MlpBlock_\1/Dense_0/'),
        (r'/MlpBlock_(\d)/fc2/', r'/MlpBlock_\1/Dense_1/'),
    ],
    'mixer': [
        (r'^block_(\d+)/', r'MixerBlock_\1/'),
        (r'/norm1/', '/LayerNorm_0/'),
        (r'/norm2/', '/LayerNorm_1/'),
        (r'/(token_mixing|channel_mixing)/fc1/', r'/\1/Dense_0/'),
        (r'/(token_mixing|channel_mixing)/fc2/', r'/\1/Dense_1/'),
        (r'^pre_head_norm/', 'pre_head_layer_norm/'),
    ],
}


def convert(flat: Mapping[str, np.ndarray], rules: Sequence[_Rule],
             layout: str) -> Dict[str, np.ndarray]:
  """Renames and transforms every entry of `flat` by the first matching
  rule; fused targets are concatenated; every variable must have a rule."""
  converted: Dict[str, np.ndarray] = {}
  fused: Dict[str, Tuple[Tuple[str, ...], Dict[str, np.ndarray]]] = {}
  unknown = []
  for path, array in flat.items():
    array = np.asarray(array)
    for rule in rules:
      match = re.fullmatch(rule.pattern, path)
      if match is None:
        continue
      target = match.expand(rule.template)
      value = np.ascontiguousarray(rule.transform(array))
      if rule.parts:
        fused.setdefault(target, (rule.parts, {}))[1][match['part']] = value
      else:
        converted[target] = value
      if target.endswith('.running_mean'):  # a BatchNorm: its counter too
        converted[target[:-len('running_mean')] + 'num_batches_tracked'] = (
            np.zeros((), np.int64))
      break
    else:
      unknown.append(f'{path} {tuple(array.shape)}')
  if unknown:
    raise ValueError(f'{len(unknown)} variables have no counterpart in '
                     f'{layout}: {unknown}')
  for target, (parts, found) in fused.items():
    missing = [part for part in parts if part not in found]
    if missing:
      raise ValueError(f'{target} of {layout} needs {list(parts)}; the '
                       f'variables lack {missing}.')
    converted[target] = np.concatenate([found[part] for part in parts])
  return converted


def rename_npz(path: str, family: str) -> str:
  for pattern, replacement in _NPZ_RENAMES[family]:
    path = re.sub(pattern, replacement, path)
  return path
