"""``relprop.ops`` pooling and padding on the backend under test.

Oracles: per-output-element loops in NumPy float64 written from torch's definitions
(output size with ``ceil_mode``, average divisors with ``count_include_pad``, adaptive
windows ``[floor(i L / m), ceil((i + 1) L / m))``), the tie-splitting rule of
``max_pool_vjp`` written as a loop, the dot-product identity for every linear op, the
backend's own VJP (torch autograd, ``jax.vjp``, finite differences on NumPy /
array-api-strict: exact up to rounding for piecewise-linear maps away from kinks), and,
on torch, ``torch.nn.functional`` (for ceil-mode pools of inputs smaller than the kernel
on every backend where torch is installed: the torch and jax sessions). Native and
portable paths are compared on every backend.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp
from relprop import ops

EXACT = BACKEND in ("torch", "jax")
RTOL = {"float64": 1e-12, "float32": 1e-5}
VJP_RTOL = 1e-12 if EXACT else 1e-8
NATIVE_IDS = ["native", "portable"]


def close(actual, expected: np.ndarray, dtype: str = "float64", rtol: float | None = None):
    """Library, dtype, shape, then values within ``rtol`` relative to the largest entry."""
    rtol = RTOL[dtype] if rtol is None else rtol
    finite = np.abs(expected[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 1.0
    assert_close(actual, expected, dtype=dtype, rtol=rtol, atol=rtol * (scale or 1.0))


def per_axis(value, n):
    return (value,) * n if isinstance(value, int) else tuple(value)


def pairs(padding, n):
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def dot(a, b) -> float:
    return float(np.vdot(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)))


# ---------------------------------------------------------------------------------------
# NumPy loop references (torch's definitions)
# ---------------------------------------------------------------------------------------


def geometry(spatial, kernel, stride, pads, dilation, ceil_mode):
    """torch's output size; a last ceil-mode window must start inside input + left pad."""
    out = []
    for size, k, s, d, (b, a) in zip(spatial, kernel, stride, dilation, pads, strict=True):
        room = size + b + a - d * (k - 1) - 1
        o = -(-room // s) + 1 if ceil_mode else room // s + 1
        if ceil_mode and (o - 1) * s >= size + b:
            o -= 1
        out.append(o)
    return out


def windows(spatial, kernel, stride, pads, dilation, out):
    """For each output index j: the input positions of its taps (None: padding/overhang)
    and the taps counted with padding (inside [0, before + size + after))."""
    n = len(spatial)
    for j in np.ndindex(*out):
        taps, in_padded = [], 0
        for t in np.ndindex(*kernel):
            pos = [j[a] * stride[a] + t[a] * dilation[a] for a in range(n)]
            inside_padded = all(
                0 <= p < pads[a][0] + spatial[a] + pads[a][1] for a, p in enumerate(pos)
            )
            in_padded += inside_padded
            inside = all(pads[a][0] <= p < pads[a][0] + spatial[a] for a, p in enumerate(pos))
            taps.append(tuple(p - pads[a][0] for a, p in enumerate(pos)) if inside else None)
        yield j, taps, in_padded


def ref_max_pool(x, kernel, stride, pads, dilation, ceil_mode):
    spatial = x.shape[2:]
    out_sp = geometry(spatial, kernel, stride, pads, dilation, ceil_mode)
    out = np.full((*x.shape[:2], *out_sp), -np.inf)
    for j, taps, _ in windows(spatial, kernel, stride, pads, dilation, out_sp):
        for tap in taps:
            if tap is not None:
                out[(..., *j)] = np.maximum(out[(..., *j)], x[(..., *tap)])
    return out


def ref_max_pool_vjp(x, v, kernel, stride, pads, dilation, ceil_mode):
    """Each window's v split evenly among its maximal elements."""
    spatial = x.shape[2:]
    out_sp = geometry(spatial, kernel, stride, pads, dilation, ceil_mode)
    g = np.zeros_like(x)
    for i, c in np.ndindex(*x.shape[:2]):
        for j, taps, _ in windows(spatial, kernel, stride, pads, dilation, out_sp):
            values = {tap: x[(i, c, *tap)] for tap in taps if tap is not None}
            top = max(values.values())
            winners = [tap for tap, value in values.items() if value == top]
            for tap in winners:
                g[(i, c, *tap)] += v[(i, c, *j)] / len(winners)
    return g


def ref_avg_pool(x, kernel, stride, pads, ceil_mode, include_pad):
    n = x.ndim - 2
    spatial = x.shape[2:]
    ones = (1,) * n
    out_sp = geometry(spatial, kernel, stride, pads, ones, ceil_mode)
    out = np.zeros((*x.shape[:2], *out_sp))
    for j, taps, in_padded in windows(spatial, kernel, stride, pads, ones, out_sp):
        inside = [tap for tap in taps if tap is not None]
        total = sum((x[(..., *tap)] for tap in inside), np.zeros(x.shape[:2]))
        out[(..., *j)] = total / (in_padded if include_pad else len(inside))
    return out


def ref_avg_pool_transpose(v, shape, kernel, stride, pads, ceil_mode, include_pad):
    n = len(shape) - 2
    spatial = shape[2:]
    ones = (1,) * n
    out_sp = geometry(spatial, kernel, stride, pads, ones, ceil_mode)
    g = np.zeros(shape)
    for j, taps, in_padded in windows(spatial, kernel, stride, pads, ones, out_sp):
        inside = [tap for tap in taps if tap is not None]
        divisor = in_padded if include_pad else len(inside)
        for tap in inside:
            g[(..., *tap)] += v[(..., *j)] / divisor
    return g


def adaptive_windows(spatial, out):
    bounds = [
        [((i * size) // m, -(-((i + 1) * size) // m)) for i in range(m)]
        for size, m in zip(spatial, out, strict=True)
    ]
    for j in np.ndindex(*out):
        ranges = [range(*bounds[a][j[a]]) for a in range(len(out))]
        yield j, list(itertools.product(*ranges))


def ref_adaptive(x, out):
    y = np.zeros((*x.shape[:2], *out))
    for j, taps in adaptive_windows(x.shape[2:], out):
        y[(..., *j)] = sum(x[(..., *tap)] for tap in taps) / len(taps)
    return y


def ref_adaptive_transpose(v, shape):
    g = np.zeros(shape)
    for j, taps in adaptive_windows(shape[2:], v.shape[2:]):
        for tap in taps:
            g[(..., *tap)] += v[(..., *j)] / len(taps)
    return g


# ---------------------------------------------------------------------------------------
# cases (few shapes: JAX compiles per shape)
# ---------------------------------------------------------------------------------------

X2, X1, X3 = (2, 3, 7, 6), (2, 3, 9), (1, 2, 5, 4, 3)

MAX_CASES = {
    "2d-k2": dict(x=X2, kernel_size=2, stride=None, padding=0, dilation=1, ceil_mode=False),
    # ceil mode with an overhang past the padding on both axes
    "2d-k2x3-s2-ceil": dict(x=X2, kernel_size=(2, 3), stride=2, padding=(0, 1), dilation=1,
                            ceil_mode=True),
    "2d-asym-dil": dict(x=X2, kernel_size=2, stride=1, padding=((1, 0), (0, 1)),
                        dilation=(2, 1), ceil_mode=False),
    # ceil mode where torch drops a last window that would start in the right padding
    "1d-k2-s2-p1-ceil": dict(x=X1, kernel_size=2, stride=2, padding=1, dilation=1,
                             ceil_mode=True),
    "1d-k3-s1-dil2": dict(x=X1, kernel_size=3, stride=1, padding=((2, 1),), dilation=2,
                          ceil_mode=False),
    "3d-k2x2x3-s2-ceil": dict(x=X3, kernel_size=(2, 2, 3), stride=(2, 1, 2), padding=(1, 0, 1),
                              dilation=1, ceil_mode=True),
}

AVG_CASES = {
    "2d-k2": dict(x=X2, kernel_size=2, stride=None, padding=0, ceil_mode=False,
                  count_include_pad=True),
    "2d-k2x3-s2-ceil-include": dict(x=X2, kernel_size=(2, 3), stride=2, padding=(0, 1),
                                    ceil_mode=True, count_include_pad=True),
    "2d-k2x3-s2-ceil-exclude": dict(x=X2, kernel_size=(2, 3), stride=2, padding=(0, 1),
                                    ceil_mode=True, count_include_pad=False),
    "2d-asym-exclude": dict(x=X2, kernel_size=(2, 3), stride=(1, 2),
                            padding=((1, 0), (1, 1)), ceil_mode=False,
                            count_include_pad=False),
    "1d-k2-s2-p1-ceil-include": dict(x=X1, kernel_size=2, stride=2, padding=1,
                                     ceil_mode=True, count_include_pad=True),
    "1d-k3-s2-asym-exclude": dict(x=X1, kernel_size=3, stride=2, padding=((1, 0),),
                                  ceil_mode=True, count_include_pad=False),
    "3d-k2x3x2-exclude": dict(x=X3, kernel_size=(2, 3, 2), stride=(2, 1, 1),
                              padding=((1, 0), (1, 1), (0, 1)), ceil_mode=False,
                              count_include_pad=False),
}

ADAPTIVE_CASES = {
    "2d-global": dict(x=X2, output_size=1),
    "2d-3x4": dict(x=X2, output_size=(3, 4)),
    "2d-none-2": dict(x=X2, output_size=(None, 2)),
    "1d-4": dict(x=X1, output_size=4),
    "1d-global": dict(x=X1, output_size=1),
    "3d-3x1x2": dict(x=X3, output_size=(3, 1, 2)),
}

# JAX compiles every op once per shape and geometry (~50 ms per eager op here, ~0.3-1 s
# per jitted function): on JAX the ops run on the cases in JAX_CASES, and the portable
# paths (many small eager ops) on JAX_PORTABLE; the other cases are skipped there
# (visibly) and run on every other backend. Between them the JAX cases cover 1d and 2d,
# stride, asymmetric padding, dilation, ceil mode with an overhang, both
# count_include_pad settings, global and general adaptive pooling.
JAX_CASES = {"2d-k2x3-s2-ceil", "1d-k3-s1-dil2", "2d-k2x3-s2-ceil-include",
             "1d-k3-s2-asym-exclude", "2d-3x4", "2d-global", "1d-4", "3d-k2x2x3-s2-ceil",
             "3d-k2x3x2-exclude", "3d-3x1x2"}
JAX_PORTABLE = {"2d-k2x3-s2-ceil", "1d-k3-s1-dil2", "1d-k3-s2-asym-exclude", "2d-3x4"}
JAX_SKIP = pytest.mark.skip(reason="on JAX only the JAX_CASES / JAX_PORTABLE cases run")


def params(cases, natives=(True, False)):
    result = []
    for name in sorted(cases):
        for native in natives:
            skip = BACKEND == "jax" and name not in (JAX_CASES if native else JAX_PORTABLE)
            result.append(pytest.param(name, native, id=f"{name}-{NATIVE_IDS[not native]}",
                                       marks=JAX_SKIP if skip else ()))
    return result


def portable_params(cases):
    return [pytest.param(p.values[0], id=p.id.removesuffix("-portable"), marks=p.marks)
            for p in params(cases, natives=(False,))]


def max_args(case):
    n = len(case["x"]) - 2
    kernel = per_axis(case["kernel_size"], n)
    stride = kernel if case["stride"] is None else per_axis(case["stride"], n)
    return kernel, stride, pairs(case["padding"], n), per_axis(case["dilation"], n)


def avg_args(case):
    n = len(case["x"]) - 2
    kernel = per_axis(case["kernel_size"], n)
    stride = kernel if case["stride"] is None else per_axis(case["stride"], n)
    return kernel, stride, pairs(case["padding"], n)


def max_kwargs(case):
    return {k: case[k] for k in ("stride", "padding", "dilation", "ceil_mode")}


def avg_kwargs(case):
    return {k: case[k] for k in ("stride", "padding", "ceil_mode", "count_include_pad")}


def distinct_values(rng, shape):
    """Values at least 0.1 apart: no ties, and no finite-difference step crosses a kink."""
    return (rng.permutation(int(np.prod(shape))) * 0.1 - 3.0).reshape(shape)


# ---------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "native"), params(MAX_CASES))
def test_max_pool_matches_loop_reference(name: str, native: bool) -> None:
    case = MAX_CASES[name]
    x = np.random.default_rng(0).normal(size=case["x"])
    kernel, stride, pads, dilation = max_args(case)
    out = ops.max_pool(on_backend(x), case["kernel_size"], native=native, **max_kwargs(case))
    close(out, ref_max_pool(x, kernel, stride, pads, dilation, case["ceil_mode"]))


@pytest.mark.parametrize(("name", "native"), params(MAX_CASES))
def test_max_pool_vjp_splits_ties_evenly(name: str, native: bool) -> None:
    """Integer inputs from {0, 1, 2}: most windows have tied maxima."""
    case = MAX_CASES[name]
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=case["x"]).astype(np.float64)
    kernel, stride, pads, dilation = max_args(case)
    out_shape = ref_max_pool(x, kernel, stride, pads, dilation, case["ceil_mode"]).shape
    v = rng.normal(size=out_shape)
    g = ops.max_pool_vjp(on_backend(x), on_backend(v), case["kernel_size"], native=native,
                         **max_kwargs(case))
    expected = ref_max_pool_vjp(x, v, kernel, stride, pads, dilation, case["ceil_mode"])
    close(g, expected)
    # every window gives all of its v to its winners
    assert float(np.sum(rp.to_numpy(g))) == pytest.approx(float(v.sum()), rel=1e-12)


def test_max_pool_vjp_ties_by_hand() -> None:
    """2x2 windows over a (2, 3) input: three tied ones share 6 as 2 each; with stride 1
    the overlapping second window's 4 goes to its two tied ones, 2 each, and adds up."""
    x = on_backend(np.array([[[[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]]]))
    # on JAX the portable tie split runs in test_max_pool_vjp_splits_ties_evenly only
    for native in (True,) if BACKEND == "jax" else (True, False):
        g = ops.max_pool_vjp(x, on_backend(np.array([[[[6.0]]]])), 2, native=native)
        close(g, np.array([[[[2.0, 2.0, 0.0], [0.0, 2.0, 0.0]]]]))
        g = ops.max_pool_vjp(x, on_backend(np.array([[[[6.0, 4.0]]]])), 2, stride=1,
                             native=native)
        close(g, np.array([[[[2.0, 4.0, 0.0], [0.0, 4.0, 0.0]]]]))


@pytest.mark.parametrize(("name", "native"), params(MAX_CASES))
def test_max_pool_vjp_without_ties_is_backend_vjp(name: str, native: bool) -> None:
    case = MAX_CASES[name]
    rng = np.random.default_rng(2)
    x = distinct_values(rng, case["x"])
    xb = on_backend(x)

    def forward(a):
        return ops.max_pool(a, case["kernel_size"], native=native, **max_kwargs(case))

    v = on_backend(rng.normal(size=tuple(forward(xb).shape)))
    expected = rp.to_numpy(rp.vjp(forward, xb, v)).astype(np.float64)
    g = ops.max_pool_vjp(xb, v, case["kernel_size"], native=native, **max_kwargs(case))
    close(g, expected, rtol=VJP_RTOL)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", portable_params(MAX_CASES))
def test_max_pool_native_equals_portable(name: str, dtype: str) -> None:
    case = MAX_CASES[name]
    rng = np.random.default_rng(3)
    xb = on_backend(rng.integers(0, 4, size=case["x"]) + 0.25 * rng.normal(size=case["x"]),
                    dtype)
    kwargs = max_kwargs(case)
    native = ops.max_pool(xb, case["kernel_size"], **kwargs)
    close(native, rp.to_numpy(ops.max_pool(xb, case["kernel_size"], native=False, **kwargs)),
          dtype)
    tied = on_backend(rng.integers(0, 3, size=case["x"]), dtype)
    v = on_backend(rng.normal(size=tuple(native.shape)), dtype)
    close(ops.max_pool_vjp(tied, v, case["kernel_size"], **kwargs),
          rp.to_numpy(ops.max_pool_vjp(tied, v, case["kernel_size"], native=False, **kwargs)),
          dtype)


# ---------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "native"), params(AVG_CASES))
def test_avg_pool_matches_loop_reference(name: str, native: bool) -> None:
    case = AVG_CASES[name]
    x = np.random.default_rng(4).normal(size=case["x"])
    kernel, stride, pads = avg_args(case)
    out = ops.avg_pool(on_backend(x), case["kernel_size"], native=native, **avg_kwargs(case))
    close(out, ref_avg_pool(x, kernel, stride, pads, case["ceil_mode"],
                            case["count_include_pad"]))


@pytest.mark.parametrize(("name", "native"), params(AVG_CASES))
def test_avg_pool_transpose(name: str, native: bool) -> None:
    """Loop reference, dot-product identity and the backend's VJP of avg_pool."""
    case = AVG_CASES[name]
    rng = np.random.default_rng(5)
    kernel, stride, pads = avg_args(case)
    x = rng.normal(size=case["x"])
    xb = on_backend(x)

    def forward(a):
        return ops.avg_pool(a, case["kernel_size"], native=native, **avg_kwargs(case))

    y = forward(xb)
    v = rng.normal(size=tuple(y.shape))
    vb = on_backend(v)
    g = ops.avg_pool_transpose(vb, case["x"], case["kernel_size"], native=native,
                               **avg_kwargs(case))
    close(g, ref_avg_pool_transpose(v, case["x"], kernel, stride, pads, case["ceil_mode"],
                                    case["count_include_pad"]))
    assert dot(rp.to_numpy(y), v) == pytest.approx(dot(x, rp.to_numpy(g)), rel=1e-12)
    close(g, rp.to_numpy(rp.vjp(forward, xb, vb)), rtol=VJP_RTOL)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", portable_params(AVG_CASES))
def test_avg_pool_native_equals_portable(name: str, dtype: str) -> None:
    case = AVG_CASES[name]
    rng = np.random.default_rng(6)
    xb = on_backend(rng.normal(size=case["x"]), dtype)
    kwargs = avg_kwargs(case)
    native = ops.avg_pool(xb, case["kernel_size"], **kwargs)
    close(native, rp.to_numpy(ops.avg_pool(xb, case["kernel_size"], native=False, **kwargs)),
          dtype)
    v = on_backend(rng.normal(size=tuple(native.shape)), dtype)
    close(ops.avg_pool_transpose(v, case["x"], case["kernel_size"], **kwargs),
          rp.to_numpy(ops.avg_pool_transpose(v, case["x"], case["kernel_size"], native=False,
                                             **kwargs)), dtype)


# ---------------------------------------------------------------------------------------
# adaptive average pooling
# ---------------------------------------------------------------------------------------


def adaptive_out(case) -> tuple[int, ...]:
    spatial = case["x"][2:]
    size = case["output_size"]
    sizes = (size,) * len(spatial) if isinstance(size, int) else size
    return tuple(s if m is None else m for m, s in zip(sizes, spatial, strict=True))


@pytest.mark.parametrize(("name", "native"), params(ADAPTIVE_CASES))
def test_adaptive_avg_pool(name: str, native: bool) -> None:
    """Forward and transpose against the loops; dot product; native == portable."""
    case = ADAPTIVE_CASES[name]
    rng = np.random.default_rng(7)
    x = rng.normal(size=case["x"])
    out = adaptive_out(case)
    y = ops.adaptive_avg_pool(on_backend(x), case["output_size"], native=native)
    close(y, ref_adaptive(x, out))
    v = rng.normal(size=(*case["x"][:2], *out))
    g = ops.adaptive_avg_pool_transpose(on_backend(v), case["x"], native=native)
    close(g, ref_adaptive_transpose(v, case["x"]))
    assert dot(rp.to_numpy(y), v) == pytest.approx(dot(x, rp.to_numpy(g)), rel=1e-12)


@pytest.mark.parametrize(("name", "native"), params(ADAPTIVE_CASES))
def test_adaptive_avg_pool_transpose_is_backend_vjp(name: str, native: bool) -> None:
    case = ADAPTIVE_CASES[name]
    rng = np.random.default_rng(8)
    xb = on_backend(rng.normal(size=case["x"]))
    v = on_backend(rng.normal(size=(*case["x"][:2], *adaptive_out(case))))

    def forward(a):
        return ops.adaptive_avg_pool(a, case["output_size"], native=native)

    close(ops.adaptive_avg_pool_transpose(v, case["x"], native=native),
          rp.to_numpy(rp.vjp(forward, xb, v)), rtol=VJP_RTOL)


# ---------------------------------------------------------------------------------------
# padding
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("native", [True, False], ids=NATIVE_IDS)
@pytest.mark.parametrize("value", [0.0, 2.5, float("-inf")])
def test_pad(value: float, native: bool) -> None:
    rng = np.random.default_rng(9)
    x = rng.normal(size=X2)
    pads = ((1, 2), (0, 3))
    out = ops.pad(on_backend(x), pads, value, native=native)
    close(out, np.pad(x, ((0, 0), (0, 0), *pads), constant_values=value))
    x1 = rng.normal(size=X1)
    close(ops.pad(on_backend(x1), 2, value, native=native),
          np.pad(x1, ((0, 0), (0, 0), (2, 2)), constant_values=value))


def test_pad_transpose_is_adjoint() -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(size=X2)
    pads = ((1, 2), 1)
    y = ops.pad(on_backend(x), pads)
    v = rng.normal(size=tuple(y.shape))
    g = ops.pad_transpose(on_backend(v), pads)
    close(g, v[:, :, 1:-2, 1:-1])
    assert dot(rp.to_numpy(y), v) == pytest.approx(dot(x, rp.to_numpy(g)), rel=1e-12)


# ---------------------------------------------------------------------------------------
# torch.nn.functional (torch session)
# ---------------------------------------------------------------------------------------

# stride None (= the kernel: 2 or 3) or 1 (overlapping windows); the loop references
# above cover further strides on every backend
MAX_GRID = list(itertools.product((1, 2, 3), (2, 3), (None, 1), (0, 1), (1, 2), (False, True)))
AVG_GRID = list(itertools.product((1, 2, 3), (2, 3), (None, 1), (0, 1), (False, True),
                                  (False, True)))


@pytest.mark.skipif(BACKEND != "torch", reason="compares with torch.nn.functional")
@pytest.mark.parametrize(("n", "kernel", "stride", "padding", "dilation", "ceil_mode"), MAX_GRID)
def test_max_pool_matches_torch(n, kernel, stride, padding, dilation, ceil_mode) -> None:
    import torch
    import torch.nn.functional as F

    fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
    shape = ((2, 3, 9), (2, 3, 8, 7), (1, 2, 6, 7, 5))[n - 1]
    x = torch.asarray(distinct_values(np.random.default_rng(11), shape))
    point = x.clone().requires_grad_(True)
    expected = fn(point, kernel, stride, padding, dilation, ceil_mode)
    v = torch.asarray(np.random.default_rng(12).normal(size=tuple(expected.shape)))
    (grad,) = torch.autograd.grad(expected, point, grad_outputs=v)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, ceil_mode=ceil_mode)
    for native in (True, False):
        close(ops.max_pool(x, kernel, native=native, **kwargs), expected.detach().numpy())
        close(ops.max_pool_vjp(x, v, kernel, native=native, **kwargs), grad.numpy())


@pytest.mark.skipif(BACKEND != "torch", reason="compares with torch.nn.functional")
@pytest.mark.parametrize(("n", "kernel", "stride", "padding", "ceil_mode", "include"), AVG_GRID)
def test_avg_pool_matches_torch(n, kernel, stride, padding, ceil_mode, include) -> None:
    import torch
    import torch.nn.functional as F

    fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
    shape = ((2, 3, 9), (2, 3, 8, 7), (1, 2, 6, 7, 5))[n - 1]
    x = torch.asarray(np.random.default_rng(13).normal(size=shape))
    point = x.clone().requires_grad_(True)
    expected = fn(point, kernel, stride, padding, ceil_mode, include)
    v = torch.asarray(np.random.default_rng(14).normal(size=tuple(expected.shape)))
    (grad,) = torch.autograd.grad(expected, point, grad_outputs=v)
    kwargs = dict(stride=stride, padding=padding, ceil_mode=ceil_mode, count_include_pad=include)
    for native in (True, False):
        close(ops.avg_pool(x, kernel, native=native, **kwargs), expected.detach().numpy())
        close(ops.avg_pool_transpose(v, shape, kernel, native=native, **kwargs), grad.numpy())


@pytest.mark.skipif(BACKEND != "torch", reason="compares with torch.nn.functional")
@pytest.mark.parametrize("name", sorted(ADAPTIVE_CASES))
def test_adaptive_avg_pool_matches_torch(name: str) -> None:
    import torch
    import torch.nn.functional as F

    case = ADAPTIVE_CASES[name]
    fn = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[len(case["x"]) - 3]
    x = torch.asarray(np.random.default_rng(15).normal(size=case["x"]))
    point = x.clone().requires_grad_(True)
    expected = fn(point, case["output_size"])
    v = torch.asarray(np.random.default_rng(16).normal(size=tuple(expected.shape)))
    (grad,) = torch.autograd.grad(expected, point, grad_outputs=v)
    for native in (True, False):
        close(ops.adaptive_avg_pool(x, case["output_size"], native=native),
              expected.detach().numpy())
        close(ops.adaptive_avg_pool_transpose(v, case["x"], native=native), grad.numpy())


# ---------------------------------------------------------------------------------------
# ceil mode on inputs smaller than the kernel
# ---------------------------------------------------------------------------------------

# With ceil_mode torch keeps one partial window where the input, padding included, is
# smaller than the kernel: out = ceil((S + 2p - d(k - 1) - 1) / s) + 1, less one if that
# window would start beyond the input and the left padding. Every case but one has such
# an axis; its window hangs over the end (the divisor counts padding, never that overhang).
SMALL_CASES = {
    # the reported case: AvgPool2d(3, ceil_mode=True) of a 2x2 input
    "2d-k3-in2x2": dict(x=(1, 2, 2, 2), kernel_size=3, stride=None, padding=0, dilation=1),
    "1d-k5-s2-p1-in2": dict(x=(2, 2, 2), kernel_size=5, stride=2, padding=1, dilation=1),
    # the one: padded, the input fits the kernel, but a second window would start in the
    # right padding; torch drops it
    "1d-k4-s3-p2-in1": dict(x=(2, 2, 1), kernel_size=4, stride=3, padding=2, dilation=1),
    "2d-k3x2-s2-p1x0-in2x1": dict(x=(2, 1, 2, 1), kernel_size=(3, 2), stride=2,
                                  padding=(1, 0), dilation=1),
    "3d-k3x2x2-in2x1x3": dict(x=(1, 2, 2, 1, 3), kernel_size=(3, 2, 2), stride=(3, 2, 2),
                              padding=(0, 1, 1), dilation=1),
    # a dilated window (max pools only): span 4 over an input of 3
    "1d-k2-d3-s2-in3": dict(x=(2, 2, 3), kernel_size=2, stride=2, padding=0, dilation=3),
}
SMALL_AVG = [name for name in sorted(SMALL_CASES) if SMALL_CASES[name]["dilation"] == 1]
SMALL_JAX = {"2d-k3-in2x2", "1d-k4-s3-p2-in1", "3d-k3x2x2-in2x1x3", "1d-k2-d3-s2-in3"}
"""On JAX (compiles per geometry) the other cases are skipped."""


def small_params(names, include=(None,)):
    result = []
    for name in names:
        for flag in include:
            for native in (True, False):
                skip = BACKEND == "jax" and name not in SMALL_JAX
                tail = "" if flag is None else f"-{'include' if flag else 'exclude'}"
                result.append(pytest.param(
                    name, *(() if flag is None else (flag,)), native,
                    id=f"{name}{tail}-{NATIVE_IDS[not native]}", marks=JAX_SKIP if skip else ()))
    return result


def small_max_kwargs(name):
    case = SMALL_CASES[name]
    return dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                ceil_mode=True)


def small_avg_kwargs(name, include):
    case = SMALL_CASES[name]
    return dict(stride=case["stride"], padding=case["padding"], ceil_mode=True,
                count_include_pad=include)


def torch_pool(kind: str, x: np.ndarray, v_seed: int, kernel_size, **kwargs):
    """torch's pooling of ``x`` (float64) and its autograd vjp with a seeded cotangent,
    as NumPy arrays; ``None`` where torch is not installed (numpy, strict sessions) or
    refuses the case (its ``avg_pool3d`` rejects any axis shorter than the kernel, even
    padded: relprop computes it, checked against the loop reference, which the other
    cases check against torch)."""
    try:
        import torch
    except ImportError:
        return None
    F = torch.nn.functional
    n = x.ndim - 2
    point = torch.asarray(x).requires_grad_(True)
    if kind == "max":
        fn = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
        out = fn(point, kernel_size, kwargs["stride"], kwargs["padding"], kwargs["dilation"],
                 kwargs["ceil_mode"])
    elif n == 3 and any(s < k for s, k in zip(x.shape[2:], per_axis(kernel_size, 3),
                                              strict=True)):
        return None  # torch's avg_pool3d refuses an axis shorter than the kernel
    else:
        fn = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[n - 1]
        out = fn(point, kernel_size, kwargs["stride"], kwargs["padding"], kwargs["ceil_mode"],
                 kwargs["count_include_pad"])
    v = np.random.default_rng(v_seed).normal(size=tuple(out.shape))
    (grad,) = torch.autograd.grad(out, point, grad_outputs=torch.asarray(v))
    return out.detach().numpy(), v, grad.numpy()


@pytest.mark.parametrize(("name", "native"), small_params(sorted(SMALL_CASES)))
def test_max_pool_ceil_mode_on_an_input_smaller_than_the_kernel(name: str, native: bool) -> None:
    """Forward and vjp against the loop reference and, where torch is installed, against
    ``torch.nn.functional`` and its autograd."""
    case = SMALL_CASES[name]
    x = distinct_values(np.random.default_rng(30), case["x"])
    kernel, stride, pads, dilation = max_args({**case, "ceil_mode": True})
    kwargs = small_max_kwargs(name)
    expected = ref_max_pool(x, kernel, stride, pads, dilation, True)
    v = np.random.default_rng(31).normal(size=expected.shape)
    grad = ref_max_pool_vjp(x, v, kernel, stride, pads, dilation, True)
    oracle = torch_pool("max", x, 31, case["kernel_size"], **kwargs)
    if oracle is not None:
        np.testing.assert_allclose(expected, oracle[0], rtol=0)
        np.testing.assert_allclose(grad, oracle[2], rtol=0)
    out = ops.max_pool(on_backend(x), case["kernel_size"], native=native, **kwargs)
    close(out, expected)
    close(ops.max_pool_vjp(on_backend(x), on_backend(v), case["kernel_size"], native=native,
                           **kwargs), grad)


@pytest.mark.parametrize(("name", "include", "native"), small_params(SMALL_AVG, (True, False)))
def test_avg_pool_ceil_mode_on_an_input_smaller_than_the_kernel(
    name: str, include: bool, native: bool
) -> None:
    """Forward and transpose (divisors included) against the loop reference and, where
    torch is installed, against ``torch.nn.functional`` and its autograd."""
    case = SMALL_CASES[name]
    x = np.random.default_rng(32).normal(size=case["x"])
    kernel, stride, pads = avg_args(case)
    kwargs = small_avg_kwargs(name, include)
    expected = ref_avg_pool(x, kernel, stride, pads, True, include)
    v = np.random.default_rng(33).normal(size=expected.shape)
    grad = ref_avg_pool_transpose(v, case["x"], kernel, stride, pads, True, include)
    oracle = torch_pool("avg", x, 33, case["kernel_size"], **kwargs)
    if oracle is not None:
        np.testing.assert_allclose(expected, oracle[0], rtol=1e-14)
        np.testing.assert_allclose(grad, oracle[2], rtol=1e-14)
    out = ops.avg_pool(on_backend(x), case["kernel_size"], native=native, **kwargs)
    close(out, expected)
    close(ops.avg_pool_transpose(on_backend(v), case["x"], case["kernel_size"], native=native,
                                 **kwargs), grad)


def test_ceil_mode_pools_of_a_small_input_by_hand() -> None:
    """The reported values: one window over a 2x2 input (torch: 2.5, and 4 for the max);
    its gradient spreads v / 4 (AvgPool) or sends v to the maximum."""
    x = on_backend(np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    close(rp.AvgPool2d(3, ceil_mode=True)(x), np.array([[[[2.5]]]]))
    close(rp.MaxPool2d(3, ceil_mode=True)(x), np.array([[[[4.0]]]]))
    v = on_backend(np.array([[[[8.0]]]]))
    close(ops.avg_pool_transpose(v, (1, 1, 2, 2), 3, ceil_mode=True), np.full((1, 1, 2, 2), 2.0))
    close(ops.max_pool_vjp(x, v, 3, ceil_mode=True), np.array([[[[0.0, 0.0], [0.0, 8.0]]]]))


@pytest.mark.parametrize("include", [True, False], ids=["include", "exclude"])
def test_avg_pool3d_of_an_axis_shorter_than_the_kernel(include: bool) -> None:
    """Padding makes room (no ceil mode): torch's own avg_pool3d refuses such an axis, so
    the native torch path pads by hand; every path matches the loop reference."""
    x = np.random.default_rng(34).normal(size=(1, 2, 1, 3, 2))
    kwargs = dict(stride=(1, 2, 2), padding=(1, 0, 1), count_include_pad=include)
    expected = ref_avg_pool(x, (2, 2, 2), (1, 2, 2), pairs((1, 0, 1), 3), False, include)
    v = np.random.default_rng(35).normal(size=expected.shape)
    grad = ref_avg_pool_transpose(v, x.shape, (2, 2, 2), (1, 2, 2), pairs((1, 0, 1), 3),
                                  False, include)
    for native in (True,) if BACKEND == "jax" else (True, False):
        close(ops.avg_pool(on_backend(x), 2, native=native, **kwargs), expected)
        close(ops.avg_pool_transpose(on_backend(v), x.shape, 2, native=native, **kwargs), grad)


def test_an_input_smaller_than_the_kernel_needs_ceil_mode() -> None:
    """Without ceil_mode such an input is an error that names the fix; with it, an axis
    where no window starts inside the input (stride 1 here) is one too."""
    x = on_backend(np.ones((1, 2, 2, 2)))
    with pytest.raises(ValueError, match="too small.*ceil_mode=True"):
        ops.max_pool(x, 3)
    with pytest.raises(ValueError, match="too small.*ceil_mode=True"):
        ops.avg_pool(x, 3, count_include_pad=False)
    with pytest.raises(ValueError, match="too small.*stride \\(1, 1\\) and ceil_mode"):
        ops.avg_pool(x, 3, stride=1, ceil_mode=True)
    with pytest.raises(ValueError, match="too small"):
        ops.avg_pool_transpose(on_backend(np.ones((1, 2, 1, 1))), (1, 2, 2, 2), 3)


# ---------------------------------------------------------------------------------------
# jax.jit (JAX session)
# ---------------------------------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit is JAX only")
def test_jit() -> None:
    import jax

    case = MAX_CASES["2d-k2x3-s2-ceil"]
    rng = np.random.default_rng(17)
    x = rng.integers(0, 3, size=case["x"]).astype(np.float64)
    kernel, stride, pads, dilation = max_args(case)
    v = rng.normal(size=ref_max_pool(x, kernel, stride, pads, dilation, True).shape)
    expected = ref_max_pool_vjp(x, v, kernel, stride, pads, dilation, True)
    for native in (True, False):
        fn = jax.jit(lambda a, u, native=native: ops.max_pool_vjp(
            a, u, case["kernel_size"], native=native, **max_kwargs(case)))
        close(fn(on_backend(x), on_backend(v)), expected)


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


def test_errors() -> None:
    x = on_backend(np.ones(X2))
    with pytest.raises(ValueError, match="more than half"):
        ops.max_pool(x, 2, padding=2)
    with pytest.raises(ValueError, match="more than half"):
        ops.avg_pool(x, 3, padding=((0, 2), 0))
    with pytest.raises(ValueError, match="v has shape"):
        ops.max_pool_vjp(x, on_backend(np.ones((2, 3, 2, 2))), 2)
    with pytest.raises(ValueError, match="v has shape"):
        ops.avg_pool_transpose(on_backend(np.ones((2, 3, 2, 2))), X2, 2)
    with pytest.raises(ValueError, match="output_size"):
        ops.adaptive_avg_pool(x, (1, 2, 3))
    with pytest.raises(ValueError, match="kernel_size"):
        ops.max_pool(x, (2, 2, 2))
    with pytest.raises(TypeError, match="real floating"):
        ops.max_pool(on_backend(np.ones(X2), "int64"), 2)
    with pytest.raises(ValueError, match="length"):
        ops.avg_pool(on_backend(np.ones((2, 3))), 2)
    with pytest.raises(ValueError, match="pads"):
        ops.pad(x, ((1, 2, 3), 0))


@pytest.mark.skipif(BACKEND != "torch", reason="compares with torch's autograd")
@pytest.mark.parametrize("n", [1, 2, 3])
def test_first_ties_are_torch_autograd(n) -> None:
    """``ties="first"`` routes each window's cotangent as torch's max-pool backward does,
    on inputs full of ties (small integers), overlapping windows and padding included;
    the adaptive pool with overlapping windows too."""
    import torch
    import torch.nn.functional as F

    shape = ((2, 3, 9), (2, 3, 7, 6), (1, 2, 5, 6, 4))[n - 1]
    x = torch.asarray(np.random.default_rng(20).integers(0, 3, size=shape).astype(float))
    point = x.clone().requires_grad_(True)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[n - 1]
    expected = pool(point, 3, 1, 1)
    v = torch.asarray(np.random.default_rng(21).normal(size=tuple(expected.shape)))
    (grad,) = torch.autograd.grad(expected, point, grad_outputs=v)
    for native in (True, False):
        close(ops.max_pool_vjp(x, v, 3, 1, 1, native=native, ties="first"), grad.numpy())
    adaptive = (F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d)[n - 1]
    sizes = tuple(s - 1 for s in shape[2:])
    out = adaptive(point, sizes)
    w = torch.asarray(np.random.default_rng(22).normal(size=tuple(out.shape)))
    (grad,) = torch.autograd.grad(out, point, grad_outputs=w)
    close(ops.adaptive_max_pool_vjp(x, w, ties="first"), grad.numpy())
