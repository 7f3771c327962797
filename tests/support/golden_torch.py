"""What the golden-file generators (make_golden*.py, beside this file) share.

Each generator builds one family's small PyTorch model (timm's or Hugging
Face's) with random weights, runs it on seeded inputs and writes the
weights, the inputs and the outputs as .npz under tests/golden/, which the
tests read without torch. What they share is here: the seeded inputs and
weights, the torchvision stand-in, timm's classifier outputs, train-mode
BatchNorm statistics, writing the files, and the command line:

    python tests/support/make_golden.py [--out DIR]         (ViT, Mixer)
    python tests/support/make_golden_<family>.py [--out DIR]

(default DIR: tests/golden; another folder, to compare a new run with the
committed files first: on another machine the weights and inputs come out
the same, the outputs within float rounding). Run by hand, in an environment
with torch and timm or transformers, at the versions each generator's
docstring names.
"""

import argparse
import contextlib
import copy
import enum
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import types

import numpy as np
import torch

GOLDEN_DIR = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'golden')


# -- torchvision: timm and transformers import it for image transforms only. --

class _AnyName(type):
  """A class whose every attribute is itself (torchvision.transforms.X.Y)."""

  def __getattr__(cls, name):
    return cls


_PLACEHOLDER_CLASS = _AnyName('Placeholder', (),
                              {'__init__': lambda self, *a, **k: None})
_INTERPOLATION = enum.Enum(
    'InterpolationMode',
    'NEAREST NEAREST_EXACT BILINEAR BICUBIC BOX HAMMING LANCZOS')


class _PlaceholderModule(types.ModuleType):

  def __getattr__(self, name):
    if name == 'InterpolationMode':
      return _INTERPOLATION
    if name.startswith('__'):
      raise AttributeError(name)
    return _PLACEHOLDER_CLASS


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
  """Answers every `import torchvision...` with a placeholder module."""

  def find_spec(self, fullname, path, target=None):
    if fullname.split('.')[0] == 'torchvision':
      return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
    return None

  def create_module(self, spec):
    module = _PlaceholderModule(spec.name)
    module.__path__ = []
    return module

  def exec_module(self, module):
    pass


@contextlib.contextmanager
def without_torchvision():
  """Imports in this block run without the real torchvision.

  No CPU build of it may be at hand, and one built for another torch fails
  on import, so it is never used, installed or not: libraries that ask
  whether it is there (`importlib.util.find_spec`) hear no, and one that
  imports it anyway (timm) gets a placeholder, from now on.
  """
  if not any(isinstance(finder, _PlaceholderFinder)
             for finder in sys.meta_path):
    sys.meta_path.insert(0, _PlaceholderFinder())
  find_spec = importlib.util.find_spec
  importlib.util.find_spec = lambda name, package=None: (
      None if name.split('.')[0] == 'torchvision'
      else find_spec(name, package))
  try:
    yield
  finally:
    importlib.util.find_spec = find_spec


# -- Seeded inputs and weights. --

def random_images(batch, height, width, seed):
  """[batch, 3, height, width] N(0, 1) images, NCHW as torch takes them."""
  return torch.randn(batch, 3, height, width,
                     generator=torch.Generator().manual_seed(seed))


def nhwc(images):
  """An NCHW tensor as the NHWC array the JAX models take."""
  return images.permute(0, 2, 3, 1).numpy()


def timm_fan_in(name, shape):  # pylint: disable=unused-argument
  """A dense or conv weight's fan-in; 1 for other tensors of 2+ dims (tokens,
  position tables); None (small noise) for vectors."""
  if len(shape) < 2:
    return None
  fan_in = shape[1] if len(shape) == 2 else 1
  if len(shape) == 4:
    fan_in = shape[1] * shape[2] * shape[3]
  return max(fan_in, 1)


def hf_fan_in(name, shape):
  """The product of all but the first dimension; None (small noise) for
  vectors and the class and mask tokens."""
  if len(shape) < 2 or name.endswith(('cls_token', 'mask_token')):
    return None
  return int(np.prod(shape[1:]))


