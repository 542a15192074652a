"""The result of :func:`icl_lens.hypotheses.selection.demonstration_selection`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import PairedComparison, compare_paired, pct_ci, proportion_interval, verdict

if TYPE_CHECKING:
    from icl_lens.hypotheses.selection import SelectionConfig

METHOD_STYLE = {"nearest": ("C2", "o"), "kernel": ("C4", "D"), "random": ("0.4", "s"), "farthest": ("C3", "v")}


def rate_with_interval(outcomes: Tensor) -> tuple[float, float, float]:
    """Share of true outcomes and its Wilson interval."""
    n, k = int(outcomes.numel()), int(outcomes.sum())
    low, high = proportion_interval(k, n)
    return (k / n if n else float("nan")), low, high


@dataclasses.dataclass(frozen=True)
class DemonstrationSelectionResult(Result):
    """ICL accuracy by selection rule and number of demonstrations.

    ``selected[m, q]`` lists the pool indices rule ``methods[m]`` ranks best for query
    ``q`` (best first; ``random``: draw order); the prompt with ``k`` demonstrations uses
    the first ``k``. ``correct[m, j, q]``: query ``q`` answered right (first-token top-1)
    by rule ``m`` with ``ks[j]`` demonstrations. On a label task, ``vote_correct`` and
    ``vote_agrees`` are the kernel head's vote against the gold label and against the
    model's label-restricted answer, and ``label_share`` the share of chosen
    demonstrations carrying the query's gold label. ``similarity[q, i]`` is the centred
    cosine of the representations of query ``q`` and pool input ``i``.
    """

    title: ClassVar[str] = "Demonstration selection"

    config: SelectionConfig
    model: str
    task: str
    labels: tuple[str, ...] | None
    kernel_head: tuple[int, int] | None
    layer: int
    queries: tuple[tuple[str, str], ...]
    pool: tuple[tuple[str, str], ...]
    selected: Int[Tensor, "methods queries k_max"]
    similarity: Float[Tensor, "queries pool"]
    kernel_similarity: Float[Tensor, "queries pool"] | None
    correct: Bool[Tensor, "methods ks queries"]
    vote_correct: Bool[Tensor, "methods ks queries"] | None
    vote_agrees: Bool[Tensor, "methods ks queries"] | None
    label_share: Float[Tensor, "methods ks queries"] | None

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.config.methods)

    @property
    def ks(self) -> tuple[int, ...]:
        return tuple(self.config.ks)

    @property
    def accuracy(self) -> Float[Tensor, "methods ks"]:
        return self.correct.float().mean(-1)

    def comparison(self, method: str, k: int) -> PairedComparison:
        """``method`` against ``random`` at ``k`` demonstrations, on the same queries (exact McNemar)."""
        m, r, j = self.methods.index(method), self.methods.index("random"), self.ks.index(k)
        return compare_paired(
            self.correct[m, j].float(), self.correct[r, j].float(), names=(method, "random"), seed=self.config.seed
        )

    def demonstrations(self, method: str, k: int, query: int) -> list[tuple[str, str]]:
        """The demonstrations rule ``method`` shows query number ``query`` with ``k`` shots, in prompt order."""
        picks = self.selected[self.methods.index(method), query, :k].tolist()
        picks = picks if method == "random" else picks[::-1]
        return [self.pool[i] for i in picks]

    def to_dataframe(self) -> Any:
        """One row per rule and ``k``: accuracy with its Wilson interval, the paired
        difference from random (bootstrap interval, McNemar p), the kernel head's vote and
        how similar and how label-matched the chosen demonstrations are."""
        import pandas as pd

        rows = []
        for m, method in enumerate(self.methods):
            for j, k in enumerate(self.ks):
                acc, low, high = rate_with_interval(self.correct[m, j])
                row: dict[str, Any] = dict(method=method, k=k, accuracy=acc, ci_low=low, ci_high=high)
                if method != "random":
                    c = self.comparison(method, k)
                    row.update(
                        vs_random=c.difference,
                        vs_random_ci_low=c.ci_low,
                        vs_random_ci_high=c.ci_high,
                        p_value=c.p_value,
                    )
                else:
                    row.update(vs_random=0.0, vs_random_ci_low=0.0, vs_random_ci_high=0.0, p_value=1.0)
                chosen = self.selected[m, :, :k]
                row["mean_similarity"] = float(self.similarity.gather(1, chosen).mean())
                if self.label_share is not None:
                    row["gold_label_share"] = float(self.label_share[m, j].mean())
                for name, outcomes in (("vote_accuracy", self.vote_correct), ("vote_agreement", self.vote_agrees)):
                    if outcomes is not None:
                        rate, lo, hi = rate_with_interval(outcomes[m, j])
                        row.update({name: rate, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
                row["n_queries"] = int(self.correct.shape[-1])
                rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        k = self.ks[-1]
        r = self.methods.index("random")
        parts = [f"random {pct_ci(*rate_with_interval(self.correct[r, -1]))}"]
        for method in self.methods:
            if method != "random":
                parts.append(verdict(self.comparison(method, k), rise="beats random", fall="loses to random"))
        head = "" if self.kernel_head is None else f"; kernel head L{self.kernel_head[0]}H{self.kernel_head[1]}"
        return f"{self.model} on {self.task}, k = {k}{head}: " + "; ".join(parts)

    def _plot(self, ax: Any) -> None:
        x = torch.arange(len(self.ks)).float()
        for m, method in enumerate(self.methods):
            color, marker = METHOD_STYLE.get(method, ("C0", "o"))
            stats = [rate_with_interval(self.correct[m, j]) for j in range(len(self.ks))]
            values = [s[0] for s in stats]
            err = [[v - s[1] for v, s in zip(values, stats)], [s[2] - v for v, s in zip(values, stats)]]
            ax.errorbar(
                (x + 0.06 * (m - 1.5)).numpy(), values, yerr=err, color=color, marker=marker, capsize=3, label=method
            )
        ax.set_xticks(x.numpy(), [str(k) for k in self.ks])
        ax.set_xlabel("demonstrations (k)")
        ax.set_ylabel("first-token top-1 accuracy (95% CI)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Demonstration selection: {self.task} ({self.model})", fontsize="medium")
        ax.legend(fontsize="small")
