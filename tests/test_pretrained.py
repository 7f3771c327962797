"""`vit_jax.pretrained`: timm checkpoints by name, from a local directory in
the Hub layout and from the Hugging Face cache (offline, never the
network), against timm's outputs (the golden files of make_golden*.py);
and `weights.from_hf` against transformers' ViT (make_golden_hf_vit.py)."""

import ast
import json
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

import golden_cases
from vit_jax import models
from vit_jax import pretrained
from vit_jax import weights
from vit_jax.models import swin

TOL = 1e-4  # float32, against timm / transformers on the CPU.

_VIT_ARGS = dict(img_size=32, patch_size=8, embed_dim=64, depth=2,
                 mlp_ratio=2.0, num_classes=10, in_chans=3)

# Golden case -> (a supported timm architecture, the `model_args` timm
# writes for the golden model built from it: make_golden*.py's arguments).
CASES = {
    'vit_cls': ('vit_tiny_patch16_224', dict(
        _VIT_ARGS, num_heads=2, global_pool='token')),
    'vit_gap': ('vit_base_patch16_gap_224', dict(
        _VIT_ARGS, num_heads=4, global_pool='avg', class_token=False,
        fc_norm=False)),
    # timm's default fc_norm (None) with average pooling: after pooling.
    'vit_gap_fcnorm': ('vit_base_patch16_224', dict(
        _VIT_ARGS, num_heads=4, global_pool='avg', class_token=False)),
    'vit_map': ('vit_base_patch16_siglip_224', dict(
        _VIT_ARGS, num_heads=4, global_pool='map', class_token=False)),
    'mixer': ('mixer_b16_224', dict(
        img_size=32, patch_size=8, embed_dim=64, num_blocks=2,
        mlp_ratio=[0.5, 2.0], num_classes=10)),
    'swin': ('swin_tiny_patch4_window7_224', dict(
        img_size=32, patch_size=2, embed_dim=8, depths=[2, 2, 2, 1],
        num_heads=[2, 2, 4, 8], window_size=4, mlp_ratio=4.0,
        num_classes=10, global_pool='avg')),
    'xcit': ('xcit_tiny_12_p8_224', dict(
        img_size=[24, 32], patch_size=8, embed_dim=24, depth=2, num_heads=4,
        mlp_ratio=2.0, cls_attn_layers=2, eta=1.0, tokens_norm=True,
        num_classes=10)),
    'convmixer': ('convmixer_1536_20', dict(
        dim=16, depth=2, kernel_size=5, patch_size=4, num_classes=10)),
}

# The get_model kwargs of each golden model (as the family's own tests
# build it against timm).
GOLDEN_KWARGS = {
    **golden_cases.MODEL_KWARGS,
    'swin': ('swin', dict(patch_size=2, width=8, depths=(2, 2, 2, 1),
                          num_heads=(2, 2, 4, 8), window_size=4,
                          num_classes=10)),
    'xcit': ('xcit', dict(patch_size=8, width=24, depth=2, num_heads=4,
                          mlp_ratio=2.0, layer_scale_init=1.0,
                          tokens_norm=True, num_classes=10)),
    'convmixer': ('convmixer', dict(width=16, depth=2, kernel_size=5,
                                    patch_size=4, num_classes=10)),
}

LABELS = [f'class {i}' for i in range(10)]


def _write_checkpoint(directory, case, **config_changes):
  """A checkpoint directory as timm writes it, from a golden case."""
  architecture, model_args = CASES[case]
  state_dict, outputs = golden_cases.load(case)
  height, width = outputs['images'].shape[1:3]
  config = {
      'architecture': architecture,
      'num_classes': 10,
      'model_args': model_args,
      'pretrained_cfg': {
          'input_size': [3, height, width], 'interpolation': 'bilinear',
          'mean': [0.5, 0.5, 0.5], 'std': [0.5, 0.5, 0.5], 'crop_pct': 0.9,
          'crop_mode': 'center', 'num_classes': 10},
      'label_names': LABELS,
      **config_changes,
  }
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'config.json'), 'w') as f:
    json.dump(config, f)
  safetensors_numpy.save_file(state_dict,
                              os.path.join(directory, 'model.safetensors'))
  return outputs


