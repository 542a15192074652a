"""Interventions: what they change (checked against hand-computed activations), and that
they never leave a hook behind, also when the metric inside the block raises.

A small HookedTransformer-like model, written here on TransformerLens's HookedRootModule
(the legacy HookedTransformer is gone from TransformerLens 4), checks that everything
works on a model that only speaks the hook contract.
"""

from __future__ import annotations

import contextlib
import math
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.patching import (
    ablate_heads,
    add_to_resid,
    head_activations,
    head_sweep,
    patch_activation,
    replace_resid,
    resid_sweep,
)
from icl_lens.prompting.evaluation import next_token_logprobs

VARIED = il.Task(
    name="varied",
    pairs=(("a", "b"), ("bcd", "e"), ("fg", "h"), ("ijkl", "m"), ("n", "o"), ("pqr", "s"), ("tu", "v"), ("wx", "y")),
)


def batch_of(model, n=3, kind="clean", side="left"):
    return il.build_prompts(
        model, VARIED, n_shots=2, n_prompts=n, seed=0, template="hendel", kind=kind, padding_side=side
    )


def cached(model, batch, names):
    _, cache = hooks.run_with_cache(model, batch.tokens, names, attention_mask=batch.attention_mask)
    return cache


# ---------------------------------------------------------------------------------------
# what each intervention does
# ---------------------------------------------------------------------------------------
def test_patch_activation_heads_and_per_row_positions(tiny_gqa):
    batch = batch_of(tiny_gqa, side="right")
    assert not batch.uniform_last_pos
    before = cached(tiny_gqa, batch, [hooks.z(1)])[hooks.z(1)]
    values = torch.randn(len(batch), 2, 16)
    with patch_activation(tiny_gqa, hooks.z(1), values, heads=[0, 3], positions=batch.last_pos):
        after = cached(tiny_gqa, batch, [hooks.z(1)])[hooks.z(1)]
    rows = torch.arange(len(batch))
    torch.testing.assert_close(after[rows, batch.last_pos][:, [0, 3]], values)
    expected = before.clone()
    expected[rows, batch.last_pos, 0] = after[rows, batch.last_pos, 0]
    expected[rows, batch.last_pos, 3] = after[rows, batch.last_pos, 3]
    torch.testing.assert_close(after, expected)  # nothing else moved
    assert hooks.count_hooks(tiny_gqa) == 0


def test_patch_activation_from_another_runs_cache_changes_the_output_as_expected(tiny_rotary_gqa):
    model = tiny_rotary_gqa
    clean, shuffled = batch_of(model), batch_of(model, kind="shuffled")
    clean_z = cached(model, clean, [hooks.z(2)])[hooks.z(2)]
    # The full-shape cache is indexed like the activation: head 1 at the answer position.
    with patch_activation(model, hooks.z(2), clean_z, heads=1, positions="last"):
        lp = next_token_logprobs(model, shuffled)
    sweep = head_sweep(model, shuffled, clean, metric="logprob", heads=[(2, 1)])
    picked = lp.gather(1, shuffled.answer_ids[:, None]).squeeze(1)
    torch.testing.assert_close(picked, sweep.patched[2, 1], atol=2e-5, rtol=0)


def test_gqa_key_heads_and_pattern_heads(tiny_gqa):
    batch = batch_of(tiny_gqa)
    k_before = cached(tiny_gqa, batch, [hooks.k(0)])[hooks.k(0)]
    assert k_before.shape[2] == 2  # key/value heads, not query heads
    with patch_activation(tiny_gqa, hooks.k(0), torch.zeros(16), heads=1, positions=4):
        k_after = cached(tiny_gqa, batch, [hooks.k(0)])[hooks.k(0)]
    assert float(k_after[:, 4, 1].abs().max()) == 0.0
    torch.testing.assert_close(k_after[:, :, 0], k_before[:, :, 0])
    one_hot = torch.zeros(batch.tokens.shape[1])
    one_hot[-1] = 1.0
    with patch_activation(tiny_gqa, hooks.pattern(1), one_hot, heads=[2], positions="last"):
        pat = cached(tiny_gqa, batch, [hooks.pattern(1)])[hooks.pattern(1)]
    torch.testing.assert_close(pat[:, 2, -1], one_hot.expand(len(batch), -1))
    assert float(pat[:, 1, -1, -1].max()) < 1.0


