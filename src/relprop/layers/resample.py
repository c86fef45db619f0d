"""Upsampling layers (nearest neighbours, linear interpolation); the maths lives in
:mod:`relprop.ops.resample`. They are parameter-free linear maps whose rows sum to one,
so the Gradient rule (relevance times the map's transpose, what zennit does for modules it
has no rule for) conserves relevance."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from relprop._xp import Array
from relprop.layers.base import Layer
from relprop.layers.registry import register
from relprop.ops.resample import output_sizes, resample, resample_transpose

__all__ = ["Upsample"]

_MODES = ("nearest", "linear")


@register
class Upsample(Layer):
    """Upsampling of the spatial axes of ``(batch, channels, *spatial)`` inputs, as
    ``torch.nn.Upsample`` / ``F.interpolate``.

    Parameters
    ----------
    size
        The output's spatial sizes; or
    scale_factor
        One factor per spatial axis (or one for all; the output sizes are rounded down).
    mode
        ``"nearest"`` or ``"linear"`` (torch's ``"linear"``, ``"bilinear"``: linear along
        each axis).
    align_corners
        For ``"linear"``: torch's ``align_corners``.

    Examples
    --------
    >>> import numpy as np
    >>> Upsample(scale_factor=2)(np.array([[[[1.0, 2.0]]]])).tolist()
    [[[[1.0, 1.0, 2.0, 2.0], [1.0, 1.0, 2.0, 2.0]]]]
    """

    preserves_sign = True

    def __init__(
        self, size: int | tuple[int, ...] | None = None,
        scale_factor: float | tuple[float, ...] | None = None, mode: str = "nearest",
        align_corners: bool = False,
    ) -> None:
        mode = "linear" if mode in ("bilinear", "trilinear") else mode
        if mode not in _MODES:
            raise ValueError(f"Upsample mode={mode!r}; use 'nearest' or 'linear' ('bilinear').")
        if (size is None) == (scale_factor is None):
            raise ValueError("Upsample needs exactly one of size= and scale_factor=.")
        self.size = None if size is None else (
            tuple(int(s) for s in size) if isinstance(size, (tuple, list)) else int(size))
        self.scale_factor = None if scale_factor is None else (
            tuple(float(f) for f in scale_factor) if isinstance(scale_factor, (tuple, list))
            else float(scale_factor))
        self.mode = mode
        self.align_corners = bool(align_corners)

    def _settings(self, shape: tuple[int, ...]) -> tuple[tuple[int, ...], list[float | None]]:
        spatial = len(shape) - 2
        size = None if self.size is None else (
            self.size if isinstance(self.size, tuple) else (self.size,) * spatial)
        factor = None if self.scale_factor is None else (
            self.scale_factor if isinstance(self.scale_factor, tuple)
            else (self.scale_factor,) * spatial)
        scales: list[float | None] = list(factor) if factor is not None else [None] * spatial
        return output_sizes(shape, size, factor), scales

    def forward(self, x: Array, xp: ModuleType) -> Array:
        sizes, scales = self._settings(tuple(x.shape))
        return resample(x, sizes, self.mode, self.align_corners, scales, xp=xp)

    def vjp(self, x: Array, v: Array, xp: ModuleType) -> Array:
        _, scales = self._settings(tuple(x.shape))
        return resample_transpose(v, tuple(x.shape), self.mode, self.align_corners, scales,
                                  xp=xp)

    def check_input(self, shape: tuple[int, ...]) -> str | None:
        if len(shape) < 3:
            return f"expects (batch, channels, *spatial), got {shape}"
        for name, value in (("size", self.size), ("scale_factor", self.scale_factor)):
            if isinstance(value, tuple) and len(value) != len(shape) - 2:
                return f"has {len(value)} {name} entries for {len(shape) - 2} spatial axes"
        return None

    def config(self) -> dict[str, Any]:
        def listed(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        return {"size": listed(self.size), "scale_factor": listed(self.scale_factor),
                "mode": self.mode, "align_corners": self.align_corners}

    def __repr__(self) -> str:
        how = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        corners = ", align_corners=True" if self.align_corners else ""
        return f"Upsample({how}, mode={self.mode!r}{corners})"
