"""The documentation's code runs: every ```python block of a guide, in order and in one
namespace, then its ```pycon blocks as doctests. The guides use torch, JAX and
array-api-strict side by side, so this runs in the ``examples`` nox session, which installs
every CPU backend."""

from __future__ import annotations

import doctest
import re
from pathlib import Path

import pytest

pytest.importorskip("torch", reason="the guides need torch and jax side by side (nox -s examples)")
pytest.importorskip("jax", reason="the guides need torch and jax side by side (nox -s examples)")
pytest.importorskip("array_api_strict", reason="the guides use array-api-strict (nox -s examples)")

DOCS = Path(__file__).resolve().parent.parent / "docs"
GUIDES = ["user_guide.md", "rules.md"]


@pytest.mark.parametrize("name", GUIDES)
def test_python_blocks_run(name: str) -> None:
    path = DOCS / name
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    assert blocks, f"{name} has no python blocks"
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for index, block in enumerate(blocks):
        exec(compile(block, f"{path}:block{index}", "exec"), namespace)  # noqa: S102


@pytest.mark.parametrize("name", ["user_guide.md"])
def test_pycon_blocks_are_true(name: str) -> None:
    path = DOCS / name
    pycon = "\n\n".join(re.findall(r"```pycon\n(.*?)```", path.read_text(), flags=re.S))
    test = doctest.DocTestParser().get_doctest(pycon, {}, name, str(path), 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, result
