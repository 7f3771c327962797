"""TimeSformer: numerics against transformers' TimesformerForVideoClassification
for the three attention types, the time embedding resampled to another
frame count, import and export of transformers' layout, the start from an
ImageNet ViT (converted params, init_from kinds 'timm' and 'own'), scan,
remat and bfloat16, features, counts and errors.

The golden file comes from tests/support/make_golden_timesformer.py: tiny
models (width 32, 2 heads, depth 2, patch 4 on 16x16 frames, 4 frames, 5
classes) with random weights.
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import golden_cases
from vit_jax import checkpoint
from vit_jax import models
from vit_jax import weights
from vit_jax.models import common
from vit_jax.models import counts
from vit_jax.models import features
from vit_jax.models import timesformer
from vit_jax.weights import core
from vit_jax.weights import hf
from vit_jax.weights import npz
from vit_jax.weights import timm
from vit_jax.weights import timesformer as timesformer_table

TOL = 1e-4  # float32, against transformers on the CPU.
KWARGS = dict(patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=2,
              num_frames=4, image_size=16, num_classes=5)
CASES = timesformer.ATTENTION_TYPES


@functools.lru_cache(maxsize=None)
def _golden():
  with np.load(f'{golden_cases.GOLDEN_DIR}/timesformer_hf.npz') as archive:
    arrays = {key: archive[key] for key in archive.files}

  def group(prefix):
    return {key[len(prefix) + 1:]: value for key, value in arrays.items()
            if key.startswith(prefix + '/')}
  return group


def _forward(variables, clips, **overrides):
  return golden_cases.forward('timesformer', dict(KWARGS, **overrides),
                              variables, clips)


@pytest.mark.parametrize('attention_type', CASES)
def test_from_hf_matches_transformers(attention_type):
  group = _golden()
  variables = weights.from_hf(group(f'{attention_type}/hub'), 'timesformer',
                              attention_type=attention_type, **KWARGS)
  outputs = group(f'{attention_type}/out')
  logits, aux = _forward(variables, group('clips')['frames_4'],
                         attention_type=attention_type)
  assert logits.shape == (2, 5)
  assert np.abs(outputs['logits']).max() > 0.5  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  prefix = 4 if attention_type == 'space_only' else 1
  assert aux['encoded'].shape == (2, prefix + 4 * 16, 32)


def test_time_embedding_is_resampled_to_the_models_frames():
  """A 4-frame checkpoint in a 6-frame model: nearest interpolation (rows
  0, 0, 1, 2, 2, 3), what transformers does at run time on 6-frame clips."""
  group = _golden()
  hub = group('joint_space_time/hub')
  kwargs = dict(KWARGS, num_frames=6, attention_type='joint_space_time')
  variables = weights.from_hf(hub, 'timesformer', **kwargs)
  np.testing.assert_array_equal(
      variables['params']['time_embed'][0],
      hub['timesformer.embeddings.time_embeddings'][0, [0, 0, 1, 2, 2, 3]])
  logits, _ = _forward(variables, group('clips')['frames_6'],
                       num_frames=6, attention_type='joint_space_time')
  np.testing.assert_allclose(logits, group('frames/out')['logits'],
                             atol=TOL, rtol=0)
  # Shrinking too: 4 -> 3 frames takes rows 0, 1, 2 (floor(i * 4 / 3)).
  np.testing.assert_array_equal(
      timesformer_table.resample_time_embed(np.arange(4.)[None, :, None], 3
                                            ).ravel(), [0, 1, 2])


def test_export_round_trip_is_exact():
  """transformers 5's module names are the Hub's (the generator checks):
  the one spelling is written back bit for bit."""
  group = _golden()
  hub = group('divided_space_time/hub')
  variables = weights.from_hf(hub, 'timesformer', **KWARGS)
  back = hf.to_hf(core.flatten_variables(variables), 'timesformer')
  assert sorted(back) == sorted(hub)
  for name, value in hub.items():
    np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_scan_remat_and_bfloat16_agree():
  group = _golden()
  variables = weights.from_hf(group('divided_space_time/hub'), 'timesformer',
                              **KWARGS)
  clips = group('clips')['frames_4']
  expected = group('divided_space_time/out')['logits']
  scanned = {'params': common.stack_blocks(variables['params'])}
  logits, _ = _forward(scanned, clips, scan=True, remat=True)
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)
  logits, aux = _forward(variables, clips, dtype=jnp.bfloat16)
  assert aux['pre_logits'].dtype == jnp.float32
  np.testing.assert_allclose(logits, expected, atol=0.1, rtol=0)
  # Stochastic depth: train mode draws from the 'dropout' rng, eval does not.
  model = models.get_model('timesformer', stochastic_depth=0.5, **KWARGS)
  apply = jax.jit(functools.partial(model.apply, train=True))
  rngs = {'dropout': jax.random.PRNGKey(3)}
  first, _ = apply(variables, clips, rngs=rngs)
  again, _ = apply(variables, clips, rngs=rngs)
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - expected).max() > 1e-3


def test_features_are_on_the_clips_patch_grid():
  group = _golden()
  variables = weights.from_hf(group('divided_space_time/hub'), 'timesformer',
                              **KWARGS)
  model = models.get_model('timesformer', **KWARGS)
  clips = group('clips')['frames_4']
  maps = jax.jit(functools.partial(
      features.extract, model, layers=[-1], norm=True, prefix_tokens=True))(
          variables, clips)
  _, aux = _forward(variables, clips)
  assert maps['block_1'].shape == (2, 4, 4, 4, 32)  # [B, T, h, w, D]
  np.testing.assert_allclose(maps['block_1'].reshape(2, 64, 32),
                             aux['encoded'][:, 1:], atol=1e-5)
  np.testing.assert_allclose(maps['block_1/prefix'], aux['encoded'][:, :1],
                             atol=1e-5)


# ----------------------------------------------------------------------------
# From an ImageNet ViT (the paper's initialisation).

VIT_KWARGS = dict(patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=2,
                  num_classes=5, pool_type='cls')


@functools.lru_cache(maxsize=None)
def _vit():
  """A tiny class-token ViT with random params everywhere (its head too,
  so that its logits say something) and its logits on 16x16 images."""
  vit_model = models.get_model('vit', **VIT_KWARGS)
  shapes = jax.eval_shape(vit_model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 16, 16, 3)))['params']
  leaves, tree = jax.tree.flatten(shapes)
  keys = jax.random.split(jax.random.PRNGKey(7), len(leaves))
  params = jax.tree.unflatten(tree, [
      np.asarray(0.3 * jax.random.normal(key, leaf.shape))
      for key, leaf in zip(keys, leaves)])
  images = np.asarray(jax.random.normal(jax.random.PRNGKey(8),
                                        (2, 16, 16, 3)))
  logits, _ = jax.jit(vit_model.apply)({'params': params}, images)
  return params, images, np.asarray(logits)


def _still_clips(images, frames=4):
  """Clips of `frames` copies of each image."""
  return np.repeat(images[:, None], frames, axis=1)


@pytest.mark.parametrize('attention_type',
                         ['divided_space_time', 'space_only'])
def test_converted_vit_is_the_vit_on_still_clips(attention_type):
  """Temporal attention and its norm copied from the spatial ones, the
  temporal projection and time embedding zero: on T identical frames each
  temporal branch adds nothing and every frame's class token is the ViT's,
  so the logits are the ViT's on that frame."""
  params, images, vit_logits = _vit()
  converted = models.convert_params('vit', 'timesformer', params)
  block = converted['encoder']['block_1']
  np.testing.assert_array_equal(block['temporal_attn']['query']['kernel'],
                                params['encoder']['block_1']['attn'][
                                    'query']['kernel'])
  assert not block['temporal_dense']['kernel'].any()
  variables = core.fit_to_model(
      core.flatten_variables({'params': converted}), 'timesformer',
      models.get_model('timesformer', attention_type=attention_type,
                       **KWARGS), None, 'converted ViT')
  assert ('time_embed' in variables['params']) == (
      attention_type == 'divided_space_time')
  logits, _ = _forward(variables, _still_clips(images),
                       attention_type=attention_type)
  assert np.abs(vit_logits).max() > 0.5
  np.testing.assert_allclose(logits, vit_logits, atol=1e-5, rtol=0)
  # Frames that differ change the logits.
  moving = _still_clips(images).copy()
  moving[:, 1:] = np.roll(moving[:, 1:], 3, axis=2)
  logits, _ = _forward(variables, moving, attention_type=attention_type)
  assert np.abs(logits - vit_logits).max() > 1e-3


