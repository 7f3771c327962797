"""Cooldown branches: many compute points from one run.

With a schedule whose value at a step does not depend on the run's length
(decay 'constant' or 'rsqrt' after warmup: Zhai et al. 2021, Sec. 3.5; the
warmup-stable-decay schedules of Hagele et al. 2024), a run of S + L steps
with an L-step cooldown passes through exactly the state a longer run
without cooldown (the trunk) has at step S. A branch (`config.branch`:
`trunk` = the trunk's workdir, `step` = S) starts from the trunk's kept
checkpoint at S -- params, optimizer state, step and data position -- and
trains steps S+1 .. total_steps in its own workdir, cooling down over its
last `schedule.cooldown_steps`. It ends bit-identical to a run from scratch
with its own config (tests/test_train.py).

The trunk must keep that checkpoint (`checkpoint.keep_steps`, which the
sweep helper `vit_jax.launch.sweep.branches` sets), and agree with the
branch on everything that shapes steps 1..S: `check_compatible`.
"""

from typing import Any, Dict, Mapping, Tuple

from vit_jax import checkpoint
from vit_jax import config as config_lib
from vit_jax import layout
from vit_jax import optim
from vit_jax import paths

# Config keys (prefixes) a branch may set differently from its trunk: its
# length and cooldown, its own branch/bookkeeping settings, and what does
# not change the numbers of training steps.
MAY_DIFFER = ('total_steps', 'schedule.cooldown_steps',
              'schedule.cooldown_shape', 'branch.', 'checkpoint.',
              'log_every_steps', 'eval_every_steps', 'eval_batch_size',
              'evals.', 'peak_flops_per_device')


def _may_differ(key: str) -> bool:
  return any(key == p or (p.endswith('.') and key.startswith(p))
             for p in MAY_DIFFER)


def trunk_config(trunk: str) -> Dict[str, Any]:
  """The trunk's config.json (resolved), or a clear error."""
  data = layout.read_config(trunk)
  if data is None:
    raise ValueError(f'config.branch.trunk {trunk!r} has no config.json: not '
                     f'a workdir, or its run has not started yet.')
  return config_lib.to_json_dict(config_lib.resolve(data))


def check_compatible(config: Any, trunk: Mapping[str, Any]) -> None:
  """Raises unless the branch `config` and the `trunk` config (both
  resolved) agree on everything before the branch point."""
  mine = config_lib.flat_items(config_lib.to_json_dict(config))
  theirs = config_lib.flat_items(dict(trunk))
  differing = sorted(
      key for key in set(mine) | set(theirs)
      if not _may_differ(key) and mine.get(key) != theirs.get(key))
  if differing:
    details = ', '.join(f'{k}: trunk {theirs.get(k)!r}, branch '
                        f'{mine.get(k)!r}' for k in differing[:8])
    raise ValueError(f'config.branch: the branch and its trunk '
                     f'{config.branch.trunk!r} differ in {details}; a branch '
                     f'may differ only in {list(MAY_DIFFER)}.')
  step = config.branch.step
  schedule = trunk['schedule']
  if schedule['decay'] not in optim.LENGTH_FREE_DECAYS:
    raise ValueError(f'config.branch: the trunk\'s schedule.decay '
                     f'{schedule["decay"]!r} depends on its total_steps; '
                     f'valid choices: {list(optim.LENGTH_FREE_DECAYS)}.')
  cooldown_start = trunk['total_steps'] - schedule['cooldown_steps']
  if step > cooldown_start:
    raise ValueError(f'config.branch.step ({step}) is past the start of the '
                     f'trunk\'s cooldown (step {cooldown_start}).')


def restore(config: Any, abstract_state: Any
            ) -> Tuple[Any, Dict[str, Any]]:
  """(state, data_state) of the trunk's checkpoint at the branch step,
  after `check_compatible`; a clear error when it is not there."""
  trunk, step = config.branch.trunk, config.branch.step
  check_compatible(config, trunk_config(trunk))
  directory = layout.checkpoint_dir(trunk)
  reader = (checkpoint.TrainCheckpointer(directory, read_only=True)
            if paths.isdir(directory) else None)
  steps = reader.all_steps() if reader is not None else []
  if step not in steps:
    if not steps or max(steps) < step:
      why = (f'the trunk has not reached step {step} yet (its checkpoints: '
             f'{steps}); start the branch when it has (the sweep launcher '
             f'waits for it)')
    else:
      why = (f'the trunk did not keep it (its checkpoints: {steps}); set '
             f'checkpoint.keep_steps in the trunk to include {step}')
    raise ValueError(f'config.branch: no checkpoint of step {step} in '
                     f'{directory}: {why}.')
  try:
    return reader.restore(step, abstract_state, with_data=True)
  finally:
    reader.close()

