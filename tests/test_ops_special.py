"""``relprop.ops.erf`` (exact GELU) on the backend under test: the portable series and
continued fraction against the standard library's ``math.erf``, and the native path
against the portable one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import BACKEND, assert_close, on_backend

import relprop as rp
from relprop.ops.special import erf

GRID = np.concatenate([
    np.linspace(-7.0, 7.0, 2801),  # both branches, their seam at 1.5 and the tails
    [0.0, -0.0, 1e-300, -1e-12, 1.5, -1.5, 1.5 - 1e-15, 30.0, -30.0],
])


@pytest.mark.parametrize("native", [True, False], ids=["native", "portable"])
@pytest.mark.parametrize(("dtype", "atol"), [("float64", 2e-15), ("float32", 1e-6)])
def test_erf_matches_math_erf(native: bool, dtype: str, atol: float) -> None:
    x = on_backend(GRID, dtype)
    expected = np.array([math.erf(float(v)) for v in GRID.astype(dtype)])
    assert_close(erf(x, native=native), expected, dtype=dtype, rtol=0.0, atol=atol)


def test_erf_keeps_tiny_values_relative() -> None:
    """Near 0, erf(x) ~ 2x / sqrt(pi): the series keeps full relative accuracy."""
    tiny = np.array([1e-300, 1e-100, 1e-8, -1e-5])
    got = rp.to_numpy(erf(on_backend(tiny), native=False))
    np.testing.assert_allclose(got, [math.erf(v) for v in tiny], rtol=1e-15)


def test_erf_is_odd_and_bounded() -> None:
    x = on_backend(GRID)
    y = rp.to_numpy(erf(x, native=False))
    np.testing.assert_array_equal(y, -rp.to_numpy(erf(-x, native=False)))
    assert np.all(np.abs(y) <= 1.0)


@pytest.mark.skipif(BACKEND != "array_api_strict", reason="array-api-strict's devices")
def test_erf_stays_on_the_input_device() -> None:
    import array_api_strict as xps

    device = xps.Device("device1")
    x = xps.asarray(GRID, device=device)
    assert erf(x).device == device
