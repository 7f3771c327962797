"""A real one-node SLURM cluster for tests: munged, slurmctld and slurmd
started in a private directory, with their own key, socket, ports, state and
logs, and stopped again.

    with SlurmCluster() as cluster:
      job_id = cluster.sbatch('#!/bin/bash\\necho hi\\n', '--output=/tmp/o')
      cluster.run('squeue', '-h', '-j', job_id)

Client commands (sbatch, squeue, scontrol, scancel, sinfo) reach this
cluster through `cluster.env`, which holds the variables to add to the
environment (`SLURM_CONF`); `cluster.run` and `cluster.sbatch` add them.
The munge socket is named in slurm.conf (`AuthInfo=socket=...`), so no
other variable is needed. Jobs run as the submitting user (root here) and
inherit the submitter's environment, SLURM_CONF included, so `scontrol` and
`sbatch` called from inside a job reach the same cluster.

The node declares `cpus` CPUs (default: the machine's, at least 8) whatever
the machine has (`SlurmdParameters=config_overrides`), so that several
1-CPU jobs run side by side on a small machine; consumable resources are
cores (`select/cons_tres`, `CR_Core`), memory is not scheduled.

Finished jobs stay in slurmctld's memory, visible to `scontrol show job` and
`squeue -t all`, for `min_job_age` seconds (default 300) and up to a minute
more (slurmctld purges old jobs once a minute); then both commands answer
"Invalid job id specified".

A requeued job waits `cred_expire` + 1 seconds (default 5 + 1; SLURM's
default is 121) before it may run again: `AuthInfo=cred_expire`.

Every cluster lives in its own directory under `base_dir` (default
`$TMPDIR/vit_jax_slurm`; munged wants it and every directory above it
searchable by all, so not pytest's tmp_path), with an `owner` file naming
the process that started it. Starting a cluster first removes the
directories of owners that have died, killing their daemons (by pid file)
and their jobs (processes whose environment names that directory), so a
test run that was killed leaves nothing behind for the next one; clusters
of live owners (another pytest-xdist worker, another checkout) are left
alone, and each cluster takes free ports of its own.
"""

import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

# The binaries a cluster needs: Debian's slurm-wlm (slurmctld, slurmd,
# slurm-client) and munge.
DAEMONS = ('munged', 'slurmctld', 'slurmd')
CLIENTS = ('sbatch', 'srun', 'squeue', 'scontrol', 'scancel', 'sinfo')
INSTALL_HINT = 'apt-get install -y slurm-wlm munge'

