"""MAE: against Hugging Face's ViTMAEForPreTraining (golden file from
make_golden_mae.py), the ViT-loadable encoder, masking, loss and helpers."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden_cases
from vit_jax import weights
from vit_jax.models import common
from vit_jax.models import get_model
from vit_jax.models import mae
from vit_jax.models import vit
from vit_jax.models.__main__ import zoo_rows

TOL = 1e-4  # float32, against transformers on the CPU.

# The golden model of make_golden_mae.py, as MAE kwargs.
GOLDEN_KWARGS = dict(patch_size=8, width=48, depth=2, mlp_dim=96, num_heads=2,
                     decoder_width=32, decoder_depth=2, decoder_num_heads=4,
                     decoder_mlp_dim=64)


def _load_golden():
  path = os.path.join(golden_cases.GOLDEN_DIR, 'mae_hf.npz')
  with np.load(path) as archive:
    state_dict = {k[len('hf/'):]: archive[k] for k in archive.files
                  if k.startswith('hf/')}
    outputs = {k[len('out/'):]: archive[k] for k in archive.files
               if k.startswith('out/')}
  return state_dict, outputs


@pytest.fixture(scope='module')
def golden():
  state_dict, outputs = _load_golden()
  params = weights.from_hf(state_dict, 'mae', **GOLDEN_KWARGS)['params']
  return state_dict, outputs, jax.tree.map(jnp.asarray, params)


_RUNS = {}


def _golden_run(golden, norm_pix_loss):
  """(loss, aux) of the golden MAE on the golden images and noise, once."""
  if norm_pix_loss not in _RUNS:
    _, outputs, params = golden
    model = mae.MAE(**GOLDEN_KWARGS, norm_pix_loss=norm_pix_loss)
    apply = jax.jit(lambda p, x, n: model.apply({'params': p}, x, train=True,
                                                noise=n))
    _RUNS[norm_pix_loss] = apply(params, jnp.asarray(outputs['images']),
                                 jnp.asarray(outputs['noise']))
  return _RUNS[norm_pix_loss]


# -- Against Hugging Face. --

@pytest.mark.parametrize('norm_pix_loss', [False, True])
def test_matches_hf(golden, norm_pix_loss):
  _, outputs, _ = golden
  loss, aux = _golden_run(golden, norm_pix_loss)
  suffix = '_normpix' if norm_pix_loss else ''
  assert np.abs(outputs[f'pred{suffix}']).max() > 0.5  # not trivial
  np.testing.assert_array_equal(aux['mask'], outputs[f'mask{suffix}'])
  np.testing.assert_allclose(aux['pred'], outputs[f'pred{suffix}'], atol=TOL,
                             rtol=0)
  np.testing.assert_allclose(loss, outputs[f'loss{suffix}'], atol=TOL, rtol=0)


def test_matches_hf_scanned(golden):
  _, outputs, params = golden
  model = mae.MAE(**GOLDEN_KWARGS, scan=True)
  apply = jax.jit(lambda p, x, n: model.apply({'params': p}, x, noise=n))
  loss, aux = apply(common.stack_blocks(params),
                    jnp.asarray(outputs['images']),
                    jnp.asarray(outputs['noise']))
  np.testing.assert_allclose(aux['pred'], outputs['pred'], atol=TOL, rtol=0)
  np.testing.assert_allclose(loss, outputs['loss'], atol=TOL, rtol=0)


def test_from_hf_reads_saved_and_hub_names(golden):
  """`save_pretrained` writes transformers' older names back (the pairs
  recorded by make_golden_hf_vit.py), the decoder's blocks as
  'decoder.decoder_encoder.layer.N'; the checkpoints on the Hub (written
  by transformers 4) say 'decoder.decoder_layers.N'."""
  state_dict, _, params = golden
  path = os.path.join(golden_cases.GOLDEN_DIR, 'vit_hf.npz')
  with np.load(path) as archive:
    saved_names = dict(zip(archive['mae_names/module'].astype(str),
                           archive['mae_names/hub'].astype(str)))
  saved = {saved_names[name]: value for name, value in state_dict.items()}
  assert 'decoder.decoder_encoder.layer.1.intermediate.dense.weight' in saved
  hub = {name.replace('decoder.decoder_encoder.layer.',
                      'decoder.decoder_layers.'): value
         for name, value in saved.items()}
  assert 'vit.encoder.layer.1.attention.attention.query.weight' in hub
  for layout in (saved, hub):
    loaded = weights.from_hf(layout, 'mae', **GOLDEN_KWARGS)['params']
    for got, expected in zip(jax.tree.leaves(loaded),
                             jax.tree.leaves(params), strict=True):
      np.testing.assert_array_equal(got, expected)


def test_position_embeddings_match_hf(golden):
  state_dict, _, _ = golden
  grid = (4, 4)
  np.testing.assert_allclose(
      mae.sincos_posemb(grid, GOLDEN_KWARGS['width']),
      state_dict['vit.embeddings.position_embeddings'][0], atol=1e-6, rtol=0)
  np.testing.assert_allclose(
      mae.sincos_posemb(grid, GOLDEN_KWARGS['decoder_width']),
      state_dict['decoder.decoder_pos_embed'][0], atol=1e-6, rtol=0)


# -- The encoder is a ViT. --

def test_encoder_params_have_vit_names_and_shapes():
  for scan in (False, True):
    model = mae.MAE.from_variant('S/16', decoder_depth=1, scan=scan)
    images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
    mae_shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
    vit_shapes = jax.eval_shape(
        get_model('vit', 'S/16', pool_type='cls', posemb='sincos2d',
                  num_classes=0, scan=scan).init,
        jax.random.PRNGKey(0), images)
    assert mae.encoder_as_vit(model) == get_model(
        'vit', 'S/16', pool_type='cls', posemb='sincos2d', num_classes=0,
        scan=scan)
    shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)  # noqa: E731
    assert (shapes(mae.encoder_params(mae_shapes['params'])) ==
            shapes(vit_shapes['params']))


def test_vit_with_encoder_params_gives_encoder_representation(golden):
  _, outputs, params = golden
  images = jnp.asarray(outputs['images'])
  model = mae.MAE(**GOLDEN_KWARGS, mask_ratio=0.0)
  classifier = mae.encoder_as_vit(model)
  features, vit_aux = jax.jit(classifier.apply)(
      {'params': mae.encoder_params(params)}, images)  # [B, D]
  encode = jax.jit(lambda p, x, n: model.apply({'params': p}, x, noise=n,
                                               method=mae.MAE.encode))
  num_patches = outputs['noise'].shape[1]
  # Increasing noise keeps the patches in image order.
  in_order = jnp.broadcast_to(jnp.arange(num_patches, dtype=jnp.float32),
                              outputs['noise'].shape)
  latent, mask, _ = encode(params, images, in_order)
  assert not np.asarray(mask).any()
  np.testing.assert_allclose(latent, vit_aux['encoded'], atol=1e-5, rtol=0)
  # Any order: the class token does not see the patches' order.
  latent, _, _ = encode(params, images, jnp.asarray(outputs['noise']))
  np.testing.assert_allclose(latent[:, 0], features, atol=1e-5, rtol=0)


def test_encoder_skips_removed_patches_flops():
  """At mask ratio 0.75 the encoder costs at most 30% of the full ViT."""
  size = dict(patch_size=16, width=384, depth=4, mlp_dim=1536, num_heads=6)
  images = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
  noise = jax.ShapeDtypeStruct((1, 196), jnp.float32)

  model = mae.MAE(**size, decoder_depth=1)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)
  encode = jax.jit(lambda v, x, n: model.apply(v, x, noise=n,
                                               method=mae.MAE.encode))
  encoder_flops = encode.lower(variables, images, noise).cost_analysis()[
      'flops']

  classifier = vit.ViT(**size, pool_type='cls', posemb='sincos2d',
                       num_classes=0)
  variables = jax.eval_shape(classifier.init, jax.random.PRNGKey(0), images)
  forward = jax.jit(lambda v, x: classifier.apply(v, x))
  vit_flops = forward.lower(variables, images).cost_analysis()['flops']
  ratio = encoder_flops / vit_flops
  print(f'MAE encoder / ViT forward FLOPs: {ratio:.3f}')
  assert 0.2 < ratio <= 0.30, ratio


# -- Masking. --

def test_random_masking_keeps_smallest_noise():
  noise = jax.random.uniform(jax.random.PRNGKey(0), (5, 49))
  len_keep = mae.num_visible(49, 0.75)
  assert len_keep == 12
  ids_keep, ids_restore, mask = mae.random_masking(noise, len_keep)
  noise, ids_keep, ids_restore, mask = map(
      np.asarray, (noise, ids_keep, ids_restore, mask))
  np.testing.assert_array_equal((1 - mask).sum(axis=1), len_keep)
  for sample in range(5):
    smallest = np.argsort(noise[sample])[:len_keep]
    np.testing.assert_array_equal(ids_keep[sample], smallest)
    np.testing.assert_array_equal(np.flatnonzero(mask[sample] == 0),
                                  np.sort(smallest))
    threshold = np.sort(noise[sample])[len_keep - 1]
    np.testing.assert_array_equal(mask[sample], noise[sample] > threshold)
    shuffled = np.argsort(noise[sample])
    np.testing.assert_array_equal(shuffled[ids_restore[sample]],
                                  np.arange(49))


def test_mask_rng_and_noise(golden):
  _, _, params = golden
  model = mae.MAE(**GOLDEN_KWARGS)
  variables = {'params': params}
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))
  apply = jax.jit(lambda key: model.apply(variables, images, train=True,
                                          rngs={'mask': key})[1]['mask'])
  mask_a = np.asarray(apply(jax.random.PRNGKey(2)))
  mask_b = np.asarray(apply(jax.random.PRNGKey(3)))
  np.testing.assert_array_equal(mask_a.sum(axis=1), 16 - 4)
  assert not np.array_equal(mask_a, mask_b)
  assert not np.array_equal(mask_a[0], mask_a[1])  # per-sample masks
  np.testing.assert_array_equal(mask_a, apply(jax.random.PRNGKey(2)))
  # Evaluation without an rng: the same fixed masks on every call.
  evaluate = jax.jit(lambda x: model.apply(variables, x)[1]['mask'])
  np.testing.assert_array_equal(evaluate(images), evaluate(images + 1.0))
  # Training without an rng or noise is an error.
  with pytest.raises(ValueError, match="rngs=\\{'mask'"):
    model.apply(variables, images, train=True)


# -- Loss. --

def _numpy_loss(pred, target, mask, norm_pix_loss):
  pred, target, mask = (np.asarray(a, np.float64) for a in (pred, target,
                                                            mask))
  if norm_pix_loss:
    mean = target.mean(-1, keepdims=True)
    var = target.var(-1, keepdims=True, ddof=1)
    target = (target - mean) / np.sqrt(var + 1e-6)
  removed = mask.astype(bool)
  return ((pred - target) ** 2)[removed].mean()


@pytest.mark.parametrize('norm_pix_loss', [False, True])
def test_loss_on_removed_patches_only(golden, norm_pix_loss):
  _, outputs, _ = golden
  images = jnp.asarray(outputs['images'])
  loss, aux = _golden_run(golden, norm_pix_loss)
  target = np.asarray(mae.patchify(images, 8))
  np.testing.assert_allclose(
      loss, _numpy_loss(aux['pred'], target, aux['mask'], norm_pix_loss),
      rtol=1e-5)
  # Any change of the target on visible patches leaves the loss unchanged.
  visible = ~np.asarray(aux['mask'], bool)
  changed = target.copy()
  changed[visible] = 100.0 * np.random.default_rng(0).normal(
      size=changed[visible].shape)
  np.testing.assert_allclose(
      mae.reconstruction_loss(aux['pred'], jnp.asarray(changed), aux['mask'],
                              norm_pix_loss), loss, rtol=1e-6)
  changed[~visible] += np.random.default_rng(1).normal(
      size=changed[~visible].shape)
  assert abs(float(mae.reconstruction_loss(
      aux['pred'], jnp.asarray(changed), aux['mask'], norm_pix_loss)) -
             float(loss)) > 1e-3


def test_zero_loss_when_nothing_removed():
  pred = jnp.ones((2, 4, 12))
  assert float(mae.reconstruction_loss(pred, 0 * pred, jnp.zeros((2, 4)),
                                       False)) == 0.0


def test_bfloat16_runs_with_float32_loss(golden):
  _, outputs, params = golden
  model = mae.MAE(**GOLDEN_KWARGS, dtype=jnp.bfloat16)
  apply = jax.jit(lambda p, x, key: model.apply({'params': p}, x, train=True,
                                                rngs={'mask': key}))
  loss, aux = apply(params, jnp.asarray(outputs['images']),
                    jax.random.PRNGKey(1))
  assert loss.dtype == jnp.float32 and aux['pred'].dtype == jnp.float32
  assert np.isfinite(loss)


# -- Patches and reconstruction images. --

def test_patchify_order_and_roundtrip():
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 24, 40, 3))
  patches = mae.patchify(images, 8)
  assert patches.shape == (2, 3 * 5, 8 * 8 * 3)
  # Patch (row 1, column 2), flattened (row in patch, column, channel).
  np.testing.assert_array_equal(patches[:, 1 * 5 + 2],
                                images[:, 8:16, 16:24].reshape(2, -1))
  np.testing.assert_array_equal(mae.unpatchify(patches, 8, (3, 5)), images)
  square = images[:, :24, :24]
  np.testing.assert_array_equal(
      mae.unpatchify(mae.patchify(square, 8), 8), square)
  with pytest.raises(ValueError, match='not a square grid'):
    mae.unpatchify(patches, 8)


def test_reconstruction_images():
  images = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 16, 3))
  target = mae.patchify(images, 8)  # [2, 4, 192]
  mask = jnp.asarray([[1, 0, 1, 1], [0, 1, 1, 1]], jnp.float32)
  pred = target + 5.0  # wrong everywhere, recognisably
  out = mae.reconstruction_images(images, pred, mask, 8, fill_value=-1.0)
  assert {k: v.shape for k, v in out.items()} == {
      k: (2, 16, 16, 3) for k in ('masked', 'reconstruction', 'pasted')}
  np.testing.assert_allclose(out['reconstruction'], images + 5.0, atol=1e-6)
  # Sample 0: patch 1 (top right) visible, patch 0 (top left) removed.
  np.testing.assert_array_equal(out['masked'][0, :8, 8:], images[0, :8, 8:])
  np.testing.assert_array_equal(out['masked'][0, :8, :8], -1.0)
  np.testing.assert_array_equal(out['pasted'][0, :8, 8:], images[0, :8, 8:])
  np.testing.assert_allclose(out['pasted'][0, :8, :8], images[0, :8, :8] + 5,
                             atol=1e-6)
  # Normalised-pixel predictions of the normalised target come back exact.
  mean = target.mean(-1, keepdims=True)
  std = jnp.sqrt(target.var(-1, keepdims=True, ddof=1) + 1e-6)
  out = mae.reconstruction_images(images, (target - mean) / std, mask, 8,
                                  norm_pix_loss=True)
  np.testing.assert_allclose(out['reconstruction'], images, atol=1e-5)


# -- Bad inputs, registry, zoo. --

@pytest.mark.parametrize('ratio', [1.0, -0.1, 1.5])
def test_bad_mask_ratio(ratio):
  with pytest.raises(ValueError, match=f'mask_ratio {ratio}.*outside'):
    mae.MAE(**GOLDEN_KWARGS, mask_ratio=ratio)


def test_bad_inputs():
  model = mae.MAE(**GOLDEN_KWARGS)
  with pytest.raises(ValueError, match='30x32 is not divisible by the patch '
                     'size 8'):
    model.init(jax.random.PRNGKey(0), jnp.ones((1, 30, 32, 3)))
  with pytest.raises(ValueError, match='Images have 1 channels.*'
                     'num_channels=3'):
    model.init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 1)))
  with pytest.raises(ValueError, match=r'noise has shape \(1, 9\).*\(1, 16\)'):
    model.init(jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)),
               noise=jnp.ones((1, 9)))
  with pytest.raises(ValueError, match='mask_ratio 0.95 leaves no visible '
                     'patch of 16'):
    mae.MAE(**GOLDEN_KWARGS, mask_ratio=0.95).init(
        jax.random.PRNGKey(0), jnp.ones((1, 32, 32, 3)))
  with pytest.raises(ValueError, match="Unknown MAE size 'X'.*valid sizes"):
    get_model('mae', variant='X/16')


def test_get_model_and_zoo_row():
  model = get_model('mae', variant='L/16', norm_pix_loss=True)
  assert isinstance(model, mae.MAE)
  assert (model.width, model.depth, model.patch_size) == (1024, 24, 16)
  assert (model.decoder_width, model.decoder_depth,
          model.decoder_num_heads) == (512, 8, 16)
  (row,) = zoo_rows([('mae', 'Ti/16', {'decoder_depth': 1})], resolution=64)
  assert row.params > 5_000_000 and row.gflops > 0
