"""The implant evaluation on tiny random models, checked against plain loops written here."""

from __future__ import annotations

import json

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import VectorMismatchError
from icl_lens.core.results import results_equal
from icl_lens.patching.steering import implant
from icl_lens.vectors.common import kl_divergence, split_task
from icl_lens.vectors.function_vectors import FunctionVectorConfig, function_vector
from icl_lens.vectors.implant import CONDITIONS, ImplantConfig, ImplantResult, evaluate_implant
from icl_lens.vectors.task_vectors import TaskVectorConfig, task_vector

TEMPLATE = "{input}={output};"
# cv_folds=1: the held-out split, checked by hand below; cross-validation in test_folds.py
FV_SMALL = FunctionVectorConfig(
    n_shots=3,
    n_mean_prompts=6,
    max_candidates=8,
    n_aie_prompts=4,
    template=TEMPLATE,
    top_k=3,
    filter_correct=False,
    cv_folds=1,
)
TV_SMALL = TaskVectorConfig(n_shots=3, n_prompts=4, n_dev=4, n_test=5, template=TEMPLATE, cv_folds=1)
PREV = il.Task(name="prev_char", pairs=tuple((chr(ord(c) + 1), c) for c in "abcdefghijklmnopqrstuvwxy"))
IMPLANT_SMALL = ImplantConfig(
    n_test=5,
    n_dev=4,
    specificity_tasks=(PREV,),
    n_specificity=5,
    natural_template="w {input} is",
    n_natural=2,
    n_generate=3,
    batch_size=3,
)


@pytest.fixture(scope="module")
def fv(tiny_gqa, word_task):
    return function_vector(tiny_gqa, word_task, FV_SMALL)


@pytest.fixture(scope="module")
def fv_eval(tiny_gqa, word_task, fv):
    return evaluate_implant(tiny_gqa, word_task, fv, IMPLANT_SMALL.replace(scale=8.0))


def _logprobs(model, batch, fwd_hooks=()):
    with torch.no_grad():
        logits = hooks.forward(model, batch.tokens, batch.attention_mask, fwd_hooks)
    return torch.log_softmax(hooks.gather_positions(logits, batch.last_pos).float(), -1)


def _adder(batch, vector, scale=1.0):
    def add(act, hook):
        act = act.clone()
        act[torch.arange(act.shape[0]), batch.last_pos] += scale * vector
        return act

    return add


def test_conditions_match_plain_runs(tiny_gqa, word_task, fv, fv_eval):
    train, _, test = split_task(word_task, FV_SMALL.split, FV_SMALL.split_seed)
    layer = fv_eval.layer
    add = (hooks.resid_post(layer),)
    zs = il.build_prompts(tiny_gqa, test, 0, 5, 0, TEMPLATE, kind="zero_shot")
    icl = il.build_prompts(tiny_gqa, test, 3, 5, 0, TEMPLATE, demos_from=train)
    shuf = il.build_prompts(tiny_gqa, test, 3, 5, 0, TEMPLATE, kind="shuffled", demos_from=train)
    lp = {
        "zero_shot": _logprobs(tiny_gqa, zs),
        "zero_shot+vector": _logprobs(tiny_gqa, zs, [(add[0], _adder(zs, fv.vector, 8.0))]),
        "icl": _logprobs(tiny_gqa, icl),
        "shuffled": _logprobs(tiny_gqa, shuf),
        "shuffled+vector": _logprobs(tiny_gqa, shuf, [(add[0], _adder(shuf, fv.vector, 8.0))]),
    }
    for i, c in enumerate(CONDITIONS):
        ok = lp[c].argmax(-1) == zs.answer_ids
        assert torch.equal(fv_eval.correct[i], ok), c
        expected_kl = (lp["icl"].exp() * (lp["icl"] - lp[c])).sum(-1)
        torch.testing.assert_close(fv_eval.kl_to_icl[i], expected_kl, atol=1e-5, rtol=1e-4)
        agree = (lp[c].argmax(-1) == lp["icl"].argmax(-1)).float().mean()
        assert float(fv_eval.top1_agreement[i]) == pytest.approx(float(agree))
    assert float(fv_eval.kl_to_icl[2].abs().max()) == 0.0 and float(fv_eval.top1_agreement[2]) == 1.0
    # the scaled vector moves the distribution (so the comparisons above are not vacuous)
    assert float((lp["zero_shot+vector"] - lp["zero_shot"]).abs().max()) > 0.1
    assert fv_eval.queries == zs.queries


