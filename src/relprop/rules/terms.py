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
value traced by ``jax.jit`` is never kept), at most
:data:`relprop._derived.ENTRIES_PER_OWNER` per layer;
:func:`clear_cache` releases them (:mod:`relprop._derived` is that one cache, which also keeps
``rp.lrp``'s canonized models). It drops terms whose input modifier vanishes on the
non-negative inputs that follow a ReLU, reads the forward pass itself for a term that
modifies nothing, builds the forward pass of a term with weights :math:`a W + c W^+` on
the layer's own input from the recorded output and one pass with :math:`W^+` (Gamma after
a ReLU: one modified forward pass, not two; :func:`_split`), and computes
the forward passes of terms whose input is the same for every sample (Flat's ones, ZBox's
float bounds) once per input shape. Optionally (:attr:`TermRule.fuse`) it runs the terms
that read one input as one call of the layer with their parameters stacked
(:meth:`Linear.stack`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

from array_api_compat import device

from relprop._derived import cached, entries, forget
from relprop._xp import Array
from relprop.layers import Layer, Linear
from relprop.model import Model
from relprop.rules.base import Rule, Stabilizer, check_stabilizer, stabilize
from relprop.rules.modifiers import Identity, Modifier, Positive, Zero

__all__ = ["Group", "Term", "TermRule", "cached_parameters", "clear_cache", "per_sample"]

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
# arrays derived from parameters, cached by the engine
# ---------------------------------------------------------------------------------------

def clear_cache(model: Any = None) -> None:
    """Forget the derived values relprop keeps between calls, so their memory is freed.

    ``rp.lrp`` keeps, while the parameters provably have not changed (torch tensors'
    in-place write counter; JAX arrays are immutable; nothing is kept for NumPy, CuPy or
    array-api-strict): the modified parameters of every layer a rule modified
    (:math:`W^+`, ...) and each model's canonized versions (the fused weights of
    ``MergeBatchNorm``, at most two sets of canonizers per model). Both are held weakly,
    by the layer and the model: deleting the model (or the torch module it was
    converted from) frees them too. At most :data:`relprop._derived.ENTRIES_PER_OWNER`
    values are kept per layer.

    Parameters
    ----------
    model
        Forget only what is kept for this ``rp.Sequential`` / ``rp.Graph`` (its layers,
        its canonized versions and their layers) or ``torch.nn.Module`` (its conversion's);
        ``None`` (default): everything.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> model = rp.Sequential([rp.Dense(np.eye(2))])
    >>> rp.rules.clear_cache(model)  # nothing kept for NumPy arrays anyway
    >>> rp.rules.clear_cache()
    """
    if model is None:
        forget()
        return
    if not isinstance(model, Model):
        from relprop.interop._cache import as_model

        model = as_model(model)  # a torch module: the conversion rp.lrp uses
    owners: list[Any] = [model, *model.layers]
    for value in entries(model).values():  # its canonized versions
        owners += list(value.layers)
    forget(owners)


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
    return entries(layer) if isinstance(layer, Linear) else {}


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
        kept, params = passes.kept, passes.params

        def term(ref: Ref) -> Term:
            return kept[ref[0]][1][ref[1]]

        def factor(ref: Ref) -> float:
            return kept[ref[0]][0].coefficient * term(ref).sign

        # one denominator per group
        scaled = []
        for g, (group, terms) in enumerate(kept):
            z = _group_sum(terms, [passes.z_of[(g, t)] for t in range(len(terms))])
            relevance = R if group.output is None else group.output(R, out, xp)
            scaled.append(relevance / stabilize(z, self.stabilizer, xp))
            del z, relevance
        passes.z_of.clear()  # the forward passes are spent: free them before the transposes
        # transposed passes: one call per input modifier again, or one call for the
        # single terms of several input modifiers that divide the same relevance (ZBox)
        parts = _shared_transposes(passes, scaled, factor, x.shape)
        for modifier, refs in passes.by_input.items():
            if modifier in parts:
                continue
            parts[modifier] = params.backward(
                passes.inputs[modifier], [scaled[g] for g, _ in refs], [term(r) for r in refs],
                [factor(r) for r in refs], x.shape, self.fuse,
            )
        vs, items = _split_cotangents(passes, scaled, factor)
        scaled.clear()  # held by vs where still needed
        if vs:  # the split terms, all in the transposes of W and W+
            parts[None] = params.backward(x, vs, items, [1.0] * len(vs), x.shape, self.fuse)
        total: Array | None = None
        for part in parts.values():
            total = part if total is None else total + part
        return xp.zeros_like(x) if total is None else total

    def _forward_passes(self, layer: Layer, x: Array, out: Array, xp: ModuleType,
                        nonnegative: bool) -> _Passes | None:
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
        split = _split(kept, params, nonnegative, bool(self.zero_params))
        if split:
            by_input = {modifier: kept_refs for modifier, refs in by_input.items()
                        if (kept_refs := [r for r in refs if r not in split])}
        inputs = {modifier: x if nonnegative and getattr(modifier, "identity_on_nonnegative",
                                                         False)
                  else modifier(x, xp) for modifier in by_input}
        # forward passes: one call per input modifier, its terms' parameters stacked
        z_of: dict[Ref, Array] = {}
        for modifier, refs in by_input.items():
            reused = [r for r in refs if kept[r[0]][1][r[1]].plain and not self.zero_params]
            computed = [r for r in refs if r not in reused]
            z_of.update({r: out for r in reused})  # the forward pass computed these
            chosen = [kept[g][1][t] for g, t in computed]
            key = _ask(modifier, "constant") if chosen else None
            if key is None:
                zs = params.forward(inputs[modifier], chosen, self.fuse)
            else:  # the same for every sample and call: once, for one sample
                zs = params.constant_forward(modifier, key, x, chosen)
            z_of.update(zip(computed, zs, strict=True))
        if split:  # a W x + c W+ x from the recorded output and one forward pass with W+
            plus = (params.forward(x, [_PLUS], False)[0]
                    if any(c for _, c in split.values()) else None)
            for ref, (a, c) in split.items():
                z_of[ref] = _combine(out, a, plus, c, xp)
        return _Passes(kept, params, by_input, inputs, z_of, split)

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
        kept, params, z_of = passes.kept, passes.params, passes.z_of
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
    parameters stacked along the outputs (Gamma after a ReLU: its transposes with
    :math:`W` and :math:`W^+` as one call). Off by default: on torch's CPU convolutions a
    layer of twice the outputs costs what two layers cost, and the stacking made
    VGG-shaped Gamma and alpha-beta 2-9% slower (``benchmarks/vgg16.py --fusion``,
    measured before the engine built their forward passes from the recorded output); set
    ``TermRule.fuse = True`` (all rules) or ``rule.fuse = True`` (one) where wide calls
    pay (GPUs)."""


def _shared_transposes(passes: _Passes, scaled: list[Array], factor: Callable[[Ref], float],
                       shape: tuple[int, ...]) -> dict[Any, Array]:
    """Each input modifier's part of the relevance, for the modifiers whose single terms
    divide one group's relevance (ZBox's three), transposed in one call where the layer
    stacks them (:meth:`Linear.stack_inputs`)."""
    parts: dict[Any, Array] = {}
    for refs in _sharing(passes.by_input):
        terms = [passes.kept[g][1][t] for g, t in refs]
        backs = passes.params.transpose_each(scaled[refs[0][0]], terms, shape)
        if backs is None:
            continue
        for ref, item, back in zip(refs, terms, backs, strict=True):
            parts[item.input] = _apply_factor(passes.inputs[item.input] * back, factor(ref))
    return parts


def _split_cotangents(passes: _Passes, scaled: list[Array], factor: Callable[[Ref], float]
                      ) -> tuple[list[Array], list[Term]]:
    r"""The split terms (:func:`_split`) transposed together: :math:`\sum_t f_t (a_t W +
    c_t W^+)^\top v_t = W^\top \sum_t f_t a_t v_t + W^{+\top} \sum_t f_t c_t v_t`, so the
    two cotangents and the terms (:math:`W`, :math:`W^+`) whose transposes take them."""
    on_w: list[tuple[float, Array]] = []
    on_plus: list[tuple[float, Array]] = []
    for ref, (a, c) in passes.split.items():
        if factor(ref) * a:
            on_w.append((factor(ref) * a, scaled[ref[0]]))
        if factor(ref) * c:
            on_plus.append((factor(ref) * c, scaled[ref[0]]))
    vs: list[Array] = []
    items: list[Term] = []
    for pairs, item in ((on_w, _PLAIN), (on_plus, _PLUS)):
        if pairs:
            vs.append(_weighted_sum(pairs))
            items.append(item)
    return vs, items


def _by_input(groups: list[list[Term]]) -> dict[Modifier, list[tuple[int, int]]]:
    """The (group, term) positions of each input modifier, in order of first use."""
    found: dict[Modifier, list[tuple[int, int]]] = {}
    for g, terms in enumerate(groups):
        for t, term in enumerate(terms):
            found.setdefault(term.input, []).append((g, t))
    return found


Ref = tuple[int, int]
"""A term's position: (group, term) among the kept ones."""


