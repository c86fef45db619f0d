r"""Relevance to RGB heatmaps, and heatmaps blended over their input images (NumPy only)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from relprop.plot._common import check_choice, real_values, to_host
from relprop.plot.colormaps import colormap

__all__ = ["NORMS", "REDUCTIONS", "SCALES", "heatmap", "overlay"]

NORMS: tuple[str, ...] = ("symmetric", "minmax")
"""Values of ``norm``: how relevance is mapped to [0, 1] before the colour map."""

SCALES: tuple[str, ...] = ("sample", "batch", "shared")
"""Values of ``scale``: over which arrays the normalisation bounds are taken."""

REDUCTIONS: tuple[str | None, ...] = ("sum", "abs-sum", "max-norm", "l2-norm", None)
"""Values of ``reduce``: how the channel axis is collapsed (``None``: there is none)."""

_REDUCERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "sum": lambda a, axis: np.sum(a, axis=axis),
    "abs-sum": lambda a, axis: np.sum(np.abs(a), axis=axis),
    "max-norm": lambda a, axis: np.max(np.abs(a), axis=axis),
    "l2-norm": lambda a, axis: np.sqrt(np.sum(a * a, axis=axis)),
}


def reduce_channels(
    a: np.ndarray, reduce: str | None, channel_axis: int, spatial_dims: int, name: str
) -> tuple[np.ndarray, bool]:
    """``a`` as ``(batch, *spatial)`` float64 maps, and whether it was a single sample."""
    values = real_values(a, name)
    ndim = values.ndim
    if 0 in values.shape:
        raise ValueError(f"{name} of shape {values.shape} is empty.")
    if ndim == spatial_dims:
        return values[None], True
    if ndim == spatial_dims + 1:
        return values, False
    if ndim != spatial_dims + 2:
        layouts = ("(batch, C, L), (batch, L) or (L,)" if spatial_dims == 1
                   else "(batch, C, H, W), (batch, H, W) or (H, W)")
        raise ValueError(
            f"{name} has shape {values.shape}; with spatial_dims={spatial_dims} it must be "
            f"{layouts}."
        )
    if reduce is None:
        raise ValueError(
            f"{name} of shape {values.shape} has a channel axis, but reduce=None; pick one "
            f"of {', '.join(repr(r) for r in REDUCTIONS if r is not None)}."
        )
    if not -ndim <= channel_axis < ndim or channel_axis % ndim == 0:
        raise ValueError(
            f"channel_axis={channel_axis} does not name a channel axis of {name} with shape "
            f"{values.shape}; use 1 for (batch, C, ...) or -1 for channels-last."
        )
    return _REDUCERS[reduce](values, channel_axis), False


def _bounds(maps: Sequence[np.ndarray], norm: str, per_sample: bool) -> list[tuple[Any, Any]]:
    """``(low, high)`` per array: per sample (shape ``(batch, 1, ...)``) or over all of it."""
    out = []
    for r in maps:
        axes = tuple(range(1, r.ndim)) if per_sample else None
        if norm == "symmetric":
            high = np.max(np.abs(r), axis=axes, keepdims=per_sample)
            out.append((-high, high))
        else:
            out.append((np.min(r, axis=axes, keepdims=per_sample),
                        np.max(r, axis=axes, keepdims=per_sample)))
    return out


def _unit(r: np.ndarray, low: Any, high: Any, norm: str, level: float) -> np.ndarray:
    """``r`` mapped to [0, 1] by ``low -> 0, high -> 1``, then stretched by ``level``."""
    width = np.asarray(high - low, dtype=np.float64)
    flat = width == 0
    u = (r - low) / np.where(flat, 1.0, width)
    # an all-zero symmetric map sits at the centre, a constant min-max one at the low end
    u = np.where(flat, 0.5 if norm == "symmetric" else 0.0, u)
    return np.clip(0.5 + level * (u - 0.5), 0.0, 1.0)


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in [0, 1] as uint8, rounded to the nearest level."""
    return np.rint(np.clip(rgb, 0.0, 1.0) * 255.0).astype(np.uint8)


