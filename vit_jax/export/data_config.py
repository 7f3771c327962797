"""The preprocessing an export writes: timm's data config (the
pretrained_cfg entries `input_size`, `interpolation`, `crop_pct`,
`crop_mode`, `mean`, `std` that timm's `resolve_data_config` reads),
derived from a run's evaluation spec or given (an imported checkpoint's
`pretrained.Preprocessing`).

timm evaluates an image by resizing it to floor(size / crop_pct) (the
shorter side for 'center', both sides for 'squash'), cropping the centre
`size`, then (x / 255 - mean) / std. `from_pp_eval` maps the spec shapes
that say the same:

  no resize or crop                       crop_pct 1: images come at size
  resize_small(S[, m])|central_crop(C)    'center', crop_pct C / S, m
  resize(R[, m])[|central_crop(C)]        'squash', crop_pct C / R (or 1)
  resize_keep_ratio(R, m, longest)|central_crop(C)
                                          'center' (longest 0) or
                                          'border' (1), crop_pct C / R
  (with timm=True, as predict.pretrained_spec writes them: exact)
  value_range / normalize, in any chain   mean, std: one affine map

Anything else (random ops, a crop without a resize, a resize method timm
lacks) has no timm data config: the closest one is written with a note
in `notes` (pretrained_cfg's field for remarks), and logged.
"""

import logging
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# The export's warnings (`python -m vit_jax.export` prints them).
LOGGER = logging.getLogger('vit_jax.export')
# The data config's own keys: a `pretrained.Preprocessing` gives these.
KEYS = ('input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std')

# Ops that do not touch the pixels the model sees ('decode': the channels
# come from the weights).
_PIXEL_NEUTRAL = ('decode', 'onehot', 'keep', 'copy')
# tf.image.resize methods -> timm's interpolation names; exact for the first
# three, the closest PIL filter for the rest (with a note).
_INTERPOLATIONS = {'bilinear': 'bilinear', 'bicubic': 'bicubic',
                   'nearest': 'nearest'}
_CLOSEST = {'lanczos3': 'lanczos', 'lanczos5': 'lanczos', 'area': 'box',
            'mitchellcubic': 'bicubic', 'gaussian': 'bilinear'}
# The resize ops' default method.
_DEFAULT_METHOD = 'bilinear'


def _round(value: float) -> float:
  """Drops float noise of the affine composition (0.22900000000000004)."""
  return float(f'{value:.12g}') + 0.0  # and no -0.0


def crop_pct(crop: int, scaled: int) -> float:
  """crop / scaled, nudged so that timm's floor(crop / crop_pct) is
  `scaled` again (224 / 233 alone gives 232.99999...)."""
  pct = crop / scaled
  while math.floor(crop / pct) < scaled:
    pct = math.nextafter(pct, 0.0)
  while math.floor(crop / pct) > scaled:
    pct = math.nextafter(pct, 1.0)
  return pct


def _pair(size) -> Tuple[int, int]:
  if isinstance(size, int):
    return (size, size)
  return (int(size[0]), int(size[1]))


def _method(name: str, args: tuple, kwargs: Mapping[str, Any],
            notes: List[str]) -> Tuple[Tuple[int, int], str]:
  """(size, timm interpolation) of a resize / resize_small /
  resize_keep_ratio op."""
  size = args[0] if args else kwargs['size']
  method = args[1] if len(args) > 1 else kwargs.get('method', _DEFAULT_METHOD)
  # resize_keep_ratio's `longest` is the crop mode (`_geometry`); timm=True
  # resamples as PIL does, which is timm's own transform.
  other = sorted(set(kwargs) - {'size', 'method', 'longest', 'timm'})
  if other:
    notes.append(f'{name} arguments {other} are not expressed')
  if kwargs.get('timm'):  # PIL's filter names are timm's interpolations
    return _pair(size), method
  if method in _INTERPOLATIONS:
    return _pair(size), _INTERPOLATIONS[method]
  closest = _CLOSEST.get(method, _DEFAULT_METHOD)
  notes.append(f'{name} method {method!r} has no timm interpolation; '
               f'{closest!r} is the closest')
  return _pair(size), closest