def _check_init(variables, images, vit_logits):
  assert variables['params']['time_embed'].shape == (1, 4, 32)
  logits, _ = _forward(variables, _still_clips(images))
  np.testing.assert_allclose(logits, vit_logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize('kind', ['timm', 'npz'])
def test_init_from_a_vit_file(kind, tmp_path):
  """A timm ViT (.safetensors) or Google's layout (.npz), read as the
  class-token ViT of the TimeSformer's size, then converted."""
  params, images, vit_logits = _vit()
  if kind == 'timm':
    path = tmp_path / 'vit.safetensors'
    safetensors_numpy.save_file(timm.to_timm(core.flatten(params), 'vit'),
                                str(path))
  else:
    path = tmp_path / 'vit.npz'
    np.savez(path, **npz.to_npz(core.flatten(params), 'vit'))
  variables = weights.load_init_params(kind, str(path), 'timesformer',
                                       **KWARGS)
  _check_init(variables, images, vit_logits)
  # A ViT of another width: named, not loaded.
  with pytest.raises(ValueError, match=r'does not fit the model'):
    weights.load_init_params(kind, str(path), 'timesformer',
                             **dict(KWARGS, width=48, num_heads=3))


def test_init_from_an_own_vit_run(tmp_path):
  params, images, vit_logits = _vit()
  workdir = tmp_path / 'source'
  checkpointer = checkpoint.TrainCheckpointer(str(workdir / 'checkpoints'),
                                              async_save=False)
  checkpointer.save(3, {'params': params}, {'step': 3})
  checkpointer.close()
  (workdir / 'config.json').write_text(
      json.dumps({'model': {'name': 'vit'}}))
  # As a config's model block gives them: image_size is the model's field
  # and the resolution import fits to, passed once.
  kwargs = dict(KWARGS)
  variables = weights.load_init_params('own', str(workdir), 'timesformer',
                                       image_size=kwargs.pop('image_size'),
                                       **kwargs)
  _check_init(variables, images, vit_logits)


def test_convert_refuses_a_vit_without_class_token():
  params = jax.eval_shape(
      models.get_model('vit', **dict(VIT_KWARGS, pool_type='gap')).init,
      jax.random.PRNGKey(0), jnp.zeros((1, 16, 16, 3)))['params']
  with pytest.raises(ValueError, match=r"class-token ViT.*lack \['cls_token'"):
    models.convert_params('vit', 'timesformer', params)


# ----------------------------------------------------------------------------
# Sizes, counts and errors.


def test_base_param_count_is_transformers():
  """transformers' TimesformerForVideoClassification at its default config
  with 400 classes: 121,566,352 parameters; the analytic count and the
  initialised shapes agree."""
  model = models.get_model('timesformer', variant='B/16', num_frames=8,
                           num_classes=400)
  clips = jax.ShapeDtypeStruct((1, 8, 224, 224, 3), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), clips)
  assert sum(leaf.size for leaf in jax.tree.leaves(shapes)) == 121_566_352
  assert counts.param_count(model, 224) == 121_566_352


