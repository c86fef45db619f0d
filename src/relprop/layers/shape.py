"""Layers that only move values: identity, inference-time dropout, flatten, reshape,
permute, slice, broadcast; and user functions (:class:`Lambda`), whose vjp comes from the
autodiff adapter.

The moving layers get the Gradient rule from the composites: relevance moves back with
the values (their vjp is the inverse move)."""

from __future__ import annotations

import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import array_api_extra as xpx

from relprop._xp import Array
from relprop.layers.base import Layer
from relprop.layers.registry import register
from relprop.ops._args import normalize_pads
from relprop.ops.padding import pad, pad_transpose

__all__ = [
    "Broadcast", "Dropout", "Flatten", "Identity", "Lambda", "Permute", "Reshape", "Slice",
    "ZeroPad1d", "ZeroPad2d", "ZeroPad3d",
]


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


@register
class Reshape(Layer):
    """Each sample reshaped to ``shape`` (the batch axis stays first and is not named).

    Parameters
    ----------
    shape
        The shape of one output sample; one entry may be ``-1``.

    Examples
    --------
    >>> import numpy as np
    >>> Reshape((2, 3))(np.zeros((4, 6))).shape
    (4, 2, 3)
    """

    preserves_sign = True

    def __init__(self, shape: tuple[int, ...] | list[int]) -> None:
        self.shape = tuple(int(s) for s in shape)
        if sum(s == -1 for s in self.shape) > 1 or any(s < -1 for s in self.shape):
            raise ValueError(
                f"Reshape shape {self.shape} may hold one -1 and otherwise sizes >= 0."
            )

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.reshape(x, (x.shape[0], *self.shape))

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xp.reshape(v, x.shape)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        size, known = math.prod(shape[1:]), math.prod(s for s in self.shape if s != -1)
        fits = size % known == 0 if -1 in self.shape and known else size == known
        if len(shape) < 1 or not fits:
            return f"cannot reshape samples of shape {shape[1:]} to {self.shape}"
        return None

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def __repr__(self) -> str:
        return f"Reshape({self.shape})"


@register
class Permute(Layer):
    """The axes reordered, ``y = x.permute(dims)`` as in torch; ``dims[0]`` must be ``0``
    (the batch axis stays first).

    Channels-last models imported into relprop's channels-first layers read their input
    through one (``Permute((0, 3, 1, 2))``: NHWC to NCHW).

    Examples
    --------
    >>> import numpy as np
    >>> Permute((0, 3, 1, 2))(np.zeros((5, 8, 8, 3))).shape
    (5, 3, 8, 8)
    """

    preserves_sign = True

    def __init__(self, dims: tuple[int, ...] | list[int]) -> None:
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(len(self.dims))) or self.dims[:1] != (0,):
            raise ValueError(
                f"Permute dims {self.dims} must reorder 0, ..., n-1 and keep the batch "
                "axis 0 first."
            )

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.permute_dims(x, self.dims)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        inverse = tuple(self.dims.index(axis) for axis in range(len(self.dims)))
        return xp.permute_dims(v, inverse)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != len(self.dims):
            return f"permutes {len(self.dims)} axes, got an input of shape {shape}"
        return None

    def config(self) -> dict[str, Any]:
        return {"dims": list(self.dims)}

    def __repr__(self) -> str:
        return f"Permute({self.dims})"



