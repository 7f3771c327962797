"""The embedded digits dataset: scikit-learn's handwritten digits as TFDS.

1,797 real 8x8 grey-scale images of the digits 0-9 (the UCI "Optical
Recognition of Handwritten Digits" test set, Alpaydin & Kaynak 1998), shipped
inside scikit-learn, so the dataset is prepared offline. It lets the whole
pipeline (TFDS files, splits, preprocessing, training) run in tests and on a
laptop without a download.

Splits are fixed: a permutation of the 1,797 rows drawn once with
`numpy.random.RandomState(SPLIT_SEED)`; its first 1,437 rows are 'train', the
other 360 'test'. The split is not stratified; every class has between 27 and
46 test examples (see `tests/test_data.py`). Pixel values 0..16 are scaled to
0..255 as round(v * 255 / 16), so 0 -> 0 and 16 -> 255.

Preparing it is quiet: TFDS's "Downloading and preparing dataset ..." /
"Dataset ... downloaded and prepared" lines, its progress bars and its log
records below ERROR are for downloads, which this builder never does; they
are dropped (only while digits is prepared), and two INFO log lines say
where the dataset is written.
"""

import contextlib
import logging
import os
from typing import Iterator, Optional, Tuple

from absl import logging as absl_logging
from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from vit_jax.data import tensorflow_cpu  # noqa: F401  (hides GPUs from TF)

NAME = 'digits'
NUM_CLASSES = 10
IMAGE_SHAPE = (8, 8, 1)
NUM_TRAIN = 1437
NUM_TEST = 360
SPLIT_SEED = 0


def _load_images_and_labels() -> Tuple[np.ndarray, np.ndarray]:
  """All 1,797 images as uint8 [N, 8, 8, 1] in 0..255, labels int64 [N]."""
  # Imported here: scikit-learn is needed only to prepare the dataset.
  from sklearn import datasets as sklearn_datasets  # pylint: disable=g-import-not-at-top
  bunch = sklearn_datasets.load_digits()
  values = bunch.images  # [N, 8, 8] float64 in 0..16
  images = np.round(values * (255.0 / 16.0)).astype(np.uint8)[..., None]
  return images, bunch.target.astype(np.int64)


def split_rows() -> dict:
  """The fixed sklearn rows of each split: {'train': rows, 'test': rows}."""
  order = np.random.RandomState(SPLIT_SEED).permutation(NUM_TRAIN + NUM_TEST)
  return {'train': np.sort(order[:NUM_TRAIN]),
          'test': np.sort(order[NUM_TRAIN:])}


class Digits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn's 8x8 handwritten digits with fixed train/test splits."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Rows of sklearn.datasets.load_digits, 1,437 '
                            'train / 360 test by a seeded permutation.'}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS 4.9 finds this itself through `importlib_resources`, a back-port
    # that Python >= 3.9 installs need not have; the answer is this file.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=IMAGE_SHAPE),
            'label': tfds.features.ClassLabel(num_classes=NUM_CLASSES),
            # The row in sklearn's array: a stable id of the example.
            'id': tfds.features.Scalar(dtype=np.int64),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://archive.ics.uci.edu/dataset/80',
    )

  # TFDS prints these two with `print` for datasets it downloads, to tell
  # the user what is being fetched; nothing is fetched here.
  def _log_download_bytes(self) -> None:
    absl_logging.info('Preparing the embedded digits dataset in %s.',
                      self.data_dir)

  def _log_download_done(self) -> None:
    absl_logging.info('Digits dataset prepared in %s.', self.data_dir)

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download: the data ships with scikit-learn.
    images, labels = _load_images_and_labels()
    return {split: self._generate_examples(images, labels, rows)
            for split, rows in split_rows().items()}

  def _generate_examples(self, images: np.ndarray, labels: np.ndarray,
                         rows: np.ndarray) -> Iterator[Tuple[int, dict]]:
    for row in rows:
      yield int(row), {'image': images[row], 'label': labels[row],
                       'id': int(row)}


def default_data_dir() -> str:
  """TFDS's default data directory (TFDS_DATA_DIR or ~/tensorflow_datasets)."""
  return os.path.expanduser(tfds.core.constants.DATA_DIR)


def prepared_builder(data_dir: Optional[str] = None) -> Digits:
  """The digits builder in `data_dir`, prepared there first if needed."""
  with _quiet_tfds():  # Finding no prepared version in data_dir is logged.
    builder = Digits(data_dir=data_dir)
    if builder.is_prepared():
      return builder
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except FileExistsError:
      # Another process (multi-host, shared data_dir) finished preparing the
      # same version first: its copy is identical (fixed splits).
      builder = Digits(data_dir=data_dir)
      if not builder.is_prepared():
        raise
  return builder


class _DropTfdsRecords(logging.Filter):
  """Drops TFDS's own log records below ERROR (e.g. 'Variant folder ... has
  no dataset_info.json', logged when a builder finds nothing prepared)."""

  def filter(self, record: logging.LogRecord) -> bool:
    from_tfds = (os.sep + 'tensorflow_datasets' + os.sep) in record.pathname
    return record.levelno >= logging.ERROR or not from_tfds


@contextlib.contextmanager
def _quiet_tfds():
  """No TFDS progress bars and no TFDS log records below ERROR, for a block.

  TFDS keeps the progress-bar switch in a module global with no getter; it
  is read so that a caller who turned the bars off keeps them off.
  """
  tqdm_utils = tfds.core.utils.tqdm_utils
  bars_were_on = getattr(tqdm_utils, '_active', True)
  records_filter = _DropTfdsRecords()
  absl_logger = logging.getLogger('absl')
  tfds.disable_progress_bar()
  absl_logger.addFilter(records_filter)
  try:
    yield
  finally:
    absl_logger.removeFilter(records_filter)
    if bars_were_on:
      tfds.enable_progress_bar()
