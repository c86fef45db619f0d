"""Figures from heatmaps: labelled image grids and PNG files (Pillow), axes (matplotlib)."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from relprop._xp import library_of
from relprop.plot._common import check_choice, real_values, require, to_host
from relprop.plot.colormaps import colormap
from relprop.plot.heatmap import NORMS, REDUCTIONS, reduce_channels, to_uint8

__all__ = ["grid", "imshow", "save_png"]


def _as_array(x: Any, name: str) -> np.ndarray:
    """Any supported array (or a PIL image, nested lists) as a NumPy array."""
    return to_host(x, name) if library_of(x) is not None else np.asarray(x)


def _cell_rgb(cell: Any, name: str) -> np.ndarray:
    """One grid cell as uint8 RGB ``(h, w, 3)``; non-uint8 data is min-max scaled."""
    a = _as_array(cell, name)
    if a.ndim == 3 and a.shape[-1] not in (1, 3, 4) and a.shape[0] in (1, 3):
        a = np.moveaxis(a, 0, -1)  # channels-first
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]  # RGBA: the alpha channel is dropped
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] != 3) or 0 in a.shape:
        raise ValueError(
            f"{name} has shape {a.shape}; a cell is one image: (h, w), (h, w, 1|3|4) or "
            f"(1|3, h, w). For a batch of heatmaps pass list(heatmaps)."
        )
    if a.dtype != np.uint8:
        values = real_values(a, name)
        low, high = values.min(), values.max()
        a = to_uint8((values - low) / (high - low if high > low else 1.0))
    return np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a


def _fit(image: np.ndarray, size: int | None) -> np.ndarray:
    """``image`` scaled to fit a ``size`` square (aspect kept): nearest neighbour when
    enlarging, so pixels become crisp blocks; area averaging when shrinking."""
    if size is None:
        return image
    h, w = image.shape[:2]
    factor = size / max(h, w)
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    if factor >= 1:
        rows = (np.arange(nh) * h) // nh
        cols = (np.arange(nw) * w) // nw
        return image[rows[:, None], cols[None, :]]
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BOX))


def _texts(texts: Any, shape: Sequence[int], name: str) -> list[list[str]]:
    """Labels as rows of strings of ``shape`` (row lengths); ``None`` entries are empty."""
    if texts is None:
        return [[""] * n for n in shape]
    rows = [list(row) if isinstance(row, (list, tuple)) else None for row in texts]
    if len(rows) != len(shape) or any(
        r is None or len(r) != n for r, n in zip(rows, shape, strict=True)
    ):
        raise ValueError(
            f"{name} must be a list of rows of strings with the shape of cells (row lengths "
            f"{list(shape)}); use None or '' for a cell without one."
        )
    return [["" if t is None else str(t) for t in row] for row in rows if row is not None]


def _labels(labels: Any, count: int, name: str) -> list[str]:
    if labels is None:
        return [""] * count
    if isinstance(labels, str) or len(labels) != count:
        raise ValueError(f"{name} must be a list of {count} strings (one per {name[:3]}).")
    return ["" if t is None else str(t) for t in labels]


def _check_rgb(color: Any, name: str) -> tuple[int, int, int]:
    if len(color) != 3 or not all(isinstance(c, (int, np.integer)) and 0 <= c <= 255
                                  for c in color):
        raise ValueError(f"{name}={color!r} must be an RGB triple of integers in 0..255.")
    return int(color[0]), int(color[1]), int(color[2])


def grid(
    cells: Sequence[Sequence[Any]],
    *,
    titles: Sequence[Sequence[str | None]] | None = None,
    row_labels: Sequence[str | None] | None = None,
    col_labels: Sequence[str | None] | None = None,
    cell_size: int | None = 96,
    pad: int = 6,
    font_size: int | None = None,
    background: tuple[int, int, int] = (255, 255, 255),
    title_position: str = "below",
    text_color: tuple[int, int, int] | None = None,
    font: str | Path | None = None,
) -> np.ndarray:
    """Images in a labelled grid, as one uint8 RGB array (drawn with Pillow).

    Each cell is scaled to fit a ``cell_size`` square, by nearest neighbour when
    enlarging (an 8x8 digit in a 96-pixel cell becomes crisp 12x12 blocks) and by area
    averaging when shrinking. Without any text the result is
    ``pad + rows * (cell_size + pad)`` high and ``pad + cols * (cell_size + pad)`` wide;
    titles add a band to each row, row labels a column at the left, column labels a
    band at the top, and a column widens to fit its widest text.

    Parameters
    ----------
    cells
        Rows of images: uint8 RGB ``(h, w, 3)`` (e.g. one :func:`heatmap`), grayscale
        ``(h, w)``, channels-first ``(1|3, h, w)``; non-uint8 data is min-max scaled (to
        gray for one channel). Rows may differ in length; ``None`` leaves a cell empty.
    titles
        Text for each cell, rows of the same shape as ``cells`` (``None`` or ``""`` for
        none); ``"\\n"`` starts a new line.
    row_labels, col_labels
        Text at the left of each row and at the top of each column.
    cell_size
        Side of the square each image is fitted into; ``None`` keeps the images' sizes.
    pad
        Pixels between cells and around the grid.
    font_size
        Text size in pixels; default about a seventh of ``cell_size`` (at least 10).
    background
        RGB of the canvas.
    title_position
        ``"below"`` or ``"above"`` each cell.
    text_color
        RGB of the text; default black on light backgrounds, white on dark ones.
    font
        A TrueType/OpenType font file; default DejaVu Sans where found (the system's or
        matplotlib's copy), else Pillow's default font (which lacks Greek letters).

    Returns
    -------
    numpy.ndarray
        uint8 RGB ``(height, width, 3)``.

    Examples
    --------
    >>> digit = np.eye(8)  # doctest: +SKIP
    >>> grid([[digit, digit]], titles=[["a", "b"]], cell_size=32).shape  # doctest: +SKIP
    (57, 82, 3)
    """
    require("PIL", "grid", "Pillow")
    from PIL import Image, ImageDraw

    rows = _rows(cells)
    shape = [len(row) for row in rows]
    ncols = max(shape)
    cell_titles = _texts(titles, shape, "titles")
    lefts = _labels(row_labels, len(rows), "row_labels")
    tops = _labels(col_labels, ncols, "col_labels")
    check_choice("title_position", title_position, ("below", "above"))
    if cell_size is not None and (not isinstance(cell_size, int) or cell_size < 1):
        raise ValueError(f"cell_size={cell_size!r} must be a positive integer or None.")
    if not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad={pad!r} must be a non-negative integer.")
    back = _check_rgb(background, "background")
    ink = _ink(back) if text_color is None else _check_rgb(text_color, "text_color")

    images = [
        [None if c is None else _fit(_cell_rgb(c, f"cells[{i}][{j}]"), cell_size)
         for j, c in enumerate(row)]
        for i, row in enumerate(rows)
    ]
    shown = [im for row in images for im in row if im is not None]
    box_h = cell_size or max((im.shape[0] for im in shown), default=1)
    box_w = cell_size or max((im.shape[1] for im in shown), default=1)
    typeface = _font(font_size or max(10, round(max(box_h, box_w) / 7)), font)
    measure = _measurer(ImageDraw.Draw(Image.new("RGB", (1, 1))), typeface)

    gap = max(2, pad // 2)
    title_h = max((measure(t)[1] for row in cell_titles for t in row), default=0)
    top_h = max((measure(t)[1] for t in tops), default=0)
    left_w = max((measure(t)[0] for t in lefts), default=0)
    col_w = [
        max([box_w, measure(tops[j])[0]]
            + [measure(row[j])[0] for row in cell_titles if j < len(row)])
        for j in range(ncols)
    ]
    row_h = box_h + (title_h + gap if title_h else 0)
    x0 = pad + (left_w + pad if left_w else 0)
    y0 = pad + (top_h + gap if top_h else 0)
    col_x = [x0 + sum(col_w[:j]) + pad * j for j in range(ncols)]
    row_y = [y0 + i * (row_h + pad) for i in range(len(rows))]
    width = col_x[-1] + col_w[-1] + pad
    height = row_y[-1] + row_h + pad

    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[...] = back
    above = title_position == "above" and title_h
    box_y = [y + (title_h + gap if above else 0) for y in row_y]
    for i, row in enumerate(images):
        for j, im in enumerate(row):
            if im is None:
                continue
            y = box_y[i] + (box_h - im.shape[0]) // 2
            x = col_x[j] + (col_w[j] - im.shape[1]) // 2
            canvas[y : y + im.shape[0], x : x + im.shape[1]] = im
    picture = Image.fromarray(canvas)
    draw = ImageDraw.Draw(picture)

    def text(x: float, y: float, s: str, align: str = "center") -> None:
        if s:
            left = measure(s)[2]
            draw.multiline_text((x - left, y), s, fill=ink, font=typeface, align=align)

    for i, line in enumerate(cell_titles):
        y = row_y[i] if above else box_y[i] + box_h + gap
        for j, title in enumerate(line):
            text(col_x[j] + (col_w[j] - measure(title)[0]) / 2, y, title)
    for i, label in enumerate(lefts):
        w, h, _ = measure(label)
        text(pad + left_w - w, box_y[i] + (box_h - h) / 2, label, align="right")
    for j, label in enumerate(tops):
        w, h, _ = measure(label)
        text(col_x[j] + (col_w[j] - w) / 2, pad + top_h - h, label)
    return np.asarray(picture)


def _rows(cells: Any) -> list[list[Any]]:
    if isinstance(cells, np.ndarray) or library_of(cells) is not None or not cells:
        raise ValueError(
            "cells must be a non-empty list of rows, each a list of images, e.g. "
            "[[image, heat_a, heat_b]]; a batch array can be split with list(batch)."
        )
    rows = [row for row in cells]
    if any(not isinstance(row, (list, tuple)) or not row for row in rows):
        raise ValueError("cells must be a list of rows, each a non-empty list of images.")
    return [list(row) for row in rows]


def _ink(background: tuple[int, int, int]) -> tuple[int, int, int]:
    r, g, b = background
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b >= 128 else (255, 255, 255)


def _font(size: int, font: str | Path | None) -> Any:
    """``font`` at ``size``; by default DejaVu Sans (it has Greek letters such as ε, α, β)
    from the system or from matplotlib's copy, else Pillow's own default font."""
    from PIL import ImageFont

    if font is not None:
        try:
            return ImageFont.truetype(str(font), size)
        except OSError as error:
            raise ValueError(f"font={font!r} is no TrueType/OpenType font file.") from error
    for candidate in ("DejaVuSans.ttf", _matplotlib_font()):
        if candidate is None:
            continue
        try:
            return ImageFont.truetype(candidate, size)
        except OSError:
            pass
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only its small bitmap font
        return ImageFont.load_default()


def _matplotlib_font() -> str | None:
    """The DejaVu Sans file matplotlib ships, found without importing matplotlib."""
    try:
        spec = importlib.util.find_spec("matplotlib")
    except (ImportError, ValueError):  # hidden or half-imported
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0], "mpl-data/fonts/ttf/DejaVuSans.ttf")
    return str(path) if path.is_file() else None


def _measurer(draw: Any, font: Any) -> Callable[[str], tuple[int, int, int]]:
    """``text -> (width, height, left offset)`` of multi-line text drawn from its top left."""
    cache: dict[str, tuple[int, int, int]] = {"": (0, 0, 0)}

    def measure(text: str) -> tuple[int, int, int]:
        if text not in cache:
            left, _, right, bottom = draw.multiline_textbbox((0, 0), text, font=font)
            cache[text] = (int(np.ceil(right - left)), int(np.ceil(bottom)), int(left))
        return cache[text]

    return measure


def save_png(image: Any, path: str | Path) -> Path:
    """Write a uint8 RGB ``(H, W, 3)`` or grayscale ``(H, W)`` image (or a batch of one)
    as a PNG file, creating missing parent folders.

    Returns
    -------
    pathlib.Path
        The file's resolved path.

    Examples
    --------
    >>> save_png(np.zeros((4, 4, 3), np.uint8), "out/black.png")  # doctest: +SKIP
    PosixPath('/.../out/black.png')
    """
    require("PIL", "save_png", "Pillow")
    from PIL import Image

    a = _as_array(image, "image")
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.dtype != np.uint8 or not (a.ndim == 2 or (a.ndim == 3 and a.shape[-1] in (3, 4))):
        raise ValueError(
            f"image must be uint8 (H, W, 3), (H, W, 4) or (H, W) as heatmap, overlay and grid "
            f"return; got {a.dtype} of shape {a.shape}."
        )
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(a)).save(target, format="PNG")
    return target.resolve()


def imshow(
    ax: Any,
    relevance: Any,
    *,
    cmap: str | Callable[[np.ndarray], np.ndarray] = "bwr",
    norm: str = "symmetric",
    reduce: str | None = "sum",
    channel_axis: int = 0,
    colorbar: bool = False,
    title: str | None = None,
    level: float = 1.0,
    **kwargs: Any,
) -> Any:
    r"""Draw one sample's relevance on a matplotlib ``Axes``, with the axes turned off.

    The colour limits are those of :func:`heatmap`: :math:`\pm \max|r| / \text{level}`
    for ``norm="symmetric"`` (zero at the colour map's centre), the data's range
    stretched by ``level`` about its middle for ``norm="minmax"``.

    Parameters
    ----------
    ax
        A matplotlib ``Axes``.
    relevance
        One sample of any supported library: ``(C, H, W)`` (channels reduced by
        ``reduce`` along ``channel_axis``; -1 for ``(H, W, C)``), ``(H, W)``, or a batch
        of one.
    cmap, norm, reduce, level
        As for :func:`heatmap`.
    colorbar
        Add a colour bar beside the axes.
    title
        Title of the axes.
    **kwargs
        Passed to ``ax.imshow`` (default ``interpolation="nearest"``).

    Returns
    -------
    matplotlib.image.AxesImage

    Examples
    --------
    >>> import matplotlib.pyplot as plt  # doctest: +SKIP
    >>> fig, ax = plt.subplots()  # doctest: +SKIP
    >>> imshow(ax, np.array([[-1.0, 2.0]])).get_clim()  # doctest: +SKIP
    (-2.0, 2.0)
    """
    require("matplotlib", "imshow", "matplotlib")
    from matplotlib.colors import ListedColormap

    check_choice("norm", norm, NORMS)
    check_choice("reduce", reduce, REDUCTIONS)
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not level > 0:
        raise ValueError(f"level={level!r} must be a positive number (1.0 is neutral).")
    r = _sample_map(to_host(relevance, "relevance"), reduce, channel_axis)
    vmin, vmax = _limits(r, norm, float(level))
    if isinstance(cmap, str) and not _is_builtin(cmap):
        colormap(cmap)  # raises for unknown names; matplotlib draws its own map
        colors: Any = cmap
    else:
        built = colormap(cmap)
        name = getattr(built, "name", "relprop")
        colors = ListedColormap(built(np.linspace(0.0, 1.0, 256)), name=name)
    kwargs.setdefault("interpolation", "nearest")
    image = ax.imshow(r, cmap=colors, vmin=vmin, vmax=vmax, **kwargs)
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    if colorbar:
        ax.figure.colorbar(image, ax=ax)
    return image


def _is_builtin(name: str) -> bool:
    from relprop.plot.colormaps import COLORMAPS

    return name in COLORMAPS or (name.endswith("_r") and name[:-2] in COLORMAPS)


def _sample_map(a: np.ndarray, reduce: str | None, channel_axis: int) -> np.ndarray:
    """One sample ``(C, H, W)``, ``(H, W)`` or a batch of one as an ``(H, W)`` map."""
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 2:
        return reduce_channels(a, reduce, channel_axis, 2, "relevance")[0][0]
    if a.ndim != 3:
        raise ValueError(
            f"relevance has shape {a.shape}; imshow draws one sample: (C, H, W), (H, W) or "
            f"a batch of one."
        )
    if not -3 <= channel_axis < 3:
        raise ValueError(
            f"channel_axis={channel_axis} is no axis of one sample of shape {a.shape}; use 0 "
            f"for (C, H, W) or -1 for (H, W, C)."
        )
    axis = channel_axis + 1 if channel_axis >= 0 else channel_axis
    return reduce_channels(a[None], reduce, axis, 2, "relevance")[0][0]


def _limits(r: np.ndarray, norm: str, level: float) -> tuple[float, float]:
    """Colour limits matching :func:`heatmap`'s normalisation and ``level``."""
    if norm == "symmetric":
        high = float(np.max(np.abs(r))) or 1.0
        return -high / level, high / level
    low, high = float(np.min(r)), float(np.max(r))
    if high == low:
        high = low + 1.0  # a constant map shows the low end, as in heatmap
    middle, half = (low + high) / 2, (high - low) / (2 * level)
    return middle - half, middle + half
