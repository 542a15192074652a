"""Bad input, class "task files": headers, byte-order marks, encodings, answers the tokenizer cannot encode.

Entry points that take a task file or task text: ``il.load_task``, every analysis that takes
a task (``build_prompts``, ``evaluate_icl``, ``function_vector``, ``task_vector``...: they all
call ``load_task``), and ``icl-lens ... --task FILE``.
"""

from __future__ import annotations

import json

import pytest

import icl_lens as il
from icl_lens import cli

PAIRS = [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h"), ("i", "j"), ("k", "l"), ("m", "n"), ("o", "p")]


def _csv(rows):
    return "\n".join(",".join(r) for r in rows) + "\n"


def _entry_points(model):
    """Every way a task path reaches icl_lens (each must raise the same TaskError)."""
    return {
        "load_task": lambda p: il.load_task(p),
        "build_prompts": lambda p: il.build_prompts(model, p, n_shots=2, n_prompts=2),
        "evaluate_icl": lambda p: il.evaluate_icl(model, p, shots=(0, 1), n_prompts=2),
        "task_vector": lambda p: il.task_vector(model, p, n_prompts=2),
    }


@pytest.mark.parametrize(
    "header",
    [("x", "y"), ("input", "answer"), ("question", "output")],
)
def test_a_csv_header_other_than_input_output_is_refused_not_read_as_a_pair(tmp_path, tiny, header):
    path = tmp_path / "t.csv"
    path.write_text(_csv([header, *PAIRS]))
    for name, call in _entry_points(tiny).items():
        with pytest.raises(il.TaskError, match="header input,output") as info:
            call(path)
        assert "t.csv" in str(info.value), name


@pytest.mark.parametrize("rows", [PAIRS, [("input;output",), *PAIRS], [("Input", "Output", "Notes"), *PAIRS]])
def test_a_csv_without_the_header_is_refused(tmp_path, rows):
    path = tmp_path / "t.csv"
    path.write_text(_csv(rows))
    with pytest.raises(il.TaskError, match="first row must be the header"):
        il.load_task(path)


def test_header_case_and_spaces_are_tolerated(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(_csv([("Input ", " OUTPUT"), *PAIRS]))
    assert il.load_task(path).pairs == tuple(PAIRS)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_a_utf8_byte_order_mark_is_dropped(tmp_path, tiny, suffix, newline):
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        text = newline.join(",".join(r) for r in [("input", "output"), *PAIRS]) + newline
    else:
        text = json.dumps([{"input": x, "output": y} for x, y in PAIRS])
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))  # what Excel writes
    task = il.load_task(path)
    assert task.pairs == tuple(PAIRS)
    assert il.build_prompts(tiny, path, n_shots=2, n_prompts=2).queries[0] in dict(PAIRS)


@pytest.mark.parametrize(
    "encoding, text",
    [
        ("latin-1", "input,output\ncafé,bar\nthé,tea\n"),
        ("utf-16", "input,output\na,b\nc,d\n"),
        ("cp1252", "input,output\n“q”,x\ny,z\n"),
    ],
)
def test_a_file_that_is_not_utf8_names_the_file(tmp_path, tiny, encoding, text):
    for suffix in (".csv", ".json"):
        path = tmp_path / f"mine{suffix}"
        path.write_bytes(text.encode(encoding))
        for name, call in _entry_points(tiny).items():
            with pytest.raises(il.TaskError, match="is not UTF-8") as info:
                call(path)
            assert f"mine{suffix}" in str(info.value), name


@pytest.mark.parametrize(
    "outputs",
    [("é", "è", "ê", "ë"), ("a\u200bb", "c\u200bd", "e\u200bf", "g\u200bh"), ("ö", "ü", "ä", "ß")],
)
def test_answers_the_tokenizer_cannot_encode_are_refused(tiny, outputs):
    # The character tokenizer has no accents or zero-width spaces: every such answer
    # would become <unk>, so different answers would share one answer token.
    task = il.Task(name="accents", pairs=tuple((f"w{i}", y) for i, y in enumerate(outputs * 3)))
    calls = {
        "build_prompts": lambda: il.build_prompts(tiny, task, n_shots=2, n_prompts=3),
        "evaluate_icl": lambda: il.evaluate_icl(tiny, task, shots=(0, 2), n_prompts=3),
        "task_vector": lambda: il.task_vector(tiny, task, n_prompts=2, n_dev=2, n_test=2, n_shots=2),
    }
    for name, call in calls.items():
        with pytest.raises(il.PromptError, match="cannot encode") as info:
            call()
        assert "<unk>" in str(info.value), name


@pytest.mark.parametrize(
    "content",
    ['{"input": "a", "output": "b"}', "[1, 2, 3]", '[{"input": "a"}]'],
)
def test_malformed_json_tasks_say_which_item(tmp_path, content):
    path = tmp_path / "t.json"
    path.write_text(content)
    with pytest.raises(il.TaskError, match="t.json"):
        il.load_task(path)


@pytest.mark.parametrize("bad", [42, None, ["antonym"]])
def test_a_task_that_is_not_a_name_or_path_is_a_task_error(bad):
    with pytest.raises(il.TaskError, match="task must be"):
        il.load_task(bad)


@pytest.mark.parametrize("content", ["x,y\na,b\nc,d\n", b"input,output\ncaf\xe9,bar\n", "input,output\na,b,c\n"])
def test_cli_reports_a_bad_task_file_in_one_line_before_loading(tmp_path, capsys, content):
    path = tmp_path / "mine.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    assert cli.main(["fv", "--task", str(path), "--out", str(tmp_path / "out")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mine.csv" in err[0] and "Traceback" not in err[0]
