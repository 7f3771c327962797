"""The built-in 'digit_mosaics' dataset: semantic segmentation made offline
from the embedded digits.

Each example is a grey 40x40 uint8 canvas (background 0) holding one to
four digits of `digits.py`, each upsampled from 8x8 to 16x16 by nearest
neighbour (every pixel repeated 2x2, so a canvas pixel is exactly one digit
pixel) and pasted at a random position in its own 20x20 cell (see `_place`),
so the boxes of one canvas never overlap and every pixel has one owner.
The label map has 11 classes: 0 for the background and d + 1 for a stroke
pixel of digit d, a stroke pixel being one of intensity >=
`STROKE_THRESHOLD` (128, the middle of 0..255); the faint rim of a stroke
(intensity 1..127) is background, so the label is a function of the pixel
and its digit.

Train mosaics use only the digits' train split, test mosaics only its test
split, so no test digit is seen in training. The dataset is a pure function
of `SEED`: each split is drawn in one pass by its own generator, before any
process takes its share, so it is the same for every process count. It is
built in memory (16 MB for both splits, about a second) on first use and
kept for the life of the process.

Sizes and the trivial baseline (`tests/test_data_dense.py` checks them):
4,000 train and 1,000 test mosaics (`SIZES`). Predicting background
everywhere on the test split scores pixel accuracy 0.8765 and mIoU 0.0797
(background IoU 0.8765, every digit class 0: 0.8765 / 11).
"""

import functools
from typing import Dict, Tuple

import numpy as np

from vit_jax.data import digits

NAME = 'digit_mosaics'
CANVAS = 40
SCALE = 2  # 8x8 digits become 16x16.
DIGIT_SIZE = digits.IMAGE_SHAPE[0] * SCALE
STROKE_THRESHOLD = 128
NUM_CLASSES = digits.NUM_CLASSES + 1
CLASS_NAMES = ('background',) + tuple(str(d) for d in range(10))
IMAGE_SHAPE = (CANVAS, CANVAS, 1)
SIZES = {'train': 4000, 'test': 1000}
SEED = 0
_SPLIT_IDS = {'train': 0, 'test': 1}
CELLS = 2  # Cells per side.
CELL = CANVAS // CELLS
CELL_PROBABILITY = 0.6


def _place(rng: np.random.Generator) -> list:
  """Top-left corners of the digit boxes of one canvas.

  The canvas is cut into 2x2 cells of 20x20; each cell holds a digit with
  probability `CELL_PROBABILITY` (one cell at least), at a random offset of
  0..4 pixels in each direction, so boxes never overlap and digits sit
  anywhere on a 5x5 grid of positions per cell.
  """
  occupied = rng.random(CELLS * CELLS) < CELL_PROBABILITY
  if not occupied.any():
    occupied[rng.integers(CELLS * CELLS)] = True
  offsets = rng.integers(0, CELL - DIGIT_SIZE + 1, size=(CELLS * CELLS, 2))
  return [(int(cell // CELLS * CELL + offsets[cell, 0]),
           int(cell % CELLS * CELL + offsets[cell, 1]))
          for cell in np.flatnonzero(occupied)]


@functools.lru_cache(maxsize=None)
def split_arrays(split: str) -> Dict[str, np.ndarray]:
  """{'image': uint8 [N, 40, 40, 1], 'label_map': uint8 [N, 40, 40, 1],
  'digit_count': int64 [N]} of a split ('train' or 'test'), built once."""
  if split not in SIZES:
    raise ValueError(f'{NAME!r} has splits {sorted(SIZES)}, not {split!r}.')
  all_images, all_labels = digits._load_images_and_labels()  # pylint: disable=protected-access
  rows = digits.split_rows()[split]
  rng = np.random.default_rng([SEED, _SPLIT_IDS[split]])
  size = SIZES[split]
  images = np.zeros((size, CANVAS, CANVAS, 1), np.uint8)
  label_maps = np.zeros((size, CANVAS, CANVAS, 1), np.uint8)
  counts = np.zeros([size], np.int64)
  for i in range(size):
    corners = _place(rng)
    chosen = rng.choice(rows, size=len(corners))
    counts[i] = len(corners)
    for (top, left), row in zip(corners, chosen):
      digit = np.kron(all_images[row, :, :, 0],
                      np.ones((SCALE, SCALE), np.uint8))
      box = (i, slice(top, top + DIGIT_SIZE), slice(left, left + DIGIT_SIZE),
             0)
      images[box] = digit
      label_maps[box] = np.where(digit >= STROKE_THRESHOLD,
                                 all_labels[row] + 1, 0)
  for array in (images, label_maps, counts):
    array.setflags(write=False)
  return {'image': images, 'label_map': label_maps, 'digit_count': counts}


def split_sizes() -> Dict[str, int]:
  return dict(SIZES)


def example_name(split: str, index: int) -> str:
  """The id of a mosaic, for messages and result images."""
  return f'{NAME}-{split}-{index:05d}'


def background_baseline(split: str = 'test') -> Tuple[float, float]:
  """(pixel accuracy, mIoU) of predicting background everywhere on `split`
  (mIoU over the 11 classes, all present in either split)."""
  label_maps = split_arrays(split)['label_map']
  background = float(np.mean(label_maps == 0))
  return background, background / NUM_CLASSES
