"""Units: one (model, task, analysis, config, seed) each, stored in a directory named by
the hash of its inputs, and the loop that runs a bundle of them on one loaded model.

A unit's directory ``<output>/units/<key>`` holds the saved result (``result.json`` +
``tensors.safetensors``, see :meth:`icl_lens.Result.save`) and ``unit.json`` (what went
in: model fingerprint, task hash, config, seed, version; and how long it took). The result
is saved into a hidden ``.<key>.partial-*`` directory, the manifest written beside it,
and only then is the whole directory renamed to ``<key>``: a unit killed at any point
leaves nothing that looks finished, and a finished unit is never recomputed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import shutil
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch

from icl_lens.core.hooks import HookedModel
from icl_lens.core.results import Config, Result, load_result, register
from icl_lens.prompting.tasks import Task
from icl_lens.studies.fingerprint import config_payload, digest, package_version
from icl_lens.studies.registry import Analysis
from icl_lens.studies.spec import ModelEntry

Status = Literal["done", "skipped", "failed"]
KEY_LENGTH = 24


@dataclasses.dataclass(frozen=True)
class Unit:
    """One analysis of one model on one task (or the model alone) with one seed.

    Attributes:
        key: hash of every input (see :func:`unit_key`); names the result directory.
        model, task, label: the spec's names of the model, task (``None`` for a model-only
            analysis) and analysis entry.
        kind: the registered analysis. config: its config, seed included.
        needs: ``(analysis, unit key)`` of each unit whose result this one reads.
        stage: 1 for the spec's analyses, 2 for those planned from stage-1 results
            (the universal function vector evaluated on each task).
    """

    key: str
    model: str
    task: str | None
    label: str
    kind: str
    config: Config
    seed: int
    needs: tuple[tuple[str, str], ...] = ()
    stage: int = 1

    def describe(self) -> str:
        return f"{self.label} | {self.model} | {self.task or '-'} | seed {self.seed}"


def unit_key(kind: str, config: Config, model_fingerprint: str, task_hash: str | None, needs: Sequence[Any]) -> str:
    """The content hash naming a unit's directory."""
    return digest(
        {
            "icl_lens": package_version(),
            "analysis": kind,
            "config": config_payload(config),
            "model": model_fingerprint,
            "task": task_hash,
            "needs": [list(n) for n in needs],
        }
    )[:KEY_LENGTH]


@register
@dataclasses.dataclass(frozen=True)
class UnitOutcome:
    """What happened to one unit in a run: ``done`` (computed now), ``skipped`` (found
    finished), or ``failed`` (``error`` says why; the traceback is in ``<output>/failed/``)."""

    key: str
    model: str
    task: str
    analysis: str
    seed: int
    stage: int
    status: str
    seconds: float
    error: str = ""


def outcome(unit: Unit, status: Status, seconds: float = 0.0, error: str = "") -> UnitOutcome:
    return UnitOutcome(
        unit.key, unit.model, unit.task or "-", unit.label, unit.seed, unit.stage, status, seconds, error
    )


class UnitStore:
    """The ``units/`` folder of a study's output: finished units, partial ones, failures."""

    def __init__(self, output: str | os.PathLike[str]) -> None:
        self.root = Path(output)
        self.units = self.root / "units"
        self.failed = self.root / "failed"

    def path(self, key: str) -> Path:
        return self.units / key

    def is_done(self, key: str) -> bool:
        return (self.units / key / "unit.json").is_file()

    def load(self, key: str) -> Result:
        return load_result(self.units / key)

    def manifest(self, key: str) -> dict[str, Any]:
        return dict(json.loads((self.units / key / "unit.json").read_text()))

    def _partial(self, key: str) -> Path:
        return self.units / f".{key}.partial-{socket.gethostname()}-{os.getpid()}"

    def begin(self, unit: Unit) -> None:
        """Mark a unit as running: a hidden partial directory (left behind if the process dies)."""
        self.clear_partial(unit.key)
        partial = self._partial(unit.key)
        partial.mkdir(parents=True)
        started = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        (partial / "started.json").write_text(json.dumps(started))

    def save(self, unit: Unit, result: Result, info: Mapping[str, Any]) -> Path:
        """Save atomically: the result and manifest appear together under ``<key>`` or not at all."""
        target = self.path(unit.key)
        partial = self._partial(unit.key)
        result.save(partial)
        manifest = {
            "key": unit.key,
            "model": unit.model,
            "task": unit.task,
            "analysis": unit.label,
            "kind": unit.kind,
            "seed": unit.seed,
            "stage": unit.stage,
            "needs": [list(n) for n in unit.needs],
            "config": config_payload(unit.config),
            "icl_lens": package_version(),
            **info,
        }
        (partial / "unit.json").write_text(json.dumps(manifest, indent=1, default=str))
        partial.chmod(0o755)  # mkdtemp made it private; a study folder is shared with collaborators
        try:
            os.replace(partial, target)
        except OSError:
            if not self.is_done(unit.key):
                raise
            shutil.rmtree(partial, ignore_errors=True)  # another worker finished it first: same inputs, same result
        (self.failed / f"{unit.key}.txt").unlink(missing_ok=True)
        return target

    def mark_failed(self, unit: Unit, text: str) -> None:
        self.failed.mkdir(parents=True, exist_ok=True)
        (self.failed / f"{unit.key}.txt").write_text(f"{unit.describe()}\n\n{text}")

    def failure(self, key: str) -> str | None:
        p = self.failed / f"{key}.txt"
        return p.read_text() if p.is_file() else None

    def partial(self, key: str) -> bool:
        return any(self.units.glob(f".{key}.partial-*"))

    def clear_partial(self, key: str) -> None:
        for p in self.units.glob(f".{key}.partial-*"):
            shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------
