"""The built-in 'moving_digits' dataset: video classification whose labels
need time, made offline from the embedded digits.

Each video is 16 grey frames of a 16x32 canvas (uint8 [16, 16, 32, 1],
background 0) holding one digit of `digits.py`, upsampled from 8x8 to 16x16
by nearest neighbour, that slides horizontally by 1 or 2 pixels a frame
(drawn per video) with wrap-around. The label is digit x direction: 2 * d
for 'd_left', 2 * d + 1 for 'd_right' (20 classes, names like '3_left').

The start column is uniform over all 32, and the canvas wraps, so the
digit's column in ANY SINGLE FRAME is uniform whatever the direction, and
the unordered SET of a video's frames is that of a video moving the other
way from the column where this one ends: neither carries information about
the direction. Chance levels, for a balanced test split:

  - guessing: 1/20 = 5%;
  - a single frame (or a frame-shuffled clip, `shuffle_frames`): at best
    the digit's accuracy times 1/2, i.e. at most 50% (digit right, the
    direction a coin toss);
  - only the frames' order tells left from right.

Sampling must keep the motion visible: a step of frame_stride x speed
pixels close to half the canvas (16) looks the same both ways; the demo's
stride 1 moves 1 or 2 pixels a frame. flip_lr would turn 'left' into
'right' and is refused for this dataset (`video.py`).

Train videos use only the digits' train split, test videos only its test
split, so no test digit image is seen in training. The dataset is a pure
function of `SEED`: 4,000 train and 500 test videos (`SIZES`), built in
memory (33 MB, about a second after scikit-learn's import) on first use and kept for the life of
the process. Directions are balanced exactly within each split (the first
half of a shuffled list moves left).
"""

import functools
from typing import Dict, Tuple

import numpy as np

from vit_jax.data import digits

NAME = 'moving_digits'
NUM_FRAMES = 16
HEIGHT, WIDTH = 16, 32
SCALE = 2  # 8x8 digits become 16x16.
SPEEDS = (1, 2)  # pixels a frame
DIRECTIONS = ('left', 'right')
NUM_CLASSES = digits.NUM_CLASSES * len(DIRECTIONS)
CLASS_NAMES = tuple(f'{d}_{direction}' for d in range(digits.NUM_CLASSES)
                    for direction in DIRECTIONS)
VIDEO_SHAPE = (NUM_FRAMES, HEIGHT, WIDTH, 1)
SIZES = {'train': 4000, 'test': 500}
SEED = 0
_SPLIT_IDS = {'train': 0, 'test': 1}


def label(digit: int, direction: str) -> int:
  return digit * len(DIRECTIONS) + DIRECTIONS.index(direction)


@functools.lru_cache(maxsize=None)
def split_arrays(split: str) -> Dict[str, np.ndarray]:
  """{'video': uint8 [N, 16, 16, 32, 1], 'label': int64 [N], 'start':
  int64 [N] (the first frame's digit column), 'velocity': int64 [N]
  (pixels a frame, negative to the left)} of 'train' or 'test'."""
  if split not in SIZES:
    raise ValueError(f'{NAME!r} has splits {sorted(SIZES)}, not {split!r}.')
  all_images, all_labels = digits._load_images_and_labels()  # pylint: disable=protected-access
  rows = digits.split_rows()[split]
  rng = np.random.default_rng([SEED, _SPLIT_IDS[split]])
  size = SIZES[split]
  chosen = rng.choice(rows, size=size)
  rightward = rng.permutation(np.arange(size) >= size // 2)
  velocity = rng.choice(SPEEDS, size=size) * np.where(rightward, 1, -1)
  start = rng.integers(WIDTH, size=size)
  # Canvas column c of frame t shows column (c - position_t) mod WIDTH of
  # the digit placed at the left edge (columns >= 16 are background).
  position = start[:, None] + velocity[:, None] * np.arange(NUM_FRAMES)
  source = (np.arange(WIDTH)[None, None, :] - position[..., None]) % WIDTH
  sprites = np.zeros((size, HEIGHT, WIDTH), np.uint8)
  sprites[:, :, :8 * SCALE] = np.kron(
      all_images[chosen, :, :, 0], np.ones((1, SCALE, SCALE), np.uint8))
  videos = np.take_along_axis(
      sprites[:, None], source[:, :, None, :].repeat(HEIGHT, 2), axis=3)
  labels = all_labels[chosen] * len(DIRECTIONS) + rightward
  arrays = {'video': videos[..., None], 'label': labels.astype(np.int64),
            'start': start.astype(np.int64),
            'velocity': velocity.astype(np.int64)}
  for array in arrays.values():
    array.setflags(write=False)
  return arrays


def split_sizes() -> Dict[str, int]:
  return dict(SIZES)


def video_shape() -> Tuple[int, int, int, int]:
  return VIDEO_SHAPE
