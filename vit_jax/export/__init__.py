"""Export: this package's variables in the layouts other code reads.

    state = export(variables, 'vit', 'timm', variant='B/16', num_classes=10)
    save(state, 'vit_b16', 'timm')  # vit_b16/model.safetensors + config.json

Formats (`FAMILIES` says which families each takes):
- 'timm': a timm state dict (timm names -> numpy arrays), the inverse of
  `weights.from_timm`: fused qkv projections put back together, kernels
  transposed to PyTorch's layouts, BatchNorm running averages (the
  'batch_stats' collection) as `running_mean` / `running_var` with
  `num_batches_tracked` 0 (int64, as timm keeps it). Its `config` is
  timm's hub config.json (`architecture`, `num_classes`, `model_args`,
  `pretrained_cfg`), so `timm.create_model('local-dir:DIR',
  pretrained=True)` builds the model and loads the weights; written where
  a timm entry point can express the model (every ViT, Swin and XCiT; Mixer,
  ConvMixer and MViTv2 only at timm's own sizes), else None, with a
  warning. Its
  pretrained_cfg holds the full data config (input_size, interpolation,
  crop_pct, crop_mode, mean, std: `data_config.py`), and `label_names`
  where the classes are named.
- 'npz': the flat '/'-joined layout of Google's original ViT and Mixer
  releases ('Transformer/encoderblock_0/MultiHeadDotProductAttention_1/
  query/kernel', 'MixerBlock_0/token_mixing/Dense_0/kernel', ...) that
  `weights.load_npz` reads; ViT's MAP head in big_vision's names
  ('MAPHead_0/...'). Arrays are unchanged (the same Flax layouts); a ViT's
  `fc_norm`, which those releases never had, keeps this package's name.
- 'hf': Hugging Face transformers' ViTForImageClassification (class-token
  ViTs with a head): the hub checkpoints' names ('vit.embeddings.cls_token',
  'vit.encoder.layer.N.attention.attention.query.weight', ...,
  'classifier.weight'), `config` its config.json (ViTConfig, id2label /
  label2id) and `processor` its preprocessor_config.json (the image
  processor that prepares images as timm's data config says:
  `configs.hf_processor_config`), so `transformers.pipeline(
  'image-classification', model=DIR)` loads it. A SegFormer:
  SegformerForSemanticSegmentation ('segformer.encoder.block.0.0.
  attention.self.query.weight', ..., 'decode_head.batch_norm.running_mean'),
  its SegformerConfig and SegformerImageProcessor's config, so
  `SegformerForSemanticSegmentation.from_pretrained(DIR)` loads it.

A ViT with `posemb='sincos2d'` is exported to timm and HF with its fixed
table as their learned position embedding (numerically the same model;
imported back, it is a ViT with posemb='learn'); the resolution then comes
from `image_size`. Scanned layouts are unstacked
(`models.common.unstack_blocks`). Every conversion is a transpose, reshape
or concatenation: the round trip through the importers is exact.

`python -m vit_jax.export --workdir=DIR --format=timm|npz|hf --out=PATH
[--step=N] [--image_size=N]` exports a training run's checkpoint
(`__main__.py`). The names and transforms come from the same tables as
the importers' (`vit_jax.weights`' family modules, through
`weights.timm.to_timm`, `weights.hf.to_hf`, `weights.npz.to_npz`);
`configs.py` writes the config files, `data_config.py` the preprocessing
(a run's pp_eval as timm's data config, or what the caller gives, e.g. an
imported checkpoint's `pretrained.Preprocessing`).
"""

# `format` names the export format, as in the API asked for.
# pylint: disable=redefined-builtin

