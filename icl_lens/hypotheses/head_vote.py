"""One kernel-regression head applied to any prompt batch: its vote beside the model's answer.

:func:`~icl_lens.hypotheses.kernel.kernel_regression` picks the head whose attention,
read as kernel weights over the demonstrations, best reproduces the model's answer.
Demonstration selection and format sensitivity ask whether *that* head's vote follows
the model when the demonstrations or their format change; this module gives both the
same two pieces: picking the head on a pool of pairs, and reading its vote on a batch.
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core.errors import ConfigError, TaskError
from icl_lens.core.hooks import HookedModel
from icl_lens.hypotheses.kernel import KernelRegressionConfig, demo_attention, kernel_regression, kernel_vote
from icl_lens.hypotheses.recognition import label_first_tokens, task_labels
from icl_lens.prompting.evaluation import answer_logprobs
from icl_lens.prompting.prompts import PromptBatch, Template
from icl_lens.prompting.tasks import Task


def labels_or_none(task: Task) -> tuple[str, ...] | None:
    """The task's label set, or ``None`` for an open-ended task (no vote over labels then)."""
    try:
        return task_labels(task)
    except TaskError:
        return None


def pick_kernel_head(
    model: HookedModel, pool: Task, *, template: str, n_prompts: int, seed: int, batch_size: int
) -> tuple[int, int]:
    """The head :func:`kernel_regression` picks on prompts built from ``pool`` alone."""
    n_shots = min(8, len(pool) - 1)
    if n_shots < 2:
        raise ConfigError(f"the pool of {len(pool)} pairs is too small to pick a kernel head (needs 3)")
    config = KernelRegressionConfig(
        n_shots=n_shots,
        n_prompts=max(4, n_prompts),
        seed=seed,
        template=template,
        batch_size=batch_size,
        n_permutations=1,
    )
    return kernel_regression(model, pool, config, show_progress=False).best_head


@dataclasses.dataclass(frozen=True)
class BatchAnswers:
    """What a batch of prompts gives: the model's top-1 correctness and, on a label task,
    its label-restricted answer and the kernel head's vote (label indices)."""

    correct: Bool[Tensor, " batch"]
    label_prediction: Int[Tensor, " batch"] | None
    gold: Int[Tensor, " batch"] | None
    vote: Int[Tensor, " batch"] | None
    label_share: Float[Tensor, " batch"] | None


def batch_answers(
    model: HookedModel,
    batch: PromptBatch,
    *,
    template: Template,
    labels: tuple[str, ...] | None,
    head: tuple[int, int] | None,
    batch_size: int,
) -> BatchAnswers:
    """Run ``batch`` once: first-token top-1 correctness, and with ``labels`` the
    label-restricted prediction, the gold label, the share of demonstrations carrying the
    gold label and (with ``head``) the head's attention-weighted vote."""
    if head is not None and batch.n_shots > 0:
        attention, logprobs = demo_attention(model, batch, layers=[head[0]], batch_size=batch_size)
        weights = attention[:, 0, head[1]]
    else:
        logprobs, weights = answer_logprobs(model, batch, batch_size=batch_size), None
    correct = logprobs.argmax(-1) == batch.answer_ids
    if labels is None:
        return BatchAnswers(correct, None, None, None, None)
    index = {y: i for i, y in enumerate(labels)}
    outside = sorted(({y for demos in batch.demos for _, y in demos} | set(batch.answers)) - set(labels))
    if outside:
        raise ConfigError(f"outputs {outside[:5]} are not among the labels {labels}")
    label_ids = label_first_tokens(model.tokenizer, labels, template)
    prediction = logprobs[:, label_ids].argmax(-1)
    gold = torch.tensor([index[a] for a in batch.answers], dtype=torch.long)
    demo_labels = torch.tensor([[index[y] for _, y in demos] for demos in batch.demos], dtype=torch.long)
    share = (demo_labels == gold[:, None]).float().mean(-1) if batch.n_shots else torch.zeros(len(gold))
    vote = None if weights is None else kernel_vote(weights, demo_labels, len(labels))[1]
    return BatchAnswers(correct, prediction, gold, vote, share)
