"""Training a transformer on a task world, and the run it leaves behind.

:func:`train_task_toy` trains with the package's checkpointed loop
(:mod:`icl_lens.core.training`, shared with the induction toys): seeded, resumable,
a progress bar, a checkpoint every ``checkpoint_every`` steps. The returned
:class:`TaskToyRun` holds the model (``run.model``, the last checkpoint, with its
tokenizer) and the world's tasks (``run.tasks``, ordinary :class:`~icl_lens.Task`
objects), so ``il.task_vector(run.model, run.tasks[0], template="hendel")`` works as on any
model.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import training
from icl_lens.core.results import Result
from icl_lens.prompting.tasks import Task
from icl_lens.worlds.task_world import TaskToyConfig, world_batch, world_loss, world_tasks, world_words
from icl_lens.worlds.vocab import word_tokenizer

RUN_FORMAT = "icl_lens.task_world_run"
TEMPLATE = "hendel"
"""The prompt format of every world (``{input} -> {output}\\n``): pass ``template=TEMPLATE``."""


def build_task_model(config: TaskToyConfig, *, eval_mode: bool = False) -> Any:
    """A freshly initialised bridge for ``config`` with the world's word tokenizer."""
    from icl_lens.core.models import tiny_model

    tokenizer = word_tokenizer(world_words(config), name=f"icl_lens-{config.world}-world")
    model = tiny_model(
        n_layers=config.n_layers,
        n_heads=config.n_heads,
        d_model=config.d_model,
        d_head=config.d_head,
        attn_only=config.attn_only,
        n_ctx=config.seq_len,
        tokenizer=tokenizer,
        positional_embedding_type=config.positions,
        seed=config.seed,
        eval_mode=eval_mode,
    )
    tvp = "" if config.tvp_layer is None else f"-tvp{config.tvp_layer}"
    model.cfg.model_name = f"{config.world}-world-{config.n_layers}L{config.n_heads}H{tvp}-seed{config.seed}"
    return model


@dataclasses.dataclass(frozen=True)
class TaskToyRun(training.CheckpointedRun, Result):
    """A transformer trained on a task world: its config, checkpoints and loss curve.

    ``run.model`` is the last checkpoint (loaded once, in eval mode, frozen), with the
    world's tokenizer; :meth:`model_at` loads any other checkpoint. ``run.tasks`` are the
    world's tasks. ``train_loss[s]`` is the training loss of update ``s + 1`` (with the
    TVP-loss added when ``config.tvp_layer`` is set).
    """

    title: ClassVar[str] = "Task-world training run"

    config: TaskToyConfig
    directory: str
    checkpoint_steps: tuple[int, ...]
    train_loss: Float[Tensor, " step"]
    seconds: float | None = None

    @property
    def tasks(self) -> tuple[Task, ...]:
        """The world's tasks (ordinary :class:`~icl_lens.Task` objects)."""
        return world_tasks(self.config)

    @property
    def template(self) -> str:
        """The prompt template the world was trained on (``"hendel"``)."""
        return TEMPLATE

    @functools.cached_property
    def model(self) -> Any:
        """The model at the last checkpoint (eval mode, frozen parameters)."""
        return self.model_at()

    def model_at(self, step: int | None = None, into: Any = None) -> Any:
        """The model at checkpoint ``step`` (default: the last), in eval mode (see ``load_checkpoint``)."""
        return self.load_checkpoint(lambda: build_task_model(self.config), step, into)

    def summary(self) -> str:
        c = self.config
        tvp = "natural" if c.tvp_layer is None else f"TVP-loss at layer {c.tvp_layer} (x{c.tvp_weight:g})"
        took = "" if self.seconds is None else f", trained in {self.seconds:.0f} s"
        return (
            f"{c.world} world ({len(self.tasks)} tasks, {c.n_inputs} inputs), {c.n_layers}-layer model, {tvp}; "
            f"{len(self.train_loss)} steps, final train loss {self.final_loss():.3f}{took}"
        )

    def _plot(self, ax: Any) -> None:
        self.plot_loss_curve(ax)
        ax.set_title(f"{self.config.world} world")


def train_task_toy(
    config: TaskToyConfig | None = None,
    directory: str | os.PathLike[str] | None = None,
    *,
    resume: bool = True,
    stop_after: int | None = None,
    show_progress: bool | None = None,
    **overrides: Any,
) -> TaskToyRun:
    """Train a transformer on a task world on CPU, with checkpoints and a progress bar.

    Args:
        config: a :class:`TaskToyConfig`; keyword ``overrides`` replace its fields
            (``train_task_toy(world="control")``).
        directory: run directory (default ``<icl_lens cache>/world_runs/<config
            fingerprint>``: the same config is trained once and then reused).
        resume: continue from the directory's latest checkpoint (a finished run is
            returned as is); ``False`` starts again from step 0.
        stop_after: stop at this step without marking the run complete.
    """
    import time

    config = TaskToyConfig.resolve(config, overrides)
    run_dir = training.run_directory(directory, config, "world_runs")

    def step_loss(model: Any, generator: torch.Generator) -> Tensor:
        return world_loss(model, config, world_batch(config, config.batch_size, generator))

    started = time.perf_counter()
    trained = training.train_run(
        run_dir,
        config,
        RUN_FORMAT,
        lambda: build_task_model(config),
        step_loss,
        resume=resume,
        stop_after=stop_after,
        show_progress=show_progress,
        desc=f"training {config.world} world",
    )
    if not trained:
        return load_task_run(run_dir)
    seconds = time.perf_counter() - started
    return dataclasses.replace(load_task_run(run_dir), seconds=seconds)


def load_task_run(directory: str | os.PathLike[str]) -> TaskToyRun:
    """Open a run directory written by :func:`train_task_toy` (or shipped by :func:`export_run`)."""
    config, steps, losses = training.read_run(Path(directory), TaskToyConfig, "train one with train_task_toy")
    return TaskToyRun(config=config, directory=str(directory), checkpoint_steps=steps, train_loss=losses)


def export_run(run: TaskToyRun, destination: str | os.PathLike[str], steps: tuple[int, ...] | None = None) -> Path:
    """Copy a finished run's config, loss curve and some checkpoints (default: the last) to ``destination``.

    The copy opens with :func:`load_task_run` but cannot be resumed (no optimizer state):
    this is how the worlds shipped with the package were made.
    """
    from safetensors.torch import save_file

    src, dst = Path(run.directory), Path(destination)
    steps = (run.checkpoint_steps[-1],) if steps is None else tuple(steps)
    (dst / "checkpoints").mkdir(parents=True, exist_ok=True)
    training.write_json(dst / training.CONFIG, {"format": RUN_FORMAT, "config": run.config.to_dict()})
    if (src / training.COMPLETE).exists():
        shutil.copyfile(src / training.COMPLETE, dst / training.COMPLETE)
    for step in steps:
        ckpt = run.checkpoint_path(step)
        shutil.copyfile(ckpt, training.checkpoint_file(dst, step))
        shutil.copyfile(ckpt.with_suffix(".json"), training.checkpoint_file(dst, step).with_suffix(".json"))
    last = max(steps)
    meta = {"state": json.dumps({"step": last, "param_groups": []})}
    save_file({"train_loss": run.train_loss[:last].double().contiguous()}, str(dst / training.RESUME), metadata=meta)
    return dst
