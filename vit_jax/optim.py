"""Optimizers, learning-rate schedules and per-parameter multipliers.

`make_optimizer(config, total_steps)` builds one optax chain, applied in this
order to the gradients:

  1. clip to a global norm        (`config.grad_clip_norm`; None or 0: off)
  2. direction                    (`config.optimizer.name`: adamw, adafactor,
                                   sgd; no learning rate yet)
  3. + wd * wd_mult * param       (decoupled weight decay, Loshchilov & Hutter
                                   2019; `config.wd`, `config.wd_mults`)
  4. * -schedule(step)            (`make_schedule`: peak `config.lr` included)
  5. * lr_mult                    (`config.lr_mults`; 0 freezes a parameter)

so the update of a parameter p is

  update = -lr_t * lr_mult(p) * (direction + wd * wd_mult(p) * p).

The weight decay is scaled by the learning rate, as in AdamW and
`optax.adamw`: with lr multipliers of 1 the 'adamw' chain equals
`optax.adamw` masked to the parameters with wd_mult 1, and the 'sgd' chain
with `config.wd=0` equals `optax.sgd`, step for step.

Multipliers are chosen by regular-expression rules over '/'-joined parameter
paths ('encoder/blocks/mlp/fc1/kernel', 'head/kernel'), see
`multiplier_tree`. The rules are matched when the optimizer is traced, from
the parameter tree's structure alone, so the optimizer holds no Python-side
state and runs under `jax.jit` with sharded parameters.

Config fields read (defaults where absent):
  lr              1e-3
  schedule        warmup_steps=0, decay='cosine', timescale=10_000,
                  cooldown_steps=0, cooldown_shape='linear',
                  end_lr_fraction=0.0, boundaries=(), step_factor=0.1
  optimizer       name='adamw' plus the options of that optimizer, see
                  OPTIMIZER_OPTIONS (a plain string is taken as the name)
  wd              0.0
  wd_mults        DEFAULT_WD_MULTS: kernels only
  lr_mults        ()  (everything 1.0)
  grad_clip_norm  None
"""

import logging
import math
import numbers
import re
from typing import (Any, Callable, Dict, List, Mapping, NamedTuple, Optional,
                    Sequence, Tuple)

import jax
import jax.numpy as jnp
import ml_collections
import optax

from vit_jax.models import common

Schedule = Callable[[Any], jax.Array]
Rules = Sequence[Tuple[str, float]]

DEFAULT_LR = 1e-3

DECAYS = ('cosine', 'linear', 'rsqrt', 'constant', 'steps')
SCHEDULE_DEFAULTS: Mapping[str, Any] = {
    'warmup_steps': 0,
    'decay': 'cosine',
    'timescale': 10_000,
    'cooldown_steps': 0,
    'cooldown_shape': 'linear',
    'end_lr_fraction': 0.0,
    # 'steps': the lr is multiplied by step_factor at each boundary, a
    # fraction of the decay phase (TimeSformer: x0.1 at epochs 11 and 14
    # of 15, boundaries (11/15, 14/15)).
    'boundaries': (),
    'step_factor': 0.1,
}
# How the cooldown goes to zero over its c steps (q = (T - s) / c, from 1
# to 0): 'linear' q; '1-sqrt' 1 - sqrt(1 - q) (Hagele et al. 2024, "Scaling
# Laws and Compute-Optimal Training Beyond Fixed Training Durations").
COOLDOWN_SHAPES = ('linear', '1-sqrt')
# Decays whose value at a step does not depend on total_steps: a run with
# one of them (and its cooldown not started) can be branched into shorter
# runs with their own cooldowns (config.branch, vit_jax/train.py).
LENGTH_FREE_DECAYS = ('constant', 'rsqrt')

OPTIMIZERS = ('adamw', 'adafactor', 'sgd')
# The options each optimizer reads from `config.optimizer`, with defaults.
OPTIMIZER_OPTIONS: Mapping[str, Mapping[str, Any]] = {
    # Kingma & Ba 2015; `mu_dtype` stores the first moment in e.g. bfloat16.
    'adamw': {'b1': 0.9, 'b2': 0.999, 'eps': 1e-8, 'mu_dtype': None},
    # Heavy-ball momentum (optax.trace: m = g + momentum * m).
    'sgd': {'momentum': 0.9, 'nesterov': False},
    # Adafactor as modified in "Scaling Vision Transformers" (Zhai et al.
    # 2021, Sec. 3.4); see `scale_by_adafactor`.
    'adafactor': {
        'momentum': 0.9,
        'momentum_dtype': 'bfloat16',
        'decay_rate': 0.8,
        'beta2_cap': 0.999,
        'min_dim_size_to_factor': 32,
        'eps': 1e-30,
    },
}

