"""Attention maps (capture, rollout, plot) and `python -m vit_jax.predict`."""

import csv
import io
import json
import logging
import os
import re
import subprocess
import sys
import types

import jax
import numpy as np
from PIL import Image
import pytest

from vit_jax import attention_maps as attention_lib
from vit_jax import build, checkpoint, predict, train
from vit_jax.data import labels as labels_lib
from vit_jax.evaluate import reconstruction
from vit_jax.models import common
from vit_jax.models import vit

from tiny import tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_VIT = dict(patch_size=4, width=16, depth=2, mlp_dim=32, num_heads=2,
                num_classes=3)


def _tiny_vit(**kwargs):
  model = vit.ViT(**{**TINY_VIT, **kwargs})
  images = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1))
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images)
  return model, variables, images


# ----------------------------------------------------------------------------
# Capturing attention.


def _softmax(x):
  x = x - x.max(axis=-1, keepdims=True)
  return np.exp(x) / np.exp(x).sum(axis=-1, keepdims=True)


def test_captured_attention_is_the_softmax_of_scaled_scores():
  model, variables, images = _tiny_vit()
  maps = attention_lib.attention_maps(model, variables, images)
  # Each block's attention input (the norm1 output), from flax's capture.
  is_norm1 = lambda module, method: module.path[-1:] == ('norm1',)  # noqa: E731
  _, state = jax.jit(lambda v, x: model.apply(
      v, x, capture_intermediates=is_norm1, mutable=['intermediates']))(
          variables, images)
  tokens = 5  # the class token and 2 x 2 patches
  assert sorted(maps) == [0, 1]
  for block in (0, 1):
    normed = np.asarray(state['intermediates']['encoder'][f'block_{block}'][
        'norm1']['__call__'][0], np.float64)  # [B, N, D]
    attn = jax.tree.map(lambda x: np.asarray(x, np.float64), variables[
        'params']['encoder'][f'block_{block}']['attn'])
    query = np.einsum('bnd,dhk->bnhk', normed, attn['query']['kernel']) + (
        attn['query']['bias'])
    key = np.einsum('bnd,dhk->bnhk', normed, attn['key']['kernel']) + (
        attn['key']['bias'])
    head_dim = query.shape[-1]
    expected = _softmax(np.einsum('bqhd,bkhd->bhqk', query, key)
                        / np.sqrt(head_dim))
    assert maps[block].shape == (2, 2, tokens, tokens)
    assert maps[block].dtype == np.float32
    np.testing.assert_allclose(maps[block], expected, atol=2e-6)
    np.testing.assert_allclose(maps[block].sum(-1), 1.0, atol=1e-6)


def _count(jaxpr, primitive):
  """Equations of `primitive` in a jaxpr, nested ones (pjit, ...) included."""
  total = 0
  for eqn in jaxpr.eqns:
    total += eqn.primitive.name == primitive
    for value in eqn.params.values():
      for inner in value if isinstance(value, (tuple, list)) else [value]:
        inner = getattr(inner, 'jaxpr', inner)  # a ClosedJaxpr's jaxpr
        if hasattr(inner, 'eqns'):
          total += _count(inner, primitive)
  return total


def test_capture_off_leaves_the_fused_path_unchanged():
  model, variables, images = _tiny_vit()
  capturing = model.clone(capture_attention=(0, 1))
  plain = lambda m: jax.make_jaxpr(  # noqa: E731
      lambda v, x: m.apply(v, x)[0])(variables, images)
  # The flag alone (no mutable 'intermediates') changes nothing at all.
  assert str(plain(model)) == str(plain(capturing))
  # One softmax (one exp) per block: the fused path's own.
  assert _count(plain(model).jaxpr, 'exp') == model.depth
  # Capturing replaces the fused product in the chosen block, adding none.
  captured = jax.make_jaxpr(lambda v, x: model.clone(
      capture_attention=(1,)).apply(v, x, mutable=['intermediates'])[0][0])(
          variables, images)
  assert _count(captured.jaxpr, 'exp') == model.depth
  # Nothing sown without the flag, only the named blocks with; the same
  # outputs.
  apply = lambda m, **kw: jax.jit(  # noqa: E731
      lambda v, x: m.apply(v, x, **kw))(variables, images)
  logits, _ = apply(model)
  (logits_on, _), state_on = apply(model.clone(capture_attention=(1,)),
                                   mutable=['intermediates'])
  _, state_off = jax.eval_shape(lambda v, x: model.apply(
      v, x, mutable=['intermediates']), variables, images)
  assert not state_off.get('intermediates')
  assert list(state_on['intermediates']['encoder']) == ['block_1']
  np.testing.assert_allclose(logits, logits_on, atol=1e-5)


