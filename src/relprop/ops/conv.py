"""Convolution (1d, 2d, 3d) and its exact adjoint, the transposed convolution.

Layouts follow torch: ``x`` is ``(batch, in_channels, *spatial)``, ``weight`` is
``(out_channels, in_channels / groups, *kernel)``. Each op has a portable implementation
(array API standard only: a Python loop over the kernel taps, each a strided slice of the
padded input contracted with ``matmul``; groups by reshapes) and native fast paths
(``torch.nn.functional``, ``jax.lax.conv_general_dilated``, NumPy's
``sliding_window_view`` with ``einsum``).
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
    memoized,
    normalize_padding,
    normalize_size,
    spatial_dims,
    window,
)
from relprop.ops._windows import gather, jax_jit, pad_array, scatter

__all__ = ["conv", "conv_output_shape", "conv_transpose"]


@memoized
def _geometry(
    input_shape: Sequence[int], weight_shape: Sequence[int], stride: object, padding: object,
    dilation: object, groups: int, name: str = "x",
) -> Window:
    n = spatial_dims(input_shape, name)
    if len(weight_shape) != n + 2:
        raise ValueError(
            f"weight must have shape (out_channels, in_channels / groups, *kernel) with {n} "
            f"kernel axes for an input with {n} spatial axes; got shape {tuple(weight_shape)}."
        )
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive int; got {groups!r}.")
    channels, out_channels = int(input_shape[1]), int(weight_shape[0])
    if channels % groups or out_channels % groups:
        raise ValueError(
            f"groups={groups} must divide the input channels ({channels}) and the output "
            f"channels ({out_channels})."
        )
    if int(weight_shape[1]) * groups != channels:
        raise ValueError(
            f"weight has {weight_shape[1]} input channels per group, so groups={groups} "
            f"needs {int(weight_shape[1]) * groups} input channels; {name} has {channels} "
            f"(shape {tuple(input_shape)})."
        )
    kernel = tuple(int(k) for k in weight_shape[2:])
    stride_t = normalize_size(stride, n, "stride")
    dilation_t = normalize_size(dilation, n, "dilation")
    pads = normalize_padding(padding, n, kernel, stride_t, dilation_t)
    return window(input_shape, kernel, stride_t, dilation_t, pads)


def conv_output_shape(
    input_shape: Sequence[int], weight_shape: Sequence[int], *, stride: object = 1,
    padding: object = 0, dilation: object = 1, groups: int = 1,
) -> tuple[int, ...]:
    """Shape of :func:`conv`'s output for an input and a weight of the given shapes.

    Examples
    --------
    >>> conv_output_shape((1, 3, 32, 32), (8, 3, 3, 3), stride=2, padding=1)
    (1, 8, 16, 16)
    """
    win = _geometry(input_shape, weight_shape, stride, padding, dilation, groups)
    return (int(input_shape[0]), int(weight_shape[0]), *win.output)


# ---------------------------------------------------------------------------------------
# portable
# ---------------------------------------------------------------------------------------


def _conv_portable(x: Array, weight: Array, win: Window, groups: int, xp: ModuleType) -> Array:
    batch, channels = x.shape[0], x.shape[1]
    out_channels = weight.shape[0]
    positions = math.prod(win.output)
    w = xp.reshape(weight, (groups, out_channels // groups, channels // groups, win.size))
    xpad = pad_array(x, win.full_pads, 0.0, xp, native=False)
    out = None
    for index, part in enumerate(gather(xpad, win)):
        part = xp.reshape(part, (batch, groups, channels // groups, positions))
        # (g, O/g, C/g) @ (N, g, C/g, P) -> (N, g, O/g, P)
        term = xp.matmul(w[..., index], part)
        out = term if out is None else out + term
    return xp.reshape(out, (batch, out_channels, *win.output))


def _conv_transpose_portable(
    v: Array, weight: Array, input_shape: tuple[int, ...], win: Window, groups: int,
    xp: ModuleType, native_scatter: bool = False,
) -> Array:
    batch, channels = input_shape[0], input_shape[1]
    out_channels = v.shape[1]
    positions = math.prod(win.output)
    w = xp.reshape(weight, (groups, out_channels // groups, channels // groups, win.size))
    vr = xp.reshape(v, (batch, groups, out_channels // groups, positions))
    # tap k contributes W_k^T v at the positions tap k read in the forward pass
    parts = (
        xp.reshape(
            xp.matmul(xp.matrix_transpose(w[..., index]), vr), (batch, channels, *win.output)
        )
        for index in range(win.size)
    )
    padded = scatter(parts, win, (batch, channels), v.dtype, device(v), xp, native_scatter)
    return padded[win.crop()]


# ---------------------------------------------------------------------------------------
# native
# ---------------------------------------------------------------------------------------


def _conv_torch(x: Array, weight: Array, bias: Array | None, win: Window, groups: int) -> Array:
    import torch.nn.functional as F

    fn = (F.conv1d, F.conv2d, F.conv3d)[win.ndim - 1]
    if win.symmetric:
        padding = tuple(b for b, _ in win.pads)
    else:
        x = F.pad(x, [side for pair in reversed(win.full_pads) for side in pair])
        padding = (0,) * win.ndim
    return fn(x, weight, bias, win.stride, padding, win.dilation, groups)


def _conv_transpose_torch(
    v: Array, weight: Array, input_shape: tuple[int, ...], win: Window, groups: int
) -> Array:
    import torch.nn.functional as F

    fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[win.ndim - 1]
    spans = [d * (k - 1) + 1 for k, d in zip(win.kernel, win.dilation, strict=True)]
    if win.symmetric:
        padding = tuple(b for b, _ in win.pads)
        # torch's output is (o - 1) s - 2 p + span + output_padding: pick the input's size
        extra = tuple(
            size - ((o - 1) * s - 2 * p + span)
            for size, o, s, p, span in zip(
                win.input, win.output, win.stride, padding, spans, strict=True
            )
        )
        return fn(v, weight, None, win.stride, padding, extra, groups, win.dilation)
    extra = tuple(
        size - ((o - 1) * s + span)
        for size, o, s, span in zip(win.padded, win.output, win.stride, spans, strict=True)
    )
    full = fn(v, weight, None, win.stride, 0, extra, groups, win.dilation)
    return full[win.crop()]


def _conv_jax(win: Window, groups: int, x: Array, weight: Array, bias: Array | None) -> Array:
    from jax import lax

    axes = "DHW"[3 - win.ndim:]
    spec = ("NC" + axes, "OI" + axes, "NC" + axes)
    out = lax.conv_general_dilated(
        x, weight, window_strides=win.stride, padding=list(win.full_pads),
        rhs_dilation=win.dilation, dimension_numbers=spec, feature_group_count=groups,
        precision=lax.Precision.HIGHEST,
    )
    if bias is not None:
        out = out + bias.reshape((1, -1) + (1,) * win.ndim)
    return out


def _conv_transpose_jax(
    input_shape: tuple[int, ...], win: Window, groups: int, v: Array, weight: Array
) -> Array:
    import jax

    def forward(a: Array) -> Array:
        return _conv_jax(win, groups, a, weight, None)

    (result,) = jax.linear_transpose(forward, jax.ShapeDtypeStruct(input_shape, v.dtype))(v)
    return result


def _conv_numpy(x: Array, weight: Array, win: Window, groups: int) -> Array:
    """im2col: a strided view of every window (no copy), copied once into
    ``(batch, groups, in/groups * taps, positions)`` and contracted by one ``matmul``
    (faster here than ``einsum`` or one product per tap; costs ``taps`` x the input)."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    n = win.ndim
    batch, channels = x.shape[0], x.shape[1]
    out_channels = weight.shape[0]
    xpad = np.pad(x, ((0, 0), (0, 0), *win.full_pads))
    spans = tuple(d * (k - 1) + 1 for k, d in zip(win.kernel, win.dilation, strict=True))
    views = sliding_window_view(xpad, spans, axis=tuple(range(2, 2 + n)))
    index = (
        (Ellipsis,)
        + tuple(slice(0, s * (o - 1) + 1, s) for s, o in zip(win.stride, win.output, strict=True))
        + tuple(slice(None, None, d) for d in win.dilation)
    )
    views = views[index]  # (batch, channels, *output, *kernel)
    order = (0, 1, *range(2 + n, 2 + 2 * n), *range(2, 2 + n))  # kernel axes before output
    cols = views.transpose(order).reshape(
        batch, groups, channels // groups * win.size, math.prod(win.output)
    )
    w = weight.reshape(groups, out_channels // groups, channels // groups * win.size)
    return np.matmul(w, cols).reshape(batch, out_channels, *win.output)


# ---------------------------------------------------------------------------------------
# public
# ---------------------------------------------------------------------------------------


def conv(
    x: Array, weight: Array, bias: Array | None = None, *, stride: object = 1,
    padding: object = 0, dilation: object = 1, groups: int = 1, xp: ModuleType | None = None,
    native: bool = True,
) -> Array:
    r"""1d, 2d or 3d convolution (cross-correlation, as in torch), channels first.

    .. math::

        y[n, o, j] = b_o + \sum_{c \in G(o)} \sum_{t} W[o, c - c_0(o), t]\,
        \tilde x[n, c, j \cdot s + t \cdot d]

    with :math:`\tilde x` the zero-padded input, ``j`` and ``t`` multi-indices over the
    spatial axes, ``s`` the stride, ``d`` the dilation and ``G(o)`` the input channels of
    output channel ``o``'s group (``groups`` contiguous blocks, as in torch).

    Parameters
    ----------
    x
        Input, ``(batch, in_channels, *spatial)`` with 1, 2 or 3 spatial axes.
    weight
        ``(out_channels, in_channels / groups, *kernel)`` (torch layout).
    bias
        ``(out_channels,)`` or ``None``.
    stride, dilation
        An int or one int per spatial axis.
    padding
        An int, one int per spatial axis, one ``(before, after)`` pair per spatial axis
        (asymmetric), ``"valid"`` or ``"same"`` (stride 1; an odd total pads one more
        after, as torch).
    groups
        Number of channel groups (``in_channels`` for a depthwise convolution).
    xp
        Namespace of the arrays; inferred (and checked for mixed libraries) when ``None``.
    native
        Use the library's own convolution (torch, JAX, NumPy); ``False`` forces the
        portable array-API implementation.

    Returns
    -------
    array
        ``(batch, out_channels, *output)``, the library and dtype of ``x``; per axis
        ``output = floor((L + before + after - d (k - 1) - 1) / s) + 1``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(5.0).reshape(1, 1, 5)
    >>> conv(x, np.array([[[1.0, -1.0]]]), stride=2).tolist()
    [[[-1.0, -1.0]]]
    """
    if xp is None:
        xp = array_namespace(x=x, weight=weight, bias=bias)
    check_floating(xp, x=x, weight=weight, bias=bias)
    win = _geometry(tuple(x.shape), tuple(weight.shape), stride, padding, dilation, groups)
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"bias must have shape ({weight.shape[0]},) (one per output channel); "
            f"got {tuple(bias.shape)}."
        )
    if native and is_torch_namespace(xp):
        return _conv_torch(x, weight, bias, win, groups)
    if native and is_jax_namespace(xp):
        return jax_jit(_conv_jax, win, groups)(x, weight, bias)
    if native and is_numpy_namespace(xp):
        out = _conv_numpy(x, weight, win, groups)
    else:
        out = _conv_portable(x, weight, win, groups, xp)
    if bias is not None:
        out = out + xp.reshape(bias, (1, -1) + (1,) * win.ndim)
    return out


