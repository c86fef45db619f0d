r"""Token heatmaps: text highlighted by relevance, as HTML (no dependencies) or a matplotlib
figure (PNG).

Each token's background is coloured as :func:`~relprop.plot.heatmap` colours a pixel
with ``norm="symmetric"``: zero relevance is the colour map's centre (white for ``"bwr"``),
the largest :math:`|r|` one of its ends (red positive, blue negative),

.. math:: \text{colour}_t = \operatorname{cmap}\bigl(\operatorname{clip}(\tfrac{1}{2}
    + \text{level}\, \tfrac{r_t}{2 \max_s |r_s|}, 0, 1)\bigr).

Whitespace is made visible by default: a space is drawn as ``␣``, a tab as ``⇥`` and a
line break as ``⏎`` (after which the text goes on on a new line), so that relevance on
whitespace tokens can be seen.
"""

from __future__ import annotations

import html
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from relprop._xp import library_of
from relprop.plot._common import check_choice, real_values, require, to_host
from relprop.plot.colormaps import colormap
from relprop.plot.heatmap import heatmap

__all__ = ["text_heatmap", "text_html"]

_SCALES: tuple[str, ...] = ("sample", "batch")
_SYMBOLS = {" ": "\u2423", "\t": "\u21e5", "\n": "\u23ce"}  # ␣ ⇥ ⏎
_NEWLINE = "\u23ce"


@dataclass
class _Rows:
    """Tokens, their display strings and colours, per row of relevance."""

    tokens: list[str]
    shown: list[str]  # display strings, line breaks removed (⏎ where shown)
    breaks: list[int]  # line breaks after each token
    blank: list[bool]  # whitespace-only tokens (their symbols are drawn in gray)
    values: np.ndarray  # (rows, tokens) float64
    colors: np.ndarray  # (rows, tokens, 3) uint8
    highs: list[float]  # the colour scale's max |r| of each row
    headers: list[str]  # one per row, "" for none
    ticks: tuple[str, str, str]  # legend labels at the low end, centre, high end
    caption: str  # what the legend's scale is


def _as_values(x: Any, name: str) -> np.ndarray:
    """An array of any supported library, or a list of numbers, as NumPy."""
    if library_of(x) is not None:
        return to_host(x, name)
    if isinstance(x, (list, tuple)) and all(
        isinstance(v, numbers.Real) and not isinstance(v, bool) for v in x
    ):
        return np.asarray(x, dtype=np.float64)
    return to_host(x, name)  # raises the TypeError naming the argument


def _relevance_rows(relevance: Any, count: int) -> np.ndarray:
    """``relevance`` as float64 ``(rows, count)``, checked against the number of tokens."""
    several = isinstance(relevance, (list, tuple)) and not (
        relevance and all(isinstance(v, numbers.Real) for v in relevance)
    )
    if several and not relevance:
        raise ValueError("relevance is an empty list; pass one array of per-token values.")
    items = list(relevance) if several else [relevance]
    names = [f"relevance[{k}]" for k in range(len(items))] if several else ["relevance"]
    rows = []
    for item, name in zip(items, names, strict=True):
        a = real_values(_as_values(item, name), name)
        if a.ndim == 2 and a.shape[0] == 1 and several:
            a = a[0]
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or (several and a.shape[0] != 1):
            hint = (
                " One value per token is needed: sum the hidden axis first, e.g. "
                "R.sum(-1)[0] for relevance R of embeddings (batch, tokens, hidden)."
                if a.ndim >= 3
                else ""
            )
            layouts = "(tokens,) or (1, tokens)" if several else "(tokens,) or (rows, tokens)"
            raise ValueError(f"{name} has shape {a.shape}; it must be {layouts}.{hint}")
        if a.shape[1] != count:
            raise ValueError(
                f"tokens has {count} entries but {name} has {a.shape[1]} values per row "
                f"(shape {a.shape}); pass one relevance value per token."
            )
        rows.append(a)
    return np.concatenate(rows, axis=0)


