"""Autodiff adapters ``rp.vjp`` and ``rp.grad`` against analytic derivatives.

The oracle is always a closed-form derivative evaluated with NumPy in float64 on the
same input values (float32 inputs are widened, not re-drawn). torch and JAX differentiate
exactly; NumPy, array-api-strict (and CuPy) use central finite differences, whose
documented accuracy (``relprop/autodiff/finite_differences.py``) sets the tolerances:
exact up to rounding for linear maps, O(h^2) for smooth ones.

Tolerances are relative to the largest entry of the expected result (``atol = rtol *
max|expected|``) so that entries that are zero or nearly so do not demand impossible
relative accuracy.
"""

from __future__ import annotations

import numpy as np
import pytest
from array_api_compat import device
from helpers import BACKEND, assert_close, on_backend

import relprop as rp
from relprop.autodiff import finite_differences

EXACT = BACKEND in ("torch", "jax")
"""Whether the backend differentiates exactly (autograd, jax.vjp)."""

BATCHES = [1, 5]
DTYPES = ["float64", "float32"]


def rtol_for(dtype: str, kind: str, exact: bool = EXACT) -> float:
    """Relative tolerance for a derivative of ``kind`` ("linear" or "smooth")."""
    if exact:
        return 1e-12 if dtype == "float64" else 1e-6
    if dtype == "float64":
        return 1e-10 if kind == "linear" else 1e-8
    return 1e-3


def check(actual, expected: np.ndarray, dtype: str, kind: str, exact: bool = EXACT) -> None:
    rtol = rtol_for(dtype, kind, exact)
    scale = float(np.max(np.abs(expected))) or 1.0
    assert_close(actual, expected, dtype=dtype, rtol=rtol, atol=rtol * scale)


def draw(rng: np.random.Generator, shape: tuple, dtype: str, low: float = -2.0,
         high: float = 2.0) -> tuple[object, np.ndarray]:
    """A backend array and its exact float64 NumPy values (rounded to ``dtype`` first)."""
    values = rng.uniform(low, high, size=shape).astype(dtype).astype(np.float64)
    return on_backend(values, dtype), values


# ---------------------------------------------------------------------------------------
# functions written with the array API, and their analytic derivatives (NumPy float64)
# ---------------------------------------------------------------------------------------

ELEMENTWISE = {
    # name: (fn of a backend array, derivative of NumPy float64 values)
    "sin": (lambda a: rp.array_namespace(x=a).sin(a), np.cos),
    "cube": (lambda a: a**3, lambda x: 3.0 * x**2),
    "tanh": (lambda a: rp.array_namespace(x=a).tanh(a), lambda x: 1.0 - np.tanh(x) ** 2),
    "exp": (lambda a: rp.array_namespace(x=a).exp(a), np.exp),
}


def coupled(A):
    """``f_k(x) = sin(a_k . x) * x_0`` for the rows ``a_k`` of ``A``: output (batch, K)."""

    def fn(a):
        xp = rp.array_namespace(x=a)
        return xp.sin(xp.matmul(a, xp.matrix_transpose(A))) * a[:, :1]

    return fn