def test_layer_sweep_matches_plain_runs_and_dev_choice(tiny_gqa, word_task, fv, fv_eval):
    _, dev, test = split_task(word_task, FV_SMALL.split, FV_SMALL.split_seed)
    for pool, acc, n in ((dev, fv_eval.layer_dev_accuracy, 4), (test, fv_eval.layer_test_accuracy, 5)):
        zs = il.build_prompts(tiny_gqa, pool, 0, n, 0, TEMPLATE, kind="zero_shot")
        expected = [
            (_logprobs(tiny_gqa, zs, [(hooks.resid_post(l), _adder(zs, fv.vector, 8.0))]).argmax(-1) == zs.answer_ids)
            .float()
            .mean()
            for l in range(2)
        ]
        torch.testing.assert_close(acc, torch.stack(expected))
    assert fv_eval.layer_dev_accuracy[fv_eval.layer] == fv_eval.layer_dev_accuracy.max()
    assert fv_eval.layer_choice == "best on dev"
    fixed = evaluate_implant(tiny_gqa, word_task, fv, IMPLANT_SMALL.replace(layer="default", specificity_tasks=()))
    assert fixed.layer == fv.default_layer == 0


def test_specificity_matrix(tiny_gqa, word_task, fv, fv_eval):
    assert fv_eval.specificity_vectors == ("no vector", "next_char (function)")
    assert fv_eval.specificity_tasks == ("next_char", "prev_char")
    # same queries as the test conditions (same split, seed and count): same numbers
    assert float(fv_eval.specificity[0, 0]) == pytest.approx(fv_eval.acc("zero_shot"))
    assert float(fv_eval.specificity[1, 0]) == pytest.approx(fv_eval.acc("zero_shot+vector"))
    prev_test = split_task(PREV, FV_SMALL.split, FV_SMALL.split_seed)[2]
    zs = il.build_prompts(tiny_gqa, prev_test, 0, 5, 0, TEMPLATE, kind="zero_shot")
    with_fv = _logprobs(tiny_gqa, zs, [(hooks.resid_post(fv_eval.layer), _adder(zs, fv.vector, 8.0))])
    assert float(fv_eval.specificity[1, 1]) == pytest.approx(
        float((with_fv.argmax(-1) == zs.answer_ids).float().mean())
    )
    df = fv_eval.specificity_dataframe()
    assert df.shape == (2, 2)


def test_other_vectors_fill_rows(tiny_gqa, word_task, fv):
    prev_fv = function_vector(tiny_gqa, PREV, FV_SMALL)
    res = evaluate_implant(
        tiny_gqa, word_task, fv, IMPLANT_SMALL.replace(specificity_tasks=(), n_natural=0), other_vectors=[prev_fv]
    )
    assert res.specificity_vectors == ("no vector", "next_char (function)", "prev_char (function)")
    assert res.specificity_tasks == ("next_char", "prev_char")
    assert res.specificity.shape == (3, 2) and res.natural_prompts == ()


def test_natural_text_is_greedy_with_the_vector_at_the_prompt_end(tiny_gqa, word_task, fv, fv_eval):
    test = split_task(word_task, FV_SMALL.split, FV_SMALL.split_seed)[2]
    tok = tiny_gqa.tokenizer
    for i, (x, _) in enumerate(test.pairs[:2]):
        prompt = f"w {x} is"
        assert fv_eval.natural_prompts[i] == prompt
        for with_vector, text in ((False, fv_eval.natural_plain[i]), (True, fv_eval.natural_implanted[i])):
            ids = torch.tensor([[tok.bos_token_id, *tok.encode(prompt, add_special_tokens=False)]])
            end = ids.shape[1] - 1
            out = []
            for _ in range(3):
                fwd = []
                if with_vector:

                    def add(act, hook, end=end):
                        act = act.clone()
                        act[:, end] += 8.0 * fv.vector
                        return act

                    fwd = [(hooks.resid_post(fv_eval.layer), add)]
                with torch.no_grad():
                    nxt = int(hooks.forward(tiny_gqa, ids, None, fwd)[0, -1].argmax())
                out.append(nxt)
                ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
            assert text == tok.decode(out)
    assert fv_eval.natural_plain != fv_eval.natural_implanted


