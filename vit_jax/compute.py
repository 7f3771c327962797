"""Compute accounting: parameters, FLOPs, device time and MFU of a run.

Convention, everywhere in vit_jax: FLOPs are XLA's count (its cost
analysis of the lowered, unpartitioned program), in which a multiply-add
is 2 FLOPs. Papers quoting "FLOPs" often mean multiply-adds: half these.
The zoo listing alone counts analytically (`vit_jax.models.counts`: the
same convention, matrix products and convolutions only, a little below
XLA's count).

Per run the trainer writes `WORKDIR/summary.json` (`write_summary`):

    params          all parameters
    params_body     without the embedding (patch / stem, position
                    embeddings, class and mask tokens) and the head:
                    BODY_EXCLUDED, the top-level names left out
    flops_per_image the model's forward pass on one image (inference)
    flops_per_step  one training step on the global batch (forward,
                    backward, optimizer), so compute/flops = this x step
    batch_size, devices, device_kind
    peak_flops_per_device   the device's dense bfloat16 peak (PEAK_FLOPS,
                    or config.peak_flops_per_device), null where unknown
                    (CPUs); MFU is given only where it is known
    flop_convention "a multiply-add is 2 FLOPs"

and, updated when it stops, `step`, `images_seen`, `flops`,
`device_seconds`. metrics.jsonl carries the cumulative
`compute/flops`, `compute/images_seen`, `compute/device_seconds` (devices
x wall seconds of training steps, evaluation excluded, summed over
resumes) and, with a known peak, `compute/mfu` (the logging window's
model FLOPs / (devices x seconds x peak)).

No TensorFlow here.
"""

import json
from typing import Any, Dict, Optional, Sequence, Tuple

import jax
import jax.numpy as jnp
import numpy as np

from vit_jax import layout
from vit_jax import paths

FLOP_CONVENTION = 'a multiply-add is 2 FLOPs'

# Top-level parameter names that are embedding or head, not body.
BODY_EXCLUDED = ('patch_embed', 'pos_embed', 'cls_token', 'mask_token',
                 'stem', 'head', 'decoder_embed', 'decoder_pos_embed',
                 'decoder_pred')

# Dense bfloat16 peak FLOP/s per device (vendor figures, without
# sparsity), matched as substrings of `jax.Device.device_kind` in this
# order (the first match wins).
PEAK_FLOPS: Sequence[Tuple[str, float]] = (
    ('H100 PCIe', 756e12),
    ('H100', 989e12),
    ('H200', 989e12),
    ('GH200', 989e12),
    ('B200', 2250e12),
    ('A100', 312e12),
    ('L4', 121e12),
    ('V100', 125e12),
    ('TPU v6 lite', 918e12),
    ('TPU v5 lite', 197e12),
    ('TPU v5p', 459e12),
    ('TPU v5', 459e12),
    ('TPU v4', 275e12),
    ('TPU v3', 123e12),
    ('TPU v2', 45e12),
)


def peak_flops(device_kind: str) -> Optional[float]:
  """The dense bf16 peak of one device of this kind, or None if unknown."""
  for name, flops in PEAK_FLOPS:
    if name in device_kind:
      return flops
  return None


def param_counts(params: Any) -> Tuple[int, int]:
  """(all parameters, body parameters): see BODY_EXCLUDED."""
  total = body = 0
  for name, subtree in params.items():
    count = int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(subtree)))
    total += count
    if name not in BODY_EXCLUDED:
      body += count
  return total, body


def forward_flops_per_image(model: Any, image_shape: Sequence[int],
                            abstract_variables: Any) -> Optional[float]:
  """FLOPs of one image's inference forward pass (XLA cost analysis of the
  lowered program: nothing is compiled or run)."""
  images = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
  shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                        abstract_variables)
  try:
    analysis = jax.jit(lambda v, x: model.apply(v, x)).lower(
        shapes, images).cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else {}
  return float(analysis['flops']) if analysis and 'flops' in analysis else None


def mfu(flops: float, seconds: float, devices: int,
        peak: Optional[float]) -> Optional[float]:
  """Model FLOPs utilisation of `flops` done in `seconds` on `devices`."""
  if not peak or seconds <= 0 or devices <= 0:
    return None
  return flops / (seconds * devices * peak)


def write_summary(workdir: str, facts: Dict[str, Any]) -> None:
  """Merges `facts` into WORKDIR/summary.json (main process only)."""
  path = paths.join(workdir, layout.SUMMARY)
  summary = paths.read_json(path) or {}
  summary.update(facts)
  summary['flop_convention'] = FLOP_CONVENTION
  paths.write_atomic(path, json.dumps(summary, indent=1, sort_keys=True)
                     + '\n')


def read_summary(workdir: str) -> Optional[Dict[str, Any]]:
  return paths.read_json(paths.join(workdir, layout.SUMMARY))
