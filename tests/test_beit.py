"""BEiT / BEiT v2: numerics against timm, the bias tables at another
resolution, export back to timm, timm's names and model_args, counts and
errors.

The golden files come from tests/support/make_golden_beit.py: two small
timm Beits with random weights: 'beit' as the released models (patch
tokens averaged into fc_norm, a bias table per block, LayerScale), also
loaded by timm at 48x40 px (its tables resampled); 'beit_cls' with
class-token pooling, an absolute position embedding and no query / value
biases, on 24x32 images.
"""

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import golden_cases
from test_counts import eval_shape_params
from test_counts import traced_matmul_flops
from tiny import tiny_config
from vit_jax import config as config_lib
from vit_jax import export
from vit_jax import models
from vit_jax import pretrained
from vit_jax import train
from vit_jax import weights
from vit_jax.models import beit
from vit_jax.models import common
from vit_jax.models import counts
from vit_jax.models import get_model
from vit_jax.weights import beit as beit_weights

TOL = 1e-4  # float32, against timm on the CPU.
# bfloat16 compute (8-bit mantissa) against float32: the largest logit
# error, as a fraction of the largest |logit|.
BF16_RELATIVE_TOL = 0.05

_SIZE = dict(patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=4,
             num_classes=10)
# Golden case -> (get_model kwargs, the timm model_args make_golden_beit.py
# built it with, less img_size).
CASES = {
    'beit': (dict(_SIZE, layer_scale_init=0.1),
             dict(patch_size=8, embed_dim=32, depth=2, num_heads=4,
                  mlp_ratio=2.0, num_classes=10, global_pool='avg',
                  init_values=0.1, use_abs_pos_emb=False,
                  use_rel_pos_bias=True)),
    'beit_cls': (dict(_SIZE, pool_type='cls', fc_norm=False, posemb='learn',
                      qkv_bias=False, layer_scale_init=1e-5),
                 dict(patch_size=8, embed_dim=32, depth=2, num_heads=4,
                      mlp_ratio=2.0, num_classes=10, global_pool='token',
                      init_values=1e-5, use_abs_pos_emb=True,
                      use_rel_pos_bias=True, qkv_bias=False)),
}


def _load(case):
  """(get_model kwargs, timm state dict, outputs, the imported variables);
  the resolution comes from the images (24x32 is not square: the tables
  cannot tell it)."""
  kwargs, _ = CASES[case]
  state_dict, outputs = golden_cases.load(case)
  size = outputs['images'].shape[1:3]
  return kwargs, state_dict, outputs, weights.from_timm(
      state_dict, 'beit', image_size=size, **kwargs)


@pytest.fixture(scope='module', params=sorted(CASES))
def golden(request):
  return (request.param, *_load(request.param))


def _forward(kwargs, variables, images, **overrides):
  return golden_cases.forward('beit', kwargs, variables, images, **overrides)


