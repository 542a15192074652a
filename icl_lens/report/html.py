"""The report as one self-contained HTML page: inline CSS, PNGs as base64, inlined JavaScript."""

from __future__ import annotations

import base64
import html
from typing import Any

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0;
       color: #1f2328; background: #ffffff; line-height: 1.45; }
header { background: #24335a; color: #fff; padding: 24px 40px; }
header h1 { margin: 0 0 6px 0; font-size: 26px; }
header p { margin: 2px 0; opacity: .9; }
main { padding: 10px 40px 40px 40px; max-width: 1100px; }
nav ul { padding-left: 18px; columns: 2; }
section { border-top: 1px solid #d0d7de; padding-top: 10px; margin-top: 24px; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
          font-weight: 600; margin-left: 8px; vertical-align: middle; }
.status-ok { background: #dafbe1; color: #116329; }
.status-pending { background: #fff8c5; color: #7d4e00; }
.status-skipped { background: #eaeef2; color: #424a53; }
.status-failed { background: #ffebe9; color: #a40e26; }
.why { color: #57606a; font-style: italic; }
.summary { font-weight: 600; }
.note { background: #fff8c5; border-left: 4px solid #d4a72c; padding: 6px 10px; }
.error { background: #ffebe9; border-left: 4px solid #cf222e; padding: 6px 10px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: right; }
th { background: #f6f8fa; }
img.figure { max-width: 100%; border: 1px solid #eaeef2; }
pre { background: #f6f8fa; padding: 8px; overflow-x: auto; font-size: 12px; }
footer { color: #57606a; font-size: 12px; margin-top: 40px; }
"""


def esc(text: Any) -> str:
    return html.escape(str(text))


def png_tag(png: bytes | None, alt: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode()
    return f'<img class="figure" alt="{esc(alt)}" src="data:image/png;base64,{data}"/>'


def section_html(outcome: Any) -> str:
    """One ``<section id="section-KEY">`` from a :class:`~icl_lens.report.SectionOutcome`."""
    s = outcome.section
    parts = [
        f'<section id="section-{esc(s.key)}" data-status="{esc(outcome.status)}">',
        f'<h2>{esc(s.title)}<span class="status status-{esc(outcome.status)}">{esc(outcome.status)}</span></h2>',
        f'<p class="why">{esc(s.why)} <code>il.{esc(s.function.__name__)}</code></p>',
    ]
    if outcome.status == "ok":
        parts.append(f'<p class="summary">{esc(outcome.summary)}</p>')
        parts.append(png_tag(outcome.png, s.title))
        if outcome.table_html:
            parts.append(outcome.table_html)
        parts.append(
            f"<p>Saved result: <code>{esc(outcome.saved)}</code> "
            f"(load with <code>il.load_result</code>); {outcome.seconds:.1f} s.</p>"
        )
    elif outcome.status == "failed":
        parts.append(f'<p class="error">This analysis raised an error: {esc(outcome.note)}</p>')
        if outcome.traceback:
            parts.append(f"<details><summary>traceback</summary><pre>{esc(outcome.traceback)}</pre></details>")
    else:
        parts.append(f'<p class="note">{esc(outcome.note)}</p>')
    parts.append("</section>")
    return "\n".join(p for p in parts if p)


def page(title: str, facts: list[tuple[str, str]], sections: list[Any], attention: str | None, footer: str) -> str:
    """The whole page. ``attention`` is a circuitsvis view with its JavaScript inlined."""
    nav = "".join(
        f'<li><a href="#section-{esc(o.section.key)}">{esc(o.section.title)}</a> ({esc(o.status)})</li>'
        for o in sections
    )
    nav += '<li><a href="#section-attention">Attention view</a></li>' if attention else ""
    fact_lines = "".join(f"<p><b>{esc(k)}:</b> {esc(v)}</p>" for k, v in facts)
    body = [section_html(o) for o in sections]
    if attention:
        body.append(f'<section id="section-attention">\n<h2>Attention view</h2>\n{attention}\n</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1>{fact_lines}</header>\n<main>\n"
        f'<nav id="contents"><h3>Contents</h3><ul>{nav}</ul></nav>\n'
        + "\n".join(body)
        + f"\n<footer>{esc(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )
