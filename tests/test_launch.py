"""The sweep launcher: definitions, names, validation, status, the local
and TPU VM back ends (the SLURM one: tests/test_slurm.py)."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from vit_jax import checkpoint
from vit_jax import config as config_lib
from vit_jax.launch import failure
from vit_jax.launch import local
from vit_jax.launch import record as record_lib
from vit_jax.launch import slurm
from vit_jax.launch import status as status_lib
from vit_jax.launch import sweep as sweep_lib
from vit_jax.launch import tpu_vm
from vit_jax.launch import tpu_vm_watch

from tiny import ROOT, multihost_reference_params, override, tiny_config

FAKE_GCLOUD = os.path.join(ROOT, 'tests', 'fake_gcloud')


def tiny_fixed(data_dir, **more):
  """Overrides that shrink configs/digits.py to seconds (cf. tiny_config)."""
  return {'data.data_dir': data_dir, 'model.patch_size': 4,
          'model.width': 32, 'model.depth': 2, 'model.mlp_dim': 64,
          'model.num_heads': 2, 'model.dropout': 0.0,
          'model.stochastic_depth': 0.0, 'batch_size': 32, 'total_steps': 4,
          'schedule.warmup_steps': 2, 'log_every_steps': 2,
          'eval_every_steps': 4, 'checkpoint.every_steps': 4,
          'evals.fewshot.shots': (1, 5), 'evals.fewshot.seeds': (0,),
          **more}


def write_sweep(path, runs, fixed, metric=None, config='configs/digits.py',
                resources=None):
  """A sweep file returning these runs (plain Python, as users write);
  `resources`: the source of its 'resources' function, if any."""
  body = f"""
      from vit_jax.launch import sweep

      def get_sweep(arg=None):
        runs = {runs!r}
        if arg == 'first':
          runs = runs[:1]
        return {{'config': {config!r}, 'runs': runs, 'fixed': {fixed!r},
                 'metric': {metric or 'val/accuracy'!r},
                 'resources': {resources or 'None'}}}
      """
  path.write_text(textwrap.dedent(body))
  return str(path)


def launch(*args, env=None, timeout=1800, check=None):
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.launch', *args], cwd=ROOT, env=env,
      capture_output=True, text=True, timeout=timeout)
  if check is not None:
    assert result.returncode == check, result.stdout + result.stderr
  return result


def statuses(sweep_dir):
  result = launch('status', f'--sweep_dir={sweep_dir}', '--format=json',
                  check=0)
  return {row['name']: row for row in map(json.loads,
                                          result.stdout.splitlines())}


# ----------------------------------------------------------------------------
# Definitions and names.


def test_grid_zipped_product():
  assert sweep_lib.grid({'a': [1, 2]}, b=[3, 4]) == [
      {'a': 1, 'b': 3}, {'a': 1, 'b': 4}, {'a': 2, 'b': 3}, {'a': 2, 'b': 4}]
  assert sweep_lib.zipped({'model.variant': ['Ti/16', 'S/16'],
                           'lr': [1e-3, 5e-4]}) == [
      {'model.variant': 'Ti/16', 'lr': 1e-3},
      {'model.variant': 'S/16', 'lr': 5e-4}]
  assert sweep_lib.product(sweep_lib.zipped(a=[1, 2], b=[3, 4]),
                           sweep_lib.grid(c=[5, 6])) == [
      {'a': 1, 'b': 3, 'c': 5}, {'a': 1, 'b': 3, 'c': 6},
      {'a': 2, 'b': 4, 'c': 5}, {'a': 2, 'b': 4, 'c': 6}]
  with pytest.raises(ValueError, match='one length'):
    sweep_lib.zipped(a=[1, 2], b=[3])
  with pytest.raises(ValueError, match=r"keys \['a'\] are set by two"):
    sweep_lib.product(sweep_lib.grid(a=[1]), sweep_lib.grid(a=[2]))
  with pytest.raises(ValueError, match='must be a list'):
    sweep_lib.grid(a='abc')


def test_random_search_and_seeds():
  space = {'lr': sweep_lib.log_uniform(1e-4, 1e-2),
           'wd': sweep_lib.choice([0.0, 1e-4]),
           'model.depth': sweep_lib.int_uniform(2, 4),
           'model.dropout': sweep_lib.uniform(0.0, 0.2),
           'model.pool_type': 'gap'}
  runs = sweep_lib.random(200, 3, space)
  assert runs == sweep_lib.random(200, 3, space)  # reproducible
  assert sweep_lib.random(5, 3, space) == runs[:5]  # a prefix
  assert runs[:5] != sweep_lib.random(5, 4, space)
  lrs = np.array([run['lr'] for run in runs])
  assert lrs.min() >= 1e-4 and lrs.max() <= 1e-2
  # Log-uniform: about half the draws below the geometric middle 1e-3.
  assert 0.35 < np.mean(lrs < 1e-3) < 0.65
  assert all(float(f'{lr:.4g}') == lr for lr in lrs)  # readable names
  assert {run['wd'] for run in runs} == {0.0, 1e-4}
  assert {run['model.depth'] for run in runs} == {2, 3, 4}
  assert all(0 <= run['model.dropout'] <= 0.2 and
             run['model.pool_type'] == 'gap' for run in runs)
  assert len(set(sweep_lib.run_names(runs))) == 200
  with pytest.raises(ValueError, match='fewer than 5 distinct runs'):
    sweep_lib.random(5, 0, {'wd': sweep_lib.choice([0.0, 1e-4])})
  with pytest.raises(ValueError, match=r'0 < low < high, got 0, 0.1'):
    sweep_lib.log_uniform(0, 0.1)
  with pytest.raises(ValueError, match='n >= 1'):
    sweep_lib.random(0, 0, space)

  seeded = sweep_lib.seeds(sweep_lib.grid(lr=[1e-3, 3e-3]), 3)
  assert seeded == [{'lr': 1e-3, 'seed': s} for s in range(3)] + [
      {'lr': 3e-3, 'seed': s} for s in range(3)]
  assert sweep_lib.run_names(seeded)[:2] == ['lr=0.001,seed=0',
                                             'lr=0.001,seed=1']
  with pytest.raises(ValueError, match="already sets 'seed'"):
    sweep_lib.seeds(seeded, 2)


def test_run_names_are_short_readable_and_stable():
  names = sweep_lib.run_names([
      {'model.variant': 'S/16', 'lr': 0.001, 'model.dropout': 0.1,
       'data.dropout': 0.0},
      {'model.variant': 'B/16', 'lr': 3e-4, 'model.dropout': 0.0,
       'data.dropout': 0.0, 'shots': (1, 5)},
      {}])
  assert names == [
      'variant=S-16,lr=0.001,model.dropout=0.1,data.dropout=0.0',
      'variant=B-16,lr=0.0003,model.dropout=0.0,data.dropout=0.0,shots=1x5',
      'default']


# ----------------------------------------------------------------------------
# Validation: errors before anything is written.


@pytest.mark.parametrize('runs, fixed, message', [
    ([{'lr': 1e-3}, {'lr': 0.001}], {}, 'have the same name'),
    ([{'model.widht': 32}], {}, "Did you mean 'width'"),
    ([{'lr': 'fast'}], {}, "lr='fast' has the wrong type"),
    ([{'total_steps': 10}], {}, r'warmup_steps \(50\).*exceeds total_steps'),
    ([{'model.pool_type': 'mean'}], {}, 'pool_type'),
    ([{'lr': 1e-3}], {'lr': 2e-3}, "which 'fixed' sets for every run"),
])
def test_bad_sweeps_are_refused(tmp_path, runs, fixed, message):
  sweep_file = write_sweep(tmp_path / 'bad.py', runs, fixed)
  with pytest.raises(ValueError, match=message):
    sweep_lib.load(sweep_file, str(tmp_path / 'sweep'), ROOT)


def test_a_bad_sweep_is_one_line_and_writes_nothing(tmp_path):
  sweep_file = write_sweep(tmp_path / 'bad.py', [{'model.widht': 32}], {})
  sweep_dir = tmp_path / 'sweep'
  result = launch(f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}')
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith('vit_jax.launch: bad sweep: ')
  assert "Did you mean 'width'" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1, result.stderr
  assert not sweep_dir.exists()


def test_unknown_sweep_key_and_command(tmp_path):
  sweep_file = tmp_path / 'typo.py'
  sweep_file.write_text("def get_sweep(arg=None):\n  return {'config': "
                        "'configs/digits.py', 'runs': [{}], 'metrc': 'x'}\n")
  result = launch(f'--sweep={sweep_file}', f'--sweep_dir={tmp_path / "s"}')
  assert result.returncode == 2
  assert "'metrc'" in result.stderr and "'metric'" in result.stderr
  result = launch('statsu', f'--sweep_dir={tmp_path / "s"}')
  assert result.returncode == 2
  assert "unknown command 'statsu'" in result.stderr


def test_commands_parse_to_the_validated_configs(tmp_path, data_dir):
  """The command line of each run gives exactly its overrides (tuples and
  floats included), and sweep.json records the definition."""
  fixed = tiny_fixed(data_dir)
  sweep_file = write_sweep(tmp_path / 's.py', sweep_lib.grid(
      {'lr': [1e-3, 3.5e-4], 'model.pool_type': ['cls', 'map']}), fixed)
  loaded = sweep_lib.load(sweep_file, str(tmp_path / 'sd'), ROOT)
  assert [run.name for run in loaded.runs] == [
      'lr=0.001,pool_type=cls', 'lr=0.001,pool_type=map',
      'lr=0.00035,pool_type=cls', 'lr=0.00035,pool_type=map']
  run = loaded.runs[3]
  config = config_lib.parse_command_line(
      os.path.join(ROOT, 'configs/digits.py'), run.args[4:])
  assert config.lr == 3.5e-4 and config.model.pool_type == 'map'
  assert config.evals.fewshot.shots == (1, 5)
  assert run.args[:4] == ['-m', 'vit_jax.main', '--config=configs/digits.py',
                          f'--workdir={tmp_path}/sd/lr=0.00035,pool_type=map']
  record = record_lib.new(loaded, ROOT, 'local', {'parallel': 1})
  assert record['sweep_source'] == open(sweep_file).read()
  assert record['code_version']['commit'] is None or len(
      record['code_version']['commit']) == 40


def test_branches_and_per_run_recipes(tmp_path, data_dir):
  """The shipped scaling sweep: a run's own recipe names it; branches
  are named after their trunk, point at its workdir, and make it keep
  their steps; SLURM submits them after their trunks."""
  sweep_dir = str(tmp_path / 'sd')
  loaded = sweep_lib.load('configs/sweeps/digits_scaling.py:small',
                          sweep_dir, ROOT)
  names = [run.name for run in loaded.runs]
  assert names == ['recipe=vit-xxs', 'recipe=vit-xxs,branch=80+27',
                   'recipe=vit-s', 'recipe=vit-s,branch=80+27']
  trunk, branch = loaded.runs[2], loaded.runs[3]
  assert trunk.after is None and trunk.total_steps == 160
  assert '--config.checkpoint.keep_steps=(80,)' in trunk.args
  assert branch.after == {'run': 'recipe=vit-s', 'workdir': trunk.workdir,
                          'step': 80}
  assert branch.total_steps == 107  # 80 / (1 - 0.25)
  for arg in ['--config=configs/digits_scaling.py:vit/s',
              f'--config.branch.trunk={trunk.workdir}',
              '--config.branch.step=80',
              '--config.schedule.cooldown_steps=27']:
    assert arg in branch.args, (arg, branch.args)

  result = launch('--sweep=configs/sweeps/digits_scaling.py:small',
                  f'--sweep_dir={sweep_dir}', '--backend=slurm',
                  '--slurm_max_array_size=100', '--dry_run', check=0)
  scripts = result.stdout.split('#!/bin/bash\n')[1:]
  assert len(scripts) == 3  # the trunks, then a branch array per trunk
  assert '--dependency' not in scripts[0] and 'branch=' not in scripts[0]
  # Each branch waits for its own trunk only.
  for script, trunk in zip(scripts[1:], ('recipe=vit-s', 'recipe=vit-xxs')):
    assert (f'#SBATCH --dependency=afterany:<task of {trunk}>'
            in script.splitlines()), script
    assert f'RUN={trunk},branch=' in script, script

  trunk_runs = [{'lr': 1e-3}]
  for runs, message in [
      (sweep_lib.branches({'lr': 2e-3}, [4], 0.5), 'not in the sweep'),
      (trunk_runs + sweep_lib.branches(trunk_runs[0], [4], 0.5),
       "does not depend on total_steps"),  # digits.py: cosine
  ]:
    sweep_file = write_sweep(tmp_path / 'b.py', runs, tiny_fixed(data_dir))
    with pytest.raises(ValueError, match=message):
      sweep_lib.load(sweep_file, sweep_dir, ROOT)
  with pytest.raises(ValueError, match=r'cooldown_fraction.*\(0, 1\)'):
    sweep_lib.branches({}, [4], 1.0)


# ----------------------------------------------------------------------------
# Status from workdirs.


def _run(tmp_path, name='r', total_steps=10):
  return {'name': name, 'workdir': str(tmp_path / name),
          'total_steps': total_steps}


def test_states_from_workdirs(tmp_path):
  run = _run(tmp_path)
  workdir = tmp_path / 'r'
  assert status_lib.run_status(run, 'val/accuracy').state == 'pending'
  assert status_lib.run_status(run, 'val/accuracy',
                               scheduler='PENDING').state == 'pending'
  workdir.mkdir()
  (workdir / 'config.json').write_text('{}')
  (workdir / 'metrics.jsonl').write_text(
      '{"step": 5, "val/accuracy": 0.5}\n{"step": 7, "train/loss": 1.0}\n'
      '{"step": 8, "val/acc')  # a torn last line
  got = status_lib.run_status(run, 'val/accuracy')
  assert (got.state, got.step, got.metric) == ('preempted', 7, 0.5)
  assert status_lib.run_status(run, 'val/accuracy',
                               scheduler='PENDING').state == 'pending'
  (workdir / 'lock').write_text(json.dumps(
      {'host': __import__('socket').gethostname(), 'pid': os.getpid()}))
  assert status_lib.run_status(run, 'val/accuracy').state == 'running'
  (workdir / 'lock').write_text(json.dumps(
      {'host': __import__('socket').gethostname(), 'pid': 2 ** 22 + 1}))
  assert status_lib.run_status(run, 'val/accuracy').state == 'preempted'
  (workdir / 'error').write_text('Traceback ...\n  File x\nValueError: bad\n')
  got = status_lib.run_status(run, 'val/accuracy')
  assert (got.state, got.error) == ('failed', 'ValueError: bad')
  # Failed, then queued again: pending, until an error newer than that.
  later = time.time() + 60
  assert status_lib.run_status(run, 'val/accuracy', scheduler='PENDING',
                               submitted=later).state == 'pending'
  assert status_lib.run_status(run, 'val/accuracy', scheduler='PENDING',
                               submitted=later - 3600).state == 'failed'
  (workdir / 'done').write_text('{"step": 10}')
  got = status_lib.run_status(run, 'val/accuracy')
  assert (got.state, got.step, got.error) == ('done', 10, None)
  table = status_lib.table([got], 'val/accuracy')
  assert table.splitlines()[0].split() == [
      'run', 'state', 'step', 'val/accuracy', 'wall', 'error']
  assert table.splitlines()[1].split()[:4] == ['r', 'done', '10/10',
                                               '0.5000']
  assert table.splitlines()[-1] == '1 done'


def test_launcher_records_failures_the_trainer_could_not(tmp_path):
  log = tmp_path / 'r.log'
  log.write_text('step 1\nKilled\n')
  workdir = tmp_path / 'r'
  assert not failure.record(str(workdir), 0, str(log), time.time())
  assert not failure.record(str(workdir), 3, str(log), time.time())
  assert failure.record(str(workdir), -9, str(log), time.time())
  text = (workdir / 'error').read_text()
  assert 'killed by signal 9' in text.splitlines()[0]
  assert text.splitlines()[-1] == 'Killed'  # the log's last line
  start = time.time()  # the trainer's own traceback, written after start
  (workdir / 'error').write_text('Traceback\nValueError: x\n')
  assert not failure.record(str(workdir), 1, str(log), start)
  assert (workdir / 'error').read_text().endswith('ValueError: x\n')


# ----------------------------------------------------------------------------
# SLURM scripts (the real cluster: tests/test_slurm.py).


def test_slurm_arrays_are_split_at_max_array_size():
  assert slurm.array_spec([0, 1, 2, 3, 7, 9, 10], 2) == '0-3,7,9-10%2'
  assert slurm.chunks([0, 1, 2, 3, 4], 2) == [(0, [0, 1]), (2, [0, 1]),
                                             (4, [0])]
  assert slurm.chunks([3, 1500], 1001) == [(0, [3]), (1001, [499])]


def test_slurm_dry_run_prints_the_scripts(tmp_path, data_dir):
  sweep_file = write_sweep(tmp_path / 's.py', sweep_lib.grid(
      lr=[1e-3, 2e-3, 3e-3]), tiny_fixed(data_dir))
  sweep_dir = tmp_path / 'sd'
  result = launch(f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
                  '--backend=slurm', '--slurm_max_array_size=2',
                  '--slurm_throttle=2', '--slurm_time=1:00:00',
                  '--slurm_gpus_per_node=8', '--slurm_nodes=2',
                  '--slurm_signal_seconds=120',
                  '--slurm_option=--account=proj', '--dry_run', check=0)
  scripts = result.stdout.split('#!/bin/bash\n')[1:]
  assert len(scripts) == 2  # 3 runs, MaxArraySize 2
  first = scripts[0]
  for line in ['#SBATCH --array=0-1%2', '#SBATCH --requeue',
               '#SBATCH --signal=B:USR1@120', '#SBATCH --nodes=2',
               '#SBATCH --ntasks-per-node=1', '#SBATCH --time=1:00:00',
               '#SBATCH --gpus-per-node=8', '#SBATCH --account=proj',
               f'#SBATCH --output={sweep_dir}/logs/slurm-%A_%a.log',
               '#SBATCH --open-mode=append']:
    assert line in first.splitlines(), line
  assert 'lr=0.001' in first and 'lr=0.002' in first
  assert '#SBATCH --array=0%2' in scripts[1] and 'lr=0.003' in scripts[1]
  assert 'scontrol requeue' in first and 'srun' in first
  assert not sweep_dir.exists()


def test_per_run_resources_split_the_slurm_arrays(tmp_path, data_dir):
  """A sweep's `resources` function: runs of equal resources share an
  array, each array takes its runs' resources over the flags', the dry
  run says which; bad resources are refused naming the run; the local
  back end notes that it does not use them; a TPU VM run goes only to the
  VMs it names."""
  runs = sweep_lib.grid(lr=[1e-3, 2e-3, 3e-3, 4e-3])
  resources = ("lambda run: {'time': '2:00:00', 'gpus_per_node': 8} "
               "if run['lr'] > 2.5e-3 else {}")
  sweep_file = write_sweep(tmp_path / 's.py', runs, tiny_fixed(data_dir),
                           resources=resources)
  sweep_dir = tmp_path / 'sd'
  flags = [f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}', '--dry_run']
  result = launch(*flags, '--backend=slurm', '--slurm_max_array_size=8',
                  '--slurm_time=30', '--slurm_gpus_per_node=1', check=0)
  headers = [line for line in result.stdout.splitlines()
             if line.startswith('# sbatch')]
  assert [h.split('(', 1)[1] for h in headers] == [
      'runs 0 + task ids 0-1)',
      'runs 0 + task ids 2-3; resources gpus_per_node=8, time=2:00:00)']
  small, large = result.stdout.split('#!/bin/bash\n')[1:]
  assert '#SBATCH --time=30' in small and '#SBATCH --gpus-per-node=1' in small
  assert '#SBATCH --time=2:00:00' in large.splitlines()
  assert '#SBATCH --gpus-per-node=8' in large.splitlines()
  assert '#SBATCH --array=2-3' in large and 'lr=0.003' in large
  assert 'lr=0.003' not in small

  result = launch(*flags, '--backend=local', check=0)
  assert ("# the sweep's per-run resources are for the SLURM and TPU VM "
          "back ends: not used here") in result.stdout

  # A resource SLURM refuses, and a key no back end has, name the run.
  bad = write_sweep(tmp_path / 'bad.py', runs, tiny_fixed(data_dir),
                    resources="lambda run: {'time': '1', 'nodes': 1}")
  result = launch(f'--sweep={bad}', f'--sweep_dir={sweep_dir}', '--dry_run',
                  '--backend=slurm', '--slurm_signal_seconds=300', check=2)
  assert ("run lr=0.001's resources {'time': '1', 'nodes': 1}: "
          "--slurm_time=1 (60 s) leaves no time before the early signal"
          ) in result.stderr
  typo = write_sweep(tmp_path / 'typo.py', runs, tiny_fixed(data_dir),
                     resources="lambda run: {'gpus': 8}")
  result = launch(f'--sweep={typo}', f'--sweep_dir={sweep_dir}', '--dry_run',
                  check=2)
  assert ("run 0 (lr=0.001): unknown resource 'gpus'; valid: ['partition', "
          "'time', 'nodes', 'gpus_per_node', 'cpus_per_task', 'mem', "
          "'tpu_names'].") in result.stderr
  broken = write_sweep(tmp_path / 'broken.py', runs, tiny_fixed(data_dir),
                       resources="lambda run: {'time': run['seed']}")
  result = launch(f'--sweep={broken}', f'--sweep_dir={sweep_dir}',
                  '--dry_run', check=2)
  assert "broken.py, line 10: KeyError: 'seed'" in result.stderr

  on_vm = write_sweep(tmp_path / 'vm.py', runs, tiny_fixed(data_dir),
                      resources="lambda run: {'tpu_names': ['v2']} "
                      "if run['lr'] > 3.5e-3 else {}")
  tpu = [f'--sweep={on_vm}', '--sweep_dir=gs://bucket/sd', '--dry_run',
         f'--logs={tmp_path / "logs"}',
         '--backend=tpu_vm', '--tpu_zone=z']
  result = launch(*tpu, '--tpu_names=v1,v2', check=0)
  assert '# lr=0.004: on v2 only' in result.stdout
  (line,) = [l for l in result.stdout.splitlines() if 'lr=0.004' in l
             and l.startswith('gcloud')]
  assert ' v2 ' in line
  result = launch(*tpu, '--tpu_names=v1', check=2)
  assert ("run lr=0.004's resources {'tpu_names': ['v2']}: resources "
          "tpu_names=['v2'] must name VMs of --tpu_names=v1.") in result.stderr
  assert not sweep_dir.exists()


def test_a_run_goes_only_to_the_slots_it_fits(tmp_path):
  """ProcessRunner with `fits` (the TPU VM back end's tpu_names): each run
  on a slot it fits; a run no slot fits is not started and fails."""
  slots = [local.Slot(name=name, env={}, command=lambda run, name=name: [
      sys.executable, '-c', f'print("{name}")']) for name in ('a', 'b')]
  runs = [{'name': f'r{i}', 'workdir': str(tmp_path / f'r{i}'),
           'resources': {'tpu_names': names}}
          for i, names in enumerate([['b'], ['b'], ['a', 'b'], ['c']])]
  said = []
  results = local.ProcessRunner(
      slots, str(tmp_path / 'logs'), str(tmp_path), said.append,
      fits=lambda run, slot: slot.name in run['resources']['tpu_names']
  ).run(runs)
  assert results == {'r3': 1, 'r0': 0, 'r1': 0, 'r2': 0}
  for name in ('r0', 'r1'):
    assert (tmp_path / 'logs' / f'{name}.log').read_text().splitlines()[
        -1] == 'b'
  assert "r3: not started, no slot here fits its resources ({'tpu_names': " \
      "['c']})." in said


def test_slurm_time_limits_and_cpus_per_task(tmp_path, data_dir):
  """sbatch's time formats; a --slurm_time not longer than the early
  signal is refused up front; srun gets --cpus-per-task (it no longer
  inherits sbatch's)."""
  for text, seconds in [('90', 5400), ('5:30', 330), ('1:00:00', 3600),
                        ('2-0', 172800), ('1-2:30', 95400),
                        ('0-0:4:0', 240), ('UNLIMITED', None)]:
    assert slurm.time_limit_seconds(text) == seconds, text
  with pytest.raises(ValueError, match=r"'4h' is not a time sbatch takes; "
                     r'formats: MINUTES, MINUTES:SECONDS'):
    slurm.time_limit_seconds('4h')
  sweep_file = write_sweep(tmp_path / 's.py', sweep_lib.grid(lr=[1e-3]),
                           tiny_fixed(data_dir))
  sweep_dir = tmp_path / 'sd'
  flags = [f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
           '--backend=slurm', '--slurm_max_array_size=8', '--dry_run']
  result = launch(*flags, '--slurm_time=5', '--slurm_signal_seconds=300',
                  check=2)
  assert ('--slurm_time=5 (300 s) leaves no time before the early signal '
          '--slurm_signal_seconds=300') in result.stderr
  assert result.stderr.count('\n') == 1, result.stderr
  result = launch(*flags, '--slurm_time=4h', check=2)
  assert 'is not a time sbatch takes' in result.stderr
  result = launch(*flags, '--slurm_time=10', '--slurm_cpus_per_task=6',
                  check=0)
  assert '#SBATCH --cpus-per-task=6' in result.stdout
  assert 'srun --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=6 ' \
      '"${COMMAND[@]}" &' in result.stdout
  assert not sweep_dir.exists()


def test_slurm_setup_file_is_copied_into_every_batch_script(tmp_path,
                                                             data_dir):
  """--slurm_setup: its lines run after the `cd` to the code and before the
  run, in every array's script; an unreadable file is refused up front."""
  sweep_file = write_sweep(tmp_path / 's.py', sweep_lib.grid(
      lr=[1e-3, 2e-3, 3e-3]), tiny_fixed(data_dir))
  setup = tmp_path / 'site.sh'
  setup.write_text('module load cuda/12.4\nexport SITE=1\n')
  sweep_dir = tmp_path / 'sd'
  flags = [f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
           '--backend=slurm', '--slurm_max_array_size=2', '--dry_run']
  result = launch(*flags, f'--slurm_setup={setup}', check=0)
  scripts = result.stdout.split('#!/bin/bash\n')[1:]
  assert len(scripts) == 2
  for script in scripts:
    lines = script.splitlines()
    start = lines.index(f'# --slurm_setup={setup}:')
    assert lines[start - 1].startswith('cd ')
    assert lines[start + 1:start + 4] == [
        'module load cuda/12.4', 'export SITE=1', '# (end of site.sh)']
    assert lines[start + 4] == 'case "$SLURM_ARRAY_TASK_ID" in'
  missing = tmp_path / 'nowhere.sh'
  result = launch(*flags, f'--slurm_setup={missing}', check=2)
  assert result.stderr.count('\n') == 1, result.stderr
  assert f'--slurm_setup={missing}: cannot read it' in result.stderr
  assert not sweep_dir.exists()


@pytest.mark.parametrize('profile, expected', [
    ('slurm_gpu_nodes.flags', [
        '#SBATCH --partition=gpu', '#SBATCH --gpus-per-node=8',
        '#SBATCH --cpus-per-task=64', '#SBATCH --mem=480G',
        '#SBATCH --time=4:00:00', '#SBATCH --signal=B:USR1@600',
        '#SBATCH --exclusive',
        f'# --slurm_setup={ROOT}/launch/slurm_setup.sh:',
        'if [ -n "${VIT_JAX_VENV:-}" ]; then']),
    ('tpu_v4_32.flags', [
        # the sweep's own code folder on the workers: its name and a hash
        # of gs://bucket/study
        'gcloud compute tpus tpu-vm ssh v4-32-a \'--command=mkdir -p '
        'vit_jax_sweeps/study-c24d3d4a && tar xzf vit_jax_code.tar.gz -C '
        'vit_jax_sweeps/study-c24d3d4a && cd vit_jax_sweeps/study-c24d3d4a '
        '&& bash launch/tpu_vm_setup.sh python3\' --zone=us-central2-b '
        '--worker=all',
        'gcloud compute tpus tpu-vm scp vit_jax_code.tar.gz '
        'v4-32-b:vit_jax_code.tar.gz --zone=us-central2-b --worker=all',
        '# each run starts detached on every worker (ATTEMPT: a new folder '
        'per attempt), then is polled every 30 s until it ends; a dropped '
        'connection does not stop it']),
])
def test_the_example_cluster_profiles_drive_the_launcher(tmp_path, profile,
                                                         expected):
  """launch/profiles/: absl flag files of the launcher's flags, one per
  cluster; every flag in them reaches the dry run's commands."""
  sweep = os.path.join(ROOT, 'configs/sweeps/digits_pooling.py')
  result = launch(f'--flagfile=launch/profiles/{profile}', f'--sweep={sweep}',
                  '--sweep_dir=gs://bucket/study', f'--logs={tmp_path}',
                  '--dry_run', check=0)
  lines = result.stdout.splitlines()
  for line in expected:
    assert line in lines, (line, result.stdout)


def test_tpu_vm_setup_script_installs_the_requirements_then_libtpu(tmp_path):
  """launch/tpu_vm_setup.sh, with a stand-in Python that logs its
  arguments: the requirements, then jax[tpu] at the installed version; a
  failed install stops it."""
  log = tmp_path / 'calls'
  python = tmp_path / 'python'
  python.write_text(textwrap.dedent(f"""\
      #!/bin/bash
      echo "$*" >> {log}
      [ "$1" = -c ] && echo 0.4.99
      [ "${{FAIL:-}}" = 1 ] && exit 7
      exit 0
      """))
  python.chmod(0o755)
  script = os.path.join(ROOT, 'launch', 'tpu_vm_setup.sh')
  subprocess.run(['bash', script, str(python)], cwd=tmp_path, check=True,
                 timeout=900)
  assert log.read_text().splitlines() == [
      '-m pip install -q -r requirements.txt',
      '-c import jax; print(jax.__version__)',
      '-m pip install -q jax[tpu]==0.4.99']
  log.unlink()
  failed = subprocess.run(['bash', script, str(python)], cwd=tmp_path,
                          env=dict(os.environ, FAIL='1'), timeout=900)
  assert failed.returncode == 7
  assert log.read_text().splitlines() == [
      '-m pip install -q -r requirements.txt']


# ----------------------------------------------------------------------------
# The local back end, for real.


def test_local_slots_get_disjoint_gpus(monkeypatch):
  gpus = [str(i) for i in range(8)]
  assert local.device_slots(2, gpus, None) == [
      {'CUDA_VISIBLE_DEVICES': '0,1,2,3'}, {'CUDA_VISIBLE_DEVICES': '4,5,6,7'}]
  assert local.device_slots(3, gpus, 2) == [
      {'CUDA_VISIBLE_DEVICES': '0,1'}, {'CUDA_VISIBLE_DEVICES': '2,3'},
      {'CUDA_VISIBLE_DEVICES': '4,5'}]
  assert local.device_slots(2, [], None) == [{}, {}]  # CPUs: one run a slot
  with pytest.raises(ValueError, match='do not fit the 8 visible GPUs'):
    local.device_slots(3, gpus, 4)
  with pytest.raises(ValueError, match='no GPU is visible'):
    local.device_slots(1, [], 1)
  with pytest.raises(ValueError, match='at least 1'):
    local.device_slots(0, gpus, None)
  monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '2,5')
  assert local.visible_gpus() == ['2', '5']
  assert local.device_slots(2, local.visible_gpus(), None) == [
      {'CUDA_VISIBLE_DEVICES': '2'}, {'CUDA_VISIBLE_DEVICES': '5'}]


def start_launcher(sweep_file, sweep_dir):
  """`python -m vit_jax.launch` (local back end) in the background."""
  return subprocess.Popen(
      [sys.executable, '-m', 'vit_jax.launch', f'--sweep={sweep_file}',
       f'--sweep_dir={sweep_dir}'], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True)


def wait_for_training(workdir, launcher, timeout=1800):
  """Until the run in `workdir` has logged a training step."""
  deadline = time.time() + timeout
  while not status_lib.last_metrics(workdir, 'train/loss')[1]:
    assert time.time() < deadline and launcher.poll() is None
    time.sleep(0.2)


def test_local_sweep_failure_and_resume(tmp_path, data_dir):
  """4 runs, 2 at a time, one failing: the others finish; resume after
  the fix reruns only it. (A launcher killed mid-sweep:
  tests/test_scaling_study.py.)"""
  # The fourth run's batch does not split over the 8 devices of this test
  # (the launcher cannot know the devices): it fails in the trainer.
  runs = sweep_lib.zipped(lr=[1e-3, 2e-3, 3e-3, 4e-3],
                          batch_size=[32, 32, 32, 36])
  fixed = tiny_fixed(data_dir)
  del fixed['batch_size']
  sweep_file = write_sweep(tmp_path / 'four.py', runs, fixed)
  sweep_dir = tmp_path / 'sweep'
  result = launch(f'--sweep={sweep_file}', f'--sweep_dir={sweep_dir}',
                  '--parallel=2')
  assert result.returncode == 1, result.stdout + result.stderr
  got = statuses(sweep_dir)
  names = list(got)
  assert [got[n]['state'] for n in names] == ['done'] * 3 + ['failed']
  assert all(got[n]['step'] == 4 for n in names[:3])
  assert all(0 <= got[n]['metric'] <= 1 for n in names[:3])
  assert got[names[3]]['error'], got[names[3]]
  record = record_lib.read(str(sweep_dir))
  assert record['backend'] == 'local' and record['settings']['parallel'] == 2
  assert len(record['runs']) == 4 and len(record['submissions']) == 1
  table = launch('status', f'--sweep_dir={sweep_dir}', check=0).stdout
  assert table.splitlines()[-1] == '3 done, 1 failed'

  done_marks = {n: (sweep_dir / n / 'done').stat().st_mtime
                for n in names[:3]}
  # The fix: a machine with 4 devices (36 = 4 x 9).
  four_devices = dict(os.environ, XLA_FLAGS=os.environ['XLA_FLAGS'].replace(
      'device_count=8', 'device_count=4'))
  result = launch('resume', f'--sweep_dir={sweep_dir}', env=four_devices,
                  check=0)
  assert f'started {names[3]}' in result.stdout
  assert not any(f'started {n}' in result.stdout for n in names[:3])
  assert all(s['state'] == 'done' for s in statuses(sweep_dir).values())
  assert done_marks == {n: (sweep_dir / n / 'done').stat().st_mtime
                        for n in names[:3]}
  assert launch('resume', f'--sweep_dir={sweep_dir}', check=0).stdout.endswith(
      'Nothing to launch: every run is done, running or queued.\n')


def test_cancel_stops_a_local_sweep_cleanly(tmp_path, data_dir):
  """`cancel`: the launcher passes SIGTERM on; the run saves and stops."""
  sweep_file = write_sweep(tmp_path / 'one.py', [{'lr': 1e-3}],
                           tiny_fixed(data_dir, total_steps=5000,
                                      log_every_steps=10,
                                      eval_every_steps=5000,
                                      **{'checkpoint.every_steps': 5000}))
  sweep_dir = tmp_path / 'sweep'
  process = start_launcher(sweep_file, sweep_dir)
  workdir = sweep_dir / 'lr=0.001'
  wait_for_training(workdir, process)
  assert statuses(sweep_dir)['lr=0.001']['state'] == 'running'
  launch('cancel', f'--sweep_dir={sweep_dir}', check=0)
  output, _ = process.communicate(timeout=1800)
  assert process.returncode == 3, output
  got = statuses(sweep_dir)['lr=0.001']
  assert got['state'] == 'preempted' and 0 < got['step'] < 5000
  steps = checkpoint.TrainCheckpointer(str(workdir / 'checkpoints')
                                       ).all_steps()
  assert len(steps) == 1 and got['step'] <= steps[0] < 5000  # saved on TERM


# ----------------------------------------------------------------------------
# The TPU VM back end, through a stand-in gcloud (tests/fake_gcloud).


def _tpu_flags(sweep_dir, *more):
  return [f'--sweep_dir={sweep_dir}', '--backend=tpu_vm',
          '--tpu_names=vm-a', '--tpu_zone=us-central2-b',
          '--tpu_project=proj', '--tpu_setup=', '--tpu_poll_seconds=0.5',
          *more]


def test_tpu_vm_dry_run_prints_the_gcloud_commands(tmp_path):
  """The dry run: the code's copy and set-up, then each run's detached
  start (ssh returns at once; the run's folder per attempt holds its pid,
  log and exit status), every gcloud call with --tpu_ssh_flags."""
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}, {'lr': 2e-3}],
                           {'total_steps': 100, 'model.pool_type': 'map'})
  sweep_dir = tmp_path / 'sweep'
  result = launch(f'--sweep={sweep_file}', *_tpu_flags(
      sweep_dir, '--tpu_names=vm-a,vm-b', '--tpu_allow_local_sweep_dir',
      '--tpu_setup=pip install -r requirements.txt', '--tpu_code_dir=vj',
      '--tpu_ssh_flags=--tunnel-through-iap --ssh-flag="-o ServerAlive'
      'Interval=5"'), '--logs=/tmp/logs', '--dry_run', check=0)
  zone = ('--zone=us-central2-b --worker=all --project=proj '
          "--tunnel-through-iap '--ssh-flag=-o ServerAliveInterval=5'")
  trainer = (f'python3 -m vit_jax.main --config=configs/digits.py '
             f'--workdir={sweep_dir}/lr={{lr}} --config.total_steps=100 '
             f'--config.model.pool_type=map --config.lr={{lr}}')
  setup = ("'--command=mkdir -p vj && tar xzf vit_jax_code.tar.gz -C "
           "vj && cd vj && pip install -r requirements.txt'")
  lines = result.stdout.splitlines()
  assert lines[:8] == [
      '# tpu_vm: 2 runs on 2 VMs (vm-a, vm-b), in sequence on each; logs in '
      '/tmp/logs',
      f'# on each VM, once: vit_jax_code.tar.gz = the tracked files of {ROOT}'
      ', unpacked into ~/vj',
      'gcloud compute tpus tpu-vm scp vit_jax_code.tar.gz '
      f'vm-a:vit_jax_code.tar.gz {zone}',
      f'gcloud compute tpus tpu-vm ssh vm-a {setup} {zone}',
      'gcloud compute tpus tpu-vm scp vit_jax_code.tar.gz '
      f'vm-b:vit_jax_code.tar.gz {zone}',
      f'gcloud compute tpus tpu-vm ssh vm-b {setup} {zone}',
      '# each run starts detached on every worker (ATTEMPT: a new folder per '
      'attempt), then is polled every 0.5 s until it ends; a dropped '
      'connection does not stop it',
      '# lr=0.001 on vm-a: in ~/vj, detached, output in '
      '~/vj-runs/lr=0.001/ATTEMPT/log: ' + trainer.format(lr=0.001),
  ]
  assert lines[9] == ('# lr=0.002 on vm-b: in ~/vj, detached, output in '
                      '~/vj-runs/lr=0.002/ATTEMPT/log: ' +
                      trainer.format(lr=0.002))
  for line, vm, lr in ((lines[8], 'vm-a', 0.001), (lines[10], 'vm-b', 0.002)):
    start = (f'mkdir -p vj-runs/lr={lr} && if mkdir vj-runs/lr={lr}/ATTEMPT '
             f'2>/dev/null; then cd vj-runs/lr={lr}/ATTEMPT && printf %s ')
    assert line.startswith(f'gcloud compute tpus tpu-vm ssh {vm} {zone} '
                           f"'--command={start}"), line
    assert trainer.format(lr=lr) in line
    assert 'setsid nohup bash run.sh > log 2>&1 < /dev/null &' in line
  assert len(lines) == 11
  assert not sweep_dir.exists()
  result = launch(f'--sweep={sweep_file}', *_tpu_flags(sweep_dir),
                  '--dry_run')
  assert result.returncode == 2 and 'gs://BUCKET' in result.stderr


