"""Merging a study: every finished unit's result, and the cross-task results built from them.

Nothing here runs a model: everything is read from the units' directories, so a study
merged after a local run and after a Ray run of the same spec gives equal results, bit
for bit, when the units are equal.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from icl_lens.core.errors import ConfigError
from icl_lens.core.results import Result, results_equal
from icl_lens.core.stats import PairedComparison, accuracy_interval, rate_interval
from icl_lens.studies.tables import InductionVsFvResult, StudyAccuracyResult, VectorTableResult
from icl_lens.studies.units import Unit
from icl_lens.studies.universal import UNIVERSAL_KIND, heads_label, universal_heads
from icl_lens.studies.universal_result import ACCURACIES, UniversalFvResult

if TYPE_CHECKING:
    from icl_lens.studies.study import Study
    from icl_lens.vectors.implant_result import ImplantResult
    from icl_lens.vectors.task_vector_result import TaskVectorResult

_IMPLANT = {"zero_shot": "zero_shot", "zs_fv": "zero_shot+vector", "icl": "icl"}
_IMPLANT.update({"shuffled": "shuffled", "shuffled_fv": "shuffled+vector"})


@dataclasses.dataclass(frozen=True)
class StudyResults:
    """A merged study.

    Attributes:
        units: ``(unit, result)`` of every finished unit.
        accuracy: ICL accuracy across models and tasks (``accuracy`` units), or ``None``.
        vectors: the FV / TV table (``fv_implant`` and ``task_vector`` units), or ``None``.
        universal: the universal FV heads, one per model and seed.
        induction_vs_fv: induction score against FV score per head (``induction`` and
            ``function_vector`` units), or ``None``.
        notes: what could not be computed, and why.
    """

    study: str
    units: tuple[tuple[Unit, Result], ...]
    accuracy: StudyAccuracyResult | None
    vectors: VectorTableResult | None
    universal: tuple[UniversalFvResult, ...]
    induction_vs_fv: InductionVsFvResult | None
    notes: tuple[str, ...] = ()

    def results(self, analysis: str | None = None, model: str | None = None, task: str | None = None) -> list[Result]:
        """Finished units' results, filtered by analysis label, model and task."""
        return [
            r
            for u, r in self.units
            if (analysis is None or u.label == analysis)
            and (model is None or u.model == model)
            and (task is None or u.task == task)
        ]

    def cross_task(self) -> dict[str, Result]:
        """The cross-task results by name (``accuracy``, ``vectors``, ``universal_<model>_seed<s>``, ...)."""
        out: dict[str, Result] = {}
        if self.accuracy is not None:
            out["accuracy"] = self.accuracy
        if self.vectors is not None:
            out["vectors"] = self.vectors
        for u in self.universal:
            out[f"universal_{u.model}_seed{u.seed}"] = u
        if self.induction_vs_fv is not None:
            out["induction_vs_fv"] = self.induction_vs_fv
        return out

    def equals(self, other: StudyResults) -> bool:
        """Same units (by key) with equal results and equal cross-task results, tensors bit for bit."""
        mine = {u.key: r for u, r in self.units}
        theirs = {u.key: r for u, r in other.units}
        if mine.keys() != theirs.keys() or self.cross_task().keys() != other.cross_task().keys():
            return False
        if not all(results_equal(mine[k], theirs[k]) for k in mine):
            return False
        return all(results_equal(a, other.cross_task()[k]) for k, a in self.cross_task().items())

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = [
            dict(model=u.model, task=u.task or "-", analysis=u.label, seed=u.seed, key=u.key) for u, _ in self.units
        ]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lines = [f"{self.study}: {len(self.units)} finished units"]
        lines += [f"{name}: {r.summary()}" for name, r in self.cross_task().items()]
        return "\n".join(lines + [f"note: {n}" for n in self.notes])

    def __repr__(self) -> str:
        return f"<StudyResults {self.summary()}>"

    def _repr_html_(self) -> str:
        import html

        head = f"<h3>{html.escape(self.study)}: {len(self.units)} finished units</h3>"
        notes = "".join(f"<p>note: {html.escape(n)}</p>" for n in self.notes)
        return head + notes + "\n".join(r._repr_html_() for r in self.cross_task().values())

    def plot_task_vector_layers(self, min_icl: float = 0.3) -> Any:
        """Per task (ICL 5-shot at least ``min_icl``): task-vector accuracy by layer, each
        query's own ICL state patched in (the ceiling), and ICL; ``None`` without task vectors."""
        from icl_lens.core.plotting import pyplot

        tvs = [(u, r) for u, r in self.units if u.kind == "task_vector" and r.icl_accuracy >= min_icl]  # type: ignore[attr-defined]
        if not tvs:
            return None
        cols = 4
        rows = (len(tvs) + cols - 1) // cols
        fig, axes = pyplot().subplots(
            rows, cols, figsize=(3.2 * cols, 2.4 * rows), sharex=True, sharey=True, squeeze=False
        )
        for ax in axes.flat[len(tvs) :]:
            ax.axis("off")
        for ax, (u, tv) in zip(axes.flat, tvs):
            curves = [("task vector", tv.test_correct, "C0", "o")]  # type: ignore[attr-defined]
            if tv.ceiling_correct is not None:  # type: ignore[attr-defined]
                curves.append(("own ICL state", tv.ceiling_correct, "purple", "s"))  # type: ignore[attr-defined]
            for name, correct, color, marker in curves:  # each with its 95% Wilson band
                low, high = accuracy_interval(correct)
                ax.plot(tv.layers, correct.float().mean(-1).tolist(), marker=marker, ms=2, color=color, label=name)  # type: ignore[attr-defined]
                ax.fill_between(tv.layers, low.tolist(), high.tolist(), color=color, alpha=0.15, lw=0)  # type: ignore[attr-defined]
            ax.axhline(tv.icl_accuracy, color="green", ls="--", lw=0.8, label="ICL")  # type: ignore[attr-defined]
            ax.axhspan(*rate_interval(tv.icl_accuracy, tv.n_test), color="green", alpha=0.08, lw=0)  # type: ignore[attr-defined]
            ax.set_title(f"{u.task} ({u.model})" if len({x.model for x, _ in tvs}) > 1 else str(u.task), fontsize=9)
            ax.set_ylim(-0.02, 1.02)
        for ax in axes[-1]:
            ax.set_xlabel("layer L")
        for ax in axes[:, 0]:
            ax.set_ylabel("zero-shot accuracy")
        axes.flat[0].legend(fontsize=7)
        fig.suptitle("Replacing the last token's residual after block L (test queries, 95% Wilson bands)", fontsize=10)
        fig.tight_layout()
        return fig

    def save(self, directory: str | Path) -> Path:
        """Save each cross-task result (``il.load_result``), their tables as markdown, and figures."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        md = [f"# {self.study}", ""]
        for name, r in self.cross_task().items():
            r.save(out / name)
            md += [f"## {name}", "", r.summary(), ""]
            if hasattr(r, "to_markdown"):
                md += [r.to_markdown(), ""]
            png = r.to_png()
            if png is not None:
                (out / f"{name}.png").write_bytes(png)
        if self.vectors is not None:  # with KL, top heads and the task-vector ceiling (docs/vectors_table.md)
            (out / "vectors_full.md").write_text(self.vectors.to_markdown(full=True))
        fig = self.plot_task_vector_layers()
        if fig is not None:
            from icl_lens.core.plotting import pyplot

            fig.savefig(out / "task_vector_layers.png", dpi=90)
            pyplot().close(fig)
        if self.notes:
            md += ["## notes", ""] + [f"- {n}" for n in self.notes]
        (out / "tables.md").write_text("\n".join(md) + "\n")
        return out


def merge_study(study: Study) -> StudyResults:
    store = study.store
    finished = [(u, store.load(u.key)) for u in study.all_units() if store.is_done(u.key)]
    notes: list[str] = []
    universal = _universal(study, finished, notes)
    return StudyResults(
        study=study.spec.name,
        units=tuple(finished),
        accuracy=_accuracy(finished),
        vectors=_vectors(study, finished, universal),
        universal=tuple(universal),
        induction_vs_fv=_induction_vs_fv(finished, universal, notes),
        notes=tuple(notes),
    )


def _by(finished: list[tuple[Unit, Result]], kind: str, label: str | None = None) -> dict[tuple[Any, ...], Result]:
    return {(u.model, u.task, u.seed): r for u, r in finished if u.kind == kind and (label is None or u.label == label)}


def _accuracy(finished: list[tuple[Unit, Result]]) -> StudyAccuracyResult | None:
    rows = []
    for (model, task, seed), r in _by(finished, "accuracy").items():
        for t in range(len(r.tasks)):  # type: ignore[attr-defined]
            for s, shots in enumerate(r.shots):  # type: ignore[attr-defined]
                correct = r.correct[t, s]  # type: ignore[attr-defined]
                n = int(correct.numel())
                rows.append(
                    dict(
                        model=model, task=task, seed=seed, shots=int(shots), accuracy=float(correct.float().mean()), n=n
                    )
                )
    return StudyAccuracyResult(rows=tuple(rows)) if rows else None


def _vector_labels(study: Study) -> tuple[str | None, str | None]:
    if study.spec.universal_fv is not None:
        return study.spec.universal_entries()[0].label, study.spec.universal_entries()[1].label
    fv = next((e.label for e in study.spec.analyses if e.kind == "function_vector"), None)
    implant = next((e.label for e in study.spec.analyses if e.kind == "fv_implant"), None)
    return fv, implant


def _vectors(
    study: Study, finished: list[tuple[Unit, Result]], universal: list[UniversalFvResult]
) -> VectorTableResult | None:
    fv_label, implant_label = _vector_labels(study)
    fvs, implants = _by(finished, "function_vector", fv_label), _by(finished, "fv_implant", implant_label)
    tvs = _by(finished, "task_vector")
    stage2 = _by(finished, UNIVERSAL_KIND)
    keys = sorted(set(implants) | set(tvs), key=lambda k: (k[0], k[2], list(study.tasks).index(k[1])))
    if not keys:
        return None
    by_model = {(u.model, u.seed): u for u in universal}
    rows = []
    for model, task, seed in keys:
        row: dict[str, Any] = dict(model=model, task=task, seed=seed)
        ev = implants.get((model, task, seed))
        if ev is not None:
            row.update({c: ev.acc(cond) for c, cond in _IMPLANT.items()})  # type: ignore[attr-defined]
            row.update(n_fv=int(ev.n_test), fv_layer=int(ev.layer), fv_folds=int(ev.n_folds))  # type: ignore[attr-defined]
            row["kl_zs"] = float(ev.kl_to_icl[0].mean())  # type: ignore[attr-defined]
            row["kl_fv"] = float(ev.kl_to_icl[1].mean())  # type: ignore[attr-defined]
            row.update(_implant_tests(ev))  # type: ignore[arg-type]
        fv = fvs.get((model, task, seed))
        if fv is not None:
            row["fv_heads"] = heads_label(fv.heads, 5)  # type: ignore[attr-defined]
        u = by_model.get((model, seed))
        row["zs_universal"] = u.acc(task, "zs_universal") if u is not None and task in u.tasks else math.nan
        uni = stage2.get((model, task, seed))
        if uni is not None and u is not None and task in u.tasks:
            row.update(_test_cells("universal", uni.comparison("zero_shot+vector", "zero_shot")))  # type: ignore[attr-defined]
        tv = tvs.get((model, task, seed))
        if tv is not None:
            i = tv.layers.index(tv.best_layer)  # type: ignore[attr-defined]
            row.update(_task_vector_cells(tv))  # type: ignore[arg-type]
            ceiling = tv.ceiling_accuracy  # type: ignore[attr-defined]
            if ceiling is not None:
                row["own_state"] = float(ceiling[i])
                half = [l for l, a in zip(tv.layers, ceiling.tolist()) if a >= tv.icl_accuracy / 2 > 0]  # type: ignore[attr-defined]
                row["half_from"] = int(half[0]) if half else None
        rows.append(row)
    return VectorTableResult(rows=tuple(rows))


def _implant_tests(ev: ImplantResult) -> dict[str, Any]:
    """The implant's paired tests and its recovery of ICL, as table cells."""
    out: dict[str, Any] = {}
    for key, (a, b) in (("icl", ("icl", "zero_shot")), ("fv", ("zero_shot+vector", "zero_shot"))):
        out.update(_test_cells(key, ev.comparison(a, b)))
    out.update(_test_cells("shuffled_fv", ev.comparison("shuffled+vector", "shuffled")))
    out.update(_test_cells("fv_icl", ev.comparison("zero_shot+vector", "icl")))
    out["fv_recovery"], out["fv_recovery_ci_low"], out["fv_recovery_ci_high"] = ev.recovery()
    return out


