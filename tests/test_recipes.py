"""Every recipe in configs/ runs: each variant argument it documents
resolves and builds at full size, and runs end to end on a small local
stand-in (tests/support/stand_in.py) with the recipe's own preprocessing,
optimizer, schedule shape, loss and evaluators.

Variants that are the same run on the stand-in (they differ only in their
size, which the stand-in replaces, or in a regularisation strength) run
once: `RUNS` keeps the first of each.
"""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import pytest

import stand_in
import tiny
from vit_jax import build
from vit_jax import config as config_lib
from vit_jax import optim
from vit_jax import models
from vit_jax import train
from vit_jax.models import counts

# Configs in configs/ that are not training recipes: few-shot evaluation of
# a pretrained checkpoint (tests/test_evaluate_pretrained.py runs it).
EVALUATION_CONFIGS = ('fewshot_eval',)
RECIPES = sorted(name[:-3] for name in os.listdir(
    os.path.join(tiny.ROOT, 'configs'))
                 if name.endswith('.py') and name[:-3] not in
                 EVALUATION_CONFIGS)
VARIANTS = [(name, arg) for name in RECIPES
            for arg in stand_in.documented_args(name)]
INIT_KINDS = ('own', 'npz', 'timm')  # configs/finetune.py's weights
# Recipes that start from an ImageNet ViT (the stand-in's, trained by
# `source_run`), by their init_from kind.
FROM_IMAGENET_VIT = ('timesformer_k400',)
SUBPROCESS_TIMEOUT = 1800  # generous: CI's own limit is the guard


def _shrunk(name, arg, folder='FOLDER', data_dir='DATA_DIR',
            segmentation_folder='SEGMENTATION_FOLDER',
            nifti_folder='NIFTI_FOLDER', video_folder='VIDEO_FOLDER'):
  return stand_in.stand_in(tiny.load_config(name, arg), folder, data_dir,
                           segmentation_folder, nifti_folder, video_folder)


def _run_key(name, arg):
  """What makes a stand-in run different: its resolved config, the model
  block replaced by the fields of the model it builds (so a variant counts
  by what it sets besides the sizes the stand-in replaces, e.g. MViTv1's
  design against MViTv2's, whatever the family), and floats of the model
  reduced to zero / non-zero (a stochastic-depth rate or a dropout is the
  same code at 0.1 and 0.2)."""
  resolved = config_lib.to_json_dict(config_lib.resolve(_shrunk(name, arg)))
  built = models.get_model(**models.kwargs_from_config(resolved['model']))
  resolved['model'] = {
      field.name: (value != 0 if isinstance(value, float) else value)
      for field in dataclasses.fields(built)
      if field.name not in ('parent', 'name')
      for value in (getattr(built, field.name),)}
  return json.dumps(resolved, sort_keys=True, default=str)


def _runs():
  runs, seen = [], set()
  for name, arg in VARIANTS:
    key = _run_key(name, arg)
    if key in seen:
      continue
    seen.add(key)
    if name == 'finetune':
      kinds = INIT_KINDS
    elif name in FROM_IMAGENET_VIT:
      kinds = (tiny.load_config(name, arg).init_from.kind,)
    else:
      kinds = (None,)
    runs.extend((name, arg, kind) for kind in kinds)
  return runs


RUNS = _runs()


def _id(run):
  name, arg, kind = run
  return f'{name}:{arg}' + (f'+{kind}' if kind else '')


def _image_size(pp_eval):
  """The side of the images a recipe evaluates on (its last sizing op;
  the digits' 8 px when it has none)."""
  sizes = [int(part.split('(')[1].split(')')[0].split(',')[0])
           for part in pp_eval.split('|')
           if part.split('(')[0] in ('central_crop', 'resize', 'view_crop',
                                     'center_crop')]
  return sizes[-1] if sizes else 8


def test_every_recipe_documents_its_variant_arguments():
  assert len(RECIPES) >= 12
  for name in RECIPES:
    args = stand_in.documented_args(name)
    assert args, name
    module = tiny.load_module(name)
    # The default argument is among the documented ones.
    default = module.get_config.__defaults__
    if default and default[0]:
      assert default[0] in args, (name, default, args)


@pytest.mark.parametrize('name, arg', VARIANTS,
                         ids=[f'{n}:{a}' for n, a in VARIANTS])
