"""Pooling (1d, 2d, 3d, channels first) and the adjoints relevance propagation needs.

- :func:`max_pool` and :func:`max_pool_vjp`, which routes a cotangent to each window's
  maxima, **splitting it evenly among tied maxima** (torch and JAX route a tie to one
  element each, chosen by implementation details; an even split is the symmetric choice
  and is the same on every backend, native or portable).
- :func:`avg_pool` and :func:`avg_pool_transpose` (its adjoint), with torch's
  ``ceil_mode`` and ``count_include_pad`` semantics.
- :func:`adaptive_avg_pool` and :func:`adaptive_avg_pool_transpose`, with torch's windows
  ``[floor(i L / m), ceil((i + 1) L / m))``; :func:`adaptive_max_pool` and
  :func:`adaptive_max_pool_vjp` on the same windows (ties split evenly).

Each op has a portable array-API implementation (one strided slice of the padded input
per kernel tap; the adjoints add per-tap arrays back with ``array_api_extra.at``) and
native fast paths: ``torch.nn.functional`` pools (transposes: ``conv_transpose`` with a
kernel of ones), ``jax.lax.reduce_window`` (transposes: ``jax.linear_transpose``; every
JAX path is one ``jax.jit``-compiled function per geometry) and ``np.pad``. On NumPy the
per-tap views are themselves the fast path (reducing a ``sliding_window_view`` over its
window axes measured 2-8x slower). ``native=False`` forces the portable version.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import device, is_jax_namespace, is_numpy_namespace, is_torch_namespace

from relprop._xp import Array, array_namespace
from relprop.ops._args import (
    Window,
    check_floating,
    memoized,
    normalize_padding,
    normalize_size,
    spatial_dims,
    window,
)
from relprop.ops._separable import apply_per_axis
from relprop.ops._windows import gather, jax_jit, pad_array, scatter

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool_transpose",
    "adaptive_max_pool",
    "adaptive_max_pool_vjp",
    "avg_pool",
    "avg_pool_transpose",
    "max_pool",
    "max_pool_vjp",
]

_NEG_INF = float("-inf")


@memoized
def _pool_geometry(
    shape: Sequence[int], kernel_size: object, stride: object, padding: object,
    dilation: object, ceil_mode: bool, name: str = "x",
) -> Window:
    n = spatial_dims(shape, name)
    kernel = normalize_size(kernel_size, n, "kernel_size")
    stride_t = kernel if stride is None else normalize_size(stride, n, "stride")
    dilation_t = normalize_size(dilation, n, "dilation")
    pads = normalize_padding(padding, n, kernel, stride_t, dilation_t)
    for k, d, pair in zip(kernel, dilation_t, pads, strict=True):
        half = (d * (k - 1) + 1) // 2
        if max(pair) > half:
            raise ValueError(
                f"padding {padding!r} is more than half of the (dilated) kernel "
                f"{kernel} (dilation {dilation_t}); pooling windows would lie in the "
                f"padding alone (torch refuses this too)."
            )
    return window(shape, kernel, stride_t, dilation_t, pads, ceil_mode=bool(ceil_mode))


def _symmetric_pads(win: Window) -> tuple[int, ...] | None:
    """Per-axis padding if every axis is padded equally on both sides, else ``None``."""
    if all(b == a for b, a in win.pads):
        return tuple(b for b, _ in win.pads)
    return None


def _divisor(win: Window, include_pad: bool, x: Array, xp: ModuleType) -> Array:
    """Average-pooling divisor per output element, shape ``output``, dtype of ``x``."""
    import numpy as np

    table = functools.reduce(np.multiply.outer, [np.asarray(c, dtype=np.float64)
                                                 for c in win.counts(include_pad)])
    return xp.asarray(table.tolist(), dtype=x.dtype, device=device(x))


# ---------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------


def _max_pool_portable(x: Array, win: Window, xp: ModuleType, native_pad: bool) -> Array:
    xpad = pad_array(x, win.full_pads, _NEG_INF, xp, native_pad)
    parts = gather(xpad, win)
    top = parts[0]
    for part in parts[1:]:
        top = xp.maximum(top, part)
    return top


def _max_pool_jax(win: Window, xp: ModuleType, x: Array) -> Array:
    if any(d != 1 for d in win.dilation):
        # JAX cannot differentiate a dilated max reduce_window; slices it can
        return _max_pool_portable(x, win, xp, native_pad=True)
    import numpy as np
    from jax import lax

    # a concrete (NumPy) init value lets JAX see the max monoid, which it can differentiate
    return lax.reduce_window(
        x, np.asarray(_NEG_INF, dtype=x.dtype), lax.max, (1, 1, *win.kernel),
        (1, 1, *win.stride), ((0, 0), (0, 0), *win.full_pads),
    )


def _max_pool_native(x: Array, win: Window, xp: ModuleType) -> Array | None:
    if is_torch_namespace(xp):
        import torch

        F = torch.nn.functional
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[win.ndim - 1]
        pads = _symmetric_pads(win)
        # with an overhang torch needs ceil_mode; without one, ceil and floor agree
        ceil = any(o > 0 for o in win.extra)
        if pads is not None:
            return fn(x, win.kernel, win.stride, pads, win.dilation, ceil_mode=ceil)
        x = pad_array(x, win.full_pads, _NEG_INF, xp, True)
        return fn(x, win.kernel, win.stride, 0, win.dilation, ceil_mode=False)
    if is_jax_namespace(xp):
        return jax_jit(_max_pool_jax, win, xp)(x)
    if is_numpy_namespace(xp):
        # per-tap strided views and np.maximum: 5-8x faster here than reducing a
        # sliding_window_view over its (non-contiguous) window axes
        return _max_pool_portable(x, win, xp, native_pad=True)
    return None


def max_pool(
    x: Array, kernel_size: object, stride: object = None, padding: object = 0,
    dilation: object = 1, ceil_mode: bool = False, *, xp: ModuleType | None = None,
    native: bool = True,
) -> Array:
    r"""1d, 2d or 3d max pooling, channels first, padding with :math:`-\infty`.

    .. math:: y[n, c, j] = \max_{t} \tilde x[n, c, j \cdot s + t \cdot d]

    over the kernel taps ``t`` (multi-indices), :math:`\tilde x` the input padded with
    :math:`-\infty` (so padding never wins).

    Parameters
    ----------
    x
        ``(batch, channels, length)`` or ``(batch, channels, height, width)``.
    kernel_size, stride, dilation
        An int or one int per spatial axis; ``stride=None`` means ``kernel_size``.
    padding
        An int, one int per axis, or one ``(before, after)`` pair per axis; at most half
        the dilated kernel, as in torch.
    ceil_mode
        Round the output size up (a last partial window), as in torch: an input smaller
        than the kernel then still gives one window, where each window must start
        inside the input or the padding before it.
    xp, native
        Namespace (inferred when ``None``); ``native=False`` forces the portable version.

    Returns
    -------
    array
        ``(batch, channels, *output)``, the library and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> max_pool(np.array([[[1.0, 3.0, 2.0, 0.0, 5.0]]]), 2, ceil_mode=True).tolist()
    [[[3.0, 2.0, 5.0]]]
    """
    if xp is None:
        xp = array_namespace(x=x)
    check_floating(xp, x=x)
    win = _pool_geometry(tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode)
    if native:
        out = _max_pool_native(x, win, xp)
        if out is not None:
            return out
    return _max_pool_portable(x, win, xp, native_pad=False)


def max_pool_vjp(
    x: Array, v: Array, kernel_size: object, stride: object = None, padding: object = 0,
    dilation: object = 1, ceil_mode: bool = False, *, xp: ModuleType | None = None,
    native: bool = True, ties: str = "split",
) -> Array:
    r"""Route ``v`` back through :func:`max_pool` to the window maxima, ties split evenly.

    .. math::

        g[n, c, i] = \sum_{j, t:\; j s + t d = i + b}
            \frac{[\tilde x[n, c, i + b] = y[n, c, j]]}{\#\{t' : \tilde x[n, c, j s + t' d]
            = y[n, c, j]\}}\; v[n, c, j]

    with ``y = max_pool(x)`` and ``b`` the padding before. Without ties this is the exact
    vector-Jacobian product (the gradient). Where a window has several maximal elements
    the gradient is not defined; torch and JAX give all of ``v`` to one of them, chosen by
    implementation details, whereas this function gives each of the ``m`` tied elements
    ``v / m`` — the same on every backend and in the native and portable paths (the
    winner mask is computed portably; only padding and the spread-back are native).
    Either way the sum of ``v`` is conserved.

    Parameters
    ----------
    x
        The pooling input.
    v
        Cotangent, the shape of ``max_pool(x, ...)``.
    kernel_size, stride, padding, dilation, ceil_mode, xp, native
        As for :func:`max_pool`.
    ties
        ``"split"`` (default): ``v`` split evenly among tied maxima; ``"first"``: all of
        ``v`` to the first maximum in row-major window order, as torch's CPU and CUDA
        kernels route it (what zennit's gradient-family composites see).

    Returns
    -------
    array
        The shape, library and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[1.0, 3.0, 2.0, 2.0]]])
    >>> max_pool_vjp(x, np.array([[[1.0, 1.0]]]), 2).tolist()
    [[[0.0, 1.0, 0.5, 0.5]]]
    """
    if xp is None:
        xp = array_namespace(x=x, v=v)
    check_floating(xp, x=x, v=v)
    win = _pool_geometry(tuple(x.shape), kernel_size, stride, padding, dilation, ceil_mode)
    expected = (x.shape[0], x.shape[1], *win.output)
    if tuple(v.shape) != expected:
        raise ValueError(f"v has shape {tuple(v.shape)}; max_pool of x gives {expected}.")
    if ties not in ("split", "first"):
        raise ValueError(f"ties must be 'split' or 'first'; got {ties!r}.")
    if native and is_jax_namespace(xp):
        return jax_jit(_max_pool_vjp_impl, win, xp, True, ties)(x, v)
    return _max_pool_vjp_impl(win, xp, native, ties, x, v)


def _first_only(winners: list[Array], xp: ModuleType) -> list[Array]:
    """Each window's first winner (in tap order) alone."""
    taken = xp.zeros_like(winners[0])
    first = []
    for mask in winners:
        first.append(mask & ~taken)
        taken = taken | mask
    return first


