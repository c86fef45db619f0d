"""Argument normalisation and window geometry shared by the convolution and pooling ops.

Every op works channels-first on ``x`` of shape ``(batch, channels, *spatial)`` with one,
two or three spatial axes. Sizes (kernel, stride, dilation) are an int or one int per spatial axis;
padding is an int, one int per axis (symmetric), one ``(before, after)`` pair per axis
(asymmetric), or ``"valid"`` / ``"same"`` as in :func:`torch.nn.functional.conv2d`.
All of this is plain Python arithmetic on shapes: nothing here touches array values, so
the ops stay traceable under ``jax.jit``.
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from relprop._xp import Array

__all__ = [
    "Pads",
    "Window",
    "check_floating",
    "memoized",
    "normalize_padding",
    "normalize_pads",
    "normalize_size",
    "spatial_dims",
    "window",
]

Pads = tuple[tuple[int, int], ...]
"""One ``(before, after)`` pair per spatial axis."""

SPATIAL_DIMS = (1, 2, 3)


def memoized(geometry: Callable[..., Window]) -> Callable[..., Window]:
    """``geometry`` (a pure function of shapes and sizes), kept for the arguments seen
    last: a layer asks for the same window on every call, and working it out again costs
    more than a small convolution on a CPU. Only arguments made of ints, floats, bools,
    strings, ``None`` and tuples are kept, keyed by their ``repr`` (so ``1``, ``1.0`` and
    ``True`` stay apart and each is checked); errors are raised every time."""
    kept: dict[str, Window] = {}

    @functools.wraps(geometry)
    def window_of(*args: object) -> Window:
        if not all(_plain(a) for a in args):
            return geometry(*args)
        key = repr(args)
        found = kept.get(key)
        if found is None:
            found = geometry(*args)
            if len(kept) >= 512:
                kept.clear()
            kept[key] = found
        return found

    return window_of


def _plain(value: object) -> bool:
    if type(value) is tuple:
        return all(_plain(v) for v in value)
    return value is None or type(value) in (int, float, bool, str)


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def spatial_dims(shape: Sequence[int], name: str = "x") -> int:
    """Number of spatial axes of a channels-first ``(batch, channels, *spatial)`` shape."""
    n = len(shape) - 2
    if n not in SPATIAL_DIMS:
        raise ValueError(
            f"{name} must have shape (batch, channels, *spatial) with 1, 2 or 3 spatial axes "
            f"(length; height, width; depth, height, width); got {len(shape)} axes, shape "
            f"{tuple(shape)}."
        )
    return n


def normalize_size(value: object, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int or ``n`` ints, each ``>= minimum``) as a tuple of ``n`` ints."""
    if _is_int(value):
        values: tuple[int, ...] = (int(value),) * n  # type: ignore[call-overload]
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == n and all(
        _is_int(item) for item in value
    ):
        values = tuple(int(item) for item in value)
    else:
        raise ValueError(
            f"{name} must be an int or a tuple of {n} ints (one per spatial axis); got {value!r}."
        )
    if any(item < minimum for item in values):
        raise ValueError(f"{name} must be >= {minimum} on every axis; got {value!r}.")
    return values


def normalize_pads(value: object, n: int, name: str = "padding") -> Pads:
    """Padding as one ``(before, after)`` pair of non-negative ints per spatial axis.

    Accepts an int (every side), ``n`` ints (symmetric per axis) or ``n`` entries each an
    int or a ``(before, after)`` pair. A single axis with asymmetric padding is written
    ``((before, after),)``.
    """
    problem = (
        f"{name} must be an int, a tuple of {n} ints, or a tuple of {n} (before, after) pairs "
        f"(one per spatial axis); got {value!r}."
    )
    if _is_int(value):
        pairs = ((int(value), int(value)),) * n  # type: ignore[call-overload]
    elif isinstance(value, Sequence) and not isinstance(value, str) and len(value) == n:
        items = []
        for item in value:
            if _is_int(item):
                items.append((int(item), int(item)))
            elif (
                isinstance(item, Sequence)
                and not isinstance(item, str)
                and len(item) == 2
                and all(_is_int(side) for side in item)
            ):
                items.append((int(item[0]), int(item[1])))
            else:
                raise ValueError(problem)
        pairs = tuple(items)
    else:
        if n == 1 and isinstance(value, Sequence) and len(value) == 2:
            problem += " For one spatial axis write asymmetric padding as ((before, after),)."
        raise ValueError(problem)
    if any(side < 0 for pair in pairs for side in pair):
        raise ValueError(f"{name} must be non-negative; got {value!r}.")
    return pairs


