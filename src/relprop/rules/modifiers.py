"""What a rule's terms modify: the layer's input, its parameters, and the relevance that
reaches the layer's output. Each modifier is a small frozen dataclass: callable, hashable
(the engine caches modified parameters under it) and printable.

Input modifiers map ``(x, xp)`` to an array of ``x``'s shape; ``vanishes_on_nonnegative``
says the result is identically zero when ``x >= 0`` (after a ReLU), so the engine drops
the term. Parameter modifiers map ``(w, xp)`` to an array of ``w``'s shape (weights and
biases alike). Output modifiers map ``(R, out, xp)`` to the relevance a term group divides.

Examples
--------
>>> import array_api_compat.numpy as xp
>>> Positive()(xp.asarray([-1.0, 2.0]), xp).tolist(), PlusGamma(0.5, Positive())(
...     xp.asarray([-1.0, 2.0]), xp).tolist()
([0.0, 2.0], [-1.0, 3.0])
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from relprop._bounds import input_bounds
from relprop._xp import Array

__all__ = [
    "Bound",
    "Identity",
    "Modifier",
    "Negative",
    "NegativeOutput",
    "Ones",
    "PlusGamma",
    "Positive",
    "PositiveOutput",
    "Square",
    "Zero",
]


class Modifier:
    """Base of the input and parameter modifiers: ``modifier(a, xp) -> array``."""

    vanishes_on_nonnegative: bool = False
    """Whether the result is identically zero for ``a >= 0`` (then its term is dropped)."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        raise NotImplementedError


@dataclass(frozen=True)
class Identity(Modifier):
    """``a`` itself."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return a


@dataclass(frozen=True)
class Positive(Modifier):
    """:math:`a^+ = \\max(a, 0)`."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.clip(a, min=0.0)


@dataclass(frozen=True)
class Negative(Modifier):
    """:math:`a^- = \\min(a, 0)`; zero on non-negative inputs."""

    vanishes_on_nonnegative = True

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.clip(a, max=0.0)


@dataclass(frozen=True)
class Ones(Modifier):
    """Ones of ``a``'s shape (Flat's weights, WSquare's and Flat's input)."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.ones_like(a)


@dataclass(frozen=True)
class Zero(Modifier):
    """Zeros of ``a``'s shape (``zero_params``)."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.zeros_like(a)


@dataclass(frozen=True)
class Square(Modifier):
    """:math:`a^2` (WSquare)."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return a**2


@dataclass(frozen=True)
class PlusGamma(Modifier):
    """:math:`a + \\gamma\\,\\mathrm{part}(a)` (Gamma's :math:`W + \\gamma W^+`)."""

    gamma: float
    part: Modifier

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return a + self.gamma * self.part(a, xp)


@dataclass(frozen=True, eq=False)
class Bound(Modifier):
    """An input bound of ZBox: ``low`` or ``high`` (``which``), a float or an array
    broadcastable to the input, as an array like the input; both are checked for
    ``low <= high``."""

    low: Any
    high: Any
    which: str

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        low, high = input_bounds(self.low, self.high, a, xp, who="ZBox", low_name="ZBox low",
                                 high_name="ZBox high",
                                 x_name="the input of the layer it explains")
        return low if self.which == "low" else high


@dataclass(frozen=True)
class PositiveOutput:
    """The relevance where the layer's output is positive, zero elsewhere."""

    def __call__(self, R: Array, out: Array, xp: ModuleType) -> Array:
        return xp.where(out > 0, R, xp.zeros_like(R))


@dataclass(frozen=True)
class NegativeOutput:
    """The relevance where the layer's output is negative, zero elsewhere."""

    def __call__(self, R: Array, out: Array, xp: ModuleType) -> Array:
        return xp.where(out < 0, R, xp.zeros_like(R))