def _sharing(by_input: dict[Modifier, list[Ref]]) -> list[list[Ref]]:
    """Sets of at least two terms, each the only term of its input modifier, that read the
    same group's relevance: their transposes take one ``v`` (ZBox's three)."""
    by_group: dict[int, list[Ref]] = {}
    for refs in by_input.values():
        if len(refs) == 1:
            by_group.setdefault(refs[0][0], []).append(refs[0])
    return [refs for refs in by_group.values() if len(refs) > 1]

_PLAIN = Term()
_PLUS = Term(Positive(), Positive(), Positive())


class _Passes(NamedTuple):
    """What a rule's forward passes found (:meth:`TermRule._forward_passes`)."""

    kept: list[tuple[Group, list[Term]]]
    """The groups and their terms, without those that vanish on the input."""
    params: _Parameters
    by_input: dict[Modifier, list[Ref]]
    """The terms computed one by one, by input modifier."""
    inputs: dict[Modifier, Array]
    """Those input modifiers applied to the input."""
    z_of: dict[Ref, Array]
    """Every kept term's forward pass."""
    split: dict[Ref, tuple[float, float]]
    """The terms built from the layer's own output and that of W+ instead, and
    transposed as ``a W^T + c W+^T``: ``(a, c)`` with weight and bias ``a W + c W+``
    (:meth:`~relprop.rules.modifiers.Modifier.decomposition`)."""


