r"""Explaining data sets larger than memory, and than one machine, with Dask.

relprop's functions that take a batch (``rp.lrp``, ``rp.gradient``,
``rp.gradient_x_input``, ``rp.smoothgrad``, ``rp.integrated_gradients``, ``rp.occlusion``,
``rp.metrics.pixel_flipping``, ``region_perturbation`` and ``completeness``,
``rp.dtd.train_free``) accept a ``dask.array`` chunked along the batch axis (NumPy or
CuPy chunks) and return dask arrays: one call per chunk, lazily (``relprop._dask``). This
module adds what a whole data set needs:

- :func:`explain_to_zarr`: explain an array or a list of ``.npy`` files and write the
  relevance to a Zarr store chunk by chunk; a run that was stopped resumes where it was;
- :func:`from_npy`: ``.npy`` files as one lazy dask array (one chunk per file);
- :func:`compute`: the dask arrays of a result object (``pixel_flipping``'s curves,
  ``train_free``'s roots) computed together, each chunk once;
- :func:`chunk_seed`: the seed chunk ``k`` draws its random numbers with.

dask, distributed and zarr are optional (``pip install 'relprop[dask]'``) and imported when
these functions are called. Any ``dask.distributed`` scheduler runs the work: make a
``Client`` (``Client("tcp://scheduler:8786")`` for a cluster) and relprop uses it, scattering
the model to every worker once; without one, dask's local threads do.
"""

from __future__ import annotations

import os
import pickle
import traceback
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np

from relprop._dask import chunk_seed, is_dask_array, leaves, rebuild, shipped
from relprop._xp import Array, library_of, to_numpy
from relprop.composites import Composite
from relprop.rules import Rule

__all__ = ["chunk_seed", "compute", "explain_to_zarr", "from_npy"]

RELEVANCE = "relevance"
"""The Zarr array of the relevance in an :func:`explain_to_zarr` store."""
DONE = "chunks_done"
"""The Zarr array of completion markers: one ``uint8`` per chunk, 1 once the chunk's relevance
is written."""
_FORMAT = 1
"""The version of the store layout, in its attributes."""

Explain = Callable[[Any, Array, Any], Array]
"""An explanation method: ``explain(model, x, target) -> relevance``."""


def _dask_array() -> Any:
    try:
        import dask.array as da
    except ImportError as error:
        raise ImportError(
            "relprop.dask needs dask, distributed and zarr: pip install 'relprop[dask]'."
        ) from error
    return da


def _zarr() -> Any:
    try:
        import zarr
    except ImportError as error:
        raise ImportError(
            "explain_to_zarr writes with zarr: pip install 'relprop[dask]'."
        ) from error
    return zarr


# -- reading -----------------------------------------------------------------------------


def _load_npy(path: str) -> np.ndarray:
    return np.load(path, allow_pickle=False)


