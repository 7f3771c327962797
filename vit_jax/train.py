"""Training: pure jitted step functions and the loop that drives them.

    config -> mesh, model, optimizer, input -> jitted sharded train_step
           -> metrics.jsonl / tb / checkpoints / evaluators in the workdir

The train state is a plain dict pytree {'params', 'opt_state', 'step'}
(plus 'batch_stats', BatchNorm's running averages, for models that have
them), sharded over the ('data', 'fsdp') mesh of `vit_jax.sharding`. Steps are
deterministic functions of (state, batch, seed): the dropout / masking key
of step t is fold_in(seed key, t), so a resumed run computes exactly what an
uninterrupted one does.

This module never imports TensorFlow (the data pipeline, imported inside
`train_and_evaluate`, does).
"""

import contextlib
import os
import signal
import sys
import time
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple)

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import traverse_util

from vit_jax import branch as branch_lib
from vit_jax import build
from vit_jax import checkpoint
from vit_jax import compute
from vit_jax import config as config_lib
from vit_jax import layout
from vit_jax import losses
from vit_jax import metric_writer
from vit_jax import models
from vit_jax import paths
from vit_jax import sharding
from vit_jax import weights
from vit_jax import workdir as workdir_lib
from vit_jax.models import common

State = Dict[str, Any]


class Preempted(Exception):
  """The run stopped on SIGTERM after saving a checkpoint at `step`."""

  def __init__(self, step: int):
    super().__init__(f'Stopped at step {step} on request (SIGTERM); the '
                     f'checkpoint of step {step} is saved: rerun to resume.')
    self.step = step


# ----------------------------------------------------------------------------
# Losses.


def _apply_train(model, params, model_state, images, rngs):
  """A train-mode forward: (outputs, updated model state). `model_state`
  holds the mutable collections ({'batch_stats': ...} or {}); with
  BatchNorm the batch's statistics update the running averages."""
  variables = {'params': params, **model_state}
  if not model_state:
    return model.apply(variables, images, train=True, rngs=rngs), model_state
  outputs, updated = model.apply(variables, images, train=True, rngs=rngs,
                                 mutable=list(model_state))
  return outputs, dict(updated)


def make_loss_fn(model, config) -> Callable[..., jax.Array]:
  """loss_fn(params, model_state, batch, rng) -> (scalar, new model state),
  for the configured objective; model_state: the state's mutable model
  collections (`checkpoint.MODEL_STATE_KEYS`), {} for most models."""
  objective = config.get('objective', 'supervised')
  common.check_choice('objective', objective, config_lib.OBJECTIVES)
  if objective == 'mae':
    def mae_loss(params, model_state, batch, rng):
      mask_rng, dropout_rng = jax.random.split(rng)
      (loss, _), model_state = _apply_train(
          model, params, model_state, batch['image'],
          {'mask': mask_rng, 'dropout': dropout_rng})
      return loss, model_state
    return mae_loss

  loss_name = config.get('loss', 'softmax_xent')
  common.check_choice('loss', loss_name, config_lib.LOSSES)
  if objective == 'segmentation':
    dense_loss = losses.dense_loss(loss_name)

    def segmentation_loss(params, model_state, batch, rng):
      (logits, _), model_state = _apply_train(
          model, params, model_state, batch['image'], {'dropout': rng})
      label_maps = batch['label_map']  # [B, H, W] or [B, D, H, W]
      logits = build.dense_logits(config.model.name, logits,
                                  label_maps.shape[1:])
      return dense_loss(logits, label_maps), model_state
    return segmentation_loss

  example_loss = losses.LOSSES[loss_name]
  label_smoothing = config.get('label_smoothing', 0.0)

  def supervised_loss(params, model_state, batch, rng):
    (logits, _), model_state = _apply_train(
        model, params, model_state, batch['image'], {'dropout': rng})
    return (jnp.mean(example_loss(logits, batch['labels'], label_smoothing)),
            model_state)
  return supervised_loss