def test_attention_maps_of_a_scanned_model_and_bad_blocks():
  model, variables, images = _tiny_vit(scan=True, pool_type='gap')
  unrolled = model.clone(scan=False)
  params = common.unstack_blocks(variables['params'])
  maps = attention_lib.attention_maps(model, variables, images, blocks=[1])
  reference = attention_lib.attention_maps(unrolled, {'params': params},
                                           images, blocks=[1])
  assert list(maps) == [1] and maps[1].shape == (2, 2, 4, 4)  # no class token
  np.testing.assert_allclose(maps[1], reference[1], atol=1e-6)
  with pytest.raises(ValueError, match=r'valid blocks: 0\.\.1'):
    attention_lib.attention_maps(unrolled, {'params': params}, images,
                                 blocks=[2])
  with pytest.raises(ValueError, match=r'valid blocks: 0\.\.1'):
    vit.ViT(**TINY_VIT, capture_attention=(5,))
  with pytest.raises(ValueError, match='need a ViT'):
    attention_lib.attention_maps(object(), variables, images)


# ----------------------------------------------------------------------------
# Rollout, on maps made by hand.


def _uniform(tokens, heads=2, batch=1):
  return np.full((batch, heads, tokens, tokens), 1.0 / tokens)


def test_rollout_of_one_block_with_a_class_token():
  # Token 0 is the class token of a 2x2 grid; only its row matters here.
  maps = _uniform(5)
  maps[0, 0, 0] = [0.2, 0.4, 0.1, 0.2, 0.1]
  maps[0, 1, 0] = [0.6, 0.1, 0.1, 0.1, 0.1]
  # mean of the heads: [.4, .25, .1, .15, .1]; + identity: [1.4, ...] / 2.
  np.testing.assert_allclose(
      attention_lib.attention_rollout({0: maps}),
      [[[0.125, 0.05], [0.075, 0.05]]], atol=1e-7)
  # max of the heads: [.6, .4, .1, .2, .1]; + identity; / 2.4.
  np.testing.assert_allclose(
      attention_lib.attention_rollout({0: maps}, head_fusion='max'),
      [[[0.4 / 2.4, 0.1 / 2.4], [0.2 / 2.4, 0.1 / 2.4]]], atol=1e-7)
  # The block's own map: the class token's row, heads averaged.
  np.testing.assert_allclose(attention_lib.class_token_maps({3: maps})[3],
                             [[[0.25, 0.1], [0.15, 0.1]]], atol=1e-7)


def test_rollout_multiplies_later_blocks_on_the_left():
  first = _uniform(5)
  first[0, :, 0] = [0.2, 0.4, 0.1, 0.2, 0.1], [0.6, 0.1, 0.1, 0.1, 0.1]
  # Block 0 after identity and renormalising: row 0 [.7, .125, .05, .075,
  # .05]; other rows .1 off the diagonal, .6 on it. Block 1 (uniform): row
  # 0 [.6, .1, .1, .1, .1]. Rollout row 0 = A1[0] @ A0:
  #   j=1: .6 * .125 + .1 * (.6 + .1 + .1 + .1) = .165, ...
  rollout = attention_lib.attention_rollout({0: first, 1: _uniform(5)})
  np.testing.assert_allclose(rollout, [[[0.165, 0.12], [0.135, 0.12]]],
                             atol=1e-7)
  # Two uniform blocks: ((U + I) / 2)^2 = (3U + I) / 4, so 3/20 each.
  np.testing.assert_allclose(
      attention_lib.attention_rollout({0: _uniform(5), 1: _uniform(5)}),
      np.full((1, 2, 2), 0.15), atol=1e-7)


def test_rollout_discards_the_smallest_weights():
  maps = _uniform(5, heads=1)
  maps[0, 0, 0] = [0.2, 0.5, 0.1, 0.15, 0.05]
  # 3 of the 25 weights (0.125 * 25, floored) go: 0.05, 0.1 and 0.15, all in
  # row 0, which becomes [.2, .5, 0, 0, 0] + identity, / 1.7.
  np.testing.assert_allclose(
      attention_lib.attention_rollout({0: maps}, discard_ratio=0.125),
      [[[0.5 / 1.7, 0.0], [0.0, 0.0]]], atol=1e-7)


def test_rollout_without_a_class_token_averages_the_rows():
  weights = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1],
                      [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.0, 1.0]])
  maps = np.broadcast_to(weights, (1, 2, 4, 4))
  # (W + I) / 2 has rows [.85 .05 .05 .05], [.05 .85 .05 .05],
  # [.125 .125 .625 .125], [0 0 0 1]; the column means:
  np.testing.assert_allclose(
      attention_lib.attention_rollout({0: maps}),
      [[[0.25625, 0.25625], [0.18125, 0.30625]]], atol=1e-7)