def from_npy(paths: Sequence[str | os.PathLike[str]]) -> Any:
    """``.npy`` files as one lazy dask array, concatenated along the first (batch) axis,
    one chunk per file.

    Only the files' headers are read here (shape and dtype); each file is loaded by the
    task that needs it. Relative paths are made absolute, so workers started elsewhere find
    them (on a cluster the files must be where every worker can read them, e.g. a shared
    file system).

    Parameters
    ----------
    paths
        The files, in order; each holds ``(rows, ...)`` with the same ``...`` and dtype.

    Returns
    -------
    dask.array.Array
        ``(sum of rows, ...)``, chunked per file along axis 0.

    Raises
    ------
    ValueError
        For no files, or files whose samples differ in shape or dtype.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> folder = tempfile.mkdtemp()
    >>> for k in range(3):
    ...     np.save(os.path.join(folder, f"part{k}.npy"), np.full((2, 4), float(k)))
    >>> x = from_npy([os.path.join(folder, f"part{k}.npy") for k in range(3)])
    >>> x.shape, x.chunks[0], float(x[4:, 0].sum().compute())
    ((6, 4), (2, 2, 2), 4.0)
    """
    da = _dask_array()
    import dask

    if isinstance(paths, (str, os.PathLike)):
        raise TypeError(
            f"paths is one path ({os.fspath(paths)!r}); pass a list of .npy files, "
            "e.g. sorted(glob.glob('data/*.npy'))."
        )
    files = [os.path.abspath(os.fspath(path)) for path in paths]
    if not files:
        raise ValueError("paths is empty; pass at least one .npy file.")
    parts = []
    first: tuple[tuple[int, ...], np.dtype[Any]] | None = None
    for path in files:
        header = np.load(path, mmap_mode="r", allow_pickle=False)
        shape, dtype = tuple(header.shape), header.dtype
        del header
        if not shape:
            raise ValueError(f"{path} holds a 0-d array; each file needs a batch (rows, ...).")
        if first is None:
            first = (shape[1:], dtype)
        elif (shape[1:], dtype) != first:
            raise ValueError(
                f"{path} holds samples of shape {shape[1:]} and dtype {dtype}, the first file "
                f"{first[0]} and {first[1]}; every file needs the same."
            )
        load = dask.delayed(_load_npy, pure=True)(path)
        parts.append(da.from_delayed(load, shape=shape, dtype=dtype))
    return parts[0] if len(parts) == 1 else da.concatenate(parts, axis=0)


def _as_batches(data: Any, batch_size: int | None) -> Any:
    """``data`` as a dask array chunked along axis 0 only, in equal chunks (the last may be
    smaller), as a Zarr array needs them."""
    da = _dask_array()
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None; got {batch_size!r}.")
    if is_dask_array(data):
        array = data
        if any(c != c for c in array.chunks[0]):
            raise ValueError("data is a dask array with unknown chunk sizes; call "
                             "data = data.compute_chunk_sizes() first.")
        if len(array.shape) == 0:
            raise ValueError("data is a 0-d dask array; pass a batch (batch, ...).")
        array = array.rechunk({axis: -1 for axis in range(1, len(array.shape))})
    elif library_of(data) in ("numpy", "cupy"):
        if len(data.shape) == 0:
            raise ValueError("data is a 0-d array; pass a batch (batch, ...).")
        whole = (-1,) * (len(data.shape) - 1)
        array = da.from_array(data, chunks=(batch_size or "auto", *whole))
    elif isinstance(data, (list, tuple)) and all(
        isinstance(path, (str, os.PathLike)) for path in data
    ):
        array = from_npy(data)
    else:
        kind = type(data)
        raise TypeError(
            f"data is a {kind.__module__}.{kind.__qualname__}; pass a NumPy or CuPy array, a "
            "dask array or a list of .npy files."
        )
    chunks = tuple(int(c) for c in array.chunks[0])
    size = batch_size or chunks[0]
    if chunks[:-1] != (size,) * (len(chunks) - 1) or chunks[-1] > size:
        array = array.rechunk({0: size})
    return array


# -- the store ---------------------------------------------------------------------------


def _store_spec(store: Any) -> Any:
    """A local path made absolute (workers may run elsewhere); URLs and store objects as
    they are."""
    if isinstance(store, (str, os.PathLike)):
        text = os.fspath(store)
        return text if "://" in text else os.path.abspath(text)
    return store


def _open(store: Any, mode: str, storage_options: dict[str, Any] | None) -> Any:
    zarr = _zarr()
    options = {} if storage_options is None else {"storage_options": storage_options}
    return zarr.open_group(store, mode=mode, **options)


