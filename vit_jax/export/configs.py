"""The config.json files read beside exported weights: timm's hub config
(`architecture`, `num_classes`, `model_args`, `pretrained_cfg`; what
`timm.create_model('local-dir:DIR', pretrained=True)` builds the model
from) and transformers' ViTConfig.
"""

import logging
from typing import Any, Dict, Mapping, Optional, Tuple

from vit_jax.weights import core
from vit_jax.weights import families
from vit_jax.weights import timm


def _module_of(table, entry_filter) -> str:
  """timm's module name (the state-dict name less '.weight') of the first
  table entry `entry_filter` takes."""
  item = next(item for item in table if entry_filter(item))
  return item.theirs[0][:-len('.weight')]


def timm_config(family: str, model, image_size: Tuple[int, int],
                channels: int, pretrained_cfg: Optional[Mapping[str, Any]]
                ) -> Optional[Dict[str, Any]]:
  """timm's hub config.json for the model, or None (with a warning)."""
  timm_model = families.module(family).timm_model(model, image_size)
  if timm_model.architecture is None:
    logging.warning('No timm config.json for this %s (%s): only the state '
                    'dict is exported.', family, timm_model.reason)
    return None
  num_classes = model.num_classes or 0
  model_args = dict(timm_model.model_args, in_chans=channels,
                    num_classes=num_classes)
  table = timm.TABLES[family]
  cfg = {'input_size': [channels, *image_size],
         'fixed_input_size': timm_model.fixed_input_size,
         'num_classes': num_classes,
         # The family's first convolution, and its head, in the table.
         'first_conv': _module_of(table, lambda item: item.transform is (
             core.CONV)),
         'classifier': _module_of(table, lambda item: item.ours == (
             'head/kernel')),
         'custom_load': False}
  cfg.update(pretrained_cfg or {})
  config = {'architecture': timm_model.architecture,
            'num_classes': num_classes,
            'num_features': timm_model.num_features}
  if timm_model.global_pool:
    config['global_pool'] = timm_model.global_pool
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
      # 'gelu' the exact (erf) GELU, 'quick_gelu' CLIP's: transformers'
      # names of `common.ACTIVATIONS`.
      'hidden_act': model.activation,
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
