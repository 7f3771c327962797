"""Importers against timm's own outputs (golden files from make_golden.py),
and `init_from`'s loading of this package's own runs."""

import dataclasses
import json
import os
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import weights
from vit_jax.models import get_model
from vit_jax.models import mae
from vit_jax.weights import core
from vit_jax.weights import families

TOL = 1e-4  # float32, against timm on the CPU.


def _forward(name, kwargs, params, images):
  return get_model(name, **kwargs).apply({'params': params},
                                         jnp.asarray(images))


@pytest.mark.parametrize('case', sorted(golden_cases.MODEL_KWARGS))
@pytest.mark.parametrize('scan', [False, True])
def test_from_timm_matches_timm(case, scan):
  name, kwargs = golden_cases.MODEL_KWARGS[case]
  kwargs = dict(kwargs, scan=scan)
  state_dict, outputs = golden_cases.load(case)
  params = weights.from_timm(state_dict, name, **kwargs)['params']
  logits, aux = _forward(name, kwargs, params, outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)


@pytest.mark.parametrize('case,filename', [
    ('vit_cls', 'vit_cls_original.npz'),
    ('vit_map', 'vit_map_big_vision.npz'),
    ('mixer', 'mixer_original.npz'),
])
def test_load_npz_matches_timm(case, filename):
  name, kwargs = golden_cases.MODEL_KWARGS[case]
  _, outputs = golden_cases.load(case)
  path = os.path.join(golden_cases.GOLDEN_DIR, filename)
  params = weights.load_npz(path, name, **kwargs)['params']
  logits, _ = _forward(name, kwargs, params, outputs['images'])
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)


def test_posemb_resampling_matches_timm():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, outputs = golden_cases.load('vit_cls')
  params = weights.from_timm(state_dict, name, image_size=48,
                             **kwargs)['params']
  assert params['pos_embed'].shape == (1, 1 + 36, 64)
  np.testing.assert_allclose(params['pos_embed'], outputs['pos_embed_48'],
                             atol=1e-5, rtol=0)
  logits, _ = _forward(name, kwargs, params, outputs['images_48'])
  np.testing.assert_allclose(logits, outputs['logits_48'], atol=TOL, rtol=0)


def test_resample_posemb_keeps_prefix_and_identity():
  rng = np.random.default_rng(0)
  posemb = rng.normal(size=(1, 1 + 16, 8)).astype(np.float32)
  same = weights.resample_posemb(posemb, (4, 4), num_prefix_tokens=1)
  np.testing.assert_allclose(same, posemb, atol=1e-6)
  bigger = weights.resample_posemb(posemb, (8, 6), num_prefix_tokens=1)
  assert bigger.shape == (1, 1 + 48, 8)
  np.testing.assert_array_equal(bigger[:, 0], posemb[:, 0])
  with pytest.raises(ValueError, match='not a square grid'):
    weights.resample_posemb(posemb[:, :-1], (4, 4), num_prefix_tokens=1)


def test_new_num_classes_replaces_head_keeps_representation():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_map']
  state_dict, outputs = golden_cases.load('vit_map')
  kwargs = dict(kwargs, num_classes=3, head_bias_init=-2.0)
  params = weights.from_timm(state_dict, name, **kwargs)['params']
  assert params['head']['kernel'].shape == (64, 3)
  assert not params['head']['kernel'].any()
  np.testing.assert_array_equal(params['head']['bias'], [-2.0] * 3)
  logits, aux = _forward(name, kwargs, params, outputs['images'])
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  np.testing.assert_allclose(logits, -2.0)


def test_no_head_returns_representation():
  name, kwargs = golden_cases.MODEL_KWARGS['mixer']
  state_dict, outputs = golden_cases.load('mixer')
  kwargs = dict(kwargs, num_classes=0)
  params = weights.from_timm(state_dict, name, **kwargs)['params']
  assert 'head' not in params
  features, _ = _forward(name, kwargs, params, outputs['images'])
  np.testing.assert_allclose(features, outputs['pre_logits'], atol=TOL)


