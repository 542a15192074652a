"""Bad input, class "result files": every broken saved result is a ResultFileError naming the file.

Entry points that read a saved result: ``il.load_result``, ``<ResultType>.load``, and
``il.merge_results`` through them. Each case is tried on all three readers.
"""

from __future__ import annotations

import json
import pickle

import pytest
import torch

import icl_lens as il


@pytest.fixture(scope="module")
def saved(tiny, word_task, tmp_path_factory):
    """Two real results of different types, saved once."""
    root = tmp_path_factory.mktemp("results")
    il.evaluate_icl(tiny, word_task, shots=(0, 2), n_prompts=3).save(root / "acc")
    il.find_induction_heads(tiny, n_sequences=2, repeat_lengths=(5,), weight_scores=False).save(root / "ind")
    return root


READERS = {
    "load_result": il.load_result,
    "Type.load": lambda p: il.IclAccuracyResult.load(p),
    "Result.load": lambda p: il.Result.load(p),
}


def _copy(saved, tmp_path, name="acc"):
    import shutil

    shutil.copytree(saved / name, tmp_path / "r")
    return tmp_path / "r"


def _edit_json(folder, change):
    doc = json.loads((folder / "result.json").read_text())
    change(doc)
    (folder / "result.json").write_text(json.dumps(doc))


def _truncate(file, keep=0.5):
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * keep)])


CASES = {
    "truncated json": (lambda f: _truncate(f / "result.json"), "not valid JSON"),
    "json is not text": (lambda f: (f / "result.json").write_bytes(b"\xff\xfe\x00garbage"), "result.json"),
    "json of another program": (lambda f: (f / "result.json").write_text('{"hello": 1}'), "not an icl_lens result"),
    "missing type key": (lambda f: _edit_json(f, lambda d: d.pop("type")), "'type'"),
    "missing fields key": (lambda f: _edit_json(f, lambda d: d.pop("fields")), "'fields'"),
    "missing field": (lambda f: _edit_json(f, lambda d: d["fields"].pop("shots")), "lacks shots"),
    "unknown field": (lambda f: _edit_json(f, lambda d: d["fields"].update(extra=1)), "unknown extra"),
    "unknown type": (lambda f: _edit_json(f, lambda d: d.update(type="NoSuchResult")), "NoSuchResult"),
    "wrong field type": (
        lambda f: _edit_json(f, lambda d: d["fields"].update(model=["not", "a", "str"])),
        "model",
    ),
    "truncated safetensors": (lambda f: _truncate(f / "tensors.safetensors"), "tensors.safetensors"),
    "pickle renamed .safetensors": (
        lambda f: (f / "tensors.safetensors").write_bytes(pickle.dumps({"accuracy": torch.zeros(2)})),
        "tensors.safetensors",
    ),
    "missing tensors file": (lambda f: (f / "tensors.safetensors").unlink(), "lacks tensors.safetensors"),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("case", list(CASES))
def test_broken_result_folder_is_a_result_file_error_naming_the_file(saved, tmp_path, reader, case):
    folder = _copy(saved, tmp_path)
    breaks, expected = CASES[case]
    breaks(folder)
    with pytest.raises(il.ResultFileError) as info:
        READERS[reader](folder)
    message = str(info.value)
    assert str(folder) in message, message
    assert expected in message, message


def _without_checksum(folder):
    _edit_json(folder, lambda d: d.pop("tensors_sha256"))


@pytest.mark.parametrize("checksum", [True, False])
@pytest.mark.parametrize("reader", list(READERS))
def test_tensors_from_another_result_are_refused(saved, tmp_path, reader, checksum):
    folder = _copy(saved, tmp_path)
    (folder / "tensors.safetensors").write_bytes((saved / "ind" / "tensors.safetensors").read_bytes())
    if not checksum:  # a file saved before checksums: the tensor names give it away
        _without_checksum(folder)
    with pytest.raises(il.ResultFileError, match="another result"):
        READERS[reader](folder)


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("shape", [(7,), (1, 2, 3), (5, 5)])
def test_a_tensor_of_the_wrong_shape_is_refused(saved, tmp_path, reader, shape):
    from safetensors.torch import load_file, save_file

    folder = _copy(saved, tmp_path)
    tensors = load_file(str(folder / "tensors.safetensors"))
    tensors["accuracy"] = torch.zeros(shape)
    save_file(tensors, str(folder / "tensors.safetensors"))
    _without_checksum(folder)
    with pytest.raises(il.ResultFileError, match="accuracy"):
        READERS[reader](folder)


@pytest.mark.parametrize("path", ["missing", "", 3.5])
def test_a_missing_or_malformed_path_is_a_result_file_error(tmp_path, path):
    target = tmp_path / path if path == "missing" else path
    for read in READERS.values():
        with pytest.raises(il.ResultFileError):
            read(target)


def test_loading_a_result_of_another_type_names_both(saved):
    with pytest.raises(il.ResultFileError, match="InductionHeadsResult, not a IclAccuracyResult"):
        il.IclAccuracyResult.load(saved / "ind")
    assert type(il.load_result(saved / "ind")).__name__ == "InductionHeadsResult"
