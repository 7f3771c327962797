"""Few-shot ridge evaluation against independent solves of the same problem."""

import numpy as np
import pytest
from sklearn import datasets as sklearn_datasets
from sklearn import linear_model

from vit_jax.evaluate import fewshot


def _random_problem(num_train, dim, num_classes, num_test=200, seed=0):
  rng = np.random.default_rng(seed)
  x_train = rng.normal(size=(num_train, dim)).astype(np.float32)
  x_test = rng.normal(size=(num_test, dim)).astype(np.float32)
  y_train = rng.integers(0, num_classes, num_train)
  y_test = rng.integers(0, num_classes, num_test)
  return x_train, y_train, x_test, y_test


def _mapped(x, x_train, protocol):
  """The solve's features, written out: big_vision's standardisation (train
  mean, train std + 1e-5, bias feature 100) or raw [x, 1]."""
  x = x.astype(np.float64)
  if protocol == 'raw':
    return np.hstack([x, np.ones((len(x), 1))])
  x_train = x_train.astype(np.float64)
  standardized = (x - x_train.mean(0)) / (x_train.std(0) + 1e-5)
  return np.hstack([standardized, np.full((len(x), 1), 100.0)])


def _normal_equations_weights(x_train, y_train, num_classes, l2_reg,
                              protocol):
  """(X^T X + lam I)^-1 X^T Y on the mapped X, bias regularised: [d+1, C]."""
  x = _mapped(x_train, x_train, protocol)
  targets = 2.0 * np.eye(num_classes)[y_train] - 1.0
  return np.linalg.solve(x.T @ x + l2_reg * np.eye(x.shape[1]), x.T @ targets)


def _predict(x, x_train, weights, protocol):
  return (_mapped(x, x_train, protocol) @ weights).argmax(-1)


@pytest.mark.parametrize('protocol', fewshot.PROTOCOLS)
@pytest.mark.parametrize('num_train,dim,regime', [(300, 20, 'primal'),
                                                  (40, 100, 'dual')])
@pytest.mark.parametrize('l2_reg', [1e-3, 1.0, 50.0])
def test_matches_normal_equations(num_train, dim, regime, l2_reg, protocol):
  num_classes = 5
  x_train, y_train, x_test, y_test = _random_problem(num_train, dim,
                                                     num_classes)
  # An offset and uneven scales, which standardisation must undo.
  x_train, x_test = (3.0 + x * np.linspace(0.1, 5.0, dim, dtype=np.float32)
                     for x in (x_train, x_test))
  eigensystem = fewshot.fit_eigensystem(x_train, y_train, num_classes,
                                        protocol)
  assert eigensystem.regime == regime
  weights = fewshot.ridge_weights(eigensystem, l2_reg)
  expected = _normal_equations_weights(x_train, y_train, num_classes, l2_reg,
                                       protocol)
  np.testing.assert_allclose(weights, expected, rtol=1e-7,
                             atol=1e-9 * np.abs(expected).max())
  predicted = _predict(x_test, x_train, expected, protocol)
  np.testing.assert_array_equal(
      fewshot.predict_classes(x_test, weights, eigensystem.feature_map),
      predicted)
  accuracy = fewshot.ridge_fewshot_accuracy(x_train, y_train, x_test, y_test,
                                            num_classes, l2_reg, protocol)
  assert isinstance(accuracy, float)
  assert accuracy == np.mean(predicted == y_test)


@pytest.mark.parametrize('protocol', fewshot.PROTOCOLS)
@pytest.mark.parametrize('num_train,dim', [(300, 20), (40, 100)])
def test_matches_sklearn_ridge_on_mapped_features(num_train, dim, protocol):
  num_classes, l2_reg = 4, 3.0
  x_train, y_train, x_test, _ = _random_problem(num_train, dim, num_classes)
  x_train, x_test = x_train - 2.0, 0.5 * x_test - 2.0
  reference = linear_model.Ridge(alpha=l2_reg, fit_intercept=False,
                                 solver='cholesky')
  reference.fit(_mapped(x_train, x_train, protocol),
                2.0 * np.eye(num_classes)[y_train] - 1.0)
  eigensystem = fewshot.fit_eigensystem(x_train, y_train, num_classes,
                                        protocol)
  weights = fewshot.ridge_weights(eigensystem, l2_reg)
  np.testing.assert_allclose(weights, reference.coef_.T, rtol=1e-6,
                             atol=1e-9)
  np.testing.assert_allclose(eigensystem.feature_map.apply(x_test),
                             _mapped(x_test, x_train, protocol), rtol=1e-12)
  np.testing.assert_array_equal(
      fewshot.predict_classes(x_test, weights, eigensystem.feature_map),
      reference.predict(_mapped(x_test, x_train, protocol)).argmax(-1))


