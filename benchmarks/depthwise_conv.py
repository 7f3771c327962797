"""Depthwise convolutions: XLA's grouped convolution against shifted
multiply-adds (`vit_jax.models.common.DepthwiseConv`, impl 'conv' and
'shifts').

    PYTHONPATH=. python benchmarks/depthwise_conv.py [--steps 10] [--cases ...]

Prints one JSON line per case and implementation: milliseconds of the
jitted forward pass and of the forward + backward pass (gradients of the
input and the kernel), and the largest output difference from 'conv'.
The cases are the project's depthwise layers at the sizes its CPU demos
use: MViT's 3x3x3 pooling of one head on the moving-digits demo's
first-stage grid (batch x heads 32, 4x4x8, 32 channels) and a strided
one, SegFormer's 3x3 Mix-FFN (the mosaics demo's first stage) and
ConvMixer's 9x9. `common.depthwise_backend` takes 'shifts' on CPUs for
kernels of at most `common.MAX_SHIFT_TAPS` taps from these figures.
"""

import argparse
import json
import time

import jax
import numpy as np

from vit_jax.models import common

# name: (input shape, kernel, strides)
CASES = {
    'mvit_pool_3x3x3': ((32, 4, 4, 8, 32), (3, 3, 3), (1, 1, 1)),
    'mvit_pool_3x3x3_stride_1x2x2': ((32, 4, 4, 8, 32), (3, 3, 3),
                                     (1, 2, 2)),
    'segformer_mixffn_3x3': ((32, 16, 16, 128), (3, 3), (1, 1)),
    'convmixer_9x9': ((32, 14, 14, 64), (9, 9), (1, 1)),
}


def _time(function, *args, steps: int) -> float:
  jax.block_until_ready(function(*args))  # compile
  start = time.perf_counter()
  for _ in range(steps):
    jax.block_until_ready(function(*args))
  return (time.perf_counter() - start) / steps * 1000


def run_case(name: str, steps: int):
  shape, kernel, strides = CASES[name]
  inputs = jax.random.normal(jax.random.PRNGKey(0), shape)
  padding = [(k // 2, k // 2) for k in kernel]
  reference = None
  for impl in ('conv', 'shifts'):
    layer = common.DepthwiseConv(kernel, strides, padding, impl=impl)
    params = layer.init(jax.random.PRNGKey(1), inputs)
    forward = jax.jit(layer.apply)
    backward = jax.jit(jax.grad(lambda p, x: (layer.apply(p, x) ** 2).sum(),
                                argnums=(0, 1)))
    out = np.asarray(forward(params, inputs))
    reference = out if reference is None else reference
    yield {'case': name, 'impl': impl, 'shape': list(shape),
           'kernel': list(kernel), 'strides': list(strides),
           'forward_ms': round(_time(forward, params, inputs, steps=steps),
                               3),
           'forward_backward_ms': round(
               _time(backward, params, inputs, steps=steps), 3),
           'max_abs_diff_vs_conv': float(np.abs(out - reference).max()),
           'device': jax.devices()[0].device_kind}


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--cases', default=','.join(CASES))
  args = parser.parse_args(argv)
  names = [n for n in args.cases.split(',') if n]
  unknown = sorted(set(names) - set(CASES))
  if unknown:
    raise SystemExit(f'unknown --cases {unknown}; valid: {sorted(CASES)}')
  for name in names:
    for record in run_case(name, args.steps):
      print(json.dumps(record), flush=True)


if __name__ == '__main__':
  main()
