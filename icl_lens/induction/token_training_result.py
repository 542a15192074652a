"""The result of :func:`icl_lens.induction.token_training.induction_token_losses_over_training`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import PairedComparison, mean_interval
from icl_lens.induction.icl_scoring import bin_centres, log_derivative, log_position_bins
from icl_lens.induction.token_classes import (
    CLASS_COLORS,
    CONSISTENT,
    INCONSISTENT,
    TOKEN_CLASSES,
    class_counts,
    paired_over_units,
)
from icl_lens.induction.toy import ToyConfig

if TYPE_CHECKING:
    from icl_lens.induction.token_training import TokenTrainingConfig


@dataclasses.dataclass(frozen=True)
class TokenTrainingResult(Result):
    """Per-class loss at every checkpoint of a toy run, and where the classes part.

    ``sequence_loss[s, i, c]`` is the mean loss of class ``c`` (``TOKEN_CLASSES``) in
    evaluation sequence ``i`` at checkpoint ``steps[s]`` (NaN where the sequence has no
    token of that class); ``loss_by_position[s, p]`` the loss at position ``p`` averaged
    over sequences (NaN at 0). ``phase_change_step`` and ``icl_drop_step`` come from
    :func:`icl_lens.phase_change`; ``divergence_step`` is where the inconsistent-minus-
    consistent gap opens (see :mod:`icl_lens.induction.token_training`).
    """

    title: ClassVar[str] = "Induction token classes over training"

    config: TokenTrainingConfig
    run_config: ToyConfig
    steps: tuple[int, ...]
    classes: Int[Tensor, "sequence pos"]
    sequence_loss: Float[Tensor, "checkpoint sequence n_classes"]
    loss_by_position: Float[Tensor, "checkpoint pos"]
    phase_change_step: float | None
    icl_drop_step: float | None
    divergence_step: float | None

    # -- numbers ----------------------------------------------------------------------
    @property
    def class_loss(self) -> Float[Tensor, "checkpoint n_classes"]:
        """Mean over sequences of each sequence's class mean."""
        return self.sequence_loss.nanmean(1)

    @property
    def gap(self) -> Float[Tensor, " checkpoint"]:
        """``loss(inconsistent) - loss(consistent)`` at each checkpoint."""
        return self.class_loss[:, INCONSISTENT] - self.class_loss[:, CONSISTENT]

    @property
    def checkpoints_apart(self) -> float | None:
        """``|divergence_step - phase_change_step|`` in checkpoint intervals (``None`` if either is missing)."""
        if self.divergence_step is None or self.phase_change_step is None:
            return None
        return abs(self.divergence_step - self.phase_change_step) / self.run_config.checkpoint_every

    def counts(self) -> Any:
        """Tokens of the evaluation set in each class, with the share's Wilson interval."""
        return class_counts(self.classes)

    def to_dataframe(self) -> Any:
        """One row per checkpoint and class: loss with a bootstrap interval over sequences."""
        import pandas as pd

        rows = []
        for s, step in enumerate(self.steps):
            for code, name in enumerate(TOKEN_CLASSES):
                values = self.sequence_loss[s, :, code]
                values = values[values.isfinite()]
                mean, low, high = mean_interval(values, seed=self.config.seed)
                rows.append(
                    dict(step=step, token_class=name, loss=mean, ci_low=low, ci_high=high, n_sequences=values.numel())
                )
        return pd.DataFrame(rows)

    def difference(self, step: int | None = None) -> PairedComparison:
        """Inconsistent against consistent loss at checkpoint ``step`` (default: the last),
        paired by sequence (permutation test, bootstrap interval)."""
        s = len(self.steps) - 1 if step is None else self.steps.index(step)
        a, b = self.sequence_loss[s, :, INCONSISTENT], self.sequence_loss[s, :, CONSISTENT]
        return paired_over_units(a, b, ("inconsistent", "consistent"), self.config.seed)

    def derivative_map(self) -> tuple[Float[Tensor, " bin"], Float[Tensor, "checkpoint bin"]]:
        """``d loss / d ln(position)`` at each checkpoint, between log-spaced position bins.

        Returns ``(positions, derivative)``: the log-midpoints between bins and the map.
        """
        bins = log_position_bins(self.loss_by_position.shape[1], self.config.n_bins)
        binned = torch.stack([self.loss_by_position[:, a:b].mean(1) for a, b in bins], 1)
        return log_derivative(bin_centres(bins), binned)

    def summary(self) -> str:
        def at(x: float | None) -> str:
            return "none" if x is None else f"step {x:.0f}"

        last = self.class_loss[-1]
        d = self.difference()
        apart = self.checkpoints_apart
        agree = "" if apart is None else f" ({apart:.1f} checkpoints apart)"
        return (
            f"{self.run_config.n_layers}-layer toy: consistent and inconsistent losses part at "
            f"{at(self.divergence_step)}, phase change detected at {at(self.phase_change_step)}{agree}; "
            f"final loss reference {float(last[0]):.2f}, consistent {float(last[1]):.2f}, inconsistent "
            f"{float(last[2]):.2f} nats (inconsistent - consistent {d.difference:+.2f}, 95% CI "
            f"{d.ci_low:+.2f} to {d.ci_high:+.2f}, n = {d.n} sequences)"
        )

    # -- pictures ---------------------------------------------------------------------
    def _mark(self, ax: Any) -> None:
        if self.phase_change_step is not None:
            ax.axvline(
                self.phase_change_step, color="k", ls="--", lw=0.8, label=f"phase change ({self.phase_change_step:.0f})"
            )
        if self.divergence_step is not None:
            ax.axvline(
                self.divergence_step, color="C1", ls=":", lw=1.0, label=f"classes part ({self.divergence_step:.0f})"
            )

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        for name, part in df.groupby("token_class", sort=False):
            ax.plot(part.step, part.loss, "o-", ms=2, color=CLASS_COLORS[name], label=name)
            ax.fill_between(part.step, part.ci_low, part.ci_high, color=CLASS_COLORS[name], alpha=0.2, lw=0)
        self._mark(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (nats)")
        ax.set_title("loss by induction class over training (95% CI over sequences)", fontsize=9)
        ax.legend(fontsize=7)

    def plot_map(self, ax: Any = None) -> Any:
        """The training-step × log-position map of ``d loss / d ln(position)`` (blue: loss falls with context)."""
        from icl_lens.core.plotting import pyplot

        fig, ax = pyplot().subplots(figsize=(6.4, 4.0)) if ax is None else (ax.figure, ax)
        positions, derivative = self.derivative_map()
        bound = max(1e-6, float(derivative.abs().nan_to_num(0).max()))
        image = ax.pcolormesh(
            list(self.steps),
            positions.numpy(),
            derivative.T.numpy(),
            cmap="RdBu_r",
            vmin=-bound,
            vmax=bound,
            shading="nearest",
        )
        ax.set_yscale("log")
        self._mark(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel("token position")
        ax.legend(fontsize=7, loc="upper left")
        fig.colorbar(image, ax=ax, label="d loss / d ln(position)")
        fig.tight_layout()
        return fig