# ----------------------------------------------------------------------------
# Pure step functions.


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
  BatchNorm's running averages (state['batch_stats'], where the model has
  them) are updated with each (micro)batch's statistics over all devices,
  microbatches in turn, as a framework accumulating gradients would.
  """
  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def train_step(state: State, batch, rng):
    step_rng = jax.random.fold_in(rng, state['step'])
    params = state['params']
    model_state = {key: state[key] for key in checkpoint.MODEL_STATE_KEYS
                   if key in state}
    if grad_accum_steps == 1:
      (loss, model_state), grads = grad_fn(params, model_state, batch,
                                           step_rng)
    else:
      def accumulate(carry, inputs):
        index, microbatch = inputs
        loss_sum, grad_sum, micro_state = carry
        (micro_loss, micro_state), micro_grads = grad_fn(
            params, micro_state, microbatch,
            jax.random.fold_in(step_rng, index))
        return (loss_sum + micro_loss,
                jax.tree.map(jnp.add, grad_sum, micro_grads),
                micro_state), None
      zeros = jax.tree.map(jnp.zeros_like, params)
      (loss, grads, model_state), _ = jax.lax.scan(
          accumulate, (jnp.zeros((), jnp.float32), zeros, model_state),
          (jnp.arange(grad_accum_steps),
           _microbatches(batch, grad_accum_steps)))
      loss = loss / grad_accum_steps
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grads)
    updates, opt_state = tx.update(grads, state['opt_state'], params)
    new_state = {'params': optax.apply_updates(params, updates),
                 'opt_state': opt_state, 'step': state['step'] + 1,
                 **model_state}
    # Loss, gradients and updates finite => the new params are (from finite
    # ones): what `_check_finite` needs to keep non-finite state unsaved.
    metrics = {'train/loss': loss, 'train/grad_norm': optax.tree.norm(grads),
               'train/update_norm': optax.tree.norm(updates),
               'train/lr': schedule(state['step'])}
    return new_state, metrics
  return train_step


# ----------------------------------------------------------------------------
# Fault injection, for tests only (tests/test_faults.py, docs/FAULTS.md).

# VIT_JAX_FAULT='<point>[@<step>]:<signal>' makes the trainer send itself
# SIG<signal> (TERM, KILL, STOP, INT) once, when it reaches <point> (at
# <step>, where given): 'start' (the workdir locked, nothing restored),
# 'restore' (the checkpoint restored, nothing written), 'compile' (before
# the first step's compilation), 'step' (a step dispatched, not finished),
# 'save' (a checkpoint save started), 'eval/<name>' (before evaluator
# <name> runs, in the loop or when a resume redoes it), 'done' (everything
# saved and closed, `done` not yet written). Unset in real runs.
FAULT_ENV = 'VIT_JAX_FAULT'
FAULT_POINTS = ('start', 'restore', 'compile', 'step', 'save', 'eval', 'done')
_armed_fault: Optional[Tuple[str, Optional[int], int]] = None


def _arm_fault() -> None:
  """Reads FAULT_ENV (once per run)."""
  global _armed_fault
  spec = os.environ.get(FAULT_ENV)
  _armed_fault = None
  if not spec:
    return
  where, _, name = spec.rpartition(':')
  point, _, step = where.partition('@')
  signum = getattr(signal, f'SIG{name}', None)
  if (point.split('/')[0] not in FAULT_POINTS or signum is None
      or not (step.isdigit() or not step)):
    raise ValueError(f'{FAULT_ENV}={spec!r}: expected '
                     f'<point>[@<step>]:<TERM|KILL|STOP|INT>, <point> one of '
                     f'{FAULT_POINTS} (eval as eval/<name>).')
  _armed_fault = (point, int(step) if step else None, int(signum))


def _fault_point(point: str, step: Optional[int] = None) -> None:
  """Sends the armed signal if the run is at the armed point."""
  global _armed_fault
  if _armed_fault is None:
    return
  armed_point, armed_step, signum = _armed_fault
  if armed_point != point or armed_step not in (None, step):
    return
  _armed_fault = None
  os.kill(os.getpid(), signum)


# ----------------------------------------------------------------------------
# The loop.


class EvaluationInterrupted(Exception):
  """SIGTERM arrived during an evaluation, which is abandoned."""


class Preemption:
  """Turns SIGTERM into a request to save and stop after the current step.

  Inside `evaluation()` the request also cuts the evaluation short (raising
  EvaluationInterrupted), so the save happens within seconds even when a
  long evaluation was running. Only with one process: several processes
  must leave an evaluation's collectives together, which they do at the
  next step boundary.
  """

  def __init__(self):
    self.requested = False
    self._interruptible = False
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
    if self._interruptible:
      self._interruptible = False
      raise EvaluationInterrupted()

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)

  @contextlib.contextmanager
  def evaluation(self):
    self._interruptible = jax.process_count() == 1 and not self.requested
    try:
      yield
    finally:
      self._interruptible = False

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


def _check_pending(pending: Sequence[Tuple[int, Mapping[str, Any]]]
                   ) -> Tuple[float, Dict[str, Any]]:
  """Checks the metrics of the steps in `pending` ((step, metrics on the
  device), in step order), fetched with one `jax.device_get`; raises at the
  first non-finite one (`_check_finite`). Returns (the loss, the metrics
  on the host) of the last."""
  fetched = jax.device_get([metrics for _, metrics in pending])
  loss = float('nan')
  for (step, _), values in zip(pending, fetched):
    loss = _check_finite(step, values)
  return loss, fetched[-1]


def _every(step: int, period: Optional[int], total_steps: int) -> bool:
  return step == total_steps or bool(period and step % period == 0)


def _has_checkpoints(directory: str) -> bool:
  """Whether `directory` holds step directories (read-only; on gs:// an
  unfinished one counts too: then the fresh state is made after locking)."""
  return any(name.isdigit() for name in paths.listdir(directory))


def _start_state(config, run: build.Run
                 ) -> Tuple[int, State, Dict[str, Any]]:
  """(step, state, data state) a run without checkpoints starts from: its
  trunk's at the branch step (`vit_jax.branch`), else a fresh state."""
  if config.branch.trunk:
    state, data_state = branch_lib.restore(config, run.abstract_state)
    return int(config.branch.step), state, data_state
  return 0, _fresh_state(config, run), {}