def test_add_and_replace_resid(tiny_rotary_gqa):
    model = tiny_rotary_gqa
    batch = batch_of(model, side="right")
    name = hooks.resid_post(1)
    before = cached(model, batch, [name])[name]
    vec = torch.randn(64)
    with add_to_resid(model, 1, vec, positions=batch.last_pos, scale=0.5):
        after = cached(model, batch, [name])[name]
    rows = torch.arange(len(batch))
    expected = before.clone()
    expected[rows, batch.last_pos] += 0.5 * vec
    torch.testing.assert_close(after, expected)
    per_prompt = torch.randn(len(batch), 64)
    with add_to_resid(model, 0, per_prompt, positions=None, hook="resid_pre"):
        got = cached(model, batch, [hooks.resid_pre(0)])[hooks.resid_pre(0)]
    base = cached(model, batch, [hooks.resid_pre(0)])[hooks.resid_pre(0)]
    torch.testing.assert_close(got, base + per_prompt[:, None])
    with replace_resid(model, 1, per_prompt, positions=batch.last_pos):
        replaced = cached(model, batch, [name])[name]
    torch.testing.assert_close(replaced[rows, batch.last_pos], per_prompt)
    assert hooks.count_hooks(model) == 0


def test_intervention_errors_say_what_to_do(tiny):
    batch = batch_of(tiny)
    with pytest.raises(ConfigError, match="head axis"):
        with patch_activation(tiny, hooks.resid_pre(0), torch.zeros(64), heads=[0]):
            hooks.forward(tiny, batch.tokens, batch.attention_mask)
    with pytest.raises(ConfigError, match="one position per row"):
        with patch_activation(tiny, hooks.z(0), torch.zeros(16), heads=0, positions=torch.tensor([1, 2])):
            hooks.forward(tiny, batch.tokens, batch.attention_mask)
    with pytest.raises(ConfigError, match="do not fit"):
        with patch_activation(tiny, hooks.z(0), torch.zeros(5), heads=0, positions="last"):
            hooks.forward(tiny, batch.tokens, batch.attention_mask)
    with pytest.raises(ConfigError, match="hook must be"):
        with add_to_resid(tiny, 0, torch.zeros(64), positions="last", hook="resid_middle"):
            pass
    with pytest.raises(ConfigError, match="out of range"):
        with replace_resid(tiny, 7, torch.zeros(64), positions="last"):
            pass
    assert hooks.count_hooks(tiny) == 0


# ---------------------------------------------------------------------------------------
# no leaked hook, whatever happens inside the block
# ---------------------------------------------------------------------------------------
def _interventions(model, batch):
    s = hooks.spec(model)
    yield patch_activation(model, hooks.z(0), torch.zeros(s.d_head), heads=[1], positions=batch.last_pos)
    yield add_to_resid(model, 0, torch.ones(s.d_model), positions="last")
    yield replace_resid(model, s.n_layers - 1, torch.zeros(s.d_model), positions=batch.last_pos, hook="resid_pre")
    for method in ("zero", "mean", "resample"):
        yield ablate_heads(model, [(0, 1)], method=method, reference=batch)
    yield ablate_heads(model, [(0, 1)], method="zero", preserve_pattern=True)


@pytest.mark.parametrize("fixture", ["tiny", "tiny_rotary_gqa"])
def test_every_intervention_removes_its_hooks_when_the_metric_raises(request, fixture):
    model = request.getfixturevalue(fixture)
    batch = batch_of(model)
    base = next_token_logprobs(model, batch)
    n = 0
    for intervention in _interventions(model, batch):
        with pytest.raises(ZeroDivisionError):
            with intervention:
                assert hooks.count_hooks(model) > 0
                lp = next_token_logprobs(model, batch)
                assert float((lp - base).abs().max()) > 0.0  # it acted
                _ = float(lp.sum()) / 0  # the metric fails
        assert hooks.count_hooks(model) == 0
        n += 1
    assert n == 7
    # And nested, with the inner one raising.
    with contextlib.ExitStack() as stack, pytest.raises(KeyError):
        for intervention in _interventions(model, batch):
            stack.enter_context(intervention)
        raise KeyError("inner")
    assert hooks.count_hooks(model) == 0
    torch.testing.assert_close(next_token_logprobs(model, batch), base)


