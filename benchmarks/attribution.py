"""Attribution patching against exact patching of every head, on SmolLM2 and an ICL task.

Same inputs for all: ``n`` antonym prompts with their demonstrations' labels shuffled
and the same prompts with true labels (equal token counts, no padding). The patch is
shuffled-label -> clean (the clean run gets one head's output from the shuffled-label run,
at the last position); metric = probability of the answer's first token.

* attribution: ``attribution_head_sweep`` (caching the source activations, one forward of
  the clean prompts, one backward through the answer position);
* exact, fast engine: ``head_sweep`` (``method="auto"``: the fast engine);
* exact, one full forward per head: ``head_sweep(method="plain")``, the way
  TransformerLens's patching works, on a subset of heads, extrapolated to all heads
  (printed as such); ``--plain-heads 270`` runs all of them.

Prints the speed ratios and the agreement (Spearman, Pearson, top-10 overlap) between
attribution and the exact sweep.

    python benchmarks/attribution.py [--prompts 8 --shots 7 --plain-heads 18 --threads 1]
"""

from __future__ import annotations

import argparse

import torch
from patching_heads import equal_length_pair, machine, measure, spread_heads

import icl_lens as il
from icl_lens.core import hooks
from icl_lens.patching import attribution_head_sweep, head_sweep, patching_agreement


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--shots", type=int, default=7)
    parser.add_argument("--plain-heads", type=int, default=18, help="heads the plain exact sweep runs (270: all)")
    parser.add_argument("--metric", default="prob")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    il.set_progress(False)
    model = il.load_model("smollm2")
    s = hooks.spec(model)
    n_all = s.n_layers * s.n_heads
    print(f"# SmolLM2-135M, {machine()}")
    clean, shuffled = equal_length_pair(model, "antonym", args.prompts, args.shots, "todd")
    n, n_tok = clean.tokens.shape

    attr, t_at, c_at, m_at = measure(lambda: attribution_head_sweep(model, clean, shuffled, metric=args.metric))
    exact, t_ex, c_ex, m_ex = measure(lambda: head_sweep(model, clean, shuffled, metric=args.metric))
    heads = spread_heads(s.n_layers, s.n_heads, min(args.plain_heads, n_all))
    plain, t_pl, c_pl, _ = measure(
        lambda: head_sweep(model, clean, shuffled, metric=args.metric, heads=heads, method="plain")
    )
    scale = n_all / len(heads)
    ok = ~torch.isnan(plain.patched)
    diff = float((plain.patched - exact.patched)[ok].abs().max())
    note = "measured" if len(heads) == n_all else f"EXTRAPOLATED from {len(heads)} heads x{scale:.0f}"
    agreement = patching_agreement(attr, exact, k=10)
    print(
        f"attribution vs exact, {n} prompts x {n_tok} tokens, {n_all} heads, antonym shuffled-label -> clean, "
        f"metric {args.metric}: attribution {t_at:.1f} s (cpu {c_at:.1f} s, peak +{m_at:.0f} MiB) vs exact fast "
        f"engine {t_ex:.1f} s (cpu {c_ex:.1f} s, peak +{m_ex:.0f} MiB): ratio {t_ex / t_at:.1f}x "
        f"(cpu {c_ex / c_at:.1f}x); vs exact one forward per head {t_pl * scale:.0f} s [{note}]: ratio "
        f"{t_pl * scale / t_at:.0f}x (cpu {c_pl * scale / c_at:.0f}x); Spearman {agreement.spearman:.3f}, "
        f"Pearson {agreement.pearson:.3f}, top-10 overlap {agreement.top_k_overlap:.0%} "
        f"(fast vs plain exact max |diff| {diff:.1e})"
    )


if __name__ == "__main__":
    main()