def test_each_variant_resolves_and_builds_at_full_size(name, arg):
  config = config_lib.resolve(tiny.load_config(name, arg))
  model = build.build_model(config.model)
  size = _image_size(config.data.pp_eval)
  channels = 1 if config.data.name in ('digits', 'digit_mosaics',
                                       'moving_digits') else 3
  shape = (size, size, channels)
  if config.model.name != 'unetr' and config.model.get('image_size'):
    sides = config.model.image_size  # a model built for its frames' size
    shape = (*((sides,) * 2 if isinstance(sides, int) else sides), channels)
  if config.model.name == 'unetr':  # counted on its own volume
    shape = (*model.volume, model.in_channels)
  if config.data.get('num_frames'):  # clips
    shape = (config.data.num_frames, *shape)
  params = counts.param_count(
      model, size if config.model.name == 'unetr' else shape[-3:-1],
      channels)
  assert params > 0
  # The optimizer, schedule and multipliers build for the full model too.
  tx, schedule = optim.make_optimizer(config, config.total_steps)
  assert float(schedule(config.total_steps // 2)) > 0
  if arg == stand_in.documented_args(name)[0]:
    # One variant per recipe is initialised abstractly at full size.
    init = build.make_init_fn(model, tx, shape)
    state = jax.eval_shape(init, jax.random.PRNGKey(0))
    assert sum(x.size for x in jax.tree_util.tree_leaves(
        state['params'])) == params


def test_stand_in_changes_only_sizes_and_places():
  for name, arg in VARIANTS:
    recipe = tiny.load_config(name, arg)
    shrunk = _shrunk(name, arg)
    assert stand_in.unexpected_changes(recipe, shrunk) == [], (name, arg)
    # Its preprocessing applies the recipe's ops in the recipe's order.
    for key in ('pp_train', 'pp_eval'):
      assert stand_in.same_ops(recipe.data[key], shrunk.data[key])
    assert shrunk.total_steps == stand_in.STEPS
  # The check itself catches a change outside the allowed keys.
  recipe = tiny.load_config('vit_i1k', 'B/16')
  changed = _shrunk('vit_i1k', 'B/16')
  changed.optimizer.b2 = 0.95
  changed.data.mixup_alpha = 0.0
  assert stand_in.unexpected_changes(recipe, changed) == [
      'data.mixup_alpha', 'optimizer.b2']


def test_shrink_spec_scales_sizes_and_classes_only():
  spec = ("decode|resize_small(256, 'bicubic')|central_crop(224)|"
          'inception_crop(224, area_min=8)|resize(384)|randaug(2, 15)|'
          'value_range(-1, 1)|onehot(1000, 0.9, 0.01)')
  assert stand_in.shrink_spec(spec) == (
      "decode|resize_small(40, 'bicubic')|central_crop(32)|"
      'inception_crop(32, area_min=8)|resize(56)|randaug(2, 15)|'
      'value_range(-1, 1)|onehot(4, 0.9, 0.01)')
  assert stand_in.same_ops(spec, stand_in.shrink_spec(spec))
  assert not stand_in.same_ops(spec, 'decode|central_crop(32)')


def test_the_stand_in_keeps_every_recipe_and_the_runs_cover_them():
  covered = {name for name, _, _ in RUNS}
  assert covered == set(RECIPES)
  # The variants that differ on the stand-in (poolings, families) each run.
  assert {arg for name, arg, _ in RUNS if name == 'digits'} == {
      'cls', 'gap', 'map'}
  assert {arg.split('/')[0] for name, arg, _ in RUNS
          if name == 'digits_scaling'} == {'vit', 'mixer', 'xcit',
                                           'convmixer'}
  assert {kind for name, _, kind in RUNS if name == 'finetune'} == set(
      INIT_KINDS)


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
  return stand_in.make_image_folder(str(tmp_path_factory.mktemp('folder')))


@pytest.fixture(scope='module')
def segmentation_folder(tmp_path_factory):
  return stand_in.make_segmentation_folder(
      str(tmp_path_factory.mktemp('segmentation_folder')))


@pytest.fixture(scope='module')
def nifti_folder(tmp_path_factory):
  return stand_in.make_nifti_folder(
      str(tmp_path_factory.mktemp('nifti_folder')))


@pytest.fixture(scope='module')
def video_folder(tmp_path_factory):
  return stand_in.make_video_folder(str(tmp_path_factory.mktemp('videos')))


@pytest.fixture(scope='module')
def source_run(image_folder, data_dir, tmp_path_factory):
  """The stand-in of vit_i1k, trained: the weights configs/finetune.py
  starts from, as a workdir ('own'), an npz file and a timm file."""
  from vit_jax import export  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('source')
  workdir = str(root / 'run')
  train.train_and_evaluate(_shrunk('vit_i1k', 'B/16', image_folder,
                                   data_dir), workdir)
  npz = str(root / 'source.npz')
  export.export_run(workdir, 'npz', npz)
  timm_dir = str(root / 'timm')
  export.export_run(workdir, 'timm', timm_dir)
  return {'own': workdir, 'npz': npz,
          'timm': os.path.join(timm_dir, 'model.safetensors')}


def _expected_metrics(config):
  """The metric names a stand-in run must write at its last step."""
  names = set()
  if config.objective == 'supervised' and config.eval_every_steps:
    names.add('val/accuracy')
  for entry_name, entry in config.evals.items():
    if entry.kind == 'fewshot':
      names.update(f'{entry.prefix}/{key}/{shots}shot'
                   for key in entry.datasets for shots in entry.shots)
    elif entry.kind == 'reconstruction':
      names.add(f'{entry.prefix}/loss')
    elif entry.kind == 'classification':
      names.add(f'{entry.prefix or entry_name}/accuracy')
    elif entry.kind == 'segmentation':
      names.update(f'{entry.prefix}/{name}' for name in ('miou', 'iou/0'))
    elif entry.kind == 'volume_segmentation':
      names.update(f'{entry.prefix}/{name}' for name in ('dice', 'dice/1'))
  return names


@pytest.mark.parametrize('run', RUNS, ids=[_id(run) for run in RUNS])
def test_recipe_runs_end_to_end_on_a_stand_in(run, image_folder, data_dir,
                                              segmentation_folder,
                                              nifti_folder, video_folder,
                                              tmp_path, request):
  name, arg, kind = run
  config = _shrunk(name, arg, image_folder, data_dir, segmentation_folder,
                   nifti_folder, video_folder)
  if kind is not None:
    config.init_from.kind = kind
    config.init_from.path = request.getfixturevalue('source_run')[kind]
  workdir = str(tmp_path / 'run')
  train.train_and_evaluate(config, workdir)

  rows = train.read_metrics(workdir)
  losses = [row['step'] for row in rows if 'train/loss' in row]
  assert losses == list(range(1, stand_in.STEPS + 1))
  assert all(row['train/loss'] == row['train/loss'] for row in rows
             if 'train/loss' in row)  # not NaN
  written = {key for row in rows if row['step'] == stand_in.STEPS
             for key in row}
  expected = _expected_metrics(config_lib.resolve(config))
  assert expected and expected <= written, sorted(expected - written)
  assert os.path.exists(os.path.join(workdir, 'done'))
  assert not os.path.exists(os.path.join(workdir, 'error'))
  assert os.path.isdir(os.path.join(workdir, 'checkpoints',
                                    str(stand_in.STEPS)))



def test_image_folder_route_from_the_command_line(image_folder, data_dir,
                                                  tmp_path):
  """docs/training.md's route to one's own images, with the offline recipe:
  `--config.data.name=image_folder --config.data.folder=...`, a key
  configs/digits.py leaves at its default."""
  workdir = tmp_path / 'run'
  flags = {
      'data.name': 'image_folder', 'data.folder': image_folder,
      'data.train_split': 'train', 'data.eval_split': 'validation',
      'data.pp_train': 'decode(channels=1)|resize(8)|value_range(-1, 1)|'
                       'onehot(4)',
      'data.pp_eval': 'decode(channels=1)|resize(8)|value_range(-1, 1)|'
                      'onehot(4)',
      'model.num_classes': 4, 'total_steps': 2, 'batch_size': 16,
      'eval_every_steps': 2, 'checkpoint.every_steps': 2,
      'schedule.warmup_steps': 1, 'model.depth': 1,
  }
  command = [sys.executable, '-m', 'vit_jax.main',
             '--config=configs/digits.py', f'--workdir={workdir}',
             '--config.evals={}',
             *(f'--config.{key}={value}' for key, value in flags.items())]
  result = subprocess.run(command, cwd=tiny.ROOT, capture_output=True,
                          text=True, timeout=SUBPROCESS_TIMEOUT, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  config = json.loads((workdir / 'config.json').read_text())
  assert config['data']['folder'] == image_folder
  rows = train.read_metrics(str(workdir))
  assert any('val/accuracy' in row for row in rows)
  assert (workdir / 'done').exists()
