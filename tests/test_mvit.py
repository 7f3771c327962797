"""MViT / MViTv2: numerics against timm (images) and torchvision (clips),
sizes at the standard variants, export round trips, options and errors.

The golden files come from tests/support/make_golden_mvit.py (its
docstring lists the cases); the kwargs below build the same models.
"""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from vit_jax import export
from vit_jax import weights
from vit_jax.models import common
from vit_jax.models import counts
from vit_jax.models import features
from vit_jax.models import get_model
from vit_jax.models import mvit
from vit_jax.weights import torchvision as torchvision_weights

TOL = 1e-4  # float32, against the references on the CPU.
# bfloat16 compute (8-bit mantissa), against float32: the largest logit
# error as a fraction of the largest |logit|.
BF16_RELATIVE_TOL = 0.1

_TINY = dict(embed_dim=8, num_heads=1, num_classes=10)
TIMM_CASES = {
    'v2': dict(_TINY, depths=(1, 2, 1, 1)),
    'v2l': dict(_TINY, depths=(1, 2, 2), expand_attn=False,
                class_token=True, pool_type='cls'),
}
_VIDEO = dict(_TINY, depths=(1, 2, 1), num_frames=4, kv_stride=4,
              class_token=True, pool_type='cls', residual_pooling_cls=False)
TORCHVISION_CASES = {
    'v2s': _VIDEO,
    'v1b': dict(_VIDEO, expand_attn=False, rel_pos=False,
                residual_pooling=False, posemb='learn',
                pool_q_every_block=False),
}


def _load(name):
  with np.load(os.path.join(golden_cases.GOLDEN_DIR, name)) as archive:
    return {key: archive[key] for key in archive.files}


def _group(arrays, prefix):
  return {key[len(prefix) + 1:]: value for key, value in arrays.items()
          if key.startswith(prefix + '/')}


@pytest.fixture(scope='module')
def timm_golden():
  return _load('mvit_timm.npz')


@pytest.fixture(scope='module')
def torchvision_golden():
  return _load('mvit_torchvision.npz')


@functools.lru_cache(maxsize=None)
def _jitted_apply(**kwargs):
  model = get_model('mvit', **kwargs)
  return jax.jit(lambda variables, inputs: model.apply(variables, inputs))


def _forward(variables, inputs, **kwargs):
  return _jitted_apply(**kwargs)(variables, jnp.asarray(inputs))


def _check_golden(arrays, case, source, kwargs, inputs, import_fn,
                  export_fn):
  """Imports the case's state dict, checks the outputs against the
  reference's and the export back against the state dict; returns the
  outputs' aux."""
  state_dict = _group(arrays, f'{case}/{source}')
  outputs = _group(arrays, f'{case}/out')
  variables = import_fn(state_dict, 'mvit', **kwargs)
  logits, aux = _forward(variables, outputs[inputs], **kwargs)
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  exported = export_fn(weights.flatten_variables(variables))
  assert sorted(exported) == sorted(state_dict)
  for name, array in state_dict.items():
    np.testing.assert_array_equal(exported[name], array, err_msg=name)
  return aux


@pytest.mark.parametrize('case', sorted(TIMM_CASES))
def test_from_timm_matches_timm_and_exports_back(timm_golden, case):
  _check_golden(timm_golden, case, 'timm', TIMM_CASES[case], 'images',
                weights.from_timm,
                lambda flat: weights.timm.to_timm(flat, 'mvit'))


@pytest.mark.parametrize('case', sorted(TORCHVISION_CASES))
def test_from_torchvision_matches_torchvision_and_exports_back(
    torchvision_golden, case):
  kwargs = TORCHVISION_CASES[case]
  model = get_model('mvit', **kwargs)
  aux = _check_golden(
      torchvision_golden, case, 'torchvision', kwargs, 'clips',
      weights.from_torchvision,
      lambda flat: torchvision_weights.to_torchvision(flat, 'mvit', model))
  # Channels grow at a stage's start (v2) or end (v1).
  widths = (8, 16, 32) if case == 'v2s' else (16, 32, 32)
  assert [f.shape for f in aux['stage_features']] == [
      (2, 2, 8, 8, widths[0]), (2, 2, 4, 4, widths[1]),
      (2, 2, 2, 2, widths[2])]


def test_golden_exercises_residual_pooling_without_class_token(
    torchvision_golden):
  """torchvision leaves the class token out of residual pooling; adding it
  there (timm's way) changes the logits."""
  kwargs = TORCHVISION_CASES['v2s']
  state_dict = _group(torchvision_golden, 'v2s/torchvision')
  outputs = _group(torchvision_golden, 'v2s/out')
  variables = weights.from_torchvision(state_dict, 'mvit', **kwargs)
  logits, _ = _forward(variables, outputs['clips'],
                       **dict(kwargs, residual_pooling_cls=True))
  assert np.abs(logits - outputs['logits']).max() > 100 * TOL


