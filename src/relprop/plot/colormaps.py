r"""Colour maps for heatmaps, built from published colour stops with NumPy alone.

A colour map takes values :math:`v \in [0, 1]` to RGB colours in :math:`[0, 1]^3` by
linear interpolation between stops :math:`(p_k, c_k)`:

.. math:: c(v) = c_k + \frac{v - p_k}{p_{k+1} - p_k} (c_{k+1} - c_k),
    \qquad p_k \le v \le p_{k+1}.

Every name in :data:`COLORMAPS` is built here and works without matplotlib; any other
name is looked up in matplotlib when it is installed. A built-in name followed by
``_r`` is the map reversed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from relprop.plot._common import require

__all__ = ["COLORMAPS", "Colormap", "colormap"]

Color = str | tuple[float, float, float]
"""A stop's colour: hex digits (``"f00"`` or ``"ff0000"``) or an RGB triple in [0, 1]."""


def _rgb(color: Color) -> tuple[float, float, float]:
    if not isinstance(color, str):
        r, g, b = color
        return float(r), float(g), float(b)
    digits = color if len(color) == 6 else "".join(2 * d for d in color)
    r, g, b = (int(digits[i : i + 2], 16) / 255.0 for i in (0, 2, 4))
    return r, g, b


def _even(*colors: Color) -> tuple[tuple[float, Color], ...]:
    """Stops at evenly spaced positions from 0 to 1."""
    last = len(colors) - 1
    return tuple((k / last, color) for k, color in enumerate(colors))


def _byte(*stops: tuple[int, Color]) -> tuple[tuple[float, Color], ...]:
    """Stops at positions given on zennit's 0-255 index scale (index ``i`` is ``i / 255``)."""
    return tuple((index / 255.0, color) for index, color in stops)


class Colormap:
    """A named colour map: ``cmap(values)`` maps values in [0, 1] to RGB floats ``(..., 3)``.

    Values outside [0, 1] are clipped.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, values: Any) -> np.ndarray:
        raise NotImplementedError

    def reversed(self) -> Colormap:
        """The same map read from 1 to 0, named ``name + "_r"``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class LinearColormap(Colormap):
    r"""A colour map interpolating linearly between stops ``(position, colour)``.

    .. math:: c(v) = c_k + \frac{v - p_k}{p_{k+1} - p_k} (c_{k+1} - c_k),
        \qquad p_k \le v \le p_{k+1}

    Parameters
    ----------
    name
        The map's name.
    stops
        ``(position, colour)`` pairs with positions rising from 0 to 1; colours are hex
        strings or RGB triples in [0, 1].

    Examples
    --------
    >>> cmap = LinearColormap("wr", [(0.0, "fff"), (1.0, "f00")])
    >>> cmap(np.array([0.0, 0.5, 1.0])).tolist()
    [[1.0, 1.0, 1.0], [1.0, 0.5, 0.5], [1.0, 0.0, 0.0]]
    """

    def __init__(self, name: str, stops: Sequence[tuple[float, Color]]) -> None:
        super().__init__(name)
        positions = np.array([float(position) for position, _ in stops])
        if len(stops) < 2 or positions[0] != 0.0 or positions[-1] != 1.0:
            raise ValueError(f"stops of {name!r} must run from position 0 to 1.")
        if np.any(np.diff(positions) < 0):
            raise ValueError(f"stops of {name!r} must have rising positions.")
        self.positions = positions
        self.colors = np.array([_rgb(color) for _, color in stops])

    def __call__(self, values: Any) -> np.ndarray:
        v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        channels = [np.interp(v, self.positions, self.colors[:, c]) for c in range(3)]
        return np.stack(channels, axis=-1)

    def reversed(self) -> LinearColormap:
        pairs = zip(self.positions, self.colors, strict=True)
        stops = [(1.0 - p, (r, g, b)) for p, (r, g, b) in pairs]
        return LinearColormap(self.name + "_r", stops[::-1])


class _MatplotlibColormap(Colormap):
    """One of matplotlib's colour maps (a lookup table of ``cmap.N`` colours)."""

    def __init__(self, name: str, cmap: Any) -> None:
        super().__init__(name)
        self._cmap = cmap

    def __call__(self, values: Any) -> np.ndarray:
        v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
        return np.asarray(self._cmap(v), dtype=np.float64)[..., :3]

    def reversed(self) -> Colormap:
        return _MatplotlibColormap(self.name + "_r", self._cmap.reversed())


