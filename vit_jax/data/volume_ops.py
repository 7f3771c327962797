"""Volume preprocessing ops for `volumes.py`, chosen by a spec string.

A spec has preprocess.py's syntax (ops joined by '|', Python literal
arguments) and these ops, MONAI's transforms (the facts and conventions,
checked against MONAI 1.6.1 in tests/test_volumes.py; not its code):

  deterministic: orientation, spacing, scale_intensity, crop_foreground,
      spatial_pad, center_crop;
  random: rand_crop_pos_neg, rand_crop (each gives `samples` crops),
      rand_flip, rand_rot90, rand_shift_intensity.

A volume is a dict: 'image' float32 [D, H, W, C], 'label_map' int32
[D, H, W], 'affine' float64 [4, 4] (voxel -> world, mm), 'name', and 'path'
/ 'label_path' (the files errors name). Geometric ops move image and label
map together (the label by nearest neighbour); intensity ops touch the image
only. `parse` splits a spec at its first random op: the head runs once per
volume, the tail per batch with a NumPy Generator.
"""

import functools
import itertools
import math
from typing import (Any, Callable, Dict, List, NamedTuple, Optional, Sequence,
                    Tuple)

import numpy as np

from vit_jax.data import DenseLabelError

Volume = Dict[str, Any]
Spatial = Tuple[Optional[int], Optional[int], Optional[int]]


def bad_file(path: str, message: str) -> DenseLabelError:
  """The error for a volume or label file that cannot be used."""
  return DenseLabelError(f'{path}: {message}', path)


# Each op factory checks its arguments and returns a VolumeOp: `apply`
# maps (volume, numpy Generator or None) to a list of volumes (one, or a
# crop op's samples); `shape` maps the static spatial shape (None: varies
# between volumes) to the shape after the op.


class VolumeOp(NamedTuple):
  apply: Callable[[Volume, Optional[np.random.Generator]], List[Volume]]
  shape: Callable[[Spatial], Spatial]
  random: bool = False
  samples: int = 1


def _with(volume: Volume, **updates) -> Volume:
  return {**volume, **updates}


def _size3(size, op_name: str) -> Tuple[int, int, int]:
  sizes = (size,) * 3 if isinstance(size, int) else tuple(size)
  if len(sizes) != 3 or not all(isinstance(s, int) and s > 0 for s in sizes):
    raise ValueError(f'{op_name}: size must be a positive int or 3 of them,'
                     f' got {size!r}.')
  return sizes


def _prob(prob, op_name: str) -> float:
  if not 0 <= prob <= 1:
    raise ValueError(f'{op_name}: prob must be in [0, 1], got {prob!r}.')
  return float(prob)


def _keep_shape(shape: Spatial) -> Spatial:
  return shape


def _varies(shape: Spatial) -> Spatial:
  del shape
  return (None, None, None)


def _fixed(size: Tuple[int, int, int]) -> Callable[[Spatial], Spatial]:
  return lambda shape: size


def _check_fits(volume: Volume, size: Sequence[int], op_name: str) -> None:
  spatial = volume['image'].shape[:3]
  if any(s < c for s, c in zip(spatial, size)):
    raise bad_file(
        volume['path'],
        f'volume of shape {tuple(spatial)} (after preprocessing up to '
        f'{op_name}) is smaller than the crop {tuple(size)}; pad it first '
        f'(spatial_pad({max(size)})) or use a smaller crop.')


def _crop(volume: Volume, start: Sequence[int],
          size: Sequence[int]) -> Volume:
  """The box [start, start + size) of `volume`, zero-padded where it leaves
  the volume (crop_foreground's margin may)."""
  spatial = volume['image'].shape[:3]
  inside = tuple(slice(max(b, 0), min(b + s, n))
                 for b, s, n in zip(start, size, spatial))
  pad = [(max(-b, 0), max(b + s - n, 0))
         for b, s, n in zip(start, size, spatial)]
  image = np.pad(volume['image'][inside], pad + [(0, 0)])
  label = np.pad(volume['label_map'][inside], pad)
  # The crop's voxel 0 sits at voxel `start` of the volume.
  shift = np.eye(4)
  shift[:3, 3] = start
  return _with(volume, image=image, label_map=label,
               affine=volume['affine'] @ shift)


