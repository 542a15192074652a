"""What the report runs: a plain table of sections, one analysis each, with its sizes.

Every analysis has one signature, ``analysis(model, *inputs, config=None, *,
show_progress=None)``, so a section is data: the function, its config class, which inputs
it takes from the run (the task, a classification task, the natural text, an earlier
vector) and the config fields it sets at each size. Nothing is discovered by name or by
signature: a size setting that is not a field of the config fails in the tests
(``tests/report/test_sections.py``), never silently in a user's report.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel, ModelSpec
from icl_lens.core.options import check_choice
from icl_lens.core.results import Config
from icl_lens.hypotheses.formats import FormatConfig, format_sensitivity
from icl_lens.hypotheses.kernel import KernelRegressionConfig, kernel_regression
from icl_lens.hypotheses.selection import SelectionConfig, demonstration_selection
from icl_lens.induction.detectors import InductionConfig, find_induction_heads
from icl_lens.induction.icl_scoring import IclScoreConfig, icl_score
from icl_lens.induction.token_losses import InductionTokenConfig, induction_token_losses
from icl_lens.prompting.evaluation import IclEvalConfig, evaluate_icl
from icl_lens.prompting.tasks import Task
from icl_lens.report.names import DEFAULT_SECTIONS as DEFAULT_SECTIONS, SECTION_KEYS as SECTION_KEYS, SIZES as SIZES
from icl_lens.vectors.function_vectors import FunctionVectorConfig, function_vector
from icl_lens.vectors.implant import ImplantConfig, evaluate_implant
from icl_lens.vectors.task_vectors import TaskVectorConfig, task_vector
from icl_lens.worlds.check import VectorCheckConfig, check_vectors
from icl_lens.worlds.gradient_descent import GradientDescentConfig, compare_to_gradient_descent
from icl_lens.worlds.task_run import TEMPLATE as WORLD_TEMPLATE

Size = Literal["tiny", "small", "paper"]
"""``tiny``: seconds (CI, ``ICL_LENS_FAST=1``); ``small``: minutes on 2 CPU cores; ``paper``:
each analysis's own defaults (the published settings)."""


Inputs = Literal["task", "label_task", "text", "none", "vector", "world_tasks", "regression_run"]
"""What a section passes after the model: the report's task, a task with a label set, the
natural text for the ICL score, nothing, the task and the vector an earlier section made,
every task of the toy world the report runs on, or the shipped in-context linear-regression
run (a section with ``takes_model=False`` passes it instead of the model)."""

Setting = Any | Callable[[ModelSpec], Any]
"""A config value, or a function of the model's sizes (layer choices depend on the depth)."""


def spread_layers(spec: ModelSpec, n: int) -> tuple[int, ...]:
    """``n`` layers spread evenly from a sixth to two thirds of the depth.

    Task and function vectors work in the middle layers (Hendel et al. 2023; Todd et al.
    2023), so small runs try those instead of every layer.
    """
    lo, hi = spec.n_layers // 6, max(spec.n_layers // 6, (2 * spec.n_layers) // 3)
    if hi - lo + 1 <= n:
        return tuple(range(lo, hi + 1))
    return tuple(sorted({lo + round(i * (hi - lo) / (n - 1)) for i in range(n)}))


@dataclasses.dataclass(frozen=True)
class Section:
    """One part of the report.

    Attributes:
        key: html id (``section-<key>``) and the folder name of its saved result.
        title: heading shown in the report.
        why: one sentence for a reader who does not know the measurement.
        function: the analysis it runs.
        config: the analysis's config class.
        inputs: what the analysis takes after the model (see :data:`Inputs`).
        sizes: config fields set at each size (``paper``: none, the analysis's defaults).
        sort_by: the table column the report sorts by, largest first (``None``: as is).
        default: part of the report unless sections are chosen explicitly.
        world: config fields set when the model is a toy world's (its prompt format, no
            natural-text or built-in specificity prompts: their words are not in its vocabulary).
        takes_model: ``False`` for an analysis of its own run, not of the report's model.
    """

    key: str
    title: str
    why: str
    function: Callable[..., Any]
    config: type[Config]
    inputs: Inputs
    sizes: Mapping[str, Mapping[str, Setting]] = dataclasses.field(default_factory=dict)
    sort_by: str | None = None
    default: bool = True
    world: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    takes_model: bool = True

    def config_for(self, size: str, spec: ModelSpec, seed: int = 0, *, world: bool = False) -> Config:
        """The config this section runs with at ``size`` on a model of ``spec``'s sizes
        (``world``: the model is a toy world's)."""
        check_choice(size, Size, "size")
        settings = {} if size == "paper" else dict(self.sizes.get(size, {}))
        if world:
            settings.update(self.world)
        values = {k: (v(spec) if callable(v) else v) for k, v in settings.items()}
        if seed != 0 and "seed" in {f.name for f in dataclasses.fields(self.config)}:
            values["seed"] = seed
        return self.config().replace(**values)