def _logits(loaded, images):
  """Jitted once per model (on a small CPU one compilation costs less than
  running op by op)."""
  logits, _ = golden_cases.forward(loaded.family, loaded.model_kwargs,
                                   loaded.variables, images)
  return logits


@pytest.mark.parametrize('case', sorted(CASES))
def test_config_gives_the_golden_model(case):
  """timm's architecture and model_args -> the model each family's tests
  prove against timm (tests/test_weights.py, test_swin.py, ...)."""
  architecture, model_args = CASES[case]
  _, outputs = golden_cases.load(case)
  height, width = outputs['images'].shape[1:3]
  family, kwargs, size = pretrained.resolve_config(
      {'architecture': architecture, 'num_classes': 10,
       'model_args': model_args,
       'pretrained_cfg': {'input_size': [3, height, width]}})
  golden_family, golden_kwargs = GOLDEN_KWARGS[case]
  assert family == golden_family
  assert models.get_model(family, **kwargs) == models.get_model(
      family, **golden_kwargs)
  assert size == (height, width)


# End to end for a few (the others' models are those of
# test_config_gives_the_golden_model, read by the same code).
@pytest.mark.parametrize('case', ['vit_cls', 'vit_gap_fcnorm', 'mixer',
                                  'convmixer'])
def test_local_directory_matches_timm(tmp_path, case):
  outputs = _write_checkpoint(tmp_path / case, case)
  loaded = pretrained.load(str(tmp_path / case))
  assert loaded.family == GOLDEN_KWARGS[case][0]
  assert loaded.image_size == outputs['images'].shape[1:3]
  assert loaded.num_classes == 10
  assert loaded.label_names == tuple(LABELS)
  assert loaded.preprocessing == pretrained.Preprocessing(
      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.9,
      interpolation='bilinear', crop_mode='center')
  assert loaded.model == models.get_model(loaded.family,
                                          **loaded.model_kwargs)
  np.testing.assert_allclose(_logits(loaded, outputs['images']),
                             outputs['logits'], atol=TOL, rtol=0)


def test_model_kwargs_of_a_custom_size_and_of_a_variant(tmp_path):
  _write_checkpoint(tmp_path / 'tiny', 'vit_gap_fcnorm')
  loaded = pretrained.load(str(tmp_path / 'tiny'))
  assert loaded.model_kwargs == dict(
      patch_size=8, width=64, depth=2, mlp_dim=128, num_heads=4,
      pool_type='gap', fc_norm=True, num_classes=10)
  # Arguments timm records that leave the architecture as it is: the
  # variant's name is kept.
  kwargs = pretrained.SUPPORTED['vit_base_patch16_224'].model_kwargs
  assert pretrained._translate_model_args(  # pylint: disable=protected-access
      'vit', kwargs, dict(global_pool='token', img_size=384, in_chans=3,
                          embed_dim=768)) == dict(variant='B/16',
                                                  pool_type='cls')


def test_new_head_resolution_and_overrides(tmp_path):
  outputs = _write_checkpoint(tmp_path / 'vit', 'vit_cls')
  loaded = pretrained.load(str(tmp_path / 'vit'), num_classes=3,
                           image_size=48, scan=True)
  assert loaded.num_classes == 3 and loaded.label_names is None
  assert loaded.image_size == (48, 48)
  assert loaded.model_kwargs['scan'] and loaded.model.scan
  params = loaded.variables['params']
  assert params['head']['kernel'].shape == (64, 3)
  assert not params['head']['kernel'].any()
  # Resampled as timm loads a checkpoint at another size (antialiased
  # bicubic; tests/test_vit_variants.py checks it against timm's).
  state_dict, _ = golden_cases.load('vit_cls')
  np.testing.assert_array_equal(params['pos_embed'], weights.from_timm(
      state_dict, 'vit', image_size=48, posemb_interpolation='bicubic',
      **golden_cases.MODEL_KWARGS['vit_cls'][1])['params']['pos_embed'])
  # No head: the logits are timm's pre-logits.
  loaded = pretrained.load(str(tmp_path / 'vit'), num_classes=0)
  np.testing.assert_allclose(_logits(loaded, outputs['images']),
                             outputs['pre_logits'], atol=TOL, rtol=0)


