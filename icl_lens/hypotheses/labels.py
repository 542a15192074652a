"""Label sets of classification-style tasks, and predictions restricted to them.

Kernel regression, recognition vs learning and ICL vs fine-tuning all read a prediction
as "the label whose first token is most likely at the answer position", so they share
one definition of a task's labels, of a label's first token, and of that prediction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core.errors import ConfigError, TaskError
from icl_lens.patching.metrics import top1_correct
from icl_lens.prompting.prompts import PromptBatch
from icl_lens.prompting.tasks import Task
from icl_lens.prompting.templates import Template


def task_labels(task: Task) -> tuple[str, ...]:
    """The label set of a classification-style task (its ``labels``, else few distinct outputs)."""
    if task.labels:
        return tuple(task.labels)
    distinct = sorted(set(task.outputs))
    if 2 <= len(distinct) <= 20 and len(distinct) <= len(task) // 4:
        return tuple(distinct)
    raise TaskError(
        f"task {task.name!r} has no small label set ({len(distinct)} distinct outputs in {len(task)} pairs). "
        "This analysis needs a classification-style task such as number_parity, animal_object, word_pos or "
        "country_continent, or a Task(labels=...) of your own."
    )


def first_token(tokenizer: Any, text: str) -> int:
    """The first token id of ``text`` (no special tokens)."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise TaskError(f"label {text!r} tokenizes to nothing")
    return int(ids[0])


def label_first_tokens(tokenizer: Any, labels: Sequence[str], template: Template) -> Int[Tensor, " labels"]:
    """First token of each label as it appears after the template's output lead.

    Raises :class:`ConfigError` if two labels share a first token: a label-restricted
    prediction could not tell them apart.
    """
    ids = [first_token(tokenizer, template.output_lead + y) for y in labels]
    if len(set(ids)) != len(ids):
        clash = [(y, tokenizer.decode([i])) for y, i in zip(labels, ids, strict=True)]
        raise ConfigError(
            f"labels share a first token ({clash}); label-restricted predictions need distinct first "
            "tokens. Rename the labels (e.g. 'N. America') or use another template."
        )
    return torch.tensor(ids, dtype=torch.long)


def label_restricted_prediction(
    logprobs: Float[Tensor, "batch d_vocab"], label_ids: Int[Tensor, " labels"]
) -> Int[Tensor, " batch"]:
    """Index (into ``label_ids``) of the label whose first token is the most likely; ties to the first."""
    return logprobs[:, label_ids].argmax(-1)


def label_restricted_correct(
    logprobs: Float[Tensor, "batch d_vocab"], batch: PromptBatch, label_ids: Int[Tensor, " labels"] | None
) -> Bool[Tensor, " batch"]:
    """Whether the prediction is the answer's first token: the best of ``label_ids`` if given, else the top-1 token."""
    if label_ids is None:
        return top1_correct(logprobs, batch).bool()
    return label_ids[label_restricted_prediction(logprobs, label_ids)] == batch.answer_ids