def _max_pool_vjp_impl(
    win: Window, xp: ModuleType, native: bool, ties: str, x: Array, v: Array
) -> Array:
    xpad = pad_array(x, win.full_pads, _NEG_INF, xp, native)
    parts = gather(xpad, win)
    top = parts[0]
    for part in parts[1:]:
        top = xp.maximum(top, part)
    winners = [part == top for part in parts]
    if ties == "first":
        winners = _first_only(winners, xp)
        share = v
    else:
        count = xp.astype(winners[0], x.dtype)
        for mask in winners[1:]:
            count = count + xp.astype(mask, x.dtype)
        share = v / count
    zero = xp.zeros_like(share)
    placed = (xp.where(mask, share, zero) for mask in winners)
    padded = scatter(placed, win, (x.shape[0], x.shape[1]), x.dtype, device(x), xp, native)
    return padded[win.crop()]


# ---------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------


def _avg_pool_jax(win: Window, count_include_pad: bool, xp: ModuleType, x: Array) -> Array:
    import numpy as np
    from jax import lax

    # a concrete (NumPy) init value lets JAX see the sum monoid, which it can transpose
    total = lax.reduce_window(
        x, np.asarray(0, dtype=x.dtype), lax.add, (1, 1, *win.kernel),
        (1, 1, *win.stride), ((0, 0), (0, 0), *win.full_pads),
    )
    return total / _divisor(win, count_include_pad, x, xp)


