"""Every user-facing error is raised, with a message that says what is wrong; and nothing the
user passes in (weights, input, targets, bounds) is ever modified."""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import pytest
from helpers import BACKEND, on_backend, random_weights

import relprop as rp
from relprop.composites import (
    Composite,
    EpsilonAlpha2Beta1,
    EpsilonAlpha2Beta1Flat,
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
)
from relprop.rules import (
    AlphaBeta,
    Epsilon,
    Flat,
    Gamma,
    Gradient,
    Norm,
    Pass,
    WSquare,
    ZBox,
    ZPlus,
)

SIZES = [6, 8, 7, 4]


def _params(seed: int = 0):
    return random_weights(np.random.default_rng(seed), SIZES)


def _model(params=None, dtype: str = "float64", names: bool = True) -> rp.Sequential:
    (W1, b1), (W2, b2), (W3, b3) = _params() if params is None else params
    layers = [
        ("fc1", rp.Dense(on_backend(W1, dtype), on_backend(b1, dtype))), ("relu1", rp.ReLU()),
        ("fc2", rp.Dense(on_backend(W2, dtype), on_backend(b2, dtype))), ("relu2", rp.ReLU()),
        ("fc3", rp.Dense(on_backend(W3, dtype), on_backend(b3, dtype))),
    ]
    return rp.Sequential(layers if names else [layer for _, layer in layers])


def _x(dtype: str = "float64", batch: int = 3):
    return on_backend(np.random.default_rng(1).normal(size=(batch, SIZES[0])), dtype)


# --------------------------------------------------------------------------------------
# Input arrays
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("entry", ["lrp", "gradient", "gradient_x_input"])
@pytest.mark.parametrize("int_dtype", ["int64", "int32"])
def test_integer_input(entry, int_dtype):
    x = on_backend(np.ones((2, SIZES[0])), int_dtype)
    kwargs = {"composite": EpsilonPlus()} if entry == "lrp" else {}
    with pytest.raises(TypeError, match="dtype") as info:
        getattr(rp, entry)(_model(), x, 0, **kwargs)
    assert int_dtype in str(info.value) and "floating" in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("entry", ["lrp", "gradient"])
def test_non_finite_input(bad, entry):
    x = np.random.default_rng(2).normal(size=(3, SIZES[0]))
    x[1, 2] = bad
    kwargs = {"rule": Epsilon()} if entry == "lrp" else {}
    with pytest.raises(ValueError, match="NaN or infinite"):
        getattr(rp, entry)(_model(), on_backend(x), 0, **kwargs)


@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_finite_input_whose_sum_overflows_is_accepted():
    """The finiteness check sums the input first; a sum that overflows is checked entry by
    entry, so large finite inputs pass."""
    from relprop._checks import check_input

    big = float(np.finfo(np.float32).max) / 2.0
    x = on_backend(np.full((3, SIZES[0]), big), "float32")
    xp = rp.array_namespace(x=x)
    assert not np.isfinite(float(xp.sum(x)))  # the sum overflows
    check_input(x, xp, {})  # no error: every entry is finite
    x = on_backend(np.where(np.eye(3, SIZES[0]) > 0, np.inf, big), "float32")
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_input(x, xp, {})


@pytest.mark.parametrize("entry", ["lrp", "gradient"])
def test_empty_batch(entry):
    kwargs = {"rule": Epsilon()} if entry == "lrp" else {}
    with pytest.raises(ValueError, match="empty batch"):
        getattr(rp, entry)(_model(), on_backend(np.zeros((0, SIZES[0]))), 0, **kwargs)


def test_zero_dimensional_input():
    with pytest.raises(ValueError, match="batch axis"):
        rp.lrp(_model(), on_backend(np.array(1.0)), 0, rule=Epsilon())


@pytest.mark.parametrize("entry", ["lrp", "gradient", "call"])
def test_wrong_feature_count_names_layer_and_shapes(entry):
    x = on_backend(np.ones((3, 5)))
    with pytest.raises(ValueError) as info:
        if entry == "call":
            _model()(x)
        elif entry == "lrp":
            rp.lrp(_model(), x, 0, rule=Epsilon())
        else:
            rp.gradient(_model(), x, 0)
    message = str(info.value)
    assert "layer 0" in message and "'fc1'" in message
    assert "(batch, 6)" in message and "(3, 5)" in message


