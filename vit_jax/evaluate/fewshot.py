"""Few-shot linear evaluation of frozen representations: the numerical core.

The protocol of "An Image is Worth 16x16 Words" (Dosovitskiy et al. 2021,
Sec. 4.1, "Metrics"), also used by "Scaling Vision Transformers" (Zhai et
al. 2021): take k examples per class from a dataset's train split, fit a
regularised least-squares map from their frozen representations to one-hot
targets mapped to {-1, +1}, and report top-1 accuracy on the test split,
averaged over several random k-shot samples. A closed-form solve makes this
cheap enough to run during training.

The solve. Train features x [n, d] are mapped to X [n, d+1] by one of two
protocols (`protocol`, PROTOCOLS):

  'standardized' (the default): the protocol of big_vision's few-shot
      linear evaluator (google-research/big_vision,
      big_vision/evaluators/fewshot_lsr.py). Every feature dimension j is
      standardised with the mean m_j and population standard deviation s_j
      of the k-shot train features, X_ij = (x_ij - m_j) / (s_j +
      STD_EPSILON), and the constant BIAS_FEATURE = 100 is appended as the
      bias feature. The epsilon keeps constant dimensions finite (they
      become 0). Held-out and test features are mapped with the same train
      statistics (`FeatureMap`), so the accuracy does not depend on the
      offset of the representation, nor on its scale while the standard
      deviations are large next to the epsilon: one strength suits
      representations of any scale. A bias weight b on the feature 100
      costs lam * b^2 = (lam / 100^2) * (100 b)^2: the bias's penalty is
      10^4 times weaker than the other weights', almost unregularised.
  'raw': features as given, neither centred nor scaled, and a constant-1
      bias column, regularised like every other weight. The scale of lam is
      then the scale of the caller's squared features: multiplying the
      representation by a acts like dividing lam by a^2.

With targets Y = 2 * onehot - 1 [n, C] and a strength l2_reg = lam >= 0,
the weights W [d+1, C] minimise

    |X W - Y|^2 + lam * |W|^2,

so W = (X^T X + lam I)^-1 X^T Y = X^T (X X^T + lam I)^-1 Y: scikit-learn's
`Ridge(alpha=lam, fit_intercept=False)` on X. A test row x is classified
as argmax_c of (its mapped row) @ W[:, c].

One symmetric eigendecomposition per train set serves every lam:

  primal (n >= d+1):  X^T X = V diag(s) V^T          (d+1 x d+1)
                      W(lam) = V diag(1 / (s + lam)) V^T X^T Y
  dual   (n <  d+1):  X X^T = U diag(s) U^T          (n x n)
                      W(lam) = X^T U diag(1 / (s + lam)) U^T Y

Both are `basis @ (projected_targets / (s + lam))` (see `RidgeEigensystem`),
so after the decomposition a new lam costs one [d+1, r] x [r, C] product.
With lam = 0, directions whose eigenvalue is numerically zero get weight 0:
the minimum-norm least-squares solution, the limit lam -> 0+. The
standardisation belongs to the train sample, like the decomposition: its
statistics are computed once per sample, before the decomposition, and
shared by every lam.

Everything is computed in float64 with NumPy on the host: the Gram matrix of
25,000 ImageNet 25-shot features has a wide spectrum, and float32 (JAX's
default) loses the small eigenvalues that decide the weakly regularised
solutions. The arrays are small next to the representations that the caller
computes once, on accelerators, and reuses across all shots and seeds.
NumPy and SciPy only (SciPy comes with JAX); no TensorFlow.

Functions:
  ridge_fewshot_accuracy  accuracy of one train/test pair, for one lam or many
  select_l2_reg           lam chosen on held-out train examples
  sample_k_shot           exactly k train examples per class, seeded
  fewshot_metrics         all shots x seeds -> `fewshot/<dataset>/<k>shot[_std]`
and the pieces they are built from, for benchmarks and callers that reuse a
decomposition: `fit_eigensystem` (with its `FeatureMap`), `ridge_weights`,
`predict_classes`.
"""

import numbers
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse

