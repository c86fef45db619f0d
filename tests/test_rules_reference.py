"""Every LRP rule against an independent reference: explicit per-neuron loops in float64.

The reference below is plain Python scalar arithmetic over output neurons ``j`` and input
neurons ``i`` (no matrix code, none of the library's code path), written from zennit's
conventions (DESIGN.md §5):

- stabiliser ``s(z) = z + eps * sgn(z)`` with ``sgn(0) = +1``;
- ZPlus: ``z = W+ x+ + W- x- + b+``; AlphaBeta's negative part ``z = W- x+ + W+ x- + b-``;
- Gamma: ``Wu = W + g W+``, ``Wd = W + g W-`` (biases alike), the sign of the real
  ``z = W x + b`` chooses ``z_p = Wu x+ + Wd x- + bu`` or ``z_n = Wd x+ + Wu x- + bd``;
- ZBox: ``z = (W x + b) - (W+ l + b+) - (W- h + b-)``;
- WSquare: ``W^2`` and ``b^2``, the input values ignored; Flat: all weights 1, no bias.

Single layers are checked with inputs of both signs and with non-negative inputs through
both code paths (``nonnegative=True/False``); whole networks compose the per-layer loops
with the same layer -> rule assignment as the composite, starting from ``R = f_c(x)``.
Then theory: conservation, LRP-0 == gradient x input (also against autodiff).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend, random_weights

import relprop as rp
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

RTOL = {"float64": 1e-10, "float32": 1e-4}
ATOL_SCALE = {"float64": 1e-12, "float32": 2e-5}
"""Absolute tolerance relative to the largest reference entry (entries that cancel)."""

SIZES = [6, 8, 7, 4]
N_IN, N_OUT = 6, 8  # the first layer of the network: JAX compiles each shape once
LOW_FEATURES = -0.5 * np.arange(1, N_IN + 1)  # exactly representable in float32
HIGH_FEATURES = 1.0 + 0.25 * np.arange(N_IN)


def check(actual, expected: np.ndarray, dtype: str = "float64") -> None:
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    assert_close(actual, expected, dtype=dtype, rtol=RTOL[dtype], atol=ATOL_SCALE[dtype] * scale)


def rounded(a: np.ndarray | None, dtype: str) -> np.ndarray | None:
    """``a`` as the model sees it in ``dtype``, back in float64 for the reference."""
    return None if a is None else np.asarray(a).astype(dtype).astype(np.float64)


# --------------------------------------------------------------------------------------
# The reference: per-neuron loops, Python floats only
# --------------------------------------------------------------------------------------


def _sgn(z: float) -> float:
    return 1.0 if z >= 0.0 else -1.0


def _stab(z: float, eps: float) -> float:
    return z + eps * _sgn(z)


def _p(a: float) -> float:
    return a if a > 0.0 else 0.0


def _n(a: float) -> float:
    return a if a < 0.0 else 0.0


def _lists(W, b, x, R):
    W = np.asarray(W, dtype=np.float64).tolist()
    n_out = len(W)
    b = [0.0] * n_out if b is None else np.asarray(b, dtype=np.float64).tolist()
    return W, b, np.asarray(x, dtype=np.float64).tolist(), np.asarray(R, dtype=np.float64).tolist()


def ref_epsilon(W, b, x, R, *, eps: float = 1e-6, bias: bool = True) -> np.ndarray:
    W, b, x, R = _lists(W, b, x, R)
    out = np.zeros((len(x), len(x[0])))
    for n in range(len(x)):
        for j in range(len(W)):
            z = b[j] if bias else 0.0
            for i in range(len(x[n])):
                z += W[j][i] * x[n][i]
            s = R[n][j] / _stab(z, eps)
            for i in range(len(x[n])):
                out[n, i] += x[n][i] * W[j][i] * s
    return out


def ref_alphabeta(W, b, x, R, *, alpha: float, beta: float, eps: float = 1e-6,
                  bias: bool = True) -> np.ndarray:
    W, b, x, R = _lists(W, b, x, R)
    out = np.zeros((len(x), len(x[0])))
    for n in range(len(x)):
        for j in range(len(W)):
            z_a = _p(b[j]) if bias else 0.0
            z_b = _n(b[j]) if bias else 0.0
            for i in range(len(x[n])):
                z_a += _p(W[j][i]) * _p(x[n][i]) + _n(W[j][i]) * _n(x[n][i])
                z_b += _n(W[j][i]) * _p(x[n][i]) + _p(W[j][i]) * _n(x[n][i])
            s_a = R[n][j] / _stab(z_a, eps)
            s_b = R[n][j] / _stab(z_b, eps)
            for i in range(len(x[n])):
                pos_part = _p(x[n][i]) * _p(W[j][i]) + _n(x[n][i]) * _n(W[j][i])
                neg_part = _p(x[n][i]) * _n(W[j][i]) + _n(x[n][i]) * _p(W[j][i])
                out[n, i] += alpha * pos_part * s_a - beta * neg_part * s_b
    return out


def ref_zplus(W, b, x, R, *, eps: float = 1e-6, bias: bool = True) -> np.ndarray:
    W, b, x, R = _lists(W, b, x, R)
    out = np.zeros((len(x), len(x[0])))
    for n in range(len(x)):
        for j in range(len(W)):
            z = _p(b[j]) if bias else 0.0
            for i in range(len(x[n])):
                z += _p(W[j][i]) * _p(x[n][i]) + _n(W[j][i]) * _n(x[n][i])
            s = R[n][j] / _stab(z, eps)
            for i in range(len(x[n])):
                out[n, i] += (_p(x[n][i]) * _p(W[j][i]) + _n(x[n][i]) * _n(W[j][i])) * s
    return out


def ref_gamma(W, b, x, R, *, gamma: float, eps: float = 1e-6, bias: bool = True) -> np.ndarray:
    W, b, x, R = _lists(W, b, x, R)
    out = np.zeros((len(x), len(x[0])))
    for n in range(len(x)):
        for j in range(len(W)):
            bj = b[j] if bias else 0.0
            z = b[j]  # the real output decides the sign, bias included (zennit's NoMod term)
            z_p = bj + gamma * _p(bj)
            z_n = bj + gamma * _n(bj)
            for i in range(len(x[n])):
                w, xi = W[j][i], x[n][i]
                up, down = w + gamma * _p(w), w + gamma * _n(w)
                z += w * xi
                z_p += up * _p(xi) + down * _n(xi)
                z_n += down * _p(xi) + up * _n(xi)
            r_p = (R[n][j] if z > 0.0 else 0.0) / _stab(z_p, eps)
            r_n = (R[n][j] if z < 0.0 else 0.0) / _stab(z_n, eps)
            for i in range(len(x[n])):
                w, xi = W[j][i], x[n][i]
                up, down = w + gamma * _p(w), w + gamma * _n(w)
                out[n, i] += (_p(xi) * up + _n(xi) * down) * r_p
                out[n, i] += (_p(xi) * down + _n(xi) * up) * r_n
    return out


def ref_zbox(W, b, x, R, *, low, high, eps: float = 1e-6, bias: bool = True) -> np.ndarray:
    W, b, x, R = _lists(W, b, x, R)
    n_in = len(x[0])
    lows = np.broadcast_to(np.asarray(low, dtype=np.float64), (n_in,)).tolist()
    highs = np.broadcast_to(np.asarray(high, dtype=np.float64), (n_in,)).tolist()
    out = np.zeros((len(x), n_in))
    for n in range(len(x)):
        for j in range(len(W)):
            bj = b[j] if bias else 0.0
            z = bj - _p(bj) - _n(bj)
            for i in range(n_in):
                w = W[j][i]
                z += w * x[n][i] - _p(w) * lows[i] - _n(w) * highs[i]
            s = R[n][j] / _stab(z, eps)
            for i in range(n_in):
                w = W[j][i]
                out[n, i] += (x[n][i] * w - lows[i] * _p(w) - highs[i] * _n(w)) * s
    return out


def ref_wsquare(W, b, x, R, *, eps: float = 1e-6, bias: bool = True) -> np.ndarray:
    W, b, x, R = _lists(W, b, x, R)
    out = np.zeros((len(x), len(x[0])))
    for n in range(len(x)):
        for j in range(len(W)):
            z = b[j] * b[j] if bias else 0.0
            for i in range(len(x[n])):
                z += W[j][i] * W[j][i]  # times the input 1, not x
            s = R[n][j] / _stab(z, eps)
            for i in range(len(x[n])):
                out[n, i] += W[j][i] * W[j][i] * s
    return out


def ref_flat(W, b, x, R, *, eps: float = 1e-6) -> np.ndarray:
    W, b, x, R = _lists(W, b, x, R)
    out = np.zeros((len(x), len(x[0])))
    for n in range(len(x)):
        for j in range(len(W)):
            z = 0.0  # weights 1, inputs 1, no bias
            for _ in range(len(x[n])):
                z += 1.0
            s = R[n][j] / _stab(z, eps)
            for i in range(len(x[n])):
                out[n, i] += s
    return out


def ref_norm(A, x, R, *, eps: float = 1e-6) -> np.ndarray:
    """Norm on the parameter-free linear map ``x -> A x``."""
    return ref_epsilon(A, None, x, R, eps=eps)


def ref_gradient(A, x, R) -> np.ndarray:
    A, _, x, R = _lists(A, None, x, R)
    out = np.zeros((len(x), len(x[0])))
    for n in range(len(x)):
        for j in range(len(A)):
            for i in range(len(x[n])):
                out[n, i] += A[j][i] * R[n][j]
    return out


def ref_dense_forward(W, b, x) -> np.ndarray:
    W, b, x, _ = _lists(W, b, x, np.zeros(1))
    out = np.zeros((len(x), len(W)))
    for n in range(len(x)):
        for j in range(len(W)):
            z = b[j]
            for i in range(len(x[n])):
                z += W[j][i] * x[n][i]
            out[n, j] = z
    return out


ACTIVATIONS: dict[type, Callable[[float], float]] = {
    rp.ReLU: lambda t: t if t > 0.0 else 0.0,
    rp.Tanh: math.tanh,
    rp.Sigmoid: lambda t: 1.0 / (1.0 + math.exp(-t)),
    rp.LeakyReLU: lambda t: t if t > 0.0 else 0.01 * t,
}


def ref_network(params, x, activation=rp.ReLU) -> list[np.ndarray]:
    """``[x, z1, a1, z2, a2, ..., zL]``: the input of every layer, then the output."""
    acts = [np.asarray(x, dtype=np.float64)]
    scalar = ACTIVATIONS[activation]
    for k, (W, b) in enumerate(params):
        if k:
            acts.append(np.vectorize(scalar, otypes=[np.float64])(acts[-1]))
        acts.append(ref_dense_forward(W, b, acts[-1]))
    return acts


def ref_lrp(params, x, R_out, dense_refs, activation=rp.ReLU) -> list[np.ndarray]:
    """``[R_0, ..., R_L]``: per-layer loops composed, activations Pass."""
    acts = ref_network(params, x, activation)
    layers = []
    for k, (W, b) in enumerate(params):
        if k:
            layers.append(None)
        layers.append((W, b, dense_refs[k]))
    relevance = [np.asarray(R_out, dtype=np.float64)]
    for index in range(len(layers) - 1, -1, -1):
        if layers[index] is None:
            relevance.append(relevance[-1])  # Pass
        else:
            W, b, ref = layers[index]
            relevance.append(ref(W, b, acts[index], relevance[-1]))
    return relevance[::-1]


def target_relevance(out: np.ndarray, target) -> np.ndarray:
    """``R = f_c(x)`` at each sample's class ``c``, zero elsewhere."""
    classes = np.argmax(out, axis=1) if target is None else np.broadcast_to(target, out.shape[:1])
    R = np.zeros_like(out)
    for n, c in enumerate(classes):
        R[n, int(c)] = out[n, int(c)]
    return R


