"""A SegFormer size ladder on the digit mosaics (configs/segformer_mosaics.py):
three widths x three training lengths, for `vit_jax.scaling` with mIoU as
the metric (error = 1 - mIoU).

    python -m vit_jax.launch --sweep=configs/sweeps/segformer_mosaics.py \
        --sweep_dir=/tmp/segformer_ladder --parallel=2
    python -m vit_jax.scaling --workdirs='/tmp/segformer_ladder/*' \
        --metric=val/miou --x=compute/flops --out=/tmp/segformer_ladder/plots

Each run decays its learning rate to zero over its own length (the
recipe's warmup then linear decay), so every point is a finished run.
ARG 'short' is the quick version: lengths 150 / 300 / 600.
"""

from vit_jax.launch import sweep

RECIPE = 'configs/segformer_mosaics.py'
SIZES = ('XS', 'S', 'M')


def get_sweep(arg=None):
  if arg is None:
    lengths = [300, 600, 1200]
  elif arg == 'short':
    lengths = [150, 300, 600]
  else:
    raise ValueError(f'Unknown ARG {arg!r}; valid: None, \'short\'.')
  runs = [{'config': f'{RECIPE}:{size}', 'total_steps': steps,
           'schedule.warmup_steps': steps // 12}
          for size in SIZES for steps in lengths]
  return {
      'config': RECIPE,
      'runs': runs,
      'fixed': {},
      'metric': 'val/miou',
  }
