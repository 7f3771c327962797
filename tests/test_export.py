"""Export (`vit_jax.export`) against the golden timm state dicts and the
importers: exported weights are the golden ones, name for name and bit for
bit, and every format reads back into the same variables."""

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import golden_cases
from tiny import ROOT, tiny_config
from vit_jax import checkpoint
from vit_jax import config as config_lib
from vit_jax import export
from vit_jax import models
from vit_jax import pretrained
from vit_jax import weights
from vit_jax import workdir as workdir_lib
from vit_jax.models import common

# Every golden timm state dict, with the kwargs its test module imports it
# with (tests/test_swin.py, test_xcit.py, test_convmixer.py).
CASES = {
    **golden_cases.MODEL_KWARGS,
    'swin': ('swin', dict(patch_size=2, width=8, depths=(2, 2, 2, 1),
                          num_heads=(2, 2, 4, 8), window_size=4,
                          num_classes=10)),
    'xcit': ('xcit', dict(patch_size=8, width=24, depth=2, num_heads=4,
                          mlp_ratio=2.0, layer_scale_init=1.0,
                          tokens_norm=True, num_classes=10)),
    'convmixer': ('convmixer', dict(width=16, depth=2, kernel_size=5,
                                    patch_size=4, num_classes=10)),
}


def _assert_trees_identical(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
    assert np.asarray(got).dtype == np.asarray(want).dtype
    np.testing.assert_array_equal(got, want)


@functools.lru_cache(maxsize=None)
def _import(case, scan):
  family, kwargs = CASES[case]
  kwargs = dict(kwargs, scan=True) if scan else kwargs
  state_dict, _ = golden_cases.load(case)
  return family, kwargs, state_dict, weights.from_timm(state_dict, family,
                                                       **kwargs)


def _imported(case, scan=False):
  """(family, kwargs, golden timm state dict, its variables); imported
  once per test session (each test gets its own copy of the containers)."""
  family, kwargs, state_dict, variables = _import(case, scan)
  return (family, dict(kwargs), dict(state_dict),
          jax.tree.map(lambda x: x, variables))


@pytest.mark.parametrize('case', sorted(CASES))
def test_timm_export_is_the_golden_state_dict(case):
  family, kwargs, golden, variables = _imported(case)
  exported = export.export(variables, family, 'timm', **kwargs)
  assert sorted(exported) == sorted(golden)
  for name, value in exported.items():
    assert value.flags['C_CONTIGUOUS'], name
    if name.endswith('num_batches_tracked'):  # a counter timm keeps, unused
      assert value.dtype == np.int64 and value.shape == () and value == 0
      continue
    assert value.dtype == np.float32, name
    np.testing.assert_array_equal(value, golden[name], err_msg=name)
  # And back: the same variables, bit for bit.
  _assert_trees_identical(weights.from_timm(exported, family, **kwargs),
                          variables)


@pytest.mark.parametrize('case', ['vit_cls', 'xcit'])
def test_scanned_variables_export_unstacked(case):
  family, kwargs, golden, variables = _imported(case, scan=True)
  assert any(path.startswith('blocks/') or '/blocks/' in path
             for path in weights.flatten(variables['params']))
  exported = export.export(variables, family, 'timm', **kwargs)
  assert sorted(exported) == sorted(golden)
  for name, value in golden.items():
    if not name.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(exported[name], value, err_msg=name)


@pytest.mark.parametrize('case,original', [
    ('vit_cls', 'vit_cls_original.npz'),
    ('mixer', 'mixer_original.npz'),
    ('vit_map', None),
    ('vit_gap_fcnorm', None),
])
def test_npz_export_is_googles_layout_and_reads_back(case, original,
                                                     tmp_path):
  family, kwargs, _, variables = _imported(case)
  exported = export.export(variables, family, 'npz', **kwargs)
  if original:  # The golden file in Google's layout, name for name.
    with np.load(os.path.join(golden_cases.GOLDEN_DIR, original)) as archive:
      assert sorted(exported) == sorted(archive.files)
      for name in archive.files:
        np.testing.assert_array_equal(exported[name], archive[name],
                                      err_msg=name)
  if case == 'vit_map':  # big_vision's MAP head names
    assert 'MAPHead_0/MultiHeadDotProductAttention_0/query/kernel' in exported
    assert 'MAPHead_0/MlpBlock_0/Dense_1/bias' in exported
  path = str(tmp_path / 'weights.npz')
  assert export.save(exported, path, 'npz') == [path]
  _assert_trees_identical(weights.load_npz(path, family, **kwargs), variables)


def _hf_names(depth, width, mlp_dim, patch, tokens, classes):
  """transformers' ViTForImageClassification state dict (as on the hub),
  names -> shapes, written here from its layout."""
  names = {
      'vit.embeddings.cls_token': (1, 1, width),
      'vit.embeddings.position_embeddings': (1, tokens, width),
      'vit.embeddings.patch_embeddings.projection.weight':
          (width, 3, patch, patch),
      'vit.embeddings.patch_embeddings.projection.bias': (width,),
      'vit.layernorm.weight': (width,), 'vit.layernorm.bias': (width,),
      'classifier.weight': (classes, width), 'classifier.bias': (classes,),
  }
  for index in range(depth):
    layer = f'vit.encoder.layer.{index}.'
    for name in ('attention.attention.query', 'attention.attention.key',
                 'attention.attention.value', 'attention.output.dense'):
      names[layer + name + '.weight'] = (width, width)
      names[layer + name + '.bias'] = (width,)
    for name in ('layernorm_before', 'layernorm_after'):
      names[layer + name + '.weight'] = (width,)
      names[layer + name + '.bias'] = (width,)
    names[layer + 'intermediate.dense.weight'] = (mlp_dim, width)
    names[layer + 'intermediate.dense.bias'] = (mlp_dim,)
    names[layer + 'output.dense.weight'] = (width, mlp_dim)
    names[layer + 'output.dense.bias'] = (width,)
  return names


def test_hf_export_has_transformers_layout(tmp_path):
  family, kwargs, golden, variables = _imported('vit_cls')
  exported = export.export(variables, family, 'hf', **kwargs)
  expected = _hf_names(depth=2, width=64, mlp_dim=128, patch=8, tokens=17,
                       classes=10)
  assert {name: value.shape for name, value in exported.items()} == expected
  # The same tensors as timm's (its fused qkv split in three).
  qkv = golden['blocks.1.attn.qkv.weight']
  np.testing.assert_array_equal(
      exported['vit.encoder.layer.1.attention.attention.key.weight'],
      qkv[64:128])
  np.testing.assert_array_equal(
      exported['vit.encoder.layer.0.intermediate.dense.weight'],
      golden['blocks.0.mlp.fc1.weight'])
  np.testing.assert_array_equal(exported['classifier.bias'],
                                golden['head.bias'])
  config = exported.config
  assert config['architectures'] == ['ViTForImageClassification']
  assert {key: config[key] for key in (
      'hidden_size', 'num_hidden_layers', 'num_attention_heads',
      'intermediate_size', 'image_size', 'patch_size', 'num_channels',
      'num_labels', 'layer_norm_eps', 'hidden_act')} == dict(
          hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
          intermediate_size=128, image_size=32, patch_size=8, num_channels=3,
          num_labels=10, layer_norm_eps=1e-6, hidden_act='gelu')
  assert len(config['id2label']) == 10
  written = export.save(exported, str(tmp_path / 'hf'), 'hf')
  assert [os.path.basename(path) for path in written] == [
      'model.safetensors', 'config.json']
  loaded = safetensors_numpy.load_file(written[0])
  assert sorted(loaded) == sorted(exported)
  with open(written[1]) as f:
    assert json.load(f) == config
  _assert_trees_identical(weights.from_hf(loaded, 'vit', **kwargs),
                          variables)


def test_timm_directory_holds_timms_hub_files(tmp_path):
  family, kwargs, _, variables = _imported('vit_gap')
  exported = export.export(variables, family, 'timm',
                           pretrained_cfg={'mean': [0.5] * 3}, **kwargs)
  written = export.save(exported, str(tmp_path / 'timm'), 'timm')
  assert [os.path.basename(path) for path in written] == [
      'model.safetensors', 'config.json']
  with open(written[1]) as f:
    config = json.load(f)
  assert config['architecture'] == 'vit_base_patch16_224'
  assert config['num_classes'] == 10 and config['global_pool'] == 'avg'
  assert config['model_args'] == dict(
      img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4,
      mlp_ratio=2.0, class_token=False, global_pool='avg', fc_norm=False,
      in_chans=3, num_classes=10)
  assert config['pretrained_cfg']['input_size'] == [3, 32, 32]
  assert config['pretrained_cfg']['mean'] == [0.5] * 3
  loaded = safetensors_numpy.load_file(written[0])
  _assert_trees_identical(weights.from_timm(loaded, family, **kwargs),
                          variables)
  # The directory is a checkpoint `vit_jax.pretrained.load` reads, the
  # model built from its config.json alone.
  again = pretrained.load(str(tmp_path / 'timm'))
  assert again.family == family and again.num_classes == 10
  _assert_trees_identical(again.variables, variables)
  assert pretrained.export is export.export
  # A .safetensors path: the weights alone.
  path = str(tmp_path / 'weights.safetensors')
  assert export.save(exported, path, 'timm') == [path]
  assert sorted(safetensors_numpy.load_file(path)) == sorted(exported)


def test_timm_config_needs_a_timm_entry_point(tmp_path, caplog):
  # timm's Mixer entry points fix the paper's sizes: the golden's is none.
  family, kwargs, _, variables = _imported('mixer')
  exported = export.export(variables, family, 'timm', **kwargs)
  assert exported.config is None
  assert 'No timm config.json for this mixer' in caplog.text
  written = export.save(exported, str(tmp_path / 'mixer'), 'timm')
  assert [os.path.basename(path) for path in written] == ['model.safetensors']
  # ConvMixer's batch statistics survive safetensors (int64 counter too).
  family, kwargs, _, variables = _imported('convmixer')
  exported = export.export(variables, family, 'timm', **kwargs)
  path = str(tmp_path / 'convmixer.safetensors')
  export.save(exported, path, 'timm')
  loaded = safetensors_numpy.load_file(path)
  assert loaded['stem.2.num_batches_tracked'].dtype == np.int64
  _assert_trees_identical(weights.from_timm(loaded, family, **kwargs),
                          variables)


def _random_variables(family, image_shape, seed=0, **kwargs):
  """Random variables from shapes alone (no compiled init)."""
  model = models.get_model(family, **kwargs)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct(image_shape, jnp.float32))
  rng = np.random.default_rng(seed)
  return jax.tree.map(
      lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), shapes)


