"""Intermediate outputs of any family, per block (ViT, MAE's encoder, Mixer,
XCiT, ConvMixer, BEiT) or per stage (Swin, SwinV2), in the layout of timm's
`forward_intermediates`:

    from vit_jax.models import features
    maps = features.extract(model, variables, images, layers=[-4, -1],
                            norm=True)
    maps['block_8'], maps['block_11']          # [B, h, w, D] each

`extract` runs the model once (eval mode; BatchNorm's running averages) and
returns {layer name: output}. What it returns for a layer follows timm's
`forward_intermediates(x, indices, norm, output_fmt, intermediates_only)`:

  layers   None: every layer; an int n: the last n; a sequence of indices
           (negative ones count from the end) and / or names ('block_3',
           'stage_-1'); one name. Names are 'block_i' (or 'stage_i') with i
           the 0-based index, the key of the result whatever was asked.
  norm     True: through the model's final norm (ViT's encoder_norm, ...),
           as timm applies its `norm` to every block; a hierarchical family
           only to its last stage (the norm is sized for it), and a model
           without a final norm (ViT or BEiT with fc_norm, ConvMixer)
           returns the outputs as they are, as timm's Identity norm does.
  output_fmt
           'NHWC' (timm's 'NCHW', channels last as JAX takes images): token
           outputs without their prefix tokens (class token, registers)
           reshaped to the patch grid; 'NLC': [B, h*w, D], maps flattened.
  prefix_tokens
           True: also '<name>/prefix', the prefix tokens [B, P, D] (timm's
           return_prefix_tokens); token families only.
  intermediates_only
           False: also 'final', what timm returns beside the intermediates
           (the final norm's output, all tokens; without a final norm the
           last layer's raw output).

The model is not edited for it: each family's file declares FEATURES, a
dict of module paths read here (see FEATURE_FIELDS):

    FEATURES = dict(layers='encoder/block_{}', grid='patch_embed',
                    norm='encoder_norm')

and `extract` records those modules' outputs with a flax method interceptor
while the model runs, then applies the norm module itself to the recorded
outputs. A model with scanned blocks (scan=True) is run unrolled with its
params unstacked; an MAE through its encoder, as a ViT
(`models.classifier_view`). Under jit, pass everything but variables and
images as static (functools.partial); the blocks after the last one asked
for are then dropped as unused, which is what timm's stop_early saves.
"""

import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax

from vit_jax.models import common

# A family's FEATURES: its fields, with their defaults (None: required).
FEATURE_FIELDS = {
    # Path of the block / stage modules, '{}' the 0-based index; the names
    # of the layers are its last part ('block_{}' -> 'block_3').
    'layers': None,
    # Path of the module whose output is the patch grid [B, h, w, D] (a
    # volume's [B, d, h, w, D]: UNETR's blocks come out on it), for
    # families whose layers return tokens [B, P + h*w, D] (the P prefix
    # tokens first); absent for layers that return maps [B, h, w, C].
    'grid': None,
    # Path of the final norm that norm=True applies; absent: none.
    'norm': None,
    # The norm fits the last layer only (a hierarchical family's stages
    # widen, the norm is sized for the last one).
    'norm_last_only': False,
}
OUTPUT_FORMATS = ('NHWC', 'NLC')
NORM_SUFFIX = '_norm'  # a representation name through the final norm

Layers = Union[None, int, str, Sequence[Union[int, str]]]


# ----------------------------------------------------------------------------
# The family's declaration, and the layers its params hold.


def _family(model: nn.Module):
  """The family module of `model`; None for a module of none."""
  from vit_jax import models  # pylint: disable=g-import-not-at-top
  for family in models.FAMILIES:
    if isinstance(model, family.MODEL):
      return family
  return None


def declaration(model: nn.Module) -> Optional[Dict[str, Any]]:
  """The FEATURES of `model`'s family over FEATURE_FIELDS; None where the
  family declares none (an MAE: its encoder, a ViT, does). Unknown or
  missing fields raise."""
  family = _family(model)
  declared = getattr(family, 'FEATURES', None)
  if declared is None:
    return None
  unknown = sorted(set(declared) - set(FEATURE_FIELDS))
  if unknown or '{}' not in (declared.get('layers') or ''):
    raise ValueError(f'{family.__name__}.FEATURES {declared!r}: unknown '
                     f'fields {unknown} or no layers path with "{{}}"; '
                     f'fields: {list(FEATURE_FIELDS)}.')
  return {**FEATURE_FIELDS, **declared}


def _kind(spec: Mapping[str, Any]) -> str:
  """'block' for 'encoder/block_{}': the layer names' stem."""
  return spec['layers'].rsplit('/', 1)[-1].replace('_{}', '')


def _name(spec: Mapping[str, Any], index: int) -> str:
  return spec['layers'].rsplit('/', 1)[-1].format(index)


