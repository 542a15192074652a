"""(b) Heads x every position and (c) the residual stream's layer x position map, on SmolLM2:
icl_lens's position engine against TransformerLens and nnsight.

Same inputs for all three: clean / shuffled-label antonym prompts of one token length
(8 x 63 tokens, and 2 x ~200), patched clean -> shuffled (denoising), metric =
log-probability of the answer's first token, per prompt.

* (b) one head's output (``hook_z``) at one column: icl_lens ``head_sweep(...,
  positions="each")``; TransformerLens ``get_act_patch_attn_head_out_by_pos``; nnsight, one
  trace per (head, column) patching ``o_proj``'s input;
* (c) the residual stream entering one layer at one column: icl_lens ``resid_sweep(...,
  positions="each", hook="resid_pre")``; TransformerLens ``get_act_patch_resid_pre``;
  nnsight, one trace per (layer, column) patching the decoder layer's input.

icl_lens computes every column of the heads or layers listed below (all layers are
represented, so the cost of a cell is that of the whole grid's average); the baselines
cost the same for every cell (one full forward), so they run a sample of those cells,
spread over layers and columns, and are extrapolated to icl_lens's cells (printed as
such). ``--full`` runs icl_lens on the whole grid (all heads / layers).

Each line gives the speed ratios, the *limit*: the ratio of the work a full forward per
cell does (every layer, every column, every column unembedded) to the work the position
engine must do (the columns from the patched one on, the blocks after the patched one, the
answer column unembedded), and how close the measured ratio comes to it; the max
|difference| of the per-prompt values on the cells both ran; peak memory above the start of
each call; and the achieved GFLOP/s against a matmul of the shape the engine's passes use.

    python benchmarks/patching_positions.py [--cases 8x60,2x200 --samples 40 --layer-step 3 --full --threads N]
"""

from __future__ import annotations

import argparse

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

from icl_lens.core import hooks
from icl_lens.patching import head_sweep, resid_sweep
from icl_lens.patching.position_engine import WINDOW_ROWS


def engine_flops(f: Flops, site: str, cells: list[tuple[int, int]], n: int, t: int) -> int:
    """Work of the position engine for ``cells`` ``(layer, column)`` on ``n`` prompts of ``t`` tokens."""
    total = 0
    for layer, col in cells:
        rows = t - col
        first = layer if site == "resid_pre" else layer + 1
        if site == "z":  # the patched block on the patched column: W_O and the MLP
            total += 2 * f.heads * f.d_head * f.d + 2 * 3 * f.d * f.mlp
        window_attention = sum(f.attention(c + 1) for c in range(col, t))
        for block in range(first, f.layers):
            if block < f.layers - 1:
                total += rows * f.block + window_attention
            else:  # the last block: keys and values of the window, the rest for the answer column
                total += rows * f.kv_proj + (f.block - f.kv_proj) + f.attention(t)
        total += f.unembed
    passes = 3.5 * f.forward(1, t, unembedded=1)  # source, target prefix, two control rows
    return int(n * (total + passes))


def baseline_flops(f: Flops, n: int, t: int) -> int:
    """One full forward of the batch per cell, every column unembedded (what both baselines run)."""
    return f.forward(n, t, unembedded=t)


