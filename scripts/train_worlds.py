"""Train the worlds shipped in icl_lens/data/worlds, measure them, and write them there.

    python scripts/train_worlds.py                 # every world
    python scripts/train_worlds.py tasks control   # some of them
    python scripts/train_worlds.py --threads 2 --runs runs/worlds

For each task world: train the configuration below from its fixed seed (timed), export
its last checkpoint (and, for "tasks", an early one at step ``EARLY``, which the tests
retrain and compare),
run ``check_vectors`` on the last checkpoint and ``vector_emergence`` over every
checkpoint, and save the emergence result beside the run. For the linear-regression
world: train it, save the run (its weights are a few hundred numbers) and compare it with
gradient descent. The numbers printed are the ones in docs/positive-controls.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from icl_lens.worlds.task_world import TaskToyConfig

ROOT = Path(__file__).resolve().parent.parent
EARLY = 20
"""The early checkpoint shipped with each task world, retrained by the tests."""

WORLDS = {
    "tasks": TaskToyConfig(),
    "tasks_natural": TaskToyConfig(tvp_layer=None),
}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def train_task_world(name: str, runs: Path, out: Path, reuse: bool) -> dict:
    from icl_lens.worlds import check_vectors, train_task_toy, vector_emergence
    from icl_lens.worlds.task_run import export_run

    config = WORLDS[name]
    run_dir = runs / name
    if not reuse:
        shutil.rmtree(run_dir, ignore_errors=True)
    print(f"[{name}] training ({load()})", flush=True)
    started = time.perf_counter()
    run = train_task_toy(config, run_dir)
    seconds = time.perf_counter() - started
    print(f"[{name}] trained in {seconds:.0f} s ({load()}); {run.summary()}", flush=True)
    target = out / name
    shutil.rmtree(target, ignore_errors=True)
    export_run(run, target / "run")
    if name == "tasks":
        early_dir = runs / f"{name}_early"
        shutil.rmtree(early_dir, ignore_errors=True)
        early = train_task_toy(config, early_dir, stop_after=EARLY, show_progress=False)
        shutil.copyfile(early.checkpoint_path(EARLY), target / "run" / "checkpoints" / f"step_{EARLY:06d}.safetensors")

    check = check_vectors(run.model, list(run.tasks))
    print(f"[{name}] {check.summary()}", flush=True)
    print(check.to_dataframe().to_string(), flush=True)
    emergence = vector_emergence(run)
    emergence.save(target / "emergence")
    print(f"[{name}] {emergence.summary()}", flush=True)
    return {"seconds": seconds, "check": check.summary(), "emergence": emergence.summary()}


def train_regression(runs: Path, out: Path) -> dict:
    from icl_lens.worlds import LinearRegressionConfig, compare_to_gradient_descent, train_linear_regression_toy

    run_dir = runs / "linear_regression"
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    run = train_linear_regression_toy(LinearRegressionConfig(), run_dir)
    seconds = time.perf_counter() - started
    print(f"[linear_regression] trained in {seconds:.1f} s ({load()}); {run.summary()}", flush=True)
    target = out / "linear_regression"
    shutil.rmtree(target, ignore_errors=True)
    run.save(target / "run")
    comparison = compare_to_gradient_descent(run)
    print(f"[linear_regression] {comparison.summary()}", flush=True)
    print(comparison.to_dataframe().to_string(), flush=True)
    return {"seconds": seconds, "comparison": comparison.summary()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("worlds", nargs="*", default=[*WORLDS, "linear_regression"])
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CI has 2 cores)")
    parser.add_argument("--runs", type=Path, default=Path("world_runs"), help="where full run directories go")
    parser.add_argument("--out", type=Path, default=ROOT / "icl_lens" / "data" / "worlds")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs found in --runs (no timing)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import icl_lens as il

    il.set_progress(False)
    summary = {}
    for name in args.worlds:
        if name == "linear_regression":
            summary[name] = train_regression(args.runs, args.out)
        else:
            summary[name] = train_task_world(name, args.runs, args.out, args.reuse)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
