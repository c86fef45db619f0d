"""Cross-backend parity: the same NumPy weights and inputs give the same relevance on the
backend under test as on NumPy, computed in the same process.

The reference model is built directly from the seeded NumPy parameters on NumPy
(``rp.asarray(..., backend="numpy")``), in the same dtype as the tested model (a float32
run is compared with a float32 NumPy run, not with float64). Tolerances
(``helpers.TOLERANCE``): rtol 1e-10 in float64, 1e-5 in float32, each with
``atol = rtol * max|R_ref|``: entries that are much smaller than the largest relevance
(near-zero sums of cancelling terms) are held to the same absolute accuracy as the largest
one, since their relative error is the largest one's rounding divided by a small number.

Largest parity errors measured (``max |R - R_ref| / max |R_ref|`` over every test; elementwise
relative error over entries with ``|R_ref| >= 1e-3 max |R_ref|`` in brackets), 3-layer dense
ReLU net 6-8-5-3, batch 4, every composite and rule:

- numpy:            float64 0 [0],             float32 0 [0]
- torch:            float64 0 [0],             float32 9.5e-07 [3.3e-05]
- jax:              float64 2.4e-16 [8.1e-15], float32 1.5e-06 [4.9e-05]
- array_api_strict: float64 0 [0],             float32 0 [0]

(NumPy and array-api-strict run the same NumPy kernels; torch's float64 CPU matmuls of
these sizes happen to round identically.) The float32 maxima come from
``test_float_target_parity`` (a random signed initial relevance).

``test_zz_largest_parity_error`` prints these numbers (``-s``) and asserts them.
"""

from __future__ import annotations

import subprocess
import sys

import array_api_compat
import numpy as np
import pytest
from helpers import BACKEND, TOLERANCE, assert_close, dense_model, dtype_name, random_weights

import relprop as rp
from relprop._xp import library_of

DTYPES = ["float64", "float32"]
SIZES = [6, 8, 5, 3]
BATCH = 4

# largest error per dtype: (normwise, elementwise over non-negligible entries, test id)
RECORD: dict[str, tuple[float, float, str]] = {}


def params():
    return random_weights(np.random.default_rng(1234), SIZES)


def inputs(dtype: str) -> np.ndarray:
    x = np.random.default_rng(99).normal(scale=1.5, size=(BATCH, SIZES[0]))
    assert (x < 0).any() and (x > 0).any()
    return x.astype(dtype)


def numpy_model(dtype: str) -> rp.Sequential:
    """The reference: the same parameters, built on NumPy without the backend."""
    layers = []
    for index, (weight, bias) in enumerate(params()):
        if index:
            layers.append(rp.ReLU())
        layers.append(rp.Dense(rp.asarray(weight, dtype=dtype, backend="numpy"),
                               rp.asarray(bias, dtype=dtype, backend="numpy")))
    return rp.Sequential(layers)


def pair(dtype: str):
    """(backend model, backend input, NumPy model, NumPy input)."""
    x_np = inputs(dtype)
    model = dense_model(params(), dtype)
    x = rp.asarray(x_np, backend=BACKEND)
    return model, x, numpy_model(dtype), rp.asarray(x_np, backend="numpy")


def same_place(result, x) -> None:
    """``result`` has the library, dtype and device of ``x``."""
    assert library_of(result) == library_of(x) == BACKEND
    assert result.dtype == x.dtype
    assert array_api_compat.device(result) == array_api_compat.device(x)
    if BACKEND == "torch":
        assert result.device == x.device
    if BACKEND == "jax":
        assert result.devices() == x.devices()


def compare(result, reference: np.ndarray, dtype: str, label: str) -> None:
    reference = np.asarray(reference, dtype=np.float64)
    scale = float(np.max(np.abs(reference)))
    assert scale > 0, f"{label}: reference relevance is all zero (useless test)"
    error = np.abs(rp.to_numpy(result).astype(np.float64) - reference)
    normwise = float(error.max()) / scale
    big = np.abs(reference) >= 1e-3 * scale
    elementwise = float(np.max(error[big] / np.abs(reference[big])))
    worst, worst_elementwise, worst_label = RECORD.get(dtype, (-1.0, 0.0, ""))
    if normwise > worst:
        worst, worst_label = normwise, label
    RECORD[dtype] = (worst, max(worst_elementwise, elementwise), worst_label)
    rtol = TOLERANCE[dtype]
    assert_close(result, reference, dtype=dtype, rtol=rtol, atol=rtol * scale)


