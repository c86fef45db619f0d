"""Test, lint and type-check sessions for relprop.

``nox`` runs every default session: the test suite once per array backend
(``tests(numpy)``, ``tests(torch)``, ``tests(jax)``, ``tests(array_api_strict)``,
``tests(cupy)``), then ``lint`` and ``types``. ``nox -s "tests(torch)"`` runs one.
Arguments after ``--`` are passed to pytest, e.g. ``nox -s "tests(jax)" -- -x -k dense``.

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

# backend name -> (requirements file in backends/, module that must import)
BACKENDS: dict[str, tuple[str, str]] = {
    "numpy": ("numpy", "numpy"),
    "torch": ("torch", "torch"),
    "jax": ("jax", "jax"),
    "array_api_strict": ("strict", "array_api_strict"),
    "cupy": ("cupy", "cupy"),
}

ZENNIT = "zennit==0.5.1"

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True
nox.options.sessions = [f"tests({name})" for name in BACKENDS] + ["examples", "lint", "types"]


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
    requirements, module = BACKENDS[backend]

    if backend == "cupy" and not _nvidia_gpu_available():
        session.skip("cupy needs an NVIDIA GPU with CUDA; none found on this machine")

    session.install("-r", "backends/test.txt", "-r", f"backends/{requirements}.txt")
    session.install("-e", ".")
    if backend == "torch":
        # zennit's torchvision dependency does not import beside torch 2.13;
        # the tests provide a stand-in, so install zennit alone.
        session.install("--no-deps", ZENNIT)

    # A backend that does not import fails the session here, not as skipped tests.
    session.run("python", "-c", f"import {module}; print({module}.__name__, {module}.__version__)")

    env = {"RELPROP_BACKEND": backend}
    if backend == "jax":
        env["JAX_PLATFORMS"] = os.environ.get("JAX_PLATFORMS", "cpu")

    REPORTS.mkdir(exist_ok=True)
    report = REPORTS / f"{backend}.xml"
    report.unlink(missing_ok=True)  # never leave a stale report behind

    # The docstring examples are NumPy code: run them once, in the NumPy session.
    doctests = ["--doctest-modules", "src/relprop", "tests"] if backend == "numpy" else []
    if backend == "numpy" and not session.posargs:
        doctests += [
            "--ignore=src/relprop/autodiff/_torch.py",
            "--ignore=src/relprop/autodiff/_jax.py",
        ]
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


@nox.session
def examples(session: nox.Session) -> None:
    """Run the guides' code and every script in docs/examples/ (all CPU backends side by side)."""
    session.install(
        "-r", "backends/test.txt",
        "-r", "backends/torch.txt",
        "-r", "backends/jax.txt",
        "-r", "backends/strict.txt",
    )
    session.install("-e", ".")
    session.run("python", "-m", "pytest", "tests/test_docs.py", env={"JAX_PLATFORMS": "cpu"})
    scripts = sorted((ROOT / "docs" / "examples").glob("*.py"))
    if not scripts:
        session.error("no example scripts found in docs/examples/")
    for script in scripts:
        session.run("python", str(script), env={"JAX_PLATFORMS": "cpu"})


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