def test_wrong_feature_count_in_a_middle_layer():
    """A model whose layers do not fit together: the failing layer is named by index."""
    (W1, b1), _, (W3, b3) = _params()
    model = rp.Sequential([rp.Dense(on_backend(W1), on_backend(b1)), rp.ReLU(),
                           rp.Dense(on_backend(W3), on_backend(b3))])  # 7 inputs, gets 8
    with pytest.raises(ValueError) as info:
        rp.lrp(model, _x(), 0, rule=Epsilon())
    message = str(info.value)
    assert "layer 2" in message and "'2'" in message
    assert "(batch, 7)" in message and "(3, 8)" in message


def test_unbatched_input_is_rejected():
    with pytest.raises(ValueError, match=r"\(batch, 6\)"):
        rp.lrp(_model(), on_backend(np.ones(SIZES[0])), 0, rule=Epsilon())


def test_input_not_an_array():
    with pytest.raises(TypeError, match="x is a builtins.list"):
        rp.lrp(_model(), [[1.0] * 6], 0, rule=Epsilon())


@pytest.mark.parametrize(("x_dtype", "model_dtype"), [("float32", "float64"),
                                                      ("float64", "float32")])
@pytest.mark.parametrize("entry", ["lrp", "gradient"])
def test_dtype_mismatch_between_input_and_model(x_dtype, model_dtype, entry):
    kwargs = {"rule": Epsilon()} if entry == "lrp" else {}
    with pytest.raises(TypeError) as info:
        getattr(rp, entry)(_model(dtype=model_dtype), _x(x_dtype), 0, **kwargs)
    message = str(info.value)
    assert x_dtype in message and model_dtype in message and "fc1.weight" in message


# --------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "error", "pattern"),
    [
        (4, IndexError, "out of range"),
        (100, IndexError, "out of range"),
        (-1, IndexError, "out of range"),
        ([0, 4, 1], IndexError, "out of range"),
        ([0, -1, 1], IndexError, "out of range"),
        (True, TypeError, "bool"),
        (False, TypeError, "bool"),
        ([0, 1], ValueError, r"\(3,\)"),
        ([0, 1, 2, 3], ValueError, r"\(3,\)"),
        ([], ValueError, r"\(3,\)"),
        ([0.0, 1.0, 2.0], TypeError, "ints"),
        ("1", TypeError, "str"),
        (1.0, TypeError, "float"),
        ({0: 1}, TypeError, "dict"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, type) else v.__name__,
)
@pytest.mark.parametrize("entry", ["lrp", "gradient"])
def test_bad_python_targets(target, error, pattern, entry):
    kwargs = {"composite": EpsilonPlusFlat()} if entry == "lrp" else {}
    with pytest.raises(error, match=pattern):
        getattr(rp, entry)(_model(), _x(), target, **kwargs)


@pytest.mark.parametrize(
    ("values", "dtype", "error", "pattern"),
    [
        ([0, 4, 1], "int64", IndexError, "out of range"),
        ([0, -2, 1], "int32", IndexError, "out of range"),
        ([0, 1], "int64", ValueError, r"\(3,\)"),
        ([[0], [1]], "int64", ValueError, "2 lists of classes for a batch of 3"),
        ([True, False, True], "bool", TypeError, "dtype"),
        (np.zeros((3, 5)), "float64", ValueError, r"\(3, 4\)"),
        (np.zeros((3,)), "float64", ValueError, r"\(3, 4\)"),
        (np.zeros((1, 4)), "float64", ValueError, r"\(3, 4\)"),
        (np.zeros((3, 4)), "float32", TypeError, "float32"),
        (np.full((3, 4), np.nan), "float64", ValueError, "NaN"),
    ],
    ids=["int-out-of-range", "int-negative", "int-short", "int-2d-short", "bool",
         "float-wrong-classes", "float-1d", "float-wrong-batch", "float-wrong-dtype", "float-nan"],
)
def test_bad_array_targets(values, dtype, error, pattern):
    target = on_backend(np.asarray(values), dtype)
    with pytest.raises(error, match=pattern):
        rp.lrp(_model(), _x(), target, composite=EpsilonPlus())