def _hub_cache(cache, repo_name, case, commit='0123456789abcdef' * 2
               + '01234567'):
  """Places a golden checkpoint in huggingface_hub's cache layout:
  models--timm--NAME/{refs/main, snapshots/<commit>/<files>}."""
  repo = cache / f'models--timm--{repo_name}'
  outputs = _write_checkpoint(repo / 'snapshots' / commit, case)
  (repo / 'refs').mkdir()
  (repo / 'refs' / 'main').write_text(commit)
  return outputs, commit


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
  cache = tmp_path / 'hub'
  cache.mkdir()
  monkeypatch.setenv('HF_HUB_CACHE', str(cache))
  monkeypatch.setenv('HF_HUB_OFFLINE', '1')
  return cache


def test_hub_name_from_the_cache_offline(offline_cache):
  outputs, commit = _hub_cache(offline_cache, 'vit_tiny_patch16_224.golden',
                               'vit_cls')
  loaded = pretrained.load('timm/vit_tiny_patch16_224.golden')
  assert loaded.label_names == tuple(LABELS)
  np.testing.assert_allclose(_logits(loaded, outputs['images']),
                             outputs['logits'], atol=TOL, rtol=0)
  # Without 'timm/', at a commit: the same files.
  again = pretrained.load('vit_tiny_patch16_224.golden', revision=commit)
  for got, expected in zip(jax.tree.leaves(again.variables),
                           jax.tree.leaves(loaded.variables), strict=True):
    np.testing.assert_array_equal(got, expected)


def test_quickgelu_names_load_the_plain_clip_repository(offline_cache):
  """timm keeps the weights of `*_clip_quickgelu_*.TAG` in the plain CLIP
  entry point's repository (whose config.json names the plain entry point,
  exact GELU): the name asked for decides the activation."""
  from vit_jax import export  # pylint: disable=g-import-not-at-top
  family, kwargs = golden_cases.VIT_VARIANTS['vit_clip_quickgelu']
  state_dict, outputs = golden_cases.load('vit_clip_quickgelu')
  config = export.export(weights.from_timm(state_dict, family, **kwargs),
                         family, 'timm', **kwargs).config
  assert config['architecture'] == 'vit_base_patch16_clip_224'
  assert config['model_args'].pop('act_layer') == 'quick_gelu'
  commit = 'ab' * 20
  repo = offline_cache / 'models--timm--vit_base_patch16_clip_224.openai'
  (repo / 'snapshots' / commit).mkdir(parents=True)
  (repo / 'snapshots' / commit / 'config.json').write_text(
      json.dumps(config))
  safetensors_numpy.save_file(
      state_dict, str(repo / 'snapshots' / commit / 'model.safetensors'))
  (repo / 'refs').mkdir()
  (repo / 'refs' / 'main').write_text(commit)
  quick = pretrained.load('vit_base_patch16_clip_quickgelu_224.openai')
  assert quick.model_kwargs['activation'] == 'quick_gelu'
  np.testing.assert_allclose(_logits(quick, outputs['images']),
                             outputs['logits'], atol=TOL, rtol=0)
  plain = pretrained.load('vit_base_patch16_clip_224.openai')
  assert plain.model_kwargs.get('activation', 'gelu') == 'gelu'
  assert np.abs(_logits(plain, outputs['images'])
                - outputs['logits']).max() > 100 * TOL