def test_registers_pass_attention_on_but_are_left_off_the_map():
  # A class token, 2 registers, a 2x2 grid. Block 0: register 1 attends to
  # patch 0 only; block 1: the class token to register 1 only (other rows
  # attend to themselves). (A + I) / 2 gives register 1's row
  # [0, .5, 0, .5, 0, 0, 0] and the class token's [.5, .5, 0, ...]: rolled
  # out, [.5, .25, 0, .25, 0, 0, 0], patch 0 reached through the register.
  first, second = np.eye(7), np.eye(7)
  first[1] = np.eye(7)[3]
  second[0] = np.eye(7)[1]
  maps = {0: first[None, None], 1: second[None, None]}
  expected = [[[0.25, 0.0], [0.0, 0.0]]]
  np.testing.assert_allclose(
      attention_lib.attention_rollout(maps, num_registers=2), expected,
      atol=1e-7)
  # Given the grid (what predict passes), the registers are what it leaves.
  np.testing.assert_allclose(attention_lib.attention_rollout(
      maps, class_token=True, grid_shape=(2, 2)), expected, atol=1e-7)
  # Each block's own map: the class token's row over the patches only.
  row = np.array([0.1, 0.3, 0.2, 0.05, 0.15, 0.1, 0.1])
  block = np.full((1, 2, 7, 7), 1.0 / 7)
  block[0, :, 0] = row
  np.testing.assert_allclose(attention_lib.class_token_maps(
      {0: block}, num_registers=2)[0], [[[0.05, 0.15], [0.1, 0.1]]],
                             atol=1e-7)
  with pytest.raises(ValueError, match=r'The layout of 7 tokens is '
                     r'ambiguous .*class token False \+ 3 registers \+ '
                     r'grid \(2, 2\), class token True \+ 2 registers'):
    attention_lib.class_token_maps({0: block}, grid_shape=(2, 2))
  with pytest.raises(ValueError, match=r'num_registers must be an integer '
                     r'>= 0 or None, got -1'):
    attention_lib.attention_rollout(maps, num_registers=-1)
  with pytest.raises(ValueError, match=r'token layout of 7 tokens \(class '
                     r'token: True, registers: 3, grid: None'):
    attention_lib.attention_rollout(maps, class_token=True, num_registers=3)


@pytest.mark.parametrize('pool_type', ['cls', 'gap'])
def test_attention_maps_of_a_register_model(pool_type):
  """As predict draws them: the model's layout, registers left out."""
  model, variables, images = _tiny_vit(num_registers=2, pool_type=pool_type)
  maps = attention_lib.attention_maps(model, variables, images)
  class_token, grid = attention_lib.token_layout(model, images.shape[1:])
  prefix = 3 if pool_type == 'cls' else 2
  assert (class_token, grid) == (pool_type == 'cls', (2, 2))
  assert maps[1].shape == (2, 2, prefix + 4, prefix + 4)
  per_block = attention_lib.class_token_maps(maps, class_token=class_token,
                                             grid_shape=grid)
  heads = maps[1].mean(axis=1)  # [B, N, N]
  if class_token:
    want = heads[:, 0, prefix:]
  else:  # the patch tokens' rows
    want = heads[:, prefix:, prefix:].mean(axis=1)
  np.testing.assert_allclose(per_block[1], want.reshape(2, 2, 2), atol=1e-6)
  rollout = attention_lib.attention_rollout(maps, class_token=class_token,
                                            grid_shape=grid)
  assert rollout.shape == (2, 2, 2)
  np.testing.assert_allclose(rollout, attention_lib.attention_rollout(
      maps, class_token=class_token, num_registers=2), atol=1e-7)


def test_rollout_rejects_bad_settings():
  with pytest.raises(ValueError, match=r"head_fusion 'median'.*'mean'"):
    attention_lib.attention_rollout({0: _uniform(5)}, head_fusion='median')
  with pytest.raises(ValueError, match=r'discard_ratio must lie in \[0, 1\)'):
    attention_lib.attention_rollout({0: _uniform(5)}, discard_ratio=1.0)
  with pytest.raises(ValueError, match='token layout of 7 tokens'):
    attention_lib.attention_rollout({0: _uniform(7)})
  with pytest.raises(ValueError, match='of one shape'):
    attention_lib.attention_rollout({0: _uniform(5), 1: _uniform(10)})


# ----------------------------------------------------------------------------
# Predicting with a trained run.


