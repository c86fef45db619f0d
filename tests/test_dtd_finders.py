"""relprop.dtd.local_linear and relprop.dtd.finders on the backend under test.

Oracles are NumPy float64 computations from the network's parameters: forward passes,
ReLU patterns and input gradients (products of weight matrices and masks), the secant
root on a segment, the quadratic's root on a segment. Seed 000's assertions: a root found
by the interpolation or Metropolis-Hastings finder has the input's gradient, and the
first-order Taylor expansion at the root reproduces the output at the input.

JAX compiles every operation once per shape, so the tests share one network
(``MLP(3, 10, 10, 2, seed=5)``), one input and 50 candidates per search.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp
from relprop.dtd import MLP, output_fn, sample_inputs
from relprop.dtd.finders import (
    CacheInfo,
    ClosedFormRootFinder,
    InterpolationRootFinder,
    MetropolisHastingsRootFinder,
    solve_on_segments,
)
from relprop.dtd.local_linear import (
    region_keys,
    same_region,
    sample_interpolation,
    sample_metropolis_hastings,
)

SEED = 5  # MLP(3, 10, 10, 2, seed=5): inputs with output 0 > 0.5 exist


@pytest.fixture(scope="module")
def model() -> rp.Sequential:
    return MLP(3, 10, 10, 2, seed=SEED, backend=BACKEND)


@pytest.fixture(scope="module")
def x(model) -> object:
    # through NumPy, as on_backend makes every array: JAX compiles separately for arrays
    # committed to a device and uncommitted ones (sample_inputs leaves them uncommitted
    # too, as every DTD function does: relprop._placement)
    return on_backend(rp.to_numpy(sample_inputs(model, 1, threshold=0.5, output=0, seed=0)))


def params_np(model: rp.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(rp.to_numpy(layer.weight), rp.to_numpy(layer.bias))
            for layer in model.layers if isinstance(layer, rp.Dense)]


def forward_np(params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Output and the ReLU pattern (hidden pre-activations > 0, concatenated)."""
    masks = []
    for index, (weight, bias) in enumerate(params):
        z = x @ weight.T + bias
        if index < len(params) - 1:
            masks.append(z > 0)
            x = np.maximum(z, 0.0)
        else:
            x = z
    return x, np.concatenate(masks, axis=-1)


def gradient_np(params, x: np.ndarray, output: int) -> np.ndarray:
    """d f_output / dx per row: e^T W_L D W_{L-1} ... D W_1."""
    grads = []
    for row in x:
        _, pattern = forward_np(params, row[None])
        jac = params[0][0]
        width = params[0][0].shape[0]
        for layer in range(1, len(params)):
            mask = pattern[0, (layer - 1) * width:layer * width].astype(float)
            jac = params[layer][0] @ (mask[:, None] * jac)
        grads.append(jac[output])
    return np.stack(grads)


# --- local linear regions -----------------------------------------------------------------


def test_same_region_and_region_keys_follow_the_activation_pattern(model) -> None:
    params = params_np(model)
    rng = np.random.default_rng(3)
    a = np.abs(rng.normal(size=(2, 10)))
    b = a + rng.normal(scale=0.3, size=a.shape)
    b[0] = a[0] * (1 + 1e-9)  # surely the same region
    _, pa = forward_np(params, a)
    _, pb = forward_np(params, b)
    expected = (pa == pb).all(axis=1)
    assert expected.tolist() == [True, False]
    got = same_region(model, on_backend(a), on_backend(b))
    assert rp.library_of(got) == BACKEND and tuple(got.shape) == (2,)
    assert rp.to_numpy(got).tolist() == expected.tolist()
    keys = region_keys(model, on_backend(a)) + region_keys(model, on_backend(b))
    assert [keys[i] == keys[2 + i] for i in range(2)] == expected.tolist()
    # several points per input
    got = same_region(model, on_backend(a), on_backend(np.stack([b, a], axis=1)))
    assert rp.to_numpy(got).tolist() == [[True, True], [False, True]]
    # the gradient criterion of seed 000 (same input gradient of output 0)
    grad_same = np.abs(gradient_np(params, a, 0) - gradient_np(params, b, 0)).max(axis=1) < 1e-8
    got = same_region(model, on_backend(a), on_backend(b), output=0)
    assert rp.to_numpy(got).tolist() == grad_same.tolist()
    # from a hidden layer on: only the ReLUs from there count
    h_a = np.maximum(a @ params[0][0].T + params[0][1], 0)
    h_b = np.maximum(b @ params[0][0].T + params[0][1], 0)
    upper = ((h_a @ params[1][0].T + params[1][1] > 0)
             == (h_b @ params[1][0].T + params[1][1] > 0)).all(axis=1)
    got = same_region(model, on_backend(h_a), on_backend(h_b), start=2)
    assert rp.to_numpy(got).tolist() == upper.tolist()


