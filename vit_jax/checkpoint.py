"""Orbax training checkpoints only: the train state and the data iterator's
position, saved periodically and restored to resume a run (`TrainCheckpointer`),
and a run's variables read back as numpy (`restore_variables`,
`restore_params`).

Pretrained-weight import (timm, `.npz`) and `config.init_from` are in
`vit_jax.weights`.
"""

import contextlib
import logging
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import jax
import numpy as np

from vit_jax import paths


# ----------------------------------------------------------------------------
# Training checkpoints (orbax): train state + the data iterator's position.


class TrainCheckpointer:
  """Periodic (asynchronous) saves and resume of a training run.

  Each checkpoint holds two items: 'state' (params, optimizer state, step:
  any pytree of jax arrays, sharded as it is) and 'data' (JSON: the data
  iterator's position, so a resumed run sees the same batches). Retention:
  the last `keep_last` plus every step divisible by `keep_every` and the
  steps in `keep_steps`.
  Orbax writes into a temporary directory and renames it when complete, so
  an interrupted save never looks like a checkpoint; a checkpoint that is
  there but unreadable (corrupt) is skipped with a warning on restore.
  On gs:// orbax writes directly into the step directory and marks it
  finished with a commit file instead (an object store has no rename),
  with the same effect; `directory` may be local or gs://
  (`vit_jax.paths`).
  """

  def __init__(self, directory: str, keep_last: int = 3,
               keep_every: Optional[int] = None, async_save: bool = True,
               read_only: bool = False, keep_steps: Sequence[int] = ()):
    import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
    self._ocp = ocp
    policies = [ocp.checkpoint_managers.LatestN(keep_last)]
    if keep_every:
      policies.append(ocp.checkpoint_managers.EveryNSteps(keep_every))
    if keep_steps:  # e.g. the steps cooldown branches start from
      policies.append(ocp.checkpoint_managers.CustomSteps(list(keep_steps)))
    # read_only: for evaluating a workdir that a run may still be writing:
    # never creates, deletes or cleans up anything there.
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
            policies),
        enable_async_checkpointing=async_save and not read_only,
        create=not read_only, cleanup_tmp_directories=not read_only,
        read_only=read_only)
    self.directory = paths.absolute(directory)
    self._read_only = read_only
    self._pending = False  # a save was started and not yet seen finished
    self.moved_aside: List[int] = []  # steps found corrupt, renamed
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def all_steps(self) -> List[int]:
    return sorted(self._manager.all_steps())

  def save(self, step: int, state: Any, data_state: Mapping[str, Any]
           ) -> None:
    """Starts saving (asynchronously unless async_save=False); raises the
    error of an earlier save that failed."""
    self.check_save()
    args = self._ocp.args
    self._manager.save(step, args=args.Composite(
        state=args.StandardSave(state), data=args.JsonSave(dict(data_state))),
                       force=True)
    self._pending = True

  def check_save(self) -> None:
    """Raises at once if the last asynchronous save failed (disk full, a
    bad path, ...), instead of at the next save; cheap, call it every step.
    The checkpoints saved before it are untouched."""
    if not self._pending:
      return
    self._manager.check_for_errors()
    if not self._manager.is_saving_in_progress():
      self._pending = False
      self._manager.wait_until_finished()  # done: returns, or raises

  def restore_latest(self, abstract_state: Any
                     ) -> Optional[Tuple[int, Any, Dict[str, Any]]]:
    """(step, state, data_state) of the newest readable checkpoint, or None.

    `abstract_state` is a pytree of jax.ShapeDtypeStruct with shardings.
    Newer checkpoints that cannot be read while an older one can are
    corrupt: they are moved aside to `<step>.corrupt-<time>` (never
    deleted) with a warning, so the run can save that step again. Raises if
    checkpoints exist but none can be read (a changed config, say), moving
    nothing, rather than silently starting over.
    """
    args = self._ocp.args
    steps = self.all_steps()
    failures = []
    # When a corrupt checkpoint's restore fails, the reads of its other
    # arrays still in flight finish into orbax's closed event loop: keep
    # their tracebacks off the console.
    _ignore_callbacks_into_closed_loops()
    _ignore_unretrieved_reads()
    for step in reversed(steps):
      try:
        restored = self._manager.restore(step, args=args.Composite(
            state=args.StandardRestore(abstract_state),
            data=args.JsonRestore()))
      except Exception as error:  # pylint: disable=broad-except
        logging.info('Checkpoint at step %d in %s is unreadable (%s: %s); '
                     'trying the one before.', step, self.directory,
                     type(error).__name__, error)
        failures.append((step, _short_cause(error)))
        continue
      if failures:
        self._move_aside(failures)
      return step, restored['state'], dict(restored['data'])
    if failures:
      raise ValueError(f'No checkpoint in {self.directory} could be restored '
                       f'into this run\'s state: '
                       f'{[f"step {s}: {e}" for s, e in failures]}')
    return None

  def _move_aside(self, failures: List[Tuple[int, str]]) -> None:
    """Renames unreadable step directories to `<step>.corrupt-<time>`,
    with one warning line each ((step, cause) pairs)."""
    steps = [step for step, _ in failures]
    if self._read_only:
      return
    stamp = time.strftime('%Y%m%d-%H%M%S')
    if jax.process_index() == 0:
      for step, cause in failures:
        source = paths.join(self.directory, str(step))
        target = f'{source}.corrupt-{stamp}'
        paths.rename(source, target)
        logging.warning('The checkpoint of step %d is unreadable (%s): moved '
                        'aside to %s; the run goes on from an earlier one and '
                        'saves step %d again.', step, cause, target, step)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('checkpoints moved aside')
    self._manager.reload()
    self.moved_aside.extend(steps)

  def restore(self, step: int, abstract_state: Any, with_data: bool = False
              ) -> Any:
    """The state saved at `step` (see `restore_latest` for the argument);
    with_data: (state, data_state)."""
    steps = self.all_steps()
    if step not in steps:
      raise ValueError(f'No checkpoint at step {step} in {self.directory}; '
                       f'steps there: {steps}')
    args = self._ocp.args
    items = {'state': args.StandardRestore(abstract_state)}
    if with_data:
      items['data'] = args.JsonRestore()
    restored = self._manager.restore(step, args=args.Composite(**items))
    if with_data:
      return restored['state'], dict(restored['data'])
    return restored['state']

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _short_cause(error: BaseException, limit: int = 120) -> str:
  """'Type: first line of the message', without tensorstore's spec dump."""
  text = str(error).split('\n', 1)[0].split(' [tensorstore_spec', 1)[0]
  if len(text) > limit:
    text = text[:limit - 3] + '...'
  return f'{type(error).__name__}: {text}'


