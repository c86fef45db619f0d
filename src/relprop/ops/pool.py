"""Pooling (1d, 2d, channels first) and the adjoints relevance propagation needs.

- :func:`max_pool` and :func:`max_pool_vjp`, which routes a cotangent to each window's
  maxima, **splitting it evenly among tied maxima** (torch and JAX route a tie to one
  element each, chosen by implementation details; an even split is the symmetric choice
  and is the same on every backend, native or portable).
- :func:`avg_pool` and :func:`avg_pool_transpose` (its adjoint), with torch's
  ``ceil_mode`` and ``count_include_pad`` semantics.
- :func:`adaptive_avg_pool` and :func:`adaptive_avg_pool_transpose`, with torch's windows
  ``[floor(i L / m), ceil((i + 1) L / m))``.

Each op has a portable array-API implementation (one strided slice of the padded input
per kernel tap; the adjoints add per-tap arrays back with ``array_api_extra.at``) and
native fast paths: ``torch.nn.functional`` pools (transposes: ``conv_transpose`` with a
kernel of ones), ``jax.lax.reduce_window`` (transposes: ``jax.linear_transpose``; every
JAX path is one ``jax.jit``-compiled function per geometry) and ``np.pad``. On NumPy the
per-tap views are themselves the fast path (reducing a ``sliding_window_view`` over its
window axes measured 2-8x slower). ``native=False`` forces the portable version.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType

from array_api_compat import device, is_jax_namespace, is_numpy_namespace, is_torch_namespace

from relprop._xp import Array, array_namespace
from relprop.ops._args import (
    Window,
    check_floating,
    normalize_padding,
    normalize_size,
    spatial_dims,
    window,
)
from relprop.ops._windows import gather, jax_jit, pad_array, scatter

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool_transpose",
    "avg_pool",
    "avg_pool_transpose",
    "max_pool",
    "max_pool_vjp",
]

_NEG_INF = float("-inf")


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
    counts = win.counts(include_pad)
    table: list = counts[0]
    if win.ndim == 2:
        table = [[float(a * b) for b in counts[1]] for a in counts[0]]
    return xp.asarray(table, dtype=x.dtype, device=device(x))


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

        fn = (torch.nn.functional.max_pool1d, torch.nn.functional.max_pool2d)[win.ndim - 1]
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
    r"""1d or 2d max pooling, channels first, padding with :math:`-\infty`.

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
        Round the output size up (a last partial window), as in torch.
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
    native: bool = True,
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
    if native and is_jax_namespace(xp):
        return jax_jit(_max_pool_vjp_impl, win, xp, True)(x, v)
    return _max_pool_vjp_impl(win, xp, native, x, v)


def _max_pool_vjp_impl(win: Window, xp: ModuleType, native: bool, x: Array, v: Array) -> Array:
    xpad = pad_array(x, win.full_pads, _NEG_INF, xp, native)
    parts = gather(xpad, win)
    top = parts[0]
    for part in parts[1:]:
        top = xp.maximum(top, part)
    winners = [part == top for part in parts]
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

        fn = (torch.nn.functional.avg_pool1d, torch.nn.functional.avg_pool2d)[win.ndim - 1]
        pads = _symmetric_pads(win)
        if pads is not None:
            ceil = any(o > 0 for o in win.extra)
            return fn(x, win.kernel, win.stride, pads, ceil, count_include_pad)
        # asymmetric: pad by hand (torch divides by the kernel size), then rescale
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
    r"""1d or 2d average pooling, channels first, with torch's semantics.

    .. math:: y[n, c, j] = \frac{1}{D_j} \sum_{t} \tilde x[n, c, j \cdot s + t]

    with :math:`\tilde x` the zero-padded input and :math:`D_j` the number of taps of
    window ``j`` on the input and the padding (``count_include_pad=True``) or on the
    input only (``False``); with ``ceil_mode`` the part of a last window beyond the
    padding is never counted.

    Parameters
    ----------
    x
        ``(batch, channels, *spatial)`` with one or two spatial axes.
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


def _adaptive_matrix(length: int, size: int, like: Array, xp: ModuleType) -> Array:
    """``(size, length)`` averaging matrix of torch's adaptive windows."""
    rows = []
    for i in range(size):
        start, end = (i * length) // size, -((-(i + 1) * length) // size)
        rows.append([1.0 / (end - start) if start <= j < end else 0.0 for j in range(length)])
    return xp.asarray(rows, dtype=like.dtype, device=device(like))


def _adaptive_portable(x: Array, sizes: tuple[int, ...], xp: ModuleType) -> Array:
    spatial = tuple(x.shape[2:])
    last = _adaptive_matrix(spatial[-1], sizes[-1], x, xp)
    out = xp.matmul(x, xp.matrix_transpose(last))
    if len(spatial) == 2:
        out = xp.matmul(_adaptive_matrix(spatial[0], sizes[0], x, xp), out)
    return out


def _adaptive_transpose_portable(
    v: Array, spatial: tuple[int, ...], xp: ModuleType
) -> Array:
    sizes = tuple(v.shape[2:])
    out = xp.matmul(v, _adaptive_matrix(spatial[-1], sizes[-1], v, xp))
    if len(spatial) == 2:
        first = _adaptive_matrix(spatial[0], sizes[0], v, xp)
        out = xp.matmul(xp.matrix_transpose(first), out)
    return out


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
        ``(batch, channels, *spatial)`` with one or two spatial axes.
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

        if n == 1:
            return torch.nn.functional.adaptive_avg_pool1d(x, sizes)
        return torch.nn.functional.adaptive_avg_pool2d(x, (sizes[0], sizes[1]))
    if native and all(s == 1 for s in sizes):
        return xp.mean(x, axis=tuple(range(2, 2 + n)), keepdims=True)
    return _adaptive_portable(x, sizes, xp)


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
    return _adaptive_transpose_portable(v, spatial, xp)
