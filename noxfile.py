"""Test, docs, lint and type-check sessions for relprop.

``nox`` runs every default session: the test suite once per array backend
(``tests(numpy)``, ``tests(torch)``, ``tests(jax)``, ``tests(array_api_strict)``,
``tests(array_api_strict-device1)`` (every array on a second device), ``tests(cupy)``),
then ``docs`` (every page's code and example script, the figures, the
site built with ``--strict``), ``lint`` and ``types``. ``nox -s "tests(torch)"`` runs one.
Arguments after ``--`` are passed to pytest, e.g. ``nox -s "tests(jax)" -- -x -k dense``.
``nox -s bench`` (not a default session, never part of the tests) runs the benchmark
suite, ``benchmarks/suite.py``, with the arguments after ``--``, e.g.
``nox -s bench -- --quick`` or ``nox -s bench -- --markdown bench.md``.

Each test session writes a JUnit report to ``.ci-reports/<backend>.xml``; ``.ci/run``
reads those reports to make sure tests really ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import nox

ROOT = Path(__file__).resolve().parent
REPORTS = ROOT / ".ci-reports"

# backend name -> (requirements files in backends/, modules that must import). The numpy
# session also holds dask, distributed and zarr (dask arrays in the entry points and the
# Zarr writer of relprop.dask, on a LocalCluster: tests/test_dask.py). The torch
# session also holds onnx (models exported from torch are read back,
# tests/test_from_onnx.py); the jax session holds the JAX importers' frameworks (flax,
# equinox) and torch, whose imported twins the importers' relevance is compared with
# (tests/test_from_jax.py), Quantus (tests/test_metrics.py; not beside zennit), and
# HuggingFace transformers with LXT 2.1 (tests/test_huggingface.py; LXT would import zennit).
BACKENDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "numpy": (("numpy", "dask"), ("numpy", "dask", "distributed", "zarr")),
    "torch": (("torch", "onnx"), ("torch", "onnx", "onnxruntime", "onnxscript")),
    "jax": (("jax", "importers", "torch", "quantus", "transformers"),
            ("jax", "flax", "equinox", "keras", "torch", "quantus", "transformers")),
    "array_api_strict": (("strict",), ("array_api_strict",)),
    # the whole suite with every array made from nothing on array-api-strict's second
    # device (RELPROP_DEVICE=device1), which refuses to mix devices as CUDA does: the
    # device bugs a GPU would find, found without one
    "array_api_strict-device1": (("strict",), ("array_api_strict",)),
    "cupy": (("cupy",), ("cupy",)),
}

ZENNIT = "zennit==0.5.1"
LXT = "lxt==2.1"  # the AttnLRP reference; --no-deps: see backends/transformers.txt
# modules whose docstring examples need the frameworks the importers read: run in the
# session that installs them
SESSION_DOCTESTS: dict[str, list[str]] = {
    "jax": [
        "src/relprop/interop/jax.py",
        "src/relprop/interop/flax.py",
        "src/relprop/interop/equinox.py",
    ],
    "torch": ["src/relprop/interop/onnx.py"],
}

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [f"tests({name})" for name in BACKENDS] + ["docs", "lint", "types"]


def _nvidia_gpu_available() -> bool:
    """True when nvidia-smi exists, runs successfully and lists at least one GPU."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    try:
        result = subprocess.run(
            [smi, "-L"], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0 and "GPU" in result.stdout


@nox.session
@nox.parametrize("backend", list(BACKENDS), ids=list(BACKENDS))
def tests(session: nox.Session, backend: str) -> None:
    """Run the test suite with RELPROP_BACKEND=<backend>."""
    requirements, modules = BACKENDS[backend]

    if backend == "cupy" and not _nvidia_gpu_available():
        session.skip("cupy needs an NVIDIA GPU with CUDA; none found on this machine")

    files = [arg for name in requirements for arg in ("-r", f"backends/{name}.txt")]
    session.install("-r", "backends/test.txt", *files)
    session.install("-e", ".")
    if backend == "torch":
        # zennit's torchvision dependency does not import beside torch 2.13;
        # the tests provide a stand-in, so install zennit alone.
        session.install("--no-deps", ZENNIT)
    if backend == "jax":
        session.install("--no-deps", LXT)
        show_lxt = "import importlib.metadata as m; print('lxt', m.version('lxt'))"
        session.run("python", "-c", show_lxt)

    # A backend that does not import fails the session here, not as skipped tests.
    for module in modules:
        show = f"import {module}; print({module}.__name__, {module}.__version__)"
        session.run("python", "-c", show, env={"KERAS_BACKEND": "jax"})

    library, _, device = backend.partition("-")
    env = {"RELPROP_BACKEND": library}
    if device:
        env["RELPROP_DEVICE"] = device
    if backend == "jax":
        env["JAX_PLATFORMS"] = os.environ.get("JAX_PLATFORMS", "cpu")
        env["KERAS_BACKEND"] = "jax"  # keras reads it at import (tests/test_from_keras.py)

    REPORTS.mkdir(exist_ok=True)
    report = REPORTS / f"{backend}.xml"
    report.unlink(missing_ok=True)  # never leave a stale report behind

    # The docstring examples are NumPy code: run them once, in the NumPy session; those of
    # the importers need their frameworks: the session that installs them runs them.
    doctests = ["--doctest-modules", "src/relprop", "tests"] if backend == "numpy" else []
    if backend == "numpy" and not session.posargs:
        doctests += [
            "--ignore=src/relprop/autodiff/_torch.py",
            "--ignore=src/relprop/autodiff/_jax.py",
            *(f"--ignore={path}" for paths in SESSION_DOCTESTS.values() for path in paths),
        ]
    if backend in SESSION_DOCTESTS:
        doctests = ["--doctest-modules", *SESSION_DOCTESTS[backend], "tests"]
    # Default success_codes=[0]: exit code 5 (no tests collected) fails the session.
    # One worker per core, each taking whole files (JAX compiles every new op and shape
    # once per process; files keep their own module-level state together).
    workers = ["-n", "auto", "--dist", "loadfile"]
    session.run(
        "python",
        "-m",
        "pytest",
        f"--junitxml={report}",
        *workers,
        *(session.posargs or doctests),
        env=env,
    )


DOCS_FIGURES = ROOT / "docs" / "figures"
# Extra command-line arguments of example scripts (the figure directory, for the ones that
# take it as an argument rather than from RELPROP_FIGURES).
EXAMPLE_ARGS: dict[str, list[str]] = {"dtd_full_backward.py": [str(DOCS_FIGURES)]}


def _install_docs(session: nox.Session) -> None:
    """Every CPU backend side by side, the test and docs tools, relprop with its CLI."""
    session.install(
        "-r", "backends/test.txt",
        "-r", "backends/torch.txt",
        "-r", "backends/jax.txt",
        "-r", "backends/importers.txt",
        "-r", "backends/onnx.txt",
        "-r", "backends/strict.txt",
        "-r", "backends/dask.txt",
        "-r", "backends/transformers.txt",
        "-r", "backends/docs.txt",
    )
    session.install("-e", ".[cli]")


def _relative(text: str) -> str:
    """Command output with this checkout's paths made relative (for the pages)."""
    return text.replace(f"{ROOT}{os.sep}", "")


def _run_to_file(session: nox.Session, out: Path, *args: str, env: dict[str, str]) -> None:
    """Run a command (failing the session if it fails), keep its output for the pages."""
    with open(out, "w") as handle:
        session.run(*args, env=env, stdout=handle, stderr=None)
    text = _relative(out.read_text())
    out.write_text(text)
    session.log(f"{out.relative_to(ROOT)}:\n{text}")


def _pages_and_examples(session: nox.Session) -> None:
    """Every page's code (tests/test_docs.py), then every script in docs/examples/, with
    their figures and printed output written to docs/figures/."""
    DOCS_FIGURES.mkdir(parents=True, exist_ok=True)
    env = {"JAX_PLATFORMS": "cpu", "RELPROP_FIGURES": str(DOCS_FIGURES)}
    session.run("python", "-m", "pytest", "tests/test_docs.py", env=env)
    scripts = sorted((ROOT / "docs" / "examples").glob("*.py"))
    if not scripts:
        session.error("no example scripts found in docs/examples/")
    for script in scripts:
        out = DOCS_FIGURES / f"{script.stem}.txt"
        extra = EXAMPLE_ARGS.get(script.name, [])
        _run_to_file(session, out, "python", str(script), *extra, env=env)


@nox.session
def examples(session: nox.Session) -> None:
    """Run every docs page's code and every script in docs/examples/ (an alias: part of
    ``docs``, which also draws the demo and builds the site)."""
    _install_docs(session)
    _pages_and_examples(session)


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation: every page's code and example script, the figures in docs/figures/
    (regenerated, never committed), then ``mkdocs build --strict`` into site/."""
    _install_docs(session)
    shutil.rmtree(DOCS_FIGURES, ignore_errors=True)  # no stale figure hides a failure
    _pages_and_examples(session)

    env = {"JAX_PLATFORMS": "cpu", "RELPROP_BACKEND": "numpy"}
    demo_png = DOCS_FIGURES / "demo.png"
    _run_to_file(session, DOCS_FIGURES / "demo.txt",
                 "relprop", "demo", "--out", str(demo_png), env=env)
    model = session.run(
        "python", "-c", "from relprop.data import DIGITS_MODEL; print(DIGITS_MODEL)",
        silent=True,
    )
    model = str(model).strip().splitlines()[-1]
    digits = DOCS_FIGURES / "digits.npy"
    session.run(
        "python", "-c",
        "import sys, numpy as np; from relprop.data import load_digits; "
        "np.save(sys.argv[1], load_digits(backend='numpy')[0][::10])",
        str(digits),
    )
    explain_png = DOCS_FIGURES / "explain.png"
    _run_to_file(session, DOCS_FIGURES / "explain.txt",
                 "relprop", "explain", model, str(digits), "--out", str(explain_png),
                 "--no-progress", env=env)
    _run_to_file(session, DOCS_FIGURES / "info.txt", "relprop", "info", model, env=env)
    for picture in [demo_png, explain_png]:
        if not picture.is_file() or picture.stat().st_size == 0:
            session.error(f"{picture.relative_to(ROOT)} was not written")

    # --strict (also set in mkdocs.yml): any warning, a page missing from the nav, a broken
    # link or anchor, or a missing figure fails the build.
    session.run("mkdocs", "build", "--strict", "--clean", "--site-dir", str(ROOT / "site"),
                env={"NO_MKDOCS_2_WARNING": "1"})


@nox.session
def bench(session: nox.Session) -> None:
    """The benchmark suite (benchmarks/suite.py, docs/benchmarks.md): relprop on torch,
    NumPy and JAX against torch autograd, zennit and Captum. Not a default session."""
    session.install("-r", "backends/bench.txt")
    session.install("-e", ".")
    session.install("--no-deps", ZENNIT)  # imported through tests/_zennit_standin.py
    session.run("python", "benchmarks/suite.py", *session.posargs,
                env={"JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")})


@nox.session
def lint(session: nox.Session) -> None:
    """Static checks with ruff."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def types(session: nox.Session) -> None:
    """Type-check the package with mypy."""
    session.install("mypy", "numpy", "array-api-compat", "array-api-extra")
    session.install("-e", ".")
    session.run("mypy", "src/relprop")