def test_offline_miss_is_a_clear_error(offline_cache, tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r'timm/vit_base_patch16_224\.augreg_in21k: '
                     r'config\.json \(revision main\) is not in the Hugging '
                     r'Face cache .*hub and offline mode is on'):
    pretrained.load('timm/vit_base_patch16_224.augreg_in21k')
  # The same for an explicit cache_dir.
  with pytest.raises(FileNotFoundError, match='other.*offline mode is on'):
    pretrained.load('vit_base_patch16_224.augreg_in21k',
                    cache_dir=str(tmp_path / 'other'))


def test_name_without_a_tag_loads_timms_default_tag(offline_cache):
  """issue 19: 'ARCH' alone looked for a repository 'timm/ARCH'."""
  outputs, _ = _hub_cache(offline_cache,
                          'vit_tiny_patch16_224.augreg_in21k_ft_in1k',
                          'vit_cls')
  for name in ('vit_tiny_patch16_224', 'timm/vit_tiny_patch16_224',
               'hf-hub:timm/vit_tiny_patch16_224'):
    loaded = pretrained.load(name)
    np.testing.assert_allclose(_logits(loaded, outputs['images']),
                               outputs['logits'], atol=TOL, rtol=0)
  # A miss names the repository the default tag gives.
  with pytest.raises(FileNotFoundError, match=r'^timm/vit_base_patch16_224\.'
                     r'augreg2_in21k_ft_in1k: config\.json .*offline mode.*'
                     r"timm's tags of vit_base_patch16_224: \['augreg2_in21k"):
    pretrained.load('vit_base_patch16_224')
  with pytest.raises(ValueError, match=r"'vit_large_patch14_224' names no "
                     r'tag, and timm has no weights of vit_large_patch14_224 '
                     r'on the Hub'):
    pretrained.load('vit_large_patch14_224')


def test_revision_after_an_at_sign(offline_cache):
  outputs, commit = _hub_cache(offline_cache, 'vit_tiny_patch16_224.golden',
                               'vit_cls')
  loaded = pretrained.load(f'timm/vit_tiny_patch16_224.golden@{commit}')
  np.testing.assert_allclose(_logits(loaded, outputs['images']),
                             outputs['logits'], atol=TOL, rtol=0)
  with pytest.raises(FileNotFoundError, match=r'^timm/vit_tiny_patch16_224\.'
                     r'golden: config\.json \(revision v9\) is not in'):
    pretrained.load('vit_tiny_patch16_224.golden@v9')
  assert pretrained.resolve_name('vit_tiny_patch16_224@v1', 'v1') == (
      'timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k', 'v1',
      'vit_tiny_patch16_224')
  with pytest.raises(ValueError, match=r"names revision 'v1' and load\(\) "
                     r"was given revision='v2'"):
    pretrained.load('vit_tiny_patch16_224@v1', revision='v2')
  with pytest.raises(ValueError, match=r'nothing on one side of'):
    pretrained.load('vit_tiny_patch16_224@')


def _hub_error(cls, message):
  """A huggingface_hub error as hf_hub_download raises it online (its
  HTTP response left out: only the message is read)."""
  error = cls.__new__(cls)
  Exception.__init__(error, message)
  return error


