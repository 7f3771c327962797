"""Writes the golden files under tests/golden/ from timm (PyTorch).

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/make_golden.py

Small timm models with random weights are built; their weights (timm
names), the inputs and timm's outputs are saved as .npz. The same weights are
also written in the `.npz` layout of Google's original ViT / Mixer code and of
big_vision, with a mapping written here independently of
`vit_jax.weights`, so the tests check both importers against timm.

torchvision is not required: timm only imports it for data transforms and
feature extraction, so a placeholder module is installed when it is absent.
"""

import enum
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

import numpy as np

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')


def _install_torchvision_placeholder():
  """Lets `import timm` work without torchvision (no CPU build here)."""
  if importlib.util.find_spec('torchvision') is not None:
    return

  class Anything(type):
    def __getattr__(cls, name):
      return cls

  placeholder_class = Anything('Placeholder', (), {'__init__':
                                                   lambda self, *a, **k: None})
  interpolation = enum.Enum(
      'InterpolationMode',
      'NEAREST NEAREST_EXACT BILINEAR BICUBIC BOX HAMMING LANCZOS')

  class PlaceholderModule(types.ModuleType):
    def __getattr__(self, name):
      if name == 'InterpolationMode':
        return interpolation
      if name.startswith('__'):
        raise AttributeError(name)
      return placeholder_class

  class Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
      if fullname.split('.')[0] == 'torchvision':
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
      return None

    def create_module(self, spec):
      module = PlaceholderModule(spec.name)
      module.__path__ = []
      return module

    def exec_module(self, module):
      pass

  sys.meta_path.insert(0, Finder())


_install_torchvision_placeholder()

import timm  # noqa: E402
import torch  # noqa: E402
from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.models.mlp_mixer import MlpMixer  # noqa: E402
from timm.models.vision_transformer import VisionTransformer  # noqa: E402

IMAGE_SIZE = 32
BATCH = 3

# name -> (constructor, kwargs, our get_model kwargs recorded for the tests)
CASES = {
    'vit_cls': (VisionTransformer, dict(
        img_size=IMAGE_SIZE, patch_size=8, embed_dim=64, depth=2, num_heads=2,
        mlp_ratio=2.0, num_classes=10, global_pool='token')),
    'vit_gap': (VisionTransformer, dict(
        img_size=IMAGE_SIZE, patch_size=8, embed_dim=64, depth=2, num_heads=4,
        mlp_ratio=2.0, num_classes=10, global_pool='avg', class_token=False,
        fc_norm=False)),
    'vit_gap_fcnorm': (VisionTransformer, dict(
        img_size=IMAGE_SIZE, patch_size=8, embed_dim=64, depth=2, num_heads=4,
        mlp_ratio=2.0, num_classes=10, global_pool='avg', class_token=False,
        fc_norm=True)),
    'vit_map': (VisionTransformer, dict(
        img_size=IMAGE_SIZE, patch_size=8, embed_dim=64, depth=2, num_heads=4,
        mlp_ratio=2.0, num_classes=10, global_pool='map', class_token=False)),
    'mixer': (MlpMixer, dict(
        img_size=IMAGE_SIZE, patch_size=8, embed_dim=64, num_blocks=2,
        mlp_ratio=(0.5, 2.0), num_classes=10)),
}