# --------------------------------------------------------------------------------------
# The reference checked by hand on numbers small enough to verify on paper
# --------------------------------------------------------------------------------------


def test_reference_by_hand():
    W = np.array([[1.0, -2.0]])
    b = np.array([0.5])
    x = np.array([[2.0, 1.0]])  # z = 2 - 2 + 0.5 = 0.5
    R = np.array([[1.0]])
    np.testing.assert_allclose(ref_epsilon(W, b, x, R, eps=0.0), [[4.0, -4.0]])
    # z+ = 2 + 0.5 = 2.5: only the positive contribution gets relevance
    np.testing.assert_allclose(ref_zplus(W, b, x, R, eps=0.0), [[0.8, 0.0]])
    # z_a = 2.5, z_b = -2 (b- = 0): 2 * [2/2.5, 0] - 1 * [0, -2/-2]
    np.testing.assert_allclose(ref_alphabeta(W, b, x, R, alpha=2, beta=1, eps=0.0), [[1.6, -1.0]])
    # z > 0; Wu = [2, -2], bu = 1: z_p = 4 - 2 + 1 = 3
    np.testing.assert_allclose(ref_gamma(W, b, x, R, gamma=1.0, eps=0.0), [[4 / 3, -2 / 3]])
    # z = 0.5 - (1*0 + 0.5) - (-2 * 1 + 0) = 2
    np.testing.assert_allclose(ref_zbox(W, b, x, R, low=0.0, high=1.0, eps=0.0), [[1.0, -0.0]])
    np.testing.assert_allclose(ref_wsquare(W, b, x, R, eps=0.0), [[1 / 5.25, 4 / 5.25]])
    np.testing.assert_allclose(ref_flat(W, b, x, R, eps=0.0), [[0.5, 0.5]])
    assert _stab(0.0, 0.5) == 0.5 and _stab(-1.0, 0.5) == -1.5


