"""Evaluating explanations: pixel flipping and region perturbation, completeness, the
randomisation sanity check, and relprop as a Quantus explanation function.

The metrics take arrays of any backend and compute with their namespace; every random
number (random orders, noise, re-initialised weights) is drawn with NumPy from a seed and
converted, and rankings use stable sorts, so every backend gives the same numbers.

- :func:`pixel_flipping`, :func:`region_perturbation`: perturbation curves (Samek et al.
  2017) of the most / least relevant first and random orders, with :func:`auc` and
  :func:`aopc`; :func:`plot_curves` draws them.
- :func:`completeness`: relevance sums against the explained output.
- :func:`randomisation_check`: Adebayo et al. 2018's model-parameter randomisation, with
  :func:`spearman` rank correlations; :func:`randomise_layers` makes the models.
- :func:`quantus_explain`: an ``explain_func`` for Quantus.

Examples
--------
>>> import numpy as np, relprop as rp
>>> from relprop import metrics
>>> model = rp.Sequential([rp.Dense(np.array([[1.0, 2.0, 3.0]]))])
>>> x = np.ones((1, 3))
>>> R = rp.lrp(model, x, target=0, rule=rp.rules.Epsilon(0.0))
>>> metrics.pixel_flipping(model, x, R, target=0).morf.scores.tolist()
[[6.0, 3.0, 1.0, 0.0]]
>>> metrics.completeness(model, x, R, target=0).relative_error.tolist()
[0.0]
"""

from __future__ import annotations

from relprop.metrics.completeness import CompletenessResult, completeness
from relprop.metrics.correlation import ranks, spearman
from relprop.metrics.perturbation import (
    ORDERS,
    PerturbationCurve,
    PerturbationResult,
    aopc,
    auc,
    pixel_flipping,
    region_perturbation,
)
from relprop.metrics.plot import plot_curves
from relprop.metrics.quantus_interop import quantus_explain
from relprop.metrics.randomisation import (
    RandomisationResult,
    parameter_layers,
    randomisation_check,
    randomise_layers,
)

__all__ = [
    "ORDERS",
    "CompletenessResult",
    "PerturbationCurve",
    "PerturbationResult",
    "RandomisationResult",
    "aopc",
    "auc",
    "completeness",
    "parameter_layers",
    "pixel_flipping",
    "plot_curves",
    "quantus_explain",
    "randomisation_check",
    "randomise_layers",
    "ranks",
    "region_perturbation",
    "spearman",
]
