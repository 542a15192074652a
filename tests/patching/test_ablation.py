"""ablate_heads: what each method writes into hook_z, pattern preservation, and no leaked hooks.

The planted model's circuits make exact predictions: L0H0 feeds only L1H0's keys, so a
pattern-preserving ablation of L0H0 changes nothing at all, while a plain one turns L1H0
into a uniform head; L0H1 writes the previous token's logit (+1) and nothing else.
"""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.induction.planted import planted_induction_model
from icl_lens.patching.ablation import _cyclic_pairing, forward_is_wrapped

LENGTHS = (4, 8, 12)


@pytest.fixture(scope="module")
def planted():
    return planted_induction_model()


@pytest.fixture(scope="module")
def tokens():
    gen = torch.Generator().manual_seed(0)
    return torch.cat([torch.zeros(3, 1, dtype=torch.long), torch.randint(1, 16, (3, 24), generator=gen)], 1)


def capture_z(model, tokens, layer, attention_mask=None):
    _, cache = hooks.run_with_cache(model, tokens, [hooks.z(layer)], attention_mask=attention_mask)
    return cache[hooks.z(layer)]


def uniform_induction(L: int) -> float:
    return sum(1 / (q + 1) for q in range(L + 1, 2 * L + 1)) / L


def no_leak(model) -> bool:
    return hooks.count_hooks(model) == 0 and not forward_is_wrapped(model)


def test_zero_ablating_previous_token_head_breaks_induction(planted):
    config = il.InductionConfig(repeat_lengths=LENGTHS, prefix_length=6, n_sequences=2, weight_scores=False)
    with il.ablate_heads(planted, [(0, 0)], "zero"):
        broken = il.find_induction_heads(planted, config)
    # L1H0's keys read only L0H0's output: with it zeroed every score is 0 and L1H0
    # attends uniformly to keys 0..q.
    for i, L in enumerate(LENGTHS):
        assert broken.induction[1, 0, i] == pytest.approx(uniform_induction(L), abs=1e-6)
    with il.ablate_heads(planted, [(0, 0)], "zero", preserve_pattern=True):
        kept = il.find_induction_heads(planted, config)
    assert torch.allclose(kept.induction[1, 0], torch.ones(3), atol=1e-6)
    assert no_leak(planted)


def test_pattern_preserving_ablation_removes_only_value_paths(planted, tokens):
    clean = planted(tokens)
    # L0H0 reaches the logits only through L1H0's attention pattern: preserved -> no change.
    with il.ablate_heads(planted, [(0, 0)], "zero", preserve_pattern=True):
        assert torch.allclose(planted(tokens), clean, atol=1e-5)
    with il.ablate_heads(planted, [(0, 0)], "zero"):
        assert (planted(tokens) - clean).abs().max() > 0.1
    # L0H1 adds exactly +1 to the logit of the previous token (position q-1) at q >= 1.
    with il.ablate_heads(planted, [(0, 1)], "zero", preserve_pattern=True):
        ablated = planted(tokens)
    expected = clean.clone()
    prev = tokens[:, :-1]
    expected[:, 1:] -= torch.nn.functional.one_hot(prev, 16).float()
    expected[:, 0] -= torch.nn.functional.one_hot(tokens[:, 0], 16).float()
    assert torch.allclose(ablated, expected, atol=1e-5)
    assert no_leak(planted)


def test_mean_ablation_uses_non_padding_mean(tiny):
    words = il.Task(
        name="words", pairs=(("a", "b"), ("cat", "dog"), ("hello", "world"), ("on", "off"), ("up", "down"), ("x", "y"))
    )
    batch = il.build_prompts(tiny, words, n_shots=2, n_prompts=6, seed=0)
    assert (batch.attention_mask == 0).any()  # left padding present
    ref = capture_z(tiny, batch.tokens, 1, batch.attention_mask)
    mask = batch.attention_mask.bool()
    by_hand = ref[:, :, 2][mask].mean(0)  # pad columns excluded
    assert not torch.allclose(by_hand, ref[:, :, 2].mean((0, 1)), atol=1e-4)
    x = batch.tokens[:2]
    clean = capture_z(tiny, x, 1)
    with il.ablate_heads(tiny, [(1, 2)], "mean", reference=batch):
        z = capture_z(tiny, x, 1)
    assert torch.allclose(z[:, :, 2], by_hand.expand_as(z[:, :, 2]), atol=1e-6)
    assert torch.equal(z[:, :, [0, 1, 3]], clean[:, :, [0, 1, 3]])
    assert no_leak(tiny)


