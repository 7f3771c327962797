"""Few-shot linear evaluation of a pretrained checkpoint, without training.

    python -m vit_jax.evaluate --pretrained=NAME_OR_DIR \
        --config=configs/fewshot_eval.py[:DATASET,...] --output_dir=DIR \
        [--config.datasets=cifar100,pets] [--config.KEY=VALUE ...]

The protocol of big_vision's few-shot evaluator (its
configs/common_fewshot.py): for each dataset, k = 1, 5, 10 and 25 training
examples per class, a closed-form ridge regression on the standardised
frozen representation with l2 strength 2^10, top-1 accuracy on the test
split, averaged over 3 sampling seeds (`vit_jax/evaluate/fewshot.py`).

ARG (or `--config.datasets`) names the datasets, comma-separated, from
`catalog`: big_vision's six by default (each TFDS dataset prepared once
with `tfds build NAME --data_dir=DIR`; vit_jax never downloads during a
run), `imagenet` (a manual download) or `digits`, the embedded offline
dataset. Images are preprocessed as the checkpoint is evaluated (its image
size, crop_pct, interpolation, mean / std: `vit_jax.predict.pretrained_spec`)
and decoded to the channels its weights take, unless `pp` (every dataset)
or a catalog entry's `pp` sets a preprocessing spec.
"""

import ml_collections
from ml_collections.config_dict import placeholder

# The variant arguments this file documents: the offline dataset, and a
# pair of big_vision's.
ARGS = ('digits', 'cifar100,pets')

# big_vision's few-shot datasets (configs/common_fewshot.py): TFDS name, train
# and test split. uc_merced has a single split, of which big_vision trains
# on the first 1,000 images; ImageNet's first 65,000 training images hold at
# least 30 of every class, enough for 25-shot without encoding 1.28M images.
CATALOG = {
    'caltech': ('caltech101', 'train', 'test'),
    'cars': ('cars196:2.1.0', 'train', 'test'),
    'cifar100': ('cifar100', 'train', 'test'),
    'dtd': ('dtd', 'train', 'test'),
    'pets': ('oxford_iiit_pet', 'train', 'test'),
    'uc_merced': ('uc_merced', 'train[:1000]', 'train[1000:]'),
    'imagenet': ('imagenet2012', 'train[:65000]', 'validation'),
    'digits': ('digits', 'train', 'test'),
}
DEFAULT_DATASETS = 'caltech,cars,cifar100,dtd,pets,uc_merced'


def get_config(arg: str = '') -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.datasets = arg or DEFAULT_DATASETS  # names in config.catalog
  config.catalog = ml_collections.ConfigDict({
      key: {'name': name, 'train_split': train, 'test_split': test}
      for key, (name, train, test) in CATALOG.items()})
  # None: the checkpoint's own evaluation preprocessing; a spec (e.g.
  # "resize(224)|value_range(-1, 1)") replaces it for every dataset.
  config.pp = placeholder(str)
  config.data_dir = placeholder(str)  # None: TFDS's default
  config.representation = 'pre_logits'  # or an aux key or module path
  config.shots = (1, 5, 10, 25)
  config.seeds = (0, 1, 2)
  config.l2_reg = 2.0 ** 10
  # Strengths to choose from on held-out shots for k >= 2 (l2_reg then
  # serves k = 1 only); None: l2_reg at every k, as big_vision.
  config.l2_reg_candidates = placeholder(tuple)
  config.holdout_fraction = 0.2  # of each k-shot sample, for the choice
  config.protocol = 'standardized'  # big_vision's; or 'raw'
  config.batch_size = 256  # images per representation pass, all devices
  config.prefix = 'fewshot'  # metrics 'fewshot/<dataset>/<k>shot[_std]'
  return config
