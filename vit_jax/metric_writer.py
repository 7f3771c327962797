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

Hyperparameters: the trainer gives each (re)start the run's
`hparams_of(config)`, which go to TensorBoard's hparams dashboard (the
plugin's session start info, the run's name as its trial id, and a
session end info when the run is done or has failed), so TensorBoard on a
sweep directory compares the runs by any config key against their
metrics. Weights & Biases (`config.wandb.project` set; the wandb package
installed) gets the same scalars, with the hyperparameters as the W&B
run's config: see `WandbWriter`.
"""

import hashlib

import json
import math
import os
import socket
import struct
import sys
import time
import tempfile
from typing import Any, Dict, Mapping, Optional

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

  def hparams(self, values: Mapping[str, Any], trial_id: str) -> None:
    """The hparams plugin's session start info: `values` ({name: bool,
    int, float or str}) as this run's hyperparameters, `trial_id` (the
    run's name) its session group."""
    from tensorboard.plugins.hparams import summary_v2  # pylint: disable=g-import-not-at-top
    self._write(self._event_pb2.Event(
        wall_time=time.time(), summary=summary_v2.hparams_pb(
            dict(values), trial_id=trial_id, start_time_secs=time.time())))

  def end_session(self, success: bool) -> None:
    """The hparams plugin's session end info: the run is done (success)
    or has failed."""
    # pylint: disable=g-import-not-at-top
    from tensorboard.plugins.hparams import api_pb2
    from tensorboard.plugins.hparams import metadata
    from tensorboard.plugins.hparams import plugin_data_pb2
    # pylint: enable=g-import-not-at-top
    data = plugin_data_pb2.HParamsPluginData(
        session_end_info=plugin_data_pb2.SessionEndInfo(
            status=api_pb2.STATUS_SUCCESS if success
            else api_pb2.STATUS_FAILURE,
            end_time_secs=time.time()))
    summary = self._summary_pb2.Summary()
    summary.value.add(tag=metadata.SESSION_END_INFO_TAG,
                      metadata=metadata.create_summary_metadata(data),
                      tensor=metadata.NULL_TENSOR)
    self._write(self._event_pb2.Event(wall_time=time.time(),
                                      summary=summary))

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


# Config keys left out of a run's hyperparameters: the evaluations'
# entries (their datasets and options: dozens of keys that do not vary
# between runs), where the data lives, and the tracking itself.
_NOT_HPARAMS = ('evals.', 'data.data_dir', 'wandb.')


def hparams_of(config: Any) -> Dict[str, Any]:
  """The run's hyperparameters, {'section.key': value}: every leaf of the
  resolved config but `_NOT_HPARAMS`, booleans, numbers and strings as
  they are, lists as JSON text, None left out (TensorBoard's hparams take
  no None)."""
  from vit_jax import config as config_lib  # pylint: disable=g-import-not-at-top
  flat = config_lib.flat_items(config_lib.to_json_dict(config))
  values = {}
  for key, value in sorted(flat.items()):
    if value is None or key.startswith(_NOT_HPARAMS):
      continue
    if not isinstance(value, (bool, int, float, str)):
      value = json.dumps(value, sort_keys=True)
    values[key] = value
  return values


def check_wandb(settings: Mapping[str, Any], workdir: str) -> None:
  """Raises ValueError, naming the value and the fix, when `settings`
  (config.wandb) ask for Weights & Biases and it cannot run here."""
  if not settings.get('project'):
    return
  if not paths.is_local(workdir) and settings.get('mode') == 'offline':
    raise ValueError(f'config.wandb.mode=offline keeps its files in the '
                     f'workdir, which must then be local, not {workdir}; '
                     f'use config.wandb.mode=online.')
  try:
    import wandb  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError:
    raise ValueError(
        f'config.wandb.project={settings["project"]!r} asks for Weights & '
        f'Biases, but the wandb package is not installed: pip install '
        f'wandb (or leave config.wandb.project unset).') from None


