"""The Cloud TPU VM back end: runs on existing TPU VMs through `gcloud`.

Every run is multi-host JAX on all workers of a VM, started detached and
watched by polling, so a dropped SSH connection does not end it: the
run's process here is `tpu_vm_watch` (see it for the remote commands),
which runs

    gcloud compute tpus tpu-vm ssh VM --zone=Z [--project=P] --worker=all \
        [--tpu_ssh_flags] --command='mkdir RUNS/<run>/<attempt> && ... \
        (setsid nohup bash run.sh > log 2>&1 < /dev/null &)'

(`run.sh`: `cd CODE && PYTHON -m vit_jax.main ...`, then its exit status
to a file), returns at once, and every `--tpu_poll_seconds` asks the
workers with a short ssh whether the trainer still runs, until every
worker has an exit status; a failed poll is retried, `--tpu_poll_failures`
in a row give up (status 1; the trainers may still run). The workers'
logs stay in RUNS/<run>/<attempt>/log, their tails copied into the run's
log here when it ends. `jax.distributed` finds the other workers itself
(`vit_jax.cli`).
Runs go in sequence on each VM of `--tpu_names`, the VMs in parallel
(one slot per VM; a sweep on one VM runs one run after the other); a run
whose resources name `tpu_names` (the sweep's `resources`) goes only to
those VMs (a larger slice for a larger model).
Before its first run, each VM gets the code: a tarball of the checkout's
tracked files (as they are in the working tree), copied with
`gcloud compute tpus tpu-vm scp --worker=all`, unpacked into the code dir
(`--tpu_code_dir`; default one per sweep, vit_jax_sweeps/<sweep dir
name>-<hash of the sweep dir>, so sweeps of different code do not
overwrite each other; RUNS is <code dir>-runs), then `--tpu_setup` runs
there (default: the checkout's `launch/tpu_vm_setup.sh`, which installs
the requirements and the TPU runtime matching their jax).
`--tpu_ssh_flags` go to every gcloud ssh and scp (e.g.
`--tunnel-through-iap`, `--internal-ip`).

Spot / preemptible VMs: with `--tpu_queued_resources`, each VM is the
node of a queued resource of its name, created when missing (`gcloud
compute tpus queued-resources create VM --node-id=VM
--accelerator-type=T --runtime-version=R [--spot]`) and waited for until
ACTIVE before the code goes there. When a poll fails or finds a worker's
trainer gone and `queued-resources describe` says the VM is SUSPENDED /
FAILED / PREEMPTED / not found, the run's watch deletes it (`--force`),
creates it again, copies and sets up the code again and restarts the run
in a new attempt folder; the trainer resumes from its last checkpoint
(`MAX_RESTARTS` preemptions per run at most).

Workdirs must be on cloud storage (`gs://`): every worker writes there
and `status` reads them from here. Stopping (Ctrl-C / SIGTERM to the
launcher, or `cancel`) reaches each run's watch, which sends `pkill
-TERM` of the run's trainer to every worker (again until an ssh gets
through) and waits for it to save and exit; `resume` continues. A
launcher that dies takes its watches down the same way (they get SIGTERM,
`local`'s parent-death signal), so no trainer runs on unwatched; its
machine losing power or network leaves the trainers running, and
`cancel` stops them (pkill on every VM).
"""

import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from typing import Any, Dict, List, Mapping, Optional

from absl import flags

from vit_jax import paths
from vit_jax import workdir as workdir_lib
from vit_jax.launch import local
from vit_jax.launch import record as record_lib
from vit_jax.launch import tpu_vm_watch

_NAMES = flags.DEFINE_list('tpu_names', [], 'tpu_vm: the TPU VMs (existing, '
                           'or queued resources\' nodes) to run on.')
_ZONE = flags.DEFINE_string('tpu_zone', None, 'tpu_vm: the VMs\' zone.')
_PROJECT = flags.DEFINE_string('tpu_project', None, 'tpu_vm: the Google '
                               'Cloud project (default: gcloud\'s).')
_CODE_DIR = flags.DEFINE_string(
    'tpu_code_dir', '', 'tpu_vm: where the code goes on the workers '
    '(relative: to the home directory); default: one folder per sweep, '
    'vit_jax_sweeps/<sweep dir name>-<hash of the sweep dir>, so sweeps '
    'of different code do not overwrite each other. Each run\'s folders '
    '(log, pid, exit status) go to <code dir>-runs/<run>/<attempt>.')
