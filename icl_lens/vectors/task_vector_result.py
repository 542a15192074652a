"""The result of :func:`icl_lens.vectors.task_vectors.task_vector`: a vector per layer and accuracy by layer."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import (
    PairedComparison,
    accuracy_ci,
    accuracy_interval,
    compare_paired,
    format_p,
    rate_interval,
    ratio_interval,
    recovery_text,
)
from icl_lens.vectors.common import FromOrigin, VectorOrigin

if TYPE_CHECKING:
    from icl_lens.vectors.task_vectors import TaskVectorConfig


@dataclasses.dataclass(frozen=True)
class TaskVectorResult(FromOrigin, Result):
    """Task vectors at every layer, and how well each one does on zero-shot queries.

    Attributes:
        vectors: θ_L for every layer ``[n_layers, d_model]`` (rows of unswept layers are
            still the extracted vectors); on a cross-validated task, the mean of the folds' θ.
        layers: the layers tried.
        dev_accuracy: zero-shot dev accuracy with θ_L patched in, per tried layer (pooled
            over the folds' dev parts when cross-validated).
        test_correct: per tried layer and test query, whether the patched run is right.
        best_layer: the layer with the highest dev accuracy (ties: the earliest); when
            cross-validated, the layer most folds chose (``fold_layers``: each fold's).
        correct: per test query, the task vector at its fold's dev-chosen layer: the
            accuracy this result reports (:attr:`accuracy`).
        zero_shot_correct, icl_correct: the same test queries without any vector and with
            ``n_shots`` demonstrations from the (fold's) train part.
        queries: the test queries, in the order of every per-query tensor.
        ceiling_correct: per tried layer and test query, whether the query's *own* ICL
            state patched in is right (see ``TaskVectorConfig.ceiling``; ``None`` if not
            run). Where even this stays near zero, the model has not yet moved the task
            into the last token at that layer: later layers still read the demonstrations
            themselves, and no vector put in there can stand in for them.
        folds: each fold's own result when cross-validated (empty for a held-out split).

    Accuracies carry 95% Wilson intervals (``to_dataframe()``'s ``ci_low``/``ci_high``);
    :meth:`comparisons` tests the task vector against zero-shot and ICL (exact McNemar on
    the same queries) and :meth:`recovery` gives TV / ICL with a bootstrap interval.
    """

    title = "Task vector"

    origin: VectorOrigin
    config: TaskVectorConfig
    vectors: Float[Tensor, "n_layers d_model"]
    layers: tuple[int, ...]
    dev_accuracy: Float[Tensor, " layers"]
    test_correct: Bool[Tensor, "layers test"]
    best_layer: int
    fold_layers: tuple[int, ...]
    correct: Bool[Tensor, " test"]
    zero_shot_correct: Bool[Tensor, " test"]
    icl_correct: Bool[Tensor, " test"]
    queries: tuple[str, ...]
    n_dev: int
    hook: str = "resid_post"
    ceiling_correct: Bool[Tensor, "layers test"] | None = None
    folds: tuple[TaskVectorResult, ...] = ()

    kind = "task"

    # -- numbers ---------------------------------------------------------------------
    @property
    def layer(self) -> int:
        """The layer whose vector is used by default (best on dev)."""
        return self.best_layer

    @property
    def vector(self) -> Float[Tensor, " d_model"]:
        """θ at the best layer."""
        return self.vectors[self.best_layer]

    @property
    def n_test(self) -> int:
        return int(self.correct.shape[0])

    @property
    def test_accuracy(self) -> Float[Tensor, " layers"]:
        """Zero-shot test accuracy with θ_L patched in, per tried layer."""
        return self.test_correct.float().mean(-1)

    @property
    def ceiling_accuracy(self) -> Float[Tensor, " layers"] | None:
        return None if self.ceiling_correct is None else self.ceiling_correct.float().mean(-1)

    @property
    def accuracy(self) -> float:
        """Test accuracy of the task vector at the dev-chosen layer (each fold's own choice)."""
        return float(self.correct.float().mean())

    @property
    def test_accuracy_at_best(self) -> float:
        return self.accuracy

    @property
    def zero_shot_accuracy(self) -> float:
        return float(self.zero_shot_correct.float().mean())

    @property
    def icl_accuracy(self) -> float:
        return float(self.icl_correct.float().mean())

    @property
    def recovered(self) -> float:
        """Test accuracy with the task vector as a fraction of ICL accuracy."""
        return self.accuracy / self.icl_accuracy if self.icl_accuracy > 0 else float("nan")

    def recovery(self) -> tuple[float, float, float]:
        """``(TV / ICL, ci_low, ci_high)``: a paired bootstrap interval over the test queries."""
        return ratio_interval(self.correct.float(), self.icl_correct.float(), seed=self.config.seed)

    @functools.cached_property
    def _comparisons(self) -> tuple[PairedComparison, PairedComparison]:
        seed = self.config.seed
        return (
            compare_paired(self.correct, self.zero_shot_correct, names=("task vector", "zero-shot"), seed=seed),
            compare_paired(self.correct, self.icl_correct, names=("task vector", "ICL"), seed=seed),
        )

    @property
    def vs_zero_shot(self) -> PairedComparison:
        """The task vector against zero-shot on the same test queries (exact McNemar)."""
        return self._comparisons[0]

    @property
    def vs_icl(self) -> PairedComparison:
        """The task vector against ICL on the same test queries (exact McNemar)."""
        return self._comparisons[1]

    def comparisons(self) -> Any:
        """Task vector vs zero-shot and vs ICL on the same test queries (exact McNemar, bootstrap interval)."""
        import pandas as pd

        return pd.DataFrame([c.as_row() for c in self._comparisons])

    # -- tables and words --------------------------------------------------------------
    def to_dataframe(self) -> Any:
        """One row per tried layer: dev and test accuracy (test with its 95% Wilson interval), the ceiling."""
        import pandas as pd

        low, high = accuracy_interval(self.test_correct)
        dev = [rate_interval(float(a), self.n_dev) for a in self.dev_accuracy]
        cols: dict[str, Any] = dict(
            layer=list(self.layers),
            dev_accuracy=self.dev_accuracy.tolist(),
            dev_ci_low=[d[0] for d in dev],
            dev_ci_high=[d[1] for d in dev],
            test_accuracy=self.test_accuracy.tolist(),
            ci_low=low.tolist(),
            ci_high=high.tolist(),
            n_test=[self.n_test] * len(self.layers),
        )
        if self.ceiling_correct is not None:
            c_low, c_high = accuracy_interval(self.ceiling_correct)
            cols["ceiling_accuracy"] = self.ceiling_correct.float().mean(-1).tolist()
            cols["ceiling_ci_low"], cols["ceiling_ci_high"] = c_low.tolist(), c_high.tolist()
        cols["best"] = [l == self.best_layer for l in self.layers]
        if len(self.fold_layers) > 1:
            cols["chosen_by_folds"] = [self.fold_layers.count(l) for l in self.layers]
        return pd.DataFrame(cols)

    def verdict(self) -> str:
        """What the test queries can tell about this task vector, in one clause."""
        vs_zs, vs_icl = self._comparisons
        tv, icl, zs = (accuracy_ci(a, self.n_test) for a in (self.accuracy, self.icl_accuracy, self.zero_shot_accuracy))
        where = f"best layer {self.best_layer}"
        if len(self.fold_layers) > 1:
            where += f" (chosen on dev in each fold: {', '.join(map(str, self.fold_layers))})"
        elif float(self.dev_accuracy.max()) == 0:
            where += " (no layer scored above 0% on dev: the choice is arbitrary)"
        if not (vs_zs.significant and vs_zs.difference > 0):
            return (
                f"no task vector found: {where}, {tv} vs ICL {icl} and zero-shot {zs} "
                f"(vs zero-shot: McNemar {format_p(vs_zs.p_value)})"
            )
        ratio = recovery_text(self.recovery(), "ICL")
        if vs_icl.significant and vs_icl.difference < 0:
            return (
                f"a partial task vector: {where} raises zero-shot {zs} to {tv} (McNemar {format_p(vs_zs.p_value)}), "
                f"below ICL {icl} (McNemar {format_p(vs_icl.p_value)}); {ratio}"
            )
        return (
            f"a task vector: {where}, {tv} vs zero-shot {zs} (McNemar {format_p(vs_zs.p_value)}) and ICL {icl}, "
            f"which these queries cannot tell apart from it (McNemar {format_p(vs_icl.p_value)}); {ratio}"
        )

    def summary(self) -> str:
        cv = (
            f", {self.origin.cv_folds}-fold cross-validated (every pair a test query once)"
            if self.origin.cross_validated and self.origin.fold is None
            else ""
        )
        text = f"{self.origin.model} / {self.origin.task}: {self.verdict()}; {self.n_test} test queries{cv}"
        ceiling = self.ceiling_accuracy
        if ceiling is not None:
            i = int(torch.argmax(ceiling))
            text += (
                f"; each query's own ICL state, patched in, reaches {accuracy_ci(float(ceiling[i]), self.n_test)} "
                f"at best (layer {self.layers[i]})"
            )
        return text

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        ax.plot(self.layers, df.test_accuracy, marker="o", label="test: zero-shot + task vector")
        ax.fill_between(self.layers, df.ci_low, df.ci_high, alpha=0.2, color="C0", lw=0)
        ax.plot(self.layers, df.dev_accuracy, marker=".", ls=":", label="dev (chooses the layer)")
        if self.ceiling_correct is not None:
            ax.plot(self.layers, df.ceiling_accuracy, marker="s", ms=3, color="purple",
                    label="test: each query's own ICL state (ceiling)")  # fmt: skip
            ax.fill_between(self.layers, df.ceiling_ci_low, df.ceiling_ci_high, alpha=0.12, color="purple", lw=0)
        for value, color, label in (
            (self.icl_accuracy, "green", f"ICL ({self.origin.n_shots} shots)"),
            (self.zero_shot_accuracy, "grey", "zero-shot"),
        ):
            ax.axhline(value, color=color, ls="--", label=label)
            ax.axhspan(*rate_interval(value, self.n_test), color=color, alpha=0.1, lw=0)
        ax.axvline(self.best_layer, color="black", lw=0.8)
        ax.set_xlabel("layer L (residual stream after block L replaced)")
        ax.set_ylabel(f"top-1 accuracy (95% CI, {self.n_test} test queries)")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"Task vector by layer: {self.origin.task} ({self.origin.model})")
        ax.legend(fontsize="small")
