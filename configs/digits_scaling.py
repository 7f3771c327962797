"""A scaling ladder on the embedded digits: ViT, Mixer, XCiT and ConvMixer,
five sizes each.

    python -m vit_jax.main --config=configs/digits_scaling.py:vit/s \
        --workdir=/tmp/digits_vit_s

ARG is FAMILY/SIZE: FAMILY one of FAMILIES, SIZE one of SIZES (width and
depth; 2x2 patches of the 8x8 images, so 16 tokens; XCiT's convolutional
patch embedding is then one stride-2 convolution, and its two
class-attention layers come on top of `depth`; ConvMixer's depthwise
kernel is 3, for a 4x4 map). XCiT and ConvMixer carry BatchNorm
statistics. On 2026-12-02 (2 CPU cores, TensorFlow 2.20) the `s` runs of
480 steps reached val/accuracy 0.983 (xcit/s, 68 s), 0.986 (convmixer/s,
39 s) and 0.972 (vit/s, 44 s). The schedule is
constant after a short warmup and has no cooldown, so the run can be the
trunk of cooldown branches (vit_jax/branch.py): a branch at step S with
`total_steps` and `schedule.cooldown_steps` of its own ends exactly where a
run of that length from scratch would. `configs/sweeps/digits_scaling.py`
runs the ladder with its branches; `python -m vit_jax.scaling` fits it.
Validation accuracy and 10-shot linear accuracy are measured at the end
of each run (and every `eval_every_steps` on the way).
"""

import ml_collections
from ml_collections.config_dict import placeholder

FAMILIES = ('vit', 'mixer', 'xcit', 'convmixer')
# width, depth: 2.8k (vit/xxs) to 136k (vit/l) parameters.
SIZES = {'xxs': (16, 1), 'xs': (24, 2), 's': (32, 2), 'm': (48, 3),
         'l': (64, 4)}

# The variant arguments this recipe documents (tests/test_recipes.py runs
# each one): every family at every size.
ARGS = tuple(f'{family}/{size}' for family in FAMILIES for size in SIZES)


def get_config(arg: str = 'vit/s') -> ml_collections.ConfigDict:
  family, _, size = (arg or 'vit/s').partition('/')
  if family not in FAMILIES or size not in SIZES:
    raise ValueError(f'configs/digits_scaling.py: ARG {arg!r} must be '
                     f'FAMILY/SIZE with FAMILY in {list(FAMILIES)} and SIZE '
                     f'in {list(SIZES)}.')
  width, depth = SIZES[size]
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.total_steps = 480
  config.batch_size = 128
  config.objective = 'supervised'
  config.loss = 'softmax_xent'
  config.label_smoothing = 0.1

  config.data = ml_collections.ConfigDict()
  config.data.name = 'digits'
  config.data.data_dir = placeholder(str)  # None: TFDS default
  config.data.train_split = 'train'
  config.data.eval_split = 'test'
  config.data.pp_train = 'value_range(-1, 1)|onehot(10)'
  config.data.pp_eval = 'value_range(-1, 1)|onehot(10)'
  config.data.shuffle_buffer = 2_000
  config.data.cache = True

  config.model = ml_collections.ConfigDict()
  config.model.name = family
  config.model.patch_size = 2
  config.model.width = width
  config.model.depth = depth
  config.model.num_classes = 10
  config.model.dtype = 'float32'
  if family == 'vit':
    config.model.mlp_dim = 2 * width
    config.model.num_heads = max(width // 16, 1)
    config.model.pool_type = 'gap'
  elif family == 'mixer':
    config.model.tokens_mlp_dim = width // 2
    config.model.channels_mlp_dim = 2 * width
  elif family == 'xcit':
    config.model.mlp_ratio = 2.0
    config.model.num_heads = max(width // 16, 1)
  else:  # convmixer
    config.model.kernel_size = 3

  config.optimizer = ml_collections.ConfigDict({'name': 'adamw', 'b1': 0.9,
                                                'b2': 0.999})
  config.lr = 3e-3
  config.wd = 1e-4
  config.grad_clip_norm = 1.0
  # Constant after warmup, no cooldown: a trunk for cooldown branches.
  config.schedule = ml_collections.ConfigDict({
      'warmup_steps': 40, 'decay': 'constant', 'cooldown_steps': 0,
      'cooldown_shape': 'linear'})

  config.mesh = ml_collections.ConfigDict({'data': -1, 'fsdp': 1})
  config.log_every_steps = 40
  config.eval_every_steps = 160
  config.checkpoint = ml_collections.ConfigDict({
      'every_steps': 160, 'keep_last': 1, 'keep_every': placeholder(int),
      'keep_steps': (), 'async_save': True})
  config.branch = ml_collections.ConfigDict({
      'trunk': placeholder(str), 'step': placeholder(int)})

  config.evals = ml_collections.ConfigDict()
  config.evals.fewshot = ml_collections.ConfigDict({
      'kind': 'fewshot', 'every_steps': 160, 'representation': 'pre_logits',
      'datasets': {'digits': {'name': 'digits', 'train_split': 'train',
                              'test_split': 'test',
                              'pp': 'value_range(-1, 1)'}},
      'shots': (10,), 'seeds': (0, 1, 2), 'l2_reg': 2.0 ** 4})
  return config