def _avg_pool_transpose_jax(
    shape: tuple[int, ...], win: Window, count_include_pad: bool, xp: ModuleType, v: Array
) -> Array:
    import jax

    def forward(a: Array) -> Array:
        return _avg_pool_jax(win, count_include_pad, xp, a)

    (result,) = jax.linear_transpose(forward, jax.ShapeDtypeStruct(shape, v.dtype))(v)
    return result


def _avg_pool_native(
    x: Array, win: Window, count_include_pad: bool, xp: ModuleType
) -> Array | None:
    if is_torch_namespace(xp):
        import torch

        F = torch.nn.functional
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[win.ndim - 1]
        pads = _symmetric_pads(win)
        # torch's avg_pool3d refuses an axis shorter than the kernel, padded or not
        short = win.ndim == 3 and any(s < k for s, k in zip(win.input, win.kernel, strict=True))
        if pads is not None and not short:
            ceil = any(o > 0 for o in win.extra)
            return fn(x, win.kernel, win.stride, pads, ceil, count_include_pad)
        # asymmetric (or short): pad by hand (torch divides by the kernel size), rescale
        mean = fn(pad_array(x, win.full_pads, 0.0, xp, True), win.kernel, win.stride, 0)
        return mean * (float(win.size) / _divisor(win, count_include_pad, x, xp))
    if is_jax_namespace(xp):
        return jax_jit(_avg_pool_jax, win, count_include_pad, xp)(x)
    if is_numpy_namespace(xp):
        # per-tap strided views: 2-4x faster here than summing a sliding_window_view
        return _avg_pool_portable(x, win, count_include_pad, xp, native_pad=True)
    return None