def test_npz_pre_logits_dropped_with_new_head(tmp_path):
  path = os.path.join(golden_cases.GOLDEN_DIR, 'vit_cls_original.npz')
  with np.load(path) as archive:
    arrays = dict(archive)
  arrays['pre_logits/kernel'] = np.ones((64, 64), np.float32)
  arrays['pre_logits/bias'] = np.zeros((64,), np.float32)
  arrays['head/kernel'] = np.ones((64, 10), np.float32)
  with_pre_logits = tmp_path / 'with_pre_logits.npz'
  np.savez(with_pre_logits, **arrays)
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  # Same head shape, but no representation layer in the model: an error.
  with pytest.raises(ValueError, match='unexpected in the checkpoint.*'
                     'pre_logits/kernel'):
    weights.load_npz(with_pre_logits, name, **kwargs)
  # Kept when the model has one.
  params = weights.load_npz(with_pre_logits, name, representation_size=64,
                               **kwargs)['params']
  np.testing.assert_array_equal(params['pre_logits']['kernel'], 1.0)
  # Dropped together with the head for a new task (ViT paper, Sec. 3.1).
  params = weights.load_npz(with_pre_logits, name,
                               **dict(kwargs, num_classes=7))['params']
  assert 'pre_logits' not in params
  assert params['head']['kernel'].shape == (64, 7)


@pytest.mark.parametrize('override,pattern', [
    (dict(depth=3), r'missing from the checkpoint: \[.*encoder/block_2/'),
    (dict(depth=1), r'unexpected in the checkpoint: \[.*encoder/block_1/'),
    (dict(mlp_dim=96), r'6 shape mismatches, in its own names: '
     r'\[.*blocks\.0\.mlp\.fc1\.weight: checkpoint \(128, 64\) vs model '
     r'\(96, 64\) \(ours: encoder/block_0/mlp/fc1/kernel\)'),
    (dict(pool_type='gap'), r'unexpected in the checkpoint: \[.*cls_token'),
])
def test_mismatch_lists_offending_keys(override, pattern):
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, _ = golden_cases.load('vit_cls')
  with pytest.raises(ValueError, match=pattern):
    weights.from_timm(state_dict, name, **dict(kwargs, **override))


def test_a_wrong_size_is_named_before_any_reshape():
  """issue 19: variant='Ti/16' on these weights (width 64) failed inside
  a reshape into Ti's 3 heads ('cannot reshape array of size 4096')."""
  state_dict, _ = golden_cases.load('vit_cls')
  with pytest.raises(ValueError, match=(
      r'^The timm state dict does not fit the model \(wrong variant or '
      r'options\?\): 30 shape mismatches, in its own names: \['
      r"'cls_token: checkpoint \(1, 1, 64\) vs model \(1, 1, 192\) \(ours: "
      r"cls_token\)', .*'patch_embed\.proj\.weight: checkpoint \(64, 3, 8, "
      r"8\) vs model \(192, 3, 16, 16\).* and 22 more\.$")):
    weights.from_timm(state_dict, 'vit', variant='Ti/16', num_classes=10)
  # A fused qkv of the wrong width: named with its parts.
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  narrow = dict(state_dict)
  narrow['blocks.1.attn.qkv.weight'] = np.ones((3 * 48, 64), np.float32)
  with pytest.raises(ValueError, match=(
      r"1 shape mismatch, in its own names: \['blocks\.1\.attn\.qkv\.weight:"
      r' checkpoint \(144, 64\) vs model \(192, 64\) \(ours: \{encoder/block_1/'
      r'attn/query/kernel, encoder/block_1/attn/key/kernel, '
      r"encoder/block_1/attn/value/kernel\}\)'\]\.$")):
    weights.from_timm(narrow, name, **kwargs)


def test_from_hf_names_a_wrong_size_in_transformers_names():
  path = os.path.join(golden_cases.GOLDEN_DIR, 'vit_hf.npz')
  with np.load(path) as archive:
    state_dict = {k[len('hf/'):]: archive[k] for k in archive.files
                  if k.startswith('hf/')}
  with pytest.raises(ValueError, match=(
      r"Hugging Face state dict does not fit .*'vit\.embeddings\.cls_token: "
      r"checkpoint \(1, 1, 32\) vs model \(1, 1, 48\)")):
    weights.from_hf(state_dict, 'vit', patch_size=4, width=48, depth=2,
                    mlp_dim=64, num_heads=3, num_classes=10)


