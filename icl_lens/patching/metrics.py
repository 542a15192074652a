"""Patching metrics: one number per prompt from the logits at its answer position.

A metric is any callable ``metric(logits, batch) -> values`` where ``logits`` is
``[batch, d_vocab]`` (the logits at each prompt's ``last_pos``), ``batch`` is the
:class:`~icl_lens.prompting.prompts.PromptBatch` of those prompts, and ``values`` is ``[batch]``.

Sweeps call a metric on chunks of prompts. A metric that carries per-prompt data of its
own (``logit_diff(wrong_ids)``, ``kl_to(reference)``) is a :class:`PromptMetric`, whose
:meth:`~PromptMetric.select` gives the metric for a subset of the prompts. A plain
user-defined callable must read per-prompt data from ``batch`` (``batch.answer_ids``,
``batch.answers``, ...), never from a closure over the whole batch.

The answer is always the *evaluated* batch's answer: when a sweep evaluates the source
run (the ``reference`` of a result), it passes the target batch, so every number in a
result is measured against the same answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.options import check_choice, choices
from icl_lens.patching.options import MetricName
from icl_lens.prompting.prompts import PromptBatch

Metric = Callable[[Tensor, PromptBatch], Tensor]


def _answer_ids(logits: Tensor, batch: PromptBatch) -> Tensor:
    return batch.answer_ids.to(logits.device).long()[:, None]


def answer_prob(logits: Float[Tensor, "batch d_vocab"], batch: PromptBatch) -> Float[Tensor, " batch"]:
    """Probability of the answer's first token."""
    return torch.softmax(logits.float(), dim=-1).gather(1, _answer_ids(logits, batch)).squeeze(1)


def answer_logprob(logits: Float[Tensor, "batch d_vocab"], batch: PromptBatch) -> Float[Tensor, " batch"]:
    """Log-probability of the answer's first token."""
    return torch.log_softmax(logits.float(), dim=-1).gather(1, _answer_ids(logits, batch)).squeeze(1)


def top1_correct(logits: Float[Tensor, "batch d_vocab"], batch: PromptBatch) -> Float[Tensor, " batch"]:
    """1.0 where the answer's first token has the highest logit, else 0.0."""
    return (logits.argmax(dim=-1) == batch.answer_ids.to(logits.device)).float()


class PromptMetric:
    """A named metric that holds per-prompt data (indexed like the sweep's target batch)."""

    def __init__(self, name: str, fn: Callable[[Tensor, PromptBatch, Tensor], Tensor], data: Tensor) -> None:
        self.name = name
        self._fn = fn
        self.data = data

    def __call__(self, logits: Float[Tensor, "batch d_vocab"], batch: PromptBatch) -> Float[Tensor, " batch"]:
        if self.data.shape[0] != logits.shape[0]:
            raise ConfigError(
                f"metric {self.name!r} holds data for {self.data.shape[0]} prompts but was called on "
                f"{logits.shape[0]}; build it for the batch you evaluate (or use .select(rows))."
            )
        return self._fn(logits, batch, self.data.to(logits.device))

    def select(self, rows: Int[Tensor, " rows"]) -> PromptMetric:
        """The same metric for a subset of the prompts."""
        return PromptMetric(self.name, self._fn, self.data[rows.to(self.data.device)])

    def __repr__(self) -> str:
        return f"PromptMetric({self.name!r}, {self.data.shape[0]} prompts)"


def _logit_diff(logits: Tensor, batch: PromptBatch, wrong: Tensor) -> Tensor:
    answer = logits.float().gather(1, _answer_ids(logits, batch)).squeeze(1)
    return answer - logits.float().gather(1, wrong.long()[:, None]).squeeze(1)


def logit_diff(wrong_ids: Int[Tensor, " batch"]) -> PromptMetric:
    """Answer logit minus the logit of ``wrong_ids[i]`` (e.g. the shuffled label) per prompt."""
    wrong = torch.as_tensor(wrong_ids).long().flatten()
    return PromptMetric("logit_diff", _logit_diff, wrong)


def _kl(logits: Tensor, batch: PromptBatch, reference: Tensor) -> Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    ref = reference.float()
    return (ref.exp() * (ref - logp)).sum(-1)


def kl_to(reference_logprobs: Float[Tensor, "batch d_vocab"]) -> PromptMetric:
    """KL(reference || patched) per prompt, from reference log-probabilities."""
    ref = torch.log_softmax(torch.as_tensor(reference_logprobs).float(), dim=-1)
    return PromptMetric("kl", _kl, ref)


_SIMPLE: dict[str, Metric] = {"prob": answer_prob, "logprob": answer_logprob, "accuracy": top1_correct}


def metric_name(metric: Any) -> str:
    """A short name for a metric (for result metadata)."""
    if isinstance(metric, str):
        return metric
    for key, fn in _SIMPLE.items():
        if metric is fn:
            return key
    return str(getattr(metric, "name", None) or getattr(metric, "__name__", None) or type(metric).__name__)


def resolve_metric(
    metric: MetricName | Metric,
    target: PromptBatch,
    source: Any = None,
    source_logprobs: Float[Tensor, "batch d_vocab"] | None = None,
) -> Metric:
    """Turn a metric name into a metric for this sweep; callables pass through.

    ``"logit_diff"`` means the target's answer minus the source batch's answer (the two
    must differ somewhere); ``"kl"`` means KL(source run || patched run), which needs
    the source run's log-probabilities.
    """
    if not isinstance(metric, str):
        if not callable(metric):
            raise ConfigError(f"metric must be a name {choices(MetricName)} or a callable, got {metric!r}")
        return metric
    check_choice(metric, MetricName, "metric (a name, or a callable(logits, batch))")
    if metric in _SIMPLE:
        return _SIMPLE[metric]
    if metric == "logit_diff":
        if not isinstance(source, PromptBatch):
            raise ConfigError(
                "metric='logit_diff' needs a PromptBatch source (its answers are the wrong tokens); "
                "otherwise pass logit_diff(wrong_ids)."
            )
        if torch.equal(source.answer_ids, target.answer_ids):
            raise ConfigError(
                "metric='logit_diff' is ambiguous here: source and target have the same answers. "
                "Pass logit_diff(wrong_ids) with the tokens to compare against."
            )
        return logit_diff(source.answer_ids)
    if metric == "kl":
        if source_logprobs is None:
            raise ConfigError("metric='kl' needs a PromptBatch source (or pass kl_to(reference_logprobs)).")
        return kl_to(source_logprobs)
    raise AssertionError(f"metric {metric!r} is a MetricName without an implementation")


def metric_for_rows(metric: Metric, rows: Int[Tensor, " rows"], n_total: int) -> Metric:
    """The metric restricted to ``rows`` of the target batch (identity for stateless ones)."""
    select = getattr(metric, "select", None)
    if select is None or len(rows) == n_total and bool((rows == torch.arange(n_total)).all()):
        return metric
    return select(rows)


def evaluate_metric(
    metric: Metric, logits: Float[Tensor, "batch d_vocab"], batch: PromptBatch
) -> Float[Tensor, " batch"]:
    """Call a metric and check that it returned one value per prompt."""
    out = torch.as_tensor(metric(logits, batch))
    if out.shape != (logits.shape[0],):
        raise ConfigError(
            f"metric {metric_name(metric)!r} returned shape {tuple(out.shape)}; a metric must return one "
            f"value per prompt, shape ({logits.shape[0]},)."
        )
    return out.detach().float().cpu()
