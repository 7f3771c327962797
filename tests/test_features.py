"""Feature extraction (`vit_jax.models.features`) against timm's
`forward_intermediates` on the golden models (and transformers' ViTMAE
encoder layers), golden files from make_golden_features.py; representations
by block and stage name, through the few-shot evaluator on digits."""

import functools
import os

import jax
import numpy as np
import pytest

import golden_cases
from vit_jax import models, sharding, weights
from vit_jax.evaluate import fewshot_evaluator
from vit_jax.models import common, features, representation, vit

TOL = 1e-4  # float32, against timm / transformers on the CPU.
# SwinV2's golden runs a head at its logit-scale clamp (100), which
# amplifies float32 rounding 100-fold (tests/test_swinv2.py's TOL).
TOLS = {'swinv2': 3e-4}

# The golden models of the make_golden*.py generators, as (family, how
# their weights load, get_model kwargs).
_SWIN = dict(patch_size=2, width=8, depths=(2, 2, 2, 1),
             num_heads=(2, 2, 4, 8), window_size=4, num_classes=10)
_XCIT = dict(patch_size=8, width=24, depth=2, num_heads=4, mlp_ratio=2.0,
             layer_scale_init=1.0, tokens_norm=True, num_classes=10)
_CONVMIXER = dict(width=16, depth=2, kernel_size=5, patch_size=4,
                  num_classes=10)
_MAE = dict(patch_size=8, width=48, depth=2, mlp_dim=96, num_heads=2,
            decoder_width=32, decoder_depth=2, decoder_num_heads=4,
            decoder_mlp_dim=64)
# make_golden_beit.py's two BEiTs (fc_norm and average pooling; class token
# after the final norm); make_golden_swinv2.py's Swin V2 is _SWIN's size.
_BEIT = dict(patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=4,
             num_classes=10)
CASES = {
    'vit_cls': golden_cases.MODEL_KWARGS['vit_cls'],
    'vit_gap_fcnorm': golden_cases.MODEL_KWARGS['vit_gap_fcnorm'],
    'mixer': golden_cases.MODEL_KWARGS['mixer'],
    'swin': ('swin', _SWIN),
    'xcit': ('xcit', _XCIT),
    'convmixer': ('convmixer', _CONVMIXER),
    'mae': ('mae', _MAE),
    'beit': ('beit', dict(_BEIT, layer_scale_init=0.1)),
    'beit_cls': ('beit', dict(_BEIT, pool_type='cls', fc_norm=False,
                              posemb='learn', qkv_bias=False,
                              layer_scale_init=1e-5)),
    'swinv2': ('swinv2', _SWIN),
    # Five prefix tokens (class token and four registers); a pre-norm.
    'vit_dinov2_reg4': golden_cases.VIT_VARIANTS['vit_dinov2_reg4'],
    'vit_clip_quickgelu': golden_cases.VIT_VARIANTS['vit_clip_quickgelu'],
}
# Cases whose final norm comes after pooling (fc_norm): none over tokens,
# as timm's Identity norm.
POOLED_NORM = ('vit_gap_fcnorm', 'beit')
HIERARCHICAL = ('swin', 'swinv2')


@functools.lru_cache(maxsize=None)
def _case(case):
  """(model, variables, golden features) of a golden case."""
  family, kwargs = CASES[case]
  if family == 'mae':
    path = os.path.join(golden_cases.GOLDEN_DIR, 'mae_hf.npz')
    with np.load(path) as archive:
      state_dict = {k[len('hf/'):]: archive[k] for k in archive.files
                    if k.startswith('hf/')}
    variables = weights.from_hf(state_dict, 'mae', **kwargs)
  else:
    state_dict, outputs = golden_cases.load(case)
    if family == 'beit':  # its tables cannot tell a 3x4 grid from 4x3
      kwargs = dict(kwargs, image_size=outputs['images'].shape[1:3])
    variables = weights.from_timm(state_dict, family, **kwargs)
    kwargs = CASES[case][1]
  path = os.path.join(golden_cases.GOLDEN_DIR, f'features_{case}.npz')
  with np.load(path) as archive:
    golden = dict(archive)
  return models.get_model(family, **kwargs), variables, golden


def _extract(model, variables, images, **kwargs):
  """features.extract, jitted: compiling the tiny models is faster than
  running them op by op."""
  return jax.jit(functools.partial(features.extract, model, **kwargs))(
      variables, images)


def _golden_layers(golden, group):
  return [golden[f'{group}/{i}'] for i in range(
      sum(key.startswith(f'{group}/') for key in golden))]


