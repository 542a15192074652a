"""Causal confirmation: do the top induction heads carry in-context learning?

``confirm_induction_heads`` ablates the ``k`` best induction heads, and for comparison
``k`` random heads (several seeded draws that never include the ``k`` tested heads), and
measures with each ablation:

* **repeated-sequence loss**: loss on the second copy of ``[BOS] R R`` (``R`` random
  ordinary tokens, a different draw from the detector's), skipping the second copy's
  first token, which nothing in the context predicts. Induction heads are what make it
  low; ablating them should raise it.
* **ICL score** on natural text (:func:`icl_lens.induction.icl_score.icl_score`,
  ``loss@500 - loss@50``): ablating induction heads should move it towards 0.

The mean and resample ablations take their activations from the natural-text contexts.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config, Result
from icl_lens.induction import sequences as seq
from icl_lens.induction.detectors import InductionConfig, InductionHeadsResult, find_induction_heads
from icl_lens.induction.icl_score import IclScoreConfig, context_tokens, per_token_loss, score_from_losses
from icl_lens.patching.ablation import METHODS, ablate_heads, normalize_heads


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
    method: str = "mean"
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
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}")
        if self.n_random_draws < 1 or self.repeat_length < 2 or self.n_repeat_sequences < 1:
            raise ConfigError("n_random_draws >= 1, repeat_length >= 2, n_repeat_sequences >= 1")


@dataclasses.dataclass(frozen=True)
class InductionAblationResult(Result):
    """Repeated-sequence loss and ICL score with the top-``k`` induction heads ablated,
    against ``k`` random heads (``random_*[i, d]``: ``ks[i]``, draw ``d``)."""

    title: ClassVar[str] = "Induction heads: ablation check"

    config: AblationCheckConfig
    model_name: str
    ranking: tuple[tuple[int, int], ...]
    baseline_repeat_loss: float
    baseline_icl_score: float
    induction_repeat_loss: Float[Tensor, " k"]
    induction_icl_score: Float[Tensor, " k"]
    random_repeat_loss: Float[Tensor, "k draw"]
    random_icl_score: Float[Tensor, "k draw"]
    random_heads: tuple[tuple[tuple[tuple[int, int], ...], ...], ...]

    def to_dataframe(self) -> Any:
        """One row per ablation (plus the unablated baseline), with changes from baseline."""
        import pandas as pd

        rows: list[dict[str, Any]] = [
            {
                "k": 0,
                "heads": "none",
                "draw": 0,
                "repeat_loss": self.baseline_repeat_loss,
                "icl_score": self.baseline_icl_score,
            }
        ]
        for i, k in enumerate(self.config.ks):
            rows.append(
                {
                    "k": k,
                    "heads": "induction",
                    "draw": 0,
                    "repeat_loss": float(self.induction_repeat_loss[i]),
                    "icl_score": float(self.induction_icl_score[i]),
                }
            )
            for d in range(self.random_repeat_loss.shape[1]):
                rows.append(
                    {
                        "k": k,
                        "heads": "random",
                        "draw": d,
                        "repeat_loss": float(self.random_repeat_loss[i, d]),
                        "icl_score": float(self.random_icl_score[i, d]),
                    }
                )
        df = pd.DataFrame(rows)
        df["delta_repeat_loss"] = df["repeat_loss"] - self.baseline_repeat_loss
        df["delta_icl_score"] = df["icl_score"] - self.baseline_icl_score
        return df

    def table(self) -> Any:
        """Per ``k``: change in repeated-sequence loss and ICL score, induction vs random
        (random: mean and min-max over draws)."""
        import pandas as pd

        rows = []
        for i, k in enumerate(self.config.ks):
            rr = self.random_repeat_loss[i] - self.baseline_repeat_loss
            ri = self.random_icl_score[i] - self.baseline_icl_score
            rows.append(
                {
                    "k": k,
                    "heads": ", ".join(f"L{l}H{h}" for l, h in self.ranking[:k]),
                    "d_repeat_loss_induction": float(self.induction_repeat_loss[i] - self.baseline_repeat_loss),
                    "d_repeat_loss_random_mean": float(rr.mean()),
                    "d_repeat_loss_random_max": float(rr.max()),
                    "d_icl_induction": float(self.induction_icl_score[i] - self.baseline_icl_score),
                    "d_icl_random_mean": float(ri.mean()),
                    "d_icl_random_max": float(ri.max()),
                }
            )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        t = self.table().iloc[-1]
        return (
            f"{self.model_name}, {self.config.method} ablation: baseline repeated loss {self.baseline_repeat_loss:.3f}, "
            f"ICL score {self.baseline_icl_score:+.3f}; top-{int(t.k)} induction heads: "
            f"repeated loss {t.d_repeat_loss_induction:+.3f}, ICL score {t.d_icl_induction:+.3f}; "
            f"{int(t.k)} random heads (mean of {self.random_repeat_loss.shape[1]}): "
            f"{t.d_repeat_loss_random_mean:+.3f}, {t.d_icl_random_mean:+.3f}"
        )

    def _plot(self, ax: Any) -> None:
        self._panel(
            ax, self.induction_repeat_loss, self.random_repeat_loss, self.baseline_repeat_loss, "repeated-sequence loss"
        )

    def plot_icl(self, ax: Any = None) -> Any:
        """Change in ICL score vs ``k``."""
        if ax is None:
            from icl_lens.core.plotting import pyplot

            _, ax = pyplot().subplots(figsize=(6.4, 4.0))
        self._panel(ax, self.induction_icl_score, self.random_icl_score, self.baseline_icl_score, "ICL score")
        return ax.figure

    def plot_both(self) -> Any:
        from icl_lens.core.plotting import pyplot

        fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8))
        self._plot(axes[0])
        self.plot_icl(axes[1])
        fig.tight_layout()
        return fig

    def _panel(self, ax: Any, induction: Tensor, random: Tensor, baseline: float, what: str) -> None:
        ks = list(self.config.ks)
        ax.plot(ks, (induction - baseline).numpy(), "o-", color="C3", label="top-k induction heads")
        for d in range(random.shape[1]):
            ax.plot(ks, (random[:, d] - baseline).numpy(), "x", color="C0", label="k random heads" if d == 0 else None)
        ax.plot(ks, (random - baseline).mean(1).numpy(), "--", color="C0", lw=0.8)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_xlabel("heads ablated (k)")
        ax.set_ylabel(f"change in {what}")
        ax.set_title(f"{self.model_name}: {self.config.method} ablation", fontsize=9)
        ax.legend(fontsize=8)


def repeated_sequences(model: Any, length: int, n: int, seed: int) -> Tensor:
    """``n`` rows ``[BOS] R R`` with ``R`` = ``length`` distinct random ordinary tokens."""
    bos = seq.bos_token_id(model)
    probe = seq.make_probe_batch(seq.ordinary_token_ids(model, bos), bos, (length,), n, 2, 2, seed)
    return probe.tokens[:n, : 1 + 2 * length]


def repeated_sequence_loss(losses: Float[Tensor, "batch pos"], length: int) -> float:
    """Mean loss over the second copy of ``[BOS] R R``, its first token excluded."""
    return float(losses[:, length + 2 : 2 * length + 1].mean())


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
    model: Any,
    heads: InductionHeadsResult | Sequence[tuple[int, int]] | None = None,
    config: AblationCheckConfig | None = None,
    text: Any = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> InductionAblationResult:
    """Ablate the top-``k`` induction heads and ``k`` random heads; compare the damage.

    Args:
        heads: a scan from :func:`find_induction_heads` (ranked by its induction score), a
            ranked list of ``(layer, head)``, or ``None`` to run the scan here.
        config: an :class:`AblationCheckConfig`; keyword ``overrides`` replace its fields.
        text: natural text for the ICL score (see :func:`icl_lens.induction.icl_score`; default: the
            built-in corpus). Models without a tokenizer need a token tensor.
    """
    config = (config or AblationCheckConfig()).replace(**overrides) if overrides else (config or AblationCheckConfig())
    s = hooks.spec(model)
    if heads is None:
        heads = find_induction_heads(model, InductionConfig(weight_scores=False, seed=config.seed))
    if isinstance(heads, InductionHeadsResult):
        ranking = heads.top_heads(max(config.ks))
    else:
        ranking = [tuple(h) for h in heads]
        if len(normalize_heads(model, ranking)) != len(ranking):
            raise ConfigError("heads must be distinct (layer, head) pairs, best first")
    if len(ranking) < max(config.ks):
        raise ConfigError(f"ks go up to {max(config.ks)} but only {len(ranking)} ranked heads were given")

    repeated = repeated_sequences(model, config.repeat_length, config.n_repeat_sequences, config.seed + 1)
    contexts = context_tokens(model, text, config.icl)

    def measure(ablated: Sequence[tuple[int, int]]) -> tuple[float, float]:
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
        return repeated_sequence_loss(rep, config.repeat_length), score_from_losses(icl, config.icl).icl_score

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
        baseline_repeat_loss=base_rep,
        baseline_icl_score=base_icl,
        induction_repeat_loss=torch.tensor([v[0] for v in ind]),
        induction_icl_score=torch.tensor([v[1] for v in ind]),
        random_repeat_loss=torch.tensor([v[0] for v in rnd]).view(n_k, n_d),
        random_icl_score=torch.tensor([v[1] for v in rnd]).view(n_k, n_d),
        random_heads=tuple(random_sets),
    )