def _split(kept: list[tuple[Group, list[Term]]], params: _Parameters, nonnegative: bool,
           zero_params: bool) -> dict[Ref, tuple[float, float]]:
    r"""The terms to compute from :math:`z = Wx + b` (the recorded output) and :math:`z^+ =
    W^+x + b^+`, where that takes fewer calls of the layer than computing each.

    A term qualifies when its input is ``x`` itself (``Identity``, or ``Positive`` on a
    non-negative input) and its weight and bias are :math:`a W + c W^+` with the same
    ``(a, c)`` (the weight's :meth:`~relprop.rules.modifiers.Modifier.decomposition`):
    then :math:`z_t = a z + c z^+` and its transpose is :math:`a W^\top + c W^{+\top}`
    (the transposes of all such terms: one with :math:`W`, one with :math:`W^+`), where
    that loses no accuracy. It would where :math:`a W + c W^+` (nearly) cancels, i.e.
    (nearly) vanishes on one sign of the weights while the two parts do not: the beta term
    of AlphaBeta, :math:`W^- = W - W^+`, would be :math:`z - z^+`, the difference of two
    large numbers where :math:`z^-` is small, rounded to :math:`\mathrm{ulp}(z^+)`, and
    its transpose likewise. So such a term keeps its own forward pass and transpose: a
    split term's rounding is at most about four times that of computing it alone
    (:math:`|a| + |c| \le 4 \min(|a|, |a + c|)`). Gamma after a ReLU
    (:math:`W + \gamma W^+` and :math:`W + \gamma W^- = (1 + \gamma) W - \gamma W^+`,
    for :math:`\gamma \le 1.5`) takes one modified forward pass and the transposes of
    :math:`W` and :math:`W^+`, keeping only :math:`W^+` (and :math:`b^+`), instead of two
    of each; AlphaBeta is computed term by term. Not with ``zero_params`` (the recorded
    output has the parameters).
    """
    if zero_params:
        return {}
    found: dict[Ref, tuple[float, float]] = {}
    for g, (_, terms) in enumerate(kept):
        for t, term in enumerate(terms):
            reads_x = isinstance(term.input, Identity) or (
                nonnegative and getattr(term.input, "identity_on_nonnegative", False))
            parts = _ask(term.weight, "decomposition") if reads_x else None
            if parts is None:
                continue
            if not params.no_bias and (
                    term.bias is None or _ask(term.bias, "decomposition") != parts):
                continue  # its bias is not a b + c b+ of the recorded output's
            a, c = parts
            if a and c and abs(a) + abs(c) > 4.0 * min(abs(a), abs(a + c)):
                continue  # a W + c W+ cancels: computed on its own
            found[(g, t)] = (a, c)
    # calls of the layer, each term on its own: a forward pass (unless it is the recorded
    # one) and a transpose; split: one forward pass with W+, the transposes of W and W+
    alone = sum(1 + (not kept[g][1][t].plain) for g, t in found)
    split = (any(c for _, c in found.values()) + any(a for a, _ in found.values())
             + any(c for _, c in found.values()))
    return found if split < alone else {}