def _is_callback_into_closed_loop(unraisable) -> bool:
  """asyncio's "Event loop is closed", raised in `call_soon_threadsafe` by
  a tensorstore read finishing after orbax closed the loop awaiting it."""
  error = unraisable.exc_value
  if not (isinstance(error, RuntimeError)
          and str(error) == 'Event loop is closed'):
    return False
  frames = []
  trace = unraisable.exc_traceback
  while trace is not None:
    frames.append(trace.tb_frame.f_code.co_name)
    trace = trace.tb_next
  return 'call_soon_threadsafe' in frames


def _ignore_callbacks_into_closed_loops() -> None:
  """Drops those (and only those) from `sys.unraisablehook`: once orbax's
  restore of a corrupt checkpoint fails, the reads of its other arrays
  still finish, each into the closed loop, each printing a traceback.
  Nothing awaits their results; the restore's error is reported."""
  previous = sys.unraisablehook
  if getattr(previous, 'ignores_closed_loops', False):
    return

  def hook(unraisable):
    if not _is_callback_into_closed_loop(unraisable):
      previous(unraisable)

  hook.ignores_closed_loops = True
  sys.unraisablehook = hook


class _UnretrievedReads(logging.Filter):
  """asyncio's "Task exception was never retrieved" for orbax's array
  reads (`async_deserialize`) of a checkpoint whose restore already
  failed: the same cause, reported once by `restore_latest`. Other
  records pass."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = record.getMessage()
    return not ('Task exception was never retrieved' in message and
                'async_deserialize' in message and 'orbax' in message)


def _ignore_unretrieved_reads() -> None:
  """Installs `_UnretrievedReads` on asyncio's logger (once): under load
  the garbage collector, not the closed loop, finds some of those reads."""
  logger = logging.getLogger('asyncio')
  if not any(isinstance(f, _UnretrievedReads) for f in logger.filters):
    logger.addFilter(_UnretrievedReads())


def has_step(directory: str, step: int) -> bool:
  """Whether `directory` holds the finished checkpoint of `step`, without
  orbax: locally a step directory appears only when complete (renamed
  from a temporary one); on gs:// orbax marks it with a commit file."""
  step_dir = paths.join(directory, str(step))
  if paths.is_local(directory):
    return paths.isdir(step_dir)
  return paths.exists(paths.join(step_dir, 'commit_success.txt'))


