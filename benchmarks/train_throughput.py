"""Training-step throughput, memory and MFU of the recipes' models.

    PYTHONPATH=. python benchmarks/train_throughput.py --batch=128 \
        --models=vit_b16,vit_l16,mixer_b16,swin_t4,mae_l16,vit_g14

For each model: its recipe (configs/*.py, MODELS below) gives the model
(bfloat16 compute, float32 parameters) and the optimizer
(`vit_jax.optim.make_optimizer` with the recipe's config: AdamW, or
Adafactor for the Scaling ViT recipe of g/14). The jitted train step of
`vit_jax.train.make_train_step` (state donated, sharded over the
('data', 'fsdp') mesh of `vit_jax.sharding`) runs on synthetic inputs
made on the device: `--batch` images per device. Printed per model, one
JSON line:

    compile_s            lowering excluded, XLA compilation only
    step_s               median over --steps timed steps (after --warmup)
    images_per_s         global batch / step_s
    peak_memory_bytes    the device's peak_bytes_in_use (memory_stats();
                         None where the backend keeps none, e.g. CPU); a
                         high-water mark of the whole process, so only the
                         first model's is its own (run one model a process
                         for each model's peak)
    xla_memory_bytes     XLA's memory analysis of the compiled step
                         (arguments + outputs + temporaries - aliased)
    model_flops_per_step 3 x the analytic forward FLOPs
                         (`vit_jax.models.counts`) x the global batch; an
                         MAE counts its encoder on the kept patches plus
                         its decoder; recomputation (remat) not counted
    xla_flops_per_step   XLA's cost analysis of the lowered step
    measured_peak_flops  a --peak_size^3 bfloat16 matmul on the same device
    vendor_peak_flops    `vit_jax.compute.PEAK_FLOPS` (None where unknown)
    mfu_measured, mfu_vendor  model FLOPs/s / (devices x that peak)

and at the end a markdown table with a row per model (the format of
benchmarks/README.md; its memory is peak_memory_bytes, else
xla_memory_bytes). FLOPs count a multiply-add as 2 (`vit_jax.compute`).

    --tiny                    every family at toy sizes, 32 px (CPU smoke)
    --compare=timm            the same models in PyTorch (timm, torch.compile,
                              bf16 autocast, fused AdamW on CUDA), in the
                              same process: JAX's memory preallocation is
                              turned off for it
    --layers_compile_ratio    compile time of a 48- vs a 12-layer ViT step
                              (scan=True; --ratio_no_scan for contrast),
                              --ratio_variant sized (default B/16)

Runs without TensorFlow: nothing here imports the input pipeline's
TensorFlow (tests/test_benchmarks.py checks). Results and devices are in
benchmarks/README.md.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import jax
import jax.numpy as jnp

from vit_jax import build
from vit_jax import compute
from vit_jax import optim
from vit_jax import sharding
from vit_jax import train
from vit_jax.models import counts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Name -> (recipe in configs/, its argument, default fsdp axis size: -1 is
# all devices, for models whose state does not fit one device).
MODELS = {
    'vit_b16': ('vit_i1k', 'B/16', 1),
    'vit_l16': ('vit_i1k', 'L/16', 1),
    'mixer_b16': ('mixer_i1k', 'B/16', 1),
    'swin_t4': ('swin_i1k', 'T/4', 1),
    'mae_l16': ('mae_i1k', 'L/16', 1),
    'mae_b16': ('mae_i1k', 'B/16', 1),  # beside vit_b16: MAE vs supervised
    'vit_g14': ('scaling_vit', 'g/14', -1),
}

DEFAULT_MODELS = ('vit_b16', 'vit_l16', 'mixer_b16', 'swin_t4', 'mae_l16',
                  'vit_g14')

# --tiny: the model block's sizes per recipe (the variant dropped), for
# 32 px images; everything else (optimizer, dtype, pooling) is the recipe's.
TINY_RESOLUTION = 32
TINY_VIT = dict(patch_size=8, width=32, depth=1, mlp_dim=64, num_heads=2)
TINY_MODELS = {
    'vit_i1k': TINY_VIT,
    'scaling_vit': TINY_VIT,
    'mixer_i1k': dict(patch_size=8, width=32, depth=2, tokens_mlp_dim=16,
                      channels_mlp_dim=64),
    'swin_i1k': dict(patch_size=2, width=16, depths=(1, 1), num_heads=(1, 2),
                     window_size=4),
    'mae_i1k': dict(TINY_VIT, decoder_width=16, decoder_depth=1,
                    decoder_num_heads=2),
}

# timm's architectures for --compare=timm (sizes are set from the JAX model
# so tiny and custom sizes match); MAE pre-training is not in timm.
TIMM_ARCHITECTURES = {
    'vit': 'vit_base_patch16_224',
    'mixer': 'mixer_b16_224',
    'swin': 'swin_tiny_patch4_window7_224',
}

COMPARES = ('timm',)


def parse_models(text: str) -> List[str]:
  """'vit_b16,mae_l16' -> names, each checked against MODELS."""
  names = [name.strip() for name in text.split(',') if name.strip()]
  if not names:
    raise ValueError(f'--models is empty; valid models: {list(MODELS)}')
  for name in names:
    if name not in MODELS:
      raise ValueError(f'Unknown model {name!r} in --models; valid models: '
                       f'{list(MODELS)}')
  return names


def load_recipe(recipe: str, arg: str):
  """configs/RECIPE.py's get_config(arg)."""
  path = os.path.join(ROOT, 'configs', f'{recipe}.py')
  spec = importlib.util.spec_from_file_location(f'configs_{recipe}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def model_config(name: str, tiny: bool, model_overrides=None):
  """(recipe config with bfloat16 compute, resolution) of MODELS[name]."""
  recipe, arg, _ = MODELS[name]
  config = load_recipe(recipe, arg)
  resolution = 224
  if tiny:
    config.model.variant = None
    config.model.update(TINY_MODELS[recipe])
    resolution = TINY_RESOLUTION
  if model_overrides:
    config.model.update(model_overrides)
  config.model.dtype = 'bfloat16'  # compute; params stay float32
  return config, resolution


def _device_batch_fn(config, global_batch: int, resolution: int, mesh):
  """A jitted rng -> batch, made on the devices with the batch sharding."""
  num_classes = config.model.get('num_classes') or 1000

  def make(rng):
    image_rng, label_rng = jax.random.split(rng)
    images = jax.random.uniform(image_rng,
                                (global_batch, resolution, resolution, 3),
                                jnp.float32, -1.0, 1.0)
    batch = {'image': images}
    if config.objective != 'mae':
      labels = jax.random.randint(label_rng, (global_batch,), 0, num_classes)
      batch['labels'] = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
    return batch
  return jax.jit(make, out_shardings=sharding.batch_sharding(mesh))


def _first(analysis):
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  return analysis


def _xla_memory(compiled) -> Optional[int]:
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  stats = _first(stats)
  if stats is None:
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes
             + stats.temp_size_in_bytes - stats.alias_size_in_bytes)


