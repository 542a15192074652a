"""Exact sweeps against a plain loop written here: one prompt at a time, unpadded, one
forward per patched head, the patch applied by a hand-written hook.

Covers last position / each position / all positions, left and right padding, grouped-
query attention (with and without rotary embeddings), batch sizes 1 and >1, the fast and
the plain engine, batch / mean-vector / per-prompt / cache sources, built-in and
user-defined metrics, and the result objects.
"""

from __future__ import annotations

import math

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.patching import (
    HeadPatchingResult,
    ResidPatchingResult,
    head_activations,
    head_sweep,
    logit_diff,
    mean_head_activations,
    resid_activations,
    resid_sweep,
)

# Inputs of different lengths, so prompts of one batch need padding.
VARIED = il.Task(
    name="varied",
    pairs=(
        ("a", "b"),
        ("bcd", "e"),
        ("fg", "h"),
        ("ijkl", "m"),
        ("n", "o"),
        ("pqr", "s"),
        ("tu", "v"),
        ("wxyz", "a"),
        ("bc", "d"),
        ("efghi", "j"),
    ),
)
MODELS = ["tiny", "tiny_gqa", "tiny_rotary_gqa"]


def prompts(model, side="left", n=3):
    clean = il.build_prompts(model, VARIED, n_shots=2, n_prompts=n, seed=1, template="hendel", padding_side=side)
    shuffled = il.build_prompts(
        model, VARIED, n_shots=2, n_prompts=n, seed=1, template="hendel", kind="shuffled", padding_side=side
    )
    assert clean.tokens.shape == shuffled.tokens.shape
    assert len(set(clean.attention_mask.sum(1).tolist())) > 1, "the test needs padded prompts"
    return clean, shuffled


# ---------------------------------------------------------------------------------------
# the reference: a plain loop, one unpadded prompt and one head at a time
# ---------------------------------------------------------------------------------------
def unpadded(batch, i):
    keep = batch.attention_mask[i].bool()
    return batch.tokens[i][keep][None], keep.nonzero().flatten().tolist()


def last_logits(model, tokens, fwd=()):
    with torch.no_grad():
        return hooks.forward(model, tokens, None, list(fwd))[:, -1]


def logprob(logits, batch, i):
    return float(torch.log_softmax(logits.float(), -1)[0, batch.answer_ids[i]])


def reference_heads(model, target, source, positions, heads, metric=logprob):
    """Per (layer, head[, column], prompt): the metric with that head's z patched by hand."""
    s = hooks.spec(model)
    n, n_cols = target.tokens.shape
    shape = (s.n_layers, s.n_heads) + ((n_cols,) if positions == "each" else ()) + (n,)
    out = torch.full(shape, float("nan"))
    base = torch.empty(n)
    for i in range(n):
        toks, cols = unpadded(target, i)
        base[i] = metric(last_logits(model, toks), target, i)
        if isinstance(source, torch.Tensor):  # one vector per head (e.g. a mean)
            src = {l: source[l][None, None].expand(1, toks.shape[1], -1, -1) for l in range(s.n_layers)}
        else:
            src_toks, src_cols = unpadded(source, i)
            assert src_cols == cols
            _, cache = hooks.run_with_cache(model, src_toks, [hooks.z(l) for l in range(s.n_layers)])
            src = {l: cache[hooks.z(l)] for l in range(s.n_layers)}
        for l, h in heads:
            where = {"last": [[len(cols) - 1]], "all": [list(range(len(cols)))]}.get(positions)
            if where is None:  # each column alone; padding columns change nothing
                where = [[cols.index(c)] if c in cols else [] for c in range(n_cols)]
            for k, us in enumerate(where):

                def patch(z, hook, us=us, l=l, h=h, src=src):
                    z = z.clone()
                    z[0, us, h] = src[l][0, us, h]
                    return z

                value = metric(last_logits(model, toks, [(hooks.z(l), patch)]), target, i)
                out[(l, h, k, i) if positions == "each" else (l, h, i)] = value
    return out, base


