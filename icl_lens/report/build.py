"""Build the report: run the sections, save each result, write one offline HTML page.

Beside ``report.html`` the output folder holds each result saved with
:meth:`~icl_lens.core.results.Result.save` (JSON + safetensors), its figure as a PNG, and
``report.json`` (what ran, how long, where each result is). One analysis that raises
costs only its own section.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any, Literal

from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel, spec
from icl_lens.core.models import model_name
from icl_lens.core.progress import progress
from icl_lens.core.result_files import check_results_folder
from icl_lens.core.results import Config, Result
from icl_lens.core.version import __version__
from icl_lens.induction.detectors_result import InductionHeadsResult
from icl_lens.induction.views import attention_view
from icl_lens.prompting.tasks import Task, load_task
from icl_lens.report.findings import finding
from icl_lens.report.html import esc, findings_html, page
from icl_lens.report.names import fast_mode as fast_mode
from icl_lens.report.sections import (
    DEFAULT_SECTIONS,
    SECTION_KEYS,
    SECTIONS,
    SIZES,
    RunContext,
    Section,
    SectionSkipped,
    read_text,
    run,
)
from icl_lens.worlds.task_run import TaskToyRun

Status = Literal["ok", "skipped", "failed"]

TABLE_ROWS = 12
"""Rows of each result's table shown in the page (all of them are in the saved result)."""


@dataclasses.dataclass(frozen=True)
class ReportConfig(Config):
    """What the report runs.

    Attributes:
        task: task name or file for the task-specific sections; on a toy world, one of its
            tasks (the default, ``present_past``, stands for the world's first
            classification task there).
        label_task: classification task for sections that need a label set (kernel
            regression) when ``task`` has none.
        size: ``"small"`` (a few minutes on 2 CPU cores), ``"tiny"`` (seconds; CI) or
            ``"paper"`` (each analysis's published defaults; slow on a CPU).
        sections: which sections to run, in report order.
        seed: passed to every analysis that takes one.
        text_path: natural text for the ICL score (default: the text shipped with icl_lens).
        attention_view: include the interactive circuitsvis view of the strongest induction heads.
    """

    task: str = "present_past"
    label_task: str = "word_pos"
    size: str = "small"
    sections: tuple[str, ...] = DEFAULT_SECTIONS
    seed: int = 0
    text_path: str | None = None
    attention_view: bool = True

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ConfigError(f"size must be one of {SIZES}, got {self.size!r}")
        object.__setattr__(self, "sections", tuple(self.sections))
        unknown = [k for k in self.sections if k not in SECTION_KEYS]
        if unknown:
            raise ConfigError(f"unknown report sections {unknown}; choose from {list(SECTION_KEYS)}")


@dataclasses.dataclass
class SectionOutcome:
    """What happened to one section."""

    section: Section
    status: Status
    note: str = ""
    summary: str = ""
    seconds: float = 0.0
    saved: str = ""
    png: bytes | None = None
    table_html: str = ""
    traceback: str = ""
    result: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.section.key,
            "title": self.section.title,
            "function": self.section.function.__name__,
            "status": self.status,
            "note": self.note,
            "summary": self.summary,
            "seconds": round(self.seconds, 2),
            "saved": self.saved,
        }


@dataclasses.dataclass
class Report:
    """The written report: its folder, page, and what happened to each section."""

    out: Path
    html_path: Path
    outcomes: list[SectionOutcome]
    attention_heads: tuple[tuple[int, int], ...]
    seconds: float

    def status(self, key: str) -> str:
        return next(o.status for o in self.outcomes if o.section.key == key)

    @property
    def failed(self) -> list[str]:
        return [o.section.key for o in self.outcomes if o.status == "failed"]


