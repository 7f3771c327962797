"""Writes tests/golden/segmentation_monai.npz: segmentation losses and
metrics from PyTorch and MONAI on small random arrays.

Run by hand, in an environment with torch and MONAI (not needed by the
tests):

    pip install torch==2.13.0 monai==1.6.1
    python tests/support/make_golden_segmentation.py [--out DIR]

Saved, for tests/test_segmentation.py (arrays channels last):

    xent/{logits,labels,loss}   torch CrossEntropyLoss(ignore_index=255)
                                over [2, 5, 6] pixels, 4 classes
    dicece/{logits,labels,loss} MONAI DiceCELoss(to_onehot_y=True,
                                softmax=True), [2, 3, 4, 5] voxels, 4
                                classes (class 3 absent from volume 1)
    dice/{truth,pred}           [3, 4, 5, 6] label volumes, 4 classes
    dice/{mean,mean_batch}      DiceMetric(include_background=False) with
    dice/per_volume             reduction 'mean', 'mean_batch', 'none'
                                (class 2 absent from volume 0's truth,
                                volume 2's truth all background)
    window/{volume,mix,ramp}    sliding_window_inference over a [2, 11,
    window/gaussian             13, 6, 2] volume, window 8^3 (axis 3
    window/constant             padded), overlap 0.5 Gaussian / 0.25
                                constant, of window_predictor below
    window/map                  compute_importance_map((4, 6, 5),
                                'gaussian', sigma_scale=0.125)
"""

import numpy as np
import torch

import golden_torch
from monai.data.utils import compute_importance_map
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss
from monai.metrics import DiceMetric

CLASSES = 4


def _pixel_xent(generator):
  logits = torch.randn(2, CLASSES, 5, 6, generator=generator)
  labels = torch.randint(0, CLASSES, (2, 5, 6), generator=generator)
  labels[torch.rand(2, 5, 6, generator=generator) < 0.3] = 255
  loss = torch.nn.CrossEntropyLoss(ignore_index=255)(logits, labels)
  return {'logits': logits.permute(0, 2, 3, 1).numpy(),
          'labels': labels.numpy(), 'loss': loss.numpy()}


def _dice_ce(generator):
  logits = torch.randn(2, CLASSES, 3, 4, 5, generator=generator)
  labels = torch.randint(0, CLASSES, (2, 3, 4, 5), generator=generator)
  labels[1][labels[1] == 3] = 0
  loss = DiceCELoss(to_onehot_y=True, softmax=True)(logits, labels[:, None])
  return {'logits': logits.permute(0, 2, 3, 4, 1).numpy(),
          'labels': labels.numpy(), 'loss': loss.numpy()}


def _dice_metric(generator):
  truth = torch.randint(0, CLASSES, (3, 4, 5, 6), generator=generator)
  pred = torch.where(torch.rand(3, 4, 5, 6, generator=generator) < 0.6,
                     truth, torch.randint(0, CLASSES, (3, 4, 5, 6),
                                          generator=generator))
  truth[0][truth[0] == 2] = 1
  truth[2] = 0
  onehot = lambda x: torch.nn.functional.one_hot(x, CLASSES).permute(
      0, 4, 1, 2, 3)
  results = {'truth': truth.numpy(), 'pred': pred.numpy()}
  for reduction, key in (('mean', 'mean'), ('mean_batch', 'mean_batch'),
                         ('none', 'per_volume')):
    metric = DiceMetric(include_background=False, reduction=reduction)
    metric(onehot(pred), onehot(truth))
    results[key] = metric.aggregate().numpy()
  return results


def window_predictor(windows, mix, ramp):
  """A channel mix of the window [n, C, *window] -> [n, K, *window] plus a
  term linear in the position inside the window (ramp [3, K]), so that
  windows at different corners disagree and the blending shows. The same
  function, channels last, is tests/test_segmentation.py's."""
  out = torch.einsum('nc...,ck->nk...', windows, mix)
  for axis in range(3):
    size = windows.shape[2 + axis]
    position = torch.arange(size, dtype=windows.dtype).reshape(
        [size if a == axis else 1 for a in range(3)])
    out = out + ramp[axis].reshape(1, -1, 1, 1, 1) * position
  return out


def _sliding_window(generator):
  volume = torch.randn(2, 2, 11, 13, 6, generator=generator)
  mix = torch.randn(2, 3, generator=generator)
  ramp = torch.randn(3, 3, generator=generator)
  predict = lambda windows: window_predictor(windows, mix, ramp)
  results = {'volume': volume.permute(0, 2, 3, 4, 1).numpy(),
             'mix': mix.numpy(), 'ramp': ramp.numpy()}
  for mode, overlap in (('gaussian', 0.5), ('constant', 0.25)):
    out = sliding_window_inference(volume, (8, 8, 8), 3, predict,
                                   overlap=overlap, mode=mode)
    results[mode] = out.permute(0, 2, 3, 4, 1).numpy()
  results['map'] = compute_importance_map(
      (4, 6, 5), mode='gaussian', sigma_scale=0.125).numpy()
  return results


def write(out_dir):
  generator = torch.Generator().manual_seed(50)
  golden_torch.save(out_dir, 'segmentation_monai.npz',
                    xent=_pixel_xent(generator),
                    dicece=_dice_ce(generator),
                    dice=_dice_metric(generator),
                    window=_sliding_window(generator))


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
