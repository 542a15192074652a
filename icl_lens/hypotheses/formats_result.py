"""The result of :func:`icl_lens.hypotheses.formats.format_sensitivity`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

from jaxtyping import Bool
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import PairedComparison, compare_paired, pct_ci, verdict
from icl_lens.hypotheses.selection_result import rate_with_interval

if TYPE_CHECKING:
    from icl_lens.hypotheses.formats import FormatConfig

FACTOR_COLORS = {"template": "C0", "labels": "C1", "inputs": "C3"}


@dataclasses.dataclass(frozen=True)
class FormatSensitivityResult(Result):
    """ICL accuracy per condition, the same queries and demonstrations throughout.

    ``conditions[c]`` is ``(factor, level)``; condition 0 is the base (first template,
    label words, inputs from the task). ``correct[c, i]``: query ``i`` answered right
    (first-token top-1) in condition ``c``; ``label_correct`` the same restricted to the
    condition's label set; ``vote_agrees`` / ``vote_correct`` the kernel head's vote
    against the model's label-restricted answer / the gold label (label tasks only).
    ``label_maps`` gives each label form's stand-ins.
    """

    title: ClassVar[str] = "Format and label sensitivity"

    config: FormatConfig
    model: str
    task: str
    labels: tuple[str, ...] | None
    kernel_head: tuple[int, int] | None
    conditions: tuple[tuple[str, str], ...]
    templates: tuple[str, ...]
    label_maps: dict[str, dict[str, str]]
    ood_task: str
    correct: Bool[Tensor, "conditions prompts"]
    label_correct: Bool[Tensor, "conditions prompts"] | None
    vote_agrees: Bool[Tensor, "conditions prompts"] | None
    vote_correct: Bool[Tensor, "conditions prompts"] | None

    @property
    def accuracy(self) -> Tensor:
        return self.correct.float().mean(-1)

    def _outcomes(self) -> Tensor:
        """What conditions are compared on: label-restricted accuracy on a label task, else top-1."""
        return self.label_correct if self.label_correct is not None else self.correct

    def comparison(self, condition: int) -> PairedComparison:
        """Condition ``condition`` against the base on the same queries (exact McNemar),
        on label-restricted accuracy for a label task (fair across label forms), else top-1."""
        outcomes = self._outcomes().float()
        names = (" ".join(self.conditions[condition]), " ".join(self.conditions[0]))
        return compare_paired(outcomes[condition], outcomes[0], names=names, seed=self.config.seed)

    def to_dataframe(self) -> Any:
        """The one table: a row per condition with accuracies, intervals, the paired test
        against the base condition and the kernel head's agreement with the model."""
        import pandas as pd

        rows = []
        for c, (factor, level) in enumerate(self.conditions):
            acc, low, high = rate_with_interval(self.correct[c])
            row: dict[str, Any] = dict(factor=factor, level=level, accuracy=acc, ci_low=low, ci_high=high)
            if self.label_correct is not None:
                la, ll, lh = rate_with_interval(self.label_correct[c])
                row.update(label_accuracy=la, label_ci_low=ll, label_ci_high=lh)
            d = self.comparison(c)
            row.update(vs_base=d.difference, vs_base_ci_low=d.ci_low, vs_base_ci_high=d.ci_high, p_value=d.p_value)
            for name, outcomes in (("vote_agreement", self.vote_agrees), ("vote_accuracy", self.vote_correct)):
                if outcomes is not None:
                    rate, lo, hi = rate_with_interval(outcomes[c])
                    row.update({name: rate, f"{name}_ci_low": lo, f"{name}_ci_high": hi})
            row["n_prompts"] = int(self.correct.shape[-1])
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        measure = "label-restricted accuracy" if self.label_correct is not None else "top-1 accuracy"
        base = pct_ci(*rate_with_interval(self._outcomes()[0]))
        changed = [
            verdict(self.comparison(c), rise="raises", fall="lowers")
            for c in range(1, len(self.conditions))
            if self.comparison(c).significant
        ]
        steady = len(self.conditions) - 1 - len(changed)
        tail = "; ".join(changed) if changed else "no condition differs from the base with 95% confidence"
        return (
            f"{self.model} on {self.task}, {self.config.n_shots} shots, {measure} in the base condition "
            f"({' '.join(self.conditions[0])}) {base}; {tail} ({steady} other condition(s) inconclusive)"
        )

    def _plot(self, ax: Any) -> None:
        outcomes = self._outcomes()
        names = [f"{f}: {level}" for f, level in self.conditions]
        stats = [rate_with_interval(outcomes[c]) for c in range(len(names))]
        ys = list(range(len(names)))[::-1]
        for y, (factor, _), (value, low, high) in zip(ys, self.conditions, stats, strict=True):
            ax.barh(y, value, xerr=[[value - low], [high - value]], color=FACTOR_COLORS.get(factor, "C0"), capsize=3)
        if self.vote_agrees is not None:
            agree = [rate_with_interval(self.vote_agrees[c])[0] for c in range(len(names))]
            ax.plot(agree, ys, "kD", ms=4, label=f"kernel head L{self.kernel_head[0]}H{self.kernel_head[1]} agrees")
            ax.legend(fontsize="small", loc="lower right")
        ax.set_yticks(ys, names, fontsize="small")
        ax.set_xlim(0, 1.02)
        measure = "label-restricted" if self.label_correct is not None else "top-1"
        ax.set_xlabel(f"{measure} accuracy (95% CI)")
        ax.set_title(f"Format sensitivity: {self.task} ({self.model}), {self.config.n_shots} shots", fontsize="medium")
