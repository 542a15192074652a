"""Folds and cross-validation: every pair of a small task is a test query exactly once.

A 60-pair task file is too small for 50 held-out test queries (its 20% test part has 12),
so ``cv_folds="auto"`` cross-validates it with 5 folds; the folds are checked here against
plain recomputations on each fold's own parts.
"""

from __future__ import annotations

import json

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.results import results_equal
from icl_lens.core.stats import proportion_interval
from icl_lens.vectors.common import fold_parts, held_out_test_size, resolve_folds
from icl_lens.vectors.function_vectors import FunctionVectorConfig, function_vector
from icl_lens.vectors.implant import ImplantConfig, evaluate_implant
from icl_lens.vectors.task_vectors import TaskVectorConfig, task_vector

TEMPLATE = "{input}={output};"
FV = FunctionVectorConfig(
    n_shots=3, n_mean_prompts=4, max_candidates=4, n_aie_prompts=3, template=TEMPLATE, top_k=2, filter_correct=False
)
TV = TaskVectorConfig(n_shots=3, n_prompts=3, n_dummy=1, n_dev=6, template=TEMPLATE, batch_size=8)
IMPLANT = ImplantConfig(n_dev=6, specificity_tasks=(), n_natural=0, scale=8.0, batch_size=8)


@pytest.fixture(scope="module")
def task60(tmp_path_factory):
    """A user's 60-pair task file (two characters -> the second one)."""
    pairs = [{"input": a + b, "output": b} for a in "abcdefghijkl" for b in "vwxyz"]
    path = tmp_path_factory.mktemp("tasks") / "pairs60.json"
    path.write_text(json.dumps(pairs))
    return il.load_task(str(path))


@pytest.fixture(scope="module")
def fv(tiny_gqa, task60):
    return function_vector(tiny_gqa, task60, FV)


@pytest.fixture(scope="module")
def tv(tiny_gqa, task60):
    return task_vector(tiny_gqa, task60, TV)


def test_folds_cover_every_pair_once_and_keep_parts_apart(task60):
    parts = fold_parts(task60, (0.6, 0.2, 0.2), 0, 5)
    tested = [x for _, _, test in parts for x in test.inputs]
    assert sorted(tested) == sorted(task60.inputs)  # every pair a test query, once
    for train, dev, test in parts:
        assert len(test) == 12 and len(train) == 36 and len(dev) == 12
        assert not set(train.inputs) & set(test.inputs) and not set(dev.inputs) & set(test.inputs)
        assert not set(train.inputs) & set(dev.inputs)
    assert fold_parts(task60, (0.6, 0.2, 0.2), 0, 5) == parts  # seeded
    assert fold_parts(task60, (0.6, 0.2, 0.2), 1, 5) != parts
    assert fold_parts(task60, (0.6, 0.2, 0.2), 0, 1) == [task60.split((0.6, 0.2, 0.2), seed=0)]


def test_auto_cross_validates_below_50_test_queries(task60):
    assert held_out_test_size(250, (0.6, 0.2, 0.2)) == 50 and held_out_test_size(240, (0.6, 0.2, 0.2)) == 48
    big = il.Task(name="big", pairs=tuple((f"w{i}", "x") for i in range(250)))
    small = il.Task(name="small", pairs=tuple((f"w{i}", "x") for i in range(240)))
    assert resolve_folds(big, (0.6, 0.2, 0.2), "auto") == 1
    assert resolve_folds(small, (0.6, 0.2, 0.2), "auto") == 5
    assert resolve_folds(task60, (0.6, 0.2, 0.2), 1) == 1 and resolve_folds(task60, (0.6, 0.2, 0.2), 3) == 3
    with pytest.raises(ConfigError, match="only 60 pairs"):
        resolve_folds(task60, (0.6, 0.2, 0.2), 61)
    for bad in (0, -2, "all", True, 2.5):
        with pytest.raises(ConfigError, match="cv_folds must be"):
            TaskVectorConfig(cv_folds=bad)


