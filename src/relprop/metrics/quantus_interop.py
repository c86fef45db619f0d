"""relprop as a Quantus explanation function.

Quantus (Hedström et al., JMLR 2023) evaluates explanations with its own metrics; it
calls ``explain_func(model=model, inputs=x_batch, targets=y_batch,
**explain_func_kwargs)`` with NumPy inputs and class indices, and expects a NumPy array of
attributions. :func:`quantus_explain` is such a function::

    metric = quantus.PixelFlipping(features_in_step=4)
    scores = metric(model=torch_module, x_batch=x, y_batch=y, explain_func=metrics.quantus_explain,
                    explain_func_kwargs={"composite": "EpsilonPlusFlat"})

Quantus itself is not needed (nor imported) here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from relprop._xp import Array, library_of, to_numpy
from relprop.interop._cache import _is_torch_module
from relprop.model import Model

__all__ = ["METHODS", "quantus_explain"]

METHODS: tuple[str, ...] = ("lrp", "gradient", "gradient_x_input")
"""The methods :func:`quantus_explain` knows by name."""


def _parameter_like(model: Any) -> Any:
    """A parameter (or buffer) of the model whose dtype and device the inputs take, or None."""
    if isinstance(model, Model):
        params = model.named_params()
        return next(iter(params.values()), None)
    tensors = list(model.parameters()) or list(model.buffers())
    return tensors[0] if tensors else None


def _inputs_for(model: Any, inputs: Any, device: object) -> Array:
    """``inputs`` (NumPy, nested lists or a tensor) in the model's library, dtype and device."""
    like = _parameter_like(model)
    if _is_torch_module(model):
        import torch

        dtype = like.dtype if like is not None else torch.get_default_dtype()
        where: Any = device if device is not None else (like.device if like is not None else None)
        if library_of(inputs) == "torch":
            return inputs.detach().to(dtype=dtype, device=where)
        return torch.as_tensor(np.asarray(inputs), dtype=dtype, device=where)
    if like is None:  # a model without parameters: NumPy float64 unless given an array
        return inputs if library_of(inputs) is not None else np.asarray(inputs, dtype=np.float64)
    if library_of(inputs) == library_of(like) and inputs.dtype == like.dtype:
        return inputs
    from array_api_compat import array_namespace
    from array_api_compat import device as device_of

    xp = array_namespace(like)
    host = np.asarray(to_numpy(inputs) if library_of(inputs) is not None else inputs)
    try:
        dtype = np.dtype(str(like.dtype).rsplit(".", 1)[-1])
        return xp.asarray(host.astype(dtype), device=device_of(like) if device is None else device)
    except TypeError:
        return xp.asarray(host, dtype=like.dtype,
                          device=device_of(like) if device is None else device)


def _targets_for(targets: Any) -> Any:
    """Class indices as Python ints (one or one per sample); ``None`` stays ``None``."""
    if targets is None or isinstance(targets, int):
        return targets
    host = np.asarray(to_numpy(targets) if library_of(targets) is not None else targets)
    if host.ndim == 0:
        return int(host)
    if host.dtype.kind not in "iu" and not np.all(host == np.round(host)):
        raise TypeError(
            f"targets must be class indices; got values of dtype {host.dtype} that are not "
            "whole numbers."
        )
    return [int(t) for t in host.reshape(-1)]


def quantus_explain(
    model: Any,
    inputs: Any,
    targets: Any = None,
    *,
    method: str | Callable[..., Array] = "lrp",
    composite: Any = None,
    rule: Any = None,
    reduce_axes: tuple[int, ...] | None = None,
    device: object = None,
    **kwargs: Any,
) -> np.ndarray:
    """An explanation function with Quantus's calling contract.

    ``explain_func(model=..., inputs=..., targets=..., **explain_func_kwargs)``: NumPy in,
    NumPy out. A ``torch.nn.Module`` (in eval mode) is explained through
    :func:`relprop.from_torch` (cached, as ``rp.lrp`` does): ``inputs`` become tensors of
    the module's parameter dtype and device. A relprop model gets ``inputs`` in its
    parameters' library, dtype and device.

    Parameters
    ----------
    model
        A ``torch.nn.Module`` or an ``rp.Sequential`` / ``rp.Graph``.
    inputs
        ``(batch, ...)``: a NumPy array (what Quantus passes), nested lists, or a tensor.
    targets
        Class indices: an int, a NumPy array / list of ints, or ``None`` (arg-max).
    method
        ``"lrp"`` (default), ``"gradient"``, ``"gradient_x_input"``, or a function
        ``method(model, x, target, **kwargs) -> relevance``.
    composite, rule
        For ``"lrp"``: a composite, or a rule for every linear layer; or their names
        (``"EpsilonPlusFlat"``, ``"Epsilon"``), which also fuse batch norms and bound the
        box rules to ``[0, 1]``, as the command line's ``--composite`` / ``--rule`` do.
    reduce_axes
        Axes of the attributions to sum, keeping them (``(1,)``: over channels; Quantus
        broadcasts a ``(batch, 1, H, W)`` map over the channels).
    device
        Where the inputs go (default: the model parameters' device).
    **kwargs
        Passed on to the method (``canonizers`` are part of a composite).

    Returns
    -------
    numpy.ndarray
        The attributions, ``(batch, ...)``, of the model parameters' dtype.

    Examples
    --------
    >>> import numpy as np, relprop as rp
    >>> from relprop import metrics
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, 2.0], [3.0, -1.0]]))])
    >>> metrics.quantus_explain(model=model, inputs=np.ones((1, 2), np.float32),
    ...                         targets=np.array([1]), rule="Epsilon").round(4).tolist()
    [[3.0, -1.0]]
    """
    from relprop.lrp import gradient, gradient_x_input, lrp

    if not isinstance(model, Model) and not _is_torch_module(model):
        kind = type(model)
        raise TypeError(
            f"model must be a torch.nn.Module or an rp.Sequential / rp.Graph; got "
            f"{kind.__module__}.{kind.__qualname__} (Quantus passes model.get_model())."
        )
    x = _inputs_for(model, inputs, device)
    target = _targets_for(targets)
    if callable(method):
        relevance = method(model, x, target, **kwargs)
    elif method == "lrp":
        how = _lrp_method(composite, rule)
        relevance = lrp(model, x, target, **how, **kwargs)
    elif method in ("gradient", "gradient_x_input"):
        if composite is not None or rule is not None:
            raise TypeError(f"method={method!r} takes no composite or rule; drop them.")
        function = gradient if method == "gradient" else gradient_x_input
        relevance = function(model, x, target, **kwargs)
    else:
        raise ValueError(
            f"method={method!r} is not known; use one of {', '.join(map(repr, METHODS))} or a "
            "function method(model, x, target, **kwargs)."
        )
    result = np.asarray(to_numpy(relevance))
    if reduce_axes is not None:
        result = result.sum(axis=tuple(reduce_axes), keepdims=True)
    return result


def _lrp_method(composite: Any, rule: Any) -> dict[str, Any]:
    """``rp.lrp``'s ``composite=`` / ``rule=`` from instances or names."""
    from relprop._methods import method as by_name

    if isinstance(composite, str):
        if rule is not None:
            raise TypeError("pass either composite= or rule=, not both.")
        return by_name(composite=composite)
    if isinstance(rule, str):
        if composite is not None:
            raise TypeError("pass either composite= or rule=, not both.")
        return by_name(rule=rule)
    return {"composite": composite, "rule": rule}
