"""Analytic parameter and FLOP counts (vit_jax/models/counts.py) and the zoo
listing built on them (`python -m vit_jax.models`).

The references: `jax.eval_shape` for parameters; the traced program
(jaxpr) for the matrix products and convolutions, counted as XLA counts
them, which the analytic count must equal exactly; XLA's cost analysis
for the total, which adds elementwise work; published figures at
standard sizes.
"""

import math
import sys
import types
from unittest import mock

import flax.linen as nn
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import pytest

from vit_jax.models import __main__ as zoo
from vit_jax.models import common
from vit_jax.models import counts
from vit_jax.models import get_model
from vit_jax.models import unetr

# ----------------------------------------------------------------------------
# The reference count of the traced program.


def _conv_flops(params, lhs_shape, rhs_shape):
  """2 x multiply-adds of a convolution, taps on padding left out (XLA)."""
  numbers = params['dimension_numbers']
  assert set(params['rhs_dilation']) == {1}, params
  assert params['batch_group_count'] == 1, params
  taps = 1
  for axis, padding, stride, dilation in zip(
      range(2, len(lhs_shape)), params['padding'], params['window_strides'],
      params['lhs_dilation']):
    size = lhs_shape[numbers.lhs_spec[axis]]
    kernel = rhs_shape[numbers.rhs_spec[axis]]
    if dilation == 1:
      taps *= counts.valid_taps(size, kernel, stride, tuple(padding))
    else:  # a transposed convolution: taps on the dilation's holes left out
      taps *= _dilated_taps(size, kernel, stride, tuple(padding), dilation)
  batch = lhs_shape[numbers.lhs_spec[0]]
  out_features = rhs_shape[numbers.rhs_spec[0]]
  in_per_group = rhs_shape[numbers.rhs_spec[1]]
  return 2 * batch * out_features * in_per_group * taps


def _dilated_taps(size, kernel, stride, padding, dilation):
  """Kernel taps on the input's own values (not its padding, not the
  zeros `dilation` puts between them), summed over the outputs."""
  low, high = padding
  dilated = (size - 1) * dilation + 1
  outputs = (dilated + low + high - kernel) // stride + 1
  return sum(1 for o in range(outputs) for k in range(kernel)
             if 0 <= o * stride + k - low < dilated
             and (o * stride + k - low) % dilation == 0)


def _jaxpr_matmul_flops(jaxpr):
  total = 0
  for eqn in jaxpr.eqns:
    shapes = [var.aval.shape for var in eqn.invars]
    if eqn.primitive.name == 'dot_general':
      (_, rhs_contract), (_, rhs_batch) = eqn.params['dimension_numbers']
      free = [size for axis, size in enumerate(shapes[1])
              if axis not in rhs_contract and axis not in rhs_batch]
      total += 2 * math.prod(shapes[0]) * math.prod(free)
    elif eqn.primitive.name == 'conv_general_dilated':
      total += _conv_flops(eqn.params, *shapes)
    repeats = eqn.params['length'] if eqn.primitive.name == 'scan' else 1
    for sub in jax_core.jaxprs_in_params(eqn.params):
      total += repeats * _jaxpr_matmul_flops(sub)
  return total


def _abstract(model, size):
  height, width = (size, size) if isinstance(size, int) else size
  shape = (1, height, width, 3)
  if isinstance(model, unetr.UNETR):  # its own volume and channels
    shape = (1, *model.volume, model.in_channels)
  if getattr(model, 'num_frames', None):  # a clip of its frames
    shape = (1, model.num_frames, height, width, 3)
  images = jax.ShapeDtypeStruct(shape, jnp.float32)
  return jax.eval_shape(model.init, jax.random.PRNGKey(0), images), images


