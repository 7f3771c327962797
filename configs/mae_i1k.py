"""MAE pre-training on ImageNet-1k, the paper's recipe.

He et al. 2021, "Masked Autoencoders Are Scalable Vision Learners", App.
A.1 (Table 8): AdamW (0.9, 0.95), batch 4096, base lr 1.5e-4 scaled by
batch / 256, 40 warmup epochs then cosine decay, weight decay 0.05, 800
epochs; random resized crop (area 20%-100%) + flip only; mask ratio 0.75,
decoder 512 wide and 8 deep, per-patch normalised pixel targets.

    python -m vit_jax.main --config=configs/mae_i1k.py:L/16 --workdir=DIR
"""

import ml_collections
from ml_collections.config_dict import placeholder

IMAGENET_TRAIN_IMAGES = 1_281_167

# The variants this recipe documents (tests/test_recipes.py runs each).
ARGS = ('B/16', 'L/16', 'H/14')


def get_config(arg: str = 'L/16') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 4096
  steps_per_epoch = IMAGENET_TRAIN_IMAGES // config.batch_size
  config.total_steps = 800 * steps_per_epoch
  config.objective = 'mae'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'imagenet2012'
  config.data.data_dir = placeholder(str)  # None: TFDS default
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.pp_train = ('decode|inception_crop(224, 20, 100)|flip_lr|'
                          'value_range(-1, 1)|onehot(1000)')
  config.data.pp_eval = ('decode|resize_small(256)|central_crop(224)|'
                         'value_range(-1, 1)|onehot(1000)')
  config.data.shuffle_buffer = 250_000

  config.model = ml_collections.ConfigDict()
  config.model.name = 'mae'
  config.model.variant = arg
  config.model.decoder_width = 512
  config.model.decoder_depth = 8
  config.model.decoder_num_heads = 16
  config.model.mask_ratio = 0.75
  config.model.norm_pix_loss = True
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.95})
  config.lr = 1.5e-4 * config.batch_size / 256
  config.wd = 0.05
  config.grad_clip_norm = placeholder(float)
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 40 * steps_per_epoch, 'decay': 'cosine'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = placeholder(int)  # no classification eval
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 2_000, 'keep_last': 3, 'keep_every': 50_000})

  # Reconstruction loss on the validation split with fixed masks, and a grid
  # of reconstructions in plots/ (vit_jax/evaluate/reconstruction.py).
  config.evals = ml_collections.ConfigDict()
  config.evals.reconstruction = ml_collections.ConfigDict({
      'kind': 'reconstruction', 'every_steps': 10_000, 'num_images': 8})
  return config
