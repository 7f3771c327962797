"""Pretrained weights: import of timm state dicts, of Hugging Face
transformers' ViT / ViTMAE state dicts and of the `.npz` files of Google's
original ViT / Mixer code (and big_vision), onto this package's parameter
layout. (`vit_jax.pretrained` fetches timm's checkpoints from the Hub by
name.)

All importers end in the same place (`_fit_to_model`): the converted flat
parameters are checked against the shapes the target model expects, the
position embedding is resampled to the target resolution, the head is
replaced when the number of classes changes, and anything still missing,
unexpected or misshapen raises an error that lists it.

Importers return Flax variables: {'params': ...}, plus {'batch_stats':
...} for families with BatchNorm (XCiT, ConvMixer), so
`model.apply(variables, images, train=False)` works as they come. In the
flat '/'-joined form used while converting, a variable of another
collection than 'params' is named '<collection>:<path>' (e.g.
'batch_stats:stem/bn/mean').

`load_init_params` is `config.init_from`: either importer, or the variables
of another training run of this package (`checkpoint.restore_variables`).
"""

import io
import logging
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import checkpoint
from vit_jax import models
from vit_jax import paths
from vit_jax.models import common

FlatParams = Dict[str, np.ndarray]
ImageSize = Union[int, Tuple[int, int]]

# Families whose checkpoints can be imported here.
IMPORTABLE = ('vit', 'mixer', 'swin', 'convmixer', 'xcit')


# ----------------------------------------------------------------------------
# Flat '/'-joined parameter dicts.


def flatten(params: Mapping[str, Any], prefix: str = '') -> FlatParams:
  flat = {}
  for name, value in params.items():
    path = f'{prefix}{name}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + '/'))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
  tree: Dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


# ----------------------------------------------------------------------------
# Position embeddings.


def resample_posemb(posemb: np.ndarray, grid: Tuple[int, int],
                    num_prefix_tokens: int) -> np.ndarray:
  """Bilinear resampling of a learned position embedding to a new grid.

  posemb: [1, prefix + h*w, D] with a square old grid; the prefix rows (the
  class token's) are kept as they are (ViT paper, Sec. 3.2, "Fine-tuning
  and higher resolution").
  """
  prefix, patch_rows = posemb[:, :num_prefix_tokens], posemb[
      :, num_prefix_tokens:]
  old_side = int(round(np.sqrt(patch_rows.shape[1])))
  if old_side * old_side != patch_rows.shape[1]:
    raise ValueError(
        f'Cannot resample a position embedding of {patch_rows.shape[1]} '
        f'patch positions: not a square grid.')
  width = posemb.shape[-1]
  old_grid = patch_rows.reshape(old_side, old_side, width)
  new_grid = jax.image.resize(jnp.asarray(old_grid, jnp.float32),
                              (grid[0], grid[1], width), method='bilinear')
  new_rows = np.asarray(new_grid).reshape(1, grid[0] * grid[1], width)
  return np.concatenate([prefix, new_rows.astype(posemb.dtype)], axis=1)


# ----------------------------------------------------------------------------
# timm state dicts -> flat parameters.

# Each rule: (regex over the timm name, target path template, transform).
# Transforms get (array, model) and return either an array or a dict of
# {suffix: array} for names that split (timm's fused qkv).

def _linear(w, model):  # torch Linear weight [out, in] -> Dense kernel [in, out]
  del model
  return w.T


def _conv(w, model):  # torch Conv2d [out, in, kh, kw] -> HWIO
  del model
  return w.transpose(2, 3, 1, 0)


def _heads_in(w, model):  # [out=D, in=D] -> DenseGeneral [D, heads, hd]
  return w.T.reshape(w.shape[1], model.num_heads, -1)


def _heads_bias(b, model):  # [D] -> [heads, hd]
  return b.reshape(model.num_heads, -1)


def _heads_out(w, model):  # proj [D_out, D_in] -> [heads, hd, D_out]
  return w.T.reshape(model.num_heads, -1, w.shape[0])


def _split(names: Iterable[str], transform):
  names = tuple(names)

  def split(array, model):
    parts = np.split(array, len(names), axis=0)
    return {name: transform(part, model) for name, part in zip(names, parts)}
  return split


def _same(x, model):
  del model
  return x


_NORM = [(r'(.*)\.weight$', r'\1/scale', _same),
         (r'(.*)\.bias$', r'\1/bias', _same)]