def traced_matmul_flops(model, size):
  """Matrix-product and convolution FLOPs of the traced forward pass, its
  depthwise convolutions traced as XLA's grouped convolution (on CPUs they
  run as shifted multiply-adds: the same products, not a convolution the
  trace would count)."""
  variables, images = _abstract(model, size)
  with mock.patch.object(common, 'depthwise_backend',
                         lambda kernel_size: 'conv'):
    jaxpr = jax.make_jaxpr(lambda v, x: model.apply(v, x))(variables,
                                                           images)
  return _jaxpr_matmul_flops(jaxpr.jaxpr)


def eval_shape_params(model, size):
  variables, _ = _abstract(model, size)
  return sum(math.prod(leaf.shape)
             for leaf in jax.tree.leaves(variables['params']))


def _xla_flops(function, *shapes):
  args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
  return jax.jit(function).lower(*args).cost_analysis()['flops']


def _conv(stride, padding, groups=1):
  return lambda images, kernel: jax.lax.conv_general_dilated(
      images, kernel, (stride, stride), padding,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
      feature_group_count=groups)


@pytest.mark.parametrize('function,shapes', [
    (lambda a, b: jnp.einsum('bnhi,bnhj->bhij', a, b),
     [(2, 10, 3, 8), (2, 10, 3, 8)]),
    (lambda a, b: a @ b, [(5, 7, 16), (16, 9)]),
    (_conv(1, 'SAME'), [(1, 9, 7, 3), (5, 5, 3, 4)]),
    (_conv(1, 'SAME'), [(1, 8, 8, 3), (4, 4, 3, 2)]),
    (_conv(2, ((1, 1), (1, 1))), [(2, 9, 8, 3), (3, 3, 3, 4)]),
    (_conv(4, 'VALID'), [(1, 16, 16, 3), (4, 4, 3, 6)]),
    (_conv(1, ((1, 1), (1, 1)), groups=6), [(1, 5, 5, 6), (3, 3, 1, 6)]),
    # UNETR's upsampling: a transposed convolution, on a dilated input.
    (lambda volumes, kernel: jax.lax.conv_transpose(
        volumes, kernel, (2, 2, 2), 'VALID', transpose_kernel=True,
        dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC')),
     [(1, 3, 4, 5, 6), (2, 2, 2, 7, 6)]),
])
def test_traced_count_is_xlas_count_of_products(function, shapes):
  """The reference agrees exactly with XLA on programs of products only."""
  args = [jax.ShapeDtypeStruct(shape, jnp.float32) for shape in shapes]
  jaxpr = jax.make_jaxpr(function)(*args)
  assert _jaxpr_matmul_flops(jaxpr.jaxpr) == _xla_flops(function, *shapes)


# Every family and option at small sizes: parameters and FLOPs exact.
VIT = dict(patch_size=8, width=64, depth=1, mlp_dim=128, num_heads=4,
           num_classes=10)
OPTIONS = {
    'vit_map_representation': (
        'vit', dict(VIT, pool_type='map', representation_size=24), 32),
    'vit_gap_fc_norm_sincos': (
        'vit', dict(VIT, pool_type='gap', fc_norm=True, posemb='sincos2d'),
        32),
    'vit_none': ('vit', dict(VIT, pool_type='none', representation_size=32),
                 32),
    'vit_scan': ('vit', dict(VIT, depth=2, scan=True), 32),
    # DINOv2 with registers (LayerScale, no prefix position rows), a CLIP
    # tower (pre-norm, no patch bias), registers left out of the average.
    'vit_registers_layer_scale': (
        'vit', dict(VIT, num_registers=4, posemb_prefix=False,
                    layer_scale_init=1e-5), 32),
    'vit_pre_norm_quick_gelu': (
        'vit', dict(VIT, pre_norm=True, activation='quick_gelu'), 32),
    'vit_swiglu': ('vit', dict(VIT, activation='swiglu'), 32),
    'vit_registers_gap_sincos': (
        'vit', dict(VIT, num_registers=2, pool_type='gap',
                    posemb='sincos2d'), 32),
    'mae_mask_ratio': ('mae', dict(patch_size=8, width=64, depth=1,
                                   mlp_dim=128, num_heads=4,
                                   decoder_width=32, decoder_depth=2,
                                   decoder_num_heads=2, mask_ratio=0.6), 32),
    'xcit_p16_cls_norm': ('xcit', dict(patch_size=16, width=64, depth=1,
                                       num_heads=4, num_classes=10,
                                       tokens_norm=False), 48),
    'convmixer_even_kernel': ('convmixer', dict(
        width=64, depth=1, kernel_size=4, patch_size=4, num_classes=0), 32),
    # Its own volume (the size argument unused): two channels, other skip
    # blocks, qkv biases; transposed convolutions in the decoder.
    'unetr_free_form': ('unetr', dict(
        image_size=(16, 16, 32), in_channels=2, num_classes=3,
        feature_size=2, width=16, depth=4, num_heads=2, mlp_dim=32,
        skip_blocks=(0, 1, 2), qkv_bias=True), 32),
    # Stage maps 12, 6, 3, 2 (rounded up): reductions by 8 and 4 leave one
    # key row, the last stage has none; the decoder upsamples unevenly.
    'segformer': ('segformer', dict(
        widths=(8, 16, 16, 24), depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 3),
        decoder_width=16, num_classes=5), 48),
    # Clips of 3 frames on a 4x2 patch grid (the size its image_size):
    # attention over time per patch, over each frame, or over all tokens.
    **{f'timesformer_{kind}': ('timesformer', dict(
        patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=2,
        num_frames=3, image_size=(32, 16), num_classes=5,
        attention_type=kind), (32, 16))
       for kind in ('divided_space_time', 'space_only',
                    'joint_space_time')},
    'timesformer_scan': ('timesformer', dict(
        patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=2,
        num_frames=2, image_size=16, num_classes=5, scan=True), 16),
    # MViTv2 of images (grids 8, 4, 2, 1; key strides 4, 2, 1, 1), with
    # its channels grown in the MLP and a class token; MViTv2 and v1 of
    # clips (relative t / h / w tables; separable position embedding).
    'mvit_v2': ('mvit', dict(embed_dim=8, num_heads=1, depths=(1, 2, 1, 1),
                             num_classes=10), 32),
    'mvit_v2_scan': ('mvit', dict(embed_dim=8, num_heads=1,
                                  depths=(1, 3, 2), num_classes=10,
                                  scan=True), 32),
    'mvit_v2_mlp_widening_cls': ('mvit', dict(
        embed_dim=8, num_heads=1, depths=(1, 2, 2), expand_attn=False,
        class_token=True, pool_type='cls', num_classes=10), 48),
    'mvit_v2_clips': ('mvit', dict(variant='S', embed_dim=8,
                                   depths=(1, 2, 1), num_frames=4,
                                   kv_stride=4, num_classes=10), 32),
    'mvit_v1_clips': ('mvit', dict(variant='v1-B', embed_dim=8,
                                   depths=(1, 2, 1), num_frames=4,
                                   kv_stride=4, num_classes=10), 32),
    # The video demo's form: heads per stage, a 3x7x7 stride 1x4x4 patch
    # embedding (configs/moving_digits.py, on a square here).
    'mvit_clips_patch_options': ('mvit', dict(
        embed_dim=8, depths=(1, 2), num_heads=(1, 2), num_frames=3,
        patch_kernel=(3, 7, 7), patch_stride=(1, 4, 4),
        patch_padding=(1, 3, 3), num_classes=10), 32),
}

