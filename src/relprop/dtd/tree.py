r"""The results of full-backward Deep Taylor Decomposition and their exports.

:func:`~relprop.dtd.full_backward` returns a tree: a :class:`FullBackwardResult` for the
lowest dense layer explained at the inputs, holding the upper layers' results at the real
input (:attr:`~FullBackwardResult.upper_at_input`, the *chain*) and at every root
(:attr:`~FullBackwardResult.upper_at_roots`), up to the :class:`OutputResult` at the top.
The relevance functions of :mod:`relprop.dtd.full_backward` compute it; this module holds
the types and what reads them: :meth:`~FullBackwardResult.layer_table`,
:meth:`~FullBackwardResult.collect` (one row per node, sample and neuron),
:meth:`~FullBackwardResult.to_dataframe` (pandas), :meth:`~FullBackwardResult.call_graph`,
:meth:`~FullBackwardResult.to_networkx` and :meth:`~FullBackwardResult.to_dot`
(Graphviz). The exports are the reporting edge: they copy the arrays to NumPy on the
host; the decomposition itself never does.

:class:`RelevanceValues` is what a relevance function returns when only its values are
asked for (no subtrees): the relevance and what the layer below needs to differentiate it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from relprop._placement import placement
from relprop._xp import Array, to_numpy

__all__ = ["FullBackwardResult", "OutputResult", "RelevanceValues"]


@dataclass
class RelevanceValues:
    """The values of a relevance function at a batch of points, without subtrees.

    Attributes
    ----------
    relevance
        ``(m, n)``: the relevance of the function's ``n`` columns.
    slopes
        The Jacobian of ``relevance`` by the points, as far as the layer below needs it:
        for a full-backward function its diagonal ``(m, features)`` (the roots held
        fixed, :attr:`FullBackwardResult.slopes`); for the output, the one-hot row of the
        explained output ``(1, outputs)``.
    """

    relevance: Array
    slopes: Array

    def jacobian_rows(self, weights: Array, xp: ModuleType) -> Array:
        """``weights`` (``(m, n)`` rows) times the Jacobian of ``relevance``."""
        return weights * self.slopes


@dataclass
class OutputResult:
    """The explained output's relevance :math:`f_c`: the top of every tree.

    Attributes
    ----------
    layer
        ``len(model.layers)`` (the output is the input of "no layer").
    name
        ``"output"``.
    input
        The network output ``(batch, outputs)``.
    relevance
        ``(batch, 1)``: the explained output :math:`f_c`.
    target
        :math:`c`.
    """

    layer: int
    name: str
    input: Array
    relevance: Array
    target: int

    def jacobian_rows(self, weights: Array, xp: ModuleType) -> Array:
        r"""``weights (m, 1)`` times :math:`\partial R / \partial y`: ``(m, outputs)``."""
        columns = xp.arange(self.input.shape[1], **placement(self.input, xp))
        onehot = xp.astype(columns == self.target, self.input.dtype)
        return weights * onehot


@dataclass
class FullBackwardResult:
    r"""One node of the full-backward tree: dense layer ``layer`` explained at a batch of
    inputs, with the roots of every neuron of the layer above and what the upper layers
    computed there.

    Shapes: ``batch`` inputs :math:`a` of ``features`` entries, ``n`` upper neurons
    :math:`j` (the layer's outputs; one, the explained output, for the last layer).

    Attributes
    ----------
    layer, name
        Index and name of the dense layer in ``model.layers`` whose input is explained.
    input
        :math:`a`, ``(batch, features)``.
    relevance
        :math:`D(a)`, ``(batch, features)``: the decomposed relevance of the input.
    upper_relevance
        :math:`R_j(a)`, ``(batch, n)``: the relevance of the upper neurons, decomposed here.
    roots
        :math:`r^{(j)}`, ``(batch, n, features)``.
    root_relevance
        :math:`R_j(r^{(j)})`, ``(batch, n)``: the unresolved zero-order terms (also
        :attr:`unresolved`).
    gradients
        :math:`\nabla_a R_j(r^{(j)})`, ``(batch, n, features)``.
    contributions
        :math:`\nabla_a R_j(r^{(j)}) \odot (a - r^{(j)})`, ``(batch, n, features)``: neuron
        :math:`j`'s share of each input's relevance (``relevance`` is their sum over j).
    slopes
        :math:`\sum_j \nabla_a R_j(r^{(j)})`, ``(batch, features)``: the derivative of
        :math:`D(a)_i` by :math:`a_i` with the roots held fixed (used by the layer below).
    found, same_region
        ``(batch, n)`` booleans from the root finder: a root was bracketed; the root has
        the input's activation pattern.
    cache_hit
        ``(batch,)`` booleans: the roots came from the finder's cache.
    neurons
        The upper neuron behind each column ``j`` (for the last layer: the target).
    output_at_input, output_at_root
        The explained output computed from this layer on, at :math:`a`, ``(batch,)``, and
        at each root, ``(batch, n)`` (both set by ``fn.tree(a)`` and ``fn.chain(a)``).
    upper_at_input
        The upper function's result at :math:`\mathrm{block}(a)` (the next layer of the
        chain at the real input), or ``None``.
    upper_at_roots
        The upper function's result at :math:`\mathrm{block}(r^{(j)})`, a batch of
        ``batch * n`` (row ``b * n + j``: sample ``b``, neuron ``j``), or ``None`` (a
        result of :meth:`~relprop.dtd.full_backward.RelevanceFn.chain`).
    """

    layer: int
    name: str
    input: Array
    relevance: Array
    upper_relevance: Array
    roots: Array
    root_relevance: Array
    gradients: Array
    contributions: Array
    slopes: Array
    found: Array
    same_region: Array
    cache_hit: Array
    neurons: tuple[int, ...]
    output_at_input: Array | None = None
    output_at_root: Array | None = None
    upper_at_input: FullBackwardResult | OutputResult | None = None
    upper_at_roots: FullBackwardResult | OutputResult | None = None

    @property
    def unresolved(self) -> Array:
        """:math:`R_j(r^{(j)})`, ``(batch, n)``."""
        return self.root_relevance

    def jacobian_rows(self, weights: Array, xp: ModuleType) -> Array:
        """``weights (m, features)`` times the (diagonal) Jacobian of ``relevance``."""
        return weights * self.slopes

    def upper(self, sample: int, neuron: int) -> FullBackwardResult | OutputResult | None:
        """The upper result at the root of column ``neuron`` of ``sample`` (batch of 1)."""
        if self.upper_at_roots is None:
            return None
        row = sample * len(self.neurons) + neuron
        return _select_rows(self.upper_at_roots, row, row + 1)

    def chain(self) -> list[FullBackwardResult | OutputResult]:
        """This node and the upper results at the real input, layer by layer up to the
        output: the relevance of every layer of the explained input."""
        nodes: list[FullBackwardResult | OutputResult] = [self]
        node: Any = self
        while isinstance(node, FullBackwardResult) and node.upper_at_input is not None:
            node = node.upper_at_input
            nodes.append(node)
        return nodes

    def layer_table(self) -> list[dict[str, Any]]:
        """Per layer of :meth:`chain`, per-sample sums (NumPy arrays of shape ``(batch,)``):
        ``relevance`` (:math:`\\sum_i D(a)_i`), ``unresolved``
        (:math:`\\sum_j R_j(r^{(j)})`), ``upper_relevance`` (:math:`\\sum_j R_j(a)`),
        ``output`` (the explained output) and ``gap`` (relevance + unresolved - upper),
        plus the share of roots found and in the input's region."""
        rows = []
        for node in self.chain():
            if not isinstance(node, FullBackwardResult):
                value = to_numpy(node.relevance)[:, 0]
                rows.append({"layer": node.name, "relevance": value, "output": value})
                continue
            relevance = to_numpy(node.relevance).sum(axis=1)
            unresolved = to_numpy(node.root_relevance).sum(axis=1)
            upper = to_numpy(node.upper_relevance).sum(axis=1)
            rows.append({
                "layer": node.name,
                "relevance": relevance,
                "unresolved": unresolved,
                "upper_relevance": upper,
                "gap": relevance + unresolved - upper,
                "output": None if node.output_at_input is None else to_numpy(
                    node.output_at_input),
                "found": to_numpy(node.found).mean(axis=1),
                "same_region": to_numpy(node.same_region).mean(axis=1),
            })
        return rows

    def collect(self, sample: int | None = None) -> list[dict[str, Any]]:
        """Flatten the tree: one row per node, sample and upper neuron (NumPy values).

        Columns: ``layer``, ``layer_index``, ``sample``, ``neuron``, ``callgraph`` (the path
        from the explained input: layer names, ``"r<j>"`` for a step to neuron j's root,
        ``"x"`` for a step to the next layer at the real input), ``reached``
        (``"input"``: the node was evaluated at the explained input's activations;
        ``"root"``: at a root), ``input``, ``root``, ``gradient``, ``relevance`` (the
        contribution vector), ``relevance_sum``, ``upper_relevance`` (:math:`R_j(a)`),
        ``unresolved`` (:math:`R_j(r^{(j)})`), ``found``, ``same_region``,
        ``input_output`` and ``root_output`` (the explained output computed from this
        layer on at the input and at the root).
        """
        rows: list[dict[str, Any]] = []
        batch = self.input.shape[0]
        samples = range(batch) if sample is None else [int(sample)]
        _collect(self, [(b, (self.name,), "input") for b in range(batch)], rows,
                 set(samples))
        return rows

    def to_dataframe(self, sample: int | None = None) -> Any:
        """:meth:`collect` as a pandas DataFrame (needs the optional pandas package)."""
        import importlib

        try:
            pandas = importlib.import_module("pandas")
        except ImportError as error:
            raise ImportError("to_dataframe needs pandas: pip install pandas") from error
        return pandas.DataFrame(self.collect(sample))

    def call_graph(self, sample: int = 0,
                   include_input: bool = False) -> tuple[list[tuple[str, dict[str, Any]]],
                                                         list[tuple[str, str]]]:
        """``(nodes, edges)`` of the call graph of one sample, without optional packages.

        Nodes are ``"/"``-joined call paths (see :meth:`collect`) with attributes:
        layer nodes (``kind="layer"``) and root nodes (``kind="root"``, with ``neuron``,
        ``relevance`` and ``unresolved``). ``include_input=True`` adds the chain of layers
        at the real input (``"x"`` steps).
        """
        nodes: dict[str, dict[str, Any]] = {}
        edges: list[tuple[str, str]] = []
        for row in self.collect(sample):
            path = row["callgraph"]
            if not include_input and "x" in path:
                continue
            layer_id = "/".join(path[:-1])
            root_id = "/".join(path)
            nodes.setdefault(layer_id, {"kind": "layer", "layer": row["layer"]})
            nodes[root_id] = {
                "kind": "root",
                "layer": row["layer"],
                "neuron": row["neuron"],
                "relevance": row["relevance_sum"],
                "unresolved": row["unresolved"],
            }
            edges.append((layer_id, root_id))
            if len(path) > 2:
                edges.append(("/".join(path[:-2]), layer_id))
        unique_edges = list(dict.fromkeys(edges))
        return list(nodes.items()), unique_edges

    def to_networkx(self, sample: int = 0, include_input: bool = False) -> Any:
        """The call graph of one sample (:meth:`call_graph`) as a ``networkx.DiGraph``
        (needs the optional networkx package); e.g. ``networkx.draw(tree.to_networkx())``."""
        import importlib

        try:
            networkx = importlib.import_module("networkx")
        except ImportError as error:
            raise ImportError("to_networkx needs networkx: pip install networkx") from error
        graph = networkx.DiGraph()
        nodes, edges = self.call_graph(sample, include_input)
        graph.add_nodes_from(nodes)
        graph.add_edges_from(edges)
        return graph

    def to_dot(self, sample: int = 0, include_input: bool = False) -> str:
        """The call graph of one sample in Graphviz DOT format (plain text)."""
        nodes, edges = self.call_graph(sample, include_input)
        lines = ["digraph full_backward {", "  rankdir=LR;"]
        for name, attrs in nodes:
            if attrs["kind"] == "layer":
                label = attrs["layer"]
                shape = "box"
            else:
                label = (f"r{attrs['neuron']}\\nR={attrs['relevance']:.3g}\\n"
                         f"unres={attrs['unresolved']:.2g}")
                shape = "ellipse"
            lines.append(f'  "{name}" [label="{label}", shape={shape}];')
        for a, b in edges:
            lines.append(f'  "{a}" -> "{b}";')
        lines.append("}")
        return "\n".join(lines) + "\n"