def test_index_target_needs_a_class_axis():
    model = rp.Sequential([rp.Dense(on_backend(np.ones((4, 6)))), rp.Flatten(start_dim=1)])
    x = on_backend(np.ones((2, 6)))
    rp.lrp(model, x, 1, rule=Epsilon())  # 2-d output: fine
    three_d = rp.Sequential([rp.Lambda(lambda a: a[:, :, None], name="unsqueeze")])
    rp.lrp(three_d, x, 0, rule=Epsilon())  # a map: channel 0 at every position
    one_d = rp.Sequential([rp.Lambda(lambda a: a[:, 0], name="first")])
    with pytest.raises(ValueError, match=r"shape \(batch, classes, ...\)"):
        rp.lrp(one_d, x, 0, rule=Epsilon())


# --------------------------------------------------------------------------------------
# Mixing libraries
# --------------------------------------------------------------------------------------

needs_other_backend = pytest.mark.skipif(
    BACKEND == "numpy", reason="mixing needs a backend other than numpy (covered there)"
)


@needs_other_backend
@pytest.mark.parametrize("entry", ["lrp", "gradient", "call"])
def test_numpy_model_with_backend_input(entry):
    (W1, b1), (W2, b2), (W3, b3) = _params()
    model = rp.Sequential([rp.Dense(W1, b1), rp.ReLU(), rp.Dense(W2, b2), rp.ReLU(),
                           rp.Dense(W3, b3)])
    with pytest.raises(TypeError) as info:
        if entry == "call":
            model(_x())
        elif entry == "lrp":
            rp.lrp(model, _x(), 0, composite=EpsilonPlus())
        else:
            rp.gradient(model, _x(), 0)
    message = str(info.value)
    assert "x from " + BACKEND in message and "from numpy" in message and "0.weight" in message
    assert "(and 5 more of numpy)" in message and "model.to(" in message
    assert "2.weight" not in message and len(message) < 400  # the first name of each only


@needs_other_backend
def test_backend_model_with_numpy_input():
    x = np.random.default_rng(1).normal(size=(3, SIZES[0]))
    with pytest.raises(TypeError, match="x from numpy"):
        rp.lrp(_model(), x, 0, composite=EpsilonPlus())


@needs_other_backend
@pytest.mark.parametrize("order", ["numpy-weight", "numpy-bias"])
def test_dense_weight_and_bias_from_different_libraries(order):
    W, b = _params()[0]
    args = (W, on_backend(b)) if order == "numpy-weight" else (on_backend(W), b)
    with pytest.raises(TypeError) as info:
        rp.Dense(*args)
    message = str(info.value)
    assert "weight from" in message and "bias from" in message
    assert "numpy" in message and BACKEND in message


@needs_other_backend
def test_sequential_of_layers_from_different_libraries():
    (W1, b1), (W2, b2), _ = _params()
    with pytest.raises(TypeError, match=r"fc2\.weight.*fc2\.bias from numpy|from numpy"):
        rp.Sequential([("fc1", rp.Dense(on_backend(W1), on_backend(b1))), ("relu", rp.ReLU()),
                       ("fc2", rp.Dense(W2, b2))])


@needs_other_backend
def test_numpy_float_target_array_with_backend_model():
    with pytest.raises(TypeError, match="target"):
        rp.lrp(_model(), _x(), np.zeros((3, 4)), composite=EpsilonPlus())


@needs_other_backend
@pytest.mark.parametrize("entry", ["lrp", "gradient"])
def test_numpy_integer_target_array_reads_like_a_list(entry):
    """Class indices on the host are no mixing: a NumPy int array is read as its ints."""
    explain = rp.gradient if entry == "gradient" else partial(rp.lrp, composite=EpsilonPlus())
    for target in (np.array([0, 1, 2]), np.array([0, 1, 2], dtype=np.int32), np.array(2)):
        want = explain(_model(), _x(), target.tolist())
        np.testing.assert_array_equal(rp.to_numpy(explain(_model(), _x(), target)),
                                      rp.to_numpy(want))


