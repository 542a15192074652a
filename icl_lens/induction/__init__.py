"""Induction-head detectors (Olsson et al. 2022) and their causal confirmation.

* :mod:`~icl_lens.induction.detectors`: ``find_induction_heads`` and its result;
* :mod:`~icl_lens.induction.sequences`: the random-token probe rows;
* :mod:`~icl_lens.induction.weights`: copying eigenvalues and K-composition from weights;
* :mod:`~icl_lens.induction.views`: circuitsvis views that render offline;
* :mod:`~icl_lens.induction.confirm`: ablate the top heads vs random heads.
"""

from icl_lens.induction.confirm import AblationCheckConfig as AblationCheckConfig
from icl_lens.induction.confirm import InductionAblationResult as InductionAblationResult
from icl_lens.induction.confirm import confirm_induction_heads as confirm_induction_heads
from icl_lens.induction.detectors import InductionConfig as InductionConfig
from icl_lens.induction.detectors import InductionHeadsResult as InductionHeadsResult
from icl_lens.induction.detectors import find_induction_heads as find_induction_heads
from icl_lens.induction.views import OfflineHTML as OfflineHTML
from icl_lens.induction.views import attention_view as attention_view
