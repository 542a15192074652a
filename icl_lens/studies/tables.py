"""Cross-task results of a study: tables over models and tasks, each a Result.

* :class:`StudyAccuracyResult`: ICL accuracy by model, task and shot count;
* :class:`VectorTableResult`: the function-vector / task-vector table (one row per model,
  task and seed), as in docs/vectors.md;
* :class:`InductionVsFvResult`: each head's induction score against its function-vector
  score (Yin & Steinhardt 2025), per model.

Every accuracy carries a 95% Wilson interval (``<column>_ci_low`` / ``<column>_ci_high``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from torch import Tensor

from icl_lens.core.results import Result
from icl_lens.core.stats import accuracy_ci, proportion_interval


def with_intervals(row: dict[str, Any], columns: tuple[str, ...], n_key: str) -> dict[str, Any]:
    """``row`` with a Wilson interval for each accuracy column (computed from ``row[n_key]`` queries)."""
    out = dict(row)
    n = int(row.get(n_key) or 0)
    for c in columns:
        value = row.get(c)
        if value is None or (isinstance(value, float) and math.isnan(value)) or n == 0:
            out[f"{c}_ci_low"], out[f"{c}_ci_high"] = math.nan, math.nan
            continue
        out[f"{c}_ci_low"], out[f"{c}_ci_high"] = proportion_interval(round(float(value) * n), n)
    return out


def pct_with_interval(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    low, high = row[f"{column}_ci_low"], row[f"{column}_ci_high"]
    return f"{100 * value:.0f} [{100 * low:.0f}, {100 * high:.0f}]"


@dataclasses.dataclass(frozen=True)
class StudyAccuracyResult(Result):
    """ICL accuracy by model, task, seed and shot count (rows of plain values)."""

    title: ClassVar[str] = "ICL accuracy across models and tasks"

    rows: tuple[dict[str, Any], ...]

    def to_dataframe(self) -> Any:
        import pandas as pd

        return pd.DataFrame([with_intervals(r, ("accuracy",), "n") for r in self.rows])

    def table(self) -> Any:
        """Accuracy (%) as (model, task) x shots."""
        df = self.to_dataframe()
        return df.pivot_table(index=["model", "task"], columns="shots", values="accuracy", aggfunc="mean")

    def summary(self) -> str:
        df = self.to_dataframe()
        parts = []
        for model, sub in df.groupby("model", sort=False):
            lo, hi = sub["shots"].min(), sub["shots"].max()
            texts = []
            for k in (lo, hi):
                at = sub[sub.shots == k]
                n = int(at.n.sum())  # every prompt of every task counted once
                texts.append(f"{accuracy_ci(float((at.accuracy * at.n).sum()) / n, n)} at {k} shots")
            parts.append(f"{model}, pooled over {sub.task.nunique()} tasks: " + ", ".join(texts))
        return "; ".join(parts)

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        for model, sub in df.groupby("model", sort=False):
            mean = sub.groupby("shots")["accuracy"].mean()
            ax.plot(mean.index, mean.values, marker="o", label=str(model))
        ax.set_xlabel("demonstrations (shots)")
        ax.set_ylabel("accuracy, mean over tasks")
        ax.set_ylim(-0.02, 1.02)
        ax.legend(fontsize="small")


VECTOR_ACCURACIES = ("icl", "zero_shot", "zs_fv", "shuffled", "shuffled_fv", "zs_universal")
TV_ACCURACIES = ("icl5", "tv_zero_shot", "tv", "own_state")


@dataclasses.dataclass(frozen=True)
class VectorTableResult(Result):
    """Function and task vectors on every task of every model (one row per model, task, seed).

    Columns: ``icl`` (ICL with the function vector's template and shots), ``zero_shot``,
    ``zs_fv`` (zero-shot + the task's own FV), ``shuffled``, ``shuffled_fv``,
    ``zs_universal`` (zero-shot + the FV rebuilt from the universal heads), all on the
    implant evaluation's ``n_fv`` test queries; ``icl5``, ``tv_zero_shot``, ``tv`` (the
    task vector at its dev-chosen layer) on ``n_tv`` test queries (cross-validated where
    ``fv_folds`` / ``tv_folds`` > 1); layers, top heads, KL. Paired tests on the same
    queries: ``<key>_p`` (exact McNemar), ``<key>_diff`` with its bootstrap interval and
    ``<key>_sign`` (+1/-1 where interval and test agree on a difference, else 0) for ``icl``
    (ICL vs zero-shot), ``fv``, ``shuffled_fv``, ``universal`` (each vector vs its
    no-vector condition), ``fv_icl``, ``tv`` (vs zero-shot) and ``tv_icl``; the recovered
    share of ICL ``fv_recovery`` / ``tv_recovery`` with bootstrap intervals.
    """

    title: ClassVar[str] = "Function and task vectors across tasks"

    rows: tuple[dict[str, Any], ...]
    icl_works: float = 0.3

    def to_dataframe(self) -> Any:
        import pandas as pd

        out = []
        for r in self.rows:
            row = with_intervals(r, VECTOR_ACCURACIES, "n_fv")
            out.append(with_intervals(row, TV_ACCURACIES, "n_tv"))
        return pd.DataFrame(out)

    def _works(self, row: dict[str, Any]) -> bool:
        """ICL reaches ``icl_works`` and beats zero-shot on the same queries (McNemar, 95%)."""
        icl = row.get("icl")
        if icl is None or (isinstance(icl, float) and math.isnan(icl)) or icl < self.icl_works:
            return False
        return row.get("icl_sign", 1) == 1

    def works(self) -> Any:
        """Rows of tasks where ICL works (see the ✓ column of :meth:`to_markdown`)."""
        df = self.to_dataframe()
        if "icl" not in df:
            return df.iloc[0:0]
        return df[[self._works(r) for r in df.to_dict("records")]]

    def summary(self) -> str:
        df = self.to_dataframe()
        works = self.works()
        text = (
            f"{df.task.nunique()} tasks x {df.model.nunique()} model(s); ICL reaches {self.icl_works:.0%} and beats "
            f"zero-shot (McNemar, 95%) on {len(works)} rows"
        )
        for key, what in (
            ("fv_sign", "the function vector raises zero-shot accuracy"),
            ("shuffled_fv_sign", "it raises shuffled-label accuracy"),
            ("tv_sign", "the task vector raises zero-shot accuracy"),
        ):
            if len(works) and key in works:
                text += f"; {what} on {int((works[key] == 1).sum())} of them"
        if len(works) and "tv_icl_sign" in works:
            text += f", and stays below ICL on {int((works.tv_icl_sign == -1).sum())}"
        return text + " (each claim: interval on the difference and exact McNemar test agree, 95%)"

    def to_markdown(self, full: bool = False) -> str:
        """The table of docs/vectors.md: accuracies in % with their 95% Wilson intervals, in bold
        where they differ from the same queries without the vector (interval and McNemar agree);
        the recovered share of ICL with its bootstrap interval. ``full`` adds the KL divergences,
        top FV heads, and each query's own ICL state at the TV layer."""
        df = self.to_dataframe()
        cols = [
            ("ICL", "icl", None),
            ("zero-shot", "zero_shot", None),
            ("zero-shot + FV", "zs_fv", "fv_sign"),
            ("zero-shot + universal FV", "zs_universal", "universal_sign"),
            ("shuffled", "shuffled", None),
            ("shuffled + FV", "shuffled_fv", "shuffled_fv_sign"),
            ("FV / ICL", "fv_recovery", None),
            ("ICL 5-shot (`x -> y`)", "icl5", None),
            ("zero-shot (`x -> y`)", "tv_zero_shot", None),
            ("zero-shot + TV", "tv", "tv_sign"),
            ("TV / ICL", "tv_recovery", None),
        ]
        cols = [(name, c, sig) for name, c, sig in cols if c in df and df[c].notna().any()]
        multi = df.model.nunique() > 1
        extra = [("KL(ICL||zs)", "kl_zs"), ("KL(ICL||zs+FV)", "kl_fv"), ("top FV heads", "fv_heads")]
        extra += [("own state at TV layer", "own_state"), ("half from", "half_from")]
        extra = [(n, c) for n, c in extra if full and c in df]
        head = (["model"] if multi else []) + ["task", "ICL works"] + [n for n, _, _ in cols]
        head += ["test queries (FV / TV)", "FV layer", "TV layer"]
        head += [n.replace("|", "\\|") for n, _ in extra]
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
        for r in df.to_dict("records"):
            cells = ([str(r["model"])] if multi else []) + [str(r["task"])]
            cells.append("\u2713" if self._works(r) else "")
            for _, c, sig in cols:
                text = _ratio_cell(r, c) if c.endswith("recovery") else pct_with_interval(r, c)
                cells.append(f"**{text}**" if sig is not None and r.get(sig) == 1 else text)
            cells.append(f"{_queries(r, 'n_fv', 'fv_folds')} / {_queries(r, 'n_tv', 'tv_folds')}")
            cells += [_plain(r.get("fv_layer")), _plain(r.get("tv_fold_layers", r.get("tv_layer")))]
            cells += [pct_with_interval(r, c) if c in TV_ACCURACIES else _cell(c, r.get(c)) for _, c in extra]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        labels = [f"{r.task}" + (f" ({r.model})" if df.model.nunique() > 1 else "") for r in df.itertuples()]
        x = range(len(df))
        for k, (c, name) in enumerate((("zero_shot", "zero-shot"), ("zs_fv", "zero-shot + FV"), ("icl", "ICL"))):
            if c not in df:
                continue
            err = [df[c] - df[f"{c}_ci_low"], df[f"{c}_ci_high"] - df[c]]
            ax.bar([i + 0.27 * (k - 1) for i in x], df[c], width=0.27, yerr=err, label=name, capsize=2)
        ax.set_xticks(list(x), labels, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel("top-1 accuracy (95% CI)")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize="small")


def _ratio_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    low, high = row.get(f"{column}_ci_low", math.nan), row.get(f"{column}_ci_high", math.nan)
    return f"{100 * value:.0f}% [{100 * low:.0f}, {100 * high:.0f}]"


def _queries(row: dict[str, Any], n_key: str, folds_key: str) -> str:
    n, folds = row.get(n_key), row.get(folds_key)
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    return f"{int(n)}" + (f" ({int(folds)}-fold CV)" if folds is not None and folds == folds and folds > 1 else "")


def _cell(column: str, value: Any) -> str:
    if isinstance(value, float) and not math.isnan(value):
        return f"{value:.2f}" if column.startswith("kl") else f"{100 * value:.0f}"
    return _plain(value)


def _plain(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return str(value)


@dataclasses.dataclass(frozen=True)
class InductionVsFvResult(Result):
    """Induction score against function-vector score, head by head, per model.

    Attributes:
        models: model names. induction: per model ``[n_layers, n_heads]`` induction score
            (mean over repeat lengths). fv_score: per model, each head's AIE averaged over
            ``fv_tasks`` (the tasks used for the universal heads when the study has them).
    """

    title: ClassVar[str] = "Induction heads vs function-vector heads"

    models: tuple[str, ...]
    induction: dict[str, Tensor]
    fv_score: dict[str, Tensor]
    fv_tasks: dict[str, tuple[str, ...]]

    def to_dataframe(self) -> Any:
        import pandas as pd

        rows = []
        for m in self.models:
            ind, fv = self.induction[m], self.fv_score[m]
            for l in range(ind.shape[0]):
                for h in range(ind.shape[1]):
                    rows.append(dict(model=m, layer=l, head=h, induction=float(ind[l, h]), fv_score=float(fv[l, h])))
        return pd.DataFrame(rows)

    def correlation(self) -> Any:
        """Spearman's rank correlation per model, its p-value, and how many of the top ``k``
        heads by induction score are also in the top ``k`` by FV score (``k`` = 10, or a tenth
        of the heads on small models)."""
        import pandas as pd
        from scipy.stats import spearmanr

        df = self.to_dataframe()
        rows = []
        for m, sub in df.groupby("model", sort=False):
            rho, p = spearmanr(sub.induction, sub.fv_score)
            k = max(1, min(10, len(sub) // 10))
            top_i = set(sub.nlargest(k, "induction")[["layer", "head"]].itertuples(index=False))
            top_f = set(sub.nlargest(k, "fv_score")[["layer", "head"]].itertuples(index=False))
            rows.append(
                dict(
                    model=m,
                    spearman=float(rho),
                    p_value=float(p),
                    n_heads=len(sub),
                    top_k=k,
                    overlap=len(top_i & top_f),
                )
            )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        parts = []
        for r in self.correlation().itertuples():
            parts.append(
                f"{r.model}: Spearman {r.spearman:+.2f} (p = {r.p_value:.2g}, {r.n_heads} heads), "
                f"{r.overlap} of the top {r.top_k} heads by each score shared"
            )
        return "; ".join(parts)

    def _plot(self, ax: Any) -> None:
        df = self.to_dataframe()
        for m, sub in df.groupby("model", sort=False):
            ax.scatter(sub.induction, sub.fv_score, s=10, alpha=0.7, label=str(m))
            for r in sub.nlargest(3, "fv_score").itertuples():
                ax.annotate(f"L{r.layer}H{r.head}", (r.induction, r.fv_score), fontsize=7)
        ax.set_xlabel("induction score")
        ax.set_ylabel("function-vector score (mean AIE over tasks)")
        ax.set_title("Each head: induction vs function vector")
        ax.legend(fontsize="small")


__all__ = ["InductionVsFvResult", "StudyAccuracyResult", "VectorTableResult"]
