"""What a study's units look like on disk (``study.status()``) and what a run did (its report)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from icl_lens.core.results import Result
from icl_lens.studies.units import UnitOutcome

if TYPE_CHECKING:
    from icl_lens.studies.study import Study

STATES = ("finished", "failed", "killed", "to do")


@dataclasses.dataclass(frozen=True)
class StudyStatus(Result):
    """Every unit of a study with its state: ``finished``, ``failed`` (the last run raised;
    ``<output>/failed/<key>.txt`` has the traceback), ``killed`` (a partial directory left
    by a process that died mid-unit), or ``to do``.

    Attributes:
        rows: one per unit (model, task, analysis, seed, stage, key, state, seconds).
        waiting: stage-2 work that cannot be planned yet, and why.
    """

    title: ClassVar[str] = "Study status"

    study: str
    rows: tuple[dict[str, Any], ...]
    waiting: tuple[str, ...] = ()

    def counts(self) -> dict[str, int]:
        return {s: sum(r["state"] == s for r in self.rows) for s in STATES}

    @property
    def complete(self) -> bool:
        return not self.waiting and all(r["state"] == "finished" for r in self.rows)

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            list(self.rows), columns=["model", "task", "analysis", "seed", "stage", "key", "state", "seconds"]
        )

    def table(self) -> Any:
        """Units by analysis and state."""
        df = self.to_dataframe()
        table = df.pivot_table(index="analysis", columns="state", values="key", aggfunc="count", fill_value=0)
        return table.reindex(columns=[s for s in STATES if s in table.columns])

    def summary(self) -> str:
        c = self.counts()
        text = f"{self.study}: {len(self.rows)} units, " + ", ".join(f"{n} {s}" for s, n in c.items() if n)
        return text + ("" if not self.waiting else f"; waiting: {'; '.join(self.waiting)}")


@dataclasses.dataclass(frozen=True)
class StudyRunReport(Result):
    """What one ``study.run()`` did: each unit done (computed now), skipped (already
    finished) or failed, with its time; ``table()`` counts them by analysis."""

    title: ClassVar[str] = "Study run"

    study: str
    executor: str
    outcomes: tuple[UnitOutcome, ...]
    seconds: float

    def counts(self) -> dict[str, int]:
        return {s: sum(o.status == s for o in self.outcomes) for s in ("done", "skipped", "failed")}

    @property
    def computed(self) -> list[UnitOutcome]:
        """The units computed by this run."""
        return [o for o in self.outcomes if o.status == "done"]

    @property
    def failed(self) -> list[UnitOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([dataclasses.asdict(o) for o in self.outcomes])

    def table(self) -> Any:
        """Units by analysis: done / skipped / failed, and the seconds spent."""
        import pandas as pd

        rows = []
        for name in dict.fromkeys(o.analysis for o in self.outcomes):
            mine = [o for o in self.outcomes if o.analysis == name]
            row: dict[str, Any] = {"analysis": name}
            row.update({s: sum(o.status == s for o in mine) for s in ("done", "skipped", "failed")})
            row["seconds"] = round(sum(o.seconds for o in mine), 1)
            rows.append(row)
        return pd.DataFrame(rows, columns=["analysis", "done", "skipped", "failed", "seconds"])

    def summary(self) -> str:
        c = self.counts()
        text = (
            f"{self.study} ({self.executor}): {len(self.outcomes)} units, {c['done']} done, "
            f"{c['skipped']} skipped, {c['failed']} failed in {self.seconds:.0f} s"
        )
        if self.failed:
            first = self.failed[0]
            text += f"; first failure: {first.analysis} | {first.model} | {first.task}: {first.error[:200]}"
        return text


def status_of(study: Study) -> StudyStatus:
    store = study.store
    rows = []
    units = study.all_units()
    for u in units:
        if store.is_done(u.key):
            state, seconds = "finished", store.manifest(u.key).get("seconds", 0.0)
        elif store.partial(u.key):
            state, seconds = "killed", 0.0
        elif store.failure(u.key) is not None:
            state, seconds = "failed", 0.0
        else:
            state, seconds = "to do", 0.0
        rows.append(
            dict(
                model=u.model,
                task=u.task or "-",
                analysis=u.label,
                seed=u.seed,
                stage=u.stage,
                key=u.key,
                state=state,
                seconds=seconds,
            )
        )
    waiting = []
    if study.spec.universal_fv is not None and study.spec.universal_fv.evaluate:
        for m in study.spec.models:
            if not any(u.stage == 2 and u.model == m.name for u in units):
                waiting.append(f"universal_fv on {m.name} (planned once its function vectors and implants finish)")
    return StudyStatus(study=study.spec.name, rows=tuple(rows), waiting=tuple(waiting))


__all__ = ["StudyRunReport", "StudyStatus", "status_of"]
