r"""The rule engine: a rule for linear layers is data, a few **terms** in **groups**, and
this module turns it into modified forward passes and their exact transposes.

A term is one modified forward pass of the layer :math:`z = A(x; W) + b`:
:math:`z_t = A(\mathrm{in}_t(x); \mathrm{w}_t(W)) + \mathrm{b}_t(b)`. The terms of a group
share a denominator; the groups are added with their coefficients:

.. math::

    R_{in} = \sum_g c_g \sum_{t \in g} \sigma_t\,\mathrm{in}_t(x) \odot
    A^\top\!\Big(\mathrm{w}_t(W);\; \frac{\mathrm{out}_g(R)}{s\big(\sum_{t \in g}
    \sigma_t z_t\big)}\Big)

(:math:`\sigma_t = \pm 1` the term's sign, :math:`s` the stabiliser, :math:`\mathrm{out}_g`
an optional mask of the relevance by the sign of the layer's output). This is zennit's
BasicHook (input, parameter and output modifiers, a gradient mapper and a reducer) written
without hooks: the "gradient" is the layer's own transpose.

The engine, not the layer, keeps the modified parameters: computed once per layer,
modifier and parameter, and kept while the parameters provably have not changed (JAX
arrays are immutable; torch counts in-place writes in ``Tensor._version``; NumPy, CuPy and
array-api-strict arrays can be written without a trace, so nothing is kept for them; a
value traced by ``jax.jit`` is never kept). It drops terms whose input modifier vanishes on
the non-negative inputs that follow a ReLU, and reads the forward pass itself for a term
that modifies nothing. Optionally (:attr:`TermRule.fuse`) it runs the terms that read one
input as one call of the layer with their parameters stacked (:meth:`Linear.stack`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from array_api_compat import device

from relprop._xp import Array, is_traced, library_of
from relprop.layers import Layer, Linear
from relprop.rules.base import Rule, Stabilizer, check_stabilizer, stabilize
from relprop.rules.modifiers import Identity, Modifier, Zero

__all__ = ["Group", "Term", "TermRule", "cached_parameters", "per_sample"]

_PARAM_NAMES = frozenset({"weight", "bias"})


@dataclass(frozen=True)
class Term:
    """One modified forward pass: the input, weight and bias modifiers, and a sign.

    ``bias=None``: the term has no bias (the negative-input half of z+).

    Examples
    --------
    >>> from relprop.rules.modifiers import Negative, Positive
    >>> Term(Positive(), Positive(), Positive())   # z+'s positive half: W+ x+ + b+
    Term(input=Positive(), weight=Positive(), bias=Positive(), sign=1.0)
    """

    input: Modifier = Identity()
    weight: Modifier = Identity()
    bias: Modifier | None = Identity()
    sign: float = 1.0

    @property
    def plain(self) -> bool:
        """Whether it is the layer's own forward pass (nothing modified)."""
        return (isinstance(self.input, Identity) and isinstance(self.weight, Identity)
                and isinstance(self.bias, Identity) and self.sign == 1.0)


@dataclass(frozen=True)
class Group:
    """Terms sharing one denominator, added with ``coefficient``; ``output`` (optional)
    masks the relevance first, e.g. to where the layer's output is positive."""

    terms: tuple[Term, ...]
    coefficient: float = 1.0
    output: Callable[[Array, Array, ModuleType], Array] | None = None


def _zero_set(zero_params: str | Iterable[str] | None) -> tuple[str, ...]:
    if zero_params is None:
        return ()
    names = frozenset([zero_params] if isinstance(zero_params, str) else zero_params)
    unknown = names - _PARAM_NAMES
    if unknown:
        raise ValueError(
            f"zero_params names unknown parameters {sorted(unknown)}; use 'bias' and/or 'weight'."
        )
    return tuple(sorted(names))


# ---------------------------------------------------------------------------------------
# modified parameters, cached by the engine
# ---------------------------------------------------------------------------------------

_CACHE: weakref.WeakKeyDictionary[Linear, tuple[tuple[int, ...], dict[Any, Array]]] = (
    weakref.WeakKeyDictionary()
)


def _version(layer: Linear) -> tuple[int, ...] | None:
    """A token that changes whenever a parameter is written, or ``None`` if unknowable."""
    params = [p for p in (layer.weight, layer.bias) if p is not None]
    library = library_of(layer.weight)
    if library == "jax":
        return ()
    if library == "torch":
        return tuple(int(p._version) for p in params)
    return None


