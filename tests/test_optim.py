"""Tests of vit_jax.optim: schedules, multipliers, optimizers.

The optimizers are checked against optax's own adamw / sgd, and the Scaling
ViT Adafactor against a reference written here in numpy from the formulas
of Shazeer & Stern 2018 and Zhai et al. 2021.
"""

import math
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from jax.sharding import NamedSharding

from vit_jax import optim
from vit_jax import sharding


def make_config(**fields) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.lr = 0.1
  config.schedule = ml_collections.ConfigDict(
      {'warmup_steps': 0, 'decay': 'constant'})
  config.optimizer = ml_collections.ConfigDict({'name': 'adamw'})
  config.wd = 0.0
  for key, value in fields.items():
    setattr(config, key, value)
  return config


def toy_params(seed: int = 0):
  """A small ViT-like tree: kernels, biases, LayerNorm, an embedding."""
  shapes = {
      'encoder': {
          'block_0': {
              'mlp': {'fc1': {'kernel': (8, 16), 'bias': (16,)}},
              'norm1': {'scale': (8,), 'bias': (8,)},
          },
          'pos_embed': (1, 4, 8),
      },
      'head': {'kernel': (8, 4), 'bias': (4,)},
  }
  leaves, treedef = jax.tree.flatten(
      shapes, is_leaf=lambda x: isinstance(x, tuple))
  rng = np.random.default_rng(seed)
  arrays = [jnp.asarray(rng.normal(size=shape), jnp.float32)
            for shape in leaves]
  return jax.tree.unflatten(treedef, arrays)


def random_grads(params, seed: int):
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)


def run_steps(tx, params, num_steps: int, seed: int = 1):
  """Applies `num_steps` updates with fixed random gradients per step."""
  state = tx.init(params)
  update = jax.jit(tx.update)
  for step in range(num_steps):
    grads = random_grads(params, seed + step)
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)
  return params, state


def assert_trees_close(actual, expected, rtol=1e-6, atol=1e-7):
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      np.asarray(a), np.asarray(b), rtol=rtol, atol=atol), actual, expected)


def states_of_type(state, cls):
  return [node for node in jax.tree.leaves(
      state, is_leaf=lambda x: isinstance(x, cls)) if isinstance(node, cls)]


# ----------------------------------------------------------------------------
# Schedules.


def schedule_values(schedule, steps):
  return [float(schedule(step)) for step in steps]


def test_cosine_schedule_boundaries():
  lr, total, warmup, cooldown = 0.1, 100, 10, 20
  config = make_config(lr=lr, schedule=ml_collections.ConfigDict(
      {'warmup_steps': warmup, 'decay': 'cosine',
       'cooldown_steps': cooldown}))
  schedule = optim.make_schedule(config, total)

  def cosine(step):
    progress = (step - warmup) / (total - warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))

  expected = {
      0: 0.0,
      warmup - 1: lr * (warmup - 1) / warmup,
      warmup: lr,
      warmup + 1: lr * cosine(warmup + 1),
      total - cooldown: lr * cosine(total - cooldown),  # cooldown factor 1
      total - 1: lr * cosine(total - 1) / cooldown,
      total: 0.0,
      total + 5: 0.0,
  }
  actual = dict(zip(expected, schedule_values(schedule, expected)))
  np.testing.assert_allclose(list(actual.values()), list(expected.values()),
                             rtol=1e-6, atol=1e-9)
  assert actual[0] == 0.0 and actual[total] == 0.0
  assert actual[warmup] == np.float32(lr)
  assert schedule(0).dtype == jnp.float32


def test_cosine_is_half_way_at_the_middle():
  config = make_config(lr=0.4, schedule=ml_collections.ConfigDict(
      {'warmup_steps': 10, 'decay': 'cosine'}))
  schedule = optim.make_schedule(config, 110)
  np.testing.assert_allclose(float(schedule(60)), 0.2, rtol=1e-6)
  np.testing.assert_allclose(float(schedule(110)), 0.0, atol=1e-9)