def test_torchvision_wrong_depths_named(torchvision_golden):
  state_dict = _group(torchvision_golden, 'v2s/torchvision')
  with pytest.raises(ValueError, match=r'block 4 is past the model\'s 4 '
                     r'blocks \(depths \(1, 2, 1\)\)'):
    weights.from_torchvision(
        {**state_dict, 'blocks.4.norm1.weight': np.ones(32, np.float32)},
        'mvit', **TORCHVISION_CASES['v2s'])
  with pytest.raises(ValueError, match=r"valid models: \['mvit'\]"):
    weights.from_torchvision(state_dict, 'vit')


def _param_count(**kwargs):
  model = get_model('mvit', **kwargs)
  size = (224, 224)
  if kwargs.get('num_frames'):
    size = (kwargs['num_frames'], 224, 224)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, *size, 3), jnp.float32))
  return sum(leaf.size for leaf in jax.tree.leaves(shapes['params']))


# The references' counts: timm's mvitv2_tiny/small/base/large (1000
# classes), torchvision's mvit_v2_s and mvit_v1_b (400 classes, 16 frames).
STANDARD = [
    (dict(variant='T', num_classes=1000), 24_173_320),
    (dict(variant='S', num_classes=1000), 34_870_216),
    (dict(variant='B', num_classes=1000), 51_472_744),
    (dict(variant='L', num_classes=1000), 217_992_952),
    (dict(variant='S', num_frames=16, num_classes=400), 34_537_744),
    (dict(variant='v1-B', num_frames=16, num_classes=400), 36_610_672),
]


@pytest.mark.parametrize('kwargs, expected', STANDARD,
                         ids=[f'{k["variant"]}-{k.get("num_frames")}'
                              for k, _ in STANDARD])
def test_standard_sizes_match_references(kwargs, expected):
  # A clip model's counts are for clips of its num_frames at 224 px.
  assert counts.param_count(get_model('mvit', **kwargs), 224) == expected
  if kwargs['variant'] in ('T', 'v1-B'):  # the traced model agrees
    assert _param_count(**kwargs) == expected


def test_timm_export_config_names_the_entry_point(timm_golden):
  model = get_model('mvit', variant='T')
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 224, 224, 3),
                                               jnp.float32))
  rng = np.random.default_rng(0)
  variables = jax.tree.map(
      lambda leaf: rng.normal(size=leaf.shape).astype(np.float32), shapes)
  state = export.export(variables, 'mvit', 'timm', variant='T')
  assert state.config['architecture'] == 'mvitv2_tiny'
  assert state['stages.2.blocks.4.attn.rel_pos_h'].shape == (27, 96)
  back = weights.from_timm(dict(state), 'mvit', variant='T')
  flat = weights.flatten_variables(variables)
  for path, array in weights.flatten_variables(back).items():
    np.testing.assert_array_equal(array, flat[path], err_msg=path)
  # A model no timm entry point builds has no config.
  del timm_golden


def test_options_bf16_remat_and_train(timm_golden):
  kwargs = TIMM_CASES['v2']
  state_dict = _group(timm_golden, 'v2/timm')
  images = _group(timm_golden, 'v2/out')['images']
  variables = weights.from_timm(state_dict, 'mvit', **kwargs)
  reference, _ = _forward(variables, images, **kwargs)
  remat, _ = _forward(variables, images, **dict(kwargs, remat=True))
  np.testing.assert_allclose(remat, reference, atol=1e-6, rtol=0)
  half, aux = _forward(variables, images,
                       **dict(kwargs, dtype=jnp.bfloat16))
  assert aux['pre_logits'].dtype == jnp.float32
  error = np.abs(np.asarray(half, np.float32) - reference).max()
  assert error < BF16_RELATIVE_TOL * np.abs(reference).max()
  # Train mode: drop path and dropout draw from the 'dropout' rng.
  model = get_model('mvit', **dict(kwargs, stochastic_depth=0.5,
                                   dropout=0.5))
  train = jax.jit(lambda seed: model.apply(
      variables, images, train=True,
      rngs={'dropout': jax.random.PRNGKey(seed)})[0])
  trained = [train(seed) for seed in (0, 0, 1)]
  np.testing.assert_array_equal(trained[0], trained[1])
  assert np.abs(trained[0] - trained[2]).max() > 1e-3
  assert np.abs(trained[0] - reference).max() > 1e-3


