"""Every layer's explicit adjoint (``layer.vjp``) equals the backend's own VJP of its
forward pass; ``Dense.transpose`` is the adjoint of ``Dense.linear``; ``rp.gradient``
equals the autodiff gradient of the model; activations compute the textbook formulas.

The autodiff oracle is ``rp.vjp(lambda a: layer.forward(a, xp), x, v)``: torch autograd
and ``jax.vjp`` are exact (tolerance: rounding), NumPy and array-api-strict use central
finite differences (documented accuracy: ~1e-10 relative for piecewise-linear maps away
from kinks, O(h^2) ~ 1e-8 for smooth ones in float64; ~1e-3 in float32). Tolerances are
relative to the largest expected entry (``atol = rtol * max|expected|``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from helpers import BACKEND, assert_close, dense_model, on_backend, random_weights

import relprop as rp

EXACT = BACKEND in ("torch", "jax")
DTYPES = ["float64", "float32"]


def rtol_for(dtype: str, kind: str) -> float:
    if EXACT:
        return 1e-12 if dtype == "float64" else 1e-6
    if dtype == "float64":
        return 1e-10 if kind == "linear" else 1e-8
    return 1e-3


def check(actual, expected: np.ndarray, dtype: str, kind: str) -> None:
    rtol = rtol_for(dtype, kind)
    scale = float(np.max(np.abs(expected))) or 1.0
    assert_close(actual, expected, dtype=dtype, rtol=rtol, atol=rtol * scale)


def autodiff_vjp(layer: rp.layers.Layer, x, v):
    """The backend's own VJP of the layer's forward pass (the oracle)."""
    xp = rp.array_namespace(x=x, **layer.params())
    return rp.vjp(lambda a: layer.forward(a, xp), x, v)


def away_from_zero(rng: np.random.Generator, shape: tuple, dtype: str, margin: float = 0.1):
    """Values in [-2, -margin] U [margin, 2]: no finite-difference step crosses a kink."""
    magnitude = rng.uniform(margin, 2.0, size=shape)
    values = np.where(rng.random(shape) < 0.5, -magnitude, magnitude)
    return values.astype(dtype).astype(np.float64)


def identity_lambda() -> rp.Lambda:
    return rp.Lambda(lambda a: a, name="identity")


# (layer factory, kind of map, input shape per sample)
ACTIVATIONS = {
    "ReLU": (rp.ReLU, "linear"),
    "LeakyReLU": (lambda: rp.LeakyReLU(0.1), "linear"),
    "LeakyReLU-default": (rp.LeakyReLU, "linear"),
    "Tanh": (rp.Tanh, "smooth"),
    "Sigmoid": (rp.Sigmoid, "smooth"),
    "Softplus": (rp.Softplus, "smooth"),
    "Softplus-beta3": (lambda: rp.Softplus(3.0), "smooth"),
    "Identity": (rp.Identity, "linear"),
    "Dropout": (lambda: rp.Dropout(0.3), "linear"),
    "ELU": (lambda: rp.ELU(0.7), "smooth"),
    "SiLU": (rp.SiLU, "smooth"),
    "Hardtanh": (lambda: rp.Hardtanh(-2.5, 2.5), "linear"),  # kinks outside [-2, 2]
    "GELU": (rp.GELU, "smooth"),
    "GELU-tanh": (lambda: rp.GELU("tanh"), "smooth"),
}


# ---------------------------------------------------------------------------------------
# explicit vjp == backend VJP
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_dense_vjp_matches_autodiff(bias: bool, dtype: str) -> None:
    rng = np.random.default_rng(1)
    (weight, b), = random_weights(rng, [5, 3], bias=bias)
    layer = rp.Dense(on_backend(weight, dtype), None if b is None else on_backend(b, dtype))
    x = on_backend(rng.normal(size=(4, 5)), dtype)
    v_np = rng.normal(size=(4, 3)).astype(dtype).astype(np.float64)
    v = on_backend(v_np, dtype)
    xp = rp.array_namespace(x=x)
    explicit = layer.vjp(x, v, xp)
    check(explicit, rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64), dtype, "linear")
    check(explicit, v_np @ weight.astype(dtype).astype(np.float64), dtype, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_vjp_matches_autodiff(name: str, dtype: str) -> None:
    factory, kind = ACTIVATIONS[name]
    layer = factory()
    rng = np.random.default_rng(2)
    x = on_backend(away_from_zero(rng, (3, 2, 4), dtype), dtype)
    v = on_backend(rng.normal(size=(3, 2, 4)), dtype)
    expected = rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64)
    check(layer.vjp(x, v, rp.array_namespace(x=x)), expected, dtype, kind)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_large_inputs(dtype: str) -> None:
    """+-50, and beyond where a naive exp(-x) overflows (float32 from 89, float64 from 710):
    forward without overflow warnings, finite values that match the formula, vjp matches
    autodiff and the analytic s(1 - s)."""
    huge = 100.0 if dtype == "float32" else 800.0
    x_np = np.array([[50.0, -50.0, 30.0, -30.0, huge, -huge, 0.5, -1.5]])
    x = on_backend(x_np, dtype)
    layer = rp.Sigmoid()
    xp = rp.array_namespace(x=x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy reports exp overflow as a RuntimeWarning
        out = layer.forward(x, xp)
        vjp = layer.vjp(x, on_backend(np.ones_like(x_np), dtype), xp)
    exact = np.exp(-np.logaddexp(0.0, -x_np))  # 1/(1+e^-x) without overflow
    out_np = rp.to_numpy(out)
    assert np.all(np.isfinite(out_np))
    tiny = float(np.finfo(dtype).tiny)
    assert_close(out, exact, dtype=dtype, rtol=1e-6 if dtype == "float32" else 1e-14, atol=tiny)
    derivative = exact * (1.0 - exact)
    assert np.all(np.isfinite(rp.to_numpy(vjp)))
    assert_close(vjp, derivative, dtype=dtype, rtol=1e-5 if dtype == "float32" else 1e-12,
                 atol=1e-7 if dtype == "float32" else 1e-15)
    v = on_backend(np.ones_like(x_np), dtype)
    check(vjp, rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64), dtype, "smooth")


@pytest.mark.parametrize("dtype", DTYPES)
def test_softplus_large_inputs(dtype: str) -> None:
    x_np = np.array([[60.0, -60.0, 0.0, 2.0]])
    x = on_backend(x_np, dtype)
    layer = rp.Softplus()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = layer.forward(x, rp.array_namespace(x=x))
    assert_close(out, np.logaddexp(0.0, x_np), dtype=dtype,
                 rtol=1e-6 if dtype == "float32" else 1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("start_dim", "shape"), [(1, (3, 2, 3)), (2, (3, 2, 3, 2)), (1, (2, 5))])
def test_flatten_vjp_matches_autodiff(start_dim: int, shape: tuple, dtype: str) -> None:
    layer = rp.Flatten(start_dim)
    rng = np.random.default_rng(3)
    x = on_backend(rng.normal(size=shape), dtype)
    xp = rp.array_namespace(x=x)
    out = layer.forward(x, xp)
    expected_shape = (*shape[:start_dim], int(np.prod(shape[start_dim:])))
    assert tuple(out.shape) == expected_shape
    v_np = rng.normal(size=expected_shape).astype(dtype).astype(np.float64)
    v = on_backend(v_np, dtype)
    explicit = layer.vjp(x, v, xp)
    check(explicit, rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64), dtype, "linear")
    check(explicit, v_np.reshape(shape), dtype, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lambda_without_vjp_uses_autodiff(dtype: str) -> None:
    """No user vjp: the adapter's J^T v, checked against the analytic derivative (comparing
    with ``rp.vjp`` would only compare the adapter with itself)."""

    def fn(a):
        xp = rp.array_namespace(x=a)
        return xp.sin(a) * a[:, :1]

    layer = rp.Lambda(fn)
    rng = np.random.default_rng(4)
    x_np = rng.uniform(-2, 2, size=(3, 4)).astype(dtype).astype(np.float64)
    v_np = rng.normal(size=(3, 4)).astype(dtype).astype(np.float64)
    x, v = on_backend(x_np, dtype), on_backend(v_np, dtype)
    expected = v_np * np.cos(x_np) * x_np[:, :1]
    expected[:, 0] += np.sum(v_np * np.sin(x_np), axis=1)
    check(layer.vjp(x, v, rp.array_namespace(x=x)), expected, dtype, "smooth")
    check(layer(x), np.sin(x_np) * x_np[:, :1], dtype, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
def test_lambda_with_user_vjp(dtype: str) -> None:
    """A user vjp is used as given (not the adapter) and, when right, equals autodiff."""
    calls = []

    def cube(a):
        return a**3

    def cube_vjp(a, v):
        calls.append(tuple(a.shape))
        return 3.0 * a**2 * v

    layer = rp.Lambda(cube, cube_vjp, name="cube")
    rng = np.random.default_rng(5)
    x_np = rng.uniform(-2, 2, size=(3, 4)).astype(dtype).astype(np.float64)
    v_np = rng.normal(size=(3, 4)).astype(dtype).astype(np.float64)
    x, v = on_backend(x_np, dtype), on_backend(v_np, dtype)
    explicit = layer.vjp(x, v, rp.array_namespace(x=x))
    assert calls == [(3, 4)]
    check(explicit, 3.0 * x_np**2 * v_np, dtype, "smooth")
    check(explicit, rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64), dtype, "smooth")
    # a deliberately different "vjp" proves the user's function takes precedence
    wrong = rp.Lambda(cube, lambda a, w: 2.0 * w)
    check(wrong.vjp(x, v, rp.array_namespace(x=x)), 2.0 * v_np, dtype, "linear")


# ---------------------------------------------------------------------------------------
# Dense.linear / Dense.transpose
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_transpose_is_adjoint_of_linear(seed: int, dtype: str) -> None:
    """Dot-product test <linear(x, W), v> == <x, transpose(v, W)> for random W (not the
    layer's own weight), plus both maps against NumPy."""
    rng = np.random.default_rng(seed)
    layer = rp.Dense(on_backend(rng.normal(size=(3, 5)), dtype))
    W_np = rng.normal(size=(6, 5)).astype(dtype).astype(np.float64)
    x_np = rng.normal(size=(4, 5)).astype(dtype).astype(np.float64)
    v_np = rng.normal(size=(4, 6)).astype(dtype).astype(np.float64)
    W, x, v = (on_backend(a, dtype) for a in (W_np, x_np, v_np))
    xp = rp.array_namespace(x=x)
    forward = layer.linear(x, W, None, xp)
    backward = layer.transpose(v, W, xp)
    check(forward, x_np @ W_np.T, dtype, "linear")
    check(backward, v_np @ W_np, dtype, "linear")
    lhs = float(xp.sum(forward * v))
    rhs = float(xp.sum(x * backward))
    scale = float(np.sum(np.abs(x_np @ W_np.T) * np.abs(v_np)))
    assert abs(lhs - rhs) <= (1e-13 if dtype == "float64" else 1e-5) * scale, (lhs, rhs)
    assert lhs == pytest.approx(float(np.sum((x_np @ W_np.T) * v_np)), rel=1e-5, abs=1e-5 * scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_linear_with_bias(dtype: str) -> None:
    rng = np.random.default_rng(6)
    W_np, b_np, x_np = (rng.normal(size=s).astype(dtype).astype(np.float64)
                        for s in ((3, 5), (3,), (2, 5)))
    layer = rp.Dense(on_backend(W_np, dtype), on_backend(b_np, dtype))
    x = on_backend(x_np, dtype)
    xp = rp.array_namespace(x=x)
    check(layer.linear(x, layer.weight, layer.bias, xp), x_np @ W_np.T + b_np, dtype, "linear")
    check(layer(x), x_np @ W_np.T + b_np, dtype, "linear")
    check(layer.linear(x, layer.weight, None, xp), x_np @ W_np.T, dtype, "linear")


# ---------------------------------------------------------------------------------------
# rp.gradient == autodiff of the model
# ---------------------------------------------------------------------------------------


def small_model(dtype: str, activation) -> rp.Sequential:
    rng = np.random.default_rng(7)
    return dense_model(random_weights(rng, [4, 6, 5, 3]), dtype, activation=activation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", [rp.ReLU, rp.Tanh, rp.Softplus, rp.Sigmoid],
                         ids=lambda a: a.__name__)
@pytest.mark.parametrize("target", [0, 2])
def test_gradient_matches_autodiff(target: int, activation, dtype: str) -> None:
    model = small_model(dtype, activation)
    rng = np.random.default_rng(8)
    x = on_backend(away_from_zero(rng, (3, 4), dtype, margin=0.05), dtype)
    xp = model.namespace(x=x)
    relevance = rp.gradient(model, x, target)
    oracle = rp.grad(lambda a: model.forward(a, xp)[:, target], x)
    kind = "linear" if activation is rp.ReLU else "smooth"
    check(relevance, rp.to_numpy(oracle).astype(np.float64), dtype, kind)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_per_sample_targets_and_lambda(dtype: str) -> None:
    """A model with Flatten, Dropout, LeakyReLU and a user Lambda; one target per sample."""
    rng = np.random.default_rng(9)
    (w1, b1), (w2, b2) = random_weights(rng, [6, 5, 3])

    def square(a):
        return a * a

    model = rp.Sequential([
        rp.Flatten(),
        rp.Dense(on_backend(w1, dtype), on_backend(b1, dtype)),
        rp.LeakyReLU(0.2),
        rp.Dropout(0.5),
        rp.Lambda(square, name="square"),
        rp.Dense(on_backend(w2, dtype), on_backend(b2, dtype)),
    ])
    x = on_backend(rng.normal(size=(4, 2, 3)), dtype)
    targets = [2, 0, 1, 2]
    onehot = on_backend(np.eye(3)[targets], dtype)
    xp = model.namespace(x=x)
    relevance = rp.gradient(model, x, targets)
    oracle = rp.vjp(lambda a: model.forward(a, xp), x, onehot)
    check(relevance, rp.to_numpy(oracle).astype(np.float64), dtype, "smooth")
    same = rp.gradient(model, x, onehot)  # a float array target is the cotangent
    check(same, rp.to_numpy(oracle).astype(np.float64), dtype, "smooth")


def test_gradient_against_closed_form() -> None:
    """Dense-ReLU-Dense: d f_c / dx = W1^T diag(1[z > 0]) w2_c (no autodiff involved)."""
    rng = np.random.default_rng(10)
    params = random_weights(rng, [4, 6, 3])
    model = dense_model(params)
    x_np = rng.normal(size=(5, 4))
    (w1, b1), (w2, _) = params
    active = (x_np @ w1.T + b1) > 0
    expected = (active * w2[1]) @ w1
    check(rp.gradient(model, on_backend(x_np), 1), expected, "float64", "linear")
    check(rp.gradient_x_input(model, on_backend(x_np), 1), x_np * expected, "float64", "linear")


# ---------------------------------------------------------------------------------------
# forward values against NumPy formulas
# ---------------------------------------------------------------------------------------

def normal_cdf(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def tanh_arg(x: np.ndarray) -> np.ndarray:
    return np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)


FORMULAS = {
    "ReLU": (rp.ReLU, lambda x: np.maximum(x, 0.0)),
    "LeakyReLU": (lambda: rp.LeakyReLU(0.1), lambda x: np.where(x > 0, x, 0.1 * x)),
    "LeakyReLU-default": (rp.LeakyReLU, lambda x: np.where(x > 0, x, 0.01 * x)),
    "Tanh": (rp.Tanh, np.tanh),
    "Sigmoid": (rp.Sigmoid, lambda x: 1.0 / (1.0 + np.exp(-x))),
    "Softplus": (rp.Softplus, lambda x: np.log1p(np.exp(x))),
    "Softplus-beta2": (lambda: rp.Softplus(2.0), lambda x: np.log1p(np.exp(2.0 * x)) / 2.0),
    "Identity": (rp.Identity, lambda x: x),
    "Dropout": (lambda: rp.Dropout(0.9), lambda x: x),
    "ELU": (lambda: rp.ELU(0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(np.minimum(x, 0)))),
    "SiLU": (rp.SiLU, lambda x: x / (1.0 + np.exp(-x))),
    "Hardtanh": (lambda: rp.Hardtanh(-1.0, 2.0), lambda x: np.clip(x, -1.0, 2.0)),
    # the standard normal CDF from the standard library's erf, not relprop's
    "GELU": (rp.GELU, lambda x: x * normal_cdf(x)),
    "GELU-tanh": (lambda: rp.GELU("tanh"), lambda x: 0.5 * x * (1.0 + np.tanh(tanh_arg(x)))),
}

DERIVATIVES = {
    "ReLU": lambda x: (x > 0).astype(float),
    "LeakyReLU": lambda x: np.where(x > 0, 1.0, 0.1),
    "LeakyReLU-default": lambda x: np.where(x > 0, 1.0, 0.01),
    "Tanh": lambda x: 1.0 / np.cosh(x) ** 2,
    "Sigmoid": lambda x: np.exp(-x) / (1.0 + np.exp(-x)) ** 2,
    "Softplus": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "Softplus-beta2": lambda x: 1.0 / (1.0 + np.exp(-2.0 * x)),
    "Identity": np.ones_like,
    "Dropout": np.ones_like,
    "ELU": lambda x: np.where(x > 0, 1.0, 0.7 * np.exp(np.minimum(x, 0))),
    "SiLU": lambda x: (1.0 + np.exp(-x) + x * np.exp(-x)) / (1.0 + np.exp(-x)) ** 2,
    "Hardtanh": lambda x: ((x > -1.0) & (x < 2.0)).astype(float),
    "GELU": lambda x: normal_cdf(x) + x * np.exp(-x * x / 2.0) / np.sqrt(2.0 * np.pi),
    "GELU-tanh": lambda x: 0.5 * (1.0 + np.tanh(tanh_arg(x))) + 0.5 * x / np.cosh(tanh_arg(x))
    ** 2 * np.sqrt(2.0 / np.pi) * (1.0 + 3 * 0.044715 * x * x),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(FORMULAS))
def test_activation_forward_and_vjp_formulas(name: str, dtype: str) -> None:
    factory, formula = FORMULAS[name]
    layer = factory()
    rng = np.random.default_rng(11)
    x_np = np.concatenate([rng.uniform(-4, 4, size=(2, 6)), [[0.0, -0.0, 1e-3, -1e-3, 8.0, -8.0]]])
    x_np = x_np.astype(dtype).astype(np.float64)
    v_np = rng.normal(size=x_np.shape).astype(dtype).astype(np.float64)
    x, v = on_backend(x_np, dtype), on_backend(v_np, dtype)
    xp = rp.array_namespace(x=x)
    rtol = 1e-14 if dtype == "float64" else 1e-6
    assert_close(layer.forward(x, xp), formula(x_np), dtype=dtype, rtol=rtol, atol=rtol)
    assert_close(layer(x), formula(x_np), dtype=dtype, rtol=rtol, atol=rtol)
    assert_close(layer.vjp(x, v, xp), v_np * DERIVATIVES[name](x_np), dtype=dtype,
                 rtol=10 * rtol, atol=10 * rtol)


def test_relu_derivative_at_zero_is_zero() -> None:
    """As in torch: ReLU'(0) = 0, so the gradient at an exact zero vanishes."""
    x = on_backend(np.array([[0.0, 1.0, -1.0]]))
    v = on_backend(np.ones((1, 3)))
    assert_close(rp.ReLU().vjp(x, v, rp.array_namespace(x=x)), np.array([[0.0, 1.0, 0.0]]))


def test_layers_do_not_modify_inputs() -> None:
    rng = np.random.default_rng(12)
    x_np = rng.normal(size=(3, 2, 3))
    x = on_backend(x_np)
    v = on_backend(rng.normal(size=(3, 2, 3)))
    xp = rp.array_namespace(x=x)
    for factory, _ in ACTIVATIONS.values():
        layer = factory()
        layer.forward(x, xp)
        layer.vjp(x, v, xp)
    assert_close(x, x_np, rtol=0.0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_vjp_matches_autodiff(dtype: str) -> None:
    """Per-channel scale, 0-d shift: the constants broadcast, the vjp keeps the input's shape."""
    rng = np.random.default_rng(21)
    scale = on_backend(rng.normal(size=(3, 1, 1)), dtype)
    layer = rp.Affine(scale, on_backend(np.asarray(0.25), dtype))
    x = on_backend(rng.normal(size=(2, 3, 4, 4)), dtype)
    v = on_backend(rng.normal(size=(2, 3, 4, 4)), dtype)
    expected = rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64)
    check(layer.vjp(x, v, rp.array_namespace(x=x)), expected, dtype, "linear")
    assert layer.check_input((2, 3, 4, 4)) is None
    assert "does not broadcast" in layer.check_input((2, 5, 4, 4))
    only_shift = rp.Affine(shift=on_backend(np.asarray(1.0), dtype))
    assert_close(only_shift.vjp(x, v, rp.array_namespace(x=x)), rp.to_numpy(v), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("cls", "weight_shape", "x_shape", "settings"),
    [
        (rp.ConvTranspose2d, (4, 3, 3, 3), (2, 4, 5, 4),
         {"stride": 2, "padding": 1, "output_padding": 1}),
        (rp.ConvTranspose2d, (4, 2, 2, 3), (2, 4, 3, 3),
         {"stride": (1, 2), "padding": ((1, 0), (0, 2)), "groups": 2, "dilation": 2}),
        (rp.ConvTranspose1d, (3, 2, 4), (2, 3, 6), {"stride": 3, "output_padding": 2}),
        (rp.ConvTranspose3d, (2, 2, 2, 3, 2), (1, 2, 3, 2, 3),
         {"stride": (2, 1, 2), "padding": (1, 1, 0), "output_padding": (1, 0, 0)}),
    ],
    ids=["2d-stride", "2d-groups-dilation", "1d", "3d"],
)
def test_conv_transpose_vjp_and_adjoint(cls, weight_shape, x_shape, settings, dtype) -> None:
    """A transposed convolution's vjp (a convolution) equals the backend's VJP, and
    ``transpose`` is the adjoint of ``linear``: <A x, v> = <x, A^T v>."""
    rng = np.random.default_rng(5)
    layer = cls(on_backend(rng.normal(size=weight_shape), dtype),
                on_backend(rng.normal(size=weight_shape[1] * settings.get("groups", 1)), dtype),
                **settings)
    x = on_backend(rng.normal(size=x_shape), dtype)
    xp = rp.array_namespace(x=x)
    out_shape = layer.output_shape(x_shape)
    assert tuple(layer.forward(x, xp).shape) == out_shape
    v_np = rng.normal(size=out_shape)
    v = on_backend(v_np, dtype)
    expected = rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64)
    explicit = layer.vjp(x, v, xp)
    check(explicit, expected, dtype, "linear")
    linear = rp.to_numpy(layer.linear(x, layer.weight, None, xp)).astype(np.float64)
    lhs = float(np.sum(linear * v_np.astype(dtype)))
    rhs = float(np.sum(rp.to_numpy(x).astype(np.float64) * rp.to_numpy(explicit)))
    assert abs(lhs - rhs) <= rtol_for(dtype, "linear") * 10 * max(abs(lhs), 1.0)


def check_linear_vjp(layer: rp.layers.Layer, x, rng: np.random.Generator, dtype: str) -> None:
    """``layer.vjp`` at ``x`` for a random ``v`` equals the backend's VJP (a piecewise
    linear map: the "linear" tolerance)."""
    xp = rp.array_namespace(x=x)
    out = layer.forward(x, xp)
    v = on_backend(rng.normal(size=tuple(out.shape)), dtype)
    expected = rp.to_numpy(autodiff_vjp(layer, x, v)).astype(np.float64)
    check(layer.vjp(x, v, xp), expected, dtype, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("layer", "shape"),
    [(rp.ZeroPad2d(((1, 0), (2, 3))), (2, 3, 4, 5)), (rp.ZeroPad1d(2), (2, 3, 4)),
     (rp.ZeroPad3d(((0, 1), (2, 0), (1, 1))), (1, 2, 2, 3, 2))],
    ids=["2d", "1d", "3d"],
)
def test_zero_pad_vjp_is_the_crop(layer, shape, dtype) -> None:
    rng = np.random.default_rng(6)
    x = on_backend(rng.normal(size=shape), dtype)
    check_linear_vjp(layer, x, rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (rp.Upsample(scale_factor=2), (2, 3, 3, 4)),
        (rp.Upsample(size=(5, 7), mode="bilinear"), (2, 2, 3, 4)),
        (rp.Upsample(scale_factor=(1.5, 2.0), mode="bilinear", align_corners=True), (1, 2, 4, 3)),
        (rp.Upsample(scale_factor=3, mode="linear"), (2, 2, 4)),
    ],
    ids=["nearest", "bilinear-size", "bilinear-corners", "linear-1d"],
)
def test_upsample_vjp_matches_autodiff(layer, shape, dtype) -> None:
    rng = np.random.default_rng(7)
    x = on_backend(rng.normal(size=shape), dtype)
    check_linear_vjp(layer, x, rng, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("layer", "shape"),
    [(rp.AdaptiveMaxPool2d((2, 1)), (2, 3, 4, 5)), (rp.AdaptiveMaxPool1d(3), (2, 3, 6)),
     (rp.AdaptiveMaxPool2d((None, 1)), (2, 3, 4, 5)),
     (rp.AdaptiveMaxPool2d((3, 4)), (2, 3, 7, 5)), (rp.AdaptiveMaxPool1d(4), (2, 3, 7)),
     (rp.AdaptiveMaxPool3d((2, 3, 2)), (1, 2, 3, 5, 4))],
    ids=["2d", "1d", "2d-keep-height", "2d-overlapping", "1d-overlapping", "3d-overlapping"],
)
def test_adaptive_max_pool_vjp_matches_autodiff(layer, shape, dtype) -> None:
    rng = np.random.default_rng(8)
    spread = rng.permutation(np.prod(shape)).reshape(shape) * 0.25 - 3.0  # no ties
    x = on_backend(spread, dtype)
    check_linear_vjp(layer, x, rng, dtype)