@pytest.mark.parametrize('decay', ['linear', 'rsqrt', 'constant'])
def test_other_decays_at_boundaries(decay):
  lr, total, warmup, cooldown, timescale, end = 0.5, 50, 5, 10, 7, 0.1
  config = make_config(lr=lr, schedule=ml_collections.ConfigDict(
      {'warmup_steps': warmup, 'decay': decay, 'cooldown_steps': cooldown,
       'timescale': timescale, 'end_lr_fraction': end}))
  schedule = optim.make_schedule(config, total)

  def decayed(step):
    if decay == 'constant':
      return 1.0
    if decay == 'linear':
      return end + (1 - end) * (1 - (step - warmup) / (total - warmup))
    return math.sqrt(timescale / (timescale + step - warmup))

  steps = [0, warmup - 1, warmup, warmup + 1, total - cooldown, total - 1,
           total]
  expected = [0.0, lr * (warmup - 1) / warmup, lr,
              lr * decayed(warmup + 1), lr * decayed(total - cooldown),
              lr * decayed(total - 1) / cooldown, 0.0]
  np.testing.assert_allclose(schedule_values(schedule, steps), expected,
                             rtol=1e-6, atol=1e-9)


def test_linear_decay_ends_at_end_fraction_without_cooldown():
  config = make_config(lr=1.0, schedule=ml_collections.ConfigDict(
      {'decay': 'linear', 'end_lr_fraction': 0.25}))
  schedule = optim.make_schedule(config, 40)
  np.testing.assert_allclose(schedule_values(schedule, [0, 20, 40, 80]),
                             [1.0, 0.625, 0.25, 0.25], rtol=1e-6)


def test_schedule_is_jit_traceable():
  config = make_config(schedule=ml_collections.ConfigDict(
      {'warmup_steps': 3, 'decay': 'cosine', 'cooldown_steps': 2}))
  schedule = optim.make_schedule(config, 20)
  steps = jnp.arange(21, dtype=jnp.int32)
  np.testing.assert_allclose(jax.jit(jax.vmap(schedule))(steps),
                             schedule_values(schedule, range(21)), rtol=1e-6)


def test_one_minus_sqrt_cooldown_and_length_free_decays():
  """The 1-sqrt cooldown of Hagele et al. 2024 over the last 40 of 100
  steps; before it a constant or rsqrt schedule does not depend on the
  run's length (what cooldown branches rely on)."""
  def make(decay, total, cooldown, shape='1-sqrt'):
    return optim.make_schedule(make_config(
        lr=0.5, schedule=ml_collections.ConfigDict(
            {'warmup_steps': 10, 'decay': decay, 'timescale': 30,
             'cooldown_steps': cooldown, 'cooldown_shape': shape})), total)
  schedule = make('constant', 100, 40)
  for step in (60, 70, 90, 99, 100):
    q = (100 - step) / 40
    assert float(schedule(step)) == pytest.approx(
        0.5 * (1 - math.sqrt(1 - q)), abs=1e-7)
  assert float(make('constant', 100, 40, 'linear')(70)) == pytest.approx(
      0.5 * 30 / 40)
  for decay in optim.LENGTH_FREE_DECAYS:
    long, short = make(decay, 1000, 0), make(decay, 100, 40)
    steps = jnp.arange(61)
    np.testing.assert_array_equal(jax.vmap(long)(steps),
                                  jax.vmap(short)(steps))
  with pytest.raises(ValueError, match=r"'sqrt'.*'linear', '1-sqrt'"):
    make('constant', 100, 40, 'sqrt')


def test_schedule_bad_inputs():
  with pytest.raises(ValueError, match=r"'cosin'.*'cosine', 'linear'"):
    optim.make_schedule(make_config(schedule=ml_collections.ConfigDict(
        {'decay': 'cosin'})), 10)
  with pytest.raises(ValueError, match=r'\(60\).*\(50\).*110.*\(100\)'):
    optim.make_schedule(make_config(schedule=ml_collections.ConfigDict(
        {'warmup_steps': 60, 'cooldown_steps': 50})), 100)
  with pytest.raises(ValueError, match='warmup_step.*valid fields'):
    optim.make_schedule(make_config(schedule=ml_collections.ConfigDict(
        {'warmup_step': 60})), 100)


# ----------------------------------------------------------------------------
# Multipliers.


