"""The report as one self-contained HTML page: inline CSS, PNGs as base64, inlined JavaScript."""

from __future__ import annotations

import base64
import html
from typing import Any

CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif; margin: 0;
       color: #1f2328; background: #ffffff; line-height: 1.45; }
header { background: #24335a; color: #fff; padding: 14px 40px; }
header h1 { margin: 0 0 4px 0; font-size: 24px; }
header p { margin: 2px 0; opacity: .9; font-size: 14px; }
#findings { border: 1px solid #d0d7de; border-radius: 6px; padding: 4px 16px 8px 16px; margin-top: 14px;
            background: #f6f8fa; }
#findings h2 { font-size: 18px; margin: 8px 0 4px 0; }
#findings ul { list-style: none; padding: 0; margin: 0; }
#findings li { margin: 5px 0; font-size: 14px; }
#findings .reason { display: block; color: #57606a; font-size: 13px; margin-left: 92px; }
.verdict { display: inline-block; width: 78px; text-align: center; padding: 1px 0; border-radius: 10px;
           font-size: 12px; font-weight: 600; margin-right: 10px; }
.verdict-found { background: #dafbe1; color: #116329; }
.verdict-partial { background: #fff8c5; color: #7d4e00; }
.verdict-no-effect, .verdict-reported, .verdict-skipped { background: #eaeef2; color: #424a53; }
.verdict-failed { background: #ffebe9; color: #a40e26; }
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


def findings_html(findings: list[Any], outcomes: list[Any]) -> str:
    """The block at the top of the page: one line per section (:mod:`icl_lens.report.findings`)."""
    found = {f.key: f for f in findings}
    items = []
    for o in outcomes:
        key, title = o.section.key, o.section.title
        f = found.get(key)
        verdict, text, why = (f.verdict, f.headline, f.why) if f else (o.status, o.note.split("\n")[0], "")
        items.append(
            f'<li data-verdict="{esc(verdict)}"><span class="verdict verdict-{esc(verdict).replace(" ", "-")}">'
            f'{esc(verdict)}</span><a href="#section-{esc(key)}">{esc(title)}</a>: {esc(text)}'
            + (f'<span class="reason">{esc(why[0].upper() + why[1:])}.</span>' if why else "")
            + "</li>"
        )
    return f'<section id="findings">\n<h2>What this report found</h2>\n<ul>{"".join(items)}</ul>\n</section>\n'


def page(
    title: str,
    facts: list[tuple[str, str]],
    sections: list[Any],
    attention: str | None,
    footer: str,
    findings: str = "",
) -> str:
    """The whole page: the findings first, then each section. ``attention`` is a circuitsvis view."""
    nav = "".join(
        f'<li><a href="#section-{esc(o.section.key)}">{esc(o.section.title)}</a> ({esc(o.status)})</li>'
        for o in sections
    )
    nav += '<li><a href="#section-attention">Attention view</a></li>' if attention else ""
    fact_lines = "<p>" + " &middot; ".join(f"<b>{esc(k)}:</b> {esc(v)}" for k, v in facts) + "</p>"
    body = [section_html(o) for o in sections]
    if attention:
        body.append(f'<section id="section-attention">\n<h2>Attention view</h2>\n{attention}\n</section>')
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8"/>\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header><h1>{esc(title)}</h1>{fact_lines}</header>\n<main>\n"
        + findings
        + f'<nav id="contents"><h3>Contents</h3><ul>{nav}</ul></nav>\n'
        + "\n".join(body)
        + f"\n<footer>{esc(footer)}</footer>\n</main>\n</body>\n</html>\n"
    )
