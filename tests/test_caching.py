"""What ``rp.lrp`` keeps between calls, and that it never serves a stale result.

Two caches, one mechanism (``relprop.rules.terms.cached``): the rule engine's modified
parameters per layer (``W+``, ...), and each model's canonized version (the fused layers
of ``MergeBatchNorm``), both valid while the parameters' version token is unchanged
(torch: ``Tensor._version``; JAX: immutable arrays; NumPy, array-api-strict: never kept).
Oracles: the same explanation of a freshly built model (nothing cached for it), and
the counts of canonizer applications.

Also here: the engine's split of Gamma and AlphaBeta after a ReLU (terms built from the
recorded output and one forward pass with ``W+``) against each term computed on its own,
and the backward walk freeing what it no longer needs.
"""

from __future__ import annotations

import gc
import weakref

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp
from relprop import _derived
from relprop._derived import ENTRIES_PER_OWNER
from relprop.canonizers import CANONIZED_PER_MODEL, Canonizer, MergeBatchNorm, canonized
from relprop.interop._cache import converted_torch_model
from relprop.lrp import _backward, _run_for_vjp
from relprop.rules.modifiers import (
    Identity,
    Negative,
    Ones,
    PlusGamma,
    Positive,
    Square,
    Zero,
)
from relprop.rules.terms import cached_parameters, clear_cache

KEEPS = BACKEND in ("torch", "jax")  # the libraries whose arrays tell when they change


def _cnn_params(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "conv1.w": rng.normal(scale=0.5, size=(4, 2, 3, 3)), "conv1.b": rng.normal(size=4),
        "bn.mean": rng.normal(size=4), "bn.var": rng.uniform(0.5, 2.0, size=4),
        "bn.w": rng.uniform(0.5, 1.5, size=4), "bn.b": rng.normal(scale=0.3, size=4),
        "conv2.w": rng.normal(scale=0.3, size=(3, 4, 3, 3)), "conv2.b": rng.normal(size=3),
        "fc.w": rng.normal(scale=0.2, size=(5, 3 * 6 * 6)), "fc.b": rng.normal(size=5),
    }


def _cnn(params: dict, convert=on_backend) -> rp.Sequential:
    """conv, batch norm (fused by MergeBatchNorm), ReLU, conv, ReLU, flatten, dense."""
    p = {name: convert(value) for name, value in params.items()}
    return rp.Sequential([
        ("conv1", rp.Conv2d(p["conv1.w"], p["conv1.b"], padding=1)),
        ("bn", rp.BatchNorm2d(p["bn.mean"], p["bn.var"], p["bn.w"], p["bn.b"])),
        ("relu1", rp.ReLU()),
        ("conv2", rp.Conv2d(p["conv2.w"], p["conv2.b"], padding=1)),
        ("relu2", rp.ReLU()),
        ("flat", rp.Flatten()),
        ("fc", rp.Dense(p["fc.w"], p["fc.b"])),
    ])


def _x(seed: int = 1, convert=on_backend):
    return convert(np.random.default_rng(seed).normal(size=(3, 2, 6, 6)))


COMPOSITES = {
    "EpsilonPlusFlat": lambda: rp.composites.EpsilonPlusFlat(canonizers=[MergeBatchNorm()]),
    "EpsilonAlpha2Beta1": lambda: rp.composites.EpsilonAlpha2Beta1(
        canonizers=[MergeBatchNorm()]),
    "EpsilonGammaBox": lambda: rp.composites.EpsilonGammaBox(low=-4.0, high=4.0,
                                                             canonizers=[MergeBatchNorm()]),
}


class CountingMerge(MergeBatchNorm):
    """MergeBatchNorm counting its applications (equal to every other CountingMerge)."""

    applied = 0

    def apply(self, model):
        CountingMerge.applied += 1
        return super().apply(model)


@pytest.fixture
def counting():
    CountingMerge.applied = 0
    yield CountingMerge
    CountingMerge.applied = 0


