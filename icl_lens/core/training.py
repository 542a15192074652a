"""Checkpointed, resumable training on CPU, for the models icl_lens trains itself.

The induction toys (:mod:`icl_lens.induction.toy`) and the toy worlds
(:mod:`icl_lens.worlds`) share this loop: AdamW on a loss the caller computes from the
model and a seeded data generator, a progress bar, and a run directory::

    config.json                          {"format": ..., "config": the run's Config}
    checkpoints/step_000100.safetensors  model state_dict at that step
    checkpoints/step_000100.json         step, mean training loss since the last checkpoint
    resume.safetensors                   optimizer state, data RNG state and loss history of
                                         the latest checkpoint (replaced atomically)
    complete.json                        written when the last step is done

Resuming from ``resume.safetensors`` gives bit-identical weights to an uninterrupted run
(same machine and thread count: CPU kernels are deterministic for a fixed set-up), because
everything the next step depends on (weights, optimizer moments, the data generator's
state) is restored.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from icl_lens.core.errors import ConfigError, ResultFileError
from icl_lens.core.progress import progress
from icl_lens.core.results import Config

RESUME = "resume.safetensors"
COMPLETE = "complete.json"
CONFIG = "config.json"

C = TypeVar("C", bound=Config)
StepLoss = Callable[[Any, torch.Generator], Tensor]
"""``step_loss(model, generator)``: the loss of one update, drawing its batch from ``generator``."""


def checkpoint_file(run_dir: Path, step: int) -> Path:
    """Where the weights of ``step`` are (``checkpoints/step_000100.safetensors``)."""
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}.safetensors"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a temporary file renamed into place)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def fingerprint(config: Config) -> str:
    """Short hash of a training config (names its default run directory)."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:12]


def run_directory(directory: str | os.PathLike[str] | None, config: Config, kind: str) -> Path:
    """``directory``, or by default ``<icl_lens cache>/<kind>/<config fingerprint>``.

    The default makes the same config train once and then be reused.
    """
    if directory is not None:
        return Path(directory)
    from icl_lens.core.models import cache_dir

    return cache_dir() / kind / fingerprint(config)


def pick_checkpoint(steps: tuple[int, ...], step: int | None) -> int:
    """``step`` if a checkpoint was saved there (``None``: the last one), else a ConfigError."""
    if step is None:
        return steps[-1]
    if step not in steps:
        raise ConfigError(f"no checkpoint at step {step}; saved steps: {steps}")
    return step


def prepare_run_directory(run_dir: Path, config: Config, run_format: str) -> None:
    """Create ``run_dir`` for ``config``, or check that the run already there is of the same config."""
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    config_file = run_dir / CONFIG
    if config_file.exists():
        saved = type(config).from_dict(json.loads(config_file.read_text())["config"])
        if saved != config:
            raise ConfigError(
                f"{run_dir} holds a run of a different {type(config).__name__} ({saved}); use another directory."
            )
    else:
        write_json(config_file, {"format": run_format, "config": config.to_dict()})


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / COMPLETE).exists()