import io
import json
from typing import (Any, Dict, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import jax
import numpy as np

from vit_jax import checkpoint
from vit_jax import config as config_lib
from vit_jax import layout
from vit_jax import models
from vit_jax import paths
from vit_jax import workdir as workdir_lib
from vit_jax.export import configs
from vit_jax.export import data_config
from vit_jax.models import common
from vit_jax.weights import core
from vit_jax.weights import hf
from vit_jax.weights import npz
from vit_jax.weights import timm

FORMATS = ('timm', 'npz', 'hf')
# Format -> the model families it can hold.
FAMILIES = {
    'timm': tuple(timm.TABLES),
    'npz': tuple(npz.TABLES),
    # transformers' config.json is written for ViTForImageClassification
    # and SegformerForSemanticSegmentation.
    'hf': ('vit', 'segformer'),
}

ImageSize = Union[int, Tuple[int, int]]


class StateDict(dict):
  """Names -> numpy arrays in a format's layout, `config`: the JSON-able
  dict that format's loaders read beside the weights (config.json), or
  None, and `processor`: transformers' preprocessor_config.json (hf), or
  None."""

  def __init__(self, arrays: Mapping[str, np.ndarray],
               config: Optional[Dict[str, Any]] = None,
               processor: Optional[Dict[str, Any]] = None):
    super().__init__(arrays)
    self.config = config
    self.processor = processor


# ----------------------------------------------------------------------------
# Checks and the model's geometry.


def check_format(format: str) -> None:
  """Raises, naming the choices, unless `format` is one of FORMATS."""
  common.check_choice('export format', format, FORMATS)


def check_pair(family: str, format: str) -> None:
  """Raises unless `format` can hold model family `family`."""
  check_format(format)
  if family not in FAMILIES[format]:
    supported = {name: list(families) for name, families in FAMILIES.items()}
    raise ValueError(f'Cannot export model family {family!r} as {format!r}; '
                     f'{format!r} holds {list(FAMILIES[format])} (supported: '
                     f'{supported}).')


def _flat_variables(variables: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """Flat paths of the unstacked variables, as numpy arrays."""
  unstacked = {collection: common.unstack_blocks(jax.tree.map(np.asarray,
                                                              dict(tree)))
               for collection, tree in variables.items()}
  return core.flatten_variables(unstacked)


_INPUT_KERNELS = ('patch_embed/kernel', 'stem/kernel',
                  'patch_embed/conv_0/kernel', 'stage_0/patch_embed/kernel')


def input_channels(variables: Mapping[str, Any]) -> int:
  """The image channels the variables take (their input layer's kernel)."""
  return _input_channels(_flat_variables({'params': variables['params']}))


def _input_channels(flat: Mapping[str, np.ndarray]) -> int:
  for path in _INPUT_KERNELS:
    if path in flat:
      return int(flat[path].shape[2])  # HWIO
  raise ValueError(f'The variables have no input layer (none of '
                   f'{list(_INPUT_KERNELS)}): not a model of this family?')


def _as_pair(image_size: ImageSize) -> Tuple[int, int]:
  if isinstance(image_size, int):
    return (image_size, image_size)
  height, width = image_size
  return (int(height), int(width))


def _check_fits(flat: Mapping[str, np.ndarray], model,
                image_size: Tuple[int, int], channels: int) -> None:
  """The variables have exactly the shapes `model` has at `image_size`."""
  expected = core.expected_shapes(model, image_size, channels)
  missing = sorted(f'{p} {s}' for p, s in expected.items() if p not in flat)
  extra = sorted(f'{p} {tuple(flat[p].shape)}' for p in flat
                 if p not in expected)
  misshapen = sorted(f'{p}: variables {tuple(flat[p].shape)} vs model {s}'
                     for p, s in expected.items()
                     if p in flat and tuple(flat[p].shape) != s)
  problems = [f'{what}: {items}' for what, items in (
      ('missing from the variables', missing),
      ('not in the model', extra), ('shape mismatches', misshapen)) if items]
  if problems:
    raise ValueError('The variables do not fit the model kwargs (wrong '
                     'variant or options?): ' + '; '.join(problems))


# ----------------------------------------------------------------------------
# Export and save.


def export(variables: Mapping[str, Any], family: str, format: str,
           *, image_size: Optional[ImageSize] = None,
           pretrained_cfg: Optional[Any] = None,
           label_names: Optional[Sequence[Optional[str]]] = None,
           **model_kwargs) -> StateDict:
  """This package's variables as a state dict of `format`.

  Args:
    variables: {'params': ...} (plus 'batch_stats' for XCiT, ConvMixer),
      unrolled or scanned, as `checkpoint.restore_variables` or the
      importers return them.
    family: model family, one of FAMILIES[format].
    format: one of FORMATS ('timm', 'npz', 'hf').
    image_size: the resolution the weights are for, written into the
      configs (and the grid of a sincos2d position embedding); default:
      what the parameters say (`models.checkpoint_image_size`).
    pretrained_cfg: how images are prepared for the weights: timm's data
      config entries (mean, std, crop_pct, interpolation, crop_mode; other
      pretrained_cfg entries pass through to timm's config), or the
      `pretrained.Preprocessing` of an imported checkpoint; timm's
      defaults for what is missing (with a warning when nothing is
      given). Written into timm's pretrained_cfg and hf's
      preprocessor_config.json.
    label_names: one class name per output (None: unknown); timm's
      label_names, hf's id2label.
    **model_kwargs: as for `get_model(family, ...)`, the model the variables
      are for (checked against their shapes).

  Returns:
    A `StateDict`: names -> contiguous numpy arrays, `config` (timm's or
    transformers' config.json; None for npz and where timm has no entry
    point for the model) and `processor` (hf's preprocessor_config.json).
  """
  check_pair(family, format)
  model = models.get_model(family, **model_kwargs)
  flat = _flat_variables(variables)
  channels = _input_channels(flat)
  if image_size is None:
    image_size = models.checkpoint_image_size(family, model, flat)
  image_size = _as_pair(image_size)
  _check_fits(flat, model, image_size, channels)

  if family == 'vit' and model.posemb == 'sincos2d' and format != 'npz':
    prefix = model.posemb_prefix_tokens
    flat['pos_embed'] = common.posemb_sincos_2d(
        image_size[0] // model.patch_size, image_size[1] // model.patch_size,
        model.width, num_prefix_tokens=prefix)[None]  # [1, N, D]

  if format == 'npz':
    return StateDict(npz.to_npz(flat, family))
  if format == 'hf' and family == 'vit':
    problems = [problem for problem, bad in (
        (f'pool_type {model.pool_type!r} (it needs \'cls\')',
         model.pool_type != 'cls'),
        (f'num_classes {model.num_classes!r} (it needs a head)',
         not model.num_classes),
        ('posemb_prefix=False (it needs a class-token position row)',
         not model.posemb_prefix)) if bad]
    if problems:
      raise ValueError(
          f'transformers\' ViTForImageClassification is a class-token ViT '
          f'with a head; this one has {" and ".join(problems)}. The timm '
          f'format holds every ViT.')
  data_cfg = data_config.complete(pretrained_cfg, image_size, channels)
  if format == 'hf' and family == 'segformer':
    return StateDict(hf.to_hf(flat, family),
                     configs.hf_segformer_config(model, channels,
                                                 label_names),
                     configs.hf_segformer_processor_config(data_cfg))
  if format == 'hf':
    return StateDict(hf.to_hf(flat, family),
                     configs.hf_config(model, image_size, channels,
                                       label_names),
                     configs.hf_processor_config(data_cfg))
  return StateDict(timm.to_timm(flat, family),
                   configs.timm_config(family, model, image_size, channels,
                                       data_cfg, label_names))


SAFETENSORS_NAME = 'model.safetensors'
CONFIG_NAME = 'config.json'
PROCESSOR_NAME = 'preprocessor_config.json'  # transformers' image processor


def _safetensors_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  # 'pt': the metadata transformers and timm expect of PyTorch weights.
  # np.ascontiguousarray makes a 0-d array 1-d: BatchNorm's
  # num_batches_tracked must stay a scalar (transformers checks shapes).
  return safetensors_numpy.save(
      {name: np.ascontiguousarray(value).reshape(np.shape(value))
       for name, value in arrays.items()},
      metadata={'format': 'pt'})


def check_out(out: str, format: str) -> None:
  """Raises ValueError, before anything is read or written, when `out`
  cannot take the export: a directory where the format writes one file
  (npz, a .safetensors path), an existing file where it writes a
  directory (timm, hf), a local file whose directory does not exist."""
  check_format(format)
  paths.check_supported(out)
  one_file = format == 'npz' or out.endswith('.safetensors')
  if one_file:
    if paths.isdir(out):
      name = 'model.npz' if format == 'npz' else 'model.safetensors'
      raise ValueError(f'--out {out!r} is a directory, but the {format} '
                       f'export is one file (e.g. --out='
                       f'{paths.join(out, name)}).')
    if paths.is_local(out) and not paths.isdir(paths.parent(out)):
      raise ValueError(f'--out {out!r}: its directory '
                       f'{paths.parent(out)!r} does not exist.')
  elif paths.exists(out) and not paths.isdir(out):
    raise ValueError(f'--out {out!r} is an existing file, but the {format} '
                     f'export is a directory ({SAFETENSORS_NAME}, '
                     f'{CONFIG_NAME}); name a new or existing directory.')


def save(state: Mapping[str, np.ndarray], path: str,
         format: str) -> List[str]:
  """Writes an exported state; returns the files written.

  'npz': one .npz file at `path`. 'timm': a file if `path` ends in
  .safetensors (the weights alone), else a directory `path` with
  model.safetensors and, where the state has one, timm's config.json
  (timm.create_model('local-dir:PATH', pretrained=True) reads it). 'hf':
  a directory with model.safetensors, config.json and, where the state
  has one, preprocessor_config.json
  (ViTForImageClassification.from_pretrained(PATH),
  AutoImageProcessor.from_pretrained(PATH), transformers.pipeline).
  `path` may be local or gs:// (`vit_jax.paths`).
  """
  check_out(path, format)
  config = getattr(state, 'config', None)
  if format == 'npz':
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value)
                        for name, value in state.items()})
    paths.write_atomic(path, buffer.getvalue())
    return [path]
  if path.endswith('.safetensors'):
    if format == 'hf':
      raise ValueError(f'The hf format is a directory (model.safetensors and '
                       f'config.json), not a file: got {path!r}.')
    paths.write_atomic(path, _safetensors_bytes(state))
    return [path]
  if format == 'hf' and config is None:
    raise ValueError('An hf state needs its config (export(..., \'hf\') '
                     'returns it).')
  paths.makedirs(path)
  written = [paths.join(path, SAFETENSORS_NAME)]
  paths.write_atomic(written[0], _safetensors_bytes(state))
  for name, content in ((CONFIG_NAME, config),
                        (PROCESSOR_NAME, getattr(state, 'processor', None))):
    if content is not None:
      written.append(paths.join(path, name))
      paths.write_atomic(written[-1], json.dumps(content, indent=2) + '\n')
  return written