# Weight decay on kernels (dense, convolution, attention projections) only:
# biases, LayerNorm scales and biases, position embeddings, class tokens and
# MAP probes match no rule and get 0, the usual AdamW practice.
DEFAULT_WD_MULTS: Rules = (('(.*/)?kernel$', 1.0),)


# ----------------------------------------------------------------------------
# Config reading.


def _get(config: Any, key: str, default: Any) -> Any:
  if config is None:
    return default
  value = config.get(key, default)
  return default if value is None and default is not None else value


def _section_options(section: Any, defaults: Mapping[str, Any], where: str,
                     extra_keys: Sequence[str] = ()) -> Dict[str, Any]:
  """`defaults` updated by the fields of `section`; unknown fields raise."""
  if section is None:
    given = {}
  elif isinstance(section, ml_collections.ConfigDict):
    given = section.to_dict()
  elif isinstance(section, Mapping):
    given = dict(section)
  else:
    raise ValueError(f'{where} must be a ConfigDict or a dict, got '
                     f'{section!r}.')
  unknown = sorted(set(given) - set(defaults) - set(extra_keys))
  if unknown:
    raise ValueError(f'Unknown field(s) {unknown} in {where}; valid fields: '
                     f'{sorted(set(defaults) | set(extra_keys))}')
  options = dict(defaults)
  options.update({k: v for k, v in given.items() if k not in extra_keys})
  return options


def _as_step_count(name: str, value: Any) -> int:
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or value != int(value) or value < 0):
    raise ValueError(f'{name} must be a non-negative integer, got {value!r}.')
  return int(value)


def _as_non_negative(name: str, value: Any) -> float:
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not math.isfinite(value) or value < 0):
    raise ValueError(f'{name} must be a finite number >= 0, got {value!r}.')
  return float(value)


# ----------------------------------------------------------------------------
# Learning-rate schedule.


