r"""Full-backward Deep Taylor Decomposition: relevance functions recomputed at every root.

Notation: dense layer :math:`k` (``model.layers[start]``) has input :math:`a` and, after
it and its activation, the *block* output :math:`h = \mathrm{block}_k(a)`. The explained
output's relevance is the network output itself, :math:`R^{\mathrm{out}} = f_c`.

Relevance functions, top-down (:func:`get_decompose_relevance_fns`):

- :class:`OutputRelevanceFn`: the network output :math:`y \mapsto y_c` (one neuron).
- :class:`FullBackwardFn` of dense layer :math:`k` with upper function :math:`D_{k+1}`:
  the relevance of the neurons of :math:`h`, as a function of the layer input,
  :math:`R_j(a) = D_{k+1}(\mathrm{block}_k(a))_j`, is decomposed onto the input,

  .. math:: D_k(a)_i = \sum_j \frac{\partial R_j}{\partial a_i}\Big|_{r^{(j)}}
                       \bigl(a_i - r^{(j)}_i\bigr),

  with :math:`r^{(j)}` a root of :math:`R_j` found by a root finder
  (:mod:`relprop.dtd.finders`). :math:`R_j` is *recomputed* at the root: the upper
  function runs again on :math:`\mathrm{block}_k(r^{(j)})`, finding its own roots there,
  recursively up to the output. The zero-order term :math:`R_j(r^{(j)})` of each Taylor
  expansion is what the decomposition leaves *unresolved*; it is reported per neuron,
  never dropped silently.

Gradients. :math:`D_{k+1}(h)_i = \sum_m g^{(m)}_i (h_i - r^{(m)}_i)` depends on
:math:`h` through :math:`h` itself and through the upper roots :math:`r^{(m)}` and their
gradients :math:`g^{(m)}`. relprop differentiates with the upper roots and their
gradients held fixed, as they are within one local linear region when the root finder
caches by region (the default of the interpolation and Metropolis-Hastings finders): then
:math:`\partial D_{k+1,i} / \partial h_l = \delta_{il} \sum_m g^{(m)}_i` (the result's
:attr:`~FullBackwardResult.slopes`) and

.. math:: \nabla_a R_j(a) = J_{\mathrm{block}_k}(a)^\top
          \Bigl(e_j \sum_m g^{(m)}_j\Bigr),

computed exactly with the layers' vector-Jacobian products (no autodiff, no finite
differences: the same numbers on every backend, up to rounding). With region caching
every :math:`D_k` is affine on each local linear region,
:math:`D_k(a) = s \odot a - o` with :math:`s = \sum_j \nabla R_j(r^{(j)})` and
:math:`o = \sum_j \nabla R_j(r^{(j)}) \odot r^{(j)}`, so this is its exact gradient, the
first-order Taylor expansion at an in-region root is exact, and per node

.. math:: \sum_i D_k(a)_i + \sum_j R_j(r^{(j)}) = \sum_j R_j(a);

if moreover no relevance is unresolved at or above a layer, that layer's relevance sums
to the explained output :math:`f_c(x)`. Without caching (or with closed-form roots, which
depend on the point) the upper roots move with the point, the same formulas are a
first-order approximation, and the residual shows as the ``gap`` (relevance + unresolved
- upper relevance) of :meth:`FullBackwardResult.layer_table`.

Cost. A tree for one input holds, at every layer, one node for every root of the layers
below it, each with a row per upper neuron: for ``MLP(3, 10, 10, 2)``, 10 rows at the
input layer, 10 x 10 at the first hidden layer and 100 x 1 at the last (plus 21 rows for
the layers at the real input's activations: 231). This is exponential in depth;
:func:`full_backward` refuses trees of more than ``max_points`` node-neuron pairs.
Root searches evaluate the relevance function at every candidate (``n_rays`` or
``n_chains * n_steps`` per search). With region caching a search runs once per (layer,
region) and the affine coefficients :math:`(s, o)` are memoised with the region's roots,
so evaluating a relevance function at a point of a known region is one lookup, not a
recursion; ``finder.cache_info()`` counts searches (misses) and lookups (hits). Without
caching every evaluation recurses and searches again: the cost multiplies by the number of
candidates at every layer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from relprop._checks import check_input
from relprop._progress import progress_bar
from relprop._xp import Array, asarray, backend_name, to_numpy
from relprop.dtd.finders import InterpolationRootFinder, RootFinder, _diagonal, gather
from relprop.dtd.local_linear import placement, region_keys
from relprop.layers import Dense, Dropout, Identity, LeakyReLU, ReLU
from relprop.model import Sequential

__all__ = [
    "FullBackwardFn",
    "FullBackwardResult",
    "OutputRelevanceFn",
    "OutputResult",
    "RelevanceFn",
    "full_backward",
    "full_backward_builder",
    "get_decompose_relevance_fns",
]

_MODES = ("tree", "chain", "values")
_TOKENS = itertools.count()


# --- results ------------------------------------------------------------------------------


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
        at each root, ``(batch, n)`` (``None`` for value-only evaluations).
    upper_at_input
        The upper function's result at :math:`\mathrm{block}(a)` (the next layer of the
        chain at the real input), or ``None``.
    upper_at_roots
        The upper function's result at :math:`\mathrm{block}(r^{(j)})`, a batch of
        ``batch * n`` (row ``b * n + j``: sample ``b``, neuron ``j``), or ``None``.
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


# --- relevance functions ------------------------------------------------------------------


class RelevanceFn:
    """A relevance function: points entering layer ``start`` of ``model`` -> a result
    whose ``relevance`` has ``size`` columns.

    ``fn(a)`` evaluates the whole tree, ``fn.relevance(a)`` only the values.
    """

    model: Sequential
    start: int
    size: int
    name: str

    def evaluate(self, a: Array, *, mode: str = "tree") -> FullBackwardResult | OutputResult:
        """The result at ``a``; ``mode`` ``"tree"`` (all subtrees), ``"chain"`` (only the
        upper layers at the real input) or ``"values"`` (no subtrees)."""
        raise NotImplementedError

    def __call__(self, a: Array) -> FullBackwardResult | OutputResult:
        return self.evaluate(a)

    def relevance(self, a: Array) -> Array:
        """Only the relevance values at ``a``, ``(m, size)``."""
        return self.evaluate(a, mode="values").relevance


class OutputRelevanceFn(RelevanceFn):
    """The explained output as a relevance function of the network output:
    :math:`y \\mapsto y_c`, ``(m, outputs) -> (m, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> import relprop as rp
    >>> fn = OutputRelevanceFn(rp.dtd.MLP(2, 3, 4, 2, backend="numpy"), target=1)
    >>> fn.relevance(np.array([[0.5, 2.0]])).tolist()
    [[2.0]]
    """

    def __init__(self, model: Sequential, target: int) -> None:
        self.model = model
        self.start = len(model.layers)
        self.target = _check_target(model, target)
        self.size = 1
        self.name = "output"

    def __repr__(self) -> str:
        return f"OutputRelevanceFn(target={self.target})"

    def evaluate(self, a: Array, *, mode: str = "tree") -> OutputResult:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
        return OutputResult(self.start, self.name, a, a[:, self.target:self.target + 1],
                            self.target)


class FullBackwardFn(RelevanceFn):
    r"""Full-backward DTD of dense layer ``start``: :math:`a \mapsto D(a)` (module
    docstring), decomposing the relevance the function ``upper`` computes for the
    layer's output.

    Parameters
    ----------
    model
        A network of Dense and ReLU layers.
    start
        Index in ``model.layers`` of a Dense layer.
    upper
        The relevance function of the next dense layer's input (or the
        :class:`OutputRelevanceFn`, for the last dense layer).
    root_finder
        Finds the roots of the upper neurons' relevance (:mod:`relprop.dtd.finders`).
    """

    def __init__(self, model: Sequential, start: int, upper: RelevanceFn,
                 root_finder: RootFinder) -> None:
        _check_model(model)
        layer = model.layers[start]
        if not isinstance(layer, Dense):
            raise TypeError(f"FullBackwardFn needs a Dense layer at {start}; got {layer!r}.")
        if not start < upper.start:
            raise ValueError("the upper relevance function must start above this layer.")
        if not isinstance(root_finder, RootFinder):
            raise TypeError(f"root_finder must be a RootFinder; got {type(root_finder).__name__}.")
        self.model = model
        self.start = start
        self.upper = upper
        self.root_finder = root_finder
        self.size = layer.in_features
        self.name = model.names[start]
        if isinstance(upper, OutputRelevanceFn):
            self.neurons: tuple[int, ...] = (upper.target,)
        else:
            self.neurons = tuple(range(upper.size))
        self.token = ("full_backward", next(_TOKENS))
        self.progress: Any = None

    def __repr__(self) -> str:
        return (f"FullBackwardFn(layer={self.name!r}, upper={self.upper.name!r}, "
                f"root_finder={self.root_finder!r})")

    def _block(self, a: Array, xp: ModuleType) -> list[Array]:
        """The inputs of the block's layers, then its output."""
        activations = [a]
        for layer in self.model.layers[self.start:self.upper.start]:
            activations.append(layer.forward(activations[-1], xp))
        return activations

    def _block_vjp(self, activations: list[Array], v: Array, xp: ModuleType) -> Array:
        layers = self.model.layers[self.start:self.upper.start]
        for layer, point in zip(reversed(layers), reversed(activations[:-1]), strict=True):
            v = layer.vjp(point, v, xp)
        return v

    def upper_target(self) -> int:
        """The explained output neuron (from the top of the chain)."""
        fn: RelevanceFn = self
        while isinstance(fn, FullBackwardFn):
            fn = fn.upper
        assert isinstance(fn, OutputRelevanceFn)
        return fn.target

    def region_affine(self) -> bool:
        """Whether this function is affine on every local linear region (its finder and
        those above cache roots by region): then its values are memoised per region as
        ``relevance = slopes * a - offset``."""
        fn: RelevanceFn = self
        while isinstance(fn, FullBackwardFn):
            if not fn.root_finder.use_cache:
                return False
            fn = fn.upper
        return True

    def _memoised(self, a: Array, xp: ModuleType) -> _Values | None:
        """The values from the per-region memo, if every input's region has one."""
        keys = [(self.token, self.start, key)
                for key in region_keys(self.model, a, self.start)]
        unique = list(dict.fromkeys(keys))
        entries = [self.root_finder._cache.get(key) for key in unique]
        if any(entry is None or "affine" not in entry.extra for entry in entries):
            return None
        self.root_finder._hits += len(keys)  # inputs served from the cache
        slot = {key: position for position, key in enumerate(unique)}
        index = [slot[key] for key in keys]
        slopes = gather([e.extra["affine"][0] for e in entries if e], index, xp)
        offset = gather([e.extra["affine"][1] for e in entries if e], index, xp)
        return _Values(a * slopes - offset, slopes)

    def evaluate(self, a: Array, *, mode: str = "tree") -> Any:
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
        xp = self.model.namespace(a=a)
        if len(a.shape) != 2 or a.shape[1] != self.size:
            raise ValueError(
                f"{self.name} expects input of shape (batch, {self.size}); got {tuple(a.shape)}."
            )
        affine = self.region_affine()
        if mode == "values" and affine:
            memo = self._memoised(a, xp)
            if memo is not None:
                return memo
        batch = a.shape[0]
        n = len(self.neurons)
        recorded = mode != "values"
        upper_input = self.upper.evaluate(self._block(a, xp)[-1],
                                          mode="chain" if recorded else "values")
        upper_relevance = upper_input.relevance  # (batch, n)

        def relevance_fn(points: Array) -> Array:
            return self.upper.relevance(self._block(points, xp)[-1])

        found = self.root_finder.find(
            relevance_fn, a, model=self.model, start=self.start, neurons=self.neurons,
            relevance_at_input=upper_relevance, cache_key=self.token,
        )
        roots = found.root  # (batch, n, features)
        flat = xp.reshape(roots, (batch * n, self.size))
        activations = self._block(flat, xp)
        upper_roots = self.upper.evaluate(activations[-1],
                                          mode="tree" if mode == "tree" else "values")
        root_relevance = _diagonal(xp.reshape(upper_roots.relevance, (batch, n, n)), n, xp)
        select = asarray(np.tile(np.eye(n), (batch, 1)), dtype=a.dtype,
                         backend=backend_name(xp), **placement(a, xp))  # row b n + j: e_j
        cotangent = upper_roots.jacobian_rows(select, xp)
        gradients = xp.reshape(self._block_vjp(activations, cotangent, xp),
                               (batch, n, self.size))
        contributions = gradients * (xp.expand_dims(a, axis=1) - roots)
        relevance = xp.sum(contributions, axis=1)
        slopes = xp.sum(gradients, axis=1)
        if affine and found.regions is not None:
            # D(a) = slopes * a - offset on the region: memoise it per region
            offset = xp.sum(gradients * roots, axis=1)
            first: dict[Any, int] = {}
            for row, key in enumerate(found.regions):
                first.setdefault(key, row)
            for key, row in first.items():
                entry = self.root_finder._cache[key]
                rows = slice(row, row + 1)
                entry.extra.setdefault("affine", (slopes[rows, ...], offset[rows, ...]))
        if mode == "values":
            return _Values(relevance, slopes)
        result = FullBackwardResult(
            layer=self.start,
            name=self.name,
            input=a,
            relevance=relevance,
            upper_relevance=upper_relevance,
            roots=roots,
            root_relevance=root_relevance,
            gradients=gradients,
            contributions=contributions,
            slopes=slopes,
            found=found.found,
            same_region=found.same_region,
            cache_hit=found.cache_hit,
            neurons=self.neurons,
            output_at_input=_explained(upper_input),
            upper_at_input=upper_input,
        )
        if mode == "tree":
            result.upper_at_roots = upper_roots
            out_roots = _explained(upper_roots)
            if self.progress is not None:
                self.progress.update(batch)
        else:  # no upper results at the roots: run the network from here
            out_roots = activations[-1]
            for layer in self.model.layers[self.upper.start:]:
                out_roots = layer.forward(out_roots, xp)
            target = self.upper_target()
            out_roots = out_roots[:, target]
        result.output_at_root = xp.reshape(out_roots, (batch, n))
        return result


