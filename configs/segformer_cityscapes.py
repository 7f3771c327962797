"""SegFormer on Cityscapes (Xie et al. 2021, Sec. 4.1 and its
mmsegmentation configs).

    python -m vit_jax.main --config=configs/segformer_cityscapes.py:B5 \
        --workdir=DIR --config.data.data_dir=/data/tfds \
        [--config.init_from.path=/weights/mit-b5]

TFDS's `cityscapes/semantic_segmentation` (2,975 training and 500
validation images of 1024 x 2048, fine annotations), which needs a manual
download (the error of an unprepared data_dir says how). Its label ids are
mapped to the benchmark's 19 train ids, every other id ignored (255).

Training as the paper: 1024 x 1024 crops of images rescaled to fit
(2048, 1024) x a ratio in [0.5, 2.0], crops where one class covers at most
75%, flips, photometric distortion, ImageNet's mean and std; AdamW lr
6e-5, weight decay 0.01 (none on the norms), decoder and head at 10x;
1,500 warmup steps then poly (linear) decay over 160k steps of 8 images;
the ImageNet-1k Mix Transformer encoder (init_from kind 'hf').
Evaluation as the paper: mIoU on the 500 validation images at full
resolution by sliding 1024 x 1024 windows at stride 768 (mmseg's 'slide'
mode; the paper's B5 reaches 82.4 single scale at 1024 x 1024).

ARG: the variant, B0 .. B5.
"""

import ml_collections
from ml_collections.config_dict import placeholder

ARGS = ('B0', 'B1', 'B2', 'B3', 'B4', 'B5')

MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)
CROP = 1024


def get_config(arg: str = 'B0') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 160_000
  config.batch_size = 8
  config.objective = 'segmentation'
  config.loss = 'softmax_xent'

  normalize = f'normalize({MEAN}, {STD})'
  config.data = ml_collections.ConfigDict()
  config.data.name = 'cityscapes'
  config.data.data_dir = placeholder(str)  # where TFDS prepared it
  config.data.train_split = 'train'
  config.data.eval_split = 'validation'
  config.data.pp_train = (
      f'random_resize((2048, {CROP}), (0.5, 2.0))|random_crop({CROP}, 0.75)|'
      f'flip_lr|photometric_distortion|{normalize}|pad({CROP})')
  config.data.pp_eval = f'rescale((2048, {CROP}))|{normalize}'
  config.data.shuffle_buffer = 3_000

  config.model = ml_collections.ConfigDict()
  config.model.name = 'segformer'
  config.model.variant = arg
  config.model.num_classes = 19
  config.model.stochastic_depth = 0.1
  config.model.decoder_dropout = 0.1
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 6e-5
  config.wd = 0.01
  config.wd_mults = ((r'stage_\d+/(block_\d+/)?\w*norm\w*/', 0.0),
                     ('.*', 1.0))
  config.lr_mults = (('decoder/', 10.0), ('head/', 10.0))
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 1_500, 'decay': 'linear', 'cooldown_steps': 0,
      'cooldown_shape': 'linear'})
  config.init_from = ml_collections.ConfigDict({
      'kind': 'hf', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 50
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 4_000, 'keep_last': 2, 'keep_every': 16_000,
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})

  config.evals = ml_collections.ConfigDict()
  config.evals.val = ml_collections.ConfigDict({
      'kind': 'segmentation', 'every_steps': 16_000, 'mode': 'slide',
      'crop_size': CROP, 'stride': 768, 'batch_size': 8, 'num_images': 4})
  return config
