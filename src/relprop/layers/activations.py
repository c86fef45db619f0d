"""Element-wise activations (LRP passes relevance through them unchanged)."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from relprop._xp import Array
from relprop.layers.base import Activation
from relprop.layers.registry import register
from relprop.ops.special import erf

__all__ = ["ELU", "GELU", "Hardtanh", "LeakyReLU", "ReLU", "SiLU", "Sigmoid", "Softplus", "Tanh"]


@register
class ReLU(Activation):
    """:math:`\\max(x, 0)`; its derivative at 0 is taken as 0 (as in torch)."""

    nonnegative_output = True

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.clip(x, min=0.0)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, v, 0.0)


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


@register
class ELU(Activation):
    """:math:`x` for :math:`x > 0`, else :math:`\\alpha (e^x - 1)` (torch's ``nn.ELU``).

    Examples
    --------
    >>> import numpy as np
    >>> ELU(1.0).forward(np.array([[-1.0, 2.0]]), np).round(4).tolist()
    [[-0.6321, 2.0]]
    """

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = float(alpha)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        negative = self.alpha * xp.expm1(xp.clip(x, max=0.0))
        return xp.where(x > 0, x, negative)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, v, v * self.alpha * xp.exp(xp.clip(x, max=0.0)))

    def config(self) -> dict[str, Any]:
        return {"alpha": self.alpha}

    def __repr__(self) -> str:
        return f"ELU(alpha={self.alpha})"


@register
class SiLU(Activation):
    """:math:`x\\,\\sigma(x)` (swish; torch's ``nn.SiLU``).

    Examples
    --------
    >>> import numpy as np
    >>> SiLU().forward(np.array([[0.0, 1.0]]), np).round(4).tolist()
    [[0.0, 0.7311]]
    """

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return x * Sigmoid().forward(x, xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        s = Sigmoid().forward(x, xp)
        return v * s * (1.0 + x * (1.0 - s))


@register
class Hardtanh(Activation):
    """:math:`\\min(\\max(x, \\text{min\\_val}), \\text{max\\_val})`; derivative 1 strictly
    inside, 0 outside and at the ends (as in torch).

    Examples
    --------
    >>> import numpy as np
    >>> Hardtanh().forward(np.array([[-3.0, 0.5, 2.0]]), np).tolist()
    [[-1.0, 0.5, 1.0]]
    """

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0) -> None:
        if not min_val < max_val:
            raise ValueError(f"Hardtanh needs min_val < max_val; got {min_val}, {max_val}.")
        self.min_val, self.max_val = float(min_val), float(max_val)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.clip(x, min=self.min_val, max=self.max_val)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        inside = (x > self.min_val) & (x < self.max_val)
        return xp.where(inside, v, xp.zeros_like(v))

    def config(self) -> dict[str, Any]:
        return {"min_val": self.min_val, "max_val": self.max_val}

    def __repr__(self) -> str:
        return f"Hardtanh(min_val={self.min_val}, max_val={self.max_val})"


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_TANH_CUBIC = 0.044715


@register
class GELU(Activation):
    r"""Gaussian error linear unit (torch's ``nn.GELU``, transformers' activation).

    ``approximate="none"``: :math:`x\,\Phi(x) = \tfrac{x}{2}\,(1 +
    \operatorname{erf}(x / \sqrt 2))`, :math:`\Phi` the standard normal CDF;
    ``"tanh"``: :math:`\tfrac{x}{2}\,(1 + \tanh(\sqrt{2/\pi}\,(x + 0.044715\,x^3)))`
    (``jax.nn.gelu``'s default, ``approximate=True``).

    Examples
    --------
    >>> import numpy as np
    >>> GELU().forward(np.array([[-1.0, 0.0, 1.0]]), np).round(6).tolist()
    [[-0.158655, 0.0, 0.841345]]
    >>> GELU("tanh").forward(np.array([[1.0]]), np).round(6).tolist()
    [[0.841192]]
    """

    def __init__(self, approximate: str = "none") -> None:
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU approximate must be 'none' or 'tanh'; got {approximate!r}.")
        self.approximate = approximate

    def _tanh_argument(self, x: Array) -> Array:
        return _SQRT_2_OVER_PI * (x + _TANH_CUBIC * x * x * x)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        if self.approximate == "tanh":
            return 0.5 * x * (1.0 + xp.tanh(self._tanh_argument(x)))
        return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0), xp=xp))

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        if self.approximate == "tanh":
            t = xp.tanh(self._tanh_argument(x))
            slope = _SQRT_2_OVER_PI * (1.0 + 3.0 * _TANH_CUBIC * x * x)
            return v * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * slope)
        cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0), xp=xp))
        density = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return v * (cdf + x * density)

    def config(self) -> dict[str, Any]:
        return {"approximate": self.approximate}

    def __repr__(self) -> str:
        return "GELU()" if self.approximate == "none" else f"GELU({self.approximate!r})"
