"""Training-step throughput of a ViT with XLA vs cuDNN fused attention.

    python benchmarks/attention.py --variant B/16 --batch 128 --dtype bfloat16

For each attention implementation ('xla', 'cudnn', and the default None,
which `common.attention_backend` resolves), times a jitted forward +
backward pass (gradients of a squared-logit loss) and reports images/s,
whether the compiled program really calls cuDNN's fused attention, and the
largest difference of its logits from the XLA path. Results and the device
they came from are in benchmarks/README.md.
"""

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax.models import get_model


def measure(variant, batch, resolution, dtype, implementation, steps):
  model = get_model('vit', variant=variant, dtype=dtype,
                    attention_impl=implementation, num_classes=1000)
  images = jax.random.normal(jax.random.PRNGKey(0),
                             (batch, resolution, resolution, 3))
  params = jax.jit(model.init)(jax.random.PRNGKey(1), images)['params']
  # Non-zero head so the gradients reach the whole network.
  params['head']['kernel'] = 0.01 * jax.random.normal(
      jax.random.PRNGKey(2), params['head']['kernel'].shape)

  def loss_fn(p):
    logits, _ = model.apply({'params': p}, images, train=False)
    return jnp.mean(logits ** 2), logits

  step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))
  compiled = step.lower(params).compile()
  hlo = compiled.as_text()
  uses_cudnn = 'cudnn$fmha' in hlo or '__cudnn$fmha' in hlo
  (_, logits), grads = compiled(params)
  jax.block_until_ready(grads)
  start = time.perf_counter()
  for _ in range(steps):
    (_, logits), grads = compiled(params)
  jax.block_until_ready(grads)
  seconds = (time.perf_counter() - start) / steps
  return dict(implementation=str(implementation), uses_cudnn_fmha=uses_cudnn,
              img_per_sec=batch / seconds, ms_per_step=1e3 * seconds,
              logits=np.asarray(logits, np.float32))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--variant', default='B/16')
  parser.add_argument('--batch', type=int, default=128)
  parser.add_argument('--resolution', type=int, default=224)
  parser.add_argument('--dtype', default='bfloat16')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--impls', default='xla,cudnn,default')
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)
  print(json.dumps(dict(device=str(jax.devices()[0].device_kind),
                        backend=jax.default_backend(), jax=jax.__version__,
                        variant=args.variant, batch=args.batch,
                        resolution=args.resolution, dtype=args.dtype)))
  reference = None
  for name in args.impls.split(','):
    implementation = None if name == 'default' else name
    result = measure(args.variant, args.batch, args.resolution, dtype,
                     implementation, args.steps)
    logits = result.pop('logits')
    if reference is None:
      reference = logits
    scale = float(np.abs(reference).max())
    result['max_logit_diff_vs_first'] = float(np.abs(logits - reference).max())
    result['logit_scale'] = scale
    print(json.dumps(result))


if __name__ == '__main__':
  main()
