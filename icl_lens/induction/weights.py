"""Weight-based head scores: the copying eigenvalue score and K-composition.

Everything here works on *effective* weights: the scale (and, for LayerNorm, the
centring) of the normalization in front of a matrix is folded into it, so a toy trained
without compatibility mode and a folded bridge give the same numbers for the same
function. Biases are left out: they do not depend on which token is read.

Big products are never formed. The full OV circuit ``W_E W_V W_O W_U`` is
``d_vocab x d_vocab`` (49k x 49k for SmolLM2), but its nonzero eigenvalues are those of
the cyclic product ``W_O (W_U W_E) W_V``, which is ``d_head x d_head``; ``W_U W_E`` is one
``d_model x d_model`` matrix shared by all heads. K-composition scores are computed the
same way from ``d_head``-sized Gram matrices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import hooks
from icl_lens.core.hooks import HookedModel


@dataclasses.dataclass(frozen=True)
class EffectiveWeights:
    """Per-head matrices with normalization folded in (see the module docstring).

    Shapes: ``W_Q [L, H, d_model, d_head]``, ``W_K``/``W_V`` ``[L, KV, d_model, d_head]``,
    ``W_O [L, H, d_head, d_model]``, ``W_E [d_vocab, d_model]``, ``W_U [d_model, d_vocab]``.
    """

    W_E: Float[Tensor, "d_vocab d_model"]
    W_U: Float[Tensor, "d_model d_vocab"]
    W_Q: Float[Tensor, "layer head d_model d_head"]
    W_K: Float[Tensor, "layer kv_head d_model d_head"]
    W_V: Float[Tensor, "layer kv_head d_model d_head"]
    W_O: Float[Tensor, "layer head d_head d_model"]
    kv_of_head: tuple[int, ...]


def _norm_fold(model: HookedModel, norm: Any) -> tuple[Tensor | None, bool]:
    """``(gamma, centres)`` of a normalization module: its weight and whether it centres."""
    gamma = getattr(norm, "weight", None) if norm is not None else None
    norm_type = str(getattr(getattr(model, "cfg", None), "normalization_type", "") or "")
    if not isinstance(gamma, Tensor) or bool((gamma == 1).all()):
        gamma = None  # absent, or already folded into the weights (compatibility mode)
    return (None if gamma is None else gamma.detach()), norm_type.startswith("LN")


def _fold(w: Tensor, gamma: Tensor | None, centre: bool) -> Tensor:
    """``P diag(gamma) w`` along the ``d_model`` axis (dim -2), P the centring projection."""
    if gamma is not None:
        w = w * gamma.to(w.device, w.dtype)[:, None]
    if centre:
        w = w - w.mean(dim=-2, keepdim=True)
    return w


def effective_weights(model: HookedModel, dtype: torch.dtype = torch.float32) -> EffectiveWeights:
    """Read and fold the weights of every attention head, the embedding and the unembedding.

    They are gathered on the CPU, where the scores are computed: a model on a GPU, or split
    over several, gives the same matrices.
    """
    s = hooks.spec(model)
    with torch.no_grad():
        W_Q, W_K, W_V, W_O = [], [], [], []
        for layer in range(s.n_layers):
            block = model.blocks[layer]
            gamma, centre = _norm_fold(model, getattr(block, "ln1", None))
            attn = block.attn
            W_Q.append(_fold(attn.W_Q.detach().to("cpu", dtype), gamma, centre))
            W_K.append(_fold(attn.W_K.detach().to("cpu", dtype), gamma, centre))
            W_V.append(_fold(attn.W_V.detach().to("cpu", dtype), gamma, centre))
            W_O.append(hooks.W_O(model, layer).to("cpu", dtype))
        gamma, centre = _norm_fold(model, getattr(model, "ln_final", None))
        W_U = _fold(hooks.W_U(model).to("cpu", dtype), gamma, centre)
        W_E = hooks.W_E(model).to("cpu", dtype)
    kq, kk = torch.stack(W_Q), torch.stack(W_K)
    if kk.shape[1] != s.n_kv_heads or kq.shape[1] != s.n_heads:
        # Some bridges expose K/V expanded to the query heads; keep one per KV head.
        kk = kk[:, :: s.group_size] if kk.shape[1] == s.n_heads else kk
    W_V_t = torch.stack(W_V)
    if W_V_t.shape[1] == s.n_heads and s.n_kv_heads != s.n_heads:
        W_V_t = W_V_t[:, :: s.group_size]
    return EffectiveWeights(
        W_E=W_E,
        W_U=W_U,
        W_Q=kq,
        W_K=kk,
        W_V=W_V_t,
        W_O=torch.stack(W_O),
        kv_of_head=tuple(s.kv_head(h) for h in range(s.n_heads)),
    )


def eigen_ratio(m: Float[Tensor, "*batch n n"]) -> Float[Tensor, "*batch"]:
    """``sum(Re λ) / sum(|λ|)`` over the eigenvalues of each matrix (in [-1, 1]).

    +1: the map only copies (all eigenvalues positive real); -1: it only suppresses.
    """
    ev = torch.linalg.eigvals(m.double())
    return (ev.real.sum(-1) / ev.abs().sum(-1).clamp_min(1e-30)).float()


def copying_eigen_scores(w: EffectiveWeights) -> Float[Tensor, "layer head"]:
    """Copying score of every head: :func:`eigen_ratio` of its full OV circuit
    ``W_E W_V W_O W_U``, via the cyclic ``d_head x d_head`` product ``W_O (W_U W_E) W_V``."""
    unembed_embed = w.W_U @ w.W_E  # [d_model, d_model], shared by every head
    kv = list(w.kv_of_head)
    W_V = w.W_V[:, kv]  # [L, H, d_model, d_head]
    cyc = w.W_O @ unembed_embed @ W_V  # [L, H, d_head, d_head]
    return eigen_ratio(cyc)


def k_composition(
    w: EffectiveWeights,
    baseline_samples: int = 16,
    seed: int = 0,
    targets: Sequence[tuple[int, int]] | None = None,
) -> tuple[Float[Tensor, "layer head layer head"], Float[Tensor, "layer head layer head"], float, float]:
    """K-composition from every head into every head of a later layer, two ways.

    Entry ``[l1, h1, l2, h2]`` (``l1 < l2``; NaN elsewhere) scores how much head
    ``(l2, h2)``'s keys read what ``(l1, h1)`` writes. Both are the composition score of
    Elhage et al. (2021), ``|A B|_F / (|A|_F |B|_F)``:

    * **token-projected** (returned first, the one to use): ``A = W_E W_Q2 W_K2^T``
      (query *tokens* against key-side residual directions) and ``B = (W_E W_V1 W_O1)^T``
      (what head 1 writes when it reads a *token*). The composed matrix is the
      ``d_vocab x d_vocab`` term "query token x token moved in by head 1" of head 2's
      attention score, the term an induction head uses. Projecting both input sides on
      the token embeddings drops the directions tokens never occupy (positional ones,
      in particular), which in small models swamp the raw score.
    * **raw** (returned second): ``A = W_V1 W_O1``, ``B = W_K2 W_Q2^T`` on the whole
      residual stream, as Elhage et al. define it.

    Both come from ``d_head``-sized Gram matrices (with ``G = W_E^T W_E``,
    ``|W_E A M D W_E^T|_F^2 = tr(A^T G A M D G D^T M^T)``), never from vocabulary-sized
    products. Each has its random-matrix baseline subtracted: the mean score of
    ``baseline_samples`` pairs of random Gaussian heads of the same shapes (with the
    model's real ``W_E`` for the token-projected score); the two baselines are returned
    last. Heads with all-zero weights get NaN. ``targets`` limits the reading heads
    ``(l2, h2)`` (the rest stay NaN): all pairs of a 270-head model take minutes.
    """
    L, H = w.W_O.shape[0], w.W_O.shape[1]
    kv = list(w.kv_of_head)
    gram_embed = (w.W_E.T @ w.W_E).double()  # G, [d_model, d_model]
    W_Q, W_K, W_V, W_O = (x.double() for x in (w.W_Q, w.W_K[:, kv], w.W_V[:, kv], w.W_O))
    g_o = W_O @ W_O.transpose(-1, -2)  # W_O W_O^T            [L, H, dh, dh]
    g_k = W_K.transpose(-1, -2) @ W_K  # W_K^T W_K
    raw_v = W_V.transpose(-1, -2) @ W_V  # W_V^T W_V
    raw_q = W_Q.transpose(-1, -2) @ W_Q  # W_Q^T W_Q
    tok_v = W_V.transpose(-1, -2) @ gram_embed @ W_V  # W_V^T G W_V
    tok_q = W_Q.transpose(-1, -2) @ gram_embed @ W_Q  # W_Q^T G W_Q

    token = torch.full((L, H, L, H), float("nan"))
    raw = torch.full((L, H, L, H), float("nan"))
    wanted = [(l, h) for l in range(L) for h in range(H)] if targets is None else sorted(set(targets))
    for l2 in sorted({l for l, _ in wanted if l > 0}):
        h2 = [h for l, h in wanted if l == l2]
        ok = torch.einsum("ahid,bdj->ahbij", W_O[:l2], W_K[l2, h2])  # M = W_O1 W_K2, [l1, h1, h2, dh, dh]
        for out, g_v, g_q in ((token, tok_v, tok_q), (raw, raw_v, raw_q)):
            out[:l2, :, l2, h2] = _composition_score(
                ok, g_v[:l2, :, None], g_o[:l2, :, None], g_q[l2, h2][None, None], g_k[l2, h2][None, None]
            )
    token_base, raw_base = _composition_baselines(w, gram_embed, baseline_samples, seed)
    return token - token_base, raw - raw_base, token_base, raw_base


def _composition_score(ok: Tensor, g_v: Tensor, g_o: Tensor, g_q: Tensor, g_k: Tensor) -> Tensor:
    """``|V M Q^T|_F / (|V O|_F |Q K^T|_F)`` from Gram matrices (``M = O K``,
    ``g_v = V^T V``, ``g_o = O O^T``, ``g_q = Q^T Q``, ``g_k = K^T K``)."""
    num = _trace(ok.transpose(-1, -2) @ g_v @ ok @ g_q)
    den = _trace(g_v @ g_o) * _trace(g_q @ g_k)
    return (num.clamp_min(0).sqrt() / den.clamp_min(0).sqrt()).float()


def _trace(m: Tensor) -> Tensor:
    return m.diagonal(dim1=-2, dim2=-1).sum(-1)


def _composition_baselines(w: EffectiveWeights, gram_embed: Tensor, n: int, seed: int) -> tuple[float, float]:
    """Mean ``(token-projected, raw)`` score of ``n`` random Gaussian head pairs."""
    if n <= 0:
        return 0.0, 0.0
    d_model, d_head = w.W_Q.shape[-2], w.W_Q.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    q2, k2, v1 = (torch.randn(n, d_model, d_head, generator=gen, dtype=torch.float64) for _ in range(3))
    o1 = torch.randn(n, d_head, d_model, generator=gen, dtype=torch.float64)

    def t(x: Tensor) -> Tensor:
        return x.transpose(-1, -2)

    ok, g_o, g_k = o1 @ k2, o1 @ t(o1), t(k2) @ k2
    token = _composition_score(ok, t(v1) @ gram_embed @ v1, g_o, t(q2) @ gram_embed @ q2, g_k)
    raw = _composition_score(ok, t(v1) @ v1, g_o, t(q2) @ q2, g_k)
    return float(token.mean()), float(raw.mean())
