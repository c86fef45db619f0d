"""Parity with zennit 0.5.1 on dense torch networks in float64 (torch session only).

zennit is the reference implementation relprop's rules follow (DESIGN.md §5). One
``torch.nn.Sequential`` of ``nn.Linear`` layers with biases (7-9-8-5) and an activation
(ReLU, Tanh or LeakyReLU) is explained by zennit (``zennit.attribution.Gradient`` under a
composite) and by relprop on a model built from the *same* parameter tensors
(``rp.Dense(linear.weight, linear.bias)``). Inputs have entries of both signs; the batch
of 4 explains a different class per sample.

Targets: relprop's index target starts from :math:`R = f_c(x)` at class ``c``, which in
zennit is ``attr_output = output * one_hot``; a float one-hot ``target`` array in relprop
is zennit's ``attr_output = one_hot`` (both checked).

Tolerance: ``rtol=1e-6``, ``atol=0``. Both libraries evaluate the same float64 formulas
with the same torch kernels, so only the order of a few operations differs. Largest
relative error |relprop - zennit| / |zennit| observed over all cases while writing these
tests (torch 2.13 CPU): 1.1e-14, EpsilonGammaBox with a dense ZBox first layer on the
LeakyReLU net. Per family: the five named composites (both option sets, with and without
a user layer_map), Epsilon (default, 0.25, 0, no bias), ZPlus, AlphaBeta(2, 1),
AlphaBeta(1, 0), WSquare, Flat and index/one-hot targets: 0 (bitwise equal); Gamma
<= 3.1e-15; ZBox on every layer <= 5.6e-16; first-layer maps <= 3.9e-15 (ZBox);
per-layer relevance (return_layers) <= 1.5e-15. Entries that are exactly zero in zennit
(dead ReLU paths) are exactly zero in relprop too. rtol=1e-6 leaves room for other BLAS
builds; the formula slips tried against these tests (a negative bias in ZPlus, swapped
ZBox bounds, a shifted Gamma mask, epsilon off by 0.1 %, relevance scaled by 1 + 1e-5,
an unscaled index target) each fail them.
"""

from __future__ import annotations

import importlib.metadata
import sys

import numpy as np
import pytest
from helpers import BACKEND, assert_close, random_weights

import relprop as rp

if BACKEND != "torch":
    pytest.skip("zennit parity needs torch tensors", allow_module_level=True)

SIZES = (7, 9, 8, 5)
TARGETS = [0, 3, 1, 4]
RTOL = 1e-6
LOW, HIGH = -3.0, 3.0
LEAKY_SLOPE = 0.1
ACTIVATIONS = ("relu", "tanh", "leaky_relu", "gelu")


@pytest.fixture(scope="module")
def zennit():
    """zennit itself: its absence fails the torch session (no importorskip)."""
    from _zennit_standin import import_zennit

    return import_zennit()


@pytest.fixture(scope="module")
def torch():
    import torch

    return torch


def _torch_net(torch, activation: str, seed: int = 0):
    """A float64 ``torch.nn.Sequential``: Linear, activation, Linear, activation, Linear."""
    params = random_weights(np.random.default_rng(seed), list(SIZES))
    modules = []
    for index, (weight, bias) in enumerate(params):
        if index:
            modules.append({
                "relu": torch.nn.ReLU,
                "tanh": torch.nn.Tanh,
                "leaky_relu": lambda: torch.nn.LeakyReLU(LEAKY_SLOPE),
                "gelu": torch.nn.GELU,
            }[activation]())
        linear = torch.nn.Linear(weight.shape[1], weight.shape[0], dtype=torch.float64)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))
        modules.append(linear)
    return torch.nn.Sequential(*modules).eval()