@needs_other_backend
def test_numpy_zbox_bounds_with_backend_input():
    rule = ZBox(np.full(6, -1.0), np.full(6, 1.0))
    with pytest.raises(TypeError, match="ZBox low"):
        rp.lrp(_model(), _x(), 0, composite=Composite(layer_map={rp.Dense: Epsilon()},
                                                      name_map={"fc1": rule}))


def test_dense_weight_not_an_array():
    with pytest.raises(TypeError, match="weight is a builtins.list"):
        rp.Dense([[1.0, 2.0]])
    with pytest.raises(TypeError, match="bias is a builtins.list"):
        rp.Dense(on_backend(np.ones((1, 2))), [0.0])


# --------------------------------------------------------------------------------------
# Layers and models
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4), ()])
def test_dense_weight_must_be_2d(shape):
    with pytest.raises(ValueError, match=r"\(out_features, in_features\)"):
        rp.Dense(on_backend(np.ones(shape)))


def test_dense_integer_weight():
    with pytest.raises(TypeError, match="dtype"):
        rp.Dense(on_backend(np.ones((2, 3)), "int64"))


@pytest.mark.parametrize("shape", [(3,), (2, 1), (1, 2), ()])
def test_dense_bias_of_wrong_shape(shape):
    with pytest.raises(ValueError, match=r"bias must have shape \(2,\)"):
        rp.Dense(on_backend(np.ones((2, 3))), on_backend(np.ones(shape)))


def test_dense_bias_of_other_dtype():
    with pytest.raises(TypeError, match="float32"):
        rp.Dense(on_backend(np.ones((2, 3))), on_backend(np.ones(2), "float32"))


@pytest.mark.parametrize("item", [lambda a: a, np.eye(2), "relu", None, rp.ReLU],
                         ids=["function", "ndarray", "str", "None", "layer-class"])
def test_sequential_rejects_non_layers(item):
    with pytest.raises(TypeError, match="not a relprop layer"):
        rp.Sequential([rp.ReLU(), item])
    with pytest.raises(TypeError, match="'act'"):
        rp.Sequential([("relu", rp.ReLU()), ("act", item)])


def test_sequential_duplicate_names():
    with pytest.raises(ValueError, match="unique"):
        rp.Sequential([("a", rp.ReLU()), ("b", rp.Tanh()), ("a", rp.ReLU())])
    with pytest.raises(ValueError, match="unique"):
        rp.Sequential([("1", rp.ReLU()), rp.ReLU()])  # the second is named "1" by position


def test_sequential_empty_and_unknown_name():
    with pytest.raises(ValueError, match="at least one layer"):
        rp.Sequential([])
    with pytest.raises(KeyError, match="fc9"):
        _model()["fc9"]


@pytest.mark.parametrize("entry", ["lrp", "gradient", "gradient_x_input", "rules"])
def test_model_must_be_a_relprop_model_and_the_error_names_from_torch(entry):
    explain = {
        "lrp": lambda m: rp.lrp(m, _x(), 0, rule=Epsilon()),
        "gradient": lambda m: rp.gradient(m, _x(), 0),
        "gradient_x_input": lambda m: rp.gradient_x_input(m, _x(), 0),
        "rules": lambda m: EpsilonPlus().rules(m),
    }[entry]
    for foreign in ([rp.ReLU()], rp.ReLU(), object()):
        with pytest.raises(TypeError, match="rp.Sequential") as info:
            explain(foreign)
        message = str(info.value)
        assert "rp.from_torch" in message and "Supported layers" in message
        assert type(foreign).__qualname__ in message and len(message) < 400


def test_layer_constructor_arguments():
    with pytest.raises(ValueError, match="start_dim"):
        rp.Flatten(start_dim=0)
    with pytest.raises(ValueError, match="beta"):
        rp.Softplus(beta=0.0)
    with pytest.raises(TypeError, match="callable"):
        rp.Lambda(3.0)