@pytest.mark.parametrize('shape,match', [
    ((2, 3, 16, 16, 3), r'shape \[B, 4, 16, 16, C\].*got \[2, 3, 16, 16, 3\]'),
    ((2, 4, 18, 16, 3), r'divisible by the patch size 4\), got \[2, 4, 18'),
    ((4, 16, 16, 3), r'clips \[B, T, H, W, C\].*got \[4, 16, 16, 3\]'),
])
def test_bad_clips_are_named(shape, match):
  model = models.get_model('timesformer', **KWARGS)
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(model.init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def test_bad_options_are_named():
  with pytest.raises(ValueError, match=r"Unknown attention_type 'divided'; "
                     r"valid choices: \['divided_space_time', 'space_only', "
                     r"'joint_space_time'\]"):
    models.get_model('timesformer', variant='B/16', attention_type='divided')
  with pytest.raises(ValueError, match=r'image_size 30 is not divisible by '
                     r'the patch size 16'):
    models.get_model('timesformer', variant='B/16', image_size=30)
  with pytest.raises(ValueError, match=r'image_size must be a side or '
                     r'\(height, width\) of the frames, got \(8, 224, 224\)'):
    models.get_model('timesformer', variant='B/16', image_size=(8, 224, 224))
  with pytest.raises(ValueError, match=r"Unknown TimeSformer size 'X'"):
    models.get_model('timesformer', variant='X/16')
  with pytest.raises(ValueError, match=r'num_frames must be an integer >= 1'):
    models.get_model('timesformer', variant='B/16', num_frames=0)
  # A divided checkpoint's (non-identity) temporal branch in a model
  # without one is reported, not dropped.
  with pytest.raises(ValueError, match=r'unexpected in the checkpoint: '
                     r"\['encoder/block_0/temporal_attn"):
    weights.from_hf(_golden()('divided_space_time/hub'), 'timesformer',
                    attention_type='joint_space_time', **KWARGS)
