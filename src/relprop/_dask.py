"""Dask arrays in relprop's public functions: recognised here, and mapped over their chunks
here, once for every entry point.

Each entry point that takes a batch begins with::

    if is_dask_array(x):
        return on_dask(lrp, locals())

:func:`is_dask_array` looks at the type's module only, so nothing imports dask unless a
dask array was passed (dask is an optional dependency, ``relprop[dask]``). :func:`on_dask`
calls the same function once per chunk of the batch axis, lazily, through
``dask.array.blockwise`` (``map_blocks`` with the chunk's index and its rows of the other
per-sample arguments beside it): the chunks are NumPy or CuPy arrays again, so the call on
a chunk is the in-memory code path. The model, with every argument that is not per sample,
travels once: scattered to every worker (``broadcast=True``) when a ``dask.distributed``
client is active, else one graph key that every task reads. A graph built while a client
is active holds the scattered copy, so compute it with that client, while it is open.

Results of two kinds:

- relevance (``lrp``, ``gradient``, ``gradient_x_input``, ``smoothgrad``,
  ``integrated_gradients``, ``occlusion``): one dask array with the chunks of ``x`` along
  the batch axis, its shape known without computing anything;
- result objects (``lrp(..., return_layers=True)``, ``completeness``, ``pixel_flipping``,
  ``region_perturbation``, ``dtd.train_free``): the function runs on the first sample once,
  on the caller's machine, to learn the result's structure; every array of the result is
  then a dask array read from one task per chunk, so computing them together
  (:func:`relprop.dask.compute`) runs each chunk once.

Random draws (SmoothGrad's noise, the random perturbation order and the ``"uniform"``
fill) are made per chunk with the seed :func:`chunk_seed` ``(seed, k)``: the result does not
depend on the scheduler or the number of workers, and chunk ``k`` equals the in-memory call
on that chunk with that seed.
"""

from __future__ import annotations

import dataclasses
import inspect
import sys
import uuid
from collections.abc import Callable, Iterator
from types import MappingProxyType
from typing import Any

import numpy as np

__all__ = ["chunk_seed", "is_dask_array", "on_dask"]

Path = tuple[tuple[str, Any], ...]
"""Where an array sits in a result: steps ``("field", name)``, ``("key", key)`` or
``("item", index)``."""

_STRUCTURED = frozenset({"completeness", "pixel_flipping", "region_perturbation", "train_free"})
"""The functions whose result is an object (the others return relevance)."""
_SEEDED = frozenset({"smoothgrad", "pixel_flipping", "region_perturbation"})
"""The functions that draw random numbers from ``seed``."""
_EMBEDDED = frozenset({"lrp", "gradient", "gradient_x_input"})
"""The functions that explain token indices at their embedding vectors."""
_PER_SAMPLE = ("relevance", "target")
"""Arguments besides ``x`` that may hold one row per sample."""
_LETTERS = "abcdefghjklmnopqrstuvwxyz"


def is_dask_array(*values: object) -> bool:
    """Whether any of ``values`` is a ``dask.array`` array (without importing dask).

    Examples
    --------
    >>> import numpy as np
    >>> is_dask_array(np.ones(2), None)
    False
    """
    return any(type(value).__module__.startswith("dask.array") for value in values)


