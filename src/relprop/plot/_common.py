"""Shared helpers of :mod:`relprop.plot`: host conversion, option checks, lazy imports."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from relprop._xp import BACKENDS, array_namespace, library_of, to_numpy

__all__ = ["check_choice", "real_values", "require", "to_host"]


def require(module: str, function: str, package: str) -> ModuleType:
    """Import an optional plotting dependency, naming the ``viz`` extra when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"relprop.plot.{function} needs {package}: pip install 'relprop[viz]'"
        ) from error


def check_choice(name: str, value: object, choices: Sequence[object]) -> None:
    """Raise ``ValueError`` naming the argument unless ``value`` is one of ``choices``."""
    if value not in choices:
        listed = ", ".join(repr(choice) for choice in choices)
        raise ValueError(f"{name}={value!r} is not supported; use one of {listed}.")


def to_host(x: object, name: str) -> np.ndarray:
    """A host NumPy copy of an array of any supported library (torch tensors that require
    grad and CUDA tensors included), converted once at the plotting boundary.

    Examples
    --------
    >>> to_host(np.arange(3), "x").tolist()
    [0, 1, 2]
    """
    library = library_of(x)
    if library is None:
        raise TypeError(
            f"{name} is a {type(x).__module__}.{type(x).__qualname__}, not an array of a "
            f"supported library ({', '.join(BACKENDS)}); wrap it with numpy.asarray(...)."
        )
    if "bfloat16" in str(getattr(x, "dtype", "")):
        # torch's .numpy() refuses bfloat16: widen through the array API first
        xp = array_namespace(**{name: x})
        x = xp.astype(x, xp.float32)
    return np.asarray(to_numpy(x))


def real_values(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` as finite float64, with clear errors for complex, non-numeric or NaN data."""
    if a.dtype.kind == "c":
        raise TypeError(f"{name} is complex ({a.dtype}); pass its real part or its magnitude.")
    if a.dtype.kind not in "biuf" and a.dtype.name != "bfloat16":
        raise TypeError(f"{name} has dtype {a.dtype}; it must hold real numbers.")
    values = a.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise ValueError(
            f"{name} contains NaN or infinite values; check the model and rule that made it."
        )
    return values
