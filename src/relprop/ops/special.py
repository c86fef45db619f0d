"""Special functions the array API standard lacks: the error function (exact GELU).

:func:`erf` has native fast paths (``torch.special.erf``, ``jax.scipy.special.erf``,
CuPy's and SciPy's ``special.erf``) and a portable version from the standard's
element-wise functions alone, accurate to a few units in the last place of float64.
"""

from __future__ import annotations

import math
from types import ModuleType

from array_api_compat import (
    is_cupy_namespace,
    is_jax_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

from relprop._xp import Array, array_namespace

__all__ = ["erf"]

_CUT = 1.5  # the series below, the continued fraction above
_SERIES_TERMS = 30
_FRACTION_TERMS = 80


def _erf_portable(x: Array, xp: ModuleType) -> Array:
    r"""For :math:`|x| < 1.5` the everywhere-positive series
    :math:`\operatorname{erf}(x) = \tfrac{2}{\sqrt\pi} e^{-x^2} \sum_{n \ge 0}
    \tfrac{2^n x^{2n+1}}{(2n+1)!!}` (30 terms, no cancellation); above, the continued
    fraction :math:`\operatorname{erfc}(x) = \tfrac{e^{-x^2}}{\sqrt\pi}
    \cfrac{1}{x + \cfrac{1/2}{x + \cfrac{1}{x + \cfrac{3/2}{x + \cdots}}}}` (80 terms,
    evaluated from the tail). Both stay within 1e-15 of the true value in float64."""
    a = xp.abs(x)
    small = xp.clip(a, max=_CUT)
    term, total = small, small
    for n in range(1, _SERIES_TERMS):
        term = term * (2.0 * small * small) / float(2 * n + 1)
        total = total + term
    series = (2.0 / math.sqrt(math.pi)) * xp.exp(-small * small) * total
    large = xp.clip(a, min=_CUT)
    fraction = large
    for k in range(_FRACTION_TERMS, 0, -1):
        fraction = large + (k / 2.0) / fraction
    complement = xp.exp(-large * large) / (math.sqrt(math.pi) * fraction)
    magnitude = xp.where(a < _CUT, series, 1.0 - complement)
    return xp.where(x < 0, -magnitude, magnitude)


def erf(x: Array, *, xp: ModuleType | None = None, native: bool = True) -> Array:
    r"""The error function :math:`\operatorname{erf}(x) = \tfrac{2}{\sqrt\pi}
    \int_0^x e^{-t^2}\,dt`, element-wise.

    Parameters
    ----------
    x
        A real floating array.
    xp
        Its namespace; inferred when ``None``.
    native
        Use the library's own ``erf`` (torch, JAX, CuPy; SciPy for NumPy when it is
        installed); ``False`` forces the portable version.

    Returns
    -------
    array
        The shape, dtype, library and device of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> erf(np.array([0.0, 0.5, -3.0]), native=False).round(12).tolist()
    [0.0, 0.520499877813, -0.999977909503]
    """
    if xp is None:
        xp = array_namespace(x=x)
    if native and is_torch_namespace(xp):
        import torch

        return torch.special.erf(x)
    if native and is_jax_namespace(xp):
        import jax.scipy.special

        return jax.scipy.special.erf(x)
    if native and is_cupy_namespace(xp):
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    if native and is_numpy_namespace(xp):
        try:
            import scipy.special
        except ImportError:
            pass
        else:
            return xp.asarray(scipy.special.erf(x), dtype=x.dtype)
    return _erf_portable(x, xp)