def test_interpolation_points_reach_the_edge_of_the_region(model, x) -> None:
    params = params_np(model)
    res = sample_interpolation(model, x, n_rays=50, enforce_nonnegative=True, seed=1)
    points, t, u = (rp.to_numpy(a) for a in (res.points, res.t, res.directions))
    x_np = rp.to_numpy(x)
    assert_close(res.points, points, shape=(1, 50, 10))
    assert np.all(points >= 0)
    assert np.allclose(np.linalg.norm(u, axis=-1), 1.0)
    _, p_x = forward_np(params, x_np)
    _, p_points = forward_np(params, points.reshape(-1, 10))
    assert (p_points == p_x).all(axis=1).all()  # inside
    assert rp.to_numpy(res.inside).all()
    bounded = rp.to_numpy(res.bounded)[0]
    assert bounded.any()
    # just beyond the returned point a bounded ray is outside (40 bisection steps)
    radius = 10 * max(1.0, np.linalg.norm(x_np))
    beyond = x_np[0] + (t[0, :, None] + 1e-9 * radius) * u[0]
    _, p_beyond = forward_np(params, beyond[bounded])
    assert not (p_beyond == p_x).all(axis=1).any()
    # an unbounded ray stopped at the orthant or the radius, still inside
    ends = x_np[0] + t[0, ~bounded, None] * u[0, ~bounded]
    assert np.all((np.abs(ends).min(axis=1) < 1e-9)
                  | np.isclose(t[0, ~bounded], radius))
    # seeded: the same numbers again
    again = sample_interpolation(model, x, n_rays=50, enforce_nonnegative=True, seed=1)
    assert_close(again.points, points)


def test_metropolis_hastings_stays_in_the_region_and_adapts(model, x) -> None:
    params = params_np(model)
    res = sample_metropolis_hastings(model, x, n_chains=5, n_steps=10, n_warmup=5,
                                     step_size=1e-3, enforce_nonnegative=True, seed=2)
    samples = rp.to_numpy(res.samples)
    assert_close(res.samples, samples, shape=(1, 50, 10))
    assert np.all(samples >= 0)
    _, p_x = forward_np(params, rp.to_numpy(x))
    _, p_s = forward_np(params, samples.reshape(-1, 10))
    assert (p_s == p_x).all(axis=1).all()
    assert np.unique(samples.reshape(-1, 10), axis=0).shape[0] > 25  # the chains move
    # tiny steps are accepted: each acceptance multiplies the step size by exp(0.5 * 0.7),
    # each rejection by exp(-0.5 * 0.3)
    acceptance = rp.to_numpy(res.acceptance)
    sigma0 = 1e-3 * max(1.0, np.linalg.norm(rp.to_numpy(x)) / np.sqrt(10))
    steps = rp.to_numpy(res.step_size)
    assert (acceptance == 1.0).any()
    assert np.all(steps[acceptance == 1.0] >= sigma0 * np.exp(0.35 * 10 - 0.15 * 5) * 0.999)
    again = sample_metropolis_hastings(model, x, n_chains=5, n_steps=10, n_warmup=5,
                                       step_size=1e-3, enforce_nonnegative=True, seed=2)
    assert_close(again.samples, samples)


# --- root search on segments --------------------------------------------------------------