_TIMM_VIT_RULES = [
    (r'^cls_token$', 'cls_token', _same),
    (r'^pos_embed$', 'pos_embed', _same),
    (r'^patch_embed\.proj\.weight$', 'patch_embed/kernel', _conv),
    (r'^patch_embed\.proj\.bias$', 'patch_embed/bias', _same),
    (r'^blocks\.(\d+)\.(norm[12])\.weight$', r'encoder/block_\1/\2/scale',
     _same),
    (r'^blocks\.(\d+)\.(norm[12])\.bias$', r'encoder/block_\1/\2/bias',
     _same),
    (r'^blocks\.(\d+)\.attn\.qkv\.weight$', r'encoder/block_\1/attn/{}/kernel',
     _split(('query', 'key', 'value'), _heads_in)),
    (r'^blocks\.(\d+)\.attn\.qkv\.bias$', r'encoder/block_\1/attn/{}/bias',
     _split(('query', 'key', 'value'), _heads_bias)),
    (r'^blocks\.(\d+)\.attn\.proj\.weight$', r'encoder/block_\1/attn/out/kernel',
     _heads_out),
    (r'^blocks\.(\d+)\.attn\.proj\.bias$', r'encoder/block_\1/attn/out/bias',
     _same),
    (r'^blocks\.(\d+)\.mlp\.(fc[12])\.weight$', r'encoder/block_\1/mlp/\2/kernel',
     _linear),
    (r'^blocks\.(\d+)\.mlp\.(fc[12])\.bias$', r'encoder/block_\1/mlp/\2/bias',
     _same),
    (r'^norm\.weight$', 'encoder_norm/scale', _same),
    (r'^norm\.bias$', 'encoder_norm/bias', _same),
    (r'^fc_norm\.weight$', 'fc_norm/scale', _same),
    (r'^fc_norm\.bias$', 'fc_norm/bias', _same),
    (r'^attn_pool\.latent$', 'map_head/probe', _same),
    (r'^attn_pool\.q\.weight$', 'map_head/attn/query/kernel', _heads_in),
    (r'^attn_pool\.q\.bias$', 'map_head/attn/query/bias', _heads_bias),
    (r'^attn_pool\.kv\.weight$', 'map_head/attn/{}/kernel',
     _split(('key', 'value'), _heads_in)),
    (r'^attn_pool\.kv\.bias$', 'map_head/attn/{}/bias',
     _split(('key', 'value'), _heads_bias)),
    (r'^attn_pool\.proj\.weight$', 'map_head/attn/out/kernel', _heads_out),
    (r'^attn_pool\.proj\.bias$', 'map_head/attn/out/bias', _same),
    (r'^attn_pool\.norm\.weight$', 'map_head/norm/scale', _same),
    (r'^attn_pool\.norm\.bias$', 'map_head/norm/bias', _same),
    (r'^attn_pool\.mlp\.(fc[12])\.weight$', r'map_head/mlp/\1/kernel', _linear),
    (r'^attn_pool\.mlp\.(fc[12])\.bias$', r'map_head/mlp/\1/bias', _same),
    (r'^head\.weight$', 'head/kernel', _linear),
    (r'^head\.bias$', 'head/bias', _same),
]

_TIMM_MIXER_RULES = [
    (r'^stem\.proj\.weight$', 'stem/kernel', _conv),
    (r'^stem\.proj\.bias$', 'stem/bias', _same),
    (r'^blocks\.(\d+)\.(norm[12])\.weight$', r'block_\1/\2/scale', _same),
    (r'^blocks\.(\d+)\.(norm[12])\.bias$', r'block_\1/\2/bias', _same),
    (r'^blocks\.(\d+)\.mlp_tokens\.(fc[12])\.weight$',
     r'block_\1/token_mixing/\2/kernel', _linear),
    (r'^blocks\.(\d+)\.mlp_tokens\.(fc[12])\.bias$',
     r'block_\1/token_mixing/\2/bias', _same),
    (r'^blocks\.(\d+)\.mlp_channels\.(fc[12])\.weight$',
     r'block_\1/channel_mixing/\2/kernel', _linear),
    (r'^blocks\.(\d+)\.mlp_channels\.(fc[12])\.bias$',
     r'block_\1/channel_mixing/\2/bias', _same),
    (r'^norm\.weight$', 'pre_head_norm/scale', _same),
    (r'^norm\.bias$', 'pre_head_norm/bias', _same),
    (r'^head\.weight$', 'head/kernel', _linear),
    (r'^head\.bias$', 'head/bias', _same),
]


def _swin_heads(model, stage_width: int) -> int:
  """Heads of the Swin stage whose width is `stage_width` (C * 2**i)."""
  for stage, heads in enumerate(model.num_heads):
    if model.width * 2 ** stage == stage_width:
      return heads
  raise ValueError(
      f'A Swin attention weight of width {stage_width} matches no stage of '
      f'the model (stage widths '
      f'{[model.width * 2 ** i for i in range(len(model.num_heads))]}).')


# Swin's heads differ per stage; each weight's width says which stage it is.
def _swin_heads_in(w, model):  # [out=D, in=D] -> [D, heads, hd]
  return w.T.reshape(w.shape[1], _swin_heads(model, w.shape[1]), -1)


def _swin_heads_bias(b, model):  # [D] -> [heads, hd]
  return b.reshape(_swin_heads(model, b.shape[0]), -1)


def _swin_heads_out(w, model):  # proj [D_out, D_in] -> [heads, hd, D_out]
  return w.T.reshape(_swin_heads(model, w.shape[1]), -1, w.shape[0])


def _buffer(x, model):  # a constant of the reference code: nothing to import.
  del x, model
  return {}


_SWIN_BLOCK = r'^layers\.(\d+)\.blocks\.(\d+)\.'
_SWIN_BLOCK_PATH = r'stage_\1/block_\2/'

