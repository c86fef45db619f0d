"""Batch normalisation at inference time: a per-channel affine map."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from relprop._xp import Array, array_namespace, detached
from relprop.layers.base import Layer
from relprop.layers.registry import by_spatial, register

__all__ = ["BatchNorm", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "batch_norm_for"]


class BatchNorm(Layer):
    r"""Inference-time batch norm, per channel (axis 1), with the running statistics:
    :math:`y = (x - \mu) / \sqrt{\sigma^2 + \epsilon}\,\gamma + \beta`.

    Composites give it Pass (as zennit does); canonizers fuse it into the linear layer
    before it first (:class:`relprop.canonizers.MergeBatchNorm`).

    Parameters
    ----------
    running_mean, running_var
        ``(channels,)``.
    weight, bias
        :math:`\gamma` and :math:`\beta`, ``(channels,)``; ``None`` for 1 and 0
        (``affine=False``).
    eps
        As in torch (default ``1e-5``).
    """

    spatial: int = 0

    def __init__(
        self,
        running_mean: Array,
        running_var: Array,
        weight: Array | None = None,
        bias: Array | None = None,
        eps: float = 1e-5,
    ) -> None:
        array_namespace(
            running_mean=running_mean, running_var=running_var, weight=weight, bias=bias
        )
        channels = tuple(running_mean.shape)
        for name, value in (("running_var", running_var), ("weight", weight), ("bias", bias)):
            if value is not None and tuple(value.shape) != channels:
                raise ValueError(
                    f"{type(self).__name__} {name} has shape {tuple(value.shape)}; running_mean "
                    f"has {channels}: all must be (channels,)."
                )
        self.running_mean = detached(running_mean)
        self.running_var = detached(running_var)
        self.weight = None if weight is None else detached(weight)
        self.bias = None if bias is None else detached(bias)
        self.eps = float(eps)

    @property
    def channels(self) -> int:
        return int(self.running_mean.shape[0])

    def scale_shift(self, xp: ModuleType) -> tuple[Array, Array]:
        r"""``(a, c)`` with :math:`y = a x + c` per channel (computed on every call: torch's
        batch norm updates its running statistics in place without counting the write)."""
        scale = 1.0 / xp.sqrt(self.running_var + self.eps)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -self.running_mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        return scale, shift

    def _broadcast(self, ndim: int, xp: ModuleType) -> tuple[Array, Array]:
        """:meth:`scale_shift` shaped ``(1, channels, 1, ...)`` for an input of ``ndim``
        axes."""
        shape = (1, self.channels) + (1,) * (ndim - 2)
        scale, shift = self.scale_shift(xp)
        return xp.reshape(scale, shape), xp.reshape(shift, shape)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        scale, shift = self._broadcast(len(x.shape), xp)
        return x * scale + shift

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return v * self._broadcast(len(x.shape), xp)[0]

    def params(self) -> dict[str, Array]:
        return {
            "running_mean": self.running_mean,
            "running_var": self.running_var,
            "weight": self.weight,
            "bias": self.bias,
        }

    def config(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def map_params(self, fn: Callable[[Array], Array]) -> BatchNorm:
        def maybe(a: Array | None) -> Array | None:
            return None if a is None else fn(a)

        return type(self)(
            fn(self.running_mean),
            fn(self.running_var),
            maybe(self.weight),
            maybe(self.bias),
            self.eps,
        )

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        ndims = (2, 3) if self.spatial == 0 else (2 + self.spatial,)
        if len(shape) not in ndims or shape[1] != self.channels:
            return f"expects {self.channels} channels on axis 1, got input shape {shape}"
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.channels}, eps={self.eps})"


@register
class BatchNorm1d(BatchNorm):
    """Batch norm of ``(batch, channels)`` or ``(batch, channels, length)`` inputs."""


@register
class BatchNorm2d(BatchNorm):
    """Batch norm of ``(batch, channels, height, width)`` inputs."""

    spatial = 2


@register
class BatchNorm3d(BatchNorm):
    """Batch norm of ``(batch, channels, depth, height, width)`` inputs."""

    spatial = 3


def batch_norm_for(ndim: int) -> type[BatchNorm]:
    """The batch-norm class of a ``(batch, channels, *spatial)`` input with ``ndim`` axes."""
    if ndim <= 3:
        return BatchNorm1d
    cls: type[BatchNorm] = by_spatial(BatchNorm, ndim - 2)
    return cls
