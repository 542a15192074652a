"""The fast patching engine on the real SmolLM2 (GQA, rotary, compatibility mode)."""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.patching import attribution_head_sweep, head_sweep, mean_head_activations, resid_sweep

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


# Sites of the position engine, a few cells each: every column costs the plain path a forward.
POSITION_CELLS = {
    "z": [(4, 2), (21, 7)],
    "q": [(13, 5)],
    "k": [(7, 1)],  # SmolLM2's 3 key/value heads, each read by 3 query heads
    "v": [(26, 2)],
    "resid_pre": [0, 17],
    "resid_mid": [9],
    "attn_out": [3],
    "mlp_out": [28],
}


@pytest.mark.slow
@pytest.mark.parametrize("hook", list(POSITION_CELLS))
def test_position_engine_equals_plain_on_smollm2(smollm2, hook):
    kw = dict(n_shots=3, n_prompts=2, seed=0, template="hendel")
    clean = il.build_prompts(smollm2, "antonym", **kw)
    shuffled = il.build_prompts(smollm2, "antonym", kind="shuffled", **kw)
    assert not bool(shuffled.attention_mask.all()), "two prompts of different lengths: left padding"
    assert not torch.equal(clean.tokens, shuffled.tokens)
    cells = POSITION_CELLS[hook]
    per_head = hook in ("z", "q", "k", "v")
    sweep = head_sweep if per_head else resid_sweep
    where = dict(heads=cells) if per_head else dict(layers=cells)
    for positions in ("each", "all") if hook == "z" else ("each",):
        args = dict(metric="logprob", hook=hook, positions=positions, **where)
        fast = sweep(smollm2, shuffled, clean, method="fast", **args)
        plain = sweep(smollm2, shuffled, clean, method="plain", **args)
        assert (fast.method, plain.method) == ("fast", "plain")
        assert fast.patched.shape == plain.patched.shape
        torch.testing.assert_close(fast.patched, plain.patched, atol=1e-4, rtol=0, equal_nan=True)
        assert float((plain.patched - plain.baseline).nan_to_num(0.0).abs().max()) > 1e-3  # the patches matter
    assert hooks.count_hooks(smollm2) == 0