@pytest.mark.parametrize('case', list(CASES))
def test_layers_match_timms_forward_intermediates(case):
  model, variables, golden = _case(case)
  tol = TOLS.get(case, TOL)
  images = golden['images']
  has_prefix = 'prefix/0' in golden
  plain = _extract(model, variables, images, prefix_tokens=has_prefix,
                   intermediates_only=False)
  normed = _extract(model, variables, images, norm=True)
  expected = _golden_layers(golden, 'layer')
  kind = 'stage' if case in HIERARCHICAL else 'block'
  names = [f'{kind}_{i}' for i in range(len(expected))]
  assert sorted(normed) == names
  for name, want, want_normed in zip(names, expected,
                                     _golden_layers(golden, 'layer_norm')):
    np.testing.assert_allclose(plain[name], want, atol=tol, err_msg=name)
    np.testing.assert_allclose(normed[name], want_normed, atol=tol,
                               err_msg=name)
  np.testing.assert_allclose(plain['final'], golden['final'], atol=tol)
  for i, want in enumerate(_golden_layers(golden, 'prefix')):
    np.testing.assert_allclose(plain[f'{names[i]}/prefix'], want, atol=tol)
  nlc = _golden_layers(golden, 'nlc')
  if nlc:
    tokens = _extract(model, variables, images, layers=[-1],
                      output_fmt='NLC')
    np.testing.assert_allclose(tokens[names[-1]], nlc[-1], atol=tol)
  # Only what the final norm changes differs: a ViT or BEiT with fc_norm
  # and ConvMixer have none, Swin's fits its last stage only.
  unchanged = [np.array_equal(normed[name], plain[name]) for name in names]
  if case in POOLED_NORM + ('convmixer',):
    assert all(unchanged)
  elif case in HIERARCHICAL:
    assert unchanged == [True] * (len(names) - 1) + [False]
  else:
    assert not any(unchanged)


def test_layer_choice_follows_timms_take_indices():
  _, _, golden = _case('vit_cls')
  spec = features.declaration(models.get_model('vit', **CASES['vit_cls'][1]))
  specs = {'all': None, 'last1': 1, 'last3': 3, '0': [0], '-1': [-1],
           '2,-1': [2, -1], '-4,3': [-4, 3]}
  taken = [key for key in golden if key.startswith('take/')]
  assert len(taken) == 2 * len(specs)
  for key in taken:
    _, count, label = key.split('/')
    assert features.resolve(specs[label], int(count), spec) == list(
        golden[key]), key
  # Names, indices and negative indices mix; the keys are the names.
  model, variables, golden = _case('vit_cls')
  chosen = _extract(model, variables, golden['images'],
                    layers=('block_-1', 0))
  assert sorted(chosen) == ['block_0', 'block_1']
  np.testing.assert_allclose(chosen['block_0'], golden['layer/0'], atol=TOL)


def test_scanned_blocks_give_the_unrolled_outputs():
  model, variables, golden = _case('vit_cls')
  scanned = models.get_model('vit', **CASES['vit_cls'][1], scan=True)
  stacked = {'params': common.stack_blocks(variables['params'])}
  assert features.layer_names(scanned, stacked) == ['block_0', 'block_1']
  got = _extract(scanned, stacked, golden['images'], layers=1, norm=True)
  np.testing.assert_allclose(got['block_1'], golden['layer_norm/1'],
                             atol=TOL)


@pytest.mark.parametrize('case', list(CASES))
def test_every_family_declares_modules_it_has(case):
  """FEATURES names modules the model runs: checked with flax's own
  capture, apart from the interceptor `extract` uses."""
  model, variables, golden = _case(case)
  view, select = models.classifier_view(CASES[case][0], model)
  spec = features.declaration(view)
  params = select(variables['params'])
  _, state = jax.eval_shape(functools.partial(
      view.apply, capture_intermediates=True, mutable=['intermediates']),
                            {**variables, 'params': params}, golden['images'])
  called = set()

  def walk(tree, prefix):
    for name, value in tree.items():
      if name == '__call__':
        called.add('/'.join(prefix))
      else:
        walk(value, prefix + [name])
  walk(state['intermediates'], [])
  depth = len(_golden_layers(golden, 'layer'))
  declared = [spec['layers'].format(i) for i in range(depth)]
  declared += [spec[key] for key in ('grid', 'norm') if spec[key]]
  if case in POOLED_NORM:  # its norm comes after pooling: none here
    declared.remove('encoder_norm')
  assert set(declared) <= called, set(declared) - called
  assert spec['layers'].format(depth) not in called


def test_every_family_declares_its_layers():
  """Directly or, an MAE, through the ViT its encoder is read as."""
  for family in models.FAMILIES:
    model = models.get_model(family.NAME, variant=family.ZOO[0])
    view, _ = models.classifier_view(family.NAME, model)
    spec = features.declaration(view)
    assert spec is not None and '{}' in spec['layers'], family.NAME


@pytest.mark.parametrize('layers, kwargs, pattern', [
    ('blok_1', {}, r"Unknown layer 'blok_1' of ViT; valid: block_0 \.\. "
     r'block_1, or block_-2 \.\. block_-1 counted from the end'),
    ('stage_0', {}, r"Unknown layer 'stage_0' of ViT; valid: block_0"),
    (['block_2'], {}, r"Layer 'block_2' of ViT is out of range; valid: "
     r'block_0 \.\. block_1'),
    ([-3], {}, r'Layer -3 of ViT is out of range'),
    (0, {}, r'layers=0 asks for the last 0 layers of ViT, which has 2 '
     r'blocks: give 1 \.\. 2'),
    ([1.0], {}, r'Layers are indices or names, got 1.0'),
    ([], {}, r'layers must be None, a count, a name or a non-empty list'),
    (None, {'output_fmt': 'NCHW'},
     r"Unknown output_fmt 'NCHW'; valid choices: \['NHWC', 'NLC'\]"),
])
def test_bad_layers_name_the_valid_ones(layers, kwargs, pattern):
  model, variables, golden = _case('vit_cls')
  with pytest.raises(ValueError, match=pattern):
    features.extract(model, variables, golden['images'], layers, **kwargs)