def _select_rows(node: FullBackwardResult | OutputResult, first: int,
                 stop: int) -> FullBackwardResult | OutputResult:
    """Rows ``first:stop`` of a batched node, with their subtrees."""
    if isinstance(node, OutputResult):
        return OutputResult(node.layer, node.name, node.input[first:stop, ...],
                            node.relevance[first:stop, ...], node.target)
    n = len(node.neurons)

    def cut(a: Array | None) -> Array | None:
        return None if a is None else a[first:stop, ...]

    return FullBackwardResult(
        layer=node.layer, name=node.name, input=cut(node.input),
        relevance=cut(node.relevance), upper_relevance=cut(node.upper_relevance),
        roots=cut(node.roots), root_relevance=cut(node.root_relevance),
        gradients=cut(node.gradients), contributions=cut(node.contributions),
        slopes=cut(node.slopes), found=cut(node.found), same_region=cut(node.same_region),
        cache_hit=cut(node.cache_hit), neurons=node.neurons,
        output_at_input=cut(node.output_at_input), output_at_root=cut(node.output_at_root),
        upper_at_input=None if node.upper_at_input is None else _select_rows(
            node.upper_at_input, first, stop),
        upper_at_roots=None if node.upper_at_roots is None else _select_rows(
            node.upper_at_roots, first * n, stop * n),
    )


