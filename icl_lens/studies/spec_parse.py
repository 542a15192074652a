"""Reading a study spec from its TOML / dict form (see :mod:`icl_lens.studies.spec`)."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from icl_lens.core.errors import IclLensError
from icl_lens.prompting.tasks import Task, list_tasks
from icl_lens.studies.spec import (
    LOAD_OPTIONS,
    TINY,
    AnalysisEntry,
    ModelEntry,
    RaySpec,
    Resources,
    SlurmSpec,
    StudySpec,
    StudySpecError,
    UniversalFvSpec,
    one_line,
)


def parse_spec(cls: type[StudySpec], data: Mapping[str, Any], *, base_dir: str, path: str | None) -> StudySpec:
    """A spec from the TOML structure; raises :class:`StudySpecError` naming the bad entry."""
    where = path or "study spec"
    _known(data, _TOP_KEYS, where, "key")
    try:
        spec = cls(
            name=str(data.get("name", Path(path).stem if path else "study")),
            models=tuple(_model(m, i, where) for i, m in enumerate(_list(data.get("models"), where, "models"))),
            tasks=_tasks(data.get("tasks"), where),
            analyses=tuple(
                _analysis(label, body, where) for label, body in _table(data.get("analyses"), where, "analyses")
            ),
            seeds=tuple(int(s) for s in _list(data.get("seeds", [0]), where, "seeds")),
            output=str(data.get("output", "study_results")),
            resources=_dc(Resources, data.get("resources", {}), f"{where}: resources"),
            universal_fv=_universal(data.get("cross_task", {}), where),
            ray=_dc(RaySpec, data.get("ray", {}), f"{where}: ray"),
            slurm=_dc(SlurmSpec, data.get("slurm", {}), f"{where}: slurm"),
            plugins=tuple(data.get("plugins", ())),
            base_dir=base_dir,
            path=path,
        )
    except (TypeError, ValueError) as e:
        if isinstance(e, StudySpecError):
            raise
        raise StudySpecError(f"{where}: {e}") from e
    return spec


_TOP_KEYS = (
    "name",
    "models",
    "tasks",
    "analyses",
    "seeds",
    "output",
    "resources",
    "cross_task",
    "ray",
    "slurm",
    "plugins",
)


def _known(data: Mapping[str, Any], allowed: Sequence[str], where: str, what: str) -> None:
    for key in data:
        if key not in allowed:
            close = difflib.get_close_matches(key, list(allowed), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise StudySpecError(f"{where}: unknown {what} {key!r}{hint}; known: {', '.join(allowed)}")


def _list(value: Any, where: str, what: str) -> list[Any]:
    if value is None:
        raise StudySpecError(f"{where}: {what} is missing")
    if not isinstance(value, list | tuple):
        raise StudySpecError(f"{where}: {what} must be a list, got {value!r}")
    return list(value)


def _table(value: Any, where: str, what: str) -> list[tuple[str, Mapping[str, Any]]]:
    if not isinstance(value, Mapping) or not value:
        raise StudySpecError(f"{where}: {what} must be a table of [{what}.<label>] entries")
    return [(str(k), v if isinstance(v, Mapping) else {}) for k, v in value.items()]


def _dc(cls: type, data: Any, where: str) -> Any:
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise StudySpecError(f"{where}: must be a table, got {data!r}")
    _known(data, [f.name for f in dataclasses.fields(cls)], where, "key")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _model(m: Any, i: int, where: str) -> ModelEntry:
    if isinstance(m, ModelEntry):
        return m
    if isinstance(m, str):
        return ModelEntry(name=m)
    if not isinstance(m, Mapping) or "name" not in m:
        raise StudySpecError(f"{where}: models[{i}] needs a name (and optionally a source), got {m!r}")
    body = dict(m)
    resources = body.pop("resources", None)
    return ModelEntry(
        name=str(body.pop("name")),
        source=body.pop("source", None),
        options=body,
        resources=None if resources is None else _dc(Resources, resources, f"{where}: models[{i}].resources"),
    )


def check_model(m: ModelEntry, where: str) -> None:
    from icl_lens.core.models import SMOLLM2_ALIASES, smollm2_gguf, tiny_model, torch_dtype

    if m.loader is not None:
        return
    names = [*SMOLLM2_ALIASES, TINY]
    close = difflib.get_close_matches(m.origin.strip().lower(), names, n=1, cutoff=0.75)
    if close and m.origin.strip().lower() not in names and not Path(m.origin).expanduser().exists():
        raise StudySpecError(f"{where}: unknown source {m.origin!r} (did you mean {close[0]!r}?)")
    if m.origin == TINY:
        allowed = list(inspect.signature(tiny_model).parameters)
    else:
        from transformer_lens.model_bridge import TransformerBridge

        boot = [p for p in inspect.signature(TransformerBridge.boot_transformers).parameters if p != "model_name"]
        allowed = sorted(set(LOAD_OPTIONS) | set(boot) - {"hf_model", "tokenizer", "model_class"})
    _known(m.options, allowed, where, "option")
    try:
        if "dtype" in m.options:
            torch_dtype(m.options["dtype"])
        if m.origin.strip().lower() in SMOLLM2_ALIASES:
            smollm2_gguf()
    except IclLensError as e:
        raise StudySpecError(f"{where}: {one_line(e)}") from e
    device_map = m.options.get("device_map")
    if isinstance(device_map, Mapping) and "meta" in {str(v) for v in device_map.values()}:
        raise StudySpecError(f"{where}: device_map puts modules on 'meta', which holds no weights to analyse")
    if "device" in m.options and ("device_map" in m.options or "n_devices" in m.options):
        raise StudySpecError(f"{where}: give device or device_map / n_devices, not both")


def _tasks(value: Any, where: str) -> tuple[str | Task, ...]:
    if value == "all":
        return tuple(list_tasks())
    items = _list(value, where, "tasks")
    if not items:
        raise StudySpecError(f"{where}: tasks is empty")
    return tuple(t if isinstance(t, Task) else str(t) for t in items)


def _analysis(label: str, body: Any, where: str) -> AnalysisEntry:
    if isinstance(body, AnalysisEntry):
        return body
    fields = dict(body)
    kind = str(fields.pop("analysis", label))
    uses = fields.pop("uses", {})
    if not isinstance(uses, Mapping):
        raise StudySpecError(f"{where}: analyses.{label}.uses must be a table {{analysis = label}}")
    return AnalysisEntry(label=label, analysis=kind, config=fields, uses=dict(uses))


def _universal(cross: Any, where: str) -> UniversalFvSpec | None:
    if not isinstance(cross, Mapping):
        raise StudySpecError(f"{where}: cross_task must be a table")
    _known(cross, ("universal_fv",), f"{where}: cross_task", "entry")
    if "universal_fv" not in cross:
        return None
    return _dc(UniversalFvSpec, cross["universal_fv"], f"{where}: cross_task.universal_fv")
