"""Prompt bookkeeping: every recorded span decodes to exactly the text put there."""

from __future__ import annotations

import string

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import icl_lens as il
from icl_lens.prompting.encoding import encode_texts, pad_token_id
from icl_lens.prompting.prompts import Template

WORD = st.text(string.ascii_letters + string.digits + " '-,.éü", min_size=1, max_size=12).map(str.strip).filter(bool)
CHAR_WORD = st.text(string.ascii_letters + string.digits + " '-,.", min_size=1, max_size=8).map(str.strip).filter(bool)
TEMPLATES = st.sampled_from(
    ["todd", "hendel", "Input: {input} Output: {output}\n", "{input}={output};", "[{input}] {output} | "]
)


def _decode(model, ids):
    return model.tokenizer.decode(ids, clean_up_tokenization_spaces=False)


def _check_spans(model, batch, template):
    tmpl = il.prompting.templates.get_template(template)
    prefix, il_, middle, ol, suffix = tmpl.parts()
    bos = model.tokenizer.bos_token_id
    for r in range(len(batch)):
        toks = batch.tokens[r]
        for i, (x, y) in enumerate(batch.demos[r]):
            a, b = batch.input_spans[r, i].tolist()
            assert _decode(model, toks[a:b]) == il_ + x
            a, b = batch.label_spans[r, i].tolist()
            assert _decode(model, toks[a:b]) == ol + y
        a, b = batch.query_spans[r].tolist()
        assert _decode(model, toks[a:b]) == il_ + batch.queries[r]
        last = int(batch.last_pos[r])
        assert _decode(model, toks[b : last + 1]) == middle
        assert batch.attention_mask[r, last] == 1
        real = toks[batch.attention_mask[r].bool()]
        assert real[0] == bos
        assert _decode(model, real[1:]) == batch.texts[r]
        assert batch.answer_tokens[r] == tuple(model.tokenizer.encode(ol + batch.answers[r], add_special_tokens=False))
        assert batch.answer_ids[r] == batch.answer_tokens[r][0]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(st.tuples(CHAR_WORD, CHAR_WORD), min_size=3, max_size=8, unique_by=lambda p: p[0]),
    shots=st.integers(0, 4),
    template=TEMPLATES,
    side=st.sampled_from(["left", "right"]),
    kind=st.sampled_from(["clean", "shuffled", "dummy_query", "zero_shot"]),
)
def test_spans_decode_exactly_char_tokenizer(tiny, words, shots, template, side, kind):
    task = il.Task("t", tuple(words))
    shots = min(shots, len(task) - 2)
    if kind in ("shuffled", "dummy_query"):
        shots = max(shots, 1)
    batch = il.build_prompts(
        tiny, task, n_shots=shots, n_prompts=3, seed=1, template=template, kind=kind, padding_side=side
    )
    _check_spans(tiny, batch, template)


@settings(max_examples=40, deadline=None)
@given(
    words=st.lists(st.tuples(WORD, WORD), min_size=4, max_size=10, unique_by=lambda p: p[0]),
    shots=st.integers(0, 3),
    template=TEMPLATES,
    side=st.sampled_from(["left", "right"]),
)
def test_spans_decode_exactly_smollm2_tokenizer(smollm2, words, shots, template, side):
    """Byte-level BPE with multi-token inputs and labels, accents, spaces inside inputs."""
    batch = il.build_prompts(
        smollm2, il.Task("t", tuple(words)), n_shots=shots, n_prompts=3, seed=2, template=template, padding_side=side
    )
    _check_spans(smollm2, batch, template)


