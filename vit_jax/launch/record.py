"""`SWEEP_DIR/sweep.json`: what a sweep is and what was launched.

    {"sweep_file", "sweep_arg", "sweep_source",   the definition, verbatim
     "config", "fixed", "metric",                 the recipe and headline
     "runs": [{"index", "name", "overrides", "workdir", "args",
               "total_steps"}],                   resolved and validated
     "code_dir", "code_version": {"commit", "dirty"},
     "backend", "settings",                       back end and its flags
     "submissions": [{"time", "backend", "settings", "runs": [names],
                      ...}]}                      every launch / resume

`status`, `resume` and `cancel` work from this file alone, so they need
neither the sweep file nor the flags of the launch.
"""

import json
import os
import subprocess
import time
from typing import Any, Dict, List, Optional

from vit_jax import paths
from vit_jax.launch import sweep as sweep_lib

FILE = 'sweep.json'


def tracked_files(code_dir: str, why: str) -> List[str]:
  """The checkout's tracked files (paths relative to it, files that exist
  in the working tree); RuntimeError naming `why` outside a checkout."""
  try:
    names = subprocess.run(['git', '-C', code_dir, 'ls-files', '-z'],
                           check=True, capture_output=True,
                           text=True).stdout.split('\0')
  except (OSError, subprocess.CalledProcessError) as error:
    raise RuntimeError(f'{code_dir} is not a git checkout; {why} '
                       f'({error}).') from None
  return [name for name in names
          if name and os.path.isfile(os.path.join(code_dir, name))]


def code_version(code_dir: str) -> Dict[str, Any]:
  """The git commit of `code_dir` and whether its tree differs from it."""
  def git(*args):
    return subprocess.run(['git', '-C', code_dir, *args], check=True,
                          capture_output=True, text=True).stdout.strip()
  try:
    commit = git('rev-parse', 'HEAD')
    dirty = bool(git('status', '--porcelain', '--untracked-files=no'))
  except (OSError, subprocess.CalledProcessError):
    return {'commit': None, 'dirty': None}
  return {'commit': commit, 'dirty': dirty}


def new(sweep: sweep_lib.Sweep, code_dir: str, backend: str,
        settings: Dict[str, Any]) -> Dict[str, Any]:
  return {
      'sweep_file': sweep.file, 'sweep_arg': sweep.arg,
      'sweep_source': sweep.source, 'config': sweep.config,
      'fixed': sweep.fixed, 'metric': sweep.metric,
      'runs': [run.to_json() for run in sweep.runs],
      'code_dir': code_dir, 'code_version': code_version(code_dir),
      'backend': backend, 'settings': settings, 'submissions': [],
      'created': time.strftime('%Y-%m-%d %H:%M:%S'),
  }


def path(sweep_dir: str) -> str:
  return paths.join(sweep_dir, FILE)


def read(sweep_dir: str) -> Dict[str, Any]:
  record = paths.read_json(path(sweep_dir))
  if record is None:
    raise FileNotFoundError(
        f'{path(sweep_dir)} does not exist: {sweep_dir} is not a sweep '
        f'directory (launch one with --sweep=FILE --sweep_dir={sweep_dir}).')
  return record


def read_if_exists(sweep_dir: str) -> Optional[Dict[str, Any]]:
  return paths.read_json(path(sweep_dir))


def write(sweep_dir: str, record: Dict[str, Any]) -> None:
  """Writes sweep.json (atomically; one upload on gs://)."""
  paths.makedirs(sweep_dir)
  paths.write_atomic(path(sweep_dir), json.dumps(
      record, indent=2, sort_keys=True, default=str) + '\n')


def add_submission(sweep_dir: str, record: Dict[str, Any],
                   submission: Dict[str, Any]) -> None:
  submission = {'time': time.time(), **submission}
  record['submissions'].append(submission)
  write(sweep_dir, record)


def latest_submissions(record: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
  """{run name: the latest submission that included it}."""
  latest: Dict[str, Dict[str, Any]] = {}
  for submission in record.get('submissions', []):
    for name in submission.get('runs', []):
      latest[name] = submission
  return latest


def same_runs(old: Dict[str, Any], new_record: Dict[str, Any]) -> List[str]:
  """Differences between two records' runs, as lines (empty: the same)."""
  def key(record):
    return {run['name']: (run['args'], run['total_steps'])
            for run in record['runs']}
  before, after = key(old), key(new_record)
  lines = []
  for name in sorted(set(before) | set(after)):
    if name not in after:
      lines.append(f'  {name}: only in the existing sweep')
    elif name not in before:
      lines.append(f'  {name}: only in the new definition')
    elif before[name] != after[name]:
      lines.append(f'  {name}: its command differs')
  return lines
