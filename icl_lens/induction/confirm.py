"""Causal confirmation: do the top induction heads carry in-context learning?

``confirm_induction_heads`` ablates the ``k`` best induction heads, and for comparison
``k`` random heads (several seeded draws that never include the ``k`` tested heads), and
measures with each ablation:

* **repeated-sequence loss**: loss on the second copy of ``[BOS] R R`` (``R`` random
  ordinary tokens, a different draw from the detector's), skipping the second copy's
  first token, which nothing in the context predicts. Induction heads are what make it
  low; ablating them should raise it.
* **ICL score** on natural text (:func:`icl_lens.induction.icl_scoring.icl_score`,
  ``loss@500 - loss@50``): ablating induction heads should move it towards 0.

The mean and resample ablations take their activations from the natural-text contexts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import hooks, validate
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.induction import sequences as seq
from icl_lens.induction.confirm_result import InductionAblationResult
from icl_lens.induction.detectors import InductionConfig, find_induction_heads
from icl_lens.induction.detectors_result import InductionHeadsResult
from icl_lens.induction.icl_scoring import IclScoreConfig, context_tokens, per_token_loss, score_from_losses
from icl_lens.patching.ablation import ablate_heads, normalize_heads
from icl_lens.patching.options import AblationMethod


@dataclasses.dataclass(frozen=True)
class AblationCheckConfig(Config):
    """Settings of :func:`confirm_induction_heads`.

    Args:
        ks: numbers of heads ablated.
        n_random_draws: random head sets per ``k``.
        method, preserve_pattern: passed to :func:`icl_lens.ablate_heads`.
        repeat_length, n_repeat_sequences: the repeated random sequences.
        icl: contexts and positions of the ICL score.
        batch_size: sequences per forward pass.
        seed: random tokens and random head draws.
    """

    ks: tuple[int, ...] = (1, 3, 5, 10)
    n_random_draws: int = 3
    method: AblationMethod = "mean"
    preserve_pattern: bool = False
    repeat_length: int = 50
    n_repeat_sequences: int = 16
    icl: IclScoreConfig = IclScoreConfig(n_contexts=4)
    batch_size: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.ks, list):
            object.__setattr__(self, "ks", tuple(self.ks))
        if not self.ks or min(self.ks) < 1:
            raise ConfigError("ks must be a non-empty tuple of positive ints")
        check_choice(self.method, AblationMethod, "method")
        if self.n_random_draws < 1 or self.repeat_length < 2 or self.n_repeat_sequences < 1:
            raise ConfigError("n_random_draws >= 1, repeat_length >= 2, n_repeat_sequences >= 1")


def repeated_sequences(model: HookedModel, length: int, n: int, seed: int) -> Tensor:
    """``n`` rows ``[BOS] R R`` with ``R`` = ``length`` distinct random ordinary tokens."""
    bos = seq.bos_token_id(model)
    probe = seq.make_probe_batch(seq.ordinary_token_ids(model, bos), bos, (length,), n, 2, 2, seed)
    return probe.tokens[:n, : 1 + 2 * length]


def repeated_sequence_loss(losses: Float[Tensor, "batch pos"], length: int) -> Float[Tensor, " batch"]:
    """Each sequence's mean loss over the second copy of ``[BOS] R R``, its first token excluded."""
    return losses[:, length + 2 : 2 * length + 1].float().mean(1)


def random_head_sets(
    n_layers: int, n_heads: int, k: int, exclude: Sequence[tuple[int, int]], n_draws: int, seed: int
) -> list[list[tuple[int, int]]]:
    """``n_draws`` seeded sets of ``k`` distinct heads, none in ``exclude``."""
    pool = [(l, h) for l in range(n_layers) for h in range(n_heads) if (l, h) not in set(exclude)]
    if k > len(pool):
        raise ConfigError(
            f"cannot draw {k} random heads outside the {len(exclude)} tested ones: only {len(pool)} remain."
        )
    gen = torch.Generator().manual_seed(seed)
    return [sorted(pool[int(i)] for i in torch.randperm(len(pool), generator=gen)[:k]) for _ in range(n_draws)]


