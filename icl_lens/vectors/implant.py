"""Does an implanted vector reproduce in-context learning?

:func:`evaluate_implant` takes a function vector (added to the residual stream after
block ``L`` at the answer position) or a task vector (replacing it there) and measures,
on held-out test queries of the task:

1. top-1 accuracy of zero-shot, zero-shot + vector, ICL, shuffled-label ICL and
   shuffled-label + vector, and the fraction of ICL accuracy the vector recovers;
2. how close the implanted next-token distribution is to ICL's: ``KL(ICL || condition)``
   per query and the agreement of the top-1 tokens, not only accuracy;
3. a layer sweep (zero-shot + vector at every layer) on the dev and test queries; the
   layer is chosen on dev;
4. task specificity: a matrix of "vector of task A applied to zero-shot queries of task
   B", with a no-vector row, so that a generic "answer something" signal would show up as
   high accuracy off the diagonal;
5. a natural-text check: the vector put into a sentence (``The word "x" means``) and a
   few greedy tokens generated with and without it.

Splits: the vector's own split (same fractions and seed) is used, so the test queries
were never seen while extracting the vector; ICL demonstrations come from the train part.
A vector of a cross-validated task (``vector.folds``) is evaluated fold by fold: each
fold's test queries with that fold's vector, its layer chosen on that fold's dev part, its
demonstrations from that fold's train part; every pair of the task is then a test query.
Accuracies carry Wilson intervals, the conditions are compared pairwise (exact McNemar)
and the recovered share of ICL has a bootstrap interval (see :class:`ImplantResult`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.patching.metrics import top1_correct
from icl_lens.patching.options import Method
from icl_lens.patching.steering import (
    baseline_and_implanted_logprobs,
    implanted_logprobs,
    layer_sweep,
    layer_sweep_and_logprobs,
)
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import PromptBatch, build_prompts
from icl_lens.prompting.sampling import PromptKind
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.vectors.common import (
    check_layer_list,
    check_train_size,
    kl_divergence,
    layers_to_try,
    most_common,
    n_queries,
)
from icl_lens.vectors.function_vector_result import FunctionVectorResult
from icl_lens.vectors.implant_checks import (
    Vector,
    first_fold,
    natural_text,
    operation_of,
    specificity,
    vectors_by_layer,
)
from icl_lens.vectors.implant_result import CONDITIONS, ImplantResult
from icl_lens.vectors.task_vector_result import TaskVectorResult

LayerChoice = Literal["dev", "default"]
"""How :func:`evaluate_implant` picks its layer when not given an index (see ``ImplantConfig.layer``)."""

DEFAULT_SPECIFICITY_TASKS: tuple[str, ...] = (
    "antonym",
    "english_french",
    "country_capital",
    "uppercase",
    "present_past",
)


@dataclasses.dataclass(frozen=True)
class ImplantConfig(Config):
    """Settings of :func:`evaluate_implant`.

    Attributes:
        n_test, n_dev: queries from the test and dev parts (at most the part's size; per
            fold for a cross-validated vector, whose folds' test parts cover the task).
        layer: where the vector goes: ``"dev"`` (best zero-shot + vector accuracy on dev,
            ties broken by the answer's probability), ``"default"`` (the vector's own layer:
            ``n_layers // 3`` for a function vector as in Todd et al., the dev-chosen layer
            for a task vector), or a layer index.
        layers: layers in the sweep (``None``: all).
        scale: multiplier of an added (function) vector.
        specificity_tasks: other tasks whose zero-shot queries receive the vector.
        n_specificity: test queries per task in the specificity matrix.
        natural_template: a sentence with ``{input}``; ``n_natural`` test inputs, with
            ``n_generate`` greedy tokens each.
        seed: prompt sampling (queries, demonstrations, label shuffles).
        batch_size: prompts per forward pass (results do not depend on it).
        method: the patching engine's path for the layer sweep.
    """

    n_test: int = 50
    n_dev: int = 25
    layer: int | LayerChoice = "dev"
    layers: tuple[int, ...] | None = None
    scale: float = 1.0
    specificity_tasks: tuple[str | Task, ...] = DEFAULT_SPECIFICITY_TASKS
    n_specificity: int = 20
    natural_template: str = 'The word "{input}" means'
    n_natural: int = 5
    n_generate: int = 5
    seed: int = 0
    batch_size: int = 25
    method: Method = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", check_layer_list(self.layers))
        object.__setattr__(self, "specificity_tasks", tuple(self.specificity_tasks))
        if not isinstance(self.layer, int) or isinstance(self.layer, bool):
            check_choice(self.layer, LayerChoice, "layer (or a layer index)")
        if min(self.n_test, self.n_dev, self.n_specificity, self.batch_size) < 1:
            raise ConfigError("n_test, n_dev, n_specificity and batch_size must be >= 1")
        if self.n_natural < 0 or self.n_generate < 0:
            raise ConfigError("n_natural and n_generate must be >= 0")
        if self.natural_template.count("{input}") != 1 or "{output}" in self.natural_template:
            raise ConfigError(
                f"natural_template must contain {{input}} once and no {{output}}, got {self.natural_template!r}"
            )
        check_choice(self.method, Method, "method")


def evaluate_implant(
    model: HookedModel,
    task: Task | str | None,
    vector: Vector,
    config: ImplantConfig | None = None,
    *,
    other_vectors: Sequence[Vector] = (),
    show_progress: bool | None = None,
    **overrides: Any,
) -> ImplantResult:
    """Measure how much of ICL an implanted function or task vector reproduces.

    Args:
        model: the model the vector was read from (same name and weight-processing mode;
            anything else raises :class:`VectorMismatchError`).
        task: the task whose held-out queries are used (``None``: the vector's own task).
        vector: a :class:`FunctionVectorResult` (added) or :class:`TaskVectorResult`
            (replaces the residual stream).
        config: :class:`ImplantConfig`; keyword ``overrides`` replace its fields.
        other_vectors: vectors of other tasks, to fill the specificity matrix with their
            rows (they go in at the same layer as ``vector``).
        show_progress: progress bars (default: the global setting).
    """
    cfg = ImplantConfig.resolve(config, overrides)
    if not isinstance(vector, FunctionVectorResult | TaskVectorResult):
        raise ConfigError(
            f"vector must be a FunctionVectorResult or TaskVectorResult (from il.function_vector / "
            f"il.task_vector or il.load_result), got {type(vector).__name__}"
        )
    for v in (vector, *other_vectors):
        v.origin.check_model(model, what=f"the {v.kind} vector of {v.origin.task!r}")
    task = load_task(task if task is not None else (vector.origin.task_data or vector.origin.task))
    layers = layers_to_try(model, cfg.layers)
    fold_vectors: list[Vector] = list(vector.folds) if vector.folds else [vector]
    parts = vector.origin.parts(task)
    if len(parts) != len(fold_vectors):
        raise ConfigError(
            f"the {vector.kind} vector has {len(fold_vectors)} fold vector(s) for {len(parts)} folds; "
            "extract it again with il.function_vector / il.task_vector"
        )
    steps = progress(range(len(parts) + 3), total=len(parts) + 3, desc="evaluate_implant", enabled=show_progress)
    next(steps, None)
    measured = []
    for v, (train, dev, test) in zip(fold_vectors, parts, strict=True):
        check_train_size(task, train, v.origin.n_shots, 1, "a query")
        measured.append(_measure_fold(model, v, train, dev, test, layers, cfg))
        next(steps, None)
    layer = most_common([m.layer for m in measured])

    spec_rows, spec_cols, spec, spec_n = specificity(model, task, vector, other_vectors, measured[0].layer, cfg)
    next(steps, None)
    v0 = first_fold(vector)
    nat_prompts, plain, implanted = natural_text(
        model,
        parts[0][2],
        vectors_by_layer(v0, hooks.spec(model).n_layers)[measured[0].layer],
        measured[0].layer,
        operation_of(vector),
        cfg,
    )
    next(steps, None)
    for _ in steps:
        pass

    def cat(name: str) -> Tensor:
        return torch.cat([getattr(m, name) for m in measured], -1)

    dev_n = torch.tensor([m.dev_correct.shape[-1] for m in measured])
    return ImplantResult(
        origin=vector.origin,
        config=cfg,
        vector_kind=vector.kind,
        operation=operation_of(vector),
        task=task.name,
        layer=layer,
        layer_choice=measured[0].choice,
        fold_layers=tuple(m.layer for m in measured),
        conditions=CONDITIONS,
        correct=cat("correct"),
        answer_prob=cat("prob"),
        kl_to_icl=cat("kl"),
        agrees_with_icl=cat("agree"),
        queries=tuple(q for m in measured for q in m.queries),
        answers=tuple(a for m in measured for a in m.answers),
        layers=tuple(layers),
        layer_dev_accuracy=cat("dev_correct").float().mean(-1),
        layer_test_accuracy=cat("test_correct").float().mean(-1),
        specificity_vectors=spec_rows,
        specificity_tasks=spec_cols,
        specificity=spec,
        specificity_n=spec_n,
        natural_prompts=nat_prompts,
        natural_plain=plain,
        natural_implanted=implanted,
        n_dev=int(dev_n.sum()),
    )


@dataclasses.dataclass(frozen=True)
class _FoldMeasures:
    """What one fold measured, per test (and dev) query; folds are concatenated afterwards."""

    layer: int
    choice: str
    correct: Bool[Tensor, "conditions test"]
    prob: Float[Tensor, "conditions test"]
    kl: Float[Tensor, "conditions test"]
    agree: Bool[Tensor, "conditions test"]
    queries: tuple[str, ...]
    answers: tuple[str, ...]
    dev_correct: Bool[Tensor, "layers dev"]
    test_correct: Bool[Tensor, "layers test"]


def _measure_fold(
    model: HookedModel,
    vector: Vector,
    train: Task,
    dev: Task,
    test: Task,
    layers: tuple[int, ...],
    cfg: ImplantConfig,
) -> _FoldMeasures:
    """The five conditions and the layer sweep of one fold's vector on that fold's queries."""
    s = hooks.spec(model)
    operation = operation_of(vector)
    template, n_shots = vector.origin.template, vector.origin.n_shots
    vectors = vectors_by_layer(vector, s.n_layers)

    def prompts(pool: Task, kind: PromptKind, n: int) -> PromptBatch:
        shots = 0 if kind == "zero_shot" else n_shots
        demos = None if kind == "zero_shot" else train
        return build_prompts(model, pool, shots, n_queries(n, pool), cfg.seed, template, kind=kind, demos_from=demos)

    test_zs, test_icl, test_shuf = (prompts(test, k, cfg.n_test) for k in ("zero_shot", "clean", "shuffled"))
    dev_zs = prompts(dev, "zero_shot", cfg.n_dev)

    # the layer sweep (dev chooses, test is reported)
    sweep = dict(
        vectors=vectors,
        operation=operation,
        layers=layers,
        scale=cfg.scale,
        batch_size=cfg.batch_size,
        method=cfg.method,
        show_progress=False,
    )
    dev_correct = layer_sweep(model, dev_zs, **sweep)
    if isinstance(cfg.layer, int) and not isinstance(cfg.layer, bool):
        layer, choice = int(cfg.layer), "given"
        if not 0 <= layer < s.n_layers:
            raise ConfigError(f"layer {layer} out of range for a {s.n_layers}-layer model")
    elif cfg.layer == "default":
        layer, choice = int(vector.layer), "the vector's default layer"
    else:
        layer, choice = _choose_on_dev(model, dev_zs, dev_correct, layers, vectors, operation, cfg), "best on dev"

    # accuracy and distributions at the chosen layer; the zero-shot pair comes from the test sweep's pass
    lp: dict[str, Tensor] = {"icl": next_token_logprobs(model, test_icl, batch_size=cfg.batch_size)}
    test_correct, lp["zero_shot"], lp["zero_shot+vector"] = layer_sweep_and_logprobs(model, test_zs, at=layer, **sweep)
    lp["shuffled"], lp["shuffled+vector"] = baseline_and_implanted_logprobs(
        model,
        test_shuf,
        vector=vectors[layer],
        layer=layer,
        operation=operation,
        scale=cfg.scale,
        batch_size=cfg.batch_size,
        method=cfg.method,
    )
    answers = test_zs.answer_ids
    icl_top = lp["icl"].argmax(-1)
    return _FoldMeasures(
        layer=layer,
        choice=choice,
        correct=torch.stack([top1_correct(lp[c], test_zs).bool() for c in CONDITIONS]),
        prob=torch.stack([lp[c].gather(1, answers[:, None]).squeeze(1).exp() for c in CONDITIONS]),
        kl=torch.stack([kl_divergence(lp["icl"], lp[c]) for c in CONDITIONS]),
        agree=torch.stack([lp[c].argmax(-1) == icl_top for c in CONDITIONS]),
        queries=test_zs.queries,
        answers=test_zs.answers,
        dev_correct=dev_correct.bool(),
        test_correct=test_correct.bool(),
    )


def _choose_on_dev(
    model: HookedModel,
    dev_zs: PromptBatch,
    dev_correct: Bool[Tensor, "layers dev"],
    layers: Sequence[int],
    vectors: Float[Tensor, "n_layers d_model"],
    operation: str,
    cfg: ImplantConfig,
) -> int:
    """The layer with the best dev accuracy; ties broken by the mean probability of the answer."""
    acc = dev_correct.float().mean(-1)
    tied = [layers[i] for i in range(len(layers)) if float(acc[i]) == float(acc.max())]
    if len(tied) == 1:
        return int(tied[0])
    best, best_prob = tied[0], -1.0
    for l in tied:
        lp = implanted_logprobs(
            model, dev_zs, vector=vectors[l], layer=l, operation=operation, scale=cfg.scale, batch_size=cfg.batch_size
        )
        p = float(lp.gather(1, dev_zs.answer_ids[:, None]).exp().mean())
        if p > best_prob:
            best, best_prob = l, p
    return int(best)