def test_default_protocol_is_big_visions_standardisation():
  x_train, y_train, x_test, _ = _random_problem(50, 8, 3)
  x_train[:, 2] = 7.0  # a constant dimension: std 0, mapped to 0
  feature_map = fewshot.fit_eigensystem(x_train, y_train, 3).feature_map
  assert feature_map.protocol == 'standardized'
  assert feature_map.bias_feature == 100.0
  np.testing.assert_allclose(feature_map.mean, x_train.mean(0), rtol=1e-6)
  np.testing.assert_allclose(feature_map.scale, x_train.std(0) + 1e-5,
                             rtol=1e-6)
  mapped = feature_map.apply(x_train)
  np.testing.assert_allclose(mapped[:, 2], 0.0, atol=1e-9)
  np.testing.assert_allclose(mapped[:, -1], 100.0)
  np.testing.assert_allclose(mapped[:, [0, 1, 3]].std(0), 1.0, rtol=1e-4)
  assert np.isfinite(feature_map.apply(x_test)).all()


def _digits_representation():
  """sklearn's digits through a fixed random tanh layer: dense features with
  an offset and no constant dimension, like a small model's."""
  bunch = sklearn_datasets.load_digits()
  rng = np.random.default_rng(0)
  projection = rng.normal(size=(64, 48)) / 8
  features = np.tanh(3.0 * (bunch.data / 16.0) @ projection) + 0.5
  return features.astype(np.float32), bunch.target


@pytest.mark.parametrize('k', [5, 10])
def test_standardized_accuracy_does_not_depend_on_the_scale(k):
  features, labels = _digits_representation()
  x_train, y_train = features[:1000], labels[:1000]
  x_test, y_test = features[1000:], labels[1000:]
  shots = fewshot.sample_k_shot(y_train, k, seed=0, num_classes=10)
  l2_regs = [1.0, 1024.0]

  def accuracies(scale, protocol):
    return np.array(fewshot.ridge_fewshot_accuracy(
        scale * x_train[shots], y_train[shots], scale * x_test, y_test, 10,
        l2_regs, protocol))

  standardized = accuracies(1.0, 'standardized')
  raw = accuracies(1.0, 'raw')
  assert standardized.min() > 0.5  # a real classifier, not chance
  for scale in (0.1, 10.0):
    # Up to the epsilon added to the standard deviations: at most one test
    # prediction may flip.
    np.testing.assert_allclose(accuracies(scale, 'standardized'),
                               standardized, atol=1.0 / len(y_test))
    # The raw protocol's strength is in units of squared features: here
    # 25 to 154 of the 797 test predictions change.
    assert np.abs(accuracies(scale, 'raw') - raw).max() > 10.0 / len(y_test)


@pytest.mark.parametrize('protocol', fewshot.PROTOCOLS)
@pytest.mark.parametrize('num_train,dim', [(300, 20), (40, 100)])
def test_several_strengths_equal_separate_solves(num_train, dim, protocol):
  num_classes = 6
  problem = _random_problem(num_train, dim, num_classes, seed=1)
  l2_regs = [0.0, 0.01, 1.0, 100.0, 1e4]
  together = fewshot.ridge_fewshot_accuracy(*problem, num_classes, l2_regs,
                                            protocol)
  separate = [fewshot.ridge_fewshot_accuracy(*problem, num_classes, lam,
                                             protocol) for lam in l2_regs]
  assert together == separate
  assert isinstance(together, list) and len(together) == len(l2_regs)


@pytest.mark.parametrize('protocol', fewshot.PROTOCOLS)
def test_zero_strength_is_minimum_norm_least_squares(protocol):
  num_classes = 3
  for num_train, dim in [(200, 10), (15, 40)]:
    x_train, y_train, _, _ = _random_problem(num_train, dim, num_classes)
    x = _mapped(x_train, x_train, protocol)
    targets = 2.0 * np.eye(num_classes)[y_train] - 1.0
    weights = fewshot.ridge_weights(
        fewshot.fit_eigensystem(x_train, y_train, num_classes, protocol), 0.0)
    np.testing.assert_allclose(weights, np.linalg.pinv(x) @ targets,
                               rtol=1e-6, atol=1e-8)


