"""Class names: a dataset's, and ImageNet-1k's readable ones.

    names, channels = dataset_labels(config.data)   # TFDS's label names
    names = readable_imagenet_names(names)          # 'n01440764' -> 'tench'

ImageNet-1k's lists come from files TensorFlow Datasets installs, found and
read without importing TFDS; `dataset_labels` imports TensorFlow when it
runs, importing this module does not.
"""

import importlib.util
import os
import re
from typing import List, Tuple

# TFDS's imagenet2012 class file: WordNet ids in ImageNet-1k's label order.
IMAGENET_LABELS = os.path.join('datasets', 'imagenet2012', 'labels.txt')
# A TFDS module holding ImageNet-1k's readable class names in the same
# order (IMAGENET_LABELS_LIST; plain Python, read without importing TFDS).
IMAGENET_READABLE = os.path.join('datasets', 'siscore', 'labels.py')


def dataset_labels(data_config) -> Tuple[List[str], int]:
  """(class names, image channels) of a dataset.

  Names: TFDS's label names (read from the builder's code where the
  dataset is not prepared here), an image folder's class folders, '0'..'9'
  for digits. Raises ValueError, FileNotFoundError or KeyError where the
  dataset cannot be found (an image folder not on this machine) or has no
  label names.
  """
  from vit_jax import data  # pylint: disable=g-import-not-at-top
  from vit_jax.data import sources  # pylint: disable=g-import-not-at-top  (TF)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = data.resolve_config(data_config)
  try:
    builder = sources.get_builder(config)
  except sources.DatasetNotPreparedError:
    builder = tfds.builder(config.name, data_dir=config.data_dir)
  features = builder.info.features
  names = [str(name) for name in features['label'].names]
  shape = features['image'].shape
  channels = int(shape[-1]) if shape and shape[-1] else 3
  return names, channels


def _tfds_file(relative: str) -> str:
  spec = importlib.util.find_spec('tensorflow_datasets')
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError('tensorflow_datasets is not installed: no '
                            'ImageNet class names.')
  return os.path.join(spec.submodule_search_locations[0], relative)


def imagenet_wordnet_ids() -> List[str]:
  """ImageNet-1k's 1000 classes as WordNet ids ('n01440764', ...), in the
  label order of TFDS's imagenet2012 (that of the usual 1000-class heads),
  from the file TFDS installs (found without importing TFDS)."""
  path = _tfds_file(IMAGENET_LABELS)
  with open(path) as f:
    names = f.read().split()
  if len(names) != 1000:
    raise ValueError(f'{path} lists {len(names)} classes, not 1000.')
  return names


def imagenet_class_names() -> List[str]:
  """ImageNet-1k's 1000 classes by readable name ('tench', 'goldfish',
  ...: the first of each class's synonyms), in the order of
  `imagenet_wordnet_ids`; from a list TFDS installs, read without
  importing TFDS."""
  path = _tfds_file(IMAGENET_READABLE)
  module_spec = importlib.util.spec_from_file_location(
      'vit_jax_imagenet_readable_names', path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  names = [name.split(',')[0].strip()
           for name in module.IMAGENET_LABELS_LIST]
  if len(names) != 1000:
    raise ValueError(f'{path} lists {len(names)} classes, not 1000.')
  return names


def readable_imagenet_names(names: List[str]) -> List[str]:
  """`names` with ImageNet-1k's WordNet ids replaced by readable names
  (unchanged unless every one is such an id)."""
  if not names or not all(re.fullmatch(r'n\d{8}', name) for name in names):
    return names
  try:
    readable = dict(zip(imagenet_wordnet_ids(), imagenet_class_names()))
  except (OSError, ValueError, AttributeError):
    return names
  return [readable.get(name, name) for name in names]
