"""Sharded forward passes over 8 virtual CPU devices equal one device's."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import golden_cases
from vit_jax import sharding, weights
from vit_jax.models import get_model


@pytest.fixture(scope='module')
def vit_map():
  name, kwargs = golden_cases.MODEL_KWARGS['vit_map']
  state_dict, outputs = golden_cases.load('vit_map')
  params = weights.from_timm(state_dict, name, **kwargs)['params']
  images = np.concatenate([outputs['images'], -outputs['images'][:, ::-1],
                           outputs['images'][..., ::-1]], 0)[:8]
  images = np.concatenate([images, images[:8 - len(images)] * 0.5])
  return get_model(name, **kwargs), params, images


def test_eight_devices_are_there():
  assert jax.device_count() == 8, (
      'run with XLA_FLAGS=--xla_force_host_platform_device_count=8 '
      '(tests/conftest.py sets it)')


@pytest.mark.parametrize('data,fsdp', [(8, 1), (4, 2), (2, 4), (1, 8)])
def test_sharded_forward_equals_single_device(vit_map, data, fsdp):
  model, params, images = vit_map
  expected, expected_aux = jax.jit(model.apply)({'params': params}, images)

  mesh = sharding.make_mesh(data, fsdp)
  param_shardings = sharding.param_shardings(params, mesh)
  sharded_params = jax.device_put(params, param_shardings)
  sharded_images = jax.device_put(images, sharding.batch_sharding(mesh))
  if fsdp > 1:  # some parameter really is split along 'fsdp'
    kernel = sharded_params['encoder']['block_0']['mlp']['fc1']['kernel']
    assert kernel.sharding.spec == P(None, 'fsdp')
    assert len(kernel.addressable_shards[0].data.flatten()) == (
        kernel.size // fsdp)
  forward = jax.jit(model.apply,
                    out_shardings=sharding.batch_sharding(mesh))
  logits, aux = forward({'params': sharded_params}, sharded_images)
  assert len(logits.sharding.device_set) == 8
  np.testing.assert_allclose(logits, expected, atol=1e-5)
  np.testing.assert_allclose(aux['pre_logits'], expected_aux['pre_logits'],
                             atol=1e-5)


def test_fsdp_spec_picks_largest_divisible_dimension():
  mesh = sharding.make_mesh(2, 4)
  assert sharding.fsdp_spec((64, 128), mesh) == P(None, 'fsdp')
  assert sharding.fsdp_spec((6, 12, 10), mesh) == P(None, 'fsdp', None)
  assert sharding.fsdp_spec((3, 5), mesh) == P()
  assert sharding.fsdp_spec((64, 128), sharding.make_mesh(8, 1)) == P()


@pytest.mark.parametrize('data,fsdp,pattern', [
    (3, 1, r'data=3 x fsdp=1 do not multiply to the 8 devices; valid '
     r'\(data, fsdp\) pairs: \[\(1, 8\), \(2, 4\), \(4, 2\), \(8, 1\)\]'),
    (-1, 3, r'data=0 x fsdp=3'),
    (-1, -1, r'At most one mesh axis size may be -1'),
])
def test_bad_mesh_is_a_clear_error(data, fsdp, pattern):
  with pytest.raises(ValueError, match=pattern):
    sharding.make_mesh(data, fsdp)


def test_minus_one_takes_the_rest():
  assert dict(sharding.make_mesh(-1, 2).shape) == {'data': 4, 'fsdp': 2}
  assert dict(sharding.make_mesh(2, -1).shape) == {'data': 2, 'fsdp': 4}
