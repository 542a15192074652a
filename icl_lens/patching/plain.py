"""The plain path of a sweep: one full forward per patched variant, with a hook that sets it.

Variants are stacked along the batch axis, several per forward pass (as many as fit
:data:`~icl_lens.patching.activations.TOKENS_PER_FORWARD`), which changes nothing in the
arithmetic of each: every copy of a prompt is its own row.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.hooks import HookedModel
from icl_lens.core.progress import progress
from icl_lens.patching.activations import TOKENS_PER_FORWARD
from icl_lens.patching.metrics import Metric, evaluate_metric
from icl_lens.prompting.prompts import PromptBatch

Setter = Callable[[Tensor], Tensor]
"""Writes one variant's patch into an activation ``[batch, pos, ...]`` (in place) and returns it."""


def setter(values: Tensor, *, head: int | None, at: Tensor | int | None) -> Setter:
    """Set ``values`` into an activation at ``at`` (and, for ``[batch, pos, head, d_head]`` hooks, ``head``).

    ``at`` is a ``[batch]`` tensor of one column per row (``values`` is ``[batch, ...]``),
    an int column (``values`` is ``[batch, ...]``), or ``None`` for every column
    (``values`` is ``[batch, pos, ...]``).
    """

    def put(act: Tensor) -> Tensor:
        if isinstance(at, Tensor):
            index: tuple[Any, ...] = (torch.arange(act.shape[0], device=act.device), at.to(act.device))
        else:
            index = (slice(None), slice(None) if at is None else at)
        act[index + (() if head is None else (head,))] = values.to(act)
        return act

    return put


def plain_chunk(
    model: HookedModel,
    sub: PromptBatch,
    metric: Metric,
    setters: Sequence[tuple[str, Setter]],
    show_progress: bool | None,
) -> tuple[Tensor, Tensor]:
    """Baseline ``[batch]`` and patched ``[variant, batch]`` metric values of one chunk of prompts."""
    n_prompts, n_cols = sub.tokens.shape
    with torch.no_grad():
        logits = hooks.forward(model, sub.tokens, sub.attention_mask)
        baseline = evaluate_metric(metric, hooks.gather_positions(logits, sub.last_pos), sub)
    del logits
    out = torch.full((len(setters), n_prompts), float("nan"))
    per_forward = max(1, TOKENS_PER_FORWARD // (n_prompts * n_cols))
    groups = [list(range(i, min(i + per_forward, len(setters)))) for i in range(0, len(setters), per_forward)]
    for group in progress(groups, desc="patching (plain)", enabled=show_progress):
        copies = len(group)
        by_hook: dict[str, list[tuple[int, Setter]]] = defaultdict(list)
        for slot, i in enumerate(group):
            by_hook[setters[i][0]].append((slot, setters[i][1]))

        def make_hook(items: list[tuple[int, Setter]], copies: int = copies) -> hooks.HookFn:
            def patch(act: Tensor, hook: Any) -> Tensor:
                act = act.clone()
                view = act.view(copies, n_prompts, *act.shape[1:])
                for slot, set_variant in items:
                    view[slot] = set_variant(view[slot])
                return act

            return patch

        fwd = [(name, make_hook(items)) for name, items in by_hook.items()]
        with torch.no_grad():
            logits = hooks.forward(model, sub.tokens.repeat(copies, 1), sub.attention_mask.repeat(copies, 1), fwd)
            last = hooks.gather_positions(logits, sub.last_pos.repeat(copies)).view(copies, n_prompts, -1)
        del logits
        for slot, i in enumerate(group):
            out[i] = evaluate_metric(metric, last[slot], sub)
    return baseline, out