def test_steps_decay_divides_at_its_boundaries():
  """TimeSformer's schedule: x0.1 at epochs 11 and 14 of 15, after a
  warmup (boundaries are fractions of the decay phase)."""
  config = ml_collections.ConfigDict({'lr': 0.005, 'schedule': {
      'decay': 'steps', 'boundaries': (11 / 15, 14 / 15),
      'warmup_steps': 10}})
  schedule = optim.make_schedule(config, 160)  # decay phase: 150 steps
  lrs = [float(schedule(s)) for s in (5, 10, 119, 120, 149, 150, 159)]
  np.testing.assert_allclose(
      lrs, [0.0025, 0.005, 0.005, 0.0005, 0.0005, 0.00005, 0.00005],
      rtol=1e-6)


@pytest.mark.parametrize('schedule, message', [
    ({'decay': 'steps'}, 'needs config.schedule.boundaries'),
    ({'decay': 'steps', 'boundaries': (0.8, 0.5)}, 'increase strictly'),
    ({'decay': 'steps', 'boundaries': (0.5, 1.0)}, 'within \\(0, 1\\)'),
    ({'decay': 'cosine', 'boundaries': (0.5,)}, "go with decay 'steps'"),
])
def test_steps_decay_bad_boundaries(schedule, message):
  config = ml_collections.ConfigDict({'lr': 1.0, 'schedule': schedule})
  with pytest.raises(ValueError, match=message):
    optim.make_schedule(config, 100)


def test_param_paths():
  paths = optim.param_paths(toy_params())
  assert paths['encoder']['block_0']['mlp']['fc1']['kernel'] == (
      'encoder/block_0/mlp/fc1/kernel')
  assert paths['head']['bias'] == 'head/bias'


def test_multiplier_tree_first_match_wins():
  rules = (('head/kernel', 3.0), ('.*/kernel', 0.03), ('head/.*', 7.0))
  multipliers = optim.multiplier_tree(toy_params(), rules, default=0.5)
  assert multipliers['head']['kernel'] == 3.0
  assert multipliers['head']['bias'] == 7.0
  assert multipliers['encoder']['block_0']['mlp']['fc1']['kernel'] == 0.03
  assert multipliers['encoder']['block_0']['norm1']['scale'] == 0.5
  assert multipliers['encoder']['pos_embed'] == 0.5


def test_default_weight_decay_multipliers_cover_kernels_only():
  multipliers = optim.multiplier_tree(toy_params(), optim.DEFAULT_WD_MULTS,
                                      default=0.0)
  decayed = {path for path, mult in zip(
      jax.tree.leaves(optim.param_paths(toy_params())),
      jax.tree.leaves(multipliers)) if mult}
  assert decayed == {'encoder/block_0/mlp/fc1/kernel', 'head/kernel'}


@pytest.mark.parametrize('rules, message', [
    ((('head/(kernel', 1.0),), r"bad regex 'head/\(kernel'"),
    ((('head/kernel',),), r"\('head/kernel',\) is not a \(regex, float\)"),
    ((('head/kernel', '3.0'),), r"'3.0'\) is not a \(regex, float\)"),
    ((('head/kernel', -1.0),), r'>= 0'),
    ('head/kernel', 'sequence of'),
])
def test_multiplier_tree_bad_rules(rules, message):
  with pytest.raises(ValueError, match=message):
    optim.multiplier_tree(toy_params(), rules, default=1.0)


def test_bad_rules_fail_when_the_optimizer_is_made():
  with pytest.raises(ValueError, match='config.lr_mults'):
    optim.make_optimizer(make_config(lr_mults=(('(', 0.0),)), 10)
  with pytest.raises(ValueError, match='config.wd_mults'):
    optim.make_optimizer(make_config(wd=0.1, wd_mults=(('x', 'y'),)), 10)


# ----------------------------------------------------------------------------
# Optimizers against optax.


def test_unknown_optimizer():
  config = make_config(optimizer=ml_collections.ConfigDict({'name': 'adam'}))
  with pytest.raises(ValueError, match=r"'adam'.*'adamw', 'adafactor', 'sgd'"):
    optim.make_optimizer(config, 10)
  config = make_config(optimizer=ml_collections.ConfigDict(
      {'name': 'adamw', 'beta1': 0.9}))
  with pytest.raises(ValueError, match=r"beta1.*'b1'"):
    optim.make_optimizer(config, 10)


