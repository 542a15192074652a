"""The ``icl-lens`` command line.

``icl-lens report`` runs every analysis on one model and task and writes an offline HTML
report; ``tasks``, ``accuracy``, ``induction``, ``fv`` and ``tv`` run one thing each.
Defaults finish in minutes on a laptop CPU; ``--size paper`` uses the published settings.

Every argument (the task and its file, the model folder, the output folder, the text
file, numbers) is checked before anything is loaded. An error is one line on stderr that
says what to do, never a traceback. Exit status: 0 success; 1 an error, or every report
section failed; 2 a bad argument; 3 some report sections failed (the others are written).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Only light modules at the top: arguments are checked before torch is imported, so a
# bad one is answered in a fraction of a second (tests/report/test_cli_bad_input.py).
from icl_lens.core.errors import IclLensError
from icl_lens.report.names import DEFAULT_SECTIONS, SECTION_KEYS, SIZES, WORLD_SECTIONS, fast_mode
from icl_lens.studies.cli import add_study_commands
from icl_lens.worlds.registry import TOY_PREFIX, toy_world, world_task_names

if TYPE_CHECKING:
    from icl_lens.core.hooks import HookedModel
    from icl_lens.prompting.tasks import Task
    from icl_lens.worlds.task_run import TaskToyRun

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3

MODEL_HELP = (
    "'smollm2' (offline), a toy world with known answers ('toy:tasks', 'toy:tasks_natural'; offline), "
    "a local HF directory, or a hub name"
)

DEMO_TASKS = ("antonym", "country_capital", "english_french", "present_past", "uppercase", "next_item")


def _cmd_tasks(args: argparse.Namespace) -> int:
    from icl_lens.prompting.tasks import task_info

    print(f"{'task':<20} {'pairs':>6} {'1-token':>8}  labels / description")
    for info in task_info():
        labels = ", ".join(info["labels"]) if info.get("labels") else info.get("description", "")
        print(f"{info['name']:<20} {info['n_pairs']:>6} {info.get('n_single_token_smollm2', '?'):>8}  {labels}")
    return 0


def _cmd_accuracy(args: argparse.Namespace) -> int:
    from icl_lens.prompting.evaluation import IclEvalConfig, evaluate_icl
    from icl_lens.prompting.tasks import list_tasks

    t0 = time.perf_counter()
    world = _load_world(args)
    model = world.model if world is not None else _load(args)
    if world is not None:
        tasks: list[str | Task] = [_world_task(world, t) for t in args.tasks] if args.tasks else list(world.tasks)
    else:
        tasks = list(args.tasks or [t for t in DEMO_TASKS if t in list_tasks()])
    cfg = IclEvalConfig(shots=tuple(args.shots), n_prompts=args.n_prompts, seed=args.seed, template=args.template)
    result = evaluate_icl(model, tasks, config=cfg)
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


def _size(args: argparse.Namespace) -> str:
    return args.size or ("tiny" if fast_mode() else "small")


def _load_world(args: argparse.Namespace) -> TaskToyRun | None:
    """The shipped toy world ``--model toy:<world>`` names (``None`` for any other model)."""
    name = toy_world(args.model)
    if name is None:
        return None
    from icl_lens.worlds.registry import load_world

    t0 = time.perf_counter()
    world = load_world(name)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return world


def _world_task(world: TaskToyRun, name: str | None) -> Task:
    from icl_lens.report.build import ReportConfig, world_task

    return world_task(world.tasks, name or ReportConfig.task)


def _load(args: argparse.Namespace) -> HookedModel:
    from icl_lens.core.models import load_model

    t0 = time.perf_counter()
    model = load_model(args.model)
    print(f"loaded {args.model} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return model


def _cmd_report(args: argparse.Namespace) -> int:
    from icl_lens.report import ReportConfig, build_report

    world = _load_world(args)
    default = WORLD_SECTIONS if world is not None else ReportConfig().sections
    sections = tuple(args.sections) if args.sections else default
    cfg = ReportConfig(
        task=args.task or ReportConfig.task,
        size=_size(args),
        sections=sections,
        seed=args.seed,
        text_path=args.text,
        attention_view=not args.no_attention_view,
    )
    report = build_report(world if world is not None else _load(args), args.out, cfg)
    for o in report.outcomes:
        line = o.summary if o.status == "ok" else o.note
        print(f"{o.section.key:<18} {o.status:<8} {o.seconds:6.1f} s  {line}")
    print(f"\nwrote {report.html_path} (open it in a browser; it needs no network) [{report.seconds:.0f} s]")
    if not report.failed:
        return EXIT_OK
    ran = [o for o in report.outcomes if o.status != "skipped"]
    everything = len(report.failed) == len(ran)
    print(
        f"icl-lens: {len(report.failed)} of {len(ran)} sections failed ({', '.join(report.failed)}); "
        f"their errors are in {report.html_path}",
        file=sys.stderr,
    )
    return EXIT_ERROR if everything or args.strict else EXIT_PARTIAL


def _cmd_single(args: argparse.Namespace) -> int:
    """``induction``, ``fv``, ``tv``: one report section, printed and saved."""
    from icl_lens.core.hooks import spec
    from icl_lens.prompting.tasks import load_task
    from icl_lens.report import RunContext, run_section, section

    chosen = section(args.section)
    world = _load_world(args)
    if world is not None:
        model, task = world.model, _world_task(world, getattr(args, "task", None))
    else:
        task = load_task(args.task) if getattr(args, "task", None) else load_task("present_past")
        model = _load(args)
    ctx = RunContext(model=model, task=task, world_tasks=world.tasks if world is not None else ())
    out = Path(args.out)
    config = chosen.config_for(_size(args), spec(model), args.seed, world=world is not None)
    outcome = run_section(chosen, ctx, config, out)
    if outcome.status != "ok":
        print(f"icl-lens: {chosen.title} {outcome.status}: {' '.join(outcome.note.split())}", file=sys.stderr)
        return EXIT_ERROR
    print(outcome.result.to_dataframe().head(args.rows).to_string())
    print(f"\n{outcome.summary}  [{outcome.seconds:.0f} s]")
    print(f"wrote {out / outcome.saved}/ (il.load_result) and {out / 'figures' / (chosen.key + '.png')}")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (the usage is one ``--help`` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="icl-lens",
        description=(
            "Take in-context learning apart: induction heads, function vectors, task vectors, patching. "
            "Start with `icl-lens report` (everything, one HTML page) or `icl-lens tasks` (what you can run)."
        ),
        epilog="Models: 'smollm2' works offline, and so do the toy worlds with known answers ('toy:tasks', "
        "'toy:tasks_natural'); any TransformerLens / Hugging Face name needs internet once.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp: argparse.ArgumentParser, task: bool = True) -> None:
        sp.add_argument("--model", default="smollm2", help=MODEL_HELP)
        if task:
            sp.add_argument(
                "--task",
                default=None,
                help="built-in task (see `icl-lens tasks`) or a .json/.csv file (default: present_past; "
                "on a toy world, one of its tasks, default its first classification task)",
            )
        sp.add_argument(
            "--size",
            choices=SIZES,
            default=None,
            help="how much work: tiny (seconds), small (minutes on a CPU; the default), paper (published settings)",
        )
        sp.add_argument("--seed", type=int, default=0, help="seed of every prompt sample")

    r = sub.add_parser(
        "report",
        help="run every analysis and write one self-contained HTML report",
        description="Runs ICL accuracy, the induction scan, the ICL score on natural text, the function and task "
        "vectors for --task, the implant evaluation and the kernel-regression check, then writes OUT/report.html "
        "(renders offline) with the saved results beside it.",
    )
    common(r)
    r.add_argument("--out", default="report", help="output folder (default: report/)")
    r.add_argument("--sections", nargs="*", choices=SECTION_KEYS, help="run only these sections")
    r.add_argument(
        "--text", default=None, help="natural text file for the ICL score (default: the built-in Austen chapters)"
    )
    r.add_argument("--no-attention-view", action="store_true", help="leave out the interactive attention view")
    r.add_argument(
        "--strict", action="store_true", help="exit with status 1 (not 3) when some sections fail and others work"
    )
    r.set_defaults(func=_cmd_report)

    t = sub.add_parser("tasks", help="list the built-in ICL tasks and their sizes")
    t.set_defaults(func=_cmd_tasks)

    for name, key, help_text, takes_task in (
        ("induction", "induction", "find induction heads (scores of every head)", False),
        ("fv", "function_vector", "extract the function vector of a task (Todd et al. 2023)", True),
        ("tv", "task_vector", "extract task vectors of a task at every layer (Hendel et al. 2023)", True),
    ):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        common(sp, task=takes_task)
        sp.add_argument("--out", default="results", help="folder for the saved result and figure")
        sp.add_argument("--rows", type=int, default=15, help="table rows to print")
        sp.set_defaults(func=_cmd_single, section=key)

    a = sub.add_parser("accuracy", help="ICL accuracy by number of demonstrations")
    a.add_argument("--model", default="smollm2", help=MODEL_HELP)
    a.add_argument("--tasks", nargs="*", help="task names or .json/.csv files (default: a few built-ins)")
    a.add_argument("--shots", nargs="*", type=int, default=[0, 1, 2, 5, 10], help="shot counts")
    a.add_argument("--n-prompts", type=int, default=50, help="prompts (queries) per task")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--template", default="hendel", help="'hendel' (x -> y), 'todd' (Q: x / A: y) or a format string")
    a.add_argument("--out", default="results", help="folder for the table and the saved result ('' for none)")
    a.set_defaults(func=_cmd_accuracy)
    add_study_commands(sub)
    return p


def check_arguments(args: argparse.Namespace) -> list[str]:
    """Every problem with the arguments, one line each, found without importing torch or loading a model."""
    from icl_lens.core import validate
    from icl_lens.core.model_access import SMOLLM2_ALIASES, check_model_dir
    from icl_lens.core.result_files import check_results_folder

    problems: list[str] = []

    def check(fn, *a, **k):  # type: ignore[no-untyped-def]
        try:
            return fn(*a, **k)
        except IclLensError as e:
            problems.append(" ".join(str(e).split()))
            return None

    if getattr(args, "seed", None) is not None and args.seed < 0:
        problems.append(f"--seed must be >= 0, got {args.seed}")
    for name in ("n_prompts", "rows"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            problems.append(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if any(s < 0 for s in getattr(args, "shots", None) or ()):
        problems.append(f"--shots must be >= 0, got {args.shots}")
    model = getattr(args, "model", None)
    world = check(toy_world, model) if model is not None else None
    named = [args.task] if getattr(args, "task", None) is not None else list(getattr(args, "tasks", None) or ())
    if world is not None:
        known = world_task_names(world)
        problems.extend(
            f"--task {t}: not a task of toy world {world}; choose from {', '.join(known)}"
            for t in named
            if t not in known
        )
    elif named:
        from icl_lens.prompting.tasks import load_task

        for task in named:
            check(load_task, task)
    is_toy = model is not None and model.strip().lower().startswith(TOY_PREFIX)  # checked above
    if model is not None and not is_toy and model.strip().lower() not in SMOLLM2_ALIASES:
        path = Path(model).expanduser()
        if path.exists():
            check(check_model_dir, path)
        elif model.startswith((".", "/", "~")) or model.count("/") > 1:
            problems.append(f"--model {model}: no such folder; give a HuggingFace model folder, a hub name or smollm2")
    if getattr(args, "text", None):
        check(validate.read_text_file, validate.path(args.text, "--text"), "--text file")
    if getattr(args, "out", None) and args.command != "study":  # a study's folders are its own (studies/)
        # Where each result will be saved: nothing there may be overwritten that icl_lens did not write.
        if args.command == "report":
            names = tuple(args.sections or (WORLD_SECTIONS if world is not None else DEFAULT_SECTIONS))
        else:
            names = ("accuracy",) if args.command == "accuracy" else (args.section,)
        check(check_results_folder, args.out, names)
    if getattr(args, "spec", None) is not None and not Path(args.spec).is_file():
        problems.append(f"study spec {args.spec} does not exist; give the path of a study's .toml file")
    return problems


def main(argv: list[str] | None = None) -> int:
    """Run ``icl-lens``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)  # a malformed command line: one line, status 2
    try:
        problems = check_arguments(args)
        if problems:
            for line in problems[:2] if len(problems) > 3 else problems:
                print(f"icl-lens: error: {line}", file=sys.stderr)
            if len(problems) > 3:
                print(f"icl-lens: error: ... and {len(problems) - 2} more problems with the arguments", file=sys.stderr)
            return EXIT_USAGE
        return int(args.func(args) or 0)
    except IclLensError as e:
        print(f"icl-lens: error: {' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("icl-lens: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: one line, the traceback on request
        if os.environ.get("ICL_LENS_DEBUG"):
            raise
        first = (str(e).splitlines() or [""])[0][:200]
        print(
            f"icl-lens: internal error {type(e).__name__}: {first} (run with ICL_LENS_DEBUG=1 for the traceback, "
            "and please report it)",
            file=sys.stderr,
        )
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
