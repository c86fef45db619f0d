"""Constant padding of the spatial axes and its adjoint (cropping)."""

from __future__ import annotations

from types import ModuleType

from relprop._xp import Array, array_namespace
from relprop.ops._args import normalize_pads
from relprop.ops._windows import pad_array

__all__ = ["pad", "pad_transpose"]


def _spatial(shape: tuple[int, ...], name: str) -> int:
    if len(shape) < 3:
        raise ValueError(
            f"{name} must have shape (batch, channels, *spatial) with at least one spatial "
            f"axis; got shape {shape}."
        )
    return len(shape) - 2


def pad(
    x: Array, pads: object, value: float = 0.0, *, xp: ModuleType | None = None,
    native: bool = True,
) -> Array:
    r"""Pad the spatial axes of a channels-first array with a constant.

    .. math:: y[n, c, i] = x[n, c, i - b] \text{ if } 0 \le i - b < L \text{ else } v

    per spatial axis with ``b`` elements before and ``a`` after (``L + b + a`` in all).

    Parameters
    ----------
    x
        Array of shape ``(batch, channels, *spatial)``.
    pads
        An int (every side of every spatial axis), one int per spatial axis (both sides),
        or one ``(before, after)`` pair per spatial axis; non-negative.
    value
        The constant (``float("-inf")`` for max pooling).
    xp
        Namespace of ``x``; inferred when ``None``.
    native
        Use the library's own pad (``torch.nn.functional.pad``, ``jnp.pad``, ``np.pad``)
        where there is one; ``False`` forces the portable ``concat`` version.

    Returns
    -------
    array
        The padded array, the library and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> pad(np.ones((1, 1, 2)), ((1, 0),)).tolist()
    [[[0.0, 1.0, 1.0]]]
    """
    xp = array_namespace(x=x) if xp is None else xp
    pairs = normalize_pads(pads, _spatial(tuple(x.shape), "x"), "pads")
    return pad_array(x, pairs, value, xp, native)


def pad_transpose(v: Array, pads: object, *, xp: ModuleType | None = None) -> Array:
    r"""Adjoint of zero padding: crop ``pads`` off the spatial axes of ``v``.

    .. math:: \langle \mathrm{pad}(x), v\rangle = \langle x, \mathrm{pad}^\top(v)\rangle,
        \qquad \mathrm{pad}^\top(v)[n, c, i] = v[n, c, i + b]

    Parameters
    ----------
    v
        Array of shape ``(batch, channels, *spatial)``, the padded shape.
    pads
        As for :func:`pad`.
    xp
        Accepted for a uniform signature; cropping is plain slicing.

    Returns
    -------
    array
        ``v`` without the padding (a view where the library has them).

    Examples
    --------
    >>> import numpy as np
    >>> pad_transpose(np.arange(4.0).reshape(1, 1, 4), ((1, 2),)).tolist()
    [[[1.0]]]
    """
    if xp is None:
        array_namespace(v=v)  # a supported array
    shape = tuple(v.shape)
    pairs = normalize_pads(pads, _spatial(shape, "v"), "pads")
    if any(b + a >= n for (b, a), n in zip(pairs, shape[2:], strict=True)):
        raise ValueError(f"pads {pairs} remove all of v's spatial shape {shape[2:]}.")
    return v[(slice(None), slice(None)) + tuple(
        slice(b, n - a) for (b, a), n in zip(pairs, shape[2:], strict=True)
    )]