def test_adamw_equals_optax_adamw():
  total = 12
  config = make_config(
      lr=0.01, wd=0.1,
      schedule=ml_collections.ConfigDict(
          {'warmup_steps': 2, 'decay': 'cosine'}),
      optimizer=ml_collections.ConfigDict(
          {'name': 'adamw', 'b1': 0.8, 'b2': 0.95, 'eps': 1e-6}))
  tx, schedule = optim.make_optimizer(config, total)
  params = toy_params()
  kernel_mask = jax.tree.map(lambda path: path.endswith('/kernel'),
                             optim.param_paths(params))
  reference = optax.adamw(schedule, b1=0.8, b2=0.95, eps=1e-6,
                          weight_decay=0.1, mask=kernel_mask)
  ours, _ = run_steps(tx, params, 5)
  theirs, _ = run_steps(reference, params, 5)
  assert_trees_close(ours, theirs)
  assert not np.allclose(ours['head']['kernel'], params['head']['kernel'])


@pytest.mark.parametrize('nesterov', [False, True])
def test_sgd_momentum_equals_optax_sgd(nesterov):
  config = make_config(
      lr=0.05,
      schedule=ml_collections.ConfigDict({'warmup_steps': 2,
                                          'decay': 'linear'}),
      optimizer=ml_collections.ConfigDict(
          {'name': 'sgd', 'momentum': 0.9, 'nesterov': nesterov}))
  tx, schedule = optim.make_optimizer(config, 10)
  reference = optax.sgd(schedule, momentum=0.9, nesterov=nesterov)
  ours, _ = run_steps(tx, toy_params(), 4)
  theirs, _ = run_steps(reference, toy_params(), 4)
  assert_trees_close(ours, theirs)


def test_gradient_clipping_to_global_norm():
  config = make_config(lr=1.0, grad_clip_norm=2.0,
                       optimizer=ml_collections.ConfigDict(
                           {'name': 'sgd', 'momentum': 0.0}))
  tx, _ = optim.make_optimizer(config, 10)
  params = toy_params()
  grads = jax.tree.map(lambda g: 10.0 * g, random_grads(params, 3))
  update = jax.jit(tx.update)
  updates, _ = update(grads, tx.init(params), params)
  np.testing.assert_allclose(optax.tree.norm(updates), 2.0, rtol=1e-5)
  scale = 2.0 / float(optax.tree.norm(grads))
  assert_trees_close(updates, jax.tree.map(lambda g: -scale * g, grads),
                     rtol=1e-5)
  # Below the threshold the gradients pass unchanged.
  small = jax.tree.map(lambda g: 1e-3 * g, grads)
  updates, _ = update(small, tx.init(params), params)
  assert_trees_close(updates, jax.tree.map(lambda g: -g, small))


def test_weight_decay_multipliers_route_by_regex():
  """Scaling ViT: head decayed 100x more than the body (3.0 vs 0.03)."""
  lr, wd = 0.01, 1.0
  config = make_config(
      lr=lr, wd=wd, wd_mults=(('head/kernel', 3.0), ('.*/kernel', 0.03)),
      optimizer=ml_collections.ConfigDict({'name': 'sgd', 'momentum': 0.9}))
  tx, _ = optim.make_optimizer(config, 10)
  params = toy_params()
  zeros = jax.tree.map(jnp.zeros_like, params)
  updates, _ = tx.update(zeros, tx.init(params), params)
  fc1 = params['encoder']['block_0']['mlp']['fc1']
  np.testing.assert_allclose(updates['head']['kernel'],
                             -lr * wd * 3.0 * params['head']['kernel'],
                             rtol=1e-6)
  np.testing.assert_allclose(
      updates['encoder']['block_0']['mlp']['fc1']['kernel'],
      -lr * wd * 0.03 * fc1['kernel'], rtol=1e-6)
  for path, update in zip(jax.tree.leaves(optim.param_paths(params)),
                          jax.tree.leaves(updates)):
    if not path.endswith('kernel'):
      assert not np.any(np.asarray(update)), path


