"""Format sensitivity: conditions, label stand-ins, shared label prefixes, foreign inputs."""

from __future__ import annotations

import random

import pytest
import torch

import icl_lens as il
from icl_lens.hypotheses.formats import FormatConfig, _ood_demos, format_sensitivity, label_map, template_label
from icl_lens.hypotheses.head_vote import label_answer_tokens
from icl_lens.hypotheses.selection import split_queries
from icl_lens.prompting.prompts import get_template

WORDS = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st", "uv", "wx", "yz", "ba", "dc", "fe", "hg", "ji"]


@pytest.fixture(scope="module")
def label_task():
    return il.Task("xyz", tuple((w, "xyz"[i % 3]) for i, w in enumerate(WORDS)), labels=("x", "y", "z"))


def test_template_labels_and_label_maps():
    assert template_label("Q: {input}\nA: {output}\n\n") == "Q: x A: y"
    assert template_label("{input} -> {output}\n") == "x -> y"
    mapping = label_map(("even", "odd", "7"), ("7", "3", "5", "9"), seed=0)
    assert sorted(mapping) == ["7", "even", "odd"] and len(set(mapping.values())) == 3
    assert "7" not in mapping.values()  # a stand-in is never one of the real labels
    with pytest.raises(il.ConfigError, match="stand-ins"):
        label_map(("a", "b", "c"), ("1", "2"), seed=0)


def test_shared_label_prefix_is_forced(tiny, label_task):
    # the char tokenizer writes " x" as a space and "x": every label starts with the space
    template = get_template("{input} -> {output}\n")
    prefix, ids = label_answer_tokens(tiny.tokenizer, ("x", "y", "z"), template)
    space = tiny.tokenizer.convert_tokens_to_ids(" ")
    assert prefix == [space] and ids.tolist() == tiny.tokenizer.convert_tokens_to_ids(["x", "y", "z"])
    with pytest.raises(il.ConfigError, match="told apart"):
        label_answer_tokens(tiny.tokenizer, ("ab", "ab!"), template)
    r = format_sensitivity(tiny, label_task, n_shots=3, n_prompts=6, kernel_head=(1, 0), label_forms=("words",))
    # by hand: the same queries and demonstrations, the space appended, read at the next token
    queries, pool = split_queries(label_task, 6, None, 0)
    demos = [random.Random(f"0:{i}:format").sample(pool.pairs, 3) for i in range(6)]
    batch = il.build_prompts(tiny, queries, template=template, demos=demos)
    tokens = torch.cat([batch.tokens, torch.full((6, 1), space)], 1)
    mask = torch.cat([batch.attention_mask, torch.ones(6, 1, dtype=torch.long)], 1)
    with torch.no_grad():
        logits = tiny(tokens, attention_mask=mask)[:, -1]
    gold = torch.tensor([tiny.tokenizer.convert_tokens_to_ids(a) for a in batch.answers])
    assert torch.equal(r.correct[0], logits.argmax(-1) == gold)
    assert torch.equal(r.label_correct[0], ids[logits[:, ids].argmax(-1)] == gold)


def test_conditions_share_queries_and_demonstrations(tiny, label_task, tmp_path):
    extra = "[{input}] {output} | "
    config = FormatConfig(templates=(*FormatConfig().templates, extra), n_shots=3, n_prompts=8, kernel_head=(1, 0))
    r = format_sensitivity(tiny, label_task, config, show_progress=False)
    factors = [f for f, _ in r.conditions]
    assert factors == ["template"] * 5 + ["labels", "labels", "inputs"]
    assert r.conditions[4] == ("template", "[x] y |") and r.conditions[-1] == ("inputs", "from number_parity")
    assert set(r.label_maps) == {"symbols", "numbers"} and set(r.label_maps["numbers"].values()) <= set("0123456789")
    df = r.to_dataframe()
    assert len(df) == 8 and df.vs_base[0] == 0.0 and (df.n_prompts == 8).all()
    assert {"label_accuracy", "vote_agreement", "p_value"} <= set(df.columns)
    assert torch.equal(torch.tensor(df.label_accuracy.to_numpy()).float(), r.label_correct.float().mean(-1))
    assert r.plot() is not None and "base condition" in r.summary()
    loaded = il.load_result(r.save(tmp_path / "formats"))
    assert loaded.conditions == r.conditions and torch.equal(loaded.correct, r.correct)


def test_foreign_inputs_keep_the_labels():
    demos = [[("ab", "x"), ("cd", "y")], [("ef", "z"), ("gh", "x")]]
    foreign = [str(i) for i in range(10)]
    swapped = _ood_demos(demos, foreign, seed=0)
    for row, new in zip(demos, swapped):
        assert [y for _, y in new] == [y for _, y in row]  # same labels, same order
        assert all(x in foreign for x, _ in new) and len({x for x, _ in new}) == len(new)


def test_open_task_and_bad_config(tiny, word_task):
    r = format_sensitivity(
        tiny, word_task, n_shots=2, n_prompts=5, templates=("{input}={output}\n", "{input}:{output}\n")
    )
    assert [f for f, _ in r.conditions] == ["template", "template", "inputs"]
    assert r.label_correct is None and r.vote_agrees is None and "vote_agreement" not in r.to_dataframe()
    with pytest.raises(il.ConfigError, match="label form"):
        FormatConfig(label_forms=("emoji",))
    with pytest.raises(il.ConfigError, match="differ"):
        FormatConfig(templates=("{input} -> {output}\n", "{input} ->  {output}\n"))
    with pytest.raises(il.ConfigError, match="fewer queries"):
        format_sensitivity(tiny, word_task, n_prompts=30)