@pytest.fixture(scope='module')
def trained(tmp_path_factory, data_dir):
  """A tiny digits run, and a folder of its test images as PNG files."""
  from vit_jax.data import digits  # pylint: disable=g-import-not-at-top
  root = tmp_path_factory.mktemp('predict')
  workdir = str(root / 'run')
  # Plain SGD (no optimizer state: the checkpoint saves fastest).
  config = tiny_config(data_dir, eval_every_steps=None, total_steps=4,
                       log_every_steps=4, lr=0.3, optimizer=dict(
                           name='sgd', momentum=0.0), **{
                               'checkpoint.every_steps': 4,
                               'checkpoint.async_save': False,
                               'schedule.warmup_steps': 1})
  train.train_and_evaluate(config, workdir)
  images, labels = digits._load_images_and_labels()  # pylint: disable=protected-access
  rows = digits.split_rows()['test'][:6]
  folder = root / 'images'
  (folder / 'more').mkdir(parents=True)
  files = []
  for i, row in enumerate(rows):
    name = f'digit_{i}_label_{labels[row]}.png'
    path = folder / ('more' if i >= 4 else '') / name
    reconstruction.write_png(str(path), images[row])
    files.append(str(path))
  # The model's own predictions on the same pixels, from the checkpoint.
  variables = checkpoint.restore_variables(os.path.join(workdir,
                                                        'checkpoints'))
  model = build.build_model(config.model)
  pixels = images[rows].astype(np.float32) / 255.0
  logits, _ = jax.jit(model.apply)(variables, -1.0 * (1.0 - pixels) + pixels)
  probs = np.asarray(jax.nn.softmax(logits))
  expected = {path: probs[i] for i, path in enumerate(files)}
  return types.SimpleNamespace(workdir=workdir, folder=str(folder),
                               files=files, expected=expected)


FLAGS = dict(workdir=None, config=None, pretrained=None, top_k=5, csv=None,
             attention_plot=False, plot_dir=None, plot_images=8,
             checkpoint_step=None, batch_size=64, output_dir=None)


def _main(capsys, argv, **values):
  """predict.main with these flag values: (exit status, stdout, stderr)."""
  holders = {name: types.SimpleNamespace(value=value)
             for name, value in {**FLAGS, **values}.items()}
  code = 0
  try:
    predict.main(['predict'] + argv, holders)
  except SystemExit as exit_info:
    code = exit_info.code
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_predict_a_workdir_on_a_folder(trained, tmp_path, capsys):
  """Batch mode: CSV rows, the model's own top-1, class names '0'..'9',
  the attention plot."""
  csv_path = str(tmp_path / 'out.csv')
  code, out, err = _main(capsys, [trained.folder], workdir=trained.workdir,
                         csv=csv_path, top_k=3, attention_plot=True,
                         plot_images=4)
  assert code == 0, err
  assert f'6 images, top-3 predictions of {trained.workdir} at step 4 ' \
      f'written to {csv_path}' in out
  with open(csv_path) as f:
    rows = list(csv.reader(f))
  assert rows[0] == ['path', 'top1', 'top1_prob', 'top2', 'top2_prob', 'top3',
                     'top3_prob']
  # Sorted, recursively: 'more/' comes before the folder's own files.
  assert [row[0] for row in rows[1:]] == sorted(trained.files)
  for row in rows[1:]:
    probs = trained.expected[row[0]]
    assert row[1] == str(int(np.argmax(probs)))  # the model's own top-1
    names, shown = row[1::2], [float(p) for p in row[2::2]]
    np.testing.assert_allclose(shown, np.sort(probs)[::-1][:3], atol=1e-5)
    np.testing.assert_allclose(shown, probs[[int(n) for n in names]],
                               atol=1e-5)
  plot = os.path.join(trained.workdir, 'plots', 'attention_4.png')
  assert f'Attention maps of 4 image(s) written to {plot}' in out
  with Image.open(plot) as image:
    image.load()  # decodes
    # 4 rows, 4 columns (image, rollout, blocks 0 and 1) of 1.8 in at 100
    # dpi, and room for the row titles.
    assert image.size == (720, 760)


def test_predict_single_files_prints_top_k(trained, tmp_path):
  predictor = predict.from_workdir(trained.workdir)
  assert predictor.class_names == [str(d) for d in range(10)]
  out = io.StringIO()
  path = trained.files[0]
  result = predict.run(predictor, [path], top_k=2, out=out)
  probs = trained.expected[path]
  best = np.argsort(-probs, kind='stable')[:2]
  assert out.getvalue().splitlines() == [
      path, f'  1. {best[0]}  {probs[best[0]]:.4f}',
      f'  2. {best[1]}  {probs[best[1]]:.4f}']
  assert result['csv'] is None and result['plot'] is None