# --------------------------------------------------------------------------------------
# Single dense layer, every rule
# --------------------------------------------------------------------------------------


def _zbox_arrays(dtype: str, shape: tuple[int, ...] = (N_IN,)) -> ZBox:
    return ZBox(on_backend(LOW_FEATURES.reshape(shape), dtype),
                on_backend(HIGH_FEATURES.reshape(shape), dtype))


# name -> (make the library rule for a dtype, the loop reference)
DENSE_RULES: dict[str, tuple[Callable[[str], object], Callable]] = {
    "epsilon-default": (lambda d: Epsilon(), partial(ref_epsilon, eps=1e-6)),
    "epsilon-0": (lambda d: Epsilon(0.0), partial(ref_epsilon, eps=0.0)),
    "epsilon-0.25": (lambda d: Epsilon(0.25), partial(ref_epsilon, eps=0.25)),
    "epsilon-3": (lambda d: Epsilon(3.0), partial(ref_epsilon, eps=3.0)),
    "epsilon-nobias": (lambda d: Epsilon(0.1, zero_params="bias"),
                       partial(ref_epsilon, eps=0.1, bias=False)),
    "zplus": (lambda d: ZPlus(), ref_zplus),
    "zplus-0.1-nobias": (lambda d: ZPlus(0.1, zero_params="bias"),
                         partial(ref_zplus, eps=0.1, bias=False)),
    "alphabeta-2-1": (lambda d: AlphaBeta(2, 1), partial(ref_alphabeta, alpha=2.0, beta=1.0)),
    "alphabeta-1-0": (lambda d: AlphaBeta(1, 0), partial(ref_alphabeta, alpha=1.0, beta=0.0)),
    "alphabeta-3-2-nobias": (lambda d: AlphaBeta(3, 2, 0.01, zero_params=["bias"]),
                             partial(ref_alphabeta, alpha=3.0, beta=2.0, eps=0.01, bias=False)),
    "gamma-0.25": (lambda d: Gamma(0.25), partial(ref_gamma, gamma=0.25)),
    "gamma-1": (lambda d: Gamma(1.0), partial(ref_gamma, gamma=1.0)),
    "gamma-0.5-nobias": (lambda d: Gamma(0.5, 0.01, zero_params="bias"),
                         partial(ref_gamma, gamma=0.5, eps=0.01, bias=False)),
    "zbox-scalar": (lambda d: ZBox(-3.0, 3.0), partial(ref_zbox, low=-3.0, high=3.0)),
    "zbox-asymmetric": (lambda d: ZBox(-1.0, 4.0, 0.01),
                        partial(ref_zbox, low=-1.0, high=4.0, eps=0.01)),
    "zbox-features": (_zbox_arrays, partial(ref_zbox, low=LOW_FEATURES, high=HIGH_FEATURES)),
    "zbox-row": (lambda d: _zbox_arrays(d, (1, N_IN)),
                 partial(ref_zbox, low=LOW_FEATURES, high=HIGH_FEATURES)),
    "zbox-nobias": (lambda d: ZBox(-2.0, 2.0, zero_params="bias"),
                    partial(ref_zbox, low=-2.0, high=2.0, bias=False)),
    "wsquare": (lambda d: WSquare(), ref_wsquare),
    "wsquare-0.5-nobias": (lambda d: WSquare(0.5, zero_params="bias"),
                           partial(ref_wsquare, eps=0.5, bias=False)),
    "flat": (lambda d: Flat(), ref_flat),
    "flat-0.5": (lambda d: Flat(0.5), partial(ref_flat, eps=0.5)),
}
DTYPES = ["float64", "float32"]


def _dense_case(seed: int, dtype: str, nonnegative: bool):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(N_OUT, N_IN))
    b = rng.normal(scale=0.5, size=N_OUT)
    x = rng.normal(size=(3, N_IN))
    if nonnegative:
        x = np.abs(x)
        x[0, 1] = 0.0
        x[2, 4] = 0.0
    R = rng.normal(size=(3, N_OUT))
    return tuple(rounded(a, dtype) for a in (W, b, x, R))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(DENSE_RULES))
