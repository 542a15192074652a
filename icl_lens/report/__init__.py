"""The ``icl-lens report``: every analysis on one model and task, in one offline HTML page.

:mod:`~icl_lens.report.sections` is the table of what runs (one analysis per section, with
its sizes); :mod:`~icl_lens.report.build` runs it and writes the page
(:mod:`~icl_lens.report.html`).
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# Re-exports, imported on first use (icl_lens.core.lazy): `import icl_lens` loads nothing heavy.
if TYPE_CHECKING:
    from icl_lens.report.build import (
        Report as Report,
        ReportConfig as ReportConfig,
        SectionOutcome as SectionOutcome,
        build_report as build_report,
        fast_mode as fast_mode,
        run_section as run_section,
    )
    from icl_lens.report.sections import (
        SECTION_KEYS as SECTION_KEYS,
        SECTIONS as SECTIONS,
        RunContext as RunContext,
        Section as Section,
        section as section,
    )

__getattr__, __dir__ = lazy_exports(__name__, __file__)