def _fresh_state(config, run: build.Run) -> State:
  """The initial state: random init, then `init_from`'s params if set."""
  rng = jax.random.PRNGKey(config.seed)
  state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(rng)
  init_from = config.init_from
  if init_from.path:
    model_kwargs = models.kwargs_from_config(config.model,
                                             compute_dtype=False)
    # The resolution to fit position embeddings to: the model's own where
    # it is built for one (TimeSformer, UNETR), else the images' (H, W),
    # the last spatial sides of (H, W, C), (T, H, W, C) or (D, H, W, C).
    image_size = (model_kwargs.pop('image_size', None) or
                  run.image_shape[-3:-1])
    variables = weights.load_init_params(
        init_from.kind, init_from.path, image_size=image_size,
        **model_kwargs)
    # Params, and BatchNorm's running averages where the source has them;
    # what an encoder-only checkpoint leaves out keeps its initialisation.
    for key, tree in variables.items():
      if key not in state:
        continue
      tree = _over(state[key], tree)
      state[key] = jax.device_put(tree, run.state_shardings[key])
    state['opt_state'] = jax.jit(
        run.tx.init, out_shardings=run.state_shardings['opt_state'])(
            state['params'])
    logging.info('Initialised params from %s (%s).', init_from.path,
                 init_from.kind)
  return state


def _over(initial, loaded):
  """`initial` (a state's tree) with the leaves `loaded` has, in its dtypes."""
  flat = traverse_util.flatten_dict(jax.device_get(initial))
  given = traverse_util.flatten_dict(loaded)
  unknown = sorted('/'.join(path) for path in given if path not in flat)
  if unknown:
    raise ValueError(f'init_from variables not in the model: {unknown}')
  for path, value in given.items():
    flat[path] = np.asarray(value, flat[path].dtype)
  return traverse_util.unflatten_dict(flat)


def _say(text: str) -> None:
  """A line on the console at default verbosity (main process only)."""
  if jax.process_index() == 0:
    print(text, file=sys.stderr, flush=True)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       allow_changes: Sequence[str] = ()
                       ) -> Dict[str, float]:
  """Trains (resuming if the workdir has checkpoints); returns last metrics.

  Everything that can be checked is checked before anything is written:
  the config (`vit_jax.config.resolve`), devices, dataset, evaluators, the
  workdir's identity (`workdir.check_config`; `allow_changes` lists keys
  that may differ from its config.json) and the `init_from` weights. Then
  the workdir is locked and config.json written. Raises `Preempted` after
  saving when SIGTERM stopped the run; SIGTERM is caught from the start,
  and one during start-up stops the run before its first step. `workdir`
  is local or gs:// (`vit_jax.paths`; checked first).
  """
  _arm_fault()
  with Preemption() as preemption:
    return _train_and_evaluate(config, workdir, allow_changes, preemption)


