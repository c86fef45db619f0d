"""The transformer rules (AttnLRP, CP-LRP) against per-element loop references, and the
composites on a transformer block: where relevance is conserved, and where not.

The references below loop over samples and entries in NumPy float64, from the formulas
(docs: "AttnLRP as LXT 2.1 computes it"); relprop's rules run on the session's backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, on_backend
from test_io import _attention_model

import relprop as rp
from relprop.rules import Detach, FrozenNorm, Softmax, Uniform

RNG = np.random.default_rng(21)


def _xp(a):
    return rp.array_namespace(x=a)


def test_softmax_rule_equals_a_loop() -> None:
    x = RNG.normal(size=(2, 3, 4))
    R = RNG.normal(size=(2, 3, 4))
    s = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    expected = np.zeros_like(x)
    for b in range(2):
        for i in range(3):
            total = sum(R[b, i, k] for k in range(4))
            for j in range(4):
                expected[b, i, j] = x[b, i, j] * (R[b, i, j] - s[b, i, j] * total)
    layer, xb = rp.Softmax(), on_backend(x)
    got = Softmax().relevance(layer, xb, layer(xb), on_backend(R), _xp(xb))
    assert_close(got, expected)


def test_softmax_rule_gives_masked_entries_nothing() -> None:
    x = np.array([[0.5, -np.inf, 1.0]])
    layer, xb = rp.Softmax(), on_backend(x)
    out = layer(xb)
    got = Softmax().relevance(layer, xb, out, on_backend(np.array([[0.3, 0.0, 0.7]])), _xp(xb))
    assert np.isfinite(rp.to_numpy(got)).all() and rp.to_numpy(got)[0, 1] == 0.0


def _matmul_reference(a, v, R, factor_a, factor_v):
    o = a @ v
    ra, rv = np.zeros_like(a), np.zeros_like(v)
    for b in range(a.shape[0]):
        for i in range(a.shape[1]):
            for k in range(a.shape[2]):
                for d in range(v.shape[2]):
                    term = a[b, i, k] * v[b, k, d] * R[b, i, d] / o[b, i, d]
                    ra[b, i, k] += factor_a * term
                    rv[b, k, d] += factor_v * term
    return ra, rv


@pytest.mark.parametrize("rule, factors", [(Uniform(0.0), (0.5, 0.5)),
                                           (Detach(0, epsilon=0.0), (0.0, 1.0)),
                                           (Detach(1, epsilon=0.0), (1.0, 0.0))])
def test_product_rules_on_matmul_equal_a_loop(rule, factors) -> None:
    a, v = RNG.uniform(0.1, 1.0, size=(2, 3, 4)), RNG.normal(size=(2, 4, 5))
    R = RNG.normal(size=(2, 3, 5))
    layer, xs = rp.MatMul(), [on_backend(a), on_backend(v)]
    out = layer.forward_many(xs, _xp(xs[0]))
    got = rule.relevance_many(layer, xs, out, on_backend(R), _xp(xs[0]))
    for actual, expected in zip(got, _matmul_reference(a, v, R, *factors), strict=True):
        assert_close(actual, expected)


def test_product_rules_on_multiply() -> None:
    gate, up = RNG.normal(size=(2, 6)), RNG.normal(size=(2, 6))
    R = RNG.normal(size=(2, 6))
    layer, xs = rp.Multiply(), [on_backend(gate), on_backend(up)]
    out = layer.forward_many(xs, _xp(xs[0]))
    halves = Uniform(0.0).relevance_many(layer, xs, out, on_backend(R), _xp(xs[0]))
    for half in halves:
        assert_close(half, R / 2)
    detached = Detach(0, epsilon=0.0).relevance_many(layer, xs, out, on_backend(R), _xp(xs[0]))
    assert_close(detached[0], np.zeros_like(R))
    assert_close(detached[1], R)
    with pytest.raises(ValueError, match="holds every input"):
        Detach(0, 1).relevance_many(layer, xs, out, on_backend(R), _xp(xs[0]))
    assert "splits relevance between the factors" in Uniform().check(rp.Add())
    assert Detach(0).check(rp.Dense(on_backend(np.ones((2, 2))))) is not None


def test_frozen_layer_norm_equals_a_loop() -> None:
    x = RNG.normal(size=(2, 3, 5))
    w, b = RNG.normal(size=5), RNG.normal(size=5)
    R = RNG.normal(size=(2, 3, 5))
    layer = rp.LayerNorm(5, on_backend(w), on_backend(b))
    expected = np.zeros_like(x)
    for s in range(2):
        for t in range(3):
            row = x[s, t]
            sigma = np.sqrt(((row - row.mean()) ** 2).mean() + 1e-5)
            y = (row - row.mean()) / sigma * w + b
            for i in range(5):
                for j in range(5):  # dy_j/dx_i with sigma held constant
                    slope = w[j] * ((i == j) - 1 / 5) / sigma
                    expected[s, t, i] += row[i] * slope * R[s, t, j] / y[j]
    xb = on_backend(x)
    got = FrozenNorm(0.0).relevance(layer, xb, layer(xb), on_backend(R), _xp(xb))
    assert_close(got, expected)
    rms = rp.RMSNorm(5, on_backend(w))
    assert_close(FrozenNorm().relevance(rms, xb, rms(xb), on_backend(R), _xp(xb)), R)
    assert FrozenNorm().check(rp.Softmax()) is not None


def _bias_free_block(dtype="float64"):
    model, shape = _attention_model(np.random.default_rng(5), dtype)
    layers = []
    for layer in model.layers:
        if isinstance(layer, rp.Dense):
            layer = rp.Dense(layer.weight)
        elif isinstance(layer, rp.LayerNorm):
            layer = rp.LayerNorm(layer.normalized_shape, layer.weight, None, eps=layer.eps)
        layers.append(layer)
    x = on_backend(np.random.default_rng(6).normal(size=shape), dtype)
    return model.rebuild(layers), x


def test_cp_lrp_conserves_on_a_bias_free_block() -> None:
    """Attention weights and the gate held constant: every step is LRP-0 on a map linear
    in what is explained (no biases), so the input relevance sums to the logit."""
    model, x = _bias_free_block()
    relevance, report = rp.lrp(model, x, 1, composite=rp.composites.CPLRP(0.0), report=True)
    logit = rp.to_numpy(model(x))[:, 1]
    np.testing.assert_allclose(rp.to_numpy(relevance).reshape(2, -1).sum(1), logit, rtol=1e-10)
    np.testing.assert_array_equal(report["attention"].received, 0.0)  # nothing reaches it


def test_attn_lrp_loses_relevance_only_at_the_softmax() -> None:
    """AttnLRP's softmax rule is not conservative; everything else is (no biases)."""
    model, x = _bias_free_block()
    relevance, report = rp.lrp(model, x, 1, composite=rp.composites.AttnLRP(0.0), report=True)
    logit = rp.to_numpy(model(x))[:, 1]
    for balance in report.layers:
        scale = np.abs(balance.received).max() + 1e-300
        if balance.name == "attention":
            leak = balance.received - balance.sent
            assert np.abs(leak).max() > 1e-6  # it leaks
        else:
            assert np.abs(balance.received - balance.sent).max() <= 1e-10 * scale, balance
    total = rp.to_numpy(relevance).reshape(2, -1).sum(1)
    np.testing.assert_allclose(logit - total, report["attention"].received
                               - report["attention"].sent, rtol=1e-9, atol=1e-12)


def test_composites_map_the_transformer_layers() -> None:
    model, _ = _bias_free_block()
    rules = rp.composites.AttnLRP().rules(model)
    assert isinstance(rules["attention"], Softmax)
    assert isinstance(rules["scores"], Uniform) and isinstance(rules["gated"], Uniform)
    assert isinstance(rules["ln"], FrozenNorm) and isinstance(rules["rms"], FrozenNorm)
    assert isinstance(rules["q"], rp.rules.Epsilon) and isinstance(rules["silu"], rp.rules.Pass)
    cp = rp.composites.CPLRP().rules(model)
    assert isinstance(cp["mixed"], Detach) and cp["mixed"].inputs == (0,)
