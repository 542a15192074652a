"""How much the format matters: templates, label forms, and out-of-distribution inputs.

Kernel regression (Han et al. 2023) says ICL depends on how similar the query's
representation is to the demonstrations' and on which label each demonstration carries;
so the format should matter (it moves every representation), arbitrary labels should
still be learnable from the demonstrations, and demonstrations whose inputs come from
another distribution should help less (Min et al. 2022 measured the last two).

``format_sensitivity(model, task)`` fixes one set of queries and one set of
demonstrations per query (drawn from the rest of the task) and changes one thing at a
time from the base condition (the first template, the task's own label words, inputs
from the task):

* **template**: every template in ``templates`` (default ``x -> y``, ``Q: x A: y``,
  ``Input: x Output: y``, ``x: y``; add your own format strings);
* **labels** (label tasks only): each label replaced, consistently in demonstrations and
  answers, by an arbitrary symbol (``#``, ``@``, ...) or by a number (``0``, ``1``, ...);
* **inputs**: each demonstration's input replaced by an input of another task (``ood_task``),
  keeping every demonstration's label, so the label sequence and the format are those
  of the base condition and only the inputs' distribution changes.

Every condition is scored on the same queries: first-token top-1 accuracy and (label
tasks) label-restricted accuracy with Wilson intervals, an exact McNemar test against
the base condition, and the agreement of the kernel head's vote (the head
:func:`~icl_lens.hypotheses.kernel.kernel_regression` picks in the base condition) with
the model's label-restricted answer.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, Literal

import torch

from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.hypotheses.formats_result import FormatSensitivityResult
from icl_lens.hypotheses.head_vote import batch_answers, labels_or_none, pick_kernel_head
from icl_lens.hypotheses.kernel_result import KernelRegressionResult
from icl_lens.hypotheses.selection import split_queries
from icl_lens.prompting.prompts import build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import Template, get_template

LabelForm = Literal["words", "symbols", "numbers"]
TEMPLATES: tuple[str, ...] = (
    "{input} -> {output}\n",
    "Q: {input}\nA: {output}\n\n",
    "Input: {input}\nOutput: {output}\n\n",
    "{input}: {output}\n",
)
SYMBOLS: tuple[str, ...] = ("#", "@", "$", "%", "&", "*", "+", "~", "^", "!", "?", "|")
NUMBERS: tuple[str, ...] = tuple(str(i) for i in range(10))


def template_label(text: str) -> str:
    """``"Q: {input}\\nA: {output}\\n\\n"`` -> ``"Q: x A: y"``."""
    return " ".join(text.replace("{input}", "x").replace("{output}", "y").split())


@dataclasses.dataclass(frozen=True)
class FormatConfig(Config):
    """Settings of :func:`format_sensitivity`.

    Attributes:
        templates: format strings with ``{input}`` and ``{output}``; the first is the base.
        label_forms: label conditions of a label task (``"words"`` is the base).
        ood_task: the task whose inputs replace the demonstrations' inputs (``None``:
            ``number_parity``, or ``antonym`` when the task is ``number_parity``).
        n_shots, n_prompts: demonstrations per prompt and queries.
        kernel_head: the kernel head ``(layer, head)``; ``None`` picks it with
            :func:`kernel_regression` on ``kernel_prompts`` prompts made of the pool.
    """

    templates: tuple[str, ...] = TEMPLATES
    label_forms: tuple[LabelForm, ...] = ("words", "symbols", "numbers")
    ood_task: str | None = None
    n_shots: int = 5
    n_prompts: int = 60
    kernel_head: tuple[int, int] | None = None
    kernel_prompts: int = 64
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "templates", tuple(self.templates))
        object.__setattr__(
            self, "label_forms", tuple(check_choice(f, LabelForm, "label form") for f in self.label_forms)
        )
        if self.kernel_head is not None:
            object.__setattr__(self, "kernel_head", tuple(int(x) for x in self.kernel_head))
        if not self.templates:
            raise ConfigError("templates must hold at least one format string (the base)")
        for t in self.templates:
            get_template(t)
        if len({template_label(t) for t in self.templates}) != len(self.templates):
            raise ConfigError(f"templates must differ in more than whitespace, got {self.templates}")
        if self.n_shots < 1 or self.n_prompts < 1 or self.batch_size < 1 or self.kernel_prompts < 4:
            raise ConfigError("n_shots, n_prompts and batch_size must be >= 1, kernel_prompts >= 4")


def label_map(labels: tuple[str, ...], pool: tuple[str, ...], seed: int) -> dict[str, str]:
    """A seeded bijection from the labels to stand-ins from ``pool`` that are not labels themselves.

    Unlike :func:`~icl_lens.hypotheses.recognition.abstract_label_map`, a stand-in may take
    several tokens (SmolLM2 writes " 7" as a space and a digit); the labels are told apart
    at their first differing token (:func:`~icl_lens.hypotheses.head_vote.label_answer_tokens`).
    """
    taken = {y.strip().lower() for y in labels}
    candidates = [c for c in pool if c.lower() not in taken]
    random.Random(f"{seed}:label-map").shuffle(candidates)
    if len(candidates) < len(labels):
        raise ConfigError(f"{len(labels)} labels but only {len(candidates)} stand-ins in {pool}")
    return dict(zip(labels, candidates[: len(labels)], strict=True))


def _relabel(pairs: Any, mapping: dict[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((x, mapping[y]) for x, y in pairs)


def _ood_demos(demos: list[list[tuple[str, str]]], inputs: list[str], seed: int) -> list[list[tuple[str, str]]]:
    """Each demonstration's input swapped for a foreign one (distinct within a prompt); labels kept."""
    out = []
    for i, row in enumerate(demos):
        foreign = random.Random(f"{seed}:{i}:ood").sample(inputs, len(row))
        out.append([(x, y) for x, (_, y) in zip(foreign, row, strict=True)])
    return out