def test_predict_names_bad_inputs(trained, tmp_path):
  predictor = predict.from_workdir(trained.workdir)
  missing = str(tmp_path / 'nope.png')
  with pytest.raises(FileNotFoundError, match=re.escape(
      f'No such file or folder: {missing}')):
    predict.run(predictor, [trained.files[0], missing])
  broken = tmp_path / 'broken.png'
  broken.write_bytes(b'\x89PNG\r\n\x1a\nnot really')
  with pytest.raises(ValueError, match=r'Not a readable image file .*: ' +
                     re.escape(str(broken))):
    predict.run(predictor, [str(broken)])
  empty = tmp_path / 'empty'
  empty.mkdir()
  with pytest.raises(ValueError, match=r'No image files .* in folder ' +
                     re.escape(str(empty))):
    predict.run(predictor, [str(empty)])
  with pytest.raises(ValueError, match=r'top_k=11 must lie in 1\.\.10'):
    predict.run(predictor, [trained.files[0]], top_k=11)
  # A damaged middle passes the header check and fails to decode: named.
  damaged = tmp_path / 'damaged.png'
  data = bytearray(open(trained.files[0], 'rb').read())
  data[40:50] = b'\x00' * 10
  damaged.write_bytes(bytes(data))
  with pytest.raises(ValueError, match=re.escape(
      f'Cannot decode image file {damaged}')):
    predict.run(predictor, [str(damaged)])
  # An RGB image of another size does not fit the 8x8 grey model.
  large = tmp_path / 'large.png'
  Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(large)
  with pytest.raises(ValueError, match=r'large.png is \[12, 12, 1\] after '
                     r'preprocessing, which the model'):
    predict.run(predictor, [str(large)])


def test_a_quiet_restore_keeps_orbax_warnings_off(trained, caplog):
  """What predict's console shows: the restore's variables, no orbax
  warning lines (there are some without quiet), absl's verbosity back."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  directory = os.path.join(trained.workdir, 'checkpoints')
  verbosity = absl_logging.get_verbosity()
  absl_logging.set_verbosity(absl_logging.WARNING)
  try:
    with caplog.at_level(logging.WARNING):
      quiet = checkpoint.restore_variables(directory, quiet=True)
      assert not [r for r in caplog.records if r.levelno < logging.ERROR]
      assert absl_logging.get_verbosity() == absl_logging.WARNING
      loud = checkpoint.restore_variables(directory)
      assert any('read_only=True' in r.getMessage() for r in caplog.records)
  finally:
    absl_logging.set_verbosity(verbosity)
  jax.tree.map(np.testing.assert_array_equal, quiet, loud)


def test_command_line_errors(trained, capsys):
  code, _, err = _main(capsys, [trained.files[0]])
  assert code == 2 and 'exactly one of --workdir and --pretrained' in err
  code, _, err = _main(capsys, [], workdir=trained.workdir)
  assert code == 2 and 'at least one IMAGE_OR_FOLDER' in err
  code, _, err = _main(capsys, ['/no/such.png'], workdir=trained.workdir)
  assert code == 1 and err.strip() == (
      'vit_jax.predict: No such file or folder: /no/such.png')
  code, _, err = _main(capsys, [trained.files[0]], workdir=trained.workdir,
                       output_dir='masks')
  assert code == 1 and '--output_dir goes with segmentation runs' in err
  code, _, err = _main(capsys, [trained.files[0]], workdir=trained.workdir,
                       checkpoint_step=3)
  assert code == 1 and 'No checkpoint at step 3' in err and '[4]' in err
  # The program itself: its flags, and one line for a bad command line.
  result = subprocess.run(
      [sys.executable, '-m', 'vit_jax.predict', f'--workdir={trained.workdir}',
       '--pretrained=timm/x', '--top_k=3', trained.files[0]], cwd=ROOT,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'}, capture_output=True,
      text=True, timeout=1800, check=False)
  assert result.returncode == 2, result.stderr
  assert result.stderr.strip().splitlines() == [
      'vit_jax.predict: bad command line: give exactly one of --workdir and '
      '--pretrained (usage: python -m vit_jax.predict --workdir=DIR | '
      '--pretrained=NAME IMAGE_OR_FOLDER... [--top_k=5] [--csv=PATH] '
      '[--attention_plot] [--output_dir=DIR (segmentation runs)])']


def test_pretrained_preprocessing_spec():
  spec = predict.pretrained_spec(224, 0.875, 'bicubic', (0.5, 0.5, 0.5),
                                 (0.5, 0.5, 0.5))
  # timm's transform exactly: PIL's resampling, torchvision's sizes and
  # centre (tests/test_preprocess_timm.py compares the pixels).
  assert spec == ("resize_small(256, 'bicubic', timm=True)|"
                  'central_crop((224, 224), timm=True)|'
                  'value_range(0, 1)|normalize([0.5, 0.5, 0.5], '
                  '[0.5, 0.5, 0.5])')
  with pytest.raises(ValueError, match="interpolation 'cubic'.*'bicubic'"):
    predict.pretrained_spec(224, 0.9, 'cubic', 0.5, 0.5)
  names = labels_lib.imagenet_class_names()
  ids = labels_lib.imagenet_wordnet_ids()
  assert len(names) == len(ids) == 1000
  # Both in ImageNet-1k's label order.
  assert (ids[0], names[0]) == ('n01440764', 'tench')
  assert (ids[1], names[1]) == ('n01443537', 'goldfish')
  assert (ids[999], names[999]) == ('n15075141', 'toilet tissue')
  # timm's checkpoints name their classes by WordNet id.
  assert labels_lib.readable_imagenet_names(['n01443537', 'n01440764']) == [
      'goldfish', 'tench']
  assert labels_lib.readable_imagenet_names(['cat', 'n01440764']) == [
      'cat', 'n01440764']


def _golden_vit_hub_directory(path, channels=3, labels=None):
  """The golden ViT of make_golden.py in timm's Hub layout at `path`, with
  crop_pct 1 on 32 px images (only the normalisation changes pixels); a
  one-channel copy sums the patch embedding's input channels."""
  import golden_cases  # pylint: disable=g-import-not-at-top
  from safetensors import numpy as safetensors_numpy  # pylint: disable=g-import-not-at-top
  state_dict, _ = golden_cases.load('vit_cls')
  if channels != 3:
    kernel = state_dict['patch_embed.proj.weight']  # [64, 3, 8, 8]
    state_dict = dict(state_dict, **{
        'patch_embed.proj.weight': kernel.sum(axis=1, keepdims=True)})
  path.mkdir()
  config = {
      'architecture': 'vit_tiny_patch16_224', 'num_classes': 10,
      'model_args': dict(img_size=32, patch_size=8, embed_dim=64, depth=2,
                         num_heads=2, mlp_ratio=2.0, num_classes=10,
                         in_chans=channels, global_pool='token'),
      'pretrained_cfg': {'input_size': [channels, 32, 32], 'crop_pct': 1.0,
                         'interpolation': 'bilinear',
                         'mean': [0.5] * channels, 'std': [0.25] * channels,
                         'num_classes': 10}}
  if labels:
    config['label_names'] = labels
  (path / 'config.json').write_text(json.dumps(config))
  safetensors_numpy.save_file(state_dict, str(path / 'model.safetensors'))
  return str(path)


