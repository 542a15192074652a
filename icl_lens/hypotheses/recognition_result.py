"""The result of :func:`icl_lens.hypotheses.recognition.recognition_vs_learning`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.options import check_choice, choices
from icl_lens.core.results import Result
from icl_lens.core.stats import above_chance, accuracy_ci, compare_paired, format_p, verdict
from icl_lens.prompting.evaluation_result import plot_shot_curves, shot_table

if TYPE_CHECKING:
    from icl_lens.hypotheses.recognition import RecognitionConfig

Setting = Literal["gold", "random", "abstract"]
"""Which labels the demonstrations show: the true ones, random ones (task recognition),
or abstract stand-ins (task learning)."""

SETTINGS: tuple[Setting, ...] = choices(Setting)

_STYLES = {
    "gold": ("gold labels", dict(color="tab:blue", marker="o")),
    "random": ("random labels (recognition)", dict(color="tab:orange", marker="s")),
    "abstract": ("abstract labels (learning)", dict(color="tab:green", marker="^")),
}


@dataclasses.dataclass(frozen=True)
class RecognitionResult(Result):
    """Accuracy by shot count with gold, random and abstract labels.

    ``correct[s, k, i]``: prompt ``i`` in setting ``settings[s]`` with ``shots[k]``
    demonstrations was answered correctly (label-restricted first-token top-1).
    ``label_map`` maps each real label to its abstract stand-in.
    """

    title = "Task recognition vs task learning"

    model: str
    task: str
    labels: tuple[str, ...]
    label_map: dict[str, str]
    settings: tuple[str, ...]
    shots: tuple[int, ...]
    accuracy: Float[Tensor, "settings shots"]
    correct: Bool[Tensor, "settings shots prompts"]
    chance: float
    config: RecognitionConfig

    def accuracy_of(self, setting: Setting) -> list[float]:
        """Accuracy by shot count in one setting (``"gold"``, ``"random"``, ``"abstract"``)."""
        return self.accuracy[self.settings.index(check_choice(setting, Setting, "setting"))].tolist()

    def to_dataframe(self) -> Any:
        """One row per setting and shot count: accuracy with its 95% Wilson interval, chance,
        and the exact one-sided binomial p-value of accuracy above chance."""
        df = shot_table("setting", self.settings, self.shots, self.correct, chance=self.chance)
        n = int(self.correct.shape[-1])
        df["p_above_chance"] = [above_chance(round(a * n), n, self.chance) for a in df["accuracy"]]
        return df

    def comparison(self, a: Setting, b: Setting, shots: int | None = None) -> Any:
        """Setting ``a`` against ``b`` on the same queries at ``shots`` (default: the most), exact McNemar."""
        k = self.shots.index(shots) if shots is not None else len(self.shots) - 1
        i, j = (self.settings.index(check_choice(x, Setting, "setting")) for x in (a, b))
        return compare_paired(self.correct[i, k], self.correct[j, k], names=(a, b), seed=self.config.seed)

    def comparisons(self) -> Any:
        """Every pair of settings at every shot count (same queries): McNemar p, interval on the difference."""
        import pandas as pd

        rows = []
        for k in self.shots:
            for a, b in (("random", "gold"), ("abstract", "gold"), ("abstract", "random")):
                rows.append({"shots": k, **self.comparison(a, b, k).as_row()})  # type: ignore[arg-type]
        return pd.DataFrame(rows)

    def summary(self) -> str:
        k, n = self.shots[-1], int(self.correct.shape[-1])
        parts = ", ".join(f"{s} {accuracy_ci(float(self.accuracy[i, -1]), n)}" for i, s in enumerate(self.settings))
        mapping = verdict(self.comparison("random", "gold"), subject="random instead of gold labels", what="accuracy")
        a = float(self.accuracy[self.settings.index("abstract"), -1])
        p = above_chance(round(a * n), n, self.chance)
        learned = (
            f"abstract labels beat chance (binomial {format_p(p)}): the mapping is learned in context"
            if p < 0.05
            else f"abstract labels: not above chance with n = {n} (binomial {format_p(p)})"
        )
        return f"{self.model} on {self.task}, {k} shots: {parts} (chance {self.chance:.0%}); {mapping}; {learned}"

    def _plot(self, ax: Any) -> None:
        curves = []
        for s, setting in enumerate(self.settings):
            label, style = _STYLES.get(setting, (setting, {}))
            curves.append((label, self.correct[s], style))
        plot_shot_curves(
            ax,
            self.shots,
            curves,
            ylabel="label-restricted accuracy",
            title=f"Recognition vs learning: {self.task} ({self.model})",
        )
        ax.axhline(self.chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({self.chance:.0%})")
        ax.legend(fontsize="small")
