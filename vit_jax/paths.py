"""Paths of workdirs, local or on Google Cloud Storage (`gs://`).

Every file vit_jax reads or writes in a workdir (config.json, the lock,
metrics.jsonl, tb/, checkpoints/, plots/, done / error, and what a sweep
keeps beside its runs) goes through this module, so a workdir can be a
local directory or `gs://bucket/dir` with no other change. Paths are plain
strings; the functions take and return strings. Every function but the
string operations `is_local`, `join`, `parent` and `absolute` raises
`check_supported`'s ValueError for a path it refuses, so none of them
turns a mistyped `gs:/bucket` into a local folder.

    check_supported(path)        ValueError (scheme, supported ones) for a
                                 path no backend handles: `s3://x`, a typo
                                 `gs:/bucket`, a bad bucket name
    Path(path)                   the etils.epath.Path (pathlib API), checked
    is_local(path), join(path, *names), parent(path), absolute(path)
    exists(path), isdir(path), listdir(path) -> names ([] if absent),
    mtime(path) -> seconds or None, makedirs(path)
    read_bytes(path), read_text(path), read_json(path) -> None if absent
    write_atomic(path, data)     readers see the old or the new file, never
                                 a part (str is written as UTF-8); no
                                 temporary file is left when it fails
    write_reserved(path, reserve, data)  a small local file on a full disk,
                                 into the blocks of a file written earlier
    append(path, data)           adds to the end (creates the file)
    Appender(path)               many appends: at once locally, buffered
                                 and uploaded every `flush_seconds` on gs://
    update(path, change)         read-modify-write, retried on a conflict
    remove(path) -> bool         removes a file if it is there
    rename(source, target)       a file or a directory
    read_versioned(path) -> (data or None, version or None)
    write_if_version(path, data, version) -> new version or None
    remove_if_version(path, version) -> bool
                                 compare-and-swap; version None: create only
    check_reachable(path)        StorageUnreachableError (bucket, endpoint,
                                 cause) when gs:// cannot be reached

Backends. Local paths use `os`. `gs://` uses fsspec's gcsfs: through
etils.epath, which orbax uses for its directories and metadata too, and
directly for the writes conditioned on an object's generation. etils.epath
picks TensorFlow's tf.io.gfile for `gs://` whenever TensorFlow is
installed, unless `EPATH_USE_TF` says false; this module sets that default
(a value the user has set wins), so one client (gcsfs, with Google's
application-default credentials) reads and writes every workdir object in
the process; TensorFlow's own GCS client has no endpoint override and
could not be tested against an emulator. Orbax writes array data through
tensorstore's own GCS driver. gcsfs's listing cache is turned off
(`use_listings_cache=False`): a workdir is written by other processes
(an evaluator, a sweep launcher, tensorstore), and a cached listing would
hide their files.

Semantics on gs:// (objects, not files):
- there are no directories: `makedirs` does nothing, `isdir` is true for a
  prefix that has objects under it;
- an upload is atomic, so `write_atomic` is one upload;
- objects cannot be appended to: `append` and `update` download the
  object, change it and upload it on condition that its generation is
  unchanged (`ifGenerationMatch`), retrying on a conflict, so concurrent
  appenders (a trainer and `vit_jax.evaluate` on metrics.jsonl) lose
  nothing; `Appender` keeps the object's content after its own last upload
  and so needs no download while it is the only writer;
- `rename` is a copy then a delete of each object: not atomic;
- versions are object generations; locally a version is the file's inode,
  modification time and size, and `write_if_version` / `remove_if_version`
  check it just before an `os.replace` / `os.remove`: compare-and-swap
  across processes only on gs:// (locally `write_if_version(path, data,
  None)` is O_EXCL and exclusive; replacing is check-then-act).
"""

import functools
import importlib.util
import json
import os
import posixpath
import re
import socket
import time
import urllib.parse
import urllib.request
from typing import Any, Callable, List, Optional, Tuple, Union

from etils import epath
import fsspec

Data = Union[str, bytes]

# URI schemes a workdir may use (besides local paths), and the package that
# handles each.
SCHEMES = {'gs': 'gcsfs'}

