"""The position engine against a plain loop written here: one unpadded prompt at a time, one
forward per patched (activation, column), the patch applied by a hand-written hook.

Covers the sites the position engine adds: queries, grouped-query keys and values, and
head outputs at every column; ``resid_mid``, attention and MLP outputs, and residual
streams at every column (the layer x position map); positions last / each / all, left
and right padding, batch sizes 1 and > 1. Head outputs and ``resid_pre``/``resid_post``
at every column are also compared with their loops in ``test_sweeps.py``.
"""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.patching import head_sweep, resid_sweep
from icl_lens.patching.position_engine import position_engine

VARIED = il.Task(
    name="varied",
    pairs=(("a", "b"), ("bcd", "e"), ("fg", "h"), ("ijkl", "m"), ("n", "o"), ("pqr", "s"), ("tu", "v"), ("wxyz", "a")),
)


def prompts(model, side):
    kw = dict(n_shots=2, n_prompts=3, seed=1, template="hendel", padding_side=side)
    clean = il.build_prompts(model, VARIED, **kw)
    shuffled = il.build_prompts(model, VARIED, kind="shuffled", **kw)
    assert clean.tokens.shape == shuffled.tokens.shape
    assert len(set(clean.attention_mask.sum(1).tolist())) > 1, "the test needs padded prompts"
    return clean, shuffled


def unpadded(batch, i):
    keep = batch.attention_mask[i].bool()
    return batch.tokens[i][keep][None], keep.nonzero().flatten().tolist()


def answer_logprob(model, tokens, answer, fwd=()):
    with torch.no_grad():
        logits = hooks.forward(model, tokens, None, list(fwd))[0, -1]
    return float(torch.log_softmax(logits.float(), -1)[answer])


def reference(model, target, source, hook, positions, cells):
    """Per (layer[, head][, column], prompt): the answer's log-prob with that activation patched by hand."""
    s = hooks.spec(model)
    per_head = hook in ("z", "q", "k", "v")
    name = (lambda l: hooks.head_hook(hook, l)) if per_head else (lambda l: hooks.block_hook(hook, l))
    n, n_cols = target.tokens.shape
    shape = (s.n_layers,) + ((s.heads_of(hook),) if per_head else ()) + ((n_cols,) if positions == "each" else ())
    out = torch.full((*shape, n), float("nan"))
    for i in range(n):
        toks, cols = unpadded(target, i)
        src_toks, src_cols = unpadded(source, i)
        assert src_cols == cols
        _, cache = hooks.run_with_cache(model, src_toks, [name(l) for l in range(s.n_layers)])
        answer = int(target.answer_ids[i])
        for cell in cells:
            layer, head = cell if per_head else (cell, None)
            where = {"last": [[len(cols) - 1]], "all": [list(range(len(cols)))]}.get(positions)
            if where is None:  # each column alone; padding columns change nothing
                where = [[cols.index(c)] if c in cols else [] for c in range(n_cols)]
            for k, us in enumerate(where):

                def patch(act, hook, us=us, layer=layer, head=head, cache=cache):
                    act = act.clone()
                    index = (0, us) if head is None else (0, us, head)
                    act[index] = cache[name(layer)][index]
                    return act

                key = (layer,) + (() if head is None else (head,)) + ((k,) if positions == "each" else ()) + (i,)
                out[key] = answer_logprob(model, toks, answer, [(name(layer), patch)])
    return out


def check(model, target, source, hook, positions, cells, expected):
    per_head = hook in ("z", "q", "k", "v")
    for method, batch_size in (("fast", 1), ("fast", None), ("plain", 2)):
        kw = dict(metric="logprob", positions=positions, hook=hook, method=method, batch_size=batch_size)
        if per_head:
            r = head_sweep(model, target, source, heads=cells, **kw)
        else:
            r = resid_sweep(model, target, source, layers=cells, **kw)
        assert r.method == method and r.hook == hook
        torch.testing.assert_close(r.patched, expected, atol=2e-5, rtol=0, equal_nan=True)
    assert hooks.count_hooks(model) == 0
    return r


