r"""Root finders for Deep Taylor Decomposition: closed form, interpolation, random walk.

A *relevance function* maps points :math:`a` entering a layer, ``(m, features)``, to the
relevance of ``n`` neurons, ``(m, n)`` (a function returning ``(m,)`` counts as one
neuron). A root finder looks, for every input :math:`x` and neuron :math:`j`, for a root
point :math:`r^{(j)}` with :math:`R_j(r^{(j)}) \approx 0`:

- :class:`ClosedFormRootFinder`: the closed-form roots of :func:`~relprop.dtd.root_point`
  (rules ``"0"``, ``"x"``, ``"z+"``, ``"w2"``, ``"gamma"``, ``"zB"``) with the relevance
  :math:`R_j(x)` as the step numerator; they need not lie in :math:`x`'s local linear
  region.
- :class:`InterpolationRootFinder` and :class:`MetropolisHastingsRootFinder`: candidates
  :math:`c` inside :math:`x`'s local linear region (rays followed to the region's edge,
  :func:`~relprop.dtd.local_linear.sample_interpolation`, or a constrained random walk,
  :func:`~relprop.dtd.local_linear.sample_metropolis_hastings`), then, per neuron, the
  root on the segment from :math:`x` to a candidate where :math:`R_j` changes sign:

  .. math:: r^{(j)} = x + t\,(c - x), \qquad
            t = \frac{R_j(x)}{R_j(x) - R_j(c)} \in [0, 1],

  which is exact where :math:`R_j` is affine on the segment (for an affine :math:`R_j`,
  :math:`R_j(x) - R_j(c) = \nabla R_j \cdot (x - c)`); otherwise ``root_steps`` steps of
  regula falsi (Illinois variant) on the bracket follow. Among the candidates with a sign
  change the nearest root is taken. The region is convex, so the root is in it too. Where
  no candidate changes sign, the candidate (or :math:`x` itself) with the smallest
  :math:`|R_j|` is returned, flagged ``found=False``, and :math:`R_j` there is reported as
  unresolved.

Caching: with ``use_cache=True`` the roots found for an input are stored under its local
linear region (the activation pattern from the layer on, plus the relevance function's
identity) and returned for every later input of the same region; samples of one batch that
share a region share one search. A root of a function that is affine on the region is a
root for every point of the region, so this is exact for the piecewise-affine relevance
functions of :mod:`relprop.dtd.full_backward`, and it bounds the work of the full-backward
recursion by the number of regions visited. The cache is a public object,
``finder.cache`` (a :class:`RegionCache`: ``get``, ``put``, ``stats``); ``finder.cache_info()``
is ``finder.cache.stats()``, its hits and misses.

All finders are batched over inputs, neurons and candidates, written against the array
API (any backend), and draw random numbers from their own seeded
:class:`numpy.random.Generator`, so the same calls give the same roots on every backend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, NamedTuple

from relprop._placement import placement
from relprop._xp import Array, array_namespace
from relprop.dtd._common import (
    Seed,
    as_chain,
    check_points,
    diagonal,
    gather,
    generator,
    renamed_keyword,
)
from relprop.dtd.local_linear import (
    check_nonnegative,
    interpolate,
    pattern_keys,
    random_walk,
    region_test,
)
from relprop.dtd.network import pattern_fn
from relprop.dtd.roots import RULES, root_point
from relprop.layers import Dense
from relprop.model import Sequential

__all__ = [
    "CacheEntry",
    "CacheInfo",
    "ClosedFormRootFinder",
    "InterpolationRootFinder",
    "MetropolisHastingsRootFinder",
    "RegionCache",
    "RootFinder",
    "RootResult",
]

RelevanceFunction = Callable[[Array], Array]


Key = tuple[Hashable, int, bytes]
"""A cache key: the relevance function's identity, the layer, the region's key."""


@dataclass
class RootResult:
    """Root points of ``n`` neurons for a batch of inputs.

    Attributes
    ----------
    root
        ``(batch, n, features)``: row ``j`` is neuron ``j``'s root :math:`r^{(j)}`.
    input
        ``(batch, features)``: the inputs :math:`x`.
    relevance_at_input
        ``(batch, n)``: :math:`R_j(x)`.
    relevance_at_root
        ``(batch, n)``: :math:`R_j(r^{(j)})`, the zero-order term a decomposition at this
        root leaves unresolved (also :attr:`unresolved`).
    found
        ``(batch, n)`` booleans: a root was bracketed (a sign change of :math:`R_j`, or
        :math:`R_j(x) = 0`; closed form: the direction is not degenerate).
    same_region
        ``(batch, n)`` booleans: the root has the input's activation pattern.
    cache_hit
        ``(batch,)`` booleans: the roots came from the cache.
    neurons
        The layer's output neuron of each relevance column (closed form), or ``None``.
    regions
        The cache keys of the inputs' regions (``None`` without cache).
    """

    root: Array
    input: Array
    relevance_at_input: Array
    relevance_at_root: Array
    found: Array
    same_region: Array
    cache_hit: Array
    neurons: tuple[int, ...] | None = None
    regions: list[Key] | None = None

    @property
    def unresolved(self) -> Array:
        """:math:`R_j(r^{(j)})`, ``(batch, n)``."""
        return self.relevance_at_root


class CacheInfo(NamedTuple):
    """Root cache statistics: ``hits`` (inputs served from the cache, including those
    sharing a region with an earlier input of the same batch), ``misses`` (searches run,
    one per new region; without a cache one per call) and ``size`` (regions stored)."""

    hits: int
    misses: int
    size: int


@dataclass
class CacheEntry:
    """The roots of one region, for one relevance function and layer.

    Attributes
    ----------
    root, relevance_at_root, found, same_region
        As in :class:`RootResult`, for one input: ``(1, n, features)`` and ``(1, n)``.
    extra
        Data derived from these roots by their user, kept (and forgotten) with them:
        full-backward DTD memoises the affine coefficients of its relevance function on
        the region here (key ``"affine"``).
    """

    root: Array
    relevance_at_root: Array
    found: Array
    same_region: Array
    extra: dict[str, Any] = field(default_factory=dict)


class RegionCache:
    """Roots per local linear region: the cache of a :class:`RootFinder`.

    Keys are :data:`Key` tuples (``finder.cache_keys(...)`` makes them), values
    :class:`CacheEntry`. Lookups and stores do not count themselves: the finder counts
    what a call cost with :meth:`record` (an input served from the cache is a hit, a
    search for a new region a miss), and so does whoever serves inputs from the entries
    (full-backward DTD's memo).

    Examples
    --------
    >>> cache = RegionCache()
    >>> cache.get(("fn", 0, b"\\x01")) is None, cache.stats()
    (True, CacheInfo(hits=0, misses=0, size=0))
    """

    def __init__(self) -> None:
        self._entries: dict[Key, CacheEntry] = {}
        self._hits = 0
        self._misses = 0

    def get(self, key: Key) -> CacheEntry | None:
        """The entry stored under ``key``, or ``None``."""
        return self._entries.get(key)

    def put(self, key: Key, entry: CacheEntry) -> None:
        """Store ``entry`` under ``key`` (replacing what was there)."""
        self._entries[key] = entry

    def record(self, *, hits: int = 0, misses: int = 0) -> None:
        """Count ``hits`` inputs served from the cache and ``misses`` searches."""
        self._hits += int(hits)
        self._misses += int(misses)

    def stats(self) -> CacheInfo:
        """Hits, misses and size."""
        return CacheInfo(self._hits, self._misses, len(self._entries))

    def clear(self) -> None:
        """Forget every entry and reset the counters."""
        self._entries.clear()
        self._hits = 0
        self._misses = 0

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        hits, misses, size = self.stats()
        return f"RegionCache(size={size}, hits={hits}, misses={misses})"


def _as_columns(values: Array, m: int, xp: ModuleType) -> Array:
    """A relevance function's output as ``(m, n)``."""
    if len(values.shape) == 1:
        values = xp.reshape(values, (values.shape[0], 1))
    if len(values.shape) != 2 or values.shape[0] != m:
        raise ValueError(
            f"a relevance function must return (points,) or (points, neurons) for {m} points; "
            f"got shape {tuple(values.shape)}."
        )
    return values


def evaluate_at_roots(fn: RelevanceFunction, root: Array, xp: ModuleType) -> Array:
    """:math:`R_j(r^{(j)})` for roots ``(batch, n, features)``: one call of ``fn``."""
    batch, n, features = root.shape
    values = _as_columns(fn(xp.reshape(root, (batch * n, features))), batch * n, xp)
    if values.shape[1] != n:
        raise ValueError(f"the relevance function returns {values.shape[1]} neurons, not {n}.")
    return diagonal(xp.reshape(values, (batch, n, n)), n, xp)


class RootFinder:
    """Base class of root finders: caching, bookkeeping and :meth:`find`.

    Subclasses implement :meth:`_search`. Parameters common to all finders:

    Parameters
    ----------
    use_cache
        Store the roots found for an input under its local linear region and reuse them
        for later inputs of the same region (module docstring).
    progress
        Show tqdm progress bars: ``True`` (needs tqdm, ``relprop[progress]``; imported only
        then), ``None`` only on a terminal, ``False`` (default) silent.

    Attributes
    ----------
    cache
        The :class:`RegionCache` (it also counts the searches of a finder without
        caching, which stores nothing there).
    """

    def __init__(self, *, use_cache: bool = True, progress: bool | None = False) -> None:
        self.use_cache = bool(use_cache)
        self.progress = progress
        self.cache = RegionCache()
        self._owners: dict[int, object] = {}

    def cache_info(self) -> CacheInfo:
        """Hits, misses and size of the root cache (``self.cache.stats()``).

        Examples
        --------
        >>> InterpolationRootFinder().cache_info()
        CacheInfo(hits=0, misses=0, size=0)
        """
        return self.cache.stats()

    def clear_cache(self) -> None:
        """Forget every cached root and reset the counters."""
        self.cache.clear()
        self._owners.clear()

    def cache_keys(self, model: Sequential, x: Array, start: int, cache_key: Hashable,
                   xp: ModuleType) -> list[Key]:
        """The cache key of each input's region (``x`` entering layer ``start``) for the
        relevance function ``cache_key``."""
        regions = pattern_keys(pattern_fn(model, start), x, xp)
        return [(cache_key, start, region) for region in regions]

    def find(
        self,
        relevance_fn: RelevanceFunction,
        x: Array,
        *,
        model: object,
        start: int = 0,
        neurons: Sequence[int] | None = None,
        relevance_at_input: Array | None = None,
        cache_key: Hashable = None,
    ) -> RootResult:
        r"""Root points of every neuron of ``relevance_fn`` for every input in ``x``.

        Parameters
        ----------
        relevance_fn
            :math:`a \mapsto R(a)`, ``(m, features) -> (m, n)`` or ``(m,)``; it must treat
            the rows independently.
        x
            Inputs ``(batch, features)`` entering layer ``start`` of ``model``.
        model
            The network whose local linear regions (from layer ``start`` on) the roots
            are searched in (an :class:`~relprop.Sequential`, or a torch module).
        start
            The layer ``x`` enters.
        neurons
            Closed form only: the output neuron of layer ``start`` behind each relevance
            column (default all, in order).
        relevance_at_input
            :math:`R(x)` if already known, ``(batch, n)``.
        cache_key
            Identity of the relevance function for the cache (default: the function
            object itself, kept alive by the cache).

        Returns
        -------
        RootResult
        """
        chain = as_chain(model, x if start == 0 else None)
        xp = check_points(chain, x)
        batch = x.shape[0]
        r0 = relevance_fn(x) if relevance_at_input is None else relevance_at_input
        r0 = _as_columns(r0, batch, xp)
        neuron_ids = None if neurons is None else tuple(int(j) for j in neurons)
        if neuron_ids is not None and len(neuron_ids) != r0.shape[1]:
            raise ValueError(
                f"neurons names {len(neuron_ids)} neurons; the relevance function has "
                f"{r0.shape[1]}."
            )
        self._check(x, xp)
        if not self.use_cache:
            root, found, at_root = self._search(relevance_fn, x, r0, chain, start, neuron_ids)
            self.cache.record(misses=1)
            return RootResult(
                root=root,
                input=x,
                relevance_at_input=r0,
                relevance_at_root=at_root,
                found=found,
                same_region=region_test(chain, x, start, None, 0.0, xp)(root),
                cache_hit=xp.zeros((batch,), dtype=xp.bool, **placement(x, xp)),
                neurons=neuron_ids,
            )
        if cache_key is None:
            self._owners[id(relevance_fn)] = relevance_fn
            cache_key = id(relevance_fn)
        keys = self.cache_keys(chain, x, start, cache_key, xp)
        new: dict[Key, int] = {}  # a new region: the first row in it
        hit = []
        for row, key in enumerate(keys):
            known = key in self.cache
            hit.append(known)
            if not known and key not in new:
                new[key] = row
        if new:
            sub_x, sub_r0 = x, r0
            if list(new.values()) != list(range(batch)):
                rows = xp.asarray(list(new.values()), **placement(x, xp))
                sub_x, sub_r0 = xp.take(x, rows, axis=0), xp.take(r0, rows, axis=0)
            root, found, at_root = self._search(
                relevance_fn, sub_x, sub_r0, chain, start, neuron_ids
            )
            region = region_test(chain, sub_x, start, None, 0.0, xp)(root)
            for position, key in enumerate(new):
                cut = slice(position, position + 1)
                self.cache.put(key, CacheEntry(root[cut, ...], at_root[cut, ...],
                                               found[cut, ...], region[cut, ...]))
        self.cache.record(hits=batch - len(new), misses=len(new))
        unique = list(dict.fromkeys(keys))
        slot = {key: position for position, key in enumerate(unique)}
        index = [slot[key] for key in keys]
        entries = [self.cache.get(key) for key in unique]

        def table(name: str) -> Array:
            return gather([getattr(entry, name) for entry in entries], index, xp)

        return RootResult(
            root=table("root"),
            input=x,
            relevance_at_input=r0,
            relevance_at_root=table("relevance_at_root"),
            found=table("found"),
            same_region=table("same_region"),
            cache_hit=xp.asarray(hit, dtype=xp.bool, **placement(x, xp)),
            neurons=neuron_ids,
            regions=keys,
        )

    def _check(self, x: Array, xp: ModuleType) -> None:
        """Finder-specific checks of the inputs (before any search)."""

    def _search(
        self,
        relevance_fn: RelevanceFunction,
        x: Array,
        r0: Array,
        model: Sequential,
        start: int,
        neurons: tuple[int, ...] | None,
    ) -> tuple[Array, Array, Array]:
        """``(root (batch, n, features), found (batch, n), relevance at root (batch, n))``."""
        raise NotImplementedError


class ClosedFormRootFinder(RootFinder):
    r"""Closed-form roots of :func:`~relprop.dtd.root_point` along the rule's direction
    :math:`v^{(j)}`, in either root convention of :func:`~relprop.dtd.train_free`:

    - ``root_of="relevance"`` (default, the paper's): the root removes the relevance,
      :math:`r^{(j)} = x - R_j(x) / (v^{(j)} \cdot w_j)\, v^{(j)}`;
    - ``root_of="preactivation"`` (Montavon et al. 2017): the root of the neuron's
      pre-activation, :math:`r^{(j)} = x - z_j(x) / (v^{(j)} \cdot w_j)\, v^{(j)}`.

    The first is the root of :math:`R_j` exactly when :math:`R_j` falls with slope
    :math:`w_j` along :math:`v^{(j)}` (e.g. :math:`R_j = z_j`, the explained output); for
    other relevance functions :math:`R_j(r^{(j)})` is reported as unresolved. The roots
    depend on the input, not only on its region, so caching is off by default.

    Parameters
    ----------
    rule
        One of ``"0"``, ``"x"``, ``"z+"``, ``"w2"``, ``"gamma"``, ``"zB"``.
    root_of
        ``"relevance"`` or ``"preactivation"``, as above.
    gamma, low, high, eps
        Passed to :func:`~relprop.dtd.root_point`. The default ``gamma=1.0`` is DTD's; the
        LRP rule :class:`relprop.rules.Gamma` defaults to ``gamma=0.25`` (zennit's), so
        pass ``gamma=0.25`` to compare the two.
    use_cache, progress
        See :class:`RootFinder`.

    Examples
    --------
    >>> import relprop as rp
    >>> model = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2,
    ...                    seed=5, backend="numpy")
    >>> x = rp.dtd.sample_inputs(model, 2, threshold=0.5, output=0)
    >>> out = rp.dtd.output_fn(model, 0, start=4)
    >>> hidden = model[:4](x)
    >>> res = ClosedFormRootFinder(rule="z+").find(out, hidden, model=model, start=4,
    ...                                             neurons=[0])
    >>> res.root.shape, bool(abs(res.relevance_at_root).max() < 1e-12)
    ((2, 1, 10), True)
    """

    def __init__(
        self,
        rule: str = "z+",
        *,
        gamma: float = 1.0,
        low: Any = None,
        high: Any = None,
        eps: float = 1e-12,
        use_cache: bool = False,
        progress: bool | None = False,
        root_of: str = "relevance",
    ) -> None:
        if rule not in RULES:
            raise ValueError(f"unknown root-point rule {rule!r}; use one of {', '.join(RULES)}.")
        if root_of not in ("relevance", "preactivation"):
            raise ValueError(
                f"root_of must be 'relevance' or 'preactivation'; got {root_of!r}."
            )
        super().__init__(use_cache=use_cache, progress=progress)
        self.rule = rule
        self.root_of = root_of
        self.gamma = gamma
        self.low = low
        self.high = high
        self.eps = eps

    def __repr__(self) -> str:
        convention = "" if self.root_of == "relevance" else f", root_of={self.root_of!r}"
        return f"ClosedFormRootFinder(rule={self.rule!r}{convention})"

    def _search(
        self,
        relevance_fn: RelevanceFunction,
        x: Array,
        r0: Array,
        model: Sequential,
        start: int,
        neurons: tuple[int, ...] | None,
    ) -> tuple[Array, Array, Array]:
        xp = model.namespace(x=x)
        layer = model.layers[start]
        if not isinstance(layer, Dense):
            raise TypeError(
                f"ClosedFormRootFinder needs a Dense layer at index {start}; got {layer!r}."
            )
        n = r0.shape[1]
        if neurons is None:
            if n != layer.out_features:
                raise ValueError(
                    f"the relevance function has {n} neurons but {layer!r} has "
                    f"{layer.out_features}; pass neurons=[...] to say which they are."
                )
            neurons = tuple(range(n))
        for j in neurons:
            if not 0 <= j < layer.out_features:
                raise IndexError(f"neuron {j} is out of range for {layer!r}.")
        index = xp.asarray(list(neurons), **placement(x, xp))
        columns = xp.arange(layer.out_features, dtype=index.dtype, **placement(x, xp))
        select = xp.astype(xp.expand_dims(index, axis=1) == columns, x.dtype)  # (n, out)
        relevance = xp.matmul(r0, select)  # (batch, out): R_j in neuron j's column
        removed = relevance if self.root_of == "relevance" else None  # None: z_j's root
        points = root_point(x, layer, rule=self.rule, relevance=removed, gamma=self.gamma,
                            low=self.low, high=self.high, eps=self.eps)
        root = xp.take(points.root, index, axis=1)
        found = ~xp.take(points.degenerate, index, axis=1)
        return root, found, evaluate_at_roots(relevance_fn, root, xp)


class _SegmentRootFinder(RootFinder):
    """Roots on segments from the input to candidates of its local linear region."""

    def __init__(
        self,
        *,
        root_steps: int = 5,
        root_rtol: float | None = None,
        enforce_nonnegative: bool = False,
        use_cache: bool = True,
        seed: Seed = 0,
        progress: bool | None = False,
    ) -> None:
        if root_steps < 0:
            raise ValueError(f"root_steps must be >= 0; got {root_steps}.")
        super().__init__(use_cache=use_cache, progress=progress)
        self.root_steps = int(root_steps)
        self.root_rtol = None if root_rtol is None else float(root_rtol)
        self.enforce_nonnegative = bool(enforce_nonnegative)
        self.rng = generator(seed)

    @property
    def enforce_non_negative(self) -> bool:
        """Deprecated spelling of :attr:`enforce_nonnegative`."""
        return self.enforce_nonnegative

    def _check(self, x: Array, xp: ModuleType) -> None:
        if self.enforce_nonnegative:
            check_nonnegative(x, xp)

    def candidates(self, model: object, x: Array, start: int = 0) -> tuple[Array, Array]:
        """``(points (batch, m, features), valid (batch, m))`` inside x's region."""
        chain = as_chain(model, x if start == 0 else None)
        xp = check_points(chain, x)
        self._check(x, xp)
        return self._candidates(chain, x, start, xp)

    def _candidates(self, chain: Sequential, x: Array, start: int,
                    xp: ModuleType) -> tuple[Array, Array]:
        raise NotImplementedError

    def _search(
        self,
        relevance_fn: RelevanceFunction,
        x: Array,
        r0: Array,
        model: Sequential,
        start: int,
        neurons: tuple[int, ...] | None,
    ) -> tuple[Array, Array, Array]:
        points, valid = self._candidates(model, x, start, model.namespace(x=x))
        return solve_on_segments(relevance_fn, x, r0, points, valid,
                                 steps=self.root_steps, rtol=self.root_rtol)


def solve_on_segments(
    relevance_fn: RelevanceFunction,
    x: Array,
    r0: Array,
    points: Array,
    valid: Array,
    *,
    steps: int = 5,
    rtol: float | None = None,
) -> tuple[Array, Array, Array]:
    r"""Per input and neuron, the nearest root on the segments from ``x`` to candidates.

    See the module docstring for the formula. Returns ``(root (batch, n, features),
    found (batch, n), relevance at root (batch, n))``.
    """
    xp = array_namespace(x=x, points=points)
    batch, m, features = points.shape
    n = r0.shape[1]
    at_c = _as_columns(relevance_fn(xp.reshape(points, (batch * m, features))), batch * m, xp)
    if at_c.shape[1] != n:
        raise ValueError(f"the relevance function returns {at_c.shape[1]} neurons, not {n}.")
    at_c = xp.permute_dims(xp.reshape(at_c, (batch, m, n)), (0, 2, 1))  # (batch, n, m)
    r0_e = xp.expand_dims(r0, axis=-1)  # (batch, n, 1)
    valid_e = xp.expand_dims(valid, axis=1)  # (batch, 1, m)
    bracket = valid_e & (r0_e * at_c <= 0) & (at_c != r0_e)
    t = r0_e / xp.where(bracket, r0_e - at_c, 1.0)  # the secant root on each segment
    x_e = xp.expand_dims(x, axis=1)
    length = xp.expand_dims(xp.sqrt(xp.sum((points - x_e) ** 2, axis=-1)), axis=1)
    # one score: bracketed candidates by the root's distance, then the others by |R(c)|
    score = xp.where(bracket, t * length,
                     xp.where(valid_e, xp.max(length) + 1.0 + xp.abs(at_c), math.inf))
    choice = xp.argmin(score, axis=-1)  # (batch, n)
    has = xp.any(bracket, axis=-1)
    positions = xp.arange(m, dtype=choice.dtype, **placement(x, xp))
    onehot = xp.astype(xp.expand_dims(choice, axis=-1) == positions, x.dtype)  # (batch, n, m)
    direction = xp.matmul(onehot, points) - x_e  # (batch, n, features)
    f_hi = xp.sum(onehot * at_c, axis=-1)
    zero = r0 == 0
    stay = zero | ((xp.abs(r0) <= xp.abs(f_hi)) | ~xp.any(valid, axis=-1, keepdims=True))
    t = xp.where(has, xp.sum(onehot * t, axis=-1), xp.astype(~stay, x.dtype))
    found = has | zero

    def at(t_: Array) -> Array:
        return x_e + xp.expand_dims(t_, axis=-1) * direction

    root = at(t)
    value = evaluate_at_roots(relevance_fn, root, xp)
    if steps == 0:
        return root, found, value
    # regula falsi (Illinois) on the bracket [0, 1] of the segment where not yet converged
    if rtol is None:
        rtol = 100 * float(xp.finfo(x.dtype).eps)
    scale = rtol * (xp.abs(r0) + xp.abs(f_hi))
    active = has & ~zero & (xp.abs(value) > scale)
    if not bool(xp.any(active)):
        return root, found, value
    lo = xp.zeros_like(t)
    hi = xp.ones_like(t)
    f_lo = r0
    side = xp.zeros(t.shape, dtype=xp.int8, **placement(t, xp))
    for step in range(steps):
        if step:
            active = has & ~zero & (xp.abs(value) > scale)
            if not bool(xp.any(active)):
                break
        left = (value * f_lo) > 0  # the root is right of t: t replaces lo
        new_lo = active & left
        new_hi = active & ~left
        f_hi = xp.where(new_lo & (side == 1), 0.5 * f_hi, f_hi)
        f_lo = xp.where(new_hi & (side == -1), 0.5 * f_lo, f_lo)
        lo = xp.where(new_lo, t, lo)
        f_lo = xp.where(new_lo, value, f_lo)
        hi = xp.where(new_hi, t, hi)
        f_hi = xp.where(new_hi, value, f_hi)
        side = xp.where(new_lo, xp.ones_like(side), xp.where(new_hi, -xp.ones_like(side), side))
        denominator = f_hi - f_lo
        safe_d = xp.where(denominator == 0, 1.0, denominator)
        step_t = xp.where(denominator == 0, 0.5 * (lo + hi), lo - f_lo * (hi - lo) / safe_d)
        t = xp.where(active, step_t, t)
        root = at(t)
        value = evaluate_at_roots(relevance_fn, root, xp)
    return root, found, value


class InterpolationRootFinder(_SegmentRootFinder):
    r"""Roots on segments to points where random rays leave the input's linear region.

    Candidates: :func:`~relprop.dtd.local_linear.sample_interpolation` (``n_rays`` rays per
    input, followed to the region's edge with ``n_refinement_steps`` bisection steps);
    roots: module docstring.

    Parameters
    ----------
    n_rays, n_refinement_steps, max_radius
        Passed to :func:`~relprop.dtd.local_linear.sample_interpolation`.
    enforce_nonnegative
        Candidates, and hence roots, in the non-negative orthant (inputs must be >= 0;
        ``enforce_non_negative=`` is a deprecated spelling).
    root_steps, root_rtol
        Regula falsi steps on the chosen segment while
        :math:`|R_j(r)| > \mathrm{rtol}\,(|R_j(x)| + |R_j(c)|)`, default rtol 100 times
        the dtype's machine epsilon (none are needed where
        :math:`R_j` is affine on the segment).
    use_cache
        Reuse roots per local linear region (default on).
    seed
        Seed or :class:`numpy.random.Generator` of the rays.
    progress
        Show tqdm progress bars (see :class:`RootFinder`).

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2,
    ...                    seed=5, backend="numpy")
    >>> x = rp.dtd.sample_inputs(model, 2, threshold=0.5, output=0)
    >>> finder = InterpolationRootFinder(n_rays=20, enforce_nonnegative=True)
    >>> res = finder.find(rp.dtd.output_fn(model, 0), x, model=model)
    >>> res.root.shape, bool(res.same_region.all())
    ((2, 1, 10), True)
    >>> finder.cache_info()  # the two inputs share a region: one search
    CacheInfo(hits=1, misses=1, size=1)
    """

    def __init__(
        self,
        *,
        n_rays: int = 50,
        n_refinement_steps: int = 40,
        max_radius: float | None = None,
        enforce_nonnegative: bool = False,
        root_steps: int = 5,
        root_rtol: float | None = None,
        use_cache: bool = True,
        seed: Seed = 0,
        progress: bool | None = False,
        **deprecated: Any,
    ) -> None:
        enforce_nonnegative = renamed_keyword(deprecated, "enforce_non_negative",
                                              "enforce_nonnegative", enforce_nonnegative,
                                              "InterpolationRootFinder")
        super().__init__(root_steps=root_steps, root_rtol=root_rtol,
                         enforce_nonnegative=enforce_nonnegative, use_cache=use_cache,
                         seed=seed, progress=progress)
        self.n_rays = n_rays
        self.n_refinement_steps = n_refinement_steps
        self.max_radius = max_radius

    def __repr__(self) -> str:
        return (f"InterpolationRootFinder(n_rays={self.n_rays}, "
                f"n_refinement_steps={self.n_refinement_steps}, "
                f"enforce_nonnegative={self.enforce_nonnegative}, use_cache={self.use_cache})")

    def _candidates(self, chain: Sequential, x: Array, start: int,
                    xp: ModuleType) -> tuple[Array, Array]:
        res = interpolate(
            chain, x, xp, start=start, n_rays=self.n_rays,
            n_refinement_steps=self.n_refinement_steps, max_radius=self.max_radius,
            enforce_nonnegative=self.enforce_nonnegative, output=None, atol=0.0,
            seed=self.rng, progress=self.progress,
        )
        return res.points, res.inside


class MetropolisHastingsRootFinder(_SegmentRootFinder):
    r"""Roots on segments to the samples of random walks inside the input's linear region.

    Candidates: :func:`~relprop.dtd.local_linear.sample_metropolis_hastings` (``n_chains``
    chains of ``n_steps`` recorded steps after ``n_warmup``, adaptive step size); roots:
    module docstring.

    Parameters
    ----------
    n_chains, n_steps, n_warmup, step_size, target_acceptance, adaptation_rate, max_radius
        Passed to :func:`~relprop.dtd.local_linear.sample_metropolis_hastings`.
    enforce_nonnegative, root_steps, root_rtol, use_cache, seed, progress
        As for :class:`InterpolationRootFinder`.

    Examples
    --------
    >>> import relprop as rp
    >>> model = rp.dtd.MLP(n_layers=3, input_size=10, hidden_size=10, output_size=2,
    ...                    seed=5, backend="numpy")
    >>> x = rp.dtd.sample_inputs(model, 2, threshold=0.5, output=0)
    >>> finder = MetropolisHastingsRootFinder(n_chains=4, n_steps=20,
    ...                                       enforce_nonnegative=True)
    >>> res = finder.find(rp.dtd.output_fn(model, 0), x, model=model)
    >>> res.root.shape, bool(res.same_region.all())
    ((2, 1, 10), True)
    """

    def __init__(
        self,
        *,
        n_chains: int = 10,
        n_steps: int = 50,
        n_warmup: int = 20,
        step_size: float = 0.1,
        target_acceptance: float = 0.3,
        adaptation_rate: float = 0.5,
        max_radius: float | None = None,
        enforce_nonnegative: bool = False,
        root_steps: int = 5,
        root_rtol: float | None = None,
        use_cache: bool = True,
        seed: Seed = 0,
        progress: bool | None = False,
        **deprecated: Any,
    ) -> None:
        enforce_nonnegative = renamed_keyword(deprecated, "enforce_non_negative",
                                              "enforce_nonnegative", enforce_nonnegative,
                                              "MetropolisHastingsRootFinder")
        super().__init__(root_steps=root_steps, root_rtol=root_rtol,
                         enforce_nonnegative=enforce_nonnegative, use_cache=use_cache,
                         seed=seed, progress=progress)
        self.n_chains = n_chains
        self.n_steps = n_steps
        self.n_warmup = n_warmup
        self.step_size = step_size
        self.target_acceptance = target_acceptance
        self.adaptation_rate = adaptation_rate
        self.max_radius = max_radius

    def __repr__(self) -> str:
        return (f"MetropolisHastingsRootFinder(n_chains={self.n_chains}, "
                f"n_steps={self.n_steps}, n_warmup={self.n_warmup}, "
                f"enforce_nonnegative={self.enforce_nonnegative}, use_cache={self.use_cache})")

    def _candidates(self, chain: Sequential, x: Array, start: int,
                    xp: ModuleType) -> tuple[Array, Array]:
        res = random_walk(
            chain, x, xp, start=start, n_chains=self.n_chains, n_steps=self.n_steps,
            n_warmup=self.n_warmup, step_size=self.step_size,
            target_acceptance=self.target_acceptance, adaptation_rate=self.adaptation_rate,
            max_radius=self.max_radius, enforce_nonnegative=self.enforce_nonnegative,
            output=None, atol=0.0, seed=self.rng, progress=self.progress,
        )
        valid = xp.ones(res.samples.shape[:2], dtype=xp.bool, **placement(x, xp))
        return res.samples, valid
