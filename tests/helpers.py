"""Shared test helpers: arrays on the backend under test, strict comparisons, models."""

from __future__ import annotations

import os

import numpy as np

import relprop as rp
from relprop._xp import library_of

BACKEND = os.environ.get("RELPROP_BACKEND", "numpy")
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
"""Relative tolerance of cross-backend parity per dtype."""


def on_backend(a: np.ndarray, dtype: str = "float64"):
    """``a`` as an array of the backend under test, with the given dtype."""
    return rp.asarray(np.asarray(a), dtype=dtype, backend=BACKEND)


def dtype_name(a) -> str:
    return str(a.dtype).rsplit(".", 1)[-1]


def assert_close(actual, expected, *, dtype: str = "float64", rtol: float | None = None,
                 atol: float = 0.0, shape: tuple | None = None) -> None:
    """``actual`` is an array of the backend under test with ``dtype`` and the shape of
    ``expected`` (NumPy), and equals it within ``rtol`` (default the parity tolerance)."""
    assert library_of(actual) == BACKEND, f"result is {type(actual)}, not a {BACKEND} array"
    assert dtype_name(actual) == dtype, f"result dtype {actual.dtype}, expected {dtype}"
    expected = np.asarray(expected)
    want_shape = expected.shape if shape is None else shape
    assert tuple(actual.shape) == tuple(want_shape), f"shape {tuple(actual.shape)} != {want_shape}"
    np.testing.assert_allclose(
        rp.to_numpy(actual), expected, rtol=TOLERANCE[dtype] if rtol is None else rtol, atol=atol
    )


def random_weights(rng: np.random.Generator, sizes: list[int], bias: bool = True):
    """NumPy float64 ``[(W, b), ...]`` for a dense net with layer widths ``sizes``."""
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        weight = rng.normal(scale=1.0 / np.sqrt(n_in), size=(n_out, n_in))
        params.append((weight, rng.normal(scale=0.2, size=n_out) if bias else None))
    return params


def dense_model(params, dtype: str = "float64", activation=rp.ReLU) -> rp.Sequential:
    """An ``rp.Sequential`` on the backend under test: Dense, activation, ..., Dense."""
    layers = []
    for index, (weight, bias) in enumerate(params):
        if index:
            layers.append(activation())
        layers.append(rp.Dense(on_backend(weight, dtype),
                               None if bias is None else on_backend(bias, dtype)))
    return rp.Sequential(layers)
