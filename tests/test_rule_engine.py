"""The rule engine's public API (``relprop.rules.TermRule``, ``Term``, ``Group`` and
``relprop.rules.modifiers``) on the backend under test.

Oracles: the shipped rules themselves, rebuilt by hand through the public API (they must
agree to the last bit, or to rounding where the sums associate differently); a gamma rule
with separate amounts that reduces to Gamma when both amounts are equal; the explicit
per-neuron references of ``test_rules_reference`` stand behind the shipped rules.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend, random_weights

import relprop as rp
from relprop.rules import Group, Term, TermRule
from relprop.rules.modifiers import (
    Identity,
    Modifier,
    Negative,
    NegativeOutput,
    PlusGamma,
    Positive,
    PositiveOutput,
)
from relprop.rules.terms import cached_parameters


def _network(seed: int = 0):
    params = random_weights(np.random.default_rng(seed), [5, 7, 6, 3])
    layers = []
    for index, (w, b) in enumerate(params):
        if index:
            layers.append(rp.ReLU())
        layers.append(rp.Dense(on_backend(w), on_backend(b)))
    x = on_backend(np.random.default_rng(seed + 1).normal(size=(4, 5)))
    return rp.Sequential(layers), x


class SplitGamma(TermRule):
    """The guide's worked example: gamma with separate amounts for positive and negative
    weights, :math:`W + \\gamma_+ W^+` and :math:`W + \\gamma_- W^-`."""

    def __init__(self, gamma_pos: float = 0.25, gamma_neg: float = 0.25,
                 stabilizer: float = 1e-6) -> None:
        super().__init__(stabilizer=stabilizer)
        self.gamma_pos, self.gamma_neg = float(gamma_pos), float(gamma_neg)

    def groups(self) -> tuple[Group, ...]:
        up = PlusGamma(self.gamma_pos, Positive())
        down = PlusGamma(self.gamma_neg, Negative())
        return (
            Group((Term(Positive(), up, up), Term(Negative(), down, None)),
                  output=PositiveOutput()),
            Group((Term(Positive(), down, down), Term(Negative(), up, None)),
                  output=NegativeOutput()),
        )


def _user_epsilon() -> TermRule:
    return TermRule([Group((Term(Identity(), Identity(), Identity()),))], stabilizer=1e-6)


def _user_zplus() -> TermRule:
    return TermRule([Group((Term(Positive(), Positive(), Positive()),
                            Term(Negative(), Negative(), None)))], stabilizer=1e-6)


@pytest.mark.parametrize(("user", "shipped"), [(_user_epsilon, rp.rules.Epsilon),
                                                (_user_zplus, rp.rules.ZPlus)],
                         ids=["epsilon", "zplus"])
def test_rules_rebuilt_through_the_public_api_equal_the_shipped_ones(user, shipped) -> None:
    model, x = _network()
    ours = rp.lrp(model, x, target=[0, 1, 2, 0], rule=user())
    theirs = rp.lrp(model, x, target=[0, 1, 2, 0], rule=shipped())
    assert_close(ours, rp.to_numpy(theirs), rtol=0.0)


def test_a_user_rule_is_picked_up_by_composites() -> None:
    model, x = _network(2)
    composite = rp.composites.Composite(layer_map=[(rp.Dense, SplitGamma(0.5, 0.5))])
    ours = rp.lrp(model, x, composite=composite)
    shipped = rp.composites.Composite(layer_map=[(rp.Dense, rp.rules.Gamma(0.5))])
    assert_close(ours, rp.to_numpy(rp.lrp(model, x, composite=shipped)), rtol=1e-12)
    first = rp.composites.EpsilonPlus(layer_map=[(rp.Dense, SplitGamma(1.0, 0.0))])
    chosen = first.rules(model)  # layer name -> rule
    assert [type(chosen[name]).__name__ for name in ("0", "2", "4")] == ["SplitGamma"] * 3


def test_split_gamma_differs_when_the_amounts_differ() -> None:
    model, x = _network(3)
    same = rp.lrp(model, x, rule=SplitGamma(0.5, 0.5))
    split = rp.lrp(model, x, rule=SplitGamma(1.0, 0.0))
    assert not np.allclose(rp.to_numpy(same), rp.to_numpy(split))


class CountingInput(Modifier):
    """An input modifier that counts its calls (equal and hashable by identity)."""

    def __init__(self, inner: Modifier) -> None:
        self.inner, self.calls = inner, 0
        self.vanishes_on_nonnegative = inner.vanishes_on_nonnegative

    def __call__(self, a, xp):
        self.calls += 1
        return self.inner(a, xp)


def test_terms_that_vanish_on_nonnegative_inputs_are_dropped() -> None:
    positive, negative = CountingInput(Positive()), CountingInput(Negative())
    rule = TermRule([Group((Term(positive, Positive(), Positive()),
                            Term(negative, Negative(), None)))])
    layer = rp.Dense(on_backend(np.random.default_rng(4).normal(size=(3, 4))))
    x = on_backend(np.abs(np.random.default_rng(5).normal(size=(2, 4))))
    xp = rp.array_namespace(x=x)
    R = on_backend(np.ones((2, 3)))
    dropped = rule.relevance(layer, x, layer(x), R, xp, nonnegative=True)
    assert (positive.calls, negative.calls) == (1, 0)  # each input modified once, x- never
    kept = rule.relevance(layer, x, layer(x), R, xp, nonnegative=False)
    assert negative.calls == 1
    assert_close(dropped, rp.to_numpy(kept), rtol=1e-15)


@pytest.mark.skipif(BACKEND not in ("torch", "jax"), reason="parameters with known versions")
def test_the_engine_keeps_modified_parameters_per_layer_and_modifier() -> None:
    model, x = _network(6)
    rp.lrp(model, x, rule=rp.rules.Gamma(0.5))
    keys = set(cached_parameters(model[0]))
    assert ("weight", PlusGamma(0.5, Positive())) in keys
    assert ("bias", PlusGamma(0.5, Negative())) in keys
    rp.lrp(model, x, rule=rp.rules.Gamma(0.5))
    assert set(cached_parameters(model[0])) == keys  # reused, nothing new
    assert cached_parameters(rp.ReLU()) == {}


def test_term_rule_errors() -> None:
    with pytest.raises(NotImplementedError, match="must define groups"):
        TermRule().groups()
    with pytest.raises(ValueError, match="zero_params names unknown"):
        TermRule([], zero_params="scale")
    with pytest.raises(TypeError, match="modifies weights and needs a linear layer"):
        rp.lrp(rp.Sequential([rp.ReLU()]), on_backend(np.ones((1, 2))),
               composite=rp.composites.Composite(layer_map=[(rp.ReLU, _user_zplus())]))
