"""relprop.metrics: pixel flipping / region perturbation, completeness, the randomisation
check, Spearman ranks, the curves' plot and the Quantus explanation function.

Oracles: hand-computed curves of linear models (where the score after each step is known
exactly) and an explicit per-sample, per-step NumPy loop; conservation of LRP-0 on a
bias-free network; Spearman against its definition (and scipy where installed); and, for
cross-backend identity, the same metric computed with NumPy in the same process.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from helpers import BACKEND, TOLERANCE, assert_close, dense_model, on_backend, random_weights

import relprop as rp
from relprop import metrics
from relprop.data import load_digits, load_digits_model

EPSILON_PLUS_FLAT = functools.partial(rp.lrp, composite=rp.composites.EpsilonPlusFlat())


def numpy_model(params) -> rp.Sequential:
    layers = []
    for index, (weight, bias) in enumerate(params):
        if index:
            layers.append(rp.ReLU())
        layers.append(rp.Dense(np.asarray(weight), None if bias is None else np.asarray(bias)))
    return rp.Sequential(layers)


def toy() -> tuple[rp.Sequential, object, object]:
    """f(x) = w . x with w = (1, -2, 3, 0.5), x = (2, 1, 1, 4): contributions
    (2, -2, 3, 2), f(x) = 5; a tie between positions 0 and 3."""
    weight = on_backend(np.array([[1.0, -2.0, 3.0, 0.5]]))
    x = on_backend(np.array([[2.0, 1.0, 1.0, 4.0]]))
    model = rp.Sequential([rp.Dense(weight)])
    return model, x, x * weight


# ----------------------------------------------------------------- hand-computed curves


def test_linear_model_curves_auc_and_aopc_by_hand():
    model, x, R = toy()
    result = metrics.pixel_flipping(model, x, R, target=0)
    # most relevant first: 3 (pos 2), then the tie 2, 2 by position (0, then 3), then -2
    assert_close(result.morf.scores, [[5.0, 2.0, 0.0, -2.0, 0.0]])
    assert_close(result.lerf.scores, [[5.0, 7.0, 5.0, 3.0, 0.0]])
    assert rp.to_numpy(result.morf.ranking).tolist() == [[2, 0, 3, 1]]
    assert rp.to_numpy(result.lerf.ranking).tolist() == [[1, 0, 3, 2]]
    # AUC = (1/L) sum_k (f_{k-1} + f_k) / 2, AOPC = 1/(L+1) sum_k (f_0 - f_k)
    assert_close(result.morf.auc, [(3.5 + 1.0 - 1.0 - 1.0) / 4])
    assert_close(result.morf.aopc, [(0 + 3 + 5 + 7 + 5) / 5])
    assert_close(result.lerf.auc, [(6.0 + 6.0 + 4.0 + 1.5) / 4])
    assert_close(result.lerf.aopc, [(0 - 2 + 0 + 2 + 5) / 5])
    # random: the score after each step is f minus the perturbed contributions
    order = np.asarray(rp.to_numpy(result.random.ranking))[0]
    contributions = np.array([2.0, -2.0, 3.0, 2.0])
    expected = 5.0 - np.concatenate([[0.0], np.cumsum(contributions[order])])
    assert sorted(order.tolist()) == [0, 1, 2, 3]
    assert_close(result.random.scores, expected[None])
    assert result.perturbed == (0, 1, 2, 3, 4) and result.units == 4 and result.steps == 4


def test_auc_and_aopc_functions():
    curves = on_backend(np.array([[4.0, 2.0, 0.0], [1.0, 1.0, 1.0]]))
    assert_close(metrics.auc(curves), [2.0, 1.0])
    assert_close(metrics.aopc(curves), [2.0, 0.0])
    with pytest.raises(ValueError, match="at least two"):
        metrics.auc(on_backend(np.ones((2, 1))))


def test_schedule_per_step_and_steps():
    model, x, R = toy()
    two = metrics.pixel_flipping(model, x, R, target=0, per_step=2, orders=["morf"])
    assert two.perturbed == (0, 2, 4)
    assert_close(two.morf.scores, [[5.0, 0.0, 0.0]])
    spread = metrics.pixel_flipping(model, x, R, target=0, steps=3, orders="morf")
    assert spread.perturbed == (0, 1, 2, 4)  # floor(k * 4 / 3)
    assert_close(spread.morf.scores, [[5.0, 2.0, 0.0, 0.0]])
    with pytest.raises(ValueError, match="steps=5 is more than"):
        metrics.pixel_flipping(model, x, R, target=0, steps=5)
    with pytest.raises(ValueError, match="steps=5"):
        metrics.pixel_flipping(model, x, R, target=0, steps=5, per_step=1)
    partial = metrics.pixel_flipping(model, x, R, target=0, steps=2, per_step=1, orders="lerf")
    assert_close(partial.lerf.scores, [[5.0, 7.0, 5.0]])
    assert tuple(partial.fraction) == (0.0, 0.25, 0.5)


def _reference(weight, bias, x, R, order_index, region, per_step, steps, fill):
    """An explicit loop: each sample, each step, each perturbed unit, in NumPy float64."""
    batch = x.shape[0]
    curves = np.zeros((batch, steps + 1))
    for i in range(batch):
        relevance = R[i]
        height, width = relevance.shape[-2:]
        units = []
        for top in range(0, height, region):
            for left in range(0, width, region):
                units.append([(r, c) for r in range(top, min(top + region, height))
                              for c in range(left, min(left + region, width))])
        sums = [sum(relevance[..., r, c].sum() for r, c in unit) for unit in units]
        ranked = sorted(range(len(units)), key=lambda u: (-sums[u], u)) if order_index == 0 \
            else sorted(range(len(units)), key=lambda u: (sums[u], u))
        for k in range(steps + 1):
            sample = x[i].copy()
            for u in ranked[:min(k * per_step, len(units))]:
                for r, c in units[u]:
                    sample[..., r, c] = fill[i][..., r, c]
            curves[i, k] = (weight @ sample.reshape(-1) + bias)[0]
    return curves


@pytest.mark.parametrize("region", [1, 2, 3])
def test_region_perturbation_against_an_explicit_loop(region):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 2, 5, 5))
    weight, bias = rng.normal(size=(1, 50)), rng.normal(size=1)
    R = rng.normal(size=(3, 1, 5, 5))  # per pixel: both channels perturbed together
    model = rp.Sequential([rp.Flatten(), rp.Dense(on_backend(weight), on_backend(bias))])
    result = metrics.region_perturbation(
        model, on_backend(x), on_backend(R), 0, region_size=region, per_step=2,
        orders=("morf", "lerf"), fill="mean",
    )
    units = math.ceil(5 / region) ** 2
    steps = math.ceil(units / 2)
    fill = np.broadcast_to(x.mean(axis=(1, 2, 3), keepdims=True), x.shape)
    for index, order in enumerate(("morf", "lerf")):
        expected = _reference(weight, bias, x, R, index, region, 2, steps, fill)
        assert_close(result[order].scores, expected)
    assert result.units == units and result.region_size == region


def test_relevance_of_fewer_axes_broadcasts_over_channels():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 4, 4))
    R = rng.normal(size=(2, 4, 4))
    model = rp.Sequential([rp.Flatten(), rp.Dense(on_backend(rng.normal(size=(2, 48))))])
    a = metrics.pixel_flipping(model, on_backend(x), on_backend(R), 1, per_step=3)
    b = metrics.pixel_flipping(model, on_backend(x), on_backend(R[:, None]), 1, per_step=3)
    assert a.units == 16
    for order in metrics.ORDERS:
        assert_close(a[order].scores, rp.to_numpy(b[order].scores))
    # the whole pixel is perturbed: after all steps every channel is the fill value 0
    assert_close(a.morf.scores[:, -1], rp.to_numpy(model(on_backend(np.zeros_like(x))))[:, 1])


# ------------------------------------------------------------------ the bundled digits


@pytest.fixture(scope="module")
def digits():
    """The bundled CNN and ten held-out digits, one of each class (few shapes, so that JAX
    compiles each operation once for the whole module)."""
    model = load_digits_model(BACKEND)
    images, labels = load_digits(BACKEND)
    return model, images[::5, ...], [int(c) for c in rp.to_numpy(labels)][::5]


def test_epsilon_plus_flat_beats_random_order_on_the_digits():
    model = load_digits_model(BACKEND)
    images, labels = load_digits(BACKEND)
    labels = [int(c) for c in rp.to_numpy(labels)]
    R = EPSILON_PLUS_FLAT(model, images, labels)
    result = metrics.pixel_flipping(model, images, R, labels)
    morf, lerf, random = (result[o].mean_auc for o in metrics.ORDERS)
    # measured (NumPy): morf -2.19, random -0.94, lerf 2.61
    assert morf < random - 0.5, result
    assert lerf > random + 0.5, result
    assert result.morf.mean_aopc > result.random.mean_aopc
    assert result.morf.scores.shape == (50, 65)
    assert_close(result.morf.scores[:, 0],
                 rp.to_numpy(model(images))[np.arange(50), labels], dtype="float32")


def test_metrics_are_identical_across_backends():
    """The backend under test against NumPy, in one process, on the same float64 model,
    input and relevance: the same orders (exactly), noise and curves."""
    model = load_digits_model(BACKEND, dtype="float64")
    reference = load_digits_model("numpy", dtype="float64")
    images, labels = load_digits("numpy", dtype="float64")
    x_np, targets = images[::5], [int(c) for c in labels[::5]]
    R_np = rp.to_numpy(EPSILON_PLUS_FLAT(reference, x_np, targets)).sum(axis=1)
    x, R = on_backend(x_np), on_backend(R_np)
    for options in [{}, {"fill": "uniform", "seed": 7, "per_step": 3},
                    {"region_size": 3, "fill": "mean"}]:
        ours = metrics.pixel_flipping(model, x, R, targets, **options)
        theirs = metrics.pixel_flipping(reference, x_np, R_np, targets, **options)
        assert ours.perturbed == theirs.perturbed
        for order in metrics.ORDERS:
            assert (np.asarray(rp.to_numpy(ours[order].ranking)).tolist()
                    == theirs[order].ranking.tolist()), (order, options)
            for field in ("scores", "auc", "aopc"):
                assert_close(getattr(ours[order], field), getattr(theirs[order], field),
                             atol=1e-12)
    check = metrics.completeness(model, x, on_backend(R_np), targets)
    expected = metrics.completeness(reference, x_np, R_np, targets)
    for field in ("relevance_sum", "output", "difference", "relative_error"):
        assert_close(getattr(check, field), getattr(expected, field), atol=1e-12)


def test_randomisation_is_identical_across_backends():
    rng = np.random.default_rng(5)
    params = random_weights(rng, [6, 10, 8, 3])
    x_np = rng.normal(size=(5, 6))
    ours = metrics.randomisation_check(dense_model(params), on_backend(x_np), 1,
                                       explain=rp.gradient_x_input)
    theirs = metrics.randomisation_check(numpy_model(params), x_np, 1,
                                         explain=rp.gradient_x_input)
    assert ours.layers == theirs.layers == ("4", "2", "0")
    assert_close(ours.spearman, theirs.spearman)
    assert_close(ours.spearman_abs, theirs.spearman_abs)
    for mine, reference in zip(ours.randomised, theirs.randomised, strict=True):
        assert_close(mine, reference)


# ---------------------------------------------------------------------- batching


def test_one_model_call_per_step_and_chunks_give_the_same_curves(digits):
    model, images, labels = digits
    R = EPSILON_PLUS_FLAT(model, images, labels)
    calls: list[int] = []

    def counted(a):
        calls.append(int(a.shape[0]))
        return model(a)

    whole = metrics.pixel_flipping(counted, images, R, labels, per_step=8)
    assert whole.steps == 8
    assert calls == [30] * 9  # one call per step: 10 samples x 3 orders
    calls.clear()
    chunked = metrics.pixel_flipping(counted, images, R, labels, per_step=8,
                                     batch_size=7)
    assert len(calls) == 5 * 9 and max(calls) == 7 and sum(calls) == 30 * 9
    for order in metrics.ORDERS:
        # float32: other batch sizes, other rounding in the convolutions
        assert_close(chunked[order].scores, rp.to_numpy(whole[order].scores), dtype="float32",
                     atol=1e-5)
        assert (np.asarray(rp.to_numpy(chunked[order].ranking)).tolist()
                == np.asarray(rp.to_numpy(whole[order].ranking)).tolist())


def test_targets_as_index_array_weights_function_and_argmax():
    rng = np.random.default_rng(6)
    model = dense_model(random_weights(rng, [5, 7, 3]))
    x = on_backend(rng.normal(size=(4, 5)))
    R = on_backend(rng.normal(size=(4, 5)))
    out = rp.to_numpy(model(x))
    predicted = [int(c) for c in np.argmax(out, axis=1)]
    by_index = metrics.pixel_flipping(model, x, R, predicted)
    others = [
        metrics.pixel_flipping(model, x, R, None, batch_size=5),  # arg-max of the input
        metrics.pixel_flipping(model, x, R, np.array(predicted)),  # host class indices
        metrics.pixel_flipping(model, x, R, on_backend(np.eye(3)[predicted]), batch_size=2),
    ]
    for order in metrics.ORDERS:
        for other in others:
            assert_close(other[order].scores, rp.to_numpy(by_index[order].scores))
    # a function of the output: one score per row (rows are stacked and chunked)
    by_function = metrics.pixel_flipping(model, x, R, lambda a: a[:, 0] - a[:, 1], batch_size=3)
    assert_close(by_function.lerf.scores[:, 0], out[:, 0] - out[:, 1])
    with pytest.raises(ValueError, match="one value per sample"):
        metrics.pixel_flipping(model, x, R, lambda a: a)


def test_nothing_the_user_passes_is_modified(digits):
    model, images, labels = digits
    before_x = np.array(rp.to_numpy(images))
    R = EPSILON_PLUS_FLAT(model, images, labels)
    before_R = np.array(rp.to_numpy(R))
    before_params = {k: np.array(rp.to_numpy(v)) for k, v in model.named_params().items()}
    metrics.pixel_flipping(model, images, R, labels, fill="uniform", per_step=8)
    metrics.randomisation_check(model, images, labels, explain=EPSILON_PLUS_FLAT, top=2)
    assert np.array_equal(rp.to_numpy(images), before_x)
    assert np.array_equal(rp.to_numpy(R), before_R)
    for key, value in model.named_params().items():
        assert np.array_equal(rp.to_numpy(value), before_params[key]), key


# ------------------------------------------------------------------ completeness


def test_completeness_of_a_conserving_rule_is_exact():
    rng = np.random.default_rng(7)
    model = dense_model(random_weights(rng, [6, 9, 7, 4], bias=False))
    x = on_backend(rng.normal(size=(5, 6)))
    R = rp.lrp(model, x, 2, rule=rp.rules.Epsilon(0.0))
    check = metrics.completeness(model, x, R, 2)
    out = rp.to_numpy(model(x))[:, 2]
    assert_close(check.output, out)
    assert_close(check.relevance_sum, out)
    assert float(np.max(np.abs(rp.to_numpy(check.relative_error)))) < 1e-12
    assert check.max_relative_error < 1e-12 and "relative error" in repr(check)


def test_completeness_reports_what_biases_absorb():
    rng = np.random.default_rng(8)
    model = dense_model(random_weights(rng, [4, 6, 3], bias=True))
    x = on_backend(rng.normal(size=(3, 4)))
    R = rp.lrp(model, x, 0, rule=rp.rules.Epsilon(0.0))
    check = metrics.completeness(model, x, R, 0)
    total = rp.to_numpy(R).sum(axis=1)
    out = rp.to_numpy(model(x))[:, 0]
    assert_close(check.difference, total - out)
    assert_close(check.relative_error, np.abs(total - out) / np.abs(out))
    zeros = metrics.completeness(model, x, on_backend(np.zeros((3, 4))), 0)
    assert_close(zeros.relative_error, np.ones(3))
    by_function = metrics.completeness(model, x, R, lambda out: out[:, 0])
    assert_close(by_function.output, out)


# ---------------------------------------------------------------- randomisation


def test_spearman_by_definition_ties_and_constant():
    a = on_backend(np.array([[3.0, 1.0, 3.0, 2.0], [1.0, 2.0, 3.0, 4.0]]))
    assert_close(metrics.ranks(a), [[3.5, 1.0, 3.5, 2.0], [1.0, 2.0, 3.0, 4.0]])
    assert_close(metrics.spearman(a, a), [1.0, 1.0])
    assert_close(metrics.spearman(a, -a), [-1.0, -1.0])
    b = on_backend(np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    rho = rp.to_numpy(metrics.spearman(a, b))
    r, s = np.array([3.5, 1.0, 3.5, 2.0]), np.array([1.0, 2.0, 3.0, 4.0])
    r, s = r - r.mean(), s - s.mean()
    assert abs(rho[0] - (r @ s) / np.sqrt((r @ r) * (s @ s))) < 1e-12
    assert np.isnan(rho[1])  # a constant explanation has no ranking


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats", reason="scipy is the reference for Spearman")
    rng = np.random.default_rng(9)
    a = np.round(rng.normal(size=(4, 3, 5)), 1)  # many ties
    b = np.round(rng.normal(size=(4, 3, 5)), 1)
    rho = rp.to_numpy(metrics.spearman(on_backend(a), on_backend(b)))
    expected = [stats.spearmanr(a[i].ravel(), b[i].ravel()).statistic for i in range(4)]
    np.testing.assert_allclose(rho, expected, rtol=1e-12)


def test_randomisation_of_the_digits_model(digits):
    model, images, labels = digits
    x, targets = images, labels
    result = metrics.randomisation_check(model, x, targets, explain=EPSILON_PLUS_FLAT)
    assert result.layers == ("fc", "bn2", "conv2", "bn1", "conv1")
    assert result.spearman.shape == (5, 10)
    R = result.relevance
    assert_close(metrics.spearman(R, R), np.ones(10), dtype="float32", rtol=1e-6)
    rho = np.asarray(rp.to_numpy(result.spearman))
    # measured (NumPy, 50 digits): 0.37 after fc, 0.08 with every layer random
    assert np.nanmean(rho[-1]) < 0.3, result
    assert np.nanmean(rho[0]) < 0.9, result
    independent = metrics.randomisation_check(model, x, targets, explain=EPSILON_PLUS_FLAT,
                                              layers=["conv1"], cascade=False)
    assert independent.layers == ("conv1",) and not independent.cascade
    assert "spearman" in str(result)


def test_randomise_layers_keeps_kind_and_statistics(digits):
    model, _, _ = digits
    new = metrics.randomise_layers(model, ["fc", "bn2"], seed=3)
    old = dict(model.items())
    for name, layer in new.items():
        for key, value in layer.params().items():
            if value is None:
                continue
            before = old[name].params()[key]
            assert rp.library_of(value) == BACKEND and value.dtype == before.dtype
            assert tuple(value.shape) == tuple(before.shape)
            same = np.array_equal(rp.to_numpy(value), rp.to_numpy(before))
            changed = name in ("fc", "bn2") and key not in metrics.randomisation.STATISTICS
            assert same != changed, (name, key)
    again = metrics.randomise_layers(model, ["fc"], seed=3)  # fc's draw alone: the same
    assert np.array_equal(rp.to_numpy(again["fc"].weight), rp.to_numpy(new["fc"].weight))
    shuffled = metrics.randomise_layers(model, ["fc"], init="permute")
    assert np.array_equal(np.sort(rp.to_numpy(shuffled["fc"].weight), axis=None),
                          np.sort(rp.to_numpy(model["fc"].weight), axis=None))
    assert metrics.parameter_layers(model) == ("fc", "bn2", "conv2", "bn1", "conv1")


# ---------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    model, x, R = toy()
    with pytest.raises(ValueError, match="relevance has shape"):
        metrics.pixel_flipping(model, x, on_backend(np.ones((1, 3))), 0)
    with pytest.raises(ValueError, match="batch axis"):
        metrics.pixel_flipping(model, x, on_backend(np.ones((2, 4))), 0)
    with pytest.raises(ValueError, match="orders="):
        metrics.pixel_flipping(model, x, R, 0, orders=["best"])
    with pytest.raises(ValueError, match="fill='zero'"):
        metrics.pixel_flipping(model, x, R, 0, fill="zero")
    with pytest.raises(ValueError, match="region_size=2 needs"):
        metrics.pixel_flipping(model, x, R, 0, region_size=2)
    with pytest.raises(ValueError, match="region_size=0"):
        metrics.pixel_flipping(model, x, R, 0, region_size=0)
    with pytest.raises(ValueError, match="NaN"):
        metrics.pixel_flipping(model, x, R * float("nan"), 0)
    with pytest.raises(ValueError, match="several classes per sample"):
        metrics.pixel_flipping(model, x, R, [[0, 0]])
    with pytest.raises(KeyError, match="orders="):
        _ = metrics.pixel_flipping(model, x, R, 0, orders="morf").random
    with pytest.raises(ValueError, match="top=3"):
        metrics.randomisation_check(model, x, 0, explain=rp.gradient, top=3)
    with pytest.raises(TypeError, match="explain must be"):
        metrics.randomisation_check(model, x, 0, explain=None)
    with pytest.raises(ValueError, match="init="):
        metrics.randomise_layers(model, ["0"], init="zeros")
    with pytest.raises(ValueError, match="not layers with parameters"):
        metrics.randomise_layers(model, ["fc"])
    with pytest.raises(ValueError, match="a has shape"):
        metrics.spearman(R, on_backend(np.ones((1, 3))))
    if BACKEND != "numpy":
        with pytest.raises(TypeError, match="different libraries"):
            metrics.pixel_flipping(model, x, rp.to_numpy(R), 0)


# ----------------------------------------------------------------- plot and printing


def test_result_prints_a_table():
    model, x, R = toy()
    text = str(metrics.pixel_flipping(model, x, R, 0))
    assert "morf" in text and "lerf" in text and "random" in text and "AOPC" in text
    assert "PerturbationCurve('morf'" in repr(metrics.pixel_flipping(model, x, R, 0).morf)


def test_plot_curves_writes_a_file_with_auc_in_the_legend(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot helper draws with matplotlib")
    model, x, R = toy()
    result = metrics.pixel_flipping(model, x, R, 0)
    figure = metrics.plot_curves(result, title="toy")
    labels = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert labels[0].startswith("most relevant first (AUC 0.625")
    assert len(labels) == 3 and all("AUC" in label for label in labels)
    path = metrics.plot_curves(result, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------- Quantus


def test_quantus_explain_follows_quantus_calling_contract(digits):
    """Quantus calls explain_func(model=..., inputs=..., targets=..., **kwargs) with NumPy
    arrays and expects NumPy attributions of the inputs' shape."""
    model, images, labels = digits
    x_batch = np.asarray(rp.to_numpy(images), dtype=np.float64)  # Quantus passes NumPy
    y_batch = np.asarray(labels)
    a_batch = metrics.quantus_explain(model=model, inputs=x_batch, targets=y_batch,
                                      composite=rp.composites.EpsilonPlusFlat())
    assert isinstance(a_batch, np.ndarray) and a_batch.shape == x_batch.shape
    expected = rp.to_numpy(EPSILON_PLUS_FLAT(model, images, labels))
    np.testing.assert_allclose(a_batch, expected, rtol=TOLERANCE["float32"], atol=1e-6)
    by_name = metrics.quantus_explain(model=model, inputs=x_batch, targets=y_batch,
                                      composite="EpsilonPlusFlat", reduce_axes=(1,))
    assert by_name.shape == (10, 1, 8, 8)
    gradient = metrics.quantus_explain(model=model, inputs=x_batch, targets=y_batch,
                                       method="gradient")
    np.testing.assert_allclose(gradient, rp.to_numpy(rp.gradient(model, images, labels)),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="method='saliency'"):
        metrics.quantus_explain(model=model, inputs=x_batch, targets=y_batch, method="saliency")


