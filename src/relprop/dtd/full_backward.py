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

computed exactly by :func:`relprop.gradient` of the block (the model slice
``model[k:k']``, up to the next dense layer) with that cotangent: the layers' exact
vector-Jacobian products, no autodiff and no finite differences (the same numbers on every
backend, up to rounding). With region caching
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
below it, each with a row per upper neuron: for
``MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2)``, 10 rows at the
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

Evaluation. A relevance function (:class:`RelevanceFn`) has one method per result, each
with a fixed return type: ``fn.tree(a)`` (also ``fn(a)``) the whole tree, a
:class:`~relprop.dtd.tree.FullBackwardResult` with the upper results at the input and at
every root; ``fn.chain(a)`` the same node with the upper results at the input only;
``fn.values(a)`` a :class:`~relprop.dtd.tree.RelevanceValues` (no subtrees: what the
root searches evaluate); ``fn.relevance(a)`` only the array. The result types and their
exports (tables, pandas, networkx, DOT) are in :mod:`relprop.dtd.tree`.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from relprop._placement import placement
from relprop._progress import progress_bar
from relprop._xp import Array
from relprop.dtd._common import check_dense_network, check_points, diagonal, gather
from relprop.dtd.finders import InterpolationRootFinder, RootFinder, RootResult
from relprop.dtd.tree import FullBackwardResult, OutputResult, RelevanceValues, explained_output
from relprop.layers import Dense
from relprop.lrp import gradient
from relprop.model import Sequential

__all__ = [
    "FullBackwardFn",
    "FullBackwardResult",
    "OutputRelevanceFn",
    "OutputResult",
    "RelevanceFn",
    "RelevanceValues",
    "full_backward",
    "full_backward_builder",
    "get_decompose_relevance_fns",
]

_TOKENS = itertools.count()
_MODES = ("tree", "chain", "values")

Upper = FullBackwardResult | OutputResult | RelevanceValues
"""What the layer below reads of an upper function's result: ``relevance`` and
``jacobian_rows``."""


# --- relevance functions ------------------------------------------------------------------


class RelevanceFn:
    """A relevance function: points entering layer ``start`` of ``model`` -> a result
    whose ``relevance`` has ``size`` columns.

    One method per result, each with its own return type: :meth:`tree` (also ``fn(a)``),
    :meth:`chain`, :meth:`values` and :meth:`relevance`. Each checks its input as
    ``rp.lrp`` does (library, dtype, finite values) and that it is ``(batch, size)``; the
    recursion to the upper functions passes the namespace on without checking again.
    """

    model: Sequential
    start: int
    size: int
    name: str

    def tree(self, a: Array) -> FullBackwardResult | OutputResult:
        """The result at ``a`` with every subtree: the upper results at the real input
        and at every root, up to the output."""
        return self._tree(a, self._namespace(a))

    def chain(self, a: Array) -> FullBackwardResult | OutputResult:
        """The result at ``a`` with the upper results at the real input only (the chain
        of layers up to the output, no subtrees at the roots)."""
        return self._chain(a, self._namespace(a))

    def values(self, a: Array) -> RelevanceValues:
        """The relevance at ``a`` and its slopes, no subtrees (what root searches
        evaluate)."""
        return self._values(a, self._namespace(a))

    def relevance(self, a: Array) -> Array:
        """Only the relevance values at ``a``, ``(m, size)``."""
        return self.values(a).relevance

    def __call__(self, a: Array) -> FullBackwardResult | OutputResult:
        return self.tree(a)

    def evaluate(self, a: Array, *, mode: str | None = None) -> Any:
        """:meth:`tree`; ``mode=`` (``"tree"``, ``"chain"``, ``"values"``) is deprecated:
        call :meth:`tree`, :meth:`chain` or :meth:`values`, which each return one type."""
        if mode is None:
            return self.tree(a)
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}; got {mode!r}.")
        warnings.warn(
            f"fn.evaluate(a, mode={mode!r}) is deprecated; call fn.{mode}(a).",
            DeprecationWarning,
            stacklevel=2,
        )
        return {"tree": self.tree, "chain": self.chain, "values": self.values}[mode](a)

    def _namespace(self, a: Array) -> ModuleType:
        """The namespace of ``a`` and the parameters, after checking ``a``."""
        raise NotImplementedError

    def _tree(self, a: Array, xp: ModuleType) -> FullBackwardResult | OutputResult:
        raise NotImplementedError

    def _chain(self, a: Array, xp: ModuleType) -> FullBackwardResult | OutputResult:
        raise NotImplementedError

    def _values(self, a: Array, xp: ModuleType) -> RelevanceValues:
        raise NotImplementedError


