"""The golden cases of make_golden.py, as `get_model` kwargs of this package."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import models

import tiny

GOLDEN_DIR = os.path.join(tiny.ROOT, 'tests', 'golden')

_VIT = dict(patch_size=8, depth=2, num_classes=10)
MODEL_KWARGS = {
    'vit_cls': ('vit', dict(_VIT, width=64, mlp_dim=128, num_heads=2,
                            pool_type='cls')),
    'vit_gap': ('vit', dict(_VIT, width=64, mlp_dim=128, num_heads=4,
                            pool_type='gap')),
    'vit_gap_fcnorm': ('vit', dict(_VIT, width=64, mlp_dim=128, num_heads=4,
                                   pool_type='gap', fc_norm=True)),
    'vit_map': ('vit', dict(_VIT, width=64, mlp_dim=128, num_heads=4,
                            pool_type='map')),
    'mixer': ('mixer', dict(patch_size=8, depth=2, num_classes=10, width=64,
                            tokens_mlp_dim=32, channels_mlp_dim=128)),
}

# make_golden_vit_variants.py's timm ViTs (DINOv2, CLIP, DeiT III, ...);
# tests/test_vit_variants.py.
_VARIANT = dict(patch_size=8, width=32, depth=2, mlp_dim=64, num_heads=4,
                num_classes=10)
VIT_VARIANTS = {
    'vit_dinov2': ('vit', dict(_VARIANT, layer_scale_init=1e-5)),
    'vit_dinov2_reg4': ('vit', dict(_VARIANT, layer_scale_init=1e-5,
                                    num_registers=4, posemb_prefix=False)),
    'vit_clip_quickgelu': ('vit', dict(_VARIANT, pre_norm=True,
                                       layer_norm_eps=1e-5,
                                       activation='quick_gelu')),
    'vit_deit3': ('vit', dict(_VARIANT, layer_scale_init=1e-6,
                              posemb_prefix=False)),
    'vit_reg_gap': ('vit', dict(_VARIANT, num_registers=2, pool_type='gap',
                                fc_norm=False)),
    'vit_dinov2_swiglu': ('vit', dict(_VARIANT, layer_scale_init=1e-5,
                                      mlp_dim=128, activation='swiglu')),
}


def load(case):
  """Returns (timm state dict, outputs) of a golden case."""
  with np.load(os.path.join(GOLDEN_DIR, f'{case}_timm.npz')) as archive:
    state_dict = {k[len('timm/'):]: archive[k] for k in archive.files
                  if k.startswith('timm/')}
    outputs = {k[len('out/'):]: archive[k] for k in archive.files
               if k.startswith('out/')}
  return state_dict, outputs


@functools.lru_cache(maxsize=None)
def _jitted_apply(family, train, **kwargs):
  """One compiled forward per model and mode (compiling dominates on a
  small CPU). In train mode the updated 'batch_stats' come back too."""
  model = models.get_model(family, **kwargs)
  if train:
    return jax.jit(lambda variables, images: model.apply(
        variables, images, train=True, mutable=['batch_stats']))
  return jax.jit(lambda variables, images: model.apply(variables, images))


def forward(family, golden_kwargs, variables, images, train=False,
            **overrides):
  """get_model(family, **golden_kwargs, **overrides).apply(variables,
  images), jitted once per model and mode."""
  return _jitted_apply(family, train, **dict(golden_kwargs, **overrides))(
      variables, jnp.asarray(images))