# --------------------------------------------------------------------------------------
# Rules and composites
# --------------------------------------------------------------------------------------


def test_zbox_needs_bounds():
    with pytest.raises(TypeError, match="low"):
        ZBox()
    with pytest.raises(TypeError, match="low"):
        ZBox(low=0.0)
    with pytest.raises(TypeError, match="low"):
        ZBox(high=1.0)
    with pytest.raises(TypeError, match="low"):
        EpsilonGammaBox()


@pytest.mark.parametrize(("low", "high"), [(1.0, 0.0), (0.5, -0.5), (3, -3)])
def test_zbox_low_above_high(low, high):
    with pytest.raises(ValueError, match="low <= high"):
        ZBox(low, high)
    with pytest.raises(ValueError, match="low <= high"):
        EpsilonGammaBox(low, high)


def test_zbox_bounds_that_do_not_broadcast():
    rule = ZBox(on_backend(np.zeros(5)), on_backend(np.ones(5)))
    with pytest.raises(ValueError, match="broadcast"):
        rp.lrp(_model(), _x(), 0, composite=Composite(layer_map={rp.Dense: Epsilon()},
                                                      name_map={0: rule}))


@pytest.mark.parametrize(("alpha", "beta"), [(1, 1), (2, 2), (3, 1), (1, 0.5), (0, 1),
                                             (-1, -2), (0.5, -0.5), (-0.5, -1.5)])
def test_alphabeta_parameters(alpha, beta):
    with pytest.raises(ValueError, match="alpha"):
        AlphaBeta(alpha=alpha, beta=beta)


def test_alphabeta_valid_parameters():
    AlphaBeta(1, 0)
    AlphaBeta(2.5, 1.5)


@pytest.mark.parametrize("gamma", [-1.0, -1e-9])
def test_gamma_negative(gamma):
    with pytest.raises(ValueError, match="gamma"):
        Gamma(gamma=gamma)
    with pytest.raises(ValueError, match="gamma"):
        EpsilonGammaBox(0.0, 1.0, gamma=gamma)


@pytest.mark.parametrize("make", [lambda v: Epsilon(v), lambda v: Norm(v), lambda v: ZPlus(v),
                                  lambda v: AlphaBeta(2, 1, v), lambda v: Gamma(0.25, v),
                                  lambda v: ZBox(0.0, 1.0, v), lambda v: WSquare(v),
                                  lambda v: Flat(v), lambda v: EpsilonPlus(epsilon=v),
                                  lambda v: EpsilonPlusFlat(stabilizer=v)],
                         ids=["Epsilon", "Norm", "ZPlus", "AlphaBeta", "Gamma", "ZBox", "WSquare",
                              "Flat", "EpsilonPlus", "EpsilonPlusFlat"])
def test_negative_or_non_numeric_stabilizer(make):
    with pytest.raises(ValueError, match=">= 0"):
        make(-1.0)
    with pytest.raises(ValueError, match=">= 0"):
        make(-1)
    with pytest.raises(TypeError, match="float"):
        make("0.1")
    with pytest.raises(TypeError, match="float"):
        make(True)


@pytest.mark.parametrize("zero_params", ["foo", ["bias", "foo"], ("weights",)])
@pytest.mark.parametrize("make", [lambda z: Epsilon(zero_params=z), lambda z: ZPlus(zero_params=z),
                                  lambda z: AlphaBeta(zero_params=z),
                                  lambda z: Gamma(zero_params=z),
                                  lambda z: ZBox(0.0, 1.0, zero_params=z),
                                  lambda z: WSquare(zero_params=z), lambda z: Flat(zero_params=z),
                                  lambda z: EpsilonPlus(zero_params=z),
                                  lambda z: EpsilonGammaBox(0.0, 1.0, zero_params=z)],
                         ids=["Epsilon", "ZPlus", "AlphaBeta", "Gamma", "ZBox", "WSquare",
                              "Flat", "EpsilonPlus", "EpsilonGammaBox"])
