"""Scaling laws from workdirs: collect runs, fit laws, plot curves.

    table = scaling.load_runs('SWEEP_DIR/*')     # one row per evaluation
    fronts = scaling.frontier(table, 'compute/flops', 'fewshot/digits/10shot')
    law = fronts['vit'].fit                      # saturating, or simpler
    ci = scaling.bootstrap(fronts['vit'].frontier['x'],
                           fronts['vit'].frontier['y'], law.form)
    scaling.fit_chinchilla(n, d, loss)           # L = E + A/N^a + B/D^b
    scaling.isoflop(n, c, loss, budgets)         # N_opt ~ C^a (approach 2)

or from the command line (plots, fits.json, the laws printed):

    python -m vit_jax.scaling --workdirs='SWEEP_DIR/*' \
        --metric=fewshot/digits/10shot --x=compute/flops --out=DIR

Modules: `runs` (workdirs -> a pandas table, through vit_jax.paths so
gs:// works), `fits` (the laws, bootstrap, extrapolation check,
Chinchilla), `compute_optimal` (Chinchilla's approaches 1 and 2),
`frontiers` (per-group lower envelopes and their fits),
`plots` (PNG, SVG and CSV; markers sized by parameters), `report`
(report.html: figures, laws and runs on one offline page), `__main__`
(the command line). Reads workdirs only; never imports jax or
TensorFlow.
"""

from vit_jax.scaling.compute_optimal import ComputeOptimal
from vit_jax.scaling.compute_optimal import envelope
from vit_jax.scaling.compute_optimal import isoflop
from vit_jax.scaling.fits import bootstrap
from vit_jax.scaling.fits import Bootstrap
from vit_jax.scaling.fits import ChinchillaFit
from vit_jax.scaling.fits import Extrapolation
from vit_jax.scaling.fits import fit
from vit_jax.scaling.fits import fit_chinchilla
from vit_jax.scaling.fits import fit_with_fallback
from vit_jax.scaling.fits import Fit
from vit_jax.scaling.fits import FORMS
from vit_jax.scaling.fits import MIN_POINTS
from vit_jax.scaling.fits import predict
from vit_jax.scaling.fits import underdetermined
from vit_jax.scaling.fits import validate_extrapolation
from vit_jax.scaling.frontiers import frontier
from vit_jax.scaling.frontiers import Frontier
from vit_jax.scaling.frontiers import pareto_mask
from vit_jax.scaling.frontiers import points
from vit_jax.scaling.plots import plot
from vit_jax.scaling.runs import error_label
from vit_jax.scaling.runs import find_workdirs
from vit_jax.scaling.runs import glob
from vit_jax.scaling.runs import is_accuracy
from vit_jax.scaling.runs import load_runs
from vit_jax.scaling.runs import to_error
from vit_jax.scaling.runs import X_COLUMNS

__all__ = [
    'Bootstrap', 'ChinchillaFit', 'ComputeOptimal', 'Extrapolation',
    'FORMS', 'Fit', 'envelope', 'isoflop',
    'Frontier', 'MIN_POINTS', 'X_COLUMNS', 'bootstrap', 'error_label',
    'find_workdirs', 'fit', 'fit_chinchilla', 'fit_with_fallback',
    'frontier', 'glob', 'is_accuracy', 'load_runs', 'pareto_mask', 'plot',
    'points', 'predict', 'to_error', 'underdetermined',
    'validate_extrapolation',
]