_TIMM_SWIN_RULES = [
    (r'^patch_embed\.proj\.weight$', 'patch_embed/kernel', _conv),
    (r'^patch_embed\.proj\.bias$', 'patch_embed/bias', _same),
    (r'^patch_embed\.norm\.weight$', 'embed_norm/scale', _same),
    (r'^patch_embed\.norm\.bias$', 'embed_norm/bias', _same),
    (r'^layers\.(\d+)\.downsample\.norm\.weight$',
     r'stage_\1/patch_merging/norm/scale', _same),
    (r'^layers\.(\d+)\.downsample\.norm\.bias$',
     r'stage_\1/patch_merging/norm/bias', _same),
    (r'^layers\.(\d+)\.downsample\.reduction\.weight$',
     r'stage_\1/patch_merging/reduction/kernel', _linear),
    (_SWIN_BLOCK + r'(norm[12])\.weight$', _SWIN_BLOCK_PATH + r'\3/scale',
     _same),
    (_SWIN_BLOCK + r'(norm[12])\.bias$', _SWIN_BLOCK_PATH + r'\3/bias',
     _same),
    (_SWIN_BLOCK + r'attn\.relative_position_bias_table$',
     _SWIN_BLOCK_PATH + 'relative_position_bias_table', _same),
    (_SWIN_BLOCK + r'attn\.qkv\.weight$', _SWIN_BLOCK_PATH + 'attn/{}/kernel',
     _split(('query', 'key', 'value'), _swin_heads_in)),
    (_SWIN_BLOCK + r'attn\.qkv\.bias$', _SWIN_BLOCK_PATH + 'attn/{}/bias',
     _split(('query', 'key', 'value'), _swin_heads_bias)),
    (_SWIN_BLOCK + r'attn\.proj\.weight$', _SWIN_BLOCK_PATH + 'attn/out/kernel',
     _swin_heads_out),
    (_SWIN_BLOCK + r'attn\.proj\.bias$', _SWIN_BLOCK_PATH + 'attn/out/bias',
     _same),
    (_SWIN_BLOCK + r'mlp\.(fc[12])\.weight$',
     _SWIN_BLOCK_PATH + r'mlp/\3/kernel', _linear),
    (_SWIN_BLOCK + r'mlp\.(fc[12])\.bias$', _SWIN_BLOCK_PATH + r'mlp/\3/bias',
     _same),
    # Buffers, not parameters (older timm and the reference code save them):
    # recomputed from shapes by `vit_jax.models.swin`.
    (_SWIN_BLOCK + r'attn\.relative_position_index$', '', _buffer),
    (_SWIN_BLOCK + r'attn_mask$', '', _buffer),
    (r'^norm\.weight$', 'final_norm/scale', _same),
    (r'^norm\.bias$', 'final_norm/bias', _same),
    (r'^head\.(fc\.)?weight$', 'head/kernel', _linear),
    (r'^head\.(fc\.)?bias$', 'head/bias', _same),
]

# timm's ConvMixer is nested nn.Sequentials: stem.{0: conv, 2: BatchNorm};
# blocks.i.{0.fn.{0: depthwise conv, 2: BatchNorm}, 1: pointwise conv,
# 3: BatchNorm} (1, 2 inside: the activations, without weights). Depthwise
# weights [D, 1, k, k] become feature-group kernels [k, k, 1, D] through
# `_conv`. BatchNorm running averages go to the 'batch_stats' collection.
_CONVMIXER_NORMS = [
    (r'^stem\.2\.', 'embed_norm/'),
    (r'^blocks\.(\d+)\.0\.fn\.2\.', r'block_\1/norm1/'),
    (r'^blocks\.(\d+)\.3\.', r'block_\1/norm2/'),
]

_TIMM_CONVMIXER_RULES = [
    (r'^stem\.0\.weight$', 'patch_embed/kernel', _conv),
    (r'^stem\.0\.bias$', 'patch_embed/bias', _same),
    (r'^blocks\.(\d+)\.0\.fn\.0\.weight$', r'block_\1/depthwise/kernel', _conv),
    (r'^blocks\.(\d+)\.0\.fn\.0\.bias$', r'block_\1/depthwise/bias', _same),
    (r'^blocks\.(\d+)\.1\.weight$', r'block_\1/pointwise/kernel', _conv),
    (r'^blocks\.(\d+)\.1\.bias$', r'block_\1/pointwise/bias', _same),
    *[rule for prefix, path in _CONVMIXER_NORMS for rule in [
        (prefix + r'weight$', path + 'scale', _same),
        (prefix + r'bias$', path + 'bias', _same),
        (prefix + r'running_mean$', 'batch_stats:' + path + 'mean', _same),
        (prefix + r'running_var$', 'batch_stats:' + path + 'var', _same),
        (prefix + r'num_batches_tracked$', '', _buffer)]],
    (r'^head\.weight$', 'head/kernel', _linear),
    (r'^head\.bias$', 'head/bias', _same),
]

_XCIT_BLOCK = r'^blocks\.(\d+)\.'
_XCIT_CLASS_BLOCK = r'^cls_attn_blocks\.(\d+)\.'

