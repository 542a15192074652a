"""The worlds shipped with the package, ready to analyse: ``load_world("tasks")``.

Each is the default configuration trained from its fixed seed by ``scripts/train_worlds.py``
and stored in ``icl_lens/data/worlds/<name>`` (about 1 MB each):

* ``"tasks"``: the task world (:class:`~icl_lens.worlds.TaskToyConfig` defaults: 6 tasks,
  4 layers, TVP-loss at layer 1), where task and function vectors are found;
* ``"tasks_natural"``: the same world and model trained without the TVP-loss: ICL is
  perfect and task vectors are *not* found (the negative control);
* ``"linear_regression"``: one linear self-attention layer trained on in-context linear
  regression, which matches one step of gradient descent.

A shipped task world holds its last checkpoint and, where measured, its emergence result
(``emergence_result(name)``: ICL and task-vector accuracy over all its checkpoints).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any, Literal

# Light imports only: the command line resolves ``--model toy:...`` with this module before
# torch is imported.
from icl_lens.core.errors import ConfigError
from icl_lens.core.options import check_choice, choices

ShippedWorld = Literal["tasks", "tasks_natural", "linear_regression"]

TOY_PREFIX = "toy:"
"""Model names ``toy:<world>`` (``icl-lens report --model toy:tasks``) open a shipped task world."""

TASK_WORLDS: tuple[str, ...] = ("tasks", "tasks_natural")
"""The shipped worlds whose model is a transformer the report's analyses run on."""


def world_directory(name: str) -> Path:
    """Where the shipped world ``name`` lives inside the installed package."""
    check_choice(name, ShippedWorld, "world")
    return Path(str(resources.files("icl_lens").joinpath("data", "worlds", name)))


def list_worlds() -> list[str]:
    """Names of the shipped worlds."""
    return list(choices(ShippedWorld))


def load_world(name: str = "tasks") -> Any:
    """A shipped world, trained: a :class:`~icl_lens.worlds.TaskToyRun` (``run.model``,
    ``run.tasks``) or, for ``"linear_regression"``, a :class:`~icl_lens.worlds.LinearRegressionRun`.
    """
    directory = world_directory(name)
    if name == "linear_regression":
        from icl_lens.worlds.linear_regression import LinearRegressionRun

        return LinearRegressionRun.load(directory / "run")
    from icl_lens.worlds.task_run import load_task_run

    return load_task_run(directory / "run")


def toy_world(model: str) -> str | None:
    """The shipped task world a model name ``toy:<world>`` names (``None`` for any other name).

    Raises ConfigError for ``toy:`` followed by anything but a shipped task world.
    """
    if not model.strip().lower().startswith(TOY_PREFIX):
        return None
    name = model.strip()[len(TOY_PREFIX) :]
    if name not in TASK_WORLDS:
        hint = " (its analysis is the report's gradient_descent section)" if name == "linear_regression" else ""
        raise ConfigError(
            f"--model {model}: no such toy world{hint}; choose from " + ", ".join(TOY_PREFIX + w for w in TASK_WORLDS)
        )
    return name


def world_task_names(name: str) -> tuple[str, ...]:
    """The task names of the shipped task world ``name``, read from its config (no torch)."""
    check_choice(name, Literal["tasks", "tasks_natural"], "task world")
    saved = json.loads((world_directory(name) / "run" / "config.json").read_text(encoding="utf-8"))
    return tuple(saved["config"]["tasks"]["__tuple__"])


def emergence_result(name: str = "tasks") -> Any:
    """The shipped :class:`~icl_lens.worlds.EmergenceResult` of a task world (measured over all its checkpoints)."""
    path = world_directory(name) / "emergence"
    if not path.is_dir():
        raise ConfigError(f"no emergence result is shipped for world {name!r}")
    import icl_lens.worlds.check_result  # noqa: F401  (registers the result class)
    from icl_lens.core.results import load_result

    return load_result(path)
