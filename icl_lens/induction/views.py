"""Attention-pattern views with circuitsvis that render offline.

circuitsvis's own ``RenderedHTML`` imports its JavaScript from a CDN when displayed (and
probes the internet to decide); :class:`OfflineHTML` carries the inlined ``local_src``
instead, so the view works in a notebook on a machine with no network.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from icl_lens.core import hooks, validate
from icl_lens.core.hooks import HookedModel


@dataclasses.dataclass(frozen=True)
class OfflineHTML:
    """Self-contained HTML (JavaScript inlined): displays in Jupyter, saves to a file."""

    html: str

    def _repr_html_(self) -> str:
        return self.html

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.write_text(f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'></head><body>{self.html}</body></html>")
        return p


def token_labels(model: HookedModel, tokens: Sequence[int]) -> list[str]:
    """Readable token strings (ids when the model has no tokenizer)."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [str(int(t)) for t in tokens]
    return [str(t) for t in tok.convert_ids_to_tokens([int(t) for t in tokens])]


def attention_view(
    model: HookedModel,
    heads: Sequence[tuple[int, int]],
    config: Any = None,
    repeat_length: int | None = None,
    tokens: torch.Tensor | None = None,
) -> OfflineHTML:
    """Attention patterns of ``heads`` on one probe row ``[BOS] R R`` (or on ``tokens``).

    Args:
        heads: ``(layer, head)`` pairs to show.
        config: the :class:`InductionConfig` the probe rows come from (default settings if
            ``None``); ``repeat_length`` picks the row (default: the longest).
        tokens: show these token ids ``[pos]`` instead of a probe row.
    """
    import circuitsvis.attention as cv_attention

    from icl_lens.induction import sequences as seq
    from icl_lens.induction.detectors import InductionConfig

    s = hooks.spec(model)
    heads = validate.head_list(heads, s.n_layers, s.n_heads)
    if tokens is None:
        config = config or InductionConfig()
        length = repeat_length or max(config.repeat_lengths)
        bos = seq.bos_token_id(model, config.bos_token_id)
        probe = seq.make_probe_batch(
            seq.ordinary_token_ids(model, bos),
            bos,
            (length,),
            1,
            config.prefix_length,
            2,
            config.seed,
            config.prepend_bos,
        )
        tokens = probe.tokens[0, : 1 + 2 * length]
    tokens = tokens.flatten().long()
    layers = sorted({l for l, _ in heads})
    with torch.no_grad():
        _, cache = hooks.run_with_cache(model, tokens[None], [hooks.pattern(l) for l in layers])
    attention = torch.stack([cache[hooks.pattern(l)][0, h] for l, h in heads]).float().cpu()
    rendered = cv_attention.attention_heads(
        attention=attention,
        tokens=token_labels(model, tokens.tolist()),
        attention_head_names=[f"L{l}H{h}" for l, h in heads],
    )
    return OfflineHTML(rendered.local_src)