DEFAULT_SHOTS = (1, 5, 10, 25)
DEFAULT_SEEDS = (0, 1, 2)
REGIMES = ('primal', 'dual')
PROTOCOLS = ('standardized', 'raw')
DEFAULT_PROTOCOL = 'standardized'
# big_vision's values (evaluators/fewshot_lsr.py): the bias feature of the
# standardized protocol, and the epsilon added to each standard deviation.
BIAS_FEATURE = 100.0
STD_EPSILON = 1e-5
# Test rows converted to float64 and multiplied at a time: bounds the extra
# memory of a prediction to PREDICT_CHUNK x (d + C) float64 numbers.
PREDICT_CHUNK = 4096

L2Reg = Union[float, Sequence[float]]


class FeatureMap(NamedTuple):
  """Features x [m, d] -> the solve's X = [(x - mean) / scale, bias] [m, d+1].

  protocol:     one of PROTOCOLS
  mean:         [d] float64, the train features' mean ('standardized'), or
                None: not centred ('raw')
  scale:        [d] float64, their standard deviation + STD_EPSILON
                ('standardized'), or None: not scaled ('raw')
  bias_feature: the constant last column, BIAS_FEATURE or 1.0 ('raw')
  """
  protocol: str
  mean: Optional[np.ndarray]
  scale: Optional[np.ndarray]
  bias_feature: float

  def apply(self, features) -> np.ndarray:
    """X for features [m, d] (any float dtype): float64 [m, d+1]."""
    features = np.asarray(features)
    mapped = np.empty((features.shape[0], features.shape[1] + 1),
                      dtype=np.float64)  # [m, d+1]
    mapped[:, :-1] = features
    if self.mean is not None:
      mapped[:, :-1] -= self.mean
      mapped[:, :-1] /= self.scale
    mapped[:, -1] = self.bias_feature
    return mapped


class RidgeEigensystem(NamedTuple):
  """What every strength's solve shares: W(lam) = basis @ (targets / (s+lam)).

  basis:             [d+1, r]  V (primal) or X^T U (dual)
  eigenvalues:       [r]       s, of X^T X (primal) or X X^T (dual), >= 0;
                                numerically zero ones are set to exactly 0
  projected_targets: [r, C]    V^T X^T Y (primal) or U^T Y (dual)
  regime:            'primal' (r = d+1) or 'dual' (r = n)
  feature_map:       how features become X, with the train statistics;
                     test features must go through it too (`predict_classes`)
  """
  basis: np.ndarray
  eigenvalues: np.ndarray
  projected_targets: np.ndarray
  regime: str
  feature_map: FeatureMap


# ----------------------------------------------------------------- checks --


def _check_num_classes(num_classes) -> int:
  if (not isinstance(num_classes, numbers.Integral) or
      isinstance(num_classes, bool) or num_classes < 1):
    raise ValueError(f'num_classes must be a positive integer, got '
                     f'{num_classes!r}.')
  return int(num_classes)


def _check_labels(name: str, labels, num_classes: int) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 1:
    raise ValueError(f'{name} must be class ids of shape [n], got shape '
                     f'{labels.shape} (for one-hot labels pass their argmax).')
  if not np.issubdtype(labels.dtype, np.integer):
    raise ValueError(f'{name} must be integer class ids, got dtype '
                     f'{labels.dtype}.')
  if labels.size:
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= num_classes:
      bad = labels[(labels < 0) | (labels >= num_classes)]
      raise ValueError(f'{name} must lie in [0, {num_classes}) for '
                       f'num_classes={num_classes}; got {bad.size} outside, '
                       f'e.g. {sorted(set(bad[:5].tolist()))}.')
  return labels


def _check_features(name: str, features, labels_name: str,
                    labels: np.ndarray) -> np.ndarray:
  features = np.asarray(features)
  if features.ndim != 2:
    raise ValueError(f'{name} must have shape [n, d], got {features.shape}.')
  if features.shape[0] != labels.shape[0]:
    raise ValueError(f'{name} has {features.shape[0]} rows but {labels_name} '
                     f'has {labels.shape[0]} labels; they must match.')
  if features.shape[0] == 0:
    raise ValueError(f'{name} is empty.')
  if not np.issubdtype(features.dtype, np.number):
    raise ValueError(f'{name} must be numeric, got dtype {features.dtype}.')
  num_finite = np.isfinite(features).sum()
  if num_finite != features.size:
    raise ValueError(f'{name} holds {features.size - num_finite} non-finite '
                     f'values (NaN or inf).')
  return features