_PYTHON = flags.DEFINE_string('tpu_python', 'python3', 'tpu_vm: the Python '
                              'on the workers.')
_SETUP = flags.DEFINE_string(
    'tpu_setup', 'bash launch/tpu_vm_setup.sh {python}',
    'tpu_vm: a shell command run in the code dir on every worker after the '
    'code is copied (empty: none); {python} is --tpu_python. The default '
    'runs the checkout\'s launch/tpu_vm_setup.sh: the requirements and the '
    'TPU runtime of the installed jax.')
_ALLOW_LOCAL = flags.DEFINE_bool(
    'tpu_allow_local_sweep_dir', False, 'tpu_vm: accept a local --sweep_dir '
    '(only when the workers share this machine\'s disk, as in tests).')

# Polling defaults: the flags', and a sweep's recorded before they existed.
DEFAULTS = {'poll_seconds': 30.0, 'poll_failures': 20}

_SSH_FLAGS = flags.DEFINE_string(
    'tpu_ssh_flags', '', 'tpu_vm: more flags for every `gcloud compute tpus '
    'tpu-vm ssh` and `scp`, split as the shell does, e.g. '
    '\'--tunnel-through-iap\' or \'--internal-ip\'.')
_POLL_SECONDS = flags.DEFINE_float(
    'tpu_poll_seconds', DEFAULTS['poll_seconds'], 'tpu_vm: runs start '
    'detached on the workers (a dropped SSH connection does not end them); '
    'the launcher asks '
    'every this many seconds whether they still run.')
_POLL_FAILURES = flags.DEFINE_integer(
    'tpu_poll_failures', DEFAULTS['poll_failures'], 'tpu_vm: this many '
    'failed polls of a run in a row (ssh errors, no answer) end its watch '
    'as failed (the trainers may still run: `cancel` stops them); fewer '
    'are retried.')

_QUEUED = flags.DEFINE_bool(
    'tpu_queued_resources', False, 'tpu_vm: each VM of --tpu_names is the '
    'node of a queued resource of the same name, which the launcher creates '
    'when missing (gcloud compute tpus queued-resources create, with '
    '--tpu_accelerator_type, --tpu_runtime_version, --tpu_spot) and, when '
    'it is preempted (SUSPENDED, FAILED, ...), deletes, creates again and '
    'sets up; the run then restarts and resumes from its last checkpoint.')
_ACCELERATOR = flags.DEFINE_string(
    'tpu_accelerator_type', None, 'tpu_vm, --tpu_queued_resources: the '
    'TPU type of the VMs it creates, e.g. v4-32.')
_RUNTIME = flags.DEFINE_string(
    'tpu_runtime_version', None, 'tpu_vm, --tpu_queued_resources: their '
    'software version, e.g. tpu-ubuntu2204-base.')
_SPOT = flags.DEFINE_bool(
    'tpu_spot', False, 'tpu_vm, --tpu_queued_resources: create spot VMs '
    '(cheaper, preemptible: the launcher creates them again).')

TARBALL = 'vit_jax_code.tar.gz'
MAX_RESTARTS = 20  # preemptions of one run's VM before its watch gives up


def _get(settings: Mapping[str, Any], key: str) -> Any:
  """A setting; its default for a sweep recorded before it existed."""
  value = settings.get(key)
  return DEFAULTS[key] if value is None else value


def _gcloud(settings: Mapping[str, Any], verb: str, *args: str) -> List[str]:
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, *args,
             f'--zone={settings["zone"]}', '--worker=all']
  if settings.get('project'):
    command.append(f'--project={settings["project"]}')
  return command + shlex.split(settings.get('ssh_flags') or '')


def ssh(settings: Mapping[str, Any], name: str, remote: str) -> List[str]:
  return _gcloud(settings, 'ssh', name, f'--command={remote}')


def sweep_dir_of(record: Mapping[str, Any]) -> str:
  """The sweep directory: a run's workdir is SWEEP_DIR/<its name>."""
  run = record['runs'][0]
  return run['workdir'][:-len(run['name'])].rstrip('/')


def code_dir(settings: Mapping[str, Any], record: Mapping[str, Any]) -> str:
  """--tpu_code_dir, or the sweep's own folder on the workers."""
  if settings.get('code_dir'):
    return settings['code_dir']
  sweep_dir = sweep_dir_of(record)
  base = re.sub(r'[^A-Za-z0-9._=,+-]', '_',
                sweep_dir.rstrip('/').rsplit('/', 1)[-1]) or 'sweep'
  digest = hashlib.sha1(sweep_dir.encode()).hexdigest()[:8]
  return f'vit_jax_sweeps/{base}-{digest}'


