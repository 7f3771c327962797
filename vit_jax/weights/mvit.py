"""MViT's weights in timm's layout (MultiScaleVit: `stages.i.blocks.j`,
images) and in torchvision's (video MViT: one flat `blocks.n` list, renamed
here to and from `stages.i.blocks.j` by the model's depths, see
`torchvision_names`)."""

import re
from typing import Any, Dict, Mapping, Tuple

import numpy as np

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights.core import CONV, Architecture, dense, entry, norm

NAME = 'mvit'

# torch ConvNd [out, in, *kernel] <-> Flax [*kernel, in, out], any N
# (the 2-D patch embedding and pooling of images, 3-D of clips).
CONV_ND = core.Transform(
    'conv_nd', lambda w, heads: w.transpose(*range(2, w.ndim), 1, 0),
    lambda k: k.transpose(k.ndim - 1, k.ndim - 2, *range(k.ndim - 2)))
# torchvision's class token and class position row [C] <-> [1, 1, C] / [C].
TOKEN = core.Transform('token', lambda x, heads: x.reshape(1, 1, -1),
                       lambda x: x.reshape(-1))

_OURS = 'stage_{0}/block_{1}/'
_OURS_ATTN = _OURS + 'attn/'


def _block(theirs: str, attn: str, proj: str, mlp: Tuple[str, str],
           pool: str, pool_norm: str, axes: str):
  """One block's entries; `pool` / `pool_norm`: the pooling convolution
  and its norm, '{}' standing for q, k or v; `axes`: the grid axes with
  relative position tables."""
  return [
      *[e for n in ('norm1', 'norm2') for e in norm(theirs + n, _OURS + n)],
      *dense(theirs + attn + 'qkv', _OURS_ATTN + 'qkv'),
      *dense(theirs + attn + proj, _OURS_ATTN + 'proj'),
      *[entry(theirs + attn + pool.format(p) + '.weight',
              _OURS_ATTN + f'pool_{p}/kernel', CONV_ND) for p in 'qkv'],
      *[e for p in 'qkv' for e in norm(theirs + attn + pool_norm.format(p),
                                       _OURS_ATTN + f'norm_{p}')],
      *[entry(theirs + attn + f'rel_pos_{a}', _OURS_ATTN + f'rel_pos_{a}')
        for a in axes],
      *dense(theirs + 'mlp.' + mlp[0], _OURS + 'mlp/fc1'),
      *dense(theirs + 'mlp.' + mlp[1], _OURS + 'mlp/fc2'),
  ]


_TIMM_BLOCK = 'stages.{0}.blocks.{1}.'
TIMM = [
    # 2-D (timm's MViTv2 takes images): CONV, export's first_conv.
    *dense('patch_embed.proj', 'patch_embed', CONV),
    entry('cls_token', 'cls_token'),
    *_block(_TIMM_BLOCK, 'attn.', 'proj', ('fc1', 'fc2'), 'pool_{}',
            'norm_{}', 'hw'),
    *dense(_TIMM_BLOCK + 'shortcut_proj_attn', _OURS + 'shortcut_proj_attn'),
    *dense(_TIMM_BLOCK + 'shortcut_proj_mlp', _OURS + 'shortcut_proj_mlp'),
    *norm('norm', 'final_norm'),
    *dense('head.fc', 'head'),
]

# torchvision's names after `torchvision_names` (its `blocks.n.` as
# `stages.i.blocks.j.`; the widening Linear, `project` whichever branch it
# is on, as `project_attn` or `project_mlp` by the model's `expand_attn`).
_TV_BLOCK = 'stages.{0}.blocks.{1}.'
TORCHVISION = [
    *dense('conv_proj', 'patch_embed', CONV_ND),
    entry('pos_encoding.class_token', 'cls_token', TOKEN),
    entry('pos_encoding.spatial_pos', 'pos_embed_spatial'),
    entry('pos_encoding.temporal_pos', 'pos_embed_temporal'),
    entry('pos_encoding.class_pos', 'pos_embed_class'),
    *_block(_TV_BLOCK, 'attn.', 'project.0', ('0', '3'), 'pool_{}.pool',
            'pool_{}.norm_act.0', 'thw'),
    *dense(_TV_BLOCK + 'project_attn', _OURS + 'shortcut_proj_attn'),
    *dense(_TV_BLOCK + 'project_mlp', _OURS + 'shortcut_proj_mlp'),
    *norm('norm', 'final_norm'),
    *dense('head.1', 'head'),
]