# ----------------------------------------------------------------------------
# A training run's checkpoint.


def run_model(model_config: Mapping[str, Any], variables: Mapping[str, Any]
              ) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
  """(family, get_model kwargs, variables) to export, from a run's
  `config.model` and its checkpoint's variables. An MAE run gives its
  encoder, as the ViT `mae.encoder_as_vit` builds (no head)."""
  kwargs = models.kwargs_from_config(model_config, compute_dtype=False)
  family = kwargs.pop('name')
  if family != 'mae':
    return family, kwargs, dict(variables)
  encoder = models.mae.encoder_as_vit(models.get_model('mae', **kwargs))
  vit_kwargs = {key: getattr(encoder, key) for key in (
      'patch_size', 'width', 'depth', 'mlp_dim', 'num_heads', 'num_classes',
      'pool_type', 'posemb', 'layer_norm_eps', 'scan')}
  return 'vit', vit_kwargs, {'params': models.convert_params(
      'mae', 'vit', variables['params'])}


def run_label_names(data: Any, num_classes: int) -> Optional[List[str]]:
  """The class names of a run's dataset (`data.labels.dataset_labels`),
  one per output; None, with a warning, where they cannot be had (an
  image folder not on this machine) or do not match the head."""
  from vit_jax.data import labels  # pylint: disable=g-import-not-at-top  (TF)
  if not num_classes:
    return None
  try:
    names, _ = labels.dataset_labels(data)
  except (ValueError, FileNotFoundError, KeyError) as error:
    data_config.LOGGER.warning('No label names for dataset %r (%s): the '
                               'export has none.', data.get('name'), error)
    return None
  if len(names) != num_classes:
    data_config.LOGGER.warning('Dataset %r has %d classes, the model %d '
                               'outputs: no label names exported.',
                               data.get('name'), len(names), num_classes)
    return None
  return names