def runs_dir(settings: Mapping[str, Any], record: Mapping[str, Any]) -> str:
  return code_dir(settings, record).rstrip('/') + '-runs'


def trainer_command(settings: Mapping[str, Any],
                    run: Mapping[str, Any]) -> str:
  """The trainer's command line on every worker (run in the code dir)."""
  return local.shell_join([settings['python'], *run['args']])


def stop_command(run: Mapping[str, Any]) -> str:
  """pkill of the run's trainer by its workdir (the escaped pattern does
  not match this command's own shell)."""
  pattern = re.escape('vit_jax.main ') + '.*' + re.escape(
      f'--workdir={run["workdir"]}') + '( |$)'
  return f'pkill -TERM -f {shlex.quote(pattern)} || true'


def watch_spec(settings: Mapping[str, Any], record: Mapping[str, Any],
               name: str, run: Mapping[str, Any],
               attempt: str) -> Dict[str, Any]:
  """What `tpu_vm_watch` needs to start and watch `run` on VM `name`."""
  attempt_dir = f'{runs_dir(settings, record)}/{run["name"]}/{attempt}'
  return {
      'run': run['name'], 'vm': name, 'attempt_dir': attempt_dir,
      'ssh': _gcloud(settings, 'ssh', name),
      'start': tpu_vm_watch.start_command(
          attempt_dir, code_dir(settings, record),
          trainer_command(settings, run)),
      'poll': tpu_vm_watch.poll_command(attempt_dir),
      'stop': stop_command(run),
      'poll_seconds': _get(settings, 'poll_seconds'),
      'max_failures': _get(settings, 'poll_failures'),
      'start_seconds': 300,
      # what a restart on a re-created VM needs
      'code_dir': code_dir(settings, record),
      'trainer': trainer_command(settings, run),
      'queued': queued_commands(settings, name),
      'setup': [], 'max_restarts': 0, 'create_seconds': 86400,
  }


def queued_commands(settings: Mapping[str, Any],
                    name: str) -> Optional[Dict[str, Any]]:
  """The gcloud commands of VM `name`'s queued resource (same name), or
  None without --tpu_queued_resources."""
  if not settings.get('queued_resources'):
    return None
  where = [f'--zone={settings["zone"]}']
  if settings.get('project'):
    where.append(f'--project={settings["project"]}')
  base = ['gcloud', 'compute', 'tpus', 'queued-resources']
  create = [*base, 'create', name, f'--node-id={name}', *where,
            f'--accelerator-type={settings["accelerator_type"]}',
            f'--runtime-version={settings["runtime_version"]}']
  if settings.get('spot'):
    create.append('--spot')
  return {'name': name, 'create': create,
          'describe': [*base, 'describe', name, *where,
                       '--format=value(state.state)'],
          'delete': [*base, 'delete', name, *where, '--force', '--quiet']}


def setup_commands(settings: Mapping[str, Any], record: Mapping[str, Any],
                   name: str, tarball: str) -> List[List[str]]:
  where = code_dir(settings, record)
  where = shlex.quote(where)
  remote = (f'mkdir -p {where} && tar xzf {TARBALL} -C {where}')
  if settings.get('setup'):
    remote += (f' && cd {where} && ' +
               settings['setup'].format(python=settings['python']))
  return [_gcloud(settings, 'scp', tarball, f'{name}:{TARBALL}'),
          ssh(settings, name, remote)]


def code_tarball(code_dir: str, path: str) -> str:
  """The checkout's tracked files, as in the working tree, in a tarball."""
  files = record_lib.tracked_files(
      code_dir, 'the TPU VM back end copies its tracked files')
  with tarfile.open(path, 'w:gz') as tar:
    for name in files:
      tar.add(os.path.join(code_dir, name), arcname=name)
  return path