# -- transformer layers ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("layer", "shape"),
    [(rp.Slice(2, 1, 4), (2, 3, 5)), (rp.Slice(-1, 0, 5, 2), (2, 3, 5)),
     (rp.Slice(1, 0, 1), (2, 3, 5)), (rp.Broadcast((3, 2, 5)), (2, 3, 1, 5)),
     (rp.Broadcast((4, 3)), (2, 1, 1))],
    ids=["slice", "slice-step", "class-token", "broadcast", "broadcast-two-axes"],
)
def test_slice_and_broadcast_vjp_match_autodiff(layer, shape, dtype) -> None:
    rng = np.random.default_rng(13)
    check_linear_vjp(layer, on_backend(rng.normal(size=shape), dtype), rng, dtype)


def test_slice_and_broadcast_refuse_what_they_cannot_do() -> None:
    with pytest.raises(ValueError, match="axis 0"):
        rp.Slice(0, 1)
    with pytest.raises(ValueError, match="step"):
        rp.Slice(1, 0, 2, 0)
    assert rp.Broadcast((3, 4)).check_input((2, 2, 4)) is not None
    assert rp.Broadcast((3, 4)).check_input((2, 1, 4)) is None
    assert rp.Slice(3, 0, 1).check_input((2, 3)) is not None