# ----------------------------------------------------------------- the canonized model


@pytest.mark.parametrize("name", list(COMPOSITES))
def test_canonized_once_and_reused(name, counting) -> None:
    model, x = _cnn(_cnn_params()), _x()
    composite = COMPOSITES[name]()
    composite.canonizers = (counting(),)
    first = rp.lrp(model, x, target=[0, 1, 2], composite=composite)
    other = COMPOSITES[name]()  # another composite with equal canonizers: the same entry
    other.canonizers = (counting(),)
    again = rp.lrp(model, x, target=[0, 1, 2], composite=other)
    assert counting.applied == (1 if KEEPS else 2)
    assert_close(again, rp.to_numpy(first), rtol=0.0)
    fused = canonized(model, [counting()])
    assert (fused is canonized(model, [counting()])) == KEEPS
    assert fused.names == ("conv1", "relu1", "conv2", "relu2", "flat", "fc")


def test_keeping_nothing(counting, monkeypatch) -> None:
    """``ENTRIES_PER_OWNER = 0``: nothing is kept, neither modified weights nor canonized
    models (each call canonizes and derives again), and the relevance is the same."""
    model, x = _cnn(_cnn_params()), _x()
    composite = COMPOSITES["EpsilonGammaBox"]()
    composite.canonizers = (counting(),)
    kept = rp.lrp(model, x, target=0, composite=composite)
    clear_cache()
    counting.applied = 0
    monkeypatch.setattr(_derived, "ENTRIES_PER_OWNER", 0)
    for _ in range(2):
        assert_close(rp.lrp(model, x, target=0, composite=composite), rp.to_numpy(kept),
                     rtol=0.0)
    assert counting.applied == 2
    assert len(_derived._CACHE) == 0


def test_the_fused_layers_keep_their_modified_weights() -> None:
    """The engine's cache hits across calls because the canonized layers are reused."""
    model, x = _cnn(_cnn_params()), _x()
    composite = COMPOSITES["EpsilonAlpha2Beta1"]()
    rp.lrp(model, x, target=0, composite=composite)
    fused = canonized(model, composite.canonizers)
    conv1 = fused["conv1"]
    kept = cached_parameters(conv1)
    if not KEEPS:
        assert kept == {}
        return
    assert ("weight", Positive()) in kept and ("weight", Negative()) in kept
    rp.lrp(model, x, target=1, composite=composite)
    assert canonized(model, composite.canonizers)["conv1"] is conv1
    again = cached_parameters(conv1)
    assert all(again[key] is value for key, value in kept.items())  # not recomputed


@pytest.mark.skipif(not KEEPS, reason="nothing is cached for this backend")
def test_at_most_two_canonized_versions_per_model() -> None:
    model = _cnn(_cnn_params())
    sets = [[MergeBatchNorm()], [MergeBatchNorm(into_next=True)],
            [MergeBatchNorm(), MergeBatchNorm(into_next=True)]]
    for canonizers in sets:
        canonized(model, canonizers)
    assert len(_derived._CACHE[model][1]) == CANONIZED_PER_MODEL
    # the least recently used went first
    assert ("canonized", tuple(sets[0])) not in _derived._CACHE[model][1]


def test_canonizers_that_say_so_are_not_cached() -> None:
    class Reading(Canonizer):
        cacheable = False
        applied = 0

        def apply(self, model):
            Reading.applied += 1
            return model

    class Unhashable(Canonizer):
        __hash__ = None  # type: ignore[assignment]
        applied = 0

        def apply(self, model):
            Unhashable.applied += 1
            return model

    model, x = _cnn(_cnn_params()), _x()
    for kind in (Reading, Unhashable):
        composite = rp.composites.EpsilonPlus(canonizers=[kind()])
        rp.lrp(model, x, target=0, composite=composite)
        rp.lrp(model, x, target=0, composite=composite)
        assert kind.applied == 2


# ------------------------------------------------------------- never a stale result


