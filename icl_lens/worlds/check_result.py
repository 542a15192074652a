"""Results of :func:`~icl_lens.worlds.check_vectors` and :func:`~icl_lens.worlds.vector_emergence`."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import compare_paired, pct_ci, proportion_interval, ratio_interval

VECTORS = {"task_vector": "task vector", "function_vector": "function vector"}


def vector_verdict(
    vector: Tensor, zero_shot: Tensor, icl: Tensor, threshold: float, seed: int = 0
) -> tuple[str, tuple[float, float, float]]:
    """``(verdict, (recovered, ci_low, ci_high))`` for one vector on paired per-query outcomes.

    ``"no ICL"``: ICL is not significantly above zero-shot, so there is nothing for a
    vector to recover (an untrained model's vector can "recover" all of nothing).
    ``"found"``: the vector is significantly above zero-shot (exact McNemar ``p < 0.05``
    and a paired bootstrap interval above zero) and the lower bound of the
    recovered fraction is ``>= threshold``; ``"not found"``: its upper bound is
    ``< threshold``; ``"inconclusive"`` otherwise.
    """
    recovered = ratio_interval(vector.float(), icl.float(), seed=seed)
    if not _above(icl, zero_shot, seed):
        return "no ICL", recovered
    if recovered[1] >= threshold and _above(vector, zero_shot, seed):
        return "found", recovered
    if recovered[2] < threshold:
        return "not found", recovered
    return "inconclusive", recovered


def _above(a: Tensor, b: Tensor, seed: int) -> bool:
    """``a`` beats ``b`` on the same queries: exact McNemar ``p < 0.05`` and a bootstrap interval above 0."""
    c = compare_paired(a.float(), b.float(), seed=seed)
    return c.p_value < 0.05 and c.ci_low > 0


@dataclasses.dataclass(frozen=True)
class VectorCheckResult(Result):
    """Per-task and pooled accuracies of zero-shot, ICL and the implanted vectors, with verdicts.

    Attributes:
        conditions: ``zero_shot``, ``icl`` (``n_shots`` of the task vector), ``task_vector``
            (zero-shot + task vector at its dev-chosen layer) and ``function_vector``
            (zero-shot + function vector at its dev-chosen layer).
        correct: per task, ``[conditions, test queries]`` top-1 correctness on the task's
            held-out test queries (the same queries in every condition).
        tv_layer, fv_layer: the layers the vectors went in at; ``tv_layer_accuracy``
            ``[tasks, layers]`` the task vector's test accuracy at every layer.
        fv_heads: the heads summed into each function vector.
    """

    title: ClassVar[str] = "Task and function vectors: found or not"

    config: Any
    model: str
    tasks: tuple[str, ...]
    conditions: tuple[str, ...]
    correct: tuple[Bool[Tensor, "conditions test"], ...]
    tv_layer: tuple[int, ...]
    tv_layer_accuracy: Float[Tensor, "tasks layers"]
    fv_layer: tuple[int, ...]
    fv_heads: tuple[tuple[tuple[int, int], ...], ...]

    def outcomes(self, condition: str, task: str | None = None) -> Tensor:
        """Per-query correctness of ``condition`` for one task, or pooled over all tasks."""
        c = self.conditions.index(condition)
        rows = [self.correct[self.tasks.index(task)]] if task is not None else list(self.correct)
        return torch.cat([r[c] for r in rows])

    def verdict(self, vector: str = "task_vector", task: str | None = None) -> str:
        """``"found"``, ``"not found"``, ``"inconclusive"`` or ``"no ICL"`` (pooled over tasks by default)."""
        return self._judge(vector, task)[0]

    def recovered(self, vector: str = "task_vector", task: str | None = None) -> tuple[float, float, float]:
        """Fraction of ICL accuracy the vector recovers, with its 95% bootstrap interval."""
        return self._judge(vector, task)[1]

    def lift(self, vector: str = "function_vector", task: str | None = None) -> Any:
        """The vector's gain over zero-shot on the same queries (a :class:`~icl_lens.core.stats.PairedComparison`)."""
        return compare_paired(
            self.outcomes(vector, task).float(),
            self.outcomes("zero_shot", task).float(),
            names=(f"zero-shot + {VECTORS[vector]}", "zero-shot"),
            seed=self.config.seed,
        )

    def _judge(self, vector: str, task: str | None) -> tuple[str, tuple[float, float, float]]:
        return vector_verdict(
            self.outcomes(vector, task),
            self.outcomes("zero_shot", task),
            self.outcomes("icl", task),
            self.config.threshold,
            self.config.seed,
        )

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for task in (*self.tasks, None):
            row: dict[str, Any] = dict(task=task if task is not None else "all tasks")
            for cond in self.conditions:
                x = self.outcomes(cond, task)
                low, high = proportion_interval(int(x.sum()), len(x))
                row.update({cond: float(x.float().mean()), f"{cond}_ci_low": low, f"{cond}_ci_high": high})
            for vec in (v for v in VECTORS if v in self.conditions):
                ratio, low, high = self.recovered(vec, task)
                lift = self.lift(vec, task)
                row.update(
                    {
                        f"{vec}_recovered": ratio,
                        f"{vec}_recovered_ci_low": low,
                        f"{vec}_recovered_ci_high": high,
                        f"{vec}_lift": lift.difference,
                        f"{vec}_lift_ci_low": lift.ci_low,
                        f"{vec}_lift_ci_high": lift.ci_high,
                        f"{vec}_lift_p": lift.p_value,
                        f"{vec}_verdict": self.verdict(vec, task),
                    }
                )
            row["n_test"] = len(self.outcomes("icl", task))
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        icl = self.outcomes("icl")
        parts = [f"{self.model}, {len(self.tasks)} tasks, {len(icl)} test queries: ICL {self._acc('icl')}"]
        for vec in (v for v in VECTORS if v in self.conditions):
            per_task = sum(self.verdict(vec, t) == "found" for t in self.tasks)
            ratio, low, high = self.recovered(vec)
            lift = self.lift(vec)
            parts.append(
                f"{VECTORS[vec]}s {self.verdict(vec).upper()} (zero-shot {self._acc('zero_shot')} -> {self._acc(vec)}, "
                f"lift {lift.difference:+.0%} [{lift.ci_low:+.0%}, {lift.ci_high:+.0%}]; recovers "
                f"{pct_ci(ratio, low, high)} of ICL; found in {per_task}/{len(self.tasks)} tasks)"
            )
        return "; ".join(parts)

    def _acc(self, condition: str) -> str:
        x = self.outcomes(condition)
        return pct_ci(float(x.float().mean()), *proportion_interval(int(x.sum()), len(x)))

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        width = 0.8 / len(self.conditions)
        colors = {"zero_shot": "#999999", "task_vector": "#1f77b4", "function_vector": "#ff7f0e", "icl": "#2ca02c"}
        for i, cond in enumerate(self.conditions):
            x = [j + (i - (len(self.conditions) - 1) / 2) * width for j in range(len(df))]
            acc = df[cond].to_numpy()
            err = [acc - df[f"{cond}_ci_low"].to_numpy(), df[f"{cond}_ci_high"].to_numpy() - acc]
            ax.bar(x, acc, width, yerr=err, capsize=2, color=colors.get(cond), label=cond.replace("_", " "))
        ax.set_xticks(range(len(df)), list(df["task"]), rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("top-1 accuracy, held-out queries (95% CI)")
        ax.set_title(f"{self.model}: task vector {self.verdict('task_vector')}")
        ax.legend(fontsize=7, ncol=len(self.conditions), loc="upper center")


@dataclasses.dataclass(frozen=True)
class EmergenceResult(Result):
    """ICL and task-vector accuracy over the checkpoints of a training run (pooled over tasks).

    ``correct[checkpoint, condition, query]`` (conditions ``zero_shot``, ``icl``,
    ``task_vector``; queries: every task's test queries, concatenated in the order of
    ``tasks``, ``n_test[t]`` of them for task ``t``).
    """

    title: ClassVar[str] = "When do ICL and task vectors appear?"

    config: Any
    model: str
    steps: tuple[int, ...]
    tasks: tuple[str, ...]
    conditions: tuple[str, ...]
    correct: Bool[Tensor, "checkpoints conditions queries"]
    n_test: tuple[int, ...]

    def accuracy(self, condition: str, task: str | None = None) -> Float[Tensor, " checkpoints"]:
        """Accuracy of ``condition`` at every checkpoint, pooled over tasks or for one task."""
        x = self.correct[:, self.conditions.index(condition)]
        if task is not None:
            start = sum(self.n_test[: self.tasks.index(task)])
            x = x[:, start : start + self.n_test[self.tasks.index(task)]]
        return x.float().mean(-1)

    def per_task_dataframe(self) -> Any:
        """ICL and task-vector accuracy of every task at every checkpoint (long format)."""
        import pandas as pd

        rows = [
            dict(step=step, task=task, **{c: float(self.accuracy(c, task)[i]) for c in self.conditions})
            for task in self.tasks
            for i, step in enumerate(self.steps)
        ]
        return pd.DataFrame(rows)

    def verdicts(self) -> list[str]:
        """The task-vector verdict at every checkpoint."""
        zs, icl, tv = (self.correct[:, self.conditions.index(c)] for c in ("zero_shot", "icl", "task_vector"))
        return [
            vector_verdict(tv[i], zs[i], icl[i], self.config.threshold, self.config.seed)[0]
            for i in range(len(self.steps))
        ]

    @property
    def icl_step(self) -> int | None:
        """The first checkpoint whose ICL accuracy is at least half-way from the first to the best checkpoint's."""
        acc = self.accuracy("icl")
        target = float(acc[0]) + 0.5 * (float(acc.max()) - float(acc[0]))
        if float(acc.max()) - float(acc[0]) < 0.1:
            return None
        return self.steps[int(torch.nonzero(acc >= target)[0])]

    @property
    def task_vector_step(self) -> int | None:
        """The first checkpoint where task vectors are found (and stay found at every later one)."""
        found = [v == "found" for v in self.verdicts()]
        for i in range(len(found)):
            if all(found[i:]):
                return self.steps[i]
        return None

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        verdicts = self.verdicts()
        for i, step in enumerate(self.steps):
            row: dict[str, Any] = dict(step=step)
            for cond in self.conditions:
                x = self.correct[i, self.conditions.index(cond)]
                low, high = proportion_interval(int(x.sum()), len(x))
                row.update({cond: float(x.float().mean()), f"{cond}_ci_low": low, f"{cond}_ci_high": high})
            row["task_vector_verdict"] = verdicts[i]
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        acc = self.accuracy("icl")
        return (
            f"{self.model}: ICL accuracy {float(acc[0]):.0%} -> {float(acc[-1]):.0%} over steps {self.steps[0]}-"
            f"{self.steps[-1]}; ICL rises past half-way at step {self.icl_step}; task vectors found from step "
            f"{self.task_vector_step} on ({len(self.tasks)} tasks, {self.correct.shape[-1]} test queries per checkpoint)"
        )

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        colors = {"zero_shot": "#999999", "icl": "#2ca02c", "task_vector": "#1f77b4"}
        labels = {"zero_shot": "zero-shot", "icl": "ICL", "task_vector": "zero-shot + task vector"}
        for cond in self.conditions:
            ax.plot(df["step"], df[cond], marker=".", color=colors.get(cond), label=labels.get(cond, cond))
            ax.fill_between(df["step"], df[f"{cond}_ci_low"], df[f"{cond}_ci_high"], color=colors.get(cond), alpha=0.15)
        if self.icl_step is not None:
            ax.axvline(self.icl_step, color="#2ca02c", ls=":", lw=1)
        if self.task_vector_step is not None:
            ax.axvline(self.task_vector_step, color="#1f77b4", ls="--", lw=1, label="task vectors found")
        ax.set_xlabel("training step")
        ax.set_ylabel("top-1 accuracy, held-out queries (95% CI)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Emergence: {self.model}")
        ax.legend(fontsize=8)