def test_linearly_separable_data_is_classified_well():
  rng = np.random.default_rng(0)
  num_classes, dim = 10, 32
  means = 4.0 * rng.normal(size=(num_classes, dim))

  def draw(count):
    labels = rng.integers(0, num_classes, count)
    return means[labels] + rng.normal(size=(count, dim)), labels

  x_train, y_train = draw(500)
  x_test, y_test = draw(1000)
  accuracy = fewshot.ridge_fewshot_accuracy(x_train, y_train, x_test, y_test,
                                            num_classes, 1.0)
  assert accuracy > 0.97


def test_k_shot_sampler_exact_deterministic_and_nested():
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 7, 500)
  first = fewshot.sample_k_shot(labels, 5, seed=3, num_classes=7)
  np.testing.assert_array_equal(np.bincount(labels[first], minlength=7),
                                [5] * 7)
  assert len(set(first.tolist())) == 35
  np.testing.assert_array_equal(
      first, fewshot.sample_k_shot(labels, 5, seed=3, num_classes=7))
  assert not np.array_equal(
      first, fewshot.sample_k_shot(labels, 5, seed=4, num_classes=7))
  smaller = fewshot.sample_k_shot(labels, 2, seed=3, num_classes=7)
  assert set(smaller.tolist()) <= set(first.tolist())


def test_k_shot_sampler_names_short_classes():
  labels = np.array([0] * 5 + [1] * 2 + [2] * 5)
  with pytest.raises(ValueError, match=r'class 1: 2'):
    fewshot.sample_k_shot(labels, 3, seed=0, num_classes=3)
  with pytest.raises(ValueError, match=r'class 3: 0'):
    fewshot.sample_k_shot(labels, 1, seed=0, num_classes=4)


def test_held_out_selection_prefers_regularisation_on_noisy_data():
  # Few examples per feature (n ~ d) and noisy features: the unregularised
  # fit interpolates noise and generalises badly.
  rng = np.random.default_rng(0)
  num_classes, dim = 4, 150
  means = np.zeros((num_classes, dim))
  means[:, :num_classes] = 1.5 * np.eye(num_classes)
  labels = np.repeat(np.arange(num_classes), 50)  # 200 examples
  features = means[labels] + rng.normal(size=(labels.size, dim))
  candidates = [0.0, 1e-2, 1.0, 10.0, 100.0, 1e3]
  for protocol in fewshot.PROTOCOLS:
    best = fewshot.select_l2_reg(features, labels, num_classes, candidates,
                                 holdout_fraction=0.25, seed=0,
                                 protocol=protocol)
    assert best >= 10.0, protocol
  with pytest.raises(ValueError, match=r'classes \[1\] have 1'):
    fewshot.select_l2_reg(features[:3], np.array([0, 1, 0]), 2, candidates)


def test_held_out_selection_standardises_with_the_fitted_part_only(
    monkeypatch):
  rng = np.random.default_rng(0)
  labels = np.repeat(np.arange(3), 10)  # 30 examples, 2 per class held out
  features = rng.normal(size=(30, 5)) + 4.0 * np.eye(3, 5)[labels]
  fitted_rows = []
  fit_eigensystem = fewshot.fit_eigensystem

  def recording_fit(x, y, num_classes, protocol):
    fitted_rows.append(np.asarray(x).copy())
    return fit_eigensystem(x, y, num_classes, protocol)

  monkeypatch.setattr(fewshot, 'fit_eigensystem', recording_fit)
  fewshot.select_l2_reg(features, labels, 3, [0.1, 10.0],
                        holdout_fraction=0.2, seed=0)
  [fitted] = fitted_rows
  assert fitted.shape == (24, 5)
  # The map's statistics are those of the 24 fitted rows, not all 30.
  feature_map = fit_eigensystem(fitted, np.zeros(24, int), 3).feature_map
  assert not np.allclose(feature_map.mean, features.mean(0))
  held = np.array([row for row in features
                   if not (row == fitted).all(1).any()])  # [6, 5]
  assert held.shape == (6, 5)
  np.testing.assert_allclose(feature_map.apply(held)[:, :-1],
                             (held - fitted.mean(0)) / (fitted.std(0) + 1e-5))