@pytest.mark.parametrize('kwargs, shape, message', [
    (dict(variant='T'), (1, 4, 64, 64, 3),
     r'takes images \[B, H, W, C\] \(num_frames=None\); got an input of '
     r'shape \(1, 4, 64, 64, 3\)'),
    (dict(variant='S', num_frames=4), (1, 64, 64, 3),
     r'takes clips \[B, T, H, W, C\] \(num_frames=4\)'),
    (dict(variant='S', num_frames=4), (1, 6, 64, 64, 3),
     r'num_frames=4; got clips of 6 frames'),
    (dict(variant='T'), (1, 66, 64, 3),
     r'input size 66x64 \(height, width\) is not divisible by the patch '
     r'embedding strides 4x4'),
    (dict(variant='S', num_frames=3), (1, 3, 64, 64, 3),
     r'input size 3x64x64 \(frames, height, width\) is not divisible by the '
     r'patch embedding strides 2x4x4'),
])
def test_bad_inputs_named(kwargs, shape, message):
  model = get_model('mvit', **kwargs)
  with pytest.raises(ValueError, match=message):
    jax.eval_shape(model.init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def test_patch_embedding_heads_and_image_size_options():
  # The video demo's model (configs/moving_digits.py): a 16x32 canvas,
  # stride 1 in time, heads given per stage.
  model = get_model('mvit', embed_dim=8, depths=(1, 2), num_heads=(1, 2),
                    num_frames=4, image_size=(16, 32),
                    patch_kernel=(3, 7, 7), patch_stride=(1, 4, 4),
                    patch_padding=(1, 3, 3), num_classes=5)
  clips = jax.ShapeDtypeStruct((2, 4, 16, 32, 1), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), clips)
  (logits, aux) = jax.eval_shape(model.apply, variables, clips)
  assert logits.shape == (2, 5)
  assert [f.shape for f in aux['stage_features']] == [(2, 4, 4, 8, 8),
                                                      (2, 4, 2, 4, 16)]
  params = variables['params']
  assert params['patch_embed']['kernel'].shape == (3, 7, 7, 1, 8)
  # Two heads in stage 1: its tables are [rows, head_dim 16 / 2].
  assert params['stage_1']['block_1']['attn']['rel_pos_t'].shape == (7, 8)
  with pytest.raises(ValueError, match=r'built for image_size=\(16, 32\); '
                     r'got inputs of shape \(2, 4, 32, 32, 1\)'):
    jax.eval_shape(model.init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct((2, 4, 32, 32, 1), jnp.float32))
  with pytest.raises(ValueError, match=r'one head count per stage'):
    get_model('mvit', embed_dim=8, depths=(1, 2), num_heads=(1, 2, 4))
  with pytest.raises(ValueError, match=r'patch_stride=\(4, 4\) needs 3 '
                     r'values \(one per grid axis: t, h, w\)'):
    get_model('mvit', variant='S', num_frames=4, patch_stride=(4, 4))


def test_unknown_variants_named():
  with pytest.raises(ValueError, match=r"Unknown MViT variant 'v1-B' for "
                     r"images \(num_frames=None\); valid variants: "
                     r"\['T', 'S', 'B', 'L'\]"):
    get_model('mvit', variant='v1-B')
  with pytest.raises(ValueError, match=r"Unknown MViT variant 'T' for "
                     r"clips \(num_frames set\); valid variants: "
                     r"\['S', 'B', 'v1-B'\]"):
    get_model('mvit', variant='T', num_frames=16)
  with pytest.raises(ValueError, match=r"Unknown MViT pool_type 'max'; "
                     r"valid choices: \['avg', 'cls'\]"):
    get_model('mvit', variant='T', pool_type='max')


def test_relative_index_rescales_the_coarser_axis():
  # 4 queries over 2 keys (keys strided by 2): offsets in query spacing.
  np.testing.assert_array_equal(mvit.relative_index(4, 2),
                                [[2, 0], [3, 1], [4, 2], [5, 3]])
  np.testing.assert_array_equal(mvit.relative_index(2, 2),
                                [[1, 0], [2, 1]])


def test_features_are_the_stage_maps(timm_golden):
  kwargs = TIMM_CASES['v2l']  # a class token, left out of the maps
  variables = weights.from_timm(_group(timm_golden, 'v2l/timm'), 'mvit',
                                **kwargs)
  images = _group(timm_golden, 'v2l/out')['images']
  model = get_model('mvit', **kwargs)
  _, aux = _forward(variables, images, **kwargs)
  maps = features.extract(model, variables, images, layers=[0, -1])
  assert sorted(maps) == ['stage_0', 'stage_2']
  # Eager against jitted: float rounding apart.
  np.testing.assert_allclose(maps['stage_0'], aux['stage_features'][0],
                             atol=1e-5, rtol=0)
  np.testing.assert_allclose(maps['stage_2'], aux['stage_features'][2],
                             atol=1e-5, rtol=0)
  assert maps['stage_2'].shape == (2, 4, 4, 32)