# etils.epath: gs:// through fsspec (gcsfs), not TensorFlow (module
# docstring). Read by epath on each use, so setting it here is enough.
os.environ.setdefault('EPATH_USE_TF', 'false')
# Listings are never served from gcsfs's cache (module docstring).
fsspec.config.conf.setdefault('gs', {}).setdefault('use_listings_cache',
                                                   False)

_URI = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]+)://')
_SCHEME_LIKE = re.compile(r'^([A-Za-z][A-Za-z0-9+.-]+):')
_BUCKET = re.compile(r'^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$')
_MULTIPART_BOUNDARY = 'vit_jax-7d0c0b6e1f2a'


def _supported_text() -> str:
  return 'local paths and ' + ', '.join(f'{s}://' for s in SCHEMES)


def check_supported(path: str) -> None:
  """Raises ValueError unless `path` is local or of a scheme in SCHEMES
  whose backend is installed; names the scheme and the supported ones.

  A local path starting with a scheme-like word and a colon (`gs:/b`,
  `gs:bucket`) is refused too: it is almost always a mistyped URL, and
  would otherwise silently become a local folder named `gs:`.
  """
  if not isinstance(path, str) or not path:
    raise ValueError(f'Empty path {path!r}.')
  match = _URI.match(path)
  if match is None:
    like = _SCHEME_LIKE.match(path)
    if like:
      raise ValueError(
          f'{path!r} looks like a URL with its "//" missing (scheme '
          f'{like.group(1)!r}); supported: {_supported_text()} (write '
          f'./{path} for a local folder of that name).')
    return
  scheme = match.group(1)
  if scheme not in SCHEMES:
    hint = " (Google Cloud Storage is 'gs://')" if scheme == 'gcs' else ''
    raise ValueError(f'Unsupported scheme {scheme + "://"!r} in {path!r}{hint}'
                     f'; supported: {_supported_text()}.')
  bucket = path[match.end():].split('/', 1)[0]
  if not _BUCKET.match(bucket):
    raise ValueError(f'{path!r}: {bucket!r} is not a valid bucket name (3-222 '
                     f'lowercase letters, digits, "-", "_", "."); write '
                     f'{scheme}://BUCKET/DIR.')
  package = SCHEMES[scheme]
  if not _installed(package):
    raise ValueError(f'{scheme}:// paths need the {package} package, which is '
                     f'not installed (pip install -r requirements.txt).')


@functools.lru_cache(maxsize=None)
def _installed(package: str) -> bool:
  return importlib.util.find_spec(package) is not None


def is_local(path: str) -> bool:
  return _URI.match(path) is None


def _local(path: str) -> bool:
  """`is_local`, after `check_supported` for anything scheme-like, so no
  function here ever turns `gs:/bucket` into a local folder."""
  if _SCHEME_LIKE.match(path):
    check_supported(path)
  return is_local(path)


def Path(path: str) -> epath.Path:  # pylint: disable=invalid-name
  """The etils.epath.Path of `path` (checked by `check_supported`)."""
  check_supported(path)
  return epath.Path(path)


def join(path: str, *names: str) -> str:
  return (os.path.join(path, *names) if is_local(path)
          else posixpath.join(path, *names))


def parent(path: str) -> str:
  """The directory holding `path` (absolute for a local path)."""
  if is_local(path):
    return os.path.dirname(os.path.abspath(path))
  return posixpath.dirname(path.rstrip('/'))


def absolute(path: str) -> str:
  return os.path.abspath(path) if is_local(path) else path


# ----------------------------------------------------------------------------
# Queries.


def exists(path: str) -> bool:
  return os.path.exists(path) if _local(path) else Path(path).exists()


def isdir(path: str) -> bool:
  return os.path.isdir(path) if _local(path) else Path(path).is_dir()


def listdir(path: str) -> List[str]:
  """Sorted names in a directory; [] when it does not exist."""
  try:
    if _local(path):
      return sorted(os.listdir(path))
    return sorted(child.name for child in Path(path).iterdir())
  except (FileNotFoundError, NotADirectoryError):
    return []


def mtime(path: str) -> Optional[float]:
  """Last modification (an object's last upload), or None when absent."""
  try:
    if _local(path):
      return os.path.getmtime(path)
    return float(Path(path).stat().mtime)
  except FileNotFoundError:
    return None


