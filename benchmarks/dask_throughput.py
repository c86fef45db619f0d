"""Throughput of relprop on dask: samples per second with 1 and 2 worker processes.

    python benchmarks/dask_throughput.py [--samples 20000] [--chunk 1000] [--repeat 3]
                                         [--markdown PATH]

The bundled digits CNN (NumPy, float32) explains ``--samples`` digits (the 50 held-out
digits tiled) with EpsilonPlusFlat and batch-norm fusion, in chunks of ``--chunk`` rows:

- in memory: ``rp.lrp`` on each chunk in a loop, in this process (the baseline);
- ``rp.lrp`` on a dask array, computed on dask's local threads (2 threads);
- ``rp.lrp`` on a dask array, computed on a ``LocalCluster`` of 1 and of 2 worker
  processes with one thread each;
- ``relprop.dask.explain_to_zarr`` of the data saved as one ``.npy`` file per chunk into a
  new Zarr store, on the same clusters.

All clusters are started first (their start-up is not timed); then every method runs once
per round, interleaved (A, B, C, A, B, C, ...: changes of the machine's load reach all
alike), a warm-up round (the workers import relprop then) and ``--repeat`` rounds; the
median is reported. The worker processes run with one BLAS thread (distributed's
default), the in-memory baseline with NumPy's default threads. Each cluster size runs
twice: with distributed's default worker environment, whose
``MALLOC_TRIM_THRESHOLD_=65536`` turns off glibc's adaptive ``mmap`` threshold (every large
NumPy temporary is then a fresh ``mmap``), and without that variable. The numbers
go to docs/benchmarks.md ("Dask: throughput with 1 and 2 workers").
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import suite  # noqa: E402 - the machine's description, as the suite writes it

ROOT = Path(__file__).resolve().parent.parent


def _on(client: object, run: Callable[[], object]) -> Callable[[], object]:
    """``run`` with ``client`` as the current dask.distributed client."""

    def with_client() -> object:
        with client.as_current():  # type: ignore[attr-defined]
            return run()

    return with_client


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", type=Path, default=None,
                        help="also write the table (and the machine) to this file")
    args = parser.parse_args(argv)

    import dask
    import dask.array as da
    from dask.distributed import Client, LocalCluster

    import relprop as rp
    import relprop.dask

    model = rp.data.load_digits_model(backend="numpy")
    images, _ = rp.data.load_digits(backend="numpy")
    x = np.tile(images, (-(-args.samples // len(images)), 1, 1, 1))[: args.samples]
    composite = rp.composites.EpsilonPlusFlat(canonizers=[rp.canonizers.MergeBatchNorm()])
    explain = functools.partial(rp.lrp, composite=composite)
    lazy_x = da.from_array(x, chunks=(args.chunk, *x.shape[1:]))
    reference = np.concatenate([explain(model, x[i:i + args.chunk])
                                for i in range(0, len(x), args.chunk)])

    folder = Path(tempfile.mkdtemp(prefix="relprop-dask-bench-"))
    files = []
    for index, start in enumerate(range(0, len(x), args.chunk)):
        files.append(folder / f"part{index:04d}.npy")
        np.save(files[-1], x[start:start + args.chunk])

    def in_memory() -> object:
        return [explain(model, x[i:i + args.chunk]) for i in range(0, len(x), args.chunk)]

    def lazy(scheduler: object = None) -> object:
        result = rp.lrp(model, lazy_x, composite=composite).compute(scheduler=scheduler)
        assert np.allclose(result, reference, rtol=1e-5, atol=1e-6)
        return result

    runs = iter(range(10**6))

    def to_zarr() -> object:
        store = folder / f"run{next(runs)}.zarr"
        written = relprop.dask.explain_to_zarr(model, files, store, composite=composite,
                                               batch_size=args.chunk)
        shutil.rmtree(store)
        return written

    load_before = os.getloadavg()[0]
    # distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536, which turns off
    # glibc's adaptive mmap threshold: every large NumPy temporary is then a fresh mmap
    # (page faults). Clusters with and without it are measured. (A nanny also writes the
    # variable into this process's os.environ, which later workers inherit: removed here
    # before each cluster without it, and checked on its workers.)
    trim = "MALLOC_TRIM_THRESHOLD_"
    default = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    untrimmed = {**default, trim: None}
    methods: list[tuple[str, str, Callable[[], object]]] = [
        ("rp.lrp, in memory", "this process", in_memory),
        ("rp.lrp on a dask array", "local threads (2)",
         functools.partial(lazy, scheduler="threads")),
    ]
    with contextlib.ExitStack() as stack:
        for label, environ in (("", default), (f", no {trim}", untrimmed)):
            for workers in (1, 2):
                if environ[trim] is None:
                    os.environ.pop(trim, None)
                with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}):
                    cluster = stack.enter_context(LocalCluster(
                        n_workers=workers, threads_per_worker=1, processes=True,
                        dashboard_address=":0", silence_logs=logging.ERROR))
                client = stack.enter_context(Client(cluster, set_as_default=False))
                seen = set(client.run(os.environ.get, trim).values())
                assert seen == {None if environ[trim] is None else str(environ[trim])}, seen
                where = f"LocalCluster, {workers} worker{'s' if workers > 1 else ''}{label}"
                methods += [("rp.lrp on a dask array", where, _on(client, lazy)),
                            ("explain_to_zarr (.npy files)", where, _on(client, to_zarr))]
        # interleaved rounds (A, B, C, A, B, C, ...): on a shared machine every method sees
        # the same changes of load; the first round warms up (the workers import relprop)
        times: list[list[float]] = [[] for _ in methods]
        for round_ in range(args.repeat + 1):
            for index, (_, _, run) in enumerate(methods):
                began = time.perf_counter()
                run()
                if round_:
                    times[index].append(time.perf_counter() - began)
            print(f"round {round_} done", flush=True)
    shutil.rmtree(folder, ignore_errors=True)
    rows = [(what, where, statistics.median(seconds))
            for (what, where, _), seconds in zip(methods, times, strict=True)]
    for what, where, seconds in rows:
        print(f"{what:<30} {where:<48} {seconds:7.2f} s {len(x) / seconds:8.0f} samples/s")

    lines = [
        f"{len(x)} digits (8x8, float32), chunks of {args.chunk} rows, the bundled digits CNN "
        "with EpsilonPlusFlat and MergeBatchNorm; median of "
        f"{args.repeat} interleaved rounds after a warm-up round.",
        "",
        "| what | where | time | samples/s | vs 1 worker |",
        "|---|---|---|---|---|",
    ]
    for what, where, seconds in rows:
        one = where.replace("2 workers", "1 worker")
        same = [s for w, p, s in rows if w == what and p == one]
        ratio = f"{same[0] / seconds:.2f}x" if same and where.startswith("LocalCluster") else ""
        lines.append(f"| {what} | {where} | {seconds:.2f} s | {len(x) / seconds:,.0f} | "
                     f"{ratio} |")
    versions = ", ".join(f"{name} {metadata.version(name)}"
                         for name in ("numpy", "dask", "distributed", "zarr"))
    lines += [
        "",
        f"Machine: {suite.cpu_model()}, {os.cpu_count()} cores, Linux {platform.release()}; "
        f"Python {platform.python_version()}, {versions}, relprop {rp.__version__} at "
        f"commit {suite.commit()}. Load average (1 min) {load_before:.1f} before and "
        f"{os.getloadavg()[0]:.1f} after the run.",
    ]
    table = "\n".join(lines)
    print()
    print(table)
    if args.markdown is not None:
        args.markdown.write_text(table + "\n")


if __name__ == "__main__":
    sys.exit(main())
