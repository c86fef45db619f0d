"""Layers: a forward pass and the exact vector-Jacobian product (``vjp``) of each.

Linear layers (:class:`Dense`, later convolutions) expose their affine map with arbitrary
parameters, ``linear(x, weight, bias)``, and its transpose, ``transpose(v, weight)``: the
LRP rules build their modified forward passes from exactly these two, so a rule written
once works for every linear layer. Element-wise activations, reshapes and user functions
expose ``forward`` and ``vjp``. Layers never modify their parameters or inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from types import ModuleType
from typing import Any

from relprop._xp import Array, array_namespace, is_traced, library_of

__all__ = [
    "Activation",
    "Convolution",
    "Dense",
    "Dropout",
    "Flatten",
    "Identity",
    "Lambda",
    "Layer",
    "LeakyReLU",
    "Linear",
    "ReLU",
    "Sigmoid",
    "Softplus",
    "Tanh",
]


def _detached(a: Array) -> Array:
    """The same memory without an autograd history (torch parameters carry one)."""
    if library_of(a) == "torch" and a.requires_grad:
        return a.detach()
    return a


class Layer:
    """Base class: a map of one batched array, ``(batch, ...) -> (batch, ...)``.

    Subclasses implement :meth:`forward` and :meth:`vjp`; both take the namespace ``xp``
    resolved once at the public entry point.
    """

    nonnegative_output: bool = False
    """Whether every output is >= 0 (lets rules drop terms that vanish)."""
    preserves_sign: bool = False
    """Whether a non-negative input gives a non-negative output (reshapes, identity)."""

    def forward(self, x: Array, xp: ModuleType) -> Array:
        """The layer's output for a batch ``x``."""
        raise NotImplementedError

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        r"""Exact :math:`J(x)^\top v`, the gradient backward pass of this layer."""
        raise NotImplementedError

    def params(self) -> dict[str, Array]:
        """Named parameters (``None`` where a layer has no such parameter)."""
        return {}

    def map_params(self, fn: Callable[[Array], Array]) -> Layer:
        """A copy whose parameters are ``fn(param)``; parameter-free layers return self."""
        return self

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        """A description of what is wrong with an input of ``shape``, or ``None``."""
        return None

    def __call__(self, x: Array) -> Array:
        return self.forward(x, array_namespace(x=x, **self.params()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Layer):
    """An affine layer ``z = A(x; weight) + bias`` with ``A`` linear in ``x`` and ``weight``.

    Subclasses implement :meth:`linear` and :meth:`transpose`; everything else (forward,
    vjp, cached modified parameters for the rules) follows.
    """

    def __init__(self, weight: Array, bias: Array | None = None) -> None:
        array_namespace(weight=weight, bias=bias)
        self.weight = _detached(weight)
        self.bias = None if bias is None else _detached(bias)
        self._cache: dict[Hashable, Any] = {}
        self._cache_token: tuple[int, ...] | None = None

    def linear(self, x: Array, weight: Array, bias: Array | None, xp: ModuleType) -> Array:
        """The affine map with the given parameters (``bias=None``: no bias)."""
        raise NotImplementedError

    def transpose(self, v: Array, weight: Array, xp: ModuleType) -> Array:
        r"""The adjoint of ``x -> linear(x, weight, None)`` applied to ``v``."""
        raise NotImplementedError

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return self.linear(x, self.weight, self.bias, xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return self.transpose(v, self.weight, xp)

    def params(self) -> dict[str, Array]:
        return {"weight": self.weight, "bias": self.bias}

    def cached(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per layer and ``key`` (modified weights of a rule).

        Only kept while the parameters provably have not changed: JAX arrays are
        immutable, and torch counts in-place writes (``Tensor._version``, bumped by an
        optimizer step on shared parameters). NumPy, CuPy and array-api-strict arrays can
        be written in place without a trace, so for them nothing is kept. Values traced by
        ``jax.jit`` are not kept either: they are only valid inside one trace.
        """
        token = self._params_version()
        if token is None:
            return make()
        if token != self._cache_token:
            self._cache.clear()
            self._cache_token = token
        if key in self._cache:
            return self._cache[key]
        value = make()
        leaves = value if isinstance(value, tuple) else (value,)
        if not any(leaf is not None and is_traced(leaf) for leaf in leaves):
            self._cache[key] = value
        return value

    def _params_version(self) -> tuple[int, ...] | None:
        """A token that changes whenever a parameter is written, or ``None`` if unknowable."""
        params = [p for p in (self.weight, self.bias) if p is not None]
        library = library_of(self.weight)
        if library == "jax":
            return ()
        if library == "torch":
            return tuple(int(p._version) for p in params)
        return None


class Convolution(Linear):
    """Category of convolutional layers (composites give them their own rules)."""


class Dense(Linear):
    r"""Fully connected layer :math:`z = x W^\top + b`.

    Parameters
    ----------
    weight
        Shape ``(out_features, in_features)``, torch layout, floating point.
    bias
        Shape ``(out_features,)`` or ``None``.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Dense(np.array([[1.0, 2.0]]), np.array([0.5]))
    >>> layer(np.array([[1.0, 1.0]])).tolist()
    [[3.5]]
    """

    def __init__(self, weight: Array, bias: Array | None = None) -> None:
        xp = array_namespace(weight=weight, bias=bias)
        if len(weight.shape) != 2:
            raise ValueError(
                "Dense weight must have shape (out_features, in_features); got "
                f"{tuple(weight.shape)}."
            )
        if not xp.isdtype(weight.dtype, "real floating"):
            raise TypeError(
                f"Dense weight has dtype {weight.dtype}; use a real floating dtype "
                "(e.g. float32 or float64)."
            )
        if bias is not None:
            if tuple(bias.shape) != (weight.shape[0],):
                raise ValueError(
                    f"Dense bias must have shape ({weight.shape[0]},) to match weight "
                    f"{tuple(weight.shape)}; got {tuple(bias.shape)}."
                )
            if bias.dtype != weight.dtype:
                raise TypeError(
                    f"Dense bias dtype {bias.dtype} differs from weight dtype {weight.dtype}; "
                    "cast one of them."
                )
        super().__init__(weight, bias)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def linear(self, x: Array, weight: Array, bias: Array | None, xp: ModuleType) -> Array:
        z = xp.matmul(x, xp.matrix_transpose(weight))
        return z if bias is None else z + bias

    def transpose(self, v: Array, weight: Array, xp: ModuleType) -> Array:
        return xp.matmul(v, weight)

    def map_params(self, fn: Callable[[Array], Array]) -> Dense:
        return Dense(fn(self.weight), None if self.bias is None else fn(self.bias))

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) < 2 or shape[-1] != self.in_features:
            return (
                f"expects input of shape (batch, {self.in_features}), got {shape}; "
                f"the weight is {tuple(self.weight.shape)} (out_features, in_features)"
            )
        return None

    def __repr__(self) -> str:
        bias = "" if self.bias is not None else ", bias=False"
        return f"Dense({self.in_features} -> {self.out_features}{bias})"


class Activation(Layer):
    """Category of element-wise activations (LRP passes relevance through them)."""

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        return None if len(shape) >= 1 else "expects a batched input"


class ReLU(Activation):
    """:math:`\\max(x, 0)`; its derivative at 0 is taken as 0 (as in torch)."""

    nonnegative_output = True

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.clip(x, min=0.0)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, v, xp.zeros_like(v))


class LeakyReLU(Activation):
    """:math:`x` for :math:`x > 0`, else ``negative_slope * x`` (torch's default 0.01)."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = float(negative_slope)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, x, self.negative_slope * x)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.where(x > 0, v, self.negative_slope * v)

    def __repr__(self) -> str:
        return f"LeakyReLU({self.negative_slope})"


class Tanh(Activation):
    """Hyperbolic tangent."""

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.tanh(x)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return v * (1.0 - xp.tanh(x) ** 2)


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

    def __repr__(self) -> str:
        return f"Softplus(beta={self.beta})"


class Identity(Layer):
    """The identity map."""

    preserves_sign = True

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return x

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return v


class Dropout(Identity):
    """Dropout at inference time: the identity (relprop explains trained models)."""

    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __repr__(self) -> str:
        return f"Dropout(p={self.p})"


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

    def __repr__(self) -> str:
        return f"Flatten(start_dim={self.start_dim})"


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


def describe(layer: Layer, index: int, name: str) -> str:
    """How error messages name a layer: ``layer 2 ('fc2', Dense(10 -> 3))``."""
    return f"layer {index} ({name!r}, {layer!r})"


def parameter_arrays(layers: Mapping[str, Layer]) -> dict[str, Array]:
    """Every parameter by a readable name (``"fc1.weight"``), skipping absent ones."""
    return {
        f"{name}.{key}": value
        for name, layer in layers.items()
        for key, value in layer.params().items()
        if value is not None
    }
