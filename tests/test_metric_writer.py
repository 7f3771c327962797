"""metrics.jsonl, TensorBoard events (read back by TensorFlow), progress."""

import io
import json
import math
import os

from vit_jax import metric_writer


def test_crc32c_check_value():
  # The standard check value of CRC-32C (Castagnoli).
  assert metric_writer.crc32c(b'123456789') == 0xE3069283


def test_jsonl_and_tensorboard_agree(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path))
  writer.write(10, {'train/loss': 2.5, 'train/lr': 1e-3})
  writer.write(20, {'train/loss': float('nan'), 'val/accuracy': 0.75})
  writer.close()
  rows = [json.loads(line) for line in open(tmp_path / 'metrics.jsonl')]
  assert rows[0] == {'step': 10, 'train/loss': 2.5, 'train/lr': 1e-3}
  assert rows[1]['step'] == 20 and rows[1]['train/loss'] == 'nan'

  import tensorflow as tf  # an independent reader of the event file
  (event_file,) = os.listdir(tmp_path / 'tb')
  scalars = {}
  for record in tf.data.TFRecordDataset(str(tmp_path / 'tb' / event_file)):
    event = tf.compat.v1.Event.FromString(record.numpy())
    for value in event.summary.value:
      scalars[(event.step, value.tag)] = value.simple_value
  assert scalars[(10, 'train/loss')] == 2.5
  assert math.isclose(scalars[(10, 'train/lr')], 1e-3, rel_tol=1e-6)
  assert scalars[(20, 'val/accuracy')] == 0.75
  assert math.isnan(scalars[(20, 'train/loss')])


def test_disabled_writer_writes_nothing(tmp_path):
  writer = metric_writer.MetricWriter(str(tmp_path / 'run'), enabled=False)
  writer.write(1, {'train/loss': 1.0})
  writer.close()
  assert not (tmp_path / 'run').exists()


def test_progress_plain_lines_when_not_a_terminal():
  stream = io.StringIO()
  progress = metric_writer.Progress(100, stream=stream, interactive=False)
  progress.update(50, 0.5, 1234.0)
  progress.update(100, 0.25, 1000.0)
  lines = stream.getvalue().splitlines()
  assert lines[0].startswith('step 50/100 ( 50.0%) loss 0.5000 1,234 img/s '
                             'ETA ')
  assert lines[1].startswith('step 100/100 (100.0%) loss 0.2500')