def peak_memory_bytes() -> Optional[int]:
  """The first device's peak_bytes_in_use, None where not kept."""
  try:
    stats = jax.devices()[0].memory_stats()
  except Exception:  # pylint: disable=broad-except
    return None
  if not stats or 'peak_bytes_in_use' not in stats:
    return None
  return int(stats['peak_bytes_in_use'])


def default_peak_size() -> int:
  return 1024 if jax.default_backend() == 'cpu' else 8192


def measure_peak_flops(size: int, repeats: int = 5) -> float:
  """FLOP/s of a size^3 bfloat16 matmul (float32 accumulation) on the
  first device: the median of `repeats` timed runs after one warm-up."""
  if size < 1:
    raise ValueError(f'--peak_size must be positive, got {size}.')
  keys = jax.random.split(jax.random.PRNGKey(0))
  a, b = (jax.random.normal(key, (size, size), jnp.bfloat16) for key in keys)
  matmul = jax.jit(lambda x, y: jnp.dot(
      x, y, preferred_element_type=jnp.float32).astype(jnp.bfloat16))
  jax.block_until_ready(matmul(a, b))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(matmul(a, b))
    times.append(time.perf_counter() - start)
  return 2.0 * size ** 3 / statistics.median(times)


def _setup(name: str, args, model_overrides=None):
  """The model, sharded step (not compiled) and what it needs."""
  config, resolution = model_config(name, args.tiny, model_overrides)
  if args.resolution:
    resolution = args.resolution
  fsdp = MODELS[name][2] if args.fsdp is None else args.fsdp
  mesh = sharding.make_mesh(-1 if fsdp != -1 else 1, fsdp)
  devices = mesh.size
  global_batch = args.batch * devices
  model = build.build_model(config.model)
  tx, schedule = optim.make_optimizer(config, config.total_steps)
  init_fn = build.make_init_fn(model, tx, (resolution, resolution, 3))
  state_shapes = jax.eval_shape(init_fn, jax.random.PRNGKey(0))
  state_shardings = sharding.param_shardings(state_shapes, mesh)
  step = jax.jit(
      train.make_train_step(train.make_loss_fn(model, config), tx, schedule),
      in_shardings=(state_shardings, sharding.batch_sharding(mesh),
                    sharding.replicated(mesh)),
      out_shardings=(state_shardings, sharding.replicated(mesh)),
      donate_argnums=(0,))
  return dict(config=config, resolution=resolution, mesh=mesh, fsdp=fsdp,
              devices=devices, global_batch=global_batch, model=model,
              init_fn=init_fn, state_shapes=state_shapes,
              state_shardings=state_shardings, step=step)


