"""Fine-tune a pre-trained model on a TFDS dataset at another resolution.

Dosovitskiy et al. 2020 (ViT), Sec. 3.2 / App. B.1.1: SGD with momentum 0.9,
batch 512, no weight decay, global-norm clipping at 1, cosine decay with a
short warmup, a higher resolution than pre-training (the position embedding
is resampled, the head replaced by a zero-initialised one, Sec. 3.1).

ARG is 'DATASET,RESOLUTION' (default 'cifar10,384'). The weights come from
`init_from`: kind 'own' (a vit_jax workdir), 'npz' (Google's original /
big_vision checkpoints) or 'timm' (.safetensors / .npz state dict), e.g.

    python -m vit_jax.main --config=configs/finetune.py:oxford_iiit_pet,384 \
        --workdir=DIR --config.init_from.kind=npz \
        --config.init_from.path=ViT-B_16.npz
"""

import ml_collections
from ml_collections.config_dict import placeholder

# TFDS name -> (classes, train split, eval split, training steps).
DATASETS = {
    'cifar10': (10, 'train[:98%]', 'test', 10_000),
    'cifar100': (100, 'train[:98%]', 'test', 10_000),
    'oxford_iiit_pet': (37, 'train[:90%]', 'test', 500),
    'oxford_flowers102': (102, 'train', 'test', 500),
    'imagenet2012': (1000, 'train[:99%]', 'validation', 20_000),
}

# The arguments this recipe documents (tests/test_recipes.py runs each):
# every dataset of DATASETS at 384 px.
ARGS = tuple(f'{name},384' for name in DATASETS)


def get_config(arg: str = 'cifar10,384') -> ml_collections.ConfigDict:
  dataset, _, resolution = arg.partition(',')
  if dataset not in DATASETS:
    raise ValueError(f'Unknown fine-tuning dataset {dataset!r}; valid: '
                     f'{sorted(DATASETS)} (or override config.data).')
  resolution = int(resolution or 384)
  num_classes, train_split, eval_split, steps = DATASETS[dataset]

  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 512
  config.total_steps = steps
  config.objective = 'supervised'
  config.loss = 'softmax_xent'

  config.data = ml_collections.ConfigDict()
  config.data.name = dataset
  config.data.data_dir = placeholder(str)  # None: TFDS default
  config.data.train_split = train_split
  config.data.eval_split = eval_split
  config.data.pp_train = (f'decode|inception_crop({resolution})|flip_lr|'
                          f'value_range(-1, 1)|onehot({num_classes})')
  config.data.pp_eval = (f'decode|resize({resolution})|'
                         f'value_range(-1, 1)|onehot({num_classes})')
  config.data.shuffle_buffer = 50_000

  config.model = ml_collections.ConfigDict()
  config.model.name = 'vit'
  config.model.variant = 'B/16'
  config.model.num_classes = num_classes
  config.model.pool_type = 'cls'
  config.model.dtype = 'bfloat16'

  config.init_from = ml_collections.ConfigDict()
  config.init_from.kind = 'npz'
  config.init_from.path = placeholder(str)

  config.optimizer = ml_collections.ConfigDict({'name': 'sgd',
                                                'momentum': 0.9})
  config.lr = 0.03
  config.wd = 0.0
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': min(500, steps // 10), 'decay': 'cosine'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 50
  config.eval_every_steps = max(steps // 10, 1)
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 1_000, 'keep_last': 2})
  return config
