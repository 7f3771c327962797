"""The config.json files read beside exported weights: timm's hub config
(`architecture`, `num_classes`, `model_args`, `pretrained_cfg`; what
`timm.create_model('local-dir:DIR', pretrained=True)` builds the model
from) and transformers' ViTConfig.
"""

import logging
from typing import Any, Dict, Mapping, Optional, Tuple

from vit_jax import models


# timm entry points whose sizes a model may match (facts of timm 1.0).
_TIMM_VIT_SIZES = {'Ti': 'tiny', 'S': 'small', 'B': 'base', 'L': 'large',
                   'H': 'huge'}
_TIMM_VIT_NAMES = frozenset(
    f'vit_{size}_patch{patch}_{resolution}' for size, patch, resolution in (
        ('tiny', 16, 224), ('tiny', 16, 384), ('small', 32, 224),
        ('small', 32, 384), ('small', 16, 224), ('small', 16, 384),
        ('small', 8, 224), ('base', 32, 224), ('base', 32, 384),
        ('base', 16, 224), ('base', 16, 384), ('base', 8, 224),
        ('large', 32, 224), ('large', 32, 384), ('large', 16, 224),
        ('large', 16, 384), ('large', 14, 224), ('huge', 14, 224)))
_TIMM_SWIN_NAMES = {('T', 7, 224): 'swin_tiny_patch4_window7_224',
                    ('S', 7, 224): 'swin_small_patch4_window7_224',
                    ('B', 7, 224): 'swin_base_patch4_window7_224',
                    ('B', 12, 384): 'swin_base_patch4_window12_384',
                    ('L', 7, 224): 'swin_large_patch4_window7_224',
                    ('L', 12, 384): 'swin_large_patch4_window12_384'}
_TIMM_XCIT_SIZES = {'N12': 'nano_12', 'T12': 'tiny_12', 'S12': 'small_12',
                    'T24': 'tiny_24', 'S24': 'small_24', 'M24': 'medium_24',
                    'L24': 'large_24'}
# Mixer's and ConvMixer's timm entry points fix their sizes (they cannot be
# overridden through model_args).
_TIMM_MIXER_SIZES = {'S': 's', 'B': 'b', 'L': 'l'}
_TIMM_CONVMIXER_NAMES = {
    ('1536/20', 'gelu'): 'convmixer_1536_20',
    ('768/32', 'relu'): 'convmixer_768_32',
    ('1024/20', 'gelu'): 'convmixer_1024_20_ks9_p14'}


def _variant_of(model, table: Mapping[str, Mapping[str, Any]]
                ) -> Optional[str]:
  """The row of a variant table whose every entry the model has."""
  for name, size in table.items():
    if all(getattr(model, key) == (tuple(value) if isinstance(value, list)
                                   else value)
           for key, value in size.items()):
      return name
  return None


def _ratio(hidden: int, width: int) -> Optional[float]:
  """hidden / width, if timm's int(width * ratio) gives `hidden` back."""
  ratio = hidden / width
  return ratio if int(width * ratio) == hidden else None


