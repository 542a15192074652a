"""The result of :func:`icl_lens.vectors.implant.evaluate_implant` (tables, plots, HTML)."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any

from jaxtyping import Bool, Float
from torch import Tensor

from icl_lens.core.plotting import pyplot
from icl_lens.core.results import Result
from icl_lens.core.stats import (
    PairedComparison,
    accuracy_ci,
    accuracy_interval,
    compare_paired,
    error_bars,
    format_p,
    rate_interval,
    ratio_interval,
    recovery_text,
    verdict,
)
from icl_lens.vectors.common import VectorOrigin

if TYPE_CHECKING:
    from icl_lens.vectors.implant import ImplantConfig


CONDITIONS: tuple[str, ...] = ("zero_shot", "zero_shot+vector", "icl", "shuffled", "shuffled+vector")

COMPARISONS: tuple[tuple[str, str], ...] = (
    ("zero_shot+vector", "zero_shot"),
    ("shuffled+vector", "shuffled"),
    ("zero_shot+vector", "icl"),
)
"""The paired tests every implant evaluation reports: does the vector help zero-shot prompts,
does it help shuffled-label prompts, and how far is it from ICL."""


@dataclasses.dataclass(frozen=True)
class ImplantResult(Result):
    """Everything :func:`evaluate_implant` measured, for one vector on one task.

    Per-condition tensors follow :data:`CONDITIONS` (``conditions``), one column per test
    query (every fold's test queries, in fold order, for a cross-validated vector).
    ``kl_to_icl[c, i]`` is ``KL(ICL || condition c)`` on test query ``i`` in nats;
    ``agrees_with_icl[c, i]`` whether condition ``c`` and ICL predict the same token.
    ``layer`` is the layer most folds chose (``fold_layers``: each fold's choice).

    Every accuracy has a 95% Wilson interval (``to_dataframe()``'s ``ci_low``/``ci_high``),
    :meth:`comparisons` tests the vector's effects on the same queries (exact McNemar and a
    paired bootstrap interval on the difference) and :meth:`recovery` gives the share of
    ICL recovered with a bootstrap interval; the summary states only what these support.
    """

    title = "Does the implanted vector reproduce ICL?"

    origin: VectorOrigin
    config: ImplantConfig
    vector_kind: str
    operation: str
    task: str
    layer: int
    layer_choice: str
    fold_layers: tuple[int, ...]
    conditions: tuple[str, ...]
    correct: Bool[Tensor, "conditions test"]
    answer_prob: Float[Tensor, "conditions test"]
    kl_to_icl: Float[Tensor, "conditions test"]
    agrees_with_icl: Bool[Tensor, "conditions test"]
    queries: tuple[str, ...]
    answers: tuple[str, ...]
    layers: tuple[int, ...]
    layer_dev_accuracy: Float[Tensor, " layers"]
    layer_test_accuracy: Float[Tensor, " layers"]
    specificity_vectors: tuple[str, ...]
    specificity_tasks: tuple[str, ...]
    specificity: Float[Tensor, "vectors tasks"]
    specificity_n: tuple[int, ...]
    natural_prompts: tuple[str, ...]
    natural_plain: tuple[str, ...]
    natural_implanted: tuple[str, ...]
    n_dev: int

    # -- numbers ---------------------------------------------------------------------
    @property
    def n_test(self) -> int:
        return int(self.correct.shape[-1])

    @property
    def n_folds(self) -> int:
        """Folds evaluated (1 for a held-out split)."""
        return len(self.fold_layers)

    @property
    def accuracy(self) -> Float[Tensor, " conditions"]:
        return self.correct.float().mean(-1)

    @property
    def top1_agreement(self) -> Float[Tensor, " conditions"]:
        """Fraction of test queries where each condition and ICL predict the same token."""
        return self.agrees_with_icl.float().mean(-1)

    def acc(self, condition: str) -> float:
        """Test accuracy of one condition (see :data:`CONDITIONS`)."""
        return float(self.accuracy[self.conditions.index(condition)])

    def _correct(self, condition: str) -> Tensor:
        return self.correct[self.conditions.index(condition)]

    @property
    def recovered(self) -> float:
        """Zero-shot + vector accuracy as a fraction of ICL accuracy."""
        icl = self.acc("icl")
        return self.acc("zero_shot+vector") / icl if icl > 0 else float("nan")

    @property
    def recovered_gain(self) -> float:
        """Fraction of the ICL gain over zero-shot that the vector recovers."""
        gain = self.acc("icl") - self.acc("zero_shot")
        return (self.acc("zero_shot+vector") - self.acc("zero_shot")) / gain if gain > 0 else float("nan")

    def recovery(self, of: str = "icl") -> tuple[float, float, float]:
        """``(ratio, ci_low, ci_high)`` with a paired bootstrap interval over the test queries.

        ``of="icl"``: acc(zero-shot + vector) / acc(ICL); ``of="gain"``: the share of ICL's
        gain over zero-shot, (acc(zs + v) - acc(zs)) / (acc(ICL) - acc(zs)).
        """
        zsv, icl, zs = (self._correct(c).float() for c in ("zero_shot+vector", "icl", "zero_shot"))
        if of == "gain":
            return ratio_interval(zsv - zs, icl - zs, seed=self.config.seed)
        return ratio_interval(zsv, icl, seed=self.config.seed)

    @functools.cached_property
    def _comparisons(self) -> tuple[PairedComparison, ...]:
        return tuple(
            compare_paired(self._correct(a), self._correct(b), names=(a, b), seed=self.config.seed)
            for a, b in COMPARISONS
        )

    def comparison(self, a: str, b: str) -> PairedComparison:
        """Condition ``a`` against ``b`` on the same test queries (one of :data:`COMPARISONS`,
        or any other pair of conditions)."""
        for c in self._comparisons:
            if (c.a, c.b) == (a, b):
                return c
        return compare_paired(self._correct(a), self._correct(b), names=(a, b), seed=self.config.seed)

    def comparisons(self) -> Any:
        """The paired tests of :data:`COMPARISONS` as a table (McNemar p-value, interval on the difference)."""
        import pandas as pd

        return pd.DataFrame([c.as_row() for c in self._comparisons])

    # -- tables ----------------------------------------------------------------------
    def to_dataframe(self) -> Any:
        """One row per condition: accuracy with its 95% Wilson interval, P(answer), KL to ICL, top-1 agreement."""
        import pandas as pd

        low, high = accuracy_interval(self.correct)
        return pd.DataFrame(
            dict(
                condition=list(self.conditions),
                accuracy=self.accuracy.tolist(),
                ci_low=low.tolist(),
                ci_high=high.tolist(),
                n_test=[self.n_test] * len(self.conditions),
                answer_prob=self.answer_prob.mean(-1).tolist(),
                kl_to_icl=self.kl_to_icl.mean(-1).tolist(),
                top1_agrees_with_icl=self.top1_agreement.tolist(),
            )
        )

    def layers_dataframe(self) -> Any:
        """Zero-shot + vector accuracy with the vector at each layer, dev and test, with Wilson intervals."""
        import pandas as pd

        dev = [rate_interval(float(a), self.n_dev) for a in self.layer_dev_accuracy]
        test = [rate_interval(float(a), self.n_test) for a in self.layer_test_accuracy]
        return pd.DataFrame(
            dict(
                layer=list(self.layers),
                dev_accuracy=self.layer_dev_accuracy.tolist(),
                dev_ci_low=[d[0] for d in dev],
                dev_ci_high=[d[1] for d in dev],
                test_accuracy=self.layer_test_accuracy.tolist(),
                ci_low=[t[0] for t in test],
                ci_high=[t[1] for t in test],
            )
        )

    def specificity_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            self.specificity.numpy(), index=list(self.specificity_vectors), columns=list(self.specificity_tasks)
        )

    def specificity_intervals(self) -> Any:
        """The specificity matrix in long form, each accuracy with its Wilson interval."""
        import pandas as pd

        rows = []
        for i, v in enumerate(self.specificity_vectors):
            for j, t in enumerate(self.specificity_tasks):
                a, n = float(self.specificity[i, j]), self.specificity_n[j]
                low, high = rate_interval(a, n)
                rows.append(dict(vector=v, task=t, accuracy=a, ci_low=low, ci_high=high, n=n))
        return pd.DataFrame(rows)

    def natural_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame(
            dict(
                prompt=list(self.natural_prompts),
                without_vector=list(self.natural_plain),
                with_vector=list(self.natural_implanted),
            )
        )

    # -- words -------------------------------------------------------------------------
    def verdicts(self) -> tuple[str, str, str]:
        """What the test queries can tell: the vector on zero-shot prompts, on shuffled-label
        prompts, and zero-shot + vector against ICL (each claimed only when its interval and
        test support it)."""
        zs, shuf, vs_icl = (self.comparison(a, b) for a, b in COMPARISONS)
        n = self.n_test
        first = verdict(zs, subject=f"the {self.vector_kind} vector", what="zero-shot accuracy")
        second = verdict(shuf, subject="in shuffled-label prompts it", what="accuracy")
        icl = accuracy_ci(self.acc("icl"), n)
        ratio = recovery_text(self.recovery(), "ICL accuracy")
        if vs_icl.significant:
            where = "below" if vs_icl.difference < 0 else "above"
            third = f"zero-shot + vector is {where} ICL {icl} (McNemar {format_p(vs_icl.p_value)})"
        else:
            third = f"zero-shot + vector and ICL {icl} are not told apart by {n} queries (McNemar {format_p(vs_icl.p_value)})"
        return first, second, f"{third}; {ratio}"

    def summary(self) -> str:
        layers = (
            f"after block {self.layer}, {self.layer_choice}"
            if self.n_folds == 1
            else f"after the block chosen on dev in each fold: {', '.join(map(str, self.fold_layers))}"
        )
        cv = (
            f", {self.n_folds}-fold cross-validated (every pair a test query once, with its fold's vector)"
            if self.n_folds > 1
            else ""
        )
        return (
            f"{self.origin.model} / {self.task}, {self.vector_kind} vector ({self.operation} {layers}): "
            + "; ".join(self.verdicts())
            + f"; KL(ICL||zero-shot+vector) {float(self.kl_to_icl[1].mean()):.2f} vs "
            f"{float(self.kl_to_icl[0].mean()):.2f} without; {self.n_test} test queries{cv}"
        )

    # -- pictures ----------------------------------------------------------------------
    def _plot(self, ax: Any) -> None:
        self._plot_accuracy(ax)

    def _plot_accuracy(self, ax: Any) -> None:
        colors = ["#999999", "#1f77b4", "#2ca02c", "#bbbbbb", "#ff7f0e"]
        low, high = accuracy_interval(self.correct)
        ax.bar(
            range(len(self.conditions)),
            self.accuracy.tolist(),
            yerr=error_bars(self.accuracy, low, high),
            capsize=3,
            color=colors[: len(self.conditions)],
        )
        ax.set_xticks(range(len(self.conditions)), [c.replace("+", "\n+ ") for c in self.conditions], fontsize=8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("top-1 accuracy (test, 95% CI)")
        ax.set_title(f"{self.task}: {self.vector_kind} vector at layer {self.layer} ({self.n_test} test queries)")

    def _figure(self, draw: Any, ax: Any = None, size: tuple[float, float] = (6.4, 4.0)) -> Any:
        plt = pyplot()
        if ax is None:
            fig, ax = plt.subplots(figsize=size)
        else:
            fig = ax.figure
        draw(ax)
        fig.tight_layout()
        return fig

    def plot_accuracy(self, ax: Any = None) -> Any:
        """Accuracy of the five conditions."""
        return self._figure(self._plot_accuracy, ax)

    def plot_distribution(self, ax: Any = None) -> Any:
        """Mean KL(ICL || condition) and top-1 agreement with ICL per condition."""

        def draw(ax: Any) -> None:
            others = [i for i, c in enumerate(self.conditions) if c != "icl"]
            labels = [self.conditions[i].replace("+", "\n+ ") for i in others]
            kl = [float(self.kl_to_icl[i].mean()) for i in others]
            ax.bar(range(len(others)), kl, color="#1f77b4")
            ax.set_xticks(range(len(others)), labels, fontsize=8)
            ax.set_ylabel("mean KL(ICL || condition), nats")
            twin = ax.twinx()
            twin.plot(range(len(others)), [float(self.top1_agreement[i]) for i in others], "ko-")
            twin.set_ylim(0, 1.05)
            twin.set_ylabel("top-1 agreement with ICL (dots)")
            ax.set_title("How close to the ICL next-token distribution")

        return self._figure(draw, ax)

    def plot_layers(self, ax: Any = None) -> Any:
        """Zero-shot + vector accuracy when the vector goes in after each block."""

        def draw(ax: Any) -> None:
            df = self.layers_dataframe()
            ax.plot(self.layers, df.test_accuracy, marker="o", label="test")
            ax.fill_between(self.layers, df.ci_low, df.ci_high, alpha=0.2, color="C0", lw=0)
            ax.plot(self.layers, df.dev_accuracy, marker=".", ls=":", label="dev (chooses)")
            ax.axhline(self.acc("icl"), color="green", ls="--", label="ICL")
            ax.axhline(self.acc("zero_shot"), color="grey", ls="--", label="zero-shot")
            ax.axvline(self.layer, color="black", lw=0.8)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(f"layer ({self.operation} after block L, answer position)")
            ax.set_ylabel("zero-shot + vector accuracy")
            ax.set_title("Layer sweep")
            ax.legend(fontsize="small")

        return self._figure(draw, ax)

    def plot_specificity(self, ax: Any = None) -> Any:
        """Accuracy of each vector (rows) on zero-shot queries of each task (columns)."""

        def draw(ax: Any) -> None:
            data = self.specificity.numpy()
            im = ax.imshow(data, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.figure.colorbar(im, ax=ax, label="zero-shot + vector accuracy")
            ax.set_xticks(range(len(self.specificity_tasks)), self.specificity_tasks, rotation=45, ha="right")
            ax.set_yticks(range(len(self.specificity_vectors)), self.specificity_vectors)
            for i in range(data.shape[0]):
                for j in range(data.shape[1]):
                    ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
            ax.set_xlabel("queries of task")
            ax.set_ylabel("vector")
            ax.set_title("Task specificity")

        return self._figure(draw, ax, size=(6.4, 1.5 + 0.5 * len(self.specificity_vectors)))

    def _repr_html_(self) -> str:
        import base64
        import html
        import io

        plt = pyplot()
        parts = [f"<h4>{html.escape(self.title)}</h4>", f"<p>{html.escape(self.summary())}</p>"]
        parts.append(self.to_dataframe().to_html(float_format=lambda x: f"{x:.3g}", index=False))
        for make in (self.plot_accuracy, self.plot_distribution, self.plot_layers, self.plot_specificity):
            fig = make()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=80)
            plt.close(fig)
            parts.append(f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}"/>')
        if self.natural_prompts:
            parts.append("<p>Natural text (greedy continuation):</p>")
            parts.append(self.natural_dataframe().to_html(index=False))
        return "\n".join(parts)