def compare(model, nn, case: str, site: str, full: bool, samples: int, step: int) -> None:
    s = hooks.spec(model)
    n_prompts, n_shots = CASES[case]
    clean, shuffled = equal_length_pair(model, "antonym", n_prompts, n_shots)
    n, t = shuffled.tokens.shape
    long = t > 100
    if site == "z":
        if full:
            units = [(l, h) for l in range(s.n_layers) for h in range(s.n_heads)]
        else:  # one head per sampled layer (3 heads on the long prompts): all layers' costs represented
            layers = [4, 14, 24] if long else list(range(step // 2, s.n_layers, step))
            units = [(l, (3 * l) % s.n_heads) for l in layers]
        run = measure(lambda: head_sweep(model, shuffled, clean, metric="logprob", positions="each", heads=units))
        grid = len(units) * t
        what = f"(b) head x position, {case}: {n} prompts x {t} tokens, {len(units)} heads x {t} columns"
        values = {(l, p, h): run.result.patched[l, h, p] for l, h in units for p in range(t)}
        baseline_name = "TransformerLens get_act_patch_attn_head_out_by_pos"
    else:
        layers = (
            list(range(s.n_layers)) if full else ([4, 14, 24] if long else list(range(step // 2, s.n_layers, step)))
        )
        run = measure(lambda: resid_sweep(model, shuffled, clean, metric="logprob", positions="each", layers=layers))
        units = [(l,) for l in layers]
        grid = len(layers) * t
        what = f"(c) resid_pre layer x position, {case}: {n} prompts x {t} tokens, {len(layers)} layers x {t} columns"
        values = {(l, p): run.result.patched[l, p] for l in layers for p in range(t)}
        baseline_name = "TransformerLens get_act_patch_resid_pre"
    f = Flops.of(model)
    cells = sorted(values, key=lambda c: (c[1], c[0]))
    ours_work = engine_flops(f, site, [(c[0], c[1]) for c in cells], n, t)
    their_work = len(cells) * baseline_flops(f, n, t)
    limit = their_work / ours_work
    rate = ours_work / run.wall / 1e9
    roof = matmul_rate(WINDOW_ROWS, s.d_model, int(model.cfg.d_mlp))
    sample = spread(cells, samples)
    expected = torch.stack([values[c] for c in sample])
    scale = grid / len(sample)
    parts = [
        f"{what}: icl_lens {run.result.method} {run.wall:.0f} s (cpu {run.cpu:.0f} s, peak +{run.peak_mib:.0f} MiB; "
        f"{rate:.0f} GFLOP/s = {rate / roof:.0%} of a [{WINDOW_ROWS}x{s.d_model}]@[{s.d_model}x{model.cfg.d_mlp}] "
        f"matmul at {roof:.0f} GFLOP/s); limit {limit:.1f}x (work of a full forward per cell / the engine's)"
    ]
    for label, fn in ((baseline_name, tl_patch), ("nnsight loop", None)):
        if fn is None:
            base = measure(lambda: nnsight_patch(nn, clean, shuffled, site, sample))
        else:
            base = measure(lambda fn=fn: fn(model, clean, shuffled, site, sample))
        extrapolated = base.wall * scale
        ratio = extrapolated / run.wall
        diff = float((base.result - expected).abs().max())
        parts.append(
            f"{label} {extrapolated:.0f} s [EXTRAPOLATED from {len(sample)} of the {grid} cells, x{scale:.1f}] "
            f"(peak +{base.peak_mib:.0f} MiB): {ratio:.1f}x = {ratio / limit:.0%} of the limit, max |diff| "
            f"{diff:.1e} over {base.result.numel()} values"
        )
    print(" | ".join(parts) + f" | {load()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="8x60,2x200", help=f"inputs, among {', '.join(CASES)}")
    parser.add_argument("--sweeps", default="b,c", help="b: heads x positions, c: resid_pre layers x positions")
    parser.add_argument("--samples", type=int, default=40, help="cells the baselines run")
    parser.add_argument("--full", action="store_true", help="icl_lens on the whole grid (all heads / layers)")
    parser.add_argument("--layer-step", type=int, default=3, help="every k-th layer (from k // 2) on 8x60 prompts")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    model = setup(args.threads)
    nn = nnsight_model()
    print(f"# SmolLM2-135M, {machine()}", flush=True)
    for case in args.cases.split(","):
        for sweep in args.sweeps.split(","):
            compare(model, nn, case, "z" if sweep == "b" else "resid_pre", args.full, args.samples, args.layer_step)


if __name__ == "__main__":
    main()
