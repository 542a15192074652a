"""The result of :func:`icl_lens.prompting.evaluation.evaluate_icl`, and the accuracy-by-shots
table and plot it shares with every result that has one curve per row over shot counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.results import Result

if TYPE_CHECKING:
    from icl_lens.prompting.evaluation import IclEvalConfig


def shot_table(
    key: str, names: Sequence[str], shots: Sequence[int], correct: Bool[Tensor, "rows shots prompts"], **cells: Any
) -> Any:
    """One row per (name, shot count): accuracy, the extra ``cells`` and the number of prompts.

    Each extra cell is a ``[rows, shots]`` tensor (read per cell) or one value for every row.
    """
    import pandas as pd

    accuracy = correct.float().mean(-1)
    rows = []
    for r, name in enumerate(names):
        for s, k in enumerate(shots):
            row: dict[str, Any] = {key: name, "shots": k, "accuracy": float(accuracy[r, s])}
            for column, value in cells.items():
                row[column] = float(value[r, s]) if isinstance(value, Tensor) else value
            row["n_prompts"] = int(correct.shape[-1])
            rows.append(row)
    return pd.DataFrame(rows)


def plot_shot_curves(
    ax: Any,
    shots: Sequence[int],
    curves: Sequence[tuple[str, Sequence[float], dict[str, Any]]],
    *,
    ylabel: str,
    title: str,
) -> None:
    """Accuracy by shot count, one line per ``(label, values, line style)``, shots evenly spaced."""
    x = list(range(len(shots)))
    for label, values, style in curves:
        ax.plot(x, list(values), label=label, **{"marker": "o", **style})
    ax.set_xticks(x, [str(s) for s in shots])
    ax.set_xlabel("demonstrations (shots)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title, fontsize="medium")


@dataclasses.dataclass(frozen=True)
class IclAccuracyResult(Result):
    """First-token top-1 accuracy by task and shot count.

    ``correct[t, s, i]`` says whether prompt ``i`` of task ``t`` with ``shots[s]``
    demonstrations put the answer's first token at rank 1. The same queries (and nested
    demonstrations) are used at every shot count.
    """

    title = "ICL accuracy by shot count"

    model: str
    tasks: tuple[str, ...]
    shots: tuple[int, ...]
    accuracy: Float[Tensor, "tasks shots"]
    correct: Bool[Tensor, "tasks shots prompts"]
    answer_logprob: Float[Tensor, "tasks shots prompts"]
    config: IclEvalConfig

    def to_dataframe(self) -> Any:
        return shot_table(
            "task", self.tasks, self.shots, self.correct, mean_answer_logprob=self.answer_logprob.mean(-1)
        )

    def table(self) -> Any:
        """Accuracy as a task x shots table."""
        df = self.to_dataframe()
        return df.pivot(index="task", columns="shots", values="accuracy").loc[list(self.tasks)]

    def summary(self) -> str:
        s0, s1 = self.shots[0], self.shots[-1]
        mean0 = float(self.accuracy[:, 0].mean())
        mean1 = float(self.accuracy[:, -1].mean())
        return (
            f"{self.model}: mean accuracy over {len(self.tasks)} task(s) {mean0:.1%} at {s0} shots, "
            f"{mean1:.1%} at {s1} shots ({self.correct.shape[-1]} prompts each)"
        )

    def _plot(self, ax: Any) -> None:
        curves = [(task, self.accuracy[t].tolist(), {}) for t, task in enumerate(self.tasks)]
        plot_shot_curves(
            ax, self.shots, curves, ylabel="first-token top-1 accuracy", title=f"ICL accuracy: {self.model}"
        )
        if len(self.tasks) <= 16:
            ax.legend(fontsize="small", ncol=2 if len(self.tasks) > 6 else 1)
