"""Causal tracing: every panel is the exact layer x position sweep of its site, both ways."""

from __future__ import annotations

import pytest
import torch

import icl_lens as il
from icl_lens.core.errors import ConfigError
from icl_lens.core.results import results_equal
from icl_lens.patching import CausalTraceConfig, CausalTraceResult, causal_trace, resid_sweep

TASK = il.Task(
    name="varied",
    pairs=(("a", "b"), ("bcd", "e"), ("fg", "h"), ("ijkl", "m"), ("n", "o"), ("pqr", "s"), ("tu", "v"), ("wxyz", "a")),
)


@pytest.fixture(scope="module")
def pair(tiny_rotary_gqa):
    kw = dict(n_shots=2, n_prompts=3, seed=1, template="hendel")
    return il.build_prompts(tiny_rotary_gqa, TASK, **kw), il.build_prompts(tiny_rotary_gqa, TASK, kind="shuffled", **kw)


def test_panels_are_the_exact_sweeps_both_ways(tiny_rotary_gqa, pair, tmp_path):
    clean, shuffled = pair
    trace = causal_trace(tiny_rotary_gqa, clean, shuffled, metric="logprob", batch_size=2)
    plain = causal_trace(tiny_rotary_gqa, clean, shuffled, metric="logprob", method="plain")
    assert trace.method == "fast" and plain.method == "plain"
    assert trace.patched.shape == (3, 2, 3, clean.tokens.shape[1], len(clean))
    torch.testing.assert_close(trace.patched, plain.patched, atol=2e-5, rtol=0)
    for site in trace.sites:
        noising = resid_sweep(tiny_rotary_gqa, clean, shuffled, metric="logprob", positions="each", hook=site)
        s = trace.sites.index(site)
        torch.testing.assert_close(trace.patched[s, 1], noising.patched, atol=2e-5, rtol=0)
    torch.testing.assert_close(trace.clean, noising.baseline, atol=2e-5, rtol=0)
    torch.testing.assert_close(trace.corrupted, noising.reference, atol=2e-5, rtol=0)
    last = int(clean.last_pos[0])
    gap = float((trace.clean - trace.corrupted).mean())
    by_hand = (trace.patched[0, 0, :, :, :] - trace.corrupted).mean(-1) / gap
    torch.testing.assert_close(trace.normalized("resid_pre", "denoising"), by_hand)
    assert trace.effect("mlp_out", "noising").shape == (3, clean.tokens.shape[1])
    df = trace.to_dataframe()
    assert len(df) == 3 * 2 * 3 * clean.tokens.shape[1] and set(df.columns) >= {"token", "normalized"}
    assert trace.tokens[0][last] == clean.texts[0][-1]  # character tokenizer: the prompt's last character
    assert trace.plot() is not None and "<img" in trace._repr_html_()
    loaded = CausalTraceResult.load(trace.save(tmp_path / "trace"))
    assert results_equal(loaded, trace)


def test_one_site_one_direction_and_errors(tiny_rotary_gqa, pair):
    clean, shuffled = pair
    one = causal_trace(tiny_rotary_gqa, clean, shuffled, sites=("attn_out",), directions=("noising",), layers=(1,))
    assert one.patched.shape[:3] == (1, 1, 3)
    assert bool(torch.isnan(one.patched[0, 0, 0]).all()) and not bool(torch.isnan(one.patched[0, 0, 1]).any())
    with pytest.raises(ConfigError, match="denoising"):
        one.effect("attn_out", "denoising")
    with pytest.raises(ConfigError, match="same token shape"):
        causal_trace(tiny_rotary_gqa, clean, shuffled.select([0, 1]))
    with pytest.raises(ConfigError, match="sites"):
        CausalTraceConfig(sites=("resid_pre", "hook_z"))
    with pytest.raises(ConfigError, match="valid fields"):
        causal_trace(tiny_rotary_gqa, clean, shuffled, site="resid_pre")
