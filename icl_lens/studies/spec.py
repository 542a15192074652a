"""The declarative form of a study: models x tasks x analyses (with configs) x seeds.

A spec is a TOML file or the same structure as a Python dict (``StudySpec.from_dict``)::

    name = "vectors"
    output = "runs/vectors"            # relative to the spec file
    tasks = ["antonym", "uppercase"]   # or "all"; a .json/.csv path works too
    seeds = [0]

    [[models]]
    name = "smollm2"                   # a label; `source` (default: name) is what loads
    # any other key goes to il.load_model (dtype, device_map, n_devices, ...) or, with
    # source = "tiny", to il.tiny_model (n_layers, seed, ...)

    [analyses.function_vector]         # the label; `analysis` defaults to it
    n_aie_prompts = 25                 # every other key is a field of the config

    [analyses.fv_implant]
    specificity_tasks = []

    [cross_task.universal_fv]          # Todd et al.'s heads shared across tasks
    margin = 0.1

Everything is checked by :meth:`StudySpec.validate` before any model loads; a mistake
raises :class:`StudySpecError` with one line naming the entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from icl_lens.core.errors import ConfigError, TaskError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.options import check_choice
from icl_lens.core.results import Config
from icl_lens.prompting.tasks import Task, list_tasks, load_task
from icl_lens.studies.registry import Analysis, get_analysis, runs_split

Grouping = Literal["model", "task", "unit"]
TINY = "tiny"
LOAD_OPTIONS = ("compatibility_mode", "device", "dtype", "device_map", "n_devices", "max_memory")


class StudySpecError(ConfigError):
    """A study spec names something that does not exist or contradicts itself."""


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one unit asks of a cluster (Ray, SLURM); ``num_cpus`` also sets torch's threads."""

    num_cpus: float | None = None
    num_gpus: float = 0.0

    @property
    def threads(self) -> int | None:
        return None if self.num_cpus is None else max(1, int(self.num_cpus))


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """One model of a study.

    Attributes:
        name: its label in tables and unit listings.
        source: what loads it: ``"smollm2"``, a local directory, a hub name, or ``"tiny"``
            (``il.tiny_model(**options)``); default: ``name``.
        options: keywords of :func:`icl_lens.load_model` (``dtype``, ``device_map``,
            ``n_devices``, ...) or of :func:`icl_lens.tiny_model`.
        loader: Python specs only: a function returning the model (its weights are hashed).
        resources: CPUs / GPUs each of its units needs (a split model needs several GPUs).
    """

    name: str
    source: str | None = None
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    loader: Callable[[], HookedModel] | None = None
    resources: Resources | None = None

    @property
    def origin(self) -> str:
        return self.source if self.source is not None else self.name

    @property
    def split(self) -> bool:
        """Whether the model is split over several devices (a device map, or n_devices > 1)."""
        return self.options.get("device_map") is not None or int(self.options.get("n_devices") or 1) > 1

    def load(self) -> HookedModel:
        """Load the model (tiny models are built, others go through ``load_model``)."""
        from icl_lens.core.models import load_model, tiny_model

        if self.loader is not None:
            return self.loader()
        if self.origin == TINY:
            return tiny_model(**self.options)
        return load_model(self.origin, **self.options)


@dataclasses.dataclass(frozen=True)
class AnalysisEntry:
    """One analysis of a study: a registered analysis, its config fields, what it reads.

    Attributes:
        label: the entry's name in the spec (``[analyses.<label>]``).
        analysis: the registered analysis (default: ``label``).
        config: fields of the analysis's config (checked by ``Config.from_dict``).
        uses: for each analysis it needs, the label of the entry providing it (default:
            the only entry of that analysis).
    """

    label: str
    analysis: str = ""
    config: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    uses: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.analysis or self.label


@dataclasses.dataclass(frozen=True)
class UniversalFvSpec:
    """Todd et al.'s universal function-vector heads (see :mod:`icl_lens.studies.universal`).

    Attributes:
        margin: ICL accuracy minus zero-shot accuracy a task needs to count.
        n_heads: heads in the universal set (Todd et al.: 10).
        evaluate: build each task's vector from the universal heads and evaluate it.
        function_vector, fv_implant: labels of the entries providing the AIE and the ICL /
            zero-shot accuracies (default: the only entry of each).
    """

    margin: float = 0.1
    n_heads: int = 10
    evaluate: bool = True
    function_vector: str | None = None
    fv_implant: str | None = None


