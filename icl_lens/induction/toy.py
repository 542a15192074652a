"""Toy transformers trained on random tokens with repeats: where induction heads are born.

Training data (``toy_batch``): every sequence is ``[BOS]`` followed by tokens drawn
uniformly from ids ``1..d_vocab-1``; then, ``repeats_per_sequence`` times, a segment of
random length ``L`` (uniform in ``[min_repeat, max_repeat]``) starting at a random
position ``a`` is copied to a later position ``b >= a + L``: right after the first copy
(``b = a + L``, as in the classic ``R R`` probe) with probability ``adjacent_fraction``,
else at a uniformly random place. Nothing about a repeat is at a fixed distance, so the
only way to predict the second copy is to look up what followed the current token
earlier: an induction head. (Repeats with a fixed period teach a positional shortcut
instead: low loss and no induction head. Without adjacent copies, short repeats are
almost always far apart and the heads learn to ignore close matches.)

Training is seeded and resumable, with bit-identical weights after a resume: the loop and
the run directory (config, checkpoints, resume state) are :mod:`icl_lens.core.training`'s,
shared with the toy worlds.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core import training
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.results import Config
from icl_lens.induction.toy_result import ToyRun

BOS_ID = 0


@dataclasses.dataclass(frozen=True)
class ToyConfig(Config):
    """A toy model and how to train it (defaults: the classic 2-layer attention-only run).

    Args:
        n_layers, n_heads, d_model, d_head, attn_only: the architecture (LayerNorm,
            learned positional embeddings, no biases' special treatment).
        d_vocab: vocabulary size; id 0 is BOS, ids ``1..d_vocab-1`` are random tokens.
        seq_len: tokens per training sequence, BOS included (also the context size).
        min_repeat, max_repeat: range of repeat lengths (``None``: ``(seq_len - 1) // 2``).
        adjacent_fraction: probability that the second copy directly follows the first.
        repeats_per_sequence: repeated segments copied into each sequence.
        batch_size, n_steps, lr, weight_decay: AdamW training.
        checkpoint_every: steps between checkpoints (step 0 is always saved).
        seed: model initialisation and data order.
    """

    n_layers: int = 2
    n_heads: int = 4
    d_model: int = 64
    d_head: int = 16
    attn_only: bool = True
    d_vocab: int = 64
    seq_len: int = 64
    min_repeat: int = 3
    max_repeat: int | None = None
    adjacent_fraction: float = 0.5
    repeats_per_sequence: int = 2
    batch_size: int = 32
    n_steps: int = 2000
    lr: float = 3e-3
    weight_decay: float = 0.01
    checkpoint_every: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.n_layers, self.n_heads, self.d_model, self.d_head, self.batch_size, self.checkpoint_every) < 1:
            raise ConfigError("sizes, batch_size and checkpoint_every must be >= 1")
        if self.d_vocab < 3:
            raise ConfigError("d_vocab must be >= 3 (id 0 is BOS)")
        if self.n_steps < 0:
            raise ConfigError("n_steps must be >= 0")
        if not 0.0 <= self.adjacent_fraction <= 1.0:
            raise ConfigError("adjacent_fraction must be in [0, 1]")
        if not 1 <= self.min_repeat <= self.repeat_max:
            raise ConfigError(
                f"need 1 <= min_repeat <= max_repeat <= (seq_len - 1) // 2, got {self.min_repeat}, {self.repeat_max}"
            )
        if self.repeat_max > (self.seq_len - 1) // 2:
            raise ConfigError(f"max_repeat={self.max_repeat} does not fit twice in seq_len={self.seq_len} after BOS")

    @property
    def repeat_max(self) -> int:
        return (self.seq_len - 1) // 2 if self.max_repeat is None else self.max_repeat


def toy_batch(config: ToyConfig, n: int, generator: torch.Generator) -> Int[Tensor, "n seq"]:
    """``n`` training sequences (see the module docstring); advances ``generator``."""
    N = config.seq_len
    tokens = torch.randint(1, config.d_vocab, (n, N), generator=generator)
    tokens[:, 0] = BOS_ID
    pos = torch.arange(N)[None]
    for _ in range(config.repeats_per_sequence):
        length = torch.randint(config.min_repeat, config.repeat_max + 1, (n, 1), generator=generator)
        u = torch.rand(n, 3, generator=generator)
        first = 1 + (u[:, :1] * (N - 2 * length)).floor().long()  # in [1, N - 2L]
        gap = (u[:, 1:2] * (N - 2 * length - first + 1)).floor().long()  # second copy in [a + L, N - L]
        gap = torch.where(u[:, 2:] < config.adjacent_fraction, 0, gap)
        second = torch.minimum(first + length + gap, N - length)
        in_copy = (pos >= second) & (pos < second + length)
        source = torch.where(in_copy, pos - second + first, pos)
        tokens = tokens.gather(1, source)
    return tokens


def build_toy_model(config: ToyConfig) -> HookedModel:
    """A freshly initialised (trainable) toy bridge for ``config``."""
    from icl_lens.core.models import tiny_model

    model = tiny_model(
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        d_model=config.d_model,
        d_head=config.d_head,
        attn_only=config.attn_only,
        n_ctx=config.seq_len,
        d_vocab=config.d_vocab,
        tokenizer=None,
        seed=config.seed,
        eval_mode=False,
    )
    model.cfg.model_name = (
        f"toy-{config.n_layers}L{config.n_heads}H{'-attn-only' if config.attn_only else ''}-seed{config.seed}"
    )
    return model


def sequence_loss(model: HookedModel, tokens: Int[Tensor, "batch seq"]) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over every position."""
    logits = model(tokens)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), tokens[:, 1:].flatten())


def train_toy_model(
    config: ToyConfig | None = None,
    directory: str | os.PathLike[str] | None = None,
    *,
    resume: bool = True,
    stop_after: int | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> ToyRun:
    """Train a toy model on CPU, checkpointing every ``config.checkpoint_every`` steps.

    Args:
        config: a :class:`ToyConfig`; keyword ``overrides`` replace its fields.
        directory: run directory (default ``<icl_lens cache>/toy_runs/<config
            fingerprint>``, so the same config is trained once and then reused).
        resume: continue from the directory's latest checkpoint if there is one (a
            finished run is returned as is); ``False`` starts again from step 0.
        stop_after: stop at this step (a checkpoint is written there) without marking the
            run complete, e.g. to test resuming. ``None``: train to ``n_steps``.
    """
    config = ToyConfig.resolve(config, overrides)
    run_dir = training.run_directory(directory, config, "toy_runs")

    def step_loss(model: HookedModel, generator: torch.Generator) -> Tensor:
        return sequence_loss(model, toy_batch(config, config.batch_size, generator))

    training.train_run(
        run_dir,
        config,
        "icl_lens.toy_run",
        lambda: build_toy_model(config),
        step_loss,
        resume=resume,
        stop_after=stop_after,
        show_progress=show_progress,
        desc="training toy",
    )
    return load_toy_run(run_dir)


def load_toy_run(directory: str | os.PathLike[str]) -> ToyRun:
    """Open a run directory written by :func:`train_toy_model` (finished or not)."""
    config, steps, losses = training.read_run(Path(directory), ToyConfig, "train one with il.train_toy_model")
    return ToyRun(config=config, directory=str(directory), checkpoint_steps=steps, train_loss=losses)
