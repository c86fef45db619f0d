"""One suite for every backend: ``RELPROP_BACKEND`` (set by each nox session) picks the
library. A backend that cannot be imported stops the run with an error; CuPy without a
usable GPU skips every test with that reason."""

from __future__ import annotations

import os

import pytest

import relprop as rp
from relprop._xp import BACKENDS, namespace_for

BACKEND = os.environ.get("RELPROP_BACKEND", "numpy")


def _cupy_skip_reason() -> str | None:
    if BACKEND != "cupy":
        return None
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return "cupy needs a CUDA GPU; none is visible"
    except Exception as error:  # noqa: BLE001 - any CUDA failure means "no usable GPU"
        return f"cupy needs a usable CUDA GPU: {type(error).__name__}: {error}"
    return None


def pytest_configure(config: pytest.Config) -> None:
    if BACKEND not in BACKENDS:
        raise pytest.UsageError(f"RELPROP_BACKEND={BACKEND!r}; use one of {', '.join(BACKENDS)}.")
    try:
        namespace_for(BACKEND)
    except ImportError as error:
        raise pytest.UsageError(f"backend {BACKEND!r} cannot be imported: {error}") from error
    if BACKEND == "jax":
        rp._xp.enable_jax_float64()


def pytest_report_header(config: pytest.Config) -> str:
    return f"relprop backend: {BACKEND}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _cupy_skip_reason()
    if reason is not None:
        for item in items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def backend() -> str:
    """The backend under test (``RELPROP_BACKEND``)."""
    return BACKEND


@pytest.fixture(scope="session")
def xp():
    """The array-API namespace of the backend under test."""
    return namespace_for(BACKEND)