def test_lr_multiplier_zero_freezes_and_half_halves():
  config = make_config(
      lr=0.01, wd=0.5,
      lr_mults=(('encoder/block_0/.*', 0.0), ('head/kernel', 0.5)),
      optimizer=ml_collections.ConfigDict({'name': 'adamw'}))
  tx, _ = optim.make_optimizer(config, 10)
  params = toy_params()
  trained, _ = run_steps(tx, params, 4)
  # Frozen: bit-identical, weight decay included.
  jax.tree.map(np.testing.assert_array_equal,
               trained['encoder']['block_0'], params['encoder']['block_0'])
  assert not np.allclose(trained['encoder']['pos_embed'],
                         params['encoder']['pos_embed'])
  # Half: exactly half of the update with no multiplier.
  plain_tx, _ = optim.make_optimizer(
      make_config(lr=0.01, wd=0.5, optimizer=config.optimizer), 10)
  grads = random_grads(params, 7)
  halved, _ = tx.update(grads, tx.init(params), params)
  plain, _ = plain_tx.update(grads, plain_tx.init(params), params)
  np.testing.assert_allclose(halved['head']['kernel'],
                             0.5 * plain['head']['kernel'], rtol=1e-6)
  np.testing.assert_allclose(halved['head']['bias'], plain['head']['bias'])


# ----------------------------------------------------------------------------
# Adafactor (Scaling ViT).


def adafactor_config(**fields):
  return make_config(
      optimizer=ml_collections.ConfigDict({'name': 'adafactor'}), **fields)


def adafactor_params():
  rng = np.random.default_rng(0)
  return {
      'square': {'kernel': jnp.asarray(rng.normal(size=(64, 64)),
                                       jnp.float32),
                 'bias': jnp.asarray(rng.normal(size=(64,)), jnp.float32)},
      'narrow': {'kernel': jnp.asarray(rng.normal(size=(16, 64)),
                                       jnp.float32)},
  }


def test_adafactor_decay_rate_values():
  for t in [1, 10, 1000, 10**6]:
    expected = min(0.999, 1.0 - t ** -0.8)
    np.testing.assert_allclose(
        float(optim.adafactor_second_moment_decay(t - 1)), expected,
        rtol=1e-6, atol=1e-7)


def test_adafactor_state_layout():
  tx, _ = optim.make_optimizer(adafactor_config(), 10)
  state = tx.init(adafactor_params())
  (momentum,) = states_of_type(state, optim.MomentumState)
  assert all(leaf.dtype == jnp.bfloat16
             for leaf in jax.tree.leaves(momentum.momentum))
  (second_moment,) = states_of_type(state, optax.FactoredState)
  # 64x64: a row and a column vector, no full matrix.
  assert second_moment.v_row['square']['kernel'].shape == (64,)
  assert second_moment.v_col['square']['kernel'].shape == (64,)
  assert second_moment.v['square']['kernel'].size == 1
  # 16x64 and the bias: full second moments.
  assert second_moment.v['narrow']['kernel'].shape == (16, 64)
  assert second_moment.v['square']['bias'].shape == (64,)
  assert second_moment.v_row['narrow']['kernel'].size == 1


def numpy_adafactor_updates(params, grads_per_step, lr, wd, wd_mults,
                            beta1=0.9, eps=1e-30):
  """Scaling-ViT Adafactor written from the papers' formulas, in float64.

  Shazeer & Stern 2018, Alg. 4: R = EMA of row sums of g^2, C = EMA of
  column sums, V = R C / sum(R); Zhai et al. 2021: beta2 = min(0.999,
  1 - t^-0.8), momentum 0.9 stored in bfloat16, no clipping, no parameter
  scaling; decoupled weight decay scaled by lr.
  """
  params = {k: np.asarray(v, np.float64) for k, v in params.items()}
  rows, cols, full, momentum = {}, {}, {}, {}
  for name, p in params.items():
    momentum[name] = np.zeros(p.shape, jnp.bfloat16)
    if p.ndim == 2 and min(p.shape) >= 32:
      rows[name], cols[name] = np.zeros(p.shape[0]), np.zeros(p.shape[1])
    else:
      full[name] = np.zeros(p.shape)
  all_updates = []
  for t, grads in enumerate(grads_per_step, start=1):
    beta2 = min(0.999, 1.0 - t ** -0.8)
    updates = {}
    for name, p in params.items():
      g = np.asarray(grads[name], np.float64)
      squared = g * g + eps
      if name in rows:
        rows[name] = beta2 * rows[name] + (1 - beta2) * squared.sum(axis=1)
        cols[name] = beta2 * cols[name] + (1 - beta2) * squared.sum(axis=0)
        second_moment = np.outer(rows[name], cols[name]) / rows[name].sum()
      else:
        full[name] = beta2 * full[name] + (1 - beta2) * squared
        second_moment = full[name]
      scaled = g / np.sqrt(second_moment)
      # Stored in bfloat16, averaged in full precision.
      direction = (beta1 * momentum[name].astype(np.float64) +
                   (1 - beta1) * scaled)
      momentum[name] = direction.astype(np.float32).astype(jnp.bfloat16)
      updates[name] = -lr * (direction + wd * wd_mults[name] * p)
      params[name] = p + updates[name]
    all_updates.append(updates)
  return all_updates