# One model of each family, wide enough for the matrix products to
# dominate, and XLA's total over the analytic count at most (measured with
# jax 0.10.2 on CPU: vit 1.012, mixer 1.044, swin 1.029, mae 1.017, xcit
# 1.017, convmixer 1.097, its GELU after every convolution being ~66 FLOPs
# an element; 0.02 added). The excess is the elementwise work the analytic
# count leaves out.
WIDE = {
    'vit': ('vit', dict(patch_size=8, width=1024, depth=1, mlp_dim=4096,
                        num_heads=8, num_classes=10), 32, 1.03),
    'mixer': ('mixer', dict(patch_size=8, width=1024, depth=1,
                            tokens_mlp_dim=512, channels_mlp_dim=4096,
                            num_classes=10), 64, 1.06),
    # Shifted windows in stage 0, one window the size of the map in stage
    # 1, one clamped to the map (8 -> 4) in stage 2.
    'swin': ('swin', dict(patch_size=2, width=256, depths=(2, 2, 1),
                          num_heads=(4, 8, 16), window_size=8,
                          num_classes=10), 32, 1.05),
    'mae': ('mae', dict(patch_size=8, width=1024, depth=1, mlp_dim=4096,
                        num_heads=8, decoder_width=512, decoder_depth=1,
                        decoder_num_heads=8), 32, 1.04),
    'xcit': ('xcit', dict(patch_size=8, width=1024, depth=1, num_heads=8,
                          num_classes=10), 32, 1.04),
    'convmixer': ('convmixer', dict(width=1024, depth=1, kernel_size=3,
                                    patch_size=4, num_classes=10), 32, 1.12),
    # A clip model (4 frames): XLA / analytic 1.029 measured, as for images.
    'mvit': ('mvit', dict(embed_dim=256, num_heads=4, depths=(1, 2),
                          num_frames=4, num_classes=10), 32, 1.05),
}


