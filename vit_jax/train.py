"""Training: pure jitted step functions and the loop that drives them.

    config -> mesh, model, optimizer, input -> jitted sharded train_step
           -> metrics.jsonl / tb / checkpoints / evaluators in the workdir

The train state is a plain dict pytree {'params', 'opt_state', 'step'},
sharded over the ('data', 'fsdp') mesh of `vit_jax.sharding`. Steps are
deterministic functions of (state, batch, seed): the dropout / masking key
of step t is fold_in(seed key, t), so a resumed run computes exactly what an
uninterrupted one does.

This module never imports TensorFlow (the data pipeline, imported inside
`train_and_evaluate`, does).
"""

import json
import os
import signal
import time
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from vit_jax import checkpoint
from vit_jax import metric_writer
from vit_jax import models
from vit_jax import optim
from vit_jax import sharding
from vit_jax import weights
from vit_jax.models import common

OBJECTIVES = ('supervised', 'mae')
LOSSES = ('softmax_xent', 'sigmoid_xent')
DTYPES = ('float32', 'bfloat16', 'float16')

State = Dict[str, Any]


# ----------------------------------------------------------------------------
# Model and losses.


def build_model(model_config: ml_collections.ConfigDict):
  """`get_model` from a config's model block ({'name': 'vit', ...})."""
  kwargs = dict(model_config.to_dict() if hasattr(model_config, 'to_dict')
                else model_config)
  name = kwargs.pop('name')
  if 'dtype' in kwargs:
    common.check_choice('model.dtype', kwargs['dtype'], DTYPES)
    kwargs['dtype'] = jnp.dtype(kwargs['dtype'])
  for key, value in kwargs.items():  # ConfigDict stores tuples as lists.
    if isinstance(value, list):
      kwargs[key] = tuple(value)
  return models.get_model(name, **kwargs)


def softmax_xent(logits: jax.Array, labels: jax.Array,
                 label_smoothing: float = 0.0) -> jax.Array:
  """Mean softmax cross-entropy against one-hot labels [B, K]."""
  num_classes = labels.shape[-1]
  if label_smoothing:
    labels = labels * (1 - label_smoothing) + label_smoothing / num_classes
  log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
  return -jnp.mean(jnp.sum(labels * log_probs, axis=-1))


def sigmoid_xent(logits: jax.Array, labels: jax.Array,
                 label_smoothing: float = 0.0) -> jax.Array:
  """Mean over examples of the summed per-class sigmoid cross-entropy.

  The loss of the Scaling ViT / big_vision ImageNet-21k recipes, where
  labels can be multi-hot.
  """
  if label_smoothing:
    labels = labels * (1 - label_smoothing) + label_smoothing / 2
  logits = logits.astype(jnp.float32)
  per_class = optax.sigmoid_binary_cross_entropy(logits, labels)
  return jnp.mean(jnp.sum(per_class, axis=-1))


def make_loss_fn(model, config) -> Callable[..., jax.Array]:
  """loss_fn(params, batch, rng) -> scalar, for the configured objective."""
  objective = config.get('objective', 'supervised')
  common.check_choice('objective', objective, OBJECTIVES)
  if objective == 'mae':
    def mae_loss(params, batch, rng):
      mask_rng, dropout_rng = jax.random.split(rng)
      loss, _ = model.apply({'params': params}, batch['image'], train=True,
                            rngs={'mask': mask_rng, 'dropout': dropout_rng})
      return loss
    return mae_loss

  loss_name = config.get('loss', 'softmax_xent')
  common.check_choice('loss', loss_name, LOSSES)
  loss_of_logits = {'softmax_xent': softmax_xent,
                    'sigmoid_xent': sigmoid_xent}[loss_name]
  label_smoothing = config.get('label_smoothing', 0.0)

  def supervised_loss(params, batch, rng):
    logits, _ = model.apply({'params': params}, batch['image'], train=True,
                            rngs={'dropout': rng})
    return loss_of_logits(logits, batch['labels'], label_smoothing)
  return supervised_loss