class OutputRelevanceFn(RelevanceFn):
    """The explained output as a relevance function of the network output:
    :math:`y \\mapsto y_c`, ``(m, outputs) -> (m, 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> import relprop as rp
    >>> model = rp.dtd.MLP(n_layers=2, input_size=3, hidden_size=4, output_size=2,
    ...                    backend="numpy")
    >>> fn = OutputRelevanceFn(model, target=1)
    >>> fn.relevance(np.array([[0.5, 2.0]])).tolist()
    [[2.0]]
    """

    def __init__(self, model: object, target: int) -> None:
        self.model = check_dense_network(model, "full-backward DTD")
        self.start = len(self.model.layers)
        self.target = _check_target(self.model, target)
        self.size = 1
        self.name = "output"

    def __repr__(self) -> str:
        return f"OutputRelevanceFn(target={self.target})"

    def _namespace(self, a: Array) -> ModuleType:
        xp = check_points(self.model, a, "a")
        if a.shape[1] <= self.target:
            raise ValueError(f"the output has {a.shape[1]} columns; the target is {self.target}.")
        return xp

    def _tree(self, a: Array, xp: ModuleType) -> OutputResult:
        return OutputResult(self.start, self.name, a, a[:, self.target:self.target + 1],
                            self.target)

    _chain = _tree

    def _values(self, a: Array, xp: ModuleType) -> RelevanceValues:
        columns = xp.arange(a.shape[1], **placement(a, xp))
        onehot = xp.astype(columns == self.target, a.dtype)
        return RelevanceValues(a[:, self.target:self.target + 1],
                               xp.expand_dims(onehot, axis=0))


