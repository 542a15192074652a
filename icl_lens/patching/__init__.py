"""Activation patching: interventions, exact sweeps (plain and fast), attribution patching.

See ``docs/patching.md`` for the concepts, why the fast engine is exact, and measured
speed against TransformerLens's own patching.
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy); `icl_lens` re-exports
# them all with `from icl_lens.patching import *`.
if TYPE_CHECKING:
    from icl_lens.patching.ablation import ablate_heads as ablate_heads
    from icl_lens.patching.activations import (
        head_activations as head_activations,
        mean_head_activations as mean_head_activations,
        resid_activations as resid_activations,
    )
    from icl_lens.patching.attribution import (
        attribution_head_sweep as attribution_head_sweep,
        attribution_resid_sweep as attribution_resid_sweep,
        patching_agreement as patching_agreement,
    )
    from icl_lens.patching.interventions import (
        add_to_resid as add_to_resid,
        patch_activation as patch_activation,
        replace_resid as replace_resid,
    )
    from icl_lens.patching.metrics import (
        PromptMetric as PromptMetric,
        answer_logprob as answer_logprob,
        answer_prob as answer_prob,
        kl_to as kl_to,
        logit_diff as logit_diff,
        top1_correct as top1_correct,
    )
    from icl_lens.patching.results import (
        HeadPatchingResult as HeadPatchingResult,
        PatchingAgreement as PatchingAgreement,
        ResidPatchingResult as ResidPatchingResult,
    )
    from icl_lens.patching.sweeps import head_sweep as head_sweep, resid_sweep as resid_sweep
    from icl_lens.patching.tracing import CausalTraceConfig as CausalTraceConfig, causal_trace as causal_trace
    from icl_lens.patching.tracing_result import CausalTraceResult as CausalTraceResult

__getattr__, __dir__ = lazy_exports(__name__, __file__)