def test_segment_roots_of_an_affine_function_are_the_nearest_secant_roots() -> None:
    # shapes as in the finders' searches (1 input, 10 features, 50 candidates)
    rng = np.random.default_rng(7)
    w, b = rng.normal(size=(1, 10)), rng.normal(size=1)
    x = rng.normal(size=(1, 10))
    points = x[:, None, :] + rng.normal(scale=2.0, size=(1, 50, 10))
    valid = rng.random((1, 50)) > 0.2
    xp = rp.array_namespace(x=on_backend(x))
    weight, bias = on_backend(w), on_backend(b)

    def fn(a):
        return xp.matmul(a, xp.matrix_transpose(weight)) + bias

    root, found, value = solve_on_segments(fn, on_backend(x), fn(on_backend(x)),
                                           on_backend(points), on_backend(valid, "bool"))
    r0 = (x @ w.T + b)[0, 0]
    rc = points[0] @ w[0] + b[0]
    ok = valid[0] & (r0 * rc <= 0)
    assert ok.any() and not ok.all()
    t = r0 / (r0 - rc)
    k = np.argmin(np.where(ok, t * np.linalg.norm(points[0] - x[0], axis=1), np.inf))
    expected = x[0] + t[k] * (points[0, k] - x[0])
    assert_close(root, expected[None, None, :], rtol=1e-12, atol=1e-12)
    assert rp.to_numpy(found).all()
    assert_close(value, np.zeros((1, 1)), atol=1e-12)


def test_segment_roots_of_a_nonlinear_function_converge_by_regula_falsi() -> None:
    # R(a) = |a|^2 - 1: from |x| > 1 towards candidates inside the unit ball
    rng = np.random.default_rng(8)
    x = rng.normal(size=(1, 10))
    x *= 2.5 / np.linalg.norm(x)
    points = rng.normal(size=(1, 50, 10))
    points *= 0.5 / np.linalg.norm(points, axis=-1, keepdims=True)
    xp = rp.array_namespace(x=on_backend(x))

    def fn(a):
        return xp.sum(a * a, axis=1) - 1.0

    xb = on_backend(x)
    root, found, value = solve_on_segments(
        fn, xb, xp.reshape(fn(xb), (1, 1)), on_backend(points),
        on_backend(np.ones((1, 50)), "bool"), steps=60, rtol=1e-14)
    # the candidate is chosen by the secant estimate of the root's distance; then the
    # root on its segment is the quadratic's
    d = points[0] - x[0]
    r0, rc = (x[0] ** 2).sum() - 1.0, (points[0] ** 2).sum(1) - 1.0
    k = np.argmin(r0 / (r0 - rc) * np.linalg.norm(d, axis=1))
    qa, qb, qc = (d[k] ** 2).sum(), 2 * (x[0] * d[k]).sum(), r0
    t = (-qb - np.sqrt(qb ** 2 - 4 * qa * qc)) / (2 * qa)
    expected = x[0] + t * d[k]
    np.testing.assert_allclose(np.linalg.norm(rp.to_numpy(root)[0, 0]), 1.0, rtol=1e-10)
    assert_close(root, expected[None, None, :], rtol=1e-8, atol=1e-8)
    assert rp.to_numpy(found).all()
    assert np.abs(rp.to_numpy(value)).max() < 1e-10


# --- root finders: seed 000's checks ------------------------------------------------------


def _check_root_in_region(model, x, res) -> None:
    """Seed 000: the root has the input's gradient, and f(root) + grad (x - root) = f(x)."""
    params = params_np(model)
    x_np = rp.to_numpy(x)
    root = rp.to_numpy(res.root)[:, 0, :]
    assert_close(res.root, root[:, None, :], shape=(x_np.shape[0], 1, 10))
    grad_root = gradient_np(params, root, 0)
    grad_x = gradient_np(params, x_np, 0)
    np.testing.assert_allclose(grad_root, grad_x, rtol=1e-12, atol=1e-12)
    f_root = forward_np(params, root)[0][:, 0]
    f_x = forward_np(params, x_np)[0][:, 0]
    taylor = f_root + np.sum(grad_root * (x_np - root), axis=1)
    np.testing.assert_allclose(taylor, f_x, rtol=1e-10, atol=1e-12)
    assert rp.to_numpy(res.same_region).all()
    assert np.all(root >= 0)  # enforce_nonnegative
    assert_close(res.relevance_at_root, f_root[:, None], atol=1e-12)
    assert_close(res.relevance_at_input, f_x[:, None])
    # where a root was bracketed, the relevance there is (numerically) zero
    found = rp.to_numpy(res.found)[:, 0]
    assert np.all(np.abs(f_root[found]) < 1e-10)
    # otherwise no candidate is better than the returned point's |f|
    assert np.all(np.abs(f_root[~found]) <= np.abs(f_x[~found]))


def test_interpolation_root_has_the_input_gradient_and_taylor_reproduces_output(
        model, x) -> None:
    finder = InterpolationRootFinder(n_rays=50, enforce_nonnegative=True, seed=0)
    res = finder.find(output_fn(model, 0), x, model=model)
    _check_root_in_region(model, x, res)


