r"""Central finite differences, batched over directions (NumPy, CuPy, array-api-strict).

For ``x`` of shape ``(batch, *s)`` with ``m = prod(s)`` entries per sample, the Jacobian
column of direction ``e_k`` is

.. math:: J e_k \approx \frac{f(x + h_k e_k) - f(x - h_k e_k)}{2 h_k},
   \qquad h_k = \epsilon^{1/3} \max(1, |x_k|)

with :math:`\epsilon` the machine epsilon of ``x``'s dtype (``h ~ 6e-6`` in float64,
``~5e-3`` in float32). All directions of all samples are evaluated in a few calls of ``fn``
on stacked batches (``fn`` must treat the leading axis as independent samples).

Accuracy: exact up to rounding for linear and piecewise-linear maps away from kinks
(relative error ~1e-10 in float64, ~1e-4 in float32); :math:`O(h^2)` for smooth maps.
Cost: ``2 m`` evaluations of ``fn`` per sample, in chunks of at most
:data:`MAX_CHUNK_ELEMENTS` input entries. relprop never uses this where a layer has an exact
adjoint; it backs :class:`relprop.Lambda` and the gradient baselines on NumPy-like backends.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType

from array_api_compat import device

from relprop._xp import Array

__all__ = ["MAX_CHUNK_ELEMENTS", "step_scale", "vjp"]

MAX_CHUNK_ELEMENTS = 1 << 22
"""Upper bound on the entries of one stacked batch of perturbed inputs."""


def step_scale(xp: ModuleType, dtype: object) -> float:
    """Base step :math:`\\epsilon^{1/3}` of central differences for ``dtype``."""
    return float(xp.finfo(dtype).eps) ** (1.0 / 3.0)


def vjp(fn: Callable[[Array], Array], x: Array, v: Array, *, xp: ModuleType) -> Array:
    """``J^T v`` of a per-sample function by central finite differences.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> x = xp.asarray([[0.5, -1.0]])
    >>> vjp(lambda a: 3.0 * a, x, xp.ones((1, 2)), xp=xp).round(8).tolist()
    [[3.0, 3.0]]
    """
    batch = x.shape[0]
    sample_shape = tuple(x.shape[1:])
    m = math.prod(sample_shape)
    steps = step_scale(xp, x.dtype) * xp.maximum(xp.abs(x), xp.ones_like(x))
    steps_by_direction = xp.matrix_transpose(xp.reshape(steps, (batch, m)))  # (m, batch)
    positions = xp.arange(m, device=device(x))
    chunk = max(1, MAX_CHUNK_ELEMENTS // max(1, batch * m))
    columns = []
    for start in range(0, m, chunk):
        stop = min(start + chunk, m)
        # rows start..stop of the identity, built per chunk: the whole m x m never exists
        rows = xp.expand_dims(positions[start:stop], axis=1) == xp.expand_dims(positions, axis=0)
        directions = xp.reshape(xp.astype(rows, x.dtype), (-1, 1, *sample_shape))
        count = directions.shape[0]
        shift = directions * xp.expand_dims(steps, axis=0)  # (count, batch, *s)
        stacked = xp.concat([x + shift, x - shift], axis=0)
        out = fn(xp.reshape(stacked, (2 * count * batch, *sample_shape)))
        out = xp.reshape(out, (2, count, batch, -1))
        slope = (out[0, ...] - out[1, ...]) / (
            2.0 * xp.expand_dims(steps_by_direction[start:stop, :], axis=-1)
        )
        columns.append(xp.sum(slope * xp.reshape(v, (1, batch, -1)), axis=-1))  # (count, batch)
    result = xp.matrix_transpose(xp.concat(columns, axis=0))  # (batch, m)
    return xp.reshape(result, x.shape)