def test_unknown_zero_params(make, zero_params):
    with pytest.raises(ValueError, match="zero_params") as info:
        make(zero_params)
    assert "'bias'" in str(info.value)


WEIGHT_RULES = [ZPlus(), AlphaBeta(2, 1), AlphaBeta(1, 0), Gamma(0.25), ZBox(-1.0, 1.0),
                WSquare(), Flat()]


@pytest.mark.parametrize("rule", WEIGHT_RULES, ids=lambda r: type(r).__name__)
@pytest.mark.parametrize("how", ["name", "index", "layer_map", "first_map"])
def test_weight_rule_on_activation_names_the_layer(rule, how):
    composite = {
        "name": Composite(layer_map={rp.Dense: Epsilon()}, name_map={"relu2": rule}),
        "index": Composite(layer_map={rp.Dense: Epsilon()}, name_map={3: rule}),
        "layer_map": Composite(layer_map={rp.Dense: Epsilon(), rp.ReLU: rule}),
        "first_map": Composite(layer_map={rp.Dense: Epsilon()},
                               first_map={rp.layers.Activation: rule}),
    }[how]
    with pytest.raises(TypeError) as info:
        rp.lrp(_model(), _x(), 0, composite=composite)
    message = str(info.value)
    # by type, the first ReLU already fails
    layer = "layer 1 ('relu1'" if how in ("first_map", "layer_map") else "layer 3 ('relu2'"
    assert layer in message and "ReLU()" in message and "linear layer" in message


@pytest.mark.parametrize("rule", WEIGHT_RULES, ids=lambda r: type(r).__name__)
def test_weight_rule_on_lambda(rule):
    model = rp.Sequential([("double", rp.Lambda(lambda a: 2.0 * a, name="double"))])
    with pytest.raises(TypeError, match=r"layer 0 \('double', Lambda\(double\)\)"):
        rp.lrp(model, _x(), 0, composite=Composite(name_map={"double": rule}))


@pytest.mark.parametrize("how", ["name", "index", "layer_map"])
def test_pass_on_dense_names_the_layer(how):
    composite = {
        "name": EpsilonPlus(name_map={"fc2": Pass()}),
        "index": Composite(layer_map={rp.Dense: Epsilon()}, name_map={-1: Pass()}),
        "layer_map": Composite(layer_map={rp.Dense: Pass()}),
    }[how]
    with pytest.raises(TypeError) as info:
        rp.lrp(_model(), _x(), 0, composite=composite)
    message = str(info.value)
    assert re.search(r"layer \d \('fc\d', Dense\(\d -> \d\)\)", message)
    assert "Pass" in message
    with pytest.raises(TypeError, match="Pass"):
        rp.lrp(_model(), _x(), 0, rule=Pass())


def test_gradient_and_epsilon_are_allowed_everywhere():
    """Not errors: Epsilon/Norm on activations (parameter-free), Gradient on Dense."""
    composite = Composite(layer_map={rp.Dense: Gradient(), rp.ReLU: Norm()})
    rp.lrp(_model(), _x(), 0, composite=composite)


def test_composite_and_rule_together_or_neither():
    with pytest.raises(TypeError, match="not both"):
        rp.lrp(_model(), _x(), 0, composite=EpsilonPlus(), rule=Epsilon())
    with pytest.raises(TypeError, match="composite=.*rule="):
        rp.lrp(_model(), _x(), 0)


@pytest.mark.parametrize("kwargs", [{"rule": "epsilon"}, {"rule": Epsilon},
                                    {"rule": EpsilonPlus()}, {"composite": "EpsilonPlus"},
                                    {"composite": EpsilonPlus}, {"composite": Epsilon()}],
                         ids=["rule-str", "rule-class", "rule-composite", "composite-str",
                              "composite-class", "composite-rule"])
def test_rule_and_composite_of_wrong_type(kwargs):
    with pytest.raises(TypeError, match="relprop"):
        rp.lrp(_model(), _x(), 0, **kwargs)


