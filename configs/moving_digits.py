"""The offline video demo: labels that need time, on the moving digits.

    python -m vit_jax.main --config=configs/moving_digits.py:timesformer \
        --workdir=DIR

`moving_digits` (vit_jax/data/moving_digits.py) is built from the embedded
digits: 16 grey frames of a 16x32 canvas in which a digit slides left or
right by 1 or 2 pixels a frame, wrapping around; the label is digit x
direction (20 classes). A single frame, or the frames in any order, shows
the digit but not the direction: such a model scores at most 50%, chance
on the direction. Clips of 8 consecutive frames (a random start in
training, the centre at test) are classified.

ARG, the model:
- 'timesformer': TimeSformer with divided space-time attention (4 blocks
  of width 64, 8x8 patches: 8 a frame).
- 'mvit': MViTv2 on clips (two stages of widths 32 and 64, 3x7x7
  patches at stride 2x4x4, pooling attention and relative positions in
  time and space).
- 'frame': the single-frame baseline, a ViT of the TimeSformer's size on
  one frame per clip (a 'space_only' TimeSformer of one frame is exactly
  a ViT: no temporal attention, no time embedding).
The same optimizer and schedule for all three: AdamW, warmup then cosine,
no augmentation (flips would swap left and right); 400 steps for MViT,
2,500 for the TimeSformer and its single-frame twin (the TimeSformer
finds the direction only after about 1,500 steps, where MViT's 3x7x7
patches see the motion from the start: 2026-12-07, seeds 0 and 1). The
figures each reaches, and the frame-shuffled control (each trained clip
model tested on clips whose frames are permuted: `shuffle_frames`), are
in README.md and tests/test_video_demo.py.
"""

import ml_collections
from ml_collections.config_dict import placeholder

ARGS = ('timesformer', 'mvit', 'frame')
STEPS = {'timesformer': 2500, 'frame': 2500, 'mvit': 400}
NUM_CLASSES = 20
FRAMES = 8
PP = f'value_range(-1, 1)|onehot({NUM_CLASSES})'

_VIT_SIZE = dict(patch_size=8, width=64, depth=4, num_heads=4, mlp_dim=128)
MODELS = {
    'timesformer': dict(name='timesformer', num_frames=FRAMES,
                        attention_type='divided_space_time', **_VIT_SIZE),
    'frame': dict(name='timesformer', num_frames=1,
                  attention_type='space_only', **_VIT_SIZE),
    # 3x7x7 patches at stride 2x4x4 (MViTv2's clip stem: each token sees
    # three frames), then stages at 4x8 and 2x4 tokens a frame pair.
    'mvit': dict(name='mvit', num_frames=FRAMES, embed_dim=32,
                 depths=(1, 2), num_heads=(1, 2), patch_kernel=(3, 7, 7),
                 patch_stride=(2, 4, 4), patch_padding=(1, 3, 3),
                 kv_stride=2),
}


def get_config(arg: str = 'timesformer') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = STEPS[arg]
  config.batch_size = 32
  config.objective = 'supervised'
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.0

  model = MODELS[arg]
  config.data = ml_collections.ConfigDict()
  config.data.name = 'moving_digits'
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.num_frames = model['num_frames']
  config.data.frame_stride = 1
  config.data.eval_clips = 1
  config.data.eval_crops = 1
  config.data.pp_train = PP
  config.data.pp_eval = PP

  config.model = ml_collections.ConfigDict(dict(model))
  config.model.image_size = (16, 32)
  config.model.num_classes = NUM_CLASSES
  config.model.dtype = 'float32'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 1e-3
  config.wd = 0.05
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 50, 'decay': 'cosine', 'cooldown_steps': 0,
      'cooldown_shape': 'linear'})

  config.init_from = ml_collections.ConfigDict({
      'kind': 'own', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 50
  config.eval_every_steps = 500
  config.eval_batch_size = 128
  # The clips' representation, few-shot on the classes themselves (so it
  # checks what the features hold; the digits alone give up to 1/2).
  config.evals = ml_collections.ConfigDict()
  config.evals.fewshot = ml_collections.ConfigDict({
      'kind': 'fewshot', 'every_steps': None, 'representation': 'pre_logits',
      'datasets': {'moving_digits': {
          'name': 'moving_digits', 'train_split': 'train[:1000]',
          'test_split': 'test',
          # The run's clips, also when --config.data.num_frames changes.
          'num_frames': config.data.get_ref('num_frames'),
          'frame_stride': config.data.get_ref('frame_stride'),
          'pp': 'value_range(-1, 1)'}},
      'shots': (1, 5, 10), 'seeds': (0, 1, 2), 'l2_reg': 2.0 ** 4})
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 500, 'keep_last': 2, 'keep_every': placeholder(int),
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})
  return config
