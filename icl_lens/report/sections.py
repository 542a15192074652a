"""What the report runs: one section per analysis, and the arguments each one gets.

A section names a public function of ``icl_lens`` by its name, so the report works with
whatever this version exports: a function that is not there yet gives a section with a
visible note instead of an error. Beyond choosing arguments, nothing here knows about a
particular analysis; results are shown through the :class:`~icl_lens.core.results.Result`
interface (``summary``, ``to_dataframe``, ``to_png``, ``save``).
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from icl_lens.core.results import Config


def spread_layers(spec: Any, n: int) -> tuple[int, ...]:
    """``n`` layers spread evenly from a sixth to two thirds of the depth.

    Task and function vectors work in the middle layers (Hendel et al. 2023; Todd et al.
    2023), so small runs try those instead of every layer.
    """
    lo, hi = spec.n_layers // 6, max(spec.n_layers // 6, (2 * spec.n_layers) // 3)
    if hi - lo + 1 <= n:
        return tuple(range(lo, hi + 1))
    return tuple(sorted({lo + round(i * (hi - lo) / (n - 1)) for i in range(n)}))


# Sizes: "tiny" is for CI (ICL_LENS_FAST=1), "small" finishes in a few minutes on 2 CPU
# cores, "paper" uses each analysis's own defaults (the published settings).
SIZES = ("tiny", "small", "paper")

# A value may be a function of the model's ModelSpec (layer choices depend on the depth).
_OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {
    "accuracy": {
        "tiny": {"shots": (0, 5), "n_prompts": 8},
        "small": {"shots": (0, 1, 5, 10), "n_prompts": 25},
    },
    "induction": {
        "tiny": {"n_sequences": 2, "repeat_lengths": (10, 25), "composition_baseline_samples": 2},
        "small": {"n_sequences": 8},
    },
    "icl_score": {"tiny": {"n_contexts": 2}, "small": {"n_contexts": 8}},
    "function_vector": {
        "tiny": {"n_mean_prompts": 4, "max_candidates": 12, "n_aie_prompts": 2, "n_shots": 5, "batch_size": 12},
        "small": {"n_mean_prompts": 20, "max_candidates": 60, "n_aie_prompts": 8},
    },
    "task_vector": {
        "tiny": {"n_prompts": 4, "n_dev": 4, "n_test": 8, "n_dummy": 1, "layers": lambda s: spread_layers(s, 4)},
        "small": {"n_prompts": 16, "n_dev": 16, "n_test": 32, "layers": lambda s: spread_layers(s, 10)},
    },
    "implant": {
        "tiny": {
            "n_test": 8,
            "n_dev": 4,
            "specificity_tasks": (),
            "n_natural": 0,
            "layers": lambda s: spread_layers(s, 3),
        },
        "small": {
            "n_test": 32,
            "n_dev": 16,
            "n_specificity": 8,
            "n_natural": 3,
            "layers": lambda s: spread_layers(s, 10),
        },
    },
    "kernel_regression": {
        "tiny": {"n_prompts": 8, "n_shots": 4, "n_permutations": 50},
        "small": {"n_prompts": 32},
    },
}


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes:
        key: html id (``section-<key>``) and the folder name of its saved result.
        title: heading shown in the report.
        function: name of the ``icl_lens`` function it calls.
        why: one sentence for a reader who does not know the measurement.
        call: given the function, the run context and the keyword overrides, runs it.
    """

    key: str
    title: str
    function: str
    why: str
    call: Callable[[Callable[..., Any], RunContext, dict[str, Any]], Any]


@dataclasses.dataclass
class RunContext:
    """What sections share while the report runs: the model, the task, earlier results."""

    model: Any
    task: Any
    size: str
    seed: int
    text: str | None
    label_task: Any = None
    results: dict[str, Any] = dataclasses.field(default_factory=dict)


class SectionSkipped(Exception):
    """Raised by a section that cannot run here; the message is shown in the report."""


def overrides_for(
    key: str, size: str, function: Callable[..., Any], seed: int = 0, spec: Any = None
) -> tuple[dict[str, Any], list[str]]:
    """Keyword overrides of section ``key`` at ``size`` (and the seed) that ``function``'s config accepts.

    Values that depend on the model are computed from ``spec`` (its ``ModelSpec``).
    Returns the overrides and the names dropped because the config has no such field
    (the analyses are written alongside the report; an unknown size knob must not break it).
    """
    wanted = dict(_OVERRIDES.get(key, {}).get(size, {})) if size != "paper" else {}
    wanted = {k: v(spec) if callable(v) else v for k, v in wanted.items()}
    if seed != 0:
        wanted["seed"] = seed
    if not wanted:
        return {}, []
    fields = _config_fields(function)
    if fields is None:
        return {}, sorted(wanted)
    kept = {k: v for k, v in wanted.items() if k in fields}
    return kept, sorted(set(wanted) - set(kept))