def test_predict_with_pretrained_weights_from_a_hub_directory(tmp_path):
  """--pretrained through a local directory in timm's Hub layout: its
  label names and its preprocessing."""
  labels = [f'class {i}' for i in range(10)]
  checkpoint_dir = _golden_vit_hub_directory(tmp_path / 'vit_tiny',
                                             labels=labels)
  pixels = np.random.RandomState(0).randint(0, 256, (3, 32, 32, 3),
                                            dtype=np.uint8)
  files = []
  for i, image in enumerate(pixels):
    files.append(str(tmp_path / f'image_{i}.png'))
    Image.fromarray(image).save(files[-1])

  predictor = predict.from_pretrained(checkpoint_dir)
  assert predictor.class_names == labels
  assert predictor.plot_name == 'vit_tiny'
  result = predict.run(predictor, files, top_k=2, out=io.StringIO())
  logits, _ = jax.jit(predictor.model.apply)(predictor.variables,
                                             (pixels / 255.0 - 0.5) / 0.25)
  probs = np.asarray(jax.nn.softmax(logits))
  for prediction, row in zip(result['predictions'], probs):
    assert prediction.class_ids[0] == int(np.argmax(row))
    assert prediction.top[0][0] == labels[int(np.argmax(row))]
    np.testing.assert_allclose(prediction.top[0][1], row.max(), atol=1e-5)
  with pytest.raises(ValueError, match='needs --plot_dir'):
    predict.run(predictor, files, attention_plot=True)


def test_predict_pretrained_grey_model_decodes_to_its_channels(tmp_path):
  """--pretrained with a one-channel model (e.g. a digits run exported in
  timm's layout): images are decoded to the model's channel count, colour
  files included, and predicted as the model itself would."""
  checkpoint_dir = _golden_vit_hub_directory(tmp_path / 'vit_grey', 1)
  rng = np.random.RandomState(1)
  grey = rng.randint(0, 256, (2, 32, 32), dtype=np.uint8)
  files = [str(tmp_path / 'grey.png'), str(tmp_path / 'colour.png')]
  Image.fromarray(grey[0]).save(files[0])  # mode L
  Image.fromarray(np.repeat(grey[1][..., None], 3, -1)).save(files[1])  # RGB

  predictor = predict.from_pretrained(checkpoint_dir)
  result = predict.run(predictor, files, top_k=1, out=io.StringIO())
  logits, _ = jax.jit(predictor.model.apply)(
      predictor.variables, (grey[..., None] / 255.0 - 0.5) / 0.25)
  probs = np.asarray(jax.nn.softmax(logits))
  for prediction, row in zip(result['predictions'], probs):
    assert prediction.class_ids[0] == int(np.argmax(row))
    np.testing.assert_allclose(prediction.top[0][1], row.max(), atol=1e-5)


