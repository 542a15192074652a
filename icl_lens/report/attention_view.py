"""An interactive circuitsvis attention view, inlined so it renders with no network."""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core import hooks


def repeated_tokens(d_vocab: int, half: int, seed: int, bos: int | None) -> Int[Tensor, "1 pos"]:
    """A random token sequence repeated once (``[bos] r r``): induction heads light up on its second half."""
    gen = torch.Generator().manual_seed(seed)
    # Skip the lowest ids: special tokens live there in most vocabularies.
    low = min(100, d_vocab // 4)
    first = torch.randint(low, d_vocab, (half,), generator=gen)
    parts = ([torch.tensor([bos])] if bos is not None else []) + [first, first]
    return torch.cat(parts)[None]


def induction_stripe(pattern: Float[Tensor, "heads q k"], half: int, offset: int) -> Float[Tensor, " heads"]:
    """Mean attention from each second-half token to the token after its first occurrence."""
    q = torch.arange(offset + half, offset + 2 * half)
    return pattern[:, q, q - half + 1].mean(-1)


def attention_view(model: Any, half: int = 20, seed: int = 0) -> tuple[str, int, Float[Tensor, " heads"]]:
    """circuitsvis view of the layer with the strongest induction stripe on a repeated sequence.

    Returns the HTML (JavaScript inlined via ``local_src``: the CDN version is blank
    offline), the layer shown, and that layer's per-head stripe scores.
    """
    import circuitsvis.attention as cv_attention

    s = hooks.spec(model)
    tok = getattr(model, "tokenizer", None)
    bos = getattr(tok, "bos_token_id", None) if tok is not None else None
    # The tokenizer may be smaller than the embedding (padded vocabularies): sample inside both.
    d_vocab = min(s.d_vocab, len(tok)) if tok is not None else s.d_vocab
    tokens = repeated_tokens(d_vocab, half, seed, bos)
    offset = 1 if bos is not None else 0
    names = [hooks.pattern(l) for l in range(s.n_layers)]
    with torch.no_grad():
        _, cache = hooks.run_with_cache(model, tokens, names)
    stripes = torch.stack([induction_stripe(cache[n][0].float().cpu(), half, offset) for n in names])
    layer = int(stripes.max(-1).values.argmax())
    if tok is not None:
        labels = [tok.decode([int(t)]) for t in tokens[0]]
    else:
        labels = [str(int(t)) for t in tokens[0]]
    view = cv_attention.attention_heads(
        attention=cache[names[layer]][0].float().cpu(),
        tokens=labels,
        attention_head_names=[f"L{layer}H{h}" for h in range(s.n_heads)],
    )
    return view.local_src, layer, stripes[layer]
