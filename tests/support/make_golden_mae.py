"""Writes tests/golden/mae_hf.npz from Hugging Face's `ViTMAEForPreTraining`.

Run by hand, in an environment with torch and transformers (not needed by
the tests):

    pip install torch==2.13.0 transformers==5.23.0
    python tests/support/make_golden_mae.py [--out DIR]

A tiny ViTMAE with random weights is built (32 px images, 8 px patches, a
48-wide 2-layer encoder, a 32-wide 2-layer decoder: the file stays under
500 KB). Its state dict (HF names), the images, a fixed masking noise and
HF's outputs (loss, mask, per-patch predictions) are saved, once with plain
and once with per-patch normalised pixel targets (`norm_pix_loss`).
tests/test_mae.py maps the weights onto `vit_jax.models.mae.MAE` with
`vit_jax.weights.from_hf` and compares.
"""

import torch

import golden_torch

with golden_torch.without_torchvision():
  from transformers import ViTMAEConfig, ViTMAEForPreTraining

BATCH = 3
CONFIG = dict(
    image_size=32, patch_size=8, num_channels=3,
    hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=96,
    decoder_hidden_size=32, decoder_num_hidden_layers=2,
    decoder_num_attention_heads=4, decoder_intermediate_size=64,
    mask_ratio=0.75, qkv_bias=True,
    layer_norm_eps=1e-6,  # HF's default is 1e-12; ours (and MAE's) 1e-6.
    hidden_act='gelu',  # the exact (erf) GELU, as ours.
)

# Fixed (not learned) tensors, yet HF keeps the sin-cos tables as parameters.
_POSITION_EMBEDDINGS = ('vit.embeddings.position_embeddings',
                        'decoder.decoder_pos_embed')


def _init_position_embeddings(model):
  """Fills the sin-cos tables with HF's own initialisers.

  transformers 5.x leaves them zero when a model is built directly (the
  pretrained checkpoints carry them), so its initialisers are called here.
  """
  embeddings = model.vit.embeddings
  embeddings.patch_embeddings.projection._is_hf_initialized = False
  embeddings.initialize_weights()
  model.decoder.initialize_weights(embeddings.patch_embeddings.num_patches)
  for name in _POSITION_EMBEDDINGS:
    table = model.state_dict()[name]
    assert table[0, 2:].abs().max() > 0.5, f'{name} was not initialised'


def write(out_dir):
  model = ViTMAEForPreTraining(
      golden_torch.eager(ViTMAEConfig(**CONFIG))).eval()
  _init_position_embeddings(model)
  golden_torch.randomize(model, seed=0, fan_in=golden_torch.hf_fan_in,
                         skip=_POSITION_EMBEDDINGS)
  state_dict = golden_torch.to_numpy(model.state_dict())

  size, patch = CONFIG['image_size'], CONFIG['patch_size']
  num_patches = (size // patch) ** 2
  images = golden_torch.random_images(BATCH, size, size, seed=1)
  noise = torch.rand(BATCH, num_patches,
                     generator=torch.Generator().manual_seed(2))
  outputs = {'images': golden_torch.nhwc(images), 'noise': noise.numpy()}
  for norm_pix_loss in (False, True):
    model.config.norm_pix_loss = norm_pix_loss
    with torch.no_grad():
      result = model(pixel_values=images, noise=noise)
    suffix = '_normpix' if norm_pix_loss else ''
    outputs[f'loss{suffix}'] = result.loss.numpy()
    outputs[f'mask{suffix}'] = result.mask.numpy()
    outputs[f'pred{suffix}'] = result.logits.numpy()  # [B, N, p*p*C]
  golden_torch.save(out_dir, 'mae_hf.npz', hf=state_dict, out=outputs)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
