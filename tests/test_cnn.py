"""Convolutional and residual networks on every backend.

Two small CNNs are built from the same seeded NumPy parameters on the backend under test
and, as the reference, on NumPy in the same process (same dtype):

- ``vgg``: an ``rp.Sequential`` of Conv2d, BatchNorm2d, ReLU, MaxPool2d, Conv2d, ReLU,
  AvgPool2d, Flatten, Dense, BatchNorm1d, ReLU, Dense; input (2, 3, 8, 8).
- ``resnet``: an ``rp.Graph`` with a conv stem, a residual block (``rp.Add``), two parallel
  conv branches joined by ``rp.Concat``, a max pool, global average pooling and a dense
  head; input (2, 3, 8, 8).

Checked: forward and relevance parity with NumPy (float64 rtol 1e-10, float32 rtol 1e-5,
each with ``atol = rtol * max|R_ref|`` as in ``test_parity.py``); conservation on bias-free
versions (epsilon -> 0: the input relevance sums to the explained logit, layer by layer
for the Sequential); LRP-0 == gradient x input on a ReLU CNN with average pools only
(bias-free, and with biases, which do not change that identity); ``MergeBatchNorm`` keeps
the forward and leaves the user's model alone; relevance at a node read by two consumers
is the sum of what each sends back; ``return_layers`` of a Graph, and of the same chain as
a Sequential and as a Graph.

Largest relevance parity errors measured (``max|R - R_numpy| / max|R_numpy|``, torch 2.13
CPU, jax 0.10): float64 torch 2.0e-16, jax 7.7e-16, array_api_strict 9.1e-16 (its
convolutions take the portable path, NumPy's the native one); float32 (also measured on
the VGG) torch 4.2e-7, jax 3.7e-7, array_api_strict 7.0e-7.

JAX compiles every operation once per shape and dtype, which dominates its run time here:
both networks share their channel counts (4) and input shape, and float32 relevance is
checked on the graph only.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, TOLERANCE, assert_close, on_backend

import relprop as rp

DTYPES = ["float64", "float32"]
INPUT_SHAPE = (2, 3, 8, 8)
CLASSES = 4
TARGETS = [2, 3]
TINY = 1e-30
"""Stabiliser of the "epsilon -> 0" tests: it turns the 0/0 of all-zero pooling windows
after a ReLU into 0 and changes nothing else measurably."""


# --------------------------------------------------------------------------- parameters


def _conv(rng, out, inp, k, bias=True):
    weight = rng.normal(scale=1.4 / np.sqrt(inp * k * k), size=(out, inp, k, k))
    return weight, (rng.normal(scale=0.1, size=out) if bias else None)


def _dense(rng, out, inp, bias=True):
    weight = rng.normal(scale=1.4 / np.sqrt(inp), size=(out, inp))
    return weight, (rng.normal(scale=0.1, size=out) if bias else None)


def _bn(rng, n):
    """``(running_mean, running_var, weight, bias)`` far from the identity."""
    return (rng.normal(scale=0.3, size=n), rng.uniform(0.5, 2.0, size=n),
            rng.uniform(0.5, 1.5, size=n), rng.normal(scale=0.2, size=n))


def vgg_params(bias=True, batchnorm=True, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "conv1": _conv(rng, 4, 3, 3, bias), "bn1": _bn(rng, 4) if batchnorm else None,
        "conv2": _conv(rng, 4, 4, 3, bias),
        "fc1": _dense(rng, 8, 4 * 2 * 2, bias), "bn3": _bn(rng, 8) if batchnorm else None,
        "fc2": _dense(rng, CLASSES, 8, bias),
    }


def resnet_params(bias=True, batchnorm=True, seed=1):
    rng = np.random.default_rng(seed)
    return {
        "stem": _conv(rng, 4, 3, 3, bias), "stem.bn": _bn(rng, 4) if batchnorm else None,
        "block.conv1": _conv(rng, 4, 4, 3, bias),
        "block.bn1": _bn(rng, 4) if batchnorm else None,
        "block.conv2": _conv(rng, 4, 4, 3, bias),
        "block.bn2": _bn(rng, 4) if batchnorm else None,
        "branch1": _conv(rng, 2, 4, 1, bias),
        "branch2": _conv(rng, 2, 4, 3, bias),
        "fc": _dense(rng, CLASSES, 4, bias),
    }


# ------------------------------------------------------------------------------- models


def _putter(backend: str, dtype: str):
    def put(a):
        return None if a is None else rp.asarray(np.asarray(a), dtype=dtype, backend=backend)
    return put


def _batchnorm(kind, params, put):
    mean, var, weight, bias = (put(a) for a in params)
    return kind(mean, var, weight, bias)


def vgg(params, put, *, avg_only=False) -> rp.Sequential:
    """The VGG-style Sequential (``avg_only``: the max pool replaced by an average pool)."""
    layers = [("conv1", rp.Conv2d(*map(put, params["conv1"]), padding=1))]
    if params["bn1"] is not None:
        layers.append(("bn1", _batchnorm(rp.BatchNorm2d, params["bn1"], put)))
    layers += [
        ("relu1", rp.ReLU()),
        ("pool1", rp.AvgPool2d(2) if avg_only else rp.MaxPool2d(2)),
        ("conv2", rp.Conv2d(*map(put, params["conv2"]), padding=1)),
        ("relu2", rp.ReLU()),
        ("pool2", rp.AvgPool2d(2)),
        ("flatten", rp.Flatten()),
        ("fc1", rp.Dense(*map(put, params["fc1"]))),
    ]
    if params["bn3"] is not None:
        layers.append(("bn3", _batchnorm(rp.BatchNorm1d, params["bn3"], put)))
    layers += [("relu3", rp.ReLU()), ("fc2", rp.Dense(*map(put, params["fc2"])))]
    return rp.Sequential(layers)


def resnet(params, put) -> rp.Graph:
    """The ResNet-style Graph: stem, residual block (Add), two branches (Concat), head."""

    def conv(name, source, padding):
        return (name, rp.Conv2d(*map(put, params[name]), padding=padding), source)

    def bn(name, source):
        if params[name] is None:
            return []
        return [(name, _batchnorm(rp.BatchNorm2d, params[name], put), source)]

    def last(name):  # the batch norm after ``name`` where there is one
        return f"{name.replace('conv', 'bn')}" if params.get(name.replace("conv", "bn")) else name

    nodes = [conv("stem", "input", 1), *bn("stem.bn", "stem")]
    nodes += [
        ("stem.relu", rp.ReLU(), "stem.bn" if params["stem.bn"] is not None else "stem"),
        conv("block.conv1", "stem.relu", 1), *bn("block.bn1", "block.conv1"),
        ("block.relu1", rp.ReLU(), last("block.conv1")),
        conv("block.conv2", "block.relu1", 1), *bn("block.bn2", "block.conv2"),
        ("block.add", rp.Add(), ["stem.relu", last("block.conv2")]),
        ("block.relu2", rp.ReLU(), "block.add"),
        conv("branch1", "block.relu2", 0),
        ("branch1.relu", rp.ReLU(), "branch1"),
        conv("branch2", "block.relu2", 1),
        ("branch2.relu", rp.ReLU(), "branch2"),
        ("concat", rp.Concat(axis=1), ["branch1.relu", "branch2.relu"]),
        ("maxpool", rp.MaxPool2d(2), "concat"),
        ("gap", rp.AdaptiveAvgPool2d(1), "maxpool"),
        ("flatten", rp.Flatten(), "gap"),
        ("fc", rp.Dense(*map(put, params["fc"])), "flatten"),
    ]
    return rp.Graph(nodes)


ARCHS = {"vgg": (vgg_params, vgg), "resnet": (resnet_params, resnet)}


def make(arch: str, dtype: str = "float64", backend: str = BACKEND, *, avg_only: bool = False,
         **options):
    """``arch`` from its seeded parameters (``options``: ``bias``, ``batchnorm``)."""
    make_params, build = ARCHS[arch]
    extra = {"avg_only": True} if avg_only else {}
    return build(make_params(**options), _putter(backend, dtype), **extra)


def x_numpy(dtype: str = "float64", seed: int = 7) -> np.ndarray:
    x = np.clip(np.random.default_rng(seed).normal(size=INPUT_SHAPE), -2.5, 2.5)
    return x.astype(dtype)


# ------------------------------------------------------------------- cross-backend parity


def _parity(actual, expected: np.ndarray, dtype: str) -> None:
    rtol = TOLERANCE[dtype]
    scale = float(np.abs(expected).max())
    assert scale > 0, "the reference is all zero: nothing is checked"
    assert_close(actual, expected, dtype=dtype, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", list(ARCHS))
def test_forward_parity(arch, dtype):
    x = x_numpy(dtype)
    expected = rp.to_numpy(make(arch, dtype, "numpy")(rp.asarray(x, backend="numpy")))
    _parity(make(arch, dtype)(on_backend(x, dtype)), expected, dtype)


COMPOSITES = {
    "EpsilonPlusFlat": lambda **kw: rp.composites.EpsilonPlusFlat(**kw),
    "EpsilonAlpha2Beta1": lambda **kw: rp.composites.EpsilonAlpha2Beta1(**kw),
    "EpsilonGammaBox": lambda **kw: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0, **kw),
}


# every composite in float64; float32 once, on the graph (see the module docstring)
PARITY_CASES = [(arch, name, "float64") for arch in ARCHS for name in COMPOSITES]
PARITY_CASES.append(("resnet", "EpsilonGammaBox", "float32"))


@pytest.mark.parametrize(("arch", "name", "dtype"), PARITY_CASES)
def test_relevance_parity(arch, name, dtype):
    """Batch norms merged by the composite's canonizer; the same on NumPy."""
    x = x_numpy(dtype)
    composite = COMPOSITES[name](canonizers=[rp.canonizers.MergeBatchNorm()])
    expected = rp.to_numpy(rp.lrp(make(arch, dtype, "numpy"), rp.asarray(x, backend="numpy"),
                                  target=TARGETS, composite=composite))
    actual = rp.lrp(make(arch, dtype), on_backend(x, dtype), target=TARGETS, composite=composite)
    _parity(actual, expected, dtype)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_relevance_parity_without_canonizer_and_per_layer(arch):
    """Batch norms under Pass; every layer's relevance (return_layers) matches too."""
    x = x_numpy()
    composite = rp.composites.EpsilonPlus()
    ref, ref_layers = rp.lrp(make(arch, backend="numpy"), rp.asarray(x, backend="numpy"),
                             target=TARGETS, composite=composite, return_layers=True)
    got, layers = rp.lrp(make(arch), on_backend(x), target=TARGETS, composite=composite,
                         return_layers=True)
    _parity(got, rp.to_numpy(ref), "float64")
    assert list(layers) == list(ref_layers) == ["input", *make(arch).names]
    for actual, expected in zip(layers.values(), ref_layers.values(), strict=True):
        expected = rp.to_numpy(expected)
        if np.abs(expected).max() > 0:
            _parity(actual, expected, "float64")
        else:
            assert_close(actual, expected)