def test_task_vector_tests_all_60_pairs_with_intervals(tiny_gqa, task60, tv):
    assert tv.n_test == 60 and tv.origin.cv_folds == 5 and tv.origin.fold is None and len(tv.folds) == 5
    assert sorted(tv.queries) == sorted(task60.inputs)
    df = tv.to_dataframe()
    assert {"ci_low", "ci_high", "n_test"} <= set(df.columns) and (df.n_test == 60).all()
    for row, k in zip(df.itertuples(), tv.test_correct.sum(-1).tolist(), strict=True):
        assert (row.ci_low, row.ci_high) == pytest.approx(proportion_interval(int(k), 60))
    parts = fold_parts(task60, TV.split, TV.split_seed, 5)
    for f, (fold, (train, dev, test)) in enumerate(zip(tv.folds, parts, strict=True)):
        assert fold.origin.fold == f and set(fold.queries) == set(test.inputs)
        assert fold.origin.n_train == len(train) == 36
        # the layer is chosen on the fold's own dev part, never on its test queries
        assert fold.best_layer == fold.layers[int(torch.argmax(fold.dev_accuracy))]
        assert fold.n_dev == min(TV.n_dev, len(dev)) == 6
    assert torch.equal(tv.correct, torch.cat([f.correct for f in tv.folds]))
    assert tv.fold_layers == tuple(f.best_layer for f in tv.folds)
    assert "5-fold cross-validated" in tv.summary() and "60 test queries" in tv.summary()
    assert "[" in tv.summary()  # every accuracy with its interval


def test_each_fold_vector_is_read_from_its_own_train_part(tiny_gqa, task60, fv):
    assert len(fv.folds) == 5 and fv.origin.fold is None
    parts = fold_parts(task60, FV.split, FV.split_seed, 5)
    names = [hooks.z(l) for l in range(hooks.spec(tiny_gqa).n_layers)]
    for f in (0, 3):
        train = parts[f][0]
        batch = il.build_prompts(tiny_gqa, train, 3, 4, 0, TEMPLATE)
        assert not {x for demos in batch.demos for x, _ in demos} & set(parts[f][2].inputs)
        with torch.no_grad():
            _, cache = hooks.run_with_cache(tiny_gqa, batch.tokens, names, batch.attention_mask)
        rows = torch.arange(len(batch))
        z = torch.stack([cache[n][rows, batch.last_pos] for n in names], 1)
        torch.testing.assert_close(fv.folds[f].mean_z, z.mean(0), atol=1e-6, rtol=1e-5)
    # the pooled result averages the folds
    torch.testing.assert_close(fv.aie, torch.stack([f.aie for f in fv.folds]).mean(0), atol=1e-6, rtol=1e-5)
    assert fv.n_candidates == sum(f.n_candidates for f in fv.folds)
    # a number of heads comes from each fold's own ranking, a list of heads is the same everywhere
    top1 = fv.with_heads(1)
    assert [list(f.heads) for f in top1.folds] == [f.ranking()[:1] for f in fv.folds]
    chosen = fv.with_heads([(1, 2)])
    assert all(f.heads == ((1, 2),) for f in chosen.folds)
    torch.testing.assert_close(chosen.folds[2].vector, fv.folds[2].head_outputs[1, 2])


def test_implant_tests_all_60_pairs_each_with_its_folds_vector(tiny_gqa, task60, fv):
    ev = evaluate_implant(tiny_gqa, task60, fv, IMPLANT)
    assert ev.n_test == 60 and ev.n_folds == 5 and sorted(ev.queries) == sorted(task60.inputs)
    df = ev.to_dataframe()
    assert {"ci_low", "ci_high"} <= set(df.columns) and (df.n_test == 60).all()
    assert (df.ci_low <= df.accuracy).all() and (df.accuracy <= df.ci_high).all()
    # fold 2 alone, evaluated with its own vector: the same queries and outcomes as in the pooled result
    one = evaluate_implant(tiny_gqa, task60, fv.folds[2], IMPLANT)
    assert one.n_test == 12 and one.n_folds == 1 and one.layer == ev.fold_layers[2]
    assert torch.equal(ev.correct[:, 24:36], one.correct) and ev.queries[24:36] == one.queries
    assert "5-fold cross-validated" in ev.summary()
    # deterministic, and the batch size changes nothing
    again = evaluate_implant(tiny_gqa, task60, fv, IMPLANT.replace(batch_size=5))
    assert torch.equal(again.correct, ev.correct) and again.fold_layers == ev.fold_layers
    assert ev.comparisons().equals(again.comparisons())


def test_cross_validated_results_save_and_load(tv, fv, tmp_path):
    for name, result in (("tv", tv), ("fv", fv)):
        loaded = il.load_result(result.save(tmp_path / name))
        assert results_equal(loaded, result) and len(loaded.folds) == 5
