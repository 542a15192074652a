"""Forward passes that compute only what an analysis reads, and what icl_lens knows of a model's architecture.

Most analyses read the next-token distribution at one position per prompt (the answer
position). A full forward unembeds every column (a ``[batch, pos, d_vocab]`` tensor, a
fifth of SmolLM2's forward); :func:`answer_logits` stops after the last block and runs the
final norm and unembedding on the answer positions alone, for the architecture families
icl_lens knows (:func:`model_family`), and falls back to a full forward elsewhere.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.hooks import HookedModel

Family = Literal["native", "hf_rotary"]

_HF_DECODER_LAYERS = frozenset({"LlamaDecoderLayer", "MistralDecoderLayer", "Qwen2DecoderLayer"})


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once everything needed is in hand."""


def model_family(model: HookedModel) -> Family | None:
    """The architecture family whose blocks icl_lens can run piece by piece, or ``None``.

    ``"native"``: a bridge built natively (``tiny_model``, toys) with plain pre-norm blocks.
    ``"hf_rotary"``: a bridge around an HF Llama/Mistral/Qwen2-style decoder (SmolLM2)
    without QK-norms, soft-capping, attention sinks or sliding windows.
    """
    blocks = getattr(model, "blocks", None)
    original = getattr(model, "original_model", None)
    if blocks is None or original is None or not len(blocks):
        return None
    cfg = model.cfg
    if any(getattr(cfg, flag, False) for flag in ("use_split_qkv_input", "use_attn_in", "use_attn_result")):
        return None
    inner_attn = [getattr(b.attn, "original_component", None) for b in blocks]
    if all(type(a).__name__ == "NativeAttention" for a in inner_attn):
        native_cfg = original.cfg
        if getattr(native_cfg, "parallel_attn_mlp", False) or not all(a.causal for a in inner_attn):
            return None
        if getattr(native_cfg, "gated_mlp", False) and not hasattr(blocks[0], "mlp"):
            return None
        return "native"
    block_types = {type(getattr(b, "original_component", None)).__name__ for b in blocks}
    if not block_types <= _HF_DECODER_LAYERS or not hasattr(model, "rotary_emb"):
        return None
    for a, b in zip(inner_attn, blocks, strict=True):
        if type(b.attn).__name__ != "PositionEmbeddingsAttentionBridge":
            return None
        if "q_norm" in b.attn.submodules or getattr(a, "sinks", None) is not None:
            return None
        if getattr(a, "attn_logit_softcapping", None) is not None or getattr(a, "key_multiplier", None) is not None:
            return None
        if getattr(a, "sliding_window", None) or getattr(getattr(a, "config", None), "sliding_window", None):
            return None
    if any(
        getattr(cfg, flag, False) for flag in ("rotary_adjacent_pairs", "rotary_interleaved_cos_sin", "gated_q_proj")
    ):
        return None
    return "hf_rotary"


def unembed(
    model: HookedModel, x: Float[Tensor, "batch rows d_model"], family: Family
) -> Float[Tensor, "batch rows d_vocab"]:
    """Final norm and unembedding of residual rows (the model's own modules)."""
    logits = model.unembed(model.ln_final(x))  # type: ignore[attr-defined]
    if family == "native":
        from transformer_lens.utilities.activation_functions import apply_softcap

        logits = apply_softcap(logits, model.original_model.output_logits_soft_cap)  # type: ignore[attr-defined]
    return logits


def answer_logits(
    model: HookedModel,
    tokens: Int[Tensor, "batch pos"],
    attention_mask: Int[Tensor, "batch pos"] | None,
    positions: Int[Tensor, " batch"],
    fwd_hooks: hooks.FwdHooks = (),
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at ``positions[i]`` of row ``i``, from one forward pass with ``fwd_hooks``.

    Where the family is known and every hook (the caller's and any already attached)
    sits inside the blocks, the pass stops after the last block and only the answer
    positions are unembedded; otherwise it is a full forward. Both give the same numbers.
    """
    family = model_family(model)
    inside_blocks = all(name.startswith("blocks.") for name, _ in fwd_hooks)
    with torch.no_grad():
        if family is None or not inside_blocks or hooks.count_hooks(model) != 0:
            logits = hooks.forward(model, tokens, attention_mask, fwd_hooks)
            return hooks.gather_positions(logits, positions).float()
        last = positions.to(hooks.device_of(model))
        final: list[Tensor] = []

        def stop_after_last_block(act: Tensor, hook: Any) -> None:
            final.append(hooks.gather_positions(act, last))
            raise _StopForward

        fwd = [*fwd_hooks, (hooks.resid_post(hooks.spec(model).n_layers - 1), stop_after_last_block)]
        try:
            hooks.forward(model, tokens, attention_mask, fwd)
        except _StopForward:
            pass
        if not final:
            raise RuntimeError("the forward pass ended without reaching the last block")
        return unembed(model, final[0][:, None], family)[:, 0].float()
