"""The result of :func:`~icl_lens.induction.detectors.find_induction_heads`: every head's scores, tables, plots and views."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from icl_lens.core.errors import ConfigError
from icl_lens.core.hooks import HookedModel
from icl_lens.core.results import Result

if TYPE_CHECKING:
    from icl_lens.induction.detectors import InductionConfig

SCORE_COLUMNS = (
    "induction",
    "prefix_matching",
    "previous_token",
    "duplicate_token",
    "copying_eigen",
    "copying_logit",
    "bos_attention",
)


@dataclasses.dataclass(frozen=True)
class InductionHeadsResult(Result):
    """Scores of every head (see :mod:`icl_lens.induction.detectors` for definitions).

    Tensors are ``[n_layers, n_heads]`` except ``induction`` (``[..., n_repeat_lengths]``,
    one score per entry of ``config.repeat_lengths``) and the composition scores
    ``[n_layers, n_heads, n_layers, n_heads]`` (from earlier head to later head; NaN where
    the first layer is not earlier). Weight-based scores are NaN when not computed.

    ``standard_errors`` holds, for the scores averaged over probe rows (``induction``
    ``[..., n_repeat_lengths]``, ``prefix_matching``, ``previous_token``,
    ``duplicate_token``, ``bos_attention``), the standard error of that mean over the rows;
    ``to_dataframe()`` shows them as ``<score>_se``. Weight-based scores have none: they
    are computed from the weights, not sampled.
    """

    title: ClassVar[str] = "Induction head scan"

    config: InductionConfig
    model_name: str
    induction: Float[Tensor, "layer head length"]
    prefix_matching: Float[Tensor, "layer head"]
    previous_token: Float[Tensor, "layer head"]
    duplicate_token: Float[Tensor, "layer head"]
    copying_logit: Float[Tensor, "layer head"]
    bos_attention: Float[Tensor, "layer head"]
    copying_eigen: Float[Tensor, "layer head"]
    k_composition: Float[Tensor, "layer head layer head"]
    k_composition_frobenius: Float[Tensor, "layer head layer head"]
    composition_baselines: tuple[float, float]
    standard_errors: dict[str, Tensor] = dataclasses.field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return int(self.previous_token.shape[0])

    @property
    def n_heads(self) -> int:
        return int(self.previous_token.shape[1])

    @property
    def induction_mean(self) -> Float[Tensor, "layer head"]:
        """Induction score averaged over the repeat lengths (what ``top`` ranks by)."""
        return self.induction.mean(-1)

    @property
    def induction_se(self) -> Float[Tensor, "layer head"]:
        """Standard error of :attr:`induction_mean` (the repeat lengths use separate rows)."""
        se = self.standard_errors.get("induction")
        if se is None:
            return torch.full_like(self.induction_mean, float("nan"))
        return se.square().sum(-1).sqrt() / se.shape[-1]

    def se(self, name: str) -> Float[Tensor, "layer head"]:
        """Standard error over probe rows of one score (NaN where it has none)."""
        if name == "induction":
            return self.induction_se
        se = self.standard_errors.get(name)
        return se if se is not None else torch.full_like(self.previous_token, float("nan"))

    @property
    def induction_min(self) -> Float[Tensor, "layer head"]:
        """Worst induction score over the repeat lengths (high only for real induction)."""
        return self.induction.min(-1).values

    def score(self, name: str) -> Float[Tensor, "layer head"]:
        """One ``[n_layers, n_heads]`` score by column name (``"induction"`` is the mean)."""
        if name == "induction":
            return self.induction_mean
        if name == "induction_min":
            return self.induction_min
        if name == "k_composition_in":
            return _max_in(self.k_composition)[0]
        if name in SCORE_COLUMNS:
            return getattr(self, name)
        raise ConfigError(
            f"unknown score {name!r}; choose from {SCORE_COLUMNS + ('induction_min', 'k_composition_in')}"
        )

    def to_dataframe(self) -> Any:
        import pandas as pd

        comp_in, comp_src = _max_in(self.k_composition)
        induction_se = self.induction_se
        rows = []
        for l in range(self.n_layers):
            for h in range(self.n_heads):
                row: dict[str, Any] = {"layer": l, "head": h, "label": f"L{l}H{h}"}
                row["induction"] = float(self.induction_mean[l, h])
                row["induction_se"] = float(induction_se[l, h])
                for i, L in enumerate(self.config.repeat_lengths):
                    row[f"induction_len{L}"] = float(self.induction[l, h, i])
                for name in SCORE_COLUMNS[1:]:
                    row[name] = float(getattr(self, name)[l, h])
                    if name in self.standard_errors:
                        row[f"{name}_se"] = float(self.standard_errors[name][l, h])
                row["k_composition_in"] = float(comp_in[l, h])
                src = int(comp_src[l, h])
                row["k_composition_from"] = "" if src < 0 else f"L{src // self.n_heads}H{src % self.n_heads}"
                rows.append(row)
        return pd.DataFrame(rows)

    def top(self, k: int = 10, by: str = "induction") -> Any:
        """The ``k`` heads with the highest score ``by`` (a DataFrame, best first)."""
        df = self.to_dataframe()
        column = by if by in df.columns else None
        if column is None:
            raise ConfigError(f"unknown score {by!r}; columns: {list(df.columns)}")
        return df.sort_values(column, ascending=False, kind="stable").head(k).reset_index(drop=True)

    def top_heads(self, k: int = 10, by: str = "induction") -> list[tuple[int, int]]:
        """``(layer, head)`` of the ``k`` best heads by ``by``."""
        top = self.top(k, by)
        return [(int(l), int(h)) for l, h in zip(top["layer"], top["head"])]

    def summary(self) -> str:
        best = self.top(3)
        heads = ", ".join(f"{r.label} ({r.induction:.2f} ± {r.induction_se:.2f})" for r in best.itertuples())
        return (
            f"{self.model_name}: top induction heads {heads} (mean ± s.e. over {self.config.n_sequences} "
            f"probe rows per repeat length)"
        )

    def _plot(self, ax: Any) -> None:
        _heatmap(ax, self.induction_mean, f"induction score (mean over lengths {list(self.config.repeat_lengths)})")

    def plot_scores(
        self, names: Sequence[str] = ("induction", "prefix_matching", "previous_token", "duplicate_token")
    ) -> Any:
        """Heatmaps (layer x head) of several scores side by side."""
        from icl_lens.core.plotting import pyplot

        plt = pyplot()
        fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), squeeze=False)
        for ax, name in zip(axes[0], names):
            _heatmap(ax, self.score(name), name)
        fig.tight_layout()
        return fig

    def plot_composition(self, ax: Any = None, frobenius: bool = False) -> Any:
        """K-composition matrix: rows are writing heads, columns reading heads."""
        from icl_lens.core.plotting import pyplot

        plt = pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(5.0, 4.4))
        m = (self.k_composition_frobenius if frobenius else self.k_composition).reshape(
            self.n_layers * self.n_heads, self.n_layers * self.n_heads
        )
        lim = float(torch.nan_to_num(m).abs().max()) or 1.0
        im = ax.imshow(m.numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
        ax.set_xlabel("later head (reads with its keys)")
        ax.set_ylabel("earlier head (writes)")
        ax.set_title("K-composition, " + ("raw" if frobenius else "token-projected") + " - random baseline", fontsize=9)
        ax.figure.colorbar(im, ax=ax, shrink=0.8)
        return ax.figure

    def attention_view(
        self,
        model: HookedModel,
        heads: Sequence[tuple[int, int]] | None = None,
        k: int = 4,
        repeat_length: int | None = None,
    ) -> Any:
        """Interactive circuitsvis view of the top heads on one probe row (works offline)."""
        from icl_lens.induction.views import attention_view

        return attention_view(model, heads if heads is not None else self.top_heads(k), self.config, repeat_length)


def _max_in(comp: Tensor) -> tuple[Tensor, Tensor]:
    """Per later head, the largest composition from any earlier head and that head's index."""
    L, H = comp.shape[0], comp.shape[1]
    flat = torch.nan_to_num(comp.reshape(L * H, L, H), nan=float("-inf"))
    best, src = flat.max(0)
    src = torch.where(torch.isfinite(best), src, torch.full_like(src, -1))
    return torch.where(torch.isfinite(best), best, torch.full_like(best, float("nan"))), src


def _heatmap(ax: Any, values: Tensor, title: str) -> None:
    im = ax.imshow(values.numpy(), aspect="auto", cmap="viridis", interpolation="nearest")
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=9)
    ax.figure.colorbar(im, ax=ax, shrink=0.8)