def test_resample_ablation_pairs_rows_in_one_cycle(tiny, tokens):
    x = tokens.clone()
    x[x >= 90] = 5
    ref = capture_z(tiny, x, 0)
    pairing = _cyclic_pairing(3, seed=4)
    assert all(int(pairing[i]) != i for i in range(3))
    assert sorted(pairing.tolist()) == [0, 1, 2]
    with il.ablate_heads(tiny, [(0, 1)], "resample", reference=x, seed=4):
        z = capture_z(tiny, x[:, :10], 0)
    assert torch.allclose(z[:, :, 1], ref[pairing, :10, 1], atol=1e-6)
    with il.ablate_heads(tiny, [(0, 1)], "resample", reference=x[:, :5]), pytest.raises(il.ConfigError):
        tiny(x)  # inputs longer than the reference
    assert no_leak(tiny)


def test_gqa_ablation_touches_only_the_query_head(tiny_gqa):
    x = torch.randint(3, 90, (2, 12), generator=torch.Generator().manual_seed(1))
    clean = capture_z(tiny_gqa, x, 1)
    with il.ablate_heads(tiny_gqa, [(1, 1)], "zero"):
        z = capture_z(tiny_gqa, x, 1)
    assert torch.equal(z[:, :, 1], torch.zeros_like(z[:, :, 1]))
    assert torch.equal(z[:, :, 0], clean[:, :, 0])  # shares key/value head 0 with head 1
    assert no_leak(tiny_gqa)


@pytest.mark.parametrize("method", ["zero", "mean", "resample"])
@pytest.mark.parametrize("preserve_pattern", [False, True])
def test_no_hook_left_after_an_exception(tiny, tokens, method, preserve_pattern):
    x = tokens.clone()
    x[x >= 90] = 5

    def failing_metric():
        tiny(x)
        raise RuntimeError("metric failed")

    with pytest.raises(RuntimeError, match="metric failed"):
        with il.ablate_heads(tiny, [(0, 1), (1, 3)], method, reference=x, preserve_pattern=preserve_pattern):
            assert hooks.count_hooks(tiny) > 0
            failing_metric()
    assert no_leak(tiny)


def test_bad_arguments(tiny):
    with pytest.raises(il.ConfigError, match="method"):
        with il.ablate_heads(tiny, [(0, 0)], "shuffle"):
            pass
    with pytest.raises(il.ConfigError, match="reference"):
        with il.ablate_heads(tiny, [(0, 0)], "mean"):
            pass
    with pytest.raises(il.ConfigError, match="does not exist"):
        with il.ablate_heads(tiny, [(2, 0)], "zero"):
            pass
    assert no_leak(tiny)


def test_confirm_induction_heads_on_planted(planted):
    gen = torch.Generator().manual_seed(3)
    from icl_lens.induction.toy import ToyConfig, toy_batch

    text = toy_batch(ToyConfig(d_vocab=16, seq_len=64, min_repeat=4, max_repeat=15), 6, gen)
    config = il.AblationCheckConfig(
        ks=(1, 2),
        n_random_draws=3,
        method="zero",
        repeat_length=12,
        n_repeat_sequences=8,
        icl=il.IclScoreConfig(early=5, late=40, context_length=63, n_contexts=6),
    )
    scan = il.find_induction_heads(planted, repeat_lengths=LENGTHS, prefix_length=6, n_sequences=2, weight_scores=False)
    res = il.confirm_induction_heads(planted, scan, config, text=text)
    assert res.ranking[0] == (1, 0)
    # random draws never include the tested heads, and are reproducible
    assert all((1, 0) not in draw for draw in res.random_heads[0])
    table = res.table()
    assert table["d_repeat_loss_induction"].iloc[0] > table["d_repeat_loss_random_max"].iloc[0] + 0.1
    assert table["d_icl_induction"].iloc[0] > table["d_icl_random_max"].iloc[0]
    # paired over the 8 sequences: induction minus the mean of the random draws, tested
    c = res.comparison(1, "repeat")
    expected = res.induction_repeat[0] - res.random_repeat[0].mean(0)
    assert c.n == 8 and c.test == "paired-permutation"
    assert c.difference == pytest.approx(float(expected.mean()), abs=1e-6)
    assert c.significant and c.p_value < 0.05 and c.ci_low > 0.1  # all 8 sequences agree
    assert table["repeat_p"].iloc[0] == pytest.approx(c.p_value)
    assert "top-2 induction heads vs 2 random raises repeated-sequence loss" in res.summary()
    assert float(res.induction_repeat_loss[0]) == pytest.approx(float(res.induction_repeat[0].mean()))
    again = il.confirm_induction_heads(planted, scan, config, text=text)
    assert again.random_heads == res.random_heads and torch.equal(again.random_repeat_loss, res.random_repeat_loss)
    assert again.table().equals(table)  # the bootstrap and permutations are seeded
    assert len(res.to_dataframe()) == 1 + 2 * (1 + 3) and res.plot_both() is not None
    assert no_leak(planted)
