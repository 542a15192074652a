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
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.results import Config, Result
from icl_lens.prompting.evaluation import answer_logprobs
from icl_lens.prompting.prompts import build_prompts, get_template
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.vectors.common import (
    DEFAULT_SPLIT,
    FromOrigin,
    VectorOrigin,
    check_split_fractions,
    n_queries,
    origin_for,
    split_task,
    top1_correct,
)


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
    method: str = "auto"
    ceiling: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", check_split_fractions(self.split))
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(l) for l in self.layers))
            if not self.layers:
                raise ConfigError("layers must name at least one layer (or be None for all)")
        get_template(self.template)
        if self.n_shots < 1 or self.n_dummy < 1:
            raise ConfigError("n_shots and n_dummy must be >= 1")
        if min(self.n_prompts, self.n_dev, self.n_test, self.batch_size) < 1:
            raise ConfigError("n_prompts, n_dev, n_test and batch_size must be >= 1")
        if self.method not in ("auto", "fast", "plain"):
            raise ConfigError(f"method must be 'auto', 'fast' or 'plain', got {self.method!r}")


@dataclasses.dataclass(frozen=True)
class TaskVectorResult(FromOrigin, Result):
    """Task vectors at every layer, and how well each one does on zero-shot queries.

    Attributes:
        vectors: θ_L for every layer ``[n_layers, d_model]`` (rows of unswept layers are
            still the extracted vectors).
        layers: the layers tried.
        dev_accuracy, test_accuracy: zero-shot top-1 accuracy with θ_L patched in, per tried layer.
        best_layer: the layer with the highest dev accuracy (ties: the earliest).
        zero_shot_accuracy, icl_accuracy: on the same test queries, without any vector and
            with ``n_shots`` demonstrations from the train split.
        test_correct: per tried layer and test query, whether the patched run is right.
        ceiling_accuracy: per tried layer, zero-shot test accuracy with each query's own
            ICL state patched in (see ``TaskVectorConfig.ceiling``; ``None`` if not run).
            Where even this stays near zero, the model has not yet moved the task into the
            last token at that layer: later layers still read the demonstrations
            themselves, and no vector put in there can stand in for them.
    """

    title = "Task vector"

    origin: VectorOrigin
    config: TaskVectorConfig
    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    dev_accuracy: Float[Tensor, " layers"]
    test_accuracy: Float[Tensor, " layers"]
    test_correct: Bool[Tensor, "layers test"]
    best_layer: int
    zero_shot_accuracy: float
    icl_accuracy: float
    n_dev: int
    n_test: int
    hook: str = "resid_post"
    ceiling_accuracy: Float[Tensor, " layers"] | None = None

    kind = "task"

    @property
    def layer(self) -> int:
        """The layer whose vector is used by default (best on dev)."""
        return self.best_layer

    @property
    def vector(self) -> Float[Tensor, " d_model"]:
        """θ at the best layer."""
        return self.vectors[self.best_layer]

    @property
    def test_accuracy_at_best(self) -> float:
        return float(self.test_accuracy[self.layers.index(self.best_layer)])

    @property
    def recovered(self) -> float:
        """Test accuracy with the task vector as a fraction of ICL accuracy."""
        return self.test_accuracy_at_best / self.icl_accuracy if self.icl_accuracy > 0 else float("nan")

    def to_dataframe(self) -> Any:
        import pandas as pd

        cols: dict[str, Any] = dict(
            layer=list(self.layers),
            dev_accuracy=self.dev_accuracy.tolist(),
            test_accuracy=self.test_accuracy.tolist(),
        )
        if self.ceiling_accuracy is not None:
            cols["ceiling_accuracy"] = self.ceiling_accuracy.tolist()
        cols["best"] = [l == self.best_layer for l in self.layers]
        return pd.DataFrame(cols)

    def summary(self) -> str:
        return (
            f"{self.origin.model} / {self.origin.task}: best layer {self.best_layer} (dev"
            + (", where no layer scored above 0%: the choice is arbitrary" if float(self.dev_accuracy.max()) == 0 else "")
            + f"), test accuracy "
            f"{self.test_accuracy_at_best:.0%} with the task vector vs {self.icl_accuracy:.0%} ICL "
            f"({self.origin.n_shots} shots) and {self.zero_shot_accuracy:.0%} zero-shot; "
            f"{self.n_test} test queries"
            + (
                ""
                if self.ceiling_accuracy is None
                else f"; each query's own ICL state, patched in, reaches {float(self.ceiling_accuracy.max()):.0%} "
                f"at best (layer {self.layers[int(torch.argmax(self.ceiling_accuracy))]})"
            )
        )

    def _plot(self, ax: Any) -> None:
        ax.plot(self.layers, self.test_accuracy.tolist(), marker="o", label="test: zero-shot + task vector")
        ax.plot(self.layers, self.dev_accuracy.tolist(), marker=".", ls=":", label="dev (chooses the layer)")
        if self.ceiling_accuracy is not None:
            ax.plot(
                self.layers,
                self.ceiling_accuracy.tolist(),
                marker="s",
                ms=3,
                color="purple",
                label="test: each query's own ICL state (ceiling)",
            )
        ax.axhline(self.icl_accuracy, color="green", ls="--", label=f"ICL ({self.origin.n_shots} shots)")
        ax.axhline(self.zero_shot_accuracy, color="grey", ls="--", label="zero-shot")
        ax.axvline(self.best_layer, color="black", lw=0.8)
        ax.set_xlabel("layer L (residual stream after block L replaced)")
        ax.set_ylabel("top-1 accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Task vector by layer: {self.origin.task} ({self.origin.model})")
        ax.legend(fontsize="small")