def test_dense_rule_inputs_of_both_signs(name, dtype, xp):
    make, ref = DENSE_RULES[name]
    W, b, x, R = _dense_case(1, dtype, nonnegative=False)
    assert (x < 0).any() and (x > 0).any()
    layer = rp.Dense(on_backend(W, dtype), on_backend(b, dtype))
    xb = on_backend(x, dtype)
    out = layer(xb)
    got = make(dtype).relevance(layer, xb, out, on_backend(R, dtype), xp, nonnegative=False)
    check(got, ref(W, b, x, R), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("nonnegative", [True, False])
@pytest.mark.parametrize("name", list(DENSE_RULES))
def test_dense_rule_nonnegative_input(name, nonnegative, dtype, xp):
    """Both code paths (negative-part terms skipped or computed) match the reference."""
    make, ref = DENSE_RULES[name]
    W, b, x, R = _dense_case(2, dtype, nonnegative=True)
    layer = rp.Dense(on_backend(W, dtype), on_backend(b, dtype))
    xb = on_backend(x, dtype)
    got = make(dtype).relevance(layer, xb, layer(xb), on_backend(R, dtype), xp,
                                nonnegative=nonnegative)
    check(got, ref(W, b, x, R), dtype)


@pytest.mark.parametrize("name", ["epsilon-0.25", "zplus", "alphabeta-2-1", "gamma-0.25",
                                  "zbox-scalar", "wsquare", "flat"])
def test_dense_rule_without_bias(name, xp):
    make, ref = DENSE_RULES[name]
    W, _, x, R = _dense_case(3, "float64", nonnegative=False)
    layer = rp.Dense(on_backend(W))
    xb = on_backend(x)
    check(make("float64").relevance(layer, xb, layer(xb), on_backend(R), xp), ref(W, None, x, R))


EXACT_ZERO_RULES = ["epsilon-0.25", "epsilon-3", "epsilon-nobias", "gamma-0.25", "gamma-1",
                    "zbox-asymmetric", "zplus", "alphabeta-2-1"]


@pytest.mark.parametrize("name", EXACT_ZERO_RULES)
def test_dense_rule_exact_zero_denominators(name, xp):
    """Outputs that are exactly 0 with non-zero contributions: sgn(0) = +1 decides the
    stabiliser's sign (Epsilon, ZBox); Gamma gives such outputs no relevance."""
    W = np.array([[1.0, -1.0, 0.0, 0.0, 0.0, 0.0],
                  [0.0, 0.0, 2.0, -1.0, 0.0, 0.0],
                  [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
                  [0.0, 0.0, 0.0, 0.0, 1.0, 1.0],
                  [0.0, 0.0, 0.0, 0.0, 1.0, -1.0]] + [[0.25] * 6] * 3)
    b = np.array([0.0, 0.0, 0.0, 1.0, -2.0, 0.0, 0.0, 0.0])
    # for ZBox(-1, 4) the last sample is outside the box: z of row 3 is 0
    x = np.array([[1.0, 1.0, 1.0, 2.0, 1.0, -1.0],
                  [2.0, 2.0, 0.5, 1.0, 0.0, 2.0],
                  [3.0, 3.0, -1.0, -2.0, -3.0, 1.0]])
    R = np.linspace(-1.0, 1.5, 24).reshape(3, 8)
    expected = DENSE_RULES[name][1](W, b, x, R)
    layer = rp.Dense(on_backend(W), on_backend(b))
    got = DENSE_RULES[name][0]("float64").relevance(layer, on_backend(x), layer(on_backend(x)),
                                                    on_backend(R), xp)
    check(got, expected)
    # the by-hand value of one case: Epsilon(0.25), sample 0, row 0 (z = 0 -> s = +0.25)
    if name == "epsilon-0.25":
        row0 = ref_epsilon(W[:1], b[:1], x[:1], R[:1, :1], eps=0.25)
        np.testing.assert_allclose(row0, [[R[0, 0] / 0.25, -R[0, 0] / 0.25, 0, 0, 0, 0]])


def test_rules_reuse_cached_weights_correctly(xp):
    """Rules sharing one layer (cached modified weights) each still match the reference."""
    W, b, x, R = _dense_case(4, "float64", nonnegative=False)
    layer = rp.Dense(on_backend(W), on_backend(b))
    xb, Rb = on_backend(x), on_backend(R)
    for _ in range(2):
        for name in ["gamma-0.25", "gamma-1", "zplus-0.1-nobias", "zplus", "alphabeta-2-1",
                     "gamma-0.5-nobias", "wsquare-0.5-nobias", "wsquare", "epsilon-nobias"]:
            make, ref = DENSE_RULES[name]
            check(make("float64").relevance(layer, xb, layer(xb), Rb, xp), ref(W, b, x, R))


# --------------------------------------------------------------------------------------
# Parameter-free linear layers (Norm, Gradient) and activations (Pass)
# --------------------------------------------------------------------------------------


def _linear_lambda(A: np.ndarray, dtype: str, exact_vjp: bool, xp) -> rp.Lambda:
    A_b = on_backend(A, dtype)
    A_t = on_backend(A.T.copy(), dtype)

    def fn(a):
        return xp.matmul(a, A_t)

    vjp = (lambda a, v: xp.matmul(v, A_b)) if exact_vjp else None
    return rp.Lambda(fn, vjp, name="linear-map")


@pytest.mark.parametrize("exact_vjp", [True, False], ids=["exact-vjp", "autodiff"])
@pytest.mark.parametrize("rule", ["norm", "norm-0.5", "epsilon-0", "gradient"])
def test_parameter_free_linear_layer(rule, exact_vjp, xp):
    rng = np.random.default_rng(5)
    A = rng.normal(size=(N_OUT, N_IN))
    x = rng.normal(size=(3, N_IN))
    R = rng.normal(size=(3, N_OUT))
    layer = _linear_lambda(A, "float64", exact_vjp, xp)
    xb = on_backend(x)
    library_rule, expected = {
        "norm": (Norm(), ref_norm(A, x, R)),
        "norm-0.5": (Norm(0.5), ref_norm(A, x, R, eps=0.5)),
        "epsilon-0": (Epsilon(0.0), ref_norm(A, x, R, eps=0.0)),
        "gradient": (Gradient(), ref_gradient(A, x, R)),
    }[rule]
    got = library_rule.relevance(layer, xb, layer(xb), on_backend(R), xp)
    # finite differences (numpy, strict) are exact up to rounding for a linear map
    exact = exact_vjp or BACKEND in ("torch", "jax")
    scale = float(np.max(np.abs(expected)))
    assert_close(got, expected, rtol=1e-10 if exact else 1e-7,
                 atol=(1e-12 if exact else 1e-8) * scale)


def test_sum_pool_norm_is_conservative(xp):
    """A sum over pairs (a parameter-free linear map) under Norm(0): reference and conservation."""
    A = np.kron(np.eye(3), np.ones((1, 2)))  # (3, 6): y_k = x_2k + x_2k+1
    rng = np.random.default_rng(6)
    x = np.abs(rng.normal(size=(3, N_IN))) + 0.1
    R = rng.normal(size=(3, 3))
    layer = _linear_lambda(A, "float64", True, xp)
    got = Norm(0.0).relevance(layer, on_backend(x), layer(on_backend(x)), on_backend(R), xp)
    check(got, ref_norm(A, x, R, eps=0.0))
    np.testing.assert_allclose(rp.to_numpy(got).sum(axis=1), R.sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize("activation", [rp.ReLU(), rp.LeakyReLU(0.1), rp.Tanh(), rp.Sigmoid(),
                                        rp.Softplus(2.0), rp.Identity(), rp.Dropout(0.3)],
                         ids=repr)
@pytest.mark.parametrize("dtype", DTYPES)
def test_pass_on_activations(activation, dtype, xp):
    rng = np.random.default_rng(7)
    x = rounded(rng.normal(size=(3, N_IN)), dtype)
    R = rounded(rng.normal(size=(3, N_IN)), dtype)
    xb = on_backend(x, dtype)
    got = Pass().relevance(activation, xb, activation(xb), on_backend(R, dtype), xp)
    assert_close(got, R, dtype=dtype, rtol=0.0)


def test_pass_on_flatten_reshapes(xp):
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 2, 3))
    R = rng.normal(size=(2, 6))
    flatten = rp.Flatten()
    xb = on_backend(x)
    got = Pass().relevance(flatten, xb, flatten(xb), on_backend(R), xp)
    assert_close(got, R.reshape(2, 2, 3), rtol=0.0)


# --------------------------------------------------------------------------------------
# Whole networks: composites, rule=, user composites
# --------------------------------------------------------------------------------------

eps6 = partial(ref_epsilon, eps=1e-6)
flat6 = partial(ref_flat, eps=1e-6)


def _named_model(params, dtype: str) -> rp.Sequential:
    (W1, b1), (W2, b2), (W3, b3) = params
    return rp.Sequential([
        ("fc1", rp.Dense(on_backend(W1, dtype), on_backend(b1, dtype))), ("relu1", rp.ReLU()),
        ("fc2", rp.Dense(on_backend(W2, dtype), on_backend(b2, dtype))), ("relu2", rp.ReLU()),
        ("fc3", rp.Dense(on_backend(W3, dtype), on_backend(b3, dtype))),
    ])


C = rp.composites
# name -> (make the composite for a dtype, the reference rule of each of the 3 dense layers)
COMPOSITES: dict[str, tuple[Callable[[str], object], list[Callable]]] = {
    "EpsilonPlus": (lambda d: C.EpsilonPlus(), [eps6] * 3),
    "EpsilonPlus-eps0.1": (lambda d: C.EpsilonPlus(epsilon=0.1),
                           [partial(ref_epsilon, eps=0.1)] * 3),
    "EpsilonPlus-nobias": (lambda d: C.EpsilonPlus(zero_params="bias"),
                           [partial(ref_epsilon, eps=1e-6, bias=False)] * 3),
    "EpsilonPlusFlat": (lambda d: C.EpsilonPlusFlat(), [flat6, eps6, eps6]),
    "EpsilonPlusFlat-options": (lambda d: C.EpsilonPlusFlat(epsilon=0.01, stabilizer=0.1),
                                [partial(ref_flat, eps=0.1), partial(ref_epsilon, eps=0.01),
                                 partial(ref_epsilon, eps=0.01)]),
    "EpsilonAlpha2Beta1": (lambda d: C.EpsilonAlpha2Beta1(), [eps6] * 3),
    "EpsilonAlpha2Beta1Flat": (lambda d: C.EpsilonAlpha2Beta1Flat(), [flat6, eps6, eps6]),
    "EpsilonGammaBox": (lambda d: C.EpsilonGammaBox(-3.0, 3.0), [eps6] * 3),
    "EpsilonGammaBox-eps": (lambda d: C.EpsilonGammaBox(-3.0, 3.0, epsilon=0.2),
                            [partial(ref_epsilon, eps=0.2)] * 3),
    # user maps on named composites take precedence over the composite's own
    "EpsilonPlus+layer_map": (lambda d: C.EpsilonPlus(layer_map={rp.Dense: AlphaBeta(1, 0)}),
                              [partial(ref_alphabeta, alpha=1.0, beta=0.0)] * 3),
    "EpsilonPlusFlat+first_map": (lambda d: C.EpsilonPlusFlat(first_map={rp.Dense: WSquare()}),
                                  [ref_wsquare, eps6, eps6]),
    "EpsilonGammaBox+name_map": (lambda d: C.EpsilonGammaBox(-3.0, 3.0,
                                                             name_map={0: ZBox(-3.0, 3.0)}),
                                 [partial(ref_zbox, low=-3.0, high=3.0), eps6, eps6]),
    "EpsilonAlpha2Beta1+name_map": (lambda d: C.EpsilonAlpha2Beta1(name_map={"2": Gamma(0.25)}),
                                    [eps6, partial(ref_gamma, gamma=0.25), eps6]),
    # user composites
    "layer_map-type": (lambda d: C.Composite(layer_map={rp.Dense: ZPlus()}), [ref_zplus] * 3),
    "layer_map-list": (lambda d: C.Composite(layer_map=[((rp.layers.Linear,), Gamma(1.0))]),
                       [partial(ref_gamma, gamma=1.0)] * 3),
    "first_map": (lambda d: C.Composite(layer_map={rp.Dense: Gamma(0.5)},
                                        first_map={rp.Dense: WSquare()}),
                  [ref_wsquare] + [partial(ref_gamma, gamma=0.5)] * 2),
    "name_map-name": (lambda d: C.Composite(layer_map={rp.Dense: Epsilon(0.01)},
                                            name_map={"2": AlphaBeta(2, 1)}),
                      [partial(ref_epsilon, eps=0.01), partial(ref_alphabeta, alpha=2.0, beta=1.0),
                       partial(ref_epsilon, eps=0.01)]),
    "name_map-index": (lambda d: C.Composite(layer_map={rp.Dense: ZPlus()},
                                             name_map={0: ZBox(-3.0, 3.0), -1: Epsilon(0.0)}),
                       [partial(ref_zbox, low=-3.0, high=3.0), ref_zplus,
                        partial(ref_epsilon, eps=0.0)]),
    "name_map-features": (lambda d: C.Composite(layer_map={rp.Dense: Epsilon(0.5)},
                                                name_map={0: _zbox_arrays(d)}),
                          [partial(ref_zbox, low=LOW_FEATURES, high=HIGH_FEATURES),
                           partial(ref_epsilon, eps=0.5), partial(ref_epsilon, eps=0.5)]),
}


def _network_case(dtype: str, seed: int = 10, sizes=SIZES, bias: bool = True):
    rng = np.random.default_rng(seed)
    params = [(rounded(W, dtype), rounded(b, dtype))
              for W, b in random_weights(rng, sizes, bias=bias)]
    x = rounded(rng.normal(size=(3, sizes[0])), dtype)
    assert (x < 0).any()
    return params, x


def _model(params, dtype: str, activation=rp.ReLU) -> rp.Sequential:
    layers = []
    for k, (W, b) in enumerate(params):
        if k:
            layers.append(activation())
        layers.append(rp.Dense(on_backend(W, dtype), None if b is None else on_backend(b, dtype)))
    return rp.Sequential(layers)


TARGETS = [1, [0, 3, 2]]


@pytest.mark.parametrize("target", TARGETS, ids=["int", "list"])
@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_network(name, target):
    make, refs = COMPOSITES[name]
    params, x = _network_case("float64")
    R_out = target_relevance(ref_network(params, x)[-1], target)
    expected = ref_lrp(params, x, R_out, refs)
    got = rp.lrp(_model(params, "float64"), on_backend(x), target, composite=make("float64"))
    check(got, expected[0])


@pytest.mark.parametrize("name", ["EpsilonPlus", "EpsilonPlusFlat", "first_map", "name_map-index",
                                  "name_map-features"])
def test_composite_network_float32(name):
    make, refs = COMPOSITES[name]
    params, x = _network_case("float32")
    R_out = target_relevance(ref_network(params, x)[-1], [2, 0, 1])
    expected = ref_lrp(params, x, R_out, refs)
    got = rp.lrp(_model(params, "float32"), on_backend(x, "float32"), [2, 0, 1],
                 composite=make("float32"))
    check(got, expected[0], "float32")


def test_name_map_by_layer_name():
    params, x = _network_case("float64")
    composite = C.Composite(layer_map={rp.Dense: Gamma(0.25)},
                            name_map={"fc1": Flat(), "fc3": Epsilon(0.0), "relu2": Pass()})
    expected = ref_lrp(params, x, target_relevance(ref_network(params, x)[-1], 3),
                       [ref_flat, partial(ref_gamma, gamma=0.25), partial(ref_epsilon, eps=0.0)])
    got = rp.lrp(_named_model(params, "float64"), on_backend(x), 3, composite=composite)
    check(got, expected[0])


NETWORK_RULES = [name for name in DENSE_RULES if name not in ("zbox-features", "zbox-row")]


@pytest.mark.parametrize("name", NETWORK_RULES)
def test_rule_network(name):
    """``rule=``: the same rule on every dense layer, activations Pass."""
    make, ref = DENSE_RULES[name]
    params, x = _network_case("float64", seed=11)
    R_out = target_relevance(ref_network(params, x)[-1], 2)
    expected = ref_lrp(params, x, R_out, [ref] * 3)
    got = rp.lrp(_model(params, "float64"), on_backend(x), 2, rule=make("float64"))
    check(got, expected[0])


@pytest.mark.parametrize("name", ["zplus", "alphabeta-2-1", "gamma-0.25", "wsquare"])
def test_rule_network_float32(name):
    make, ref = DENSE_RULES[name]
    params, x = _network_case("float32", seed=12)
    R_out = target_relevance(ref_network(params, x)[-1], None)
    expected = ref_lrp(params, x, R_out, [ref] * 3)
    got = rp.lrp(_model(params, "float32"), on_backend(x, "float32"), rule=make("float32"))
    check(got, expected[0], "float32")


@pytest.mark.parametrize("activation", [rp.Tanh, rp.Sigmoid, rp.LeakyReLU],
                         ids=lambda a: a.__name__)
@pytest.mark.parametrize("name", ["zplus", "alphabeta-2-1", "gamma-0.25", "epsilon-0.25"])
def test_rule_network_other_activations(name, activation):
    """Hidden inputs of both signs (Tanh, LeakyReLU) or non-negative (Sigmoid)."""
    make, ref = DENSE_RULES[name]
    params, x = _network_case("float64", seed=13)
    acts = ref_network(params, x, activation)
    if activation is not rp.Sigmoid:
        assert (acts[2] < 0).any(), "hidden inputs should have both signs here"
    expected = ref_lrp(params, x, target_relevance(acts[-1], [1, 1, 3]), [ref] * 3, activation)
    got = rp.lrp(_model(params, "float64", activation), on_backend(x), [1, 1, 3],
                 rule=make("float64"))
    check(got, expected[0])


def test_gradient_rule_on_unmatched_layers(xp):
    """Identity / Dropout / Flatten (no rule matches) get the gradient: relevance passes as is;
    a non-elementwise Lambda gets J^T R."""
    params, x = _network_case("float64", seed=14)
    (W1, b1), (W2, b2), (W3, b3) = params
    A = np.random.default_rng(15).normal(size=(8, 8))
    model = rp.Sequential([
        rp.Dense(on_backend(W1), on_backend(b1)), rp.ReLU(), rp.Dropout(0.5),
        _linear_lambda(A, "float64", True, xp),
        rp.Dense(on_backend(W2), on_backend(b2)), rp.Tanh(), rp.Identity(),
        rp.Dense(on_backend(W3), on_backend(b3)),
    ])
    a1 = np.maximum(ref_dense_forward(W1, b1, x), 0.0)
    m = ref_dense_forward(A, None, a1)
    z2 = ref_dense_forward(W2, b2, m)
    a2 = np.tanh(z2)
    out = ref_dense_forward(W3, b3, a2)
    R = target_relevance(out, 0)
    R = ref_zplus(W3, b3, a2, R)
    R = ref_zplus(W2, b2, m, R)
    R = ref_gradient(A, a1, R)
    R = ref_zplus(W1, b1, x, R)
    check(rp.lrp(model, on_backend(x), 0, rule=ZPlus()), R)


def test_norm_on_lambda_in_network(xp):
    params, x = _network_case("float64", seed=16)
    (W1, b1), (W2, b2), (W3, b3) = params
    A = np.random.default_rng(17).normal(size=(8, 8))
    model = rp.Sequential([
        ("fc1", rp.Dense(on_backend(W1), on_backend(b1))), ("relu", rp.ReLU()),
        ("mix", _linear_lambda(A, "float64", True, xp)),
        ("fc2", rp.Dense(on_backend(W2), on_backend(b2))), ("relu2", rp.ReLU()),
        ("fc3", rp.Dense(on_backend(W3), on_backend(b3))),
    ])
    a1 = np.maximum(ref_dense_forward(W1, b1, x), 0.0)
    m = ref_dense_forward(A, None, a1)
    z2 = ref_dense_forward(W2, b2, m)
    a2 = np.maximum(z2, 0.0)
    R = target_relevance(ref_dense_forward(W3, b3, a2), [3, 2, 1])
    R = ref_epsilon(W3, b3, a2, R)
    R = ref_epsilon(W2, b2, m, R)
    R = ref_norm(A, a1, R, eps=0.01)
    R = ref_flat(W1, b1, x, R)
    composite = C.EpsilonPlusFlat(name_map={"mix": Norm(0.01)})
    check(rp.lrp(model, on_backend(x), [3, 2, 1], composite=composite), R)


# --------------------------------------------------------------------------------------
# return_layers and the forms of target
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["EpsilonPlusFlat", "name_map-index", "first_map"])
def test_return_layers(name):
    make, refs = COMPOSITES[name]
    params, x = _network_case("float64", seed=20)
    R_out = target_relevance(ref_network(params, x)[-1], [0, 1, 2])
    expected = ref_lrp(params, x, R_out, refs)
    model = _model(params, "float64")
    R, by_name = rp.lrp(model, on_backend(x), [0, 1, 2], composite=make("float64"),
                        return_layers=True)
    assert list(by_name) == ["input", *model.names] and len(expected) == 6
    per_layer = list(by_name.values())
    check(R, expected[0])
    for got, want in zip(per_layer, expected, strict=True):
        check(got, want)


