"""Bad input, class "types": seeds, counts, shot lists, head lists and caches of the wrong kind.

Every config is a frozen dataclass whose fields are checked against their annotations
before its own checks (``icl_lens.core.validate.check_fields``), so the tests below walk
every config icl_lens has; functions that take such arguments directly are tried one by one.
"""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.lazy import import_everything
from icl_lens.core.registry import _REGISTRY
from icl_lens.core.results import Config
from icl_lens.core.validate import _hints

BAD_SEEDS = ["abc", None, 1.0, -1, True]
BAD_COUNTS = [2.5, "3", None, True]


def _configs() -> list[type[Config]]:
    import_everything()
    out = []
    for cls in _REGISTRY.values():
        if isinstance(cls, type) and issubclass(cls, Config) and cls is not Config:
            try:
                cls()
            except il.IclLensError:
                continue  # a config with required fields (tested where it is built)
            out.append(cls)
    return sorted(out, key=lambda c: c.__name__)


CONFIGS = _configs()


def test_every_config_is_checked():
    assert len(CONFIGS) >= 12
    assert {"IclEvalConfig", "FunctionVectorConfig", "TaskVectorConfig", "InductionConfig"} <= {
        c.__name__ for c in CONFIGS
    }


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_seed_field_refuses_a_seed_of_the_wrong_type(cls):
    fields = [f.name for f in dataclasses.fields(cls) if "seed" in f.name and _hints(cls).get(f.name) is int]
    for name in fields:
        for bad in ("abc", None, 1.0, True):
            with pytest.raises(il.ConfigError, match=name):
                cls(**{name: bad})
        # the same check through resolve, as every analysis calls it
        with pytest.raises(il.ConfigError, match="write 1"):
            cls.resolve(None, {name: 1.0})


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_int_and_int_list_field_refuses_floats_strings_and_bare_values(cls):
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints.get(f.name)
        if hint is int:
            for bad in (2.5, "3", True):
                with pytest.raises(il.ConfigError, match=f.name):
                    cls(**{f.name: bad})
        elif hint == tuple[int, ...]:
            for bad in (5, (0, 1.5), "0,5"):
                with pytest.raises(il.ConfigError, match=f.name):
                    cls(**{f.name: bad})


def test_a_float_seed_does_not_silently_differ_from_an_int_seed(tiny, word_task):
    with pytest.raises(il.PromptError, match="seed must be an integer, got 1.0"):
        il.build_prompts(tiny, word_task, n_shots=2, n_prompts=3, seed=1.0)
    with pytest.raises(il.ConfigError, match="write 1"):
        il.evaluate_icl(tiny, word_task, shots=(0, 1), n_prompts=2, seed=1.0)


@pytest.mark.parametrize("bad", BAD_SEEDS)
def test_functions_with_a_seed_argument_refuse_bad_seeds(tiny, word_task, bad):
    calls = {
        "build_prompts": lambda: il.build_prompts(tiny, word_task, n_shots=2, n_prompts=2, seed=bad),
        "Task.split": lambda: word_task.split((0.5, 0.5), seed=bad),
        "Task.subset": lambda: word_task.subset(3, seed=bad),
        "tiny_model": lambda: il.tiny_model(seed=bad),
        "ablate_heads": lambda: il.ablate_heads(tiny, [(0, 1)], seed=bad).__enter__(),
        "evaluate_icl": lambda: il.evaluate_icl(tiny, word_task, shots=(0, 1), n_prompts=2, seed=bad),
        "find_induction_heads": lambda: il.find_induction_heads(tiny, seed=bad),
        "function_vector": lambda: il.function_vector(tiny, word_task, seed=bad),
        "task_vector": lambda: il.task_vector(tiny, word_task, seed=bad),
    }
    for name, call in calls.items():
        with pytest.raises(il.IclLensError, match="seed") as info:
            call()
        assert "Traceback" not in str(info.value), name
    assert hooks.count_hooks(tiny) == 0


