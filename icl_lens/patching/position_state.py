"""What the position engine (:mod:`icl_lens.patching.position_engine`) keeps between the
unpatched forward and the patched variants, and how a batch of variants is described."""

from __future__ import annotations

import dataclasses

from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.patching.options import PatchSite

ALL_COLUMNS = -1
"""A variant's ``column`` when it patches every column at once (``positions="all"``)."""
ANSWER_COLUMN = -2
"""A variant's ``column`` when it patches each prompt's answer position (``last_pos``)."""

WINDOW_ROWS = 4096
"""Residual rows (prompts x variants x window columns) recomputed together."""
LOGIT_ROWS = 256
"""Answer rows unembedded together (each is a ``d_vocab`` row of logits)."""

HEAD_SITES = ("z", "q", "k", "v")


@dataclasses.dataclass
class PromptState:
    """What the unpatched forward of a chunk of prompts leaves behind for the variants."""

    keys: list[Float[Tensor, "batch kv_heads pos d_head"]]
    """Per block: keys after the rotary embedding, every column."""
    values: list[Float[Tensor, "batch kv_heads pos d_head"]]
    resid: Float[Tensor, "batch n_layers_plus_1 pos d_model"]
    """Residual stream entering each block, every column; the last entry leaves the last block."""
    site: list[Tensor] | None
    """Per block, what the patched site needs: ``z`` ``[batch, pos, n_heads, d_head]``
    (head sites) or ``resid_mid`` ``[batch, pos, d_model]`` (``resid_mid``, ``mlp_out``)."""
    queries: list[Tensor] | None
    """Per block, queries after the rotary embedding ``[batch, n_heads, pos, d_head]`` (``k``, ``v``)."""
    real: Bool[Tensor, "batch pos"]
    position_ids: Int[Tensor, "batch pos"]
    last_pos: Int[Tensor, " batch"]
    end: int
    """One past the last answer position of the chunk: later columns cannot matter."""
    logits: Float[Tensor, "batch d_vocab"]
    """Logits of the unpatched forward at the answer positions."""


@dataclasses.dataclass(frozen=True)
class PositionPatches:
    """Patched variants of a chunk of prompts, all at one site.

    Variant ``i`` replaces the activation ``site`` of block ``layer[i]`` (head
    ``head[i]`` for the per-head sites, ``-1`` otherwise) at column ``column[i]``
    (:data:`ANSWER_COLUMN`: each prompt's ``last_pos``; :data:`ALL_COLUMNS`: every column)
    by ``source``, which is ``[1|batch, 1|pos, n_layers, *unit]`` (one value for every
    prompt and/or every column where an axis is 1).
    """

    site: PatchSite
    layer: Int[Tensor, " variant"]
    head: Int[Tensor, " variant"]
    column: Int[Tensor, " variant"]
    source: Tensor
