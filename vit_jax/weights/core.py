"""What every weight layout shares: the two-way table entries, the paired
transforms, applying a table in either direction, flat parameter dicts,
position-embedding resampling and fitting converted parameters to a model.

A family's table (`vit_jax.weights.vit`, ...) is a list of `Entry`s, one per
parameter (or fused group, or module prefix for the `.npz` layout): the
other layout's name (`theirs`, with spellings read besides the one
written), this package's flat path (`ours`) and the `Transform` between
the two. Both names are templates whose `{0}`, `{1}` stand for block
indices and whose `{part}` for the parts of a fused tensor (timm's qkv).
`to_ours` reads a state dict through the table (import), `to_theirs`
writes one (export); the same entry serves both, so the round trip is
exact by construction: every transform is a transpose, reshape or
split / concatenation.
"""

import functools
import logging
import re
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple, Union)

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.models import common

FlatParams = Dict[str, np.ndarray]
ImageSize = Union[int, Tuple[int, int]]

# In a flat path, '<collection>:<path>' names a variable of a collection
# other than 'params' (e.g. 'batch_stats:stem/bn/mean').
COLLECTION_SEPARATOR = ':'


# ----------------------------------------------------------------------------
# Flat '/'-joined parameter dicts.


def flatten(params: Mapping[str, Any], prefix: str = '') -> FlatParams:
  flat = {}
  for name, value in params.items():
    path = f'{prefix}{name}'
    if isinstance(value, Mapping):
      flat.update(flatten(value, path + '/'))
    else:
      flat[path] = value
  return flat


def unflatten(flat: Mapping[str, Any]) -> Dict[str, Any]:
  tree: Dict[str, Any] = {}
  for path, value in flat.items():
    *parents, leaf = path.split('/')
    node = tree
    for name in parents:
      node = node.setdefault(name, {})
    node[leaf] = value
  return tree


def flatten_variables(variables: Mapping[str, Any]) -> FlatParams:
  """{'params': tree, 'batch_stats': tree} -> flat paths; a collection
  other than 'params' prefixes its paths with '<collection>:'."""
  flat = {}
  for collection, tree in variables.items():
    prefix = '' if collection == 'params' else (collection
                                               + COLLECTION_SEPARATOR)
    flat.update(flatten(tree, prefix))
  return flat


def unflatten_variables(flat: Mapping[str, Any]) -> Dict[str, Any]:
  """Inverse of `flatten_variables`; always has 'params'."""
  by_collection: Dict[str, Dict[str, Any]] = {'params': {}}
  for path, value in flat.items():
    collection, sep, rest = path.partition(COLLECTION_SEPARATOR)
    if sep:
      by_collection.setdefault(collection, {})[rest] = value
    else:
      by_collection['params'][path] = value
  return {collection: unflatten(entries)
          for collection, entries in by_collection.items()}


# ----------------------------------------------------------------------------
# Transforms: each named once, with both directions.


class Transform(NamedTuple):
  """How an array changes between the other layout and ours.

  to_ours(array, heads) imports (heads: the attention heads of the entry,
  for transforms that split a width into heads; else None); to_theirs(array)
  exports. None where a direction does not exist (a buffer of the reference
  code has neither)."""
  name: str
  to_ours: Optional[Callable[[np.ndarray, Optional[int]], np.ndarray]]
  to_theirs: Optional[Callable[[np.ndarray], np.ndarray]]
  uses_heads: bool = False


SAME = Transform('same', lambda x, heads: x, lambda x: x)
# torch Linear [out, in] <-> Dense kernel [in, out].
LINEAR = Transform('linear', lambda w, heads: w.T, lambda kernel: kernel.T)
# torch Conv2d [out, in, kh, kw] <-> HWIO (depthwise [D, 1, k, k] <->
# feature-group kernels [k, k, 1, D] alike).
CONV = Transform('conv', lambda w, heads: w.transpose(2, 3, 1, 0),
                 lambda kernel: kernel.transpose(3, 2, 0, 1))
# Linear [heads*hd, D] <-> DenseGeneral [D, heads, hd] (query, key, value).
HEADS_IN = Transform(
    'heads_in', lambda w, heads: w.T.reshape(w.shape[1], heads, -1),
    lambda kernel: kernel.reshape(kernel.shape[0], -1).T, uses_heads=True)
