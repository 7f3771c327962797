"""timm's ViT variants: DINOv2 (LayerScale, registers, position rows for
the patches only), CLIP image towers (pre-norm, quick GELU, LayerNorm eps
1e-5) and DeiT III, against timm's own outputs (golden files from
tests/support/make_golden_vit_variants.py), exported back, named and
counted."""

import numpy as np
import pytest

import golden_cases
from vit_jax import export
from vit_jax import models
from vit_jax import pretrained
from vit_jax import weights
from vit_jax.models import counts
from vit_jax.models import get_model
from vit_jax.weights import core
from vit_jax.weights import families

TOL = 1e-4  # float32, against timm on the CPU.
CASES = golden_cases.VIT_VARIANTS


def _imported(case, **overrides):
  family, kwargs = CASES[case]
  kwargs = dict(kwargs, **overrides)
  state_dict, outputs = golden_cases.load(case)
  return family, kwargs, state_dict, outputs, weights.from_timm(
      state_dict, family, **kwargs)


@pytest.mark.parametrize('case', sorted(CASES))
def test_from_timm_matches_timm_and_exports_back(case):
  family, kwargs, state_dict, outputs, variables = _imported(case)
  logits, aux = golden_cases.forward(family, kwargs, variables,
                                     outputs['images'])
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'], outputs['pre_logits'],
                             atol=TOL, rtol=0)
  # Export writes timm's state dict back, name for name, bit for bit.
  exported = export.export(variables, family, 'timm', **kwargs)
  assert sorted(exported) == sorted(state_dict)
  for name, value in state_dict.items():
    np.testing.assert_array_equal(exported[name], value, err_msg=name)


def test_scanned_blocks_match_timm():
  family, kwargs, _, outputs, variables = _imported('vit_dinov2_reg4',
                                                    scan=True)
  logits, _ = golden_cases.forward(family, kwargs, variables,
                                   outputs['images'])
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)


@pytest.mark.parametrize('case,side', [('vit_dinov2', 48),
                                       ('vit_dinov2_reg4', 24)])
def test_bicubic_posemb_resampling_matches_timm(case, side):
  """timm's resampling of a checkpoint loaded at another size (bicubic,
  antialiased): upsampling with a class-token row, downsampling without
  prefix rows (registers)."""
  family, kwargs = CASES[case]
  state_dict, outputs = golden_cases.load(case)
  variables = weights.from_timm(state_dict, family, image_size=side,
                                posemb_interpolation='bicubic', **kwargs)
  pos_embed = variables['params']['pos_embed']
  assert pos_embed.shape == outputs[f'pos_embed_{side}'].shape
  np.testing.assert_allclose(pos_embed, outputs[f'pos_embed_{side}'],
                             atol=1e-5, rtol=0)
  logits, _ = golden_cases.forward(family, kwargs, variables,
                                   outputs[f'images_{side}'])
  np.testing.assert_allclose(logits, outputs[f'logits_{side}'], atol=TOL,
                             rtol=0)
  # Bilinear, the default, differs: the choice is the one applied.
  bilinear = weights.from_timm(state_dict, family, image_size=side,
                               **kwargs)['params']['pos_embed']
  assert np.abs(bilinear - outputs[f'pos_embed_{side}']).max() > 1e-3
  with pytest.raises(ValueError, match=r"Unknown posemb interpolation "
                     r"'nearest'; valid choices: \['bilinear', 'bicubic'\]"):
    weights.from_timm(state_dict, family, image_size=side,
                      posemb_interpolation='nearest', **kwargs)


@pytest.mark.parametrize('case', ['vit_dinov2', 'vit_dinov2_reg4',
                                  'vit_deit3'])
def test_checkpoint_resolution_read_past_prefix_rows(case):
  family, kwargs = CASES[case]
  state_dict, _ = golden_cases.load(case)
  model = get_model(family, **kwargs)
  flat = weights.flatten(weights.from_timm(state_dict, family,
                                           **kwargs)['params'])
  assert models.checkpoint_image_size(family, model, flat) == (32, 32)