@pytest.mark.parametrize('case', sorted(OPTIONS) + sorted(WIDE))
def test_counts_equal_the_traced_program(case):
  family, kwargs, size = (OPTIONS[case] if case in OPTIONS
                          else WIDE[case][:3])
  model = get_model(family, **kwargs)
  assert counts.param_count(model, size) == eval_shape_params(model, size)
  assert counts.forward_flops(model, size) == traced_matmul_flops(model,
                                                                  size)


@pytest.mark.parametrize('case', sorted(WIDE))
def test_xla_counts_the_products_plus_elementwise_work(case):
  family, kwargs, size, most = WIDE[case]
  model = get_model(family, **kwargs)
  ratio = zoo.count_flops(model, size) / counts.forward_flops(model, size)
  print(f'{case}: XLA / analytic = {ratio:.4f}')
  assert 1.0 <= ratio <= most


# ----------------------------------------------------------------------------
# Published figures.


@pytest.mark.parametrize('family,variant,size,gmacs,rel', [
    # timm's vit_base_patch16_224: 17.58 GMACs (the ViT paper: 17.6).
    ('vit', 'B/16', 224, 17.58, 0.002),
    # timm's mixer_b16_224: 12.6 GMACs.
    ('mixer', 'B/16', 224, 12.6, 0.002),
    # The Swin paper's Table 1: T, S, B at 224 px 4.5, 8.7, 15.4 G; B and L
    # at 384 px (window 12) 47.0 and 103.9 G.
    ('swin', 'T/4', 224, 4.5, 0.01),
    ('swin', 'S/4', 224, 8.7, 0.01),
    ('swin', 'B/4', 224, 15.4, 0.01),
    ('swin', 'B/4', 384, 47.0, 0.01),
    ('swin', 'L/4', 384, 103.9, 0.01),
    # The XCiT paper's models at 224 px (their counts take the padding of
    # the convolutions too): T12/16 1.2, S12/16 4.8, S24/16 9.1, M24/16
    # 16.2, T12/8 4.8 G.
    ('xcit', 'T12/16', 224, 1.2, 0.03),
    ('xcit', 'S12/16', 224, 4.8, 0.01),
    ('xcit', 'S24/16', 224, 9.1, 0.01),
    ('xcit', 'M24/16', 224, 16.2, 0.01),
    ('xcit', 'T12/8', 224, 4.8, 0.01),
    # The TimeSformer paper's Table 2: 0.59 inference TFLOPs for its 3
    # views (1 clip x 3 crops) of 8 x 224^2 frames, divided attention.
    ('timesformer', 'B/16', 224, 590 / 3, 0.01),
    # The MViTv2 paper's Table 3 (ImageNet-1K, 224 px): T 4.7, S 7.0, B
    # 10.2 G; torchvision's figures for mvit_v2_s and mvit_v1_b (16 x 224
    # px clips, which count the taps on padding too): 64.224, 70.599 G.
    ('mvit', 'T', 224, 4.7, 0.01),
    ('mvit', 'S', 224, 7.0, 0.01),
    ('mvit', 'B', 224, 10.2, 0.015),
    ('mvit', dict(variant='S', num_frames=16), 224, 64.224, 0.005),
    ('mvit', dict(variant='v1-B', num_frames=16), 224, 70.599, 0.005),
])
def test_flops_match_published_multiply_adds(family, variant, size, gmacs,
                                             rel):
  kwargs = dict(window_size=12) if size == 384 else {}
  kwargs.update(variant if isinstance(variant, dict) else
                dict(variant=variant))
  model = get_model(family, **kwargs)
  assert counts.forward_flops(model, size) / 2 / 1e9 == pytest.approx(
      gmacs, rel=rel)