@pytest.mark.parametrize('error,pattern', [
    ('RepositoryNotFoundError', r"^No Hub repository timm/vit_base_patch16_"
     r"224\.nope \(or it is private or gated: `hf auth login` with access "
     r"to it\), and no local directory 'timm/vit_base_patch16_224\.nope'\. "
     r"timm's tags of vit_base_patch16_224: \['augreg2_in21k_ft_in1k', "),
    ('RevisionNotFoundError', r'^The Hub repository timm/vit_base_patch16_'
     r"224\.nope has no revision 'v2' \(a branch, tag or commit\)\.$"),
    ('HfHubHTTPError', r'^timm/vit_base_patch16_224\.nope: config\.json '
     r'could not be downloaded: 500 Server Error\.$'),
])
def test_online_misses_are_one_line_naming_the_repository(
    monkeypatch, error, pattern):
  """issue 19: an online miss was huggingface_hub's multi-line error."""
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  from huggingface_hub import errors  # pylint: disable=g-import-not-at-top

  def download(*args, **kwargs):
    del args, kwargs
    raise _hub_error(getattr(errors, error), '500 Server Error.\n\nFor url:'
                     ' https://huggingface.co/timm/x (Request ID: 1)')
  monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
  monkeypatch.setattr(huggingface_hub, 'hf_hub_download', download)
  with pytest.raises(FileNotFoundError) as caught:
    pretrained.load('vit_base_patch16_224.nope', revision='v2')
  assert len(str(caught.value).splitlines()) == 1
  assert re.search(pattern, str(caught.value)), str(caught.value)


def _transformers_directory(directory, **config):
  directory.mkdir()
  (directory / 'config.json').write_text(json.dumps(config))
  return str(directory)


def test_transformers_layout_points_to_from_hf(tmp_path):
  state_dict, _, outputs, _ = _load_hf_golden()
  # The golden model's config as transformers saves it (make_golden_hf_vit).
  directory = _transformers_directory(
      tmp_path / 'hf', model_type='vit',
      architectures=['ViTForImageClassification'], image_size=16,
      patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
      num_attention_heads=2, intermediate_size=64, hidden_act='gelu',
      layer_norm_eps=1e-12, qkv_bias=True,
      id2label={str(i): f'LABEL_{i}' for i in range(10)})
  safetensors_numpy.save_file(state_dict, os.path.join(directory,
                                                       'model.safetensors'))
  with pytest.raises(ValueError) as caught:
    pretrained.load(directory)
  message = str(caught.value)
  assert message.startswith(
      f"config.json of {directory} is a Hugging Face transformers config "
      f"(model_type 'vit', ViTForImageClassification), not timm's")
  # The call it gives reads the checkpoint: transformers' logits.
  call = ast.parse(re.search(r'(from_hf\(.*\))\.$', message)[1]).body[0]
  family = ast.literal_eval(call.value.args[1])
  kwargs = {keyword.arg: ast.literal_eval(keyword.value)
            for keyword in call.value.keywords}
  assert kwargs == dict(HF_KWARGS, patch_size=4)
  variables = weights.from_hf(state_dict, family, **kwargs)
  logits, _ = jax.jit(models.get_model(family, **kwargs).apply)(
      variables, jnp.asarray(outputs['images']))
  np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)
  # A model type from_hf does not read, with no weights file yet.
  other = _transformers_directory(tmp_path / 'dinov2', model_type='dinov2',
                                  architectures=['Dinov2Model'])
  with pytest.raises(ValueError, match=r"model_type 'dinov2', Dinov2Model\)"
                     r".*from_hf reads transformers' model types \['vit', "
                     r"'vit_mae', 'segformer'\] only"):
    pretrained.load(other)


