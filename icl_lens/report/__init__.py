"""The ``icl-lens report``: every analysis on one model and task, in one offline HTML page.

Each section calls one public ``icl_lens`` function; a function this version does not
export yet gives a section with a visible note, and a function that raises gives a
section with the error, so one missing or broken analysis never costs the others.
Beside ``report.html`` the output folder holds each result saved with
:meth:`~icl_lens.core.results.Result.save` (JSON + safetensors), its figure as a PNG, and
``report.json`` (what ran, how long, where each result is).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

from icl_lens.core import hooks
from icl_lens.core.errors import ConfigError
from icl_lens.core.progress import progress
from icl_lens.core.results import Config
from icl_lens.report.html import esc, page
from icl_lens.report.sections import (
    SECTION_KEYS,
    SECTIONS,
    SIZES,
    RunContext,
    Section,
    SectionSkipped,
    overrides_for,
    read_text,
)


def fast_mode() -> bool:
    """True when ``ICL_LENS_FAST=1``: CI sizes for the report and the notebooks."""
    return os.environ.get("ICL_LENS_FAST", "0") not in {"", "0", "false", "False", "no"}


@dataclasses.dataclass(frozen=True)
class ReportConfig(Config):
    """What the report runs.

    Attributes:
        task: task name or file for the task-specific sections.
        label_task: classification task for sections that need a label set (kernel
            regression) when ``task`` has none.
        size: ``"small"`` (a few minutes on 2 CPU cores), ``"tiny"`` (seconds; CI) or
            ``"paper"`` (each analysis's published defaults; slow on a CPU).
        sections: which sections to run, in report order.
        seed: passed to every analysis that takes one.
        text_path: natural text for the ICL score (default: text shipped with icl_lens, if any).
        attention_view: include the interactive circuitsvis view of the strongest induction layer.
    """

    task: str = "antonym"
    label_task: str = "animal_object"
    size: str = "small"
    sections: tuple[str, ...] = SECTION_KEYS
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
    """What happened to one section: ``status`` is ok, pending (not in this version), skipped or failed."""

    section: Section
    status: str
    note: str = ""
    summary: str = ""
    seconds: float = 0.0
    saved: str = ""
    png: bytes | None = None
    table_html: str = ""
    traceback: str = ""
    dropped: list[str] = dataclasses.field(default_factory=list)
    result: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.section.key,
            "title": self.section.title,
            "function": self.section.function,
            "status": self.status,
            "note": self.note,
            "summary": self.summary,
            "seconds": round(self.seconds, 2),
            "saved": self.saved,
            "dropped_settings": self.dropped,
        }


@dataclasses.dataclass
class Report:
    """The written report: its folder, page, and what happened to each section."""

    out: Path
    html_path: Path
    outcomes: list[SectionOutcome]
    attention_layer: int | None
    seconds: float

    def status(self, key: str) -> str:
        return next(o.status for o in self.outcomes if o.section.key == key)

    @property
    def failed(self) -> list[str]:
        return [o.section.key for o in self.outcomes if o.status == "failed"]


def build_report(
    model: Any,
    out: str | os.PathLike[str],
    config: ReportConfig | None = None,
    *,
    show_progress: bool | None = None,
    **overrides: Any,
) -> Report:
    """Run the report's analyses on ``model`` and write ``out/report.html`` and the results.

    Args:
        model: a TransformerBridge or HookedTransformer with a tokenizer.
        out: output folder (created; files in it are replaced).
        config: :class:`ReportConfig`; keyword ``overrides`` replace its fields.
        show_progress: progress bar over the sections (default: the global setting).
    """
    import icl_lens as il
    from icl_lens.core.models import model_name

    cfg = config or ReportConfig()
    if overrides:
        cfg = cfg.replace(**overrides)
    t0 = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = il.load_task(cfg.task)
    ctx = RunContext(
        model=model,
        task=task,
        size=cfg.size,
        seed=cfg.seed,
        text=read_text(cfg.text_path),
        label_task=il.load_task(cfg.label_task),
    )
    chosen = [s for s in SECTIONS if s.key in cfg.sections]
    outcomes = []
    for section in progress(chosen, total=len(chosen), desc="report", enabled=show_progress):
        outcome = run_section(il, section, ctx, out_dir, show_progress)
        outcomes.append(outcome)
        if outcome.result is not None:
            ctx.results[section.key] = outcome.result

    attention_html, layer = None, None
    if cfg.attention_view:
        from icl_lens.report.attention_view import attention_view

        try:
            view, layer, stripe = attention_view(model, seed=cfg.seed)
        except Exception as e:  # the page is still worth writing without the view
            attention_html = f'<p class="error">The attention view failed: {esc(type(e).__name__)}: {esc(e)}</p>'
        else:
            best = int(stripe.argmax())
            attention_html = (
                '<p class="why">Attention of every head in the layer with the strongest induction stripe '
                f"on a random token sequence repeated once: layer {layer}, strongest head L{layer}H{best} "
                f"(mean attention to the token after the earlier occurrence: {float(stripe[best]):.2f}). "
                "Hover over tokens to see where each head looks.</p>\n" + view
            )

    name = model_name(model)
    seconds = time.perf_counter() - t0
    facts = [
        ("model", name),
        ("task", f"{task.name} ({len(task)} pairs)"),
        ("size", cfg.size),
        ("written", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
        ("run time", f"{seconds:.0f} s"),
    ]
    footer = f"icl_lens {il.__version__}. Everything on this page is inline: it renders with no network."
    html_path = out_dir / "report.html"
    html_path.write_text(page(f"icl_lens report: {name}", facts, outcomes, attention_html, footer), encoding="utf-8")
    index = {
        "model": name,
        "config": cfg.to_dict(),
        "seconds": round(seconds, 1),
        "attention_layer": layer,
        "sections": [o.to_json() for o in outcomes],
    }
    (out_dir / "report.json").write_text(json.dumps(index, indent=1), encoding="utf-8")
    return Report(out_dir, html_path, outcomes, layer, seconds)


def run_section(
    il: Any, section: Section, ctx: RunContext, out_dir: Path, show_progress: bool | None
) -> SectionOutcome:
    function = getattr(il, section.function, None)
    if function is None:
        return SectionOutcome(
            section, "pending", note=f"il.{section.function} is not part of this version of icl_lens yet."
        )
    kwargs, dropped = overrides_for(section.key, ctx.size, function, ctx.seed, hooks.spec(ctx.model))
    kwargs = {**kwargs, "show_progress": show_progress} if _takes(function, "show_progress") else kwargs
    t0 = time.perf_counter()
    try:
        result = section.call(function, ctx, kwargs)
    except SectionSkipped as e:
        return SectionOutcome(section, "skipped", note=str(e), dropped=dropped)
    except Exception as e:  # one analysis failing must not cost the rest of the report
        return SectionOutcome(
            section,
            "failed",
            note=f"{type(e).__name__}: {e}",
            traceback=traceback.format_exc(),
            seconds=time.perf_counter() - t0,
            dropped=dropped,
        )
    seconds = time.perf_counter() - t0
    saved = result.save(out_dir / section.key)
    png = result.to_png()
    if png is not None:
        (out_dir / "figures").mkdir(exist_ok=True)
        (out_dir / "figures" / f"{section.key}.png").write_bytes(png)
    try:
        df = result.to_dataframe()
        table = df.head(12).to_html(float_format=lambda x: f"{x:.4g}", index=False, border=0)
        if len(df) > 12:
            table += f"<p>first 12 of {len(df)} rows; all in <code>{esc(section.key)}/</code></p>"
    except NotImplementedError:
        table = ""
    return SectionOutcome(
        section,
        "ok",
        summary=result.summary(),
        seconds=seconds,
        saved=str(saved.relative_to(out_dir)),
        png=png,
        table_html=table,
        dropped=dropped,
        result=result,
    )


def _takes(function: Any, name: str) -> bool:
    import inspect

    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


__all__ = ["SECTION_KEYS", "Report", "ReportConfig", "SectionOutcome", "build_report", "fast_mode", "run_section"]
