"""Heatmaps of relevance: colour maps, RGB images, overlays, labelled grids and PNG files.

Relevance of any backend is converted once to NumPy; all pixel maths are NumPy. The
colour maps in :data:`COLORMAPS` and :func:`heatmap`, :func:`overlay` need nothing else;
:func:`grid` and :func:`save_png` need Pillow and :func:`imshow` matplotlib (both come
with ``pip install 'relprop[viz]'``), imported only when called.

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
"""

from __future__ import annotations

from relprop.plot.colormaps import COLORMAPS, Colormap, LinearColormap, colormap
from relprop.plot.heatmap import NORMS, REDUCTIONS, SCALES, heatmap, overlay
from relprop.plot.render import grid, imshow, save_png

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
]
