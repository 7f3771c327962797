"""Groups and seeds in `vit_jax.scaling`: sweeps given together stay apart,
`group_by` any column or hyperparameter, runs that differ only in their
seed averaged before the frontier, and `load_runs` as a per-run
hyperparameter table."""

import json
import os

import numpy as np
import pytest

from test_scaling import _cli
from test_scaling import _error
from test_scaling import write_workdir
from vit_jax import scaling
from vit_jax.scaling import frontiers
from vit_jax.scaling import runs as runs_lib

SIZES = (3e4, 1e5, 3e5, 1e6)


def _set_config(workdir, **values):
  """Sets dotted config keys of a workdir's config.json."""
  path = os.path.join(workdir, 'config.json')
  with open(path) as f:
    config = json.load(f)
  for key, value in values.items():
    node = config
    *parents, last = key.split('.')
    for parent in parents:
      node = node.setdefault(parent, {})
    node[last] = value
  with open(path, 'w') as f:
    json.dump(config, f)


def _pooling_sweep(root, pool, scale):
  """A ViT ladder whose runs set model.pool_type (recorded in sweep.json,
  as the launcher writes it); `scale` multiplies the error."""
  runs = []
  for i, n in enumerate(SIZES):
    name = f'model.variant={i},model.pool_type={pool}'
    workdir = write_workdir(
        root, name, params=n, total_steps=400, eval_every=40,
        metrics=lambda n, images: {
            'val/accuracy': 1 - scale * _error(n, images)})
    _set_config(workdir, **{'model.pool_type': pool, 'model.variant': str(i)})
    runs.append({'index': i, 'name': name, 'workdir': workdir,
                 'overrides': {'model.variant': str(i),
                               'model.pool_type': pool,
                               'config': 'configs/digits_scaling.py'}})
  with open(os.path.join(str(root), 'sweep.json'), 'w') as f:
    json.dump({'runs': runs}, f)
  return str(root)


def test_two_sweeps_given_together_stay_apart(tmp_path):
  cls = _pooling_sweep(tmp_path / 'cls_sweep', 'cls', 1.0)
  gap = _pooling_sweep(tmp_path / 'gap_sweep', 'gap', 0.8)
  table = scaling.load_runs([f'{cls}/*', f'{gap}/*'], labels=['CLS', 'GAP'])
  assert set(table['sweep']) == {'CLS', 'GAP'}
  # The sweeps' overridden keys are columns, the recipe ('config') too,
  # with the sweep's own values.
  assert runs_lib.hparam_columns(table) == ['config', 'model.pool_type',
                                            'model.variant']
  assert set(table['config']) == {'configs/digits_scaling.py'}
  assert 'model.pool_type' not in runs_lib.metric_columns(table)
  assert set(table['model.pool_type']) == {'cls', 'gap'}

  fronts = scaling.frontier(table, 'compute/flops', 'val/accuracy')
  assert sorted(fronts) == ['CLS vit', 'GAP vit']
  # Each frontier holds its own sweep's runs only, and its own law.
  for label, pool in (('CLS vit', 'cls'), ('GAP vit', 'gap')):
    assert all(f'pool_type={pool}' in run
               for run in fronts[label].points['run'])
  assert (fronts['GAP vit'].frontier['y'].min() <
          fronts['CLS vit'].frontier['y'].min())

  by_pool = scaling.frontier(table, 'compute/flops', 'val/accuracy',
                             group_by=('family', 'model.pool_type'))
  assert sorted(by_pool) == ['vit pool_type=cls', 'vit pool_type=gap']
  merged = scaling.frontier(table, 'compute/flops', 'val/accuracy',
                            group_by=('family',))
  assert list(merged) == ['vit'] and len(merged['vit'].points) == len(
      fronts['CLS vit'].points) + len(fronts['GAP vit'].points)
  with pytest.raises(ValueError, match=r"Cannot group by \['pool'\].*"
                     r'valid keys: sweep, family, variant, state, is_branch, '
                     r'config, model.pool_type, model.variant'):
    scaling.frontier(table, 'compute/flops', 'val/accuracy',
                     group_by=('pool',))
  with pytest.raises(ValueError, match='give one label per pattern'):
    scaling.load_runs([f'{cls}/*', f'{gap}/*'], labels=['only one'])


