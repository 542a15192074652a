"""The ``icl-lens`` command line and the report builder behind it."""

from __future__ import annotations

import json

import pytest

import icl_lens as il
from icl_lens import cli
from icl_lens.report import SECTION_KEYS, ReportConfig, build_report
from icl_lens.report.sections import call_with, overrides_for


def test_help_names_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in ("report", "tasks", "induction", "fv", "tv", "accuracy"):
        assert f"    {command}" in text
    with pytest.raises(SystemExit):
        cli.main(["report", "--help"])
    text = capsys.readouterr().out
    assert "--size {tiny,small,paper}" in text and "--sections" in text


def test_report_defaults_match_the_readme_command():
    args = cli.build_parser().parse_args(["report", "--model", "smollm2", "--task", "antonym", "--out", "report/"])
    assert (args.model, args.task, args.out, args.size, args.sections) == ("smollm2", "antonym", "report/", None, None)
    args = cli.build_parser().parse_args(["fv", "--task", "english_french", "--size", "paper"])
    assert (args.section, args.task, args.size, args.out) == ("function_vector", "english_french", "paper", "results")


def test_tasks_lists_every_task_with_its_size(capsys):
    assert cli.main(["tasks"]) == 0
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert set(rows) == set(il.list_tasks())
    assert int(rows["antonym"]) == len(il.load_task("antonym"))


def test_fast_mode_picks_tiny_sizes(monkeypatch):
    args = cli.build_parser().parse_args(["report"])
    monkeypatch.setenv("ICL_LENS_FAST", "1")
    assert cli._size(args) == "tiny"
    monkeypatch.setenv("ICL_LENS_FAST", "0")
    assert cli._size(args) == "small"


def test_report_config_is_validated():
    with pytest.raises(il.ConfigError, match="size"):
        ReportConfig(size="huge")
    with pytest.raises(il.ConfigError, match="unknown report sections"):
        ReportConfig(sections=("accuracy", "everything"))
    assert ReportConfig().sections == SECTION_KEYS


def test_overrides_reach_a_config_only_function(tiny, word_task):
    # evaluate_icl takes config= and no **overrides: call_with builds the config from the fields.
    kwargs, dropped = overrides_for("accuracy", "tiny", il.evaluate_icl, seed=3)
    assert kwargs == {"shots": (0, 5), "n_prompts": 8, "seed": 3} and dropped == []
    assert overrides_for("accuracy", "paper", il.evaluate_icl) == ({}, [])
    result = call_with(il.evaluate_icl, tiny, word_task, show_progress=False, **kwargs)
    assert result.config.shots == (0, 5) and result.config.n_prompts == 8 and result.config.seed == 3


def test_missing_and_failing_sections_do_not_stop_the_report(tiny, word_task, tmp_path, monkeypatch):
    def broken_analysis(model, task, config=None):
        raise il.ConfigError("this analysis is broken on purpose")

    monkeypatch.setattr(il, "kernel_regression", broken_analysis, raising=False)
    monkeypatch.delattr(il, "function_vector", raising=False)
    monkeypatch.delattr(il, "task_vector", raising=False)
    # Exported but without a vector to implant: skipped before it is called.
    monkeypatch.setattr(il, "evaluate_implant", broken_analysis, raising=False)
    task_file = tmp_path / "next_char.json"
    task_file.write_text(json.dumps([{"input": x, "output": y} for x, y in word_task.pairs]))
    report = build_report(
        tiny,
        tmp_path / "out",
        task=str(task_file),
        label_task=str(task_file),
        size="tiny",
        sections=("accuracy", "function_vector", "implant", "kernel_regression"),
        attention_view=False,
        show_progress=False,
    )
    assert [o.status for o in report.outcomes] == ["ok", "pending", "skipped", "failed"]
    assert report.failed == ["kernel_regression"]
    html = report.html_path.read_text()
    assert "this analysis is broken on purpose" in html
    assert "il.function_vector is not part of this version" in html
    index = json.loads((report.out / "report.json").read_text())
    assert [s["status"] for s in index["sections"]] == ["ok", "pending", "skipped", "failed"]
    acc = il.load_result(report.out / "accuracy")
    assert acc.config.n_prompts == 8 and acc.config.shots == (0, 5)


@pytest.mark.smollm2
def test_report_command_end_to_end(tmp_path, capsys):
    out = tmp_path / "report"
    code = cli.main(["report", "--size", "tiny", "--sections", "accuracy", "--no-attention-view", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "report.html" in printed
    index = json.loads((out / "report.json").read_text())
    assert index["model"] == "SmolLM2-135M-Instruct"
    assert [s["status"] for s in index["sections"]] == ["ok"]
    acc = il.load_result(out / "accuracy")
    # 8 antonym queries: SmolLM2 gets none zero-shot and some with 5 demonstrations.
    table = acc.to_dataframe().set_index("shots")["accuracy"]
    assert table[0] < table[5]
    assert (out / "report.html").stat().st_size > 10_000


@pytest.mark.smollm2
def test_single_analysis_command(tmp_path, capsys):
    code = cli.main(["induction", "--size", "tiny", "--out", str(tmp_path), "--rows", "3"])
    assert code == 0
    printed = capsys.readouterr().out
    heads = il.load_result(tmp_path / "induction")
    assert heads.top_heads(1) == [(18, 6)]  # SmolLM2's strongest induction head
    assert "L18H6" in printed
    assert (tmp_path / "figures" / "induction.png").is_file()