def _token_list(tokens: Sequence[str]) -> list[str]:
    if isinstance(tokens, str):
        return list(tokens)  # a string is its characters
    if library_of(tokens) is not None and not isinstance(tokens, np.ndarray):
        raise TypeError("tokens must be a sequence of strings (decoded tokens), not an array.")
    out = list(tokens)
    for k, token in enumerate(out):
        if not isinstance(token, str):
            raise TypeError(
                f"tokens[{k}] is {token!r} ({type(token).__name__}), not a string; decode "
                f"token ids to text first, e.g. [tokenizer.decode([i]) for i in ids]."
            )
    if not out:
        raise ValueError("tokens is empty; there is nothing to draw.")
    return [str(token) for token in out]


def _display(token: str, show_whitespace: bool) -> tuple[str, int]:
    """The string drawn for ``token`` (without line breaks) and its number of line breaks."""
    breaks = token.count("\n")
    if show_whitespace:
        shown = "".join(_SYMBOLS.get(c, c) for c in token.replace("\r\n", "\n"))
    else:
        shown = token.replace("\r", "").replace("\n", "").replace("\t", "    ")
    return shown, breaks


def _fmt(value: float) -> str:
    return f"{value:.3g}".replace("-", "\u2212")


def _prepare(
    tokens: Sequence[str],
    relevance: Any,
    cmap: str | Callable[[np.ndarray], np.ndarray],
    level: float,
    scale: str,
    labels: Sequence[str] | None,
    show_whitespace: bool,
) -> _Rows:
    words = _token_list(tokens)
    check_choice("scale", scale, _SCALES)
    values = _relevance_rows(relevance, len(words))
    rows = values.shape[0]
    if labels is not None and (isinstance(labels, str) or len(labels) != rows):
        raise ValueError(
            f"labels must be a list of {rows} strings, one per row of relevance "
            f"(got {labels!r})."
        )
    # the colours of heatmap(norm="symmetric") for signals (rows, tokens): the same pixels
    colors = heatmap(values, cmap=cmap, scale=scale, reduce=None, level=level,
                     spatial_dims=1)[:, 0]
    if scale == "batch":
        highs = [float(np.max(np.abs(values)))] * rows
    else:
        highs = [float(v) for v in np.max(np.abs(values), axis=1)]
    per_row = scale == "sample" and rows > 1
    stretch = "" if level == 1 else f" (level {level:g})"
    if per_row:
        ticks = ("\u2212max", "0", "+max")
        caption = f"relevance / max |relevance| of each row{stretch}"
    else:
        high = (highs[0] or 1.0) / level
        ticks = (_fmt(-high), "0", _fmt(high))
        caption = f"relevance{stretch}"
    names = ["" if t is None else str(t) for t in labels] if labels is not None else [""] * rows
    headers = []
    for name, high in zip(names, highs, strict=True):
        if per_row:
            scale_text = f"max |relevance| {_fmt(high)}"
            name = f"{name} \u00b7 {scale_text}" if name else scale_text
        headers.append(name)
    shown, breaks, blank = [], [], []
    for token in words:
        text, count = _display(token, show_whitespace)
        shown.append(text)
        breaks.append(count)
        blank.append(show_whitespace and token != "" and token.isspace())
    return _Rows(words, shown, breaks, blank, values, colors, highs, headers, ticks, caption)


def _ink(rgb: np.ndarray) -> bool:
    """Whether a background needs light text."""
    r, g, b = (float(c) for c in rgb)
    return 0.299 * r + 0.587 * g + 0.114 * b < 128


def _hex(rgb: Any) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


