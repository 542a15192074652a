"""Attribution patching: exact where the metric is linear in the patched activation,
close to the exact sweep elsewhere, and the same through both gradient engines."""

from __future__ import annotations

import math

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.patching import (
    HeadPatchingResult,
    attribution_head_sweep,
    attribution_resid_sweep,
    head_sweep,
    logit_diff,
    mean_head_activations,
    patching_agreement,
    resid_sweep,
)

TASK = il.Task(
    name="varied",
    pairs=(("a", "b"), ("bcd", "e"), ("fg", "h"), ("ijkl", "m"), ("n", "o"), ("pqr", "s"), ("tu", "v"), ("wx", "y")),
)


def pair(model, side="left"):
    kw = dict(n_shots=2, n_prompts=3, seed=2, template="hendel", padding_side=side)
    return il.build_prompts(model, TASK, **kw), il.build_prompts(model, TASK, kind="shuffled", **kw)


@pytest.fixture(scope="module")
def linear_tail():
    """Attention-only, no normalization: the last layer's heads reach the logits linearly."""
    return il.tiny_model(n_layers=2, n_heads=4, d_model=64, d_head=16, attn_only=True, normalization_type=None, seed=5)


@pytest.mark.parametrize("positions", ["last", "each", "all"])
def test_attribution_is_exact_where_the_metric_is_linear(linear_tail, positions):
    clean, shuffled = pair(linear_tail)
    metric = logit_diff(torch.tensor([4, 9, 13]))
    exact = head_sweep(linear_tail, shuffled, clean, metric=metric, positions=positions)
    methods = ("fast", "plain") if positions == "last" else ("plain",)
    for method in methods:
        approx = attribution_head_sweep(linear_tail, shuffled, clean, metric=metric, positions=positions, method=method)
        assert approx.method == "attribution" and isinstance(approx, HeadPatchingResult)
        # Layer 1 writes straight into the unembedding: a logit difference is linear in z.
        torch.testing.assert_close(approx.patched[1], exact.patched[1], atol=2e-5, rtol=0)
        torch.testing.assert_close(approx.baseline, exact.baseline, atol=2e-5, rtol=0)
        # Layer 0 goes through layer-1 attention: only approximately linear.
        assert float((approx.effect[0] - exact.effect[0]).abs().max()) < 0.1 * float(exact.effect.abs().max())
    for hook, layer in (("resid_post", 1), ("resid_pre", 1)):
        ex = resid_sweep(linear_tail, shuffled, clean, metric=metric, hook=hook)
        for method in ("fast", "plain"):
            ap = attribution_resid_sweep(linear_tail, shuffled, clean, metric=metric, hook=hook, method=method)
            if hook == "resid_post":
                torch.testing.assert_close(ap.patched[layer], ex.patched[layer], atol=2e-5, rtol=0)
    assert hooks.count_hooks(linear_tail) == 0


@pytest.mark.parametrize("fixture", ["tiny_gqa", "tiny_rotary_gqa"])
def test_fast_and_full_backward_give_the_same_gradients(request, fixture):
    model = request.getfixturevalue(fixture)
    clean, shuffled = pair(model, "right")
    fast = attribution_head_sweep(model, shuffled, clean, metric="logprob", method="fast", batch_size=2)
    full = attribution_head_sweep(model, shuffled, clean, metric="logprob", method="plain", batch_size=1)
    torch.testing.assert_close(fast.patched, full.patched, atol=2e-5, rtol=0)
    for hook in ("resid_pre", "resid_post"):
        a = attribution_resid_sweep(model, shuffled, clean, metric="prob", hook=hook, method="fast")
        b = attribution_resid_sweep(model, shuffled, clean, metric="prob", hook=hook, method="plain")
        torch.testing.assert_close(a.patched, b.patched, atol=2e-5, rtol=0)
    each = attribution_resid_sweep(model, shuffled, clean, metric="prob", positions="each")
    assert each.patched.shape == (hooks.spec(model).n_layers, shuffled.tokens.shape[1], 3)
    # Summed over columns, the per-column estimates are the all-positions estimate.
    all_pos = attribution_head_sweep(model, shuffled, clean, metric="logprob", positions="all")
    per_col = attribution_head_sweep(model, shuffled, clean, metric="logprob", positions="each")
    torch.testing.assert_close(per_col.effect.sum(-1), all_pos.effect, atol=1e-5, rtol=0)


def test_attribution_ranks_heads_like_the_exact_sweep(tiny_rotary_gqa):
    clean, shuffled = pair(tiny_rotary_gqa)
    # Measured: Spearman 0.993 (batch source) and 0.790 (mean source, a larger patch).
    for source, floor in ((clean, 0.95), (mean_head_activations(tiny_rotary_gqa, clean), 0.7)):
        exact = head_sweep(tiny_rotary_gqa, shuffled, source, metric="logprob")
        approx = attribution_head_sweep(tiny_rotary_gqa, shuffled, source, metric="logprob")
        agreement = patching_agreement(approx, exact, k=3)
        assert agreement.n == 12 and agreement.spearman > floor and agreement.top_k_overlap == 1.0
        assert "Spearman" in agreement.summary() and len(agreement.to_dataframe()) == 1


