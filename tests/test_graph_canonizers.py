"""Graphs (construction, relevance at shared nodes), batch norm, and the MergeBatchNorm
canonizer: fused models compute the same function and the user's model is untouched."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import assert_close, on_backend

import relprop as rp
from relprop.canonizers import MergeBatchNorm, canonize
from relprop.rules import Epsilon, Gradient, Norm, ZPlus

RNG = np.random.default_rng(11)


def _bn_params(channels: int) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(channels)
    return (rng.normal(size=channels), rng.uniform(0.5, 2.0, size=channels),
            rng.normal(size=channels), rng.normal(size=channels))


def _bn(kind, channels: int, affine: bool = True):
    mean, var, weight, bias = (on_backend(a) for a in _bn_params(channels))
    return kind(mean, var, weight if affine else None, bias if affine else None, eps=1e-3)


def test_batchnorm_forward_matches_the_formula():
    mean, var, weight, bias = _bn_params(3)
    x = RNG.normal(size=(2, 3, 4, 4))
    expected = ((x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-3)
                * weight[:, None, None] + bias[:, None, None])
    assert_close(_bn(rp.BatchNorm2d, 3)(on_backend(x)), expected, rtol=1e-12)


def _dense_bn_relu_bn_dense() -> rp.Sequential:
    w1, b1, w2 = RNG.normal(size=(4, 5)), RNG.normal(size=4), RNG.normal(size=(3, 4))
    return rp.Sequential([
        ("fc1", rp.Dense(on_backend(w1), on_backend(b1))),
        ("bn1", _bn(rp.BatchNorm1d, 4)),
        ("relu", rp.ReLU()),
        ("bn2", _bn(rp.BatchNorm1d, 4, affine=False)),
        ("fc2", rp.Dense(on_backend(w2))),
    ])


def test_merge_batchnorm_after_dense_and_before_dense():
    """By default (zennit's SequentialMergeBatchNorm) only the batch norm after a linear
    layer is fused; ``into_next=True`` fuses the one before ``fc2`` into it as well."""
    model = _dense_bn_relu_bn_dense()
    w1 = rp.to_numpy(model["fc1"].weight).copy()
    x = on_backend(RNG.normal(size=(3, 5)))
    fused = canonize(model, [MergeBatchNorm()])
    assert fused.names == ("fc1", "relu", "bn2", "fc2")
    assert dict(fused.aliases) == {"bn1": ("output", "fc1")}
    assert_close(fused(x), rp.to_numpy(model(x)), rtol=1e-12)
    both = canonize(model, [MergeBatchNorm(into_next=True)])
    assert both.names == ("fc1", "relu", "fc2")
    assert dict(both.aliases) == {"bn1": ("output", "fc1"), "bn2": ("input", "fc2")}
    assert_close(both(x), rp.to_numpy(model(x)), rtol=1e-12)
    assert isinstance(model["bn1"], rp.BatchNorm1d) and len(model) == 5  # untouched
    assert_close(model["fc1"].weight, w1, rtol=0)


def test_a_batchnorm_after_no_linear_layer_passes_relevance_by_default():
    """The default leaves ``bn2`` a layer under Pass (as zennit does): relevance equals
    that of the model with only ``bn1`` fused by hand; ``into_next`` gives other numbers
    (the fused ``fc2`` sees ``bn2``'s input), and still reports ``bn2`` by name."""
    model = _dense_bn_relu_bn_dense()
    x = on_backend(RNG.normal(size=(3, 5)))
    composite = rp.composites.EpsilonPlus(canonizers=[MergeBatchNorm()])
    relevance, layers = rp.lrp(model, x, target=1, composite=composite, return_layers=True)
    by_hand = canonize(model, [MergeBatchNorm()])
    assert any(isinstance(layer, rp.BatchNorm1d) for layer in by_hand.layers)
    assert_close(relevance, rp.to_numpy(rp.lrp(by_hand, x, target=1,
                                               composite=rp.composites.EpsilonPlus())),
                 rtol=1e-12)
    assert_close(layers["bn2"], rp.to_numpy(layers["relu"]), rtol=0)  # Pass
    option = rp.composites.EpsilonPlus(canonizers=[MergeBatchNorm(into_next=True)])
    other, other_layers = rp.lrp(model, x, target=1, composite=option, return_layers=True)
    assert list(other_layers) == list(layers) == ["input", *model.names]
    assert not np.allclose(rp.to_numpy(other), rp.to_numpy(relevance), rtol=1e-3)
    fused = canonize(model, [MergeBatchNorm(into_next=True)])
    xp = rp.array_namespace(x=x)
    values = fused.run(x, xp)
    sent = Epsilon().relevance(fused["fc2"], values["relu"], values["fc2"],
                               other_layers["fc2"], xp, nonnegative=True)
    assert_close(other_layers["bn2"], rp.to_numpy(sent), rtol=1e-12)  # what fc2 sends back


def test_merge_batchnorm_repr_and_equality():
    assert repr(MergeBatchNorm()) == "MergeBatchNorm()"
    assert repr(MergeBatchNorm(into_next=True)) == "MergeBatchNorm(into_next=True)"
    assert MergeBatchNorm() == MergeBatchNorm(into_next=False) != MergeBatchNorm(into_next=True)
    assert len({MergeBatchNorm(), MergeBatchNorm(), MergeBatchNorm(into_next=True)}) == 2
    composite = rp.composites.EpsilonPlus(canonizers=[MergeBatchNorm(into_next=True)])
    assert composite.canonizers == (MergeBatchNorm(into_next=True),)
    with pytest.raises(TypeError):
        MergeBatchNorm(True)  # type: ignore[misc]  # keyword only
    with pytest.raises(TypeError, match="into_next"):
        MergeBatchNorm(into_next="yes")  # type: ignore[arg-type]


def test_batchnorm_before_a_padded_convolution_is_not_fused():
    conv = rp.Conv2d(on_backend(RNG.normal(size=(2, 3, 3, 3))), padding=1)
    model = rp.Sequential([_bn(rp.BatchNorm2d, 3), conv])
    assert canonize(model, [MergeBatchNorm(into_next=True)]).names == ("0", "1")
    unpadded = rp.Sequential([_bn(rp.BatchNorm2d, 3),
                              rp.Conv2d(on_backend(RNG.normal(size=(2, 3, 3, 3))))])
    x = on_backend(RNG.normal(size=(2, 3, 6, 6)))
    assert canonize(unpadded, [MergeBatchNorm()]).names == ("0", "1")
    fused = canonize(unpadded, [MergeBatchNorm(into_next=True)])
    assert fused.names == ("1",)
    assert_close(fused(x), rp.to_numpy(unpadded(x)), rtol=1e-11)


def _residual_graph() -> rp.Graph:
    conv = rp.Conv2d(on_backend(RNG.normal(size=(3, 3, 3, 3))), padding=1)
    return rp.Graph([
        ("conv", conv, "input"),
        ("bn", _bn(rp.BatchNorm2d, 3), "conv"),
        ("relu", rp.ReLU(), "bn"),
        ("add", rp.Add(), ["relu", "input"]),
        ("cat", rp.Concat(), ["add", "relu"]),
        ("pool", rp.AdaptiveAvgPool2d(1), "cat"),
        ("flat", rp.Flatten(), "pool"),
        ("fc", rp.Dense(on_backend(RNG.normal(size=(2, 6)))), "flat"),
    ])


def test_merge_batchnorm_rewires_a_graph():
    graph = _residual_graph()
    fused = canonize(graph, [MergeBatchNorm()])
    assert "bn" not in fused.names and fused.nodes()[1].inputs == ("conv",)
    x = on_backend(RNG.normal(size=(2, 3, 5, 5)))
    assert_close(fused(x), rp.to_numpy(graph(x)), rtol=1e-11)
    composite = rp.composites.EpsilonPlus(canonizers=[MergeBatchNorm()])
    assert_close(
        rp.lrp(graph, x, target=0, composite=composite),
        rp.to_numpy(rp.lrp(fused, x, target=0, composite=rp.composites.EpsilonPlus())),
        rtol=1e-12,
    )


def test_relevance_at_a_shared_node_is_the_sum_of_its_consumers():
    graph = _residual_graph()
    x = on_backend(RNG.normal(size=(2, 3, 5, 5)))
    composite = rp.composites.EpsilonPlus(canonizers=[MergeBatchNorm()])
    _, layers = rp.lrp(graph, x, target=1, composite=composite, return_layers=True)
    fused = canonize(graph, [MergeBatchNorm()])
    values = fused.run(x, rp.array_namespace(x=x))
    xp = rp.array_namespace(x=x)
    # what "add" and "cat" send back to "relu", computed here rule by rule
    from_cat = Gradient().relevance_many(fused["cat"], [values["add"], values["relu"]],
                                         values["cat"], layers["cat"], xp)[1]
    from_add = Norm().relevance_many(fused["add"], [values["relu"], x], values["add"],
                                     layers["add"], xp)[0]
    assert_close(layers["relu"], rp.to_numpy(from_add + from_cat), rtol=1e-12)
    assert list(layers) == ["input", *graph.names]  # folded batch norms too


def test_graph_construction_errors():
    dense = rp.Dense(on_backend(np.eye(2)))
    with pytest.raises(ValueError, match="topological"):
        rp.Graph([("a", dense, "b"), ("b", rp.ReLU(), "input")])
    with pytest.raises(ValueError, match="at least 2 inputs"):
        rp.Graph([("a", dense, "input"), ("sum", rp.Add(), "a")])
    with pytest.raises(ValueError, match="exactly 1 input"):
        rp.Graph([("a", dense, "input"), ("r", rp.ReLU(), ["a", "input"])])
    with pytest.raises(ValueError, match="'input'"):
        rp.Graph([("input", dense, "input")])
    with pytest.raises(TypeError, match="Graph"):
        rp.Sequential([dense, rp.Add()])


def test_weight_rules_cannot_split_a_sum():
    graph = rp.Graph([("a", rp.Dense(on_backend(np.eye(2))), "input"),
                      ("sum", rp.Add(), ["a", "input"])])
    x = on_backend(np.ones((1, 2)))
    with pytest.raises(TypeError, match="layer 1"):
        rp.lrp(graph, x, target=0, composite=rp.composites.Composite(name_map={"sum": ZPlus()}))
    relevance = rp.lrp(graph, x, target=0, composite=rp.composites.Composite(
        layer_map={rp.Dense: Epsilon(0.0)}, name_map={"sum": Norm(0.0)}))
    assert_close(relevance, np.array([[2.0, 0.0]]), rtol=1e-12)  # x_0 via "a" and directly


def test_gradient_through_a_graph_matches_autodiff_of_its_forward():
    graph = canonize(_residual_graph(), [MergeBatchNorm()])
    x = on_backend(RNG.normal(size=(1, 3, 5, 5)))
    xp = rp.array_namespace(x=x)

    def logit(a):
        return graph.forward(a, xp)[:, 0]

    tolerance = 1e-6 if rp.default_backend() in ("numpy", "array_api_strict", "cupy") else 1e-10
    assert_close(rp.gradient(graph, x, target=0), rp.to_numpy(rp.grad(logit, x)), rtol=tolerance,
                 atol=tolerance)


def test_batchnorm_after_a_convolution_is_fused_before_the_one_in_front():
    """BN -> conv -> BN: like zennit, the batch norm after the conv is fused and the one
    in front stays; ``into_next`` fuses that one too where that is exact (no padding)."""
    conv = rp.Conv2d(on_backend(RNG.normal(size=(2, 3, 3, 3))))
    model = rp.Sequential([("bn0", _bn(rp.BatchNorm2d, 3)), ("conv", conv),
                           ("bn1", _bn(rp.BatchNorm2d, 2))])
    x = on_backend(RNG.normal(size=(2, 3, 6, 6)))
    assert canonize(model, [MergeBatchNorm()]).names == ("bn0", "conv")
    fused = canonize(model, [MergeBatchNorm(into_next=True)])
    assert fused.names == ("conv",)
    assert_close(fused(x), rp.to_numpy(model(x)), rtol=1e-11)
    padded = rp.Sequential([("bn0", _bn(rp.BatchNorm2d, 3)),
                            ("conv", rp.Conv2d(conv.weight, padding=1)),
                            ("bn1", _bn(rp.BatchNorm2d, 2))])
    assert canonize(padded, [MergeBatchNorm(into_next=True)]).names == ("bn0", "conv")


def test_merge_batchnorm_fuses_a_per_channel_affine_after_a_linear_layer():
    """A batch norm written out as arithmetic (an imported JAX model) is an rp.Affine:
    fused after a conv or dense layer when per channel; input normalisation stays."""
    scale, shift = RNG.uniform(0.5, 2.0, size=(4, 1, 1)), RNG.normal(size=(4, 1, 1))
    model = rp.Sequential([
        ("norm", rp.Affine(on_backend(np.asarray(4.0)), on_backend(np.asarray(-2.0)))),
        ("conv", rp.Conv2d(on_backend(RNG.normal(size=(4, 2, 3, 3))),
                           on_backend(RNG.normal(size=4)))),
        ("bn", rp.Affine(on_backend(scale), on_backend(shift))),
        ("relu", rp.ReLU()),
        ("flat", rp.Flatten()),
        ("fc", rp.Dense(on_backend(RNG.normal(size=(3, 16))))),
        ("scale", rp.Affine(on_backend(np.asarray(0.5)), None)),  # one number: per channel too
    ])
    fused = canonize(model, [MergeBatchNorm()])
    assert fused.names == ("norm", "conv", "relu", "flat", "fc")
    assert dict(fused.aliases) == {"bn": ("output", "conv"), "scale": ("output", "fc")}
    x = on_backend(RNG.normal(size=(2, 2, 4, 4)))
    assert_close(fused(x), rp.to_numpy(model(x)), rtol=1e-12, atol=1e-12)
    # constants that vary along a spatial axis are not a batch norm: kept
    spatial = rp.Sequential([
        ("conv", rp.Conv2d(on_backend(RNG.normal(size=(2, 1, 1, 1))))),
        ("affine", rp.Affine(on_backend(RNG.normal(size=(1, 3, 1))), None)),
    ])
    assert canonize(spatial, [MergeBatchNorm()]).names == ("conv", "affine")