def test_sincos_position_embedding_is_exported_as_learned():
  kwargs = dict(patch_size=4, width=16, depth=1, mlp_dim=32, num_heads=2,
                num_classes=3, posemb='sincos2d')
  variables = _random_variables('vit', (1, 16, 16, 3), **kwargs)
  # The model adds posemb_sincos_2d(grid, D, num_prefix_tokens=1); timm
  # adds its learned pos_embed: exported, the table at the grid of
  # image_size.
  exported = export.export(variables, 'vit', 'timm', image_size=(16, 12),
                           **kwargs)
  np.testing.assert_array_equal(
      exported['pos_embed'],
      common.posemb_sincos_2d(4, 3, 16, num_prefix_tokens=1)[None])
  assert exported.config['model_args']['img_size'] == [16, 12]
  imported = weights.from_timm(exported, 'vit', image_size=(16, 12),
                               **dict(kwargs, posemb='learn'))
  assert imported['params'].pop('pos_embed').shape == (1, 1 + 12, 16)
  _assert_trees_identical(imported, variables)


def test_bad_input_names_the_choices():
  family, kwargs, _, variables = _imported('vit_cls')
  with pytest.raises(ValueError, match=r"'onnx'.*\['timm', 'npz', 'hf'\]"):
    export.export(variables, family, 'onnx', **kwargs)
  with pytest.raises(ValueError, match=r"'swin' as 'npz'.*\['vit', "
                     r"'mixer'\].*'timm': \['vit', 'mixer', 'swin'"):
    export.export(variables, 'swin', 'npz', **kwargs)
  with pytest.raises(ValueError, match=r"class-token ViT with a head; this "
                     r"one has pool_type 'gap' \(it needs 'cls'\)\."):
    gap_family, gap_kwargs, _, gap = _imported('vit_gap')
    export.export(gap, gap_family, 'hf', **gap_kwargs)
  with pytest.raises(ValueError, match=r'do not fit the model kwargs.*'
                     r'missing from the variables.*encoder/block_2/'):
    export.export(variables, family, 'timm', **dict(kwargs, depth=3))
  # A ViT pre-logits layer has no timm counterpart.
  with_pre_logits = jax.tree.map(lambda x: x, variables)
  with_pre_logits['params']['pre_logits'] = {
      'kernel': np.ones((64, 64), np.float32),
      'bias': np.zeros(64, np.float32)}
  with pytest.raises(ValueError, match=r"2 variables have no counterpart in "
                     r"timm's vit layout: .*'pre_logits/kernel \(64, 64\)'"):
    export.export(with_pre_logits, family, 'timm',
                  **dict(kwargs, representation_size=64))
  with pytest.raises(ValueError, match=r'hf format is a directory'):
    export.save(export.export(variables, family, 'hf', **kwargs),
                'x.safetensors', 'hf')


