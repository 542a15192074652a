"""Random-token probe sequences for the head detectors, and where each score is read.

Every probe row is ``[BOS] segment segment ... filler``: a segment of distinct random
tokens from the model's ordinary vocabulary, repeated ``n_copies`` times, then random
filler up to the common length of the batch. Filler comes after everything that is
scored and attention is causal, so it never changes a scored number; it only lets rows of
different repeat lengths share one forward pass.

Which (query, key) cells each score reads is derived from the tokens themselves, so the
definitions below hold for any layout:

* ``duplicate``: keys ``k < q`` holding the same token as the query;
* ``induction``: keys ``k <= q`` whose *previous* token equals the query's token (the
  token that followed an earlier copy of the current one).

Both are restricted to the *repeated region* of a row (every copy after the first), so a
query counts only where induction is possible, and BOS never matches anything.
"""

from __future__ import annotations

import dataclasses

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel

TOY_BOS_ID = 0
"""Token id that tokenizer-less models (the toys of :func:`il.train_toy_model`) reserve for BOS."""


def bos_token_id(model: HookedModel, override: int | None = None) -> int:
    """The BOS id to prepend: ``override``, else the tokenizer's, else :data:`TOY_BOS_ID`."""
    if override is not None:
        return int(override)
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    return TOY_BOS_ID if bos is None else int(bos)


def ordinary_token_ids(model: HookedModel, bos_id: int | None = None) -> Int[Tensor, " n_ordinary"]:
    """Token ids that are ordinary vocabulary: no special or added-special tokens, no BOS.

    For a model without a tokenizer, every id below ``d_vocab`` except ``bos_id`` (the
    toy models reserve id 0 for BOS).
    """
    d_vocab = hooks.spec(model).d_vocab
    tok = getattr(model, "tokenizer", None)
    excluded: set[int] = {bos_token_id(model, bos_id)}
    upper = d_vocab
    if tok is not None:
        excluded.update(int(i) for i in getattr(tok, "all_special_ids", ()) or ())
        added = getattr(tok, "added_tokens_decoder", None) or {}
        excluded.update(int(i) for i, t in added.items() if getattr(t, "special", True))
        upper = min(d_vocab, len(tok))
    keep = torch.ones(upper, dtype=torch.bool)
    keep[[i for i in excluded if 0 <= i < upper]] = False
    ids = keep.nonzero().flatten()
    if len(ids) < 2:
        raise ConfigError(f"the model has only {len(ids)} ordinary tokens; the detectors need random tokens.")
    return ids


@dataclasses.dataclass(frozen=True)
class ProbeBatch:
    """Token ids of the probe rows and what each row is for.

    ``segment_length[i]`` and ``n_copies[i]`` describe row ``i``; its repeated region is
    positions ``[1 + L, 1 + n_copies * L)`` (BOS at 0). ``kind[i]`` is ``"induction"`` or
    ``"prefix"`` (the prefix-matching rows).
    """

    tokens: Int[Tensor, "batch pos"]
    segment_length: Int[Tensor, " batch"]
    n_copies: Int[Tensor, " batch"]
    kind: tuple[str, ...]

    @property
    def n_pos(self) -> int:
        return int(self.tokens.shape[1])

    def repeated_region(self) -> Bool[Tensor, "batch pos"]:
        """Query positions where induction is possible: every copy after the first."""
        pos = torch.arange(self.n_pos)[None]
        seg, copies = self.segment_length[:, None], self.n_copies[:, None]
        return (pos >= 1 + seg) & (pos < 1 + copies * seg)

    def structured_region(self) -> Bool[Tensor, "batch pos"]:
        """BOS plus every copy: everything but the filler."""
        pos = torch.arange(self.n_pos)[None]
        return pos < 1 + self.n_copies[:, None] * self.segment_length[:, None]


def probe_length(repeat_lengths: tuple[int, ...], prefix_length: int, prefix_copies: int) -> int:
    """Positions needed by the longest probe row (BOS included)."""
    return 1 + max([2 * L for L in repeat_lengths] + [prefix_copies * prefix_length])


def make_probe_batch(
    ordinary_ids: Int[Tensor, " n_ordinary"],
    bos_id: int,
    repeat_lengths: tuple[int, ...],
    n_sequences: int,
    prefix_length: int,
    prefix_copies: int,
    seed: int,
    prepend_bos: bool = True,
) -> ProbeBatch:
    """``n_sequences`` rows per repeat length (two copies) and ``n_sequences`` prefix rows.

    Segments hold distinct tokens (drawn without replacement), so each query in the
    repeated region has exactly one "token after an earlier copy" per earlier copy.
    """
    n_ord = len(ordinary_ids)
    longest = max(max(repeat_lengths), prefix_length)
    if longest > n_ord:
        raise ConfigError(
            f"segments of {longest} distinct tokens need at least that many ordinary tokens; the model has {n_ord}."
        )
    gen = torch.Generator().manual_seed(seed)
    specs = [(L, 2, "induction") for L in repeat_lengths for _ in range(n_sequences)]
    specs += [(prefix_length, prefix_copies, "prefix")] * n_sequences
    n_pos = probe_length(repeat_lengths, prefix_length, prefix_copies)
    rows = []
    for seg_len, copies, _ in specs:
        segment = ordinary_ids[torch.randperm(n_ord, generator=gen)[:seg_len]]
        filler = ordinary_ids[torch.randint(n_ord, (n_pos - 1 - copies * seg_len,), generator=gen)]
        rows.append(torch.cat([torch.tensor([bos_id]), segment.repeat(copies), filler]))
    tokens = torch.stack(rows)
    if not prepend_bos:
        # Keep the layout (and so every region) but put an ordinary token where BOS was.
        tokens[:, 0] = ordinary_ids[torch.randint(n_ord, (len(rows),), generator=gen)]
    return ProbeBatch(
        tokens=tokens,
        segment_length=torch.tensor([s[0] for s in specs]),
        n_copies=torch.tensor([s[1] for s in specs]),
        kind=tuple(s[2] for s in specs),
    )


def match_masks(
    tokens: Int[Tensor, "batch pos"], region: Bool[Tensor, "batch pos"]
) -> tuple[Bool[Tensor, "batch q k"], Bool[Tensor, "batch q k"]]:
    """``(duplicate, induction)`` key masks for every query, zero outside ``region``.

    ``duplicate[b, q, k]``: ``k < q`` and ``tokens[k] == tokens[q]``.
    ``induction[b, q, k]``: ``1 <= k <= q`` and ``tokens[k-1] == tokens[q]`` with ``k-1 < q``.
    Position 0 (BOS) is never a match.
    """
    n = tokens.shape[1]
    same = tokens[:, :, None] == tokens[:, None, :]
    before = torch.ones(n, n, dtype=torch.bool).tril(-1)
    duplicate = same & before[None]
    duplicate[:, :, 0] = False
    induction = torch.zeros_like(duplicate)
    induction[:, :, 1:] = duplicate[:, :, :-1]
    live = region[:, :, None]
    return duplicate & live, induction & live
