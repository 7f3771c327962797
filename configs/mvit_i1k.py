"""MViTv2 on ImageNet-1k (Li et al. 2022, "MViTv2: Improved Multiscale
Vision Transformers for Classification and Detection", Sec. 4 and the
released configs of facebookresearch/mvit).

    python -m vit_jax.main --config=configs/mvit_i1k.py:T --workdir=DIR

The released training: batches of 2048 (256 a machine on 8), AdamW with
lr 2e-3 (2.5e-4 a machine, scaled with machines) and weight decay 0.05 on
every parameter of two or more dimensions (kernels and relative position
tables; not biases or norms), gradient clipping at 1.0, 70 warmup epochs
then cosine decay to 1e-6 x 8 over 300 epochs, stochastic depth 0.1 /
0.1 / 0.3 / 0.5 for T / S / B / L; DeiT's augmentation: an Inception crop
to 224 with bicubic resizing, flips, RandAugment (6 layers, magnitude 9:
"rand-m9-n6"; its magnitude noise not modelled), mixup 0.8 or CutMix 1.0
(one per batch), label smoothing 0.1, random erasing 0.25; ImageNet's mean
and std. Test: the shorter side resized to 256 (bicubic), the central
224 crop (the paper's 82.3 / 83.6 / 84.4 / 85.3 top-1 for T / S / B / L).

ARG: the variant, 'T', 'S', 'B' or 'L' (timm's mvitv2_tiny ... large).
"""

import ml_collections
from ml_collections.config_dict import placeholder

ARGS = ('T', 'S', 'B', 'L')
STOCHASTIC_DEPTH = {'T': 0.1, 'S': 0.1, 'B': 0.3, 'L': 0.5}
IMAGENET_TRAIN_IMAGES = 1_281_167
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def get_config(arg: str = 'T') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 2048
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.batch_size
  config.total_steps = 300 * steps_per_epoch
  config.objective = 'supervised'
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.1

  normalize = f'value_range(0, 1)|normalize({MEAN}, {STD})'
  config.data = ml_collections.ConfigDict()
  config.data.name = 'imagenet2012'
  config.data.data_dir = placeholder(str)  # None: TFDS default
  config.data.train_split = 'train[:99%]'
  config.data.eval_split = 'validation'
  config.data.pp_train = (
      "decode|inception_crop(224, area_min=8, method='bicubic')|flip_lr|"
      f'randaug(6, 9)|{normalize}|random_erase(0.25)|onehot(1000)')
  config.data.pp_eval = ("decode|resize_small(256, 'bicubic', timm=True)|"
                         f'central_crop(224, timm=True)|{normalize}|'
                         'onehot(1000)')
  config.data.shuffle_buffer = 250_000
  config.data.mixup_alpha = 0.8
  config.data.cutmix_alpha = 1.0

  config.model = ml_collections.ConfigDict()
  config.model.name = 'mvit'
  config.model.variant = arg
  config.model.num_classes = 1000
  config.model.stochastic_depth = STOCHASTIC_DEPTH[arg]
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 2e-3
  config.wd = 0.05
  # Every parameter of 2 or more dimensions (ZERO_WD_1D_PARAM).
  config.wd_mults = (('(.*/)?kernel$', 1.0), ('(.*/)?rel_pos_[hw]$', 1.0))
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 70 * steps_per_epoch, 'decay': 'cosine',
      'end_lr_fraction': 8e-6 / 2e-3})

  config.init_from = ml_collections.ConfigDict({
      'kind': 'own', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 5 * steps_per_epoch
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 2_000, 'keep_last': 3, 'keep_every': 50_000,
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})
  return config
