"""Video training steps on a device mesh: the clip models' step with
parameters split along 'fsdp' equals the data-parallel step (TimeSformer,
and MViT with scanned blocks), so video runs shard like image runs."""

import types

import jax
import numpy as np
import pytest

import tiny
from vit_jax import config as config_lib

FRAMES = 4
CLIP = (FRAMES, 16, 16, 1)
MODELS = {
    'timesformer': dict(name='timesformer', num_frames=FRAMES, patch_size=8,
                        image_size=16, width=16, depth=2, num_heads=2,
                        mlp_dim=32, num_classes=6),
    # depths (1, 3): stage 2 scans its blocks 1 and 2 under scan=True.
    'mvit_scan': dict(name='mvit', num_frames=FRAMES, embed_dim=8,
                      depths=(1, 3), num_heads=(1, 2), patch_kernel=(3, 7, 7),
                      patch_stride=(2, 4, 4), patch_padding=(1, 3, 3),
                      kv_stride=2, num_classes=6, scan=True,
                      stochastic_depth=0.2),
}


def _data():
  """A stand-in for vit_jax.data: what build_run asks of a video dataset."""
  return types.SimpleNamespace(dataset_info=lambda _: {
      'task': 'video_classification', 'num_classes': 6,
      'image_shape': CLIP, 'train_image_shape': CLIP,
      'num_examples': {'train': 8, 'test': 4}, 'eval_views': (1, 1)})


@pytest.mark.parametrize('name', sorted(MODELS))
def test_sharded_video_step_equals_the_data_parallel_one(name):
  clips = np.random.default_rng(4).normal(size=(8, *CLIP)).astype(
      np.float32)
  labels = np.eye(6, dtype=np.float32)[
      np.random.default_rng(3).integers(0, 6, 8)]
  results = tiny.step_on_meshes(
      lambda mesh: config_lib.resolve(dict(
          total_steps=2, batch_size=8, model=MODELS[name],
          data=dict(name='moving_digits', num_frames=FRAMES), mesh=mesh)),
      _data(), {'image': clips, 'labels': labels})
  (loss_dp, params_dp), (loss_fsdp, params_fsdp) = results
  assert np.isfinite(loss_dp) and loss_dp > 1.0  # about log(6) at init
  np.testing.assert_allclose(loss_fsdp, loss_dp, rtol=1e-5)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5),
               params_fsdp, params_dp)
  if name == 'mvit_scan':
    assert 'blocks_from_1' in params_dp['stage_1']
