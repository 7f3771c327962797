"""Writes tests/golden/volumes_monai.npz: MONAI's deterministic BTCV
preprocessing of a small volume, for vit_jax/data/volumes.py's ops.

Run by hand, in an environment with torch and MONAI (not needed by the
tests):

    pip install torch==2.13.0 monai==1.6.1
    python tests/support/make_golden_volumes.py [--out DIR]

Saved, for tests/test_volumes.py (arrays channels last, [X, Y, Z, C]; labels
[X, Y, Z]):

    in/{image,label,affine}      a 13 x 11 x 7 CT-like volume (air, -1000,
                                 around a box of tissue) with labels 0..3,
                                 voxel axes permuted and flipped against
                                 RAS, 0.8 x 0.9 x 2.5 mm
    orient/{image,label,affine}  Orientationd(axcodes='RAS')
    spacing/{image,label,affine} then Spacingd((1.5, 1.5, 2.0),
                                 mode=('bilinear', 'nearest'))
    scaled/image                 then ScaleIntensityRanged(-175, 250, 0,
                                 1, clip=True)
    fg/{image,label}             then CropForegroundd(source_key='image')
    oblique/in_affine            the same image with its axes rotated 20
                                 degrees about z (no permutation)
    oblique/{image,affine}       Spacingd((1.5, 1.5, 2.0)) of it
    oblique/label                the labels likewise, mode 'nearest'
    ties/{label,out}             Spacing((0.5, 1.0, 0.4), mode='nearest')
                                 of an 8 x 3 x 5 label ramp with 1 mm
                                 voxels: sampling points exactly half
                                 way, which torch rounds half to even
"""

import numpy as np
import torch

import golden_torch
from monai.data import MetaTensor
from monai.transforms import (CropForegroundd, Orientationd,
                              ScaleIntensityRanged, Spacing, Spacingd)

KEYS = ('image', 'label')


def _volume():
  rng = np.random.default_rng(51)
  shape = (13, 11, 7)
  image = np.full(shape, -1000.0, np.float32)
  image[2:11, 3:10, 1:6] = rng.uniform(-150, 400, (9, 7, 5))
  label = np.zeros(shape, np.int32)
  label[3:9, 4:8, 2:5] = rng.integers(0, 4, (6, 4, 3))
  # Voxel axis 0 runs towards -y (posterior), axis 1 towards -x (left),
  # axis 2 towards +z: an orientation of 'PLS'.
  affine = np.array([[0.0, -0.9, 0.0, 10.0],
                     [-0.8, 0.0, 0.0, 20.0],
                     [0.0, 0.0, 2.5, -30.0],
                     [0.0, 0.0, 0.0, 1.0]])
  return image, label, affine


def _channels_last(data):
  return {'image': data['image'][0].numpy()[..., None],
          'label': data['label'][0].numpy().astype(np.int32),
          'affine': data['image'].affine.numpy()}


def write(out_dir):
  image, label, affine = _volume()
  data = {'image': MetaTensor(torch.from_numpy(image)[None],
                              affine=torch.from_numpy(affine)),
          'label': MetaTensor(torch.from_numpy(label.astype(np.float32))[None],
                              affine=torch.from_numpy(affine))}
  groups = {'in': {'image': image[..., None], 'label': label,
                   'affine': affine}}
  data = Orientationd(KEYS, axcodes='RAS')(data)
  groups['orient'] = _channels_last(data)
  data = Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0),
                  mode=('bilinear', 'nearest'))(data)
  groups['spacing'] = _channels_last(data)
  data = ScaleIntensityRanged('image', a_min=-175, a_max=250, b_min=0.0,
                              b_max=1.0, clip=True)(data)
  groups['scaled'] = {'image': _channels_last(data)['image']}
  data = CropForegroundd(KEYS, source_key='image')(data)
  cropped = _channels_last(data)
  groups['fg'] = {'image': cropped['image'], 'label': cropped['label']}

  angle = np.deg2rad(20.0)
  rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0],
                       [np.sin(angle), np.cos(angle), 0.0],
                       [0.0, 0.0, 1.0]])
  oblique = np.eye(4)
  oblique[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
  oblique[:3, 3] = [10.0, 20.0, -30.0]
  resampled = Spacingd(KEYS, pixdim=(1.5, 1.5, 2.0),
                       mode=('bilinear', 'nearest'))(
      {'image': MetaTensor(torch.from_numpy(image)[None],
                           affine=torch.from_numpy(oblique)),
       'label': MetaTensor(torch.from_numpy(label.astype(np.float32))[None],
                           affine=torch.from_numpy(oblique))})
  groups['oblique'] = {'in_affine': oblique,
                       **_channels_last(resampled)}

  ramp = (np.arange(8).reshape(8, 1, 1) +
          10 * np.arange(5).reshape(1, 1, 5)).repeat(3, axis=1)
  ties = Spacing(pixdim=(0.5, 1.0, 0.4), mode='nearest')(
      MetaTensor(torch.from_numpy(ramp.astype(np.float32))[None],
                 affine=torch.eye(4, dtype=torch.float64)))
  groups['ties'] = {'label': ramp.astype(np.int32),
                    'out': ties[0].numpy().astype(np.int32)}
  golden_torch.save(out_dir, 'volumes_monai.npz', **groups)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
