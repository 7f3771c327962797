"""A run from its config: mesh, model, optimizer, sharded state layout, and
the functions evaluators receive. Training (`vit_jax.train`) and workdir
evaluation (`python -m vit_jax.evaluate`) both start here, so a checkpoint
is always read into the layout it was written from.

    config = vit_jax.config.resolve(recipe)
    run = build_run(config, data)          # checks config and data first
    fns = eval_functions(run)              # predict / representation / ...

This module never imports TensorFlow (`data` is passed in).
"""

from typing import Any, Callable, Dict, NamedTuple, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax import checkpoint
from vit_jax import losses
from vit_jax import models
from vit_jax import optim
from vit_jax import sharding
from vit_jax.models import mae
from vit_jax.models import representation as representation_lib

State = Dict[str, Any]


def build_model(model_config):
  """`get_model` from a config's model block ({'name': 'vit', ...})."""
  return models.get_model(**models.kwargs_from_config(model_config))


def make_init_fn(model, tx, image_shape: Tuple[int, ...]):
  """init_fn(rng) -> the initial train state (jit it with out_shardings):
  {'params', 'opt_state', 'step'}, plus 'batch_stats' for models with
  BatchNorm (`checkpoint.MODEL_STATE_KEYS`)."""
  def init_fn(rng):
    images = jnp.zeros((1, *image_shape), jnp.float32)
    rngs = {'params': rng, 'mask': rng, 'dropout': rng}
    variables = model.init(rngs, images)
    params = variables['params']
    state = {'params': params, 'opt_state': tx.init(params),
             'step': jnp.zeros((), jnp.int32)}
    for key in checkpoint.MODEL_STATE_KEYS:
      if key in variables:
        state[key] = variables[key]
    return state
  return init_fn


class Run(NamedTuple):
  """Everything a run builds from its config before the first step."""
  config: ml_collections.ConfigDict  # resolved (vit_jax.config.resolve)
  mesh: Any
  model: Any
  tx: optax.GradientTransformation
  schedule: Callable[[Any], jax.Array]
  init_fn: Callable[[jax.Array], State]
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings, for restoring
  image_shape: Tuple[int, int, int]
  num_classes: int  # of the training dataset


def validate(config, device_count: int) -> None:
  """Errors for settings that can only fail later, with the valid values."""
  batch = config.batch_size
  if batch % device_count:
    raise ValueError(
        f'Global batch size {batch} is not divisible by the {device_count} '
        f'devices; use a multiple of {device_count}.')
  accum = config.grad_accum_steps
  if accum < 1 or batch % (accum * device_count):
    raise ValueError(
        f'grad_accum_steps={accum} must split the batch of {batch} into '
        f'equal microbatches divisible by the {device_count} devices.')


def _check_classes(config, num_classes: int) -> None:
  """model.num_classes against the dataset's labels (classifiers only)."""
  model_classes = config.model.get('num_classes')
  if config.objective != 'supervised' or model_classes in (None, 0):
    return
  if model_classes != num_classes:
    raise ValueError(
        f'model.num_classes={model_classes} does not match the '
        f'{num_classes} classes of dataset {config.data.name!r}; set '
        f'model.num_classes={num_classes} (and onehot({num_classes}) in '
        f'the pp specs).')


def _abstract(tree, shardings):
  return jax.tree.map(
      lambda leaf, spec: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                              sharding=spec), tree, shardings)


def build_run(config: ml_collections.ConfigDict, data_module) -> Run:
  """Mesh, model, optimizer and the sharded state layout of a resolved
  config; checks the config against the devices and the dataset."""
  mesh = sharding.make_mesh(config.mesh.data, config.mesh.fsdp)
  validate(config, jax.device_count())
  info = data_module.dataset_info(config.data)
  _check_classes(config, info['num_classes'])
  image_shape = tuple(info['image_shape'])  # after config.data.pp_eval
  if None in image_shape:
    raise ValueError(f'Images of {config.data.name!r} after pp_eval '
                     f'{config.data.pp_eval!r} have no fixed shape '
                     f'{image_shape}: end pp_eval with a resize or crop.')
  model = build_model(config.model)
  tx, schedule = optim.make_optimizer(config, config.total_steps)
  init_fn = make_init_fn(model, tx, image_shape)
  state_shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  state_shardings = sharding.param_shardings(state_shapes, mesh)
  return Run(config, mesh, model, tx, schedule, init_fn, state_shardings,
             _abstract(state_shapes, state_shardings), image_shape,
             info['num_classes'])


# ----------------------------------------------------------------------------
# What evaluators receive: functions of (params, images), built once.


class EvalFunctions(NamedTuple):
  """The trained model seen by evaluators; all jittable. Each takes the
  model's variables (`checkpoint.variables_of(state)`: {'params'}, plus
  'batch_stats', the running averages, for models with BatchNorm), which
  evaluators receive as `run(variables, step)`.

  predict: (variables, images) -> logits [B, K]; None for MAE runs.
  example_loss: (logits, labels) -> [B], the training objective's loss
    without label smoothing (so `val/loss` is the loss being trained).
  representation: layer -> ((params, images) -> features [B, D]), see
    `vit_jax.models.representation.representation_fn`.
  reconstruction: for MAE runs, (variables, images) -> (per-example masked
    patch loss [B], predicted patches, mask); None otherwise.
  reconstruction_images: (images, pred, mask, fill_value) -> {'masked',
    'reconstruction', 'pasted'} numpy images, for plots; None unless MAE.
  """
  predict: Optional[Callable]
  example_loss: Optional[Callable]
  representation: Callable[[str], Callable]
  reconstruction: Optional[Callable]
  reconstruction_images: Optional[Callable]


def eval_functions(run: Run) -> EvalFunctions:
  config, model = run.config, run.model
  classifier, select_params = models.classifier_view(config.model.name, model)

  def representation(layer: str):
    return representation_lib.representation_fn(classifier, layer,
                                                select_params)

  if config.objective == 'mae':
    def reconstruction(variables, images):
      _, aux = model.apply(variables, images, train=False)
      target = mae.patchify(images, model.patch_size)
      per_example = jax.vmap(lambda p, t, m: mae.reconstruction_loss(
          p[None], t[None], m[None], model.norm_pix_loss))(
              aux['pred'], target, aux['mask'])  # [B]
      return per_example, aux['pred'], aux['mask']

    def reconstruction_images(images, pred, mask, fill_value):
      return mae.reconstruction_images(images, pred, mask, model.patch_size,
                                       model.norm_pix_loss,
                                       fill_value=fill_value)
    return EvalFunctions(None, None, representation, reconstruction,
                         reconstruction_images)

  def predict(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return logits
  return EvalFunctions(predict, losses.LOSSES[config.loss], representation,
                       None, None)
