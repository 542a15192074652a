"""Results of the phase-change measurement: one toy run over its checkpoints, and the classic 2-layer vs 1-layer experiment."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from jaxtyping import Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.training import moving_average
from icl_lens.induction.toy import ToyConfig

if TYPE_CHECKING:
    from icl_lens.induction.phase import PhaseConfig


@dataclasses.dataclass(frozen=True)
class PhaseChangeResult(Result):
    """Every checkpoint of a toy run, evaluated (see the module docstring).

    Shapes: ``induction [checkpoint, layer, head, length]``, ``previous_token``,
    ``prefix_matching`` ``[checkpoint, layer, head]``, ``k_composition
    [checkpoint, layer, head, layer, head]``, ``eval_loss``/``icl_score``
    ``[checkpoint]``, ``pca [checkpoint, component]``.
    """

    title: ClassVar[str] = "Phase change"

    config: PhaseConfig
    run_config: ToyConfig
    steps: tuple[int, ...]
    induction: Float[Tensor, "checkpoint layer head length"]
    prefix_matching: Float[Tensor, "checkpoint layer head"]
    previous_token: Float[Tensor, "checkpoint layer head"]
    k_composition: Float[Tensor, "checkpoint layer head layer2 head2"]
    eval_loss: Float[Tensor, " checkpoint"]
    icl_score: Float[Tensor, " checkpoint"]
    loss_by_position: Float[Tensor, "checkpoint pos"]
    pca: Float[Tensor, "checkpoint component"]
    explained_variance: Float[Tensor, " component"]
    train_loss: Float[Tensor, " step"]
    phase_change_step: float | None
    icl_drop_step: float | None

    @property
    def induction_strength(self) -> Float[Tensor, " checkpoint"]:
        """``max over heads of min over repeat lengths`` of the induction score."""
        return self.induction.min(-1).values.flatten(1).max(-1).values

    @property
    def previous_token_strength(self) -> Float[Tensor, " checkpoint"]:
        """Best previous-token score of any head."""
        return self.previous_token.flatten(1).max(-1).values

    def final_heads(self) -> dict[str, Any]:
        """At the last checkpoint: the best induction head (its score at each length) and
        the best previous-token head."""
        ind = self.induction[-1].min(-1).values
        li, hi = divmod(int(ind.flatten().argmax()), ind.shape[1])
        prev = self.previous_token[-1]
        lp, hp = divmod(int(prev.flatten().argmax()), prev.shape[1])
        return {
            "induction_head": (li, hi),
            "induction_by_length": dict(zip(self.config.repeat_lengths, self.induction[-1, li, hi].tolist())),
            "previous_token_head": (lp, hp),
            "previous_token_score": float(prev[lp, hp]),
        }

    def summary(self) -> str:
        n_layers = self.induction.shape[1]
        final = self.final_heads()
        if self.phase_change_step is None:
            found = f"no phase change (induction strength never reached {self.config.threshold})"
        else:
            found = f"phase change at step {self.phase_change_step:.0f}"
        (li, hi), (lp, hp) = final["induction_head"], final["previous_token_head"]
        return (
            f"{n_layers}-layer toy: {found}; ICL-score drop steepest at step {self.icl_drop_step:.0f}; "
            f"final best induction head L{li}H{hi} (min over lengths {min(final['induction_by_length'].values()):.2f}), "
            f"best previous-token head L{lp}H{hp} ({final['previous_token_score']:.2f}); "
            f"eval loss {float(self.eval_loss[0]):.2f} -> {float(self.eval_loss[-1]):.2f}, "
            f"ICL score {float(self.icl_score[0]):+.2f} -> {float(self.icl_score[-1]):+.2f}"
        )

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for i, step in enumerate(self.steps):
            row: dict[str, Any] = {
                "step": step,
                "eval_loss": float(self.eval_loss[i]),
                "icl_score": float(self.icl_score[i]),
                "induction_strength": float(self.induction_strength[i]),
                "previous_token_strength": float(self.previous_token_strength[i]),
            }
            for c in range(self.pca.shape[1]):
                row[f"pc{c + 1}"] = float(self.pca[i, c])
            rows.append(row)
        return pd.DataFrame(rows)

    def head_dataframe(self) -> Any:
        """Long format: one row per (checkpoint, layer, head) with every score."""
        import pandas as pd

        rows = []
        for i, step in enumerate(self.steps):
            for l in range(self.induction.shape[1]):
                for h in range(self.induction.shape[2]):
                    row: dict[str, Any] = {"step": step, "layer": l, "head": h}
                    for j, L in enumerate(self.config.repeat_lengths):
                        row[f"induction_len{L}"] = float(self.induction[i, l, h, j])
                    row["prefix_matching"] = float(self.prefix_matching[i, l, h])
                    row["previous_token"] = float(self.previous_token[i, l, h])
                    rows.append(row)
        return pd.DataFrame(rows)

    # -- plots ------------------------------------------------------------------------
    def _mark(self, ax: Any) -> None:
        if self.phase_change_step is not None:
            ax.axvline(
                self.phase_change_step, color="k", ls="--", lw=0.8, label=f"phase change ({self.phase_change_step:.0f})"
            )

    def _plot(self, ax: Any) -> None:
        self.plot_scores(ax)

    def plot_scores(self, ax: Any = None) -> Any:
        """Every head's induction score (worst length) and previous-token score vs step."""
        ax = _axes(ax)
        steps = list(self.steps)
        n_layers, n_heads = self.induction.shape[1], self.induction.shape[2]
        worst = self.induction.min(-1).values
        for l in range(n_layers):
            for h in range(n_heads):
                ax.plot(steps, worst[:, l, h].numpy(), color=f"C{l}", lw=1.0, alpha=0.8)
                ax.plot(steps, self.previous_token[:, l, h].numpy(), color=f"C{l}", lw=0.8, ls=":", alpha=0.8)
        for l in range(n_layers):
            ax.plot([], [], color=f"C{l}", label=f"layer {l}: induction (solid), previous token (dotted)")
        ax.axhline(self.config.threshold, color="0.5", lw=0.5)
        self._mark(ax)
        ax.set_ylim(0, 1)
        ax.set_xlabel("training step")
        ax.set_ylabel("score")
        ax.set_title(
            "head scores (induction: worst of lengths " + ",".join(map(str, self.config.repeat_lengths)) + ")",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        return ax.figure

    def plot_loss(self, ax: Any = None) -> Any:
        """Training loss (moving average) and evaluation loss; the bump sits at the phase change."""
        ax = _axes(ax)
        if len(self.train_loss):
            ax.plot(*moving_average(self.train_loss), color="0.6", lw=0.8, label="train (moving avg)")
        ax.plot(list(self.steps), self.eval_loss.numpy(), "o-", ms=2, color="C0", label="eval")
        self._mark(ax)
        ax.set_xlabel("training step")
        ax.set_ylabel("loss (nats)")
        ax.legend(fontsize=7)
        return ax.figure

    def plot_icl(self, ax: Any = None) -> Any:
        """In-context score ``loss@late - loss@early`` vs step."""
        ax = _axes(ax)
        ax.plot(list(self.steps), self.icl_score.numpy(), "o-", ms=2, color="C3")
        self._mark(ax)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"loss@{self.config.late} - loss@{self.config.early} (nats)")
        return ax.figure

    def plot_pca(self, ax: Any = None) -> Any:
        """Per-token loss vectors of every checkpoint on PC1/PC2, coloured by step."""
        ax = _axes(ax)
        ax.plot(self.pca[:, 0].numpy(), self.pca[:, 1].numpy(), color="0.7", lw=0.6)
        sc = ax.scatter(self.pca[:, 0].numpy(), self.pca[:, 1].numpy(), c=list(self.steps), cmap="viridis", s=12)
        if self.phase_change_step is not None:
            i = min(range(len(self.steps)), key=lambda j: abs(self.steps[j] - self.phase_change_step))
            ax.scatter(
                [float(self.pca[i, 0])], [float(self.pca[i, 1])], marker="x", color="r", s=60, label="phase change"
            )
            ax.legend(fontsize=7)
        ev = self.explained_variance
        ax.set_xlabel(f"PC1 ({float(ev[0]):.0%})")
        ax.set_ylabel(f"PC2 ({float(ev[1]):.0%})" if len(ev) > 1 else "PC2")
        ax.figure.colorbar(sc, ax=ax, label="step", shrink=0.8)
        return ax.figure

    def plot_overview(self) -> Any:
        """The four plots in one figure."""
        from icl_lens.core.plotting import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(2, 2, figsize=(10, 7))
        self.plot_scores(axes[0, 0])
        self.plot_loss(axes[0, 1])
        self.plot_icl(axes[1, 0])
        self.plot_pca(axes[1, 1])
        fig.tight_layout()
        return fig