@pytest.mark.parametrize('case', sorted(TIMM_CASES) + sorted(
    TORCHVISION_CASES))
def test_scan_imports_into_the_scanned_layout_and_matches(
    timm_golden, torchvision_golden, case):
  """scan=True: the importers stack each stage's blocks after the first
  (before MViTv1's widening last) into `blocks_from_1`; the logits are the
  unrolled model's, and the export reads the scanned tree back."""
  timm_case = case in TIMM_CASES
  kwargs = (TIMM_CASES if timm_case else TORCHVISION_CASES)[case]
  source = 'timm' if timm_case else 'torchvision'
  arrays = timm_golden if timm_case else torchvision_golden
  state_dict = _group(arrays, f'{case}/{source}')
  outputs = _group(arrays, f'{case}/out')
  inputs = outputs['images' if timm_case else 'clips']
  import_fn = weights.from_timm if timm_case else weights.from_torchvision
  variables = import_fn(state_dict, 'mvit', **dict(kwargs, scan=True))
  runs = get_model('mvit', **dict(kwargs, scan=True)).scan_runs()
  assert any(runs) == (case != 'v1b')  # v1b: no stage has a run
  for stage, run in enumerate(runs):
    names = set(variables['params'][f'stage_{stage}'])
    assert ('blocks_from_1' in names) == (run is not None), (stage, names)
  logits, _ = _forward(variables, inputs, **dict(kwargs, scan=True))
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  flat = weights.flatten_variables(
      {'params': common.unstack_blocks(variables['params'])})
  exported = (weights.timm.to_timm(flat, 'mvit') if timm_case else
              torchvision_weights.to_torchvision(
                  flat, 'mvit', get_model('mvit', **kwargs)))
  for name, array in state_dict.items():
    np.testing.assert_array_equal(exported[name], array, err_msg=name)


@pytest.mark.parametrize('expand_attn, frames', [(True, None), (False, 4)])
def test_scan_runs_the_same_function_on_deep_stages(expand_attn, frames):
  """Runs of three and two alike blocks, before MViTv1's widening last:
  the scanned model on `stack_params` of the unrolled model's parameters
  is the unrolled model, in inference and in training (drop path's rates
  per block, remat), and `unstack_blocks` inverts the stacking."""
  kwargs = dict(_TINY, depths=(1, 4, 3), expand_attn=expand_attn,
                num_frames=frames, stochastic_depth=0.3, class_token=True,
                pool_type='cls')
  shape = (2, 16, 16, 3) if frames is None else (1, 4, 16, 16, 3)
  inputs = jax.random.normal(jax.random.PRNGKey(0), shape)
  unrolled = get_model('mvit', **kwargs)
  scanned = get_model('mvit', **dict(kwargs, scan=True, remat=True))
  runs = scanned.scan_runs()
  assert runs == [None, (1, 4) if expand_attn else (1, 3), (1, 3)]
  params = jax.jit(unrolled.init)(jax.random.PRNGKey(1), inputs)['params']
  stacked = scanned.stack_params(params)
  assert stacked['stage_1']['blocks_from_1']['norm1']['scale'].shape == (
      runs[1][1] - 1, 16)
  assert jax.tree.structure(stacked) == jax.tree.structure(
      jax.eval_shape(scanned.init, jax.random.PRNGKey(1), inputs)['params'])
  jax.tree.map(np.testing.assert_array_equal,
               common.unstack_blocks(stacked), params)

  def pre_logits(model, p, train=False):
    return model.apply({'params': p}, inputs, train=train,
                       rngs={'dropout': jax.random.PRNGKey(2)})[1][
                           'pre_logits']

  def grad(model, p):
    return jax.jit(jax.grad(lambda q: (pre_logits(model, q) ** 2).sum()))(p)

  want = jax.jit(functools.partial(pre_logits, unrolled))(params)
  got = jax.jit(functools.partial(pre_logits, scanned))(stacked)
  assert np.abs(want).max() > 0.1
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
  grads = [grad(unrolled, params), grad(scanned, stacked)]
  # Against the largest gradient (some leaves' own are float32 noise: a
  # key norm's bias shifts every logit of a row alike, gradient 0).
  scale = max(np.abs(leaf).max() for leaf in jax.tree.leaves(grads[0]))
  errors = jax.tree.leaves(jax.tree.map(
      lambda a, b: float(np.abs(a - b).max()),
      scanned.stack_params(grads[0]), grads[1]))
  assert max(errors) < 1e-4 * scale, (max(errors), scale)
  # Training: drop path acts inside the scanned run too.
  trained = jax.jit(functools.partial(pre_logits, scanned, train=True))(
      stacked)
  assert np.abs(trained - want).max() > 1e-3