@dataclass
class _Parts:
    """What one decomposition of a :class:`FullBackwardFn` computed."""

    upper_input: FullBackwardResult | OutputResult | RelevanceValues
    found: RootResult
    root_relevance: Array
    gradients: Array
    contributions: Array
    relevance: Array
    slopes: Array
    block_output: Array  # the block at the roots, (batch * n, ...)
    upper_roots: FullBackwardResult | OutputResult | RelevanceValues


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

    def __init__(self, model: object, start: int, upper: RelevanceFn,
                 root_finder: RootFinder) -> None:
        chain = check_dense_network(model, "full-backward DTD")
        layer = chain.layers[start]
        if not isinstance(layer, Dense):
            raise TypeError(f"FullBackwardFn needs a Dense layer at {start}; got {layer!r}.")
        if not start < upper.start:
            raise ValueError("the upper relevance function must start above this layer.")
        if not isinstance(root_finder, RootFinder):
            raise TypeError(f"root_finder must be a RootFinder; got {type(root_finder).__name__}.")
        self.model = chain
        self.start = start
        self.upper = upper
        self.root_finder = root_finder
        self.size = layer.in_features
        self.name = chain.names[start]
        # the core's model slices: this layer's block, and the rest of the network
        self.block = chain[start:upper.start]
        self.rest = chain[upper.start:] if upper.start < len(chain) else None
        if isinstance(upper, OutputRelevanceFn):
            self.neurons: tuple[int, ...] = (upper.target,)
        else:
            self.neurons = tuple(range(upper.size))
        self.token = ("full_backward", next(_TOKENS))
        self.progress: Any = None

    def __repr__(self) -> str:
        return (f"FullBackwardFn(layer={self.name!r}, upper={self.upper.name!r}, "
                f"root_finder={self.root_finder!r})")

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

    def _namespace(self, a: Array) -> ModuleType:
        xp = check_points(self.model, a, "a")
        if a.shape[1] != self.size:
            raise ValueError(
                f"{self.name} expects input of shape (batch, {self.size}); got {tuple(a.shape)}."
            )
        return xp

    def _memoised(self, a: Array, xp: ModuleType) -> RelevanceValues | None:
        """The values from the per-region memo, if every input's region has one."""
        cache = self.root_finder.cache
        keys = self.root_finder.cache_keys(self.model, a, self.start, self.token, xp)
        unique = list(dict.fromkeys(keys))
        entries = [cache.get(key) for key in unique]
        affine = [None if entry is None else entry.extra.get("affine") for entry in entries]
        if any(pair is None for pair in affine):
            return None
        cache.record(hits=len(keys))  # every input served from the cache
        slot = {key: position for position, key in enumerate(unique)}
        index = [slot[key] for key in keys]
        slopes = gather([pair[0] for pair in affine if pair is not None], index, xp)
        offset = gather([pair[1] for pair in affine if pair is not None], index, xp)
        return RelevanceValues(a * slopes - offset, slopes)

    def _decompose(
        self,
        a: Array,
        xp: ModuleType,
        at_input: Callable[[Array, ModuleType], Upper],
        at_roots: Callable[[Array, ModuleType], Upper],
    ) -> _Parts:
        """The decomposition at ``a``, with the upper function evaluated by ``at_input``
        at the block's output and by ``at_roots`` at the block's output at every root."""
        batch = a.shape[0]
        n = len(self.neurons)
        upper_input = at_input(self.block.forward(a, xp), xp)

        def relevance_fn(points: Array) -> Array:
            return self.upper._values(self.block.forward(points, xp), xp).relevance

        found = self.root_finder.find(
            relevance_fn, a, model=self.model, start=self.start, neurons=self.neurons,
            relevance_at_input=upper_input.relevance, cache_key=self.token,
        )
        roots = found.root  # (batch, n, features)
        flat = xp.reshape(roots, (batch * n, self.size))
        block_output = self.block.forward(flat, xp)
        upper_roots = at_roots(block_output, xp)
        root_relevance = diagonal(xp.reshape(upper_roots.relevance, (batch, n, n)), n, xp)
        # row b n + j of the cotangent: e_j times the upper function's slopes at the root
        eye = xp.eye(n, dtype=a.dtype, **placement(a, xp))
        select = xp.reshape(xp.broadcast_to(xp.expand_dims(eye, axis=0), (batch, n, n)),
                            (batch * n, n))
        cotangent = upper_roots.jacobian_rows(select, xp)
        gradients = xp.reshape(gradient(self.block, flat, cotangent), (batch, n, self.size))
        contributions = gradients * (xp.expand_dims(a, axis=1) - roots)
        relevance = xp.sum(contributions, axis=1)
        slopes = xp.sum(gradients, axis=1)
        if self.region_affine() and found.regions is not None:
            # D(a) = slopes * a - offset on the region: memoised with the region's roots
            offset = xp.sum(gradients * roots, axis=1)
            first: dict[Any, int] = {}
            for row, key in enumerate(found.regions):
                first.setdefault(key, row)
            for key, row in first.items():
                entry = self.root_finder.cache.get(key)
                if entry is not None:
                    rows = slice(row, row + 1)
                    entry.extra.setdefault("affine", (slopes[rows, ...], offset[rows, ...]))
        return _Parts(upper_input, found, root_relevance, gradients, contributions,
                      relevance, slopes, block_output, upper_roots)

    def _result(self, a: Array, parts: _Parts) -> FullBackwardResult:
        upper_input = parts.upper_input
        assert isinstance(upper_input, (FullBackwardResult, OutputResult))
        return FullBackwardResult(
            layer=self.start,
            name=self.name,
            input=a,
            relevance=parts.relevance,
            upper_relevance=upper_input.relevance,
            roots=parts.found.root,
            root_relevance=parts.root_relevance,
            gradients=parts.gradients,
            contributions=parts.contributions,
            slopes=parts.slopes,
            found=parts.found.found,
            same_region=parts.found.same_region,
            cache_hit=parts.found.cache_hit,
            neurons=self.neurons,
            output_at_input=explained_output(upper_input),
            upper_at_input=upper_input,
        )

    def _tree(self, a: Array, xp: ModuleType) -> FullBackwardResult:
        parts = self._decompose(a, xp, self.upper._chain, self.upper._tree)
        result = self._result(a, parts)
        upper_roots = parts.upper_roots
        assert isinstance(upper_roots, (FullBackwardResult, OutputResult))
        result.upper_at_roots = upper_roots
        out_roots = explained_output(upper_roots)
        assert out_roots is not None
        result.output_at_root = xp.reshape(out_roots, (a.shape[0], len(self.neurons)))
        if self.progress is not None:
            self.progress.update(a.shape[0])
        return result

    def _chain(self, a: Array, xp: ModuleType) -> FullBackwardResult:
        parts = self._decompose(a, xp, self.upper._chain, self.upper._values)
        result = self._result(a, parts)
        # no upper results at the roots: run the rest of the network from the block
        out = parts.block_output if self.rest is None else self.rest.forward(
            parts.block_output, xp)
        out_roots = out[:, self.upper_target()]
        result.output_at_root = xp.reshape(out_roots, (a.shape[0], len(self.neurons)))
        return result

    def _values(self, a: Array, xp: ModuleType) -> RelevanceValues:
        if self.region_affine():
            memo = self._memoised(a, xp)
            if memo is not None:
                return memo
        parts = self._decompose(a, xp, self.upper._values, self.upper._values)
        return RelevanceValues(parts.relevance, parts.slopes)


