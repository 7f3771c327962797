"""Writes the ViT and Mixer golden files under tests/golden/ from timm.

Run by hand, in an environment with torch and timm (not needed by the tests):

    pip install torch==2.13.0 timm==1.0.31 safetensors pillow
    python tests/support/make_golden.py [--out DIR]

Small timm models with random weights are built; their weights (timm
names), the inputs and timm's outputs are saved as .npz. The same weights are
also written in the `.npz` layout of Google's original ViT / Mixer code and of
big_vision, with a mapping written here independently of
`vit_jax.weights`, so the tests check both importers against timm.

torchvision is not required (golden_torch.py, which the generators share,
stands in for it).
"""

import numpy as np
import torch

import golden_torch

with golden_torch.without_torchvision():
  from timm.layers import resample_abs_pos_embed
  from timm.models.mlp_mixer import MlpMixer
  from timm.models.vision_transformer import VisionTransformer

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


def write(out_dir):
  torch.manual_seed(0)
  images = golden_torch.random_images(BATCH, IMAGE_SIZE, IMAGE_SIZE, seed=1)
  images_big = golden_torch.random_images(BATCH, 48, 48, seed=2)
  for seed, (name, (constructor, kwargs)) in enumerate(CASES.items()):
    model = constructor(**kwargs).eval()
    golden_torch.randomize(model, seed)
    state_dict = golden_torch.to_numpy(model.state_dict())
    outputs = golden_torch.classifier_outputs(model, images)
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
        outputs['images_48'] = golden_torch.nhwc(images_big)
        outputs['logits_48'] = big(images_big).numpy()
        outputs['pos_embed_48'] = big_sd['pos_embed'].numpy()
    golden_torch.save(out_dir, f'{name}_timm.npz', timm=state_dict,
                      out=outputs)
    heads = kwargs.get('num_heads')
    depth = kwargs.get('depth', kwargs.get('num_blocks'))
    if name == 'vit_cls':
      golden_torch.save(out_dir, 'vit_cls_original.npz',
                        vit_original_layout(state_dict, heads, depth))
    elif name == 'vit_map':
      golden_torch.save(out_dir, 'vit_map_big_vision.npz',
                        vit_big_vision_layout(state_dict, heads, depth))
    elif name == 'mixer':
      golden_torch.save(out_dir, 'mixer_original.npz',
                        mixer_original_layout(state_dict, depth))


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