def _modified(layer: Linear, name: str, zeroed: bool, modifier: Modifier,
              xp: ModuleType) -> Array:
    """``modifier`` of the layer's parameter ``name`` (zeros first where ``zeroed``)."""
    base = getattr(layer, name)
    if zeroed:
        modifier = Zero()
    if isinstance(modifier, Identity):
        return base
    value: Array = _cached(layer, (name, modifier), lambda: modifier(base, xp))
    return value


def cached_parameters(layer: Layer) -> dict[Any, Array]:
    """The modified parameters the engine keeps for ``layer`` (for tests and curiosity)."""
    entry = _CACHE.get(layer) if isinstance(layer, Linear) else None
    return {} if entry is None else dict(entry[1])


# ---------------------------------------------------------------------------------------
# rules made of terms
# ---------------------------------------------------------------------------------------


class TermRule(Rule):
    r"""A rule for linear layers given by its terms (the engine: :mod:`relprop.rules.terms`).

    Build one directly, ``TermRule([Group((Term(...), ...))], stabilizer=...)``, or
    subclass it and compute :meth:`groups` from the rule's settings (as the shipped
    Epsilon, ZPlus, AlphaBeta, Gamma, ZBox, WSquare and Flat do). See "Write your own
    rule" in the guide.

    Parameters
    ----------
    groups
        The groups of terms (subclasses may instead override :meth:`groups`).
    stabilizer
        :math:`\epsilon` of the denominators, or a callable returning the stabilised one.
    zero_params
        ``"bias"`` and/or ``"weight"``: parameters taken as zero before any modifier.

    Examples
    --------
    >>> import array_api_compat.numpy as xp
    >>> from relprop.layers import Dense
    >>> from relprop.rules.modifiers import Positive
    >>> plus = TermRule([Group((Term(Positive(), Positive(), Positive()),))])
    >>> layer = Dense(xp.asarray([[1.0, -2.0, 3.0]]))
    >>> x = xp.asarray([[1.0, 1.0, 1.0]])
    >>> plus.relevance(layer, x, layer(x), xp.asarray([[4.0]]), xp).round(4).tolist()
    [[1.0, 0.0, 3.0]]
    """

    needs_params = True

    def __init__(
        self,
        groups: Sequence[Group] | None = None,
        *,
        stabilizer: Stabilizer = 1e-6,
        zero_params: str | Iterable[str] | None = None,
    ) -> None:
        self.stabilizer = check_stabilizer(stabilizer, "stabilizer")
        self.zero_params = _zero_set(zero_params)
        if groups is not None:
            self._groups = tuple(groups)

    def groups(self) -> tuple[Group, ...]:
        """The rule's groups of terms."""
        groups = getattr(self, "_groups", None)
        if groups is None:
            raise NotImplementedError(f"{type(self).__name__} must define groups()")
        return groups

    def relevance(self, layer: Layer, x: Array, out: Array, R: Array, xp: ModuleType, *,
                  nonnegative: bool = False) -> Array:
        passes = self._forward_passes(layer, x, out, xp, nonnegative)
        if passes is None:
            return xp.zeros_like(x)
        kept, params, by_input, inputs, z_of = passes

        def term(ref: tuple[int, int]) -> Term:
            return kept[ref[0]][1][ref[1]]

        # one denominator per group
        scaled = []
        for g, (group, terms) in enumerate(kept):
            z = _group_sum(terms, [z_of[(g, t)] for t in range(len(terms))])
            relevance = R if group.output is None else group.output(R, out, xp)
            scaled.append(relevance / stabilize(z, self.stabilizer, xp))
        # transposed passes: one call per input modifier again
        total: Array | None = None
        for modifier, refs in by_input.items():
            part = params.backward(
                inputs[modifier], [scaled[g] for g, _ in refs], [term(r) for r in refs],
                [kept[g][0].coefficient * term((g, t)).sign for g, t in refs], x.shape,
                self.fuse,
            )
            total = part if total is None else total + part
        assert total is not None
        return total

    def _forward_passes(self, layer: Layer, x: Array, out: Array, xp: ModuleType,
                        nonnegative: bool) -> tuple[Any, ...] | None:
        """The kept groups with their terms, the parameters, the terms by input modifier,
        the modified inputs and each term's forward pass (``None``: no term is left)."""
        if not isinstance(layer, Linear):
            raise TypeError(self.check(layer))
        active = ((group, [t for t in group.terms
                           if not (nonnegative and t.input.vanishes_on_nonnegative)])
                  for group in self.groups())
        kept = [(group, terms) for group, terms in active if terms]
        if not kept:
            return None
        params = _Parameters(layer, self.zero_params, xp)
        by_input = _by_input([terms for _, terms in kept])
        inputs = {modifier: modifier(x, xp) for modifier in by_input}
        # forward passes: one call per input modifier, its terms' parameters stacked
        z_of: dict[tuple[int, int], Array] = {}
        for modifier, refs in by_input.items():
            chosen = [kept[g][1][t] for g, t in refs]
            reused = [r for r, item in zip(refs, chosen, strict=True)
                      if item.plain and not self.zero_params]
            computed = [r for r in refs if r not in reused]
            z_of.update({r: out for r in reused})  # the forward pass computed these
            zs = params.forward(inputs[modifier], [kept[g][1][t] for g, t in computed],
                                self.fuse)
            z_of.update(zip(computed, zs, strict=True))
        return kept, params, by_input, inputs, z_of

    def absorbed(self, layer: Layer, xs: Sequence[Array], out: Array, R: Array, xp: ModuleType,
                 *, nonnegative: bool = False) -> tuple[Array, Array] | None:
        r"""Per group :math:`g` with denominator :math:`D_g = s(N_g)`, :math:`N_g =
        \sum_t \sigma_t z_t`, and bias :math:`B_g = \sum_t \sigma_t b_t`: the biases
        absorb :math:`\sum_g c_g \sum_j R_{g,j} B_{g,j} / D_{g,j}` and the stabiliser
        :math:`\sum_g c_g \sum_j R_{g,j} (D_{g,j} - N_{g,j}) / D_{g,j}` (the input
        relevance sums to :math:`\sum_g c_g \sum_j R_{g,j} (N_{g,j} - B_{g,j}) /
        D_{g,j}`)."""
        passes = self._forward_passes(layer, xs[0], out, xp, nonnegative)
        zero = xp.zeros((out.shape[0],), dtype=out.dtype, device=device(out))
        if passes is None:
            return xp.zeros_like(zero), xp.zeros_like(zero)
        kept, params, _, _, z_of = passes
        axis = params.layer.channel_axis
        bias, stabilizer = xp.zeros_like(zero), xp.zeros_like(zero)
        for g, (group, terms) in enumerate(kept):
            z = _group_sum(terms, [z_of[(g, t)] for t in range(len(terms))])
            relevance = R if group.output is None else group.output(R, out, xp)
            scaled = group.coefficient * relevance / stabilize(z, self.stabilizer, xp)
            biases = [_on_channels(params.bias(t), z, axis, xp) for t in terms]
            b = _group_sum(terms, biases)
            stabilizer = stabilizer + per_sample(scaled * (stabilize(z, self.stabilizer, xp)
                                                            - z), xp)
            bias = bias + per_sample(scaled * b, xp)
        return bias, stabilizer

    fuse: bool = False
    """Fuse the terms that read one input into one forward and one transposed call, their
    parameters stacked along the outputs (Gamma after a ReLU: one call each way instead of
    two). Off by default: on torch's CPU convolutions a layer of twice the outputs costs
    what two layers cost, and the stacking made VGG-shaped Gamma and alpha-beta 2-9%
    slower (``benchmarks/vgg16.py --fusion``); set ``TermRule.fuse = True`` (all rules)
    or ``rule.fuse = True`` (one) where wide calls pay (GPUs)."""


