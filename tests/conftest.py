"""Shared fixtures: real tiny models (random weights) and the real SmolLM2.

Tiny models boot in well under a second; SmolLM2 is converted from its GGUF once per
cache directory (~30 s the first time) and then boots in ~2 s, once per test session.
"""

from __future__ import annotations

import pytest
import torch

import icl_lens as il

il.set_progress(False)
torch.set_grad_enabled(True)


@pytest.fixture(scope="session")
def smollm2():
    """The real SmolLM2-135M-Instruct, compatibility mode on (shared: do not modify)."""
    return il.load_model("smollm2")


@pytest.fixture(scope="session")
def tiny():
    """2-layer attention-only random model with a character tokenizer (4 heads)."""
    return il.tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, attn_only=True, seed=0)


@pytest.fixture(scope="session")
def tiny_gqa():
    """2-layer random model with MLPs and grouped-query attention (4 query, 2 KV heads)."""
    return il.tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, d_head=16, attn_only=False, seed=1)


@pytest.fixture(scope="session")
def tiny_rotary_gqa():
    """3-layer random rotary model with MLPs and GQA, like SmolLM2 in miniature."""
    return il.tiny_model(
        n_layers=3,
        n_heads=4,
        n_kv_heads=2,
        d_model=64,
        d_head=16,
        attn_only=False,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        seed=2,
    )


@pytest.fixture(scope="session")
def word_task():
    """A small planted task (letters -> next letter) for tiny-model tests."""
    letters = "abcdefghijklmnopqrstuvwxy"
    return il.Task(name="next_char", pairs=tuple((c, chr(ord(c) + 1)) for c in letters))
