"""The local back end: a sweep's runs as processes on this machine.

`--parallel=N` runs at a time, each in a slot of its own devices: on a
GPU host, disjoint CUDA_VISIBLE_DEVICES slices (`--gpus_per_run`, default
all GPUs split evenly over the slots); on CPUs, one run per slot. Each
run's output goes to `LOG_DIR/<name>.log` (appended across attempts). A
failing run does not stop the others.

The launcher stays in the foreground until the runs end. SIGINT (Ctrl-C)
or SIGTERM stops it cleanly: no new run starts, the running ones get
SIGTERM, save a checkpoint and exit (status `preempted`), and `resume`
continues them. The children run in sessions of their own (so a Ctrl-C
in the terminal reaches the launcher only) and get SIGTERM if the launcher
dies without cleaning up (Linux's parent-death signal), so no trainer is
left orphaned.

A cooldown branch (`sweep.branches`) starts once its trunk's checkpoint at
the branch step exists; until then the slots take other runs.

`ProcessRunner` is shared with the TPU VM back end, whose slots are VMs.
"""

import ctypes
import dataclasses
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from absl import flags

from vit_jax import layout
from vit_jax import workdir as workdir_lib
from vit_jax.launch import failure

_PARALLEL = flags.DEFINE_integer(
    'parallel', 1, 'local: how many runs at a time.')
