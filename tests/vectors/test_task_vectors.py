"""Task vectors on tiny random models, checked against plain loops written here."""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.results import results_equal
from icl_lens.patching.steering import implanted_logprobs, resid_at_answer
from icl_lens.prompting.evaluation import next_token_logprobs
from icl_lens.vectors.common import split_task
from icl_lens.vectors.task_vectors import TaskVectorConfig, TaskVectorResult, task_vector

TEMPLATE = "{input}={output};"
# cv_folds=1: the held-out split, checked by hand below; cross-validation in test_folds.py
SMALL = dict(n_shots=3, n_prompts=4, n_dummy=2, n_dev=4, n_test=5, template=TEMPLATE, batch_size=3, cv_folds=1)


@pytest.fixture(scope="module")
def tv(tiny_rotary_gqa, word_task):
    return task_vector(tiny_rotary_gqa, word_task, TaskVectorConfig(**SMALL))


def _plain_resid_post(model, batch):
    s = hooks.spec(model)
    names = [hooks.resid_post(l) for l in range(s.n_layers)]
    with torch.no_grad():
        _, cache = hooks.run_with_cache(model, batch.tokens, names, batch.attention_mask)
    rows = torch.arange(len(batch))
    return torch.stack([cache[n][rows, batch.last_pos] for n in names], 1)


def test_vectors_are_mean_residuals_over_prompts_and_dummies(tiny_rotary_gqa, word_task, tv):
    train = split_task(word_task, tv.config.split, tv.config.split_seed)[0]
    resid = [
        _plain_resid_post(
            tiny_rotary_gqa, il.build_prompts(tiny_rotary_gqa, train, 3, 4, 0, TEMPLATE, kind="dummy_query", variant=v)
        )
        for v in range(2)
    ]
    expected = torch.cat(resid).mean(0)
    torch.testing.assert_close(tv.vectors, expected, atol=1e-5, rtol=1e-5)
    # dummy queries differ between the two variants, so the average is over 8 distinct prompts
    assert not torch.allclose(resid[0], resid[1])


def test_layer_accuracy_matches_a_plain_loop(tiny_rotary_gqa, word_task, tv):
    _, dev, test = split_task(word_task, tv.config.split, tv.config.split_seed)
    s = hooks.spec(tiny_rotary_gqa)
    for pool, acc in ((dev, tv.dev_accuracy), (test, tv.test_accuracy)):
        batch = il.build_prompts(tiny_rotary_gqa, pool, 0, 5, 0, TEMPLATE, kind="zero_shot")
        expected = []
        for l in range(s.n_layers):

            def replace(act, hook, l=l, batch=batch):
                act = act.clone()
                act[torch.arange(act.shape[0]), batch.last_pos] = tv.vectors[l]
                return act

            with torch.no_grad():
                logits = hooks.forward(
                    tiny_rotary_gqa, batch.tokens, batch.attention_mask, [(hooks.resid_post(l), replace)]
                )
            pred = hooks.gather_positions(logits, batch.last_pos).argmax(-1)
            expected.append((pred == batch.answer_ids).float().mean())
        torch.testing.assert_close(acc, torch.stack(expected))
    assert tv.best_layer == tv.layers[int(torch.argmax(tv.dev_accuracy))]


def test_patch_into_its_own_prompt_reproduces_the_icl_run(tiny_rotary_gqa, word_task):
    # One prompt and one dummy: theta_L is that prompt's own residual after block L.
    res = task_vector(tiny_rotary_gqa, word_task, TaskVectorConfig(**{**SMALL, "n_prompts": 1, "n_dummy": 1}))
    train = split_task(word_task, res.config.split, res.config.split_seed)[0]
    prompt = il.build_prompts(tiny_rotary_gqa, train, 3, 1, 0, TEMPLATE, kind="dummy_query", variant=0)
    icl = next_token_logprobs(tiny_rotary_gqa, prompt)
    for layer in range(hooks.spec(tiny_rotary_gqa).n_layers):
        patched = implanted_logprobs(
            tiny_rotary_gqa, prompt, vector=res.vectors[layer], layer=layer, operation="replace"
        )
        torch.testing.assert_close(patched, icl, atol=1e-5, rtol=0)
    # and a vector from another layer does change the run (the check is not vacuous)
    moved = implanted_logprobs(tiny_rotary_gqa, prompt, vector=res.vectors[0], layer=2, operation="replace")
    assert (moved - icl).abs().max() > 1e-3


def test_per_prompt_patch_reproduces_a_padded_batch(tiny_gqa):
    words = ("ab", "cde", "fghi", "jk", "lmnop", "qr", "stu", "vwxyz", "abc", "de")
    reverse = il.Task(name="reverse", pairs=tuple((w, w[::-1]) for w in words))
    batch = il.build_prompts(tiny_gqa, reverse, 2, 6, 3, TEMPLATE)  # padded: prompts differ in length
    assert not bool(batch.attention_mask.all())
    resid = resid_at_answer(tiny_gqa, batch, batch_size=4)
    icl = next_token_logprobs(tiny_gqa, batch)
    for layer in (0, 1):
        patched = implanted_logprobs(
            tiny_gqa, batch, vector=resid[:, layer], layer=layer, operation="replace", batch_size=4
        )
        torch.testing.assert_close(patched, icl, atol=1e-5, rtol=0)


