"""Built-in tasks and user task files, including bad ones."""

from __future__ import annotations

import json

import pytest

import icl_lens as il

SMALL_WORLD = {"next_letter", "country_capital", "country_continent"}  # the world has fewer pairs


def test_at_least_twelve_builtin_tasks_with_provenance():
    names = il.list_tasks()
    assert len(names) >= 12
    for required in (
        "antonym",
        "synonym",
        "country_capital",
        "singular_plural",
        "present_past",
        "english_french",
        "uppercase",
        "first_letter",
        "next_letter",
        "next_item",
        "choose_first",
        "choose_last",
    ):
        assert required in names
    assert any(info["labels"] for info in il.task_info()), "need a classification-style task"


@pytest.mark.parametrize("name", il.list_tasks())
def test_builtin_task_loads_and_matches_its_index(name):
    task = il.load_task(name)
    info = {i["name"]: i for i in il.task_info()}[name]
    assert len(task) == info["n_pairs"]
    assert len(set(task.inputs)) == len(task)
    if name not in SMALL_WORLD:
        assert len(task) >= 100, f"{name} has {len(task)} pairs"
    if task.labels:
        assert set(task.outputs) <= set(task.labels)
    assert 0 <= info["n_single_token_smollm2"] <= len(task)


def test_user_json_and_csv_tasks(tmp_path):
    pairs = [
        {"input": "cat", "output": "cats"},
        {"input": "dog", "output": "dogs"},
        {"input": "fox", "output": "foxes"},
    ]
    js = tmp_path / "plural.json"
    js.write_text(json.dumps(pairs))
    task = il.load_task(js)
    assert task.name == "plural" and task.pairs[2] == ("fox", "foxes")
    csv = tmp_path / "caps.csv"
    csv.write_text("input,output\nfrance, Paris\nspain,Madrid\n\n")
    task = il.load_task(str(csv))
    assert task.pairs == (("france", "Paris"), ("spain", "Madrid"))


@pytest.mark.parametrize(
    "content, message",
    [
        ("[]", "empty"),
        ('{"input": "a", "output": "b"}', "JSON list"),
        ('[{"input": "a", "output": "b"}, {"input": "a", "output": "c"}]', "appears twice"),
        ('[{"input": "a", "answer": "b"}, {"input": "c", "answer": "d"}]', "exactly those two keys"),
        ('[{"input": "a", "output": 3}, {"input": "c", "output": "d"}]', "non-string"),
        ('[{"input": "a", "output": " "}, {"input": "c", "output": "d"}]', "empty input or output"),
        ("[{", "not valid JSON"),
    ],
)
def test_bad_json_task_files_get_specific_errors(tmp_path, content, message):
    f = tmp_path / "bad.json"
    f.write_text(content)
    with pytest.raises(il.TaskError, match=message):
        il.load_task(f)


def test_bad_csv_and_unknown_names(tmp_path):
    f = tmp_path / "bad.csv"
    f.write_text("input,output\na,b,c\nd,e,f\n")
    with pytest.raises(il.TaskError, match="row 2 has 3 columns; expected exactly 2"):
        il.load_task(f)
    f.write_text("a,b\nd,e\n")  # no header: the first pair is not silently taken for one
    with pytest.raises(il.TaskError, match="first row must be the header input,output, got 'a,b'"):
        il.load_task(f)
    with pytest.raises(il.TaskError, match="Built-in tasks: .*antonym"):
        il.load_task("antonyms_typo")
    with pytest.raises(il.TaskError, match="does not exist"):
        il.load_task(tmp_path / "missing.json")


def test_split_is_disjoint_complete_and_seeded():
    task = il.load_task("antonym")
    a, b, c = task.split((0.5, 0.25, 0.25), seed=1)
    assert set(a.inputs) | set(b.inputs) | set(c.inputs) == set(task.inputs)
    assert not (set(a.inputs) & set(b.inputs)) and not (set(b.inputs) & set(c.inputs))
    assert abs(len(a) - len(task) / 2) <= 1
    assert task.split((0.5, 0.25, 0.25), seed=1)[0] == a
    assert task.split((0.5, 0.25, 0.25), seed=2)[0] != a
    with pytest.raises(il.TaskError, match="sum to 1"):
        task.split((0.5, 0.4))
