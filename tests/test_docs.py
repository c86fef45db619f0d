"""The documentation's code runs: every ```python block of every page under docs/, in order
and in one namespace per page, then its ```pycon blocks as doctests.

The pages use torch, JAX and array-api-strict side by side, so this runs in the ``docs``
nox session (and its ``examples`` alias), which installs every CPU backend. Each page runs
in a fresh temporary working directory; the pictures a page's code writes there (PNG, SVG)
are copied to ``$RELPROP_FIGURES/<page path without .md>/`` when that variable is set, which
is where the page shows them from (``nox -s docs`` sets ``RELPROP_FIGURES=docs/figures``).
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import re
import shutil
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the docs need torch and jax side by side (nox -s docs)")
pytest.importorskip("jax", reason="the docs need torch and jax side by side (nox -s docs)")
pytest.importorskip("array_api_strict", reason="the docs use array-api-strict (nox -s docs)")

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Fences at the start of a line only: the example pages include the scripts' source in
# indented (collapsible) blocks, which the example scripts' own run covers.
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)
PYCON_BLOCK = re.compile(r"^```pycon\n(.*?)^```", flags=re.S | re.M)
# a ```text block right after a ```python block shows what that block prints (checked)
OUTPUT_BLOCK = re.compile(r"\s*```text\n(.*?)^```", flags=re.S | re.M)


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md") if "hooks" not in p.relative_to(DOCS).parts)


def _name(page: Path) -> str:
    return page.relative_to(DOCS).as_posix()


PAGES = _pages()
PYTHON_PAGES = [_name(p) for p in PAGES if PYTHON_BLOCK.search(p.read_text())]
PYCON_PAGES = [_name(p) for p in PAGES if PYCON_BLOCK.search(p.read_text())]


def test_pages_found() -> None:
    """Guard against a silent nothing: a moved docs folder or a changed fence."""
    assert PAGES, f"no pages found under {DOCS}"
    assert PYTHON_PAGES, "no page has ```python blocks"
    assert PYCON_PAGES, "no page has ```pycon blocks"
    for page in ["quickstart/numpy.md", "guide/lrp.md", "guide/heatmaps.md", "guide/rules.md"]:
        assert page in PYTHON_PAGES, f"{page} lost its ```python blocks"


def _needs_gpu(source: str) -> None:
    if re.search(r"^\s*import cupy|^\s*from cupy", source, flags=re.M):
        cupy = pytest.importorskip("cupy", reason="this page's code needs CuPy and a GPU")
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception:  # noqa: BLE001 - no driver, no device: all the same here
            count = 0
        if count < 1:
            pytest.skip("this page's code needs an NVIDIA GPU")


def _keep_figures(workdir: Path, page: str) -> None:
    target = os.environ.get("RELPROP_FIGURES")
    if not target:
        return
    destination = (ROOT / target) / Path(page).with_suffix("")
    for picture in sorted(workdir.iterdir()):
        if picture.suffix.lower() in {".png", ".svg"}:
            destination.mkdir(parents=True, exist_ok=True)
            shutil.copy2(picture, destination / picture.name)


@pytest.mark.parametrize("page", PYTHON_PAGES)
def test_python_blocks_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCS / page
    text = path.read_text()
    blocks = PYTHON_BLOCK.findall(text)
    _needs_gpu("\n".join(blocks))
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for index, match in enumerate(PYTHON_BLOCK.finditer(text)):
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(match.group(1), f"{path}:block{index}", "exec"), namespace)  # noqa: S102
        shown = OUTPUT_BLOCK.match(text, match.end())
        if shown is not None:  # a ```text block right after a block is what it prints
            assert printed.getvalue().strip() == shown.group(1).strip(), (
                f"{page}: block {index} prints\n{printed.getvalue()}\nnot what the page shows"
            )
    _keep_figures(tmp_path, page)


@pytest.mark.parametrize("page", PYCON_PAGES)
def test_pycon_blocks_are_true(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = DOCS / page
    pycon = "\n\n".join(PYCON_BLOCK.findall(path.read_text()))
    _needs_gpu(pycon)
    monkeypatch.chdir(tmp_path)
    test = doctest.DocTestParser().get_doctest(pycon, {}, page, str(path), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, result


def test_supported_modules_page_matches_from_torch() -> None:
    """The torch-module table of the Supported layers page lists what from_torch converts."""
    from relprop.interop.torch import supported_modules

    text = (DOCS / "guide" / "supported_layers.md").read_text()
    section = text.split("## torch modules", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")][1:]  # no header
    documented = {
        name.strip().strip("`") for row in rows for name in row.split("|")[1].split(",")
    }
    # relprop's own converters (a page's code may have registered more in this process)
    assert documented == set(supported_modules(registered=False)) | {"Sequential"}


def test_readme_python_blocks_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's quick start is the first code a new user copies."""
    path = ROOT / "README.md"
    blocks = PYTHON_BLOCK.findall(path.read_text())
    assert blocks, "the README lost its quick start"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{path}:block{index}", "exec"), namespace)  # noqa: S102
    assert namespace["pixels"].shape == (50, 8, 8, 3)  # type: ignore[attr-defined]
