"""Targets beyond one class per sample, on the backend under test: several classes per
sample in one batched pass, and functions of the output (a difference of logits, a mask
over a map). Oracles: separate single-target runs and explicit initial-relevance arrays."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend, random_weights

import relprop as rp

EXACT = BACKEND in ("torch", "jax")
RTOL = 1e-12 if EXACT else 1e-7  # NumPy / array-api-strict: finite-difference derivatives


def _network(seed: int = 0):
    params = random_weights(np.random.default_rng(seed), [5, 7, 6])
    model = rp.Sequential([rp.Dense(on_backend(params[0][0]), on_backend(params[0][1])),
                           rp.ReLU(), rp.Dense(on_backend(params[1][0]), on_backend(params[1][1]))])
    x = on_backend(np.random.default_rng(seed + 1).normal(size=(3, 5)))
    return model, x


EXPLAIN = {
    "lrp": lambda m, x, t: rp.lrp(m, x, t, composite=rp.composites.EpsilonPlus()),
    "gradient": rp.gradient,
    "gradient_x_input": rp.gradient_x_input,
}


@pytest.mark.parametrize("how", list(EXPLAIN))
@pytest.mark.parametrize("form", ["lists", "array"])
def test_several_targets_per_sample_equal_separate_runs(how: str, form: str) -> None:
    model, x = _network()
    classes = [[0, 2, 5], [1, 1, 3], [4, 0, 2]]
    target = classes if form == "lists" else np.asarray(classes)
    together = EXPLAIN[how](model, x, target)
    assert tuple(together.shape) == (3, 3, 5)
    for j in range(3):
        alone = EXPLAIN[how](model, x, [row[j] for row in classes])
        assert_close(together[:, j, ...], rp.to_numpy(alone), rtol=1e-12)


def test_several_targets_with_return_layers() -> None:
    model, x = _network(1)
    relevance, layers = rp.lrp(model, x, [[0, 1], [2, 3], [4, 5]], rule=rp.rules.Epsilon(),
                               return_layers=True)
    assert tuple(relevance.shape) == (3, 2, 5)
    assert tuple(layers["1"].shape) == (3, 2, 7) and tuple(layers["2"].shape) == (3, 2, 6)
    assert_close(layers["input"], rp.to_numpy(relevance), rtol=0.0)


def test_a_function_of_the_output_is_explained() -> None:
    """``out[:, 3] - out[:, 5]``: initial relevance out_3 at 3 and -out_5 at 5."""
    model, x = _network(2)
    out = rp.to_numpy(model(x))
    initial = np.zeros_like(out)
    initial[:, 3], initial[:, 5] = out[:, 3], -out[:, 5]
    composite = rp.composites.EpsilonPlus()
    by_function = rp.lrp(model, x, target=lambda o: o[:, 3] - o[:, 5], composite=composite)
    by_array = rp.lrp(model, x, target=on_backend(initial), composite=composite)
    assert_close(by_function, rp.to_numpy(by_array), rtol=RTOL,
                 atol=RTOL * float(np.abs(rp.to_numpy(by_array)).max()))
    cotangent = np.zeros_like(out)
    cotangent[:, 3], cotangent[:, 5] = 1.0, -1.0
    assert_close(rp.gradient(model, x, target=lambda o: o[:, 3] - o[:, 5]),
                 rp.to_numpy(rp.gradient(model, x, target=on_backend(cotangent))),
                 rtol=RTOL, atol=RTOL)


def test_a_function_returning_a_map_is_the_initial_relevance() -> None:
    """A segmentation-style target: the output inside a mask, as the relevance itself."""
    model, x = _network(3)
    mask = on_backend((np.arange(6) % 2 == 0).astype(float))
    got = rp.lrp(model, x, target=lambda o: o * mask, rule=rp.rules.Epsilon())
    expected = rp.lrp(model, x, target=model(x) * mask, rule=rp.rules.Epsilon())
    assert_close(got, rp.to_numpy(expected), rtol=0.0)


def test_target_errors_name_the_fix() -> None:
    model, x = _network()
    with pytest.raises(ValueError, match="the same number"):
        rp.lrp(model, x, [[0, 1], [2], [3, 4]], rule=rp.rules.Epsilon())
    with pytest.raises(ValueError, match="2 lists of classes for a batch of 3"):
        rp.gradient(model, x, [[0], [1]])
    with pytest.raises(ValueError, match=r"one value per sample \(3,\)"):
        rp.lrp(model, x, target=lambda o: o[:1, ...], rule=rp.rules.Epsilon())
    with pytest.raises(TypeError, match="must return an array of the output's library"):
        rp.lrp(model, x, target=lambda o: 1.0, rule=rp.rules.Epsilon())


def _cnn(seed: int = 5):
    rng = np.random.default_rng(seed)
    model = rp.Sequential([
        ("conv1", rp.Conv2d(on_backend(rng.normal(size=(4, 2, 3, 3))),
                            on_backend(rng.normal(size=4)), padding=1)),
        ("relu1", rp.ReLU()),
        ("conv2", rp.Conv2d(on_backend(rng.normal(size=(5, 4, 3, 3))), None)),
        ("relu2", rp.ReLU()),
        ("flat", rp.Flatten()),
        ("fc", rp.Dense(on_backend(rng.normal(size=(3, 5 * 4 * 4))))),
    ])
    return model, on_backend(rng.normal(size=(2, 2, 6, 6)))


def test_explaining_from_an_intermediate_node_is_the_truncated_model() -> None:
    """start="conv2", target=channel: the channel's output at every position, explained
    back to the input, equals explaining the model cut after conv2 from that relevance."""
    model, x = _cnn()
    composite = rp.composites.EpsilonPlusFlat()
    got = rp.lrp(model, x, target=[3, 1], start="conv2", composite=composite)
    head = model[:3]
    out = rp.to_numpy(head(x))
    initial = np.zeros_like(out)
    initial[0, 3], initial[1, 1] = out[0, 3], out[1, 1]
    expected = rp.lrp(head, x, target=on_backend(initial), composite=composite)
    assert_close(got, rp.to_numpy(expected), rtol=1e-12)
    assert float(np.abs(rp.to_numpy(got)).sum()) > 0
    _, layers = rp.lrp(model, x, target=2, start="relu1", composite=composite,
                       return_layers=True)
    assert float(np.abs(rp.to_numpy(layers["fc"])).max()) == 0.0  # after the start: zeros
    several = rp.lrp(model, x, target=[[0, 4], [1, 2]], start="conv2", composite=composite)
    assert tuple(several.shape) == (2, 2, 2, 6, 6)


def test_start_through_a_folded_batch_norm_and_errors() -> None:
    model, x = _cnn()
    rng = np.random.default_rng(6)
    bn = rp.BatchNorm2d(on_backend(rng.normal(size=5)), on_backend(rng.uniform(1, 2, size=5)))
    with_bn = rp.Sequential([*model.items()][:3] + [("bn", bn)] + [*model.items()][3:])
    composite = rp.composites.EpsilonPlus(canonizers=[rp.canonizers.MergeBatchNorm()])
    folded = rp.lrp(with_bn, x, target=1, start="bn", composite=composite)
    fused = rp.lrp(with_bn, x, target=1, start="conv2", composite=composite)
    assert_close(folded, rp.to_numpy(fused), rtol=0.0)  # bn went into conv2
    with pytest.raises(KeyError, match=r"start='conv9' names no node.*'conv1'"):
        rp.lrp(model, x, target=0, start="conv9", composite=composite)
