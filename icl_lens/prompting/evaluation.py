"""ICL accuracy by shot count: the first measurement of every ICL study."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import forward, hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.prompting.evaluation_result import IclAccuracyResult
from icl_lens.prompting.prompts import PromptBatch, build_prompts
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.prompting.templates import get_template

G = TypeVar("G")


def next_token_logprobs(
    model: HookedModel,
    batch: PromptBatch,
    *,
    batch_size: int | None = 16,
    fwd_hooks: hooks.FwdHooks = (),
    show_progress: bool | None = False,
) -> Float[Tensor, "batch d_vocab"]:
    """Log-probabilities of every next token at each prompt's answer position.

    The whole distribution, one row per prompt (the patching metric
    :func:`~icl_lens.patching.metrics.answer_logprob` is the answer's entry of it). Runs
    the batch in chunks of ``batch_size`` under ``torch.no_grad()``; the result does not
    depend on ``batch_size`` beyond float rounding (attention masks handle padding).
    """
    out = []
    chunks = list(batch.batches(batch_size))
    with torch.no_grad():
        for sub in progress(chunks, desc="forward", enabled=show_progress):
            last = forward.answer_logits(model, sub.tokens, sub.attention_mask, sub.last_pos, fwd_hooks)
            out.append(torch.log_softmax(last.float(), dim=-1).cpu())
    return torch.cat(out)


def accuracy_by_shots(
    model: HookedModel,
    rows: Sequence[G],
    shots: Sequence[int],
    prompts: Callable[[G, int], PromptBatch],
    *,
    judge: Callable[[G, Tensor, PromptBatch], Bool[Tensor, " prompts"]] | None = None,
    batch_size: int | None = 16,
    desc: str = "accuracy by shots",
    show_progress: bool | None = None,
) -> tuple[Bool[Tensor, "rows shots prompts"], Float[Tensor, "rows shots prompts"]]:
    """Whether each prompt is answered right, and the answer's log-probability, per row and shot count.

    ``prompts(row, k)`` builds the prompts of one cell (the same number in every cell);
    ``judge(row, logprobs, batch)`` says which are right (default: the answer's first
    token is the top-1 next token).
    """
    cells = [(r, s) for r in range(len(rows)) for s in range(len(shots))]
    correct: Tensor | None = None
    logprob: Tensor | None = None
    for r, s in progress(cells, desc=desc, enabled=show_progress):
        batch = prompts(rows[r], shots[s])
        lp = next_token_logprobs(model, batch, batch_size=batch_size)
        if correct is None or logprob is None:
            correct = torch.zeros(len(rows), len(shots), len(batch), dtype=torch.bool)
            logprob = torch.zeros(len(rows), len(shots), len(batch))
        correct[r, s] = lp.argmax(-1) == batch.answer_ids if judge is None else judge(rows[r], lp, batch)
        logprob[r, s] = lp.gather(1, batch.answer_ids[:, None]).squeeze(1)
    if correct is None or logprob is None:
        raise ConfigError("accuracy_by_shots needs at least one row and one shot count")
    return correct, logprob


def check_shots(shots: Sequence[int]) -> tuple[int, ...]:
    """Shot counts of a sweep as a tuple: at least one, none negative."""
    counts = tuple(int(s) for s in shots)
    if not counts or any(s < 0 for s in counts):
        raise ConfigError(f"shots must be non-negative integers, got {counts}")
    return counts


@dataclasses.dataclass(frozen=True)
class IclEvalConfig(Config):
    """Settings of :func:`evaluate_icl`."""

    shots: tuple[int, ...] = (0, 1, 2, 5, 10)
    n_prompts: int = 50
    seed: int = 0
    template: str = "hendel"
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", check_shots(self.shots))
        if self.n_prompts < 1 or self.batch_size < 1:
            raise ConfigError("n_prompts and batch_size must be >= 1")
        get_template(self.template)


def evaluate_icl(
    model: HookedModel,
    task: Task | str | Sequence[Task | str],
    config: IclEvalConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> IclAccuracyResult:
    """First-token top-1 accuracy of ``model`` on ``task`` (or several) by shot count.

    Args:
        model: a TransformerBridge (any HookedModel) with a tokenizer.
        task: a task, a task name or file path, or a list of them.
        config: prompts, seed, template and batch size (:class:`IclEvalConfig`); keyword
            ``overrides`` replace its fields (``evaluate_icl(model, task, shots=(0, 5))``).
        show_progress: progress bars (default: the global setting).
    """
    cfg = IclEvalConfig.resolve(config, overrides)
    tasks = [load_task(t) for t in (task if isinstance(task, list | tuple) else [task])]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}; rename with dataclasses.replace(task, name=...)")

    def prompts(t: Task, k: int) -> PromptBatch:
        return build_prompts(model, t, k, cfg.n_prompts, cfg.seed, cfg.template)

    correct, logprob = accuracy_by_shots(
        model, tasks, cfg.shots, prompts, batch_size=cfg.batch_size, desc="evaluate_icl", show_progress=show_progress
    )
    return IclAccuracyResult(
        model=model_name(model),
        tasks=tuple(names),
        shots=cfg.shots,
        accuracy=correct.float().mean(-1),
        correct=correct,
        answer_logprob=logprob,
        config=cfg,
    )
