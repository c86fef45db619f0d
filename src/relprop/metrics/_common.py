"""What the metrics share: the model as a function, checks of relevance, targets per row.

Every metric looks the namespace up once here (from the input and the relevance) and
passes it down; random numbers are drawn with NumPy and converted, so every backend gets
the same ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from relprop._checks import check_input
from relprop._xp import Array, array_namespace, detached, library_of, to_numpy
from relprop.interop._cache import _is_torch_module, as_model
from relprop.model import Model

__all__ = [
    "as_function",
    "check_relevance",
    "host_float",
    "one_target_per_sample",
    "per_sample_sum",
    "rows_of_target",
]


def as_function(model: object, x: Array) -> tuple[Callable[[Array], Array], ModuleType]:
    """``model`` as a function of a batch, and the namespace, after checking ``x``.

    A relprop model (or a torch module, converted as :func:`relprop.lrp` converts it) is
    run with its own forward pass; any other callable is called as it is and must return
    an array of ``x``'s library with one row per input row.
    """
    if isinstance(model, Model) or _is_torch_module(model):
        converted = as_model(model, x)
        xp = converted.namespace(x=x)
        check_input(x, xp, converted.named_params())

        def forward(a: Array) -> Array:
            return converted.forward(a, xp)

        return forward, xp
    if not callable(model):
        kind = type(model)
        raise TypeError(
            f"model must be an rp.Sequential / rp.Graph, a torch.nn.Module or a function of a "
            f"batch; got {kind.__module__}.{kind.__qualname__}."
        )
    xp = array_namespace(x=x)
    check_input(x, xp, {})
    name = getattr(model, "__name__", type(model).__name__)

    def call(a: Array) -> Array:
        out = model(a)
        if library_of(out) != library_of(a):
            raise TypeError(
                f"model {name} returned {type(out).__name__}; a model function must return an "
                f"array of its input's library ({library_of(a)})."
            )
        if len(out.shape) < 1 or out.shape[0] != a.shape[0]:
            raise ValueError(
                f"model {name} returned shape {tuple(out.shape)} for {a.shape[0]} inputs; it "
                "must return one row per input row."
            )
        return out

    return call, xp


def check_relevance(relevance: Array, x: Array, name: str = "relevance") -> Array:
    """``relevance`` (detached), checked against ``x``: the same library, a real floating
    dtype, the batch of ``x`` and finite values. Its other axes are checked by the caller."""
    array_namespace(x=x, **{name: relevance})  # the mixed-library TypeError names both
    relevance = detached(relevance)
    xp = array_namespace(x=x)
    if len(relevance.shape) < 1 or relevance.shape[0] != x.shape[0]:
        raise ValueError(
            f"{name} has shape {tuple(relevance.shape)}; it needs the batch axis of x "
            f"({x.shape[0]} samples) first."
        )
    if not xp.isdtype(relevance.dtype, "real floating"):
        raise TypeError(
            f"{name} has dtype {relevance.dtype}; pass real floating relevance (cast it with "
            f"xp.astype({name}, x.dtype))."
        )
    if not bool(xp.all(xp.isfinite(relevance))):
        raise ValueError(f"{name} contains NaN or infinite values; check how it was computed.")
    return relevance


def per_sample_sum(a: Array, xp: ModuleType) -> Array:
    """The sum over every axis but the first: ``(batch, ...) -> (batch,)``."""
    return xp.sum(xp.reshape(a, (a.shape[0], -1)), axis=1)


def host_float(a: Array) -> float:
    """A 0-d (or one-element) array of any library as a Python float."""
    return float(np.asarray(to_numpy(a)).reshape(-1)[0])


def one_target_per_sample(target: object, name: str = "target") -> None:
    """Refuse several classes per sample (``rp.lrp`` explains those; a metric scores one)."""
    nested = isinstance(target, (list, tuple)) and any(
        isinstance(t, (list, tuple)) for t in target
    )
    shape = getattr(target, "shape", None)
    integral = "int" in str(getattr(target, "dtype", ""))
    if nested or (shape is not None and len(shape) == 2 and integral):
        raise ValueError(
            f"{name} has several classes per sample; a metric scores one output per sample: "
            "evaluate each class on its own (one call per class)."
        )


def rows_of_target(target: Any, index: Sequence[int], batch: int, xp: ModuleType,
                   like: Array) -> Any:
    """The target of the rows ``index`` (sample numbers) of a batch of ``batch``: a target
    for the whole batch (``None``, an int, a function, a 0-d array) as it is, one entry per
    sample (a sequence or an array) gathered."""
    if target is None or (callable(target) and library_of(target) is None):
        return target
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return target
    if isinstance(target, (list, tuple)):
        if len(target) != batch:
            raise ValueError(f"target has {len(target)} entries for a batch of {batch}.")
        return [target[i] for i in index]
    shape = getattr(target, "shape", None)
    if shape is None or len(shape) == 0:
        return target
    if shape[0] != batch:
        raise ValueError(f"target has shape {tuple(shape)}; its first axis must be the batch "
                         f"({batch}).")
    if library_of(target) == "numpy" and library_of(like) != "numpy":
        host = np.asarray(target)
        if host.dtype.kind in "iu":
            return [int(host[i]) for i in index]  # host class indices, as rp.lrp reads them
        raise TypeError(
            "target is a NumPy float array but x is not: pass it in x's library "
            f"({library_of(like)})."
        )
    from array_api_compat import device

    rows = xp.asarray(np.asarray(index, dtype=np.int32), device=device(target))
    return xp.take(target, rows, axis=0)