@dataclass
class _Values:
    """Value-only result of a :class:`FullBackwardFn` (no tree)."""

    relevance: Array
    slopes: Array

    def jacobian_rows(self, weights: Array, xp: ModuleType) -> Array:
        return weights * self.slopes


def _explained(node: Any) -> Array | None:
    """The explained output at a node's inputs, from the top of its chain, ``(batch,)``."""
    while isinstance(node, FullBackwardResult):
        node = node.upper_at_input
    if isinstance(node, OutputResult):
        return node.relevance[:, 0]
    return None


# --- builders -----------------------------------------------------------------------------

Builder = Callable[[int, RelevanceFn], RelevanceFn]


def _check_model(model: object) -> Sequential:
    if not isinstance(model, Sequential):
        raise TypeError(f"model must be an rp.Sequential; got {type(model).__name__}.")
    for index, layer in enumerate(model.layers):
        if not isinstance(layer, (Dense, ReLU, LeakyReLU, Identity, Dropout)):
            raise TypeError(
                f"full-backward DTD explains piecewise-linear networks of Dense and (leaky) "
                f"ReLU layers; layer {index} ({model.names[index]!r}) is {layer!r}."
            )
    if not isinstance(model.layers[0], Dense):
        raise TypeError("full-backward DTD needs a model whose first layer is Dense.")
    return model