# ------------------------------------------------------------------------- conservation


def _epsilon_zero() -> rp.composites.Composite:
    """LRP-0 for conv and dense layers, Norm for sums and average pools (epsilon -> 0);
    activations Pass; max pools, concatenation, flatten: their gradient."""
    return rp.composites.Composite(layer_map=[
        (rp.layers.Linear, rp.rules.Epsilon(TINY)),
        ((rp.Add, rp.layers.AvgPool), rp.rules.Norm(TINY)),
    ])


def _logits(model, x) -> np.ndarray:
    out = rp.to_numpy(model(x))
    return out[np.arange(len(TARGETS)), TARGETS]


@pytest.mark.parametrize("arch", list(ARCHS))
def test_conservation_on_bias_free_cnn(arch):
    model = make(arch, bias=False, batchnorm=False)
    x = on_backend(x_numpy())
    relevance, layers = rp.lrp(model, x, target=TARGETS, composite=_epsilon_zero(),
                               return_layers=True)
    logits = _logits(model, x)
    assert np.abs(logits).min() > 1e-2, "explain logits away from zero"
    assert_close(relevance, rp.to_numpy(relevance), shape=INPUT_SHAPE)
    sums = rp.to_numpy(relevance).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(sums, logits, rtol=1e-10)
    if isinstance(model, rp.Sequential):  # every layer conserves
        for name, layer_relevance in layers.items():
            totals = rp.to_numpy(layer_relevance).reshape(len(TARGETS), -1).sum(axis=1)
            np.testing.assert_allclose(totals, logits, rtol=1e-10, err_msg=f"layer {name}")
    else:  # the residual block's input and the two branches' outputs carry it all
        branches = sum(rp.to_numpy(layers[k]).reshape(len(TARGETS), -1).sum(axis=1)
                       for k in ("branch1.relu", "branch2.relu"))
        np.testing.assert_allclose(branches, logits, rtol=1e-10)
        np.testing.assert_allclose(
            rp.to_numpy(layers["stem.relu"]).reshape(len(TARGETS), -1).sum(axis=1), logits,
            rtol=1e-10,
        )