def test_tpu_vm_each_sweep_has_its_own_code_folder(tmp_path):
  """Without --tpu_code_dir, the code goes to vit_jax_sweeps/<sweep dir
  name>-<hash of the sweep dir>: two sweeps (of different code, say) do
  not overwrite each other's, and their runs' folders differ too. A gs://
  sweep in a dry run needs no network (its endpoint refuses connections)."""
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}],
                           {'total_steps': 100})
  env = dict(os.environ, STORAGE_EMULATOR_HOST='http://127.0.0.1:9')
  folders = []
  for sweep_dir in ('gs://bucket-x/a/study', 'gs://bucket-x/b/study'):
    result = launch(f'--sweep={sweep_file}', *_tpu_flags(sweep_dir),
                    f'--logs={tmp_path / "logs"}', '--dry_run', env=env,
                    check=0)
    assert result.stderr.strip() == '', result.stderr
    line = next(l for l in result.stdout.splitlines()
                if 'unpacked into' in l)
    folder = line.rsplit(' ', 1)[1]
    assert folder.startswith('~/vit_jax_sweeps/study-'), line
    assert f'mkdir -p {folder[2:]} && tar xzf' in result.stdout
    assert f'{folder}-runs/lr=0.001/ATTEMPT/log' in result.stdout
    assert f'--workdir={sweep_dir}/lr=0.001' in result.stdout
    folders.append(folder)
  assert folders[0] != folders[1]
  assert sorted(os.listdir(tmp_path)) == ['s.py']  # not even the logs


