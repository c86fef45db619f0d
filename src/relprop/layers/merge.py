"""Layers with several inputs: residual sums and concatenation (nodes of an rp.Graph)."""

from __future__ import annotations

from collections.abc import Sequence
from types import ModuleType
from typing import Any

from relprop._xp import Array
from relprop.layers.base import Layer
from relprop.layers.registry import register

__all__ = ["Add", "Concat", "Merge"]


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