COMPOSITES = {
    "EpsilonPlus": lambda: rp.composites.EpsilonPlus(),
    "EpsilonPlusFlat": lambda: rp.composites.EpsilonPlusFlat(),
    "EpsilonAlpha2Beta1": lambda: rp.composites.EpsilonAlpha2Beta1(),
    "EpsilonAlpha2Beta1Flat": lambda: rp.composites.EpsilonAlpha2Beta1Flat(),
    "EpsilonGammaBox": lambda: rp.composites.EpsilonGammaBox(low=-3.0, high=3.0),
    "EpsilonPlus-eps0.1-nobias": lambda: rp.composites.EpsilonPlus(epsilon=0.1,
                                                                   zero_params="bias"),
    "custom": lambda: rp.composites.Composite(
        layer_map={rp.Dense: rp.rules.Gamma(0.5)},
        first_map={rp.Dense: rp.rules.ZBox(-4.0, 4.0)},
        name_map={"4": rp.rules.AlphaBeta(1.0, 0.0), 2: rp.rules.WSquare()},
    ),
}

RULES = {
    "Epsilon": lambda: rp.rules.Epsilon(),
    "Epsilon-0.25": lambda: rp.rules.Epsilon(0.25),
    "Epsilon-0.25-nobias": lambda: rp.rules.Epsilon(0.25, zero_params="bias"),
    "ZPlus": lambda: rp.rules.ZPlus(),
    "ZPlus-nobias": lambda: rp.rules.ZPlus(zero_params="bias"),
    "AlphaBeta-2-1": lambda: rp.rules.AlphaBeta(2.0, 1.0),
    "AlphaBeta-1-0": lambda: rp.rules.AlphaBeta(1.0, 0.0),
    "Gamma": lambda: rp.rules.Gamma(),
    "Gamma-1": lambda: rp.rules.Gamma(1.0),
    "ZBox": lambda: rp.rules.ZBox(-3.0, 3.0),
    "WSquare": lambda: rp.rules.WSquare(),
    "WSquare-nobias": lambda: rp.rules.WSquare(zero_params="bias"),
    "Flat": lambda: rp.rules.Flat(),
    "Norm": lambda: rp.rules.Norm(),
    "Gradient": lambda: rp.rules.Gradient(),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(COMPOSITES))