def confirm_induction_heads(
    model: HookedModel,
    heads: InductionHeadsResult | Sequence[tuple[int, int]] | None = None,
    config: AblationCheckConfig | None = None,
    *,
    text: str | Sequence[str] | Tensor | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> InductionAblationResult:
    """Ablate the top-``k`` induction heads and ``k`` random heads; compare the damage.

    Args:
        heads: a scan from :func:`find_induction_heads` (ranked by its induction score), a
            ranked list of ``(layer, head)``, or ``None`` to run the scan here.
        config: an :class:`AblationCheckConfig`; keyword ``overrides`` replace its fields.
        text: natural text for the ICL score (see :func:`~icl_lens.induction.icl_scoring.icl_score`; default: the
            built-in corpus). Models without a tokenizer need a token tensor.
    """
    config = AblationCheckConfig.resolve(config, overrides)
    s = hooks.spec(model)
    if heads is None:
        heads = find_induction_heads(model, InductionConfig(weight_scores=False, seed=config.seed))
    if isinstance(heads, InductionHeadsResult):
        ranking = heads.top_heads(max(config.ks))
    else:
        ranking = validate.head_list(heads, s.n_layers, s.n_heads)
        if len(normalize_heads(model, ranking)) != len(ranking):
            raise ConfigError("heads must be distinct (layer, head) pairs, best first")
    if len(ranking) < max(config.ks):
        raise ConfigError(f"ks go up to {max(config.ks)} but only {len(ranking)} ranked heads were given")

    repeated = repeated_sequences(model, config.repeat_length, config.n_repeat_sequences, config.seed + 1)
    contexts = context_tokens(model, text, config.icl)

    def measure(ablated: Sequence[tuple[int, int]]) -> tuple[Tensor, Tensor]:
        with ablate_heads(
            model,
            ablated,
            config.method,
            reference=contexts,
            preserve_pattern=config.preserve_pattern,
            seed=config.seed,
        ):
            rep = per_token_loss(model, repeated, config.batch_size, show_progress=False)
            icl = per_token_loss(model, contexts, config.batch_size, show_progress=False)
        return repeated_sequence_loss(rep, config.repeat_length), score_from_losses(icl, config.icl).per_context

    plans: list[tuple[str, int, list[tuple[int, int]]]] = [("baseline", 0, [])]
    random_sets = []
    for i, k in enumerate(config.ks):
        plans.append(("induction", i, list(ranking[:k])))
        draws = random_head_sets(
            s.n_layers, s.n_heads, k, ranking[:k], config.n_random_draws, config.seed + 7919 * (i + 1)
        )
        random_sets.append(tuple(tuple(d) for d in draws))
        plans += [("random", i, d) for d in draws]
    values = [measure(h) for _, _, h in progress(plans, total=len(plans), desc="ablations", enabled=show_progress)]
    base_rep, base_icl = values[0]
    n_k, n_d = len(config.ks), config.n_random_draws
    ind = [v for (kind, _, _), v in zip(plans, values) if kind == "induction"]
    rnd = [v for (kind, _, _), v in zip(plans, values) if kind == "random"]
    return InductionAblationResult(
        config=config,
        model_name=model_name(model),
        ranking=tuple(ranking),
        baseline_repeat=base_rep,
        baseline_icl=base_icl,
        induction_repeat=torch.stack([v[0] for v in ind]),
        induction_icl=torch.stack([v[1] for v in ind]),
        random_repeat=torch.stack([v[0] for v in rnd]).view(n_k, n_d, -1),
        random_icl=torch.stack([v[1] for v in rnd]).view(n_k, n_d, -1),
        random_heads=tuple(random_sets),
    )
