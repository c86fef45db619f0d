r"""Completeness (conservation): does the relevance sum to the explained output?

Conserving rules (LRP-0 and Epsilon with :math:`\epsilon \to 0` on a bias-free network,
z+, alpha-beta without biases) give :math:`\sum_i R_i = f_c(x)`; biases, stabilisers and
Flat-type first layers absorb or add some. The check is a per-sample table of both sides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from relprop._checks import target_relevance
from relprop._dask import is_dask_array, on_dask
from relprop._xp import Array, detached, library_of, to_numpy
from relprop.metrics._common import (
    as_function,
    check_relevance,
    one_target_per_sample,
    per_sample_sum,
)

__all__ = ["CompletenessResult", "completeness"]


@dataclass(frozen=True, eq=False)
class CompletenessResult:
    """Both sides of :math:`\\sum_i R_i = f(x)` per sample, in the input's library."""

    relevance_sum: Array
    r"""``(batch,)``: :math:`\sum_i R_i`."""
    output: Array
    """``(batch,)``: the explained output :math:`f(x)`."""
    difference: Array
    r"""``(batch,)``: :math:`\sum_i R_i - f(x)`."""
    relative_error: Array
    r"""``(batch,)``: :math:`|\sum_i R_i - f(x)| / |f(x)|` (``inf`` where :math:`f(x) = 0`
    and the sum is not, ``0`` where both are)."""

    @property
    def max_relative_error(self) -> float:
        """The largest relative error over the batch."""
        return float(np.max(to_numpy(self.relative_error)))

    def __repr__(self) -> str:
        errors = np.asarray(to_numpy(self.relative_error))
        return (
            f"CompletenessResult({errors.shape[0]} samples: relative error mean "
            f"{errors.mean():.3g}, max {errors.max():.3g})"
        )


def completeness(
    model: Any, x: Array, relevance: Array, target: object = None
) -> CompletenessResult:
    r"""Compare each sample's relevance sum with the output it explains.

    .. math::

        \Delta = \sum_i R_i - f(x), \qquad
        \text{relative error} = \frac{|\Delta|}{|f(x)|}

    Parameters
    ----------
    model
        An ``rp.Sequential`` / ``rp.Graph``, a ``torch.nn.Module``, or a function of a batch.
    x
        Input batch ``(batch, ...)``.
    relevance
        ``(batch, ...)``, x's library: what explains ``x`` (summed over all but the first
        axis; any shape, e.g. embedding vectors).
    target
        What was explained, as ``rp.lrp`` reads it: an index picks :math:`f_c(x)` (``None``:
        the arg-max); a floating array of the output's shape is the initial relevance, a
        function of the output gives the value per sample (or the initial relevance), and
        :math:`f(x)` is its sum.

    Returns
    -------
    CompletenessResult
        ``relevance_sum``, ``output``, ``difference``, ``relative_error``, each ``(batch,)``.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> from relprop import metrics
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, -1.0], [2.0, 1.0]])), rp.ReLU(),
    ...                        rp.Dense(np.array([[1.0, 1.0]]))])
    >>> x = np.array([[1.0, 2.0]])
    >>> R = rp.lrp(model, x, target=0, rule=rp.rules.Epsilon(0.0))
    >>> check = metrics.completeness(model, x, R, target=0)
    >>> check.relevance_sum.tolist(), check.output.tolist(), check.relative_error.tolist()
    ([4.0], [4.0], [0.0])
    """
    if is_dask_array(x, relevance):  # one completeness per chunk, lazily (relprop._dask)
        return on_dask(completeness, locals())
    forward, xp = as_function(model, x)
    x = detached(x)
    relevance = check_relevance(relevance, x)
    one_target_per_sample(target)
    out = forward(x)
    explained = None
    if callable(target) and library_of(target) is None:
        value = target(out)
        if library_of(value) == library_of(out) and tuple(value.shape) == (out.shape[0],):
            explained = value
    if explained is None:
        explained = per_sample_sum(target_relevance(out, target, xp, scale=True), xp)
    total = per_sample_sum(relevance, xp)
    if total.dtype != explained.dtype:
        explained = xp.astype(explained, total.dtype)
    difference = total - explained
    size = xp.abs(explained)
    zero = size == 0
    ratio = xp.abs(difference) / xp.where(zero, xp.ones_like(size), size)
    inf = xp.full_like(size, float("inf"))
    relative = xp.where(zero, xp.where(difference == 0, xp.zeros_like(size), inf), ratio)
    return CompletenessResult(total, explained, difference, relative)
