"""(d) Attribution patching at positions on SmolLM2: icl_lens (with and without AtP*'s QK
fix) against TransformerLens's and nnsight's attribution recipes, and its agreement with the
exact sweep.

Same inputs for all: antonym prompts with their demonstrations' labels shuffled and the same
prompts with true labels (8 x 63 tokens, no padding). The patch is shuffled-label -> clean
(the clean run gets the shuffled run's activation); metric = probability of the answer's
first token.

* icl_lens: ``attribution_head_sweep(..., positions="each")`` (every head at every column),
  ``qk_fix=False`` and ``True``; ``attribution_resid_sweep(..., positions="each")`` (every
  layer's ``resid_pre`` at every column);
* TransformerLens: its attribution-patching demo's recipe (``transformer_lens.patching`` has
  no attribution function): the clean cache, then a forward and backward of the target with
  hooks keeping ``hook_z`` and its gradient;
* nnsight: its attribution-patching pattern, one clean trace and one target trace with a
  backward, on ``o_proj``'s input;
* the exact sweeps (the position engine) on one head in every third layer at every column,
  and on every third layer's ``resid_pre`` at every column (``--layer-step``): Spearman, Pearson and top-10 overlap of the
  estimates against them.

A last line compares attribution at the last position with the exact last-position sweep
and with one full forward per head (``method="plain"``, extrapolated from a sample).

    python benchmarks/attribution.py [--prompts 8 --shots 7 --plain-heads 18 --layer-step 3 --threads N]
                                     [--parts heads,resid,last]
"""

from __future__ import annotations

import argparse

import torch
from _shared import (
    equal_length_pair,
    load,
    machine,
    measure,
    nnsight_attribution,
    nnsight_model,
    setup,
    spread,
    tl_attribution,
)

from icl_lens.core import hooks
from icl_lens.patching import (
    attribution_head_sweep,
    attribution_resid_sweep,
    head_sweep,
    patching_agreement,
    resid_sweep,
)


def agreement(a) -> str:
    """A PatchingAgreement's three numbers, as every line here prints them."""
    return f"Spearman {a.spearman:.3f}, Pearson {a.pearson:.3f}, top-10 {a.top_k_overlap:.0%}"


def answer_prob(answers: torch.Tensor):
    def metric(logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits.float(), -1).gather(1, answers[:, None]).squeeze(1)

    return metric


