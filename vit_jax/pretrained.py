"""Pretrained models by name: timm's checkpoints on the Hugging Face Hub (or
a local directory in the same layout), as this package's models.

    pretrained = vit_jax.pretrained.load(
        'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k')
    logits, aux = pretrained.model.apply(pretrained.variables, images)
    state_dict = vit_jax.pretrained.export(variables, 'vit', 'timm',
                                           variant='B/16')

A checkpoint in timm's Hub layout is a directory (a Hub repository) with
`config.json` and `model.safetensors`. The config names the timm
`architecture`, the number of classes, the `pretrained_cfg` (input size,
normalisation, crop, interpolation; optionally `label_names`) and, for
models built with non-default arguments, the timm `model_args`. `SUPPORTED`
says how each timm architecture is built here (family, `get_model` kwargs,
resolution); `model_args` are translated onto those kwargs, and anything
that this package's families cannot express is an error naming it.
`weights.from_timm` converts the state dict.

Hub files go through `huggingface_hub.hf_hub_download` and its cache
(`HF_HUB_CACHE`, default ~/.cache/huggingface/hub). With `HF_HUB_OFFLINE=1`
nothing is downloaded: a file missing from the cache is an error saying
so. Both variables are read when `load` runs (huggingface_hub itself reads
them once, when it is imported).
"""

import difflib
import json
import os
from typing import Any, Dict, Mapping, NamedTuple, Optional, Tuple, Union

from vit_jax import models
from vit_jax import weights
from vit_jax.weights import families
# How a timm architecture is built here (family, get_model kwargs,
# resolution).
from vit_jax.weights.core import Architecture
from vit_jax.weights.core import TimmArgs
# Weights out: export(variables, family, format) and save(state, path,
# format), the inverse of `load` and the importers (`vit_jax.export`).
from vit_jax.export import export  # pylint: disable=unused-import
from vit_jax.export import save  # pylint: disable=unused-import

# What timm's data config falls back to (timm.data: IMAGENET_DEFAULT_MEAN,
# IMAGENET_DEFAULT_STD, DEFAULT_CROP_PCT, resolve_data_config).
DEFAULT_MEAN = (0.485, 0.456, 0.406)
DEFAULT_STD = (0.229, 0.224, 0.225)
DEFAULT_CROP_PCT = 0.875
DEFAULT_INTERPOLATION = 'bicubic'
DEFAULT_CROP_MODE = 'center'

CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
HUB_ORGANISATION = 'timm'


class Preprocessing(NamedTuple):
  """The evaluation preprocessing a checkpoint expects (timm's data config):
  resize the shorter side to image_size / crop_pct with `interpolation`,
  crop image_size ('center'; 'squash': resize without keeping the aspect
  ratio), scale to [0, 1], subtract `mean`, divide by `std` (per channel)."""
  mean: Tuple[float, ...]
  std: Tuple[float, ...]
  crop_pct: float
  interpolation: str
  crop_mode: str = DEFAULT_CROP_MODE


class Pretrained(NamedTuple):
  """A loaded checkpoint: `model.apply(variables, images)` gives logits."""
  model: Any  # flax.linen.Module
  variables: Dict[str, Any]  # {'params'}, plus 'batch_stats' (BatchNorm)
  family: str
  model_kwargs: Dict[str, Any]  # get_model(family, **model_kwargs) == model
  image_size: Tuple[int, int]  # (height, width) the variables are for
  num_classes: int  # 0: no head (logits are the representation)
  preprocessing: Preprocessing
  label_names: Optional[Tuple[Optional[str], ...]]  # per class; None: unknown


# ----------------------------------------------------------------------------
# The supported timm architectures.

# timm architecture name -> how it is built here: each family's rows
# (`TIMM_ARCHITECTURES` of its module in `vit_jax.weights`, beside its
# tables), in the order of `weights.families.FAMILIES`.
SUPPORTED: Dict[str, Architecture] = {
    name: architecture for family in families.FAMILIES
    for name, architecture in getattr(family, 'TIMM_ARCHITECTURES',
                                      {}).items()}


def _describe(architecture: Architecture) -> str:
  kwargs = dict(architecture.model_kwargs)
  words = [kwargs.pop('variant')] if 'variant' in kwargs else []
  words += [f'{key}={value}' for key, value in kwargs.items()]
  return ' '.join(words + [f'{architecture.image_size} px'])


