"""Pretrained models by name: timm's checkpoints on the Hugging Face Hub (or
a local directory in the same layout), as this package's models.

    pretrained = vit_jax.pretrained.load(
        'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k')
    logits, aux = pretrained.model.apply(pretrained.variables, images)
    state_dict = vit_jax.pretrained.export(variables, 'vit', 'timm',
                                           variant='B/16')

Names are timm's: 'timm/ARCHITECTURE.TAG' (or without 'timm/'); without
a tag, timm's default tag of the architecture (`Architecture.tags`, the
first); '@REVISION' at the end picks a branch, tag or commit.
`list(pattern)` gives the known names, like `timm.list_pretrained`.

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

import builtins
import difflib
import fnmatch
import json
import os
from typing import (Any, Dict, List, Mapping, NamedTuple, Optional, Tuple,
                    Union)

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
# Entry points whose weights are on the Hub under another entry point's
# name (timm's hf_hub_id): {architecture: the repositories' architecture}.
HUB_ALIASES: Dict[str, str] = {
    name: alias for family in families.FAMILIES
    for name, alias in getattr(family, 'HUB_ALIASES', {}).items()}


def _describe(architecture: Architecture) -> str:
  kwargs = dict(architecture.model_kwargs)
  words = [kwargs.pop('variant')] if 'variant' in kwargs else []
  words += [f'{key}={value}' for key, value in kwargs.items()]
  return ' '.join(words + [f'{architecture.image_size} px'])


def _strip_hub_prefix(name: str) -> str:
  """timm's 'hf-hub:' / 'hf_hub:' prefix and the 'timm/' organisation
  off a name."""
  for prefix in ('hf-hub:', 'hf_hub:', HUB_ORGANISATION + '/'):
    name = name[len(prefix):] if name.startswith(prefix) else name
  return name


def _matching_tags(pattern: str, name: str,
                   architecture: Architecture) -> Tuple[str, ...]:
  """The tags of `name` whose 'ARCHITECTURE.TAG' matches `pattern`; all
  of them where the architecture's name does."""
  if fnmatch.fnmatchcase(name, pattern):
    return architecture.tags
  return tuple(tag for tag in architecture.tags
               if fnmatch.fnmatchcase(f'{name}.{tag}', pattern))


# `list` is timm's name for it (list_pretrained); in this module the
# builtin is `builtins.list`.
def list(pattern: str = '*') -> List[str]:  # pylint: disable=redefined-builtin
  """The known timm names 'ARCHITECTURE.TAG' (the Hub's 'timm/...'
  repositories) this package loads, as `timm.list_pretrained(pattern)`
  lists them: `pattern` an fnmatch pattern over the name (or over the
  architecture alone, which keeps all its tags), e.g. '*siglip*',
  '*.mae', 'vit_base_patch16_224'. In SUPPORTED's order, each
  architecture's default tag first."""
  pattern = _strip_hub_prefix(pattern)
  return [f'{name}.{tag}' for name, architecture in SUPPORTED.items()
          for tag in _matching_tags(pattern, name, architecture)]


def supported_table(pattern: str = '*', family: Optional[str] = None) -> str:
  """A header, then one line per supported timm architecture: its name,
  the family here, the variant, options and resolution it is built with,
  and timm's tags of it on the Hub (the first the default). `pattern`
  (as for `list`) and `family` select lines; a pattern that names tags
  shows those. Empty when nothing matches."""
  pattern = _strip_hub_prefix(pattern)
  rows = []
  for name, architecture in SUPPORTED.items():
    if family not in (None, architecture.family):
      continue
    tags = _matching_tags(pattern, name, architecture)
    if tags or fnmatch.fnmatchcase(name, pattern):
      rows.append((name, architecture.family, _describe(architecture),
                   ' '.join(tags) or '(none: no weights on the Hub)'))
  if not rows:
    return ''
  header = ('architecture', 'family', 'built as',
            'timm tags (the first is the default)')
  widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
  return '\n'.join('  '.join([*(cell.ljust(width) for cell, width
                                in zip(row[:3], widths)), row[3]])
                   for row in [header, *rows])