@dataclasses.dataclass
class RunContext:
    """What sections share while the report runs: the model, the tasks, earlier results."""

    model: HookedModel
    task: Task
    text: str | None = None
    label_task: Task | None = None
    results: dict[str, Any] = dataclasses.field(default_factory=dict)
    world_tasks: tuple[Task, ...] = ()
    """Every task of the toy world the model was trained on (empty for any other model)."""


class SectionSkipped(Exception):
    """Raised when a section cannot run here; the message is shown in the report."""


def inputs_for(section: Section, ctx: RunContext) -> tuple[Any, ...]:
    """The positional inputs ``section``'s analysis takes after the model."""
    if section.inputs == "none":
        return ()
    if section.inputs == "task":
        return (ctx.task,)
    if section.inputs == "text":
        if ctx.world_tasks:
            raise SectionSkipped("natural text is not in a toy world's vocabulary.")
        return (ctx.text,)  # None: the analysis's own built-in corpus
    if section.inputs == "world_tasks":
        if not ctx.world_tasks:
            raise SectionSkipped("checks a toy world's tasks: run the report on one (--model toy:tasks).")
        return (ctx.world_tasks,)
    if section.inputs == "regression_run":
        from icl_lens.worlds.registry import load_world

        return (load_world("linear_regression"),)
    if section.inputs == "label_task":
        # Kernel regression votes among a label set: word-to-word tasks (antonym) have none.
        task = ctx.task if ctx.task.labels else ctx.label_task
        if task is None or not task.labels:
            raise SectionSkipped(f"task {ctx.task.name!r} has no label set; this analysis needs a classification task.")
        return (task,)
    vector = ctx.results.get("function_vector") or ctx.results.get("task_vector")
    if vector is None:
        raise SectionSkipped("needs a function vector or a task vector, and neither section produced one.")
    return (ctx.task, vector)


def run(section: Section, ctx: RunContext, config: Config, show_progress: bool | None) -> Any:
    """Run one section's analysis with ``config``."""
    inputs = inputs_for(section, ctx)
    if not section.takes_model:
        return section.function(*inputs, config=config, show_progress=show_progress)
    return section.function(ctx.model, *inputs, config=config, show_progress=show_progress)