# [heads*hd] <-> [heads, hd].
HEADS_BIAS = Transform('heads_bias', lambda b, heads: b.reshape(heads, -1),
                       lambda bias: bias.reshape(-1), uses_heads=True)
# The output projection: Linear [D, heads*hd] <-> [heads, hd, D].
HEADS_OUT = Transform(
    'heads_out', lambda w, heads: w.T.reshape(heads, -1, w.shape[0]),
    lambda kernel: kernel.reshape(-1, kernel.shape[-1]).T, uses_heads=True)
# A constant the reference code saves (older timm's Swin masks, BatchNorm's
# counter, MAE's sin-cos tables): recomputed here, so nothing to import.
BUFFER = Transform('buffer', None, None)

QKV = ('query', 'key', 'value')


def model_heads(model, index: Tuple[int, ...]) -> int:
  """The usual heads of an entry: the model's `num_heads`."""
  del index
  return model.num_heads


Spellings = Union[str, Sequence[str]]


class Entry(NamedTuple):
  """One parameter (or fused group, or module prefix) in both layouts."""
  # The other layout's names; the first is the one export writes, the
  # others are read too (older releases, other libraries' spellings).
  theirs: Tuple[str, ...]
  ours: Optional[str]  # None: a buffer, dropped on import
  transform: Transform = SAME
  # Fused tensors: the values of `{part}` in `ours`, in their order along
  # axis 0 of theirs.
  parts: Tuple[str, ...] = ()
  # (model, block indices) -> the attention heads, for HEADS_* transforms.
  heads: Callable[[Any, Tuple[int, ...]], int] = model_heads
  read_only: bool = False  # imported, never exported


def entry(theirs: Spellings, ours: Optional[str],
          transform: Transform = SAME, **options) -> Entry:
  return Entry(_spellings(theirs), ours, transform, **options)


def buffer(theirs: Spellings) -> Entry:
  return Entry(_spellings(theirs), None, BUFFER)


def _spellings(theirs: Spellings) -> Tuple[str, ...]:
  return (theirs,) if isinstance(theirs, str) else tuple(theirs)


def _suffixed(theirs: Spellings, suffix: str) -> Tuple[str, ...]:
  return tuple(name + suffix for name in _spellings(theirs))


def norm(theirs: Spellings, ours: str, **options) -> List[Entry]:
  """A LayerNorm (or a BatchNorm's affine part): weight <-> scale."""
  return [entry(_suffixed(theirs, '.weight'), ours + '/scale', **options),
          entry(_suffixed(theirs, '.bias'), ours + '/bias', **options)]


def dense(theirs: Spellings, ours: str, kernel: Transform = LINEAR,
          bias: Transform = SAME, **options) -> List[Entry]:
  return [entry(_suffixed(theirs, '.weight'), ours + '/kernel', kernel,
                **options),
          entry(_suffixed(theirs, '.bias'), ours + '/bias', bias, **options)]


def batch_norm(theirs: str, ours: str) -> List[Entry]:
  """Affine parameters, running averages (the 'batch_stats' collection)
  and torch's counter (`num_batches_tracked`, written 0 on export)."""
  stats = 'batch_stats' + COLLECTION_SEPARATOR + ours
  return [*norm(theirs, ours),
          entry(theirs + '.running_mean', stats + '/mean'),
          entry(theirs + '.running_var', stats + '/var'),
          buffer(theirs + '.num_batches_tracked')]


def attention(ours: str, qkv: Union[Spellings, Mapping[str, Spellings]],
              out: Spellings, **options) -> List[Entry]:
  """`common.Attention` at `ours`: query / key / value fused into one
  Linear `qkv` (its name), or separate (a dict part -> name); `out`, the
  output projection."""
  if isinstance(qkv, Mapping):
    inputs = [e for part in QKV for e in dense(
        qkv[part], f'{ours}/{part}', HEADS_IN, HEADS_BIAS, **options)]
  else:
    inputs = dense(qkv, ours + '/{part}', HEADS_IN, HEADS_BIAS, parts=QKV,
                   **options)
  return [*inputs, *dense(out, ours + '/out', HEADS_OUT, **options)]


# ----------------------------------------------------------------------------
# A family's timm models: the architectures read by name
# (`vit_jax.pretrained.SUPPORTED`), how their model_args translate and the
# config.json export writes.