_SWIN_HEADS = dict(patch_size=2, width=8, depths=(2, 2, 2, 1),
                   window_size=4, num_classes=10)


@pytest.mark.parametrize('case,family,kwargs,pattern', [
    # Swin's bias table has a column per head (the golden last stage: 8).
    ('swin', 'swin', dict(_SWIN_HEADS, num_heads=(2, 2, 4, 4)),
     r"\['layers\.3\.blocks\.0\.attn\.relative_position_bias_table: "
     r'checkpoint \(9, 8\) vs model \(9, 4\)'),
    # XCiT's temperature is per head (the golden model: 4).
    ('xcit', 'xcit', dict(patch_size=8, width=24, depth=2, num_heads=8,
                          mlp_ratio=2.0, layer_scale_init=1.0,
                          tokens_norm=True, num_classes=10),
     r"2 shape mismatches.*\['blocks\.0\.attn\.temperature: checkpoint "
     r'\(4, 1, 1\) vs model \(8, 1, 1\)'),
])
def test_num_heads_is_checked_where_the_weights_fix_it(case, family, kwargs,
                                                       pattern):
  state_dict, _ = golden_cases.load(case)
  with pytest.raises(ValueError, match=pattern):
    weights.from_timm(state_dict, family, **kwargs)


def test_npz_num_heads_is_in_the_kernel_shapes():
  """Flax's query kernels are [width, heads, head_dim]: a wrong num_heads
  is a named mismatch."""
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  path = os.path.join(golden_cases.GOLDEN_DIR, 'vit_cls_original.npz')
  with pytest.raises(ValueError, match=(
      r'shape mismatches: .*encoder/block_0/attn/key/kernel: checkpoint '
      r'\(64, 2, 32\) vs model \(64, 4, 16\)')):
    weights.load_npz(path, name, **dict(kwargs, num_heads=4))


def test_vit_num_heads_cannot_be_seen_in_timms_weights():
  """timm's fused qkv is [3 * width, width] for any head count: a wrong
  num_heads of the same width loads (documented in from_timm) and gives
  other outputs than timm's."""
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, outputs = golden_cases.load('vit_cls')
  wrong = dict(kwargs, num_heads=4)  # timm's: 2
  params = weights.from_timm(state_dict, name, **wrong)['params']
  logits, _ = _forward(name, wrong, params, outputs['images'])
  assert np.abs(logits - outputs['logits']).max() > 1e-2


def test_unknown_timm_entries_are_named():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, _ = golden_cases.load('vit_cls')
  state_dict['blocks.0.attn.q_norm.weight'] = np.ones(32, np.float32)
  with pytest.raises(ValueError,
                     match=r'blocks\.0\.attn\.q_norm\.weight \(32,\)'):
    weights.from_timm(state_dict, name, **kwargs)
  # A known entry of an option the model lacks (LayerScale): named as
  # the parameter it would be.
  del state_dict['blocks.0.attn.q_norm.weight']
  state_dict['blocks.0.ls1.gamma'] = np.ones(64, np.float32)
  with pytest.raises(ValueError, match=r'unexpected in the checkpoint: '
                     r'\[\'encoder/block_0/ls1/scale \(64,\)\'\]'):
    weights.from_timm(state_dict, name, **kwargs)


def test_unknown_family_lists_valid_ones():
  with pytest.raises(ValueError,
                     match=r"'resnet'.*\['vit', 'mixer', 'swin', "
                     r".*'convmixer'.*\]"):
    weights.from_timm({}, 'resnet')


def test_wrong_channel_count_is_a_clear_error():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_gap']
  state_dict, outputs = golden_cases.load('vit_gap')
  params = weights.from_timm(state_dict, name, **kwargs)['params']
  gray = outputs['images'][..., :1]
  with pytest.raises(ValueError, match=r'Images have 1 channels.*expects 3'):
    _forward(name, kwargs, params, gray)


