"""The train streams of the NumPy pipelines (`volumes.py`, `video.py`):
batch `step` is a pure function of (seed, process, step), so a stream can
start at any step and prefetch without changing what it yields."""

import collections
from concurrent import futures
from typing import Dict, List

import numpy as np

Batch = Dict[str, np.ndarray]


def seed_words(seed: int, *values: int) -> List[int]:
  """Entropy for numpy's SeedSequence, which takes non-negative integers
  (a negative seed wraps around)."""
  return [int(seed) % 2**64] + [int(v) for v in values]


def local_batch(global_batch_size: int, process_count: int) -> int:
  """The per-process batch size; the global one must divide evenly."""
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f'Global batch size {global_batch_size} must be a '
                     f'positive multiple of process_count={process_count}.')
  return global_batch_size // process_count


class StepBatches:
  """An infinite stream of `batch(step)` from `start_step` on.

  Subclasses set `_records` (this process's share), `_seed` and `_process`
  and define `batch(step)`. With `prefetch` > 0 one background thread
  prepares that many batches ahead; since each batch is a function of its
  step, the order cannot change. `close()` stops the thread.
  """

  _records: list
  _seed: int
  _process: int

  def __init__(self, start_step: int, prefetch: int, thread_name: str):
    self._step = start_step
    self._prefetch = prefetch or 0
    self._thread_name = thread_name
    self._executor = None
    self._pending = collections.deque()  # futures of the next steps' batches
    self._permutation = (None, None)  # (epoch, permutation of the share)

  def batch(self, step: int) -> Batch:
    raise NotImplementedError

  def __iter__(self) -> 'StepBatches':
    return self

  def __next__(self) -> Batch:
    if not self._prefetch:
      batch = self.batch(self._step)
    else:
      if self._executor is None:
        self._executor = futures.ThreadPoolExecutor(
            1, thread_name_prefix=self._thread_name)
      while len(self._pending) <= self._prefetch:
        self._pending.append(self._executor.submit(
            self.batch, self._step + len(self._pending)))
      batch = self._pending.popleft().result()
    self._step += 1
    return batch

  def close(self) -> None:
    """Stops the prefetching thread (batches it had started are dropped)."""
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)
      self._executor, self._pending = None, collections.deque()

  def _order(self, epoch: int) -> np.ndarray:
    """The share's permutation in `epoch` (a fresh one each epoch)."""
    if self._permutation[0] != epoch:
      rng = np.random.default_rng(seed_words(self._seed, self._process,
                                             epoch, 0))
      self._permutation = (epoch, rng.permutation(len(self._records)))
    return self._permutation[1]

  def _share_index(self, step: int, slot: int, per_batch: int) -> int:
    """The share index of item `slot` of batch `step`."""
    epoch, position = divmod(step * per_batch + slot, len(self._records))
    return int(self._order(epoch)[position])