def _by_input(groups: list[list[Term]]) -> dict[Modifier, list[tuple[int, int]]]:
    """The (group, term) positions of each input modifier, in order of first use."""
    found: dict[Modifier, list[tuple[int, int]]] = {}
    for g, terms in enumerate(groups):
        for t, term in enumerate(terms):
            found.setdefault(term.input, []).append((g, t))
    return found


def _apply_factor(value: Array, factor: float) -> Array:
    if factor == 1.0:
        return value
    return -value if factor == -1.0 else factor * value


class _Parameters:
    """A layer's modified parameters for one rule call, and the (fused) calls."""

    def __init__(self, layer: Linear, zero_params: tuple[str, ...], xp: ModuleType) -> None:
        self.layer, self.xp = layer, xp
        self.zero_weight = "weight" in zero_params
        self.no_bias = "bias" in zero_params or layer.bias is None

    def weight(self, term: Term) -> Array:
        return _modified(self.layer, "weight", self.zero_weight, term.weight, self.xp)

    def bias(self, term: Term) -> Array | None:
        if self.no_bias or term.bias is None:
            return None
        return _modified(self.layer, "bias", False, term.bias, self.xp)

    def stacked(self, terms: list[Term]) -> tuple[Array, Array | None] | None:
        """The terms' parameters stacked (cached like the modified ones), or ``None``."""
        key = ("stack", self.zero_weight, self.no_bias,
               tuple((t.weight, t.bias) for t in terms))
        return _cached(self.layer, key, lambda: self.layer.stack(
            [self.weight(t) for t in terms], [self.bias(t) for t in terms], self.xp))

    def forward(self, x: Array, terms: list[Term], fuse: bool) -> list[Array]:
        """Each term's forward pass on the modified input ``x``."""
        if not terms:
            return []
        stacked = self.stacked(terms) if fuse and len(terms) > 1 else None
        if stacked is None:
            return [self.layer.linear(x, self.weight(t), self.bias(t), self.xp) for t in terms]
        return self.layer.unstack(self.layer.linear(x, *stacked, self.xp), len(terms), self.xp)

    def backward(self, x: Array, vs: list[Array], terms: list[Term], factors: list[float],
                 shape: tuple[int, ...], fuse: bool) -> Array:
        r""":math:`x \odot \sum_t f_t W_t^\top v_t`: the terms that read the modified input
        ``x``, in one transposed call of the stacked layer where it stacks."""
        layer, xp = self.layer, self.xp
        if len(terms) == 1:  # the factor applied last, as the formula is written
            back = layer.transpose(vs[0], self.weight(terms[0]), xp, shape)
            return _apply_factor(x * back, factors[0])
        stacked = self.stacked(terms) if fuse else None
        if stacked is not None:
            joined = layer.join([_apply_factor(v, f) for v, f in zip(vs, factors, strict=True)],
                                xp)
            return x * layer.transpose(joined, stacked[0], xp, shape)
        total = None
        for v, term, factor in zip(vs, terms, factors, strict=True):
            value = _apply_factor(layer.transpose(v, self.weight(term), xp, shape), factor)
            total = value if total is None else total + value
        assert total is not None
        return x * total


