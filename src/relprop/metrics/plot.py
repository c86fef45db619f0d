"""Perturbation curves as a figure (matplotlib, imported only when called)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from relprop._xp import to_numpy
from relprop.metrics.perturbation import PerturbationResult

__all__ = ["plot_curves"]

_LABELS = {"morf": "most relevant first", "lerf": "least relevant first", "random": "random"}
_COLORS = {"morf": "tab:red", "lerf": "tab:blue", "random": "tab:gray"}


def plot_curves(
    result: PerturbationResult,
    path: str | Path | None = None,
    *,
    ax: Any = None,
    title: str | None = None,
    band: bool = True,
) -> Any:
    """Draw the mean perturbation curve of each order, with its mean AUC in the legend.

    The horizontal axis is the step over the number of steps (``[0, 1]``, the axis
    :func:`~relprop.metrics.auc` integrates over); the vertical one the mean score over
    the samples, with a band of one standard error (``band``).

    Parameters
    ----------
    result
        What :func:`~relprop.metrics.pixel_flipping` returned.
    path
        Write the figure there (PNG, SVG, PDF: by the suffix) and return the path.
    ax
        A matplotlib ``Axes`` to draw into (else a new figure, made without pyplot).
    title
        The axes' title.
    band
        Shade mean +- one standard error of each order's scores.

    Returns
    -------
    pathlib.Path or matplotlib.figure.Figure
        The file written when ``path`` is given, else the figure.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> from relprop import metrics
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, 2.0, 3.0]]))])
    >>> x = np.ones((1, 3))
    >>> result = metrics.pixel_flipping(model, x, x * model.layers[0].weight, target=0)
    >>> metrics.plot_curves(result, "curves.png")  # doctest: +SKIP
    PosixPath('curves.png')
    """
    if not isinstance(result, PerturbationResult):
        raise TypeError(
            f"result must be what metrics.pixel_flipping returned; got {type(result).__name__}."
        )
    try:
        importlib.import_module("matplotlib")
    except ImportError as error:
        raise ImportError(
            "relprop.metrics.plot_curves needs matplotlib: pip install 'relprop[viz]'"
        ) from error
    if ax is None:
        from matplotlib.figure import Figure

        figure = Figure(figsize=(5.0, 3.6), layout="constrained")
        ax = figure.subplots()
    else:
        figure = ax.figure
    steps = np.arange(result.steps + 1) / result.steps
    for order, curve in result.curves.items():
        scores = np.asarray(to_numpy(curve.scores), dtype=np.float64)
        mean = scores.mean(axis=0)
        label = f"{_LABELS[order]} (AUC {curve.mean_auc:.3g})"
        ax.plot(steps, mean, label=label, color=_COLORS[order])
        if band and scores.shape[0] > 1:
            spread = scores.std(axis=0, ddof=1) / np.sqrt(scores.shape[0])
            ax.fill_between(steps, mean - spread, mean + spread, color=_COLORS[order],
                            alpha=0.2, linewidth=0)
    side = result.region_size
    unit = "pixels" if side == 1 else f"{side}x{side} regions"
    ax.set_xlabel(f"perturbation step / {result.steps} ({result.units} {unit})")
    ax.set_ylabel("score")
    if title is not None:
        ax.set_title(title)
    ax.legend(frameon=False)
    if path is None:
        return figure
    target = Path(path)
    figure.savefig(target, dpi=120)
    return target
