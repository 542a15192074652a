"""The result of :func:`icl_lens.hypotheses.finetune.compare_icl_finetuning`: tables and plots."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.options import check_choice, choices
from icl_lens.core.results import Result, register
from icl_lens.core.stats import PairedComparison, accuracy_ci, compare_paired, format_p, proportion_interval

if TYPE_CHECKING:
    from icl_lens.hypotheses.finetune import IclFinetuneConfig

FinetuneMode = Literal["zero_shot", "icl", "finetuned"]
"""How a query is answered: zero-shot, with the demonstrations in context, or by the fine-tuned copy."""

MODES: tuple[FinetuneMode, ...] = choices(FinetuneMode)


@register
@dataclasses.dataclass(frozen=True)
class FinetuneComparison:
    """ZSL / ICL / FT measured on one model (the real one or the shuffled-weight baseline).

    ``correct[m, i]``: query ``i`` answered correctly in mode ``MODES[m]``
    (zero-shot, ICL, fine-tuned). Similarities are means over test queries (and heads,
    for SimAM), one value per layer.
    """

    learning_rate: float
    dev_accuracy: Float[Tensor, " rates"]
    dev_loss: Float[Tensor, " rates"]
    correct: Bool[Tensor, "modes prompts"]
    sim_aou: Float[Tensor, " layers"]
    sim_aou_random: Float[Tensor, " layers"]
    sim_aou_random_state: Float[Tensor, " layers"]
    sim_am: Float[Tensor, " layers"]
    sim_am_zero_shot: Float[Tensor, " layers"]

    def accuracy(self, mode: FinetuneMode) -> float:
        """Test accuracy in one mode (``"zero_shot"``, ``"icl"`` or ``"finetuned"``)."""
        return float(self.correct[MODES.index(check_choice(mode, FinetuneMode, "mode"))].float().mean())

    def interval(self, mode: FinetuneMode) -> tuple[float, float]:
        """95% Wilson interval of the test accuracy in ``mode``."""
        row = self.correct[MODES.index(check_choice(mode, FinetuneMode, "mode"))]
        return proportion_interval(int(row.sum()), int(row.numel()))

    def comparison(self, a: FinetuneMode, b: FinetuneMode, seed: int = 0) -> PairedComparison:
        """Mode ``a`` against ``b`` on the same test queries (exact McNemar, bootstrap interval)."""
        i, j = (MODES.index(check_choice(m, FinetuneMode, "mode")) for m in (a, b))
        return compare_paired(self.correct[i], self.correct[j], names=(a, b), seed=seed)

    @property
    def rec2ftp_interval(self) -> tuple[float, float]:
        """95% Wilson interval of Rec2FTP over the ``n_ft_corrections`` queries it is a share of."""
        zsl, icl, ft = self.correct
        corrected = ft & ~zsl
        return proportion_interval(int((icl & corrected).sum()), int(corrected.sum()))

    @property
    def icl_correction_interval(self) -> tuple[float, float]:
        zsl, icl, _ = self.correct
        return proportion_interval(int((icl & ~zsl).sum()), int((~zsl).sum()))

    @property
    def rec2ftp(self) -> float:
        """Share of FT's corrections (FT right, ZSL wrong) that ICL also gets right; NaN if none."""
        zsl, icl, ft = self.correct
        corrected = ft & ~zsl
        return float((icl & corrected).sum() / corrected.sum()) if corrected.any() else float("nan")

    @property
    def icl_correction_rate(self) -> float:
        """Baseline for Rec2FTP: share of *all* zero-shot errors that ICL gets right."""
        zsl, icl, _ = self.correct
        return float((icl & ~zsl).sum() / (~zsl).sum()) if (~zsl).any() else float("nan")

    @property
    def n_ft_corrections(self) -> int:
        zsl, _, ft = self.correct
        return int((ft & ~zsl).sum())


