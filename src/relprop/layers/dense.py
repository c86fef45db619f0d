"""Fully connected layers."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType

from relprop._xp import Array, array_namespace
from relprop.layers.base import Linear, stacked_bias
from relprop.layers.registry import register

__all__ = ["Dense"]


@register
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
    def channel_axis(self) -> int:
        """The axis of one sample that holds the features: its last one."""
        return -1

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_size(self) -> int:
        return self.out_features

    def linear(self, x: Array, weight: Array, bias: Array | None, xp: ModuleType) -> Array:
        z = xp.matmul(x, xp.matrix_transpose(weight))
        return z if bias is None else z + bias

    def transpose(
        self, v: Array, weight: Array, xp: ModuleType, input_shape: tuple[int, ...] | None = None
    ) -> Array:
        return xp.matmul(v, weight)

    def stack(
        self, weights: Sequence[Array], biases: Sequence[Array | None], xp: ModuleType
    ) -> tuple[Array, Array | None]:
        """The weights one above the other, ``(k * out_features, in_features)``."""
        return xp.concat(list(weights), axis=0), stacked_bias(biases, self.out_features, 1,
                                                              weights[0], xp)

    def unstack(self, z: Array, k: int, xp: ModuleType) -> list[Array]:
        n = z.shape[-1] // k
        return [z[..., i * n:(i + 1) * n] for i in range(k)]

    def join(self, parts: Sequence[Array], xp: ModuleType) -> Array:
        return xp.concat(list(parts), axis=-1)

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