def make_schedule(config: ml_collections.ConfigDict,
                  total_steps: int) -> Schedule:
  """The learning rate at each step: warmup, decay, then cooldown.

  With peak lr = `config.lr`, w = `warmup_steps`, c = `cooldown_steps`,
  T = `total_steps`, f = `end_lr_fraction`, s = the step (the number of
  updates applied before this one, from 0):

    lr(s) = lr * warmup(s) * decay(s) * cooldown(s)

    warmup(s)   = s / w                     for s < w (linear from 0),
                  1                         for s >= w (or w = 0);
    decay(s), with p = clip((s - w) / (T - w), 0, 1) and d = max(s - w, 0):
      'constant': 1
      'cosine':   f + (1 - f) * (1 + cos(pi * p)) / 2
      'linear':   f + (1 - f) * (1 - p)
      'rsqrt':    1 / sqrt(1 + d / timescale)
                  (= sqrt(timescale / (timescale + d)), 1 at the end of
                  warmup; the inverse-square-root decay of Zhai et al. 2021,
                  Sec. 3.5, there with a linear cooldown)
      'steps':    step_factor ** (number of `boundaries` b with p >= b)
                  (piecewise constant, as SlowFast's / TimeSformer's
                  'steps_with_relative_lrs')
    cooldown(s), with q = clip((T - s) / c, 0, 1), for c > 0 (else 1):
      'linear':   q               (1 at s = T - c, 1/c at T - 1, 0 at T)
      '1-sqrt':   1 - sqrt(1 - q) (the cooldown of Hagele et al. 2024)

  During warmup decay(s) is 1, so the schedule is continuous at s = w.
  Steps past T get 0 when c > 0 (else the end value f of the decay).

  Args:
    config: reads `config.lr` and `config.schedule` (see the module doc).
    total_steps: T, the number of training steps.

  Returns:
    A jax-traceable function: step (int or int array) -> float32 lr.
  """
  peak_lr = _as_non_negative('config.lr', _get(config, 'lr', DEFAULT_LR))
  options = _section_options(_get(config, 'schedule', None),
                             SCHEDULE_DEFAULTS, 'config.schedule')
  decay = options['decay']
  common.check_choice('schedule decay', decay, DECAYS)
  total_steps = _as_step_count('total_steps', total_steps)
  if total_steps < 1:
    raise ValueError(f'total_steps must be >= 1, got {total_steps}.')
  warmup_steps = _as_step_count('config.schedule.warmup_steps',
                                options['warmup_steps'])
  cooldown_steps = _as_step_count('config.schedule.cooldown_steps',
                                  options['cooldown_steps'])
  if warmup_steps + cooldown_steps > total_steps:
    raise ValueError(
        f'warmup_steps ({warmup_steps}) + cooldown_steps ({cooldown_steps}) '
        f'= {warmup_steps + cooldown_steps} exceeds total_steps '
        f'({total_steps}).')
  cooldown_shape = options['cooldown_shape']
  common.check_choice('schedule cooldown_shape', cooldown_shape,
                      COOLDOWN_SHAPES)
  end_fraction = _as_non_negative('config.schedule.end_lr_fraction',
                                  options['end_lr_fraction'])
  timescale = _as_non_negative('config.schedule.timescale',
                               options['timescale'])
  if decay == 'rsqrt' and timescale == 0:
    raise ValueError('config.schedule.timescale must be > 0 for the rsqrt '
                     'decay, got 0.')
  decay_steps = max(total_steps - warmup_steps, 1)
  boundaries = _boundaries(options['boundaries'], decay)
  step_factor = _as_non_negative('config.schedule.step_factor',
                                 options['step_factor'])

  def schedule(step) -> jax.Array:
    step = jnp.asarray(step).astype(jnp.float32)
    since_warmup = jnp.maximum(step - warmup_steps, 0.0)
    progress = jnp.clip(since_warmup / decay_steps, 0.0, 1.0)
    if decay == 'constant':
      factor = jnp.ones_like(step)
    elif decay == 'cosine':
      factor = end_fraction + (1.0 - end_fraction) * 0.5 * (
          1.0 + jnp.cos(jnp.pi * progress))
    elif decay == 'linear':
      factor = end_fraction + (1.0 - end_fraction) * (1.0 - progress)
    elif decay == 'steps':
      passed = sum((progress >= b).astype(jnp.float32) for b in boundaries)
      factor = jnp.power(jnp.float32(step_factor), passed)
    else:  # 'rsqrt'
      factor = 1.0 / jnp.sqrt(1.0 + since_warmup / timescale)
    if warmup_steps > 0:
      factor = jnp.where(step < warmup_steps,
                         jnp.maximum(step, 0.0) / warmup_steps, factor)
    if cooldown_steps > 0:
      remaining = jnp.clip((total_steps - step) / cooldown_steps, 0.0, 1.0)
      if cooldown_shape == '1-sqrt':
        remaining = 1.0 - jnp.sqrt(1.0 - remaining)
      factor = factor * remaining
    return (peak_lr * factor).astype(jnp.float32)

  return schedule


def _boundaries(value: Any, decay: str) -> Tuple[float, ...]:
  """The 'steps' decay's boundaries: increasing fractions in (0, 1)."""
  if (not isinstance(value, (list, tuple)) or
      not all(isinstance(b, numbers.Real) and not isinstance(b, bool)
              for b in value)):
    raise ValueError(f'config.schedule.boundaries must be a tuple of '
                     f'fractions of the decay phase, got {value!r}.')
  value = tuple(float(b) for b in value)
  if any(not 0 < b < 1 for b in value) or list(value) != sorted(set(value)):
    raise ValueError(f'config.schedule.boundaries must increase strictly '
                     f'within (0, 1), got {value!r}.')
  if decay == 'steps' and not value:
    raise ValueError("schedule decay 'steps' needs config.schedule."
                     'boundaries, e.g. (11 / 15, 14 / 15).')
  if decay != 'steps' and value:
    raise ValueError(f'config.schedule.boundaries {value!r} go with decay '
                     f"'steps'; decay is {decay!r}.")
  return value


# ----------------------------------------------------------------------------
# Per-parameter multipliers.


def _key_name(key: Any) -> str:
  if isinstance(key, jax.tree_util.DictKey):
    return str(key.key)
  if isinstance(key, jax.tree_util.GetAttrKey):
    return key.name
  if isinstance(key, jax.tree_util.SequenceKey):
    return str(key.idx)
  if isinstance(key, jax.tree_util.FlattenedIndexKey):
    return str(key.key)
  return str(key)


