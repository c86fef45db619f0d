r"""Normalisations over the last axes of a sample, as transformers use them: LayerNorm and
RMSNorm, and the softmax (a normalisation of exponentials).

Each has its exact vector-Jacobian product; the LRP rules for them (AttnLRP's) live in
:mod:`relprop.rules`.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from relprop._xp import Array, array_namespace, detached
from relprop.layers.base import Layer
from relprop.layers.registry import register

__all__ = ["LayerNorm", "RMSNorm", "Softmax"]


def _trailing(shape: int | tuple[int, ...], name: str) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
    if not dims or any(d < 1 for d in dims):
        raise ValueError(f"{name} needs a positive normalized_shape; got {shape!r}.")
    return dims


class _Norm(Layer):
    """What LayerNorm and RMSNorm share: the normalised trailing axes, the optional
    element-wise affine parameters, and the checks."""

    def __init__(self, normalized_shape: int | tuple[int, ...], weight: Array | None,
                 bias: Array | None, eps: float) -> None:
        self.normalized_shape = _trailing(normalized_shape, type(self).__name__)
        array_namespace(weight=weight, bias=bias)
        for name, value in (("weight", weight), ("bias", bias)):
            if value is not None and tuple(value.shape) != self.normalized_shape:
                raise ValueError(
                    f"{type(self).__name__} {name} must have shape {self.normalized_shape} "
                    f"(normalized_shape); got {tuple(value.shape)}."
                )
        if not eps >= 0:
            raise ValueError(f"{type(self).__name__} eps must be >= 0; got {eps}.")
        self.weight = None if weight is None else detached(weight)
        self.bias = None if bias is None else detached(bias)
        self.eps = float(eps)

    @property
    def axes(self) -> tuple[int, ...]:
        return tuple(range(-len(self.normalized_shape), 0))

    def scale_shift(self, normalised: Array) -> Array:
        """The element-wise affine part: ``normalised * weight + bias``."""
        out = normalised if self.weight is None else normalised * self.weight
        return out if self.bias is None else out + self.bias

    def params(self) -> dict[str, Array]:
        return {"weight": self.weight, "bias": self.bias}

    def config(self) -> dict[str, Any]:
        return {"normalized_shape": self.normalized_shape, "eps": self.eps}

    def map_params(self, fn: Callable[[Array], Array]) -> Layer:
        return type(self)(self.normalized_shape,
                          None if self.weight is None else fn(self.weight),
                          None if self.bias is None else fn(self.bias), eps=self.eps)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        k = len(self.normalized_shape)
        if len(shape) < k + 1 or tuple(shape[-k:]) != self.normalized_shape:
            dims = ", ".join(map(str, self.normalized_shape))
            return f"expects input of shape (batch, ..., {dims}), got {shape}"
        return None

    def __repr__(self) -> str:
        shape = self.normalized_shape
        dims = shape[0] if len(shape) == 1 else shape
        affine = "" if self.weight is not None else ", elementwise_affine=False"
        return f"{type(self).__name__}({dims}{affine})"


@register
class LayerNorm(_Norm):
    r"""Layer normalisation over the last axes (torch's ``nn.LayerNorm``):

    .. math:: y = \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} \odot w + b, \qquad
        \mu = \mathrm{mean}(x), \quad \sigma^2 = \mathrm{mean}((x - \mu)^2)

    over the ``normalized_shape`` trailing axes of each sample.

    Parameters
    ----------
    normalized_shape
        The size of the last axis (an int) or of the last few axes (a tuple).
    weight, bias
        :math:`w` and :math:`b`, of ``normalized_shape``; ``None``: 1 and 0.
    eps
        :math:`\epsilon`, added to the variance.

    Examples
    --------
    >>> import numpy as np
    >>> LayerNorm(2, eps=0.0)(np.array([[1.0, 3.0]])).tolist()
    [[-1.0, 1.0]]
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], weight: Array | None = None,
                 bias: Array | None = None, eps: float = 1e-5) -> None:
        super().__init__(normalized_shape, weight, bias, eps)

    def normalise(self, x: Array, xp: ModuleType) -> tuple[Array, Array]:
        r""":math:`\hat x = (x - \mu) / \sqrt{\sigma^2 + \epsilon}` and the inverse
        standard deviation :math:`1 / \sqrt{\sigma^2 + \epsilon}` (keeping the axes)."""
        centred = x - xp.mean(x, axis=self.axes, keepdims=True)
        inverse = 1.0 / xp.sqrt(xp.mean(centred * centred, axis=self.axes, keepdims=True)
                                + self.eps)
        return centred * inverse, inverse

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return self.scale_shift(self.normalise(x, xp)[0])

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        normalised, inverse = self.normalise(x, xp)
        g = v if self.weight is None else v * self.weight
        mean_g = xp.mean(g, axis=self.axes, keepdims=True)
        mean_gx = xp.mean(g * normalised, axis=self.axes, keepdims=True)
        return inverse * (g - mean_g - normalised * mean_gx)


