"""relprop's benchmark suite: LRP and gradients against torch autograd, zennit and Captum.

    python benchmarks/suite.py [--tables mlp vgg16:1:64 ...] [--repeat 5] [--markdown PATH]
    nox -s bench [-- ARGS]          # the same, in a session with zennit and Captum

Each table runs in one fresh process: one network and one input for every method, the
methods interleaved (A, B, C, A, B, C, ...: a warm-up round, then ``--repeat`` rounds, or
fewer, down to ``--min-repeat``, where they would take longer than ``--budget`` seconds),
the median per method, and its ratio to torch autograd's input gradient and to relprop's
``rp.gradient`` on the same backend (for JAX: both jitted). Methods faster than
``--min-time`` are called several times per sample (the count fixed in the warm-up round),
and those faster than ``--settle`` get one untimed call before each sample (switching
between torch's, OpenBLAS's and XLA's thread pools costs the first call after a switch).
JAX methods are ``jax.jit`` compiled ahead of the timed calls; the trace and compile time
is its own column. Then, unless ``--no-memory``, each method runs once more in a fresh
subprocess of its own: the peak RSS (``resource.getrusage``) minus the RSS after building
the network, the input and the backend's model (the peak is reset there through
``/proc/self/clear_refs`` where Linux allows it), i.e. what the method's first call
(JAX: with its compilation) adds, with glibc's mmap threshold fixed at 1 MiB
(``MALLOC_MMAP_THRESHOLD_``) so that memory the setup freed is not counted as reused.

Tables are ``kind[:batch[:size]]``: ``mlp`` (784-300-100-10, batch 64), ``vgg16:B:S``
(VGG-16's layers on a 3xSxS input), ``resnet18:B:S``, ``dtd:N:L`` (a DTD network of ``L``
layers, default 4: the seed-001 one, 3: the 3-10-10-2 one of seed 000; ``train_free`` over
``N`` inputs, default 1000, ``full_backward`` of one). Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DEFAULT_TABLES = ["mlp", "vgg16:1:64", "vgg16:8:64", "resnet18:1:112", "dtd"]
QUICK_TABLES = ["mlp", "vgg16:1:32", "resnet18:1:32", "dtd:100"]


# ------------------------------------------------------------------------ the machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def commit() -> str:
    """The checkout's short commit, marked where tracked files have uncommitted changes."""
    short = _git("rev-parse", "--short", "HEAD") or "unknown"
    if _git("status", "--porcelain", "--untracked-files=no"):
        short += " (with uncommitted changes)"
    return short


def machine_info(threads: int = 0) -> dict[str, Any]:
    """The machine, library versions and commit; ``threads``: the ``--threads`` the
    tables' processes set (0: torch's own choice, as in this process)."""
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count() or 0
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cores": usable,
        "torch threads": threads or torch.get_num_threads(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in
                     ("relprop", "torch", "numpy", "jax", "jaxlib", "zennit", "captum")},
        "commit": commit(),
    }


# ----------------------------------------------------------------------- one table


def _error(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:160]


def _timed(call: Any, number: int) -> float:
    from methods import sync

    start = time.perf_counter()
    for _ in range(number):
        sync(call())
    return (time.perf_counter() - start) / number


def _difference(references: dict[str, Any], method: Any, value: Any) -> float | None:
    """``max|R - R_ref| / max|R_ref|`` against the first row of the same quantity (that
    row itself: ``None``, and it becomes the reference)."""
    import numpy as np

    import relprop as rp

    if hasattr(value, "detach"):
        value = value.detach()
    array = np.asarray(rp.to_numpy(value), dtype=np.float64)
    reference = references.setdefault(method.quantity, array)
    if reference is array:
        return None
    scale = float(np.abs(reference).max()) or 1.0
    return float(np.abs(array - reference).max()) / scale


