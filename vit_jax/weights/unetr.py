"""UNETR's weights in MONAI's layout (`monai.networks.nets.UNETR`, 1.6.1):
the ViT under `vit.` (its patch embedding a Conv3d, the position
embedding a bare parameter, qkv one fused Linear without bias by
default, `norm_cross_attn` held but unused), then MONAI's decoder blocks,
each convolution wrapped as `<block>.conv` (its `Convolution`) and
without bias but the output's."""

from vit_jax.weights import core
from vit_jax.weights.core import Transform, dense, entry, norm

NAME = 'unetr'

# torch Conv3d [out, in, kd, kh, kw] <-> DHWIO [kd, kh, kw, in, out]; and
# ConvTranspose3d [in, out, kd, kh, kw] <-> Flax's ConvTranspose with
# transpose_kernel=True [kd, kh, kw, out, in]: the same permutation, both
# kernels putting the spatial axes first and reversing the channel axes.
CONV3D = Transform('conv3d', lambda w, heads: w.transpose(2, 3, 4, 1, 0),
                   lambda kernel: kernel.transpose(4, 3, 0, 1, 2))


def _kernel(theirs: str, ours: str) -> core.Entry:
  return entry(theirs + '.conv.weight', ours + '/kernel', CONV3D)


def _res_block(theirs: str, ours: str):
  """MONAI's UnetResBlock: conv1, conv2 and the shortcut's conv3 (norms
  without parameters)."""
  return [_kernel(f'{theirs}.conv{k}', f'{ours}/conv{k}') for k in (1, 2, 3)]


MONAI = [
    *dense('vit.patch_embedding.patch_embeddings', 'patch_embed', CONV3D),
    entry('vit.patch_embedding.position_embeddings', 'pos_embedding'),
    *norm('vit.blocks.{0}.norm1', 'encoder/block_{0}/norm1'),
    *core.attention('encoder/block_{0}/attn', 'vit.blocks.{0}.attn.qkv',
                    'vit.blocks.{0}.attn.out_proj'),
    *norm('vit.blocks.{0}.norm2', 'encoder/block_{0}/norm2'),
    *norm('vit.blocks.{0}.norm_cross_attn',
          'encoder/block_{0}/cross_attn_norm'),
    *dense('vit.blocks.{0}.mlp.linear1', 'encoder/block_{0}/mlp/fc1'),
    *dense('vit.blocks.{0}.mlp.linear2', 'encoder/block_{0}/mlp/fc2'),
    *norm('vit.norm', 'encoder_norm'),
    *_res_block('encoder1.layer', 'encoder1'),
    # encoder2..4 (UnetrPrUpBlock): the first upsampling, then (up, res)
    # pairs as nn.Sequential's items 0 and 1.
    _kernel('encoder{0}.transp_conv_init', 'encoder{0}/up'),
    _kernel('encoder{0}.blocks.{1}.0', 'encoder{0}/up_{1}'),
    *_res_block('encoder{0}.blocks.{1}.1', 'encoder{0}/res_{1}'),
    # decoder5..2 (UnetrUpBlock).
    _kernel('decoder{0}.transp_conv', 'decoder{0}/up'),
    *_res_block('decoder{0}.conv_block', 'decoder{0}/res'),
    *dense('out.conv.conv', 'head', CONV3D),
]
