"""Layers with several inputs (nodes of an rp.Graph): residual sums, concatenation, and
the products of transformers: the element-wise product of gated MLPs and the matrix
products of attention."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from relprop._xp import Array
from relprop.layers.base import Layer
from relprop.layers.registry import register

__all__ = ["Add", "Concat", "MatMul", "Merge", "Multiply"]


class Merge(Layer):
    """A layer of several inputs: ``forward_many(xs)`` and ``vjp_many(xs, v)``."""

    def forward_many(self, xs: Sequence[Array], xp: ModuleType) -> Array:
        raise NotImplementedError

    def vjp_many(self, xs: Sequence[Array], v: Array, xp: ModuleType) -> list[Array]:
        """:math:`J_k^\\top v` for every input ``k``."""
        raise NotImplementedError

    def check_inputs(self, shapes: Sequence[tuple[int, ...]]) -> str | None:
        return None


@register
class Add(Merge):
    """Element-wise sum of its inputs (residual connections).

    Composites give it the Norm rule (as zennit's ``Sum``): relevance is split in
    proportion to each input's contribution, :math:`R_k = x_k R / s(\\sum_k x_k)`.
    """

    preserves_sign = True

    def forward_many(self, xs: Sequence[Array], xp: ModuleType) -> Array:
        total = xs[0]
        for x in xs[1:]:
            total = total + x
        return total

    def vjp_many(self, xs: Sequence[Array], v: Array, xp: ModuleType) -> list[Array]:
        return [v for _ in xs]

    def check_inputs(self, shapes: Sequence[tuple[int, ...]]) -> str | None:
        if len(set(shapes)) != 1:
            return f"adds inputs of different shapes {list(shapes)}"
        return None


@register
class Concat(Merge):
    """Concatenation of its inputs along ``axis`` (default 1, channels)."""

    preserves_sign = True

    def __init__(self, axis: int = 1) -> None:
        if axis == 0:
            raise ValueError("Concat along axis 0 would mix samples of the batch; use axis >= 1.")
        self.axis = axis

    def forward_many(self, xs: Sequence[Array], xp: ModuleType) -> Array:
        return xp.concat(list(xs), axis=self.axis)

    def vjp_many(self, xs: Sequence[Array], v: Array, xp: ModuleType) -> list[Array]:
        parts = []
        start = 0
        axis = self.axis % len(v.shape)
        for x in xs:
            stop = start + x.shape[axis]
            index = (slice(None),) * axis + (slice(start, stop), Ellipsis)
            parts.append(v[index])
            start = stop
        return parts

    def check_inputs(self, shapes: Sequence[tuple[int, ...]]) -> str | None:
        axis = self.axis % len(shapes[0])
        rest = {s[:axis] + s[axis + 1 :] for s in shapes}
        if len(rest) != 1 or len({len(s) for s in shapes}) != 1:
            return f"concatenates inputs whose shapes differ off axis {self.axis}: {list(shapes)}"
        return None

    def config(self) -> dict[str, Any]:
        return {"axis": self.axis}

    def __repr__(self) -> str:
        return f"Concat(axis={self.axis})"


@register
class Multiply(Merge):
    r"""Element-wise product of its inputs, :math:`y = \prod_k x_k` (gated MLPs:
    ``silu(gate) * up``).

    Examples
    --------
    >>> import numpy as np
    >>> Multiply().forward_many([np.array([[2.0, 3.0]]), np.array([[4.0, 5.0]])], np).tolist()
    [[8.0, 15.0]]
    """

    def forward_many(self, xs: Sequence[Array], xp: ModuleType) -> Array:
        total = xs[0]
        for x in xs[1:]:
            total = total * x
        return total

    def vjp_many(self, xs: Sequence[Array], v: Array, xp: ModuleType) -> list[Array]:
        grads = []
        for k in range(len(xs)):
            others = v
            for j, x in enumerate(xs):
                if j != k:
                    others = others * x
            grads.append(others)
        return grads

    def check_inputs(self, shapes: Sequence[tuple[int, ...]]) -> str | None:
        if len(shapes) < 2 or len(set(shapes)) != 1:
            return f"multiplies two or more inputs of one shape; got {list(shapes)}"
        return None


@register
class MatMul(Merge):
    r"""The matrix product of two inputs over their last two axes, :math:`Y = A B`
    (attention's :math:`Q K^\top` and :math:`A V`, the key transposed by an
    :class:`~relprop.Permute` before it); the leading axes (batch, heads) must agree.

    Examples
    --------
    >>> import numpy as np
    >>> a, b = np.array([[[1.0, 2.0]]]), np.array([[[3.0], [4.0]]])
    >>> MatMul().forward_many([a, b], np).tolist()
    [[[11.0]]]
    """

    def forward_many(self, xs: Sequence[Array], xp: ModuleType) -> Array:
        return xp.matmul(xs[0], xs[1])

    def vjp_many(self, xs: Sequence[Array], v: Array, xp: ModuleType) -> list[Array]:
        a, b = xs
        return [xp.matmul(v, xp.matrix_transpose(b)), xp.matmul(xp.matrix_transpose(a), v)]

    def check_inputs(self, shapes: Sequence[tuple[int, ...]]) -> str | None:
        if len(shapes) != 2:
            return f"multiplies two matrices; got {len(shapes)} inputs"
        a, b = shapes
        if len(a) < 3 or len(a) != len(b) or a[:-2] != b[:-2] or a[-1] != b[-2]:
            return (f"multiplies (batch, ..., n, k) by (batch, ..., k, m) matrices; got "
                    f"{a} and {b}")
        return None
