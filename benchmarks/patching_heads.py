"""Exact head patching on SmolLM2: icl_lens's fast engine against TransformerLens's own.

Same inputs for both: ``n`` clean / shuffled-label antonym prompts of one token length
(TransformerLens's patching takes no attention mask, so no padding), every head's
``hook_z`` patched clean -> shuffled (denoising) at the last position, metric = the
log-probability of the answer's first token, per prompt.

* icl_lens: ``head_sweep(model, shuffled, clean, metric="logprob")`` (caching the clean
  activations included);
* TransformerLens: ``run_with_cache`` of the clean prompts, then
  ``transformer_lens.patching.get_act_patch_attn_head_out_by_pos`` restricted, through
  ``index_df``, to the last position ((layer, last, head) rows: the same computation;
  ``_all_pos`` would patch every position), ``reduce="none"`` for per-prompt values. It
  runs one full forward per head; by default it runs a subset of heads and the time for
  all heads is extrapolated (printed as such); ``--tl-heads 270`` runs all of them.

A third line times the sweep the function-vector pipeline runs: 25 shuffled-label
prompts (Todd template, 10 shots, ~100-130 tokens, left-padded) x 270 heads, patched with
a mean activation vector, metric = answer probability.

    python benchmarks/patching_heads.py [--prompts 8 --shots 7 --tl-heads 27 --threads 1]

Wall times depend on the machine's load (printed); CPU seconds are printed too.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import resource
import threading
import time
from collections.abc import Callable
from typing import Any

# TransformerLens's patching loop draws a tqdm bar; the summary lines are the output here.
os.environ.setdefault("TQDM_DISABLE", "1")

import torch

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.patching import head_sweep, mean_head_activations


# ---------------------------------------------------------------------------------------
# helpers (also used by benchmarks/attribution.py)
# ---------------------------------------------------------------------------------------
def _rss() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float, float]:
    """Run ``fn``: ``(result, wall seconds, CPU seconds, peak resident memory above start, MiB)``.

    Resident memory is sampled every 2 ms in a thread (torch allocations are invisible to
    tracemalloc), after returning freed heap pages to the system so that the start is the
    live memory; without psutil the peak is the process's lifetime peak (``ru_maxrss``).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    start = _rss()
    peak = [start or 0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss() or 0)
            time.sleep(0.002)

    thread = threading.Thread(target=sample, daemon=True)
    if start is not None:
        thread.start()
    c0, t0 = cpu_seconds(), time.perf_counter()
    try:
        result = fn()
    finally:
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        done.set()
        if start is not None:
            thread.join()
    if start is None:
        return result, wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result, wall, cpu, (max(peak[0], _rss() or 0) - start) / 2**20


def equal_length_pair(model: Any, task: str, n_prompts: int, n_shots: int, template: str, seed: int = 0):
    """``n_prompts`` clean / shuffled-label prompt pairs that all have the same token count.

    Candidates are built with one seed for both kinds (same queries and demonstrations;
    the shuffled labels are a permutation, so each pair has the same length), then the
    most common length is kept.
    """
    kw = dict(n_shots=n_shots, n_prompts=16 * n_prompts, seed=seed, template=template)
    clean = il.build_prompts(model, task, **kw)
    shuffled = il.build_prompts(model, task, kind="shuffled", **kw)
    lengths = clean.attention_mask.sum(1)
    same = lengths == shuffled.attention_mask.sum(1)
    common, _ = collections.Counter(lengths[same].tolist()).most_common(1)[0]
    rows = ((lengths == common) & same).nonzero().flatten()[:n_prompts].tolist()
    if len(rows) < n_prompts:
        raise RuntimeError(f"only {len(rows)} prompts of length {common}; lower --prompts")
    return clean.select(rows), shuffled.select(rows)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs, load average {load:.1f}"


