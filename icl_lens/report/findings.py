"""The report's first screen: one line per section saying what it found, in plain words.

Each section's full summary, figure and table follow further down; this block is what a
reader sees before scrolling. A line is marked ``found`` only when the numbers support it
(95% Wilson intervals that do not overlap, a score clearly above its baseline); otherwise
it is ``no effect`` or ``partial``, with the reason, so a null result reads as a result.
Every reading falls back to the section's own ``summary()`` if a result lacks a field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

from icl_lens.core.stats import proportion_interval

Verdict = Literal["found", "partial", "no effect", "reported"]
"""``reported``: a section without a reading here; its line is its own summary."""


@dataclasses.dataclass(frozen=True)
class Finding:
    """What one section found: a verdict, a headline, and (for nulls) why."""

    key: str
    title: str
    verdict: Verdict
    headline: str
    why: str = ""


def _apart(k_low: int, n_low: int, k_high: int, n_high: int) -> bool:
    """Whether two proportions' 95% Wilson intervals do not overlap (high above low)."""
    return proportion_interval(k_high, n_high)[0] > proportion_interval(k_low, n_low)[1]


def _accuracy(r: Any) -> tuple[Verdict, str, str]:
    correct = r.correct[0]  # [shots, prompts] of the report's one task
    n = int(correct.shape[-1])
    k0, k1 = int(correct[0].sum()), int(correct[-1].sum())
    headline = f"{k0 / n:.0%} at {r.shots[0]} shots, {k1 / n:.0%} at {r.shots[-1]} shots on {r.tasks[0]} ({n} queries)"
    if _apart(k0, n, k1, n):
        return "found", "the model learns the task from its prompt, " + headline, ""
    return "no effect", headline, "the demonstrations do not raise accuracy beyond the 95% intervals"


def _induction(r: Any) -> tuple[Verdict, str, str]:
    heads = r.top_heads(3)
    scores = ", ".join(f"L{l}H{h} ({float(r.induction_mean[l, h]):.2f})" for l, h in heads)
    best = float(r.induction_mean[heads[0]])
    if best >= 0.3:
        return "found", f"induction heads: {scores}", ""
    return "no effect", f"no clear induction head (best {scores.split(',')[0]})", "no head scores above 0.3"


def _icl_score(r: Any) -> tuple[Verdict, str, str]:
    score, sem = float(r.icl_score), float(r.icl_score_sem)
    text = f"late tokens are predicted better than early ones: loss@{r.config.late} - loss@{r.config.early} = "
    if score + 2 * sem < 0:
        return "found", text + f"{score:+.2f} ± {sem:.2f} nats", ""
    return "no effect", f"ICL score {score:+.2f} ± {sem:.2f} nats", "the loss does not fall along the context"


def _function_vector(r: Any) -> tuple[Verdict, str, str]:
    heads = ", ".join(f"L{l}H{h}" for l, h in r.heads[:4])
    aie = float(r.aie.max())
    headline = f"{len(r.heads)} heads carry the task ({heads} ...); best average indirect effect {aie:+.2f}"
    if aie > 0.05:
        return "found", headline, ""
    return "no effect", headline, "no head's mean output restores the answer on shuffled-label prompts"


def _task_vector(r: Any) -> tuple[Verdict, str, str]:
    n = int(r.n_test)
    k_tv, k_zero = round(r.test_accuracy_at_best * n), round(r.zero_shot_accuracy * n)
    headline = (
        f"{r.test_accuracy_at_best:.0%} with the task vector (layer {r.best_layer}) vs {r.icl_accuracy:.0%} "
        f"ICL and {r.zero_shot_accuracy:.0%} zero-shot ({n} queries)"
    )
    ceiling = None if r.ceiling_accuracy is None else float(r.ceiling_accuracy.max())
    if ceiling is not None and r.test_accuracy_at_best < 0.6 * r.icl_accuracy:
        why = (
            f"the ceiling explains it: even each query's own ICL state, patched in at the same layers, reaches "
            f"only {ceiling:.0%}. At this depth the model still reads the demonstrations themselves, so no single "
            "last-token vector can stand in for them (the task-vector authors report the same for models under "
            "a few billion parameters); the function vector above, made of head outputs, does carry the task"
        )
        return "partial" if _apart(k_zero, n, k_tv, n) else "no effect", headline, why
    if _apart(k_zero, n, k_tv, n):
        return "found", headline, ""
    return "no effect", headline, "the vector does not lift zero-shot accuracy beyond the 95% intervals"