def _torch_tensor(a: np.ndarray):
    import torch as torch_module

    return torch_module.tensor(a, dtype=torch_module.float64)


def _fresh(params: dict, x, composite):
    """The explanation by a model built anew from ``params`` (NumPy copies: nothing of it
    can be in a cache), as torch float64."""
    model = _cnn({k: np.array(v.detach().numpy()) for k, v in params.items()}, _torch_tensor)
    return rp.to_numpy(rp.lrp(model, x, target=[0, 1, 2], composite=composite))


WRITES = {
    "fused conv weight": lambda p: p["conv1.w"].add_(1.0),
    "batch-norm variance": lambda p: p["bn.var"].mul_(3.0),
    "batch-norm mean": lambda p: p["bn.mean"].sub_(0.5),
    "conv after a ReLU": lambda p: p["conv2.w"].mul_(-1.5),
    "conv bias": lambda p: p["conv2.b"].add_(2.0),
    "dense weight": lambda p: p["fc.w"].mul_(0.5),
}


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("name", list(COMPOSITES))
def test_in_place_writes_between_calls_are_seen(name, write) -> None:
    """A parameter changed in place (as an optimizer step does) between two calls: the
    second equals the explanation of a model built afresh with the new values."""
    torch_module = pytest.importorskip("torch")
    params = {k: _torch_tensor(v) for k, v in _cnn_params().items()}
    model = _cnn(params, lambda a: a)  # shares the tensors
    x = _torch_tensor(rp.to_numpy(_x()))
    composite = COMPOSITES[name]()
    before = rp.lrp(model, x, target=[0, 1, 2], composite=composite)
    rp.lrp(model, x, target=[0, 1, 2], composite=composite)  # warm: everything cached
    with torch_module.no_grad():
        WRITES[write](params)
    after = rp.lrp(model, x, target=[0, 1, 2], composite=composite)
    expected = _fresh(params, x, composite)
    np.testing.assert_allclose(rp.to_numpy(after), expected, rtol=1e-12, atol=0.0)
    assert not np.allclose(rp.to_numpy(before), expected)


def test_in_place_writes_through_a_torch_module() -> None:
    """``rp.lrp(module, ...)``: the module's conversion and its canonized model follow."""
    torch_module = pytest.importorskip("torch")
    nn = torch_module.nn
    torch_module.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.Flatten(), nn.Linear(4 * 36, 3)).double().eval()
    with torch_module.no_grad():
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].running_mean.normal_()
    x = torch_module.randn(2, 2, 6, 6, dtype=torch_module.float64)
    composite = COMPOSITES["EpsilonGammaBox"]()
    first = rp.lrp(net, x, target=0, composite=composite)
    assert rp.lrp(net, x, target=0, composite=composite).equal(first)
    with torch_module.no_grad():
        net[0].weight.mul_(-1.0)
        net[1].running_var.add_(1.0)
    after = rp.lrp(net, x, target=0, composite=composite)
    expected = rp.lrp(rp.from_torch(net), x, target=0, composite=composite)
    assert not after.equal(first)
    torch_module.testing.assert_close(after, expected, rtol=1e-12, atol=0.0)
    converted = converted_torch_model(net, x)
    assert converted in _derived._CACHE
    clear_cache(net)  # a module: what is kept for its conversion
    assert converted not in _derived._CACHE
    assert rp.lrp(net, x, target=0, composite=composite).equal(after)


