"""Writes tests/golden/preprocess_timm.npz: timm's evaluation transform on
small images, for tests/test_preprocess_timm.py.

Run by hand, in an environment with timm, torchvision and Pillow (real
torchvision: the transform is what is recorded; not needed by the tests):

    pip install torch==2.13.0 torchvision==0.28.0 timm==1.0.31 pillow==13.0.0
    python tests/support/make_golden_preprocess.py [--out DIR]

Images (uint8, seeded): 'photo', a smooth synthetic scene (gradients, a
disc and a bar with hard edges, mild grain); 'noise', uniform noise;
'checker1' / 'checker3', checkerboards of 1 and 3 px squares; each at
61x47, 47x61 and 40x40 (shrunk to the crop), 23x29 (enlarged) and one at
150x113 (shrunk about 5x), plus a grey photo. Each goes through
`timm.data.create_transform(input_size, interpolation, crop_pct,
crop_mode, normalize=False)` on a PIL image: the uint8 tensor before
ToTensor's division by 255 and Normalize (the generator checks that the
normalised transform is exactly that, scaled and normalised). Cases:
bicubic and bilinear x crop_pct 0.875 and 1 x crop modes 'center',
'squash', 'border' at 24 px on every image; crop_pct 0.95, the other PIL
filters (box, hamming, lanczos) and a non-square 24x32 input size on a
few.

Saved (compressed): 'image/<name>' [H, W, C] uint8; 'outputs', every
case's [h, w, C] uint8 output raveled one after the other; 'cases', a JSON
list of each case's settings (image name, input size (h, w),
interpolation, crop_pct, crop_mode, mean), in that order; 'jpeg/bytes',
the 150x113 photo as a JPEG, and 'jpeg/pil', PIL's decoding of it.
"""

import io
import json
import os

import numpy as np
from PIL import Image
import timm
import timm.data
import torch

import golden_torch

CROP = 24
MEAN = (0.485, 0.456, 0.406)  # timm's ImageNet mean: the 'border' fill
STD = (0.229, 0.224, 0.225)
SIZES = ((61, 47), (47, 61), (40, 40), (23, 29))


def photo(height, width, seed, channels=3):
  """A smooth scene with hard edges: what photos mostly are, at this size."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width].astype(np.float64)
  phase = rng.uniform(0, 2 * np.pi, 3)
  image = np.stack([
      128 + 90 * np.sin(x / 9 + phase[0]) * np.cos(y / 13),
      110 + 80 * np.cos((x + y) / 17 + phase[1]),
      140 + 70 * np.sin(y / 7 + phase[2])], axis=-1)
  disc = ((y - height * 0.4) ** 2 + (x - width * 0.6) ** 2 <
          (min(height, width) * 0.25) ** 2)
  image[disc] = (235, 40, 30)
  bar = (np.abs(y - height * 0.75) < height * 0.06) & (x > width * 0.2)
  image[bar] = (20, 20, 60)
  image += rng.normal(0, 3, image.shape)
  image = np.clip(np.round(image), 0, 255).astype(np.uint8)
  if channels == 1:
    image = np.asarray(Image.fromarray(image).convert('L'))[..., None]
  return image


def checkerboard(height, width, square):
  y, x = np.mgrid[0:height, 0:width]
  board = ((y // square + x // square) % 2 * 255).astype(np.uint8)
  return np.repeat(board[..., None], 3, axis=-1)


def images():
  result = {}
  rng = np.random.default_rng(0)
  for index, (height, width) in enumerate(SIZES):
    tag = f'{height}x{width}'
    result[f'photo_{tag}'] = photo(height, width, seed=index)
    result[f'noise_{tag}'] = rng.integers(0, 256, (height, width, 3),
                                          dtype=np.uint8)
    result[f'checker1_{tag}'] = checkerboard(height, width, 1)
    result[f'checker3_{tag}'] = checkerboard(height, width, 3)
  result['photo_150x113'] = photo(150, 113, seed=7)
  result['grey_61x47'] = photo(61, 47, seed=8, channels=1)
  return result


def cases(names):
  """(image, input size, interpolation, crop_pct, crop_mode) to record."""
  result = []
  for name in names:
    for interpolation in ('bicubic', 'bilinear'):
      for crop_pct in (0.875, 1.0):
        for crop_mode in ('center', 'squash', 'border'):
          result.append((name, (CROP, CROP), interpolation, crop_pct,
                         crop_mode))
  for name in ('photo_61x47', 'noise_47x61', 'grey_61x47'):
    for interpolation in ('bicubic', 'bilinear'):
      for crop_mode in ('center', 'squash', 'border'):
        result.append((name, (CROP, CROP), interpolation, 0.95, crop_mode))
  for name in ('photo_61x47', 'noise_47x61', 'checker1_40x40'):
    for interpolation in ('box', 'hamming', 'lanczos'):
      for crop_mode in ('center', 'squash', 'border'):
        result.append((name, (CROP, CROP), interpolation, 0.9, crop_mode))
  for name in ('photo_61x47', 'noise_47x61', 'photo_150x113'):
    for crop_mode in ('center', 'squash', 'border'):
      result.append((name, (CROP, 32), 'bicubic', 0.875, crop_mode))
  return result


def transform(size, interpolation, crop_pct, crop_mode, mean, normalize):
  channels = len(mean)
  return timm.data.create_transform(
      input_size=(channels, *size), interpolation=interpolation,
      crop_pct=crop_pct, crop_mode=crop_mode, mean=mean,
      std=STD[:channels], normalize=normalize)


def write(out_dir):
  named = images()
  arrays = {f'image/{name}': image for name, image in named.items()}
  settings, outputs = [], []
  for index, (name, size, interpolation, crop_pct, crop_mode) in enumerate(
      cases(named)):
    image = named[name]
    mean = MEAN if image.shape[-1] == 3 else MEAN[:1]
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    out = transform(size, interpolation, crop_pct, crop_mode, mean,
                    normalize=False)(pil)
    assert out.dtype == torch.uint8 and tuple(out.shape[1:]) == size, out
    # What timm feeds a model is exactly this, scaled and normalised.
    normalised = transform(size, interpolation, crop_pct, crop_mode, mean,
                           normalize=True)(pil)
    expected = ((out.float() / 255 - torch.tensor(mean)[:, None, None]) /
                torch.tensor(STD[:len(mean)])[:, None, None])
    assert torch.allclose(normalised, expected, atol=1e-6)
    outputs.append(out.permute(1, 2, 0).numpy().ravel())
    settings.append([name, list(size), interpolation, crop_pct, crop_mode,
                     list(mean)])
  # A JPEG (4:2:0, as photos are) and PIL's decoding of it.
  encoded = io.BytesIO()
  Image.fromarray(named['photo_150x113']).save(encoded, 'JPEG', quality=90)
  arrays['jpeg/bytes'] = np.frombuffer(encoded.getvalue(), np.uint8)
  arrays['jpeg/pil'] = np.asarray(Image.open(encoded).convert('RGB'))
  arrays['cases'] = np.array(json.dumps(settings))
  arrays['outputs'] = np.concatenate(outputs)
  print(f'{len(settings)} cases on {len(named)} images')
  path = os.path.join(out_dir, 'preprocess_timm.npz')
  np.savez_compressed(path, **arrays)  # noise barely compresses; the rest does
  print(f'wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)')
  print(f'timm {timm.__version__}, Pillow {Image.__version__}')


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