def conv_transpose(
    v: Array, weight: Array, *, input_shape: Sequence[int], stride: object = 1,
    padding: object = 0, dilation: object = 1, groups: int = 1, xp: ModuleType | None = None,
    native: bool = True,
) -> Array:
    r"""Transposed convolution: the exact adjoint of ``x -> conv(x, weight, None, ...)``.

    .. math:: \langle \mathrm{conv}(x), v \rangle = \langle x, \mathrm{conv}^\top(v)\rangle,
        \qquad
        \mathrm{conv}^\top(v)[n, c, i] = \sum_{o \in G(c)} \sum_{j, t:\; j s + t d = i + b}
        W[o, c - c_0(o), t]\, v[n, o, j]

    (``b`` the padding before). Several input sizes give one output size when the stride
    is > 1; ``input_shape`` says which is meant (torch's ``output_padding``).

    Parameters
    ----------
    v
        ``(batch, out_channels, *output)``, the shape of ``conv``'s output.
    weight
        The convolution's weight ``(out_channels, in_channels / groups, *kernel)``.
    input_shape
        Shape of the convolution's input ``(batch, in_channels, *spatial)``.
    stride, padding, dilation, groups
        As for :func:`conv`.
    xp, native
        As for :func:`conv` (native: ``torch.nn.functional.conv_transpose*d``,
        ``jax.linear_transpose`` of ``lax.conv_general_dilated``).

    Returns
    -------
    array
        ``input_shape``, the library and dtype of ``v``.

    Examples
    --------
    >>> import numpy as np
    >>> v = np.array([[[1.0, 10.0]]])
    >>> conv_transpose(v, np.array([[[1.0, -1.0]]]), input_shape=(1, 1, 5), stride=2).tolist()
    [[[1.0, -1.0, 10.0, -10.0, 0.0]]]
    """
    if xp is None:
        xp = array_namespace(v=v, weight=weight)
    check_floating(xp, v=v, weight=weight)
    shape = tuple(int(s) for s in input_shape)
    win = _geometry(shape, tuple(weight.shape), stride, padding, dilation, groups, "input_shape")
    expected = (shape[0], int(weight.shape[0]), *win.output)
    if tuple(v.shape) != expected:
        raise ValueError(
            f"v has shape {tuple(v.shape)}, but the convolution of an input of shape {shape} "
            f"gives {expected}."
        )
    if native and is_torch_namespace(xp):
        return _conv_transpose_torch(v, weight, shape, win, groups)
    if native and is_jax_namespace(xp):
        return jax_jit(_conv_transpose_jax, shape, win, groups)(v, weight)
    return _conv_transpose_portable(v, weight, shape, win, groups, xp)
