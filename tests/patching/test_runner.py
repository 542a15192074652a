"""The runner's policy, the same for sweeps, attribution and steering: ``"fast"`` raises when
the fast engine's control row disagrees, ``"auto"`` warns once and recomputes only the
chunks of prompts where it disagrees on the plain path, ``"plain"`` never uses the engine.

The disagreement is real: a PyTorch forward hook on one block's attention module (not a
TransformerLens hook point, so the engine cannot see it) shifts the attention output of
every prompt that contains one chosen token. The model's real forward includes the shift;
the engine, which recomputes the answer position from the blocks' parts, does not. Only
the chunk holding those prompts disagrees.
"""

from __future__ import annotations

import contextlib
import warnings

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError, FastPathMismatchError
from icl_lens.patching import attribution_head_sweep, attribution_resid_sweep, head_sweep, resid_sweep
from icl_lens.patching.runner import ChunkRunner
from icl_lens.patching.steering import baseline_and_implanted_logprobs

TASK = il.Task(
    name="varied",
    pairs=(("a", "b"), ("bcd", "e"), ("fg", "h"), ("ijkl", "m"), ("n", "o"), ("pqr", "s"), ("tu", "v"), ("wx", "y")),
)
CHUNK = 2  # prompts per chunk: rows 0-1 and rows 2-3


@pytest.fixture(scope="module")
def model():
    """Its own model: the tests attach module hooks to it."""
    return il.tiny_model(
        n_layers=3,
        n_heads=4,
        n_kv_heads=2,
        d_model=64,
        d_head=16,
        attn_only=False,
        normalization_type="RMS",
        positional_embedding_type="rotary",
        seed=4,
    )


def prompts(model, kind="shuffled", n_shots=2):
    kw = dict(n_shots=n_shots, n_prompts=2 * CHUNK, seed=5, template="hendel")
    target = il.build_prompts(model, TASK, kind=kind, **kw)
    source = il.build_prompts(model, TASK, **kw) if kind != "clean" else None
    return target, source


def marker(target):
    """A token that only the second chunk's prompts hold (padding included)."""
    only_second = set(target.tokens[CHUNK:].flatten().tolist()) - set(target.tokens[:CHUNK].flatten().tolist())
    assert only_second, "the test needs a token that only the second chunk holds"
    return min(only_second)


@contextlib.contextmanager
def hidden_shift(model, token):
    """Shift block 1's attention output for every prompt holding ``token``; yield the forwards' row sets."""
    forwards: list[frozenset] = []
    hit: dict[str, torch.Tensor] = {}

    def remember(module, args, kwargs):
        tokens = args[0]
        hit["rows"] = (tokens == token).any(-1)
        forwards.append(frozenset(tuple(row) for row in tokens.tolist()))

    def shift(module, inputs, output):
        rows = hit["rows"].to(output[0].device, output[0].dtype)
        return (output[0] + 0.5 * rows[:, None, None], *output[1:])

    handles = [
        model.register_forward_pre_hook(remember, with_kwargs=True),
        model.blocks[1].attn.register_forward_hook(shift),
    ]
    try:
        yield forwards
    finally:
        for h in handles:
            h.remove()


def chunk_rows(target, i):
    return frozenset(tuple(row) for row in target.tokens[i * CHUNK : (i + 1) * CHUNK].tolist())