def _task_vector_cells(tv: TaskVectorResult) -> dict[str, Any]:
    """Accuracies, tests and the recovered share of ICL of a task vector, as table cells."""
    out: dict[str, Any] = dict(
        icl5=tv.icl_accuracy,
        tv_zero_shot=tv.zero_shot_accuracy,
        tv=tv.accuracy,  # each fold's queries at that fold's dev-chosen layer
        tv_layer=int(tv.best_layer),
        tv_fold_layers=" ".join(map(str, tv.fold_layers)),
        n_tv=tv.n_test,
        tv_folds=max(1, len(tv.folds)),
    )
    out.update(_test_cells("tv", tv.vs_zero_shot))
    out.update(_test_cells("tv_icl", tv.vs_icl))
    out["tv_recovery"], out["tv_recovery_ci_low"], out["tv_recovery_ci_high"] = tv.recovery()
    return out


def _test_cells(key: str, c: PairedComparison) -> dict[str, Any]:
    """``<key>_p`` (McNemar), ``<key>_diff`` with its interval, ``<key>_sign``: +1 / -1 where the
    data tell a difference (interval and test agree), 0 where they do not."""
    sign = 0 if not c.significant else (1 if c.difference > 0 else -1)
    return {
        f"{key}_p": c.p_value,
        f"{key}_diff": c.difference,
        f"{key}_diff_ci_low": c.ci_low,
        f"{key}_diff_ci_high": c.ci_high,
        f"{key}_sign": sign,
    }


