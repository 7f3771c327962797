"""The offline default: a small ViT on scikit-learn's handwritten digits.

    python -m vit_jax.main --config=configs/digits.py --workdir=/tmp/digits

1,797 real 8x8 grey-scale images, 10 classes, with fixed train / test
splits (`vit_jax/data/digits.py`), prepared locally as a TFDS dataset: no
network. Trains to about 97% test accuracy (bar: 95%) in about 2 minutes
on 2 CPU cores. ARG picks the pooling: cls (default), gap or map.
"""

import ml_collections
from ml_collections.config_dict import placeholder


def get_config(arg: str = 'cls') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 640
  config.batch_size = 128
  config.objective = 'supervised'
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.1

  config.data = ml_collections.ConfigDict()
  config.data.name = 'digits'
  config.data.data_dir = placeholder(str)  # None: TFDS default; digits is
  # built there on first use.
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.pp_train = 'value_range(-1, 1)|onehot(10)'
  config.data.pp_eval = 'value_range(-1, 1)|onehot(10)'
  config.data.shuffle_buffer = 2_000
  config.data.cache = True

  # 8x8 images, 2x2 patches: 16 tokens of width 64.
  config.model = ml_collections.ConfigDict()
  config.model.name = 'vit'
  config.model.patch_size = 2
  config.model.width = 64
  config.model.depth = 4
  config.model.mlp_dim = 128
  config.model.num_heads = 4
  config.model.num_classes = 10
  config.model.pool_type = arg or 'cls'
  config.model.posemb = 'learn'  # 'sincos2d' to fine-tune an MAE encoder
  config.model.dropout = 0.1
  config.model.stochastic_depth = 0.1
  config.model.dtype = 'float32'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 3e-3
  config.wd = 1e-4
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 50, 'decay': 'cosine', 'cooldown_steps': 0})

  # Start from other weights, e.g. an MAE run's encoder (configs/
  # mae_digits.py; with model.posemb='sincos2d'); None: random init.
  config.init_from = ml_collections.ConfigDict({
      'kind': 'own', 'path': placeholder(str)})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 320
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 320, 'keep_last': 2, 'keep_every': placeholder(int),
      'async_save': True})

  # Few-shot linear evaluation of the pre-logits representation (Scaling
  # ViT's protocol, vit_jax/evaluate/fewshot.py) on digits itself.
  config.evals = ml_collections.ConfigDict()
  config.evals.fewshot = ml_collections.ConfigDict({
      'kind': 'fewshot', 'every_steps': 320, 'representation': 'pre_logits',
      'datasets': {'digits': {'name': 'digits', 'train_split': 'train',
                              'test_split': 'test',
                              'pp': 'value_range(-1, 1)'}},
      'shots': (1, 5, 10, 25), 'seeds': (0, 1, 2, 3, 4),
      'l2_reg': 1.0, 'l2_reg_candidates': (0.01, 0.1, 1.0, 10.0, 100.0)})
  return config