class Architecture(NamedTuple):
  """How a timm architecture is built here."""
  family: str  # a key of models.MODELS
  model_kwargs: Mapping[str, Any]  # get_model(family, **model_kwargs)
  image_size: int  # the resolution the architecture's name is for
  # timm's pretrained tags of the architecture on the Hub (repositories
  # 'timm/ARCHITECTURE.TAG'), its default first: what a name without a tag
  # loads, as in timm. Empty where timm has no weights of it on the Hub.
  tags: Tuple[str, ...] = ()


def tagged(architectures: Mapping[str, Architecture],
           tags: Mapping[str, Tuple[str, ...]]) -> Dict[str, Architecture]:
  """`architectures` with the `tags` of each name (rows that name their
  own tags keep them); a name without a row is an error."""
  unknown = sorted(set(tags) - set(architectures))
  if unknown:
    raise ValueError(f'Tags for architectures without a row: {unknown}')
  loose = sorted(name for name, given in tags.items()
                 if isinstance(given, str))
  if loose:  # ('tag') is a string: its letters would be the tags
    raise ValueError(f'Tags of {loose} are a string, not a tuple.')
  return {name: (row._replace(tags=tuple(tags[name]))
                 if name in tags and not row.tags else row)
          for name, row in architectures.items()}


class TimmModel(NamedTuple):
  """A model of this package as timm builds it: the entry point
  (`architecture`) and its `model_args`; None, with `reason`, where no
  timm entry point can express the model. The other fields are the
  family's entries of timm's hub config.json."""
  architecture: Optional[str]
  model_args: Dict[str, Any]
  reason: str = ''
  num_features: int = 0
  global_pool: Optional[str] = 'avg'  # falsy: not written
  fixed_input_size: bool = False


# The family's arithmetic on timm's model_args that no renaming expresses:
# adjust(kwargs, architecture, model_args) changes `kwargs` (the
# architecture's sizes spelled out, the renamed model_args applied) in
# place; `architecture` is the same before model_args, to compare with.
Adjust = Callable[[Dict[str, Any], Mapping[str, Any], Mapping[str, Any]],
                  None]


class TimmArgs(NamedTuple):
  """How timm's `model_args` (the constructor arguments a checkpoint's
  config.json records beyond its architecture's own) become the family's
  get_model kwargs (`vit_jax.pretrained`)."""
  size_fields: Tuple[str, ...]  # the kwargs a variant stands for
  renamed: Mapping[str, str]  # timm argument -> kwarg, the value as it is
  fixed: Mapping[str, Tuple[Any, ...]]  # timm argument -> values accepted
  special: Tuple[str, ...] = ()  # timm arguments only `adjust` reads
  adjust: Optional[Adjust] = None


def no_timm_model(reason: str) -> TimmModel:
  return TimmModel(None, {}, reason)


def variant_of(model, table: Mapping[str, Mapping[str, Any]]
               ) -> Optional[str]:
  """The row of a variant table whose every entry the model has."""
  for name, size in table.items():
    if all(getattr(model, key) == (tuple(value) if isinstance(value, list)
                                   else value)
           for key, value in size.items()):
      return name
  return None


def ratio(hidden: int, width: int) -> Optional[float]:
  """hidden / width, if timm's int(width * ratio) gives `hidden` back."""
  value = hidden / width
  return value if int(width * value) == hidden else None


# timm's global_pool of the class-token ViTs (BEiT, EVA) <-> pool_type.
CLASS_TOKEN_POOLING = {'gap': 'avg', 'cls': 'token'}


def class_token_vit_args(kwargs: Dict[str, Any],
                         architecture: Mapping[str, Any],
                         model_args: Mapping[str, Any], family: str) -> None:
  """The model_args timm's BEiT and EVA (which grew out of it) share, in
  place: mlp_ratio (of the new width), global_pool, use_fc_norm (None:
  after pooling when averaging), use_abs_pos_emb and init_values (None:
  no LayerScale). `family` names the model in errors."""
  mlp_ratio = model_args.get('mlp_ratio',
                            kwargs['mlp_dim'] / architecture['width'])
  kwargs['mlp_dim'] = int(kwargs['width'] * mlp_ratio)
  pool_types = {pool: pool_type
                for pool_type, pool in CLASS_TOKEN_POOLING.items()}
  if 'global_pool' in model_args:
    pool = model_args['global_pool']
    if pool not in pool_types:
      raise ValueError(f'timm model_args global_pool={pool!r} has no '
                       f'counterpart in {family} here; supported: '
                       f'{list(pool_types)}.')
    kwargs['pool_type'] = pool_types[pool]
  fc_norm = model_args.get('use_fc_norm')
  if fc_norm is None:
    fc_norm = kwargs.get('pool_type', 'gap') == 'gap'
  kwargs['fc_norm'] = bool(fc_norm)
  if 'use_abs_pos_emb' in model_args:
    kwargs['posemb'] = 'learn' if model_args['use_abs_pos_emb'] else 'none'
  if 'init_values' in model_args:
    kwargs['layer_scale_init'] = float(model_args['init_values'] or 0.0)