def measure_model(name: str, args, measured_peak: float,
                  vendor_peak: Optional[float]) -> Dict[str, Any]:
  """One model's JSON record (see the module docstring)."""
  setup = _setup(name, args)
  config, mesh = setup['config'], setup['mesh']
  devices, global_batch = setup['devices'], setup['global_batch']
  state = jax.jit(setup['init_fn'], out_shardings=setup['state_shardings'])(
      jax.random.PRNGKey(0))
  make_batch = _device_batch_fn(config, global_batch, setup['resolution'],
                                mesh)
  batch = make_batch(jax.random.PRNGKey(1))
  rng = jax.device_put(jax.random.PRNGKey(2), sharding.replicated(mesh))
  lowered = setup['step'].lower(state, batch, rng)
  xla_flops = train._flops(lowered)  # pylint: disable=protected-access
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  for _ in range(args.warmup):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(state)
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    state, metrics = compiled(state, batch, rng)
    jax.block_until_ready((state, metrics))
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  loss = float(metrics['train/loss'])
  forward = counts.forward_flops(setup['model'], setup['resolution'])
  model_flops = 3.0 * forward * global_batch
  params, _ = compute.param_counts(state['params'])
  record = dict(
      model=name, recipe=MODELS[name][0],
      variant=config.model.get('variant') or 'tiny',
      resolution=setup['resolution'], tiny=bool(args.tiny),
      framework='jax', jax=jax.__version__, backend=jax.default_backend(),
      device_kind=jax.devices()[0].device_kind, devices=devices,
      mesh=dict(mesh.shape), batch_per_device=args.batch,
      global_batch=global_batch, compute_dtype='bfloat16',
      param_dtype=str(jax.tree.leaves(state['params'])[0].dtype),
      optimizer=config.optimizer.name, params=params, loss=loss,
      compile_s=compile_s, step_s=step_s,
      step_s_all=[round(t, 6) for t in times],
      images_per_s=global_batch / step_s,
      peak_memory_bytes=peak_memory_bytes(),
      xla_memory_bytes=_xla_memory(compiled),
      model_flops_per_step=model_flops, xla_flops_per_step=xla_flops,
      measured_peak_flops=measured_peak, vendor_peak_flops=vendor_peak,
      mfu_measured=compute.mfu(model_flops, step_s, devices, measured_peak),
      mfu_vendor=compute.mfu(model_flops, step_s, devices, vendor_peak))
  del state, batch, compiled
  return record