def test_a_training_forward_of_a_batch_norm_is_seen() -> None:
    """torch's batch norm updates its running statistics in place without counting the
    write (``_version``), and so does a write through ``.data``: the small tensors are
    compared by value, so a model converted once (sharing the module's tensors) follows
    a training-mode forward pass, in its plain forward and in its canonized version."""
    torch_module = pytest.importorskip("torch")
    nn = torch_module.nn
    torch_module.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(),
                        nn.Linear(3, 2)).double().eval()
    x = torch_module.randn(5, 4, dtype=torch_module.float64)
    model = rp.from_torch(net, x)
    composite = COMPOSITES["EpsilonPlusFlat"]()
    before = rp.lrp(model, x, target=0, composite=composite)
    version = int(net[1].running_mean._version)
    net.train()
    net(torch_module.randn(16, 4, dtype=torch_module.float64) * 5.0 - 7.0)
    net.eval()
    assert int(net[1].running_mean._version) == version  # torch did not count the write
    with torch_module.no_grad():
        net[3].bias.data.mul_(-2.0)  # nor this one
    torch_module.testing.assert_close(model(x), net(x).detach(), rtol=1e-12, atol=1e-12)
    after = rp.lrp(model, x, target=0, composite=composite)
    clear_cache()
    torch_module.testing.assert_close(after, rp.lrp(model, x, target=0, composite=composite),
                                      rtol=0.0, atol=0.0)
    assert not after.equal(before)


def test_the_finiteness_check_leaves_autograd_alone() -> None:
    """``detach=False`` with an input that requires grad: no warning about converting it."""
    torch_module = pytest.importorskip("torch")
    model, x = _cnn(_cnn_params(), _torch_tensor), _x(convert=_torch_tensor)
    x = x.clone().requires_grad_()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        R = rp.lrp(model, x, target=0, rule=rp.rules.Epsilon(), detach=False)
    (grad,) = torch_module.autograd.grad(R.sum(), x)
    assert grad.shape == x.shape


def test_alpha_beta_keeps_its_negative_part_exact() -> None:
    """A unit with almost only positive weights: its beta denominator W- x is small. Built
    as z - z+ it would be rounded to ulp(z+) (and stabilised with the wrong sign); the
    engine computes it on its own, so the relevance after a ReLU equals the term-by-term
    one to float32's rounding."""
    layer = rp.Dense(on_backend(np.array([[1000.0, -1e-5]]), "float32"),
                     on_backend(np.zeros(1), "float32"))
    x = on_backend(np.ones((1, 2)), "float32")
    xp = rp.array_namespace(x=x)
    R = on_backend(np.ones((1, 1)), "float32")
    rule = rp.rules.AlphaBeta(2.0, 1.0)
    after_relu = rule.relevance(layer, x, layer(x), R, xp, nonnegative=True)
    every_term = rule.relevance(layer, x, layer(x), R, xp, nonnegative=False)
    assert_close(after_relu, rp.to_numpy(every_term), dtype="float32", rtol=1e-6, atol=1e-6)
    eps = rule.stabilizer  # the beta share: -x w- / (w- x - eps), the sign of z- kept
    assert_close(after_relu, np.array([[2.0, -1e-5 / (1e-5 + eps)]]), dtype="float32",
                 rtol=1e-5)


def test_numpy_writes_are_seen_without_any_cache(counting) -> None:
    """NumPy arrays count no writes: nothing is kept, every call canonizes again."""
    params = _cnn_params()
    model = _cnn(params, np.asarray)
    x = np.random.default_rng(1).normal(size=(3, 2, 6, 6))
    composite = rp.composites.EpsilonGammaBox(low=-4.0, high=4.0, canonizers=[counting()])
    before = rp.lrp(model, x, target=0, composite=composite)
    params["conv1.w"] += 1.0  # in place: the layer shares the array
    params["conv2.w"] *= -1.0
    after = rp.lrp(model, x, target=0, composite=composite)
    assert counting.applied == 2
    assert cached_parameters(model["conv2"]) == {}
    fresh = _cnn({k: v.copy() for k, v in params.items()}, np.asarray)
    np.testing.assert_allclose(after, rp.lrp(fresh, x, target=0, composite=composite),
                               rtol=1e-13)
    assert not np.allclose(after, before)


# --------------------------------------------------------------- bounded, released


