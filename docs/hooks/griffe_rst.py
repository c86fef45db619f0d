"""griffe extension for the API reference: the docstrings' reStructuredText bits as Markdown.

relprop's docstrings are numpydoc, written partly in reStructuredText, which mkdocstrings
renders as Markdown. This extension rewrites, in the text given to mkdocstrings only (the
source files are not touched):

* simple tables (``=====  =====`` borders) into Markdown tables;
* ``.. math::`` directives into ``$$ ... $$`` blocks (turned into MathML by ``mathml.py``);
* hyperlinks ```text <https://...>`_`` into ``[text](https://...)``;
* a paragraph's closing ``::`` (which introduces a literal block) into ``:``;

and gives classes whose docstring is assigned at run time (``__doc__ = ... + _OPTIONS_DOC``,
invisible to static analysis) their real docstring.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import Any

from griffe import Docstring, Extension, Object

_BORDER = re.compile(r"^(\s*)(=+)((?: +=+)+)\s*$")
_MATH = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_LINK = re.compile(r"`([^`<]+?)\s*<(https?://[^>]+)>`__?")


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _cells(line: str, spans: list[tuple[int, int]]) -> list[str]:
    cells = []
    for k, (start, _) in enumerate(spans):
        end = spans[k + 1][0] if k + 1 < len(spans) else len(line)
        cells.append(line[start:end].strip().replace("|", "\\|"))
    return cells


def _tables(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _BORDER.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        spans = _columns(lines[i])
        borders = [i]
        j = i + 1
        while j < len(lines) and lines[j].strip() and len(borders) < 3:
            if _BORDER.match(lines[j]):
                borders.append(j)
            j += 1
        if len(borders) < 3:  # not a header-and-body simple table: leave it
            out.append(lines[i])
            i += 1
            continue
        header = [_cells(line, spans) for line in lines[borders[0] + 1 : borders[1]]]
        body = [_cells(line, spans) for line in lines[borders[1] + 1 : borders[2]]]
        titles = [" ".join(parts).strip() for parts in zip(*header, strict=True)] if header else []
        indent = match.group(1)
        out += ["", indent + "| " + " | ".join(titles) + " |",
                indent + "|" + "---|" * len(spans)]
        out += [indent + "| " + " | ".join(row) + " |" for row in body]
        out.append("")
        i = borders[2] + 1
    return out


def _math(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _MATH.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        indent = len(match.group(1))
        body = [match.group(2)] if match.group(2).strip() else []
        i += 1
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i].strip())
            i += 1
        formula = " ".join(part for part in body if part)
        pad = match.group(1)
        out += ["", f"{pad}$$", f"{pad}{formula}", f"{pad}$$", ""]
    return out


def markdown(text: str) -> str:
    """The reStructuredText bits of one docstring as Markdown."""
    lines = _math(_tables(text.splitlines()))
    text = "\n".join(lines)
    text = _LINK.sub(r"[\1](\2)", text)
    text = re.sub(r"(\S) ::$", r"\1", text, flags=re.M)
    text = re.sub(r"(\S)::$", r"\1:", text, flags=re.M)
    return text


class RstToMarkdown(Extension):
    """See the module docstring."""

    def on_object(self, *, obj: Object, **kwargs: Any) -> None:
        if obj.docstring is None and obj.is_class and not obj.name.startswith("_"):
            try:
                runtime = getattr(importlib.import_module(obj.module.path), obj.name)
            except Exception:  # noqa: BLE001 - static docs are all we have then
                runtime = None
            doc = runtime.__dict__.get("__doc__") if isinstance(runtime, type) else None
            if doc:
                obj.docstring = Docstring(inspect.cleandoc(doc), parent=obj)
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)
