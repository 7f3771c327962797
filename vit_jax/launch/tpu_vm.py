"""The Cloud TPU VM back end: runs on existing TPU VMs through `gcloud`.

Every run is multi-host JAX on all workers of a VM: the launcher runs

    gcloud compute tpus tpu-vm ssh VM --zone=Z [--project=P] --worker=all \
        --command='cd CODE && exec PYTHON -m vit_jax.main ...'

and `jax.distributed` finds the other workers itself (`vit_jax.cli`).
Runs go in sequence on each VM of `--tpu_names`, the VMs in parallel
(one slot per VM; a sweep on one VM runs one run after the other); a run
whose resources name `tpu_names` (the sweep's `resources`) goes only to
those VMs (a larger slice for a larger model).
Before its first run, each VM gets the code: a tarball of the checkout's
tracked files (as they are in the working tree), copied with
`gcloud compute tpus tpu-vm scp --worker=all`, unpacked into
`--tpu_code_dir`, then `--tpu_setup` runs there (default: the
checkout's `launch/tpu_vm_setup.sh`, which installs the requirements and
the TPU runtime matching their jax).

Workdirs must be on cloud storage (`gs://`): every worker writes there
and `status` reads them from here. Stopping (Ctrl-C / SIGTERM to the
launcher, or `cancel`) runs `pkill -TERM` of the run's trainer on every
worker, which saves and exits; `resume` continues.
"""

import os
import re
import shlex
import subprocess
import tarfile
import tempfile
from typing import Any, Dict, List, Mapping, Optional

from absl import flags

from vit_jax import paths
from vit_jax import workdir as workdir_lib
from vit_jax.launch import local
from vit_jax.launch import record as record_lib

_NAMES = flags.DEFINE_list('tpu_names', [], 'tpu_vm: the TPU VMs (existing, '
                           'or queued resources\' nodes) to run on.')
_ZONE = flags.DEFINE_string('tpu_zone', None, 'tpu_vm: the VMs\' zone.')
_PROJECT = flags.DEFINE_string('tpu_project', None, 'tpu_vm: the Google '
                               'Cloud project (default: gcloud\'s).')
_CODE_DIR = flags.DEFINE_string('tpu_code_dir', 'vit_jax', 'tpu_vm: where '
                                'the code goes on the workers (relative: '
                                'to the home directory).')
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

TARBALL = 'vit_jax_code.tar.gz'


def _gcloud(settings: Mapping[str, Any], verb: str, *args: str) -> List[str]:
  command = ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, *args,
             f'--zone={settings["zone"]}', '--worker=all']
  if settings.get('project'):
    command.append(f'--project={settings["project"]}')
  return command


def ssh(settings: Mapping[str, Any], name: str, remote: str) -> List[str]:
  return _gcloud(settings, 'ssh', name, f'--command={remote}')


def run_command(settings: Mapping[str, Any], run: Mapping[str, Any]) -> str:
  """The shell command every worker runs for `run`."""
  return (f'cd {settings["code_dir"]} && exec ' +
          local.shell_join([settings['python'], *run['args']]))


def stop_command(run: Mapping[str, Any]) -> str:
  """pkill of the run's trainer by its workdir (the escaped pattern does
  not match this command's own shell)."""
  pattern = re.escape('vit_jax.main ') + '.*' + re.escape(
      f'--workdir={run["workdir"]}') + '( |$)'
  return f'pkill -TERM -f {shlex.quote(pattern)} || true'


def setup_commands(settings: Mapping[str, Any], name: str,
                   tarball: str) -> List[List[str]]:
  code_dir = settings['code_dir']
  remote = (f'mkdir -p {code_dir} && tar xzf {TARBALL} -C {code_dir}')
  if settings.get('setup'):
    remote += (f' && cd {code_dir} && ' +
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
            'allow_local_sweep_dir': _ALLOW_LOCAL.value}

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
    lines = [f'# tpu_vm: {len(runs)} runs on {len(names)} VMs '
             f'({", ".join(names)}), in sequence on each; logs in {log_dir}',
             f'# on each VM, once: {TARBALL} = the tracked files of '
             f'{record["code_dir"]}']
    for name in names:
      for command in setup_commands(self.settings, name, TARBALL):
        lines.append(local.shell_join(command))
    for i, run in enumerate(runs):
      fitting = [n for n in names if self._fits(run, n)]
      name = fitting[i % len(fitting)]
      if len(fitting) < len(names):
        lines.append(f'# {run["name"]}: on {", ".join(fitting)} only')
      lines.append(local.shell_join(
          ssh(self.settings, name, run_command(self.settings, run))))
    return '\n'.join(lines)

  def submit(self, record, runs, log_dir: str) -> Dict[str, Any]:
    del record, runs, log_dir
    import socket  # pylint: disable=g-import-not-at-top
    return {'host': socket.gethostname(), 'pid': os.getpid(),
            'vms': list(self.settings['names'])}

  def _setup(self, code_dir: str, log_dir: str, say) -> List[str]:
    """Copies the code to every VM; returns the VMs that are ready."""
    ready = []
    with tempfile.TemporaryDirectory() as tmp:
      tarball = code_tarball(code_dir, os.path.join(tmp, TARBALL))
      for name in self.settings['names']:
        log_path = os.path.join(log_dir, f'setup-{name}.log')
        with open(log_path, 'ab') as log:
          ok = all(subprocess.run(command, stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL).returncode == 0
                   for command in setup_commands(self.settings, name,
                                                 tarball))
        if ok:
          ready.append(name)
        else:
          say(f'Setting up {name} failed (see {log_path}); no runs go '
              f'there.')
    return ready

  def _stop(self, name: str):
    def stop(run, process):
      subprocess.run(ssh(self.settings, name, stop_command(run)),
                     stdin=subprocess.DEVNULL, capture_output=True)
      del process  # gcloud ssh ends when the trainer does
    return stop

  def wait(self, record, runs, log_dir: str,
           say=print) -> Optional[Dict[str, int]]:
    os.makedirs(log_dir, exist_ok=True)
    ready = self._setup(record['code_dir'], log_dir, say)
    if not ready:
      return {run['name']: 1 for run in runs}
    slots = [local.Slot(
        name=name, env={},
        command=lambda run, name=name: ssh(
            self.settings, name, run_command(self.settings, run)),
        stop=self._stop(name)) for name in ready]
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
