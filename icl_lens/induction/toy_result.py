"""A trained toy run: its config, loss curve and checkpoints (:func:`~icl_lens.induction.toy.train_toy_model`)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from jaxtyping import Float
from torch import Tensor

from icl_lens.core import training
from icl_lens.core.results import Result

if TYPE_CHECKING:
    from icl_lens.induction.toy import ToyConfig


@dataclasses.dataclass(frozen=True)
class ToyRun(training.CheckpointedRun, Result):
    """A finished toy training run: its config, where its checkpoints are, its loss curve.

    ``train_loss[s]`` is the training loss of update ``s + 1``. Load a checkpoint with
    :meth:`model`.
    """

    title: ClassVar[str] = "Toy training run"

    config: ToyConfig
    directory: str
    checkpoint_steps: tuple[int, ...]
    train_loss: Float[Tensor, " step"]

    def model(self, step: int | None = None, into: Any = None) -> Any:
        """The model at checkpoint ``step`` (default: the last), in eval mode (see ``load_checkpoint``)."""
        from icl_lens.induction.toy import build_toy_model

        return self.load_checkpoint(lambda: build_toy_model(self.config), step, into)

    def summary(self) -> str:
        return (
            f"{self.config.n_layers}-layer {'attention-only ' if self.config.attn_only else ''}toy, "
            f"{self.config.n_steps} steps, {len(self.checkpoint_steps)} checkpoints, final train loss {self.final_loss():.3f}"
        )

    def _plot(self, ax: Any) -> None:
        self.plot_loss_curve(ax)
