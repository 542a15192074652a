"""Induction heads (Olsson et al. 2022): detectors, their causal confirmation, toys and the phase change.

* :mod:`~icl_lens.induction.detectors`: ``find_induction_heads`` and its result;
* :mod:`~icl_lens.induction.sequences`: the random-token probe rows;
* :mod:`~icl_lens.induction.weights`: copying eigenvalues and K-composition from weights;
* :mod:`~icl_lens.induction.views`: circuitsvis views that render offline;
* :mod:`~icl_lens.induction.confirm`: ablate the top heads vs random heads;
* :mod:`~icl_lens.induction.icl_scoring`: the ICL score on natural text;
* :mod:`~icl_lens.induction.token_losses`: losses on induction-consistent tokens (and over training);
* :mod:`~icl_lens.induction.toy` and :mod:`~icl_lens.induction.phase`: small trained toys and
  the phase change.
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy); `icl_lens` re-exports
# them all with `from icl_lens.induction import *`.
if TYPE_CHECKING:
    from icl_lens.induction.confirm import (
        AblationCheckConfig as AblationCheckConfig,
        confirm_induction_heads as confirm_induction_heads,
    )
    from icl_lens.induction.confirm_result import InductionAblationResult as InductionAblationResult
    from icl_lens.induction.detectors import (
        InductionConfig as InductionConfig,
        find_induction_heads as find_induction_heads,
    )
    from icl_lens.induction.detectors_result import InductionHeadsResult as InductionHeadsResult
    from icl_lens.induction.icl_scoring import (
        IclScoreConfig as IclScoreConfig,
        icl_score as icl_score,
        load_corpus as load_corpus,
        per_token_loss as per_token_loss,
    )
    from icl_lens.induction.icl_scoring_result import IclScoreResult as IclScoreResult
    from icl_lens.induction.phase import (
        PhaseConfig as PhaseConfig,
        classic_phase_change_experiment as classic_phase_change_experiment,
        phase_change as phase_change,
    )
    from icl_lens.induction.phase_result import (
        ClassicExperimentResult as ClassicExperimentResult,
        PhaseChangeResult as PhaseChangeResult,
    )
    from icl_lens.induction.token_classes import TOKEN_CLASSES as TOKEN_CLASSES, classify_tokens as classify_tokens
    from icl_lens.induction.token_losses import (
        InductionTokenConfig as InductionTokenConfig,
        induction_token_losses as induction_token_losses,
    )
    from icl_lens.induction.token_losses_result import InductionTokenLossResult as InductionTokenLossResult
    from icl_lens.induction.token_training import (
        TokenTrainingConfig as TokenTrainingConfig,
        induction_token_losses_over_training as induction_token_losses_over_training,
    )
    from icl_lens.induction.token_training_result import TokenTrainingResult as TokenTrainingResult
    from icl_lens.induction.toy import (
        ToyConfig as ToyConfig,
        load_toy_run as load_toy_run,
        train_toy_model as train_toy_model,
    )
    from icl_lens.induction.toy_result import ToyRun as ToyRun
    from icl_lens.induction.views import OfflineHTML as OfflineHTML, attention_view as attention_view

__getattr__, __dir__ = lazy_exports(__name__, __file__)
