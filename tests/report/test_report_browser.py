"""The HTML report as a person sees it: rendered by headless Chromium with no network.

The report is written for the real SmolLM2 at the CI size; Chromium takes a screenshot
(which must not be blank) and dumps the DOM after JavaScript ran (every section must be
there, and the circuitsvis attention view must have drawn its canvases).
"""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest

import icl_lens as il
from icl_lens.report import build_report
from icl_lens.report.sections import DEFAULT_SECTIONS


@pytest.fixture(scope="module")
def report(smollm2, tmp_path_factory):
    return build_report(smollm2, tmp_path_factory.mktemp("report"), size="tiny", show_progress=False)


@pytest.fixture(scope="module")
def dom(report, run_chromium) -> str:
    return run_chromium(report.html_path, "--dump-dom").stdout


@pytest.mark.smollm2
def test_report_files(report):
    index = json.loads((report.out / "report.json").read_text())
    assert [s["key"] for s in index["sections"]] == list(DEFAULT_SECTIONS)
    by_key = {s["key"]: s for s in index["sections"]}
    # evaluate_icl is in every version: its section ran, and its result reloads.
    assert by_key["accuracy"]["status"] == "ok"
    acc = il.load_result(report.out / "accuracy")
    assert acc.to_dataframe()["shots"].tolist() == [0, 5]
    assert (report.out / "figures" / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every analysis ran without error (the implant needs a vector, kernel regression a label set).
    for key, section in by_key.items():
        assert section["status"] in {"ok", "skipped"}, (key, section["note"])
    # The view opens on SmolLM2's strongest induction head, L18H6 (TransformerLens's detector agrees).
    assert report.attention_heads[0] == (18, 6)


@pytest.mark.smollm2
def test_report_is_self_contained(report):
    html = report.html_path.read_text()
    # Nothing is fetched: no external scripts, styles, images or module imports (URLs inside
    # the inlined JavaScript's strings, such as React's error-page links, load nothing).
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert not re.search(r"""(from|import)\s*\(?\s*["'](https?:)?//""", html)
    assert not re.search(r"url\(\s*[\"']?https?:", html)
    assert html.count("data:image/png;base64,") >= 1


@pytest.mark.smollm2
def test_report_dom_after_javascript(report, dom):
    for key in (*DEFAULT_SECTIONS, "attention"):
        assert f'id="section-{key}"' in dom, key
    attention = dom[dom.index('id="section-attention"') :]
    # circuitsvis drew one thumbnail per head (the 9 strongest induction heads) plus the large pattern.
    assert attention.count("<canvas") >= 10
    assert "L18H6" in attention
    assert dom.count('<img class="figure"') >= 1


@pytest.mark.smollm2
def test_report_screenshot_not_blank(report, tmp_path, run_chromium):
    from PIL import Image

    shot = tmp_path / "report.png"
    run_chromium(report.html_path, f"--screenshot={shot}", "--window-size=1200,2000")
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1200)
    # A blank page has zero variance; this one has a dark header, text and a plot.
    assert pixels.std() > 20
    header, body = pixels[:100], pixels[400:]
    assert header.mean() < 100 < body.mean()


PROBE = """<script>
const items = [...document.querySelectorAll('#findings li')];
const bottom = Math.max(...items.map(li => li.getBoundingClientRect().bottom));
const first = document.querySelector('main > section:not(#findings)').getBoundingClientRect().top;
document.body.insertAdjacentHTML('beforeend',
  `<pre id="probe">${items.length} ${bottom} ${window.innerHeight} ${first}</pre>`);
</script>"""


@pytest.mark.smollm2
def test_findings_fill_the_first_screen(report, tmp_path, run_chromium):
    from PIL import Image

    # A copy of the page with a probe that measures the layout at a normal window size.
    page = tmp_path / "report.html"
    page.write_text(report.html_path.read_text().replace("</body>", PROBE + "</body>"))
    dom = run_chromium(page, "--dump-dom", "--window-size=1280,800").stdout
    # The last match is the element the script wrote (the first is the script's own source).
    probe = re.findall(r'id="probe">([^<]+)<', dom)[-1]
    n_items, bottom, height, first_section = (float(x) for x in probe.split())
    assert n_items == len(report.outcomes)
    # The viewport is the window less what headless Chromium keeps for itself (800 -> 713 here).
    assert bottom <= height <= 800, "the findings must be readable without scrolling"
    assert first_section > bottom  # the findings come before the sections
    findings = dom[dom.index('id="findings"') : dom.index("</section>", dom.index('id="findings"'))]
    assert "What this report found" in findings and "L18H6" in findings  # the induction head, by name
    assert all(f'href="#section-{o.section.key}"' in findings for o in report.outcomes)
    # The screenshot at that size is what a reader sees first: header, then the findings block.
    shot = tmp_path / "first_screen.png"
    run_chromium(report.html_path, f"--screenshot={shot}", "--window-size=1280,800")
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=np.float64)
    assert pixels.shape == (800, 1280)
    block = pixels[int(0.2 * 800) : int(bottom), 40:900]
    assert block.std() > 20  # text on the findings block, not an empty band
