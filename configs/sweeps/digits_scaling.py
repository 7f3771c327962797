"""The offline scaling study: ViT and Mixer ladders on digits, with
cooldown branches (configs/digits_scaling.py is the recipe).

    python -m vit_jax.launch --sweep=configs/sweeps/digits_scaling.py \
        --sweep_dir=/tmp/digits_scaling --parallel=2
    python -m vit_jax.scaling --workdirs='/tmp/digits_scaling/*' \
        --metric=val/accuracy,fewshot/digits/10shot --x=compute/flops \
        --out=/tmp/digits_scaling/plots

Each size trains a 480-step trunk at constant learning rate (evaluated at
160, 320 and 480 steps) and three branches from it at steps 60, 120 and
240, each cooling down linearly over the last 25% of its length (20, 40
and 80 steps): 4 compute points with a cooldown per size, from one run
and three short ones. ARG 'small' is the version CI runs end to end: two
ViT sizes, 160-step trunks evaluated every 40 steps, one branch each (at
step 80, to step 107): two branches.
"""

from vit_jax.launch import sweep

RECIPE = 'configs/digits_scaling.py'


def get_sweep(arg=None):
  if arg is None:
    sizes = {'vit': ['xxs', 'xs', 's', 'm'], 'mixer': ['xs', 'm']}
    steps, fixed = [60, 120, 240], {}
  elif arg == 'small':
    sizes = {'vit': ['xxs', 's']}
    steps = [80]
    fixed = {'total_steps': 160, 'eval_every_steps': 40,
             'evals.fewshot.every_steps': 160, 'evals.fewshot.seeds': (0,),
             'checkpoint.every_steps': 80}
  else:
    raise ValueError(f'Unknown ARG {arg!r}; valid: None, \'small\'.')
  runs = []
  for family, names in sizes.items():
    for size in names:
      trunk = {'config': f'{RECIPE}:{family}/{size}'}
      runs.append(trunk)
      runs.extend(sweep.branches(trunk, steps, cooldown_fraction=0.25))
  return {
      'config': RECIPE,
      'runs': runs,
      'fixed': fixed,
      'metric': 'val/accuracy',
  }
