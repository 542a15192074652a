"""A 2-layer attention-only model whose circuits are set by hand.

Used by the tests (every score has a value computable on paper) and handy for checking a
new detector. No LayerNorm, no biases; ``d_model = 64``, 4 heads of ``d_head = 16``,
``d_vocab = 16`` (id 0 is BOS), context 64. The residual stream is laid out by hand:

==========  ===============================================================
dims        content
==========  ===============================================================
0-15        one-hot of the current token (``W_E``)
16-31       L0H1's output: the previous token, read by ``W_U`` (a copy)
32-47       L0H0's output: the previous token, read by L1H0's keys
62-63       position ``p`` as the angle ``p * 2π/64`` with radius ``radius``
==========  ===============================================================

Heads:

* **L0H0** previous-token head: its query rotates the position back by one step, so the
  score ``radius² cos(θ (q - 1 - k))/4`` peaks at ``k = q - 1`` (gap ≈ 75 nats to the next
  key with the default radius: attention is 1 to float precision). Writes the attended token to dims 32-47.
* **L0H1** the same pattern; writes the attended token to dims 16-31, which the
  unembedding reads as that token's logit: a pure copying head (full OV circuit = I).
* **L0H2** zero query/key (uniform attention ``1/(q+1)``); writes minus the attended
  token to dims 16-31 (full OV circuit = -I).
* **L0H3**, **L1H1-3** zero query/key (uniform attention) and zero output.
* **L1H0** induction head: query = current token, key = dims 32-47 (the previous token,
  written by L0H0), scaled so a match wins by ``match_logit`` nats; copies the attended
  token to the logits (dims 16-31). Its queries attend to every key whose previous token
  is the current token, equally.
"""

from __future__ import annotations

import math
from typing import Any

import torch

N_CTX = 64
D_VOCAB = 16
D_HEAD = 16


def planted_induction_model(radius: float = 250.0, match_logit: float = 60.0) -> Any:
    """The hand-set model described in the module docstring (eval mode, frozen)."""
    from icl_lens.core.models import tiny_model

    model = tiny_model(
        n_layers=2,
        n_heads=4,
        d_model=64,
        d_head=D_HEAD,
        attn_only=True,
        n_ctx=N_CTX,
        d_vocab=D_VOCAB,
        tokenizer=None,
        normalization_type=None,
        seed=0,
    )
    sd = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    eye = torch.eye(D_HEAD)
    sd["embed.weight"][:, :D_VOCAB] = torch.eye(D_VOCAB)
    theta = 2 * math.pi / N_CTX
    angles = torch.arange(N_CTX) * theta
    sd["pos_embed.weight"][:, 62] = radius * torch.cos(angles)
    sd["pos_embed.weight"][:, 63] = radius * torch.sin(angles)
    # W_U reads the token dims and the copy dims as the token's logit.
    W_U = torch.zeros(64, D_VOCAB)
    W_U[16:32] = torch.eye(D_VOCAB)
    sd["unembed.weight"] = W_U.T.contiguous()

    def set_head(layer: int, head: int, W_Q: Any = None, W_K: Any = None, W_V: Any = None, W_O: Any = None) -> None:
        # Native layout: q/k/v.weight are [n_heads * d_head, d_model], o.weight [d_model, n_heads * d_head].
        rows = slice(head * D_HEAD, (head + 1) * D_HEAD)
        for name, w in (("q", W_Q), ("k", W_K), ("v", W_V)):
            if w is not None:
                sd[f"blocks.{layer}.attn.{name}.weight"][rows] = w.T
        if W_O is not None:
            sd[f"blocks.{layer}.attn.o.weight"][:, rows] = W_O.T

    rotate_back = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    prev_q = torch.zeros(64, D_HEAD)
    prev_q[62:64, 0:2] = rotate_back  # row vector (cos θp, sin θp) -> (cos θ(p-1), sin θ(p-1))
    prev_k = torch.zeros(64, D_HEAD)
    prev_k[62:64, 0:2] = torch.eye(2)
    read_token = torch.zeros(64, D_HEAD)
    read_token[:D_VOCAB] = eye

    def write_to(first_dim: int, sign: float = 1.0) -> torch.Tensor:
        w = torch.zeros(D_HEAD, 64)
        w[:, first_dim : first_dim + D_HEAD] = sign * eye
        return w

    set_head(0, 0, W_Q=prev_q, W_K=prev_k, W_V=read_token, W_O=write_to(32))
    set_head(0, 1, W_Q=prev_q, W_K=prev_k, W_V=read_token, W_O=write_to(16))
    set_head(0, 2, W_V=read_token, W_O=write_to(16, -1.0))
    # Induction: score match_logit for a key whose previous token equals the query token
    # (TransformerLens divides scores by sqrt(d_head)).
    read_prev = torch.zeros(64, D_HEAD)
    read_prev[32:48] = eye
    set_head(1, 0, W_Q=read_token * match_logit * math.sqrt(D_HEAD), W_K=read_prev, W_V=read_token, W_O=write_to(16))
    model.load_state_dict(sd)
    model.cfg.model_name = "planted-induction-2L"
    return model
