"""Split a head sweep (by heads, by layers, by prompts), save the parts, merge them back.

The sweep is real: zero-ablating each head of a tiny random model and measuring the change
in log-probability of the next token, per prompt. A merged run must equal the unsplit one.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.core.results import Result, results_equal


@dataclasses.dataclass(frozen=True)
class AblationSweepResult(Result):
    """Per head and prompt: log-prob change of the true next token when the head is zeroed (NaN: not swept)."""

    title = "Head ablation sweep"

    per_prompt: torch.Tensor  # [n_layers, n_heads, n_prompts]
    effect: torch.Tensor  # [n_layers, n_heads], mean over prompts
    heads: tuple[tuple[int, int], ...]
    n_layers: int

    def to_dataframe(self):
        import pandas as pd

        return pd.DataFrame([{"layer": l, "head": h, "effect": float(self.effect[l, h])} for l, h in self.heads])


def ablation_sweep(model, tokens, heads) -> AblationSweepResult:
    s = hooks.spec(model)
    targets = tokens[:, -1]
    per_prompt = torch.full((s.n_layers, s.n_heads, tokens.shape[0]), float("nan"))

    def logprob(fwd_hooks=()):
        with torch.no_grad():
            logits = hooks.forward(model, tokens[:, :-1], fwd_hooks=fwd_hooks)
        return logits[:, -1].log_softmax(-1).gather(-1, targets[:, None])[:, 0]

    clean = logprob()
    for l, h in heads:

        def zero(z, hook, h=h):
            z[:, :, h] = 0.0
            return z

        per_prompt[l, h] = logprob([(hooks.z(l), zero)]) - clean
    return AblationSweepResult(per_prompt, per_prompt.mean(-1), tuple(heads), s.n_layers)


@pytest.fixture(scope="module")
def sweep_tokens():
    return torch.randint(0, 60, (6, 12), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def all_heads(tiny):
    s = hooks.spec(tiny)
    return [(l, h) for l in range(s.n_layers) for h in range(s.n_heads)]


@pytest.fixture(scope="module")
def full(tiny, sweep_tokens, all_heads):
    return ablation_sweep(tiny, sweep_tokens, all_heads)


def test_full_sweep_is_real(full):
    # Zeroing a head of a random model changes the log-prob: every entry is finite and some are large.
    assert torch.isfinite(full.per_prompt).all()
    assert full.per_prompt.abs().max() > 1e-3


def test_merge_split_by_heads_through_saved_files(tiny, sweep_tokens, all_heads, full, tmp_path):
    paths = []
    for i, chunk in enumerate((all_heads[:3], all_heads[3:5], all_heads[5:])):
        part = ablation_sweep(tiny, sweep_tokens, chunk)
        assert torch.isnan(part.effect).sum() == len(all_heads) - len(chunk)
        paths.append(part.save(tmp_path / f"part{i}"))
    merged = il.merge_results(paths, concat={"heads": 0})
    assert results_equal(merged, full)


def test_merge_split_by_layers_keeps_unswept_nan(tiny, sweep_tokens, all_heads, full):
    layer0 = [lh for lh in all_heads if lh[0] == 0]
    merged = il.merge_results([ablation_sweep(tiny, sweep_tokens, layer0)], concat={"heads": 0})
    assert torch.equal(merged.effect[0], full.effect[0])
    assert torch.isnan(merged.effect[1]).all()


def test_merge_split_by_prompts(tiny, sweep_tokens, all_heads, full):
    parts = [ablation_sweep(tiny, sweep_tokens[i : i + 2], all_heads) for i in (0, 2, 4)]
    # The per-prompt tensor is the split axis; the mean over prompts is given for the whole.
    per_prompt = torch.cat([p.per_prompt for p in parts], dim=-1)
    merged = il.merge_results(parts, concat={"per_prompt": -1}, replace={"effect": per_prompt.mean(-1)})
    torch.testing.assert_close(merged.per_prompt, full.per_prompt, rtol=0, atol=1e-5)
    torch.testing.assert_close(merged.effect, full.effect, rtol=0, atol=1e-5)
    assert merged.heads == full.heads


def test_merge_refuses_parts_of_different_sweeps(tiny, sweep_tokens, all_heads, full):
    other = ablation_sweep(tiny, sweep_tokens.flip(0), all_heads[:2])
    with pytest.raises(il.ResultFileError, match="disagree"):
        il.merge_results([full, other], concat={"heads": 0})
    with pytest.raises(il.ResultFileError, match="differs"):
        il.merge_results([full, ablation_sweep(tiny, sweep_tokens, all_heads[:2])])
    acc_like = dataclasses.replace(full, n_layers=3)
    with pytest.raises(il.ResultFileError, match="n_layers"):
        il.merge_results([full, acc_like], concat={"heads": 0})
    with pytest.raises(il.ResultFileError, match="no fields"):
        il.merge_results([full], concat={"nope": 0})


def test_merge_head_patching_sweep_split_by_heads_and_prompts(tiny, word_task, all_heads, tmp_path):
    from icl_lens.patching import HeadPatchingResult, head_sweep

    s = hooks.spec(tiny)
    batch = il.build_prompts(tiny, word_task, n_shots=3, n_prompts=6, seed=0)
    zeros = torch.zeros(s.n_layers, s.n_heads, s.d_head)
    full = head_sweep(tiny, batch, zeros, metric="logprob", method="plain", show_progress=False)
    assert torch.isfinite(full.effect).all() and full.effect.abs().max() > 1e-4

    # By heads, through saved files: NaN entries of each part are filled from the others.
    paths = [
        head_sweep(tiny, batch, zeros, metric="logprob", heads=chunk, method="plain", show_progress=False).save(
            tmp_path / f"heads{i}"
        )
        for i, chunk in enumerate((all_heads[:5], all_heads[5:]))
    ]
    by_heads = il.merge_results(paths)
    assert isinstance(by_heads, HeadPatchingResult)
    torch.testing.assert_close(by_heads.patched, full.patched, rtol=0, atol=1e-5)
    torch.testing.assert_close(by_heads.effect, full.effect, rtol=0, atol=1e-5)

    # By prompts: the prompt axis is concatenated; the mean over prompts is recomputed.
    parts = [
        head_sweep(
            tiny, batch.select(torch.arange(i, i + 3)), zeros, metric="logprob", method="plain", show_progress=False
        )
        for i in (0, 3)
    ]
    patched = torch.cat([p.patched for p in parts], dim=-1)
    baseline = torch.cat([p.baseline for p in parts])
    by_prompts = il.merge_results(
        parts,
        concat={"patched": -1, "baseline": 0},
        replace={"effect": (patched - baseline).mean(-1), "reference": None},
    )
    torch.testing.assert_close(by_prompts.patched, full.patched, rtol=0, atol=1e-5)
    torch.testing.assert_close(by_prompts.effect, full.effect, rtol=0, atol=1e-5)
