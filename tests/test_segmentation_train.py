"""The segmentation objective: config checks, the dense losses wired into
the train step (SegFormer's 1/4 logits upsampled to the label maps, UNETR's
Dice + CE), `EvalFunctions.segment`, and `init_from` kind 'hf' from an
encoder-only SegFormer checkpoint (the ImageNet Mix Transformer the paper
starts from). End-to-end runs on the local datasets: test_segmentation_demo.py.
"""

import os
import types

import jax
import numpy as np
import pytest
from safetensors.numpy import save_file

import tiny
from vit_jax import build
from vit_jax import config as config_lib
from vit_jax import losses
from vit_jax import models
from vit_jax import train
from vit_jax import weights
from vit_jax.models import segformer
from vit_jax.weights import core
from vit_jax.weights import hf

SEGFORMER = dict(name='segformer', widths=(8, 16, 16, 24), depths=(1, 1, 1, 1),
                 num_heads=(1, 2, 2, 3), decoder_width=16, num_classes=5)
UNETR = dict(name='unetr', image_size=(32, 32, 32), in_channels=1,
             num_classes=3, feature_size=4, width=16, depth=12, num_heads=2,
             mlp_dim=32)


def _config(model, loss='softmax_xent', **overrides):
  return config_lib.resolve(dict(
      total_steps=2, batch_size=8, objective='segmentation', loss=loss,
      model=model, data=dict(name='digits'), **overrides))


def _data(task, shape, classes):
  """A stand-in for vit_jax.data: what build_run asks of a dataset."""
  return types.SimpleNamespace(dataset_info=lambda _: {
      'task': task, 'num_classes': classes, 'train_image_shape': shape,
      'image_shape': (None,) * len(shape),
      'num_examples': {'train': 8, 'test': 4}})


def _variables(state):
  return {key: state[key] for key in ('params', 'batch_stats') if key in state}


def test_config_checks_the_loss_against_the_objective():
  with pytest.raises(ValueError, match=r"config.loss='sigmoid_xent' does not "
                     r"train objective 'segmentation'; valid choices: "
                     r"\['softmax_xent', 'dice_ce'\]"):
    _config(SEGFORMER, loss='sigmoid_xent')
  with pytest.raises(ValueError, match="config.loss='dice_ce' does not train "
                     "objective 'supervised'"):
    config_lib.resolve(dict(total_steps=2, batch_size=2, loss='dice_ce',
                            model=dict(name='vit'), data=dict(name='digits')))
  with pytest.raises(ValueError, match='no label smoothing'):
    _config(SEGFORMER, label_smoothing=0.1)


def test_build_checks_the_task_and_the_classes():
  with pytest.raises(ValueError, match="objective 'segmentation' needs a "
                     "dataset with label maps .* 'digits' is a "
                     "'classification' dataset"):
    build.build_run(_config(SEGFORMER), _data('classification', (8, 8, 1), 5))
  with pytest.raises(ValueError, match=r'model.num_classes=5 does not match '
                     r'the 7 classes .*; set model.num_classes=7\.$'):
    build.build_run(_config(SEGFORMER), _data('segmentation', (32, 32, 3), 7))
  supervised = config_lib.resolve(dict(
      total_steps=2, batch_size=8, data=dict(name='digits'),
      model=dict(name='vit', variant='Ti/16', num_classes=5)))
  with pytest.raises(ValueError, match="objective 'supervised' needs a "
                     "classification dataset"):
    build.build_run(supervised, _data('segmentation', (32, 32, 3), 5))


def _train_two_steps(config, shape, labels):
  run = build.build_run(config, _data(
      'segmentation' if len(shape) == 3 else 'volume_segmentation', shape,
      config.model.num_classes))
  assert run.image_shape == shape  # the model is built at the crop size
  state = jax.jit(run.init_fn)(jax.random.PRNGKey(0))
  images = np.random.default_rng(0).normal(size=(8, *shape)).astype(
      np.float32)
  batch = {'image': images, 'label_map': labels}
  loss_fn = train.make_loss_fn(run.model, config)
  step = jax.jit(train.make_train_step(loss_fn, run.tx, run.schedule))
  first, metrics = step(state, batch, jax.random.PRNGKey(1))
  return run, state, batch, float(metrics['train/loss'])


def test_segformer_step_takes_pixel_xent_of_upsampled_logits():
  labels = np.random.default_rng(1).integers(0, 5, (8, 32, 32)).astype(
      np.int32)
  labels[0, :5] = 255  # ignored rows
  run, state, batch, loss = _train_two_steps(_config(SEGFORMER),
                                             (32, 32, 3), labels)
  logits, _ = run.model.apply(_variables(state), batch['image'])
  assert logits.shape == (8, 8, 8, 5)  # 1/4 resolution
  upsampled = segformer.upsample_logits(logits, (32, 32))
  expected = losses.pixel_softmax_xent(upsampled, labels)
  np.testing.assert_allclose(loss, float(expected), rtol=1e-5)
  segment = build.eval_functions(run).segment
  np.testing.assert_allclose(segment(_variables(state), batch['image']),
                             upsampled, rtol=1e-5, atol=1e-6)
  assert build.eval_functions(run).predict is None