def _norm_layers(dtype: str) -> dict[str, rp.layers.Layer]:
    rng = np.random.default_rng(12)

    def a(*shape):
        return on_backend(rng.normal(size=shape), dtype)

    return {
        "LayerNorm": rp.LayerNorm(5, a(5), a(5)),
        "LayerNorm-plain": rp.LayerNorm(5, eps=1e-3),
        "LayerNorm-2d": rp.LayerNorm((3, 5), a(3, 5), a(3, 5)),
        "RMSNorm": rp.RMSNorm(5, a(5)),
        "Softmax": rp.Softmax(),
        "Softmax-axis1": rp.Softmax(axis=1),
    }


@pytest.mark.parametrize("name", list(_norm_layers("float64")))
@pytest.mark.parametrize("dtype", DTYPES)
def test_normalisation_vjp_matches_autodiff(name: str, dtype: str) -> None:
    layer = _norm_layers(dtype)[name]
    rng = np.random.default_rng(3)
    x = on_backend(rng.normal(size=(2, 3, 5)), dtype)
    v = on_backend(rng.normal(size=(2, 3, 5)), dtype)
    xp = rp.array_namespace(x=x)
    check(layer.vjp(x, v, xp), rp.to_numpy(autodiff_vjp(layer, x, v)), dtype, "smooth")