def chunk_seed(seed: int, index: int) -> int:
    """The seed of chunk ``index`` of a dask array explained with ``seed``: ``seed`` itself
    for the first chunk (a one-chunk array gives the in-memory numbers), a seed drawn from
    ``numpy.random.SeedSequence([seed, index])`` for the others.

    Examples
    --------
    >>> chunk_seed(7, 0)
    7
    >>> chunk_seed(7, 1) == chunk_seed(7, 1) != chunk_seed(7, 2)
    True
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(
            f"seed={seed!r}: with a dask array pass a non-negative int seed (chunk k draws "
            "with relprop.dask.chunk_seed(seed, k)); a numpy Generator cannot be shared "
            "between workers."
        )
    if index == 0:
        return int(seed)
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


# -- the model and the fixed arguments: one copy per worker -------------------------------


def client_for(scheduler: object = None) -> Any:
    """The ``dask.distributed`` client a computation with ``scheduler`` runs on (``None``:
    the default scheduler), or ``None`` when it runs elsewhere."""
    distributed = sys.modules.get("distributed")
    if distributed is None:  # no client can exist unless distributed was imported
        return None
    if scheduler is not None:
        return scheduler if isinstance(scheduler, distributed.Client) else None
    import dask

    configured = dask.config.get("scheduler", None)
    if configured not in (None, "dask.distributed", "distributed"):
        return None
    try:
        return distributed.default_client()
    except ValueError:  # no client
        return None


def shipped(value: object, scheduler: object = None) -> Any:
    """``value`` as one graph dependency: scattered to every worker of the active
    ``dask.distributed`` client (each worker gets it once, not once per task), else a
    ``dask.delayed`` literal that every task of the graph reads."""
    client = client_for(scheduler)
    if client is not None:
        return client.scatter(value, broadcast=True, hash=False)
    import dask

    return dask.delayed(value, name=f"relprop-shipped-{uuid.uuid4().hex}", traverse=False)


# -- checks of the batch arguments ---------------------------------------------------------


def batch_chunks(a: Any, name: str) -> tuple[int, ...]:
    """The chunks of dask array ``a`` along the batch axis, after checking that it is
    chunked along that axis only and that the chunk sizes are known."""
    if any(c != c for chunks in a.chunks for c in chunks):  # NaN: unknown sizes
        raise ValueError(
            f"{name} is a dask array with unknown chunk sizes; call "
            f"{name} = {name}.compute_chunk_sizes() first."
        )
    if len(a.shape) == 0:
        raise ValueError(f"{name} is a 0-d dask array; pass a batch (batch, ...).")
    split = [axis for axis, chunks in enumerate(a.chunks) if axis and len(chunks) > 1]
    if split:
        whole = ", ".join(f"{axis}: -1" for axis in range(1, len(a.shape)))
        raise ValueError(
            f"{name} is a dask array chunked along axis {split[0]} (chunks "
            f"{a.chunks[split[0]]}); relprop explains whole samples, so chunk it along the "
            f"batch axis only: {name} = {name}.rechunk({{{whole}}})."
        )
    return tuple(int(c) for c in a.chunks[0])


def along(a: Any, chunks: tuple[int, ...], name: str) -> Any:
    """Per-sample data ``a`` (a dask array, a NumPy or CuPy array, a list) as a dask array
    with the batch chunks ``chunks`` and every other axis whole (a new array: ``a`` is not
    changed)."""
    import dask.array as da

    from relprop._xp import library_of

    rows = sum(chunks)
    if is_dask_array(a):
        if any(c != c for c in a.chunks[0]):
            raise ValueError(f"{name} is a dask array with unknown chunk sizes; call "
                             f"{name} = {name}.compute_chunk_sizes() first.")
        if a.shape[0] != rows:
            raise ValueError(f"{name} has {a.shape[0]} rows for a batch of {rows} (x).")
        return a.rechunk({0: chunks, **{axis: -1 for axis in range(1, len(a.shape))}})
    if isinstance(a, (list, tuple)):
        a = np.asarray(a)
    elif library_of(a) not in ("numpy", "cupy"):
        raise TypeError(
            f"{name} is a {type(a).__module__}.{type(a).__qualname__}; beside a dask array "
            "pass it as a NumPy (or CuPy) array, a list or a dask array."
        )
    if a.shape[0] != rows:
        raise ValueError(f"{name} has {a.shape[0]} entries for a batch of {rows} (x).")
    return da.from_array(a, chunks=(chunks, *(-1,) * (len(a.shape) - 1)))


def _per_sample(value: object) -> bool:
    """Whether a target holds one entry per sample (else it applies to every sample)."""
    from relprop._xp import library_of

    if isinstance(value, (list, tuple)):
        return True
    if is_dask_array(value) or library_of(value) is not None:
        return len(getattr(value, "shape", ())) > 0
    return False


def _check_fixed(name: str, value: object, rows: int, ndim: int, function: str) -> None:
    """An argument that every chunk gets whole must not be a batch."""
    from relprop._xp import library_of

    if is_dask_array(value):
        raise TypeError(
            f"{name} is a dask array; {function} takes only x (and relevance, target) as dask "
            f"arrays: pass {name} in memory, broadcasting against one sample."
        )
    shape = tuple(getattr(value, "shape", ())) if library_of(value) is not None else ()
    if rows > 1 and len(shape) == ndim and shape[0] == rows:
        raise ValueError(
            f"{name} has one row per sample ({rows} rows); with a dask x pass a {name} that "
            f"broadcasts against one sample (shape (1, ...)), or call {function} on an "
            "in-memory x."
        )


# -- the call on one chunk (on a worker) ---------------------------------------------------


def _run_chunk(context: tuple[Any, ...], index: Any, x: Any, *rows: Any) -> Any:
    """``function(**arguments)`` on one chunk: its rows of the per-sample arguments, and the
    chunk's seed. A result object is returned in a 1-element object array."""
    function, fixed, names, seeded, structured = context
    arguments = {**fixed, "x": x, **dict(zip(names, rows, strict=True))}
    if seeded:
        arguments["seed"] = chunk_seed(fixed["seed"], int(index[0]))
    result = function(**arguments)
    if not structured:
        return result
    box = np.empty(1, dtype=object)
    box[0] = result
    return box


