"""Training steps of the dense-prediction models, and what UNETR's 3-D
convolutions cost.

    PYTHONPATH=. python benchmarks/segmentation_step.py \
        --models=segformer_b0_512,unetr_b16_96,segformer_demo,unetr_demo

For each model: the objective 'segmentation' step of `vit_jax.train`
(`make_loss_fn` + `make_train_step`: SegFormer's per-pixel cross-entropy
of its upsampled logits, UNETR's Dice + cross-entropy) with AdamW, jitted
with the state donated, on synthetic images and label maps of the model's
size (float32). One JSON line per model:

    compile_s        XLA compilation of the step
    step_s           median over --steps timed steps (after one warm-up)
    images_per_s     batch / step_s (volumes per second for UNETR)
    encoder_step_s   UNETR only: the same step with the loss on the
                     encoder's tokens alone (XLA drops the convolutional
                     skip encoders and decoder, which nothing then uses)
    conv3d_share     UNETR only: 1 - encoder_step_s / step_s, the share of
                     a step spent in the 3-D convolutions and transposed
                     convolutions (their backward included)
    xla_flops_per_step  XLA's cost analysis of the step

`--tiny` runs toy sizes (a smoke test: tests/test_benchmarks.py). No
TensorFlow is imported. Figures: benchmarks/README.md.
"""

import argparse
import json
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from vit_jax import config as config_lib
from vit_jax import models
from vit_jax import train

# Name -> (get_model kwargs, input shape without the batch, loss, batch).
MODELS = {
    # The paper's ADE20K model and crop.
    'segformer_b0_512': (dict(name='segformer', variant='B0',
                              num_classes=150), (512, 512, 3),
                         'softmax_xent', 2),
    # The paper's BTCV model and crop.
    'unetr_b16_96': (dict(name='unetr', variant='B/16', image_size=96,
                          in_channels=1, num_classes=14, feature_size=16),
                     (96, 96, 96, 1), 'dice_ce', 1),
    # The offline demos' models (configs/segformer_mosaics.py,
    # configs/unetr_volumes.py).
    'segformer_demo': (dict(name='segformer', widths=(16, 32, 64, 128),
                            depths=(1, 1, 1, 1), num_heads=(1, 2, 4, 8),
                            decoder_width=64, num_classes=11),
                       (40, 40, 1), 'softmax_xent', 32),
    'unetr_demo': (dict(name='unetr', image_size=32, in_channels=1,
                        num_classes=2, feature_size=8, width=32, depth=4,
                        num_heads=2, mlp_dim=64, skip_blocks=(0, 1, 2)),
                   (32, 32, 32, 1), 'dice_ce', 4),
}
TINY = {
    'segformer_demo': (dict(name='segformer', widths=(8, 8, 8, 8),
                            depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
                            decoder_width=8, num_classes=3),
                       (16, 16, 1), 'softmax_xent', 2),
    'unetr_demo': (dict(name='unetr', image_size=16, in_channels=1,
                        num_classes=2, feature_size=2, width=8, depth=4,
                        num_heads=1, mlp_dim=8, skip_blocks=(0, 1, 2)),
                   (16, 16, 16, 1), 'dice_ce', 1),
}


def _timed(step, state, batch, steps: int):
  """(compile seconds, median step seconds) of a jitted, donating step."""
  rng = jax.random.PRNGKey(1)
  start = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - start
  state, metrics = compiled(state, batch, rng)  # warm-up
  jax.block_until_ready(metrics)
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  flops = float(analysis.get('flops', 0.0)) if analysis else None
  return compile_s, statistics.median(times), flops


def _encoder_loss(model):
  """A loss on UNETR's encoded tokens only: its convolutions go unused."""
  def loss_fn(params, model_state, batch, rng):
    del rng
    (_, aux) = model.apply({'params': params, **model_state},
                           batch['image'], train=True)
    return jnp.mean(jnp.square(aux['encoded'].astype(jnp.float32))), \
        model_state
  return loss_fn


def measure(name: str, spec, steps: int) -> Dict:
  model_kwargs, shape, loss, batch_size = spec
  config = config_lib.resolve(dict(
      total_steps=10, batch_size=batch_size, objective='segmentation',
      loss=loss, model=model_kwargs, data=dict(name='digits')))
  model = models.get_model(**models.kwargs_from_config(config.model))
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(batch_size, *shape)), jnp.float32)
  label_maps = jnp.asarray(rng.integers(
      0, model_kwargs['num_classes'], (batch_size, *shape[:-1])), jnp.int32)
  batch = {'image': images, 'label_map': label_maps}
  variables = jax.jit(model.init)(jax.random.PRNGKey(0), images[:1])
  tx = optax.adamw(1e-4, weight_decay=0.01)

  def fresh_state():  # copies: the step donates (deletes) its input state
    copied = jax.tree.map(jnp.copy, variables)
    params = copied['params']
    return {'params': params, 'opt_state': tx.init(params),
            'step': jnp.zeros((), jnp.int32),
            **{k: v for k, v in copied.items() if k != 'params'}}

  def schedule(step):
    del step
    return jnp.float32(1e-4)

  step = jax.jit(train.make_train_step(train.make_loss_fn(model, config), tx,
                                       schedule), donate_argnums=(0,))
  compile_s, step_s, flops = _timed(step, fresh_state(), batch, steps)
  result = {'model': name, 'input': [batch_size, *shape], 'loss': loss,
            'compile_s': round(compile_s, 3), 'step_s': round(step_s, 4),
            'images_per_s': round(batch_size / step_s, 3),
            'xla_flops_per_step': flops,
            'device': jax.devices()[0].device_kind}
  if model_kwargs['name'] == 'unetr':
    encoder_step = jax.jit(train.make_train_step(_encoder_loss(model), tx,
                                                 schedule),
                           donate_argnums=(0,))
    _, encoder_s, _ = _timed(encoder_step, fresh_state(), batch, steps)
    result['encoder_step_s'] = round(encoder_s, 4)
    result['conv3d_share'] = round(1.0 - encoder_s / step_s, 3)
  return result


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default='segformer_demo,unetr_demo',
                      help=f'comma-separated, of {sorted(MODELS)}')
  parser.add_argument('--steps', type=int, default=5)
  parser.add_argument('--tiny', action='store_true',
                      help='toy sizes of the demo models (smoke test)')
  return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None, out=None) -> List[Dict]:
  args = parse_args(argv)
  table = TINY if args.tiny else MODELS
  names = [name.strip() for name in args.models.split(',') if name.strip()]
  unknown = [name for name in names if name not in table]
  if unknown:
    raise SystemExit(f'unknown --models {unknown}; valid choices: '
                     f'{sorted(table)}')
  results = []
  for name in names:
    result = measure(name, table[name], args.steps)
    print(json.dumps(result), file=out or sys.stdout, flush=True)
    results.append(result)
  return results


if __name__ == '__main__':
  main()
