"""Typed results of patching sweeps (exact and attribution) and of their comparison."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.options import check_choice
from icl_lens.core.results import Result
from icl_lens.patching.options import RankBy


@dataclasses.dataclass(frozen=True)
class _PatchingResult(Result):
    """What head and residual-stream sweeps (exact or attribution) have in common.

    ``patched[..., i]`` is prompt ``i``'s metric with one cell patched (NaN for cells not
    swept); ``effect`` is the mean over prompts of ``patched - baseline``; ``reference``
    is the source run's own metric (PromptBatch sources only). ``method`` is the engine
    that computed it: ``"fast"``, ``"plain"``, ``"fast+plain"`` (some chunks of prompts
    fell back) or ``"attribution"``.
    """

    model: str
    metric: str
    positions: str
    method: str
    source: str
    patched: Float[Tensor, "*cells batch"]
    baseline: Float[Tensor, " batch"]
    reference: Float[Tensor, " batch"] | None
    effect: Float[Tensor, " *cells"]

    _axes: ClassVar[tuple[str, ...]] = ()

    def normalized(self) -> Float[Tensor, " *cells"]:
        """Mean(patched - baseline) / mean(reference - baseline): 1 = the source run's metric."""
        if self.reference is None:
            raise ConfigError(
                "normalized() needs the source run's metric (`reference`), which exists only when the "
                "source was a PromptBatch; use `effect` for vector sources."
            )
        # A ratio of means: per-prompt ratios explode where reference ~ baseline.
        return (self.patched - self.baseline).mean(-1) / (self.reference - self.baseline).mean()

    def to_dataframe(self) -> Any:
        """One row per swept cell (NaN cells were not swept)."""
        import pandas as pd

        norm = self.normalized() if self.reference is not None else None
        rows = []
        for key in itertools.product(*(range(n) for n in self.effect.shape)):
            if bool(torch.isnan(self.effect[key])):
                continue
            row: dict[str, Any] = dict(zip(self._axes, key))
            row["effect"] = float(self.effect[key])
            row["mean_patched"] = float(self.patched[key].mean())
            if norm is not None:
                row["normalized"] = float(norm[key])
            rows.append(row)
        return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class HeadPatchingResult(_PatchingResult):
    """Metric per prompt with one attention head's output (``hook_z``) patched.

    ``patched[l, h, ..., i]`` is the metric of prompt ``i`` with head ``h`` of layer ``l``
    patched from the source (NaN for heads not swept); for ``positions="each"`` there is a
    column axis before the prompt axis. ``effect`` is the mean over prompts of
    ``patched - baseline`` (for function vectors: the average indirect effect).
    """

    title = "Head patching"
    _axes = ("layer", "head", "position")

    hook: str = "z"
    """The per-head activation patched: ``z`` (head outputs), ``q``, ``k`` or ``v`` (for
    ``k``/``v`` the head axis counts key/value heads)."""

    @property
    def n_layers(self) -> int:
        return int(self.patched.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.patched.shape[1])

    def top(self, k: int = 10, *, by: RankBy = "signed") -> list[tuple[int, int, float]]:
        """The ``k`` heads with the largest effect, as ``(layer, head, effect)``.

        ``by="abs"`` ranks by absolute effect. For ``positions="each"`` a head's effect is
        its largest over positions.
        """
        check_choice(by, RankBy, "by")
        eff = self.effect
        if eff.ndim == 3:  # each head's effect at its best position (NaN where the head was not swept)
            best = (eff.abs() if by == "abs" else eff).nan_to_num(float("-inf")).argmax(-1, keepdim=True)
            eff = eff.gather(-1, best).squeeze(-1)
        score = eff.abs() if by == "abs" else eff
        flat = score.nan_to_num(float("-inf")).flatten()
        order = torch.argsort(flat, descending=True)[:k]
        return [(int(i) // self.n_heads, int(i) % self.n_heads, float(eff.flatten()[i])) for i in order]

    def summary(self) -> str:
        swept = int((~torch.isnan(self.effect)).sum())
        best = self.top(1, by="abs")
        top = f"; largest |effect| L{best[0][0]}H{best[0][1]} = {best[0][2]:+.4g}" if best and swept else ""
        return (
            f"{self.model}: {self.metric} with {swept} head patches ({self.positions} positions, "
            f"{self.method}, source {self.source}), baseline {float(self.baseline.mean()):.4g}{top}"
        )

    def _plot(self, ax: Any) -> None:
        eff = self.effect if self.effect.ndim == 2 else self.effect.nan_to_num(0.0).abs().amax(1)
        lim = float(eff.nan_to_num(0.0).abs().max()) or 1.0
        im = ax.imshow(eff.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
        ax.figure.colorbar(im, ax=ax, label=f"effect on {self.metric}")
        ax.set_ylabel("layer")
        ax.set_xlabel("head" if self.effect.ndim == 2 else "position (max |effect| over heads)")
        ax.set_title(f"{self.title} ({self.method}): {self.model}")


@dataclasses.dataclass(frozen=True)
class ResidPatchingResult(_PatchingResult):
    """Metric per prompt with the residual stream of one layer (and position) patched.

    ``patched[l, i]`` (or ``patched[l, pos, i]`` for ``positions="each"``) is prompt
    ``i``'s metric with ``hook`` of layer ``l`` replaced by the source's; NaN where not swept.
    """

    title = "Residual stream patching"
    _axes = ("layer", "position")

    hook: str

    def summary(self) -> str:
        eff = self.effect.nan_to_num(0.0)
        idx = int(eff.abs().flatten().argmax())
        where = f"layer {idx}" if eff.ndim == 1 else f"layer {idx // eff.shape[1]}, position {idx % eff.shape[1]}"
        return (
            f"{self.model}: {self.metric} with {self.hook} patched ({self.positions} positions, {self.method}); "
            f"largest |effect| at {where} = {float(eff.flatten()[idx]):+.4g}"
        )

    def _plot(self, ax: Any) -> None:
        if self.effect.ndim == 1:
            ax.plot(range(self.effect.shape[0]), self.effect.numpy(), marker="o")
            ax.axhline(0.0, color="grey", lw=0.5)
            ax.set_xlabel("layer")
            ax.set_ylabel(f"effect on {self.metric}")
        else:
            eff = self.effect.nan_to_num(0.0)
            lim = float(eff.abs().max()) or 1.0
            im = ax.imshow(eff.numpy(), cmap="RdBu", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
            ax.figure.colorbar(im, ax=ax, label=f"effect on {self.metric}")
            ax.set_ylabel("layer")
            ax.set_xlabel("position")
        ax.set_title(f"{self.hook} patching ({self.method}): {self.model}")


@dataclasses.dataclass(frozen=True)
class PatchingAgreement(Result):
    """How well an approximate sweep (attribution patching) ranks like the exact one."""

    title = "Attribution vs exact patching"

    spearman: float
    pearson: float
    top_k_overlap: float
    k: int
    n: int
    approx_method: str
    exact_method: str
    approx: Float[Tensor, " n"]
    exact: Float[Tensor, " n"]

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            [
                dict(
                    spearman=self.spearman,
                    pearson=self.pearson,
                    top_k_overlap=self.top_k_overlap,
                    k=self.k,
                    n=self.n,
                    approx=self.approx_method,
                    exact=self.exact_method,
                )
            ]
        )

    def summary(self) -> str:
        return (
            f"{self.approx_method} vs {self.exact_method} over {self.n} cells: Spearman {self.spearman:.3f}, "
            f"Pearson {self.pearson:.3f}, top-{self.k} overlap {self.top_k_overlap:.0%}"
        )

    def _plot(self, ax: Any) -> None:
        ax.scatter(self.exact.numpy(), self.approx.numpy(), s=8)
        lo = float(torch.minimum(self.exact.min(), self.approx.min()))
        hi = float(torch.maximum(self.exact.max(), self.approx.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.5)
        ax.set_xlabel(f"exact effect ({self.exact_method})")
        ax.set_ylabel(f"approximate effect ({self.approx_method})")
        ax.set_title(self.summary(), fontsize="small")
