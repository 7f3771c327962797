"""Steps/s of `vit_jax.train`'s loop against the bare jitted step.

    PYTHONPATH=. python benchmarks/loop_overhead.py [--steps=1000]
        [--repeats=5] [--width=64] [--depth=2] [--batch=32] [--data_dir=DIR]
    PYTHONPATH=. python benchmarks/loop_overhead.py --tiny   # a smoke run

The run is configs/digits.py (8x8 images, the recipe's optimizer and
schedule) with a smaller ViT (patch 2, `--width`, `--depth`, 2 heads, MLP
2 x width, no dropout) on `--batch` images a step, sized so that the bare
step runs at about 100 steps/s on a 2-core CPU; one CPU device.

(a) `loop`: `vit_jax.train.train_and_evaluate` in a fresh workdir, the
    real loop with the recipe's cadence: a log row (metrics.jsonl,
    TensorBoard, the progress line) every `--log_every` steps, an
    asynchronous checkpoint every `--checkpoint_every` steps (and at the
    last step), the workdir lock and its heartbeat thread, no evaluations
    (eval_every_steps None, evals empty).
(b) `bare`: the same jitted, donated, sharded step (`make_train_step` as
    the loop builds it) from the same initial state on the same batches in
    a Python for loop, one block_until_ready at the end.

Both are fed the same prepared batches (random images in [-1, 1], one-hot
labels; numpy, put on the device by `sharding.global_batch` in both), so
the input pipeline is not measured in either: (a) gets them by replacing
`vit_jax.data.train_iterator` for the run. The pipeline's own rate, the
real digits `train_iterator`, is reported apart (`pipeline`, batches/s).
(a) is timed over the steps after its first log step up to its last log
step before `--steps` (both ends are log steps, where the loop waits for
the device), so compilation, start-up, the final save and the closing
writes are excluded; (b) over the same number of steps after a warm-up.
The two alternate, (a, b, a, b, ...), `--repeats` times each, so that a
loaded machine slows both alike; the figures are the medians.

The CPU time of the process (all its threads: XLA's, orbax's save
threads, the lock's heartbeat) over the same steps is reported beside the
wall time: on a machine that other work loads it moves less.

Prints JSON lines: one per repeat ({"kind": "loop"|"bare", "repeat",
"steps", "seconds", "steps_per_s", "cpu_ms_per_step"}), one `pipeline`
line and a summary: {"kind": "summary", "loop_steps_per_s",
"bare_steps_per_s", "overhead" (1 - loop / bare, of the medians),
"overhead_all" (per (a, b) pair), "ms_per_step_loop", "ms_per_step_bare",
"cpu_ms_per_step_loop", "cpu_ms_per_step_bare", "cpu_overhead" (loop /
bare - 1, of the medians), "config"}. Figures and the device
are in benchmarks/README.md.
"""

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--steps', type=int, default=1000,
                      help='Steps of each run of the loop.')
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--width', type=int, default=64)
  parser.add_argument('--depth', type=int, default=2)
  parser.add_argument('--batch', type=int, default=32)
  parser.add_argument('--log_every', type=int, default=100,
                      help="configs/digits.py's log_every_steps.")
  parser.add_argument('--checkpoint_every', type=int, default=320,
                      help="configs/digits.py's checkpoint.every_steps.")
  parser.add_argument('--pipeline_batches', type=int, default=300)
  parser.add_argument('--data_dir', default=None,
                      help='TFDS data_dir (digits is prepared there on '
                      'first use; default: a temporary folder).')
  parser.add_argument('--tiny', action='store_true',
                      help='A smoke run: 12 steps, a log row every 4, a '
                      'checkpoint every 8, 1 repeat.')
  args = parser.parse_args(argv)
  if args.tiny:
    args.steps, args.log_every, args.checkpoint_every = 12, 4, 8
    args.repeats, args.pipeline_batches = 1, 3
  if args.steps < 2 * args.log_every + 1:
    parser.error('--steps must exceed twice --log_every.')
  return args