# Why an architecture is not supported: fnmatch patterns of timm's names
# -> what it builds that no family here does (every matching row is
# named). Facts of timm's entry points.
UNSUPPORTED_FEATURES = (
    ('*dinov3*', 'rotary position embedding'),
    ('deit_*distilled*', 'the distillation token and head'),
    ('swinv2_cr_*', 'the SwinV2-CR block layout (timm\'s own, not the '
     'authors\')'),
    ('eva02_enormous_*', 'residual post-norm blocks (EVA-02-E)'),
    ('eva_large_*', 'a class token beside average pooling in timm\'s '
     'VisionTransformer'),
    ('*rope*', 'rotary position embedding'),
    ('*relpos*', 'a relative position bias'),
    ('vit_*_r[0-9]*_s*', 'a ResNet stem (hybrid ViT)'),
    ('vit_*_r_s*', 'a ResNet stem (hybrid ViT)'),
    ('vit_*_resnet*', 'a ResNet stem (hybrid ViT)'),
    ('vit_*_siglip_gap_*', 'SigLIP\'s tanh GELU'),
    ('vit_pe_*', 'rotary position embedding'),
    ('cait_*', 'class attention with talking heads'),
    ('gmixer_*', 'gated (SwiGLU) token mixing'),
    ('resmlp_*', 'affine normalisation'),
    ('swin_s3_*', 'searched per-stage window sizes'),
    ('resnet*', 'convolutional stages (no family here)'),
    ('convnext*', 'convolutional stages (no family here)'),
    ('efficientnet*', 'convolutional stages (no family here)'),
)


def _missing_features(architecture: str) -> List[str]:
  found = []
  for pattern, features in UNSUPPORTED_FEATURES:
    if fnmatch.fnmatchcase(architecture, pattern) and features not in found:
      found.append(features)
  return found


def _unknown_architecture(architecture: str, source: str) -> ValueError:
  close = difflib.get_close_matches(architecture, SUPPORTED, n=6, cutoff=0.6)
  features = _missing_features(architecture)
  why = (f'it needs {"; ".join(features)}, which no family here builds'
         if features else 'no family here builds it')
  return ValueError(
      f'Unsupported timm architecture {architecture!r} (of {source!r}): '
      f'{why}. Close matches: {close or "none"}. All supported '
      f'architectures and their tags: vit_jax.pretrained.list(), or '
      f'`python -m vit_jax.models --pretrained`.')


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
          f'{[*fixed[key]]}).')
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
      kwargs[renamed[key]] = (tuple(value)
                              if isinstance(value, builtins.list)
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
              cache_dir: Optional[str], hint: str = '') -> str:
  """The local path of `filename` of Hub repository `repo_id`, downloaded
  into the cache unless it is there or offline mode is on. A miss is one
  line naming the repository (and `hint`: what else the name could be)."""
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
          f'once with network access, or unset HF_HUB_OFFLINE.{hint}'
      ) from error
    raise FileNotFoundError(
        f'{what} and could not be downloaded (is the Hub reachable?).{hint}'
    ) from error
  except errors.EntryNotFoundError as error:
    raise FileNotFoundError(
        f'The Hub repository {repo_id} has no {filename} (timm checkpoints '
        f'are read from {CONFIG_FILE} and {WEIGHTS_FILE}).') from error
  except errors.RevisionNotFoundError:
    raise FileNotFoundError(
        f'The Hub repository {repo_id} has no revision {revision!r} (a '
        f'branch, tag or commit).') from None
  except errors.RepositoryNotFoundError:
    # Also what the Hub answers for a private or gated repository.
    raise FileNotFoundError(
        f'No Hub repository {repo_id} (or it is private or gated: '
        f'`hf auth login` with access to it), and no local directory '
        f'{repo_id!r}.{hint}') from None
  except errors.HfHubHTTPError as error:
    reason = _first_line(error)
    raise FileNotFoundError(
        f'{repo_id}: {filename} could not be downloaded: {reason}') from error


def _first_line(error: BaseException) -> str:
  """The first line of an error's message."""
  return (str(error).strip().splitlines() or [type(error).__name__])[0]


class HubName(NamedTuple):
  """A name resolved to a Hub repository."""
  repo_id: str  # 'ORGANISATION/NAME'
  revision: Optional[str]  # None: the default branch
  architecture: Optional[str]  # timm's, for 'timm/' names; else None


