"""The config files read beside exported weights: timm's hub config.json
(`architecture`, `num_classes`, `label_names`, `model_args`,
`pretrained_cfg`; what `timm.create_model('local-dir:DIR',
pretrained=True)` builds the model from and `resolve_data_config` reads
the preprocessing from), transformers' ViTConfig and SegformerConfig
(config.json, with id2label) and their image processors'
preprocessor_config.json.
"""

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from vit_jax.models import segformer
from vit_jax.weights import core
from vit_jax.weights import families
from vit_jax.weights import timm

LOGGER = logging.getLogger('vit_jax.export')  # as data_config.LOGGER


def _module_of(table, entry_filter) -> str:
  """timm's module name (the state-dict name less '.weight') of the first
  table entry `entry_filter` takes."""
  item = next(item for item in table if entry_filter(item))
  return item.theirs[0][:-len('.weight')]


def _label_list(label_names: Optional[Sequence[Optional[str]]],
                num_classes: int) -> Optional[List[Optional[str]]]:
  """The label names as a list of `num_classes`, or None (unknown, or
  not one per class: a warning)."""
  if not label_names or not num_classes:
    return None
  if len(label_names) != num_classes:
    LOGGER.warning('%d label names for %d classes: none are exported.',
                   len(label_names), num_classes)
    return None
  return [None if name is None else str(name) for name in label_names]


def timm_config(family: str, model, image_size: Tuple[int, int],
                channels: int, data_config: Mapping[str, Any],
                label_names: Optional[Sequence[Optional[str]]] = None
                ) -> Optional[Dict[str, Any]]:
  """timm's hub config.json for the model, or None (with a warning).
  `data_config`: the full preprocessing (`data_config.complete`), and any
  other pretrained_cfg entries."""
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
  cfg.update(data_config)
  config = {'architecture': timm_model.architecture,
            'num_classes': num_classes,
            'num_features': timm_model.num_features}
  labels = _label_list(label_names, num_classes)
  if labels:
    # Where timm's own exports put them (top level); a name left unknown
    # is left out of the {index: name} form timm reads too.
    config['label_names'] = labels if None not in labels else {
        str(index): name for index, name in enumerate(labels) if name}
  if timm_model.global_pool:
    config['global_pool'] = timm_model.global_pool
  return {**config, 'model_args': model_args, 'pretrained_cfg': cfg}


def _id2label(label_names: Optional[Sequence[Optional[str]]],
              num_classes: int) -> Dict[str, str]:
  """transformers' id2label: the names, LABEL_i where unknown."""
  names = _label_list(label_names, num_classes) or []
  return {str(index): (names[index] if index < len(names) and names[index]
                       else f'LABEL_{index}')
          for index in range(num_classes)}


def hf_config(model, image_size: Tuple[int, int], channels: int,
              label_names: Optional[Sequence[Optional[str]]] = None
              ) -> Dict[str, Any]:
  """transformers' ViTConfig (config.json) of ViTForImageClassification;
  id2label from `label_names` (transformers' LABEL_i where unknown)."""
  labels = _id2label(label_names, model.num_classes)
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


def hf_segformer_config(model, channels: int,
                        label_names: Optional[Sequence[Optional[str]]] = None
                        ) -> Dict[str, Any]:
  """transformers' SegformerConfig (config.json) of
  SegformerForSemanticSegmentation. Its layer_norm_eps is unused there
  (every LayerNorm has PyTorch's 1e-5, as `models.segformer`); the patch
  embeddings are the model's fixed 7 / 4 then 3 / 2."""
  stages = len(model.widths)
  first, later = segformer.FIRST_PATCH, segformer.LATER_PATCH
  labels = _id2label(label_names, model.num_classes)
  return {
      'architectures': ['SegformerForSemanticSegmentation'],
      'model_type': 'segformer',
      'num_channels': channels,
      'num_encoder_blocks': stages,
      'depths': list(model.depths),
      'sr_ratios': list(model.sr_ratios),
      'hidden_sizes': list(model.widths),
      'patch_sizes': [first[0]] + [later[0]] * (stages - 1),
      'strides': [first[1]] + [later[1]] * (stages - 1),
      'num_attention_heads': list(model.num_heads),
      # An integer, as SegformerConfig's strict fields take it.
      'mlp_ratios': [int(model.mlp_ratio) if float(model.mlp_ratio)
                     .is_integer() else model.mlp_ratio] * stages,
      'hidden_act': 'gelu',
      'hidden_dropout_prob': model.dropout,
      'attention_probs_dropout_prob': model.attention_dropout,
      'classifier_dropout_prob': model.decoder_dropout,
      'drop_path_rate': model.stochastic_depth,
      'initializer_range': 0.02,
      'layer_norm_eps': 1e-6,
      'decoder_hidden_size': model.decoder_width,
      'semantic_loss_ignore_index': 255,
      'reshape_last_stage': True,
      'num_labels': model.num_classes,
      'id2label': labels,
      'label2id': {name: int(index) for index, name in labels.items()},
  }


