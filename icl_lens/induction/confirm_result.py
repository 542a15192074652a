"""The result of :func:`~icl_lens.induction.confirm.confirm_induction_heads`: top-k induction heads ablated against random heads."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from jaxtyping import Float
from torch import Tensor

from icl_lens.core.results import Result

if TYPE_CHECKING:
    from icl_lens.induction.confirm import AblationCheckConfig


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