def test_predict_an_export_as_its_run(trained, tmp_path):
  """A run exported in timm's layout predicts as the run itself: the
  export carries the run's preprocessing (no resize of the 8x8 digits:
  crop_pct 1, the value range as mean / std) and its class names."""
  from vit_jax import export  # pylint: disable=g-import-not-at-top
  exported = str(tmp_path / 'digits_timm')
  export.export_run(trained.workdir, 'timm', exported)
  from_export = predict.from_pretrained(exported)
  from_run = predict.from_workdir(trained.workdir)
  assert from_export.class_names == from_run.class_names
  by_export = predict.run(from_export, trained.files, top_k=10,
                          out=io.StringIO())['predictions']
  by_run = predict.run(from_run, trained.files, top_k=10,
                       out=io.StringIO())['predictions']
  for ours, theirs in zip(by_export, by_run):
    assert ours.path == theirs.path
    assert ours.class_ids[0] == theirs.class_ids[0]
    # Every class's probability (top 10 of 10), by name.
    mine, its = dict(ours.top), dict(theirs.top)
    assert sorted(mine) == sorted(its) == from_run.class_names
    np.testing.assert_allclose([mine[name] for name in sorted(mine)],
                               [its[name] for name in sorted(mine)],
                               atol=1e-6)
    np.testing.assert_allclose(
        [mine[str(digit)] for digit in range(10)],
        trained.expected[ours.path], atol=1e-5)


# ----------------------------------------------------------------------------
# Segmentation masks.


def _segmenter(**settings):
  """Files whose red value is 100 x the class; pp_eval keeps every other
  row and column; logits -(x - k)^2 pick the nearest class."""
  def segment(variables, images):
    del variables
    return -(images[..., :1] - jax.numpy.arange(3.0)) ** 2

  return predict.Segmenter(**{**dict(
      segment=segment, variables={}, decode=predict._decoder(3),  # pylint: disable=protected-access
      preprocess=lambda image: np.asarray(image, np.float32)[::2, ::2, :1]
      / 100, num_classes=3, mode='whole', crop_size=None, stride=None,
      description='a fake run'), **settings})


@pytest.mark.parametrize('settings', [
    {}, dict(mode='slide', crop_size=(2, 4), stride=(1, 3))])
def test_segmentation_masks_at_the_files_size(settings, tmp_path):
  # 6 x 16: class 1 left, 2 right. After pp_eval 3 x 8; back at 16
  # columns, column 7 takes .75 of column 3 (class 1), column 8 .75 of
  # column 4 (class 2): the boundary stays where it was.
  pixels = np.full((6, 16, 3), 100, np.uint8)
  pixels[:, 8:] = 200
  folder = tmp_path / 'in'
  (folder / 'sub').mkdir(parents=True)
  reconstruction.write_png(str(folder / 'sub' / 'a.png'), pixels)
  reconstruction.write_png(str(tmp_path / 'b.png'), pixels[:, ::-1])
  out = str(tmp_path / 'out')
  inputs = [str(folder), str(tmp_path / 'b.png')]
  result = predict.run_segmentation(_segmenter(**settings), inputs, out,
                                    batch_size=3, out=io.StringIO())
  expected = np.repeat([[1] * 8 + [2] * 8], 6, axis=0)
  assert [os.path.relpath(p, out) for pair in result['outputs']
          for p in pair] == ['sub/a_mask.png', 'sub/a_overlay.png',
                             'b_mask.png', 'b_overlay.png']
  np.testing.assert_array_equal(
      np.asarray(Image.open(os.path.join(out, 'sub', 'a_mask.png'))),
      expected)
  np.testing.assert_array_equal(
      np.asarray(Image.open(os.path.join(out, 'b_mask.png'))),
      expected[:, ::-1])
  overlay = np.asarray(Image.open(os.path.join(out, 'sub', 'a_overlay.png')))
  # Half the grey 100 and half class 1's colour (0, 128, 0).
  assert overlay.shape == (6, 16, 3)
  np.testing.assert_array_equal(overlay[0, 0], [50, 114, 50])
  np.testing.assert_array_equal(overlay[0, 15], [100 + 64, 100 + 64, 100])


