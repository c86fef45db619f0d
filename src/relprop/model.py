"""Models: a chain of layers (:class:`Sequential`) or a small DAG (:class:`Graph`).

Both are a list of :class:`Node` in topological order; the LRP and gradient passes walk
that list backwards, summing the relevance a node receives from all its consumers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, ModuleType
from typing import Any, TypeVar, overload

from relprop._pytree import register_pytrees
from relprop._xp import Array, array_namespace, asarray, backend_name, library_of
from relprop.layers import Layer, describe, parameter_arrays
from relprop.layers.merge import Merge

__all__ = ["INPUT", "Graph", "Model", "Node", "Sequential", "with_aliases"]

INPUT = "input"
"""Name of the model input in a graph's node inputs."""

Alias = tuple[str, str]
"""Where a folded layer's relevance is: ``("output", node)`` or ``("input", node)``."""

_M = TypeVar("_M", bound="Model")


@dataclass(frozen=True)
class Node:
    """A layer and the names of the nodes (or :data:`INPUT`) it reads."""

    name: str
    layer: Layer
    inputs: tuple[str, ...]


class Model:
    """What :class:`Sequential` and :class:`Graph` share: nodes, parameters, conversion."""

    names: tuple[str, ...]
    layers: tuple[Layer, ...]
    aliases: Mapping[str, Alias] = MappingProxyType({})
    """Layers a canonizer folded away, by their name in the model it was given.

    ``("output", node)``: the folded layer's output is now ``node``'s output (a batch norm
    fused into the linear layer before it); ``("input", node)``: the folded layer fed
    ``node`` and is now part of it (a batch norm fused into the layer after it,
    ``MergeBatchNorm(into_next=True)``), so its relevance is what ``node`` sends back to
    its input. ``rp.lrp(..., return_layers=True)`` reports folded layers under these
    names. Empty for a model
    no canonizer rewrote; kept by :meth:`rebuild` (and so by ``to``, ``astype``).
    """

    def nodes(self) -> tuple[Node, ...]:
        """Every node in topological order; the last one is the output."""
        raise NotImplementedError

    def rebuild(self, layers: Sequence[Layer]) -> Model:
        """The same structure (and :attr:`aliases`) with other layers (one per node)."""
        raise NotImplementedError

    def named_params(self) -> dict[str, Array]:
        """Every parameter array, named ``"<layer name>.<param>"``."""
        return parameter_arrays(dict(zip(self.names, self.layers, strict=True)))

    def namespace(self, **inputs: Array) -> ModuleType:
        """The namespace of the parameters and ``inputs``, checking they share a library."""
        return array_namespace(**inputs, **self.named_params())

    def output_nonnegative(self) -> dict[str, bool]:
        """For each node (and the input), whether its output is >= 0 by construction."""
        flags = {INPUT: False}
        for node in self.nodes():
            layer = node.layer
            flags[node.name] = layer.nonnegative_output or (
                layer.preserves_sign and all(flags[i] for i in node.inputs)
            )
        return flags

    def run(self, x: Array, xp: ModuleType) -> dict[str, Array]:
        """The output of every node (and ``INPUT``: ``x``), checking shapes on the way."""
        values = {INPUT: x}
        for index, node in enumerate(self.nodes()):
            values[node.name] = node_output(index, node, values, xp)
        return values

    def forward(self, x: Array, xp: ModuleType | None = None) -> Array:
        """The model's output."""
        if xp is None:
            xp = self.namespace(x=x)
        return self.run(x, xp)[self.nodes()[-1].name]

    def __call__(self, x: Array) -> Array:
        return self.forward(x)

    def map_params(self, fn: Callable[[Array], Array]) -> Model:
        """A new model whose parameters are ``fn(param)``; this one is left as it is."""
        return self.rebuild([layer.map_params(fn) for layer in self.layers])

    def to(self, backend: str | ModuleType, *, device: object = None) -> Model:
        """A copy of the model with its parameters in another library (and/or device).

        Parameters
        ----------
        backend
            ``"numpy"``, ``"torch"``, ``"jax"``, ``"cupy"``, ``"array_api_strict"`` or a
            namespace.
        device
            Target device of that library; default its default device.

        Examples
        --------
        >>> import numpy as np
        >>> import relprop as rp
        >>> model = rp.Sequential([rp.Dense(np.eye(2))])
        >>> rp.library_of(model.to("numpy").layers[0].weight)  # or "torch", "jax", ...
        'numpy'
        """
        name = backend if isinstance(backend, str) else backend_name(backend)
        return self.map_params(lambda a: asarray(a, backend=name, device=device))

    def astype(self, dtype: object) -> Model:
        """A copy of the model with every parameter cast to ``dtype``."""

        def cast(a: Array) -> Array:
            xp = array_namespace(param=a)
            target = getattr(xp, dtype) if isinstance(dtype, str) else dtype
            if library_of(a) == "jax" and "float64" in str(target):
                from relprop._xp import enable_jax_float64

                enable_jax_float64()
            return xp.astype(a, target)

        return self.map_params(cast)

    def items(self) -> Iterator[tuple[str, Layer]]:
        return iter(zip(self.names, self.layers, strict=True))

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def _index(self, key: int | str) -> int:
        if isinstance(key, str):
            if key not in self.names:
                raise KeyError(f"No layer named {key!r}; the names are {list(self.names)}.")
            return self.names.index(key)
        return key