def _take(obj: Any, path: Path) -> Any:
    for kind, key in path:
        obj = getattr(obj, key) if kind == "field" else obj[key]
    return obj


def _leaf(box: Any, path: Path) -> Any:
    """One array of the result object in a chunk's box."""
    return _take(box[0], path)


# -- result objects: their arrays, found and replaced --------------------------------------


def rebuild(obj: Any, is_leaf: Callable[[Any], bool], replace: Callable[[Path, Any], Any],
            path: Path = ()) -> Any:
    """``obj`` with every leaf (``is_leaf``) replaced by ``replace(path, leaf)``, through
    dataclasses, mappings, lists and tuples; anything else is kept as it is."""
    if is_leaf(obj):
        return replace(path, obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        changes = {
            field.name: rebuild(getattr(obj, field.name), is_leaf, replace,
                                (*path, ("field", field.name)))
            for field in dataclasses.fields(obj) if field.init
        }
        return dataclasses.replace(obj, **changes)
    if isinstance(obj, (dict, MappingProxyType)):
        items = {key: rebuild(value, is_leaf, replace, (*path, ("key", key)))
                 for key, value in obj.items()}
        return MappingProxyType(items) if isinstance(obj, MappingProxyType) else items
    if isinstance(obj, (list, tuple)):
        parts = [rebuild(value, is_leaf, replace, (*path, ("item", index)))
                 for index, value in enumerate(obj)]
        return parts if isinstance(obj, list) else tuple(parts)
    return obj


def leaves(obj: Any, is_leaf: Callable[[Any], bool]) -> Iterator[Any]:
    """The leaves of ``obj``, in the order :func:`rebuild` visits them."""
    found: list[Any] = []
    rebuild(obj, is_leaf, lambda path, leaf: found.append(leaf))
    return iter(found)


def _is_array(value: object) -> bool:
    from relprop._xp import library_of

    return library_of(value) is not None


def _described(path: Path) -> str:
    return "".join(f".{key}" if kind == "field" else f"[{key!r}]" for kind, key in path)


# -- the dispatch --------------------------------------------------------------------------


def on_dask(function: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    """``function(**arguments)`` for a dask array ``x`` (or ``relevance``), lazily, chunk by
    chunk along the batch axis (module docstring).

    Parameters
    ----------
    function
        The public relprop function (``rp.lrp``, ``rp.metrics.pixel_flipping``, ...).
    arguments
        Its arguments by name, as ``locals()`` holds them at the top of its body.
    """
    import dask.array as da

    name = function.__name__
    parameters = inspect.signature(function).parameters
    arguments = {key: value for key, value in arguments.items() if key in parameters}
    if arguments.get("report"):
        raise ValueError(
            "report=True is not computed chunk by chunk; report on a chunk in memory: "
            "rp.lrp(model, x.blocks[0].compute(), ..., report=True)."
        )
    if arguments.get("noise") is not None:
        raise ValueError(
            "noise= cannot be given with a dask x; the noise is drawn per chunk from seed= "
            "(chunk k with relprop.dask.chunk_seed(seed, k))."
        )
    given = [key for key in ("x", "relevance") if is_dask_array(arguments.get(key))]
    chunks = [batch_chunks(arguments[key], key) for key in given][0]
    x = along(arguments["x"], chunks, "x")
    rows = int(x.shape[0])
    batches = {"x": x}
    for key in _PER_SAMPLE:
        if key in arguments and _per_sample(arguments[key]):
            if key == "target":
                from relprop.lrp import _targets_per_sample

                _targets_per_sample(arguments[key])  # equal counts per sample, or its error
            batches[key] = along(arguments[key], chunks, key)
    for key, value in arguments.items():
        if key not in batches and key != "model":
            _check_fixed(key, value, rows, len(x.shape), name)
    seeded = name in _SEEDED
    if seeded:
        chunk_seed(arguments["seed"], 0)  # its error now, not on a worker
    fixed = {key: value for key, value in arguments.items() if key not in batches}
    names = tuple(key for key in batches if key != "x")
    structured = name in _STRUCTURED or bool(arguments.get("return_layers"))
    # a result object: its structure from the first sample, here (its errors come now)
    template = _template(function, arguments, batches) if structured else None
    context = shipped((function, fixed, names, seeded, structured))

    index = da.arange(len(chunks), chunks=1)
    pairs: list[Any] = [context, None, index, "i"]
    letters = iter(_LETTERS)  # each array's own letters: their other axes are not shared
    for array in batches.values():
        pairs += [array, "i" + "".join(next(letters) for _ in array.shape[1:])]
    options: dict[str, Any] = {"align_arrays": False, "concatenate": True}
    if not structured:
        trailing, dtype = _relevance_of(name, arguments, x)
        new = _LETTERS.upper()[: len(trailing)]
        meta = da.utils.meta_from_array(x._meta, ndim=1 + len(trailing), dtype=dtype)
        return da.blockwise(
            _run_chunk, "i" + new, *pairs, new_axes=dict(zip(new, trailing, strict=True)),
            adjust_chunks={"i": chunks}, dtype=dtype, meta=meta, **options,
        )
    boxes = da.blockwise(
        _run_chunk, "i", *pairs, adjust_chunks={"i": 1}, dtype=object,
        meta=np.empty((0,), dtype=object), **options,
    )

    def lazy(path: Path, probe: Any) -> Any:
        shape = tuple(probe.shape)
        if not shape or shape[0] != 1:
            raise TypeError(
                f"{name}'s result{_described(path)} has shape {shape}, not one row per "
                f"sample: it cannot be computed chunk by chunk; call {name} on an in-memory x."
            )
        meta = da.utils.meta_from_array(probe, ndim=len(shape), dtype=probe.dtype)
        return boxes.map_blocks(
            _leaf, path, chunks=(chunks, *((s,) for s in shape[1:])),
            new_axis=list(range(1, len(shape))), dtype=probe.dtype, meta=meta,
        )

    return rebuild(template, _is_array, lazy)


def _relevance_of(name: str, arguments: dict[str, Any], x: Any) -> tuple[tuple[int, ...], Any]:
    """The shape of one sample's relevance and its dtype, without computing: ``x``'s, with
    ``k`` targets per sample ``(k, ...)``, and the embedding vectors' for token indices."""
    from relprop.lrp import _targets_per_sample

    trailing, dtype = tuple(int(s) for s in x.shape[1:]), x.dtype
    if name in _EMBEDDED and np.issubdtype(np.dtype(str(x.dtype)), np.integer):
        from relprop.interop._cache import as_model
        from relprop.lrp import _at_embeddings

        probe = _one_zero_sample(x)
        _, vectors = _at_embeddings(as_model(arguments["model"], probe), probe)
        trailing, dtype = tuple(int(s) for s in vectors.shape[1:]), vectors.dtype
    k = _targets_per_sample(arguments.get("target"))
    return ((k, *trailing) if k is not None else trailing), dtype


def _one_zero_sample(x: Any) -> Any:
    """One sample of zeros of ``x``'s chunk type and dtype (``(1, *x.shape[1:])``)."""
    import array_api_compat

    xp = array_api_compat.array_namespace(x._meta)
    return xp.zeros((1, *x.shape[1:]), dtype=x.dtype)


def _template(function: Callable[..., Any], arguments: dict[str, Any],
              batches: dict[str, Any]) -> Any:
    """The function's result on the first sample (computed here): the structure, shapes
    and dtypes of the chunks' results. Pixel flipping runs one step and is given the
    schedule asked for afterwards."""
    import dask

    firsts = dask.compute(*(array[:1] for array in batches.values()))
    probe = {**arguments, **dict(zip(batches, firsts, strict=True))}
    name = function.__name__
    if name in ("pixel_flipping", "region_perturbation"):
        probe.update(steps=1, per_step=None)
    with np.errstate(all="ignore"):
        result = function(**probe)
    if name in ("pixel_flipping", "region_perturbation"):
        from relprop.metrics.perturbation import _schedule

        counts = _schedule(result.units, arguments["steps"], arguments["per_step"])
        curves = {}
        for order, curve in result.curves.items():
            import array_api_compat

            xp = array_api_compat.array_namespace(curve.scores)
            scores = xp.zeros((1, len(counts)), dtype=curve.scores.dtype)
            curves[order] = dataclasses.replace(curve, scores=scores)
        result = dataclasses.replace(result, curves=MappingProxyType(curves), perturbed=counts)
    return result