def coupled_vjp(A: np.ndarray, x: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Analytic ``J^T v`` of :func:`coupled`."""
    z = x @ A.T  # (batch, K)
    result = (v * np.cos(z) * x[:, :1]) @ A
    result[:, 0] += np.sum(v * np.sin(z), axis=1)
    return result


def coupled_3d(a):
    """``f_ij(x) = x_ij * x_00 + sin(x_ij)`` on samples of shape (2, 3)."""
    xp = rp.array_namespace(x=a)
    return a * a[:, :1, :1] + xp.sin(a)


def coupled_3d_vjp(x: np.ndarray, v: np.ndarray) -> np.ndarray:
    result = v * x[:, :1, :1] + v * np.cos(x)
    result[:, 0, 0] += np.sum(v * x, axis=(1, 2))
    return result


# ---------------------------------------------------------------------------------------
# vjp
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_vjp_linear_map(batch: int, dtype: str) -> None:
    rng = np.random.default_rng(10 + batch)
    A_np = rng.normal(size=(3, 4)).astype(dtype).astype(np.float64)
    A = on_backend(A_np, dtype)
    x, _ = draw(rng, (batch, 4), dtype)
    v, v_np = draw(rng, (batch, 3), dtype)

    def fn(a):
        xp = rp.array_namespace(x=a)
        return xp.matmul(a, xp.matrix_transpose(A))

    check(rp.vjp(fn, x, v), v_np @ A_np, dtype, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_vjp_linear_map_of_3d_samples(batch: int, dtype: str) -> None:
    """A linear map of (2, 3) samples to (4,) outputs: the result has the samples' shape."""
    rng = np.random.default_rng(20 + batch)
    A_np = rng.normal(size=(4, 6)).astype(dtype).astype(np.float64)
    A = on_backend(A_np, dtype)
    x, _ = draw(rng, (batch, 2, 3), dtype)
    v, v_np = draw(rng, (batch, 4), dtype)

    def fn(a):
        xp = rp.array_namespace(x=a)
        return xp.matmul(xp.reshape(a, (a.shape[0], 6)), xp.matrix_transpose(A))

    check(rp.vjp(fn, x, v), (v_np @ A_np).reshape(batch, 2, 3), dtype, "linear")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_vjp_elementwise(name: str, batch: int, dtype: str) -> None:
    fn, derivative = ELEMENTWISE[name]
    rng = np.random.default_rng(30 + batch)
    x, x_np = draw(rng, (batch, 2, 3), dtype)
    v, v_np = draw(rng, (batch, 2, 3), dtype)
    check(rp.vjp(fn, x, v), v_np * derivative(x_np), dtype, "smooth")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_vjp_coupled_nonlinear(batch: int, dtype: str) -> None:
    """Outputs that mix every input entry non-linearly: a dense, non-diagonal Jacobian."""
    rng = np.random.default_rng(40 + batch)
    A_np = rng.normal(scale=0.7, size=(3, 4)).astype(dtype).astype(np.float64)
    x, x_np = draw(rng, (batch, 4), dtype)
    v, v_np = draw(rng, (batch, 3), dtype)
    result = rp.vjp(coupled(on_backend(A_np, dtype)), x, v)
    check(result, coupled_vjp(A_np, x_np, v_np), dtype, "smooth")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_vjp_coupled_3d_samples(batch: int, dtype: str) -> None:
    rng = np.random.default_rng(50 + batch)
    x, x_np = draw(rng, (batch, 2, 3), dtype)
    v, v_np = draw(rng, (batch, 2, 3), dtype)
    check(rp.vjp(coupled_3d, x, v), coupled_3d_vjp(x_np, v_np), dtype, "smooth")


def test_vjp_of_constant_function_is_zero() -> None:
    rng = np.random.default_rng(1)
    x, _ = draw(rng, (3, 4), "float64")
    v, _ = draw(rng, (3, 2), "float64")

    def constant(a):
        return rp.array_namespace(x=a).ones((a.shape[0], 2), dtype=a.dtype, device=device(a))

    assert_close(rp.vjp(constant, x, v), np.zeros((3, 4)), atol=0.0)


def test_vjp_does_not_modify_inputs() -> None:
    rng = np.random.default_rng(2)
    x, x_np = draw(rng, (2, 2, 3), "float64")
    v, v_np = draw(rng, (2, 2, 3), "float64")
    rp.vjp(coupled_3d, x, v)
    assert_close(x, x_np, rtol=0.0)
    assert_close(v, v_np, rtol=0.0)


# ---------------------------------------------------------------------------------------
# grad
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_grad_per_sample_scalar(batch: int, dtype: str) -> None:
    """``f(x) = sum_k sin(a_k . x) * x_0`` (batch,): each sample's own gradient."""
    rng = np.random.default_rng(60 + batch)
    A_np = rng.normal(scale=0.7, size=(3, 4)).astype(dtype).astype(np.float64)
    A = on_backend(A_np, dtype)
    x, x_np = draw(rng, (batch, 4), dtype)
    inner = coupled(A)

    def fn(a):
        return rp.array_namespace(x=a).sum(inner(a), axis=1)

    expected = coupled_vjp(A_np, x_np, np.ones((batch, 3)))
    check(rp.grad(fn, x), expected, dtype, "smooth")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch", BATCHES)
def test_grad_sums_vector_outputs(batch: int, dtype: str) -> None:
    """For (batch, 2, 3) outputs, grad is the gradient of the sum of all outputs."""
    rng = np.random.default_rng(70 + batch)
    x, x_np = draw(rng, (batch, 2, 3), dtype)
    expected = coupled_3d_vjp(x_np, np.ones((batch, 2, 3)))
    check(rp.grad(coupled_3d, x), expected, dtype, "smooth")


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_of_quadratic_form(dtype: str) -> None:
    """``f(x) = x^T Q x`` per sample: gradient ``(Q + Q^T) x`` (a quadratic, so central
    differences are exact up to rounding)."""
    rng = np.random.default_rng(80)
    Q_np = rng.normal(size=(4, 4)).astype(dtype).astype(np.float64)
    Q = on_backend(Q_np, dtype)
    x, x_np = draw(rng, (5, 4), dtype)

    def fn(a):
        xp = rp.array_namespace(x=a)
        return xp.sum(xp.matmul(a, Q) * a, axis=1)

    check(rp.grad(fn, x), x_np @ (Q_np + Q_np.T), dtype, "linear")


# ---------------------------------------------------------------------------------------
# finite differences: chunking, and the module on every backend
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 4 * 24], ids=["one-direction", "uneven-4-2"])
def test_finite_differences_chunking_same_result(monkeypatch: pytest.MonkeyPatch,
                                                 limit: int) -> None:
    """Small ``MAX_CHUNK_ELEMENTS`` changes nothing: each direction stacks batch 4 x 6
    entries = 24, so the limits give chunks of 1 direction and of 4 + 2 directions. The
    module is written with the array API, so it runs on every backend."""
    rng = np.random.default_rng(90)
    x, x_np = draw(rng, (4, 2, 3), "float64")
    v, v_np = draw(rng, (4, 2, 3), "float64")
    xp = rp.array_namespace(x=x)
    whole = finite_differences.vjp(coupled_3d, x, v, xp=xp)
    calls = []

    def counted(a):
        calls.append(a.shape[0])
        return coupled_3d(a)

    monkeypatch.setattr(finite_differences, "MAX_CHUNK_ELEMENTS", limit)
    chunked = finite_differences.vjp(counted, x, v, xp=xp)
    # fn sees 2 * directions * batch stacked samples per call
    assert calls == ([2 * 4] * 6 if limit == 1 else [2 * 4 * 4, 2 * 2 * 4]), calls
    expected = coupled_3d_vjp(x_np, v_np)
    check(chunked, expected, "float64", "smooth", exact=False)
    assert_close(chunked, rp.to_numpy(whole), rtol=1e-13, atol=1e-13 * np.abs(expected).max())


