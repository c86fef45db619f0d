"""Building blocks of the sliding-window ops: padding, reading every kernel tap as one
strided slice ("gather"), and its adjoint, adding per-tap arrays back into a padded
array ("scatter").

The portable versions use only the array API standard (``concat``, ``full``, slicing and
``array_api_extra.at(...).add``, which is a functional update on JAX and an update of a
buffer made here elsewhere: the caller's arrays are never written). Native versions are
picked per namespace; torch, jax and numpy are imported lazily inside their branch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from types import ModuleType
from typing import Any

import array_api_extra as xpx
from array_api_compat import device, is_jax_namespace, is_numpy_namespace, is_torch_namespace

from relprop._xp import Array
from relprop.ops._args import Pads, Window

__all__ = ["gather", "jax_jit", "pad_array", "scatter"]


@functools.lru_cache(maxsize=512)
def jax_jit(fn: Callable[..., Any], *static: Any) -> Callable[..., Any]:
    """``jax.jit(partial(fn, *static))``, made once per function and static arguments
    (window geometry, groups, namespace). Eager JAX compiles every primitive separately;
    one compiled op is several times faster to build and to run, and inside a user's
    ``jax.jit`` it is simply inlined."""
    import jax

    return jax.jit(functools.partial(fn, *static))


def pad_array(x: Array, pads: Pads, value: float, xp: ModuleType, native: bool) -> Array:
    """``x`` padded on its trailing ``len(pads)`` axes with the constant ``value``."""
    if not any(side for pair in pads for side in pair):
        return x
    lead = x.ndim - len(pads)
    if native and is_torch_namespace(xp):
        import torch

        flat = [side for pair in reversed(pads) for side in pair]
        return torch.nn.functional.pad(x, flat, mode="constant", value=value)
    if native and is_jax_namespace(xp):
        import jax.numpy as jnp

        return jnp.pad(x, ((0, 0),) * lead + tuple(pads), constant_values=value)
    if native and is_numpy_namespace(xp):
        import numpy as np

        return np.pad(x, ((0, 0),) * lead + tuple(pads), constant_values=value)
    for axis, (before, after) in enumerate(pads, start=lead):
        if not (before or after):
            continue
        parts = []
        for width in (before, after):
            shape = tuple(width if i == axis else n for i, n in enumerate(x.shape))
            parts.append(xp.full(shape, value, dtype=x.dtype, device=device(x)))
        x = xp.concat([parts[0], x, parts[1]], axis=axis)
    return x


def gather(xpad: Array, win: Window) -> list[Array]:
    """Every kernel tap of ``win`` as one strided slice of the padded input, each of shape
    ``(batch, channels, *output)``, in row-major kernel order (views where the library
    has them)."""
    return [xpad[win.taps(offset)] for offset in win.offsets()]


def scatter(
    parts: Iterable[Array], win: Window, lead: tuple[int, int], dtype: object, dev: object,
    xp: ModuleType, native: bool,
) -> Array:
    """Adjoint of :func:`gather`: the padded array ``sum_k place_k(parts[k])``, shape
    ``(*lead, *win.padded)``, where ``place_k`` puts tap ``k``'s array where
    :func:`gather` read it.

    Portable: ``array_api_extra.at(buffer, taps).add(part)`` on a zero buffer made here.
    Native JAX: ``lax.pad`` with interior padding (zero insertion) per tap, then a sum.
    """
    if native and is_jax_namespace(xp):
        from jax import lax

        total = None
        for offset, part in zip(win.offsets(), parts, strict=True):
            config = [(0, 0, 0), (0, 0, 0)]
            for t, d, s, o, size in zip(
                offset, win.dilation, win.stride, win.output, win.padded, strict=True
            ):
                low = t * d
                config.append((low, size - low - (s * (o - 1) + 1), s - 1))
            placed = lax.pad(part, xp.asarray(0, dtype=part.dtype), config)
            total = placed if total is None else total + placed
        assert total is not None
        return total
    buffer = xp.zeros((*lead, *win.padded), dtype=dtype, device=dev)
    for offset, part in zip(win.offsets(), parts, strict=True):
        buffer = xpx.at(buffer, win.taps(offset)).add(part)
    return buffer
