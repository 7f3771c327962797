"""BatchNorm through the training system: the train state carries the
running averages, the step updates them with global-batch statistics (any
mesh, gradient accumulation), checkpoints resume them bit for bit, and
evaluation, representations and `init_from` use them.

A tiny ConvMixer (every layer normalised by BatchNorm) on 8x8 images.
"""

import os

import jax
import ml_collections
import numpy as np
import pytest

from vit_jax import build, checkpoint, optim, sharding, train, weights
from vit_jax import config as config_lib
from vit_jax import data
from vit_jax.models import common

from tiny import tiny_config

CONVMIXER = dict(name='convmixer', width=8, depth=2, kernel_size=3,
                 patch_size=2, num_classes=10)


def _setup(accum=1):
  config = ml_collections.ConfigDict({
      'lr': 1e-2, 'wd': 1e-4, 'grad_clip_norm': 1.0,
      'optimizer': {'name': 'adamw'},
      'schedule': {'warmup_steps': 1, 'decay': 'cosine'}})
  model = build.build_model(ml_collections.ConfigDict(CONVMIXER))
  tx, schedule = optim.make_optimizer(config, 10)
  init_fn = build.make_init_fn(model, tx, (8, 8, 1))
  step_fn = train.make_train_step(
      train.make_loss_fn(model, ml_collections.ConfigDict()), tx, schedule,
      accum)
  rng = np.random.default_rng(0)
  batches = [{'image': rng.normal(1.0, 2.0, size=(16, 8, 8, 1)
                                  ).astype(np.float32),
              'labels': np.eye(10, dtype=np.float32)[rng.integers(0, 10, 16)]}
             for _ in range(3)]
  return model, init_fn, step_fn, batches


def _run(init_fn, step_fn, batches, mesh):
  shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  shardings = sharding.param_shardings(shapes, mesh)
  state = jax.jit(init_fn, out_shardings=shardings)(jax.random.PRNGKey(0))
  step = jax.jit(step_fn, in_shardings=(shardings, sharding.batch_sharding(
      mesh), sharding.replicated(mesh)), out_shardings=(
          shardings, sharding.replicated(mesh)))
  states = [jax.device_get(state)]
  for batch in batches:
    state, _ = step(state, sharding.global_batch(batch, mesh),
                    jax.random.PRNGKey(1))
    states.append(jax.device_get(state))
  return states


def _stats_after(model, variables, images_list):
  """The running averages after train-mode forwards of `images_list` in
  turn, each as one batch on one device: the reference."""
  stats = variables['batch_stats']
  for images in images_list:
    _, updated = model.apply({'params': variables['params'],
                              'batch_stats': stats}, images, train=True,
                             mutable=['batch_stats'])
    stats = updated['batch_stats']
  return stats


def _assert_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(x, y, atol=atol)


def test_state_carries_statistics_of_the_global_batch_on_every_mesh():
  model, init_fn, step_fn, batches = _setup()
  one = _run(init_fn, step_fn, batches,
             sharding.make_mesh(1, 1, devices=jax.devices()[:1]))
  assert sorted(one[0]) == ['batch_stats', 'opt_state', 'params', 'step']
  # Step 1's statistics: the whole batch's, as one forward computes them.
  expected = _stats_after(model, one[0], [batches[0]['image']])
  _assert_close(one[1]['batch_stats'], expected, atol=1e-6)
  stem_mean = one[1]['batch_stats']['embed_norm']['mean']
  assert np.abs(stem_mean).max() > 1e-3  # they moved from zero
  for data_size, fsdp in [(8, 1), (2, 4)]:
    mesh = _run(init_fn, step_fn, batches, sharding.make_mesh(data_size,
                                                              fsdp))
    # Statistics over each device's 2 rows would differ at once.
    _assert_close(mesh[1]['batch_stats'], one[1]['batch_stats'], atol=1e-6)
    _assert_close(mesh[-1]['batch_stats'], one[-1]['batch_stats'],
                  atol=1e-5)
    _assert_close(mesh[-1]['params'], one[-1]['params'], atol=1e-5)


def test_gradient_accumulation_updates_statistics_per_microbatch():
  model, init_fn, _, batches = _setup()
  _, _, accum_step, _ = _setup(accum=2)
  states = _run(init_fn, accum_step, batches[:1], sharding.make_mesh(-1, 1))
  images = batches[0]['image']
  # Microbatch i: rows i, i + 2, ... (train._microbatches), in turn.
  expected = _stats_after(model, states[0], [images[0::2], images[1::2]])
  _assert_close(states[1]['batch_stats'], expected, atol=1e-6)


