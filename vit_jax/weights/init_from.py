"""`config.init_from`: the variables a training run starts from, from a
timm file, a Google `.npz` or another run of this package."""

from typing import Any, Dict, Optional

from vit_jax import checkpoint
from vit_jax import layout
from vit_jax import models
from vit_jax import paths
from vit_jax.models import common
from vit_jax.weights import core
from vit_jax.weights import families
from vit_jax.weights import hf
from vit_jax.weights import npz
from vit_jax.weights import timm

INIT_KINDS = ('own', 'npz', 'timm', 'hf')


def load_init_params(kind: str, path: str, name: str,
                     image_size: Optional[core.ImageSize] = None,
                     **model_kwargs) -> Dict[str, Any]:
  """Variables to start training from, fitted to `get_model(name, **kwargs)`
  ({'params'}, plus 'batch_stats' for families with BatchNorm).

  kind: 'own' (a vit_jax training run: its workdir, or the workdir's
  checkpoints/ directory; the run's model family, read from the workdir's
  config.json, is converted to `name` by `models.convert_params`, e.g. an
  MAE run gives its encoder, for `get_model('vit', pool_type='cls',
  posemb='sincos2d')`), 'npz' (Google's original / big_vision layout),
  'timm' (a .safetensors or .npz file of a timm state dict). The head is
  replaced and the position embedding resampled as for `from_timm`;
  'hf' (a transformers checkpoint: a directory holding model.safetensors,
  or the .safetensors file, of a family `weights.from_hf` reads; for
  SegFormer also an ImageNet-1k Mix Transformer encoder, mit-b0 ... mit-b5,
  whose decoder and head then keep their random initialisation: those
  variables are left out of the result).
  `path` may be local or gs:// (`vit_jax.paths`).
  A TimeSformer starts from an ImageNet ViT, as in the paper: kinds 'timm'
  and 'npz' read a class-token ViT of its size, 'own' a 'vit' run, and its
  temporal parts are added (`models.convert_params('vit', 'timesformer',
  ...)`); kind 'hf' reads transformers' TimeSformer checkpoints.
  image_size: (height, width) of the frames for a TimeSformer.
  """
  common.check_choice('init_from kind', kind, INIT_KINDS)
  paths.check_supported(path)
  model_kwargs = core.sized_kwargs(name, model_kwargs, image_size)
  if kind in ('npz', 'timm') and hasattr(families.module(name),
                                         'IMAGE_CHECKPOINT'):
    return _from_image_checkpoint(kind, path, name, image_size, model_kwargs)
  if kind == 'npz':
    return npz.load_npz(path, name, image_size=image_size, **model_kwargs)
  if kind == 'timm':
    return timm.from_timm(timm.read(path), name, image_size=image_size,
                          **model_kwargs)
  if kind == 'hf':
    return _from_hf_checkpoint(path, name, image_size, model_kwargs)
  model = models.get_model(name, **model_kwargs)
  candidate = layout.checkpoint_dir(path)
  if paths.isdir(candidate):
    workdir, directory = path, candidate
  else:
    workdir, directory = paths.parent(path), path
  source_name = _run_model_name(workdir)  # before reading checkpoints
  source = checkpoint.restore_variables(directory)
  variables = {'params': models.convert_params(source_name, name,
                                               source.pop('params'))}
  if source_name == name:  # the same family: its statistics too
    variables.update(source)
  flat = core.flatten_variables({collection: common.unstack_blocks(tree)
                                 for collection, tree in variables.items()})
  return core.fit_to_model(flat, name, model, image_size,
                           f'checkpoint {directory}')


def _from_image_checkpoint(kind: str, path: str, name: str, image_size,
                           model_kwargs) -> Dict[str, Any]:
  """`load_init_params`' kinds 'timm' and 'npz' for a family started from
  another family's image checkpoints (its IMAGE_CHECKPOINT: a TimeSformer
  from a ViT): read as that family's model, then converted
  (`models.convert_params`) and fitted."""
  table = families.module(name)
  model = models.get_model(name, **model_kwargs)
  source = table.IMAGE_CHECKPOINT
  image_kwargs = table.image_model_kwargs(model)
  if kind == 'npz':
    read = npz.load_npz(path, source, image_size=image_size, **image_kwargs)
  else:
    read = timm.from_timm(timm.read(path), source, image_size=image_size,
                          **image_kwargs)
  params = models.convert_params(source, name,
                                 common.unstack_blocks(read['params']))
  return core.fit_to_model(core.flatten_variables({'params': params}), name,
                           model, image_size, f'{kind} checkpoint {path}')


def _from_hf_checkpoint(path: str, name: str, image_size,
                        model_kwargs) -> Dict[str, Any]:
  """`load_init_params`' kind 'hf'."""
  if name not in hf.HF_IMPORTABLE:
    raise ValueError(f'init_from kind \'hf\' reads transformers checkpoints '
                     f'of {list(hf.HF_IMPORTABLE)}; model {name!r} is none '
                     f'of them.')
  file = (paths.join(path, 'model.safetensors') if paths.isdir(path)
          else path)
  if not file.endswith('.safetensors'):
    raise ValueError(f'init_from kind \'hf\' needs a .safetensors file or '
                     f'a directory holding model.safetensors; got {path!r}.')
  state = timm.read(file)
  encoder = getattr(families.module(name), 'ENCODER_CHECKPOINT', None)
  fresh = ()
  if encoder and not any(key.startswith(encoder['decoder_names'])
                         for key in state):
    state = {key: value for key, value in state.items()
             if not key.startswith(encoder['dropped_names'])}
    fresh = encoder['fresh_paths']
  model = models.get_model(name, **model_kwargs)
  return core.import_variables(state, hf.TABLES[name], name, model,
                               image_size, f'transformers checkpoint {file}',
                               fresh_paths=fresh)


def _run_model_name(workdir: str) -> str:
  """The model family of the training run in `workdir`, from the
  config.json that every run writes there."""
  path = layout.config_path(workdir)
  config = layout.read_config(workdir)
  if config is None:
    raise FileNotFoundError(
        f'{path} not found: init_from kind \'own\' needs the source run\'s '
        f'config.json (written by every training run) to know its model '
        f'family; give the run\'s workdir or its checkpoints/ directory.')
  try:
    return config['model']['name']
  except (KeyError, TypeError) as error:
    raise ValueError(f'{path} has no model.name.') from error