def param_paths(params: Any) -> Any:
  """The '/'-joined path of each leaf, e.g. 'encoder/blocks/attn/query/kernel'.

  Pass the parameters themselves, not the `{'params': ...}` variables dict.
  """
  return jax.tree_util.tree_map_with_path(
      lambda path, _: '/'.join(_key_name(key) for key in path), params)


def _compile_rules(rules: Optional[Rules],
                   what: str) -> List[Tuple[re.Pattern, float]]:
  """Checks (regex, multiplier) rules and compiles their regexes."""
  if rules is None:
    return []
  if not isinstance(rules, (tuple, list)):
    raise ValueError(f'{what} must be a sequence of (regex, multiplier) '
                     f'pairs, got {rules!r}.')
  compiled = []
  for rule in rules:
    if (not isinstance(rule, (tuple, list)) or len(rule) != 2
        or not isinstance(rule[0], str) or isinstance(rule[1], bool)
        or not isinstance(rule[1], numbers.Real)):
      raise ValueError(f'{what} rule {rule!r} is not a (regex, float) pair, '
                       f'e.g. ("head/kernel", 3.0).')
    pattern, multiplier = rule
    try:
      regex = re.compile(pattern)
    except re.error as error:
      raise ValueError(f'{what} rule {tuple(rule)!r} has a bad regex '
                       f'{pattern!r}: {error}.') from None
    if not math.isfinite(multiplier) or multiplier < 0:
      raise ValueError(f'{what} rule {tuple(rule)!r}: the multiplier must be '
                       f'a finite number >= 0, got {multiplier!r}.')
    compiled.append((regex, float(multiplier)))
  return compiled


def _first_match(path: str, compiled: List[Tuple[re.Pattern, float]],
                 default: float) -> float:
  for regex, multiplier in compiled:
    if regex.match(path):
      return multiplier
  return default


def multiplier_tree(params: Any, rules: Optional[Rules], default: float,
                    what: str = 'multiplier') -> Any:
  """A tree like `params` holding each parameter's multiplier (a float).

  Each rule is (regex, multiplier); the regex is matched with `re.match`
  against the parameter's '/'-joined path (so it is anchored at the start,
  not at the end: add '$' to anchor it there). The FIRST matching rule
  wins; a parameter matching no rule gets `default`.

  Example (Zhai et al. 2021, Sec. 3.1: a much stronger weight decay on the
  head than on the body): rules (('head/kernel', 3.0), ('.*/kernel', 0.03))
  give 'head/kernel' 3.0, 'encoder/blocks/mlp/fc1/kernel' 0.03 and
  'head/bias' `default`.

  Args:
    params: the parameter tree.
    rules: sequence of (regex, float) pairs, or None for no rules.
    default: the multiplier of parameters matching no rule.
    what: names the rules in error messages ('config.wd_mults').

  Raises:
    ValueError: naming the rule, for a bad regex, a rule that is not a
      (regex, float) pair, or a negative / non-finite multiplier.
  """
  compiled = _compile_rules(rules, what)
  return jax.tree.map(lambda path: _first_match(path, compiled, default),
                      param_paths(params))


def _log_unmatched_rules(params: Any, rules: Optional[Rules],
                         what: str) -> None:
  """Warns about rules that match no parameter: most often a typo."""
  paths = jax.tree.leaves(param_paths(params))
  for regex, _ in _compile_rules(rules, what):
    if not any(regex.match(path) for path in paths):
      logging.warning('%s rule %r matches none of the %d parameters (e.g. '
                      '%s).', what, regex.pattern, len(paths), paths[:5])