@pytest.mark.parametrize('family,variant,expected', [
    ('vit', 'Ti/16', 5_717_416),
    ('vit', 'B/16', 86_567_656),
    ('vit', 'G/14', 1_844_440_680),
    # timm 1.0.31's vit_base_patch14_reg4_dinov2 (518 px),
    # vit_large_patch14_clip_224 and deit3_base_patch16_224, 1000 classes
    # (tests/test_vit_variants.py has the other entry points).
    ('vit', dict(variant='B/14', layer_scale_init=1e-5, num_registers=4,
                 posemb_prefix=False, image_size=518), 87_351_016),
    ('vit', dict(variant='L/14', pre_norm=True, layer_norm_eps=1e-5),
     304_204_776),
    ('vit', dict(variant='B/16', layer_scale_init=1e-6,
                 posemb_prefix=False), 86_585_320),
    ('mixer', 'L/16', 208_196_168),
    ('swin', 'L/4', 196_532_476),
    ('xcit', 'S24/16', 47_671_384),
    ('convmixer', '1536/20', 51_625_960),
    # transformers' TimesformerForVideoClassification at its default
    # config (8 frames, 224 px, divided attention) with 400 classes.
    ('timesformer', 'B/16', 121_566_352),
    # timm 1.0.31's mvitv2_tiny / large; torchvision 0.28's mvit_v2_s and
    # mvit_v1_b (16 frames, 400 classes); tests/test_mvit.py has the rest.
    ('mvit', 'T', 24_173_320),
    ('mvit', 'L', 217_992_952),
    ('mvit', dict(variant='S', num_frames=16, num_classes=400), 34_537_744),
    ('mvit', dict(variant='v1-B', num_frames=16, num_classes=400),
     36_610_672),
])
def test_param_counts_match_published(family, variant, expected):
  kwargs = dict(variant) if isinstance(variant, dict) else dict(
      variant=variant)
  size = kwargs.pop('image_size', 224)
  assert counts.param_count(get_model(family, **kwargs), size) == expected


def test_valid_taps_leave_padding_out():
  assert counts.valid_taps(8, 3, 1, (1, 1)) == 3 * 8 - 2
  assert counts.valid_taps(8, 3, 2, (1, 1)) == 3 * 4 - 1
  assert counts.valid_taps(224, 16, 16) == 224
  assert counts.valid_taps(4, 9, 1, counts.same_padding(9)) == 16
  assert counts.same_padding(4) == (1, 2)