def hf_segformer_processor_config(data_config: Mapping[str, Any]
                                  ) -> Dict[str, Any]:
  """SegformerImageProcessor's preprocessor_config.json: the images
  resized to the data config's input size (no crop), rescaled and
  normalised by its mean and std."""
  channels, height, width = data_config['input_size']
  return {'image_processor_type': 'SegformerImageProcessor',
          'do_resize': True, 'size': {'height': height, 'width': width},
          'resample': _pil_resample(data_config['interpolation']),
          'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
          'image_mean': list(data_config['mean']),
          'image_std': list(data_config['std']),
          'do_reduce_labels': False, 'do_convert_rgb': channels == 3}


# timm's interpolation names -> PIL's resampling filters (the integers
# transformers' image processors keep as `resample`).
PIL_RESAMPLE = {'nearest': 0, 'lanczos': 1, 'bilinear': 2, 'bicubic': 3,
                'box': 4, 'hamming': 5}


def _pil_resample(interpolation: str) -> int:
  if interpolation not in PIL_RESAMPLE:
    raise ValueError(f'Interpolation {interpolation!r} has no PIL filter; '
                     f'valid choices: {list(PIL_RESAMPLE)}.')
  return PIL_RESAMPLE[interpolation]


def hf_processor_config(data_config: Mapping[str, Any]) -> Dict[str, Any]:
  """transformers' preprocessor_config.json doing what timm's eval
  transform does with `data_config` (`data_config.complete`).

  ViTImageProcessor resizes to (height, width), ignoring the aspect
  ratio: timm's 'squash' at crop_pct 1 exactly. Every other case is
  BitImageProcessor (as DINOv2's checkpoints use with their ViTs): the
  shorter side to floor(size / crop_pct), then the centre crop, which is
  timm's 'center' (and, with height and width, its 'squash' at crop_pct <
  1). timm's 'border' (fit the longer side, pad) has no transformers
  processor: 'center' is written, with a warning.
  """
  channels, height, width = data_config['input_size']
  mode, pct = data_config['crop_mode'], data_config['crop_pct']
  common = {'do_resize': True,
            'resample': _pil_resample(data_config['interpolation']),
            'do_rescale': True, 'rescale_factor': 1 / 255,
            'do_normalize': True, 'image_mean': list(data_config['mean']),
            'image_std': list(data_config['std']),
            # Grey models take grey arrays as they are (transformers'
            # pipeline itself converts every image to RGB).
            'do_convert_rgb': channels == 3}
  if mode == 'squash' and pct == 1.0:
    return {'image_processor_type': 'ViTImageProcessor', **common,
            'size': {'height': height, 'width': width}}
  if mode not in ('center', 'squash'):
    LOGGER.warning('timm\'s crop_mode %r has no transformers image '
                   'processor: the preprocessor_config.json crops the '
                   'centre (\'center\') instead.', mode)
  scaled = [math.floor(side / pct) for side in (height, width)]
  if mode == 'squash':
    size = {'height': scaled[0], 'width': scaled[1]}
  else:
    if height != width:
      LOGGER.warning('A non-square input size %dx%d: transformers\' '
                     'shortest-edge resize differs from timm\'s.',
                     height, width)
    size = {'shortest_edge': min(scaled)}
  return {'image_processor_type': 'BitImageProcessor', **common,
          'size': size, 'do_center_crop': True,
          'crop_size': {'height': height, 'width': width}}