class WandbWriter:
  """The run's scalars and hyperparameters in a Weights & Biases run.

  One W&B run per workdir: its id is drawn once and kept in
  `DIR/wandb_id`, so every (re)start of the run continues the same W&B
  run (`resume='allow'`). Its local files go to `DIR/wandb/` (to a
  temporary folder for a gs:// workdir, online only). `mode='offline'`
  needs no network or account: `wandb sync DIR/wandb/offline-run-*`
  uploads them later (each offline restart is a folder of its own, with
  the same run id). W&B takes a run's steps in increasing order, so
  online, after a resume, the steps run again since the last checkpoint
  keep their first values there (metrics.jsonl and TensorBoard take the
  new ones). W&B's console capture and system statistics are off: the
  trainer's own output is unchanged.
  """

  def __init__(self, workdir: str, settings: Mapping[str, Any],
               hparams: Mapping[str, Any], run_name: str):
    import wandb  # pylint: disable=g-import-not-at-top
    id_path = paths.join(workdir, layout.WANDB_ID)
    if paths.exists(id_path):
      run_id = paths.read_text(id_path).strip()
    else:
      run_id = hashlib.sha256(f'{workdir} {time.time()} {os.getpid()}'.encode()
                              ).hexdigest()[:12]
      paths.write_atomic(id_path, run_id + '\n')
    directory = (workdir if paths.is_local(workdir)
                 else tempfile.mkdtemp(prefix='vit_jax_wandb-'))
    self._run = wandb.init(
        project=settings['project'], entity=settings.get('entity'),
        group=settings.get('group'), name=settings.get('name') or run_name,
        tags=list(settings.get('tags') or ()), config=dict(hparams),
        id=run_id, resume='allow', dir=directory, mode=settings['mode'],
        settings=wandb.Settings(console='off', quiet=True,
                                x_disable_stats=True, disable_git=True,
                                save_code=False))

  def log(self, step: int, values: Mapping[str, Any]) -> None:
    self._run.log(dict(values), step=int(step))

  def finish(self, outcome: Optional[str]) -> None:
    """outcome: 'done' (exit code 0), 'preempted' (3, marked preempting),
    'failed' (1) or None (closed without one)."""
    codes = {'done': 0, 'failed': layout.EXIT_FAILED,
             'preempted': layout.EXIT_PREEMPTED}
    try:
      if outcome == 'preempted':
        self._run.mark_preempting()
      self._run.finish(exit_code=codes.get(outcome))
    except Exception as error:  # pylint: disable=broad-except
      # Never in the way of the run's own outcome (or its exception).
      logging.warning('Weights & Biases could not finish its run: %s', error)


class MetricWriter:
  """Appends to `metrics.jsonl` and TensorBoard; only the main process writes.

  Locally, JSON lines are flushed at once, so a later analysis (or a
  crash) sees everything logged so far; on gs:// see the module docstring.
  `restart_step`: the first step a resumed run logs (see
  `TensorBoardWriter.restart`; the trainer drops metrics.jsonl rows past
  it, `workdir.truncate_metrics`). `hparams` (`hparams_of(config)`): the
  run's hyperparameters for TensorBoard (trial id `run_name`, by default
  the workdir's name) and W&B; `wandb`: config.wandb, a W&B run when its
  project is set (`check_wandb` first).
  """

  def __init__(self, workdir: str, enabled: bool = True,
               tensorboard: bool = True, restart_step: Optional[int] = None,
               flush_seconds: float = FLUSH_SECONDS,
               hparams: Optional[Mapping[str, Any]] = None,
               run_name: Optional[str] = None,
               wandb: Optional[Mapping[str, Any]] = None):
    self._enabled = enabled
    self._jsonl = None
    self._tensorboard = None
    self._wandb = None
    if not enabled:
      return
    run_name = run_name or os.path.basename(workdir.rstrip('/'))
    paths.makedirs(workdir)
    self._jsonl = paths.Appender(paths.join(workdir, layout.METRICS),
                                 flush_seconds)
    if tensorboard:
      try:
        self._tensorboard = TensorBoardWriter(
            paths.join(workdir, layout.TENSORBOARD), flush_seconds)
        if restart_step is not None:
          self._tensorboard.restart(restart_step)
        if hparams is not None:
          self._tensorboard.hparams(hparams, run_name)
      except ImportError:
        logging.warning('The tensorboard package is not installed: no '
                        'TensorBoard events; metrics.jsonl is still written.')
    if wandb and wandb.get('project'):
      self._wandb = WandbWriter(workdir, wandb, hparams or {}, run_name)

  def write(self, step: int, metrics: Mapping[str, float]) -> None:
    if not self._enabled or not metrics:
      return
    values = {name: value.item() if hasattr(value, 'item') else value
              for name, value in metrics.items()}
    self._jsonl.write(json.dumps(
        {'step': int(step), **{k: _json_safe(v) for k, v in values.items()}})
                      + '\n')
    scalars = {k: v for k, v in values.items()
               if isinstance(v, (int, float))}
    if self._tensorboard is not None:
      self._tensorboard.scalars(step, scalars)
    if self._wandb is not None:
      self._wandb.log(step, scalars)

  def end(self, outcome: str) -> None:
    """The run's outcome, 'done', 'failed' or 'preempted', for TensorBoard's
    hparams dashboard (done or failed: the session's end) and W&B (its
    exit code); then `close`."""
    if self._tensorboard is not None and outcome in ('done', 'failed'):
      self._tensorboard.end_session(success=outcome == 'done')
    if self._wandb is not None:
      wandb, self._wandb = self._wandb, None
      wandb.finish(outcome)
    self.close()

  def flush(self) -> None:
    """Makes everything written so far durable (uploads on gs://)."""
    for handle in (self._jsonl, self._tensorboard):
      if handle is not None:
        handle.flush()

  def close(self) -> None:
    if self._wandb is not None:
      wandb, self._wandb = self._wandb, None
      wandb.finish(None)
    for handle in (self._jsonl, self._tensorboard):
      if handle is not None:
        handle.close()
    self._jsonl = self._tensorboard = None  # closing twice does nothing


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
