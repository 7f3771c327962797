"""Writes tests/golden/segformer_hf.npz from Hugging Face's SegFormer
(transformers).

Run by hand, in an environment with torch and transformers (not needed by
the tests):

    pip install torch==2.13.0 transformers==5.24.0 safetensors
    python tests/support/make_golden_segformer.py [--out DIR]

A tiny `SegformerForSemanticSegmentation` with random weights: four stages
of widths 8, 16, 16, 24, depths 1, 2, 1, 1, heads 1, 2, 2, 3, the released
spatial-reduction ratios 8, 4, 2, 1, decoder width 16, 5 classes; the
decoder's BatchNorm with random running averages. On 64x48 images (stage
maps 16x12, 8x6, 4x3, 2x2: the last one rounds up, so the upsampling is
by uneven factors). Saved, for tests/test_segformer.py:

    hub/<name>        the state dict as `save_pretrained` writes it (the
                      Hub's names, 'segformer.encoder.block.0.0...')
    names/hub, names/module  the same entries' names in the checkpoint
                      and in transformers 5.x's modules ('segformer.stages.
                      0.blocks.0...'), paired by value
    out/images        NHWC input images
    out/logits        the logits at 1/4 resolution, NHWC
    out/upsampled     the first image's logits by interpolate(size=(64,
                      48), mode='bilinear', align_corners=False), NHWC
    out/stage_{i}     hidden_states (output_hidden_states=True), NHWC
    resize/maps, resize/out   a [2, 5, 7, 3] map interpolated to 13x11 the
                      same way

torchvision is hidden from transformers (see golden_torch.py).
"""

import os
import tempfile

import numpy as np
import torch

import golden_torch

with golden_torch.without_torchvision():
  from safetensors import numpy as safetensors_numpy
  from transformers import SegformerConfig
  from transformers import SegformerForSemanticSegmentation

BATCH = 2
HEIGHT, WIDTH = 64, 48
# tests/test_segformer.py builds the same model as get_model('segformer',
# widths=(8, 16, 16, 24), depths=(1, 2, 1, 1), num_heads=(1, 2, 2, 3),
# decoder_width=16, num_classes=5).
CONFIG = dict(num_encoder_blocks=4, hidden_sizes=[8, 16, 16, 24],
              depths=[1, 2, 1, 1], num_attention_heads=[1, 2, 2, 3],
              sr_ratios=[8, 4, 2, 1], decoder_hidden_size=16, num_labels=5)


def _model():
  config = golden_torch.eager(SegformerConfig(**CONFIG))
  model = SegformerForSemanticSegmentation(config).eval()
  golden_torch.randomize(model, seed=40, fan_in=golden_torch.hf_fan_in)
  generator = torch.Generator().manual_seed(41)
  norm = model.decode_head.batch_norm
  with torch.no_grad():
    norm.running_mean.copy_(0.3 * torch.randn(norm.running_mean.shape,
                                              generator=generator))
    norm.running_var.copy_(0.5 + torch.rand(norm.running_var.shape,
                                            generator=generator))
  return model


def _upsample(maps, size):
  return torch.nn.functional.interpolate(maps, size=size, mode='bilinear',
                                         align_corners=False)


def write(out_dir):
  model = _model()
  images = golden_torch.random_images(BATCH, HEIGHT, WIDTH, seed=42)
  with torch.no_grad():
    result = model(images, output_hidden_states=True)
  outputs = {'images': golden_torch.nhwc(images),
             'logits': golden_torch.nhwc(result.logits),
             'upsampled': golden_torch.nhwc(_upsample(result.logits[:1],
                                                      (HEIGHT, WIDTH)))}
  for index, hidden in enumerate(result.hidden_states):
    outputs[f'stage_{index}'] = golden_torch.nhwc(hidden)
  print('stage maps:', [tuple(h.shape[2:]) for h in result.hidden_states])
  maps = torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(43))
  resize = {'maps': golden_torch.nhwc(maps),
            'out': golden_torch.nhwc(_upsample(maps, (13, 11)))}
  with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    hub = safetensors_numpy.load_file(
        os.path.join(directory, 'model.safetensors'))
  module = golden_torch.to_numpy(model.state_dict())
  pairs = [(name, next(other for other, array in module.items()
                       if array.shape == value.shape
                       and (array == value).all()))
           for name, value in hub.items()]
  assert len(pairs) == len(module)
  names = {'hub': np.array([name for name, _ in pairs], 'S'),
           'module': np.array([name for _, name in pairs], 'S')}
  golden_torch.save(out_dir, 'segformer_hf.npz', hub=hub, names=names,
                    out=outputs, resize=resize)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
