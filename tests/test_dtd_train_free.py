"""relprop.dtd.train_free: an independent per-neuron reference, LRP identities, conservation,
consistency checks and cross-backend parity.

The reference below loops over samples, layers and neurons in NumPy float64: the root by
the formula of DESIGN.md §6, the gradient of the frozen relevance model by central finite
differences (for ``root_of="preactivation"`` R_j(a) = c_j relu(w_j . a + b_j), inside its
active region, on the segment from the root to the input, where the model is affine; for
``root_of="relevance"`` R_j(a) = R_j + w_j . (a - x), whose root removes R_j), then
R_i = sum_j grad_i R_j (a_i - r_i^(j)).
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import BACKEND, assert_close, dtype_name, on_backend, random_weights

import relprop as rp
from relprop.dtd import (
    MLP,
    ROOT_CONVENTIONS,
    RULES,
    ConsistencyError,
    dense_indices,
    sample_inputs,
    train_free,
)
from relprop.rules import AlphaBeta, Epsilon, Gamma, Pass, WSquare, ZBox, ZPlus

TINY = 1e-30  # LRP stabiliser that changes no float64 denominator


def params_np(model: rp.Sequential):
    return [(rp.to_numpy(layer.weight).astype(np.float64),
             None if layer.bias is None else rp.to_numpy(layer.bias).astype(np.float64))
            for layer in model.layers if isinstance(layer, rp.Dense)]


def direction(a, w, rule, gamma, low, high):
    if rule == "w2":
        return w.copy()
    if rule in ("x", "0"):
        return a.copy()
    if rule == "z+":
        return np.array([a[i] if w[i] >= 0 else 0.0 for i in range(len(a))])
    if rule == "gamma":
        return np.array([a[i] * (1 + gamma) if w[i] >= 0 else a[i] for i in range(len(a))])
    return np.array([a[i] - (low if w[i] > 0 else 0.0) - (high if w[i] < 0 else 0.0)
                     for i in range(len(a))])


def reference(params, x, target, rules, gamma=1.0, low=0.0, high=0.0, root_of="preactivation"):
    """Relevance at every dense layer's input, each neuron's root and its unresolved
    relevance, sample by sample, neuron by neuron: ``(relevance, roots, unresolved)``, each
    a list over the dense layers, input layer first."""
    n_layers = len(params)
    per_sample = []
    for a0 in x:
        acts = [a0]
        for index, (weight, bias) in enumerate(params):
            z = weight @ acts[-1] + (0.0 if bias is None else bias)
            acts.append(np.maximum(z, 0.0) if index < n_layers - 1 else z)
        relevance = np.zeros(params[-1][0].shape[0])
        relevance[target] = acts[-1][target]
        layers = []
        for index in range(n_layers - 1, -1, -1):
            weight, bias = params[index]
            b = np.zeros(weight.shape[0]) if bias is None else bias
            a, a_out = acts[index], acts[index + 1]
            hidden = index < n_layers - 1
            new, roots = np.zeros_like(a), np.repeat(a[None], weight.shape[0], axis=0)
            lost = relevance.copy()  # what no message carries down
            for j in range(weight.shape[0]):
                w = weight[j]
                if root_of == "relevance":
                    carries = relevance[j] != 0  # else nothing to decompose
                    removed = relevance[j]  # R_j(a) = R_j + w . (a - x) vanishes at the root

                    def model(p, w=w, r=relevance[j], a=a):
                        return r + float(np.dot(w, p - a))
                else:
                    carries = a_out[j] != 0  # else c_j = 0
                    removed = float(np.dot(w, a)) + b[j]  # the root of z_j
                    c = relevance[j] / a_out[j] if carries else 0.0

                    def model(p, w=w, b=b[j], c=c, hidden=hidden):
                        z = float(np.dot(w, p)) + b
                        return c * (max(z, 0.0) if hidden else z)
                v = direction(a, w, rules[index], gamma, low, high)
                if rules[index] == "0":
                    roots[j] = 0.0
                elif abs(float(np.dot(v, w))) > 1e-12:
                    roots[j] = a - removed / float(np.dot(v, w)) * v
                else:
                    continue  # degenerate: the root is x, nothing moves
                if not carries:
                    continue
                # point where the gradient is taken: in the active region (affine there)
                point = a if rules[index] == "0" else 0.5 * (roots[j] + a)
                grad = np.zeros_like(a)
                for i in range(len(a)):
                    step = np.zeros_like(a)
                    step[i] = 1e-6
                    grad[i] = (model(point + step) - model(point - step)) / 2e-6
                new += grad * (a - roots[j])
                lost[j] -= float(np.sum(grad * (a - roots[j])))
            layers.append((new, roots, lost))
            relevance = new
        per_sample.append(layers[::-1])
    return tuple([np.stack([s[k][part] for s in per_sample]) for k in range(n_layers)]
                 for part in range(3))


@pytest.fixture(scope="module")
def mlp():
    return MLP(3, 10, 10, 2, seed=1, backend=BACKEND)


def positive_inputs() -> np.ndarray:
    """8 non-negative inputs with output 0 > 0.1 (sampled once in NumPy: JAX compiles less)."""
    return rp.to_numpy(sample_inputs(MLP(3, 10, 10, 2, seed=1, backend="numpy"), 8, 0.1,
                                     output=0, seed=2))


@pytest.fixture(scope="module")
def x_pos():
    return on_backend(positive_inputs())


RULE_SETS = [("z+",) * 3, ("x",) * 3, ("0",) * 3, ("w2",) * 3, ("gamma",) * 3,
             ("zB", "z+", "z+")]


@pytest.mark.parametrize("root_of", ["relevance", "preactivation"])
@pytest.mark.parametrize("rules", RULE_SETS, ids=["+".join(r) for r in RULE_SETS])
def test_matches_per_neuron_reference(mlp, x_pos, rules, root_of) -> None:
    kwargs = {"gamma": 0.5, "low": 0.0, "high": 3.0}
    res = train_free(mlp, x_pos, target=0, rule=list(rules), root_of=root_of, **kwargs)
    layers, roots, unresolved = reference(params_np(mlp), rp.to_numpy(x_pos), 0, rules,
                                          **kwargs, root_of=root_of)
    expected = layers[0]
    assert res.root_of == root_of
    for actual, want in zip(res.roots, roots, strict=True):
        assert_close(actual, want, rtol=1e-9, atol=1e-12 * np.abs(want).max())
    for actual, want in zip(res.unresolved, unresolved, strict=True):
        assert_close(actual, want, rtol=1e-6, atol=1e-8 * max(np.abs(want).max(), 1.0))
    atol = 1e-8 * np.abs(expected).max()
    assert_close(res.relevance, expected, rtol=1e-6, atol=atol)
    assert len(res.layers) == 3 and res.layers[0] is res.relevance
    for actual, want in zip(res.layers, layers, strict=True):
        assert_close(actual, want, rtol=1e-6, atol=1e-8 * np.abs(want).max())
    assert [tuple(r.shape) for r in res.roots] == [(8, 10, 10), (8, 10, 10), (8, 2, 10)]
    assert res.rules == rules


def zplus_cases():
    rng = np.random.default_rng(11)
    signed = random_weights(rng, [10, 10, 10, 2])  # biases of both signs
    return signed


@pytest.mark.parametrize("negative_bias", [True, False])
def test_zplus_equals_lrp_alpha1beta0_without_bias(negative_bias: bool) -> None:
    """DTD z+ on non-negative inputs == LRP z+ / alpha1beta0 with the bias left out."""
    model = MLP(3, 10, 10, 2, seed=4, negative_bias=negative_bias, backend=BACKEND)
    x = on_backend(np.abs(np.random.default_rng(5).normal(size=(8, 10))))
    dense = dense_indices(model)
    for target in (0, 1, [0, 1, 1, 0, 0, 1, 0, 1]):
        res = train_free(model, x, target=target, rule="z+")
        for rule in (ZPlus(stabilizer=TINY, zero_params="bias"),
                     AlphaBeta(1.0, 0.0, stabilizer=TINY, zero_params="bias")):
            expected, by_name = rp.lrp(model, x, target, rule=rule, return_layers=True)
            per_layer = list(by_name.values())  # input, then each layer's output
            expected_np = rp.to_numpy(expected)
            assert_close(res.relevance, expected_np, rtol=1e-10,
                         atol=1e-12 * np.abs(expected_np).max())
            for k, index in enumerate(dense):
                want = rp.to_numpy(per_layer[index])
                assert_close(res.layers[k], want, rtol=1e-10, atol=1e-12 * np.abs(want).max())
            assert_close(res.output, rp.to_numpy(per_layer[-1]))
    # the bias matters: LRP z+ with its bias (b+ in the denominator) differs where b > 0
    with_bias = rp.to_numpy(rp.lrp(model, x, 0, rule=ZPlus(stabilizer=TINY)))
    same = np.allclose(rp.to_numpy(train_free(model, x, 0).relevance), with_bias)
    assert same == negative_bias


def test_x_and_0_rules_equal_lrp0_without_and_with_bias(mlp) -> None:
    x = on_backend(np.random.default_rng(6).normal(size=(8, 10)))  # both signs
    for rule, lrp_rule in (("x", Epsilon(TINY, zero_params="bias")), ("0", Epsilon(TINY))):
        expected = rp.to_numpy(rp.lrp(mlp, x, 1, rule=lrp_rule))
        res = train_free(mlp, x, 1, rule, root_of="preactivation")
        assert_close(res.relevance, expected, rtol=1e-9, atol=1e-12 * np.abs(expected).max())
    expected = rp.to_numpy(rp.lrp(mlp, x, 1, rule=Epsilon(TINY, zero_params="bias")))
    assert_close(train_free(mlp, x, 1, "x").relevance, expected, rtol=1e-9,
                 atol=1e-12 * np.abs(expected).max())


def test_gamma_equals_lrp_gamma_without_bias(mlp, x_pos) -> None:
    """Negative biases and a positive output: every active neuron has z > 0 in LRP too."""
    expected = rp.to_numpy(rp.lrp(mlp, x_pos, 0, rule=Gamma(0.5, TINY, zero_params="bias")))
    assert_close(train_free(mlp, x_pos, 0, "gamma", gamma=0.5).relevance, expected,
                 rtol=1e-10, atol=1e-12 * np.abs(expected).max())


def test_zb_first_layer_equals_lrp_zbox_without_bias(mlp, x_pos) -> None:
    low, high = on_backend(np.zeros(10)), on_backend(np.full(10, 3.0))
    composite = rp.composites.Composite(
        layer_map={rp.Dense: ZPlus(TINY, zero_params="bias"), rp.ReLU: Pass()},
        name_map={"linear0": ZBox(low, high, TINY, zero_params="bias")},
    )
    expected = rp.to_numpy(rp.lrp(mlp, x_pos, 0, composite=composite))
    res = train_free(mlp, x_pos, 0, ["zB", "z+", "z+"], low=low, high=high, check=True)
    assert_close(res.relevance, expected, rtol=1e-10, atol=1e-12 * np.abs(expected).max())


def test_w2_on_one_layer_equals_lrp_wsquare_without_bias() -> None:
    weight, bias = random_weights(np.random.default_rng(7), [10, 2])[0]
    model = rp.Sequential([rp.Dense(on_backend(weight), on_backend(bias))])
    x = on_backend(np.random.default_rng(8).normal(size=(8, 10)))
    expected = rp.to_numpy(rp.lrp(model, x, 1, rule=WSquare(TINY, zero_params="bias")))
    assert_close(train_free(model, x, 1, "w2", check=True).relevance, expected, rtol=1e-10,
                 atol=1e-12 * np.abs(expected).max())


@pytest.mark.parametrize("rule", ["z+", "x", "gamma"])
def test_conservation_with_negative_biases(mlp, x_pos, rule, xp) -> None:
    """Every active neuron has an exact root, so each layer conserves f_c(x)."""
    res = train_free(mlp, x_pos, 0, rule, check=True)
    assert res.checked
    f = rp.to_numpy(mlp(x_pos))[:, 0]
    for relevance in res.layers:
        assert_close(xp.sum(relevance, axis=1), f, rtol=1e-10)
    for lost in res.unresolved:
        np.testing.assert_allclose(rp.to_numpy(lost), 0.0, atol=1e-12)


def test_rule_0_leaves_the_bias_share_unresolved(mlp, x_pos, xp) -> None:
    res = train_free(mlp, x_pos, 0, "0", check=True, root_of="preactivation")  # sums only
    for k, layer in enumerate(l for l in mlp.layers if isinstance(l, rp.Dense)):
        upper = (res.layers[k + 1] if k + 1 < 3 else res.output)
        z = rp.to_numpy(layer(res.inputs[k]))
        r_upper = rp.to_numpy(upper)
        share = np.where(z > 0, r_upper / np.where(z > 0, z, 1.0), 0.0) * rp.to_numpy(layer.bias)
        assert_close(res.unresolved[k], share, rtol=1e-10, atol=1e-14)
        assert_close(xp.sum(res.layers[k], axis=1), (r_upper - share).sum(axis=1), rtol=1e-10)


def test_rule_0_of_the_relevance_leaves_r_minus_w_dot_x(mlp, x_pos, xp) -> None:
    """The root is the origin: R_j - w_j . x stays, for the neurons that have relevance."""
    res = train_free(mlp, x_pos, 0, "0", check=True)
    for k, layer in enumerate(l for l in mlp.layers if isinstance(l, rp.Dense)):
        upper = rp.to_numpy(res.layers[k + 1] if k + 1 < 3 else res.output)
        a = rp.to_numpy(res.inputs[k])
        w_dot_x = a @ rp.to_numpy(layer.weight).T
        expected = np.where(upper != 0, upper - w_dot_x, 0.0)
        assert_close(res.unresolved[k], expected, rtol=1e-10, atol=1e-14)
        np.testing.assert_array_equal(rp.to_numpy(res.roots[k]), 0.0)


def test_check_flags_relevance_the_model_cannot_pass(mlp, x_pos) -> None:
    """w2 in hidden layers gives relevance to inactive units, whose c_j a_j model is 0: the
    preactivation convention cannot pass it on, the relevance convention can."""
    res = train_free(mlp, x_pos, 0, "w2", root_of="preactivation")
    assert not res.checked
    assert np.abs(rp.to_numpy(res.unresolved[0])).sum() > 1e-3
    with pytest.raises(ConsistencyError, match="unresolved"):
        train_free(mlp, x_pos, 0, "w2", check=True, root_of="preactivation")
    assert issubclass(ConsistencyError, AssertionError)
    passed = train_free(mlp, x_pos, 0, "w2", check=True)
    assert passed.checked
    f = rp.to_numpy(mlp(x_pos))[:, 0]
    np.testing.assert_allclose(rp.to_numpy(passed.relevance).sum(axis=1), f, rtol=1e-10)


@pytest.mark.parametrize("rules", [("z+",) * 3, ("x",) * 3, ("gamma",) * 3, ("zB", "z+", "z+"),
                                   ("w2", "z+", "z+")])
def test_both_conventions_give_the_same_relevance(mlp, x_pos, rules) -> None:
    """Every rule but "0" wherever no relevance reaches an inactive neuron (w2 at the input
    layer only: hidden w2 reaches them, see the test above); the roots differ."""
    kwargs = {"gamma": 0.5, "low": 0.0, "high": 3.0}
    new = train_free(mlp, x_pos, 0, list(rules), check=True, **kwargs)
    old = train_free(mlp, x_pos, 0, list(rules), check=True, root_of="preactivation",
                     **kwargs)
    for a, b in zip(new.layers, old.layers, strict=True):
        assert_close(a, rp.to_numpy(b), rtol=1e-10, atol=1e-13)
    moved = [np.abs(rp.to_numpy(a) - rp.to_numpy(b)).max()
             for a, b in zip(new.roots, old.roots, strict=True)]
    assert max(moved) > 1e-3  # the conventions put the roots elsewhere
    with pytest.raises(ValueError, match="root_of must be one of"):
        train_free(mlp, x_pos, 0, "z+", root_of="activation")


def test_degenerate_neuron_flagged_in_train_free() -> None:
    params = params_np(MLP(3, 10, 10, 2, seed=1, backend="numpy"))
    params[0][0][0] = -np.abs(params[0][0][0])  # neuron 0: no positive weight...
    params[0][1][0] = 5.0  # ...but active through its bias
    params[1][0][:, 0] = 2.0  # and it carries relevance upwards
    layers = []
    for index, (weight, bias) in enumerate(params):
        layers += [rp.Dense(on_backend(weight), on_backend(bias))] + [rp.ReLU()] * (index < 2)
    model = rp.Sequential(layers)
    x = on_backend(positive_inputs())
    res = train_free(model, x, 0, "z+")
    flags = rp.to_numpy(res.degenerate[0])
    assert flags[:, 0].all() and rp.library_of(res.degenerate[0]) == BACKEND
    assert np.all(np.isfinite(rp.to_numpy(res.relevance)))
    assert_close(res.roots[0][:, 0, :], rp.to_numpy(x))  # root = x
    lost = rp.to_numpy(res.unresolved[0])
    assert_close(res.unresolved[0][:, 0], rp.to_numpy(res.layers[1])[:, 0])
    assert np.all(np.abs(lost[:, 0]) > 0)
    with pytest.raises(ConsistencyError, match="unresolved"):
        train_free(model, x, 0, "z+", check=True)


@pytest.mark.parametrize("rule", RULES)
def test_same_numbers_as_numpy_float64(mlp, x_pos, rule: str) -> None:
    kwargs = {"gamma": 0.25, "low": 0.0, "high": 3.0}
    expected = train_free(MLP(3, 10, 10, 2, seed=1, backend="numpy"), positive_inputs(), 0,
                          rule, **kwargs)
    res = train_free(mlp, x_pos, 0, rule, **kwargs)
    for actual, want in zip([res.relevance, *res.roots, *res.unresolved, *res.coefficients],
                            [expected.relevance, *expected.roots, *expected.unresolved,
                             *expected.coefficients], strict=True):
        assert_close(actual, want, atol=1e-13 * max(1.0, np.abs(want).max()))
    for actual, want in zip(res.degenerate, expected.degenerate, strict=True):
        np.testing.assert_array_equal(rp.to_numpy(actual), want)


def test_float32_stays_float32() -> None:
    x = positive_inputs()
    expected = train_free(MLP(3, 10, 10, 2, seed=1, backend="numpy"), x, 0, "z+")
    res = train_free(MLP(3, 10, 10, 2, seed=1, dtype="float32", backend=BACKEND),
                     on_backend(x, "float32"), 0, "z+", check=True)
    assert_close(res.relevance, expected.relevance, dtype="float32", rtol=1e-4,
                 atol=1e-5 * np.abs(expected.relevance).max())
    for roots in res.roots:
        assert dtype_name(roots) == "float32" and rp.library_of(roots) == BACKEND


def test_targets_and_errors(mlp, x_pos) -> None:
    per_sample = [0, 1] * 4
    res = train_free(mlp, x_pos, per_sample)
    r0 = rp.to_numpy(train_free(mlp, x_pos, 0).relevance)
    r1 = rp.to_numpy(train_free(mlp, x_pos, 1).relevance)
    assert_close(res.relevance, np.where(np.array(per_sample)[:, None] == 0, r0, r1))
    out = rp.to_numpy(mlp(x_pos))
    initial = on_backend(np.where(np.arange(2) == 1, out, 0.0))
    assert_close(train_free(mlp, x_pos, initial).relevance, r1)
    with pytest.raises(TypeError, match="Dense and ReLU"):
        train_free(rp.Sequential([mlp.layers[0], rp.Tanh()]), x_pos)
    with pytest.raises(TypeError, match="first layer"):
        train_free(rp.Sequential([rp.ReLU(), mlp.layers[0]]), x_pos)
    with pytest.raises(ValueError, match="one per dense layer"):
        train_free(mlp, x_pos, 0, ["z+", "z+"])
    with pytest.raises(ValueError, match="unknown"):
        train_free(mlp, x_pos, 0, "lrp")
    with pytest.raises(IndexError):
        train_free(mlp, x_pos, 2)


@pytest.mark.skipif(BACKEND != "torch", reason="the seed notebook's network is built in torch")
def test_seed_network_gives_the_research_codes_statistics() -> None:
    """docs/examples/train_free_roots.py --seed-network: the notebook's network and inputs.
    The research code (lrp_relations) finds, with z+ roots of the relevance, a root off the
    input's gradient for about half of the samples and the input's gradient at about 89% of
    the roots; with roots of the pre-activation every sample has a root off the gradient
    and about 12% of the roots keep it. These are the numbers relprop prints."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "docs" / "examples" / "train_free_roots.py"
    spec = importlib.util.spec_from_file_location("train_free_roots", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    model, x = example.seed_network()
    explained = rp.dtd.slice_output(model, 0)
    out_x = rp.to_numpy(explained(x))[:, 0]
    grad_x = rp.to_numpy(rp.gradient(explained, x, 0))
    assert x.shape == (1000, 10) and out_x.min() > 0.1
    paper, _ = example.statistics(explained, x, out_x, grad_x, "z+", {}, "relevance")
    assert paper["samples with a root off the gradient"] == pytest.approx(0.554, abs=1e-12)
    assert paper["roots with the input's gradient"] == pytest.approx(0.8915, abs=1e-12)
    montavon, _ = example.statistics(explained, x, out_x, grad_x, "z+", {}, "preactivation")
    assert montavon["samples with a root off the gradient"] == 1.0
    assert montavon["roots with the input's gradient"] == pytest.approx(0.1119, abs=1e-12)


# --- the model check shared with rp.lrp and full-backward DTD ------------------------------


def test_one_network_check_for_train_free_and_full_backward(mlp, x_pos) -> None:
    """Identity and Dropout between the layers change nothing; a LeakyReLU is refused by
    train_free (its pre-activation model is a ReLU's) but allowed by full-backward DTD; the
    same function raises both errors."""
    layers = list(mlp.items())
    padded = rp.Sequential([layers[0], ("id", rp.Identity()), layers[1],
                            ("drop", rp.Dropout(0.5)), *layers[2:]])
    for root_of in ROOT_CONVENTIONS:
        assert_close(train_free(padded, x_pos, 0, "z+", root_of=root_of, check=True).relevance,
                     rp.to_numpy(train_free(mlp, x_pos, 0, "z+", root_of=root_of).relevance))
    leaky = rp.Sequential([layers[0], ("leaky", rp.LeakyReLU(0.1)), *layers[2:]])
    with pytest.raises(TypeError, match="train_free explains piecewise-linear networks of "
                                        "Dense and ReLU layers .and Identity, Dropout.") as free:
        train_free(leaky, x_pos)
    assert "'leaky'" in str(free.value)
    rp.dtd.get_decompose_relevance_fns(leaky, 0)  # full-backward DTD accepts it
    tanh = rp.Sequential([layers[0], ("tanh", rp.Tanh()), *layers[2:]])
    with pytest.raises(TypeError, match="full-backward DTD explains piecewise-linear"):
        rp.dtd.full_backward(tanh, x_pos[:1, ...])
    with pytest.raises(TypeError, match="model must be an rp.Sequential or rp.Graph"):
        train_free(object(), x_pos)  # type: ignore[arg-type]  # rp.lrp's model check


def test_a_graph_that_is_a_chain_is_explained_like_a_sequential(mlp, x_pos) -> None:
    names = list(mlp.names)
    graph = rp.Graph([(name, layer, "input" if index == 0 else names[index - 1])
                      for index, (name, layer) in enumerate(mlp.items())])
    assert_close(train_free(graph, x_pos, 0, "z+").relevance,
                 rp.to_numpy(train_free(mlp, x_pos, 0, "z+").relevance))
    residual = rp.Graph([("fc", mlp.layers[0], "input"), ("relu", rp.ReLU(), "fc"),
                         ("add", rp.Add(), ["relu", "fc"])])
    with pytest.raises(TypeError, match="chain of layers"):
        train_free(residual, x_pos)


def test_input_checks_are_rp_lrps(mlp, x_pos) -> None:
    with pytest.raises(TypeError, match="dtype"):
        train_free(mlp, on_backend(positive_inputs(), "float32"))
    nan = positive_inputs()
    nan[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        train_free(mlp, on_backend(nan))


@pytest.mark.skipif(BACKEND != "torch", reason="torch modules are converted on torch only")
def test_torch_modules_are_converted_as_rp_lrp_converts_them(mlp, x_pos) -> None:
    import torch

    module = torch.nn.Sequential(torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                 torch.nn.Linear(10, 10), torch.nn.ReLU(),
                                 torch.nn.Linear(10, 2)).double().eval()
    with torch.no_grad():
        for linear, dense in zip(module[::2], mlp.layers[::2], strict=True):
            linear.weight.copy_(dense.weight)
            linear.bias.copy_(dense.bias)
    expected = rp.to_numpy(train_free(mlp, x_pos, 0, "z+").relevance)
    assert_close(train_free(module, x_pos, 0, "z+").relevance, expected)
    tree = rp.dtd.full_backward(module, x_pos[:1, ...], 0,
                                rp.dtd.InterpolationRootFinder(n_rays=50, seed=0))
    reference = rp.dtd.full_backward(mlp, x_pos[:1, ...], 0,
                                     rp.dtd.InterpolationRootFinder(n_rays=50, seed=0))
    assert_close(tree.relevance, rp.to_numpy(reference.relevance))
    np.testing.assert_array_equal(rp.to_numpy(rp.dtd.activation_pattern(module, x_pos)),
                                  rp.to_numpy(rp.dtd.activation_pattern(mlp, x_pos)))

    class Net(torch.nn.Module):  # torch.fx makes an rp.Graph of it: a chain
        def __init__(self) -> None:
            super().__init__()
            self.body = module

        def forward(self, x):
            return self.body[4](torch.relu(self.body[2](torch.relu(self.body[0](x)))))

    assert isinstance(rp.from_torch(Net().eval()), rp.Graph)
    assert_close(train_free(Net().eval(), x_pos, 0, "z+").relevance, expected)
