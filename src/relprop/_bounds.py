"""The input bounds ``low <= x <= high`` of LRP-z^B and of the zB root points: one check.

The ZBox rule (:class:`relprop.rules.ZBox`) and the DTD root rule ``"zB"``
(:func:`relprop.dtd.root_point`) read the same bounds; :func:`input_bounds` turns them into
arrays like the input and checks them, so both accept the same values and refuse the same
mistakes with the same messages.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from relprop._checks import bound_like
from relprop._xp import Array, is_traced

__all__ = ["check_bound_order", "input_bounds"]


def _order_error(who: str, detail: str = "some low bound exceeds its high") -> ValueError:
    return ValueError(f"{who} needs low <= high everywhere; {detail}.")


def check_bound_order(low: Any, high: Any, who: str) -> None:
    """Refuse ``low > high`` when both bounds are Python numbers (before any array exists);
    arrays are checked by :func:`input_bounds`.

    Examples
    --------
    >>> check_bound_order(2.0, 1.0, "ZBox")
    Traceback (most recent call last):
    ...
    ValueError: ZBox needs low <= high everywhere; got low=2.0, high=1.0.
    """
    numbers = (int, float)
    if (isinstance(low, numbers) and not isinstance(low, bool) and isinstance(high, numbers)
            and not isinstance(high, bool) and low > high):
        raise _order_error(who, f"got low={low}, high={high}")


def input_bounds(
    low: float | Array | None,
    high: float | Array | None,
    x: Array,
    xp: ModuleType,
    *,
    who: str,
    x_name: str = "x",
    low_name: str = "low",
    high_name: str = "high",
) -> tuple[Array, Array]:
    """Both input bounds as arrays of ``x``'s shape, dtype and device, checked.

    Parameters
    ----------
    low, high
        Floats, or arrays broadcastable to ``x`` (of ``x``'s library).
    x
        The input the bounds are for.
    xp
        ``x``'s namespace.
    who
        How errors name the rule (``"ZBox"``, ``'rule "zB"'``).
    x_name, low_name, high_name
        How errors name ``x`` and the bounds (the user's argument names).

    Raises
    ------
    TypeError
        A bound is missing, or is an array of another library than ``x``.
    ValueError
        A bound does not broadcast to ``x``, or ``low > high`` somewhere (not checked
        while ``jax.jit`` traces: the values are unknown then).

    Examples
    --------
    >>> import numpy as np
    >>> low, high = input_bounds(0.0, np.array([1.0, 2.0]), np.ones((3, 2)), np, who="ZBox")
    >>> low.shape, high[0].tolist()
    ((3, 2), [1.0, 2.0])
    """
    if low is None or high is None:
        raise TypeError(
            f"{who} needs the input bounds {low_name}= and {high_name}= (floats or arrays "
            f"broadcastable to {x_name})."
        )
    check_bound_order(low, high, who)
    lo = bound_like(low, x, xp, low_name, x_name)
    hi = bound_like(high, x, xp, high_name, x_name)
    inverted = xp.any(lo > hi)
    if not is_traced(inverted) and bool(inverted):
        raise _order_error(who)
    return lo, hi
