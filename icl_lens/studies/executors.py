"""Executors: where a study's units run.

* :class:`LocalExecutor` (the default): this process, one model at a time, each model
  loaded once for all its units (and only if one of them is unfinished).
* :class:`RayExecutor`: Ray tasks on a local instance or a cluster (``address="auto"``),
  units grouped per model (one load, the default), per model and task, or one per unit;
  ``num_cpus`` / ``num_gpus`` per task from the spec's resources; a task whose worker dies
  is retried (``max_retries``), and a retry skips the units its first try finished. Workers
  write results to the study's output folder, which must be a path they all see.

Both end with stage 2 (the universal function vector evaluated on each task, planned from
the finished stage-1 units) and return a :class:`~icl_lens.studies.status.StudyRunReport`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from icl_lens.core.errors import ConfigError
from icl_lens.core.options import check_choice
from icl_lens.core.progress import progress_enabled
from icl_lens.prompting.tasks import Task
from icl_lens.studies.registry import Analysis
from icl_lens.studies.spec import Grouping, ModelEntry, Resources, StudySpec
from icl_lens.studies.status import StudyRunReport
from icl_lens.studies.units import Unit, UnitOutcome, UnitStore, outcome, release_models, run_bundle

if TYPE_CHECKING:
    from icl_lens.studies.study import Study

OnOutcome = Callable[[UnitOutcome], None]


def resources_for(spec: StudySpec, model: str) -> Resources:
    entry = next(m for m in spec.models if m.name == model)
    return entry.resources if entry.resources is not None else spec.resources


class _Tracker:
    """Reports each unit once (progress bar and callback) and keeps the outcomes."""

    def __init__(self, on_outcome: OnOutcome | None, show_progress: bool | None, total: int) -> None:
        self.on_outcome = on_outcome
        self.outcomes: dict[str, UnitOutcome] = {}
        self.bar = None
        if progress_enabled(show_progress):
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc="study", unit="unit")

    def extend(self, n: int) -> None:
        if self.bar is not None and n:
            self.bar.total += n
            self.bar.refresh()

    def __call__(self, o: UnitOutcome) -> None:
        if o.key in self.outcomes:
            return
        self.outcomes[o.key] = o
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(f"{o.status}: {o.analysis} | {o.model} | {o.task}", refresh=True)
        if self.on_outcome is not None:
            self.on_outcome(o)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class LocalExecutor:
    """Sequential, in this process; one model load per model."""

    name = "local"

    def run(
        self, study: Study, *, on_outcome: OnOutcome | None = None, show_progress: bool | None = None
    ) -> StudyRunReport:
        t0 = time.perf_counter()
        stage1 = {m.name: study.units(m.name) for m in study.spec.models}
        track = _Tracker(on_outcome, show_progress, sum(len(v) for v in stage1.values()))
        try:
            for m in study.spec.models:
                kwargs = self._kwargs(study, m)
                run_bundle(stage1[m.name], on_outcome=track, **kwargs)
                stage2 = study.universal_units(m.name)
                track.extend(len(stage2))
                run_bundle(stage2, on_outcome=track, **kwargs)
                release_models()
        finally:
            track.close()
        return StudyRunReport(study.spec.name, self.name, tuple(track.outcomes.values()), time.perf_counter() - t0)

    @staticmethod
    def _kwargs(study: Study, m: ModelEntry) -> dict[str, Any]:
        return dict(
            entry=m,
            tasks=study.tasks,
            analyses=study.analyses(),
            output=study.output,
            threads=resources_for(study.spec, m.name).threads,
        )


def _bundle_task(
    units: Sequence[Unit],
    entry: ModelEntry,
    tasks: Mapping[str, Task],
    analyses: Mapping[str, Analysis],
    output: str,
    threads: int | None,
    *needed_first: Any,
) -> list[UnitOutcome]:
    """The body of one Ray task (``needed_first``: results of the tasks it must follow)."""
    return run_bundle(units, entry=entry, tasks=tasks, analyses=analyses, output=output, threads=threads)


class RayExecutor:
    """Units as Ray tasks (see the module docstring).

    Args:
        address: ``None`` starts a local Ray instance (unless Ray is already initialised
            in this process); ``"auto"`` or ``"ray://host:10001"`` joins a cluster.
        group: ``"model"`` (one task per model: one load), ``"task"`` (per model and
            task), ``"unit"`` (one task per unit, a unit waits for the units it reads).
        max_retries: retries of a task whose worker died (killed, out of memory).
        poll_seconds: how often finished units are looked for while tasks run.
    """

    name = "ray"

    def __init__(
        self, address: str | None = None, group: Grouping = "model", max_retries: int = 2, poll_seconds: float = 0.5
    ) -> None:
        self.address = address
        self.group = check_choice(group, Grouping, "ray group")
        self.max_retries = int(max_retries)
        self.poll_seconds = poll_seconds

    def run(
        self, study: Study, *, on_outcome: OnOutcome | None = None, show_progress: bool | None = None
    ) -> StudyRunReport:
        try:
            import ray
        except ImportError as e:
            raise ConfigError("the ray executor needs Ray: pip install 'icl_lens[ray]'") from e
        t0 = time.perf_counter()
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        stage1 = study.units()
        track = _Tracker(on_outcome, show_progress, len(stage1))
        try:
            self._stage(ray, study, stage1, track)
            stage2 = [u for m in study.spec.models for u in study.universal_units(m.name)]
            track.extend(len(stage2))
            self._stage(ray, study, stage2, track)
        finally:
            track.close()
            if started_here:
                ray.shutdown()
        return StudyRunReport(study.spec.name, self.name, tuple(track.outcomes.values()), time.perf_counter() - t0)

    def bundles(self, units: Sequence[Unit]) -> list[list[Unit]]:
        """Units grouped into Ray tasks, in submission order (needed units first)."""
        groups: dict[Any, list[Unit]] = {}
        for u in units:
            key = {"model": (u.model,), "task": (u.model, u.task), "unit": (u.key,)}[self.group]
            groups.setdefault(key, []).append(u)
        return list(groups.values())

    def _stage(self, ray: Any, study: Study, units: Sequence[Unit], track: _Tracker) -> None:
        if not units:
            return
        store = UnitStore(study.output)
        done_before = {u.key for u in units if store.is_done(u.key)}
        remote = ray.remote(_bundle_task)
        output = str(Path(study.output).resolve())
        analyses = study.analyses()
        refs: dict[Any, list[Unit]] = {}
        ref_of: dict[str, Any] = {}
        for bundle in self.bundles(units):
            entry = study.model_entry(bundle[0].model)
            res = resources_for(study.spec, entry.name)
            inside = {u.key for u in bundle}
            after = [ref_of[k] for u in bundle for _, k in u.needs if k not in inside and k in ref_of]
            ref = remote.options(
                num_cpus=res.num_cpus if res.num_cpus is not None else 1,
                num_gpus=res.num_gpus,
                max_retries=self.max_retries,
            ).remote(bundle, entry, study.tasks, analyses, output, res.threads, *after)
            refs[ref] = bundle
            ref_of.update({u.key: ref for u in bundle})
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=self.poll_seconds)
            for u in units:  # per-unit progress while the tasks run
                if u.key not in track.outcomes and u.key not in done_before and store.is_done(u.key):
                    track(outcome(u, "done", float(store.manifest(u.key).get("seconds", 0.0))))
            for ref in ready:
                try:
                    for o in ray.get(ref):
                        track(o)
                except Exception as e:
                    reason = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
                    for u in refs[ref]:
                        if not store.is_done(u.key):
                            store.mark_failed(u, f"Ray task failed: {reason}")
                            track(outcome(u, "failed", error=f"worker died: {reason}"))
                        else:
                            track(outcome(u, "skipped" if u.key in done_before else "done"))


def make_executor(executor: str | Any, spec: StudySpec, **options: Any) -> Any:
    """An executor object from a name (``"local"``, ``"ray"``) or an object with ``run``."""
    if not isinstance(executor, str):
        if options:
            raise ConfigError("options go to the executor's constructor when you pass an executor object")
        return executor
    if executor == "local":
        if options:
            raise ConfigError(f"the local executor takes no options, got {sorted(options)}")
        return LocalExecutor()
    if executor == "ray":
        settings = dict(address=spec.ray.address, group=spec.ray.group, max_retries=spec.ray.max_retries)
        unknown = sorted(set(options) - set(settings) - {"poll_seconds"})
        if unknown:
            raise ConfigError(f"unknown ray executor options {unknown}; known: {sorted(settings)}")
        return RayExecutor(**{**settings, **options})
    raise ConfigError(f"unknown executor {executor!r}; use 'local' or 'ray' (or study.export_slurm() for SLURM)")


__all__ = ["LocalExecutor", "RayExecutor", "make_executor"]
