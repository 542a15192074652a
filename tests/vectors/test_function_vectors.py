"""Function vectors on tiny random models, checked against plain loops written here."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.results import results_equal
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.vectors.common import split_task
from icl_lens.vectors.function_vectors import (
    FunctionVectorConfig,
    FunctionVectorResult,
    function_vector,
    mean_activations,
)

# Characters only: with the char tokenizer a template with a space before {output} would
# make every answer's first token a space.
TEMPLATE = "{input}={output};"
SMALL = dict(
    n_shots=3,
    n_mean_prompts=6,
    max_candidates=8,
    n_aie_prompts=4,
    template=TEMPLATE,
    top_k=3,
    filter_correct=False,
    batch_size=3,
    cv_folds=1,  # the held-out split, checked by hand below; cross-validation in test_folds.py
)


@pytest.fixture(scope="module")
def fv(tiny_gqa, word_task):
    return function_vector(tiny_gqa, word_task, FunctionVectorConfig(**SMALL))


def _plain_last_z(model, batch):
    s = hooks.spec(model)
    names = [hooks.z(l) for l in range(s.n_layers)]
    with torch.no_grad():
        _, cache = hooks.run_with_cache(model, batch.tokens, names, batch.attention_mask)
    rows = torch.arange(len(batch))
    return torch.stack([cache[n][rows, batch.last_pos] for n in names], 1)  # [batch, layer, head, d_head]


def test_mean_activations_are_the_plain_mean(tiny_gqa, word_task, fv):
    train = split_task(word_task, fv.config.split, fv.config.split_seed)[0]
    candidates = il.build_prompts(tiny_gqa, train, 3, 8, 0, TEMPLATE)
    z = _plain_last_z(tiny_gqa, candidates)
    # The search stops after the chunk (of 3) where 6 prompts were reached: 6 of 6 run.
    assert fv.n_candidates == 6 and fv.n_mean_used == 6 and not fv.filtered
    torch.testing.assert_close(fv.mean_z, z[:6].mean(0), atol=1e-6, rtol=1e-5)


def test_aie_matches_a_plain_loop(tiny_gqa, word_task, fv):
    train = split_task(word_task, fv.config.split, fv.config.split_seed)[0]
    shuffled = il.build_prompts(tiny_gqa, train, 3, 4, 1, TEMPLATE, kind="shuffled")
    s = hooks.spec(tiny_gqa)

    def answer_prob(fwd_hooks=()):
        with torch.no_grad():
            logits = hooks.forward(tiny_gqa, shuffled.tokens, shuffled.attention_mask, fwd_hooks)
        last = hooks.gather_positions(logits, shuffled.last_pos)
        return torch.softmax(last.float(), -1).gather(1, shuffled.answer_ids[:, None]).squeeze(1)

    baseline = answer_prob()
    expected = torch.zeros(s.n_layers, s.n_heads)
    expected_se = torch.zeros(s.n_layers, s.n_heads)
    for l in range(s.n_layers):
        for h in range(s.n_heads):

            def patch(act, hook, l=l, h=h):
                act = act.clone()
                act[torch.arange(act.shape[0]), shuffled.last_pos, h] = fv.mean_z[l, h]
                return act

            effect = answer_prob([(hooks.z(l), patch)]) - baseline
            expected[l, h] = effect.mean()
            expected_se[l, h] = effect.std() / 2  # standard error over the 4 prompts
    torch.testing.assert_close(fv.aie, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(fv.aie_se, expected_se, atol=1e-5, rtol=1e-3)
    df = fv.to_dataframe()
    assert (df.n_prompts == 4).all() and df.aie_se.iloc[0] == pytest.approx(float(expected_se[fv.heads[0]]), abs=1e-5)
    assert fv.plot_heads(3).axes
    torch.testing.assert_close(fv.baseline, baseline, atol=1e-6, rtol=1e-5)
    assert expected.abs().max() > 1e-5  # the check means something: some head moves the probability


def test_vector_is_sum_of_mean_z_times_W_O(tiny_gqa, fv):
    ranking = sorted(
        ((float(fv.aie[l, h]), l, h) for l in range(fv.aie.shape[0]) for h in range(fv.aie.shape[1])),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    top = [(l, h) for _, l, h in ranking[:3]]
    assert list(fv.heads) == top
    expected = sum(fv.mean_z[l, h] @ tiny_gqa.blocks[l].attn.W_O[h].detach() for l, h in top)
    torch.testing.assert_close(fv.vector, expected, atol=1e-6, rtol=1e-5)
    assert fv.default_layer == 0  # 2 layers // 3
    again = fv.with_heads(2)
    torch.testing.assert_close(again.vector, sum(fv.head_outputs[l, h] for l, h in top[:2]))


def test_same_aie_for_batch_size_one_and_many(tiny_gqa, word_task, fv):
    one = function_vector(tiny_gqa, word_task, FunctionVectorConfig(**{**SMALL, "batch_size": 1}))
    torch.testing.assert_close(one.aie, fv.aie, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(one.mean_z, fv.mean_z, atol=1e-6, rtol=1e-5)
    assert one.heads == fv.heads


def test_deterministic_and_saved_exactly(tiny_gqa, word_task, fv, tmp_path):
    again = function_vector(tiny_gqa, word_task, FunctionVectorConfig(**SMALL))
    assert results_equal(fv, again)
    loaded = il.load_result(fv.save(tmp_path / "fv"))
    assert isinstance(loaded, FunctionVectorResult) and results_equal(fv, loaded)
    meta = json.loads((tmp_path / "fv" / "result.json").read_text())
    assert meta["type"] == "FunctionVectorResult"
    assert hooks.count_hooks(tiny_gqa) == 0


def test_other_seed_changes_the_prompts(tiny_gqa, word_task, fv):
    other = function_vector(tiny_gqa, word_task, FunctionVectorConfig(**{**SMALL, "seed": 5}))
    assert not torch.equal(other.mean_z, fv.mean_z)


def test_filter_keeps_only_correct_prompts(tiny_gqa, word_task):
    # Make prompts 0, 2, 5, 6, 7 "correct" by setting their expected answer to the
    # model's own prediction, and the others wrong.
    candidates = il.build_prompts(tiny_gqa, word_task, 3, 9, 0, TEMPLATE)
    predicted = next_token_logprobs(tiny_gqa, candidates).argmax(-1)
    right = torch.tensor([1, 0, 1, 0, 0, 1, 1, 1, 0], dtype=torch.bool)
    answers = torch.where(right, predicted, (predicted + 1) % hooks.spec(tiny_gqa).d_vocab)
    candidates = dataclasses.replace(candidates, answer_ids=answers)
    mean_z, info = mean_activations(tiny_gqa, candidates, 3, filter_correct=True, batch_size=2)
    z = _plain_last_z(tiny_gqa, candidates)
    # chunks of 2: the third correct prompt (index 5) is in the third chunk, so 6 are run
    assert info == dict(n_candidates=6, n_correct=3, n_mean_used=3, filtered=True, extraction_accuracy=0.5)
    torch.testing.assert_close(mean_z, z[[0, 2, 5]].mean(0), atol=1e-6, rtol=1e-5)
    unfiltered, info = mean_activations(tiny_gqa, candidates, 3, filter_correct=False, batch_size=4)
    assert info["n_candidates"] == 4 and not info["filtered"]
    torch.testing.assert_close(unfiltered, z[:3].mean(0), atol=1e-6, rtol=1e-5)


def test_no_correct_prompt_warns_and_falls_back(tiny_gqa):
    task = il.Task(name="impossible", pairs=tuple((c, "~~") for c in "abcdefghijklmnopqrst"))
    cfg = FunctionVectorConfig(**{**SMALL, "filter_correct": True, "n_aie_prompts": 2})
    with pytest.warns(UserWarning, match="none of"):
        res = function_vector(tiny_gqa, task, cfg)
    assert not res.filtered and res.n_correct == 0 and res.n_mean_used == 6


def test_top_fraction_and_config_errors(tiny, word_task):
    cfg = FunctionVectorConfig(top_k=None, top_fraction=0.25)
    assert cfg.n_heads_for(8) == 2 and cfg.n_heads_for(270) == 68
    res = function_vector(tiny, word_task, FunctionVectorConfig(**{**SMALL, "top_k": None, "top_fraction": 0.5}))
    assert len(res.heads) == 4  # half of 2 layers x 4 heads
    with pytest.raises(ConfigError, match="exactly one"):
        FunctionVectorConfig(top_k=3, top_fraction=0.1)
    with pytest.raises(ConfigError, match="max_candidates"):
        FunctionVectorConfig(n_mean_prompts=50, max_candidates=10)
    with pytest.raises(ConfigError, match="train part"):
        function_vector(tiny, il.Task(name="ten", pairs=tuple((c, c) for c in "abcdefghij")), n_shots=8)


def test_result_displays_itself(fv):
    df = fv.to_dataframe()
    assert len(df) == 8 and df["in_vector"].sum() == 3
    assert list(df["aie"]) == sorted(df["aie"], reverse=True)
    html = fv._repr_html_()
    assert "<img" in html and "Function vector" in html
    assert "next_char" in fv.summary()


@pytest.mark.smollm2
def test_smollm2_fast_aie_and_task_vector_patch_are_exact(smollm2):
    """One small real run: the engine's fast AIE equals full forwards, and theta patched
    into its own prompt reproduces the ICL run (compatibility mode, GQA, rotary)."""
    # Prompts one at a time (the numbers do not depend on it; the tiny tests check that).
    cfg = FunctionVectorConfig(n_mean_prompts=4, max_candidates=4, n_aie_prompts=2, filter_correct=False, batch_size=1)
    res = function_vector(smollm2, "antonym", cfg)
    assert res.sweep_method == "fast" and res.origin.mode == "compatibility" and len(res.heads) == 10
    train = split_task(il.load_task("antonym"), cfg.split, cfg.split_seed)[0]
    shuffled = il.build_prompts(smollm2, train, 10, 2, 1, "todd", kind="shuffled")
    base = next_token_logprobs(smollm2, shuffled).exp().gather(1, shuffled.answer_ids[:, None]).squeeze(1)
    for l, h in [res.heads[0], (0, 0), (29, 8)]:

        def patch(act, hook, h=h, l=l):
            act = act.clone()
            act[:, -1, h] = res.mean_z[l, h]
            return act

        lp = next_token_logprobs(smollm2, shuffled, fwd_hooks=[(hooks.z(l), patch)])
        expected = (lp.exp().gather(1, shuffled.answer_ids[:, None]).squeeze(1) - base).mean()
        assert float(res.aie[l, h]) == pytest.approx(float(expected), abs=1e-4)

    from icl_lens.patching.steering import implanted_logprobs
    from icl_lens.vectors.task_vectors import TaskVectorConfig, task_vector

    tv = task_vector(smollm2, "antonym", TaskVectorConfig(n_prompts=1, n_dummy=1, n_dev=2, n_test=2, layers=(10,)))
    prompt = il.build_prompts(smollm2, train, 5, 1, 0, "hendel", kind="dummy_query")
    icl = next_token_logprobs(smollm2, prompt)
    for layer in (3, 10, 29):
        patched = implanted_logprobs(smollm2, prompt, vector=tv.vectors[layer], layer=layer, operation="replace")
        torch.testing.assert_close(patched, icl, atol=1e-4, rtol=0)
    assert hooks.count_hooks(smollm2) == 0


def test_an_unknown_override_is_refused_naming_the_fields(tiny_gqa, word_task):
    with pytest.raises(
        ConfigError, match=r"FunctionVectorConfig has no field 'topk' \(did you mean 'top_k'\?\); valid fields: n_shots"
    ):
        function_vector(tiny_gqa, word_task, topk=3)