def run_table(spec: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time every method of one table in this process (interleaved rounds)."""
    from methods import Context, Table, key, methods, sync

    table = Table.parse(spec)
    rows = methods(table, tuple(args.backends))
    ctx = Context(table)
    prepared: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for method in rows:
        k = key(method)
        results[k] = {"name": method.name, "library": method.library,
                      "backend": method.backend, "gradient": method.gradient,
                      "ratios": method.ratios, "jit": method.jit, "note": method.note}
        try:
            prepared[k] = method.prepare(ctx)
            results[k]["compile_s"] = prepared[k].compile_s
        except Exception as exc:  # noqa: BLE001 - a method that cannot run is a row saying so
            results[k]["error"] = _error(exc)
            if args.verbose:
                traceback.print_exc()
    number: dict[str, int] = {}
    rows_by = {key(m): m for m in rows}
    quantities: dict[str, Any] = {}
    repeat = args.repeat
    round_ = 0
    while round_ < args.warmup + repeat:
        if round_ == args.warmup:  # the warm-up told how long a round takes
            seconds = sum(r["warm_s"] * (number[k] + (r["warm_s"] < args.settle))
                          for k, r in results.items() if k in prepared)
            affordable = math.floor(args.budget / seconds) if seconds > 0 else repeat
            repeat = max(min(args.min_repeat, args.repeat), min(args.repeat, affordable))
            _log(f"  {spec}: {seconds:.1f} s per round, {repeat} rounds")
        for k, item in list(prepared.items()):
            try:
                if round_ < args.warmup:
                    start = time.perf_counter()
                    value = item.call()
                    sync(value)
                    seconds = time.perf_counter() - start
                    if "first_s" not in results[k]:
                        results[k]["first_s"] = seconds
                        results[k]["difference"] = _difference(quantities, rows_by[k], value)
                        if seconds < 1.0:  # a first call can be slow (caches): once more
                            seconds = _timed(item.call, 1)
                    results[k]["warm_s"] = seconds
                    number[k] = max(1, math.ceil(args.min_time / max(seconds, 1e-9)))
                    continue
                if results[k]["warm_s"] < args.settle:
                    _timed(item.call, 1)  # untimed: the switch from the other methods
                results[k].setdefault("samples", []).append(_timed(item.call, number[k]))
            except Exception as exc:  # noqa: BLE001
                results[k]["error"] = _error(exc)
                del prepared[k]
                if args.verbose:
                    traceback.print_exc()
        if round_ >= args.warmup:
            _log(f"  {spec}: round {round_ - args.warmup + 1}/{repeat}")
        round_ += 1
    for k, result in results.items():
        if "samples" in result and "error" not in result:
            result["median_s"] = statistics.median(result["samples"])
            result["calls_per_sample"] = number[k]
    import torch

    return {"table": spec, "title": table.title, "repeat": repeat,
            "torch_threads": torch.get_num_threads(), "methods": results}


# ------------------------------------------------------------------------- memory


def _rss_bytes() -> int:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    """Reset the peak RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def run_memory(spec: str, label: str, args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of one method's preparation and first call, over the RSS before it."""
    from methods import Context, Table, by_label, sync

    table = Table.parse(spec)
    method = by_label(table, label, tuple(args.backends))
    ctx = Context(table)
    ctx.needs(method)
    gc.collect()
    baseline = _rss_bytes()
    reset = _reset_peak()
    prepared = method.prepare(ctx)
    sync(prepared.call())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"baseline": baseline, "peak": peak, "extra": max(0, peak - baseline),
            "peak_reset": reset}


def memory_job(spec: str, label: str, backends: list[str], threads: int) -> dict[str, Any]:
    """:func:`run_memory` in a pool worker that runs this one job and exits."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    return run_memory(spec, label, argparse.Namespace(backends=backends))


# ------------------------------------------------------------------------ profiling


def run_profile(spec: str, label: str, args: argparse.Namespace) -> None:
    """cProfile of one method (after a warm-up call), the top functions by own time."""
    import cProfile
    import pstats

    from methods import Context, Table, key, methods, sync

    table = Table.parse(spec)
    rows = methods(table, tuple(args.backends))
    chosen = [m for m in rows if key(m) == label] or [m for m in rows if label in key(m)]
    if len(chosen) != 1:
        raise SystemExit(f"--profile: {label!r} matches {[key(m) for m in chosen] or 'none'} "
                         f"of {[key(m) for m in rows]}")
    prepared = chosen[0].prepare(Context(table))
    sync(prepared.call())
    profile = cProfile.Profile()
    start = time.perf_counter()
    profile.enable()
    for _ in range(args.repeat):
        sync(prepared.call())
    profile.disable()
    print(f"{key(chosen[0])} on {spec}: {(time.perf_counter() - start) / args.repeat * 1e3:.1f}"
          f" ms per call under cProfile, {args.repeat} calls")
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)


# ------------------------------------------------------------------------ printing


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 \
        else f"{ms:.0f}"


def _reference(result: dict[str, Any], table: dict[str, Any], gradient: bool) -> float | None:
    """The median of torch autograd (``gradient=False``) or of the same backend's
    rp.gradient (jitted for a jitted method)."""
    for other in table["methods"].values():
        if gradient and other["gradient"] and other["backend"] == result["backend"] \
                and other["jit"] == result["jit"]:
            return other.get("median_s")
        if not gradient and other["library"] == "torch":
            return other.get("median_s")
    return None


def rows_of(table: dict[str, Any], memory: bool) -> list[list[str]]:
    rows = []
    for result in table["methods"].values():
        name = f"{result['library']} {result['name']}"
        if "error" in result:
            rows.append([name, result["backend"], f"n/a ({result['error']})", "", "", "", "", ""]
                        + ([""] if memory else []))
            continue
        median = result.get("median_s")
        ratios = []
        for gradient in (False, True):
            reference = _reference(result, table, gradient)
            if not result["ratios"] or median is None or reference is None \
                    or (gradient and result["library"] != "relprop" and not result["jit"]):
                ratios.append("-")
            else:
                ratios.append(f"{median / reference:.2f}x")
        compile_s = result.get("compile_s")
        difference = result.get("difference")
        row = [name, result["backend"], _ms(median), *ratios,
               "-" if compile_s is None else f"{compile_s:.2f} s",
               "ref" if difference is None else "0" if difference == 0 else f"{difference:.0e}"]
        if memory:
            extra = result.get("memory", {}).get("extra")
            row.append(result.get("memory", {}).get("error", "?") if extra is None
                       else f"{extra / 2**20:.0f}")
        rows.append(row)
    return rows


HEADER = ["method", "backend", "median ms", "vs autograd", "vs rp.gradient", "compile",
          "difference"]


def format_text(table: dict[str, Any], memory: bool) -> str:
    header = HEADER + (["peak extra MiB"] if memory else [])
    rows = rows_of(table, memory)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    left = {0, 1}

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    out = [f"{table['title']}", f"median of {table['repeat']} interleaved repetitions",
           line(header), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def format_markdown(table: dict[str, Any], memory: bool) -> str:
    header = HEADER + (["peak extra MiB"] if memory else [])
    rows = rows_of(table, memory)
    align = ["---", "---"] + ["---:"] * (len(header) - 2)
    out = [f"### {table['title']}", "",
           f"Median of {table['repeat']} interleaved repetitions.", "",
           "| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(out)


def format_machine(info: dict[str, Any], markdown: bool) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [f"machine: {info['cpu']}, {info['cores']} cores usable, torch threads "
             f"{info['torch threads']}", f"python {info['python']}; {versions}",
             f"commit {info['commit']}, {info['date']}"]
    return "\n".join(f"- {line}" for line in lines) if markdown else "\n".join(lines)


def _log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the driver


def _child_command(args: argparse.Namespace, *extra: str) -> list[str]:
    command = [sys.executable, str(Path(__file__).resolve()), *extra,
               "--repeat", str(args.repeat), "--warmup", str(args.warmup),
               "--min-repeat", str(args.min_repeat), "--budget", str(args.budget),
               "--min-time", str(args.min_time), "--settle", str(args.settle),
               "--backends", *args.backends]
    if args.threads:
        command += ["--threads", str(args.threads)]
    return command


def _child(command: list[str], echo: bool = False) -> dict[str, Any]:
    """Run a child of this script; its JSON result, or ``{"error": last stderr line}``."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        with subprocess.Popen([*command, "--json", str(out)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) as child:
            assert child.stderr is not None
            lines = []
            for line in child.stderr:
                lines.append(line.rstrip())
                if echo:
                    _log(line.rstrip())
        if child.returncode != 0 or not out.exists():
            tail = [line for line in lines if line.strip()][-1:] or [f"exit {child.returncode}"]
            return {"error": tail[0][:160]}
        return json.loads(out.read_text())


def drive(args: argparse.Namespace) -> None:
    from methods import Table

    tables = [str(Table.parse(t)) for t in args.tables]
    info = machine_info(args.threads)
    _log(format_machine(info, markdown=False))
    results = []
    for spec in tables:
        begin = time.perf_counter()
        _log(f"table {spec}: timing in one process")
        result = _child(_child_command(args, "--child-table", spec), echo=True)
        if "error" in result:
            _log(f"table {spec} failed: {result['error']}")
            continue
        _log(f"table {spec}: {time.perf_counter() - begin:.0f} s")
        results.append(result)
    if args.memory:
        jobs = []
        for result in results:
            for k, method in result["methods"].items():
                if "error" not in method:
                    jobs.append((result, k))
        _log(f"memory: {len(jobs)} subprocesses, {args.jobs} at a time")

        def measure(job: tuple[dict[str, Any], str]) -> None:
            result, k = job
            command = _child_command(args, "--child-memory", result["table"], k)
            result["methods"][k]["memory"] = _child(command)

        begin = time.perf_counter()
        # glibc keeps freed blocks below its (adaptive) mmap threshold in the heap: a
        # method would then reuse what its setup freed (rp.from_torch's check forward, which
        # autograd's setup does not run) and look smaller than it is. A fixed threshold
        # returns every block of 1 MiB or more to the system when it is freed.
        os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(1 << 20))
        if args.jobs > 1:  # side by side, one thread each: no library's pool oversubscribed
            for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                os.environ[name] = "1"
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                       " --xla_cpu_multi_thread_eigen=false").strip()
        if sys.version_info >= (3, 11):  # a fresh process per method, forked from a server
            # that has imported torch and relprop (and run nothing): saves the imports
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["numpy", "torch", "relprop", "methods"])
            with ProcessPoolExecutor(max_workers=args.jobs, mp_context=context,
                                     max_tasks_per_child=1) as processes:
                threads = 1 if args.jobs > 1 else args.threads
                futures = [(result, k, processes.submit(
                    memory_job, result["table"], k, list(args.backends), threads))
                    for result, k in jobs]
                for result, k, future in futures:
                    try:
                        result["methods"][k]["memory"] = future.result()
                    except Exception as exc:  # noqa: BLE001 - the row says what failed
                        result["methods"][k]["memory"] = {"error": _error(exc)}
        else:
            with ThreadPoolExecutor(max_workers=args.jobs) as pool:
                list(pool.map(measure, jobs))
        _log(f"memory: {time.perf_counter() - begin:.0f} s")
    print(format_machine(info, markdown=False))
    for result in results:
        print()
        print(format_text(result, args.memory))
    if args.markdown:
        parts = [format_machine(info, markdown=True)]
        parts += [format_markdown(result, args.memory) for result in results]
        Path(args.markdown).write_text("\n\n".join(parts) + "\n")
        _log(f"markdown written to {args.markdown}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tables", nargs="+", default=None,
                        help=f"kind[:batch[:size]] each (default: {' '.join(DEFAULT_TABLES)})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: {' '.join(QUICK_TABLES)}, 1 repetition, no memory")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--min-repeat", type=int, default=3,
                        help="timed rounds at least, whatever --budget says (default 3)")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds of timed rounds per table: fewer than --repeat rounds "
                             "(not fewer than --min-repeat) where the warm-up round says "
                             "they would take longer (default 60)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="untimed rounds, at least 1 (default 1)")
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="seconds per sample at least: faster methods are called "
                             "several times per sample (default 0.05)")
    parser.add_argument("--settle", type=float, default=0.25,
                        help="methods faster than this (seconds) get one untimed call "
                             "before each sample, so that switching from the other "
                             "methods (their thread pools still spinning, caches) is not "
                             "timed (default 0.25)")
    parser.add_argument("--backends", nargs="+", default=["torch", "numpy", "jax"],
                        choices=["torch", "numpy", "jax"], help="relprop backends timed")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="skip the memory subprocesses")
    parser.add_argument("--jobs", type=int, default=2,
                        help="memory subprocesses at a time (default 2)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the tables as markdown")
    parser.add_argument("--verbose", action="store_true", help="print tracebacks of failures")
    parser.add_argument("--list", action="store_true",
                        help="list the methods of each table (the names --profile takes)")
    parser.add_argument("--profile", nargs=2, metavar=("TABLE", "METHOD"),
                        help="cProfile one method (--repeat calls), e.g. --profile "
                             "vgg16:1:64 'torch|relprop EpsilonGammaBox'")
    parser.add_argument("--top", type=int, default=25, help="functions --profile prints")
    parser.add_argument("--child-table", metavar="TABLE", help=argparse.SUPPRESS)
    parser.add_argument("--child-memory", nargs=2, metavar=("TABLE", "METHOD"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--json", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.tables = args.tables or QUICK_TABLES
        args.repeat, args.memory = 1, False
    args.tables = args.tables or DEFAULT_TABLES
    args.warmup = max(1, args.warmup)  # the warm-up round fixes the calls per sample
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, str(HERE))
    if args.child_table or args.child_memory:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.child_table:
            result = run_table(args.child_table, args)
        else:
            result = run_memory(*args.child_memory, args)
        Path(args.json).write_text(json.dumps(result))
        return
    if args.profile:
        run_profile(*args.profile, args)
        return
    if args.list:
        from methods import Table, key, methods

        for spec in args.tables:
            print(f"{Table.parse(spec)}: " + ", ".join(
                repr(key(m)) for m in methods(Table.parse(spec), tuple(args.backends))))
        return
    drive(args)


if __name__ == "__main__":
    main()
