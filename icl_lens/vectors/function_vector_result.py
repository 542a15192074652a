"""The result of :func:`icl_lens.vectors.function_vectors.function_vector`: AIE per head, the heads, the vector."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core import validate
from icl_lens.core.results import Result
from icl_lens.core.stats import accuracy_ci, mean_and_se, rate_interval
from icl_lens.vectors.common import FromOrigin, VectorOrigin

if TYPE_CHECKING:
    from icl_lens.vectors.function_vectors import FunctionVectorConfig

BIAS_NOTE = "b_O excluded: it belongs to the attention layer, is added to every prompt anyway, and is task-independent"


@dataclasses.dataclass(frozen=True)
class FunctionVectorResult(FromOrigin, Result):
    """A function vector with everything needed to judge and reuse it.

    Attributes:
        origin: model, weight-processing mode, task, template, split and seeds.
        aie: average indirect effect of each head ``[n_layers, n_heads]``.
        aie_per_prompt: ``patched - baseline`` per head and shuffled prompt.
        baseline: the metric on each shuffled-label prompt without any patch.
        mean_z: task-conditioned mean ``hook_z`` at the last position ``[n_layers, n_heads, d_head]``.
        head_outputs: ``mean_z[l, h] @ W_O[l, h]`` for every head ``[n_layers, n_heads, d_model]``.
        heads: the heads summed into ``vector``, best AIE first.
        vector: ``Σ head_outputs[l, h]`` over ``heads`` (``[d_model]``).
        default_layer: where Todd et al. add the vector (``n_layers // 3``); the implant
            evaluation sweeps every layer and chooses on the dev split.
        n_candidates, n_correct, n_mean_used: clean prompts run, answered correctly, averaged.
        filtered: whether ``mean_z`` averages only correctly answered prompts.
        extraction_accuracy: ICL accuracy on the candidate prompts that were run
            (:attr:`extraction_interval` is its 95% Wilson interval).
        bias: how the output bias is handled.
        folds: on a cross-validated task (``origin.cv_folds > 1``), each fold's own
            function vector, read from that fold's train part only; the fields above then
            average the folds (AIE over every fold's prompts, mean activations averaged,
            heads ranked by the pooled AIE). Empty for a held-out split.
    """

    title = "Function vector"

    origin: VectorOrigin
    config: FunctionVectorConfig
    aie: Float[Tensor, "n_layers n_heads"]
    aie_per_prompt: Float[Tensor, "n_layers n_heads prompts"]
    baseline: Float[Tensor, " prompts"]
    mean_z: Float[Tensor, "n_layers n_heads d_head"]
    head_outputs: Float[Tensor, "n_layers n_heads d_model"]
    heads: tuple[tuple[int, int], ...]
    vector: Float[Tensor, " d_model"]
    default_layer: int
    n_candidates: int
    n_correct: int
    n_mean_used: int
    filtered: bool
    extraction_accuracy: float
    sweep_method: str
    bias: str = BIAS_NOTE
    folds: tuple[FunctionVectorResult, ...] = ()

    kind = "function"

    @property
    def extraction_interval(self) -> tuple[float, float]:
        """95% Wilson interval of :attr:`extraction_accuracy` over the ``n_candidates`` prompts."""
        return rate_interval(self.extraction_accuracy, self.n_candidates)

    @property
    def aie_se(self) -> Float[Tensor, "n_layers n_heads"]:
        """Standard error of each head's AIE over the shuffled-label prompts."""
        return mean_and_se(self.aie_per_prompt)[1]

    @property
    def layer(self) -> int:
        """The layer this vector is added at unless told otherwise (Todd et al.: ``n_layers // 3``)."""
        return self.default_layer

    def ranking(self) -> list[tuple[int, int]]:
        """Every head, highest AIE first (ties: lower layer, then lower head)."""
        return rank_heads(self.aie)

    def with_heads(self, heads: int | list[tuple[int, int]]) -> FunctionVectorResult:
        """The same extraction with another head set: the top ``heads`` by AIE, or a list."""
        n_layers, n_heads = self.aie.shape
        if isinstance(heads, int) and not isinstance(heads, bool):
            chosen = self.ranking()[: validate.count(heads, "heads")]
        else:
            chosen = validate.head_list(heads, n_layers, n_heads)
        vec = torch.stack([self.head_outputs[l, h] for l, h in chosen]).sum(0)
        # A number of heads is taken from each fold's own ranking: a fold never picks its
        # heads by an AIE that other folds (its test queries among them) measured.
        folds = tuple(f.with_heads(heads) for f in self.folds)
        return dataclasses.replace(self, heads=tuple(chosen), vector=vec, folds=folds)

    def top(self, k: int = 10) -> Any:
        """The ``k`` heads with the highest AIE as a DataFrame."""
        return self.to_dataframe().head(k)

    def to_dataframe(self) -> Any:
        import pandas as pd

        chosen = set(self.heads)
        se = self.aie_se
        n = int(self.aie_per_prompt.shape[-1])
        rows = []
        for rank, (l, h) in enumerate(self.ranking()):
            rows.append(
                dict(
                    rank=rank + 1,
                    layer=l,
                    head=h,
                    aie=float(self.aie[l, h]),
                    aie_se=float(se[l, h]),
                    n_prompts=n,
                    in_vector=(l, h) in chosen,
                    output_norm=float(self.head_outputs[l, h].norm()),
                )
            )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        heads = ", ".join(f"L{l}H{h}" for l, h in self.heads[:5]) + (" ..." if len(self.heads) > 5 else "")
        l, h = self.heads[0]
        n = int(self.aie_per_prompt.shape[-1])
        folds = (
            f"; cross-validated: {self.origin.cv_folds} folds, one vector each from its own train part"
            if self.origin.cross_validated and self.origin.fold is None
            else ""
        )
        return (
            f"{self.origin.model} / {self.origin.task}: {len(self.heads)} heads ({heads}); "
            f"AIE of L{l}H{h} {float(self.aie[l, h]):+.3f} ± {float(self.aie_se[l, h]):.3f} (s.e. over {n} "
            f"shuffled prompts; baseline {self.config.metric} {float(self.baseline.mean()):.3f}); "
            f"mean activations over {self.n_mean_used} prompts ({'correct only' if self.filtered else 'unfiltered'}; "
            f"ICL accuracy {accuracy_ci(self.extraction_accuracy, self.n_candidates)} on {self.n_candidates}); "
            f"|v| = {float(self.vector.norm()):.2f}{folds}"
        )

    def plot_heads(self, k: int = 10, ax: Any = None) -> Any:
        """The ``k`` heads with the highest AIE, with 95% error bars (1.96 standard errors over prompts)."""
        from icl_lens.core.plotting import figure_and_axes

        fig, ax = figure_and_axes(ax)
        top = self.ranking()[:k]
        values = [float(self.aie[l, h]) for l, h in top]
        se = self.aie_se
        ax.bar(range(len(top)), values, yerr=[1.96 * float(se[l, h]) for l, h in top], capsize=3,
               color=["C0" if (l, h) in set(self.heads) else "C7" for l, h in top])  # fmt: skip
        ax.set_xticks(range(len(top)), [f"L{l}H{h}" for l, h in top], rotation=45, fontsize=8)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_ylabel(f"AIE (change in {self.config.metric}), 95% CI")
        ax.set_title(f"Top heads: {self.origin.task} ({self.aie_per_prompt.shape[-1]} shuffled prompts)")
        fig.tight_layout()
        return fig

    def _plot(self, ax: Any) -> None:
        data = self.aie.float().numpy()
        lim = max(abs(float(data.min())), abs(float(data.max())), 1e-9)
        im = ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, origin="lower")
        ax.figure.colorbar(im, ax=ax, label=f"AIE (change in {self.config.metric})")
        for l, h in self.heads:
            ax.scatter([h], [l], marker="s", s=40, facecolors="none", edgecolors="black", linewidths=1.2)
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"AIE per head: {self.origin.task} ({self.origin.model}); boxes: top {len(self.heads)}")


def rank_heads(aie: Float[Tensor, "n_layers n_heads"]) -> list[tuple[int, int]]:
    n_layers, n_heads = aie.shape
    flat = [(-float(aie[l, h]), l, h) for l in range(n_layers) for h in range(n_heads) if not math.isnan(aie[l, h])]
    return [(l, h) for _, l, h in sorted(flat)]
