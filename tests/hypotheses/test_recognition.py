"""Task recognition vs task learning: the abstract-label bijection and the three settings."""

from __future__ import annotations

import math

import pytest
import torch

import icl_lens as il
from icl_lens.core.results import results_equal
from icl_lens.core.stats import proportion_interval
from icl_lens.hypotheses.labels import label_first_tokens
from icl_lens.hypotheses.recognition import (
    RecognitionConfig,
    abstract_label_map,
    recognition_vs_learning,
)
from icl_lens.prompting.evaluation import next_token_logprobs

TEMPLATE = "{input}={output}\n"
WORDS = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st", "uv", "wx", "yz", "ba", "dc", "fe", "hg", "ji"]


@pytest.fixture(scope="module")
def label_task():
    return il.Task("xy", tuple((w, "xy"[i % 2]) for i, w in enumerate(WORDS)), labels=("x", "y"))


def _check_bijection(tokenizer, labels, mapping, lead):
    assert list(mapping) == list(labels)
    values = list(mapping.values())
    assert len(set(values)) == len(values)  # injective, hence a bijection onto its image
    real_first = {tokenizer.encode(lead + y, add_special_tokens=False)[0] for y in labels}
    abstract_ids = []
    for v in values:
        ids = tokenizer.encode(lead + v, add_special_tokens=False)
        assert len(ids) == 1, v  # one token: a prediction is one step
        assert ids[0] not in real_first  # no prefix collision with a real label
        assert v.lower() not in {y.lower() for y in labels}
        abstract_ids.append(ids[0])
    assert len(set(abstract_ids)) == len(abstract_ids)


def test_abstract_map_is_a_collision_free_bijection_on_a_char_tokenizer(tiny):
    tokenizer = tiny.tokenizer
    labels = ["a", "B", "x", "y"]  # "A" and "b" collide with real labels case-insensitively
    mapping = abstract_label_map(tokenizer, labels, "letters", lead="", seed=0)
    _check_bijection(tokenizer, labels, mapping, "")
    assert not {"A", "B"} & set(mapping.values())
    assert mapping == abstract_label_map(tokenizer, labels, "letters", lead="", seed=0)  # seeded
    assert any(abstract_label_map(tokenizer, labels, "letters", lead="", seed=s) != mapping for s in range(1, 6))
    numbers = abstract_label_map(tokenizer, labels, "numbers", lead="", seed=0)
    _check_bijection(tokenizer, labels, numbers, "")
    assert set(numbers.values()) <= set("0123456789")
    # with a space before the label every candidate is two char tokens: refused, with a fix
    with pytest.raises(il.ConfigError, match="single"):
        abstract_label_map(tokenizer, labels, "letters", lead=" ")
    # a user pool too small once collisions are removed is refused too
    with pytest.raises(il.ConfigError):
        abstract_label_map(tokenizer, labels, ("x", "y", "Q"), lead="")


@pytest.mark.smollm2
def test_abstract_map_on_smollm2_tokenizer(smollm2):
    tokenizer = smollm2.tokenizer
    for task in ("word_pos", "country_continent", "animal_object", "number_parity"):
        labels = il.load_task(task).labels
        mapping = abstract_label_map(tokenizer, labels, "letters", lead=" ", seed=0)
        _check_bijection(tokenizer, labels, mapping, " ")
    # " 0" is a space token then a digit for SmolLM2: numbers cannot be one-token labels
    with pytest.raises(il.ConfigError, match="letters"):
        abstract_label_map(tokenizer, ("even", "odd"), "numbers", lead=" ")