def test_biases_break_conservation():
    """Guard for the test above: with biases the same sums are off."""
    model = make("vgg", batchnorm=False)
    x = on_backend(x_numpy())
    relevance = rp.lrp(model, x, target=TARGETS, composite=_epsilon_zero())
    sums = rp.to_numpy(relevance).sum(axis=(1, 2, 3))
    assert not np.allclose(sums, _logits(model, x), rtol=1e-4)


@pytest.mark.parametrize("bias", [False, True], ids=["bias-free", "with-bias"])
def test_lrp0_equals_gradient_times_input(bias):
    """ReLU CNN with average pools only: LRP-0 is gradient x input (layer by layer
    :math:`R = z \\odot \\partial f / \\partial z`, which biases do not change)."""
    model = make("vgg", bias=bias, batchnorm=False, avg_only=True)
    x = on_backend(x_numpy())
    expected = rp.to_numpy(rp.gradient_x_input(model, x, target=TARGETS))
    actual = rp.lrp(model, x, target=TARGETS, composite=_epsilon_zero())
    _parity(actual, expected, "float64")
    if bias:  # guard: a real epsilon makes them differ
        eps = rp.lrp(model, x, target=TARGETS, rule=rp.rules.Epsilon(0.25))
        assert not np.allclose(rp.to_numpy(eps), expected, rtol=1e-3)