def _universal(study: Study, finished: list[tuple[Unit, Result]], notes: list[str]) -> list[UniversalFvResult]:
    spec = study.spec.universal_fv
    if spec is None:
        return []
    fv_label, implant_label = _vector_labels(study)
    fvs, implants = _by(finished, "function_vector", fv_label), _by(finished, "fv_implant", implant_label)
    stage2 = _by(finished, UNIVERSAL_KIND)
    out = []
    for m in study.spec.models:
        for seed in study.spec.seeds:
            tasks = [t for t in study.tasks if (m.name, t, seed) in fvs and (m.name, t, seed) in implants]
            missing = len(study.tasks) - len(tasks)
            if missing:
                notes.append(
                    f"universal FV heads of {m.name} (seed {seed}) use {len(tasks)} tasks: {missing} unfinished"
                )
            if not tasks:
                continue
            try:
                uh = universal_heads(
                    {t: fvs[(m.name, t, seed)] for t in tasks},  # type: ignore[misc]
                    {t: implants[(m.name, t, seed)] for t in tasks},  # type: ignore[misc]
                    spec.margin,
                    spec.n_heads,
                )
            except ConfigError as e:
                notes.append(f"{m.name} (seed {seed}): {e}")
                continue
            acc = torch.full((len(tasks), len(ACCURACIES)), math.nan)
            for i, t in enumerate(tasks):
                ev = implants[(m.name, t, seed)]
                for j, c in enumerate(ACCURACIES):
                    if c in _IMPLANT:
                        acc[i, j] = ev.acc(_IMPLANT[c])  # type: ignore[attr-defined]
                uni = stage2.get((m.name, t, seed))
                if uni is not None:  # planned from the same finished units, so for these heads
                    acc[i, ACCURACIES.index("zs_universal")] = uni.acc("zero_shot+vector")  # type: ignore[attr-defined]
                    acc[i, ACCURACIES.index("shuffled_universal")] = uni.acc("shuffled+vector")  # type: ignore[attr-defined]
            out.append(
                UniversalFvResult(
                    model=m.name,
                    seed=seed,
                    margin=spec.margin,
                    tasks=tuple(tasks),
                    used=uh.used,
                    aie=uh.aie,
                    mean_aie=uh.mean_aie,
                    heads=uh.heads,
                    accuracy=acc,
                    n_test=uh.n_test,
                )
            )
    return out


