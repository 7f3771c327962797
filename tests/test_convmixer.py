"""ConvMixer: numerics against timm (eval and train-mode BatchNorm), scan,
sizes, variants and the ImageNet recipe.

The golden file comes from tests/support/make_golden_convmixer.py (width 16,
depth 2, kernel 5, patch 4 at 32 px, random weights and random running
statistics).
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
import tiny
from vit_jax import config as config_lib
from vit_jax import models
from vit_jax import optim
from vit_jax import weights
from vit_jax.models import common
from vit_jax.models import convmixer
from vit_jax.models import get_model

TOL = 1e-4  # float32, against timm on the CPU.
STATS_TOL = 1e-5
# bfloat16 compute (8-bit mantissa) over 2 blocks, against float32: the
# largest logit error, as a fraction of the largest |logit|.
BF16_RELATIVE_TOL = 0.05

GOLDEN_KWARGS = dict(width=16, depth=2, kernel_size=5, patch_size=4,
                     num_classes=10)


@pytest.fixture(scope='module')
def golden():
  state_dict, outputs = golden_cases.load('convmixer')
  variables = weights.from_timm(state_dict, 'convmixer', **GOLDEN_KWARGS)
  return state_dict, outputs, variables


def _forward(variables, images, train=False, **overrides):
  return golden_cases.forward('convmixer', GOLDEN_KWARGS, variables, images,
                              train, **overrides)


def _stat_path(timm_name):
  """timm's BatchNorm buffer name -> (our module path, 'mean' / 'var'),
  written here independently of the importer's rules."""
  module, _, buffer = timm_name.rpartition('.')
  stat = {'running_mean': 'mean', 'running_var': 'var'}[buffer]
  if module == 'stem.2':
    return 'embed_norm', stat
  block, rest = re.fullmatch(r'blocks\.(\d+)\.(.*)', module).groups()
  norm = {'0.fn.2': 'norm1', '3': 'norm2'}[rest]
  return f'block_{block}/{norm}', stat


def _lookup(tree, path):
  for name in path.split('/'):
    tree = tree[name]
  return tree


def test_eval_matches_timm(golden):
  _, outputs, variables = golden
  assert set(variables) == {'params', 'batch_stats'}
  logits, aux = _forward(variables, outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['encoded'], outputs['encoded'], atol=TOL,
                             rtol=0)
  assert aux['pre_logits'].dtype == jnp.float32
  assert aux['encoded'].shape == (4, 8, 8, 16)


def test_eval_uses_the_imported_running_statistics(golden):
  """Default statistics (0, 1) give other logits: the golden's random
  statistics are exercised."""
  _, outputs, variables = golden
  defaults = dict(variables, batch_stats=jax.tree.map(
      np.ones_like, variables['batch_stats']))
  logits, _ = _forward(defaults, outputs['images'])
  assert np.abs(logits - outputs['logits']).max() > 100 * TOL


def test_train_mode_matches_timm(golden):
  _, outputs, variables = golden
  (logits, _), updates = _forward(variables, outputs['images'], train=True)
  np.testing.assert_allclose(logits, outputs['train_logits'], atol=TOL,
                             rtol=0)
  timm_stats = {name[len('train_stats/'):]: value
                for name, value in outputs.items()
                if name.startswith('train_stats/')}
  assert len(timm_stats) == 2 * (1 + 2 * GOLDEN_KWARGS['depth'])
  for timm_name, expected in timm_stats.items():
    path, stat = _stat_path(timm_name)
    updated = _lookup(updates['batch_stats'], path)[stat]
    before = _lookup(variables['batch_stats'], path)[stat]
    assert np.abs(updated - before).max() > 100 * STATS_TOL, timm_name
    np.testing.assert_allclose(updated, expected, atol=STATS_TOL, rtol=0,
                               err_msg=timm_name)


def test_scan_equals_unrolled(golden):
  state_dict, outputs, variables = golden
  scanned = weights.from_timm(state_dict, 'convmixer', scan=True,
                              **GOLDEN_KWARGS)
  assert scanned['batch_stats']['blocks']['norm1']['mean'].shape == (2, 16)
  for collection in ('params', 'batch_stats'):
    jax.tree.map(np.testing.assert_array_equal, scanned[collection],
                 common.stack_blocks(variables[collection]))
  # Train mode reads the stacked running averages too (to update them).
  (logits, _), updates = _forward(scanned, outputs['images'], train=True,
                                  scan=True)
  np.testing.assert_allclose(logits, outputs['train_logits'], atol=TOL,
                             rtol=0)
  _, unrolled_updates = _forward(variables, outputs['images'], train=True)
  jax.tree.map(functools.partial(np.testing.assert_allclose, atol=1e-6),
               common.unstack_blocks(updates['batch_stats']),
               unrolled_updates['batch_stats'])


def test_bfloat16_close_to_float32(golden):
  _, outputs, variables = golden
  logits, aux = _forward(variables, outputs['images'], dtype=jnp.bfloat16)
  assert logits.dtype == jnp.float32
  assert aux['encoded'].dtype == jnp.bfloat16
  error = np.abs(np.asarray(logits) - outputs['logits']).max()
  assert error < BF16_RELATIVE_TOL * np.abs(outputs['logits']).max()