@register
class RMSNorm(_Norm):
    r"""Root-mean-square normalisation over the last axes (LLaMA's, torch's
    ``nn.RMSNorm``):

    .. math:: y = \frac{x}{\sqrt{\mathrm{mean}(x^2) + \epsilon}} \odot w

    Parameters
    ----------
    normalized_shape, weight, eps
        As for :class:`LayerNorm` (there is no bias).

    Examples
    --------
    >>> import numpy as np
    >>> RMSNorm(2, eps=0.0)(np.array([[3.0, 4.0]])).round(6).tolist()
    [[0.848528, 1.131371]]
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], weight: Array | None = None,
                 bias: Array | None = None, eps: float = 1e-6) -> None:
        if bias is not None:
            raise ValueError("RMSNorm has no bias; pass weight= only.")
        super().__init__(normalized_shape, weight, None, eps)

    def normalise(self, x: Array, xp: ModuleType) -> tuple[Array, Array]:
        r""":math:`\hat x = x / \sqrt{\mathrm{mean}(x^2) + \epsilon}` and the inverse root
        mean square (keeping the axes)."""
        inverse = 1.0 / xp.sqrt(xp.mean(x * x, axis=self.axes, keepdims=True) + self.eps)
        return x * inverse, inverse

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return self.scale_shift(self.normalise(x, xp)[0])

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        normalised, inverse = self.normalise(x, xp)
        g = v if self.weight is None else v * self.weight
        return inverse * (g - normalised * xp.mean(g * normalised, axis=self.axes,
                                                   keepdims=True))

    def config(self) -> dict[str, Any]:
        return {"normalized_shape": self.normalized_shape, "eps": self.eps}

    def params(self) -> dict[str, Array]:
        return {"weight": self.weight}


@register
class Softmax(Layer):
    r"""The softmax along ``axis`` (default the last):
    :math:`s_i = e^{x_i} / \sum_j e^{x_j}`, computed from :math:`x - \max x`.

    Examples
    --------
    >>> import numpy as np
    >>> Softmax()(np.log(np.array([[1.0, 3.0]]))).tolist()
    [[0.25, 0.75]]
    """

    nonnegative_output = True

    def __init__(self, axis: int = -1) -> None:
        if isinstance(axis, bool) or not isinstance(axis, int) or axis == 0:
            raise ValueError(
                f"Softmax axis must be an int other than 0 (the batch); got {axis!r}."
            )
        self.axis = axis

    def forward(self, x: Array, xp: ModuleType) -> Array:
        shifted = xp.exp(x - xp.max(x, axis=self.axis, keepdims=True))
        return shifted / xp.sum(shifted, axis=self.axis, keepdims=True)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        s = self.forward(x, xp)
        return s * (v - xp.sum(v * s, axis=self.axis, keepdims=True))

    def config(self) -> dict[str, Any]:
        return {"axis": self.axis}

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) < 2 or not -len(shape) <= self.axis < len(shape):
            return f"takes the softmax along axis {self.axis}, but the input has shape {shape}"
        return None

    def __repr__(self) -> str:
        return "Softmax()" if self.axis == -1 else f"Softmax(axis={self.axis})"