def _induction_vs_fv(
    finished: list[tuple[Unit, Result]], universal: list[UniversalFvResult], notes: list[str]
) -> InductionVsFvResult | None:
    induction = {(u.model, u.seed): r for u, r in finished if u.kind == "induction"}
    fvs = [(u, r) for u, r in finished if u.kind == "function_vector"]
    if not induction or not fvs:
        return None
    models, ind, score, used = [], {}, {}, {}
    for (model, seed), r in induction.items():
        if model in models:
            continue
        u = next((x for x in universal if x.model == model and x.seed == seed), None)
        if u is not None:
            fv_score, tasks = u.mean_aie, tuple(t for t, ok in zip(u.tasks, u.used) if ok)
        else:
            mine = [(x.task, fv) for x, fv in fvs if x.model == model and x.seed == seed]
            if not mine:
                continue
            fv_score = torch.stack([fv.aie.float() for _, fv in mine]).mean(0)  # type: ignore[attr-defined]
            tasks = tuple(str(t) for t, _ in mine)
        models.append(model)
        ind[model] = r.induction_mean.float()  # type: ignore[attr-defined]
        score[model], used[model] = fv_score, tasks
    if not models:
        notes.append("induction vs FV: no model has both an induction unit and function-vector units")
        return None
    return InductionVsFvResult(models=tuple(models), induction=ind, fv_score=score, fv_tasks=used)


__all__ = ["StudyResults", "merge_study"]
