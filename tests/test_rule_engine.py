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


LAYERS = {
    "dense": (lambda w: rp.Dense(w[0], w[1]), (5, 4), (3, 4)),
    "conv2d-groups": (lambda w: rp.Conv2d(w[0], w[1], stride=2, padding=1, groups=2),
                      (6, 2, 3, 3), (2, 4, 6, 5)),
    "conv-transpose-groups": (lambda w: rp.ConvTranspose2d(w[0], w[1], stride=2, groups=2),
                              (4, 3, 2, 3), (2, 4, 3, 3)),
    "conv3d": (lambda w: rp.Conv3d(w[0], w[1], padding=1), (3, 2, 2, 2, 3), (1, 2, 3, 4, 3)),
}
ALL_RULES = {
    "Epsilon": lambda: rp.rules.Epsilon(),
    "ZPlus": lambda: rp.rules.ZPlus(),
    "AlphaBeta": lambda: rp.rules.AlphaBeta(2.0, 1.0),
    "Gamma": lambda: rp.rules.Gamma(0.25),
    "ZBox": lambda: rp.rules.ZBox(-3.0, 3.0),
    "WSquare": lambda: rp.rules.WSquare(),
    "Flat": lambda: rp.rules.Flat(),
    "SplitGamma": lambda: SplitGamma(0.7, 0.1),
}


def _layer_and_input(name: str, seed: int = 7):
    make, weight_shape, x_shape = LAYERS[name]
    rng = np.random.default_rng(seed)
    weight = on_backend(rng.normal(size=weight_shape))
    channels = weight_shape[1] * 2 if name == "conv-transpose-groups" else weight_shape[0]
    layer = make((weight, on_backend(rng.normal(size=channels))))
    x = on_backend(rng.normal(size=x_shape))
    return layer, x


@pytest.mark.parametrize("nonnegative", [False, True], ids=["any-input", "after-relu"])
@pytest.mark.parametrize("rule", list(ALL_RULES))
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_fused_calls_equal_the_terms_one_by_one(layer_name, rule, nonnegative) -> None:
    """Terms that read one input run as one call of the stacked layer (their weights side
    by side within each group): the same relevance as calling each term on its own."""
    layer, x = _layer_and_input(layer_name)
    xp = rp.array_namespace(x=x)
    if nonnegative:
        x = xp.abs(x)
    out = layer(x)
    R = on_backend(np.random.default_rng(8).normal(size=tuple(out.shape)))
    fused = ALL_RULES[rule]()
    fused.fuse = True
    alone = ALL_RULES[rule]()
    assert not alone.fuse  # off by default
    expected = alone.relevance(layer, x, out, R, xp, nonnegative=nonnegative)
    got = fused.relevance(layer, x, out, R, xp, nonnegative=nonnegative)
    scale = float(np.max(np.abs(rp.to_numpy(expected))))
    assert_close(got, rp.to_numpy(expected), rtol=1e-12, atol=1e-13 * scale)


class _Counting:
    """Wraps a layer's linear and transpose to count calls."""

    def __init__(self, layer) -> None:
        self.forward = self.backward = 0
        linear, transpose = layer.linear, layer.transpose

        def counted_linear(*args, **kwargs):
            self.forward += 1
            return linear(*args, **kwargs)

        def counted_transpose(*args, **kwargs):
            self.backward += 1
            return transpose(*args, **kwargs)

        layer.linear, layer.transpose = counted_linear, counted_transpose


