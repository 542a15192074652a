"""A study on a real local Ray instance: equal to the local executor bit for bit, resumes
after a worker is killed mid-unit, and recomputes only what a config change touches."""

from __future__ import annotations

import os
import signal

import pytest
import ray

from icl_lens.studies import Study, StudyRunReport
from icl_lens.studies.registry import Analysis, get_analysis, register_analysis
from icl_lens.vectors.function_vectors import function_vector

# Random tiny models answer no ICL prompt: the function vector says so; expected here.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:the model answered none")]

TASKS = ["antonym", "uppercase", "present_past"]


def spec(output, tv_test: int = 4) -> dict:
    return {
        "name": "ray-check",
        "output": str(output),
        "models": [
            {"name": "tiny-a", "source": "tiny", "seed": 1},
            {"name": "tiny-b", "source": "tiny", "seed": 2, "n_layers": 3},
        ],
        "tasks": TASKS,
        "analyses": {
            "function_vector": {"n_mean_prompts": 4, "max_candidates": 4, "n_aie_prompts": 4, "n_shots": 3, "top_k": 3},
            "task_vector": {"n_prompts": 4, "n_dev": 4, "n_test": tv_test, "n_shots": 3},
        },
        # one torch thread per unit in every process, so float reductions are the same everywhere
        "resources": {"num_cpus": 1},
    }


@pytest.fixture(scope="module")
def local_instance():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def counts(report: StudyRunReport) -> tuple[int, int, int]:
    c = report.counts()
    return c["done"], c["skipped"], c["failed"]


def test_ray_study_matches_local_resumes_after_a_kill_and_recomputes_only_changed_units(tmp_path, local_instance):
    local = Study(spec(tmp_path / "local"))
    assert counts(local.run(show_progress=False)) == (12, 0, 0)

    # A function vector that kills its own worker process once, after computing and before
    # saving: the worker dies mid-unit, as it would when a node is lost or memory runs out.
    flag = tmp_path / "kill-once"
    flag.touch()
    original = get_analysis("function_vector")

    def killed_once(model, task, cfg, needed, show_progress):
        result = function_vector(model, task, cfg, show_progress=False)
        if task.name == "uppercase" and model.cfg.n_layers == 3 and flag.exists():
            flag.unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    register_analysis(Analysis("function_vector", original.config_cls, killed_once), replace=True)
    try:
        remote = Study(spec(tmp_path / "ray"))
        first = remote.run("ray", group="unit", max_retries=0, show_progress=False)
    finally:
        register_analysis(original, replace=True)
    assert counts(first) == (11, 0, 1)
    (killed,) = first.failed
    assert (killed.analysis, killed.model, killed.task) == ("function_vector", "tiny-b", "uppercase")
    assert "worker died" in killed.error
    status = remote.status()
    assert status.counts() == {"finished": 11, "failed": 0, "killed": 1, "to do": 0}
    assert not remote.store.is_done(killed.key)

    # Re-run (now one Ray task per model, reusing its load): only the killed unit is computed.
    second = remote.run("ray", group="model", show_progress=False)
    assert counts(second) == (1, 11, 0)
    assert [o.key for o in second.computed] == [killed.key]
    assert remote.status().counts()["finished"] == 12

    merged_ray, merged_local = remote.merge(), local.merge()
    assert len(merged_ray.units) == 12
    assert merged_ray.equals(merged_local)

    # One config field of the task vector changes: its 6 units are recomputed, nothing else.
    changed = Study(spec(tmp_path / "ray", tv_test=3))
    third = changed.run("ray", group="task", show_progress=False)
    assert counts(third) == (6, 6, 0)
    assert {o.analysis for o in third.computed} == {"task_vector"}
    assert {o.analysis for o in third.outcomes if o.status == "skipped"} == {"function_vector"}
