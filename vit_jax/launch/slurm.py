"""The SLURM back end: one `sbatch` job array per sweep.

Each array task is one run (the task id is the run's index in sweep.json,
less the offset of its chunk). The batch script `cd`s to the code, runs
the lines of `--slurm_setup` (module loads, venv activation), starts
the run with `srun` (one task per node; a multi-node run's processes find
each other through JAX's SLURM detection, `vit_jax.cli`) and waits:

- `--requeue`, and `--signal=B:USR1@S`: S seconds before the time limit
  SLURM signals the batch shell, which passes SIGTERM to the run (the
  trainer saves a checkpoint and exits with status 3) and then requeues
  its own task with `scontrol requeue`; the requeued task resumes from
  that checkpoint. A node failure requeues the task too (`--requeue`).
- SIGTERM to the batch shell (`scancel`, or the time limit reached
  without the early signal) is passed on too, without requeueing, even
  when the early signal came first.
- `cancel` first writes `LOG_DIR/cancelled-<array job>`: an attempt of
  that array that was requeued just before the cancel exits at once, and
  no attempt requeues itself once it exists. `resume` submits new arrays.
- Code: each submission copies the checkout's tracked files (as in its
  working tree; sweep.json records the commit and whether it was dirty)
  to `LOG_DIR/code-<time>/`, and its batch scripts run from there, so a
  job queued for hours, or requeued after the checkout changed, runs the
  code it was submitted with.
- Logs: `LOG_DIR/slurm-<array job>_<task>.log`, appended across requeues;
  `LOG_DIR/<run name>.log` links to a run's latest one.

Per-run resources (the sweep's `resources`: time, GPUs, ... for each
run) replace the flags' for their runs: the runs of equal resources go
in one array (`SlurmBackend.RESOURCES`; the other keys are other back
ends').

Cooldown branches (`sweep.branches`) go in arrays of their own, one per
trunk, submitted after the trunks' with `--dependency=afterany:<its
trunk's task>`: they start once their own trunk has ended (SLURM cannot
wait for a checkpoint file), not every trunk.

Arrays are limited by the cluster's MaxArraySize (task ids must be below
it): a sweep with more runs is submitted as several arrays, each with its
offset. A throttle `%N` (`--slurm_throttle`) caps the runs of each array
running at once. `status` cross-checks the workdirs with `squeue`;
`cancel` signals the running tasks' runs (they save and stop) and cancels
the queued ones.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import flags

from vit_jax.launch import record as record_lib

_PARTITION = flags.DEFINE_string('slurm_partition', None,
                                 'slurm: partition (default: the cluster\'s).')
_TIME = flags.DEFINE_string('slurm_time', None, 'slurm: time limit per run '
                            'attempt, e.g. 4:00:00; requeued on expiry.')
_NODES = flags.DEFINE_integer('slurm_nodes', 1, 'slurm: nodes per run (one '
                              'JAX process per node).')
_GPUS_PER_NODE = flags.DEFINE_integer('slurm_gpus_per_node', None,
                                      'slurm: GPUs per node.')
_CPUS_PER_TASK = flags.DEFINE_integer('slurm_cpus_per_task', None,
                                      'slurm: CPUs per node\'s process.')
_MEM = flags.DEFINE_string('slurm_mem', None, 'slurm: memory per node, '
                           'e.g. 64G.')
_THROTTLE = flags.DEFINE_integer('slurm_throttle', None, 'slurm: at most '
                                 'this many runs of the sweep at once (%N).')
_SIGNAL_SECONDS = flags.DEFINE_integer(
    'slurm_signal_seconds', 300, 'slurm: seconds before the time limit at '
    'which a run is told to save and requeue.')
_MAX_ARRAY_SIZE = flags.DEFINE_integer(
    'slurm_max_array_size', None, 'slurm: the cluster\'s MaxArraySize '
    '(default: asked of `scontrol show config`).')
_SBATCH_OPTIONS = flags.DEFINE_multi_string(
    'slurm_option', [], 'slurm: any other sbatch option, e.g. '
    '--slurm_option=--account=proj (repeatable).')
_PYTHON = flags.DEFINE_string('slurm_python', None, 'slurm: the Python on '
                              'the nodes (default: this one).')
_SETUP = flags.DEFINE_string(
    'slurm_setup', None, 'slurm: a shell file whose lines each batch script '
    'runs before its run (module loads, venv activation; an example: '
    'launch/slurm_setup.sh), copied in at submission; relative paths are '
    'relative to the current directory.')

DEFAULT_MAX_ARRAY_SIZE = 1001  # SLURM's default
_QUEUED = ('PENDING', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED',
           'CONFIGURING', 'RESV_DEL_HOLD', 'SUSPENDED')
_RUNNING = ('RUNNING', 'COMPLETING', 'STAGE_OUT', 'SIGNALING')


def max_array_size() -> int:
  """The cluster's MaxArraySize, from `scontrol show config`."""
  try:
    text = subprocess.run(['scontrol', 'show', 'config'], check=True,
                          capture_output=True, text=True, timeout=60).stdout
  except (OSError, subprocess.SubprocessError):
    return DEFAULT_MAX_ARRAY_SIZE
  match = re.search(r'^MaxArraySize\s*=\s*(\d+)', text, re.M)
  return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE


