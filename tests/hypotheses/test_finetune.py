"""ICL vs fine-tuning: only the chosen parameters change, never the original model."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.results import results_equal
from icl_lens.core.stats import proportion_interval
from icl_lens.hypotheses.finetune import IclFinetuneConfig, compare_icl_finetuning
from icl_lens.hypotheses.finetune_result import FinetuneComparison
from icl_lens.hypotheses.finetune_training import (
    attention_parameters,
    finetune_on_demos,
    shuffle_weights_,
    training_examples,
)

TEMPLATE = "{input}={output}\n"
WORDS = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st", "uv", "wx", "yz", "ba", "dc", "fe", "hg", "ji"]


@pytest.fixture(scope="module")
def label_task():
    return il.Task("xy", tuple((w, "xy"[i % 2]) for i, w in enumerate(WORDS)), labels=("x", "y"))


def _snapshot(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _unchanged(model, snapshot) -> bool:
    state = model.state_dict()
    return state.keys() == snapshot.keys() and all(torch.equal(state[k], snapshot[k]) for k in snapshot)


def _same_measurements(a: FinetuneComparison, b: FinetuneComparison) -> bool:
    values = [(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a)]
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x == y for x, y in values)


def _changed_parameters(tuned, original) -> set[str]:
    reference = dict(original.named_parameters())
    return {n for n, p in tuned.named_parameters() if not torch.equal(p, reference[n])}


@pytest.mark.parametrize("trainable", [("k", "v"), ("q",)])
def test_only_chosen_parameters_change_and_the_original_never(tiny_gqa, label_task, trainable):
    before = _snapshot(tiny_gqa)
    flags = [p.requires_grad for p in tiny_gqa.parameters()]
    tuned = finetune_on_demos(tiny_gqa, label_task.pairs[:4], 0.5, trainable=trainable, template=TEMPLATE)
    assert _unchanged(tiny_gqa, before)
    assert flags == [p.requires_grad for p in tiny_gqa.parameters()]
    chosen = set(attention_parameters(tuned, trainable))
    # 2 layers x (weight, bias) per projection
    assert len(chosen) == 2 * 2 * len(trainable)
    assert _changed_parameters(tuned, tiny_gqa) == chosen
    assert not any(p.requires_grad for p in tuned.parameters())


def test_the_copy_shares_no_state_with_a_model_that_already_ran(tiny_gqa, label_task):
    """A bridge wires closures into its blocks on its first forward; a naive deepcopy shares them."""
    batch = il.build_prompts(tiny_gqa, label_task, 2, 2, 0, TEMPLATE)
    hooks.forward(tiny_gqa, batch.tokens, batch.attention_mask)  # wires the capture hooks
    tuned = finetune_on_demos(tiny_gqa, label_task.pairs[:3], 0.5, template=TEMPLATE)
    leaked = [
        (type(module).__name__, name)
        for module in tiny_gqa.modules()
        for name, value in vars(module).items()
        if isinstance(value, torch.Tensor) and value.grad_fn is not None
    ]
    assert leaked == []
    fired: list[str] = []
    with hooks.attached(tiny_gqa, [(hooks.attn_out(0), lambda act, hook: fired.append("original"))]):
        hooks.forward(tuned, batch.tokens, batch.attention_mask)
    assert fired == []
    assert copy.deepcopy(tiny_gqa) is not None


def test_chosen_parameters_are_the_ones_the_forward_uses(tiny_rotary_gqa, label_task):
    batch = il.build_prompts(tiny_rotary_gqa, label_task, 2, 3, 0, TEMPLATE)
    copy_ = finetune_on_demos(tiny_rotary_gqa, label_task.pairs[:1], 1e-9, template=TEMPLATE)
    with torch.no_grad():
        base = hooks.forward(copy_, batch.tokens, batch.attention_mask)
        for name, p in attention_parameters(copy_, ("k", "v")).items():
            saved = p.clone()
            p.add_(0.5)
            moved = (hooks.forward(copy_, batch.tokens, batch.attention_mask) - base).abs().max()
            p.copy_(saved)
            assert moved > 1e-4, name


def test_compare_leaves_the_model_untouched_and_is_deterministic(tiny_gqa, label_task, tmp_path):
    before = _snapshot(tiny_gqa)
    cfg = IclFinetuneConfig(n_shots=4, n_dev=4, n_test=6, learning_rates=(0.05, 0.5), template=TEMPLATE, batch_size=4)
    result = compare_icl_finetuning(tiny_gqa, label_task, cfg)
    assert _unchanged(tiny_gqa, before) and hooks.count_hooks(tiny_gqa) == 0
    assert result.trained_parameters == tuple(attention_parameters(tiny_gqa, ("k", "v")))
    for m in (result.trained, result.baseline):
        assert m.correct.shape == (3, 6)
        assert m.sim_aou.shape == m.sim_am.shape == (2,)
        assert m.learning_rate in (0.05, 0.5)
        assert torch.all(m.sim_am.abs() <= 1 + 1e-6) and torch.all(m.sim_aou.abs() <= 1 + 1e-6)
    # the shuffled-weight model really is another model
    assert not torch.equal(result.trained.sim_aou, result.baseline.sim_aou)
    # without the baseline: the same numbers, whatever the batch size, run after run
    lean = cfg.replace(baseline="none")
    once = compare_icl_finetuning(tiny_gqa, label_task, lean)
    assert once.baseline is None and _same_measurements(once.trained, result.trained)
    again = compare_icl_finetuning(tiny_gqa, label_task, lean.replace(batch_size=1))
    assert torch.equal(again.trained.correct, result.trained.correct)
    assert torch.allclose(again.trained.sim_aou, result.trained.sim_aou, atol=1e-4)
    assert torch.allclose(again.trained.sim_am, result.trained.sim_am, atol=1e-4)
    table = result.summary_table()
    assert len(table) == 24 and result.to_png() is not None
    row = table[(table.model == result.model) & (table.measure == "accuracy ICL")].iloc[0]
    k = int(result.trained.correct[1].sum())
    assert (row.ci_low, row.ci_high) == pytest.approx(proportion_interval(k, 6)) and row.n == 6
    assert "6 test queries" in result.summary() and "McNemar" in result.summary()
    result.save(tmp_path / "ft")
    assert results_equal(result, il.load_result(tmp_path / "ft"))


def test_rec2ftp_by_hand():
    zsl = [False, False, False, True]
    icl = [True, False, True, True]
    ft = [True, True, False, True]
    m = FinetuneComparison(
        learning_rate=0.1,
        dev_accuracy=torch.zeros(1),
        dev_loss=torch.zeros(1),
        correct=torch.tensor([zsl, icl, ft]),
        sim_aou=torch.zeros(2),
        sim_aou_random=torch.zeros(2),
        sim_aou_random_state=torch.zeros(2),
        sim_am=torch.zeros(2),
        sim_am_zero_shot=torch.zeros(2),
    )
    assert m.n_ft_corrections == 2  # queries 0 and 1
    assert m.rec2ftp == pytest.approx(1 / 2)  # ICL fixes query 0 of those, not query 1
    assert m.icl_correction_rate == pytest.approx(2 / 3)  # ICL fixes queries 0 and 2 of the 3 ZSL errors
    assert m.accuracy("finetuned") == 0.75
    # intervals: Rec2FTP is 1 of 2 FT corrections, the correction rate 2 of 3 ZSL errors
    assert m.rec2ftp_interval == pytest.approx(proportion_interval(1, 2))
    assert m.icl_correction_interval == pytest.approx(proportion_interval(2, 3))
    assert m.interval("finetuned") == pytest.approx(proportion_interval(3, 4))
    c = m.comparison("icl", "finetuned")  # discordant: query 1 (FT only), query 2 (ICL only)
    assert (c.a_only, c.b_only) == (1, 1) and c.p_value == pytest.approx(1.0) and not c.significant


def test_training_examples_are_the_zero_shot_prompts_and_their_labels(tiny, label_task):
    """Fine-tuning trains on exactly the tokens build_prompts puts in a zero-shot prompt and its answer."""
    demos = label_task.pairs[:4]
    examples = training_examples(tiny, demos, il.Template(TEMPLATE))
    zero_shot = il.build_prompts(tiny, il.Task("d", demos), 0, 4, 0, TEMPLATE, kind="zero_shot")
    for (prompt, label), (x, y) in zip(examples, demos, strict=True):
        r = zero_shot.queries.index(x)
        assert prompt == zero_shot.tokens[r][zero_shot.attention_mask[r].bool()].tolist()
        assert tuple(label) == zero_shot.answer_tokens[r]
        assert tiny.tokenizer.decode(prompt[1:] + label) == f"{x}={y}"


def test_shuffled_weights_keep_values_and_lose_order(tiny):
    copy_ = finetune_on_demos(tiny, [("ab", "x")], 1e-9, template=TEMPLATE)
    shuffle_weights_(copy_, seed=1, source=tiny)
    for (name, a), (_, b) in zip(tiny.named_parameters(), copy_.named_parameters(), strict=True):
        assert torch.equal(a.flatten().sort().values, b.flatten().sort().values), name
        if a.numel() > 16 and a.flatten().unique().numel() > 16:
            assert not torch.equal(a, b), name


@pytest.mark.smollm2
def test_smollm2_original_untouched_and_kv_trained(smollm2):
    before = _snapshot(smollm2)
    task = il.load_task("animal_object")
    tuned = finetune_on_demos(smollm2, task.pairs[:2], 1e-2)
    assert _unchanged(smollm2, before)
    changed = _changed_parameters(tuned, smollm2)
    assert changed == set(attention_parameters(tuned, ("k", "v")))
    assert len(changed) == 60  # 30 layers x (k_proj, v_proj) weights, no biases
    assert hooks.count_hooks(smollm2) == 0


def test_an_unknown_override_is_refused_naming_the_fields(tiny, label_task):
    with pytest.raises(
        il.ConfigError,
        match=r"IclFinetuneConfig has no field 'learning_rate' \(did you mean 'learning_rates'\?\); valid fields: n_shots",
    ):
        compare_icl_finetuning(tiny, label_task, learning_rate=0.1)
    with pytest.raises(il.ConfigError, match="each entry of trainable must be one of 'q', 'k', 'v', 'o'; got 'w'"):
        compare_icl_finetuning(tiny, label_task, trainable=("k", "w"))