# ----------------------------------------------------------------------------
# Pure step functions.


def make_init_fn(model, tx, image_shape: Tuple[int, ...]):
  """init_fn(rng) -> the initial train state (jit it with out_shardings)."""
  def init_fn(rng):
    images = jnp.zeros((1, *image_shape), jnp.float32)
    rngs = {'params': rng, 'mask': rng, 'dropout': rng}
    params = model.init(rngs, images)['params']
    return {'params': params, 'opt_state': tx.init(params),
            'step': jnp.zeros((), jnp.int32)}
  return init_fn


def _microbatches(batch: Mapping[str, jax.Array], count: int):
  """[B, ...] -> [count, B / count, ...], microbatch i = rows i, i+count, ...

  Strided, so every device keeps its own rows (the batch axis is sharded in
  contiguous blocks) and no data moves between devices.
  """
  def split(rows):
    return rows.reshape(rows.shape[0] // count, count,
                        *rows.shape[1:]).swapaxes(0, 1)
  return jax.tree.map(split, dict(batch))


def make_train_step(loss_fn, tx, schedule, grad_accum_steps: int = 1):
  """train_step(state, batch, rng) -> (state, metrics): pure, jit it.

  With grad_accum_steps > 1 the batch is split into that many microbatches
  whose gradients are averaged (lax.scan), which equals the full-batch
  gradient up to float rounding; activations of one microbatch at a time.
  """
  grad_fn = jax.value_and_grad(loss_fn)

  def train_step(state: State, batch, rng):
    step_rng = jax.random.fold_in(rng, state['step'])
    params = state['params']
    if grad_accum_steps == 1:
      loss, grads = grad_fn(params, batch, step_rng)
    else:
      def accumulate(carry, inputs):
        index, microbatch = inputs
        micro_loss, micro_grads = grad_fn(
            params, microbatch, jax.random.fold_in(step_rng, index))
        loss_sum, grad_sum = carry
        return (loss_sum + micro_loss,
                jax.tree.map(jnp.add, grad_sum, micro_grads)), None
      zeros = jax.tree.map(jnp.zeros_like, params)
      (loss, grads), _ = jax.lax.scan(
          accumulate, (jnp.zeros((), jnp.float32), zeros),
          (jnp.arange(grad_accum_steps),
           _microbatches(batch, grad_accum_steps)))
      loss = loss / grad_accum_steps
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    new_state = {'params': optax.apply_updates(params, updates),
                 'opt_state': opt_state, 'step': state['step'] + 1}
    # Loss, gradients and updates finite => the new params are (from finite
    # ones): what `_check_finite` needs to keep non-finite state unsaved.
    metrics = {'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads),
               'train/update_norm': optax.tree.norm(updates),
               'train/lr': schedule(state['step'])}
    return new_state, metrics
  return train_step


# ----------------------------------------------------------------------------
# The loop.


class Preemption:
  """Turns SIGTERM into a request to save and stop after the current step."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # not the main thread: leave signals alone.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning('SIGTERM received: saving a checkpoint and stopping.')
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  def any_process(self) -> bool:
    """Whether any process was asked to stop (all processes agree)."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.requested))
    return bool(np.any(flags))


def _check_finite(step: int, metrics: Mapping[str, Any]) -> float:
  """Raises if step `step` produced a non-finite loss or update."""
  values = {name: float(np.asarray(metrics[name])) for name in (
      'train/loss', 'train/grad_norm', 'train/update_norm')}
  bad = {name: value for name, value in values.items()
         if not np.isfinite(value)}
  if bad:
    raise FloatingPointError(
        f'Non-finite {bad} at step {step}; stopping. The last checkpoint '
        f'before it is kept.')
  return values['train/loss']


def _every(step: int, period: Optional[int], total_steps: int) -> bool:
  return step == total_steps or bool(period and step % period == 0)