# timm's Xcit (and the authors' layout: 'pos_embeder.', fused class-attention
# qkv). Its BatchNorm running averages go to the 'batch_stats' collection.
_TIMM_XCIT_RULES = [
    (r'^cls_token$', 'cls_token', _same),
    # Convolution + BatchNorm pairs at every other index of timm's
    # Sequential (the GELUs between them hold nothing).
    *[(rf'^patch_embed\.proj\.{2 * layer}\.0\.weight$',
       f'patch_embed/conv_{layer}/kernel', _conv) for layer in range(4)],
    *[(rf'^patch_embed\.proj\.{2 * layer}\.1\.{timm_name}$',
       f'{collection}patch_embed/bn_{layer}/{name}', transform)
      for layer in range(4)
      for timm_name, collection, name, transform in (
          ('weight', '', 'scale', _same), ('bias', '', 'bias', _same),
          ('running_mean', 'batch_stats:', 'mean', _same),
          ('running_var', 'batch_stats:', 'var', _same),
          ('num_batches_tracked', '', '', _buffer))],
    # The Fourier features' 1x1 convolution [D, 64, 1, 1] -> Dense [64, D].
    (r'^pos_embed(er)?\.token_projection\.weight$', 'pos_embed/kernel',
     lambda w, model: w[:, :, 0, 0].T),
    (r'^pos_embed(er)?\.token_projection\.bias$', 'pos_embed/bias', _same),
    # XCiT layers: timm's norm1 / norm3 / norm2 and gamma1 / gamma3 / gamma2
    # belong to the attention / LPI / MLP branches.
    (_XCIT_BLOCK + r'norm1\.weight$', r'block_\1/norm_attn/scale', _same),
    (_XCIT_BLOCK + r'norm1\.bias$', r'block_\1/norm_attn/bias', _same),
    (_XCIT_BLOCK + r'norm3\.weight$', r'block_\1/norm_lpi/scale', _same),
    (_XCIT_BLOCK + r'norm3\.bias$', r'block_\1/norm_lpi/bias', _same),
    (_XCIT_BLOCK + r'norm2\.weight$', r'block_\1/norm_mlp/scale', _same),
    (_XCIT_BLOCK + r'norm2\.bias$', r'block_\1/norm_mlp/bias', _same),
    (_XCIT_BLOCK + r'gamma1$', r'block_\1/gamma_attn', _same),
    (_XCIT_BLOCK + r'gamma3$', r'block_\1/gamma_lpi', _same),
    (_XCIT_BLOCK + r'gamma2$', r'block_\1/gamma_mlp', _same),
    (_XCIT_BLOCK + r'attn\.temperature$', r'block_\1/attn/temperature',
     lambda t, model: t.reshape(-1)),  # [heads, 1, 1] -> [heads]
    (_XCIT_BLOCK + r'attn\.qkv\.weight$', r'block_\1/attn/{}/kernel',
     _split(('query', 'key', 'value'), _heads_in)),
    (_XCIT_BLOCK + r'attn\.qkv\.bias$', r'block_\1/attn/{}/bias',
     _split(('query', 'key', 'value'), _heads_bias)),
    (_XCIT_BLOCK + r'attn\.proj\.weight$', r'block_\1/attn/out/kernel',
     _heads_out),
    (_XCIT_BLOCK + r'attn\.proj\.bias$', r'block_\1/attn/out/bias', _same),
    (_XCIT_BLOCK + r'local_mp\.(conv[12])\.weight$',
     r'block_\1/lpi/\2/kernel', _conv),  # depthwise [D, 1, 3, 3]
    (_XCIT_BLOCK + r'local_mp\.(conv[12])\.bias$', r'block_\1/lpi/\2/bias',
     _same),
    (_XCIT_BLOCK + r'local_mp\.bn\.weight$', r'block_\1/lpi/bn/scale',
     _same),
    (_XCIT_BLOCK + r'local_mp\.bn\.bias$', r'block_\1/lpi/bn/bias', _same),
    (_XCIT_BLOCK + r'local_mp\.bn\.running_mean$',
     r'batch_stats:block_\1/lpi/bn/mean', _same),
    (_XCIT_BLOCK + r'local_mp\.bn\.running_var$',
     r'batch_stats:block_\1/lpi/bn/var', _same),
    (_XCIT_BLOCK + r'local_mp\.bn\.num_batches_tracked$', '', _buffer),
    (_XCIT_BLOCK + r'mlp\.(fc[12])\.weight$', r'block_\1/mlp/\2/kernel',
     _linear),
    (_XCIT_BLOCK + r'mlp\.(fc[12])\.bias$', r'block_\1/mlp/\2/bias', _same),
    # Class-attention layers.
    (_XCIT_CLASS_BLOCK + r'(norm[12])\.weight$', r'class_block_\1/\2/scale',
     _same),
    (_XCIT_CLASS_BLOCK + r'(norm[12])\.bias$', r'class_block_\1/\2/bias',
     _same),
    (_XCIT_CLASS_BLOCK + r'(gamma[12])$', r'class_block_\1/\2', _same),
    *[(_XCIT_CLASS_BLOCK + rf'attn\.{letter}\.weight$',
       rf'class_block_\1/attn/{name}/kernel', _heads_in)
      for letter, name in (('q', 'query'), ('k', 'key'), ('v', 'value'))],
    *[(_XCIT_CLASS_BLOCK + rf'attn\.{letter}\.bias$',
       rf'class_block_\1/attn/{name}/bias', _heads_bias)
      for letter, name in (('q', 'query'), ('k', 'key'), ('v', 'value'))],
    (_XCIT_CLASS_BLOCK + r'attn\.qkv\.weight$',
     r'class_block_\1/attn/{}/kernel',
     _split(('query', 'key', 'value'), _heads_in)),
    (_XCIT_CLASS_BLOCK + r'attn\.qkv\.bias$', r'class_block_\1/attn/{}/bias',
     _split(('query', 'key', 'value'), _heads_bias)),
    (_XCIT_CLASS_BLOCK + r'attn\.proj\.weight$',
     r'class_block_\1/attn/out/kernel', _heads_out),
    (_XCIT_CLASS_BLOCK + r'attn\.proj\.bias$', r'class_block_\1/attn/out/bias',
     _same),
    (_XCIT_CLASS_BLOCK + r'mlp\.(fc[12])\.weight$',
     r'class_block_\1/mlp/\2/kernel', _linear),
    (_XCIT_CLASS_BLOCK + r'mlp\.(fc[12])\.bias$',
     r'class_block_\1/mlp/\2/bias', _same),
    (r'^norm\.weight$', 'norm/scale', _same),
    (r'^norm\.bias$', 'norm/bias', _same),
    (r'^head\.weight$', 'head/kernel', _linear),
    (r'^head\.bias$', 'head/bias', _same),
]

_TIMM_RULES = {'vit': _TIMM_VIT_RULES, 'mixer': _TIMM_MIXER_RULES,
               'swin': _TIMM_SWIN_RULES,
               'convmixer': _TIMM_CONVMIXER_RULES,
               'xcit': _TIMM_XCIT_RULES}


