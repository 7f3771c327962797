"""Swin V2: numerics against timm, the weights both ways, timm's names and
arguments, counts and errors.

The golden file comes from tests/support/make_golden_swinv2.py (a 4-stage
Swin V2 on 32x64 images whose stages cover shifted windows on both axes,
on one axis, and a clamped window; one logit scale above its clamp; the
same weights with pretrained_window_sizes).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from test_counts import traced_matmul_flops
from vit_jax import export
from vit_jax import models
from vit_jax import pretrained
from vit_jax import weights
from vit_jax.models import counts
from vit_jax.models import get_model
from vit_jax.models import swinv2
from vit_jax.weights import swinv2 as swinv2_weights

# float32, against timm on the CPU. Not 1e-4: the golden drives one head's
# logit scale to its clamp (100, see CLAMPED), which multiplies the cosine
# similarities' float32 rounding by 100 before the softmax; on an AMD EPYC
# host (2026-12-07) 2 of stage 0's 8192 values differed by 1.1e-4 and
# 1.6e-4 (under 1e-4 on the host the goldens were made on).
TOL = 3e-4

GOLDEN_KWARGS = dict(patch_size=2, width=8, depths=(2, 2, 2, 1),
                     num_heads=(2, 2, 4, 8), window_size=4, num_classes=10)
# make_golden_swinv2.py's PRETRAINED_WINDOW_SIZES and clamped logit scale.
PRETRAINED_WINDOW_SIZES = (6, 6, 3, 2)
CLAMPED = ('layers.0.blocks.1.attn.logit_scale', 1)
# The timm model_args of the golden model, as timm's config.json has them.
GOLDEN_MODEL_ARGS = dict(
    img_size=[32, 64], patch_size=2, embed_dim=8, depths=[2, 2, 2, 1],
    num_heads=[2, 2, 4, 8], window_size=4, mlp_ratio=4.0,
    pretrained_window_sizes=[0, 0, 0, 0], in_chans=3, num_classes=10)


@pytest.fixture(scope='module')
def golden():
  state_dict, outputs = golden_cases.load('swinv2')
  variables = weights.from_timm(state_dict, 'swinv2', **GOLDEN_KWARGS)
  return state_dict, outputs, variables


def _forward(variables, images, **overrides):
  return golden_cases.forward('swinv2', GOLDEN_KWARGS, variables, images,
                              **overrides)


def test_from_timm_matches_timm(golden):
  _, outputs, variables = golden
  logits, aux = _forward(variables, outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  assert len(aux['stage_features']) == 4
  ours = {'logits': logits, 'pre_logits': aux['pre_logits'],
          **{f'stage_{index}': features
             for index, features in enumerate(aux['stage_features'])}}
  for key, value in ours.items():
    np.testing.assert_allclose(value, outputs[key], atol=TOL, rtol=0,
                               err_msg=key)


def test_pretrained_window_sizes_match_timm(golden):
  _, outputs, variables = golden
  # The windows change the bias (by 0.16 in the logits): not a no-op.
  assert np.abs(outputs['pretrained_windows_logits']
                - outputs['logits']).max() > 100 * TOL
  logits, _ = _forward(variables, outputs['images'],
                       pretrained_window_sizes=PRETRAINED_WINDOW_SIZES)
  np.testing.assert_allclose(logits, outputs['pretrained_windows_logits'],
                             atol=TOL, rtol=0)


def _stage_0(golden):
  """The golden model's stage 0 alone, its features against timm's."""
  _, outputs, variables = golden
  params = {name: variables['params'][name]
            for name in ('patch_embed', 'embed_norm', 'stage_0')}
  # The final norm does not touch stage_features; any width-8 norm will do.
  params['final_norm'] = {'scale': np.ones(8, np.float32),
                          'bias': np.zeros(8, np.float32)}
  model = get_model('swinv2', **dict(GOLDEN_KWARGS, depths=(2,),
                                     num_heads=(2,), num_classes=0))
  features = jax.jit(model.apply)({'params': params}, outputs['images'])
  return np.abs(features[1]['stage_features'][0] - outputs['stage_0']).max()


def test_golden_exercises_the_logit_scale_clamp(golden, monkeypatch):
  """Stage 0 alone matches timm, and without the clamp it does not."""
  state_dict, _, _ = golden
  name, head = CLAMPED
  assert state_dict[name][head] > swinv2.MAX_LOGIT_SCALE
  assert _stage_0(golden) < TOL
  monkeypatch.setattr(swinv2, 'MAX_LOGIT_SCALE', 10.0)
  assert _stage_0(golden) > 100 * TOL


def test_golden_geometry_covers_shifts_and_clamping():
  geometry = models.swin.stage_geometry((32, 64), 2, 4, 4)
  assert [g.feature_size for g in geometry] == [(16, 32), (8, 16), (4, 8),
                                                (2, 4)]
  assert [g.window for g in geometry] == [(4, 4)] * 3 + [(2, 4)]
  assert [g.shift for g in geometry] == [(2, 2), (2, 2), (0, 2), (0, 0)]


def test_attention_dropout_path_equals_the_fused_one():
  """Training with attention dropout computes the attention explicitly; at
  a vanishing rate it gives the eval path's numbers."""
  kwargs = dict(patch_size=2, width=8, depths=(2,), num_heads=(2,),
                window_size=2, num_classes=0)  # 4x4 map: shifted windows
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 3))
  model = get_model('swinv2', **kwargs, attention_dropout=1e-9)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  rng = np.random.default_rng(0)  # random weights, no compiled init
  variables = jax.tree.map(
      lambda leaf: rng.normal(0, 0.3, leaf.shape).astype(np.float32), shapes)
  evaluated, _ = jax.jit(model.apply)(variables, images)
  trained, _ = jax.jit(lambda v, x: model.apply(
      v, x, train=True, rngs={'dropout': jax.random.PRNGKey(2)}))(
          variables, images)
  assert np.abs(evaluated).max() > 0.1
  np.testing.assert_allclose(trained, evaluated, atol=1e-5, rtol=0)