# ----------------------------------------------------------------------------
# The command line on a workdir.


@pytest.fixture(scope='module')
def run_workdir(tmp_path_factory):
  """A workdir as a training run leaves it: config.json and a checkpoint
  (of tiny_config's ViT, at random weights)."""
  workdir = str(tmp_path_factory.mktemp('run'))
  config = config_lib.resolve(tiny_config(os.path.join(workdir, 'data')))
  workdir_lib.write_config(workdir, config)
  kwargs = {key: value for key, value in config.model.to_dict().items()
            if key not in ('name', 'variant', 'dtype') and value is not None}
  params = _random_variables('vit', (1, 8, 8, 1), **kwargs)['params']
  checkpointer = checkpoint.TrainCheckpointer(
      os.path.join(workdir, 'checkpoints'), async_save=False)
  checkpointer.save(5, {'params': params}, {'step': 5})
  checkpointer.close()
  return workdir, config, params


def test_export_run_reloads_into_the_same_params(run_workdir, tmp_path):
  workdir, config, params = run_workdir
  out = str(tmp_path / 'timm')
  written = export.export_run(workdir, 'timm', out)
  assert [os.path.basename(path) for path in written] == [
      'model.safetensors', 'config.json']
  kwargs = {key: value for key, value in config.model.to_dict().items()
            if key not in ('name', 'variant', 'dtype') and value is not None}
  loaded = weights.from_timm(safetensors_numpy.load_file(written[0]), 'vit',
                             **kwargs)
  _assert_trees_identical(loaded['params'], jax.tree.map(np.asarray, params))
  with open(written[1]) as f:
    timm_config = json.load(f)
  # digits: 8x8 grey images, value_range(-1, 1).
  assert timm_config['pretrained_cfg']['input_size'] == [1, 8, 8]
  assert timm_config['pretrained_cfg']['mean'] == [0.5]
  assert timm_config['pretrained_cfg']['std'] == [0.5]
  with pytest.raises(ValueError, match=r'No checkpoint at step 7.*\[5\]'):
    export.export_run(workdir, 'npz', str(tmp_path / 'x.npz'), step=7)


def test_command_line_bad_format_exits_2_naming_the_choices(run_workdir,
                                                           tmp_path):
  workdir, _, _ = run_workdir
  out = tmp_path / 'out'
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.export', f'--workdir={workdir}',
       '--format=onnx', f'--out={out}'],
      cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
  assert result.returncode == 2, result.stderr
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1, result.stderr
  assert 'onnx' in lines[0] and 'timm' in lines[0] and 'npz' in lines[0] and (
      'hf' in lines[0])
  assert not out.exists()
