"""Function vectors (Todd et al. 2023, "Function Vectors in Large Language Models").

A few attention heads carry a compact representation of the task demonstrated in an ICL
prompt. The recipe, for a task ``t``:

1. Run clean ICL prompts (10 shots, ``Q: x\\nA: y\\n\\n``) and keep those whose answer the
   model gets right. The task-conditioned mean activation of head ``(l, h)`` is
   ``ā_lh = mean_p z_lh(p)`` at the last position (``hook_z``, before ``W_O``).
2. Average indirect effect: patch ``ā_lh`` alone into shuffled-label prompts (which carry
   the format but not the task) at the last position and measure the change in the
   probability of the correct answer's first token,
   ``AIE(l, h) = mean_p [ P(y_p | patched) - P(y_p | shuffled) ]``.
3. The function vector is the sum of the outputs of the top-k heads by AIE,
   ``v = Σ_{(l,h) ∈ top-k} ā_lh · W_O[l, h]``.

The output bias ``b_O`` is left out: it belongs to the attention layer, not to any head,
and every prompt receives it whether or not the vector is added, so it carries nothing
about the task (SmolLM2 has none; on models with one, adding it k times would be wrong).

Prompts: demonstrations and queries for steps 1-2 come from the train part of
``task.split(config.split)``; the dev and test parts are left for choosing the layer and
measuring accuracy (:func:`icl_lens.evaluate_implant`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.patching.activations import activations_and_logits
from icl_lens.patching.metrics import top1_correct
from icl_lens.patching.options import Method, MetricName
from icl_lens.patching.sweeps import head_sweep
from icl_lens.prompting.prompts import PromptBatch, build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import get_template
from icl_lens.vectors.common import DEFAULT_SPLIT, check_split_fractions, split_for_vectors
from icl_lens.vectors.function_vector_result import FunctionVectorResult, rank_heads


@dataclasses.dataclass(frozen=True)
class FunctionVectorConfig(Config):
    """Settings of :func:`function_vector`; the defaults follow Todd et al. (2023).

    Attributes:
        n_shots: demonstrations per prompt.
        template: prompt format (``"todd"`` is ``Q: x\\nA: y\\n\\n``).
        n_mean_prompts: correctly answered clean prompts averaged into ``ā_lh`` (at most).
        max_candidates: clean prompts run at most to find them (in chunks; the search stops
            as soon as ``n_mean_prompts`` are found). The default, equal to
            ``n_mean_prompts``, runs 100 prompts and averages those answered correctly, as
            Todd et al.'s 100 trials over correctly answered queries do; raise it to insist
            on 100 correct prompts when ICL accuracy is low (it costs one forward each).
        filter_correct: keep only prompts the model answers correctly (Todd et al.).
        n_aie_prompts: shuffled-label prompts for the average indirect effect.
        metric: what the AIE measures (``"prob"``: probability of the answer's first token).
        top_k: heads summed into the vector; or give ``top_fraction`` of all heads instead
            (a 30-layer x 9-head model is not GPT-J's 28 x 16).
        split: fractions of the task for (train, dev, test); only train is used here.
        split_seed, seed: the split, and the prompts (queries, demonstrations, shuffles).
        batch_size: prompts per forward pass (results do not depend on it).
        method: the patching engine's path (``"auto"``, ``"fast"``, ``"plain"``).
    """

    n_shots: int = 10
    template: str = "todd"
    n_mean_prompts: int = 100
    max_candidates: int = 100
    filter_correct: bool = True
    n_aie_prompts: int = 25
    metric: MetricName = "prob"
    top_k: int | None = 10
    top_fraction: float | None = None
    split: tuple[float, ...] = DEFAULT_SPLIT
    split_seed: int = 0
    seed: int = 0
    batch_size: int = 25
    method: Method = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "split", check_split_fractions(self.split))
        get_template(self.template)
        if self.n_shots < 1:
            raise ConfigError(f"n_shots must be >= 1 (function vectors come from ICL prompts), got {self.n_shots}")
        if self.n_mean_prompts < 1 or self.n_aie_prompts < 1 or self.batch_size < 1:
            raise ConfigError("n_mean_prompts, n_aie_prompts and batch_size must be >= 1")
        if self.max_candidates < self.n_mean_prompts:
            raise ConfigError(
                f"max_candidates ({self.max_candidates}) must be >= n_mean_prompts ({self.n_mean_prompts})"
            )
        if (self.top_k is None) == (self.top_fraction is None):
            raise ConfigError("give exactly one of top_k and top_fraction (e.g. top_k=10 or top_fraction=0.04)")
        if self.top_k is not None and self.top_k < 1:
            raise ConfigError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_fraction is not None and not 0 < self.top_fraction <= 1:
            raise ConfigError(f"top_fraction must be in (0, 1], got {self.top_fraction}")
        check_choice(self.method, Method, "method")
        check_choice(self.metric, MetricName, "metric")

    def n_heads_for(self, n_total_heads: int) -> int:
        """How many heads the vector sums, for a model with ``n_total_heads`` heads."""
        if self.top_k is not None:
            return min(self.top_k, n_total_heads)
        assert self.top_fraction is not None
        return max(1, min(n_total_heads, math.ceil(self.top_fraction * n_total_heads - 1e-9)))


def _chunk_z(model: HookedModel, sub: PromptBatch) -> tuple[Tensor, Bool[Tensor, " batch"]]:
    """Last-position ``hook_z`` of every head, and whether the answer is the top-1 token."""
    z, logits = activations_and_logits(model, sub, "z", positions="last", batch_size=None, show_progress=False)
    return z.float().cpu(), top1_correct(logits, sub).bool().cpu()


def mean_activations(
    model: HookedModel,
    candidates: PromptBatch,
    n_mean: int,
    *,
    filter_correct: bool = True,
    batch_size: int | None = None,
    show_progress: bool | None = False,
) -> tuple[Float[Tensor, "n_layers n_heads d_head"], dict[str, Any]]:
    """Task-conditioned mean ``hook_z`` over the first ``n_mean`` (correctly answered) prompts.

    Candidates are run chunk by chunk and the search stops once ``n_mean`` are found; which
    prompts are averaged depends only on their order, not on ``batch_size``.
    """
    zs: list[Tensor] = []
    oks: list[Tensor] = []
    found = 0
    chunks = list(candidates.batches(batch_size))
    with torch.no_grad():
        for sub in progress(chunks, desc="mean activations", enabled=show_progress):
            z, ok = _chunk_z(model, sub)
            zs.append(z)
            oks.append(ok)
            found += int(ok.sum()) if filter_correct else len(ok)
            if found >= n_mean:
                break
    z_all, ok_all = torch.cat(zs), torch.cat(oks)
    filtered = filter_correct
    if filter_correct and not bool(ok_all.any()):
        warnings.warn(
            f"the model answered none of {len(ok_all)} clean ICL prompts correctly; the mean activations "
            "average unfiltered prompts instead (the function vector of a model that cannot do the task "
            "in context is unlikely to mean much).",
            stacklevel=3,
        )
        filtered = False
    idx = ok_all.nonzero().flatten() if filtered else torch.arange(len(ok_all))
    idx = idx[:n_mean]
    info = dict(
        n_candidates=len(ok_all),
        n_correct=int(ok_all.sum()),
        n_mean_used=len(idx),
        filtered=filtered,
        extraction_accuracy=float(ok_all.float().mean()),
    )
    return z_all[idx].mean(0), info


def head_outputs_of(
    model: HookedModel, mean_z: Float[Tensor, "n_layers n_heads d_head"]
) -> Float[Tensor, "n_layers n_heads d_model"]:
    """``mean_z[l, h] @ W_O[l, h]`` for every head: what each head writes to the residual stream."""
    s = hooks.spec(model)
    out = torch.empty(s.n_layers, s.n_heads, s.d_model)
    for l in range(s.n_layers):
        w = hooks.W_O(model, l).float().cpu()
        out[l] = torch.einsum("hd,hdm->hm", mean_z[l].float(), w)
    return out


def function_vector(
    model: HookedModel,
    task: Task | str,
    config: FunctionVectorConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> FunctionVectorResult:
    """Extract the function vector of ``task`` from ``model`` (Todd et al. 2023).

    Args:
        model: a TransformerBridge (any HookedModel) with a tokenizer.
        task: a :class:`Task`, a built-in task name or a task file path.
        config: :class:`FunctionVectorConfig`; keyword ``overrides`` replace its fields
            (``function_vector(model, "antonym", top_k=5)``).
        show_progress: progress bars (default: the global setting).

    Returns:
        A :class:`FunctionVectorResult` (AIE heatmap, top heads, the vector, metadata);
        evaluate it with :func:`icl_lens.evaluate_implant`.
    """
    cfg = FunctionVectorConfig.resolve(config, overrides)
    task = load_task(task)
    template = get_template(cfg.template)
    (train, _, _), origin = split_for_vectors(
        model, task, template, cfg.n_shots, cfg.split, cfg.split_seed, cfg.seed, extra=1, what="a query"
    )
    s = hooks.spec(model)

    candidates = build_prompts(model, train, cfg.n_shots, cfg.max_candidates, cfg.seed, template, kind="clean")
    mean_z, info = mean_activations(
        model,
        candidates,
        cfg.n_mean_prompts,
        filter_correct=cfg.filter_correct,
        batch_size=cfg.batch_size,
        show_progress=show_progress,
    )

    # Another seed than the mean prompts, so the AIE is measured on other queries/demonstrations.
    shuffled = build_prompts(model, train, cfg.n_shots, cfg.n_aie_prompts, cfg.seed + 1, template, kind="shuffled")
    sweep = head_sweep(
        model,
        shuffled,
        mean_z.to(hooks.device_of(model)),
        metric=cfg.metric,
        positions="last",
        batch_size=cfg.batch_size,
        method=cfg.method,
        show_progress=show_progress,
    )
    per_prompt = (sweep.patched.float().cpu() - sweep.baseline.float().cpu()[None, None, :]).contiguous()
    aie = per_prompt.mean(-1)

    outputs = head_outputs_of(model, mean_z)
    ranking = rank_heads(aie)
    chosen = ranking[: cfg.n_heads_for(s.n_total_heads)]
    vector = torch.stack([outputs[l, h] for l, h in chosen]).sum(0)
    return FunctionVectorResult(
        origin=origin,
        config=cfg,
        aie=aie,
        aie_per_prompt=per_prompt,
        baseline=sweep.baseline.float().cpu(),
        mean_z=mean_z.float().cpu(),
        head_outputs=outputs,
        heads=tuple(chosen),
        vector=vector,
        default_layer=s.n_layers // 3,
        sweep_method=str(getattr(sweep, "method", cfg.method)),
        **info,
    )