def test_tpu_vm_dry_run_with_queued_resources(tmp_path):
  """--tpu_queued_resources: the dry run shows each VM's queued-resources
  create (spot), before its set-up; the ssh flags stay off it."""
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}],
                           {'total_steps': 100})
  result = launch(f'--sweep={sweep_file}', *_tpu_flags(
      'gs://bucket-x/q', '--tpu_names=vm-a,vm-b', '--tpu_queued_resources',
      '--tpu_accelerator_type=v4-32', '--tpu_runtime_version=tpu-vm-base',
      '--tpu_spot', '--tpu_ssh_flags=--internal-ip'),
                  f'--logs={tmp_path / "logs"}', '--dry_run', check=0)
  lines = result.stdout.splitlines()
  for vm in ('vm-a', 'vm-b'):
    create = (f'gcloud compute tpus queued-resources create {vm} '
              f'--node-id={vm} --zone=us-central2-b --project=proj '
              '--accelerator-type=v4-32 --runtime-version=tpu-vm-base --spot')
    assert create in lines, result.stdout
    assert lines[lines.index(create) + 1].startswith(
        f'gcloud compute tpus tpu-vm scp vit_jax_code.tar.gz {vm}:')


def test_tpu_vm_bad_settings_are_one_line(tmp_path):
  """--tpu_ssh_flags that do not split into flags, a poll interval or
  failure bound out of range, queued resources without their type, spot
  without queued resources: refused naming the value; on the command
  line in one line, exit 2, nothing written."""
  sweep_file = write_sweep(tmp_path / 's.py', [{'lr': 1e-3}],
                           {'total_steps': 100})
  result = launch(f'--sweep={sweep_file}', *_tpu_flags('gs://bucket-x/s'),
                  "--tpu_ssh_flags=--internal-ip 'x",
                  f'--logs={tmp_path / "logs"}', check=2,
                  env=dict(os.environ,
                           STORAGE_EMULATOR_HOST='http://127.0.0.1:9'))
  assert result.stderr == (
      'vit_jax.launch: --tpu_ssh_flags="--internal-ip \'x" does not split '
      'into flags (No closing quotation); valid: flags of gcloud compute '
      "tpus tpu-vm ssh, e.g. '--tunnel-through-iap --internal-ip'.\n")
  assert sorted(os.listdir(tmp_path)) == ['s.py']
  good = {'names': ['vm-a'], 'zone': 'z', 'ssh_flags': '--internal-ip',
          'poll_seconds': 1.0, 'poll_failures': 3}
  tpu_vm.TpuVmBackend.check(good, 'gs://bucket-x/s')
  for change, message in [
      ({'ssh_flags': 'internal-ip'}, "('internal-ip' is none)"),
      ({'poll_seconds': 0.0}, '--tpu_poll_seconds=0.0 must be positive'),
      ({'poll_failures': 0}, '--tpu_poll_failures=0 must be at least 1'),
      ({'queued_resources': True, 'accelerator_type': 'v4-8'},
       'give --tpu_runtime_version (e.g. v4-32, tpu-ubuntu2204-base)'),
      ({'spot': True}, '--tpu_spot is for VMs the launcher creates: add '
       '--tpu_queued_resources')]:
    with pytest.raises(ValueError, match=re.escape(message)):
      tpu_vm.TpuVmBackend.check({**good, **change}, 'gs://bucket-x/s')