def test_from_timm_matches_timm(golden):
  case, kwargs, state_dict, outputs, variables = golden
  params = variables['params']
  block = params['encoder']['block_1']
  # timm keeps no key bias; without qkv_bias there are none at all.
  assert 'bias' not in block['attn']['key']
  assert ('bias' in block['attn']['query']) == (case == 'beit')
  np.testing.assert_array_equal(block['gamma_mlp'],
                                state_dict['blocks.1.gamma_2'])
  logits, aux = _forward(kwargs, variables, outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.5  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  height, width = outputs['images'].shape[1:3]
  assert aux['encoded'].shape == (3, 1 + height * width // 64, 32)


def test_the_bias_is_used_and_laid_out_as_timms(golden):
  """Zeroing one block's table changes the logits (the bias is no
  no-op), and the index puts the class token's rows after the offsets."""
  _, kwargs, _, outputs, variables = golden
  table = variables['params']['encoder']['block_0'][
      'relative_position_bias_table']
  zeroed = jax.tree.map(lambda x: x, variables)
  zeroed['params']['encoder']['block_0']['relative_position_bias_table'] = (
      np.zeros_like(table))
  logits, _ = _forward(kwargs, zeroed, outputs['images'])
  assert np.abs(logits - outputs['logits']).max() > 100 * TOL
  index = beit.relative_position_index((2, 3))
  assert index.shape == (7, 7)
  offsets = 3 * 5  # (2 * 2 - 1) * (2 * 3 - 1)
  assert index[0, 0] == offsets + 2 and set(index[0, 1:]) == {offsets}
  assert set(index[1:, 0]) == {offsets + 1}
  # Patch (0, 0) to (1, 2): offset (-1, -2), row (-1 + 1) * 5 + (-2 + 2).
  assert index[1, 6] == 0 and index[6, 1] == 2 * 5 + 4
  assert np.diag(index)[1:].tolist() == [1 * 5 + 2] * 6


def test_tables_resampled_to_another_resolution_as_timm_does():
  """timm's checkpoint filter resamples the 4x4 grid's tables to 6x5 for
  48x40 px images; `from_timm(image_size=...)` does the same."""
  kwargs, state_dict, outputs, _ = _load('beit')
  table = state_dict['blocks.0.attn.relative_position_bias_table']
  resampled = beit_weights.resample_table(table, (6, 5))
  assert resampled.shape == (11 * 9 + 3, 4)
  np.testing.assert_allclose(resampled, outputs['resized_table_0'],
                             atol=1e-6, rtol=0)
  np.testing.assert_array_equal(resampled[-3:], table[-3:])  # class rows
  # The same grid: unchanged.
  assert beit_weights.resample_table(table, (4, 4)) is table
  variables = weights.from_timm(state_dict, 'beit', image_size=(48, 40),
                                **kwargs)
  logits, _ = _forward(kwargs, variables, outputs['resized_images'])
  np.testing.assert_allclose(logits, outputs['resized_logits'], atol=TOL,
                             rtol=0)


def test_resolution_read_from_the_tables_or_position_embedding():
  model = get_model('beit', **_SIZE)
  table = lambda side: np.zeros((beit.table_rows((side, side)), 4))  # noqa: E731
  assert models.checkpoint_image_size(
      'beit', model, {'encoder/block_0/relative_position_bias_table':
                      table(4)}) == (32, 32)
  assert models.checkpoint_image_size(
      'beit', model, {'pos_embed': np.zeros((1, 1 + 36, 32))}) == (48, 48)
  assert models.checkpoint_image_size('beit', model, {}) == (224, 224)
  with pytest.raises(ValueError, match=r'table of 50 rows fits no square '
                     r'patch grid'):
    beit.grid_of_table(50)


def test_wrong_heads_or_size_name_the_table():
  kwargs, state_dict, _, _ = _load('beit')
  with pytest.raises(ValueError, match=r'blocks\.0\.attn\.relative_position_'
                     r'bias_table: checkpoint \(52, 4\) vs model \(52, 2\) '
                     r'\(ours: encoder/block_0/relative_position_bias_table'):
    weights.from_timm(state_dict, 'beit', **dict(kwargs, num_heads=2))
  with pytest.raises(ValueError, match=r"blocks\.0\.attn\.k_bias"):
    weights.from_timm(dict(state_dict, **{
        'blocks.0.attn.k_bias': np.zeros(32, np.float32)}), 'beit', **kwargs)


def test_timm_export_round_trips(golden, tmp_path):
  """Export writes timm's state dict back, name for name and bit for bit;
  its config.json's model_args give the same model back."""
  case, kwargs, state_dict, outputs, variables = golden
  size = outputs['images'].shape[1:3]
  exported = export.export(variables, 'beit', 'timm', image_size=size,
                           **kwargs)
  assert sorted(exported) == sorted(state_dict)
  for name, value in exported.items():
    np.testing.assert_array_equal(value, state_dict[name], err_msg=name)
  config = exported.config
  assert config['architecture'] == 'beit_base_patch16_224'
  assert config['global_pool'] == CASES[case][1]['global_pool']
  for key, value in CASES[case][1].items():
    assert config['model_args'][key] == value, key
  export.save(exported, str(tmp_path / case), 'timm')
  loaded = pretrained.load(str(tmp_path / case))
  assert loaded.family == 'beit' and loaded.image_size == size
  assert loaded.model == get_model('beit', **kwargs)
  flat = weights.flatten(loaded.variables['params'])
  for path, value in weights.flatten(variables['params']).items():
    np.testing.assert_array_equal(flat[path], value, err_msg=path)


@pytest.mark.parametrize('case', sorted(CASES))
def test_timm_config_gives_the_golden_model(case):
  kwargs, model_args = CASES[case]
  _, outputs = golden_cases.load(case)
  height, width = outputs['images'].shape[1:3]
  family, resolved, size = pretrained.resolve_config(
      {'architecture': 'beitv2_base_patch16_224', 'num_classes': 10,
       'model_args': dict(model_args, img_size=[height, width]),
       'pretrained_cfg': {}})
  assert family == 'beit' and size == (height, width)
  assert get_model(family, **resolved) == get_model('beit', **kwargs)


def test_local_directory_loads_by_name_as_timm(tmp_path):
  """A Hub-layout directory (timm's config.json, model.safetensors) of the
  golden model: loaded, it gives timm's logits."""
  kwargs, state_dict, outputs, _ = _load('beit')
  _, model_args = CASES['beit']
  config = {'architecture': 'beit_base_patch16_224', 'num_classes': 10,
            'model_args': model_args,
            'pretrained_cfg': {'input_size': [3, 32, 32],
                               'mean': [0.5] * 3, 'std': [0.5] * 3}}
  with open(tmp_path / 'config.json', 'w') as f:
    json.dump(config, f)
  safetensors_numpy.save_file(state_dict,
                              os.path.join(tmp_path, 'model.safetensors'))
  loaded = pretrained.load(str(tmp_path))
  assert loaded.model == get_model('beit', **kwargs)
  assert loaded.preprocessing.mean == (0.5, 0.5, 0.5)
  logits, _ = _forward(loaded.model_kwargs, loaded.variables,
                       outputs['images'])
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)


@pytest.mark.parametrize('name,variant,size,layer_scale,params', [
    # timm 1.0.31, `sum(p.numel() for p in model.parameters())`.
    ('beit_base_patch16_224', 'B/16', 224, 0.1, 86_530_984),
    ('beit_base_patch16_384', 'B/16', 384, 0.1, 86_744_104),
    ('beit_large_patch16_224', 'L/16', 224, 1e-5, 304_430_568),
    ('beit_large_patch16_384', 'L/16', 384, 1e-5, 304_998_888),
    ('beit_large_patch16_512', 'L/16', 512, 1e-5, 305_674_728),
    ('beitv2_base_patch16_224', 'B/16', 224, 1e-5, 86_530_984),
    ('beitv2_large_patch16_224', 'L/16', 224, 1e-5, 304_430_568),
])
def test_timm_architectures_and_their_parameter_counts(name, variant, size,
                                                       layer_scale, params):
  family, kwargs, image_size = pretrained.SUPPORTED[name][:3]
  assert (family, image_size) == ('beit', size)
  assert kwargs == dict(variant=variant, layer_scale_init=layer_scale)
  model = get_model(family, **kwargs)
  assert counts.param_count(model, size) == params
  # The export names the architecture back for its own size.
  assert beit_weights.timm_model(model, (size, size)).architecture == (
      name.replace('beitv2', 'beit'))


@pytest.mark.parametrize('model_args,pattern', [
    (dict(use_shared_rel_pos_bias=True), r'use_shared_rel_pos_bias=True has '
     r"no counterpart in this package's beit"),
    (dict(global_pool=''), r"global_pool='' has no counterpart in BEiT here; "
     r"supported: \['avg', 'token'\]"),
    (dict(swiglu_mlp=True), r'swiglu_mlp=True has no counterpart'),
])
def test_model_args_beyond_beit_are_named(model_args, pattern):
  with pytest.raises(ValueError, match=pattern):
    pretrained.resolve_config({'architecture': 'beit_base_patch16_224',
                               'model_args': model_args,
                               'pretrained_cfg': {}})


def test_model_args_options_translate():
  _, kwargs, _ = pretrained.resolve_config({
      'architecture': 'beit_large_patch16_224',
      'model_args': dict(global_pool='token', use_fc_norm=True,
                         init_values=None, use_abs_pos_emb=True,
                         head_init_scale=0.01),
      'pretrained_cfg': {}})
  model = get_model('beit', **kwargs)
  assert (model.width, model.pool_type, model.fc_norm, model.posemb,
          model.layer_scale_init) == (1024, 'cls', True, 'learn', 0.0)


@pytest.mark.parametrize('kwargs,size', [
    (dict(_SIZE), 32),
    (dict(_SIZE, pool_type='cls', fc_norm=False, posemb='learn',
          qkv_bias=False, layer_scale_init=0.0, rel_pos_bias=False), 24),
])
def test_counts_equal_the_traced_program(kwargs, size):
  model = get_model('beit', **kwargs)
  assert counts.param_count(model, size) == eval_shape_params(model, size)
  assert counts.forward_flops(model, size) == traced_matmul_flops(model, size)


def test_scan_and_remat_equal_unrolled():
  kwargs, state_dict, outputs, _ = _load('beit')
  scanned = weights.from_timm(state_dict, 'beit', scan=True, **kwargs)
  assert scanned['params']['encoder']['blocks'][
      'relative_position_bias_table'].shape == (2, 52, 4)
  logits, _ = _forward(kwargs, scanned, outputs['images'], scan=True,
                       remat=True)
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  assert common.unstack_blocks(scanned['params']).keys() == {
      'cls_token', 'patch_embed', 'encoder', 'fc_norm', 'head'}


def test_bfloat16_close_to_float32():
  kwargs, _, outputs, variables = _load('beit')
  logits, aux = _forward(kwargs, variables, outputs['images'],
                         dtype=jnp.bfloat16)
  assert logits.dtype == jnp.float32
  assert aux['encoded'].dtype == jnp.bfloat16
  error = np.abs(np.asarray(logits) - outputs['logits']).max()
  assert error < BF16_RELATIVE_TOL * np.abs(outputs['logits']).max()


def test_train_mode_drop_path_is_random():
  """Stochastic depth and dropout in train mode: two keys, two outputs."""
  model = get_model('beit', **dict(_SIZE, stochastic_depth=0.5, dropout=0.1))
  images = np.random.default_rng(0).normal(size=(4, 16, 16, 3))
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct(images.shape, jnp.float32))
  rng = np.random.default_rng(1)
  variables = jax.tree.map(  # random weights from shapes (no compiled init)
      lambda leaf: rng.normal(0, 0.3, leaf.shape).astype(np.float32), shapes)

  @jax.jit
  def run(seed):
    _, aux = model.apply(variables, images, train=True,
                         rngs={'dropout': jax.random.PRNGKey(seed)})
    return aux['pre_logits']
  assert np.abs(np.asarray(run(2)) - np.asarray(run(3))).max() > 1e-4


