"""3-D volumes for the 'volume_segmentation' task: a NumPy pipeline.

Volumes are few and large (BTCV: 24 train and 6 validation CT scans), so
there is no tf.data here: each process loads its share of a split one volume
at a time, applies the deterministic head of the preprocessing spec once and
keeps the result in memory, and draws random crops from it per batch. Batch
`step` is a pure function of (seed, process index, step) -- NumPy generators
seeded from those numbers -- so `start_step=n` is exact and costs nothing.

Datasets (`data_config.name`):
  'nifti_folder': `data_config.folder` holds an MSD / BTCV style
      dataset.json: {"training": [{"image": "./imagesTr/a.nii.gz", "label":
      "./labelsTr/a.nii.gz"}, ...], "validation": [...], "labels": {"0":
      "background", "1": ...}}. Split names are its lists' names; slices
      and sums as TFDS writes them select parts ('training[:80%]',
      'training[-6:]', 'training+validation'), for MSD, whose 'test' list
      has no labels. num_classes comes from "labels" (keys "0" .. "K-1"),
      else from data_config.num_classes; when both are given they must
      agree. Files are read with nibabel, affine included.
  'synthetic_volumes': built in, see `synthetic_volumes.py` (splits
      'train', 24 volumes, and 'test', 6; 4 classes).

Layout. A volume is image float32 [D, H, W, C] and label_map int32
[D, H, W], channels last as UNETR takes them; D, H, W are the NIfTI file's
voxel axes i, j, k in that order (MONAI's order too), i.e. after
`orientation('RAS')` D runs towards the Right, H towards Anterior, W towards
Superior. A 3-D NIfTI image gets C = 1; a 4-D one (MSD's modalities) keeps
its fourth axis as C.

Preprocessing specs use preprocess.py's syntax (ops joined by '|', Python
literal arguments) with the volume ops of `OPS` below, MONAI's transforms
(the facts, not the code): orientation, spacing, scale_intensity,
crop_foreground, spatial_pad, center_crop; and the random ones,
rand_crop_pos_neg, rand_crop, rand_flip, rand_rot90, rand_shift_intensity.
Everything before a spec's first random op is done once per volume; from
there on, per batch and per crop. UNETR's BTCV recipe (the paper and
MONAI's tutorial) reads:

    "orientation('RAS')|spacing(1.5, 1.5, 2.0)|"
    "scale_intensity(-175, 250, 0.0, 1.0, clip=True)|crop_foreground()|"
    "rand_crop_pos_neg(96, pos=1, neg=1, samples=4)|rand_flip(0, 0.1)|"
    "rand_flip(1, 0.1)|rand_flip(2, 0.1)|rand_rot90(0.1, 3)|"
    "rand_shift_intensity(0.1, 0.5)"

A train batch is {'image': float32 [B, D, H, W, C], 'label_map': int32
[B, D, H, W]}, B counting crops: a crop op's `samples` crops come from one
volume, so the local batch must be a multiple of them. Volumes are visited
in a fresh permutation of the process's share each epoch.

Evaluation sees whole volumes: `eval_examples` yields one at a time after
pp_eval (deterministic ops only), its label map on the same voxel grid as
the image (resampled with it by nearest neighbour, as MONAI's BTCV
validation does), for the sliding-window evaluator.

Bad data raises `DenseLabelError` naming the file: a missing or unreadable
NIfTI file, image and label shapes that differ, a label value outside
[0, num_classes), a volume smaller than its crop.
"""

import collections
from concurrent import futures
import functools
import itertools
import json
import math
import os
import re
from typing import (Any, Callable, Dict, Iterator, List, NamedTuple, Optional,
                    Sequence, Tuple)

import numpy as np

from vit_jax.data import DenseLabelError
from vit_jax.data import synthetic_volumes

NIFTI_FOLDER = 'nifti_folder'
DATASETS = (NIFTI_FOLDER, synthetic_volumes.NAME)
TASK = 'volume_segmentation'