def side(image_size: Tuple[int, int]) -> Union[int, List[int]]:
  """timm's img_size: one side for a square, else [height, width]."""
  return image_size[0] if image_size[0] == image_size[1] else list(image_size)


# ----------------------------------------------------------------------------
# Templates.

_PLACEHOLDER = re.compile(r'\{(\d+|part)\}')


@functools.lru_cache(maxsize=None)
def pattern(template: str, parts: Tuple[str, ...]) -> 're.Pattern[str]':
  """The regular expression of a template: `{N}` a block index, `{part}`
  one of `parts`; a template ending in '/' is a module prefix, the rest
  of the name kept as it is."""
  pieces, position = [], 0
  for match in _PLACEHOLDER.finditer(template):
    pieces.append(re.escape(template[position:match.start()]))
    if match[1] == 'part':
      pieces.append('(?P<part>' + '|'.join(map(re.escape, parts)) + ')')
    else:
      pieces.append(rf'(?P<index{match[1]}>\d+)')
    position = match.end()
  pieces.append(re.escape(template[position:]))
  if template.endswith('/'):
    pieces.append('(?P<rest>.*)')
  return re.compile(''.join(pieces))


def _indices(match: 're.Match[str]') -> Tuple[str, ...]:
  groups = match.groupdict()
  count = sum(1 for name in groups if name.startswith('index'))
  return tuple(groups[f'index{n}'] for n in range(count))


def _fill(template: str, match: 're.Match[str]', part: str = '') -> str:
  """`template` with the block indices (and the rest of a prefix) of
  `match`, a match of the entry's other template."""
  filled = template.format(*_indices(match), part=part)
  return filled + (match['rest'] if template.endswith('/') else '')


def theirs_name(table: Sequence[Entry], path: str) -> str:
  """The name export writes for our variable `path` (e.g. timm's name of
  the first convolution's kernel, for timm's config.json)."""
  for item in table:
    if item.ours is not None and not item.read_only:
      match = pattern(item.ours, item.parts).fullmatch(path)
      if match is not None:
        return _fill(item.theirs[0], match, match.groupdict().get('part', ''))
  raise ValueError(f'{path} has no entry in the table.')


def _find(name: str, candidates):
  """The first (template, entry, match) whose template matches `name`."""
  for template, item in candidates:
    match = pattern(template, item.parts).fullmatch(name)
    if match is not None:
      return item, match
  return None, None


# ----------------------------------------------------------------------------
# Applying a table: import (theirs -> ours) and export (ours -> theirs).


def to_ours(source: Mapping[str, Any], table: Sequence[Entry], model,
            source_name: str, keep_unmatched: bool = False,
            expected: Optional[Callable[[FlatParams],
                                        Mapping[str, Tuple[int, ...]]]] = None,
            resizable=None) -> FlatParams:
  """Import: renames and transforms every entry of `source` by the first
  table entry one of whose spellings matches it; a name no entry matches
  is an error (or kept as it is, with `keep_unmatched`).

  `expected` (the converted entries that need no attention heads -> the
  shapes the model expects, in our paths) turns on the size check: each
  entry's shape is compared with the model's variable exported to the
  source's layout, under the source's name, before any entry is split
  into heads. A split into heads succeeds for any head count that divides
  the width, so only this check names a wrong width; a wrong head count
  of the same width is seen only where a weight has an axis per head
  (Swin's bias tables, XCiT's temperature)."""
  candidates = [(name, item) for item in table for name in item.theirs]
  converted: FlatParams = {}
  unknown: List[str] = []
  matched = []
  for name, array in source.items():
    array = np.asarray(array)
    item, match = _find(name, candidates)
    if item is None:
      if keep_unmatched:
        converted[name] = array
      else:
        unknown.append(f'{name} {tuple(array.shape)}')
      continue
    if item.ours is None:  # a buffer
      continue
    if item.transform.to_ours is None:
      raise ValueError(f'The table entry {item.theirs[0]!r} -> '
                       f'{item.ours!r} has no import: its transform '
                       f'{item.transform.name!r} converts one way only.')
    matched.append((name, array, item, match))
  if unknown:
    raise ValueError(
        f'{len(unknown)} {source_name} entries have no counterpart in this '
        f'model family: {unknown}')
  # What needs no heads first: it tells the resolution and the image
  # channels the expected shapes are for.
  split = [record for record in matched if record[2].transform.uses_heads]
  for record in matched:
    if not record[2].transform.uses_heads:
      converted.update(_convert(record, model, source_name))
  if expected is not None:
    _check_sizes(matched, expected(converted), source_name, resizable)
  for record in split:
    converted.update(_convert(record, model, source_name))
  return converted