def _check_target(model: Sequential, target: object) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be an int (the explained output); got {target!r}.")
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    n_out = dense[-1].out_features if dense else 0
    if not 0 <= int(target) < n_out:
        raise IndexError(f"target={target} is out of range for a model with {n_out} outputs.")
    return int(target)


def full_backward_builder(model: Sequential, root_finder: RootFinder) -> Builder:
    """A builder for :func:`get_decompose_relevance_fns`: ``(start, upper) ->``
    :class:`FullBackwardFn` with ``root_finder``."""

    def build(start: int, upper: RelevanceFn) -> RelevanceFn:
        return FullBackwardFn(model, start, upper, root_finder)

    return build


def get_decompose_relevance_fns(
    model: Sequential, target: int = 0, builder: Builder | None = None
) -> list[RelevanceFn]:
    r"""One relevance function per layer, top-down: the explained output, then one per
    dense layer from the last to the first.

    ``fns[0]`` is the :class:`OutputRelevanceFn`; ``fns[k]`` (k >= 1) takes the input of
    the k-th dense layer from the top and returns the decomposition of its relevance, so
    ``fns[-1](x)`` explains the network input and ``fns[k](hidden)`` any hidden layer.

    Parameters
    ----------
    model
        A network of Dense and ReLU layers starting with a Dense layer.
    target
        The explained output neuron.
    builder
        ``builder(start, upper) -> RelevanceFn`` for the dense layer at ``start`` given
        the function above it; default :func:`full_backward_builder` with an
        :class:`~relprop.dtd.InterpolationRootFinder`.

    Examples
    --------
    >>> import relprop as rp
    >>> model = rp.dtd.MLP(3, 10, 10, 2, seed=5, backend="numpy")
    >>> fns = get_decompose_relevance_fns(model, 0)
    >>> [fn.name for fn in fns]
    ['output', 'linear2', 'linear1', 'linear0']
    """
    _check_model(model)
    if builder is None:
        builder = full_backward_builder(model, InterpolationRootFinder())
    fns: list[RelevanceFn] = [OutputRelevanceFn(model, target)]
    for start in reversed(range(len(model.layers))):
        if isinstance(model.layers[start], Dense):
            fns.append(builder(start, fns[-1]))
    return fns