def makedirs(path: str) -> None:
  """Creates a local directory and its parents (nothing on gs://)."""
  if _local(path):
    os.makedirs(path, exist_ok=True)


# ----------------------------------------------------------------------------
# Reading and writing whole files.


def _bytes(data: Data) -> bytes:
  return data.encode('utf-8') if isinstance(data, str) else data


def read_bytes(path: str) -> bytes:
  if _local(path):
    with open(path, 'rb') as f:
      return f.read()
  return Path(path).read_bytes()


def read_text(path: str) -> str:
  return read_bytes(path).decode('utf-8')


def read_json(path: str) -> Optional[Any]:
  """The JSON in `path`, or None when it does not exist."""
  try:
    return json.loads(read_bytes(path))
  except FileNotFoundError:
    return None


def write_atomic(path: str, data: Data) -> None:
  """Writes a whole file; a reader never sees part of it."""
  data = _bytes(data)
  if _local(path):
    tmp = _write_tmp(path, data)
    try:
      os.replace(tmp, path)
    finally:
      _discard(tmp)  # gone once replaced; left by a failure otherwise
  else:
    _gcs_upload(path, data)


def _write_tmp(path: str, data: bytes) -> str:
  """Writes `data` to a temporary file beside `path`; its name. On any
  failure (a full disk, a directory at `path`'s parent, a signal) the
  temporary file is removed before the error propagates."""
  tmp = f'{path}.tmp-{os.getpid()}'
  try:
    with open(tmp, 'wb') as f:
      f.write(data)
  except BaseException:
    _discard(tmp)
    raise
  return tmp


def _discard(path: str) -> None:
  try:
    os.remove(path)
  except OSError:
    pass


def write_reserved(path: str, reserve: str, data: Data) -> None:
  """Writes `path` on a full disk: `data` (at most the size of the local
  file `reserve`, written earlier) overwrites the reserve's own blocks, and
  the reserve is renamed to `path`; no block is allocated."""
  data = _bytes(data)
  if not _local(path):
    raise ValueError(f'write_reserved is for local files, got {path!r}.')
  with open(reserve, 'r+b') as f:
    if len(data) > os.fstat(f.fileno()).st_size:
      raise ValueError(f'{len(data)} bytes do not fit the reserve {reserve}.')
    f.write(data)
    f.truncate(len(data))
  os.replace(reserve, path)


def append(path: str, data: Data) -> None:
  """Adds `data` at the end of `path` (created if absent)."""
  data = _bytes(data)
  if _local(path):
    with open(path, 'ab') as f:
      f.write(data)
  else:
    update(path, lambda old: (old or b'') + data)


def update(path: str, change: Callable[[Optional[bytes]], Optional[bytes]],
           attempts: int = 20) -> Tuple[Optional[bytes], Optional[str]]:
  """Replaces the file's content (None if absent) by `change(content)`.

  Nothing is written when `change` returns None. On gs:// the upload is
  conditioned on the generation that was read, and the whole
  read-change-write is retried when another writer came first. Returns
  (the content now there, its version).
  """
  for attempt in range(attempts):
    old, version = read_versioned(path)
    new = change(old)
    if new is None:
      return old, version
    new_version = write_if_version(path, new, version)
    if new_version is not None:
      return new, new_version
    time.sleep(min(0.05 * 2 ** attempt, 2.0))
  raise RuntimeError(f'{path} kept changing under {attempts} attempts to '
                     f'update it.')


def remove(path: str) -> bool:
  """Removes a file; False when it was not there."""
  try:
    if _local(path):
      os.remove(path)
    else:
      _gcs().rm_file(path)
  except FileNotFoundError:
    return False
  return True


def rename(source: str, target: str) -> None:
  """Renames a file or a directory (on gs://: copies then deletes)."""
  if _local(source):
    os.rename(source, target)
    return
  check_supported(target)
  fs = _gcs()
  prefix = source[len('gs://'):].rstrip('/')  # fs.find's names lack gs://
  objects = fs.find(source)
  if not objects:
    raise FileNotFoundError(f'Cannot rename {source}: it does not exist.')
  if exists(target):
    raise FileExistsError(f'Cannot rename {source} to {target}: it exists.')
  for name in objects:  # server-side copies, then the deletes
    fs.copy(name, target.rstrip('/') + name[len(prefix):])
  fs.rm(objects)