def test_segmentation_outputs_need_a_folder_and_unique_names(tmp_path):
  pixels = np.zeros((4, 4, 3), np.uint8)
  for folder in ('x', 'y'):
    (tmp_path / folder).mkdir()
    reconstruction.write_png(str(tmp_path / folder / 'same.png'), pixels)
  files = [str(tmp_path / 'x' / 'same.png'), str(tmp_path / 'y' / 'same.png')]
  with pytest.raises(ValueError, match='both write same_mask.png'):
    predict.run_segmentation(_segmenter(), files, str(tmp_path / 'out'))
  with pytest.raises(ValueError, match='give --output_dir'):
    predict.run_segmentation(_segmenter(), files[:1], None)
  with pytest.raises(ValueError, match='1..256 classes'):
    predict.write_mask(str(tmp_path / 'm.png'), str(tmp_path / 'o.png'),
                       pixels, np.zeros((4, 4)), 300)


def test_a_segformers_masks_are_its_upsampled_argmax(tmp_path):
  from vit_jax.models import segformer  # pylint: disable=import-outside-toplevel
  model = segformer.SegFormer(widths=(8, 16, 16, 24), depths=(1, 1, 1, 1),
                              num_heads=(1, 2, 2, 3), decoder_width=16,
                              num_classes=4)
  pixels = np.random.default_rng(0).integers(0, 256, (20, 28, 3), np.uint8)
  reconstruction.write_png(str(tmp_path / 'a.png'), pixels)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                  np.zeros((1, 20, 28, 3), np.float32))
  segmenter = predict.segmenter_of('segformer', model, variables,
                                   'value_range(-1, 1)', 4)
  result = predict.run_segmentation(segmenter, [str(tmp_path / 'a.png')],
                                    str(tmp_path / 'out'), out=io.StringIO())
  expected = np.asarray(jax.jit(lambda v, x: segformer.upsample_logits(
      model.apply(v, x, train=False)[0], (20, 28)))(
          variables, (pixels[None] / 127.5 - 1).astype(np.float32)))[0]
  np.testing.assert_array_equal(result['masks'][0], expected.argmax(-1))
  np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / 'out' / 'a_mask.png')),
      expected.argmax(-1))


def test_a_segmentation_workdir_writes_masks_as_its_evaluator(tmp_path,
                                                              capsys):
  """The command line on a workdir (config.json and a checkpoint written
  here): its 'slide' evaluator's windows, masks at each file's size."""
  from vit_jax import config as config_lib  # pylint: disable=import-outside-toplevel
  from vit_jax import layout  # pylint: disable=import-outside-toplevel
  from vit_jax import workdir as workdir_lib  # pylint: disable=import-outside-toplevel
  from vit_jax.evaluate import segmentation  # pylint: disable=import-outside-toplevel
  workdir = str(tmp_path / 'run')
  config = tiny_config(str(tmp_path / 'tfds'), objective='segmentation',
                       loss='softmax_xent', label_smoothing=0.0,
                       eval_every_steps=None)
  config.data.pp_eval = 'value_range(-1, 1)'
  config.model = dict(name='segformer', widths=(8, 16, 16, 24),
                      depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 3),
                      decoder_width=16, num_classes=4)
  config.evals = dict(seg=dict(kind='segmentation', mode='slide',
                               crop_size=16, stride=8, batch_size=2))
  config = config_lib.resolve(config)
  model = build.build_model(config.model)
  variables = jax.jit(model.init)(jax.random.PRNGKey(0),
                                  np.zeros((1, 16, 16, 3), np.float32))
  os.makedirs(workdir)
  workdir_lib.write_config(workdir, config)
  saver = checkpoint.TrainCheckpointer(layout.checkpoint_dir(workdir),
                                       async_save=False)
  saver.save(2, dict(variables), {})
  saver.close()
  pixels = np.random.default_rng(1).integers(0, 256, (20, 27, 3), np.uint8)
  reconstruction.write_png(str(tmp_path / 'a.png'), pixels)
  code, out, err = _main(capsys, [str(tmp_path / 'a.png')], workdir=workdir,
                         output_dir=str(tmp_path / 'masks'))
  assert code == 0, err
  assert 'at step 2' in out
  segment = jax.jit(lambda v, x: build.dense_logits(
      'segformer', model.apply(v, x, train=False)[0], x.shape[1:3]))
  expected = segmentation.segmentation_masks(
      lambda x: segment(variables, x),
      [(pixels / 127.5 - 1).astype(np.float32)], [(20, 27)], 'slide',
      16, 8, rows=2)[0]
  np.testing.assert_array_equal(
      np.asarray(Image.open(tmp_path / 'masks' / 'a_mask.png')), expected)
  code, _, err = _main(capsys, [str(tmp_path / 'a.png')], workdir=workdir)
  assert code == 1 and 'give --output_dir' in err
