"""Demonstration selection: a planted similarity picks the expected demonstrations."""

from __future__ import annotations

import math

import pytest
import torch

import icl_lens as il
from icl_lens.hypotheses.selection import SelectionConfig, demonstration_selection, split_queries

GROUPS = ("abcd", "efgh", "ijkl", "mnop")
LABELS = ("w", "x", "y", "z")
TEMPLATE = "{input}{output}\n"  # the zero-shot prompt ends on the input's last character


@pytest.fixture(scope="module")
def planted():
    """One attention-only layer whose residual at a prompt's last position is the last
    character's embedding: a one-hot of its group (four groups of four letters) plus a
    small planted score in dimension 0. Head 0's query is a constant and its key is that
    score, so its kernel ranks a demonstration by the highest score among its tokens.
    Values and outputs are zero: the attention changes nothing downstream."""
    model = il.tiny_model(n_layers=1, n_heads=2, d_model=16, d_head=8, attn_only=True, normalization_type=None)
    tok = model.tokenizer
    scores = (torch.rand(len(tok), generator=torch.Generator().manual_seed(0)) - 0.5) * 0.2
    params = dict(model.named_parameters())
    with torch.no_grad():
        for p in params.values():
            p.zero_()
        embed = params["tok_embed._original_component.weight"]
        embed[:, 0] = scores
        for g, chars in enumerate(GROUPS):
            for c in chars:
                embed[tok.convert_tokens_to_ids(c), 1 + g] = 1.0
        model.blocks[0].attn.q._original_component.bias[0] = math.sqrt(8)  # times 1/sqrt(d_head)
        model.blocks[0].attn.k._original_component.weight[0, 0] = 1.0
    pairs = tuple((p + c, LABELS[g]) for p in "qrst" for g, chars in enumerate(GROUPS) for c in chars)
    return model, scores, il.Task("planted", pairs, labels=LABELS)


def _group(text: str) -> int:
    return next(g for g, chars in enumerate(GROUPS) if text[-1] in chars)


def test_planted_similarity_picks_the_expected_demonstrations(planted, tmp_path):
    model, scores, task = planted
    config = SelectionConfig(ks=(2, 5), n_queries=8, template=TEMPLATE, kernel_head=(0, 0), layer=0)
    r = demonstration_selection(model, task, config, show_progress=False)
    assert len(r.queries) == 8 and len(r.pool) == 56 and not set(r.queries) & set(r.pool)
    # representation similarity: the centred cosine of the last characters' embeddings, by hand
    embed = model.W_E.detach()
    ids = [model.tokenizer.convert_tokens_to_ids(x[-1]) for x, _ in r.pool + r.queries]
    centred = torch.nn.functional.normalize(embed[ids] - embed[ids].mean(0), dim=-1)
    assert torch.allclose(r.similarity, centred[56:] @ centred[:56].T, atol=1e-5)
    for q, (x, _) in enumerate(r.queries):
        nearest = r.demonstrations("nearest", 5, q)
        farthest = r.demonstrations("farthest", 5, q)
        assert {_group(d) for d, _ in nearest} == {_group(x)}  # all from the query's own group
        assert _group(x) not in {_group(d) for d, _ in farthest}
        # the closest neighbour stands next to the query, and ends on the query's own letter
        assert nearest[-1][0][-1] == x[-1] and len(set(r.demonstrations("random", 5, q))) == 5

    # the kernel of head 0: the best planted score among a demonstration's tokens, the same for every query
    def kernel(pair):
        return max(float(scores[model.tokenizer.convert_tokens_to_ids(c)]) for c in pair[0] + pair[1])

    by_hand = torch.tensor([kernel(p) for p in r.pool])
    assert torch.allclose(r.kernel_similarity, by_hand.expand(8, -1), atol=1e-5)
    best = by_hand.sort(descending=True).values[:2]
    for q in range(8):  # ties (two pairs sharing their best letter) may go either way
        assert torch.equal(by_hand[r.selected[r.methods.index("kernel"), q, :2]], best)
    df = r.to_dataframe().set_index(["method", "k"])
    # the nearest demonstrations carry the query's label (its group), the farthest never do
    assert df.loc[("nearest", 5), "gold_label_share"] == 1.0 and df.loc[("farthest", 5), "gold_label_share"] == 0.0
    assert df.loc[("nearest", 5), "mean_similarity"] > df.loc[("random", 5), "mean_similarity"]
    assert set(df.columns) >= {"accuracy", "ci_low", "ci_high", "vs_random", "p_value", "vote_agreement"}
    assert r.plot() is not None and "kernel head L0H0" in r.summary()
    loaded = il.load_result(r.save(tmp_path / "selection"))
    assert torch.equal(loaded.selected, r.selected) and loaded.kernel_head == (0, 0)


def test_open_task_and_bad_input(tiny, word_task):
    r = demonstration_selection(
        tiny, word_task, ks=(1, 2), n_queries=5, methods=("nearest", "farthest"), template="{input}={output}\n"
    )
    assert r.methods == ("nearest", "random", "farthest") and r.vote_correct is None and r.label_share is None
    assert r.correct.shape == (3, 2, 5) and "vote_accuracy" not in r.to_dataframe()
    with pytest.raises(il.ConfigError, match="kernel_head"):
        demonstration_selection(tiny, word_task, ks=(1,), n_queries=5, template="{input}={output}\n")
    with pytest.raises(il.ConfigError, match="method"):
        SelectionConfig(methods=("closest",))
    with pytest.raises(il.ConfigError, match="fewer queries"):
        demonstration_selection(tiny, word_task, ks=(30,), n_queries=5, methods=("random",))
    queries, pool = split_queries(word_task, 5, 10, seed=0)
    assert len(queries) == 5 and len(pool) == 10 and not set(queries.pairs) & set(pool.pairs)
