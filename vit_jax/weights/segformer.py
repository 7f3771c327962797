"""SegFormer's weights in Hugging Face transformers' layout
(SegformerForSemanticSegmentation): the names of the checkpoints on the Hub
('segformer.encoder.block.0.1.attention.self.query.weight', written by
transformers 4 and by 5.x's save_pretrained), which export writes, and
transformers 5.x's module names ('segformer.stages.0.blocks.1.attention.
q_proj.weight'), which import reads too. The decoder's BatchNorm running
averages go to the 'batch_stats' collection."""

from vit_jax.weights.core import (CONV, HEADS_BIAS, HEADS_IN, HEADS_OUT,
                                  batch_norm, dense, entry, norm)

NAME = 'segformer'

# The encoder the paper's training starts from: an ImageNet-1k Mix
# Transformer (transformers' SegformerForImageClassification, the Hub's
# nvidia/mit-b0 ... mit-b5) has the encoder's names, no 'decode_head.*' and
# a 1000-class 'classifier.*', which is dropped; the decoder and head keep
# their random initialisation (`init_from` kind 'hf').
ENCODER_CHECKPOINT = {'decoder_names': ('decode_head.',),
                      'dropped_names': ('classifier.',),
                      'fresh_paths': ('decoder/', 'head/')}


def _stage_heads(model, index):
  """The heads of the entry's stage (its first block index)."""
  return model.num_heads[index[0]]


_HUB_BLOCK = 'segformer.encoder.block.{0}.{1}.'
_MODULE_BLOCK = 'segformer.stages.{0}.blocks.{1}.'
_OURS = 'stage_{0}/block_{1}/'


def _block(hub: str, module: str):
  """A block's entry by (the Hub's name, transformers 5.x's); '{0}' is the
  stage, '{1}' the block."""
  return (_HUB_BLOCK + hub, _MODULE_BLOCK + module)


HF = [
    *dense(('segformer.encoder.patch_embeddings.{0}.proj',
                 'segformer.stages.{0}.patch_embeddings.proj'),
           'stage_{0}/patch_embed', CONV),
    *norm(('segformer.encoder.patch_embeddings.{0}.layer_norm',
                'segformer.stages.{0}.patch_embeddings.layer_norm'),
          'stage_{0}/patch_norm'),
    *norm(_block('layer_norm_1', 'layernorm_before'), _OURS + 'norm1'),
    *[e for part, module in (('query', 'q_proj'), ('key', 'k_proj'),
                             ('value', 'v_proj'))
      for e in dense(_block(f'attention.self.{part}',
                            f'attention.{module}'),
                     f'{_OURS}attn/{part}', HEADS_IN, HEADS_BIAS,
                     heads=_stage_heads)],
    *dense(_block('attention.output.dense', 'attention.o_proj'),
           _OURS + 'attn/out', HEADS_OUT, heads=_stage_heads),
    *dense(_block('attention.self.sr',
                  'attention.sequence_reduction.sequence_reduction'),
           _OURS + 'sr', CONV),
    *norm(_block('attention.self.layer_norm',
                 'attention.sequence_reduction.layer_norm'),
          _OURS + 'sr_norm'),
    *norm(_block('layer_norm_2', 'layernorm_after'), _OURS + 'norm2'),
    *dense(_block('mlp.dense1', 'mlp.fc1'), _OURS + 'mlp/fc1'),
    *dense(_block('mlp.dwconv.dwconv', 'mlp.dwconv.dwconv'),
           _OURS + 'mlp/dwconv', CONV),
    *dense(_block('mlp.dense2', 'mlp.fc2'), _OURS + 'mlp/fc2'),
    *norm(('segformer.encoder.layer_norm.{0}',
                'segformer.stages.{0}.layer_norm'), 'stage_{0}/norm'),
    *dense(('decode_head.linear_c.{0}.proj',
                 'decode_head.linear_projections.{0}.proj'),
           'decoder/proj_{0}'),
    # The fused features' kernel takes the stages last one first, as the
    # model concatenates them: it converts as it is.
    entry('decode_head.linear_fuse.weight', 'decoder/fuse/kernel', CONV),
    *batch_norm('decode_head.batch_norm', 'decoder/fuse_norm'),
    *dense('decode_head.classifier', 'head', CONV),
]
