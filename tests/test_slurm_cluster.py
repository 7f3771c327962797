"""What the SLURM launcher relies on, shown on a real one-node cluster (the
`slurm_cluster` fixture, tests/support/slurm_cluster.py: SLURM 22.05, no
accounting, proctrack/pgid, task/none, KillWait 2 s).

Established here:
- Array throttles: `--array=0-2%2` runs every task, never more than 2 at
  once; `%A_%a` in --output names each task's file; the tasks see
  SLURM_ARRAY_JOB_ID (the array's id) and SLURM_ARRAY_TASK_ID. Each task
  has a SLURM_JOB_ID of its own, but for one of them it is the array's id,
  and that id names the whole array: `scontrol requeue $SLURM_JOB_ID` from
  that task requeues every task. A task names itself as
  `${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}`.
- `sbatch` refuses any array index >= MaxArraySize ("Invalid job array
  specification"), a range like 100-199 included: bigger sweeps must be
  split into several arrays whose indices all stay below MaxArraySize (an
  offset added by the job script).
- `scontrol requeue ID` of a running `--requeue` job kills it (SIGTERM,
  SIGKILL after KillWait), holds it PENDING with Reason=BeginTime for the
  credential lifetime + 1 s (AuthInfo cred_expire; 121 s by default), then
  runs it again with SLURM_RESTART_COUNT=1 (unset on the first run). The
  output file is appended to with --open-mode=append, truncated without.
  Requeueing an array's id requeues all its tasks.
- `--signal=B:USR1@N` with `--time`: the batch shell alone (not its
  children) gets USR1 before the limit (slurmctld checks limits about
  every 30 s, so up to ~30 s earlier than N before it), and its trap can
  `scontrol requeue` the job (or task): it runs again instead of timing
  out. bash runs a trap only once its foreground child has exited, so the
  script must start the child in the background and `wait` (in a loop:
  a trapped signal ends `wait`). `--signal=USR1@N` (no `B:`) goes to the
  srun steps' tasks instead.
- Which process a cancel or signal reaches (child = the python program the
  batch script starts, directly or through srun):
    scancel ID                       shell + child (then SIGKILL after
                                     KillWait): the job ends
    scancel --signal=TERM ID         srun tasks only; job goes on
    scancel --signal=TERM --batch    the batch shell only; job goes on
    scancel --signal=TERM --full     the shell and its process group (a
                                     direct child; srun, which then kills
                                     its step with SIGKILL, so an srun
                                     task sees no SIGTERM); job goes on
- A child started directly gets KillWait to save a checkpoint after that
  SIGTERM (plain scancel, requeue, time limit) only if the batch shell
  survives it (`trap '' TERM`, then wait for the child): once the shell
  dies, slurmstepd SIGKILLs the rest of the batch step at once. srun's
  tasks get KillWait either way.
- Job state without accounting: `squeue -h -j ID -o '%i %T %r'` prints the
  job while pending, running or completing and nothing (exit 0) after it
  ended; `squeue -h -t all -j ID` and `scontrol show job ID` show the final
  state (COMPLETED, FAILED with ExitCode, CANCELLED, ...) until slurmctld
  purges the job, MinJobAge to MinJobAge + ~60 s after its end; then both
  exit 1 with "Invalid job id specified".
"""

import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import slurm_cluster as slurm


def _wait(predicate, timeout, what, interval=0.2):
  deadline = time.monotonic() + timeout
  while True:
    value = predicate()
    if value:
      return value
    if time.monotonic() > deadline:
      raise AssertionError(f'timed out after {timeout}s waiting for {what}')
    time.sleep(interval)


def _script(body):
  return '#!/bin/bash\n' + textwrap.dedent(body)


# A python child that logs the signals it gets ("SIGTERM <unix time>") and
# goes on, or exits on the signals named in argv[2:].
CHILD = textwrap.dedent('''\
    import os, signal, sys, time
    log, exit_on = sys.argv[1], sys.argv[2:]
    def handler(signum, frame):
      name = signal.Signals(signum).name
      with open(log, 'a') as f:
        f.write(f'{name} {time.time()}\\n')
      if name in exit_on:
        sys.exit(0)
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
      signal.signal(s, handler)
    with open(log, 'a') as f:
      f.write(f'ready {os.getpid()}\\n')
    deadline = time.time() + 120
    while time.time() < deadline:
      time.sleep(0.1)
    ''')


