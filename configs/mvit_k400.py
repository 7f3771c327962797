"""MViTv2 on Kinetics-400 from scratch (Li et al. 2022, "MViTv2: Improved
Multiscale Vision Transformers for Classification and Detection", Sec. 5
and the released SlowFast config MVITv2_S_16x4).

    python -m vit_jax.main --config=configs/mvit_k400.py:S \
        --workdir=DIR --config.data.folder=/data/kinetics400

Kinetics has no TFDS builder: the videos are read from a folder,
FOLDER/train/CLASS/*.mp4 and FOLDER/val/CLASS/*.mp4 (any PyAV-readable
container, or folders of extracted frames; `data.name='video_folder'`).
About 240,000 training videos remain downloadable (the epochs below are
counted with it).

The released training: 16 frames 4 apart, an Inception-style random
resized crop to 224 (area 8-100%, aspect 3/4-4/3) and horizontal flips,
RandAugment "rand-m7-n4-mstd0.5-inc1" (4 layers at magnitude 7, one
policy for all of a clip's frames; here randaugment.py's ops, without the
magnitude noise and timm's increasing-severity variants), Kinetics' mean
and std, random erasing 0.25 (one box through the clip's frames); mixup
0.8 or CutMix 1.0 (one of the two per batch), label smoothing 0.1; AdamW with weight decay 0.05 on every
parameter of two or more dimensions (kernels, relative position tables,
the class token; not biases or norms), gradient clipping at 1.0,
stochastic depth 0.2, dropout 0.5 before the head; 30 warmup epochs then
cosine decay to 1e-6 over 200 epochs. Its lr is 1e-4 per 16 clips (one
8-GPU machine, scaled linearly with machines); here batches of 64 clips
at 4e-4. Not modelled here: its repeated augmentation (each clip twice
per batch, differently augmented).

Test: 5 clips spaced uniformly over the video x 1 centre crop of 224
after resizing the shorter side to 224, the views' softmax scores
averaged (the paper's 81.0 top-1 for MViTv2-S 16x4, 64 GFLOPs a view).

ARG: the clip variant, 'S' (MViTv2-S, torchvision's mvit_v2_s), 'B'
(MViTv2-B's sizes) or 'v1-B' (MViTv1-B 16x4, torchvision's mvit_v1_b,
trained with the same recipe here).
"""

import ml_collections
from ml_collections.config_dict import placeholder

ARGS = ('S', 'B', 'v1-B')
STOCHASTIC_DEPTH = {'S': 0.2, 'B': 0.3, 'v1-B': 0.2}
TRAIN_VIDEOS = 240_000
NUM_CLASSES = 400
NORMALIZE = "value_range(0, 1)|normalize('kinetics')"


def get_config(arg: str = 'S') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 64
  steps_per_epoch = TRAIN_VIDEOS // config.batch_size
  config.total_steps = 200 * steps_per_epoch
  config.objective = 'supervised'
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.1

  config.data = ml_collections.ConfigDict()
  config.data.name = 'video_folder'
  config.data.folder = placeholder(str)  # .../kinetics400
  config.data.train_split = 'train'
  config.data.eval_split = 'val'
  config.data.num_frames = 16
  config.data.frame_stride = 4
  config.data.eval_clips = 5
  config.data.eval_crops = 1
  config.data.pp_train = (
      f'random_resized_crop(224, (0.08, 1.0), (0.75, 1.3333))|flip_lr|'
      f'randaug(4, 7)|{NORMALIZE}|random_erase(0.25)|onehot({NUM_CLASSES})')
  config.data.pp_eval = (f'resize_small(224)|center_crop(224)|{NORMALIZE}|'
                         f'onehot({NUM_CLASSES})')
  config.data.mixup_alpha = 0.8
  config.data.cutmix_alpha = 1.0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'mvit'
  config.model.variant = arg
  config.model.num_frames = 16
  config.model.num_classes = NUM_CLASSES
  config.model.stochastic_depth = STOCHASTIC_DEPTH[arg]
  config.model.dropout = 0.5
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 4e-4
  config.wd = 0.05
  # Every parameter of 2 or more dimensions (SlowFast's ZERO_WD_1D_PARAM).
  config.wd_mults = (('(.*/)?kernel$', 1.0), ('(.*/)?rel_pos_[thw]$', 1.0),
                     ('(.*/)?(cls_token|pos_embed_spatial|'
                      'pos_embed_temporal)$', 1.0))
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 30 * steps_per_epoch, 'decay': 'cosine',
      'end_lr_fraction': 1e-6 / 4e-4})

  config.init_from = ml_collections.ConfigDict({
      'kind': 'own', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 10 * steps_per_epoch
  config.eval_batch_size = 64
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 5_000, 'keep_last': 2, 'keep_every': 50_000,
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})
  return config
