r"""Attributors over any relprop explanation: SmoothGrad, Integrated Gradients, Occlusion.

Each function takes an ``explain`` callable, ``explain(model, x, target) -> relevance``
(default :func:`relprop.gradient`; ``functools.partial(rp.lrp, composite=...)`` for LRP,
:func:`relprop.gradient_x_input`, ...), and calls it once on a batch that stacks every
noise sample or path step of every input (``batch_size`` cuts that batch into chunks of
at most so many rows). Random draws come from a seeded NumPy generator, so every backend
gets the same numbers.

The classes (:class:`LRP`, :class:`Gradient`, :class:`SmoothGrad`,
:class:`IntegratedGradients`, :class:`Occlusion`) are thin conveniences over the
functions: Captum's ``Attributor(model, ...).attribute(x, target)`` and zennit's
``with Attributor(model, composite) as attributor: output, relevance = attributor(x,
target)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial
from types import ModuleType
from typing import Any, ClassVar, Literal

import numpy as np
from array_api_compat import device

from relprop._checks import target_relevance
from relprop._dask import is_dask_array, on_dask
from relprop._placement import from_host
from relprop._xp import Array, backend_name, detached, library_of
from relprop.composites import Composite
from relprop.interop._cache import ModelLike, as_model
from relprop.lrp import _each_target, gradient, lrp
from relprop.model import Model
from relprop.rules import Rule

__all__ = [
    "LRP",
    "Attributor",
    "Gradient",
    "IntegratedGradients",
    "Occlusion",
    "SmoothGrad",
    "integrated_gradients",
    "occlusion",
    "path_weights",
    "smoothgrad",
]

Explain = Callable[[Model, Array, Any], Array]
"""An explanation method: ``explain(model, x, target) -> relevance`` of ``x``'s shape."""

PathMethod = Literal[
    "gausslegendre", "riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid"
]
_PATH_METHODS: tuple[str, ...] = PathMethod.__args__  # type: ignore[attr-defined]


# -- the batch of repeated inputs and their targets -----------------------------------------


def _explainer(explain: Explain | None) -> Explain:
    if explain is None:
        return gradient
    if not callable(explain):
        raise TypeError(
            f"explain must be a function explain(model, x, target) -> relevance (rp.gradient, "
            f"functools.partial(rp.lrp, composite=...)); got {explain!r}."
        )
    return explain


def _repeat_target(target: Any, times: int, batch: int, xp: ModuleType) -> Any:
    """The target of a batch repeated ``times`` over a leading axis, flattened into one
    batch of ``times * batch`` rows (an int, ``None`` or a function stays as it is)."""
    if isinstance(target, (list, tuple)):
        return list(target) * times
    if library_of(target) is None:
        return target
    if library_of(target) == "numpy" and backend_name(xp) != "numpy":
        if np.issubdtype(target.dtype, np.integer):  # host class indices, like a list
            return target.tolist() * times
        return target
    if target.shape[0] != batch:
        raise ValueError(
            f"target has {target.shape[0]} rows for a batch of {batch}; give one target per "
            "sample."
        )
    rest = tuple(target.shape[1:])
    stacked = xp.broadcast_to(xp.expand_dims(target, axis=0), (times, batch, *rest))
    return xp.reshape(stacked, (times * batch, *rest))


def _rows_of(target: Any, start: int, stop: int, rows: int) -> Any:
    """The part of a per-row target for rows ``start:stop`` of ``rows``."""
    if isinstance(target, list) or (library_of(target) is not None and target.shape[0] == rows):
        return target[start:stop]
    return target


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}.")


def _chunks(rows: int, batch_size: int | None) -> list[tuple[int, int]]:
    _check_batch_size(batch_size)
    if batch_size is None:
        return [(0, rows)]
    return [(i, min(i + batch_size, rows)) for i in range(0, rows, batch_size)]


def _explain_stacked(
    explain: Explain, model: Model, stacked: Array, target: Any, batch_size: int | None,
    xp: ModuleType,
) -> Array:
    """``explain`` of ``stacked`` (``(times, batch, ...)``), chunked along its rows."""
    times, batch, *rest = stacked.shape
    rows = times * batch
    flat = xp.reshape(stacked, (rows, *rest))
    repeated = _repeat_target(target, times, batch, xp)
    parts = [
        explain(model, flat[a:b, ...], _rows_of(repeated, a, b, rows))
        for a, b in _chunks(rows, batch_size)
    ]
    relevance = parts[0] if len(parts) == 1 else xp.concat(parts, axis=0)
    return xp.reshape(relevance, (times, batch, *relevance.shape[1:]))


