"""EVA-02 / EVA-01: numerics against timm, the rotary embedding at another
resolution, export back to timm, timm's names and model_args, counts and
errors.

The golden files come from tests/support/make_golden_eva.py: two small
timm Evas with random weights: 'eva' as the fine-tuned classifiers (mean
pooling into fc_norm, separate q / k / v, the unpacked SwiGLU with its
norm), also loaded by timm at 20x24 px, with timm's forward_intermediates; 'eva_cls' as the MIM / CLIP towers
(class-token pooling, fused qkv, packed SwiGLU, the attention's inner
norm, LayerScale) on 16x24 images. Both scale the rotary coordinates to a
reference grid other than their patch grid.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import golden_cases
from test_counts import eval_shape_params
from test_counts import traced_matmul_flops
from vit_jax import export
from vit_jax import pretrained
from vit_jax import weights
from vit_jax.models import counts
from vit_jax.models import eva
from vit_jax.models import features
from vit_jax.models import get_model
from vit_jax.weights import eva as eva_weights

TOL = 1e-4  # float32, against timm on the CPU.
BF16_RELATIVE_TOL = 0.05

_SIZE = dict(patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=4,
             num_classes=10)
_TIMM_SIZE = dict(patch_size=4, embed_dim=32, depth=2, num_heads=4,
                  mlp_ratio=2.0, num_classes=10, swiglu_mlp=True,
                  use_rot_pos_emb=True)
# Golden case -> (get_model kwargs, the timm model_args make_golden_eva.py
# built it with, less img_size and qkv_fused).
CASES = {
    'eva': (dict(_SIZE, mlp_norm=True, rope_ref_grid=(3, 3)),
            dict(_TIMM_SIZE, global_pool='avg', scale_mlp=True,
                 ref_feat_shape=[3, 3])),
    'eva_cls': (dict(_SIZE, pool_type='cls', fc_norm=False, attn_norm=True,
                     layer_scale_init=0.1, rope_ref_grid=(4, 4)),
                dict(_TIMM_SIZE, global_pool='token', scale_attn_inner=True,
                     init_values=0.1, ref_feat_shape=[4, 4])),
}


def _load(case):
  """(get_model kwargs, timm state dict, outputs, the imported variables)."""
  kwargs, _ = CASES[case]
  state_dict, outputs = golden_cases.load(case)
  size = outputs['images'].shape[1:3]
  return kwargs, state_dict, outputs, weights.from_timm(
      state_dict, 'eva', image_size=size, **kwargs)


@pytest.fixture(scope='module', params=sorted(CASES))
def golden(request):
  return (request.param, *_load(request.param))


def _forward(kwargs, variables, images, **overrides):
  return golden_cases.forward('eva', kwargs, variables, images, **overrides)


def test_from_timm_matches_timm(golden):
  case, kwargs, state_dict, outputs, variables = golden
  block = variables['params']['encoder']['block_1']
  assert 'bias' not in block['attn']['key']  # timm keeps none
  assert ('fc1_g' in block['mlp']) == (case == 'eva')
  assert ('norm' in block['attn']) == (case == 'eva_cls')
  logits, aux = _forward(kwargs, variables, outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.5  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  height, width = outputs['images'].shape[1:3]
  assert aux['encoded'].shape == (3, 1 + height * width // 16, 32)


def test_features_match_timms_forward_intermediates(golden):
  """FEATURES: each block's patch tokens on the grid and its class token,
  through encoder_norm with norm=True (the fc_norm model has none: the
  same outputs, as timm's Identity norm)."""
  case, kwargs, _, outputs, variables = golden
  model = get_model('eva', **kwargs)
  extract = lambda **options: jax.jit(functools.partial(  # noqa: E731
      features.extract, model, **options))(variables, outputs['images'])
  plain = extract(prefix_tokens=True)
  normed = extract(norm=True)
  for index in range(2):
    name = f'block_{index}'
    np.testing.assert_allclose(plain[name], outputs[f'layer/{index}'],
                               atol=TOL, rtol=0, err_msg=name)
    np.testing.assert_allclose(plain[name + '/prefix'],
                               outputs[f'prefix/{index}'], atol=TOL, rtol=0)
    np.testing.assert_allclose(normed[name], outputs[f'layer_norm/{index}'],
                               atol=TOL, rtol=0, err_msg=name)
    assert np.array_equal(normed[name], plain[name]) == (case == 'eva')


def test_the_rotary_embedding_is_used_and_follows_the_reference(golden):
  """Without the rotation, or with the patch indices unscaled, the logits
  move far from timm's: both the rotation and its grid are exercised."""
  _, kwargs, _, outputs, variables = golden
  for change in (dict(rope=False), dict(rope_ref_grid=None)):
    logits, _ = _forward(kwargs, variables, outputs['images'], **change)
    assert np.abs(logits - outputs['logits']).max() > 100 * TOL, change


def test_rope_tables():
  """A 2x3 grid on a 4x4 reference, head width 8: two bands (1, 1/100);
  the first pairs turn by the row coordinate r * 4 / 2, the last by the
  column c * 4 / 3."""
  sin, cos = eva.rope_tables((2, 3), 8, (4, 4))
  assert sin.shape == cos.shape == (6, 8) and sin.dtype == np.float32
  patch = 1 * 3 + 2  # row 1, column 2
  row, col = 1 * 4 / 2, 2 * 4 / 3
  angles = np.repeat([row, row / 100, col, col / 100], 2)
  np.testing.assert_allclose(sin[patch], np.sin(angles), atol=1e-6)
  np.testing.assert_allclose(cos[patch], np.cos(angles), atol=1e-6)
  plain, _ = eva.rope_tables((2, 3), 8)  # indices as they are
  np.testing.assert_allclose(plain[patch, ::2],
                             np.sin([1, 0.01, 2, 0.02]), atol=1e-6)
  # Turning pairs keeps each pair's length.
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, 2, 8)))
  turned = eva.rotate_pairs(x, sin, cos)
  norms = lambda y: jnp.linalg.norm(y.reshape(1, 6, 2, 4, 2), axis=-1)  # noqa: E731
  np.testing.assert_allclose(norms(turned), norms(x), rtol=1e-5)
  with pytest.raises(ValueError, match=r'head width divisible by 4, got 6'):
    eva.rope_tables((2, 2), 6)