def test_tpu_vm_two_workers_match_one_process(tmp_path, data_dir, gcs):
  """A run on a 2-worker TPU VM (2 JAX processes x 4 CPU devices through
  the stand-in gcloud), its sweep on gs:// (the GCS emulator), ends with
  the params of one process fed the same global batches."""
  fixed = tiny_fixed(data_dir, total_steps=3, eval_every_steps=3,
                     **{'checkpoint.every_steps': 3})
  sweep_file = write_sweep(tmp_path / 'tpu.py', [{'lr': 1e-3}], fixed)
  sweep_dir = f'gs://{gcs.bucket}/tpu-sweep'
  logs = tmp_path / 'logs'
  calls = tmp_path / 'gcloud.jsonl'
  env = dict(os.environ, PATH=f'{FAKE_GCLOUD}:{os.environ["PATH"]}',
             FAKE_TPU_ROOT=str(tmp_path / 'vms'), FAKE_GCLOUD_LOG=str(calls),
             XLA_FLAGS='--xla_force_host_platform_device_count=4 '
             '--xla_backend_optimization_level=0')
  result = launch(f'--sweep={sweep_file}', *_tpu_flags(
      sweep_dir, f'--tpu_python={sys.executable}'), f'--logs={logs}',
                  env=env)
  log = (logs / 'lr=0.001.log').read_text()
  assert result.returncode == 0, result.stdout + result.stderr + log
  verbs = [json.loads(line)[3] for line in calls.read_text().splitlines()]
  # code, unpack, the detached start, polls, the logs' tails
  assert verbs[:3] == ['scp', 'ssh', 'ssh'] and set(verbs[3:]) == {'ssh'}
  assert 'step 3/3' in log and 'worker statuses [0, 0]' in log
  # Both workers got the code (in the sweep's own folder), and ran from it.
  code = tpu_vm.code_dir({}, record_lib.read(sweep_dir))
  assert code.startswith('vit_jax_sweeps/tpu-sweep-')
  for worker in ('worker-0', 'worker-1'):
    assert (tmp_path / 'vms' / 'vm-a' / worker / code / 'vit_jax' /
            'main.py').exists()
  assert statuses(sweep_dir)['lr=0.001']['state'] == 'done'
  assert record_lib.read(sweep_dir)['runs'][0]['workdir'] == (
      f'{sweep_dir}/lr=0.001')

  config = override(tiny_config(data_dir), {
      k: v for k, v in fixed.items() if not k.startswith('evals')})
  config.lr = 1e-3
  expected = multihost_reference_params(config, processes=2)
  got = checkpoint.restore_params(f'{sweep_dir}/lr=0.001/checkpoints', 3)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected),
                  strict=True):
    np.testing.assert_allclose(a, b, atol=1e-5)