def validate_config(config, device_count: int) -> None:
  """Errors for settings that can only fail later, with the valid values."""
  batch = config.batch_size
  if batch % device_count:
    raise ValueError(
        f'Global batch size {batch} is not divisible by the {device_count} '
        f'devices; use a multiple of {device_count}.')
  accum = config.get('grad_accum_steps', 1)
  if accum < 1 or batch % (accum * device_count):
    raise ValueError(
        f'grad_accum_steps={accum} must split the batch of {batch} into '
        f'equal microbatches divisible by the {device_count} devices.')
  common.check_choice('objective', config.get('objective', 'supervised'),
                      OBJECTIVES)


def _write_config(config, workdir: str) -> None:
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _abstract(tree, shardings):
  return jax.tree.map(
      lambda leaf, spec: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                              sharding=spec), tree, shardings)


def _initial_state(config, run: 'Run', checkpointer) -> Tuple[State, int]:
  """Resume from the workdir, else start (possibly from `init_from`)."""
  restored = checkpointer.restore_latest(run.abstract_state)
  if restored is not None:
    step, state, data_state = restored
    logging.info('Resuming from step %d (data position %s).', step,
                 data_state)
    return state, step
  rng = jax.random.PRNGKey(config.seed)
  state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(rng)
  init_from = config.get('init_from')
  if init_from and init_from.get('path'):
    model_kwargs = dict(config.model.to_dict())
    name = model_kwargs.pop('name')
    model_kwargs.pop('dtype', None)
    params = weights.load_init_params(
        init_from.get('kind', 'own'), init_from.path, name,
        image_size=run.image_shape[:2], **model_kwargs)
    params = jax.tree.map(lambda x, ref: np.asarray(x, ref.dtype), params,
                          state['params'])
    state['params'] = jax.device_put(params, run.state_shardings['params'])
    state['opt_state'] = jax.jit(
        run.tx.init, out_shardings=run.state_shardings['opt_state'])(
            state['params'])
    logging.info('Initialised params from %s (%s).', init_from.path,
                 init_from.get('kind', 'own'))
  return state, 0


class Run(NamedTuple):
  """Everything a run builds from its config before the first step."""
  mesh: Any
  model: Any
  tx: optax.GradientTransformation
  schedule: Callable[[Any], jax.Array]
  init_fn: Callable[[jax.Array], State]
  state_shardings: Any
  abstract_state: Any  # ShapeDtypeStructs with shardings, for restoring
  image_shape: Tuple[int, int, int]
  train_step: Callable[..., Tuple[State, Dict[str, jax.Array]]]  # jitted


