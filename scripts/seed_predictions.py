#!/usr/bin/env python3
"""Measure the seed predictions of docs/seed-predictions.md and write their tables and figures.

Usage (from the repository root; one part at a time, each writes to ``--out``)::

    python scripts/seed_predictions.py tokens     # SmolLM2 on the Austen chapters, top-5 vs random
    python scripts/seed_predictions.py toy        # the default toy run, classes over training
    python scripts/seed_predictions.py selection  # nearest / kernel / random / farthest demonstrations
    python scripts/seed_predictions.py format     # templates, label forms, out-of-distribution inputs

Each part saves its results (``result.save``), a CSV per table and PNG figures in
``--out/<part>/`` and prints the tables. ``--threads`` sets torch's threads (default 1:
the numbers in the docs were measured on a shared 2-core machine).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

import icl_lens as il

CLASSIFICATION_TASKS = ("animal_object", "country_continent", "number_parity", "word_pos")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _table(name: str, df: pd.DataFrame, out: Path) -> None:
    df.to_csv(out / f"{name}.csv", index=False)
    _say(f"\n== {name}\n{df.to_string(index=False, float_format=lambda x: f'{x:.4g}')}")


def tokens(out: Path, fast: bool) -> None:
    from icl_lens.induction.token_losses import InductionTokenConfig, induction_token_losses

    model = il.load_model("smollm2")
    started = time.perf_counter()
    heads = il.find_induction_heads(model, weight_scores=False)
    _say(f"induction scan {time.perf_counter() - started:.0f} s; top 5: {heads.top_heads(5)}")
    config = InductionTokenConfig(n_contexts=2 if fast else 16, context_length=600, k=5, n_random_draws=3)
    started = time.perf_counter()
    result = induction_token_losses(model, None, config, heads=heads)
    _say(f"token losses {time.perf_counter() - started:.0f} s")
    result.save(out / "result")
    _table("counts", result.counts(), out)
    _table("class_table", result.class_table(), out)
    _table("differences", result.differences(), out)
    _table("ablation_table", result.ablation_table(), out)
    _table("by_position", result.by_position(), out)
    result.plot().savefig(out / "by_position.png", dpi=100)
    result.plot_ablation().savefig(out / "ablation.png", dpi=100)
    _say(result.summary())


def toy(out: Path, fast: bool) -> None:
    from icl_lens.induction.token_training import induction_token_losses_over_training

    config = il.ToyConfig(n_steps=300, checkpoint_every=50) if fast else il.ToyConfig()
    started = time.perf_counter()
    run = il.train_toy_model(config)  # the cached run of this config, if there is one
    phase = il.phase_change(run)
    result = induction_token_losses_over_training(run, phase=phase)
    _say(f"toy run and evaluation {time.perf_counter() - started:.0f} s")
    result.save(out / "result")
    _table("counts", result.counts(), out)
    _table(
        "by_step", result.to_dataframe().pivot(index="step", columns="token_class", values="loss").reset_index(), out
    )
    d = result.difference()
    _table("final_difference", pd.DataFrame([d.as_row()]), out)
    result.plot().savefig(out / "classes_over_training.png", dpi=100)
    result.plot_map().savefig(out / "derivative_map.png", dpi=100)
    _say(result.summary())


def _over_tasks(name: str, analysis, fast_sizes: dict, sizes: dict, out: Path, fast: bool) -> None:
    """Run a kernel-head analysis on the classification tasks; save each result, its figure and one table."""
    model = il.load_model("smollm2")
    frames = []
    for task in CLASSIFICATION_TASKS[:1] if fast else CLASSIFICATION_TASKS:
        started = time.perf_counter()
        result = analysis(model, task, **(fast_sizes if fast else sizes))
        _say(f"{task}: {time.perf_counter() - started:.0f} s")
        result.save(out / task)
        result.plot().savefig(out / f"{task}.png", dpi=100)
        df = result.to_dataframe()
        df.insert(0, "task", task)
        df.insert(1, "kernel_head", f"L{result.kernel_head[0]}H{result.kernel_head[1]}")
        frames.append(df)
        _say(result.summary())
    _table(name, pd.concat(frames, ignore_index=True), out)


def selection(out: Path, fast: bool) -> None:
    from icl_lens.hypotheses.selection import demonstration_selection

    _over_tasks(
        "selection",
        demonstration_selection,
        dict(n_queries=8, ks=(2,), kernel_prompts=4),
        dict(n_queries=100),
        out,
        fast,
    )


def formats(out: Path, fast: bool) -> None:
    from icl_lens.hypotheses.formats import format_sensitivity

    _over_tasks(
        "formats", format_sensitivity, dict(n_prompts=8, n_shots=2, kernel_prompts=4), dict(n_prompts=100), out, fast
    )


PARTS = {"tokens": tokens, "toy": toy, "selection": selection, "format": formats}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=sorted(PARTS))
    parser.add_argument("--out", default="seed_predictions", help="output directory")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, to check the script runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    il.set_progress(False)
    out = Path(args.out) / args.part
    out.mkdir(parents=True, exist_ok=True)
    PARTS[args.part](out, args.fast)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
