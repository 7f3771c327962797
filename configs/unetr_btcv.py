"""UNETR on BTCV multi-organ CT (Hatamizadeh et al. 2022, "UNETR:
Transformers for 3D Medical Image Segmentation", Sec. 4, and the authors'
released BTCV code).

    python -m vit_jax.main --config=configs/unetr_btcv.py --workdir=DIR \
        --config.data.folder=/data/BTCV

The Beyond-the-Cranial-Vault abdomen set (MICCAI 2015): 30 labelled CT
scans, 13 organs + background (14 classes), in the MONAI / MSD layout the
authors distribute: a folder with imagesTr/, labelsTr/ and their
dataset_0.json (or a dataset.json), whose "training" (24 scans) and
"validation" (6) lists name them.

The paper's model: a ViT-B/16 encoder on 16^3 patches of 96^3 crops,
skip features from blocks 3 / 6 / 9 / 12, MONAI's convolutional decoder
with feature size 16, instance norm. Preprocessing as the authors' code:
RAS orientation, 1.5 x 1.5 x 2.0 mm spacing, intensities clipped to
[-175, 250] HU and scaled to [0, 1], the foreground box; training crops
of 96^3, four per scan, centred on foreground or background voxels with
equal probability, random flips along each axis and 90-degree rotations
(p 0.1), intensity shifts (0.1, p 0.5). Dice + cross-entropy, AdamW at a
constant 1e-4 with weight decay 1e-5, 20,000 steps (the paper's count)
of 4 crops (one scan's, as the authors' code batches them; the paper says
6). Evaluation: mean Dice of the 13 organs over whole validation scans,
by 96^3 sliding windows overlapping by half with Gaussian weights (the
authors' test script); the paper reports 0.891 average Dice on BTCV's
standard leaderboard split (the released code's 6 validation scans differ).
"""

import ml_collections
from ml_collections.config_dict import placeholder

# This recipe takes no variant argument (tests/test_recipes.py).
ARGS = ('',)

CROP = 96
DETERMINISTIC = ("orientation('RAS')|spacing(1.5, 1.5, 2.0)|"
                 'scale_intensity(-175, 250, 0.0, 1.0, clip=True)|'
                 'crop_foreground()')


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  del arg
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 20_000
  config.batch_size = 4
  config.objective = 'segmentation'
  config.loss = 'dice_ce'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'nifti_folder'
  config.data.folder = placeholder(str)  # imagesTr/, labelsTr/, dataset.json
  config.data.train_split = 'training'
  config.data.eval_split = 'validation'
  config.data.pp_train = (
      f'{DETERMINISTIC}|rand_crop_pos_neg({CROP}, pos=1, neg=1, samples=4)|'
      'rand_flip(0, 0.1)|rand_flip(1, 0.1)|rand_flip(2, 0.1)|'
      'rand_rot90(0.1, 3)|rand_shift_intensity(0.1, 0.5)')
  config.data.pp_eval = DETERMINISTIC

  config.model = ml_collections.ConfigDict()
  config.model.name = 'unetr'
  config.model.variant = 'B/16'
  config.model.image_size = CROP
  config.model.in_channels = 1
  config.model.num_classes = 14
  config.model.feature_size = 16
  config.model.dtype = 'float32'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 1e-4
  config.wd = 1e-5
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 0, 'decay': 'constant', 'cooldown_steps': 0,
      'cooldown_shape': 'linear'})
  config.init_from = ml_collections.ConfigDict({
      'kind': 'own', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 50
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 1_000, 'keep_last': 2, 'keep_every': 5_000,
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})

  config.evals = ml_collections.ConfigDict()
  config.evals.val = ml_collections.ConfigDict({
      'kind': 'volume_segmentation', 'every_steps': 1_000,
      'roi_size': CROP, 'sw_batch_size': 4, 'overlap': 0.5,
      'blend': 'gaussian', 'num_images': 2})
  return config