def _prepared(model: ModelLike, x: Array, target: object) -> tuple[Model, ModuleType, Array,
                                                                   object]:
    """The model, namespace, detached input, and the target with ``None`` read once, as
    each sample's arg-max at ``x`` itself (not at every noisy copy or path point)."""
    checked = as_model(model, x)
    xp, x = checked.namespace(x=x), detached(x)
    if target is None:
        target = xp.argmax(checked(x), axis=1)
    return checked, xp, x, target


def _sample_axes(x: Array) -> tuple[int, ...]:
    return tuple(range(1, x.ndim))


# -- SmoothGrad -----------------------------------------------------------------------------


def smoothgrad(
    model: ModelLike,
    x: Array,
    target: object = None,
    *,
    explain: Explain | None = None,
    n_samples: int = 20,
    noise_level: float = 0.1,
    noise: Array | None = None,
    seed: int = 0,
    batch_size: int | None = None,
) -> Array:
    r"""SmoothGrad (Smilkov et al. 2017): the mean explanation of noisy copies of ``x``.

    .. math:: \bar R(x) = \frac{1}{n} \sum_{k=1}^{n} R(x + \sigma \varepsilon_k),
        \qquad \varepsilon_k \sim \mathcal{N}(0, I),
        \qquad \sigma = \text{noise\_level} \cdot (\max x - \min x)

    with :math:`\max` and :math:`\min` per sample, as in the paper and zennit.

    Parameters
    ----------
    model, x, target
        As for :func:`relprop.lrp` (a function target sees the batch of noisy copies).
    explain
        The explanation averaged, ``explain(model, x, target)``; default
        :func:`relprop.gradient`. ``functools.partial(rp.lrp, composite=...)`` smooths LRP.
    n_samples
        How many noisy copies :math:`n`.
    noise_level
        :math:`\sigma` as a fraction of each sample's value range.
    noise
        Standard-normal draws :math:`\varepsilon`, ``(n_samples, *x.shape)``, of ``x``'s
        library (``n_samples`` is then ``noise.shape[0]``); default drawn from
        ``numpy.random.default_rng(seed)``, the same on every backend.
    seed
        Seed of the default draws.
    batch_size
        At most this many rows per ``explain`` call (default: all ``n_samples * batch``
        rows in one call).

    Returns
    -------
    array
        The mean relevance, ``x``'s shape (``(batch, k, ...)`` for ``k`` targets per sample).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[2.0, -1.0]]))])
    >>> rp.smoothgrad(model, np.array([[1.0, 3.0]]), target=0, n_samples=4).tolist()
    [[2.0, -1.0]]
    """
    if is_dask_array(x):  # one rp.smoothgrad per chunk (seeded per chunk), lazily
        return on_dask(smoothgrad, locals())
    explainer = _explainer(explain)
    checked, xp, x, target = _prepared(model, x, target)
    draws = _noise(x, noise, n_samples, seed, xp)
    axes = _sample_axes(x)
    spread = xp.max(x, axis=axes, keepdims=True) - xp.min(x, axis=axes, keepdims=True)
    sigma = noise_level * spread
    noisy = xp.expand_dims(x, axis=0) + draws * xp.expand_dims(sigma, axis=0)
    return xp.mean(_explain_stacked(explainer, checked, noisy, target, batch_size, xp), axis=0)


def _noise(x: Array, noise: Array | None, n_samples: int, seed: int, xp: ModuleType) -> Array:
    if noise is None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise ValueError(f"n_samples must be a positive int; got {n_samples!r}.")
        draws = np.random.default_rng(seed).standard_normal((n_samples, *x.shape))
        return from_host(draws, x, xp)
    if tuple(noise.shape[1:]) != tuple(x.shape):
        raise ValueError(
            f"noise has shape {tuple(noise.shape)}; it needs (n_samples, *x.shape) = "
            f"(n, {', '.join(str(s) for s in x.shape)})."
        )
    return noise