def test_a_sweep_keeps_a_bounded_number_of_modified_weights() -> None:
    model, x = _cnn(_cnn_params()), _x()
    for gamma in np.linspace(0.0, 1.0, 3 * ENTRIES_PER_OWNER):
        rp.lrp(model, x, target=0, rule=rp.rules.Gamma(float(gamma)))
    assert len(cached_parameters(model["conv1"])) == (ENTRIES_PER_OWNER if KEEPS else 0)


def test_clear_cache_releases_everything() -> None:
    model, x = _cnn(_cnn_params()), _x()
    composite = COMPOSITES["EpsilonAlpha2Beta1"]()
    rp.lrp(model, x, target=0, composite=composite)
    other = _cnn(_cnn_params(1))
    rp.lrp(other, x, target=0, composite=composite)
    fused = canonized(model, composite.canonizers)
    assert bool(cached_parameters(fused["conv2"])) == KEEPS
    clear_cache(model)
    assert cached_parameters(fused["conv2"]) == {}
    assert model not in _derived._CACHE
    assert bool(cached_parameters(canonized(other, composite.canonizers)["conv2"])) == KEEPS
    rp.rules.clear_cache()
    assert len(_derived._CACHE) == 0


@pytest.mark.skipif(not KEEPS, reason="nothing is cached for this backend")
def test_the_caches_die_with_the_model() -> None:
    model, x = _cnn(_cnn_params()), _x()
    rp.lrp(model, x, target=0, composite=COMPOSITES["EpsilonGammaBox"]())
    fused = canonized(model, [MergeBatchNorm()])
    watched = [weakref.ref(model), weakref.ref(fused), weakref.ref(fused["conv2"])]
    del model, fused
    gc.collect()
    assert all(ref() is None for ref in watched)


def test_threads_share_the_caches() -> None:
    """Explanations from several threads at once (dask's threaded scheduler) agree with
    one thread's, while the caches fill and are read."""
    from concurrent.futures import ThreadPoolExecutor

    model, x = _cnn(_cnn_params()), _x()
    composites = [COMPOSITES[name]() for name in COMPOSITES]
    expected = [rp.to_numpy(rp.lrp(_cnn(_cnn_params()), x, target=1, composite=c))
                for c in composites]
    clear_cache()
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: rp.lrp(model, x, target=1, composite=composites[i % 3]),
                            range(24)))
    for i, result in enumerate(got):
        np.testing.assert_allclose(rp.to_numpy(result), expected[i % 3], rtol=1e-13)


# ------------------------------------------------------------ the split of the terms


@pytest.mark.parametrize("modifier", [Identity(), Positive(), Negative(), Zero(),
                                      PlusGamma(0.25, Positive()), PlusGamma(0.7, Negative()),
                                      PlusGamma(0.5, PlusGamma(0.5, Negative()))], ids=repr)
def test_decompositions(modifier) -> None:
    a, c = modifier.decomposition()
    w_np = np.random.default_rng(3).normal(size=(4, 5))
    w = on_backend(w_np)
    xp = rp.array_namespace(w=w)
    assert_close(modifier(w, xp), a * w_np + c * np.maximum(w_np, 0.0), rtol=1e-15)


def test_modifiers_without_a_decomposition() -> None:
    assert Ones().decomposition() is None and Square().decomposition() is None
    assert PlusGamma(1.0, Square()).decomposition() is None