def _check_l2_regs(l2_reg, name: str = 'l2_reg') -> np.ndarray:
  """A strength or a sequence of them -> float64 [L]; each finite and >= 0."""
  l2_regs = np.atleast_1d(np.asarray(l2_reg, dtype=np.float64))
  if l2_regs.ndim != 1 or l2_regs.size == 0:
    raise ValueError(f'{name} must be a number or a non-empty sequence of '
                     f'numbers, got {l2_reg!r}.')
  bad = [float(v) for v in l2_regs if not (np.isfinite(v) and v >= 0)]
  if bad:
    raise ValueError(f'{name} must be finite and >= 0, got {bad} in '
                     f'{l2_reg!r}.')
  return l2_regs


def _check_protocol(protocol: str) -> str:
  if protocol not in PROTOCOLS:
    raise ValueError(f'Unknown few-shot protocol {protocol!r}; valid '
                     f'choices: {list(PROTOCOLS)}.')
  return protocol


def _check_dataset(dataset: str) -> str:
  if not isinstance(dataset, str) or not dataset or '/' in dataset:
    raise ValueError(f'dataset must be a non-empty name without "/" (it is '
                     f'a metric name part), got {dataset!r}.')
  return dataset


# ------------------------------------------------------------------ solve --


def _map_train_features(features: np.ndarray,
                        protocol: str) -> Tuple[np.ndarray, FeatureMap]:
  """X [n, d+1] float64 for train features, and the map that made it.

  One float64 allocation: the statistics are computed and applied in place.
  """
  num_examples, dim = features.shape
  extended = np.empty((num_examples, dim + 1), dtype=np.float64)  # [n, d+1]
  extended[:, :dim] = features
  if protocol == 'raw':
    feature_map = FeatureMap(protocol, None, None, 1.0)
  else:
    body = extended[:, :dim]
    mean = body.mean(0)  # [d]
    body -= mean
    # Population standard deviation (ddof=0), as big_vision's jnp.std.
    std = np.sqrt(np.einsum('ij,ij->j', body, body) / num_examples)  # [d]
    scale = std + STD_EPSILON
    body /= scale
    feature_map = FeatureMap(protocol, mean, scale, BIAS_FEATURE)
  extended[:, dim] = feature_map.bias_feature
  return extended, feature_map


def fit_eigensystem(features, labels, num_classes: int,
                    protocol: str = DEFAULT_PROTOCOL) -> RidgeEigensystem:
  """The one eigendecomposition behind every strength's solve (see module).

  Args:
    features: [n, d] train representations (any float dtype).
    labels: [n] integer class ids in [0, num_classes).
    num_classes: C, the number of target columns.
    protocol: one of PROTOCOLS, how features become X (see module);
      'standardized' takes its statistics from these features.

  Returns:
    A `RidgeEigensystem`, primal when n >= d+1, dual otherwise: the
    decomposed matrix is the smaller of X^T X and X X^T.
  """
  protocol = _check_protocol(protocol)
  num_classes = _check_num_classes(num_classes)
  labels = _check_labels('labels', labels, num_classes)
  features = _check_features('features', features, 'labels', labels)
  num_examples, dim = features.shape
  extended, feature_map = _map_train_features(features, protocol)

  if num_examples >= dim + 1:
    regime = 'primal'
    gram = extended.T @ extended  # [d+1, d+1]
    eigenvalues, eigenvectors = np.linalg.eigh(gram)
    # X^T Y with Y = 2 * onehot - 1: twice the per-class feature sums minus
    # the sum over all examples; no dense [n, C] target matrix is needed.
    # The sums come from a sparse [C, n] one-hot matrix: O(n d), not the
    # O(n d C) of a dense product.
    one_hot_t = scipy.sparse.csr_matrix(
        (np.ones(num_examples), (labels, np.arange(num_examples))),
        shape=(num_classes, num_examples))
    class_sums = one_hot_t @ extended  # [C, d+1]
    features_t_targets = 2.0 * class_sums.T - extended.sum(0)[:, None]
    projected_targets = eigenvectors.T @ features_t_targets  # [d+1, C]
    basis = eigenvectors  # [d+1, d+1]
  else:
    regime = 'dual'
    kernel = extended @ extended.T  # [n, n]
    eigenvalues, eigenvectors = np.linalg.eigh(kernel)
    targets = np.full((num_examples, num_classes), -1.0)  # [n, C]
    targets[np.arange(num_examples), labels] = 1.0
    projected_targets = eigenvectors.T @ targets  # [n, C]
    basis = extended.T @ eigenvectors  # [d+1, n]

  # A Gram matrix is positive semi-definite: eigenvalues below the rounding
  # level of the largest are zero (their tiny, possibly negative, values are
  # rounding noise), as in the usual pseudo-inverse cut-off.
  cutoff = (max(eigenvalues.max(), 0.0) * max(num_examples, dim + 1) *
            np.finfo(np.float64).eps)
  eigenvalues = np.where(eigenvalues > cutoff, eigenvalues, 0.0)
  return RidgeEigensystem(basis=basis, eigenvalues=eigenvalues,
                          projected_targets=projected_targets, regime=regime,
                          feature_map=feature_map)


