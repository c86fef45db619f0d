"""JAX only: ``jax.jit`` of ``rp.lrp`` and ``rp.gradient`` runs and matches eager.

The rule engine caches modified parameters (``relprop.rules.terms``); a value computed inside a
trace is a tracer and must never be kept, or the next eager call (or another trace) would
use a leaked tracer. The order tests below call jit first, then eager, then jit again on a
fresh model and on the same model.

jit lets XLA fuse and reorder operations, so jit and eager agree to rounding, not bitwise:
rtol 1e-12 in float64, 1e-5 in float32, with ``atol = rtol * max|R|``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, dense_model, on_backend, random_weights

import relprop as rp
from relprop.rules.terms import cached_parameters

if BACKEND != "jax":
    pytest.skip("jax.jit is JAX only", allow_module_level=True)

if BACKEND == "jax":
    import jax
    import jax.core

DTYPES = ["float64", "float32"]
RTOL = {"float64": 1e-12, "float32": 1e-5}

COMPOSITES = {
    "EpsilonPlus": lambda: rp.composites.EpsilonPlus(),
    "EpsilonPlusFlat": lambda: rp.composites.EpsilonPlusFlat(),
    "EpsilonAlpha2Beta1": lambda: rp.composites.EpsilonAlpha2Beta1(),
    "EpsilonAlpha2Beta1Flat": lambda: rp.composites.EpsilonAlpha2Beta1Flat(),
    "EpsilonGammaBox": lambda: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0),
    "custom": lambda: rp.composites.Composite(
        layer_map={rp.Dense: rp.rules.Gamma(0.5)},
        first_map={rp.Dense: rp.rules.ZBox(-4.0, 4.0)},
        name_map={"4": rp.rules.AlphaBeta(2.0, 1.0)},
    ),
}

RULES = {
    "Epsilon-nobias": lambda: rp.rules.Epsilon(0.1, zero_params="bias"),
    "ZPlus": lambda: rp.rules.ZPlus(),
    "AlphaBeta": lambda: rp.rules.AlphaBeta(2.0, 1.0),
    "Gamma": lambda: rp.rules.Gamma(0.25),
    "ZBox": lambda: rp.rules.ZBox(-3.0, 3.0),
    "WSquare": lambda: rp.rules.WSquare(),
}


def make(dtype: str = "float64", seed: int = 0):
    rng = np.random.default_rng(seed)
    model = dense_model(random_weights(rng, [6, 8, 5, 3]), dtype)
    x = on_backend(rng.normal(scale=1.5, size=(4, 6)), dtype)
    return model, x


def same(jitted, eager, dtype: str) -> None:
    expected = rp.to_numpy(eager).astype(np.float64)
    rtol = RTOL[dtype]
    assert_close(jitted, expected, dtype=dtype, rtol=rtol,
                 atol=rtol * (float(np.abs(expected).max()) or 1.0))


def no_tracers_cached(model: rp.Sequential) -> None:
    for layer in model:
        for key, value in cached_parameters(layer).items():
            leaves = value if isinstance(value, tuple) else (value,)
            for leaf in leaves:
                assert not isinstance(leaf, jax.core.Tracer), f"{layer!r} cached a tracer {key}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(COMPOSITES))
def test_jit_composite_matches_eager(name: str, dtype: str) -> None:
    model, x = make(dtype)
    jitted = jax.jit(lambda a: rp.lrp(model, a, target=0, composite=COMPOSITES[name]()))(x)
    no_tracers_cached(model)
    eager = rp.lrp(model, x, target=0, composite=COMPOSITES[name]())
    same(jitted, eager, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(RULES))
def test_jit_rule_matches_eager(name: str, dtype: str) -> None:
    model, x = make(dtype)
    eager = rp.lrp(model, x, target=[2, 1, 0, 2], rule=RULES[name]())
    jitted = jax.jit(lambda a: rp.lrp(model, a, target=[2, 1, 0, 2], rule=RULES[name]()))(x)
    same(jitted, eager, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_default_target_and_return_layers(dtype: str) -> None:
    model, x = make(dtype)
    composite = rp.composites.EpsilonAlpha2Beta1Flat

    def explain(a):
        return rp.lrp(model, a, composite=composite(), return_layers=True)

    jitted, jitted_layers = jax.jit(explain)(x)
    eager, eager_layers = explain(x)
    same(jitted, eager, dtype)
    assert list(eager_layers) == ["input", *model.names]
    assert set(jitted_layers) == set(eager_layers)  # jit returns a dict's keys sorted
    for name, e in eager_layers.items():
        same(jitted_layers[name], e, dtype)
    # the default target is each sample's arg-max: the output relevance says so
    out = rp.to_numpy(model(x))
    top = out.argmax(axis=1)
    expected_start = np.zeros_like(out, dtype=np.float64)
    expected_start[np.arange(len(top)), top] = out[np.arange(len(top)), top]
    same(jitted_layers[model.names[-1]], expected_start, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_integer_array_target(dtype: str) -> None:
    """Traced integer targets (one per sample) pass the target checks."""
    model, x = make(dtype)
    target = rp.asarray(np.array([0, 2, 1, 1]), dtype="int64")
    fn = jax.jit(lambda a, t: rp.lrp(model, a, t, composite=rp.composites.EpsilonPlus()))
    same(fn(x, target), rp.lrp(model, x, target, composite=rp.composites.EpsilonPlus()), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_gradient(dtype: str) -> None:
    model, x = make(dtype)
    for target in (0, None, [2, 0, 1, 1]):
        jitted = jax.jit(lambda a, t=target: rp.gradient(model, a, t))(x)
        same(jitted, rp.gradient(model, x, target), dtype)
    same(jax.jit(lambda a: rp.gradient_x_input(model, a, 1))(x),
         rp.gradient_x_input(model, x, 1), dtype)
    # and both against jax's own gradient of the selected output
    oracle = jax.grad(lambda a: model(a)[:, 1].sum())(x)
    same(jax.jit(lambda a: rp.gradient(model, a, 1))(x), oracle, dtype)


def test_jit_with_lambda_layer() -> None:
    """A user Lambda without vjp inside jit: its vjp is jax.vjp, traced."""
    rng = np.random.default_rng(3)
    (w1, b1), (w2, b2) = random_weights(rng, [4, 5, 2])

    def softsign(a):
        xp = rp.array_namespace(x=a)
        return a / (1.0 + xp.abs(a))

    model = rp.Sequential([rp.Dense(on_backend(w1), on_backend(b1)), rp.Lambda(softsign),
                           rp.Dense(on_backend(w2), on_backend(b2))])
    x = on_backend(rng.normal(size=(3, 4)))
    for fn in (lambda a: rp.lrp(model, a, 1, rule=rp.rules.Epsilon()),
               lambda a: rp.gradient(model, a, 1)):
        same(jax.jit(fn)(x), fn(x), "float64")


@pytest.mark.parametrize("dtype", DTYPES)
def test_jit_then_eager_then_jit(dtype: str) -> None:
    """No leaked tracers from ``Linear.cached``: jit first, eager next, then jit on a fresh
    model and on the same model, for rules that cache modified weights."""
    composites = [
        lambda: rp.composites.Composite(layer_map={rp.Dense: rp.rules.Gamma()},
                                        first_map={rp.Dense: rp.rules.ZBox(-3.0, 3.0)}),
        lambda: rp.composites.Composite(layer_map={rp.Dense: rp.rules.AlphaBeta()},
                                        first_map={rp.Dense: rp.rules.WSquare()}),
        lambda: rp.composites.Composite(layer_map={rp.Dense: rp.rules.ZPlus(zero_params="bias")},
                                        first_map={rp.Dense: rp.rules.Flat()}),
    ]
    for composite in composites:
        model, x = make(dtype)

        def explain(a, m=model, c=composite):
            return rp.lrp(m, a, 0, composite=c())

        first = jax.jit(explain)(x)  # 1. jit on a fresh model
        no_tracers_cached(model)
        eager = explain(x)  # 2. eager on the same model (a leaked tracer would raise here)
        same(first, eager, dtype)
        fresh, _ = make(dtype)
        again_fresh = jax.jit(lambda a, m=fresh, c=composite: rp.lrp(m, a, 0, composite=c()))(x)
        again_same = jax.jit(explain)(x)  # 3. a new trace on the (now cached) same model
        same(again_fresh, eager, dtype)
        same(again_same, eager, dtype)
        no_tracers_cached(model)
        no_tracers_cached(fresh)
        # 4. eager once more, and a different jitted function on the same model
        same(explain(x), eager, dtype)
        same(jax.jit(lambda a, m=model, c=composite: rp.lrp(m, 2.0 * a, 0, composite=c()))(x),
             explain(2.0 * x), dtype)


def test_eager_then_jit_reuses_cache_correctly() -> None:
    model, x = make("float64")
    rule = rp.rules.Gamma(0.5)
    eager = rp.lrp(model, x, 1, rule=rule)
    cached_keys = [set(cached_parameters(layer)) for layer in model if isinstance(layer, rp.Dense)]
    assert all(cached_keys), "eager run should cache the modified weights"
    jitted = jax.jit(lambda a: rp.lrp(model, a, 1, rule=rule))(x)
    same(jitted, eager, "float64")
    no_tracers_cached(model)


def test_jit_with_traced_weights() -> None:
    """A model built inside the trace from traced parameters (as under jax.grad over
    weights): nothing traced is cached and the result matches eager."""
    params = random_weights(np.random.default_rng(4), [6, 8, 5, 3])
    arrays = [(on_backend(w), on_backend(b)) for w, b in params]
    _, x = make("float64")
    built: list[rp.Sequential] = []

    def explain(weights, a):
        layers = []
        for index, (w, b) in enumerate(weights):
            if index:
                layers.append(rp.ReLU())
            layers.append(rp.Dense(w, b))
        model = rp.Sequential(layers)
        built.append(model)
        flat = rp.lrp(model, a, 0, composite=rp.composites.EpsilonPlusFlat())
        return flat + rp.lrp(model, a, 0, rule=rp.rules.Gamma())

    jitted = jax.jit(explain)(arrays, x)
    eager = explain(arrays, x)
    same(jitted, eager, "float64")
    no_tracers_cached(built[0])
    # differentiate relevance with respect to the weights: runs and is finite
    grads = jax.jit(jax.grad(lambda ws: explain(ws, x).sum()))(arrays)
    assert all(np.all(np.isfinite(np.asarray(g))) for pair in grads for g in pair)


def test_jit_with_closed_over_input_and_target() -> None:
    """Input and integer targets closed over by the jitted function are concrete, but the
    checks run on them inside the trace are not: they must be skipped, not crash."""
    model, x = make("float64")
    target = rp.asarray(np.array([1, 0, 2, 2]), dtype="int64")
    start = on_backend(np.random.default_rng(6).normal(size=(4, 3)))
    params = [layer.weight for layer in model if isinstance(layer, rp.Dense)]

    def explain(weights, t):
        layers = list(model)
        for index, weight in zip((0, 2, 4), weights, strict=True):
            layers[index] = rp.Dense(weight, model[index].bias)
        return rp.lrp(rp.Sequential(layers), x, t, rule=rp.rules.Epsilon(0.1))

    for t in (target, start, 1, None):
        same(jax.jit(lambda ws, t=t: explain(ws, t))(params), explain(params, t), "float64")
    same(jax.jit(lambda: rp.gradient(model, x, target))(), rp.gradient(model, x, target),
         "float64")
