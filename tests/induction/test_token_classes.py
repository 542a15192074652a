"""Induction token classes: a hand-classified text, losses by class, ablation, the toy run."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import icl_lens as il
from icl_lens.induction.token_classes import TOKEN_CLASSES, class_means, classify_tokens
from icl_lens.induction.token_losses import InductionTokenConfig, induction_token_losses
from icl_lens.induction.token_training import divergence_step, induction_token_losses_over_training

R, C, I = 0, 1, 2  # reference, consistent, inconsistent


def test_classes_of_a_hand_made_sequence():
    # 9 1 2 1 3 1 2 1 4: "1" is followed by 2, then 3, then 2 (seen after it: consistent),
    # then 4 (never seen after "1": inconsistent even though "1" had two followers).
    tokens = torch.tensor([[9, 1, 2, 1, 3, 1, 2, 1, 4]])
    assert classify_tokens(tokens).tolist() == [[-1, R, R, R, I, R, C, C, I]]
    # rows are independent contexts: nothing carries over from row 0 to row 1
    both = classify_tokens(torch.tensor([[5, 6, 5, 6], [5, 6, 7, 8]]))
    assert both.tolist() == [[-1, R, R, C], [-1, R, R, R]]
    with pytest.raises(il.ConfigError):
        classify_tokens(torch.zeros(2, 2, 2, dtype=torch.long))


def test_class_means_by_hand():
    loss = torch.tensor([[float("nan"), 1.0, 2.0, 3.0, 5.0], [float("nan"), 4.0, 4.0, 6.0, 0.0]])
    classes = torch.tensor([[-1, R, C, C, I], [-1, R, R, R, R]])
    means = class_means(loss, classes)
    expected = torch.tensor([[1.0, 2.5, 5.0], [3.5, float("nan"), float("nan")]])
    assert torch.allclose(means, expected, equal_nan=True)


def test_text_on_a_tiny_model_is_classed_as_by_hand(tiny, tmp_path):
    text = "abcab cabd " * 3  # 33 characters, one token each with the char tokenizer
    r = induction_token_losses(tiny, text, n_contexts=1, context_length=len(text), k=0, show_progress=False)
    by_hand = classify_tokens(torch.tensor([[0] + tiny.tokenizer.encode(text, add_special_tokens=False)]))
    assert torch.equal(r.classes, by_hand)
    # a, b, c, " " and d are new after BOS... the first "ab" repeat is consistent, "d" is not
    assert r.classes[0, :6].tolist() == [-1, R, R, R, R, C]
    counts = r.counts().set_index("token_class")
    assert counts.n_tokens.sum() == len(text) and counts.loc["reference", "n_tokens"] == int((by_hand == R).sum())
    assert (
        0
        <= counts.loc["consistent", "ci_low"]
        < counts.loc["consistent", "share"]
        < counts.loc["consistent", "ci_high"]
    )
    table = r.class_table()
    consistent = table[table.token_class == "consistent"].iloc[0]
    hand = float(r.loss[0][r.classes[0] == C].mean())
    assert consistent.loss == pytest.approx(hand, rel=1e-5) and consistent.n_contexts == 1
    assert not r.has_ablation and r.ablation_table().empty
    d = r.differences()  # one context: the differences, but no test
    assert (d.n == 1).all() and d.p_value.isna().all() and d.difference.notna().all()
    loaded = il.load_result(r.save(tmp_path / "tokens"))
    assert torch.equal(loaded.classes, r.classes) and torch.equal(loaded.loss.nan_to_num(), r.loss.nan_to_num())


def test_ablation_bookkeeping_on_a_tiny_model(tiny):
    text = "the cat sat on the mat and the cat ran " * 4
    cfg = InductionTokenConfig(n_contexts=2, context_length=60, k=2, n_random_draws=2, method="zero")
    r = induction_token_losses(tiny, text, cfg, heads=[(1, 0), (1, 3), (0, 1)], show_progress=False)
    assert r.heads == ((1, 0), (1, 3)) and r.random_loss.shape == (2, 2, 61)
    assert all(len(d) == 2 and not set(d) & set(r.heads) for d in r.random_heads)
    assert not torch.equal(r.ablated_loss.nan_to_num(), r.loss.nan_to_num())  # the heads were knocked out
    table = r.ablation_table().set_index("token_class")
    means = r.class_table().set_index(["condition", "token_class"]).loss
    delta = means[("top-2 induction ablated", "consistent")] - means[("baseline", "consistent")]
    assert table.loc["consistent", "delta_top_k"] == pytest.approx(delta, abs=1e-5)
    assert set(table.test) == {"paired-permutation"} and (table.n_contexts == 2).all()
    assert len(r.by_position()) == 3 * 3 * len(r.by_position().start.unique())
    with pytest.raises(il.ConfigError, match="method"):
        InductionTokenConfig(method="erase")
    with pytest.raises(il.ConfigError, match="valid fields"):
        induction_token_losses(tiny, text, n_context=2)


def test_divergence_step_on_planted_gaps():
    steps = (0, 100, 200, 300, 400)
    assert divergence_step(steps, torch.tensor([0.1, 0.1, 0.1, 2.1, 2.1])) == pytest.approx(250.0)
    assert divergence_step(steps, torch.tensor([0.1, 0.12, 0.1, 0.15, 0.1])) is None  # never opens


def test_toy_classes_part_at_the_phase_change(small_runs, small_phase_config, tmp_path):
    run = small_runs[2]
    phase = il.phase_change(run, small_phase_config, show_progress=False)
    r = induction_token_losses_over_training(run, phase=phase, n_eval=64, show_progress=False)
    assert r.phase_change_step is not None and r.divergence_step is not None
    # the classes part where the heads form: within one checkpoint interval (100 steps)
    assert r.checkpoints_apart <= 1.0
    before = max(i for i, s in enumerate(r.steps) if s < r.phase_change_step)
    loss = r.class_loss
    assert loss[-1, C] < loss[before, C] - 0.5  # consistent tokens get cheaper ...
    assert loss[-1, I] > loss[before, I] + 0.3  # ... inconsistent ones dearer ...
    assert abs(loss[-1, R] - loss[before, R]) < 0.2  # ... the reference class hardly moves
    d = r.difference()
    assert d.ci_low > 1.0 and d.n == 64
    positions, derivative = r.derivative_map()
    assert derivative.shape == (len(r.steps), len(positions))
    # after the phase change the loss falls with log-position in the second half of the context
    assert derivative[-1, -1] < derivative[0, -1] - 0.5
    assert r.plot() is not None and r.plot_map() is not None
    loaded = il.load_result(r.save(tmp_path / "training"))
    assert loaded.divergence_step == r.divergence_step and torch.equal(loaded.classes, r.classes)
    with pytest.raises(il.ConfigError, match="checkpoints"):
        induction_token_losses_over_training(dataclasses.replace(run, checkpoint_steps=(0, 100)), phase=phase)


@pytest.mark.slow
@pytest.mark.smollm2
def test_smollm2_consistent_tokens_are_cheap_and_need_induction_heads(smollm2):
    # Small: a 4-row scan ranks the heads, 2 contexts of 200 tokens, zero ablation (no reference pass).
    heads = il.find_induction_heads(smollm2, repeat_lengths=(10,), n_sequences=4, weight_scores=False)
    cfg = InductionTokenConfig(n_contexts=2, context_length=200, k=5, n_random_draws=1, method="zero")
    r = induction_token_losses(smollm2, None, cfg, heads=heads, show_progress=False)
    base = r.class_table().set_index(["condition", "token_class"]).loss["baseline"]
    assert base["consistent"] < base["reference"] - 1.0 and base["inconsistent"] > base["consistent"] + 1.0
    table = r.ablation_table().set_index("token_class")
    # knocking out the top-5 induction heads costs consistent tokens far more than 5 random heads
    assert table.loc["consistent", "delta_top_k"] > table.loc["consistent", "delta_random"] + 0.1
    assert set(TOKEN_CLASSES) == set(table.index)
