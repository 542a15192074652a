"""The ``icl-lens`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

DEMO_TASKS = ("antonym", "country_capital", "english_french", "present_past", "uppercase", "next_item")


def _cmd_tasks(args: argparse.Namespace) -> int:
    from icl_lens.tasks import task_info

    print(f"{'task':<20} {'pairs':>6} {'1-token':>8}  labels / description")
    for info in task_info():
        labels = ", ".join(info["labels"]) if info.get("labels") else info.get("description", "")
        print(f"{info['name']:<20} {info['n_pairs']:>6} {info.get('n_single_token_smollm2', '?'):>8}  {labels}")
    return 0


def _cmd_accuracy(args: argparse.Namespace) -> int:
    import icl_lens as il

    t0 = time.perf_counter()
    model = il.load_model(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    tasks = args.tasks or [t for t in DEMO_TASKS if t in il.list_tasks()]
    cfg = il.IclEvalConfig(shots=tuple(args.shots), n_prompts=args.n_prompts, seed=args.seed, template=args.template)
    result = il.evaluate_icl(model, tasks, config=cfg)
    table = result.table()
    text = table.to_string(float_format=lambda x: f"{x:.0%}")
    print(f"\nFirst-token top-1 accuracy by number of demonstrations ({args.n_prompts} prompts per cell):\n")
    print(text)
    print(f"\n{result.summary()}  [{time.perf_counter() - t0:.0f} s]")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "accuracy.md").write_text(table.to_markdown(floatfmt=".2f") + "\n")
        result.save(out / "accuracy")
        print(f"wrote {out / 'accuracy.md'} and {out / 'accuracy'}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="icl-lens",
        description="Take in-context learning apart: induction heads, function vectors, task vectors, patching.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tasks", help="list the built-in ICL tasks and their sizes")
    t.set_defaults(func=_cmd_tasks)
    a = sub.add_parser("accuracy", help="ICL accuracy by number of demonstrations")
    a.add_argument("--model", default="smollm2", help="'smollm2' (offline), a local HF directory, or a hub name")
    a.add_argument("--tasks", nargs="*", help="task names or .json/.csv files (default: a few built-ins)")
    a.add_argument("--shots", nargs="*", type=int, default=[0, 1, 2, 5, 10], help="shot counts")
    a.add_argument("--n-prompts", type=int, default=50, help="prompts (queries) per task")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--template", default="hendel", help="'hendel' (x -> y), 'todd' (Q: x / A: y) or a format string")
    a.add_argument("--out", default="results", help="folder for the table and the saved result ('' for none)")
    a.set_defaults(func=_cmd_accuracy)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
