"""Swin Transformer on ImageNet-1k, the paper's recipe.

Liu et al. 2021, "Swin Transformer", Sec. 4.1 and App. A2.1: AdamW
(0.9, 0.999), batch 1024, peak lr 1e-3, 20 warmup epochs then cosine decay
over 300 epochs, weight decay 0.05, gradient clipping at 5, stochastic depth
0.2 / 0.3 / 0.5 for T / S / B (0.5 also for L here), label smoothing 0.1,
at 224 px, DeiT's augmentation: RandAugment (2 layers, magnitude 9:
"rand-m9"; its magnitude noise is not modelled), mixup 0.8 or CutMix 1.0
(one of the two per batch), random erasing with probability 0.25.

    python -m vit_jax.main --config=configs/swin_i1k.py:T/4 --workdir=DIR
"""

import ml_collections
from ml_collections.config_dict import placeholder

IMAGENET_TRAIN_IMAGES = 1_281_167
STOCHASTIC_DEPTH = {'T': 0.2, 'S': 0.3, 'B': 0.5, 'L': 0.5}

# The variants this recipe documents (tests/test_recipes.py runs each).
ARGS = ('T/4', 'S/4', 'B/4')


def get_config(arg: str = 'T/4') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 1024
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.batch_size
  config.total_steps = 300 * steps_per_epoch
  config.objective = 'supervised'
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.1

  config.data = ml_collections.ConfigDict()
  config.data.name = 'imagenet2012'
  config.data.data_dir = placeholder(str)  # None: TFDS default
  config.data.train_split = 'train[:99%]'
  config.data.eval_split = 'validation'
  config.data.pp_train = ('decode|inception_crop(224)|flip_lr|randaug(2, 9)|'
                          'value_range(-1, 1)|random_erase(0.25)|'
                          'onehot(1000)')
  # The authors' evaluation (torchvision on PIL images: bicubic resize of
  # the shorter side to 256, central 224 crop), pixel for pixel.
  config.data.pp_eval = ("decode|resize_small(256, 'bicubic', timm=True)|"
                         'central_crop(224, timm=True)|value_range(-1, 1)|'
                         'onehot(1000)')
  config.data.shuffle_buffer = 250_000
  config.data.mixup_alpha = 0.8
  config.data.cutmix_alpha = 1.0  # each batch: mixup or CutMix, 1/2 each

  config.model = ml_collections.ConfigDict()
  config.model.name = 'swin'
  config.model.variant = arg
  config.model.window_size = 7
  config.model.num_classes = 1000
  config.model.stochastic_depth = STOCHASTIC_DEPTH.get(arg.split('/')[0], 0.2)
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 1e-3
  config.wd = 0.05
  config.grad_clip_norm = 5.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 20 * steps_per_epoch, 'decay': 'cosine'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 5 * steps_per_epoch
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 2_000, 'keep_last': 3, 'keep_every': 50_000})
  return config