def ridge_weights(eigensystem: RidgeEigensystem, l2_reg: float) -> np.ndarray:
  """W(lam) = basis @ diag(1 / (s + lam)) @ projected_targets: [d+1, C].

  W applies to the mapped features X of `eigensystem.feature_map`; its last
  row multiplies the bias feature. Directions with s + lam == 0 (only possible
  for lam == 0) get weight 0: the minimum-norm least-squares solution.
  """
  if np.ndim(l2_reg) != 0:
    raise ValueError(f'ridge_weights takes one strength, got {l2_reg!r}; '
                     f'call it once per strength.')
  l2_reg = float(_check_l2_regs(l2_reg)[0])
  denominators = eigensystem.eigenvalues + l2_reg  # [r]
  safe = np.where(denominators > 0, denominators, 1.0)
  inverse = np.where(denominators > 0, 1.0 / safe, 0.0)  # [r]
  return eigensystem.basis @ (eigensystem.projected_targets *
                              inverse[:, None])  # [d+1, C]


def predict_classes(features, weights: np.ndarray,
                    feature_map: FeatureMap) -> np.ndarray:
  """argmax over classes of feature_map.apply(features) @ weights: [m] ids.

  features [m, d], weights [d+1, C] (last row the bias), feature_map the
  eigensystem's, with the train statistics. Rows are mapped to float64
  PREDICT_CHUNK at a time, so the features are never copied whole.
  """
  features = np.asarray(features)
  if features.ndim != 2 or features.shape[1] + 1 != weights.shape[0]:
    raise ValueError(f'features of shape {features.shape} do not fit weights '
                     f'of shape {weights.shape}: need '
                     f'[m, {weights.shape[0] - 1}].')
  predictions = np.empty(features.shape[0], dtype=np.int64)
  for start in range(0, features.shape[0], PREDICT_CHUNK):
    mapped = feature_map.apply(features[start:start + PREDICT_CHUNK])
    scores = mapped @ weights  # [chunk, C]
    predictions[start:start + PREDICT_CHUNK] = scores.argmax(-1)
  return predictions


def _check_train_test(x_train, y_train, x_test, y_test, num_classes):
  """Validated (x_train, y_train, x_test, y_test) as arrays."""
  y_train = _check_labels('y_train', y_train, num_classes)
  y_test = _check_labels('y_test', y_test, num_classes)
  x_train = _check_features('x_train', x_train, 'y_train', y_train)
  x_test = _check_features('x_test', x_test, 'y_test', y_test)
  if x_train.shape[1] != x_test.shape[1]:
    raise ValueError(f'x_train has dimension {x_train.shape[1]} but x_test '
                     f'has {x_test.shape[1]}; they must match.')
  return x_train, y_train, x_test, y_test


def ridge_fewshot_accuracy(x_train, y_train, x_test, y_test, num_classes: int,
                           l2_reg: L2Reg, protocol: str = DEFAULT_PROTOCOL
                           ) -> Union[float, List[float]]:
  """Test top-1 accuracy of the closed-form ridge classifier (see module).

  Args:
    x_train: [n, d] train representations.
    y_train: [n] integer class ids in [0, num_classes).
    x_test: [m, d] test representations.
    y_test: [m] integer class ids in [0, num_classes).
    num_classes: C.
    l2_reg: a strength lam >= 0, or a sequence of them; all share one
      eigendecomposition, so each extra strength costs one small product
      and one pass over the test features.
    protocol: one of PROTOCOLS (see module); 'standardized' maps x_test with
      the statistics of x_train.

  Returns:
    The accuracy in [0, 1] as a float, or a list of them, one per strength,
    when `l2_reg` is a sequence.
  """
  protocol = _check_protocol(protocol)
  num_classes = _check_num_classes(num_classes)
  l2_regs = _check_l2_regs(l2_reg)
  x_train, y_train, x_test, y_test = _check_train_test(
      x_train, y_train, x_test, y_test, num_classes)
  eigensystem = fit_eigensystem(x_train, y_train, num_classes, protocol)
  accuracies = [
      float(np.mean(predict_classes(x_test, ridge_weights(eigensystem, lam),
                                    eigensystem.feature_map) == y_test))
      for lam in l2_regs]
  return accuracies[0] if np.ndim(l2_reg) == 0 else accuracies


