"""One TPU VM run, started detached on every worker and watched by polling.

    python -m vit_jax.launch.tpu_vm_watch SPEC.json

The TPU VM back end (`tpu_vm.py`) runs this as a run's process in its
slot (`local.ProcessRunner`): it writes the run's spec (the gcloud ssh
command of its VM, the remote commands below, the poll interval) to a
file, since a pkill of the trainer by its command line must not match
this process.

1. Start: one short `gcloud ... ssh --worker=all` makes the attempt's
   folder RUNS/<run>/<attempt> on every worker (`mkdir`, so a start sent
   twice starts once), writes `run.sh` there and starts it with `setsid
   nohup bash run.sh > log 2>&1 < /dev/null &` (SIGHUP ignored from the
   fork on): the trainer belongs to no SSH session, and a dropped
   connection does not end it, even one dropped as the start returns.
   `run.sh` writes its pid to `pid`, runs the trainer in the code dir and
   then writes its exit status to `status`.
2. Poll: every `poll_seconds`, a short ssh prints one line per worker:
   `running`, `ended N`, `starting` (folder made, pid not yet written),
   `absent` (the start never reached that worker: it is sent again) or
   `lost` (its pid is gone without a status: killed, or the VM
   restarted). A poll that fails (ssh's status, no answer) is retried;
   `max_failures` failures in a row end the watch with status 1 and say
   that the trainers may still run (`cancel` stops them).
3. The end: when no worker is running, the tail of every worker's log is
   copied into this process's output (the run's log here) and this
   process exits with the first non-zero status of a worker (a trainer
   killed by signal N: killed by the same signal), 1 if a worker was
   `lost`.

With queued resources (`spec['queued']`: the gcloud commands of the
VM's queued resource), a failed poll or a `lost` / `absent` worker asks
`describe`: a VM that is gone (SUSPENDED, FAILED, ...: a spot VM's
preemption) is deleted and created again (`ensure_active`), the code
copied and set up again (`spec['setup']`), and the run started again in
a new attempt folder, <attempt>-restart<N>: the trainer resumes from its
last checkpoint in the workdir.

SIGTERM / SIGINT (the launcher stopping, `cancel`) sends `stop` (a pkill
-TERM of the trainer) to every worker, retried until an ssh gets through,
and the watch goes on until the trainers have saved and exited (status 3).
Only the standard library: it runs in a fresh Python per run.
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from typing import Any, List, Mapping, Optional, Tuple

PREFIX = 'vit_jax-poll:'
SSH_TIMEOUT = 300  # seconds for one short ssh (start, poll, stop, logs)
LOG_LINES = 2000  # the tail of each worker's log copied here at the end
EXIT_FAILED = 1  # layout's EXIT_FAILED and EXIT_PREEMPTED (not imported:
EXIT_STOPPED = 3  # the standard library only)


_quote = shlex.quote


def home_path(path: str) -> str:
  """A path on a worker as users read it: relative ones under ~/."""
  return path if path.startswith('/') else f'~/{path}'


def start_command(attempt_dir: str, code_dir: str, trainer: str) -> str:
  """The remote command that starts `trainer` detached in `code_dir`
  (both relative to the home directory, or absolute)."""
  script = '; '.join([
      'echo $$ > pid', 'here=$(pwd)',
      f'cd && cd {_quote(code_dir)} || {{ echo 1 > "$here/status"; exit 1; }}',
      trainer,
      'echo $? > "$here/status.tmp"', 'mv "$here/status.tmp" "$here/status"'])
  parent = os.path.dirname(attempt_dir.rstrip('/')) or '.'
  return (f'mkdir -p {_quote(parent)} && if mkdir {_quote(attempt_dir)} '
          f'2>/dev/null; then cd {_quote(attempt_dir)} && printf %s '
          f'{_quote(script)} > run.sh && (trap "" HUP; setsid nohup bash '
          f'run.sh > log 2>&1 < /dev/null &) && echo "{PREFIX} started"; '
          f'else echo '
          f'"{PREFIX} already started"; fi')


def poll_command(attempt_dir: str) -> str:
  """One line per worker: running / ended N / starting / absent / lost."""
  return (f'cd {_quote(attempt_dir)} 2>/dev/null || {{ echo "{PREFIX} '
          f'absent"; exit 0; }}; if [ -f status ]; then echo "{PREFIX} ended '
          f'$(cat status)"; elif [ -s pid ] && ps -o stat= -p "$(cat pid)" '
          f'2>/dev/null | grep -q "^[^Z]"; then echo "{PREFIX} running"; '
          f'elif [ -f status ]; then echo "{PREFIX} ended $(cat status)"; '
          f'elif [ -s pid ]; then echo "{PREFIX} lost"; else echo '
          f'"{PREFIX} starting"; fi')


def log_command(attempt_dir: str, lines: int = LOG_LINES) -> str:
  return (f'echo "=== $(hostname): the last {lines} lines of '
          f'{attempt_dir}/log ==="; tail -n {lines} {_quote(attempt_dir)}/log')


def parse_poll(output: str) -> List[Tuple[str, Optional[int]]]:
  """The workers' answers in a poll's output: [(state, status or None)]."""
  answers = []
  for line in output.splitlines():
    line = line.strip()
    if not line.startswith(PREFIX):
      continue
    words = line[len(PREFIX):].split()
    if not words:
      continue
    if words[0] == 'ended':
      try:
        answers.append(('ended', int(words[1])))
      except (IndexError, ValueError):
        answers.append(('starting', None))  # status half-written: again
    elif words[0] in ('running', 'starting', 'absent', 'lost'):
      answers.append((words[0], None))
  return answers


def call(command: List[str], timeout: float = SSH_TIMEOUT
         ) -> Tuple[int, str, str]:
  """Runs a gcloud command: (status, stdout, stderr); 255 if it hangs."""
  try:
    result = subprocess.run(command, capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=timeout)
  except subprocess.TimeoutExpired:
    return 255, '', f'(no answer in {timeout:g} s)'
  except OSError as error:
    return 255, '', str(error)
  return result.returncode, result.stdout, result.stderr


# Queued resources' states in which the VM is gone or going: re-create it.
GONE = ('SUSPENDED', 'SUSPENDING', 'FAILED', 'PREEMPTED', 'NOT_FOUND')


def queued_state(queued: Mapping[str, Any]) -> str:
  """The queued resource's state (`describe`): ACTIVE, SUSPENDED, ...,
  NOT_FOUND, or UNKNOWN when gcloud does not say."""
  code, out, err = call(queued['describe'])
  if code != 0:
    return 'NOT_FOUND' if 'NOT_FOUND' in err or 'not found' in err else (
        'UNKNOWN')
  words = out.split()
  return words[-1] if words else 'UNKNOWN'


def ensure_active(queued: Mapping[str, Any], say, poll_seconds: float,
                  timeout_s: float) -> bool:
  """The queued resource ACTIVE: deleted and created again if gone (spot
  preemption), created if missing, then waited for."""
  name = queued['name']
  state = queued_state(queued)
  if state in GONE and state != 'NOT_FOUND':
    say(f'vit_jax-watch: queued resource {name} is {state}: deleting it '
        f'to create it again.')
    code, _, err = call(queued['delete'], timeout=timeout_s)
    if code != 0:
      say(f'vit_jax-watch: deleting {name} failed: {err.strip()[-300:]}')
    state = queued_state(queued)
  if state == 'NOT_FOUND':
    say(f'vit_jax-watch: creating queued resource {name}.')
    code, _, err = call(queued['create'], timeout=timeout_s)
    if code != 0:
      say(f'vit_jax-watch: creating {name} failed: {err.strip()[-300:]}')
  deadline = time.time() + timeout_s
  while True:
    state = queued_state(queued)
    if state == 'ACTIVE':
      return True
    if state in GONE or time.time() > deadline:
      say(f'vit_jax-watch: queued resource {name} is {state}; not '
          f'waiting for it.')
      return False
    time.sleep(poll_seconds)


class Watch:
  """The run of one spec (see the module docstring)."""

  def __init__(self, spec: Mapping[str, Any], say=print):
    self.spec = spec
    self.say = say
    self.stopping = False
    self.stop_sent = False

  def ssh(self, remote: str) -> Tuple[int, str]:
    code, out, err = call([*self.spec['ssh'], f'--command={remote}'])
    return code, out + err

  def _sleep(self) -> None:
    end = time.time() + self.spec['poll_seconds']
    while time.time() < end and not (self.stopping and not self.stop_sent):
      time.sleep(min(0.2, max(0.0, end - time.time())))

  def _vm_gone(self) -> bool:
    """With queued resources: whether the VM was preempted (or deleted)."""
    queued = self.spec.get('queued')
    if not queued:
      return False
    state = queued_state(queued)
    if state in GONE:
      self.say(f'vit_jax-watch: {self.spec["vm"]}\'s queued resource is '
               f'{state}.')
      return True
    return False

  def _recreate(self) -> bool:
    """The VM back (queued resources), the code copied and set up again."""
    spec = self.spec
    if not ensure_active(spec['queued'], self.say, spec['poll_seconds'],
                         spec.get('create_seconds', 86400)):
      return False
    for command in spec['setup']:
      for _ in range(spec['max_failures']):
        code, out, err = call(command, timeout=3600)
        if code == 0:
          break
        self.say(f'vit_jax-watch: setting up {spec["vm"]} again: status '
                 f'{code}: {(out + err).strip()[-300:]}')
        time.sleep(spec['poll_seconds'])
      else:
        return False
    return True

  def run(self) -> int:
    """Watches the run; with queued resources, a preempted VM is created
    again and the run restarted (it resumes from its last checkpoint)."""
    base = self.spec['attempt_dir']
    for restart in range(self.spec.get('max_restarts', 0) + 1):
      if restart:
        attempt = f'{base}-restart{restart}'
        self.spec = dict(self.spec, attempt_dir=attempt,
                         start=start_command(attempt, self.spec['code_dir'],
                                             self.spec['trainer']),
                         poll=poll_command(attempt))
      code = self._attempt()
      if code is not None:
        return code
      if self.stopping:
        return EXIT_STOPPED  # the VM is gone, and the run is to stop
      self.say(f'vit_jax-watch: {self.spec["vm"]} was preempted: creating '
               f'it again, then restarting {self.spec["run"]} (it resumes '
               f'from its last checkpoint).')
      if not self._recreate():
        self.say(f'vit_jax-watch: {self.spec["vm"]} is not back; '
                 f'{self.spec["run"]} stops here (`resume` restarts it).')
        return EXIT_FAILED
    self.say(f'vit_jax-watch: {self.spec["vm"]} was preempted '
             f'{restart + 1} times; giving up.')
    return EXIT_FAILED

  def _attempt(self) -> Optional[int]:
    """One attempt: its exit status, None if its VM was preempted."""
    spec, attempt = self.spec, self.spec['attempt_dir']
    self.say(f'vit_jax-watch: starting {spec["run"]} detached on every '
             f'worker of {spec["vm"]}; its output: {home_path(attempt)}/log '
             f'there (copied here when it ends); polled every '
             f'{spec["poll_seconds"]} s.')
    failures, need_start, starting_since, starts = 0, True, None, 0
    while True:
      if self.stopping and not self.stop_sent:
        code, output = self.ssh(spec['stop'])
        if code == 0:
          self.stop_sent = True
          self.say('vit_jax-watch: sent SIGTERM to the trainers; waiting '
                   'for them to save and exit.')
        else:
          self.say(f'vit_jax-watch: sending the stop failed (ssh status '
                   f'{code}); trying again. {output.strip()[-300:]}')
      if need_start and not self.stopping:
        code, output = self.ssh(spec['start'])
        if code != 0:
          self.say(f'vit_jax-watch: the start\'s ssh ended with status '
                   f'{code}; polling tells whether it got through. '
                   f'{output.strip()[-300:]}')
        need_start = False
      else:
        code, output = self.ssh(spec['poll'])
        answers = parse_poll(output) if code == 0 else []
        if not answers:
          failures += 1
          self.say(f'vit_jax-watch: poll {failures} in a row failed (ssh '
                   f'status {code}): {output.strip()[-300:]}')
          if self._vm_gone():
            return None
          if failures >= spec['max_failures']:
            self.say(f'vit_jax-watch: no answer from {spec["vm"]} in '
                     f'{failures} polls; giving up. Its trainers may still '
                     f'run: `python -m vit_jax.launch cancel` stops them, '
                     f'`status` shows the run.')
            return EXIT_FAILED
        else:
          if failures:
            self.say(f'vit_jax-watch: {spec["vm"]} answers again after '
                     f'{failures} failed polls.')
          failures = 0
          states = [state for state, _ in answers]
          if 'absent' in states and not self.stopping:
            starts += 1  # the start did not reach every worker: again
            if starts > spec['max_failures']:
              self.say(f'vit_jax-watch: {starts} starts did not reach every '
                       f'worker of {spec["vm"]}; giving up.')
              return self._end(answers, states)
            need_start = True
            self._sleep()
            continue
          if 'starting' in states:
            starting_since = starting_since or time.time()
            if time.time() - starting_since > spec['start_seconds']:
              states = ['lost' if s == 'starting' else s for s in states]
          if self.stopping and set(states) == {'absent'}:
            return EXIT_STOPPED  # stopped before it started anywhere
          if not ({'running', 'starting'} & set(states)):
            if ('lost' in states or 'absent' in states) and self._vm_gone():
              return None
            return self._end(answers, states)
      self._sleep()

  def _end(self, answers, states) -> int:
    code, output = self.ssh(log_command(self.spec['attempt_dir']))
    self.say(output.rstrip() if code == 0 else
             f'vit_jax-watch: fetching the workers\' logs failed (ssh status '
             f'{code}): {output.strip()[-300:]}')
    codes = [status for state, status in answers if state == 'ended']
    failed = next((c for c in codes if c), 0)
    if not failed and ('lost' in states or 'absent' in states):
      self.say('vit_jax-watch: a worker\'s trainer is gone without an exit '
               'status (killed, or the VM restarted).')
      failed = EXIT_FAILED
    self.say(f'vit_jax-watch: {self.spec["run"]} ended on {self.spec["vm"]}: '
             f'worker statuses {codes}.')
    return failed


def main(argv) -> None:
  if len(argv) != 2:
    sys.exit('usage: python -m vit_jax.launch.tpu_vm_watch SPEC.json')
  with open(argv[1]) as f:
    spec = json.load(f)
  watch = Watch(spec, say=lambda line: print(line, flush=True))

  def on_signal(signum, frame):
    del signum, frame
    watch.stopping = True

  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)
  code = watch.run()
  if 128 < code < 128 + 65:  # the trainer was killed by a signal: so is this
    signal.signal(code - 128, signal.SIG_DFL)
    os.kill(os.getpid(), code - 128)
    time.sleep(1)
  sys.exit(code)


if __name__ == '__main__':
  main(sys.argv)
