"""Function vectors (Todd et al. 2023), task vectors (Hendel et al. 2023) and the implant evaluation."""

from typing import TYPE_CHECKING

from icl_lens.core.lazy import lazy_exports

# The layer's public names, imported on first use (icl_lens.core.lazy); `icl_lens` re-exports
# them all with `from icl_lens.vectors import *`.
if TYPE_CHECKING:
    from icl_lens.vectors.function_vector_result import FunctionVectorResult as FunctionVectorResult
    from icl_lens.vectors.function_vectors import (
        FunctionVectorConfig as FunctionVectorConfig,
        function_vector as function_vector,
    )
    from icl_lens.vectors.implant import ImplantConfig as ImplantConfig, evaluate_implant as evaluate_implant
    from icl_lens.vectors.implant_result import ImplantResult as ImplantResult
    from icl_lens.vectors.task_vector_result import TaskVectorResult as TaskVectorResult
    from icl_lens.vectors.task_vectors import TaskVectorConfig as TaskVectorConfig, task_vector as task_vector

__getattr__, __dir__ = lazy_exports(__name__, __file__)