def some_heads(model, k=None):
    s = hooks.spec(model)
    every = [(l, h) for l in range(s.n_layers) for h in range(s.n_heads)]
    return every if k is None else every[:: max(1, len(every) // k)][:k]


# ---------------------------------------------------------------------------------------
# head sweeps
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fixture", MODELS)
@pytest.mark.parametrize("side", ["left", "right"])
def test_last_position_sweep_matches_plain_loop(request, fixture, side):
    model = request.getfixturevalue(fixture)
    clean, shuffled = prompts(model, side)
    expected, base = reference_heads(model, shuffled, clean, "last", some_heads(model))
    for method in ("fast", "plain"):
        for batch_size in (1, 2, None):
            r = head_sweep(model, shuffled, clean, metric="logprob", method=method, batch_size=batch_size)
            assert r.method == method
            torch.testing.assert_close(r.patched, expected, atol=2e-5, rtol=0)
            torch.testing.assert_close(r.baseline, base, atol=2e-5, rtol=0)
    assert hooks.count_hooks(model) == 0


@pytest.mark.parametrize("fixture", MODELS)
@pytest.mark.parametrize("positions", ["each", "all"])
def test_each_and_all_positions_match_plain_loop(request, fixture, positions):
    model = request.getfixturevalue(fixture)
    clean, shuffled = prompts(model, "left")
    heads = some_heads(model, 3) if positions == "each" else some_heads(model)
    expected, base = reference_heads(model, shuffled, clean, positions, heads)
    for method, batch_size in (("fast", 1), ("fast", None), ("plain", 2)):
        r = head_sweep(
            model,
            shuffled,
            clean,
            metric="logprob",
            positions=positions,
            heads=heads,
            batch_size=batch_size,
            method=method,
        )
        assert r.method == method and r.positions == positions
        torch.testing.assert_close(r.patched, expected, atol=2e-5, rtol=0, equal_nan=True)
        torch.testing.assert_close(r.baseline, base, atol=2e-5, rtol=0)
    if positions == "each":
        # A padding column is never attended to: patching it changes nothing.
        pad_col = 0
        assert not bool(shuffled.attention_mask[:, pad_col].all())
        rows = ~shuffled.attention_mask[:, pad_col].bool()
        l, h = heads[0]
        torch.testing.assert_close(r.patched[l, h, pad_col][rows], r.baseline[rows], atol=1e-6, rtol=0)


def test_right_padding_each_position(tiny_rotary_gqa):
    clean, shuffled = prompts(tiny_rotary_gqa, "right")
    heads = [(2, 1)]
    expected, _ = reference_heads(tiny_rotary_gqa, shuffled, clean, "each", heads)
    r = head_sweep(tiny_rotary_gqa, shuffled, clean, metric="logprob", positions="each", heads=heads)
    torch.testing.assert_close(r.patched, expected, atol=2e-5, rtol=0, equal_nan=True)


@pytest.mark.parametrize("fixture", ["tiny_gqa", "tiny_rotary_gqa"])
def test_mean_activation_source_is_the_same_vector_for_every_prompt(request, fixture):
    model = request.getfixturevalue(fixture)
    clean, shuffled = prompts(model, "left", n=4)
    mean = mean_head_activations(model, clean)
    assert mean.shape == (hooks.spec(model).n_layers, hooks.spec(model).n_heads, hooks.spec(model).d_head)
    torch.testing.assert_close(mean, head_activations(model, clean).mean(0))
    expected, base = reference_heads(model, shuffled, mean, "last", some_heads(model))
    fast = head_sweep(model, shuffled, mean, metric="logprob")
    plain = head_sweep(model, shuffled, mean, metric="logprob", method="plain", batch_size=1)
    assert fast.method == "fast" and fast.source == "vector" and fast.reference is None
    for r in (fast, plain):
        torch.testing.assert_close(r.patched, expected, atol=2e-5, rtol=0)
        torch.testing.assert_close(r.effect, (expected - base).mean(-1), atol=2e-5, rtol=0)


def test_per_prompt_and_cache_sources_equal_the_batch_source(tiny_rotary_gqa):
    model = tiny_rotary_gqa
    clean, shuffled = prompts(model, "left")
    from_batch = head_sweep(model, shuffled, clean, metric="logprob")
    per_prompt = head_sweep(model, shuffled, head_activations(model, clean), metric="logprob")
    assert per_prompt.source == "per-prompt"
    torch.testing.assert_close(per_prompt.patched, from_batch.patched, atol=1e-6, rtol=0)
    names = [hooks.z(l) for l in range(hooks.spec(model).n_layers)]
    _, cache = hooks.run_with_cache(model, clean.tokens, names, attention_mask=clean.attention_mask)
    for positions in ("last", "all"):
        a = head_sweep(model, shuffled, cache, metric="logprob", positions=positions, method="plain")
        b = head_sweep(model, shuffled, clean, metric="logprob", positions=positions, method="plain")
        assert a.source == "cache"
        torch.testing.assert_close(a.patched, b.patched, atol=1e-6, rtol=0)


def test_results_do_not_depend_on_chunking(tiny_rotary_gqa):
    """Many prompts in one chunk: the fast engine splits variants and logits into passes."""
    kw = dict(n_shots=2, n_prompts=200, seed=3, template="hendel")
    clean = il.build_prompts(tiny_rotary_gqa, VARIED, **kw)
    shuffled = il.build_prompts(tiny_rotary_gqa, VARIED, kind="shuffled", **kw)
    one_chunk = head_sweep(tiny_rotary_gqa, shuffled, clean, metric="prob", batch_size=200)
    small = head_sweep(tiny_rotary_gqa, shuffled, clean, metric="prob", batch_size=7)
    assert one_chunk.method == small.method == "fast"
    torch.testing.assert_close(one_chunk.patched, small.patched, atol=1e-6, rtol=0)
    rows = [0, 57, 199]
    plain = head_sweep(tiny_rotary_gqa, shuffled.select(rows), clean.select(rows), metric="prob", method="plain")
    torch.testing.assert_close(one_chunk.patched[..., rows], plain.patched, atol=1e-6, rtol=0)


def test_patching_a_run_with_its_own_activations_changes_nothing(tiny_gqa):
    clean, _ = prompts(tiny_gqa, "left")
    for method in ("fast", "plain"):
        r = head_sweep(tiny_gqa, clean, clean, metric="prob", method=method)
        torch.testing.assert_close(r.patched, r.baseline.expand_as(r.patched), atol=1e-6, rtol=0)
        torch.testing.assert_close(r.reference, r.baseline, atol=1e-6, rtol=0)


def test_user_defined_metric_and_metric_names(tiny_rotary_gqa):
    model = tiny_rotary_gqa
    clean, shuffled = prompts(model, "left")

    def answer_margin(logits, batch):
        return logits.gather(1, batch.answer_ids[:, None]).squeeze(1) - logits.mean(-1)

    def margin_ref(logits, batch, i):
        return float(logits[0, batch.answer_ids[i]] - logits[0].mean())

    heads = some_heads(model, 4)
    expected, _ = reference_heads(model, shuffled, clean, "last", heads, metric=margin_ref)
    for method in ("fast", "plain"):
        r = head_sweep(model, shuffled, clean, metric=answer_margin, heads=heads, method=method, batch_size=2)
        assert r.metric == "answer_margin"
        torch.testing.assert_close(r.patched, expected, atol=2e-5, rtol=0, equal_nan=True)
        assert int(torch.isnan(r.effect).sum()) == len(some_heads(model)) - len(heads)

    lp = head_sweep(model, shuffled, clean, metric="logprob")
    prob = head_sweep(model, shuffled, clean, metric="prob")
    torch.testing.assert_close(prob.patched, lp.patched.exp(), atol=1e-6, rtol=1e-5)
    acc = head_sweep(model, shuffled, clean, metric="accuracy")
    assert set(acc.patched.unique().tolist()) <= {0.0, 1.0}
    kl = head_sweep(model, shuffled, clean, metric="kl")
    assert float(kl.reference.abs().max()) < 1e-5  # KL(source || source) = 0
    assert bool((kl.patched >= -1e-6).all())
    wrong = torch.tensor([5, 6, 7])
    ld = head_sweep(model, shuffled, clean, metric=logit_diff(wrong), batch_size=1)
    ref, _ = reference_heads(
        model,
        shuffled,
        clean,
        "last",
        some_heads(model),
        metric=lambda lg, b, i: float(lg[0, b.answer_ids[i]] - lg[0, wrong[i]]),
    )
    torch.testing.assert_close(ld.patched, ref, atol=5e-5, rtol=0)
    with pytest.raises(ConfigError, match="ambiguous"):
        head_sweep(model, shuffled, clean, metric="logit_diff")
    with pytest.raises(ConfigError, match="one value per prompt"):
        head_sweep(model, shuffled, clean, metric=lambda logits, batch: logits.sum())


def test_normalized_effect_and_result_object(tiny_gqa, tmp_path):
    clean, shuffled = prompts(tiny_gqa, "left")
    r = head_sweep(tiny_gqa, shuffled, clean, metric="logprob")
    by_hand = (r.patched - r.baseline).mean(-1) / (r.reference - r.baseline).mean()
    torch.testing.assert_close(r.normalized(), by_hand)
    df = r.to_dataframe()
    assert len(df) == 8 and set(df.columns) >= {"layer", "head", "effect", "normalized"}
    assert math.isclose(df.effect.iloc[3], float(r.effect[0, 3]), rel_tol=1e-6)
    best = r.top(2, by="abs")
    assert abs(best[0][2]) == pytest.approx(float(r.effect.abs().max()))
    assert r.plot() is not None and "<img" in r._repr_html_()
    loaded = HeadPatchingResult.load(r.save(tmp_path / "sweep"))
    assert il.core.results.results_equal(loaded, r)
    vec = head_sweep(tiny_gqa, shuffled, mean_head_activations(tiny_gqa, clean))
    with pytest.raises(ConfigError, match="reference"):
        vec.normalized()


def test_sweeps_leave_no_hook_when_the_metric_raises(tiny_rotary_gqa):
    clean, shuffled = prompts(tiny_rotary_gqa, "left")

    def broken(logits, batch):
        raise RuntimeError("metric failed")

    for kwargs in (dict(method="fast"), dict(method="plain"), dict(positions="each", heads=[(0, 0)])):
        with pytest.raises(RuntimeError, match="metric failed"):
            head_sweep(tiny_rotary_gqa, shuffled, clean, metric=broken, **kwargs)
        assert hooks.count_hooks(tiny_rotary_gqa) == 0
    for method in ("fast", "plain"):
        with pytest.raises(RuntimeError, match="metric failed"):
            resid_sweep(tiny_rotary_gqa, shuffled, clean, metric=broken, method=method)
        assert hooks.count_hooks(tiny_rotary_gqa) == 0


def test_fast_engine_respects_hooks_already_attached(tiny_gqa):
    """With a user's hooks on the model, 'auto' takes the plain engine (which runs them)."""
    clean, shuffled = prompts(tiny_gqa, "left")
    with il.ablate_heads(tiny_gqa, [(0, 1)], method="zero"):
        auto = head_sweep(tiny_gqa, shuffled, clean, metric="logprob")
        plain = head_sweep(tiny_gqa, shuffled, clean, metric="logprob", method="plain")
        with pytest.raises(ConfigError, match="fast"):
            head_sweep(tiny_gqa, shuffled, clean, method="fast")
    free = head_sweep(tiny_gqa, shuffled, clean, metric="logprob")
    assert auto.method == "plain" and free.method == "fast"
    torch.testing.assert_close(auto.patched, plain.patched)
    assert float((auto.baseline - free.baseline).abs().max()) > 1e-4  # the ablation did act


# ---------------------------------------------------------------------------------------
# residual-stream sweeps
# ---------------------------------------------------------------------------------------
def reference_resid(model, target, source, hook, positions):
    s = hooks.spec(model)
    name = {"resid_pre": hooks.resid_pre, "resid_post": hooks.resid_post, "resid_mid": hooks.resid_mid}[hook]
    n, n_cols = target.tokens.shape
    out = torch.full((s.n_layers,) + ((n_cols,) if positions == "each" else ()) + (n,), float("nan"))
    for i in range(n):
        toks, cols = unpadded(target, i)
        _, cache = hooks.run_with_cache(model, unpadded(source, i)[0], [name(l) for l in range(s.n_layers)])
        for l in range(s.n_layers):
            where = (
                [[len(cols) - 1]]
                if positions == "last"
                else [[cols.index(c)] if c in cols else [] for c in range(n_cols)]
            )
            for k, us in enumerate(where):

                def patch(r, hook, us=us, l=l, cache=cache):
                    r = r.clone()
                    r[0, us] = cache[name(l)][0, us]
                    return r

                value = logprob(last_logits(model, toks, [(name(l), patch)]), target, i)
                out[(l, k, i) if positions == "each" else (l, i)] = value
    return out


@pytest.mark.parametrize("fixture", ["tiny", "tiny_rotary_gqa"])
@pytest.mark.parametrize("hook", ["resid_pre", "resid_post"])
def test_resid_sweep_matches_plain_loop(request, fixture, hook):
    model = request.getfixturevalue(fixture)
    clean, shuffled = prompts(model, "right")
    expected = reference_resid(model, shuffled, clean, hook, "last")
    for method, batch_size in (("fast", 1), ("fast", None), ("plain", 2)):
        r = resid_sweep(model, shuffled, clean, metric="logprob", hook=hook, method=method, batch_size=batch_size)
        assert isinstance(r, ResidPatchingResult) and r.method == method
        torch.testing.assert_close(r.patched, expected, atol=2e-5, rtol=0)
    # Patching the last block's output at the answer position reproduces the source run there.
    if hook == "resid_post":
        torch.testing.assert_close(r.patched[-1], r.reference, atol=2e-5, rtol=0)
    each = resid_sweep(model, shuffled, clean, metric="logprob", hook=hook, positions="each")
    torch.testing.assert_close(each.patched, reference_resid(model, shuffled, clean, hook, "each"), atol=2e-5, rtol=0)
    assert len(each.to_dataframe()) == hooks.spec(model).n_layers * shuffled.tokens.shape[1]


def test_resid_sweep_vector_sources_and_mid(tiny_gqa):
    clean, shuffled = prompts(tiny_gqa, "left")
    acts = resid_activations(tiny_gqa, clean, hook="resid_pre")
    a = resid_sweep(tiny_gqa, shuffled, acts, metric="logprob")
    b = resid_sweep(tiny_gqa, shuffled, clean, metric="logprob")
    torch.testing.assert_close(a.patched, b.patched, atol=1e-6, rtol=0)
    mid = resid_sweep(tiny_gqa, shuffled, clean, metric="logprob", hook="resid_mid")
    assert mid.method == "fast"
    expected = reference_resid(tiny_gqa, shuffled, clean, "resid_mid", "last")
    torch.testing.assert_close(mid.patched, expected, atol=2e-5, rtol=0)
    one = resid_sweep(tiny_gqa, shuffled, acts.mean(0), metric="logprob", layers=[1])
    assert bool(torch.isnan(one.patched[0]).all()) and not bool(torch.isnan(one.patched[1]).any())