def run_auto(fn):
    """``fn()`` under method='auto', with the RuntimeWarnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_sweeps_fall_back_for_the_disagreeing_chunk_only(model):
    target, source = prompts(model)
    kw = dict(metric="logprob", batch_size=CHUNK)
    clean_model = head_sweep(model, target, source, method="fast", **kw)
    with hidden_shift(model, marker(target)) as forwards:
        auto, warned = run_auto(lambda: head_sweep(model, target, source, method="auto", **kw))
        auto_forwards = list(forwards)
        plain = head_sweep(model, target, source, method="plain", **kw)
        with pytest.raises(FastPathMismatchError, match="control row differs") as err:
            head_sweep(model, target, source, method="fast", **kw)
        resid_auto, resid_warned = run_auto(lambda: resid_sweep(model, target, source, hook="resid_post", **kw))
        resid_plain = resid_sweep(model, target, source, hook="resid_post", method="plain", **kw)
    assert err.value.difference > 1e-2 and isinstance(err.value, il.ModelContractError)
    assert auto.method == resid_auto.method == "fast+plain" and plain.method == "plain"
    assert len(warned) == 1 and "control row" in str(warned[0].message) and len(resid_warned) == 1
    torch.testing.assert_close(auto.patched, plain.patched, atol=2e-5, rtol=0)
    torch.testing.assert_close(auto.baseline, plain.baseline, atol=2e-5, rtol=0)
    torch.testing.assert_close(resid_auto.patched, resid_plain.patched, atol=2e-5, rtol=0)
    # The shift acts on the second chunk only: the first agrees with the unshifted model.
    torch.testing.assert_close(auto.patched[..., :CHUNK], clean_model.patched[..., :CHUNK], atol=2e-5, rtol=0)
    assert float((auto.patched[..., CHUNK:] - clean_model.patched[..., CHUNK:]).abs().max()) > 1e-2
    # The first chunk ran once (the fast engine's prefix pass); only the second was run again, plainly.
    first, second = chunk_rows(target, 0), chunk_rows(target, 1)
    assert sum(f == first for f in auto_forwards) == 1
    assert sum(f == second for f in auto_forwards) > 2
    assert hooks.count_hooks(model) == 0


def test_attribution_auto_falls_back_instead_of_raising(model):
    target, source = prompts(model)
    kw = dict(metric="logprob", batch_size=CHUNK)
    with hidden_shift(model, marker(target)) as forwards:
        auto, warned = run_auto(lambda: attribution_head_sweep(model, target, source, method="auto", **kw))
        auto_forwards = list(forwards)
        plain = attribution_head_sweep(model, target, source, method="plain", **kw)
        with pytest.raises(FastPathMismatchError):
            attribution_head_sweep(model, target, source, method="fast", **kw)
        resid_auto, _ = run_auto(lambda: attribution_resid_sweep(model, target, source, hook="resid_post", **kw))
        resid_plain = attribution_resid_sweep(model, target, source, hook="resid_post", method="plain", **kw)
    assert len(warned) == 1
    torch.testing.assert_close(auto.patched, plain.patched, atol=2e-5, rtol=0)
    torch.testing.assert_close(resid_auto.patched, resid_plain.patched, atol=2e-5, rtol=0)
    assert sum(f == chunk_rows(target, 0) for f in auto_forwards) == 1
    assert sum(f == chunk_rows(target, 1) for f in auto_forwards) == 2  # fast prefix pass, then one full backward


def test_steering_auto_falls_back_for_the_disagreeing_chunk_only(model):
    target, _ = prompts(model, kind="zero_shot", n_shots=0)
    vector = torch.randn(hooks.spec(model).d_model, generator=torch.Generator().manual_seed(0))
    kw = dict(vector=vector, layer=0, operation="add", scale=2.0, batch_size=CHUNK)
    unshifted = baseline_and_implanted_logprobs(model, target, method="fast", **kw)
    with hidden_shift(model, marker(target)):
        (base, put), warned = run_auto(lambda: baseline_and_implanted_logprobs(model, target, method="auto", **kw))
        plain_base, plain_put = baseline_and_implanted_logprobs(model, target, method="plain", **kw)
        with pytest.raises(FastPathMismatchError):
            baseline_and_implanted_logprobs(model, target, method="fast", **kw)
    assert len(warned) == 1
    torch.testing.assert_close(base, plain_base, atol=2e-5, rtol=0)
    torch.testing.assert_close(put, plain_put, atol=2e-5, rtol=0)
    torch.testing.assert_close(put[:CHUNK], unshifted[1][:CHUNK], atol=2e-5, rtol=0)
    assert float((put[CHUNK:] - unshifted[1][CHUNK:]).abs().max()) > 1e-2


def test_method_fast_where_the_engine_does_not_apply(model, tiny):
    target, source = prompts(model)
    with pytest.raises(ConfigError, match="positions='last'"):
        attribution_head_sweep(model, target, source, positions="each", method="fast")
    with pytest.raises(ConfigError, match="method must be one of 'auto', 'fast', 'plain'"):
        head_sweep(model, target, source, method="quick")
    # After the last block the position engine steers too (it once refused): fast equals plain.
    vector = torch.randn(64, generator=torch.Generator().manual_seed(1))
    kw = dict(vector=vector, layer=2, operation="add", scale=3.0)
    (base, put), warned = run_auto(lambda: baseline_and_implanted_logprobs(model, target, method="fast", **kw))
    assert not warned
    plain_base, plain_put = baseline_and_implanted_logprobs(model, target, method="plain", **kw)
    torch.testing.assert_close(base, plain_base, atol=2e-5, rtol=0)
    torch.testing.assert_close(put, plain_put, atol=2e-5, rtol=0)
    assert float((put - base).abs().max()) > 1e-2


def test_runner_reports_the_paths_that_ran(model):
    def fails(engine):
        raise FastPathMismatchError("control row off", difference=1.0)

    runner = ChunkRunner(model, "auto")
    assert runner.run(lambda engine: "fast", lambda: "plain") == "fast" and runner.used == "fast"
    with pytest.warns(RuntimeWarning, match="1.00e\\+00"):
        assert runner.run(fails, lambda: "plain") == "plain"
    assert runner.used == "fast+plain"
    plain = ChunkRunner(model, "plain")
    assert plain.engine is None and plain.run(lambda engine: "fast", lambda: "plain") == "plain"
    assert plain.used == "plain"