def test_remat_and_stochastic_depth_in_train_mode():
  kwargs = dict(width=8, depth=1, kernel_size=3, patch_size=4, num_classes=3,
                stochastic_depth=0.5)
  plain = get_model('convmixer', **kwargs)
  rematted = get_model('convmixer', remat=True, **kwargs)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 16, 16, 3))
  shapes = jax.eval_shape(plain.init, jax.random.PRNGKey(0), images)
  rng = np.random.default_rng(0)
  params = jax.tree.map(lambda leaf: rng.normal(0, 0.3, leaf.shape).astype(
      np.float32), shapes['params'])
  batch_stats = jax.tree.map(lambda leaf: np.ones(leaf.shape, np.float32),
                             shapes['batch_stats'])

  def loss(params, model, rng):
    (logits, _), _ = model.apply(
        {'params': params, 'batch_stats': batch_stats}, images, train=True,
        mutable=['batch_stats'], rngs={'dropout': rng})
    return jnp.sum(logits ** 2)

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  key = jax.random.PRNGKey(2)
  loss_plain, grads = value_and_grad(params, plain, key)
  loss_remat, grads_remat = value_and_grad(params, rematted, key)
  np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-5)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                 atol=1e-5), grads_remat, grads)
  losses = {float(value_and_grad(params, plain, jax.random.PRNGKey(seed))[0])
            for seed in range(3, 8)}
  assert len(losses) > 1  # the residual branch is dropped at random


# Parameters (not buffers) of timm's convmixer_1536_20, convmixer_768_32 and
# convmixer_1024_20_ks9_p14 at 1000 classes (timm 1.0.31).
@pytest.mark.parametrize('variant,expected', [
    ('1536/20', 51_625_960),
    ('768/32', 21_110_248),
    ('1024/20', 24_383_464),
])
def test_param_counts_match_timm(variant, expected):
  model = get_model('convmixer', variant=variant, num_classes=1000)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  count = lambda tree: sum(  # noqa: E731
      int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
  assert count(shapes['params']) == expected
  # Running mean and variance of 2 * depth + 1 BatchNorms.
  assert count(shapes['batch_stats']) == 2 * model.width * (
      2 * model.depth + 1)


def test_variants_carry_the_papers_kernel_patch_and_activation():
  sizes = {v: (m.width, m.depth, m.kernel_size, m.patch_size, m.activation)
           for v in convmixer.VARIANTS
           for m in [get_model('convmixer', variant=v)]}
  assert sizes == {'1536/20': (1536, 20, 9, 7, 'gelu'),
                   '768/32': (768, 32, 7, 7, 'relu'),
                   '1024/20': (1024, 20, 9, 14, 'gelu')}
  model = get_model('convmixer', variant='1536/20', kernel_size=3,
                    patch_size=14, activation='relu')
  assert (model.kernel_size, model.patch_size, model.activation) == (
      3, 14, 'relu')
  assert models.checkpoint_image_size('convmixer', model, {}) == (224, 224)


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(variant='1536/21'), r"Unknown ConvMixer variant '1536/21'; valid "
     r"variants: \['1536/20', '768/32', '1024/20'\]"),
    (dict(variant='B/16'), r"ConvMixer variant 'B/16' must look like "
     r"WIDTH/DEPTH.*\['1536/20', '768/32', '1024/20'\]"),
    (dict(variant='1536'), r"'1536' must look like WIDTH/DEPTH"),
    (dict(variant='1536/20', activation='swish'),
     r"Unknown ConvMixer activation 'swish'; valid choices: \['gelu', "
     r"'relu'\]"),
    (dict(variant='1536/20', kernel_size=0),
     r'kernel_size must be a positive integer, got 0'),
])
def test_bad_variants_are_clear_errors(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    get_model('convmixer', **kwargs)


# ----------------------------------------------------------------------------
# The ImageNet recipe (its preprocessing and two training steps are covered
# with the other recipes in test_data.py and test_train.py).


@pytest.mark.parametrize('arg,epochs,activation', [
    ('1536/20', 150, 'gelu'), ('768/32', 300, 'relu'),
    ('1024/20', 150, 'gelu')])
def test_recipe_resolves_with_the_papers_settings(arg, epochs, activation):
  config = tiny.load_config('convmixer_i1k', arg)
  resolved = config_lib.resolve(config)
  steps_per_epoch = 1_281_167 // 640
  assert resolved.total_steps == epochs * steps_per_epoch
  assert (resolved.lr, resolved.wd, resolved.grad_clip_norm) == (
      0.01, 2e-5, 1.0)
  assert resolved.optimizer.eps == 1e-3
  model = get_model('convmixer', variant=resolved.model.variant)
  assert model.activation == activation


def test_recipe_schedule_is_close_to_the_one_cycle():
  config = tiny.load_config('convmixer_i1k')
  total = config.total_steps
  schedule = optim.make_schedule(config, total)
  steps = np.linspace(0, total, 301)
  ours = np.asarray(jax.jit(schedule)(steps))
  # The authors' schedule: piecewise linear over the run.
  paper = np.interp(steps, [0, total * 2 / 5, total * 4 / 5, total],
                    [0, 0.01, 0.01 / 20, 0])
  assert float(schedule(total * 2 // 5)) == pytest.approx(0.01)
  assert np.abs(ours - paper).max() < 0.09 * 0.01
  assert ours.mean() == pytest.approx(paper.mean(), rel=0.05)
