"""Pooling layers; the maths lives in :mod:`relprop.ops.pool`.

Max pools route relevance to the window maxima (their gradient; ties split evenly, where
torch would pick one index). Average pools are parameter-free linear maps: composites
give them the Norm rule, as zennit does.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from relprop._xp import Array
from relprop.layers.base import Layer
from relprop.layers.registry import register
from relprop.ops.pool import (
    adaptive_avg_pool,
    adaptive_avg_pool_transpose,
    adaptive_max_pool,
    adaptive_max_pool_vjp,
    avg_pool,
    avg_pool_transpose,
    max_pool,
    max_pool_vjp,
)

__all__ = [
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "MaxPool",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
]


class _Pool(Layer):
    spatial: int = 0
    preserves_sign = True

    def config(self) -> dict[str, Any]:
        raise NotImplementedError

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 2 + self.spatial:
            return f"expects (batch, channels, {', '.join(['...'] * self.spatial)}), got {shape}"
        return None

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.config().items())
        return f"{type(self).__name__}({options})"


class MaxPool(_Pool):
    """Max pooling; its vjp sends each window's value to the window's maxima.

    Parameters follow ``torch.nn.MaxPool1d/2d/3d`` (``stride=None`` means ``kernel_size``;
    ``padding`` may also be ``(before, after)`` pairs; padding never wins).
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: Any = 0,
        dilation: int | tuple[int, ...] = 1,
        ceil_mode: bool = False,
    ) -> None:
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "ceil_mode": self.ceil_mode,
        }

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return max_pool(x, xp=xp, **self.config())

    def vjp(self, x: Array, v: Array, xp: ModuleType, *, ties: str = "split") -> Array:
        """The gradient, ties split evenly (``ties="first"``: all to the first maximum, as
        torch's autograd)."""
        return max_pool_vjp(x, v, xp=xp, ties=ties, **self.config())


@register
class MaxPool1d(MaxPool):
    """Max pooling of ``(batch, channels, length)`` inputs."""

    spatial = 1


@register
class MaxPool2d(MaxPool):
    """Max pooling of ``(batch, channels, height, width)`` inputs.

    Examples
    --------
    >>> import numpy as np
    >>> MaxPool2d(2)(np.arange(16.0).reshape(1, 1, 4, 4)).tolist()
    [[[[5.0, 7.0], [13.0, 15.0]]]]
    """

    spatial = 2


@register
class MaxPool3d(MaxPool):
    """Max pooling of ``(batch, channels, depth, height, width)`` inputs."""

    spatial = 3


