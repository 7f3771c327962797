"""Export (`vit_jax.export`) against the golden timm state dicts and the
importers: exported weights are the golden ones, name for name and bit for
bit, and every format reads back into the same variables."""

import functools
import json
import math
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
from vit_jax.export import data_config
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
  labels = [f'class {index}' for index in range(10)]
  exported = export.export(
      variables, family, 'hf', label_names=labels,
      pretrained_cfg=pretrained.Preprocessing(
          mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pct=1.0,
          interpolation='bicubic', crop_mode='squash'), **kwargs)
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
  assert config['id2label'] == {str(index): name
                                for index, name in enumerate(labels)}
  assert config['label2id'] == {name: index
                                for index, name in enumerate(labels)}
  # timm's 'squash' at crop_pct 1 is ViTImageProcessor's own resize.
  assert exported.processor == {
      'image_processor_type': 'ViTImageProcessor', 'do_resize': True,
      'size': {'height': 32, 'width': 32}, 'resample': 3,  # PIL's BICUBIC
      'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
      'image_mean': [0.5] * 3, 'image_std': [0.25] * 3,
      'do_convert_rgb': True}
  written = export.save(exported, str(tmp_path / 'hf'), 'hf')
  assert [os.path.basename(path) for path in written] == [
      'model.safetensors', 'config.json', 'preprocessor_config.json']
  with open(written[2]) as f:
    assert json.load(f) == exported.processor
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


def test_imported_preprocessing_and_labels_survive_export_and_load(
    tmp_path):
  """An imported checkpoint's Preprocessing and label names, exported
  again, are what `pretrained.load` reads back: timm's data config in
  full (what resolve_data_config reads) and label_names at the top
  level, where timm's own exports put them."""
  family, kwargs, _, variables = _imported('vit_cls')
  preprocessing = pretrained.Preprocessing(
      mean=(0.5, 0.25, 0.125), std=(0.2, 0.3, 0.4), crop_pct=0.9,
      interpolation='bilinear', crop_mode='center')
  labels = tuple(f'n{index:08d}' for index in range(10))
  first = tmp_path / 'first'
  export.save(export.export(variables, family, 'timm',
                            pretrained_cfg=preprocessing, label_names=labels,
                            **kwargs), str(first), 'timm')
  config = json.loads((first / 'config.json').read_text())
  assert config['label_names'] == list(labels)
  assert {key: config['pretrained_cfg'][key] for key in (
      'input_size', 'interpolation', 'crop_pct', 'crop_mode', 'mean', 'std',
      'num_classes')} == dict(
          input_size=[3, 32, 32], interpolation='bilinear', crop_pct=0.9,
          crop_mode='center', mean=[0.5, 0.25, 0.125], std=[0.2, 0.3, 0.4],
          num_classes=10)
  loaded = pretrained.load(str(first))
  assert loaded.preprocessing == preprocessing
  assert loaded.label_names == labels
  # Exported again from what was loaded: the same files.
  second = tmp_path / 'second'
  export.save(export.export(loaded.variables, loaded.family, 'timm',
                            pretrained_cfg=loaded.preprocessing,
                            label_names=loaded.label_names,
                            image_size=loaded.image_size,
                            **loaded.model_kwargs), str(second), 'timm')
  assert json.loads((second / 'config.json').read_text()) == config
  # A class without a name: timm's {index: name} form, read back as None.
  partial = labels[:3] + (None,) * 7
  state = export.export(variables, family, 'timm', label_names=partial,
                        pretrained_cfg=preprocessing, **kwargs)
  assert state.config['label_names'] == {'0': labels[0], '1': labels[1],
                                         '2': labels[2]}
  export.save(state, str(tmp_path / 'partial'), 'timm')
  assert pretrained.load(str(tmp_path / 'partial')).label_names == partial
  # transformers: timm's 'center' crop is BitImageProcessor's (shorter
  # side to floor(32 / 0.9) = 35, centre crop 32); id2label from the names.
  state = export.export(variables, family, 'hf', label_names=partial,
                        pretrained_cfg=preprocessing, **kwargs)
  assert state.processor == {
      'image_processor_type': 'BitImageProcessor', 'do_resize': True,
      'size': {'shortest_edge': 35}, 'resample': 2,  # PIL's BILINEAR
      'do_center_crop': True, 'crop_size': {'height': 32, 'width': 32},
      'do_rescale': True, 'rescale_factor': 1 / 255, 'do_normalize': True,
      'image_mean': [0.5, 0.25, 0.125], 'image_std': [0.2, 0.3, 0.4],
      'do_convert_rgb': True}
  assert state.config['id2label'] == {
      '0': labels[0], '1': labels[1], '2': labels[2],
      **{str(index): f'LABEL_{index}' for index in range(3, 10)}}
  with pytest.raises(ValueError, match=r"mean \[0\.5, 0\.5\] has 2 values; "
                     r"the model takes 3 channels"):
    export.export(variables, family, 'timm', pretrained_cfg={
        'mean': [0.5, 0.5]}, **kwargs)


