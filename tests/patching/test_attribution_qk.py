"""Attribution patching at positions, and AtP*'s QK fix: exact where the only curve between
the patch and the metric is the patched layer's softmax, better than first order elsewhere."""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.patching import (
    attribution_head_sweep,
    attribution_resid_sweep,
    head_sweep,
    logit_diff,
    patching_agreement,
    resid_sweep,
)

TASK = il.Task(
    name="varied",
    pairs=(("a", "b"), ("bcd", "e"), ("fg", "h"), ("ijkl", "m"), ("n", "o"), ("pqr", "s"), ("tu", "v"), ("wx", "y")),
)
WRONG = torch.tensor([4, 9, 13])


def pair(model, side="left"):
    kw = dict(n_shots=2, n_prompts=3, seed=2, template="hendel", padding_side=side)
    return il.build_prompts(model, TASK, **kw), il.build_prompts(model, TASK, kind="shuffled", **kw)


@pytest.fixture(scope="module")
def saturated():
    """Attention-only, no normalization, the last layer's queries (and values) scaled up: its
    softmax is sharp, and it is the only curve between its queries and keys and a logit difference."""
    model = il.tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, attn_only=True, normalization_type=None, seed=5)
    with torch.no_grad():
        for p in model.blocks[1].attn.q.parameters():
            p.mul_(16.0)
        for p in model.blocks[1].attn.v.parameters():
            p.mul_(10.0)
    return model


@pytest.mark.parametrize("hook, positions", [("q", "last"), ("k", "each"), ("k", "last")])
def test_qk_fix_is_exact_through_the_patched_softmax(saturated, hook, positions):
    clean, shuffled = pair(saturated)
    # at the last position, other queries (the shuffled prompts share the clean ones' query)
    other = il.build_prompts(saturated, TASK, n_shots=2, n_prompts=3, seed=7, template="hendel")
    source = other if positions == "last" else clean
    metric = logit_diff(WRONG)
    kw = dict(metric=metric, positions=positions, hook=hook)
    exact = head_sweep(saturated, shuffled, source, **kw)
    fixed = attribution_head_sweep(saturated, shuffled, source, qk_fix=True, **kw)
    first = attribution_head_sweep(saturated, shuffled, source, **kw)
    assert fixed.method == "attribution+qk" and first.method == "attribution"
    torch.testing.assert_close(fixed.patched[1], exact.patched[1], atol=1e-6, rtol=0, equal_nan=True)
    # the first-order estimate misses part of what the sharp softmax does
    assert float((first.patched[1] - exact.patched[1]).abs().nan_to_num(0.0).max()) > 1e-4
    assert float((exact.patched[1] - exact.baseline).abs().nan_to_num(0.0).max()) > 4e-3
    assert hooks.count_hooks(saturated) == 0


def test_attribution_at_positions_is_exact_where_linear(saturated):
    """Values and the attention output of the last layer reach a logit difference linearly."""
    clean, shuffled = pair(saturated, "right")
    metric = logit_diff(WRONG)
    for positions in ("last", "each"):
        exact = head_sweep(saturated, shuffled, clean, metric=metric, positions=positions, hook="v")
        for qk_fix in (False, True):
            approx = attribution_head_sweep(
                saturated, shuffled, clean, metric=metric, positions=positions, hook="v", qk_fix=qk_fix
            )
            torch.testing.assert_close(approx.patched[1], exact.patched[1], atol=2e-5, rtol=0)
        exact = resid_sweep(saturated, shuffled, clean, metric=metric, positions=positions, hook="attn_out")
        approx = attribution_resid_sweep(
            saturated, shuffled, clean, metric=metric, positions=positions, hook="attn_out"
        )
        torch.testing.assert_close(approx.patched[1], exact.patched[1], atol=2e-5, rtol=0)


def test_qk_fix_agrees_better_with_the_exact_sweep(tiny_rotary_gqa):
    clean, shuffled = pair(tiny_rotary_gqa)
    kw = dict(metric="logprob", positions="each")
    for hook in ("k", "z"):
        exact = head_sweep(tiny_rotary_gqa, shuffled, clean, hook=hook, **kw)
        first = patching_agreement(attribution_head_sweep(tiny_rotary_gqa, shuffled, clean, hook=hook, **kw), exact)
        fixed = patching_agreement(
            attribution_head_sweep(tiny_rotary_gqa, shuffled, clean, hook=hook, qk_fix=True, **kw), exact
        )
        assert fixed.pearson > first.pearson and fixed.pearson > 0.95
    exact = resid_sweep(tiny_rotary_gqa, shuffled, clean, hook="mlp_out", **kw)
    fixed = attribution_resid_sweep(tiny_rotary_gqa, shuffled, clean, hook="mlp_out", qk_fix=True, **kw)
    assert patching_agreement(fixed, exact).pearson > 0.9
    # a patch with the target's own value is exactly zero, not rounding
    own = attribution_head_sweep(tiny_rotary_gqa, clean, clean, qk_fix=True, **kw)
    assert float((own.patched - own.baseline).abs().max()) == 0.0


def test_qk_fix_options(tiny_rotary_gqa):
    clean, shuffled = pair(tiny_rotary_gqa)
    with pytest.raises(ConfigError, match="positions='last' or 'each'"):
        attribution_head_sweep(tiny_rotary_gqa, shuffled, clean, positions="all", qk_fix=True)
    with pytest.raises(ConfigError, match="full backward"):
        attribution_head_sweep(tiny_rotary_gqa, shuffled, clean, qk_fix=True, method="fast")
    with il.ablate_heads(tiny_rotary_gqa, [(0, 1)], method="zero"), pytest.raises(ConfigError, match="no hooks"):
        attribution_head_sweep(tiny_rotary_gqa, shuffled, clean, qk_fix=True)
