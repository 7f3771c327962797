"""TimeSformer's weights in Hugging Face transformers' layout
(TimesformerForVideoClassification; TimesformerModel's checkpoints have
no 'classifier.*'). The names of the checkpoints on the Hub
('timesformer.encoder.layer.0.temporal_attention.attention.qkv.weight')
are those of transformers 5.x's modules too: one spelling serves import and
export.

`resize` fits the time embedding to the model's frames at import, as
transformers fits it at run time; `resizable` tells the size check so."""

from typing import Any, Dict, Tuple

import numpy as np

from vit_jax.weights.core import CONV, attention, dense, entry, norm

NAME = 'timesformer'

_LAYER = 'timesformer.encoder.layer.{0}.'
_OURS = 'encoder/block_{0}/'

HF = [
    entry('timesformer.embeddings.cls_token', 'cls_token'),
    entry('timesformer.embeddings.position_embeddings', 'pos_embed'),
    entry('timesformer.embeddings.time_embeddings', 'time_embed'),
    *dense('timesformer.embeddings.patch_embeddings.projection',
           'patch_embed', CONV),
    *norm(_LAYER + 'temporal_layernorm', _OURS + 'temporal_norm'),
    *attention(_OURS + 'temporal_attn',
               _LAYER + 'temporal_attention.attention.qkv',
               _LAYER + 'temporal_attention.output.dense'),
    *dense(_LAYER + 'temporal_dense', _OURS + 'temporal_dense'),
    *norm(_LAYER + 'layernorm_before', _OURS + 'norm1'),
    *attention(_OURS + 'attn', _LAYER + 'attention.attention.qkv',
               _LAYER + 'attention.output.dense'),
    *norm(_LAYER + 'layernorm_after', _OURS + 'norm2'),
    *dense(_LAYER + 'intermediate.dense', _OURS + 'mlp/fc1'),
    *dense(_LAYER + 'output.dense', _OURS + 'mlp/fc2'),
    *norm('timesformer.layernorm', 'encoder_norm'),
    *dense('classifier', 'head'),
]

# An image family whose checkpoints start a TimeSformer (the paper's
# ImageNet ViT, Sec. 4): init_from kinds 'timm' and 'npz' read them as that
# family's model (`image_model_kwargs`), then `models.convert_params` adds
# the temporal parts; kind 'own' converts a ViT run's params alike.
IMAGE_CHECKPOINT = 'vit'


def image_model_kwargs(model) -> Dict[str, Any]:
  """get_model('vit', ...)'s kwargs of the class-token ViT whose params
  `model` (a TimeSformer) starts from: same patch, sizes, norm epsilon and
  classes (a checkpoint of other classes gets a new head)."""
  return dict(patch_size=model.patch_size, width=model.width,
              depth=model.depth, mlp_dim=model.mlp_dim,
              num_heads=model.num_heads, num_classes=model.num_classes,
              layer_norm_eps=model.layer_norm_eps, pool_type='cls')


# A block's temporal branch (divided space-time attention only).
_TEMPORAL = ('temporal_norm/', 'temporal_attn/', 'temporal_dense/')


def resizable(path: str, shape: Tuple[int, ...],
              expected: Tuple[int, ...]) -> bool:
  """The time embedding of another frame count: `resize` fits it."""
  return (path == 'time_embed' and len(shape) == len(expected) == 3
          and shape[-1] == expected[-1])


def resample_time_embed(time_embed: np.ndarray, frames: int) -> np.ndarray:
  """[1, T, D] -> [1, frames, D] by nearest interpolation: row i takes the
  old row floor(i * T / frames), the rule of torch's
  interpolate(mode='nearest') that transformers (and the original code)
  apply at run time. Nearest, not linear, so an imported checkpoint gives
  what the reference gives on clips of the new length; a frame's
  embedding is never a blend of two."""
  old = time_embed.shape[1]
  rows = np.floor(np.arange(frames) * (old / frames)).astype(np.int64)
  return time_embed[:, np.minimum(rows, old - 1)]


def resize(loaded: Dict[str, Any], model, image_size) -> Dict[str, Any]:
  """`core.fit_to_model`'s family hook: the time embedding resampled to the
  model's frames (`resample_time_embed`); for a model without temporal
  attention, a temporal branch that is the identity (zero projection, as
  `models.timesformer.vit_params_as_timesformer` makes it) and, with
  'space_only', a zero time embedding are dropped: they change nothing.
  Anything else that model lacks is left to be reported."""
  del image_size
  loaded = dict(loaded)
  time_embed = loaded.get('time_embed')
  if time_embed is not None and time_embed.shape[1] != model.num_frames:
    loaded['time_embed'] = resample_time_embed(np.asarray(time_embed),
                                               model.num_frames)
  if model.attention_type != 'divided_space_time':
    for block in {path.split('/')[1] for path in loaded
                  if path.startswith('encoder/')
                  and path.split('/')[2] + '/' in _TEMPORAL}:
      prefix = f'encoder/{block}/temporal_dense/'
      if all(not np.any(loaded.get(prefix + leaf, 1))
             for leaf in ('kernel', 'bias')):
        for path in [p for p in loaded if p.startswith(
            tuple(f'encoder/{block}/{part}' for part in _TEMPORAL))]:
          del loaded[path]
  if (model.attention_type == 'space_only' and time_embed is not None
      and not np.any(time_embed)):
    del loaded['time_embed']
  return loaded
