"""XCiT: numerics and BatchNorm statistics against timm, sizes, errors, and
the ImageNet-1k recipe.

The golden file comes from tests/support/make_golden_xcit.py: a small timm Xcit
(24x32 px images, patch 8, 2 XCiT layers, 2 class-attention layers) with
random weights and random BatchNorm running averages, its outputs in eval
and train mode and its running averages after one train-mode forward.
"""


import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
import tiny
from vit_jax import config as config_lib
from vit_jax import models
from vit_jax import weights
from vit_jax.models import common
from vit_jax.models import get_model
from vit_jax.models import xcit
from vit_jax.models.__main__ import count_params

TOL = 1e-4  # float32, against timm on the CPU.
STATS_TOL = 1e-5  # running averages after one train-mode forward.
# bfloat16 compute (8-bit mantissa) against float32: the largest logit
# error, as a fraction of the largest |logit|.
BF16_RELATIVE_TOL = 0.05

GOLDEN_KWARGS = dict(patch_size=8, width=24, depth=2, num_heads=4,
                     mlp_ratio=2.0, layer_scale_init=1.0, tokens_norm=True,
                     num_classes=10)


@pytest.fixture(scope='module')
def golden():
  state_dict, outputs = golden_cases.load('xcit')
  variables = weights.from_timm(state_dict, 'xcit', **GOLDEN_KWARGS)
  return state_dict, outputs, variables


def _forward(variables, images, train=False, **overrides):
  return golden_cases.forward('xcit', GOLDEN_KWARGS, variables, images,
                              train, **overrides)


def _timm_train_stats(state_dict, outputs, **overrides):
  """timm's running averages after its train-mode forward, imported the
  way its state dict is: the 'batch_stats' of our model."""
  updated = dict(state_dict)
  for name, value in outputs.items():
    if name.startswith('train_stats/'):
      updated[name[len('train_stats/'):]] = value
  return weights.from_timm(updated, 'xcit', **dict(GOLDEN_KWARGS, **overrides)
                           )['batch_stats']


def _assert_trees_close(actual, expected, atol):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, atol=atol, rtol=0)


