"""Steering along layers: the fast pair of runs equals full forwards with a hand-written hook."""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.patching.steering import (
    baseline_and_implanted_logprobs,
    baseline_and_implants_logprobs,
    implanted_logprobs,
    layer_sweep,
    layer_sweep_and_logprobs,
)

TASK = il.Task(
    name="varied",
    pairs=(("a", "b"), ("bcd", "e"), ("fg", "h"), ("ijkl", "m"), ("n", "o"), ("pqr", "s"), ("tu", "v"), ("wx", "y")),
)


def by_hand(model, batch, vector, layer, operation, scale, i):
    """Prompt ``i`` alone, unpadded, with the vector put in after block ``layer`` by a hook written here."""
    keep = batch.attention_mask[i].bool()
    tokens = batch.tokens[i][keep][None]
    v = vector[i] if vector.dim() == 2 else vector

    def put(resid, hook):
        resid = resid.clone()
        resid[0, -1] = v if operation == "replace" else resid[0, -1] + scale * v
        return resid

    fwd = [] if layer is None else [(hooks.resid_post(layer), put)]
    with torch.no_grad():
        logits = hooks.forward(model, tokens, None, fwd)
    return torch.log_softmax(logits[0, -1].float(), -1)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("operation", ["add", "replace"])
def test_fast_pair_matches_full_forwards(tiny_rotary_gqa, side, operation):
    model = tiny_rotary_gqa
    batch = il.build_prompts(model, TASK, 2, 5, seed=3, template="hendel", padding_side=side)
    assert not bool(batch.attention_mask.all()), "the test needs padded prompts"
    d_model = hooks.spec(model).d_model
    shared = torch.randn(d_model, generator=torch.Generator().manual_seed(1))
    per_prompt = torch.randn(len(batch), d_model, generator=torch.Generator().manual_seed(2))
    for vector in (shared, per_prompt):
        for layer in (0, 1):
            kw = dict(vector=vector, layer=layer, operation=operation, scale=3.0)
            base_e = torch.stack([by_hand(model, batch, vector, None, operation, 3.0, i) for i in range(len(batch))])
            put_e = torch.stack([by_hand(model, batch, vector, layer, operation, 3.0, i) for i in range(len(batch))])
            for method, batch_size in (("fast", 2), ("fast", None), ("plain", 2)):
                base, put = baseline_and_implanted_logprobs(model, batch, method=method, batch_size=batch_size, **kw)
                torch.testing.assert_close(base, base_e, atol=2e-5, rtol=0)
                torch.testing.assert_close(put, put_e, atol=2e-5, rtol=0)
            torch.testing.assert_close(implanted_logprobs(model, batch, batch_size=3, **kw), put_e, atol=2e-5, rtol=0)
            assert float((put_e - base_e).abs().max()) > 1e-2  # the vector matters
    assert hooks.count_hooks(model) == 0


def test_layer_sweep_is_top1_of_the_implanted_run(tiny_gqa):
    batch = il.build_prompts(tiny_gqa, TASK, 0, 6, seed=0, template="hendel", kind="zero_shot")
    s = hooks.spec(tiny_gqa)
    vectors = torch.randn(s.n_layers, s.d_model, generator=torch.Generator().manual_seed(3))
    for operation in ("add", "replace"):
        fast = layer_sweep(tiny_gqa, batch, vectors=vectors, operation=operation, layers=[1, 0], scale=4.0)
        plain = layer_sweep(
            tiny_gqa, batch, vectors=vectors, operation=operation, layers=[1, 0], scale=4.0, method="plain"
        )
        assert torch.equal(fast, plain) and fast.shape == (2, len(batch))
        for row, layer in enumerate([1, 0]):
            lp = implanted_logprobs(tiny_gqa, batch, vector=vectors[layer], layer=layer, operation=operation, scale=4.0)
            assert torch.equal(fast[row], lp.argmax(-1) == batch.answer_ids)
    with pytest.raises(ConfigError, match="operation must be one of 'add', 'replace'"):
        layer_sweep(tiny_gqa, batch, vectors=vectors, operation="sum", layers=[0])
    for layer in (-1, s.n_layers):
        with pytest.raises(ConfigError, match="out of range"):
            baseline_and_implanted_logprobs(tiny_gqa, batch, vector=vectors[0], layer=layer, operation="add")
    with pytest.raises(ConfigError, match="2 vectors for 6 prompts"):
        implanted_logprobs(tiny_gqa, batch, vector=vectors, layer=0, operation="add")


def test_several_implants_share_one_pass_and_match_one_at_a_time(tiny_rotary_gqa):
    model = tiny_rotary_gqa
    batch = il.build_prompts(model, TASK, 2, 5, seed=4, template="hendel")
    d_model = hooks.spec(model).d_model
    shared = torch.randn(d_model, generator=torch.Generator().manual_seed(5))
    per_prompt = torch.randn(len(batch), d_model, generator=torch.Generator().manual_seed(6))
    implants = [(shared, "add"), (per_prompt, "replace")]
    for method in ("fast", "plain"):
        kw = dict(layer=1, scale=2.0, batch_size=2, method=method)
        base, puts = baseline_and_implants_logprobs(model, batch, implants=implants, **kw)
        assert len(puts) == 2
        for (vector, operation), put in zip(implants, puts, strict=True):
            base_1, put_1 = baseline_and_implanted_logprobs(model, batch, vector=vector, operation=operation, **kw)
            torch.testing.assert_close(base, base_1, atol=2e-5, rtol=0)
            torch.testing.assert_close(put, put_1, atol=2e-5, rtol=0)
        assert float((puts[0] - puts[1]).abs().max()) > 1e-2  # two different implants
    with pytest.raises(ConfigError, match="operation must be one of"):
        baseline_and_implants_logprobs(model, batch, implants=[(shared, "sum")], layer=0)


@pytest.mark.parametrize("method", ["fast", "plain"])
@pytest.mark.parametrize("operation", ["add", "replace"])
def test_the_sweeps_pass_also_gives_one_layers_distributions(tiny_rotary_gqa, method, operation):
    """The implant evaluation reads the zero-shot pair from the test sweep's own pass: the
    baseline and one layer's log-probabilities, per prompt as a hand-written hook gives them,
    for a layer in the sweep and one outside it, with one vector per prompt."""
    model = tiny_rotary_gqa
    batch = il.build_prompts(model, TASK, n_shots=1, n_prompts=5, seed=3, template="hendel")
    n_layers, d_model = hooks.spec(model).n_layers, hooks.spec(model).d_model
    vectors = torch.randn(len(batch), n_layers, d_model, generator=torch.Generator().manual_seed(0))
    kw = dict(vectors=vectors, operation=operation, scale=2.0, batch_size=2, method=method)
    for layers, at in (([0, 1, 2], 1), ([0, 2], 1)):
        correct, base, put = layer_sweep_and_logprobs(model, batch, layers=layers, at=at, **kw)
        assert torch.equal(correct, layer_sweep(model, batch, layers=layers, **kw))
        assert correct.shape == (len(layers), len(batch))
        for i in range(len(batch)):
            torch.testing.assert_close(
                base[i], by_hand(model, batch, vectors[:, at], None, operation, 2.0, i), atol=1e-5, rtol=0
            )
            torch.testing.assert_close(
                put[i], by_hand(model, batch, vectors[:, at], at, operation, 2.0, i), atol=1e-5, rtol=0
            )
        assert float((put - base).abs().max()) > 1e-2  # the vector matters
    with pytest.raises(ConfigError, match="layers must be in"):
        layer_sweep_and_logprobs(model, batch, layers=[0], at=n_layers, **kw)