@pytest.mark.parametrize("bad", BAD_COUNTS)
def test_counts_given_as_floats_or_strings_are_refused(tiny, word_task, bad):
    calls = {
        "build_prompts n_prompts": lambda: il.build_prompts(tiny, word_task, n_shots=2, n_prompts=bad),
        "build_prompts n_shots": lambda: il.build_prompts(tiny, word_task, n_shots=bad if bad is not None else 2.0),
        "evaluate_icl n_prompts": lambda: il.evaluate_icl(tiny, word_task, n_prompts=bad),
        "find_induction_heads n_sequences": lambda: il.find_induction_heads(tiny, n_sequences=bad),
        "Task.subset": lambda: word_task.subset(bad),
        "tiny_model n_layers": lambda: il.tiny_model(n_layers=bad),
    }
    for name, call in calls.items():
        with pytest.raises(il.IclLensError) as info:
            call()
        assert any(k in str(info.value) for k in ("integer", "n_")), (name, str(info.value))


@pytest.mark.parametrize("shots", [5, (0, 1.5), "0 5", (0, -1), ()])
def test_shot_lists_of_the_wrong_kind_are_refused(tiny, word_task, shots):
    with pytest.raises(il.ConfigError, match="shots"):
        il.evaluate_icl(tiny, word_task, shots=shots, n_prompts=2)
    with pytest.raises(il.ConfigError, match="shots"):
        il.IclEvalConfig(shots=shots)


@pytest.fixture(scope="module")
def batch(tiny, word_task):
    return il.build_prompts(tiny, word_task, n_shots=2, n_prompts=2)


@pytest.mark.parametrize("heads", [3, [], [1, 2], [(0, 1, 2)], [(0, 9)], [("0", 1)], [(0.0, 1)]])
def test_head_lists_of_the_wrong_kind_are_refused_everywhere(tiny, batch, heads):
    import icl_lens.patching as patching

    source = torch.zeros(2, 4, 16)  # [n_layers, n_heads, d_head] of the tiny model
    calls = {
        # an empty list is ablate_heads's baseline (nothing ablated), documented as such
        **({} if heads == [] else {"ablate_heads": lambda: il.ablate_heads(tiny, heads).__enter__()}),
        "head_sweep": lambda: patching.head_sweep(tiny, batch, source, heads=heads),
        "attention_view": lambda: il.attention_view(tiny, heads),
        "confirm_induction_heads": lambda: il.confirm_induction_heads(tiny, heads, ks=(1,)),
    }
    for name, call in calls.items():
        with pytest.raises(il.ConfigError, match=r"head|\(layer, head\)") as info:
            call()
        assert "Traceback" not in str(info.value), name
    assert hooks.count_hooks(tiny) == 0


@pytest.fixture(scope="module")
def fv(tiny, word_task):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a random model does not do the task: fine for this check
        return il.function_vector(tiny, word_task, n_mean_prompts=2, max_candidates=4, n_aie_prompts=2, n_shots=2)


@pytest.mark.parametrize("heads", [0, [], [(0,)]])
def test_function_vector_with_heads_refuses_bad_head_lists(fv, heads):
    with pytest.raises(il.ConfigError, match="heads"):
        fv.with_heads(heads)
    assert fv.with_heads(2).heads == tuple(fv.ranking()[:2])


@pytest.mark.parametrize("drop", [0, 1, "all"])
def test_a_cache_lacking_a_layer_says_which(tiny, batch, drop):
    _, cache = hooks.run_with_cache(tiny, batch.tokens, [hooks.z(0), hooks.z(1)], batch.attention_mask)
    names = [hooks.z(0), hooks.z(1)] if drop == "all" else [hooks.z(drop)]
    for name in names:
        del cache[name]
    with pytest.raises(il.ConfigError, match=f"lacks {names[0]}"):
        il.head_sweep(tiny, batch, cache, positions="all")