def test_trains_from_a_config(tmp_path, data_dir):
  """model.name='beit' in a recipe: two training steps and an evaluation
  on digits (8x8 grey images, a 2x2 grid)."""
  config = tiny_config(data_dir, total_steps=2, eval_every_steps=2)
  config.model = ml_collections.ConfigDict(dict(
      name='beit', patch_size=4, width=16, depth=1, mlp_dim=32, num_heads=2,
      num_classes=10, stochastic_depth=0.1))
  metrics = train.train_and_evaluate(config, str(tmp_path / 'beit'))
  assert np.isfinite(metrics['train/loss'])
  assert 0.0 <= metrics['val/accuracy'] <= 1.0


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(variant='B/16', pool_type='map'), r"Unknown pool_type 'map'; valid "
     r"choices: \['gap', 'cls'\]"),
    (dict(variant='B/16', posemb='sincos2d'), r"Unknown posemb 'sincos2d'; "
     r"valid choices: \['none', 'learn'\]"),
    (dict(variant='X/16'), r"Unknown BEiT size 'X' in variant 'X/16'"),
    (dict(variant='B/16', layer_scale_init=-1.0), r'layer_scale_init must be '
     r'>= 0 \(0: no LayerScale\), got -1\.0'),
])
def test_bad_options_are_clear_errors(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    get_model('beit', **kwargs)
