"""Values derived from parameters, kept while the parameters provably have not changed.

The one cache of derived values: the rule engine's modified parameters (:math:`W^+`, per
layer, :mod:`relprop.rules.terms`) and ``rp.lrp``'s canonized models (per model,
:func:`relprop.canonizers.canonized`). It sits below the rules and the canonizers, which
both use it; :func:`relprop.rules.clear_cache` is its public face.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from relprop._xp import Array, is_traced, library_of

__all__ = ["ENTRIES_PER_OWNER", "cached", "entries", "forget", "version_token"]

ENTRIES_PER_OWNER = 16
"""At most this many derived values are kept per owner, the least recently used dropped
first: a sweep over ``Gamma(gamma)`` values cannot pile up modified weights, while the
first layer of EpsilonPlusFlat, EpsilonAlpha2Beta1 and EpsilonGammaBox used in turn keeps
all its own (2, 6 and 8 values: modified weights, biases, ZBox's constant passes). Set
it to 0 to keep nothing, canonized models included (each call then derives them again:
the memory of one layer's at a time instead of every layer's, for the time of deriving
them)."""

_CACHE: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], OrderedDict[Any, Any]]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.Lock()


BY_VALUE = 4096
"""Torch tensors of at most this many entries are part of :func:`version_token` by value."""


def _values(a: Any) -> bytes | None:
    """A small torch tensor's bytes (``None`` for a large one)."""
    if a.numel() > BY_VALUE:
        return None
    import torch  # loaded already: a is a torch tensor

    return a.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def version_token(arrays: Iterable[Array | None]) -> tuple[Any, ...] | None:
    """A token that changes whenever one of ``arrays`` is replaced or written, or ``None``
    where that is unknowable (then nothing derived from them is cached).

    JAX arrays are immutable (their identity is the token); torch tensors count their
    in-place writes (``Tensor._version``), except where torch itself writes past the
    counter: a batch norm's forward in training mode updates its running statistics
    so, and a write through ``.data`` is not counted either. Small torch tensors (at most
    :data:`BY_VALUE` entries: biases, a batch norm's statistics) are therefore also
    compared by value; a write through ``.data`` into a large weight is not seen (write
    under ``torch.no_grad()`` instead, or call ``rp.rules.clear_cache``). NumPy, CuPy and
    array-api-strict arrays can be written without a trace; a value traced by
    ``jax.jit`` lives in one trace only.

    Parameters
    ----------
    arrays
        The arrays (``None`` entries allowed: absent parameters).

    Returns
    -------
    tuple or None
        Equal tokens mean that no array was replaced or written in between.
    """
    token: list[Any] = []
    for a in arrays:
        if a is None:
            token.append(None)
            continue
        library = library_of(a)
        if library == "torch":
            try:
                token.append((id(a), int(a._version), _values(a)))
            except RuntimeError:  # an inference-mode tensor counts no writes
                return None
        elif library == "jax" and not is_traced(a):
            token.append(id(a))
        else:
            return None
    return tuple(token)


def cached(owner: Any, key: Any, arrays: Sequence[Array | None], make: Callable[[], Any],
           leaves: Callable[[Any], Iterable[Any]] | None = None, *,
           limit: int | None = None) -> Any:
    """``make()``, kept for ``owner`` (weakly: the entry dies with it) under ``key`` while
    :func:`version_token` of ``arrays`` (what ``make`` reads) stays the same.

    The one cache of derived values: the engine's modified parameters (per layer) and
    ``rp.lrp``'s canonized models (per model, :func:`relprop.canonizers.canonized`). A
    value with a traced leaf (``leaves(value)``, default the value or the items of a
    tuple) is returned without being kept; at most ``limit`` values are kept per owner
    (default :data:`ENTRIES_PER_OWNER`). :func:`forget` (``rp.rules.clear_cache``) forgets them.

    Parameters
    ----------
    owner
        What the value belongs to (weakly referenced: a layer, a model).
    key
        Which of the owner's values (hashable).
    arrays
        The arrays ``make`` derives the value from.
    make
        Computes the value.
    leaves
        The value's arrays, to refuse keeping traced ones.
    limit
        Values kept per owner, the least recently used dropped first.

    Returns
    -------
    object
        The kept value, or ``make()``.
    """
    limit = ENTRIES_PER_OWNER if limit is None else limit
    token = version_token(arrays)
    if token is None or limit <= 0 or ENTRIES_PER_OWNER <= 0:  # 0: nothing at all is kept
        return make()
    with _LOCK:  # threads may explain at once (dask's threaded scheduler)
        entry = _CACHE.get(owner)
        if entry is None or entry[0] != token:
            entry = (token, OrderedDict())
            _CACHE[owner] = entry
        values = entry[1]
        if key in values:
            values.move_to_end(key)
            return values[key]
    value = make()  # outside the lock: two threads may both make it, and one is kept
    found = leaves(value) if leaves is not None else (
        value if isinstance(value, tuple) else (value,))
    if any(leaf is not None and is_traced(leaf) for leaf in found):
        return value
    with _LOCK:
        values[key] = value
        while len(values) > limit:
            values.popitem(last=False)
    return value


def entries(owner: Any) -> dict[Any, Any]:
    """What is kept for ``owner`` now (a copy; for tests and curiosity)."""
    with _LOCK:  # another thread may be adding to it
        entry = _CACHE.get(owner)
        return {} if entry is None else dict(entry[1])


def forget(owners: Iterable[Any] | None = None) -> None:
    """Drop what is kept for each of ``owners`` (``None``: for every owner)."""
    with _LOCK:
        if owners is None:
            _CACHE.clear()
            return
        for owner in owners:
            _CACHE.pop(owner, None)