def _avg_pool_portable(
    x: Array, win: Window, count_include_pad: bool, xp: ModuleType, native_pad: bool = False
) -> Array:
    xpad = pad_array(x, win.full_pads, 0.0, xp, native_pad)
    parts = gather(xpad, win)
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total / _divisor(win, count_include_pad, x, xp)


def avg_pool(
    x: Array, kernel_size: object, stride: object = None, padding: object = 0,
    ceil_mode: bool = False, count_include_pad: bool = True, *, xp: ModuleType | None = None,
    native: bool = True,
) -> Array:
    r"""1d, 2d or 3d average pooling, channels first, with torch's semantics.

    .. math:: y[n, c, j] = \frac{1}{D_j} \sum_{t} \tilde x[n, c, j \cdot s + t]

    with :math:`\tilde x` the zero-padded input and :math:`D_j` the number of taps of
    window ``j`` on the input and the padding (``count_include_pad=True``) or on the
    input only (``False``); with ``ceil_mode`` the part of a last window beyond the
    padding is never counted.

    Parameters
    ----------
    x
        ``(batch, channels, *spatial)`` with one, two or three spatial axes.
    kernel_size, stride, padding, ceil_mode
        As for :func:`max_pool` (no dilation).
    count_include_pad
        Whether padded zeros count in the divisor.
    xp, native
        Namespace (inferred when ``None``); ``native=False`` forces the portable version.

    Returns
    -------
    array
        ``(batch, channels, *output)``, the library and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> avg_pool(np.array([[[1.0, 3.0, 2.0]]]), 2, padding=1).tolist()
    [[[0.5, 2.5]]]
    >>> avg_pool(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]), 3, ceil_mode=True).tolist()
    [[[[2.5]]]]
    """
    if xp is None:
        xp = array_namespace(x=x)
    check_floating(xp, x=x)
    win = _pool_geometry(tuple(x.shape), kernel_size, stride, padding, 1, ceil_mode)
    if native:
        out = _avg_pool_native(x, win, count_include_pad, xp)
        if out is not None:
            return out
    return _avg_pool_portable(x, win, count_include_pad, xp)


def avg_pool_transpose(
    v: Array, input_shape: Sequence[int], kernel_size: object, stride: object = None,
    padding: object = 0, ceil_mode: bool = False, count_include_pad: bool = True, *,
    xp: ModuleType | None = None, native: bool = True,
) -> Array:
    r"""Adjoint of :func:`avg_pool`: spread each ``v[n, c, j] / D_j`` over window ``j``.

    .. math:: g[n, c, i] = \sum_{j, t:\; j s + t = i + b} \frac{v[n, c, j]}{D_j}

    Parameters
    ----------
    v
        ``(batch, channels, *output)``, the shape of ``avg_pool``'s output.
    input_shape
        Shape of the pooling input (several give one output size when the stride is > 1).
    kernel_size, stride, padding, ceil_mode, count_include_pad, xp, native
        As for :func:`avg_pool` (native: ``torch.nn.functional.conv_transpose*d`` with a
        kernel of ones, ``jax.linear_transpose`` of ``lax.reduce_window``).

    Returns
    -------
    array
        ``input_shape``, the library and dtype of ``v``.

    Examples
    --------
    >>> import numpy as np
    >>> avg_pool_transpose(np.array([[[2.0, 4.0]]]), (1, 1, 4), 2).tolist()
    [[[1.0, 1.0, 2.0, 2.0]]]
    """
    if xp is None:
        xp = array_namespace(v=v)
    check_floating(xp, v=v)
    shape = tuple(int(s) for s in input_shape)
    win = _pool_geometry(shape, kernel_size, stride, padding, 1, ceil_mode, "input_shape")
    expected = (shape[0], shape[1], *win.output)
    if tuple(v.shape) != expected:
        raise ValueError(
            f"v has shape {tuple(v.shape)}, but avg_pool of an input of shape {shape} gives "
            f"{expected}."
        )
    if native and is_torch_namespace(xp):
        import torch

        from relprop.ops.conv import _conv_transpose_torch

        channels = shape[1]
        ones = torch.ones((channels, 1, *win.kernel), dtype=v.dtype, device=v.device)
        # the conv geometry of the pool: the ceil-mode overhang becomes padding after
        conv_win = window(shape, win.kernel, win.stride, win.dilation, win.full_pads)
        share = v / _divisor(win, count_include_pad, v, xp)
        return _conv_transpose_torch(share, ones, shape, conv_win, channels)
    if native and is_jax_namespace(xp):
        return jax_jit(_avg_pool_transpose_jax, shape, win, count_include_pad, xp)(v)
    share = v / _divisor(win, count_include_pad, v, xp)
    padded = scatter(
        (share for _ in range(win.size)), win, (shape[0], shape[1]), v.dtype, device(v), xp,
        native,
    )
    return padded[win.crop()]


