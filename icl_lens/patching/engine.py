"""Exact last-position patching without re-running the prompt.

Under causal attention, a change at the answer position (``last_pos``) cannot reach any
earlier position. So every patched variant of a prompt shares the prompt's keys and
values at all earlier positions, and only the answer position's residual stream differs.
A variant that patches layer ``l`` also shares the answer position's residual entering
block ``l``. The engine therefore

1. runs each prompt once, unpatched, keeping the keys and values of every layer and the
   answer position's residual entering every block (``resid_pre``);
2. starts each variant at the block where its patch applies, from that cached residual;
3. runs only the answer position through the remaining blocks, many variants at once:
   each variant is one query row attending to the cached prefix plus its own new key.

The blocks' own modules (norms, projections, MLPs, final norm, unembedding) do the work;
only the attention of one query row against the cached prefix is written here, for the
families whose attention we know (HF rotary attention wrapped by the bridge, and the
bridge's native attention). Anything else, or a model with hooks attached, is refused
(:func:`last_position_engine` returns ``None``) and the plain path (one full forward per
variant) is used. This module is the arithmetic only: :mod:`icl_lens.patching.runner`
decides which chunks of prompts it computes, adds the unpatched control row to every run
and falls back when that row disagrees with the real forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core import forward, hooks
from icl_lens.core.errors import FastPathMismatchError
from icl_lens.core.hooks import HookedModel

CONTROL_TOLERANCE = 1e-3
"""Max |log-prob difference| allowed between an engine's control row and the real forward
of a float32 (or float64) model."""

LOW_PRECISION_EPS = 128
"""A float16 or bfloat16 model's tolerance, in machine epsilons of its dtype (see :func:`control_tolerance`)."""


def control_tolerance(dtype: torch.dtype) -> float:
    """The control row's tolerance for a model whose weights are ``dtype``.

    float32: :data:`CONTROL_TOLERANCE`. In 16 bits the model's own forward is only as exact
    as its rounding: on SmolLM2 the engine's control row and the bfloat16 forward differ by
    up to 0.56 in log-probability over the vocabulary (float16: 0.064), about as much as that
    forward differs from float32's (0.38 and 0.11 on the tokens of probability >= 1e-3). So
    the bound there is :data:`LOW_PRECISION_EPS` machine epsilons, 1.0 for bfloat16 and
    0.125 for float16: it still catches a mechanism the engine does not reproduce, not
    rounding.
    """
    if not dtype.is_floating_point:
        return CONTROL_TOLERANCE
    return max(CONTROL_TOLERANCE, LOW_PRECISION_EPS * torch.finfo(dtype).eps)


def check_control(
    reference: Float[Tensor, "batch d_vocab"],
    control: Float[Tensor, "batch d_vocab"],
    *,
    dtype: torch.dtype = torch.float32,
    engine: str = "fast engine",
) -> None:
    """Raise :class:`FastPathMismatchError` unless ``control`` reproduces ``reference``.

    Both are logits at the answer positions: ``reference`` from the model's own forward,
    ``control`` from the engine's unpatched row; ``dtype`` is the model's, which sets the
    tolerance (:func:`control_tolerance`).
    """
    a = torch.log_softmax(control.float(), -1)
    b = torch.log_softmax(reference.float().to(a.device), -1)
    err = float((a - b).abs().max())
    tolerance = control_tolerance(dtype)
    if not err <= tolerance:  # NaN fails too
        raise FastPathMismatchError(
            f"the {engine} does not reproduce this model's forward pass: its unpatched control row differs "
            f"by {err:.2e} in log-probability (tolerance {tolerance:g} for {str(dtype).removeprefix('torch.')}). "
            "Use method='plain' (or "
            "'auto', which falls back per chunk); see docs/errors/FastPathMismatchError.md.",
            difference=err,
        )


@dataclasses.dataclass
class PrefixState:
    """What the unpatched forward of a chunk of prompts leaves behind for the variants."""

    keys: list[Float[Tensor, "batch kv_heads pos d_head"]]
    """Per layer: keys after rotary embedding, every column of the prompt."""
    values: list[Float[Tensor, "batch kv_heads pos d_head"]]
    resid_pre: Float[Tensor, "batch n_layers_plus_1 d_model"]
    """Residual entering each block, at each prompt's answer position; the last entry
    leaves the last block (it enters the final norm)."""
    key_mask: Bool[Tensor, "batch pos"]
    """Columns the answer position attends to, excluding itself."""
    query_position: Int[Tensor, " batch"]
    """Position id of the answer position (for rotary embeddings)."""
    logits: Float[Tensor, "batch d_vocab"]
    """Logits of the unpatched forward at the answer position (the forward stops after the
    last block; the final norm and unembedding run on this position alone)."""