def _ours_paths(item: Entry, match: 're.Match[str]') -> List[str]:
  return ([_fill(item.ours, match, part) for part in item.parts]
          if item.parts else [_fill(item.ours, match)])


def _convert(record, model, source_name: str) -> FlatParams:
  """One matched source entry in our paths (a fused one split)."""
  name, array, item, match = record
  paths = _ours_paths(item, match)
  heads = (item.heads(model, tuple(map(int, _indices(match))))
           if item.transform.uses_heads else None)
  try:
    pieces = (np.split(array, len(paths), axis=0) if item.parts
              else [array])
    return {path: item.transform.to_ours(piece, heads)
            for path, piece in zip(paths, pieces, strict=True)}
  except ValueError as error:  # e.g. a width the heads do not divide
    per_head = f' into {heads} heads' if heads else ''
    raise ValueError(
        f'The {source_name} entry {name} {tuple(array.shape)} does not '
        f'convert ({item.transform.name}{per_head}) to {paths}: '
        f'{error}') from error


def _standin(shape: Tuple[int, ...]) -> np.ndarray:
  """An array of `shape` that holds no memory (every stride 0): the
  transforms, transposes and reshapes, give its shape in the other
  layout for free."""
  return np.broadcast_to(np.zeros((), np.float32), shape)


def _theirs_shape(item: Entry, shapes: Sequence[Tuple[int, ...]]
                  ) -> Optional[Tuple[int, ...]]:
  """The shape of `item` in the other layout, from its parts' shapes in
  ours; None where the transform does not export."""
  if item.transform.to_theirs is None:
    return None
  pieces = [np.shape(item.transform.to_theirs(_standin(shape)))
            for shape in shapes]
  if len(pieces) == 1:
    return tuple(pieces[0])
  return (sum(piece[0] for piece in pieces), *pieces[0][1:])


# Paths whose size may differ from the model's: fit_to_model resamples
# the position embedding and replaces the head.
_HEAD_PATHS = ('head/kernel', 'head/bias')


def _adapted(path: str, shape: Tuple[int, ...],
             expected: Tuple[int, ...]) -> bool:
  if path in _HEAD_PATHS:
    return True
  return (path == 'pos_embed' and len(shape) == len(expected)
          and shape[-1] == expected[-1])


_LISTED = 8  # mismatches named in an error; the rest are counted


def _check_sizes(matched, expected: Mapping[str, Tuple[int, ...]],
                 source_name: str, resizable=None) -> None:
  """Every matched entry's shape against the model's, in the source's
  names; one error naming each mismatch (key, checkpoint and model
  shapes). `resizable(path, shape, expected)`: shapes the family's own
  `resize` adapts in fit_to_model (e.g. BEiT's bias tables)."""
  problems = []
  for name, array, item, match in matched:
    paths = _ours_paths(item, match)
    shape = tuple(array.shape)
    if not all(path in expected for path in paths):
      continue  # fit_to_model names what the model lacks
    if any(_adapted(path, shape, expected[path]) or (
        resizable is not None and resizable(path, shape, expected[path]))
           for path in paths):
      continue
    wanted = _theirs_shape(item, [expected[path] for path in paths])
    if wanted is not None and wanted != shape:
      ours = paths[0] if len(paths) == 1 else '{' + ', '.join(paths) + '}'
      problems.append(f'{name}: checkpoint {shape} vs model {wanted} '
                      f'(ours: {ours})')
  if problems:
    more = len(problems) - _LISTED
    plural = 'es' if len(problems) > 1 else ''
    raise ValueError(
        f'The {source_name} does not fit the model (wrong variant or '
        f'options?): {len(problems)} shape mismatch{plural}, in its own '
        f'names: {problems[:_LISTED]}'
        + (f' and {more} more.' if more > 0 else '.'))