def test_another_resolution_as_timm_loads_it():
  """timm's checkpoint filter resamples the 4x4 position embedding to 5x6
  for 20x24 px (bicubic), and its rotary grid follows, scaled to the same
  3x3 reference; `from_timm` with that size and interpolation does both."""
  kwargs, state_dict, outputs, _ = _load('eva')
  variables = weights.from_timm(state_dict, 'eva', image_size=(20, 24),
                                posemb_interpolation='bicubic', **kwargs)
  assert variables['params']['pos_embed'].shape == (1, 1 + 30, 32)
  logits, _ = _forward(kwargs, variables, outputs['resized_images'])
  np.testing.assert_allclose(logits, outputs['resized_logits'], atol=TOL,
                             rtol=0)


def test_resolution_read_from_the_position_embedding():
  model = get_model('eva', **_SIZE)
  assert eva.checkpoint_image_size(
      model, {'pos_embed': np.zeros((1, 1 + 36, 32))}) == (24, 24)
  assert eva.checkpoint_image_size(model, {}) == (224, 224)


def test_wrong_size_names_the_key():
  kwargs, state_dict, _, _ = _load('eva')
  with pytest.raises(ValueError, match=r'blocks\.0\.mlp\.fc1_g\.weight: '
                     r'checkpoint \(64, 32\) vs model \(48, 32\)'):
    weights.from_timm(state_dict, 'eva', **dict(kwargs, mlp_dim=48))
  # The packed MLP's model for the unpacked one's weights.
  with pytest.raises(ValueError, match=r"missing from the checkpoint: "
                     r"\['encoder/block_0/mlp/fc1/bias \(128,\)'.*"
                     r"unexpected in the checkpoint: "
                     r"\['encoder/block_0/mlp/fc1_g/bias \(64,\)'"):
    weights.from_timm(state_dict, 'eva', **dict(kwargs, mlp_norm=False))


