"""The result of :func:`~icl_lens.worlds.compare_to_gradient_descent`: metrics by input scale, with intervals."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from jaxtyping import Float
from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import compare_paired, mean_and_se

COSINE_BAR = 0.99
"""Sensitivity cosine at or above which the model counts as one GD step (von Oswald et al. report ~0.99+)."""
DISTANCE_BAR = 0.05
"""Relative prediction distance below which it does (5% of the targets' scale)."""


@dataclasses.dataclass(frozen=True)
class GradientDescentComparison(Result):
    """A trained regression model beside ``gd_steps`` of gradient descent, at every input scale.

    Per-problem tensors are ``[scales, n_test]``: squared errors of the model, of gradient
    descent and of exact least squares (``sq_*``), ``y_sq`` (the targets' squares: the
    loss of predicting 0 is half their mean), ``gd_sq`` (gradient descent's predictions,
    squared), ``pred_diff = |y_model - y_gd|``, ``cos``
    and ``sens_l2`` (cosine and L2 distance of the sensitivities ``d y / d x_q``).
    Losses are ``1/2`` mean squared errors, as in von Oswald et al.
    """

    title: ClassVar[str] = "Trained attention vs gradient descent"

    config: Any
    run_config: Any
    eta: float
    scales: tuple[float, ...]
    sq_model: Float[Tensor, "scales n"]
    sq_gd: Float[Tensor, "scales n"]
    sq_ls: Float[Tensor, "scales n"]
    y_sq: Float[Tensor, "scales n"]
    gd_sq: Float[Tensor, "scales n"]
    pred_diff: Float[Tensor, "scales n"]
    cos: Float[Tensor, "scales n"]
    sens_l2: Float[Tensor, "scales n"]

    def _i(self, scale: float) -> int:
        return self.scales.index(float(scale))

    def relative_distance(self, scale: float = 1.0) -> float:
        """``sqrt(mean (y_model - y_gd)^2) / sqrt(mean y^2)``: the prediction distance on the targets' scale."""
        i = self._i(scale)
        return math.sqrt(float((self.pred_diff[i].double() ** 2).mean()) / float(self.y_sq[i].double().mean()))

    def distance_to_gd(self, scale: float = 1.0) -> float:
        """``sqrt(mean (y_model - y_gd)^2) / sqrt(mean y_gd^2)``: the distance on gradient descent's own scale.

        Out of distribution both predictions grow as the cube of the input scale while the
        targets grow linearly, so this, not :meth:`relative_distance`, says whether the
        model still computes what gradient descent computes there.
        """
        i = self._i(scale)
        return math.sqrt(float((self.pred_diff[i].double() ** 2).mean()) / float(self.gd_sq[i].double().mean()))

    def holds(self, scale: float) -> bool:
        """The model computes gradient descent's prediction at this input scale (cosine and distance bars)."""
        return self.cosine(scale) >= COSINE_BAR and self.distance_to_gd(scale) < DISTANCE_BAR

    def cosine(self, scale: float = 1.0) -> float:
        """Mean cosine between the two sensitivities."""
        return float(self.cos[self._i(scale)].mean())

    @property
    def matches(self) -> bool:
        """In distribution: sensitivity cosine ``>= 0.99`` and relative prediction distance ``< 5%``."""
        return self.cosine() >= COSINE_BAR and self.relative_distance() < DISTANCE_BAR

    def loss_comparison(self, scale: float = 1.0) -> Any:
        """Model vs gradient descent squared errors on the same problems (paired permutation test, bootstrap CI)."""
        i = self._i(scale)
        return compare_paired(
            0.5 * self.sq_model[i], 0.5 * self.sq_gd[i], names=("trained model", "gradient descent"), seed=0
        )

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for scale in self.scales:
            i = self._i(scale)
            row: dict[str, Any] = dict(input_scale=scale)
            for name, values in (
                ("loss_model", 0.5 * self.sq_model[i]),
                ("loss_gd", 0.5 * self.sq_gd[i]),
                ("loss_least_squares", 0.5 * self.sq_ls[i]),
                ("loss_zero", 0.5 * self.y_sq[i]),
                ("prediction_l2", self.pred_diff[i]),
                ("sensitivity_cosine", self.cos[i]),
                ("sensitivity_l2", self.sens_l2[i]),
            ):
                mean, se = mean_and_se(values)
                row.update(
                    {
                        name: float(mean),
                        f"{name}_ci_low": float(mean - 1.96 * se),
                        f"{name}_ci_high": float(mean + 1.96 * se),
                    }
                )
            row["relative_prediction_distance"] = self.relative_distance(scale)
            row["distance_to_gd"] = self.distance_to_gd(scale)
            cmp = self.loss_comparison(scale)
            row.update(
                loss_model_minus_gd=cmp.difference,
                loss_diff_ci_low=cmp.ci_low,
                loss_diff_ci_high=cmp.ci_high,
                loss_diff_p=cmp.p_value,
            )
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> str:
        c = self.run_config
        kind = f"{c.n_layers}-layer {'softmax' if c.softmax else 'linear'} self-attention"
        steps = f"{self.config.gd_steps} GD step{'s' if self.config.gd_steps > 1 else ''} (eta = {self.eta:.3g})"
        df = self.to_dataframe().set_index("input_scale")
        r = df.loc[1.0]
        verdict = "matches" if self.matches else "does not match"
        holds = [s for s in self.scales if self.holds(s)]
        return (
            f"{kind} {verdict} {steps}: sensitivity cosine {r.sensitivity_cosine:.4f} "
            f"[{r.sensitivity_cosine_ci_low:.4f}, {r.sensitivity_cosine_ci_high:.4f}], prediction distance "
            f"{self.relative_distance():.1%} of the targets' scale, losses {r.loss_model:.3f} (model) vs "
            f"{r.loss_gd:.3f} (GD) vs {r.loss_least_squares:.3f} (least squares) vs {r.loss_zero:.3f} (predict 0); "
            f"the model computes GD's prediction at input scales {holds or 'none'} of {list(self.scales)}"
        )

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        for name, label, color in (
            ("loss_model", "trained model", "C0"),
            ("loss_gd", f"{self.config.gd_steps} GD step(s)", "C1"),
            ("loss_least_squares", "exact least squares", "C2"),
            ("loss_zero", "predict 0", "0.6"),
        ):
            ax.plot(df["input_scale"], df[name].clip(lower=1e-8), marker="o", label=label, color=color)
            ax.fill_between(
                df["input_scale"], df[f"{name}_ci_low"].clip(lower=1e-8), df[f"{name}_ci_high"], color=color, alpha=0.15
            )
        ax.set_yscale("log")
        ax.set_xlabel("input scale (x ~ U(-s, s) times the training range)")
        ax.set_ylabel("loss (1/2 MSE)")
        ax.axvline(1.0, color="black", lw=0.6, ls=":")
        twin = ax.twinx()
        twin.plot(
            df["input_scale"], df["sensitivity_cosine"], color="C3", ls="--", marker=".", label="sensitivity cosine"
        )
        twin.set_ylim(min(0.5, float(df["sensitivity_cosine"].min()) - 0.05), 1.01)
        twin.set_ylabel("cosine of d y / d x_q (model vs GD)", color="C3")
        ax.set_title(self.summary().split(":")[0])
        ax.legend(fontsize=7, loc="upper left")