def supported_table() -> str:
  """One line per supported timm architecture: its name, the family here,
  and the variant, options and resolution it is built with."""
  width = max(len(name) for name in SUPPORTED)
  return '\n'.join(
      f'{name:<{width}}  {architecture.family:<9}  {_describe(architecture)}'
      for name, architecture in SUPPORTED.items())


def _unknown_architecture(architecture: str, source: str) -> ValueError:
  close = difflib.get_close_matches(architecture, SUPPORTED, n=6, cutoff=0.6)
  return ValueError(
      f'Unknown timm architecture {architecture!r} (of {source!r}); close '
      f'matches: {close or "none"}. All supported architectures: '
      f'vit_jax.pretrained.SUPPORTED, or `python -m vit_jax.models '
      f'--pretrained`.')


# ----------------------------------------------------------------------------
# timm's model_args -> get_model kwargs.

# timm arguments without effect on the weights or on inference here
# (the channels and classes are read from the weights and config).
_IGNORED = ('in_chans', 'num_classes', 'img_size', 'dynamic_img_size',
            'dynamic_img_pad', 'strict_img_size', 'weight_init', 'fix_init',
            'nlhb')


def _timm_args(family: str) -> TimmArgs:
  """How `family`'s kwargs take timm's model_args: `TIMM_ARGS` of its
  module in `vit_jax.weights`, beside its tables."""
  return families.module(family).TIMM_ARGS


def _explicit(family: str, model_kwargs: Mapping[str, Any]) -> Dict[str, Any]:
  """`model_kwargs` with the variant spelled out as sizes, so that any
  size can be changed."""
  kwargs = dict(model_kwargs)
  if 'variant' in kwargs:
    model = models.get_model(family, **kwargs)
    del kwargs['variant']
    kwargs = {**{field: getattr(model, field)
                 for field in _timm_args(family).size_fields}, **kwargs}
  return kwargs


def _translate_model_args(family: str, model_kwargs: Mapping[str, Any],
                          model_args: Mapping[str, Any]) -> Dict[str, Any]:
  """Applies timm's `model_args` (constructor arguments beyond the
  architecture's own) to the architecture's get_model kwargs."""
  timm_args = _timm_args(family)
  renamed, fixed, special = (timm_args.renamed, timm_args.fixed,
                             timm_args.special)
  for key, value in model_args.items():
    if key in fixed and value not in fixed[key]:
      raise ValueError(
          f'timm model_args {key}={value!r} has no counterpart in this '
          f'package\'s {family} (it supports {key} in '
          f'{list(fixed[key])}).')
    known = (key in renamed or key in fixed or key in special
             or key in _IGNORED or key.endswith('drop_rate'))
    if not known:
      raise ValueError(
          f'Unsupported timm model_args {key}={value!r} for family '
          f'{family!r}; supported: '
          f'{sorted({*renamed, *fixed, *special, *_IGNORED})} (and drop '
          f'rates).')
  if not any(key in renamed or key in special for key in model_args):
    return dict(model_kwargs)

  sizes = _explicit(family, model_kwargs)
  kwargs = dict(sizes)
  for key, value in model_args.items():
    if key in renamed:
      kwargs[renamed[key]] = (tuple(value) if isinstance(value, list)
                              else value)
  if timm_args.adjust:
    timm_args.adjust(kwargs, sizes, model_args)
  fields = timm_args.size_fields
  if 'variant' in model_kwargs and all(kwargs[field] == sizes[field]
                                       for field in fields):
    # The variant's own sizes: keep its name.
    return {**model_kwargs, **{key: value for key, value in kwargs.items()
                               if key not in fields}}
  return kwargs


# ----------------------------------------------------------------------------
# Files: a local directory or the Hub.


def _env_flag(name: str) -> bool:
  return os.environ.get(name, '').upper() in ('1', 'ON', 'YES', 'TRUE')