def heatmap(
    relevance: Any,
    *,
    cmap: str | Callable[[np.ndarray], np.ndarray] = "bwr",
    norm: str = "symmetric",
    scale: str = "sample",
    reduce: str | None = "sum",
    channel_axis: int = 1,
    level: float = 1.0,
    spatial_dims: int = 2,
) -> Any:
    r"""Relevance as uint8 RGB heatmaps ``(batch, H, W, 3)``.

    The channels are reduced to one map :math:`r`, which is scaled to
    :math:`u \in [0, 1]`, stretched by ``level`` about the centre and coloured:

    .. math:: u_{\text{symmetric}} = \frac{1}{2} + \frac{r}{2 \max |r|}, \qquad
        u_{\text{minmax}} = \frac{r - \min r}{\max r - \min r}, \qquad
        \text{pixel} = \operatorname{round}\bigl(255\,
        \operatorname{cmap}(\operatorname{clip}(\tfrac{1}{2}
        + \text{level}\,(u - \tfrac{1}{2}), 0, 1))\bigr)

    With ``norm="symmetric"`` zero relevance gets the colour map's centre, the largest
    :math:`|r|` one of its ends; an all-zero map is all centre. With ``norm="minmax"`` the
    minimum gets the low end and the maximum the high end; a constant map is all low end.

    Parameters
    ----------
    relevance
        An array of any supported library (NumPy, torch, also requiring grad or on a GPU,
        JAX, CuPy, array-api-strict), converted once to NumPy: ``(batch, C, H, W)``
        (channels reduced), ``(batch, H, W)``, or one map ``(H, W)``. Or a list/tuple of
        such arrays (several methods to compare): then a list of results is returned.
    cmap
        A colour map name (see :func:`colormap`) or a callable from [0, 1] to RGB floats.
    norm
        ``"symmetric"`` or ``"minmax"`` (formulas above).
    scale
        Over what the maximum (and minimum) are taken: ``"sample"``, each sample on its
        own; ``"batch"``, one scale over the whole array; ``"shared"``, one scale over all
        arrays of a list and all their samples, so that several methods' heatmaps compare
        (only for a list: for one array it is ``"batch"``).
    reduce
        How the channel axis is collapsed, for inputs that have one (4-d images, 3-d
        signals): ``"sum"`` :math:`\sum_c R_c`; ``"abs-sum"`` :math:`\sum_c |R_c|`;
        ``"max-norm"`` :math:`\max_c |R_c|`; ``"l2-norm"`` :math:`\sqrt{\sum_c R_c^2}`.
        ``None`` states that the input has no channel axis.
    channel_axis
        The channel axis of a batched input: 1 for ``(batch, C, H, W)``, -1 for
        channels-last ``(batch, H, W, C)``.
    level
        A positive stretch of the colours about the centre, as zennit's ``level``: values
        beyond the ends after stretching are clipped, so ``level=2`` saturates at half
        the maximum.
    spatial_dims
        2 for images; 1 for signals ``(batch, C, L)``, ``(batch, L)`` or ``(L,)``, which
        become images of height one, ``(batch, 1, L, 3)``.

    Returns
    -------
    numpy.ndarray or list of numpy.ndarray
        uint8 RGB: ``(batch, H, W, 3)``, or ``(H, W, 3)`` for a single ``(H, W)`` map.

    Raises
    ------
    ValueError
        For an unknown ``norm``, ``scale``, ``reduce`` or ``cmap``, a ``scale`` that does
        not fit the input, a bad ``level``, ``channel_axis`` or shape, or NaN values.

    Examples
    --------
    >>> r = np.array([[[-1.0, 0.0, 2.0]]])  # (batch, H, W)
    >>> heatmap(r)[0, 0].tolist()  # -1 is half way to blue, 0 white, 2 red
    [[128, 128, 255], [255, 255, 255], [255, 0, 0]]
    >>> heatmap(r, norm="minmax", cmap="gray")[0, 0, :, 0].tolist()
    [0, 85, 255]
    >>> a, b = heatmap([r, 2 * r], scale="shared")
    >>> a[0, 0, 2].tolist(), b[0, 0, 2].tolist()
    ([255, 128, 128], [255, 0, 0])
    """
    colors = colormap(cmap)
    check_choice("norm", norm, NORMS)
    check_choice("scale", scale, SCALES)
    check_choice("reduce", reduce, REDUCTIONS)
    check_choice("spatial_dims", spatial_dims, (1, 2))
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not level > 0:
        raise ValueError(f"level={level!r} must be a positive number (1.0 is neutral).")
    several = isinstance(relevance, (list, tuple))
    if scale == "shared" and not several:
        raise ValueError(
            "scale='shared' shares one scale across a list of arrays; for one array use "
            "scale='batch' (one scale over its samples) or scale='sample'."
        )
    items = list(relevance) if several else [relevance]
    if not items:
        raise ValueError("relevance is an empty list; pass an array or a list of arrays.")
    names = [f"relevance[{k}]" for k in range(len(items))] if several else ["relevance"]
    hosts = [to_host(item, name) for item, name in zip(items, names, strict=True)]
    reduced = [
        reduce_channels(a, reduce, channel_axis, spatial_dims, name)
        for a, name in zip(hosts, names, strict=True)
    ]
    maps = [r for r, _ in reduced]
    bounds = _bounds(maps, norm, per_sample=scale == "sample")
    if scale == "shared":
        low = min(float(lo) for lo, _ in bounds)
        high = max(float(hi) for _, hi in bounds)
        bounds = [(low, high)] * len(maps)
    images = []
    for r, (low, high), (_, single) in zip(maps, bounds, reduced, strict=True):
        rgb = to_uint8(colors(_unit(r, low, high, norm, float(level))))
        if spatial_dims == 1:
            rgb = rgb[:, None]
        images.append(rgb[0] if single else rgb)
    return images if several else images[0]