def task_vector(
    model: Any,
    task: Task | str,
    config: TaskVectorConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> TaskVectorResult:
    """Extract task vectors of ``task`` at every layer and find the layer where they work.

    Args:
        model: a TransformerBridge (or HookedTransformer) with a tokenizer.
        task: a :class:`Task`, a built-in task name or a task file path.
        config: :class:`TaskVectorConfig`; keyword ``overrides`` replace its fields.
        show_progress: progress bars (default: the global setting).
    """
    from icl_lens.patching.activations import resid_activations_and_logits
    from icl_lens.patching.steering import layer_sweep, resid_at_answer

    cfg = config or TaskVectorConfig()
    if overrides:
        cfg = cfg.replace(**overrides)
    task = load_task(task)
    template = get_template(cfg.template)
    train, dev, test = parts = split_task(task, cfg.split, cfg.split_seed)
    if len(train) < cfg.n_shots + 2:
        raise ConfigError(
            f"the train part of task {task.name!r} has {len(train)} pairs; {cfg.n_shots} demonstrations, a "
            "query and a dummy query need more. Lower n_shots or enlarge the train fraction (config.split)."
        )
    s = hooks.spec(model)
    layers = cfg.layers if cfg.layers is not None else tuple(range(s.n_layers))
    if any(not 0 <= l < s.n_layers for l in layers):
        raise ConfigError(f"layers {layers} out of range for a {s.n_layers}-layer model")
    origin = origin_for(model, task, template, cfg.n_shots, cfg.split, cfg.split_seed, cfg.seed, parts)

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
        own, icl_logits = resid_activations_and_logits(
            model, test_icl, hook="resid_post", batch_size=cfg.batch_size, show_progress=show_progress
        )
        ceiling = layer_sweep(model, test_zs, show_progress=show_progress, **{**sweep_args, "vectors": own.float()})
        ceiling = ceiling.float().mean(-1)
    else:
        icl_logits = answer_logprobs(model, test_icl, batch_size=cfg.batch_size)
    zs_acc = top1_correct(answer_logprobs(model, test_zs, batch_size=cfg.batch_size), test_zs.answer_ids)
    icl_acc = top1_correct(icl_logits, test_icl.answer_ids)  # argmax: logits or log-probs alike
    return TaskVectorResult(
        origin=origin,
        config=cfg,
        vectors=vectors,
        layers=tuple(layers),
        dev_accuracy=dev_acc,
        test_accuracy=test_acc,
        test_correct=test_correct,
        best_layer=int(best),
        zero_shot_accuracy=float(zs_acc.float().mean()),
        icl_accuracy=float(icl_acc.float().mean()),
        n_dev=len(dev_zs),
        n_test=len(test_zs),
        ceiling_accuracy=ceiling,
    )