def _relprop_model(torch, net) -> rp.Sequential:
    """The relprop model of ``net``, on its very parameter tensors."""
    layers = []
    for module in net:
        if isinstance(module, torch.nn.Linear):
            layers.append(rp.Dense(module.weight, module.bias))
        elif isinstance(module, torch.nn.ReLU):
            layers.append(rp.ReLU())
        elif isinstance(module, torch.nn.Tanh):
            layers.append(rp.Tanh())
        elif isinstance(module, torch.nn.LeakyReLU):
            layers.append(rp.LeakyReLU(module.negative_slope))
        elif isinstance(module, torch.nn.GELU):
            layers.append(rp.GELU(module.approximate))
        else:  # pragma: no cover - the nets above hold nothing else
            raise TypeError(module)
    return rp.Sequential(layers)


def _input(torch, seed: int = 1):
    x = np.random.default_rng(seed).normal(scale=1.5, size=(len(TARGETS), SIZES[0]))
    assert (x < 0).any() and (x > 0).any()
    return torch.from_numpy(x)


def _one_hot(torch, targets=TARGETS):
    return torch.nn.functional.one_hot(torch.tensor(targets), SIZES[-1]).to(torch.float64)


def _zennit_relevance(zennit, net, x, composite, attr_output):
    """zennit's input relevance: the modified gradient with ``attr_output`` at the output."""
    attributor = zennit.attribution.Gradient(net, composite)
    _, relevance = attributor(x.clone(), attr_output)
    assert not composite.handles, "zennit left hooks on the model"
    return relevance.detach().numpy()


def _setup(torch, activation: str):
    net = _torch_net(torch, activation)
    return net, _relprop_model(torch, net), _input(torch), _one_hot(torch)


def _assert_parity(actual, expected: np.ndarray) -> None:
    assert np.abs(expected).max() > 0, "the reference relevance is all zero: nothing is checked"
    assert_close(actual, expected, dtype="float64", rtol=RTOL)


def _rule_composite(torch, zennit, rule):
    """zennit: ``rule`` for every Linear, Pass for activations (relprop's ``rule=``)."""
    return zennit.composites.LayerMapComposite(
        [(torch.nn.Linear, rule), (zennit.types.Activation, zennit.rules.Pass())]
    )


# ---------------------------------------------------------------------------------- model


def test_no_standin_left_in_sys_modules(zennit):
    """The torchvision/PIL stand-ins live only for zennit's import (real modules have files)."""
    assert importlib.metadata.version("zennit") == "0.5.1", "the parity numbers are for 0.5.1"
    for name in ("torchvision", "torchvision.models", "torchvision.models.resnet", "PIL.Image"):
        module = sys.modules.get(name)
        assert module is None or getattr(module, "__file__", None) is not None, name


def test_model_shares_parameters_and_forward(torch):
    net, model, x, _ = _setup(torch, "relu")
    for layer, module in zip(model.layers[::2], net[::2], strict=True):
        assert layer.weight.data_ptr() == module.weight.data_ptr(), "Dense copied the weight"
        assert layer.bias.data_ptr() == module.bias.data_ptr(), "Dense copied the bias"
        assert not layer.weight.requires_grad
    with torch.no_grad():
        expected = net(x).numpy()
    assert_close(model(x), expected, dtype="float64", rtol=1e-12)


# ----------------------------------------------------------------------------- composites

