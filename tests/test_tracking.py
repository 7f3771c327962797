"""Experiment tracking: each run's hyperparameters in TensorBoard's hparams
dashboard (read back by a real TensorBoard server), and Weights & Biases
in offline mode (its run file read back record by record).

The W&B run file (`run-ID.wandb`) is read here without W&B's code, from
its documented framing (LevelDB's log format): a 7-byte header (':W&B',
magic 0xBEE1, version 0), then 32 KiB blocks of chunks, each 4 bytes of
CRC-32 (of the chunk's type byte and data), 2 bytes of length and 1 of
type (full, first, middle, last), the records being wandb_internal_pb2
`Record` messages.
"""

import glob
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib

import pytest

import tiny
from vit_jax import config as config_lib
from vit_jax import metric_writer
from vit_jax import train


def _free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _post(port, route, body):
  request = urllib.request.Request(
      f'http://127.0.0.1:{port}/data/plugin/hparams/{route}',
      data=json.dumps(body).encode(), method='POST',
      headers={'Content-Type': 'application/json',
               'X-XSRF-Protected': '1'})
  with urllib.request.urlopen(request, timeout=1800) as response:
    return json.load(response)


def test_tensorboard_compares_the_runs_by_their_hyperparameters(tmp_path):
  """Two runs of one sweep, lr 1e-3 (done) and 3e-3 (failed): TensorBoard
  on the sweep directory lists every config key as a hyperparameter, lr as
  the one that differs, each run as a session group named after it with
  its status and its last metric values."""
  sweep = tmp_path / 'sweep'
  base = metric_writer.hparams_of(
      config_lib.resolve(tiny.tiny_config('/nonexistent')))
  assert base['lr'] and base['model.name'] == 'vit'
  assert base['checkpoint.keep_steps'] == '[]'  # a list, as JSON text
  assert not any(key.startswith(('evals.', 'wandb.')) for key in base)
  assert 'data.data_dir' not in base
  for lr, outcome in ((1e-3, 'done'), (3e-3, 'failed')):
    writer = metric_writer.MetricWriter(str(sweep / f'lr={lr}'),
                                        hparams=dict(base, lr=lr))
    for step in (1, 2, 3):
      writer.write(step, {'train/loss': lr + 1 / step,
                          'val/accuracy': 0.5 + lr * step})
    writer.end(outcome)

  port = _free_port()
  server = subprocess.Popen(
      [sys.executable, '-m', 'tensorboard.main', f'--logdir={sweep}',
       f'--port={port}', '--host=127.0.0.1', '--load_fast=false',
       '--reload_interval=1'], stdout=subprocess.DEVNULL,
      stderr=subprocess.PIPE, text=True)
  try:
    deadline = time.time() + 1800  # TensorBoard imports TF: slow if loaded
    while True:  # until both runs are loaded (lr then differs)
      try:
        experiment = _post(port, 'experiment', {'experimentName': ''})
        lr = {info['name']: info
              for info in experiment.get('hparamInfos', [])}.get('lr', {})
        if lr.get('differs') and len(experiment.get('metricInfos', [])) == 2:
          break
      except OSError:
        pass
      assert server.poll() is None, server.stderr.read()
      assert time.time() < deadline
      time.sleep(1)
    infos = {info['name']: info for info in experiment['hparamInfos']}
    assert set(infos) == set(base)
    assert infos['lr']['differs'] and infos['lr']['domainInterval'] == {
        'minValue': 1e-3, 'maxValue': 3e-3}
    assert not any(info['differs'] for name, info in infos.items()
                   if name != 'lr')
    assert infos['model.name']['domainDiscrete'] == ['vit']
    assert {tuple(sorted(m['name'].values()))
            for m in experiment['metricInfos']} == {
                ('', 'train/loss'), ('', 'val/accuracy')}

    groups = _post(port, 'session_groups', {
        'experimentName': '', 'startIndex': 0, 'sliceSize': 10,
        'allowedStatuses': ['STATUS_SUCCESS', 'STATUS_FAILURE',
                            'STATUS_RUNNING', 'STATUS_UNKNOWN'],
        'colParams': [{'hparam': 'lr'},
                      {'metric': {'tag': 'val/accuracy', 'group': ''}}]})
    got = {}
    for group in groups['sessionGroups']:
      (session,) = group['sessions']
      values = {m['name']['tag']: (m['trainingStep'], m['value'])
                for m in session['metricValues']}
      got[group['name']] = (group['hparams']['lr'], session['status'],
                            values['val/accuracy'])
    assert got == {
        'lr=0.001': (1e-3, 'STATUS_SUCCESS', (3, pytest.approx(0.503))),
        'lr=0.003': (3e-3, 'STATUS_FAILURE', (3, pytest.approx(0.509)))}
  finally:
    server.terminate()
    server.communicate(timeout=1800)


