"""The ``icl-lens`` command line and the report builder behind it."""

from __future__ import annotations

import json

import pytest

import icl_lens as il
from icl_lens import cli
from icl_lens.report import SECTIONS, ReportConfig, build_report, section
from icl_lens.report.names import WORLD_SECTIONS
from icl_lens.report.sections import DEFAULT_SECTIONS


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
    assert ReportConfig().sections == DEFAULT_SECTIONS


def test_every_section_size_is_a_valid_config(tiny, smollm2):
    # A size setting that is not a field of the analysis's config must fail here, not be
    # dropped in a user's report.
    for spec in (il.model_spec(tiny), il.model_spec(smollm2)):
        for s in SECTIONS:
            assert set(s.sizes) <= {"tiny", "small"}, s.key
            for size in ("tiny", "small", "paper"):
                cfg = s.config_for(size, spec, seed=3)
                assert type(cfg) is s.config
                if "seed" in cfg.to_dict():
                    assert cfg.seed == 3
            assert s.config_for("paper", spec) == s.config()
    with pytest.raises(il.ConfigError, match="size must be one of"):
        section("accuracy").config_for("huge", il.model_spec(tiny))


def test_section_configs_reach_the_analysis(tiny, word_task, tmp_path):
    cfg = section("accuracy").config_for("tiny", il.model_spec(tiny), seed=3)
    assert cfg == il.IclEvalConfig(shots=(0, 5), n_prompts=8, seed=3)
    task_file = tmp_path / "next_char.json"
    task_file.write_text(json.dumps([{"input": x, "output": y} for x, y in word_task.pairs]))
    report = build_report(
        tiny, tmp_path, task=str(task_file), size="tiny", sections=("accuracy",), attention_view=False
    )
    assert report.status("accuracy") == "ok"
    assert report.outcomes[0].result.config == il.IclEvalConfig(shots=(0, 5), n_prompts=8)


def test_failing_and_skipped_sections_do_not_stop_the_report(tiny, tmp_path):
    # A real task too small for the function vector's 5 demonstrations (the analysis raises),
    # with no label set (kernel regression is skipped) and so no vector to implant (skipped).
    task_file = tmp_path / "four_pairs.json"
    task_file.write_text(json.dumps([{"input": x, "output": y} for x, y in zip("abcd", "bcde")]))
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
    assert [o.status for o in report.outcomes] == ["failed", "failed", "skipped", "skipped"]
    assert report.failed == ["accuracy", "function_vector"]
    html = report.html_path.read_text()
    assert "PromptError" in html and "has no label set" in html
    index = json.loads((report.out / "report.json").read_text())
    assert [s["status"] for s in index["sections"]] == ["failed", "failed", "skipped", "skipped"]
    assert not (report.out / "function_vector").exists()


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


def test_toy_world_report_end_to_end(tmp_path, capsys):
    # The positive controls in the report: the shipped task world (trained with the TVP-loss)
    # through every section that fits its vocabulary, and the shipped regression layer.
    out = tmp_path / "report"
    assert cli.main(["report", "--model", "toy:tasks", "--size", "tiny", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    index = json.loads((out / "report.json").read_text())
    assert index["model"] == "tasks-world-4L4H-tvp1-seed0"
    assert [s["key"] for s in index["sections"]] == list(WORLD_SECTIONS)
    assert {s["status"] for s in index["sections"]} == {"ok"}, index["sections"]
    assert index["config"]["task"] == "parity"  # the default task: the world's first classification task
    findings = {f["key"]: f for f in index["findings"]}
    assert findings["vector_check"]["verdict"] == "found"
    assert "task vector found: recovers 100% [" in findings["vector_check"]["headline"]
    assert findings["gradient_descent"]["verdict"] == "found"
    check = il.load_result(out / "vector_check")
    pooled = check.to_dataframe().set_index("task").loc["all tasks"]
    assert pooled.icl >= 0.9 and pooled.task_vector_recovered_ci_low >= 0.8
    assert 0.9 < pooled.icl_ci_low < pooled.icl and pooled.n_test == 78  # 78/78: Wilson [0.953, 1]
    gd = il.load_result(out / "gradient_descent")
    assert gd.cosine() >= 0.99 and gd.relative_distance() < 0.05
    assert "FOUND" in printed and "matches 1 GD step" in printed
    html = (out / "report.html").read_text()
    assert "Positive control" in html and "icl_score" not in {s["key"] for s in index["sections"]}


def test_toy_world_without_task_vectors_reads_not_found(tmp_path, capsys):
    # The negative control: ICL at 100%, and the report says the task vector is not there, with its interval.
    out = tmp_path / "natural"
    args = ["report", "--model", "toy:tasks_natural", "--task", "colour", "--size", "tiny", "--sections"]
    assert cli.main([*args, "accuracy", "vector_check", "--out", str(out)]) == 0
    index = json.loads((out / "report.json").read_text())
    finding = {f["key"]: f for f in index["findings"]}["vector_check"]
    assert finding["verdict"] == "no effect"
    assert "task vector not found: recovers 18% [10%, 27%] of ICL" in finding["headline"]
    assert "ICL 100% on 78 held-out queries" in finding["headline"]
    assert index["config"]["task"] == "colour"


def test_single_commands_and_sections_on_a_toy_world(tmp_path, capsys):
    assert cli.main(["tv", "--model", "toy:tasks", "--task", "colour", "--size", "tiny", "--out", str(tmp_path)]) == 0
    tv = il.load_result(tmp_path / "task_vector")
    assert tv.origin.task == "colour" and tv.test_accuracy_at_best >= 0.75
    capsys.readouterr()
    assert cli.main(["accuracy", "--model", "toy:tasks", "--shots", "0", "1", "--n-prompts", "8", "--out", ""]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert all(rows[t][-1] == "100%" for t in ("copy", "successor", "parity", "colour", "shape", "size"))
    # world settings: the world's prompt format, no built-in or natural-text prompts it cannot encode
    spec = il.model_spec(il.tiny_model(n_layers=4, seed=0))
    assert section("function_vector").config_for("tiny", spec, world=True).template == "hendel"
    implant = section("implant").config_for("small", spec, world=True)
    assert implant.specificity_tasks == () and implant.n_natural == 0
    assert section("function_vector").config_for("tiny", spec).template == "todd"
    for s in SECTIONS:  # a world setting that is not a config field fails here
        for size in ("tiny", "small", "paper"):
            assert type(s.config_for(size, spec, world=True)) is s.config