class TpuVmBackend:
  """Runs on TPU VMs through gcloud (see the module docstring)."""

  name = 'tpu_vm'

  @staticmethod
  def settings_from_flags() -> Dict[str, Any]:
    return {'names': list(_NAMES.value), 'zone': _ZONE.value,
            'project': _PROJECT.value, 'code_dir': _CODE_DIR.value,
            'python': _PYTHON.value, 'setup': _SETUP.value,
            'allow_local_sweep_dir': _ALLOW_LOCAL.value,
            'ssh_flags': _SSH_FLAGS.value,
            'poll_seconds': _POLL_SECONDS.value,
            'poll_failures': _POLL_FAILURES.value,
            'queued_resources': _QUEUED.value,
            'accelerator_type': _ACCELERATOR.value,
            'runtime_version': _RUNTIME.value, 'spot': _SPOT.value}

  @staticmethod
  def check(settings: Mapping[str, Any], sweep_dir: str) -> None:
    if not settings['names']:
      raise ValueError('--tpu_names is required for --backend=tpu_vm: the '
                       'TPU VMs to run on.')
    if not settings['zone']:
      raise ValueError('--tpu_zone is required for --backend=tpu_vm.')
    if paths.is_local(sweep_dir) and not settings.get('allow_local_sweep_dir'):
      raise ValueError(
          f'--sweep_dir={sweep_dir} is local, but TPU VM workers write the '
          f'workdirs: use cloud storage, e.g. --sweep_dir=gs://BUCKET/DIR.')
    try:
      extra = shlex.split(settings.get('ssh_flags') or '')
    except ValueError as error:
      raise ValueError(f'--tpu_ssh_flags={settings["ssh_flags"]!r} does not '
                       f'split into flags ({error}); valid: flags of gcloud '
                       f'compute tpus tpu-vm ssh, e.g. '
                       f'\'--tunnel-through-iap --internal-ip\'.') from None
    if extra and not extra[0].startswith('--'):
      raise ValueError(f'--tpu_ssh_flags={settings["ssh_flags"]!r} must '
                       f'start with a flag ({extra[0]!r} is none); valid: '
                       f'flags of gcloud compute tpus tpu-vm ssh, e.g. '
                       f'\'--tunnel-through-iap --internal-ip\'.')
    if not _get(settings, 'poll_seconds') > 0:
      raise ValueError(f'--tpu_poll_seconds={settings["poll_seconds"]} must '
                       f'be positive.')
    if _get(settings, 'poll_failures') < 1:
      raise ValueError(f'--tpu_poll_failures={settings["poll_failures"]} '
                       f'must be at least 1.')
    if settings.get('queued_resources'):
      missing = [f'--tpu_{key}' for key in ('accelerator_type',
                                             'runtime_version')
                 if not settings.get(key)]
      if missing:
        raise ValueError(f'--tpu_queued_resources creates the VMs: give '
                         f'{" and ".join(missing)} (e.g. v4-32, '
                         f'tpu-ubuntu2204-base).')
    elif settings.get('spot'):
      raise ValueError('--tpu_spot is for VMs the launcher creates: add '
                       '--tpu_queued_resources.')

  @staticmethod
  def check_resources(settings: Mapping[str, Any],
                      resources: Mapping[str, Any]) -> None:
    """A run's `tpu_names` must be among --tpu_names (else it never runs)."""
    names = resources.get('tpu_names')
    if names is None:
      return
    unknown = [name for name in names if name not in settings['names']]
    if not names or unknown:
      raise ValueError(f'resources tpu_names={names} must name VMs of '
                       f'--tpu_names={",".join(settings["names"])}.')

  @staticmethod
  def _fits(run: Mapping[str, Any], vm: str) -> bool:
    names = (run.get('resources') or {}).get('tpu_names')
    return not names or vm in names

  def __init__(self, settings: Mapping[str, Any]):
    self.settings = dict(settings)

  def describe(self, record, runs, log_dir: str) -> str:
    names = self.settings['names']
    where = code_dir(self.settings, record)
    poll = _get(self.settings, 'poll_seconds')
    lines = [f'# tpu_vm: {len(runs)} runs on {len(names)} VMs '
             f'({", ".join(names)}), in sequence on each; logs in {log_dir}',
             f'# on each VM, once: {TARBALL} = the tracked files of '
             f'{record["code_dir"]}, unpacked into '
             f'{tpu_vm_watch.home_path(where)}']
    for name in names:
      queued = queued_commands(self.settings, name)
      if queued:
        lines.append(f'# {name}: a queued resource, created if missing and '
                     f'again when preempted, then waited for until ACTIVE:')
        lines.append(local.shell_join(queued['create']))
      for command in setup_commands(self.settings, record, name, TARBALL):
        lines.append(local.shell_join(command))
    lines.append(f'# each run starts detached on every worker (ATTEMPT: a '
                 f'new folder per attempt), then is polled every {poll:g} s '
                 f'until it ends; a dropped connection does not stop it')
    for i, run in enumerate(runs):
      fitting = [n for n in names if self._fits(run, n)]
      name = fitting[i % len(fitting)]
      if len(fitting) < len(names):
        lines.append(f'# {run["name"]}: on {", ".join(fitting)} only')
      spec = watch_spec(self.settings, record, name, run, 'ATTEMPT')
      lines.append(f'# {run["name"]} on {name}: in '
                   f'{tpu_vm_watch.home_path(where)}, detached, output in '
                   f'{tpu_vm_watch.home_path(spec["attempt_dir"])}/log: '
                   f'{trainer_command(self.settings, run)}')
      lines.append(local.shell_join([*spec['ssh'],
                                     f'--command={spec["start"]}']))
    return '\n'.join(lines)

  def submit(self, record, runs, log_dir: str) -> Dict[str, Any]:
    del record, runs, log_dir
    import socket  # pylint: disable=g-import-not-at-top
    return {'host': socket.gethostname(), 'pid': os.getpid(),
            'vms': list(self.settings['names'])}

  def _setup(self, record, log_dir: str, tarball: str, say) -> List[str]:
    """Copies the code to every VM (created first with queued resources);
    returns the VMs that are ready."""
    ready = []
    for name in self.settings['names']:
      log_path = os.path.join(log_dir, f'setup-{name}.log')
      queued = queued_commands(self.settings, name)
      if queued and not tpu_vm_watch.ensure_active(
          queued, say, _get(self.settings, 'poll_seconds'), 86400):
        say(f'{name}: its queued resource is not ACTIVE; no runs go there.')
        continue
      with open(log_path, 'ab') as log:
        ok = all(subprocess.run(command, stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL).returncode == 0
                 for command in setup_commands(self.settings, record, name,
                                               tarball))
      if ok:
        ready.append(name)
      else:
        say(f'Setting up {name} failed (see {log_path}); no runs go '
            f'there.')
    return ready

  def _watch_command(self, record, log_dir: str, tarball: str, name: str,
                     run: Mapping[str, Any]) -> List[str]:
    """The run's process here: a `tpu_vm_watch` of a fresh attempt (its
    spec in a file: a pkill by the trainer's command line must not match
    the watch)."""
    attempt = time.strftime('%Y%m%d-%H%M%S-') + uuid.uuid4().hex[:6]
    spec = watch_spec(self.settings, record, name, run, attempt)
    if spec['queued']:  # a preempted VM comes back bare: set it up again
      spec.update(setup=setup_commands(self.settings, record, name, tarball),
                  max_restarts=MAX_RESTARTS)
    path = os.path.join(log_dir, 'watch', f'{run["name"]}.json')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
      json.dump(spec, f, indent=1)
    return [sys.executable, '-m', 'vit_jax.launch.tpu_vm_watch', path]

  def wait(self, record, runs, log_dir: str,
           say=print) -> Optional[Dict[str, int]]:
    os.makedirs(log_dir, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
      tarball = code_tarball(record['code_dir'], os.path.join(tmp, TARBALL))
      ready = self._setup(record, log_dir, tarball, say)
      if not ready:
        return {run['name']: 1 for run in runs}
      # A slot's process is the run's watch: SIGTERM to it (Ctrl-C,
      # cancel) sends the pkill to the workers and waits for the trainers
      # to save.
      slots = [local.Slot(
          name=name, env={},
          command=lambda run, name=name: self._watch_command(
              record, log_dir, tarball, name, run)) for name in ready]
      return local.ProcessRunner(
          slots, log_dir, record['code_dir'], say,
          fits=lambda run, slot: self._fits(run, slot.name)).run(runs)

  @staticmethod
  def scheduler_states(record, submissions) -> Dict[str, str]:
    return local.launcher_states(record, submissions)

  @classmethod
  def cancel(cls, record, submissions, say=print) -> None:
    """SIGTERM to a live launcher here; else pkill on the VMs."""
    if local.cancel_launchers(record, submissions, say):
      return
    latest = list(submissions.values())[-1] if submissions else {}
    backend = cls(latest.get('settings', record['settings']))
    for run in record['runs']:
      if workdir_lib.lock_holder(run['workdir']) is None:
        continue
      for name in backend.settings['names']:
        subprocess.run(ssh(backend.settings, name, stop_command(run)),
                       stdin=subprocess.DEVNULL, capture_output=True)
      say(f'Sent SIGTERM to the trainers of {run["name"]} on '
          f'{", ".join(backend.settings["names"])}.')