def add_decayed_weights_by_path(
    weight_decay: float, rules: Optional[Rules], default: float = 0.0,
    what: str = 'config.wd_mults') -> optax.GradientTransformation:
  """updates + weight_decay * multiplier(path) * params (decoupled decay)."""
  _compile_rules(rules, what)  # Bad rules fail here, not at the first step.

  def init_fn(params):
    _log_unmatched_rules(params, rules, what)
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    if params is None:
      raise ValueError('Weight decay needs the parameters: call '
                       'optimizer.update(grads, state, params).')
    multipliers = multiplier_tree(params, rules, default, what)

    def decay(update, param, multiplier):
      rate = weight_decay * multiplier
      if rate == 0.0:
        return update
      return update + rate * param

    return jax.tree.map(decay, updates, params, multipliers), state

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_path(rules: Optional[Rules], default: float = 1.0,
                  what: str = 'config.lr_mults'
                  ) -> optax.GradientTransformation:
  """updates * multiplier(path); a multiplier of 0 gives exact zeros."""
  _compile_rules(rules, what)

  def init_fn(params):
    _log_unmatched_rules(params, rules, what)
    return optax.EmptyState()

  def update_fn(updates, state, params=None):
    multipliers = multiplier_tree(updates, rules, default, what)

    def scale(update, multiplier):
      if multiplier == 1.0:
        return update
      if multiplier == 0.0:  # Frozen: no step, not even from a NaN.
        return jnp.zeros_like(update)
      return update * jnp.asarray(multiplier, update.dtype)

    return jax.tree.map(scale, updates, multipliers), state

  return optax.GradientTransformation(init_fn, update_fn)


# ----------------------------------------------------------------------------
# Adafactor as modified in Scaling ViT.


def adafactor_second_moment_decay(step, exponent: float = 0.8,
                                  cap: float = 0.999) -> jax.Array:
  """beta2 at update t = step + 1: min(cap, 1 - t^-exponent).

  Adafactor's increasing decay 1 - t^-0.8 (Shazeer & Stern 2018, Sec. 7),
  capped at 0.999 so the second moment keeps adapting late in training
  (Zhai et al. 2021, Sec. 3.4).
  """
  t = jnp.asarray(step, jnp.float32) + 1.0
  return jnp.minimum(cap, 1.0 - t ** (-exponent))


class MomentumState(NamedTuple):
  """The first momentum, a tree like the parameters in its storage dtype."""
  momentum: Any


def scale_by_stored_momentum(decay: float, storage_dtype: Any = None
                             ) -> optax.GradientTransformation:
  """m = decay * m + (1 - decay) * u, kept in `storage_dtype` between steps.

  The arithmetic is done in float32 (or the update's wider dtype) and only
  the stored state is rounded to `storage_dtype`; the returned direction is
  the unrounded m. (optax.ema with a bfloat16 accumulator instead multiplies
  in bfloat16, where 0.9 becomes 0.8984375, and rounds differently under
  jit than eagerly.) No bias correction, as in Adafactor.
  """
  def init_fn(params):
    return MomentumState(momentum=jax.tree.map(
        lambda p: jnp.zeros_like(p, dtype=storage_dtype or p.dtype), params))

  def update_fn(updates, state, params=None):
    del params

    def average(update, stored):
      dtype = jnp.promote_types(update.dtype, jnp.float32)
      return (decay * stored.astype(dtype) +
              (1.0 - decay) * update.astype(dtype))

    averaged = jax.tree.map(average, updates, state.momentum)
    stored = jax.tree.map(lambda new, old: new.astype(old.dtype), averaged,
                          state.momentum)
    return averaged, MomentumState(momentum=stored)

  return optax.GradientTransformation(init_fn, update_fn)


def scale_by_adafactor(momentum: Optional[float] = 0.9,
                       momentum_dtype: Any = jnp.bfloat16,
                       decay_rate: float = 0.8,
                       beta2_cap: float = 0.999,
                       min_dim_size_to_factor: int = 32,
                       eps: float = 1e-30) -> optax.GradientTransformation:
  """The Adafactor direction as modified in "Scaling Vision Transformers".

  Zhai et al. 2021, Sec. 3.4 ("Memory-efficient optimizers"):
    - second moment factored into row and column statistics (Shazeer & Stern
      2018, Sec. 3) for parameters with two dimensions >= 32 (the two largest
      dimensions of the array); a full second moment otherwise;
    - its decay beta2_t = min(0.999, 1 - t^-0.8), see
      `adafactor_second_moment_decay`;
    - the first momentum re-introduced, beta1 = 0.9, stored in bfloat16;
      as Adam's and Adafactor's optional beta1 it is an average
      m = beta1 * m + (1 - beta1) * u, here without bias correction
      (`scale_by_stored_momentum`);
    - no update clipping and no scaling of the step by the parameter scale
      (both parts of the original Adafactor are left out);
    - weight decay decoupled, added after this direction by the caller.

  Args:
    momentum: beta1; None or 0 for no momentum.
    momentum_dtype: dtype of the stored momentum (None: the parameter's).
    decay_rate: the exponent 0.8 of the beta2 schedule.
    beta2_cap: the cap 0.999 of the beta2 schedule.
    min_dim_size_to_factor: 32 in Scaling ViT.
    eps: added to the squared gradient (epsilon_1 of Adafactor).
  """
  def second_moment_decay(step, exponent):
    return adafactor_second_moment_decay(step, exponent, beta2_cap)

  parts = [optax.scale_by_factored_rms(
      factored=True, decay_rate=decay_rate,
      min_dim_size_to_factor=min_dim_size_to_factor, epsilon=eps,
      decay_rate_fn=second_moment_decay)]
  if momentum:
    parts.append(scale_by_stored_momentum(momentum, momentum_dtype))
  return optax.chain(*parts)