def _count(spec: Mapping[str, Any], params: Mapping[str, Any]) -> int:
  """How many layers the params hold (every block and stage has
  parameters); blocks scanned by `common.run_blocks` are one `blocks`
  entry with a leading depth axis."""
  *parents, leaf = spec['layers'].split('/')
  for parent in parents:
    params = params.get(parent, {})
  if leaf == 'block_{}' and 'blocks' in params:
    return jax.tree.leaves(params['blocks'])[0].shape[0]
  count = 0
  while leaf.format(count) in params:
    count += 1
  return count


def _view(model: nn.Module, variables: Mapping[str, Any]
          ) -> Tuple[nn.Module, Dict[str, Any]]:
  """The model whose __call__ runs the layers on all patches, and its
  variables: an MAE's encoder as a ViT, any other model itself."""
  from vit_jax import models  # pylint: disable=g-import-not-at-top
  family = _family(model)
  if family is None:
    raise ValueError(f'{type(model).__name__} is not a model of a family; '
                     f'valid: {[f.MODEL.__name__ for f in models.FAMILIES]}.')
  view, select_params = models.classifier_view(family.NAME, model)
  variables = dict(variables)
  variables['params'] = select_params(variables['params'])
  return view, variables


def _unrolled(model: nn.Module, variables: Mapping[str, Any]
              ) -> Tuple[nn.Module, Dict[str, Any]]:
  """The model with its blocks unrolled and not rematerialised: scanned
  blocks run as one module, whose blocks' outputs are only seen unrolled,
  with the same params split along their depth axis."""
  if getattr(model, 'scan', False):
    variables = {key: common.unstack_blocks(value)
                 for key, value in variables.items()}
    model = model.clone(scan=False)
  if getattr(model, 'remat', False):
    model = model.clone(remat=False)
  return model, variables


def layer_names(model: nn.Module, variables: Mapping[str, Any]) -> List[str]:
  """'block_0' .. 'block_{n-1}' (or 'stage_i'): the layers `extract` takes
  by name; [] for a model that declares none. Shapes suffice
  (`jax.eval_shape`'s variables)."""
  view, variables = _view(model, variables)
  spec = declaration(view)
  if spec is None:
    return []
  return [_name(spec, i) for i in range(_count(spec, variables['params']))]


def _valid(spec, count) -> str:
  kind = _kind(spec)
  return (f'{kind}_0 .. {kind}_{count - 1}, or {kind}_-{count} .. {kind}_-1 '
          f'counted from the end')


def resolve(layers: Layers, count: int, spec: Mapping[str, Any],
            model_name: str = 'the model') -> List[int]:
  """The 0-based indices `layers` names (see the module docstring), as
  timm's `feature_take_indices` resolves them; bad ones raise, naming the
  valid ones."""
  kind = _kind(spec)

  def index_of(layer):
    given = layer
    if isinstance(layer, str):
      match = re.fullmatch(rf'{kind}_(-?\d+)', layer)
      if not match:
        raise ValueError(f'Unknown layer {given!r} of {model_name}; valid: '
                         f'{_valid(spec, count)}.')
      layer = int(match.group(1))
    if isinstance(layer, bool) or not isinstance(layer, int):
      raise ValueError(f'Layers are indices or names, got {given!r} of '
                       f'{model_name}; valid: {_valid(spec, count)}.')
    if not -count <= layer < count:
      raise ValueError(f'Layer {given!r} of {model_name} is out of range; '
                       f'valid: {_valid(spec, count)}.')
    return layer % count

  if layers is None:
    return list(range(count))
  if isinstance(layers, int) and not isinstance(layers, bool):
    if not 1 <= layers <= count:
      raise ValueError(f'layers={layers} asks for the last {layers} layers '
                       f'of {model_name}, which has {count} {kind}s: give '
                       f'1 .. {count}, or a list of indices or names.')
    return list(range(count - layers, count))
  if isinstance(layers, str):
    return [index_of(layers)]
  if not isinstance(layers, Sequence) or not layers:
    raise ValueError(f'layers must be None, a count, a name or a non-empty '
                     f'list of indices or names, got {layers!r}; valid: '
                     f'{_valid(spec, count)}.')
  return [index_of(layer) for layer in layers]


# ----------------------------------------------------------------------------
# Running the model.


class _Recorder:
  """A flax method interceptor recording the outputs of the modules at
  `paths` (the first element of a (tokens, carry) pair) and the final norm
  module, then, once the root module's call returns (its modules still
  bound), applying that norm to the recorded outputs at `to_normalise`."""

  def __init__(self, paths, norm_path, to_normalise):
    self.paths = set(paths)
    self.norm_path = norm_path
    self.to_normalise = to_normalise
    self.outputs = {}
    self.normalised = {}
    self.final = None
    self._norm_module = None
    self._normalising = False

  def __call__(self, next_fun, args, kwargs, context):
    output = next_fun(*args, **kwargs)
    if context.method_name != '__call__' or self._normalising:
      return output
    path = '/'.join(context.module.path)
    if path in self.paths:
      self.outputs[path] = output[0] if isinstance(output, tuple) else output
    if path == self.norm_path and self._norm_module is None:
      self._norm_module = context.module
      self.final = output
    if not path and self._norm_module is not None:
      # Called again here, not inside its own call: flax's bookkeeping of
      # a compact module's names allows one call at a time.
      self._normalising = True
      self.normalised = {p: self._norm_module(self.outputs[p])
                         for p in self.to_normalise}
      self._normalising = False
    return output