def test_load_init_params_reads_timm_files_and_resamples(tmp_path):
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, outputs = golden_cases.load('vit_cls')
  path = tmp_path / 'weights.npz'
  np.savez(path, **state_dict)
  params = weights.load_init_params('timm', str(path), name,
                                       image_size=(48, 48),
                                       **dict(kwargs, num_classes=4))['params']
  np.testing.assert_allclose(params['pos_embed'], outputs['pos_embed_48'],
                             atol=1e-5)
  assert params['head']['kernel'].shape == (64, 4)
  with pytest.raises(ValueError, match=r"Unknown init_from kind 'hub'; "
                     r"valid choices: \['own', 'npz', 'timm', 'hf'\]"):
    weights.load_init_params('hub', str(path), name, **kwargs)


def test_checkpoint_image_size_per_family():
  # ViT: the learned position embedding's grid (class-token row apart).
  vit_model = get_model('vit', patch_size=8, width=16, depth=1, mlp_dim=32,
                        num_heads=2, num_classes=0)
  posemb = {'cls_token': np.zeros((1, 1, 16)),
            'pos_embed': np.zeros((1, 1 + 36, 16))}
  assert models.checkpoint_image_size('vit', vit_model, posemb) == (48, 48)
  del posemb['cls_token']
  posemb['pos_embed'] = np.zeros((1, 16, 16))
  assert models.checkpoint_image_size('vit', vit_model, posemb) == (32, 32)
  assert models.checkpoint_image_size('vit', vit_model, {}) == (224, 224)
  # Swin: a last-stage window clamped to 2 (a 9-row bias table) says 32 px;
  # an unclamped one, the model's own resolution.
  swin_model = get_model('swin', patch_size=2, width=8, depths=(2, 2, 2, 1),
                         num_heads=(2, 2, 4, 8), window_size=4)
  table = 'stage_3/block_0/relative_position_bias_table'
  assert models.checkpoint_image_size(
      'swin', swin_model, {table: np.zeros((9, 8))}) == (32, 32)
  assert models.checkpoint_image_size(
      'swin', swin_model, {table: np.zeros((49, 8))}) == (64, 64)
  with pytest.raises(ValueError, match=r"Unknown model 'resnet'"):
    models.checkpoint_image_size('resnet', vit_model, {})


_TINY_MAE = dict(patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=2,
                 decoder_width=16, decoder_depth=1, decoder_num_heads=2,
                 num_channels=1)


def _tiny_mae_params():
  model = get_model('mae', **_TINY_MAE)
  return model.init(jax.random.PRNGKey(0), jnp.ones((1, 16, 16, 1)))['params']


def test_convert_params_mae_to_vit_gives_the_encoder():
  params = _tiny_mae_params()
  encoder = models.convert_params('mae', 'vit', params)
  assert set(encoder) == set(mae.ENCODER_PARAM_NAMES)
  assert 'mask_token' in params and 'decoder_embed' in params
  for name in encoder:
    assert encoder[name] is params[name]
  vit_model = mae.encoder_as_vit(get_model('mae', **_TINY_MAE))
  vit_shapes = jax.eval_shape(vit_model.init, jax.random.PRNGKey(0),
                              jnp.ones((1, 16, 16, 1)))['params']
  assert jax.tree.map(np.shape, encoder) == jax.tree.map(np.shape,
                                                         vit_shapes)
  # The same family: unchanged.
  assert models.convert_params('vit', 'vit', encoder) is encoder


def test_convert_params_unsupported_pair_is_named():
  with pytest.raises(ValueError, match=r"Cannot convert 'mixer' params to "
                     r"'vit' params.*mae -> vit"):
    models.convert_params('mixer', 'vit', {})


def _own_workdir(tmp_path, model_name, params, config=True):
  workdir = tmp_path / 'source'
  directory = str(workdir / 'checkpoints')
  checkpointer = checkpoint.TrainCheckpointer(directory, async_save=False)
  checkpointer.save(3, {'params': params}, {'step': 3})
  checkpointer.close()
  if config:
    with open(workdir / 'config.json', 'w') as f:
      json.dump({'model': {'name': model_name}}, f)
  return workdir