def _timm_model_config(family: str, model, image_size: Tuple[int, int]
                       ) -> Tuple[Optional[str], Dict[str, Any], str]:
  """(timm architecture or None, model_args, why None)."""
  side = image_size[0] if image_size[0] == image_size[1] else list(image_size)
  if family == 'vit':
    ratio = _ratio(model.mlp_dim, model.width)
    if model.layer_norm_eps != 1e-6 or ratio is None:
      return None, {}, ('timm\'s ViT has LayerNorm eps 1e-6 and an MLP of '
                        'int(width * mlp_ratio)')
    size = _TIMM_VIT_SIZES.get(_variant_of(model, models.vit.VARIANTS))
    name = f'vit_{size}_patch{model.patch_size}_{image_size[0]}'
    pool = {'cls': 'token', 'gap': 'avg', 'map': 'map', 'none': ''}
    return (name if name in _TIMM_VIT_NAMES else 'vit_base_patch16_224',
            dict(img_size=side, patch_size=model.patch_size,
                 embed_dim=model.width, depth=model.depth,
                 num_heads=model.num_heads, mlp_ratio=ratio,
                 class_token=model.pool_type == 'cls',
                 global_pool=pool[model.pool_type], fc_norm=model.fc_norm),
            '')
  if family == 'mixer':
    size = _TIMM_MIXER_SIZES.get(_variant_of(model, models.mixer.VARIANTS))
    ratios = (_ratio(model.tokens_mlp_dim, model.width),
              _ratio(model.channels_mlp_dim, model.width))
    if size is None or model.patch_size not in (16, 32) or None in ratios or (
        model.layer_norm_eps != 1e-6):
      return None, {}, ('timm\'s Mixer entry points fix width and depth to '
                        'the paper\'s S, B and L with patches of 16 or 32')
    return (f'mixer_{size}{model.patch_size}_224',
            dict(img_size=image_size[0], mlp_ratio=list(ratios)), '')
  if family == 'swin':
    if model.layer_norm_eps != 1e-5:
      return None, {}, 'timm\'s Swin has LayerNorm eps 1e-5'
    name = _TIMM_SWIN_NAMES.get((_variant_of(model, models.swin.VARIANTS),
                                 model.window_size, image_size[0]))
    return (name if model.patch_size == 4 and name else
            'swin_tiny_patch4_window7_224',
            dict(img_size=side, patch_size=model.patch_size,
                 embed_dim=model.width, depths=list(model.depths),
                 num_heads=list(model.num_heads),
                 window_size=model.window_size, mlp_ratio=model.mlp_ratio),
            '')
  if family == 'xcit':
    if model.layer_norm_eps != 1e-6:
      return None, {}, 'timm\'s XCiT has LayerNorm eps 1e-6'
    size = _TIMM_XCIT_SIZES.get(_variant_of(model, models.xcit.VARIANTS))
    name = f'xcit_{size}_p{model.patch_size}_224'
    return (name if size and model.patch_size in (8, 16)
            else 'xcit_tiny_12_p16_224',
            dict(img_size=side, patch_size=model.patch_size,
                 embed_dim=model.width, depth=model.depth,
                 num_heads=model.num_heads, mlp_ratio=model.mlp_ratio,
                 cls_attn_layers=model.class_attention_depth,
                 eta=model.layer_scale_init, tokens_norm=model.tokens_norm),
            '')
  # ConvMixer
  variant = _variant_of(model, {
      name: {'activation': 'gelu', **size}
      for name, size in models.convmixer.VARIANTS.items()})
  name = _TIMM_CONVMIXER_NAMES.get((variant, model.activation))
  if name is None:
    return None, {}, ('timm\'s ConvMixer entry points fix the paper\'s '
                      'sizes (1536/20, 768/32 with ReLU, 1024/20)')
  return name, {}, ''


_FIRST_CONV = {'vit': 'patch_embed.proj', 'mixer': 'stem.proj',
               'swin': 'patch_embed.proj', 'xcit': 'patch_embed.proj.0.0',
               'convmixer': 'stem.0'}


def timm_config(family: str, model, image_size: Tuple[int, int],
                channels: int, pretrained_cfg: Optional[Mapping[str, Any]]
                ) -> Optional[Dict[str, Any]]:
  """timm's hub config.json for the model, or None (with a warning)."""
  architecture, model_args, reason = _timm_model_config(family, model,
                                                        image_size)
  if architecture is None:
    logging.warning('No timm config.json for this %s (%s): only the state '
                    'dict is exported.', family, reason)
    return None
  num_classes = model.num_classes or 0
  model_args = dict(model_args, in_chans=channels, num_classes=num_classes)
  cfg = {'input_size': [channels, *image_size],
         'fixed_input_size': family in ('vit', 'mixer', 'swin'),
         'num_classes': num_classes,
         'first_conv': _FIRST_CONV[family],
         'classifier': 'head.fc' if family == 'swin' else 'head',
         'custom_load': False}
  cfg.update(pretrained_cfg or {})
  num_features = model.width * (2 ** (len(model.depths) - 1)
                                if family == 'swin' else 1)
  pool = {'vit': model_args.get('global_pool'), 'xcit': 'token'}.get(
      family, 'avg')
  config = {'architecture': architecture, 'num_classes': num_classes,
            'num_features': num_features}
  if pool:
    config['global_pool'] = pool
  return {**config, 'model_args': model_args, 'pretrained_cfg': cfg}


def hf_config(model, image_size: Tuple[int, int], channels: int
              ) -> Dict[str, Any]:
  """transformers' ViTConfig (config.json) of ViTForImageClassification."""
  labels = {str(index): f'LABEL_{index}' for index in range(model.num_classes)}
  return {
      'architectures': ['ViTForImageClassification'],
      'model_type': 'vit',
      'hidden_size': model.width,
      'num_hidden_layers': model.depth,
      'num_attention_heads': model.num_heads,
      'intermediate_size': model.mlp_dim,
      'hidden_act': 'gelu',  # the exact (erf) GELU, as `common.Mlp`
      'hidden_dropout_prob': 0.0,
      'attention_probs_dropout_prob': 0.0,
      'initializer_range': 0.02,
      # transformers' default is 1e-12; this package's (and timm's) 1e-6.
      'layer_norm_eps': model.layer_norm_eps,
      'image_size': (image_size[0] if image_size[0] == image_size[1]
                     else list(image_size)),
      'patch_size': model.patch_size,
      'num_channels': channels,
      'qkv_bias': True,
      'encoder_stride': model.patch_size,
      'num_labels': model.num_classes,
      'id2label': labels,
      'label2id': {name: int(index) for index, name in labels.items()},
  }
