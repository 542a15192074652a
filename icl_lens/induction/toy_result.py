"""A trained toy run: its config, loss curve and checkpoints (:func:`~icl_lens.induction.toy.train_toy_model`)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import training
from icl_lens.core.errors import ConfigError
from icl_lens.core.results import Result

if TYPE_CHECKING:
    from icl_lens.induction.toy import ToyConfig


@dataclasses.dataclass(frozen=True)
class ToyRun(training.LossCurve, Result):
    """A finished toy training run: its config, where its checkpoints are, its loss curve.

    ``train_loss[s]`` is the training loss of update ``s + 1``. Load a checkpoint with
    :meth:`model`.
    """

    title: ClassVar[str] = "Toy training run"

    config: ToyConfig
    directory: str
    checkpoint_steps: tuple[int, ...]
    train_loss: Float[Tensor, " step"]

    def checkpoint_path(self, step: int) -> Path:
        if step not in self.checkpoint_steps:
            raise ConfigError(f"no checkpoint at step {step}; saved steps: {self.checkpoint_steps}")
        return training.checkpoint_file(Path(self.directory), step)

    def model(self, step: int | None = None, into: Any = None) -> Any:
        """The model at checkpoint ``step`` (default: the last), in eval mode.

        ``into``: an existing model of this config to load the weights into (saves the
        build when looping over checkpoints).
        """
        from icl_lens.induction.toy import build_toy_model

        step = self.checkpoint_steps[-1] if step is None else step
        model = into if into is not None else build_toy_model(self.config)
        return training.load_weights(model, self.checkpoint_path(step))

    def summary(self) -> str:
        return (
            f"{self.config.n_layers}-layer {'attention-only ' if self.config.attn_only else ''}toy, "
            f"{self.config.n_steps} steps, {len(self.checkpoint_steps)} checkpoints, final train loss {self.final_loss():.3f}"
        )

    def _plot(self, ax: Any) -> None:
        ax.plot(range(1, len(self.train_loss) + 1), self.train_loss.numpy(), color="0.7", lw=0.5, label="per step")
        ax.plot(*moving_average(self.train_loss), color="C0", label="moving average")
        ax.set_xlabel("training step")
        ax.set_ylabel("training loss (nats)")
        ax.legend(fontsize=8)


def moving_average(values: Tensor, width: int = 50) -> tuple[Any, Any]:
    """``(steps, smoothed)`` with a centred window, for plotting loss curves."""
    width = max(1, min(width, len(values)))
    kernel = torch.ones(1, 1, width) / width
    smooth = F.conv1d(values.float()[None, None], kernel).flatten()
    steps = torch.arange(len(smooth)) + 1 + (width - 1) / 2
    return steps.numpy(), smooth.numpy()