def text_html(
    tokens: Sequence[str],
    relevance: Any,
    path: str | Path | None = None,
    *,
    cmap: str | Callable[[np.ndarray], np.ndarray] = "bwr",
    level: float = 1.0,
    scale: str = "sample",
    labels: Sequence[str] | None = None,
    title: str | None = None,
    show_whitespace: bool = True,
) -> str:
    r"""Tokens highlighted by their relevance, as a self-contained HTML snippet.

    Every token is a ``<span>`` with an inline background colour (the symmetric colour
    scale of :func:`~relprop.plot.heatmap`: white at zero, red positive, blue negative for
    ``"bwr"``) and its relevance as a tooltip; the text is HTML-escaped. A colour legend
    follows the text. Needs nothing but NumPy.

    Parameters
    ----------
    tokens
        The decoded tokens, one string each (a string is taken as its characters).
    relevance
        One value per token, of any supported library (or a list of numbers): ``(tokens,)``,
        ``(rows, tokens)`` or a list of ``(tokens,)`` arrays, for several explanations of
        the same text (one highlighted copy per row). For relevance of embeddings
        ``(batch, tokens, hidden)`` pass its sum over the hidden axis, ``R.sum(-1)[0]``.
    path
        Where to write the snippet, wrapped in a minimal UTF-8 HTML page (missing parent
        folders are created).
    cmap
        A colour map name (see :func:`~relprop.plot.colormap`) or a callable.
    level
        Stretch of the colours about the centre, as for :func:`~relprop.plot.heatmap`.
    scale
        ``"sample"``: each row is scaled by its own :math:`\max |r|` (each row's maximum
        is then shown beside its label); ``"batch"``: one scale for all rows.
    labels
        A label shown above each row.
    title
        A heading above the text.
    show_whitespace
        Draw spaces as ``␣``, tabs as ``⇥`` and line breaks as ``⏎`` (in gray on
        whitespace-only tokens); with ``False`` they are kept as whitespace.

    Returns
    -------
    str
        The HTML ``<div>``: display it in a notebook with ``IPython.display.HTML`` or put
        it in a page.

    Raises
    ------
    ValueError
        If ``relevance`` does not hold one value per token (the message names both
        arguments), holds NaN, or an option is unknown.
    TypeError
        If a token is no string.

    Examples
    --------
    >>> html = text_html(["Hello", " world", "<3"], np.array([1.0, -0.5, 0.0]))
    >>> html.count('<span title="relevance'), "&lt;3" in html, "\u2423world" in html
    (3, True, True)
    >>> "background-color:#ff0000" in html, "background-color:#8080ff" in html
    (True, True)
    """
    rows = _prepare(tokens, relevance, cmap, level, scale, labels, show_whitespace)
    parts = ['<div class="relprop-text" style="font-family:\'DejaVu Sans\',Verdana,sans-serif;'
             'line-height:2;color:#000;background:#fff;padding:0.5em;max-width:60em">']
    if title:
        parts.append(f'<div style="font-weight:bold;font-size:1.15em;margin-bottom:0.3em">'
                     f"{html.escape(title)}</div>")
    for r in range(rows.values.shape[0]):
        if rows.headers[r]:
            parts.append(f'<div style="font-weight:bold;font-size:0.9em;margin-top:0.4em">'
                         f"{html.escape(rows.headers[r])}</div>")
        spans = []
        for t, shown in enumerate(rows.shown):
            rgb = rows.colors[r, t]
            ink = "#fff" if _ink(rgb) else ("#777" if rows.blank[t] else "#000")
            spans.append(
                f'<span title="relevance {rows.values[r, t]:.4g}" style="background-color:'
                f"{_hex(rgb)};color:{ink};padding:0.15em 0.1em;margin:0 1px;"
                f'border-radius:0.2em">{html.escape(shown)}</span>'
                + "<br>" * rows.breaks[t]
            )
        parts.append('<div style="white-space:pre-wrap;word-break:break-word">'
                     + "".join(spans) + "</div>")
    stops = ",".join(_hex(np.rint(np.clip(c, 0, 1) * 255))
                     for c in np.asarray(colormap(cmap)(np.linspace(0.0, 1.0, 11))))
    low, middle, high = (html.escape(t) for t in rows.ticks)
    parts.append(
        '<div style="margin-top:0.6em;font-size:0.8em;line-height:1.4">'
        f'<div style="width:16em;height:0.9em;border:1px solid #999;'
        f'background:linear-gradient(to right,{stops})"></div>'
        '<div style="width:16em;display:flex;justify-content:space-between">'
        f"<span>{low}</span><span>{middle}</span><span>{high}</span></div>"
        f"<div>{html.escape(rows.caption)}</div></div>"
    )
    parts.append("</div>")
    snippet = "".join(parts)
    if path is not None:
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        name = html.escape(title or "relevance of tokens")
        target.write_text(
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{name}</title>\n</head>\n<body>\n{snippet}\n</body>\n</html>\n",
            encoding="utf-8",
        )
    return snippet