def test_transformers_segformer_points_to_from_hf(tmp_path):
  """A SegFormer in transformers' layout: the call given reads it."""
  with np.load(os.path.join(golden_cases.GOLDEN_DIR,
                            'segformer_hf.npz')) as archive:
    state_dict = {k[len('hub/'):]: archive[k] for k in archive.files
                  if k.startswith('hub/')}
    images, expected = archive['out/images'], archive['out/logits']
  directory = _transformers_directory(
      tmp_path / 'segformer', model_type='segformer',
      architectures=['SegformerForSemanticSegmentation'],
      hidden_sizes=[8, 16, 16, 24], depths=[1, 2, 1, 1],
      num_attention_heads=[1, 2, 2, 3], decoder_hidden_size=16,
      id2label={str(i): f'class {i}' for i in range(5)})
  with pytest.raises(ValueError) as caught:
    pretrained.load(directory)
  call = ast.parse(re.search(r'(from_hf\(.*\))\.$', str(caught.value))[1])
  call = call.body[0].value
  kwargs = {keyword.arg: ast.literal_eval(keyword.value)
            for keyword in call.keywords}
  assert ast.literal_eval(call.args[1]) == 'segformer'
  assert kwargs['num_classes'] == 5 and kwargs['sr_ratios'] == (8, 4, 2, 1)
  variables = weights.from_hf(state_dict, 'segformer', **kwargs)
  logits, _ = jax.jit(models.get_model('segformer', **kwargs).apply)(
      variables, jnp.asarray(images))
  np.testing.assert_allclose(logits, expected, atol=TOL, rtol=0)


@pytest.mark.parametrize('architecture,features', [
    ('deit_base_distilled_patch16_224', 'the distillation token and head'),
    ('vit_base_r50_s16_384', 'a ResNet stem'),
    ('vit_relpos_base_patch16_224', 'a relative position bias'),
    ('vit_base_patch16_rope_reg1_gap_256', 'rotary position embedding'),
    ('cait_s24_224', 'class attention with talking heads'),
    ('swinv2_cr_tiny_224', 'the SwinV2-CR block layout'),
    ('eva02_enormous_patch14_clip_224', 'residual post-norm blocks'),
])
def test_unsupported_architectures_say_what_they_need(architecture,
                                                      features):
  with pytest.raises(ValueError, match=(
      rf"^Unsupported timm architecture '{architecture}' \(of "
      rf"'{architecture}\.tag'\): it needs {re.escape(features)}")):
    pretrained.load(f'{architecture}.tag')


def test_unknown_names_list_close_matches(tmp_path):
  with pytest.raises(ValueError, match=r"Unsupported timm architecture "
                     r"'vit_bse_patch16_224'.*no family here builds it\. "
                     r"Close matches: \['vit_base_patch16_224'"):
    pretrained.load('timm/vit_bse_patch16_224.augreg_in21k')  # no network
  _write_checkpoint(tmp_path / 'resnet', 'vit_cls', architecture='resnet50')
  with pytest.raises(ValueError, match=r"'resnet50'.*convolutional stages.*"
                     r"Close matches: none"):
    pretrained.load(str(tmp_path / 'resnet'))
  with pytest.raises(ValueError, match=r"'a/b/c' is neither a local "
                     r"directory nor a Hub model name"):
    pretrained.load('a/b/c')


@pytest.mark.parametrize('model_args,pattern', [
    (dict(qk_norm=True), r'qk_norm=True has no counterpart.*\[False\]'),
    (dict(pos_embed='none'), r"pos_embed='none' has no counterpart"),
    (dict(global_pool='avg'), r'class_token=True with pool type \'gap\''),
    (dict(mystery=1), r"Unsupported timm model_args mystery=1 for family "
     r"'vit'; supported: \[.*'embed_dim'"),
])
def test_unsupported_model_args_are_named(tmp_path, model_args, pattern):
  _write_checkpoint(tmp_path / 'vit', 'vit_cls',
                    model_args=dict(CASES['vit_cls'][1], **model_args))
  with pytest.raises(ValueError, match=pattern):
    pretrained.load(str(tmp_path / 'vit'))


def test_missing_files_are_named(tmp_path):
  _write_checkpoint(tmp_path / 'vit', 'vit_cls')
  os.remove(tmp_path / 'vit' / 'model.safetensors')
  with pytest.raises(FileNotFoundError, match=r'model\.safetensors not '
                     r'found'):
    pretrained.load(str(tmp_path / 'vit'))


# -- The table. --

