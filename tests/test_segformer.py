"""SegFormer: numerics against transformers, the upsampling against torch's
interpolate, import and export of transformers' layout, counts and errors.

The golden file comes from tests/support/make_golden_segformer.py: a tiny
SegformerForSemanticSegmentation with random weights and random BatchNorm
running averages, on 64x48 images (stage maps 16x12, 8x6, 4x3, 2x2).
"""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import golden_cases
from vit_jax import export
from vit_jax import weights
from vit_jax.models import counts
from vit_jax.models import features
from vit_jax.models import get_model
from vit_jax.models import representation
from vit_jax.models import segformer

TOL = 1e-4  # float32, against transformers on the CPU.
KWARGS = dict(widths=(8, 16, 16, 24), depths=(1, 2, 1, 1),
              num_heads=(1, 2, 2, 3), decoder_width=16, num_classes=5)


def _golden():
  with np.load(f'{golden_cases.GOLDEN_DIR}/segformer_hf.npz') as archive:
    groups = {}
    for key in archive.files:
      group, _, name = key.partition('/')
      groups.setdefault(group, {})[name] = archive[key]
  return groups


@pytest.fixture(scope='module')
def golden():
  groups = _golden()
  variables = weights.from_hf(groups['hub'], 'segformer', **KWARGS)
  return groups, variables


def _forward(variables, images):
  return golden_cases.forward('segformer', KWARGS, variables, images)


def test_from_hf_matches_transformers(golden):
  groups, variables = golden
  outputs = groups['out']
  np.testing.assert_array_equal(
      variables['batch_stats']['decoder']['fuse_norm']['var'],
      groups['hub']['decode_head.batch_norm.running_var'])
  logits, aux = _forward(variables, outputs['images'])
  assert logits.shape == (2, 16, 12, 5)
  assert np.abs(outputs['logits']).max() > 0.5  # not a trivial comparison
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  for index, stage_map in enumerate(aux['stage_features']):
    np.testing.assert_allclose(stage_map, outputs[f'stage_{index}'],
                               atol=TOL, rtol=0)
  np.testing.assert_allclose(aux['pre_logits'],
                             outputs['stage_3'].mean(axis=(1, 2)), atol=TOL)
  upsampled = segformer.upsample_logits(logits[:1], (64, 48))
  np.testing.assert_allclose(upsampled, outputs['upsampled'], atol=TOL,
                             rtol=0)


def test_resize_is_torchs_bilinear_interpolation():
  resize = _golden()['resize']
  got = segformer.resize_bilinear(resize['maps'], (13, 11))
  # Equal up to float32 rounding (torch sums the two taps in another order).
  np.testing.assert_allclose(got, resize['out'], atol=1e-5, rtol=0)
  # Not the other convention: corner-aligned sampling differs.
  assert np.abs(resize['out'][:, 1:-1, 1:-1]
                - _align_corners(resize['maps'], (13, 11))[:, 1:-1, 1:-1]
                ).max() > 0.01


def _align_corners(maps, size):
  for axis, out_size in ((1, size[0]), (2, size[1])):
    source = np.linspace(0, maps.shape[axis] - 1, out_size)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, maps.shape[axis] - 1)
    shape = [1] * maps.ndim
    shape[axis] = out_size
    weight = (source - low).reshape(shape)
    maps = (np.take(maps, low, axis) * (1 - weight)
            + np.take(maps, high, axis) * weight)
  return maps


def test_features_are_transformers_hidden_states(golden):
  groups, variables = golden
  outputs = groups['out']
  model = get_model('segformer', **KWARGS)
  extract = jax.jit(functools.partial(features.extract, model,
                                      layers=(0, -1), norm=True))
  maps = extract(variables, outputs['images'])
  assert sorted(maps) == ['stage_0', 'stage_3']
  for name, value in maps.items():
    np.testing.assert_allclose(value, outputs[name], atol=TOL, rtol=0)


@pytest.mark.parametrize('layer, expected', [
    ('pre_logits', 'stage_3'), ('stage_1', 'stage_1'), ('stage_-1',
                                                        'stage_3')])
def test_few_shot_representations(golden, layer, expected):
  """What few-shot evaluation reads: the last stage's average, or any
  stage's by name, as transformers' hidden states averaged."""
  groups, variables = golden
  outputs = groups['out']
  features_fn = jax.jit(representation.representation_fn(
      get_model('segformer', **KWARGS), layer))
  np.testing.assert_allclose(features_fn(variables, outputs['images']),
                             outputs[expected].mean(axis=(1, 2)), atol=TOL)


def test_bfloat16_compute_close_to_float32(golden):
  groups, variables = golden
  images = groups['out']['images']
  f32, _ = _forward(variables, images)
  bf16, _ = golden_cases.forward('segformer', KWARGS, variables, images,
                                 dtype=jnp.bfloat16)
  assert bf16.dtype == jnp.float32
  assert 0 < np.abs(bf16 - f32).max() <= 0.05 * np.abs(f32).max()


def test_transformers_5_module_names_import_the_same(golden):
  groups, variables = golden
  names = groups['names']
  renamed = {module.decode(): groups['hub'][hub.decode()]
             for hub, module in zip(names['hub'], names['module'])}
  assert 'segformer.stages.1.blocks.1.attention.q_proj.weight' in renamed
  again = weights.from_hf(renamed, 'segformer', **KWARGS)
  jax.tree.map(np.testing.assert_array_equal, again, variables)


