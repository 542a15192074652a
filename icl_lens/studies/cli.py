"""``icl-lens study ...``: run, inspect and merge studies from the command line.

icl-lens study run studies/smollm2_all_tasks.toml            # local, resumable
icl-lens study run spec.toml --executor ray --address auto   # on a Ray cluster
icl-lens study status spec.toml                              # finished / failed / killed / to do
icl-lens study merge spec.toml                               # cross-task tables and figures
icl-lens study slurm spec.toml                               # sbatch job arrays instead of Ray
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from icl_lens.core.errors import IclLensError


def add_study_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``study`` and its subcommands to the ``icl-lens`` parser."""
    p = sub.add_parser(
        "study",
        help="run models x tasks x analyses from a spec file (local, Ray or SLURM), resumable",
        description="A study spec (TOML) names models, tasks, analyses with their configs, and seeds. Each unit "
        "(model, task, analysis, seed) is computed once into a folder named by the hash of its inputs.",
    )
    study_sub = p.add_subparsers(dest="study_command", required=True, metavar="STUDY_COMMAND")

    r = study_sub.add_parser("run", help="compute every unfinished unit, then print done / skipped / failed")
    r.add_argument("spec", help="the study's TOML file")
    r.add_argument("--executor", choices=("local", "ray"), default="local", help="where units run (default: local)")
    r.add_argument(
        "--address", default=None, help="Ray: 'auto' or ray://host:port (default: spec's [ray], or a local instance)"
    )
    r.add_argument(
        "--group", choices=("model", "task", "unit"), default=None, help="Ray: units per task (default: spec)"
    )
    r.add_argument("--max-retries", type=int, default=None, help="Ray: retries of a task whose worker died")
    r.add_argument("--threads", type=int, default=None, help="torch threads per unit (default: the spec's num_cpus)")
    r.set_defaults(func=_cmd_run)

    s = study_sub.add_parser("status", help="which units are finished, failed, killed mid-way, or to do")
    s.add_argument("spec")
    s.add_argument("--units", action="store_true", help="list every unit, not only the counts")
    s.set_defaults(func=_cmd_status)

    m = study_sub.add_parser("merge", help="load the finished units, write the cross-task tables and figures")
    m.add_argument("spec")
    m.add_argument("--out", default=None, help="folder (default: <output>/merged)")
    m.set_defaults(func=_cmd_merge)

    x = study_sub.add_parser("slurm", help="write sbatch job arrays (one task per model and task) and submit.sh")
    x.add_argument("spec")
    x.add_argument("--out", default=None, help="folder (default: <output>/slurm)")
    x.set_defaults(func=_cmd_slurm)

    b = study_sub.add_parser("run-bundle", help="run one line of a SLURM bundle list (used by the job arrays)")
    b.add_argument("spec")
    b.add_argument("--bundles", required=True, help="a units-<model>.tsv written by `icl-lens study slurm`")
    b.add_argument("--index", type=int, required=True, help="the line (the array task id)")
    b.set_defaults(func=_cmd_run_bundle)

    a = study_sub.add_parser("analyses", help="list the analyses a spec can name")
    a.set_defaults(func=_cmd_analyses)


def _guard(fn):  # type: ignore[no-untyped-def]
    """A spec or run error is one line on stderr and exit status 2, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args) or 0)
        except IclLensError as e:
            print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
            return 2

    return run


def _load(path: str):  # type: ignore[no-untyped-def]
    from icl_lens.core.progress import set_progress
    from icl_lens.studies.study import Study

    set_progress(False)
    return Study.from_file(path)


@_guard
def _cmd_run(args: argparse.Namespace) -> int:
    import dataclasses

    study = _load(args.spec)
    if args.threads is not None:
        spec = study.spec
        study.spec = dataclasses.replace(spec, resources=dataclasses.replace(spec.resources, num_cpus=args.threads))
    options = {
        k: v
        for k, v in (("address", args.address), ("group", args.group), ("max_retries", args.max_retries))
        if v is not None
    }
    if options and args.executor != "ray":
        print(
            f"error: {', '.join('--' + k.replace('_', '-') for k in options)} only apply to --executor ray",
            file=sys.stderr,
        )
        return 2
    n = [0]
    t0 = time.perf_counter()

    def line(o) -> None:  # type: ignore[no-untyped-def]
        n[0] += 1
        extra = f"  {o.error}" if o.error else ""
        print(
            f"[{n[0]:>4}] {time.perf_counter() - t0:7.0f}s  {o.status:<7} {o.seconds:7.1f} s  "
            f"{o.analysis} | {o.model} | {o.task} | seed {o.seed}{extra}",
            flush=True,
        )

    print(f"{study!r}", flush=True)
    report = study.run(args.executor, on_outcome=line, show_progress=False, **options)
    print()
    print(report.table().to_string(index=False))
    print(f"\n{report.summary()}")
    print(f"results in {study.output}/units; `icl-lens study merge {args.spec}` builds the cross-task tables")
    return 1 if report.failed else 0


@_guard
def _cmd_status(args: argparse.Namespace) -> int:
    study = _load(args.spec)
    status = study.status()
    if args.units:
        print(status.to_dataframe().to_string(index=False))
    else:
        print(status.table().to_string())
    print(f"\n{status.summary()}")
    return 0


@_guard
def _cmd_merge(args: argparse.Namespace) -> int:
    study = _load(args.spec)
    merged = study.merge()
    out = merged.save(Path(args.out) if args.out else study.output / "merged")
    print(merged.summary())
    print(f"\nwrote {out}/tables.md, one folder per result (il.load_result) and figures")
    return 0


@_guard
def _cmd_slurm(args: argparse.Namespace) -> int:
    study = _load(args.spec)
    export = study.export_slurm(args.out)
    for script in export.scripts:
        print(f"wrote {script}")
    print(f"wrote {export.finish}\n{export.n_tasks} array tasks; submit with: bash {export.submit}")
    return 0


@_guard
def _cmd_run_bundle(args: argparse.Namespace) -> int:
    from icl_lens.studies.executors import resources_for
    from icl_lens.studies.slurm import read_bundle
    from icl_lens.studies.spec import StudySpecError
    from icl_lens.studies.units import run_bundle

    study = _load(args.spec)
    model, task, keys = read_bundle(args.bundles, args.index)
    units = {u.key: u for u in study.units(model)}
    missing = [k for k in keys if k not in units]
    if missing:
        raise StudySpecError(f"{args.bundles} lists units the spec no longer has ({len(missing)}); export again")
    outcomes = run_bundle(
        [units[k] for k in keys],
        entry=study.model_entry(model),
        tasks=study.tasks,
        analyses=study.analyses(),
        output=study.output,
        threads=resources_for(study.spec, model).threads,
    )
    for o in outcomes:
        print(f"{o.status:<7} {o.seconds:7.1f} s  {o.analysis} | {o.model} | {o.task}  {o.error}".rstrip(), flush=True)
    return 1 if any(o.status == "failed" for o in outcomes) else 0


@_guard
def _cmd_analyses(args: argparse.Namespace) -> int:
    from icl_lens.studies.registry import list_analyses

    for a in list_analyses():
        if isinstance(a.split_model, bool):
            split = "" if a.split_model else "  (one device only)"
        else:
            split = f"  (on a split model with {dict(a.split_model)})"
        print(f"{a.name:<22} {a.input:<6} {a.config_cls.__name__:<24} {a.description}{split}")
    return 0


__all__ = ["add_study_commands"]
