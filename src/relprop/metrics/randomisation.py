r"""Model-parameter randomisation (Adebayo et al. 2018): an explanation that does not
change when the model's weights are replaced by random ones does not explain the model.

The layers with parameters are re-initialised from the output down (cascading), and each
sample's explanation of the randomised model is compared with the original one by
Spearman's rank correlation (of the values and of their absolute values). The user's
model is never modified: every randomised model is a new one (``model.rebuild``), and
random values are drawn with NumPy and converted to each parameter's library, dtype and
device, so every backend gets the same ones.

Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim: "Sanity Checks for Saliency Maps",
NeurIPS 2018.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from relprop._placement import from_host
from relprop._xp import Array, array_namespace, detached, library_of, to_numpy
from relprop.interop._cache import as_model
from relprop.metrics._common import check_relevance, one_target_per_sample
from relprop.metrics.correlation import spearman
from relprop.model import Model

__all__ = [
    "INITS",
    "STATISTICS",
    "RandomisationResult",
    "parameter_layers",
    "randomisation_check",
    "randomise_layers",
]

INITS: tuple[str, ...] = ("normal", "permute")
"""The named re-initialisations (a function is accepted too)."""

STATISTICS: tuple[str, ...] = ("running_mean", "running_var")
"""Parameters that are statistics of the data, not weights: kept as they are (a random
variance could be negative)."""

Init = Callable[[str, np.ndarray, np.random.Generator], np.ndarray]
"""``init(name, values, rng) -> new values``: NumPy float64 in, the same shape out."""


def parameter_layers(model: Any) -> tuple[str, ...]:
    """The names of the layers with parameters, from the output to the input.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.eye(2)), rp.ReLU(), rp.Dense(np.ones((1, 2)))])
    >>> parameter_layers(model)
    ('2', '0')
    """
    checked = as_model(model)
    return tuple(
        node.name for node in reversed(checked.nodes())
        if any(value is not None for value in node.layer.params().values())
    )


def _new_values(name: str, values: np.ndarray, rng: np.random.Generator,
                init: str | Init) -> np.ndarray:
    if callable(init):
        new = np.asarray(init(name, values, rng))
        if new.shape != values.shape:
            raise ValueError(
                f"init returned shape {new.shape} for parameter {name!r} of shape "
                f"{values.shape}; return an array of the parameter's shape."
            )
        return new
    if init == "normal":
        scale = float(np.sqrt(np.mean(values**2))) if values.size else 0.0
        return rng.standard_normal(values.shape) * scale
    return rng.permutation(values.reshape(-1)).reshape(values.shape)


def _check_init(init: object) -> None:
    if not callable(init) and init not in INITS:
        raise ValueError(
            f"init={init!r} is not supported; use one of {', '.join(map(repr, INITS))} or a "
            "function init(name, values, rng) -> values."
        )


def randomise_layers(
    model: Any, layers: Sequence[str], *, seed: int = 0, init: str | Init = "normal"
) -> Model:
    r"""A new model with the parameters of ``layers`` re-initialised at random.

    Every parameter :math:`\theta` of those layers (but the batch-norm statistics,
    :data:`STATISTICS`) gets new values of the same shape, dtype, device and library:

    - ``"normal"`` (default): :math:`\theta' \sim \mathcal N(0, s^2)` i.i.d., with
      :math:`s = \sqrt{\mathrm{mean}(\theta^2)}` (the original's scale; all-zero biases
      stay zero);
    - ``"permute"``: the original values, shuffled;
    - a function ``init(name, values, rng)`` of the parameter's name (``"weight"``,
      ``"bias"``...), its values (NumPy float64) and a NumPy ``Generator``.

    A layer's values depend only on ``seed`` and its position in the model, not on which
    other layers are randomised, so cascading randomisation keeps the draws of the
    layers randomised before.

    Parameters
    ----------
    model
        An ``rp.Sequential`` / ``rp.Graph`` (or a ``torch.nn.Module``, converted first);
        not modified.
    layers
        Names of layers with parameters (:func:`parameter_layers`).
    seed, init
        As above.

    Returns
    -------
    Model
        A new model (``model.rebuild``) of the same structure.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.eye(2)), rp.ReLU(), rp.Dense(np.ones((1, 2)))])
    >>> new = randomise_layers(model, ["2"], seed=0)
    >>> new.layers[2].weight.shape, bool(np.all(new.layers[0].weight == np.eye(2)))
    ((1, 2), True)
    >>> bool(np.all(model.layers[2].weight == 1.0))  # the model itself is unchanged
    True
    """
    _check_init(init)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed={seed!r} must be a non-negative int.")
    given = as_model(model)
    if isinstance(layers, str):
        layers = [layers]
    known = parameter_layers(given)
    unknown = [name for name in layers if name not in known]
    if unknown:
        raise ValueError(
            f"layers {unknown} are not layers with parameters of this model; those are "
            f"{list(known)} (output first)."
        )
    chosen = set(layers)
    new_layers = []
    for position, (name, layer) in enumerate(given.items()):
        if name not in chosen:
            new_layers.append(layer)
            continue
        rng = np.random.default_rng([int(seed), position])
        replaced: dict[int, Array] = {}
        for key, value in layer.params().items():
            if value is None or key in STATISTICS:
                continue
            values = np.asarray(to_numpy(value), dtype=np.float64)
            replaced[id(value)] = from_host(_new_values(key, values, rng, init), value,
                                            array_namespace(parameter=value))
        new_layers.append(layer.map_params(_lookup(replaced)))
    return given.rebuild(new_layers)


def _lookup(replaced: dict[int, Array]) -> Callable[[Array], Array]:
    """The parameter map of ``map_params``: a replaced array's new values, else itself."""
    return lambda a: replaced.get(id(a), a)