def to_theirs(flat: Mapping[str, Any], table: Sequence[Entry], layout: str,
              keep_unmatched: bool = False) -> Dict[str, np.ndarray]:
  """Export: every variable of `flat` (flat paths of unstacked blocks)
  renamed and transformed by the first table entry whose `ours` matches it
  (read-only entries and buffers aside); fused parts are concatenated in
  the entry's order. A variable no entry matches is an error (or kept as it
  is, with `keep_unmatched`). A BatchNorm's `running_mean` brings torch's
  `num_batches_tracked` counter with it (int64 0, as timm keeps it)."""
  candidates = [(item.ours, item) for item in table
                if item.ours is not None and not item.read_only]
  converted: Dict[str, np.ndarray] = {}
  fused: Dict[str, Tuple[Tuple[str, ...], Dict[str, np.ndarray]]] = {}
  unknown = []
  for path, array in flat.items():
    array = np.asarray(array)
    item, match = _find(path, candidates)
    if item is None:
      if keep_unmatched:
        converted[path] = np.ascontiguousarray(array)
      else:
        unknown.append(f'{path} {tuple(array.shape)}')
      continue
    if item.transform.to_theirs is None:
      raise ValueError(f'The table entry {item.theirs[0]!r} -> '
                       f'{item.ours!r} of {layout} has no export: its '
                       f'transform {item.transform.name!r} has no inverse.')
    target = _fill(item.theirs[0], match)
    value = np.ascontiguousarray(item.transform.to_theirs(array))
    if item.parts:
      fused.setdefault(target, (item.parts, {}))[1][match['part']] = value
    else:
      converted[target] = value
    if target.endswith('.running_mean'):
      converted[target[:-len('running_mean')] + 'num_batches_tracked'] = (
          np.zeros((), np.int64))
  if unknown:
    raise ValueError(f'{len(unknown)} variables have no counterpart in '
                     f'{layout}: {unknown}')
  for target, (parts, found) in fused.items():
    missing = [part for part in parts if part not in found]
    if missing:
      raise ValueError(f'{target} of {layout} needs {list(parts)}; the '
                       f'variables lack {missing}.')
    converted[target] = np.concatenate([found[part] for part in parts])
  return converted


# ----------------------------------------------------------------------------
# Position embeddings.


# How a position embedding is resampled: 'bilinear' (the ViT paper's
# fine-tuning at a higher resolution) or 'bicubic', antialiased when
# shrinking (timm's resample_abs_pos_embed, as timm loads a checkpoint at
# another size, e.g. DINOv2's 518 px at 224; jax.image.resize's kernel is
# the same as torch's antialiased one).
POSEMB_INTERPOLATIONS = ('bilinear', 'bicubic')


def resample_posemb(posemb: np.ndarray, grid: Tuple[int, int],
                    num_prefix_tokens: int,
                    interpolation: str = 'bilinear') -> np.ndarray:
  """Resampling of a learned position embedding to a new grid.

  posemb: [1, prefix + h*w, D] with a square old grid; the prefix rows (the
  class token's, registers') are kept as they are (ViT paper, Sec. 3.2,
  "Fine-tuning and higher resolution"). interpolation: one of
  POSEMB_INTERPOLATIONS.
  """
  common.check_choice('posemb interpolation', interpolation,
                      POSEMB_INTERPOLATIONS)
  prefix, patch_rows = posemb[:, :num_prefix_tokens], posemb[
      :, num_prefix_tokens:]
  old_side = int(round(np.sqrt(patch_rows.shape[1])))
  if old_side * old_side != patch_rows.shape[1]:
    raise ValueError(
        f'Cannot resample a position embedding of {patch_rows.shape[1]} '
        f'patch positions: not a square grid.')
  width = posemb.shape[-1]
  old_grid = patch_rows.reshape(old_side, old_side, width)
  new_grid = jax.image.resize(jnp.asarray(old_grid, jnp.float32),
                              (grid[0], grid[1], width), method=interpolation)
  new_rows = np.asarray(new_grid).reshape(1, grid[0] * grid[1], width)
  return np.concatenate([prefix, new_rows.astype(posemb.dtype)], axis=1)


# ----------------------------------------------------------------------------
# Fitting converted parameters to a model.

