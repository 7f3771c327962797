"""Where a run's numbers go: `metrics.jsonl`, TensorBoard events, the console.

`metrics.jsonl` holds one JSON object per logging event, always with
"step", metric names as `group/name` (docs/DESIGN.md). TensorBoard event files
are written under `tb/` without TensorFlow: records are serialised with
TensorBoard's protobuf classes and framed as TFRecords here (length, masked
CRC-32C of the length, data, masked CRC-32C of the data), so GPU machines
without TensorFlow write them too.

Both are written through `vit_jax.paths.Appender`: locally each write goes
to the file at once; on object stores (gs://), which cannot append, writes
are buffered and each file is uploaded whole at most every
`flush_seconds`, at `flush()` (the trainer calls it before each checkpoint
save, so rows up to a saved step are never lost) and at `close()`.
Uploading the whole event file each time is what TensorFlow's own GCS
writer does; TensorBoard reads the grown object on from where it was. Each
writer has its own event file, and metrics.jsonl uploads are
compare-and-swaps, so a trainer and `vit_jax.evaluate` may write one
workdir together.
"""

import json
import math
import os
import socket
import struct
import sys
import time
from typing import Mapping, Optional

from absl import logging

from vit_jax import layout
from vit_jax import paths

# How often buffered metrics reach an object store (`paths.Appender`).
FLUSH_SECONDS = 30.0


def _crc32c_table():
  table = []
  for byte in range(256):
    crc = byte
    for _ in range(8):
      crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    table.append(crc)
  return table


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
  """CRC-32C (Castagnoli), the checksum of TFRecord framing."""
  crc = 0xFFFFFFFF
  for byte in data:
    crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
  return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
  crc = crc32c(data)
  return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TensorBoardWriter:
  """Scalar summaries in a TensorBoard event file, written without TF."""

  def __init__(self, directory: str, flush_seconds: float = FLUSH_SECONDS):
    from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
    self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
    paths.makedirs(directory)
    name = (f'events.out.tfevents.{int(time.time())}.{socket.gethostname()}'
            f'.{os.getpid()}')
    self._file = paths.Appender(paths.join(directory, name), flush_seconds)
    self._write(event_pb2.Event(wall_time=time.time(),
                                file_version='brain.Event:2'))

  def _write(self, event) -> None:
    data = event.SerializeToString()
    header = struct.pack('<Q', len(data))
    self._file.write(header + struct.pack('<I', _masked_crc(header)) + data +
                     struct.pack('<I', _masked_crc(data)))

  def restart(self, step: int) -> None:
    """Marks a (re)start at `step`: TensorBoard then discards the events of
    earlier writers at steps >= `step` (a resumed run logs them again)."""
    self._write(self._event_pb2.Event(
        wall_time=time.time(), step=int(step),
        session_log=self._event_pb2.SessionLog(
            status=self._event_pb2.SessionLog.START)))

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    summary = self._summary_pb2.Summary(value=[
        self._summary_pb2.Summary.Value(tag=name, simple_value=float(value))
        for name, value in values.items()])
    self._write(self._event_pb2.Event(wall_time=time.time(), step=int(step),
                                      summary=summary))

  def flush(self) -> None:
    self._file.flush()

  def close(self) -> None:
    self._file.close()


class MetricWriter:
  """Appends to `metrics.jsonl` and TensorBoard; only the main process writes.

  Locally, JSON lines are flushed at once, so a later analysis (or a
  crash) sees everything logged so far; on gs:// see the module docstring.
  `restart_step`: the first step a resumed run logs (see
  `TensorBoardWriter.restart`; the trainer drops metrics.jsonl rows past
  it, `workdir.truncate_metrics`).
  """

  def __init__(self, workdir: str, enabled: bool = True,
               tensorboard: bool = True, restart_step: Optional[int] = None,
               flush_seconds: float = FLUSH_SECONDS):
    self._enabled = enabled
    self._jsonl = None
    self._tensorboard = None
    if not enabled:
      return
    paths.makedirs(workdir)
    self._jsonl = paths.Appender(paths.join(workdir, layout.METRICS),
                                 flush_seconds)
    if tensorboard:
      try:
        self._tensorboard = TensorBoardWriter(
            paths.join(workdir, layout.TENSORBOARD), flush_seconds)
        if restart_step is not None:
          self._tensorboard.restart(restart_step)
      except ImportError:
        logging.warning('The tensorboard package is not installed: no '
                        'TensorBoard events; metrics.jsonl is still written.')

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self._enabled or not metrics:
      return
    values = {name: value.item() if hasattr(value, 'item') else value
              for name, value in metrics.items()}
    self._jsonl.write(json.dumps(
        {'step': int(step), **{k: _json_safe(v) for k, v in values.items()}})
                      + '\n')
    if self._tensorboard is not None:
      self._tensorboard.scalars(step, {
          k: v for k, v in values.items() if isinstance(v, (int, float))})

  def flush(self) -> None:
    """Makes everything written so far durable (uploads on gs://)."""
    for handle in (self._jsonl, self._tensorboard):
      if handle is not None:
        handle.flush()

  def close(self) -> None:
    for handle in (self._jsonl, self._tensorboard):
      if handle is not None:
        handle.close()


def _json_safe(value):
  if isinstance(value, float) and not math.isfinite(value):
    return str(value)  # JSON has no NaN / Inf
  return value


class Progress:
  """Loss, images/s and ETA: a live line on a terminal, else plain lines."""

  def __init__(self, total_steps: int, first_step: int = 0,
               stream=None, interactive: Optional[bool] = None):
    self._stream = stream or sys.stderr
    self._interactive = (self._stream.isatty() if interactive is None
                         else interactive)
    self._total = total_steps
    self._first_step = first_step
    self._start = time.monotonic()

  def update(self, step: int, loss: float, img_per_sec: float) -> None:
    done = step - self._first_step
    elapsed = time.monotonic() - self._start
    remaining = (self._total - step) * elapsed / done if done > 0 else 0.0
    fraction = step / max(self._total, 1)
    text = (f'step {step}/{self._total} ({100 * fraction:5.1f}%) '
            f'loss {loss:.4f} {img_per_sec:,.0f} img/s '
            f'ETA {_format_seconds(remaining)}')
    if self._interactive:
      bar = '#' * int(20 * fraction)
      self._stream.write(f'\r[{bar:<20}] {text}\x1b[K')
      if step >= self._total:
        self._stream.write('\n')
    else:
      self._stream.write(text + '\n')
    self._stream.flush()


  def message(self, text: str) -> None:
    """A line of its own (evaluation results, warnings)."""
    if self._interactive:
      self._stream.write('\r\x1b[K')
    self._stream.write(text + '\n')
    self._stream.flush()


def _format_seconds(seconds: float) -> str:
  seconds = int(seconds)
  hours, rest = divmod(seconds, 3600)
  minutes, seconds = divmod(rest, 60)
  return f'{hours}:{minutes:02d}:{seconds:02d}' if hours else (
      f'{minutes}:{seconds:02d}')
