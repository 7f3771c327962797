"""Compute accounting (vit_jax/compute.py): device peaks, MFU, FLOPs."""

import jax
import jax.numpy as jnp
import pytest

from vit_jax import compute
from vit_jax import models


@pytest.mark.parametrize('kind, peak', [
    ('NVIDIA H100 80GB HBM3', 989e12), ('NVIDIA H100 PCIe', 756e12),
    ('NVIDIA H200', 989e12), ('NVIDIA A100-SXM4-40GB', 312e12),
    ('TPU v4', 275e12), ('TPU v5 lite', 197e12), ('TPU v5p', 459e12),
    ('TPU v6 lite', 918e12), ('cpu', None)])
def test_peaks_by_device_kind(kind, peak):
  assert compute.peak_flops(kind) == peak


def test_mfu():
  assert compute.mfu(989e12, 2.0, 4, 989e12) == pytest.approx(0.125)
  assert compute.mfu(1e12, 1.0, 1, None) is None
  assert compute.mfu(1e12, 0.0, 1, 1e12) is None


def test_vit_b16_forward_flops_match_the_published_count():
  """ViT-B/16 at 224 px: 17.6 GFLOPs in the papers' multiply-add count
  (Dosovitskiy et al. 2021; timm lists 17.58 GMACs), so about 35.1 G here
  (a multiply-add is 2 FLOPs)."""
  model = models.get_model('vit', variant='B/16', num_classes=1000)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  flops = compute.forward_flops_per_image(model, (224, 224, 3), variables)
  assert flops / 2 == pytest.approx(17.58e9, rel=0.02)
  params, body = compute.param_counts(variables['params'])
  assert params == 86_567_656
  # Without patch embedding (768 x 768 + 768), 197 position embeddings,
  # class token and head (768 x 1000 + 1000).
  assert params - body == (768 * 768 + 768) + 197 * 768 + 768 + (
      768 * 1000 + 1000)
