"""The result of the universal function-vector heads of one model (see universal.py)."""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import accuracy_ci
from icl_lens.studies.tables import pct_with_interval, with_intervals
from icl_lens.studies.universal import heads_label

ACCURACIES = ("icl", "zero_shot", "zs_fv", "zs_universal", "shuffled", "shuffled_fv", "shuffled_universal")


@dataclasses.dataclass(frozen=True)
class UniversalFvResult(Result):
    """Todd et al.'s universal function-vector heads of one model, and their vector on every task.

    Attributes:
        model, seed: which units it was computed from.
        margin: ICL minus zero-shot accuracy a task needed to count.
        tasks: every task; ``used`` whether it counted.
        aie: each task's AIE ``[tasks, n_layers, n_heads]`` (the per-task heatmap).
        mean_aie: AIE averaged over the used tasks ``[n_layers, n_heads]``.
        heads: the universal heads, best first.
        accuracy: per task, top-1 accuracy on the implant's test queries for each of
            ``ACCURACIES`` (``*_universal``: with the vector rebuilt from the universal
            heads; NaN until stage 2 has run) ``[tasks, len(ACCURACIES)]``.
        n_test: test queries per task.
    """

    title: ClassVar[str] = "Universal function-vector heads"

    model: str
    seed: int
    margin: float
    tasks: tuple[str, ...]
    used: tuple[bool, ...]
    aie: Float[Tensor, "tasks n_layers n_heads"]
    mean_aie: Float[Tensor, "n_layers n_heads"]
    heads: tuple[tuple[int, int], ...]
    accuracy: Float[Tensor, "tasks conditions"]
    n_test: tuple[int, ...]

    def acc(self, task: str, condition: str) -> float:
        return float(self.accuracy[self.tasks.index(task), ACCURACIES.index(condition)])

    def to_dataframe(self) -> Any:
        """One row per task: whether it counted, accuracies with 95% Wilson intervals."""
        import pandas as pd

        rows = []
        for i, t in enumerate(self.tasks):
            row: dict[str, Any] = dict(
                model=self.model, seed=self.seed, task=t, used=self.used[i], n_test=self.n_test[i]
            )
            row.update({c: float(self.accuracy[i, j]) for j, c in enumerate(ACCURACIES)})
            rows.append(with_intervals(row, ACCURACIES, "n_test"))
        return pd.DataFrame(rows)

    def heads_dataframe(self) -> Any:
        """Every head by its mean AIE over the used tasks, with its AIE on each task."""
        import pandas as pd

        rows = []
        L, H = self.mean_aie.shape
        for l in range(L):
            for h in range(H):
                row: dict[str, Any] = dict(layer=l, head=h, mean_aie=float(self.mean_aie[l, h]))
                row["universal"] = (l, h) in self.heads
                row.update({t: float(self.aie[i, l, h]) for i, t in enumerate(self.tasks)})
                rows.append(row)
        return pd.DataFrame(rows).sort_values("mean_aie", ascending=False, kind="stable").reset_index(drop=True)

    def to_markdown(self) -> str:
        df = self.to_dataframe()
        cols = [
            c
            for c in ("icl", "zero_shot", "zs_fv", "zs_universal", "shuffled", "shuffled_universal")
            if df[c].notna().any()
        ]
        lines = ["| task | counted | " + " | ".join(cols) + " |", "|---|:-:|" + "--:|" * len(cols)]
        for r in df.to_dict("records"):
            cells = [r["task"], "\u2713" if r["used"] else ""] + [pct_with_interval(r, c) for c in cols]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def summary(self) -> str:
        df = self.to_dataframe()
        used = df[df.used]
        text = (
            f"{self.model}: universal heads {heads_label(self.heads, 10)} (mean AIE over {len(used)} of "
            f"{len(self.tasks)} tasks where ICL beats zero-shot by {self.margin:.0%})"
        )
        if used.zs_universal.notna().any():
            n = int(used.n_test.sum())

            def pooled(c: str) -> str:  # every test query of those tasks counted once
                return accuracy_ci(float((used[c] * used.n_test).sum()) / n, n)

            text += (
                f"; pooled over their {n} test queries, zero-shot + universal FV {pooled('zs_universal')} vs own FV "
                f"{pooled('zs_fv')}, zero-shot {pooled('zero_shot')}, ICL {pooled('icl')}"
            )
        return text

    def _plot(self, ax: Any) -> None:
        data = self.mean_aie.float().numpy()
        lim = max(abs(float(data.min())), abs(float(data.max())), 1e-9)
        im = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
        ax.figure.colorbar(im, ax=ax, label="mean AIE over the used tasks")
        for l, h in self.heads:
            ax.scatter([h], [l], marker="s", s=40, facecolors="none", edgecolors="black", linewidths=1.2)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"Universal FV heads: {self.model} (boxes: top {len(self.heads)})")

    def plot_tasks(self, ax: Any = None, n_heads: int = 20) -> Any:
        """The per-task heatmap: AIE of the best ``n_heads`` heads (by mean AIE) on each task."""
        top = self.heads_dataframe().head(n_heads)
        data = torch.stack([self.aie[:, int(l), int(h)] for l, h in zip(top.layer, top.head)], dim=1)

        def draw(ax: Any) -> None:
            lim = max(float(data.abs().max()), 1e-9)
            im = ax.imshow(data.numpy(), aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.figure.colorbar(im, ax=ax, label="AIE")
            ax.set_xticks(range(len(top)), [f"L{l}H{h}" for l, h in zip(top.layer, top.head)], rotation=90, fontsize=7)
            ax.set_yticks(
                range(len(self.tasks)),
                [t + ("" if u else " (not used)") for t, u in zip(self.tasks, self.used)],
                fontsize=7,
            )
            ax.set_title(f"AIE per task of the top {len(top)} heads ({self.model})")

        return self._draw(draw, ax, (max(6.0, 0.3 * len(top) + 3), max(3.0, 0.3 * len(self.tasks) + 1.5)))

    def plot_accuracy(self, ax: Any = None) -> Any:
        """Per task: zero-shot, + own FV, + universal FV and ICL, with 95% intervals."""
        df = self.to_dataframe()

        def draw(ax: Any) -> None:
            x = range(len(df))
            conds = (
                ("zero_shot", "zero-shot"),
                ("zs_fv", "+ own FV"),
                ("zs_universal", "+ universal FV"),
                ("icl", "ICL"),
            )
            for k, (c, name) in enumerate(conds):
                vals = df[c].fillna(0)
                err = [(df[c] - df[f"{c}_ci_low"]).fillna(0), (df[f"{c}_ci_high"] - df[c]).fillna(0)]
                ax.bar([i + 0.2 * (k - 1.5) for i in x], vals, width=0.2, yerr=err, capsize=2, label=name)
            ax.set_xticks(list(x), list(df.task), rotation=60, ha="right", fontsize=7)
            ax.set_ylabel("top-1 accuracy (95% CI)")
            ax.set_ylim(0, 1.05)
            ax.legend(fontsize="small")

        return self._draw(draw, ax, (max(6.4, 0.5 * len(df) + 2), 4.0))

    @staticmethod
    def _draw(draw: Any, ax: Any, size: tuple[float, float]) -> Any:
        from icl_lens.core.plotting import pyplot

        if ax is None:
            fig, ax = pyplot().subplots(figsize=size)
        else:
            fig = ax.figure
        draw(ax)
        fig.tight_layout()
        return fig


__all__ = ["ACCURACIES", "UniversalFvResult"]