@pytest.mark.parametrize(("rule", "nonnegative", "fused", "alone"), [
    ("Epsilon", False, (0, 1), (0, 1)),    # divides by the recorded output
    ("ZPlus", True, (1, 1), (1, 1)),       # x- dropped after a ReLU
    ("ZPlus", False, (2, 2), (2, 2)),      # x+ and x- read different inputs
    # after a ReLU: z and W+ x give both terms' forward passes; transposes with W and W+
    # (stacked when fused); zennit: 2 and 5
    ("Gamma", True, (1, 1), (1, 2)),
    ("Gamma", False, (2, 2), (4, 4)),
    # W+ x and W- x (z - W+ x would cancel where W- x is small), transposes with W+, W-
    ("AlphaBeta", True, (1, 1), (2, 2)),
    ("AlphaBeta", False, (2, 2), (4, 4)),
    ("ZBox", False, (2, 3), (2, 3)),       # x, low, high: three inputs; x's forward reused
])
def test_calls_per_rule(rule, nonnegative, fused, alone) -> None:
    for fuse, calls in ((True, fused), (False, alone)):
        layer, x = _layer_and_input("conv2d-groups")
        xp = rp.array_namespace(x=x)
        if nonnegative:
            x = xp.abs(x)
        out = layer(x)
        counter = _Counting(layer)
        chosen = ALL_RULES[rule]()
        chosen.fuse = fuse
        chosen.relevance(layer, x, out, out, xp, nonnegative=nonnegative)
        assert (counter.forward, counter.backward) == calls, f"fuse={fuse}"


@pytest.mark.parametrize(("rule", "formula"), [
    (rp.rules.ReLUDeconvNet(), lambda x, R: np.maximum(R, 0.0)),
    (rp.rules.ReLUGuidedBackprop(), lambda x, R: np.maximum(R, 0.0) * (x > 0)),
    (rp.rules.ReLUBetaSmooth(3.0), lambda x, R: R / (1.0 + np.exp(-3.0 * x))),
], ids=["deconvnet", "guided-backprop", "beta-smooth"])
def test_relu_rules_formulas(rule, formula) -> None:
    rng = np.random.default_rng(9)
    x_np, R_np = rng.normal(size=(3, 7)), rng.normal(size=(3, 7))
    x, R = on_backend(x_np), on_backend(R_np)
    xp = rp.array_namespace(x=x)
    layer = rp.ReLU()
    assert rule.check(layer) is None
    assert_close(rule.relevance(layer, x, layer(x), R, xp), formula(x_np, R_np), rtol=1e-14)
    assert "applies to rp.ReLU layers only" in rule.check(rp.Tanh())
    with pytest.raises(TypeError, match="applies to rp.ReLU layers only"):
        rp.lrp(rp.Sequential([rp.Dense(on_backend(np.ones((2, 7)))), rp.Tanh()]), x,
               composite=rp.composites.Composite(layer_map=[(rp.layers.Activation, rule)]))


def test_max_pool_ties_first_or_split() -> None:
    """Gradient(ties="first") routes a tie to the first maximum (torch's autograd); the
    default splits it. Both conserve the total."""
    x = on_backend(np.zeros((1, 1, 2, 2)))  # one window, four tied zeros
    xp = rp.array_namespace(x=x)
    pool = rp.MaxPool2d(2)
    R = on_backend(np.full((1, 1, 1, 1), 4.0))
    first = rp.rules.Gradient(ties="first").relevance(pool, x, pool(x), R, xp)
    split = rp.rules.Gradient().relevance(pool, x, pool(x), R, xp)
    assert_close(first, np.array([[[[4.0, 0.0], [0.0, 0.0]]]]), rtol=0.0)
    assert_close(split, np.full((1, 1, 2, 2), 1.0), rtol=0.0)
    overlapping = rp.AdaptiveMaxPool2d((1, 1))  # divisible: the max-pool path
    assert_close(rp.rules.Gradient(ties="first").relevance(overlapping, x, overlapping(x), R,
                                                           xp),
                 np.array([[[[4.0, 0.0], [0.0, 0.0]]]]), rtol=0.0)
    wide = on_backend(np.zeros((1, 1, 3, 3)))
    adaptive = rp.AdaptiveMaxPool2d((2, 2))  # overlapping windows
    got = rp.rules.Gradient(ties="first").relevance(
        adaptive, wide, adaptive(wide), on_backend(np.ones((1, 1, 2, 2))), xp)
    # windows [0:2, 0:2], [0:2, 1:3], [1:3, 0:2], [1:3, 1:3]: each one's first element
    assert_close(got, np.array([[[[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]]]),
                 rtol=0.0)
    assert repr(rp.rules.Gradient(ties="first")) == "Gradient(ties='first')"
    with pytest.raises(ValueError, match="ties must be 'split' or 'first'"):
        rp.rules.Gradient(ties="last")
