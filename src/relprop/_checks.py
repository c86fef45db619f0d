"""Checks of what users pass in: input arrays and targets. Each error names the argument."""

from __future__ import annotations

import math
import numbers
import operator
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from array_api_compat import device

from relprop._xp import Array, array_namespace, detached, is_traced, library_of

__all__ = ["bound_like", "check_input", "target_relevance"]


def _fails(check: Array) -> bool:
    """Whether a 0-d boolean check is known to be false. Inside ``jax.jit`` even a check of
    a concrete (closed-over) array is traced: then it cannot be evaluated and is skipped."""
    return not is_traced(check) and not bool(check)


def _all_finite(x: Array, xp: ModuleType) -> bool:
    """Whether every entry of ``x`` is finite: the sum is, unless an entry is NaN or
    infinite (or the finite entries overflow, which the entry-wise check then settles).
    One reduction, instead of a mask as large as ``x`` and a reduction of it."""
    if x.dtype in (xp.float32, xp.float64):  # narrower floats overflow on ordinary sums
        with warnings.catch_warnings():  # NumPy warns where the sum overflows
            warnings.simplefilter("ignore", RuntimeWarning)
            total = xp.sum(detached(x))
        # a concrete array summed while jax.jit traces is unknowable: skipped
        if is_traced(total) or math.isfinite(float(total)):
            return True
    return not _fails(xp.all(xp.isfinite(x)))


def check_input(x: Array, xp: ModuleType, params: dict[str, Array], name: str = "x") -> None:
    """Reject integer, empty, non-finite or wrongly typed input before any work is done."""
    if len(x.shape) < 1:
        raise ValueError(f"{name} must have a leading batch axis; got a 0-d array.")
    if x.shape[0] == 0:
        raise ValueError(
            f"{name} is an empty batch (shape {tuple(x.shape)}); pass at least one sample."
        )
    if not xp.isdtype(x.dtype, "real floating"):
        raise TypeError(
            f"{name} has dtype {x.dtype}; relevance needs a real floating dtype. Cast it first, "
            f"e.g. xp.astype({name}, xp.float32)."
        )
    for param_name, param in params.items():
        if param.dtype != x.dtype:
            raise TypeError(
                f"{name} has dtype {x.dtype} but the model parameter {param_name} has "
                f"{param.dtype}; "
                f"cast the input (xp.astype({name}, ...)) or the model (model.astype(...))."
            )
    if not is_traced(x) and not _all_finite(x, xp):
        raise ValueError(
            f"{name} contains NaN or infinite values; relevance of such input is undefined."
        )


