"""ViT pre-training on ImageNet-21k.

Dosovitskiy et al. 2020 (ViT), App. B.1 and Table 3: Adam (0.9, 0.999),
batch 4096, peak lr 1e-3, 10k warmup steps then linear decay, weight decay
0.03 (AugReg's i21k setting), 90 epochs at 224 px, sigmoid cross-entropy
over the 21,843 (multi-)labels, a tanh pre-logits layer of the model width
(kept for transfer, removed when fine-tuning, Sec. 3.1).

ImageNet-21k is not in the TFDS catalogue: prepare it as a TFDS dataset
named `imagenet21k` (or point `data.name='image_folder'` and
`data.folder` at a class-per-folder copy).
"""

import ml_collections
from ml_collections.config_dict import placeholder

IMAGENET21K_TRAIN_IMAGES = 13_000_000  # about; minus a held-out part

# The variants this recipe documents (tests/test_recipes.py runs each).
ARGS = ('B/16', 'B/32', 'L/16', 'H/14')


def get_config(arg: str = 'B/16') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 4096
  config.total_steps = 90 * IMAGENET21K_TRAIN_IMAGES // config.batch_size
  config.objective = 'supervised'
  config.loss = 'sigmoid_xent'

  config.data = ml_collections.ConfigDict()
  config.data.name = 'imagenet21k'
  config.data.data_dir = placeholder(str)  # None: TFDS default
  config.data.train_split = 'full[51200:]'
  config.data.eval_split = 'full[:51200]'
  config.data.pp_train = ('decode|inception_crop(224)|flip_lr|'
                          'value_range(-1, 1)|onehot(21843)')
  config.data.pp_eval = ('decode|resize_small(256)|central_crop(224)|'
                         'value_range(-1, 1)|onehot(21843)')
  config.data.shuffle_buffer = 250_000

  config.model = ml_collections.ConfigDict()
  config.model.name = 'vit'
  config.model.variant = arg
  config.model.num_classes = 21843
  config.model.pool_type = 'cls'
  config.model.representation_size = 768
  config.model.head_bias_init = -10.0  # sigmoid: start at p ~ 4.5e-5
  config.model.dtype = 'bfloat16'

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 1e-3
  config.wd = 0.03
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 10_000, 'decay': 'linear'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 5_000, 'keep_last': 3, 'keep_every': 100_000})

  # Few-shot linear evaluation (Scaling ViT Sec. 2 / App., the big_vision
  # suite): 1..25 shots, 3 seeds, strength 2^10, big_vision's defaults
  # (configs/common.py, get_fewshot_lsr) for its evaluators/fewshot_lsr.py,
  # which standardises the pre-logits per k-shot sample: this evaluator's
  # default protocol='standardized', so 2^10 means what it means there.
  # ImageNet's 10% subset holds ~128 train images per class, enough for 25
  # shots.
  fewshot_pp = 'decode|resize(224)|value_range(-1, 1)'
  config.evals = ml_collections.ConfigDict()
  config.evals.fewshot = ml_collections.ConfigDict({
      'kind': 'fewshot', 'every_steps': 10_000,
      'representation': 'pre_logits',
      'datasets': {
          'imagenet': {'name': 'imagenet2012_subset/10pct',
                       'train_split': 'train', 'test_split': 'validation',
                       'pp': fewshot_pp},
          'cifar100': {'name': 'cifar100', 'pp': fewshot_pp},
          'pets': {'name': 'oxford_iiit_pet', 'pp': fewshot_pp},
          'caltech': {'name': 'caltech101', 'pp': fewshot_pp},
      },
      'shots': (1, 5, 10, 25), 'seeds': (0, 1, 2), 'l2_reg': 2.0 ** 10,
      'batch_size': 1024})
  return config
