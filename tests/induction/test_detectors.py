"""Head detectors checked against values computed by hand on planted attention patterns.

The planted model (icl_lens.induction.planted) has an exact previous-token head, an exact
copying head, an exact induction head fed by the previous-token head, and heads with zero
query/key weights, whose attention is exactly uniform (1/(q+1) on every key k <= q): every
score of those heads is a closed-form sum over positions, written out below.
"""

from __future__ import annotations

import math

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.induction import sequences as seq, weights as wts
from icl_lens.induction.planted import planted_induction_model

LENGTHS = (4, 8, 12)
PREFIX = 6
N_POS = 1 + max(2 * max(LENGTHS), 4 * PREFIX)  # 25
CONFIG = il.InductionConfig(
    repeat_lengths=LENGTHS, prefix_length=PREFIX, n_sequences=4, composition_baseline_samples=32
)
UNIFORM_HEADS = [(0, 2), (0, 3), (1, 1), (1, 2), (1, 3)]


def same_result(a, b) -> bool:
    """Exact equality of two results, NaN equal to NaN (composition scores hold NaNs)."""
    if type(a) is not type(b):
        return False
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, equal_nan=True)
        elif isinstance(x, torch.Tensor):
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
        elif x != y:
            return False
    return True


@pytest.fixture(scope="module")
def planted():
    return planted_induction_model()


@pytest.fixture(scope="module")
def planted_scan(planted):
    return il.find_induction_heads(planted, CONFIG)


# ---- closed forms for a head attending uniformly to keys 0..q ---------------------------
def uniform_induction(L: int) -> float:
    # queries q = L+1 .. 2L, one matching key each
    return sum(1 / (q + 1) for q in range(L + 1, 2 * L + 1)) / L


