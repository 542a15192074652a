"""ICL accuracy: batch-size independence, no hook left behind, and SmolLM2 really does ICL."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.stats import proportion_interval
from icl_lens.prompting.evaluation import next_token_logprobs


def test_accuracy_and_logprobs_do_not_depend_on_batch_size(tiny_rotary_gqa, word_task):
    batch = il.build_prompts(tiny_rotary_gqa, word_task, n_shots=3, n_prompts=7, seed=0)
    a = next_token_logprobs(tiny_rotary_gqa, batch, batch_size=1)
    b = next_token_logprobs(tiny_rotary_gqa, batch, batch_size=3)
    c = next_token_logprobs(tiny_rotary_gqa, batch, batch_size=None)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(a, c, atol=1e-5)
    cfg = il.IclEvalConfig(shots=(0, 2), n_prompts=7)
    r1 = il.evaluate_icl(tiny_rotary_gqa, word_task, config=cfg.replace(batch_size=1))
    r2 = il.evaluate_icl(tiny_rotary_gqa, word_task, config=cfg.replace(batch_size=5))
    assert torch.equal(r1.correct, r2.correct)
    assert torch.allclose(r1.answer_logprob, r2.answer_logprob, atol=1e-5)


def test_left_and_right_padding_agree(tiny_gqa):
    task = il.Task("t", (("a", "b"), ("long input", "x"), ("cd", "d"), ("e", "fgh")))
    left = il.build_prompts(tiny_gqa, task, n_shots=2, n_prompts=4, padding_side="left")
    right = il.build_prompts(tiny_gqa, task, n_shots=2, n_prompts=4, padding_side="right")
    assert torch.allclose(next_token_logprobs(tiny_gqa, left), next_token_logprobs(tiny_gqa, right), atol=1e-5)


def test_accuracy_matches_a_hand_count(tiny, word_task):
    r = il.evaluate_icl(tiny, word_task, shots=(0, 3), config=il.IclEvalConfig(n_prompts=5, template="todd"))
    for s, k in enumerate((0, 3)):
        batch = il.build_prompts(tiny, word_task, k, 5, 0, "todd")
        with torch.no_grad():
            for i in range(5):
                one = batch.select([i])
                top = tiny(one.tokens)[0, -1].argmax()
                assert bool(top == one.answer_ids[0]) == bool(r.correct[0, s, i])
    assert torch.allclose(r.accuracy, r.correct.float().mean(-1))
    df = r.to_dataframe()
    for row, k in zip(df.itertuples(), r.correct[0].sum(-1).tolist(), strict=True):
        assert (row.ci_low, row.ci_high) == pytest.approx(proportion_interval(int(k), 5))
    # one task: a paired test of the most shots against the fewest, on the same queries
    c = r.comparison()
    assert c.test == "mcnemar-exact" and c.n == 5
    assert c.a_only == int((r.correct[0, 1] & ~r.correct[0, 0]).sum())
    assert ("inconclusive with n = 5" in r.summary()) == (not c.significant)


def test_a_raising_user_hook_is_not_left_on_the_model(tiny, word_task):
    batch = il.build_prompts(tiny, word_task, n_shots=2, n_prompts=2)

    def broken(act, hook):
        raise RuntimeError("user bug")

    with pytest.raises(RuntimeError, match="user bug"):
        next_token_logprobs(tiny, batch, fwd_hooks=[(hooks.z(1), broken)])
    assert hooks.count_hooks(tiny) == 0
    with pytest.raises(RuntimeError, match="user bug"), hooks.attached(tiny, [(hooks.resid_post(0), broken)]):
        tiny(batch.tokens)
    assert hooks.count_hooks(tiny) == 0


def test_result_round_trips_and_renders(tmp_path, tiny, word_task):
    small = dataclasses.replace(word_task.subset(10), name="small")
    with pytest.raises(il.ConfigError, match="unique"):
        il.evaluate_icl(tiny, [word_task, word_task.subset(10)], shots=(0,))
    r = il.evaluate_icl(tiny, [word_task, small], shots=(0, 1), config=il.IclEvalConfig(n_prompts=4))
    r.save(tmp_path / "acc")
    back = il.IclAccuracyResult.load(tmp_path / "acc")
    assert il.core.results.results_equal(r, back) and back.config == r.config
    assert list(r.table().columns) == [0, 1] and len(r.to_dataframe()) == 4
    html = r._repr_html_()
    assert "<table" in html and "data:image/png;base64," in html
    assert repr(r).startswith("<IclAccuracyResult: tiny-2L4H") and "(pooled)" in repr(r)
    # every accuracy in the summary carries its interval: 8 prompts pooled per shot count
    low, high = proportion_interval(int(r.correct[:, 0].sum()), 8)
    assert f"[{low:.0%}, {high:.0%}] at 0 shots" in r.summary()


def test_smollm2_learns_a_task_in_context(smollm2):
    """The real model: no answer right zero-shot, most right with 10 demonstrations
    (animal_object measured at 0% and 82% on 50 prompts)."""
    r = il.evaluate_icl(smollm2, "animal_object", shots=(0, 10), config=il.IclEvalConfig(n_prompts=24, batch_size=8))
    zero, ten = r.accuracy[0].tolist()
    assert zero <= 0.2 and ten >= 0.5, (zero, ten)


def test_shots_and_other_fields_are_plain_overrides(tiny, word_task):
    by_keyword = il.evaluate_icl(tiny, word_task, shots=(0, 2), n_prompts=4, template="todd")
    by_config = il.evaluate_icl(tiny, word_task, il.IclEvalConfig(shots=(0, 2), n_prompts=4, template="todd"))
    assert by_keyword.config == by_config.config and by_keyword.shots == (0, 2)
    assert il.core.results.results_equal(by_keyword, by_config)
    # an override replaces that field of a given config and keeps the others
    mixed = il.evaluate_icl(tiny, word_task, il.IclEvalConfig(n_prompts=4, template="todd"), shots=[0, 2])
    assert mixed.config == by_config.config
    with pytest.raises(
        il.ConfigError,
        match=r"IclEvalConfig has no field 'shot' \(did you mean 'shots'\?\); valid fields: shots, n_prompts",
    ):
        il.evaluate_icl(tiny, word_task, shot=(0, 2))