def _target_forms():
    return {
        "int": (lambda: 3, 3),
        "list": (lambda: [0, 3, 1], [0, 3, 1]),
        "tuple": (lambda: (2, 2, 0), [2, 2, 0]),
        "int-array": (lambda: on_backend(np.array([1, 0, 3]), "int64"), [1, 0, 3]),
        "int32-array": (lambda: on_backend(np.array([2, 1, 0]), "int32"), [2, 1, 0]),
        "argmax": (lambda: None, None),
    }


@pytest.mark.parametrize("form", list(_target_forms()))
def test_target_forms(form):
    make_target, classes = _target_forms()[form]
    params, x = _network_case("float64", seed=21)
    out = ref_network(params, x)[-1]
    R_out = target_relevance(out, classes)
    refs = [flat6, partial(ref_alphabeta, alpha=2.0, beta=1.0), eps6]
    composite = C.Composite(layer_map={rp.Dense: AlphaBeta(2, 1)}, first_map={rp.Dense: Flat()},
                            name_map={-1: Epsilon()})
    expected = ref_lrp(params, x, R_out, refs)
    R, per_layer = rp.lrp(_model(params, "float64"), on_backend(x), make_target(),
                          composite=composite, return_layers=True)
    check(list(per_layer.values())[-1], R_out)  # R_L = f_c(x) at the target, zero elsewhere
    check(R, expected[0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_array_target_is_the_initial_relevance(dtype):
    params, x = _network_case(dtype, seed=22)
    R_out = rounded(np.random.default_rng(23).normal(size=(3, 4)), dtype)
    refs = [partial(ref_gamma, gamma=0.25), ref_zplus, partial(ref_epsilon, eps=0.1)]
    composite = C.Composite(layer_map={rp.Dense: ZPlus()}, name_map={0: Gamma(), 4: Epsilon(0.1)})
    expected = ref_lrp(params, x, R_out, refs)
    R, by_name = rp.lrp(_model(params, dtype), on_backend(x, dtype), on_backend(R_out, dtype),
                        composite=composite, return_layers=True)
    per_layer = list(by_name.values())
    assert_close(per_layer[-1], R_out, dtype=dtype, rtol=0.0)
    for got, want in zip(per_layer, expected, strict=True):
        check(got, want, dtype)


def test_default_target_is_argmax():
    params, x = _network_case("float64", seed=24)
    out = ref_network(params, x)[-1]
    model = _model(params, "float64")
    default = rp.lrp(model, on_backend(x), composite=C.EpsilonPlus())
    explicit = ref_lrp(params, x, target_relevance(out, list(np.argmax(out, axis=1))), [eps6] * 3)
    check(default, explicit[0])


# --------------------------------------------------------------------------------------
# Theory
# --------------------------------------------------------------------------------------


def _sum_per_sample(R) -> np.ndarray:
    return rp.to_numpy(R).reshape(R.shape[0], -1).sum(axis=1)


@pytest.mark.parametrize("eps", [0.0, 1e-9])
@pytest.mark.parametrize("target", [None, [3, 0, 2]], ids=["argmax", "list"])
def test_conservation_epsilon_bias_free(eps, target, xp):
    params, x = _network_case("float64", seed=30, bias=False)
    out = ref_network(params, x)[-1]
    f_c = target_relevance(out, target).sum(axis=1)
    R, by_name = rp.lrp(_model(params, "float64"), on_backend(x), target, rule=Epsilon(eps),
                        return_layers=True)
    per_layer = list(by_name.values())
    rtol = 1e-10 if eps == 0.0 else 1e-6
    for relevance in per_layer:
        assert_close(xp.sum(relevance, axis=1), f_c, rtol=rtol)


def _positive_network(seed: int, nonnegative_input: bool):
    rng = np.random.default_rng(seed)
    params = [(np.abs(W), None) for W, _ in random_weights(rng, SIZES, bias=False)]
    x = rng.normal(size=(3, SIZES[0]))
    if nonnegative_input:
        x = np.abs(x)
    else:
        x = np.abs(x)
        x[:, 0] *= -0.5
    return params, x


@pytest.mark.parametrize(
    ("rule", "nonnegative_input", "factor"),
    [
        (ZPlus(1e-12), True, 1.0),
        (ZPlus(1e-12), False, 1.0),
        (AlphaBeta(1, 0, 1e-12), True, 1.0),
        (AlphaBeta(1, 0, 1e-12), False, 1.0),
        # positive weights, non-negative inputs: no negative contribution anywhere, so the
        # beta term vanishes and every dense layer multiplies the total by alpha
        (AlphaBeta(2, 1, 1e-12), True, 2.0**3),
        # negative inputs to the first layer give it a negative part: it conserves
        (AlphaBeta(2, 1, 1e-12), False, 2.0**2),
        (AlphaBeta(3, 2, 1e-12), True, 3.0**3),
        (AlphaBeta(3, 2, 1e-12), False, 3.0**2),
    ],
    ids=["zplus-pos", "zplus-mixed", "ab10-pos", "ab10-mixed", "ab21-pos", "ab21-mixed",
         "ab32-pos", "ab32-mixed"],
)
def test_positive_weights_relevance_totals(rule, nonnegative_input, factor, xp):
    params, x = _positive_network(31, nonnegative_input)
    out = ref_network(params, x)[-1]
    assert (out > 0).all()
    R = rp.lrp(_model(params, "float64"), on_backend(x), [0, 1, 3], rule=rule)
    assert_close(xp.sum(R, axis=1), factor * target_relevance(out, [0, 1, 3]).sum(axis=1),
                 rtol=1e-9)


@pytest.mark.parametrize("bias", [False, True], ids=["bias-free", "with-bias"])
def test_lrp0_equals_gradient_x_input(bias):
    """Per sample: LRP-0 of a ReLU net is gradient x input (with biases too)."""
    params, x = _network_case("float64", seed=32, bias=bias)
    model = _model(params, "float64")
    target = [2, 0, 3]
    expected = rp.to_numpy(rp.gradient_x_input(model, on_backend(x), target))
    check(rp.lrp(model, on_backend(x), target, rule=Epsilon(0.0)), expected)
    # epsilon -> 0 approaches it
    near = rp.lrp(model, on_backend(x), target, rule=Epsilon(1e-9))
    assert_close(near, expected, rtol=1e-5, atol=1e-7 * float(np.max(np.abs(expected))))


def _independent_gradient(params, x: np.ndarray, target: list[int]) -> np.ndarray:
    """d f_c / dx by the backend's own autodiff (torch, jax) or by hand with ReLU masks."""
    if BACKEND == "torch":
        import torch

        point = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        h = point
        for k, (W, _) in enumerate(params):
            if k:
                h = torch.relu(h)
            h = torch.nn.functional.linear(h, torch.tensor(W, dtype=torch.float64))
        selected = h[torch.arange(len(target)), torch.tensor(target)].sum()
        (g,) = torch.autograd.grad(selected, point)
        return g.numpy()
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        def f(point):
            h = point
            for k, (W, _) in enumerate(params):
                if k:
                    h = jax.nn.relu(h)
                h = h @ jnp.asarray(W, dtype=jnp.float64).T
            return h[jnp.arange(len(target)), jnp.asarray(target)].sum()

        return np.asarray(jax.grad(f)(jnp.asarray(x, dtype=jnp.float64)))
    # by hand: grad_n = e_c^T W3 diag(m2) W2 diag(m1) W1
    grads = []
    for n, c in enumerate(target):
        h, masks = x[n], []
        for k, (W, _) in enumerate(params):
            if k:
                masks.append((h > 0).astype(np.float64))
                h = np.maximum(h, 0.0)
            h = W @ h
        g = params[-1][0][c]
        for k in range(len(params) - 2, -1, -1):
            g = (g * masks[k]) @ params[k][0]
        grads.append(g)
    return np.stack(grads)


def test_lrp0_equals_independent_gradient_x_input():
    params, x = _network_case("float64", seed=33, bias=False)
    target = [1, 3, 0]
    expected = x * _independent_gradient(params, x, target)
    check(rp.lrp(_model(params, "float64"), on_backend(x), target, rule=Epsilon(0.0)), expected)
    check(rp.gradient_x_input(_model(params, "float64"), on_backend(x), target), expected)