def test_composite_maps_of_wrong_type():
    with pytest.raises(TypeError, match="layer types"):
        Composite(layer_map={"Dense": Epsilon()})
    with pytest.raises(TypeError, match="layer types"):
        Composite(first_map={int: Epsilon()})
    with pytest.raises(TypeError, match="rules as values"):
        Composite(layer_map={rp.Dense: Epsilon})
    with pytest.raises(TypeError, match="rules as values"):
        Composite(name_map={"fc1": "epsilon"})
    with pytest.raises(TypeError, match="layer types"):
        EpsilonPlus(layer_map={"Dense": Epsilon()})


def test_name_map_names_missing_layers():
    with pytest.raises(KeyError, match="fc9"):
        rp.lrp(_model(), _x(), 0, composite=EpsilonPlus(name_map={"fc9": Epsilon()}))
    with pytest.raises(IndexError, match="index 5"):
        rp.lrp(_model(), _x(), 0, composite=EpsilonPlus(name_map={5: Epsilon()}))
    with pytest.raises(IndexError, match="index -6"):
        rp.lrp(_model(), _x(), 0, composite=EpsilonPlus(name_map={-6: Epsilon()}))


# --------------------------------------------------------------------------------------
# Backend selection
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["tensorflow", "Torch", "numpy2", "cupy,torch"])
def test_unknown_relprop_backend(value, monkeypatch):
    monkeypatch.setenv("RELPROP_BACKEND", value)
    with pytest.raises(ValueError) as info:
        rp.default_backend()
    message = str(info.value)
    assert repr(value) in message
    for name in rp.BACKENDS:
        assert name in message
    with pytest.raises(ValueError, match="tensorflow|Torch|numpy2|cupy,torch"):
        rp.asarray([1.0])


def test_relprop_backend_unset_means_numpy(monkeypatch):
    monkeypatch.delenv("RELPROP_BACKEND", raising=False)
    assert rp.default_backend() == "numpy"
    monkeypatch.setenv("RELPROP_BACKEND", BACKEND)
    assert rp.default_backend() == BACKEND


def test_unknown_backend_argument():
    with pytest.raises(ValueError, match="array_api_strict"):
        rp.asarray([1.0], backend="tensorflow")


# --------------------------------------------------------------------------------------
# Nothing the user passes in is modified
# --------------------------------------------------------------------------------------

ALL_COMPOSITES = [
    EpsilonPlus(), EpsilonPlusFlat(), EpsilonAlpha2Beta1(), EpsilonAlpha2Beta1Flat(),
    EpsilonGammaBox(-3.0, 3.0), EpsilonPlus(zero_params="bias"),
    Composite(layer_map={rp.Dense: Gamma()}, first_map={rp.Dense: WSquare()},
              name_map={"fc3": Epsilon(0.0)}),
]
ALL_RULES = [Epsilon(), Epsilon(0.0), Epsilon(0.1, zero_params="bias"), ZPlus(), AlphaBeta(2, 1),
             AlphaBeta(1, 0), Gamma(0.25), Gamma(1.0, zero_params="bias"), ZBox(-3.0, 3.0),
             WSquare(), Flat(), Gradient()]


def _frozen_numpy_inputs():
    params = []
    for W, b in _params(seed=7):
        W, b = np.array(W), np.array(b)
        W.setflags(write=False)
        b.setflags(write=False)
        params.append((W, b))
    x = np.random.default_rng(8).normal(size=(3, SIZES[0]))
    low, high = np.full(SIZES[0], -3.0), np.full(SIZES[0], 3.0)
    int_target = np.array([0, 3, 1])
    float_target = np.random.default_rng(9).normal(size=(3, 4))
    arrays = [x, low, high, int_target, float_target]
    for a in arrays:
        a.setflags(write=False)
    return params, x, low, high, int_target, float_target