def _ask(modifier: Any, question: str) -> Any:
    """``modifier.constant()`` or ``.decomposition()``; ``None`` for a modifier of a user's
    that is no :class:`~relprop.rules.modifiers.Modifier` (only callable)."""
    method = getattr(modifier, question, None)
    return None if method is None else method()


def _combine(out: Array, a: float, plus: Array | None, c: float, xp: ModuleType) -> Array:
    """``a * out + c * plus`` (``plus`` only read where ``c`` is not 0)."""
    if not c:
        return _apply_factor(out, a) if a else xp.zeros_like(out)
    assert plus is not None
    return _apply_factor(plus, c) if not a else _sum([(a, out), (c, plus)])


def _weighted_sum(pairs: list[tuple[float, Array]]) -> Array:
    r""":math:`\sum_i f_i v_i` as :math:`f_0 \sum_i (f_i / f_0) v_i`: one array fewer where
    the factors differ only in sign (Gamma's :math:`\gamma v_p - \gamma v_n`)."""
    lead = pairs[0][0]
    total = _sum([(f / lead, v) for f, v in pairs])
    if lead == 1.0:
        return total
    if len(pairs) > 1 and _writable(total):
        total *= lead  # _sum made it
        return total
    return _apply_factor(total, lead)


def _sum(pairs: Sequence[tuple[float, Array]]) -> Array:
    r""":math:`\sum_i f_i v_i`, added in the order given (so rounded as the formula is
    written), into the first array it makes: one new array, plus one per factor not
    :math:`\pm 1` after the first two, where writing in place is allowed (``+=`` rebinds
    a JAX array; a torch tensor that autograd records is not written)."""
    (f0, v0), rest = pairs[0], list(pairs[1:])
    if not rest:
        return _apply_factor(v0, f0)
    if f0 == 1.0 and rest[0][0] not in (1.0, -1.0):
        f1, v1 = rest.pop(0)
        total = f1 * v1
        if _writable(total, v0):
            total += v0  # v0 + f1 v1, with the product's array
        else:
            total = v0 + total
    elif f0 == 1.0:
        f1, v1 = rest.pop(0)
        total = _signed_sum(v0, v1, f1)
    else:
        total = _apply_factor(v0, f0)  # a new array
    for f, v in rest:
        if _writable(total, v):
            if f == 1.0:
                total += v
            elif f == -1.0:
                total -= v
            else:
                total += f * v
        else:
            total = _signed_sum(total, v, f)
    return total