def test_from_timm_matches_timm(golden):
  state_dict, outputs, variables = golden
  assert set(variables) == {'params', 'batch_stats'}
  # Running averages in eval mode: timm's, and they matter (random ones).
  np.testing.assert_array_equal(
      variables['batch_stats']['block_1']['lpi']['bn']['var'],
      state_dict['blocks.1.local_mp.bn.running_var'])
  logits, aux = _forward(variables, outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  assert aux['pre_logits'].dtype == jnp.float32
  assert aux['encoded'].shape == (3, 1 + 3 * 4, 24)  # class token + 3x4 grid


def test_class_token_only_norm_matches_timm(golden):
  """tokens_norm=False (XCiT-N12's class attention) on the same weights."""
  _, outputs, variables = golden
  logits, _ = _forward(variables, outputs['images'], tokens_norm=False)
  np.testing.assert_allclose(logits, outputs['logits_cls_norm_only'],
                             atol=TOL, rtol=0)
  assert np.abs(outputs['logits_cls_norm_only'] - outputs['logits']).max() > (
      100 * TOL)


def test_train_mode_batch_statistics_match_timm(golden):
  state_dict, outputs, variables = golden
  (logits, _), updates = _forward(variables, outputs['images'], train=True)
  np.testing.assert_allclose(logits, outputs['train_logits'], atol=TOL,
                             rtol=0)
  expected = _timm_train_stats(state_dict, outputs)
  _assert_trees_close(updates['batch_stats'], expected, STATS_TOL)
  # 5 BatchNorms (3 in the patch embedding, 1 LPI per layer), all moved.
  assert len(jax.tree.leaves(expected)) == 2 * 5
  moved = jax.tree.map(lambda new, old: np.abs(new - old).max(),
                       expected, variables['batch_stats'])
  assert min(jax.tree.leaves(moved)) > 1e-3


def test_scan_and_remat_equal_unrolled(golden):
  """Scanned, rematerialised layers in train mode: the same outputs, and
  each layer updates its own slice of the stacked running averages (which
  also checks that they were read: new = 0.9 old + 0.1 batch)."""
  state_dict, outputs, _ = golden
  scanned = weights.from_timm(state_dict, 'xcit', scan=True,
                              **GOLDEN_KWARGS)
  assert 'blocks' in scanned['params'] and 'blocks' in scanned['batch_stats']
  assert scanned['params']['blocks']['attn']['temperature'].shape == (2, 4)
  (logits, _), updates = _forward(scanned, outputs['images'], train=True,
                                  scan=True, remat=True)
  np.testing.assert_allclose(logits, outputs['train_logits'], atol=TOL,
                             rtol=0)
  _assert_trees_close(common.unstack_blocks(updates['batch_stats']),
                      _timm_train_stats(state_dict, outputs), STATS_TOL)


def test_bfloat16_close_to_float32(golden):
  _, outputs, variables = golden
  logits, aux = _forward(variables, outputs['images'], dtype=jnp.bfloat16)
  assert logits.dtype == jnp.float32
  assert aux['encoded'].dtype == jnp.bfloat16
  error = np.abs(np.asarray(logits) - outputs['logits']).max()
  assert error < BF16_RELATIVE_TOL * np.abs(outputs['logits']).max()


def test_new_head_keeps_the_rest(golden):
  state_dict, _, variables = golden
  new_head = weights.from_timm(state_dict, 'xcit',
                               **dict(GOLDEN_KWARGS, num_classes=3,
                                      head_bias_init=-2.0))
  assert new_head['params']['head']['kernel'].shape == (24, 3)
  assert not new_head['params']['head']['kernel'].any()
  np.testing.assert_array_equal(new_head['params']['head']['bias'], -2.0)
  _assert_trees_close(new_head['batch_stats'], variables['batch_stats'], 0)
  assert models.checkpoint_image_size(
      'xcit', get_model('xcit', **GOLDEN_KWARGS), {}) == (224, 224)


# timm 1.0.31, `sum(p.numel() for p in model.parameters())` and the
# BatchNorm running_mean / running_var elements, with 1000 classes.
@pytest.mark.parametrize('variant,timm_name,params,running_averages', [
    ('N12/16', 'xcit_nano_12_p16_224', 3_053_224, 3_552),
    ('T12/8', 'xcit_tiny_12_p8_224', 6_706_504, 5_280),
    ('S12/16', 'xcit_small_12_p16_224', 26_253_304, 10_656),
    ('S24/16', 'xcit_small_24_p16_224', 47_671_384, 19_872),
    ('M24/16', 'xcit_medium_24_p16_224', 84_395_752, 26_496),
    ('L24/16', 'xcit_large_24_p16_224', 189_096_136, 39_744),
])
def test_sizes_match_timm(variant, timm_name, params, running_averages):
  del timm_name  # the model the numbers come from
  # Scanned: the same counts, traced once per layer type (quicker).
  model = get_model('xcit', variant=variant, num_classes=1000, scan=True)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  count = lambda tree: sum(  # noqa: E731
      int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))
  assert count(shapes['params']) == params
  assert count(shapes['batch_stats']) == running_averages


def test_variants_carry_layer_scale_and_tokens_norm():
  small = get_model('xcit', variant='S24/8')
  assert (small.width, small.depth, small.num_heads, small.patch_size) == (
      384, 24, 8, 8)
  assert small.layer_scale_init == 1e-5 and small.tokens_norm
  nano = get_model('xcit', variant='N12/16', num_classes=10)
  assert nano.layer_scale_init == 1.0 and not nano.tokens_norm
  assert nano.num_classes == 10


