"""The model zoo: `python -m vit_jax.models [--family F] [--filter PATTERN]
[--resolution 224] [--pretrained]`.

Prints every named variant with its parameter count and GFLOPs per image,
both counted analytically from the sizes (`vit_jax.models.counts`): the
whole zoo in well under a second. FLOPs are the forward pass's matrix
products and convolutions, a multiply-add counted as two FLOPs as XLA
counts it (papers quoting "FLOPs" often mean multiply-adds, half these
numbers); XLA's cost analysis (`summary.json`), which also counts
elementwise work (GELU, softmax, norms), is 0.6-13% higher at 224 px, most
for the narrowest models (tests/test_counts.py checks the two against each
other). `count_params` and `count_flops` below are the
slow references: `jax.eval_shape` and XLA's cost analysis of the lowered
forward pass.

`--filter` keeps the rows whose name 'FAMILY VARIANT' (e.g. 'vit B/16')
contains PATTERN, or, when PATTERN has a glob character (* ? [), whose name
or variant matches it: `--filter 'vit B/*'`, `--filter '*/14'`.
`--pretrained` prints the timm architectures `vit_jax.pretrained` can load
instead (`pretrained.supported_table()`): each with its family, how it is
built and timm's tags of it on the Hub, the default first; there
`--family` keeps one family's and `--filter` keeps the lines whose
'ARCHITECTURE.TAG' or architecture contains PATTERN, or with a glob
character, matches it (`pretrained.list`): `--filter siglip`, `--filter
'*.mae'`.
"""

import argparse
import fnmatch
import importlib
import sys
from typing import Iterable, List, NamedTuple, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models
from vit_jax.models import counts

# (family, variant, extra get_model kwargs): the rows of the listing, each
# family's ZOO in models.FAMILIES' order.
ZOO: List[Tuple[str, str, dict]] = [
    (family.NAME, variant, {}) for family in models.FAMILIES
    for variant in family.ZOO]


class ZooRow(NamedTuple):
  family: str
  variant: str
  params: int
  gflops: float
  # The input the FLOPs are for when it is the model's own, not the
  # resolution's (a volume model: its (D, H, W)); '' otherwise.
  own_input: str = ''


def _one_input(model, resolution: int, channels: int) -> jax.ShapeDtypeStruct:
  """One image, or one clip of a clip model's `num_frames` frames."""
  frames = getattr(model, 'num_frames', None)
  return jax.ShapeDtypeStruct(
      (1, *((frames,) if frames else ()), resolution, resolution, channels),
      jnp.float32)


def count_params(model, resolution: int = 224, channels: int = 3) -> int:
  """Parameters of `model` from `jax.eval_shape` of its init (the slow
  reference for `counts.param_count`)."""
  images = _one_input(model, resolution, channels)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  # Parameters only: BatchNorm's running averages ('batch_stats') are not.
  return int(sum(np.prod(leaf.shape)
                 for leaf in jax.tree.leaves(shapes['params'])))


def count_flops(model, resolution: int = 224, channels: int = 3) -> float:
  """FLOPs of one image's inference forward pass, XLA's cost analysis of
  the lowered program (seconds per model; the reference for
  `counts.forward_flops`, which leaves elementwise work out)."""
  images = _one_input(model, resolution, channels)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  forward = jax.jit(lambda variables, x: model.apply(variables, x))
  return float(forward.lower(shapes, images).cost_analysis()['flops'])


def zoo_rows(entries: Iterable[Tuple[str, str, dict]],
             resolution: int = 224) -> List[ZooRow]:
  """Analytic rows (`vit_jax.models.counts`); a size the resolution does
  not fit raises the model's ValueError."""
  rows = []
  for family, variant, kwargs in entries:
    model = models.get_model(family, variant=variant, **kwargs)
    tally = counts.model_tally(model, resolution)
    volume = getattr(model, 'image_size', None)
    own_input = ('x'.join(map(str, volume))
                 if isinstance(volume, (tuple, list)) and len(volume) == 3
                 else '')
    rows.append(ZooRow(family, variant, tally.params, tally.flops / 1e9,
                       own_input))
  return rows