def test_load_init_params_own_converts_by_the_source_config(tmp_path):
  params = _tiny_mae_params()
  workdir = _own_workdir(tmp_path, 'mae', params)
  vit_kwargs = dict(patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=2,
                    pool_type='cls', posemb='sincos2d', num_classes=5)
  # The workdir or its checkpoints/ directory.
  for path in (workdir, workdir / 'checkpoints'):
    loaded = weights.load_init_params('own', str(path), 'vit',
                                      image_size=16, **vit_kwargs)['params']
    for name in mae.ENCODER_PARAM_NAMES:
      for got, expected in zip(jax.tree.leaves(loaded[name]),
                               jax.tree.leaves(params[name]), strict=True):
        np.testing.assert_array_equal(got, expected)
    assert loaded['head']['kernel'].shape == (32, 5)
    assert not loaded['head']['kernel'].any()
  with pytest.raises(ValueError, match=r"Cannot convert 'mae' params to "
                     r"'mixer' params"):
    weights.load_init_params('own', str(workdir), 'mixer', patch_size=4,
                             width=32, depth=2, tokens_mlp_dim=16,
                             channels_mlp_dim=64)


def test_load_init_params_own_needs_the_source_config(tmp_path):
  workdir = _own_workdir(tmp_path, 'mae', _tiny_mae_params(), config=False)
  expected = os.path.join(str(workdir), 'config.json')
  for path in (workdir, workdir / 'checkpoints'):
    with pytest.raises(FileNotFoundError,
                       match=re.escape(expected) + ' not found'):
      weights.load_init_params('own', str(path), 'vit', patch_size=4,
                               width=32, depth=2, mlp_dim=64, num_heads=2)


# ----------------------------------------------------------------------------
# The two-way tables (`vit_jax.weights.core` and the family modules).

_SWIN_KWARGS = dict(patch_size=2, width=8, depths=(2, 2, 2, 1),
                    num_heads=(2, 2, 4, 8), window_size=4, num_classes=10)
# (family, layout, get_model kwargs, image side): together they use every
# entry of every table that export writes.
_TABLE_CASES = [
    *[(family, layout, kwargs, 32)
      for family, kwargs in golden_cases.MODEL_KWARGS.values()
      for layout in ('TIMM', 'NPZ')],
    ('vit', 'HF', golden_cases.MODEL_KWARGS['vit_cls'][1], 32),
    # Registers, LayerScale, the pre-norm: the entries of timm's ViT
    # variants (DINOv2, CLIP, DeiT III).
    ('vit', 'TIMM', dict(golden_cases.VIT_VARIANTS['vit_dinov2_reg4'][1],
                         pre_norm=True), 32),
    ('swin', 'TIMM', _SWIN_KWARGS, 32),
    ('swinv2', 'TIMM', _SWIN_KWARGS, 32),
    ('xcit', 'TIMM', dict(patch_size=8, width=24, depth=2, num_heads=4,
                          mlp_ratio=2.0, num_classes=10), 32),
    # Patches of 16: a fourth convolution in the patch embedding.
    ('xcit', 'TIMM', dict(patch_size=16, width=32, depth=1, num_heads=4,
                          num_classes=0), 32),
    ('convmixer', 'TIMM', dict(width=16, depth=2, kernel_size=5, patch_size=4,
                               num_classes=10), 32),
    ('mae', 'HF', dict(_TINY_MAE, num_channels=3), 16),
    # BEiT as released (fc_norm, LayerScale, tables), and the other options
    # (encoder_norm, an absolute position embedding).
    ('beit', 'TIMM', dict(patch_size=8, width=32, depth=2, mlp_dim=64,
                          num_heads=4, num_classes=10), 32),
    ('beit', 'TIMM', dict(patch_size=8, width=32, depth=1, mlp_dim=64,
                          num_heads=4, num_classes=10, fc_norm=False,
                          posemb='learn', qkv_bias=False), 32),
    # EVA-02 B / L (the unpacked SwiGLU, fc_norm), and the CLIP towers'
    # options with the packed MLP and LayerScale (encoder_norm).
    ('eva', 'TIMM', dict(patch_size=8, width=32, depth=1, mlp_dim=64,
                         num_heads=4, num_classes=10, mlp_norm=True), 32),
    ('eva', 'TIMM', dict(patch_size=8, width=32, depth=1, mlp_dim=64,
                         num_heads=4, num_classes=10, pool_type='cls',
                         fc_norm=False, attn_norm=True,
                         layer_scale_init=0.1), 32),
    # Every stage with a reduction but the last, two blocks in one stage.
    ('segformer', 'HF', dict(widths=(8, 16), depths=(1, 2), num_heads=(1, 2),
                             sr_ratios=(2, 1), decoder_width=8,
                             num_classes=3), 32),
    # Divided attention: the temporal parts besides a ViT's.
    ('timesformer', 'HF', dict(patch_size=4, width=8, depth=2, mlp_dim=16,
                               num_heads=2, num_frames=2, image_size=16,
                               num_classes=3), 16),
    # MViTv2: channels grown in the attention, and (a class token) in the
    # MLP; the clip models' torchvision tables: tests/test_mvit.py.
    ('mvit', 'TIMM', dict(embed_dim=8, num_heads=1, depths=(1, 2),
                          num_classes=10), 32),
    ('mvit', 'TIMM', dict(embed_dim=8, num_heads=1, depths=(2, 1),
                          expand_attn=False, class_token=True,
                          pool_type='cls', num_classes=10), 32),
]


