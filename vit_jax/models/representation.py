"""A model's features at a named layer, the representation that linear and
few-shot evaluation read (`vit_jax.evaluate.representations` computes them
over a split, sharded):

    features_fn = representation_fn(model, 'pre_logits')
    features = features_fn(variables, images)   # float32 [B, D]

The representation is named by `layer`:
  'pre_logits'  `aux['pre_logits']`, the vector the classifier head reads
                (class token, average or MAP pooling, after pre-logits);
  'block_N', 'stage_N' (Swin)
                a block's or stage's output as `models.features.extract`
                gives it (timm's forward_intermediates), N from 0, or
                negative from the end ('block_-1': the last): the patch
                tokens (prefix tokens such as the class token left out) or
                the map, averaged over the grid; with the suffix '_norm'
                ('block_8_norm') through the model's final norm first
                (norm=True); scanned blocks are read unrolled;
  another aux key, e.g. 'encoded' (ViT's final tokens);
  a module path, e.g. 'encoder/block_2' or 'class_block_0' (XCiT): that
                module's output, captured with flax's
                `capture_intermediates`.
Outputs with more than two axes ([B, N, D] tokens, [B, H, W, C] maps) are
averaged over all axes between the batch and the last, giving [B, D].

An MAE model is evaluated through its encoder, as the ViT that
`mae.encoder_as_vit` builds and `mae.encoder_params` loads (no masking):
'pre_logits' is then the encoder's class token after its final LayerNorm,
and 'encoder_norm' the average of all its output tokens.

Here, not in `vit_jax.evaluate`, so that `vit_jax.build` (which hands this
function to evaluators) does not import the evaluators.
"""

from typing import Any, Callable, List, Mapping, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from vit_jax.models import features as features_lib

FeaturesFn = Callable[[Any, jax.Array], jax.Array]


def _pool(features: jax.Array) -> jax.Array:
  """[B, ..., D] -> [B, D], averaging the middle axes; float32."""
  features = jnp.asarray(features, jnp.float32)
  if features.ndim > 2:
    features = features.mean(axis=tuple(range(1, features.ndim - 1)))
  return features


def _module_path(module: nn.Module) -> str:
  return '/'.join(module.path)


def layer_names(model: nn.Module, image_shape: Tuple[int, int, int]
                ) -> List[str]:
  """The representations `representation_fn(model, layer)` can take: aux
  keys and module paths (shapes only are computed)."""
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)

  def apply(variables, images):
    return model.apply(variables, images, train=False,
                       capture_intermediates=True, mutable=['intermediates'])
  (_, aux), state = jax.eval_shape(apply, variables, images)
  paths = []

  def walk(tree, prefix):
    for name, value in tree.items():
      if name == '__call__':
        paths.append('/'.join(prefix))
      elif isinstance(value, Mapping):
        walk(value, prefix + [name])
  walk(state['intermediates'], [])
  blocks = features_lib.layer_names(model, variables)
  return (sorted(aux) + blocks
          + [name + features_lib.NORM_SUFFIX for name in blocks]
          + sorted(path for path in paths if path))


def representation_fn(model: nn.Module, layer: str = 'pre_logits',
                      select_params: Optional[Callable] = None) -> FeaturesFn:
  """features_fn(variables, images [B, H, W, C]) -> float32 [B, D]
  (jittable); `variables` as `model.apply` takes them ({'params'}, plus
  'batch_stats' for models with BatchNorm: the running averages are used).

  `model` follows the classifier contract (`logits, aux = apply(...)`);
  `select_params` maps the trained params to its params (for an MAE,
  `models.classifier_view('mae', model)` gives the encoder and
  `mae.encoder_params`); None: the params as they are.
  Raises ValueError at the first call if `layer` is neither a block or
  stage, nor an aux key, nor a module path of the model, listing the ones
  it has.
  """
  if not isinstance(layer, str) or not layer:
    raise ValueError(f'layer must be an aux key or a module path, got '
                     f'{layer!r}.')

  block = features_lib.representation_layer(model, layer)

  def features_fn(variables, images):
    variables = dict(variables)
    if select_params:
      variables['params'] = select_params(variables['params'])
    if block:
      name, norm = block
      (tokens,) = features_lib.extract(model, variables, images, name,
                                       norm=norm, output_fmt='NLC').values()
      return _pool(tokens)
    is_layer = lambda module, method: (  # noqa: E731
        method == '__call__' and _module_path(module) == layer)
    (_, aux), state = model.apply(variables, images, train=False,
                                  capture_intermediates=is_layer,
                                  mutable=['intermediates'])
    if layer in aux:
      if not hasattr(aux[layer], 'ndim'):
        raise ValueError(f'aux[{layer!r}] of {type(model).__name__} is a '
                         f'{type(aux[layer]).__name__}, not an array; name '
                         f'one module instead, e.g. a stage or block path.')
      return _pool(aux[layer])
    captured = state.get('intermediates', {})
    for name in layer.split('/'):
      captured = captured.get(name, {}) if isinstance(captured,
                                                      Mapping) else {}
    if '__call__' not in captured:
      valid = layer_names(model, images.shape[1:])
      scanned = (' (Scanned blocks have no module path of their own: '
                 'name them block_N.)' if getattr(model, 'scan', False)
                 else '')
      raise ValueError(f'Representation layer {layer!r} is not a block or '
                       f'stage, an aux key or a module path of '
                       f'{type(model).__name__}; valid: {valid}.{scanned}')
    output = captured['__call__'][0]
    if isinstance(output, (tuple, list)):  # modules returning (x, extra)
      output = output[0]
    return _pool(output)
  return features_fn