@pytest.mark.skipif(BACKEND != "numpy", reason="read-only arrays are NumPy's")
def test_read_only_numpy_arrays_work_and_stay_unchanged():
    params, x, low, high, int_target, float_target = _frozen_numpy_inputs()
    everything = [a for pair in params for a in pair] + [x, low, high, int_target, float_target]
    before = [(a.copy(), a.tobytes()) for a in everything]
    model = rp.Sequential([("fc1", rp.Dense(*params[0])), ("relu1", rp.ReLU()),
                           ("fc2", rp.Dense(*params[1])), ("relu2", rp.ReLU()),
                           ("fc3", rp.Dense(*params[2]))])
    box = ZBox(low, high)
    composites = [*ALL_COMPOSITES, Composite(layer_map={rp.Dense: ZPlus()}, name_map={0: box})]
    for target in (None, 2, [0, 1, 2], int_target, float_target):
        for composite in composites:
            assert rp.lrp(model, x, target, composite=composite).shape == x.shape
        for rule in ALL_RULES:
            R, layers = rp.lrp(model, x, target, rule=rule, return_layers=True)
            assert R.shape == x.shape and len(layers) == 6
        assert rp.gradient(model, x, target).shape == x.shape
        assert rp.gradient_x_input(model, x, target).shape == x.shape
    model(x)
    for a, (copy, raw) in zip(everything, before, strict=True):
        assert not a.flags.writeable
        assert a.tobytes() == raw
        np.testing.assert_array_equal(a, copy)


def test_backend_arrays_unchanged_after_every_entry():
    params = _params(seed=10)
    model = _model(params)
    x = _x()
    low, high = on_backend(np.full(SIZES[0], -3.0)), on_backend(np.full(SIZES[0], 3.0))
    int_target = on_backend(np.array([0, 3, 1]), "int64")
    float_target = on_backend(np.random.default_rng(11).normal(size=(3, 4)))
    watched = {
        "x": x, "low": low, "high": high, "int_target": int_target, "float_target": float_target,
        **model.named_params(),
    }
    copies = {name: rp.to_numpy(a).copy() for name, a in watched.items()}
    composites = [*ALL_COMPOSITES,
                  Composite(layer_map={rp.Dense: ZPlus()}, name_map={0: ZBox(low, high)})]
    for target in (None, [0, 1, 2], int_target, float_target):
        for composite in composites:
            rp.lrp(model, x, target, composite=composite)
        for rule in ALL_RULES:
            rp.lrp(model, x, target, rule=rule, return_layers=True)
        rp.gradient(model, x, target)
        rp.gradient_x_input(model, x, target)
    for name, a in watched.items():
        np.testing.assert_array_equal(rp.to_numpy(a), copies[name], err_msg=name)
    for name, a in model.named_params().items():
        assert a is watched[name], f"{name} was replaced"


@pytest.mark.skipif(BACKEND != "torch", reason="torch autograd state")
def test_torch_parameters_get_no_gradient_and_no_history():
    import torch

    (W1, b1), (W2, b2), (W3, b3) = _params(seed=12)
    tensors = [torch.tensor(a, requires_grad=True) for a in (W1, b1, W2, b2, W3, b3)]
    model = rp.Sequential([rp.Dense(tensors[0], tensors[1]), rp.ReLU(),
                           rp.Dense(tensors[2], tensors[3]), rp.ReLU(),
                           rp.Dense(tensors[4], tensors[5])])
    x = _x()
    R = rp.lrp(model, x, 0, composite=EpsilonPlusFlat())
    g = rp.gradient(model, x, 0)
    assert not R.requires_grad and not g.requires_grad
    assert all(t.grad is None for t in tensors)
    assert not x.requires_grad and x.grad is None


def test_one_sample_without_its_batch_axis_gets_the_fix():
    dense = rp.Sequential([rp.Dense(on_backend(np.ones((2, 3))))])
    with pytest.raises(ValueError, match=r"one sample without its batch axis: pass x\[None\]"):
        rp.lrp(dense, on_backend(np.ones(3)), rule=rp.rules.Epsilon())
    conv = rp.Sequential([rp.Conv2d(on_backend(np.ones((2, 1, 3, 3))))])
    with pytest.raises(ValueError, match=r"pass x\[None\]"):
        conv(on_backend(np.ones((1, 5, 5))))
    with pytest.raises(ValueError, match=r"got \(2, 5, 5\)\.$"):  # not one sample: no hint
        conv(on_backend(np.ones((2, 5, 5))))