def test_metropolis_hastings_root_has_the_input_gradient_and_taylor_reproduces_output(
        model, x) -> None:
    finder = MetropolisHastingsRootFinder(n_chains=5, n_steps=10, n_warmup=5,
                                          enforce_nonnegative=True, seed=0)
    res = finder.find(output_fn(model, 0), x, model=model)
    _check_root_in_region(model, x, res)


def test_finders_find_roots_of_the_last_layer(model, x) -> None:
    # the last dense layer is affine everywhere and has a negative bias: roots exist in
    # the non-negative orthant, and the finders bracket them (R = 0 there)
    params = params_np(model)
    hidden = rp.dtd.forward(model, x, stop=4)
    h = rp.to_numpy(hidden)
    w, b = params[2][0][0], params[2][1][0]
    for finder in (InterpolationRootFinder(n_rays=50, enforce_nonnegative=True, seed=0),
                   MetropolisHastingsRootFinder(n_chains=5, n_steps=10, n_warmup=5,
                                                enforce_nonnegative=True, seed=0)):
        res = finder.find(output_fn(model, 0, start=4), hidden, model=model, start=4)
        root = rp.to_numpy(res.root)[:, 0]
        assert rp.to_numpy(res.found).all()
        np.testing.assert_allclose(root @ w + b, 0.0, atol=1e-12)
        assert np.all(root >= 0)
        assert_close(res.relevance_at_root, (root @ w + b)[:, None], atol=1e-12)
    # closed form, z+ rule: r = h - z / (h . w+) * (h * 1[w >= 0])
    res = ClosedFormRootFinder(rule="z+").find(output_fn(model, 0, start=4), hidden,
                                               model=model, start=4, neurons=[0])
    v = h * (w >= 0)
    z = h @ w + b
    expected = h - (z / (v @ w))[:, None] * v
    assert_close(res.root, expected[:, None, :], rtol=1e-12, atol=1e-14)
    assert_close(res.relevance_at_root, np.zeros((1, 1)), atol=1e-12)
    assert rp.to_numpy(res.found).all()


def test_root_cache_counts_hits_and_misses(model) -> None:
    params = params_np(model)
    x_np = np.abs(np.random.default_rng(11).normal(size=(2, 10)))
    _, pattern = forward_np(params, x_np)
    assert not (pattern[0] == pattern[1]).all()  # two regions
    finder = InterpolationRootFinder(n_rays=50, seed=0)
    fn = output_fn(model, 0)
    first = finder.find(fn, on_backend(x_np[:1]), model=model)
    assert finder.cache_info() == CacheInfo(hits=0, misses=1, size=1)
    assert not rp.to_numpy(first.cache_hit).any()
    # the same region again (a nearby point), and a new one: in one batch
    both = on_backend(np.stack([x_np[0] * (1 + 1e-9), x_np[1]]))
    second = finder.find(fn, both, model=model)
    assert finder.cache_info() == CacheInfo(hits=1, misses=2, size=2)
    assert rp.to_numpy(second.cache_hit).tolist() == [True, False]
    assert_close(second.root[:1, ...], rp.to_numpy(first.root))  # the region's roots
    # samples of one batch sharing a new region share one search
    fresh = InterpolationRootFinder(n_rays=50, seed=0)
    pair = fresh.find(fn, on_backend(np.stack([x_np[1], x_np[1] * (1 + 1e-9)])), model=model)
    assert fresh.cache_info() == CacheInfo(hits=1, misses=1, size=1)
    roots = rp.to_numpy(pair.root)
    np.testing.assert_array_equal(roots[0], roots[1])
    # another function has its own entries
    finder.find(output_fn(model, 1), on_backend(x_np[:1]), model=model)
    assert finder.cache_info().misses == 3
    finder.clear_cache()
    assert finder.cache_info() == CacheInfo(0, 0, 0)
    uncached = InterpolationRootFinder(n_rays=50, seed=0, use_cache=False)
    uncached.find(fn, on_backend(x_np[:1]), model=model)
    res = uncached.find(fn, on_backend(x_np[:1]), model=model)
    assert uncached.cache_info() == CacheInfo(hits=0, misses=2, size=0)
    assert not rp.to_numpy(res.cache_hit).any()