def bound_like(value: float | Array, x: Array, xp: ModuleType, name: str, x_name: str) -> Array:
    """An input bound (a float, or an array broadcastable to ``x``) as an array like ``x``.

    Used by the ZBox rule and the zB root points; ``name`` and ``x_name`` are how errors
    call the bound and the array it must fit.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return xp.full_like(x, float(value))
    if library_of(value) != library_of(x):
        array_namespace(**{name: value, x_name: x})  # raises the TypeError naming both
    try:
        return xp.broadcast_to(xp.astype(value, x.dtype), x.shape)
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            f"{name} of shape {tuple(getattr(value, 'shape', ()))} does not broadcast to "
            f"{x_name} of shape {tuple(x.shape)}; pass a float or an array of a broadcastable "
            "shape."
        ) from error


def target_relevance(out: Array, target: object, xp: ModuleType, *, scale: bool = True) -> Array:
    """The explained output: ``out`` (``scale``) or 1 at each sample's target class (axis 1:
    a class, or a channel of a map at every position), else 0.

    ``target`` is ``None`` (arg-max), an int, one int per sample (sequence or integer
    array; a NumPy one is read as its ints on every backend), a floating array of
    ``out``'s shape used as it is, or a callable of the output
    (:func:`_callable_target`). Class indices get the library's default integer dtype
    (int32 on JAX without x64, which would warn for int64).
    """
    if callable(target) and library_of(target) is None:
        return _callable_target(out, target, xp, scale)
    if isinstance(target, numbers.Integral) and not isinstance(target, bool):
        target = int(target)  # NumPy integer scalars, e.g. from out.argmax()
    if library_of(target) == "numpy" and library_of(out) != "numpy" and _is_integral(target):
        target = target.tolist()  # type: ignore[attr-defined]  # host indices, like a list
    if library_of(target) is not None:
        array_namespace(target=target, output=out)
        if xp.isdtype(target.dtype, "real floating"):  # type: ignore[attr-defined]
            return _relevance_array(target, out, xp)
    if len(out.shape) < 2:
        raise ValueError(
            f"an index target needs an output of shape (batch, classes, ...); the output has "
            f"shape {tuple(out.shape)}. Pass target as an array of that shape instead."
        )
    batch, classes = out.shape[0], out.shape[1]
    index = _class_index(out, target, batch, classes, xp)
    classes_row = xp.arange(classes, dtype=index.dtype, device=device(out))
    mask = xp.expand_dims(index, axis=1) == xp.expand_dims(classes_row, axis=0)
    for _ in out.shape[2:]:  # a channel of a map: every position of it
        mask = xp.expand_dims(mask, axis=-1)
    chosen = out if scale else xp.ones_like(out)
    return xp.where(mask, chosen, xp.zeros_like(out))


def _callable_target(out: Array, target: Any, xp: ModuleType, scale: bool) -> Array:
    r"""``target(out)``: an array of ``out``'s shape is the initial relevance itself
    (zennit's ``attr_output`` as a function); one value per sample is the explained
    quantity :math:`f`, and the initial relevance is :math:`out \odot \partial f /
    \partial out` (``scale``) or the cotangent :math:`\partial f / \partial out`."""
    from relprop.autodiff import vjp

    value = target(out)
    name = getattr(target, "__name__", type(target).__name__)
    if library_of(value) != library_of(out):
        raise TypeError(
            f"target {name} returned {type(value).__name__}; a target function must return "
            "an array of the output's library (one value per sample, or the output's shape)."
        )
    batch = out.shape[0]
    if tuple(value.shape) == tuple(out.shape):
        return _relevance_array(value, out, xp)
    if tuple(value.shape) != (batch,):
        raise ValueError(
            f"target {name} returned shape {tuple(value.shape)}; return one value per sample "
            f"({batch},) (the quantity to explain) or the output's shape {tuple(out.shape)} "
            "(the initial relevance)."
        )
    grad = vjp(target, out, xp.ones_like(value))
    return out * grad if scale else grad


def _is_integral(a: Any) -> bool:
    return str(a.dtype).startswith(("int", "uint"))


def _class_index(out: Array, target: Any, batch: int, classes: int, xp: ModuleType) -> Array:
    if target is None:
        return xp.argmax(out, axis=1)
    if isinstance(target, bool):
        raise TypeError("target must be an int, ints, or a floating array; got a bool.")
    if isinstance(target, int):
        if not 0 <= target < classes:
            raise IndexError(f"target={target} is out of range for a model with {classes} outputs.")
        return _index_array([target] * batch, out, xp)
    if isinstance(target, Sequence) and not isinstance(target, str):
        if any(isinstance(t, bool) for t in target):
            raise TypeError(f"target entries must be ints, not bools; got {target!r}.")
        try:
            values = [operator.index(t) for t in target]
        except TypeError as error:
            raise TypeError(f"target entries must be ints; got {target!r}.") from error
        index = _index_array(values, out, xp)
    elif library_of(target) is not None:
        index = target
        if not xp.isdtype(index.dtype, "integral"):
            raise TypeError(
                f"target array has dtype {index.dtype}; use integers or a float relevance."
            )
        if len(index.shape) == 0:  # one class for the whole batch
            index = xp.broadcast_to(index, (batch,))
    else:
        raise TypeError(
            f"target must be an int, ints, or a floating array; got {type(target).__name__}."
        )
    if tuple(index.shape) != (batch,):
        raise ValueError(
            f"target has shape {tuple(index.shape)}; one class per sample needs ({batch},)."
        )
    if not is_traced(index) and _fails(xp.all((index >= 0) & (index < classes))):
        raise IndexError(f"target has a class index out of range [0, {classes}).")
    return index


def _index_array(values: list[int], out: Array, xp: ModuleType) -> Array:
    """Class indices beside ``out`` in the library's default integer dtype (int64, or int32
    on JAX without x64, where asking for int64 would warn and truncate)."""
    return xp.asarray(values, device=device(out))


def _relevance_array(target: Array, out: Array, xp: ModuleType) -> Array:
    if tuple(target.shape) != tuple(out.shape):
        raise ValueError(
            f"target array has shape {tuple(target.shape)}; an initial relevance must have the "
            f"model output's shape {tuple(out.shape)}."
        )
    if target.dtype != out.dtype:
        raise TypeError(f"target array has dtype {target.dtype}; the model output has {out.dtype}.")
    if not is_traced(target) and _fails(xp.all(xp.isfinite(target))):
        raise ValueError("target array contains NaN or infinite values.")
    return target
