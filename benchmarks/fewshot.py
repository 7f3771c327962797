"""Time one ImageNet-sized few-shot ridge solve on the host CPU.

    PYTHONPATH=. python benchmarks/fewshot.py

The ImageNet 25-shot case of Zhai et al. 2021: 25 shots x 1000 classes =
25,000 train representations of dimension 1024 and 50,000 test ones. The
data are random (standard normal float32 features, uniform labels), so the
accuracy is chance level (~0.001); only the timings mean anything. Times,
with `time.perf_counter`, each stage of `vit_jax.evaluate.fewshot`:

  eigensystem  `fit_eigensystem`: float64 copy of the train features with
               the bias column, Gram matrix X^T X, `eigh`, projected targets
  (of which)   the Gram matrix and `eigh` alone, timed again separately
  solve        `ridge_weights` for each strength (default 5)
  predict      `predict_classes` on the test features, per strength

and prints one JSON line. Results and the device are in benchmarks/README.md.
"""

import argparse
import json
import time

import numpy as np

from vit_jax.evaluate import fewshot


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--shots', type=int, default=25)
  parser.add_argument('--classes', type=int, default=1000)
  parser.add_argument('--dim', type=int, default=1024)
  parser.add_argument('--test', type=int, default=50_000)
  parser.add_argument('--l2_regs', type=float, nargs='+',
                      default=[0.1, 1.0, 10.0, 100.0, 1000.0])
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  num_train = args.shots * args.classes
  x_train = rng.standard_normal((num_train, args.dim), dtype=np.float32)
  y_train = np.repeat(np.arange(args.classes), args.shots)
  x_test = rng.standard_normal((args.test, args.dim), dtype=np.float32)
  y_test = rng.integers(0, args.classes, args.test)

  start = time.perf_counter()
  eigensystem = fewshot.fit_eigensystem(x_train, y_train, args.classes)
  eigensystem_s = time.perf_counter() - start

  extended = np.hstack([x_train.astype(np.float64),
                        np.ones((num_train, 1))])  # [n, d+1]
  start = time.perf_counter()
  gram = extended.T @ extended if eigensystem.regime == 'primal' else (
      extended @ extended.T)
  gram_s = time.perf_counter() - start
  del extended
  start = time.perf_counter()
  np.linalg.eigh(gram)
  eigh_s = time.perf_counter() - start

  start = time.perf_counter()
  weights = [fewshot.ridge_weights(eigensystem, lam) for lam in args.l2_regs]
  solve_s = time.perf_counter() - start

  start = time.perf_counter()
  accuracies = [float(np.mean(fewshot.predict_classes(
      x_test, w, eigensystem.feature_map) == y_test)) for w in weights]
  predict_s = time.perf_counter() - start

  print(json.dumps(dict(
      num_train=num_train, dim=args.dim, classes=args.classes,
      num_test=args.test, regime=eigensystem.regime,
      num_l2_regs=len(args.l2_regs),
      eigensystem_s=round(eigensystem_s, 2), gram_s=round(gram_s, 2),
      eigh_s=round(eigh_s, 2), solve_s=round(solve_s, 2),
      predict_s=round(predict_s, 2),
      predict_s_per_l2_reg=round(predict_s / len(args.l2_regs), 2),
      accuracies=[round(a, 4) for a in accuracies])))


if __name__ == '__main__':
  main()
