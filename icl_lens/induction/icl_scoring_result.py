"""The result of :func:`~icl_lens.induction.icl_scoring.icl_score`: loss by position, the ICL score and its derivative."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.results import Result

if TYPE_CHECKING:
    from icl_lens.induction.icl_scoring import IclScoreConfig


def _window(center: int, rel: float) -> tuple[int, int]:
    half = int(round(center * rel))
    return max(1, center - half), center + half + 1


@dataclasses.dataclass(frozen=True)
class IclScoreResult(Result):
    """Per-token loss by position and the ICL score (``loss@late - loss@early``).

    ``loss[c, p]`` is the loss at position ``p`` of context ``c`` (NaN at position 0, which
    predicts nothing). ``bin_positions``/``bin_loss`` are the log-spaced bins and
    ``derivative`` is ``d loss / d ln(position)`` between neighbouring bins (at
    ``derivative_positions``).
    """

    title: ClassVar[str] = "ICL score"

    config: IclScoreConfig
    model_name: str
    loss: Float[Tensor, "context pos"]
    icl_score: float
    icl_score_sem: float
    early_loss: float
    late_loss: float
    slope: float
    bin_positions: Float[Tensor, " bin"]
    bin_loss: Float[Tensor, " bin"]
    derivative_positions: Float[Tensor, " bin_minus_one"]
    derivative: Float[Tensor, " bin_minus_one"]

    @property
    def per_context(self) -> Float[Tensor, " context"]:
        """Each context's own ICL score (late-window minus early-window loss); ``icl_score`` is their mean."""
        e0, e1 = self.config.early_window
        l0, l1 = self.config.late_window
        return self.loss[:, l0:l1].mean(1) - self.loss[:, e0:e1].mean(1)

    @property
    def mean_loss(self) -> Float[Tensor, " pos"]:
        """Loss at each position averaged over contexts."""
        return self.loss.nanmean(0)

    def summary(self) -> str:
        e0, e1 = self.config.early_window
        l0, l1 = self.config.late_window
        return (
            f"{self.model_name}: ICL score = loss@{self.config.late} - loss@{self.config.early} = "
            f"{self.icl_score:+.3f} ± {self.icl_score_sem:.3f} nats (positions {l0}-{l1 - 1} vs {e0}-{e1 - 1}, "
            f"{self.loss.shape[0]} contexts; negative = learns in context); d loss/d ln(pos) = {self.slope:+.3f}"
        )

    def to_dataframe(self) -> Any:
        import pandas as pd

        n = self.loss.shape[0]
        mean = self.mean_loss
        sem = self.loss.std(0) / math.sqrt(n) if n > 1 else torch.full_like(mean, float("nan"))
        pos = torch.arange(self.loss.shape[1])
        return pd.DataFrame({"position": pos[1:].numpy(), "loss": mean[1:].numpy(), "sem": sem[1:].numpy()})

    def _plot(self, ax: Any) -> None:
        pos = torch.arange(1, self.loss.shape[1])
        ax.plot(pos.numpy(), self.mean_loss[1:].numpy(), color="0.75", lw=0.7, label="mean over contexts")
        ax.plot(self.bin_positions.numpy(), self.bin_loss.numpy(), "o-", color="C0", label="log-spaced bins")
        for (a, b), color in ((self.config.early_window, "C2"), (self.config.late_window, "C3")):
            ax.axvspan(a, b - 1, color=color, alpha=0.2)
        ax.set_xscale("log")
        ax.set_xlabel("token position in context")
        ax.set_ylabel("loss (nats)")
        ax.set_title(
            f"{self.model_name}: ICL score {self.icl_score:+.3f} nats (loss@{self.config.late} - loss@{self.config.early})",
            fontsize=9,
        )
        ax.legend(fontsize=8)

    def plot_derivative(self, ax: Any = None) -> Any:
        """``d loss / d ln(position)`` against position."""
        from icl_lens.core.plotting import pyplot

        plt = pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(6.4, 3.6))
        ax.plot(self.derivative_positions.numpy(), self.derivative.numpy(), "o-", color="C1")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xscale("log")
        ax.set_xlabel("token position in context")
        ax.set_ylabel("d loss / d ln(position)")
        ax.set_title(
            f"{self.model_name}: slope over [{self.config.early}, {self.config.late}] = {self.slope:+.3f}", fontsize=9
        )
        ax.figure.tight_layout()
        return ax.figure