def orientation(axcodes: str = 'RAS') -> VolumeOp:
  """Reorders and flips the voxel axes so they run towards `axcodes`
  (MONAI's Orientation; nibabel's orientation arithmetic)."""
  pairs = ('LR', 'PA', 'IS')
  if not (isinstance(axcodes, str) and len(axcodes) == 3 and sorted(
      i for c in axcodes for i, pair in enumerate(pairs) if c in pair) ==
          [0, 1, 2]):
    raise ValueError(f"orientation: axcodes must be 3 letters, one of each of"
                     f" {pairs}, e.g. 'RAS', got {axcodes!r}.")

  def apply(volume, rng):
    del rng
    from nibabel import orientations  # pylint: disable=g-import-not-at-top
    spatial = volume['image'].shape[:3]
    transform = orientations.ornt_transform(
        orientations.io_orientation(volume['affine']),
        orientations.axcodes2ornt(tuple(axcodes)))
    return [_with(
        volume,
        image=np.ascontiguousarray(
            orientations.apply_orientation(volume['image'], transform)),
        label_map=np.ascontiguousarray(
            orientations.apply_orientation(volume['label_map'], transform)),
        affine=volume['affine'] @ orientations.inv_ornt_aff(transform,
                                                           spatial))]

  return VolumeOp(apply, _varies)