def build_report(
    model: HookedModel | TaskToyRun,
    out: str | os.PathLike[str],
    config: ReportConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> Report:
    """Run the report's analyses on ``model`` and write ``out/report.html`` and the results.

    Args:
        model: a TransformerBridge with a tokenizer, or a toy world's run
            (:func:`~icl_lens.worlds.load_world`), whose tasks and prompt format it then uses.
        out: output folder (created; the report's own files in it are replaced).
        config: :class:`ReportConfig`; keyword ``overrides`` replace its fields.
        show_progress: progress bar over the sections (default: the global setting).
    """
    cfg = ReportConfig.resolve(config, overrides)
    t0 = time.perf_counter()
    out_dir = check_results_folder(out, cfg.sections)
    world_tasks: tuple[Task, ...] = ()
    if isinstance(model, TaskToyRun):
        world_tasks, model = model.tasks, model.model
        task, label_task = world_task(world_tasks, cfg.task), None
        cfg = cfg.replace(task=task.name)  # report.json names the task that ran
    else:
        task, label_task = load_task(cfg.task), load_task(cfg.label_task)
    text = read_text(cfg.text_path)
    ctx = RunContext(model=model, task=task, text=text, label_task=label_task, world_tasks=world_tasks)
    chosen = [s for s in SECTIONS if s.key in cfg.sections]
    outcomes = []
    for section in progress(chosen, total=len(chosen), desc="report", enabled=show_progress):
        config = section.config_for(cfg.size, spec(model), cfg.seed, world=bool(world_tasks))
        outcome = run_section(section, ctx, config, out_dir)
        outcomes.append(outcome)
        if outcome.result is not None:
            ctx.results[section.key] = outcome.result

    attention_html, heads = None, ()
    # A toy world's context is too short for the default repeated sequences: the view only follows a scan.
    if cfg.attention_view and not (world_tasks and "induction" not in ctx.results):
        attention_html, heads = _attention_section(model, ctx.results.get("induction"), cfg.seed)

    name = model_name(model)
    seconds = time.perf_counter() - t0
    facts = [
        ("model", name),
        ("task", f"{task.name} ({len(task)} pairs)"),
        ("size", cfg.size),
        ("written", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("run time", f"{seconds:.0f} s"),
    ]
    footer = f"icl_lens {__version__}. Everything on this page is inline: it renders with no network."
    html_path = out_dir / "report.html"
    found = [finding(o.section.key, o.section.title, o.result) for o in outcomes if o.result is not None]
    html = page(f"icl_lens report: {name}", facts, outcomes, attention_html, footer, findings_html(found, outcomes))
    html_path.write_text(html, encoding="utf-8")
    index = {
        "model": name,
        "config": cfg.to_dict(),
        "seconds": round(seconds, 1),
        "attention_heads": [list(h) for h in heads],
        "sections": [o.to_json() for o in outcomes],
        "findings": [dataclasses.asdict(f) for f in found],
    }
    (out_dir / "report.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return Report(out_dir, html_path, outcomes, tuple(heads), seconds)


def world_task(tasks: tuple[Task, ...], name: str) -> Task:
    """The toy world's task called ``name`` (the report's default task: its first classification task)."""
    by_name = {t.name: t for t in tasks}
    if name in by_name:
        return by_name[name]
    if name == ReportConfig.task:
        return next((t for t in tasks if t.labels), tasks[0])
    raise ConfigError(f"task {name!r} is not a task of this toy world; choose from {', '.join(by_name)}")


def run_section(section: Section, ctx: RunContext, config: Config, out_dir: Path) -> SectionOutcome:
    """Run one section, save its result and figure under ``out_dir``; never raises for the analysis."""
    t0 = time.perf_counter()
    try:
        result = run(section, ctx, config, show_progress=False)
    except SectionSkipped as e:
        return SectionOutcome(section, "skipped", note=str(e))
    except Exception as e:  # one analysis failing must not cost the rest of the report
        return SectionOutcome(
            section,
            "failed",
            note=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
            seconds=time.perf_counter() - t0,
        )
    seconds = time.perf_counter() - t0
    saved = result.save(out_dir / section.key)
    png = result.to_png()
    if png is not None:
        (out_dir / "figures").mkdir(exist_ok=True)
        (out_dir / "figures" / f"{section.key}.png").write_bytes(png)
    return SectionOutcome(
        section,
        "ok",
        summary=result.summary(),
        seconds=seconds,
        saved=str(saved.relative_to(out_dir)),
        png=png,
        table_html=_table(result, section),
        result=result,
    )


def _table(result: Result, section: Section) -> str:
    try:
        df = result.to_dataframe()
    except NotImplementedError:
        return ""
    if section.sort_by is not None and section.sort_by in df.columns:
        df = df.sort_values(section.sort_by, ascending=False, kind="stable")
    table = df.head(TABLE_ROWS).to_html(float_format=lambda x: f"{x:.4g}", index=False, border=0)
    if len(df) > TABLE_ROWS:
        table += f"<p>first {TABLE_ROWS} of {len(df)} rows; all in <code>{esc(section.key)}/</code></p>"
    return table


def _attention_section(
    model: HookedModel, scan: InductionHeadsResult | None, seed: int
) -> tuple[str, tuple[tuple[int, int], ...]]:
    """The circuitsvis view of the strongest induction heads, strongest first (it opens on it)."""
    try:
        if scan is None:
            from icl_lens.induction.detectors import find_induction_heads

            scan = find_induction_heads(model, n_sequences=2, weight_scores=False, seed=seed, show_progress=False)
        heads = tuple(scan.top_heads(spec(model).n_heads))
        view = attention_view(model, heads, scan.config)
    except Exception as e:  # the page is still worth writing without the view
        return f'<p class="error">The attention view failed: {esc(type(e).__name__)}: {esc(e)}</p>', ()
    layer, head = heads[0]
    why = (
        '<p class="why">Attention of the strongest induction heads on a random token sequence repeated once, '
        f"strongest first: L{layer}H{head} (induction score {float(scan.induction_mean[layer, head]):.2f}). "
        "Hover over tokens to see where each head looks.</p>\n"
    )
    return why + view.html, heads