def test_unknown_model_is_named():
  with pytest.raises(ValueError, match=r'No analytic count for Dense; '
                     r"counted: \['ViT', 'Mixer'"):
    counts.forward_flops(nn.Dense(3))


# ----------------------------------------------------------------------------
# The listing.


def _rows(capsys):
  lines = capsys.readouterr().out.strip().splitlines()
  return lines[0].split(), [line.split()[:2] for line in lines[1:]]


def test_listing_prints_the_whole_zoo(capsys):
  zoo.main([])
  header, rows = _rows(capsys)
  assert header == ['model', 'variant', 'params', 'GFLOPs@224']
  assert rows == [[family, variant] for family, variant, _ in zoo.ZOO]


@pytest.mark.parametrize('pattern,expected', [
    ('vit B/*', ['vit B/32', 'vit B/16', 'vit B/8']),
    ('B/16', ['vit B/16', 'mixer B/16', 'mae B/16', 'beit B/16',
              'unetr B/16', 'timesformer B/16']),
    ('*/8', ['vit B/8', 'xcit T12/8', 'xcit S24/8']),
    ('g/14', ['vit g/14']),
    ('convmixer 7*', ['convmixer 768/32']),
])
def test_listing_filter(capsys, pattern, expected):
  zoo.main(['--filter', pattern])
  _, rows = _rows(capsys)
  assert [' '.join(row) for row in rows] == expected


def test_listing_filter_and_family_combine(capsys):
  zoo.main(['--family', 'mae', '--filter', '/16', '--resolution', '112'])
  header, rows = _rows(capsys)
  assert header[-1] == 'GFLOPs@112'
  assert rows == [['mae', 'B/16'], ['mae', 'L/16']]


def test_listing_filter_without_a_match_is_an_error(capsys):
  with pytest.raises(SystemExit) as exit_info:
    zoo.main(['--filter', 'resnet'])
  assert exit_info.value.code == 2
  assert ("no zoo row matches --family=None --filter='resnet'; rows are "
          "named 'FAMILY VARIANT', e.g. 'vit B/16'"
          in capsys.readouterr().err)


def test_listing_skips_rows_the_resolution_does_not_fit(capsys):
  zoo.main(['--family', 'swin', '--resolution', '384'])
  captured = capsys.readouterr()
  assert captured.out.strip().splitlines() == [
      'model      variant           params   GFLOPs@384']
  assert captured.err.count('skipped swin') == 4
  assert 'not divisible by the window size 7' in captured.err


def test_listing_pretrained_prints_the_supported_table(capsys, monkeypatch):
  fake = types.ModuleType('vit_jax.pretrained')
  fake.supported_table = lambda pattern, family: f'{pattern} {family}'
  monkeypatch.setitem(sys.modules, 'vit_jax.pretrained', fake)
  zoo.main(['--pretrained'])
  assert capsys.readouterr().out == '* None\n'
  # --filter as for the zoo: a substring, or a glob; --family as it is.
  zoo.main(['--pretrained', '--filter', 'siglip', '--family', 'vit'])
  assert capsys.readouterr().out == '*siglip* vit\n'
  zoo.main(['--pretrained', '--filter', '*.mae'])
  assert capsys.readouterr().out == '*.mae None\n'
  fake.supported_table = lambda pattern, family: ''
  with pytest.raises(SystemExit) as exit_info:
    zoo.main(['--pretrained', '--filter', 'resnet'])
  assert exit_info.value.code == 2
  assert ("no pretrained architecture matches --family=None "
          "--filter='resnet'" in capsys.readouterr().err)


def test_listing_pretrained_without_the_module_is_an_error(capsys,
                                                           monkeypatch):
  monkeypatch.setitem(sys.modules, 'vit_jax.pretrained', None)
  with pytest.raises(SystemExit) as exit_info:
    zoo.main(['--pretrained'])
  assert exit_info.value.code == 2
  assert ('--pretrained needs the module vit_jax.pretrained'
          in capsys.readouterr().err)
