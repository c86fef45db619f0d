"""Upsampling by nearest neighbours or linear interpolation, and its adjoint.

Both are separable linear maps: along each spatial axis the output is ``A @ x`` with an
``(out, in)`` interpolation matrix ``A`` (each row sums to 1), so the forward pass is one
matrix product per axis and the adjoint the products with ``A^T``. The matrices follow
torch's ``F.interpolate`` (modes ``"nearest"``, ``"linear"`` / ``"bilinear"``, with and
without ``align_corners``), which ONNX's ``Resize`` and Keras's ``UpSampling`` match for
the settings the importers accept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from types import ModuleType

import numpy as np

from relprop._xp import Array, array_namespace
from relprop.ops._separable import apply_per_axis

__all__ = ["interpolation_matrix", "output_sizes", "resample", "resample_transpose"]


@lru_cache(maxsize=256)
def interpolation_matrix(
    size_in: int, size_out: int, mode: str, align_corners: bool, scale: float | None
) -> np.ndarray:
    r"""The ``(size_out, size_in)`` matrix of one axis (float64, NumPy).

    ``"nearest"``: output ``o`` copies input :math:`\lfloor o s \rfloor`; ``"linear"``:
    input coordinate :math:`(o + \tfrac12) s - \tfrac12` (clamped at 0), or
    :math:`o (n_{in} - 1) / (n_{out} - 1)` with ``align_corners``, between its two
    neighbours. :math:`s` is ``1 / scale`` when a scale factor was given, else
    :math:`n_{in} / n_{out}` (torch's convention).

    Examples
    --------
    >>> interpolation_matrix(2, 4, "nearest", False, 2.0).tolist()
    [[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]
    """
    step = (1.0 / scale) if scale else size_in / size_out
    matrix = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    if mode == "nearest":
        cols = np.minimum(np.floor(rows * step).astype(np.int64), size_in - 1)
        matrix[rows, cols] = 1.0
        return matrix
    if align_corners:
        source = rows * ((size_in - 1) / (size_out - 1)) if size_out > 1 else rows * 0.0
    else:
        source = np.maximum((rows + 0.5) * step - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = source - low
    np.add.at(matrix, (rows, low), 1.0 - frac)
    np.add.at(matrix, (rows, high), frac)
    return matrix


def _matrices(
    shape: Sequence[int], sizes: Sequence[int], mode: str, align_corners: bool,
    scales: Sequence[float | None],
) -> list[np.ndarray]:
    return [
        interpolation_matrix(int(n), int(m), mode, bool(align_corners), s)
        for n, m, s in zip(shape[2:], sizes, scales, strict=True)
    ]


def resample(
    x: Array, sizes: Sequence[int], mode: str = "nearest", align_corners: bool = False,
    scales: Sequence[float | None] | None = None, *, xp: ModuleType | None = None,
) -> Array:
    """``x`` of shape ``(batch, channels, *spatial)`` resampled to ``(batch, channels,
    *sizes)``.

    Examples
    --------
    >>> import numpy as np
    >>> resample(np.array([[[1.0, 3.0]]]), (4,), "linear").tolist()
    [[[1.0, 1.5, 2.5, 3.0]]]
    """
    xp = array_namespace(x=x) if xp is None else xp
    scales = [None] * len(sizes) if scales is None else list(scales)
    matrices = _matrices(tuple(x.shape), sizes, mode, align_corners, scales)
    return apply_per_axis(x, matrices, False, xp)


def resample_transpose(
    v: Array, input_shape: Sequence[int], mode: str = "nearest", align_corners: bool = False,
    scales: Sequence[float | None] | None = None, *, xp: ModuleType | None = None,
) -> Array:
    """The adjoint of :func:`resample` applied to ``v`` (the resampled shape), giving
    ``input_shape``."""
    xp = array_namespace(v=v) if xp is None else xp
    sizes = tuple(v.shape[2:])
    scales = [None] * len(sizes) if scales is None else list(scales)
    matrices = _matrices(tuple(input_shape), sizes, mode, align_corners, scales)
    return apply_per_axis(v, matrices, True, xp)


def output_sizes(
    shape: Sequence[int], size: Sequence[int] | None, scale_factor: Sequence[float] | None
) -> tuple[int, ...]:
    """The spatial sizes of an upsampling of ``shape`` to ``size`` or by ``scale_factor``
    (rounded down, as torch does)."""
    if size is not None:
        return tuple(int(s) for s in size)
    assert scale_factor is not None
    return tuple(int(math.floor(n * f)) for n, f in zip(shape[2:], scale_factor, strict=True))