def finished_steps(directory: str) -> List[int]:
  """The steps of the finished checkpoints in `directory`, ascending,
  without orbax (`has_step`): unfinished saves and moved-aside corrupt
  ones are left out."""
  return sorted(int(name) for name in paths.listdir(directory)
                if name.isdigit() and has_step(directory, int(name)))


def choose_step(available: Sequence[int], step: Optional[int],
                directory: str) -> int:
  """`step`, or the newest of `available` (ascending) when None; the
  errors every reader of a workdir gives: FileNotFoundError when there is
  no checkpoint, ValueError naming the steps there when `step` is not
  one of them."""
  if not available:
    raise FileNotFoundError(f'No finished checkpoint in {directory}.')
  if step is None:
    return available[-1]
  if step not in available:
    raise ValueError(f'No checkpoint at step {step} in {directory}; steps '
                     f'there: {list(available)}')
  return step


# Train-state entries that are model variables besides 'params' (Flax
# collections): BatchNorm's running averages.
MODEL_STATE_KEYS = ('batch_stats',)


def variables_of(state: Mapping[str, Any]) -> Dict[str, Any]:
  """The model's variables in a train state: {'params'} plus the
  collections of MODEL_STATE_KEYS it has (what inference applies)."""
  return {'params': state['params'],
          **{key: state[key] for key in MODEL_STATE_KEYS if key in state}}


def restore_params(directory: str, step: Optional[int] = None
                   ) -> Dict[str, Any]:
  """The params of a training checkpoint (latest step unless given), as numpy."""
  return restore_variables(directory, step)['params']


def restore_variables(directory: str, step: Optional[int] = None,
                      quiet: bool = False) -> Dict[str, Any]:
  """The model variables of a training checkpoint (latest step unless
  given), as numpy: {'params'} plus 'batch_stats' where the model has
  BatchNorm (`variables_of`).

  quiet: without orbax's WARNING lines about the read-only manager this
  asks for (absl's verbosity is raised to ERROR for the restore only), for
  tools whose console is their output.
  """
  with _orbax_errors_only() if quiet else contextlib.nullcontext():
    return _restore_variables(directory, step)


@contextlib.contextmanager
def _orbax_errors_only():
  """absl's verbosity (orbax logs through absl) at ERROR, then put back."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.ERROR)
  try:
    yield
  finally:
    absl_logging.set_verbosity(verbosity)


def _restore_variables(directory: str, step: Optional[int]
                       ) -> Dict[str, Any]:
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  directory = paths.absolute(directory)
  if not paths.isdir(directory):  # never created by reading
    raise FileNotFoundError(f'No checkpoint directory {directory}.')
  handlers = {'state': ocp.StandardCheckpointHandler(),
              'data': ocp.JsonCheckpointHandler()}
  options = ocp.CheckpointManagerOptions(
      create=False, read_only=True, cleanup_tmp_directories=False)
  with ocp.CheckpointManager(directory, item_handlers=handlers,
                             options=options) as manager:
    step = choose_step(sorted(manager.all_steps()), step, directory)
    # Onto this process's first device, whatever mesh the run had.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda meta: jax.ShapeDtypeStruct(meta.shape, meta.dtype,
                                          sharding=device),
        manager.item_metadata(step)['state'])
    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target)))
  return jax.tree.map(np.asarray, variables_of(restored['state']))