def test_a_bad_declaration_is_named(monkeypatch):
  model = models.get_model('vit', **CASES['vit_cls'][1])
  monkeypatch.setattr(vit, 'FEATURES', dict(layers='encoder/block_{}',
                                            grids='patch_embed'))
  with pytest.raises(ValueError, match=r"unknown fields \['grids'\].*"
                     r"fields: \['layers', 'grid', 'norm', "
                     r"'norm_last_only'\]"):
    features.declaration(model)


def test_maps_have_no_prefix_tokens():
  model, variables, golden = _case('convmixer')
  with pytest.raises(ValueError, match=r'prefix_tokens=True: the blocks of '
                     r'ConvMixer are feature maps'):
    features.extract(model, variables, golden['images'], prefix_tokens=True)


# ------------------------------------------------------ representations --


@pytest.mark.parametrize('case, layer, group, index', [
    ('vit_cls', 'block_0', 'layer', 0),
    ('vit_cls', 'block_-1_norm', 'layer_norm', 1),
    ('swin', 'stage_3_norm', 'layer_norm', 3),
    ('mae', 'block_1', 'layer', 1),
    ('beit_cls', 'block_1_norm', 'layer_norm', 1),
])
def test_representation_by_name_is_the_pooled_layer(case, layer, group,
                                                    index):
  model, variables, golden = _case(case)
  view, select = models.classifier_view(CASES[case][0], model)
  features_fn = jax.jit(representation.representation_fn(view, layer, select))
  got = features_fn(variables, golden['images'])
  want = golden[f'{group}/{index}'].mean(axis=(1, 2))  # prefix tokens out
  np.testing.assert_allclose(got, want, atol=TOL)


def test_representation_of_a_register_model_averages_patches_only():
  """DINOv2 with registers: 'block_1' is the mean of the 16 patch tokens,
  neither the class token nor the 4 registers in it."""
  model, variables, golden = _case('vit_dinov2_reg4')
  got = jax.jit(representation.representation_fn(model, 'block_1'))(
      variables, golden['images'])
  patches, prefix = golden['nlc/1'], golden['prefix/1']  # timm's split
  assert patches.shape[1:] == (16, 32) and prefix.shape[1:] == (5, 32)
  np.testing.assert_allclose(got, patches.mean(axis=1), atol=TOL)
  every_token = np.concatenate([prefix, patches], axis=1).mean(axis=1)
  assert np.abs(got - every_token).max() > 100 * TOL


def test_representation_names_list_blocks_and_their_norms():
  model = models.get_model('vit', **CASES['vit_cls'][1])
  names = representation.layer_names(model, (32, 32, 3))
  assert names[:2] == ['encoded', 'pre_logits']
  assert names[2:6] == ['block_0', 'block_1', 'block_0_norm', 'block_1_norm']
  _, variables, golden = _case('vit_cls')
  with pytest.raises(ValueError, match=r"Layer 'block_5' of ViT is out of "
                     r'range; valid: block_0 \.\. block_1'):
    representation.representation_fn(model, 'block_5_norm')(
        variables, golden['images'])
  scanned = models.get_model('vit', **CASES['vit_cls'][1], scan=True)
  stacked = {'params': common.stack_blocks(variables['params'])}
  with pytest.raises(ValueError, match=r"'blok_1' is not a block or stage, "
                     r"an aux key or a module path of ViT; valid: "
                     r"\['encoded', 'pre_logits', 'block_0', .*name them "
                     r'block_N'):
    representation.representation_fn(scanned, 'blok_1')(
        stacked, golden['images'])


def test_fewshot_on_a_block_of_a_digits_model(data_dir):
  model = models.get_model('vit', patch_size=2, width=32, depth=2, mlp_dim=64,
                           num_heads=2, num_classes=10)
  variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1)))
  evaluator = fewshot_evaluator.FewShotEvaluator(
      representation.representation_fn(model, 'block_1'),
      {'digits': {'name': 'digits', 'pp': 'value_range(-1, 1)'}},
      sharding.make_mesh(-1, 1), shots=(5,), seeds=(0,), l2_reg=1.0,
      batch_size=512, data_dir=data_dir)
  metrics = evaluator.run(variables)
  assert sorted(metrics) == ['fewshot/digits/5shot',
                             'fewshot/digits/5shot_std']
  # Random weights, yet the block's average token separates digits well
  # above chance (0.1).
  assert 0.3 < metrics['fewshot/digits/5shot'] <= 1.0
