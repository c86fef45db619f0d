"""The layer protocol: a forward pass and the exact vector-Jacobian product (``vjp``).

Linear layers (dense, convolutions) expose their affine map with arbitrary parameters,
``linear(x, weight, bias)``, and its transpose, ``transpose(v, weight)``: the LRP rules
build their modified forward passes from exactly these two, so a rule written once works
for every linear layer. Element-wise activations, reshapes, pools and user functions expose
``forward`` and ``vjp``. Layers never modify their parameters or inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from array_api_compat import device

from relprop._xp import Array, array_namespace, detached

__all__ = [
    "Activation", "Convolution", "Layer", "Linear", "describe", "parameter_arrays", "stacked_bias",
]


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

    def config(self) -> dict[str, Any]:
        """Hyper-parameters: everything but the arrays (what a file needs to rebuild it)."""
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

    Subclasses implement :meth:`linear` and :meth:`transpose`; forward and vjp follow. The
    rules' modified parameters are the rule engine's business (:mod:`relprop.rules.terms`).
    """

    def __init__(self, weight: Array, bias: Array | None = None) -> None:
        array_namespace(weight=weight, bias=bias)
        self.weight = detached(weight)
        self.bias = None if bias is None else detached(bias)

    def linear(self, x: Array, weight: Array, bias: Array | None, xp: ModuleType) -> Array:
        """The affine map with the given parameters (``bias=None``: no bias)."""
        raise NotImplementedError

    def transpose(
        self, v: Array, weight: Array, xp: ModuleType, input_shape: tuple[int, ...] | None = None
    ) -> Array:
        r"""The adjoint of ``x -> linear(x, weight, None)`` applied to ``v``.

        ``input_shape`` is the shape of ``x``; layers whose output size does not determine
        their input size (strided convolutions) need it.
        """
        raise NotImplementedError

    mergeable: bool = True
    """Whether :class:`~relprop.canonizers.MergeBatchNorm` may fuse a batch norm into it."""

    @property
    def channel_axis(self) -> int:
        """The axis of one sample (counted from its end) that holds the features/channels."""
        raise NotImplementedError

    @property
    def out_size(self) -> int:
        """The number of output features / channels."""
        raise NotImplementedError

    def stack(
        self, weights: Sequence[Array], biases: Sequence[Array | None], xp: ModuleType
    ) -> tuple[Array, Array | None] | None:
        """``k`` parameter sets as one parameter set with ``k`` times the outputs, so that
        ``linear`` computes all ``k`` maps in one call and ``transpose`` the sum of their
        transposes (the rule engine fuses terms that read one input this way); ``None``
        where the layer cannot (then each is called on its own)."""
        return None

    def unstack(self, z: Array, k: int, xp: ModuleType) -> list[Array]:
        """The ``k`` outputs inside the output of a :meth:`stack`-ed layer."""
        raise NotImplementedError

    def join(self, parts: Sequence[Array], xp: ModuleType) -> Array:
        """``k`` outputs (cotangents) as one output of the :meth:`stack`-ed layer."""
        raise NotImplementedError

    def stack_inputs(self, weights: Sequence[Array], xp: ModuleType) -> Array | None:
        """``k`` weights as one weight with ``k`` times the inputs, so that one
        :meth:`transpose_stacked` call computes the ``k`` transposes of one cotangent
        (the rule engine's ZBox); ``None`` (the default) where the layer cannot."""
        return None

    def transpose_stacked(self, v: Array, weight: Array, k: int, xp: ModuleType,
                          input_shape: tuple[int, ...]) -> list[Array]:
        """The ``k`` transposes of ``v`` with a :meth:`stack_inputs` weight, each of
        ``input_shape``."""
        raise NotImplementedError

    def with_params(self, weight: Array, bias: Array | None) -> Linear:
        """The same layer kind and settings with other parameters."""
        return type(self)(weight, bias, **self.config())

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return self.linear(x, self.weight, self.bias, xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return self.transpose(v, self.weight, xp, tuple(x.shape))

    def params(self) -> dict[str, Array]:
        return {"weight": self.weight, "bias": self.bias}


class Convolution(Linear):
    """Category of convolutional layers (composites give them their own rules)."""


class Activation(Layer):
    """Category of element-wise activations (LRP passes relevance through them)."""

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        return None if len(shape) >= 1 else "expects a batched input"


def stacked_bias(
    biases: Sequence[Array | None], out: int, groups: int, like: Array, xp: ModuleType
) -> Array | None:
    """``k`` biases of ``out`` outputs in ``groups`` contiguous groups as the bias of the
    :meth:`Linear.stack`-ed layer (group by group; zeros for a term without one), or
    ``None`` when none has one."""
    if all(b is None for b in biases):
        return None
    zeros = xp.zeros((out,), dtype=like.dtype, device=device(like))
    parts = [xp.reshape(zeros if b is None else b, (groups, out // groups)) for b in biases]
    return xp.reshape(xp.concat(parts, axis=1), (-1,))


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
