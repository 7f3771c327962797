"""Clips per second of the video input pipeline (vit_jax/data/video.py).

    PYTHONPATH=. python benchmarks/video_data.py [--videos 16] [--steps 6]

Prints one line per case: moving_digits (8-frame clips, in memory), and a
class-per-folder of mpeg4 files written here with PyAV (48 frames of
128x170) read into 8x112x112 clips at stride 4 with random_resized_crop,
flip_lr and normalize, as a Kinetics recipe would (smaller).
"""

import argparse
import os
import tempfile
import time

import av
import numpy as np

from vit_jax import data


def _write(path: str, frames: int, height: int, width: int, seed: int):
  base = np.random.default_rng(seed).integers(0, 255, (height, width, 3),
                                              np.uint8)
  with av.open(path, 'w') as container:
    stream = container.add_stream('mpeg4', rate=25)
    stream.width, stream.height, stream.pix_fmt = width, height, 'yuv420p'
    for t in range(frames):
      frame = av.VideoFrame.from_ndarray(np.roll(base, t, 1), 'rgb24')
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)


def clips_per_second(config, batch_size: int, steps: int) -> float:
  batches = data.train_iterator(config, batch_size, seed=0, process_index=0,
                                process_count=1)
  next(batches)  # thread start-up, first decodes
  start = time.perf_counter()
  for _ in range(steps):
    next(batches)
  rate = steps * batch_size / (time.perf_counter() - start)
  batches.close()
  return rate


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--videos', type=int, default=16,
                      help='mpeg4 files per class (2 classes)')
  parser.add_argument('--steps', type=int, default=6)
  args = parser.parse_args()
  digits = {'name': 'moving_digits', 'num_frames': 8,
            'pp_train': 'random_crop((16, 32))|value_range(-1, 1)|'
                        'onehot(20)'}
  print(f'moving_digits, 8x16x32x1 clips: '
        f'{clips_per_second(digits, 64, 5 * args.steps):.0f} clips/s')
  with tempfile.TemporaryDirectory() as root:
    for label in range(2):
      os.makedirs(os.path.join(root, 'train', f'c{label}'))
      for i in range(args.videos):
        _write(os.path.join(root, 'train', f'c{label}', f'v{i}.mp4'), 48,
               128, 170, 100 * label + i)
    folder = {'name': 'video_folder', 'folder': root, 'num_frames': 8,
              'frame_stride': 4,
              'pp_train': "random_resized_crop(112, (0.3, 1.0))|flip_lr|"
                          "value_range(0, 1)|normalize('kinetics')|"
                          'onehot(2)'}
    print(f'video_folder, mpeg4 48x128x170 -> 8x112x112x3 clips: '
          f'{clips_per_second(folder, 16, args.steps):.1f} clips/s')


if __name__ == '__main__':
  main()
