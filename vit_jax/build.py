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
from vit_jax.models import segformer
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
  # (H, W, C); (D, H, W, C) for volumes, (T, H, W, C) for clips
  image_shape: Tuple[int, ...]
  num_classes: int  # of the training dataset
  task: str  # the dataset's: 'classification', 'segmentation', ...


def validate(config, device_count: int) -> None:
  """Errors for settings that can only fail later, with the valid values."""
  batch = config.batch_size
  if batch % device_count:
    raise ValueError(
        f'Global batch size {batch} is not divisible by the {device_count} '
        f'devices; use a multiple of {device_count}.')
  eval_batch = config.get('eval_batch_size')
  if eval_batch is not None and eval_batch % device_count:
    raise ValueError(
        f'eval_batch_size {eval_batch} is not divisible by the '
        f'{device_count} devices; use a multiple of {device_count}.')
  accum = config.grad_accum_steps
  if accum < 1 or batch % (accum * device_count):
    raise ValueError(
        f'grad_accum_steps={accum} must split the batch of {batch} into '
        f'equal microbatches divisible by the {device_count} devices.')


# The dataset tasks (`data.dataset_info(...)['task']`) each objective trains.
OBJECTIVE_TASKS = {'supervised': ('classification', 'video_classification'),
                   'mae': None,
                   'segmentation': ('segmentation', 'volume_segmentation')}


def _check_task(config, task: str) -> None:
  """The objective against what the dataset's labels are."""
  tasks = OBJECTIVE_TASKS[config.objective]
  if tasks is not None and task not in tasks:
    valid = ('a dataset with label maps (segmentation_folder, '
             'digit_mosaics, nifti_folder, ...)' if config.objective ==
             'segmentation' else 'a classification dataset')
    raise ValueError(
        f'objective {config.objective!r} needs {valid}; dataset '
        f'{config.data.name!r} is a {task!r} dataset.')


def _check_classes(config, num_classes: int) -> None:
  """model.num_classes against the dataset's labels (classifiers and
  segmenters)."""
  model_classes = config.model.get('num_classes')
  if config.objective == 'mae' or model_classes in (None, 0):
    return
  if model_classes != num_classes:
    onehot = (f' (and onehot({num_classes}) in the pp specs)'
              if config.objective == 'supervised' else '')
    raise ValueError(
        f'model.num_classes={model_classes} does not match the '
        f'{num_classes} classes of dataset {config.data.name!r}; set '
        f'model.num_classes={num_classes}{onehot}.')


def check_dataset(config, info) -> None:
  """The objective and model.num_classes against the dataset
  (`data.dataset_info(config.data)`): ValueError naming what to set."""
  _check_task(config, info.get('task', 'classification'))
  _check_classes(config, info['num_classes'])


def dense_logits(model_name: str, logits: jax.Array,
                 spatial_shape: Tuple[int, ...]) -> jax.Array:
  """A segmenter's logits at the resolution `spatial_shape` of its images
  (or label maps): SegFormer's 1/4-resolution maps upsampled bilinearly
  (`segformer.upsample_logits`, as its paper trains and evaluates them);
  UNETR's are already at full resolution."""
  spatial_shape = tuple(spatial_shape)
  if tuple(logits.shape[1:-1]) == spatial_shape:
    return logits
  if model_name == 'segformer' and len(spatial_shape) == 2:
    return segformer.upsample_logits(logits, spatial_shape)
  raise ValueError(f'{model_name} logits {tuple(logits.shape)} do not match '
                   f'label maps of spatial shape {spatial_shape}.')


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
  check_dataset(config, info)
  task = info.get('task', 'classification')
  if task in ('classification', 'video_classification'):
    # after config.data.pp_eval: (H, W, C), or (T, H, W, C) for clips
    image_shape = tuple(info['image_shape'])
    spec = f'pp_eval {config.data.pp_eval!r}'
  else:  # evaluated whole or by windows; the model is built at crop size
    image_shape = tuple(info['train_image_shape'])
    spec = f'pp_train {config.data.pp_train!r}'
  if None in image_shape:
    raise ValueError(f'Images of {config.data.name!r} after {spec} have no '
                     f'fixed shape {image_shape}: end it with a resize or '
                     f'crop.')
  model = build_model(config.model)
  tx, schedule = optim.make_optimizer(config, config.total_steps)
  init_fn = make_init_fn(model, tx, image_shape)
  state_shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  state_shardings = sharding.param_shardings(state_shapes, mesh)
  return Run(config, mesh, model, tx, schedule, init_fn, state_shardings,
             _abstract(state_shapes, state_shardings), image_shape,
             info['num_classes'], task)


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
  segment: for segmentation runs, (variables, images) -> logits at the
    images' own resolution, [B, H, W, K] or [B, D, H, W, K] (`dense_logits`);
    None otherwise.
  """
  predict: Optional[Callable]
  example_loss: Optional[Callable]
  representation: Callable[[str], Callable]
  reconstruction: Optional[Callable]
  reconstruction_images: Optional[Callable]
  segment: Optional[Callable] = None


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

  if config.objective == 'segmentation':
    def segment(variables, images):
      logits, _ = model.apply(variables, images, train=False)
      return dense_logits(config.model.name, logits, images.shape[1:-1])
    return EvalFunctions(None, None, representation, None, None, segment)

  def predict(variables, images):
    logits, _ = model.apply(variables, images, train=False)
    return logits
  return EvalFunctions(predict, losses.LOSSES[config.loss], representation,
                       None, None)
