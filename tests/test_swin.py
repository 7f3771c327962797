"""Swin Transformer: numerics against timm, sizes, geometry and errors.

The golden file comes from tests/support/make_golden_swin.py (a 4-stage Swin
at 32 px whose stages cover shifted windows with masks, a window equal to the
map and a window clamped to a smaller map).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from vit_jax import models
from vit_jax import weights
from vit_jax.models import get_model
from vit_jax.models import swin
from vit_jax.models.__main__ import count_params

TOL = 1e-4  # float32, against timm on the CPU.
# bfloat16 compute (8-bit mantissa) over 7 blocks, against float32: the
# largest logit error, as a fraction of the largest |logit|.
BF16_RELATIVE_TOL = 0.05

GOLDEN_KWARGS = dict(patch_size=2, width=8, depths=(2, 2, 2, 1),
                     num_heads=(2, 2, 4, 8), window_size=4, num_classes=10)


@pytest.fixture(scope='module')
def golden():
  state_dict, outputs = golden_cases.load('swin')
  params = weights.from_timm(state_dict, 'swin', **GOLDEN_KWARGS)['params']
  return state_dict, outputs, params


@functools.lru_cache(maxsize=None)
def _jitted_apply(**kwargs):
  """One compiled forward per model (compiling dominates on a small CPU)."""
  model = get_model('swin', **kwargs)
  return jax.jit(lambda params, images: model.apply({'params': params},
                                                    images))


def _random_params(model, image_shape, seed=0):
  """Random parameters from shapes alone (no compiled init)."""
  images = jax.ShapeDtypeStruct(image_shape, jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: rng.normal(0, 0.3, leaf.shape).astype(np.float32),
      shapes['params'])


def _forward(params, images, **overrides):
  return _jitted_apply(**dict(GOLDEN_KWARGS, **overrides))(
      params, jnp.asarray(images))


def test_from_timm_matches_timm(golden):
  _, outputs, params = golden
  logits, aux = _forward(params, outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  assert len(aux['stage_features']) == 4
  for index, features in enumerate(aux['stage_features']):
    np.testing.assert_allclose(features, outputs[f'stage_{index}'],
                               atol=TOL, rtol=0)


def test_golden_exercises_shifted_window_mask(golden, monkeypatch):
  """Stage 0 alone matches timm, and without the mask it does not."""
  _, outputs, params = golden
  stage_0_kwargs = dict(GOLDEN_KWARGS, depths=(2,), num_heads=(2,),
                        num_classes=0)
  stage_0_params = {name: params[name]
                    for name in ('patch_embed', 'embed_norm', 'stage_0')}
  # The final norm does not touch stage_features; any width-8 norm will do.
  stage_0_params['final_norm'] = {'scale': np.ones(8, np.float32),
                                  'bias': np.zeros(8, np.float32)}
  model = get_model('swin', **stage_0_kwargs)
  features = jax.jit(model.apply)({'params': stage_0_params},
                                  outputs['images'])[1]['stage_features']
  np.testing.assert_allclose(features[0], outputs['stage_0'], atol=TOL,
                             rtol=0)
  monkeypatch.setattr(swin, 'MASK_VALUE', 0.0)
  features = jax.jit(model.apply)({'params': stage_0_params},
                                  outputs['images'])[1]['stage_features']
  assert np.abs(features[0] - outputs['stage_0']).max() > 100 * TOL


def test_golden_geometry_covers_shift_equal_and_clamped_windows():
  geometry = swin.stage_geometry((32, 32), 2, 4, 4)
  assert [g.feature_size for g in geometry] == [(16, 16), (8, 8), (4, 4),
                                                (2, 2)]
  assert [g.window for g in geometry] == [(4, 4)] * 3 + [(2, 2)]
  assert [g.shift for g in geometry] == [(2, 2), (2, 2), (0, 0), (0, 0)]


def test_timm_buffers_skipped_unknown_entries_named(golden):
  state_dict, outputs, _ = golden
  # Older timm versions and the reference code save these constants.
  with_buffers = dict(state_dict)
  with_buffers['layers.0.blocks.1.attn_mask'] = np.zeros((4, 16, 16),
                                                         np.float32)
  with_buffers['layers.0.blocks.0.attn.relative_position_index'] = (
      swin.relative_position_index((4, 4)).astype(np.int64))
  params = weights.from_timm(with_buffers, 'swin', **GOLDEN_KWARGS)['params']
  logits, _ = _forward(params, outputs['images'])
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  # A Swin V2 parameter is not silently dropped.
  with_unknown = dict(state_dict)
  with_unknown['layers.0.blocks.0.attn.logit_scale'] = np.zeros((2, 1, 1))
  with pytest.raises(ValueError,
                     match=r'layers\.0\.blocks\.0\.attn\.logit_scale'):
    weights.from_timm(with_unknown, 'swin', **GOLDEN_KWARGS)


def test_import_resolution_inferred_or_checked(golden):
  state_dict, _, _ = golden
  # The clamped last-stage table (9 rows: window 2) says 32 px; 64 px would
  # need an unclamped (49-row) table.
  assert models.checkpoint_image_size(
      'swin', get_model('swin', **GOLDEN_KWARGS),
      {'stage_3/block_0/relative_position_bias_table': np.zeros((9, 8))}
  ) == (32, 32)
  with pytest.raises(ValueError, match=r'shape mismatch.*layers\.3\.blocks\.0'
                     r'\.attn\.relative_position_bias_table: checkpoint '
                     r'\(9, 8\) vs model \(49, 8\)'):
    weights.from_timm(state_dict, 'swin', image_size=64, **GOLDEN_KWARGS)


def test_no_head_or_new_head(golden):
  state_dict, _, params = golden
  headless = weights.from_timm(
      state_dict, 'swin', **dict(GOLDEN_KWARGS, num_classes=0))['params']
  assert 'head' not in headless
  assert set(headless) == set(params) - {'head'}
  new_head = weights.from_timm(
      state_dict, 'swin', **dict(GOLDEN_KWARGS, num_classes=3,
                                 head_bias_init=-2.0))['params']
  assert not new_head['head']['kernel'].any()
  assert new_head['head']['kernel'].shape == (64, 3)
  np.testing.assert_array_equal(new_head['head']['bias'], -2.0)
  np.testing.assert_array_equal(
      new_head['stage_3']['block_0']['mlp']['fc1']['kernel'],
      params['stage_3']['block_0']['mlp']['fc1']['kernel'])


def test_bfloat16_close_to_float32(golden):
  _, outputs, params = golden
  logits, _ = _forward(params, outputs['images'], dtype=jnp.bfloat16)
  assert logits.dtype == jnp.float32
  error = np.abs(np.asarray(logits) - outputs['logits']).max()
  assert error < BF16_RELATIVE_TOL * np.abs(outputs['logits']).max()
  assert jax.tree.leaves(params)[0].dtype == np.float32


@pytest.mark.parametrize('variant,expected', [
    ('T/4', 28_288_354),
    ('S/4', 49_606_258),
    ('B/4', 87_768_224),
    ('L/4', 196_532_476),
])
def test_param_counts_match_paper_models(variant, expected):
  model = get_model('swin', variant=variant, num_classes=1000)
  assert count_params(model, 224) == expected


def test_stage_feature_shapes_224():
  model = get_model('swin', variant='T/4', num_classes=1000)
  images = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  logits, aux = jax.eval_shape(model.apply, variables, images)
  assert logits.shape == (2, 1000)
  assert aux['pre_logits'].shape == (2, 768)
  assert [f.shape for f in aux['stage_features']] == [
      (2, 56, 56, 96), (2, 28, 28, 192), (2, 14, 14, 384), (2, 7, 7, 768)]
  tables = [variables['params'][f'stage_{i}']['block_0'][
      'relative_position_bias_table'].shape for i in range(4)]
  assert tables == [(169, 3), (169, 6), (169, 12), (169, 24)]


def test_window_12_at_384_and_clamping_of_a_large_window():
  model = get_model('swin', variant='B/4', window_size=12)
  assert model.default_image_size == 384
  geometry = swin.stage_geometry((384, 384), 4, 4, 12)
  assert [g.window for g in geometry] == [(12, 12)] * 4
  assert [g.shift for g in geometry] == [(6, 6)] * 3 + [(0, 0)]
  # Window 14 at 224 px: stage 3 (7x7) is clamped to one 7x7 window and not
  # shifted; stage 2 (14x14) is exactly one window.
  geometry = swin.stage_geometry((224, 224), 4, 4, 14)
  assert [g.window for g in geometry] == [(14, 14)] * 3 + [(7, 7)]
  assert [g.shift for g in geometry] == [(7, 7)] * 2 + [(0, 0)] * 2
  model = get_model('swin', variant='T/4', window_size=14)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  assert shapes['params']['stage_3']['block_1'][
      'relative_position_bias_table'].shape == (13 * 13, 24)


def test_clamped_window_equals_exact_window():
  """A window larger than the map computes what the map-sized window does."""
  kwargs = dict(patch_size=2, width=8, depths=(2,), num_heads=(2,),
                num_classes=3, head_bias_init=0.5)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  clamped = get_model('swin', window_size=9, **kwargs)
  exact = get_model('swin', window_size=4, **kwargs)
  params = _random_params(clamped, images.shape)
  features_clamped = jax.jit(clamped.apply)({'params': params}, images)[1]
  features_exact = jax.jit(exact.apply)({'params': params}, images)[1]
  np.testing.assert_allclose(features_clamped['pre_logits'],
                             features_exact['pre_logits'], atol=1e-6)


def test_relative_position_index_layout():
  index = swin.relative_position_index((3, 3))
  assert index.shape == (9, 9)
  assert index.min() == 0 and index.max() == 5 * 5 - 1
  assert (np.diag(index) == 2 * 5 + 2).all()  # (dy, dx) = (0, 0): centre.
  # Query (0, 0), key (2, 1): (dy, dx) = (-2, -1) -> row 0, column 1.
  assert index[0, 2 * 3 + 1] == 0 * 5 + 1


def test_stochastic_depth_is_linear_over_all_blocks():
  rates = swin.stage_drop_path_rates(0.2, (2, 2, 6, 2))
  assert [len(r) for r in rates] == [2, 2, 6, 2]
  flat = np.concatenate(rates)
  np.testing.assert_allclose(flat, np.linspace(0.0, 0.2, 12), atol=1e-7)


_TINY = dict(patch_size=2, width=8, depths=(2,), num_heads=(2,),
             window_size=2, num_classes=3)  # 4x4 map: shifted 2x2 windows.


def test_train_mode_dropout_is_random():
  model = get_model('swin', **_TINY, dropout=0.1, attention_dropout=0.1,
                    stochastic_depth=0.5)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  params = _random_params(model, images.shape)

  @jax.jit
  def features(rng):
    _, aux = model.apply({'params': params}, images, train=True,
                         rngs={'dropout': rng})
    return aux['pre_logits']
  first = features(jax.random.PRNGKey(2))
  second = features(jax.random.PRNGKey(3))
  assert np.isfinite(first).all()
  assert np.abs(first - second).max() > 1e-3


def test_remat_gives_the_same_gradients():
  # With stochastic depth, so a random mask is recomputed under remat.
  model = get_model('swin', **_TINY, stochastic_depth=0.5)
  rematted = get_model('swin', **_TINY, stochastic_depth=0.5, remat=True)
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  params = _random_params(model, images.shape)

  def loss(params, module):
    # The head is zero-initialised: use the representation, not logits.
    _, aux = module.apply({'params': params}, images, train=True,
                          rngs={'dropout': jax.random.PRNGKey(2)})
    return jnp.sum(aux['pre_logits'] ** 2)

  value_and_grad = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  loss_plain, grads = value_and_grad(params, model)
  loss_remat, grads_remat = value_and_grad(params, rematted)
  np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-5)
  for grad, grad_remat in zip(jax.tree.leaves(grads),
                              jax.tree.leaves(grads_remat)):
    np.testing.assert_allclose(grad, grad_remat, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('kwargs,image_size,pattern', [
    (dict(variant='X/4'), 224, r"Unknown Swin size 'X'.*\['T', 'S', 'B', "
     r"'L'\]"),
    (dict(variant='T'), 224, r'must look like SIZE/PATCH'),
    (dict(variant='T/4'), 256, r'stage 0 feature map 64x64 \(image 256x256, '
     r'patch 4\) is not divisible by the window size 7'),
    (dict(variant='T/4', window_size=12), 224, r'stage 0 feature map 56x56 .*'
     r'window size 12'),
    (dict(variant='T/4'), 226, r'image size 226x226 is not divisible by the '
     r'patch size 4'),
    (dict(variant='T/4', window_size=5), 120, r'stage 2 merges 2x2 patches '
     r'of a 15x15 feature map .*divisible by .* = 32'),
    (dict(variant='T/4', num_heads=(3, 6, 12)), 224,
     r'depths \(2, 2, 6, 2\) has 4 stages, num_heads \(3, 6, 12\) has 3'),
    (dict(variant='T/4', num_heads=(3, 6, 12, 25)), 224,
     r'stage 3 width 768 is not divisible by its 25 heads'),
])
def test_bad_sizes_are_clear_errors(kwargs, image_size, pattern):
  with pytest.raises(ValueError, match=pattern):
    model = get_model('swin', **kwargs)
    count_params(model, image_size)
