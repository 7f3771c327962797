"""UNETR: numerics against MONAI's UNETR, its transposed convolution
against PyTorch's, import and export, counts at the paper's size, sizes
and bad input.

The golden file comes from tests/support/make_golden_unetr.py (MONAI
1.6.1; a 16 x 32 x 48 volume, width 8, depth 12, feature size 2, random
weights).
"""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from vit_jax import models
from vit_jax import weights
from vit_jax.models import counts
from vit_jax.models import features
from vit_jax.models import unetr
from vit_jax.weights import monai
from vit_jax.weights import unetr as unetr_table

TOL = 1e-4  # float32, against MONAI on the CPU.

GOLDEN_KWARGS = dict(image_size=(16, 32, 48), in_channels=1, num_classes=2,
                     feature_size=2, width=8, depth=12, num_heads=2,
                     mlp_dim=16)
PAPER_KWARGS = dict(variant='B/16', image_size=(96, 96, 96), in_channels=1,
                    num_classes=14, feature_size=16)


def _load():
  path = os.path.join(golden_cases.GOLDEN_DIR, 'unetr_monai.npz')
  with np.load(path) as archive:
    arrays = dict(archive)
  groups = {}
  for name, array in arrays.items():
    group, _, key = name.partition('/')
    groups.setdefault(group, {})[key] = array
  return groups


@pytest.fixture(scope='module')
def golden():
  groups = _load()
  variables = weights.from_monai(groups['monai'], 'unetr', **GOLDEN_KWARGS)
  return groups, variables


def test_logits_match_monai(golden):
  groups, variables = golden
  model = models.get_model('unetr', **GOLDEN_KWARGS)
  logits, aux = jax.jit(model.apply)(variables, groups['out']['volumes'])
  assert logits.shape == groups['out']['logits'].shape
  np.testing.assert_allclose(logits, groups['out']['logits'], atol=TOL)
  np.testing.assert_allclose(aux['encoded'], groups['out']['encoded'],
                             atol=TOL)
  np.testing.assert_allclose(aux['pre_logits'],
                             groups['out']['encoded'].mean(axis=1), atol=TOL)


def test_transposed_conv_matches_torch():
  case = _load()['transposed']
  layer = unetr.transposed_conv(5, jnp.float32, 'up')
  kernel = unetr_table.CONV3D.to_ours(case['weight'], None)
  got = layer.apply({'params': {'kernel': kernel}}, case['inputs'])
  assert got.shape == case['outputs'].shape == (2, 4, 6, 8, 5)
  np.testing.assert_allclose(got, case['outputs'], atol=1e-5)


def test_block_upsample_is_flax_transposed_convolution():
  """BlockUpsample (a matrix product) is nn.ConvTranspose(kernel 2,
  stride 2, VALID, transpose_kernel=True): same parameter, same initial
  values, same outputs and gradients."""
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 4, 5, 6))
  reference = nn.ConvTranspose(7, (2, 2, 2), strides=(2, 2, 2),
                               padding='VALID', transpose_kernel=True,
                               use_bias=False,
                               kernel_init=unetr._CONV_INIT)  # pylint: disable=protected-access
  layer = unetr.BlockUpsample(7)
  params = layer.init(jax.random.PRNGKey(1), x)
  jax.tree.map(np.testing.assert_array_equal, params,
               reference.init(jax.random.PRNGKey(1), x))
  np.testing.assert_allclose(layer.apply(params, x),
                             reference.apply(params, x), atol=1e-5)
  grads = [jax.grad(lambda p, x, m=m: (m.apply(p, x) ** 2).sum(),
                    argnums=(0, 1))(params, x) for m in (layer, reference)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4),
               *grads)


def test_export_round_trip_is_exact(golden):
  groups, variables = golden
  flat = weights.flatten_variables(variables)
  theirs = monai.to_monai(flat, 'unetr')
  assert sorted(theirs) == sorted(groups['monai'])
  for name, value in groups['monai'].items():
    assert theirs[name].dtype == value.dtype, name
    np.testing.assert_array_equal(theirs[name], value, err_msg=name)


def test_a_new_number_of_classes_gets_a_zero_head(golden):
  groups, _ = golden
  variables = weights.from_monai(groups['monai'], 'unetr',
                                 **{**GOLDEN_KWARGS, 'num_classes': 5})
  head = variables['params']['head']
  assert head['kernel'].shape == (1, 1, 1, 2, 5)
  assert not np.any(head['kernel']) and not np.any(head['bias'])


