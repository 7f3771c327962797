"""MAE's weights in Hugging Face transformers' ViTMAEForPreTraining layout
(its encoder is transformers' ViT's, `vit_jax.weights.vit`)."""

from vit_jax.weights import vit
from vit_jax.weights.core import buffer, dense, entry, norm

NAME = 'mae'


def _decoder_heads(model, index):
  del index
  return model.decoder_num_heads


HF = [
    *vit.HF_ENCODER,
    # Fixed sin-cos tables that HF stores: `vit_jax.models.mae` computes them.
    buffer(vit.hf_encoder_names('embeddings.position_embeddings')),
    buffer('decoder.decoder_pos_embed'),
    entry('decoder.mask_token', 'mask_token'),
    *dense('decoder.decoder_embed', 'decoder_embed'),
    # 'decoder_encoder.layer': how transformers 5.x's save_pretrained
    # writes 'decoder_layers' back (and reads it again).
    *vit.hf_blocks(('decoder.decoder_layers.{0}.',
                    'decoder.decoder_encoder.layer.{0}.'),
                   'decoder/block_{0}/', heads=_decoder_heads),
    *norm('decoder.decoder_norm', 'decoder_norm'),
    *dense('decoder.decoder_pred', 'decoder_pred'),
]