# ---------------------------------------------------------------------------- canonizers


@pytest.mark.parametrize("arch", list(ARCHS))
def test_merge_batchnorm_keeps_the_forward(arch):
    model = make(arch)
    x_np = x_numpy()
    expected = rp.to_numpy(make(arch, backend="numpy")(rp.asarray(x_np, backend="numpy")))
    merged = rp.canonizers.MergeBatchNorm().apply(model)
    assert type(merged) is type(model)
    assert not any(isinstance(layer, rp.layers.BatchNorm) for layer in merged.layers)
    kept = [n for n, layer in model.items() if not isinstance(layer, rp.layers.BatchNorm)]
    assert list(merged.names) == kept
    _parity(merged(on_backend(x_np)), expected, "float64")
    assert not np.allclose(rp.to_numpy(make(arch, batchnorm=False)(on_backend(x_np))),
                           expected, rtol=1e-3), "guard: the batch norms matter"


def test_merge_batchnorm_before_a_dense_layer():
    """A batch norm that follows no linear layer stays (as in zennit); ``into_next=True``
    fuses it into the dense layer after it."""
    rng = np.random.default_rng(3)
    put = _putter(BACKEND, "float64")
    mean, var, gamma, beta = _bn(rng, 6)
    weight, bias = _dense(rng, 5, 6)
    x = rng.normal(size=(3, 6))
    model = rp.Sequential([("bn", rp.BatchNorm1d(put(mean), put(var), put(gamma), put(beta))),
                           ("fc", rp.Dense(put(weight), put(bias)))])
    assert rp.canonizers.MergeBatchNorm().apply(model).names == ("bn", "fc")
    merged = rp.canonizers.MergeBatchNorm(into_next=True).apply(model)
    assert merged.names == ("fc",)
    normalised = (x - mean) / np.sqrt(var + 1e-5) * gamma + beta
    assert_close(merged(on_backend(x)), normalised @ weight.T + bias, rtol=1e-12)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_canonizers_leave_the_model_alone(arch):
    model = make(arch)
    nodes = model.nodes()
    before = {k: rp.to_numpy(v).copy() for k, v in model.named_params().items()}
    x = on_backend(x_numpy())
    out = rp.to_numpy(model(x))
    rp.canonizers.MergeBatchNorm().apply(model)
    rp.lrp(model, x, target=TARGETS,
           composite=rp.composites.EpsilonPlusFlat(canonizers=[rp.canonizers.MergeBatchNorm()]))
    assert model.nodes() == nodes
    assert all(a is b for a, b in zip(model.layers, (n.layer for n in nodes), strict=True))
    after = model.named_params()
    assert set(after) == set(before)
    for key, value in before.items():
        assert_close(after[key], value, rtol=0)
    assert_close(model(x), out, rtol=0)