@pytest.mark.parametrize("hook", ["q", "k", "v"])
@pytest.mark.parametrize("positions", ["last", "each", "all"])
def test_query_key_value_heads_match_plain_loop(tiny_rotary_gqa, hook, positions):
    model = tiny_rotary_gqa
    s = hooks.spec(model)
    clean, shuffled = prompts(model, "left")
    n_heads = s.heads_of(hook)
    assert n_heads == (2 if hook in ("k", "v") else 4)  # grouped-query attention: 2 key/value heads
    every = [(l, h) for l in range(s.n_layers) for h in range(n_heads)]
    cells = every[::3] if positions == "each" else every
    expected = reference(model, shuffled, clean, hook, positions, cells)
    r = check(model, shuffled, clean, hook, positions, cells, expected)
    assert r.patched.shape[:2] == (s.n_layers, n_heads)
    moved = (r.patched - r.baseline).nan_to_num(0.0).abs().max()
    assert float(moved) > 1e-4  # the patches matter (well above the 2e-5 tolerance)


@pytest.mark.parametrize("hook", ["k", "z"])
def test_right_padding_every_column(tiny_gqa, hook):
    clean, shuffled = prompts(tiny_gqa, "right")
    cells = [(0, 1), (1, 0)]
    expected = reference(tiny_gqa, shuffled, clean, hook, "each", cells)
    r = check(tiny_gqa, shuffled, clean, hook, "each", cells, expected)
    # The strongest head is a swept one, its effect the largest |effect| over its columns.
    (layer, head, effect), *_ = r.top(1, by="abs")
    assert (layer, head) in cells
    assert effect == pytest.approx(float(r.effect[layer, head].nan_to_num(0.0).abs().max()), abs=1e-7) or (
        -effect == pytest.approx(float(r.effect[layer, head].nan_to_num(0.0).abs().max()), abs=1e-7)
    )
    # Columns after a prompt's answer position cannot change its answer.
    i = int(shuffled.last_pos.argmin())
    late = int(shuffled.last_pos[i]) + 1
    torch.testing.assert_close(
        r.patched[0, 1, late:, i], r.baseline[i].expand(shuffled.tokens.shape[1] - late), atol=1e-6, rtol=0
    )


@pytest.mark.parametrize(
    "hook, side",
    [
        ("resid_pre", "right"),
        ("resid_mid", "left"),
        ("resid_post", "left"),
        ("attn_out", "right"),
        ("mlp_out", "left"),
        ("mlp_out", "right"),
    ],
)
def test_layer_by_position_matches_plain_loop(tiny_rotary_gqa, hook, side):
    model = tiny_rotary_gqa
    clean, shuffled = prompts(model, side)
    layers = list(range(hooks.spec(model).n_layers))
    for positions in ("last", "each"):
        expected = reference(model, shuffled, clean, hook, positions, layers)
        r = check(model, shuffled, clean, hook, positions, layers, expected)
    assert r.patched.shape == (len(layers), shuffled.tokens.shape[1], len(shuffled))


def test_attention_only_model_and_learned_positions(tiny):
    clean, shuffled = prompts(tiny, "left")
    expected = reference(tiny, shuffled, clean, "attn_out", "each", [0, 1])
    check(tiny, shuffled, clean, "attn_out", "each", [0, 1], expected)
    with pytest.raises(ConfigError, match="attention-only"):
        resid_sweep(tiny, shuffled, clean, hook="mlp_out")


def test_engine_refuses_models_with_hooks_attached(tiny_gqa):
    assert position_engine(tiny_gqa) is not None
    with il.ablate_heads(tiny_gqa, [(0, 1)], method="zero"):
        assert position_engine(tiny_gqa) is None