def format_sensitivity(
    model: HookedModel,
    task: Task | str,
    config: FormatConfig | None = None,
    *,
    kernel: KernelRegressionResult | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> FormatSensitivityResult:
    """ICL accuracy under other templates, label forms and out-of-distribution demonstration inputs.

    Args:
        model: a model with a tokenizer, speaking the TransformerLens hook contract.
        task: a task or its name; label forms and the kernel head's vote need a label task.
        config: a :class:`FormatConfig`; keyword ``overrides`` replace its fields.
        kernel: a :func:`kernel_regression` result whose ``best_head`` is the kernel head.

    Returns:
        A :class:`FormatSensitivityResult`: ``to_dataframe()`` is the one table (a row per
        condition, intervals, the test against the base, the kernel head's agreement).
    """
    cfg = FormatConfig.resolve(config, overrides)
    task = load_task(task)
    labels = labels_or_none(task)
    queries, pool = split_queries(task, cfg.n_prompts, None, cfg.seed, min_pool=cfg.n_shots)
    demos = [random.Random(f"{cfg.seed}:{i}:format").sample(pool.pairs, cfg.n_shots) for i in range(len(queries))]
    base = get_template(cfg.templates[0])
    ood_name = cfg.ood_task or ("antonym" if task.name == "number_parity" else "number_parity")
    own = set(task.inputs)
    foreign = [x for x in load_task(ood_name).inputs if x not in own]
    if len(foreign) < cfg.n_shots:
        raise ConfigError(f"ood_task {ood_name!r} has {len(foreign)} inputs not in {task.name!r}; {cfg.n_shots} needed")

    head = cfg.kernel_head or (tuple(kernel.best_head) if kernel is not None else None)
    if head is None and labels is not None:
        head = pick_kernel_head(
            model,
            pool,
            template=cfg.templates[0],
            n_prompts=cfg.kernel_prompts,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
        )

    # (factor, level, template, query pairs, demonstrations, label set)
    conditions: list[tuple[str, str, Template, Any, Any, tuple[str, ...] | None]] = []
    for text in cfg.templates:
        conditions.append(("template", template_label(text), get_template(text), queries, demos, labels))
    label_maps: dict[str, dict[str, str]] = {}
    if labels is not None:
        for form in cfg.label_forms:
            if form == "words":
                continue
            pool_of = SYMBOLS if form == "symbols" else NUMBERS
            mapping = label_map(labels, pool_of, cfg.seed)
            label_maps[form] = mapping
            relabelled = dataclasses.replace(queries, pairs=_relabel(queries.pairs, mapping), labels=None)
            conditions.append(
                (
                    "labels",
                    form,
                    base,
                    relabelled,
                    [list(_relabel(d, mapping)) for d in demos],
                    tuple(mapping[y] for y in labels),
                )
            )
    conditions.append(("inputs", f"from {ood_name}", base, queries, _ood_demos(demos, foreign, cfg.seed), labels))

    n = len(queries)
    correct = torch.zeros(len(conditions), n, dtype=torch.bool)
    label_correct = torch.zeros(len(conditions), n, dtype=torch.bool)
    vote_agrees = torch.zeros(len(conditions), n, dtype=torch.bool)
    vote_correct = torch.zeros(len(conditions), n, dtype=torch.bool)
    for c, (_, _, template, asked, shown, label_set) in enumerate(
        progress(conditions, total=len(conditions), desc="format sensitivity", enabled=show_progress)
    ):
        batch = build_prompts(model, asked, template=template, demos=shown)
        answers = batch_answers(model, batch, template=template, labels=label_set, head=head, batch_size=cfg.batch_size)
        correct[c] = answers.correct
        if answers.label_prediction is not None and answers.gold is not None:
            label_correct[c] = answers.label_prediction == answers.gold
            if answers.vote is not None:
                vote_agrees[c] = answers.vote == answers.label_prediction
                vote_correct[c] = answers.vote == answers.gold
    has_vote = labels is not None and head is not None
    return FormatSensitivityResult(
        config=cfg,
        model=model_name(model),
        task=task.name,
        labels=labels,
        kernel_head=head,
        conditions=tuple((f, level) for f, level, *_ in conditions),
        templates=tuple(t.text for _, _, t, *_ in conditions),
        label_maps=label_maps,
        ood_task=ood_name,
        correct=correct,
        label_correct=label_correct if labels is not None else None,
        vote_agrees=vote_agrees if has_vote else None,
        vote_correct=vote_correct if has_vote else None,
    )