# Recipes' evaluation specs (configs/*.py) -> (timm's data config, the
# size timm's eval transform resizes to: floor(input size / crop_pct)).
PP_EVAL_CASES = {
    # digits: no resize, the 8x8 images as they are.
    'value_range(-1, 1)|onehot(10)': (dict(
        crop_mode='center', crop_pct=1.0, interpolation='bilinear',
        mean=[0.5], std=[0.5]), None),
    # vit_i1k and the other ImageNet recipes.
    'decode|resize_small(256)|central_crop(224)|value_range(-1, 1)|'
    'onehot(1000)': (dict(
        crop_mode='center', crop_pct=0.875, interpolation='bilinear',
        input_size=[3, 224, 224], mean=[0.5] * 3, std=[0.5] * 3), (256, 256)),
    # convmixer_i1k: 224 / 233 nudged so that timm's floor gives 233.
    "decode|resize_small(233, 'bicubic')|central_crop(224)|"
    'value_range(-1, 1)|onehot(1000)': (dict(
        crop_mode='center', crop_pct=0.9613733905579399,
        interpolation='bicubic', input_size=[3, 224, 224], mean=[0.5] * 3,
        std=[0.5] * 3), (233, 233)),
    # finetune: a squash to the resolution.
    'decode|resize(384)|value_range(-1, 1)|onehot(37)': (dict(
        crop_mode='squash', crop_pct=1.0, interpolation='bilinear',
        input_size=[3, 384, 384], mean=[0.5] * 3, std=[0.5] * 3), (384, 384)),
    # Value ops chained: one affine map.
    "resize((64, 48), method='nearest')|central_crop((32, 24))|"
    'value_range(0, 1)|normalize([0.485, 0.456, 0.406], '
    '[0.229, 0.224, 0.225])': (dict(
        crop_mode='squash', crop_pct=0.5, interpolation='nearest',
        input_size=[3, 32, 24], mean=[0.485, 0.456, 0.406],
        std=[0.229, 0.224, 0.225]), (64, 48)),
}


@pytest.mark.parametrize('size,crop_pct,interpolation,crop_mode', [
    (224, 0.9613733905579399, 'bicubic', 'center'),
    ((224, 192), 0.9, 'bilinear', 'center'),
    (224, 1.0, 'bicubic', 'squash'),
    ((32, 24), 0.875, 'bicubic', 'border'),
    (384, 1.0, 'lanczos', 'center'),
])
def test_timms_own_spec_reads_back_as_its_data_config(size, crop_pct,
                                                      interpolation,
                                                      crop_mode):
  """What predict.pretrained_spec writes for a timm data config (the ops'
  timm=True, as the i1k recipes' pp_eval) exports as that config, without
  notes."""
  from vit_jax import predict  # pylint: disable=g-import-not-at-top
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  spec = predict.pretrained_spec(size, crop_pct, interpolation, mean, std,
                                 crop_mode)
  cfg = data_config.from_pp_eval(f'decode|{spec}|onehot(1000)', 3)
  height, width = (size, size) if isinstance(size, int) else size
  assert cfg == dict(crop_mode=crop_mode, interpolation=interpolation,
                     input_size=[3, height, width], mean=list(mean),
                     std=list(std), crop_pct=cfg['crop_pct'])
  assert math.floor(height / cfg['crop_pct']) == math.floor(
      height / crop_pct)
  assert math.floor(width / cfg['crop_pct']) == math.floor(width / crop_pct)


@pytest.mark.parametrize('spec', sorted(PP_EVAL_CASES))
def test_run_preprocessing_as_timms_data_config(spec):
  expected, scaled = PP_EVAL_CASES[spec]
  cfg = data_config.from_pp_eval(spec, len(expected['mean']))
  assert cfg == expected
  if scaled:
    assert tuple(math.floor(side / cfg['crop_pct'])
                 for side in cfg['input_size'][1:]) == scaled


def test_run_preprocessing_timm_cannot_express_is_noted(caplog):
  cfg = data_config.from_pp_eval(
      "decode|inception_crop(224)|flip_lr|value_range(-1, 1)", 3)
  assert cfg['notes'] == [
      "vit_jax: the run's pp_eval 'decode|inception_crop(224)|flip_lr|"
      "value_range(-1, 1)' is not exactly timm's data config: its random "
      "ops ['flip_lr', 'inception_crop'] are left out."]
  cfg = data_config.from_pp_eval(
      "resize_small(36, method='area')|central_crop(32)|value_range(0, 1)",
      1)
  assert cfg['interpolation'] == 'box' and 'method \'area\' has no timm ' \
      'interpolation; \'box\' is the closest' in cfg['notes'][0]
  assert cfg['mean'] == [0.0] and cfg['std'] == [1.0]
  cfg = data_config.from_pp_eval('central_crop(6)|value_range(-1, 1)', 1)
  assert "resize and crop ops ['central_crop'] have no timm counterpart" in (
      cfg['notes'][0])
  assert 'is not exactly timm\'s data config' in caplog.text


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
  # digits: 8x8 grey images as they are (no resize: timm's resize to
  # floor(8 / crop_pct) = 8 leaves them so), value_range(-1, 1); the
  # dataset's class names.
  assert {key: timm_config['pretrained_cfg'][key] for key in (
      'input_size', 'crop_pct', 'crop_mode', 'interpolation', 'mean',
      'std')} == dict(input_size=[1, 8, 8], crop_pct=1.0, crop_mode='center',
                      interpolation='bilinear', mean=[0.5], std=[0.5])
  assert 'notes' not in timm_config['pretrained_cfg']
  assert timm_config['label_names'] == [str(digit) for digit in range(10)]
  # transformers: the same preprocessing, the same names.
  written = export.export_run(workdir, 'hf', str(tmp_path / 'hf'))
  with open(written[1]) as f:
    assert json.load(f)['id2label'] == {str(digit): str(digit)
                                        for digit in range(10)}
  with open(written[2]) as f:
    processor = json.load(f)
  assert {key: processor[key] for key in (
      'image_processor_type', 'size', 'crop_size', 'resample', 'image_mean',
      'image_std', 'do_convert_rgb')} == dict(
          image_processor_type='BitImageProcessor',
          size={'shortest_edge': 8}, crop_size={'height': 8, 'width': 8},
          resample=2, image_mean=[0.5], image_std=[0.5],
          do_convert_rgb=False)
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