def _implant(r: Any) -> tuple[Verdict, str, str]:
    zero, put, icl = r.acc("zero_shot"), r.acc("zero_shot+vector"), r.acc("icl")
    n = int(r.n_test)
    headline = (
        f"the {r.vector_kind} vector added to zero-shot prompts: {zero:.0%} -> {put:.0%} "
        f"(ICL {icl:.0%}, {r.recovered:.0%} of it recovered; {n} queries)"
    )
    if _apart(round(zero * n), n, round(put * n), n):
        return "found", headline, ""
    return "no effect", headline, "the implanted vector does not move zero-shot accuracy beyond the 95% intervals"


def _kernel(r: Any) -> tuple[Verdict, str, str]:
    layer, head = r.best_head
    agree, majority = r.best_head_agreement("model"), r.majority_agreement("model")
    n = int((~r.selection).sum())
    headline = (
        f"on {r.task}, the attention vote of L{layer}H{head} predicts the model's answer on {agree:.0%} of "
        f"{n} held-out prompts (majority label {majority:.0%}, chance {r.chance:.0%})"
    )
    if proportion_interval(round(agree * n), n)[0] > majority:
        return "found", headline, ""
    return "no effect", headline, "the vote does not beat the majority label beyond its 95% interval"


def _vector_check(r: Any) -> tuple[Verdict, str, str]:
    icl = r.outcomes("icl")
    parts, verdicts = [], []
    for vec, name in (("task_vector", "task vector"), ("function_vector", "function vector")):
        if vec not in r.conditions:
            continue
        ratio, low, high = r.recovered(vec)
        lift = r.lift(vec)
        verdicts.append(r.verdict(vec))
        parts.append(
            f"{name} {r.verdict(vec)}: recovers {ratio:.0%} [{low:.0%}, {high:.0%}] of ICL, lifts zero-shot by "
            f"{lift.difference:+.0%} [{lift.ci_low:+.0%}, {lift.ci_high:+.0%}]"
        )
    headline = f"ICL {float(icl.float().mean()):.0%} on {len(icl)} held-out queries of {len(r.tasks)} tasks; " + (
        "; ".join(parts)
    )
    if verdicts and all(v == "found" for v in verdicts):
        return "found", headline, ""
    if "found" in verdicts:
        return "partial", headline, "one kind of vector is found, the other is not"
    # A toy world without the TVP-loss: "not found" with an interval is the negative control's answer.
    return "no effect", headline, "no vector recovers half of ICL accuracy with 95% confidence"


def _gradient_descent(r: Any) -> tuple[Verdict, str, str]:
    df = r.to_dataframe().set_index("input_scale").loc[1.0]
    headline = (
        f"one linear self-attention layer vs one gradient-descent step: sensitivity cosine "
        f"{df.sensitivity_cosine:.4f} [{df.sensitivity_cosine_ci_low:.4f}, {df.sensitivity_cosine_ci_high:.4f}], "
        f"predictions {r.relative_distance():.1%} of the targets' scale apart"
    )
    if r.matches:
        return "found", headline, ""
    return "no effect", headline, "the model's predictions and sensitivities are not those of one GD step"


READINGS: dict[str, Callable[[Any], tuple[Verdict, str, str]]] = {
    "accuracy": _accuracy,
    "induction": _induction,
    "icl_score": _icl_score,
    "function_vector": _function_vector,
    "task_vector": _task_vector,
    "implant": _implant,
    "kernel_regression": _kernel,
    "vector_check": _vector_check,
    "gradient_descent": _gradient_descent,
}


def finding(key: str, title: str, result: Any) -> Finding:
    """The finding of section ``key`` from its result (its summary when no reading applies)."""
    reading = READINGS.get(key)
    if reading is not None:
        try:
            verdict, headline, why = reading(result)
            return Finding(key, title, verdict, headline, why)
        except (AttributeError, IndexError, TypeError, ValueError, KeyError):
            pass  # a result of another shape: its own summary says it
    text = result.summary()
    return Finding(key, title, "reported", text.split(": ", 1)[-1].split(";")[0])
