"""The report's first screen: each section's finding, claimed only where the intervals support it."""

from __future__ import annotations

import pytest

import icl_lens as il
from icl_lens.report import build_report
from icl_lens.report.findings import _apart, finding
from icl_lens.report.html import findings_html


def test_apart_uses_non_overlapping_wilson_intervals():
    assert _apart(0, 25, 23, 25)  # 0% vs 92%: a finding
    assert not _apart(5, 25, 8, 25)  # 20% vs 32% on 25 queries: within the noise
    assert not _apart(8, 25, 5, 25)  # and never the other way round


def test_a_random_model_finds_nothing_and_says_why(tiny, word_task):
    acc = il.evaluate_icl(tiny, word_task, shots=(0, 2), n_prompts=6)
    f = finding("accuracy", "ICL accuracy", acc)
    assert f.verdict == "no effect" and "beyond the 95% intervals" in f.why
    assert f.headline.endswith("on next_char (6 queries)")
    scan = il.find_induction_heads(tiny, n_sequences=2, repeat_lengths=(8,), weight_scores=False)
    f = finding("induction", "Induction heads", scan)
    assert f.verdict == "no effect" and "no head scores above 0.3" in f.why


def test_an_unknown_section_falls_back_to_its_summary(tiny, word_task):
    acc = il.evaluate_icl(tiny, word_task, shots=(0, 1), n_prompts=2)
    f = finding("my_section", "Mine", acc)
    assert f.verdict == "reported" and f.headline == acc.summary().split(": ", 1)[1].split(";")[0]


@pytest.mark.parametrize("status", ["failed", "skipped"])
def test_sections_without_a_result_still_have_their_line(tiny, word_task, tmp_path, status):
    task = tmp_path / "t.json"
    pairs = word_task.pairs[:3] if status == "failed" else word_task.pairs
    task.write_text("[" + ",".join(f'{{"input": "{x}", "output": "{y}"}}' for x, y in pairs) + "]")
    report = build_report(
        tiny,
        tmp_path / "out",
        task=str(task),
        size="tiny",
        sections=("kernel_regression",) if status == "skipped" else ("accuracy",),
        attention_view=False,
        label_task=str(task),
    )
    html = report.html_path.read_text()
    block = html[html.index('id="findings"') : html.index("</section>", html.index('id="findings"'))]
    assert f'data-verdict="{status}"' in block
    assert html.index('id="findings"') < html.index('id="section-')
    assert findings_html([], report.outcomes).count("<li") == 1
