"""The model zoo: `python -m vit_jax.models [--family vit] [--resolution 224]`.

Prints every named variant with its parameter count and GFLOPs per image,
both from shapes alone: parameters via `jax.eval_shape`, FLOPs via XLA's
cost analysis of the lowered (not compiled, not run) forward pass. XLA counts
a multiply-add as two FLOPs; papers quoting "FLOPs" often mean
multiply-adds, half these numbers.
"""

import argparse
import sys
from typing import Iterable, List, NamedTuple, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models

# (family, variant, extra get_model kwargs): the rows of the listing.
ZOO: List[Tuple[str, str, dict]] = [
    *[('vit', v, {}) for v in (
        'Ti/16', 'S/32', 'S/16', 'M/16', 'B/32', 'B/16', 'B/8', 'L/32', 'L/16',
        'L/14', 'H/14', 'g/14', 'G/14')],
    *[('mixer', v, {}) for v in (
        'S/32', 'S/16', 'B/32', 'B/16', 'L/32', 'L/16', 'H/14')],
    # Swin with window 7, for 224 px (the 384 px models take window_size=12;
    # the listing runs every row at one --resolution).
    *[('swin', v, {}) for v in ('T/4', 'S/4', 'B/4', 'L/4')],
    # XCiT SIZE+DEPTH/PATCH: the paper's models at patch 16 and two at 8.
    *[('xcit', v, {}) for v in (
        'N12/16', 'T12/16', 'S12/16', 'T24/16', 'S24/16', 'M24/16', 'L24/16',
        'T12/8', 'S24/8')],
    # ConvMixer WIDTH/DEPTH with the paper's kernel and patch sizes.
    *[('convmixer', v, {}) for v in ('1536/20', '768/32', '1024/20')],
    # MAE pre-training (encoder on 25% of patches + the paper's 512-wide,
    # 8-block decoder); without a 'mask' rng, apply masks with a fixed seed.
    *[('mae', v, {}) for v in ('B/16', 'L/16', 'H/14')],
]


class ZooRow(NamedTuple):
  family: str
  variant: str
  params: int
  gflops: float


def count_params(model, resolution: int = 224, channels: int = 3) -> int:
  images = jax.ShapeDtypeStruct((1, resolution, resolution, channels),
                                jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  # Parameters only: BatchNorm's running averages ('batch_stats') are not.
  return int(sum(np.prod(leaf.shape)
                 for leaf in jax.tree.leaves(shapes['params'])))


def count_flops(model, resolution: int = 224, channels: int = 3) -> float:
  """FLOPs of one image's inference forward pass (XLA cost analysis)."""
  images = jax.ShapeDtypeStruct((1, resolution, resolution, channels),
                                jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  forward = jax.jit(lambda variables, x: model.apply(variables, x))
  return float(forward.lower(shapes, images).cost_analysis()['flops'])


def zoo_rows(entries: Iterable[Tuple[str, str, dict]],
             resolution: int = 224) -> List[ZooRow]:
  rows = []
  for family, variant, kwargs in entries:
    model = models.get_model(family, variant=variant, **kwargs)
    rows.append(ZooRow(family, variant, count_params(model, resolution),
                       count_flops(model, resolution) / 1e9))
  return rows


def format_table(rows: Sequence[ZooRow], resolution: int) -> str:
  lines = [f'{"model":<10} {"variant":<8} {"params":>15} '
           f'{"GFLOPs@" + str(resolution):>12}']
  for row in rows:
    lines.append(f'{row.family:<10} {row.variant:<8} {row.params:>15,} '
                 f'{row.gflops:>12.2f}')
  return '\n'.join(lines)


def main(argv: Sequence[str]) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--family', choices=sorted(models.MODELS),
                      help='list only this family')
  parser.add_argument('--resolution', type=int, default=224)
  args = parser.parse_args(argv)
  entries = [e for e in ZOO if args.family in (None, e[0])]
  print(format_table([], args.resolution))
  for entry in entries:  # a row at a time: the big variants take seconds.
    print(format_table(zoo_rows([entry], args.resolution),
                       args.resolution).splitlines()[1], flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