def _hub_file(repo_id: str, filename: str, revision: Optional[str],
              cache_dir: Optional[str]) -> str:
  """The local path of `filename` of Hub repository `repo_id`, downloaded
  into the cache unless it is there or offline mode is on."""
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import constants  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top
  offline = constants.HF_HUB_OFFLINE or _env_flag('HF_HUB_OFFLINE')
  cache_dir = cache_dir or os.environ.get('HF_HUB_CACHE') or None
  try:
    return huggingface_hub.hf_hub_download(
        repo_id, filename, revision=revision, cache_dir=cache_dir,
        local_files_only=offline)
  except errors.LocalEntryNotFoundError as error:
    cache = cache_dir or constants.HF_HUB_CACHE
    what = (f'{repo_id}: {filename} (revision {revision or "main"}) is not '
            f'in the Hugging Face cache {cache}')
    if offline:
      raise FileNotFoundError(
          f'{what} and offline mode is on (HF_HUB_OFFLINE=1): download it '
          f'once with network access, or unset HF_HUB_OFFLINE.') from error
    raise FileNotFoundError(
        f'{what} and could not be downloaded (is the Hub reachable?).'
    ) from error
  except errors.EntryNotFoundError as error:
    raise FileNotFoundError(
        f'The Hub repository {repo_id} has no {filename} (timm checkpoints '
        f'are read from {CONFIG_FILE} and {WEIGHTS_FILE}).') from error


def _repo_id(name: str) -> str:
  """'timm/ARCH.TAG', 'ARCH.TAG' or timm's 'hf-hub:timm/ARCH.TAG' -> the
  Hub repository; anything else is an error."""
  for prefix in ('hf-hub:', 'hf_hub:'):
    if name.startswith(prefix):
      name = name[len(prefix):]
  parts = name.split('/')
  if len(parts) == 1:
    parts = [HUB_ORGANISATION, name]
  if len(parts) != 2 or not all(parts) or name.startswith(('.', '~')):
    raise ValueError(
        f'{name!r} is neither a local directory nor a Hub model name '
        f'(\'timm/ARCHITECTURE.TAG\', e.g. '
        f'\'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k\').')
  return '/'.join(parts)


def _read_config(path: str) -> Dict[str, Any]:
  with open(path) as f:
    config = json.load(f)
  if not isinstance(config, dict) or 'architecture' not in config:
    raise ValueError(f'{path} is not a timm model config: it names no '
                     f'"architecture".')
  if 'pretrained_cfg' not in config:  # timm's older, single-dict layout
    config = {'architecture': config['architecture'],
              'num_classes': config.get('num_classes'),
              'label_names': config.get('label_names',
                                        config.get('labels')),
              'pretrained_cfg': config}
  return config


# ----------------------------------------------------------------------------
# Loading.


def _preprocessing(pretrained_cfg: Mapping[str, Any]) -> Preprocessing:
  return Preprocessing(
      mean=tuple(pretrained_cfg.get('mean') or DEFAULT_MEAN),
      std=tuple(pretrained_cfg.get('std') or DEFAULT_STD),
      crop_pct=pretrained_cfg.get('crop_pct') or DEFAULT_CROP_PCT,
      interpolation=(pretrained_cfg.get('interpolation')
                     or DEFAULT_INTERPOLATION),
      crop_mode=pretrained_cfg.get('crop_mode') or DEFAULT_CROP_MODE)


def _pair(size) -> Tuple[int, int]:
  if isinstance(size, int):
    return (size, size)
  size = tuple(size)
  return (size[-2], size[-1])  # [C, H, W] (input_size) or [H, W]


def _label_names(config: Mapping[str, Any], num_classes: int
                 ) -> Optional[Tuple[Optional[str], ...]]:
  """timm's label_names (a list, or a dict index -> name) per class."""
  names = (config.get('label_names')
           or config['pretrained_cfg'].get('label_names'))
  if not names:
    return None
  if isinstance(names, Mapping):
    by_index = {int(index): name for index, name in names.items()}
    return tuple(by_index.get(index) for index in range(num_classes))
  return tuple(names)


def resolve_config(config: Mapping[str, Any], source: str = CONFIG_FILE
                   ) -> Tuple[str, Dict[str, Any], Tuple[int, int]]:
  """(family, get_model kwargs, (height, width)) of the checkpoint a timm
  config.json (parsed) describes: its architecture from SUPPORTED, its
  model_args translated, its number of classes and resolution.

  Raises ValueError for an architecture not in SUPPORTED (naming the
  close matches and `source`) or model_args no family here can express.
  """
  if 'pretrained_cfg' not in config:  # timm's older, single-dict layout
    config = {'architecture': config.get('architecture'),
              'pretrained_cfg': config}
  pretrained_cfg = config['pretrained_cfg']
  if config['architecture'] not in SUPPORTED:
    raise _unknown_architecture(config['architecture'], source)
  architecture = SUPPORTED[config['architecture']]
  model_args = config.get('model_args') or {}
  model_kwargs = _translate_model_args(architecture.family,
                                       architecture.model_kwargs, model_args)
  num_classes = config.get('num_classes')
  if num_classes is None:
    num_classes = pretrained_cfg.get('num_classes',
                                     model_args.get('num_classes', 1000))
  model_kwargs['num_classes'] = num_classes
  if 'img_size' in model_args:
    size = _pair(model_args['img_size'])
  elif pretrained_cfg.get('input_size'):
    size = _pair(pretrained_cfg['input_size'])
  else:
    size = _pair(architecture.image_size)
  return architecture.family, model_kwargs, size