# -------------------------------------------------------------- sampling --


def _class_members(labels: np.ndarray, num_classes: int,
                   rng: np.random.Generator) -> List[np.ndarray]:
  """Per class, its example indices in a seeded random order."""
  keys = rng.random(labels.shape[0])
  order = np.lexsort((keys, labels))  # by class, then random key
  counts = np.bincount(labels, minlength=num_classes)
  return np.split(order, np.cumsum(counts)[:-1])


def sample_k_shot(labels, k: int, seed: int, num_classes: int) -> np.ndarray:
  """Indices of exactly k examples of each of num_classes classes.

  Deterministic given (labels, seed), and nested: for one seed the k-shot
  sample contains every smaller k's sample, so curves over k differ by the
  added examples only. Returned grouped by class, [num_classes * k].

  Raises:
    ValueError: naming the classes with fewer than k examples, and counts.
  """
  num_classes = _check_num_classes(num_classes)
  labels = _check_labels('labels', labels, num_classes)
  if (not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1):
    raise ValueError(f'k must be a positive integer, got {k!r}.')
  counts = np.bincount(labels, minlength=num_classes)
  short = np.flatnonzero(counts < k)
  if short.size:
    examples = ', '.join(f'class {c}: {counts[c]}' for c in short[:10])
    raise ValueError(f'{k}-shot sampling needs {k} examples per class; '
                     f'{short.size} of {num_classes} classes have fewer '
                     f'({examples}{", ..." if short.size > 10 else ""}).')
  members = _class_members(labels, num_classes, np.random.default_rng(seed))
  return np.concatenate([m[:k] for m in members])


def _split_holdout(labels: np.ndarray, num_classes: int,
                   holdout_fraction: float, seed: int):
  """Per class, round(fraction * count) held out, at least 1, 1 kept."""
  counts = np.bincount(labels, minlength=num_classes)
  single = np.flatnonzero(counts == 1)
  if single.size:
    raise ValueError(f'Held-out selection needs at least 2 examples of each '
                     f'class present; classes {single[:10].tolist()} have 1.')
  members = _class_members(labels, num_classes, np.random.default_rng(seed))
  fit, held = [], []
  for class_members in members:
    count = class_members.size
    if count == 0:
      continue
    num_held = int(np.clip(round(holdout_fraction * count), 1, count - 1))
    held.append(class_members[:num_held])
    fit.append(class_members[num_held:])
  return np.concatenate(fit), np.concatenate(held)


def select_l2_reg(x_train, y_train, num_classes: int,
                  candidates: Sequence[float], holdout_fraction: float = 0.2,
                  seed: int = 0, protocol: str = DEFAULT_PROTOCOL) -> float:
  """The candidate strength with the best accuracy on held-out train examples.

  From each class, round(holdout_fraction * count) examples (at least one,
  leaving at least one) are held out; the classifier is fitted on the rest
  (one eigendecomposition for all candidates) and scored on them. Ties go
  to the larger strength. With the 'standardized' protocol the statistics
  are those of the fitted part only, as a refit's would be of its sample:
  the held-out examples play the test split's role. The caller refits on all training examples with
  the returned strength, as `fewshot_metrics` does.

  Raises:
    ValueError: on bad inputs, or a class with a single example (1-shot
      data leaves nothing to hold out).
  """
  protocol = _check_protocol(protocol)
  num_classes = _check_num_classes(num_classes)
  candidates = _check_l2_regs(candidates, 'candidates')
  if not 0 < holdout_fraction < 1:
    raise ValueError(f'holdout_fraction must lie in (0, 1), got '
                     f'{holdout_fraction!r}.')
  y_train = _check_labels('y_train', y_train, num_classes)
  x_train = _check_features('x_train', x_train, 'y_train', y_train)
  fit, held = _split_holdout(y_train, num_classes, holdout_fraction, seed)
  accuracies = ridge_fewshot_accuracy(x_train[fit], y_train[fit],
                                      x_train[held], y_train[held],
                                      num_classes, list(candidates), protocol)
  best = max(accuracies)
  return float(max(lam for lam, accuracy in zip(candidates, accuracies)
                   if accuracy == best))


