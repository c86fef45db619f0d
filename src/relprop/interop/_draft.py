"""A model being imported: nodes emitted one primitive at a time, then tidied.

An importer that reads a graph of primitives (a jaxpr, an ONNX graph) emits one relprop
layer per primitive: a ``Permute`` where the source's layout differs from relprop's, an
``Affine`` per arithmetic step with a constant, a ``Reshape`` per axis inserted or dropped.
:meth:`Draft.model` then tidies the result into the model a person would have written:

* **moves**: a chain of ``Permute`` / ``Reshape`` / ``Flatten`` layers becomes the fewest
  layers that move the values the same way (often none), found by moving an index array;
* **biases**: a constant added right after a dense or conv layer without a bias (the
  source's ``x @ W + b``) becomes that layer's bias, so the LRP rules see the same
  pre-activations as in the torch twin;
* **affine chains**: consecutive ``Affine`` layers (a batch norm written out as
  ``(x - mean) * scale + shift``) become one, which
  :class:`~relprop.canonizers.MergeBatchNorm` fuses into the layer before it;
* identities (``x * 1``, a pool's sum times the divisor it is divided by) disappear, and
  so does whatever the output does not depend on.

Every rewrite keeps the function exactly (up to rounding of the constants folded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import permutations
from typing import Any

import numpy as np

from relprop._xp import Array, array_namespace, to_numpy
from relprop.layers import Affine, Dropout, Flatten, Identity, Layer, Linear, Permute, Reshape
from relprop.model import INPUT, Graph, Sequential

__all__ = ["Draft", "on_backend"]

_MOVES = (Permute, Reshape, Flatten)


@dataclass
class _Node:
    name: str
    layer: Layer
    inputs: list[str]
    shape: tuple[int, ...]  # one output sample's shape
    base: str = ""  # the name asked for; numbered afresh at the end


@dataclass
class Draft:
    """Nodes in topological order; ``output`` names the node the model returns."""

    input_shape: tuple[int, ...]
    nodes: list[_Node] = field(default_factory=list)
    output: str = INPUT
    bias_candidates: set[str] = field(default_factory=set)
    _taken: set[str] = field(default_factory=lambda: {INPUT})

    def add(
        self, base: str, layer: Layer, inputs: list[str], shape: tuple[int, ...],
        *, bias: bool = False,
    ) -> str:
        """Append a node (named ``base``, or ``base_1``, ``base_2``, ... when taken)."""
        name, count = base, 0
        while name in self._taken:
            count += 1
            name = f"{base}_{count}"
        self._taken.add(name)
        self.nodes.append(_Node(name, layer, list(inputs), tuple(shape), base))
        if bias:
            self.bias_candidates.add(name)
        return name

    def shape_of(self, name: str) -> tuple[int, ...]:
        return self.input_shape if name == INPUT else self._get(name).shape

    def _get(self, name: str) -> _Node:
        return next(node for node in self.nodes if node.name == name)

    def _producer(self, name: str) -> _Node | None:
        return None if name == INPUT else self._get(name)

    def _consumers(self) -> dict[str, list[str]]:
        readers: dict[str, list[str]] = {}
        for node in self.nodes:
            for name in node.inputs:
                readers.setdefault(name, []).append(node.name)
        readers.setdefault(self.output, []).append("(output)")
        return readers

    def _bypass(self, node: _Node, by: str) -> None:
        """Remove ``node``; its readers read ``by`` instead."""
        self.nodes.remove(node)
        for other in self.nodes:
            other.inputs = [by if name == node.name else name for name in other.inputs]
        if self.output == node.name:
            self.output = by

    # -- the passes ------------------------------------------------------------------

    def _collapse_moves(self) -> bool:
        readers = self._consumers()
        for node in self.nodes:
            if not isinstance(node.layer, _MOVES):
                continue
            chain = [node]
            while True:
                after = readers.get(chain[-1].name, [])
                single = len(after) == 1 and after[0] != "(output)"
                nxt = self._producer(after[0]) if single else None
                if nxt is None or not isinstance(nxt.layer, _MOVES):
                    break
                chain.append(nxt)
            source = node.inputs[0]
            fewer = _fewest_moves(self.shape_of(source), chain[-1].shape, [n.layer for n in chain])
            if fewer is None or len(fewer) >= len(chain):
                continue
            last = chain[-1]
            for middle in chain[:-1]:
                self.nodes.remove(middle)
            if not fewer:
                self._bypass(last, source)
                return True
            # the earlier moves go in just before the last one, under the chain's first names
            reads = source
            for index, move in enumerate(fewer[:-1]):
                named = chain[index]
                shape = _moved_shape(self.shape_of(source), fewer[: index + 1])
                self.nodes.insert(self.nodes.index(last),
                                  _Node(named.name, move, [reads], shape, named.base))
                reads = named.name
            last.layer, last.inputs = fewer[-1], [reads]
            return True
        return False

    def _fold_biases(self) -> bool:
        readers = self._consumers()
        for node in self.nodes:
            layer = node.layer
            if node.name not in self.bias_candidates or not isinstance(layer, Affine):
                continue
            producer = self._producer(node.inputs[0])
            if (
                layer.scale is not None
                or producer is None
                or not isinstance(producer.layer, Linear)
                or producer.layer.bias is not None
                or readers.get(producer.name) != [node.name]
            ):
                continue
            linear = producer.layer
            xp = array_namespace(weight=linear.weight)
            found = layer.per_channel(linear.out_size, linear.channel_axis, xp)
            if found is None or found[1].dtype != linear.weight.dtype:
                continue
            producer.layer = linear.with_params(linear.weight, found[1])
            self._bypass(node, producer.name)
            return True
        return False

    def _fuse_affines(self) -> bool:
        readers = self._consumers()
        for node in self.nodes:
            before = self._producer(node.inputs[0]) if node.inputs else None
            if (
                not isinstance(node.layer, Affine)
                or before is None
                or not isinstance(before.layer, Affine)
                or readers.get(before.name) != [node.name]
            ):
                continue
            before.layer = _compose_affine(before.layer, node.layer)
            self._bypass(node, before.name)
            return True
        return False

    def _drop_identities(self) -> bool:
        for node in self.nodes:
            if isinstance(node.layer, (Identity, Dropout)) or (
                isinstance(node.layer, Affine) and _is_identity(node.layer)
            ):
                self._bypass(node, node.inputs[0])
                return True
        return False

    def _drop_unused(self) -> None:
        live, todo = set(), [self.output]
        while todo:
            name = todo.pop()
            if name in live or name == INPUT:
                continue
            live.add(name)
            todo.extend(self._get(name).inputs)
        self.nodes = [node for node in self.nodes if node.name in live]

    def model(self) -> Sequential | Graph:
        """The tidied model: a :class:`~relprop.Sequential` when the nodes form a chain."""
        self._drop_unused()
        # biases first: a zero bias is still the layer's bias, not an identity to drop
        passes = (self._collapse_moves, self._fold_biases, self._fuse_affines,
                  self._drop_identities)
        while any(step() for step in passes):
            self._drop_unused()
        if not self.nodes:
            return Sequential([("identity", Identity())])
        for node in self.nodes:
            if isinstance(node.layer, Reshape) and len(node.shape) == 1:
                node.layer, node.base = Flatten(1), "flatten"
        self._tidy_names()
        chain = all(
            node.inputs == [self.nodes[i - 1].name if i else INPUT]
            for i, node in enumerate(self.nodes)
        )
        if chain:
            return Sequential([(node.name, node.layer) for node in self.nodes])
        return Graph([(node.name, node.layer, node.inputs) for node in self.nodes])


    def _tidy_names(self) -> None:
        """Number the kept nodes of each asked-for name afresh: ``relu``, ``relu_1``, ..."""
        counts: dict[str, int] = {}
        renamed: dict[str, str] = {}
        for node in self.nodes:
            count = counts.get(node.base, 0)
            counts[node.base] = count + 1
            renamed[node.name] = f"{node.base}_{count}" if count else node.base
        taken = set(renamed.values())
        if len(taken) != len(renamed) or INPUT in taken:  # a base like "relu_1" was asked for
            return
        for node in self.nodes:
            node.name = renamed[node.name]
            node.inputs = [renamed.get(name, name) for name in node.inputs]
        self.output = renamed.get(self.output, self.output)


def on_backend(model: Sequential | Graph, backend: str | None) -> Sequential | Graph:
    """``model`` with its parameters on ``backend`` (default ``RELPROP_BACKEND``): for the
    importers whose arrays are made from nothing (files, NumPy weights)."""
    from relprop._xp import default_backend

    moved = model.to(backend or default_backend())
    assert isinstance(moved, (Sequential, Graph))
    return moved


def _moved_shape(shape: tuple[int, ...], layers: list[Layer]) -> tuple[int, ...]:
    x = np.zeros((1, *shape), dtype=np.int8)
    xp = array_namespace(x=x)
    for layer in layers:
        x = layer.forward(x, xp)
    return tuple(int(s) for s in x.shape[1:])


def _as_reshape(shape: tuple[int, ...]) -> Layer:
    return Flatten(1) if len(shape) == 1 else Reshape(shape)


def _fewest_moves(
    source: tuple[int, ...], target: tuple[int, ...], layers: list[Layer]
) -> list[Layer] | None:
    """The shortest list of moves equal to ``layers`` (at most a reshape, a permute and a
    reshape), found by moving the index array of one sample; ``None`` if none is."""
    index = np.arange(math.prod(source)).reshape((1, *source))
    xp = array_namespace(index=index)
    moved = index
    for layer in layers:
        moved = layer.forward(moved, xp)
    order = np.reshape(moved, (-1,))
    if np.array_equal(order, np.reshape(index, (-1,))):
        return [] if target == source else [_as_reshape(target)]
    squeezed = tuple(s for s in source if s != 1)
    for start in dict.fromkeys((source, squeezed)):
        if len(start) > 6:
            continue
        base = np.reshape(index, (1, *start))
        pre: list[Layer] = [] if start == source else [_as_reshape(start)]
        for dims in permutations(range(1, len(start) + 1)):
            if np.array_equal(np.reshape(np.permute_dims(base, (0, *dims)), (-1,)), order):
                permuted = tuple(start[d - 1] for d in dims)
                post: list[Layer] = [] if permuted == target else [_as_reshape(target)]
                return [*pre, Permute((0, *dims)), *post]
    return None


def _compose_affine(first: Affine, second: Affine) -> Affine:
    """``second(first(x))`` as one affine map: scale ``a1 a2``, shift ``c1 a2 + c2``."""

    def times(a: Any, b: Any) -> Any:
        return b if a is None else a if b is None else a * b

    scale = times(first.scale, second.scale)
    shift = first.shift
    if shift is not None and second.scale is not None:
        shift = shift * second.scale
    if second.shift is not None:
        shift = second.shift if shift is None else shift + second.shift
    return Affine(scale, shift)


def _is_identity(layer: Affine) -> bool:
    """Whether the map is ``x`` (a scale within a few roundings of 1, a zero shift)."""
    for constant, neutral, slack in ((layer.scale, 1.0, 4.0), (layer.shift, 0.0, 0.0)):
        if constant is None:
            continue
        values: Array = to_numpy(constant)
        tolerance = slack * float(np.finfo(values.dtype).eps)
        if not bool(np.all(np.abs(values - neutral) <= tolerance)):
            return False
    return True