def test_export_round_trip_is_exact(golden, tmp_path):
  groups, variables = golden
  state = export.export(variables, 'segformer', 'hf',
                        label_names=['a', 'b', 'c', 'd', 'e'], **KWARGS)
  hub = groups['hub']
  assert sorted(state) == sorted(hub)
  for name, value in hub.items():
    np.testing.assert_array_equal(state[name], value, err_msg=name)
    assert state[name].dtype == value.dtype, name
  written = export.save(state, str(tmp_path / 'hf'), 'hf')
  config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
  assert config['model_type'] == 'segformer'
  assert config['hidden_sizes'] == [8, 16, 16, 24]
  assert config['num_attention_heads'] == [1, 2, 2, 3]
  assert config['mlp_ratios'] == [4] * 4  # integers, as transformers checks
  assert all(type(ratio) is int for ratio in config['mlp_ratios'])
  assert config['id2label']['4'] == 'e' and config['num_labels'] == 5
  processor = json.loads(
      (tmp_path / 'hf' / 'preprocessor_config.json').read_text())
  assert processor['image_processor_type'] == 'SegformerImageProcessor'
  assert len(written) == 3
  loaded = safetensors_numpy.load_file(str(tmp_path / 'hf' /
                                           'model.safetensors'))
  assert {name: value.shape for name, value in loaded.items()} == {
      name: value.shape for name, value in hub.items()}  # scalars stay 0-d
  back = weights.from_hf(loaded, 'segformer', **KWARGS)
  jax.tree.map(np.testing.assert_array_equal, back, variables)


# transformers 5.24's SegformerForSemanticSegmentation at 150 classes, and
# its SegformerModel (the encoders alone, MiT-B0 .. B5).
COUNTS = {'B0': (3_752_694, 3_319_392), 'B1': (13_715_798, 13_151_424),
          'B2': (27_461_974, 24_196_288), 'B3': (47_337_814, 44_072_128),
          'B4': (64_108_374, 60_842_688), 'B5': (84_708_694, 81_443_008)}


def _decoder_params(widths, decoder, classes):
  """The all-MLP decoder's parameters: a linear layer per stage, the fuse
  kernel, BatchNorm's scale and bias, the 1x1 classifier."""
  return (sum(width * decoder + decoder for width in widths)
          + len(widths) * decoder * decoder + 2 * decoder
          + decoder * classes + classes)


@pytest.mark.parametrize('variant', sorted(COUNTS))
def test_parameter_counts_are_the_references(variant):
  model = get_model('segformer', variant=variant, num_classes=150)
  total, encoder = COUNTS[variant]
  assert counts.param_count(model, 512) == total
  decoder = _decoder_params(model.widths, model.decoder_width, 150)
  assert total - decoder == encoder
  assert model.decoder_width == (256 if variant in ('B0', 'B1') else 768)


def test_flops_grow_with_the_image_and_the_reduction():
  """Keys and values of stage 0 are (h / 8)(w / 8): without the reduction
  attention costs more; FLOPs are exact elsewhere (tests/test_counts.py)."""
  model = get_model('segformer', variant='B0')
  reduced = counts.forward_flops(model, 512)
  assert counts.forward_flops(model, 1024) > 4 * reduced
  full = counts.forward_flops(model.clone(sr_ratios=(1, 1, 1, 1)), 512)
  assert full > 5 * reduced


@pytest.mark.parametrize('variant, gmacs', [
    ('B0', 8.4), ('B1', 15.9), ('B2', 62.4), ('B3', 79.0), ('B4', 95.7)])
def test_flops_are_the_papers(variant, gmacs):
  """The paper's Table 7 (ADE20K, 512 px; multiply-adds)."""
  model = get_model('segformer', variant=variant, num_classes=150)
  assert counts.forward_flops(model, 512) / 2 / 1e9 == pytest.approx(
      gmacs, rel=0.01)


def test_train_mode_updates_the_decoder_statistics(golden):
  groups, variables = golden
  (logits, _), updates = golden_cases.forward(
      'segformer', KWARGS, variables, groups['out']['images'], train=True)
  assert logits.shape == (2, 16, 12, 5)
  before = variables['batch_stats']['decoder']['fuse_norm']['mean']
  after = updates['batch_stats']['decoder']['fuse_norm']['mean']
  assert np.abs(after - before).max() > 1e-3


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(variant='B6'), r"Unknown SegFormer variant 'B6'; valid variants: "
     r"\['B0', 'B1', 'B2', 'B3', 'B4', 'B5'\]"),
    (dict(variant='B0', depths=(2, 2, 2)), r'one entry per stage in each of '
     r'widths, depths, num_heads and sr_ratios'),
    (dict(variant='B0', num_heads=(1, 3, 5, 8)), r'stage 1 width 64 is not '
     r'divisible by its 3 heads'),
    (dict(variant='B0', sr_ratios=(8, 4, 2, 0)), r'stage 3 sr_ratio must be '
     r'>= 1, got 0'),
    (dict(variant='B0', attention_impl='flash'),
     r"Unknown attention_impl 'flash'"),
])
def test_bad_options_name_the_valid_ones(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    get_model('segformer', **kwargs)


def test_a_checkpoint_of_other_sizes_is_named(golden):
  groups, _ = golden
  with pytest.raises(ValueError, match=r'25 shape mismatches.*'
                     r'decode_head\.linear_c\.3\.proj\.weight: checkpoint '
                     r'\(16, 24\) vs model \(16, 30\)'):
    weights.from_hf(groups['hub'], 'segformer',
                    **dict(KWARGS, widths=(8, 16, 16, 30)))
