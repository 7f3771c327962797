"""Importers against timm's own outputs (golden files from make_golden.py)."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from vit_jax import checkpoint
from vit_jax.models import get_model

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
  params = checkpoint.from_timm(state_dict, name, **kwargs)
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
  params = checkpoint.load_npz(path, name, **kwargs)
  logits, _ = _forward(name, kwargs, params, outputs['images'])
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)


def test_posemb_resampling_matches_timm():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, outputs = golden_cases.load('vit_cls')
  params = checkpoint.from_timm(state_dict, name, image_size=48, **kwargs)
  assert params['pos_embed'].shape == (1, 1 + 36, 64)
  np.testing.assert_allclose(params['pos_embed'], outputs['pos_embed_48'],
                             atol=1e-5, rtol=0)
  logits, _ = _forward(name, kwargs, params, outputs['images_48'])
  np.testing.assert_allclose(logits, outputs['logits_48'], atol=TOL, rtol=0)


def test_resample_posemb_keeps_prefix_and_identity():
  rng = np.random.default_rng(0)
  posemb = rng.normal(size=(1, 1 + 16, 8)).astype(np.float32)
  same = checkpoint.resample_posemb(posemb, (4, 4), num_prefix_tokens=1)
  np.testing.assert_allclose(same, posemb, atol=1e-6)
  bigger = checkpoint.resample_posemb(posemb, (8, 6), num_prefix_tokens=1)
  assert bigger.shape == (1, 1 + 48, 8)
  np.testing.assert_array_equal(bigger[:, 0], posemb[:, 0])
  with pytest.raises(ValueError, match='not a square grid'):
    checkpoint.resample_posemb(posemb[:, :-1], (4, 4), num_prefix_tokens=1)


def test_new_num_classes_replaces_head_keeps_representation():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_map']
  state_dict, outputs = golden_cases.load('vit_map')
  kwargs = dict(kwargs, num_classes=3, head_bias_init=-2.0)
  params = checkpoint.from_timm(state_dict, name, **kwargs)
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
  params = checkpoint.from_timm(state_dict, name, **kwargs)
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
    checkpoint.load_npz(with_pre_logits, name, **kwargs)
  # Kept when the model has one.
  params = checkpoint.load_npz(with_pre_logits, name, representation_size=64,
                               **kwargs)
  np.testing.assert_array_equal(params['pre_logits']['kernel'], 1.0)
  # Dropped together with the head for a new task (ViT paper, Sec. 3.1).
  params = checkpoint.load_npz(with_pre_logits, name,
                               **dict(kwargs, num_classes=7))
  assert 'pre_logits' not in params
  assert params['head']['kernel'].shape == (64, 7)


@pytest.mark.parametrize('override,pattern', [
    (dict(depth=3), r'missing from the checkpoint: \[.*encoder/block_2/'),
    (dict(depth=1), r'unexpected in the checkpoint: \[.*encoder/block_1/'),
    (dict(mlp_dim=96), r'shape mismatches: .*encoder/block_0/mlp/fc1/kernel:'
     r' checkpoint \(64, 128\) vs model \(64, 96\)'),
    (dict(pool_type='gap'), r'unexpected in the checkpoint: \[.*cls_token'),
])
def test_mismatch_lists_offending_keys(override, pattern):
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, _ = golden_cases.load('vit_cls')
  with pytest.raises(ValueError, match=pattern):
    checkpoint.from_timm(state_dict, name, **dict(kwargs, **override))


def test_unknown_timm_entries_are_named():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, _ = golden_cases.load('vit_cls')
  state_dict['blocks.0.ls1.gamma'] = np.ones(64, np.float32)
  with pytest.raises(ValueError, match=r'blocks\.0\.ls1\.gamma \(64,\)'):
    checkpoint.from_timm(state_dict, name, **kwargs)


def test_unknown_family_lists_valid_ones():
  with pytest.raises(ValueError,
                     match=r"'resnet'.*\['vit', 'mixer', 'swin'\]"):
    checkpoint.from_timm({}, 'resnet')


def test_wrong_channel_count_is_a_clear_error():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_gap']
  state_dict, outputs = golden_cases.load('vit_gap')
  params = checkpoint.from_timm(state_dict, name, **kwargs)
  gray = outputs['images'][..., :1]
  with pytest.raises(ValueError, match=r'Images have 1 channels.*expects 3'):
    _forward(name, kwargs, params, gray)


def test_load_init_params_reads_timm_files_and_resamples(tmp_path):
  name, kwargs = golden_cases.MODEL_KWARGS['vit_cls']
  state_dict, outputs = golden_cases.load('vit_cls')
  path = tmp_path / 'weights.npz'
  np.savez(path, **state_dict)
  params = checkpoint.load_init_params('timm', str(path), name,
                                       image_size=(48, 48),
                                       **dict(kwargs, num_classes=4))
  np.testing.assert_allclose(params['pos_embed'], outputs['pos_embed_48'],
                             atol=1e-5)
  assert params['head']['kernel'].shape == (64, 4)
  with pytest.raises(ValueError, match=r"Unknown init_from kind 'hub'; "
                     r"valid choices: \['own', 'npz', 'timm'\]"):
    checkpoint.load_init_params('hub', str(path), name, **kwargs)
