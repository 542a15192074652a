"""One kernel-regression head applied to any prompt batch: its vote beside the model's answer.

:func:`~icl_lens.hypotheses.kernel.kernel_regression` picks the head whose attention,
read as kernel weights over the demonstrations, best reproduces the model's answer.
Demonstration selection and format sensitivity ask whether *that* head's vote follows
the model when the demonstrations or their format change; this module gives both the
same two pieces: picking the head on a pool of pairs, and reading its vote on a batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core.errors import ConfigError, TaskError
from icl_lens.core.hooks import HookedModel
from icl_lens.hypotheses.kernel import KernelRegressionConfig, demo_attention, kernel_regression, kernel_vote
from icl_lens.hypotheses.labels import label_restricted_prediction, task_labels
from icl_lens.patching.metrics import top1_correct
from icl_lens.prompting.encoding import tokenizer_of
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.prompting.prompts import PromptBatch
from icl_lens.prompting.tasks import Task
from icl_lens.prompting.templates import Template


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


def label_answer_tokens(tokenizer: Any, labels: tuple[str, ...], template: Template) -> tuple[list[int], Tensor]:
    """The tokens every label starts with (usually none) and each label's first token after them.

    A tokenizer that splits digits gives every number label the same first token (the
    space before it, on SmolLM2); the labels are then told apart at the first token where
    they differ. Raises :class:`ConfigError` when two labels never differ there.
    """
    lead = template.output_lead
    encoded = [list(tokenizer.encode(lead + y, add_special_tokens=False)) for y in labels]
    n = 0
    while all(len(e) > n + 1 for e in encoded) and len({e[n] for e in encoded}) == 1:
        n += 1
    ids = [e[n] if len(e) > n else -1 for e in encoded]
    if len(set(ids)) != len(ids) or -1 in ids:
        raise ConfigError(
            f"labels {labels} cannot be told apart by one token after {lead!r}; give labels whose "
            "tokenizations differ (e.g. other words or symbols)."
        )
    return encoded[0][:n], torch.tensor(ids, dtype=torch.long)


def force_prefix(batch: PromptBatch, prefix: list[int], text: str) -> PromptBatch:
    """``batch`` with ``prefix`` appended to every prompt (teacher forcing); left padding only."""
    if batch.padding_side != "left":
        raise ConfigError("a shared label prefix can only be appended to left-padded prompts")
    n = len(prefix)
    extra = torch.tensor(prefix, dtype=torch.long).expand(len(batch), n)
    return dataclasses.replace(
        batch,
        tokens=torch.cat([batch.tokens, extra], 1),
        attention_mask=torch.cat([batch.attention_mask, torch.ones_like(extra)], 1),
        last_pos=batch.last_pos + n,
        texts=tuple(t + text for t in batch.texts),
    )


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
    gold label and (with ``head``) the head's attention-weighted vote.

    When every label starts with the same tokens (see :func:`label_answer_tokens`), those
    are appended to the prompts and every prediction is read at the first token where the
    labels differ: top-1 correctness then means that token, given the shared start.
    """
    label_ids = None
    index = {y: i for i, y in enumerate(labels or ())}
    if labels is not None:
        outside = sorted(({y for demos in batch.demos for _, y in demos} | set(batch.answers)) - set(labels))
        if outside:
            raise ConfigError(f"outputs {outside[:5]} are not among the labels {labels}")
        tokenizer = tokenizer_of(model)
        prefix, label_ids = label_answer_tokens(tokenizer, labels, template)
        if prefix:
            batch = force_prefix(batch, prefix, tokenizer.decode(prefix))
            batch = dataclasses.replace(batch, answer_ids=label_ids[[index[a] for a in batch.answers]])
    if head is not None and batch.n_shots > 0:
        attention, logprobs = demo_attention(model, batch, layers=[head[0]], batch_size=batch_size, show_progress=False)
        weights = attention[:, 0, head[1]]
    else:
        logprobs, weights = next_token_logprobs(model, batch, batch_size=batch_size), None
    correct = top1_correct(logprobs, batch).bool()
    if labels is None:
        return BatchAnswers(correct, None, None, None, None)
    assert label_ids is not None
    prediction = label_restricted_prediction(logprobs, label_ids)
    gold = torch.tensor([index[a] for a in batch.answers], dtype=torch.long)
    demo_labels = torch.tensor([[index[y] for _, y in demos] for demos in batch.demos], dtype=torch.long)
    share = (demo_labels == gold[:, None]).float().mean(-1) if batch.n_shots else torch.zeros(len(gold))
    vote = None if weights is None else kernel_vote(weights, demo_labels, len(labels))[1]
    return BatchAnswers(correct, prediction, gold, vote, share)