def train_with_checkpoints(
    run_dir: Path,
    model: torch.nn.Module,
    step_loss: StepLoss,
    *,
    n_steps: int,
    lr: float,
    weight_decay: float,
    seed: int,
    checkpoint_every: int,
    betas: tuple[float, float] = (0.9, 0.999),
    lr_factor: Callable[[int], float] | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    show_progress: bool | None = None,
    desc: str = "training",
) -> None:
    """Train ``model`` in place with AdamW, checkpointing into ``run_dir``.

    Call :func:`prepare_run_directory` first. ``step_loss(model, generator)`` computes the
    loss of one update; ``generator`` is seeded with ``seed`` and is the only source of
    randomness, so that a resumed run draws the same batches. ``lr_factor(step)``
    multiplies ``lr`` at update ``step`` (1-based; a schedule that depends on the step
    alone, so resuming stays exact). ``stop_after`` stops at that step (a checkpoint is
    written there) without marking the run complete.
    """
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, betas=betas)
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    done = 0
    if resume and (run_dir / RESUME).exists():
        done, losses = _load_resume_state(run_dir, model, optimizer, generator)
    else:
        _save_checkpoint(run_dir, model, optimizer, generator, 0, losses, checkpoint_every)

    last = n_steps if stop_after is None else min(stop_after, n_steps)
    started = time.perf_counter()
    for step in progress(range(done + 1, last + 1), total=max(0, last - done), desc=desc, enabled=show_progress):
        if lr_factor is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_factor(step)
        loss = step_loss(model, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        if step % checkpoint_every == 0 or step == last:
            _save_checkpoint(run_dir, model, optimizer, generator, step, losses, checkpoint_every)
    if last == n_steps:
        write_json(run_dir / COMPLETE, {"n_steps": n_steps, "seconds_last_session": time.perf_counter() - started})


def train_run(
    run_dir: Path,
    config: Any,
    run_format: str,
    build_model: Callable[[], torch.nn.Module],
    step_loss: StepLoss,
    *,
    lr_factor: Callable[[int], float] | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    show_progress: bool | None = None,
    desc: str = "training",
) -> bool:
    """Prepare ``run_dir`` for ``config`` and train a model from ``build_model()`` unless the run is complete.

    ``config`` supplies ``n_steps``, ``lr``, ``weight_decay``, ``seed`` and
    ``checkpoint_every``; the rest is as in :func:`train_with_checkpoints`. Returns
    whether it trained (``False``: a finished run was found and ``resume`` was true).
    """
    prepare_run_directory(run_dir, config, run_format)
    if resume and is_complete(run_dir):
        return False
    train_with_checkpoints(
        run_dir,
        build_model(),
        step_loss,
        n_steps=config.n_steps,
        lr=config.lr,
        weight_decay=config.weight_decay,
        seed=config.seed,
        checkpoint_every=config.checkpoint_every,
        lr_factor=lr_factor,
        resume=resume,
        stop_after=stop_after,
        show_progress=show_progress,
        desc=desc,
    )
    return True


class LossCurve:
    """For a run's result with a per-step ``train_loss``: its table, its final loss, its plot."""

    train_loss: Tensor

    def final_loss(self, last: int = 100) -> float:
        """Mean training loss over the last ``last`` steps (NaN before the first step)."""
        return float(self.train_loss[-last:].mean()) if len(self.train_loss) else float("nan")

    def to_dataframe(self) -> Any:
        """One row per training step: ``step``, ``train_loss``."""
        import pandas as pd

        return pd.DataFrame({"step": range(1, len(self.train_loss) + 1), "train_loss": self.train_loss.numpy()})

    def plot_loss_curve(self, ax: Any) -> None:
        """The loss of every step, faint, under its moving average."""
        ax.plot(range(1, len(self.train_loss) + 1), self.train_loss.numpy(), color="0.7", lw=0.5, label="per step")
        ax.plot(*moving_average(self.train_loss), color="C0", label="moving average")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (nats)")
        ax.legend(fontsize=8)


class CheckpointedRun(LossCurve):
    """For a run's result whose checkpoints stay in its run ``directory``: find and load them."""

    directory: str
    checkpoint_steps: tuple[int, ...]

    def checkpoint_path(self, step: int | None = None) -> Path:
        """The weights file of checkpoint ``step`` (default: the last)."""
        return checkpoint_file(Path(self.directory), pick_checkpoint(self.checkpoint_steps, step))

    def load_checkpoint(self, build_model: Callable[[], Any], step: int | None = None, into: Any = None) -> Any:
        """The model at checkpoint ``step`` (default: the last), in eval mode, frozen.

        ``into``: a model of the run's config to load the weights into instead of
        ``build_model()`` (saves the build when looping over checkpoints).
        """
        return load_weights(into if into is not None else build_model(), self.checkpoint_path(step))


def moving_average(values: Tensor, width: int = 50) -> tuple[Any, Any]:
    """``(steps, smoothed)`` with a centred window, for plotting loss curves."""
    import torch.nn.functional as F

    width = max(1, min(width, len(values)))
    kernel = torch.ones(1, 1, width) / width
    smooth = F.conv1d(values.float()[None, None], kernel).flatten()
    steps = torch.arange(len(smooth)) + 1 + (width - 1) / 2
    return steps.numpy(), smooth.numpy()


def read_run(run_dir: Path, config_cls: type[C], hint: str) -> tuple[C, tuple[int, ...], Tensor]:
    """``(config, checkpoint steps, training loss per update)`` of a run directory.

    ``hint`` ends the error raised when ``run_dir`` is not a run (say how to make one).
    """
    from safetensors import safe_open

    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists() or not (run_dir / RESUME).exists():
        raise ResultFileError(f"{run_dir} is not a training run directory (no {CONFIG} / {RESUME}); {hint}.")
    config = config_cls.from_dict(json.loads((run_dir / CONFIG).read_text())["config"])
    with safe_open(str(run_dir / RESUME), framework="pt") as f:
        losses = f.get_tensor("train_loss")
        last_step = int(json.loads(f.metadata()["state"])["step"])
    steps = sorted(
        int(p.stem.split("_")[1])
        for p in (run_dir / "checkpoints").glob("step_*.safetensors")
        if int(p.stem.split("_")[1]) <= last_step
    )
    return config, tuple(steps), losses[:last_step].clone()


def load_weights(model: torch.nn.Module, weights: Path | dict[str, Tensor]) -> Any:
    """Load a checkpoint (a file or a state dict) into ``model`` and make it ready for analysis (eval mode, frozen)."""
    from safetensors.torch import load_file

    model.load_state_dict(weights if isinstance(weights, dict) else load_file(str(weights)))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _save_checkpoint(
    run_dir: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    step: int,
    losses: list[float],
    every: int,
) -> None:
    from safetensors.torch import save_file

    ckpt = checkpoint_file(run_dir, step)
    tmp = ckpt.with_name(f".{ckpt.name}.tmp")
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, ckpt)
    recent = losses[-((step - 1) % every + 1) :] if step else []
    write_json(
        ckpt.with_suffix(".json"),
        {"step": step, "train_loss_since_previous_checkpoint": sum(recent) / len(recent) if recent else None},
    )
    # Optimizer moments, data RNG and loss history: everything a bit-identical resume needs.
    opt_state = optimizer.state_dict()
    tensors: dict[str, Tensor] = {
        "rng_state": generator.get_state(),
        "train_loss": torch.tensor(losses, dtype=torch.float64),
    }
    for idx, state in opt_state["state"].items():
        for key, value in state.items():
            tensors[f"opt.{idx}.{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    meta = {"state": json.dumps({"step": step, "param_groups": opt_state["param_groups"]})}
    tmp = run_dir / f".{RESUME}.tmp"
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, run_dir / RESUME)


def _load_resume_state(
    run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, generator: torch.Generator
) -> tuple[int, list[float]]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(run_dir / RESUME), framework="pt") as f:
        meta = json.loads(f.metadata()["state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    step = int(meta["step"])
    model.load_state_dict(load_file(str(checkpoint_file(run_dir, step))))
    state: dict[int, dict[str, Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    generator.set_state(tensors["rng_state"])
    return step, [float(x) for x in tensors["train_loss"].tolist()]