def _axes(ax: Any) -> Any:
    if ax is not None:
        return ax
    from icl_lens.core.plotting import pyplot

    _, ax = pyplot().subplots(figsize=(6.4, 4.0))
    return ax


# ---------------------------------------------------------------------------------------
# the classic experiment: 2-layer vs 1-layer attention-only
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ClassicExperimentResult(Result):
    """A 2-layer and a 1-layer attention-only toy, same data and seed, side by side."""

    title: ClassVar[str] = "Induction phase change: 2-layer vs 1-layer"

    two_layer: PhaseChangeResult
    one_layer: PhaseChangeResult

    def summary(self) -> str:
        return f"{self.two_layer.summary()} | {self.one_layer.summary()}"

    def to_dataframe(self) -> Any:
        import pandas as pd

        frames = []
        for name, res in (("2-layer", self.two_layer), ("1-layer", self.one_layer)):
            df = res.to_dataframe()
            df.insert(0, "model", name)
            frames.append(df)
        return pd.concat(frames, ignore_index=True)

    def _plot(self, ax: Any) -> None:
        for name, res, color in (("2-layer", self.two_layer, "C3"), ("1-layer", self.one_layer, "C0")):
            ax.plot(list(res.steps), res.induction_strength.numpy(), color=color, label=f"{name}: induction strength")
            if res.phase_change_step is not None:
                ax.axvline(res.phase_change_step, color=color, ls="--", lw=0.8)
        ax.axhline(self.two_layer.config.threshold, color="0.5", lw=0.5)
        ax.set_ylim(0, 1)
        ax.set_xlabel("training step")
        ax.set_ylabel("max head, min length induction score")
        ax.legend(fontsize=8)

    def plot_side_by_side(self) -> Any:
        """Head scores, losses, ICL score and PCA: 2-layer on the left, 1-layer on the right."""
        from icl_lens.core.plotting import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(4, 2, figsize=(10, 13))
        for row in (1, 2):  # same loss and ICL-score scales, so the two models compare at a glance
            axes[row, 1].sharey(axes[row, 0])
        for col, res in enumerate((self.two_layer, self.one_layer)):
            res.plot_scores(axes[0, col])
            res.plot_loss(axes[1, col])
            res.plot_icl(axes[2, col])
            res.plot_pca(axes[3, col])
            axes[0, col].set_title(f"{res.induction.shape[1]}-layer: " + axes[0, col].get_title(), fontsize=9)
        fig.tight_layout()
        return fig
