"""The report's section keys and sizes, importable without torch.

The command line checks ``--sections`` and ``--size`` against these before anything heavy
is imported; :mod:`icl_lens.report.sections` builds its table in this order and a test
checks that the two agree.
"""

from __future__ import annotations

import os

SIZES: tuple[str, ...] = ("tiny", "small", "paper")
"""``tiny``: seconds (CI, ``ICL_LENS_FAST=1``); ``small``: minutes on 2 CPU cores; ``paper``:
each analysis's own defaults (the published settings)."""

SECTION_KEYS: tuple[str, ...] = (
    "accuracy",
    "induction",
    "icl_score",
    "function_vector",
    "task_vector",
    "implant",
    "kernel_regression",
    # Optional (``--sections``): the seed ideas' predictions, measured.
    "induction_tokens",
    "demonstration_selection",
    "format_sensitivity",
    # Optional: the positive controls (icl_lens.worlds), default on a toy world.
    "vector_check",
    "gradient_descent",
)
"""Every section of the report, in report order."""

DEFAULT_SECTIONS: tuple[str, ...] = SECTION_KEYS[:7]
"""The sections a report runs unless ``--sections`` names others."""

WORLD_SECTIONS: tuple[str, ...] = (
    "accuracy",
    "function_vector",
    "task_vector",
    "implant",
    "kernel_regression",
    "vector_check",
    "gradient_descent",
)
"""The sections a report on a toy world (``--model toy:tasks``) runs unless ``--sections``
names others: natural text and long repeated sequences do not fit a toy world's vocabulary
and context, so the ICL score and the induction scan are left out."""


def fast_mode() -> bool:
    """True when ``ICL_LENS_FAST=1``: CI sizes for the report and the notebooks."""
    return os.environ.get("ICL_LENS_FAST", "0") not in {"", "0", "false", "False", "no"}