def test_patching_agreement_by_hand():
    # Ranks [0,1,2,3] vs [0,2,1,3]: Spearman = 1 - 6*2/(4*15) = 0.8; Pearson of the values too.
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([1.0, 3.0, 2.0, 4.0])
    r = patching_agreement(a, b, k=2)
    assert math.isclose(r.spearman, 0.8, abs_tol=1e-9) and math.isclose(r.pearson, 0.8, abs_tol=1e-6)
    assert r.top_k_overlap == 0.5  # top-2 |a| = {3, 4}, top-2 |b| = {3, 4} at other indices
    # Ties get their average rank: ranks [0.5, 0.5, 2] vs [0, 1, 2] -> 1.5 / sqrt(1.5 * 2).
    t = patching_agreement(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([1.0, 2.0, 3.0]), k=1)
    assert math.isclose(t.spearman, 1.5 / math.sqrt(3.0), abs_tol=1e-9)
    # NaN cells (heads not swept) are left out.
    n = patching_agreement(torch.tensor([1.0, float("nan"), 3.0, 2.0]), torch.tensor([2.0, 5.0, 6.0, 4.0]))
    assert n.n == 3 and math.isclose(n.spearman, 1.0)
    signed = patching_agreement(torch.tensor([-5.0, 1.0, 2.0]), torch.tensor([-4.0, 2.0, 1.0]), k=1, by="signed")
    assert signed.top_k_overlap == 0.0
    with pytest.raises(ConfigError):
        patching_agreement(torch.zeros(3), torch.zeros(4))


def test_attribution_leaves_no_hook_when_the_metric_raises(tiny_gqa):
    clean, shuffled = pair(tiny_gqa)

    def broken(logits, batch):
        raise ArithmeticError("metric failed")

    for kwargs in (dict(method="fast"), dict(method="plain"), dict(positions="each")):
        with pytest.raises(ArithmeticError):
            attribution_head_sweep(tiny_gqa, shuffled, clean, metric=broken, **kwargs)
        assert hooks.count_hooks(tiny_gqa) == 0
    with pytest.raises(ArithmeticError):
        attribution_resid_sweep(tiny_gqa, shuffled, clean, metric=broken, method="plain")
    assert hooks.count_hooks(tiny_gqa) == 0


def test_exact_changed_tokens_computes_the_changed_columns_exactly(tiny_rotary_gqa):
    clean, shuffled = pair(tiny_rotary_gqa, side="right")
    kw = dict(metric="logprob", positions="each")
    changed = (shuffled.tokens != clean.tokens).any(0)
    assert 0 < int(changed.sum()) < changed.numel()  # the labels differ, the rest does not
    exact = resid_sweep(tiny_rotary_gqa, shuffled, clean, **kw)
    plain = attribution_resid_sweep(tiny_rotary_gqa, shuffled, clean, qk_fix=True, **kw)
    hybrid = attribution_resid_sweep(tiny_rotary_gqa, shuffled, clean, qk_fix=True, exact_changed_tokens=True, **kw)
    assert hybrid.method == "attribution+qk+exact-changed"
    torch.testing.assert_close(hybrid.patched[:, changed], exact.patched[:, changed], atol=1e-5, rtol=0)
    torch.testing.assert_close(hybrid.patched[:, ~changed], plain.patched[:, ~changed])
    torch.testing.assert_close(hybrid.effect, (hybrid.patched - hybrid.baseline).mean(-1))
    # Where the tokens differ the estimate is worse than exact, so the hybrid agrees better.
    assert patching_agreement(hybrid, exact).pearson > patching_agreement(plain, exact).pearson
    for bad in (dict(positions="last"), dict(positions="each", source=exact.patched.new_zeros(3, 64))):
        source = bad.pop("source", clean)
        with pytest.raises(ConfigError, match="exact_changed_tokens"):
            attribution_resid_sweep(tiny_rotary_gqa, shuffled, source, exact_changed_tokens=True, **bad)


def test_resid_sweep_on_chosen_columns(tiny_rotary_gqa):
    clean, shuffled = pair(tiny_rotary_gqa)
    full = resid_sweep(tiny_rotary_gqa, shuffled, clean, metric="logprob", positions="each")
    some = resid_sweep(tiny_rotary_gqa, shuffled, clean, metric="logprob", positions="each", columns=[4, 1])
    torch.testing.assert_close(some.patched[:, [1, 4]], full.patched[:, [1, 4]], atol=1e-5, rtol=0)
    others = [c for c in range(full.patched.shape[1]) if c not in (1, 4)]
    assert bool(some.patched[:, others].isnan().all())
    for columns, positions in (([1, 1], "each"), ([99], "each"), ([], "each"), ([1], "last")):
        with pytest.raises(ConfigError, match="columns"):
            resid_sweep(tiny_rotary_gqa, shuffled, clean, positions=positions, columns=columns)