def test_settings_by_hand(tiny_gqa, label_task):
    cfg = RecognitionConfig(shots=(0, 3), n_prompts=6, template=TEMPLATE, batch_size=4)
    result = recognition_vs_learning(tiny_gqa, label_task, cfg)
    assert result.settings == ("gold", "random", "abstract") and result.chance == 0.5
    # zero shots: gold and random prompts are the same prompts
    assert torch.equal(result.correct[0, 0], result.correct[1, 0])
    # the gold setting at 3 shots, recomputed from build_prompts and next_token_logprobs
    batch = il.build_prompts(tiny_gqa, label_task, 3, 6, 0, TEMPLATE)
    ids = label_first_tokens(tiny_gqa.tokenizer, ("x", "y"), il.Template(TEMPLATE))
    lp = next_token_logprobs(tiny_gqa, batch)
    assert torch.equal(result.correct[0, 1], ids[lp[:, ids].argmax(-1)] == batch.answer_ids)
    # abstract: the same prompts with every label replaced through the map
    mapped = il.Task("m", tuple((x, result.label_map[y]) for x, y in label_task.pairs))
    abstract = il.build_prompts(tiny_gqa, mapped, 3, 6, 0, TEMPLATE)
    assert abstract.queries == batch.queries
    assert [[x for x, _ in d] for d in abstract.demos] == [[x for x, _ in d] for d in batch.demos]
    ids_abs = label_first_tokens(tiny_gqa.tokenizer, tuple(result.label_map.values()), il.Template(TEMPLATE))
    lp_abs = next_token_logprobs(tiny_gqa, abstract)
    assert torch.equal(result.correct[2, 1], ids_abs[lp_abs[:, ids_abs].argmax(-1)] == abstract.answer_ids)
    assert result.accuracy_of("abstract")[1] == pytest.approx(float(result.correct[2, 1].float().mean()))
    # batch size changes nothing
    again = recognition_vs_learning(tiny_gqa, label_task, cfg.replace(batch_size=1))
    assert torch.equal(again.correct, result.correct)
    assert results_equal(result, recognition_vs_learning(tiny_gqa, label_task, cfg.replace()))
    df = result.to_dataframe()
    assert len(df) == 6 and result.to_png() is not None
    # intervals and tests: Wilson per cell, binomial above chance, paired settings (same queries)
    row = df[(df.setting == "abstract") & (df.shots == 3)].iloc[0]
    k = int(result.correct[2, 1].sum())
    assert (row.ci_low, row.ci_high) == pytest.approx(proportion_interval(k, 6))
    assert row.p_above_chance == pytest.approx(sum(math.comb(6, j) for j in range(k, 7)) / 2**6)
    c = result.comparison("random", "gold")
    assert c.n == 6 and c.a_only == int((result.correct[1, 1] & ~result.correct[0, 1]).sum())
    assert len(result.comparisons()) == 6 and "chance 50%" in result.summary()


def test_random_labels_come_from_the_label_space(tiny, label_task):
    from icl_lens.hypotheses.recognition import _random_label_task

    shuffled = _random_label_task(label_task, ("x", "y"), seed=0)
    assert shuffled.inputs == label_task.inputs
    assert set(shuffled.outputs) == {"x", "y"}
    # random, not gold: a fair share of the 18 labels differ from the true ones
    assert 3 <= sum(a != b for a, b in zip(shuffled.outputs, label_task.outputs, strict=True)) <= 15


def test_needs_a_label_set(tiny):
    task = il.Task("rev", tuple((w, w[::-1]) for w in WORDS))
    with pytest.raises(il.TaskError, match="label set"):
        recognition_vs_learning(tiny, task, RecognitionConfig(template=TEMPLATE))
    with pytest.raises(il.ConfigError):
        RecognitionConfig(abstract_labels="emoji")


@pytest.mark.smollm2
def test_smollm2_recognises_animal_object(smollm2):
    """Eight prompts at 0 and 8 shots: gold labels lift SmolLM2 well above chance."""
    result = recognition_vs_learning(smollm2, "animal_object", RecognitionConfig(shots=(0, 8), n_prompts=8))
    assert result.label_map.keys() == {"animal", "object"} and result.chance == 0.5
    assert result.accuracy_of("gold")[1] >= 0.75  # 29/32 with 32 prompts (docs/hypotheses.md)
    # zero shots: gold and random prompts are identical
    assert result.accuracy_of("gold")[0] == result.accuracy_of("random")[0]


def test_an_unknown_override_is_refused_naming_the_fields(tiny_gqa, label_task):
    with pytest.raises(
        il.ConfigError, match=r"RecognitionConfig has no field 'shot' \(did you mean 'shots'\?\); valid fields: shots"
    ):
        recognition_vs_learning(tiny_gqa, label_task, shot=(0, 2))
    cfg = RecognitionConfig(shots=(0, 3), n_prompts=4, template=TEMPLATE)
    overridden = recognition_vs_learning(tiny_gqa, label_task, cfg, shots=(1,))
    assert overridden.config == cfg.replace(shots=(1,)) and overridden.correct.shape == (3, 1, 4)
