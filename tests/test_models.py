"""ViT and Mixer: sizes, options, layouts and bad input."""

import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from vit_jax import models
from vit_jax import weights
from vit_jax.models import common, counts, get_model
from vit_jax.models.__main__ import count_params

TINY_VIT = dict(patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=4,
                num_classes=5)
TINY_MIXER = dict(patch_size=4, width=32, depth=2, tokens_mlp_dim=16,
                  channels_mlp_dim=64, num_classes=5)


def _images(batch=2, size=16, channels=3, seed=0):
  return jax.random.normal(jax.random.PRNGKey(seed),
                           (batch, size, size, channels))


def _random_params(model, images, seed=1):
  """Initialised params with every leaf perturbed (heads start at zero)."""
  params = model.init(jax.random.PRNGKey(seed), images)['params']
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
  leaves = [leaf + 0.1 * jax.random.normal(key, leaf.shape)
            for leaf, key in zip(leaves, keys)]
  return jax.tree.unflatten(treedef, leaves)


# Published parameter counts, 1000 classes, 224 px (ViT with class token).
PUBLISHED = [
    ('vit', 'Ti/16', 5_717_416),
    ('vit', 'B/16', 86_567_656),
    ('vit', 'L/16', 304_326_632),
    ('vit', 'g/14', 1_012_611_432),
    ('vit', 'G/14', 1_844_440_680),
    ('mixer', 'B/16', 59_880_472),
    ('mixer', 'L/16', 208_196_168),
]


@pytest.mark.parametrize('family,variant,expected', PUBLISHED)
def test_published_parameter_counts(family, variant, expected):
  assert count_params(get_model(family, variant=variant)) == expected


