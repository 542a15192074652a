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
)
"""Every section of the report, in report order."""

DEFAULT_SECTIONS: tuple[str, ...] = SECTION_KEYS[:7]
"""The sections a report runs unless ``--sections`` names others."""


def fast_mode() -> bool:
    """True when ``ICL_LENS_FAST=1``: CI sizes for the report and the notebooks."""
    return os.environ.get("ICL_LENS_FAST", "0") not in {"", "0", "false", "False", "no"}
