"""What a rule's terms modify: the layer's input, its parameters, and the relevance that
reaches the layer's output. Each modifier is a small frozen dataclass: callable, hashable
(the engine caches modified parameters under it) and printable.

Input modifiers map ``(x, xp)`` to an array of ``x``'s shape; ``vanishes_on_nonnegative``
says the result is identically zero when ``x >= 0`` (after a ReLU), so the engine drops
the term, ``identity_on_nonnegative`` that it is ``x`` itself there, and
:meth:`Modifier.constant` that it is the same for every sample. Parameter modifiers map
``(w, xp)`` to an array of ``w``'s shape (weights and biases alike);
:meth:`Modifier.decomposition` says when one is :math:`a w + c w^+` (then the engine can
build its forward pass from the layer's own output and that of :math:`W^+`). Output
modifiers map ``(R, out, xp)`` to the relevance a term group divides.

Examples
--------
>>> import array_api_compat.numpy as xp
>>> Positive()(xp.asarray([-1.0, 2.0]), xp).tolist(), PlusGamma(0.5, Positive())(
...     xp.asarray([-1.0, 2.0]), xp).tolist()
([0.0, 2.0], [-1.0, 3.0])
"""

from __future__ import annotations

from collections.abc import Hashable
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
    identity_on_nonnegative: bool = False
    """Whether the result is ``a`` itself for ``a >= 0`` (an input modifier the engine may
    skip after a ReLU)."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        raise NotImplementedError

    def constant(self) -> Hashable | None:
        """A key if the result depends on nothing but the input's shape, dtype and device
        (every sample alike), else ``None`` (the default). The engine then computes the
        forward passes of the terms reading it for one sample, once per layer and input
        shape, and keeps them with the layer's modified parameters (Flat's and ZBox's
        bounds on the first layer: no convolution per call)."""
        return None

    def decomposition(self) -> tuple[float, float] | None:
        r"""``(a, c)`` such that the modifier maps every :math:`w` to :math:`a w + c w^+`
        (:math:`w^+ = \max(w, 0)`), or ``None`` (the default) where it is no such map.

        The engine then needs only :math:`W x + b` (the layer's recorded output) and
        :math:`W^+ x + b^+` for the term's forward pass on a non-negative input, and the
        transposes of :math:`W` and :math:`W^+` for its backward pass, whatever ``a`` and
        ``c`` are, unless the map cancels (:math:`W^- = W - W^+`: the engine computes
        such a term on its own, for accuracy): Gamma after a ReLU costs one modified
        forward pass instead of two.

        Examples
        --------
        >>> PlusGamma(0.25, Negative()).decomposition()  # W + g W- = (1 + g) W - g W+
        (1.25, -0.25)
        """
        return None


@dataclass(frozen=True)
class Identity(Modifier):
    """``a`` itself."""

    identity_on_nonnegative = True

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return a

    def decomposition(self) -> tuple[float, float] | None:
        return (1.0, 0.0)


@dataclass(frozen=True)
class Positive(Modifier):
    """:math:`a^+ = \\max(a, 0)`."""

    identity_on_nonnegative = True

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.clip(a, min=0.0)

    def decomposition(self) -> tuple[float, float] | None:
        return (0.0, 1.0)


@dataclass(frozen=True)
class Negative(Modifier):
    """:math:`a^- = \\min(a, 0)`; zero on non-negative inputs."""

    vanishes_on_nonnegative = True

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.clip(a, max=0.0)

    def decomposition(self) -> tuple[float, float] | None:
        return (1.0, -1.0)  # a- = a - a+


@dataclass(frozen=True)
class Ones(Modifier):
    """Ones of ``a``'s shape (Flat's weights, WSquare's and Flat's input)."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.ones_like(a)

    def constant(self) -> Hashable | None:
        return ("ones",)


@dataclass(frozen=True)
class Zero(Modifier):
    """Zeros of ``a``'s shape (``zero_params``)."""

    def __call__(self, a: Array, xp: ModuleType) -> Array:
        return xp.zeros_like(a)

    def decomposition(self) -> tuple[float, float] | None:
        return (0.0, 0.0)


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

    def decomposition(self) -> tuple[float, float] | None:
        inner = self.part.decomposition()
        if inner is None:
            return None
        return (1.0 + self.gamma * inner[0], self.gamma * inner[1])


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

    def constant(self) -> Hashable | None:
        numbers = (int, float)
        if all(isinstance(v, numbers) and not isinstance(v, bool) for v in (self.low, self.high)):
            return ("bound", self.which, float(self.low), float(self.high))
        return None  # arrays: maybe one bound per sample


@dataclass(frozen=True)
class PositiveOutput:
    """The relevance where the layer's output is positive, zero elsewhere."""

    def __call__(self, R: Array, out: Array, xp: ModuleType) -> Array:
        return xp.where(out > 0, R, 0.0)


@dataclass(frozen=True)
class NegativeOutput:
    """The relevance where the layer's output is negative, zero elsewhere."""

    def __call__(self, R: Array, out: Array, xp: ModuleType) -> Array:
        return xp.where(out < 0, R, 0.0)