def _randomize(model, seed):
  """Random weights everywhere (timm zero-initialises some, e.g. biases)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      noise = torch.randn(param.shape, generator=generator)
      if 'norm' in name and name.endswith('weight'):
        param.copy_(1.0 + 0.2 * noise)
      else:
        fan_in = param.shape[1] if param.ndim == 2 else 1
        if param.ndim == 4:
          fan_in = param.shape[1] * param.shape[2] * param.shape[3]
        param.copy_(noise / np.sqrt(max(fan_in, 1)) if param.ndim >= 2
                    else 0.2 * noise)


def _to_numpy(state_dict):
  return {k: v.detach().cpu().numpy().astype(np.float32)
          for k, v in state_dict.items()}


# -- An independent mapping from timm names to Google's original layouts. --

def _dense(sd, timm_name):
  return {'kernel': sd[f'{timm_name}.weight'].T, 'bias': sd[f'{timm_name}.bias']}


def _norm(sd, timm_name):
  return {'scale': sd[f'{timm_name}.weight'], 'bias': sd[f'{timm_name}.bias']}


def _attention(sd, prefix, heads, qkv_names):
  """timm fused / split projections -> query/key/value/out [D, H, hd]."""
  out = {}
  if qkv_names == 'qkv':
    weights = np.split(sd[f'{prefix}.qkv.weight'], 3)
    biases = np.split(sd[f'{prefix}.qkv.bias'], 3)
  else:  # attention pooling: q and fused kv
    weights = [sd[f'{prefix}.q.weight']] + np.split(sd[f'{prefix}.kv.weight'], 2)
    biases = [sd[f'{prefix}.q.bias']] + np.split(sd[f'{prefix}.kv.bias'], 2)
  for label, weight, bias in zip(('query', 'key', 'value'), weights, biases):
    width = weight.shape[1]
    out[f'{label}/kernel'] = weight.T.reshape(width, heads, -1)
    out[f'{label}/bias'] = bias.reshape(heads, -1)
  proj = sd[f'{prefix}.proj.weight']
  out['out/kernel'] = proj.T.reshape(heads, -1, proj.shape[0])
  out['out/bias'] = sd[f'{prefix}.proj.bias']
  return out


def _put(npz, prefix, entries):
  for key, value in entries.items():
    npz[f'{prefix}/{key}'] = value


def vit_original_layout(sd, heads, depth):
  """google-research/vision_transformer names (class-token models)."""
  npz = {'cls': sd['cls_token'],
         'Transformer/posembed_input/pos_embedding': sd['pos_embed'],
         'embedding/kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
         'embedding/bias': sd['patch_embed.proj.bias']}
  for i in range(depth):
    block = f'Transformer/encoderblock_{i}'
    _put(npz, f'{block}/LayerNorm_0', _norm(sd, f'blocks.{i}.norm1'))
    _put(npz, f'{block}/MultiHeadDotProductAttention_1',
         _attention(sd, f'blocks.{i}.attn', heads, 'qkv'))
    _put(npz, f'{block}/LayerNorm_2', _norm(sd, f'blocks.{i}.norm2'))
    _put(npz, f'{block}/MlpBlock_3/Dense_0', _dense(sd, f'blocks.{i}.mlp.fc1'))
    _put(npz, f'{block}/MlpBlock_3/Dense_1', _dense(sd, f'blocks.{i}.mlp.fc2'))
  _put(npz, 'Transformer/encoder_norm', _norm(sd, 'norm'))
  _put(npz, 'head', _dense(sd, 'head'))
  return npz


def vit_big_vision_layout(sd, heads, depth):
  """big_vision names with scanned blocks and a MAP head."""
  npz = {'pos_embedding': sd['pos_embed'],
         'embedding/kernel': sd['patch_embed.proj.weight'].transpose(2, 3, 1, 0),
         'embedding/bias': sd['patch_embed.proj.bias']}
  blocks = []
  for i in range(depth):
    block = {}
    _put(block, 'LayerNorm_0', _norm(sd, f'blocks.{i}.norm1'))
    _put(block, 'MultiHeadDotProductAttention_0',
         _attention(sd, f'blocks.{i}.attn', heads, 'qkv'))
    _put(block, 'LayerNorm_1', _norm(sd, f'blocks.{i}.norm2'))
    _put(block, 'MlpBlock_0/Dense_0', _dense(sd, f'blocks.{i}.mlp.fc1'))
    _put(block, 'MlpBlock_0/Dense_1', _dense(sd, f'blocks.{i}.mlp.fc2'))
    blocks.append(block)
  for key in blocks[0]:
    npz[f'Transformer/encoderblock/{key}'] = np.stack([b[key] for b in blocks])
  _put(npz, 'Transformer/encoder_norm', _norm(sd, 'norm'))
  npz['MAPHead_0/probe'] = sd['attn_pool.latent']
  _put(npz, 'MAPHead_0/MultiHeadDotProductAttention_0',
       _attention(sd, 'attn_pool', heads, 'q_kv'))
  _put(npz, 'MAPHead_0/LayerNorm_0', _norm(sd, 'attn_pool.norm'))
  _put(npz, 'MAPHead_0/MlpBlock_0/Dense_0', _dense(sd, 'attn_pool.mlp.fc1'))
  _put(npz, 'MAPHead_0/MlpBlock_0/Dense_1', _dense(sd, 'attn_pool.mlp.fc2'))
  _put(npz, 'head', _dense(sd, 'head'))
  return npz


def mixer_original_layout(sd, depth):
  npz = {'stem/kernel': sd['stem.proj.weight'].transpose(2, 3, 1, 0),
         'stem/bias': sd['stem.proj.bias']}
  for i in range(depth):
    block = f'MixerBlock_{i}'
    _put(npz, f'{block}/LayerNorm_0', _norm(sd, f'blocks.{i}.norm1'))
    _put(npz, f'{block}/token_mixing/Dense_0',
         _dense(sd, f'blocks.{i}.mlp_tokens.fc1'))
    _put(npz, f'{block}/token_mixing/Dense_1',
         _dense(sd, f'blocks.{i}.mlp_tokens.fc2'))
    _put(npz, f'{block}/LayerNorm_1', _norm(sd, f'blocks.{i}.norm2'))
    _put(npz, f'{block}/channel_mixing/Dense_0',
         _dense(sd, f'blocks.{i}.mlp_channels.fc1'))
    _put(npz, f'{block}/channel_mixing/Dense_1',
         _dense(sd, f'blocks.{i}.mlp_channels.fc2'))
  _put(npz, 'pre_head_layer_norm', _norm(sd, 'norm'))
  _put(npz, 'head', _dense(sd, 'head'))
  return npz


def _save(name, arrays):
  path = os.path.join(GOLDEN_DIR, name)
  np.savez(path, **arrays)
  print(f'wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)')


def main():
  os.makedirs(GOLDEN_DIR, exist_ok=True)
  torch.manual_seed(0)
  images = torch.randn(BATCH, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.
                       Generator().manual_seed(1))
  images_big = torch.randn(BATCH, 3, 48, 48,
                           generator=torch.Generator().manual_seed(2))
  for seed, (name, (constructor, kwargs)) in enumerate(CASES.items()):
    model = constructor(**kwargs).eval()
    _randomize(model, seed)
    state_dict = _to_numpy(model.state_dict())
    with torch.no_grad():
      features = model.forward_features(images)
      pre_logits = model.forward_head(features, pre_logits=True)
      logits = model.forward_head(features)
    outputs = {
        'images': images.permute(0, 2, 3, 1).numpy(),  # NHWC
        'logits': logits.numpy(),
        'pre_logits': pre_logits.numpy(),
    }
    if name == 'vit_cls':
      # The same weights at 48 px: timm resamples the position embedding
      # (bilinear, class token apart) and runs at the new resolution.
      big = constructor(**{**kwargs, 'img_size': 48}).eval()
      big_sd = model.state_dict()
      big_sd['pos_embed'] = resample_abs_pos_embed(
          big_sd['pos_embed'], new_size=(6, 6), old_size=(4, 4),
          num_prefix_tokens=1, interpolation='bilinear', antialias=False)
      big.load_state_dict(big_sd)
      with torch.no_grad():
        outputs['images_48'] = images_big.permute(0, 2, 3, 1).numpy()
        outputs['logits_48'] = big(images_big).numpy()
        outputs['pos_embed_48'] = big_sd['pos_embed'].numpy()
    _save(f'{name}_timm.npz', {f'timm/{k}': v for k, v in state_dict.items()}
          | {f'out/{k}': v for k, v in outputs.items()})
    heads = kwargs.get('num_heads')
    depth = kwargs.get('depth', kwargs.get('num_blocks'))
    if name == 'vit_cls':
      _save('vit_cls_original.npz', vit_original_layout(state_dict, heads, depth))
    elif name == 'vit_map':
      _save('vit_map_big_vision.npz',
            vit_big_vision_layout(state_dict, heads, depth))
    elif name == 'mixer':
      _save('mixer_original.npz', mixer_original_layout(state_dict, depth))
  print('timm', timm.__version__, 'torch', torch.__version__)


if __name__ == '__main__':
  main()