def _writable(total: Array, *others: Array) -> bool:
    """Whether ``total``, an array the engine has just made, may be updated in place with
    ``others``: where they have its shape and dtype (so the result is what ``total + v``
    gives), and not where torch's autograd records one of them (``detach=False``)."""
    return not getattr(total, "requires_grad", False) and all(
        a.dtype == total.dtype and a.shape == total.shape
        and not getattr(a, "requires_grad", False) for a in others)


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

    def constant_forward(self, modifier: Modifier, key: Hashable, x: Array,
                         terms: list[Term]) -> list[Array]:
        """The terms' forward passes on ``modifier``'s input, which is the same for every
        sample (:meth:`~relprop.rules.modifiers.Modifier.constant`): computed for one
        sample, kept per input shape, broadcast over the batch."""
        xp = self.xp
        cache_key = ("constant", key, tuple((t.weight, t.bias) for t in terms),
                     self.zero_weight, self.no_bias, tuple(x.shape[1:]), str(x.dtype))
        one = x[:1, ...]
        zs = _cached(self.layer, cache_key,
                     lambda: tuple(self.forward(modifier(one, xp), terms, False)))
        return [xp.broadcast_to(z, (x.shape[0], *z.shape[1:])) for z in zs]

    def forward(self, x: Array, terms: list[Term], fuse: bool) -> list[Array]:
        """Each term's forward pass on the modified input ``x``."""
        if not terms:
            return []
        stacked = self.stacked(terms) if fuse and len(terms) > 1 else None
        if stacked is None:
            return [self.layer.linear(x, self.weight(t), self.bias(t), self.xp) for t in terms]
        return self.layer.unstack(self.layer.linear(x, *stacked, self.xp), len(terms), self.xp)

    def transpose_each(self, v: Array, terms: list[Term], shape: tuple[int, ...]
                       ) -> list[Array] | None:
        """Each term's transpose of one ``v``, in one call of the layer with the terms'
        weights side by side along its inputs (cached like the modified ones); ``None``
        where the layer cannot stack them so (:meth:`Linear.stack_inputs`)."""
        key = ("stack_inputs", self.zero_weight, tuple(t.weight for t in terms))
        stacked = _cached(self.layer, key, lambda: self.layer.stack_inputs(
            [self.weight(t) for t in terms], self.xp))
        if stacked is None:
            return None
        return self.layer.transpose_stacked(v, stacked, len(terms), self.xp, shape)

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
        backs = [layer.transpose(v, self.weight(term), xp, shape) for v, term in zip(
            vs, terms, strict=True)]
        return x * _sum(list(zip(factors, backs, strict=True)))


def _cached(layer: Linear, key: Any, make: Callable[[], Any]) -> Any:
    """``make()`` kept in the engine's cache of ``layer`` (as :func:`_modified`)."""
    return cached(layer, key, (layer.weight, layer.bias), make)


def _group_sum(terms: Sequence[Term], values: Sequence[Array]) -> Array:
    r""":math:`\sum_t \sigma_t v_t` over a group's terms."""
    return _sum([(item.sign, value) for item, value in zip(terms, values, strict=True)])


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
