"""jax.vjp adapter (traceable under jax.jit)."""

from __future__ import annotations

from collections.abc import Callable

import jax

from relprop._xp import Array


def vjp(fn: Callable[[Array], Array], x: Array, v: Array) -> Array:
    """``J^T v`` by ``jax.vjp``."""
    _, pullback = jax.vjp(fn, x)
    (result,) = pullback(v)
    return result
