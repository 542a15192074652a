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
        extraction_accuracy: ICL accuracy on the candidate prompts that were run.
        bias: how the output bias is handled.
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

    kind = "function"

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
        return dataclasses.replace(self, heads=tuple(chosen), vector=vec)

    def top(self, k: int = 10) -> Any:
        """The ``k`` heads with the highest AIE as a DataFrame."""
        return self.to_dataframe().head(k)

    def to_dataframe(self) -> Any:
        import pandas as pd

        chosen = set(self.heads)
        rows = []
        for rank, (l, h) in enumerate(self.ranking()):
            rows.append(
                dict(
                    rank=rank + 1,
                    layer=l,
                    head=h,
                    aie=float(self.aie[l, h]),
                    aie_std=float(self.aie_per_prompt[l, h].std()) if self.aie_per_prompt.shape[-1] > 1 else 0.0,
                    in_vector=(l, h) in chosen,
                    output_norm=float(self.head_outputs[l, h].norm()),
                )
            )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        heads = ", ".join(f"L{l}H{h}" for l, h in self.heads[:5]) + (" ..." if len(self.heads) > 5 else "")
        return (
            f"{self.origin.model} / {self.origin.task}: {len(self.heads)} heads ({heads}); "
            f"max AIE {float(self.aie.max()):+.3f} (baseline {self.config.metric} {float(self.baseline.mean()):.3f}); "
            f"mean over {self.n_mean_used} prompts ({'correct only' if self.filtered else 'unfiltered'}, "
            f"ICL accuracy {self.extraction_accuracy:.0%}); |v| = {float(self.vector.norm()):.2f}"
        )

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
