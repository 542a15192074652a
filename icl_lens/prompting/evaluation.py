"""ICL accuracy by shot count: the first measurement of every ICL study."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core import forward, hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config, Result
from icl_lens.prompting.prompts import PromptBatch, build_prompts, get_template
from icl_lens.prompting.tasks import Task, load_task


def answer_logprobs(
    model: Any,
    batch: PromptBatch,
    *,
    batch_size: int | None = 16,
    fwd_hooks: hooks.FwdHooks = (),
    show_progress: bool | None = False,
) -> Float[Tensor, "batch d_vocab"]:
    """Log-probabilities of the next token at each prompt's answer position.

    Runs the batch in chunks of ``batch_size`` under ``torch.no_grad()``; the result does
    not depend on ``batch_size`` beyond float rounding (attention masks handle padding).
    """
    out = []
    chunks = list(batch.batches(batch_size))
    with torch.no_grad():
        for sub in progress(chunks, desc="forward", enabled=show_progress):
            last = forward.answer_logits(model, sub.tokens, sub.attention_mask, sub.last_pos, fwd_hooks)
            out.append(torch.log_softmax(last.float(), dim=-1).cpu())
    return torch.cat(out)


@dataclasses.dataclass(frozen=True)
class IclEvalConfig(Config):
    """Settings of :func:`evaluate_icl`."""

    shots: tuple[int, ...] = (0, 1, 2, 5, 10)
    n_prompts: int = 50
    seed: int = 0
    template: str = "hendel"
    batch_size: int = 16

    def __post_init__(self) -> None:
        object.__setattr__(self, "shots", tuple(int(s) for s in self.shots))
        if not self.shots or any(s < 0 for s in self.shots):
            raise ConfigError(f"shots must be non-negative integers, got {self.shots}")
        if self.n_prompts < 1 or self.batch_size < 1:
            raise ConfigError("n_prompts and batch_size must be >= 1")
        get_template(self.template)


@dataclasses.dataclass(frozen=True)
class IclAccuracyResult(Result):
    """First-token top-1 accuracy by task and shot count.

    ``correct[t, s, i]`` says whether prompt ``i`` of task ``t`` with ``shots[s]``
    demonstrations put the answer's first token at rank 1. The same queries (and nested
    demonstrations) are used at every shot count.
    """

    title = "ICL accuracy by shot count"

    model: str
    tasks: tuple[str, ...]
    shots: tuple[int, ...]
    accuracy: Float[Tensor, "tasks shots"]
    correct: Bool[Tensor, "tasks shots prompts"]
    answer_logprob: Float[Tensor, "tasks shots prompts"]
    config: IclEvalConfig

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for t, task in enumerate(self.tasks):
            for s, k in enumerate(self.shots):
                rows.append(
                    dict(
                        task=task,
                        shots=k,
                        accuracy=float(self.accuracy[t, s]),
                        mean_answer_logprob=float(self.answer_logprob[t, s].mean()),
                        n_prompts=int(self.correct.shape[-1]),
                    )
                )
        return pd.DataFrame(rows)

    def table(self) -> Any:
        """Accuracy as a task x shots table."""
        df = self.to_dataframe()
        return df.pivot(index="task", columns="shots", values="accuracy").loc[list(self.tasks)]

    def summary(self) -> str:
        s0, s1 = self.shots[0], self.shots[-1]
        mean0 = float(self.accuracy[:, 0].mean())
        mean1 = float(self.accuracy[:, -1].mean())
        return (
            f"{self.model}: mean accuracy over {len(self.tasks)} task(s) {mean0:.1%} at {s0} shots, "
            f"{mean1:.1%} at {s1} shots ({self.correct.shape[-1]} prompts each)"
        )

    def _plot(self, ax: Any) -> None:
        x = list(range(len(self.shots)))
        for t, task in enumerate(self.tasks):
            ax.plot(x, self.accuracy[t].tolist(), marker="o", label=task)
        ax.set_xticks(x, [str(s) for s in self.shots])
        ax.set_xlabel("demonstrations (shots)")
        ax.set_ylabel("first-token top-1 accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"ICL accuracy: {self.model}")
        if len(self.tasks) <= 16:
            ax.legend(fontsize="small", ncol=2 if len(self.tasks) > 6 else 1)


def evaluate_icl(
    model: Any,
    task: Task | str | Sequence[Task | str],
    shots: Sequence[int] | None = None,
    config: IclEvalConfig | None = None,
    *,
    show_progress: bool | None = None,
) -> IclAccuracyResult:
    """First-token top-1 accuracy of ``model`` on ``task`` (or several) by shot count.

    Args:
        model: a TransformerBridge / HookedTransformer with a tokenizer.
        task: a task, a task name or file path, or a list of them.
        shots: shot counts (overrides ``config.shots``).
        config: prompts, seed, template and batch size (:class:`IclEvalConfig`).
    """
    cfg = config or IclEvalConfig()
    if shots is not None:
        cfg = cfg.replace(shots=tuple(shots))
    tasks = [load_task(t) for t in (task if isinstance(task, list | tuple) else [task])]
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names must be unique, got {names}; rename with dataclasses.replace(task, name=...)")
    correct = torch.zeros(len(tasks), len(cfg.shots), cfg.n_prompts, dtype=torch.bool)
    logprob = torch.zeros(len(tasks), len(cfg.shots), cfg.n_prompts)
    jobs = [(t, s) for t in range(len(tasks)) for s in range(len(cfg.shots))]
    for t, s in progress(jobs, desc="evaluate_icl", enabled=show_progress):
        batch = build_prompts(model, tasks[t], cfg.shots[s], cfg.n_prompts, cfg.seed, cfg.template)
        lp = answer_logprobs(model, batch, batch_size=cfg.batch_size)
        correct[t, s] = lp.argmax(-1) == batch.answer_ids
        logprob[t, s] = lp.gather(1, batch.answer_ids[:, None]).squeeze(1)
    return IclAccuracyResult(
        model=model_name(model),
        tasks=tuple(t.name for t in tasks),
        shots=cfg.shots,
        accuracy=correct.float().mean(-1),
        correct=correct,
        answer_logprob=logprob,
        config=cfg,
    )
