"""Loss of induction-consistent, inconsistent and reference tokens on natural text.

``induction_token_losses(model, text)`` classes every token of the text
(:func:`~icl_lens.induction.token_classes.classify_tokens`), measures each class's loss by
position, and measures it again with the top-``k`` induction heads ablated and with ``k``
random heads ablated (seeded draws that never include the tested heads). Olsson et al.
(2022) predict that induction heads lower the loss of consistent tokens and raise that of
inconsistent ones, so ablating them should raise the first and lower the second.

The unit of every interval is a context: tokens of one context are not independent, so
each class's loss is first averaged within each context, then bootstrapped over
contexts, and every difference is paired by context.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.induction.confirm import random_head_sets
from icl_lens.induction.detectors import InductionConfig, find_induction_heads
from icl_lens.induction.detectors_result import InductionHeadsResult
from icl_lens.induction.icl_scoring import IclScoreConfig, context_tokens, per_token_loss
from icl_lens.induction.token_classes import classify_tokens
from icl_lens.induction.token_losses_result import InductionTokenLossResult
from icl_lens.patching.ablation import ablate_heads, normalize_heads
from icl_lens.patching.options import AblationMethod


@dataclasses.dataclass(frozen=True)
class InductionTokenConfig(Config):
    """Settings of :func:`induction_token_losses`.

    Args:
        n_contexts, context_length, seed: contexts cut from a text as for
            :func:`icl_lens.icl_score` (non-overlapping slices picked with ``seed``, BOS
            prepended). A token tensor passed as the text is used as is. Intervals are
            bootstrapped over contexts: with fewer than about 8 they are too narrow, and
            the permutation p-value is the check to read.
        k: induction heads ablated (the top ``k`` of the ranking); 0 skips the ablation.
        n_random_draws: sets of ``k`` random heads ablated for comparison.
        method: ablation (``"mean"``: each head's mean output over the contexts).
        n_bins: log-spaced position bins of the by-position tables and plots.
        batch_size: contexts per forward pass.
        scan: the :func:`find_induction_heads` settings that rank the heads when no
            ``heads=`` ranking is given (weight scores off: only attention ranks them).
    """

    n_contexts: int = 16
    context_length: int = 600
    k: int = 5
    n_random_draws: int = 3
    method: AblationMethod = "mean"
    n_bins: int = 12
    batch_size: int = 2
    seed: int = 0
    scan: InductionConfig = InductionConfig(weight_scores=False)

    def __post_init__(self) -> None:
        check_choice(self.method, AblationMethod, "method")
        if self.n_contexts < 1 or self.batch_size < 1 or self.context_length < 2:
            raise ConfigError("n_contexts and batch_size must be >= 1, context_length >= 2")
        if self.k < 0 or self.n_random_draws < 1 or self.n_bins < 2:
            raise ConfigError("k must be >= 0, n_random_draws >= 1 and n_bins >= 2")

    def contexts(self) -> IclScoreConfig:
        """The context settings in the form :func:`context_tokens` reads."""
        return IclScoreConfig(
            n_contexts=self.n_contexts,
            context_length=self.context_length,
            early=1,
            late=2,
            window=0.0,
            batch_size=self.batch_size,
            seed=self.seed,
        )


def induction_token_losses(
    model: HookedModel,
    text: str | Sequence[str] | Tensor | None = None,
    config: InductionTokenConfig | None = None,
    *,
    heads: InductionHeadsResult | Sequence[tuple[int, int]] | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> InductionTokenLossResult:
    """Loss of induction-consistent, inconsistent and reference tokens, with and without induction heads.

    Args:
        model: any model speaking the TransformerLens hook contract.
        text: ``None`` (the built-in Austen chapters), a long string (cut into
            ``n_contexts`` contexts), a list of strings, or a token tensor
            ``[contexts, positions]`` (models without a tokenizer need one).
        config: an :class:`InductionTokenConfig`; keyword ``overrides`` replace its fields.
        heads: the induction-head ranking: a :func:`find_induction_heads` result, a
            ranked list of ``(layer, head)``, or ``None`` to run the scan here.

    Returns:
        An :class:`InductionTokenLossResult`: per-class loss with intervals
        (``class_table()``), paired class differences (``differences()``), the ablation
        comparison (``ablation_table()``) and loss by position (``by_position()``, ``plot()``).
    """
    cfg = InductionTokenConfig.resolve(config, overrides)
    s = hooks.spec(model)
    contexts = context_tokens(model, text, cfg.contexts())
    classes = classify_tokens(contexts)

    ranking: list[tuple[int, int]] = []
    random_sets: list[list[tuple[int, int]]] = []
    if cfg.k > 0:
        ranking = _ranking(model, heads, cfg)
        random_sets = random_head_sets(s.n_layers, s.n_heads, cfg.k, ranking, cfg.n_random_draws, cfg.seed + 7919)
    plans = [[]] + ([ranking] + random_sets if cfg.k > 0 else [])
    losses = []
    for ablated in progress(plans, total=len(plans), desc="token losses", enabled=show_progress):
        with ablate_heads(model, ablated, cfg.method, reference=contexts, seed=cfg.seed):
            losses.append(per_token_loss(model, contexts, cfg.batch_size, show_progress=False))
    return InductionTokenLossResult(
        config=cfg,
        model_name=model_name(model),
        tokens=contexts,
        classes=classes,
        loss=losses[0],
        heads=tuple(ranking),
        random_heads=tuple(tuple(d) for d in random_sets),
        ablated_loss=losses[1] if cfg.k > 0 else None,
        random_loss=torch.stack(losses[2:]) if cfg.k > 0 else None,
    )


def _ranking(
    model: HookedModel, heads: InductionHeadsResult | Sequence[tuple[int, int]] | None, cfg: InductionTokenConfig
) -> list[tuple[int, int]]:
    if heads is None:
        heads = find_induction_heads(model, cfg.scan)
    if isinstance(heads, InductionHeadsResult):
        ranking = heads.top_heads(cfg.k)
    else:
        ranking = [(int(l), int(h)) for l, h in heads][: cfg.k]
        if len(normalize_heads(model, ranking)) != len(ranking):
            raise ConfigError("heads must be distinct (layer, head) pairs, best first")
    if len(ranking) < cfg.k:
        raise ConfigError(f"k={cfg.k} induction heads asked for but only {len(ranking)} ranked heads were given")
    return ranking
