"""Writes tests/golden/mae_hf.npz from Hugging Face's `ViTMAEForPreTraining`.

Run by hand, in an environment with torch and transformers (not needed by
the tests):

    pip install torch==2.13.0 transformers==5.23.0
    python tests/make_golden_mae.py

A tiny ViTMAE with random weights is built (32 px images, 8 px patches, a
48-wide 2-layer encoder, a 32-wide 2-layer decoder: the file stays under
500 KB). Its state dict (HF names), the images, a fixed masking noise and
HF's outputs (loss, mask, per-patch predictions) are saved, once with plain
and once with per-patch normalised pixel targets (`norm_pix_loss`).
tests/test_mae.py maps the weights onto `vit_jax.models.mae.MAE` with
`vit_jax.weights.from_hf` and compares.
"""

import os

import numpy as np
import torch
import transformers
from transformers import ViTMAEConfig, ViTMAEForPreTraining

from golden_cases import GOLDEN_DIR  # same directory; no timm needed here

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


def _randomize(model, seed):
  """Random weights everywhere but the fixed position embeddings."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name in _POSITION_EMBEDDINGS:
        continue
      noise = torch.randn(param.shape, generator=generator)
      if 'norm' in name and name.endswith('weight'):
        param.copy_(1.0 + 0.2 * noise)
      elif param.ndim >= 2 and not name.endswith(('cls_token', 'mask_token')):
        fan_in = int(np.prod(param.shape[1:]))
        param.copy_(noise / np.sqrt(fan_in))
      else:  # biases, class and mask tokens
        param.copy_(0.2 * noise)


def _save(name, arrays):
  path = os.path.join(GOLDEN_DIR, name)
  np.savez(path, **arrays)
  print(f'wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)')


def main():
  config = ViTMAEConfig(**CONFIG)
  config._attn_implementation = 'eager'
  model = ViTMAEForPreTraining(config).eval()
  _init_position_embeddings(model)
  _randomize(model, seed=0)
  state_dict = {k: v.detach().cpu().numpy().astype(np.float32)
                for k, v in model.state_dict().items()}

  size, patch = CONFIG['image_size'], CONFIG['patch_size']
  num_patches = (size // patch) ** 2
  images = torch.randn(BATCH, 3, size, size,
                       generator=torch.Generator().manual_seed(1))
  noise = torch.rand(BATCH, num_patches,
                     generator=torch.Generator().manual_seed(2))
  outputs = {'images': images.permute(0, 2, 3, 1).numpy(),  # NHWC
             'noise': noise.numpy()}
  for norm_pix_loss in (False, True):
    model.config.norm_pix_loss = norm_pix_loss
    with torch.no_grad():
      result = model(pixel_values=images, noise=noise)
    suffix = '_normpix' if norm_pix_loss else ''
    outputs[f'loss{suffix}'] = result.loss.numpy()
    outputs[f'mask{suffix}'] = result.mask.numpy()
    outputs[f'pred{suffix}'] = result.logits.numpy()  # [B, N, p*p*C]
  _save('mae_hf.npz', {f'hf/{k}': v for k, v in state_dict.items()}
        | {f'out/{k}': v for k, v in outputs.items()})
  print('transformers', transformers.__version__, 'torch', torch.__version__)


if __name__ == '__main__':
  main()
