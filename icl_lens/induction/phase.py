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
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.induction.detectors import InductionConfig, find_induction_heads
from icl_lens.induction.icl_scoring import IclScoreConfig, per_token_loss, score_from_losses
from icl_lens.induction.phase_result import ClassicExperimentResult, PhaseChangeResult
from icl_lens.induction.toy import ToyConfig, toy_batch
from icl_lens.induction.toy_result import ToyRun

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
    config = PhaseConfig.resolve(config, overrides)
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
