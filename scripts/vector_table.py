"""Function-vector and task-vector accuracy on every built-in task: the table of docs/vectors.md.

For each task: the function vector (Todd et al. defaults: 10 shots, ``Q: x\\nA: y``, 100
mean prompts, 25 AIE prompts, top 10 heads) evaluated with ``il.evaluate_implant`` (layer
chosen on dev, accuracy on test), and the task vector (Hendel et al. defaults: 5 shots,
``x -> y``, 2 dummy queries) with its best dev layer and test accuracy.

    python scripts/vector_table.py                       # all tasks, SmolLM2
    python scripts/vector_table.py --tasks antonym uppercase --save-dir runs/vectors

The markdown table is rewritten after every task (so an interrupted run keeps what it
finished); ``--save-dir`` also keeps every result (safetensors + JSON) for inspection.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import icl_lens as il
from icl_lens.vectors.function_vectors import function_vector
from icl_lens.vectors.implant import ImplantConfig, evaluate_implant
from icl_lens.vectors.task_vectors import task_vector

# Roughly in order of how well a small model does them in context, so a partial run
# covers the informative tasks first.
ORDER = (
    "antonym",
    "country_capital",
    "english_french",
    "english_spanish",
    "uppercase",
    "lowercase",
    "present_past",
    "singular_plural",
    "first_letter",
    "next_letter",
    "synonym",
    "country_continent",
    "next_item",
    "choose_first",
    "choose_last",
    "word_pos",
    "number_parity",
    "animal_object",
)
ICL_WORKS = 0.3
"""10-shot ICL accuracy from which a task counts as one the model does in context."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--tasks", nargs="*", default=None, help="default: every built-in task")
    parser.add_argument("--out", default="docs/vectors_table.md")
    parser.add_argument("--save-dir", default=None)
    parser.add_argument(
        "--figure",
        default="docs/img/task_vector_layers.png",
        help="per-layer task-vector accuracy and its ceiling ('' for none)",
    )
    args = parser.parse_args()

    il.set_progress(False)
    model = il.load_model(args.model)
    known = il.list_tasks()
    tasks = args.tasks or [t for t in ORDER if t in known] + [t for t in known if t not in ORDER]
    rows: list[dict[str, object]] = []
    tvs: list[Any] = []
    for name in tasks:
        base = Path(args.save_dir) / name if args.save_dir else None
        t0 = time.perf_counter()
        fv = _cached(base, "function_vector", lambda name=name: function_vector(model, name))
        fv_eval = _cached(
            base,
            "function_vector_implant",
            lambda name=name, fv=fv: evaluate_implant(
                model, name, fv, ImplantConfig(specificity_tasks=(), n_natural=0)
            ),
        )
        t_fv = time.perf_counter() - t0
        tv = _cached(base, "task_vector", lambda name=name: task_vector(model, name))
        t_tv = time.perf_counter() - t0 - t_fv
        row = dict(
            task=name,
            icl10=fv_eval.acc("icl"),
            zs=fv_eval.acc("zero_shot"),
            zs_fv=fv_eval.acc("zero_shot+vector"),
            shuf=fv_eval.acc("shuffled"),
            shuf_fv=fv_eval.acc("shuffled+vector"),
            kl_zs=float(fv_eval.kl_to_icl[0].mean()),
            kl_fv=float(fv_eval.kl_to_icl[1].mean()),
            fv_layer=fv_eval.layer,
            heads=" ".join(f"L{l}H{h}" for l, h in fv.heads[:5]),
            n_mean=fv.n_mean_used,
            n_test=fv_eval.n_test,
            tv_layer=tv.best_layer,
            tv_zs=tv.zero_shot_accuracy,
            tv=tv.test_accuracy_at_best,
            icl5=tv.icl_accuracy,
            ceil=float(tv.ceiling_accuracy[tv.layers.index(tv.best_layer)]),
            half_from=next(
                (l for l, a in zip(tv.layers, tv.ceiling_accuracy.tolist()) if a >= tv.icl_accuracy / 2 > 0), "-"
            ),
            t_fv=t_fv,
            t_tv=t_tv,
        )
        rows.append(row)
        tvs.append(tv)
        print(
            f"{name}: ICL10 {row['icl10']:.2f} zs {row['zs']:.2f} zs+FV {row['zs_fv']:.2f} shuf {row['shuf']:.2f} "
            f"shuf+FV {row['shuf_fv']:.2f} (L{row['fv_layer']}); TV {row['tv']:.2f} vs ICL5 {row['icl5']:.2f} "
            f"(L{row['tv_layer']}); {t_fv:.0f}s + {t_tv:.0f}s",
            flush=True,
        )
        Path(args.out).write_text(render(rows, model_name=il.core.models.model_name(model)))
    if args.figure:
        plot_layers([tv for tv, r in zip(tvs, rows) if float(r["icl5"]) >= ICL_WORKS], args.figure)


