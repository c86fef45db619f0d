"""Separable linear maps of the spatial axes: one ``(out, in)`` matrix per axis, applied
as a matrix product along that axis (upsampling, adaptive pooling, window gathers)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType

import numpy as np
from array_api_compat import device

from relprop._xp import Array

__all__ = ["apply_per_axis"]


def apply_per_axis(
    x: Array, matrices: Sequence[np.ndarray], transpose: bool, xp: ModuleType, first: int = 2
) -> Array:
    """``x`` with axis ``first + i`` multiplied by ``matrices[i]`` (``(out, in)``, NumPy,
    made on ``x``'s device in its dtype), or by its transpose (the adjoint)."""
    ndim = len(x.shape)
    for i, matrix in enumerate(matrices):
        axis = first + i
        a = xp.asarray(matrix.T if transpose else matrix, dtype=x.dtype, device=device(x))
        moved = xp.moveaxis(x, axis, -1)
        moved = xp.matmul(moved, xp.matrix_transpose(a))  # (..., in) @ (in, out)
        x = xp.moveaxis(moved, -1, axis)
    assert len(x.shape) == ndim
    return x