def test_init_follows_the_reference_code():
  model = get_model('swinv2', patch_size=2, width=8, depths=(1, 1),
                    num_heads=(2, 4), window_size=2, num_classes=3)
  params = jax.jit(model.init)(jax.random.PRNGKey(0),
                               jnp.zeros((1, 8, 8, 3)))['params']
  block = params['stage_1']['block_0']
  # Post-norms start at zero: every block starts as the identity.
  assert not block['norm1']['scale'].any() and not block['norm2'][
      'scale'].any()
  np.testing.assert_allclose(block['attn']['logit_scale'],
                             [math.log(10.0)] * 4, rtol=1e-6)
  assert 'bias' not in block['attn']['key']
  assert params['stage_1']['patch_merging']['norm']['scale'].shape == (16,)


def test_log_spaced_coords():
  coords = swinv2.log_spaced_coords((3, 2), (0, 0))
  assert coords.shape == (5, 3, 2) and coords.dtype == np.float32
  # dy = -2 of a 3-high window: -2 / (3 - 1) * 8 = -8 -> -log2(9) / 3.
  np.testing.assert_allclose(coords[0, 1], [-math.log2(9) / 3, 0.0],
                             rtol=1e-6)
  # dx = 1 of a 2-wide window trained as 5 wide: 1 / 4 * 8 = 2.
  coords = swinv2.log_spaced_coords((3, 2), (5, 5))
  np.testing.assert_allclose(coords[2, 2], [0.0, math.log2(3) / 3],
                             rtol=1e-6)


# -- Weights, both ways. --