# ---------------------------------------------------------------------------------------
# adaptive average pooling
# ---------------------------------------------------------------------------------------


def _adaptive_sizes(output_size: object, spatial: tuple[int, ...]) -> tuple[int, ...]:
    n = len(spatial)
    if output_size is None or isinstance(output_size, int):
        items: list = [output_size] * n
    elif isinstance(output_size, Sequence) and len(output_size) == n:
        items = list(output_size)
    else:
        raise ValueError(
            f"output_size must be an int or a tuple of {n} ints (None keeps an axis' "
            f"size); got {output_size!r}."
        )
    sizes = tuple(s if item is None else item for item, s in zip(items, spatial, strict=True))
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes):
        raise ValueError(f"output_size must be positive ints; got {output_size!r}.")
    return sizes


@functools.lru_cache(maxsize=256)
def _adaptive_matrix(length: int, size: int) -> np.ndarray:
    """``(size, length)`` averaging matrix of torch's adaptive windows (float64)."""
    matrix = np.zeros((size, length))
    for i in range(size):
        start, end = (i * length) // size, -((-(i + 1) * length) // size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def _adaptive_matrices(spatial: Sequence[int], sizes: Sequence[int]) -> list[np.ndarray]:
    return [_adaptive_matrix(int(n), int(m)) for n, m in zip(spatial, sizes, strict=True)]


def adaptive_avg_pool(
    x: Array, output_size: object, *, xp: ModuleType | None = None, native: bool = True
) -> Array:
    r"""Adaptive average pooling to a fixed output size (torch's windows).

    .. math::

        y[n, c, i] = \frac{1}{e_i - s_i} \sum_{k = s_i}^{e_i - 1} x[n, c, k], \qquad
        s_i = \lfloor i L / m \rfloor,\ e_i = \lceil (i + 1) L / m \rceil

    per spatial axis (input size ``L``, output size ``m``); ``output_size=1`` is global
    average pooling.

    Parameters
    ----------
    x
        ``(batch, channels, *spatial)`` with one, two or three spatial axes.
    output_size
        An int or one int per spatial axis (``None`` keeps that axis).
    xp, native
        Namespace (inferred when ``None``); native: ``torch.nn.functional.adaptive_avg_pool*d``
        and a plain mean for global pooling; ``native=False`` forces the portable version
        (one averaging matrix per axis, applied with ``matmul``).

    Returns
    -------
    array
        ``(batch, channels, *output_size)``, the library and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_avg_pool(np.array([[[1.0, 2.0, 4.0]]]), 2).tolist()
    [[[1.5, 3.0]]]
    """
    if xp is None:
        xp = array_namespace(x=x)
    check_floating(xp, x=x)
    n = spatial_dims(tuple(x.shape))
    spatial = tuple(int(s) for s in x.shape[2:])
    sizes = _adaptive_sizes(output_size, spatial)
    if native and is_torch_namespace(xp):
        import torch

        F = torch.nn.functional
        fn: Any = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[n - 1]
        return fn(x, sizes)
    if native and all(s == 1 for s in sizes):
        return xp.mean(x, axis=tuple(range(2, 2 + n)), keepdims=True)
    return apply_per_axis(x, _adaptive_matrices(spatial, sizes), False, xp)


