"""Writes tests/golden/vit_hf.npz from Hugging Face's ViT (transformers).

Run by hand, in an environment with torch and transformers (not needed by
the tests):

    pip install torch==2.13.0 transformers==5.24.0 safetensors
    python tests/make_golden_hf_vit.py

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

torchvision is hidden from transformers (this environment's build does not
match torch, and no ViT module needs it).
"""

import importlib.util
import os
import tempfile

import numpy as np

_find_spec = importlib.util.find_spec
importlib.util.find_spec = lambda name, *args: (
    None if name.split('.')[0] == 'torchvision' else _find_spec(name, *args))
import torch  # noqa: E402
import transformers  # noqa: E402
from safetensors import numpy as safetensors_numpy  # noqa: E402
from transformers import ViTConfig  # noqa: E402
from transformers import ViTForImageClassification  # noqa: E402
from transformers import ViTMAEConfig  # noqa: E402
from transformers import ViTMAEForPreTraining  # noqa: E402
from transformers import ViTModel  # noqa: E402
importlib.util.find_spec = _find_spec

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'golden')
BATCH = 2
CONFIG = dict(image_size=16, patch_size=4, num_channels=3, hidden_size=32,
              num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64, hidden_act='gelu', qkv_bias=True,
              num_labels=10)
# make_golden_mae.py's model (only its names are used here).
MAE_CONFIG = dict(image_size=32, patch_size=8, num_channels=3,
                  hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=96, decoder_hidden_size=32,
                  decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                  decoder_intermediate_size=64, qkv_bias=True)


def _randomize(model, seed, skip=()):
  """Random weights everywhere (HF zero-initialises biases and tokens)."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name in skip:
        continue
      noise = torch.randn(param.shape, generator=generator)
      if 'norm' in name and name.endswith('weight'):
        param.copy_(1.0 + 0.2 * noise)
      elif param.ndim >= 2 and not name.endswith(('cls_token', 'mask_token')):
        param.copy_(noise / np.sqrt(int(np.prod(param.shape[1:]))))
      else:  # biases, tokens, position embeddings
        param.copy_(0.2 * noise)


def _numpy(state_dict):
  return {k: v.detach().cpu().numpy().astype(np.float32)
          for k, v in state_dict.items()}


def _saved_and_paired(model):
  """(the state dict `save_pretrained` writes, [(saved name, module name)])
  with the names paired by equal values."""
  with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    saved = safetensors_numpy.load_file(
        os.path.join(directory, 'model.safetensors'))
  module = _numpy(model.state_dict())
  pairs = []
  for saved_name, value in saved.items():
    (module_name,) = [name for name, other in module.items()
                      if other.shape == value.shape
                      and np.array_equal(other, value)]
    pairs.append((saved_name, module_name))
  assert len(pairs) == len(module), (len(pairs), len(module))
  return saved, pairs


def _names(prefix, pairs):
  """Names as ASCII bytes (a quarter of numpy's unicode strings)."""
  return {f'{prefix}/hub': np.array([hub for hub, _ in pairs], 'S'),
          f'{prefix}/module': np.array([module for _, module in pairs], 'S')}


def main():
  config = ViTConfig(**CONFIG)
  config._attn_implementation = 'eager'
  classifier = ViTForImageClassification(config).eval()
  _randomize(classifier, seed=0)
  saved, pairs = _saved_and_paired(classifier)

  # A ViTModel with the same encoder and its own (random) pooler.
  encoder = ViTModel(config, add_pooling_layer=True).eval()
  encoder.load_state_dict(classifier.vit.state_dict(), strict=False)
  generator = torch.Generator().manual_seed(3)
  with torch.no_grad():
    for param in encoder.pooler.parameters():
      param.copy_(torch.randn(param.shape, generator=generator)
                  / np.sqrt(param.shape[-1]))
  pooler = _numpy({f'pooler.{k}': v
                   for k, v in encoder.pooler.state_dict().items()})

  size = CONFIG['image_size']
  images = torch.randn(BATCH, 3, size, size,
                       generator=torch.Generator().manual_seed(1))
  with torch.no_grad():
    logits = classifier(pixel_values=images).logits
    pooled = encoder(pixel_values=images).pooler_output
  outputs = {'images': images.permute(0, 2, 3, 1).numpy(),  # NHWC
             'logits': logits.numpy(), 'pooler_output': pooled.numpy()}

  mae = ViTMAEForPreTraining(ViTMAEConfig(**MAE_CONFIG)).eval()
  _randomize(mae, seed=4)  # position tables too: every value unique
  _, mae_pairs = _saved_and_paired(mae)

  arrays = ({f'hf/{k}': v for k, v in saved.items()}
            | {f'pooler/{k}': v for k, v in pooler.items()}
            | {f'out/{k}': v for k, v in outputs.items()}
            | _names('names', pairs) | _names('mae_names', mae_pairs))
  path = os.path.join(GOLDEN_DIR, 'vit_hf.npz')
  np.savez(path, **arrays)
  print(f'wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)')
  print('transformers', transformers.__version__, 'torch', torch.__version__)


if __name__ == '__main__':
  main()
