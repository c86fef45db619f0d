r"""Rank correlation of explanations, per sample, on any backend.

Spearman's :math:`\rho` is Pearson's correlation of the ranks; tied values share their
average rank (as ``scipy.stats.spearmanr`` ranks them). Written with the array API only:
sorts are stable, so every backend ranks alike.
"""

from __future__ import annotations

from types import ModuleType

from array_api_compat import device

from relprop._xp import Array, array_namespace, detached

__all__ = ["ranks", "spearman"]


def ranks(a: Array) -> Array:
    r"""Average ranks (1 to n) of each row of ``a`` ``(batch, ...)``, flattened per sample.

    Tied values get the mean of the ranks they span.

    Returns
    -------
    array
        ``(batch, n)``, floating (``a``'s dtype, or the default float for integers).

    Examples
    --------
    >>> import numpy as np
    >>> ranks(np.array([[3.0, 1.0, 3.0, 2.0]])).tolist()
    [[3.5, 1.0, 3.5, 2.0]]
    """
    xp = array_namespace(a=a)
    a = detached(a)
    if len(a.shape) < 1:
        raise ValueError("a must have a leading batch axis; got a 0-d array.")
    flat = xp.reshape(a, (a.shape[0], -1))
    return _average_ranks(flat, xp)


def _average_ranks(a: Array, xp: ModuleType) -> Array:
    """Average ranks of each row of a 2-d array (runs of equal sorted values share)."""
    batch, n = a.shape
    dtype = a.dtype if xp.isdtype(a.dtype, "real floating") else None
    order = xp.argsort(a, axis=1, stable=True)
    if n == 0:
        return xp.zeros((batch, 0), dtype=dtype, device=device(a))
    ordered = xp.take_along_axis(a, order, axis=1)
    starts_run = xp.concat(
        [xp.ones((batch, 1), dtype=xp.bool, device=device(a)),
         ordered[:, 1:] != ordered[:, :-1]], axis=1
    )
    run = xp.cumulative_sum(xp.astype(starts_run, order.dtype), axis=1) - 1
    position = xp.broadcast_to(
        xp.reshape(xp.arange(n, dtype=order.dtype, device=device(a)), (1, n)), (batch, n)
    )
    end = xp.full_like(order, n)
    starts = xp.sort(xp.where(starts_run, position, end), axis=1)  # run starts, then n
    starts = xp.concat([starts, end[:, :1]], axis=1)
    first = xp.take_along_axis(starts, run, axis=1)
    last = xp.take_along_axis(starts, run + 1, axis=1) - 1
    average = xp.astype(first + last, dtype if dtype is not None else xp.float64) / 2.0 + 1.0
    inverse = xp.argsort(order, axis=1, stable=True)
    return xp.take_along_axis(average, inverse, axis=1)


def spearman(a: Array, b: Array) -> Array:
    r"""Spearman's rank correlation of ``a`` and ``b`` per sample.

    .. math::

        \rho = \frac{\sum_i (r_i - \bar r)(s_i - \bar s)}
                    {\sqrt{\sum_i (r_i - \bar r)^2 \sum_i (s_i - \bar s)^2}}

    with :math:`r, s` the average ranks (:func:`ranks`) of the sample's entries of ``a``
    and ``b``. A constant sample has no rank correlation: NaN.

    Parameters
    ----------
    a, b
        ``(batch, ...)``, the same shape and library (two explanations of one batch).

    Returns
    -------
    array
        ``(batch,)``, in ``[-1, 1]``.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.array([[1.0, 2.0, 3.0, 4.0]])
    >>> spearman(a, a).tolist(), spearman(a, -a).tolist(), spearman(a, a ** 3).tolist()
    ([1.0], [-1.0], [1.0])
    """
    xp = array_namespace(a=a, b=b)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"a has shape {tuple(a.shape)} and b {tuple(b.shape)}; correlate explanations of "
            "one shape (the same batch)."
        )
    ra, rb = ranks(a), ranks(b)
    if ra.dtype != rb.dtype:
        rb = xp.astype(rb, ra.dtype)
    ca = ra - xp.mean(ra, axis=1, keepdims=True)
    cb = rb - xp.mean(rb, axis=1, keepdims=True)
    numerator = xp.sum(ca * cb, axis=1)
    denominator = xp.sqrt(xp.sum(ca * ca, axis=1) * xp.sum(cb * cb, axis=1))
    defined = denominator > 0
    safe = xp.where(defined, denominator, xp.ones_like(denominator))
    rho = xp.clip(numerator / safe, -1.0, 1.0)
    return xp.where(defined, rho, xp.full_like(rho, float("nan")))