LAYERS = {
    "dense": lambda rng: (rp.Dense(on_backend(rng.normal(size=(5, 4))),
                                   on_backend(rng.normal(size=5))), (3, 4)),
    "conv": lambda rng: (rp.Conv2d(on_backend(rng.normal(size=(4, 2, 3, 3))),
                                   on_backend(rng.normal(size=4)), stride=2, padding=1),
                         (2, 2, 5, 6)),
    "conv-no-bias": lambda rng: (rp.Conv2d(on_backend(rng.normal(size=(4, 2, 3, 3)))),
                                 (2, 2, 5, 5)),
    "conv-transpose": lambda rng: (rp.ConvTranspose2d(on_backend(rng.normal(size=(2, 3, 2, 3))),
                                                      on_backend(rng.normal(size=3)), stride=2),
                                   (2, 2, 3, 3)),
}
SPLIT_RULES = {
    "Gamma": lambda: rp.rules.Gamma(0.25),
    "Gamma-large": lambda: rp.rules.Gamma(3.0),  # its W + g W- is transposed on its own
    "AlphaBeta": lambda: rp.rules.AlphaBeta(2.0, 1.0),
    "AlphaBeta-3-2": lambda: rp.rules.AlphaBeta(3.0, 2.0),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rule", list(SPLIT_RULES))
@pytest.mark.parametrize("layer_name", list(LAYERS))
def test_split_terms_equal_the_terms_one_by_one(layer_name, rule, dtype) -> None:
    """After a ReLU the engine builds Gamma's and AlphaBeta's forward passes from the
    recorded output and W+ x (and Gamma's transposes from W and W+): the relevance of
    computing every term (``nonnegative=False``: nothing split or dropped) to rounding."""
    rng = np.random.default_rng(11)
    layer, shape = LAYERS[layer_name](rng)
    layer = layer.map_params(lambda a: rp.asarray(rp.to_numpy(a), dtype=dtype, backend=BACKEND))
    x = on_backend(np.abs(rng.normal(size=shape)), dtype)
    xp = rp.array_namespace(x=x)
    out = layer(x)
    R = on_backend(rng.normal(size=tuple(out.shape)), dtype)
    split = SPLIT_RULES[rule]().relevance(layer, x, out, R, xp, nonnegative=True)
    alone = SPLIT_RULES[rule]().relevance(layer, x, out, R, xp, nonnegative=False)
    expected = rp.to_numpy(alone).astype(np.float64)
    scale = float(np.abs(expected).max())
    rtol = 1e-12 if dtype == "float64" else 2e-5
    assert_close(split, expected, dtype=dtype, rtol=rtol, atol=rtol * scale)


SHARED_RULES = {
    "ZBox": lambda: rp.rules.ZBox(-1.0, 2.0),
    "ZBox-arrays": lambda: rp.rules.ZBox(on_backend(np.full((1, 1, 1, 1), -1.0)),
                                         on_backend(np.full((1, 1, 1, 1), 2.0))),
    "ZPlus-any-input": lambda: rp.rules.ZPlus(),
}


@pytest.mark.parametrize("rule", list(SHARED_RULES))
@pytest.mark.parametrize("layer_name", ["conv", "conv-no-bias"])
def test_transposes_of_one_relevance_in_one_call(layer_name, rule, monkeypatch) -> None:
    """ZBox's three terms (and ZPlus's two on an input of any sign) divide one relevance:
    their transposes are one call of the layer with the weights side by side along the
    input channels; the relevance is that of one call per term."""
    rng = np.random.default_rng(12)
    layer, shape = LAYERS[layer_name](rng)
    x = on_backend(rng.uniform(-1.0, 2.0, size=shape))
    xp = rp.array_namespace(x=x)
    out = layer(x)
    R = on_backend(rng.normal(size=tuple(out.shape)))
    calls = []
    stacked = type(layer).transpose_stacked

    def counted(self, *args, **kwargs):
        calls.append(args[2])
        return stacked(self, *args, **kwargs)

    monkeypatch.setattr(type(layer), "transpose_stacked", counted)
    shared = SHARED_RULES[rule]().relevance(layer, x, out, R, xp)
    assert calls == [3 if rule.startswith("ZBox") else 2]
    monkeypatch.setattr(type(layer), "stack_inputs", lambda self, weights, xp: None)
    alone = SHARED_RULES[rule]().relevance(layer, x, out, R, xp)
    assert_close(shared, rp.to_numpy(alone), rtol=1e-13, atol=1e-13)


def test_stacked_transposes_equal_each_transpose() -> None:
    rng = np.random.default_rng(13)
    layer, shape = LAYERS["conv"](rng)
    xp = rp.array_namespace(x=layer.weight)
    weights = [layer.weight, xp.clip(layer.weight, min=0.0), layer.weight * 2.0]
    v = on_backend(rng.normal(size=tuple(layer(on_backend(np.zeros(shape))).shape)))
    parts = layer.transpose_stacked(v, layer.stack_inputs(weights, xp), 3, xp, shape)
    for part, weight in zip(parts, weights, strict=True):
        assert_close(part, rp.to_numpy(layer.transpose(v, weight, xp, shape)), rtol=1e-13,
                     atol=1e-13)
    grouped = rp.Conv2d(on_backend(rng.normal(size=(4, 1, 3, 3))), groups=2)
    assert grouped.stack_inputs([grouped.weight] * 2, xp) is None  # grouped: one by one


@pytest.mark.skipif(not KEEPS, reason="nothing is cached for this backend")
def test_gamma_after_a_relu_keeps_only_the_positive_parts() -> None:
    model, x = _cnn(_cnn_params()), _x()
    rp.lrp(model, x, target=0, rule=rp.rules.Gamma(0.25))
    assert set(cached_parameters(model["conv2"])) == {("weight", Positive()),
                                                      ("bias", Positive())}


def test_zero_params_are_not_split() -> None:
    """The recorded output holds the bias: ``zero_params="bias"`` computes each term."""
    rng = np.random.default_rng(5)
    layer, shape = LAYERS["conv"](rng)
    x = on_backend(np.abs(rng.normal(size=shape)))
    xp = rp.array_namespace(x=x)
    out = layer(x)
    R = on_backend(rng.normal(size=tuple(out.shape)))
    rule = rp.rules.Gamma(0.25, zero_params="bias")
    got = rule.relevance(layer, x, out, R, xp, nonnegative=True)
    expected = rule.relevance(layer, x, out, R, xp, nonnegative=False)  # every term
    assert_close(got, rp.to_numpy(expected), rtol=1e-12)


# ----------------------------------------------------------- the backward walk frees


def test_the_backward_walk_frees_what_it_has_used() -> None:
    model, x = _cnn(_cnn_params()), _x()
    xp = model.namespace(x=x)
    values = model.run(x, xp)
    seen: list[set[str]] = []

    def step(index, node, inputs, relevance):
        seen.append(set(values))
        return [node.layer.vjp(inputs[0], relevance, xp)]

    start = xp.ones_like(values["fc"])
    nodes = model.nodes()
    reached, _ = _backward(nodes, values, start, step, xp)
    assert set(reached) == {"input"} and set(values) == {"input"}
    # at the step of node k, the outputs of the nodes after k are gone
    for k, names in enumerate(reversed(seen)):
        assert names == {"input", *(node.name for node in nodes[: k + 1])}
    kept = model.run(x, xp)
    reached, _ = _backward(nodes, kept, start, step, xp, keep=True)
    assert set(reached) == {"input", *model.names} and set(kept) == {"input", *model.names}


def test_the_gradient_keeps_no_input_of_a_linear_layer() -> None:
    """A linear layer's vjp reads only its input's shape: an output that only linear
    layers read is dropped during the forward pass (as autograd saves no such tensor),
    and the gradient is that of every layer's own vjp on the full record."""
    model, x = _cnn(_cnn_params()), _x()
    xp = model.namespace(x=x)
    values, shapes = _run_for_vjp(model, x, xp)
    assert set(values) == {"input", "conv1", "bn", "conv2", "relu2", "fc"}  # relu1, flat
    assert shapes == {name: tuple(a.shape) for name, a in model.run(x, xp).items()}
    cotangent = on_backend(np.eye(5)[[0, 1, 2]])
    reached, _ = _backward(model.nodes(), model.run(x, xp), cotangent,
                           lambda i, node, inputs, v: [node.layer.vjp(inputs[0], v, xp)], xp)
    assert_close(rp.gradient(model, x, target=[0, 1, 2]), rp.to_numpy(reached["input"]),
                 rtol=0.0)