@dataclass(frozen=True, eq=False)
class RandomisationResult:
    """The explanations before and after each randomisation step and their correlations.

    Step ``k`` randomised ``layers[:k + 1]`` (cascading) or only ``layers[k]``
    (independent).
    """

    layers: tuple[str, ...]
    """The layers in the order randomised (output first)."""
    cascade: bool
    """Whether each step kept the layers randomised before."""
    spearman: Array
    """``(steps, batch)``: Spearman's rho of original and randomised relevance."""
    spearman_abs: Array
    """``(steps, batch)``: the same of their absolute values."""
    relevance: Array
    """The explanation of the original model."""
    randomised: tuple[Array, ...]
    """The explanation after each step."""

    def table(self) -> str:
        """One line per step: the layers randomised and the mean correlations."""
        rho = np.asarray(to_numpy(self.spearman))
        rho_abs = np.asarray(to_numpy(self.spearman_abs))
        lines = [f"{'step':<6}{'randomised':<28}{'spearman':>10}{'|spearman|':>12}"]
        for step, name in enumerate(self.layers):
            what = f"{name} and above" if self.cascade and step else name
            lines.append(f"{step + 1:<6}{what:<28}{np.nanmean(rho[step]):>10.4f}"
                         f"{np.nanmean(rho_abs[step]):>12.4f}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        kind = "cascading" if self.cascade else "independent"
        return f"RandomisationResult({kind},\n{self.table()}\n)"


def randomisation_check(
    model: Any,
    x: Array,
    target: object = None,
    *,
    explain: Callable[[Any, Array, Any], Array],
    top: int | None = None,
    layers: Sequence[str] | None = None,
    cascade: bool = True,
    seed: int = 0,
    init: str | Init = "normal",
) -> RandomisationResult:
    r"""Adebayo et al.'s model-parameter randomisation test.

    For step :math:`k = 1, \dots, K`, the top :math:`k` layers with parameters
    (``cascade``; else only the :math:`k`-th) are re-initialised
    (:func:`randomise_layers`), the batch explained again, and each sample's
    explanations compared: :math:`\rho_k = \mathrm{spearman}(R, R^{(k)})` and
    :math:`\mathrm{spearman}(|R|, |R^{(k)}|)` (:func:`~relprop.metrics.spearman`). An
    explanation that depends on the model gives correlations that fall as more of it is
    randomised.

    Parameters
    ----------
    model
        An ``rp.Sequential`` / ``rp.Graph`` (or a ``torch.nn.Module``, converted as
        ``rp.lrp`` converts it); never modified.
    x
        Input batch ``(batch, ...)``.
    target
        The explained class: as ``rp.lrp`` reads it; ``None`` is each sample's arg-max of
        the *original* model, kept for every randomised one.
    explain
        ``explain(model, x, target) -> relevance`` (x's library, ``(batch, ...)``), e.g.
        ``functools.partial(rp.lrp, composite=rp.composites.EpsilonPlusFlat())``. It
        gets relprop models.
    top
        How many layers with parameters to randomise, from the output (default all).
    layers
        Instead of ``top``: the names of the layers, in the order to randomise them.
    cascade
        ``True``: cumulative, from the output down (Adebayo's cascading randomisation);
        ``False``: one layer at a time (independent randomisation).
    seed, init
        As for :func:`randomise_layers`.

    Returns
    -------
    RandomisationResult
        ``spearman`` and ``spearman_abs`` ``(steps, batch)`` (x's library), the
        explanations; ``print(result)`` shows the mean per step.

    Examples
    --------
    >>> import functools, numpy as np, relprop as rp
    >>> from relprop import metrics
    >>> rng = np.random.default_rng(0)
    >>> model = rp.Sequential([rp.Dense(rng.normal(size=(8, 6))), rp.ReLU(),
    ...                        rp.Dense(rng.normal(size=(3, 8)))])
    >>> explain = functools.partial(rp.lrp, rule=rp.rules.Epsilon())
    >>> result = metrics.randomisation_check(model, rng.normal(size=(4, 6)), 0, explain=explain)
    >>> result.layers, result.spearman.shape
    (('2', '0'), (2, 4))
    """
    if not callable(explain):
        raise TypeError(
            "explain must be a function explain(model, x, target) -> relevance, e.g. "
            "functools.partial(rp.lrp, composite=rp.composites.EpsilonPlusFlat())."
        )
    _check_init(init)
    given = as_model(model, x)
    xp = given.namespace(x=x)
    x = detached(x)
    one_target_per_sample(target)
    available = parameter_layers(given)
    if layers is not None and top is not None:
        raise TypeError("pass either top= or layers=, not both.")
    if layers is not None:
        chosen = (layers,) if isinstance(layers, str) else tuple(layers)
        if not chosen:
            raise ValueError("layers is empty; name at least one layer with parameters.")
    else:
        count = len(available) if top is None else top
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= len(
            available
        ):
            raise ValueError(
                f"top={top!r}: the model has {len(available)} layers with parameters "
                f"({', '.join(available)}, output first); use 1 to {len(available)}."
            )
        chosen = available[:count]
    if target is None:  # the original model's classes, for every randomised one too
        target = [int(c) for c in np.asarray(to_numpy(xp.argmax(given.forward(x, xp), axis=1)))]
    original = _explained(explain, given, x, target)
    rho, rho_abs, randomised = [], [], []
    for step in range(len(chosen)):
        names = chosen[:step + 1] if cascade else chosen[step:step + 1]
        relevance = _explained(explain, randomise_layers(given, names, seed=seed, init=init),
                               x, target)
        if tuple(relevance.shape) != tuple(original.shape):
            raise ValueError(
                f"explain returned shape {tuple(relevance.shape)} for the randomised model and "
                f"{tuple(original.shape)} for the original; it must return one shape."
            )
        randomised.append(relevance)
        rho.append(spearman(original, relevance))
        rho_abs.append(spearman(xp.abs(original), xp.abs(relevance)))
    return RandomisationResult(
        layers=tuple(chosen),
        cascade=bool(cascade),
        spearman=xp.stack(rho, axis=0),
        spearman_abs=xp.stack(rho_abs, axis=0),
        relevance=original,
        randomised=tuple(randomised),
    )


def _explained(explain: Callable[..., Array], model: Model, x: Array, target: object) -> Array:
    relevance = explain(model, x, target)
    if library_of(relevance) != library_of(x):
        name = getattr(explain, "__name__", type(explain).__name__)
        raise TypeError(
            f"explain ({name}) returned {type(relevance).__name__}; it must return relevance "
            f"in x's library ({library_of(x)})."
        )
    return check_relevance(relevance, x, "the relevance explain returned")
