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
that modifies nothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from relprop._xp import Array, is_traced, library_of
from relprop.layers import Layer, Linear
from relprop.rules.base import Rule, Stabilizer, check_stabilizer, stabilize
from relprop.rules.modifiers import Identity, Modifier, Zero

__all__ = ["Group", "Term", "TermRule", "cached_parameters"]

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
    token = _version(layer)
    if token is None:
        return modifier(base, xp)
    entry = _CACHE.get(layer)
    if entry is None or entry[0] != token:
        entry = (token, {})
        _CACHE[layer] = entry
    key = (name, modifier)
    if key not in entry[1]:
        value = modifier(base, xp)
        if is_traced(value):
            return value
        entry[1][key] = value
    return entry[1][key]


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
    >>> plus.relevance(layer, x, layer(x), xp.asarray([[4.0]]), xp).round(6).tolist()
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

    def relevance(
        self,
        layer: Layer,
        x: Array,
        out: Array,
        R: Array,
        xp: ModuleType,
        *,
        nonnegative: bool = False,
    ) -> Array:
        if not isinstance(layer, Linear):
            raise TypeError(self.check(layer))
        inputs: dict[Modifier, Array] = {}

        def modified_input(modifier: Modifier) -> Array:
            if modifier not in inputs:
                inputs[modifier] = modifier(x, xp)
            return inputs[modifier]

        zero_weight = "weight" in self.zero_params
        no_bias = "bias" in self.zero_params or layer.bias is None
        total: Array | None = None
        for group in self.groups():
            terms = [t for t in group.terms
                     if not (nonnegative and t.input.vanishes_on_nonnegative)]
            if not terms:
                continue
            weights = [_modified(layer, "weight", zero_weight, t.weight, xp) for t in terms]
            z: Array | None = None
            for term, weight in zip(terms, weights, strict=True):
                if term.plain and not self.zero_params:
                    z_term = out  # the forward pass already computed it
                else:
                    bias = (None if no_bias or term.bias is None
                            else _modified(layer, "bias", False, term.bias, xp))
                    z_term = layer.linear(modified_input(term.input), weight, bias, xp)
                z = _signed_sum(z, z_term, term.sign)
            relevance = R if group.output is None else group.output(R, out, xp)
            assert z is not None
            s = relevance / stabilize(z, self.stabilizer, xp)
            part: Array | None = None
            for term, weight in zip(terms, weights, strict=True):
                back = modified_input(term.input) * layer.transpose(s, weight, xp, x.shape)
                part = _signed_sum(part, back, term.sign)
            assert part is not None
            if group.coefficient != 1.0:
                part = group.coefficient * part
            total = part if total is None else total + part
        return xp.zeros_like(x) if total is None else total


def _signed_sum(total: Array | None, value: Array, sign: float) -> Array:
    if sign == 1.0:
        return value if total is None else total + value
    if sign == -1.0:
        return -value if total is None else total - value
    return sign * value if total is None else total + sign * value