def _block_starts(model) -> np.ndarray:
  return np.cumsum([0, *model.depths])


def torchvision_names(state_dict: Mapping[str, Any], model
                      ) -> Dict[str, Any]:
  """torchvision's `blocks.n.` as `stages.i.blocks.j.` by the model's
  depths, and `project` as `project_attn` / `project_mlp` (the TORCHVISION
  table's names); a block index past the depths is an error naming them."""
  starts = _block_starts(model)
  branch = 'project_attn.' if model.expand_attn else 'project_mlp.'

  def rename(match):
    index = int(match[1])
    if index >= starts[-1]:
      raise ValueError(
          f'torchvision MViT block {index} is past the model\'s '
          f'{starts[-1]} blocks (depths {tuple(model.depths)}): wrong '
          f'variant?')
    stage = int(np.searchsorted(starts, index, side='right')) - 1
    rest = branch if match[2] else ''
    return f'stages.{stage}.blocks.{index - starts[stage]}.{rest}'
  return {re.sub(r'^blocks\.(\d+)\.(project\.)?', rename, name): value
          for name, value in state_dict.items()}


def from_torchvision_names(state_dict: Mapping[str, Any], model
                           ) -> Dict[str, Any]:
  """Inverse of `torchvision_names`."""
  starts = _block_starts(model)
  return {re.sub(r'^stages\.(\d+)\.blocks\.(\d+)\.(project_(attn|mlp)\.)?',
                 lambda m: f'blocks.{starts[int(m[1])] + int(m[2])}.'
                 + ('project.' if m[3] else ''),
                 name): value
          for name, value in state_dict.items()}


# timm's MViTv2 image entry points: the image variants at 224 px (timm's
# pretrained tags on the Hub, timm 1.0.31).
TIMM_ARCHITECTURES = {
    f'mvitv2_{size}': Architecture('mvit', dict(variant=variant), 224,
                                   tags=('fb_in1k',))
    for size, variant in (('tiny', 'T'), ('small', 'S'), ('base', 'B'),
                          ('large', 'L'))}

TIMM_ARGS = core.TimmArgs(
    size_fields=('embed_dim', 'depths', 'num_heads', 'expand_attn'),
    renamed={},
    fixed={'global_pool': (None, 'avg')})


def timm_model(model, image_size: Tuple[int, int]) -> core.TimmModel:
  """timm's entry point of an image variant at its own options (timm's
  MultiScaleVit takes its sizes from the entry point's config, not from
  model_args); None for anything else."""
  variant = core.variant_of(model, {
      name: {'num_frames': None, 'class_token': False, 'pool_type': 'avg',
             'posemb': 'none', 'rel_pos': True, 'residual_pooling': True,
             'pool_q_every_block': True, 'stage_stride': 2, 'kv_stride': 4,
             'patch_kernel': None, 'patch_stride': None,
             'patch_padding': None, 'mlp_ratio': 4.0, 'layer_norm_eps': 1e-6,
             'expand_attn': True, **size}
      for name, size in models.mvit.VARIANTS.items()})
  name = next((name for name, architecture in TIMM_ARCHITECTURES.items()
               if architecture.model_kwargs['variant'] == variant), None)
  if name is None:
    return core.no_timm_model(
        'timm\'s MultiScaleVit entry points fix their sizes and options '
        '(the image variants T, S, B, L only)')
  return core.TimmModel(
      name, {'img_size': core.side(image_size)},
      num_features=model.embed_dim * 2 ** (len(model.depths) - 1),
      fixed_input_size=True)