def _config_class(function: Callable[..., Any]) -> type[Config] | None:
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # annotations naming types this module cannot resolve
        return None
    for arg in typing.get_args(hints.get("config")) or (hints.get("config"),):
        if isinstance(arg, type) and issubclass(arg, Config):
            return arg
    return None


def _config_fields(function: Callable[..., Any]) -> set[str] | None:
    cls = _config_class(function)
    return None if cls is None else {f.name for f in dataclasses.fields(cls)}


def call_with(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an analysis with config fields as keywords, or as ``config=`` if it takes no ``**overrides``."""
    params = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return function(*args, **kwargs)
    direct = {k: v for k, v in kwargs.items() if k in params}
    fields = {k: v for k, v in kwargs.items() if k not in params}
    cls = _config_class(function)
    if fields and cls is not None:
        direct["config"] = cls(**fields)
    return function(*args, **direct)


def _model_task(fn: Callable[..., Any], ctx: RunContext, kw: dict[str, Any]) -> Any:
    return call_with(fn, ctx.model, ctx.task, **kw)


def _model_only(fn: Callable[..., Any], ctx: RunContext, kw: dict[str, Any]) -> Any:
    return call_with(fn, ctx.model, **kw)


def _icl_score(fn: Callable[..., Any], ctx: RunContext, kw: dict[str, Any]) -> Any:
    # ctx.text None: the analysis's own built-in corpus.
    return call_with(fn, ctx.model, ctx.text, **kw)


def _label_task(fn: Callable[..., Any], ctx: RunContext, kw: dict[str, Any]) -> Any:
    # Kernel regression votes among a label set: word-to-word tasks (antonym) have none.
    task = ctx.task if ctx.task.labels else ctx.label_task
    if task is None:
        raise SectionSkipped(f"task {ctx.task.name!r} has no label set; this analysis needs a classification task.")
    return call_with(fn, ctx.model, task, **kw)


def _implant(fn: Callable[..., Any], ctx: RunContext, kw: dict[str, Any]) -> Any:
    vector = ctx.results.get("function_vector") or ctx.results.get("task_vector")
    if vector is None:
        raise SectionSkipped("needs a function vector or a task vector, and neither section produced one.")
    return call_with(fn, ctx.model, ctx.task, vector, **kw)


SECTIONS: tuple[Section, ...] = (
    Section(
        "accuracy",
        "ICL accuracy by number of demonstrations",
        "evaluate_icl",
        "Does the model learn the task from examples in its prompt? First-token top-1 accuracy "
        "as the number of demonstrations grows.",
        _model_task,
    ),
    Section(
        "induction",
        "Induction heads",
        "find_induction_heads",
        "Heads that attend from a repeated token to the token after its earlier occurrence and copy it "
        "(Olsson et al. 2022): the pattern-matching machinery behind ICL.",
        _model_only,
    ),
    Section(
        "icl_score",
        "ICL score on natural text",
        "icl_score",
        "Loss on a late token minus loss on an early one (loss@500 - loss@50, Olsson et al. 2022): "
        "how much the model gains from a long context.",
        _icl_score,
    ),
    Section(
        "function_vector",
        "Function vector",
        "function_vector",
        "The heads whose mean output, patched into shuffled-label prompts, most restores the answer "
        "(average indirect effect), summed into one vector (Todd et al. 2023).",
        _model_task,
    ),
    Section(
        "task_vector",
        "Task vector",
        "task_vector",
        "The residual stream of a dummy query after the demonstrations, patched into a zero-shot "
        "prompt at each layer (Hendel et al. 2023).",
        _model_task,
    ),
    Section(
        "implant",
        "Implanting the vector",
        "evaluate_implant",
        "Does the extracted vector, put into a zero-shot prompt, reproduce the ICL behaviour?",
        _implant,
    ),
    Section(
        "kernel_regression",
        "ICL as kernel regression",
        "kernel_regression",
        "Does attention at the query weigh demonstrations by their similarity to it, like a kernel "
        "regressor (Han et al. 2023)? Run on a classification task (the report's task if it has a label set).",
        _label_task,
    ),
)

SECTION_KEYS: tuple[str, ...] = tuple(s.key for s in SECTIONS)


def read_text(path: str | Path | None) -> str | None:
    """The natural text for the ICL score: the file at ``path``, or ``None`` (icl_lens's own corpus)."""
    return None if path is None else Path(path).read_text(encoding="utf-8")