def test_todd_template_tokenizes_naturally(smollm2):
    task = il.Task("a", (("hot", "cold"), ("big", "small"), ("up", "down")))
    batch = il.build_prompts(smollm2, task, n_shots=2, n_prompts=1, seed=0, template="todd")
    strs = smollm2.to_str_tokens(batch.tokens[0])
    assert strs[:9] == [
        "<|im_start|>",
        "Q",
        ":",
        f" {batch.demos[0][0][0]}",
        "\n",
        "A",
        ":",
        f" {batch.demos[0][0][1]}",
        "\n\n",
    ]
    assert strs[-2:] == ["A", ":"]
    assert batch.texts[0].endswith(f"Q: {batch.queries[0]}\nA:")


def test_kinds_share_queries_and_demonstrations(tiny, word_task):
    kw = dict(n_shots=5, n_prompts=6, seed=3)
    clean = il.build_prompts(tiny, word_task, **kw)
    zero = il.build_prompts(tiny, word_task, kind="zero_shot", **kw)
    shuf = il.build_prompts(tiny, word_task, kind="shuffled", **kw)
    dummy0 = il.build_prompts(tiny, word_task, kind="dummy_query", **kw)
    dummy1 = il.build_prompts(tiny, word_task, kind="dummy_query", variant=1, **kw)
    assert zero.queries == clean.queries == shuf.queries and zero.n_shots == 0
    assert zero.input_spans.shape == (6, 0, 2)
    for c, s, d0, d1, _q in zip(clean.demos, shuf.demos, dummy0.demos, dummy1.demos, clean.queries):
        assert [x for x, _ in s] == [x for x, _ in c]
        assert sorted(y for _, y in s) == sorted(y for _, y in c)
        assert sum(a != b for (_, a), (_, b) in zip(s, c)) >= 4  # labels really moved
        assert d0 == c == d1
    for r in range(6):
        demo_inputs = {x for x, _ in clean.demos[r]}
        assert dummy0.queries[r] not in demo_inputs | {clean.queries[r]}
        assert dummy0.queries[r] != dummy1.queries[r]
        assert dummy0.answers[r] == dict(word_task.pairs)[dummy0.queries[r]]
        assert clean.queries[r] not in demo_inputs


def test_fewer_shots_are_a_prefix_of_more_shots(tiny, word_task):
    five = il.build_prompts(tiny, word_task, n_shots=5, n_prompts=4, seed=9)
    two = il.build_prompts(tiny, word_task, n_shots=2, n_prompts=4, seed=9)
    assert all(t == f[:2] for t, f in zip(two.demos, five.demos))
    other = il.build_prompts(tiny, word_task, n_shots=5, n_prompts=4, seed=10)
    assert other.demos != five.demos


def test_queries_are_distinct_until_the_task_runs_out(tiny, word_task):
    b = il.build_prompts(tiny, word_task, n_shots=1, n_prompts=len(word_task))
    assert len(set(b.queries)) == len(word_task)


def test_select_trims_padding_and_shifts_positions(tiny):
    task = il.Task("t", (("a", "b"), ("long input", "x"), ("c", "d"), ("e", "f")))
    b = il.build_prompts(tiny, task, n_shots=1, n_prompts=4, seed=0)
    for i in range(4):
        one = b.select([i])
        assert one.attention_mask.all()
        assert torch.equal(one.tokens[0], b.tokens[i][b.attention_mask[i].bool()])
        assert int(one.last_pos[0]) == one.tokens.shape[1] - 1
        assert torch.equal(one.input_spans[0] + (b.tokens.shape[1] - one.tokens.shape[1]), b.input_spans[i])


def test_demos_from_another_pool(tiny, word_task):
    train, test = word_task.split((0.6, 0.4), seed=0)
    b = il.build_prompts(tiny, test, n_shots=4, n_prompts=5, demos_from=train)
    assert set(b.queries) <= set(test.inputs)
    assert all(x in train.inputs for d in b.demos for x, _ in d)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_shots=30), "Lower n_shots"),
        (dict(kind="noisy"), "kind must be one of"),
        (dict(template="{output} then {input}"), "must come before"),
        (dict(template="Q: {input}"), "exactly once"),
        (dict(template="nope"), "unknown template"),
        (dict(kind="shuffled", n_shots=0), "needs n_shots >= 1"),
        (dict(padding_side="middle"), "padding_side"),
    ],
)
def test_bad_prompt_requests_get_clear_errors(tiny, word_task, kwargs, message):
    with pytest.raises(il.PromptError, match=message):
        il.build_prompts(tiny, word_task, **{"n_prompts": 2, **kwargs})