# ---------------------------------------------------------------- protocol --


def fewshot_metrics(dataset: str, x_train, y_train, x_test, y_test,
                    num_classes: int, *, l2_reg: Optional[float] = None,
                    l2_reg_candidates: Optional[Sequence[float]] = None,
                    shots: Sequence[int] = DEFAULT_SHOTS,
                    seeds: Sequence[int] = DEFAULT_SEEDS,
                    holdout_fraction: float = 0.2,
                    protocol: str = DEFAULT_PROTOCOL) -> Dict[str, float]:
  """Few-shot accuracy of one dataset's precomputed representations.

  For every k in `shots` and seed in `seeds`, draws a k-shot sample of the
  train split (`sample_k_shot`), fits the ridge classifier on it and scores
  it on the whole test split. The representations are the caller's,
  computed once and shared by every (k, seed).

  Exactly one of:
    l2_reg:            a fixed strength for every (k, seed);
    l2_reg_candidates: strengths chosen per (k, seed) by `select_l2_reg` on
                       the k-shot sample (seeded by the same seed), then
                       refitted on the whole sample. Needs k >= 2.

  `protocol` (one of PROTOCOLS, see module) maps every (k, seed)'s features
  with that k-shot sample's statistics.

  Returns:
    {'fewshot/<dataset>/<k>shot': mean accuracy over seeds,
     'fewshot/<dataset>/<k>shot_std': its standard deviation over seeds
     (population, ddof=0: 0.0 for a single seed)} for every k.
  """
  dataset = _check_dataset(dataset)
  protocol = _check_protocol(protocol)
  num_classes = _check_num_classes(num_classes)
  if (l2_reg is None) == (l2_reg_candidates is None):
    raise ValueError(f'Pass exactly one of l2_reg and l2_reg_candidates; got '
                     f'l2_reg={l2_reg!r}, '
                     f'l2_reg_candidates={l2_reg_candidates!r}.')
  if l2_reg is not None:
    if np.ndim(l2_reg) != 0:
      raise ValueError(f'l2_reg must be one number, got {l2_reg!r}; pass '
                       f'several as l2_reg_candidates.')
    _check_l2_regs(l2_reg)
  else:
    _check_l2_regs(l2_reg_candidates, 'l2_reg_candidates')
  shots, seeds = list(shots), list(seeds)
  bad_shots = [k for k in shots if not isinstance(k, numbers.Integral) or k < 1]
  if not shots or bad_shots:
    raise ValueError(f'shots must be positive integers, got {shots!r}.')
  if l2_reg_candidates is not None and min(shots) < 2:
    raise ValueError(f'Held-out selection of l2_reg needs k >= 2; shots '
                     f'{shots!r} include {min(shots)}. Drop it or pass a '
                     f'fixed l2_reg.')
  if not seeds:
    raise ValueError('seeds must name at least one seed, got [].')
  x_train, y_train, x_test, y_test = _check_train_test(
      x_train, y_train, x_test, y_test, num_classes)

  metrics = {}
  for k in shots:
    accuracies = []
    for seed in seeds:
      indices = sample_k_shot(y_train, k, seed, num_classes)
      x_shots, y_shots = x_train[indices], y_train[indices]
      strength = l2_reg
      if l2_reg_candidates is not None:
        strength = select_l2_reg(x_shots, y_shots, num_classes,
                                 l2_reg_candidates, holdout_fraction, seed,
                                 protocol)
      accuracies.append(ridge_fewshot_accuracy(
          x_shots, y_shots, x_test, y_test, num_classes, float(strength),
          protocol))
    metrics[f'fewshot/{dataset}/{k}shot'] = float(np.mean(accuracies))
    metrics[f'fewshot/{dataset}/{k}shot_std'] = float(np.std(accuracies))
  return metrics
