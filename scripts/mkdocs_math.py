"""mkdocs hook: formulas become MathML when the site is built, so they render with no network.

``pymdownx.arithmatex`` (generic mode) leaves TeX in ``<span class="arithmatex">\\(...\\)</span>``
and ``<div class="arithmatex">\\[...\\]</div>``; notebooks rendered by mkdocs-jupyter keep
``$...$`` in their markdown cells. Both are converted here with ``latex2mathml``, and every
browser draws MathML natively: no MathJax, no CDN, nothing fetched when a page is opened
(``tests/test_docs_browser.py`` checks it in headless Chromium). A formula the converter
cannot read fails the build, naming the page.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

ARITHMATEX = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
# $$...$$ or $...$ inside a notebook's markdown cell (not across tags, not "$5 and $6").
NOTEBOOK_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$\w])\$(?!\s)([^$<>\n]+?)(?<!\s)\$(?![\w$])", re.S)
MARKDOWN_CELL = re.compile(r'(<div class="[^"]*jp-RenderedMarkdown[^"]*"[^>]*>)(.*?)(</div>)', re.S)


def to_mathml(tex: str, block: bool, where: str) -> str:
    try:
        mathml = convert(tex.strip(), display="block" if block else "inline")
    except Exception as e:  # the build must not ship a formula as raw TeX
        raise ValueError(f"{where}: cannot render the formula {tex!r} ({type(e).__name__}: {e})") from e
    unknown = re.findall(r">(\\[A-Za-z]+)<", mathml)  # a command the converter passed through as text
    if unknown:
        raise ValueError(f"{where}: cannot render the formula {tex!r} (unknown command {unknown[0]})")
    return mathml


def _arithmatex(match: re.Match[str], where: str) -> str:
    body = html.unescape(match.group(2)).strip()
    if body.startswith("\\(") and body.endswith("\\)"):
        return to_mathml(body[2:-2], False, where)
    if body.startswith("\\[") and body.endswith("\\]"):
        return to_mathml(body[2:-2], True, where)
    return match.group(0)


def _notebook_cell(match: re.Match[str], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        block = m.group(1) is not None
        return to_mathml(html.unescape(m.group(1) if block else m.group(2)), block, where)

    return match.group(1) + NOTEBOOK_MATH.sub(one, match.group(2)) + match.group(3)


def render_math(page_html: str, where: str = "page") -> str:
    """``page_html`` with every formula replaced by MathML."""
    out = ARITHMATEX.sub(lambda m: _arithmatex(m, where), page_html)
    return MARKDOWN_CELL.sub(lambda m: _notebook_cell(m, where), out)


def on_page_content(html_text: str, page: Any, config: Any, files: Any) -> str:
    return render_math(html_text, page.file.src_path)