@dataclasses.dataclass(frozen=True)
class RaySpec:
    """``address`` (``None``: start a local instance; ``"auto"``: join the cluster), how units
    are grouped into Ray tasks (``"model"`` reuses one load for all of a model's units),
    and how often a task whose worker died is retried."""

    address: str | None = None
    group: Grouping = "model"
    max_retries: int = 2


@dataclasses.dataclass(frozen=True)
class SlurmSpec:
    """Settings of the exported ``sbatch`` job array (one array index per model and task)."""

    partition: str | None = None
    time: str = "04:00:00"
    mem: str | None = None
    max_parallel: int | None = None
    setup: tuple[str, ...] = ()
    sbatch: tuple[str, ...] = ()
    python: str = "python"


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A whole study (see the module docstring for the file form)."""

    name: str
    models: tuple[ModelEntry, ...]
    tasks: tuple[str | Task, ...]
    analyses: tuple[AnalysisEntry, ...]
    seeds: tuple[int, ...] = (0,)
    output: str = "study_results"
    resources: Resources = Resources()
    universal_fv: UniversalFvSpec | None = None
    ray: RaySpec = RaySpec()
    slurm: SlurmSpec = SlurmSpec()
    plugins: tuple[str, ...] = ()
    base_dir: str = "."
    path: str | None = None

    # -- reading -----------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path) -> StudySpec:
        """Read a TOML spec; relative paths in it are relative to the file."""
        p = Path(path)
        if not p.is_file():
            raise StudySpecError(f"{p}: no such study spec file")
        try:
            import tomllib
        except ModuleNotFoundError:  # Python 3.10
            import tomli as tomllib  # type: ignore[no-redef]
        try:
            data = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise StudySpecError(f"{p}: not valid TOML ({e})") from e
        return cls.from_dict(data, base_dir=str(p.parent), path=str(p))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, base_dir: str = ".", path: str | None = None) -> StudySpec:
        """Build a spec from the TOML structure (a dict); checks names and config fields."""
        from icl_lens.studies.spec_parse import parse_spec

        spec = parse_spec(cls, data, base_dir=base_dir, path=path)
        spec.validate()
        return spec

    # -- checking ------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return self.path or "study spec"

    def validate(self) -> None:
        """Check every name and config field, loading no model; raises :class:`StudySpecError`."""
        for module in self.plugins:
            try:
                importlib.import_module(module)
            except ImportError as e:
                raise StudySpecError(f"{self.where}: plugins: cannot import {module!r} ({e})") from e
        if not self.models or not self.analyses:
            raise StudySpecError(f"{self.where}: a study needs at least one model and one analysis")
        try:
            check_choice(self.ray.group, Grouping, f"{self.where}: ray.group")
        except ConfigError as e:
            raise StudySpecError(str(e)) from e
        _unique([m.name for m in self.models], f"{self.where}: models")
        from icl_lens.studies.spec_parse import check_model

        for i, m in enumerate(self.models):
            check_model(m, f"{self.where}: models[{i}] ({m.name})")
        self.load_tasks()
        split = [m for m in self.models if m.split]
        for entry in self.analyses:
            config = self.config_of(entry, self.seeds[0] if self.seeds else 0)
            self.needed_entries(entry)
            if split and not runs_split(self.analysis_of(entry), config):
                needs = self.analysis_of(entry).split_model
                fix = f"; it does with {dict(needs)}" if isinstance(needs, Mapping) else ""
                raise StudySpecError(
                    f"{self.where}: analyses.{entry.label} does not run on a model split over devices "
                    f"({split[0].name}){fix}"
                )
        if self.universal_fv is not None:
            self.universal_entries()

    def analysis_of(self, entry: AnalysisEntry) -> Analysis:
        try:
            return get_analysis(entry.kind)
        except ConfigError as e:
            raise StudySpecError(f"{self.where}: analyses.{entry.label}: {e}") from e

    def config_of(self, entry: AnalysisEntry, seed: int) -> Config:
        """The entry's config with the unit's seed (when the config has a ``seed`` field)."""
        analysis = self.analysis_of(entry)
        fields = dict(entry.config)
        has_seed = "seed" in {f.name for f in dataclasses.fields(analysis.config_cls)}
        if "seed" in fields and len(self.seeds) > 1:
            raise StudySpecError(
                f"{self.where}: analyses.{entry.label}: set seeds once at the top (seeds = [...]), not as a config field"
            )
        if has_seed and "seed" not in fields:
            fields["seed"] = seed
        try:
            return analysis.config_cls.from_dict(fields)
        except (ConfigError, TypeError) as e:
            raise StudySpecError(f"{self.where}: analyses.{entry.label}: {one_line(e)}") from e

    def entry(self, label: str) -> AnalysisEntry:
        for e in self.analyses:
            if e.label == label:
                return e
        raise StudySpecError(f"{self.where}: no analysis labelled {label!r}")

    def entry_for(self, kind: str, label: str | None, who: str) -> AnalysisEntry:
        """The entry of analysis ``kind`` that ``who`` reads (``label``, or the only one)."""
        if label is not None:
            chosen = self.entry(label)
            if chosen.kind != kind:
                raise StudySpecError(f"{self.where}: {who}: {label!r} is a {chosen.kind}, not a {kind}")
            return chosen
        found = [e for e in self.analyses if e.kind == kind]
        if len(found) > 1:  # several: the one labelled like the analysis, if any
            found = [e for e in found if e.label == kind] or found
        if not found:
            raise StudySpecError(
                f"{self.where}: {who} needs a {kind} analysis and the spec has none; add [analyses.{kind}]"
            )
        if len(found) > 1:
            labels = ", ".join(e.label for e in found)
            raise StudySpecError(f"{self.where}: {who} reads a {kind} and the spec has several ({labels}); name one")
        return found[0]

    def needed_entries(self, entry: AnalysisEntry) -> dict[str, AnalysisEntry]:
        analysis = self.analysis_of(entry)
        extra = sorted(set(entry.uses) - set(analysis.needs))
        if extra:
            raise StudySpecError(
                f"{self.where}: analyses.{entry.label}: uses {extra}, which {entry.kind} does not read"
            )
        needed = {k: self.entry_for(k, entry.uses.get(k), f"analyses.{entry.label}") for k in analysis.needs}
        for k, dep in needed.items():
            if self.analysis_of(dep).input != analysis.input:
                raise StudySpecError(f"{self.where}: analyses.{entry.label}: {k} must take the same input")
        return needed

    def universal_entries(self) -> tuple[AnalysisEntry, AnalysisEntry]:
        u = self.universal_fv
        assert u is not None
        who = "cross_task.universal_fv"
        fv = self.entry_for("function_vector", u.function_vector, who)
        implant = self.entry_for("fv_implant", u.fv_implant, who)
        if self.needed_entries(implant)["function_vector"].label != fv.label:
            raise StudySpecError(f"{self.where}: {who}: {implant.label} evaluates another function vector")
        return fv, implant

    def load_tasks(self) -> dict[str, Task]:
        """Every task of the spec by its label (name or path as written), loaded."""
        out: dict[str, Task] = {}
        for i, t in enumerate(self.tasks):
            if isinstance(t, Task):
                out[t.name] = t
                continue
            path = Path(self.base_dir) / t
            try:
                out[t] = load_task(str(path) if path.suffix.lower() in (".json", ".csv") else t)
            except TaskError as e:
                close = difflib.get_close_matches(t, list_tasks(), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                reason = "is not a built-in task or a .json/.csv file" if "unknown task" in str(e) else one_line(e)
                raise StudySpecError(f"{self.where}: tasks[{i}] {t!r} {reason}{hint}") from e
        _unique([task.name for task in out.values()], f"{self.where}: tasks (names)")
        return out

    def output_dir(self) -> Path:
        return Path(self.base_dir) / self.output


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def _unique(names: Sequence[str], where: str) -> None:
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise StudySpecError(f"{where}: {dup} appear more than once")


__all__ = [
    "AnalysisEntry",
    "ModelEntry",
    "RaySpec",
    "Resources",
    "SlurmSpec",
    "StudySpec",
    "StudySpecError",
    "UniversalFvSpec",
]