class Appender:
  """Appends to one file, e.g. metrics.jsonl or a TensorBoard event file.

  Locally each `write` goes to the file at once (O_APPEND). On gs://,
  objects cannot be appended to, so writes are buffered and uploaded by
  `flush()`, which `write` calls when `flush_seconds` have passed since the
  last upload (GCS allows about one update of an object per second), and
  `close()`. An upload is the object's whole content: the content after
  this Appender's last upload plus the buffer, conditioned on the object's
  generation being the one it uploaded; when another writer changed the
  object meanwhile, the object is read again and the buffer appended to
  it (`update`), so nothing of either writer is lost. A crash loses what
  was not flushed: call `flush()` before a checkpoint is saved.
  """

  def __init__(self, path: str, flush_seconds: float = 30.0):
    self.path = path
    self._local = _local(path)
    self._flush_seconds = flush_seconds
    self._pending: List[bytes] = []
    self._known: Optional[Tuple[bytes, str]] = None  # after our upload
    self._last_flush = time.monotonic()
    self._file = open(path, 'ab') if self._local else None

  def write(self, data: Data) -> None:
    if self._local:
      self._file.write(_bytes(data))
      self._file.flush()
      return
    self._pending.append(_bytes(data))
    if time.monotonic() - self._last_flush >= self._flush_seconds:
      self.flush()

  def flush(self) -> None:
    if self._local:
      self._file.flush()
      return
    if not self._pending:
      return
    pending = b''.join(self._pending)
    written = None
    if self._known is not None:
      content, version = self._known
      content += pending
      written = write_if_version(self.path, content, version)
      if written is not None:
        self._known = (content, written)
    if written is None:
      content, written = update(self.path, lambda old: (old or b'') + pending)
      self._known = (content, written)
    self._pending = []
    self._last_flush = time.monotonic()

  def close(self) -> None:
    if self._local:
      self._file.close()
    else:
      self.flush()


# ----------------------------------------------------------------------------
# Compare-and-swap (the workdir lock, `update`).


def _local_version(stat: os.stat_result) -> str:
  return f'{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}'


def read_versioned(path: str) -> Tuple[Optional[bytes], Optional[str]]:
  """(content, version) of a file, or (None, None) when absent."""
  if _local(path):
    try:
      with open(path, 'rb') as f:
        return f.read(), _local_version(os.fstat(f.fileno()))
    except FileNotFoundError:
      return None, None
  bucket, key = _bucket_key(path)
  try:
    headers, content = _gcs().call('GET', 'b/{}/o/{}', bucket, key,
                                   alt='media')
  except FileNotFoundError:
    return None, None
  return content, headers['x-goog-generation']


def write_if_version(path: str, data: Data, version: Optional[str]
                     ) -> Optional[str]:
  """Writes `data` if the file's version is still `version` (None: only if
  the file does not exist); the new version, or None if it had changed."""
  data = _bytes(data)
  if _local(path):
    if version is None:
      try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY,
                             0o644)
      except FileExistsError:
        return None
      try:
        with os.fdopen(descriptor, 'wb') as f:
          f.write(data)
          f.flush()
          return _local_version(os.fstat(f.fileno()))
      except BaseException:  # e.g. a full disk: no empty or partial file
        _discard(path)
        raise
    tmp = _write_tmp(path, data)
    try:
      try:
        current = _local_version(os.stat(path))
      except FileNotFoundError:
        current = None
      if current != version:
        return None
      os.replace(tmp, path)
    finally:
      _discard(tmp)  # gone once replaced; left by a refusal or failure
    return _local_version(os.stat(path))
  try:
    return _gcs_upload(path, data, if_generation=version or '0')
  except FileExistsError:  # 412: the generation precondition failed
    return None


def remove_if_version(path: str, version: str) -> bool:
  """Removes the file if its version is still `version`; whether it did."""
  if _local(path):
    try:
      if _local_version(os.stat(path)) != version:
        return False
      os.remove(path)
    except FileNotFoundError:
      return False
    return True
  bucket, key = _bucket_key(path)
  try:
    current = _gcs().call('GET', 'b/{}/o/{}', bucket, key, json_out=True)
    if str(current.get('generation')) != str(version):
      return False
    _gcs().call('DELETE', 'b/{}/o/{}', bucket, key,
                ifGenerationMatch=str(version))
  except (FileNotFoundError, FileExistsError):
    return False
  return True


