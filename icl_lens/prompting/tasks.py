"""ICL tasks: named lists of ``input -> output`` pairs.

Built-in tasks ship as JSON in ``icl_lens/data/tasks`` (built by ``scripts/build_tasks.py``,
provenance in ``icl_lens/data/tasks/PROVENANCE.md``). Users load their own from a ``.json``
file (a list of ``{"input": ..., "output": ...}``) or a two-column ``.csv`` file.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import random
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from icl_lens.core.errors import TaskError
from icl_lens.core.registry import register
from icl_lens.core.validate import count, read_text_file, seed as validate_seed

_DATA = "data/tasks"


@register
@dataclasses.dataclass(frozen=True)
class Task:
    """An ICL task: ordered, unique inputs with their outputs.

    Attributes:
        name: short name (``"antonym"``).
        pairs: ``(input, output)`` pairs; inputs are unique.
        labels: the label set of a classification-style task (shared by many inputs),
            else ``None``.
        description, source: provenance, for reports.
    """

    name: str
    pairs: tuple[tuple[str, str], ...]
    labels: tuple[str, ...] | None = None
    description: str = ""
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "pairs", tuple((str(x), str(y)) for x, y in self.pairs))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        _validate_pairs(self.pairs, where=f"task {self.name!r}")

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def inputs(self) -> list[str]:
        return [x for x, _ in self.pairs]

    @property
    def outputs(self) -> list[str]:
        return [y for _, y in self.pairs]

    def split(self, fractions: Sequence[float] = (0.7, 0.3), seed: int = 0) -> tuple[Task, ...]:
        """Disjoint, seeded random splits (e.g. demonstrations / dev / test)."""
        seed = validate_seed(seed, error=TaskError)
        if any(f <= 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-6:
            raise TaskError(f"split fractions must be positive and sum to 1, got {tuple(fractions)}")
        order = list(range(len(self.pairs)))
        random.Random(seed).shuffle(order)
        bounds = [0]
        acc = 0.0
        for f in fractions[:-1]:
            acc += f
            bounds.append(round(acc * len(order)))
        bounds.append(len(order))
        parts = []
        for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
            if b - a < 1:
                raise TaskError(f"task {self.name!r} has {len(self)} pairs, too few for split {tuple(fractions)}")
            parts.append(
                dataclasses.replace(
                    self, name=f"{self.name}[{i}]", pairs=tuple(self.pairs[j] for j in sorted(order[a:b]))
                )
            )
        return tuple(parts)

    def subset(self, n: int, seed: int = 0) -> Task:
        """A seeded random subset of ``n`` pairs (all of them if ``n >= len(self)``)."""
        n = count(n, "n", error=TaskError)
        seed = validate_seed(seed, error=TaskError)
        if n >= len(self):
            return self
        idx = sorted(random.Random(seed).sample(range(len(self)), n))
        return dataclasses.replace(self, pairs=tuple(self.pairs[i] for i in idx))


def _validate_pairs(pairs: Sequence[tuple[str, str]], where: str) -> None:
    if not pairs:
        raise TaskError(f"{where} is empty: a task needs at least 2 input/output pairs.")
    seen: dict[str, int] = {}
    for i, (x, y) in enumerate(pairs):
        if not x.strip() or not y.strip():
            raise TaskError(f"{where}: pair {i} has an empty input or output ({x!r} -> {y!r}).")
        if x in seen:
            raise TaskError(
                f"{where}: input {x!r} appears twice (pairs {seen[x]} and {i}); inputs must be "
                "unique so that a query is never also its own demonstration. Remove one."
            )
        seen[x] = i
    if len(pairs) < 2:
        raise TaskError(f"{where} has 1 pair; ICL needs at least one demonstration and one query.")


def _index() -> dict[str, dict[str, Any]]:
    path = resources.files("icl_lens").joinpath(_DATA, "index.json")
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:  # pragma: no cover - broken install
        return {}
    return {e["name"]: e for e in entries}


def list_tasks() -> list[str]:
    """Names of the built-in tasks, sorted."""
    return sorted(_index())


def task_info() -> list[dict[str, Any]]:
    """Metadata of every built-in task (name, size, labels, source, licence, ...)."""
    return [v for _, v in sorted(_index().items())]


def load_task(name_or_path: str | os.PathLike[str] | Task) -> Task:
    """A built-in task by name, or a user's task from a ``.json`` / ``.csv`` file.

    JSON: a list of ``{"input": "...", "output": "..."}``. CSV: a header row
    ``input,output``, then two columns per row. Both are read as UTF-8 (a byte-order mark,
    as Excel writes, is dropped).

    Raises:
        TaskError: an unknown name, a missing or unreadable file, a file that is not
            UTF-8, a CSV without the ``input,output`` header, a malformed row or item.
    """
    if isinstance(name_or_path, Task):
        return name_or_path
    if not isinstance(name_or_path, str | os.PathLike):
        raise TaskError(
            f"task must be a Task, a built-in task name or a .json/.csv path, got {type(name_or_path).__name__}; "
            "see il.list_tasks()"
        )
    text = str(name_or_path)
    index = _index()
    if text in index:
        meta = index[text]
        raw = resources.files("icl_lens").joinpath(_DATA, f"{text}.json").read_text(encoding="utf-8")
        pairs = _pairs_from_json(json.loads(raw), where=f"built-in task {text!r}")
        labels = meta.get("labels")
        return Task(
            name=text,
            pairs=pairs,
            labels=tuple(labels) if labels else None,
            description=meta.get("description", ""),
            source=meta.get("source", ""),
        )
    path = Path(text).expanduser()
    if path.suffix.lower() in {".json", ".csv"}:
        if not path.is_file():
            raise TaskError(f"task file {path} does not exist.")
        pairs = _read_task_file(path)
        outputs = [y for _, y in pairs]
        distinct = sorted(set(outputs))
        labels = tuple(distinct) if len(distinct) <= max(2, len(outputs) // 4) and len(distinct) <= 20 else None
        return Task(name=path.stem, pairs=pairs, labels=labels, source=path.name)
    raise TaskError(
        f"unknown task {text!r}. Built-in tasks: {', '.join(sorted(index))}. "
        'Or pass a path to a .json (list of {"input", "output"}) or two-column .csv file.'
    )


def _read_task_file(path: Path) -> tuple[tuple[str, str], ...]:
    where = f"task file {path.name}"
    text = read_text_file(path, "task file", error=TaskError)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise TaskError(f"{where} is not valid JSON ({e}).") from e
        return _pairs_from_json(data, where)
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline="")) if any(c.strip() for c in r)]
    except csv.Error as e:
        raise TaskError(f"{where} is not a valid CSV file ({e}).") from e
    # The header is required: without it a first row such as "word,antonym" would silently
    # become a demonstration, and a misspelt header could not be told from data.
    header = [c.strip().lower() for c in rows[0]] if rows else []
    if header != ["input", "output"]:
        got = ",".join(rows[0]) if rows else "nothing"
        raise TaskError(
            f"{where}: the first row must be the header input,output, got {got!r}. "
            "Add that header line (or rename the columns to input,output)."
        )
    pairs = []
    for i, r in enumerate(rows[1:]):
        if len(r) != 2:
            raise TaskError(f"{where}: row {i + 2} has {len(r)} columns; expected exactly 2 (input,output).")
        pairs.append((r[0].strip(), r[1].strip()))
    _validate_pairs(pairs, where)
    return tuple(pairs)


def _pairs_from_json(data: Any, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(data, list):
        raise TaskError(f'{where}: expected a JSON list of {{"input": ..., "output": ...}}, got {type(data).__name__}.')
    pairs = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or set(item) != {"input", "output"}:
            raise TaskError(
                f'{where}: item {i} is {item!r}; every item must be {{"input": str, "output": str}} '
                "with exactly those two keys."
            )
        if not isinstance(item["input"], str) or not isinstance(item["output"], str):
            raise TaskError(f"{where}: item {i} has a non-string input or output ({item!r}).")
        pairs.append((item["input"].strip(), item["output"].strip()))
    _validate_pairs(pairs, where)
    return tuple(pairs)