# Maps that matplotlib also has, from matplotlib's definitions (matplotlib/_cm.py):
# ``colormap(name)`` agrees with matplotlib's map to within 1/255 at the values k/255,
# where matplotlib's 256-entry lookup table is exact.
_MATPLOTLIB_LIKE: dict[str, tuple[tuple[float, Color], ...]] = {
    "bwr": _even("00f", "fff", "f00"),
    "seismic": _even((0.0, 0.0, 0.3), "00f", "fff", "f00", (0.5, 0.0, 0.0)),
    "gray": _even("000", "fff"),
    "grey": _even("000", "fff"),
    # red, green and blue each rise linearly in turn; breaks at 23/63 and 47/63
    "hot": ((0.0, (0.0416, 0.0, 0.0)), (0.365079, "f00"), (0.746032, "ff0"), (1.0, "fff")),
    # gnuplot's (2v, 2v - 1/2, 2v - 1), each clipped to [0, 1]
    "afmhot": _even("000", (0.5, 0.0, 0.0), (1.0, 0.5, 0.0), (1.0, 1.0, 0.5), "fff"),
    # ColorBrewer's 11-class RdBu (Cynthia Brewer, colorbrewer2.org)
    "RdBu": _even(
        "67001f", "b2182b", "d6604d", "f4a582", "fddbc7", "f7f7f7",
        "d1e5f0", "92c5de", "4393c3", "2166ac", "053061",
    ),
    # K. Moreland, "Diverging Color Maps for Scientific Visualization" (2009), table
    # CoolWarmFloat33, rounded to 8 bits
    "coolwarm": _even(
        "3b4cc0", "445acc", "4d68d7", "5775e1", "6282ea", "6c8ef1", "779af7", "82a5fb",
        "8db0fe", "98b9ff", "a3c2ff", "aec9fd", "b8d0f9", "c2d5f4", "ccd9ee", "d5dbe6",
        "dddddd", "e5d8d1", "ecd3c5", "f1ccb9", "f5c4ad", "f7bba0", "f7b194", "f7a687",
        "f49a7b", "f18d6f", "ec7f63", "e57058", "de604d", "d55042", "cb3e38", "c0282f",
        "b40426",
    ),
}

# zennit's built-in maps, from the colour stops published in zennit's src/zennit/image.py
# (``CMAPS``, zennit 0.5.1, https://github.com/chr5tphr/zennit). Positions are on zennit's
# 0-255 index scale; stops zennit leaves unplaced sit evenly spaced, rounded down.
_ZENNIT: dict[str, tuple[tuple[float, Color], ...]] = {
    "gray": _byte((0, "000"), (255, "fff")),
    "wred": _byte((0, "fff"), (255, "f00")),
    "wblue": _byte((0, "fff"), (255, "00f")),
    "hot": _byte((0, "000"), (85, "f00"), (170, "ff0"), (255, "fff")),
    "cold": _byte((0, "000"), (127, "00f"), (255, "0ff")),
    "coldnhot": _byte(
        (0, "0ff"), (64, "00f"), (128, "000"), (170, "f00"), (212, "ff0"), (255, "fff")
    ),
    "bwr": _byte((0, "00f"), (128, "fff"), (255, "f00")),
    "france": _byte((0, "0055a4"), (128, "fff"), (255, "ef4135")),
    "seismic": _byte((0, "0000d0"), (128, "d0d0d0"), (255, "d00000")),
    "coolio": _byte((0, "00d0d0"), (128, "d0d0d0"), (255, "d000d0")),
    "coleus": _byte((0, "00d000"), (128, "d0d0d0"), (255, "d000d0")),
}

_STOPS: dict[str, tuple[tuple[float, Color], ...]] = {
    **_MATPLOTLIB_LIKE,
    # zennit's maps whose names matplotlib does not use keep their plain names
    **{name: stops for name, stops in _ZENNIT.items() if name not in _MATPLOTLIB_LIKE},
    # every zennit map exactly as zennit draws it, also where matplotlib has the name
    **{f"zennit.{name}": stops for name, stops in _ZENNIT.items()},
}

COLORMAPS: tuple[str, ...] = tuple(_STOPS)
"""Names of the colour maps relprop builds itself (no matplotlib needed).

``bwr``, ``seismic``, ``gray``/``grey``, ``hot``, ``afmhot``, ``RdBu`` and ``coolwarm``
follow matplotlib's definitions; ``wred``, ``wblue``, ``cold``, ``coldnhot``, ``france``,
``coolio`` and ``coleus`` are zennit's; ``zennit.<name>`` is zennit's own version of each
of its maps (zennit's ``hot`` and ``seismic`` differ from matplotlib's).
"""


def colormap(name: str | Callable[[np.ndarray], np.ndarray]) -> Callable[[Any], np.ndarray]:
    """The colour map called ``name``: values in [0, 1] to float RGB in [0, 1], shape ``(..., 3)``.

    Built-in names (:data:`COLORMAPS`, each also reversed with a ``_r`` suffix) are built
    by relprop and need no matplotlib; any other name is one of matplotlib's colour maps
    and needs matplotlib. A callable is returned unchanged.

    Raises
    ------
    ValueError
        If the name is neither built in nor (with matplotlib installed) matplotlib's.

    Examples
    --------
    >>> bwr = colormap("bwr")
    >>> (bwr(np.array([0.0, 0.5, 1.0])) * 255).round().astype(int).tolist()
    [[0, 0, 255], [255, 255, 255], [255, 0, 0]]
    >>> colormap("bwr_r")(1.0).tolist()
    [0.0, 0.0, 1.0]
    """
    if callable(name):
        return name
    if not isinstance(name, str):
        raise TypeError(f"cmap must be a colour map name or a callable; got {name!r}.")
    if name in _STOPS:
        return LinearColormap(name, _STOPS[name])
    if name.endswith("_r") and name[:-2] in _STOPS:
        return LinearColormap(name[:-2], _STOPS[name[:-2]]).reversed()
    try:
        matplotlib = require("matplotlib", "colormap", "matplotlib")
    except ImportError:
        matplotlib = None
    if matplotlib is not None and name in matplotlib.colormaps:
        return _MatplotlibColormap(name, matplotlib.colormaps[name])
    where = (
        "matplotlib has no colour map of that name either"
        if matplotlib is not None
        else "matplotlib's colour map names work once matplotlib is installed "
        "(pip install 'relprop[viz]')"
    )
    raise ValueError(
        f"cmap={name!r} is not a known colour map; built in are {', '.join(COLORMAPS)} "
        f"(each also reversed with '_r'), and {where}."
    )