def uniform_prefix(P: int, copies: int = 4) -> float:
    # queries in copies 2..4; floor((q-1)/P) earlier copies of the current token
    qs = range(1 + P, 1 + copies * P)
    return sum(((q - 1) // P) / (q + 1) for q in qs) / len(qs)


def uniform_previous() -> float:
    return sum(1 / (q + 1) for q in range(2, N_POS)) / (N_POS - 2)


def uniform_duplicate() -> float:
    # every row type has the same number of rows: pool the (row, query) pairs
    total = sum(sum(1 / (q + 1) for q in range(L + 1, 2 * L + 1)) for L in LENGTHS)
    count = sum(LENGTHS)
    qs = range(1 + PREFIX, 1 + 4 * PREFIX)
    total += sum(((q - 1) // PREFIX) / (q + 1) for q in qs)
    count += len(qs)
    return total / count


def uniform_bos() -> float:
    ends = [2 * L for L in LENGTHS] + [4 * PREFIX]  # last structured query of each row type
    return sum(sum(1 / (q + 1) for q in range(1, end + 1)) for end in ends) / sum(ends)


def test_uniform_heads_match_closed_forms(planted_scan):
    r = planted_scan
    for l, h in UNIFORM_HEADS:
        for i, L in enumerate(LENGTHS):
            assert r.induction[l, h, i] == pytest.approx(uniform_induction(L), abs=1e-6)
        assert r.prefix_matching[l, h] == pytest.approx(uniform_prefix(PREFIX), abs=1e-6)
        assert r.previous_token[l, h] == pytest.approx(uniform_previous(), abs=1e-6)
        assert r.duplicate_token[l, h] == pytest.approx(uniform_duplicate(), abs=1e-6)
        assert r.bos_attention[l, h] == pytest.approx(uniform_bos(), abs=1e-6)
    assert uniform_previous() == pytest.approx(0.100694, abs=1e-6)  # (H_25 - H_2) / 23
    # every probe row gives a uniform head the same score: no spread over rows
    for name in ("induction", "prefix_matching", "previous_token", "duplicate_token", "bos_attention"):
        assert float(r.se(name)[1, 1]) == pytest.approx(0.0, abs=1e-6), name


def test_standard_errors_are_over_probe_rows(tiny_rotary_gqa):
    config = il.InductionConfig(repeat_lengths=(5, 10), n_sequences=3, prefix_length=8, weight_scores=False)
    r = il.find_induction_heads(tiny_rotary_gqa, config)
    bos = seq.bos_token_id(tiny_rotary_gqa)
    probe = seq.make_probe_batch(seq.ordinary_token_ids(tiny_rotary_gqa, bos), bos, (5, 10), 3, 8, 4, 0)
    name = hooks.pattern(1)
    with torch.no_grad():
        _, cache = hooks.run_with_cache(tiny_rotary_gqa, probe.tokens, [name])
    a = cache[name].float()  # [rows, heads, q, k]
    q = torch.arange(2, probe.tokens.shape[1])
    per_row = a[:, :, q, q - 1].mean(-1)  # each row's previous-token score
    # rows of one type (repeat length 5, 10, prefix: 3 each) are draws of the same thing;
    # every row scores the same number of queries, so each type weighs a third
    types = [torch.arange(0, 3), torch.arange(3, 6), torch.arange(6, 9)]
    assert list(probe.kind[:3]) == ["induction"] * 3 and list(probe.kind[6:]) == ["prefix"] * 3
    expected = sum((per_row[t].std(0) / math.sqrt(3) / 3) ** 2 for t in types).sqrt()
    torch.testing.assert_close(r.se("previous_token")[1], expected, atol=1e-6, rtol=1e-4)
    torch.testing.assert_close(r.previous_token[1], per_row.mean(0), atol=1e-6, rtol=1e-4)
    assert float(expected.max()) > 1e-4  # random rows do differ
    df = r.to_dataframe()
    assert {"induction_se", "previous_token_se", "prefix_matching_se"} <= set(df.columns)
    row = df[(df.layer == 1) & (df["head"] == 0)].iloc[0]
    assert row.previous_token_se == pytest.approx(float(expected[0]), abs=1e-6)
    # the mean over repeat lengths: independent rows, so the variances add
    se = r.standard_errors["induction"][1, 0]
    assert row.induction_se == pytest.approx(float(se.square().sum().sqrt() / 2), abs=1e-6)


def test_planted_previous_token_induction_and_copying_heads(planted_scan):
    r = planted_scan
    assert r.previous_token[0, 0] == pytest.approx(1.0, abs=1e-6)
    assert r.previous_token[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert r.induction[0, 0].max() < 1e-6 and r.duplicate_token[0, 0] < 1e-6
    # L1H0 attends to the token after the earlier copy: 1 at every length, and the
    # prefix-matching score sums over the 1-3 earlier copies, so it is 1 too.
    assert torch.allclose(r.induction[1, 0], torch.ones(len(LENGTHS)), atol=1e-6)
    assert r.prefix_matching[1, 0] == pytest.approx(1.0, abs=1e-6)
    assert r.duplicate_token[1, 0] < 1e-6
    assert r.top_heads(1) == [(1, 0)]
    # Full OV circuits: L0H1 = +I, L0H2 = -I, L1H0 = +I; L0H0 writes where W_U never reads.
    assert r.copying_eigen[0, 1] == pytest.approx(1.0, abs=1e-6)
    assert r.copying_eigen[0, 2] == pytest.approx(-1.0, abs=1e-6)
    assert r.copying_eigen[1, 0] == pytest.approx(1.0, abs=1e-6)
    assert r.copying_eigen[0, 0] == pytest.approx(0.0, abs=1e-6)
    # L0H1 puts logit 1 on the attended (previous) token and 0 on the 15 others:
    # z = (1 - 1/16) / sqrt(1/16 - 1/256) = sqrt(15).
    assert r.copying_logit[0, 1] == pytest.approx(math.sqrt(15), rel=1e-5)


def test_planted_k_composition(planted_scan):
    r = planted_scan
    token_base, raw_base = r.composition_baselines
    assert 0.05 < token_base < 0.25 and 0.05 < raw_base < 0.25
    # L0H0 -> L1H0: query tokens x moved-in tokens is β I_16 (L0H0 writes the token to
    # dims 32-47, exactly where L1H0's keys read): |β I_16| / (|I_16| |β I_16|) = 1/4.
    assert r.k_composition[0, 0, 1, 0] == pytest.approx(0.25 - token_base, abs=1e-6)
    assert r.k_composition_frobenius[0, 0, 1, 0] == pytest.approx(0.25 - raw_base, abs=1e-6)
    # L0H1 and L0H2 write to dims 16-31, which no key reads: raw score 0.
    assert r.k_composition[0, 1, 1, 0] == pytest.approx(-token_base, abs=1e-6)
    assert r.k_composition[0, 2, 1, 0] == pytest.approx(-token_base, abs=1e-6)
    assert torch.isnan(r.k_composition[0, 3, 1, 0])  # all-zero head: undefined
    assert torch.isnan(r.k_composition[1, 0, 0, 0])  # not from an earlier layer
    df = r.to_dataframe()
    assert df.set_index("label").loc["L1H0", "k_composition_from"] == "L0H0"


def test_weight_scores_match_brute_force_on_gqa(tiny_gqa):
    """The d_head-sized cyclic products give the eigenvalues of the d_vocab-sized matrices."""
    w = wts.effective_weights(tiny_gqa)
    s = hooks.spec(tiny_gqa)
    copying = wts.copying_eigen_scores(w)
    token_comp, raw_comp, _, _ = wts.k_composition(w, baseline_samples=0)
    E, U = w.W_E.double(), w.W_U.double()
    for l in range(s.n_layers):
        for h in range(s.n_heads):
            kv = s.kv_head(h)
            full = E @ w.W_V[l, kv].double() @ w.W_O[l, h].double() @ U  # [d_vocab, d_vocab]
            ev = torch.linalg.eigvals(full)
            assert copying[l, h] == pytest.approx(float(ev.real.sum() / ev.abs().sum()), abs=1e-4)
    norm = torch.linalg.matrix_norm
    for h1 in range(s.n_heads):
        for h2 in range(s.n_heads):
            ov = w.W_V[0, s.kv_head(h1)].double() @ w.W_O[0, h1].double()  # [d_model, d_model]
            qk = w.W_Q[1, h2].double() @ w.W_K[1, s.kv_head(h2)].double().T
            token = norm(E @ qk @ ov.T @ E.T) / (norm(E @ qk) * norm(E @ ov))
            assert token_comp[0, h1, 1, h2] == pytest.approx(float(token), abs=1e-5)
            assert raw_comp[0, h1, 1, h2] == pytest.approx(float(norm(ov @ qk.T) / (norm(ov) * norm(qk))), abs=1e-5)


def test_probe_rows_and_masks():
    ids = torch.arange(1, 40)
    probe = seq.make_probe_batch(ids, 0, (3, 5), 2, 4, 4, seed=0)
    assert probe.tokens.shape == (6, 1 + 16)
    row = probe.tokens[2]  # a length-5 row: [BOS] R R filler
    assert row[0] == 0 and torch.equal(row[1:6], row[6:11]) and len(set(row[1:6].tolist())) == 5
    prefix = probe.tokens[4]
    assert all(torch.equal(prefix[1:5], prefix[1 + 4 * c : 5 + 4 * c]) for c in range(4))
    assert probe.repeated_region()[0].nonzero().flatten().tolist() == [4, 5, 6]
    tokens = torch.tensor([[0, 7, 8, 7, 8]])
    dup, ind = seq.match_masks(tokens, torch.ones(1, 5, dtype=torch.bool))
    assert dup[0].nonzero().tolist() == [[3, 1], [4, 2]]
    assert ind[0].nonzero().tolist() == [[3, 2], [4, 3]]  # the token after the earlier copy


def test_ordinary_vocabulary(smollm2, tiny):
    ids = seq.ordinary_token_ids(smollm2)
    assert ids.min() == 17 and len(ids) == 49152 - 17  # ids 0-16 are SmolLM2's special tokens
    toy = il.tiny_model(tokenizer=None, d_vocab=10)
    assert seq.ordinary_token_ids(toy).tolist() == list(range(1, 10))  # id 0 is the toys' BOS
    assert set(seq.ordinary_token_ids(tiny).tolist()).isdisjoint({0, 1, 2})  # char tokenizer specials


def test_deterministic_and_batch_size_independent(tiny_rotary_gqa):
    config = il.InductionConfig(repeat_lengths=(5, 10), n_sequences=3, prefix_length=8)
    a = il.find_induction_heads(tiny_rotary_gqa, config)
    b = il.find_induction_heads(tiny_rotary_gqa, config)
    c = il.find_induction_heads(tiny_rotary_gqa, config.replace(batch_size=2))
    assert same_result(a, b)
    for name in ("induction", "prefix_matching", "previous_token", "duplicate_token", "copying_logit", "bos_attention"):
        assert torch.allclose(getattr(a, name), getattr(c, name), atol=1e-5), name
    assert hooks.count_hooks(tiny_rotary_gqa) == 0
    other = il.find_induction_heads(tiny_rotary_gqa, config.replace(seed=1))
    assert not torch.equal(a.induction, other.induction)


def test_result_table_plots_views_and_round_trip(planted, planted_scan, tmp_path):
    r = planted_scan
    df = r.to_dataframe()
    assert len(df) == 8 and {"induction_len4", "prefix_matching", "copying_eigen", "k_composition_in"} <= set(
        df.columns
    )
    top = r.top(2, by="previous_token")
    assert set(top["label"]) == {"L0H0", "L0H1"}
    assert r.to_png() is not None and r.plot_scores() is not None and r.plot_composition() is not None
    view = r.attention_view(planted, k=2)
    assert "unpkg.com" not in view.html and "<script" in view.html and "L1H0" in view.html
    loaded = il.load_result(r.save(tmp_path / "scan"))
    assert same_result(loaded, r)
    with pytest.raises(il.ConfigError):
        il.find_induction_heads(planted, repeat_lengths=(40,))  # 81 positions > n_ctx 64


@pytest.mark.smollm2
def test_smollm2_scan(smollm2):
    r = il.find_induction_heads(smollm2, repeat_lengths=(10, 25), n_sequences=3, prefix_length=12)
    top = r.top(5)
    # SmolLM2's induction heads sit in the middle layers (TransformerLens's own detector
    # ranks L18H6, L17H5, L17H4, L17H3 first) and attend to the copy almost exclusively.
    assert top["induction"].iloc[0] > 0.7
    assert all(10 <= l <= 25 for l in top["layer"])
    assert r.top_heads(3)[0][0] in (16, 17, 18, 19)
    assert r.previous_token.max() > 0.7  # previous-token heads exist
    # L17H4's keys read the strongest previous-token head, L16H0 (K-composition).
    prev_head = r.top_heads(1, by="previous_token")[0]
    assert prev_head == (16, 0)
    assert r.to_dataframe().set_index("label").loc["L17H4", "k_composition_from"] == "L16H0"
    assert hooks.count_hooks(smollm2) == 0
