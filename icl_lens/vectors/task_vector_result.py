"""The result of :func:`icl_lens.vectors.task_vectors.task_vector`: a vector per layer and accuracy by layer."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.vectors.common import FromOrigin, VectorOrigin

if TYPE_CHECKING:
    from icl_lens.vectors.task_vectors import TaskVectorConfig


@dataclasses.dataclass(frozen=True)
class TaskVectorResult(FromOrigin, Result):
    """Task vectors at every layer, and how well each one does on zero-shot queries.

    Attributes:
        vectors: θ_L for every layer ``[n_layers, d_model]`` (rows of unswept layers are
            still the extracted vectors).
        layers: the layers tried.
        dev_accuracy, test_accuracy: zero-shot top-1 accuracy with θ_L patched in, per tried layer.
        best_layer: the layer with the highest dev accuracy (ties: the earliest).
        zero_shot_accuracy, icl_accuracy: on the same test queries, without any vector and
            with ``n_shots`` demonstrations from the train split.
        test_correct: per tried layer and test query, whether the patched run is right.
        ceiling_accuracy: per tried layer, zero-shot test accuracy with each query's own
            ICL state patched in (see ``TaskVectorConfig.ceiling``; ``None`` if not run).
            Where even this stays near zero, the model has not yet moved the task into the
            last token at that layer: later layers still read the demonstrations
            themselves, and no vector put in there can stand in for them.
    """

    title = "Task vector"

    origin: VectorOrigin
    config: TaskVectorConfig
    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    dev_accuracy: Float[Tensor, " layers"]
    test_accuracy: Float[Tensor, " layers"]
    test_correct: Bool[Tensor, "layers test"]
    best_layer: int
    zero_shot_accuracy: float
    icl_accuracy: float
    n_dev: int
    n_test: int
    hook: str = "resid_post"
    ceiling_accuracy: Float[Tensor, " layers"] | None = None

    kind = "task"

    @property
    def layer(self) -> int:
        """The layer whose vector is used by default (best on dev)."""
        return self.best_layer

    @property
    def vector(self) -> Float[Tensor, " d_model"]:
        """θ at the best layer."""
        return self.vectors[self.best_layer]

    @property
    def test_accuracy_at_best(self) -> float:
        return float(self.test_accuracy[self.layers.index(self.best_layer)])

    @property
    def recovered(self) -> float:
        """Test accuracy with the task vector as a fraction of ICL accuracy."""
        return self.test_accuracy_at_best / self.icl_accuracy if self.icl_accuracy > 0 else float("nan")

    def to_dataframe(self) -> Any:
        import pandas as pd

        cols: dict[str, Any] = dict(
            layer=list(self.layers),
            dev_accuracy=self.dev_accuracy.tolist(),
            test_accuracy=self.test_accuracy.tolist(),
        )
        if self.ceiling_accuracy is not None:
            cols["ceiling_accuracy"] = self.ceiling_accuracy.tolist()
        cols["best"] = [l == self.best_layer for l in self.layers]
        return pd.DataFrame(cols)

    def summary(self) -> str:
        return (
            f"{self.origin.model} / {self.origin.task}: best layer {self.best_layer} (dev"
            + (
                ", where no layer scored above 0%: the choice is arbitrary"
                if float(self.dev_accuracy.max()) == 0
                else ""
            )
            + f"), test accuracy "
            f"{self.test_accuracy_at_best:.0%} with the task vector vs {self.icl_accuracy:.0%} ICL "
            f"({self.origin.n_shots} shots) and {self.zero_shot_accuracy:.0%} zero-shot; "
            f"{self.n_test} test queries"
            + (
                ""
                if self.ceiling_accuracy is None
                else f"; each query's own ICL state, patched in, reaches {float(self.ceiling_accuracy.max()):.0%} "
                f"at best (layer {self.layers[int(torch.argmax(self.ceiling_accuracy))]})"
            )
        )

    def _plot(self, ax: Any) -> None:
        ax.plot(self.layers, self.test_accuracy.tolist(), marker="o", label="test: zero-shot + task vector")
        ax.plot(self.layers, self.dev_accuracy.tolist(), marker=".", ls=":", label="dev (chooses the layer)")
        if self.ceiling_accuracy is not None:
            ax.plot(
                self.layers,
                self.ceiling_accuracy.tolist(),
                marker="s",
                ms=3,
                color="purple",
                label="test: each query's own ICL state (ceiling)",
            )
        ax.axhline(self.icl_accuracy, color="green", ls="--", label=f"ICL ({self.origin.n_shots} shots)")
        ax.axhline(self.zero_shot_accuracy, color="grey", ls="--", label="zero-shot")
        ax.axvline(self.best_layer, color="black", lw=0.8)
        ax.set_xlabel("layer L (residual stream after block L replaced)")
        ax.set_ylabel("top-1 accuracy")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Task vector by layer: {self.origin.task} ({self.origin.model})")
        ax.legend(fontsize="small")
