"""Study specs: the TOML form, the Python form, and bad specs failing before any model loads."""

from __future__ import annotations

import json

import pytest

from icl_lens.studies import ModelEntry, Study, StudySpec, StudySpecError
from icl_lens.studies.registry import Analysis, get_analysis, list_analyses, register_analysis
from icl_lens.vectors.function_vectors import FunctionVectorConfig

GOOD = """
name = "check"
output = "runs/check"
tasks = ["antonym", "my_task.json"]
seeds = [0, 1]

[[models]]
name = "tiny-a"
source = "tiny"
seed = 1

[analyses.function_vector]
top_k = 3
n_shots = 2

[analyses.fv_top1]
analysis = "function_vector"
top_k = 1

[analyses.fv_implant]
uses = { function_vector = "function_vector" }
specificity_tasks = []

[cross_task.universal_fv]
margin = 0.2
n_heads = 4

[ray]
group = "task"
"""


def write(tmp_path, text: str, name: str = "spec.toml"):
    (tmp_path / "my_task.json").write_text(json.dumps([{"input": f"w{i}", "output": f"v{i}"} for i in range(12)]))
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_toml_spec_reads_into_the_same_object_as_its_python_form(tmp_path):
    spec = StudySpec.from_file(write(tmp_path, GOOD))
    assert spec.name == "check" and spec.seeds == (0, 1) and spec.ray.group == "task"
    assert spec.output_dir() == tmp_path / "runs" / "check"
    assert [e.label for e in spec.analyses] == ["function_vector", "fv_top1", "fv_implant"]
    assert spec.config_of(spec.entry("fv_top1"), seed=1) == FunctionVectorConfig(top_k=1, seed=1)
    assert spec.universal_fv is not None and (spec.universal_fv.margin, spec.universal_fv.n_heads) == (0.2, 4)
    tasks = spec.load_tasks()
    assert tasks["my_task.json"].name == "my_task" and len(tasks["my_task.json"]) == 12

    same = StudySpec.from_dict(
        {
            "name": "check",
            "output": "runs/check",
            "tasks": ["antonym", "my_task.json"],
            "seeds": [0, 1],
            "models": [{"name": "tiny-a", "source": "tiny", "seed": 1}],
            "analyses": {
                "function_vector": {"top_k": 3, "n_shots": 2},
                "fv_top1": {"analysis": "function_vector", "top_k": 1},
                "fv_implant": {"uses": {"function_vector": "function_vector"}, "specificity_tasks": []},
            },
            "cross_task": {"universal_fv": {"margin": 0.2, "n_heads": 4}},
            "ray": {"group": "task"},
        },
        base_dir=str(tmp_path),
    )
    assert same.models == spec.models and same.analyses == spec.analyses and same.tasks == spec.tasks


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("[analyses.function_vector]", "[analyses.function_vectr]"),
            "analyses.function_vectr: unknown analysis 'function_vectr' (did you mean 'function_vector'?)",
        ),
        (
            ('"antonym"', '"antonyn"'),
            "tasks[0] 'antonyn' is not a built-in task or a .json/.csv file (did you mean 'antonym'?)",
        ),
        (
            ("top_k = 3", "top_kk = 3"),
            "analyses.function_vector: FunctionVectorConfig has no field 'top_kk' (did you mean 'top_k'?)",
        ),
        (("top_k = 3", "top_k = 0"), "analyses.function_vector: top_k must be >= 1, got 0"),
        (('source = "tiny"', 'source = "tinny"'), "models[0] (tiny-a): unknown source 'tinny' (did you mean 'tiny'?)"),
        (("seed = 1\n", "n_layer = 1\n"), "models[0] (tiny-a): unknown option 'n_layer' (did you mean 'n_layers'?)"),
        (('group = "task"', 'group = "node"'), "ray.group must be one of 'model', 'task', 'unit'; got 'node'"),
        (("margin = 0.2", "margn = 0.2"), "cross_task.universal_fv: unknown key 'margn' (did you mean 'margin'?)"),
        (("seeds = [0, 1]", "seeds = [0, 1]\noutputs = 'x'"), "unknown key 'outputs' (did you mean 'output'?)"),
        (
            ('uses = { function_vector = "function_vector" }', 'uses = { function_vector = "fv_top9" }'),
            "no analysis labelled 'fv_top9'",
        ),
    ],
)
def test_a_bad_spec_fails_with_one_line_naming_the_entry(tmp_path, change, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(StudySpecError) as info:
        Study.from_file(path)
    text = str(info.value)
    assert "\n" not in text
    assert text.startswith(str(path)) and message in text


def test_spec_errors_come_before_any_model_loads(tmp_path):
    loads = []

    def loader():
        loads.append(1)
        raise AssertionError("the model must not be loaded while checking a spec")

    spec = {
        "models": [ModelEntry("mine", loader=loader)],
        "tasks": ["antonym"],
        "analyses": {"function_vector": {"n_aie_prompt": 4}},
    }
    with pytest.raises(StudySpecError, match="function_vector: FunctionVectorConfig has no field 'n_aie_prompt'"):
        Study(spec, base_dir=tmp_path)
    with pytest.raises(StudySpecError, match="fv_implant needs a function_vector analysis and the spec has none"):
        Study({**spec, "analyses": {"fv_implant": {}}}, base_dir=tmp_path)
    with pytest.raises(StudySpecError, match="set seeds once at the top"):
        Study({**spec, "seeds": [0, 1], "analyses": {"task_vector": {"seed": 3}}}, base_dir=tmp_path)
    assert loads == []


def test_every_registered_analysis_names_a_config_class():
    names = {a.name: a for a in list_analyses()}
    assert {"accuracy", "function_vector", "task_vector", "fv_implant", "tv_implant", "induction"} <= set(names)
    assert names["induction"].input == "model" and names["fv_implant"].needs == ("function_vector",)
    for a in names.values():
        if a.name != "universal_fv_implant":  # stage 2: its heads come from stage 1
            a.config_cls()  # the defaults are valid, so a spec may give no fields


def test_an_analysis_that_needs_one_device_is_refused_for_a_split_model(tmp_path):
    from icl_lens.studies.registry import runs_split

    fv = get_analysis("function_vector")
    one_device = Analysis("fv_one_device", fv.config_cls, fv.run, split_model={"method": "plain"})
    register_analysis(one_device, replace=True)
    spec = {
        "models": [{"name": "big", "source": "org/big-model", "device_map": "auto", "dtype": "bfloat16"}],
        "tasks": ["antonym"],
        "analyses": {"fv_one_device": {}},
    }
    with pytest.raises(
        StudySpecError,
        match=r"analyses.fv_one_device does not run on a model split over devices \(big\); it does with \{'method': 'plain'\}",
    ):
        Study(spec, base_dir=tmp_path)
    ok = Study({**spec, "analyses": {"fv_one_device": {"method": "plain"}, "induction": {}}}, base_dir=tmp_path)
    assert ok.spec.models[0].split and ok.spec.models[0].options["device_map"] == "auto"
    builtins = ("accuracy", "function_vector", "task_vector", "fv_implant", "tv_implant", "induction")
    assert all(runs_split(get_analysis(name), get_analysis(name).config_cls()) for name in builtins)