def layers_compile_ratio(args, depths: Sequence[int]) -> Dict[str, Any]:
  """Compile seconds of the ViT recipe's train step (scan=True, or False
  with --ratio_no_scan) at each depth of `depths`, sized by
  --ratio_variant; lowered from shapes alone (nothing is allocated or
  run)."""
  seconds = {}
  scan = not args.ratio_no_scan
  for depth in depths:
    overrides = dict(variant=args.ratio_variant, depth=depth, scan=scan)
    setup = _setup('vit_b16', args, overrides)
    abstract = jax.tree.map(
        lambda leaf, spec: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype,
                                                sharding=spec),
        setup['state_shapes'], setup['state_shardings'])
    images = jax.ShapeDtypeStruct(
        (setup['global_batch'], setup['resolution'], setup['resolution'], 3),
        jnp.float32, sharding=sharding.batch_sharding(setup['mesh']))
    labels = jax.ShapeDtypeStruct(
        (setup['global_batch'], setup['config'].model.num_classes),
        jnp.float32, sharding=sharding.batch_sharding(setup['mesh']))
    rng = jax.ShapeDtypeStruct((2,), jnp.uint32,
                               sharding=sharding.replicated(setup['mesh']))
    lowered = setup['step'].lower(abstract,
                                  {'image': images, 'labels': labels}, rng)
    start = time.perf_counter()
    lowered.compile()
    seconds[depth] = time.perf_counter() - start
  low, high = min(depths), max(depths)
  return dict(mode='layers_compile_ratio', variant=args.ratio_variant,
              scan=scan, resolution=setup['resolution'],
              batch_per_device=args.batch, jax=jax.__version__,
              backend=jax.default_backend(),
              device_kind=jax.devices()[0].device_kind,
              compile_s={str(d): s for d, s in seconds.items()},
              ratio=seconds[high] / seconds[low],
              ratio_of=f'{high} / {low} layers')


# ----------------------------------------------------------------------------
# --compare=timm: the same models in PyTorch.


def _import_torch():
  try:
    import timm  # pylint: disable=g-import-not-at-top
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as error:
    raise RuntimeError(
        f'--compare=timm needs torch and timm, which do not import here '
        f'({error}); install them (pip install torch timm) or leave out '
        f'--compare.') from error
  return torch, timm


