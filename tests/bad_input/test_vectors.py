"""Bad input, class "vectors": a vector from other weights, and raw tensors of the wrong width.

A vector carries the identity of the weights it was read from (parameter shapes and
sampled weights, ``icl_lens.core.identity``), so a model with the same name but other
weights refuses it. Entry points: ``evaluate_implant`` (function and task vectors, also as
``other_vectors``), ``VectorOrigin.check_model``, ``add_to_resid``, ``replace_resid``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks

SMALL = dict(n_prompts=2, n_dev=2, n_test=4, n_dummy=1, n_shots=2, layers=(0, 1))


def _tiny(**changes):
    kw = dict(n_layers=2, n_heads=4, d_model=64, d_head=16, attn_only=True, seed=0) | changes
    return il.tiny_model(**kw)


@pytest.fixture(scope="module")
def vectors(word_task):
    model = _tiny()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model does not do the task; only identity matters here
        tv = il.task_vector(model, word_task, **SMALL)
        fv = il.function_vector(model, word_task, n_mean_prompts=2, max_candidates=4, n_aie_prompts=2, n_shots=2)
    return model, tv, fv


def _perturbed():
    model = _tiny()
    with torch.no_grad():
        next(model.parameters()).mul_(1.5)  # a fine-tuned copy: same name, other weights
    return model


OTHER_MODELS = {
    "other d_head": lambda: _tiny(d_head=32),
    "rotary": lambda: _tiny(positional_embedding_type="rotary"),
    "other weights": _perturbed,
}


def test_the_other_models_really_share_the_name(vectors):
    model, _, _ = vectors
    for make in OTHER_MODELS.values():
        other = make()
        assert il.model_spec(other).name == il.model_spec(model).name
        assert (il.model_spec(other).n_layers, il.model_spec(other).d_model) == (2, 64)


@pytest.mark.parametrize("other", list(OTHER_MODELS))
def test_a_vector_is_refused_by_a_model_with_the_same_name_and_other_weights(vectors, word_task, other):
    model, tv, fv = vectors
    target = OTHER_MODELS[other]()
    for vector in (tv, fv):
        with pytest.raises(il.VectorMismatchError, match="other weights"):
            vector.origin.check_model(target)
        with pytest.raises(il.VectorMismatchError, match="other weights"):
            il.evaluate_implant(target, word_task, vector, n_test=2, n_dev=2)
    with pytest.raises(il.VectorMismatchError, match="other weights"):
        il.evaluate_implant(model, word_task, tv, other_vectors=[_foreign(target, word_task)], n_test=2, n_dev=2)
    assert hooks.count_hooks(target) == 0


def _foreign(model, task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return il.task_vector(model, task, **SMALL)


def test_the_same_weights_loaded_again_are_accepted(vectors, tmp_path):
    model, tv, fv = vectors
    again = _tiny()
    tv.origin.check_model(again)
    fv.origin.check_model(again)
    # and a vector saved and loaded keeps its identity
    assert il.load_result(tv.save(tmp_path / "tv")).origin == tv.origin


@pytest.mark.parametrize(
    "vector",
    [torch.zeros(65), torch.zeros(2, 63), torch.zeros(2, 3, 64), torch.zeros(64, dtype=torch.long), [0.0] * 64],
    ids=["65", "2x63", "3d", "int", "list"],
)
def test_raw_tensors_of_the_wrong_width_or_kind_are_refused(tiny, word_task, vector):
    batch = il.build_prompts(tiny, word_task, n_shots=2, n_prompts=2)
    for name, call in {
        "add_to_resid": lambda: il.add_to_resid(tiny, 0, vector, positions=batch.last_pos),
        "replace_resid": lambda: il.replace_resid(tiny, 0, vector, positions=batch.last_pos),
    }.items():
        with pytest.raises(il.ConfigError, match="vector|values") as info:
            with call():
                pass
        assert "64" in str(info.value) or "tensor" in str(info.value), name
    assert hooks.count_hooks(tiny) == 0


@pytest.mark.parametrize("layer", [2, -1, 1.0])
def test_a_layer_outside_the_model_is_refused(tiny, layer):
    with pytest.raises(il.ConfigError, match="layer"):
        with il.add_to_resid(tiny, layer, torch.zeros(64), positions="last"):
            pass