def load(name: str, *, num_classes: Optional[int] = None,
         image_size: Optional[Union[int, Tuple[int, int]]] = None,
         revision: Optional[str] = None, cache_dir: Optional[str] = None,
         **model_overrides) -> Pretrained:
  """A timm checkpoint as a model of this package, with its variables.

  Args:
    name: a timm model on the Hugging Face Hub,
      'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k' (the 'timm/' may be
      left out), or a local directory in the Hub layout (config.json and
      model.safetensors, as timm writes them).
    num_classes: outputs of the head; None keeps the checkpoint's. Another
      number replaces the head by a zero-initialised one (0: no head; the
      logits are then the representation).
    image_size: the resolution to run at; None keeps the checkpoint's. A
      learned position embedding is resampled to it as timm does
      (`weights.from_timm`'s posemb_interpolation='bicubic').
    revision: a Hub branch, tag or commit (default: 'main').
    cache_dir: the Hugging Face cache to use (default: HF_HUB_CACHE, else
      huggingface_hub's default).
    **model_overrides: get_model kwargs over the architecture's (e.g.
      dtype=jnp.bfloat16, scan=True, or sizes for a custom model).

  Returns:
    A `Pretrained`: model, variables, family, model_kwargs, image_size,
    num_classes, preprocessing, label_names.

  Raises:
    ValueError: an architecture not in SUPPORTED (with the close matches),
      or timm model_args this package cannot express.
    FileNotFoundError: a file neither in the directory nor in the cache
      (with offline mode on, or the Hub unreachable).
  """
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  name = os.fspath(name)
  if os.path.isdir(name):
    config_path = os.path.join(name, CONFIG_FILE)
    weights_path = os.path.join(name, WEIGHTS_FILE)
    for path in (config_path, weights_path):
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{path} not found: a checkpoint directory in timm\'s Hub '
            f'layout has {CONFIG_FILE} and {WEIGHTS_FILE}.')
    fetch = lambda path: path  # noqa: E731
  else:
    repo_id = _repo_id(name)
    organisation, repo_name = repo_id.split('/')
    architecture = repo_name.split('.')[0]
    if organisation == HUB_ORGANISATION and architecture not in SUPPORTED:
      raise _unknown_architecture(architecture, name)  # before downloading
    config_path, weights_path = CONFIG_FILE, WEIGHTS_FILE
    fetch = lambda filename: _hub_file(  # noqa: E731
        repo_id, filename, revision, cache_dir)

  config = _read_config(fetch(config_path))
  family, model_kwargs, checkpoint_size = resolve_config(config, name)
  checkpoint_classes = model_kwargs['num_classes']
  if num_classes is not None:
    model_overrides['num_classes'] = num_classes
  size_fields = _timm_args(family).size_fields
  if set(model_overrides) & set(size_fields) or 'variant' in model_overrides:
    model_kwargs = _explicit(family, model_kwargs)
    if 'variant' in model_overrides:  # a new variant: its sizes, not ours
      for field in size_fields:
        model_kwargs.pop(field, None)
  model_kwargs.update(model_overrides)
  size = checkpoint_size if image_size is None else _pair(image_size)

  state_dict = safetensors_numpy.load_file(fetch(weights_path))
  # At another resolution, the position embedding resampled as timm
  # resamples a checkpoint it loads at another size (antialiased bicubic).
  variables = weights.from_timm(state_dict, family, image_size=size,
                                posemb_interpolation='bicubic',
                                **model_kwargs)
  final_classes = model_kwargs['num_classes'] or 0
  return Pretrained(
      model=models.get_model(family, **model_kwargs),
      variables=variables,
      family=family,
      model_kwargs=model_kwargs,
      image_size=size,
      num_classes=final_classes,
      preprocessing=_preprocessing(config['pretrained_cfg']),
      label_names=(_label_names(config, final_classes)
                   if final_classes == checkpoint_classes else None))
