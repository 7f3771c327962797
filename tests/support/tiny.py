"""Recipes shrunk to seconds, shared by the training and evaluation tests."""

import importlib.util
import os

import ml_collections

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))  # tests/support/tiny.py's repository


def load_module(name):
  """configs/NAME.py as a module."""
  path = os.path.join(ROOT, 'configs', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'configs_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(name, arg=None):
  """configs/NAME.py's get_config(arg)."""
  module = load_module(name)
  return module.get_config(arg) if arg is not None else module.get_config()


def override(config, overrides):
  """Sets dotted keys: override(config, {'model.width': 32})."""
  for key, value in overrides.items():
    target = config
    *parents, leaf = key.split('.')
    for parent in parents:
      target = target[parent]
    target[leaf] = value
  return config


def tiny_config(data_dir, **overrides):
  """configs/digits.py shrunk to seconds: a 2-block ViT, batch 32, no
  few-shot evaluation (config.evals empty)."""
  config = load_config('digits')
  config.data.data_dir = data_dir
  config.model.update(dict(patch_size=4, width=32, depth=2, mlp_dim=64,
                           num_heads=2, dropout=0.0, stochastic_depth=0.0))
  config.batch_size = 32
  config.total_steps = 10
  config.schedule.warmup_steps = 2
  config.log_every_steps = 5
  config.eval_every_steps = 10
  config.checkpoint.every_steps = 5
  config.checkpoint.keep_last = 3
  config.evals = ml_collections.ConfigDict()
  return override(config, overrides)


def tiny_mae_config(data_dir, **overrides):
  """configs/mae_digits.py shrunk: the encoder of `tiny_config`'s ViT."""
  config = load_config('mae_digits')
  config.data.data_dir = data_dir
  config.model.update(dict(patch_size=4, width=32, depth=2, mlp_dim=64,
                           num_heads=2, decoder_width=16, decoder_depth=1,
                           decoder_num_heads=2))
  config.batch_size = 32
  config.total_steps = 10
  config.schedule.warmup_steps = 2
  config.log_every_steps = 5
  config.checkpoint.every_steps = 5
  return override(config, overrides)


def multihost_reference_params(config, processes):
  """The params after config.total_steps steps, computed in this process
  from the global batches a `processes`-process run assembles (process
  0's rows, then 1's, ...): what a multi-host run must match."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from vit_jax import build, data, optim, train  # pylint: disable=g-import-not-at-top
  model = build.build_model(config.model)
  tx, schedule = optim.make_optimizer(config, config.total_steps)
  image_shape = (8, 8, 1)  # digits
  init_fn = build.make_init_fn(model, tx, image_shape)
  step_fn = jax.jit(train.make_train_step(train.make_loss_fn(model, config),
                                          tx, schedule))
  iterators = [data.train_iterator(config.data, config.batch_size,
                                   seed=config.seed, process_index=i,
                                   process_count=processes)
               for i in range(processes)]
  state = jax.jit(init_fn)(jax.random.PRNGKey(config.seed))
  for _ in range(config.total_steps):
    parts = [next(it) for it in iterators]
    batch = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    state, _ = step_fn(state, batch, jax.random.PRNGKey(config.seed + 1))
  return jax.device_get(state['params'])


class Killed(Exception):
  """What `train_killed_at` stops a run with."""


def train_killed_at(config, workdir, step, monkeypatch):
  """Trains `config` in `workdir` until the step `step` finishes, then
  stops it with `Killed` (raised where the loop checks the step's
  metrics: after the step, before anything of it is saved)."""
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  import pytest  # pylint: disable=g-import-not-at-top
  check = train._check_finite  # pylint: disable=protected-access

  def die(at_step, metrics):
    if at_step == step:
      raise Killed()
    return check(at_step, metrics)

  monkeypatch.setattr(train, '_check_finite', die)
  try:
    with pytest.raises(Killed):
      train.train_and_evaluate(config, workdir)
  finally:
    monkeypatch.setattr(train, '_check_finite', check)


def step_on_meshes(make_config, data, batch, meshes=((8, 1), (4, 2))):
  """One jitted, sharded training step of `make_config(mesh)`'s run per
  (data, fsdp) mesh, from the same initial state and batch: [(loss,
  params after the step)], checking that an fsdp > 1 mesh does split
  parameters. `data` stands in for vit_jax.data (its `dataset_info`)."""
  import jax  # pylint: disable=g-import-not-at-top
  from vit_jax import build  # pylint: disable=g-import-not-at-top
  from vit_jax import sharding  # pylint: disable=g-import-not-at-top
  from vit_jax import train  # pylint: disable=g-import-not-at-top
  results = []
  for data_axis, fsdp in meshes:
    config = make_config({'data': data_axis, 'fsdp': fsdp})
    run = build.build_run(config, data)
    state = jax.jit(run.init_fn, out_shardings=run.state_shardings)(
        jax.random.PRNGKey(0))
    if fsdp > 1:
      assert any('fsdp' in str(leaf.sharding.spec)
                 for leaf in jax.tree.leaves(state['params']))
    step = jax.jit(train.make_train_step(train.make_loss_fn(run.model, config),
                                         run.tx, run.schedule),
                   in_shardings=(run.state_shardings,
                                 sharding.batch_sharding(run.mesh), None),
                   out_shardings=(run.state_shardings, None))
    state, metrics = step(state, batch, jax.random.PRNGKey(1))
    results.append((float(metrics['train/loss']),
                    jax.device_get(state['params'])))
  return results
