"""The result of :func:`icl_lens.prompting.evaluation.evaluate_icl`, and the accuracy-by-shots
table and plot it shares with every result that has one curve per row over shot counts."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import accuracy_ci, accuracy_interval, compare_paired, error_bars, verdict

if TYPE_CHECKING:
    from icl_lens.prompting.evaluation import IclEvalConfig


def shot_table(
    key: str, names: Sequence[str], shots: Sequence[int], correct: Bool[Tensor, "rows shots prompts"], **cells: Any
) -> Any:
    """One row per (name, shot count): accuracy with its 95% Wilson interval (``ci_low``,
    ``ci_high``), the extra ``cells`` and the number of prompts.

    Each extra cell is a ``[rows, shots]`` tensor (read per cell) or one value for every row.
    """
    import pandas as pd

    accuracy = correct.float().mean(-1)
    low, high = accuracy_interval(correct)
    rows = []
    for r, name in enumerate(names):
        for s, k in enumerate(shots):
            row: dict[str, Any] = {key: name, "shots": k, "accuracy": float(accuracy[r, s])}
            row["ci_low"], row["ci_high"] = float(low[r, s]), float(high[r, s])
            for column, value in cells.items():
                row[column] = float(value[r, s]) if isinstance(value, Tensor) else value
            row["n_prompts"] = int(correct.shape[-1])
            rows.append(row)
    return pd.DataFrame(rows)


def plot_shot_curves(
    ax: Any,
    shots: Sequence[int],
    curves: Sequence[tuple[str, Bool[Tensor, "shots prompts"], dict[str, Any]]],
    *,
    ylabel: str,
    title: str,
) -> None:
    """Accuracy by shot count with 95% Wilson error bars, one line per ``(label, per-prompt
    outcomes, line style)``, shots evenly spaced."""
    x = list(range(len(shots)))
    for i, (label, correct, style) in enumerate(curves):
        values = correct.float().mean(-1)
        low, high = accuracy_interval(correct)
        # a small offset per curve so that overlapping error bars stay readable
        shift = [v + 0.04 * (i - (len(curves) - 1) / 2) for v in x] if len(curves) > 1 else x
        ax.errorbar(shift, values.tolist(), yerr=error_bars(values, low, high), capsize=2, label=label,
                    **{"marker": "o", **style})  # fmt: skip
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

    def comparison(self, task: str | None = None) -> Any:
        """The most shots against the fewest on the same queries (exact McNemar, paired bootstrap
        interval on the difference), for ``task`` (default: the first)."""
        t = self.tasks.index(task) if task is not None else 0
        names = (f"{self.shots[-1]} shots", f"{self.shots[0]} shots")
        return compare_paired(self.correct[t, -1], self.correct[t, 0], names=names, seed=self.config.seed)

    def summary(self) -> str:
        s0, s1 = self.shots[0], self.shots[-1]
        n = int(self.correct.shape[-1])
        if len(self.tasks) == 1 and s0 != s1:
            what = f"accuracy on {self.tasks[0]}"
            return f"{self.model}: " + verdict(self.comparison(), subject=f"{s1} demonstrations vs {s0}", what=what)
        # several tasks: each task's own test, and the pooled accuracy over every prompt
        tests = [self.comparison(t) for t in self.tasks]
        wins = sum(1 for c in tests if c.significant and c.difference > 0)
        pooled0, pooled1 = (float(self.correct[:, i].float().mean()) for i in (0, -1))
        total = n * len(self.tasks)
        return (
            f"{self.model}: over {len(self.tasks)} task(s) ({n} prompts each), {accuracy_ci(pooled0, total)} at {s0} "
            f"shots and {accuracy_ci(pooled1, total)} at {s1} shots (pooled); {s1} shots beat {s0} on {wins} of "
            f"{len(self.tasks)} tasks (McNemar and bootstrap interval, 95%)"
        )

    def _plot(self, ax: Any) -> None:
        curves = [(task, self.correct[t], {}) for t, task in enumerate(self.tasks)]
        plot_shot_curves(
            ax, self.shots, curves, ylabel="first-token top-1 accuracy", title=f"ICL accuracy: {self.model}"
        )
        if len(self.tasks) <= 16:
            ax.legend(fontsize="small", ncol=2 if len(self.tasks) > 6 else 1)