_GPUS_PER_RUN = flags.DEFINE_integer(
    'gpus_per_run', None, 'local: GPUs per run (CUDA_VISIBLE_DEVICES '
    'slices); default: the visible GPUs split evenly over --parallel slots.')

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
  """In the child: SIGTERM when the launcher dies (Linux; else nothing)."""
  try:
    libc = ctypes.CDLL('libc.so.6', use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
  except (OSError, AttributeError):
    pass


def outcome(returncode: int) -> str:
  if returncode == 0:
    return 'done'
  if returncode == layout.EXIT_PREEMPTED:
    return 'preempted'
  if returncode < 0:
    return f'killed by signal {-returncode}'
  return f'failed (exit status {returncode})'


@dataclasses.dataclass
class Slot:
  """Where a run goes: a name, environment additions, a command wrapper
  and how to stop a run started there."""
  name: str
  env: Dict[str, str]
  command: Callable[[Mapping[str, Any]], List[str]]
  stop: Optional[Callable[[Mapping[str, Any], subprocess.Popen], None]] = None


class ProcessRunner:
  """Runs a list of runs over slots, one run per slot at a time."""

  def __init__(self, slots: Sequence[Slot], log_dir: str, cwd: str,
               say: Callable[[str], None] = print,
               fits: Callable[[Mapping[str, Any], Slot], bool] = (
                   lambda run, slot: True)):
    """`fits(run, slot)`: whether the run may go to that slot (the TPU VM
    back end's per-run `tpu_names`)."""
    self._slots = list(slots)
    self._fits = fits
    self._log_dir = log_dir
    self._cwd = cwd
    self._say = say
    self._stopping = False

  def _stop_all(self, running) -> None:
    for slot, run, process, *_ in running.values():
      if process.poll() is None:
        if slot.stop is not None:
          slot.stop(run, process)
        else:
          process.send_signal(signal.SIGTERM)

  @staticmethod
  def _startable(run, queue, running) -> bool:
    """A run without a trunk, or a branch whose trunk's checkpoint
    exists, or whose trunk is neither queued nor running here (then the
    branch starts and says what is missing)."""
    after = run.get('after')
    if not after:
      return True
    # checkpoint imports JAX: only a launcher with branches to start pays.
    from vit_jax import checkpoint  # pylint: disable=g-import-not-at-top
    if checkpoint.has_step(layout.checkpoint_dir(after['workdir']),
                           after['step']):
      return True
    waiting = {r['name'] for r in queue} | {
        entry[1]['name'] for entry in running.values()}
    return after['run'] not in waiting

  def run(self, runs: Sequence[Mapping[str, Any]]) -> Dict[str, int]:
    """Runs them all (or until SIGINT / SIGTERM); {name: exit status}."""
    os.makedirs(self._log_dir, exist_ok=True)
    queue = list(runs)
    free = list(self._slots)
    running: Dict[int, tuple] = {}
    results: Dict[str, int] = {}
    for run in list(queue):  # e.g. its only TPU VM failed its setup
      if not any(self._fits(run, slot) for slot in self._slots):
        self._say(f'{run["name"]}: not started, no slot here fits its '
                  f'resources ({run.get("resources")}).')
        queue.remove(run)
        results[run['name']] = layout.EXIT_FAILED

    def on_signal(signum, frame):
      del frame
      if not self._stopping:
        self._say(f'Stopping on {signal.Signals(signum).name}: the running '
                  f'runs save and stop; `resume` continues the sweep.')
      self._stopping = True
      self._stop_all(running)

    previous = {sig: signal.signal(sig, on_signal)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
      while (queue and not self._stopping) or running:
        while queue and free and not self._stopping:
          ready = [(run, slot) for run in queue
                   if self._startable(run, queue, running)
                   for slot in free if self._fits(run, slot)]
          if not ready:
            break  # branches wait for their trunks' checkpoints, runs for
            # the slots they fit
          run, slot = ready[0]
          free.remove(slot)
          queue.remove(run)
          log_path = os.path.join(self._log_dir, f'{run["name"]}.log')
          log = open(log_path, 'ab')
          log.write(f'\n=== {time.strftime("%Y-%m-%d %H:%M:%S")} '
                    f'{socket.gethostname()} slot {slot.name} ===\n'.encode())
          log.flush()
          process = subprocess.Popen(
              slot.command(run), cwd=self._cwd, stdout=log,
              stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
              env={**os.environ, 'PYTHONUNBUFFERED': '1', **slot.env},
              start_new_session=True,
              preexec_fn=_die_with_parent)
          running[process.pid] = (slot, run, process, log, time.time(),
                                  log_path)
          self._say(f'started {run["name"]} ({slot.name}; log {log_path})')
        time.sleep(0.2)
        for pid, (slot, run, process, log, start, log_path) in list(
            running.items()):
          code = process.poll()
          if code is None:
            continue
          log.close()
          failure.record(run['workdir'], code, log_path, start)
          del running[pid]
          free.append(slot)
          results[run['name']] = code
          self._say(f'{run["name"]}: {outcome(code)}')
    finally:
      for sig, handler in previous.items():
        signal.signal(sig, handler)
    return results


def visible_gpus() -> List[str]:
  """The GPUs this process may use: CUDA_VISIBLE_DEVICES, else nvidia-smi."""
  if 'CUDA_VISIBLE_DEVICES' in os.environ:
    return [g for g in os.environ['CUDA_VISIBLE_DEVICES'].split(',')
            if g.strip() and g.strip() != '-1']
  try:
    listing = subprocess.run(['nvidia-smi', '-L'], capture_output=True,
                             text=True, timeout=30, check=True).stdout
  except (OSError, subprocess.SubprocessError):
    return []
  return [str(i) for i, line in enumerate(listing.splitlines())
          if line.startswith('GPU ')]


def device_slots(parallel: int, gpus: Sequence[str],
                 gpus_per_run: Optional[int]) -> List[Dict[str, str]]:
  """The environment of each slot: disjoint GPU slices, or nothing."""
  if parallel < 1:
    raise ValueError(f'--parallel must be at least 1, got {parallel}.')
  if not gpus:
    if gpus_per_run:
      raise ValueError(f'--gpus_per_run={gpus_per_run}, but no GPU is '
                       f'visible (CUDA_VISIBLE_DEVICES / nvidia-smi).')
    return [{} for _ in range(parallel)]
  per_run = gpus_per_run or len(gpus) // parallel
  if per_run < 1 or per_run * parallel > len(gpus):
    raise ValueError(
        f'{parallel} parallel runs x {per_run or gpus_per_run} GPUs do not '
        f'fit the {len(gpus)} visible GPUs {list(gpus)}; lower --parallel '
        f'or --gpus_per_run.')
  return [{'CUDA_VISIBLE_DEVICES': ','.join(gpus[i * per_run:
                                                  (i + 1) * per_run])}
          for i in range(parallel)]


class LocalBackend:
  """Runs on this machine (see the module docstring)."""

  name = 'local'

  @staticmethod
  def settings_from_flags() -> Dict[str, Any]:
    return {'parallel': _PARALLEL.value, 'gpus_per_run': _GPUS_PER_RUN.value,
            'python': sys.executable}

  @staticmethod
  def check(settings: Mapping[str, Any], sweep_dir: str) -> None:
    del sweep_dir
    device_slots(settings['parallel'], visible_gpus(),
                 settings.get('gpus_per_run'))

  @staticmethod
  def check_resources(settings: Mapping[str, Any],
                      resources: Mapping[str, Any]) -> None:
    """Per-run resources are the schedulers': every run takes a slot here."""
    del settings, resources

  def __init__(self, settings: Mapping[str, Any]):
    self.settings = dict(settings)
    self._envs = device_slots(self.settings['parallel'], visible_gpus(),
                              self.settings.get('gpus_per_run'))

  def describe(self, record, runs, log_dir: str) -> str:
    lines = [f'# local: {len(runs)} runs, {len(self._envs)} at a time, in '
             f'{record["code_dir"]}; logs in {log_dir}']
    if any(run.get('resources') for run in runs):
      lines.append('# the sweep\'s per-run resources are for the SLURM and '
                   'TPU VM back ends: not used here')
    for i, run in enumerate(runs):
      env = self._envs[i % len(self._envs)]
      prefix = ''.join(f'{k}={v} ' for k, v in env.items())
      lines.append(prefix + shell_join(self._command(run)))
    return '\n'.join(lines)

  def _command(self, run) -> List[str]:
    return [self.settings['python'], *run['args']]

  def submit(self, record, runs, log_dir: str) -> Dict[str, Any]:
    del record, runs, log_dir
    return {'host': socket.gethostname(), 'pid': os.getpid()}

  def wait(self, record, runs, log_dir: str, say=print) -> Dict[str, int]:
    slots = [Slot(name=f'slot {i}' + (
        f' CUDA_VISIBLE_DEVICES={env["CUDA_VISIBLE_DEVICES"]}' if env else ''),
                  env=env, command=self._command)
             for i, env in enumerate(self._envs)]
    runner = ProcessRunner(slots, log_dir, record['code_dir'], say)
    return runner.run(runs)

  @staticmethod
  def scheduler_states(record, submissions) -> Dict[str, str]:
    """Runs of a live launcher on this host that have not ended: PENDING."""
    return launcher_states(record, submissions)

  @staticmethod
  def cancel(record, submissions, say=print) -> None:
    cancel_launchers(record, submissions, say)


def _launcher_alive(submission: Mapping[str, Any]) -> bool:
  if submission.get('host') != socket.gethostname() or 'pid' not in submission:
    return False
  return workdir_lib.pid_alive(int(submission['pid']))


def launcher_states(record, submissions) -> Dict[str, str]:
  del record
  return {name: 'PENDING' for name, submission in submissions.items()
          if _launcher_alive(submission)}


def cancel_launchers(record, submissions, say=print) -> List[int]:
  """SIGTERM to the live launchers of this sweep on this host (they pass
  it to their runs), then to any trainer of the sweep still holding its
  workdir on this host (a launcher killed without cleaning up)."""
  pids = sorted({int(s['pid']) for s in submissions.values()
                 if _launcher_alive(s)})
  for pid in pids:
    os.kill(pid, signal.SIGTERM)
    say(f'Sent SIGTERM to launcher pid {pid}.')
  signalled = []
  deadline = time.time() + 10
  for run in record['runs']:
    holder = workdir_lib.lock_holder(run['workdir'])
    while (holder and pids and time.time() < deadline and
           holder.get('host') == socket.gethostname()):
      time.sleep(0.5)  # the launcher is passing the signal on
      holder = workdir_lib.lock_holder(run['workdir'])
    if holder and holder.get('host') == socket.gethostname():
      try:
        os.kill(int(holder['pid']), signal.SIGTERM)
        signalled.append(int(holder['pid']))
        say(f'Sent SIGTERM to the trainer of {run["name"]} '
            f'(pid {holder["pid"]}).')
      except ProcessLookupError:
        pass
  return pids + signalled


def shell_join(args: Sequence[str]) -> str:
  return ' '.join(shlex.quote(a) for a in args)