def node_output(index: int, node: Node, values: Mapping[str, Array], xp: ModuleType
                ) -> Array:
    """The output of ``node`` (the ``index``-th) from the outputs in ``values`` it reads,
    after checking their shapes (the error names the layer)."""
    inputs = [values[i] for i in node.inputs]
    if isinstance(node.layer, Merge):
        problem = node.layer.check_inputs([tuple(a.shape) for a in inputs])
    else:
        problem = node.layer.check_input(tuple(inputs[0].shape))
    if problem is not None:
        raise ValueError(f"{describe(node.layer, index, node.name)} {problem}"
                         f"{_unbatched_hint(node, inputs)}.")
    if isinstance(node.layer, Merge):
        return node.layer.forward_many(inputs, xp)
    return node.layer.forward(inputs[0], xp)


def _unbatched_hint(node: Node, inputs: Sequence[Array]) -> str:
    """The fix when the model's input is one sample without its batch axis."""
    if INPUT not in node.inputs or isinstance(node.layer, Merge):
        return ""
    batched = (1, *tuple(inputs[0].shape))
    if node.layer.check_input(batched) is not None:
        return ""
    return (
        "; it looks like one sample without its batch axis: pass x[None] (a batch of one; "
        "relprop models take batches, and the relevance keeps the batch axis)"
    )


def with_aliases(model: _M, aliases: Mapping[str, Alias]) -> _M:
    """``model`` with :attr:`Model.aliases` set to ``aliases`` (for canonizers); returns it."""
    model.aliases = MappingProxyType(dict(aliases))
    return model


def _check_layers(kind: str, pairs: Sequence[tuple[str, Any]]) -> None:
    if not pairs:
        raise ValueError(f"{kind} needs at least one layer.")
    for index, (name, layer) in enumerate(pairs):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"{kind} item {index} ({name!r}) is a {type(layer).__name__}, not a "
                "relprop layer; wrap functions in rp.Lambda(fn), and convert a whole torch "
                "network with rp.from_torch(module)."
            )
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        raise ValueError(f"{kind} layer names must be unique; got {names}.")
    if INPUT in names:
        raise ValueError(f"{kind} layer names must not be {INPUT!r} (the model input's name).")