def _train_and_evaluate(config, workdir, allow_changes, preemption):
  from vit_jax import data  # pylint: disable=g-import-not-at-top  (TF inside)
  from vit_jax import evaluate  # pylint: disable=g-import-not-at-top

  paths.check_supported(workdir)
  config = config_lib.resolve(config)
  run = build.build_run(config, data)
  evaluators = evaluate.build_evaluators(config, build.eval_functions(run),
                                         run.mesh, workdir)
  for scheduled in evaluators:
    check = getattr(scheduled.evaluator, 'check', None)
    if check is not None:
      check()
  is_main = jax.process_index() == 0
  if is_main:
    workdir_lib.check_config(workdir, config, allow_changes)
    metric_writer.check_wandb(config.wandb, workdir)
  checkpoint_dir = layout.checkpoint_dir(workdir)
  fresh = None
  if not _has_checkpoints(checkpoint_dir):
    # init_from / the branch's trunk are read before any write.
    fresh = _start_state(config, run)

  lock = None
  if is_main:
    paths.makedirs(workdir)
    lock = workdir_lib.Lock(workdir, warn=_say)
    lock.acquire()
  checkpointer = writer = outcome = None
  try:
    _fault_point('start')
    checkpointer = checkpoint.TrainCheckpointer(
        checkpoint_dir, keep_last=config.checkpoint.keep_last,
        keep_every=config.checkpoint.keep_every,
        keep_steps=config.checkpoint.keep_steps,
        async_save=config.checkpoint.async_save)
    restored = checkpointer.restore_latest(run.abstract_state)
    if restored is not None:
      start_step, state, data_state = restored
      _say(f'Resuming from step {start_step} of {config.total_steps} in '
           f'{workdir}' + (f' (checkpoints of steps '
                           f'{checkpointer.moved_aside} moved aside)'
                           if checkpointer.moved_aside else '') + '.')
      logging.info('Data position: %s.', data_state)
    else:
      start_step, state, data_state = (
          fresh if fresh is not None else _start_state(config, run))
      if start_step:
        _say(f'Branching from step {start_step} of '
             f'{config.branch.trunk} (cooldown of '
             f'{config.schedule.cooldown_steps} steps to step '
             f'{config.total_steps}).')
    del fresh
    _fault_point('restore')
    if is_main:  # the run is known to start: it is this workdir's now
      workdir_lib.write_config(workdir, config)
      workdir_lib.mark_started(workdir)
      dropped = workdir_lib.truncate_metrics(workdir, start_step)
      if dropped:
        logging.info('Dropped %d metrics rows past step %d.', dropped,
                     start_step)
    writer = metric_writer.MetricWriter(
        workdir, enabled=is_main, restart_step=start_step + 1,
        hparams=metric_writer.hparams_of(config),
        wandb=config.wandb.to_dict())
    last_metrics, stopped_at, lost = _loop(
        config, run, evaluators, state, start_step, checkpointer, writer,
        preemption, workdir, data_state)
    checkpointer.close()  # waits for the last save; raises if it failed
    checkpointer = None
    outcome = 'done' if stopped_at is None else 'preempted'
  except BaseException as error:  # record it, keep the last good checkpoint
    if is_main and not isinstance(error, KeyboardInterrupt):
      outcome = 'failed'
      workdir_lib.mark_failed(workdir, error)
    raise
  finally:
    try:
      if checkpointer is not None:  # a failing run still finishes its save
        checkpointer.close()
    finally:
      if writer is not None and outcome:  # for TensorBoard's hparams, W&B
        writer.end(outcome)
      elif writer is not None:
        writer.close()
      if lock is not None:
        lock.release()
  if stopped_at is not None:
    raise Preempted(stopped_at)
  _fault_point('done')
  if is_main:  # every due evaluation has its rows (or is named lost)
    workdir_lib.mark_done(workdir, config.total_steps,
                          **({'evaluations_lost': lost} if lost else {}))
  return last_metrics


