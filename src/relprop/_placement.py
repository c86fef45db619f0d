"""Where new arrays go: beside the array they are computed from.

Every array a function creates takes the library, dtype and device of its input
(DESIGN.md, "Devices"): ``xp.zeros(shape, dtype=x.dtype, **placement(x, xp))``. Host data
(a NumPy generator's draws, for the same numbers on every backend) enters the input's
device once, through :func:`from_host`.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from array_api_compat import device

from relprop._xp import Array, asarray, backend_name

__all__ = ["from_host", "placement"]


def placement(like: Array, xp: ModuleType) -> dict[str, Any]:
    """``device=`` keyword for new arrays beside ``like``.

    JAX arrays are left on the default device without committing them to it: JAX compiles
    every operation separately for committed and uncommitted arguments, so committing
    would double its compile work.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones(3)
    >>> np.zeros(2, **placement(x, np)).shape
    (2,)
    """
    return {} if backend_name(xp) == "jax" else {"device": device(like)}


def _host_dtype(dtype: Any) -> Any:
    """NumPy's dtype of the same name (``None`` where NumPy has none, e.g. bfloat16)."""
    import numpy as np

    try:
        return np.dtype(str(dtype).rsplit(".", 1)[-1])
    except TypeError:
        return None


def from_host(values: Any, like: Array, xp: ModuleType) -> Array:
    """Host data (a NumPy array) as an array of ``like``'s library, dtype and device:
    one transfer. The cast to the dtype happens on the host where NumPy has it, so every
    library rounds the values alike (the same draws on every backend).

    Examples
    --------
    >>> import numpy as np
    >>> from_host(np.arange(3), np.ones(2, dtype=np.float32), np).dtype
    dtype('float32')
    """
    import numpy as np

    host = _host_dtype(like.dtype)
    if host is not None:
        values = np.asarray(values).astype(host, copy=False)
    return asarray(values, dtype=like.dtype, backend=backend_name(xp), **placement(like, xp))