class Sequential(Model):
    """Layers applied one after another.

    Parameters
    ----------
    layers
        A sequence of layers (named ``"0"``, ``"1"``, ... as in torch), a mapping from
        names to layers, or a sequence of ``(name, layer)`` pairs.

    Examples
    --------
    >>> import numpy as np
    >>> import relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.eye(2)), rp.ReLU()])
    >>> model(np.array([[1.0, -1.0]])).tolist()
    [[1.0, 0.0]]
    >>> model.names
    ('0', '1')
    """

    def __init__(
        self, layers: Sequence[Layer] | Sequence[tuple[str, Layer]] | Mapping[str, Layer]
    ) -> None:
        pairs: list[tuple[str, Any]]
        if isinstance(layers, Mapping):
            pairs = [(str(name), layer) for name, layer in layers.items()]
        else:
            pairs = [
                (str(item[0]), item[1]) if isinstance(item, tuple) else (str(i), item)
                for i, item in enumerate(layers)
            ]
        _check_layers("Sequential", pairs)
        for index, (name, layer) in enumerate(pairs):
            if isinstance(layer, Merge):
                raise TypeError(
                    f"Sequential item {index} ({name!r}) is a {type(layer).__name__}, which "
                    "takes several inputs; build an rp.Graph instead."
                )
        self.names: tuple[str, ...] = tuple(name for name, _ in pairs)
        self.layers: tuple[Layer, ...] = tuple(layer for _, layer in pairs)
        self._nodes = tuple(
            Node(name, layer, (INPUT if i == 0 else self.names[i - 1],))
            for i, (name, layer) in enumerate(pairs)
        )
        array_namespace(**self.named_params())
        register_pytrees()  # a JAX pytree once jax is imported

    def nodes(self) -> tuple[Node, ...]:
        return self._nodes

    def rebuild(self, layers: Sequence[Layer]) -> Sequential:
        return with_aliases(Sequential(list(zip(self.names, layers, strict=True))), self.aliases)

    def input_nonnegative(self) -> tuple[bool, ...]:
        """For each layer, whether its input is >= 0 by construction (after a ReLU...)."""
        flags = self.output_nonnegative()
        return tuple(flags[node.inputs[0]] for node in self._nodes)

    def forward_record(self, x: Array, xp: ModuleType) -> list[Array]:
        """``[x, a_1, ..., a_L]``: the input of every layer, then the output."""
        values = self.run(x, xp)
        return [x] + [values[name] for name in self.names]

    @overload
    def __getitem__(self, key: int | str) -> Layer: ...
    @overload
    def __getitem__(self, key: slice) -> Sequential: ...
    def __getitem__(self, key: int | str | slice) -> Layer | Sequential:
        if isinstance(key, slice):
            return Sequential(list(zip(self.names[key], self.layers[key], strict=True)))
        return self.layers[self._index(key)]

    def __repr__(self) -> str:
        body = "\n".join(f"  ({name}): {layer!r}" for name, layer in self.items())
        return f"Sequential(\n{body}\n)"


class Graph(Model):
    """A directed acyclic graph of layers, for networks that are not a chain (ResNets).

    Parameters
    ----------
    nodes
        ``(name, layer, inputs)`` triples in topological order; ``inputs`` names earlier
        nodes or ``"input"`` (one name, or a sequence of names for :class:`~relprop.Add`
        and :class:`~relprop.Concat`). The last node is the output.

    Examples
    --------
    >>> import numpy as np
    >>> import relprop as rp
    >>> block = rp.Graph([
    ...     ("fc", rp.Dense(np.eye(2)), "input"),
    ...     ("relu", rp.ReLU(), "fc"),
    ...     ("add", rp.Add(), ["relu", "input"]),
    ... ])
    >>> block(np.array([[1.0, -2.0]])).tolist()
    [[2.0, -2.0]]
    """

    def __init__(self, nodes: Sequence[tuple[str, Layer, str | Sequence[str]]]) -> None:
        triples = []
        for item in nodes:
            if not (isinstance(item, tuple) and len(item) == 3):
                raise TypeError(f"Graph nodes are (name, layer, inputs) triples; got {item!r}.")
            name, layer, inputs = item
            inputs = (inputs,) if isinstance(inputs, str) else tuple(inputs)
            triples.append((str(name), layer, inputs))
        _check_layers("Graph", [(name, layer) for name, layer, _ in triples])
        known = {INPUT}
        built = []
        for index, (name, layer, inputs) in enumerate(triples):
            unknown = [i for i in inputs if i not in known]
            if unknown:
                raise ValueError(
                    f"Graph node {index} ({name!r}) reads {unknown}, which no earlier node "
                    f"produces; list nodes in topological order (known: {sorted(known)})."
                )
            wanted = "at least 2 inputs" if isinstance(layer, Merge) else "exactly 1 input"
            if (len(inputs) >= 2) != isinstance(layer, Merge) or not inputs:
                raise ValueError(
                    f"Graph node {index} ({name!r}, {layer!r}) needs {wanted}; got {list(inputs)}."
                )
            known.add(name)
            built.append(Node(name, layer, inputs))
        self._nodes = tuple(built)
        self.names = tuple(node.name for node in built)
        self.layers = tuple(node.layer for node in built)
        array_namespace(**self.named_params())
        register_pytrees()  # a JAX pytree once jax is imported

    def nodes(self) -> tuple[Node, ...]:
        return self._nodes

    def rebuild(self, layers: Sequence[Layer]) -> Graph:
        graph = Graph(
            [(n.name, layer, n.inputs) for n, layer in zip(self._nodes, layers, strict=True)]
        )
        return with_aliases(graph, self.aliases)

    def __getitem__(self, key: int | str) -> Layer:
        return self.layers[self._index(key)]

    def __repr__(self) -> str:
        body = "\n".join(f"  ({n.name}): {n.layer!r} <- {', '.join(n.inputs)}" for n in self._nodes)
        return f"Graph(\n{body}\n)"
