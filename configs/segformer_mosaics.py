"""The offline segmentation demo: a small SegFormer on digit mosaics.

    python -m vit_jax.main --config=configs/segformer_mosaics.py --workdir=DIR

`digit_mosaics` (vit_jax/data/mosaics.py) is built from the embedded
digits: 40x40 grey canvases holding one to four digits, each upsampled to
16x16, every stroke pixel labelled with its digit + 1 and the background
0 (11 classes); train mosaics from the digits' train split, test mosaics
from its test split. Predicting background everywhere scores mIoU 0.080
(pixel accuracy 0.877): a pixel's class needs the digit around it, which
the 1/4-resolution decoder must read from the deeper stages.

The SegFormer recipe of configs/segformer_ade20k.py (AdamW, norms without
weight decay, decoder and head at 10x the learning rate, warmup then poly
(linear) decay, per-pixel cross-entropy) shrunk to CPU: a four-stage Mix
Transformer of widths 16-32-64-128, one block per stage, a 64-wide
decoder, no augmentation; the learning rate raised for the short run.
The figures it reaches are in README.md and tests/test_segmentation_demo.py.
The encoder's representation (the last stage, averaged) is scored by
few-shot linear regression on the digits themselves, upsampled as the
mosaics' digits are: what the segmentation taught it about the classes.

ARG: the encoder's widths and decoder, 'S' (the demo), 'XS' (half as
wide) or 'M' (twice as wide): the size ladder of
configs/sweeps/segformer_mosaics.py.
"""

import ml_collections
from ml_collections.config_dict import placeholder

ARGS = ('S', 'XS', 'M')
SIZES = {
    'XS': dict(widths=(8, 16, 32, 64), num_heads=(1, 1, 2, 4),
               decoder_width=32),
    'S': dict(widths=(16, 32, 64, 128), num_heads=(1, 2, 4, 8),
              decoder_width=64),
    'M': dict(widths=(32, 64, 128, 256), num_heads=(1, 2, 4, 8),
              decoder_width=128),
}


def get_config(arg: str = 'S') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 1_200
  config.batch_size = 32
  config.objective = 'segmentation'
  config.loss = 'softmax_xent'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'digit_mosaics'
  config.data.data_dir = placeholder(str)  # the digits' TFDS directory
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.pp_train = 'value_range(-1, 1)'
  config.data.pp_eval = 'value_range(-1, 1)'
  config.data.shuffle_buffer = 4_000
  config.data.cache = True

  config.model = ml_collections.ConfigDict()
  config.model.name = 'segformer'
  config.model.update(SIZES[arg])
  config.model.depths = (1, 1, 1, 1)
  config.model.num_classes = 11
  config.model.stochastic_depth = 0.0
  config.model.decoder_dropout = 0.1
  config.model.dtype = 'float32'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 2e-3
  config.wd = 0.01
  config.wd_mults = ((r'stage_\d+/(block_\d+/)?\w*norm\w*/', 0.0),
                     ('.*', 1.0))
  config.lr_mults = (('decoder/', 10.0), ('head/', 10.0))
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 100, 'decay': 'linear', 'cooldown_steps': 0,
      'cooldown_shape': 'linear'})

  config.init_from = ml_collections.ConfigDict({
      'kind': 'own', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 600, 'keep_last': 2, 'keep_every': placeholder(int),
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})

  config.evals = ml_collections.ConfigDict()
  config.evals.val = ml_collections.ConfigDict({
      'kind': 'segmentation', 'every_steps': 600, 'mode': 'whole',
      'batch_size': 200, 'num_images': 6})
  config.evals.fewshot = ml_collections.ConfigDict({
      'kind': 'fewshot', 'every_steps': 600, 'representation': 'pre_logits',
      'datasets': {'digits': {
          'name': 'digits', 'train_split': 'train', 'test_split': 'test',
          'pp': "resize(16, 'nearest')|value_range(-1, 1)"}},
      'shots': (1, 5, 10, 25), 'seeds': (0, 1, 2), 'l2_reg': 2.0 ** 4})
  return config
