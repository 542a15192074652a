"""Compatibility mode's processed weights, cached beside the converted model: booting from
them gives the same bridge as processing again, and loading SmolLM2 no longer peaks high."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import icl_lens as il
from icl_lens.core import model_access, model_cache, models


def boot(path, processed: bool):
    from transformer_lens.model_bridge import TransformerBridge

    with model_access.hub_offline():
        bridge = TransformerBridge.boot_transformers(str(path), device="cpu", dtype=torch.float32)
    return models._prepare(bridge, True, processed=processed)


def test_booting_from_the_processed_weights_is_bit_identical(tiny_hf_dir, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for f in tiny_hf_dir.iterdir():
        (raw / f.name).write_bytes(f.read_bytes())
    processed = boot(raw, processed=False)
    target = model_cache.write_processed(processed, raw)
    assert target == model_cache.processed_dir(raw) and model_cache.is_complete(target)
    assert json.loads((target / "config.json").read_text())["tie_word_embeddings"] is False
    cached = boot(target, processed=True)
    assert cached.compatibility_mode and cached._weights_processed
    tokens = torch.tensor([[0, 5, 9, 12, 30, 7, 7, 41]])
    names = [f"blocks.{l}.{h}" for l in range(2) for h in ("attn.hook_z", "hook_resid_pre", "ln1.hook_normalized")]
    with torch.no_grad():
        a, cache_a = processed.run_with_cache(tokens, names_filter=lambda n: n in names)
        b, cache_b = cached.run_with_cache(tokens, names_filter=lambda n: n in names)
    assert torch.equal(a, b) and all(torch.equal(cache_a[n], cache_b[n]) for n in names)
    assert torch.equal(processed.W_U, cached.W_U) and torch.equal(
        processed.blocks[1].attn.W_O, cached.blocks[1].attn.W_O
    )
    # The raw weights differ (folded layer norms, centred writing weights): not a copy of them.
    assert not torch.equal(boot_raw(raw).W_U, cached.W_U)
    # A second write finds the complete directory; an abandoned temporary one is removed.
    assert model_cache.write_processed(processed, raw) == target
    abandoned = raw / ".compatibility_x-999999999-abc"
    abandoned.mkdir()
    model_cache.remove_abandoned(raw, ".compatibility_*")
    assert not abandoned.exists()


def boot_raw(path):
    return il.load_model(str(path), compatibility_mode=False)


@pytest.mark.smollm2
def test_loading_smollm2_peaks_below_one_and_a_half_gib(smollm2):
    """The session's load wrote the processed weights; a fresh process boots from them."""
    assert model_cache.is_complete(model_cache.processed_dir(models.smollm2_dir()))
    code = textwrap.dedent(
        """
        import torch, icl_lens as il
        m = il.load_model("smollm2")
        with torch.no_grad():
            top = m(m.to_tokens("hot -> cold\\nbig -> small\\nup ->"))[0, -1].argmax()
        peak = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
        print(m.to_str_tokens(top)[0], m._weights_processed, int(peak) / 2**20)
        """
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    answer, processed, peak_gib = out.stdout.split()
    assert answer == "down" and processed == "True"
    assert float(peak_gib) <= 1.5, f"peak {peak_gib} GiB"
