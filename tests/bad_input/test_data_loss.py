"""Bad input, class "data loss": nothing icl_lens did not write is ever deleted or overwritten.

Entry points that write a folder: ``Result.save`` (every result type shares it),
``build_report`` / ``icl-lens report --out``, ``icl-lens fv|tv|induction|accuracy --out``.
"""

from __future__ import annotations

import json

import pytest

import icl_lens as il
from icl_lens import cli
from icl_lens.core.results import results_equal
from icl_lens.report import build_report


@pytest.fixture(scope="module")
def result(tiny, word_task):
    """A real result (what evaluate_icl returns on a tiny model)."""
    return il.evaluate_icl(tiny, word_task, shots=(0, 2), n_prompts=3)


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(
    "layout",
    [
        {"notes.txt": b"my notes", "data/raw.csv": b"a,b"},  # a folder of the user's own
        {"result.json": b'{"mine": true}'},  # a result.json icl_lens did not write
        {"tensors.safetensors": b"not ours", "x.txt": b"x"},  # a tensors file icl_lens did not write
    ],
)
def test_save_never_overwrites_a_folder_it_did_not_write(tmp_path, result, layout):
    target = tmp_path / "target"
    for name, data in layout.items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    before = _tree(target)
    if set(layout) & {"result.json", "tensors.safetensors"}:
        with pytest.raises(il.ResultFileError, match="did not write"):
            result.save(target)
    else:
        # Other files are kept: the result's two files are added beside them.
        result.save(target)
        assert results_equal(il.load_result(target), result)
    after = _tree(target)
    assert {k: after[k] for k in before} == before  # every file of the user's, byte for byte


@pytest.mark.parametrize("where", [".", "", "cwd-absolute"])
def test_save_into_the_working_directory_is_refused_and_empties_nothing(tmp_path, monkeypatch, result, where):
    (tmp_path / "precious.txt").write_text("keep me")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    path = str(tmp_path) if where == "cwd-absolute" else where
    with pytest.raises(il.ResultFileError):
        result.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious.txt", "sub"]
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_save_replaces_a_previous_result_and_keeps_files_beside_it(tmp_path, result, tiny, word_task):
    target = tmp_path / "acc"
    result.save(target)
    (target / "unit.json").write_text('{"study": "manifest"}')  # what a study writes beside a result
    other = il.evaluate_icl(tiny, word_task, shots=(0, 1), n_prompts=2)
    other.save(target)
    assert il.load_result(target).to_dataframe()["shots"].tolist() == [0, 1]
    assert (target / "unit.json").read_text() == '{"study": "manifest"}'
    # A folder holding only a previous result is swapped whole: nothing else is left behind.
    only = tmp_path / "only"
    result.save(only)
    other.save(only)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc", "only"]
    assert sorted(p.name for p in only.iterdir()) == ["result.json", "tensors.safetensors"]


@pytest.mark.parametrize("bad", ["file", "parent-is-file", 42])
def test_save_to_an_unusable_path_is_a_result_file_error(tmp_path, result, bad):
    (tmp_path / "file").write_text("x")
    path = {"file": tmp_path / "file", "parent-is-file": tmp_path / "file" / "r"}.get(bad, bad)
    with pytest.raises(il.ResultFileError):
        result.save(path)
    assert (tmp_path / "file").read_text() == "x"


@pytest.mark.parametrize("section_folder", ["accuracy", "induction", "function_vector"])
def test_report_refuses_an_out_folder_whose_section_names_hold_other_files(tmp_path, tiny, word_task, section_folder):
    (tmp_path / section_folder).mkdir()
    (tmp_path / section_folder / "thesis.tex").write_text("years of work")
    task_file = tmp_path / "t.json"
    task_file.write_text(json.dumps([{"input": x, "output": y} for x, y in word_task.pairs]))
    with pytest.raises(il.ResultFileError, match="not a saved icl_lens result"):
        build_report(tiny, tmp_path, task=str(task_file), size="tiny", sections=(section_folder,), attention_view=False)
    assert (tmp_path / section_folder / "thesis.tex").read_text() == "years of work"
    assert not (tmp_path / "report.html").exists()  # refused before anything ran


@pytest.mark.parametrize("command", ["report", "fv", "accuracy"])
def test_cli_out_checked_before_loading(tmp_path, capsys, command):
    out = tmp_path / "out"
    out.write_text("a file, not a folder")
    assert cli.main([command, "--out", str(out)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a file, not a folder" in err[0]
    assert out.read_text() == "a file, not a folder"
