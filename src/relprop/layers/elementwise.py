"""Element-wise affine maps with constants: input normalisation written in a ``forward``.

``(x - mean) / std`` in a torch ``forward`` (or a batch norm written out by hand) becomes an
:class:`Affine` layer when a model is imported. Like a batch norm that no canonizer merged,
it is element-wise, so the composites give it the Pass rule: each element's relevance
passes through unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from relprop._xp import Array, array_namespace, detached
from relprop.layers.base import Layer
from relprop.layers.registry import register

__all__ = ["Affine"]


@register
class Affine(Layer):
    r""":math:`y = x \odot \text{scale} + \text{shift}`, with constants that broadcast
    against the batched input (a number as a 0-d array, ``(channels, 1, 1)`` per channel).

    The constants are cast to the input's dtype, as torch does with 0-d tensors.

    Parameters
    ----------
    scale, shift
        Arrays of one library; ``None`` for 1 and 0.

    Examples
    --------
    >>> import numpy as np
    >>> layer = Affine(np.asarray(1 / 0.2), np.asarray(-0.5 / 0.2))  # (x - 0.5) / 0.2
    >>> layer(np.array([[0.5, 1.5]])).round(6).tolist()
    [[0.0, 5.0]]
    """

    def __init__(self, scale: Array | None = None, shift: Array | None = None) -> None:
        array_namespace(scale=scale, shift=shift)
        self.scale = None if scale is None else detached(scale)
        self.shift = None if shift is None else detached(shift)

    def _like(self, a: Array, x: Array, xp: ModuleType) -> Array:
        return a if a.dtype == x.dtype else xp.astype(a, x.dtype)

    def forward(self, x: Array, xp: ModuleType) -> Array:
        y = x if self.scale is None else x * self._like(self.scale, x, xp)
        return y if self.shift is None else y + self._like(self.shift, x, xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        if self.scale is None:
            return v
        g = v * self._like(self.scale, x, xp)
        return g if tuple(g.shape) == tuple(x.shape) else xp.broadcast_to(g, x.shape)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        for name, a in (("scale", self.scale), ("shift", self.shift)):
            if a is None:
                continue
            own = tuple(a.shape)
            if len(own) > len(shape) or any(
                c not in (1, s) for c, s in zip(own[::-1], shape[::-1], strict=False)
            ):
                return (
                    f"has a {name} of shape {own}, which does not broadcast to the input's "
                    f"shape {shape} without changing it"
                )
        return None

    def params(self) -> dict[str, Array]:
        return {"scale": self.scale, "shift": self.shift}

    def per_channel(
        self, channels: int, axis: int, xp: ModuleType
    ) -> tuple[Array, Array] | None:
        """``(scale, shift)`` as ``(channels,)`` vectors when the constants vary along the
        channel ``axis`` only (counted from the end of one sample: ``-3`` for
        ``(channels, height, width)``, ``-1`` for features); else ``None``.

        Examples
        --------
        >>> import numpy as np, array_api_compat.numpy as xp
        >>> scale, shift = Affine(np.full((2, 1, 1), 3.0)).per_channel(2, -3, xp)
        >>> scale.tolist(), shift.tolist()
        ([3.0, 3.0], [0.0, 0.0])
        """
        vectors: list[Array | None] = []
        for constant in (self.scale, self.shift):
            if constant is None:
                vectors.append(None)
                continue
            shape = (1,) * max(0, -axis - len(constant.shape)) + tuple(constant.shape)
            if len(shape) > -axis or shape[axis] not in (1, channels) or any(
                size != 1 for i, size in enumerate(shape) if i != len(shape) + axis
            ):
                return None
            vectors.append(xp.broadcast_to(xp.reshape(constant, (shape[axis],)), (channels,)))
        scale, shift = vectors
        like = scale if scale is not None else shift
        if like is None:
            return None
        return (
            xp.ones_like(like) if scale is None else scale,
            xp.zeros_like(like) if shift is None else shift,
        )

    def map_params(self, fn: Callable[[Array], Array]) -> Affine:
        return Affine(
            None if self.scale is None else fn(self.scale),
            None if self.shift is None else fn(self.shift),
        )

    def config(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        def show(a: Array | None) -> str:
            return "-" if a is None else "x".join(map(str, a.shape)) or "scalar"

        return f"Affine(scale={show(self.scale)}, shift={show(self.shift)})"