def _cached(base: Path | None, what: str, compute: Callable[[], Any]) -> Any:
    """Load a result saved by an earlier (interrupted) run, or compute and save it."""
    if base is not None and (base / what / "result.json").is_file():
        return il.load_result(base / what)
    result = compute()
    if base is not None:
        result.save(base / what)
    return result


def plot_layers(tvs: list[Any], path: str) -> None:
    """One panel per task: task-vector accuracy and each query's own ICL state, by layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not tvs:
        return
    cols = 4
    rows = (len(tvs) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), sharex=True, sharey=True, squeeze=False)
    for ax in axes.flat[len(tvs) :]:
        ax.axis("off")
    for ax, tv in zip(axes.flat, tvs):
        ax.plot(tv.layers, tv.test_accuracy.tolist(), marker="o", ms=2, label="task vector")
        ax.plot(tv.layers, tv.ceiling_accuracy.tolist(), marker="s", ms=2, color="purple", label="own ICL state")
        ax.axhline(tv.icl_accuracy, color="green", ls="--", lw=0.8, label="ICL (5 shots)")
        ax.set_title(tv.task, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
    for ax in axes[-1]:
        ax.set_xlabel("layer L")
    for ax in axes[:, 0]:
        ax.set_ylabel("zero-shot accuracy")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Replacing the last token's residual after block L (test queries)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def render(rows: list[dict[str, object]], model_name: str) -> str:
    def pct(x: object) -> str:
        return f"{100 * float(x):.0f}"  # type: ignore[arg-type]

    lines = [
        f"<!-- written by scripts/vector_table.py; model {model_name} -->",
        "",
        "Top-1 accuracy (%) of the answer's first token on held-out test queries. Function vector (FV): "
        "10-shot `Q: x\\nA: y` prompts, added after the layer chosen on dev. Task vector (TV): 5-shot "
        "`x -> y` prompts, replacing the residual stream after the layer chosen on dev. "
        f"\u2713 marks tasks where 10-shot ICL reaches {ICL_WORKS:.0%}. *Own state*: each test query's own "
        "5-shot residual (real query) patched in instead of the TV at the TV's layer, a ceiling for any one vector "
        "there; *half from*: the first layer "
        "where that recovers half of ICL (before it, the answer is not yet in the last token).",
        "",
        "| task | ICL works | ICL 10-shot | zero-shot | zero-shot + FV | FV gain (x) | shuffled | shuffled + FV "
        "| KL(ICL\\|\\|zs) | KL(ICL\\|\\|zs+FV) | FV layer | top FV heads | ICL 5-shot | zero-shot | TV | TV / ICL | TV layer "
        "| own state at TV layer | half from |",
        "|---|:-:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in rows:
        zs, zs_fv, icl5, tv = (float(r[k]) for k in ("zs", "zs_fv", "icl5", "tv"))  # type: ignore[arg-type]
        gain = "inf" if zs == 0 and zs_fv > 0 else ("-" if zs == 0 else f"{zs_fv / zs:.1f}")
        ratio = f"{100 * tv / icl5:.0f}%" if icl5 > 0 else "-"
        works = "\u2713" if float(r["icl10"]) >= ICL_WORKS else ""  # type: ignore[arg-type]
        lines.append(
            f"| {r['task']} | {works} | {pct(r['icl10'])} | {pct(zs)} | {pct(zs_fv)} | {gain} | {pct(r['shuf'])} | "
            f"{pct(r['shuf_fv'])} | {float(r['kl_zs']):.2f} | {float(r['kl_fv']):.2f} | {r['fv_layer']} | "  # type: ignore[arg-type]
            f"{r['heads']} | {pct(icl5)} | {pct(r['tv_zs'])} | {pct(tv)} | {ratio} | {r['tv_layer']} | "
            f"{pct(r['ceil'])} | {r['half_from']} |"
        )
    works = [r for r in rows if float(r["icl10"]) >= ICL_WORKS]  # type: ignore[arg-type]
    if works:
        tripled = sum(
            1
            for r in works
            if float(r["zs_fv"]) >= 3 * float(r["zs"]) and float(r["zs_fv"]) > float(r["zs"])  # type: ignore[arg-type]
        )
        rec = [float(r["tv"]) / float(r["icl5"]) for r in works if float(r["icl5"]) > 0]  # type: ignore[arg-type]
        lines += [
            "",
            f"Tasks where 10-shot ICL works: {len(works)} of {len(rows)}. Zero-shot + FV at least 3x zero-shot "
            f"(and above it): {tripled}. Task vector / ICL (5-shot), mean over those tasks: "
            f"{100 * sum(rec) / max(1, len(rec)):.0f}%.",
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