def test_unetr_step_takes_dice_ce():
  labels = np.random.default_rng(2).integers(0, 3, (8, 32, 32, 32)).astype(
      np.int32)
  run, state, batch, loss = _train_two_steps(
      _config(UNETR, loss='dice_ce'), (32, 32, 32, 1), labels)
  logits, _ = run.model.apply(_variables(state), batch['image'])
  np.testing.assert_allclose(loss, float(losses.dice_ce_loss(logits, labels)),
                             rtol=1e-5)


def test_dense_logits_refuses_mismatched_maps():
  with pytest.raises(ValueError, match=r'unetr logits \(1, 8, 8, 8, 3\) do '
                     r'not match label maps of spatial shape \(16, 16, 16\)'):
    build.dense_logits('unetr', np.zeros((1, 8, 8, 8, 3)), (16, 16, 16))


def test_init_from_hf_encoder_only_keeps_the_fresh_decoder(tmp_path):
  kwargs = {k: v for k, v in SEGFORMER.items() if k != 'name'}
  model = models.get_model('segformer', **kwargs)
  source = model.init(jax.random.PRNGKey(3), np.zeros((1, 32, 32, 3)))
  state = hf.to_hf(core.flatten_variables(jax.device_get(source)),
                   'segformer')
  encoder = {k: np.ascontiguousarray(v) for k, v in state.items()
             if not k.startswith('decode_head.')}
  # An ImageNet classifier's head, as SegformerForImageClassification has.
  encoder['classifier.weight'] = np.ones((1000, 24), np.float32)
  encoder['classifier.bias'] = np.ones((1000,), np.float32)
  save_file(encoder, os.path.join(tmp_path, 'model.safetensors'))
  loaded = weights.load_init_params('hf', str(tmp_path), 'segformer',
                                    image_size=(32, 32), **kwargs)
  assert set(loaded) == {'params'}
  assert set(loaded['params']) == {f'stage_{i}' for i in range(4)}
  jax.tree.map(np.testing.assert_array_equal, loaded['params'],
               {k: v for k, v in source['params'].items()
                if k.startswith('stage_')})

  # Into a fresh state: the encoder replaced, the decoder kept.
  fresh = jax.device_get(model.init(jax.random.PRNGKey(4),
                                    np.zeros((1, 32, 32, 3))))
  merged = train._over(fresh['params'], loaded['params'])  # pylint: disable=protected-access
  np.testing.assert_array_equal(merged['decoder']['fuse']['kernel'],
                                fresh['params']['decoder']['fuse']['kernel'])
  np.testing.assert_array_equal(merged['stage_2']['norm']['scale'],
                                source['params']['stage_2']['norm']['scale'])

  # A full SegformerForSemanticSegmentation checkpoint: everything, with the
  # decoder's BatchNorm statistics.
  save_file({k: np.ascontiguousarray(v) for k, v in state.items()},
            os.path.join(tmp_path, 'model.safetensors'))
  loaded = weights.load_init_params('hf', str(tmp_path), 'segformer',
                                    image_size=(32, 32), **kwargs)
  np.testing.assert_array_equal(
      loaded['batch_stats']['decoder']['fuse_norm']['var'],
      source['batch_stats']['decoder']['fuse_norm']['var'])
  with pytest.raises(ValueError, match="kind 'hf' reads transformers "
                     "checkpoints of .*; model 'swin' is none of them"):
    weights.load_init_params('hf', str(tmp_path), 'swin')


@pytest.mark.parametrize('dtype', ['float32', 'bfloat16'])
def test_sharded_segmentation_step_equals_the_data_parallel_one(dtype):
  """The SegFormer step with parameters split along 'fsdp' (a (4, 2) mesh)
  gives the data-parallel (8, 1) step's loss and update; bfloat16 compute
  too (to its precision)."""
  labels = np.random.default_rng(3).integers(0, 5, (8, 32, 32)).astype(
      np.int32)
  images = np.random.default_rng(4).normal(size=(8, 32, 32, 3)).astype(
      np.float32)
  results = tiny.step_on_meshes(
      lambda mesh: _config({**SEGFORMER, 'dtype': dtype}, mesh=mesh),
      _data('segmentation', (32, 32, 3), 5),
      {'image': images, 'label_map': labels})
  (loss_dp, params_dp), (loss_fsdp, params_fsdp) = results
  tolerance = 1e-5 if dtype == 'float32' else 2e-2
  assert np.isfinite(loss_dp)
  np.testing.assert_allclose(loss_fsdp, loss_dp, rtol=tolerance)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=tolerance),
               params_fsdp, params_dp)
