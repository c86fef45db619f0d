"""What the DTD modules share: the model and input checks, random generators, renamed
keywords, and small array helpers.

Models pass the checks ``rp.lrp`` uses (:func:`relprop.interop._cache.as_model`: a
relprop model, or a torch module converted once and cached) and must be a chain of layers
(a :class:`~relprop.Sequential`, or a :class:`~relprop.Graph` whose nodes each read the
previous one, as ``torch.fx`` gives for a plain ``forward``). Inputs pass
:func:`relprop._checks.check_input` (floating dtype of the parameters, finite, not empty)
and must be ``(batch, features)``.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

import numpy as np

from relprop._checks import check_input
from relprop._placement import placement
from relprop._xp import Array
from relprop.interop._cache import as_model
from relprop.layers import Dense, Dropout, Identity, LeakyReLU, ReLU
from relprop.model import INPUT, Graph, Sequential

__all__ = [
    "PIECEWISE_LINEAR",
    "Seed",
    "as_chain",
    "check_dense_network",
    "check_points",
    "diagonal",
    "gather",
    "generator",
    "renamed_keyword",
]

Seed = int | np.random.Generator | None
"""A seed of a NumPy generator, or the generator itself."""

PIECEWISE_LINEAR: tuple[type, ...] = (ReLU, LeakyReLU, Identity, Dropout)
"""The element-wise layers full-backward DTD allows between its dense layers."""


def generator(seed: Seed) -> np.random.Generator:
    """A NumPy generator: ``seed`` itself if it is one, else a new one seeded with it.

    Random numbers are drawn on the host for the same numbers on every backend, and then
    moved to the input's device once per draw (never the data back).
    """
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def as_chain(model: object, x: Any = None) -> Sequential:
    """``model`` as an :class:`~relprop.Sequential`: the model check of ``rp.lrp``
    (:func:`~relprop.interop._cache.as_model`; torch modules are converted, with ``x`` as
    the example), then a chain of layers."""
    checked = as_model(model, x)
    if isinstance(checked, Sequential):
        return checked
    if isinstance(checked, Graph):
        nodes = checked.nodes()
        previous = (INPUT, *(node.name for node in nodes[:-1]))
        if all(node.inputs == (before,) for node, before in zip(nodes, previous, strict=True)):
            return Sequential(list(checked.items()))
    raise TypeError(
        f"Deep Taylor Decomposition explains a chain of layers (an rp.Sequential); got "
        f"{type(checked).__name__} whose nodes do not form one chain."
    )


def check_points(model: Sequential, x: Array, name: str = "x") -> ModuleType:
    """The namespace of ``model`` and ``x``, after ``rp.lrp``'s input check and a check
    that ``x`` is ``(batch, features)``."""
    xp = model.namespace(**{name: x})
    check_input(x, xp, model.named_params(), name)
    if len(x.shape) != 2:
        raise ValueError(f"{name} must have shape (batch, features); got {tuple(x.shape)}.")
    return xp


def check_dense_network(
    model: object, who: str, *, between: tuple[type, ...] = PIECEWISE_LINEAR, x: Any = None
) -> Sequential:
    """The one check of the networks DTD explains: a chain of :class:`~relprop.Dense`
    layers with only the element-wise layers ``between`` (default ReLU, LeakyReLU,
    Identity, Dropout) between them, starting with a dense layer.

    ``who`` names the caller in the errors (``"train_free"``, ``"full-backward DTD"``).
    """
    chain = as_chain(model, x)
    allowed = (Dense, *between)
    for index, layer in enumerate(chain.layers):
        if not isinstance(layer, allowed):
            names = ", ".join(kind.__name__ for kind in between if kind is not ReLU)
            raise TypeError(
                f"{who} explains piecewise-linear networks of Dense and ReLU layers"
                f"{f' (and {names})' if names else ''}; layer {index} "
                f"({chain.names[index]!r}) is {layer!r}."
            )
    if not isinstance(chain.layers[0], Dense):
        raise TypeError(f"{who} needs a model whose first layer is Dense; it is "
                        f"{chain.layers[0]!r}.")
    return chain


def renamed_keyword(
    deprecated: dict[str, Any], old: str, new: str, value: Any, where: str
) -> Any:
    """``value`` (of keyword ``new``), or the value of the deprecated spelling ``old`` if
    it was passed (with a :class:`DeprecationWarning`); any other keyword in
    ``deprecated`` is a ``TypeError``, as Python raises for an unknown keyword."""
    unknown = sorted(set(deprecated) - {old})
    if unknown:
        raise TypeError(f"{where}() got an unexpected keyword argument {unknown[0]!r}")
    if old not in deprecated:
        return value
    warnings.warn(
        f"{where}({old}=...) is deprecated; spell it {new}=... (relprop writes "
        f"'nonnegative' everywhere).",
        DeprecationWarning,
        stacklevel=3,
    )
    return deprecated[old]


def diagonal(values: Array, n: int, xp: ModuleType) -> Array:
    """``(batch, n, n) -> (batch, n)``: entry ``j`` of row ``j``."""
    return xp.reshape(values, (values.shape[0], n * n))[:, ::n + 1]


def gather(rows: list[Array], index: list[int], xp: ModuleType) -> Array:
    """``concat(rows)[index]`` for rows with a leading axis of 1, without any operation
    when there is one row and one index (the common case)."""
    if len(rows) == 1:
        row = rows[0]
        return row if len(index) == 1 else xp.broadcast_to(row, (len(index), *row.shape[1:]))
    stacked = xp.concat(rows, axis=0)
    # host indices (from the region cache) enter the device once
    return xp.take(stacked, xp.asarray(index, **placement(stacked, xp)), axis=0)