def _geometry(ops: Sequence[Tuple[str, tuple, dict]], notes: List[str]
              ) -> Dict[str, Any]:
  """crop_mode, crop_pct, interpolation (and input size [H, W] where the
  spec fixes it) of the spec's resize and crop ops."""
  names = [name for name, _, _ in ops]
  if not ops:  # e.g. digits: the images are the model's size already
    return {'crop_mode': 'center', 'crop_pct': 1.0,
            'interpolation': _DEFAULT_METHOD}
  if names in (['resize_small', 'central_crop'], ['resize'],
               ['resize', 'central_crop'],
               ['resize_keep_ratio', 'central_crop']):
    (scaled, interpolation), crop = _method(*ops[0], notes), None
    if len(ops) == 2:
      crop_args, crop_kwargs = ops[1][1], ops[1][2]
      crop = _pair(crop_args[0] if crop_args else crop_kwargs['size'])
    if names[0] == 'resize_keep_ratio':
      # timm's ResizeKeepRatio: covering the size ('center', longest 0) or
      # fitting inside it ('border', longest 1; the crop pads).
      args, kwargs = ops[0][1], ops[0][2]
      longest = args[2] if len(args) > 2 else kwargs.get('longest', 0.0)
      mode = {0: 'center', 1: 'border'}.get(longest, 'center')
      if longest not in (0, 1):
        notes.append(f'resize_keep_ratio longest={longest!r} is neither '
                     f'timm\'s center (0) nor its border (1)')
    elif names[0] == 'resize_small':
      scaled = (scaled[0], scaled[0])  # one side: the shorter
      mode = 'center'
      if crop[0] != crop[1]:
        notes.append(f'the non-square crop {crop} of a resize_small has no '
                     f'timm counterpart (timm scales the image to cover the '
                     f'crop / crop_pct)')
    else:
      mode = 'squash'
    crop = crop or scaled
    pcts = sorted({crop_pct(c, s) for c, s in zip(crop, scaled)})
    # One crop_pct whose floor(crop / crop_pct) gives every side's size
    # (each side's own fraction, nudged, may already serve both).
    fits = [pct for pct in pcts
            if all(math.floor(c / pct) == s for c, s in zip(crop, scaled))]
    if not fits:
      notes.append(f'the crop {crop} of {scaled} is not one fraction of both '
                   f'sides')
    return {'crop_mode': mode, 'crop_pct': (fits or pcts)[0],
            'interpolation': interpolation, 'size': list(crop)}
  notes.append(f'its resize and crop ops {names} have no timm counterpart '
               f'(timm resizes, then crops the centre)')
  return {'crop_mode': 'center', 'crop_pct': 1.0,
          'interpolation': _DEFAULT_METHOD}


def _normalisation(ops: Sequence[Tuple[str, tuple, dict]], channels: int,
                   notes: List[str]) -> Dict[str, List[float]]:
  """timm's mean / std of the spec's value ops, composed: each maps pixels
  affinely, so the chain is x -> scale * x + offset (x in [0, 255]), and
  (x / 255 - mean) / std is that with std = 1 / (255 scale), mean =
  -offset std."""
  scale, offset = np.ones(channels), np.zeros(channels)
  for name, args, kwargs in ops:
    bound = dict(zip(('lo', 'hi', 'in_min', 'in_max') if name == 'value_range'
                     else ('mean', 'std'), args), **kwargs)
    if name == 'value_range':
      in_min, in_max = bound.get('in_min', 0), bound.get('in_max', 255)
      factor = (bound['hi'] - bound['lo']) / (in_max - in_min)
      scale, offset = scale * factor, bound['lo'] + factor * (offset - in_min)
    else:
      mean, std = (np.ravel(np.asarray(bound[key], np.float64))
                   for key in ('mean', 'std'))
      if {mean.size, std.size} - {1, channels}:
        notes.append(f'normalize has {mean.size} means and {std.size} stds '
                     f'for {channels} channels; the first is used')
        mean, std = mean[:1], std[:1]
      scale, offset = scale / std, (offset - mean) / std
  std = 1.0 / (255.0 * scale)
  return {'mean': [_round(value) for value in -offset * std],
          'std': [_round(value) for value in std]}