def _tree_size(fns: list[RelevanceFn], batch: int) -> int:
    """Nodes x neurons of a full tree: sum over layers of batch * prod(widths above)."""
    total, width = 0, batch
    for fn in reversed(fns[1:]):
        n = len(fn.neurons) if isinstance(fn, FullBackwardFn) else fn.size
        total += width * n
        width *= n
    return total


def full_backward(
    model: Sequential,
    x: Array,
    target: int = 0,
    root_finder: RootFinder | None = None,
    *,
    progress: bool | None = False,
    max_points: int = 100_000,
) -> FullBackwardResult:
    r"""Full-backward DTD of the explained output ``target`` at the inputs ``x``.

    Builds :func:`get_decompose_relevance_fns` with ``root_finder`` and evaluates the
    lowest one at ``x`` (module docstring for the formulas, gradients and cost).

    Parameters
    ----------
    model
        A network of Dense and ReLU layers starting with a Dense layer.
    x
        Inputs ``(batch, in_features)``.
    target
        The explained output neuron; its initial relevance is its value.
    root_finder
        Default :class:`~relprop.dtd.InterpolationRootFinder` (region cache on).
    progress
        A tqdm progress bar over the tree's nodes: ``True`` (needs tqdm,
        ``relprop[progress]``), ``None`` only on a terminal, ``False`` (default) silent.
    max_points
        Refuse trees with more node-neuron pairs than this (the tree grows as the
        product of the layer widths).

    Returns
    -------
    FullBackwardResult
        The tree; ``.relevance`` is the input relevance, ``.chain()`` the relevance of
        every layer at ``x``, ``.collect()`` a table of every node.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.dtd.MLP(3, 10, 10, 2, seed=5, backend="numpy")
    >>> x = rp.dtd.sample_inputs(model, 1, threshold=0.5, output=0)
    >>> finder = rp.dtd.InterpolationRootFinder(n_rays=20, enforce_non_negative=True)
    >>> tree = rp.dtd.full_backward(model, x, target=0, root_finder=finder)
    >>> tree.relevance.shape, len(tree.collect())
    ((1, 10), 231)
    >>> total = tree.relevance.sum() + sum(
    ...     node.unresolved.sum() for node in tree.chain()[:-1])  # nothing is hidden
    >>> bool(np.isclose(total, model(x)[0, 0]))
    True
    """
    _check_model(model)
    xp = model.namespace(x=x)
    check_input(x, xp, model.named_params())
    if len(x.shape) != 2:
        raise ValueError(f"x must have shape (batch, features); got {tuple(x.shape)}.")
    if root_finder is None:
        root_finder = InterpolationRootFinder()
    fns = get_decompose_relevance_fns(model, target,
                                      full_backward_builder(model, root_finder))
    size = _tree_size(fns, x.shape[0])
    if size > max_points:
        raise ValueError(
            f"the full-backward tree would have {size} node-neuron pairs (> max_points="
            f"{max_points}): it grows as the product of the layer widths. Explain fewer "
            "inputs, a smaller network, or raise max_points."
        )
    bar = progress_bar(progress, x.shape[0] * _tree_nodes(fns), "full-backward DTD")
    for fn in fns[1:]:
        if isinstance(fn, FullBackwardFn):
            fn.progress = bar
    try:
        result = fns[-1].evaluate(x, mode="tree")
    finally:
        bar.close()
        for fn in fns[1:]:
            if isinstance(fn, FullBackwardFn):
                fn.progress = None
    assert isinstance(result, FullBackwardResult)
    return result


def _tree_nodes(fns: list[RelevanceFn]) -> int:
    """Tree-mode evaluations per input (the progress bar's total)."""
    total, width = 0, 1
    for fn in reversed(fns[1:]):
        total += width
        width *= len(fn.neurons) if isinstance(fn, FullBackwardFn) else 1
    return total
