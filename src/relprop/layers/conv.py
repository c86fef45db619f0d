"""Convolutions and transposed convolutions (1d, 2d and 3d, torch layout); the maths lives in
:mod:`relprop.ops.conv` (a transposed convolution's forward is the convolution's adjoint,
and its adjoint the convolution)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from relprop._xp import Array, array_namespace
from relprop.layers.base import Convolution, stacked_bias
from relprop.layers.registry import register
from relprop.ops._args import normalize_pads
from relprop.ops.conv import conv, conv_transpose

__all__ = ["Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"]


class _Convolutional(Convolution):
    """What convolutions and transposed convolutions share: the weight's checks, the
    channel counts, the input check and the repr. ``spatial`` is the number of axes;
    ``layout`` names the weight's first two axes (both divide axis 0 by ``groups``)."""

    spatial: int = 0
    layout = "out_channels, in_channels / groups"

    @staticmethod
    def _outputs_of(weight: Array, groups: int) -> int:
        """The output channels of a weight of this layout."""
        return int(weight.shape[0])

    def _check_weight(self, weight: Array, bias: Array | None, groups: int) -> None:
        xp = array_namespace(weight=weight, bias=bias)
        name = type(self).__name__
        if len(weight.shape) != 2 + self.spatial:
            raise ValueError(
                f"{name} weight must have shape ({self.layout}, "
                f"{', '.join(['k'] * self.spatial)}); got {tuple(weight.shape)}."
            )
        if not xp.isdtype(weight.dtype, "real floating"):
            raise TypeError(f"{name} weight has dtype {weight.dtype}; use a real floating dtype.")
        first = self.layout.split(",")[0]
        if groups < 1 or weight.shape[0] % groups:
            raise ValueError(f"{name} groups={groups} must divide {first}={weight.shape[0]}.")
        out_channels = self._outputs_of(weight, groups)
        if bias is not None and tuple(bias.shape) != (out_channels,):
            raise ValueError(
                f"{name} bias must have shape ({out_channels},); got {tuple(bias.shape)}."
            )

    @property
    def channel_axis(self) -> int:
        """The channel axis of one sample, counted from its end: ``-(spatial + 1)``."""
        return -(self.spatial + 1)

    @property
    def in_channels(self) -> int:
        raise NotImplementedError

    @property
    def out_channels(self) -> int:
        raise NotImplementedError

    @property
    def out_size(self) -> int:
        return self.out_channels

    _group_out_axis = 1
    """The output-channel axis of the weight viewed as ``(groups, axis 0 / groups, ...)``."""

    def stack(
        self, weights: Sequence[Array], biases: Sequence[Array | None], xp: ModuleType
    ) -> tuple[Array, Array | None]:
        """The weights' output channels side by side within each group, so the grouped
        convolution still pairs each group's inputs with its outputs."""
        g = int(getattr(self, "groups", 1))
        views = [xp.reshape(w, (g, w.shape[0] // g, *w.shape[1:])) for w in weights]
        joined = xp.concat(views, axis=self._group_out_axis)
        weight = xp.reshape(joined, (g * joined.shape[1], *joined.shape[2:]))
        return weight, stacked_bias(biases, self.out_channels, g, weights[0], xp)

    def _grouped(self, z: Array, k: int, xp: ModuleType) -> Array:
        g = int(getattr(self, "groups", 1))
        return xp.reshape(z, (z.shape[0], g, k, self.out_channels // g, *z.shape[2:]))

    def unstack(self, z: Array, k: int, xp: ModuleType) -> list[Array]:
        view = self._grouped(z, k, xp)
        shape = (z.shape[0], self.out_channels, *z.shape[2:])
        return [xp.reshape(view[:, :, i, ...], shape) for i in range(k)]

    def join(self, parts: Sequence[Array], xp: ModuleType) -> Array:
        views = [self._grouped(v, 1, xp) for v in parts]
        joined = xp.concat(views, axis=2)
        first = parts[0]
        return xp.reshape(joined, (first.shape[0], len(parts) * self.out_channels,
                                   *first.shape[2:]))

    def map_params(self, fn: Callable[[Array], Array]) -> _Convolutional:
        bias = None if self.bias is None else fn(self.bias)
        return type(self)(fn(self.weight), bias, **self.config())

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 2 + self.spatial or shape[1] != self.in_channels:
            axes = ", ".join(["batch", str(self.in_channels)] + ["..."] * self.spatial)
            return f"expects input of shape ({axes}), got {shape}"
        return None

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v}" for k, v in self.config().items())
        kernel = tuple(int(k) for k in self.weight.shape[2:])
        bias = "" if self.bias is not None else ", bias=False"
        return (
            f"{type(self).__name__}({self.in_channels} -> {self.out_channels}, kernel={kernel}, "
            f"{options}{bias})"
        )


class _ConvNd(_Convolutional):
    """Shared by :class:`Conv1d`, :class:`Conv2d` and :class:`Conv3d`; ``spatial`` is the
    number of axes."""

    spatial: int = 0

    def __init__(
        self,
        weight: Array,
        bias: Array | None = None,
        stride: int | tuple[int, ...] = 1,
        padding: Any = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
    ) -> None:
        self._check_weight(weight, bias, groups)
        super().__init__(weight, bias)
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.groups = groups

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    def config(self) -> dict[str, Any]:
        """The hyper-parameters (everything but the arrays)."""
        return {
            "stride": self.stride,
            "padding": self.padding,
            "dilation": self.dilation,
            "groups": self.groups,
        }

    def linear(self, x: Array, weight: Array, bias: Array | None, xp: ModuleType) -> Array:
        return conv(x, weight, bias, xp=xp, **self.config())

    def transpose(
        self, v: Array, weight: Array, xp: ModuleType, input_shape: tuple[int, ...] | None = None
    ) -> Array:
        if input_shape is None:
            raise TypeError(f"{type(self).__name__}.transpose needs the input shape.")
        return conv_transpose(v, weight, input_shape=input_shape, xp=xp, **self.config())

    def stack_inputs(self, weights: Sequence[Array], xp: ModuleType) -> Array | None:
        """The weights' input channels side by side (ungrouped convolutions only): on a
        CPU one transposed convolution into 9 channels costs about half of three into 3."""
        return xp.concat(list(weights), axis=1) if self.groups == 1 else None

    def transpose_stacked(self, v: Array, weight: Array, k: int, xp: ModuleType,
                          input_shape: tuple[int, ...]) -> list[Array]:
        batch, channels, *size = input_shape
        joined = conv_transpose(v, weight, input_shape=(batch, k * channels, *size), xp=xp,
                                **self.config())
        return [joined[:, i * channels:(i + 1) * channels, ...] for i in range(k)]


@register
class Conv1d(_ConvNd):
    """1d convolution (cross-correlation) of ``(batch, channels, length)`` inputs.

    Parameters
    ----------
    weight
        ``(out_channels, in_channels / groups, kernel)``.
    bias
        ``(out_channels,)`` or ``None``.
    stride, padding, dilation, groups
        As in ``torch.nn.Conv1d``; ``padding`` may also be ``(before, after)`` pairs.

    Examples
    --------
    >>> import numpy as np
    >>> Conv1d(np.ones((1, 1, 2)))(np.array([[[1.0, 2.0, 3.0]]])).tolist()
    [[[3.0, 5.0]]]
    """

    spatial = 1


@register
class Conv2d(_ConvNd):
    """2d convolution (cross-correlation) of ``(batch, channels, height, width)`` inputs.

    Parameters
    ----------
    weight
        ``(out_channels, in_channels / groups, kernel_h, kernel_w)``.
    bias
        ``(out_channels,)`` or ``None``.
    stride, padding, dilation, groups
        As in ``torch.nn.Conv2d``; ``padding`` may also be per-side pairs
        ``((top, bottom), (left, right))``.

    Examples
    --------
    >>> import numpy as np
    >>> Conv2d(np.ones((1, 1, 2, 2)))(np.ones((1, 1, 3, 3))).tolist()
    [[[[4.0, 4.0], [4.0, 4.0]]]]
    """

    spatial = 2



@register
class Conv3d(_ConvNd):
    """3d convolution (cross-correlation) of ``(batch, channels, depth, height, width)``
    inputs (volumes, video).

    Parameters
    ----------
    weight
        ``(out_channels, in_channels / groups, kernel_d, kernel_h, kernel_w)``.
    bias
        ``(out_channels,)`` or ``None``.
    stride, padding, dilation, groups
        As in ``torch.nn.Conv3d``; ``padding`` may also be per-side pairs.

    Examples
    --------
    >>> import numpy as np
    >>> Conv3d(np.ones((1, 1, 2, 2, 2)))(np.ones((1, 1, 2, 2, 3))).tolist()
    [[[[[8.0, 8.0]]]]]
    """

    spatial = 3

def _per_axis(value: int | tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),) * n


class _ConvTransposeNd(_Convolutional):
    """Shared by :class:`ConvTranspose1d`, :class:`ConvTranspose2d` and
    :class:`ConvTranspose3d`."""

    layout = "in_channels, out_channels / groups"
    mergeable = False  # MergeBatchNorm's formulas are for convolutions' weight layout
    _group_out_axis = 2

    @staticmethod
    def _outputs_of(weight: Array, groups: int) -> int:
        return int(weight.shape[1]) * groups

    def __init__(
        self,
        weight: Array,
        bias: Array | None = None,
        stride: int | tuple[int, ...] = 1,
        padding: Any = 0,
        output_padding: int | tuple[int, ...] = 0,
        groups: int = 1,
        dilation: int | tuple[int, ...] = 1,
    ) -> None:
        self._check_weight(weight, bias, groups)
        super().__init__(weight, bias)
        self.stride = stride
        self.padding = padding
        self.output_padding = output_padding
        self.groups = groups
        self.dilation = dilation
        strides = _per_axis(stride, self.spatial)
        extra = _per_axis(output_padding, self.spatial)
        if any(e < 0 or e >= s for e, s in zip(extra, strides, strict=True)):
            raise ValueError(
                f"{type(self).__name__} output_padding={output_padding} must be smaller than "
                f"the stride {stride} (torch also allows up to the dilation; relprop does not)."
            )

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[1]) * self.groups

    def config(self) -> dict[str, Any]:
        return {
            "stride": self.stride,
            "padding": self.padding,
            "output_padding": self.output_padding,
            "groups": self.groups,
            "dilation": self.dilation,
        }

    def _conv_settings(self) -> dict[str, Any]:
        return {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
                "groups": self.groups}

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        r"""``(batch, out_channels, *size)`` with :math:`(n - 1) s - p_0 - p_1 + d (k - 1)
        + o + 1` per axis (torch's formula)."""
        pads = normalize_pads(self.padding, self.spatial)
        sizes = [
            (n - 1) * s - lo - hi + d * (k - 1) + o + 1
            for n, s, (lo, hi), d, k, o in zip(
                input_shape[2:], _per_axis(self.stride, self.spatial), pads,
                _per_axis(self.dilation, self.spatial), self.weight.shape[2:],
                _per_axis(self.output_padding, self.spatial), strict=True,
            )
        ]
        return (int(input_shape[0]), self.out_channels, *(int(size) for size in sizes))

    def linear(self, x: Array, weight: Array, bias: Array | None, xp: ModuleType) -> Array:
        batch, _, *size = self.output_shape(tuple(x.shape))
        channels = int(weight.shape[1]) * self.groups  # the given weight's (stacked too)
        out = conv_transpose(x, weight, input_shape=(batch, channels, *size), xp=xp,
                             **self._conv_settings())
        if bias is None:
            return out
        return out + xp.reshape(bias, (1, -1) + (1,) * self.spatial)

    def transpose(
        self, v: Array, weight: Array, xp: ModuleType, input_shape: tuple[int, ...] | None = None
    ) -> Array:
        return conv(v, weight, None, xp=xp, **self._conv_settings())

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        problem = super().check_input(shape)
        if problem is not None:
            return problem
        if any(size < 1 for size in self.output_shape(shape)[2:]):
            return f"would give an empty output from an input of shape {shape}"
        return None


@register
class ConvTranspose1d(_ConvTransposeNd):
    """1d transposed convolution of ``(batch, channels, length)`` inputs
    (``torch.nn.ConvTranspose1d``): the adjoint of a :class:`Conv1d`.

    Parameters
    ----------
    weight
        ``(in_channels, out_channels / groups, kernel)``, torch's layout.
    bias
        ``(out_channels,)`` or ``None``.
    stride, padding, output_padding, groups, dilation
        As in torch; ``padding`` may also be ``((before, after),)``.

    Examples
    --------
    >>> import numpy as np
    >>> ConvTranspose1d(np.array([[[1.0, -1.0]]]), stride=2)(np.array([[[1.0, 10.0]]])).tolist()
    [[[1.0, -1.0, 10.0, -10.0]]]
    """

    spatial = 1


@register
class ConvTranspose2d(_ConvTransposeNd):
    """2d transposed convolution of ``(batch, channels, height, width)`` inputs
    (``torch.nn.ConvTranspose2d``): the adjoint of a :class:`Conv2d`.

    Parameters
    ----------
    weight
        ``(in_channels, out_channels / groups, kernel_h, kernel_w)``, torch's layout.
    bias
        ``(out_channels,)`` or ``None``.
    stride, padding, output_padding, groups, dilation
        As in torch; ``padding`` may also be per-side pairs.

    Examples
    --------
    >>> import numpy as np
    >>> ConvTranspose2d(np.ones((1, 1, 2, 2)), stride=2)(np.ones((1, 1, 1, 1))).shape
    (1, 1, 2, 2)
    """

    spatial = 2


@register
class ConvTranspose3d(_ConvTransposeNd):
    """3d transposed convolution of ``(batch, channels, depth, height, width)`` inputs
    (``torch.nn.ConvTranspose3d``): the adjoint of a :class:`Conv3d`.

    Parameters
    ----------
    weight
        ``(in_channels, out_channels / groups, kernel_d, kernel_h, kernel_w)``.
    bias
        ``(out_channels,)`` or ``None``.
    stride, padding, output_padding, groups, dilation
        As in torch; ``padding`` may also be per-side pairs.

    Examples
    --------
    >>> import numpy as np
    >>> ConvTranspose3d(np.ones((1, 1, 2, 2, 2)), stride=2)(np.ones((1, 1, 1, 1, 2))).shape
    (1, 1, 2, 2, 4)
    """

    spatial = 3