@pytest.fixture(scope='module')
def convmixer_runs(tmp_path_factory, data_dir):
  """A straight 6-step run and one killed at step 5 then resumed."""
  root = tmp_path_factory.mktemp('batch_norm')
  config = tiny_config(data_dir, total_steps=6, eval_every_steps=None,
                       log_every_steps=1, **{'checkpoint.every_steps': 3})
  config.model = ml_collections.ConfigDict(dict(CONVMIXER, dtype='float32'))
  straight = str(root / 'straight')
  train.train_and_evaluate(config, straight)
  interrupted = str(root / 'interrupted')
  check = train._check_finite

  class Killed(Exception):
    pass

  def die_at_step_5(step, metrics):
    if step == 5:
      raise Killed()
    return check(step, metrics)

  train._check_finite = die_at_step_5
  try:
    with pytest.raises(Killed):
      train.train_and_evaluate(config, interrupted)
  finally:
    train._check_finite = check
  train.train_and_evaluate(config, interrupted)  # resumes from step 3
  return config, straight, interrupted


def _variables(workdir, step=None):
  return checkpoint.restore_variables(os.path.join(workdir, 'checkpoints'),
                                      step)


def test_resume_restores_batch_statistics_bit_for_bit(convmixer_runs):
  _, straight, interrupted = convmixer_runs
  resumed, expected = _variables(interrupted, 6), _variables(straight, 6)
  assert sorted(resumed) == ['batch_stats', 'params']
  for got, want in zip(jax.tree.leaves(resumed), jax.tree.leaves(expected),
                       strict=True):
    np.testing.assert_array_equal(got, want)
  # The step-3 checkpoint's statistics are not the step-6 ones (saved, not
  # recomputed).
  early = _variables(straight, 3)['batch_stats']
  assert not np.array_equal(early['embed_norm']['var'],
                            resumed['batch_stats']['embed_norm']['var'])


def test_evaluation_and_representations_use_the_running_averages(
    convmixer_runs):
  config, straight, _ = convmixer_runs
  run = build.build_run(config_lib.resolve(config), data)
  functions = build.eval_functions(run)
  variables = _variables(straight)
  images = np.random.default_rng(1).normal(size=(8, 8, 8, 1)).astype(
      np.float32)
  logits = np.asarray(functions.predict(variables, images))
  # Running averages: an image's logits do not depend on its batch.
  np.testing.assert_allclose(functions.predict(variables, images[:1]),
                             logits[:1], atol=1e-5)
  expected, _ = run.model.apply(variables, images, train=False)
  np.testing.assert_allclose(logits, expected, atol=1e-6)
  features = functions.representation('pre_logits')(variables, images)
  alone = functions.representation('pre_logits')(variables, images[2:3])
  np.testing.assert_allclose(alone, features[2:3], atol=1e-5)
  # The statistics matter: identity statistics give other logits.
  identity = jax.tree_util.tree_map_with_path(
      lambda path, x: np.full_like(x, path[-1].key == 'var'),
      variables['batch_stats'])
  other, _ = run.model.apply({'params': variables['params'],
                              'batch_stats': identity}, images, train=False)
  assert np.abs(np.asarray(other) - logits).max() > 1e-3


def test_init_from_own_run_brings_its_statistics(convmixer_runs):
  config, straight, _ = convmixer_runs
  saved = _variables(straight)
  kwargs = {k: v for k, v in CONVMIXER.items() if k != 'name'}
  loaded = weights.load_init_params('own', straight, 'convmixer',
                                    image_size=8, **kwargs)
  assert sorted(loaded) == ['batch_stats', 'params']
  for got, want in zip(jax.tree.leaves(loaded), jax.tree.leaves(saved),
                       strict=True):
    np.testing.assert_array_equal(got, want)
  # And a training run started from it begins with them.
  config = ml_collections.ConfigDict(config.to_dict())
  config.init_from.kind, config.init_from.path = 'own', straight
  config = config_lib.resolve(config)
  run = build.build_run(config, data)
  state = train._fresh_state(config, run)
  for got, want in zip(jax.tree.leaves(state['batch_stats']),
                       jax.tree.leaves(saved['batch_stats']), strict=True):
    np.testing.assert_array_equal(got, want)
  # Scanned: the same statistics stacked along the depth.
  stacked = weights.load_init_params('own', straight, 'convmixer',
                                     image_size=8, scan=True, **kwargs)
  _assert_close(common.unstack_blocks(stacked['batch_stats']),
                saved['batch_stats'], atol=0)
