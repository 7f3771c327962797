"""MLP-Mixer from scratch on ImageNet-1k.

Tolstikhin et al. 2021, "MLP-Mixer", App. B (Table 4) and Steiner et al.
2021's AugReg setting: Adam (0.9, 0.999), batch 4096, peak lr 1e-3, 10k
linear warmup steps then linear decay, weight decay 0.1, global-norm
clipping at 1, 300 epochs at 224 px, Inception crop + flip, RandAugment
(2 layers, magnitude 15; the paper tunes the magnitude per model), mixup
0.5, stochastic depth 0.1.
"""

import ml_collections
from ml_collections.config_dict import placeholder

IMAGENET_TRAIN_IMAGES = 1_281_167

# The variants this recipe documents (tests/test_recipes.py runs each).
ARGS = ('S/16', 'B/16', 'L/16')


def get_config(arg: str = 'B/16') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 4096
  config.total_steps = 300 * IMAGENET_TRAIN_IMAGES // config.batch_size
  config.objective = 'supervised'
  config.loss = 'softmax_xent'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'imagenet2012'
  config.data.data_dir = placeholder(str)  # None: TFDS default
  config.data.train_split = 'train[:99%]'
  config.data.eval_split = 'validation'
  config.data.pp_train = ('decode|inception_crop(224)|flip_lr|randaug(2, 15)|'
                          'value_range(-1, 1)|onehot(1000)')
  config.data.pp_eval = ('decode|resize_small(256)|central_crop(224)|'
                         'value_range(-1, 1)|onehot(1000)')
  config.data.shuffle_buffer = 250_000
  config.data.mixup_alpha = 0.5

  config.model = ml_collections.ConfigDict()
  config.model.name = 'mixer'
  config.model.variant = arg
  config.model.num_classes = 1000
  config.model.stochastic_depth = 0.1
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 1e-3
  config.wd = 0.1
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 10_000, 'decay': 'linear'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 5_000
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 2_000, 'keep_last': 3, 'keep_every': 50_000})
  return config
