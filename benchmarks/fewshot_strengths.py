"""Few-shot accuracy of a trained workdir over a grid of ridge strengths.

    PYTHONPATH=. python benchmarks/fewshot_strengths.py --workdir=DIR

For re-deriving a recipe's `l2_reg` / `l2_reg_candidates`: restores the
workdir's latest checkpoint, computes the representation of its few-shot
entry (`config.evals.<--eval>`) on each dataset's train and test splits
once, then for each protocol of `vit_jax.evaluate.fewshot` prints one JSON
line per strength 2^e (e in --exponents) with the mean k-shot test accuracy
over the seeds, and one line per candidate grid (--candidates, as
exponents of 2) with the accuracy of held-out selection (`select_l2_reg`). The
k = 1 accuracy of held-out selection is left out: nothing can be held out.
Test accuracies for choosing a strength, so a choice fits this model and
data only; results for the digits recipes are in benchmarks/README.md.
"""

import argparse
import json

import jax
import numpy as np

from vit_jax import build, checkpoint, data, workdir
from vit_jax.evaluate import fewshot, representations
from vit_jax.evaluate.fewshot_evaluator import dataset_entry


def _representations(config, entry_config, params, fns, mesh):
  """{dataset: (x_train, y_train, x_test, y_test, num_classes)}."""
  encoder = representations.make_encoder(
      fns.representation(entry_config.get('representation', 'pre_logits')),
      mesh)
  batch_size = config.get('eval_batch_size') or config.batch_size
  result = {}
  for key, entry in entry_config['datasets'].items():
    entry = dataset_entry(key, entry, config.data.get('data_dir'))
    source = {'name': entry['name'], 'data_dir': entry['data_dir'],
              'folder': entry['folder']}
    num_classes = data.num_classes(source)
    data_config = {**source,
                   'pp_eval': f'{entry["pp"]}|onehot({num_classes})'}
    splits = []
    for split in (entry['train_split'], entry['test_split']):
      splits.extend(representations.compute_representations(
          encoder, params, data.eval_iterator(data_config, split, batch_size),
          mesh))
    result[key] = (*splits, num_classes)
  return result


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--workdir', required=True)
  parser.add_argument('--eval', default='fewshot')
  parser.add_argument('--shots', type=int, nargs='+', default=[1, 5, 10, 25])
  parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1, 2, 3, 4])
  parser.add_argument('--exponents', type=int, nargs='+',
                      default=list(range(-10, 21, 2)))
  parser.add_argument('--candidates', default='-4,-2,0,2,4,6,8,10',
                      help='grids of exponents of 2: commas within a grid, '
                      '";" between grids, e.g. --candidates="-2,0,2;0,4,8"')
  args = parser.parse_args()

  config = workdir.read_config(args.workdir)
  run = build.build_run(config, data)
  checkpointer = checkpoint.TrainCheckpointer(
      f'{args.workdir}/checkpoints', read_only=True)
  try:
    step = max(checkpointer.all_steps())
    params = checkpointer.restore(step, run.abstract_state)['params']
  finally:
    checkpointer.close()
  features = _representations(config, config.evals[args.eval].to_dict(),
                              params, build.eval_functions(run), run.mesh)
  del params
  jax.clear_caches()

  strengths = [2.0 ** e for e in args.exponents]
  for key, (x_train, y_train, x_test, y_test, num_classes) in (
      features.items()):
    for protocol in fewshot.PROTOCOLS:
      # [shots, seeds, strengths]
      accuracies = np.array([[fewshot.ridge_fewshot_accuracy(
          x_train[idx], y_train[idx], x_test, y_test, num_classes, strengths,
          protocol) for idx in (fewshot.sample_k_shot(y_train, k, seed,
                                                      num_classes)
                                for seed in args.seeds)]
                             for k in args.shots])
      for exponent, by_shot in zip(args.exponents,
                                   accuracies.mean(1).T.tolist()):
        print(json.dumps(dict(
            workdir=args.workdir, step=step, dataset=key, protocol=protocol,
            l2_reg=f'2^{exponent}',
            **{f'{k}shot': round(a, 4) for k, a in zip(args.shots,
                                                       by_shot)})))
      for grid in args.candidates.split(';'):
        candidates = [2.0 ** int(e) for e in grid.split(',')]
        shots = [k for k in args.shots if k >= 2]
        metrics = fewshot.fewshot_metrics(
            key, x_train, y_train, x_test, y_test, num_classes,
            l2_reg_candidates=candidates, shots=shots, seeds=args.seeds,
            protocol=protocol)
        print(json.dumps(dict(
            workdir=args.workdir, step=step, dataset=key, protocol=protocol,
            l2_reg_candidates=f'2^[{grid}]',
            **{f'{k}shot': round(metrics[f'fewshot/{key}/{k}shot'], 4)
               for k in shots})))


if __name__ == '__main__':
  main()