# -------------------------------------------------------------------------------- graphs


def test_relevance_at_a_shared_node_is_the_sum_of_both_consumers():
    """``block.relu2`` feeds both branches: its relevance is what each branch rule sends."""
    model = make("resnet")
    x = on_backend(x_numpy())
    composite = rp.composites.EpsilonAlpha2Beta1()
    _, layers = rp.lrp(model, x, target=TARGETS, composite=composite, return_layers=True)
    xp = rp.array_namespace(x=x)
    values = model.run(x, xp)
    rules = dict(zip(model.names, composite.rules(model.names, model.layers), strict=True))
    shared = values["block.relu2"]
    parts = []
    for branch in ("branch1", "branch2"):
        parts.append(rp.to_numpy(rules[branch].relevance(
            model[branch], shared, values[branch], layers[branch], xp, nonnegative=True
        )))
        assert np.abs(parts[-1]).max() > 0, f"{branch} sends nothing back"
    assert_close(layers["block.relu2"], parts[0] + parts[1], rtol=1e-12)
    for part in parts:  # neither consumer alone
        assert not np.allclose(rp.to_numpy(layers["block.relu2"]), part, rtol=1e-3)


def test_graph_return_layers_dict():
    model = make("resnet")
    x = on_backend(x_numpy())
    composite = rp.composites.EpsilonPlusFlat()
    relevance, layers = rp.lrp(model, x, target=TARGETS, composite=composite,
                               return_layers=True)
    assert isinstance(layers, dict)
    assert list(layers) == ["input", *model.names]
    values = model.run(x, rp.array_namespace(x=x))
    for name, value in layers.items():
        assert_close(value, rp.to_numpy(value), shape=tuple(values[name].shape))
    assert_close(layers["input"], rp.to_numpy(relevance), rtol=0)
    out = rp.to_numpy(values["fc"])
    start = np.zeros_like(out)
    start[np.arange(len(TARGETS)), TARGETS] = out[np.arange(len(TARGETS)), TARGETS]
    assert_close(layers["fc"], start, rtol=0)


def test_chain_as_graph_matches_sequential_return_layers():
    """The VGG as a Sequential and as a chain-shaped Graph: the same relevance everywhere."""
    sequential = make("vgg")
    graph = rp.Graph([(n.name, n.layer, n.inputs) for n in sequential.nodes()])
    x = on_backend(x_numpy())
    composite = rp.composites.EpsilonGammaBox(low=-3.0, high=3.0,
                                              canonizers=[rp.canonizers.MergeBatchNorm()])
    r_seq, seq_layers = rp.lrp(sequential, x, target=TARGETS, composite=composite,
                               return_layers=True)
    r_graph, graph_layers = rp.lrp(graph, x, target=TARGETS, composite=composite,
                                   return_layers=True)
    assert list(seq_layers) == list(graph_layers) == ["input", *sequential.names]
    assert_close(r_graph, rp.to_numpy(r_seq), rtol=0)
    for name, value in seq_layers.items():
        assert_close(graph_layers[name], rp.to_numpy(value), rtol=0)
