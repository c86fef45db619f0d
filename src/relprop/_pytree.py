"""relprop models as JAX pytrees: parameters are the leaves, the structure is static.

So a model can be an argument of a ``jax.jit``-compiled function, ``jax.tree.map`` makes
modified copies, and ``jax.vmap`` maps over inputs or over stacked models. Registration
needs jax, which relprop never imports by itself: it happens when a model with JAX
parameters is built, when relprop is imported after jax, or when the ``"jax"`` backend is
first asked for (:func:`relprop._xp.namespace_for`).

Two models have the same tree structure when their node names, inputs, layer types, layer
descriptions (``repr``: sizes and settings) and present parameters agree.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

__all__ = ["register_pytrees"]

_REGISTERED = False


class _Structure:
    """The static part of a flattened model: a template, compared by its structure."""

    def __init__(self, model: Any, keys: tuple[tuple[str, ...], ...]) -> None:
        self.model = model
        self.keys = keys
        self.signature = (
            type(model).__name__,
            tuple(
                (node.name, node.inputs, type(node.layer).__name__, repr(node.layer), names)
                for node, names in zip(model.nodes(), keys, strict=True)
            ),
        )

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Structure) and self.signature == other.signature

    def __hash__(self) -> int:
        return hash(self.signature)


def _flatten(model: Any) -> tuple[list[Any], _Structure]:
    leaves: list[Any] = []
    keys = []
    for layer in model.layers:
        present = tuple(key for key, value in layer.params().items() if value is not None)
        leaves.extend(layer.params()[key] for key in present)
        keys.append(present)
    return leaves, _Structure(model, tuple(keys))


def _with_leaves(layer: Any, names: tuple[str, ...], leaves: Any) -> Any:
    """A copy of ``layer`` holding other arrays, built without validation (JAX unflattens
    with tracers and placeholders too)."""
    if not names:
        return layer
    new = copy.copy(layer)
    for name in names:
        setattr(new, name, next(leaves))
    return new


def _unflatten(structure: _Structure, leaves: Any) -> Any:
    from relprop.model import Node

    model = structure.model
    it = iter(leaves)
    layers = tuple(
        _with_leaves(layer, names, it)
        for layer, names in zip(model.layers, structure.keys, strict=True)
    )
    new = copy.copy(model)
    new.layers = layers
    new._nodes = tuple(
        Node(node.name, layer, node.inputs)
        for node, layer in zip(model.nodes(), layers, strict=True)
    )
    return new


def register_pytrees() -> None:
    """Register :class:`~relprop.Sequential` and :class:`~relprop.Graph` with JAX (once)."""
    global _REGISTERED
    if _REGISTERED or sys.modules.get("jax") is None:  # not imported (or hidden: None)
        return
    from jax import tree_util

    from relprop.model import Graph, Sequential

    for cls in (Sequential, Graph):
        tree_util.register_pytree_node(cls, _flatten, _unflatten)
    _REGISTERED = True
