"""relprop.dtd.root_point against an independent reference: per-sample, per-neuron loops in
plain Python float64 written from DESIGN.md §6, and against the defining property of a
root, z_j(r) = w_j . r + b_j = 0, evaluated in NumPy from the returned points."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, dtype_name, on_backend

import relprop as rp
from relprop.dtd import RULES, root_point

N_IN, N_OUT, BATCH = 10, 10, 8  # the shapes of the other DTD tests: JAX compiles once
LOW = -0.5 * np.arange(1, N_IN + 1)
HIGH = 1.0 + 0.25 * np.arange(N_IN)
KWARGS = {"gamma": {"gamma": 0.5}, "zB": {"low": -1.0, "high": 2.0}}


def layer_params(seed: int = 0, bias: bool = True) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(N_OUT, N_IN))
    return weight, (rng.normal(size=N_OUT) if bias else np.zeros(N_OUT))


def make_layer(weight: np.ndarray, bias: np.ndarray, dtype: str = "float64") -> rp.Dense:
    return rp.Dense(on_backend(weight, dtype), on_backend(bias, dtype))


def data(seed: int = 1, nonneg: bool = False) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(BATCH, N_IN))
    return np.abs(x) if nonneg else x


def reference(x, weight, bias, rule, relevance=None, gamma=1.0, low=None, high=None,
              eps=1e-12):
    """Loops over samples n, neurons j and inputs i; returns root, t, v, degenerate."""
    batch, n_in = x.shape
    n_out = weight.shape[0]
    root = np.zeros((batch, n_out, n_in))
    direction = np.zeros((batch, n_out, n_in))
    t = np.zeros((batch, n_out))
    degenerate = np.zeros((batch, n_out), dtype=bool)
    low = np.broadcast_to(np.asarray(0.0 if low is None else low, dtype=float), x.shape)
    high = np.broadcast_to(np.asarray(0.0 if high is None else high, dtype=float), x.shape)
    for n in range(batch):
        for j in range(n_out):
            z = bias[j]
            for i in range(n_in):
                z += weight[j, i] * x[n, i]
            v = []
            for i in range(n_in):
                w = weight[j, i]
                if rule == "w2":
                    v.append(w)
                elif rule in ("x", "0"):
                    v.append(x[n, i])
                elif rule == "z+":
                    v.append(x[n, i] if w >= 0 else 0.0)
                elif rule == "gamma":
                    v.append(x[n, i] * (1.0 + gamma) if w >= 0 else x[n, i])
                else:
                    v.append(x[n, i] - (low[n, i] if w > 0 else 0.0)
                             - (high[n, i] if w < 0 else 0.0))
            direction[n, j] = v
            if rule == "0":
                t[n, j] = 1.0  # root at the origin
                continue
            denominator = sum(v[i] * weight[j, i] for i in range(n_in))
            if abs(denominator) <= eps:
                degenerate[n, j] = True
                root[n, j] = x[n]
                continue
            numerator = z if relevance is None else relevance[n, j]
            t[n, j] = numerator / denominator
            root[n, j] = [x[n, i] - t[n, j] * v[i] for i in range(n_in)]
    return root, t, direction, degenerate


def check_points(points, expected, dtype: str = "float64") -> None:
    root, t, direction, degenerate = expected
    rtol, atol = (1e-10, 1e-12) if dtype == "float64" else (1e-4, 1e-5)
    assert_close(points.root, root, dtype=dtype, rtol=rtol, atol=atol * np.abs(root).max())
    assert_close(points.t, t, dtype=dtype, rtol=rtol, atol=atol * np.abs(t).max())
    assert_close(points.direction, direction, dtype=dtype, rtol=rtol, atol=atol)
    assert rp.library_of(points.degenerate) == BACKEND
    assert dtype_name(points.degenerate) == "bool"
    np.testing.assert_array_equal(rp.to_numpy(points.degenerate), degenerate)


@pytest.mark.parametrize("rule", RULES)
def test_all_neurons_match_reference(rule: str) -> None:
    weight, bias = layer_params()
    x = data(nonneg=rule in ("z+", "gamma"))
    points = root_point(on_backend(x), make_layer(weight, bias), rule=rule,
                        **KWARGS.get(rule, {}))
    assert points.rule == rule
    check_points(points, reference(x, weight, bias, rule, **KWARGS.get(rule, {})))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rule", RULES)
def test_root_is_a_root(rule: str, dtype: str) -> None:
    """z_j(r^(j)) = 0 for every non-degenerate neuron; rule "0" only where b_j = 0."""
    for has_bias in (True, False):
        weight, bias = layer_params(seed=2, bias=has_bias)
        layer = make_layer(weight, bias, dtype)
        weight, bias = (rp.to_numpy(a).astype(np.float64) for a in (layer.weight, layer.bias))
        x = data(seed=3, nonneg=True)
        points = root_point(on_backend(x, dtype), layer, rule=rule, **KWARGS.get(rule, {}))
        assert tuple(points.root.shape) == (BATCH, N_OUT, N_IN)
        assert dtype_name(points.root) == dtype and rp.library_of(points.root) == BACKEND
        root = rp.to_numpy(points.root).astype(np.float64)
        z_root = np.einsum("nji,ji->nj", root, weight) + bias
        z = np.abs(x @ weight.T + bias)
        tol = 1e-12 if dtype == "float64" else 1e-5
        if rule == "0":
            np.testing.assert_array_equal(root, 0.0)
            np.testing.assert_allclose(z_root, np.broadcast_to(bias, z_root.shape), atol=tol)
            continue
        ok = ~rp.to_numpy(points.degenerate)
        assert ok.mean() > 0.5
        scale = z + np.abs(x).max() * np.abs(weight).sum(axis=1)
        assert np.all(np.abs(z_root[ok]) <= 10 * tol * scale[ok]), rule


@pytest.mark.parametrize("rule", RULES)
def test_one_neuron_is_a_slice_of_all(rule: str) -> None:
    weight, bias = layer_params(seed=4)
    layer = make_layer(weight, bias)
    x = on_backend(data(seed=5, nonneg=True))
    every = root_point(x, layer, rule=rule, **KWARGS.get(rule, {}))
    for j in (0, 3, N_OUT - 1):
        one = root_point(x, layer, j, rule=rule, **KWARGS.get(rule, {}))
        assert_close(one.root, rp.to_numpy(every.root)[:, j, :], shape=(BATCH, N_IN))
        assert_close(one.t, rp.to_numpy(every.t)[:, j], shape=(BATCH,))
        assert_close(one.direction, rp.to_numpy(every.direction)[:, j, :])
        np.testing.assert_array_equal(rp.to_numpy(one.degenerate),
                                      rp.to_numpy(every.degenerate)[:, j])


@pytest.mark.parametrize("rule", ["x", "z+", "w2", "gamma", "zB"])
def test_relevance_given_vs_default(rule: str) -> None:
    weight, bias = layer_params(seed=6)
    layer = make_layer(weight, bias)
    x_np = data(seed=7, nonneg=True)
    x = on_backend(x_np)
    kwargs = KWARGS.get(rule, {})
    z_np = x_np @ weight.T + bias
    default = root_point(x, layer, rule=rule, **kwargs)
    explicit = root_point(x, layer, rule=rule, relevance=on_backend(z_np), **kwargs)
    assert_close(explicit.root, rp.to_numpy(default.root), rtol=1e-12, atol=1e-14)
    relevance = 0.5 * np.maximum(z_np, 0.0)
    given = root_point(x, layer, rule=rule, relevance=on_backend(relevance), **kwargs)
    check_points(given, reference(x_np, weight, bias, rule, relevance=relevance, **kwargs))
    # the root removes R_j, not z_j: z_j(r) = z_j - R_j
    z_root = np.einsum("nji,ji->nj", rp.to_numpy(given.root), weight) + bias
    ok = ~rp.to_numpy(given.degenerate)
    np.testing.assert_allclose(z_root[ok], (z_np - relevance)[ok], atol=1e-12)
    one = root_point(x, layer, 2, rule=rule, relevance=on_backend(relevance[:, 2]), **kwargs)
    assert_close(one.root, rp.to_numpy(given.root)[:, 2, :])
    one_full = root_point(x, layer, 2, rule=rule, relevance=on_backend(relevance), **kwargs)
    assert_close(one_full.root, rp.to_numpy(given.root)[:, 2, :])


def test_degenerate_neurons_are_flagged_not_divided() -> None:
    weight, bias = layer_params(seed=8)
    weight[0] = -np.abs(weight[0])  # no non-negative weight: z+ has no direction
    weight[1] = np.where(np.arange(N_IN) == 0, 1.0, -1.0)  # positive only at input 0
    weight[2] = 0.0  # no direction for any rule
    bias[0] = 0.3  # active although degenerate under z+
    x_np = data(seed=9, nonneg=True)
    x_np[0, 0] = 0.0  # sample 0: neuron 1's only positive input is off
    layer = make_layer(weight, bias)
    x = on_backend(x_np)
    expected = {rule: np.zeros((BATCH, N_OUT), dtype=bool) for rule in ("z+", "gamma", "w2")}
    expected["z+"][:, 0] = True
    expected["z+"][0, 1] = True
    for flags in expected.values():
        flags[:, 2] = True
    for rule, flags in expected.items():
        points = root_point(x, layer, rule=rule)
        np.testing.assert_array_equal(rp.to_numpy(points.degenerate), flags, err_msg=rule)
        t = rp.to_numpy(points.t)
        root = rp.to_numpy(points.root)
        assert np.all(np.isfinite(root)) and np.all(np.isfinite(t))
        np.testing.assert_array_equal(t[flags], 0.0)  # moves nothing
        np.testing.assert_array_equal(root[flags],
                                      np.broadcast_to(x_np[:, None], root.shape)[flags])
        check_points(points, reference(x_np, weight, bias, rule))
    one = root_point(x, layer, 0, rule="z+")
    assert rp.to_numpy(one.degenerate).all()
    assert_close(one.root, x_np)
    assert_close(one.t, np.zeros(BATCH))


def test_zb_bounds_scalars_and_arrays() -> None:
    weight, bias = layer_params(seed=10)
    layer = make_layer(weight, bias)
    x_np = np.clip(data(seed=11), LOW, HIGH)
    x = on_backend(x_np)
    for low, high in ((LOW, HIGH), (np.broadcast_to(LOW, x_np.shape), HIGH)):
        points = root_point(x, layer, rule="zB", low=on_backend(np.ascontiguousarray(low)),
                            high=on_backend(high))
        check_points(points, reference(x_np, weight, bias, "zB", low=low, high=high))
        z_root = np.einsum("nji,ji->nj", rp.to_numpy(points.root), weight) + bias
        np.testing.assert_allclose(z_root, 0.0, atol=1e-12)
    mixed = root_point(x, layer, rule="zB", low=-1.0, high=on_backend(HIGH))
    check_points(mixed, reference(x_np, weight, bias, "zB", low=-1.0, high=HIGH))


def test_errors() -> None:
    weight, bias = layer_params()
    layer = make_layer(weight, bias)
    x = on_backend(data())
    with pytest.raises(ValueError, match="unknown root-point rule"):
        root_point(x, layer, rule="z-")
    with pytest.raises(IndexError):
        root_point(x, layer, N_OUT)
    with pytest.raises(TypeError, match="low="):
        root_point(x, layer, rule="zB", high=1.0)
    with pytest.raises(ValueError, match="low <= high"):
        root_point(x, layer, rule="zB", low=2.0, high=1.0)
    with pytest.raises(ValueError, match="broadcast"):
        root_point(x, layer, rule="zB", low=on_backend(np.zeros(N_IN + 1)), high=1.0)
    with pytest.raises(ValueError, match="shape"):
        root_point(on_backend(np.ones((2, N_IN + 1))), layer)
    with pytest.raises(TypeError, match="dtype"):
        root_point(on_backend(data(), "float32"), layer)
    with pytest.raises(ValueError, match="relevance must have shape"):
        root_point(x, layer, relevance=on_backend(np.ones((BATCH, 2))))
    with pytest.raises(ValueError, match="gamma"):
        root_point(x, layer, rule="gamma", gamma=-1.0)
    with pytest.raises(TypeError, match="Dense"):
        root_point(x, rp.ReLU())
    if BACKEND != "numpy":
        with pytest.raises(TypeError, match="mixed"):
            root_point(x, layer, rule="zB", low=np.zeros(N_IN), high=1.0)


def test_zb_bounds_are_checked_by_the_function_of_the_zbox_rule() -> None:
    """One bound check (relprop._bounds.input_bounds) for the zB root and LRP-z^B: the same
    values accepted, the same mistakes refused with the same words."""
    from relprop._bounds import input_bounds

    weight, bias = layer_params()
    layer = make_layer(weight, bias)
    x = on_backend(data())
    xp = rp.array_namespace(x=x)
    with pytest.raises(ValueError, match=r'rule "zB" needs low <= high everywhere; got '
                                         r"low=2.0, high=1.0"):
        root_point(x, layer, rule="zB", low=2.0, high=1.0)
    low, high = on_backend(np.zeros(N_IN)), on_backend(np.full(N_IN, -1.0))
    with pytest.raises(ValueError, match='rule "zB" needs low <= high everywhere; some low'):
        root_point(x, layer, rule="zB", low=low, high=high)
    lo, hi = input_bounds(-1.0, on_backend(HIGH), x, xp, who="zB")
    assert_close(lo, np.full((BATCH, N_IN), -1.0))
    assert_close(hi, np.broadcast_to(HIGH, (BATCH, N_IN)))
    # the ZBox rule refuses inverted array bounds with the words input_bounds uses for it
    model = rp.Sequential([layer])
    with pytest.raises(ValueError) as zbox:
        rp.lrp(model, x, 0, rule=rp.rules.ZBox(low, high))
    with pytest.raises(ValueError) as shared:
        input_bounds(low, high, x, xp, who="ZBox", low_name="ZBox low",
                     high_name="ZBox high", x_name="the input of the layer it explains")
    assert str(zbox.value) == str(shared.value)
