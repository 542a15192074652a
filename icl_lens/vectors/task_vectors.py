"""Task vectors (Hendel et al. 2023, "In-Context Learning Creates Task Vectors").

ICL compresses the demonstrations into a vector θ in the residual stream at the last
token, and the rest of the forward pass applies θ to the query. To read θ without the
query leaking into it, the query of a 5-shot prompt (``x -> y\\n``) is replaced by a dummy
input of the task; the residual stream after layer ``L`` at the last token is averaged
over prompts and over ``n_dummy`` dummy queries:

    θ_L = mean_{prompts, dummies} resid_post_L(last token).

To use θ_L, the residual stream after layer ``L`` at the last token of a zero-shot prompt
(``x ->``) is *replaced* by θ_L. ``L`` is chosen on the dev split (highest accuracy) and
accuracy is reported on the test split, with the whole per-layer curve.

One difference from the paper: Hendel et al. build one θ per test query from its own
demonstration set; here θ_L is one vector averaged over ``n_prompts`` demonstration sets
(the train split), so it can be saved, inspected and implanted like a function vector.

A task too small for 50 held-out test queries is cross-validated (``config.cv_folds``):
each fold extracts its θ from its own train part, picks its layer on its own dev part and
tests its own queries, so every pair is a test query once; ``result.folds`` keeps the
folds and the result pools their test queries.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice
from icl_lens.core.results import Config
from icl_lens.patching.activations import activations_and_logits
from icl_lens.patching.metrics import top1_correct
from icl_lens.patching.options import Method
from icl_lens.patching.steering import layer_sweep, layer_sweep_and_logprobs, resid_at_answer
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import get_template
from icl_lens.vectors.common import (
    DEFAULT_SPLIT,
    CvFolds,
    Fold,
    check_cv_folds,
    check_layer_list,
    check_split_fractions,
    layers_to_try,
    most_common,
    n_queries,
    plan_folds,
    pooled_origin,
)
from icl_lens.vectors.task_vector_result import TaskVectorResult


@dataclasses.dataclass(frozen=True)
class TaskVectorConfig(Config):
    """Settings of :func:`task_vector`; defaults follow Hendel et al. (2023).

    Attributes:
        n_shots: demonstrations per extraction prompt.
        template: prompt format (``"hendel"`` is ``x -> y\\n``).
        n_dummy: dummy queries per demonstration set, averaged.
        n_prompts: demonstration sets (train split) averaged into θ.
        n_dev, n_test: zero-shot queries for choosing the layer and for the test accuracy
            (at most the size of those parts; per fold when cross-validated).
        layers: layers to try (``None``: all).
        split, split_seed, seed: the task split and the prompt sampling.
        cv_folds: ``"auto"`` (cross-validate with 5 folds when the test part would hold
            fewer than 50 queries), 1 (always one held-out split) or a number of folds.
        batch_size: prompts per forward pass (results do not depend on it).
        method: the patching engine's path (``"auto"``, ``"fast"``, ``"plain"``).
        ceiling: also patch each test query's *own* ICL state (the residual after block
            ``L`` at the last token of its ``n_shots``-shot prompt, real query) into its
            zero-shot prompt, per layer: how much of ICL the last token carries at ``L``,
            a ceiling for any single vector there (one more pass over the test queries).
    """

    n_shots: int = 5
    template: str = "hendel"
    n_dummy: int = 2
    n_prompts: int = 50
    n_dev: int = 25
    n_test: int = 50
    layers: tuple[int, ...] | None = None
    split: tuple[float, ...] = DEFAULT_SPLIT
    cv_folds: int | CvFolds = "auto"
    split_seed: int = 0
    seed: int = 0
    batch_size: int = 25
    method: Method = "auto"
    ceiling: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", check_split_fractions(self.split))
        object.__setattr__(self, "cv_folds", check_cv_folds(self.cv_folds))
        object.__setattr__(self, "layers", check_layer_list(self.layers))
        get_template(self.template)
        if self.n_shots < 1 or self.n_dummy < 1:
            raise ConfigError("n_shots and n_dummy must be >= 1")
        if min(self.n_prompts, self.n_dev, self.n_test, self.batch_size) < 1:
            raise ConfigError("n_prompts, n_dev, n_test and batch_size must be >= 1")
        check_choice(self.method, Method, "method")


def task_vector(
    model: HookedModel,
    task: Task | str,
    config: TaskVectorConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> TaskVectorResult:
    """Extract task vectors of ``task`` at every layer and find the layer where they work.

    Args:
        model: a TransformerBridge (any HookedModel) with a tokenizer.
        task: a :class:`Task`, a built-in task name or a task file path.
        config: :class:`TaskVectorConfig`; keyword ``overrides`` replace its fields.
        show_progress: progress bars (default: the global setting).
    """
    cfg = TaskVectorConfig.resolve(config, overrides)
    task = load_task(task)
    template = get_template(cfg.template)
    folds = plan_folds(
        model,
        task,
        template,
        cfg.n_shots,
        cfg.split,
        cfg.split_seed,
        cfg.seed,
        cfg.cv_folds,
        extra=2,
        what="a query and a dummy query",
    )
    layers = layers_to_try(model, cfg.layers)
    results = [_fold_task_vector(model, fold, layers, cfg, show_progress) for fold in folds]
    return results[0] if len(results) == 1 else pool_folds(results)


def _fold_task_vector(
    model: HookedModel, fold: Fold, layers: tuple[int, ...], cfg: TaskVectorConfig, show_progress: bool | None
) -> TaskVectorResult:
    """θ of one fold from its train part, its layer chosen on its dev part, tested on its test part."""
    s = hooks.spec(model)
    template, train, dev, test = fold.origin.template, fold.train, fold.dev, fold.test
    total = torch.zeros(s.n_layers, s.d_model, dtype=torch.float64)
    count = 0
    for variant in range(cfg.n_dummy):
        batch = build_prompts(
            model, train, cfg.n_shots, cfg.n_prompts, cfg.seed, template, kind="dummy_query", variant=variant
        )
        resid = resid_at_answer(model, batch, batch_size=cfg.batch_size, show_progress=show_progress)
        total += resid.double().sum(0)
        count += resid.shape[0]
    vectors = (total / count).float()

    dev_zs = build_prompts(model, dev, 0, n_queries(cfg.n_dev, dev), cfg.seed, template, kind="zero_shot")
    test_zs = build_prompts(model, test, 0, n_queries(cfg.n_test, test), cfg.seed, template, kind="zero_shot")
    test_icl = build_prompts(
        model, test, cfg.n_shots, n_queries(cfg.n_test, test), cfg.seed, template, kind="clean", demos_from=train
    )
    sweep_args = dict(vectors=vectors, operation="replace", layers=layers, batch_size=cfg.batch_size, method=cfg.method)
    dev_correct = layer_sweep(model, dev_zs, show_progress=show_progress, **sweep_args)
    dev_acc = dev_correct.float().mean(-1)
    best = layers[int(torch.argmax(dev_acc))]  # argmax returns the first maximum: ties go to the earliest layer
    # the test sweep's pass also gives the zero-shot baseline
    test_correct, zs_logprobs, _ = layer_sweep_and_logprobs(
        model, test_zs, at=best, show_progress=show_progress, **sweep_args
    )

    ceiling = None
    if cfg.ceiling:
        if test_icl.queries != test_zs.queries:  # both are drawn from the test split with cfg.seed
            raise RuntimeError("internal error: ICL and zero-shot test prompts hold different queries")
        # one pass over the ICL prompts gives both their states and their answers
        own, icl_logits = activations_and_logits(
            model, test_icl, "resid_post", batch_size=cfg.batch_size, show_progress=show_progress
        )
        ceiling = layer_sweep(model, test_zs, show_progress=show_progress, **{**sweep_args, "vectors": own.float()})
    else:
        icl_logits = next_token_logprobs(model, test_icl, batch_size=cfg.batch_size)
    zs_correct = top1_correct(zs_logprobs, test_zs)
    icl_correct = top1_correct(icl_logits, test_icl)  # argmax: logits or log-probs alike
    return TaskVectorResult(
        origin=fold.origin,
        config=cfg,
        vectors=vectors,
        layers=tuple(layers),
        dev_accuracy=dev_acc,
        test_correct=test_correct.bool(),
        best_layer=int(best),
        fold_layers=(int(best),),
        correct=test_correct[layers.index(best)].bool().clone(),  # its own storage: saved beside test_correct
        zero_shot_correct=zs_correct.bool(),
        icl_correct=icl_correct.bool(),
        queries=test_zs.queries,
        n_dev=len(dev_zs),
        ceiling_correct=None if ceiling is None else ceiling.bool(),
    )


def pool_folds(folds: list[TaskVectorResult]) -> TaskVectorResult:
    """Every fold's test queries together: each answered with its own fold's θ at its own fold's
    layer (``correct``); the per-layer curves over all of them; θ averaged over the folds."""
    n_dev = torch.tensor([f.n_dev for f in folds], dtype=torch.float32)
    dev_acc = (torch.stack([f.dev_accuracy for f in folds]) * n_dev[:, None]).sum(0) / n_dev.sum()
    fold_layers = tuple(f.best_layer for f in folds)
    ceilings = [f.ceiling_correct for f in folds]
    return TaskVectorResult(
        origin=pooled_origin([f.origin for f in folds]),
        config=folds[0].config,
        vectors=torch.stack([f.vectors for f in folds]).mean(0),
        layers=folds[0].layers,
        dev_accuracy=dev_acc,
        test_correct=torch.cat([f.test_correct for f in folds], -1),
        best_layer=most_common(fold_layers),
        fold_layers=fold_layers,
        correct=torch.cat([f.correct for f in folds]),
        zero_shot_correct=torch.cat([f.zero_shot_correct for f in folds]),
        icl_correct=torch.cat([f.icl_correct for f in folds]),
        queries=tuple(q for f in folds for q in f.queries),
        n_dev=int(n_dev.sum()),
        ceiling_correct=None if any(c is None for c in ceilings) else torch.cat(ceilings, -1),  # type: ignore[arg-type]
        folds=tuple(folds),
    )