def chunks(indices: Sequence[int], max_size: int) -> List[tuple]:
  """[(offset, [task ids])]: run indices split so task ids < max_size."""
  grouped: Dict[int, List[int]] = {}
  for index in sorted(indices):
    offset = (index // max_size) * max_size
    grouped.setdefault(offset, []).append(index - offset)
  return sorted(grouped.items())


def array_spec(task_ids: Sequence[int], throttle: Optional[int]) -> str:
  """'0-3,7,9-10%2' from task ids."""
  parts, start, previous = [], None, None
  for task in sorted(task_ids):
    if start is None:
      start = previous = task
    elif task == previous + 1:
      previous = task
    else:
      parts.append(f'{start}-{previous}' if previous > start else f'{start}')
      start = previous = task
  parts.append(f'{start}-{previous}' if previous > start else f'{start}')
  return ','.join(parts) + (f'%{throttle}' if throttle else '')


_TIME_FORMATS = ('MINUTES', 'MINUTES:SECONDS', 'HOURS:MINUTES:SECONDS',
                 'DAYS-HOURS', 'DAYS-HOURS:MINUTES',
                 'DAYS-HOURS:MINUTES:SECONDS', 'UNLIMITED')


def time_limit_seconds(text: str) -> Optional[int]:
  """sbatch --time in seconds (None: UNLIMITED / INFINITE); ValueError
  naming the formats sbatch takes for anything else."""
  value = str(text).strip()
  if value.upper() in ('UNLIMITED', 'INFINITE', '-1'):
    return None
  match = re.fullmatch(r'(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?', value)
  if not match:
    raise ValueError(f'--slurm_time={text!r} is not a time sbatch takes; '
                     f'formats: {", ".join(_TIME_FORMATS)}.')
  days, first, second, third = match.groups()
  numbers = [int(v) for v in (first, second, third) if v is not None]
  if days is not None:  # DAYS-HOURS[:MINUTES[:SECONDS]]
    hours, minutes, seconds = (numbers + [0, 0])[:3]
    return ((int(days) * 24 + hours) * 60 + minutes) * 60 + seconds
  if len(numbers) == 1:
    return numbers[0] * 60
  if len(numbers) == 2:
    return numbers[0] * 60 + numbers[1]
  return (numbers[0] * 60 + numbers[1]) * 60 + numbers[2]


def snapshot(code_dir: str, dest: str) -> str:
  """Copies the checkout's tracked files, as in its working tree (what was
  validated at submission), to `dest`, which the batch scripts then run
  from: a job that starts hours later, or is requeued after the checkout
  moved on, runs the code it was submitted with."""
  files = record_lib.tracked_files(
      code_dir, 'the SLURM back end runs a snapshot of its tracked files')
  for name in files:
    target = os.path.join(dest, name)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.copy2(os.path.join(code_dir, name), target)
  return dest


def setup_lines(settings: Mapping[str, Any]) -> List[str]:
  """The lines of the --slurm_setup file, under a comment naming it.

  They are copied into each batch script rather than sourced from the
  file, so a job that starts hours later runs what was there at
  submission (and the script printed by --dry_run is the whole job)."""
  path = settings.get('setup')
  if not path:
    return []
  try:
    with open(path) as f:
      text = f.read()
  except OSError as error:
    raise ValueError(f'--slurm_setup={path}: cannot read it '
                     f'({error.strerror or error}).') from None
  return [f'# --slurm_setup={path}:', *text.rstrip('\n').splitlines(),
          f'# (end of {os.path.basename(path)})']


def batch_script(record: Mapping[str, Any], runs: Sequence[Mapping[str, Any]],
                 settings: Mapping[str, Any], log_dir: str, offset: int,
                 task_ids: Sequence[int], name: str,
                 dependency: Optional[str] = None) -> str:
  """The sbatch script of one array: the runs with index offset + task;
  `dependency`: sbatch's --dependency (branches wait for their trunks)."""
  options = [
      f'--job-name={name}',
      f'--array={array_spec(task_ids, settings.get("throttle"))}',
      f'--output={log_dir}/slurm-%A_%a.log',
      '--open-mode=append',
      '--requeue',
      f'--signal=B:USR1@{settings["signal_seconds"]}',
      f'--nodes={settings["nodes"]}',
      '--ntasks-per-node=1',
  ]
  if dependency:
    options.append(f'--dependency={dependency}')
  for key, option in (('partition', 'partition'), ('time', 'time'),
                      ('gpus_per_node', 'gpus-per-node'),
                      ('cpus_per_task', 'cpus-per-task'), ('mem', 'mem')):
    if settings.get(key) is not None:
      options.append(f'--{option}={settings[key]}')
  options.extend(settings.get('options') or [])
  by_index = {run['index']: run for run in runs}
  cases = []
  for task in task_ids:
    run = by_index[offset + task]
    command = ' '.join(shlex.quote(a) for a in
                       [settings['python'], *run['args']])
    cases.append(f'  {task}) RUN={shlex.quote(run["name"])}; '
                 f'WORKDIR={shlex.quote(run["workdir"])}; '
                 f'COMMAND=({command}) ;;')
  python = shlex.quote(settings['python'])
  cpus = (f'--cpus-per-task={settings["cpus_per_task"]} '
          if settings.get('cpus_per_task') is not None else '')
  lines = ['#!/bin/bash'] + [f'#SBATCH {option}' for option in options] + [
      f'# vit_jax sweep {record.get("sweep_file")}: run index = {offset} + '
      f'task id. Written by python -m vit_jax.launch.',
      f'cd {shlex.quote(record["code_dir"])} || exit 1',
      *setup_lines(settings),
      'case "$SLURM_ARRAY_TASK_ID" in',
      *cases,
      '  *) echo "no run for task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;',
      'esac',
      '# This task alone (an array task\'s SLURM_JOB_ID may name the array).',
      'TASK="${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"',
      f'LOG={shlex.quote(log_dir)}/slurm-$TASK.log',
      'START=$(date +%s)',
      '# LOG_DIR/<run name>.log: the run\'s latest log.',
      f'ln -sfn "slurm-$TASK.log" {shlex.quote(log_dir)}/"$RUN.log"',
      'echo "=== $(date \'+%F %T\') $TASK run $RUN on $(hostname)," '
      '"attempt $(( ${SLURM_RESTART_COUNT:-0} + 1 ))"',
      '# `launch cancel` writes this file before it signals: an attempt',
      '# requeued just before then does not start, nor requeue again.',
      f'CANCELLED={shlex.quote(log_dir)}/cancelled-$SLURM_ARRAY_JOB_ID',
      'if [ -e "$CANCELLED" ]; then',
      '  echo "=== $TASK run $RUN cancelled (launch cancel), not started"',
      '  exit 0',
      'fi',
      'requeue=0',
      'stop=0',
      '# Before the time limit (B:USR1 reaches this shell only): the run',
      '# saves on SIGTERM (its srun task alone gets it), then the task is',
      '# requeued. The traps keep this shell alive while the run saves.',
      'trap \'requeue=1; scancel --signal=TERM "$TASK"\' USR1',
      '# scancel, `launch cancel`, or the time limit itself: save, no',
      '# requeue, even when the early signal came first.',
      'trap \'stop=1; scancel --signal=TERM "$TASK"\' TERM',
      # srun does not inherit sbatch's --cpus-per-task (SLURM >= 22.05).
      'srun --ntasks-per-node=1 --kill-on-bad-exit=1 '
      f'{cpus}"${{COMMAND[@]}}" &',
      'child=$!',
      '# `wait` returns early when a trap runs; wait until the run ends.',
      'while true; do',
      '  wait "$child"; status=$?',
      '  kill -0 "$child" 2>/dev/null || break',
      'done',
      'echo "=== $(date \'+%F %T\') $TASK run $RUN exited with status '
      '$status"',
      '# A failure the trainer could not record (killed, or refused before',
      '# it had a workdir) goes to WORKDIR/error, for `status`.',
      f'{python} -m vit_jax.launch.failure "$WORKDIR" "$status" "$LOG" '
      '"$START"',
      'if [ "$requeue" = 1 ] && [ "$stop" = 0 ] && [ "$status" = 3 ] &&',
      '   [ ! -e "$CANCELLED" ]; then',
      '  # Said first: slurmd ends this shell as soon as the requeue is made.',
      '  echo "=== requeueing $TASK"',
      '  scontrol requeue "$TASK" || echo "=== requeue of $TASK failed"',
      'fi',
      'exit "$status"',
  ]
  return '\n'.join(lines) + '\n'


class SlurmBackend:
  """Submits sbatch job arrays (see the module docstring)."""

  name = 'slurm'

  @staticmethod
  def settings_from_flags() -> Dict[str, Any]:
    return {
        'partition': _PARTITION.value, 'time': _TIME.value,
        'nodes': _NODES.value, 'gpus_per_node': _GPUS_PER_NODE.value,
        'cpus_per_task': _CPUS_PER_TASK.value, 'mem': _MEM.value,
        'throttle': _THROTTLE.value, 'signal_seconds': _SIGNAL_SECONDS.value,
        'max_array_size': _MAX_ARRAY_SIZE.value,
        'options': list(_SBATCH_OPTIONS.value),
        'python': _PYTHON.value or sys.executable,
        'setup': _SETUP.value and os.path.abspath(_SETUP.value),
    }

  @staticmethod
  def check(settings: Mapping[str, Any], sweep_dir: str) -> None:
    del sweep_dir
    if settings['nodes'] < 1:
      raise ValueError(f'--slurm_nodes must be at least 1, got '
                       f'{settings["nodes"]}.')
    if settings.get('throttle') is not None and settings['throttle'] < 1:
      raise ValueError(f'--slurm_throttle must be at least 1, got '
                       f'{settings["throttle"]}.')
    for option in settings.get('options') or []:
      if not option.startswith('-'):
        raise ValueError(f'--slurm_option={option!r} is not an sbatch '
                         f'option (e.g. --account=NAME).')
    if settings['signal_seconds'] < 1:
      raise ValueError(f'--slurm_signal_seconds must be at least 1, got '
                       f'{settings["signal_seconds"]}.')
    if settings.get('time') is not None:
      limit = time_limit_seconds(settings['time'])
      if limit is not None and limit <= settings['signal_seconds']:
        raise ValueError(
            f'--slurm_time={settings["time"]} ({limit} s) leaves no time '
            f'before the early signal --slurm_signal_seconds='
            f'{settings["signal_seconds"]}: every attempt would be told to '
            f'save and requeue at once. Give a longer time or a smaller '
            f'signal.')
    setup_lines(settings)  # a missing or unreadable file: refused now

  # The sweep's per-run resources this back end takes (sweep.RESOURCE_KEYS;
  # the names of its settings, the flags without --slurm_).
  RESOURCES = ('partition', 'time', 'nodes', 'gpus_per_node',
               'cpus_per_task', 'mem')

  @classmethod
  def _with(cls, settings: Mapping[str, Any],
            resources: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """The settings with a run's resources in place of the flags'."""
    return {**settings, **{key: value for key, value in
                           (resources or {}).items() if key in cls.RESOURCES}}

  @classmethod
  def check_resources(cls, settings: Mapping[str, Any],
                      resources: Mapping[str, Any]) -> None:
    merged = cls._with(settings, resources)
    for key in ('nodes', 'gpus_per_node', 'cpus_per_task'):
      value = merged.get(key)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f'resources {key} must be a positive integer, got '
                         f'{value!r}.')
    cls.check(merged, '')

  def __init__(self, settings: Mapping[str, Any]):
    self.settings = dict(settings)

  def _scripts(self, record, runs, log_dir: str,
               submitted: Optional[Mapping[str, str]] = None
               ) -> List[tuple]:
    """(offset, task ids, script, resources) of each array: the runs
    without a trunk first, then the cooldown branches, an array per trunk,
    each depending (afterany) on its own trunk's task among `submitted`
    ({run name: 'JOB_TASK'}; None: a placeholder, for --dry_run); and
    within those, an array per set of per-run resources."""
    size = self.settings.get('max_array_size') or max_array_size()
    name = 'vit_jax-' + os.path.splitext(
        os.path.basename(record.get('sweep_file') or 'sweep'))[0]
    groups = [(None, [run for run in runs if not run.get('after')])]
    # Branches: one array per trunk, waiting for that trunk's task alone
    # (a branch of a small model does not wait for the largest trunk).
    by_trunk: Dict[str, List[Mapping[str, Any]]] = {}
    for run in runs:
      if run.get('after'):
        by_trunk.setdefault(run['after']['run'], []).append(run)
    groups += sorted(by_trunk.items())
    scripts = []
    for trunk, group in groups:
      if not group:
        continue
      dependency = None
      if trunk is not None:
        wait = (f'<task of {trunk}>' if submitted is None else
                submitted.get(trunk))
        dependency = f'afterany:{wait}' if wait else None
      by_resources: Dict[str, tuple] = {}  # JSON text: (resources, runs)
      for run in group:
        used = {k: v for k, v in (run.get('resources') or {}).items()
                if k in self.RESOURCES}
        by_resources.setdefault(json.dumps(used, sort_keys=True),
                                (used, []))[1].append(run)
      for used, same in by_resources.values():
        settings = self._with(self.settings, used)
        for offset, tasks in chunks([run['index'] for run in same], size):
          scripts.append((offset, tasks, batch_script(
              record, same, settings, log_dir, offset, tasks, name,
              dependency), used))
    return scripts

  def describe(self, record, runs, log_dir: str) -> str:
    parts = []
    record = {**record, 'code_dir': os.path.join(log_dir, 'code-<time>')}
    for i, (offset, tasks, script, resources) in enumerate(
        self._scripts(record, runs, log_dir)):
      given = ''.join(f', {key}={value}'
                      for key, value in sorted(resources.items()))
      parts.append(f'# sbatch --parsable {log_dir}/sbatch-<time>-{i}.sh  '
                   f'(runs {offset} + task ids {array_spec(tasks, None)}'
                   f'{given and "; resources" + given[1:]})\n' + script)
    return '\n'.join(parts)

  def submit(self, record, runs, log_dir: str) -> Dict[str, Any]:
    os.makedirs(log_dir, exist_ok=True)
    stamp = time.strftime('%Y%m%d-%H%M%S')
    code = snapshot(record['code_dir'],
                    os.path.join(log_dir, f'code-{stamp}'))
    print(f'Code snapshot: {code} (the tracked files of '
          f'{record["code_dir"]}).')
    record = {**record, 'code_dir': code}
    by_index = {run['index']: run['name'] for run in runs}
    jobs = []
    submitted: Dict[str, str] = {}  # run name: its 'JOB_TASK'
    trunks = [run for run in runs if not run.get('after')]
    branches = [run for run in runs if run.get('after')]

    def arrays():  # the trunks' first: the branches' depend on them
      yield from self._scripts(record, trunks, log_dir, submitted)
      yield from self._scripts(record, branches, log_dir, submitted)

    for i, (offset, tasks, script, resources) in enumerate(arrays()):
      path = os.path.join(log_dir, f'sbatch-{stamp}-{i}.sh')
      with open(path, 'w') as f:
        f.write(script)
      result = subprocess.run(['sbatch', '--parsable', path],
                              capture_output=True, text=True)
      if result.returncode:
        raise RuntimeError(
            f'sbatch {path} failed (exit status {result.returncode}): '
            f'{result.stderr.strip()}' + (
                f'; submitted before it: {jobs}' if jobs else ''))
      job_id = result.stdout.strip().split(';')[0]
      jobs.append({'job_id': job_id, 'script': path, 'offset': offset,
                   'tasks': {str(t): by_index[offset + t] for t in tasks},
                   'resources': resources})
      submitted.update({by_index[offset + t]: f'{job_id}_{t}' for t in tasks})
      print(f'Submitted array job {job_id}: {len(tasks)} runs ({path}).')
    return {'jobs': jobs}

  def wait(self, record, runs, log_dir: str):
    del record, runs, log_dir
    return None  # SLURM runs them

  @staticmethod
  def _queue(job_ids: Sequence[str]) -> Dict[str, str]:
    """{'<array job>_<task>': state} of the jobs still in SLURM's queue."""
    states = {}
    for job_id in job_ids:
      result = subprocess.run(['squeue', '-h', '-r', '-j', job_id, '-o',
                               '%i|%T'], capture_output=True, text=True)
      if result.returncode:
        continue  # no longer known
      for line in result.stdout.splitlines():
        task, _, state = line.strip().partition('|')
        states[task] = state
    return states

  @classmethod
  def scheduler_states(cls, record, submissions) -> Dict[str, str]:
    del record
    wanted = {}
    for name, submission in submissions.items():
      for job in submission.get('jobs', []):
        for task, run_name in job['tasks'].items():
          if run_name == name:
            wanted[f'{job["job_id"]}_{task}'] = name
    queue = cls._queue(sorted({key.split('_')[0] for key in wanted}))
    states = {}
    for key, name in wanted.items():
      state = queue.get(key)
      if state in _QUEUED:
        states[name] = 'PENDING'
      elif state in _RUNNING:
        states[name] = 'RUNNING'
    return states

  @classmethod
  def cancel(cls, record, submissions, say=print) -> None:
    del record
    job_ids = sorted({job['job_id'] for submission in submissions.values()
                      for job in submission.get('jobs', [])})
    if not job_ids:
      say('No SLURM jobs recorded for this sweep.')
      return
    for submission in submissions.values():
      for job in submission.get('jobs', []):
        # Read by the batch script: no new attempt, no requeue.
        marker = os.path.join(os.path.dirname(job['script']),
                              f'cancelled-{job["job_id"]}')
        with open(marker, 'w') as f:
          f.write(time.strftime('%Y-%m-%d %H:%M:%S\n'))
    queue = cls._queue(job_ids)
    pending = sorted(task for task, state in queue.items()
                     if state in _QUEUED)
    running = sorted(task for task, state in queue.items()
                     if state in _RUNNING)
    if pending:
      subprocess.run(['scancel', *pending], check=False)
      say(f'Cancelled {len(pending)} queued runs: {" ".join(pending)}')
    if running:
      # The batch shell passes SIGTERM on without requeueing.
      subprocess.run(['scancel', '--batch', '--signal=TERM', *running],
                     check=False)  # the shell's trap signals the run
      say(f'Sent SIGTERM to {len(running)} running runs (they save and '
          f'stop): {" ".join(running)}')
    if not pending and not running:
      say('No run of this sweep is queued or running.')