# ---------------------------------------------------------------------------------------
# a legacy HookedTransformer-like model
# ---------------------------------------------------------------------------------------
class LegacyAttention(nn.Module):
    def __init__(self, d_model, n_heads, n_kv_heads, d_head):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.d_head = n_heads, n_kv_heads, d_head
        self.W_Q = nn.Parameter(torch.randn(n_heads, d_model, d_head) / math.sqrt(d_model))
        self.W_K = nn.Parameter(torch.randn(n_kv_heads, d_model, d_head) / math.sqrt(d_model))
        self.W_V = nn.Parameter(torch.randn(n_kv_heads, d_model, d_head) / math.sqrt(d_model))
        self.W_O = nn.Parameter(torch.randn(n_heads, d_head, d_model) / math.sqrt(d_head))
        for name in ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z"):
            setattr(self, name, HookPoint())

    def forward(self, x, mask):
        q = self.hook_q(torch.einsum("bpm,hmd->bphd", x, self.W_Q))
        k = self.hook_k(torch.einsum("bpm,hmd->bphd", x, self.W_K))
        v = self.hook_v(torch.einsum("bpm,hmd->bphd", x, self.W_V))
        group = self.n_heads // self.n_kv_heads
        k, v = k.repeat_interleave(group, 2), v.repeat_interleave(group, 2)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.d_head)
        n = x.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        allowed = causal[None, None] & mask[:, None, None, :].bool()
        scores = self.hook_attn_scores(scores.masked_fill(~allowed, float("-inf")))
        pattern = self.hook_pattern(torch.softmax(scores, -1).nan_to_num(0.0))
        z = self.hook_z(torch.einsum("bhqk,bkhd->bqhd", pattern, v))
        return torch.einsum("bqhd,hdm->bqm", z, self.W_O)


class LegacyBlock(nn.Module):
    def __init__(self, *args):
        super().__init__()
        self.attn = LegacyAttention(*args)
        self.hook_resid_pre, self.hook_attn_out, self.hook_resid_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, x, mask):
        x = self.hook_resid_pre(x)
        return self.hook_resid_post(x + self.hook_attn_out(self.attn(x, mask)))


class LegacyToy(HookedRootModule):
    """An attention-only GQA transformer in the legacy HookedTransformer style."""

    def __init__(self, n_layers=2, n_heads=4, n_kv_heads=2, d_model=32, d_head=8, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.tokenizer = il.char_tokenizer()
        d_vocab = len(self.tokenizer)
        self.cfg = SimpleNamespace(
            n_layers=n_layers,
            n_heads=n_heads,
            n_key_value_heads=n_kv_heads,
            d_head=d_head,
            d_model=d_model,
            d_vocab=d_vocab,
            n_ctx=128,
            attn_only=True,
            model_name="legacy-toy",
            default_prepend_bos=True,
            device="cpu",
        )
        self.W_E = nn.Parameter(torch.randn(d_vocab, d_model))
        self.W_pos = nn.Parameter(torch.randn(128, d_model) * 0.3)
        self.W_U = nn.Parameter(torch.randn(d_model, d_vocab) / math.sqrt(d_model))
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList([LegacyBlock(d_model, n_heads, n_kv_heads, d_head) for _ in range(n_layers)])
        self.setup()
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, tokens, attention_mask=None):
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding shifts positions
        x = self.hook_embed(self.W_E[tokens]) + self.W_pos[positions]
        for block in self.blocks:
            x = block(x, mask)
        return x @ self.W_U


def test_legacy_model_interventions_and_sweeps():
    model = LegacyToy()
    clean, shuffled = batch_of(model), batch_of(model, kind="shuffled")
    z = head_activations(model, clean)
    assert z.shape == (3, 2, 4, 8)
    sweep = head_sweep(model, shuffled, clean, metric="logprob")
    assert sweep.method == "plain"  # no fast engine for this architecture
    for l, h in [(0, 2), (1, 3)]:
        with patch_activation(model, hooks.z(l), z[:, l, h], heads=h, positions=shuffled.last_pos):
            lp = next_token_logprobs(model, shuffled).gather(1, shuffled.answer_ids[:, None]).squeeze(1)
        torch.testing.assert_close(sweep.patched[l, h], lp, atol=1e-5, rtol=0)
    with pytest.raises(ConfigError, match="fast"):
        head_sweep(model, shuffled, clean, method="fast")
    r = resid_sweep(model, shuffled, clean, metric="logprob", hook="resid_post")
    torch.testing.assert_close(r.patched[-1], r.reference, atol=1e-5, rtol=0)
    base = next_token_logprobs(model, shuffled)
    for intervention in _interventions(model, shuffled):
        with pytest.raises(ValueError), intervention:
            assert float((next_token_logprobs(model, shuffled) - base).abs().max()) > 0.0
            raise ValueError("metric failed")
        assert hooks.count_hooks(model) == 0
