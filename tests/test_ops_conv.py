"""``relprop.ops.conv`` and ``conv_transpose`` on the backend under test.

Oracles: a per-output-element loop in NumPy float64 (forward and its scatter-form
adjoint, written from the definition, sharing no code with the library); the dot-product
identity <conv(x), v> = <x, conv_transpose(v)>; the backend's own VJP of the forward
(torch autograd, ``jax.vjp``, finite differences on NumPy / array-api-strict: exact up to
rounding for a linear map, ~1e-10 relative); and, on torch, ``torch.nn.functional``.
Native and portable paths are compared with each other on every backend.

Shapes are few and small: JAX compiles once per shape and op.
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


def close(actual, expected: np.ndarray, dtype: str = "float64", rtol: float | None = None):
    """Library, dtype, shape, then values within ``rtol`` relative to the largest entry."""
    rtol = RTOL[dtype] if rtol is None else rtol
    scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    assert_close(actual, expected, dtype=dtype, rtol=rtol, atol=rtol * (scale or 1.0))


def assert_kind(a, shape: tuple, dtype: str = "float64") -> None:
    """Library, dtype and shape only (values are checked otherwise)."""
    assert rp.library_of(a) == BACKEND, f"result is {type(a)}, not a {BACKEND} array"
    assert str(a.dtype).rsplit(".", 1)[-1] == dtype
    assert tuple(a.shape) == tuple(shape)


# ---------------------------------------------------------------------------------------
# NumPy loop references (from the definition)
# ---------------------------------------------------------------------------------------


def pairs(padding, kernel, dilation, n):
    """The padding as (before, after) per axis, read independently of the library."""
    if padding == "same":
        totals = [d * (k - 1) for k, d in zip(kernel, dilation, strict=True)]
        return [(t // 2, t - t // 2) for t in totals]
    if isinstance(padding, int):
        return [(padding, padding)] * n
    return [(p, p) if isinstance(p, int) else tuple(p) for p in padding]


def per_axis(value, n):
    return (value,) * n if isinstance(value, int) else tuple(value)


def naive_geometry(in_spatial, kernel, stride, pads, dilation):
    padded = [s + b + a for s, (b, a) in zip(in_spatial, pads, strict=True)]
    out = [
        (p - d * (k - 1) - 1) // s + 1
        for p, k, s, d in zip(padded, kernel, stride, dilation, strict=True)
    ]
    return padded, out


def naive_conv(x, w, b, stride, pads, dilation, groups):
    n = x.ndim - 2
    batch, channels = x.shape[:2]
    out_channels, kernel = w.shape[0], w.shape[2:]
    xpad = np.pad(x, [(0, 0), (0, 0), *pads])
    _, out_spatial = naive_geometry(x.shape[2:], kernel, stride, pads, dilation)
    per_group_in, per_group_out = channels // groups, out_channels // groups
    out = np.zeros((batch, out_channels, *out_spatial))
    for i in range(batch):
        for o in range(out_channels):
            first = (o // per_group_out) * per_group_in
            for j in np.ndindex(*out_spatial):
                acc = 0.0 if b is None else b[o]
                for c in range(per_group_in):
                    for t in np.ndindex(*kernel):
                        pos = tuple(j[a] * stride[a] + t[a] * dilation[a] for a in range(n))
                        acc += w[(o, c, *t)] * xpad[(i, first + c, *pos)]
                out[(i, o, *j)] = acc
    return out


def naive_conv_transpose(v, w, input_shape, stride, pads, dilation, groups):
    """Scatter form: each output element sends W * v back to the inputs it read."""
    n = len(input_shape) - 2
    batch, channels = input_shape[:2]
    out_channels, kernel = w.shape[0], w.shape[2:]
    padded, out_spatial = naive_geometry(input_shape[2:], kernel, stride, pads, dilation)
    assert tuple(v.shape[2:]) == tuple(out_spatial)
    per_group_in, per_group_out = channels // groups, out_channels // groups
    gpad = np.zeros((batch, channels, *padded))
    for i in range(batch):
        for o in range(out_channels):
            first = (o // per_group_out) * per_group_in
            for j in np.ndindex(*out_spatial):
                for c in range(per_group_in):
                    for t in np.ndindex(*kernel):
                        pos = tuple(j[a] * stride[a] + t[a] * dilation[a] for a in range(n))
                        gpad[(i, first + c, *pos)] += w[(o, c, *t)] * v[(i, o, *j)]
    crop = tuple(slice(b, b + s) for (b, _), s in zip(pads, input_shape[2:], strict=True))
    return gpad[(slice(None), slice(None), *crop)]


# ---------------------------------------------------------------------------------------
# cases (few shapes: JAX compiles per shape)
# ---------------------------------------------------------------------------------------

CASES = {
    # 2d: x (2, 4, 7, 6), a non-square kernel so that swapped axes show
    "2d-plain-bias": dict(x=(2, 4, 7, 6), out=6, kernel=(3, 2), stride=1, padding=0,
                          dilation=1, groups=1, bias=True),
    "2d-stride2-pad1-groups2": dict(x=(2, 4, 7, 6), out=6, kernel=(3, 2), stride=2,
                                    padding=1, dilation=1, groups=2, bias=False),
    "2d-asym-pad-dil-stride-groups2": dict(x=(2, 4, 7, 6), out=6, kernel=(3, 2),
                                           stride=(2, 3), padding=((1, 2), (0, 1)),
                                           dilation=(1, 2), groups=2, bias=True),
    "2d-same-odd-total": dict(x=(2, 4, 7, 6), out=6, kernel=(3, 2), stride=1,
                              padding="same", dilation=(2, 1), groups=1, bias=True),
    "2d-depthwise": dict(x=(2, 4, 7, 6), out=8, kernel=(3, 2), stride=2, padding=(2, 1),
                         dilation=1, groups=4, bias=True),
    # 1d: x (2, 4, 9)
    "1d-plain-bias": dict(x=(2, 4, 9), out=6, kernel=(3,), stride=1, padding=0,
                          dilation=1, groups=1, bias=True),
    # the last input element is read by no window (and there is no padding after it)
    "1d-asym-dil-groups2": dict(x=(2, 4, 9), out=6, kernel=(3,), stride=2,
                                padding=((1, 0),), dilation=2, groups=2, bias=False),
    "1d-same-even-kernel": dict(x=(2, 4, 9), out=6, kernel=(4,), stride=1, padding="same",
                                dilation=1, groups=1, bias=True),
    "1d-depthwise": dict(x=(2, 4, 9), out=4, kernel=(3,), stride=3, padding=1, dilation=1,
                         groups=4, bias=True),
    # 3d: x (1, 4, 4, 5, 3), three different kernel sizes
    "3d-stride-asym-pad-groups2": dict(x=(1, 4, 4, 5, 3), out=4, kernel=(2, 3, 1),
                                       stride=(1, 2, 1), padding=((1, 0), (1, 1), (0, 1)),
                                       dilation=(2, 1, 1), groups=2, bias=True),
}


def make_case(name: str, seed: int = 0):
    case = CASES[name]
    rng = np.random.default_rng(seed)
    n = len(case["x"]) - 2
    x = rng.normal(size=case["x"])
    w = rng.normal(size=(case["out"], case["x"][1] // case["groups"], *case["kernel"]))
    b = rng.normal(size=case["out"]) if case["bias"] else None
    kwargs = dict(stride=case["stride"], padding=case["padding"], dilation=case["dilation"],
                  groups=case["groups"])
    ref = dict(stride=per_axis(case["stride"], n), dilation=per_axis(case["dilation"], n),
               pads=pairs(case["padding"], case["kernel"], per_axis(case["dilation"], n), n),
               groups=case["groups"])
    return x, w, b, kwargs, ref


def cast(a: np.ndarray | None, dtype: str = "float64"):
    """A NumPy array rounded to ``dtype`` (so references see the same inputs), as float64."""
    return None if a is None else a.astype(dtype).astype(np.float64)


def conv_ref(x, w, b, ref):
    return naive_conv(x, w, b, ref["stride"], ref["pads"], ref["dilation"], ref["groups"])


def conv_t_ref(v, w, shape, ref):
    return naive_conv_transpose(v, w, shape, ref["stride"], ref["pads"], ref["dilation"],
                                ref["groups"])


NATIVE = [True, False]
NATIVE_IDS = ["native", "portable"]

# JAX compiles every op once per shape and geometry (~50 ms per eager op here, ~0.3-1 s
# per jitted function), which makes the portable path (dozens of small eager ops) cost
# ~1-2 s per case and function there. On JAX the native path runs on JAX_CASES and the
# portable one on JAX_PORTABLE, which between them cover stride, asymmetric and "same"
# padding, dilation, groups (incl. depthwise), 1d and 2d; the other cases are skipped
# there (visibly) and run on every other backend.
JAX_PORTABLE = ("2d-asym-pad-dil-stride-groups2", "1d-asym-dil-groups2")
JAX_CASES = {*JAX_PORTABLE, "2d-same-odd-total", "2d-depthwise", "1d-same-even-kernel",
             "3d-stride-asym-pad-groups2"}
JAX_SKIP = pytest.mark.skip(reason="on JAX only the JAX_CASES / JAX_PORTABLE cases run")


def case_params(natives=(True, False), jax_portable=JAX_PORTABLE):
    """(case, native) parameters, restricted on JAX (see JAX_CASES)."""
    params = []
    for name in sorted(CASES):
        for native in natives:
            skip = BACKEND == "jax" and name not in (JAX_CASES if native else jax_portable)
            params.append(pytest.param(name, native, id=f"{name}-{NATIVE_IDS[not native]}",
                                       marks=JAX_SKIP if skip else ()))
    return params


def dtype_params():
    """(case, dtype) parameters of the native == portable test; float32 on JAX: one case."""
    params = []
    for name in sorted(CASES):
        for dtype in ("float64", "float32"):
            skip = BACKEND == "jax" and (
                name not in JAX_PORTABLE or (dtype == "float32" and name != JAX_PORTABLE[1])
            )
            params.append(pytest.param(name, dtype, id=f"{name}-{dtype}",
                                       marks=JAX_SKIP if skip else ()))
    return params


# ---------------------------------------------------------------------------------------
# forward and transpose against the loop references
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "native"), case_params())
def test_conv_matches_loop_reference(name: str, native: bool) -> None:
    x, w, b, kwargs, ref = make_case(name)
    out = ops.conv(on_backend(x), on_backend(w), None if b is None else on_backend(b),
                   native=native, **kwargs)
    close(out, conv_ref(x, w, b, ref))


@pytest.mark.parametrize(("name", "native"), case_params())
def test_conv_transpose_matches_loop_reference(name: str, native: bool) -> None:
    x, w, _, kwargs, ref = make_case(name)
    out_shape = conv_ref(x, w, None, ref).shape
    v = np.random.default_rng(1).normal(size=out_shape)
    result = ops.conv_transpose(on_backend(v), on_backend(w), input_shape=x.shape,
                                native=native, **kwargs)
    close(result, conv_t_ref(v, w, x.shape, ref))


@pytest.mark.parametrize(("name", "dtype"), dtype_params())
def test_native_equals_portable(name: str, dtype: str) -> None:
    x, w, b, kwargs, ref = make_case(name, seed=2)
    xb, wb = on_backend(x, dtype), on_backend(w, dtype)
    bb = None if b is None else on_backend(b, dtype)
    native = ops.conv(xb, wb, bb, **kwargs)
    portable = ops.conv(xb, wb, bb, native=False, **kwargs)
    close(native, rp.to_numpy(portable).astype(np.float64), dtype)
    # float32 results: close to the float64 reference of the rounded inputs
    close(native, conv_ref(cast(x, dtype), cast(w, dtype), cast(b, dtype), ref), dtype)
    v = np.random.default_rng(3).normal(size=tuple(native.shape))
    vb = on_backend(v, dtype)
    native_t = ops.conv_transpose(vb, wb, input_shape=x.shape, **kwargs)
    portable_t = ops.conv_transpose(vb, wb, input_shape=x.shape, native=False, **kwargs)
    close(native_t, rp.to_numpy(portable_t).astype(np.float64), dtype)
    close(native_t, conv_t_ref(cast(v, dtype), cast(w, dtype), x.shape, ref), dtype)


# ---------------------------------------------------------------------------------------
# adjoint identities
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "native"), case_params())
def test_dot_product_identity(name: str, native: bool) -> None:
    """<conv(x), v> == <x, conv_transpose(v)> (no bias: the linear part)."""
    x, w, _, kwargs, _ = make_case(name, seed=4)
    wb = on_backend(w)
    y = ops.conv(on_backend(x), wb, native=native, **kwargs)
    v = np.random.default_rng(5).normal(size=tuple(y.shape))
    g = ops.conv_transpose(on_backend(v), wb, input_shape=x.shape, native=native, **kwargs)
    assert_kind(g, x.shape)
    lhs = float(np.vdot(rp.to_numpy(y), v))
    rhs = float(np.vdot(x, rp.to_numpy(g)))
    assert lhs == pytest.approx(rhs, rel=1e-12, abs=1e-12 * np.abs(v).sum())


@pytest.mark.parametrize(("name", "native"), case_params(jax_portable=JAX_PORTABLE[1:]))
def test_conv_transpose_equals_backend_vjp(name: str, native: bool) -> None:
    """conv_transpose == rp.vjp of conv (torch autograd, jax.vjp, finite differences)."""
    x, w, b, kwargs, _ = make_case(name, seed=6)
    wb = on_backend(w)
    bb = None if b is None else on_backend(b)

    def forward(a):
        return ops.conv(a, wb, bb, native=native, **kwargs)

    xb = on_backend(x)
    v = np.random.default_rng(7).normal(size=tuple(forward(xb).shape))
    vb = on_backend(v)
    expected = rp.to_numpy(rp.vjp(forward, xb, vb)).astype(np.float64)
    result = ops.conv_transpose(vb, wb, input_shape=x.shape, native=native, **kwargs)
    close(result, expected, rtol=VJP_RTOL)


def test_input_shape_resolves_output_padding() -> None:
    """Inputs of length 7 and 8 both give 4 outputs at stride 2: input_shape picks."""
    rng = np.random.default_rng(8)
    w = rng.normal(size=(3, 2, 3))
    v = rng.normal(size=(1, 3, 4))
    for length in (7, 8):
        shape = (1, 2, length)
        expected = naive_conv_transpose(v, w, shape, (2,), [(1, 1)], (1,), 1)
        for native in NATIVE:
            result = ops.conv_transpose(on_backend(v), on_backend(w), input_shape=shape,
                                        stride=2, padding=1, native=native)
            close(result, expected)


def test_conv_output_shape() -> None:
    assert ops.conv_output_shape((1, 4, 7, 6), (6, 2, 3, 2), stride=(2, 3),
                                 padding=((1, 2), (0, 1)), dilation=(1, 2), groups=2) == (
        1, 6, 4, 2)
    assert ops.conv_output_shape((2, 3, 10), (5, 3, 4), padding="same") == (2, 5, 10)


# ---------------------------------------------------------------------------------------
# torch.nn.functional (torch session)
# ---------------------------------------------------------------------------------------

# bias alternates over the grid (it is added after the convolution, independently of the
# other settings), so every other combination appears with and without it somewhere
TORCH_GRID = [
    (n, stride, padding, dilation, groups, stride == dilation)
    for n, stride, padding, dilation, groups in itertools.product(
        (1, 2, 3), (1, 2), (0, 1, "asym", "same"), (1, 2), (1, 2)
    )
    if not (padding == "same" and stride != 1)
]


def torch_id(p) -> str:
    n, stride, padding, dilation, groups, bias = p
    return f"{n}d-s{stride}-p{padding}-d{dilation}-g{groups}-{'bias' if bias else 'nobias'}"


@pytest.mark.skipif(BACKEND != "torch", reason="compares with torch.nn.functional")
@pytest.mark.filterwarnings("ignore:Using padding='same'")
@pytest.mark.parametrize("params", TORCH_GRID, ids=[torch_id(p) for p in TORCH_GRID])
def test_conv_matches_torch(params) -> None:
    import torch
    import torch.nn.functional as F

    n, stride, padding, dilation, groups, bias = params
    rng = np.random.default_rng(9)
    spatial, kernel = (((9,), (3,)), ((8, 7), (3, 2)), ((5, 6, 4), (2, 3, 2)))[n - 1]
    x = torch.asarray(rng.normal(size=(2, 4, *spatial)))
    w = torch.asarray(rng.normal(size=(6, 4 // groups, *kernel)))
    b = torch.asarray(rng.normal(size=6)) if bias else None
    torch_conv = (F.conv1d, F.conv2d, F.conv3d)[n - 1]
    if padding == "asym":
        # no padding after: trailing inputs no window reads must get a zero transpose
        ours = (((1, 0),), ((2, 0), (1, 0)), ((1, 0), (2, 0), (0, 0)))[n - 1]
        flat = [side for pair in reversed(ours) for side in pair]
        expected = torch_conv(F.pad(x, flat), w, b, stride, 0, dilation, groups)
    else:
        ours = padding
        expected = torch_conv(x, w, b, stride, padding, dilation, groups)
    kwargs = dict(stride=stride, padding=ours, dilation=dilation, groups=groups)
    v = torch.asarray(rng.normal(size=tuple(expected.shape)))
    point = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(
        torch_conv(F.pad(point, flat) if padding == "asym" else point, w, b, stride,
                   0 if padding == "asym" else padding, dilation, groups),
        point, grad_outputs=v,
    )
    for native in NATIVE:
        close(ops.conv(x, w, b, native=native, **kwargs), expected.numpy())
        close(ops.conv_transpose(v, w, input_shape=tuple(x.shape), native=native, **kwargs),
              grad.numpy())


# ---------------------------------------------------------------------------------------
# jax.jit (JAX session)
# ---------------------------------------------------------------------------------------


@pytest.mark.skipif(BACKEND != "jax", reason="jax.jit is JAX only")
@pytest.mark.parametrize("native", NATIVE, ids=NATIVE_IDS)
def test_jit(native: bool) -> None:
    import jax

    x, w, b, kwargs, ref = make_case(JAX_PORTABLE[0])
    xb, wb, bb = on_backend(x), on_backend(w), on_backend(b)
    y = jax.jit(lambda a, k, c: ops.conv(a, k, c, native=native, **kwargs))(xb, wb, bb)
    close(y, conv_ref(x, w, b, ref))
    v = np.random.default_rng(10).normal(size=tuple(y.shape))
    g = jax.jit(lambda u, k: ops.conv_transpose(u, k, input_shape=x.shape, native=native,
                                                **kwargs))(on_backend(v), wb)
    close(g, conv_t_ref(v, w, x.shape, ref))


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------


def test_errors() -> None:
    x = on_backend(np.ones((1, 4, 5, 5)))
    w = on_backend(np.ones((6, 2, 3, 3)))
    with pytest.raises(ValueError, match="groups=1 needs 2 input channels"):
        ops.conv(x, w)
    with pytest.raises(ValueError, match="groups=3 must divide"):
        ops.conv(x, on_backend(np.ones((6, 1, 3, 3))), groups=3)
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        ops.conv(x, w, groups=2, stride=2, padding="same")
    with pytest.raises(ValueError, match="non-negative"):
        ops.conv(x, w, groups=2, padding=-1)
    with pytest.raises(ValueError, match=r"\(\(before, after\),\)"):
        ops.conv(on_backend(np.ones((1, 4, 5))), on_backend(np.ones((6, 4, 3))), padding=(1, 2))
    with pytest.raises(ValueError, match="too small"):
        ops.conv(x, w, groups=2, dilation=3)
    with pytest.raises(ValueError, match="spatial axes"):
        ops.conv(x, on_backend(np.ones((6, 2, 3))), groups=2)
    with pytest.raises(ValueError, match="length"):
        ops.conv(on_backend(np.ones((4, 5))), on_backend(np.ones((6, 4))))
    with pytest.raises(ValueError, match="bias must have shape"):
        ops.conv(x, w, on_backend(np.ones(3)), groups=2)
    with pytest.raises(ValueError, match="v has shape"):
        ops.conv_transpose(on_backend(np.ones((1, 6, 4, 4))), w, input_shape=(1, 4, 5, 5),
                           groups=2)
    with pytest.raises(TypeError, match="real floating"):
        ops.conv(on_backend(np.ones((1, 4, 5, 5)), "int64"), w, groups=2)
    with pytest.raises(TypeError, match="different dtypes"):
        ops.conv(on_backend(np.ones((1, 4, 5, 5)), "float32"), w, groups=2)


@pytest.mark.skipif(BACKEND == "numpy", reason="mixes NumPy with the backend under test")
def test_mixed_libraries_raise() -> None:
    with pytest.raises(TypeError, match="different libraries"):
        ops.conv(on_backend(np.ones((1, 2, 5))), np.ones((3, 2, 3)))