def _cached(layer: Linear, key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` kept in the engine's cache of ``layer`` (as :func:`_modified`)."""
    token = _version(layer)
    if token is None:
        return make()
    entry = _CACHE.get(layer)
    if entry is None or entry[0] != token:
        entry = (token, {})
        _CACHE[layer] = entry
    if key not in entry[1]:
        value = make()
        leaves = value if isinstance(value, tuple) else (value,)
        if any(leaf is not None and is_traced(leaf) for leaf in leaves):
            return value
        entry[1][key] = value
    return entry[1][key]


def _group_sum(terms: Sequence[Term], values: Sequence[Array]) -> Array:
    r""":math:`\sum_t \sigma_t v_t` over a group's terms."""
    total = None
    for item, value in zip(terms, values, strict=True):
        total = _signed_sum(total, value, item.sign)
    assert total is not None
    return total


def _on_channels(bias: Array | None, z: Array, axis: int, xp: ModuleType) -> Array:
    """A bias broadcast over the output ``z`` along its channel ``axis`` (zero: none)."""
    if bias is None:
        return xp.zeros_like(z)
    shape = [1] * z.ndim
    shape[z.ndim + axis] = int(bias.shape[0])
    return xp.broadcast_to(xp.reshape(bias, tuple(shape)), tuple(z.shape))


def per_sample(a: Array, xp: ModuleType) -> Array:
    """The sum of each sample's entries, ``(batch,)``."""
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)


def _signed_sum(total: Array | None, value: Array, sign: float) -> Array:
    if sign == 1.0:
        return value if total is None else total + value
    if sign == -1.0:
        return -value if total is None else total - value
    return sign * value if total is None else total + sign * value