def _param_count(name, **overrides):
  """Parameters of a SUPPORTED entry, from `jax.eval_shape` of its init."""
  family, kwargs, size, _ = pretrained.SUPPORTED[name]
  model = models.get_model(family, **kwargs, **overrides)
  shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jax.ShapeDtypeStruct((1, size, size, 3),
                                               jnp.float32))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes['params']))


@pytest.mark.parametrize('name', sorted(pretrained.SUPPORTED))
def test_every_supported_architecture_builds_at_its_resolution(name):
  family, kwargs, size, _ = pretrained.SUPPORTED[name]
  model = models.get_model(family, **kwargs)  # checks the options
  if family == 'swin':  # raises for a resolution the windows do not tile
    swin.stage_geometry((size, size), model.patch_size, len(model.depths),
                        model.window_size)
  else:
    assert size % model.patch_size == 0


# One entry of each family and pooling traced (each costs a second or so
# of tracing on a small CPU; the rest differ from these in sizes only).
@pytest.mark.parametrize('name', [
    'vit_tiny_patch16_384', 'vit_base_patch16_gap_224',
    'vit_so400m_patch14_siglip_378', 'mixer_s32_224', 'xcit_nano_12_p8_224',
    'convmixer_1024_20_ks9_p14'])
def test_representative_architectures_trace(name):
  family = pretrained.SUPPORTED[name].family
  scan = {} if family == 'swin' else {'scan': True}  # cheaper to trace
  assert _param_count(name, **scan) > 1e6


# timm's parameter counts (1000 classes), `sum(p.numel())` in timm 1.0.31.
TIMM_PARAMS = {
    'vit_base_patch16_224': 86_567_656,
    'swin_tiny_patch4_window7_224': 28_288_354,
    'mixer_b16_224': 59_880_472,
    'convmixer_1536_20': 51_625_960,
}


@pytest.mark.parametrize('name', sorted(TIMM_PARAMS))
def test_parameter_counts_match_timm(name):
  scan = {} if name.startswith('swin') else {'scan': True}
  assert _param_count(name, **scan) == TIMM_PARAMS[name]


def test_supported_table_has_a_line_per_architecture():
  header, *lines = pretrained.supported_table().splitlines()
  assert header.split()[:4] == ['architecture', 'family', 'built', 'as']
  assert len(lines) == len(pretrained.SUPPORTED)
  (line,) = [line for line in lines
             if line.split()[0] == 'vit_base_patch16_224']
  assert line.split()[1:7] == ['vit', 'B/16', 'pool_type=cls', '224', 'px',
                               'augreg2_in21k_ft_in1k']
  (line,) = [line for line in lines if line.startswith('mixer_s32_224 ')]
  assert line.endswith('(none: no weights on the Hub)')
  # Selected: by family, by a pattern over architectures or tags.
  _, *lines = pretrained.supported_table('*.mae', family='vit').splitlines()
  assert [line.split()[0] for line in lines] == [
      'vit_base_patch16_224', 'vit_large_patch16_224', 'vit_huge_patch14_224']
  assert all(line.split()[-1] == 'mae' for line in lines)
  assert pretrained.supported_table('*.mae', family='swin') == ''


# timm 1.0.31's tags of the supported architectures on the Hub
# (`timm.list_pretrained()` of those with a 'timm/' repository): how many,
# and one architecture's in timm's order (the default first).
TIMM_TAG_COUNT = 295
TIMM_TAGS = {
    'vit_base_patch16_224': (
        'augreg2_in21k_ft_in1k', 'augreg_in21k_ft_in1k', 'orig_in21k_ft_in1k',
        'augreg_in1k', 'orig_in21k', 'augreg_in21k', 'sam_in1k', 'bamboo',
        'dino', 'mae'),
    'swin_tiny_patch4_window7_224': ('ms_in1k', 'ms_in22k_ft_in1k',
                                     'ms_in22k'),
    'xcit_nano_12_p8_384': ('fb_dist_in1k',),
    'vit_large_patch14_224': (),  # untrained in timm
}


