"""Studies on the local executor: content-hashed units, resuming, failures, loads, merging."""

from __future__ import annotations

import json

import pytest
import torch

import icl_lens as il
from icl_lens.core.results import results_equal
from icl_lens.studies import ModelEntry, Study
from icl_lens.studies.fingerprint import model_fingerprint
from icl_lens.studies.registry import Analysis, get_analysis, register_analysis
from icl_lens.studies.units import release_models
from icl_lens.vectors.function_vectors import function_vector

FV = {"n_mean_prompts": 4, "max_candidates": 4, "n_aie_prompts": 4, "n_shots": 3, "top_k": 3}
IMPLANT = {"n_test": 6, "n_dev": 4, "specificity_tasks": [], "n_natural": 0}

# Random tiny models answer no ICL prompt: the function vector says so; expected here.
pytestmark = pytest.mark.filterwarnings("ignore:the model answered none")


def tiny_spec(output, **changes) -> dict:
    spec = {
        "name": "tiny",
        "output": str(output),
        "models": [{"name": "tiny-a", "source": "tiny", "seed": 1}, {"name": "tiny-b", "source": "tiny", "seed": 2}],
        "tasks": ["antonym", "uppercase"],
        "analyses": {
            "function_vector": FV,
            "fv_implant": IMPLANT,
            "accuracy": {"shots": [0, 3], "n_prompts": 6},
            "induction": {"n_sequences": 4, "repeat_lengths": [5, 10], "composition_targets": 2},
        },
        "cross_task": {"universal_fv": {"margin": 0.0, "n_heads": 3}},
        "resources": {"num_cpus": 1},
    }
    spec.update(changes)
    return spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    study = Study(tiny_spec(tmp_path_factory.mktemp("study")))
    report = study.run(show_progress=False)
    return study, report


def test_units_are_named_by_weights_task_and_config(tmp_path):
    one = Study(tiny_spec(tmp_path))
    keys = {(u.model, u.task, u.label): u.key for u in one.units()}
    assert len(keys) == 2 * 2 * 3 + 2  # 2 models x 2 tasks x 3 task analyses + 1 induction unit per model
    assert len(set(keys.values())) == len(keys)

    # Same name, other weights: another fingerprint and other units.
    a = ModelEntry("m", loader=lambda: il.tiny_model(seed=1))
    b = ModelEntry("m", loader=lambda: il.tiny_model(seed=3))
    assert model_fingerprint(a) != model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(ModelEntry("other name", source="tiny", options={"seed": 1}))
    renamed = Study(tiny_spec(tmp_path, models=[{"name": "tiny-a", "source": "tiny", "seed": 3}]))
    assert {u.key for u in renamed.units("tiny-a")}.isdisjoint(keys.values())

    # An edited task file changes only its own units; a config field only its analysis's units.
    task_file = tmp_path / "pairs.json"
    task_file.write_text(json.dumps([{"input": f"w{i}", "output": f"W{i}"} for i in range(20)]))
    with_file = {u.key for u in Study(tiny_spec(tmp_path, tasks=["antonym", "pairs.json"]), base_dir=tmp_path).units()}
    task_file.write_text(json.dumps([{"input": f"w{i}", "output": f"X{i}"} for i in range(20)]))
    edited = {u.key for u in Study(tiny_spec(tmp_path, tasks=["antonym", "pairs.json"]), base_dir=tmp_path).units()}
    assert len(with_file - edited) == 2 * 3  # pairs.json's units of both models
    analyses = {**tiny_spec(tmp_path)["analyses"], "accuracy": {"shots": [0, 2], "n_prompts": 6}}
    changed = {(u.model, u.task, u.label): u.key for u in Study(tiny_spec(tmp_path, analyses=analyses)).units()}
    assert {k for k in keys if keys[k] != changed[k]} == {k for k in keys if k[2] == "accuracy"}


def test_a_run_computes_every_unit_once_and_a_rerun_nothing(finished):
    study, report = finished
    c = report.counts()
    assert (c["done"], c["skipped"], c["failed"]) == (14 + 4, 0, 0)  # 14 stage-1 units, 4 universal-FV units
    assert set(report.table().analysis) == {"function_vector", "fv_implant", "accuracy", "induction", "universal_fv"}
    again = study.run(show_progress=False)
    assert again.counts() == {"done": 0, "skipped": 18, "failed": 0}
    assert study.status().complete
    manifest = study.store.manifest(report.outcomes[0].key)
    assert manifest["model"] == "tiny-a" and manifest["config"]["top_k"] == 3 and manifest["torch_threads"] == 1


