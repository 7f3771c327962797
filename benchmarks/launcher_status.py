"""CPU time of `python -m vit_jax.launch status` on a 24-run local sweep.

    PYTHONPATH=. python benchmarks/launcher_status.py [--repeats=3]
        [--sweep_dir=DIR]

`status` runs on login nodes and in watch loops, so its cost is mostly
the interpreter and the imports. This builds a sweep directory of 24 runs
of configs/digits.py (a 4 x 3 x 2 grid), validated and recorded as
`python -m vit_jax.launch` records them (sweep.json), with workdirs in
every state a sweep shows (6 done, 6 failed, 6 preempted, 6 never
started; 200 rows of metrics.jsonl in each started one), then times, in
fresh interpreters, `status` and, for scale, `python -c pass`. Prints
one JSON line per command: the median over the repeats of the child's
user + sys CPU seconds and of its wall seconds, and every repeat.
Figures and the device are in benchmarks/README.md.
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = """
from vit_jax.launch import sweep

def get_sweep(arg=None):
  return {'config': 'configs/digits.py',
          'runs': sweep.grid({'lr': [1e-3, 3e-3, 1e-2, 3e-2],
                              'model.pool_type': ['cls', 'gap', 'map'],
                              'wd': [0.0, 0.1]}),
          'fixed': {'total_steps': 200}, 'metric': 'val/accuracy'}
"""
STATES = ('done', 'failed', 'preempted', 'pending')


def make_sweep(sweep_dir: str) -> None:
  """sweep.json of the 24 runs (the launcher's own loader and record) and
  their workdirs, a quarter in each state."""
  # The loader validates every run (it imports the config schema); this
  # happens here, outside the timed commands.
  from vit_jax.launch import record as record_lib  # pylint: disable=g-import-not-at-top
  from vit_jax.launch import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  sweep_file = os.path.join(sweep_dir, 'sweep_def.py')
  os.makedirs(sweep_dir, exist_ok=True)
  with open(sweep_file, 'w') as f:
    f.write(SWEEP)
  loaded = sweep_lib.load(sweep_file, sweep_dir, ROOT)
  record = record_lib.new(loaded, ROOT, 'local', {'parallel': 1})
  record_lib.write(sweep_dir, record)
  record_lib.add_submission(sweep_dir, record, {
      'backend': 'local', 'settings': {'parallel': 1},
      'runs': [run['name'] for run in record['runs']],
      'host': 'elsewhere', 'pid': 1})
  for index, run in enumerate(record['runs']):
    state = STATES[index % len(STATES)]
    if state == 'pending':
      continue
    workdir = run['workdir']
    os.makedirs(workdir)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      f.write('{}\n')
    with open(os.path.join(workdir, 'metrics.jsonl'), 'w') as f:
      for step in range(1, 201):
        f.write(json.dumps({'step': step, 'train/loss': 1.0 / step}) + '\n')
        if step % 20 == 0:
          f.write(json.dumps({'step': step, 'val/accuracy': step / 200}) +
                  '\n')
    if state == 'done':
      with open(os.path.join(workdir, 'done'), 'w') as f:
        f.write(json.dumps({'step': 200, 'time': time.time()}) + '\n')
    elif state == 'failed':
      with open(os.path.join(workdir, 'error'), 'w') as f:
        f.write('Traceback (most recent call last):\nValueError: bad\n')


def cpu_seconds(command):
  """(user + sys CPU seconds, wall seconds) of `command` run to its end."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.perf_counter()
  subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                 env=dict(os.environ, PYTHONPATH=ROOT))
  wall = time.perf_counter() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  return (after.ru_utime - before.ru_utime +
          after.ru_stime - before.ru_stime), wall


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=3)
  parser.add_argument('--sweep_dir', default=None,
                      help='Build the sweep here (default: a temporary '
                      'folder, removed at the end).')
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as scratch:
    sweep_dir = args.sweep_dir or os.path.join(scratch, 'sweep')
    make_sweep(sweep_dir)
    commands = {
        'python -c pass': [sys.executable, '-c', 'pass'],
        'status': [sys.executable, '-m', 'vit_jax.launch', 'status',
                   f'--sweep_dir={sweep_dir}'],
    }
    for name, command in commands.items():
      cpu, wall = zip(*(cpu_seconds(command) for _ in range(args.repeats)))
      print(json.dumps({
          'command': name, 'runs': 24,
          'cpu_s': round(statistics.median(cpu), 3),
          'wall_s': round(statistics.median(wall), 3),
          'cpu_s_all': [round(c, 3) for c in cpu],
          'wall_s_all': [round(w, 3) for w in wall]}))


if __name__ == '__main__':
  main()