def _timm_model(timm, model, resolution: int, family: str):
  """timm's model of the same sizes as the JAX `model`."""
  kwargs = dict(pretrained=False, num_classes=model.num_classes,
                img_size=resolution, patch_size=model.patch_size,
                embed_dim=model.width)
  if family == 'vit':
    pool = {'cls': 'token', 'map': 'map', 'gap': 'avg'}[model.pool_type]
    kwargs.update(depth=model.depth, num_heads=model.num_heads,
                  mlp_ratio=model.mlp_dim / model.width, global_pool=pool,
                  class_token=model.pool_type == 'cls')
  elif family == 'mixer':
    patches = (resolution // model.patch_size) ** 2
    kwargs.update(num_blocks=model.depth,
                  mlp_ratio=(model.tokens_mlp_dim / patches,
                             model.channels_mlp_dim / model.width))
  else:  # swin
    kwargs.update(depths=tuple(model.depths), num_heads=tuple(model.num_heads),
                  window_size=model.window_size, mlp_ratio=model.mlp_ratio)
  return timm.create_model(TIMM_ARCHITECTURES[family], **kwargs)


def measure_timm(name: str, args, measured_peak_jax: float
                 ) -> Dict[str, Any]:
  """One model's record in PyTorch: timm, torch.compile, bf16 autocast,
  the recipe's optimizer (AdamW fused on CUDA, foreach elsewhere)."""
  torch, timm = _import_torch()
  config, resolution = model_config(name, args.tiny)
  if args.resolution:
    resolution = args.resolution
  family = config.model.name
  record = dict(model=name, framework='torch+timm', torch=torch.__version__,
                timm=timm.__version__, resolution=resolution,
                tiny=bool(args.tiny), batch_per_device=args.batch)
  if family not in TIMM_ARCHITECTURES:
    record['skipped'] = (f'no timm training model for family {family!r}; '
                         f'compared: {list(TIMM_ARCHITECTURES)}')
    return record
  cuda = torch.cuda.is_available()
  device = torch.device('cuda' if cuda else 'cpu')
  jax_model = build.build_model(config.model)
  net = _timm_model(timm, jax_model, resolution, family).to(device)
  params = [p for p in net.parameters() if p.requires_grad]
  name_opt = config.optimizer.name
  if name_opt == 'adamw':
    kind = 'fused' if cuda else 'foreach'
    optimizer = torch.optim.AdamW(
        params, lr=config.lr, weight_decay=config.get('wd', 0.0),
        betas=(config.optimizer.get('b1', 0.9),
               config.optimizer.get('b2', 0.999)),
        **{kind: True})
    optimizer_note = (f'AdamW ({kind}), weight decay on every parameter '
                      f'(the recipe: kernels only)' + (
                          '' if cuda else '; fused AdamW is CUDA-only, '
                          'foreach on CPU'))
  elif name_opt == 'adafactor' and hasattr(torch.optim, 'Adafactor'):
    optimizer = torch.optim.Adafactor(params, lr=config.lr,
                                      weight_decay=config.get('wd', 0.0))
    optimizer_note = ('torch.optim.Adafactor (no momentum: not the '
                      'recipe\'s momentum 0.9)')
  else:
    raise RuntimeError(f'--compare=timm: optimizer {name_opt!r} of {name} '
                       f'has no PyTorch counterpart here; compared: adamw, '
                       f'adafactor (torch >= 2.5).')
  compiled = torch.compile(net)
  global_batch = args.batch  # one device
  images = torch.rand(global_batch, 3, resolution, resolution,
                      device=device) * 2 - 1
  labels = torch.randint(0, jax_model.num_classes, (global_batch,),
                         device=device)
  sigmoid = config.get('loss', 'softmax_xent') == 'sigmoid_xent'
  clip = config.get('grad_clip_norm')

  def step():
    with torch.autocast(device.type, dtype=torch.bfloat16):
      logits = compiled(images)
    logits = logits.float()
    if sigmoid:
      target = torch.nn.functional.one_hot(labels, logits.shape[-1]).float()
      loss = torch.nn.functional.binary_cross_entropy_with_logits(
          logits, target, reduction='sum') / global_batch
    else:
      loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    if clip:
      torch.nn.utils.clip_grad_norm_(params, clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss

  def sync():
    if cuda:
      torch.cuda.synchronize()

  if cuda:
    torch.cuda.reset_peak_memory_stats()
  start = time.perf_counter()
  step()  # torch.compile compiles on the first call
  sync()
  compile_s = time.perf_counter() - start
  for _ in range(args.warmup):
    step()
  sync()
  times = []
  for _ in range(args.steps):
    start = time.perf_counter()
    loss = step()
    sync()
    times.append(time.perf_counter() - start)
  step_s = statistics.median(times)
  forward = counts.forward_flops(jax_model, resolution)
  model_flops = 3.0 * forward * global_batch
  vendor = compute.peak_flops(torch.cuda.get_device_name() if cuda else 'cpu')
  record.update(
      device_kind=torch.cuda.get_device_name() if cuda else 'cpu',
      devices=1, global_batch=global_batch, compute_dtype='bfloat16 autocast',
      param_dtype='float32', optimizer=optimizer_note,
      params=sum(p.numel() for p in params), loss=float(loss),
      compile_s_first_step=compile_s, step_s=step_s,
      step_s_all=[round(t, 6) for t in times],
      images_per_s=global_batch / step_s,
      peak_memory_bytes=(int(torch.cuda.max_memory_allocated()) if cuda
                         else None),
      model_flops_per_step=model_flops,
      measured_peak_flops=measured_peak_jax, vendor_peak_flops=vendor,
      mfu_measured=compute.mfu(model_flops, step_s, 1, measured_peak_jax),
      mfu_vendor=compute.mfu(model_flops, step_s, 1, vendor))
  return record


# ----------------------------------------------------------------------------


def _fmt(value, scale=1.0, digits=1):
  return '-' if value is None else f'{value / scale:.{digits}f}'


def _num(value, scale=1.0):
  """About 3 significant digits, no exponent: 13,480 / 2.71 / 0.0214."""
  if value is None:
    return '-'
  value /= scale
  if abs(value) >= 100:
    return f'{value:,.0f}'
  if abs(value) >= 1:
    return f'{value:.2f}'
  return f'{value:.3g}'


def table_header() -> str:
  return ('| model | framework | device | batch/dev | compile s | step ms | '
          'img/s | memory GiB | model GFLOP/step | MFU (measured / vendor '
          'peak) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- '
          '| --- |')


def table_row(record: Dict[str, Any]) -> str:
  if 'skipped' in record:
    return (f'| {record["model"]} | {record["framework"]} | - | - | - | - | '
            f'- | - | - | {record["skipped"]} |')
  memory = record.get('peak_memory_bytes') or record.get('xla_memory_bytes')
  compile_s = record.get('compile_s', record.get('compile_s_first_step'))
  mfu = ' / '.join('-' if record[key] is None
                   else f'{_num(record[key], 0.01)}%'
                   for key in ('mfu_measured', 'mfu_vendor'))
  return (f'| {record["model"]} | {record["framework"]} | '
          f'{record["device_kind"]} x{record["devices"]} | '
          f'{record["batch_per_device"]} | {_fmt(compile_s)} | '
          f'{_fmt(record["step_s"], 1e-3)} | '
          f'{_num(record["images_per_s"])} | {_num(memory, 2 ** 30)} | '
          f'{_num(record["model_flops_per_step"], 1e9)} | {mfu} |')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--models', default=','.join(DEFAULT_MODELS),
                      help=f'comma-separated, of {list(MODELS)}')
  parser.add_argument('--batch', type=int, default=32,
                      help='images per device per step')
  parser.add_argument('--steps', type=int, default=10)
  parser.add_argument('--warmup', type=int, default=2)
  parser.add_argument('--resolution', type=int, default=None,
                      help='default 224 (32 with --tiny)')
  parser.add_argument('--fsdp', type=int, default=None,
                      help='fsdp mesh axis size (-1: all devices); default '
                           'per model: all devices for vit_g14, else 1')
  parser.add_argument('--tiny', action='store_true',
                      help='toy sizes of every family at 32 px')
  parser.add_argument('--peak_size', type=int, default=None,
                      help='side of the bf16 matmul measuring the peak '
                           '(default 8192, 1024 on CPU)')
  parser.add_argument('--compare', default=None,
                      help=f'also run another framework: one of {COMPARES}')
  parser.add_argument('--layers_compile_ratio', action='store_true',
                      help='only compare compile times over --ratio_depths')
  parser.add_argument('--ratio_variant', default='B/16')
  parser.add_argument('--ratio_depths', default='12,48')
  parser.add_argument('--ratio_no_scan', action='store_true',
                      help='the same without scan, for contrast')
  args = parser.parse_args(argv)
  if args.compare is not None and args.compare not in COMPARES:
    raise ValueError(f'Unknown --compare={args.compare!r}; valid: '
                     f'{list(COMPARES)}')
  for flag in ('batch', 'steps'):
    if getattr(args, flag) < 1:
      raise ValueError(f'--{flag} must be >= 1, got {getattr(args, flag)}.')
  if args.warmup < 0:
    raise ValueError(f'--warmup must be >= 0, got {args.warmup}.')
  return args


def main(argv: Optional[Sequence[str]] = None, out=None) -> List[Dict]:
  """Runs the benchmark; prints JSON lines and the table to `out`
  (default stdout) and returns the records."""
  out = out or sys.stdout
  args = parse_args(argv)
  if args.layers_compile_ratio:
    depths = [int(d) for d in args.ratio_depths.split(',')]
    record = layers_compile_ratio(args, depths)
    print(json.dumps(record), file=out, flush=True)
    return [record]
  names = parse_models(args.models)
  if args.compare == 'timm':
    _import_torch()  # fail before the JAX runs, not after
    # JAX would take 75% of a GPU's memory at its first use, leaving
    # PyTorch too little; it must be said before JAX starts its backend.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  peak_size = args.peak_size or default_peak_size()
  measured_peak = measure_peak_flops(peak_size)
  vendor_peak = compute.peak_flops(jax.devices()[0].device_kind)
  print(json.dumps(dict(peak_matmul_size=peak_size,
                        measured_peak_flops=measured_peak,
                        vendor_peak_flops=vendor_peak,
                        measured_over_vendor=(measured_peak / vendor_peak
                                              if vendor_peak else None),
                        device_kind=jax.devices()[0].device_kind,
                        jax=jax.__version__)), file=out, flush=True)
  records = []
  for name in names:
    record = measure_model(name, args, measured_peak, vendor_peak)
    print(json.dumps(record), file=out, flush=True)
    records.append(record)
    if args.compare == 'timm':
      record = measure_timm(name, args, measured_peak)
      print(json.dumps(record), file=out, flush=True)
      records.append(record)
  print(table_header(), file=out)
  for record in records:
    print(table_row(record), file=out)
  return records


if __name__ == '__main__':
  main()