# -- Integrated Gradients -------------------------------------------------------------------


def path_weights(method: str, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    r"""Points :math:`\alpha_k \in [0, 1]` and weights :math:`w_k` of a quadrature of
    :math:`\int_0^1 g(\alpha)\, d\alpha \approx \sum_k w_k\, g(\alpha_k)`.

    ``"gausslegendre"`` (exact for polynomials of degree :math:`2n - 1`), or Riemann sums:
    ``"riemann_right"`` (:math:`\alpha_k = k/n`, zennit's), ``"riemann_left"``,
    ``"riemann_middle"``, ``"riemann_trapezoid"`` (Captum's names).

    Examples
    --------
    >>> alphas, weights = path_weights("riemann_right", 4)
    >>> alphas.tolist(), weights.tolist()
    ([0.25, 0.5, 0.75, 1.0], [0.25, 0.25, 0.25, 0.25])
    >>> alphas, weights = path_weights("gausslegendre", 3)
    >>> round(float(weights @ alphas**5), 12)  # the integral of a^5: 1/6
    0.166666666667
    """
    if method not in _PATH_METHODS:
        raise ValueError(f"method={method!r} is not one of {', '.join(_PATH_METHODS)}.")
    low = 2 if method == "riemann_trapezoid" else 1
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < low:
        raise ValueError(f"n_steps must be an int >= {low} for {method}; got {n_steps!r}.")
    n = n_steps
    if method == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(n)
        return (nodes + 1.0) / 2.0, weights / 2.0
    if method == "riemann_trapezoid":
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2.0
        return np.linspace(0.0, 1.0, n), weights
    offset = {"riemann_right": 1.0, "riemann_left": 0.0, "riemann_middle": 0.5}[method]
    return (np.arange(n) + offset) / n, np.full(n, 1.0 / n)


def _baseline(baseline: float | Array | Callable[[Array], Array], x: Array,
              xp: ModuleType) -> Array:
    value = baseline(x) if callable(baseline) and library_of(baseline) is None else baseline
    if library_of(value) is None:
        return xp.full_like(x, float(value))  # type: ignore[arg-type]
    return xp.broadcast_to(value, tuple(x.shape))


def integrated_gradients(
    model: ModelLike,
    x: Array,
    target: object = None,
    *,
    baseline: float | Array | Callable[[Array], Array] = 0.0,
    n_steps: int = 50,
    method: PathMethod = "gausslegendre",
    explain: Explain | None = None,
    batch_size: int | None = None,
) -> Array:
    r"""Integrated Gradients (Sundararajan et al. 2017) of any explanation.

    .. math:: \mathrm{IG}(x) = (x - \bar x) \odot \int_0^1 R(\bar x + \alpha (x - \bar x))
        \, d\alpha \approx (x - \bar x) \odot \sum_k w_k\, R(\bar x + \alpha_k (x - \bar x))

    with :math:`R` = :func:`relprop.gradient` by default (the paper's method; its sum
    then approaches :math:`f(x) - f(\bar x)`), or any ``explain``: zennit's
    ``IntegratedGradients`` with a composite is ``explain=functools.partial(rp.lrp,
    composite=...)`` with ``method="riemann_right"``.

    Parameters
    ----------
    model, x, target
        As for :func:`relprop.lrp` (a function target sees the batch of path points).
    baseline
        :math:`\bar x`: a number, an array broadcasting to ``x``, or a function of ``x``.
    n_steps, method
        The quadrature of the path integral (:func:`path_weights`).
    explain
        The integrated explanation; default :func:`relprop.gradient`.
    batch_size
        At most this many rows per ``explain`` call (default: all ``n_steps * batch``).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, 2.0]])), rp.ReLU()])
    >>> x = np.array([[1.0, 1.0]])
    >>> ig = rp.integrated_gradients(model, x, target=0, n_steps=4)
    >>> ig.tolist(), float(ig.sum()), float(model(x)[0, 0])
    ([[1.0, 2.0]], 3.0, 3.0)
    """
    if is_dask_array(x):  # one rp.integrated_gradients per chunk, lazily (relprop._dask)
        return on_dask(integrated_gradients, locals())
    explainer = _explainer(explain)
    alphas, weights = path_weights(method, n_steps)
    checked, xp, x, target = _prepared(model, x, target)
    base = _baseline(baseline, x, xp)
    steps = xp.reshape(from_host(alphas, x, xp), (len(alphas),) + (1,) * x.ndim)
    path = xp.expand_dims(base, axis=0) + steps * xp.expand_dims(x - base, axis=0)
    relevance = _explain_stacked(explainer, checked, path, target, batch_size, xp)
    shape = (len(weights),) + (1,) * (relevance.ndim - 1)
    summed = xp.sum(xp.reshape(from_host(weights, x, xp), shape) * relevance, axis=0)
    difference = x - base
    if summed.ndim > x.ndim:  # several targets per sample: (batch, k, ...)
        difference = xp.expand_dims(difference, axis=1)
    return difference * summed


# -- Occlusion ------------------------------------------------------------------------------


def _score(out: Array, target: object, xp: ModuleType) -> Array:
    """The explained quantity per sample: the target logit (a channel of a map: summed),
    :math:`\\sum t \\odot out` for a floating array, a function's value per sample (or the
    sum of the relevance array it returns)."""
    if callable(target) and library_of(target) is None:
        value = target(out)
        if library_of(value) is not None and tuple(value.shape) == (out.shape[0],):
            return value
        relevance = target_relevance(out, target, xp)
    else:
        relevance = target_relevance(out, target, xp, scale=False) * out
    return xp.sum(xp.reshape(relevance, (out.shape[0], -1)), axis=1)


def _window_shape(sizes: Sequence[int], window: int | Sequence[int], what: str) -> tuple[int, ...]:
    """Per non-batch axis: an int applies to every axis (cut to its size); a tuple to the
    last ``len`` axes (earlier axes, e.g. channels, are taken whole)."""
    if isinstance(window, int):
        given: tuple[int, ...] = (int(window),) * len(sizes)
    else:
        given = tuple(int(w) for w in window)
        if len(given) > len(sizes):
            raise ValueError(
                f"{what}={tuple(window)} has {len(given)} entries for inputs with "
                f"{len(sizes)} axes per sample {tuple(sizes)}."
            )
        given = tuple(sizes[: len(sizes) - len(given)]) + given
    if any(w < 1 for w in given):
        raise ValueError(f"{what} must be positive; got {window!r}.")
    return tuple(min(w, s) for w, s in zip(given, sizes, strict=True))


def occlusion_windows(
    sizes: Sequence[int], window: int | Sequence[int] = 8, stride: int | Sequence[int] | None = None
) -> np.ndarray:
    """The sliding windows of :func:`occlusion` on samples of shape ``sizes``: a boolean
    NumPy array ``(n_windows, *sizes)``, windows starting every ``stride`` (default the
    window) along each axis and cut at the edge.

    Examples
    --------
    >>> occlusion_windows((1, 5), window=(2,)).astype(int)[:, 0].tolist()
    [[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]
    """
    sizes = tuple(int(s) for s in sizes)
    shape = _window_shape(sizes, window, "window")
    steps = shape if stride is None else _window_shape(sizes, stride, "stride")
    per_axis = []
    for size, w, s in zip(sizes, shape, steps, strict=True):
        starts = np.arange(0, size, s)
        positions = np.arange(size)
        per_axis.append((positions >= starts[:, None]) & (positions < starts[:, None] + w))
    masks: np.ndarray = np.ones((1,), dtype=bool)
    for axis in per_axis:  # every combination of the per-axis windows so far with this axis's
        spatial = masks.shape[1:]
        grown = masks[:, None, ..., None] & axis.reshape(1, len(axis), *(1,) * len(spatial), -1)
        masks = grown.reshape(masks.shape[0] * len(axis), *spatial, axis.shape[1])
    return masks


def occlusion(
    model: ModelLike,
    x: Array,
    target: object = None,
    *,
    window: int | Sequence[int] = 8,
    stride: int | Sequence[int] | None = None,
    fill: float | Array = 0.0,
    occlude: Literal["window", "outside"] = "window",
    batch_size: int | None = None,
) -> Array:
    r"""Occlusion (Zeiler & Fergus 2014): how the explained score changes when a sliding
    window of the input is filled with ``fill``.

    With windows :math:`w` (:func:`occlusion_windows`), the score :math:`s` (the target
    logit; see below) and :math:`x_{\setminus w}` the input with :math:`w` filled:

    - ``occlude="window"`` (Captum's Occlusion): each entry gets the mean score drop over
      the windows :math:`W_i` that cover it,
      :math:`R_i = \frac{1}{|W_i|}\sum_{w \in W_i} s(x) - s(x_{\setminus w})`;
    - ``occlude="outside"`` (zennit's default): everything *but* the window is filled,
      :math:`R_i = \sum_{w \in W_i} s(x_w)` with :math:`x_w` the window alone.

    The score is the target's logit for an index target (a map's channel: summed),
    :math:`\sum t \odot f(x)` for a floating array :math:`t`, and a function's value
    per sample (or the sum of the relevance array it returns). Only forward passes: no
    gradient, on every backend.

    Parameters
    ----------
    model, x, target
        As for :func:`relprop.lrp`.
    window, stride
        Window size and step, an int for every axis of a sample (cut to the axis's size:
        ``8`` on RGB images covers all 3 channels) or a tuple for the last axes (earlier
        ones taken whole); the stride defaults to the window. Windows start at every
        multiple of the stride and are cut at the edge (zennit instead wraps them round).
    fill
        The occlusion value: a number, or an array broadcasting to ``x`` (a blurred copy,
        the data mean).
    occlude
        ``"window"`` or ``"outside"``, as above.
    batch_size
        At most this many rows (windows times samples) per model call; default all.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, 2.0, 3.0, 4.0]]))])
    >>> rp.occlusion(model, np.ones((1, 4)), target=0, window=2).tolist()
    [[3.0, 3.0, 7.0, 7.0]]
    """
    if is_dask_array(x):  # one rp.occlusion per chunk, lazily (relprop._dask)
        return on_dask(occlusion, locals())
    if occlude not in ("window", "outside"):
        raise ValueError(f'occlude must be "window" or "outside"; got {occlude!r}.')
    checked, xp, x, target = _prepared(model, x, target)

    def one(a: Array, t: object) -> Array:
        masks = occlusion_windows(tuple(a.shape[1:]), window, stride)
        filled = xp.broadcast_to(
            fill if library_of(fill) is not None else xp.full_like(a, float(fill)), a.shape
        )
        batch, size = a.shape[0], math.prod(a.shape[1:])
        result = xp.zeros((batch, size), dtype=a.dtype, device=device(a))
        whole = _score(checked(a), t, xp)
        _check_batch_size(batch_size)
        per_chunk = len(masks) if batch_size is None else max(1, batch_size // max(batch, 1))
        for begin in range(0, len(masks), per_chunk):
            chunk = from_host(masks[begin:begin + per_chunk], a, xp)  # 1 inside, 0 outside
            inside = xp.expand_dims(chunk > 0, axis=1)
            kept = xp.where(inside, filled, a) if occlude == "window" else xp.where(
                inside, a, filled)
            rows = xp.reshape(kept, (kept.shape[0] * batch, *a.shape[1:]))
            scores = xp.reshape(_score(checked(rows), _repeat_target(
                t, chunk.shape[0], batch, xp), xp), (chunk.shape[0], batch))
            if occlude == "window":
                scores = xp.expand_dims(whole, axis=0) - scores
            flat = xp.reshape(chunk, (chunk.shape[0], size))
            result = result + xp.matmul(xp.permute_dims(scores, (1, 0)), flat)
        if occlude == "window":
            counts = from_host(masks.reshape(len(masks), -1).sum(axis=0), a, xp)
            result = result / counts
        return xp.reshape(result, a.shape)

    return _each_target(one, x, target)


# -- Captum- and zennit-style classes -------------------------------------------------------


class Attributor:
    """An explanation bound to a model and its options, Captum's and zennit's way.

    ``Attributor(model, composite=None, *, rule=None, explain=None, **options)``: the
    explanation inside is LRP when ``composite`` or ``rule`` is given (zennit's
    attributors with a composite), ``explain`` when given, else the gradient; ``options``
    are the keyword arguments of the function the class stands for (``n_steps=``,
    ``noise_level=``, ...).

    - ``attributor.attribute(x, target=None, **options)``: the relevance (Captum);
    - ``attributor(x, target=None)``: ``(output, relevance)`` (zennit), also inside
      ``with attributor: ...``, which changes nothing (relprop registers no hooks).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.array([[2.0, -1.0]]))])
    >>> rp.LRP(model, rule=rp.rules.Epsilon(0.0)).attribute(np.array([[1.0, 1.0]]), 0).tolist()
    [[2.0, -1.0]]
    >>> with rp.IntegratedGradients(model, n_steps=4, method="riemann_right") as attributor:
    ...     output, relevance = attributor(np.array([[1.0, 1.0]]), 0)
    >>> output.tolist(), relevance.tolist()
    ([[1.0]], [[2.0, -1.0]])
    """

    function: ClassVar[Callable[..., Array]]
    """The attribution function the class stands for."""
    takes_explain: ClassVar[bool] = True

    def __init__(
        self,
        model: ModelLike,
        composite: Composite | None = None,
        *,
        rule: Rule | None = None,
        explain: Explain | None = None,
        **options: Any,
    ) -> None:
        if explain is not None and (composite is not None or rule is not None):
            raise TypeError("pass explain= or composite=/rule=, not both.")
        if not self.takes_explain and (explain, composite, rule) != (None, None, None):
            raise TypeError(
                f"{type(self).__name__} runs the model forward only; it takes no composite, "
                "rule or explain."
            )
        self.model = model
        self.composite = composite
        self.rule = rule
        self.explain = explain
        self.options = options

    def _inner(self) -> Explain | None:
        if self.composite is not None or self.rule is not None:
            return partial(lrp, composite=self.composite, rule=self.rule)
        return self.explain

    def attribute(self, x: Array, target: object = None, **options: Any) -> Array:
        """The relevance of ``x`` for ``target`` (options override the constructor's)."""
        chosen = {**self.options, **options}
        if self.takes_explain:
            chosen.setdefault("explain", self._inner())
        return type(self).function(self.model, x, target, **chosen)

    def __call__(self, x: Array, target: object = None) -> tuple[Array, Array]:
        """``(model output, relevance)``, as zennit's attributors return them."""
        output = as_model(self.model, x)(detached(x))
        return output, self.attribute(x, target)

    def __enter__(self) -> Attributor:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        return False

    def __repr__(self) -> str:
        parts = [f"{key}={value!r}" for key, value in
                 (("composite", self.composite), ("rule", self.rule), ("explain", self.explain))
                 if value is not None]
        parts += [f"{key}={value!r}" for key, value in self.options.items()]
        return f"{type(self).__name__}({', '.join(parts)})"


def _explained(model: ModelLike, x: Array, target: object = None, *,
               explain: Explain | None = None, **options: Any) -> Array:
    """``explain`` (default the gradient) of ``x``: the plain explanation of a class."""
    return _explainer(explain)(as_model(model, x), x, target, **options)


class Gradient(Attributor):
    """The gradient, or with a composite LRP (zennit's ``Gradient`` attributor)."""

    function = staticmethod(_explained)


class LRP(Attributor):
    """LRP with a composite or one rule: ``rp.LRP(model, composite).attribute(x, target)``
    is ``rp.lrp(model, x, target, composite=composite)`` (options: ``return_layers``,
    ``start``, ...)."""

    function = staticmethod(lrp)
    takes_explain = False

    def __init__(self, model: ModelLike, composite: Composite | None = None, *,
                 rule: Rule | None = None, **options: Any) -> None:
        if composite is None and rule is None:
            raise TypeError("rp.LRP needs composite= (rp.composites.EpsilonPlusFlat()) or rule=.")
        super().__init__(model, **options)
        self.composite, self.rule = composite, rule
        self.options = {"composite": composite, "rule": rule, **options}


class SmoothGrad(Attributor):
    """:func:`smoothgrad` as a class (options ``n_samples``, ``noise_level``, ...)."""

    function = staticmethod(smoothgrad)


class IntegratedGradients(Attributor):
    """:func:`integrated_gradients` as a class (options ``baseline``, ``n_steps``,
    ``method``, ...)."""

    function = staticmethod(integrated_gradients)


class Occlusion(Attributor):
    """:func:`occlusion` as a class (options ``window``, ``stride``, ``fill``,
    ``occlude``, ...); it takes no composite."""

    function = staticmethod(occlusion)
    takes_explain = False
