"""(a) The last-position head sweep on SmolLM2: icl_lens against TransformerLens and nnsight.

Same inputs for all three: clean / shuffled-label antonym prompts of one token length
(8 x 63 tokens, and 2 x ~200), every head's output patched clean -> shuffled (denoising)
at the last position, metric = log-probability of the answer's first token, per prompt.

* icl_lens: ``head_sweep(model, shuffled, clean, metric="logprob")`` (caching the clean
  activations included), on the last-position engine;
* TransformerLens: ``get_act_patch_attn_head_out_by_pos`` restricted, through ``index_df``,
  to the last position (one full forward per head);
* nnsight: a plain loop, one trace per head with the batch of prompts inside it.

The baselines run a subset of heads spread over the layers and are extrapolated to all
270 (printed as such; ``--heads 270`` runs them all). Each line gives the speed ratios,
the max |difference| of the per-prompt values on the heads both ran, peak memory above the
start of each call, and icl_lens's achieved GFLOP/s against a matmul of the shape its
passes use, timed in the same process. A last line times the sweep the function-vector
pipeline runs (25 shuffled prompts x ~100-130 tokens, left-padded, mean-vector source).

    python benchmarks/patching_heads.py [--heads 27 --cases 8x60,2x200 --fv-prompts 25 --threads N]
"""

from __future__ import annotations

import argparse
import resource

import torch
from _shared import (
    CASES,
    Flops,
    equal_length_pair,
    load,
    machine,
    matmul_rate,
    measure,
    nnsight_model,
    nnsight_patch,
    setup,
    spread,
    tl_patch,
)

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.patching import head_sweep, mean_head_activations
from icl_lens.patching.runner import FAST_ROWS


def engine_flops(f: Flops, n: int, t: int) -> int:
    """Work of the last-position head sweep: two unpatched passes (source activations, the
    target's prefix), a control row, and per head one answer row per prompt from its block on."""
    passes = 2 * f.forward(n, t, unembedded=1)
    rows = f.heads * sum(f.layers - l for l in range(f.layers)) + f.layers  # + the control row
    per_row = f.block + f.attention(t)
    return passes + n * (rows * per_row + (f.heads * f.layers + 1) * f.unembed)


def compare(model, nn, name: str, n_prompts: int, n_shots: int, n_heads: int) -> None:
    s = hooks.spec(model)
    clean, shuffled = equal_length_pair(model, "antonym", n_prompts, n_shots)
    n, t = shuffled.tokens.shape
    every = [(l, h) for l in range(s.n_layers) for h in range(s.n_heads)]
    ours = measure(lambda: head_sweep(model, shuffled, clean, metric="logprob"))
    rate = engine_flops(Flops.of(model), n, t) / ours.wall / 1e9
    roof = matmul_rate(FAST_ROWS, s.d_model, int(model.cfg.d_mlp))
    heads = spread(every, n_heads)
    cells = [(l, t - 1, h) for l, h in heads]
    scale = len(every) / len(heads)
    note = "measured" if len(heads) == len(every) else f"EXTRAPOLATED from {len(heads)} heads x{scale:.1f}"
    ours_sub = torch.stack([ours.result.patched[l, h] for l, h in heads])
    parts = [
        f"(a) last-position head sweep, {name}: {n} prompts x {t} tokens, {len(every)} heads: icl_lens "
        f"{ours.result.method} {ours.wall:.1f} s (cpu {ours.cpu:.1f} s, peak +{ours.peak_mib:.0f} MiB; "
        f"{rate:.0f} GFLOP/s = {rate / roof:.0%} of a [{FAST_ROWS}x{s.d_model}]@[{s.d_model}x{model.cfg.d_mlp}] "
        f"matmul at {roof:.0f} GFLOP/s)"
    ]
    for label, run in (
        ("TransformerLens get_act_patch_attn_head_out_by_pos", lambda: tl_patch(model, clean, shuffled, "z", cells)),
        ("nnsight loop", lambda: nnsight_patch(nn, clean, shuffled, "z", cells)),
    ):
        base = measure(run)
        full = base.wall * scale
        diff = float((base.result - ours_sub).abs().max())
        parts.append(
            f"{label} {full:.0f} s [{note}] (peak +{base.peak_mib:.0f} MiB): {full / ours.wall:.0f}x, "
            f"max |diff| {diff:.1e} over {base.result.numel()} values"
        )
    print(" | ".join(parts) + f" | {load()}", flush=True)


def function_vector_sweep(model, n_prompts: int) -> None:
    task = il.load_task("country_capital")
    mean_src = il.build_prompts(model, task, n_shots=10, n_prompts=n_prompts, seed=0, template="todd")
    target = il.build_prompts(model, task, n_shots=10, n_prompts=n_prompts, seed=1, template="todd", kind="shuffled")
    mean = mean_head_activations(model, mean_src)
    fv = measure(lambda: head_sweep(model, target, mean, metric="prob"))
    lengths = target.attention_mask.sum(1)
    print(
        f"function-vector AIE sweep, {len(target)} shuffled prompts x {int(lengths.min())}-{int(lengths.max())} "
        f"tokens (left-padded to {target.tokens.shape[1]}), 270 heads, mean-vector source: icl_lens "
        f"{fv.result.method} {fv.wall:.1f} s (cpu {fv.cpu:.1f} s), peak +{fv.peak_mib:.0f} MiB (process peak "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB) | {load()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--heads", type=int, default=27, help="heads the baselines run (270: all)")
    parser.add_argument("--cases", default="8x60,2x200", help=f"inputs, among {', '.join(CASES)}")
    parser.add_argument("--fv-prompts", type=int, default=25, help="prompts of the function-vector sweep (0: skip)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    model = setup(args.threads)
    nn = nnsight_model()
    print(f"# SmolLM2-135M, {machine()}", flush=True)
    for name in args.cases.split(","):
        compare(model, nn, name, *CASES[name], args.heads)
    if args.fv_prompts:
        function_vector_sweep(model, args.fv_prompts)


if __name__ == "__main__":
    main()