def test_timm_export_is_the_golden_state_dict(golden):
  state_dict, _, variables = golden
  exported = export.export(variables, 'swinv2', 'timm', image_size=(32, 64),
                           **GOLDEN_KWARGS)
  assert sorted(exported) == sorted(state_dict)
  for name, value in exported.items():
    assert value.dtype == np.float32 and value.flags['C_CONTIGUOUS'], name
    np.testing.assert_array_equal(value, state_dict[name], err_msg=name)
  back = weights.from_timm(exported, 'swinv2', **GOLDEN_KWARGS)
  assert jax.tree.structure(back) == jax.tree.structure(variables)
  for got, want in zip(jax.tree.leaves(back), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(got, want)
  # Its config.json builds the same model at the same size.
  config = exported.config
  assert config['architecture'] == 'swinv2_tiny_window8_256'
  assert config['model_args'] == GOLDEN_MODEL_ARGS
  family, kwargs, size = pretrained.resolve_config(config)
  assert family == 'swinv2' and size == (32, 64)
  assert get_model(family, **kwargs) == get_model('swinv2', **GOLDEN_KWARGS)


@pytest.mark.parametrize('name', sorted(swinv2_weights.TIMM_ARCHITECTURES))
def test_each_named_architecture_exports_as_itself(name):
  architecture = pretrained.SUPPORTED[name]
  assert architecture.family == 'swinv2'
  model = get_model('swinv2', **architecture.model_kwargs)
  size = architecture.image_size
  models.swin.stage_geometry((size, size), 4, 4, model.window_size)
  assert swinv2_weights.timm_model(model, (size, size)).architecture == name


@pytest.mark.parametrize('model_args,expected', [
    (dict(window_size=[4, 4]), {}),
    (dict(window_size=[[4, 4]] * 4, pretrained_window_sizes=[0] * 4), {}),
    (dict(pretrained_window_sizes=[6, 6, 3, 2, 0]),
     dict(pretrained_window_sizes=PRETRAINED_WINDOW_SIZES)),
])
def test_timm_model_args_translate(model_args, expected):
  config = {'architecture': 'swinv2_tiny_window8_256', 'num_classes': 10,
            'model_args': dict(GOLDEN_MODEL_ARGS, **model_args),
            'pretrained_cfg': {'input_size': [3, 32, 64]}}
  _, kwargs, _ = pretrained.resolve_config(config)
  assert get_model('swinv2', **kwargs) == get_model(
      'swinv2', **GOLDEN_KWARGS, **expected)


def test_per_stage_windows_are_refused():
  config = {'architecture': 'swinv2_tiny_window8_256',
            'model_args': dict(GOLDEN_MODEL_ARGS, window_size=[4, 4, 4, 2]),
            'pretrained_cfg': {'input_size': [3, 32, 64]}}
  with pytest.raises(ValueError, match=r'window_size=\[4, 4, 4, 2\]: SwinV2 '
                     r'here has one square window for every stage'):
    pretrained.resolve_config(config)


def test_timm_buffers_skipped_other_entries_named(golden):
  state_dict, _, variables = golden
  # Older timm versions and the reference code save these constants.
  with_buffers = dict(state_dict)
  prefix = 'layers.0.blocks.1.'
  with_buffers[prefix + 'attn_mask'] = np.zeros((8, 16, 16), np.float32)
  with_buffers[prefix + 'attn.k_bias'] = np.zeros(8, np.float32)
  with_buffers[prefix + 'attn.relative_coords_table'] = (
      swinv2.log_spaced_coords((4, 4), (0, 0))[None])
  with_buffers[prefix + 'attn.relative_position_index'] = (
      models.swin.relative_position_index((4, 4)).astype(np.int64))
  params = weights.from_timm(with_buffers, 'swinv2', **GOLDEN_KWARGS)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(variables)):
    np.testing.assert_array_equal(got, want)
  # A Swin (V1) bias table is not silently dropped.
  with_table = dict(state_dict)
  with_table[prefix + 'attn.relative_position_bias_table'] = np.zeros(
      (49, 2), np.float32)
  with pytest.raises(ValueError, match=r'layers\.0\.blocks\.1\.attn\.'
                     r'relative_position_bias_table'):
    weights.from_timm(with_table, 'swinv2', **GOLDEN_KWARGS)