def matches(pattern: Optional[str], family: str, variant: str) -> bool:
  """Whether `--filter PATTERN` keeps the row 'FAMILY VARIANT': a substring
  of that name, or with a glob character, a glob over the name or the
  variant alone (case-sensitive: ViT's g and G differ)."""
  if pattern is None:
    return True
  name = f'{family} {variant}'
  if any(char in pattern for char in '*?['):
    return (fnmatch.fnmatchcase(name, pattern)
            or fnmatch.fnmatchcase(variant, pattern))
  return pattern in name


def format_table(rows: Sequence[ZooRow], resolution: int) -> str:
  lines = [f'{"model":<10} {"variant":<8} {"params":>15} '
           f'{"GFLOPs@" + str(resolution):>12}']
  for row in rows:
    lines.append(f'{row.family:<10} {row.variant:<8} {row.params:>15,} '
                 f'{row.gflops:>12.2f}'
                 + (f' (at its {row.own_input} volume)' if row.own_input
                    else ''))
  return '\n'.join(lines)


def _print_pretrained(parser: argparse.ArgumentParser,
                      args: argparse.Namespace) -> None:
  # Imported only here: the zoo itself needs nothing outside models/.
  try:
    pretrained = importlib.import_module('vit_jax.pretrained')
  except ModuleNotFoundError as error:
    if error.name != 'vit_jax.pretrained':
      raise  # a dependency of the module, not the module, is missing.
    parser.error('--pretrained needs the module vit_jax.pretrained, which '
                 'this installation lacks.')
  pattern = args.filter or '*'
  if not any(char in pattern for char in '*?['):  # a substring, as above
    pattern = f'*{pattern}*'
  table = pretrained.supported_table(pattern, args.family)
  if not table:
    parser.error(
        f'no pretrained architecture matches --family={args.family} '
        f"--filter={args.filter!r}; lines are named 'ARCHITECTURE.TAG', "
        f"e.g. --filter=siglip, --filter='*.mae'.")
  print(table)


class _Parser(argparse.ArgumentParser):
  """argparse, with a bad command line as one line on stderr (exit 2)
  instead of the usage text."""

  def error(self, message):
    message = '; '.join(line.strip() for line in message.splitlines()
                        if line.strip())
    self.exit(2, f'vit_jax.models: bad command line: {message} (--help '
              f'lists the options)\n')


def main(argv: Sequence[str]) -> None:
  parser = _Parser(
      prog='python -m vit_jax.models',
      description=__doc__.split('\n\n')[0].replace('\n', ' '))
  parser.add_argument('--family', choices=sorted(models.MODELS),
                      help='list only this family')
  parser.add_argument(
      '--filter', metavar='PATTERN',
      help="list only rows whose 'FAMILY VARIANT' name contains PATTERN, "
      "or with * ? [, whose name or variant matches it as a glob: "
      "'vit B/*', '*/14', 'B/16'; with --pretrained, the same over "
      "'ARCHITECTURE.TAG': 'siglip', '*.mae'")
  parser.add_argument('--resolution', type=int, default=224,
                      help='image side in pixels (default 224)')
  parser.add_argument('--pretrained', action='store_true',
                      help='print the timm architectures '
                      'vit_jax.pretrained can load and their tags, instead '
                      'of the zoo')
  args = parser.parse_args(argv)
  if args.pretrained:
    _print_pretrained(parser, args)
    return
  if args.resolution < 1:
    parser.error(f'--resolution must be positive, got {args.resolution}.')
  entries = [entry for entry in ZOO if args.family in (None, entry[0])
             and matches(args.filter, entry[0], entry[1])]
  if not entries:
    parser.error(
        f'no zoo row matches --family={args.family} --filter={args.filter!r}'
        f"; rows are named 'FAMILY VARIANT', e.g. 'vit B/16'.")
  rows, skipped = [], []
  for entry in entries:
    try:
      rows.extend(zoo_rows([entry], args.resolution))
    except ValueError as error:  # e.g. Swin's windows do not tile it.
      skipped.append(f'{entry[0]} {entry[1]}: {error}')
  print(format_table(rows, args.resolution))
  for line in skipped:
    print(f'skipped {line}', file=sys.stderr)


if __name__ == '__main__':
  main(sys.argv[1:])
