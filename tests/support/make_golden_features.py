"""Writes tests/golden/features_<case>.npz: timm's `forward_intermediates`
of the golden models (and, for the MAE, transformers' encoder layers).

Run by hand, in an environment with torch, timm and transformers (not needed
by the tests), after the generators of the models themselves:

    pip install torch==2.13.0 timm==1.0.31 transformers==5.24.0 safetensors
    python tests/support/make_golden_features.py [--out DIR]

No new weights: each case's model is built with the constructor arguments
of its generator (make_golden.py, make_golden_swin.py, make_golden_xcit.py,
make_golden_convmixer.py, make_golden_mae.py, make_golden_beit.py,
make_golden_swinv2.py, make_golden_vit_variants.py) and loaded with the state
dict committed in its tests/golden/ file, then run on that file's images
(checked: its logits, or the MAE's loss, come out as committed). Saved,
NHWC where timm gives NCHW, for tests/test_features.py:

    images                 the case's images (NHWC)
    layer/<i>              layer i's output, norm=False (every layer)
    layer_norm/<i>         the same with norm=True
    prefix/<i>             its prefix tokens (return_prefix_tokens), where
                           the model has them
    nlc/<i>                output_fmt='NLC', where timm offers it
    final                  the features timm returns beside them
    take/<n>/<spec>        timm's feature_take_indices(n, spec) for a few
                           specs ('all': None, 'last<k>': k, 'i,j': [i, j])

The MAE has no `forward_intermediates`: its encoder's layers are read with
forward hooks, on all patches (mask ratio 0, noise rising so that nothing
is shuffled), normalised with its final LayerNorm. torchvision is not
required (see golden_torch.py, which the generators share).
"""

import inspect
import os

import numpy as np
import torch

import golden_torch
import make_golden
import make_golden_beit
import make_golden_convmixer
import make_golden_mae
import make_golden_swin
import make_golden_swinv2
import make_golden_vit_variants
import make_golden_xcit

with golden_torch.without_torchvision():
  from timm.models import _features as timm_features
  from timm.models.beit import Beit
  from timm.models.convmixer import ConvMixer
  from timm.models.swin_transformer import SwinTransformer
  from timm.models.swin_transformer_v2 import SwinTransformerV2
  from timm.models.vision_transformer import VisionTransformer
  from timm.models.xcit import Xcit
  from transformers import ViTMAEConfig, ViTMAEForPreTraining

# case -> (constructor, kwargs, golden file, whether timm offers
# output_fmt='NLC'); the final features are tokens or NCHW maps, except
# Swin's and Swin V2's, which are NHWC already.
TIMM_CASES = {
    name: (constructor, kwargs, f'{name}_timm.npz', True)
    for name, (constructor, kwargs) in make_golden.CASES.items()
    if name in ('vit_cls', 'vit_gap_fcnorm', 'mixer')}
TIMM_CASES.update({
    'swin': (SwinTransformer, make_golden_swin.SWIN_KWARGS, 'swin_timm.npz',
             False),
    'xcit': (Xcit, make_golden_xcit.XCIT_KWARGS, 'xcit_timm.npz', True),
    'convmixer': (ConvMixer, make_golden_convmixer.CONVMIXER_KWARGS,
                  'convmixer_timm.npz', False),
    # BEiT with fc_norm (timm's final norm is then an Identity) and with
    # class-token pooling after the final norm, on a 3x4 grid.
    'beit': (Beit, make_golden_beit.BEIT_KWARGS, 'beit_timm.npz', True),
    'beit_cls': (Beit, make_golden_beit.CLS_KWARGS, 'beit_cls_timm.npz',
                 True),
    'swinv2': (SwinTransformerV2, make_golden_swinv2.SWINV2_KWARGS,
               'swinv2_timm.npz', False),
})
# Four registers besides the class token (five prefix tokens); a CLIP tower,
# its pre-norm before the blocks.
TIMM_CASES.update({
    name: (VisionTransformer, make_golden_vit_variants.CASES[name][0],
           f'{name}_timm.npz', True)
    for name in ('vit_dinov2_reg4', 'vit_clip_quickgelu')})
HIERARCHICAL = (SwinTransformer, SwinTransformerV2)

TAKE_SPECS = {'all': None, 'last1': 1, 'last3': 3, '0': [0], '-1': [-1],
              '2,-1': [2, -1], '-4,3': [-4, 3]}