@pytest.mark.skipif(EXACT, reason="torch and jax differentiate exactly, not by finite differences")
def test_vjp_chunked_finite_differences(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rp.vjp`` itself takes the chunked path on finite-difference backends."""
    rng = np.random.default_rng(91)
    A_np = rng.normal(scale=0.7, size=(3, 4))
    x, x_np = draw(rng, (5, 4), "float64")
    v, v_np = draw(rng, (5, 3), "float64")
    fn = coupled(on_backend(A_np))
    whole = rp.vjp(fn, x, v)
    monkeypatch.setattr(finite_differences, "MAX_CHUNK_ELEMENTS", 11)
    chunked = rp.vjp(fn, x, v)
    check(chunked, coupled_vjp(A_np, x_np, v_np), "float64", "smooth")
    assert_close(chunked, rp.to_numpy(whole), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_differences_documented_accuracy_on_every_backend(dtype: str) -> None:
    """The finite-difference module meets its documented accuracy on any backend (here
    compared with the analytic derivative, not with the backend's autodiff)."""
    rng = np.random.default_rng(92)
    A_np = rng.normal(size=(3, 4)).astype(dtype).astype(np.float64)
    A = on_backend(A_np, dtype)
    x, x_np = draw(rng, (5, 4), dtype)
    v, v_np = draw(rng, (5, 3), dtype)
    xp = rp.array_namespace(x=x)

    def linear(a):
        return xp.matmul(a, xp.matrix_transpose(A))

    fd = finite_differences.vjp
    check(fd(linear, x, v, xp=xp), v_np @ A_np, dtype, "linear", exact=False)
    check(fd(coupled(A), x, v, xp=xp), coupled_vjp(A_np, x_np, v_np), dtype, "smooth",
          exact=False)


def test_finite_difference_step() -> None:
    """``h = eps^(1/3)``: ~6e-6 in float64, ~5e-3 in float32 (as documented)."""
    xp = rp.array_namespace(x=on_backend(np.zeros(1)))
    assert finite_differences.step_scale(xp, xp.float64) == pytest.approx(6.06e-6, rel=1e-2)
    assert finite_differences.step_scale(xp, xp.float32) == pytest.approx(4.92e-3, rel=1e-2)


# ---------------------------------------------------------------------------------------
# backend specifics
# ---------------------------------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "torch", reason="torch autograd specifics")
def test_torch_user_tensor_untouched() -> None:
    """A user tensor with requires_grad=True: values, flag and .grad are left alone."""
    rng = np.random.default_rng(100)
    _, x_np = draw(rng, (3, 2, 3), "float64")
    x = on_backend(x_np).requires_grad_(True)
    v = on_backend(rng.normal(size=(3, 2, 3)))
    result = rp.vjp(coupled_3d, x, v)
    check(result, coupled_3d_vjp(x_np, rp.to_numpy(v)), "float64", "smooth")
    assert x.grad is None
    assert x.requires_grad
    assert x.is_leaf
    np.testing.assert_array_equal(rp.to_numpy(x), x_np)
    assert not result.requires_grad, "the vjp should not carry an autograd graph"
    g = rp.grad(lambda a: (a**2).sum(dim=(1, 2)), x)
    check(g, 2.0 * x_np, "float64", "linear")
    assert x.grad is None
    plain = on_backend(x_np)  # no requires_grad: the flag must stay off
    check(rp.vjp(coupled_3d, plain, v), coupled_3d_vjp(x_np, rp.to_numpy(v)), "float64",
          "smooth")
    assert not plain.requires_grad
    assert plain.grad is None


@pytest.mark.skipif(BACKEND != "torch", reason="torch autograd specifics")
def test_torch_vjp_inside_no_grad() -> None:
    """The adapter works even when the caller disabled autograd."""
    import torch

    rng = np.random.default_rng(101)
    x, x_np = draw(rng, (2, 4), "float64")
    v, v_np = draw(rng, (2, 4), "float64")
    with torch.no_grad():
        result = rp.vjp(ELEMENTWISE["sin"][0], x, v)
    check(result, v_np * np.cos(x_np), "float64", "smooth")


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit specifics")
@pytest.mark.parametrize("dtype", DTYPES)
def test_jax_vjp_under_jit(dtype: str) -> None:
    import jax

    rng = np.random.default_rng(110)
    A_np = rng.normal(scale=0.7, size=(3, 4)).astype(dtype).astype(np.float64)
    fn = coupled(on_backend(A_np, dtype))
    x, x_np = draw(rng, (5, 4), dtype)
    v, v_np = draw(rng, (5, 3), dtype)
    eager = rp.vjp(fn, x, v)
    jitted = jax.jit(lambda a, b: rp.vjp(fn, a, b))(x, v)
    expected = coupled_vjp(A_np, x_np, v_np)
    check(eager, expected, dtype, "smooth")
    check(jitted, expected, dtype, "smooth")
    rtol = 1e-13 if dtype == "float64" else 1e-6
    assert_close(jitted, rp.to_numpy(eager), dtype=dtype, rtol=rtol,
                 atol=rtol * np.abs(expected).max())
    g = jax.jit(lambda a: rp.grad(lambda b: rp.array_namespace(x=b).sum(fn(b), axis=1), a))(x)
    check(g, coupled_vjp(A_np, x_np, np.ones((5, 3))), dtype, "smooth")