def resolve_name(name: str, revision: Optional[str] = None) -> HubName:
  """'timm/ARCH.TAG', 'ARCH.TAG', 'ARCH' (timm's default tag) or timm's
  'hf-hub:...', each with an optional '@REVISION', or 'ORG/NAME' -> the
  Hub repository and revision.

  Raises:
    ValueError: a name of neither form; an architecture not in SUPPORTED
      (saying what it needs and the close matches); no tag where timm
      has no weights of the architecture; two different revisions.
  """
  text = name
  for prefix in ('hf-hub:', 'hf_hub:'):
    text = text[len(prefix):] if text.startswith(prefix) else text
  if '@' in text:
    text, _, at = text.rpartition('@')
    if not at or not text:
      raise ValueError(f'{name!r}: nothing on one side of \'@\'; the form '
                       f'is NAME@REVISION (a branch, tag or commit).')
    if revision not in (None, at):
      raise ValueError(f'{name!r} names revision {at!r} and load() was '
                       f'given revision={revision!r}: give one.')
    revision = at
  parts = text.split('/')
  if len(parts) == 1:
    parts = [HUB_ORGANISATION, text]
  if len(parts) != 2 or not all(parts) or text.startswith(('.', '~')):
    raise ValueError(
        f'{name!r} is neither a local directory nor a Hub model name '
        f'(\'timm/ARCHITECTURE.TAG\', e.g. '
        f'\'timm/vit_base_patch16_224.augreg2_in21k_ft_in1k\', or '
        f'\'ARCHITECTURE\' for timm\'s default tag).')
  organisation, repo_name = parts
  if organisation != HUB_ORGANISATION:
    return HubName('/'.join(parts), revision, None)
  architecture, _, tag = repo_name.partition('.')
  if architecture not in SUPPORTED:
    raise _unknown_architecture(architecture, name)  # before downloading
  if not tag:
    tags = SUPPORTED[architecture].tags
    if not tags:
      raise ValueError(
          f'{name!r} names no tag, and timm has no weights of '
          f'{architecture} on the Hub (an untrained entry point): name a '
          f'repository (\'ORGANISATION/NAME\') or a local directory.')
    tag = tags[0]
  repo_name = f'{HUB_ALIASES.get(architecture, architecture)}.{tag}'
  return HubName(f'{HUB_ORGANISATION}/{repo_name}', revision, architecture)


def _known_tags(hub_name: HubName) -> str:
  """What a miss's error adds: the architecture's known tags."""
  if hub_name.architecture is None:
    return ''
  tags = SUPPORTED[hub_name.architecture].tags
  return (f' timm\'s tags of {hub_name.architecture}: {[*tags]} (the '
          f'first is the default).' if tags else '')


# transformers' model_type -> from_hf's family; its config's sizes (name,
# get_model kwarg, transformers' default where the config leaves it out:
# ViTConfig's and ViTMAEConfig's) -> get_model kwargs, for the error that
# points there.
_HF_FAMILIES = {'vit': 'vit', 'vit_mae': 'mae', 'segformer': 'segformer'}
_HF_SIZES = (('patch_size', 'patch_size', 16), ('hidden_size', 'width', 768),
             ('num_hidden_layers', 'depth', 12),
             ('num_attention_heads', 'num_heads', 12),
             ('intermediate_size', 'mlp_dim', 3072),
             ('layer_norm_eps', 'layer_norm_eps', 1e-12))
_HF_DECODER_SIZES = (('decoder_hidden_size', 'decoder_width', 512),
                     ('decoder_num_hidden_layers', 'decoder_depth', 8),
                     ('decoder_num_attention_heads', 'decoder_num_heads', 16),
                     ('decoder_intermediate_size', 'decoder_mlp_dim', 2048))
# SegformerConfig's (per stage, as lists; B0's defaults).
_HF_SEGFORMER_SIZES = (('hidden_sizes', 'widths', (32, 64, 160, 256)),
                       ('depths', 'depths', (2, 2, 2, 2)),
                       ('num_attention_heads', 'num_heads', (1, 2, 5, 8)),
                       ('sr_ratios', 'sr_ratios', (8, 4, 2, 1)),
                       ('decoder_hidden_size', 'decoder_width', 256))
_HF_LABELS = 2  # transformers' num_labels without an id2label


