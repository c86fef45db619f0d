r"""Pixel flipping and region perturbation (Samek et al. 2017): perturb the input in the
order of its relevance and follow the model's score.

Most relevant first (``"morf"``), the score should fall fast: a low area under the curve
is good. Least relevant first (``"lerf"``), it should stay high. A random order
(``"random"``, seeded) is the baseline both are compared with. Every step evaluates the
model once, on every sample of every order together (``batch_size`` splits that into
chunks); the orders and any random values come from NumPy, so every backend perturbs the
same pixels with the same values.

Samek, Binder, Montavon, Lapuschkin, Müller: "Evaluating the visualization of what a Deep
Neural Network has learned", IEEE TNNLS 28(11), 2017.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any

import numpy as np
from array_api_compat import device

from relprop._checks import target_relevance
from relprop._dask import is_dask_array, on_dask
from relprop._placement import from_host
from relprop._xp import Array, array_namespace, detached, library_of, to_numpy
from relprop.metrics._common import (
    as_function,
    check_relevance,
    one_target_per_sample,
    per_sample_sum,
    rows_of_target,
)

__all__ = [
    "ORDERS",
    "PerturbationCurve",
    "PerturbationResult",
    "aopc",
    "auc",
    "pixel_flipping",
    "region_perturbation",
]

ORDERS: tuple[str, ...] = ("morf", "lerf", "random")
"""The perturbation orders: most relevant first, least relevant first, random."""

def auc(curves: Array) -> Array:
    r"""Area under perturbation curves, trapezoidal, with the steps spread over ``[0, 1]``.

    For a curve :math:`f_0, \dots, f_L` (the score after :math:`k` steps):

    .. math:: \mathrm{AUC} = \frac{1}{L} \sum_{k=1}^{L} \frac{f_{k-1} + f_k}{2}

    Parameters
    ----------
    curves
        ``(..., L + 1)``: one curve per row, :math:`L \ge 1` steps.

    Returns
    -------
    array
        ``(...)``: one area per curve, in the curves' library and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> auc(np.array([[4.0, 2.0, 0.0]])).tolist()  # (4 + 2) / 2 / 2 + (2 + 0) / 2 / 2
    [2.0]
    """
    xp = array_namespace(curves=curves)
    steps = _steps_of(curves)
    return xp.sum(curves[..., 1:] + curves[..., :-1], axis=-1) / (2.0 * steps)


def aopc(curves: Array) -> Array:
    r"""Area over the perturbation curve (AOPC) of Samek et al. 2017, per curve.

    .. math:: \mathrm{AOPC} = \frac{1}{L + 1} \sum_{k=0}^{L} \left(f_0 - f_k\right)

    The mean over a data set (Samek's :math:`\langle \cdot \rangle_{p(x)}`) is the mean
    of the result. Most relevant first, a high AOPC is good.

    Parameters
    ----------
    curves
        ``(..., L + 1)``: one curve per row, :math:`L \ge 1` steps.

    Returns
    -------
    array
        ``(...)``, in the curves' library and dtype.

    Examples
    --------
    >>> import numpy as np
    >>> aopc(np.array([[4.0, 2.0, 0.0]])).tolist()  # (0 + 2 + 4) / 3
    [2.0]
    """
    xp = array_namespace(curves=curves)
    _steps_of(curves)
    return xp.mean(curves[..., :1] - curves, axis=-1)


def _steps_of(curves: Array) -> int:
    if len(curves.shape) < 1 or curves.shape[-1] < 2:
        raise ValueError(
            f"curves has shape {tuple(curves.shape)}; a perturbation curve needs at least two "
            "points on its last axis (the unperturbed score and one step)."
        )
    return int(curves.shape[-1]) - 1


@dataclass(frozen=True, eq=False)
class PerturbationCurve:
    """One order's curves, in the input's library: ``scores[i, k]`` is sample ``i``'s
    score after ``k`` steps (``k = 0``: unperturbed)."""

    order: str
    """``"morf"``, ``"lerf"`` or ``"random"``."""
    scores: Array
    """``(batch, steps + 1)``."""
    auc: Array
    """``(batch,)``: :func:`auc` of each curve."""
    aopc: Array
    """``(batch,)``: :func:`aopc` of each curve."""
    ranking: Array
    """``(batch, units)``: the units (pixels or regions, flattened) in the order perturbed."""

    @property
    def mean_auc(self) -> float:
        """The AUC averaged over the samples."""
        return float(np.mean(to_numpy(self.auc)))

    @property
    def mean_aopc(self) -> float:
        """The AOPC averaged over the samples (Samek's AOPC of a data set)."""
        return float(np.mean(to_numpy(self.aopc)))

    def __repr__(self) -> str:
        batch, points = self.scores.shape
        return (
            f"PerturbationCurve({self.order!r}: {batch} samples, {points - 1} steps, "
            f"mean AUC {self.mean_auc:.4g}, mean AOPC {self.mean_aopc:.4g})"
        )


@dataclass(frozen=True, eq=False)
class PerturbationResult:
    """The curves of every order asked for, by order; print it for a table.

    ``result["morf"]`` (or ``result.morf``) is a :class:`PerturbationCurve`.
    """

    curves: Mapping[str, PerturbationCurve]
    """By order, in the order asked for."""
    perturbed: tuple[int, ...]
    """How many units are perturbed after each step: ``(0, n_1, ..., n_L)``."""
    units: int
    """Units (pixels or regions) per sample."""
    region_size: int
    """Side of the square regions (1: single pixels, pixel flipping)."""
    fill: str
    """What replaced the perturbed units (for printing)."""

    @property
    def orders(self) -> tuple[str, ...]:
        return tuple(self.curves)

    @property
    def steps(self) -> int:
        return len(self.perturbed) - 1

    @property
    def fraction(self) -> np.ndarray:
        """The fraction of units perturbed after each step (NumPy, ``(steps + 1,)``)."""
        return np.asarray(self.perturbed, dtype=np.float64) / self.units

    def __getitem__(self, order: str) -> PerturbationCurve:
        if order not in self.curves:
            raise KeyError(
                f"order {order!r} was not computed; this result has {list(self.curves)} "
                f"(ask for it with orders=...)."
            )
        return self.curves[order]

    @property
    def morf(self) -> PerturbationCurve:
        return self["morf"]

    @property
    def lerf(self) -> PerturbationCurve:
        return self["lerf"]

    @property
    def random(self) -> PerturbationCurve:
        return self["random"]

    def table(self) -> str:
        """A plain-text table: mean and standard deviation of AUC and AOPC per order."""
        first = next(iter(self.curves.values()))
        batch = first.scores.shape[0]
        increments = {b - a for a, b in zip(self.perturbed[:-1], self.perturbed[1:], strict=True)}
        each = f"of {increments.pop()}" if len(increments) == 1 else (
            f"of {min(increments)} to {max(increments)}")
        side = self.region_size
        what = "pixels" if side == 1 else f"{side}x{side} regions"
        lines = [
            f"{batch} samples, {self.units} {what}, {self.steps} steps {each}, "
            f"perturbed with {self.fill}",
            f"{'order':<8}{'AUC mean':>12}{'AUC sd':>12}{'AOPC mean':>12}{'AOPC sd':>12}",
        ]
        for name, curve in self.curves.items():
            a, o = np.asarray(to_numpy(curve.auc)), np.asarray(to_numpy(curve.aopc))
            lines.append(f"{name:<8}{a.mean():>12.4f}{a.std():>12.4f}{o.mean():>12.4f}"
                         f"{o.std():>12.4f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return f"PerturbationResult(\n{self.table()}\n)"


def pixel_flipping(
    model: Any,
    x: Array,
    relevance: Array,
    target: object = None,
    *,
    orders: Sequence[str] = ORDERS,
    steps: int | None = None,
    per_step: int | None = None,
    region_size: int = 1,
    fill: float | str | Array | Callable[[Array], Array] = 0.0,
    seed: int | np.random.Generator = 0,
    batch_size: int | None = None,
) -> PerturbationResult:
    r"""Pixel flipping: perturb the input unit by unit in the order of ``relevance`` and
    record the model's score after every step.

    After step :math:`k` the first :math:`n_k` units of the order (``steps`` and
    ``per_step`` below) are replaced by ``fill``:
    :math:`x^{(k)} = x \odot (1 - m_k) + v \odot m_k`, and the curve is
    :math:`f(x^{(0)}), \dots, f(x^{(L)})`. Most relevant first (``"morf"``) the units are
    taken by decreasing relevance, least relevant first (``"lerf"``) by increasing
    relevance, ties by position (a stable sort, the same on every backend); ``"random"``
    is a seeded random permutation per sample. The summaries are :func:`auc` and
    :func:`aopc`. Samek et al. 2017 (Sec. III) perturb most relevant first; a good
    explanation makes the score fall fast (low AUC, high AOPC), and is judged against
    the random order.

    Parameters
    ----------
    model
        An ``rp.Sequential`` / ``rp.Graph``, a ``torch.nn.Module`` (converted as
        :func:`relprop.lrp` converts it), or any function of a batch returning an array
        of the input's library. It is only evaluated, once per step.
    x
        Input batch ``(batch, ...)``; it is not modified.
    relevance
        ``(batch, ...)``, x's library: the same shape as ``x``, or fewer or size-1 axes
        that broadcast against one sample (aligned from the end): ``(batch, 1, H, W)`` or
        ``(batch, H, W)`` for relevance summed over channels, so that a unit is a pixel
        with all its channels (``R.sum(axis=1, keepdims=True)``). Each entry (or region)
        is one unit.
    target
        What the score is, as ``rp.lrp`` reads targets: ``None`` (each sample's arg-max
        class of the unperturbed input, kept for every step), an int, one int per sample,
        a floating array of the output's shape (the score is :math:`\sum_j w_j f_j`), or a
        function of the output returning one value per sample (rows must be independent:
        batches are stacked and chunked). An index picks the logit :math:`f_c(x)`.
    orders
        Which of ``"morf"``, ``"lerf"``, ``"random"`` to compute.
    steps, per_step
        Steps after the unperturbed input, and units per step: after step :math:`k`,
        :math:`n_k = \min(k \cdot \mathrm{per\_step}, N)` units are perturbed (default
        ``per_step=1``, and ``steps`` until all :math:`N` are). Only ``steps``: evenly
        spread, :math:`n_k = \lfloor k N / L \rfloor`, all :math:`N` at the end.
    region_size
        ``r > 1``: units are non-overlapping ``r x r`` squares of the relevance's last two
        axes (region perturbation), ranked by their summed relevance; squares at the
        border may be cut off by the image edge.
    fill
        The replacement :math:`v`: a number; ``"mean"`` (each sample's mean over all its
        entries); ``"uniform"`` (noise uniform in each sample's ``[min, max]``, drawn once
        with NumPy from ``seed``, so a unit keeps its noise at later steps); an array
        broadcastable to ``x`` (a blurred copy, a baseline); or a function ``fill(x)``
        returning such an array.
    seed
        Seed (or a NumPy ``Generator``) of the random order and the ``"uniform"`` noise.
    batch_size
        At most this many inputs per model call (the rows of all orders together; default
        all in one call per step).

    Returns
    -------
    PerturbationResult
        ``result["morf"].scores`` ``(batch, steps + 1)``, ``.auc``, ``.aopc``
        ``(batch,)`` (x's library), ``.ranking``; ``print(result)`` shows a table.

    Raises
    ------
    ValueError
        For relevance that does not fit ``x``, an unknown order or fill, or a schedule
        that goes on past all units.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> from relprop import metrics
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, 2.0, 3.0]]))])
    >>> x = np.ones((1, 3))
    >>> result = metrics.pixel_flipping(model, x, x * model.layers[0].weight, target=0)
    >>> result["morf"].scores.tolist(), result["lerf"].scores.tolist()
    ([[6.0, 3.0, 1.0, 0.0]], [[6.0, 5.0, 3.0, 0.0]])
    >>> round(float(result["morf"].auc[0]), 4), float(result["morf"].aopc[0])  # 7 / 3, 14 / 4
    (2.3333, 3.5)
    """
    if is_dask_array(x, relevance):  # one pixel_flipping per chunk, lazily (relprop._dask)
        return on_dask(pixel_flipping, locals())
    return _perturbation(model, x, relevance, target, orders, steps, per_step, region_size,
                         fill, seed, batch_size)


def region_perturbation(
    model: Any,
    x: Array,
    relevance: Array,
    target: object = None,
    *,
    region_size: int,
    orders: Sequence[str] = ORDERS,
    steps: int | None = None,
    per_step: int | None = None,
    fill: float | str | Array | Callable[[Array], Array] = 0.0,
    seed: int | np.random.Generator = 0,
    batch_size: int | None = None,
) -> PerturbationResult:
    r"""Region perturbation: :func:`pixel_flipping` with ``region_size x region_size``
    squares as units, ranked by their summed relevance
    :math:`R_Q = \sum_{p \in Q} R_p`.

    Samek et al. 2017 perturb 9x9 regions of 224x224 images. The regions tile the last
    two axes of ``relevance`` without overlap, from the top left corner; the other
    arguments are :func:`pixel_flipping`'s.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> from relprop import metrics
    >>> model = rp.Sequential([rp.Flatten(), rp.Dense(np.arange(16.0)[None])])
    >>> x = np.ones((1, 1, 4, 4))
    >>> R = x * np.arange(16.0).reshape(1, 1, 4, 4)
    >>> metrics.region_perturbation(model, x, R, 0, region_size=2)["morf"].scores.tolist()
    [[120.0, 70.0, 28.0, 10.0, 0.0]]
    """
    if is_dask_array(x, relevance):  # one region_perturbation per chunk, lazily
        return on_dask(region_perturbation, locals())
    return _perturbation(model, x, relevance, target, orders, steps, per_step, region_size,
                         fill, seed, batch_size)


def _positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int.")
    return int(value)


def _check_orders(orders: Sequence[str]) -> tuple[str, ...]:
    chosen = (orders,) if isinstance(orders, str) else tuple(orders)
    unknown = [o for o in chosen if o not in ORDERS]
    if unknown or not chosen or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"orders={orders!r}: use one or more of {', '.join(map(repr, ORDERS))}, each once."
        )
    return chosen


def _schedule(units: int, steps: int | None, per_step: int | None) -> tuple[int, ...]:
    """How many units are perturbed after each step, ``(0, n_1, ..., n_L)`` (see
    :func:`pixel_flipping`)."""
    steps = _positive_int("steps", steps, allow_none=True)
    per_step = _positive_int("per_step", per_step, allow_none=True)
    if per_step is None and steps is not None:
        if steps > units:
            raise ValueError(
                f"steps={steps} is more than the {units} units to perturb; use steps <= "
                f"{units}."
            )
        return tuple((k * units) // steps for k in range(steps + 1))
    per_step = 1 if per_step is None else per_step
    most = math.ceil(units / per_step)
    steps = most if steps is None else steps
    if steps > most:
        raise ValueError(
            f"steps={steps} with per_step={per_step} goes on after all {units} units are "
            f"perturbed (after {most} steps); use steps <= {most}, or fewer per_step."
        )
    return tuple(min(k * per_step, units) for k in range(steps + 1))


def _units(
    relevance: Array, x: Array, region: int, xp: ModuleType
) -> tuple[Array, tuple[int, ...], Callable[[Array], Array]]:
    """Each sample's unit scores ``(batch, N)``, the units' shape, and the map from a mask
    over units ``(rows, N)`` to a mask over ``x``'s entries ``(rows, *x.shape[1:])``."""
    rs, xs = tuple(relevance.shape[1:]), tuple(x.shape[1:])
    fits = len(rs) <= len(xs) and all(
        r in (1, s) for r, s in zip(rs[::-1], xs[::-1], strict=False)
    )
    if not fits:
        raise ValueError(
            f"relevance has shape {tuple(relevance.shape)}, which does not broadcast against "
            f"x {tuple(x.shape)} sample by sample; pass x's shape or fewer / size-1 axes "
            "(e.g. relevance summed over channels: R.sum(axis=1, keepdims=True))."
        )
    lead = len(xs) - len(rs)
    batch = relevance.shape[0]
    scores = relevance
    unit_shape = rs
    if region > 1:
        if len(rs) < 2:
            raise ValueError(
                f"region_size={region} needs relevance with two spatial axes last; it has "
                f"shape {tuple(relevance.shape)}."
            )
        height, width = rs[-2:]
        rows, cols = math.ceil(height / region), math.ceil(width / region)
        scores = _pad_last_two(relevance, rows * region, cols * region, xp)
        scores = xp.reshape(scores, (batch, *rs[:-2], rows, region, cols, region))
        scores = xp.sum(xp.sum(scores, axis=-1), axis=-2)
        unit_shape = (*rs[:-2], rows, cols)
    flat = xp.reshape(scores, (batch, -1))

    def expand(mask: Array) -> Array:
        count = mask.shape[0]
        m = xp.reshape(mask, (count, *unit_shape))
        if region > 1:
            height, width = rs[-2:]
            rows, cols = unit_shape[-2:]
            m = xp.reshape(m, (count, *rs[:-2], rows, 1, cols, 1))
            m = xp.broadcast_to(m, (count, *rs[:-2], rows, region, cols, region))
            m = xp.reshape(m, (count, *rs[:-2], rows * region, cols * region))
            m = m[..., :height, :width]
        m = xp.reshape(m, (count, *((1,) * lead), *rs))
        return xp.broadcast_to(m, (count, *xs))

    return flat, unit_shape, expand


def _pad_last_two(a: Array, height: int, width: int, xp: ModuleType) -> Array:
    """``a`` with zeros appended on its last two axes up to ``(height, width)``."""
    shape = tuple(a.shape)
    if height > shape[-2]:
        zeros = xp.zeros((*shape[:-2], height - shape[-2], shape[-1]), dtype=a.dtype,
                         device=device(a))
        a = xp.concat([a, zeros], axis=-2)
    if width > shape[-1]:
        zeros = xp.zeros((*shape[:-2], height, width - shape[-1]), dtype=a.dtype,
                         device=device(a))
        a = xp.concat([a, zeros], axis=-1)
    return a


def _generators(seed: int | np.random.Generator) -> tuple[np.random.Generator, ...]:
    """Separate generators for the random order and the noise."""
    if isinstance(seed, np.random.Generator):
        return seed, seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed={seed!r} must be an int or a numpy.random.Generator.")
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(2))


def _rankings(
    scores: Array, orders: tuple[str, ...], rng: np.random.Generator, xp: ModuleType
) -> dict[str, Array]:
    """Per order, the unit indices in the order perturbed, ``(batch, N)``."""
    batch, units = scores.shape
    out = {}
    for order in orders:
        if order == "morf":
            out[order] = xp.argsort(scores, axis=1, descending=True, stable=True)
        elif order == "lerf":
            out[order] = xp.argsort(scores, axis=1, stable=True)
        else:
            base = np.tile(np.arange(units, dtype=np.int32), (batch, 1))
            permuted = xp.asarray(rng.permuted(base, axis=1), device=device(scores))
            # through argsort twice: the index dtype of the sorted orders
            out[order] = xp.argsort(xp.argsort(permuted, axis=1, stable=True), axis=1,
                                    stable=True)
    return out


def _fill(fill: object, x: Array, rng: np.random.Generator, xp: ModuleType) -> tuple[Array, str]:
    """What replaces perturbed entries (a 0-d array or ``x``'s shape), and its name."""
    batch = x.shape[0]
    per_sample = (batch, *((1,) * (len(x.shape) - 1)))
    flat = xp.reshape(x, (batch, -1))
    if isinstance(fill, bool):
        raise TypeError("fill must be a number, 'mean', 'uniform', an array or a function; "
                        "got a bool.")
    if isinstance(fill, (int, float, np.integer, np.floating)):
        return xp.asarray(float(fill), dtype=x.dtype, device=device(x)), f"{float(fill):g}"
    if isinstance(fill, str):
        if fill == "mean":
            mean = xp.reshape(xp.mean(flat, axis=1), per_sample)
            return xp.broadcast_to(mean, tuple(x.shape)), "each sample's mean"
        if fill == "uniform":
            low = xp.reshape(xp.min(flat, axis=1), per_sample)
            high = xp.reshape(xp.max(flat, axis=1), per_sample)
            noise = from_host(rng.random(tuple(x.shape)), x, xp)
            return low + noise * (high - low), "uniform noise in each sample's range"
        raise ValueError(
            f"fill={fill!r} is not supported; use a number, 'mean', 'uniform', an array "
            "broadcastable to x, or a function of x."
        )
    name = "array"
    if callable(fill) and library_of(fill) is None:
        name = getattr(fill, "__name__", type(fill).__name__)
        fill = fill(x)
        if library_of(fill) != library_of(x):
            raise TypeError(f"fill function {name} returned {type(fill).__name__}; it must "
                            f"return an array of x's library ({library_of(x)}).")
    array_namespace(x=x, fill=fill)
    given: Any = detached(fill)
    try:
        return xp.broadcast_to(xp.astype(given, x.dtype), tuple(x.shape)), name
    except (ValueError, RuntimeError, TypeError) as error:
        raise ValueError(
            f"fill of shape {tuple(given.shape)} does not broadcast to x of shape "
            f"{tuple(x.shape)}; pass a number or an array of a broadcastable shape."
        ) from error


def _scorer(out: Array, target: object, xp: ModuleType) -> Callable[[Array], Array]:
    """The score of a batch's output: the target function, or the output weighted by the
    target's one-hot (or float) array, fixed at the unperturbed output ``out``."""
    if callable(target) and library_of(target) is None:
        name = getattr(target, "__name__", type(target).__name__)
        function = target

        def score_of(a: Array) -> Array:
            value = function(a)
            if library_of(value) != library_of(a):
                raise TypeError(f"target {name} returned {type(value).__name__}; a score "
                                "function must return an array of the output's library.")
            if tuple(value.shape) != (a.shape[0],):
                raise ValueError(
                    f"target {name} returned shape {tuple(value.shape)}; a score function "
                    f"returns one value per sample ({a.shape[0]},)."
                )
            return value

        return score_of
    weights = target_relevance(out, target, xp, scale=False)
    return lambda a: per_sample_sum(a * weights, xp)


def _perturbation(
    model: Any, x: Array, relevance: Array, target: object, orders: Sequence[str],
    steps: int | None, per_step: int | None, region_size: int, fill: object,
    seed: int | np.random.Generator, batch_size: int | None,
) -> PerturbationResult:
    forward, xp = as_function(model, x)
    x = detached(x)
    relevance = check_relevance(relevance, x)
    one_target_per_sample(target)
    chosen = _check_orders(orders)
    region = _positive_int("region_size", region_size)
    chunk = _positive_int("batch_size", batch_size, allow_none=True)
    assert region is not None
    scores, _, expand = _units(relevance, x, region, xp)
    units = int(scores.shape[1])
    counts = _schedule(units, steps, per_step)
    order_rng, noise_rng = _generators(seed)
    rankings = _rankings(scores, chosen, order_rng, xp)
    filled, described = _fill(fill, x, noise_rng, xp)

    batch = int(x.shape[0])
    ranks = xp.concat(
        [xp.argsort(rankings[o], axis=1, stable=True) for o in chosen], axis=0
    )  # the rank of every unit, rows order by order
    total = len(chosen) * batch
    chunk = total if chunk is None else chunk
    pieces = []
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        samples = [row % batch for row in range(start, stop)]
        index = xp.asarray(np.asarray(samples, dtype=np.int32), device=device(x))
        x_rows = xp.take(x, index, axis=0)
        fill_rows = filled if len(filled.shape) == 0 else xp.take(filled, index, axis=0)
        rank_rows = ranks[start:stop, ...]
        out = forward(x_rows)
        score = _scorer(out, rows_of_target(target, samples, batch, xp, x), xp)
        curve = [score(out)]
        for count in counts[1:]:
            mask = expand(rank_rows < count)
            curve.append(score(forward(xp.where(mask, fill_rows, x_rows))))
        pieces.append(xp.stack(curve, axis=1))
    every = xp.concat(pieces, axis=0) if len(pieces) > 1 else pieces[0]
    curves = {}
    for i, order in enumerate(chosen):
        rows = every[i * batch:(i + 1) * batch, ...]
        curves[order] = PerturbationCurve(order, rows, auc(rows), aopc(rows), rankings[order])
    return PerturbationResult(MappingProxyType(curves), counts, units, region, described)
