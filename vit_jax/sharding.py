"""Device mesh and partitioning rules: data parallelism plus FSDP.

One `jax.sharding.Mesh` with two named axes:
  - 'data': the batch is split along it; parameters are replicated along it.
  - 'fsdp': the batch is split along it too, and every parameter (and
    optimizer state) is split along its largest dimension divisible by the
    axis size (fully sharded data parallelism, ZeRO-3 style). XLA gathers
    the parameters where a computation needs them.
No `pmap`: everything is `jax.jit` with named shardings.
"""

from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'fsdp')
BATCH_AXES = ('data', 'fsdp')


def make_mesh(data: int = -1, fsdp: int = 1,
              devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A ('data', 'fsdp') mesh over `devices` (default: all devices).

  One of the sizes may be -1: it takes what the other leaves.
  """
  devices = list(jax.devices() if devices is None else devices)
  count = len(devices)
  if data == -1 and fsdp == -1:
    raise ValueError('At most one mesh axis size may be -1, got data=-1 and '
                     'fsdp=-1.')
  if data == -1:
    data = count // fsdp if fsdp > 0 and count % fsdp == 0 else 0
  elif fsdp == -1:
    fsdp = count // data if data > 0 and count % data == 0 else 0
  if data <= 0 or fsdp <= 0 or data * fsdp != count:
    divisors = [d for d in range(1, count + 1) if count % d == 0]
    raise ValueError(
        f'Mesh axes data={data} x fsdp={fsdp} do not multiply to the '
        f'{count} devices; valid (data, fsdp) pairs: '
        f'{[(d, count // d) for d in divisors]}')
  grid = np.asarray(devices, dtype=object).reshape(data, fsdp)
  return Mesh(grid, MESH_AXES)


def fsdp_spec(shape: Sequence[int], mesh: Mesh) -> P:
  """Shards the largest dimension divisible by the fsdp size; else replicates."""
  size = mesh.shape['fsdp']
  if size == 1:
    return P()
  candidates = [(dim, axis) for axis, dim in enumerate(shape)
                if dim % size == 0]
  if not candidates:
    return P()
  _, axis = max(candidates)
  spec = [None] * len(shape)
  spec[axis] = 'fsdp'
  return P(*spec)


def param_shardings(params: Any, mesh: Mesh) -> Any:
  """A tree of NamedShardings matching `params` (arrays or shape structs)."""
  return jax.tree.map(
      lambda leaf: NamedSharding(mesh, fsdp_spec(leaf.shape, mesh)),
      params)


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over both mesh axes."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local_batch: Any, mesh: Mesh) -> Any:
  """This process's part of a batch (numpy) -> global jax arrays.

  Every process passes its own rows; the global batch is their
  concatenation in process order, split along the batch axes of `mesh`.
  """
  batch_axes = batch_sharding(mesh)
  return jax.tree.map(
      lambda rows: jax.make_array_from_process_local_data(batch_axes, rows),
      dict(local_batch))