@register
class Slice(Layer):
    """Entries ``start:stop:step`` along ``axis`` of each sample (``x[:, ..., start:stop]``):
    one part of a split (the query, key and value of a fused projection), the class token
    (``Slice(1, 0, 1)``), the halves of a rotary embedding.

    Its vjp puts the values back where they came from and zeros elsewhere, so relevance
    moves back with them (the Gradient rule).

    Parameters
    ----------
    axis
        The axis of the batched input (``>= 1``; negative counts from the end).
    start, stop, step
        As in Python's slices of that axis (``stop=None``: to the end).

    Examples
    --------
    >>> import numpy as np
    >>> Slice(1, 1, 3)(np.arange(8.0).reshape(2, 4)).tolist()
    [[1.0, 2.0], [5.0, 6.0]]
    """

    preserves_sign = True

    def __init__(self, axis: int, start: int = 0, stop: int | None = None, step: int = 1) -> None:
        if axis == 0:
            raise ValueError("Slice along axis 0 would pick samples of the batch; use axis >= 1.")
        if int(step) < 1:
            raise ValueError(f"Slice step must be >= 1; got {step}.")
        self.axis, self.start, self.step = int(axis), int(start), int(step)
        self.stop = None if stop is None else int(stop)

    def _index(self, ndim: int) -> tuple[Any, ...]:
        axis = self.axis % ndim
        return (slice(None),) * axis + (slice(self.start, self.stop, self.step), Ellipsis)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return x[self._index(x.ndim)]

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return xpx.at(xp.zeros_like(x, dtype=v.dtype), self._index(x.ndim)).set(v)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if not -len(shape) < self.axis < len(shape) or self.axis % len(shape) == 0:
            return f"slices axis {self.axis} of an input of shape {shape}"
        return None

    def config(self) -> dict[str, Any]:
        return {"axis": self.axis, "start": self.start, "stop": self.stop, "step": self.step}

    def __repr__(self) -> str:
        stop = "" if self.stop is None else self.stop
        step = "" if self.step == 1 else f":{self.step}"
        return f"Slice(axis={self.axis}, {self.start}:{stop}{step})"


@register
class Broadcast(Layer):
    """Each sample's size-1 axes repeated to ``shape`` (``x.expand(batch, *shape)``): the
    keys and values a group of query heads shares (grouped-query attention).

    Its vjp sums the copies, so a repeated entry gets the relevance of all its copies.

    Examples
    --------
    >>> import numpy as np
    >>> Broadcast((2, 3))(np.array([[[1.0], [2.0]]])).tolist()
    [[[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]]
    """

    preserves_sign = True

    def __init__(self, shape: tuple[int, ...] | list[int]) -> None:
        self.shape = tuple(int(s) for s in shape)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return xp.broadcast_to(x, (x.shape[0], *self.shape))

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        axes = tuple(i for i in range(1, x.ndim) if x.shape[i] != v.shape[i])
        return xp.sum(v, axis=axes, keepdims=True) if axes else v

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        sample = shape[1:]
        if len(sample) != len(self.shape) or any(
            s not in (1, n) for s, n in zip(sample, self.shape, strict=True)
        ):
            return f"cannot broadcast samples of shape {sample} to {self.shape}"
        return None

    def config(self) -> dict[str, Any]:
        return {"shape": list(self.shape)}

    def __repr__(self) -> str:
        return f"Broadcast({self.shape})"


class _ZeroPadNd(Layer):
    spatial: int = 0
    preserves_sign = True

    def __init__(self, padding: Any) -> None:
        pairs = normalize_pads(padding, self.spatial, "padding")
        self.padding = tuple(tuple(pair) for pair in pairs)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        return pad(x, self.padding, 0.0, xp=xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        return pad_transpose(v, self.padding, xp=xp)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) != 2 + self.spatial:
            return f"expects (batch, channels, {', '.join(['...'] * self.spatial)}), got {shape}"
        return None

    def config(self) -> dict[str, Any]:
        return {"padding": [list(pair) for pair in self.padding]}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.padding})"


@register
class ZeroPad1d(_ZeroPadNd):
    """Zeros around the length of ``(batch, channels, length)`` inputs.

    Parameters
    ----------
    padding
        An int (both sides) or ``((before, after),)``.

    Examples
    --------
    >>> import numpy as np
    >>> ZeroPad1d(((1, 2),))(np.ones((1, 1, 2))).tolist()
    [[[0.0, 1.0, 1.0, 0.0, 0.0]]]
    """

    spatial = 1


@register
class ZeroPad2d(_ZeroPadNd):
    """Zeros around the image of ``(batch, channels, height, width)`` inputs.

    Parameters
    ----------
    padding
        An int, one int per axis, or ``((top, bottom), (left, right))`` (relprop's order,
        the axes in turn; torch's ``nn.ZeroPad2d`` takes ``(left, right, top, bottom)``).

    Examples
    --------
    >>> import numpy as np
    >>> ZeroPad2d(((0, 1), (1, 0)))(np.ones((1, 1, 1, 1))).tolist()
    [[[[0.0, 1.0], [0.0, 0.0]]]]
    """

    spatial = 2


@register
class ZeroPad3d(_ZeroPadNd):
    """Zeros around the volume of ``(batch, channels, depth, height, width)`` inputs
    (``padding``: an int, one per axis, or one ``(before, after)`` pair per axis)."""

    spatial = 3


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
