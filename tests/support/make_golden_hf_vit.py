"""Writes tests/golden/vit_hf.npz from Hugging Face's ViT (transformers).

Run by hand, in an environment with torch and transformers (not needed by
the tests):

    pip install torch==2.13.0 transformers==5.24.0 safetensors
    python tests/support/make_golden_hf_vit.py [--out DIR]

A tiny `ViTForImageClassification` with random weights is built (16 px
images, 4 px patches, width 32, 2 layers, 2 heads, MLP width 64, 10
classes; transformers' default layer_norm_eps of 1e-12). Saved, for
tests/test_pretrained.py:

    hf/<name>           its state dict as `save_pretrained` writes it: the
                        names of the checkpoints on the Hub
                        ('vit.encoder.layer.0.attention.attention.query...')
    names/hub, names/module  the same entries' names in the checkpoint and
                        in transformers 5.x's modules ('vit.layers.0.
                        attention.q_proj...'), paired by value
    pooler/<name>       the pooler of a `ViTModel` holding the same encoder
    out/images          NHWC input images
    out/logits          the classifier's logits
    out/pooler_output   the ViTModel's pooled output (tanh pre-logits)
    mae_names/hub, mae_names/module  the same pairs for the ViTMAE of
                        make_golden_mae.py (whose golden file holds module
                        names), so that the tests can read it in both.
                        (transformers 5.24 writes the decoder's blocks as
                        'decoder.decoder_encoder.layer.N', where the Hub's
                        checkpoints, written by transformers 4, say
                        'decoder.decoder_layers.N'; it reads both.)

torchvision is hidden from transformers (see golden_torch.py, which the
generators share; no ViT module needs it).
"""

import os
import tempfile

import numpy as np
import torch

import golden_torch
from make_golden_mae import CONFIG as MAE_CONFIG  # only its names are used

with golden_torch.without_torchvision():
  from safetensors import numpy as safetensors_numpy
  from transformers import ViTConfig
  from transformers import ViTForImageClassification
  from transformers import ViTMAEConfig
  from transformers import ViTMAEForPreTraining
  from transformers import ViTModel

BATCH = 2
CONFIG = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
              num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64, hidden_act='gelu', qkv_bias=True,
              num_labels=10)


def _saved_and_paired(model):
  """(the state dict `save_pretrained` writes, [(saved name, module name)])
  with the names paired by equal values."""
  with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    saved = safetensors_numpy.load_file(
        os.path.join(directory, 'model.safetensors'))
  module = golden_torch.to_numpy(model.state_dict())
  pairs = []
  for saved_name, value in saved.items():
    (module_name,) = [name for name, other in module.items()
                      if other.shape == value.shape
                      and np.array_equal(other, value)]
    pairs.append((saved_name, module_name))
  assert len(pairs) == len(module), (len(pairs), len(module))
  return saved, pairs


def _names(pairs):
  """Names as ASCII bytes (a quarter of numpy's unicode strings)."""
  return {'hub': np.array([hub for hub, _ in pairs], 'S'),
          'module': np.array([module for _, module in pairs], 'S')}


def write(out_dir):
  config = golden_torch.eager(ViTConfig(**CONFIG))
  classifier = ViTForImageClassification(config).eval()
  golden_torch.randomize(classifier, seed=0, fan_in=golden_torch.hf_fan_in)
  saved, pairs = _saved_and_paired(classifier)

  # A ViTModel with the same encoder and its own (random) pooler.
  encoder = ViTModel(config, add_pooling_layer=True).eval()
  encoder.load_state_dict(classifier.vit.state_dict(), strict=False)
  generator = torch.Generator().manual_seed(3)
  with torch.no_grad():
    for param in encoder.pooler.parameters():
      param.copy_(torch.randn(param.shape, generator=generator)
                  / np.sqrt(param.shape[-1]))
  pooler = golden_torch.to_numpy(
      {f'pooler.{k}': v for k, v in encoder.pooler.state_dict().items()})

  size = CONFIG['image_size']
  images = golden_torch.random_images(BATCH, size, size, seed=1)
  with torch.no_grad():
    logits = classifier(pixel_values=images).logits
    pooled = encoder(pixel_values=images).pooler_output
  outputs = {'images': golden_torch.nhwc(images),
             'logits': logits.numpy(), 'pooler_output': pooled.numpy()}

  mae = ViTMAEForPreTraining(ViTMAEConfig(**MAE_CONFIG)).eval()
  # Position tables too: every value unique, to pair the names by value.
  golden_torch.randomize(mae, seed=4, fan_in=golden_torch.hf_fan_in)
  _, mae_pairs = _saved_and_paired(mae)

  golden_torch.save(out_dir, 'vit_hf.npz', hf=saved, pooler=pooler,
                    out=outputs, names=_names(pairs),
                    mae_names=_names(mae_pairs))


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
