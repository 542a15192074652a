"""Kernel-regression analysis: the vote by hand, planted attention, splits, SmolLM2."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.results import results_equal
from icl_lens.hypotheses.kernel import (
    KernelRegressionConfig,
    demo_attention,
    kernel_regression,
    kernel_vote,
    similarity_matrices,
)

TEMPLATE = "{input}={output}\n"  # no space before the label: each label is one char token
WORDS = ["ab", "cd", "ef", "gh", "ij", "kl", "mn", "op", "qr", "st", "uv", "wx", "yz", "ba", "dc", "fe"]
N_VOCAB = 99  # the char tokenizer's size


@pytest.fixture(scope="module")
def label_task():
    return il.Task("xyz", tuple((w, "xyz"[i % 3]) for i, w in enumerate(WORDS)), labels=("x", "y", "z"))


@pytest.fixture(scope="module")
def planted():
    """One attention-only layer whose attention is softmax(c_h * score[token]), nothing else.

    The query is a constant (bias only), the key of a token is its planted score; head 0
    has c = +1, head 1 has c = -1. Positions and other weights are zero.
    """
    model = il.tiny_model(n_layers=1, n_heads=2, d_model=16, d_head=8, attn_only=True, normalization_type=None)
    scores = torch.rand(N_VOCAB, generator=torch.Generator().manual_seed(0)) * 4 - 2
    params = dict(model.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.zero_()
        params["tok_embed._original_component.weight"][:, 0] = scores
        q = model.blocks[0].attn.q._original_component
        k = model.blocks[0].attn.k._original_component
        q.bias[0], q.bias[8] = math.sqrt(8), -math.sqrt(8)  # times 1/sqrt(d_head) in the score
        k.weight[0, 0] = k.weight[8, 0] = 1.0
    return model, scores


def test_vote_matches_hand_computation():
    attention = torch.tensor([[0.1, 0.5, 0.2, 0.2], [0.3, 0.3, 0.2, 0.2]])
    labels = torch.tensor([[0, 1, 0, 2], [0, 1, 2, 2]])
    share, vote = kernel_vote(attention, labels, 3)
    # row 0: label 0 gets 0.1 + 0.2, label 1 gets 0.5, label 2 gets 0.2, over a total of 1.0
    assert torch.allclose(share[0], torch.tensor([0.3, 0.5, 0.2]))
    # row 1: 0.3 / 0.3 / 0.4 -> label 2 wins despite labels 0 and 1 having the single largest weights
    assert torch.allclose(share[1], torch.tensor([0.3, 0.3, 0.4]))
    assert vote.tolist() == [1, 2]
    # unnormalised weights give the same shares; an exact tie goes to the lowest label
    share2, vote2 = kernel_vote(attention * 7, labels, 3)
    assert torch.allclose(share2, share)
    assert kernel_vote(torch.tensor([1.0, 1.0]), torch.tensor([1, 0]), 2)[1].item() == 0


def _hand_attention(model, batch, scores, span):
    """Expected per-demonstration weights from the planted scores alone (no forward pass)."""
    out = torch.zeros(len(batch), 2, batch.n_shots)
    for r in range(len(batch)):
        valid = batch.attention_mask[r].bool()
        ids = batch.tokens[r][valid]
        offset = int((~valid).sum())  # left padding
        for h, sign in ((0, 1.0), (1, -1.0)):
            row = torch.softmax(sign * scores[ids], 0)
            for i in range(batch.n_shots):
                a = int(batch.input_spans[r, i, 0]) - offset
                b = int(batch.label_spans[r, i, 1]) - offset
                out[r, h, i] = row[a:b].max() if span == "max" else row[a:b].mean()
    return out


@pytest.mark.parametrize("span", ["max", "mean"])
def test_planted_attention_and_vote(planted, label_task, span):
    model, scores = planted
    batch = il.build_prompts(model, label_task, 4, 6, 3, TEMPLATE)
    attention, _ = demo_attention(model, batch, span=span, batch_size=4)
    expected = _hand_attention(model, batch, scores, span)
    assert torch.allclose(attention[:, 0], expected, atol=1e-6)

    result = kernel_regression(
        model, label_task, KernelRegressionConfig(n_shots=4, n_prompts=6, seed=3, template=TEMPLATE, span=span)
    )
    index = {"x": 0, "y": 1, "z": 2}
    demo_labels = torch.tensor([[index[y] for _, y in demos] for demos in batch.demos])
    assert torch.equal(result.demo_labels, demo_labels)
    for r in range(len(batch)):
        for h in range(2):
            mass = [sum(float(expected[r, h, i]) for i in range(4) if demo_labels[r, i] == c) for c in range(3)]
            assert result.votes[r, 0, h].item() == max(range(3), key=lambda c: (mass[c], -c))
    # heads 0 and 1 attend in opposite directions, so their votes must differ somewhere
    assert (result.votes[:, 0, 0] != result.votes[:, 0, 1]).any()


def test_head_is_picked_on_the_selection_split_only(tiny, label_task):
    cfg = KernelRegressionConfig(n_shots=4, n_prompts=12, template=TEMPLATE, select_fraction=0.5, n_permutations=20)
    result = kernel_regression(tiny, label_task, cfg)
    assert int(result.selection.sum()) == 6
    hits = (result.votes == result.model_prediction[:, None, None]).float()
    on_selection = hits[result.selection].mean(0)
    flat = int(on_selection.flatten().argmax())
    assert result.best_head == (flat // 4, flat % 4)
    held = hits[~result.selection].mean(0)
    assert result.best_head_agreement("model") == pytest.approx(float(held[result.best_head]))
    assert torch.allclose(result.agreement("model", "heldout"), held)
    # majority baseline by hand on the held-out prompts
    rows = (~result.selection).nonzero().flatten().tolist()
    majority = [max(range(3), key=lambda c: ((result.demo_labels[r] == c).sum().item(), -c)) for r in rows]
    expected = sum(m == result.model_prediction[r].item() for m, r in zip(majority, rows, strict=True)) / len(rows)
    assert result.majority_agreement("model") == pytest.approx(expected)
    assert result.chance == pytest.approx(1 / 3)
    # the ceiling of any vote: the target label must be among the demonstrations
    present = [(result.demo_labels[r] == result.model_prediction[r]).any().item() for r in rows]
    assert result.coverage("model") == pytest.approx(sum(present) / len(rows))
    # similarity heads are picked on the selection split too, by their mean correlation there
    for kind, per_prompt in (("output", result.correlation_output), ("hidden", result.correlation_hidden)):
        on_selection = per_prompt[result.selection].nanmean(0).nan_to_num(-2.0)
        flat = int(on_selection.flatten().argmax())
        assert result.similarity_heads[kind] == (flat // 4, flat % 4)
        assert torch.allclose(result.correlation(kind), per_prompt[~result.selection].nanmean(0), equal_nan=True)
        assert 0 <= result.null_correlation[kind] <= 1


def test_deterministic_and_batch_size_independent(tiny_gqa, label_task, tmp_path):
    cfg = KernelRegressionConfig(n_shots=3, n_prompts=8, template=TEMPLATE, n_permutations=20, batch_size=8)
    a = kernel_regression(tiny_gqa, label_task, cfg)
    b = kernel_regression(tiny_gqa, label_task, cfg.replace(batch_size=3))
    assert torch.allclose(a.attention, b.attention, atol=1e-5)
    assert torch.equal(a.votes, b.votes) and a.best_head == b.best_head
    c = kernel_regression(tiny_gqa, label_task, cfg)
    assert results_equal(a, c)
    a.save(tmp_path / "k")
    assert results_equal(a, il.load_result(tmp_path / "k"))
    assert len(a.to_dataframe()) == 2 * 4 and a.to_png() is not None


def test_similarity_matrices_by_hand():
    probs = torch.tensor([[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    hidden = torch.tensor([[1.0, 0.0], [3.0, 0.0], [2.0, 3.0]])
    output, centred = similarity_matrices(probs, hidden)
    assert torch.allclose(output, torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    # mean (2, 1): centred rows (-1,-1), (1,-1), (0,2)
    assert centred[0, 1].item() == pytest.approx(0.0, abs=1e-6)
    assert centred[0, 2].item() == pytest.approx(-1 / math.sqrt(2), abs=1e-6)


def test_no_hook_leaks_when_the_forward_fails(tiny, label_task):
    batch = il.build_prompts(tiny, label_task, 3, 4, 0, TEMPLATE)
    tokens = batch.tokens.clone()
    tokens[0, -1] = 10_000  # outside the vocabulary: refused before any hook is attached
    bad = dataclasses.replace(batch, tokens=tokens)
    with pytest.raises(il.PromptError, match="another model's tokenizer"):
        demo_attention(tiny, bad)
    assert hooks.count_hooks(tiny) == 0


def test_bad_inputs_say_what_to_do(tiny):
    with pytest.raises(il.TaskError, match="classification-style"):
        kernel_regression(tiny, il.Task("t", tuple((w, w[::-1]) for w in WORDS)))
    with pytest.raises(il.ConfigError, match="span"):
        KernelRegressionConfig(span="sum")


@pytest.mark.smollm2
def test_smollm2_number_parity(smollm2):
    """A small real run: shapes, the label-restricted predictions and the held-out report."""
    cfg = KernelRegressionConfig(n_shots=4, n_prompts=8, n_permutations=20, similarity_layer=10)
    result = kernel_regression(smollm2, "number_parity", cfg)
    assert result.attention.shape == (8, 30, 9, 4)
    assert result.labels == ("even", "odd") and result.similarity_layer == 10
    # max over a span of attention probabilities: within (0, 1]
    assert float(result.attention.min()) > 0 and float(result.attention.max()) <= 1
    # an agreement is a count over 4 held-out prompts
    assert {round(float(v) * 4) / 4 for v in result.agreement().flatten()} <= {0, 0.25, 0.5, 0.75, 1.0}
    # Bhattacharyya coefficients lie in [0, 1]; an input is never its own demonstration
    assert float(result.similarity_output.max()) < 1 and float(result.similarity_output.min()) >= 0
    assert hooks.count_hooks(smollm2) == 0


def test_an_unknown_override_is_refused_naming_the_fields(tiny, label_task):
    with pytest.raises(
        il.ConfigError,
        match=r"KernelRegressionConfig has no field 'spans' \(did you mean 'span'\?\); valid fields: n_shots",
    ):
        kernel_regression(tiny, label_task, spans="mean")
    with pytest.raises(il.ConfigError, match="span must be one of 'max', 'mean'; got 'median'"):
        kernel_regression(tiny, label_task, span="median")