def expected_shapes(model, image_size: Tuple[int, int],
                     channels: int) -> Dict[str, Tuple[int, ...]]:
  """The flat variables' shapes of `model` at a resolution and channel
  count (`jax.eval_shape` of its init; remembered per model, as an import
  asks several times)."""
  key = (model, tuple(image_size), channels)
  try:
    hash(key)
  except TypeError:  # a module with an unhashable field
    return _traced_shapes(*key)
  return dict(_remembered_shapes(*key))


def _traced_shapes(model, image_size: Tuple[int, int],
                   channels: int) -> Dict[str, Tuple[int, ...]]:
  unrolled = model.clone(scan=False) if getattr(model, 'scan', False) else model
  # A video model takes clips [1, T, H, W, C] of its own frame count.
  frames = getattr(model, 'num_frames', None)
  images = jax.ShapeDtypeStruct(
      (1, *((frames,) if frames else ()), *image_size, channels), jnp.float32)
  variables = jax.eval_shape(unrolled.init, jax.random.PRNGKey(0), images)
  return {path: tuple(leaf.shape)
          for path, leaf in flatten_variables(variables).items()}


_remembered_shapes = functools.lru_cache(maxsize=16)(_traced_shapes)


def _input_channels(loaded: FlatParams, model,
                    image_size: Tuple[int, int]) -> int:
  """The image channels `loaded` was trained on: read from the parameters
  that take the images (those whose shape follows the number of channels,
  e.g. the patch embedding's kernel). 3 when `loaded` has none of them:
  they are then reported with the other missing parameters. A model that
  fixes its channels (MAE's `num_channels`) takes only those."""
  if hasattr(model, 'num_channels'):
    return model.num_channels
  grey = expected_shapes(model, image_size, 1)
  pair = expected_shapes(model, image_size, 2)
  channels = set()
  for path, shape in grey.items():
    if path in loaded and pair.get(path) != shape:
      axis = next(i for i, (a, b) in enumerate(zip(shape, pair[path]))
                  if a != b)
      if np.ndim(loaded[path]) == len(shape):
        channels.add(np.shape(loaded[path])[axis])
  if len(channels) > 1:
    raise ValueError(f'The checkpoint\'s input layers disagree on the '
                     f'number of image channels: {sorted(channels)}.')
  return channels.pop() if channels else 3


def _target(loaded: FlatParams, name: str, model,
            image_size: Optional[ImageSize]
            ) -> Tuple[Tuple[int, int], Dict[str, Tuple[int, ...]]]:
  """The resolution `loaded` is fitted to (the checkpoint's own, where
  None) and the shapes `model` expects there, for the image channels
  `loaded` was trained on."""
  if image_size is None:
    image_size = models.checkpoint_image_size(name, model, loaded)
  elif isinstance(image_size, int):
    image_size = (image_size, image_size)
  return image_size, expected_shapes(
      model, image_size, _input_channels(loaded, model, image_size))


def sized_kwargs(name: str, model_kwargs: Mapping[str, Any],
                 image_size: Optional[ImageSize]) -> Dict[str, Any]:
  """`model_kwargs`, with `image_size` among them where the family is
  built for one resolution (its model has an image_size field:
  TimeSformer) and a size is asked for; the importers take image_size as
  the resolution to fit the params to, which such a model must then be
  built for."""
  fields = getattr(models.MODELS.get(name), '__dataclass_fields__', {})
  if image_size is None or 'image_size' not in fields:
    return dict(model_kwargs)
  return {**model_kwargs, 'image_size': image_size}


def import_variables(source: Mapping[str, Any], table: Sequence[Entry],
                     name: str, model, image_size: Optional[ImageSize],
                     source_name: str,
                     posemb_interpolation: str = 'bilinear',
                     fresh_paths: Sequence[str] = ()) -> Dict[str, Any]:
  """A state dict in the layout of `table` as `model`'s variables: every
  size checked in the state dict's own names first (`to_ours`), then
  fitted (`fit_to_model`; `fresh_paths` as there)."""
  from vit_jax.weights import families  # pylint: disable=g-import-not-at-top
  converted = to_ours(
      source, table, model, source_name,
      expected=lambda partial: _target(partial, name, model, image_size)[1],
      resizable=getattr(families.module(name), 'resizable', None))
  return fit_to_model(converted, name, model, image_size, source_name,
                      posemb_interpolation, fresh_paths)