def test_quantus_explain_with_a_torch_module():
    torch = pytest.importorskip("torch", reason="Quantus hands over torch modules")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    x_batch = np.random.default_rng(0).uniform(size=(4, 1, 4, 4)).astype(np.float64)
    y_batch = np.array([0, 2, 1, 0])
    a_batch = metrics.quantus_explain(model=module, inputs=x_batch, targets=y_batch,
                                      rule=rp.rules.Epsilon())
    assert isinstance(a_batch, np.ndarray) and a_batch.dtype == np.float32
    inputs = torch.as_tensor(x_batch, dtype=torch.float32)
    expected = rp.lrp(module, inputs, [0, 2, 1, 0], rule=rp.rules.Epsilon()).numpy()
    np.testing.assert_allclose(a_batch, expected, rtol=1e-6)
    # and pixel flipping straight on the module and its tensors
    result = metrics.pixel_flipping(module, inputs, torch.as_tensor(a_batch), [0, 2, 1, 0],
                                    per_step=4)
    with torch.no_grad():
        start = module(inputs)[torch.arange(4), torch.as_tensor([0, 2, 1, 0])]
    np.testing.assert_allclose(result.morf.scores[:, 0].numpy(), start.numpy(), rtol=1e-6)
    # the randomisation check converts the module and leaves its parameters alone
    before = [p.detach().clone() for p in module.parameters()]
    check = metrics.randomisation_check(module, inputs, [0, 2, 1, 0], explain=rp.gradient)
    assert check.layers == ("3", "0") and rp.library_of(check.spearman) == "torch"
    assert all(torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))