# ----------------------------------------------------------------------------
# Reachability.


class StorageUnreachableError(OSError):
  """A gs:// path's endpoint cannot be reached (refused, no DNS, no route,
  timed out), after a few quick retries."""


def gcs_endpoint() -> str:
  """The URL gs:// requests go to (STORAGE_EMULATOR_HOST when set)."""
  emulator = os.environ.get('STORAGE_EMULATOR_HOST')
  if emulator:
    return emulator if '://' in emulator else f'http://{emulator}'
  return 'https://storage.googleapis.com'


def check_reachable(path: str, attempts: int = 3, timeout: float = 10.0,
                    backoff: float = 1.0) -> None:
  """Raises StorageUnreachableError, one line naming the bucket, the
  endpoint and the cause, when `path` is on gs:// and its endpoint takes
  no TCP connection in `attempts` tries (`backoff`, doubling, between
  them); local paths and reachable endpoints return at once. A check
  before a run, so an unreachable bucket is not retried for minutes by
  each client library in turn."""
  check_supported(path)
  if is_local(path):
    return
  bucket, _ = _bucket_key(path)
  endpoint = gcs_endpoint()
  parsed = urllib.parse.urlsplit(endpoint)
  host = parsed.hostname or ''
  port = parsed.port or (443 if parsed.scheme == 'https' else 80)
  if (parsed.scheme in urllib.request.getproxies() and
      not urllib.request.proxy_bypass(host)):
    return  # reached through a proxy: a direct probe would prove nothing
  cause = ''
  for attempt in range(attempts):
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      return
    except socket.gaierror as error:
      cause = f'cannot resolve host {host!r} ({error.strerror or error})'
    except ConnectionRefusedError:
      cause = f'connection refused by {host}:{port}'
    except socket.timeout:
      cause = f'no answer from {host}:{port} within {timeout:g} s'
    except OSError as error:
      cause = f'{host}:{port}: {error.strerror or error}'
    if attempt + 1 < attempts:
      time.sleep(backoff * 2 ** attempt)
  raise StorageUnreachableError(
      f'cannot reach bucket {bucket!r} of {path} at endpoint {endpoint}: '
      f'{cause} ({attempts} attempts)')


# ----------------------------------------------------------------------------
# gs:// through gcsfs.


def _gcs():
  """gcsfs's filesystem (fsspec caches the instance)."""
  return fsspec.filesystem('gs')


def _bucket_key(path: str) -> Tuple[str, str]:
  bucket, _, key = path[len('gs://'):].partition('/')
  return bucket, key


def _gcs_upload(path: str, data: bytes,
                if_generation: Optional[str] = None) -> str:
  """Uploads an object in one request; its generation. With
  `if_generation` ('0': must not exist) a mismatch raises FileExistsError
  (HTTP 412); `path` is checked by the caller."""
  bucket, key = _bucket_key(path)
  fs = _gcs()
  metadata = json.dumps({'name': key}).encode()
  body = b''.join([
      f'--{_MULTIPART_BOUNDARY}\r\n'.encode(),
      b'Content-Type: application/json; charset=UTF-8\r\n\r\n', metadata,
      f'\r\n--{_MULTIPART_BOUNDARY}\r\n'.encode(),
      b'Content-Type: application/octet-stream\r\n\r\n', data,
      f'\r\n--{_MULTIPART_BOUNDARY}--\r\n'.encode()])
  conditions = ({} if if_generation is None
                else {'ifGenerationMatch': str(if_generation)})
  # gcsfs's JSON-API base ends in /storage/v1/; uploads go to /upload/...
  upload_url = fs.base.replace('/storage/v1/', '/upload/storage/v1/')
  try:
    result = fs.call(
        'POST', upload_url + 'b/{}/o', bucket, uploadType='multipart',
        data=body, json_out=True, headers={
            'Content-Type':
                f'multipart/related; boundary={_MULTIPART_BOUNDARY}'},
        **conditions)
  except FileNotFoundError:
    raise FileNotFoundError(f'Cannot write {path}: bucket {bucket!r} does '
                            f'not exist.') from None
  fs.invalidate_cache(path)
  return str(result['generation'])