def test_list_names_the_known_tags_like_timm():
  names = pretrained.list()
  assert len(names) == len(set(names)) == TIMM_TAG_COUNT
  for architecture, tags in TIMM_TAGS.items():
    assert pretrained.SUPPORTED[architecture].tags == tags
    assert pretrained.list(architecture) == [f'{architecture}.{tag}'
                                             for tag in tags]
  assert pretrained.list('*.mae') == [
      'vit_base_patch16_224.mae', 'vit_large_patch16_224.mae',
      'vit_huge_patch14_224.mae']
  assert pretrained.list('timm/swin_*_384.ms_in1k') == [
      'swin_base_patch4_window12_384.ms_in1k']
  assert pretrained.list('resnet*') == []


# -- Hugging Face transformers' ViT. --

def _load_hf_golden():
  path = os.path.join(golden_cases.GOLDEN_DIR, 'vit_hf.npz')
  with np.load(path) as archive:
    arrays = dict(archive)
  def take(prefix):
    return {k[len(prefix):]: v for k, v in arrays.items()
            if k.startswith(prefix)}
  return take('hf/'), take('pooler/'), take('out/'), take('names/')


# The golden model of make_golden_hf_vit.py, as ViT kwargs.
HF_KWARGS = dict(patch_size=4, width=32, depth=2, mlp_dim=64, num_heads=2,
                 num_classes=10, layer_norm_eps=1e-12)


def test_from_hf_vit_matches_transformers():
  state_dict, _, outputs, names = _load_hf_golden()
  assert 'vit.encoder.layer.0.attention.attention.query.weight' in state_dict
  module_names = dict(zip(names['hub'].astype(str),
                          names['module'].astype(str)))
  renamed = {module_names[k]: v for k, v in state_dict.items()}
  assert 'vit.layers.0.attention.q_proj.weight' in renamed
  apply = jax.jit(models.get_model('vit', **HF_KWARGS).apply)
  assert np.abs(outputs['logits']).max() > 0.1  # not a trivial comparison
  for layout in (state_dict, renamed):  # the Hub's names, transformers 5's
    variables = weights.from_hf(layout, 'vit', **HF_KWARGS)
    logits, _ = apply(variables, jnp.asarray(outputs['images']))
    np.testing.assert_allclose(logits, outputs['logits'], atol=TOL, rtol=0)


def test_from_hf_vit_model_pooler_is_the_pre_logits_layer():
  state_dict, pooler, outputs, _ = _load_hf_golden()
  # ViTModel: no 'vit.' prefix, no classifier, a pooler.
  encoder = {k[len('vit.'):]: v for k, v in state_dict.items()
             if k.startswith('vit.')}
  kwargs = dict(HF_KWARGS, num_classes=0, representation_size=32)
  variables = weights.from_hf({**encoder, **pooler}, 'vit', **kwargs)
  pooled, _ = jax.jit(models.get_model('vit', **kwargs).apply)(
      variables, jnp.asarray(outputs['images']))
  np.testing.assert_allclose(pooled, outputs['pooler_output'], atol=TOL,
                             rtol=0)


def test_from_hf_errors_name_the_problem():
  state_dict, _, _, _ = _load_hf_golden()
  with pytest.raises(ValueError, match=r"'swin'; valid models: "
                     r"\['vit', 'mae', 'segformer', 'timesformer'\]"):
    weights.from_hf(state_dict, 'swin')
  with pytest.raises(ValueError, match=r'vit\.encoder\.layer\.0\.lambda '
                     r'\(3,\)'):
    weights.from_hf({**state_dict, 'vit.encoder.layer.0.lambda': np.ones(3)},
                    'vit', **HF_KWARGS)
  with pytest.raises(ValueError, match=r'missing from the checkpoint: '
                     r'\[.*encoder/block_2/'):
    weights.from_hf(state_dict, 'vit', **dict(HF_KWARGS, depth=3))