def normalize_padding(
    value: object, n: int, kernel: tuple[int, ...], stride: tuple[int, ...],
    dilation: tuple[int, ...],
) -> Pads:
    """:func:`normalize_pads`, plus ``"valid"`` (no padding) and ``"same"`` (output size =
    input size; stride 1 only; an odd total puts the extra element after, as torch does)."""
    if isinstance(value, str):
        if value == "valid":
            return ((0, 0),) * n
        if value == "same":
            if any(s != 1 for s in stride):
                raise ValueError(f"padding='same' needs stride 1; got stride {stride}.")
            totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
            return tuple((total // 2, total - total // 2) for total in totals)
        raise ValueError(f"padding must be 'valid', 'same', an int or a tuple; got {value!r}.")
    return normalize_pads(value, n)


@dataclass(frozen=True)
class Window:
    """Geometry of a sliding window over the spatial axes of a padded input.

    Output element ``j`` (per axis) reads the padded input at ``j * stride + t * dilation``
    for kernel taps ``t = 0 .. kernel - 1``; padded position ``p`` is input position
    ``p - before``.
    """

    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads
    """The requested padding."""
    input: tuple[int, ...]
    """Spatial input size."""
    output: tuple[int, ...]
    """Spatial output size."""
    extra: tuple[int, ...]
    """Padding added after ``pads`` so that the last (ceil-mode) window fits."""

    @property
    def ndim(self) -> int:
        return len(self.kernel)

    @property
    def size(self) -> int:
        """Number of kernel taps."""
        return math.prod(self.kernel)

    @property
    def full_pads(self) -> Pads:
        """``pads`` with the ceil-mode overhang added after."""
        return tuple((b, a + e) for (b, a), e in zip(self.pads, self.extra, strict=True))

    @property
    def padded(self) -> tuple[int, ...]:
        """Spatial size of the input padded by :attr:`full_pads`."""
        return tuple(s + b + a for s, (b, a) in zip(self.input, self.full_pads, strict=True))

    @property
    def symmetric(self) -> bool:
        """Whether the padding is the same on both sides of every axis (no overhang)."""
        return all(b == a for b, a in self.pads) and not any(self.extra)

    def offsets(self) -> list[tuple[int, ...]]:
        """Kernel taps, row-major (the order of a flattened kernel)."""
        return list(itertools.product(*(range(k) for k in self.kernel)))

    def taps(self, offset: tuple[int, ...]) -> tuple[slice, ...]:
        """Index of the padded array (all axes) read by kernel tap ``offset``, for every
        output element at once: shape ``(batch, channels, *output)``."""
        return (slice(None), slice(None)) + tuple(
            slice(t * d, t * d + s * (o - 1) + 1, s)
            for t, d, s, o in zip(offset, self.dilation, self.stride, self.output, strict=True)
        )

    def crop(self) -> tuple[slice, ...]:
        """Index of the input inside the padded array (all axes)."""
        return (slice(None), slice(None)) + tuple(
            slice(b, b + s) for (b, _), s in zip(self.pads, self.input, strict=True)
        )

    def counts(self, include_pad: bool) -> list[list[int]]:
        """Per axis and output element, how many taps fall on the input (``include_pad``:
        on the input or the requested padding, not on the ceil-mode overhang) — the
        divisors of average pooling, as torch counts them."""
        result = []
        for k, s, (b, a), size, o in zip(
            self.kernel, self.stride, self.pads, self.input, self.output, strict=True
        ):
            low, high = (0, b + size + a) if include_pad else (b, b + size)
            result.append([min(j * s + k, high) - max(j * s, low) for j in range(o)])
        return result


def window(
    input_shape: Sequence[int], kernel: tuple[int, ...], stride: tuple[int, ...],
    dilation: tuple[int, ...], pads: Pads, *, ceil_mode: bool | None = None,
) -> Window:
    """Window geometry of an op on a channels-first input of ``input_shape``.

    ``ceil_mode`` is ``True`` or ``False`` for a pool, ``None`` (floor) for an op that
    has no such option (a convolution; its error then does not suggest one).

    Output size per axis, torch's rule: ``floor((S + before + after - dilation * (kernel
    - 1) - 1) / stride) + 1``, or with ``ceil_mode`` the same with ``ceil``, less one
    where that last window would start at or beyond ``S + before`` (every window starts
    inside the input or the padding before it). So with ``ceil_mode`` an input smaller
    than the kernel still gives one window, which the overhang (:attr:`Window.extra`)
    completes; without it, such an input is an error.

    Raises
    ------
    ValueError
        If an axis gets no window.
    """
    spatial = tuple(int(s) for s in input_shape[2:])
    outputs, extras = [], []
    for size, k, s, d, (b, a) in zip(spatial, kernel, stride, dilation, pads, strict=True):
        span = d * (k - 1) + 1
        o = _output_size(size, span, s, b, a, bool(ceil_mode))
        if o < 1:
            raise ValueError(_too_small(spatial, kernel, stride, dilation, pads, ceil_mode))
        outputs.append(o)
        extras.append(max(0, (o - 1) * s + span - (size + b + a)))
    return Window(
        kernel=kernel, stride=stride, dilation=dilation, pads=pads, input=spatial,
        output=tuple(outputs), extra=tuple(extras),
    )


def _output_size(size: int, span: int, stride: int, before: int, after: int,
                 ceil_mode: bool) -> int:
    """Windows along one axis (torch's ``pooling_output_shape``; may be < 1)."""
    room = size + before + after - span  # negative: the input is smaller than the kernel
    if not ceil_mode:
        return room // stride + 1 if room >= 0 else 0
    o = (room + stride - 1) // stride + 1  # floor division: rounds down below zero too
    if (o - 1) * stride >= size + before:
        o -= 1
    return o


def _too_small(
    spatial: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
    dilation: tuple[int, ...], pads: Pads, ceil_mode: bool | None,
) -> str:
    message = (
        f"The input is too small: spatial size {spatial} with padding {pads} is smaller "
        f"than the (dilated) kernel {tuple(kernel)} (dilation {dilation})"
    )
    if ceil_mode:
        return (f"{message} and, with stride {stride} and ceil_mode=True, no window starts "
                "inside the input or the padding before it. Use a larger input or more "
                "padding.")
    if ceil_mode is None:
        return f"{message}. Use a larger input, more padding or a smaller kernel."
    return (f"{message}. Use a larger input or more padding, or ceil_mode=True, which "
            "keeps one partial window, as torch does.")


def check_floating(xp: ModuleType, **arrays: Array | None) -> None:
    """All given arrays are real floating and share one dtype."""
    dtypes = {}
    for name, a in arrays.items():
        if a is None:
            continue
        if not xp.isdtype(a.dtype, "real floating"):
            raise TypeError(
                f"{name} has dtype {a.dtype}; the op needs a real floating dtype. Cast it "
                f"first, e.g. xp.astype({name}, xp.float32)."
            )
        dtypes[name] = a.dtype
    if len(set(map(str, dtypes.values()))) > 1:
        listed = ", ".join(f"{name}: {dtype}" for name, dtype in dtypes.items())
        raise TypeError(f"Arrays of different dtypes cannot be mixed ({listed}); cast first.")