@pytest.mark.parametrize('case', sorted(set(CASES) - {'vit_dinov2_swiglu'}))
def test_exported_config_reads_back_as_the_same_model(case):
  """The config.json export writes names timm's entry point and the
  model_args that say every option; `pretrained` reads it back as the
  same get_model kwargs."""
  family, kwargs, _, _, variables = _imported(case)
  config = export.export(variables, family, 'timm', **kwargs).config
  got_family, got_kwargs, size = pretrained.resolve_config(config)
  assert (got_family, size) == (family, (32, 32))
  assert get_model(got_family, **got_kwargs) == get_model(family, **kwargs)


@pytest.mark.parametrize('name', [
    'vit_base_patch14_dinov2', 'vit_large_patch14_reg4_dinov2',
    'vit_base_patch16_clip_224', 'vit_large_patch14_clip_quickgelu_336',
    'deit3_medium_patch16_224', 'vit_giant_patch14_reg4_dinov2'])
def test_export_names_timms_entry_point(name):
  """A model that is one of timm's named architectures is exported under
  that name; its options in model_args agree with the entry point's."""
  architecture = pretrained.SUPPORTED[name]
  model = get_model('vit', **architecture.model_kwargs)
  size = (architecture.image_size,) * 2
  timm_model = families.module('vit').timm_model(model, size)
  assert timm_model.architecture == name
  got_family, got_kwargs, got_size = pretrained.resolve_config(
      {'architecture': timm_model.architecture, 'num_classes': 1000,
       'model_args': timm_model.model_args,
       'pretrained_cfg': {'input_size': [3, *size]}})
  assert got_size == size
  assert get_model(got_family, **got_kwargs) == model


def test_swiglu_is_exported_with_a_config_only_as_dinov2_giant():
  """timm picks the SwiGLU MLP by its entry point (mlp_layer), which
  config.json cannot say: other SwiGLU ViTs get the state dict alone."""
  family, kwargs, _, _, variables = _imported('vit_dinov2_swiglu')
  assert export.export(variables, family, 'timm', **kwargs).config is None
  reason = families.module('vit').timm_model(get_model(family, **kwargs),
                                             (32, 32)).reason
  assert 'SwiGLU MLP only in its DINOv2 giant entry points' in reason


def test_quick_gelu_clip_without_a_named_size_keeps_its_options():
  model = get_model('vit', patch_size=8, width=48, depth=3, mlp_dim=96,
                    num_heads=4, pre_norm=True, layer_norm_eps=1e-5,
                    activation='quick_gelu')
  timm_model = families.module('vit').timm_model(model, (32, 32))
  # LayerNorm eps 1e-5 is the CLIP entry point's, which model_args cannot
  # change; its pre-norm is already there.
  assert timm_model.architecture == 'vit_base_patch16_clip_224'
  assert timm_model.model_args['act_layer'] == 'quick_gelu'
  # eps 1e-6 without pre-norm: timm's plain ViT, pre_norm left out.
  plain = model.clone(layer_norm_eps=1e-6, pre_norm=False)
  timm_model = families.module('vit').timm_model(plain, (32, 32))
  assert timm_model.architecture == 'vit_base_patch16_224'
  assert 'pre_norm' not in timm_model.model_args
  # eps 1e-5 without pre-norm: the CLIP entry point, told pre_norm=False;
  # its GELU is the entry point's own.
  timm_model = families.module('vit').timm_model(
      model.clone(pre_norm=False, activation='gelu'), (32, 32))
  assert timm_model.model_args['pre_norm'] is False
  assert 'act_layer' not in timm_model.model_args
  # The quick-GELU entry point's own size, GELU: timm's act_layer said.
  quick = pretrained.SUPPORTED['vit_base_patch16_clip_quickgelu_224']
  timm_model = families.module('vit').timm_model(
      get_model('vit', **quick.model_kwargs).clone(activation='gelu'),
      (224, 224))
  assert timm_model.architecture == 'vit_base_patch16_clip_224'
  assert 'act_layer' not in timm_model.model_args
  other = families.module('vit').timm_model(
      model.clone(layer_norm_eps=1e-5 / 2), (32, 32))
  assert other.architecture is None and 'eps' in other.reason