@dataclasses.dataclass
class Variants:
    """Patched copies of the answer position, sorted by the block where they start.

    Variant ``i`` starts entering block ``start_layer[i]`` (``n_layers`` means: only the
    final norm and unembedding) from ``init[:, i]``, or from the cached unpatched
    residual when ``init`` is ``None``. If ``patch_head[i] >= 0``, the output ``z`` of
    that head at the start block is replaced by ``patch_values[:, i]``.
    """

    start_layer: Int[Tensor, " variant"]
    patch_head: Int[Tensor, " variant"]
    patch_values: Float[Tensor, "batch variant d_head"] | None = None
    init: Float[Tensor, "batch variant d_model"] | None = None

    def __post_init__(self) -> None:
        if bool((self.start_layer[1:] < self.start_layer[:-1]).any()):
            raise ValueError("variants must be sorted by start_layer")

    def __len__(self) -> int:
        return int(self.start_layer.shape[0])


class BlockEngine:
    """What every fast engine shares: the model's own modules, and the family-specific
    pieces of attention (score scaling, rotary embeddings) that the engines compute by hand."""

    def __init__(self, model: HookedModel, family: forward.Family) -> None:
        self.model = model
        self.family = family
        self.spec = hooks.spec(model)
        self.dtype = hooks.dtype_of(model)
        self.blocks = list(model.blocks)

    def last_logits(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"],
        last_pos: Int[Tensor, " batch"],
        fwd_hooks: hooks.FwdHooks = (),
    ) -> Float[Tensor, "batch d_vocab"]:
        """A forward pass (with ``fwd_hooks``) returning the logits at ``last_pos`` only."""
        return forward.answer_logits(self.model, tokens, attention_mask, last_pos, fwd_hooks)

    def unembed(self, x: Float[Tensor, "batch rows d_model"]) -> Float[Tensor, "batch rows d_vocab"]:
        """Final norm and unembedding of residual rows (the model's own modules)."""
        return forward.unembed(self.model, x, self.family)  # type: ignore[arg-type]

    def scale(self, layer: int, scores: Tensor) -> Tensor:
        """Attention scores of block ``layer`` from raw ``q . k`` products (scaling, soft-capping)."""
        inner = self.blocks[layer].attn.original_component
        if self.family == "native":
            from transformer_lens.utilities.activation_functions import apply_softcap

            return apply_softcap(scores / inner.scale, inner.attn_scores_soft_cap)
        return scores * inner.scaling

    def rotate(self, k: Tensor, positions: Tensor) -> Tensor:
        """Rotary embedding of ``[batch, heads, pos, d_head]`` keys (or queries)."""
        return self.rotate_pair(k[:, :1], k, positions)[1]

    def rotate_pair(self, q: Tensor, k: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Rotary embedding of ``[batch, heads, pos, d_head]`` queries and keys."""
        if self.family == "native":
            rotary = self.blocks[0].attn.original_component.rotary
            if rotary is None:
                return q, k
            return rotary.apply_rope(q, k, position_ids=positions)
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        cos, sin = self.model.rotary_emb(q, positions)
        rotary_dim = cos.shape[-1]
        if rotary_dim < q.shape[-1]:
            q_rot, k_rot = apply_rotary_pos_emb(q[..., :rotary_dim], k[..., :rotary_dim], cos, sin)
            return torch.cat([q_rot, q[..., rotary_dim:]], -1), torch.cat([k_rot, k[..., rotary_dim:]], -1)
        return apply_rotary_pos_emb(q, k, cos, sin)


class LastPositionEngine(BlockEngine):
    """Runs patched variants of the answer position through the model's own blocks."""

    # -- the unpatched forward ---------------------------------------------------------
    def prefix_state(
        self,
        tokens: Int[Tensor, "batch pos"],
        attention_mask: Int[Tensor, "batch pos"],
        last_pos: Int[Tensor, " batch"],
    ) -> PrefixState:
        """One forward of the unpatched prompts, caching what the variants reuse."""
        s = self.spec
        keys: list[Tensor | None] = [None] * s.n_layers
        values: list[Tensor | None] = [None] * s.n_layers
        resid = [None] * (s.n_layers + 1)
        device = hooks.device_of(self.model)
        last = last_pos.to(device)

        def keep(store: list[Any], layer: int, at_last: bool) -> hooks.HookFn:
            def save(act: Tensor, hook: Any) -> None:
                store[layer] = hooks.gather_positions(act, last) if at_last else act.detach()

            return save

        fwd: list[tuple[str, hooks.HookFn]] = []
        for l in range(s.n_layers):
            fwd += [
                (hooks.k(l), keep(keys, l, False)),
                (hooks.v(l), keep(values, l, False)),
                (hooks.resid_pre(l), keep(resid, l, True)),
            ]
        fwd.append((hooks.resid_post(s.n_layers - 1), keep(resid, s.n_layers, True)))
        logits = self.last_logits(tokens, attention_mask, last_pos, fwd)
        mask = attention_mask.to(device).bool()
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        columns = torch.arange(tokens.shape[1], device=device)
        with torch.no_grad():
            rotated = [self.rotate(k.transpose(1, 2), positions) for k in keys]  # type: ignore[union-attr]
        return PrefixState(
            keys=rotated,
            values=[v.transpose(1, 2).contiguous() for v in values],  # type: ignore[union-attr]
            resid_pre=torch.stack(resid, dim=1),  # type: ignore[arg-type]
            key_mask=mask & (columns[None, :] < last[:, None]),
            query_position=hooks.gather_positions(positions, last),
            logits=logits.float(),
        )

    # -- the patched variants ------------------------------------------------------------
    def run(
        self, state: PrefixState, variants: Variants, *, max_logit_rows: int = 256
    ) -> Iterator[tuple[slice, Float[Tensor, "batch variant d_vocab"]]]:
        """Yield ``(variant slice, logits)`` for all variants, in order."""
        s = self.spec
        n_prompts = state.resid_pre.shape[0]
        starts = variants.start_layer.tolist()
        x = state.resid_pre.new_zeros(n_prompts, 0, s.d_model)
        done = 0
        with torch.no_grad():
            for layer in range(min(starts, default=s.n_layers), s.n_layers + 1):
                new = [i for i in range(done, len(starts)) if starts[i] == layer]
                if new:
                    lo, hi = new[0], new[-1] + 1
                    if variants.init is not None:
                        init = variants.init[:, lo:hi].to(x)
                    else:
                        init = state.resid_pre[:, layer : layer + 1].expand(-1, hi - lo, -1)
                    x = torch.cat([x, init], dim=1)
                    done = hi
                if layer == s.n_layers or x.shape[1] == 0:
                    continue
                patch = None
                if new:
                    heads = variants.patch_head[lo:hi]
                    rows = torch.arange(lo, hi)[heads >= 0]
                    if len(rows):
                        assert variants.patch_values is not None
                        patch = (rows, variants.patch_head[rows], variants.patch_values[:, rows])
                x = self._block(layer, x, state, patch)
            step = max(1, max_logit_rows // max(n_prompts, 1))
            for lo in range(0, x.shape[1], step):
                hi = min(lo + step, x.shape[1])
                yield slice(lo, hi), self.unembed(x[:, lo:hi]).float()

    def gradients(
        self, state: PrefixState, metric: Callable[[Tensor], Tensor]
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Gradients of a per-prompt metric at the answer position, unpatched run.

        The metric at the answer position depends on the answer position's own head
        outputs and residuals only through the answer position itself (the prefix is
        causally upstream and fixed), so one row per prompt, run with autograd against
        the cached prefix, gives exactly the full model's gradients there.

        Returns ``(metric values [batch], logits [batch, d_vocab], z [batch, n_layers,
        n_heads, d_head], grad of z, residual [batch, n_layers + 1, d_model], grad of the
        residual)``; residual ``l`` enters block ``l`` and residual ``n_layers`` enters
        the final norm.
        """
        s = self.spec
        n_prompts = state.resid_pre.shape[0]
        with torch.enable_grad():
            dz = state.resid_pre.new_zeros(n_prompts, s.n_layers, 1, s.n_heads, s.d_head, requires_grad=True)
            dr = state.resid_pre.new_zeros(n_prompts, s.n_layers + 1, 1, s.d_model, requires_grad=True)
            zs: list[Tensor] = []
            resid: list[Tensor] = []
            x = state.resid_pre[:, :1]
            for layer in range(s.n_layers):
                x = x + dr[:, layer]
                resid.append(x.detach()[:, 0])
                x = self._block(layer, x, state, None, z_delta=dz[:, layer], z_store=zs)
            x = x + dr[:, s.n_layers]
            resid.append(x.detach()[:, 0])
            logits = self.unembed(x)[:, 0]
            values = metric(logits)
            grad_z, grad_r = torch.autograd.grad(values.sum(), [dz, dr])
        return (
            values.detach(),
            logits.detach(),
            torch.stack([z[:, 0] for z in zs], dim=1),
            grad_z[:, :, 0],
            torch.stack(resid, dim=1),
            grad_r[:, :, 0],
        )

    # -- one block on new query rows -----------------------------------------------------
    def _block(
        self,
        layer: int,
        x: Float[Tensor, "batch rows d_model"],
        state: PrefixState,
        patch: tuple[Tensor, Tensor, Tensor] | None,
        z_delta: Float[Tensor, "batch rows n_heads d_head"] | None = None,
        z_store: list[Tensor] | None = None,
    ) -> Float[Tensor, "batch rows d_model"]:
        s = self.spec
        block = self.blocks[layer]
        attn = block.attn
        n_prompts, n_rows, _ = x.shape
        h = block.ln1(x)
        q = attn.q(h).view(n_prompts, n_rows, s.n_heads, s.d_head).transpose(1, 2)
        k = attn.k(h).view(n_prompts, n_rows, s.n_kv_heads, s.d_head).transpose(1, 2)
        v = attn.v(h).view(n_prompts, n_rows, s.n_kv_heads, s.d_head).transpose(1, 2)
        positions = state.query_position[:, None].expand(n_prompts, n_rows)
        q, k = self.rotate_pair(q, k, positions)
        group = s.group_size
        # Query head h reads key/value head h // group: split the heads into (kv, group).
        qg = q.reshape(n_prompts, s.n_kv_heads, group * n_rows, s.d_head)
        prefix_scores = self.scale(layer, qg @ state.keys[layer].transpose(-1, -2))
        prefix_scores = prefix_scores.masked_fill(~state.key_mask[:, None, None, :], float("-inf"))
        own = self.scale(layer, (q.view(n_prompts, s.n_kv_heads, group, n_rows, s.d_head) * k[:, :, None]).sum(-1))
        scores = torch.cat([prefix_scores, own.reshape(n_prompts, s.n_kv_heads, group * n_rows, 1)], dim=-1)
        pattern = torch.softmax(scores.float(), dim=-1).to(q.dtype)
        z = pattern[..., :-1] @ state.values[layer]
        z = z.view(n_prompts, s.n_kv_heads, group, n_rows, s.d_head)
        z = z + pattern[..., -1:].view(n_prompts, s.n_kv_heads, group, n_rows, 1) * v[:, :, None]
        z = z.reshape(n_prompts, s.n_heads, n_rows, s.d_head).transpose(1, 2)  # [batch, rows, head, d_head]
        if patch is not None:
            rows, heads, vals = patch
            z = z.clone()
            z[:, rows.to(z.device), heads.to(z.device)] = vals.to(z)
        if z_store is not None:
            z_store.append(z.detach())
        if z_delta is not None:
            z = z + z_delta
        x = x + attn.o(z.reshape(n_prompts, n_rows, s.n_heads * s.d_head))
        if not s.attn_only:
            x = x + block.mlp(block.ln2(x))
        return x


def last_position_engine(model: HookedModel) -> LastPositionEngine | None:
    """The engine for ``model``, or ``None`` when the fast path does not apply to it.

    Supported: TransformerBridges whose blocks are plain pre-norm blocks with either the
    bridge's native attention or HF rotary attention (Llama, Mistral, Qwen2, SmolLM2, ...)
    without QK-norms, soft-capping, attention sinks or sliding windows. The model must
    have no hooks attached (their effect could not be reproduced here).
    """
    family = forward.model_family(model)
    if family is None or hooks.count_hooks(model) != 0:
        return None
    return LastPositionEngine(model, family)
