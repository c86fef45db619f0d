"""Layers that only move values: identity, inference-time dropout, flatten; and user
functions (:class:`Lambda`), whose vjp comes from the autodiff adapter."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

from relprop._xp import Array
from relprop.layers.base import Layer
from relprop.layers.registry import register

__all__ = ["Dropout", "Flatten", "Identity", "Lambda"]


@register
class Identity(Layer):
    """The identity map."""

    preserves_sign = True

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return x

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return v


@register
class Dropout(Identity):
    """Dropout at inference time: the identity (relprop explains trained models)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def config(self) -> dict[str, Any]:
        return {"p": self.p}

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


@register
class Flatten(Layer):
    """Flatten every axis from ``start_dim`` on (torch's ``nn.Flatten``, default 1)."""

    preserves_sign = True

    def __init__(self, start_dim: int = 1) -> None:
        if start_dim < 1:
            raise ValueError(
                f"Flatten start_dim must be >= 1 (axis 0 is the batch); got {start_dim}."
            )
        self.start_dim = start_dim

    def forward(self, x: Array, xp: ModuleType) -> Array:
        head = tuple(x.shape[: self.start_dim])
        return xp.reshape(x, (*head, math.prod(x.shape[self.start_dim :])))

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.reshape(v, x.shape)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) <= self.start_dim:
            return f"needs more than {self.start_dim} axes, got shape {shape}"
        return None

    def config(self) -> dict[str, Any]:
        return {"start_dim": self.start_dim}

    def __repr__(self) -> str:
        return f"Flatten(start_dim={self.start_dim})"


@register(savable=False)
class Lambda(Layer):
    """A user function as a layer; its ``vjp`` comes from the autodiff adapter.

    Parameters
    ----------
    fn
        A function of one batched array, written with the array API (or with the
        library of the arrays it will see). On NumPy-like backends its vjp is computed by
        finite differences, so ``fn`` must treat the leading axis as the batch.
    vjp
        Optional exact ``vjp(x, v) -> J(x)^T v``; overrides the adapter.
    name
        Shown in error messages and reprs.
    elementwise
        Whether ``fn`` acts element by element; then composites treat it as an activation
        (relevance passes through).

    Examples
    --------
    >>> import numpy as np
    >>> double = Lambda(lambda a: 2.0 * a, name="double")
    >>> double(np.ones((1, 2))).tolist()
    [[2.0, 2.0]]
    """

    def __init__(
        self,
        fn: Callable[[Array], Array],
        vjp: Callable[[Array, Array], Array] | None = None,
        *,
        name: str | None = None,
        elementwise: bool = False,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"Lambda needs a callable; got {type(fn).__name__}.")
        self.fn = fn
        self._vjp = vjp
        self.name = name or getattr(fn, "__name__", "lambda")
        self.elementwise = elementwise

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return self.fn(x)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        if self._vjp is not None:
            return self._vjp(x, v)
        from relprop.autodiff import vjp

        return vjp(self.fn, x, v)

    def __repr__(self) -> str:
        return f"Lambda({self.name})"
