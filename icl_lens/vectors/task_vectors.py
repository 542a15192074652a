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
from icl_lens.patching.steering import layer_sweep, resid_at_answer
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import get_template
from icl_lens.vectors.common import (
    DEFAULT_SPLIT,
    check_layer_list,
    check_split_fractions,
    layers_to_try,
    n_queries,
    split_for_vectors,
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
            (at most the size of those splits).
        layers: layers to try (``None``: all).
        split, split_seed, seed: the task split and the prompt sampling.
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
    split_seed: int = 0
    seed: int = 0
    batch_size: int = 25
    method: Method = "auto"
    ceiling: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", check_split_fractions(self.split))
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
    (train, dev, test), origin = split_for_vectors(
        model,
        task,
        template,
        cfg.n_shots,
        cfg.split,
        cfg.split_seed,
        cfg.seed,
        extra=2,
        what="a query and a dummy query",
    )
    s = hooks.spec(model)
    layers = layers_to_try(model, cfg.layers)

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
    test_correct = layer_sweep(model, test_zs, show_progress=show_progress, **sweep_args)
    dev_acc = dev_correct.float().mean(-1)
    test_acc = test_correct.float().mean(-1)
    best = layers[int(torch.argmax(dev_acc))]  # argmax returns the first maximum: ties go to the earliest layer

    ceiling = None
    if cfg.ceiling:
        if test_icl.queries != test_zs.queries:  # both are drawn from the test split with cfg.seed
            raise RuntimeError("internal error: ICL and zero-shot test prompts hold different queries")
        # one pass over the ICL prompts gives both their states and their answers
        own, icl_logits = activations_and_logits(
            model, test_icl, "resid_post", batch_size=cfg.batch_size, show_progress=show_progress
        )
        ceiling = layer_sweep(model, test_zs, show_progress=show_progress, **{**sweep_args, "vectors": own.float()})
        ceiling = ceiling.float().mean(-1)
    else:
        icl_logits = next_token_logprobs(model, test_icl, batch_size=cfg.batch_size)
    zs_acc = top1_correct(next_token_logprobs(model, test_zs, batch_size=cfg.batch_size), test_zs)
    icl_acc = top1_correct(icl_logits, test_icl)  # argmax: logits or log-probs alike
    return TaskVectorResult(
        origin=origin,
        config=cfg,
        vectors=vectors,
        layers=tuple(layers),
        dev_accuracy=dev_acc,
        test_accuracy=test_acc,
        test_correct=test_correct,
        best_layer=int(best),
        zero_shot_accuracy=float(zs_acc.mean()),
        icl_accuracy=float(icl_acc.mean()),
        n_dev=len(dev_zs),
        n_test=len(test_zs),
        ceiling_accuracy=ceiling,
    )
