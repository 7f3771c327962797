"""The offline 3-D segmentation demo: a small UNETR on synthetic volumes.

    python -m vit_jax.main --config=configs/unetr_volumes.py --workdir=DIR

`synthetic_volumes` (vit_jax/data/synthetic_volumes.py) is built in: 24
train and 6 test CT-like volumes of 40-56 voxels a side holding
ellipsoids of one foreground class, its mean intensity 2 noise deviations
above the background's, so single voxels are ambiguous and a model must
read their neighbourhood. Whole test volumes are segmented by sliding
32^3 windows (overlap 0.5, Gaussian weights), their sides no multiple of
the window. Predicting background everywhere scores foreground Dice 0.

UNETR as configs/unetr_btcv.py trains it (Dice + cross-entropy, AdamW,
crops centred on foreground or background with equal probability, four
per volume, random flips), shrunk to CPU: 32^3 crops (two 16^3 patches
a side), a 4-block encoder of width 32 (its skip connections from
blocks 0, 1 and 2), feature size 8, and a short run: 100 steps at a
raised learning rate (3e-3, warmup then cosine; 200 steps at 1e-3 gain
0.014 Dice for twice the time). The figures it reaches are in README.md and
tests/test_segmentation_demo.py.
"""

import ml_collections
from ml_collections.config_dict import placeholder

# This recipe takes no variant argument (tests/test_recipes.py).
ARGS = ('',)

CROP = 32
SCALE = 'scale_intensity(-500, 500, 0.0, 1.0, clip=True)'


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 100
  config.batch_size = 4
  config.objective = 'segmentation'
  config.loss = 'dice_ce'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'synthetic_volumes'
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.pp_train = (
      f'{SCALE}|rand_crop_pos_neg({CROP}, pos=1, neg=1, samples=4)|'
      'rand_flip(0, 0.5)|rand_flip(1, 0.5)|rand_flip(2, 0.5)')
  config.data.pp_eval = SCALE

  config.model = ml_collections.ConfigDict()
  config.model.name = 'unetr'
  config.model.image_size = CROP
  config.model.in_channels = 1
  config.model.num_classes = 2
  config.model.feature_size = 8
  config.model.width = 32
  config.model.depth = 4
  config.model.skip_blocks = (0, 1, 2)
  config.model.num_heads = 2
  config.model.mlp_dim = 64
  config.model.dtype = 'float32'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 3e-3
  config.wd = 1e-5
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 10, 'decay': 'cosine', 'cooldown_steps': 0,
      'cooldown_shape': 'linear'})
  config.init_from = ml_collections.ConfigDict({
      'kind': 'own', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 25
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 50, 'keep_last': 2, 'keep_every': placeholder(int),
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})

  config.evals = ml_collections.ConfigDict()
  config.evals.val = ml_collections.ConfigDict({
      'kind': 'volume_segmentation', 'every_steps': 100, 'roi_size': CROP,
      'sw_batch_size': 4, 'overlap': 0.5, 'blend': 'gaussian',
      'num_images': 2})
  return config