def _transformers_layout(source: str, config: Mapping[str, Any]
                         ) -> ValueError:
  """The error for a transformers checkpoint (`source`: its directory or
  Hub repository): the `from_hf` call that reads it, or why none does."""
  model_type = config.get('model_type')
  classes = config.get('architectures') or []
  what = (f'{CONFIG_FILE} of {source} is a Hugging Face transformers '
          f'config (model_type '
          f'{model_type!r}{", " + ", ".join(classes) if classes else ""}), '
          f'not timm\'s (no "architecture")')
  family = _HF_FAMILIES.get(model_type)
  if family is None:
    return ValueError(
        f'{what}; vit_jax.weights.from_hf reads transformers\' model types '
        f'{[*_HF_FAMILIES]} only: load the timm release of these weights '
        f'(vit_jax.pretrained.list() names those known).')
  if family == 'segformer':
    sizes = _HF_SEGFORMER_SIZES
  else:
    sizes = _HF_SIZES + (_HF_DECODER_SIZES if family == 'mae' else ())
  # (`list` here is this module's listing; JSON arrays become tuples.)
  kwargs = {ours: (value if isinstance(value, (str, int, float))
                   else tuple(value))
            for theirs, ours, default in sizes
            for value in [config.get(theirs, default)]}
  if family in ('vit', 'segformer'):
    classifies = any(name.endswith(('ForImageClassification',
                                    'ForSemanticSegmentation'))
                     for name in classes)
    kwargs['num_classes'] = (len(config.get('id2label') or ()) or _HF_LABELS
                             if classifies else 0)
  arguments = ', '.join(f'{key}={value!r}' for key, value in kwargs.items())
  return ValueError(
      f'{what}: read its {WEIGHTS_FILE} with '
      f'safetensors.numpy.load_file and convert it with '
      f'vit_jax.weights.from_hf(state_dict, {family!r}, {arguments}).')


def _read_config(path: str, source: str) -> Dict[str, Any]:
  """timm's config.json at `path` (of `source`, a directory or Hub
  repository), in its newer layout."""
  with open(path) as f:
    config = json.load(f)
  if isinstance(config, dict) and 'architecture' not in config and (
      'model_type' in config or 'architectures' in config):
    raise _transformers_layout(source, config)
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
      left out; without '.TAG', timm's default tag of the architecture;
      '@REVISION' at the end, as `revision`), another 'ORGANISATION/NAME'
      in timm's layout, or a local directory in the Hub layout
      (config.json and model.safetensors, as timm writes them).
    num_classes: outputs of the head; None keeps the checkpoint's. Another
      number replaces the head by a zero-initialised one (0: no head; the
      logits are then the representation).
    image_size: the resolution to run at; None keeps the checkpoint's. A
      learned position embedding is resampled to it as timm does
      (`weights.from_timm`'s posemb_interpolation='bicubic').
    revision: a Hub branch, tag or commit (default: 'main'); the same as
      'NAME@REVISION'.
    cache_dir: the Hugging Face cache to use (default: HF_HUB_CACHE, else
      huggingface_hub's default).
    **model_overrides: get_model kwargs over the architecture's (e.g.
      dtype=jnp.bfloat16, scan=True, or sizes for a custom model).

  Returns:
    A `Pretrained`: model, variables, family, model_kwargs, image_size,
    num_classes, preprocessing, label_names.

  Raises:
    ValueError: an architecture not in SUPPORTED (what it needs that no
      family here builds, and the close matches), timm model_args this
      package cannot express, a transformers checkpoint (the `from_hf`
      call that reads it), or a size of the weights that is not the
      model's (`weights.from_timm`).
    FileNotFoundError: a file neither in the directory nor in the cache
      (with offline mode on, or the Hub unreachable), a repository or
      revision the Hub does not have: one line naming the repository.
  """
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  name = os.fspath(name)
  hub_name = None
  if os.path.isdir(name):
    config_path = os.path.join(name, CONFIG_FILE)
    weights_path = os.path.join(name, WEIGHTS_FILE)
    source = name
    if os.path.isfile(config_path):  # transformers' layout: said first
      _read_config(config_path, source)
    for path in (config_path, weights_path):
      if not os.path.isfile(path):
        raise FileNotFoundError(
            f'{path} not found: a checkpoint directory in timm\'s Hub '
            f'layout has {CONFIG_FILE} and {WEIGHTS_FILE}.')
    fetch = lambda path: path  # noqa: E731
  else:
    hub_name = resolve_name(name, revision)
    source = hub_name.repo_id
    config_path, weights_path = CONFIG_FILE, WEIGHTS_FILE
    fetch = lambda filename: _hub_file(  # noqa: E731
        hub_name.repo_id, filename, hub_name.revision, cache_dir,
        _known_tags(hub_name))

  config = _read_config(fetch(config_path), source)
  if hub_name is not None and hub_name.architecture not in (
      None, config.get('architecture')):
    # As timm builds a name it loads from another entry point's repository
    # (HUB_ALIASES): the architecture named, with the repository's weights.
    config = dict(config, architecture=hub_name.architecture)
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