def _prepared_store(
    store: Any, storage_options: dict[str, Any] | None, overwrite: bool, rows: int,
    batch_size: int | None, default: int, data: Any,
    shape_of: Callable[[], tuple[tuple[int, ...], Any]],
) -> tuple[Any, int]:
    """The group to write (an existing one of the same run, or a new one) and its rows per
    chunk (``batch_size``; resuming, by default the store's; a new store: ``default``)."""
    zarr = _zarr()
    meta = {"rows": rows, "input_shape": list(data.shape), "input_dtype": str(data.dtype)}
    if not overwrite:
        try:
            group = _open(store, "r+", storage_options)
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
            group = None
        except zarr.errors.ContainsArrayError as error:
            raise ValueError(
                f"store {store!r} holds a Zarr array, not an explain_to_zarr store; pass "
                "another store, or overwrite=True to replace it."
            ) from error
        if group is not None and (list(group.keys()) or group.attrs.asdict()):
            kept = group.attrs.asdict().get("relprop")
            same = isinstance(kept, dict) and RELEVANCE in group and DONE in group and all(
                kept.get(key) == value for key, value in meta.items())
            size = int(kept.get("batch_size", 0)) if isinstance(kept, dict) else 0
            if same and batch_size in (None, size):
                return group, size
            was = "not written by explain_to_zarr" if not isinstance(kept, dict) else (
                f"of {kept.get('input_shape')} {kept.get('input_dtype')} inputs in chunks of "
                f"{size}")
            raise ValueError(
                f"store {store!r} holds a run {was}; this call explains {meta['input_shape']} "
                f"{meta['input_dtype']} inputs in chunks of {batch_size or default}. Resume "
                "with the same data and batch_size, or pass overwrite=True to start again, "
                "or use another store."
            )
    batch_size = default if batch_size is None else batch_size
    out_shape, dtype = shape_of()
    group = _open(store, "w", storage_options)
    count = -(-rows // batch_size)
    group.create_array(RELEVANCE, shape=(rows, *out_shape), chunks=(batch_size, *out_shape),
                       dtype=dtype, fill_value=0)
    group.create_array(DONE, shape=(count,), chunks=(1,), dtype="uint8", fill_value=0)
    group.attrs["relprop"] = {**meta, "batch_size": batch_size, "chunks": count,
                              "format": _FORMAT}
    return group, batch_size


def _write_chunk(context: tuple[Any, ...], x: Any, index: int, start: int, stop: int,
                 target: Any) -> Any:
    """Explain one chunk and write it; the marker last. Returns ``None``, or the error (and
    its traceback) instead of raising, so that the other chunks still run."""
    model, explain, store, storage_options = context
    try:
        relevance = to_numpy(explain(model, x, target))
        group = _open(store, "r+", storage_options)
        written = group[RELEVANCE]
        expected = (stop - start, *written.shape[1:])
        if tuple(relevance.shape) != expected:
            raise ValueError(
                f"explain returned shape {tuple(relevance.shape)} for rows {start}:{stop}; the "
                f"store holds {expected} per chunk (explain must return one shape)."
            )
        written[start:stop] = relevance.astype(written.dtype, copy=False)
        group[DONE][index] = 1  # only now: the chunk is complete
        return None
    except Exception as error:  # noqa: BLE001 - reported after every chunk has run
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        try:
            pickle.dumps(error)
        except Exception:  # noqa: BLE001 - an error that cannot travel back as it is
            error = RuntimeError(f"{type(error).__name__}: {error}")
        return index, error, text


def explain_to_zarr(
    model: Any,
    data: Any,
    store: Any,
    *,
    explain: Explain | None = None,
    composite: Composite | None = None,
    rule: Rule | None = None,
    target: object = None,
    batch_size: int | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    storage_options: dict[str, Any] | None = None,
) -> Any:
    r"""Explain a data set chunk by chunk and write the relevance to a Zarr store; a run
    that was stopped resumes.

    The data are cut into chunks of ``batch_size`` rows along the batch axis. Each chunk is
    one task: :math:`R_{a:b} = \mathrm{explain}(f, x_{a:b}, t_{a:b})`, written to rows
    ``a:b`` of the store's ``relevance`` array (one Zarr chunk), and then, only once the
    data are written, the chunk's completion marker in ``chunks_done``. Called again on the
    same store (after a crash, a killed job, a failing chunk), it skips every chunk whose
    marker is set and redoes the others, a half-written one included: nothing is lost or
    written twice. A chunk that raises does not stop the others; the error is raised after
    they have run, and a new call computes what is missing. One run per store at a time:
    two runs at once would both compute the chunks still missing.

    Parameters
    ----------
    model
        The network (an ``rp.Sequential`` / ``rp.Graph``, or what ``explain`` takes): sent
        to every worker once (scattered, with a ``dask.distributed`` client).
    data
        The inputs ``(N, ...)``: a NumPy or CuPy array, a dask array (chunked along axis 0
        only; e.g. ``dask.array.from_zarr``), or a list of ``.npy`` files read lazily
        (:func:`from_npy`).
    store
        Where to write: a local path (made absolute, so on a cluster it must be a shared
        file system), a URL of an fsspec file system (``s3://bucket/run.zarr``, with
        ``storage_options``), or a Zarr store object. It becomes a Zarr group with
        ``relevance`` ``(N, ...)``, ``chunks_done`` ``(chunks,)`` and the run's settings in
        its attributes (``relprop``).
    explain
        ``explain(model, x, target) -> relevance`` of one chunk (default
        :func:`relprop.gradient`, or LRP with ``composite`` / ``rule``):
        ``functools.partial(rp.smoothgrad, explain=...)`` and the like work too.
    composite, rule
        Shorthand for ``explain=functools.partial(rp.lrp, composite=..., rule=...)``.
    target
        As ``rp.lrp`` reads it: ``None`` (each sample's arg-max), an int, or one entry per
        sample (a list, a NumPy array, a dask array), cut with the chunks.
    batch_size
        Rows per chunk (and per Zarr chunk). Default: the chunks of a dask array, one file
        per chunk for files of one length, else dask's ``"auto"`` chunks; resuming, the
        store's.
    overwrite
        Start again: delete what the store holds.
    scheduler
        Passed to ``dask.compute``: ``None`` (the active ``dask.distributed`` client, else
        local threads), a ``Client``, ``"threads"``, ``"processes"``, ``"sync"``.
    storage_options
        For fsspec URLs (credentials, endpoints), passed to ``zarr.open_group``.

    Returns
    -------
    zarr.Array
        The store's ``relevance`` array, complete (open for reading).

    Raises
    ------
    ValueError
        For a store that holds another run (other data or chunks): resume with the same
        arguments, or pass ``overwrite=True``.
    RuntimeError
        When chunks failed (from the first failure, with its traceback); the others are
        written, and calling again computes the rest.

    Examples
    --------
    >>> import numpy as np, relprop as rp, tempfile, os
    >>> from relprop.dask import explain_to_zarr
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, -2.0]]))])
    >>> x = np.arange(10.0).reshape(5, 2)
    >>> store = os.path.join(tempfile.mkdtemp(), "run.zarr")
    >>> R = explain_to_zarr(model, x, store, rule=rp.rules.Epsilon(0.0), batch_size=2,
    ...                     scheduler="sync")
    >>> R.shape, bool(np.allclose(R[:], rp.lrp(model, x, rule=rp.rules.Epsilon(0.0))))
    ((5, 2), True)
    >>> explain_to_zarr(model, x, store, rule=rp.rules.Epsilon(0.0),  # done: nothing to do
    ...                 scheduler="sync").shape
    (5, 2)
    """
    _dask_array()  # or the ImportError naming the extra
    _zarr()
    import dask

    if explain is not None and (composite is not None or rule is not None):
        raise TypeError("pass explain= or composite=/rule=, not both.")
    if explain is None:
        from relprop.lrp import gradient, lrp

        explain = gradient if composite is None and rule is None else partial(
            lrp, composite=composite, rule=rule)
    if not callable(explain):
        raise TypeError(
            f"explain must be a function explain(model, x, target) -> relevance; got "
            f"{explain!r}."
        )
    x = _as_batches(data, batch_size)
    rows = int(x.shape[0])
    if rows == 0:
        raise ValueError("data has no rows; pass at least one sample.")
    targets = _targets(target, rows)
    spec = _store_spec(store)

    def shape_of() -> tuple[tuple[int, ...], Any]:  # one sample explained here
        first, target_first = dask.compute(x[:1], targets(0, 1))
        relevance = explain(model, first, target_first)
        if library_of(relevance) is None or len(relevance.shape) < 1 or (
                relevance.shape[0] != 1):
            raise ValueError(
                f"explain returned {type(relevance).__name__} of shape "
                f"{getattr(relevance, 'shape', None)} for one sample; it must return an "
                "array with the batch axis first."
            )
        host = to_numpy(relevance)
        return tuple(int(s) for s in host.shape[1:]), host.dtype

    group, stored = _prepared_store(spec, storage_options, overwrite, rows, batch_size,
                                    int(x.chunks[0][0]), x, shape_of)
    if stored != int(x.chunks[0][0]):
        x = x.rechunk({0: stored})
    done = np.asarray(group[DONE][:])
    todo = [index for index in range(len(done)) if not done[index]]
    if todo:
        context = shipped((model, explain, spec, storage_options), scheduler)
        blocks = x.to_delayed().reshape(-1)
        tasks = []
        for index in todo:
            start, stop = index * stored, min((index + 1) * stored, rows)
            tasks.append(dask.delayed(_write_chunk, pure=False)(
                context, blocks[index], index, start, stop, targets(start, stop)))
        failed = [r for r in dask.compute(*tasks, scheduler=scheduler) if r is not None]
        if failed:
            index, error, text = failed[0]
            start = index * stored
            raise RuntimeError(
                f"{len(failed)} of {len(todo)} chunks failed; the first, chunk {index} (rows "
                f"{start}:{min(start + stored, rows)}), with\n{text}The other chunks are "
                f"written to {spec!r}: call explain_to_zarr again with the same arguments to "
                "compute the rest."
            ) from error
    return _zarr().open_array(spec, path=RELEVANCE, mode="r",
                              **({} if storage_options is None else
                                 {"storage_options": storage_options}))


def _targets(target: object, rows: int) -> Callable[[int, int], Any]:
    """The target of rows ``start:stop``: a target for every sample as it is, one per
    sample cut (a dask array's rows stay lazy)."""
    if isinstance(target, (list, tuple)):
        if len(target) != rows:
            raise ValueError(f"target has {len(target)} entries for {rows} samples.")
        return lambda start, stop: list(target[start:stop])
    shape = getattr(target, "shape", None)
    if shape is None or len(shape) == 0:
        return lambda start, stop: target
    if shape[0] != rows:
        raise ValueError(f"target has {shape[0]} rows for {rows} samples.")
    return lambda start, stop: target[start:stop]  # type: ignore[index]


# -- results -----------------------------------------------------------------------------


def compute(result: Any, **options: Any) -> Any:
    """``result`` with every dask array in it computed, all in one ``dask.compute`` (each
    chunk runs once, however many arrays it feeds).

    A lazy result object (``pixel_flipping``'s curves, ``train_free``'s layers and roots,
    ``rp.lrp(..., return_layers=True)``'s tuple) holds one dask array per field, all read
    from one task per chunk: computing them one by one would run the chunks again for each.

    Parameters
    ----------
    result
        A dask array, or a dataclass, dict, list or tuple holding dask arrays.
    **options
        Passed to ``dask.compute`` (``scheduler=``, ...).

    Returns
    -------
    object
        The same structure with NumPy (or CuPy) arrays.

    Examples
    --------
    >>> import numpy as np, dask.array as da, relprop as rp
    >>> from relprop import metrics
    >>> model = rp.Sequential([rp.Dense(np.array([[1.0, 2.0, 3.0]]))])
    >>> x = da.ones((4, 3), chunks=(2, 3))
    >>> curves = metrics.pixel_flipping(model, x, x * np.array([1.0, 2.0, 3.0]), 0,
    ...                                 orders=["morf"])
    >>> compute(curves, scheduler="sync").morf.scores[0].tolist()
    [6.0, 3.0, 1.0, 0.0]
    """
    _dask_array()  # or the ImportError naming the extra
    import dask

    found = list(leaves(result, is_dask_array))
    values = iter(dask.compute(*found, **options))
    return rebuild(result, is_dask_array, lambda path, leaf: next(values))