def test_fewshot_metrics_names_and_statistics():
  rng = np.random.default_rng(0)
  num_classes, dim = 5, 16
  means = 3.0 * rng.normal(size=(num_classes, dim))
  y_train = np.repeat(np.arange(num_classes), 30)
  y_test = np.repeat(np.arange(num_classes), 20)
  x_train = means[y_train] + rng.normal(size=(y_train.size, dim))
  x_test = means[y_test] + rng.normal(size=(y_test.size, dim))
  metrics = fewshot.fewshot_metrics('digits', x_train, y_train, x_test,
                                    y_test, num_classes, l2_reg=1.0,
                                    shots=(1, 5, 10), seeds=(0, 1, 2))
  assert sorted(metrics) == sorted(
      f'fewshot/digits/{k}shot{suffix}' for k in (1, 5, 10)
      for suffix in ('', '_std'))
  accuracies = [fewshot.ridge_fewshot_accuracy(
      x_train[idx], y_train[idx], x_test, y_test, num_classes, 1.0)
                for idx in (fewshot.sample_k_shot(y_train, 5, s, num_classes)
                            for s in (0, 1, 2))]
  assert metrics['fewshot/digits/5shot'] == pytest.approx(np.mean(accuracies))
  assert metrics['fewshot/digits/5shot_std'] == pytest.approx(
      np.std(accuracies))
  assert metrics['fewshot/digits/10shot'] > 0.9
  selected = fewshot.fewshot_metrics(
      'digits', x_train, y_train, x_test, y_test, num_classes,
      l2_reg_candidates=[0.1, 1.0, 10.0], shots=(5,), seeds=(0, 1))
  assert selected['fewshot/digits/5shot'] > 0.8
  with pytest.raises(ValueError, match=r'include 1'):
    fewshot.fewshot_metrics('digits', x_train, y_train, x_test, y_test,
                            num_classes, l2_reg_candidates=[1.0])


def test_bad_inputs_name_the_values():
  x_train, y_train, x_test, y_test = _random_problem(30, 4, 3)
  accuracy = lambda **changes: fewshot.ridge_fewshot_accuracy(
      **{**dict(x_train=x_train, y_train=y_train, x_test=x_test,
                y_test=y_test, num_classes=3, l2_reg=1.0), **changes})
  with pytest.raises(ValueError, match=r'x_train has 30 rows .* 29 labels'):
    accuracy(y_train=y_train[:-1])
  with pytest.raises(ValueError, match=r'x_test has 200 rows .* 199 labels'):
    accuracy(y_test=y_test[:-1])
  with pytest.raises(ValueError, match=r'dimension 4 .* has 5'):
    accuracy(x_test=np.zeros((200, 5)))
  with pytest.raises(ValueError, match=r'\[0, 3\) .* e\.g\. \[3, 7\]'):
    accuracy(y_train=np.where(np.arange(30) < 2, [3, 7] * 15, y_train))
  with pytest.raises(ValueError, match=r'\[0, 3\) .* e\.g\. \[-1\]'):
    accuracy(y_test=np.full(200, -1))
  with pytest.raises(ValueError, match=r'>= 0, got \[-0\.5\]'):
    accuracy(l2_reg=-0.5)
  with pytest.raises(ValueError, match=r'>= 0, got \[-2\.0\]'):
    accuracy(l2_reg=[1.0, -2.0])
  with pytest.raises(ValueError, match=r'integer class ids, got dtype float'):
    accuracy(y_train=y_train.astype(np.float32))
  with pytest.raises(ValueError, match=r'shape \[n\], got shape \(30, 3\)'):
    accuracy(y_train=np.eye(3)[y_train])
  with pytest.raises(ValueError, match=r'num_classes .* got 0'):
    accuracy(num_classes=0)
  x_with_nan = x_train.copy()
  x_with_nan[5, 1] = np.nan
  with pytest.raises(ValueError, match=r'x_train holds 1 non-finite'):
    accuracy(x_train=x_with_nan)
  with pytest.raises(ValueError, match=r"protocol 'whitened'; valid choices: "
                     r"\['standardized', 'raw'\]"):
    accuracy(protocol='whitened')
  with pytest.raises(ValueError, match=r"protocol 'none'; valid choices"):
    fewshot.fewshot_metrics('d', x_train, y_train, x_test, y_test, 3,
                            l2_reg=1.0, protocol='none')
  with pytest.raises(ValueError, match=r'exactly one of l2_reg'):
    fewshot.fewshot_metrics('d', x_train, y_train, x_test, y_test, 3)
  with pytest.raises(ValueError, match=r"without \"/\".*'a/b'"):
    fewshot.fewshot_metrics('a/b', x_train, y_train, x_test, y_test, 3,
                            l2_reg=1.0)