def test_task_vector_implant_replaces(tiny_rotary_gqa, word_task):
    tv = task_vector(tiny_rotary_gqa, word_task, TV_SMALL)
    res = evaluate_implant(tiny_rotary_gqa, None, tv, IMPLANT_SMALL.replace(layer="default", specificity_tasks=()))
    assert res.operation == "replace" and res.layer == tv.best_layer and res.task == "next_char"
    # the implant's sweep and the task vector's own curve are the same computation
    torch.testing.assert_close(res.layer_test_accuracy, tv.test_accuracy)
    torch.testing.assert_close(res.layer_dev_accuracy, tv.dev_accuracy)
    assert res.acc("zero_shot+vector") == pytest.approx(tv.test_accuracy_at_best)
    assert res.acc("icl") == pytest.approx(tv.icl_accuracy) and res.acc("zero_shot") == pytest.approx(
        tv.zero_shot_accuracy
    )


def test_refuses_a_vector_from_another_model_or_mode(word_task, fv, tiny_gqa):
    other = il.tiny_model(n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, d_head=16, attn_only=False, seed=7)
    with pytest.raises(VectorMismatchError, match="tiny-2L4H-seed1"):
        evaluate_implant(other, word_task, fv, IMPLANT_SMALL)
    compat = il.tiny_model(
        n_layers=2, n_heads=4, n_kv_heads=2, d_model=64, d_head=16, attn_only=False, seed=1, compatibility_mode=True
    )
    with pytest.raises(VectorMismatchError, match="'default' mode and the model is in 'compatibility' mode"):
        evaluate_implant(compat, word_task, fv, IMPLANT_SMALL)
    with pytest.raises(il.ConfigError, match="FunctionVectorResult"):
        evaluate_implant(tiny_gqa, word_task, fv.vector, IMPLANT_SMALL)


def test_interventions_leave_no_hook_after_an_error(tiny_gqa, fv):
    with pytest.raises(RuntimeError, match="boom"):
        with implant(tiny_gqa, "last", vector=fv.vector, layer=1, operation="add"):
            assert hooks.count_hooks(tiny_gqa) > 0
            raise RuntimeError("boom")
    assert hooks.count_hooks(tiny_gqa) == 0


def test_user_task_file_end_to_end_deterministic(tiny, tmp_path):
    path = tmp_path / "shift.json"
    path.write_text(json.dumps([{"input": c, "output": chr(ord(c) + 2)} for c in "abcdefghijklmnopqrst"]))
    cfg = ImplantConfig(n_test=4, n_dev=4, specificity_tasks=(), n_natural=1, n_generate=2, natural_template="{input}")
    fv = function_vector(tiny, str(path), FV_SMALL)
    first = evaluate_implant(tiny, str(path), fv, cfg)
    again = evaluate_implant(tiny, str(path), function_vector(tiny, str(path), FV_SMALL), cfg)
    assert first.task == "shift" and results_equal(first, again)
    one = evaluate_implant(tiny, str(path), fv, cfg.replace(batch_size=1))
    assert torch.equal(one.correct, first.correct) and torch.equal(one.layer_dev_accuracy, first.layer_dev_accuracy)
    torch.testing.assert_close(one.kl_to_icl, first.kl_to_icl, atol=1e-5, rtol=1e-4)
    assert hooks.count_hooks(tiny) == 0


def test_result_saves_and_shows_every_part(fv_eval, tmp_path):
    loaded = il.load_result(fv_eval.save(tmp_path / "implant"))
    assert isinstance(loaded, ImplantResult) and results_equal(loaded, fv_eval)
    html = fv_eval._repr_html_()
    assert html.count("<img") == 4 and "Natural text" in html
    assert list(fv_eval.to_dataframe()["condition"]) == list(CONDITIONS)
    assert len(fv_eval.layers_dataframe()) == 2 and len(fv_eval.natural_dataframe()) == 2
    for fig in (fv_eval.plot(), fv_eval.plot_distribution(), fv_eval.plot_layers(), fv_eval.plot_specificity()):
        assert fig.axes
    assert "next_char" in fv_eval.summary()


def test_kl_helper_on_known_distributions():
    p = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    q = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]]))
    expected = 0.5 * torch.log(torch.tensor(2.0)) + 0.5 * torch.log(torch.tensor(2 / 3))
    torch.testing.assert_close(kl_divergence(p, q), torch.stack([expected, torch.tensor(0.0)]))


def test_an_unknown_override_is_refused_naming_the_fields(tiny_gqa, word_task, fv):
    with pytest.raises(
        il.ConfigError, match=r"ImplantConfig has no field 'scales' \(did you mean 'scale'\?\); valid fields: n_test"
    ):
        evaluate_implant(tiny_gqa, word_task, fv, scales=2.0)
    with pytest.raises(il.ConfigError, match="layer \\(or a layer index\\) must be one of 'dev', 'default'"):
        evaluate_implant(tiny_gqa, word_task, fv, layer="best")