def spread_heads(n_layers: int, n_heads: int, k: int) -> list[tuple[int, int]]:
    every = [(l, h) for l in range(n_layers) for h in range(n_heads)]
    step = max(1, len(every) // k)
    return every[::step][:k]


# ---------------------------------------------------------------------------------------
# the comparison
# ---------------------------------------------------------------------------------------
def transformer_lens_sweep(model: Any, clean: Any, shuffled: Any, heads: list[tuple[int, int]]) -> torch.Tensor:
    """TransformerLens's own patching, last position only: ``[len(heads), batch]`` log-probs."""
    import pandas as pd
    from transformer_lens.patching import get_act_patch_attn_head_out_by_pos

    answers = shuffled.answer_ids
    last = shuffled.tokens.shape[1] - 1

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits[:, -1].float(), -1).gather(1, answers[:, None]).squeeze(1)

    with torch.no_grad():
        _, clean_cache = model.run_with_cache(clean.tokens, names_filter=lambda name: name.endswith("attn.hook_z"))
        index = pd.DataFrame(
            {"layer": [l for l, _ in heads], "pos": [last] * len(heads), "head": [h for _, h in heads]}
        )
        result = get_act_patch_attn_head_out_by_pos(
            model, shuffled.tokens, clean_cache, metric, index_axis_names=None, index_df=index, reduce="none"
        )
    return result.values.float().cpu()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--shots", type=int, default=7, help="Todd-template antonym shots (7: ~60 tokens)")
    parser.add_argument("--tl-heads", type=int, default=27, help="heads TransformerLens runs (270: all)")
    parser.add_argument("--fv-prompts", type=int, default=25, help="prompts of the function-vector workload (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    il.set_progress(False)
    model = il.load_model("smollm2")
    s = hooks.spec(model)
    n_all = s.n_layers * s.n_heads
    print(f"# SmolLM2-135M, {machine()}")

    clean, shuffled = equal_length_pair(model, "antonym", args.prompts, args.shots, "todd")
    n, n_tok = shuffled.tokens.shape
    ours, t_ours, c_ours, m_ours = measure(lambda: head_sweep(model, shuffled, clean, metric="logprob"))
    tl_heads = spread_heads(s.n_layers, s.n_heads, min(args.tl_heads, n_all))
    tl, t_tl, c_tl, m_tl = measure(lambda: transformer_lens_sweep(model, clean, shuffled, tl_heads))
    ours_sub = torch.stack([ours.patched[l, h] for l, h in tl_heads])
    diff = float((ours_sub - tl).abs().max())
    scale = n_all / len(tl_heads)
    note = "measured" if len(tl_heads) == n_all else f"EXTRAPOLATED from {len(tl_heads)} heads x{scale:.1f}"
    print(
        f"head patching, {n} prompts x {n_tok} tokens, {n_all} heads, last position: icl_lens {ours.method} "
        f"{t_ours:.1f} s (cpu {c_ours:.1f} s, peak +{m_ours:.0f} MiB) vs transformer_lens "
        f"get_act_patch_attn_head_out_by_pos {t_tl * scale:.1f} s [{note}] (cpu {c_tl * scale:.1f} s, peak "
        f"+{m_tl:.0f} MiB): speed ratio {t_tl * scale / t_ours:.0f}x (cpu {c_tl * scale / c_ours:.0f}x), "
        f"max |diff| {diff:.1e} over {tl.numel()} values"
    )

    if args.fv_prompts:
        task = il.load_task("country_capital")
        mean_src = il.build_prompts(model, task, n_shots=10, n_prompts=args.fv_prompts, seed=0, template="todd")
        target = il.build_prompts(
            model, task, n_shots=10, n_prompts=args.fv_prompts, seed=1, template="todd", kind="shuffled"
        )
        mean = mean_head_activations(model, mean_src)
        fv, t_fv, c_fv, m_fv = measure(lambda: head_sweep(model, target, mean, metric="prob"))
        lengths = target.attention_mask.sum(1)
        print(
            f"function-vector AIE sweep, {len(target)} shuffled prompts x {int(lengths.min())}-{int(lengths.max())} "
            f"tokens (left-padded to {target.tokens.shape[1]}), {n_all} heads, mean-vector source: icl_lens "
            f"{fv.method} {t_fv:.1f} s (cpu {c_fv:.1f} s), peak +{m_fv:.0f} MiB (process peak "
            f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB)"
        )


if __name__ == "__main__":
    main()