def test_prompt_longer_than_context_is_refused():
    m = il.tiny_model(n_ctx=16)
    task = il.Task("t", tuple((c * 3, c * 3) for c in "abcdefgh"))
    with pytest.raises(il.PromptError, match="context"):
        il.build_prompts(m, task, n_shots=5, n_prompts=2)


def test_template_format_matches_the_paper_formats():
    assert il.TODD.format("hot", "cold") == "Q: hot\nA: cold\n\n"
    assert il.HENDEL.format("hot") == "hot ->"
    assert Template("{input}: {output}").parts() == ("", "", ":", " ", "")


# --- the same demonstrations for every query (the fine-tuning set) ----------------------
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    words=st.lists(st.tuples(CHAR_WORD, CHAR_WORD), min_size=4, max_size=9, unique_by=lambda p: p[0]),
    n_demos=st.integers(1, 3),
    template=TEMPLATES,
    side=st.sampled_from(["left", "right"]),
)
def test_fixed_demos_are_every_prompts_demonstrations(tiny, words, n_demos, template, side):
    task = il.Task("t", tuple(words))
    demos = task.pairs[:n_demos]
    batch = il.build_prompts(tiny, task, n_prompts=5, seed=3, template=template, fixed_demos=demos, padding_side=side)
    _check_spans(tiny, batch, template)
    assert batch.n_shots == n_demos and batch.kind == "clean"
    assert all(d == tuple(demos) for d in batch.demos)
    # never a demonstration's input; in the first pass, the zero-shot batch's queries (same seed) without them
    assert not set(batch.queries) & set(dict(demos))
    one_pass = il.build_prompts(tiny, task, 0, len(task), 3, template, kind="zero_shot").queries
    asked = [q for q in one_pass if q not in dict(demos)]
    k = min(5, len(asked))
    assert list(batch.queries[:k]) == asked[:k]


@settings(max_examples=15, deadline=None)
@given(
    words=st.lists(st.tuples(WORD, WORD), min_size=4, max_size=8, unique_by=lambda p: p[0]),
    template=TEMPLATES,
    side=st.sampled_from(["left", "right"]),
)
def test_fixed_demos_decode_exactly_smollm2_tokenizer(smollm2, words, template, side):
    task = il.Task("t", tuple(words))
    batch = il.build_prompts(
        smollm2, task, n_prompts=3, seed=2, template=template, fixed_demos=task.pairs[:2], padding_side=side
    )
    _check_spans(smollm2, batch, template)
    assert all(d == task.pairs[:2] for d in batch.demos)