def _random_flat(family, kwargs, side):
  """Random variables of the model, flat (unstacked blocks), from shapes
  alone."""
  model = get_model(family, **kwargs)
  frames = getattr(model, 'num_frames', None)  # a video model's clip
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct(
                              (1, *((frames,) if frames else ()), side, side,
                               3), jnp.float32))
  rng = np.random.default_rng(0)
  return model, {path: rng.normal(size=leaf.shape).astype(np.float32)
                 for path, leaf in weights.flatten_variables(shapes).items()}


def _table(family, layout):
  (module,) = [m for m in families.FAMILIES if m.NAME == family]
  return getattr(module, layout)


def _readers(table, name):
  """The entries one of whose spellings reads `name`."""
  return [item for item in table if any(
      core.pattern(spelling, item.parts).fullmatch(name)
      for spelling in item.theirs)]


def _writer(table, path):
  """The index of the entry that exports `path`, or None."""
  for index, item in enumerate(table):
    if (item.ours is not None and not item.read_only
        and core.pattern(item.ours, item.parts).fullmatch(path)):
      return index
  return None


@pytest.mark.parametrize('family,layout,kwargs,side', _TABLE_CASES)
def test_table_round_trip_is_exact(family, layout, kwargs, side):
  table = _table(family, layout)
  model, flat = _random_flat(family, kwargs, side)
  keep = layout == 'NPZ'  # the same Flax names where no entry renames
  theirs = core.to_theirs(flat, table, 'test layout', keep_unmatched=keep)
  back = core.to_ours(theirs, table, model, 'test state dict',
                      keep_unmatched=keep)
  assert sorted(back) == sorted(flat)
  for path, value in flat.items():
    assert back[path].dtype == value.dtype, path
    np.testing.assert_array_equal(back[path], value, err_msg=path)
  # Each exported name is read by exactly one entry: none shadows another.
  for name in theirs:
    readers = _readers(table, name)
    assert len(readers) == 1 or (keep and not readers), (name, readers)


def test_every_written_entry_is_exercised_by_the_table_cases():
  """The cases above export through every entry that export writes, so
  the round trip covers them all."""
  used = set()
  for family, layout, kwargs, side in _TABLE_CASES:
    table = _table(family, layout)
    _, flat = _random_flat(family, kwargs, side)
    used.update((family, layout, _writer(table, path)) for path in flat)
  for module in families.FAMILIES:
    for layout in ('TIMM', 'HF', 'NPZ'):
      for index, item in enumerate(getattr(module, layout, ())):
        if item.ours is not None and not item.read_only:
          assert (module.NAME, layout, index) in used, (module.NAME, layout,
                                                        item)


