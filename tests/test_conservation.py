"""The conservation report: ``rp.lrp(..., report=True)``.

Its sums must be the per-layer relevance sums (``return_layers``), each layer's shares
must explain what it keeps back (error 0 to rounding for every conserving rule, on dense,
VGG- and ResNet-style nets), and a batch norm left unmerged must be warned about.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import on_backend
from test_cnn import TARGETS, make, x_numpy

import relprop as rp

COMPOSITES = {
    "EpsilonPlusFlat": rp.composites.EpsilonPlusFlat(),
    "EpsilonAlpha2Beta1": rp.composites.EpsilonAlpha2Beta1(),
    "EpsilonGammaBox": rp.composites.EpsilonGammaBox(low=-3.0, high=3.0),
}


def _relative(balance, scale: np.ndarray) -> float:
    return float(np.max(np.abs(balance.error)) / np.max(np.abs(scale)))


@pytest.mark.parametrize("arch", ["vgg", "resnet"])
@pytest.mark.parametrize("name", list(COMPOSITES))
def test_report_sums_are_the_layer_sums_and_the_shares_explain_the_rest(arch, name) -> None:
    model, x = make(arch), on_backend(x_numpy())
    with pytest.warns(UserWarning, match="batch norms .* were not merged"):
        relevance, layers, report = rp.lrp(model, x, TARGETS, composite=COMPOSITES[name],
                                           return_layers=True, report=True)
    by_name = {node.name: node for node in model.nodes()}
    sums = {key: rp.to_numpy(value).reshape(len(TARGETS), -1).sum(axis=1)
            for key, value in layers.items()}
    assert [b.name for b in report.layers] == list(model.names)
    for balance in report.layers:
        np.testing.assert_allclose(balance.received, sums[balance.name], rtol=1e-12)
        inputs = by_name[balance.name].inputs
        if len(inputs) == 1 and len([n for n in model.nodes() if inputs[0] in n.inputs]) == 1:
            np.testing.assert_allclose(balance.sent, sums[inputs[0]], rtol=1e-12, atol=1e-12)
        if balance.bias is not None:
            assert _relative(balance, balance.received) < 1e-9, balance
    np.testing.assert_allclose(report.input, sums["input"], rtol=1e-12)
    np.testing.assert_allclose(report.output, sums[model.names[-1]], rtol=1e-12)


@pytest.mark.parametrize("rule", [rp.rules.Epsilon(0.25), rp.rules.ZPlus(), rp.rules.Gamma(0.5),
                                  rp.rules.AlphaBeta(2.0, 1.0), rp.rules.WSquare(),
                                  rp.rules.Flat(), rp.rules.ZBox(-3.0, 3.0)])
def test_every_rule_accounts_for_what_it_keeps(rule) -> None:
    rng = np.random.default_rng(2)
    model = rp.Sequential([
        rp.Dense(on_backend(rng.normal(size=(6, 4))), on_backend(rng.normal(size=6))),
        rp.ReLU(),
        rp.Dense(on_backend(rng.normal(size=(3, 6))), on_backend(rng.normal(size=3))),
    ])
    x = on_backend(rng.uniform(-2.0, 2.0, size=(5, 4)))
    _, report = rp.lrp(model, x, 1, rule=rule, report=True)
    for balance in report.layers:
        assert balance.bias is not None and balance.stabilizer is not None
        assert _relative(balance, balance.received) < 1e-9, (rule, balance)


def test_a_conserving_pass_has_zero_shares_and_no_bias_no_share() -> None:
    rng = np.random.default_rng(4)
    model = rp.Sequential([rp.Dense(on_backend(rng.normal(size=(5, 3)))), rp.ReLU(),
                           rp.Dense(on_backend(rng.normal(size=(2, 5))))])
    x = on_backend(rng.normal(size=(3, 3)))
    relevance, report = rp.lrp(model, x, 0, rule=rp.rules.Epsilon(0.0), report=True)
    for balance in report.layers:
        np.testing.assert_array_equal(balance.bias, 0.0)
        np.testing.assert_allclose(balance.received, balance.sent, rtol=1e-12)
    out = rp.to_numpy(model(x))[:, 0]
    np.testing.assert_allclose(report.output, out, rtol=1e-12)
    np.testing.assert_allclose(report.input, rp.to_numpy(relevance).sum(axis=1), rtol=1e-12)
    with_bias = rp.Sequential([rp.Dense(on_backend(np.ones((1, 2))), on_backend(np.array([1.0])))])
    _, report = rp.lrp(with_bias, on_backend(np.ones((1, 2))), 0, rule=rp.rules.Epsilon(0.0),
                       report=True)
    np.testing.assert_allclose(report.layers[0].bias, [1.0])  # f = 3: x gets 2, the bias 1
    np.testing.assert_allclose(report.layers[0].sent, [2.0])


def test_gradient_rows_state_no_shares_and_the_table_prints() -> None:
    model, x = make("vgg", batchnorm=False), on_backend(x_numpy())
    _, report = rp.lrp(model, x, TARGETS, composite=rp.composites.GuidedBackprop(), report=True)
    assert report["fc2"].bias is None and report["relu1"].stabilizer is None
    np.testing.assert_allclose(report["fc2"].error,
                               report["fc2"].received - report["fc2"].sent)
    text = str(report)
    assert text.splitlines()[0].split() == ["layer", "kind", "rule", "received", "sent", "bias",
                                            "stabiliser", "error"]
    assert "conv1" in text and "sample 1" in report.table(1)
    with pytest.raises(KeyError, match="no layer 'conv9'"):
        report["conv9"]


def test_a_merged_batch_norm_is_not_warned_about() -> None:
    model, x = make("vgg"), on_backend(x_numpy())
    composite = rp.composites.EpsilonPlusFlat(canonizers=[rp.canonizers.MergeBatchNorm()])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _, report = rp.lrp(model, x, TARGETS, composite=composite, report=True)
    assert report.warnings == ()
    assert "bn1" not in [b.name for b in report.layers]  # folded into conv1


def test_several_targets_reshape_the_report() -> None:
    model, x = make("vgg", batchnorm=False), on_backend(x_numpy())
    composite = rp.composites.EpsilonPlusFlat()
    _, report = rp.lrp(model, x, [[0, 1]] * len(TARGETS), composite=composite, report=True)
    assert report.output.shape == (len(TARGETS), 2)
    _, single = rp.lrp(model, x, [1] * len(TARGETS), composite=composite, report=True)
    np.testing.assert_allclose(report["conv1"].received[:, 1], single["conv1"].received)