def _layout(output, grid, output_fmt):
  """(spatial output in output_fmt, prefix tokens or None)."""
  if grid is None:  # a map [B, h, w, C]
    if output_fmt == 'NLC':
      output = output.reshape(output.shape[0], -1, output.shape[-1])
    return output, None
  batch, *spatial = grid  # (h, w), or (d, h, w) for volumes (UNETR)
  num_prefix = output.shape[1] - math.prod(spatial)
  prefix, tokens = output[:, :num_prefix], output[:, num_prefix:]
  if output_fmt == 'NHWC':
    tokens = tokens.reshape(batch, *spatial, tokens.shape[-1])
  return tokens, prefix


def extract(model: nn.Module, variables: Mapping[str, Any], images: jax.Array,
            layers: Layers = None, *, norm: bool = False,
            output_fmt: str = 'NHWC', prefix_tokens: bool = False,
            intermediates_only: bool = True) -> Dict[str, jax.Array]:
  """{'block_i' (or 'stage_i'): layer i's output, ...}, for the layers asked
  (a dict keeps their order; one returned from jit is sorted by key).

  Args:
    model: a model of any family (`get_model`); an MAE is read through its
      encoder, on all patches.
    variables: as `model.apply` takes them ({'params'}, plus 'batch_stats'
      for BatchNorm families); scanned blocks are unstacked here.
    images: [B, H, W, C].
    layers, norm, output_fmt, prefix_tokens, intermediates_only: see the
      module docstring (timm's forward_intermediates arguments).

  Returns:
    {name: [B, h, w, D] ('NHWC') or [B, h*w, D] ('NLC')}, in the compute
    dtype; with prefix_tokens '<name>/prefix' [B, P, D] too, with
    intermediates_only=False 'final'.
  """
  if output_fmt not in OUTPUT_FORMATS:
    raise ValueError(f'Unknown output_fmt {output_fmt!r}; valid choices: '
                     f'{list(OUTPUT_FORMATS)}.')
  view, variables = _unrolled(*_view(model, variables))
  spec = declaration(view)
  model_name = type(model).__name__
  if spec is None:
    raise ValueError(f'{model_name} declares no layers (FEATURES) to '
                     f'extract.')
  if prefix_tokens and not spec['grid']:
    raise ValueError(f'prefix_tokens=True: the {_kind(spec)}s of '
                     f'{model_name} are feature maps, without prefix '
                     f'tokens.')
  count = _count(spec, variables['params'])
  if not count:
    raise ValueError(f'The params of {model_name} hold no '
                     f'{spec["layers"]!r} (top level: '
                     f'{sorted(variables["params"])}): are they its own?')
  indices = resolve(layers, count, spec, model_name)
  paths = [spec['layers'].format(i) for i in indices]
  last = spec['layers'].format(count - 1)
  watched = paths + [last] + ([spec['grid']] if spec['grid'] else [])
  to_normalise = []
  if norm and spec['norm']:
    to_normalise = [last] if spec['norm_last_only'] else paths
    to_normalise = [p for p in to_normalise if p in paths]
  recorder = _Recorder(watched, spec['norm'], to_normalise)
  with nn.intercept_methods(recorder):
    view.apply(variables, images, train=False)

  grid = None
  if spec['grid']:
    grid = recorder.outputs[spec['grid']].shape[:-1]  # (B, h, w) or 3-D
  result = {}
  for index, path in zip(indices, paths):
    name = _name(spec, index)
    output = recorder.normalised.get(path, recorder.outputs[path])
    result[name], prefix = _layout(output, grid, output_fmt)
    if prefix_tokens:
      result[f'{name}/prefix'] = prefix
  if not intermediates_only:
    result['final'] = (recorder.final if recorder.final is not None
                       else recorder.outputs[last])
  return result


# ----------------------------------------------------------------------------
# Representations by name (`models.representation`).


def representation_layer(model: nn.Module, layer: str
                         ) -> Optional[Tuple[str, bool]]:
  """(layer name, through the final norm) if `layer` names one of the
  model's layers as a representation ('block_8', 'block_-1',
  'stage_2_norm'); None if it is no such name (an aux key, a module path).
  Indices are checked when the features are computed."""
  spec = declaration(model)
  if spec is None or not isinstance(layer, str):
    return None
  normed = layer.endswith(NORM_SUFFIX)
  name = layer[:-len(NORM_SUFFIX)] if normed else layer
  if re.fullmatch(rf'{_kind(spec)}_-?\d+', name):
    return name, normed
  return None