def randomize(model, seed, fan_in=timm_fan_in, skip=()):
  """Random weights everywhere but `skip` (timm and transformers
  zero-initialise some, e.g. biases): norm scales 1 + 0.2 N(0, 1), other
  tensors N(0, 1) / sqrt(fan_in(name, shape)), or 0.2 N(0, 1) where that is
  None. The timm and the transformers generators were written with the two
  fan-in rules above (they differ on tokens and position tables); each keeps
  its own, so that a rerun reproduces the committed files."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, param in model.named_parameters():
      if name in skip:
        continue
      noise = torch.randn(param.shape, generator=generator)
      fan = fan_in(name, param.shape)
      if 'norm' in name and name.endswith('weight'):
        param.copy_(1.0 + 0.2 * noise)
      elif fan is None:
        param.copy_(0.2 * noise)
      else:
        param.copy_(noise / np.sqrt(fan))


def eager(config):
  """A transformers config set to plain ('eager') attention, not a fused
  kernel, as the committed files were written."""
  config._attn_implementation = 'eager'  # pylint: disable=protected-access
  return config


def to_numpy(state_dict):
  return {k: v.detach().cpu().numpy().astype(np.float32)
          for k, v in state_dict.items()}


# -- What the models give. --

def classifier_outputs(model, images, features=None):
  """A timm classifier's eval outputs: images (NHWC), logits and pre-logits,
  from its final `features` (by default `forward_features(images)`), the
  logits checked against a plain forward."""
  with torch.no_grad():
    if features is None:
      features = model.forward_features(images)
    pre_logits = model.forward_head(features, pre_logits=True)
    logits = model.forward_head(features)
    np.testing.assert_allclose(logits.numpy(), model(images).numpy(),
                               atol=1e-6)
  return {'images': nhwc(images), 'logits': logits.numpy(),
          'pre_logits': pre_logits.numpy()}


def stage_outputs(model, images):
  """A timm Swin's classifier outputs and each stage's map ('stage_{i}',
  NHWC), from `forward_intermediates`; prints each block's window and
  shift, the geometry the golden model covers."""
  geometry = [(tuple(block.window_size), tuple(block.shift_size))
              for stage in model.layers for block in stage.blocks]
  print('window, shift per block:', geometry)
  with torch.no_grad():
    features, stage_maps = model.forward_intermediates(images)
  outputs = classifier_outputs(model, images, features)
  for index, stage_map in enumerate(stage_maps):
    outputs[f'stage_{index}'] = nhwc(stage_map)
  return outputs


def train_mode_outputs(model, images):
  """One train-mode forward of a copy of `model`: its logits and every
  BatchNorm's running mean and variance after it ('train_stats/<name>')."""
  trained = copy.deepcopy(model).train()
  with torch.no_grad():
    outputs = {'train_logits': trained(images).numpy()}
  changes = []
  for name, buffer in trained.named_buffers():
    if name.endswith(('running_mean', 'running_var')):
      before = model.get_buffer(name)
      assert not torch.allclose(buffer, before), name  # it was updated
      changes.append(float((buffer - before).abs().max()))
      outputs[f'train_stats/{name}'] = buffer.numpy()
  print(f'BatchNorms: {len(changes) // 2} | largest change of a running '
        f'average: {max(changes):.7g}')
  return outputs


# -- Writing. --

def save(out_dir, name, arrays=None, **groups):
  """Writes out_dir/name: `arrays` as named, and each of `groups` (a dict)
  with its keyword as a prefix ('out/logits')."""
  arrays = dict(arrays or {})
  for prefix, group in groups.items():
    arrays.update({f'{prefix}/{key}': value for key, value in group.items()})
  path = os.path.join(out_dir, name)
  np.savez(path, **arrays)
  print(f'wrote {path} ({os.path.getsize(path) / 1024:.0f} KiB)')


def main(write, doc):
  """A generator's command line (`doc`, its docstring, is its --help):
  `write(out_dir)` into --out."""
  parser = argparse.ArgumentParser(
      description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--out', default=GOLDEN_DIR,
                      help='folder to write to (default: %(default)s)')
  out_dir = parser.parse_args().out
  os.makedirs(out_dir, exist_ok=True)
  write(out_dir)
  versions = [f'{name} {sys.modules[name].__version__}'
              for name in ('timm', 'transformers', 'monai', 'torch')
              if name in sys.modules]
  print(', '.join(versions))