Batch = Dict[str, np.ndarray]
# A volume in the pipeline: 'image' float32 [D, H, W, C], 'label_map' int32
# [D, H, W], 'affine' float64 [4, 4] (voxel -> world, mm), 'name' str,
# 'path' and 'label_path' str (the image and label files named in errors).
Volume = Dict[str, Any]
Spatial = Tuple[Optional[int], Optional[int], Optional[int]]


def _bad_file(path: str, message: str) -> DenseLabelError:
  """The error for a volume or label file that cannot be used."""
  return DenseLabelError(f'{path}: {message}', path)


def handles(data_config) -> bool:
  """Whether `data_config.name` is a volume dataset (this module's)."""
  return data_config.get('name') in DATASETS


# ----------------------------------------------------------------------------
# Ops. Each op factory checks its arguments and returns a VolumeOp: `apply`
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
    raise _bad_file(
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
    raise _bad_file(
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


def _apply(ops: Sequence[VolumeOp], volumes: List[Volume],
           rng: Optional[np.random.Generator]) -> List[Volume]:
  for op in ops:
    volumes = [out for volume in volumes for out in op.apply(volume, rng)]
  return volumes


# ----------------------------------------------------------------------------
# Sources: a split is a list of records, each loading one raw volume.


class Record(NamedTuple):
  name: str
  load: Callable[[], Volume]
  image_path: Optional[str] = None  # a file's, for its header


class Dataset(NamedTuple):
  splits: Dict[str, List[Record]]  # the full labelled lists, by name
  num_classes: int
  class_names: Optional[List[str]]
  channels: Callable[[], int]  # read lazily (a NIfTI header)
  unlabelled: Tuple[str, ...] = ()  # lists without labels (MSD's 'test')


def _unreadable(path: str, error: Exception) -> DenseLabelError:
  return _bad_file(path, f'cannot read it as NIfTI: '
                         f'{type(error).__name__}: {error}')


def _open_nifti(path: str):
  """The nibabel image of `path` (its header read, not its data)."""
  import nibabel  # pylint: disable=g-import-not-at-top
  if not os.path.isfile(path):
    raise _bad_file(path, 'no such NIfTI file.')
  try:
    return nibabel.load(path)
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(path, e) from e


def _load_nifti(path: str) -> Tuple[np.ndarray, np.ndarray]:
  """(data as stored, affine) of a NIfTI file; DenseLabelError if it is
  missing or unreadable."""
  image = _open_nifti(path)
  try:
    return np.asanyarray(image.dataobj), np.asarray(image.affine, np.float64)
  except Exception as e:  # pylint: disable=broad-except
    # nibabel, gzip and zlib each raise their own kind for damaged data.
    raise _unreadable(path, e) from e


def _nifti_volume(name: str, image_path: str, label_path: str) -> Volume:
  data, affine = _load_nifti(image_path)
  label, _ = _load_nifti(label_path)
  if data.ndim == 3:
    data = data[..., None]
  if data.ndim != 4:
    raise _bad_file(image_path, f'image has shape {data.shape}; '
                          f'expected [X, Y, Z] or [X, Y, Z, C].')
  if label.ndim == 4 and label.shape[-1] == 1:
    label = label[..., 0]
  if label.shape != data.shape[:3]:
    raise _bad_file(label_path, f'label shape {label.shape} differs '
                          f'from the spatial shape {data.shape[:3]} of its '
                          f'image {image_path}.')
  if (np.issubdtype(label.dtype, np.floating) and
      not np.array_equal(label, np.round(label))):
    raise _bad_file(label_path, 'label values must be whole numbers '
                          '(class indices).')
  return {'image': data.astype(np.float32), 'label_map': label.astype(np.int32),
          'affine': affine, 'name': name, 'path': image_path,
          'label_path': label_path}


def _entry_name(path: str) -> str:
  base = os.path.basename(path)
  for suffix in ('.nii.gz', '.nii'):
    if base.endswith(suffix):
      return base[:-len(suffix)]
  return base


def _nifti_dataset(config) -> Dataset:
  folder = config.get('folder')
  if not folder or not os.path.isdir(os.path.expanduser(folder)):
    raise ValueError(f"Dataset {NIFTI_FOLDER!r} needs data_config.folder, a "
                     f'directory with a dataset.json (MSD / BTCV layout); got'
                     f' {folder!r}, which is not a directory.')
  folder = os.path.expanduser(folder)
  json_path = os.path.join(folder, 'dataset.json')
  try:
    with open(json_path) as f:
      description = json.load(f)
  except FileNotFoundError:
    raise ValueError(f'{json_path}: no dataset.json in data_config.folder '
                     f'(the MSD / BTCV layout).') from None
  except json.JSONDecodeError as e:
    raise ValueError(f'{json_path}: not valid JSON ({e}).') from None
  if not isinstance(description, dict):
    raise ValueError(f'{json_path}: expected a JSON object of split lists.')

  def resolve(relative):
    return os.path.normpath(os.path.join(folder, relative))

  splits, unlabelled = {}, []
  for split, entries in description.items():
    if not isinstance(entries, list):
      continue
    # MSD's test lists hold bare image paths: nothing to train or score on.
    if not all(isinstance(entry, dict) and 'image' in entry and
               'label' in entry for entry in entries):
      unlabelled.append(split)
      continue
    splits[split] = []
    for entry in entries:
      image_path, label_path = resolve(entry['image']), resolve(entry['label'])
      name = _entry_name(image_path)
      splits[split].append(Record(
          name, functools.partial(_nifti_volume, name, image_path,
                                  label_path), image_path))
  labels = description.get('labels')
  num_classes, class_names = config.get('num_classes'), config.get(
      'class_names')
  if labels is not None:
    keys = sorted(labels, key=lambda k: int(k) if str(k).isdigit() else -1)
    if keys != [str(i) for i in range(len(labels))]:
      raise ValueError(f'{json_path}: "labels" keys must be "0" .. '
                       f'"{len(labels) - 1}", got {sorted(labels)}.')
    if num_classes is not None and num_classes != len(labels):
      raise ValueError(
          f'data_config.num_classes={num_classes} disagrees with the '
          f'{len(labels)} classes of "labels" in {json_path}.')
    num_classes = len(labels)
    class_names = class_names or [str(labels[k]) for k in keys]
  elif num_classes is None:
    raise ValueError(f'{json_path} has no "labels": set data_config.'
                     f'num_classes (background included).')

  def channels():
    first = next((records[0] for records in splits.values() if records),
                 None)
    if first is None:
      raise ValueError(f'{json_path}: no labelled volume in any list.')
    shape = _open_nifti(first.image_path).shape  # the header only
    return shape[3] if len(shape) == 4 else 1

  return Dataset(splits, num_classes, class_names, channels,
                 tuple(unlabelled))


def _synthetic_dataset(config) -> Dataset:
  num_classes = config.get('num_classes')
  if num_classes is not None and num_classes != synthetic_volumes.NUM_CLASSES:
    raise ValueError(
        f'data_config.num_classes={num_classes} disagrees with '
        f"{synthetic_volumes.NAME!r}'s {synthetic_volumes.NUM_CLASSES} "
        f'classes (background included).')

  def load(split, index):
    image, label, affine = synthetic_volumes.volume(split, index)
    name = f'{split}_{index:03d}'
    return {'image': image, 'label_map': label, 'affine': affine,
            'name': name, 'path': f'{synthetic_volumes.NAME}/{name}',
            'label_path': f'{synthetic_volumes.NAME}/{name}'}

  splits = {split: [Record(f'{split}_{i:03d}',
                           functools.partial(load, split, i))
                    for i in range(count)]
            for split, count in synthetic_volumes.SPLITS.items()}
  return Dataset(splits, synthetic_volumes.NUM_CLASSES,
                 list(config.get('class_names') or
                      synthetic_volumes.CLASS_NAMES), lambda: 1)


def dataset(config) -> Dataset:
  """The dataset `config.name` names (a volume dataset)."""
  if config.get('name') == NIFTI_FOLDER:
    found = _nifti_dataset(config)
  elif config.get('name') == synthetic_volumes.NAME:
    found = _synthetic_dataset(config)
  else:
    raise ValueError(f'{config.get("name")!r} is not a volume dataset; '
                     f'volume datasets: {list(DATASETS)}.')
  if found.num_classes < 2:
    raise ValueError(f'A segmentation dataset needs at least 2 classes '
                     f'(background included), got {found.num_classes}.')
  if (found.class_names is not None and
      len(found.class_names) != found.num_classes):
    raise ValueError(f'data_config.class_names has {len(found.class_names)}'
                     f' names for {found.num_classes} classes.')
  return found


_SLICE = re.compile(r'^(?P<name>[^\[\]]+)(\[(?P<start>[^:\]]*):'
                    r'(?P<stop>[^:\]]*)\])?$')


def _boundary(text: str, size: int, split: str) -> Optional[int]:
  text = text.strip()
  if not text:
    return None
  match = re.fullmatch(r'(-?\d+)(%?)', text)
  if not match:
    raise ValueError(f'Split {split!r}: slice bounds are integers or '
                     f'percentages, got {text!r}.')
  value = int(match.group(1))
  return int(round(value * size / 100)) if match.group(2) else value


def split_records(found: Dataset, split: str) -> List[Record]:
  """The records `split` names: a split name, a slice of one
  ('training[:80%]', 'training[-6:]', as TFDS), or a sum of such ('+')."""
  records = []
  for part in str(split).split('+'):
    match = _SLICE.match(part.strip())
    if match and match.group('name') in found.unlabelled:
      raise ValueError(f'Split {match.group("name")!r} of the dataset has no'
                       f' labels (an MSD test list); take the evaluation '
                       f"split from a labelled one, e.g. 'training[80%:]' "
                       f"with train_split 'training[:80%]'.")
    if not match or match.group('name') not in found.splits:
      raise ValueError(f'Unknown split {part.strip()!r} in {split!r}; the '
                       f'dataset has {sorted(found.splits)} (slices such as '
                       f"'NAME[:80%]' and sums 'A+B' are allowed).")
    full = found.splits[match.group('name')]
    if match.group(2):
      full = full[_boundary(match.group('start'), len(full), split):
                  _boundary(match.group('stop'), len(full), split)]
    records.extend(full)
  if not records:
    raise ValueError(f'Split {split!r} holds no volume.')
  return records


def share_bounds(count: int, process_index: int,
                 process_count: int) -> Tuple[int, int]:
  """[start, stop) of process `process_index`'s contiguous share, as the
  other datasets' (`sources.share_bounds`, TFDS's even_splits: the first
  `count % process_count` processes take one more)."""
  base, extra = divmod(count, process_count)
  start = process_index * base + min(process_index, extra)
  return start, start + base + (process_index < extra)


# ----------------------------------------------------------------------------
# Preparing volumes and the entry points.


def _check_labels(volume: Volume, num_classes: int) -> None:
  label = volume['label_map']
  bad = label[(label < 0) | (label >= num_classes)]
  if bad.size:
    raise _bad_file(
        volume['label_path'], f'label value {int(bad.flat[0])} is outside [0, '
        f'num_classes={num_classes}) (after preprocessing).')


def prepare(record: Record, ops: Sequence[VolumeOp],
            num_classes: int) -> Volume:
  """A record's volume after the deterministic ops `ops`, labels checked."""
  (volume,) = _apply(ops, [record.load()], None)
  _check_labels(volume, num_classes)
  return volume


def _seed_words(seed: int, *values: int) -> List[int]:
  # SeedSequence takes non-negative integers; a negative seed wraps around.
  return [int(seed) % 2**64] + [int(v) for v in values]


def _stack(volumes: Sequence[Volume]) -> Batch:
  return {'image': np.stack([v['image'] for v in volumes]).astype(np.float32),
          'label_map': np.stack([v['label_map']
                                 for v in volumes]).astype(np.int32)}


def _local_batch(global_batch_size: int, process_count: int) -> int:
  if global_batch_size < 1 or global_batch_size % process_count:
    raise ValueError(f'Global batch size {global_batch_size} must be a '
                     f'positive multiple of process_count={process_count}.')
  return global_batch_size // process_count


def train_shape(spec: Spec, text: str) -> Tuple[int, int, int]:
  """The crops' static [D, H, W] after pp_train `spec` (`text`)."""
  shape = spec.shape()
  if None in shape:
    raise ValueError(f'pp_train {text!r} gives volumes of varying shape '
                     f'{shape}; end it with a fixed-size crop, e.g. '
                     f'rand_crop_pos_neg(96, samples=4).')
  return shape


class TrainBatches:
  """The infinite train stream of one process; `batch(step)` is pure.

  With `data_config.prefetch` > 0 one background thread prepares that
  many batches ahead (NumPy releases the GIL in the heavy parts); since
  each batch is a function of its step, the order cannot change. `close()`
  stops the thread.
  """

  def __init__(self, config, global_batch_size: int, seed: int,
               start_step: int, process_index: int, process_count: int):
    found = dataset(config)
    self._spec = parse(config.pp_train)
    train_shape(self._spec, config.pp_train)
    local = _local_batch(global_batch_size, process_count)
    crops = self._spec.crops_per_volume
    if local % crops:
      raise ValueError(f'The local batch of {local} crops is not a multiple '
                       f'of the {crops} crops pp_train takes from each '
                       f'volume.')
    self._volumes_per_batch = local // crops
    records = split_records(found, config.train_split)
    start, stop = share_bounds(len(records), process_index, process_count)
    if start == stop:
      raise ValueError(f'Split {config.train_split!r} has {len(records)} '
                       f'volumes, fewer than the {process_count} processes.')
    self._records = records[start:stop]
    self._num_classes = found.num_classes
    self._seed, self._process = seed, process_index
    self._step = start_step
    self._cache: Dict[int, Volume] = {}
    self._permutation = (None, None)  # (epoch, permutation of the share)
    self._prefetch = config.get('prefetch') or 0
    self._executor = None
    self._pending = collections.deque()  # futures of the next steps' batches

  def __iter__(self) -> 'TrainBatches':
    return self

  def __next__(self) -> Batch:
    if not self._prefetch:
      batch = self.batch(self._step)
    else:
      if self._executor is None:
        self._executor = futures.ThreadPoolExecutor(
            1, thread_name_prefix='volume-batches')
      while len(self._pending) <= self._prefetch:
        self._pending.append(self._executor.submit(
            self.batch, self._step + len(self._pending)))
      batch = self._pending.popleft().result()
    self._step += 1
    return batch

  def close(self) -> None:
    """Stops the prefetching thread (batches it had started are dropped)."""
    if self._executor is not None:
      self._executor.shutdown(wait=True, cancel_futures=True)
      self._executor, self._pending = None, collections.deque()

  def _order(self, epoch: int) -> np.ndarray:
    if self._permutation[0] != epoch:
      rng = np.random.default_rng(_seed_words(self._seed, self._process,
                                              epoch, 0))
      self._permutation = (epoch, rng.permutation(len(self._records)))
    return self._permutation[1]

  def volume(self, index: int) -> Volume:
    """Volume `index` of the share after pp_train's head (cached)."""
    if index not in self._cache:
      self._cache[index] = prepare(self._records[index], self._spec.head,
                                   self._num_classes)
    return self._cache[index]

  def batch(self, step: int) -> Batch:
    """Batch `step` (0 = the first): a function of (seed, process, step)."""
    rng = np.random.default_rng(_seed_words(self._seed, self._process,
                                            step, 1))
    crops = []
    for slot in range(self._volumes_per_batch):
      epoch, position = divmod(step * self._volumes_per_batch + slot,
                               len(self._records))
      index = int(self._order(epoch)[position])
      crops.extend(_apply(self._spec.tail, [self.volume(index)], rng))
    return _stack(crops)


def _eval_spec(config) -> Spec:
  return parse(config.pp_eval, random_allowed=False)


def eval_share_sizes(config, split: str, process_count: int) -> List[int]:
  """Volumes of `split` per process."""
  count = len(split_records(dataset(config), split))
  return [stop - start for start, stop in
          (share_bounds(count, i, process_count)
           for i in range(process_count))]


def eval_examples(config, split: str, process_index: int,
                  process_count: int) -> Iterator[Dict[str, Any]]:
  """This process's volumes of `split` after pp_eval, one at a time:
  {'image': float32 [D, H, W, C], 'label_map': int32 [D, H, W] (same
  grid), 'name': str}."""
  found = dataset(config)
  spec = _eval_spec(config)
  records = split_records(found, split)
  start, stop = share_bounds(len(records), process_index, process_count)
  for record in records[start:stop]:
    volume = prepare(record, spec.head, found.num_classes)
    yield {'image': volume['image'], 'label_map': volume['label_map'],
           'name': volume['name']}


def eval_batches(config, split: str, global_batch_size: int,
                 process_index: int, process_count: int) -> Iterator[Batch]:
  """This process's share of `split` as padded batches of fixed-size
  volumes; only when pp_eval gives one shape (e.g. ends with center_crop).
  'mask' is 1 for volumes and 0 for padding (zeros, label 0)."""
  spec = _eval_spec(config)
  shape = spec.shape()
  if None in shape:
    raise ValueError(
        f'pp_eval {config.pp_eval!r} gives volumes of varying shape {shape};'
        f' evaluate whole volumes with data.eval_examples and the '
        f'sliding-window evaluator, or end pp_eval with center_crop(SIZE).')
  local = _local_batch(global_batch_size, process_count)
  num_batches = math.ceil(max(eval_share_sizes(config, split, process_count))
                          / local)
  examples = eval_examples(config, split, process_index, process_count)
  for _ in range(num_batches):
    volumes = list(itertools.islice(examples, local))
    mask = np.zeros([local], np.float32)
    mask[:len(volumes)] = 1
    if not volumes:
      channels = dataset(config).channels()
      volumes = [{'image': np.zeros(shape + (channels,), np.float32),
                  'label_map': np.zeros(shape, np.int32)}]
    padding = {'image': np.zeros_like(volumes[0]['image']),
               'label_map': np.zeros_like(volumes[0]['label_map'])}
    batch = _stack(volumes + [padding] * (local - len(volumes)))
    batch['mask'] = mask
    yield batch


def label_counts(config, split: str) -> np.ndarray:
  """Voxels per class in the whole of `split`, as stored (before any
  preprocessing): int64 [num_classes]."""
  found = dataset(config)
  counts = np.zeros([found.num_classes], np.int64)
  for record in split_records(found, split):
    volume = record.load()
    _check_labels(volume, found.num_classes)
    counts += np.bincount(volume['label_map'].ravel(),
                          minlength=found.num_classes)
  return counts


def dataset_info(config) -> Dict[str, Any]:
  """`data.dataset_info` for a volume dataset (reads at most one NIfTI
  header, for the channel count)."""
  found = dataset(config)
  shape = train_shape(parse(config.pp_train), config.pp_train)
  channels = found.channels()
  return {
      'task': TASK,
      'num_classes': found.num_classes,
      'class_names': found.class_names,
      'ignore_index': None,
      'image_shape': _eval_spec(config).shape() + (channels,),
      'train_image_shape': shape + (channels,),
      'num_examples': {
          'train': len(split_records(found, config.train_split)),
          'test': len(split_records(found, config.eval_split)),
      },
  }