def test_timm_export_round_trips(golden, tmp_path):
  """Export writes timm's state dict back bit for bit, the fused qkv as
  separate projections (timm's qkv_fused=False); its config.json's
  model_args give the same model back."""
  case, kwargs, state_dict, outputs, variables = golden
  size = outputs['images'].shape[1:3]
  exported = export.export(variables, 'eva', 'timm', image_size=size,
                           **kwargs)
  expected = dict(state_dict)
  for block in range(2):
    prefix = f'blocks.{block}.attn.'
    if prefix + 'qkv.weight' in expected:  # fused: q, k, v stacked
      query, key, value = np.split(expected.pop(prefix + 'qkv.weight'), 3)
      expected.update({
          prefix + 'q_proj.weight': query, prefix + 'k_proj.weight': key,
          prefix + 'v_proj.weight': value,
          prefix + 'q_proj.bias': expected.pop(prefix + 'q_bias'),
          prefix + 'v_proj.bias': expected.pop(prefix + 'v_bias')})
  assert sorted(exported) == sorted(expected)
  for name, value in exported.items():
    np.testing.assert_array_equal(value, expected[name], err_msg=name)
  config = exported.config
  assert config['architecture'] == 'eva02_base_patch14_224'
  assert config['model_args']['qkv_fused'] is False
  for key, value in CASES[case][1].items():
    assert config['model_args'][key] == value, key
  export.save(exported, str(tmp_path / case), 'timm')
  loaded = pretrained.load(str(tmp_path / case))
  assert loaded.family == 'eva' and loaded.image_size == size
  assert loaded.model == get_model('eva', **kwargs)
  flat = weights.flatten(loaded.variables['params'])
  for path, value in weights.flatten(variables['params']).items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)


def test_local_directory_loads_by_name_as_timm(tmp_path):
  """A Hub-layout directory (timm's config.json with the architecture's
  name, model.safetensors) of the fused golden model gives timm's
  logits."""
  kwargs, state_dict, outputs, _ = _load('eva_cls')
  _, model_args = CASES['eva_cls']
  config = {'architecture': 'eva02_tiny_patch14_224', 'num_classes': 10,
            'model_args': dict(model_args, img_size=[16, 24]),
            'pretrained_cfg': {'input_size': [3, 16, 24],
                               'mean': [0.5] * 3, 'std': [0.5] * 3}}
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(config, f)
  safetensors_numpy.save_file(state_dict,
                              os.path.join(tmp_path, 'model.safetensors'))
  loaded = pretrained.load(str(tmp_path))
  assert loaded.model == get_model('eva', **kwargs)
  logits, _ = _forward(loaded.model_kwargs, loaded.variables,
                       outputs['images'])
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)


@pytest.mark.parametrize('name,size,num_classes,params', [
    # timm 1.0.31, `sum(p.numel() for p in model.parameters())`, with the
    # num_classes of the default tag.
    ('eva02_tiny_patch14_224', 224, 0, 5_502_144),
    ('eva02_tiny_patch14_336', 336, 1000, 5_756_584),
    ('eva02_small_patch14_224', 224, 0, 21_621_120),
    ('eva02_small_patch14_336', 336, 1000, 22_129_000),
    ('eva02_base_patch14_224', 224, 0, 85_758_720),
    ('eva02_base_patch14_448', 448, 1000, 87_117_544),
    ('eva02_large_patch14_224', 224, 0, 303_268_800),
    ('eva02_large_patch14_448', 448, 1000, 305_080_232),
    ('eva02_base_patch16_clip_224', 224, 512, 86_263_040),
    ('eva02_large_patch14_clip_224', 224, 768, 304_105_152),
    ('eva02_large_patch14_clip_336', 336, 768, 304_432_832),
    ('eva_giant_patch14_224', 224, 1000, 1_012_555_112),
    ('eva_giant_patch14_336', 336, 1000, 1_013_005_672),
    ('eva_giant_patch14_560', 560, 1000, 1_014_447_464),
    ('eva_giant_patch14_clip_224', 224, 1024, 1_012_588_928),
])
def test_timm_architectures_and_their_parameter_counts(name, size,
                                                       num_classes, params):
  family, kwargs, image_size = pretrained.SUPPORTED[name][:3]
  assert (family, image_size) == ('eva', size)
  model = get_model(family, **kwargs, num_classes=num_classes)
  assert counts.param_count(model, size) == params
  # The export names the architecture back for its own size.
  assert eva_weights.timm_model(model, (size, size)).architecture == name


