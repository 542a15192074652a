"""Text to token ids: one encoder and one padding rule for every batch icl_lens builds.

ICL prompts (:func:`icl_lens.prompting.prompts.build_prompts`), fine-tuning examples and
the natural-text sentences of the implant evaluation all go through here, so they agree
on three things:

* **BOS**: one beginning-of-sequence token first when the model prepends one
  (``cfg.default_prepend_bos``, default ``True``) and the tokenizer has one.
* **Pieces**: text is tokenized piece by piece (:class:`PieceEncoder`) without special
  tokens, so every recorded span decodes to exactly the text placed there.
* **Padding**: rows are padded with :func:`pad_token_id` (the tokenizer's pad token, else
  its end-of-sequence token, else 0) on the left or the right (:func:`pad_rows`), with
  an attention mask that is 0 on padding. Padded positions are masked out, so the pad
  id never changes a number; one rule keeps batches comparable token for token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from jaxtyping import Int
from torch import Tensor

from icl_lens.core.errors import PromptError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice

PaddingSide = Literal["left", "right"]
"""Where padding goes: ``"left"`` puts every prompt's last token in the final column."""


def tokenizer_of(model: HookedModel) -> Any:
    """The model's HuggingFace tokenizer, or a :class:`PromptError` saying how to get one."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise PromptError("this model has no tokenizer; give it one (il.tiny_model(tokenizer='char')).")
    return tokenizer


def pad_token_id(tokenizer: Any) -> int:
    """The id padding is filled with: the pad token, else the end-of-sequence token, else 0."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


class PieceEncoder:
    """Tokenizes pieces of text one at a time (no special tokens), remembering each piece.

    ``encoder(text)`` gives the ids of ``text`` alone (``[]`` for ``""``); ``encoder.bos``
    the ids that open every row (``[bos_id]`` or ``[]``).
    """

    def __init__(self, model: HookedModel, prepend_bos: bool | None = None) -> None:
        self.tokenizer = tokenizer_of(model)
        if prepend_bos is None:
            prepend_bos = bool(getattr(getattr(model, "cfg", None), "default_prepend_bos", True))
        bos = self.tokenizer.bos_token_id
        self.bos: list[int] = [int(bos)] if prepend_bos and bos is not None else []
        self.pad_id = pad_token_id(self.tokenizer)
        self.d_vocab = int(getattr(getattr(model, "cfg", None), "d_vocab", 0) or 0)
        self._cache: dict[str, list[int]] = {}

    def __call__(self, text: str) -> list[int]:
        if not text:
            return []
        if text not in self._cache:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False))
            self._check(text, ids)
            self._cache[text] = ids
        return self._cache[text]

    def _check(self, text: str, ids: list[int]) -> None:
        """Refuse text the tokenizer cannot encode, and ids the model has no embedding for."""
        unk = self.tokenizer.unk_token_id
        if unk is not None and unk in ids:
            lost = sorted({ch for ch in text if unk in self.tokenizer.encode(ch, add_special_tokens=False)})
            raise PromptError(
                f"{text.strip()!r} holds characters this model's tokenizer cannot encode ({', '.join(map(repr, lost))} "
                f"become {self.tokenizer.unk_token!r}, so different answers would look alike); remove or replace "
                "them in the task, or use a model whose vocabulary has them."
            )
        if self.d_vocab and ids and max(ids) >= self.d_vocab:
            raise PromptError(
                f"the tokenizer gives id {max(ids)} for {text.strip()!r}, but the model has only {self.d_vocab} "
                "token embeddings: the tokenizer belongs to another model. Give the model its own tokenizer."
            )


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, side: PaddingSide = "left"
) -> tuple[Int[Tensor, "rows width"], Int[Tensor, "rows width"], list[int]]:
    """Rows of ids padded to one width: ``(tokens, attention_mask, offsets)``.

    ``offsets[r]`` is the column where row ``r`` starts (``0`` on the right side), so a
    position ``p`` within row ``r`` is column ``offsets[r] + p`` of ``tokens``.
    """
    check_choice(side, PaddingSide, "padding_side", error=PromptError)
    if not rows:
        raise PromptError("nothing to pad: no rows")
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    offsets = []
    for r, ids in enumerate(rows):
        off = width - len(ids) if side == "left" else 0
        tokens[r, off : off + len(ids)] = torch.tensor(list(ids), dtype=torch.long)
        mask[r, off : off + len(ids)] = 1
        offsets.append(off)
    return tokens, mask, offsets


def encode_texts(
    model: HookedModel, texts: Sequence[str], *, padding_side: PaddingSide = "left"
) -> tuple[Int[Tensor, "texts width"], Int[Tensor, "texts width"]]:
    """Whole texts as one padded batch (BOS first where the model prepends one) and its attention mask."""
    encoder = PieceEncoder(model)
    tokens, mask, _ = pad_rows([encoder.bos + encoder(t) for t in texts], encoder.pad_id, padding_side)
    return tokens, mask