def test_merged_tables_are_the_units_numbers_with_intervals(finished):
    study, _ = finished
    merged = study.merge()
    (implant,) = merged.results("fv_implant", "tiny-b", "uppercase")
    row = merged.vectors.to_dataframe().set_index(["model", "task"]).loc[("tiny-b", "uppercase")]
    assert row.zs_fv == implant.acc("zero_shot+vector") and row.icl == implant.acc("icl") and row.n_fv == 6
    low, high = il.core.stats.proportion_interval(round(row.icl * 6), 6)
    assert (row.icl_ci_low, row.icl_ci_high) == (low, high)

    acc = merged.accuracy.to_dataframe()
    assert len(acc) == 2 * 2 * 2 and (acc.accuracy >= acc.accuracy_ci_low).all()

    for universal in merged.universal:
        fvs = [merged.results("function_vector", universal.model, t)[0] for t in universal.tasks]
        mean = torch.stack([fv.aie for fv in fvs]).mean(0)  # margin 0: every task counts
        assert torch.allclose(universal.mean_aie, mean)
        order = sorted(((l, h) for l in range(mean.shape[0]) for h in range(mean.shape[1])), key=lambda x: -mean[x])
        assert universal.heads == tuple(order[:3])
        (stage2,) = merged.results("universal_fv", universal.model, "antonym")
        assert universal.acc("antonym", "zs_universal") == stage2.acc("zero_shot+vector")
        assert not universal.to_dataframe().zs_universal.isna().any()
    assert len(merged.induction_vs_fv.to_dataframe()) == 2 * 8  # 2 models x 2 layers x 4 heads
    saved = merged.save(study.output / "merged")
    assert results_equal(il.load_result(saved / "universal_tiny-a_seed0"), merged.universal[0])
    assert "universal_tiny-a_seed0" in (saved / "tables.md").read_text()


def test_a_unit_killed_mid_way_leaves_nothing_finished_and_is_the_only_one_rerun(tmp_path):
    original = get_analysis("function_vector")

    def interrupted(model, task, cfg, needed, show_progress):
        result = function_vector(model, task, cfg, show_progress=False)
        if task.name == "uppercase":
            raise KeyboardInterrupt  # like Ctrl-C or a kill between computing and saving
        return result

    spec = tiny_spec(tmp_path, analyses={"function_vector": FV, "fv_implant": IMPLANT})
    spec.pop("cross_task")
    study = Study(spec)
    register_analysis(Analysis("function_vector", original.config_cls, interrupted), replace=True)
    try:
        with pytest.raises(KeyboardInterrupt):
            study.run(show_progress=False)
    finally:
        register_analysis(original, replace=True)
        release_models()
    status = study.status().to_dataframe().set_index(["model", "task", "analysis"]).state
    assert status[("tiny-a", "antonym", "function_vector")] == "finished"
    assert status[("tiny-a", "uppercase", "function_vector")] == "killed"
    assert status[("tiny-b", "uppercase", "fv_implant")] == "to do"
    rerun = study.run(show_progress=False)
    assert rerun.counts() == {"done": 6, "skipped": 2, "failed": 0}


def test_a_failing_unit_fails_its_dependents_and_nothing_else(tmp_path):
    spec = tiny_spec(tmp_path, analyses={"function_vector": {**FV, "n_shots": 30}, "fv_implant": IMPLANT})
    # next_letter's train part holds 30 pairs: too few for 30 shots and a query
    spec.update(tasks=["antonym", "next_letter"], models=[{"name": "tiny-a", "source": "tiny", "n_ctx": 2048}])
    spec.pop("cross_task")
    report = Study(spec).run(show_progress=False)
    failed = {(o.task, o.analysis): o.error for o in report.failed}
    assert set(failed) == {("next_letter", "function_vector"), ("next_letter", "fv_implant")}
    assert (
        "ConfigError: the train part of task 'next_letter' has 30 pairs" in failed[("next_letter", "function_vector")]
    )
    assert "which did not finish" in failed[("next_letter", "fv_implant")]
    assert (tmp_path / "failed").is_dir() and report.counts()["done"] == 2


def test_each_model_is_loaded_once_and_not_at_all_when_its_units_are_finished(tmp_path):
    loads: list[int] = []

    def loader(seed: int):
        def load():
            loads.append(seed)
            return il.tiny_model(seed=seed)

        return load

    spec = {
        "name": "loads",
        "output": str(tmp_path),
        "models": [ModelEntry("a", loader=loader(1)), ModelEntry("b", loader=loader(2))],
        "tasks": ["antonym", "uppercase"],
        "analyses": {"function_vector": FV, "accuracy": {"shots": [0, 2], "n_prompts": 4}},
    }
    study = Study(spec)
    assert [study.fingerprint(m) for m in ("a", "b")] and loads == [1, 2]  # a loader's model: its weights are hashed
    loads.clear()
    assert study.run(show_progress=False).counts()["done"] == 8
    assert loads == [1, 2]
    loads.clear()
    assert study.run(show_progress=False).counts()["skipped"] == 8
    assert loads == []


def test_the_same_weights_split_over_devices_reuse_finished_units(tmp_path, tiny_hf_dir):
    def spec(**options) -> dict:
        model = {"name": "llama", "source": str(tiny_hf_dir), **options}
        return tiny_spec(tmp_path, models=[model], tasks=["antonym"], analyses={"function_vector": FV}, cross_task={})

    assert Study(spec()).run(show_progress=False).counts()["done"] == 1
    modules = ["model.embed_tokens", "model.rotary_emb", "model.norm", "lm_head", "model.layers.0", "model.layers.1"]
    placed = Study(spec(device_map=dict.fromkeys(modules, "cpu"), max_memory={"cpu": "1GiB"}))
    assert placed.run(show_progress=False).counts() == {"done": 0, "skipped": 1, "failed": 0}
    assert Study(spec(dtype="bfloat16")).units()[0].key != placed.units()[0].key  # other numbers, other unit
