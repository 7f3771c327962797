"""Pretrained weights: import of timm state dicts, of Hugging Face
transformers' ViT / ViTMAE / SegFormer / TimeSformer state dicts and of
the `.npz` files of Google's original ViT / Mixer code (and big_vision),
onto this package's parameter
layout; `vit_jax.export` writes the same layouts back through the same
tables. (`vit_jax.pretrained` fetches timm's checkpoints from the Hub by
name.)

- `core.py`: the two-way table entries and paired transforms, applying a
  table in either direction (`to_ours` imports, `to_theirs` exports), flat
  parameter dicts, position-embedding resampling, fitting to a model.
- One module per family (vit.py, mixer.py, swin.py, swinv2.py,
  convmixer.py, xcit.py, mae.py, beit.py, eva.py, unetr.py, segformer.py,
  timesformer.py):
  its tables, one per layout it has (TIMM, HF, NPZ, MONAI), listed in
  `families.FAMILIES`.
- One module per source format (timm.py, hf.py, npz.py, monai.py):
  reading the format, `from_timm` / `from_hf` / `load_npz` / `from_monai`
  (UNETR) and the export direction.
- `init_from.py`: `load_init_params`, `config.init_from`: either importer,
  or the variables of another training run of this package
  (`checkpoint.restore_variables`).

All importers end in the same place (`core.fit_to_model`; timm's and
transformers' state dicts are first checked entry by entry in their own
names, `core.import_variables`): the converted
flat parameters are checked against the shapes the target model expects,
the position embedding is resampled to the target resolution, the head is
replaced when the number of classes changes, and anything still missing,
unexpected or misshapen raises an error that lists it.

Importers return Flax variables: {'params': ...}, plus {'batch_stats':
...} for families with BatchNorm (XCiT, ConvMixer, SegFormer), so
`model.apply(variables, images, train=False)` works as they come. In the
flat '/'-joined form used while converting, a variable of another
collection than 'params' is named '<collection>:<path>' (e.g.
'batch_stats:stem/bn/mean').
"""

# The public names, re-exported from where they live.
# pylint: disable=unused-import
from vit_jax.weights.core import COLLECTION_SEPARATOR
from vit_jax.weights.core import flatten
from vit_jax.weights.core import flatten_variables
from vit_jax.weights.core import resample_posemb
from vit_jax.weights.core import unflatten
from vit_jax.weights.core import unflatten_variables
from vit_jax.weights.families import IMPORTABLE
from vit_jax.weights.hf import from_hf
from vit_jax.weights.hf import HF_IMPORTABLE
from vit_jax.weights.init_from import INIT_KINDS
from vit_jax.weights.init_from import load_init_params
from vit_jax.weights.monai import from_monai
from vit_jax.weights.monai import MONAI_IMPORTABLE
from vit_jax.weights.npz import load_npz
from vit_jax.weights.timm import from_timm
from vit_jax.weights.torchvision import from_torchvision
from vit_jax.weights.torchvision import TORCHVISION_IMPORTABLE