def test_quantus_runs_its_metrics_with_quantus_explain():
    """Where Quantus is installed (the jax session installs it): its PixelFlipping, driving
    quantus_explain through its own calling contract, gives metrics.pixel_flipping's
    most-relevant-first curve (Quantus leaves out the unperturbed point)."""
    torch = pytest.importorskip("torch", reason="Quantus's metrics take torch modules")
    quantus = pytest.importorskip("quantus", reason="Quantus is an optional comparison")
    torch.manual_seed(1)
    module = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(),
                                 torch.nn.Flatten(), torch.nn.Linear(64, 3)).eval()
    x_batch = np.random.default_rng(1).uniform(size=(5, 1, 4, 4)).astype(np.float32)
    y_batch = np.array([0, 1, 2, 1, 0])
    kwargs = {"rule": "Epsilon"}
    metric = quantus.PixelFlipping(features_in_step=2, perturb_baseline="black", normalise=False,
                                   abs=False, disable_warnings=True, display_progressbar=False)
    theirs = np.asarray(metric(model=module, x_batch=x_batch, y_batch=y_batch, device="cpu",
                               explain_func=metrics.quantus_explain, explain_func_kwargs=kwargs,
                               softmax=False))
    a_batch = metrics.quantus_explain(model=module, inputs=x_batch, targets=y_batch, **kwargs)
    inputs = torch.as_tensor(x_batch)
    ours = metrics.pixel_flipping(
        module, inputs, torch.as_tensor(a_batch), y_batch.tolist(), orders="morf", per_step=2,
        fill=lambda t: t.amin(dim=(1, 2, 3), keepdim=True),  # Quantus's "black"
    )
    np.testing.assert_allclose(theirs, ours.morf.scores[:, 1:].numpy(), rtol=1e-5, atol=1e-6)