def _collect(node: FullBackwardResult | OutputResult | None,
             info: list[tuple[int, tuple[str, ...], str]], rows: list[dict[str, Any]],
             samples: set[int]) -> None:
    if not isinstance(node, FullBackwardResult):
        return
    n = len(node.neurons)
    arrays = {name: np.asarray(to_numpy(getattr(node, name))) for name in (
        "input", "roots", "gradients", "contributions", "upper_relevance", "root_relevance",
        "found", "same_region")}
    out_in = None if node.output_at_input is None else np.asarray(to_numpy(node.output_at_input))
    out_root = None if node.output_at_root is None else np.asarray(to_numpy(node.output_at_root))
    child_info_roots = []
    for index, (sample, path, reached) in enumerate(info):
        for j in range(n):
            label = f"r{node.neurons[j]}"
            child_info_roots.append((sample, (*path, label), "root"))
            if sample not in samples:
                continue
            contribution = arrays["contributions"][index, j]
            rows.append({
                "layer": node.name,
                "layer_index": node.layer,
                "sample": sample,
                "neuron": node.neurons[j],
                "callgraph": (*path, label),
                "reached": reached,
                "input": arrays["input"][index],
                "root": arrays["roots"][index, j],
                "gradient": arrays["gradients"][index, j],
                "relevance": contribution,
                "relevance_sum": float(contribution.sum()),
                "upper_relevance": float(arrays["upper_relevance"][index, j]),
                "unresolved": float(arrays["root_relevance"][index, j]),
                "found": bool(arrays["found"][index, j]),
                "same_region": bool(arrays["same_region"][index, j]),
                "input_output": None if out_in is None else float(out_in[index]),
                "root_output": None if out_root is None else float(out_root[index, j]),
            })
    if node.upper_at_roots is not None:
        upper_name = node.upper_at_roots.name
        _collect(node.upper_at_roots,
                 [(s, (*p, upper_name), r) for s, p, r in child_info_roots], rows, samples)
    if node.upper_at_input is not None:
        upper_name = node.upper_at_input.name
        _collect(node.upper_at_input,
                 [(s, (*p, "x", upper_name), r) for s, p, r in info], rows, samples)


def explained_output(node: Any) -> Array | None:
    """The explained output at a node's inputs, from the top of its chain, ``(batch,)``."""
    while isinstance(node, FullBackwardResult):
        node = node.upper_at_input
    if isinstance(node, OutputResult):
        return node.relevance[:, 0]
    return None
