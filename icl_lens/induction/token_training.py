"""Induction-consistent and inconsistent tokens over the checkpoints of a toy run.

``induction_token_losses_over_training(run)`` evaluates every checkpoint of a
:class:`~icl_lens.induction.toy.ToyRun` on the same evaluation sequences that
:func:`~icl_lens.induction.phase.phase_change` uses (drawn from the training
distribution, never a training batch), classes their tokens with
:func:`~icl_lens.induction.token_classes.classify_tokens`, and records each class's loss.

Olsson et al. (2022) predict that when induction heads form, the loss of consistent
tokens drops and the loss of inconsistent tokens *rises*: the model now bets on the
token that followed last time, and loses when the text goes elsewhere. The step where
the two curves part is compared with the phase change that the package detects from
the heads themselves (:func:`~icl_lens.induction.phase.phase_change`):

* **divergence step**: the first step where the gap ``loss(inconsistent) -
  loss(consistent)`` has grown by ``divergence_fraction`` (half, by default) of its
  largest growth over the run, linearly interpolated between checkpoints (the same
  rule as the phase-change step, applied to the gap);
* ``None`` when the gap never grows by ``min_gap`` nats.

The training-step × log-position map of ``d loss / d ln(position)`` shows where in the
context the model learns from it, checkpoint by checkpoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from icl_lens.core.errors import ConfigError
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.induction.icl_scoring import per_token_loss
from icl_lens.induction.phase import EVAL_SEED_OFFSET, PhaseConfig, crossing_step, phase_change
from icl_lens.induction.phase_result import PhaseChangeResult
from icl_lens.induction.token_classes import CONSISTENT, INCONSISTENT, class_means, classify_tokens
from icl_lens.induction.token_training_result import TokenTrainingResult
from icl_lens.induction.toy import toy_batch
from icl_lens.induction.toy_result import ToyRun


@dataclasses.dataclass(frozen=True)
class TokenTrainingConfig(Config):
    """Settings of :func:`induction_token_losses_over_training`.

    Args:
        n_eval: evaluation sequences (the first ``n_eval`` of :func:`phase_change`'s set).
        n_bins: log-spaced position bins of the ``d loss / d ln(position)`` map.
        divergence_fraction: share of the gap's largest growth that marks the divergence.
        min_gap: growth of the gap (nats) below which no divergence is reported.
        phase: settings of the phase detection, used when no ``phase=`` result is given.
        batch_size: sequences per forward pass.
        seed: the bootstrap of the intervals.
    """

    n_eval: int = 256
    n_bins: int = 8
    divergence_fraction: float = 0.5
    min_gap: float = 0.25
    phase: PhaseConfig = PhaseConfig()
    batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_eval < 2 or self.batch_size < 1 or self.n_bins < 2:
            raise ConfigError("n_eval must be >= 2, batch_size >= 1 and n_bins >= 2")
        if not 0 < self.divergence_fraction < 1:
            raise ConfigError(f"divergence_fraction must be in (0, 1), got {self.divergence_fraction}")
        if self.min_gap < 0:
            raise ConfigError(f"min_gap must be >= 0, got {self.min_gap}")


def divergence_step(
    steps: tuple[int, ...], gap: torch.Tensor, fraction: float = 0.5, min_gap: float = 0.25
) -> float | None:
    """First step where ``gap`` has grown by ``fraction`` of its largest growth since the first checkpoint."""
    growth = gap - gap[0]
    top = float(growth.max())
    if len(steps) < 2 or top < min_gap:
        return None
    return crossing_step(steps, growth / top, fraction)


def induction_token_losses_over_training(
    run: ToyRun,
    config: TokenTrainingConfig | None = None,
    *,
    phase: PhaseChangeResult | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> TokenTrainingResult:
    """Loss of consistent, inconsistent and reference tokens at every checkpoint of a toy run.

    Args:
        run: a finished (or partial) run of :func:`icl_lens.train_toy_model`.
        config: a :class:`TokenTrainingConfig`; keyword ``overrides`` replace its fields.
        phase: :func:`icl_lens.phase_change` of the same run, if already computed;
            otherwise it is run here with ``config.phase``.

    Returns:
        A :class:`TokenTrainingResult`: per-class loss by checkpoint with intervals, the
        divergence step beside the detected phase change, and the step × position map
        (``plot_map()``).
    """
    cfg = TokenTrainingConfig.resolve(config, overrides)
    if phase is None:
        phase = phase_change(run, cfg.phase, show_progress=show_progress)
    elif tuple(phase.steps) != tuple(run.checkpoint_steps):
        raise ConfigError(
            f"phase= was computed on checkpoints {phase.steps}, the run has {run.checkpoint_steps}; "
            "pass the phase_change result of this run."
        )
    tokens = toy_batch(run.config, cfg.n_eval, torch.Generator().manual_seed(run.config.seed + EVAL_SEED_OFFSET))
    classes = classify_tokens(tokens)
    model = None
    per_sequence, by_position = [], []
    for step in progress(
        run.checkpoint_steps, total=len(run.checkpoint_steps), desc="checkpoints", enabled=show_progress
    ):
        model = run.model(step, into=model)
        loss = per_token_loss(model, tokens, cfg.batch_size, show_progress=False)
        per_sequence.append(class_means(loss, classes))
        by_position.append(loss.nanmean(0))
    sequence_loss = torch.stack(per_sequence)  # [checkpoint, sequence, class]
    steps = tuple(run.checkpoint_steps)
    class_loss = sequence_loss.nanmean(1)
    gap = class_loss[:, INCONSISTENT] - class_loss[:, CONSISTENT]
    return TokenTrainingResult(
        config=cfg,
        run_config=run.config,
        steps=steps,
        classes=classes,
        sequence_loss=sequence_loss,
        loss_by_position=torch.stack(by_position),
        phase_change_step=phase.phase_change_step,
        icl_drop_step=phase.icl_drop_step,
        divergence_step=divergence_step(steps, gap, cfg.divergence_fraction, cfg.min_gap),
    )