def test_fixed_demos_put_the_same_ids_before_every_query(tiny, word_task):
    queries = il.Task("q", word_task.pairs[4:])
    demos = word_task.pairs[:4]
    icl = il.build_prompts(tiny, queries, n_prompts=6, seed=0, template="hendel", fixed_demos=demos)
    zero_shot = il.build_prompts(tiny, queries, 0, 6, 0, "hendel", kind="zero_shot")
    assert icl.queries == zero_shot.queries  # disjoint demonstrations: exactly the zero-shot queries
    rows = [icl.tokens[r][icl.attention_mask[r].bool()].tolist() for r in range(len(icl))]
    shared = rows[0][: int(icl.query_spans[0, 0]) - (icl.tokens.shape[1] - len(rows[0]))]
    assert tiny.tokenizer.decode(shared[1:]) == "".join(il.HENDEL.format(x, y) for x, y in demos)
    for r, ids in enumerate(rows):
        query_part = zero_shot.tokens[r][zero_shot.attention_mask[r].bool()].tolist()
        assert ids == shared + query_part[1:]  # BOS, the demonstrations, then the zero-shot prompt's own tokens


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(fixed_demos=()), "fixed_demos is empty"),
        (dict(fixed_demos=(("a", "b"),), kind="zero_shot"), "drop kind='zero_shot'"),
        (dict(fixed_demos=(("a", "b"),), n_shots=3), "leave n_shots out"),
        (dict(fixed_demos=(("a", "b"), ("c", "d"))), "no query is left"),
    ],
)
def test_bad_fixed_demos_get_clear_errors(tiny, kwargs, message):
    task = il.Task("t", (("a", "b"), ("c", "d")))
    with pytest.raises(il.PromptError, match=message):
        il.build_prompts(tiny, task, n_prompts=2, **kwargs)


# --- per-prompt demonstrations (demos=) ------------------------------------------------
def test_each_prompt_shows_its_own_demonstrations(tiny):
    queries = il.Task("q", (("ab", "x"), ("cd", "y"), ("ef", "x")))
    chosen = [[("gh", "y"), ("ij", "x")], [("kl", "x"), ("gh", "y")], [("ab", "x"), ("mn", "y")]]
    batch = il.build_prompts(tiny, queries, template="{input}={output}\n", demos=chosen, n_prompts=7)
    # prompt i asks pair i after exactly the demonstrations given for it, in their order
    assert batch.queries == ("ab", "cd", "ef") and batch.answers == ("x", "y", "x")
    assert [list(d) for d in batch.demos] == chosen and batch.n_shots == 2
    assert batch.texts[1] == "kl=x\ngh=y\ncd="
    _check_spans(tiny, batch, "{input}={output}\n")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(demos=[[("gh", "y")]] * 2), "one list per pair"),
        (dict(demos=[[("gh", "y")], [], [("ij", "x")]]), "same number"),
        (dict(demos=[[("gh", "y")]] * 3, kind="shuffled"), "use it alone"),
        (dict(demos=[[("gh", "y")]] * 3, fixed_demos=[("gh", "y")]), "use it alone"),
    ],
)
def test_bad_per_prompt_demos_get_clear_errors(tiny, kwargs, message):
    queries = il.Task("q", (("ab", "x"), ("cd", "y"), ("ef", "x")))
    with pytest.raises(il.PromptError, match=message):
        il.build_prompts(tiny, queries, **kwargs)


# --- one pad token everywhere ---------------------------------------------------------
@pytest.mark.parametrize("pad", [None, "<bos>"])
def test_every_batch_pads_with_the_same_token(pad):
    """Prompts (left, right, fixed demonstrations) and plain texts: the pad token, else the end-of-sequence token."""
    model = il.tiny_model(n_layers=1, n_heads=2, d_model=16, d_head=8, seed=0)
    model.tokenizer.pad_token = pad
    model.tokenizer.eos_token = "<unk>"
    expected = 0 if pad == "<bos>" else 2  # the pad token if there is one, else end-of-sequence
    assert pad_token_id(model.tokenizer) == expected
    task = il.Task("t", (("a", "b"), ("long input", "x"), ("cd", "d"), ("e", "fgh"), ("i", "j")))
    batches = [
        il.build_prompts(model, task, n_shots=1, n_prompts=5, padding_side="left"),
        il.build_prompts(model, task, n_shots=2, n_prompts=5, padding_side="right"),
        il.build_prompts(model, task, n_prompts=3, fixed_demos=task.pairs[:2]),
    ]
    padded = [(b.tokens, b.attention_mask) for b in batches] + [encode_texts(model, ["a", "long text"])]
    for tokens, mask in padded:
        assert (mask == 0).any()
        assert tokens[mask == 0].unique().tolist() == [expected]
