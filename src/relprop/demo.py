"""``relprop demo``: explain bundled handwritten digits and write the heatmaps to a PNG.

The bundled CNN (:mod:`relprop.data`) classifies ten held-out 8x8 digits, one of each
class; each is explained for its predicted class with several composites on the chosen
backend. The PNG has one column per digit: the input, then one heatmap per composite
(red: evidence for the class, blue: against), labelled with the prediction and the
relevance sum. The table printed beside it lists each digit's label, prediction,
confidence, explained output and relevance sums (a conserving explanation sums to the
output, up to what biases and stabilisers absorb).

Run ``relprop demo`` (or ``python -m relprop.demo``); ``relprop demo --help`` lists the
options. Needs the ``viz`` extra (matplotlib and Pillow) for the picture.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from relprop._methods import method
from relprop._xp import asarray, default_backend, to_numpy
from relprop.data import DIGITS_MODEL, load_digits, load_digits_model
from relprop.inputs import InputSpec
from relprop.io import load_metadata
from relprop.lrp import lrp

__all__ = [
    "DEFAULT_COMPOSITES",
    "DEFAULT_OUT",
    "DemoResult",
    "explain_digits",
    "figure",
    "main",
    "run",
    "softmax",
    "table",
]

DEFAULT_COMPOSITES = ("EpsilonPlusFlat", "EpsilonAlpha2Beta1Flat", "EpsilonGammaBox")
"""The composites the demo compares unless told otherwise."""

DEFAULT_OUT = "relprop-demo.png"
"""Where the demo writes its picture unless told otherwise (the working directory)."""


@dataclass(frozen=True)
class DemoResult:
    """What the demo computed, as host NumPy arrays (one row per explained digit)."""

    backend: str
    images: np.ndarray
    labels: np.ndarray
    predictions: np.ndarray
    confidence: np.ndarray
    outputs: np.ndarray
    relevance: dict[str, np.ndarray]
    path: Path | None


def softmax(logits: np.ndarray) -> np.ndarray:
    r"""Class probabilities of a ``(batch, classes)`` NumPy array of logits.

    :math:`p_c = e^{z_c - \max z} / \sum_k e^{z_k - \max z}`

    Examples
    --------
    >>> softmax(np.array([[0.0, np.log(3.0)]])).round(3).tolist()
    [[0.25, 0.75]]
    """
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _pick(labels: np.ndarray, samples: int) -> np.ndarray:
    """``samples`` digits, cycling through the classes: 0, 1, ..., 9, 0, 1, ..."""
    by_class = [np.flatnonzero(labels == k) for k in range(10)]
    picked = [by_class[i % 10][i // 10] for i in range(samples)]
    return np.asarray(picked)


def explain_digits(
    backend: str | None, composites: Sequence[str], samples: int
) -> DemoResult:
    """Explain ``samples`` bundled digits with each composite on ``backend``."""
    backend = default_backend() if backend is None else backend
    model = load_digits_model(backend)
    images, labels = load_digits("numpy")
    if not 1 <= samples <= len(labels):
        raise ValueError(f"samples must be between 1 and {len(labels)}; got {samples}.")
    chosen = _pick(np.asarray(labels), samples)
    x = asarray(np.asarray(images)[chosen], backend=backend)
    logits = to_numpy(model(x))
    predictions = logits.argmax(axis=1)
    bounds = InputSpec.from_metadata(load_metadata(DIGITS_MODEL)).input_bounds()
    relevance = {}
    for name in composites:
        how = method(composite=name, bounds=bounds)
        explained = lrp(model, x, target=[int(p) for p in predictions], **how)
        relevance[name] = to_numpy(explained)
    return DemoResult(
        backend=backend,
        images=np.asarray(images)[chosen],
        labels=np.asarray(labels)[chosen],
        predictions=predictions,
        confidence=softmax(logits)[np.arange(samples), predictions],
        outputs=logits[np.arange(samples), predictions],
        relevance=relevance,
        path=None,
    )


def table(result: DemoResult) -> str:
    """The per-digit table the demo prints."""
    names = list(result.relevance)
    head = f"{'digit':>5} {'label':>5} {'pred':>4} {'conf':>6} {'output':>8}"
    head += "".join(f" {'sum R ' + name:>{max(14, len(name) + 6)}}" for name in names)
    rows = [head]
    for i in range(len(result.labels)):
        mark = "" if result.labels[i] == result.predictions[i] else "  <- misclassified"
        row = (
            f"{i:>5} {result.labels[i]:>5} {result.predictions[i]:>4} "
            f"{result.confidence[i]:>6.1%} {result.outputs[i]:>8.3f}"
        )
        row += "".join(
            f" {float(result.relevance[n][i].sum()):>{max(14, len(n) + 6)}.3f}" for n in names
        )
        rows.append(row + mark)
    return "\n".join(rows)


def _ink_on_paper(image: np.ndarray) -> np.ndarray:
    """A ``(1, 8, 8)`` digit in [0, 1] (ink = 1) as dark ink on white, uint8 RGB."""
    gray = np.clip(255.0 * (1.0 - image[0]), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def run(
    backend: str | None = None,
    composites: Sequence[str] = DEFAULT_COMPOSITES,
    out: str | Path | None = DEFAULT_OUT,
    samples: int = 10,
    stream: TextIO | None = None,
) -> DemoResult:
    """Run the demo: explain, print the table, write the PNG (unless ``out`` is None).

    Examples
    --------
    >>> import io
    >>> result = run(backend="numpy", composites=["EpsilonPlusFlat"], out=None, samples=2,
    ...              stream=io.StringIO())
    >>> result.predictions.tolist(), result.relevance["EpsilonPlusFlat"].shape
    ([0, 1], (2, 1, 8, 8))
    """
    stream = sys.stdout if stream is None else stream
    result = explain_digits(backend, composites, samples)
    print(f"relprop demo: the bundled digits CNN on backend {result.backend!r}", file=stream)
    print(table(result), file=stream)
    print(
        "conf: softmax probability of the prediction; output: its logit, the explained "
        "quantity;\nsum R: the input relevance's sum per composite (conserving rules keep "
        "the output,\nless what biases and stabilisers absorb).",
        file=stream,
    )
    if out is None:
        return result
    from relprop.plot import save_png

    path = save_png(figure(result), Path(out))
    print(
        f"wrote {path}\n(the inputs, then a heatmap row per composite: red pixels are "
        "evidence for the predicted class, blue ones against it)",
        file=stream,
    )
    return DemoResult(**{**result.__dict__, "path": path})


def figure(result: DemoResult) -> np.ndarray:
    """The demo picture (uint8 RGB): per digit a column, the input above its heatmaps."""
    from relprop.plot import grid, heatmap

    cells: list[list[Any]] = [[_ink_on_paper(image) for image in result.images]]
    titles: list[list[str]] = [
        [
            f"label {label}\npred {pred} ({conf:.1%})"
            for label, pred, conf in zip(
                result.labels, result.predictions, result.confidence, strict=True
            )
        ]
    ]
    for relevance in result.relevance.values():
        cells.append(list(heatmap(relevance, cmap="bwr")))
        titles.append([f"sum {float(r.sum()):.2f}" for r in relevance])
    return grid(cells, titles=titles, row_labels=["input", *result.relevance])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m relprop.demo``: the same as ``relprop demo``."""
    from relprop.cli import main as cli

    return cli(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
