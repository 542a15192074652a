"""Induction-head detectors (Olsson et al. 2022) and their causal confirmation.

* :mod:`~icl_lens.induction.detectors`: ``find_induction_heads`` and its result;
* :mod:`~icl_lens.induction.sequences`: the random-token probe rows;
* :mod:`~icl_lens.induction.weights`: copying eigenvalues and K-composition from weights;
* :mod:`~icl_lens.induction.views`: circuitsvis views that render offline;
* :mod:`~icl_lens.induction.confirm`: ablate the top heads vs random heads.
"""

from icl_lens.induction.confirm import (
    AblationCheckConfig as AblationCheckConfig,
    InductionAblationResult as InductionAblationResult,
    confirm_induction_heads as confirm_induction_heads,
)
from icl_lens.induction.detectors import (
    InductionConfig as InductionConfig,
    InductionHeadsResult as InductionHeadsResult,
    find_induction_heads as find_induction_heads,
)
from icl_lens.induction.views import OfflineHTML as OfflineHTML, attention_view as attention_view