# ----------------------------------------------------------------------------
# The optimizer.


def _dtype_or_none(name: str, value: Any) -> Any:
  if value is None:
    return None
  try:
    return jnp.dtype(value)
  except TypeError:
    raise ValueError(f'{name} {value!r} is not a dtype; use e.g. '
                     f'"bfloat16" or "float32".') from None


def _direction(optimizer_config: Any) -> optax.GradientTransformation:
  """The update direction of the configured optimizer, before any lr."""
  if isinstance(optimizer_config, str):
    optimizer_config = {'name': optimizer_config}
  name = _get(optimizer_config, 'name', 'adamw')
  common.check_choice('optimizer name', name, OPTIMIZERS)
  options = _section_options(optimizer_config, OPTIMIZER_OPTIONS[name],
                             f'config.optimizer (name={name!r})',
                             extra_keys=('name',))
  if name == 'adamw':
    return optax.scale_by_adam(
        b1=options['b1'], b2=options['b2'], eps=options['eps'],
        mu_dtype=_dtype_or_none('config.optimizer.mu_dtype',
                                options['mu_dtype']))
  if name == 'sgd':
    if not options['momentum']:
      return optax.identity()
    return optax.trace(decay=options['momentum'],
                       nesterov=bool(options['nesterov']))
  # 'adafactor'
  return scale_by_adafactor(
      momentum=options['momentum'],
      momentum_dtype=_dtype_or_none('config.optimizer.momentum_dtype',
                                    options['momentum_dtype']),
      decay_rate=options['decay_rate'],
      beta2_cap=options['beta2_cap'],
      min_dim_size_to_factor=options['min_dim_size_to_factor'],
      eps=options['eps'])


def make_optimizer(config: ml_collections.ConfigDict, total_steps: int
                   ) -> Tuple[optax.GradientTransformation, Schedule]:
  """The optimizer of `config` and its learning-rate schedule.

  The chain (module doc): clip -> direction -> + wd * wd_mult * param
  -> * -schedule(step) -> * lr_mult. The schedule's step is the number of
  updates applied before (0 at the first update). Call
  `tx.update(grads, state, params)`: weight decay needs the parameters.

  Returns:
    (tx, schedule): an optax.GradientTransformation and the schedule
    (step -> float32 lr, including `config.lr`), e.g. for logging train/lr.
  """
  schedule = make_schedule(config, total_steps)
  direction = _direction(_get(config, 'optimizer', None))
  weight_decay = _as_non_negative('config.wd', _get(config, 'wd', 0.0))
  wd_mults = _get(config, 'wd_mults', DEFAULT_WD_MULTS)
  lr_mults = _get(config, 'lr_mults', ())
  clip_norm = _get(config, 'grad_clip_norm', None)

  parts = []
  if clip_norm:
    parts.append(optax.clip_by_global_norm(
        _as_non_negative('config.grad_clip_norm', clip_norm)))
  parts.append(direction)
  if weight_decay:
    parts.append(add_decayed_weights_by_path(weight_decay, wd_mults,
                                             default=0.0))
  else:
    _compile_rules(wd_mults, 'config.wd_mults')  # Still reject bad rules.
  parts.append(optax.scale_by_schedule(lambda step: -schedule(step)))
  if lr_mults:
    parts.append(scale_by_path(lr_mults, default=1.0))
  else:
    _compile_rules(lr_mults, 'config.lr_mults')
  return optax.chain(*parts), schedule
