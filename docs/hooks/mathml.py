"""mkdocs hook: formulas become MathML at build time, Sphinx roles in docstrings become code.

* ``$...$`` and ``$$...$$`` in the pages (``pymdownx.arithmatex`` in generic mode) and
  ``:math:`...``` in the docstrings are converted to MathML with ``latex2mathml``. Browsers
  render MathML natively, so the formulas show without JavaScript or a network connection
  (the site can be read from ``site/`` on disk). A formula that does not convert fails the
  build.
* The docstrings are written with Sphinx roles (``:func:`lrp```, ``:class:`~relprop.Graph```).
  mkdocstrings renders them as text followed by code; the role is dropped, a fully qualified
  name becomes a cross-reference (resolved by mkdocs-autorefs where the object is
  documented, plain code otherwise), and ``~`` shortens it to its last component.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)
_BLOCK = re.compile(r'<div class="arithmatex">\\\[(.*?)\\\]</div>', re.S)
_MATH_ROLE = re.compile(r":math:<code>(.*?)</code>", re.S)
_ROLE = re.compile(
    r":(?:py:)?(?:func|class|mod|meth|attr|data|exc|obj|const):<code>(~?)([\w.]+)</code>"
)


def _mathml(latex: str, display: str) -> str:
    source = html.unescape(latex).strip()
    try:
        return convert(source, display=display)
    except Exception as error:  # noqa: BLE001 - any failure names the formula
        raise ValueError(f"formula does not convert to MathML: {source!r}: {error}") from error


def _role(match: re.Match[str]) -> str:
    short, name = match.group(1) == "~", match.group(2)
    title = name.rsplit(".", 1)[-1] if short else name
    if "." not in name or not name.startswith("relprop"):
        return f"<code>{title}</code>"
    return f'<autoref identifier="{name}" optional><code>{title}</code></autoref>'


def on_page_content(html_text: str, **kwargs: object) -> str:
    html_text = _BLOCK.sub(lambda m: _mathml(m.group(1), "block"), html_text)
    html_text = _INLINE.sub(lambda m: _mathml(m.group(1), "inline"), html_text)
    html_text = _MATH_ROLE.sub(lambda m: _mathml(m.group(1), "inline"), html_text)
    return _ROLE.sub(_role, html_text)
