"""Studies: models x tasks x analyses x seeds, run locally, on Ray or SLURM, resumable, merged.

See docs/scaling.md. The public names are re-exported here; the modules hold the rest.
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy); `icl_lens` re-exports
# them all with `from icl_lens.studies import *`.
if TYPE_CHECKING:
    from icl_lens.studies.executors import LocalExecutor as LocalExecutor, RayExecutor as RayExecutor
    from icl_lens.studies.merged import StudyResults as StudyResults
    from icl_lens.studies.registry import (
        Analysis as Analysis,
        list_analyses as list_analyses,
        register_analysis as register_analysis,
    )
    from icl_lens.studies.spec import (
        AnalysisEntry as AnalysisEntry,
        ModelEntry as ModelEntry,
        Resources as Resources,
        StudySpec as StudySpec,
        StudySpecError as StudySpecError,
    )
    from icl_lens.studies.status import StudyRunReport as StudyRunReport, StudyStatus as StudyStatus
    from icl_lens.studies.study import Study as Study
    from icl_lens.studies.tables import (
        InductionVsFvResult as InductionVsFvResult,
        StudyAccuracyResult as StudyAccuracyResult,
        VectorTableResult as VectorTableResult,
    )
    from icl_lens.studies.units import UnitOutcome as UnitOutcome
    from icl_lens.studies.universal_result import UniversalFvResult as UniversalFvResult

__getattr__, __dir__ = lazy_exports(__name__, __file__)