def test_adafactor_matches_numpy_reference():
  lr, wd = 0.01, 0.5
  tx, _ = optim.make_optimizer(adafactor_config(lr=lr, wd=wd), 10)
  params = adafactor_params()
  rng = np.random.default_rng(5)
  grads_per_step = [jax.tree.map(
      lambda p: jnp.asarray(rng.normal(size=p.shape), jnp.float32), params)
                    for _ in range(2)]

  flat = lambda tree: {path: leaf for path, leaf in zip(
      jax.tree.leaves(optim.param_paths(tree)), jax.tree.leaves(tree))}
  wd_mults = {'square/kernel': 1.0, 'square/bias': 0.0, 'narrow/kernel': 1.0}
  expected = numpy_adafactor_updates(
      flat(params), [flat(g) for g in grads_per_step], lr, wd, wd_mults)

  state = tx.init(params)
  jitted_update = jax.jit(tx.update)
  for step, grads in enumerate(grads_per_step):
    updates, state = jitted_update(grads, state, params)
    params = optax.apply_updates(params, updates)
    for path, update in flat(updates).items():
      np.testing.assert_allclose(update, expected[step][path], rtol=2e-5,
                                 atol=1e-9, err_msg=f'{path} step {step}')
  # Hand check of the first step of the factored kernel: beta2 = 0 at t = 1,
  # so V is the rank-1 estimate of g^2 and the direction 0.1 * g / sqrt(V).
  g = np.asarray(grads_per_step[0]['square']['kernel'], np.float64)
  estimate = np.outer((g**2).sum(1), (g**2).sum(0)) / (g**2).sum()
  p0 = np.asarray(adafactor_params()['square']['kernel'], np.float64)
  np.testing.assert_allclose(
      expected[0]['square/kernel'],
      -lr * (0.1 * g / np.sqrt(estimate) + wd * p0), rtol=1e-9)


@pytest.mark.parametrize('name', ['adafactor', 'adamw'])
def test_jit_with_fsdp_sharded_params(name):
  config = make_config(
      lr=0.01, wd=0.1, grad_clip_norm=1.0,
      lr_mults=(('narrow/.*', 0.0),),
      optimizer=ml_collections.ConfigDict({'name': name}))
  tx, _ = optim.make_optimizer(config, 10)
  mesh = sharding.make_mesh(data=1, fsdp=8)
  params = adafactor_params()
  shardings = jax.tree.map(
      lambda p: NamedSharding(mesh, sharding.fsdp_spec(p.shape, mesh)),
      params)
  sharded = jax.device_put(params, shardings)
  assert sharded['square']['kernel'].sharding.spec != ()
  expected, _ = run_steps(tx, params, 2)
  trained, state = run_steps(tx, sharded, 2)
  assert_trees_close(trained, expected, rtol=1e-5, atol=1e-6)
  jax.tree.map(np.testing.assert_array_equal, trained['narrow'],
               params['narrow'])
  assert jax.tree.leaves(state)  # The state is a plain pytree of arrays.


def test_error_messages_name_the_bad_value():
  with pytest.raises(ValueError, match=re.escape("'bogus'")):
    optim.make_optimizer(make_config(
        optimizer=ml_collections.ConfigDict({'name': 'bogus'})), 10)
  with pytest.raises(ValueError, match=r'config.wd.*-1'):
    optim.make_optimizer(make_config(wd=-1.0), 10)


def test_importing_optim_does_not_import_tensorflow():
  code = ('import sys, vit_jax.optim; '
          'assert "tensorflow" not in sys.modules, "tensorflow imported"')
  subprocess.run([sys.executable, '-c', code], check=True)