def heads_at_positions(model, nn, clean, shuffled, step: int) -> None:
    s = hooks.spec(model)
    n, t = clean.tokens.shape
    kw = dict(metric="prob", positions="each")
    plain = measure(lambda: attribution_head_sweep(model, clean, shuffled, **kw))
    fixed = measure(lambda: attribution_head_sweep(model, clean, shuffled, qk_fix=True, **kw))
    units = [(l, (3 * l) % s.n_heads) for l in range(step // 2, s.n_layers, step)]
    exact = measure(lambda: head_sweep(model, clean, shuffled, heads=units, **kw))
    metric = answer_prob(clean.answer_ids)
    tl = measure(lambda: tl_attribution(model, shuffled, clean, metric))
    nns = measure(lambda: nnsight_attribution(nn, shuffled, clean, metric))
    estimate = plain.result.patched - plain.result.baseline
    a_plain = patching_agreement(plain.result, exact.result)
    a_fixed = patching_agreement(fixed.result, exact.result)
    print(
        f"(d) attribution, every head x every column, {n} prompts x {t} tokens ({s.n_layers * s.n_heads} heads x "
        f"{t} columns), antonym shuffled-label -> clean, prob: icl_lens {plain.wall:.1f} s (peak "
        f"+{plain.peak_mib:.0f} MiB), with the QK fix {fixed.wall:.1f} s (peak +{fixed.peak_mib:.0f} MiB) | "
        f"TransformerLens hooks recipe {tl.wall:.1f} s (peak +{tl.peak_mib:.0f} MiB): {tl.wall / plain.wall:.1f}x, "
        f"max |diff| {float((tl.result - estimate).abs().max()):.1e} | nnsight recipe {nns.wall:.1f} s (peak "
        f"+{nns.peak_mib:.0f} MiB): {nns.wall / plain.wall:.1f}x, max |diff| "
        f"{float((nns.result - estimate).abs().max()):.1e} | against the exact sweep of {len(units)} heads x {t} "
        f"columns ({exact.wall:.0f} s): AtP {agreement(a_plain)}; AtP* (QK fix) {agreement(a_fixed)} | {load()}",
        flush=True,
    )


def layers_at_positions(model, clean, shuffled, step: int) -> None:
    s = hooks.spec(model)
    n, t = clean.tokens.shape
    kw = dict(metric="prob", positions="each")
    plain = measure(lambda: attribution_resid_sweep(model, clean, shuffled, **kw))
    fixed = measure(lambda: attribution_resid_sweep(model, clean, shuffled, qk_fix=True, **kw))
    hybrid = measure(
        lambda: attribution_resid_sweep(model, clean, shuffled, qk_fix=True, exact_changed_tokens=True, **kw)
    )
    layers = list(range(step // 2, s.n_layers, step))
    exact = measure(lambda: resid_sweep(model, clean, shuffled, layers=layers, **kw))
    a_plain = patching_agreement(plain.result, exact.result)
    a_fixed = patching_agreement(fixed.result, exact.result)
    a_hybrid = patching_agreement(hybrid.result, exact.result)
    changed = (clean.tokens != shuffled.tokens).any(0)
    on = {
        name: patching_agreement(fixed.result.effect[:, cols], exact.result.effect[:, cols]).spearman
        for name, cols in (("changed", changed), ("unchanged", ~changed))
    }
    print(
        f"(d) attribution, resid_pre of every layer x every column, {n} prompts x {t} tokens: icl_lens "
        f"{plain.wall:.1f} s, with the QK fix {fixed.wall:.1f} s | against the exact sweep of {len(layers)} layers x "
        f"{t} columns ({exact.wall:.0f} s): AtP {agreement(a_plain)}; AtP* (QK fix) {agreement(a_fixed)} "
        f"(Spearman {on['unchanged']:.3f} on the "
        f"{int((~changed).sum())} columns whose token is the same in both prompts, {on['changed']:.3f} on the "
        f"{int(changed.sum())} whose token differs) | AtP* + exact at the changed columns ({s.n_layers} layers x "
        f"{int(changed.sum())} columns exact, {hybrid.wall:.1f} s): {agreement(a_hybrid)} | {load()}",
        flush=True,
    )


def last_position(model, clean, shuffled, plain_heads: int) -> None:
    s = hooks.spec(model)
    n, t = clean.tokens.shape
    n_all = s.n_layers * s.n_heads
    attr = measure(lambda: attribution_head_sweep(model, clean, shuffled, metric="prob"))
    exact = measure(lambda: head_sweep(model, clean, shuffled, metric="prob"))
    heads = spread([(l, h) for l in range(s.n_layers) for h in range(s.n_heads)], plain_heads)
    plain = measure(lambda: head_sweep(model, clean, shuffled, metric="prob", heads=heads, method="plain"))
    scale = n_all / len(heads)
    ok = ~torch.isnan(plain.result.patched)
    diff = float((plain.result.patched - exact.result.patched)[ok].abs().max())
    agree = patching_agreement(attr.result, exact.result, k=10)
    print(
        f"attribution vs exact at the last position, {n} prompts x {t} tokens, {n_all} heads: attribution "
        f"{attr.wall:.1f} s (peak +{attr.peak_mib:.0f} MiB) vs exact fast engine {exact.wall:.1f} s: "
        f"{exact.wall / attr.wall:.1f}x; vs exact one forward per head {plain.wall * scale:.0f} s [EXTRAPOLATED "
        f"from {len(heads)} heads x{scale:.0f}]: {plain.wall * scale / attr.wall:.0f}x; {agreement(agree)} "
        f"(fast vs plain exact max |diff| {diff:.1e}) | {load()}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--shots", type=int, default=7)
    parser.add_argument("--plain-heads", type=int, default=18, help="heads the plain exact sweep runs (270: all)")
    parser.add_argument("--layer-step", type=int, default=3, help="the exact sweeps: every k-th layer, from k // 2")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--parts", default="heads,resid,last", help="which comparisons, comma-separated")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    model = setup(args.threads)
    print(f"# SmolLM2-135M, {machine()}", flush=True)
    clean, shuffled = equal_length_pair(model, "antonym", args.prompts, args.shots)
    if "heads" in parts:
        heads_at_positions(model, nnsight_model(), clean, shuffled, args.layer_step)
    if "resid" in parts:
        layers_at_positions(model, clean, shuffled, args.layer_step)
    if "last" in parts:
        last_position(model, clean, shuffled, args.plain_heads)


if __name__ == "__main__":
    main()
