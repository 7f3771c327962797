"""The Scaling ViT recipe.

Zhai et al. 2021, "Scaling Vision Transformers", Sec. 3 and App.: a MAP
head (Sec. 3.2), no class token; Adafactor with factored second moments,
beta2 = min(0.999, 1 - t^-0.8), momentum 0.9 stored in bfloat16, no
parameter-scale multiplication and no update clipping (Sec. 3.4); decoupled
weight decay 3.0 on the head and 0.03 on the body (Sec. 3.1); an rsqrt
schedule with 10k warmup steps and a linear cooldown (Sec. 3.5); batch 4096;
sigmoid cross-entropy with a -10 head bias. JFT-3B is not public: the data
block defaults to ImageNet-21k. Few-shot linear evaluation on ImageNet,
CIFAR-100, Pets and Caltech-101 runs every 10k steps (`config.evals`).

    python -m vit_jax.main --config=configs/scaling_vit.py:g/14 --workdir=DIR

ARG is the variant; `config.total_steps` and `schedule.cooldown_steps`
set the compute budget of one point of a scaling curve.
"""

import ml_collections
from ml_collections.config_dict import placeholder

# The variants this recipe documents (tests/test_recipes.py runs each).
ARGS = ('S/16', 'B/16', 'L/16', 'H/14', 'g/14', 'G/14')


def get_config(arg: str = 'B/16') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.batch_size = 4096
  config.total_steps = 500_000
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
  config.model.pool_type = 'map'
  config.model.head_bias_init = -10.0
  config.model.dtype = 'bfloat16'
  config.model.scan = True   # deep models: one compiled block
  config.model.remat = True

  config.optimizer = ml_collections.ConfigDict({
      'name': 'adafactor', 'momentum': 0.9, 'momentum_dtype': 'bfloat16',
      'decay_rate': 0.8, 'beta2_cap': 0.999, 'min_dim_size_to_factor': 32})
  config.lr = 8e-4
  # Decoupled weight decay, scaled by the learning rate (vit_jax.optim):
  # the head decays 100x more than the body's kernels.
  config.wd = 1.0
  config.wd_mults = (('head/kernel$', 3.0), ('.*/kernel$', 0.03))
  config.grad_clip_norm = 1.0
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 10_000, 'decay': 'rsqrt', 'timescale': 10_000,
      'cooldown_steps': 50_000, 'cooldown_shape': 'linear'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 100
  config.eval_every_steps = 10_000
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 5_000, 'keep_last': 3, 'keep_every': 100_000,
      'keep_steps': ()})
  # Cooldown branches (vit_jax/branch.py): the rsqrt schedule's value does
  # not depend on total_steps, so one long run without cooldown (the
  # trunk) gives a compute point per branch: `branch.trunk` its workdir,
  # `branch.step` the step, with total_steps and schedule.cooldown_steps
  # of the branch (vit_jax.launch.sweep.branches builds these runs).
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})

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