@dataclasses.dataclass(frozen=True)
class IclFinetuneResult(Result):
    """Rec2FTP, SimAOU and SimAM for the model and for a shuffled-weight baseline."""

    title = "ICL vs fine-tuning"

    model: str
    task: str
    labels: tuple[str, ...] | None
    demos: tuple[tuple[str, str], ...]
    trained_parameters: tuple[str, ...]
    trained: FinetuneComparison
    baseline: FinetuneComparison | None
    config: IclFinetuneConfig

    def summary_table(self) -> Any:
        """Each measurement with its baselines side by side (one row per number)."""
        import pandas as pd

        def block(m: FinetuneComparison, who: str) -> list[dict[str, Any]]:
            n = int(m.correct.shape[-1])
            zsl_errors = int((~m.correct[0]).sum())
            sizes = {
                "accuracy zero-shot": (m.interval("zero_shot"), n),
                "accuracy ICL": (m.interval("icl"), n),
                "accuracy fine-tuned": (m.interval("finetuned"), n),
                "Rec2FTP": (m.rec2ftp_interval, m.n_ft_corrections),
                "baseline: ICL correction rate on all ZSL errors": (m.icl_correction_interval, zsl_errors),
            }
            rows = [
                dict(model=who, measure="accuracy zero-shot", value=m.accuracy("zero_shot")),
                dict(model=who, measure="accuracy ICL", value=m.accuracy("icl")),
                dict(model=who, measure="accuracy fine-tuned", value=m.accuracy("finetuned")),
                dict(model=who, measure="learning rate (dev)", value=m.learning_rate),
                dict(model=who, measure="FT corrections (count)", value=float(m.n_ft_corrections)),
                dict(model=who, measure="Rec2FTP", value=m.rec2ftp),
                dict(model=who, measure="baseline: ICL correction rate on all ZSL errors",
                     value=m.icl_correction_rate),
                dict(model=who, measure="SimAOU (mean over layers)", value=float(m.sim_aou.mean())),
                dict(model=who, measure="baseline: SimAOU with a random update", value=float(m.sim_aou_random.mean())),
                dict(model=who, measure="baseline: SimAOU with a random fine-tuned state",
                     value=float(m.sim_aou_random_state.mean())),
                dict(model=who, measure="SimAM ICL-FT (mean over layers)", value=float(m.sim_am.mean())),
                dict(model=who, measure="baseline: SimAM ICL-ZSL", value=float(m.sim_am_zero_shot.mean())),
            ]  # fmt: skip
            for row in rows:  # shares of queries carry their Wilson interval and count
                (low, high), count = sizes.get(row["measure"], ((float("nan"), float("nan")), float("nan")))
                row.update(ci_low=low, ci_high=high, n=count)
            return rows

        rows = block(self.trained, self.model)
        if self.baseline is not None:
            rows += block(self.baseline, "shuffled weights")
        return pd.DataFrame(rows)

    def to_dataframe(self) -> Any:
        """One row per layer: SimAOU and SimAM with their baselines."""
        import pandas as pd

        rows = []
        for layer in range(len(self.trained.sim_aou)):
            row = dict(
                layer=layer,
                sim_aou=float(self.trained.sim_aou[layer]),
                sim_aou_random=float(self.trained.sim_aou_random[layer]),
                sim_aou_random_state=float(self.trained.sim_aou_random_state[layer]),
                sim_am=float(self.trained.sim_am[layer]),
                sim_am_zero_shot=float(self.trained.sim_am_zero_shot[layer]),
            )
            if self.baseline is not None:
                row.update(
                    sim_aou_shuffled=float(self.baseline.sim_aou[layer]),
                    sim_am_shuffled=float(self.baseline.sim_am[layer]),
                    sim_am_zero_shot_shuffled=float(self.baseline.sim_am_zero_shot[layer]),
                )
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        t = self.trained
        n = int(t.correct.shape[-1])
        icl_ft = t.comparison("icl", "finetuned", self.config.seed)
        same = (
            f"ICL and FT differ (McNemar {format_p(icl_ft.p_value)})"
            if icl_ft.significant
            else f"ICL and FT are not told apart by {n} queries (McNemar {format_p(icl_ft.p_value)})"
        )
        rec = t.rec2ftp_interval
        text = (
            f"{self.model} on {self.task}, {n} test queries: accuracy ZSL {accuracy_ci(t.accuracy('zero_shot'), n)}, "
            f"ICL {accuracy_ci(t.accuracy('icl'), n)}, FT {accuracy_ci(t.accuracy('finetuned'), n)}; {same}; "
            f"Rec2FTP {t.rec2ftp:.2f} [{rec[0]:.2f}, {rec[1]:.2f}] of {t.n_ft_corrections} FT corrections (ICL "
            f"corrects {t.icl_correction_rate:.2f} of all {int((~t.correct[0]).sum())} ZSL errors); SimAOU {float(t.sim_aou.mean()):+.3f} (random update {float(t.sim_aou_random.mean()):+.3f}, "
            f"random state {float(t.sim_aou_random_state.mean()):+.3f}); "
            f"SimAM {float(t.sim_am.mean()):.3f} (ZSL {float(t.sim_am_zero_shot.mean()):.3f})"
        )
        if self.baseline is not None:
            text += f"; shuffled weights: SimAOU {float(self.baseline.sim_aou.mean()):+.3f}"
        return text

    def _plot(self, ax: Any) -> None:
        layers = list(range(len(self.trained.sim_aou)))
        ax.plot(layers, self.trained.sim_aou.tolist(), marker="o", color="tab:blue", label="SimAOU (ICL vs FT)")
        ax.plot(layers, self.trained.sim_aou_random.tolist(), color="grey", linestyle="--", label="random update")
        ax.plot(layers, self.trained.sim_aou_random_state.tolist(), color="grey", linestyle=":",
                label="random fine-tuned state")  # fmt: skip
        if self.baseline is not None:
            ax.plot(layers, self.baseline.sim_aou.tolist(), marker=".", color="tab:orange", label="shuffled weights")
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_ylim(min(-0.1, float(self.trained.sim_aou.min()) - 0.05), 1.0)
        ax.set_xlabel("layer")
        ax.set_ylabel("cosine of attention-output updates")
        ax.set_title(f"SimAOU: {self.task} ({self.model})", fontsize="medium")
        ax.legend(fontsize="x-small", ncol=2, loc="upper center")

    def plot_sim_am(self, ax: Any = None) -> Any:
        """SimAM per layer: ICL vs FT attention over the query, against ICL vs ZSL."""
        from icl_lens.core.plotting import pyplot

        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.0)) if ax is None else (ax.figure, ax)
        layers = list(range(len(self.trained.sim_am)))
        ax.plot(layers, self.trained.sim_am.tolist(), marker="o", color="tab:blue", label="ICL vs FT")
        ax.plot(layers, self.trained.sim_am_zero_shot.tolist(), color="grey", linestyle="--",
                label="ICL vs ZSL (before FT)")  # fmt: skip
        if self.baseline is not None:
            ax.plot(layers, self.baseline.sim_am.tolist(), marker=".", color="tab:orange",
                    label="shuffled weights: ICL vs FT")  # fmt: skip
            ax.plot(layers, self.baseline.sim_am_zero_shot.tolist(), color="tab:orange", linestyle=":",
                    label="shuffled weights: ICL vs ZSL")  # fmt: skip
        ax.set_ylim(0, 1.3)
        ax.set_xlabel("layer")
        ax.set_ylabel("cosine of attention over query tokens")
        ax.set_title(f"SimAM: {self.task} ({self.model})", fontsize="medium")
        ax.legend(fontsize="x-small", ncol=2, loc="upper center")
        fig.tight_layout()
        return fig