def fit_to_model(loaded: FlatParams, name: str, model,
                  image_size: Optional[ImageSize],
                  source_name: str,
                  posemb_interpolation: str = 'bilinear',
                  fresh_paths: Sequence[str] = ()) -> Dict[str, Any]:
  """Checks, resamples (`resample_posemb`'s `interpolation`) and completes
  `loaded` (flat, see `flatten_variables`) for `model` (of family `name`);
  returns its variables. Variables under `fresh_paths` (prefixes of flat
  paths, e.g. 'decoder/') may be missing: an encoder-only checkpoint, whose
  caller keeps those variables' random initialisation; they are then left
  out of the result."""
  image_size, expected = _target(loaded, name, model, image_size)
  loaded = dict(loaded)

  def fresh(path):
    return any(path.split(':')[-1].startswith(prefix)
               for prefix in fresh_paths)
  encoder_only = bool(fresh_paths) and not any(fresh(p) for p in loaded)

  if 'pos_embed' in loaded and 'pos_embed' in expected:
    old_shape, new_shape = loaded['pos_embed'].shape, expected['pos_embed']
    cls_prefix = 1 if 'cls_token' in expected else 0
    same_prefix = cls_prefix == (1 if 'cls_token' in loaded else 0)
    # A model with register tokens or without the prefix's rows says how
    # many rows precede the patches' (`ViT.posemb_prefix_tokens`).
    prefix = getattr(model, 'posemb_prefix_tokens', cls_prefix)
    if old_shape != new_shape and old_shape[-1] == new_shape[-1] and (
        same_prefix):
      grid = (image_size[0] // model.patch_size,
              image_size[1] // model.patch_size)
      logging.info('Resampling position embedding %s -> %s.', old_shape,
                   new_shape)
      loaded['pos_embed'] = resample_posemb(loaded['pos_embed'], grid, prefix,
                                            posemb_interpolation)

  # Parameters whose shape follows the resolution in a family's own way
  # (BEiT's relative position bias tables): its table module's `resize`.
  from vit_jax.weights import families  # pylint: disable=g-import-not-at-top
  resize = getattr(families.module(name), 'resize', None)
  if resize is not None:
    loaded = resize(loaded, model, image_size)

  # A new task: drop the old head (and the pre-logits layer, which the ViT
  # paper removes for fine-tuning, Sec. 3.1) and start a zero head.
  head_changes = not encoder_only and any(
      loaded.get(p, np.zeros(0)).shape != expected.get(p)
      for p in _HEAD_PATHS if p in loaded or p in expected)
  if head_changes:
    for path in _HEAD_PATHS:
      loaded.pop(path, None)
    if 'head/kernel' in expected:
      logging.info('Replacing the head: new shape %s.',
                   expected['head/kernel'])
      loaded['head/kernel'] = np.zeros(expected['head/kernel'], np.float32)
      loaded['head/bias'] = np.full(expected['head/bias'],
                                    getattr(model, 'head_bias_init', 0.0),
                                    np.float32)
    if 'pre_logits/kernel' not in expected:
      loaded.pop('pre_logits/kernel', None)
      loaded.pop('pre_logits/bias', None)

  missing = sorted(f'{p} {expected[p]}' for p in expected
                   if p not in loaded and not (encoder_only and fresh(p)))
  extra = sorted(f'{p} {tuple(loaded[p].shape)}' for p in loaded
                 if p not in expected)
  misshapen = sorted(
      f'{p}: checkpoint {tuple(loaded[p].shape)} vs model {expected[p]}'
      for p in loaded if p in expected and tuple(loaded[p].shape) != expected[p])
  if missing or extra or misshapen:
    problems = []
    if missing:
      problems.append(f'missing from the checkpoint: {missing}')
    if extra:
      problems.append(f'unexpected in the checkpoint: {extra}')
    if misshapen:
      problems.append(f'shape mismatches: {misshapen}')
    raise ValueError(
        f'The {source_name} does not fit the model (wrong variant or '
        f'options?). ' + '; '.join(problems))

  variables = unflatten_variables(
      {p: np.asarray(v, np.float32) for p, v in loaded.items()})
  if getattr(model, 'scan', False):
    # A family that scans part of its blocks (MViT) says how to stack.
    stack = getattr(model, 'stack_params', common.stack_blocks)
    variables = {collection: stack(tree)
                 for collection, tree in variables.items()}
  return variables
