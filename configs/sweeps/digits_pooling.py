"""A sweep of configs/digits.py: the three poolings x two learning rates.

    python -m vit_jax.launch --sweep=configs/sweeps/digits_pooling.py \
        --sweep_dir=/tmp/digits_pooling --parallel=2

ARG 'short' trains each run for 160 steps instead of the recipe's 640 (a
quick look at the ranking: about 30 s per run on 2 CPU cores).
"""

from vit_jax.launch import sweep


def get_sweep(arg=None):
  fixed = {}
  if arg == 'short':
    fixed = {'total_steps': 160, 'eval_every_steps': 160,
             'checkpoint.every_steps': 160, 'evals.fewshot.every_steps': 160,
             'log_every_steps': 20}
  elif arg is not None:
    raise ValueError(f'Unknown ARG {arg!r}; valid: None, \'short\'.')
  return {
      'config': 'configs/digits.py',
      'runs': sweep.product(
          sweep.grid({'model.pool_type': ['cls', 'gap', 'map']}),
          sweep.grid({'lr': [1e-3, 3e-3]})),
      'fixed': fixed,
      'metric': 'val/accuracy',
  }