# --- builders -----------------------------------------------------------------------------

Builder = Callable[[int, RelevanceFn], RelevanceFn]


def _check_target(model: Sequential, target: object) -> int:
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be an int (the explained output); got {target!r}.")
    dense = [layer for layer in model.layers if isinstance(layer, Dense)]
    n_out = dense[-1].out_features if dense else 0
    if not 0 <= int(target) < n_out:
        raise IndexError(f"target={target} is out of range for a model with {n_out} outputs.")
    return int(target)


def full_backward_builder(model: object, root_finder: RootFinder) -> Builder:
    """A builder for :func:`get_decompose_relevance_fns`: ``(start, upper) ->``
    :class:`FullBackwardFn` with ``root_finder``."""
    chain = check_dense_network(model, "full-backward DTD")

    def build(start: int, upper: RelevanceFn) -> RelevanceFn:
        return FullBackwardFn(chain, start, upper, root_finder)

    return build


def get_decompose_relevance_fns(
    model: object, target: int = 0, builder: Builder | None = None
) -> list[RelevanceFn]:
    r"""One relevance function per layer, top-down: the explained output, then one per
    dense layer from the last to the first.

    ``fns[0]`` is the :class:`OutputRelevanceFn`; ``fns[k]`` (k >= 1) takes the input of
    the k-th dense layer from the top and returns the decomposition of its relevance, so
    ``fns[-1](x)`` explains the network input and ``fns[k](hidden)`` any hidden layer.

    Parameters
    ----------
    model
        A network of Dense and ReLU layers starting with a Dense layer (or a torch module
        of them).
    target
        The explained output neuron.
    builder
        ``builder(start, upper) -> RelevanceFn`` for the dense layer at ``start`` given
        the function above it; default :func:`full_backward_builder` with an
        :class:`~relprop.dtd.InterpolationRootFinder`.

    Examples
    --------
    >>> import relprop as rp
    >>> model = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2,
    ...                    seed=5, backend="numpy")
    >>> fns = get_decompose_relevance_fns(model, 0)
    >>> [fn.name for fn in fns]
    ['output', 'linear2', 'linear1', 'linear0']
    """
    chain = check_dense_network(model, "full-backward DTD")
    if builder is None:
        builder = full_backward_builder(chain, InterpolationRootFinder())
    fns: list[RelevanceFn] = [OutputRelevanceFn(chain, target)]
    for start in reversed(range(len(chain.layers))):
        if isinstance(chain.layers[start], Dense):
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
    model: object,
    x: Array,
    target: int = 0,
    root_finder: RootFinder | None = None,
    *,
    progress: bool | None = False,
    max_points: int = 100_000,
) -> FullBackwardResult:
    r"""Full-backward DTD of the explained output ``target`` at the inputs ``x``.

    Builds :func:`get_decompose_relevance_fns` with ``root_finder`` and evaluates the
    lowest one's :meth:`~RelevanceFn.tree` at ``x`` (module docstring for the formulas,
    gradients and cost).

    Parameters
    ----------
    model
        A network of Dense and ReLU layers starting with a Dense layer (or a torch module
        of them, converted as ``rp.lrp`` converts it).
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
    >>> model = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2,
    ...                    seed=5, backend="numpy")
    >>> x = rp.dtd.sample_inputs(model, 1, threshold=0.5, output=0)
    >>> finder = rp.dtd.InterpolationRootFinder(n_rays=20, enforce_nonnegative=True)
    >>> tree = rp.dtd.full_backward(model, x, target=0, root_finder=finder)
    >>> tree.relevance.shape, len(tree.collect())
    ((1, 10), 231)
    >>> total = tree.relevance.sum() + sum(
    ...     node.unresolved.sum() for node in tree.chain()[:-1])  # nothing is hidden
    >>> bool(np.isclose(total, model(x)[0, 0]))
    True
    """
    chain = check_dense_network(model, "full-backward DTD", x=x)
    check_points(chain, x)
    if root_finder is None:
        root_finder = InterpolationRootFinder()
    fns = get_decompose_relevance_fns(chain, target,
                                      full_backward_builder(chain, root_finder))
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
        result = fns[-1].tree(x)
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