@pytest.mark.parametrize('kwargs,image_size,pattern', [
    (dict(variant='X12/16'), 224, r"Unknown XCiT size 'X12' in variant "
     r"'X12/16'; valid sizes: \['N12', 'T12', 'S12', 'T24', 'S24', 'M24', "
     r"'L24'\]"),
    (dict(variant='S24/32'), 224, r"patch size 32 in variant 'S24/32'; "
     r'valid patch sizes: \[2, 4, 8, 16\]'),
    (dict(variant='S24'), 224, r"'S24' must look like SIZE/PATCH.*valid "
     r"sizes: \['N12'"),
    (dict(patch_size=6, width=32, depth=1, num_heads=4), 36,
     r'patch_size 6; valid patch sizes: \[2, 4, 8, 16\]'),
    (dict(patch_size=8, width=30, depth=1, num_heads=4), 32,
     r'width 30 is not divisible by the number of heads 4'),
    (dict(patch_size=16, width=36, depth=1, num_heads=4), 32,
     r'width 36 is not divisible by 8: .* patch size 16 starts at width / 8'),
    (dict(variant='T12/16'), 232, r'image size 232x232 is not divisible by '
     r'the patch size 16'),
])
def test_bad_variants_and_sizes_are_clear_errors(kwargs, image_size,
                                                 pattern):
  with pytest.raises(ValueError, match=pattern):
    count_params(get_model('xcit', **kwargs), image_size)


def test_fourier_position_features_layout():
  features = xcit.fourier_position_features(3, 4)
  assert features.shape == (12, 64)
  grid = features.reshape(3, 4, 64)
  # Row features (the first 32) vary down a column only; column features
  # across a row only. Channel 0 is sin, channel 1 cos of the same angle.
  np.testing.assert_array_equal(grid[:, 0, :32], grid[:, 3, :32])
  np.testing.assert_array_equal(grid[0, :, 32:], grid[2, :, 32:])
  angle = 2 * np.pi * 2 / (3 + 1e-6)  # row 2 (1-based) of 3
  np.testing.assert_allclose(grid[1, 0, :2], [np.sin(angle), np.cos(angle)],
                             rtol=1e-6)
  angle = 2 * np.pi * 4 / (4 + 1e-6) / 10_000 ** (2 / 32)  # frequency 1
  np.testing.assert_allclose(grid[0, 3, 34:36],
                             [np.sin(angle), np.cos(angle)], rtol=1e-5)


def test_train_mode_drop_path_is_random():
  """One XCiT layer with drop path 0.5 (XCiT's rate: the same for every
  layer): in train mode each sample's branches are dropped at random."""
  block = xcit.XCABlock(num_heads=2, mlp_dim=32, grid=(2, 2),
                        drop_path_rate=0.5, train=True)
  tokens = jax.random.normal(jax.random.PRNGKey(1), (32, 4, 16))
  shapes = jax.eval_shape(block.init, jax.random.PRNGKey(0), tokens, 0.0)
  rng = np.random.default_rng(0)
  params = jax.tree.map(  # random weights from shapes (no compiled init)
      lambda leaf: rng.normal(0, 0.3, leaf.shape).astype(np.float32),
      shapes['params'])
  variables = {'params': params,
               'batch_stats': jax.tree.map(lambda leaf: np.ones(leaf.shape),
                                           shapes['batch_stats'])}

  @jax.jit
  def run(seed):
    (outputs, _), _ = block.apply(
        variables, tokens, 0.0, rngs={'dropout': jax.random.PRNGKey(seed)},
        mutable=['batch_stats'])
    return outputs
  first, second = np.asarray(run(2)), np.asarray(run(3))
  assert np.abs(first - second).max() > 1e-3
  # A sample whose three branches were all dropped (1 in 8) comes out as
  # it came in.
  untouched = (np.abs(first - tokens).max(axis=(1, 2)) == 0).sum()
  assert 0 < untouched < len(tokens) // 2


@pytest.mark.parametrize('arg,stochastic_depth', [
    ('S12/16', 0.05), ('N12/16', 0.0), ('M24/8', 0.15), ('L24/16', 0.25)])
def test_recipe_resolves(arg, stochastic_depth):
  config = tiny.load_config('xcit_i1k', arg)
  resolved = config_lib.resolve(config)
  assert resolved.model.name == 'xcit' and resolved.model.variant == arg
  assert resolved.model.stochastic_depth == stochastic_depth
  assert resolved.batch_size == 1024 and resolved.lr == pytest.approx(1e-3)
  assert resolved.total_steps == 400 * (1_281_167 // 1024)
  assert resolved.schedule.warmup_steps == 5 * (1_281_167 // 1024)
  assert resolved.schedule.end_lr_fraction == pytest.approx(1e-2)
  assert resolved.wd == 0.05 and resolved.grad_clip_norm is None
  assert tiny.load_config('xcit_i1k').model.variant == 'S12/16'