class _ScriptedWatch(tpu_vm_watch.Watch):
  """A watch whose ssh calls answer from a script: (status, output)."""

  def __init__(self, answers, **spec):
    self.lines = []
    super().__init__(dict({'run': 'r', 'vm': 'vm', 'attempt_dir': 'x/r/A',
                           'ssh': [], 'start': 'START', 'poll': 'POLL',
                           'stop': 'STOP', 'poll_seconds': 0,
                           'max_failures': 3, 'start_seconds': 300}, **spec),
                     say=self.lines.append)
    self.answers, self.sent = list(answers), []

  def ssh(self, remote):
    self.sent.append(remote)
    return self.answers.pop(0) if remote in ('START', 'POLL') else (0, '')


def _polled(*states):
  return 0, ''.join(f'{tpu_vm_watch.PREFIX} {s}\n' for s in states)


@pytest.mark.parametrize('answers, code, sent', [
    # failed polls in a row below the bound are retried
    ([(255, 'ssh: connection lost'), (255, ''), _polled('running', 'running'),
      (-9, ''), _polled('ended 0', 'ended 0')], 0, 5),
    # as many as the bound: given up (the trainers may still run)
    ([(0, ''), (255, ''), (255, ''), (0, 'garbled')], 1, 4),
    # a worker the start did not reach: the start is sent again
    ([(0, ''), _polled('running', 'absent'), (0, ''),
      _polled('ended 0', 'ended 3')], 3, 4),
    # a worker whose trainer vanished without a status
    ([(0, ''), _polled('ended 0', 'lost')], 1, 2),
    # the first non-zero status of a worker
    ([(0, ''), _polled('ended 137', 'ended 1')], 137, 2),
])
def test_tpu_vm_watch_polls_through_failures(answers, code, sent):
  """The watch's decisions on scripted answers (no gcloud)."""
  watch = _ScriptedWatch(answers)
  assert watch.run() == code
  started = [r for r in watch.sent if r in ('START', 'POLL')]
  assert len(started) == sent and not watch.answers
  if code == 1 and 'garbled' in str(answers):
    assert 'no answer from vm in 3 polls; giving up' in ' '.join(watch.lines)


