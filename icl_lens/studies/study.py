"""A study: a spec expanded into units, run by an executor, resumed, merged.

study = Study.from_file("studies/smollm2_all_tasks.toml")
study.status()                  # which units are finished, failed, killed, to do
report = study.run()            # executor="local" (default), "ray", or an executor object
merged = study.merge()          # per-unit results and the cross-task tables
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from icl_lens.core.errors import ConfigError
from icl_lens.prompting.tasks import Task
from icl_lens.studies.fingerprint import model_fingerprint, task_hash
from icl_lens.studies.registry import Analysis
from icl_lens.studies.spec import AnalysisEntry, ModelEntry, StudySpec
from icl_lens.studies.status import StudyRunReport, StudyStatus, status_of
from icl_lens.studies.units import Unit, UnitOutcome, UnitStore, unit_key
from icl_lens.studies.universal import UNIVERSAL_KIND, UniversalImplantConfig, universal_heads


class Study:
    """Models x tasks x analyses x seeds, as units that are computed once.

    Args:
        spec: a :class:`StudySpec` or its dict form (the TOML structure).
        base_dir: for a dict, the folder relative paths (output, task files) start from.

    Raises:
        StudySpecError: an unknown analysis, task, config field or option, before any
            model is loaded.
    """

    def __init__(self, spec: StudySpec | Mapping[str, Any], *, base_dir: str | os.PathLike[str] = ".") -> None:
        if isinstance(spec, StudySpec):
            spec.validate()
        else:
            spec = StudySpec.from_dict(spec, base_dir=str(base_dir))
        self.spec = spec
        self.tasks: dict[str, Task] = spec.load_tasks()
        self._fingerprints: dict[str, str] = {}

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Study:
        """Read and check a TOML spec (relative paths in it are relative to the file)."""
        return cls(StudySpec.from_file(path))

    def __repr__(self) -> str:
        s = self.spec
        return (
            f"<Study {s.name!r}: {len(s.models)} model(s) x {len(s.tasks)} task(s) x {len(s.analyses)} "
            f"analysis(es) x {len(s.seeds)} seed(s) -> {self.output}>"
        )

    # -- units -----------------------------------------------------------------------------
    @property
    def output(self) -> Path:
        return self.spec.output_dir()

    @property
    def store(self) -> UnitStore:
        return UnitStore(self.output)

    def model_entry(self, name: str) -> ModelEntry:
        return next(m for m in self.spec.models if m.name == name)

    def fingerprint(self, model: str) -> str:
        """The model's fingerprint (hash of its weights; tiny models are built for it)."""
        if model not in self._fingerprints:
            self._fingerprints[model] = model_fingerprint(self.model_entry(model))
        return self._fingerprints[model]

    def analyses(self) -> dict[str, Analysis]:
        """Every analysis this study's units run, by registered name."""
        out = {e.kind: self.spec.analysis_of(e) for e in self.spec.analyses}
        if self.spec.universal_fv is not None:
            from icl_lens.studies.registry import get_analysis

            out[UNIVERSAL_KIND] = get_analysis(UNIVERSAL_KIND)
        return out

    def units(self, model: str | None = None) -> list[Unit]:
        """The stage-1 units (every spec entry), needed units before the units needing them."""
        out: dict[str, Unit] = {}
        for m in self.spec.models:
            if model is not None and m.name != model:
                continue
            for seed in self.spec.seeds:
                for task in self._task_labels():
                    for entry in self._ordered_entries():
                        unit = self._unit(m.name, task, entry, seed)
                        if unit is not None:
                            out.setdefault(unit.key, unit)
        return list(out.values())

    def _task_labels(self) -> list[str | None]:
        return [*self.tasks, None]

    def _ordered_entries(self) -> list[AnalysisEntry]:
        done: list[AnalysisEntry] = []

        def visit(e: AnalysisEntry) -> None:
            if e in done:
                return
            for dep in self.spec.needed_entries(e).values():
                visit(dep)
            done.append(e)

        for e in self.spec.analyses:
            visit(e)
        return done

    def _unit(self, model: str, task: str | None, entry: AnalysisEntry, seed: int) -> Unit | None:
        analysis = self.spec.analysis_of(entry)
        if (analysis.input == "model") != (task is None):
            return None
        needs = []
        for kind, dep in self.spec.needed_entries(entry).items():
            dep_unit = self._unit(model, task, dep, seed)
            assert dep_unit is not None
            needs.append((kind, dep_unit.key))
        config = self.spec.config_of(entry, seed)
        thash = task_hash(self.tasks[task]) if task is not None else None
        key = unit_key(entry.kind, config, self.fingerprint(model), thash, needs)
        return Unit(key, model, task, entry.label, entry.kind, config, seed, tuple(needs))

    def universal_units(self, model: str) -> list[Unit]:
        """Stage-2 units of ``model``: the universal function vector on every task. Empty
        until the stage-1 units they are computed from have all finished."""
        u = self.spec.universal_fv
        if u is None or not u.evaluate:
            return []
        fv_entry, implant_entry = self.spec.universal_entries()
        store = self.store
        out = []
        for seed in self.spec.seeds:
            fv_units = {t: self._unit(model, t, fv_entry, seed) for t in self.tasks}
            implant_units = {t: self._unit(model, t, implant_entry, seed) for t in self.tasks}
            if not all(store.is_done(x.key) for x in [*fv_units.values(), *implant_units.values()] if x):
                continue
            fvs = {t: store.load(x.key) for t, x in fv_units.items() if x}
            implants = {t: store.load(x.key) for t, x in implant_units.items() if x}
            try:
                heads = universal_heads(fvs, implants, u.margin, u.n_heads).heads  # type: ignore[arg-type]
            except ConfigError:
                continue  # no task passes the margin: merge() says so
            config = UniversalImplantConfig(heads=heads, implant=self.spec.config_of(implant_entry, seed))
            for t, fv_unit in fv_units.items():
                assert fv_unit is not None
                needs = (("function_vector", fv_unit.key),)
                key = unit_key(UNIVERSAL_KIND, config, self.fingerprint(model), task_hash(self.tasks[t]), needs)
                out.append(Unit(key, model, t, "universal_fv", UNIVERSAL_KIND, config, seed, needs, stage=2))
        return out

    def all_units(self) -> list[Unit]:
        """Stage-1 units and the stage-2 units that can be planned now."""
        return self.units() + [u for m in self.spec.models for u in self.universal_units(m.name)]

    # -- running -----------------------------------------------------------------------------
    def run(
        self,
        executor: str | Any = "local",
        *,
        on_outcome: Callable[[UnitOutcome], None] | None = None,
        show_progress: bool | None = None,
        **options: Any,
    ) -> StudyRunReport:
        """Compute every unfinished unit; finished ones are skipped.

        Args:
            executor: ``"local"`` (sequential, one load per model), ``"ray"`` (options
                override the spec's ``[ray]`` table: ``address``, ``group``,
                ``max_retries``), or an object with ``run(study, on_outcome)``.
            on_outcome: called with each unit's :class:`UnitOutcome` as it ends.
            show_progress: a progress bar over units (default: the global setting).

        Returns:
            A :class:`StudyRunReport`: each unit done / skipped / failed, and a table.
        """
        from icl_lens.studies.executors import make_executor

        runner = make_executor(executor, self.spec, **options)
        return runner.run(self, on_outcome=on_outcome, show_progress=show_progress)

    def status(self) -> StudyStatus:
        """Which units are finished, failed, killed mid-way (a partial directory), or to do."""
        return status_of(self)

    def merge(self) -> Any:
        """Load every finished unit and compute the cross-task results (see :class:`StudyResults`)."""
        from icl_lens.studies.merged import merge_study

        return merge_study(self)

    def export_slurm(self, directory: str | os.PathLike[str] | None = None) -> Any:
        """Write an ``sbatch`` job array for this study (see :func:`icl_lens.studies.slurm.export_slurm`)."""
        from icl_lens.studies.slurm import export_slurm

        return export_slurm(self, directory)


__all__ = ["Study"]
