"""Hypotheses about how ICL works, each as an analysis with intervals.

ICL as kernel regression, ICL vs fine-tuning on the same demonstrations, task recognition
vs task learning, and the seed ideas' predictions (format sensitivity, demonstration
selection).
"""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy); `icl_lens` re-exports
# them all with `from icl_lens.hypotheses import *`.
if TYPE_CHECKING:
    from icl_lens.hypotheses.finetune import (
        IclFinetuneConfig as IclFinetuneConfig,
        compare_icl_finetuning as compare_icl_finetuning,
    )
    from icl_lens.hypotheses.finetune_result import (
        FinetuneComparison as FinetuneComparison,
        IclFinetuneResult as IclFinetuneResult,
    )
    from icl_lens.hypotheses.finetune_training import finetune_on_demos as finetune_on_demos
    from icl_lens.hypotheses.formats import FormatConfig as FormatConfig, format_sensitivity as format_sensitivity
    from icl_lens.hypotheses.formats_result import FormatSensitivityResult as FormatSensitivityResult
    from icl_lens.hypotheses.kernel import (
        KernelRegressionConfig as KernelRegressionConfig,
        kernel_regression as kernel_regression,
    )
    from icl_lens.hypotheses.kernel_result import KernelRegressionResult as KernelRegressionResult
    from icl_lens.hypotheses.recognition import (
        RecognitionConfig as RecognitionConfig,
        abstract_label_map as abstract_label_map,
        recognition_vs_learning as recognition_vs_learning,
    )
    from icl_lens.hypotheses.recognition_result import RecognitionResult as RecognitionResult
    from icl_lens.hypotheses.selection import (
        SelectionConfig as SelectionConfig,
        demonstration_selection as demonstration_selection,
    )
    from icl_lens.hypotheses.selection_result import DemonstrationSelectionResult as DemonstrationSelectionResult

__getattr__, __dir__ = lazy_exports(__name__, __file__)