_LOADED: dict[str, HookedModel] = {}
"""The model this process has loaded (one at a time: a worker may move to another model)."""


def loaded_model(entry: ModelEntry) -> HookedModel:
    """The entry's model, loaded once per process and reused by the following units."""
    key = repr((entry.name, entry.origin, sorted(entry.options.items()), id(entry.loader)))
    if key not in _LOADED:
        release_models()
        _LOADED[key] = entry.load()
    return _LOADED[key]


def release_models() -> None:
    """Drop the loaded model (before loading another, or when a run ends)."""
    _LOADED.clear()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch threads (``None``: leave as is), restoring the count after."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_bundle(
    units: Sequence[Unit],
    *,
    entry: ModelEntry,
    tasks: Mapping[str, Task],
    analyses: Mapping[str, Analysis],
    output: str | os.PathLike[str],
    threads: int | None = None,
    on_outcome: Callable[[UnitOutcome], None] | None = None,
) -> list[UnitOutcome]:
    """Run ``units`` (all of one model, needed units first) in order, loading the model
    only if one of them is unfinished. A unit that raises is marked failed; the others go on."""
    store = UnitStore(output)
    outcomes = []
    with torch_threads(threads):
        for unit in units:
            result = _run_one(unit, entry, tasks, analyses, store)
            outcomes.append(result)
            if on_outcome is not None:
                on_outcome(result)
    return outcomes


def _run_one(
    unit: Unit, entry: ModelEntry, tasks: Mapping[str, Task], analyses: Mapping[str, Analysis], store: UnitStore
) -> UnitOutcome:
    if store.is_done(unit.key):
        return outcome(unit, "skipped")
    missing = [f"{kind} ({key})" for kind, key in unit.needs if not store.is_done(key)]
    if missing:
        error = f"needs {', '.join(missing)}, which did not finish"
        store.mark_failed(unit, error)
        return outcome(unit, "failed", error=error)
    store.begin(unit)
    t0 = time.perf_counter()
    try:
        needed = {kind: store.load(key) for kind, key in unit.needs}
        model = loaded_model(entry)
        t1 = time.perf_counter()
        task = tasks[unit.task] if unit.task is not None else None
        result = analyses[unit.kind].run(model, task, unit.config, needed, False)
        seconds = time.perf_counter() - t1
        store.save(
            unit,
            result,
            {
                "seconds": round(seconds, 3),
                "host": socket.gethostname(),
                "torch_threads": torch.get_num_threads(),
                "device": str(getattr(getattr(model, "cfg", None), "device", "")),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            },
        )
        return outcome(unit, "done", seconds)
    except Exception as e:
        store.clear_partial(unit.key)
        store.mark_failed(unit, traceback.format_exc())
        return outcome(unit, "failed", time.perf_counter() - t0, f"{type(e).__name__}: {' '.join(str(e).split())}")


__all__ = [
    "Unit",
    "UnitOutcome",
    "UnitStore",
    "loaded_model",
    "release_models",
    "run_bundle",
    "torch_threads",
    "unit_key",
]
