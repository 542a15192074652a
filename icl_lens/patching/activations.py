"""Head outputs and residual streams of a prompt batch, cached only where needed.

Hooks gather the answer position inside the forward pass, so a sweep over 30 layers keeps
``[batch, n_layers, ...]`` and never the whole ``[batch, pos, ...]`` cache. The chunking
helpers here are shared by every patching computation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HeadHook, HookedModel, ResidHook
from icl_lens.core.options import check_choice, choices
from icl_lens.core.progress import progress
from icl_lens.patching.engine import last_position_engine
from icl_lens.patching.options import ActivationHook, CapturePositions
from icl_lens.prompting.prompts import PromptBatch

TOKENS_PER_FORWARD = 1024
"""Token budget of one full forward (its ``[batch, pos, d_vocab]`` logits dominate memory)."""


def auto_batch_size(batch: PromptBatch, batch_size: int | None) -> int:
    """Prompts per chunk: ``batch_size``, or as many as fit :data:`TOKENS_PER_FORWARD`."""
    if batch_size is not None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}")
        return int(batch_size)
    return max(1, TOKENS_PER_FORWARD // max(1, batch.tokens.shape[1]))


def take_rows(batch: PromptBatch, rows: Tensor) -> PromptBatch:
    """Rows of a batch, columns untouched (unlike ``select``, nothing is re-trimmed).

    Sweeps chunk with this so that a column means the same position in every chunk.
    """
    idx = [int(i) for i in rows]

    def pick(seq: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(seq[i] for i in idx)

    r = rows.long()
    return dataclasses.replace(
        batch,
        tokens=batch.tokens[r],
        attention_mask=batch.attention_mask[r],
        last_pos=batch.last_pos[r],
        answer_ids=batch.answer_ids[r],
        query_spans=batch.query_spans[r],
        input_spans=batch.input_spans[r],
        label_spans=batch.label_spans[r],
        queries=pick(batch.queries),
        answers=pick(batch.answers),
        answer_tokens=pick(batch.answer_tokens),
        demos=pick(batch.demos),
        texts=pick(batch.texts),
    )


def row_chunks(n: int, batch_size: int | None) -> Iterator[Tensor]:
    """Index tensors of consecutive chunks of at most ``batch_size`` rows."""
    size = n if not batch_size or batch_size >= n else int(batch_size)
    if size < 1:
        raise ConfigError("batch_size must be at least 1")
    for start in range(0, n, size):
        yield torch.arange(start, min(n, start + size))


def run_capturing(
    model: HookedModel,
    batch: PromptBatch,
    names: list[str],
    positions: CapturePositions,
    fwd_hooks: hooks.FwdHooks = (),
) -> tuple[Float[Tensor, "batch d_vocab"], list[Tensor]]:
    """One forward returning the logits at ``last_pos`` and the named activations.

    ``positions="last"`` keeps each activation at ``last_pos`` only (``[batch, ...]``);
    ``"all"`` keeps every column (``[batch, pos, ...]``).
    """
    device = hooks.device_of(model)
    last = batch.last_pos.to(device)
    store: dict[str, Tensor] = {}

    def saver(name: str) -> hooks.HookFn:
        def save(act: Tensor, hook: Any) -> None:
            act = act.detach()
            store[name] = hooks.gather_positions(act, last) if positions == "last" else act

        return save

    fwd = list(fwd_hooks) + [(n, saver(n)) for n in names]
    engine = last_position_engine(model) if not fwd_hooks else None
    if engine is not None:
        # Skips unembedding every column: only the answer position's logits are needed.
        last_logits = engine.last_logits(batch.tokens, batch.attention_mask, batch.last_pos, fwd)
    else:
        with torch.no_grad():
            logits = hooks.forward(model, batch.tokens, batch.attention_mask, fwd)
        last_logits = hooks.gather_positions(logits, last).float()
    missing = [n for n in names if n not in store]
    if missing:
        raise ConfigError(f"hooks {missing} never fired; is this a TransformerLens-style model?")
    return last_logits, [store[n] for n in names]


def activations_and_logits(
    model: HookedModel,
    batch: PromptBatch,
    hook: ActivationHook,
    *,
    positions: CapturePositions = "last",
    batch_size: int | None = None,
    show_progress: bool | None = None,
) -> tuple[Tensor, Float[Tensor, "batch d_vocab"]]:
    """``hook`` of every layer, and the logits at ``last_pos``, from the same forward passes.

    ``hook`` is a per-head activation (``"z"``: every head's output before ``W_O``; ``"q"``,
    ``"k"``, ``"v"``: ``[batch, *pos, n_layers, heads, d_head]``) or a ``d_model``-wide one
    of a block (``"resid_pre"``, ``"resid_mid"``, ``"resid_post"``, ``"attn_out"``,
    ``"mlp_out"``: ``[batch, *pos, n_layers, d_model]``); ``pos`` is there only for
    ``positions="all"``.
    """
    check_choice(hook, ActivationHook, "hook")
    check_choice(positions, CapturePositions, "positions")
    n_layers = hooks.spec(model).n_layers
    if hook in choices(HeadHook):
        # each is [..., heads, d_head]: stacked into [..., n_layers, heads, d_head]
        names, layer_dim, desc = [hooks.head_hook(hook, l) for l in range(n_layers)], -3, "head activations"  # type: ignore[arg-type]
    else:
        names, layer_dim, desc = [hooks.block_hook(hook, l) for l in range(n_layers)], -2, "residual activations"  # type: ignore[arg-type]
    acts, logits = [], []
    chunks = list(row_chunks(len(batch), batch_size))
    for rows in progress(chunks, desc=desc, enabled=show_progress if len(chunks) > 1 else False):
        lg, per_layer = run_capturing(model, take_rows(batch, rows), names, positions)
        acts.append(torch.stack(per_layer, dim=layer_dim).cpu())
        logits.append(lg.cpu())
    return torch.cat(acts), torch.cat(logits)


def head_activations(
    model: HookedModel,
    batch: PromptBatch,
    *,
    positions: CapturePositions = "last",
    batch_size: int | None = None,
    show_progress: bool | None = None,
) -> Float[Tensor, "batch *pos n_layers n_heads d_head"]:
    """Every head's output ``z`` (before ``W_O``) at each prompt's ``last_pos``.

    Returns ``[batch, n_layers, n_heads, d_head]``; with ``positions="all"``,
    ``[batch, pos, n_layers, n_heads, d_head]`` (every column).
    """
    return activations_and_logits(
        model, batch, "z", positions=positions, batch_size=batch_size, show_progress=show_progress
    )[0]


def mean_head_activations(
    model: HookedModel, batch: PromptBatch, *, batch_size: int | None = None, show_progress: bool | None = None
) -> Float[Tensor, "n_layers n_heads d_head"]:
    """Mean over the batch of every head's output at ``last_pos`` (Todd et al.'s mean activation)."""
    return head_activations(model, batch, batch_size=batch_size, show_progress=show_progress).mean(0)


def resid_activations(
    model: HookedModel,
    batch: PromptBatch,
    *,
    hook: ResidHook = "resid_post",
    positions: CapturePositions = "last",
    batch_size: int | None = None,
    show_progress: bool | None = None,
) -> Float[Tensor, "batch *pos n_layers d_model"]:
    """The residual stream of every layer at ``last_pos``: ``[batch, n_layers, d_model]``.

    ``hook`` is ``"resid_pre"``, ``"resid_mid"`` or ``"resid_post"``; with
    ``positions="all"``, ``[batch, pos, n_layers, d_model]``.
    """
    check_choice(hook, ResidHook, "hook")
    return activations_and_logits(
        model, batch, hook, positions=positions, batch_size=batch_size, show_progress=show_progress
    )[0]
