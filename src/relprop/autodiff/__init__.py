"""Autodiff adapters: ``vjp(fn, x, v)`` and ``grad(fn, x)`` on every backend.

torch uses ``torch.autograd``, JAX uses ``jax.vjp`` (traceable under ``jax.jit``), and
NumPy, CuPy and array-api-strict use central finite differences batched over directions
(:mod:`relprop.autodiff.finite_differences`). The backend is read off ``x``.
"""

from __future__ import annotations

from collections.abc import Callable

from relprop._xp import Array, array_namespace, backend_name

__all__ = ["grad", "vjp"]


def vjp(fn: Callable[[Array], Array], x: Array, v: Array) -> Array:
    r"""Vector-Jacobian product :math:`J_f(x)^\top v` of ``fn`` at ``x``.

    Parameters
    ----------
    fn
        A function of one array. On NumPy, CuPy and array-api-strict it must treat the
        leading axis as a batch of independent samples (finite differences evaluate it on
        a batch of perturbed copies of each sample).
    x
        The point, shape ``(batch, ...)``.
    v
        Cotangent, the shape of ``fn(x)``.

    Returns
    -------
    array
        ``J^T v``, the shape, dtype and library of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0]])
    >>> vjp(lambda a: a ** 2, x, np.ones((1, 2))).round(6).tolist()
    [[2.0, 4.0]]
    """
    xp = array_namespace(x=x, v=v)
    backend = backend_name(xp)
    if backend == "torch":
        from relprop.autodiff import _torch

        return _torch.vjp(fn, x, v)
    if backend == "jax":
        from relprop.autodiff import _jax

        return _jax.vjp(fn, x, v)
    from relprop.autodiff import finite_differences

    return finite_differences.vjp(fn, x, v, xp=xp)


def grad(fn: Callable[[Array], Array], x: Array) -> Array:
    r"""Gradient of the sum of ``fn``'s outputs, :math:`\nabla_x \sum_k f_k(x)`.

    For a per-sample function returning ``(batch,)`` values this is each sample's own
    input gradient.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0, 2.0], [3.0, 0.5]])
    >>> grad(lambda a: (a ** 2).sum(axis=1), x).round(6).tolist()
    [[2.0, 4.0], [6.0, 1.0]]
    """
    xp = array_namespace(x=x)
    out = fn(x)
    return vjp(fn, x, xp.ones_like(out))
