"""Element-wise activations (LRP passes relevance through them unchanged)."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from relprop._xp import Array
from relprop.layers.base import Activation
from relprop.layers.registry import register

__all__ = ["LeakyReLU", "ReLU", "Sigmoid", "Softplus", "Tanh"]


@register
class ReLU(Activation):
    """:math:`\\max(x, 0)`; its derivative at 0 is taken as 0 (as in torch)."""

    nonnegative_output = True

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.clip(x, min=0.0)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, v, xp.zeros_like(v))


@register
class LeakyReLU(Activation):
    """:math:`x` for :math:`x > 0`, else ``negative_slope * x`` (torch's default 0.01)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = float(negative_slope)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, x, self.negative_slope * x)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, v, self.negative_slope * v)

    def config(self) -> dict[str, Any]:
        return {"negative_slope": self.negative_slope}

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"


@register
class Tanh(Activation):
    """Hyperbolic tangent."""

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.tanh(x)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return v * (1.0 - xp.tanh(x) ** 2)


@register
class Sigmoid(Activation):
    """Logistic function :math:`1 / (1 + e^{-x})`."""

    nonnegative_output = True

    def forward(self, x: Array, xp: ModuleType) -> Array:
        # two branches so that neither exp overflows
        e = xp.exp(-xp.abs(x))
        return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        s = self.forward(x, xp)
        return v * s * (1.0 - s)


@register
class Softplus(Activation):
    """:math:`\\log(1 + e^{\\beta x}) / \\beta`."""

    nonnegative_output = True

    def __init__(self, beta: float = 1.0) -> None:
        if beta <= 0:
            raise ValueError(f"Softplus beta must be positive; got {beta}.")
        self.beta = float(beta)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.logaddexp(xp.zeros_like(x), self.beta * x) / self.beta

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return v * Sigmoid().forward(self.beta * x, xp)

    def config(self) -> dict[str, Any]:
        return {"beta": self.beta}

    def __repr__(self) -> str:
        return f"Softplus(beta={self.beta})"
