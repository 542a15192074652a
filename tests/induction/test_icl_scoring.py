"""ICL score: window averages, sign, log-position derivative, contexts, and SmolLM2."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.induction.icl_scoring import context_tokens, score_from_losses


def test_score_on_planted_log_linear_losses():
    """loss[c, p] = a_c - b ln p: every quantity has a closed form."""
    b = 0.3
    pos = torch.arange(601, dtype=torch.float64)
    offsets = torch.tensor([4.0, 5.0, 6.0])[:, None]
    loss = (offsets - b * pos.clamp_min(1).log()).float()
    loss[:, 0] = float("nan")
    config = il.IclScoreConfig(n_bins=10)
    r = score_from_losses(loss, config, "planted")
    assert config.early_window == (40, 61) and config.late_window == (400, 601)  # ±20 %

    def mean_log(a: int, z: int) -> float:
        return sum(math.log(p) for p in range(a, z)) / (z - a)

    expected = -b * (mean_log(400, 601) - mean_log(40, 61))
    assert r.icl_score == pytest.approx(expected, abs=1e-5)
    assert expected == pytest.approx(-b * math.log(10), abs=2e-3)  # ≈ loss@500 - loss@50
    assert r.icl_score_sem == pytest.approx(0.0, abs=1e-5)  # same curve shape in every context
    assert r.slope == pytest.approx(-b, abs=1e-5)  # exact line in ln(position)
    # binned derivative: within a bin the mean of -b ln p is not -b ln(centre) exactly,
    # but the slope between bins stays close to -b
    assert torch.allclose(r.derivative[2:], torch.full_like(r.derivative[2:], -b), atol=0.02)
    assert r.early_loss > r.late_loss
    assert "negative = learns in context" in r.summary()


def test_per_token_loss_matches_log_softmax_and_batching(tiny):
    x = torch.randint(3, 90, (5, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logp = F.log_softmax(tiny(x), -1)
    by_hand = -logp[:, :-1].gather(-1, x[:, 1:, None])[..., 0]
    loss = il.per_token_loss(tiny, x, batch_size=2)
    assert torch.isnan(loss[:, 0]).all()
    assert torch.allclose(loss[:, 1:], by_hand, atol=1e-5)
    assert torch.allclose(il.per_token_loss(tiny, x, batch_size=5)[:, 1:], loss[:, 1:], atol=1e-5)
    assert hooks.count_hooks(tiny) == 0


def test_contexts_from_text(tiny):
    config = il.IclScoreConfig(n_contexts=3, context_length=60, early=5, late=50)
    text = "".join(chr(97 + (i * 7) % 26) for i in range(400))
    a = context_tokens(tiny, text, config)
    assert a.shape == (3, 61) and (a[:, 0] == tiny.tokenizer.bos_token_id).all()
    ids = tiny.tokenizer.encode(text, add_special_tokens=False)
    rows = [r[1:].tolist() for r in a]
    starts = [next(s for s in range(0, len(ids), 60) if ids[s : s + 60] == r) for r in rows]
    assert len(set(starts)) == 3  # distinct, non-overlapping slices
    assert torch.equal(a, context_tokens(tiny, text, config))  # seeded
    assert not torch.equal(a, context_tokens(tiny, text, config.replace(seed=1)))
    with pytest.raises(il.ConfigError, match="contexts"):
        context_tokens(tiny, text[:100], config)
    with pytest.raises(il.ConfigError):
        il.IclScoreConfig(context_length=300)  # too short for late=500 ± 20 %


def test_corpus_is_packaged():
    text = il.load_corpus()
    assert 150_000 < len(text) < 400_000 and text.startswith("Persuasion")


@pytest.mark.smollm2
def test_smollm2_learns_in_context(smollm2, tmp_path):
    r = il.icl_score(smollm2, n_contexts=2, batch_size=1)
    assert r.loss.shape == (2, 601)
    # loss falls with context: the first tokens are far harder than the rest ...
    assert float(r.loss[:, 1:10].mean()) > float(r.loss[:, 100:].mean()) + 1.0
    # SmolLM2 predicts the 500th token of Austen far better than the 50th (measured -0.91).
    assert r.icl_score < -0.2 and r.slope < -0.03  # slope measured -0.078
    # ... and the score is exactly the mean of the late window minus the early one
    by_hand = float((r.loss[:, 400:601].mean(1) - r.loss[:, 40:61].mean(1)).mean())
    assert r.icl_score == pytest.approx(by_hand, abs=1e-6)
    assert r.plot_derivative() is not None and r.to_png() is not None
    loaded = il.load_result(r.save(tmp_path / "icl"))
    assert loaded.icl_score == r.icl_score and torch.equal(loaded.loss.nan_to_num(), r.loss.nan_to_num())