def adaptive_avg_pool_transpose(
    v: Array, input_shape: Sequence[int], *, xp: ModuleType | None = None, native: bool = True
) -> Array:
    r"""Adjoint of :func:`adaptive_avg_pool`: spread ``v[n, c, i] / (e_i - s_i)`` over
    window ``i`` (the output size is ``v``'s spatial shape).

    .. math:: g[n, c, k] = \sum_{i:\; s_i \le k < e_i} \frac{v[n, c, i]}{e_i - s_i}

    Parameters
    ----------
    v
        ``(batch, channels, *output_size)``.
    input_shape
        Shape of the pooling input ``(batch, channels, *spatial)``.
    xp, native
        As for :func:`adaptive_avg_pool` (native: a broadcast for global pooling).

    Returns
    -------
    array
        ``input_shape``, the library and dtype of ``v``.

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_avg_pool_transpose(np.array([[[3.0]]]), (1, 1, 3)).tolist()
    [[[1.0, 1.0, 1.0]]]
    """
    if xp is None:
        xp = array_namespace(v=v)
    check_floating(xp, v=v)
    shape = tuple(int(s) for s in input_shape)
    n = spatial_dims(shape, "input_shape")
    if len(v.shape) != n + 2 or tuple(v.shape[:2]) != shape[:2]:
        raise ValueError(
            f"v has shape {tuple(v.shape)}; an adaptive pool of an input of shape {shape} "
            f"gives (batch, channels) = {shape[:2]} and {n} spatial axes."
        )
    spatial = shape[2:]
    if native and all(s == 1 for s in v.shape[2:]):
        zeros = xp.zeros(shape, dtype=v.dtype, device=device(v))
        return zeros + v / float(math.prod(spatial))
    return apply_per_axis(v, _adaptive_matrices(spatial, tuple(v.shape[2:])), True, xp)


# ---------------------------------------------------------------------------------------
# adaptive max pooling
# ---------------------------------------------------------------------------------------


