"""The training loop reads nothing back from the device at a step that
neither logs, saves nor evaluates (issue 23, loop overhead; the loop's
speed against the bare step is benchmarks/loop_overhead.py's).

`jax.transfer_guard_device_to_host` cannot count these reads on the CPU
backend (a CPU array's host copy is no transfer to it: the guard never
fires), so the test counts them where every read of a `jax.Array`'s value
goes through, `ArrayImpl._value` (`np.asarray`, `float`, `.item()`,
`jax.device_get`, ...), on the loop's thread only (orbax's save threads
read the state they write). Steps are told apart by the loop's requests
for their batches: a read between the requests of steps s and s + 1 is
step s's.
"""

import threading

import pytest
from jax._src import array as jax_array

from tiny import tiny_config
from vit_jax import data
from vit_jax import train

METRICS = 4  # train/loss, grad_norm, update_norm, lr


class _Marked:
  """The real train iterator, noting which step the loop is at."""

  def __init__(self, batches, counter):
    self._batches = batches
    self._counter = counter

  def __iter__(self):
    return self

  def __next__(self):
    self._counter.step += 1
    return next(self._batches)


class _Counter:
  """Reads of device arrays' values on the main thread, by step."""

  def __init__(self):
    self.step = 0
    self.reads = {}
    self._thread = threading.get_ident()

  def note(self):
    if threading.get_ident() == self._thread and self.step:
      self.reads[self.step] = self.reads.get(self.step, 0) + 1


def _reads_per_step(config, workdir, monkeypatch):
  """{step: reads of device values on the loop's thread during step s}."""
  counter = _Counter()
  real_iterator = data.train_iterator
  monkeypatch.setattr(data, 'train_iterator', lambda *args, **kwargs: _Marked(
      real_iterator(*args, **kwargs), counter))
  value = jax_array.ArrayImpl._value  # pylint: disable=protected-access

  def counted(self):
    counter.note()
    return value.fget(self)

  monkeypatch.setattr(jax_array.ArrayImpl, '_value', property(counted))
  train.train_and_evaluate(config, workdir)
  monkeypatch.undo()
  assert counter.step == config.total_steps
  return counter.reads


@pytest.fixture(scope='module')
def counted_run(tmp_path_factory, data_dir):
  """12 steps: a log row every 4, a checkpoint every 6, the evaluation
  at step 9 and the last."""
  config = tiny_config(data_dir, total_steps=12, log_every_steps=4,
                       eval_every_steps=9, **{'checkpoint.every_steps': 6})
  with pytest.MonkeyPatch.context() as monkeypatch:
    reads = _reads_per_step(config, str(tmp_path_factory.mktemp('run')),
                            monkeypatch)
  return config, reads


def test_steps_that_only_train_read_nothing_from_the_device(counted_run):
  _, reads = counted_run
  # 4, 8 and 12 log, 6 and 12 save, 9 and 12 evaluate; step 1 compiles
  # and writes summary.json, reading nothing either.
  plain = [1, 2, 3, 5, 7, 10, 11]
  assert {step: reads.get(step, 0) for step in plain} == {
      step: 0 for step in plain}


def test_log_save_and_eval_steps_read_only_the_metrics(counted_run):
  """A step that logs, saves or evaluates first fetches the metrics of
  the steps since the last such step, its own included (one
  `jax.device_get`), checking that they are finite; nothing else but an
  evaluation's own results is read."""
  _, reads = counted_run
  assert reads[4] == 4 * METRICS  # steps 1-4
  assert reads[6] == 2 * METRICS  # 5, 6 (a save, no log row)
  assert reads[8] == 2 * METRICS  # 7, 8
  evaluation = reads[9] - METRICS  # 9, then the evaluation's results
  assert evaluation > 0
  assert reads[12] == 3 * METRICS + evaluation  # 10-12, the evaluation
  assert set(reads) == {4, 6, 8, 9, 12}