# A job's states once it ended (squeue's %T).
ENDED = ('COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL',
         'PREEMPTED', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE')

# Variables of a job of another cluster, not passed on.
_JOB_VARIABLES = ('SLURM_', 'SBATCH_', 'SALLOC_', 'SRUN_', 'SQUEUE_',
                  'SCONTROL_', 'SINFO_')

# Processes of a cluster carry this variable (its directory), so that they
# can be found after their pid files are gone.
_MARKER = 'VIT_JAX_SLURM_CLUSTER'


class SlurmUnavailable(RuntimeError):
  """The SLURM or munge binaries are not installed."""


class SlurmStartError(RuntimeError):
  """The daemons did not come up; the message ends with their log tails."""


def _find(name):
  found = shutil.which(name)
  if found is None:
    for directory in ('/usr/sbin', '/sbin', '/usr/local/sbin'):
      candidate = os.path.join(directory, name)
      if os.access(candidate, os.X_OK):
        return candidate
  return found


def missing_binaries():
  """Names of the needed binaries that are not installed (sbin included)."""
  return [name for name in DAEMONS + CLIENTS if _find(name) is None]


def _free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start_time(pid):
  """The kernel's start time of `pid` (to tell it from a reused pid); None
  if it is gone or a zombie."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      fields = f.read().rsplit(')', 1)[1].split()
  except OSError:
    return None
  return None if fields[0] in 'ZX' else fields[19]


def _read_pid(path):
  try:
    return int(pathlib.Path(path).read_text().split()[0])
  except (OSError, ValueError, IndexError):
    return None


def _marked_pids(root):
  """Processes whose environment names the cluster directory `root`:
  daemons (`_MARKER`) and jobs (their SLURM_CONF)."""
  needles = (f'{_MARKER}={root}'.encode(),
             f'SLURM_CONF={root}/slurm.conf'.encode())
  pids = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit() or int(entry) == os.getpid():
      continue
    try:
      with open(f'/proc/{entry}/environ', 'rb') as f:
        environ = f.read().split(b'\0')
    except OSError:
      continue
    if any(needle in environ for needle in needles):
      pids.append(int(entry))
  return pids


def _kill(pids, timeout=2.0):
  """SIGTERM, then SIGKILL what is still there after `timeout` seconds."""
  pids = set(pids)
  for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 2.0)):
    for pid in list(pids):
      try:
        os.kill(pid, sig)
      except ProcessLookupError:
        pids.discard(pid)
      except PermissionError:
        pids.discard(pid)
    deadline = time.monotonic() + wait
    while pids and time.monotonic() < deadline:
      for pid in list(pids):
        if _start_time(pid) is None:
          pids.discard(pid)
      time.sleep(0.05)
    if not pids:
      return


def _tail(path, lines=30):
  try:
    text = pathlib.Path(path).read_text(errors='replace')
  except OSError:
    return f'--- {path}: (none)'
  return f'--- {path}:\n' + '\n'.join(text.splitlines()[-lines:])


def _cleanup_dir(root):
  """Kills what a cluster directory's daemons and jobs left, removes it."""
  root = pathlib.Path(root)
  pids = []
  for name in ('slurmd.pid', 'slurmctld.pid', 'munged.pid'):
    pid = _read_pid(root / name)
    if pid is not None:
      try:
        with open(f'/proc/{pid}/cmdline', 'rb') as f:
          command = os.path.basename(f.read().split(b'\0')[0])
      except OSError:
        continue
      if command in (b'slurmd', b'slurmctld', b'munged'):
        pids.append(pid)
  _kill(set(pids) | set(_marked_pids(root)))
  shutil.rmtree(root, ignore_errors=True)


def cleanup_stale(base_dir):
  """Removes the clusters under `base_dir` whose owner process is gone."""
  base_dir = pathlib.Path(base_dir)
  if not base_dir.is_dir():
    return
  for root in base_dir.iterdir():
    if not root.is_dir():
      continue
    try:
      pid, start = (root / 'owner').read_text().split()
      alive = _start_time(int(pid)) == start
    except (OSError, ValueError):
      # No owner file: being created right now, or a wreck. Wrecks are old.
      alive = time.time() - root.stat().st_mtime < 60
    if not alive:
      _cleanup_dir(root)


class SlurmCluster:
  """A one-node cluster; `start()` / `stop()`, or use it as a context.

  Attributes once started: `root` (its directory), `conf` (slurm.conf's
  path), `env` (variables for client commands: {'SLURM_CONF': conf}),
  `node`, `partition`, `cpus`, `max_array_size` (sbatch refuses array
  indices >= this), `min_job_age` (seconds a finished job stays visible),
  `kill_wait` (seconds between SIGTERM and SIGKILL when a job is
  cancelled or runs out of time), `ports` (slurmctld, slurmd).
  """

  def __init__(self, base_dir=None, *, cpus=None, max_array_size=100,
               min_job_age=300, kill_wait=2, cred_expire=5,
               cluster_name='vitjax'):
    self.base_dir = pathlib.Path(
        base_dir or os.path.join(tempfile.gettempdir(), 'vit_jax_slurm'))
    self.cpus = cpus or max(os.cpu_count() or 1, 8)
    self.max_array_size = max_array_size
    self.min_job_age = min_job_age
    self.kill_wait = kill_wait
    self.cred_expire = cred_expire
    self.cluster_name = cluster_name
    self.partition = 'debug'
    self.node = socket.gethostname().split('.')[0]
    self.root = None
    self.conf = None
    self.env = {}
    self.ports = None
    self.munge_socket = None

  # -- client side ----------------------------------------------------------

  def full_env(self, **extra):
    """os.environ with `env` and `extra` added (for subprocess env=), less
    inherited SLURM variables (as if not inside another cluster's job)."""
    inherited = {name: value for name, value in os.environ.items()
                 if not name.startswith(_JOB_VARIABLES)}
    return {**inherited, **self.env, **extra}

  def run(self, *args, check=True, timeout=30, env=None):
    """Runs a client command against this cluster; a CompletedProcess with
    text stdout/stderr. `check` raises with both on a non-zero exit."""
    result = subprocess.run(
        [str(a) for a in args], env=self.full_env(**(env or {})),
        capture_output=True, text=True, timeout=timeout)
    if check and result.returncode:
      raise subprocess.CalledProcessError(
          result.returncode, result.args, result.stdout, result.stderr)
    return result

  def sbatch(self, script, *args, env=None):
    """Submits `script` (its text) with sbatch options `args`; the job id
    (for an array: the array's job id)."""
    result = subprocess.run(
        ['sbatch', '--parsable', *map(str, args)], input=script,
        env=self.full_env(**(env or {})), capture_output=True, text=True,
        timeout=30)
    if result.returncode:
      raise subprocess.CalledProcessError(
          result.returncode, result.args, result.stdout, result.stderr)
    return result.stdout.strip().split(';')[0]

  def states(self, job_id):
    """{'ID' or 'ARRAYID_TASK': 'STATE REASON'} of a job or of an array's
    tasks, finished ones included, while slurmctld knows them (`squeue -t
    all`); {} once purged."""
    result = self.run('squeue', '-h', '-t', 'all', '-j', job_id,
                      '-o', '%i %T %r', check=False)
    return dict(line.split(' ', 1) for line in result.stdout.splitlines())

  def wait_ended(self, job_id, count=1, timeout=60):
    """Waits until the job (or the array's `count` tasks) ended; `states`."""
    deadline = time.monotonic() + timeout
    while True:
      states = self.states(job_id)
      if len(states) == count and all(
          state.split()[0] in ENDED for state in states.values()):
        return states
      if time.monotonic() > deadline:
        raise TimeoutError(f'job {job_id} has not ended after {timeout}s: '
                           f'{states}')
      time.sleep(0.2)

  def cancel_all(self, timeout=60):
    """Cancels every job of this cluster (a requeued one included) and waits
    until none is pending, running or completing, so that a test that
    failed midway leaves the next one an idle node."""
    self.run('scancel', '--user', str(os.getuid()), check=False)
    deadline = time.monotonic() + timeout
    while True:
      listed = self.run('squeue', '-h', '-t', 'all', '-o', '%i %T').stdout
      left = [line for line in listed.splitlines()
              if line.split()[1] not in ENDED]
      if not left:
        return
      if time.monotonic() > deadline:
        raise TimeoutError(f'jobs still there {timeout}s after scancel: '
                           f'{left}')
      self.run('scancel', '--user', str(os.getuid()), check=False)
      time.sleep(0.5)

  def show_job(self, job_id):
    """`scontrol show job`'s fields (JobState, ExitCode, Restarts, ...) of a
    job or array task ('ARRAYID_TASK'); raises once slurmctld purged it."""
    result = self.run('scontrol', '-o', 'show', 'job', job_id)
    return dict(word.split('=', 1) for word in result.stdout.split()
                if '=' in word)

  def log_tails(self, lines=30):
    return '\n'.join(_tail(self.root / name, lines) for name in
                     ('munged.log', 'slurmctld.log', 'slurmd.log'))

  # -- life cycle -----------------------------------------------------------

  def __enter__(self):
    self.start()
    return self

  def __exit__(self, *exc):
    self.stop()

  def start(self, timeout=60):
    missing = missing_binaries()
    if missing:
      raise SlurmUnavailable(
          f'not installed: {", ".join(missing)} ({INSTALL_HINT})')
    self.base_dir.mkdir(parents=True, exist_ok=True)
    cleanup_stale(self.base_dir)
    # Short names: the munge socket's path must fit a sockaddr_un (108).
    self.root = pathlib.Path(tempfile.mkdtemp(prefix='c', dir=self.base_dir))
    # munged wants its socket's directories searchable by all.
    self.root.chmod(0o755)
    owner = f'{os.getpid()} {_start_time(os.getpid())}'
    (self.root / 'owner').write_text(owner)
    try:
      self._start(timeout)
    except BaseException:
      self.stop()
      raise
    return self

  def _start(self, timeout):
    root = self.root
    for sub in ('state', 'spool'):
      (root / sub).mkdir()
    self.conf = root / 'slurm.conf'
    self.env = {'SLURM_CONF': str(self.conf)}
    daemon_env = self.full_env(**{_MARKER: str(root)})

    # munge: its own key, socket, pid, log and seed files.
    key = root / 'munge.key'
    key.touch(mode=0o600)
    key.write_bytes(os.urandom(1024))
    self.munge_socket = root / 'munge.socket'
    self._check(['munged', f'--socket={self.munge_socket}',
                 f'--key-file={key}', f'--pid-file={root}/munged.pid',
                 f'--log-file={root}/munged.log',
                 f'--seed-file={root}/munged.seed'], daemon_env, 'munged')

    self.ports = (_free_port(), _free_port())
    while self.ports[1] == self.ports[0]:
      self.ports = (self.ports[0], _free_port())
    (root / 'plugstack.conf').write_text('')
    self.conf.write_text(self.slurm_conf())

    self._check(['slurmctld', '-f', str(self.conf), '-c', '-i'], daemon_env,
                'slurmctld')
    self._check(['slurmd', '-f', str(self.conf), '-N', self.node, '-c'],
                daemon_env, 'slurmd')
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
      result = self.run('sinfo', '-h', '-N', '-o', '%N %t', check=False)
      state = (result.stdout or result.stderr).strip()
      if result.returncode == 0 and state == f'{self.node} idle':
        return
      for name in ('slurmctld', 'slurmd'):
        pid = _read_pid(root / f'{name}.pid')
        if pid is not None and _start_time(pid) is None:
          raise SlurmStartError(f'{name} died\n' + self.log_tails())
      time.sleep(0.2)
    raise SlurmStartError(
        f'node not idle after {timeout}s (sinfo: {state!r})\n'
        + self.log_tails())

  def _check(self, args, env, name):
    try:
      result = subprocess.run(args, env=env, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
      raise SlurmStartError(f'{name}: {e}\n' + self.log_tails()) from e
    if result.returncode:
      raise SlurmStartError(
          f'{name} exited with {result.returncode}: '
          f'{(result.stdout + result.stderr).strip()}\n' + self.log_tails())

  def slurm_conf(self):
    """The text of slurm.conf."""
    root = self.root
    memory = _real_memory()
    return '\n'.join([
        f'ClusterName={self.cluster_name}',
        f'SlurmctldHost={self.node}(127.0.0.1)',
        f'SlurmctldPort={self.ports[0]}',
        f'SlurmdPort={self.ports[1]}',
        'SlurmUser=root',
        'SlurmdUser=root',
        'AuthType=auth/munge',
        'CredType=cred/munge',
        f'AuthInfo=socket={self.munge_socket},cred_expire={self.cred_expire}',
        f'StateSaveLocation={root}/state',
        f'SlurmdSpoolDir={root}/spool',
        f'SlurmctldPidFile={root}/slurmctld.pid',
        f'SlurmdPidFile={root}/slurmd.pid',
        f'SlurmctldLogFile={root}/slurmctld.log',
        f'SlurmdLogFile={root}/slurmd.log',
        'SlurmctldDebug=info',
        'SlurmdDebug=info',
        f'PlugStackConfig={root}/plugstack.conf',
        'ProctrackType=proctrack/pgid',
        'TaskPlugin=task/none',
        'SwitchType=switch/none',
        'MpiDefault=none',
        'SelectType=select/cons_tres',
        'SelectTypeParameters=CR_Core',
        'SlurmdParameters=config_overrides',
        'AccountingStorageType=accounting_storage/none',
        'JobAcctGatherType=jobacct_gather/none',
        'JobCompType=jobcomp/none',
        'SchedulerType=sched/backfill',
        'SchedulerParameters=sched_interval=1,bf_interval=1',
        'JobRequeue=1',
        f'MaxArraySize={self.max_array_size}',
        f'MinJobAge={self.min_job_age}',
        f'KillWait={self.kill_wait}',
        'ReturnToService=2',
        'InactiveLimit=0',
        'MessageTimeout=10',
        'MailProg=/bin/true',
        f'NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} '
        f'RealMemory={memory} State=UNKNOWN',
        f'PartitionName={self.partition} Nodes={self.node} Default=YES '
        'MaxTime=INFINITE State=UP OverSubscribe=NO',
        '',
    ])

  def stop(self):
    """Cancels the jobs (giving them KillWait), shuts the daemons down,
    kills what is left and removes the directory."""
    if self.root is None:
      return
    if self.conf is not None and self.conf.exists():
      try:
        self.run('scancel', f'--partition={self.partition}', check=False,
                 timeout=10)
        deadline = time.monotonic() + self.kill_wait + 3
        while time.monotonic() < deadline:
          result = self.run('squeue', '-h', check=False, timeout=10)
          if result.returncode or not result.stdout.strip():
            break
          time.sleep(0.2)
        self.run('scontrol', 'shutdown', check=False, timeout=10)
      except (OSError, subprocess.TimeoutExpired):
        pass
    _cleanup_dir(self.root)
    self.root = None
    self.env = {}


def _real_memory():
  """MB of memory, as slurmd counts it."""
  try:
    result = subprocess.run([_find('slurmd') or 'slurmd', '-C'],
                            capture_output=True, text=True, timeout=30)
    for word in result.stdout.split():
      if word.startswith('RealMemory='):
        return int(word.split('=', 1)[1])
  except (OSError, ValueError, subprocess.TimeoutExpired):
    pass
  return os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // 2**20
