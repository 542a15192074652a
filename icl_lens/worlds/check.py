"""Are task and function vectors there? The package's own pipelines, run over a world's tasks.

:func:`check_vectors` runs, for every task, exactly what a user runs on any model:
:func:`~icl_lens.task_vector` (and :func:`~icl_lens.function_vector`), then
:func:`~icl_lens.evaluate_implant` on the vector's held-out test queries. It pools the
per-query outcomes and says, with intervals, whether each kind of vector was found:

* **found**: the vector's zero-shot accuracy is significantly above plain zero-shot
  (exact McNemar test) *and* the lower end of the 95% interval on the fraction of ICL
  accuracy it recovers (paired bootstrap) is at least ``threshold``;
* **not found**: the upper end of that interval is below ``threshold``;
* **inconclusive** otherwise, with the number of queries;
* **no ICL** when ICL itself is not significantly above zero-shot: there is nothing for
  a vector to recover (an untrained model's vector "recovers" all of its nothing).

On a positive control (the task world) the verdict must be "found"; on the control world
(task learning) "not found". A null on a real model is believable only from a pipeline that
passes both.

:func:`vector_emergence` runs the task-vector half over the checkpoints of a training run:
the phase change of ICL accuracy, and the checkpoint where task vectors start to work.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import get_template
from icl_lens.vectors.function_vectors import function_vector
from icl_lens.vectors.implant import evaluate_implant
from icl_lens.vectors.task_vectors import task_vector
from icl_lens.worlds.check_result import EmergenceResult, VectorCheckResult


@dataclasses.dataclass(frozen=True)
class VectorCheckConfig(Config):
    """Settings of :func:`check_vectors` and :func:`vector_emergence`.

    Attributes:
        template: the prompt format (the worlds are trained on ``"hendel"``).
        function_vectors: also extract and implant function vectors (Todd et al. 2023).
        threshold: the fraction of ICL accuracy a vector must recover, with 95%
            confidence, to be "found" (and stay below to be "not found").
        seed: prompts (passed to every pipeline) and bootstrap resampling.
    """

    template: str = "hendel"
    function_vectors: bool = True
    threshold: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        get_template(self.template)
        if not 0 < self.threshold <= 1:
            raise ConfigError(f"threshold must be in (0, 1], got {self.threshold}")


def _tasks(tasks: Task | str | Sequence[Task | str]) -> list[Task]:
    out = [load_task(t) for t in (tasks if isinstance(tasks, list | tuple) else [tasks])]
    if not out:
        raise ConfigError("check_vectors needs at least one task")
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}")
    return out


def _measure(model: HookedModel, task: Task, others: Sequence[Task], cfg: VectorCheckConfig) -> dict[str, Any]:
    """Task vector (and function vector) of one task, implanted on its held-out test queries."""
    tv = task_vector(model, task, template=cfg.template, seed=cfg.seed, show_progress=False)
    common = dict(specificity_tasks=tuple(others), n_natural=0, seed=cfg.seed, show_progress=False)
    tv_imp = evaluate_implant(model, task, tv, layer="default", layers=(tv.layer,), **common)
    row: dict[str, Any] = dict(
        zero_shot=tv_imp.correct[tv_imp.conditions.index("zero_shot")],
        icl=tv_imp.correct[tv_imp.conditions.index("icl")],
        task_vector=tv_imp.correct[tv_imp.conditions.index("zero_shot+vector")],
        tv_layer=tv.layer,
        tv_layers=tv.test_accuracy,
    )
    if cfg.function_vectors:
        fv = function_vector(model, task, template=cfg.template, seed=cfg.seed, show_progress=False)
        fv_imp = evaluate_implant(model, task, fv, layer="dev", **common)
        if fv_imp.queries != tv_imp.queries:  # both use the task's default split and cfg.seed
            raise RuntimeError("internal error: the two implant evaluations hold different test queries")
        row.update(
            function_vector=fv_imp.correct[fv_imp.conditions.index("zero_shot+vector")],
            fv_layer=fv_imp.layer,
            fv_heads=tuple(fv.heads),
        )
    return row


def check_vectors(
    model: HookedModel,
    tasks: Task | str | Sequence[Task | str],
    config: VectorCheckConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> VectorCheckResult:
    """Extract and implant task (and function) vectors on every task; say whether they were found.

    Args:
        model: any model with a tokenizer (a world's ``run.model``, SmolLM2, ...).
        tasks: the tasks (each one's other tasks fill its specificity matrix).
        config: :class:`VectorCheckConfig`; keyword ``overrides`` replace its fields.
    """
    cfg = VectorCheckConfig.resolve(config, overrides)
    task_list = _tasks(tasks)
    rows = []
    for task in progress(task_list, desc="check_vectors", enabled=show_progress):
        rows.append(_measure(model, task, [t for t in task_list if t.name != task.name], cfg))
    kinds = ("zero_shot", "icl", "task_vector") + (("function_vector",) if cfg.function_vectors else ())
    return VectorCheckResult(
        config=cfg,
        model=model_name(model),
        tasks=tuple(t.name for t in task_list),
        conditions=kinds,
        correct=tuple(torch.stack([r[k] for k in kinds]) for r in rows),
        tv_layer=tuple(int(r["tv_layer"]) for r in rows),
        tv_layer_accuracy=torch.stack([r["tv_layers"] for r in rows]),
        fv_layer=tuple(int(r.get("fv_layer", -1)) for r in rows),
        fv_heads=tuple(r.get("fv_heads", ()) for r in rows),
    )


def vector_emergence(
    run: Any,
    config: VectorCheckConfig | None = None,
    *,
    steps: Sequence[int] | None = None,
    tasks: Sequence[Task] | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> EmergenceResult:
    """ICL accuracy and task-vector recovery at every checkpoint of a world's training run.

    Args:
        run: a :class:`~icl_lens.worlds.TaskToyRun` (anything with ``checkpoint_steps``,
            ``model_at(step, into=...)`` and ``tasks``).
        steps: the checkpoints to measure (default: all of them).
        tasks: the tasks (default: the run's).
    """
    cfg = VectorCheckConfig.resolve(config, overrides)
    cfg = cfg.replace(function_vectors=False)
    chosen = tuple(run.checkpoint_steps if steps is None else steps)
    missing = [s for s in chosen if s not in run.checkpoint_steps]
    if missing or not chosen:
        raise ConfigError(f"no checkpoints at steps {missing or chosen}; saved steps: {run.checkpoint_steps}")
    task_list = list(tasks if tasks is not None else run.tasks)
    checks = []
    model = None
    for step in progress(chosen, desc="checkpoints", enabled=show_progress):
        model = run.model_at(step, into=model)
        checks.append(check_vectors(model, task_list, cfg, show_progress=False))
    return EmergenceResult(
        config=cfg,
        model=checks[-1].model,
        steps=chosen,
        tasks=tuple(t.name for t in task_list),
        correct=torch.stack([torch.cat(c.correct, dim=-1) for c in checks]),
        conditions=checks[-1].conditions,
        n_test=tuple(int(c.shape[-1]) for c in checks[-1].correct),
    )