def from_pp_eval(pp_eval: str, channels: int) -> Dict[str, Any]:
  """timm's data config of a run's evaluation spec (config.data.pp_eval):
  interpolation, crop_pct, crop_mode, mean, std; input_size [C, H, W]
  where the spec's crop or resize fixes it; `notes` (and a logged warning)
  where the spec has no faithful timm counterpart."""
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top  (TF)
  ops = preprocess.parse_spec(pp_eval or '')
  notes = []
  random = sorted({name for name, _, _ in ops} & preprocess.RANDOM_OPS)
  if random:
    notes.append(f'its random ops {random} are left out')
  value_ops = [op for op in ops if op[0] in ('value_range', 'normalize')]
  geometry_ops = [op for op in ops if op[0] not in (
      *_PIXEL_NEUTRAL, 'value_range', 'normalize', *preprocess.RANDOM_OPS)]
  cfg = _geometry(geometry_ops, notes)
  size = cfg.pop('size', None)
  if size:
    cfg['input_size'] = [channels, *size]
  cfg.update(_normalisation(value_ops, channels, notes))
  if notes:
    note = (f'the run\'s pp_eval {pp_eval!r} is not exactly timm\'s data '
            f'config: {"; ".join(notes)}.')
    LOGGER.warning('%s', note)
    cfg['notes'] = [f'vit_jax: {note}']
  return cfg


def complete(given: Optional[Any], image_size: Tuple[int, int],
             channels: int) -> Dict[str, Any]:
  """The full data config of an export at `image_size` with `channels`:
  `given` (a mapping of pretrained_cfg entries, or a
  `pretrained.Preprocessing`) over timm's defaults (logged when nothing is
  given: the export then does not know how its images were prepared); mean
  and std one per channel; input_size the export's (a given one that
  differs is noted)."""
  from vit_jax import pretrained  # pylint: disable=g-import-not-at-top  (it imports export)
  if hasattr(given, '_asdict'):  # a pretrained.Preprocessing
    given = {key: value for key, value in given._asdict().items()
             if key in KEYS}
  given = dict(given or {})
  if not any(key in given for key in KEYS):
    LOGGER.warning('No preprocessing given to the export: timm\'s defaults '
                   '(mean, std, crop_pct %s, %s) are written.',
                   pretrained.DEFAULT_CROP_PCT,
                   pretrained.DEFAULT_INTERPOLATION)
  cfg = {'interpolation': pretrained.DEFAULT_INTERPOLATION,
         'crop_pct': pretrained.DEFAULT_CROP_PCT,
         'crop_mode': pretrained.DEFAULT_CROP_MODE, **given}
  notes = list(cfg.get('notes') or [])
  for key, default in (('mean', pretrained.DEFAULT_MEAN),
                       ('std', pretrained.DEFAULT_STD)):
    values = [float(value) for value in np.ravel(cfg.get(key, default))]
    if len(values) == 1:
      values = values * channels
    elif len(values) != channels:
      if key in given:
        raise ValueError(f'The preprocessing\'s {key} {values} has '
                         f'{len(values)} values; the model takes {channels} '
                         f'channels (give one value, or one per channel).')
      values = [float(np.mean(values))] * channels  # timm's RGB default
    cfg[key] = values
  input_size = [channels, *image_size]
  if given.get('input_size') and list(given['input_size'])[-2:] != list(
      image_size):
    note = (f'the preprocessing gives {list(given["input_size"])} images; '
            f'the weights are exported at {input_size}.')
    LOGGER.warning('%s', note)
    notes.append(f'vit_jax: {note}')
  cfg['input_size'] = input_size
  cfg['crop_pct'] = float(cfg['crop_pct'])
  if notes:
    cfg['notes'] = notes
  return cfg