def test_table_errors_name_the_entry():
  one_way = core.Transform('squeeze', lambda x, heads: x[0], None)
  table = [core.entry('a.weight', 'a/kernel', one_way),
           *core.dense('b', 'b')]
  flat = {'a/kernel': np.ones((1, 2), np.float32)}
  with pytest.raises(ValueError, match=r"'a\.weight' -> 'a/kernel' of test "
                     r"layout has no export: its transform 'squeeze' has no "
                     r'inverse'):
    core.to_theirs(flat, table, 'test layout')
  with pytest.raises(ValueError, match=r"1 variables have no counterpart in "
                     r"test layout: \['c/kernel \(2,\)'\]"):
    core.to_theirs({'c/kernel': np.ones(2)}, table, 'test layout')
  with pytest.raises(ValueError, match=r"1 test state dict entries have no "
                     r"counterpart in this model family: \['c\.weight "
                     r"\(3,\)'\]"):
    core.to_ours({'b.weight': np.ones((2, 2)), 'c.weight': np.ones(3)},
                 table, None, 'test state dict')
  # A fused group needs all its parts.
  fused = core.dense('qkv', 'attn/{part}', core.HEADS_IN, core.HEADS_BIAS,
                     parts=core.QKV)
  with pytest.raises(ValueError, match=r"qkv\.weight of test layout needs "
                     r"\['query', 'key', 'value'\]; the variables lack "
                     r"\['value'\]"):
    core.to_theirs({'attn/query/kernel': np.ones((4, 2, 2)),
                    'attn/key/kernel': np.ones((4, 2, 2))}, fused,
                   'test layout')


def test_family_tables_are_the_models_families():
  names = [module.NAME for module in families.FAMILIES]
  assert len(set(names)) == len(names)
  assert set(names) <= set(models.MODELS)
  assert weights.IMPORTABLE == tuple(
      module.NAME for module in families.FAMILIES if hasattr(module, 'TIMM'))
  # A family read from timm names its architectures, each built as itself.
  for module in families.FAMILIES:
    if hasattr(module, 'TIMM'):
      assert module.TIMM_ARCHITECTURES
      assert {architecture.family for architecture in
              module.TIMM_ARCHITECTURES.values()} == {module.NAME}


def _timm_args_problems(module):
  """What keeps a family's timm model_args from translating: no TIMM_ARGS
  beside its TIMM table, or kwargs its model class does not have."""
  if not hasattr(module, 'TIMM'):
    return []
  timm_args = getattr(module, 'TIMM_ARGS', None)
  if not isinstance(timm_args, core.TimmArgs):
    return [f'{module.NAME} has a TIMM table but no TIMM_ARGS']
  fields = {field.name for field in
            dataclasses.fields(models.MODELS[module.NAME])}
  return [f'{module.NAME}: {kwarg!r} is no field of its model'
          for kwarg in (*timm_args.renamed.values(), *timm_args.size_fields)
          if kwarg not in fields]


def test_every_timm_family_translates_model_args_onto_its_fields():
  for module in families.FAMILIES:
    assert _timm_args_problems(module) == [], module.NAME
  # A half-added family is caught.
  half = types.SimpleNamespace(NAME='vit', TIMM=[])
  assert _timm_args_problems(half) == [
      'vit has a TIMM table but no TIMM_ARGS']
  half.TIMM_ARGS = core.TimmArgs(size_fields=('width', 'heads'),
                                 renamed={'embed_dim': 'embed_dim'}, fixed={})
  assert _timm_args_problems(half) == [
      "vit: 'embed_dim' is no field of its model",
      "vit: 'heads' is no field of its model"]


def test_swin_heads_come_from_the_entrys_stage():
  state_dict, _ = golden_cases.load('swin')
  # The golden model's last stage has 8 heads; its qkv splits by them.
  params = weights.from_timm(state_dict, 'swin', **_SWIN_KWARGS)['params']
  assert params['stage_3']['block_0']['attn']['query']['kernel'].shape == (
      64, 8, 8)
  three_stages = dict(_SWIN_KWARGS, depths=(2, 2, 2), num_heads=(2, 2, 4))
  # The sizes are checked first (the final norm's width).
  with pytest.raises(ValueError, match=r"\['norm\.weight: checkpoint \(64,\) "
                     r'vs model \(32,\) \(ours: final_norm/scale\)'):
    weights.from_timm(state_dict, 'swin', **three_stages)
  with pytest.raises(ValueError, match=r'weight of stage 3 matches no stage '
                     r'of the model \(num_heads \(2, 2, 4\)\)'):
    core.to_ours(state_dict, families.tables('TIMM')['swin'],
                 get_model('swin', **three_stages), 'timm state dict')
