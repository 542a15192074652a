"""The result of :func:`icl_lens.hypotheses.kernel.kernel_regression`: numbers with baselines, tables, plots."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from icl_lens.core.options import check_choice, choices
from icl_lens.core.plotting import pyplot
from icl_lens.core.results import Result
from icl_lens.core.stats import (
    PairedComparison,
    accuracy_ci,
    compare_paired,
    error_bars,
    mean_interval,
    rate_interval,
    verdict,
)

if TYPE_CHECKING:
    from icl_lens.hypotheses.kernel import KernelRegressionConfig

Target = Literal["model", "gold"]
"""What a vote is compared with: the model's own (label-restricted) prediction or the gold label."""

PromptSplit = Literal["heldout", "selection", "all"]
"""Which prompts a number uses: those held out from head selection, those that selected, or all."""

Similarity = Literal["output", "hidden"]
"""How a demonstration's input is compared with the query: zero-shot output distributions or hidden states."""

TARGETS: tuple[Target, ...] = choices(Target)
SIMILARITIES: tuple[Similarity, ...] = choices(Similarity)


@dataclasses.dataclass(frozen=True)
class KernelRegressionResult(Result):
    """Per-head kernel-regression votes, their agreement, and attention/similarity correlations.

    Label indices refer to ``labels``. ``selection[p]`` is True for the prompts used to pick
    heads (``best_head`` by vote agreement, ``similarity_heads`` by correlation); every
    "held-out" number uses only the other prompts. ``correlation_*[p, l, h]`` is the
    Pearson correlation, over the demonstrations of prompt ``p``, between head ``(l, h)``'s
    attention and the similarity of each demonstration's input to the query.
    """

    title = "ICL as kernel regression"

    model: str
    task: str
    labels: tuple[str, ...]
    attention: Float[Tensor, "prompts layers heads shots"]
    demo_labels: Int[Tensor, "prompts shots"]
    gold: Int[Tensor, " prompts"]
    model_prediction: Int[Tensor, " prompts"]
    votes: Int[Tensor, "prompts layers heads"]
    selection: Bool[Tensor, " prompts"]
    best_head: tuple[int, int]
    similarity_output: Float[Tensor, "prompts shots"]
    similarity_hidden: Float[Tensor, "prompts shots"]
    similarity_layer: int
    correlation_output: Float[Tensor, "prompts layers heads"]
    correlation_hidden: Float[Tensor, "prompts layers heads"]
    similarity_heads: dict[str, tuple[int, int]]
    null_correlation: dict[str, float]
    config: KernelRegressionConfig

    # -- numbers ------------------------------------------------------------------------
    def _rows(self, split: PromptSplit) -> Tensor:
        check_choice(split, PromptSplit, "split")
        if split == "all":
            return torch.ones_like(self.selection)
        return self.selection if split == "selection" else ~self.selection

    def _target(self, target: Target) -> Tensor:
        check_choice(target, Target, "target")
        return self.model_prediction if target == "model" else self.gold

    def n_prompts(self, split: PromptSplit = "heldout") -> int:
        return int(self._rows(split).sum())

    def hits(self, target: Target = "model", split: PromptSplit = "heldout") -> Bool[Tensor, "prompts layers heads"]:
        """Per prompt of ``split`` and head: whether the head's vote equals the target."""
        rows = self._rows(split)
        return self.votes[rows] == self._target(target)[rows][:, None, None]

    def majority_hits(self, target: Target = "model", split: PromptSplit = "heldout") -> Bool[Tensor, " prompts"]:
        """Per prompt of ``split``: whether the majority label of its demonstrations equals the target."""
        rows = self._rows(split)
        counts = torch.nn.functional.one_hot(self.demo_labels[rows], len(self.labels)).sum(1)
        return counts.argmax(-1) == self._target(target)[rows]

    def vote_vs_majority(self, target: Target = "model") -> PairedComparison:
        """The picked head's vote against the majority-label baseline on the same held-out
        prompts (exact McNemar, bootstrap interval on the difference)."""
        layer, head = self.best_head
        return compare_paired(
            self.hits(target)[:, layer, head],
            self.majority_hits(target),
            names=(f"vote of L{layer}H{head}", "majority label"),
            seed=self.config.seed,
        )

    def agreement(self, target: Target = "model", split: PromptSplit = "heldout") -> Float[Tensor, "layers heads"]:
        """Fraction of prompts where each head's vote equals the model's prediction or the gold label."""
        rows = self._rows(split)
        hits = self.votes[rows] == self._target(target)[rows][:, None, None]
        return hits.float().mean(0)

    def best_head_agreement(self, target: Target = "model") -> float:
        """Held-out agreement of the head picked on the selection split (the headline number)."""
        layer, head = self.best_head
        return float(self.agreement(target, "heldout")[layer, head])

    def majority_agreement(self, target: Target = "model", split: PromptSplit = "heldout") -> float:
        """Baseline: uniform weights over the demonstrations (majority label; ties to the first label)."""
        rows = self._rows(split)
        counts = torch.nn.functional.one_hot(self.demo_labels[rows], len(self.labels)).sum(1)
        return float((counts.argmax(-1) == self._target(target)[rows]).float().mean())

    def coverage(self, target: Target = "model", split: PromptSplit = "heldout") -> float:
        """Ceiling of any vote: share of prompts whose target label appears among the demonstrations."""
        rows = self._rows(split)
        present = (self.demo_labels[rows] == self._target(target)[rows][:, None]).any(-1)
        return float(present.float().mean())

    def correlation(self, kind: Similarity = "output", split: PromptSplit = "heldout") -> Float[Tensor, "layers heads"]:
        """Mean over prompts of corr(attention to x_i, similarity of x_i to the query), per head."""
        check_choice(kind, Similarity, "kind")
        per_prompt = self.correlation_output if kind == "output" else self.correlation_hidden
        return per_prompt[self._rows(split)].nanmean(0)

    @property
    def chance(self) -> float:
        return 1.0 / len(self.labels)

    @property
    def model_accuracy(self) -> float:
        """Held-out label-restricted accuracy of the model itself."""
        rows = self._rows("heldout")
        return float((self.model_prediction[rows] == self.gold[rows]).float().mean())

    def summary_table(self) -> Any:
        """The headline numbers with their baselines, one row each (held-out prompts), each with
        a 95% interval: Wilson for shares of prompts, a bootstrap over prompts for mean
        correlations (none for chance and the permutation null, which are not estimates)."""
        import pandas as pd

        layer, head = self.best_head
        rows = []
        for target in TARGETS:
            agree = self.agreement(target, "heldout")
            rows += [
                dict(target=target, measure=f"vote of L{layer}H{head} (picked on the selection split)",
                     value=self.best_head_agreement(target)),
                dict(target=target, measure="best head picked on held-out itself (optimistic)",
                     value=float(agree.max())),
                dict(target=target, measure="mean over all heads", value=float(agree.mean())),
                dict(target=target, measure="majority label of the demonstrations",
                     value=self.majority_agreement(target)),
                dict(target=target, measure="chance (1 / labels)", value=self.chance),
                dict(target=target, measure="ceiling: target label among the demonstrations",
                     value=self.coverage(target)),
            ]  # fmt: skip
        rows.append(dict(target="gold", measure="model's own accuracy", value=self.model_accuracy))
        for kind in SIMILARITIES:
            corr = self.correlation(kind, "heldout")
            sl, sh = self.similarity_heads[kind]
            where = f"similarity ({kind})"
            rows += [
                dict(target=where, measure=f"corr of L{sl}H{sh} (picked on the selection split)",
                     value=float(corr[sl, sh])),
                dict(target=where, measure=f"95% permutation null of |corr| for L{sl}H{sh}",
                     value=self.null_correlation[kind]),
                dict(target=where, measure=f"corr of the vote head L{layer}H{head}", value=float(corr[layer, head])),
                dict(target=where, measure="max corr over heads on held-out itself (optimistic)",
                     value=float(corr.nan_to_num(-1).max())),
                dict(target=where, measure="mean over all heads", value=float(corr.nanmean())),
            ]  # fmt: skip
        n = self.n_prompts()
        for row in rows:
            m = row["measure"]
            row["ci_low"] = row["ci_high"] = float("nan")
            if m.startswith(("vote of", "majority", "ceiling", "model's own")):
                row["ci_low"], row["ci_high"] = rate_interval(row["value"], n)
            elif m.startswith("corr of"):
                l, h = (int(x) for x in re.search(r"L(\d+)H(\d+)", m).groups())  # type: ignore[union-attr]
                per_prompt = self.correlation_output if "output" in row["target"] else self.correlation_hidden
                _, row["ci_low"], row["ci_high"] = mean_interval(
                    per_prompt[self._rows("heldout")][:, l, h], seed=self.config.seed
                )
            row["n"] = n
        return pd.DataFrame(rows)

    def to_dataframe(self) -> Any:
        """One row per head: agreement on both splits and the held-out similarity correlations."""
        import pandas as pd

        sel = self.agreement("model", "selection")
        held_model = self.agreement("model", "heldout")
        held_gold = self.agreement("gold", "heldout")
        n = self.n_prompts()
        corr_output, corr_hidden = self.correlation("output"), self.correlation("hidden")
        n_layers, n_heads = sel.shape
        rows = []
        for layer in range(n_layers):
            for head in range(n_heads):
                rows.append(
                    dict(
                        layer=layer,
                        head=head,
                        agreement_model_selection=float(sel[layer, head]),
                        agreement_model_heldout=float(held_model[layer, head]),
                        ci_low=rate_interval(float(held_model[layer, head]), n)[0],
                        ci_high=rate_interval(float(held_model[layer, head]), n)[1],
                        agreement_gold_heldout=float(held_gold[layer, head]),
                        corr_output_similarity=float(corr_output[layer, head]),
                        corr_hidden_similarity=float(corr_hidden[layer, head]),
                        best=(layer, head) == self.best_head,
                    )
                )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        layer, head = self.best_head
        sl, sh = self.similarity_heads["output"]
        n = self.n_prompts()
        corr, low, high = mean_interval(
            self.correlation_output[self._rows("heldout")][:, sl, sh], seed=self.config.seed
        )
        null = self.null_correlation["output"]
        beyond = abs(corr) > null and (low > 0 or high < 0)
        vote = verdict(
            self.vote_vs_majority("model"),
            subject=f"the vote of L{layer}H{head} (picked on {self.n_prompts('selection')} prompts) vs the majority label",
            what="agreement with the model",
        )
        return (
            f"{self.model} on {self.task}, {n} held-out prompts: {vote}; chance {self.chance:.0%}, the model's own "
            f"accuracy {accuracy_ci(self.model_accuracy, n)}; corr(attention, output similarity) of L{sl}H{sh} "
            f"{corr:+.2f} [{low:+.2f}, {high:+.2f}], "
            + ("beyond" if beyond else "not beyond")
            + f" the 95% permutation null ({null:.2f})"
        )

    # -- pictures -----------------------------------------------------------------------
    def _plot(self, ax: Any) -> None:
        layer, head = self.best_head
        names = [
            f"L{layer}H{head}\n(picked on\nselection)",
            "best on\nheld-out\n(optimistic)",
            "mean head",
            "majority\nlabel",
            "chance",
            "ceiling",
        ]
        width = 0.38
        for t, (target, color) in enumerate((("model", "tab:blue"), ("gold", "tab:orange"))):
            agree = self.agreement(target, "heldout")
            values = [
                self.best_head_agreement(target),
                float(agree.max()),
                float(agree.mean()),
                self.majority_agreement(target),
                self.chance,
                self.coverage(target),
            ]
            xs = [i + (t - 0.5) * width for i in range(len(names))]
            n = self.n_prompts()
            low = [rate_interval(v, n)[0] if i != 4 else v for i, v in enumerate(values)]
            high = [rate_interval(v, n)[1] if i != 4 else v for i, v in enumerate(values)]
            ax.bar(xs, values, width=width, color=color, yerr=error_bars(values, low, high), capsize=2,
                   label=f"vote = {target}'s answer")  # fmt: skip
        ax.set_xticks(range(len(names)), names, fontsize="x-small")
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(f"share of {self.n_prompts()} held-out prompts (95% CI)")
        ax.set_title(f"Kernel-regression vote: {self.task} ({self.model})", fontsize="medium")
        ax.legend(fontsize="small", loc="upper center")

    def plot_heads(self, target: Target = "model", ax: Any = None) -> Any:
        """Heatmap of held-out agreement per head; the head picked on the selection split is circled."""
        return self._heatmap(
            self.agreement(target, "heldout"), f"held-out agreement with {target}", ax, (0, 1), self.best_head
        )

    def plot_similarity(self, kind: Similarity = "output", ax: Any = None) -> Any:
        """Heatmap of held-out corr(attention to x_i, similarity of x_i to the query) per head."""
        corr = self.correlation(kind, "heldout")
        null = self.null_correlation[kind]
        bound = max(0.05, float(corr.abs().nan_to_num(0).max()))
        label = f"corr(attention, {kind} similarity); null |r| < {null:.2f}"
        return self._heatmap(corr, label, ax, (-bound, bound), self.similarity_heads[kind])

    def _heatmap(self, values: Tensor, label: str, ax: Any, limits: tuple[float, float], mark: tuple[int, int]) -> Any:
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.8)) if ax is None else (ax.figure, ax)
        cmap = "viridis" if limits[0] >= 0 else "RdBu_r"
        image = ax.imshow(values.T.numpy(), aspect="auto", origin="lower", cmap=cmap, vmin=limits[0], vmax=limits[1])
        ax.scatter([mark[0]], [mark[1]], s=120, facecolors="none", edgecolors="red", linewidths=1.5)
        ax.set_xlabel("layer")
        ax.set_ylabel("head")
        ax.set_title(f"{self.task} ({self.model})", fontsize="medium")
        fig.colorbar(image, ax=ax, label=label)
        fig.tight_layout()
        return fig
