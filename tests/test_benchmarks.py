"""benchmarks/train_throughput.py keeps running: a tiny smoke run of two
families, in a fresh process so that its imports are its own (no
TensorFlow); so do benchmarks/launcher_status.py, segmentation_step.py,
depthwise_conv.py and loop_overhead.py. Nothing is timed
against a threshold; see benchmarks/README.md for the figures."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vit_jax import build
from vit_jax.models import counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load_script(name='train_throughput'):
  """benchmarks/NAME.py as a module (benchmarks/ is not a package, and
  stays off sys.path here)."""
  spec = importlib.util.spec_from_file_location(
      name, os.path.join(ROOT, 'benchmarks', f'{name}.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module

# Runs the script's main() in a fresh interpreter, then reports whether
# TensorFlow was imported along the way.
_RUNNER = """
import json, sys
sys.path.insert(0, 'benchmarks')
import train_throughput
train_throughput.main(sys.argv[1:])
print(json.dumps({'tensorflow_imported': 'tensorflow' in sys.modules}))
"""

POSITIVE = ('compile_s', 'step_s', 'images_per_s', 'model_flops_per_step',
            'xla_flops_per_step', 'measured_peak_flops', 'mfu_measured',
            'params', 'global_batch', 'xla_memory_bytes')


def _smoke_run(model):
  """`--tiny --steps=1 --warmup=0` of `model` (comma-separated names) in a
  fresh interpreter:
  (its JSON records, its table lines)."""
  env = dict(os.environ, PYTHONPATH=ROOT)
  result = subprocess.run(
      [sys.executable, '-c', _RUNNER, '--tiny', '--steps=1', '--warmup=0',
       '--batch=1', '--peak_size=64', f'--models={model}'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800,
      check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  records = [json.loads(line) for line in lines if line.startswith('{')]
  table = [line for line in lines if line.startswith('|')]
  return records, table


def test_smoke_run_reports_every_field():
  """Two families in one process (start-up and compilation dominate)."""
  models = ['vit_b16', 'mae_l16']
  records, table = _smoke_run(','.join(models))
  peak, *results, imports = records
  assert peak['measured_peak_flops'] > 0
  assert [record['model'] for record in results] == models
  for record in results:
    for key in POSITIVE:
      assert record[key] > 0, (record['model'], key, record[key])
    assert record['compute_dtype'] == 'bfloat16'
    assert record['param_dtype'] == 'float32'
    assert record['optimizer'] == 'adamw'
    assert record['resolution'] == 32
    assert len(record['step_s_all']) == 1
    assert 'peak_memory_bytes' in record  # None on CPU
    assert 'vendor_peak_flops' in record and 'mfu_vendor' in record
  assert len(table) == 2 + len(models)  # header, rule, a row per model
  for model, row in zip(models, table[2:]):
    assert row.startswith(f'| {model} | jax |')
  assert not imports['tensorflow_imported']


def test_mae_counts_its_encoder_on_the_kept_patches():
  """MAE's model FLOPs: the encoder on the kept quarter of the patches plus
  the decoder (the tiny MAE's encoder is the tiny ViT's)."""
  train_throughput = _load_script()
  vit, _ = train_throughput.model_config('vit_b16', tiny=True)
  mae, _ = train_throughput.model_config('mae_l16', tiny=True)
  assert mae.model.mask_ratio == 0.75
  vit_flops = counts.forward_flops(build.build_model(vit.model), 32)
  mae_flops = counts.forward_flops(build.build_model(mae.model), 32)
  assert 0 < mae_flops < vit_flops


def test_unknown_model_names_the_valid_ones():
  train_throughput = _load_script()
  with pytest.raises(ValueError, match="'vit_x'.*vit_b16.*mae_l16"):
    train_throughput.parse_models('vit_b16,vit_x')
  with pytest.raises(ValueError, match="--compare='jax'.*timm"):
    train_throughput.parse_args(['--compare=jax'])


def test_launcher_status_benchmark_times_a_sweep_in_every_state(tmp_path):
  """benchmarks/launcher_status.py: its 24-run sweep holds six runs in
  each state `status` shows, and it reports both commands."""
  launcher_status = _load_script('launcher_status')
  sweep_dir = str(tmp_path / 'sweep')
  launcher_status.make_sweep(sweep_dir)
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.launch', 'status',
       f'--sweep_dir={sweep_dir}', '--format=json'], cwd=ROOT,
      capture_output=True, text=True, timeout=900, check=True)
  states = [json.loads(line)['state'] for line in result.stdout.splitlines()]
  assert sorted(states) == sorted(['done', 'failed', 'preempted',
                                   'pending'] * 6)

  result = subprocess.run(
      [sys.executable, os.path.join('benchmarks', 'launcher_status.py'),
       '--repeats=1'], cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT),
      capture_output=True, text=True, timeout=1800, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()]
  assert [r['command'] for r in records] == ['python -c pass', 'status']
  assert all(len(r['cpu_s_all']) == 1 for r in records)
  assert records[1]['cpu_s'] > 0


def test_segmentation_step_benchmark_splits_unetr_step():
  """benchmarks/segmentation_step.py --tiny: both demo models' steps run,
  UNETR's with the encoder-only step beside it (its convolutions removed,
  so fewer FLOPs), in a fresh interpreter without TensorFlow."""
  runner = ('import json, sys; sys.path.insert(0, "benchmarks"); '
            'import segmentation_step; segmentation_step.main(sys.argv[1:]); '
            'print(json.dumps({"tf": "tensorflow" in sys.modules}))')
  result = subprocess.run(
      [sys.executable, '-c', runner, '--tiny', '--steps=1'], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      timeout=1800, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  *records, imports = [json.loads(line) for line in result.stdout.splitlines()
                       if line.startswith('{')]
  assert [r['model'] for r in records] == ['segformer_demo', 'unetr_demo']
  for record in records:
    for key in ('compile_s', 'step_s', 'images_per_s', 'xla_flops_per_step'):
      assert record[key] > 0, (record['model'], key)
  unetr = records[1]
  assert unetr['encoder_step_s'] > 0 and unetr['conv3d_share'] < 1
  assert not imports['tf']
  segmentation_step = _load_script('segmentation_step')
  with pytest.raises(SystemExit, match=r"unknown --models \['x'\]"):
    segmentation_step.main(['--models=x'])


def test_depthwise_conv_benchmark_times_both_implementations(capsys):
  """benchmarks/depthwise_conv.py: both implementations of a case time
  their forward and backward passes and agree; unknown cases named."""
  depthwise_conv = _load_script('depthwise_conv')
  depthwise_conv.main(['--steps=1', '--cases=mvit_pool_3x3x3_stride_1x2x2'])
  records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [r['impl'] for r in records] == ['conv', 'shifts']
  for record in records:
    assert record['forward_ms'] > 0 and record['forward_backward_ms'] > 0
    assert record['max_abs_diff_vs_conv'] < 1e-5
  with pytest.raises(SystemExit, match=r"unknown --cases \['x'\]"):
    depthwise_conv.main(['--cases=x'])


def test_loop_overhead_benchmark_times_the_loop_and_the_bare_step(tmp_path):
  """benchmarks/loop_overhead.py --tiny: the real loop (train_and_evaluate
  on prepared batches) and the bare step, each once, the input pipeline
  apart, and the summary, in a fresh interpreter."""
  result = subprocess.run(
      [sys.executable, os.path.join('benchmarks', 'loop_overhead.py'),
       '--tiny', f'--data_dir={tmp_path / "tfds"}'], cwd=ROOT,
      env=dict(os.environ, PYTHONPATH=ROOT), capture_output=True, text=True,
      timeout=1800, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines()
             if line.startswith('{')]
  assert [r['kind'] for r in records] == ['loop', 'bare', 'pipeline',
                                          'summary']
  loop, bare, pipeline, summary = records
  for record in (loop, bare):
    assert record['steps'] == 4  # steps 5-8: between the log steps 4 and 8
    assert record['seconds'] > 0 and record['steps_per_s'] > 0
    assert record['cpu_ms_per_step'] >= 0
  assert pipeline['batches_per_s'] > 0
  for key in ('loop_steps_per_s', 'bare_steps_per_s', 'ms_per_step_loop',
              'ms_per_step_bare'):
    assert summary[key] > 0, key
  assert len(summary['overhead_all']) == 1
  assert summary['overhead'] == summary['overhead_all'][0]
  assert 'cpu_overhead' in summary
  assert summary['config']['steps'] == 12