def test_deterministic_batch_size_free_and_saved(tiny_rotary_gqa, word_task, tv, tmp_path):
    one = task_vector(tiny_rotary_gqa, word_task, TaskVectorConfig(**{**SMALL, "batch_size": 1}))
    torch.testing.assert_close(one.vectors, tv.vectors, atol=1e-5, rtol=1e-5)
    assert torch.equal(one.dev_accuracy, tv.dev_accuracy) and torch.equal(one.test_accuracy, tv.test_accuracy)
    assert results_equal(tv, task_vector(tiny_rotary_gqa, word_task, TaskVectorConfig(**SMALL)))
    loaded = il.load_result(tv.save(tmp_path / "tv"))
    assert isinstance(loaded, TaskVectorResult) and results_equal(tv, loaded)
    assert loaded.origin.task_data == word_task
    assert hooks.count_hooks(tiny_rotary_gqa) == 0


def test_result_table_plot_and_errors(tiny_rotary_gqa, word_task, tv):
    df = tv.to_dataframe()
    assert list(df["layer"]) == [0, 1, 2] and df["best"].sum() == 1
    assert tv.vector.shape == (64,) and torch.equal(tv.vector, tv.vectors[tv.best_layer])
    assert "<img" in tv._repr_html_()
    # a random model scores 0% at every layer on dev: the summary says the pick means nothing
    assert float(tv.dev_accuracy.max()) == 0 and "no layer scored above 0%" in tv.summary()
    assert tv.origin.mode == "default" and tv.origin.n_shots == 3
    with pytest.raises(ConfigError, match="out of range"):
        task_vector(tiny_rotary_gqa, word_task, TaskVectorConfig(**{**SMALL, "layers": (5,)}))
    with pytest.raises(ConfigError, match="n_shots"):
        TaskVectorConfig(n_shots=0)


def test_ceiling_patches_each_querys_own_icl_state(tiny_rotary_gqa, word_task):
    # A random model gets nothing right, so give the test queries the answers its 3-shot
    # run predicts: the split and the prompts depend on inputs and seeds only, so ICL is
    # then right on every test query and the ceiling has something to recover.
    cfg = TaskVectorConfig(**SMALL)
    train, _, test = split_task(word_task, cfg.split, cfg.split_seed)
    icl = il.build_prompts(tiny_rotary_gqa, test, 3, 5, 0, TEMPLATE, kind="clean", demos_from=train)
    pred = next_token_logprobs(tiny_rotary_gqa, icl).argmax(-1)
    letters = {q: tiny_rotary_gqa.tokenizer.decode([int(p)]) for q, p in zip(icl.queries, pred)}
    assert all(len(c) == 1 and c not in "=;" for c in letters.values())
    task = il.Task(name="own", pairs=tuple((x, letters.get(x, y)) for x, y in word_task.pairs))
    res = task_vector(tiny_rotary_gqa, task, cfg)
    assert res.icl_accuracy == 1.0

    zs = il.build_prompts(
        tiny_rotary_gqa, split_task(task, cfg.split, cfg.split_seed)[2], 0, 5, 0, TEMPLATE, kind="zero_shot"
    )
    assert zs.queries == icl.queries
    own = _plain_resid_post(tiny_rotary_gqa, icl)
    expected = []
    for l in res.layers:

        def replace(act, hook, l=l):
            act = act.clone()
            act[torch.arange(act.shape[0]), zs.last_pos] = own[:, l]
            return act

        with torch.no_grad():
            logits = hooks.forward(tiny_rotary_gqa, zs.tokens, zs.attention_mask, [(hooks.resid_post(l), replace)])
        expected.append((hooks.gather_positions(logits, zs.last_pos).argmax(-1) == zs.answer_ids).float().mean())
    torch.testing.assert_close(res.ceiling_accuracy, torch.stack(expected))
    # after the last block the patched state *is* the ICL run's
    assert float(res.ceiling_accuracy[-1]) == 1.0
    assert "ceiling_accuracy" in res.to_dataframe() and "own ICL state" in res.summary()
    without = task_vector(tiny_rotary_gqa, task, TaskVectorConfig(**{**SMALL, "ceiling": False}))
    assert without.ceiling_accuracy is None and torch.equal(without.test_accuracy, res.test_accuracy)


def test_an_unknown_override_is_refused_naming_the_fields(tiny_gqa, word_task):
    with pytest.raises(
        ConfigError, match=r"TaskVectorConfig has no field 'n_shot' \(did you mean 'n_shots'\?\); valid fields: n_shots"
    ):
        task_vector(tiny_gqa, word_task, n_shot=3)
