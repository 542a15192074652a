"""The fast engines on float16 and bfloat16 models: the control row's tolerance follows the
dtype's rounding, so a 16-bit model keeps the fast path (it once fell back to one full
forward per patch), its results stay as close to the plain path as 16-bit rounding allows,
and a mechanism the engine does not reproduce is still caught."""

from __future__ import annotations

import warnings

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.errors import FastPathMismatchError
from icl_lens.patching import attribution_head_sweep, attribution_resid_sweep, head_sweep, resid_sweep
from icl_lens.patching.engine import CONTROL_TOLERANCE, control_tolerance
from icl_lens.patching.steering import layer_sweep, resid_at_answer

TASK = il.Task(name="pairs", pairs=tuple((a, b) for a, b in zip("abcdefghijkl", "mnopqrstuvwx")))


@pytest.fixture(scope="module")
def llama_dir(tiny_llama, tmp_path_factory):
    """A random tiny Llama (HF rotary attention, GQA) with weights large enough that patches
    move the log-probabilities by more than 16-bit rounding does."""
    return str(tiny_llama(tmp_path_factory.mktemp("llama_16bit"), initializer_range=0.2))


@pytest.fixture(scope="module", params=["bfloat16", "float16"])
def half(request, llama_dir):
    return il.load_model(llama_dir, dtype=request.param, compatibility_mode=False)


def test_tolerance_is_the_dtypes_rounding():
    assert control_tolerance(torch.float32) == control_tolerance(torch.float64) == CONTROL_TOLERANCE
    # 128 machine epsilons: 2**-7 * 128 and 2**-10 * 128
    assert control_tolerance(torch.bfloat16) == 1.0
    assert control_tolerance(torch.float16) == 0.125


def test_sixteen_bit_models_keep_the_fast_path(half):
    assert hooks.dtype_of(half) in (torch.bfloat16, torch.float16)
    kw = dict(n_shots=2, n_prompts=4, seed=0, template="hendel")
    clean = il.build_prompts(half, TASK, **kw)
    shuffled = il.build_prompts(half, TASK, kind="shuffled", **kw)
    for sweep, args in (
        (head_sweep, dict(positions="last")),
        (head_sweep, dict(positions="each")),
        (resid_sweep, dict(hook="resid_pre", positions="each")),
        # the fast gradient engine: 16-bit activations and gradients, products summed in float32
        (attribution_head_sweep, dict()),
        (attribution_resid_sweep, dict(hook="resid_pre")),
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn
            fast = sweep(half, shuffled, clean, metric="logprob", method="fast", **args)
        plain = sweep(half, shuffled, clean, metric="logprob", method="plain", **args)
        assert (fast.method, plain.method) == ("fast", "plain") or fast.method == plain.method == "attribution"
        assert fast.patched.dtype == torch.float32
        gap = float((fast.patched - plain.patched).nan_to_num(0.0).abs().max())
        effect = float((plain.patched - plain.baseline).nan_to_num(0.0).abs().max())
        assert gap <= control_tolerance(hooks.dtype_of(half)) / 4, (sweep.__name__, args, gap)
        assert effect > 0.05  # the patches matter
    assert hooks.count_hooks(half) == 0


def test_the_guard_still_catches_what_the_engine_cannot_see(half):
    """A forward hook on block 0's attention module shifts its output: the 16-bit tolerance
    is rounding, not room for a mechanism."""
    kw = dict(n_shots=2, n_prompts=4, seed=0, template="hendel")
    clean = il.build_prompts(half, TASK, **kw)
    shuffled = il.build_prompts(half, TASK, kind="shuffled", **kw)

    def shift(module, inputs, output):
        return (output[0] + 1.0, *output[1:])

    handle = half.blocks[0].attn.register_forward_hook(shift)
    try:
        with pytest.raises(
            FastPathMismatchError, match=f"tolerance .* for {hooks.dtype_of(half)}".replace("torch.", "")
        ):
            head_sweep(half, shuffled, clean, metric="logprob", method="fast")
    finally:
        handle.remove()


@pytest.mark.smollm2
def test_bfloat16_smollm2_steers_on_the_fast_path_as_the_plain_one_does():
    """SmolLM2 in bfloat16: the engine's control row is off by up to ~0.6 in log-probability
    (float32: 2e-5), which once sent every chunk to the plain path. A layer sweep of task
    vectors now runs fast, and its top-1 outcomes are the plain path's."""
    model = il.load_model("smollm2", dtype="bfloat16")
    icl = il.build_prompts(model, "antonym", n_shots=5, n_prompts=8, seed=0, template="todd")
    zero = il.build_prompts(model, "antonym", n_shots=0, n_prompts=16, seed=1, template="todd", kind="zero_shot")
    vectors = resid_at_answer(model, icl).mean(0)  # the ICL state after every block: a task vector
    kw = dict(vectors=vectors, operation="replace", layers=range(30), batch_size=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fast = layer_sweep(model, zero, method="fast", **kw)
    plain = layer_sweep(model, zero, method="plain", **kw)
    assert fast.shape == plain.shape == (30, 16)
    assert int((fast != plain).sum()) <= 3  # of 480 outcomes: 16-bit rounding decides near-ties
    assert 0 < int(plain.sum()) < plain.numel()  # the outcomes are not all alike
