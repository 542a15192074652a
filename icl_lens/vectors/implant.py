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
from icl_lens.patching.steering import baseline_and_implanted_logprobs, implant, implanted_logprobs, layer_sweep
from icl_lens.prompting.encoding import encode_texts
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import PromptBatch, build_prompts
from icl_lens.prompting.sampling import PromptKind
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.vectors.common import (
    check_layer_list,
    check_train_size,
    kl_divergence,
    layers_to_try,
    n_queries,
    split_task,
)
from icl_lens.vectors.function_vector_result import FunctionVectorResult
from icl_lens.vectors.implant_result import CONDITIONS, ImplantResult
from icl_lens.vectors.task_vector_result import TaskVectorResult

Vector = FunctionVectorResult | TaskVectorResult

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
        n_test, n_dev: queries from the test and dev splits (at most the split's size).
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


# ---------------------------------------------------------------------------------------
def _label(vector: Vector) -> str:
    return f"{vector.origin.task} ({vector.kind})"


def _operation(vector: Vector) -> str:
    return "add" if isinstance(vector, FunctionVectorResult) else "replace"


def _vectors_by_layer(vector: Vector, n_layers: int) -> Float[Tensor, "n_layers d_model"]:
    if isinstance(vector, TaskVectorResult):
        return vector.vectors.float()
    return vector.vector.float()[None].expand(n_layers, -1)


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
    s = hooks.spec(model)
    origin = vector.origin
    operation = _operation(vector)
    template = origin.template
    n_shots = origin.n_shots
    train, dev, test = split_task(task, origin.split, origin.split_seed)
    check_train_size(task, train, n_shots, 1, "a query")
    layers = layers_to_try(model, cfg.layers)
    vectors = _vectors_by_layer(vector, s.n_layers)
    steps = progress(range(6), total=6, desc="evaluate_implant", enabled=show_progress)
    next(steps, None)

    def prompts(pool: Task, kind: PromptKind, n: int) -> PromptBatch:
        shots = 0 if kind == "zero_shot" else n_shots
        demos = None if kind == "zero_shot" else train
        return build_prompts(model, pool, shots, n_queries(n, pool), cfg.seed, template, kind=kind, demos_from=demos)

    test_zs, test_icl, test_shuf = (prompts(test, k, cfg.n_test) for k in ("zero_shot", "clean", "shuffled"))
    dev_zs = prompts(dev, "zero_shot", cfg.n_dev)

    # 3. the layer sweep (dev chooses, test is reported)
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
    test_correct_by_layer = layer_sweep(model, test_zs, **sweep)
    next(steps, None)
    if isinstance(cfg.layer, int) and not isinstance(cfg.layer, bool):
        layer, choice = int(cfg.layer), "given"
        if not 0 <= layer < s.n_layers:
            raise ConfigError(f"layer {layer} out of range for a {s.n_layers}-layer model")
    elif cfg.layer == "default":
        layer, choice = int(vector.layer), "the vector's default layer"
    else:
        layer, choice = _choose_on_dev(model, dev_zs, dev_correct, layers, vectors, operation, cfg), "best on dev"

    # 1-2. accuracy and distributions at the chosen layer
    put = dict(
        vector=vectors[layer],
        layer=layer,
        operation=operation,
        scale=cfg.scale,
        batch_size=cfg.batch_size,
        method=cfg.method,
    )
    lp: dict[str, Tensor] = {"icl": next_token_logprobs(model, test_icl, batch_size=cfg.batch_size)}
    lp["zero_shot"], lp["zero_shot+vector"] = baseline_and_implanted_logprobs(model, test_zs, **put)
    next(steps, None)
    lp["shuffled"], lp["shuffled+vector"] = baseline_and_implanted_logprobs(model, test_shuf, **put)
    next(steps, None)
    answers = test_zs.answer_ids
    correct = torch.stack([top1_correct(lp[c], test_zs).bool() for c in CONDITIONS])
    prob = torch.stack([lp[c].gather(1, answers[:, None]).squeeze(1).exp() for c in CONDITIONS])
    kl = torch.stack([kl_divergence(lp["icl"], lp[c]) for c in CONDITIONS])
    icl_top = lp["icl"].argmax(-1)
    agree = torch.stack([(lp[c].argmax(-1) == icl_top).float().mean() for c in CONDITIONS])

    # 4. specificity
    spec_rows, spec_cols, spec = _specificity(model, task, vector, other_vectors, layer, cfg)
    next(steps, None)

    # 5. natural text
    nat_prompts, plain, implanted = _natural_text(model, test, vectors[layer], layer, operation, cfg)
    next(steps, None)
    for _ in steps:
        pass

    return ImplantResult(
        origin=origin,
        config=cfg,
        vector_kind=vector.kind,
        operation=operation,
        task=task.name,
        layer=layer,
        layer_choice=choice,
        conditions=CONDITIONS,
        accuracy=correct.float().mean(-1),
        correct=correct,
        answer_prob=prob,
        kl_to_icl=kl,
        top1_agreement=agree,
        queries=test_zs.queries,
        answers=test_zs.answers,
        layers=tuple(layers),
        layer_dev_accuracy=dev_correct.float().mean(-1),
        layer_test_accuracy=test_correct_by_layer.float().mean(-1),
        specificity_vectors=spec_rows,
        specificity_tasks=spec_cols,
        specificity=spec,
        natural_prompts=nat_prompts,
        natural_plain=plain,
        natural_implanted=implanted,
        n_test=len(test_zs),
        n_dev=len(dev_zs),
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


def _specificity(
    model: HookedModel, task: Task, vector: Vector, others: Sequence[Vector], layer: int, cfg: ImplantConfig
) -> tuple[tuple[str, ...], tuple[str, ...], Float[Tensor, "vectors tasks"]]:
    """Rows: no vector, then each vector; columns: this task, then the other tasks."""
    s = hooks.spec(model)
    origin = vector.origin
    columns: list[Task] = [task]
    for t in (*cfg.specificity_tasks, *(o.origin.task_data or o.origin.task for o in others)):
        loaded = load_task(t)
        if loaded.name not in {c.name for c in columns}:
            columns.append(loaded)
    rows: list[Vector | None] = [None, vector, *others]
    out = torch.zeros(len(rows), len(columns))
    for j, col in enumerate(columns):
        test = split_task(col, origin.split, origin.split_seed)[2]
        batch = build_prompts(
            model, test, 0, n_queries(cfg.n_specificity, test), cfg.seed, origin.template, kind="zero_shot"
        )
        for i, row in enumerate(rows):
            if row is None:
                lp = next_token_logprobs(model, batch, batch_size=cfg.batch_size)
            else:
                lp = implanted_logprobs(
                    model,
                    batch,
                    vector=_vectors_by_layer(row, s.n_layers)[layer],
                    layer=layer,
                    operation=_operation(row),
                    scale=cfg.scale,
                    batch_size=cfg.batch_size,
                )
            out[i, j] = top1_correct(lp, batch).mean()
    labels = ("no vector", *(_label(r) for r in rows[1:] if r is not None))
    return labels, tuple(c.name for c in columns), out


def _natural_text(
    model: HookedModel, test: Task, vector: Float[Tensor, " d_model"], layer: int, operation: str, cfg: ImplantConfig
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """Greedy continuations of ``natural_template`` with and without the vector at its last token."""
    if cfg.n_natural == 0 or cfg.n_generate == 0:
        return (), (), ()
    texts = tuple(cfg.natural_template.replace("{input}", x) for x, _ in test.pairs[: cfg.n_natural])
    tokens, mask = encode_texts(model, texts, padding_side="left")
    plain = _greedy(model, tokens, mask, cfg.n_generate, None)
    implanted = _greedy(model, tokens, mask, cfg.n_generate, (vector, layer, operation, cfg.scale))
    return texts, plain, implanted


def _greedy(
    model: HookedModel, tokens: Tensor, mask: Tensor, n_new: int, put: tuple[Tensor, int, str, float] | None
) -> tuple[str, ...]:
    """``n_new`` greedy tokens; the vector (if any) goes in at the prompt's last token only."""
    where = tokens.shape[1] - 1  # left padding: every prompt ends in this column
    new: list[Tensor] = []
    with torch.no_grad():
        for _ in range(n_new):
            if put is None:
                logits = hooks.forward(model, tokens, mask)
            else:
                vec, layer, operation, scale = put
                with implant(model, where, vector=vec, layer=layer, operation=operation, scale=scale):
                    logits = hooks.forward(model, tokens, mask)
            nxt = logits[:, -1].argmax(-1).cpu()
            new.append(nxt)
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    gen = torch.stack(new, 1)
    return tuple(model.tokenizer.decode(row.tolist()) for row in gen)
