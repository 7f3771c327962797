"""Writes tests/golden/timesformer_hf.npz from Hugging Face's TimeSformer
(transformers' TimesformerForVideoClassification).

Run by hand, in an environment with torch and transformers (not needed by
the tests):

    pip install torch==2.13.0 transformers==5.24.0 safetensors
    python tests/support/make_golden_timesformer.py [--out DIR]

Tiny models with random weights: width 32, 2 heads, depth 2, MLP 64,
patch 4 on 16x16 frames (a 4x4 grid), 4 frames, 5 classes, one per
attention type. Saved, for tests/test_timesformer.py: clips/frames_4 (the input clips
[B, T, H, W, C] of every case), and per case CASE in
'divided_space_time', 'space_only', 'joint_space_time':

    CASE/hub/<name>   the state dict as `save_pretrained` writes it
    CASE/out/logits   the logits; with 'space_only' transformers gives one
                      row per frame ([B*T, K]): saved is their mean over
                      a clip's frames, what the original code returns
    CASE/out/pre_logits  the final norm's class token (space_only: its
                      mean over frames)

and 'frames/out/...': the joint_space_time model (4 frames) run on
6-frame clips (clips/frames_6), whose time embedding transformers resizes at run time by
nearest interpolation (its embeddings module; the blocks of that type do
not depend on the frame count).

torchvision is hidden from transformers (see golden_torch.py).
"""

import os
import tempfile

import torch

import golden_torch

with golden_torch.without_torchvision():
  from safetensors import numpy as safetensors_numpy
  from transformers import TimesformerConfig
  from transformers import TimesformerForVideoClassification

BATCH, FRAMES, SIDE = 2, 4, 16
# tests/test_timesformer.py builds the same model as get_model(
# 'timesformer', patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=2,
# num_frames=4, image_size=16, num_classes=5, attention_type=CASE).
CONFIG = dict(image_size=SIDE, patch_size=4, num_frames=FRAMES,
              hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
              intermediate_size=64, num_labels=5)
CASES = ('divided_space_time', 'space_only', 'joint_space_time')


def _model(attention_type, seed):
  config = golden_torch.eager(TimesformerConfig(
      **CONFIG, attention_type=attention_type))
  model = TimesformerForVideoClassification(config).eval()
  golden_torch.randomize(model, seed=seed, fan_in=golden_torch.hf_fan_in)
  return model


def _clips(frames, seed):
  """[B, T, C, H, W] as transformers takes them."""
  return torch.randn(BATCH, frames, 3, SIDE, SIDE,
                     generator=torch.Generator().manual_seed(seed))


def _outputs(model, clips, attention_type):
  with torch.no_grad():
    result = model(clips, output_hidden_states=True)
    pre_logits = model.timesformer.layernorm(result.hidden_states[-1])[:, 0]
    logits = result.logits
  frames = clips.shape[1]
  if attention_type == 'space_only':  # one row per frame: their mean
    logits = logits.reshape(BATCH, frames, -1).mean(1)
    pre_logits = pre_logits.reshape(BATCH, frames, -1).mean(1)
  return {'logits': logits.numpy(), 'pre_logits': pre_logits.numpy()}


def _hub(model):
  with tempfile.TemporaryDirectory() as directory:
    model.save_pretrained(directory)
    return safetensors_numpy.load_file(
        os.path.join(directory, 'model.safetensors'))


def write(out_dir):
  clips = {frames: _clips(frames, seed=60 + frames) for frames in (4, 6)}
  groups = {'clips': {f'frames_{frames}': clip.permute(0, 1, 3, 4, 2).numpy()
                      for frames, clip in clips.items()}}
  for index, attention_type in enumerate(CASES):
    model = _model(attention_type, seed=50 + index)
    groups[f'{attention_type}/hub'] = _hub(model)
    groups[f'{attention_type}/out'] = _outputs(
        model, clips[FRAMES], attention_type)
    print(attention_type, 'logits', groups[f'{attention_type}/out'][
        'logits'][0])
    # transformers 5's module names are the Hub's: one spelling to test.
    assert sorted(groups[f'{attention_type}/hub']) == sorted(
        model.state_dict())
    if attention_type == 'joint_space_time':
      groups['frames/out'] = _outputs(model, clips[6], attention_type)
  golden_torch.save(out_dir, 'timesformer_hf.npz', **groups)


if __name__ == '__main__':
  golden_torch.main(write, __doc__)