def test_tpu_vm_watch_stop_is_retried_until_it_gets_through():
  """SIGTERM to the watch: the stop goes out (again after a failed ssh),
  and the watch waits for the trainers' exit status."""
  answers = {'START': iter([(0, '')]), 'STOP': iter([(255, ''), (0, '')]),
             'POLL': iter([_polled('running'), _polled('running'),
                           _polled('ended 3')])}
  watch = tpu_vm_watch.Watch({'run': 'r', 'vm': 'vm', 'attempt_dir': 'x',
                              'ssh': [], 'start': 'START', 'poll': 'POLL',
                              'stop': 'STOP', 'poll_seconds': 0,
                              'max_failures': 3, 'start_seconds': 300},
                             say=lambda line: None)
  sent = []

  def ssh(remote):
    sent.append(remote)
    if remote == 'START':
      watch.stopping = True  # SIGTERM came during the start
    return next(answers[remote]) if remote in answers else (0, 'the logs')

  watch.ssh = ssh
  assert watch.run() == 3
  assert sent[:5] == ['START', 'STOP', 'POLL', 'STOP', 'POLL']
  assert sent.count('STOP') == 2 and sent.count('POLL') == 3


def _alive(pid):
  """Whether a process runs (a zombie does not)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except FileNotFoundError:
    return False


def _fake_tpu_env(tmp_path, **more):
  return dict(os.environ, PATH=f'{FAKE_GCLOUD}:{os.environ["PATH"]}',
              FAKE_TPU_ROOT=str(tmp_path / 'vms'),
              FAKE_GCLOUD_LOG=str(tmp_path / 'gcloud.jsonl'),
              XLA_FLAGS='--xla_backend_optimization_level=0', **more)


def test_tpu_vm_runs_survive_killed_ssh_connections(tmp_path, data_dir):
  """Runs start detached on the workers and are watched by polling: a
  sweep of two runs on two VMs (one worker each) whose ssh connections
  are killed (the stand-in hangs up their sessions and SIGKILLs itself:
  the starts' and some polls') still finishes every run, each started
  once; the launcher reports success."""
  fixed = tiny_fixed(data_dir, total_steps=6, eval_every_steps=6,
                     **{'checkpoint.every_steps': 6})
  sweep_file = write_sweep(tmp_path / 'drop.py', [{'lr': 1e-3}, {'lr': 2e-3}],
                           fixed)
  sweep_dir = tmp_path / 'sweep'
  logs = tmp_path / 'logs'
  # ssh calls 1-2 unpack the code; 3 on are the starts and polls.
  env = _fake_tpu_env(tmp_path, FAKE_TPU_WORKERS='1',
                      FAKE_GCLOUD_KILL_SSH='3,4,5,6,9,10,15')
  result = launch(f'--sweep={sweep_file}', *_tpu_flags(
      sweep_dir, '--tpu_names=vm-a,vm-b', '--tpu_allow_local_sweep_dir',
      f'--tpu_python={sys.executable}', '--tpu_ssh_flags=--internal-ip'),
                  f'--logs={logs}', env=env)
  text = {name: (logs / f'{name}.log').read_text()
          for name in ('lr=0.001', 'lr=0.002')}
  assert result.returncode == 0, result.stdout + result.stderr + str(text)
  calls = [json.loads(line) for line in
           (tmp_path / 'gcloud.jsonl').read_text().splitlines()]
  assert len([c for c in calls if c[3] == 'ssh']) > 15  # the kills came
  assert all('--internal-ip' in call for call in calls)
  # The killed calls showed as failed ssh (status -9), retried.
  assert sum(t.count('(ssh status -9)') for t in text.values()) >= 3
  code = tpu_vm.code_dir({}, record_lib.read(str(sweep_dir)))
  for name, log in text.items():
    assert 'step 6/6' in log and 'worker statuses [0]' in log, log
    workdir = sweep_dir / name
    assert (workdir / 'done').exists()
    assert checkpoint.has_step(str(workdir / 'checkpoints'), 6)
    assert statuses(sweep_dir)[name]['state'] == 'done'
    # One attempt folder (one start got through), its trainer gone.
    attempts = list((tmp_path / 'vms').glob(f'vm-*/worker-0/{code}-runs/'
                                            f'{name}/*'))
    assert len(attempts) == 1, attempts
    assert (attempts[0] / 'status').read_text().strip() == '0'
    assert not _alive(int((attempts[0] / 'pid').read_text()))


def test_tpu_vm_sigterm_to_the_launcher_stops_the_detached_run(tmp_path,
                                                               data_dir):
  """SIGTERM to the launcher: the run's watch sends the pkill to the
  workers and waits; the detached trainer saves and exits 3, the launcher
  exits 3 and the run is `preempted`, its trainer gone."""
  sweep_file = write_sweep(tmp_path / 'one.py', [{'lr': 1e-3}],
                           tiny_fixed(data_dir, total_steps=5000,
                                      log_every_steps=10,
                                      eval_every_steps=5000,
                                      **{'checkpoint.every_steps': 5000}))
  sweep_dir = tmp_path / 'sweep'
  process = subprocess.Popen(
      [sys.executable, '-m', 'vit_jax.launch', f'--sweep={sweep_file}',
       *_tpu_flags(sweep_dir, '--tpu_allow_local_sweep_dir',
                   f'--tpu_python={sys.executable}'),
       f'--logs={tmp_path / "logs"}'], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True,
      env=_fake_tpu_env(tmp_path, FAKE_TPU_WORKERS='1'))
  workdir = sweep_dir / 'lr=0.001'
  wait_for_training(workdir, process)
  process.send_signal(signal.SIGTERM)
  output, _ = process.communicate(timeout=1800)
  log = (tmp_path / 'logs' / 'lr=0.001.log').read_text()
  assert process.returncode == 3, output + log
  assert 'sent SIGTERM to the trainers' in log
  got = statuses(sweep_dir)['lr=0.001']
  assert got['state'] == 'preempted' and 0 < got['step'] < 5000, got
  steps = checkpoint.TrainCheckpointer(str(workdir / 'checkpoints')
                                       ).all_steps()
  assert len(steps) == 1 and got['step'] <= steps[0] < 5000  # saved on TERM
  attempt, = (tmp_path / 'vms').glob('vm-a/worker-0/*/*-runs/lr=0.001/*')
  assert (attempt / 'status').read_text().strip() == '3'
  assert not _alive(int((attempt / 'pid').read_text()))


def _preempt(root, vm):
  """What a spot VM's preemption does in the stand-in: its queued resource
  SUSPENDED (ssh to it fails), then its processes killed."""
  path = root / 'queued' / f'{vm}.json'
  path.write_text(json.dumps({**json.loads(path.read_text()),
                              'state': 'SUSPENDED'}))
  for pid_file in (root / vm).glob('worker-*/**/pid'):
    try:
      os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    except ProcessLookupError:
      pass


def test_tpu_vm_a_preempted_spot_vm_is_created_again_and_the_run_resumes(
    tmp_path, data_dir):
  """--tpu_queued_resources: the launcher creates the spot VM's queued
  resource, waits until ACTIVE, sets it up; preempted mid-run (SUSPENDED,
  its trainer killed), the VM is deleted, created and set up again, and
  the run restarts and resumes from its last checkpoint: done, exit 0."""
  fixed = tiny_fixed(data_dir, total_steps=30, log_every_steps=10,
                     eval_every_steps=30, **{'checkpoint.every_steps': 10})
  sweep_file = write_sweep(tmp_path / 'spot.py', [{'lr': 1e-3}], fixed)
  sweep_dir = tmp_path / 'sweep'
  logs = tmp_path / 'logs'
  process = subprocess.Popen(
      [sys.executable, '-m', 'vit_jax.launch', f'--sweep={sweep_file}',
       *_tpu_flags(sweep_dir, '--tpu_allow_local_sweep_dir',
                   f'--tpu_python={sys.executable}', '--tpu_queued_resources',
                   '--tpu_accelerator_type=v4-8', '--tpu_spot',
                   '--tpu_runtime_version=tpu-ubuntu2204-base',
                   '--tpu_poll_failures=1000'),
       f'--logs={logs}'], cwd=ROOT, stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT, text=True,
      env=_fake_tpu_env(tmp_path, FAKE_TPU_WORKERS='1'))
  workdir = sweep_dir / 'lr=0.001'
  deadline = time.time() + 1800
  while not checkpoint.has_step(str(workdir / 'checkpoints'), 10):
    assert time.time() < deadline and process.poll() is None
    time.sleep(0.1)
  _preempt(tmp_path / 'vms', 'vm-a')
  output, _ = process.communicate(timeout=1800)
  log = (logs / 'lr=0.001.log').read_text()
  assert process.returncode == 0, output + log
  assert "vm-a's queued resource is SUSPENDED" in log
  assert 'Resuming from step' in log and 'worker statuses [0]' in log, log
  assert statuses(sweep_dir)['lr=0.001']['state'] == 'done'
  assert checkpoint.has_step(str(workdir / 'checkpoints'), 30)
  calls = [json.loads(line)[2:4] for line in
           (tmp_path / 'gcloud.jsonl').read_text().splitlines()]
  queued = [verb for kind, verb in calls if kind == 'queued-resources']
  assert queued.count('create') == 2 and queued.count('delete') == 1
  creates = [json.loads(line) for line in
             (tmp_path / 'gcloud.jsonl').read_text().splitlines()
             if '--node-id=vm-a' in line]
  assert all('--spot' in call for call in creates)
  # Two attempts' folders: the first went with the old VM's disks.
  attempts = list((tmp_path / 'vms').glob('vm-a/worker-0/*/*-runs/*/*'))
  assert len(attempts) == 1 and attempts[0].name.endswith('-restart1')


@pytest.mark.parametrize('spec', ['configs/sweeps/digits_pooling.py',
                                  'configs/sweeps/digits_pooling.py:short'])
def test_shipped_sweeps_validate(tmp_path, spec):
  loaded = sweep_lib.load(os.path.join(ROOT, spec), str(tmp_path), ROOT)
  assert len(loaded.runs) == 6
  assert loaded.runs[0].name == 'pool_type=cls,lr=0.001'


def test_the_digits_scaling_study_validates(tmp_path):
  """docs/scaling.md's study: 4 ViT and 2 Mixer trunks, 3 branches each."""
  loaded = sweep_lib.load(
      os.path.join(ROOT, 'configs/sweeps/digits_scaling.py'), str(tmp_path),
      ROOT)
  assert len(loaded.runs) == 24
  assert [run.name for run in loaded.runs[-4:]] == [
      'recipe=mixer-m', 'recipe=mixer-m,branch=60+20',
      'recipe=mixer-m,branch=120+40', 'recipe=mixer-m,branch=240+80']
  assert [run.total_steps for run in loaded.runs[:4]] == [480, 80, 160, 320]


@pytest.mark.parametrize('arg, lengths', [('', [300, 600, 1200]),
                                          (':short', [150, 300, 600])])
def test_the_segformer_ladder_validates(tmp_path, arg, lengths):
  """configs/sweeps/segformer_mosaics.py: three sizes x three lengths of
  the segmentation demo, its metric one the runs log."""
  loaded = sweep_lib.load(
      os.path.join(ROOT, f'configs/sweeps/segformer_mosaics.py{arg}'),
      str(tmp_path), ROOT)
  assert [run.total_steps for run in loaded.runs] == lengths * 3
  assert loaded.runs[0].name == (
      f'recipe=XS,total_steps={lengths[0]},warmup_steps={lengths[0] // 12}')
  # (loading checked that the runs log the sweep's metric, val/miou)
  recipe = config_lib.resolve(config_lib.parse_command_line(
      os.path.join(ROOT, 'configs/segformer_mosaics.py:XS'), []))
  logged = sweep_lib.logged_metrics(recipe)
  assert {'val/miou', 'val/pixel_accuracy', 'val/iou/0',
          'val/iou/10'} <= set(logged)
  assert 'val/iou/11' not in logged and 'val/accuracy' not in logged