SECTIONS: tuple[Section, ...] = (
    Section(
        "accuracy",
        "ICL accuracy by number of demonstrations",
        "Does the model learn the task from examples in its prompt? First-token top-1 accuracy "
        "as the number of demonstrations grows.",
        evaluate_icl,
        IclEvalConfig,
        "task",
        {"tiny": {"shots": (0, 5), "n_prompts": 8}, "small": {"shots": (0, 1, 5, 10), "n_prompts": 25}},
    ),
    Section(
        "induction",
        "Induction heads",
        "Heads that attend from a repeated token to the token after its earlier occurrence and copy it "
        "(Olsson et al. 2022): the pattern-matching machinery behind ICL.",
        find_induction_heads,
        InductionConfig,
        "none",
        {
            "tiny": {"n_sequences": 2, "repeat_lengths": (10, 25), "composition_baseline_samples": 2},
            "small": {"n_sequences": 8},
        },
        sort_by="induction",
    ),
    Section(
        "icl_score",
        "ICL score on natural text",
        "Loss on a late token minus loss on an early one (loss@500 - loss@50, Olsson et al. 2022): "
        "how much the model gains from a long context.",
        icl_score,
        IclScoreConfig,
        "text",
        {"tiny": {"n_contexts": 2}, "small": {"n_contexts": 8}},
    ),
    Section(
        "function_vector",
        "Function vector",
        "The heads whose mean output, patched into shuffled-label prompts, most restores the answer "
        "(average indirect effect), summed into one vector (Todd et al. 2023).",
        function_vector,
        FunctionVectorConfig,
        "task",
        {
            "tiny": {"n_mean_prompts": 4, "max_candidates": 12, "n_aie_prompts": 2, "n_shots": 5, "batch_size": 12},
            "small": {"n_mean_prompts": 20, "max_candidates": 60, "n_aie_prompts": 8},
        },
        sort_by="aie",
        world={"template": WORLD_TEMPLATE},
    ),
    Section(
        "task_vector",
        "Task vector",
        "The residual stream of a dummy query after the demonstrations, patched into a zero-shot "
        "prompt at each layer (Hendel et al. 2023).",
        task_vector,
        TaskVectorConfig,
        "task",
        {
            "tiny": {"n_prompts": 4, "n_dev": 4, "n_test": 8, "n_dummy": 1, "layers": lambda s: spread_layers(s, 4)},
            "small": {"n_prompts": 16, "n_dev": 16, "n_test": 32, "layers": lambda s: spread_layers(s, 10)},
        },
    ),
    Section(
        "implant",
        "Implanting the vector",
        "Does the extracted vector, put into a zero-shot prompt, reproduce the ICL behaviour?",
        evaluate_implant,
        ImplantConfig,
        "vector",
        {
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
        world={"specificity_tasks": (), "n_natural": 0},
    ),
    Section(
        "kernel_regression",
        "ICL as kernel regression",
        "Does attention at the query weigh demonstrations by their similarity to it, like a kernel "
        "regressor (Han et al. 2023)? Run on a classification task (the report's task if it has a label set).",
        kernel_regression,
        KernelRegressionConfig,
        "label_task",
        # 48 prompts: 24 pick the head, 24 held out (at 32, a 16-prompt held-out share is too wide to read).
        {"tiny": {"n_prompts": 8, "n_shots": 4, "n_permutations": 50}, "small": {"n_prompts": 48}},
    ),
    # Optional sections (run them with --sections): the seed ideas' predictions, measured.
    Section(
        "induction_tokens",
        "Induction-consistent and inconsistent tokens",
        "Loss of tokens whose predecessor occurred before and was followed by the same token "
        "(consistent) or by another (inconsistent), against tokens after a new predecessor, with the "
        "top induction heads ablated against random heads (Olsson et al. 2022).",
        induction_token_losses,
        InductionTokenConfig,
        "text",
        {
            "tiny": {
                "n_contexts": 2,
                "context_length": 150,
                "n_random_draws": 1,
                "scan": InductionConfig(n_sequences=2, repeat_lengths=(10,), weight_scores=False),
            },
            "small": {"n_contexts": 8, "scan": InductionConfig(n_sequences=8, weight_scores=False)},
        },
        default=False,
    ),
    Section(
        "demonstration_selection",
        "Demonstration selection",
        "ICL accuracy with demonstrations nearest to the query (by the model's representation and by "
        "the kernel head), random and farthest, paired against random (kernel regression; KATE).",
        demonstration_selection,
        SelectionConfig,
        "label_task",
        {
            "tiny": {"n_queries": 8, "ks": (2,), "pool_size": 40, "kernel_prompts": 4},
            "small": {"n_queries": 40, "ks": (2, 5)},
        },
        default=False,
    ),
    Section(
        "format_sensitivity",
        "Format and label sensitivity",
        "The same demonstrations under other templates, with symbols or numbers for labels, and with "
        "inputs from another task, each paired against the base condition.",
        format_sensitivity,
        FormatConfig,
        "label_task",
        {"tiny": {"n_prompts": 8, "n_shots": 2, "kernel_prompts": 4}, "small": {"n_prompts": 40}},
        default=False,
    ),
    # The positive controls (icl_lens.worlds): where the answer is known.
    Section(
        "vector_check",
        "Positive control: are task and function vectors there?",
        "The task- and function-vector pipelines run on every task of the toy world, with the "
        "vectors implanted into zero-shot prompts: 'found' needs a significant lift and at least half "
        "of ICL accuracy recovered with 95% confidence, 'not found' an interval below that.",
        check_vectors,
        VectorCheckConfig,
        "world_tasks",
        {"tiny": {"function_vectors": False}},
        default=False,
    ),
    Section(
        "gradient_descent",
        "Positive control: in-context regression as one gradient-descent step",
        "The shipped linear self-attention layer trained on in-context linear regression, against one "
        "step of gradient descent on each prompt's least squares (von Oswald et al. 2023), in and out "
        "of the training distribution.",
        compare_to_gradient_descent,
        GradientDescentConfig,
        "regression_run",
        {
            "tiny": {"n_fit": 1024, "n_test": 256, "scales": (1.0, 5.0)},
            "small": {"n_test": 1024, "scales": (0.5, 1.0, 2.0, 5.0)},
        },
        default=False,
        takes_model=False,
    ),
)

if tuple(s.key for s in SECTIONS) != SECTION_KEYS or tuple(s.key for s in SECTIONS if s.default) != DEFAULT_SECTIONS:
    raise ImportError(  # pragma: no cover - caught by any import in the tests
        "icl_lens.report.names must list SECTIONS' keys (SECTION_KEYS) and default keys (DEFAULT_SECTIONS) in order"
    )


def section(key: str) -> Section:
    """The section named ``key``."""
    for s in SECTIONS:
        if s.key == key:
            return s
    raise ConfigError(f"unknown report section {key!r}; choose from {', '.join(SECTION_KEYS)}")


def read_text(path: str | Path | None) -> str | None:
    """The natural text for the ICL score: the file at ``path``, or ``None`` (icl_lens's own corpus)."""
    return None if path is None else Path(path).read_text(encoding="utf-8")