@pytest.mark.parametrize('model_args,pattern', [
    (dict(use_post_norm=True), r'use_post_norm=True has no counterpart in '
     r"this package's eva"),
    (dict(global_pool='map'), r"global_pool='map' has no counterpart in EVA "
     r"here; supported: \['avg', 'token'\]"),
    (dict(rope_type='mixed'), r"rope_type='mixed' has no counterpart"),
])
def test_model_args_beyond_eva_are_named(model_args, pattern):
  with pytest.raises(ValueError, match=pattern):
    pretrained.resolve_config({'architecture': 'eva02_base_patch14_224',
                               'model_args': model_args,
                               'pretrained_cfg': {}})


def test_model_args_options_translate():
  _, kwargs, _ = pretrained.resolve_config({
      'architecture': 'eva02_large_patch14_448',
      'model_args': dict(global_pool='token', use_fc_norm=True,
                         init_values=1e-5, swiglu_mlp=False, scale_mlp=False,
                         use_rot_pos_emb=False, ref_feat_shape=8,
                         qkv_fused=True, head_init_scale=0.01),
      'pretrained_cfg': {}})
  model = get_model('eva', **kwargs)
  assert (model.width, model.pool_type, model.fc_norm, model.layer_scale_init,
          model.activation, model.mlp_norm, model.rope,
          model.rope_ref_grid) == (1024, 'cls', True, 1e-5, 'gelu', False,
                                   False, (8, 8))


@pytest.mark.parametrize('kwargs,size', [
    (dict(_SIZE, mlp_norm=True), 16),
    (dict(_SIZE, pool_type='cls', fc_norm=False, attn_norm=True,
          layer_scale_init=0.1, qkv_bias=False, posemb='none'), 16),
    (dict(_SIZE, activation='gelu', rope=False), 16),
])
def test_counts_equal_the_traced_program(kwargs, size):
  model = get_model('eva', **kwargs)
  assert counts.param_count(model, size) == eval_shape_params(model, size)
  assert counts.forward_flops(model, size) == traced_matmul_flops(model, size)


def test_scan_remat_and_bfloat16():
  kwargs, state_dict, outputs, variables = _load('eva')
  scanned = weights.from_timm(state_dict, 'eva', scan=True, **kwargs)
  logits, _ = _forward(kwargs, scanned, outputs['images'], scan=True,
                       remat=True)
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  logits, aux = _forward(kwargs, variables, outputs['images'],
                         dtype=jnp.bfloat16)
  assert logits.dtype == jnp.float32 and aux['encoded'].dtype == jnp.bfloat16
  error = np.abs(np.asarray(logits) - outputs['logits']).max()
  assert error < BF16_RELATIVE_TOL * np.abs(outputs['logits']).max()


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(variant='B/14', pool_type='map'), r"Unknown pool_type 'map'; valid "
     r"choices: \['gap', 'cls'\]"),
    (dict(variant='B/14', activation='relu'), r"Unknown activation 'relu'; "
     r"valid choices: \['swiglu', 'gelu'\]"),
    (dict(variant='X/14'), r"Unknown EVA size 'X' in variant 'X/14'"),
    (dict(variant='B/14', activation='gelu', mlp_norm=True),
     r"mlp_norm=True is the unpacked SwiGLU MLP's norm: it needs "
     r"activation='swiglu', got 'gelu'"),
    (dict(variant='B/14', rope_ref_grid=(16,)), r'rope_ref_grid must be '
     r'\(rows, columns\) > 0 or None, got \(16,\)'),
    (dict(variant='B/14', num_heads=128), r'rope=True needs a head width '
     r'\(width / num_heads = 768 / 128\) divisible by 4'),
    (dict(variant='B/14', layer_scale_init=-1.0), r'layer_scale_init must be '
     r'>= 0'),
])
def test_bad_options_are_clear_errors(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    get_model('eva', **kwargs)
