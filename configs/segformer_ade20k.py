"""SegFormer on ADE20K (Xie et al. 2021, "SegFormer: Simple and Efficient
Design for Semantic Segmentation with Transformers", Sec. 4.1).

    python -m vit_jax.main --config=configs/segformer_ade20k.py:B0 \
        --workdir=DIR --config.data.folder=/data/ADEChallengeData2016 \
        [--config.init_from.path=/weights/mit-b0]

The benchmark's own release, the ADEChallengeData2016 folder (SceneParsing,
20,210 training and 2,000 validation images; 150 classes): images/training,
annotations/training, images/validation, annotations/validation, the
annotations' 0 meaning 'other' (ignored: `reduce_labels` maps 0 to 255 and
class k to k - 1). TFDS's `scene_parse150` is not this benchmark (its labels
are another challenge's instance annotations): do not substitute it.

The paper's training, as its mmsegmentation configs give it: 512 x 512
crops of images rescaled to fit (2048, 512) x a ratio in [0.5, 2.0], crops
where one class covers at most 75%, horizontal flips, photometric
distortion, ImageNet's mean and std on 0..255 pixels; AdamW, lr 6e-5,
weight decay 0.01 (none on the norms), the decoder and head at 10x the
learning rate; 1,500 linear warmup steps then poly decay with power 1
(linear to 0) over 160k steps of 16 images; stochastic depth 0.1,
decoder dropout 0.1. The encoder starts from the ImageNet-1k Mix
Transformer (transformers' nvidia/mit-b0 ... mit-b5: init_from kind 'hf',
`init_from.path` its directory; the decoder starts fresh).

Evaluation: mIoU over the 2,000 validation images at their own
resolution, the images rescaled to fit (2048, 512) as the paper's test
pipeline; the paper's ADE20K numbers (B0 37.4 mIoU, B5 51.0 single
scale) come from whole-image inference, done here in 512 x 512 windows
at stride 341 so that one compiled program serves the images' many shapes
(mmseg's 'slide' mode); the window overlap is what differs.

ARG: the variant, B0 .. B5.
"""

import ml_collections
from ml_collections.config_dict import placeholder

ARGS = ('B0', 'B1', 'B2', 'B3', 'B4', 'B5')

MEAN = (123.675, 116.28, 103.53)  # ImageNet's, on 0..255 pixels
STD = (58.395, 57.12, 57.375)
CROP = 512
NUM_CLASSES = 150


def get_config(arg: str = 'B0') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 160_000
  config.batch_size = 16
  config.objective = 'segmentation'
  config.loss = 'softmax_xent'  # per pixel, 255 ignored

  normalize = f'normalize({MEAN}, {STD})'
  config.data = ml_collections.ConfigDict()
  config.data.name = 'segmentation_folder'
  config.data.folder = placeholder(str)  # .../ADEChallengeData2016
  config.data.train_split = 'training'
  config.data.eval_split = 'validation'
  config.data.num_classes = NUM_CLASSES
  config.data.pp_train = (
      f'reduce_labels|random_resize((2048, {CROP}), (0.5, 2.0))|'
      f'random_crop({CROP}, 0.75)|flip_lr|photometric_distortion|'
      f'{normalize}|pad({CROP})')
  config.data.pp_eval = f'reduce_labels|rescale((2048, {CROP}))|{normalize}'
  config.data.shuffle_buffer = 10_000

  config.model = ml_collections.ConfigDict()
  config.model.name = 'segformer'
  config.model.variant = arg
  config.model.num_classes = NUM_CLASSES
  config.model.stochastic_depth = 0.1
  config.model.decoder_dropout = 0.1
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 6e-5
  config.wd = 0.01
  # mmsegmentation decays every weight but the norms' (biases included).
  config.wd_mults = ((r'stage_\d+/(block_\d+/)?\w*norm\w*/', 0.0),
                     ('.*', 1.0))
  config.lr_mults = (('decoder/', 10.0), ('head/', 10.0))
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 1_500, 'decay': 'linear', 'cooldown_steps': 0,
      'cooldown_shape': 'linear'})

  # The ImageNet-1k encoder, transformers' layout (kind 'hf').
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
      'crop_size': CROP, 'stride': 341, 'batch_size': 16, 'num_images': 8})
  return config