def _spacing_grid(affine: np.ndarray, spatial: Sequence[int],
                  pixdim: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
  """The output affine and shape of resampling to `pixdim` mm, as MONAI's
  Spacing (diagonal=False, scale_extent=False): axis directions kept, the
  extent between the first and last voxel centres kept, output voxel 0 on
  the input corner that is the output's lowest corner."""
  rzs = affine[:3, :3]
  zooms = np.linalg.cholesky(rzs.T @ rzs).T  # upper triangular, + diagonal
  rotation = rzs @ np.linalg.inv(zooms)
  new_affine = np.eye(4)
  new_affine[:3, :3] = rotation @ np.diag(np.sign(np.diag(zooms)) *
                                          np.abs(pixdim))
  corners = np.array(list(itertools.product(
      *((0.0, n - 1.0) for n in spatial)))).T  # [3, 8]
  corners = np.concatenate([corners, np.ones((1, corners.shape[1]))])
  out_corners = np.linalg.solve(new_affine, affine) @ corners
  out_shape = np.round(np.ptp(out_corners[:3], axis=1) + 1.0).astype(int)
  world = affine @ corners
  offset = None
  for i in range(corners.shape[1]):
    if np.allclose(np.min(out_corners[:3] - out_corners[:3, i:i + 1], 1),
                   0.0):
      offset = world[:3, i]
      break
  if offset is None:  # no corner is lowest on every axis: align the centres
    offset = (rzs @ (np.asarray(spatial) / 2.0) + affine[:3, 3] -
              new_affine[:3, :3] @ (out_shape / 2.0))
  new_affine[:3, 3] = offset
  return new_affine, out_shape


def _nearest(label: np.ndarray, to_input: np.ndarray,
             out_shape: Sequence[int]) -> np.ndarray:
  """Nearest-neighbour resampling, rounding half to even as torch's
  grid_sample (MONAI's 'nearest'; scipy's order 0 rounds half up) and
  clamping at the border."""
  matrix, offset = to_input[:3, :3], to_input[:3, 3]
  last = np.asarray(label.shape[:3]) - 1
  if np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0:
    # Axis-aligned (the usual case after orientation): one index per axis.
    index = [np.clip(np.rint(matrix[a, a] * np.arange(n) + offset[a]), 0,
                     last[a]).astype(np.intp)
             for a, n in enumerate(out_shape)]
    return label[np.ix_(*index)]
  grid = np.indices(out_shape, dtype=np.float64).reshape(3, -1)
  index = np.clip(np.rint(matrix @ grid + offset[:, None]), 0,
                  last[:, None]).astype(np.intp)
  return label[tuple(index)].reshape(tuple(out_shape))


def spacing(x: float, y: Optional[float] = None,
            z: Optional[float] = None) -> VolumeOp:
  """Resamples to voxels of (x, y, z) mm (y, z default to x): the image
  trilinearly, the label map by nearest neighbour, both clamping at the
  border (MONAI's Spacing with padding_mode='border', as MONAI's BTCV
  pipeline: mode=('bilinear', 'nearest'))."""
  pixdim = tuple(float(v) for v in (x, x if y is None else y,
                                    x if z is None else z))
  if not all(v > 0 for v in pixdim):
    raise ValueError(f'spacing: voxel sizes must be > 0 mm, got {pixdim}.')

  def apply(volume, rng):
    del rng
    from scipy import ndimage  # pylint: disable=g-import-not-at-top
    image, label, affine = (volume['image'], volume['label_map'],
                            volume['affine'])
    new_affine, out_shape = _spacing_grid(affine, image.shape[:3], pixdim)
    # Output voxel -> input voxel.
    to_input = np.linalg.solve(affine, new_affine)
    if (tuple(out_shape) == image.shape[:3] and
        np.allclose(to_input, np.eye(4), atol=1e-3)):
      return [_with(volume, affine=new_affine)]  # MONAI skips it too

    # Trilinear, clamped at the border: scipy's order 1, mode 'nearest'.
    channels = [ndimage.affine_transform(
        image[..., c].astype(np.float64), to_input[:3, :3],
        offset=to_input[:3, 3], output_shape=tuple(out_shape), order=1,
        mode='nearest') for c in range(image.shape[-1])]
    return [_with(volume,
                  image=np.stack(channels, -1).astype(np.float32),
                  label_map=_nearest(label, to_input, out_shape),
                  affine=new_affine)]

  return VolumeOp(apply, _varies)


def scale_intensity(a_min: float, a_max: float, b_min: float = 0.0,
                    b_max: float = 1.0, clip: bool = False) -> VolumeOp:
  """Maps intensities [a_min, a_max] linearly onto [b_min, b_max], clipped
  to it with clip=True (MONAI's ScaleIntensityRange)."""
  if a_max == a_min:
    raise ValueError(f'scale_intensity: a_min and a_max must differ, both '
                     f'are {a_min}.')
  if clip and b_max < b_min:
    raise ValueError(f'scale_intensity: clip=True needs b_min <= b_max, got '
                     f'{b_min} > {b_max}.')

  def apply(volume, rng):
    del rng
    image = ((volume['image'] - a_min) / (a_max - a_min) * (b_max - b_min) +
             b_min)
    if clip:
      image = np.clip(image, b_min, b_max)
    return [_with(volume, image=image.astype(np.float32))]

  return VolumeOp(apply, _keep_shape)


def crop_foreground(margin: int = 0, threshold: float = 0.0) -> VolumeOp:
  """Crops to the bounding box of the voxels where any channel of the image
  exceeds `threshold`, grown by `margin` voxels (zero-padded beyond the
  volume), as MONAI's CropForeground; a volume without such a voxel is
  kept whole."""
  if not isinstance(margin, int) or margin < 0:
    raise ValueError(f'crop_foreground: margin must be an int >= 0, got '
                     f'{margin!r}.')

  def apply(volume, rng):
    del rng
    foreground = np.any(volume['image'] > threshold, axis=-1)
    if not foreground.any():
      return [volume]
    start, size = [], []
    for axis in range(3):
      present = np.flatnonzero(foreground.any(
          axis=tuple(a for a in range(3) if a != axis)))
      start.append(int(present[0]) - margin)
      size.append(int(present[-1]) + 1 + margin - start[-1])
    return [_crop(volume, start, size)]

  return VolumeOp(apply, _varies)


def spatial_pad(size) -> VolumeOp:
  """Zero-pads every axis shorter than `size` to it, half before (rounded
  down) and half after (MONAI's SpatialPad, method 'symmetric'); the label
  map is padded with background."""
  size = _size3(size, 'spatial_pad')

  def apply(volume, rng):
    del rng
    spatial = volume['image'].shape[:3]
    start = [-(max(s - n, 0) // 2) for s, n in zip(size, spatial)]
    return [_crop(volume, start,
                  [max(s, n) for s, n in zip(size, spatial)])]

  def shape(spatial):
    return tuple(None if n is None else max(s, n)
                 for s, n in zip(size, spatial))

  return VolumeOp(apply, shape)


def center_crop(size) -> VolumeOp:
  """The central box of `size` (MONAI's CenterSpatialCrop: it starts at
  shape // 2 - size // 2); the volume must be at least that large."""
  size = _size3(size, 'center_crop')

  def apply(volume, rng):
    del rng
    _check_fits(volume, size, 'center_crop')
    spatial = volume['image'].shape[:3]
    return [_crop(volume, [n // 2 - s // 2 for s, n in zip(size, spatial)],
                  size)]

  return VolumeOp(apply, _fixed(size))


def _samples(samples, op_name: str) -> int:
  if not isinstance(samples, int) or samples < 1:
    raise ValueError(f'{op_name}: samples must be an int >= 1, got '
                     f'{samples!r}.')
  return samples


def crop_start(centre: Sequence[int], size: Sequence[int],
               spatial: Sequence[int]) -> List[int]:
  """The start of a `size` crop around `centre`, moved so that the crop lies
  inside `spatial` (MONAI's correct_crop_centers, then its crop)."""
  return [min(max(c - s // 2, 0), n - s)
          for c, s, n in zip(centre, size, spatial)]


def pos_neg_centres(volume: Volume, samples: int,
                    pos_ratio: float, image_threshold: float,
                    rng: np.random.Generator) -> List[Tuple[int, ...]]:
  """`samples` crop centres, each a foreground voxel (label > 0) with
  probability `pos_ratio`, else a background voxel (label 0, image above
  `image_threshold` in some channel), as MONAI's RandCropByPosNegLabel;
  when one kind is absent every centre is of the other kind."""
  label = volume['label_map']
  foreground = np.flatnonzero(label > 0)
  background = np.flatnonzero(
      (label == 0) & np.any(volume['image'] > image_threshold, axis=-1))
  if not foreground.size and not background.size:
    raise bad_file(
        volume['path'],
        f'no crop centre to draw: no foreground label and no image voxel '
        f'above image_threshold={image_threshold}.')
  centres = []
  for _ in range(samples):
    positive = rng.random() < pos_ratio
    candidates = (foreground if (positive and foreground.size) or
                  not background.size else background)
    flat = candidates[rng.integers(candidates.size)]
    centres.append(tuple(int(i) for i in np.unravel_index(flat,
                                                          label.shape)))
  return centres


def rand_crop_pos_neg(size, pos: float = 1.0, neg: float = 1.0,
                      samples: int = 1,
                      image_threshold: float = 0.0) -> VolumeOp:
  """`samples` crops of `size`, each centred on a foreground voxel with
  probability pos / (pos + neg), else on background, then moved inside
  the volume (MONAI's RandCropByPosNegLabel)."""
  size = _size3(size, 'rand_crop_pos_neg')
  samples = _samples(samples, 'rand_crop_pos_neg')
  if pos < 0 or neg < 0 or pos + neg == 0:
    raise ValueError(f'rand_crop_pos_neg: pos and neg must be >= 0 and not '
                     f'both 0, got pos={pos}, neg={neg}.')

  def apply(volume, rng):
    _check_fits(volume, size, 'rand_crop_pos_neg')
    spatial = volume['image'].shape[:3]
    centres = pos_neg_centres(volume, samples, pos / (pos + neg),
                              image_threshold, rng)
    return [_crop(volume, crop_start(c, size, spatial), size)
            for c in centres]

  return VolumeOp(apply, _fixed(size), random=True, samples=samples)


def rand_crop(size, samples: int = 1) -> VolumeOp:
  """`samples` crops of `size` at uniformly drawn positions inside the
  volume (MONAI's RandSpatialCrop with a fixed size)."""
  size = _size3(size, 'rand_crop')
  samples = _samples(samples, 'rand_crop')

  def apply(volume, rng):
    _check_fits(volume, size, 'rand_crop')
    spatial = volume['image'].shape[:3]
    return [_crop(volume, [int(rng.integers(n - s + 1))
                           for s, n in zip(size, spatial)], size)
            for _ in range(samples)]

  return VolumeOp(apply, _fixed(size), random=True, samples=samples)


def rand_flip(axis: int, prob: float = 0.1) -> VolumeOp:
  """Flips image and label map along spatial `axis` (0, 1, 2 = D, H, W)
  with probability `prob` (MONAI's RandFlip)."""
  if axis not in (0, 1, 2):
    raise ValueError(f'rand_flip: axis must be 0, 1 or 2 (D, H, W), got '
                     f'{axis!r}.')
  prob = _prob(prob, 'rand_flip')

  def apply(volume, rng):
    if rng.random() >= prob:
      return [volume]
    return [_with(volume, image=np.flip(volume['image'], axis),
                  label_map=np.flip(volume['label_map'], axis))]

  return VolumeOp(apply, _keep_shape, random=True)


def rand_rot90(prob: float = 0.1, max_k: int = 3,
               axes: Tuple[int, int] = (0, 1)) -> VolumeOp:
  """With probability `prob`, rotates image and label map by k * 90 degrees
  in the plane of spatial `axes`, k uniform in 1..max_k (MONAI's
  RandRotate90, whose default plane is (0, 1))."""
  prob = _prob(prob, 'rand_rot90')
  if not isinstance(max_k, int) or max_k < 1:
    raise ValueError(f'rand_rot90: max_k must be an int >= 1, got {max_k!r}.')
  if (len(axes) != 2 or axes[0] == axes[1] or
      not all(a in (0, 1, 2) for a in axes)):
    raise ValueError(f'rand_rot90: axes must be two different spatial axes'
                     f' of 0, 1, 2, got {axes!r}.')
  axes = tuple(axes)

  def apply(volume, rng):
    if rng.random() >= prob:
      return [volume]
    k = int(rng.integers(max_k)) + 1
    return [_with(volume, image=np.rot90(volume['image'], k, axes),
                  label_map=np.rot90(volume['label_map'], k, axes))]

  def shape(spatial):
    first, second = spatial[axes[0]], spatial[axes[1]]
    if first != second:
      # A batch needs one shape: a rotation may swap these two sides.
      raise ValueError(f'rand_rot90 in the plane of axes {axes} needs equal'
                       f' sides there, the crop before it has shape '
                       f'{spatial}.')
    return spatial

  return VolumeOp(apply, shape, random=True)


def rand_shift_intensity(offset: float, prob: float = 0.1) -> VolumeOp:
  """With probability `prob`, adds one value drawn uniformly from
  [-offset, offset] to the whole image (MONAI's RandShiftIntensity)."""
  prob = _prob(prob, 'rand_shift_intensity')
  if offset < 0:
    raise ValueError(f'rand_shift_intensity: offset must be >= 0, got '
                     f'{offset}.')

  def apply(volume, rng):
    if rng.random() >= prob:
      return [volume]
    shift = rng.uniform(-offset, offset)
    return [_with(volume, image=(volume['image'] + shift).astype(np.float32))]

  return VolumeOp(apply, _keep_shape, random=True)


OPS: Dict[str, Callable[..., VolumeOp]] = {
    'orientation': orientation,
    'spacing': spacing,
    'scale_intensity': scale_intensity,
    'crop_foreground': crop_foreground,
    'spatial_pad': spatial_pad,
    'center_crop': center_crop,
    'rand_crop_pos_neg': rand_crop_pos_neg,
    'rand_crop': rand_crop,
    'rand_flip': rand_flip,
    'rand_rot90': rand_rot90,
    'rand_shift_intensity': rand_shift_intensity,
}


class Spec(NamedTuple):
  """A parsed spec: `head` runs once per volume, `tail` per batch."""
  head: Tuple[VolumeOp, ...]
  tail: Tuple[VolumeOp, ...]

  @property
  def crops_per_volume(self) -> int:
    return math.prod(op.samples for op in self.tail)

  def shape(self) -> Spatial:
    """The static spatial shape after the spec (None: varies)."""
    spatial = (None, None, None)
    for op in self.head + self.tail:
      spatial = op.shape(spatial)
    return spatial


@functools.lru_cache(maxsize=64)
def parse(spec: str, random_allowed: bool = True) -> Spec:
  """Parses a volume spec (preprocess.py's syntax, this module's OPS)."""
  # preprocess.py's parser is TensorFlow's module; imported only to parse.
  from vit_jax.data import preprocess  # pylint: disable=g-import-not-at-top
  ops = []
  for name, args, kwargs in preprocess.parse_spec(spec, OPS):
    try:
      ops.append(OPS[name](*args, **kwargs))
    except TypeError as e:
      raise ValueError(f'Bad arguments for op {name} in spec {spec!r}: '
                       f'{e}.') from None
  first_random = next((i for i, op in enumerate(ops) if op.random),
                      len(ops))
  if first_random < len(ops) and not random_allowed:
    raise ValueError(f'pp_eval {spec!r} has a random op; evaluation takes '
                     f'deterministic ops only, e.g. center_crop instead of '
                     f'rand_crop_pos_neg.')
  return Spec(tuple(ops[:first_random]), tuple(ops[first_random:]))


def apply(ops: Sequence[VolumeOp], volumes: List[Volume],
           rng: Optional[np.random.Generator]) -> List[Volume]:
  for op in ops:
    volumes = [out for volume in volumes for out in op.apply(volume, rng)]
  return volumes
