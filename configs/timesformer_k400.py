"""TimeSformer on Kinetics-400 (Bertasius et al. 2021, "Is Space-Time
Attention All You Need for Video Understanding?", Sec. 4 and the released
TimeSformer_divST_8x32_224 config).

    python -m vit_jax.main --config=configs/timesformer_k400.py:divided \
        --workdir=DIR --config.data.folder=/data/kinetics400 \
        --config.init_from.path=/weights/vit_base_patch16_224.safetensors

Kinetics has no TFDS builder: the videos are read from a folder,
FOLDER/train/CLASS/*.mp4 and FOLDER/val/CLASS/*.mp4 (the layout the
usual download scripts arrange; any PyAV-readable container, or folders
of extracted frames, `data.name='video_folder'`). About 240,000 training
videos remain downloadable (the count sets the epochs below).

The paper's training: ViT-B/16 initialised from ImageNet (a timm ViT, the
paper's ImageNet-21k-pretrained `vit_base_patch16_224`: init_from kind
'timm'; each block's temporal attention and its norm start as copies of
the spatial ones and the temporal projection at zero, so the video model
starts as the image model on every frame, `models.convert_params`), 8
frames sampled 32 apart, the shorter side jittered in [256, 320] then a
random 224 crop and horizontal flips, Kinetics' mean and std; SGD with
momentum 0.9 on batches of 8 clips, lr 0.005 divided by 10 at epochs 11
and 14 of 15 (the 'steps' decay), weight decay 1e-4 on every parameter
(torch's SGD adds it to the gradient; here it is decoupled, the same up to
momentum's averaging), stochastic depth 0.1 (its VisionTransformer's
drop_path_rate).

Test: one clip from the middle of the video, three 224 crops along the
longer side after resizing the shorter to 224 (1 x 3 views, the views'
softmax scores averaged: the paper's 78.0 top-1 for divided attention at
8 x 224, 0.59 TFLOPs for the 3 views).

ARG: the attention, 'divided' (the paper's default and best), 'joint' or
'space' (space-only), its ablations (Table 1).
"""

import ml_collections
from ml_collections.config_dict import placeholder

ARGS = ('divided', 'joint', 'space')
ATTENTION = {'divided': 'divided_space_time', 'joint': 'joint_space_time',
             'space': 'space_only'}
TRAIN_VIDEOS = 240_000
NUM_CLASSES = 400
NORMALIZE = "value_range(0, 1)|normalize('kinetics')"


def get_config(arg: str = 'divided') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 8
  steps_per_epoch = TRAIN_VIDEOS // config.batch_size
  config.total_steps = 15 * steps_per_epoch
  config.objective = 'supervised'
  config.loss = 'softmax_xent'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'video_folder'
  config.data.folder = placeholder(str)  # .../kinetics400
  config.data.train_split = 'train'
  config.data.eval_split = 'val'
  config.data.num_frames = 8
  config.data.frame_stride = 32
  config.data.eval_clips = 1
  config.data.eval_crops = 3
  config.data.pp_train = (
      f'random_resize_small(256, 320)|random_crop(224)|flip_lr|{NORMALIZE}|'
      f'onehot({NUM_CLASSES})')
  config.data.pp_eval = (f'resize_small(224)|view_crop(224)|{NORMALIZE}|'
                         f'onehot({NUM_CLASSES})')

  config.model = ml_collections.ConfigDict()
  config.model.name = 'timesformer'
  config.model.variant = 'B/16'
  config.model.num_frames = 8
  config.model.image_size = 224
  config.model.attention_type = ATTENTION[arg]
  config.model.num_classes = NUM_CLASSES
  config.model.stochastic_depth = 0.1
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'sgd',
                                                'momentum': 0.9})
  config.lr = 0.005
  config.wd = 1e-4
  config.wd_mults = (('.*', 1.0),)
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 0, 'decay': 'steps', 'boundaries': (11 / 15, 14 / 15),
      'step_factor': 0.1})

  # ImageNet ViT-B/16 weights, timm's layout (kind 'timm'), or 'npz' / 'own'.
  config.init_from = ml_collections.ConfigDict({
      'kind': 'timm', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 5 * steps_per_epoch
  config.eval_batch_size = 24
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 5_000, 'keep_last': 2, 'keep_every': steps_per_epoch,
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})
  return config