def _wandb_records(path):
  """The records of a W&B run file: [(kind, wandb_internal_pb2.Record)]."""
  from wandb.proto import wandb_internal_pb2  # pylint: disable=g-import-not-at-top
  with open(path, 'rb') as f:
    data = f.read()
  assert data[:4] == b':W&B' and data[4:7] == b'\xe1\xbe\x00', data[:7]
  block, position, pending, records = 32768, 7, b'', []
  while position + 7 <= len(data):
    left = block - position % block
    if left < 7:  # the block's tail is padding
      position += left
      continue
    crc, length, kind = struct.unpack('<IHB', data[position:position + 7])
    if kind == 0:
      break
    chunk = data[position + 7:position + 7 + length]
    assert crc == zlib.crc32(bytes([kind]) + chunk), position
    position += 7 + length
    pending += chunk
    if kind in (1, 4):  # full, last
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pending)
      records.append((record.WhichOneof('record_type'), record))
      pending = b''
  return records


def test_a_run_logs_to_weights_and_biases_offline(tmp_path, data_dir):
  """config.wandb.project with mode 'offline' (the default): the trainer's
  W&B run holds the hyperparameters as its config, every metrics.jsonl
  row at its step, and exit code 0; its id is kept in the workdir.
  TensorBoard's session start and end are in the run's events too."""
  pytest.importorskip('wandb')
  config = tiny.tiny_config(data_dir, total_steps=4, log_every_steps=2,
                            eval_every_steps=4)
  config.wandb = {'project': 'vit_jax_tests', 'tags': ('tiny',)}
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)

  with open(os.path.join(workdir, 'wandb_id')) as f:
    run_id = f.read().strip()
  (path,) = glob.glob(os.path.join(workdir, 'wandb', 'offline-run-*',
                                   f'run-{run_id}.wandb'))
  records = _wandb_records(path)
  (run,) = [r.run for kind, r in records if kind == 'run']
  assert (run.run_id, run.project, run.display_name, list(run.tags)) == (
      run_id, 'vit_jax_tests', 'run', ['tiny'])
  logged_config = {item.key: json.loads(item.value_json)
                   for item in run.config.update if item.key != '_wandb'}
  assert logged_config == metric_writer.hparams_of(
      config_lib.resolve(config))
  history = {}
  for kind, record in records:
    if kind == 'history':
      # A key with '/' in it is kept as a one-element nested key.
      row = {item.key or '/'.join(item.nested_key): json.loads(
          item.value_json) for item in record.history.item}
      history.setdefault(row['_step'], {}).update(
          {k: v for k, v in row.items() if not k.startswith('_')})
  rows = {}
  for row in train.read_metrics(workdir):
    rows.setdefault(row['step'], {}).update(
        {k: v for k, v in row.items() if k != 'step'})
  assert history.keys() == rows.keys() == {2, 4}
  for step, values in rows.items():
    assert history[step] == pytest.approx(values), step
  (exit_record,) = [r.exit for kind, r in records if kind == 'exit']
  assert exit_record.exit_code == 0

  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import plugin_data_pb2  # pylint: disable=g-import-not-at-top
  events = event_accumulator.EventAccumulator(os.path.join(workdir, 'tb'))
  events.Reload()
  contents = events.PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(
      contents['_hparams_/session_start_info']).session_start_info
  assert start.group_name == 'run'
  assert start.hparams['lr'].number_value == config.lr
  end = plugin_data_pb2.HParamsPluginData.FromString(
      contents['_hparams_/session_end_info']).session_end_info
  assert end.status == 1  # STATUS_SUCCESS


def test_wandb_refusals_name_the_value_and_the_fix(tmp_path, data_dir,
                                                    monkeypatch):
  config = tiny.tiny_config(data_dir)
  config.wandb = {'project': 'p', 'mode': 'offlin'}
  with pytest.raises(ValueError, match=r"Unknown wandb.mode 'offlin'; valid "
                     r"choices: \['offline', 'online'\]"):
    config_lib.resolve(config)
  settings = {'project': 'p', 'mode': 'offline'}
  with pytest.raises(ValueError, match='mode=offline keeps its files in the '
                     'workdir, which must then be local, not gs://b/run'):
    metric_writer.check_wandb(settings, 'gs://b/run')
  monkeypatch.setitem(sys.modules, 'wandb', None)  # not installed
  with pytest.raises(ValueError, match=r"config.wandb.project='p' asks for "
                     r"Weights & Biases, but the wandb package is not "
                     r"installed: pip install wandb"):
    metric_writer.check_wandb(settings, str(tmp_path))
  metric_writer.check_wandb({'project': None}, 'gs://b/run')  # off: fine
  # The trainer refuses before it writes anything.
  config.wandb.mode = 'offline'
  with pytest.raises(ValueError, match='wandb package is not installed'):
    train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert not (tmp_path / 'run').exists()