def build_run(config: ml_collections.ConfigDict, data_module) -> Run:
  """Mesh, model, optimizer, sharded state layout and the jitted step."""
  mesh_config = config.get('mesh', ml_collections.ConfigDict())
  mesh = sharding.make_mesh(mesh_config.get('data', -1),
                            mesh_config.get('fsdp', 1))
  validate_config(config, jax.device_count())
  info = data_module.dataset_info(config.data)
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
  train_step = jax.jit(
      make_train_step(make_loss_fn(model, config), tx, schedule,
                      config.get('grad_accum_steps', 1)),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh),
                    sharding.replicated(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))
  return Run(mesh, model, tx, schedule, init_fn, state_shardings,
             _abstract(state_shapes, state_shardings), image_shape,
             train_step)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str
                       ) -> Dict[str, float]:
  """Trains (resuming if the workdir has checkpoints); returns last metrics."""
  from vit_jax import data  # pylint: disable=g-import-not-at-top  (TF inside)
  from vit_jax import evaluate  # pylint: disable=g-import-not-at-top

  run = build_run(config, data)
  is_main = jax.process_index() == 0
  os.makedirs(workdir, exist_ok=True)
  if is_main:
    _write_config(config, workdir)
  ckpt_config = config.get('checkpoint', ml_collections.ConfigDict())
  checkpointer = checkpoint.TrainCheckpointer(
      os.path.join(workdir, 'checkpoints'),
      keep_last=ckpt_config.get('keep_last', 3),
      keep_every=ckpt_config.get('keep_every'),
      async_save=ckpt_config.get('async_save', True))
  state, start_step = _initial_state(config, run, checkpointer)
  train_batches = data.train_iterator(
      config.data, config.batch_size, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  evaluators = evaluate.build_evaluators(config, run.model, run.mesh, workdir)

  writer = metric_writer.MetricWriter(workdir, enabled=is_main)
  total_steps = config.total_steps
  progress = metric_writer.Progress(total_steps, start_step) if is_main else None
  seed_key = jax.random.PRNGKey(config.seed + 1)
  step_fn, flops_per_step = None, None
  last_metrics: Dict[str, float] = {}
  log_every = config.get('log_every_steps', 50)
  ckpt_every = ckpt_config.get('every_steps', 1000)
  window_start, window_steps = time.monotonic(), 0
  pending = None  # (step, metrics) whose loss is not checked yet

  try:
    with Preemption() as preemption:
      for step in range(start_step + 1, total_steps + 1):
        batch = sharding.global_batch(next(train_batches), run.mesh)
        if step_fn is None:  # lower once: the program and its FLOP count
          lowered = run.train_step.lower(state, batch, seed_key)
          flops_per_step = _flops(lowered)
          step_fn = lowered.compile()
        state, metrics = step_fn(state, batch, seed_key)
        window_steps += 1
        # The previous step's loss is checked while this one runs, so the
        # device always has a step queued; a NaN is reported with its step.
        if pending is not None:
          _check_finite(*pending)
        pending = (step, metrics)
        stop = preemption.any_process()
        log_now = _every(step, log_every, total_steps) or stop
        save_now = _every(step, ckpt_every, total_steps) or stop
        due = [e for e in evaluators
               if _every(step, e.every_steps, total_steps)]
        if log_now or save_now or due:
          loss = _check_finite(step, metrics)  # nothing non-finite is saved
          pending = None
        if log_now:
          elapsed = time.monotonic() - window_start
          img_per_sec = window_steps * config.batch_size / max(elapsed, 1e-9)
          last_metrics = {
              **{k: float(np.asarray(v)) for k, v in metrics.items()},
              'train/img_per_sec': img_per_sec,
              'compute/flops': float(flops_per_step or 0.0) * step,
              'compute/images_seen': float(step * config.batch_size)}
          writer.write(step, last_metrics)
          if progress:
            progress.update(step, loss, img_per_sec)
          window_start, window_steps = time.monotonic(), 0
        eval_start = time.monotonic()
        for scheduled in due:
          results = scheduled.evaluator.run(state['params'], step)
          writer.write(step, results)
          last_metrics.update(results)
          if progress:
            progress.message(f'step {step}: ' + evaluate.summary(results))
        # Evaluation time does not count against train/img_per_sec.
        window_start += time.monotonic() - eval_start
        if save_now:
          checkpointer.save(step, state, {'step': step, 'seed': config.seed})
        if stop:
          logging.warning('Stopped at step %d on request (SIGTERM).', step)
          break
      if pending is not None:
        _check_finite(*pending)
  finally:  # a failing run still finishes its last good save
    checkpointer.close()
    writer.close()
  return last_metrics


def _flops(lowered) -> Optional[float]:
  """FLOPs of one step, from XLA's cost analysis of the lowered, not yet
  partitioned program (so for the whole global batch)."""
  try:
    analysis = lowered.cost_analysis()
  except Exception as error:  # pylint: disable=broad-except
    logging.warning('No FLOP count (cost analysis failed: %s).', error)
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float(analysis.get('flops', 0.0)) if analysis else None


def read_metrics(workdir: str):
  """The rows of a workdir's metrics.jsonl (for tests and analysis)."""
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f if line.strip()]