def _read(path):
  try:
    return pathlib.Path(path).read_text()
  except FileNotFoundError:
    return ''


def _signals(path):
  return [line.split()[0] for line in _read(path).splitlines()
          if line.startswith('SIG')]


def test_cluster_is_up(slurm_cluster):
  assert set(slurm_cluster.env) == {'SLURM_CONF'}
  result = slurm_cluster.run('sinfo', '-h', '-o', '%P %c %t')
  assert result.stdout.split() == [
      f'{slurm_cluster.partition}*', str(slurm_cluster.cpus), 'idle']
  config = slurm_cluster.run('scontrol', 'show', 'config').stdout
  assert f'MaxArraySize            = {slurm_cluster.max_array_size}' in config
  assert f'MinJobAge               = {slurm_cluster.min_job_age} sec' in config


def test_array_throttle_and_output_names(slurm_cluster, tmp_path):
  script = _script('''\
      echo $SLURM_ARRAY_TASK_ID $SLURM_ARRAY_JOB_ID $SLURM_JOB_ID \
          $(date +%s.%N)
      sleep 2
      date +%s.%N
      ''')
  job = slurm_cluster.sbatch(script, '--array=0-2%2', f'--chdir={tmp_path}',
                             f'--output={tmp_path}/%A_%a.out')
  states = slurm_cluster.wait_ended(job, count=3, timeout=60)
  assert states == {f'{job}_{i}': 'COMPLETED None' for i in range(3)}
  intervals, job_ids = [], []
  for task in range(3):
    lines = (tmp_path / f'{job}_{task}.out').read_text().split('\n')
    task_id, array_id, job_id, start = lines[0].split()
    assert (task_id, array_id) == (str(task), job)
    intervals.append((float(start), float(lines[1])))
    job_ids.append(job_id)
  # Each task has a job id of its own, but one of them is the array's id,
  # which names the whole array in scontrol and scancel.
  assert len(set(job_ids)) == 3 and job_ids.count(job) == 1, job_ids
  # The most tasks running at once: 2 (the node has more CPUs).
  assert slurm_cluster.cpus > 2
  most = max(sum(s <= t < e for s, e in intervals) for t, _ in intervals)
  assert most == 2, intervals


def test_array_indices_beyond_max_array_size_are_refused(slurm_cluster):
  size = slurm_cluster.max_array_size
  for spec in (f'0-{size}', f'{size}-{size + 5}', f'{size}'):
    result = slurm_cluster.run('sbatch', f'--array={spec}', '--wrap=true',
                               check=False)
    assert result.returncode == 1, spec
    assert 'Invalid job array specification' in result.stderr, result.stderr
  job = slurm_cluster.sbatch(_script('true\n'), f'--array=0-{size - 1}',
                             '--hold', '--output=/dev/null')
  try:
    assert len(slurm_cluster.states(job)) >= 1
  finally:
    slurm_cluster.run('scancel', job)


def test_requeue_restart_count_and_open_mode(slurm_cluster, tmp_path):
  """Requeued jobs run again with SLURM_RESTART_COUNT=1; their output is
  appended to with --open-mode=append, else truncated. Requeueing an
  array's id requeues all its tasks."""
  script = _script('''\
      echo "run restart=${SLURM_RESTART_COUNT:-unset}"
      if [ -z "$SLURM_RESTART_COUNT" ]; then
        sleep 60
      fi
      ''')
  jobs = {mode: slurm_cluster.sbatch(
      script, '--requeue', f'--chdir={tmp_path}',
      f'--output={tmp_path}/{mode}.out',
      *([f'--open-mode={mode}'] if mode != 'default' else []))
          for mode in ('append', 'default')}
  array = slurm_cluster.sbatch(script, '--requeue', '--array=0-1',
                               '--open-mode=append', f'--chdir={tmp_path}',
                               f'--output={tmp_path}/array_%a.out')
  outputs = ['append.out', 'default.out', 'array_0.out', 'array_1.out']
  for name in outputs:
    _wait(lambda n=name: 'restart=unset' in _read(tmp_path / n), 30,
          f'{name} to start')
  requeued = time.monotonic()
  for job in (*jobs.values(), array):
    slurm_cluster.run('scontrol', 'requeue', job)
  # Held for cred_expire + 1 s, as Reason=BeginTime.
  _wait(lambda: slurm_cluster.states(jobs['append']).get(jobs['append'])
        == 'PENDING BeginTime', 10, 'the requeued job to wait', 0.1)
  for job in jobs.values():
    assert slurm_cluster.wait_ended(job) == {job: 'COMPLETED None'}
    assert slurm_cluster.show_job(job)['Restarts'] == '1'
  assert slurm_cluster.wait_ended(array, count=2) == {
      f'{array}_{i}': 'COMPLETED None' for i in range(2)}
  assert time.monotonic() - requeued >= slurm_cluster.cred_expire

  for name in ('append.out', 'array_0.out', 'array_1.out'):
    appended = (tmp_path / name).read_text()
    assert appended.startswith('run restart=unset\n'), appended
    assert 'DUE TO JOB REQUEUE' in appended
    assert appended.endswith('run restart=1\n'), appended
  assert (tmp_path / 'default.out').read_text() == 'run restart=1\n'