def _due_steps(every_steps: Optional[int], after: int, last: int,
               total_steps: int) -> List[int]:
  """The steps in (after, last] where an evaluator run every `every_steps`
  (None: at the last step only) is due (`_every`)."""
  steps = set()
  if every_steps:
    steps.update(range((after // every_steps + 1) * every_steps, last + 1,
                       every_steps))
  if after < total_steps <= last:
    steps.add(total_steps)
  return sorted(steps)


def _logged_names(workdir: str) -> Dict[int, set]:
  """{step: metric names} of metrics.jsonl (a torn line is skipped)."""
  logged: Dict[int, set] = {}
  for _, row in layout.read_metrics(workdir).rows:
    logged.setdefault(row['step'], set()).update(row)
  return logged


def _missing_evaluations(config, evaluators, start_step: int, workdir: str
                         ) -> List[Tuple[int, Any]]:
  """(step, scheduled evaluator) of each evaluation due after the run's
  first step and at or before `start_step` whose metric names
  (`evaluator.metric_names()`) metrics.jsonl lacks at that step. Process
  0 reads the file; every process gets its answer."""
  first = int(config.branch.step) if config.branch.trunk else 0
  candidates = [
      (step, index) for index, scheduled in enumerate(evaluators)
      if hasattr(scheduled.evaluator, 'metric_names')
      for step in _due_steps(scheduled.every_steps, first, start_step,
                             config.total_steps)]
  if not candidates:
    return []
  missing = np.zeros(len(candidates), np.int32)
  if jax.process_index() == 0:
    logged = _logged_names(workdir)
    for i, (step, index) in enumerate(candidates):
      names = set(evaluators[index].evaluator.metric_names())
      missing[i] = not names <= logged.get(step, set())
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    missing = np.asarray(multihost_utils.broadcast_one_to_all(missing))
  return sorted(((step, evaluators[index]) for (step, index), flag
                 in zip(candidates, missing) if flag),
                key=lambda item: (item[0], item[1].name))


def _redo_evaluations(config, run: build.Run, evaluators, state: State,
                      start_step: int, checkpointer, writer,
                      preemption: 'Preemption', workdir: str, progress
                      ) -> Tuple[Dict[str, List[int]], bool]:
  """Runs the evaluations a resumed run is missing, before it trains on.

  A stop during an evaluation (or just before one, at a step it then
  saved) leaves that step's rows missing; they are computed now from the
  restored state. An evaluation missing at an earlier step (a workdir
  written before this check, edited rows, an evaluation schedule changed
  with --allow_config_change) is computed from that step's checkpoint
  when one is kept; the rest are named in one warning and returned
  ({name: steps}, for `done`). Returns (those, whether SIGTERM stopped it).
  """
  from vit_jax import evaluate  # pylint: disable=g-import-not-at-top
  if start_step <= 0:
    return {}, False
  missing = _missing_evaluations(config, evaluators, start_step, workdir)
  if not missing:
    return {}, False
  kept = set(checkpointer.all_steps())
  lost: Dict[str, List[int]] = {}
  redo: Dict[int, List[Any]] = {}
  for step, scheduled in missing:
    if step == start_step or step in kept:
      redo.setdefault(step, []).append(scheduled)
    else:
      lost.setdefault(scheduled.name, []).append(step)
  if lost:
    named = '; '.join(f'{name} at step{"s" if len(steps) > 1 else ""} '
                      f'{steps if len(steps) > 1 else steps[0]}'
                      for name, steps in lost.items())
    _say(f'Warning: evaluations without rows in metrics.jsonl cannot be '
         f'redone (no checkpoint of their step is kept): {named}; '
         f'recorded in {paths.join(workdir, layout.DONE)} when the run '
         f'finishes.')
  if redo:
    _say('Redoing evaluations without rows: ' + '; '.join(
        f'{", ".join(s.name for s in due)} at step {step}'
        for step, due in sorted(redo.items())) + '.')
  for step, due in sorted(redo.items()):
    if preemption.any_process():
      return lost, True
    restored = (state if step == start_step else
                checkpointer.restore(step, run.abstract_state))
    variables = checkpoint.variables_of(restored)
    try:
      with preemption.evaluation():
        for scheduled in due:
          _fault_point(f'eval/{scheduled.name}', step)
          results = scheduled.evaluator.run(variables, step)
          writer.write(step, results)
          if progress:
            progress.message(f'step {step}: ' + evaluate.summary(results))
    except EvaluationInterrupted:
      logging.warning('Evaluation at step %d cut short by SIGTERM.', step)
      return lost, True
    del restored, variables
  return lost, False


def _loop(config, run: build.Run, evaluators, state: State, start_step: int,
          checkpointer, writer, preemption: Preemption, workdir: str,
          data_state: Mapping[str, Any]
          ) -> Tuple[Dict[str, float], Optional[int], Dict[str, List[int]]]:
  """Steps start_step+1 .. total_steps; (last metrics, step stopped at on
  SIGTERM or None, the evaluations that cannot be redone: {name: steps}).
  `data_state`: the restored checkpoint's (its device-seconds so far).

  A resumed run first redoes the evaluations due at or before its step
  that have no rows (`_redo_evaluations`). At each step the evaluations
  run before the checkpoint is saved, so a checkpoint never gets ahead of
  an evaluation's rows: the one evaluation a stop can leave undone is at
  the step it saved, redone from that checkpoint on resume."""
  if preemption.any_process():  # during start-up: nothing new to save
    logging.warning('Stopped at step %d on request (SIGTERM), before '
                    'training.', start_step)
    return {}, start_step, {}
  from vit_jax import data  # pylint: disable=g-import-not-at-top  (TF inside)
  from vit_jax import evaluate  # pylint: disable=g-import-not-at-top

  progress = (metric_writer.Progress(config.total_steps, start_step)
              if jax.process_index() == 0 else None)
  lost, interrupted = _redo_evaluations(
      config, run, evaluators, state, start_step, checkpointer, writer,
      preemption, workdir, progress)
  if interrupted:  # its checkpoint is the one restored: nothing to save
    logging.warning('Stopped at step %d on request (SIGTERM).', start_step)
    return {}, start_step, lost

  train_step = jax.jit(
      make_train_step(make_loss_fn(run.model, config), run.tx, run.schedule,
                      config.grad_accum_steps),
      in_shardings=(run.state_shardings, sharding.batch_sharding(run.mesh),
                    sharding.replicated(run.mesh)),
      out_shardings=(run.state_shardings, sharding.replicated(run.mesh)),
      donate_argnums=(0,))
  train_batches = data.train_iterator(
      config.data, config.batch_size, seed=config.seed, start_step=start_step,
      process_index=jax.process_index(), process_count=jax.process_count())
  total_steps = config.total_steps
  seed_key = jax.random.PRNGKey(config.seed + 1)
  step_fn, flops_per_step = None, None
  last_metrics: Dict[str, float] = {}
  window_start, window_steps = time.monotonic(), 0
  devices = jax.device_count()
  peak = config.peak_flops_per_device or compute.peak_flops(
      jax.devices()[0].device_kind)
  # Devices x seconds of training steps (evaluation excluded), over resumes.
  device_seconds = float(data_state.get('device_seconds', 0.0))
  is_main = jax.process_index() == 0
  keep_steps = set(config.checkpoint.keep_steps)  # branch points
  # (step, metrics) of the steps not checked yet: read back only at a
  # step that logs, saves or evaluates (and at the end), so a step that
  # does none of these reads nothing from the device
  # (tests/test_loop_overhead.py).
  pending: List[Tuple[int, Dict[str, Any]]] = []
  in_flight = None  # the previous step's loss, to wait for
  stopped_at = None

  for step in range(start_step + 1, total_steps + 1):
    batch = sharding.global_batch(next(train_batches), run.mesh)
    if step_fn is None:  # lower once: the program and its FLOP count
      _fault_point('compile')
      lowered = train_step.lower(state, batch, seed_key)
      flops_per_step = _flops(lowered)
      step_fn = lowered.compile()
      if is_main:
        _write_compute_summary(config, run, workdir, state, flops_per_step,
                               devices, peak)
      window_start = time.monotonic()  # not counting the compilation
    state, metrics = step_fn(state, batch, seed_key)
    _fault_point('step', step)
    window_steps += 1
    # Wait (reading nothing back) until the previous step is done while
    # this one runs: the device always has a step queued, and no more than
    # two steps (and their batches) are ever in flight.
    if in_flight is not None:
      jax.block_until_ready(in_flight)
    in_flight = metrics['train/loss']
    pending.append((step, metrics))
    checkpointer.check_save()  # a failed async save stops the run now
    stop = preemption.any_process()
    log_now = _every(step, config.log_every_steps, total_steps) or stop
    save_now = (_every(step, config.checkpoint.every_steps, total_steps)
                or step in keep_steps or stop)
    due = [] if stop else [e for e in evaluators
                           if _every(step, e.every_steps, total_steps)]
    if log_now or save_now or due:
      # Nothing non-finite is logged, evaluated or saved; a NaN is
      # reported with its own step, found at the first step after it that
      # logs, saves or evaluates (or at the end).
      loss, metrics = _check_pending(pending)
      pending = []
    if log_now or save_now:
      elapsed = time.monotonic() - window_start
      device_seconds += devices * elapsed
    if log_now:
      img_per_sec = window_steps * config.batch_size / max(elapsed, 1e-9)
      last_metrics = {
          **{k: float(np.asarray(v)) for k, v in metrics.items()},
          'train/img_per_sec': img_per_sec,
          'compute/flops': float(flops_per_step or 0.0) * step,
          'compute/images_seen': float(step * config.batch_size),
          'compute/device_seconds': device_seconds}
      utilisation = compute.mfu(float(flops_per_step or 0.0) * window_steps,
                                elapsed, devices, peak)
      if utilisation is not None:
        last_metrics['compute/mfu'] = utilisation
      writer.write(step, last_metrics)
      if progress:
        progress.update(step, loss, img_per_sec)
    if log_now or save_now:
      window_start, window_steps = time.monotonic(), 0
    eval_start = time.monotonic()
    try:
      with preemption.evaluation():
        for scheduled in due:
          _fault_point(f'eval/{scheduled.name}', step)
          results = scheduled.evaluator.run(checkpoint.variables_of(state),
                                            step)
          writer.write(step, results)
          last_metrics.update(results)
          if progress:
            progress.message(f'step {step}: ' + evaluate.summary(results))
    except EvaluationInterrupted:
      logging.warning('Evaluation at step %d cut short by SIGTERM.', step)
      stop = save_now = True
    # Evaluation time does not count against train/img_per_sec.
    window_start += time.monotonic() - eval_start
    if save_now:
      writer.flush()  # the rows up to a saved step are never lost
      checkpointer.save(step, state, {'step': step, 'seed': config.seed,
                                      'device_seconds': device_seconds})
      _fault_point('save', step)
    if stop:
      logging.warning('Stopped at step %d on request (SIGTERM).', step)
      stopped_at = step
      break
  if pending:
    _check_pending(pending)
  if is_main and step_fn is not None:
    final = stopped_at or total_steps
    compute.write_summary(workdir, {
        'step': final, 'images_seen': final * config.batch_size,
        'flops': float(flops_per_step or 0.0) * final,
        'device_seconds': device_seconds})
  return last_metrics, stopped_at, lost


def _write_compute_summary(config, run: build.Run, workdir: str,
                           state: State, flops_per_step: Optional[float],
                           devices: int, peak: Optional[float]) -> None:
  """WORKDIR/summary.json's static facts (`vit_jax.compute`)."""
  params, body = compute.param_counts(state['params'])
  abstract = checkpoint.variables_of(run.abstract_state)
  compute.write_summary(workdir, {
      'params': params, 'params_body': body,
      'flops_per_image': compute.forward_flops_per_image(
          run.model, run.image_shape, abstract),
      'flops_per_step': flops_per_step, 'batch_size': config.batch_size,
      'devices': devices, 'device_kind': jax.devices()[0].device_kind,
      'peak_flops_per_device': peak, 'family': config.model.name,
      'variant': config.model.get('variant')})


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
  """The rows of a workdir's metrics.jsonl (for tests and analysis); a
  garbled line raises ValueError naming it."""
  parsed = layout.read_metrics(workdir)
  if parsed.garbled or parsed.torn:
    bad = parsed.garbled or [parsed.torn]
    raise ValueError(f'{paths.join(workdir, layout.METRICS)}: line '
                     f'{bad[0]} is not a metrics row.')
  return [row for _, row in parsed.rows]

