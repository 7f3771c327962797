"""'synthetic_volumes': a built-in 3-D segmentation dataset, made on the fly.

Each volume is a CT-like block of noisy intensities holding a few
axis-aligned ellipsoids of one foreground class; no file is read or
written, and every volume is a pure function of (split, index), so two
machines build the same dataset. Its purpose is the 3-D pipeline's and
UNETR's smoke tests and the CPU demo: sides of 40 to 56 voxels, never a
multiple of a 32-voxel crop (UNETR's smallest, twice its patch of 16), so
the sliding-window evaluator has to overlap its windows.

The foreground class ('object', +200) and the background (0) carry
Gaussian noise of standard deviation `NOISE_STD` (100), 2 deviations
apart, so thresholding single voxels confuses them (test-split Dice of
the nearest class mean per voxel: 0.518) while a model that looks at a
neighbourhood need not (the same after a Gaussian blur of sigma 1 voxel,
which knows the generator: 0.984; background everywhere: 0). Intensities
are in CT-like units: pp specs scale them, e.g. `scale_intensity(-500,
500, 0.0, 1.0, clip=True)`. The affine is the identity (1 mm voxels, RAS).

One foreground class: versions with several classes told apart by
intensity alone (0 / 100 / 200 / 300 with sigma 50; 0 / -200 / +200 with
sigma 100) were too slow to learn for a CPU demo. UNETR (instance norm,
LeakyReLU) learned the largest, brightest class first and left the others
at Dice 0 after 300 steps of 4 crops, about the budget of a CI test.
"""

from typing import Dict, Tuple

import numpy as np

NAME = 'synthetic_volumes'
SPLITS: Dict[str, int] = {'train': 24, 'test': 6}
CLASS_NAMES = ('background', 'object')
NUM_CLASSES = len(CLASS_NAMES)
CLASS_MEANS = (0.0, 200.0)
NOISE_STD = 100.0
SIDE_RANGE = (40, 56)  # inclusive, drawn per axis
RADIUS_RANGE = (8, 14)  # inclusive, drawn per ellipsoid axis
OBJECTS_PER_CLASS = (2, 4)  # inclusive
_SEED = 20  # the dataset's identity: changing it changes every volume


def volume(split: str, index: int) -> Tuple[np.ndarray, np.ndarray,
                                             np.ndarray]:
  """Volume `index` of `split`.

  Returns:
    (image float32 [X, Y, Z, 1], label int32 [X, Y, Z] in
    [0, NUM_CLASSES), affine float64 [4, 4]).
  """
  if split not in SPLITS:
    raise ValueError(f'{NAME} has splits {sorted(SPLITS)}, got {split!r}.')
  if not 0 <= index < SPLITS[split]:
    raise ValueError(f'{NAME} split {split!r} has {SPLITS[split]} volumes,'
                     f' got index {index}.')
  rng = np.random.default_rng([_SEED, sorted(SPLITS).index(split), index])
  shape = tuple(int(s) for s in rng.integers(SIDE_RANGE[0],
                                             SIDE_RANGE[1] + 1, size=3))
  grid = np.meshgrid(*(np.arange(s, dtype=np.float32) for s in shape),
                     indexing='ij')
  label = np.zeros(shape, np.int32)
  # Higher classes are painted last, so they cover lower ones they overlap.
  for cls in range(1, NUM_CLASSES):
    for _ in range(rng.integers(OBJECTS_PER_CLASS[0],
                                OBJECTS_PER_CLASS[1] + 1)):
      radii = rng.integers(RADIUS_RANGE[0], RADIUS_RANGE[1] + 1, size=3)
      # Centres keep the whole ellipsoid inside the volume.
      centre = [rng.integers(r, s - r) for r, s in zip(radii, shape)]
      inside = sum(((g - c) / r)**2
                   for g, c, r in zip(grid, centre, radii)) <= 1.0
      label[inside] = cls
  means = np.asarray(CLASS_MEANS, np.float32)
  noise = rng.standard_normal(shape, dtype=np.float32) * NOISE_STD
  image = (means[label] + noise)[..., None]
  return image, label, np.eye(4)