def test_time_limit_signal_lets_the_job_requeue_itself(slurm_cluster,
                                                        tmp_path):
  (tmp_path / 'child.py').write_text(CHILD)
  python = sys.executable
  # B:USR1 reaches the batch shell, whose trap requeues the job: each array
  # task runs twice and ends COMPLETED, not TIMEOUT.
  shell = _script(f'''\
      task=$SLURM_ARRAY_TASK_ID
      log={tmp_path}/shell_$task.log
      echo "start restart=${{SLURM_RESTART_COUNT:-0}} task=$task" \
          "$(date +%s.%N)" >> $log
      [ -n "$SLURM_RESTART_COUNT" ] && exit 0
      # When slurmctld started the job (the shell may start seconds later
      # on a loaded machine): the limit counts from then.
      scontrol -o show job ${{SLURM_ARRAY_JOB_ID}}_$task | tr ' ' '\n' \
          | grep '^StartTime=' > {tmp_path}/started_$task
      on_usr1() {{
        echo "USR1 $(date +%s.%N)" >> $log
        # Not $SLURM_JOB_ID: for one task it is the array's id, which
        # would requeue every task.
        scontrol requeue ${{SLURM_ARRAY_JOB_ID}}_$task
        echo "requeue rc=$?" >> $log
      }}
      trap on_usr1 USR1
      trap '' TERM  # (else the child is killed as soon as the shell dies)
      {python} {tmp_path}/child.py {tmp_path}/child_$task.log &
      child=$!
      while kill -0 $child 2>/dev/null; do wait $child; done
      ''')
  array = slurm_cluster.sbatch(
      shell, '--array=0-1', '--requeue', '--time=1', '--signal=B:USR1@55',
      '--open-mode=append', f'--chdir={tmp_path}',
      f'--output={tmp_path}/%A_%a.out')
  # Without B: the signal reaches srun's tasks (here, exiting on it).
  step = _script(f'''\
      trap 'echo "shell USR1" >> {tmp_path}/step_shell.log' USR1
      srun {python} {tmp_path}/child.py {tmp_path}/step_child.log SIGUSR1
      ''')
  job = slurm_cluster.sbatch(step, '--time=1', '--signal=USR1@55',
                             f'--chdir={tmp_path}',
                             f'--output={tmp_path}/step.out')

  states = slurm_cluster.wait_ended(array, count=2, timeout=100)
  assert states == {f'{array}_{i}': 'COMPLETED None' for i in range(2)}
  for task in range(2):
    log = (tmp_path / f'shell_{task}.log').read_text().splitlines()
    assert [line.split()[0] for line in log] == [
        'start', 'USR1', 'requeue', 'start'], log
    assert log[0].split()[1:3] == ['restart=0', f'task={task}']
    assert log[2] == 'requeue rc=0'
    assert log[3].split()[1:3] == ['restart=1', f'task={task}']
    started = time.mktime(time.strptime(
        (tmp_path / f'started_{task}').read_text().strip().split('=')[1],
        '%Y-%m-%dT%H:%M:%S'))  # whole seconds, local time as slurmctld's
    before_limit = 60 - (float(log[1].split()[1]) - started)
    # No later than 55 s before the limit. slurmctld may send it earlier:
    # under load in CI it came 0.9 s after StartTime, so only "before the
    # limit" is a fact the launcher can rely on.
    assert 0 < before_limit <= 60 + 1, (before_limit, log)
    # The child got no USR1; the requeue sent it SIGTERM.
    assert _signals(tmp_path / f'child_{task}.log') == ['SIGTERM']
    task_id = slurm_cluster.show_job(f'{array}_{task}')
    assert task_id['Restarts'] == '1'
  assert slurm_cluster.wait_ended(job, timeout=30) == {
      job: 'COMPLETED None'}
  assert _signals(tmp_path / 'step_child.log') == ['SIGUSR1']
  assert _read(tmp_path / 'step_shell.log') == ''