def test_timm_model_args_of_the_options():
  kwargs = pretrained.SUPPORTED['vit_base_patch16_224'].model_kwargs
  translate = pretrained._translate_model_args  # pylint: disable=protected-access
  assert translate('vit', kwargs, dict(
      init_values=1e-6, reg_tokens=2, no_embed_class=True, pre_norm=True,
      act_layer='quick_gelu')) == dict(
          variant='B/16', pool_type='cls', layer_scale_init=1e-6,
          num_registers=2, posemb_prefix=False, pre_norm=True,
          activation='quick_gelu')
  with pytest.raises(ValueError, match=r"act_layer='relu' has no "
                     r"counterpart in ViT here; supported: \[None, 'gelu', "
                     r"'quick_gelu'\]"):
    translate('vit', kwargs, dict(act_layer='relu'))
  with pytest.raises(ValueError, match=r"qk_norm=True has no counterpart"):
    translate('vit', kwargs, dict(qk_norm=True))


def test_bad_options_are_named():
  base = dict(patch_size=8, width=32, depth=1, mlp_dim=64, num_heads=4)
  with pytest.raises(ValueError, match=r"Unknown activation 'relu'; valid "
                     r"choices: \['gelu', 'quick_gelu', 'swiglu'\]"):
    get_model('vit', **base, activation='relu')
  with pytest.raises(ValueError, match=r"it needs an even mlp_dim and a "
                     r"pool type other than 'map' .*got mlp_dim=63, "
                     r"pool_type='cls'"):
    get_model('vit', **dict(base, mlp_dim=63), activation='swiglu')
  with pytest.raises(ValueError, match=r"got mlp_dim=64, pool_type='map'"):
    get_model('vit', **base, activation='swiglu', pool_type='map')
  with pytest.raises(ValueError, match=r'num_registers must be an integer '
                     r'>= 0, got -1'):
    get_model('vit', **base, num_registers=-1)


# Parameter counts of timm's entry points, timm 1.0.31's
# `sum(p.numel() for p in timm.create_model(name).parameters())` with a
# 1000-class head.
@pytest.mark.parametrize('name,expected', [
    ('vit_small_patch14_dinov2', 22_441_192),
    ('vit_base_patch14_reg4_dinov2', 87_351_016),
    ('vit_large_patch14_dinov2', 305_392_616),
    ('vit_giant_patch14_reg4_dinov2', 1_138_020_840),
    ('vit_base_patch32_clip_224', 88_225_000),
    ('vit_base_patch16_clip_quickgelu_224', 86_568_424),
    ('vit_large_patch14_clip_336', 304_532_456),
    ('vit_gigantic_patch14_clip_224', 1_844_442_344),
    ('deit3_small_patch16_224', 22_059_496),
    ('deit3_base_patch16_384', 86_877_160),
    ('deit3_huge_patch14_224', 632_126_440),
])
def test_param_counts_equal_timms(name, expected):
  architecture = pretrained.SUPPORTED[name]
  model = get_model('vit', **dict(architecture.model_kwargs,
                                  num_classes=1000))
  assert counts.param_count(model, architecture.image_size) == expected


def test_listing_names_the_variants():
  table = pretrained.supported_table()
  for name in ('vit_base_patch14_reg4_dinov2', 'vit_base_patch16_clip_224',
               'vit_base_patch16_clip_quickgelu_224',
               'deit3_base_patch16_224'):
    assert any(line.split()[0] == name for line in table.splitlines()), name
  line = next(line for line in table.splitlines()
              if line.split()[0] == 'vit_base_patch14_reg4_dinov2')
  assert 'num_registers=4' in line and '518 px' in line
  assert core.POSEMB_INTERPOLATIONS == ('bilinear', 'bicubic')


def test_hf_export_says_the_activation_and_refuses_what_it_lacks():
  family, kwargs, _, _, variables = _imported('vit_deit3')
  with pytest.raises(ValueError, match=r'this one has posemb_prefix=False '
                     r'\(it needs a class-token position row\)'):
    export.export(variables, family, 'hf', **kwargs)
  # transformers' ViT runs the quick GELU by name ('quick_gelu').
  model = get_model('vit', **dict(kwargs, layer_scale_init=None,
                                  posemb_prefix=True,
                                  activation='quick_gelu'))
  shapes = {path: np.zeros(shape, np.float32) for path, shape in
            core.expected_shapes(model, (32, 32), 3).items()}
  exported = export.export(weights.unflatten_variables(shapes), family, 'hf',
                           **dict(kwargs, layer_scale_init=None,
                                  posemb_prefix=True,
                                  activation='quick_gelu'))
  assert exported.config['hidden_act'] == 'quick_gelu'
