"""The analyses a study can name, with their config class and what they take as input.

A study spec names an analysis (``"function_vector"``) and gives fields of its config;
the registry says which :class:`~icl_lens.core.results.Config` class checks those fields
(so a misspelt field fails before any model loads), whether the analysis takes a task or
only the model, and which other analyses of the same model, task and seed it reads
(``fv_implant`` evaluates the unit's function vector).

Every analysis follows the package convention ``analysis(model, input, config=None, *,
show_progress=None, **overrides)``; :func:`register_analysis` adds one of your own.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Callable, Mapping
from typing import Any, Literal

from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.results import Config, Result
from icl_lens.prompting.tasks import Task

InputKind = Literal["task", "model"]
Runner = Callable[[HookedModel, "Task | None", Config, Mapping[str, Result], "bool | None"], Result]


@dataclasses.dataclass(frozen=True)
class Analysis:
    """One analysis a study can run.

    Attributes:
        name: the name a spec uses (``"function_vector"``).
        config_cls: its config class; a spec's fields go through ``config_cls.from_dict``.
        run: ``run(model, task, config, needed, show_progress) -> Result``; ``task`` is
            ``None`` for a model-only analysis, ``needed`` maps each name in ``needs`` to
            that analysis's result for the same model, task and seed.
        input: ``"task"`` (one unit per task) or ``"model"`` (one unit per model).
        needs: analyses whose result this one reads.
        split_model: whether it runs on a model split over several devices
            (``load_model(..., device_map=...)``): ``True``, ``False``, or the config
            values under which it does (``{"weight_scores": False}``); see docs/scaling.md.
        description: one line for ``icl-lens study`` listings.
    """

    name: str
    config_cls: type[Config]
    run: Runner
    input: InputKind = "task"
    needs: tuple[str, ...] = ()
    split_model: bool | Mapping[str, Any] = True
    description: str = ""


_ANALYSES: dict[str, Analysis] = {}


def register_analysis(analysis: Analysis, *, replace: bool = False) -> Analysis:
    """Make ``analysis`` available to study specs under ``analysis.name``."""
    if analysis.name in _ANALYSES and not replace:
        raise ConfigError(f"an analysis named {analysis.name!r} is already registered; pass replace=True")
    if analysis.input not in ("task", "model"):
        raise ConfigError(f"analysis input must be 'task' or 'model', got {analysis.input!r}")
    _ANALYSES[analysis.name] = analysis
    return analysis


def get_analysis(name: str) -> Analysis:
    """The registered analysis ``name``; a :class:`ConfigError` naming the close ones otherwise."""
    _register_builtins()
    if name not in _ANALYSES:
        close = difflib.get_close_matches(name, list(_ANALYSES), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown analysis {name!r}{hint}; known: {', '.join(sorted(_ANALYSES))}")
    return _ANALYSES[name]


def list_analyses() -> list[Analysis]:
    """Every registered analysis, built-ins first."""
    _register_builtins()
    return list(_ANALYSES.values())


def runs_split(analysis: Analysis, config: Config) -> bool:
    """Whether ``analysis`` with ``config`` runs on a model split over several devices."""
    if isinstance(analysis.split_model, bool):
        return analysis.split_model
    return all(getattr(config, k) == v for k, v in analysis.split_model.items())


# ---------------------------------------------------------------------------------------
# built-ins (imported lazily: the registry is read before any analysis module is needed)
# ---------------------------------------------------------------------------------------
_BUILTINS_DONE = False


def _register_builtins() -> None:
    global _BUILTINS_DONE
    if _BUILTINS_DONE:
        return
    _BUILTINS_DONE = True
    from icl_lens.induction.detectors import InductionConfig, find_induction_heads
    from icl_lens.prompting.evaluation import IclEvalConfig, evaluate_icl
    from icl_lens.vectors.function_vectors import FunctionVectorConfig, function_vector
    from icl_lens.vectors.implant import ImplantConfig, evaluate_implant
    from icl_lens.vectors.task_vectors import TaskVectorConfig, task_vector

    def task_analysis(fn: Callable[..., Result]) -> Runner:
        return lambda model, task, cfg, needed, sp: fn(model, task, config=cfg, show_progress=sp)

    def implant_of(vector_name: str) -> Runner:
        def run(model: HookedModel, task: Task | None, cfg: Config, needed: Mapping[str, Result], sp: Any) -> Result:
            return evaluate_implant(model, task, needed[vector_name], cfg, show_progress=sp)  # type: ignore[arg-type]

        return run

    def induction(model: HookedModel, task: Task | None, cfg: Config, needed: Mapping[str, Result], sp: Any) -> Result:
        return find_induction_heads(model, config=cfg, show_progress=sp)  # type: ignore[arg-type]

    for analysis in (
        Analysis("accuracy", IclEvalConfig, task_analysis(evaluate_icl), description="ICL accuracy by number of shots"),
        Analysis(
            "function_vector",
            FunctionVectorConfig,
            task_analysis(function_vector),
            description="function vector: AIE of every head, top heads, the vector (Todd et al.)",
        ),
        Analysis(
            "task_vector",
            TaskVectorConfig,
            task_analysis(task_vector),
            description="task vector at every layer and the layer where it works (Hendel et al.)",
        ),
        Analysis(
            "fv_implant",
            ImplantConfig,
            implant_of("function_vector"),
            needs=("function_vector",),
            description="does the unit's function vector reproduce ICL on held-out queries?",
        ),
        Analysis(
            "tv_implant",
            ImplantConfig,
            implant_of("task_vector"),
            needs=("task_vector",),
            description="does the unit's task vector reproduce ICL on held-out queries?",
        ),
        Analysis(
            "induction",
            InductionConfig,
            induction,
            input="model",
            description="induction, previous-token and copying scores of every head",
        ),
    ):
        _ANALYSES.setdefault(analysis.name, analysis)
    import icl_lens.studies.universal  # noqa: F401  (registers the stage-2 analysis)


__all__ = [
    "Analysis",
    "InputKind",
    "get_analysis",
    "list_analyses",
    "register_analysis",
    "runs_split",
]
