"""The result of :func:`~icl_lens.patching.tracing.causal_trace`: layer x position maps."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.plotting import pyplot
from icl_lens.core.results import Config, Result

_CMAPS = {
    "resid_pre": "Purples",
    "resid_mid": "Blues",
    "resid_post": "Purples",
    "attn_out": "Reds",
    "mlp_out": "Greens",
}
_NAMES = {
    "resid_pre": "residual stream",
    "resid_mid": "residual stream (mid)",
    "resid_post": "residual stream (post)",
    "attn_out": "attention output",
    "mlp_out": "MLP output",
}


@dataclasses.dataclass(frozen=True)
class CausalTraceResult(Result):
    """The metric of every patched run, per site, direction, layer, column and prompt.

    ``patched[s, d, l, p, i]`` is prompt ``i``'s metric with ``sites[s]`` of layer ``l`` at
    column ``p`` patched in direction ``directions[d]`` (NaN for layers not traced);
    ``clean`` and ``corrupted`` are the unpatched runs' metrics. ``tokens[i]`` are prompt
    ``i``'s tokens (``""`` for padding). :meth:`normalized` is the fraction of the
    clean-vs-corrupted gap a patch moves: the share of the clean answer restored
    (denoising) or of it destroyed (noising).
    """

    title = "Causal tracing"

    model: str
    config: Config
    metric: str
    method: str
    sites: tuple[str, ...]
    directions: tuple[str, ...]
    tokens: tuple[tuple[str, ...], ...]
    patched: Float[Tensor, "site direction layer pos batch"]
    clean: Float[Tensor, " batch"]
    corrupted: Float[Tensor, " batch"]

    def _index(self, site: str, direction: str) -> tuple[int, int]:
        if site not in self.sites or direction not in self.directions:
            raise ConfigError(
                f"this trace has sites {self.sites} and directions {self.directions}; got {site!r}, {direction!r}"
            )
        return self.sites.index(site), self.directions.index(direction)

    def effect(self, site: str, direction: str = "denoising") -> Float[Tensor, "layer pos"]:
        """Mean over prompts of the patched metric minus the target run's own."""
        s, d = self._index(site, direction)
        target = self.corrupted if direction == "denoising" else self.clean
        return (self.patched[s, d] - target).mean(-1)

    def normalized(self, site: str, direction: str = "denoising") -> Float[Tensor, "layer pos"]:
        """``effect / mean(source - target)``: 1 = the patch moves the metric all the way to the other run's."""
        source, target = (self.clean, self.corrupted) if direction == "denoising" else (self.corrupted, self.clean)
        return self.effect(site, direction) / (source - target).mean()

    def to_dataframe(self) -> Any:
        """One row per (site, direction, layer, column) that was traced."""
        import pandas as pd

        rows = []
        for site in self.sites:
            for direction in self.directions:
                eff, norm = self.effect(site, direction), self.normalized(site, direction)
                for layer in range(eff.shape[0]):
                    if bool(torch.isnan(eff[layer]).all()):
                        continue
                    for pos in range(eff.shape[1]):
                        rows.append(
                            dict(
                                site=site,
                                direction=direction,
                                layer=layer,
                                position=pos,
                                token=self.tokens[0][pos],
                                effect=float(eff[layer, pos]),
                                normalized=float(norm[layer, pos]),
                            )
                        )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        gap = float((self.clean - self.corrupted).mean())
        parts = []
        for site in self.sites:
            for direction in self.directions:
                norm = self.normalized(site, direction).nan_to_num(float("-inf"))
                i = int(norm.flatten().argmax())
                layer, pos = divmod(i, norm.shape[1])
                parts.append(
                    f"{direction} {site}: largest at layer {layer}, column {pos} ({self.tokens[0][pos]!r}) "
                    f"= {float(norm[layer, pos]):.2f} of the gap"
                )
        head = (
            f"{self.model}: causal trace of {self.metric} over {len(self.clean)} prompts x {len(self.tokens[0])} "
            f"columns ({self.method}); clean {float(self.clean.mean()):.3g} vs corrupted "
            f"{float(self.corrupted.mean()):.3g} (gap {gap:+.3g})"
        )
        return head + "; " + "; ".join(parts)

    def plot(self, ax: Any = None) -> Any:
        """One heatmap per site (columns) and direction (rows): layer by column, tokens on the axis."""
        plt = pyplot()
        if ax is not None:
            fig, axes = ax.figure, [[ax]]
            panels = [(self.sites[0], self.directions[0])]
        else:
            n_cols = len(self.tokens[0])
            width = max(4.0, 0.16 * n_cols + 1.5)
            fig, grid = plt.subplots(
                len(self.directions),
                len(self.sites),
                figsize=(width * len(self.sites), 3.4 * len(self.directions)),
                squeeze=False,
            )
            axes = grid
            panels = [(site, direction) for direction in self.directions for site in self.sites]
        flat = [a for row in axes for a in row]
        for a, (site, direction) in zip(flat, panels, strict=False):
            self._panel(a, site, direction)
        fig.tight_layout()
        return fig

    def _panel(self, ax: Any, site: str, direction: str) -> None:
        norm = self.normalized(site, direction).nan_to_num(0.0)
        hi = max(float(norm.abs().max()), 1e-9)
        im = ax.imshow(norm.numpy(), cmap=_CMAPS.get(site, "Purples"), vmin=min(0.0, float(norm.min())), vmax=hi)
        ax.set_aspect("auto")
        ax.invert_yaxis()
        ax.figure.colorbar(im, ax=ax, label="fraction of the gap")
        labels = [t.replace("\n", "\\n") for t in self.tokens[0]]
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=90, fontsize=6)
        ax.set_ylabel("layer")
        which = "tokens of prompt 1" + (f" of {len(self.clean)}" if len(self.clean) > 1 else "")
        ax.set_xlabel(which)
        ax.set_title(f"{_NAMES.get(site, site)}, {direction}", fontsize="medium")

    def _plot(self, ax: Any) -> None:
        self._panel(ax, self.sites[0], self.directions[0])
