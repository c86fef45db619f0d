"""The backend boundary: namespaces, ``RELPROP_BACKEND``, dtype and value checks.

Every public entry point looks the array namespace up once here and passes ``xp`` down;
code below that boundary never introspects arrays or imports an array library for maths.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import array_api_compat

__all__ = [
    "BACKENDS",
    "Array",
    "array_namespace",
    "asarray",
    "backend_name",
    "default_backend",
    "default_device",
    "default_namespace",
    "detached",
    "is_traced",
    "library_of",
    "namespace_for",
    "to_numpy",
]

Array = Any
"""Any array of a supported library (the standard has no single array type)."""

BACKENDS: tuple[str, ...] = ("numpy", "torch", "jax", "cupy", "array_api_strict")
"""The values ``RELPROP_BACKEND`` accepts."""

_IMPORT_NAME = {
    "numpy": "numpy",
    "torch": "torch",
    "jax": "jax",
    "cupy": "cupy",
    "array_api_strict": "array_api_strict",
}

_CONVERT_HINT = {
    "numpy": "numpy.asarray(a) (for torch: a.detach().cpu().numpy())",
    "torch": "torch.asarray(a)",
    "jax": "jax.numpy.asarray(a)",
    "cupy": "cupy.asarray(a)",
    "array_api_strict": "array_api_strict.asarray(a)",
}


def library_of(x: object) -> str | None:
    """Name of the array library that owns ``x``, or ``None`` if ``x`` is no array.

    Examples
    --------
    >>> import numpy as np
    >>> library_of(np.zeros(2))
    'numpy'
    """
    if array_api_compat.is_numpy_array(x):
        return "numpy"
    if array_api_compat.is_torch_array(x):
        return "torch"
    if array_api_compat.is_jax_array(x):
        return "jax"
    if array_api_compat.is_cupy_array(x):
        return "cupy"
    if type(x).__module__.startswith("array_api_strict"):
        return "array_api_strict"
    return None


def array_namespace(**named_arrays: object) -> ModuleType:
    """Array-API namespace shared by the given arrays, checking they come from one library.

    Parameters
    ----------
    **named_arrays
        Arrays by the argument name a user would recognise (``x=..., weight=...``);
        ``None`` values and Python scalars are ignored.

    Returns
    -------
    module
        The array-API compatible namespace (``array_api_compat.numpy``, ``jax.numpy``...).

    Raises
    ------
    TypeError
        If the arrays come from different libraries; the message names the first argument
        of each library (counting the rest) and how to convert.

    Examples
    --------
    >>> import numpy as np
    >>> array_namespace(x=np.ones(2), w=np.ones(2)).__name__
    'array_api_compat.numpy'
    """
    libraries: dict[str, list[str]] = {}
    arrays = []
    for name, value in named_arrays.items():
        if value is None or isinstance(value, (bool, int, float, complex)):
            continue
        library = library_of(value)
        if library is None:
            raise TypeError(
                f"{name} is a {type(value).__module__}.{type(value).__qualname__}, not an array "
                f"of a supported library ({', '.join(BACKENDS)})."
            )
        libraries.setdefault(library, []).append(name)
        arrays.append(value)
    if len(libraries) > 1:
        raise TypeError(_mixed_message(libraries))
    if not arrays:
        return default_namespace()
    return array_api_compat.array_namespace(*arrays)


def _mixed_message(libraries: dict[str, list[str]]) -> str:
    """The mixed-library error: each library's first argument and a count of the rest.

    The library holding the most arrays (a model's parameters, usually) is the one to
    convert to; a model can instead move to the other library.
    """

    def group(library: str, names: list[str]) -> str:
        more = f" (and {len(names) - 1} more of {library})" if len(names) > 1 else ""
        return f"{names[0]} from {library}{more}"

    parts = "; ".join(group(library, names) for library, names in libraries.items())
    most = max(libraries, key=lambda library: len(libraries[library]))
    other = next(library for library in libraries if library != most)
    return (
        f"Arrays from different libraries cannot be mixed: {parts}. Convert "
        f"{libraries[other][0]} to {most}: {_CONVERT_HINT[most]}; or move the model with "
        f"model.to({other!r})."
    )


def default_backend() -> str:
    """The library named by ``RELPROP_BACKEND`` (default ``"numpy"``).

    Raises
    ------
    ValueError
        If the variable names no known backend.
    """
    name = os.environ.get("RELPROP_BACKEND", "numpy").strip() or "numpy"
    if name not in BACKENDS:
        raise ValueError(
            f"RELPROP_BACKEND={name!r} is not a known backend; use one of {', '.join(BACKENDS)}."
        )
    return name


def default_device(backend: str | None = None) -> object:
    """The device named by ``RELPROP_DEVICE`` for arrays made from nothing on the
    ``RELPROP_BACKEND`` library (``None``, the library's default, when it is unset or
    ``backend`` is another library).

    ``RELPROP_DEVICE`` takes torch's device strings (``"cuda:0"``) and array-api-strict's
    device names (``"device1"``: a second device that refuses to mix with the first, as
    CUDA does; the ``tests(array_api_strict-device1)`` session runs the suite there).

    Raises
    ------
    ValueError
        If the variable is set for a library that relprop cannot place arrays on by name.
    """
    name = os.environ.get("RELPROP_DEVICE", "").strip()
    chosen = default_backend()
    if not name or (backend is not None and backend != chosen):
        return None
    if chosen == "array_api_strict":
        return namespace_for(chosen).Device(name)
    if chosen == "torch":
        return importlib.import_module("torch").device(name)
    raise ValueError(
        f"RELPROP_DEVICE={name!r} is supported with RELPROP_BACKEND=torch or "
        f"array_api_strict, not {chosen}; place the arrays yourself (device= arguments)."
    )


def namespace_for(backend: str) -> ModuleType:
    """Array-API namespace of a backend by name (``"numpy"``, ``"torch"``, ...).

    Raises
    ------
    ValueError
        If ``backend`` is not one of :data:`BACKENDS`.
    ImportError
        If the library is not installed; the message says which extra installs it.
    """
    if backend not in BACKENDS:
        raise ValueError(f"Unknown backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    try:
        importlib.import_module(_IMPORT_NAME[backend])
    except ImportError as error:
        extra = "strict" if backend == "array_api_strict" else backend
        raise ImportError(
            f"Backend {backend!r} needs the {_IMPORT_NAME[backend]} package: "
            f"pip install 'relprop[{extra}]'."
        ) from error
    if backend == "jax":
        from relprop._pytree import register_pytrees

        namespace = importlib.import_module("jax.numpy")
        register_pytrees()
        return namespace
    if backend == "array_api_strict":
        return importlib.import_module("array_api_strict")
    return importlib.import_module(f"array_api_compat.{backend}")


def default_namespace() -> ModuleType:
    """Namespace of the ``RELPROP_BACKEND`` library, used for arrays made from nothing."""
    return namespace_for(default_backend())


def backend_name(xp: ModuleType) -> str:
    """Backend name of a namespace (inverse of :func:`namespace_for`)."""
    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    if array_api_compat.is_jax_namespace(xp):
        return "jax"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_array_api_strict_namespace(xp):
        return "array_api_strict"
    raise TypeError(f"Unsupported array namespace {xp.__name__}.")


def _wants_float64(obj: object, dtype: object) -> bool:
    if dtype is not None:
        return "float64" in str(dtype)
    return "float64" in str(getattr(obj, "dtype", ""))


def enable_jax_float64() -> None:
    """Switch JAX to 64-bit mode, without which JAX silently makes float64 float32."""
    jax = importlib.import_module("jax")
    jax.config.update("jax_enable_x64", True)


def asarray(
    obj: object, *, dtype: object = None, backend: str | None = None, device: object = None
) -> Array:
    """Make an array of the ``RELPROP_BACKEND`` library (or of ``backend``) from any data.

    Parameters
    ----------
    obj
        Nested sequences, a NumPy array, or any array supporting DLPack / ``__array__``.
    dtype
        A dtype of the target namespace, or a name such as ``"float64"``. ``None`` keeps
        the data's own dtype (float64 stays float64, also on JAX); Python data gets
        NumPy's dtypes (floats are float64) on every backend.
    backend
        Override of ``RELPROP_BACKEND``.
    device
        Target device; default ``RELPROP_DEVICE`` (:func:`default_device`), else the
        library's default device.

    Examples
    --------
    >>> a = asarray([[1.0, 2.0]], dtype="float64", backend="numpy")
    >>> a.dtype
    dtype('float64')
    """
    name = default_backend() if backend is None else backend
    xp = namespace_for(name)
    if name == "jax" and _wants_float64(obj, dtype):
        enable_jax_float64()
    if isinstance(dtype, str):
        dtype = getattr(xp, dtype)
    if library_of(obj) is None:
        # Python data gets NumPy's dtypes (float64 for floats) on every backend,
        # instead of each library's own default (float32 on torch and JAX)
        import numpy as np

        obj = np.asarray(obj)
    elif library_of(obj) != name:
        obj = to_numpy(obj)
    if device is None:
        device = default_device(name)
    kwargs: dict[str, Any] = {} if device is None else {"device": device}
    return xp.asarray(obj, dtype=dtype, **kwargs)


def to_numpy(x: Array) -> Any:
    """A NumPy copy of any supported array (for tests, plots and printing).

    Examples
    --------
    >>> import numpy as np
    >>> to_numpy(np.ones(2)).tolist()
    [1.0, 1.0]
    """
    import numpy as np

    library = library_of(x)
    if library == "torch":
        return x.detach().cpu().numpy()
    if library == "cupy":
        return x.get()
    if library == "array_api_strict":
        # strict arrays refuse __array__; DLPack is the documented exchange
        return np.from_dlpack(x)
    return np.asarray(x)


def detached(a: Any) -> Any:
    """``a`` without autograd history if it is a torch tensor with one, else ``a`` itself.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.ones(2)
    >>> detached(a) is a
    True
    """
    if library_of(a) == "torch" and a.requires_grad:
        return a.detach()
    return a


def is_traced(x: Array) -> bool:
    """Whether ``x`` is an abstract value under a JAX transformation such as ``jax.jit``.

    Value checks (NaN, ranges) are impossible on such arrays and are skipped.
    """
    if not array_api_compat.is_jax_array(x):
        return False
    jax_core = sys.modules.get("jax.core")
    return jax_core is not None and isinstance(x, jax_core.Tracer)


def params_namespace(params: Mapping[str, object]) -> ModuleType:
    """Namespace shared by named parameters (``None`` entries ignored)."""
    return array_namespace(**dict(params))
