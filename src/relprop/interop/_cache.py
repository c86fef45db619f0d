"""Models of other frameworks passed straight to ``rp.lrp``: converted once, cached.

A ``torch.nn.Module`` is converted with :func:`~relprop.interop.from_torch` the first time
it is explained, and the result is kept (weakly keyed on the module, so the cache never
keeps a module alive, unless a user converter's layer refers back to the module),
together with a *signature* of the module: for every submodule its
identity, type, train/eval mode and plain settings (``eps``, ``stride``, ...), and for every
parameter and buffer its identity, memory address, dtype, device, shape and torch's
in-place write counter ``Tensor._version``. Any change shows in the signature and the
module is converted again:

- a new ``nn.Parameter`` (or submodule) assigned: other identities and addresses;
- ``load_state_dict`` and in-place edits (``w.mul_(2)`` under ``torch.no_grad()``, an
  optimizer step): ``_version`` counts every in-place write;
- ``.to(dtype)`` / ``.double()`` / ``.to(device)``: torch swaps each parameter's data (new
  address, dtype, device);
- ``.train()`` / ``.eval()``: in training mode the conversion raises from_torch's error.

Writes through ``param.data`` (``p.data.mul_(2)``) are invisible, to this cache as to
torch's autograd: ``_version`` does not count them. The converted layers share the memory,
so their forward pass follows, but the rules' cached modified weights (``W+`` ...) do not.
Write parameters in place under ``torch.no_grad()`` instead, or call ``clear()``.

The signature costs a walk over the module's submodules and tensors (no conversion, no
tensor data read), which is small next to a forward pass. The converted layers share the
module's tensor memory; the modified weights rules derive from them are cached by the
rule engine under the same ``_version`` counter (:mod:`relprop.rules.terms`), so they
follow in-place writes too.

torch is never imported here: a module can only exist once torch is imported, so
``sys.modules`` tells whether an object can be one.
"""

from __future__ import annotations

import sys
import weakref
from typing import Any

from relprop._xp import library_of
from relprop.model import Model

__all__ = ["as_model", "clear", "converted_torch_model", "torch_signature"]

ModelLike = Any
"""An ``rp.Sequential`` / ``rp.Graph``, or a ``torch.nn.Module`` (converted and cached)."""

_TORCH_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], Model]] = (
    weakref.WeakKeyDictionary()
)
_PLAIN = (bool, int, float, str, type(None))


def _is_torch_module(obj: object) -> bool:
    torch = sys.modules.get("torch")
    nn = getattr(torch, "nn", None)
    return nn is not None and isinstance(obj, nn.Module)


def _setting(value: Any) -> bool:
    """Whether ``value`` is a plain, hashable setting (``eps=1e-5``, ``stride=(2, 2)``)."""
    if isinstance(value, tuple):
        return all(isinstance(v, _PLAIN) for v in value)
    return isinstance(value, _PLAIN)


def _tensor_key(name: str, tensor: Any) -> tuple[Any, ...]:
    if tensor is None:
        return (name, None)
    try:
        address = tensor.data_ptr()
    except RuntimeError:  # no storage (lazy modules): from_torch will say what is wrong
        address = None
    return (
        name,
        id(tensor),
        address,
        tensor.dtype,
        tensor.device,
        tuple(tensor.shape),
        int(tensor._version),
    )


def torch_signature(module: Any) -> tuple[Any, ...]:
    """Everything about ``module`` that the converted model depends on (module docstring)."""
    entries: list[Any] = []
    for qualname, sub in module.named_modules(remove_duplicate=False):
        settings = tuple(
            (key, value)
            for key, value in vars(sub).items()
            if not key.startswith("_") and _setting(value)
        )
        entries.append((qualname, id(sub), type(sub), sub.training, settings))
        entries.extend(_tensor_key(name, t) for name, t in sub._parameters.items())
        entries.extend(_tensor_key(name, t) for name, t in sub._buffers.items())
    return tuple(entries)


def _matches(module: Any, example: Any) -> bool:
    """Whether ``example`` is a torch tensor the module can run on (its dtype and device);
    otherwise ``rp.lrp`` reports the mismatch itself, after the conversion."""
    if library_of(example) != "torch":
        return False
    first = next(iter(module.parameters()), None)
    return first is None or (first.dtype == example.dtype and first.device == example.device)


def converted_torch_model(module: Any, example: Any = None) -> Model:
    """``from_torch(module)``, converted again only when the module's signature changed.

    ``example`` (the batch about to be explained, if a torch tensor) is passed on to
    ``from_torch`` as ``example_input`` (its first sample): tracing then knows the shapes
    (``x.view(-1, n)``) and the outputs are checked against torch's. Its per-sample shape
    is part of the signature: a model converted for one input shape is converted again
    for another, while one converted without an example serves every shape (its trace did
    not depend on the shapes).
    """
    from relprop.interop import torch as torch_interop

    if example is not None and not _matches(module, example):
        example = None
    shape = None if example is None else tuple(example.shape[1:])
    signature = torch_signature(module)
    hit = _TORCH_CACHE.get(module)
    if hit is not None:
        (cached_shape, cached_signature), cached = hit
        fits = shape is None or cached_shape is None or cached_shape == shape
        if cached_signature == signature and fits:
            return cached
    first = None if example is None or not len(example) else example[:1].detach()
    model = torch_interop.from_torch(module, first)
    _TORCH_CACHE[module] = ((shape, signature), model)
    return model


def clear() -> None:
    """Forget every cached conversion."""
    _TORCH_CACHE.clear()


def as_model(model: object, example: Any = None) -> Model:
    """``model`` itself if it is a relprop model, a torch module's cached conversion, or a
    ``TypeError`` naming ``rp.from_torch``. The one model check of ``lrp`` and ``gradient``.
    """
    if isinstance(model, Model):
        return model
    if _is_torch_module(model):
        return converted_torch_model(model, example)
    kind = type(model)
    raise TypeError(
        f"model must be an rp.Sequential or rp.Graph (or a torch.nn.Module, converted for you "
        f"with rp.from_torch); got {kind.__module__}.{kind.__qualname__}. Build one from "
        "relprop layers; other frameworks' models are not supported yet (see the docs page "
        '"Supported layers").'
    )