def export_run(workdir: str, format: str, out: str,
               step: Optional[int] = None, image_size: Optional[int] = None,
               config: Any = None) -> List[str]:
  """Exports the checkpoint of `workdir` at `step` (the latest by
  default) to `out` (`python -m vit_jax.export`); returns the files
  written. The model comes from `config` (the run's config; by default
  the workdir's config.json)."""
  check_format(format)
  paths.check_supported(workdir)
  check_out(out, format)
  config = (workdir_lib.read_config(workdir) if config is None
            else config_lib.resolve(config))
  # Checked before the checkpoint is read; an MAE run exports a ViT.
  check_pair('vit' if config.model.name == 'mae' else config.model.name,
             format)
  family, model_kwargs, variables = run_model(
      config.model.to_dict(),
      checkpoint.restore_variables(layout.checkpoint_dir(workdir), step))
  # The run's own evaluation preprocessing and class names.
  pretrained_cfg = data_config.from_pp_eval(config.data.get('pp_eval'),
                                            input_channels(variables))
  label_names = run_label_names(config.data,
                                model_kwargs.get('num_classes') or 0)
  state = export(variables, family, format, image_size=image_size,
                 pretrained_cfg=pretrained_cfg, label_names=label_names,
                 **model_kwargs)
  return save(state, out, format)
