"""The result of :func:`icl_lens.hypotheses.recognition.recognition_vs_learning`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Literal

from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.options import check_choice, choices
from icl_lens.core.results import Result
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
        return shot_table("setting", self.settings, self.shots, self.correct, chance=self.chance)

    def summary(self) -> str:
        k = self.shots[-1]
        parts = ", ".join(f"{s} {float(self.accuracy[i, -1]):.0%}" for i, s in enumerate(self.settings))
        return f"{self.model} on {self.task}, {k} shots: {parts} (chance {self.chance:.0%})"

    def _plot(self, ax: Any) -> None:
        curves = []
        for s, setting in enumerate(self.settings):
            label, style = _STYLES.get(setting, (setting, {}))
            curves.append((label, self.accuracy[s].tolist(), style))
        plot_shot_curves(
            ax,
            self.shots,
            curves,
            ylabel="label-restricted accuracy",
            title=f"Recognition vs learning: {self.task} ({self.model})",
        )
        ax.axhline(self.chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({self.chance:.0%})")
        ax.legend(fontsize="small")