def _wrap(text: str, width: float, measure: Callable[[str], float]) -> list[str]:
    """``text`` broken at spaces (and at its line breaks) into lines at most ``width`` wide."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split(" "):
            candidate = f"{line} {word}" if line else word
            if line and measure(candidate) > width:
                lines.append(line)
                line = word
            else:
                line = candidate
        lines.append(line)
    return lines


def text_heatmap(
    tokens: Sequence[str],
    relevance: Any,
    path: str | Path | None = None,
    *,
    cmap: str | Callable[[np.ndarray], np.ndarray] = "bwr",
    level: float = 1.0,
    scale: str = "sample",
    labels: Sequence[str] | None = None,
    title: str | None = None,
    show_whitespace: bool = True,
    width: float = 8.0,
    font_size: float = 13.0,
    colorbar: bool = True,
    dpi: float = 150.0,
) -> Any:
    r"""Tokens highlighted by their relevance, drawn as wrapped text on a matplotlib figure.

    The colours are those of :func:`text_html` (and of :func:`~relprop.plot.heatmap`):
    white at zero, red positive, blue negative for ``"bwr"``, symmetric about zero. Lines
    wrap at the figure's width and break after line-break tokens; the figure is as tall
    as the text needs. Needs matplotlib (``pip install 'relprop[viz]'``), imported only
    when called; no pyplot figure is opened.

    Parameters
    ----------
    tokens, relevance, cmap, level, scale, labels, title, show_whitespace
        As for :func:`text_html`.
    path
        Where to save the figure (PNG, or another format matplotlib knows by the file's
        suffix); missing parent folders are created.
    width
        Figure width in inches.
    font_size
        Size of the tokens' text in points.
    colorbar
        Draw a colour bar below the text.
    dpi
        Resolution of the saved file.

    Returns
    -------
    matplotlib.figure.Figure
        A figure that pyplot does not manage (nothing to close): save it with
        ``fig.savefig`` or ``path``; notebooks with matplotlib's inline backend show it.

    Raises
    ------
    ValueError
        As :func:`text_html`, and for a non-positive ``width`` or ``font_size``.
    ImportError
        Without matplotlib.

    Examples
    --------
    >>> fig = text_heatmap(["The", " ", "cat", "\n", "sat"], np.array([2.0, 0, 1, 0, -1]))
    >>> [text.get_text() for text in fig.texts][:5] == ["The", "\u2423", "cat", "\u23ce", "sat"]
    True
    >>> text_heatmap("abc", [1.0, 0.0, -1.0], "tokens.png", title="a b c")  # doctest: +SKIP
    <Figure size 1200x... with 1 Axes>
    """
    require("matplotlib", "text_heatmap", "matplotlib")
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import FancyBboxPatch
    from matplotlib.textpath import TextToPath
    from matplotlib.transforms import Affine2D

    for name, value in (("width", width), ("font_size", font_size), ("dpi", dpi)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name}={value!r} must be a positive number.")
    rows = _prepare(tokens, relevance, cmap, level, scale, labels, show_whitespace)
    fs = float(font_size)
    regular = FontProperties(family="DejaVu Sans", size=fs)
    bold = FontProperties(family="DejaVu Sans", size=fs, weight="bold")
    heading = FontProperties(family="DejaVu Sans", size=1.1 * fs, weight="bold")
    small = FontProperties(family="DejaVu Sans", size=0.8 * fs)
    paths = TextToPath()

    def measure(text: str, prop: Any = regular) -> float:
        if not text:
            return 0.0
        return float(paths.get_text_width_height_descent(text, prop, ismath=False)[0])

    # layout in points, from the top left, y downwards
    margin, pad_x, gap = 0.8 * fs, 0.18 * fs, 0.14 * fs
    pitch, box_h = 1.75 * fs, 1.4 * fs
    full = 72.0 * float(width)
    usable = full - 2 * margin
    texts: list[tuple[float, float, str, Any, str]] = []  # x, baseline y, text, font, colour
    boxes: list[tuple[float, float, float, np.ndarray]] = []  # x, top y, width, colour
    y = margin
    if title:
        for line in _wrap(title, usable, lambda s: measure(s, heading)):
            texts.append((margin, y + 1.1 * fs, line, heading, "black"))
            y += 1.45 * fs
        y += 0.3 * fs
    widths = [max(measure(s) + 2 * pad_x, 0.45 * fs) for s in rows.shown]
    for r in range(rows.values.shape[0]):
        if r:
            y += 0.5 * fs
        if rows.headers[r]:
            texts.append((margin, y + fs, rows.headers[r], bold, "black"))
            y += 1.5 * fs
        x = margin
        for t, shown in enumerate(rows.shown):
            if x > margin and x + widths[t] > margin + usable:
                x, y = margin, y + pitch
            rgb = rows.colors[r, t]
            boxes.append((x, y + (pitch - box_h) / 2, widths[t], rgb))
            ink = "white" if _ink(rgb) else ("0.45" if rows.blank[t] else "black")
            texts.append((x + pad_x, y + 0.5 * pitch + 0.36 * fs, shown, regular, ink))
            x += widths[t] + gap
            for _ in range(rows.breaks[t]):
                x, y = margin, y + pitch
        if x > margin:
            y += pitch
    bar: tuple[float, float, float] | None = None
    if colorbar:
        y += 0.5 * fs
        bar = (y, min(usable, 3.2 * 72.0), 0.75 * fs)
        y += 0.75 * fs + 1.4 * fs  # the bar and its tick labels (the caption beside it)
    height = y + margin

    fig = Figure(figsize=(full / 72.0, height / 72.0), dpi=float(dpi))
    fig.patch.set_facecolor("white")
    points = Affine2D().scale(1.0, -1.0).translate(0.0, height).scale(1.0 / 72.0)
    where = points + fig.dpi_scale_trans
    for x0, top, w, rgb in boxes:
        fig.add_artist(FancyBboxPatch(
            (x0, top), w, box_h, boxstyle=f"round,pad=0,rounding_size={0.2 * fs}",
            transform=where, facecolor=rgb / 255.0, edgecolor=(0.8, 0.8, 0.8),
            linewidth=0.4,
        ))
    for x0, baseline, text, prop, color in texts:
        fig.text(x0, baseline, text, transform=where, fontproperties=prop, color=color,
                 ha="left", va="baseline", parse_math=False)
    if bar is not None:
        top, bar_w, bar_h = bar
        cax = fig.add_axes((margin / full, (height - top - bar_h) / height,
                            bar_w / full, bar_h / height))
        built = colormap(cmap)
        listed = ListedColormap(np.asarray(built(np.linspace(0.0, 1.0, 256))),
                                name=str(getattr(built, "name", "relprop")))
        mappable = ScalarMappable(norm=Normalize(-1.0, 1.0), cmap=listed)
        bar_artist = fig.colorbar(mappable, cax=cax, orientation="horizontal")
        bar_artist.set_ticks([-1.0, 0.0, 1.0], labels=list(rows.ticks))
        bar_artist.ax.tick_params(labelsize=0.8 * fs, length=2)
        ends = cax.get_xticklabels()  # the end labels stay inside the figure
        ends[0].set_horizontalalignment("left")
        ends[-1].set_horizontalalignment("right")
        bar_artist.outline.set_linewidth(0.5)
        fig.text(margin + bar_w + 0.8 * fs, top + 0.65 * fs, rows.caption, transform=where,
                 fontproperties=small, color="0.25", ha="left", va="baseline",
                 parse_math=False)
    if path is not None:
        target = Path(path).expanduser()
        target.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(target, dpi=float(dpi), facecolor="white")
    return fig