# (launch, scancel options) -> (the shell got SIGTERM, the child did, the
# job ended).
SCANCEL = {
    ('direct', ()): (True, True, True),
    ('direct', ('--signal=TERM',)): (False, False, False),
    ('direct', ('--signal=TERM', '--batch')): (True, False, False),
    ('direct', ('--signal=TERM', '--full')): (True, True, False),
    ('srun', ()): (True, True, True),
    ('srun', ('--signal=TERM',)): (False, True, False),
    ('srun', ('--signal=TERM', '--batch')): (True, False, False),
    ('srun', ('--signal=TERM', '--full')): (True, False, False),
}


def test_which_scancel_reaches_the_child(slurm_cluster, tmp_path):
  (tmp_path / 'child.py').write_text(CHILD)
  jobs = {}
  for n, (launch, options) in enumerate(SCANCEL):
    srun = 'srun ' if launch == 'srun' else ''
    script = _script(f'''\
        trap 'echo "SIGTERM $(date +%s.%N)" >> {tmp_path}/shell_{n}.log' TERM
        {srun}{sys.executable} {tmp_path}/child.py {tmp_path}/child_{n}.log &
        child=$!
        while kill -0 $child 2>/dev/null; do wait $child; done
        ''')
    jobs[n] = slurm_cluster.sbatch(script, f'--chdir={tmp_path}',
                                   f'--output={tmp_path}/{n}.out')
  for n in jobs:
    _wait(lambda n=n: 'ready' in _read(tmp_path / f'child_{n}.log'), 30,
          f'job {n} to start')
  for n, (_, options) in enumerate(SCANCEL):
    slurm_cluster.run('scancel', *options, jobs[n])
  time.sleep(2)
  seen = {}
  for n, key in enumerate(SCANCEL):
    state = slurm_cluster.states(jobs[n])[jobs[n]].split()[0]
    seen[key] = (_signals(tmp_path / f'shell_{n}.log') == ['SIGTERM'],
                 _signals(tmp_path / f'child_{n}.log') == ['SIGTERM'],
                 state not in ('RUNNING', 'PENDING'))
  for job in jobs.values():
    slurm_cluster.run('scancel', job)
  assert seen == SCANCEL
  for job in jobs.values():
    slurm_cluster.wait_ended(job, timeout=30)


# A child that takes 1 s to save on SIGTERM, by how the script runs it ->
# whether it saved after a plain scancel (KillWait is 2 s).
SAVE_ON_TERM = {
    # The shell dies on SIGTERM, and slurmstepd SIGKILLs the rest of the
    # batch step at once: no time to save.
    'fg': ('{python} {child} {log}', False),
    'bg_wait': ('{python} {child} {log} &\nwait $!', False),
    # The shell survives SIGTERM and waits: the child has KillWait.
    'trap_wait': ("trap '' TERM\n{python} {child} {log} &\nchild=$!\n"
                  'while kill -0 $child 2>/dev/null; do wait $child; done',
                  True),
    # A step's tasks have KillWait whatever the shell does.
    'srun': ('srun {python} {child} {log}', True),
}


