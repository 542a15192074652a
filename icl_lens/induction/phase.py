"""The induction-head phase change, measured over the checkpoints of a toy run.

``phase_change(run)`` evaluates every checkpoint of a :class:`~icl_lens.induction.toy.ToyRun`:

* induction score (at every probe repeat length) and previous-token score of every head,
  from :func:`~icl_lens.induction.find_induction_heads` (K-composition too);
* per-token loss on a fixed evaluation set drawn from the training distribution, its
  mean (the loss curve) and the in-context score ``loss@late - loss@early`` (Olsson et
  al.'s sign: negative = the model predicts later tokens better);
* the per-token loss vectors of all checkpoints projected on their first principal
  components (PCA across checkpoints): training moves along one direction, turns
  sharply at the phase change, and settles.

**Detected step.** The *induction strength* of a checkpoint is the best head's worst
score over the repeat lengths, ``max_head min_length induction``: high only when some
head does induction at every length, not a positional shortcut that works at one. The
phase change is the first step where the strength reaches ``threshold`` (0.5 by
default), linearly interpolated between the two checkpoints around the crossing. If it
never does, no phase change is detected (``phase_change_step`` is ``None``). The step where
the in-context score falls fastest between checkpoints is reported beside it
(``icl_drop_step``) as an independent check: both should agree to a few checkpoints.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.progress import progress
from icl_lens.core.results import Config, Result
from icl_lens.induction.detectors import InductionConfig, find_induction_heads
from icl_lens.induction.icl_score import IclScoreConfig, per_token_loss, score_from_losses
from icl_lens.induction.toy import ToyConfig, ToyRun, moving_average, toy_batch

EVAL_SEED_OFFSET = 1_000_003
"""The evaluation set uses ``config.seed + EVAL_SEED_OFFSET``: never a training batch."""


@dataclasses.dataclass(frozen=True)
class PhaseConfig(Config):
    """Settings of :func:`phase_change`.

    Args:
        repeat_lengths, prefix_length, n_sequences: induction probes (must fit in the
            toy's context: ``1 + 2 * max(repeat_lengths) <= seq_len``).
        n_eval: evaluation sequences for the per-token losses.
        early, late: positions of the in-context score.
        threshold: induction strength that marks the phase change.
        n_components: principal components kept.
        batch_size: sequences per forward pass for the losses.
        seed: the probes' random tokens.
    """

    repeat_lengths: tuple[int, ...] = (5, 10, 20, 30)
    prefix_length: int = 15
    n_sequences: int = 16
    n_eval: int = 256
    early: int = 10
    late: int = 50
    threshold: float = 0.5
    n_components: int = 3
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.repeat_lengths, list):
            object.__setattr__(self, "repeat_lengths", tuple(self.repeat_lengths))
        if not 0 < self.threshold <= 1:
            raise ConfigError("threshold must be in (0, 1]")
        if self.n_eval < 2 or self.n_components < 1:
            raise ConfigError("n_eval must be >= 2 and n_components >= 1")

    def induction_config(self) -> InductionConfig:
        return InductionConfig(
            repeat_lengths=self.repeat_lengths,
            prefix_length=self.prefix_length,
            n_sequences=self.n_sequences,
            seed=self.seed,
            composition_baseline_samples=16,
            composition_targets=None,
        )

    def icl_config(self, seq_len: int) -> IclScoreConfig:
        return IclScoreConfig(early=self.early, late=self.late, window=0.1, context_length=seq_len - 1, n_bins=8)


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


def crossing_step(steps: tuple[int, ...], values: Tensor, threshold: float) -> float | None:
    """First step where ``values`` reaches ``threshold``, interpolated linearly; ``None`` if never."""
    for i in range(len(steps)):
        if float(values[i]) >= threshold:
            if i == 0:
                return float(steps[0])
            v0, v1 = float(values[i - 1]), float(values[i])
            frac = (threshold - v0) / (v1 - v0)
            return steps[i - 1] + frac * (steps[i] - steps[i - 1])
    return None


def steepest_drop_step(steps: tuple[int, ...], values: Tensor) -> float | None:
    """Midpoint of the checkpoint interval where ``values`` falls fastest per step."""
    if len(steps) < 2:
        return None
    rate = (values[1:] - values[:-1]) / torch.tensor([b - a for a, b in zip(steps[:-1], steps[1:])], dtype=values.dtype)
    i = int(rate.argmin())
    return (steps[i] + steps[i + 1]) / 2


def principal_components(vectors: Float[Tensor, "n dim"], k: int) -> tuple[Tensor, Tensor]:
    """Coordinates of ``vectors`` on their first ``k`` principal components and the
    fraction of variance each explains (SVD of the centred matrix). Signs are fixed so the
    first row has non-positive coordinates: training starts on the left and at the bottom."""
    centred = (vectors - vectors.mean(0)).double()
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    k = min(k, len(s))
    coords = u[:, :k] * s[:k]
    sign = torch.where(coords[0] > 0, -1.0, 1.0).to(coords.dtype)
    var = s**2
    return (coords * sign).float(), (var[:k] / var.sum().clamp_min(1e-30)).float()


def phase_change(
    run: ToyRun, config: PhaseConfig | None = None, *, show_progress: bool | None = None, **overrides: Any
) -> PhaseChangeResult:
    """Evaluate every checkpoint of ``run`` and detect the induction phase change.

    See the module docstring for every quantity and the definition of the detected step.
    """
    config = (config or PhaseConfig()).replace(**overrides) if overrides else (config or PhaseConfig())
    seq_len = run.config.seq_len
    induction_config = config.induction_config()
    if induction_config.n_positions > seq_len:
        raise ConfigError(
            f"probe rows need {induction_config.n_positions} positions but the toy's sequences have {seq_len}; "
            "lower repeat_lengths / prefix_length."
        )
    icl_config = config.icl_config(seq_len)
    eval_tokens = toy_batch(
        run.config, config.n_eval, torch.Generator().manual_seed(run.config.seed + EVAL_SEED_OFFSET)
    )
    model = None
    induction, prefix, previous, composition, losses = [], [], [], [], []
    for step in progress(
        run.checkpoint_steps, total=len(run.checkpoint_steps), desc="checkpoints", enabled=show_progress
    ):
        model = run.model(step, into=model)
        scan = find_induction_heads(model, induction_config)
        induction.append(scan.induction)
        prefix.append(scan.prefix_matching)
        previous.append(scan.previous_token)
        composition.append(scan.k_composition)
        losses.append(per_token_loss(model, eval_tokens, config.batch_size, show_progress=False)[:, 1:])
    loss = torch.stack(losses)  # [checkpoint, n_eval, seq_len - 1]
    padded = torch.cat([torch.full((loss.shape[0], loss.shape[1], 1), float("nan")), loss], -1)
    icl = torch.tensor([score_from_losses(p, icl_config).icl_score for p in padded])
    pca, explained = principal_components(loss.flatten(1), config.n_components)
    induction_t = torch.stack(induction)
    strength = induction_t.min(-1).values.flatten(1).max(-1).values
    steps = tuple(run.checkpoint_steps)
    return PhaseChangeResult(
        config=config,
        run_config=run.config,
        steps=steps,
        induction=induction_t,
        prefix_matching=torch.stack(prefix),
        previous_token=torch.stack(previous),
        k_composition=torch.stack(composition),
        eval_loss=loss.mean((1, 2)),
        icl_score=icl,
        loss_by_position=loss.mean(1),
        pca=pca,
        explained_variance=explained,
        train_loss=run.train_loss.float(),
        phase_change_step=crossing_step(steps, strength, config.threshold),
        icl_drop_step=steepest_drop_step(steps, icl),
    )


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


def classic_phase_change_experiment(
    directory: str | None = None,
    config: ToyConfig | None = None,
    phase_config: PhaseConfig | None = None,
    *,
    show_progress: bool | None = None,
) -> ClassicExperimentResult:
    """Train (or reuse) a 2-layer and a 1-layer attention-only toy and evaluate both.

    Args:
        directory: parent of the two run directories (``two_layer/``, ``one_layer/``);
            ``None``: the default cache directories, so a second call only re-evaluates.
        config: the 2-layer :class:`ToyConfig` (default ``ToyConfig()``); the control
            is the same with ``n_layers=1``.
    """
    from pathlib import Path

    from icl_lens.induction.toy import train_toy_model

    config = config or ToyConfig()
    results = {}
    for n_layers, name in ((2, "two_layer"), (1, "one_layer")):
        cfg = config.replace(n_layers=n_layers)
        run_dir = None if directory is None else Path(directory) / name
        run = train_toy_model(cfg, run_dir, show_progress=show_progress)
        results[name] = phase_change(run, phase_config, show_progress=show_progress)
    return ClassicExperimentResult(two_layer=results["two_layer"], one_layer=results["one_layer"])


def main(argv: list[str] | None = None) -> int:
    """``python -m icl_lens.induction.phase [--out DIR] [--steps N] [--seed S] [--threads T]``: run the
    classic experiment, write its plots and tables to ``DIR`` and print the summary."""
    import argparse
    import sys
    from pathlib import Path

    parser = argparse.ArgumentParser(prog="python -m icl_lens.induction.phase", description=main.__doc__)
    parser.add_argument("--out", default="phase_change", help="output directory (runs, plots, tables)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: ToyConfig().n_steps)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: toy models gain nothing from more)"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    config = ToyConfig(seed=args.seed)
    if args.steps is not None:
        config = config.replace(n_steps=args.steps)
    result = classic_phase_change_experiment(str(out / "runs"), config)
    result.save(out / "result")
    result.to_dataframe().to_csv(out / "checkpoints.csv", index=False)
    result.plot().savefig(out / "induction_strength.png", dpi=100)
    result.plot_side_by_side().savefig(out / "side_by_side.png", dpi=80)
    sys.stdout.write(result.two_layer.summary() + "\n" + result.one_layer.summary() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