def test_normalisation_forward_formulas() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 5))
    w, b = rng.normal(size=5), rng.normal(size=5)
    centred = x - x.mean(-1, keepdims=True)
    layer_norm = centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + 1e-5) * w + b
    got = rp.LayerNorm(5, on_backend(w), on_backend(b))(on_backend(x))
    assert_close(got, layer_norm)
    rms = x / np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-6) * w
    assert_close(rp.RMSNorm(5, on_backend(w))(on_backend(x)), rms)
    softmax = np.exp(x) / np.exp(x).sum(-1, keepdims=True)
    assert_close(rp.Softmax()(on_backend(x)), softmax)
    huge = on_backend(np.array([[1000.0, 1000.0, -1000.0]]))  # no overflow
    assert_close(rp.Softmax()(huge), [[0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="weight must have shape"):
        rp.LayerNorm(4, on_backend(np.ones(5)))
    with pytest.raises(ValueError, match="RMSNorm has no bias"):
        rp.RMSNorm(5, on_backend(w), on_backend(b))
    with pytest.raises(ValueError, match="Softmax axis must be an int other than 0"):
        rp.Softmax(axis=0)


@pytest.mark.parametrize("kind", ["multiply2", "multiply3", "matmul"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_product_vjps_match_autodiff(kind: str, dtype: str) -> None:
    rng = np.random.default_rng(5)
    if kind == "matmul":
        layer: rp.layers.Merge = rp.MatMul()
        shapes = [(2, 3, 4, 5), (2, 3, 5, 6)]
        out_shape = (2, 3, 4, 6)
    else:
        layer = rp.Multiply()
        count = 2 if kind == "multiply2" else 3
        shapes, out_shape = [(2, 4, 5)] * count, (2, 4, 5)
    xs = [on_backend(rng.normal(size=shape), dtype) for shape in shapes]
    v = on_backend(rng.normal(size=out_shape), dtype)
    xp = rp.array_namespace(x=xs[0])
    assert layer.check_inputs([tuple(x.shape) for x in xs]) is None
    got = layer.vjp_many(xs, v, xp)
    for k in range(len(xs)):
        def partial(a, k=k):
            # finite differences stack copies of the batch: the other inputs follow suit
            copies = a.shape[0] // xs[k].shape[0]
            others = [x if copies == 1 else xp.concat([x] * copies, axis=0) for x in xs]
            return layer.forward_many([a if j == k else x for j, x in enumerate(others)], xp)

        check(got[k], rp.to_numpy(rp.vjp(partial, xs[k], v)), dtype, "smooth")
    assert rp.MatMul().check_inputs([(2, 3, 4), (2, 5, 6)]) is not None
    assert rp.Multiply().check_inputs([(2, 3)]) is not None


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_of_a_transformer_block_matches_autodiff(dtype: str) -> None:
    """LayerNorm, attention (two MatMuls, a Softmax), residual sums, RMSNorm and a gated
    MLP: rp.gradient chains the layers' vjps; the oracle differentiates the forward."""
    from test_io import _attention_model

    rng = np.random.default_rng(8)
    model, shape = _attention_model(rng, dtype)
    x = on_backend(rng.normal(size=shape), dtype)
    xp = rp.array_namespace(x=x)
    cotangent = np.zeros((shape[0], 2))
    cotangent[:, 1] = 1.0
    expected = rp.vjp(lambda a: model.forward(a, xp), x, on_backend(cotangent, dtype))
    check(rp.gradient(model, x, 1), rp.to_numpy(expected), dtype, "smooth")