def test_seeds_are_averaged_before_the_frontier(tmp_path):
  """Three seeds per size (no sweep.json: the differing config keys are
  the hyperparameters); at the largest size seed 2 is far better than the
  others. The frontier holds the seeds' mean, never the lucky seed."""
  root = tmp_path / 'seeds'
  factors = {0: 1.0, 1: 1.1, 2: 0.6}
  for i, n in enumerate(SIZES):
    for seed, factor in factors.items():
      lucky = factor if i == len(SIZES) - 1 else 1 + 0.05 * seed
      workdir = write_workdir(
          root, f'variant={i},seed={seed}', params=n, total_steps=400,
          eval_every=40, metrics=lambda n, images, f=lucky: {
              'val/accuracy': 1 - f * _error(n, images)})
      _set_config(workdir, seed=seed, **{'model.variant': str(i)})
  table = scaling.load_runs(str(root / '*'))
  assert runs_lib.hparam_columns(table) == ['seed', 'model.variant']
  assert sorted(set(table['seed'])) == [0, 1, 2]

  usable, _ = frontiers.points(table, 'compute/flops', 'val/accuracy')
  assert set(usable['n_seeds']) == {3}
  assert len(usable) == len(table) // 3
  largest = usable[usable['run'].str.startswith('variant=3')]
  assert set(largest['run']) == {'variant=3 (mean of 3 seeds)'}
  assert set(largest['seeds']) == {'seed=0; seed=1; seed=2'}
  raw = table[table['model.variant'] == '3'].copy()
  raw['error'] = 1 - raw['val/accuracy']
  mean = raw.groupby('step')['error'].mean()
  std = raw.groupby('step')['error'].std()
  np.testing.assert_allclose(largest.set_index('step')['y'],
                             mean[largest['step']], rtol=1e-12)
  np.testing.assert_allclose(largest.set_index('step')['y_std'],
                             std[largest['step']], rtol=1e-9)

  front = scaling.frontier(table, 'compute/flops', 'val/accuracy')['vit']
  best_seed = raw['error'].min()
  assert front.frontier['y'].min() > best_seed * 1.2  # not the lucky one
  assert front.frontier['y'].min() == pytest.approx(
      mean.min(), rel=1e-12)
  # Without seed keys every run is its own point again.
  alone, _ = frontiers.points(table, 'compute/flops', 'val/accuracy',
                              seed_keys=())
  assert len(alone) == len(table) and alone['y'].min() == pytest.approx(
      best_seed)


def test_cli_labels_groups_and_seeds(tmp_path):
  cls = _pooling_sweep(tmp_path / 'a', 'cls', 1.0)
  gap = _pooling_sweep(tmp_path / 'b', 'gap', 0.8)
  out = tmp_path / 'out'
  result = _cli(f'--workdirs={cls}/*', f'--workdirs={gap}/*', '--label=CLS',
                '--label=GAP', '--metric=val/accuracy', f'--out={out}',
                '--bootstrap=0', '--also_x=')
  assert result.returncode == 0, result.stderr
  assert ('Groups by sweep, family; hyperparameters: config, '
          'model.pool_type, model.variant.') in result.stdout
  assert '  CLS vit: ' in result.stdout and '  GAP vit: ' in result.stdout
  with open(out / 'fits.json') as f:
    summary = json.load(f)
  assert summary['group_by'] == ['sweep', 'family']
  assert summary['labels'] == ['CLS', 'GAP']
  assert {r['family'] for r in summary['fits']} == {'CLS vit', 'GAP vit'}
  assert {run['hparams']['model.pool_type'] for run in summary['runs']} == {
      'cls', 'gap'}
  result = _cli(f'--workdirs={cls}/*', '--metric=val/accuracy',
                f'--out={out}', '--group_by=pool', '--bootstrap=0')
  assert result.returncode == 2
  assert 'Cannot group by' in result.stderr and 'model.pool_type' in \
      result.stderr