COMPOSITE_NAMES = (
    "EpsilonPlus",
    "EpsilonPlusFlat",
    "EpsilonAlpha2Beta1",
    "EpsilonAlpha2Beta1Flat",
    "EpsilonGammaBox",
)
COMPOSITE_OPTIONS = {
    "default": {},
    "eps0.25-stab1e-3-nobias": {"epsilon": 0.25, "stabilizer": 1e-3, "zero_params": ["bias"]},
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("options", list(COMPOSITE_OPTIONS))
@pytest.mark.parametrize("name", COMPOSITE_NAMES)
def test_named_composite(torch, zennit, name, options, activation):
    net, model, x, one_hot = _setup(torch, activation)
    kwargs = dict(COMPOSITE_OPTIONS[options])
    if name == "EpsilonGammaBox":
        kwargs.update(low=LOW, high=HIGH)
    expected = _zennit_relevance(
        zennit, net, x, getattr(zennit.composites, name)(**kwargs), lambda out: out * one_hot
    )
    actual = rp.lrp(model, x, target=TARGETS, composite=getattr(rp.composites, name)(**kwargs))
    _assert_parity(actual, expected)


@pytest.mark.parametrize("name", COMPOSITE_NAMES)
def test_named_composite_with_user_layer_map(torch, zennit, name):
    """A user ``layer_map`` goes before the composite's own mapping in both libraries."""
    net, model, x, one_hot = _setup(torch, "relu")
    box = {"low": LOW, "high": HIGH} if name == "EpsilonGammaBox" else {}
    reference = getattr(zennit.composites, name)(
        layer_map=[(torch.nn.Linear, zennit.rules.Gamma(0.5))], **box
    )
    expected = _zennit_relevance(zennit, net, x, reference, lambda out: out * one_hot)
    composite = getattr(rp.composites, name)(layer_map={rp.Dense: rp.rules.Gamma(0.5)}, **box)
    _assert_parity(rp.lrp(model, x, target=TARGETS, composite=composite), expected)


# ---------------------------------------------------------------------------------- rules

# id -> (zennit rule from the zennit module, the same relprop rule)
RULES = {
    "epsilon": (lambda z: z.rules.Epsilon(), lambda: rp.rules.Epsilon()),
    "epsilon-0.25": (lambda z: z.rules.Epsilon(0.25), lambda: rp.rules.Epsilon(0.25)),
    "epsilon-0": (lambda z: z.rules.Epsilon(0.0), lambda: rp.rules.Epsilon(0.0)),
    "epsilon-nobias": (
        lambda z: z.rules.Epsilon(zero_params=["bias"]),
        lambda: rp.rules.Epsilon(zero_params=["bias"]),
    ),
    "zplus": (lambda z: z.rules.ZPlus(), lambda: rp.rules.ZPlus()),
    "zplus-nobias": (
        lambda z: z.rules.ZPlus(zero_params=["bias"]),
        lambda: rp.rules.ZPlus(zero_params=["bias"]),
    ),
    "alpha2beta1": (lambda z: z.rules.AlphaBeta(2.0, 1.0), lambda: rp.rules.AlphaBeta(2.0, 1.0)),
    "alpha1beta0": (lambda z: z.rules.AlphaBeta(1.0, 0.0), lambda: rp.rules.AlphaBeta(1.0, 0.0)),
    "alpha2beta1-nobias": (
        lambda z: z.rules.AlphaBeta(2.0, 1.0, zero_params=["bias"]),
        lambda: rp.rules.AlphaBeta(2.0, 1.0, zero_params=["bias"]),
    ),
    "gamma-0.25": (lambda z: z.rules.Gamma(0.25), lambda: rp.rules.Gamma(0.25)),
    "gamma-1-stab1e-3": (
        lambda z: z.rules.Gamma(1.0, stabilizer=1e-3),
        lambda: rp.rules.Gamma(1.0, stabilizer=1e-3),
    ),
    "gamma-nobias": (
        lambda z: z.rules.Gamma(0.25, zero_params=["bias"]),
        lambda: rp.rules.Gamma(0.25, zero_params=["bias"]),
    ),
    "zbox": (lambda z: z.rules.ZBox(LOW, HIGH), lambda: rp.rules.ZBox(LOW, HIGH)),
    "zbox-nobias": (
        lambda z: z.rules.ZBox(LOW, HIGH, zero_params=["bias"]),
        lambda: rp.rules.ZBox(LOW, HIGH, zero_params=["bias"]),
    ),
    "wsquare": (lambda z: z.rules.WSquare(), lambda: rp.rules.WSquare()),
    "wsquare-nobias": (
        lambda z: z.rules.WSquare(zero_params=["bias"]),
        lambda: rp.rules.WSquare(zero_params=["bias"]),
    ),
    "flat": (lambda z: z.rules.Flat(), lambda: rp.rules.Flat()),
    "flat-stab0.1": (lambda z: z.rules.Flat(stabilizer=0.1), lambda: rp.rules.Flat(stabilizer=0.1)),
}


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rule", list(RULES))
def test_rule_on_every_linear_layer(torch, zennit, rule, activation):
    """zennit ``LayerMapComposite([(Linear, rule), (Activation, Pass())])`` == ``rule=rule``."""
    net, model, x, one_hot = _setup(torch, activation)
    make_zennit, make_relprop = RULES[rule]
    reference = _rule_composite(torch, zennit, make_zennit(zennit))
    expected = _zennit_relevance(zennit, net, x, reference, lambda out: out * one_hot)
    _assert_parity(rp.lrp(model, x, target=TARGETS, rule=make_relprop()), expected)


@pytest.mark.parametrize("rule", ["zplus", "gamma-0.25", "zbox"])
def test_rule_through_explicit_composite(torch, zennit, rule):
    """The same through ``rp.composites.Composite(layer_map={rp.Dense: rule})``."""
    net, model, x, one_hot = _setup(torch, "relu")
    make_zennit, make_relprop = RULES[rule]
    reference = _rule_composite(torch, zennit, make_zennit(zennit))
    expected = _zennit_relevance(zennit, net, x, reference, lambda out: out * one_hot)
    composite = rp.composites.Composite(layer_map={rp.Dense: make_relprop()})
    _assert_parity(rp.lrp(model, x, target=TARGETS, composite=composite), expected)


# ---------------------------------------------------------------------- first-layer maps

FIRST_RULES = ("zbox", "zbox-nobias", "wsquare", "flat", "alpha1beta0", "gamma-0.25")


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("first", FIRST_RULES)
def test_first_layer_map(torch, zennit, first, activation):
    """zennit ``SpecialFirstLayerMapComposite`` == relprop ``Composite(first_map=...)``."""
    net, model, x, one_hot = _setup(torch, activation)
    make_zennit, make_relprop = RULES[first]
    reference = zennit.composites.SpecialFirstLayerMapComposite(
        layer_map=[
            (zennit.types.Activation, zennit.rules.Pass()),
            (torch.nn.Linear, zennit.rules.Epsilon(0.25)),
        ],
        first_map=[(torch.nn.Linear, make_zennit(zennit))],
    )
    expected = _zennit_relevance(zennit, net, x, reference, lambda out: out * one_hot)
    composite = rp.composites.Composite(
        layer_map={rp.Dense: rp.rules.Epsilon(0.25)}, first_map={rp.Dense: make_relprop()}
    )
    _assert_parity(rp.lrp(model, x, target=TARGETS, composite=composite), expected)
    by_index = rp.composites.Composite(
        layer_map={rp.Dense: rp.rules.Epsilon(0.25)}, name_map={0: make_relprop()}
    )
    _assert_parity(rp.lrp(model, x, target=TARGETS, composite=by_index), expected)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_epsilon_gamma_box_with_dense_first_map(torch, zennit, activation):
    """ZBox on a dense first layer: the user's ``first_map`` of EpsilonGammaBox, both libraries."""
    net, model, x, one_hot = _setup(torch, activation)
    reference = zennit.composites.EpsilonGammaBox(
        low=LOW, high=HIGH, first_map=[(torch.nn.Linear, zennit.rules.ZBox(LOW, HIGH))]
    )
    expected = _zennit_relevance(zennit, net, x, reference, lambda out: out * one_hot)
    composite = rp.composites.EpsilonGammaBox(
        low=LOW, high=HIGH, first_map={rp.Dense: rp.rules.ZBox(LOW, HIGH)}
    )
    _assert_parity(rp.lrp(model, x, target=TARGETS, composite=composite), expected)


# -------------------------------------------------------------------------------- targets


def test_float_one_hot_target_is_zennits_convention(torch, zennit):
    """relprop ``target=one_hot`` (float) == zennit ``attr_output=one_hot``: R starts at 1."""
    net, model, x, one_hot = _setup(torch, "relu")
    expected = _zennit_relevance(zennit, net, x, zennit.composites.EpsilonPlusFlat(), one_hot)
    actual = rp.lrp(model, x, target=one_hot, composite=rp.composites.EpsilonPlusFlat())
    _assert_parity(actual, expected)
    scaled = rp.lrp(model, x, target=TARGETS, composite=rp.composites.EpsilonPlusFlat())
    with pytest.raises(AssertionError):  # the two conventions really differ on this net
        assert_close(scaled, expected, dtype="float64", rtol=RTOL)


@pytest.mark.parametrize("form", ["list", "int64 tensor", "argmax"])
def test_index_target_forms(torch, zennit, form):
    """Every index form starts from ``f_c(x)`` at class ``c``: zennit ``output * one_hot``."""
    net, model, x, _ = _setup(torch, "tanh")
    with torch.no_grad():
        argmax = net(x).argmax(dim=1).tolist()
    classes = argmax if form == "argmax" else TARGETS
    target = {"list": TARGETS, "int64 tensor": torch.tensor(TARGETS), "argmax": None}[form]
    one_hot = _one_hot(torch, classes)
    expected = _zennit_relevance(
        zennit, net, x, zennit.composites.EpsilonAlpha2Beta1(), lambda out: out * one_hot
    )
    actual = rp.lrp(model, x, target=target, composite=rp.composites.EpsilonAlpha2Beta1())
    _assert_parity(actual, expected)


# ------------------------------------------------------------------ per-layer relevance


def _zennit_layer_relevances(torch, net, x, composite, one_hot):
    """zennit's relevance at every layer's input and at the output, ``[R_0, ..., R_L]``.

    The hooked modules are called one by one so that every intermediate tensor can be a
    target of ``torch.autograd.grad``: the modified gradient reaching the input of
    module ``k`` is its relevance.
    """
    with composite.context(net):
        activations = [x.clone().requires_grad_(True)]
        for module in net:
            activations.append(module(activations[-1]))
        output = activations[-1]
        gradients = torch.autograd.grad(
            output, activations, grad_outputs=output.detach() * one_hot
        )
    return [gradient.detach().numpy() for gradient in gradients]


LAYER_CASES = {
    "EpsilonPlusFlat": (lambda z, t: z.composites.EpsilonPlusFlat(),
                        lambda: rp.composites.EpsilonPlusFlat()),
    "EpsilonAlpha2Beta1": (lambda z, t: z.composites.EpsilonAlpha2Beta1(epsilon=0.25),
                           lambda: rp.composites.EpsilonAlpha2Beta1(epsilon=0.25)),
    "alpha2beta1": (lambda z, t: _rule_composite(t, z, z.rules.AlphaBeta(2.0, 1.0)),
                    lambda: rp.composites.Composite(layer_map={rp.Dense: rp.rules.AlphaBeta()})),
    "gamma": (lambda z, t: _rule_composite(t, z, z.rules.Gamma(0.25)),
              lambda: rp.composites.Composite(layer_map={rp.Dense: rp.rules.Gamma(0.25)})),
}


@pytest.mark.parametrize("activation", ["relu", "leaky_relu"])
@pytest.mark.parametrize("case", list(LAYER_CASES))
def test_return_layers_match_zennit_per_layer(torch, zennit, case, activation):
    net, model, x, one_hot = _setup(torch, activation)
    make_zennit, make_relprop = LAYER_CASES[case]
    expected = _zennit_layer_relevances(torch, net, x, make_zennit(zennit, torch), one_hot)
    final = _zennit_relevance(
        zennit, net, x, make_zennit(zennit, torch), lambda out: out * one_hot
    )
    np.testing.assert_allclose(expected[0], final, rtol=1e-12)  # the two zennit routes agree
    relevance, layers = rp.lrp(
        model, x, target=TARGETS, composite=make_relprop(), return_layers=True
    )
    assert list(layers) == ["input", *model.names] and len(expected) == len(net) + 1
    _assert_parity(relevance, expected[0])
    for index, (actual, wanted) in enumerate(zip(layers.values(), expected, strict=True)):
        shape = (len(TARGETS), SIZES[0]) if index == 0 else tuple(wanted.shape)
        assert tuple(actual.shape) == shape, f"layer {index}"
        _assert_parity(actual, wanted)
