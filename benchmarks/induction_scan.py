"""Time the full induction scan on SmolLM2 against one plain forward of the same batch.

The scan (``il.find_induction_heads`` with default settings) runs one forward pass over
the probe batch with hooks that reduce each layer's attention pattern and head outputs to
scores on the fly, plus the weight-based scores (copying eigenvalues, K-composition into
the top 20 induction heads). The references are the same token batch through
``model.run_with_cache`` (every activation cached, what a hand-written scan starts from)
and a plain forward with nothing cached. Prints the times (best of ``--repeats``) and the
ratios.

    python benchmarks/induction_scan.py [--repeats 2] [--no-weights]
"""

from __future__ import annotations

import argparse
import time

import torch

import icl_lens as il
from icl_lens.induction import sequences as seq


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--no-weights", action="store_true", help="attention scores only (no copying eigenvalues / K-composition)"
    )
    args = parser.parse_args()
    il.set_progress(False)
    model = il.load_model("smollm2")
    config = il.InductionConfig(weight_scores=not args.no_weights)
    bos = seq.bos_token_id(model)
    probe = seq.make_probe_batch(
        seq.ordinary_token_ids(model, bos),
        bos,
        config.repeat_lengths,
        config.n_sequences,
        config.prefix_length,
        config.prefix_copies,
        config.seed,
    )
    tokens = probe.tokens

    def plain_forward() -> None:
        with torch.no_grad():
            model(tokens)

    def cached_forward() -> None:
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        del cache

    plain_forward()  # warm-up
    forward_s = best_of(plain_forward, args.repeats)
    cached_s = best_of(cached_forward, args.repeats)
    scan_s = best_of(lambda: il.find_induction_heads(model, config), args.repeats)
    print(f"model: SmolLM2-135M-Instruct, {tuple(tokens.shape)} probe tokens, torch threads {torch.get_num_threads()}")
    print(f"plain forward of the probe batch  : {forward_s:7.2f} s")
    print(f"run_with_cache of the probe batch : {cached_s:7.2f} s")
    print(f"full induction scan               : {scan_s:7.2f} s  (weight scores {'off' if args.no_weights else 'on'})")
    print(f"ratio scan / run_with_cache       : {scan_s / cached_s:7.2f}")
    print(f"ratio scan / plain forward        : {scan_s / forward_s:7.2f}")


if __name__ == "__main__":
    main()