# ----------------------------------------------------------------------------
# Hugging Face transformers state dicts (ViT, ViTMAE) -> flat parameters.
#
# Two generations of names, both read: the checkpoints on the Hub (and
# transformers 4.x) say 'encoder.layer.N.attention.attention.query',
# 'attention.output.dense', 'intermediate.dense', 'output.dense';
# transformers 5.x's modules say 'layers.N.attention.q_proj', 'o_proj',
# 'mlp.fc1', 'mlp.fc2' (and write the older names back when saving). ViTModel
# has no 'vit.' prefix, ViTForImageClassification and ViTMAE* have one.

def _decoder_heads_in(w, model):  # [out=D, in=D] -> [D, heads, hd]
  return w.T.reshape(w.shape[1], model.decoder_num_heads, -1)


def _decoder_heads_bias(b, model):  # [D] -> [heads, hd]
  return b.reshape(model.decoder_num_heads, -1)


def _decoder_heads_out(w, model):  # [D_out, D_in] -> [heads, hd, D_out]
  return w.T.reshape(model.decoder_num_heads, -1, w.shape[0])


# (older name, transformers 5.x name, ours) of a block's linear layers.
_HF_BLOCK_LINEARS = (
    ('attention.attention.query', 'attention.q_proj', 'attn/query'),
    ('attention.attention.key', 'attention.k_proj', 'attn/key'),
    ('attention.attention.value', 'attention.v_proj', 'attn/value'),
    ('attention.output.dense', 'attention.o_proj', 'attn/out'),
    ('intermediate.dense', 'mlp.fc1', 'mlp/fc1'),
    ('output.dense', 'mlp.fc2', 'mlp/fc2'),
)


def _hf_block_rules(block: str, path: str, heads_in, heads_bias, heads_out):
  """Rules for the transformer blocks matched by `block` (a regex with the
  block index as group 1), to `path` (a template with \\1)."""
  rules = [(block + r'layernorm_before\.weight$', path + 'norm1/scale', _same),
           (block + r'layernorm_before\.bias$', path + 'norm1/bias', _same),
           (block + r'layernorm_after\.weight$', path + 'norm2/scale', _same),
           (block + r'layernorm_after\.bias$', path + 'norm2/bias', _same)]
  for older, newer, ours in _HF_BLOCK_LINEARS:
    if ours == 'attn/out':
      kernel, bias = heads_out, _same
    elif ours.startswith('attn/'):
      kernel, bias = heads_in, heads_bias
    else:
      kernel, bias = _linear, _same
    for name in (older, newer):
      rules.append((block + re.escape(name) + r'\.weight$',
                    path + ours + '/kernel', kernel))
      rules.append((block + re.escape(name) + r'\.bias$', path + ours + '/bias',
                    bias))
  return rules


_HF_ENCODER = r'^(?:vit\.)?'  # ViTModel: no prefix; the others: 'vit.'

_HF_EMBEDDING_RULES = [
    (_HF_ENCODER + r'embeddings\.cls_token$', 'cls_token', _same),
    (_HF_ENCODER + r'embeddings\.patch_embeddings\.projection\.weight$',
     'patch_embed/kernel', _conv),
    (_HF_ENCODER + r'embeddings\.patch_embeddings\.projection\.bias$',
     'patch_embed/bias', _same),
    *_hf_block_rules(_HF_ENCODER + r'(?:encoder\.layer|layers)\.(\d+)\.',
                     r'encoder/block_\1/', _heads_in, _heads_bias, _heads_out),
    (_HF_ENCODER + r'layernorm\.weight$', 'encoder_norm/scale', _same),
    (_HF_ENCODER + r'layernorm\.bias$', 'encoder_norm/bias', _same),
]

_HF_VIT_RULES = [
    *_HF_EMBEDDING_RULES,
    (_HF_ENCODER + r'embeddings\.position_embeddings$', 'pos_embed', _same),
    # ViTModel's pooler: the tanh pre-logits layer of the original ViT.
    (_HF_ENCODER + r'pooler\.dense\.weight$', 'pre_logits/kernel', _linear),
    (_HF_ENCODER + r'pooler\.dense\.bias$', 'pre_logits/bias', _same),
    (r'^classifier\.weight$', 'head/kernel', _linear),
    (r'^classifier\.bias$', 'head/bias', _same),
]

_HF_MAE_RULES = [
    *_HF_EMBEDDING_RULES,
    # Fixed sin-cos tables that HF stores: `vit_jax.models.mae` computes them.
    (_HF_ENCODER + r'embeddings\.position_embeddings$', '', _buffer),
    (r'^decoder\.decoder_pos_embed$', '', _buffer),
    (r'^decoder\.mask_token$', 'mask_token', _same),
    (r'^decoder\.decoder_embed\.weight$', 'decoder_embed/kernel', _linear),
    (r'^decoder\.decoder_embed\.bias$', 'decoder_embed/bias', _same),
    # 'decoder_encoder.layer': how transformers 5.x's save_pretrained
    # writes 'decoder_layers' back (and reads it again).
    *_hf_block_rules(r'^decoder\.decoder_(?:layers|encoder\.layer)\.(\d+)\.',
                     r'decoder/block_\1/', _decoder_heads_in,
                     _decoder_heads_bias, _decoder_heads_out),
    (r'^decoder\.decoder_norm\.weight$', 'decoder_norm/scale', _same),
    (r'^decoder\.decoder_norm\.bias$', 'decoder_norm/bias', _same),
    (r'^decoder\.decoder_pred\.weight$', 'decoder_pred/kernel', _linear),
    (r'^decoder\.decoder_pred\.bias$', 'decoder_pred/bias', _same),
]

