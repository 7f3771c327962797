"""ConvMixer on ImageNet-1k, the paper's recipe.

Trockman and Kolter 2022, "Patches Are All You Need?", Sec. 3 ("Training
setup") and the authors' training command (github.com/locuslab/convmixer,
"exactly the settings we used", timm's train.py): AdamW (0.9, 0.999) with
eps 1e-3, batch 640 (10 x 64), peak lr 0.01 (reached by the schedule's
own ramp, no separate warmup), 150 epochs (300 for ConvMixer-768/32),
weight decay 2e-5 (timm's default then; the command sets none), gradient
clipping at 1, label smoothing 0.1 (timm's default), at 224 px,
RandAugment (2 layers, magnitude 9: "rand-m9-mstd0.5-inc1"; its magnitude
noise is not modelled), mixup 0.5 or CutMix 0.5 (one of the two per
batch), random erasing with probability 0.25, mixed precision (bfloat16
here). Evaluation at timm's crop fraction for ConvMixer, 0.96
(bicubic resize of the shorter side to 233, central 224 crop).

The learning rate follows the authors' "one-cycle" (triangular) schedule,
piecewise linear over the run: 0 -> 0.01 at 2/5, -> 0.0005 (1/20 of the
peak) at 4/5, -> 0 at the end. `vit_jax.optim.make_schedule` cannot state
that shape (a warmup, then one decay times one cooldown); the closest is
used: the same linear warmup to the same peak at 2/5, then a linear decay
times a linear cooldown over the remaining 3/5, (1 - p)^2 of the peak,
which stays within 0.083 x peak of the paper's curve (a plain linear decay
would be 0.28 x peak off at 4/5) with about the same area (60 vs 62.25
peak-epochs in 150).

    python -m vit_jax.main --config=configs/convmixer_i1k.py:1536/20 \
        --workdir=DIR
"""

import ml_collections
from ml_collections.config_dict import placeholder

IMAGENET_TRAIN_IMAGES = 1_281_167
EPOCHS = {'768/32': 300}  # the others: 150

# The variants this recipe documents (tests/test_recipes.py runs each).
ARGS = ('1536/20', '768/32', '1024/20')


def get_config(arg: str = '1536/20') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 640
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.batch_size
  config.total_steps = EPOCHS.get(arg, 150) * steps_per_epoch
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
  # timm's evaluation transform pixel for pixel (timm=True: PIL's resampling).
  config.data.pp_eval = ("decode|resize_small(233, 'bicubic', timm=True)|"
                         'central_crop(224, timm=True)|value_range(-1, 1)|'
                         'onehot(1000)')
  config.data.shuffle_buffer = 250_000
  config.data.mixup_alpha = 0.5
  config.data.cutmix_alpha = 0.5  # each batch: mixup or CutMix, 1/2 each

  config.model = ml_collections.ConfigDict()
  config.model.name = 'convmixer'
  config.model.variant = arg  # WIDTH/DEPTH, with the paper's kernel / patch
  config.model.num_classes = 1000
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999, 'eps': 1e-3})
  config.lr = 0.01
  config.wd = 2e-5
  config.grad_clip_norm = 1.0
  # One-cycle, approximated (see the module docstring).
  warmup_steps = config.total_steps * 2 // 5
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': warmup_steps, 'decay': 'linear',
      'cooldown_steps': config.total_steps - warmup_steps,
      'cooldown_shape': 'linear'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 5 * steps_per_epoch
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 2_000, 'keep_last': 3, 'keep_every': 50_000})
  return config