class _AdaptiveMaxPool(MaxPool):
    """torch's adaptive max pooling (``1``: global max pooling). Where the input's sizes
    are multiples of the output's, the windows do not overlap and this is a max pool
    (native fast paths); otherwise :func:`relprop.ops.adaptive_max_pool`'s windows."""

    def __init__(self, output_size: int | tuple[int, ...]) -> None:
        self.output_size = output_size

    def _sizes(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output sizes (``None`` keeps that axis, as in torch)."""
        out = self.output_size
        sizes = tuple(out) if isinstance(out, (tuple, list)) else (out,) * self.spatial
        return tuple(int(n) if m is None else int(m)
                     for n, m in zip(shape[2:], sizes, strict=False))

    def _window(self, shape: tuple[int, ...]) -> tuple[int, ...] | None:
        """The max pool's kernel where the sizes divide, else ``None``."""
        pairs = list(zip(shape[2:], self._sizes(shape), strict=True))
        if any(n % m for n, m in pairs):
            return None
        return tuple(n // m for n, m in pairs)

    def config(self) -> dict[str, Any]:
        return {"output_size": self.output_size}

    def forward(self, x: Array, xp: ModuleType) -> Array:
        kernel = self._window(tuple(x.shape))
        if kernel is None:
            return adaptive_max_pool(x, self._sizes(tuple(x.shape)), xp=xp)
        return max_pool(x, kernel, xp=xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType, *, ties: str = "split") -> Array:
        kernel = self._window(tuple(x.shape))
        if kernel is None:
            return adaptive_max_pool_vjp(x, v, xp=xp, ties=ties)
        return max_pool_vjp(x, v, kernel, xp=xp, ties=ties)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        problem = super().check_input(shape)
        if problem is not None:
            return problem
        sizes = self._sizes(shape)
        if len(sizes) != self.spatial or any(m < 1 for m in sizes):
            return f"pools {shape[2:]} to {sizes}; give one positive size per spatial axis"
        return None


@register
class AdaptiveMaxPool1d(_AdaptiveMaxPool):
    """Adaptive max pooling of ``(batch, channels, length)`` inputs to ``output_size``."""

    spatial = 1


@register
class AdaptiveMaxPool2d(_AdaptiveMaxPool):
    """Adaptive max pooling to ``output_size`` (``1``: global max pooling), torch's windows.

    Examples
    --------
    >>> import numpy as np
    >>> AdaptiveMaxPool2d(1)(np.arange(16.0).reshape(1, 1, 4, 4)).tolist()
    [[[[15.0]]]]
    """

    spatial = 2


@register
class AdaptiveMaxPool3d(_AdaptiveMaxPool):
    """Adaptive max pooling of ``(batch, channels, depth, height, width)`` inputs."""

    spatial = 3


class AvgPool(_Pool):
    """Category of average pools: parameter-free linear maps (composites: Norm)."""


class _WindowAvgPool(AvgPool):
    def __init__(
        self,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] | None = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.ceil_mode = ceil_mode
        self.count_include_pad = count_include_pad

    def config(self) -> dict[str, Any]:
        return {
            "kernel_size": self.kernel_size,
            "stride": self.stride,
            "padding": self.padding,
            "ceil_mode": self.ceil_mode,
            "count_include_pad": self.count_include_pad,
        }

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return avg_pool(x, xp=xp, **self.config())

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return avg_pool_transpose(v, tuple(x.shape), xp=xp, **self.config())


@register
class AvgPool1d(_WindowAvgPool):
    """Average pooling of ``(batch, channels, length)`` inputs (``torch.nn.AvgPool1d``)."""

    spatial = 1


@register
class AvgPool2d(_WindowAvgPool):
    """Average pooling of ``(batch, channels, height, width)`` inputs.

    Examples
    --------
    >>> import numpy as np
    >>> AvgPool2d(2)(np.arange(16.0).reshape(1, 1, 4, 4)).tolist()
    [[[[2.5, 4.5], [10.5, 12.5]]]]
    """

    spatial = 2


@register
class AvgPool3d(_WindowAvgPool):
    """Average pooling of ``(batch, channels, depth, height, width)`` inputs."""

    spatial = 3


class _AdaptiveAvgPool(AvgPool):
    def __init__(self, output_size: int | tuple[int, ...]) -> None:
        self.output_size = output_size

    def config(self) -> dict[str, Any]:
        return {"output_size": self.output_size}

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return adaptive_avg_pool(x, self.output_size, xp=xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return adaptive_avg_pool_transpose(v, tuple(x.shape), xp=xp)


@register
class AdaptiveAvgPool1d(_AdaptiveAvgPool):
    """Adaptive average pooling of ``(batch, channels, length)`` inputs."""

    spatial = 1


@register
class AdaptiveAvgPool2d(_AdaptiveAvgPool):
    """Adaptive average pooling to ``output_size`` (``1``: global average pooling).

    Examples
    --------
    >>> import numpy as np
    >>> AdaptiveAvgPool2d(1)(np.arange(4.0).reshape(1, 1, 2, 2)).tolist()
    [[[[1.5]]]]
    """

    spatial = 2


@register
class AdaptiveAvgPool3d(_AdaptiveAvgPool):
    """Adaptive average pooling of ``(batch, channels, depth, height, width)`` inputs."""

    spatial = 3