def _adaptive_bounds(length: int, size: int) -> list[tuple[int, int]]:
    """torch's adaptive windows ``[floor(i L / m), ceil((i + 1) L / m))``."""
    return [((i * length) // size, -((-(i + 1) * length) // size)) for i in range(size)]


@functools.lru_cache(maxsize=256)
def _window_gather(length: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(size * k, length)`` one-hot matrix that reads window ``i``'s ``k`` taps
    (``k`` the widest window; a narrower window repeats its last element), and the
    ``(size, k)`` mask of the taps that are really in the window."""
    bounds = _adaptive_bounds(length, size)
    width = max(end - start for start, end in bounds)
    matrix = np.zeros((size * width, length))
    valid = np.zeros((size, width), dtype=bool)
    for i, (start, end) in enumerate(bounds):
        for k in range(width):
            matrix[i * width + k, min(start + k, end - 1)] = 1.0
            valid[i, k] = start + k < end
    return matrix, valid


def _adaptive_windows(
    x: Array, sizes: tuple[int, ...], xp: ModuleType
) -> tuple[Array, Array, list[np.ndarray]]:
    """Every window of ``x`` as ``(batch, channels, m_1, k_1, m_2, k_2, ...)`` with the
    taps outside a window at -inf, the validity mask, and the gather matrices."""
    gathers = [_window_gather(int(n), m) for n, m in zip(x.shape[2:], sizes, strict=True)]
    read = apply_per_axis(x, [g for g, _ in gathers], False, xp)
    split: list[int] = []
    for m, (_, valid) in zip(sizes, gathers, strict=True):
        split += [m, valid.shape[1]]
    windows = xp.reshape(read, (x.shape[0], x.shape[1], *split))
    valid = functools.reduce(np.multiply.outer, [v for _, v in gathers])
    # the outer product orders axes (m_1, k_1, m_2, k_2, ...) already
    mask = xp.asarray(valid.reshape((1, 1, *split)), device=device(x))
    low = xp.full_like(windows, _NEG_INF)
    return xp.where(mask, windows, low), mask, [g for g, _ in gathers]


def _first_in_window(winners: Array, n: int, xp: ModuleType) -> Array:
    """``winners`` (``(batch, channels, m_1, k_1, ...)``) with only each window's first
    ``True`` in row-major ``(k_1, k_2, ...)`` order kept."""
    shape = tuple(winners.shape)
    order = (0, 1, *(2 + 2 * i for i in range(n)), *(3 + 2 * i for i in range(n)))
    moved = xp.permute_dims(winners, order)
    flat = xp.reshape(moved, (*moved.shape[:2 + n], -1))
    counts = xp.cumulative_sum(xp.astype(flat, xp.int32), axis=-1)
    first = xp.reshape(flat & (counts == 1), moved.shape)
    back = [order.index(i) for i in range(len(shape))]
    return xp.permute_dims(first, tuple(back))


def _tap_axes(n: int) -> tuple[int, ...]:
    return tuple(3 + 2 * i for i in range(n))


def adaptive_max_pool(
    x: Array, output_size: object, *, xp: ModuleType | None = None
) -> Array:
    r"""Adaptive max pooling to a fixed output size, with torch's (possibly overlapping)
    windows.

    .. math:: y[n, c, i] = \max_{s_i \le k < e_i} x[n, c, k], \qquad
        s_i = \lfloor i L / m \rfloor,\; e_i = \lceil (i + 1) L / m \rceil

    per spatial axis. Portable: the windows are read by one-hot matrix products per axis
    (exact), padded to the widest window with :math:`-\infty`.

    Parameters
    ----------
    x
        ``(batch, channels, *spatial)`` with one, two or three spatial axes.
    output_size
        An int or one int per spatial axis (``None`` keeps that axis).
    xp
        Namespace of ``x``; inferred when ``None``.

    Returns
    -------
    array
        ``(batch, channels, *output_size)``, the library and dtype of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> adaptive_max_pool(np.array([[[1.0, 5.0, 2.0, 0.0, 3.0]]]), 3).tolist()
    [[[5.0, 5.0, 3.0]]]
    """
    if xp is None:
        xp = array_namespace(x=x)
    check_floating(xp, x=x)
    n = spatial_dims(tuple(x.shape))
    sizes = _adaptive_sizes(output_size, tuple(int(s) for s in x.shape[2:]))
    windows, _, _ = _adaptive_windows(x, sizes, xp)
    return xp.max(windows, axis=_tap_axes(n))


def adaptive_max_pool_vjp(
    x: Array, v: Array, *, xp: ModuleType | None = None, ties: str = "split"
) -> Array:
    r"""Route ``v`` back through :func:`adaptive_max_pool` to each window's maxima, ties
    split evenly or to the first (``ties``, as :func:`max_pool_vjp`); the output size is
    ``v``'s spatial shape.

    .. math:: g[n, c, k] = \sum_{i:\; s_i \le k < e_i}
        \frac{[x[n, c, k] = y[n, c, i]]}{\#\{k' \in [s_i, e_i) : x[n, c, k'] = y[n, c, i]\}}
        \, v[n, c, i]

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[1.0, 5.0, 2.0, 0.0, 3.0]]])
    >>> adaptive_max_pool_vjp(x, np.array([[[1.0, 1.0, 1.0]]])).tolist()
    [[[0.0, 2.0, 0.0, 0.0, 1.0]]]
    """
    if xp is None:
        xp = array_namespace(x=x, v=v)
    check_floating(xp, x=x, v=v)
    n = spatial_dims(tuple(x.shape))
    if len(v.shape) != n + 2 or tuple(v.shape[:2]) != tuple(x.shape[:2]):
        raise ValueError(
            f"v has shape {tuple(v.shape)}; an adaptive pool of x (shape {tuple(x.shape)}) "
            f"gives (batch, channels) = {tuple(x.shape[:2])} and {n} spatial axes."
        )
    sizes = tuple(int(s) for s in v.shape[2:])
    windows, mask, gathers = _adaptive_windows(x, sizes, xp)
    taps = _tap_axes(n)
    top = xp.max(windows, axis=taps, keepdims=True)
    winners = (windows == top) & mask
    share = v
    for axis in taps:  # (batch, channels, m_1, 1, m_2, 1, ...)
        share = xp.expand_dims(share, axis=axis)
    if ties == "first":  # the first winner in row-major window order, as torch
        winners = _first_in_window(winners, n, xp)
    else:
        share = share / xp.sum(xp.astype(winners, x.dtype), axis=taps, keepdims=True)
    placed = xp.where(winners, share, xp.zeros_like(windows))
    flat = xp.reshape(placed, (x.shape[0], x.shape[1],
                               *(g.shape[0] for g in gathers)))
    return apply_per_axis(flat, gathers, True, xp)