def test_composite_parity(name: str, dtype: str) -> None:
    model, x, ref_model, ref_x = pair(dtype)
    result = rp.lrp(model, x, composite=COMPOSITES[name]())
    reference = rp.lrp(ref_model, ref_x, composite=COMPOSITES[name]())
    same_place(result, x)
    compare(result, reference, dtype, f"composite {name} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(RULES))
def test_rule_parity(name: str, dtype: str) -> None:
    model, x, ref_model, ref_x = pair(dtype)
    target = [0, 2, 1, 2]
    result = rp.lrp(model, x, target, rule=RULES[name]())
    reference = rp.lrp(ref_model, ref_x, target, rule=RULES[name]())
    same_place(result, x)
    compare(result, reference, dtype, f"rule {name} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_relevance_parity(dtype: str) -> None:
    """``return_layers=True``: every layer's relevance matches, not only the input's."""
    model, x, ref_model, ref_x = pair(dtype)
    composite = rp.composites.EpsilonAlpha2Beta1Flat
    result, layers = rp.lrp(model, x, 1, composite=composite(), return_layers=True)
    _, ref_layers = rp.lrp(ref_model, ref_x, 1, composite=composite(), return_layers=True)
    assert list(layers) == list(ref_layers) == ["input", *model.names]
    same_place(result, x)
    for name, layer in layers.items():
        same_place(layer, x)
        compare(layer, ref_layers[name], dtype, f"return_layers R[{name!r}] {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gradient_parity(dtype: str) -> None:
    model, x, ref_model, ref_x = pair(dtype)
    for method in (rp.gradient, rp.gradient_x_input):
        result = method(model, x, 2)
        same_place(result, x)
        compare(result, method(ref_model, ref_x, 2), dtype, f"{method.__name__} {dtype}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_float_target_parity(dtype: str) -> None:
    """A float initial relevance of the output's shape, made on each backend."""
    model, x, ref_model, ref_x = pair(dtype)
    start = np.random.default_rng(5).normal(size=(BATCH, SIZES[-1])).astype(dtype)
    result = rp.lrp(model, x, rp.asarray(start, backend=BACKEND), rule=rp.rules.Epsilon(0.1))
    reference = rp.lrp(ref_model, ref_x, start, rule=rp.rules.Epsilon(0.1))
    same_place(result, x)
    compare(result, reference, dtype, f"float target {dtype}")


# ---------------------------------------------------------------------------------------
# conversions keep values, library and dtype
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_to_round_trip_keeps_weights(dtype: str) -> None:
    ref_model = numpy_model(dtype)
    moved = ref_model.to(BACKEND)
    back = moved.to("numpy")
    expected = [rp.to_numpy(p) for p in ref_model.named_params().values()]
    assert list(moved.named_params()) == list(ref_model.named_params())
    for original, there, here in zip(expected, moved.named_params().values(),
                                     back.named_params().values(), strict=True):
        assert_close(there, original, dtype=dtype, rtol=0.0)
        assert library_of(here) == "numpy"
        assert here.dtype == original.dtype
        np.testing.assert_array_equal(here, original)
    # the source model is untouched
    for original, now in zip(expected, ref_model.named_params().values(), strict=True):
        assert library_of(now) == "numpy"
        np.testing.assert_array_equal(now, original)
    assert moved.names == ref_model.names
    assert [type(layer) for layer in moved] == [type(layer) for layer in ref_model]


@pytest.mark.parametrize("dtype", DTYPES)
def test_model_to_backend_matches_direct_build(dtype: str) -> None:
    """``numpy_model(...).to(backend)`` explains exactly like a model built on the backend."""
    model, x, ref_model, _ = pair(dtype)
    rule = rp.rules.Gamma()
    assert_close(rp.lrp(ref_model.to(BACKEND), x, 0, rule=rule),
                 rp.to_numpy(rp.lrp(model, x, 0, rule=rule)), dtype=dtype, rtol=0.0)


def test_asarray_keeps_dtypes() -> None:
    a64 = np.random.default_rng(0).normal(size=(2, 3))
    for obj in (a64, a64.tolist()):
        result = rp.asarray(obj, dtype="float64" if isinstance(obj, list) else None,
                            backend=BACKEND)
        assert_close(result, a64, dtype="float64", rtol=0.0)
    assert rp.default_backend() == BACKEND
    assert_close(rp.asarray(a64), a64, dtype="float64", rtol=0.0)
    a32 = a64.astype(np.float32)
    assert_close(rp.asarray(a32, backend=BACKEND), a32, dtype="float32", rtol=0.0)
    assert_close(rp.asarray(a64, dtype="float32", backend=BACKEND), a32, dtype="float32",
                 rtol=0.0)
    xp = rp.array_namespace(x=rp.asarray(a64, backend=BACKEND))
    assert_close(rp.asarray(a32, dtype=xp.float64, backend=BACKEND), a32.astype(np.float64),
                 dtype="float64", rtol=0.0)
    # from another backend's array (through NumPy), dtype kept
    there = rp.asarray(a64, backend=BACKEND)
    back = rp.asarray(there, backend="numpy")
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, a64)


def test_model_astype_round_trip() -> None:
    model, _, _, _ = pair("float64")
    narrow = model.astype("float32")
    assert all(dtype_name(p) == "float32" for p in narrow.named_params().values())
    assert all(library_of(p) == BACKEND for p in narrow.named_params().values())
    wide = narrow.astype("float64")
    for original, p in zip(model.named_params().values(), wide.named_params().values(),
                           strict=True):
        expected = rp.to_numpy(original).astype(np.float32).astype(np.float64)
        assert_close(p, expected, dtype="float64", rtol=0.0)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX makes float64 float32 unless x64 is on")
def test_jax_asarray_float64_in_fresh_process() -> None:
    """In a process where nobody enabled x64, ``rp.asarray`` of float64 data and
    ``model.to("jax")`` still give float64 (the test suite's conftest enables x64 itself,
    so this needs a fresh interpreter)."""
    code = (
        "import numpy as np, jax, relprop as rp\n"
        "assert not jax.config.jax_enable_x64\n"
        "a = rp.asarray(np.ones((2, 2)), backend='jax')\n"
        "m = rp.Sequential([rp.Dense(np.ones((1, 2)), np.zeros(1))]).to('jax')\n"
        "r = rp.lrp(m, a, 0, rule=rp.rules.Epsilon())\n"
        "print(a.dtype, m[0].weight.dtype, r.dtype)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["float64", "float64", "float64"]


def test_zz_largest_parity_error() -> None:
    """Report (``-s``) and check the largest parity error seen by the tests above."""
    if not RECORD:
        pytest.skip("no parity test ran in this session (deselected)")
    lines = [f"{dtype}: {normwise:.2e} normwise, {elementwise:.2e} elementwise ({label})"
             for dtype, (normwise, elementwise, label) in RECORD.items()]
    print(f"\nlargest parity error on {BACKEND}:\n  " + "\n  ".join(lines))
    for dtype, (normwise, _, _) in RECORD.items():
        assert normwise <= TOLERANCE[dtype], "\n".join(lines)