# Family -> rules: 'vit' for ViTModel / ViTForImageClassification, 'mae' for
# ViTMAEForPreTraining.
_HF_RULES = {'vit': _HF_VIT_RULES, 'mae': _HF_MAE_RULES}


def _apply_rules(source: Mapping[str, np.ndarray], rules, model,
                 source_name: str) -> FlatParams:
  """Renames (and reshapes) every source entry by the first matching rule."""
  converted: FlatParams = {}
  unknown: List[str] = []
  for name, array in source.items():
    array = np.asarray(array)
    for pattern, template, transform in rules:
      match = re.match(pattern, name)
      if match is None:
        continue
      target = match.expand(template)
      result = transform(array, model)
      if isinstance(result, dict):
        for part, value in result.items():
          converted[target.format(part)] = value
      else:
        converted[target] = result
      break
    else:
      unknown.append(f'{name} {tuple(array.shape)}')
  if unknown:
    raise ValueError(
        f'{len(unknown)} {source_name} entries have no counterpart in this '
        f'model family: {unknown}')
  return converted


# ----------------------------------------------------------------------------
# Google's original ViT / Mixer `.npz` (and big_vision) -> flat parameters.

_NPZ_RULES = [
    # Original ViT (google-research/vision_transformer) names.
    (r'^embedding/', 'patch_embed/'),
    (r'^cls$', 'cls_token'),
    (r'^Transformer/posembed_input/pos_embedding$', 'pos_embed'),
    (r'^pos_embedding$', 'pos_embed'),  # big_vision
    (r'^Transformer/encoder_norm/', 'encoder_norm/'),
    (r'^Transformer/encoderblock_(\d+)/', r'encoder/block_\1/'),
    (r'^Transformer/encoderblock/', 'encoder/blocks/'),  # big_vision, scanned
    (r'^MAPHead_0/', 'map_head/'),  # big_vision
    # Inside blocks: original names, then big_vision's.
    (r'/LayerNorm_0/', '/norm1/'),
    (r'/MultiHeadDotProductAttention_[01]/', '/attn/'),
    (r'/LayerNorm_[12]/', '/norm2/'),
    (r'/MlpBlock_[03]/Dense_0/', '/mlp/fc1/'),
    (r'/MlpBlock_[03]/Dense_1/', '/mlp/fc2/'),
    # Mixer.
    (r'^MixerBlock_(\d+)/', r'block_\1/'),
    (r'/(token_mixing|channel_mixing)/Dense_0/', r'/\1/fc1/'),
    (r'/(token_mixing|channel_mixing)/Dense_1/', r'/\1/fc2/'),
    (r'^pre_head_layer_norm/', 'pre_head_norm/'),
]


def _rename_npz(name: str, family: str) -> str:
  renamed = name
  for pattern, replacement in _NPZ_RULES:
    renamed = re.sub(pattern, replacement, renamed)
  if family == 'vit' and renamed.startswith('map_head/'):
    renamed = renamed.replace('map_head/norm1/', 'map_head/norm/')
  return renamed


# ----------------------------------------------------------------------------
# Fitting converted parameters to a model.


COLLECTION_SEPARATOR = ':'


def flatten_variables(variables: Mapping[str, Any]) -> FlatParams:
  """{'params': tree, 'batch_stats': tree} -> flat paths; a collection
  other than 'params' prefixes its paths with '<collection>:'."""
  flat = {}
  for collection, tree in variables.items():
    prefix = '' if collection == 'params' else (collection
                                               + COLLECTION_SEPARATOR)
    flat.update(flatten(tree, prefix))
  return flat


def unflatten_variables(flat: Mapping[str, Any]) -> Dict[str, Any]:
  """Inverse of `flatten_variables`; always has 'params'."""
  by_collection: Dict[str, Dict[str, Any]] = {'params': {}}
  for path, value in flat.items():
    collection, sep, rest = path.partition(COLLECTION_SEPARATOR)
    if sep:
      by_collection.setdefault(collection, {})[rest] = value
    else:
      by_collection['params'][path] = value
  return {collection: unflatten(entries)
          for collection, entries in by_collection.items()}


def _expected_shapes(model, image_size: Tuple[int, int],
                     channels: int) -> Dict[str, Tuple[int, ...]]:
  unrolled = model.clone(scan=False) if getattr(model, 'scan', False) else model
  images = jax.ShapeDtypeStruct((1, *image_size, channels), jnp.float32)
  variables = jax.eval_shape(unrolled.init, jax.random.PRNGKey(0), images)
  return {path: tuple(leaf.shape)
          for path, leaf in flatten_variables(variables).items()}


def _input_channels(loaded: FlatParams, model,
                    image_size: Tuple[int, int]) -> int:
  """The image channels `loaded` was trained on: read from the parameters
  that take the images (those whose shape follows the number of channels,
  e.g. the patch embedding's kernel). 3 when `loaded` has none of them:
  they are then reported with the other missing parameters. A model that
  fixes its channels (MAE's `num_channels`) takes only those."""
  if hasattr(model, 'num_channels'):
    return model.num_channels
  grey = _expected_shapes(model, image_size, 1)
  pair = _expected_shapes(model, image_size, 2)
  channels = set()
  for path, shape in grey.items():
    if path in loaded and pair.get(path) != shape:
      axis = next(i for i, (a, b) in enumerate(zip(shape, pair[path]))
                  if a != b)
      if np.ndim(loaded[path]) == len(shape):
        channels.add(np.shape(loaded[path])[axis])
  if len(channels) > 1:
    raise ValueError(f'The checkpoint\'s input layers disagree on the '
                     f'number of image channels: {sorted(channels)}.')
  return channels.pop() if channels else 3


