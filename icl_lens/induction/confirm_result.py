"""The result of :func:`~icl_lens.induction.confirm.confirm_induction_heads`: top-k induction heads ablated against random heads."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, ClassVar

from jaxtyping import Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import PairedComparison, compare_paired, error_bars, format_p, verdict

if TYPE_CHECKING:
    from icl_lens.induction.confirm import AblationCheckConfig


@dataclasses.dataclass(frozen=True)
class InductionAblationResult(Result):
    """Repeated-sequence loss (per sequence) and ICL score (per context) with the top-``k``
    induction heads ablated, against ``k`` random heads (``random_*[i, d]``: ``ks[i]``,
    draw ``d``), and without ablation (``baseline_*``).

    Every sequence and context is measured under every ablation, so top-``k`` and random
    heads compare pairwise: :meth:`comparison` runs a paired permutation test with a
    paired bootstrap interval on the difference (induction minus the mean over random
    draws), per ``k``.
    """

    title: ClassVar[str] = "Induction heads: ablation check"

    config: AblationCheckConfig
    model_name: str
    ranking: tuple[tuple[int, int], ...]
    baseline_repeat: Float[Tensor, " sequences"]
    baseline_icl: Float[Tensor, " contexts"]
    induction_repeat: Float[Tensor, "k sequences"]
    induction_icl: Float[Tensor, "k contexts"]
    random_repeat: Float[Tensor, "k draw sequences"]
    random_icl: Float[Tensor, "k draw contexts"]
    random_heads: tuple[tuple[tuple[tuple[int, int], ...], ...], ...]

    # -- means (what the tables show) ----------------------------------------------------
    @property
    def baseline_repeat_loss(self) -> float:
        return float(self.baseline_repeat.mean())

    @property
    def baseline_icl_score(self) -> float:
        return float(self.baseline_icl.mean())

    @property
    def induction_repeat_loss(self) -> Float[Tensor, " k"]:
        return self.induction_repeat.mean(-1)

    @property
    def induction_icl_score(self) -> Float[Tensor, " k"]:
        return self.induction_icl.mean(-1)

    @property
    def random_repeat_loss(self) -> Float[Tensor, "k draw"]:
        return self.random_repeat.mean(-1)

    @property
    def random_icl_score(self) -> Float[Tensor, "k draw"]:
        return self.random_icl.mean(-1)

    # -- tests -----------------------------------------------------------------------------
    @functools.cached_property
    def _comparisons(self) -> dict[tuple[str, int], PairedComparison]:
        out = {}
        seed = self.config.seed
        for i, k in enumerate(self.config.ks):
            names = (f"top-{k} induction heads", f"{k} random heads")
            out[("repeat", k)] = compare_paired(
                self.induction_repeat[i], self.random_repeat[i].mean(0), names=names, seed=seed
            )
            out[("icl", k)] = compare_paired(self.induction_icl[i], self.random_icl[i].mean(0), names=names, seed=seed)
        return out

    def comparison(self, k: int, measure: str = "repeat") -> PairedComparison:
        """Top-``k`` induction heads against ``k`` random heads (mean over draws), paired over the
        repeated sequences (``measure="repeat"``) or the natural-text contexts (``"icl"``)."""
        return self._comparisons[(measure, int(k))]

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
            for d in range(self.random_repeat.shape[1]):
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
        (random: mean and max over draws), and the paired test of induction against random
        (difference with its 95% bootstrap interval, permutation p-value)."""
        import pandas as pd

        rows = []
        for i, k in enumerate(self.config.ks):
            rr = self.random_repeat_loss[i] - self.baseline_repeat_loss
            ri = self.random_icl_score[i] - self.baseline_icl_score
            rep, icl = self.comparison(k, "repeat"), self.comparison(k, "icl")
            rows.append(
                {
                    "k": k,
                    "heads": ", ".join(f"L{l}H{h}" for l, h in self.ranking[:k]),
                    "d_repeat_loss_induction": float(self.induction_repeat_loss[i] - self.baseline_repeat_loss),
                    "d_repeat_loss_random_mean": float(rr.mean()),
                    "d_repeat_loss_random_max": float(rr.max()),
                    "repeat_induction_minus_random": rep.difference,
                    "repeat_ci_low": rep.ci_low,
                    "repeat_ci_high": rep.ci_high,
                    "repeat_p": rep.p_value,
                    "d_icl_induction": float(self.induction_icl_score[i] - self.baseline_icl_score),
                    "d_icl_random_mean": float(ri.mean()),
                    "d_icl_random_max": float(ri.max()),
                    "icl_induction_minus_random": icl.difference,
                    "icl_ci_low": icl.ci_low,
                    "icl_ci_high": icl.ci_high,
                    "icl_p": icl.p_value,
                }
            )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        k = self.config.ks[-1]
        rep, icl = self.comparison(k, "repeat"), self.comparison(k, "icl")
        n_seq, n_ctx = self.baseline_repeat.shape[0], self.baseline_icl.shape[0]
        return (
            f"{self.model_name}, {self.config.method} ablation: baseline repeated loss {self.baseline_repeat_loss:.3f}, "
            f"ICL score {self.baseline_icl_score:+.3f}; "
            + verdict(rep, subject=f"top-{k} induction heads vs {k} random", what="repeated-sequence loss")
            + f" over {n_seq} sequences; ICL score: "
            + (
                f"{icl.difference:+.3f} [{icl.ci_low:+.3f}, {icl.ci_high:+.3f}] vs random heads "
                f"(permutation {format_p(icl.p_value)})"
                if icl.significant
                else f"inconclusive with n = {n_ctx} contexts ({icl.difference:+.3f} "
                f"[{icl.ci_low:+.3f}, {icl.ci_high:+.3f}] vs random heads, permutation {format_p(icl.p_value)})"
            )
        )

    def _plot(self, ax: Any) -> None:
        self._panel(ax, "repeat", "repeated-sequence loss")

    def plot_icl(self, ax: Any = None) -> Any:
        """Change in ICL score vs ``k``."""
        if ax is None:
            from icl_lens.core.plotting import pyplot

            _, ax = pyplot().subplots(figsize=(6.4, 4.0))
        self._panel(ax, "icl", "ICL score")
        return ax.figure

    def plot_both(self) -> Any:
        from icl_lens.core.plotting import pyplot

        fig, axes = pyplot().subplots(1, 2, figsize=(10, 3.8))
        self._plot(axes[0])
        self.plot_icl(axes[1])
        fig.tight_layout()
        return fig

    def _panel(self, ax: Any, measure: str, what: str) -> None:
        ks = list(self.config.ks)
        per_unit = self.induction_repeat if measure == "repeat" else self.induction_icl
        random = self.random_repeat_loss if measure == "repeat" else self.random_icl_score
        baseline = self.baseline_repeat_loss if measure == "repeat" else self.baseline_icl_score
        delta = per_unit.mean(-1) - baseline
        # the bar on the induction point: the paired bootstrap interval of induction minus random,
        # drawn around the induction point's distance from the random mean
        diffs = [self.comparison(k, measure) for k in ks]
        rnd = (random - baseline).mean(1)
        low = [float(r) + c.ci_low for r, c in zip(rnd, diffs, strict=True)]
        high = [float(r) + c.ci_high for r, c in zip(rnd, diffs, strict=True)]
        ax.errorbar(ks, delta.numpy(), yerr=error_bars(delta, low, high), fmt="o-", color="C3", capsize=3,
                    label="top-k induction heads (95% CI vs random)")  # fmt: skip
        for d in range(random.shape[1]):
            ax.plot(ks, (random[:, d] - baseline).numpy(), "x", color="C0", label="k random heads" if d == 0 else None)
        ax.plot(ks, rnd.numpy(), "--", color="C0", lw=0.8)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_xlabel("heads ablated (k)")
        ax.set_ylabel(f"change in {what}")
        ax.set_title(f"{self.model_name}: {self.config.method} ablation", fontsize=9)
        ax.legend(fontsize=8)
