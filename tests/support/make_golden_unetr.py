"""Writes tests/golden/unetr_monai.npz from MONAI's UNETR (PyTorch).

Run by hand, in an environment with torch and MONAI (not needed by the
tests):

    pip install torch==2.13.0 monai==1.6.1
    python tests/support/make_golden_unetr.py [--out DIR]

A tiny UNETR with random weights: MONAI fixes the patch (16) and the
depth (12), so the ViT is narrow (width 8, 2 heads, MLP 16) and the
volume 16 x 32 x 48 (a 1 x 2 x 3 patch grid: every axis a different
length, so a transposed axis shows), one channel, 2 classes, feature
size 2. Saved, for tests/test_unetr.py:

    monai/<name>                MONAI's state dict
    out/volumes                 [B, D, H, W, C] inputs (channels last)
    out/logits                  [B, D, H, W, classes]
    out/encoded                 the ViT's final (normed) tokens [B, N, E]
    transposed/{inputs,outputs} a ConvTranspose3d(3, 5, kernel 2,
    transposed/weight           stride 2, no bias) alone, NDHWC, its
                                weight in torch's [in, out, 2, 2, 2]
"""

import torch

import golden_torch
from monai.networks.nets import UNETR

VOLUME = (16, 32, 48)
BATCH = 1

# MONAI constructor arguments; tests/test_unetr.py builds the same model
# as get_model('unetr', image_size=VOLUME, in_channels=1, num_classes=2,
#              feature_size=2, width=8, depth=12, num_heads=2, mlp_dim=16).
UNETR_KWARGS = dict(in_channels=1, out_channels=2, img_size=VOLUME,
                    feature_size=2, hidden_size=8, mlp_dim=16, num_heads=2)


def _channels_last(volumes):
  return volumes.permute(0, 2, 3, 4, 1).numpy()


def _transposed_conv():
  generator = torch.Generator().manual_seed(31)
  conv = torch.nn.ConvTranspose3d(3, 5, kernel_size=2, stride=2, bias=False)
  with torch.no_grad():
    conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
    inputs = torch.randn(2, 3, 2, 3, 4, generator=generator)
    outputs = conv(inputs)
  return {'inputs': _channels_last(inputs),
          'outputs': _channels_last(outputs),
          'weight': conv.weight.detach().numpy()}


def write(out_dir):
  model = UNETR(**UNETR_KWARGS).eval()
  golden_torch.randomize(model, seed=40, fan_in=golden_torch.hf_fan_in)
  volumes = torch.randn(BATCH, 1, *VOLUME,
                        generator=torch.Generator().manual_seed(41))
  with torch.no_grad():
    logits = model(volumes)
    encoded, _ = model.vit(volumes)
  outputs = {'volumes': _channels_last(volumes),
             'logits': _channels_last(logits),
             'encoded': encoded.numpy()}
  golden_torch.save(out_dir, 'unetr_monai.npz',
                    monai=golden_torch.to_numpy(model.state_dict()),
                    out=outputs, transposed=_transposed_conv())


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
