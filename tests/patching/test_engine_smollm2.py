"""The fast patching engine on the real SmolLM2 (GQA, rotary, compatibility mode)."""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.patching import attribution_head_sweep, head_sweep, mean_head_activations

pytestmark = pytest.mark.smollm2

# 20 heads spread over all 30 layers, every query head of a KV group represented.
HEADS = [(l, (3 * l) % 9) for l in range(0, 30, 3)] + [(l, (5 * l + 1) % 9) for l in range(1, 30, 3)]


def test_fast_engine_equals_plain_engine_on_smollm2(smollm2):
    kw = dict(n_shots=3, n_prompts=2, seed=0, template="hendel")
    clean = il.build_prompts(smollm2, "antonym", **kw)
    shuffled = il.build_prompts(smollm2, "antonym", kind="shuffled", **kw)
    assert not bool(shuffled.attention_mask.all()), "two prompts of different lengths: left padding"
    fast = head_sweep(smollm2, shuffled, clean, metric="logprob", heads=HEADS, method="fast")
    plain = head_sweep(smollm2, shuffled, clean, metric="logprob", heads=HEADS, method="plain")
    assert (fast.method, plain.method) == ("fast", "plain")
    swept = ~torch.isnan(plain.patched)
    assert int(swept.sum()) == 2 * len(HEADS)
    assert float((fast.patched - plain.patched)[swept].abs().max()) <= 1e-4
    assert float((fast.baseline - plain.baseline).abs().max()) <= 1e-4
    assert float((plain.patched - plain.baseline)[swept].abs().max()) > 1e-3  # the patches matter

    mean = mean_head_activations(smollm2, clean)
    fast_p = head_sweep(smollm2, shuffled, mean, metric="prob", heads=HEADS[:6], method="fast")
    plain_p = head_sweep(smollm2, shuffled, mean, metric="prob", heads=HEADS[:6], method="plain")
    ok = ~torch.isnan(plain_p.patched)
    assert float((fast_p.patched - plain_p.patched)[ok].abs().max()) <= 1e-4

    # The fast gradient engine (one row per prompt) against a full backward pass.
    a = attribution_head_sweep(smollm2, shuffled, clean, metric="logprob", method="fast")
    b = attribution_head_sweep(smollm2, shuffled, clean, metric="logprob", method="plain")
    assert float((a.effect - b.effect).abs().max()) <= 1e-4 * max(1.0, float(b.effect.abs().max()))
    assert hooks.count_hooks(smollm2) == 0
