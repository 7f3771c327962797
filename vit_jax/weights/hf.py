"""Hugging Face transformers state dicts (ViT, ViTMAE, SegFormer,
TimeSformer): import
(`from_hf`)
and export (`to_hf`) through the families' HF tables."""

from typing import Any, Dict, Mapping, Optional

import numpy as np

from vit_jax import models
from vit_jax.weights import core
from vit_jax.weights import families

# Family -> table: 'vit' for ViTModel / ViTForImageClassification, 'mae'
# for ViTMAEForPreTraining, 'segformer' for SegformerForSemanticSegmentation,
# 'timesformer' for TimesformerForVideoClassification / TimesformerModel.
TABLES = families.tables('HF')

HF_IMPORTABLE = tuple(TABLES)


def from_hf(state_dict: Mapping[str, Any], name: str,
            image_size: Optional[core.ImageSize] = None,
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
      'mae' (ViTMAEForPreTraining; its fixed sin-cos tables are dropped)
      or 'segformer' (SegformerForSemanticSegmentation, the decoder's
      BatchNorm running averages into 'batch_stats'; e.g. variant='B0',
      num_classes=150) or 'timesformer' (TimesformerForVideoClassification,
      or TimesformerModel without a head; e.g. variant='B/16',
      num_frames=8, num_classes=400, and the config's attention_type: its
      time embedding is resampled to num_frames by nearest interpolation,
      as transformers does at run time, its position embedding to
      image_size as a ViT's).
    image_size: as for `from_timm`; a TimeSformer is built for it (its
      image_size), default: the model's own.
    **model_kwargs: as for `get_model(name, ...)`. transformers' ViTs are
      class-token models (pool_type='cls', the default), with their
      config's layer_norm_eps: 1e-12 by default and in Google's ViT
      checkpoints (this package's default is 1e-6); ViTMAE checkpoints
      use 1e-6. Sizes are checked as for `from_timm`; the query, key and
      value weights are [heads * head_dim, width] whatever the split, so
      give the config's num_attention_heads as num_heads (a wrong one of
      the same width is not seen; MAE's decoder_num_attention_heads
      likewise).

  Returns:
    variables for `get_model(name, **model_kwargs)`: {'params': ...}, and
    {'batch_stats': ...} for SegFormer.
  """
  if name not in TABLES:
    raise ValueError(f'Cannot import Hugging Face checkpoints for model '
                     f'{name!r}; valid models: {list(HF_IMPORTABLE)}')
  model = models.get_model(name, **core.sized_kwargs(name, model_kwargs,
                                                     image_size))
  return core.import_variables(state_dict, TABLES[name], name, model,
                               image_size, 'Hugging Face state dict')


def to_hf(flat: Mapping[str, np.ndarray],
          family: str) -> Dict[str, np.ndarray]:
  """Flat variables (unstacked blocks) -> transformers' names (the Hub's:
  of ViTForImageClassification for a ViT, SegformerForSemanticSegmentation
  for a SegFormer)."""
  return core.to_theirs(flat, TABLES[family],
                        f'transformers\' layout of {family!r}')