def test_wrong_heads_are_an_error(golden):
  """The logit scales and the bias MLP's outputs fix the heads."""
  state_dict, _, _ = golden
  with pytest.raises(ValueError, match=r'shape mismatches, in its own names: '
                     r'.*layers\.0\.blocks\.0\.attn\.logit_scale: checkpoint '
                     r'\(2, 1, 1\) vs model \(4, 1, 1\) \(ours: stage_0/'
                     r'block_0/attn/logit_scale\).*layers\.0\.blocks\.0\.attn\.'
                     r'cpb_mlp\.2\.weight: checkpoint \(2, 512\) vs model '
                     r'\(4, 512\)'):
    weights.from_timm(state_dict, 'swinv2', **dict(
        GOLDEN_KWARGS, num_heads=(4, 2, 4, 8)))


# -- Sizes and counts. --

# timm 1.0.31's parameter counts, `sum(p.numel())` of
# timm.create_model(name) (1000 classes; 21841 for the *_192 models).
TIMM_PARAMS = {
    'swinv2_tiny_window8_256': 28_347_154,
    'swinv2_tiny_window16_256': 28_347_154,
    'swinv2_small_window8_256': 49_728_418,
    'swinv2_small_window16_256': 49_728_418,
    'swinv2_base_window8_256': 87_918_816,
    'swinv2_base_window16_256': 87_918_816,
    'swinv2_base_window12_192': 109_280_841,
    'swinv2_base_window12to16_192to256': 87_918_816,
    'swinv2_base_window12to24_192to384': 87_918_816,
    'swinv2_large_window12_192': 228_772_549,
    'swinv2_large_window12to16_192to256': 196_739_932,
    'swinv2_large_window12to24_192to384': 196_739_932,
}


def test_every_architecture_has_timms_count():
  assert sorted(TIMM_PARAMS) == sorted(swinv2_weights.TIMM_ARCHITECTURES)
  for name, expected in TIMM_PARAMS.items():
    architecture = pretrained.SUPPORTED[name]
    classes = 21841 if name.endswith('_192') else 1000
    model = get_model('swinv2', **architecture.model_kwargs,
                      num_classes=classes)
    assert counts.param_count(model, architecture.image_size) == expected, (
        name)


@pytest.mark.parametrize('variant,window,size,gmacs', [
    # timm's model cards: swinv2_{tiny,small,base}_window8_256,
    # swinv2_tiny_window16_256, swinv2_base_window12_192 (fvcore's GMACs,
    # which count a little elementwise work too).
    ('T/4', 8, 256, 5.96), ('S/4', 8, 256, 11.58), ('B/4', 8, 256, 20.37),
    ('T/4', 16, 256, 6.68), ('B/4', 12, 192, 11.9),
])
def test_flops_match_published_figures(variant, window, size, gmacs):
  model = get_model('swinv2', variant=variant, window_size=window)
  assert counts.forward_flops(model, size) / 2e9 == pytest.approx(gmacs,
                                                                  rel=0.01)


def test_counts_equal_the_traced_program():
  model = get_model('swinv2', **GOLDEN_KWARGS)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  assert counts.param_count(model, 32) == sum(
      math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes['params']))
  assert counts.forward_flops(model, 32) == traced_matmul_flops(model, 32)


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(pretrained_window_sizes=(12, 12, 12)),
     r'pretrained_window_sizes=\(12, 12, 12\) needs one window side >= 0 '
     r'per stage .* depths \(2, 2, 6, 2\) has 4 stages'),
    (dict(pretrained_window_sizes=(12, -1, 12, 6)),
     r'pretrained_window_sizes=\(12, -1, 12, 6\) needs one window side'),
    (dict(num_heads=(3, 6, 12)), r'num_heads \(3, 6, 12\) has 3'),
])
def test_bad_options_are_clear_errors(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    get_model('swinv2', variant='T/4', **kwargs)
