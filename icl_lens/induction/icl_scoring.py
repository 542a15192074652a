"""The in-context learning score of Olsson et al. (2022) and loss by context position.

A model that learns from its context predicts later tokens better than early ones. The
ICL score is the loss on the 500th token of a context minus the loss on the 50th::

    icl_score = loss@500 - loss@50        (nats; negative = the model learns in context)

This is Olsson et al.'s sign convention: more negative is more in-context learning. With a
few contexts a single position is noisy, so each loss is averaged over a window of
positions ``±window`` (relative) around it: by default ±20 %, positions 40-60 and 400-600
of every context (the same width in log-position on both sides).

Loss at position ``p`` is the loss of predicting the token at position ``p`` from
positions ``< p``. Contexts built from text start with BOS at position 0, so position
``p`` holds the ``p``-th text token. A token batch passed in is used as is (position =
column).

How loss falls with context is summarised by its derivative with respect to
``log(position)``: losses are averaged in log-spaced position bins and differenced
(``d loss / d ln p`` between neighbouring bins), and a straight line is fitted to loss vs
``ln p`` between the early and late positions (its slope is ``slope``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from importlib import resources
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, ModelNotAvailableError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.induction.icl_scoring_result import IclScoreResult, _window

CORPUS_FILE = "persuasion_ch01-12.txt"


def load_corpus() -> str:
    """The built-in natural text: Chapters 1-12 of Austen's *Persuasion* (public domain;
    see ``icl_lens/data/corpus/PROVENANCE.md``)."""
    return resources.files("icl_lens").joinpath("data", "corpus", CORPUS_FILE).read_text(encoding="utf-8")


@dataclasses.dataclass(frozen=True)
class IclScoreConfig(Config):
    """Settings of :func:`icl_score`.

    Args:
        n_contexts: contexts cut from a text (non-overlapping, picked with ``seed``).
        context_length: text tokens per context (BOS not counted).
        early, late: positions compared (Olsson et al.: 50 and 500).
        window: half-width of the averaging window around each, relative to the position.
        n_bins: log-spaced position bins for the derivative curve.
        batch_size: contexts per forward pass.
        seed: which slices of the text become contexts.
    """

    n_contexts: int = 8
    context_length: int = 600
    early: int = 50
    late: int = 500
    window: float = 0.2
    n_bins: int = 16
    batch_size: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.early < self.late:
            raise ConfigError(f"need 1 <= early < late, got early={self.early}, late={self.late}")
        if not 0 <= self.window < 1:
            raise ConfigError("window must be in [0, 1)")
        if self.context_length + 1 < self.late_window[1]:  # positions run 1..context_length
            raise ConfigError(
                f"context_length={self.context_length} is too short for late={self.late} with window "
                f"{self.window}: it must be at least {self.late_window[1] - 1}."
            )
        if self.n_contexts < 1 or self.batch_size < 1 or self.n_bins < 2:
            raise ConfigError("n_contexts, batch_size must be >= 1 and n_bins >= 2")

    @property
    def early_window(self) -> tuple[int, int]:
        """``[start, stop)`` positions averaged for the early loss."""
        return _window(self.early, self.window)

    @property
    def late_window(self) -> tuple[int, int]:
        return _window(self.late, self.window)


def per_token_loss(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    batch_size: int = 8,
    attention_mask: Int[Tensor, "batch pos"] | None = None,
    fwd_hooks: hooks.FwdHooks = (),
    show_progress: bool | None = None,
) -> Float[Tensor, "batch pos"]:
    """Loss at every position (``[:, 0]`` is NaN): ``-log p(token[p] | tokens[<p])``."""
    out = torch.full(tokens.shape, float("nan"))
    starts = list(range(0, tokens.shape[0], batch_size))
    with torch.no_grad():
        for start in progress(starts, desc="per-token loss", total=len(starts), enabled=show_progress):
            chunk = tokens[start : start + batch_size]
            mask = None if attention_mask is None else attention_mask[start : start + batch_size]
            logits = hooks.forward(model, chunk, mask, fwd_hooks).float()
            target = chunk[:, 1:].to(logits.device)
            loss = F.cross_entropy(logits[:, :-1].flatten(0, 1), target.flatten(), reduction="none")
            out[start : start + batch_size, 1:] = loss.view(target.shape).cpu()
    return out


def context_tokens(
    model: HookedModel, text: str | Sequence[str] | Tensor | None, config: IclScoreConfig
) -> Int[Tensor, "context pos"]:
    """The token batch :func:`icl_score` evaluates (see its docstring)."""
    if isinstance(text, Tensor):
        tokens = text if text.ndim == 2 else text[None]
        if tokens.shape[1] < config.late_window[1]:
            raise ConfigError(
                f"token contexts have {tokens.shape[1]} positions; late={config.late} needs {config.late_window[1]}."
            )
        return tokens.long()
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ModelNotAvailableError(
            "this model has no tokenizer: pass a token tensor [contexts, positions] instead of text."
        )
    bos = getattr(tok, "bos_token_id", None)
    prefix = [] if bos is None else [int(bos)]
    if text is None or isinstance(text, str):
        ids = tok.encode(load_corpus() if text is None else text, add_special_tokens=False)
        n_slots = len(ids) // config.context_length
        if n_slots < config.n_contexts:
            raise ConfigError(
                f"the text has {len(ids)} tokens: only {n_slots} contexts of {config.context_length}; "
                f"lower n_contexts or context_length, or pass a longer text."
            )
        slots = torch.randperm(n_slots, generator=torch.Generator().manual_seed(config.seed))[: config.n_contexts]
        rows = [
            prefix + ids[int(s) * config.context_length : (int(s) + 1) * config.context_length]
            for s in sorted(slots.tolist())
        ]
        return torch.tensor(rows)
    encoded = [prefix + tok.encode(t, add_special_tokens=False)[: config.context_length] for t in text]
    length = min(len(e) for e in encoded)
    if length < config.late_window[1]:
        raise ConfigError(
            f"the shortest text has {length - len(prefix)} tokens; late={config.late} needs {config.late_window[1]}."
        )
    return torch.tensor([e[:length] for e in encoded])


def icl_score(
    model: HookedModel,
    text: str | Sequence[str] | Tensor | None = None,
    config: IclScoreConfig | None = None,
    *,
    fwd_hooks: hooks.FwdHooks = (),
    show_progress: bool | None = None,
    **overrides: Any,
) -> IclScoreResult:
    """Loss by context position on natural text, and the ICL score ``loss@500 - loss@50``.

    Args:
        model: any TransformerLens-style model.
        text: ``None`` (the built-in Austen corpus), one long string (cut into
            ``n_contexts`` non-overlapping contexts of ``context_length`` tokens, BOS
            prepended), a list of strings (one context each, truncated to the shortest),
            or a token tensor ``[contexts, positions]`` used as is.
        config: an :class:`IclScoreConfig`; keyword ``overrides`` replace its fields.
        fwd_hooks: hooks active during the forward passes (e.g. an ablation).
        show_progress: progress bar over the forward passes (default: the global setting).
    """
    config = IclScoreConfig.resolve(config, overrides)
    tokens = context_tokens(model, text, config)
    loss = per_token_loss(model, tokens, config.batch_size, fwd_hooks=fwd_hooks, show_progress=show_progress)
    return score_from_losses(loss, config, model_name(model))


def log_position_bins(n_pos: int, n_bins: int) -> list[tuple[int, int]]:
    """Log-spaced ``[start, stop)`` bins over positions ``1 .. n_pos - 1`` (empty bins dropped)."""
    edges = torch.unique(torch.logspace(0, math.log10(n_pos), n_bins + 1).floor().long())
    return [(a, b) for a, b in zip(edges[:-1].tolist(), edges[1:].tolist()) if b > a]


def bin_centres(bins: Sequence[tuple[int, int]]) -> Float[Tensor, " bin"]:
    """Geometric mean position of each ``[start, stop)`` bin."""
    return torch.tensor([float(torch.arange(a, b, dtype=torch.float64).log().mean().exp()) for a, b in bins])


def log_derivative(
    positions: Float[Tensor, " bin"], loss: Float[Tensor, "... bin"]
) -> tuple[Float[Tensor, " bin_minus_one"], Float[Tensor, "... bin_minus_one"]]:
    """``d loss / d ln(position)`` between neighbouring bins, at the log-midpoints between them."""
    log_pos = positions.log()
    step = log_pos[1:] - log_pos[:-1]
    return (0.5 * (log_pos[1:] + log_pos[:-1])).exp(), (loss[..., 1:] - loss[..., :-1]) / step


def score_from_losses(loss: Float[Tensor, "context pos"], config: IclScoreConfig, name: str = "") -> IclScoreResult:
    """Build an :class:`IclScoreResult` from per-token losses (``[:, 0]`` ignored)."""
    e0, e1 = config.early_window
    l0, l1 = config.late_window
    if loss.shape[1] < l1:
        raise ConfigError(f"losses cover {loss.shape[1]} positions; late window needs {l1}.")
    early = loss[:, e0:e1].mean(1)
    late = loss[:, l0:l1].mean(1)
    diff = late - early
    sem = float(diff.std() / math.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    mean = loss.nanmean(0)
    bins = log_position_bins(loss.shape[1], config.n_bins)
    bin_pos = bin_centres(bins)
    bin_loss = torch.tensor([float(mean[a:b].mean()) for a, b in bins])
    derivative_pos, derivative = log_derivative(bin_pos, bin_loss)
    fit = torch.arange(config.early, config.late + 1)
    x = fit.double().log()
    y = mean[fit].double()
    slope = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    return IclScoreResult(
        config=config,
        model_name=name,
        loss=loss.float(),
        icl_score=float(diff.mean()),
        icl_score_sem=sem,
        early_loss=float(early.mean()),
        late_loss=float(late.mean()),
        slope=slope,
        bin_positions=bin_pos.float(),
        bin_loss=bin_loss.float(),
        derivative_positions=derivative_pos.float(),
        derivative=derivative.float(),
    )