def test_child_saves_on_sigterm_only_if_the_shell_lives(slurm_cluster,
                                                        tmp_path):
  (tmp_path / 'child.py').write_text(textwrap.dedent('''\
      import signal, sys, time
      def save(signum, frame):
        time.sleep(1)
        with open(sys.argv[1], 'a') as f:
          f.write('saved\\n')
        sys.exit(0)
      signal.signal(signal.SIGTERM, save)
      with open(sys.argv[1], 'a') as f:
        f.write('ready\\n')
      time.sleep(120)
      '''))
  jobs = {}
  for name, (body, _) in SAVE_ON_TERM.items():
    body = body.format(python=sys.executable, child=tmp_path / 'child.py',
                       log=tmp_path / f'{name}.log')
    jobs[name] = slurm_cluster.sbatch(_script(body + '\n'),
                                      f'--chdir={tmp_path}',
                                      f'--output={tmp_path}/{name}.out')
  for name in jobs:
    _wait(lambda n=name: 'ready' in _read(tmp_path / f'{n}.log'), 30,
          f'{name} to start')
  for job in jobs.values():
    slurm_cluster.run('scancel', job)
  for job in jobs.values():
    assert slurm_cluster.wait_ended(job, timeout=30) == {
        job: 'CANCELLED None'}
  saved = {name: 'saved' in _read(tmp_path / f'{name}.log') for name in jobs}
  assert saved == {name: value for name, (_, value) in SAVE_ON_TERM.items()}


def test_job_state_without_accounting(slurm_cluster, tmp_path):
  flag = tmp_path / 'flag'
  job = slurm_cluster.sbatch(_script(f'''\
      while [ ! -e {flag} ]; do sleep 0.1; done
      exit 3
      '''), '--output=/dev/null', f'--chdir={tmp_path}')

  def squeue():
    return slurm_cluster.run('squeue', '-h', '-j', job,
                             '-o', '%i %T %r').stdout.strip()
  _wait(lambda: squeue() == f'{job} RUNNING None', 30, 'the job to run')
  flag.touch()
  _wait(lambda: squeue() == '', 30, 'the job to leave squeue')
  assert slurm_cluster.wait_ended(job) == {job: 'FAILED NonZeroExitCode'}
  fields = slurm_cluster.show_job(job)
  assert (fields['JobState'], fields['ExitCode']) == ('FAILED', '3:0')
  # A job slurmctld does not know (never was, or purged).
  for command in (['squeue', '-h', '-j', '999999'],
                  ['scontrol', 'show', 'job', '999999']):
    result = slurm_cluster.run(*command, check=False)
    assert result.returncode == 1
    assert 'Invalid job id specified' in result.stderr


def test_stale_cluster_is_cleaned_up_and_restart_works(slurm_cluster,
                                                       request):
  """A cluster whose owner was killed is removed, daemons and jobs, by the
  next start; two clusters in a row on the same base directory both come
  up."""
  # munged wants every directory above its socket searchable by all, which
  # pytest's tmp_path is not.
  base = pathlib.Path(tempfile.mkdtemp(prefix='vit_jax_slurm_test_'))
  base.chmod(0o755)
  request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
  owner = subprocess.Popen(
      [sys.executable, '-c', textwrap.dedent(f'''\
          import sys, time
          sys.path.insert(0, {os.path.dirname(slurm.__file__)!r})
          import slurm_cluster
          cluster = slurm_cluster.SlurmCluster({str(base)!r}).start()
          cluster.sbatch('#!/bin/bash\\necho $$ > {base}/job.pid\\n'
                         'sleep 300\\n', '--output=/dev/null')
          print(cluster.root, flush=True)
          time.sleep(600)
          ''')],
      stdout=subprocess.PIPE, text=True)
  try:
    stale = owner.stdout.readline().strip()
    assert stale, 'the first cluster did not start'
    stale = pathlib.Path(stale)
    daemons = [int((stale / f'{name}.pid').read_text())
               for name in ('munged', 'slurmctld', 'slurmd')]
    job_pid = _wait(lambda: _read(base / 'job.pid').strip(), 30,
                    'the job to start')
    daemons.append(int(job_pid))
  finally:
    owner.send_signal(signal.SIGKILL)
    owner.wait()
  for _ in range(2):
    with slurm.SlurmCluster(base) as cluster:
      assert not stale.exists()
      assert all(slurm._start_time(pid) is None for pid in daemons)
      job = cluster.sbatch(_script('true\n'), '--output=/dev/null')
      assert cluster.wait_ended(job) == {job: 'COMPLETED None'}
    assert [path.name for path in base.iterdir()] == ['job.pid']
