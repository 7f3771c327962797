"""`python -m vit_jax.evaluate --pretrained`: few-shot evaluation of a
checkpoint by name, offline, on digits: a trained run exported in timm's
Hub layout scores what the workdir path scores; the table, the metrics;
bad flags and settings named."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

import tiny
from vit_jax import export
from vit_jax import layout
from vit_jax import train
from vit_jax.evaluate import __main__ as evaluate_main

SUBPROCESS_TIMEOUT = 900
# The few-shot settings both paths use: a few shots and seeds keep it short.
SHOTS, SEEDS, L2_REG = (1, 5, 10), (0, 1), 2.0 ** 10


def _command(*args, data_dir=None):
  command = [sys.executable, '-m', 'vit_jax.evaluate', *args]
  if data_dir:
    command.append(f'--config.data_dir={data_dir}')
  return subprocess.run(command, cwd=tiny.ROOT, capture_output=True,
                        text=True, timeout=SUBPROCESS_TIMEOUT, check=False,
                        env={**os.environ, 'HF_HUB_OFFLINE': '1'})


@pytest.fixture(scope='module')
def exported(tmp_path_factory, data_dir):
  """A digits run (tiny ViT, 40 steps), its few-shot figures from the
  workdir path, and its timm export: (workdir metrics, Hub directory)."""
  root = tmp_path_factory.mktemp('pretrained_fewshot')
  workdir = str(root / 'run')
  config = tiny.tiny_config(data_dir, total_steps=40, eval_every_steps=None)
  train.train_and_evaluate(config, workdir)
  config.evals = ml_collections.ConfigDict({'fewshot': {
      'kind': 'fewshot', 'datasets': {'digits': {
          'name': 'digits', 'pp': 'value_range(-1, 1)'}},
      'shots': SHOTS, 'seeds': SEEDS, 'l2_reg': L2_REG}})
  by_step = evaluate_main.evaluate_workdir(config, workdir, 'latest',
                                           ['fewshot'])
  hub = str(root / 'hub')
  export.export_run(workdir, 'timm', hub)
  with open(os.path.join(hub, 'config.json')) as f:
    hub_config = json.load(f)
  # The run evaluates its 8x8 images uncropped, and the export says so
  # (without crop_pct, timm's 0.875 would resize to 9 and crop 8).
  assert hub_config['pretrained_cfg']['crop_pct'] == 1.0
  return by_step[40], hub


def test_pretrained_scores_what_the_workdir_path_scores(exported, data_dir,
                                                        tmp_path):
  workdir_metrics, hub = exported
  out = tmp_path / 'out'
  result = _command(
      f'--pretrained={hub}', f'--config={tiny.ROOT}/configs/fewshot_eval.py',
      f'--output_dir={out}', '--config.datasets=digits',
      f'--config.shots={SHOTS}', f'--config.seeds={SEEDS}',
      f'--config.l2_reg={L2_REG}', '--config.batch_size=64',
      data_dir=data_dir)
  assert result.returncode == 0, result.stderr[-3000:]

  rows = layout.parse_metrics((out / layout.METRICS).read_text()).rows
  assert len(rows) == 1
  _, row = rows[0]
  names = [f'fewshot/digits/{k}shot{suffix}' for k in SHOTS
           for suffix in ('', '_std')]
  assert sorted(row) == sorted(['step', *names])
  assert row['step'] == evaluate_main.PRETRAINED_STEP
  for name in names:  # the same evaluator on the same pixels and weights
    assert row[name] == pytest.approx(workdir_metrics[name], abs=1e-6), name
  for k in SHOTS:  # chance is 0.1
    assert row[f'fewshot/digits/{k}shot'] > 0.3, row

  # The table: printed and written, a row per dataset, a column per k.
  table = (out / evaluate_main.TABLE).read_text()
  assert table in result.stdout
  lines = table.splitlines()
  assert lines[0].startswith(f'Few-shot accuracy of {hub}: representation '
                             f"'pre_logits', standardized protocol, l2_reg "
                             f'1024, mean +- std over seeds [0, 1].')
  # The checkpoint's own preprocessing: 8x8 grey, mean and std 0.5.
  assert lines[1].startswith("digits: digits 'train' -> 'test', pp "
                             '"decode(1)|')
  assert 'normalize([0.5], [0.5])' in lines[1]
  assert lines[3].split() == ['dataset', '1-shot', '5-shot', '10-shot']
  cells = lines[4].split()
  assert cells[0] == 'digits'
  for i, k in enumerate(SHOTS):
    mean, plus_minus, std = cells[1 + 3 * i:4 + 3 * i]
    assert plus_minus == '+-'
    assert float(mean) == pytest.approx(row[f'fewshot/digits/{k}shot'],
                                        abs=5e-5)
    assert float(std) == pytest.approx(row[f'fewshot/digits/{k}shot_std'],
                                       abs=5e-5)


def test_settings_errors_name_the_valid_choices():
  config = tiny.load_config('fewshot_eval', 'digits')
  settings = evaluate_main.fewshot_settings(config)
  assert settings['datasets'] == {'digits': {
      'name': 'digits', 'train_split': 'train', 'test_split': 'test'}}
  assert settings['shots'] == (1, 5, 10, 25) and settings['l2_reg'] == 1024
  # big_vision's six by default; names are comma-separated, repeats once.
  default = evaluate_main.fewshot_settings(tiny.load_config('fewshot_eval'))
  assert list(default['datasets']) == ['caltech', 'cars', 'cifar100', 'dtd',
                                       'pets', 'uc_merced']
  config.datasets = ' cifar100, pets,cifar100'
  assert list(evaluate_main.fewshot_settings(config)['datasets']) == [
      'cifar100', 'pets']

  config.datasets = 'cifar100,cifar10'
  with pytest.raises(ValueError, match=r"names \['cifar10'\], which "
                     r"config.catalog does not hold; valid: \['caltech', "
                     r"'cars', 'cifar100', 'digits', 'dtd', 'imagenet', "
                     r"'pets', 'uc_merced'\]"):
    evaluate_main.fewshot_settings(config)
  config.datasets = ' , '
  with pytest.raises(ValueError, match='names no dataset; choose from'):
    evaluate_main.fewshot_settings(config)
  with pytest.raises(ValueError, match=r"keys that are not its settings: "
                     r"\['branch', 'checkpoint', .*'total_steps'.*\(valid: "
                     r"\['batch_size', 'catalog', 'data_dir', 'datasets', "
                     r"'holdout_fraction', 'l2_reg', .*training recipe goes "
                     r'with --workdir'):
    evaluate_main.fewshot_settings(tiny.load_config('digits'))


@pytest.mark.parametrize('args, message', [
    # Both sources, --output_dir without --pretrained.
    (['--workdir=WD', '--pretrained=HUB', '--output_dir=OUT'],
     "give exactly one of --workdir (a training run's checkpoints) and "
     '--pretrained'),
    # --pretrained without its config and output, with workdir flags.
    (['--pretrained=HUB', '--step=all', '--evals=fewshot'],
     '--pretrained needs --config=configs/fewshot_eval.py[:DATASET,...]; '
     '--pretrained needs --output_dir=DIR (where metrics.jsonl and '
     "fewshot.txt go); --step and --evals choose a workdir's checkpoints "
     'and evaluators; they do not go with --pretrained'),
])
def test_bad_flags_exit_2_with_one_line(args, message, tmp_path):
  args = [arg.replace('WD', str(tmp_path / 'wd')).replace(
      'HUB', str(tmp_path / 'hub')).replace('OUT', str(tmp_path / 'out'))
          for arg in args]
  result = _command(*args)
  assert result.returncode == layout.EXIT_USAGE, result.stderr[-3000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert lines[0].startswith('vit_jax.evaluate: bad command line: ')
  assert message in lines[0]
  assert not os.listdir(tmp_path)


def test_bad_dataset_exits_1_with_one_line(tmp_path):
  out = tmp_path / 'out'
  result = _command(f'--pretrained={tmp_path / "hub"}',
                    f'--config={tiny.ROOT}/configs/fewshot_eval.py:digits,mnist',
                    f'--output_dir={out}')
  assert result.returncode == layout.EXIT_FAILED, result.stderr[-3000:]
  assert result.stderr.strip().splitlines() == [
      "vit_jax.evaluate: config.datasets names ['mnist'], which "
      "config.catalog does not hold; valid: ['caltech', 'cars', 'cifar100', "
      "'digits', 'dtd', 'imagenet', 'pets', 'uc_merced']."]
  assert not out.exists()


def test_unknown_dataset_and_missing_checkpoint_are_named(tmp_path,
                                                          data_dir):
  config = tiny.load_config('fewshot_eval', 'digits')
  config.data_dir = data_dir
  missing = tmp_path / 'no_such_checkpoint'
  missing.mkdir()
  out = str(tmp_path / 'out')
  config.catalog.digits.name = 'digitz'  # checked before any loading
  with pytest.raises(ValueError, match="unknown dataset 'digitz'; did you "
                     "mean 'digits'?"):
    evaluate_main.evaluate_pretrained(config, str(missing), out)
  config.catalog.digits.name = 'digits'
  with pytest.raises(FileNotFoundError, match='config.json'):
    evaluate_main.evaluate_pretrained(config, str(missing), out)
  assert os.listdir(tmp_path) == ['no_such_checkpoint']


def test_grey_dataset_into_an_rgb_model_is_decoded_to_its_channels(
    tmp_path, data_dir):
  """Digits (grey) through an RGB checkpoint: converted to RGB, resized to
  its 32 px and normalised as it is evaluated. RGB copies of a grey image
  through the patch kernel K give what the grey image gives through K
  summed over its input channels: the one-channel copy of the checkpoint
  must score exactly as the RGB one."""
  from test_predict import _golden_vit_hub_directory  # pylint: disable=g-import-not-at-top
  config = tiny.load_config('fewshot_eval', 'digits')
  config.update(shots=(1, 5), seeds=(0,), data_dir=data_dir, batch_size=64)
  results = {}
  for channels in (3, 1):
    hub = _golden_vit_hub_directory(tmp_path / f'vit_{channels}', channels)
    results[channels] = evaluate_main.evaluate_pretrained(
        config, hub, str(tmp_path / f'out_{channels}'))
    table = (tmp_path / f'out_{channels}' / evaluate_main.TABLE).read_text()
    assert f'pp "decode({channels})|' in table
  assert sorted(results[3]) == sorted(
      f'fewshot/digits/{k}shot{suffix}' for k in (1, 5)
      for suffix in ('', '_std'))
  for name, value in results[3].items():
    assert value == pytest.approx(results[1][name], abs=1e-6), name
  assert results[3]['fewshot/digits/5shot'] > 0.2  # random weights; chance 0.1
