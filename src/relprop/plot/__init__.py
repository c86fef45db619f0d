"""Heatmaps of relevance: colour maps, RGB images, overlays, labelled grids, PNG files and
text highlighted token by token.

Relevance of any backend is converted once to NumPy; all pixel maths are NumPy. The
colour maps in :data:`COLORMAPS` and :func:`heatmap`, :func:`overlay`, :func:`text_html`
need nothing else; :func:`grid` and :func:`save_png` need Pillow and :func:`imshow`,
:func:`text_heatmap` matplotlib (both come with ``pip install 'relprop[viz]'``), imported
only when called.

Examples
--------
>>> import numpy as np
>>> from relprop import plot
>>> relevance = np.array([[[[-1.0, 0.0], [0.5, 1.0]]]])  # (batch, C, H, W)
>>> heat = plot.heatmap(relevance)  # uint8 RGB (batch, H, W, 3), bwr colours
>>> heat.shape, heat[0, 0].tolist()
((1, 2, 2, 3), [[0, 0, 255], [255, 255, 255]])
>>> picture = plot.grid([[relevance[0, 0], heat[0]]], titles=[["input", "LRP"]])  # doctest: +SKIP
>>> plot.save_png(picture, "heatmaps.png")  # doctest: +SKIP
PosixPath('.../heatmaps.png')
>>> page = plot.text_html(["the", " cat"], np.array([0.2, -0.1]))  # HTML, no dependencies
>>> figure = plot.text_heatmap(["the", " cat"], np.array([0.2, -0.1]))  # doctest: +SKIP
"""

from __future__ import annotations

from relprop.plot.colormaps import COLORMAPS, Colormap, LinearColormap, colormap
from relprop.plot.heatmap import NORMS, REDUCTIONS, SCALES, heatmap, overlay
from relprop.plot.render import grid, imshow, save_png
from relprop.plot.text import text_heatmap, text_html

__all__ = [
    "COLORMAPS",
    "NORMS",
    "REDUCTIONS",
    "SCALES",
    "Colormap",
    "LinearColormap",
    "colormap",
    "grid",
    "heatmap",
    "imshow",
    "overlay",
    "save_png",
    "text_heatmap",
    "text_html",
]