def test_import_names_what_does_not_fit(golden):
  groups, _ = golden
  with pytest.raises(ValueError, match=r'MONAI state dict does not fit the '
                     r'model.*vit\.blocks\.0\.norm1\.weight: checkpoint '
                     r'\(8,\) vs model \(16,\)'):
    weights.from_monai(groups['monai'], 'unetr',
                       **{**GOLDEN_KWARGS, 'width': 16, 'mlp_dim': 32})
  with pytest.raises(ValueError, match=r'vit\.patch_embedding\.patch_'
                     r'embeddings\.weight: checkpoint \(8, 1, 16, 16, 16\) '
                     r'vs model \(8, 2, 16, 16, 16\)'):
    weights.from_monai(groups['monai'], 'unetr',
                       **{**GOLDEN_KWARGS, 'in_channels': 2})
  with pytest.raises(ValueError, match=r"Cannot import MONAI checkpoints "
                     r"for model 'vit'; valid models: \['unetr'\]"):
    weights.from_monai(groups['monai'], 'vit')


def test_paper_size_counts():
  """92,802,478 parameters as MONAI's UNETR (its unused cross-attention
  norms included); the count is the traced parameters'."""
  model = models.get_model('unetr', **PAPER_KWARGS)
  assert counts.param_count(model) == 92_802_478
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, 96, 96, 96, 1),
                                               jnp.float32))
  assert sum(np.prod(leaf.shape) for leaf in
             jax.tree.leaves(shapes['params'])) == 92_802_478
  assert models.checkpoint_image_size('unetr', model, {}) == (96, 96, 96)


@pytest.mark.parametrize('kwargs, pattern', [
    (dict(image_size=(16, 32, 40)), r'UNETR image_size \(16, 32, 40\) is '
     r'not divisible by the patch size 16 on every side'),
    (dict(image_size=(16, 32)), r'UNETR image_size must be a side or '
     r'\(D, H, W\) of positive integers, got \(16, 32\)'),
    (dict(patch_size=8), r'UNETR patch_size must be 16 .*got 8'),
    (dict(skip_blocks=(3, 6, 11)), r'UNETR skip_blocks \(3, 6, 11\) must '
     r'be 3 increasing block indices in 0 \.\. 10'),
    (dict(feature_size=0), r'UNETR feature_size must be a positive '
     r'integer, got 0'),
])
def test_bad_sizes_are_named(kwargs, pattern):
  with pytest.raises(ValueError, match=pattern):
    models.get_model('unetr', **{**GOLDEN_KWARGS, **kwargs})


def test_bad_variant_is_named():
  with pytest.raises(ValueError, match=r"Unknown UNETR size 'X'"):
    models.get_model('unetr', variant='X/16')


@pytest.mark.parametrize('shape', [(1, 16, 32, 48, 2), (1, 16, 32, 32, 1),
                                   (16, 32, 48, 1)])
def test_bad_volumes_are_named(shape):
  model = models.get_model('unetr', **GOLDEN_KWARGS)
  with pytest.raises(ValueError, match=r'UNETR takes volumes \[B, D, H, W, '
                     r'C\] of shape \[B, 16, 32, 48, 1\] \(its image_size '
                     r'and in_channels\), got ' + str(list(shape))
                     .replace('[', r'\[').replace(']', r'\]')):
    jax.eval_shape(model.init, jax.random.PRNGKey(0),
                   jax.ShapeDtypeStruct(shape, jnp.float32))


def test_other_skip_blocks_and_features_on_the_3d_grid(golden):
  """A free-form size (depth 4, skips from blocks 0, 1, 2); the blocks'
  tokens come out on the 3-D patch grid."""
  model = models.get_model('unetr', **{**GOLDEN_KWARGS, 'depth': 4,
                                       'skip_blocks': (0, 1, 2)})
  groups, variables = golden
  params = {key: value for key, value in variables['params'].items()
            if key != 'encoder'}
  params['encoder'] = {f'block_{i}': variables['params']['encoder'][
      f'block_{i}'] for i in range(4)}
  volumes = groups['out']['volumes']
  logits, _ = model.apply({'params': params}, volumes)
  assert logits.shape == (1, 16, 32, 48, 2)
  maps = features.extract(model, {'params': params}, volumes, layers=[0, -1],
                          norm=True)
  assert maps['block_0'].shape == (1, 1, 2, 3, 8)
  # The last block through the final norm is the encoder's output.
  _, aux = model.apply({'params': params}, volumes)
  np.testing.assert_allclose(maps['block_3'].reshape(1, 6, 8),
                             aux['encoded'], atol=1e-6)