def _read(file_name, prefix):
  with np.load(os.path.join(golden_torch.GOLDEN_DIR, file_name)) as archive:
    weights = {k[len(prefix):]: torch.from_numpy(archive[k])
               for k in archive.files if k.startswith(prefix)}
    outputs = {k[len('out/'):]: archive[k] for k in archive.files
               if k.startswith('out/')}
  return weights, outputs


def _nchw(images):
  return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))


def _maps(tensors):
  """NCHW maps as NHWC arrays; token tensors as they are."""
  return [golden_torch.nhwc(t) if t.ndim == 4 else t.numpy() for t in tensors]


def timm_case(constructor, kwargs, file_name, has_nlc):
  state_dict, outputs = _read(file_name, 'timm/')
  model = constructor(**kwargs).eval()
  model.load_state_dict(state_dict)
  images = _nchw(outputs['images'])
  arrays = {'images': outputs['images']}
  with torch.no_grad():
    np.testing.assert_allclose(model(images).numpy(), outputs['logits'],
                               atol=1e-5)
    final, layers = model.forward_intermediates(images)
    normed = model.forward_intermediates(images, norm=True,
                                         intermediates_only=True)
    arrays['final'] = (final.numpy() if constructor in HIERARCHICAL
                       else _maps([final])[0])
    for group, tensors in (('layer', layers), ('layer_norm', normed)):
      arrays.update({f'{group}/{i}': array
                     for i, array in enumerate(_maps(tensors))})
    if has_nlc:
      nlc = model.forward_intermediates(images, output_fmt='NLC',
                                        intermediates_only=True)
      arrays.update({f'nlc/{i}': t.numpy() for i, t in enumerate(nlc)})
    if getattr(model, 'num_prefix_tokens', 0) and 'return_prefix_tokens' in (
        inspect.signature(model.forward_intermediates).parameters):
      pairs = model.forward_intermediates(images, return_prefix_tokens=True,
                                          intermediates_only=True)
      arrays.update({f'prefix/{i}': prefix.numpy()
                     for i, (_, prefix) in enumerate(pairs)})
  return arrays


def mae_case():
  state_dict, outputs = _read('mae_hf.npz', 'hf/')
  config = ViTMAEConfig(**make_golden_mae.CONFIG)
  model = ViTMAEForPreTraining(golden_torch.eager(config)).eval()
  model.load_state_dict(state_dict)
  images = _nchw(outputs['images'])
  encoder = model.vit
  with torch.no_grad():
    result = model(pixel_values=images,
                   noise=torch.from_numpy(outputs['noise']))
    np.testing.assert_allclose(result.loss.numpy(), outputs['loss'],
                               atol=1e-6)
    model.config.mask_ratio = 0.0
    batch, num_patches = outputs['noise'].shape
    rising = torch.arange(num_patches, dtype=torch.float32).repeat(batch, 1)
    layers = []
    hooks = [layer.register_forward_hook(
        lambda module, args, output: layers.append(output))
             for layer in encoder.layers]
    final = encoder(pixel_values=images, noise=rising).last_hidden_state
    for hook in hooks:
      hook.remove()
    normed = [encoder.layernorm(tokens) for tokens in layers]
  side = make_golden_mae.CONFIG['image_size'] // make_golden_mae.CONFIG[
      'patch_size']
  arrays = {'images': outputs['images'], 'final': final.numpy()}
  for group, tensors in (('layer', layers), ('layer_norm', normed)):
    for i, tokens in enumerate(tensors):
      arrays[f'{group}/{i}'] = tokens[:, 1:].reshape(
          batch, side, side, -1).numpy()
      if group == 'layer':
        arrays[f'prefix/{i}'] = tokens[:, :1].numpy()
        arrays[f'nlc/{i}'] = tokens[:, 1:].numpy()
  return arrays


def take_indices():
  arrays = {}
  for num_features in (4, 12):
    for label, spec in TAKE_SPECS.items():
      taken, _ = timm_features.feature_take_indices(num_features, spec)
      arrays[f'take/{num_features}/{label}'] = np.asarray(taken, np.int32)
  return arrays


def write(out_dir):
  for name, case in TIMM_CASES.items():
    arrays = timm_case(*case)
    if name == 'vit_cls':
      arrays.update(take_indices())
    golden_torch.save(out_dir, f'features_{name}.npz', arrays)
  golden_torch.save(out_dir, 'features_mae.npz', mae_case())


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
