"""The result of :func:`icl_lens.vectors.implant.evaluate_implant` (tables, plots, HTML)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.plotting import pyplot
from icl_lens.core.results import Result
from icl_lens.vectors.common import VectorOrigin

if TYPE_CHECKING:
    from icl_lens.vectors.implant import ImplantConfig


CONDITIONS: tuple[str, ...] = ("zero_shot", "zero_shot+vector", "icl", "shuffled", "shuffled+vector")


@dataclasses.dataclass(frozen=True)
class ImplantResult(Result):
    """Everything :func:`evaluate_implant` measured, for one vector on one task.

    Per-condition tensors follow :data:`CONDITIONS` (``conditions``). ``kl_to_icl[c, i]``
    is ``KL(ICL || condition c)`` on test query ``i`` in nats; ``top1_agreement[c]`` the
    fraction of test queries where condition ``c`` and ICL predict the same token.
    """

    title = "Does the implanted vector reproduce ICL?"

    origin: VectorOrigin
    config: ImplantConfig
    vector_kind: str
    operation: str
    task: str
    layer: int
    layer_choice: str
    conditions: tuple[str, ...]
    accuracy: Float[Tensor, " conditions"]
    correct: Bool[Tensor, "conditions test"]
    answer_prob: Float[Tensor, "conditions test"]
    kl_to_icl: Float[Tensor, "conditions test"]
    top1_agreement: Float[Tensor, " conditions"]
    queries: tuple[str, ...]
    answers: tuple[str, ...]
    layers: tuple[int, ...]
    layer_dev_accuracy: Float[Tensor, " layers"]
    layer_test_accuracy: Float[Tensor, " layers"]
    specificity_vectors: tuple[str, ...]
    specificity_tasks: tuple[str, ...]
    specificity: Float[Tensor, "vectors tasks"]
    natural_prompts: tuple[str, ...]
    natural_plain: tuple[str, ...]
    natural_implanted: tuple[str, ...]
    n_test: int
    n_dev: int

    def acc(self, condition: str) -> float:
        """Test accuracy of one condition (see :data:`CONDITIONS`)."""
        return float(self.accuracy[self.conditions.index(condition)])

    @property
    def recovered(self) -> float:
        """Zero-shot + vector accuracy as a fraction of ICL accuracy."""
        icl = self.acc("icl")
        return self.acc("zero_shot+vector") / icl if icl > 0 else float("nan")

    @property
    def recovered_gain(self) -> float:
        """Fraction of the ICL gain over zero-shot that the vector recovers."""
        gain = self.acc("icl") - self.acc("zero_shot")
        return (self.acc("zero_shot+vector") - self.acc("zero_shot")) / gain if gain > 0 else float("nan")

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            dict(
                condition=list(self.conditions),
                accuracy=self.accuracy.tolist(),
                answer_prob=self.answer_prob.mean(-1).tolist(),
                kl_to_icl=self.kl_to_icl.mean(-1).tolist(),
                top1_agrees_with_icl=self.top1_agreement.tolist(),
            )
        )

    def layers_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            dict(
                layer=list(self.layers),
                dev_accuracy=self.layer_dev_accuracy.tolist(),
                test_accuracy=self.layer_test_accuracy.tolist(),
            )
        )

    def specificity_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            self.specificity.numpy(), index=list(self.specificity_vectors), columns=list(self.specificity_tasks)
        )

    def natural_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            dict(
                prompt=list(self.natural_prompts),
                without_vector=list(self.natural_plain),
                with_vector=list(self.natural_implanted),
            )
        )

    def summary(self) -> str:
        a = {c: self.acc(c) for c in self.conditions}
        return (
            f"{self.origin.model} / {self.task}, {self.vector_kind} vector ({self.operation} after block {self.layer}, "
            f"{self.layer_choice}): zero-shot {a['zero_shot']:.0%} -> {a['zero_shot+vector']:.0%} with the vector, "
            f"ICL {a['icl']:.0%} ({self.recovered:.0%} recovered), shuffled {a['shuffled']:.0%} -> "
            f"{a['shuffled+vector']:.0%}; KL(ICL||zero-shot+vector) "
            f"{float(self.kl_to_icl[1].mean()):.2f} vs {float(self.kl_to_icl[0].mean()):.2f} without; "
            f"{self.n_test} test queries"
        )

    # -- pictures ----------------------------------------------------------------------
    def _plot(self, ax: Any) -> None:
        self._plot_accuracy(ax)

    def _plot_accuracy(self, ax: Any) -> None:
        colors = ["#999999", "#1f77b4", "#2ca02c", "#bbbbbb", "#ff7f0e"]
        ax.bar(range(len(self.conditions)), self.accuracy.tolist(), color=colors[: len(self.conditions)])
        ax.set_xticks(range(len(self.conditions)), [c.replace("+", "\n+ ") for c in self.conditions], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("top-1 accuracy (test)")
        ax.set_title(f"{self.task}: {self.vector_kind} vector at layer {self.layer} ({self.n_test} test queries)")

    def _figure(self, draw: Any, ax: Any = None, size: tuple[float, float] = (6.4, 4.0)) -> Any:
        plt = pyplot()
        if ax is None:
            fig, ax = plt.subplots(figsize=size)
        else:
            fig = ax.figure
        draw(ax)
        fig.tight_layout()
        return fig

    def plot_accuracy(self, ax: Any = None) -> Any:
        """Accuracy of the five conditions."""
        return self._figure(self._plot_accuracy, ax)

    def plot_distribution(self, ax: Any = None) -> Any:
        """Mean KL(ICL || condition) and top-1 agreement with ICL per condition."""

        def draw(ax: Any) -> None:
            others = [i for i, c in enumerate(self.conditions) if c != "icl"]
            labels = [self.conditions[i].replace("+", "\n+ ") for i in others]
            kl = [float(self.kl_to_icl[i].mean()) for i in others]
            ax.bar(range(len(others)), kl, color="#1f77b4")
            ax.set_xticks(range(len(others)), labels, fontsize=8)
            ax.set_ylabel("mean KL(ICL || condition), nats")
            twin = ax.twinx()
            twin.plot(range(len(others)), [float(self.top1_agreement[i]) for i in others], "ko-")
            twin.set_ylim(0, 1.05)
            twin.set_ylabel("top-1 agreement with ICL (dots)")
            ax.set_title("How close to the ICL next-token distribution")

        return self._figure(draw, ax)

    def plot_layers(self, ax: Any = None) -> Any:
        """Zero-shot + vector accuracy when the vector goes in after each block."""

        def draw(ax: Any) -> None:
            ax.plot(self.layers, self.layer_test_accuracy.tolist(), marker="o", label="test")
            ax.plot(self.layers, self.layer_dev_accuracy.tolist(), marker=".", ls=":", label="dev (chooses)")
            ax.axhline(self.acc("icl"), color="green", ls="--", label="ICL")
            ax.axhline(self.acc("zero_shot"), color="grey", ls="--", label="zero-shot")
            ax.axvline(self.layer, color="black", lw=0.8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"layer ({self.operation} after block L, answer position)")
            ax.set_ylabel("zero-shot + vector accuracy")
            ax.set_title("Layer sweep")
            ax.legend(fontsize="small")

        return self._figure(draw, ax)

    def plot_specificity(self, ax: Any = None) -> Any:
        """Accuracy of each vector (rows) on zero-shot queries of each task (columns)."""

        def draw(ax: Any) -> None:
            data = self.specificity.numpy()
            im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.figure.colorbar(im, ax=ax, label="zero-shot + vector accuracy")
            ax.set_xticks(range(len(self.specificity_tasks)), self.specificity_tasks, rotation=45, ha="right")
            ax.set_yticks(range(len(self.specificity_vectors)), self.specificity_vectors)
            for i in range(data.shape[0]):
                for j in range(data.shape[1]):
                    ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
            ax.set_xlabel("queries of task")
            ax.set_ylabel("vector")
            ax.set_title("Task specificity")

        return self._figure(draw, ax, size=(6.4, 1.5 + 0.5 * len(self.specificity_vectors)))

    def _repr_html_(self) -> str:
        import base64
        import html
        import io

        plt = pyplot()
        parts = [f"<h4>{html.escape(self.title)}</h4>", f"<p>{html.escape(self.summary())}</p>"]
        parts.append(self.to_dataframe().to_html(float_format=lambda x: f"{x:.3g}", index=False))
        for make in (self.plot_accuracy, self.plot_distribution, self.plot_layers, self.plot_specificity):
            fig = make()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80)
            plt.close(fig)
            parts.append(f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')
        if self.natural_prompts:
            parts.append("<p>Natural text (greedy continuation):</p>")
            parts.append(self.natural_dataframe().to_html(index=False))
        return "\n".join(parts)