def _layout(shape: tuple[int, ...], hw: tuple[int, int]) -> str | None:
    """Layout of one image of ``shape`` over heatmaps of spatial size ``hw``."""
    if shape == hw:
        return "gray"
    if len(shape) == 3 and shape[:2] == hw and shape[2] in (1, 3):
        return "last"
    if len(shape) == 3 and shape[1:] == hw and shape[0] in (1, 3):
        return "first"
    return None


def _display_rgb(image: Any, hw: tuple[int, int], batch: int | None) -> np.ndarray:
    """``image`` as float RGB in [0, 1], ``(batch | 1, H, W, 3)`` or ``(H, W, 3)``.

    A batch of images (leading axis ``batch`` or 1) is tried first, then one image to be
    used for every heatmap.
    """
    a = to_host(image, "image")
    shape = tuple(int(n) for n in a.shape)
    layout = None
    if batch is not None and len(shape) >= 3 and shape[0] in (batch, 1):
        layout = _layout(shape[1:], hw)
    if layout is None:
        layout = _layout(shape, hw)
    if layout is None:
        batched = "(batch, H, W), (batch, 1|3, H, W), (batch, H, W, 1|3) or "
        batched = batched if batch is not None else ""
        raise ValueError(
            f"image of shape {shape} does not fit heatmaps of spatial size {hw}; it must be "
            f"{batched}(H, W), (1|3, H, W) or (H, W, 1|3) with (H, W) = {hw}."
        )
    uint8 = a.dtype == np.uint8
    values = a.astype(np.float64) / 255.0 if uint8 else real_values(a, "image")
    if layout == "gray":
        values = values[..., None]
    elif layout == "first":
        values = np.moveaxis(values, -3, -1)
    if not uint8 and a.dtype != np.bool_:
        # any other range is min-max scaled per image for display
        axes = (-3, -2, -1)
        low = np.min(values, axis=axes, keepdims=True)
        width = np.max(values, axis=axes, keepdims=True) - low
        values = (values - low) / np.where(width == 0, 1.0, width)
    return np.broadcast_to(values, values.shape[:-1] + (3,))


def overlay(image: Any, heat: Any, alpha: Any = 0.5) -> np.ndarray:
    r"""A heatmap blended over the input image it explains, as uint8 RGB.

    .. math:: \text{out} = \operatorname{round}\bigl((1 - \alpha)\, \text{image}
        + \alpha\, \text{heat}\bigr)

    Parameters
    ----------
    image
        The input, of any supported library: grayscale ``(H, W)``, ``(1, H, W)``,
        ``(H, W, 1)`` or colour ``(3, H, W)``, ``(H, W, 3)``, or a batch of those for
        batched heatmaps (a single image is used for every heatmap). uint8 is shown as
        is; other dtypes are min-max scaled to [0, 1] per image for display.
    heat
        uint8 RGB heatmaps from :func:`heatmap`, ``(H, W, 3)`` or ``(batch, H, W, 3)``.
    alpha
        The heatmap's weight in [0, 1]: a number, or per pixel an array of shape
        ``(H, W)`` or ``(batch, H, W)``, e.g. normalised :math:`|R|` so that relevant
        pixels show the heatmap and irrelevant ones the image.

    Returns
    -------
    numpy.ndarray
        uint8 RGB of ``heat``'s shape.

    Examples
    --------
    >>> image = np.zeros((1, 2), dtype=np.uint8)  # black
    >>> heat = np.full((1, 2, 3), 255, dtype=np.uint8)  # white
    >>> overlay(image, heat, alpha=0.5).tolist()
    [[[128, 128, 128], [128, 128, 128]]]
    >>> overlay(image, heat, alpha=np.array([[0.0, 1.0]]))[0, :, 0].tolist()
    [0, 255]
    """
    h = to_host(heat, "heat")
    if h.dtype != np.uint8 or h.ndim not in (3, 4) or h.shape[-1] != 3:
        raise ValueError(
            f"heat must be uint8 RGB (H, W, 3) or (batch, H, W, 3) as heatmap() returns; "
            f"got {h.dtype} of shape {h.shape}."
        )
    batch = h.shape[0] if h.ndim == 4 else None
    hw = (int(h.shape[-3]), int(h.shape[-2]))
    base = _display_rgb(image, hw, batch)
    weight = _alpha(alpha, h.shape[:-1])
    out = (1.0 - weight) * base + weight * (h.astype(np.float64) / 255.0)
    return to_uint8(out)


def _alpha(alpha: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``alpha`` as float weights broadcast to ``shape + (1,)``."""
    if isinstance(alpha, (int, float)) and not isinstance(alpha, bool):
        a = np.asarray(float(alpha))
    else:
        a = real_values(to_host(alpha, "alpha"), "alpha")
        try:
            a = np.broadcast_to(a, shape)
        except ValueError:
            raise ValueError(
                f"alpha of shape {a.shape} does not fit heatmaps of shape {shape + (3,)}; "
                f"use a number or an array of shape {shape[-2:]} or {shape}."
            ) from None
    if np.any(a < 0) or np.any(a > 1):
        raise ValueError(f"alpha must lie in [0, 1]; got values from {a.min()} to {a.max()}.")
    return a[..., None]
