"""The result of :func:`icl_lens.induction.token_losses.induction_token_losses`."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float, Int
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import PairedComparison, format_p, mean_interval
from icl_lens.induction.token_classes import CLASS_COLORS, TOKEN_CLASSES, class_counts, class_means, paired_over_units

if TYPE_CHECKING:
    from icl_lens.induction.token_losses import InductionTokenConfig


def comparison_row(c: PairedComparison, **extra: Any) -> dict[str, Any]:
    row = dict(extra)
    row.update(c.as_row())
    return row


@dataclasses.dataclass(frozen=True)
class InductionTokenLossResult(Result):
    """Per-token losses on natural text, each token classed by induction (see the module
    :mod:`icl_lens.induction.token_classes`).

    ``classes[c, p]`` codes token ``p`` of context ``c`` (0 reference, 1 consistent, 2
    inconsistent, -1 position 0). ``loss`` is without ablation, ``ablated_loss`` with the
    heads in ``heads`` ablated, ``random_loss[d]`` with the random set ``random_heads[d]``
    (both ``None`` when ``config.k == 0``).
    """

    title: ClassVar[str] = "Induction-consistent vs inconsistent tokens"

    config: InductionTokenConfig
    model_name: str
    tokens: Int[Tensor, "context pos"]
    classes: Int[Tensor, "context pos"]
    loss: Float[Tensor, "context pos"]
    heads: tuple[tuple[int, int], ...]
    random_heads: tuple[tuple[tuple[int, int], ...], ...]
    ablated_loss: Float[Tensor, "context pos"] | None
    random_loss: Float[Tensor, "draw context pos"] | None

    # -- numbers ----------------------------------------------------------------------
    @property
    def has_ablation(self) -> bool:
        return self.ablated_loss is not None and self.random_loss is not None

    def _conditions(self) -> dict[str, Tensor]:
        """Per-context class means ``[context, class]`` for each condition."""
        out = {"baseline": class_means(self.loss, self.classes)}
        if self.has_ablation:
            assert self.ablated_loss is not None and self.random_loss is not None
            out[f"top-{len(self.heads)} induction ablated"] = class_means(self.ablated_loss, self.classes)
            draws = torch.stack([class_means(r, self.classes) for r in self.random_loss])
            out[f"{len(self.heads)} random ablated"] = draws.mean(0)
        return out

    def counts(self) -> Any:
        """Tokens in each class, with the share of all classified tokens and its Wilson interval."""
        return class_counts(self.classes)

    def class_table(self) -> Any:
        """Mean loss of each class under each condition: the mean over contexts of each
        context's class mean, with a bootstrap interval over contexts."""
        import pandas as pd

        counts = self.counts().set_index("token_class")
        rows = []
        for condition, means in self._conditions().items():
            for code, name in enumerate(TOKEN_CLASSES):
                values = means[:, code]
                values = values[values.isfinite()]
                mean, low, high = mean_interval(values, seed=self.config.seed)
                rows.append(
                    dict(
                        condition=condition,
                        token_class=name,
                        loss=mean,
                        ci_low=low,
                        ci_high=high,
                        n_contexts=int(values.numel()),
                        n_tokens=int(counts.loc[name, "n_tokens"]),
                    )
                )
        return pd.DataFrame(rows)

    def differences(self) -> Any:
        """Class against class without ablation, paired by context (permutation test, bootstrap interval)."""
        import pandas as pd

        means = self._conditions()["baseline"]
        names = TOKEN_CLASSES
        pairs = [("consistent", "reference"), ("inconsistent", "consistent"), ("inconsistent", "reference")]
        rows = []
        for a, b in pairs:
            c = paired_over_units(means[:, names.index(a)], means[:, names.index(b)], (a, b), self.config.seed)
            rows.append(comparison_row(c, measure="loss difference (nats)"))
        return pd.DataFrame(rows)

    def ablation_comparisons(self) -> dict[str, PairedComparison]:
        """Per class: change in loss with the top-``k`` induction heads ablated against the
        change with ``k`` random heads (mean over draws), paired by context."""
        if not self.has_ablation:
            return {}
        conditions = list(self._conditions().values())
        base, top, rand = conditions
        out = {}
        for code, name in enumerate(TOKEN_CLASSES):
            delta_top, delta_random = top[:, code] - base[:, code], rand[:, code] - base[:, code]
            out[name] = paired_over_units(
                delta_top,
                delta_random,
                (f"top-{len(self.heads)} induction", f"{len(self.heads)} random"),
                self.config.seed,
            )
        return out

    def ablation_table(self) -> Any:
        """Per class: loss change from ablating the top-``k`` heads, from ``k`` random
        heads, and the paired difference of the two with its interval and test."""
        import pandas as pd

        rows = []
        conditions = list(self._conditions().values())
        for code, (name, c) in enumerate(self.ablation_comparisons().items()):
            base, top, rand = (m[:, code] for m in conditions)
            d_top = mean_interval((top - base)[(top - base).isfinite()], seed=self.config.seed)
            d_rand = mean_interval((rand - base)[(rand - base).isfinite()], seed=self.config.seed)
            rows.append(
                dict(
                    token_class=name,
                    delta_top_k=d_top[0],
                    delta_top_k_ci_low=d_top[1],
                    delta_top_k_ci_high=d_top[2],
                    delta_random=d_rand[0],
                    delta_random_ci_low=d_rand[1],
                    delta_random_ci_high=d_rand[2],
                    difference=c.difference,
                    ci_low=c.ci_low,
                    ci_high=c.ci_high,
                    p_value=c.p_value,
                    test=c.test,
                    n_contexts=c.n,
                )
            )
        return pd.DataFrame(rows)

    def by_position(self) -> Any:
        """Token-weighted mean loss of each class in log-spaced position bins, per condition."""
        import pandas as pd

        from icl_lens.induction.icl_scoring import bin_centres, log_position_bins

        bins = log_position_bins(self.loss.shape[1], self.config.n_bins)
        centres = bin_centres(bins)
        losses = {"baseline": self.loss}
        if self.has_ablation:
            assert self.ablated_loss is not None and self.random_loss is not None
            losses[f"top-{len(self.heads)} induction ablated"] = self.ablated_loss
            losses[f"{len(self.heads)} random ablated"] = self.random_loss.mean(0)
        rows = []
        for condition, loss in losses.items():
            for code, name in enumerate(TOKEN_CLASSES):
                for (a, b), centre in zip(bins, centres.tolist(), strict=True):
                    mask = self.classes[:, a:b] == code
                    n = int(mask.sum())
                    value = float(loss[:, a:b][mask].mean()) if n else float("nan")
                    rows.append(
                        dict(
                            condition=condition,
                            token_class=name,
                            start=a,
                            stop=b,
                            position=centre,
                            loss=value,
                            n_tokens=n,
                        )
                    )
        return pd.DataFrame(rows)

    def to_dataframe(self) -> Any:
        return self.class_table()

    def summary(self) -> str:
        table = self.class_table()
        base = table[table.condition == "baseline"].set_index("token_class")
        parts = [
            f"{n} {base.loc[n, 'loss']:.2f} [{base.loc[n, 'ci_low']:.2f}, {base.loc[n, 'ci_high']:.2f}]"
            for n in TOKEN_CLASSES
        ]
        text = f"{self.model_name}, {self.loss.shape[0]} contexts: loss (nats) " + ", ".join(parts)
        comparisons = self.ablation_comparisons()
        if comparisons:
            c = comparisons["consistent"]
            text += (
                f"; ablating the top-{len(self.heads)} induction heads changes consistent-token loss by "
                f"{c.mean_a:+.2f} vs {c.mean_b:+.2f} for {len(self.heads)} random heads "
                f"(difference {c.difference:+.2f}, 95% CI {c.ci_low:+.2f} to {c.ci_high:+.2f}, {format_p(c.p_value)})"
            )
        return text

    # -- pictures ---------------------------------------------------------------------
    def _plot(self, ax: Any) -> None:
        df = self.by_position()
        styles = {"baseline": "-", **{c: "--" for c in df.condition.unique() if "induction" in c}}
        styles.update({c: ":" for c in df.condition.unique() if "random" in c})
        for (condition, name), part in df.groupby(["condition", "token_class"], sort=False):
            ax.plot(
                part.position,
                part.loss,
                styles[condition],
                marker="o" if condition == "baseline" else None,
                ms=3,
                color=CLASS_COLORS[name],
                label=f"{name}" if condition == "baseline" else f"{name}, {condition}",
            )
        ax.set_xscale("log")
        ax.set_xlabel("token position in context")
        ax.set_ylabel("loss (nats)")
        ax.set_title(f"{self.model_name}: loss by induction class", fontsize=9)
        ax.legend(fontsize=6, ncol=2 if self.has_ablation else 1)

    def plot_ablation(self, ax: Any = None) -> Any:
        """Change in each class's loss: top-``k`` induction heads vs ``k`` random heads, with intervals."""
        from icl_lens.core.plotting import pyplot

        fig, ax = pyplot().subplots(figsize=(6.4, 3.8)) if ax is None else (ax.figure, ax)
        df = self.ablation_table()
        x = torch.arange(len(df)).float()
        for offset, (col, label, color) in enumerate(
            (
                ("delta_top_k", f"top-{len(self.heads)} induction heads", "C3"),
                ("delta_random", f"{len(self.heads)} random heads", "C0"),
            )
        ):
            values = df[col].to_numpy()
            err = [values - df[f"{col}_ci_low"].to_numpy(), df[f"{col}_ci_high"].to_numpy() - values]
            ax.bar(
                (x + (offset - 0.5) * 0.38).numpy(), values, width=0.38, color=color, yerr=err, capsize=3, label=label
            )
        ax.axhline(0, color="0.4", lw=0.6)
        ax.set_xticks(x.numpy(), list(df.token_class))
        ax.set_ylabel("change in loss when ablated (nats)")
        ax.set_title(f"{self.model_name}: {self.config.method} ablation, 95% CI over contexts", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        return fig