def make_config(args, data_dir):
  spec = importlib.util.spec_from_file_location(
      'configs_digits', os.path.join(ROOT, 'configs', 'digits.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.data.data_dir = data_dir
  config.model.update(dict(patch_size=2, width=args.width, depth=args.depth,
                           mlp_dim=2 * args.width, num_heads=2, dropout=0.0,
                           stochastic_depth=0.0))
  config.batch_size = args.batch
  config.total_steps = args.steps
  config.schedule.warmup_steps = min(config.schedule.warmup_steps,
                                     args.steps // 4)
  config.log_every_steps = args.log_every
  config.eval_every_steps = None
  config.checkpoint.every_steps = args.checkpoint_every
  config.evals = type(config)()
  return config


def make_batches(config, count=16, seed=0):
  """`count` prepared train batches of digits' shape (numpy)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  classes = config.model.num_classes
  return [{'image': rng.uniform(-1, 1, (config.batch_size, 8, 8, 1)
                                ).astype(np.float32),
           'labels': np.eye(classes, dtype=np.float32)[
               rng.integers(0, classes, config.batch_size)]}
          for _ in range(count)]


class _Timed:
  """An iterator over `batches` (cycled) that notes when each step asks
  for its batch: `marks[step]` = perf_counter at the start of step `step`."""

  def __init__(self, batches):
    self._batches = batches
    self._step = 0
    self.marks = {}

  def __iter__(self):
    return self

  def __next__(self):
    self._step += 1
    self.marks[self._step] = (time.perf_counter(), time.process_time())
    return self._batches[self._step % len(self._batches)]


@contextlib.contextmanager
def _quiet_stderr():
  """The progress lines go to stderr; keep them off the JSON output but
  still write them (their cost is part of the loop)."""
  with open(os.devnull, 'w') as sink:
    saved, sys.stderr = sys.stderr, sink
    try:
      yield
    finally:
      sys.stderr = saved


def time_loop(config, batches, scratch, repeat):
  """(steps, seconds, CPU seconds) of the real loop between its first
  and last log steps before the end."""
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  timed = _Timed(batches)
  real = data.train_iterator
  data.train_iterator = lambda *a, **k: timed
  try:
    with _quiet_stderr():
      train.train_and_evaluate(config, os.path.join(scratch, f'run{repeat}'))
  finally:
    data.train_iterator = real
  every = config.log_every_steps
  first = every
  last = (config.total_steps - 1) // every * every
  # At the start of step s + 1 the loop has finished step s's host work;
  # at a log step it has also waited for the step's loss.
  (wall_0, cpu_0), (wall_1, cpu_1) = (timed.marks[first + 1],
                                      timed.marks[last + 1])
  return last - first, wall_1 - wall_0, cpu_1 - cpu_0


def make_bare(config):
  """(run, the jitted step as `train._loop` builds it)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import build  # pylint: disable=g-import-not-at-top
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  config = config_lib.resolve(config)
  run = build.build_run(config, data)
  step = jax.jit(
      train.make_train_step(train.make_loss_fn(run.model, config), run.tx,
                            run.schedule, config.grad_accum_steps),
      in_shardings=(run.state_shardings, sharding.batch_sharding(run.mesh),
                    sharding.replicated(run.mesh)),
      out_shardings=(run.state_shardings, sharding.replicated(run.mesh)),
      donate_argnums=(0,))
  return run, step


def time_bare(config, run, step, batches, steps, warmup):
  """(steps, seconds, CPU seconds) of the bare step in a for loop, from a
  fresh state."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding  # pylint: disable=g-import-not-at-top
  state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(
      jax.random.PRNGKey(config.seed))
  key = jax.random.PRNGKey(config.seed + 1)
  for i in range(warmup):
    state, metrics = step(state, sharding.global_batch(
        batches[(i + 1) % len(batches)], run.mesh), key)
  jax.block_until_ready((state, metrics))
  start, cpu = time.perf_counter(), time.process_time()
  for i in range(warmup, warmup + steps):
    state, metrics = step(state, sharding.global_batch(
        batches[(i + 1) % len(batches)], run.mesh), key)
  jax.block_until_ready((state, metrics))
  return steps, time.perf_counter() - start, time.process_time() - cpu


def time_pipeline(config, count):
  """Batches/s of the real digits train_iterator (after its first batch)."""
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  batches = data.train_iterator(config.data, config.batch_size,
                                seed=config.seed)
  next(batches)
  start = time.perf_counter()
  for _ in range(count):
    next(batches)
  return count / (time.perf_counter() - start)


def main(argv=None):
  args = parse_args(argv)
  with tempfile.TemporaryDirectory() as scratch:
    config = make_config(args, args.data_dir or os.path.join(scratch, 'tfds'))
    batches = make_batches(config)
    run, step = make_bare(config)
    rates = {'loop': [], 'bare': []}
    cpu_ms = {'loop': [], 'bare': []}
    for repeat in range(args.repeats):
      for kind in ('loop', 'bare'):
        if kind == 'loop':
          steps, seconds, cpu = time_loop(config, batches, scratch, repeat)
        else:
          steps, seconds, cpu = time_bare(config, run, step, batches, steps,
                                          warmup=args.log_every)
        rates[kind].append(steps / seconds)
        cpu_ms[kind].append(1000 * cpu / steps)
        print(json.dumps({'kind': kind, 'repeat': repeat, 'steps': steps,
                          'seconds': round(seconds, 4),
                          'steps_per_s': round(steps / seconds, 2),
                          'cpu_ms_per_step': round(1000 * cpu / steps, 3)}),
              flush=True)
    print(json.dumps({'kind': 'pipeline', 'batches': args.pipeline_batches,
                      'batches_per_s': round(time_pipeline(
                          config, args.pipeline_batches), 2)}), flush=True)
  loop = statistics.median(rates['loop'])
  bare = statistics.median(rates['bare'])
  print(json.dumps({
      'kind': 'summary', 'loop_steps_per_s': round(loop, 2),
      'bare_steps_per_s': round(bare, 2),
      'overhead': round(1 - loop / bare, 4),
      'overhead_all': [round(1 - a / b, 4)
                       for a, b in zip(rates['loop'], rates['bare'])],
      'ms_per_step_loop': round(1000 / loop, 3),
      'ms_per_step_bare': round(1000 / bare, 3),
      'cpu_ms_per_step_loop': round(statistics.median(cpu_ms['loop']), 3),
      'cpu_ms_per_step_bare': round(statistics.median(cpu_ms['bare']), 3),
      'cpu_overhead': round(statistics.median(cpu_ms['loop']) /
                            statistics.median(cpu_ms['bare']) - 1, 4),
      'config': {'width': args.width, 'depth': args.depth,
                 'batch': args.batch, 'steps': args.steps,
                 'log_every': args.log_every,
                 'checkpoint_every': args.checkpoint_every,
                 'repeats': args.repeats}}), flush=True)


if __name__ == '__main__':
  main()