def _fit_to_model(loaded: FlatParams, name: str, model,
                  image_size: Optional[ImageSize],
                  source_name: str) -> Dict[str, Any]:
  """Checks, resamples and completes `loaded` (flat, see
  `flatten_variables`) for `model` (of family `name`); returns its
  variables."""
  if image_size is None:
    image_size = models.checkpoint_image_size(name, model, loaded)
  elif isinstance(image_size, int):
    image_size = (image_size, image_size)
  expected = _expected_shapes(model, image_size,
                              _input_channels(loaded, model, image_size))
  loaded = dict(loaded)

  if 'pos_embed' in loaded and 'pos_embed' in expected:
    old_shape, new_shape = loaded['pos_embed'].shape, expected['pos_embed']
    prefix = 1 if 'cls_token' in expected else 0
    same_prefix = prefix == (1 if 'cls_token' in loaded else 0)
    if old_shape != new_shape and old_shape[-1] == new_shape[-1] and (
        same_prefix):
      grid = (image_size[0] // model.patch_size,
              image_size[1] // model.patch_size)
      logging.info('Resampling position embedding %s -> %s.', old_shape,
                   new_shape)
      loaded['pos_embed'] = resample_posemb(loaded['pos_embed'], grid, prefix)

  # A new task: drop the old head (and the pre-logits layer, which the ViT
  # paper removes for fine-tuning, Sec. 3.1) and start a zero head.
  head_paths = ('head/kernel', 'head/bias')
  head_changes = any(loaded.get(p, np.zeros(0)).shape != expected.get(p)
                     for p in head_paths if p in loaded or p in expected)
  if head_changes:
    for path in head_paths:
      loaded.pop(path, None)
    if 'head/kernel' in expected:
      logging.info('Replacing the head: new shape %s.',
                   expected['head/kernel'])
      loaded['head/kernel'] = np.zeros(expected['head/kernel'], np.float32)
      loaded['head/bias'] = np.full(expected['head/bias'],
                                    getattr(model, 'head_bias_init', 0.0),
                                    np.float32)
    if 'pre_logits/kernel' not in expected:
      loaded.pop('pre_logits/kernel', None)
      loaded.pop('pre_logits/bias', None)

  missing = sorted(f'{p} {expected[p]}' for p in expected if p not in loaded)
  extra = sorted(f'{p} {tuple(loaded[p].shape)}' for p in loaded
                 if p not in expected)
  misshapen = sorted(
      f'{p}: checkpoint {tuple(loaded[p].shape)} vs model {expected[p]}'
      for p in loaded if p in expected and tuple(loaded[p].shape) != expected[p])
  if missing or extra or misshapen:
    problems = []
    if missing:
      problems.append(f'missing from the checkpoint: {missing}')
    if extra:
      problems.append(f'unexpected in the checkpoint: {extra}')
    if misshapen:
      problems.append(f'shape mismatches: {misshapen}')
    raise ValueError(
        f'The {source_name} does not fit the model (wrong variant or '
        f'options?). ' + '; '.join(problems))

  variables = unflatten_variables(
      {p: np.asarray(v, np.float32) for p, v in loaded.items()})
  if getattr(model, 'scan', False):
    variables = {collection: common.stack_blocks(tree)
                 for collection, tree in variables.items()}
  return variables


def _build(name: str, model_kwargs: Mapping[str, Any]):
  if name not in IMPORTABLE:
    raise ValueError(f'Cannot import checkpoints for model {name!r}; '
                     f'valid models: {list(IMPORTABLE)}')
  return models.get_model(name, **model_kwargs)


def from_timm(state_dict: Mapping[str, Any], name: str,
              image_size: Optional[ImageSize] = None,
              **model_kwargs) -> Dict[str, Any]:
  """Converts a timm state dict (names -> arrays) to this package's variables.

  Args:
    state_dict: timm parameter names to numpy arrays (e.g. read with
      `safetensors.numpy.load_file`) or anything `np.asarray` takes.
    name: model family, one of IMPORTABLE ('vit', 'mixer', 'swin'; for Swin
      timm's layout, where stage i > 0 starts with `layers.i.downsample`).
    image_size: resolution the params are for; the position embedding is
      resampled to it. Default: the checkpoint's own (Swin: the resolution
      its window size is for, `Swin.default_image_size`).
    **model_kwargs: as for `get_model(name, ...)`, e.g. variant='B/16',
      pool_type='map', num_classes=10 (a different num_classes replaces the
      head with a zero-initialised one).

  Returns:
    variables for `get_model(name, **model_kwargs)`: {'params': ...}, plus
    'batch_stats' (timm's BatchNorm running averages) for the families
    with BatchNorm; scanned layout if the kwargs ask for scan=True.
  """
  model = _build(name, model_kwargs)
  converted = _apply_rules(state_dict, _TIMM_RULES[name], model,
                           'timm state dict')
  return _fit_to_model(converted, name, model, image_size, 'timm state dict')


HF_IMPORTABLE = tuple(_HF_RULES)


def from_hf(state_dict: Mapping[str, Any], name: str,
            image_size: Optional[ImageSize] = None,
            **model_kwargs) -> Dict[str, Any]:
  """Converts a Hugging Face transformers state dict to this package's
  variables.

  Args:
    state_dict: transformers parameter names to numpy arrays (e.g. a
      checkpoint's model.safetensors read with
      `safetensors.numpy.load_file`), in the names of the Hub's checkpoints
      ('vit.encoder.layer.0.attention.attention.query.weight') or of
      transformers 5.x's modules ('vit.layers.0.attention.q_proj.weight').
    name: one of HF_IMPORTABLE: 'vit' (ViTModel, whose pooler becomes the
      pre-logits layer: pass representation_size=hidden_size; or
      ViTForImageClassification, whose classifier becomes the head) or
      'mae' (ViTMAEForPreTraining; its fixed sin-cos tables are dropped).
    image_size: as for `from_timm`.
    **model_kwargs: as for `get_model(name, ...)`. transformers' ViTs are
      class-token models (pool_type='cls', the default), with their
      config's layer_norm_eps: 1e-12 by default and in Google's ViT
      checkpoints (this package's default is 1e-6); ViTMAE checkpoints
      use 1e-6.

  Returns:
    variables for `get_model(name, **model_kwargs)`: {'params': ...}.
  """
  if name not in _HF_RULES:
    raise ValueError(f'Cannot import Hugging Face checkpoints for model '
                     f'{name!r}; valid models: {list(HF_IMPORTABLE)}')
  model = models.get_model(name, **model_kwargs)
  converted = _apply_rules(state_dict, _HF_RULES[name], model,
                           'Hugging Face state dict')
  return _fit_to_model(converted, name, model, image_size,
                       'Hugging Face state dict')


def load_npz(path, name: str = 'vit', image_size: Optional[ImageSize] = None,
             **model_kwargs) -> Dict[str, Any]:
  """Reads a `.npz` checkpoint of Google's original ViT / Mixer code.

  The file maps '/'-joined Flax parameter paths ('Transformer/encoderblock_0/
  MultiHeadDotProductAttention_1/query/kernel', 'MixerBlock_0/token_mixing/
  Dense_0/kernel', ...) to arrays; big_vision's layout (scanned
  'Transformer/encoderblock', 'MAPHead_0', top-level 'pos_embedding') is read
  too. Other arguments and the returned variables as for `from_timm`.
  """
  model = _build(name, model_kwargs)
  raw = _read_npz(path)
  renamed = {_rename_npz(key, name): value for key, value in raw.items()}
  flat = flatten(common.unstack_blocks(unflatten(renamed)))
  return _fit_to_model(flat, name, model, image_size,
                       f'npz checkpoint {path}')


def _read_npz(path) -> Dict[str, np.ndarray]:
  """The arrays of an .npz file, local or on gs:// (`vit_jax.paths`)."""
  if isinstance(path, str) and not paths.is_local(path):
    path = io.BytesIO(paths.read_bytes(path))
  with np.load(path, allow_pickle=False) as archive:
    return {key: archive[key] for key in archive.files}


INIT_KINDS = ('own', 'npz', 'timm')


def load_init_params(kind: str, path: str, name: str,
                     image_size: Optional[ImageSize] = None,
                     **model_kwargs) -> Dict[str, Any]:
  """Variables to start training from, fitted to `get_model(name, **kwargs)`
  ({'params'}, plus 'batch_stats' for families with BatchNorm).

  kind: 'own' (a vit_jax training run: its workdir, or the workdir's
  checkpoints/ directory; the run's model family, read from the workdir's
  config.json, is converted to `name` by `models.convert_params`, e.g. an
  MAE run gives its encoder, for `get_model('vit', pool_type='cls',
  posemb='sincos2d')`), 'npz' (Google's original / big_vision layout),
  'timm' (a .safetensors or .npz file of a timm state dict). The head is
  replaced and the position embedding resampled as for `from_timm`.
  `path` may be local or gs:// (`vit_jax.paths`).
  """
  common.check_choice('init_from kind', kind, INIT_KINDS)
  paths.check_supported(path)
  if kind == 'npz':
    return load_npz(path, name, image_size=image_size, **model_kwargs)
  if kind == 'timm':
    if path.endswith('.safetensors'):
      from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
      state_dict = (safetensors_numpy.load_file(path) if paths.is_local(path)
                    else safetensors_numpy.load(paths.read_bytes(path)))
    else:
      state_dict = _read_npz(path)
    return from_timm(state_dict, name, image_size=image_size, **model_kwargs)
  model = models.get_model(name, **model_kwargs)
  candidate = paths.join(path, 'checkpoints')
  if paths.isdir(candidate):
    workdir, directory = path, candidate
  else:
    workdir, directory = paths.parent(path), path
  source_name = _run_model_name(workdir)  # before reading checkpoints
  source = checkpoint.restore_variables(directory)
  variables = {'params': models.convert_params(source_name, name,
                                               source.pop('params'))}
  if source_name == name:  # the same family: its statistics too
    variables.update(source)
  flat = flatten_variables({collection: common.unstack_blocks(tree)
                            for collection, tree in variables.items()})
  return _fit_to_model(flat, name, model, image_size,
                       f'checkpoint {directory}')


def _run_model_name(workdir: str) -> str:
  """The model family of the training run in `workdir`, from the
  config.json that every run writes there."""
  path = paths.join(workdir, 'config.json')
  config = paths.read_json(path)
  if config is None:
    raise FileNotFoundError(
        f'{path} not found: init_from kind \'own\' needs the source run\'s '
        f'config.json (written by every training run) to know its model '
        f'family; give the run\'s workdir or its checkpoints/ directory.')
  try:
    return config['model']['name']
  except (KeyError, TypeError) as error:
    raise ValueError(f'{path} has no model.name.') from error