def _vit_analytic_flops(width, depth, mlp_dim, patch, resolution, classes):
  """Matmul FLOPs (2 per multiply-add) of a class-token ViT forward pass."""
  tokens = (resolution // patch) ** 2 + 1
  per_block = (4 * tokens * width * width  # q, k, v, out projections
               + 2 * tokens * tokens * width  # q.k and probs.v
               + 2 * tokens * width * mlp_dim)  # MLP
  embed = (tokens - 1) * patch * patch * 3 * width
  return 2 * (depth * per_block + embed + width * classes)


def test_flops_match_analytic_count():
  """The hand-written count above, against `counts.forward_flops` (checked
  against XLA's cost analysis in tests/test_counts.py)."""
  flops = counts.forward_flops(get_model('vit', variant='B/16'), 224)
  assert flops == _vit_analytic_flops(768, 12, 3072, 16, 224, 1000)


@pytest.mark.parametrize('kwargs,pattern', [
    (dict(variant='X/16'), r"Unknown ViT size 'X'.*'Ti', 'S', 'M', 'B', "
     r"'L', 'H', 'g', 'G'"),
    (dict(variant='B16'), r'must look like SIZE/PATCH'),
    (dict(variant='B/16', pool_type='avg'),
     r"Unknown pool_type 'avg'; valid choices: \['cls', 'gap', 'map', "
     r"'none'\]"),
    (dict(variant='B/16', posemb='rope'), r"Unknown posemb 'rope'"),
    (dict(variant='B/16', pool_type='cls', fc_norm=True),
     r'fc_norm=True applies to pool_type="gap" only'),
])
def test_bad_options_name_the_valid_ones(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    get_model('vit', **kwargs)


def test_unknown_model_name():
  with pytest.raises(ValueError, match=r"Unknown model 'resnet'.*'vit'"):
    get_model('resnet')


@pytest.mark.parametrize('family,kwargs', [('vit', TINY_VIT),
                                           ('mixer', TINY_MIXER)])
def test_image_size_not_divisible_by_patch(family, kwargs):
  model = get_model(family, **kwargs)
  with pytest.raises(ValueError, match=r'Image size 18x18 is not divisible '
                     r'by the patch size 4'):
    model.init(jax.random.PRNGKey(0), jnp.zeros((1, 18, 18, 3)))


@pytest.mark.parametrize('family,kwargs', [
    ('vit', dict(TINY_VIT, pool_type='cls')),
    ('vit', dict(TINY_VIT, pool_type='map', stochastic_depth=0.2)),
    ('mixer', dict(TINY_MIXER, stochastic_depth=0.2)),
])
def test_scan_and_remat_match_unrolled(family, kwargs):
  images = _images()
  unrolled = get_model(family, **kwargs)
  params = _random_params(unrolled, images)
  scanned = get_model(family, **dict(kwargs, scan=True, remat=True))
  stacked = common.stack_blocks(params)
  # The scanned model's own init has exactly the stacked layout.
  init_shapes = jax.eval_shape(scanned.init, jax.random.PRNGKey(0), images)
  assert (jax.tree.map(jnp.shape, init_shapes['params'])
          == jax.tree.map(jnp.shape, stacked))
  expected, _ = jax.jit(unrolled.apply)({'params': params}, images)
  got, _ = jax.jit(scanned.apply)({'params': stacked}, images)
  assert np.abs(expected).max() > 1e-2
  np.testing.assert_allclose(got, expected, atol=1e-5)
  # Gradients agree too (remat recomputes, scan stacks).
  loss = lambda model, p: model.apply({'params': p}, images)[0].sum()  # noqa
  grads = jax.jit(jax.grad(lambda p: loss(unrolled, p)))(params)
  scanned_grads = jax.jit(jax.grad(lambda p: loss(scanned, p)))(stacked)
  for got_leaf, expected_leaf in zip(
      jax.tree.leaves(common.unstack_blocks(scanned_grads)),
      jax.tree.leaves(grads)):
    np.testing.assert_allclose(got_leaf, expected_leaf, atol=1e-4)
  roundtrip = common.unstack_blocks(stacked)
  assert jax.tree.structure(roundtrip) == jax.tree.structure(params)


def test_pool_types_shapes():
  images = _images()
  for pool_type in ('cls', 'gap', 'map'):
    logits, aux = get_model('vit', **dict(TINY_VIT, pool_type=pool_type)).init_with_output(
        jax.random.PRNGKey(0), images)[0]
    assert logits.shape == (2, 5) and aux['pre_logits'].shape == (2, 32)
  model = get_model('vit', **dict(TINY_VIT, pool_type='none', num_classes=0))
  (tokens, aux), variables = model.init_with_output(jax.random.PRNGKey(0),
                                                    images)
  assert tokens.shape == (2, 16, 32)
  assert 'cls_token' not in variables['params']


def test_sincos_posemb_has_no_parameter_and_known_values():
  model = get_model('vit', **dict(TINY_VIT, posemb='sincos2d'))
  params = model.init(jax.random.PRNGKey(0), _images())['params']
  assert 'pos_embed' not in params
  table = common.posemb_sincos_2d(3, 5, 8)  # [15, 8]
  # Row r*5 + c: sin(c w), cos(c w), sin(r w), cos(r w) with w = 1e4^-(k/2).
  row, col = 2, 3
  omega = 1.0 / 10_000 ** (np.arange(2) / 2)
  expected = np.concatenate([np.sin(col * omega), np.cos(col * omega),
                             np.sin(row * omega), np.cos(row * omega)])
  np.testing.assert_allclose(table[row * 5 + col], expected, atol=1e-6)


def test_head_init_and_representation_layer():
  model = get_model('vit', **dict(TINY_VIT, representation_size=24,
                                  head_bias_init=-3.0))
  images = _images()
  params = model.init(jax.random.PRNGKey(0), images)['params']
  assert params['pre_logits']['kernel'].shape == (32, 24)
  assert not params['head']['kernel'].any()
  logits, aux = model.apply({'params': params}, images)
  np.testing.assert_allclose(logits, -3.0)
  assert aux['pre_logits'].shape == (2, 24)
  assert np.abs(aux['pre_logits']).max() <= 1.0  # tanh


def test_stochastic_depth_and_dropout_only_in_training():
  kwargs = dict(TINY_VIT, stochastic_depth=0.5, dropout=0.1,
                attention_dropout=0.1)
  model = get_model('vit', **kwargs)
  images = _images()
  params = _random_params(model, images)
  eval_a, _ = model.apply({'params': params}, images)
  eval_b, _ = model.apply({'params': params}, images, train=False)
  np.testing.assert_array_equal(eval_a, eval_b)
  train = lambda seed: model.apply(  # noqa: E731
      {'params': params}, images, train=True,
      rngs={'dropout': jax.random.PRNGKey(seed)})[0]
  assert not np.allclose(train(0), train(1))
  np.testing.assert_array_equal(train(0), train(0))


def test_drop_path_keeps_expectation():
  rates = common.stochastic_depth_rates(0.3, 4)
  np.testing.assert_allclose(rates, [0.0, 0.1, 0.2, 0.3], atol=1e-7)

  class Dropper(common.nn.Module):
    @common.nn.compact
    def __call__(self, inputs):
      return common.drop_path(inputs, 0.25, False, self)

  inputs = jnp.ones((20_000, 3))
  out = Dropper().apply({}, inputs, rngs={'dropout': jax.random.PRNGKey(0)})
  kept = out[:, 0] > 0
  assert abs(kept.mean() - 0.75) < 0.02
  np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
  np.testing.assert_array_equal(out[~kept], 0.0)


@pytest.mark.parametrize('case', ['vit_map', 'mixer'])
def test_bfloat16_compute_close_to_float32(case):
  name, kwargs = golden_cases.MODEL_KWARGS[case]
  state_dict, outputs = golden_cases.load(case)
  params = weights.from_timm(state_dict, name, **kwargs)['params']
  images = jnp.asarray(outputs['images'])
  f32, _ = get_model(name, **kwargs).apply({'params': params}, images)
  bf16, aux = get_model(name, **dict(kwargs, dtype=jnp.bfloat16)).apply(
      {'params': params}, images)
  assert bf16.dtype == jnp.float32  # logits come back in float32
  assert jax.tree.leaves(params)[0].dtype == jnp.float32
  # bfloat16 keeps 8 bits of mantissa: relative error about 2^-8 per op.
  scale = np.abs(f32).max()
  assert np.abs(bf16 - f32).max() <= 0.05 * scale
  assert np.abs(bf16 - f32).max() > 0  # bfloat16 really was used


def test_models_import_no_tensorflow():
  code = ('import sys, vit_jax.models, vit_jax.checkpoint, vit_jax.weights, '
          'vit_jax.sharding; '
          'import vit_jax.models.__main__; '
          'bad = [m for m in sys.modules if m.split(".")[0] in '
          '("tensorflow", "tensorflow_datasets")]; '
          'assert not bad, bad')
  subprocess.run([sys.executable, '-c', code], check=True)


def test_attention_backend_choice(monkeypatch):
  assert common.attention_backend(jnp.bfloat16, 64) == 'xla'  # CPU
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert common.attention_backend(jnp.bfloat16, 64) == 'cudnn'
  assert common.attention_backend(jnp.float16, 128) == 'cudnn'
  assert common.attention_backend(jnp.float32, 64) == 'xla'
  assert common.attention_backend(jnp.bfloat16, 160) == 'xla'
  assert common.attention_backend(jnp.bfloat16, 20) == 'xla'


def test_attention_impl_is_validated():
  with pytest.raises(ValueError, match=r"Unknown attention_impl 'flash'; "
                     r"valid choices: \[None, 'xla', 'cudnn'\]"):
    get_model('vit', **dict(TINY_VIT, attention_impl='flash'))


@pytest.mark.parametrize('name, variant, patch_size', [
    ('vit', 'B/16', 8), ('mixer', 'B/16', 8), ('swin', 'T/4', 2),
    ('mae', 'B/16', 8), ('xcit', 'S12/16', 8), ('convmixer', '768/32', 14)])
def test_a_variant_patch_size_can_be_overridden(name, variant, patch_size):
  """get_model(name, variant, patch_size=...) as a config with both a
  variant and a patch size builds it (it raised 'multiple values for
  keyword argument' before)."""
  from vit_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  width = 96 if name == 'swin' else 64  # Swin-T's 3 heads divide it
  model = models_lib.get_model(name, variant=variant, patch_size=patch_size,
                               width=width)
  assert model.patch_size == patch_size and model.width == width


def test_kwargs_from_config_as_get_model_takes_them():
  """A config's model block, as a ConfigDict or as config.json gives it
  back (tuples as lists), becomes get_model's arguments."""
  import json  # pylint: disable=g-import-not-at-top
  import ml_collections  # pylint: disable=g-import-not-at-top
  from vit_jax import models as models_lib  # pylint: disable=g-import-not-at-top
  block = dict(name='swin', variant=None, width=8, depths=(1, 1),
               num_heads=(1, 2), patch_size=2, window_size=2, num_classes=3,
               dtype='bfloat16')
  from_json = json.loads(json.dumps(block))
  assert from_json['depths'] == [1, 1]  # what a workdir's config holds
  expected = dict(name='swin', width=8, depths=(1, 1), num_heads=(1, 2),
                  patch_size=2, window_size=2, num_classes=3,
                  dtype=jnp.dtype(jnp.bfloat16))
  for given in (ml_collections.ConfigDict(block), from_json):
    kwargs = models_lib.kwargs_from_config(given)
    assert kwargs == expected
    assert all(type(kwargs[key]) is tuple for key in ('depths', 'num_heads'))
    model = models_lib.get_model(**kwargs)
    hash(model)  # list fields would make the module unhashable
    assert model.dtype == jnp.bfloat16
    # Weight import and export leave the compute dtype out.
    weights_kwargs = models_lib.kwargs_from_config(given, compute_dtype=False)
    assert weights_kwargs == {k: v for k, v in expected.items()
                              if k != 'dtype'}
  # A variant is kept (sizes from its table); no dtype, no dtype key.
  kwargs = models_lib.kwargs_from_config({'name': 'vit', 'variant': 'Ti/16',
                                          'num_classes': 5})
  assert kwargs == {'name': 'vit', 'variant': 'Ti/16', 'num_classes': 5}
  assert models_lib.get_model(**kwargs).width == 192


def test_every_family_is_whole():
  """A family is its model file (NAME, MODEL, ZOO, checkpoint_image_size),
  its entry in models.FAMILIES, its weight tables and its analytic counts:
  one that lacks a part fails here, not in a user's run."""
  from vit_jax.weights import families  # pylint: disable=g-import-not-at-top
  names = [family.NAME for family in models.FAMILIES]
  assert len(set(names)) == len(names) and list(models.MODELS) == names
  assert [family.NAME for family in families.FAMILIES] == names
  for family in models.FAMILIES:
    assert models.MODELS[family.NAME] is family.MODEL
    assert family.ZOO and all(
        isinstance(models.get_model(family.NAME, variant=variant),
                   family.MODEL) for variant in family.ZOO), family.NAME
    assert callable(family.checkpoint_image_size)
    model = models.get_model(family.NAME, variant=family.ZOO[0])
    assert counts.param_count(model) > 0, family.NAME


@pytest.mark.parametrize('kernel, strides, padding, shape', [
    ((3, 3, 3), (1, 2, 2), ((1, 1),) * 3, (2, 4, 6, 8, 5)),
    ((3, 3), (2, 2), ((1, 1), (1, 1)), (3, 7, 6, 4)),
    ((9, 9), (1, 1), ((4, 4), (4, 4)), (1, 10, 12, 3)),
    ((3, 1), (1, 1), ((0, 2), (0, 0)), (2, 5, 4, 2)),
])
def test_depthwise_conv_implementations_agree(kernel, strides, padding,
                                              shape):
  """The shifted multiply-adds (CPUs) and the grouped convolution
  (accelerators) compute the same map, gradients included, from nn.Conv's
  own parameter: same tree, same initial values."""
  x = jax.random.normal(jax.random.PRNGKey(0), shape)
  use_bias = len(kernel) == 2  # both forms, with and without a bias
  reference = nn.Conv(shape[-1], kernel, strides=strides, padding=padding,
                      feature_group_count=shape[-1], use_bias=use_bias)
  params = reference.init(jax.random.PRNGKey(1), x)
  expected = reference.apply(params, x)
  outs = {}
  for impl in ('conv', 'shifts'):
    layer = common.DepthwiseConv(kernel, strides, padding, use_bias=use_bias,
                                 impl=impl)
    own = layer.init(jax.random.PRNGKey(1), x)
    assert jax.tree.map(np.shape, own) == jax.tree.map(np.shape, params)
    jax.tree.map(np.testing.assert_array_equal, own, params)
    outs[impl] = layer.apply(params, x)
    np.testing.assert_allclose(outs[impl], expected, atol=1e-5, rtol=1e-5)
    grad = jax.grad(lambda p, x: (layer.apply(p, x) ** 2).sum(),
                    argnums=(0, 1))(params, x)
    grad_ref = jax.grad(lambda p, x: (reference.apply(p, x) ** 2).sum(),
                        argnums=(0, 1))(params, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4,
                                                         rtol=1e-4),
                 grad, grad_ref)
  # This CPU: shifts up to 27 taps, the grouped convolution above.
  expected_impl = 'shifts' if np.prod(kernel) <= 27 else 'conv'
  assert common.depthwise_backend(kernel) == expected_impl


def test_depthwise_conv_impl_is_validated():
  layer = common.DepthwiseConv((3, 3), (1, 1), ((1, 1), (1, 1)), impl='fft')
  with pytest.raises(ValueError, match=r"Unknown DepthwiseConv impl 'fft'; "
                     r"valid choices: \['conv', 'shifts'\]"):
    layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 4, 4, 2)))