def test_progress_bars_are_optional(model, x) -> None:
    finder = InterpolationRootFinder(n_rays=50, progress=True)
    try:
        import tqdm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="tqdm"):
            finder.find(output_fn(model, 0), x, model=model)
    else:
        res = finder.find(output_fn(model, 0), x, model=model)
        assert tuple(res.root.shape) == (1, 1, 10)


def test_finder_errors(model, x) -> None:
    with pytest.raises(ValueError, match="rule"):
        ClosedFormRootFinder(rule="nope")
    finder = InterpolationRootFinder(n_rays=4, enforce_nonnegative=True)
    with pytest.raises(ValueError, match="non-negative"):
        finder.find(output_fn(model, 0), -x, model=model)
    with pytest.raises(ValueError, match="neurons"):
        ClosedFormRootFinder().find(output_fn(model, 0, start=4),
                                    rp.dtd.forward(model, x, stop=4), model=model, start=4)
    with pytest.raises(ValueError, match="shape"):
        finder.find(output_fn(model, 0), x[0, :], model=model)


# --- the public region cache, one spelling of non-negativity --------------------------------


def test_the_region_cache_is_a_public_object(model, x) -> None:
    from relprop.dtd import CacheEntry, RegionCache

    finder = InterpolationRootFinder(n_rays=50, enforce_nonnegative=True, seed=0)
    fn = output_fn(model, 0)
    res = finder.find(fn, x, model=model, cache_key="f")
    cache = finder.cache
    assert isinstance(cache, RegionCache)
    assert cache.stats() == finder.cache_info() == CacheInfo(hits=0, misses=1, size=1)
    (key,) = res.regions
    assert key[:2] == ("f", 0) and key in cache and len(cache) == 1
    entry = cache.get(key)
    assert isinstance(entry, CacheEntry) and entry.extra == {}
    assert_close(entry.root, rp.to_numpy(res.root))
    assert finder.cache_keys(model, x, 0, "f", rp.array_namespace(x=x)) == [key]
    # an entry put by hand serves the next call: a hit, no search
    moved = CacheEntry(entry.root * 0.5, entry.relevance_at_root, entry.found,
                       entry.same_region)
    cache.put(key, moved)
    again = finder.find(fn, x, model=model, cache_key="f")
    assert_close(again.root, 0.5 * rp.to_numpy(res.root))
    assert cache.stats() == CacheInfo(hits=1, misses=1, size=1)
    cache.record(hits=2, misses=1)
    assert cache.stats() == CacheInfo(hits=3, misses=2, size=1)
    assert cache.get(("g", 0, b"")) is None
    finder.clear_cache()
    assert cache.stats() == CacheInfo(0, 0, 0) and key not in cache


def test_old_spelling_of_enforce_nonnegative_warns_and_works(model, x) -> None:
    new = sample_interpolation(model, x, n_rays=50, enforce_nonnegative=True, seed=1)
    with pytest.warns(DeprecationWarning, match="enforce_nonnegative="):
        old = sample_interpolation(model, x, n_rays=50, enforce_non_negative=True, seed=1)
    assert_close(old.points, rp.to_numpy(new.points), rtol=0.0)
    with pytest.warns(DeprecationWarning, match="enforce_nonnegative="):
        walk = sample_metropolis_hastings(model, x, n_chains=5, n_steps=10, n_warmup=5,
                                          enforce_non_negative=True, seed=2)
    assert np.all(rp.to_numpy(walk.samples) >= 0)
    for kind in (InterpolationRootFinder, MetropolisHastingsRootFinder):
        with pytest.warns(DeprecationWarning, match="enforce_nonnegative="):
            finder = kind(enforce_non_negative=True)
        assert finder.enforce_nonnegative and finder.enforce_non_negative
        assert "enforce_nonnegative=True" in repr(finder)
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        InterpolationRootFinder(enforce_positive=True)


def test_walk_noise_is_the_same_in_one_block_or_many(model, x, monkeypatch) -> None:
    """The random walk moves its noise to the device in blocks; the numbers are those of
    drawing step by step, whatever the block size."""
    from relprop.dtd import local_linear

    kwargs = {"n_chains": 5, "n_steps": 10, "n_warmup": 5, "enforce_nonnegative": True,
              "seed": 2}
    whole = rp.to_numpy(sample_metropolis_hastings(model, x, **kwargs).samples)
    monkeypatch.setattr(local_linear, "_NOISE_BLOCK", 2 * 5 * 10)  # two steps per block
    assert_close(sample_metropolis_hastings(model, x, **kwargs).samples, whole, rtol=0.0)
