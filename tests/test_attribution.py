"""Attributors: SmoothGrad, Integrated Gradients, Occlusion, and the classes over them.

Each is checked against a plain loop written here in NumPy terms (the batched pass must
equal separate calls), on hand-computed models, across chunk sizes and targets, and (torch
session) against zennit 0.5.1's attributors in float64.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp
from relprop.attribution import occlusion_windows, path_weights

RNG_SEED = 3


def _cnn(dtype: str = "float64") -> rp.Sequential:
    rng = np.random.default_rng(RNG_SEED)
    conv = rng.normal(size=(4, 2, 3, 3)) / 3.0
    dense = rng.normal(size=(3, 4 * 3 * 3)) / 6.0
    return rp.Sequential([
        rp.Conv2d(on_backend(conv, dtype), on_backend(rng.normal(size=4) * 0.1, dtype)),
        rp.ReLU(), rp.MaxPool2d(2), rp.Flatten(),
        rp.Dense(on_backend(dense, dtype), on_backend(rng.normal(size=3) * 0.1, dtype)),
    ])


def _images(batch: int = 2) -> np.ndarray:
    return np.random.default_rng(RNG_SEED + 1).normal(size=(batch, 2, 8, 8))


EPSILON_PLUS = functools.partial(rp.lrp, composite=rp.composites.EpsilonPlus())
EXPLAINERS = {"gradient": rp.gradient, "x_input": rp.gradient_x_input, "lrp": EPSILON_PLUS}


# -- SmoothGrad -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(EXPLAINERS))
def test_smoothgrad_is_the_mean_over_noisy_copies(name: str) -> None:
    explain = EXPLAINERS[name]
    model, x = _cnn(), _images()
    noise = np.random.default_rng(0).standard_normal((5, *x.shape))
    sigma = 0.2 * (x.max(axis=(1, 2, 3)) - x.min(axis=(1, 2, 3)))[:, None, None, None]
    expected = np.mean([rp.to_numpy(explain(model, on_backend(x + sigma * e), [0, 2]))
                        for e in noise], axis=0)
    for batch_size in (None, 3):
        got = rp.smoothgrad(model, on_backend(x), [0, 2], explain=explain, noise_level=0.2,
                            noise=on_backend(noise), batch_size=batch_size)
        assert_close(got, expected)


def test_smoothgrad_draws_are_seeded_and_the_same_on_every_backend() -> None:
    model, x = _cnn(), _images()
    noise = np.random.default_rng(7).standard_normal((4, *x.shape))
    drawn = rp.smoothgrad(model, on_backend(x), 1, n_samples=4, seed=7)
    given = rp.smoothgrad(model, on_backend(x), 1, noise=on_backend(noise))
    assert_close(drawn, rp.to_numpy(given))
    other = rp.smoothgrad(model, on_backend(x), 1, n_samples=4, seed=8)
    assert not np.allclose(rp.to_numpy(other), rp.to_numpy(drawn))


def test_smoothgrad_of_a_linear_model_is_its_gradient() -> None:
    weight = np.array([[2.0, -1.0, 0.5]])
    model = rp.Sequential([rp.Dense(on_backend(weight))])
    got = rp.smoothgrad(model, on_backend(np.ones((2, 3))), 0, n_samples=6, noise_level=1.0)
    assert_close(got, np.repeat(weight, 2, axis=0))


# -- Integrated Gradients -------------------------------------------------------------------


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_right", "riemann_left",
                                    "riemann_middle", "riemann_trapezoid"])
def test_path_weights_integrate_polynomials(method: str) -> None:
    alphas, weights = path_weights(method, 8)
    assert alphas.min() >= 0.0 and alphas.max() <= 1.0
    np.testing.assert_allclose(weights.sum(), 1.0, rtol=1e-14)
    exact = {"gausslegendre": 1e-14, "riemann_right": 0.07, "riemann_left": 0.07}.get(method,
                                                                                 0.01)
    np.testing.assert_allclose(weights @ alphas**3, 0.25, atol=exact)


def test_integrated_gradients_is_the_weighted_sum_over_the_path() -> None:
    model, x = _cnn(), _images()
    baseline = np.full_like(x, 0.1)
    alphas, weights = path_weights("gausslegendre", 6)
    steps = [rp.to_numpy(rp.gradient(model, on_backend(baseline + a * (x - baseline)), 1))
             for a in alphas]
    expected = (x - baseline) * np.tensordot(weights, np.stack(steps), axes=1)
    for batch_size in (None, 5):
        got = rp.integrated_gradients(model, on_backend(x), 1, baseline=0.1, n_steps=6,
                                      batch_size=batch_size)
        assert_close(got, expected)
    array_base = rp.integrated_gradients(model, on_backend(x), 1, n_steps=6,
                                         baseline=on_backend(baseline))
    assert_close(array_base, expected)
    called = rp.integrated_gradients(model, on_backend(x), 1, n_steps=6,
                                     baseline=lambda a: a * 0 + 0.1)
    assert_close(called, expected)


def test_integrated_gradients_is_complete_on_a_smooth_model() -> None:
    """sum IG = f(x) - f(baseline), up to the quadrature error (Gauss-Legendre: tiny)."""
    rng = np.random.default_rng(5)
    model = rp.Sequential([rp.Dense(on_backend(rng.normal(size=(6, 4)))), rp.Tanh(),
                           rp.Dense(on_backend(rng.normal(size=(2, 6))))])
    x = rng.normal(size=(3, 4))
    ig = rp.integrated_gradients(model, on_backend(x), 0, n_steps=40)
    out = rp.to_numpy(model(on_backend(x)))[:, 0] - rp.to_numpy(
        model(on_backend(np.zeros_like(x))))[:, 0]
    np.testing.assert_allclose(rp.to_numpy(ig).sum(axis=1), out, rtol=1e-9)


# -- Occlusion ------------------------------------------------------------------------------


def test_occlusion_windows_cover_every_entry_and_are_cut_at_the_edge() -> None:
    masks = occlusion_windows((3, 5, 7), window=(2, 3), stride=(2, 2))
    assert masks.shape == (3 * 4, 3, 5, 7)
    assert masks[:, 0].sum(axis=0).min() >= 1
    assert masks[-1].sum() == 3 * 1 * 1  # the last window: cut to one pixel, all channels
    assert (masks[:, :1] == masks[:, 2:]).all()  # channels taken whole
    with pytest.raises(ValueError, match="window=.*entries"):
        occlusion_windows((3, 5), window=(1, 1, 1))


def _occlusion_loop(model, x, target, window, fill, outside):
    masks = occlusion_windows(x.shape[1:], window)
    score = rp.to_numpy(model(on_backend(x)))[np.arange(len(x)), target]
    total, count = np.zeros_like(x), np.zeros(x.shape[1:])
    for mask in masks:
        kept = np.where(mask, x, fill) if outside else np.where(mask, fill, x)
        s = rp.to_numpy(model(on_backend(kept)))[np.arange(len(x)), target]
        total += mask * (s if outside else score - s)[:, None, None, None]
        count += mask
    return total if outside else total / count


@pytest.mark.parametrize("occlude", ["window", "outside"])
def test_occlusion_equals_a_loop_over_windows(occlude: str) -> None:
    model, x = _cnn(), _images(3)
    expected = _occlusion_loop(model, x, [0, 1, 2], (4, 4), 0.5, occlude == "outside")
    for batch_size in (None, 4):
        got = rp.occlusion(model, on_backend(x), [0, 1, 2], window=(4, 4), fill=0.5,
                           occlude=occlude, batch_size=batch_size)
        assert_close(got, expected)


def test_occlusion_of_a_linear_model_by_hand() -> None:
    model = rp.Sequential([rp.Dense(on_backend(np.array([[1.0, 2.0, 3.0, 4.0]])))])
    x = on_backend(np.array([[1.0, 1.0, 1.0, 1.0]]))
    # windows {0, 1}, {1, 2}, {2, 3}, {3}: entry 1 is in two, its drops 3 and 5 average to 4
    got = rp.occlusion(model, x, 0, window=2, stride=1)
    assert_close(got, [[3.0, 4.0, 6.0, 5.5]])
    assert_close(rp.occlusion(model, x, 0, window=2, occlude="outside"), [[3.0, 3.0, 7.0, 7.0]])
    filled = rp.occlusion(model, x, 0, window=4, fill=on_backend(np.full((1, 4), 2.0)))
    assert_close(filled, [[-10.0] * 4])


def test_occlusion_scores_arrays_and_functions_of_the_output() -> None:
    model, x = _cnn(), _images()
    by_index = rp.occlusion(model, on_backend(x), [2, 2], window=3)
    one_hot = on_backend(np.tile(np.eye(3)[2], (2, 1)))
    assert_close(rp.occlusion(model, on_backend(x), one_hot, window=3), rp.to_numpy(by_index))
    per_sample = rp.occlusion(model, on_backend(x), lambda out: out[:, 2], window=3)
    assert_close(per_sample, rp.to_numpy(by_index))


# -- any target, every attributor -------------------------------------------------------------


ATTRIBUTORS = {
    "smoothgrad": functools.partial(rp.smoothgrad, n_samples=3, explain=EPSILON_PLUS),
    "integrated_gradients": functools.partial(rp.integrated_gradients, n_steps=4),
    "occlusion": functools.partial(rp.occlusion, window=3),
}


@pytest.mark.parametrize("name", list(ATTRIBUTORS))
def test_several_targets_per_sample_equal_separate_runs(name: str) -> None:
    attribute, model, x = ATTRIBUTORS[name], _cnn(), on_backend(_images())
    targets = [[0, 2], [1, 0]]
    both = attribute(model, x, targets)
    assert tuple(both.shape) == (2, 2, 2, 8, 8)
    for k in range(2):
        single = attribute(model, x, [row[k] for row in targets])
        assert_close(both[:, k, ...], rp.to_numpy(single))


@pytest.mark.parametrize("name", list(ATTRIBUTORS))
def test_a_function_target_equals_its_index(name: str) -> None:
    attribute, model, x = ATTRIBUTORS[name], _cnn(), on_backend(_images())
    indexed = attribute(model, x, 1)
    # a function's derivative: finite differences on NumPy and array-api-strict
    rtol = 1e-10 if BACKEND in ("torch", "jax") else 1e-8
    assert_close(attribute(model, x, lambda out: out[:, 1]), rp.to_numpy(indexed), rtol=rtol)


@pytest.mark.parametrize("name", list(ATTRIBUTORS))
def test_attributors_keep_dtype_and_leave_inputs_alone(name: str) -> None:
    attribute, model = ATTRIBUTORS[name], _cnn("float32")
    images = _images()
    x = on_backend(images, "float32")
    got = attribute(model, x, 0)
    assert_close(got, rp.to_numpy(attribute(model, x, 0)), dtype="float32")
    np.testing.assert_array_equal(rp.to_numpy(x), images.astype(np.float32))


@pytest.mark.skipif(BACKEND != "array_api_strict", reason="array-api-strict's devices")
@pytest.mark.parametrize("name", list(ATTRIBUTORS))
def test_attributors_stay_on_the_device(name: str) -> None:
    import array_api_strict as xps

    device = xps.Device("device1")
    model = _cnn().to("array_api_strict", device=device)
    x = xps.asarray(_images(), device=device)
    assert ATTRIBUTORS[name](model, x, 0).device == device


# -- the classes ------------------------------------------------------------------------------


def test_classes_are_the_functions() -> None:
    model, x = _cnn(), on_backend(_images())
    composite = rp.composites.EpsilonPlus()
    lrp = rp.LRP(model, composite).attribute(x, 1)
    assert_close(lrp, rp.to_numpy(rp.lrp(model, x, 1, composite=composite)))
    smooth = rp.SmoothGrad(model, composite, n_samples=3).attribute(x, 1)
    assert_close(smooth, rp.to_numpy(rp.smoothgrad(model, x, 1, n_samples=3,
                                                   explain=EPSILON_PLUS)))
    ig = rp.IntegratedGradients(model, n_steps=5)
    assert_close(ig.attribute(x, 1, n_steps=3),
                 rp.to_numpy(rp.integrated_gradients(model, x, 1, n_steps=3)))
    with rp.Occlusion(model, window=2) as attributor:
        output, relevance = attributor(x, 1)
    assert_close(output, rp.to_numpy(model(x)))
    assert_close(relevance, rp.to_numpy(rp.occlusion(model, x, 1, window=2)))
    gradient = rp.attribution.Gradient(model)
    assert_close(gradient.attribute(x, 1), rp.to_numpy(rp.gradient(model, x, 1)))
    assert "n_samples=3" in repr(rp.SmoothGrad(model, n_samples=3))


def test_attributor_errors_name_the_fix() -> None:
    model, x = _cnn(), on_backend(_images())
    with pytest.raises(TypeError, match="forward only"):
        rp.Occlusion(model, rp.composites.EpsilonPlus())
    with pytest.raises(TypeError, match="needs composite="):
        rp.LRP(model)
    with pytest.raises(TypeError, match="explain= or composite="):
        rp.SmoothGrad(model, rp.composites.EpsilonPlus(), explain=rp.gradient)
    with pytest.raises(TypeError, match="explain must be a function"):
        rp.smoothgrad(model, x, 0, explain="lrp")
    with pytest.raises(ValueError, match="n_steps must be an int >= 2"):
        rp.integrated_gradients(model, x, 0, n_steps=1, method="riemann_trapezoid")
    with pytest.raises(ValueError, match="method='simpson' is not one of"):
        rp.integrated_gradients(model, x, 0, method="simpson")
    with pytest.raises(ValueError, match=r"noise has shape .* needs \(n_samples, \*x.shape\)"):
        rp.smoothgrad(model, x, 0, noise=on_backend(np.zeros((2, 3))))
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        rp.occlusion(model, x, 0, batch_size=0)
    with pytest.raises(ValueError, match='occlude must be "window" or "outside"'):
        rp.occlusion(model, x, 0, occlude="inside")


# -- zennit 0.5.1 ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zennit():
    if BACKEND != "torch":
        pytest.skip("zennit parity needs torch tensors")
    from _zennit_standin import import_zennit

    return import_zennit()


def _torch_cnn():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
        torch.nn.Linear(4 * 3 * 3, 3),
    ).double().eval()
    x = torch.as_tensor(np.random.default_rng(9).normal(size=(3, 2, 8, 8)))
    return net, x


def _zennit_attr_output(target, scaled=True):
    """relprop's index target as zennit's ``attr_output``: for LRP the target logit of
    whatever input the attributor evaluates (noisy copies, path points), one-hot; for the
    gradient the one-hot vector itself."""
    import torch

    def one_hot_times_output(out):
        one_hot = torch.eye(out.shape[1], dtype=out.dtype)[target]
        return one_hot * out if scaled else one_hot

    return one_hot_times_output


ZENNIT_COMPOSITES = ["EpsilonPlusFlat", "EpsilonAlpha2Beta1", None]


def _composites(zennit, name):
    if name is None:
        return None, None
    return getattr(zennit.composites, name)(), getattr(rp.composites, name)()


def _explain(composite):
    return rp.gradient if composite is None else functools.partial(rp.lrp, composite=composite)


@pytest.mark.parametrize("name", ZENNIT_COMPOSITES)
def test_smoothgrad_matches_zennit(zennit, name) -> None:
    import torch

    net, x = _torch_cnn()
    target = [0, 2, 1]
    reference, composite = _composites(zennit, name)
    torch.manual_seed(11)
    attributor = zennit.attribution.SmoothGrad(net, reference, noise_level=0.3, n_iter=5)
    _, expected = attributor(x, _zennit_attr_output(target, name is not None))
    torch.manual_seed(11)  # zennit's draws: randn_like per iteration, the last one zero
    noise = torch.stack([*(torch.randn_like(x) for _ in range(4)), torch.zeros_like(x)])
    got = rp.smoothgrad(net, x, target, explain=_explain(composite), noise_level=0.3,
                        noise=noise)
    assert_close(got, expected.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("name", ZENNIT_COMPOSITES)
def test_integrated_gradients_match_zennit(zennit, name) -> None:
    net, x = _torch_cnn()
    target = [2, 0, 1]
    reference, composite = _composites(zennit, name)
    # zennit's path points come from a float32 torch.linspace: 8 steps are exact in it
    attributor = zennit.attribution.IntegratedGradients(net, reference, n_iter=8)
    _, expected = attributor(x, _zennit_attr_output(target, name is not None))
    got = rp.integrated_gradients(net, x, target, explain=_explain(composite), n_steps=8,
                                  method="riemann_right")
    assert_close(got, expected.numpy(), rtol=1e-9, atol=1e-13)


@pytest.mark.parametrize("window", [4, (2, 2), (8, 4)])
def test_occlusion_matches_zennit_where_no_window_wraps(zennit, window) -> None:
    """zennit keeps the window and fills the rest with zeros (``occlude="outside"``); its
    windows wrap round the edge where relprop cuts them, so sizes here divide evenly."""
    net, x = _torch_cnn()
    target = [1, 1, 0]
    attributor = zennit.attribution.Occlusion(net, window=window, stride=window)
    _, expected = attributor(x, _zennit_attr_output(target))
    got = rp.Occlusion(net, window=window, occlude="outside").attribute(x, target)
    assert_close(got, expected.numpy(), rtol=1e-9, atol=1e-13)


NO_TARGET = {
    "smoothgrad": functools.partial(rp.smoothgrad, n_samples=8, noise_level=1.0),
    "integrated_gradients": functools.partial(rp.integrated_gradients, n_steps=4),
    "occlusion": functools.partial(rp.occlusion, window=1),
}


@pytest.mark.parametrize("name", list(NO_TARGET))
def test_no_target_is_the_arg_max_at_the_input_itself(name: str) -> None:
    """Not each noisy copy's, path point's or occluded copy's own arg-max: at x class 1
    wins, near the zero baseline, with x_1 occluded or with enough noise class 0 does."""
    model = rp.Sequential([rp.Dense(on_backend(np.array([[2.0, 0.0], [0.0, 1.0]])),
                                    on_backend(np.array([0.5, 0.0])))])
    x = on_backend(np.array([[1.0, 3.0]]))
    attribute = NO_TARGET[name]
    by_class = rp.to_numpy(attribute(model, x, 1))
    assert_close(attribute(model, x), by_class)
    assert not np.allclose(rp.to_numpy(attribute(model, x, 0)), by_class)
